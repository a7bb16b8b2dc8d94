// The updates page's building blocks (page_kit.hpp).
#include "page_kit.hpp"

#include <cctype>

#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {

using net::Request;
using net::Response;

Response Secure(Response r) {
  r.SetHeader("Content-Security-Policy",
              "default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'");
  r.SetHeader("X-Frame-Options", "DENY");
  r.SetHeader("Cache-Control", "no-store");
  r.SetHeader("X-Content-Type-Options", "nosniff");
  r.SetHeader("Referrer-Policy", "same-origin");
  return r;
}

Response Page(int status, const std::string& title, const std::string& body) {
  std::string html =
      "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
      "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\"><title>" +
      HtmlEscape(title) + " - Upkeep appliance</title><link rel=\"stylesheet\" href=\"/static/style.css\"></head>"
      "<body>\n" + body + "</body></html>\n";
  return Secure(Response::Text(status, std::move(html), "text/html; charset=utf-8"));
}

Response Redirect(const std::string& to) {
  Response r(303);
  r.SetHeader("Location", to);
  return Secure(std::move(r));
}

Response ErrorPage(int status, const std::string& message) {
  return Page(status, "Error",
              "<h1>" + std::to_string(status) + " " + HtmlEscape(std::string(net::StatusReason(status))) +
                  "</h1><p class=\"error\" role=\"alert\">" + HtmlEscape(message) +
                  "</p><p><a href=\"/\">Back to the updates page</a></p>\n");
}

Response FromRefusal(const web::Refusal& refusal) {
  Response r = ErrorPage(refusal.status, refusal.reason);
  if (refusal.status == 429) r.SetHeader("Retry-After", std::to_string(refusal.retry_after.count()));
  return r;
}

Response Asset(const char* body, const char* content_type) {
  Response r = Secure(Response::Text(200, body, content_type));
  r.SetHeader("Cache-Control", "max-age=3600");
  return r;
}

Response Attachment(Response body, const std::string& filename) {
  body.SetHeader("Content-Disposition", "attachment; filename=\"" + filename + "\"");
  return Secure(std::move(body));
}

Response JsonRefusal(int status, const std::string& code, const std::string& message) {
  return Secure(Response::JsonError(status, code, message));
}

std::string Hidden(const std::string& name, const std::string& value) {
  return "<input type=\"hidden\" name=\"" + HtmlEscape(name) + "\" value=\"" + HtmlEscape(value) + "\">";
}

std::string CsrfField(const std::string& token) { return Hidden(std::string(web::kCsrfField), token); }

std::string Field(const std::string& name, const std::string& label, const std::string& type,
                  const std::string& value, const std::map<std::string, std::string>& errors,
                  const std::string& autocomplete, bool required) {
  std::string out = "<label for=\"" + name + "\">" + HtmlEscape(label) + "</label><input id=\"" + name + "\" name=\"" +
                    name + "\" type=\"" + type + "\" autocomplete=\"" + autocomplete + "\"";
  if (required) out += " required";
  if (!value.empty()) out += " value=\"" + HtmlEscape(value) + "\"";
  auto it = errors.find(name);
  if (it != errors.end()) out += " aria-invalid=\"true\" aria-describedby=\"" + name + "-error\"";
  out += ">";
  if (it != errors.end()) {
    out += "<span class=\"field-error\" id=\"" + name + "-error\" role=\"alert\">" + HtmlEscape(it->second) + "</span>";
  }
  return out + "\n";
}

std::string Alert(const std::string& message) {
  if (message.empty()) return {};
  return "<p class=\"error\" role=\"alert\">" + HtmlEscape(message) + "</p>\n";
}

std::variant<FormPost, Response> AcceptForm(const Request& req, web::Authenticator& auth, web::Role role,
                                            const web::FormLimits& limits) {
  auto who = auth.Authenticate(req);
  if (!who.ok()) return Redirect("/login");
  auto form = web::Form::FromRequest(req, limits);
  if (!form.ok()) return ErrorPage(400, form.error().message());
  if (auto refused = auth.CheckCsrf(req, who.value(), *form)) return FromRefusal(*refused);
  if (auto refused = auth.RequireRole(who.value(), role)) return FromRefusal(*refused);
  return FormPost{std::move(who.value()), std::move(*form)};
}

namespace {

constexpr std::string_view kCsrfHeader = "X-CSRF-Token";

// The X-CSRF-Token header as the one-field form CheckCsrf reads; nullopt when it is absent or
// holds characters no token has.
std::optional<web::Form> HeaderCsrfForm(const Request& req) {
  auto token = req.Header(kCsrfHeader);
  if (!token || token->empty() || token->size() > 512) return std::nullopt;
  for (char c : *token) {
    if (std::isalnum(static_cast<unsigned char>(c)) == 0 && c != '-' && c != '_' && c != '.') return std::nullopt;
  }
  auto form = web::Form::Parse(std::string(web::kCsrfField) + "=" + std::string(*token));
  if (!form.ok()) return std::nullopt;
  return std::move(*form);
}

}  // namespace

Status RawUpload::Prepare(const std::filesystem::path& dir, std::function<web::Authenticator*()> authenticator) {
  dir_ = dir;
  authenticator_ = std::move(authenticator);
  std::error_code ec;
  std::filesystem::create_directories(dir_, ec);
  if (!ec) std::filesystem::permissions(dir_, std::filesystem::perms::owner_all, ec);
  if (ec) return Error(Errc::kIo, "web: " + dir_.string() + ": " + ec.message());
  RemoveFiles();
  return OkStatus();
}

net::RouteOptions RawUpload::Options(std::uint64_t max_bytes,
                                     std::function<std::optional<Response>(const Request&)> more) {
  net::RouteOptions o;
  o.body_to_file = dir_;
  o.max_body_bytes = max_bytes;
  o.precheck = [this, more = std::move(more)](const Request& r) -> std::optional<Response> {
    if (auto refused = Precheck(r)) return refused;
    return more ? more(r) : std::nullopt;
  };
  return o;
}

std::optional<Response> RawUpload::Check(const Request& req, web::Authenticator& auth, web::Principal* who) const {
  auto principal = auth.Authenticate(req);
  if (!principal.ok()) return Secure(principal.refusal().ToResponse());
  auto form = HeaderCsrfForm(req);
  if (!form) return JsonRefusal(403, "forbidden", "the upload carries no valid X-CSRF-Token header");
  if (auto refused = auth.CheckCsrf(req, principal.value(), *form)) return Secure(refused->ToResponse());
  if (auto refused = auth.RequireRole(principal.value(), web::Role::kAdmin)) return Secure(refused->ToResponse());
  if (who != nullptr) *who = principal.value();
  return std::nullopt;
}

std::optional<Response> RawUpload::Precheck(const Request& req) const {
  if (req.content_length() == 0) return JsonRefusal(400, "bad_request", "the upload is empty");
  web::Authenticator* auth = authenticator_ ? authenticator_() : nullptr;
  if (auth == nullptr) return JsonRefusal(503, "unavailable", "the page is starting; try again in a moment");
  return Check(req, *auth, nullptr);
}

void RawUpload::RemoveFiles(const std::filesystem::path& keep) const {
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator(dir_, ec)) {
    std::error_code ignored;
    if (e.path() != keep && e.is_regular_file(ignored)) std::filesystem::remove(e.path(), ignored);
  }
}

std::string Str(const Json& j, const char* key) {
  if (!j.is_object()) return {};
  auto it = j.find(key);
  if (it == j.end()) return {};
  if (it->is_string()) return it->get<std::string>();
  if (it->is_number()) return it->dump();
  return {};
}

const Json& Arr(const Json& j, const char* key) {
  static const Json empty = Json::array();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_array() ? *it : empty;
}

std::string ClassName(const std::string& text) {
  std::string cls;
  for (char c : text) cls += (std::isalnum(static_cast<unsigned char>(c)) != 0) ? c : '-';
  return cls;
}

}  // namespace upkeep::agent::webpage
