// Arbitrary bytes through the Cookie header parser and the urlencoded form parser: nothing may
// crash, hang or read out of bounds, and what they return must respect their limits.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "upkeep/web/forms.hpp"
#include "upkeep/web/sessions.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  upkeep::web::CookieLimits cookie_limits;
  auto cookies = upkeep::web::ParseCookieHeader(input, cookie_limits);
  if (cookies.ok() && cookies->size() > cookie_limits.max_cookies) __builtin_trap();
  (void)upkeep::web::FindCookie(input, upkeep::web::kSessionCookieName);

  upkeep::web::FormLimits form_limits;
  form_limits.max_fields = 16;
  auto form = upkeep::web::Form::Parse(input, form_limits);
  if (form.ok()) {
    if (form->fields().size() > form_limits.max_fields) __builtin_trap();
    for (const auto& [name, value] : form->fields()) {
      if (name.empty() || name.size() > size || value.size() > size) __builtin_trap();
    }
    (void)form->Single("csrf_token");
    (void)form->Optional("password");
    (void)form->All("id");
  }
  // Also the form parser on the second half, as a second field set.
  (void)upkeep::web::Form::Parse(input.substr(size / 2));
  return 0;
}
