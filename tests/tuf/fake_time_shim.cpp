// An LD_PRELOAD shim standing in for faketime in tests: libc's time() returns
// $UPKEEP_FAKE_TIME (seconds since the epoch) when set. Proves a binary reads time through libc.
#include <time.h>

#include <cstdlib>

extern "C" time_t time(time_t* out) noexcept {
  time_t t = 0;
  if (const char* v = std::getenv("UPKEEP_FAKE_TIME")) {
    t = static_cast<time_t>(std::strtoll(v, nullptr, 10));
  } else {
    timespec ts{};
    clock_gettime(CLOCK_REALTIME, &ts);
    t = ts.tv_sec;
  }
  if (out) *out = t;
  return t;
}
