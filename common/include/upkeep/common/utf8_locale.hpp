// A scoped switch of the calling thread's locale to C.UTF-8. libarchive converts entry names
// between UTF-8 and the locale's charset; under the default "C" locale non-ASCII names fail (and
// the 3.6 pax writer crashes on them). Every libarchive call sequence runs under one of these.
// Header-only; only the calling thread is affected.
#pragma once

#include <locale.h>

namespace upkeep {

class ScopedUtf8Locale {
 public:
  ScopedUtf8Locale() {
    static const locale_t utf8 = ::newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
    if (utf8) old_ = ::uselocale(utf8);
  }
  ~ScopedUtf8Locale() {
    if (old_) ::uselocale(old_);
  }
  ScopedUtf8Locale(const ScopedUtf8Locale&) = delete;
  ScopedUtf8Locale& operator=(const ScopedUtf8Locale&) = delete;

 private:
  locale_t old_ = nullptr;
};

}  // namespace upkeep
