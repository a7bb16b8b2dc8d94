#include <gtest/gtest.h>

#include "test_servers.hpp"
#include "upkeep/agent/timing.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;
using test::FixedRandom;

SysTime At(const std::string& text) {
  auto t = ParseTimestamp(text);
  EXPECT_TRUE(t.ok()) << text;
  return t.ok() ? *t : SysTime{};
}

// 2024-01-01 was a Monday.
TEST(PollScheduleTest, JitterStaysWithinBounds) {
  FakeClock clock(At("2024-01-01T00:00:00Z"));
  FixedRandom random;
  auto schedule = PollSchedule::Create(PollOptions{}, clock, random);
  ASSERT_TRUE(schedule.ok());
  random.fill = 0x00;  // lowest fraction: -20 %
  EXPECT_EQ(schedule->NextCheck(PollOutcome{}), clock.Now() + 2880s);
  random.fill = 0xff;  // highest: just under +20 %
  const SysTime high = schedule->NextCheck(PollOutcome{});
  EXPECT_LE(high, clock.Now() + 4320s);
  EXPECT_GE(high, clock.Now() + 4319s);
  random.fill = 0x80;  // middle: about the interval itself
  const SysTime mid = schedule->NextCheck(PollOutcome{});
  EXPECT_GE(mid, clock.Now() + 3600s);
  EXPECT_LE(mid, clock.Now() + 3610s);
}

TEST(PollScheduleTest, BackOffDoublesToTheCapAndResetsOnSuccess) {
  FakeClock clock(At("2024-01-01T00:00:00Z"));
  FixedRandom random;
  PollOptions options;
  options.jitter = 0;
  auto schedule = PollSchedule::Create(options, clock, random);
  ASSERT_TRUE(schedule.ok());
  PollOutcome fail;
  fail.ok = false;
  std::vector<std::chrono::seconds> delays;
  for (int i = 0; i < 6; ++i) delays.push_back(schedule->NextCheck(fail) - clock.Now());
  EXPECT_EQ(delays, (std::vector<std::chrono::seconds>{1h, 2h, 4h, 6h, 6h, 6h}));
  EXPECT_EQ(schedule->consecutive_failures(), 6);
  EXPECT_EQ(schedule->NextCheck(PollOutcome{}) - clock.Now(), 1h);
  EXPECT_EQ(schedule->consecutive_failures(), 0);
  EXPECT_EQ(schedule->NextCheck(fail) - clock.Now(), 1h);
}

TEST(PollScheduleTest, RetryAfterIsAFloorAndServerNextCheckinIsHonoured) {
  FakeClock clock(At("2024-01-01T00:00:00Z"));
  FixedRandom random;
  random.fill = 0x00;  // lowest jitter, so a floor shows
  auto schedule = PollSchedule::Create(PollOptions{}, clock, random);
  ASSERT_TRUE(schedule.ok());
  PollOutcome busy;
  busy.ok = false;
  busy.retry_after = 3500s;
  EXPECT_EQ(schedule->NextCheck(busy) - clock.Now(), 3500s);  // jittered 2880 s would be earlier
  busy.retry_after = 10s;
  EXPECT_EQ(schedule->NextCheck(busy) - clock.Now(), 5760s);  // 2 h - 20 %: later than 10 s anyway
  PollOutcome ok;
  ok.next_checkin = 900s;
  EXPECT_EQ(schedule->NextCheck(ok) - clock.Now(), 900s);
  ok.next_checkin = std::chrono::seconds(100 * 86400);  // hostile: clamped to 7 days
  EXPECT_EQ(schedule->NextCheck(ok) - clock.Now(), std::chrono::seconds(7 * 86400));
}

TEST(PollScheduleTest, RejectsBadOptions) {
  FakeClock clock(At("2024-01-01T00:00:00Z"));
  FixedRandom random;
  PollOptions o;
  o.jitter = 0.7;
  EXPECT_EQ(PollSchedule::Create(o, clock, random).error().code(), Errc::kInvalidArgument);
  o = PollOptions{};
  o.interval = 0s;
  EXPECT_FALSE(PollSchedule::Create(o, clock, random).ok());
}

TEST(MaintenanceWindowsTest, EmptyListAlwaysAllows) {
  auto w = MaintenanceWindows::Parse({});
  ASSERT_TRUE(w.ok());
  EXPECT_TRUE(w->always());
  EXPECT_TRUE(w->Contains(At("2024-01-03T12:00:00Z")));
  EXPECT_EQ(w->NextStart(At("2024-01-03T12:00:00Z")), At("2024-01-03T12:00:00Z"));
}

TEST(MaintenanceWindowsTest, SingleDayWindow) {
  auto w = MaintenanceWindows::Parse({"Sat 01:00-05:00"});
  ASSERT_TRUE(w.ok()) << w.error().message();
  EXPECT_FALSE(w->Contains(At("2024-01-06T00:59:59Z")));
  EXPECT_TRUE(w->Contains(At("2024-01-06T01:00:00Z")));
  EXPECT_TRUE(w->Contains(At("2024-01-06T04:59:59Z")));
  EXPECT_FALSE(w->Contains(At("2024-01-06T05:00:00Z")));
  EXPECT_FALSE(w->Contains(At("2024-01-07T02:00:00Z")));
  EXPECT_EQ(w->NextStart(At("2024-01-03T10:00:00Z")), At("2024-01-06T01:00:00Z"));
  // Just after it closed: next week's.
  EXPECT_EQ(w->NextStart(At("2024-01-06T05:00:00Z")), At("2024-01-13T01:00:00Z"));
  EXPECT_EQ(w->NextStart(At("2024-01-06T02:00:00Z")), At("2024-01-06T02:00:00Z"));
}

TEST(MaintenanceWindowsTest, CrossesMidnightAndTheWeekEnd) {
  auto w = MaintenanceWindows::Parse({"Mon-Fri 22:00-02:00"});
  ASSERT_TRUE(w.ok()) << w.error().message();
  EXPECT_TRUE(w->Contains(At("2024-01-05T23:00:00Z")));   // Fri night
  EXPECT_TRUE(w->Contains(At("2024-01-06T01:59:59Z")));   // Sat early: Friday's window
  EXPECT_FALSE(w->Contains(At("2024-01-06T23:00:00Z")));  // Sat night: no window starts Saturday
  EXPECT_FALSE(w->Contains(At("2024-01-01T01:00:00Z")));  // Mon early: Sunday had none
  EXPECT_EQ(w->NextStart(At("2024-01-06T12:00:00Z")), At("2024-01-08T22:00:00Z"));  // over the week end

  // A window starting Sunday late covers Monday early (the week boundary of the arithmetic).
  auto sun = MaintenanceWindows::Parse({"Sun 23:00-01:30"});
  ASSERT_TRUE(sun.ok());
  EXPECT_TRUE(sun->Contains(At("2024-01-08T01:00:00Z")));
  EXPECT_FALSE(sun->Contains(At("2024-01-08T01:30:00Z")));
  EXPECT_EQ(sun->NextStart(At("2024-01-08T02:00:00Z")), At("2024-01-14T23:00:00Z"));

  auto wrap = MaintenanceWindows::Parse({"Fri-Mon 10:00-11:00"});
  ASSERT_TRUE(wrap.ok());
  EXPECT_TRUE(wrap->Contains(At("2024-01-07T10:30:00Z")));   // Sun
  EXPECT_FALSE(wrap->Contains(At("2024-01-03T10:30:00Z")));  // Wed
}

TEST(MaintenanceWindowsTest, DailyListsAndOffsets) {
  auto w = MaintenanceWindows::Parse({"daily 02:00-03:00 +01:00", "Tue,Thu 12:00-24:00"});
  ASSERT_TRUE(w.ok()) << w.error().message();
  EXPECT_TRUE(w->Contains(At("2024-01-03T01:30:00Z")));   // 02:30 at +01:00
  EXPECT_FALSE(w->Contains(At("2024-01-03T02:30:00Z")));  // 03:30 local
  EXPECT_TRUE(w->Contains(At("2024-01-02T23:59:59Z")));   // Tue until midnight
  EXPECT_FALSE(w->Contains(At("2024-01-03T12:00:00Z")));  // Wed
  EXPECT_EQ(w->NextStart(At("2024-01-03T02:30:00Z")), At("2024-01-04T01:00:00Z"));
  auto neg = MaintenanceWindows::Parse({"Mon 00:00-01:00 -05:00"});
  ASSERT_TRUE(neg.ok());
  EXPECT_TRUE(neg->Contains(At("2024-01-01T05:30:00Z")));
}

TEST(MaintenanceWindowsTest, StrictParsingNamesTheEntry) {
  for (const std::string bad : {"Sat", "Sat 01:00", "sat 01:00-02:00", "Sat 25:00-02:00", "Sat 01:00-01:00",
                                "Sat 1:00-02:00", "Sat 01:00-02:60", "Mon-Xyz 01:00-02:00", "Mon,Mon 01:00-02:00",
                                "Sat 01:00-02:00 CET", "Sat 01:00-02:00 +15:00", "Sat  01:00-02:00",
                                "Sat 01:00-02:00 UTC extra", "Sat 24:00-02:00"}) {
    auto w = MaintenanceWindows::Parse({"daily 01:00-02:00", bad});
    ASSERT_FALSE(w.ok()) << bad;
    EXPECT_EQ(w.error().code(), Errc::kInvalidArgument);
    EXPECT_NE(w.error().message().find("maintenance window 2 '" + bad + "'"), std::string::npos)
        << w.error().message();
  }
}

TEST(SettleGateTest, HoldsSoftwareOnlyAfterASoftwareCommit) {
  const SysTime commit = At("2024-01-01T10:00:00Z");
  SettleGate gate(commit, 24h);
  EXPECT_EQ(gate.EarliestStart(packages::Kind::kSoftware), At("2024-01-02T10:00:00Z"));
  EXPECT_FALSE(gate.Allows(packages::Kind::kSoftware, At("2024-01-02T09:59:59Z")));
  EXPECT_TRUE(gate.Allows(packages::Kind::kSoftware, At("2024-01-02T10:00:00Z")));
  EXPECT_TRUE(gate.Allows(packages::Kind::kBase, At("2024-01-01T10:00:01Z")));
  SettleGate none(std::nullopt, 24h);
  EXPECT_TRUE(none.Allows(packages::Kind::kSoftware, commit));
  SettleGate zero(commit, 0h);
  EXPECT_TRUE(zero.Allows(packages::Kind::kSoftware, commit));
}

}  // namespace
}  // namespace upkeep::agent
