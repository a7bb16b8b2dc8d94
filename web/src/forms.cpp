#include "upkeep/web/forms.hpp"

#include <algorithm>

#include "upkeep/common/text.hpp"

namespace upkeep::web {
namespace {

bool IsCookieNameChar(char c) {
  // RFC 6265 token characters.
  if (c <= 0x20 || c >= 0x7f) return false;
  static constexpr std::string_view kSeparators = "()<>@,;:\\\"/[]?={} \t";
  return kSeparators.find(c) == std::string_view::npos;
}

std::string_view TrimSpaces(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// A field name fit to appear in an error message.
std::string Shown(std::string_view name) {
  std::string out;
  for (char c : name.substr(0, 64)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (name.size() > 64) out += "...";
  return out;
}

}  // namespace

Expected<std::vector<std::pair<std::string, std::string>>> ParseCookieHeader(std::string_view header,
                                                                             const CookieLimits& limits) {
  if (header.size() > limits.max_header_bytes) {
    return Error(Errc::kLimit, "Cookie header: longer than " + std::to_string(limits.max_header_bytes) + " bytes");
  }
  for (char c : header) {
    auto u = static_cast<unsigned char>(c);
    if ((u < 0x20 && c != '\t') || u == 0x7f) return Error(Errc::kParse, "Cookie header: control character");
  }
  std::vector<std::pair<std::string, std::string>> out;
  while (!header.empty()) {
    std::size_t semi = header.find(';');
    std::string_view piece = TrimSpaces(header.substr(0, semi));
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    std::size_t eq = piece.find('=');
    if (eq == std::string_view::npos) continue;
    std::string_view name = TrimSpaces(piece.substr(0, eq));
    std::string_view value = TrimSpaces(piece.substr(eq + 1));
    if (name.empty() || !std::all_of(name.begin(), name.end(), IsCookieNameChar)) continue;
    if (value.size() >= 2 && value.front() == '"' && value.back() == '"') {
      value = value.substr(1, value.size() - 2);
    }
    if (out.size() >= limits.max_cookies) {
      return Error(Errc::kLimit, "Cookie header: more than " + std::to_string(limits.max_cookies) + " cookies");
    }
    out.emplace_back(std::string(name), std::string(value));
  }
  return out;
}

Expected<std::optional<std::string>> FindCookie(std::string_view header, std::string_view name,
                                                const CookieLimits& limits) {
  UPK_TRY_ASSIGN(auto cookies, ParseCookieHeader(header, limits));
  std::optional<std::string> found;
  for (auto& [n, v] : cookies) {
    if (n != name) continue;
    if (found) return Error(Errc::kPolicy, "Cookie header: cookie '" + Shown(name) + "' sent more than once");
    found = std::move(v);
  }
  return found;
}

Expected<Form> Form::Parse(std::string_view body, const FormLimits& limits) {
  if (body.size() > limits.max_body_bytes) {
    return Error(Errc::kLimit, "form: larger than " + std::to_string(limits.max_body_bytes) + " bytes");
  }
  Form form;
  std::size_t position = 0;
  while (!body.empty()) {
    std::size_t amp = body.find('&');
    std::string_view item = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view{} : body.substr(amp + 1);
    if (item.empty()) continue;
    ++position;
    if (form.fields_.size() >= limits.max_fields) {
      return Error(Errc::kLimit, "form: more than " + std::to_string(limits.max_fields) + " fields");
    }
    std::size_t eq = item.find('=');
    std::string name;
    if (!net::PercentDecodeComponent(item.substr(0, eq), name) || name.empty()) {
      return Error(Errc::kParse, "form: field " + std::to_string(position) + ": bad or empty name");
    }
    std::string value;
    if (eq != std::string_view::npos && !net::PercentDecodeComponent(item.substr(eq + 1), value)) {
      return Error(Errc::kParse, "form: field '" + Shown(name) + "': bad percent-escape or encoded NUL");
    }
    form.fields_.emplace_back(std::move(name), std::move(value));
  }
  return form;
}

Expected<Form> Form::FromRequest(const net::Request& request, const FormLimits& limits) {
  auto type = request.Header("Content-Type");
  std::string_view media = type ? TrimSpaces(type->substr(0, type->find(';'))) : std::string_view{};
  if (!EqualsIgnoreCase(media, "application/x-www-form-urlencoded")) {
    return Error(Errc::kInvalidArgument, "form: Content-Type must be application/x-www-form-urlencoded");
  }
  return Parse(request.body(), limits);
}

Expected<std::string> Form::Single(std::string_view name) const {
  UPK_TRY_ASSIGN(auto value, Optional(name));
  if (!value) return Error(Errc::kNotFound, "form field '" + Shown(name) + "' missing");
  return std::move(*value);
}

Expected<std::optional<std::string>> Form::Optional(std::string_view name) const {
  std::optional<std::string> found;
  for (const auto& [n, v] : fields_) {
    if (n != name) continue;
    if (found) return Error(Errc::kInvalidArgument, "form field '" + Shown(name) + "' given more than once");
    found = v;
  }
  return found;
}

std::vector<std::string> Form::All(std::string_view name) const {
  std::vector<std::string> out;
  for (const auto& [n, v] : fields_) {
    if (n == name) out.push_back(v);
  }
  return out;
}

}  // namespace upkeep::web
