// Helpers every JSON API handler of an Upkeep daemon uses, so the answers look the same
// everywhere: {"error": {"code", "message"}} errors, bearer-token extraction, and strict parsing
// of a request body as one JSON object with a known set of fields. Pure functions, thread-safe.
#pragma once

#include <initializer_list>
#include <optional>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/net/http.hpp"

namespace upkeep::net {

// {"error": {"code": code, "message": message}} with `status`.
inline Response ApiError(int status, std::string_view code, std::string_view message) {
  return Response::JsonError(status, code, message);
}

// 401 "unauthenticated" with WWW-Authenticate: Bearer.
Response Unauthorized(std::string_view message, std::string_view code = "unauthenticated");

// 400 "invalid_field" with the error's message (for GetString/GetInt failures).
Response BadField(const Error& error);

// Parses the request body as one JSON object whose fields are all in `allowed` (duplicate keys,
// nesting depth and syntax are checked by ParseJson). Returns the 400 answer on failure.
std::optional<Response> ParseJsonObject(const Request& req, std::initializer_list<std::string_view> allowed,
                                        upkeep::Json& out);

// The token of "Authorization: Bearer TOKEN": nullopt without the header, an empty view when the
// header is present but not a bearer token.
std::optional<std::string_view> BearerToken(const Request& req);

}  // namespace upkeep::net
