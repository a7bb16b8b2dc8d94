// Timing rules of the agent, pure logic over Clock / Random (no threads, no I/O):
//   PollSchedule       when to check in next: interval +- jitter, exponential back-off on
//                      failure, Retry-After and the server's next_checkin_seconds honoured.
//   MaintenanceWindows when installing is allowed (settings "maintenance_windows").
//   SettleGate         settle_hours between software packages.
// Not thread-safe (PollSchedule keeps the failure count); the others are immutable values.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/packages/manifest.hpp"

namespace upkeep::agent {

struct PollOptions {
  std::chrono::seconds interval{3600};      // between successful check-ins
  double jitter = 0.2;                      // +- fraction of every delay, 0..0.5
  std::chrono::seconds backoff_cap{6 * 3600};
};

// What happened at the last check-in.
struct PollOutcome {
  bool ok = true;
  std::optional<std::chrono::seconds> retry_after;   // from a busy answer (RetryAfter())
  std::optional<std::chrono::seconds> next_checkin;  // the server's next_checkin_seconds (on success)
};

// Delays: success -> next_checkin (when given, exactly: the server already spreads its load)
// else interval with jitter. The k-th consecutive failure -> min(interval * 2^(k-1), cap) with
// jitter (so 1 h, 2 h, 4 h, 6 h, 6 h, ... by default). A Retry-After is a floor: never earlier.
// Every delay is at least 1 s and the server's values are clamped to 1 s .. 7 days.
class PollSchedule {
 public:
  // kInvalidArgument for a non-positive interval or cap, or jitter outside 0..0.5.
  static Expected<PollSchedule> Create(PollOptions options, const Clock& clock, Random& random);

  SysTime NextCheck(const PollOutcome& outcome);
  int consecutive_failures() const { return failures_; }

 private:
  PollSchedule(PollOptions options, const Clock& clock, Random& random)
      : options_(options), clock_(&clock), random_(&random) {}
  std::chrono::seconds Jittered(std::chrono::seconds base);

  PollOptions options_;
  const Clock* clock_;
  Random* random_;
  int failures_ = 0;
};

// Grammar of one entry (case-sensitive, single spaces):
//   ENTRY := DAYS " " HH:MM "-" HH:MM [ " " ZONE ]
//   DAYS  := "daily" | DAY | DAY "-" DAY | DAY "," DAY ("," DAY)*
//   DAY   := "Mon" | "Tue" | "Wed" | "Thu" | "Fri" | "Sat" | "Sun"
//   ZONE  := "UTC" | ("+" | "-") HH:MM          (fixed offset from UTC, at most 14:00; default UTC)
// DAYS are the days a window STARTS; an end at or before the start means the next day
// ("Mon-Fri 22:00-02:00" also covers Saturday 01:00). Day ranges may wrap ("Fri-Mon").
// End "24:00" is allowed; start == end is an error. Windows are [start, end).
class MaintenanceWindows {
 public:
  // Strict: kInvalidArgument naming the entry ("maintenance window 2 'Sat 25:00-...': ...").
  static Expected<MaintenanceWindows> Parse(const std::vector<std::string>& entries);

  bool always() const { return windows_.empty(); }
  // Empty list: always true.
  bool Contains(SysTime t) const;
  // `t` itself when inside a window (or always), else the next window start after `t`.
  SysTime NextStart(SysTime t) const;

 private:
  struct Window {
    std::vector<int> start_days;  // 0 = Monday
    int start_minute = 0;         // local, 0..1439
    int duration_minutes = 0;     // 1..1440
    int offset_minutes = 0;       // local = UTC + offset
  };
  std::vector<Window> windows_;
};

// settle_hours: after a software package was committed, the next software package waits that
// long. Base packages (and anything not kSoftware) are never held back.
class SettleGate {
 public:
  SettleGate(std::optional<SysTime> last_software_commit, std::chrono::hours settle)
      : last_(last_software_commit), settle_(settle) {}

  // The earliest time a package of `kind` may start (SysTime{} = any time).
  SysTime EarliestStart(packages::Kind kind) const;
  bool Allows(packages::Kind kind, SysTime now) const { return now >= EarliestStart(kind); }

 private:
  std::optional<SysTime> last_;
  std::chrono::hours settle_;
};

}  // namespace upkeep::agent
