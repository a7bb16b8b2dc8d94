#include "upkeep/common/clock.hpp"

#include <sodium.h>

#include <cstdio>
#include <ctime>

namespace upkeep {

SysTime SystemClock::Now() const { return SysTime(std::chrono::seconds(::time(nullptr))); }

const SystemClock& SystemClock::Instance() {
  static const SystemClock clock;
  return clock;
}

Bytes SystemRandom::Generate(std::size_t n) {
  Bytes out(n);
  randombytes_buf(out.data(), n);
  return out;
}

SystemRandom& SystemRandom::Instance() {
  static SystemRandom random;
  return random;
}

std::string FormatTimestamp(SysTime t) {
  std::time_t tt = static_cast<std::time_t>(t.time_since_epoch().count());
  std::tm tm{};
  ::gmtime_r(&tt, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

Expected<SysTime> ParseTimestamp(const std::string& text) {
  // Exactly YYYY-MM-DDTHH:MM:SSZ; TUF requires this form.
  if (text.size() != 20 || text[4] != '-' || text[7] != '-' || text[10] != 'T' || text[13] != ':' ||
      text[16] != ':' || text[19] != 'Z') {
    return Error(Errc::kParse, "timestamp '" + text + "' is not of the form YYYY-MM-DDTHH:MM:SSZ");
  }
  for (int i : {0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18}) {
    if (text[static_cast<std::size_t>(i)] < '0' || text[static_cast<std::size_t>(i)] > '9') {
      return Error(Errc::kParse, "timestamp '" + text + "' has a non-digit");
    }
  }
  auto num = [&](std::size_t pos, std::size_t len) { return std::stoi(text.substr(pos, len)); };
  using namespace std::chrono;
  year_month_day ymd{year(num(0, 4)), month(static_cast<unsigned>(num(5, 2))), day(static_cast<unsigned>(num(8, 2)))};
  int hh = num(11, 2), mm = num(14, 2), ss = num(17, 2);
  if (!ymd.ok() || hh > 23 || mm > 59 || ss > 60) {
    return Error(Errc::kParse, "timestamp '" + text + "' is not a valid date and time");
  }
  return SysTime(sys_days(ymd).time_since_epoch() + hours(hh) + minutes(mm) + seconds(ss));
}

}  // namespace upkeep

namespace {
// libsodium must be initialised once before use; every binary links this file.
[[maybe_unused]] const int kSodiumReady = sodium_init();
}  // namespace
