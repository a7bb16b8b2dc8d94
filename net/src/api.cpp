#include "upkeep/net/api.hpp"

#include <string>

namespace upkeep::net {

Response Unauthorized(std::string_view message, std::string_view code) {
  Response r = ApiError(401, code, message);
  r.SetHeader("WWW-Authenticate", "Bearer");
  return r;
}

Response BadField(const Error& error) { return ApiError(400, "invalid_field", error.message()); }

std::optional<Response> ParseJsonObject(const Request& req, std::initializer_list<std::string_view> allowed,
                                        upkeep::Json& out) {
  auto json = ParseJson(req.body());
  if (!json.ok()) return ApiError(400, "malformed_json", "request body is not valid JSON: " + json.error().message());
  if (!json->is_object()) return ApiError(400, "invalid_body", "request body must be a JSON object");
  for (const auto& [name, value] : json->items()) {
    bool known = false;
    for (std::string_view a : allowed) known = known || a == name;
    if (!known) return ApiError(400, "unknown_field", "unknown field '" + name + "' in request body");
  }
  out = std::move(json).value();
  return std::nullopt;
}

std::optional<std::string_view> BearerToken(const Request& req) {
  auto header = req.Header("Authorization");
  if (!header) return std::nullopt;
  constexpr std::string_view kScheme = "Bearer ";
  if (header->size() <= kScheme.size() || !EqualsIgnoreCase(header->substr(0, kScheme.size()), kScheme)) {
    return std::string_view();
  }
  std::string_view token = header->substr(kScheme.size());
  while (!token.empty() && token.front() == ' ') token.remove_prefix(1);
  while (!token.empty() && token.back() == ' ') token.remove_suffix(1);
  return token;
}

}  // namespace upkeep::net
