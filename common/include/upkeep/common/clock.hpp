// The seams in front of time and randomness. Production code takes a Clock& / Random& from its
// constructor; tests pass fakes that jump in time or return fixed bytes.
#pragma once

#include <chrono>
#include <cstdint>
#include <string>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/error.hpp"

namespace upkeep {

using SysTime = std::chrono::sys_seconds;

class Clock {
 public:
  virtual ~Clock() = default;
  virtual SysTime Now() const = 0;
};

// Reads time through libc's time(), so LD_PRELOAD clock shifters (as used by the TUF
// conformance suite and by our own tests) work.
class SystemClock final : public Clock {
 public:
  SysTime Now() const override;
  static const SystemClock& Instance();
};

class FakeClock final : public Clock {
 public:
  explicit FakeClock(SysTime now) : now_(now) {}
  SysTime Now() const override { return now_; }
  void Set(SysTime t) { now_ = t; }
  void Advance(std::chrono::seconds d) { now_ += d; }

 private:
  SysTime now_;
};

class Random {
 public:
  virtual ~Random() = default;
  virtual Bytes Generate(std::size_t n) = 0;
};

class SystemRandom final : public Random {
 public:
  Bytes Generate(std::size_t n) override;
  static SystemRandom& Instance();
};

// RFC 3339 UTC with a 'Z' suffix ("2030-01-01T00:00:00Z"), as TUF metadata uses.
std::string FormatTimestamp(SysTime t);
Expected<SysTime> ParseTimestamp(const std::string& text);

}  // namespace upkeep
