#include "upkeep/agent/timing.hpp"

#include <algorithm>
#include <array>
#include <cmath>

namespace upkeep::agent {

namespace {
constexpr std::chrono::seconds kMaxServerDelay{7 * 86400};

std::chrono::seconds ClampServer(std::chrono::seconds s) {
  return std::clamp(s, std::chrono::seconds(1), kMaxServerDelay);
}
}  // namespace

Expected<PollSchedule> PollSchedule::Create(PollOptions options, const Clock& clock, Random& random) {
  if (options.interval.count() <= 0) return Error(Errc::kInvalidArgument, "poll interval must be positive");
  if (options.backoff_cap.count() <= 0) return Error(Errc::kInvalidArgument, "poll back-off cap must be positive");
  if (!(options.jitter >= 0.0 && options.jitter <= 0.5)) {
    return Error(Errc::kInvalidArgument, "poll jitter must be within 0..0.5");
  }
  return PollSchedule(options, clock, random);
}

std::chrono::seconds PollSchedule::Jittered(std::chrono::seconds base) {
  const Bytes b = random_->Generate(8);
  std::uint64_t v = 0;
  for (std::size_t i = 0; i < 8 && i < b.size(); ++i) v = (v << 8) | b[i];
  const double u = static_cast<double>(v >> 11) / 9007199254740992.0;  // [0, 1)
  const double factor = 1.0 + options_.jitter * (2.0 * u - 1.0);
  const auto s = static_cast<std::int64_t>(std::llround(static_cast<double>(base.count()) * factor));
  return std::chrono::seconds(std::max<std::int64_t>(s, 1));
}

SysTime PollSchedule::NextCheck(const PollOutcome& outcome) {
  const SysTime now = clock_->Now();
  std::chrono::seconds delay;
  if (outcome.ok) {
    failures_ = 0;
    delay = outcome.next_checkin ? ClampServer(*outcome.next_checkin) : Jittered(options_.interval);
  } else {
    failures_ = std::min(failures_ + 1, 62);
    std::chrono::seconds base = options_.interval;
    for (int i = 1; i < failures_ && base < options_.backoff_cap; ++i) base *= 2;
    delay = Jittered(std::min(base, options_.backoff_cap));
  }
  if (outcome.retry_after) delay = std::max(delay, ClampServer(*outcome.retry_after));
  return now + delay;
}

namespace {

constexpr std::array<const char*, 7> kDays = {"Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"};
constexpr std::int64_t kWeek = 7 * 86400;

int DayIndex(std::string_view s) {
  for (std::size_t i = 0; i < kDays.size(); ++i) {
    if (s == kDays[i]) return static_cast<int>(i);
  }
  return -1;
}

// "HH:MM" -> minutes; allow_24 permits "24:00".
std::optional<int> ParseClock(std::string_view s, bool allow_24) {
  if (s.size() != 5 || s[2] != ':') return std::nullopt;
  for (std::size_t i : {0, 1, 3, 4}) {
    if (s[i] < '0' || s[i] > '9') return std::nullopt;
  }
  const int h = (s[0] - '0') * 10 + (s[1] - '0');
  const int m = (s[3] - '0') * 10 + (s[4] - '0');
  if (m > 59) return std::nullopt;
  if (h == 24 && m == 0 && allow_24) return 1440;
  if (h > 23) return std::nullopt;
  return h * 60 + m;
}

std::vector<std::string_view> Split(std::string_view s, char sep) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    const std::size_t at = s.find(sep, start);
    out.push_back(s.substr(start, at == std::string_view::npos ? std::string_view::npos : at - start));
    if (at == std::string_view::npos) return out;
    start = at + 1;
  }
}

// Seconds since the most recent Monday 00:00 local time.
std::int64_t SecondOfWeek(SysTime t, int offset_minutes) {
  const std::int64_t local = t.time_since_epoch().count() + offset_minutes * 60;
  // 1970-01-01 was a Thursday: Monday 00:00 was 3 days earlier.
  std::int64_t sow = (local + 3 * 86400) % kWeek;
  if (sow < 0) sow += kWeek;
  return sow;
}

}  // namespace

Expected<MaintenanceWindows> MaintenanceWindows::Parse(const std::vector<std::string>& entries) {
  MaintenanceWindows out;
  for (std::size_t i = 0; i < entries.size(); ++i) {
    const std::string& entry = entries[i];
    const std::string what = "maintenance window " + std::to_string(i + 1) + " '" + entry.substr(0, 64) + "'";
    auto fail = [&](const std::string& why) { return Error(Errc::kInvalidArgument, what + ": " + why); };
    const auto parts = Split(entry, ' ');
    if (parts.size() < 2 || parts.size() > 3) {
      return fail("expected 'DAYS HH:MM-HH:MM [ZONE]', e.g. 'Sat 01:00-05:00' or 'Mon-Fri 22:00-02:00 +01:00'");
    }
    Window w;
    const std::string_view days = parts[0];
    if (days == "daily") {
      w.start_days = {0, 1, 2, 3, 4, 5, 6};
    } else if (days.find('-') != std::string_view::npos) {
      const auto range = Split(days, '-');
      const int a = range.size() == 2 ? DayIndex(range[0]) : -1;
      const int b = range.size() == 2 ? DayIndex(range[1]) : -1;
      if (a < 0 || b < 0) return fail("bad day range '" + std::string(days) + "' (e.g. Mon-Fri)");
      for (int d = a;; d = (d + 1) % 7) {
        w.start_days.push_back(d);
        if (d == b) break;
      }
    } else {
      for (std::string_view d : Split(days, ',')) {
        const int idx = DayIndex(d);
        if (idx < 0) return fail("unknown day '" + std::string(d) + "' (Mon, Tue, Wed, Thu, Fri, Sat, Sun or daily)");
        if (std::find(w.start_days.begin(), w.start_days.end(), idx) != w.start_days.end()) {
          return fail("day '" + std::string(d) + "' given twice");
        }
        w.start_days.push_back(idx);
      }
    }
    const auto times = Split(parts[1], '-');
    if (times.size() != 2) return fail("bad time range '" + std::string(parts[1]) + "' (e.g. 22:00-02:00)");
    const auto start = ParseClock(times[0], false);
    const auto end = ParseClock(times[1], true);
    if (!start) return fail("bad start time '" + std::string(times[0]) + "' (HH:MM, 00:00..23:59)");
    if (!end) return fail("bad end time '" + std::string(times[1]) + "' (HH:MM, 00:00..24:00)");
    if (*start == *end % 1440 && *end != 1440) return fail("start and end are the same time");
    w.start_minute = *start;
    w.duration_minutes = *end > *start ? *end - *start : *end + 1440 - *start;
    if (parts.size() == 3 && parts[2] != "UTC") {
      const std::string_view z = parts[2];
      const auto off = z.size() == 6 && (z[0] == '+' || z[0] == '-') ? ParseClock(z.substr(1), false) : std::nullopt;
      if (!off || *off > 14 * 60) return fail("bad time zone '" + std::string(z) + "' (UTC, +HH:MM or -HH:MM)");
      w.offset_minutes = z[0] == '-' ? -*off : *off;
    }
    out.windows_.push_back(std::move(w));
  }
  return out;
}

bool MaintenanceWindows::Contains(SysTime t) const {
  if (windows_.empty()) return true;
  for (const Window& w : windows_) {
    const std::int64_t sow = SecondOfWeek(t, w.offset_minutes);
    for (int d : w.start_days) {
      const std::int64_t start = static_cast<std::int64_t>(d) * 86400 + w.start_minute * 60;
      std::int64_t since = (sow - start) % kWeek;
      if (since < 0) since += kWeek;
      if (since < static_cast<std::int64_t>(w.duration_minutes) * 60) return true;
    }
  }
  return false;
}

SysTime MaintenanceWindows::NextStart(SysTime t) const {
  if (Contains(t)) return t;
  std::int64_t best = kWeek + 1;
  for (const Window& w : windows_) {
    const std::int64_t sow = SecondOfWeek(t, w.offset_minutes);
    for (int d : w.start_days) {
      const std::int64_t start = static_cast<std::int64_t>(d) * 86400 + w.start_minute * 60;
      std::int64_t until = (start - sow) % kWeek;
      if (until <= 0) until += kWeek;
      best = std::min(best, until);
    }
  }
  return t + std::chrono::seconds(best);
}

SysTime SettleGate::EarliestStart(packages::Kind kind) const {
  if (kind != packages::Kind::kSoftware || !last_) return SysTime{};
  return *last_ + std::chrono::duration_cast<std::chrono::seconds>(settle_);
}

}  // namespace upkeep::agent
