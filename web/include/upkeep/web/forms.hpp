// Hostile-input parsers for what a browser sends with a form: the Cookie header and an
// application/x-www-form-urlencoded body.
//
// Contract: pure functions, thread-safe, bounded (they never read past their input and allocate
// at most in proportion to it). Errors name the field or the limit, never a value (a form
// carries passwords). Used by the Authenticator and exercised by the fuzz target fuzz_web_forms.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/net/http.hpp"

namespace upkeep::web {

// The form field every state-changing form carries.
inline constexpr std::string_view kCsrfField = "csrf_token";

struct CookieLimits {
  std::size_t max_header_bytes = 8 * 1024;  // kLimit beyond
  std::size_t max_cookies = 64;             // kLimit beyond
};

// Splits a Cookie header ("a=1; b=\"two\"") into (name, value) pairs in order. Whitespace around
// pairs is ignored, a value in double quotes loses them; pieces without '=' or with an empty or
// non-token name are skipped (as browsers do); control characters anywhere are kParse.
Expected<std::vector<std::pair<std::string, std::string>>> ParseCookieHeader(std::string_view header,
                                                                             const CookieLimits& limits = {});

// The value of cookie `name` in `header`: nullopt when absent; kPolicy when it appears more than
// once (ambiguous: one may have been planted); parse errors as ParseCookieHeader.
Expected<std::optional<std::string>> FindCookie(std::string_view header, std::string_view name,
                                                const CookieLimits& limits = {});

struct FormLimits {
  std::size_t max_body_bytes = 64 * 1024;  // kLimit beyond
  std::size_t max_fields = 256;            // kLimit beyond
};

// A parsed urlencoded form: fields in order, names and values percent-decoded ('+' is a space).
class Form {
 public:
  // Errors: body too large or too many fields (kLimit), a bad %XX escape or an encoded NUL in a
  // field (kParse, naming the field, or its position when the name itself is bad), an empty name.
  static Expected<Form> Parse(std::string_view body, const FormLimits& limits = {});
  // As Parse, after checking the request's Content-Type is application/x-www-form-urlencoded
  // (kInvalidArgument otherwise).
  static Expected<Form> FromRequest(const net::Request& request, const FormLimits& limits = {});

  // The one value of a single field: kNotFound when absent, kInvalidArgument when given more
  // than once.
  Expected<std::string> Single(std::string_view name) const;
  // As Single, but absence is nullopt rather than an error.
  Expected<std::optional<std::string>> Optional(std::string_view name) const;
  // Every value of a repeatable field, in order.
  std::vector<std::string> All(std::string_view name) const;
  const std::vector<std::pair<std::string, std::string>>& fields() const { return fields_; }

 private:
  std::vector<std::pair<std::string, std::string>> fields_;
};

}  // namespace upkeep::web
