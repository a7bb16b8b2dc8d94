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
