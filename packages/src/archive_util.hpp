// Internal helpers shared by the package reader, writer and extractor (not a public header).
#pragma once

#include <locale.h>

#include <string>
#include <string_view>

namespace upkeep::packages::internal {

// libarchive converts names between UTF-8 and the locale's charset; under the default "C" locale
// non-ASCII names fail (and the 3.6 pax writer crashes on them). This switches the calling
// thread, and only it, to C.UTF-8 for the duration of a libarchive call sequence.
class Utf8Locale {
 public:
  Utf8Locale() {
    static const locale_t utf8 = ::newlocale(LC_CTYPE_MASK, "C.UTF-8", static_cast<locale_t>(nullptr));
    if (utf8) old_ = ::uselocale(utf8);
  }
  ~Utf8Locale() {
    if (old_) ::uselocale(old_);
  }
  Utf8Locale(const Utf8Locale&) = delete;
  Utf8Locale& operator=(const Utf8Locale&) = delete;

 private:
  locale_t old_ = nullptr;
};

// Entry names in error messages: quoted and cut, so a hostile name can't flood a log line.
inline std::string Quote(std::string_view s) { return "'" + std::string(s.substr(0, 300)) + "'"; }

}  // namespace upkeep::packages::internal
