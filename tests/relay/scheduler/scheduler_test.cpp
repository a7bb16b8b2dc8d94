// Tests of the client upgrade scheduler: unit tests of each rule, then a simulated fleet of 2,000
// clients (random link speeds, slow, stalling, failing and disconnecting ones) driven by fake
// clocks, checking the concurrency cap at every event and the bandwidth cap over every 1-second
// window.
#include "upkeep/relay/scheduler.hpp"

#include <gtest/gtest.h>

#include <deque>
#include <functional>
#include <random>
#include <set>

#include "upkeep/common/json.hpp"

namespace upkeep::relay {
namespace {

using namespace std::chrono_literals;

std::string Sha() { return std::string(64, 'a'); }

ClientBuild Build(const std::string& platform, const std::string& version, std::uint64_t length) {
  ClientBuild b;
  b.platform = platform;
  b.version = version;
  b.length = length;
  b.sha256 = Sha();
  b.signature = "c2lnbmF0dXJl";
  b.path = "/var/lib/upkeep/client-builds/" + platform + "-" + version;
  return b;
}

// Records what the scheduler asks of the relay; checks the concurrency cap at every start.
class FakeLink final : public UpgradeLink {
 public:
  struct Chunk {
    std::string id;
    std::uint64_t offset;
    std::uint32_t length;
    MonoTime at;
  };
  void StartUpgrade(const std::string& client_id, const ClientBuild& build) override {
    EXPECT_LT(in_flight.size(), cap) << "started " << client_id << " over the cap";
    max_in_flight_seen = std::max(max_in_flight_seen, in_flight.size() + 1);
    EXPECT_TRUE(in_flight.insert(client_id).second) << client_id << " started twice";
    starts.push_back(client_id);
    start_versions.push_back(build.version);
    if (on_start) on_start(client_id, build);
  }
  void SendChunk(const std::string& client_id, const ClientBuild& build, std::uint64_t offset,
                 std::uint32_t length) override {
    EXPECT_TRUE(in_flight.count(client_id)) << "chunk for " << client_id << " which is not upgrading";
    EXPECT_LE(offset + length, build.length);
    chunks.push_back(Chunk{client_id, offset, length, clock ? clock->Now() : MonoTime{}});
    if (on_chunk) on_chunk(client_id, offset, length);
  }
  void CancelUpgrade(const std::string& client_id, std::string_view reason) override {
    in_flight.erase(client_id);
    cancels.emplace_back(client_id, std::string(reason));
    if (on_cancel) on_cancel(client_id);
  }
  void Finished(const std::string& id) { in_flight.erase(id); }

  std::size_t cap = 1000000;
  const MonoClock* clock = nullptr;
  std::set<std::string> in_flight;
  std::size_t max_in_flight_seen = 0;
  std::vector<std::string> starts, start_versions;
  std::vector<Chunk> chunks;
  std::vector<std::pair<std::string, std::string>> cancels;
  std::function<void(const std::string&, const ClientBuild&)> on_start;
  std::function<void(const std::string&, std::uint64_t, std::uint32_t)> on_chunk;
  std::function<void(const std::string&)> on_cancel;
};

class SchedulerTest : public ::testing::Test {
 protected:
  SchedulerTest() : wall(SysTime(std::chrono::seconds(1900000000))) { link.clock = &mono; }

  std::unique_ptr<UpgradeScheduler> Make(SchedulerSettings s) {
    link.cap = s.max_concurrent_client_upgrades;
    auto r = UpgradeScheduler::Create(link, mono, wall, s);
    EXPECT_TRUE(r.ok()) << (r.ok() ? "" : r.error().message());
    return std::move(r).value();
  }
  static SchedulerSettings Small() {
    SchedulerSettings s;
    s.max_concurrent_client_upgrades = 2;
    s.max_client_upgrade_bandwidth = 1 << 20;
    s.stall_timeout = 5s;
    s.retry_backoff = 2s;
    s.max_attempts = 2;
    return s;
  }
  void Arrive(UpgradeScheduler& s, const std::string& id, const std::string& version,
               const std::string& platform = "linux") {
    CheckIn c;
    c.id = id;
    c.platform = platform;
    c.version = version;
    ASSERT_TRUE(s.ClientCheckedIn(c).ok());
  }
  // Runs one client's whole upgrade: BUILD_GET, accept every chunk, report installed.
  void Complete(UpgradeScheduler& s, const std::string& id, const std::string& version, bool send_get = true) {
    std::size_t seen = 0;
    if (send_get) {
      seen = link.chunks.size();
      ASSERT_TRUE(s.BuildRequested(id, version, 0).ok());
    }
    for (int i = 0; i < 100000 && s.Find(id)->bytes_sent < s.Find(id)->bytes_total; ++i) {
      mono.Advance(10ms);
      for (; seen < link.chunks.size(); ++seen)
        if (link.chunks[seen].id == id) s.ChunkAccepted(id, link.chunks[seen].length);
      s.Tick();
    }
    for (; seen < link.chunks.size(); ++seen)
      if (link.chunks[seen].id == id) s.ChunkAccepted(id, link.chunks[seen].length);
    BuildReport r;
    r.version = version;
    r.result = "installed";
    link.Finished(id);  // before the report: the scheduler may start the next one inside it
    ASSERT_TRUE(s.BuildReported(id, r).ok());
  }

  FakeMonoClock mono;
  FakeClock wall;
  FakeLink link;
};

TEST_F(SchedulerTest, RefusesBadSettings) {
  SchedulerSettings s = Small();
  s.max_concurrent_client_upgrades = 0;
  auto r = UpgradeScheduler::Create(link, mono, wall, s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("max_concurrent_client_upgrades"), std::string::npos);
  s = Small();
  s.max_client_upgrade_bandwidth = 100;
  r = UpgradeScheduler::Create(link, mono, wall, s);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("max_client_upgrade_bandwidth"), std::string::npos);
  s = Small();
  s.chunk_bytes = 70000;
  EXPECT_FALSE(UpgradeScheduler::Create(link, mono, wall, s).ok());
  s = Small();
  s.max_attempts = 0;
  EXPECT_FALSE(UpgradeScheduler::Create(link, mono, wall, s).ok());

  auto sched = Make(Small());
  EXPECT_EQ(sched->SetMaxConcurrent(0).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(sched->SetBandwidth(0).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(sched->settings().max_concurrent_client_upgrades, 2u);
  EXPECT_EQ(sched->settings().max_client_upgrade_bandwidth, 1u << 20);
}

TEST_F(SchedulerTest, RefusesBadBuildsAndKeepsThePreviousSet) {
  auto sched = Make(Small());
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1000)}).ok());
  std::vector<std::function<void(ClientBuild&)>> breakers = {
      [](ClientBuild& b) { b.platform = ""; },          [](ClientBuild& b) { b.platform = "li nux"; },
      [](ClientBuild& b) { b.version = "2.0"; },        [](ClientBuild& b) { b.length = 0; },
      [](ClientBuild& b) { b.sha256 = "ABC"; },         [](ClientBuild& b) { b.signature = ""; },
      [](ClientBuild& b) { b.path.clear(); },           [](ClientBuild& b) { b.signature = std::string(5000, 's'); },
  };
  for (auto& breaker : breakers) {
    ClientBuild b = Build("linux", "3.0.0", 1000);
    breaker(b);
    auto st = sched->SetBuilds({b});
    ASSERT_FALSE(st.ok());
    EXPECT_NE(st.error().message().find("client build for platform"), std::string::npos);
  }
  auto dup = sched->SetBuilds({Build("linux", "3.0.0", 1), Build("linux", "3.0.1", 1)});
  ASSERT_FALSE(dup.ok());
  EXPECT_NE(dup.error().message().find("given twice"), std::string::npos);
  // Still the 2.0.0 build: a 1.0.0 client is queued for 2.0.0.
  Arrive(*sched, "c1", "1.0.0");
  ASSERT_EQ(link.start_versions.size(), 1u);
  EXPECT_EQ(link.start_versions[0], "2.0.0");
}

TEST_F(SchedulerTest, RefusesBadCheckIns) {
  auto sched = Make(Small());
  CheckIn c;
  c.platform = "linux";
  c.version = "1.0.0";
  c.id = "";
  EXPECT_EQ(sched->ClientCheckedIn(c).error().code(), Errc::kInvalidArgument);
  c.id = std::string(257, 'x');
  EXPECT_EQ(sched->ClientCheckedIn(c).error().code(), Errc::kInvalidArgument);
  c.id = std::string("a\0b", 3);
  EXPECT_EQ(sched->ClientCheckedIn(c).error().code(), Errc::kInvalidArgument);
  c.id = "ok";
  c.version = std::string(65, '1');
  EXPECT_EQ(sched->ClientCheckedIn(c).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(sched->Stats().clients, 0u);
  EXPECT_EQ(sched->Find("ok").error().code(), Errc::kNotFound);
}

TEST_F(SchedulerTest, QueuesOutdatedClientsOnlyAndShowsPendingVersion) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 1;
  auto sched = Make(s);
  Arrive(*sched, "old1", "1.0.0");
  Arrive(*sched, "old2", "1.9.9");
  Arrive(*sched, "new", "2.0.0");
  Arrive(*sched, "newer", "10.0.0");
  Arrive(*sched, "mac", "1.0.0", "macos");
  Arrive(*sched, "weird", "v1");
  EXPECT_TRUE(link.starts.empty());  // no builds yet: nothing to do
  EXPECT_EQ(sched->Find("old1")->state, ClientState::kCurrent);

  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 5000)}).ok());
  ASSERT_EQ(link.starts, std::vector<std::string>{"old1"});  // sorted by id, cap 1
  EXPECT_EQ(sched->Find("old1")->state, ClientState::kUpgrading);
  EXPECT_EQ(sched->Find("old2")->state, ClientState::kPending);
  EXPECT_EQ(sched->Find("old2")->detail, "version 2.0.0");
  EXPECT_EQ(sched->Find("new")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->Find("newer")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->Find("mac")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->Find("mac")->detail, "no client build for this platform");
  EXPECT_EQ(sched->Find("weird")->state, ClientState::kFailed);
  EXPECT_NE(sched->Find("weird")->detail.find("not MAJOR.MINOR.BUILD"), std::string::npos);
  EXPECT_EQ(sched->QueueOrder(), std::vector<std::string>{"old2"});

  Complete(*sched, "old1", "2.0.0");
  EXPECT_EQ(sched->Find("old1")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->Find("old1")->version, "2.0.0");
  EXPECT_EQ(link.starts.back(), "old2");
  // A client arriving later is queued on check-in.
  Arrive(*sched, "late", "0.1.0");
  EXPECT_EQ(sched->Find("late")->state, ClientState::kPending);
  // A check-in with the new version (after a manual update) leaves the queue.
  Arrive(*sched, "late", "2.0.0");
  EXPECT_EQ(sched->Find("late")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->QueueLength(), 0u);
}

TEST_F(SchedulerTest, LiveConcurrencyChangeLetsRunningFinishAndStartsNoneOverTheCap) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 3;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 3000)}).ok());
  for (int i = 0; i < 10; ++i) Arrive(*sched, "c" + std::to_string(i), "1.0.0");
  ASSERT_EQ(link.starts.size(), 3u);

  ASSERT_TRUE(sched->SetMaxConcurrent(1).ok());
  link.cap = 1;
  EXPECT_EQ(sched->ActiveCount(), 3u);  // running upgrades are not cut
  Complete(*sched, "c0", "2.0.0");
  Complete(*sched, "c1", "2.0.0");
  EXPECT_EQ(link.starts.size(), 3u);  // still 1 running: at the cap, no new start
  Complete(*sched, "c2", "2.0.0");
  ASSERT_EQ(link.starts.size(), 4u);  // under the cap now
  EXPECT_EQ(sched->ActiveCount(), 1u);

  link.cap = 5;  // raised before the call: it starts upgrades inside
  ASSERT_TRUE(sched->SetMaxConcurrent(5).ok());
  EXPECT_EQ(sched->ActiveCount(), 5u);
  EXPECT_EQ(link.starts.size(), 8u);
}

TEST_F(SchedulerTest, ConsoleRequestMovesAPendingClientToTheFront) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 1;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 200000)}).ok());
  for (const char* id : {"a", "b", "c", "d", "e"}) Arrive(*sched, id, "1.0.0");
  ASSERT_EQ(sched->QueueOrder(), (std::vector<std::string>{"b", "c", "d", "e"}));

  auto answer = sched->ConsoleAsked("d");
  EXPECT_EQ(answer.kind, ConsoleAnswer::Kind::kMovedToFront);
  EXPECT_EQ(sched->QueueOrder(), (std::vector<std::string>{"d", "b", "c", "e"}));
  EXPECT_EQ(sched->Find("d")->state, ClientState::kPending);

  // The running one is busy, with an estimate: 200,000 bytes at 1 MiB/s is about 190 ms.
  ASSERT_TRUE(sched->BuildRequested("a", "2.0.0", 0).ok());
  answer = sched->ConsoleAsked("a");
  EXPECT_EQ(answer.kind, ConsoleAnswer::Kind::kUpgrading);
  EXPECT_GT(answer.estimated_wait.count(), 100);
  EXPECT_LT(answer.estimated_wait.count(), 300);
  EXPECT_EQ(sched->ConsoleAsked("nobody").kind, ConsoleAnswer::Kind::kNotPending);

  Complete(*sched, "a", "2.0.0", /*send_get=*/false);
  EXPECT_EQ(link.starts.back(), "d");  // the console's client is the next to start
  EXPECT_EQ(sched->ConsoleAsked("a").kind, ConsoleAnswer::Kind::kNotPending);
}

TEST_F(SchedulerTest, StalledClientsAreRetriedAfterBackOffThenGivenUp) {
  auto sched = Make(Small());  // stall 5 s, back-off 2 s, 2 attempts
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1 << 20)}).ok());
  Arrive(*sched, "s", "1.0.0");
  ASSERT_TRUE(sched->BuildRequested("s", "2.0.0", 0).ok());
  mono.Advance(100ms);
  sched->Tick();
  ASSERT_FALSE(link.chunks.empty());  // granted, never accepted
  mono.Advance(4s);
  sched->Tick();
  EXPECT_EQ(sched->Find("s")->state, ClientState::kUpgrading);
  mono.Advance(1s + 200ms);
  sched->Tick();
  ASSERT_EQ(sched->Find("s")->state, ClientState::kFailed);
  EXPECT_EQ(sched->Find("s")->detail, "stalled (attempt 1 of 2, retried later)");
  ASSERT_EQ(link.cancels.size(), 1u);
  EXPECT_EQ(link.cancels[0], (std::pair<std::string, std::string>{"s", "upgrade_stalled"}));
  EXPECT_EQ(sched->ActiveCount(), 0u);
  // The back-off holds even if it checks in again meanwhile.
  Arrive(*sched, "s", "1.0.0");
  EXPECT_EQ(sched->Find("s")->state, ClientState::kFailed);
  ASSERT_TRUE(sched->NextWakeup().has_value());
  mono.Advance(2s);
  sched->Tick();
  ASSERT_EQ(link.starts.size(), 2u);  // retried
  // Second attempt: it never even asks for the build.
  mono.Advance(5s + 1ms);
  sched->Tick();
  ASSERT_EQ(sched->Find("s")->state, ClientState::kFailed);
  EXPECT_TRUE(sched->Find("s")->given_up);
  EXPECT_EQ(sched->Find("s")->detail, "gave up after 2 attempts: stalled");
  mono.Advance(60s);
  sched->Tick();
  Arrive(*sched, "s", "1.0.0");
  EXPECT_EQ(link.starts.size(), 2u);  // given up stays given up
  EXPECT_FALSE(sched->Busy());
  // An administrator's retry (or a new build) gives it a new chance.
  EXPECT_EQ(sched->Retry("nobody").error().code(), Errc::kNotFound);
  ASSERT_TRUE(sched->Retry("s").ok());
  EXPECT_EQ(link.starts.size(), 3u);
  EXPECT_EQ(sched->Retry("s").error().code(), Errc::kInvalidArgument);  // not failed now
}

TEST_F(SchedulerTest, AClientThatNeverReportsStalls) {
  auto sched = Make(Small());
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1000)}).ok());
  Arrive(*sched, "r", "1.0.0");
  ASSERT_TRUE(sched->BuildRequested("r", "2.0.0", 0).ok());
  mono.Advance(10ms);
  sched->Tick();
  sched->ChunkAccepted("r", 1000);
  mono.Advance(5s + 1ms);
  sched->Tick();
  EXPECT_EQ(sched->Find("r")->state, ClientState::kFailed);
  EXPECT_NE(sched->Find("r")->detail.find("stalled"), std::string::npos);
}

TEST_F(SchedulerTest, AClientWaitingForBandwidthIsNotStalled) {
  auto s = Small();
  s.max_client_upgrade_bandwidth = 16384;  // 16 KiB/s: a 64 KiB build takes 4 s
  s.stall_timeout = 1s;
  s.max_concurrent_client_upgrades = 4;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 65536)}).ok());
  for (const char* id : {"a", "b", "c", "d"}) {
    Arrive(*sched, id, "1.0.0");
    ASSERT_TRUE(sched->BuildRequested(id, "2.0.0", 0).ok());
  }
  std::size_t seen = 0;
  for (int i = 0; i < 1500; ++i) {  // 15 s: 240 KiB of the 256 KiB
    mono.Advance(10ms);
    for (; seen < link.chunks.size(); ++seen) sched->ChunkAccepted(link.chunks[seen].id, link.chunks[seen].length);
    sched->Tick();
  }
  for (const char* id : {"a", "b", "c", "d"}) {
    EXPECT_EQ(sched->Find(id)->state, ClientState::kUpgrading) << id;
    EXPECT_GT(sched->Find(id)->bytes_sent, 55000u) << id;  // a fair share each
    EXPECT_LT(sched->Find(id)->bytes_sent, 65536u) << id;
  }
  EXPECT_TRUE(link.cancels.empty());
}

TEST_F(SchedulerTest, CorruptOrFailedBuildReportsFailTheClient) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 10;
  s.max_attempts = 5;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1000)}).ok());
  // Not upgrading: refused, nothing changes.
  Arrive(*sched, "cur", "2.0.0");
  BuildReport r;
  r.version = "2.0.0";
  r.result = "installed";
  EXPECT_EQ(sched->BuildReported("cur", r).error().code(), Errc::kVerification);
  EXPECT_EQ(sched->Find("cur")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->BuildReported("ghost", r).error().code(), Errc::kNotFound);
  EXPECT_EQ(sched->BuildRequested("cur", "2.0.0", 0).error().code(), Errc::kVerification);

  struct Case {
    std::string id, version, result, detail, expect;
    bool ok;
  };
  std::vector<Case> cases = {
      {"v", "9.9.9", "installed", "", "corrupt build report: version '9.9.9', expected '2.0.0'", false},
      {"res", "2.0.0", "maybe", "", "corrupt build report: result 'maybe'", false},
      {"early", "2.0.0", "installed", "", "corrupt build report: installed before the whole build was sent", false},
      {"fail", "2.0.0", "failed", "bad\nsignature\x01", "client reports failure: bad?signature?", true},
      {"long", "2.0.0", "failed", std::string(500, 'x'), "client reports failure: " + std::string(200, 'x'), true},
  };
  for (const Case& c : cases) {
    Arrive(*sched, c.id, "1.0.0");
    ASSERT_TRUE(sched->BuildRequested(c.id, "2.0.0", 0).ok());
    if (c.id != "early") {
      mono.Advance(10ms);
      sched->Tick();
      sched->ChunkAccepted(c.id, 1000);
    }
    r.version = c.version;
    r.result = c.result;
    r.detail = c.detail;
    auto st = sched->BuildReported(c.id, r);
    EXPECT_EQ(st.ok(), c.ok) << c.id;
    if (!st.ok()) {
      EXPECT_EQ(st.error().code(), Errc::kVerification);
    }
    auto found = sched->Find(c.id);
    EXPECT_EQ(found->state, ClientState::kFailed) << c.id;
    EXPECT_EQ(found->detail, c.expect + " (attempt 1 of 5, retried later)") << c.id;
  }
  // BUILD_GET errors: wrong version, offset beyond the end, a second BUILD_GET.
  Arrive(*sched, "g1", "1.0.0");
  EXPECT_EQ(sched->BuildRequested("g1", "3.0.0", 0).error().code(), Errc::kVerification);
  EXPECT_EQ(sched->Find("g1")->state, ClientState::kFailed);
  Arrive(*sched, "g2", "1.0.0");
  EXPECT_EQ(sched->BuildRequested("g2", "2.0.0", 1001).error().code(), Errc::kVerification);
  EXPECT_NE(sched->Find("g2")->detail.find("beyond length"), std::string::npos);
  Arrive(*sched, "g3", "1.0.0");
  ASSERT_TRUE(sched->BuildRequested("g3", "2.0.0", 0).ok());
  EXPECT_EQ(sched->BuildRequested("g3", "2.0.0", 0).error().code(), Errc::kVerification);
  EXPECT_NE(sched->Find("g3")->detail.find("out of turn"), std::string::npos);
  EXPECT_EQ(sched->BuildRequested("nobody", "2.0.0", 0).error().code(), Errc::kNotFound);
  // Failed clients come back after the back-off and then succeed.
  mono.Advance(3s);
  sched->Tick();
  EXPECT_EQ(sched->ActiveCount(), 8u);
  Complete(*sched, "fail", "2.0.0");
  EXPECT_EQ(sched->Find("fail")->state, ClientState::kCurrent);
  EXPECT_EQ(sched->Find("fail")->attempts, 0u);
}

TEST_F(SchedulerTest, DisconnectMidUpgradeResumesAtTheFrontFromTheClientsOffset) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 1;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 300000)}).ok());
  Arrive(*sched, "a", "1.0.0");
  Arrive(*sched, "b", "1.0.0");
  ASSERT_TRUE(sched->BuildRequested("a", "2.0.0", 0).ok());
  mono.Advance(50ms);
  sched->Tick();
  sched->ClientGone("a");
  EXPECT_EQ(link.cancels.back().first, "a");
  link.Finished("a");
  EXPECT_EQ(sched->Find("a")->state, ClientState::kOffline);
  EXPECT_EQ(sched->Find("a")->detail, "upgrade pending: version 2.0.0");
  EXPECT_EQ(link.starts.back(), "b");  // the slot went to the next
  sched->ClientGone("nobody");         // ignored

  // Reconnects mid-upgrade (no ClientGone first): cancelled, back at the front.
  ASSERT_TRUE(sched->BuildRequested("b", "2.0.0", 0).ok());
  Arrive(*sched, "a", "1.0.0");
  EXPECT_EQ(sched->QueueOrder(), std::vector<std::string>{"a"});
  Arrive(*sched, "b", "1.0.0");
  EXPECT_EQ(link.cancels.back().first, "b");
  EXPECT_EQ(link.starts.back(), "b");  // back at the front, so it restarts at once
  EXPECT_EQ(sched->QueueOrder(), (std::vector<std::string>{"a"}));
  ASSERT_TRUE(sched->BuildRequested("b", "2.0.0", 120000).ok());  // resumes
  mono.Advance(50ms);
  sched->Tick();
  ASSERT_FALSE(link.chunks.empty());
  EXPECT_EQ(link.chunks.back().id, "b");
  EXPECT_GE(link.chunks.back().offset, 120000u);
}

TEST_F(SchedulerTest, NewBuildsSupersedeRunningUpgradesAndGiveFailedClientsANewChance) {
  auto s = Small();
  s.max_attempts = 1;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1000)}).ok());
  Arrive(*sched, "a", "1.0.0");
  Arrive(*sched, "b", "1.0.0");
  ASSERT_TRUE(sched->BuildRequested("b", "9.0.0", 0).ok() == false);
  EXPECT_TRUE(sched->Find("b")->given_up);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.1.0", 1000)}).ok());
  EXPECT_EQ(link.cancels.back().first, "a");
  EXPECT_EQ(sched->Find("a")->target_version, "2.1.0");
  EXPECT_EQ(sched->Find("b")->state, ClientState::kUpgrading);
  EXPECT_EQ(link.start_versions.back(), "2.1.0");
}

TEST_F(SchedulerTest, LiveBandwidthChangeAppliesFromTheNextChunk) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 8;
  s.max_client_upgrade_bandwidth = 4 << 20;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 100 << 20)}).ok());
  for (int i = 0; i < 8; ++i) {
    Arrive(*sched, "c" + std::to_string(i), "1.0.0");
    ASSERT_TRUE(sched->BuildRequested("c" + std::to_string(i), "2.0.0", 0).ok());
  }
  std::size_t seen = 0;
  // Bytes granted from now over `ms` milliseconds, each client reading its chunks 1 ms later.
  auto run = [&](int ms) {
    const std::size_t first = link.chunks.size();
    for (int i = 0; i < ms; ++i) {
      mono.Advance(1ms);
      for (; seen < link.chunks.size(); ++seen) sched->ChunkAccepted(link.chunks[seen].id, link.chunks[seen].length);
      sched->Tick();
    }
    std::uint64_t bytes = 0;
    for (std::size_t i = first; i < link.chunks.size(); ++i) bytes += link.chunks[i].length;
    return bytes;
  };
  run(1000);
  const double fast = static_cast<double>(run(2000)) / 2.0;
  EXPECT_NEAR(fast, 4 << 20, (4 << 20) * 0.05);
  ASSERT_TRUE(sched->SetBandwidth(256 << 10).ok());
  const std::size_t first_after = link.chunks.size();
  const double slow = static_cast<double>(run(4000)) / 4.0;
  EXPECT_NEAR(slow, 256 << 10, (256 << 10) * 0.05);
  // Chunks after the change fit the new bucket (40 ms of 256 KiB/s).
  for (std::size_t i = first_after; i < link.chunks.size(); ++i) EXPECT_LE(link.chunks[i].length, 10486u);
  ASSERT_TRUE(sched->SetBandwidth(8 << 20).ok());
  run(500);
  const double faster = static_cast<double>(run(2000)) / 2.0;
  EXPECT_NEAR(faster, 8 << 20, (8 << 20) * 0.05);
}

TEST_F(SchedulerTest, BurstAfterAnIdleSpellStaysWithinFivePercent) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 8;
  s.max_client_upgrade_bandwidth = 2 << 20;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 50 << 20)}).ok());
  for (int i = 0; i < 8; ++i) Arrive(*sched, "c" + std::to_string(i), "1.0.0");
  mono.Advance(4s);  // idle: nobody asked for the build yet, the bucket fills to its cap
  sched->Tick();
  EXPECT_TRUE(link.chunks.empty());
  for (int i = 0; i < 8; ++i) ASSERT_TRUE(sched->BuildRequested("c" + std::to_string(i), "2.0.0", 0).ok());
  std::size_t seen = 0;
  for (int i = 0; i < 999; ++i) {  // the first second after the idle spell, grants at t=0 included
    for (; seen < link.chunks.size(); ++seen) sched->ChunkAccepted(link.chunks[seen].id, link.chunks[seen].length);
    mono.Advance(1ms);
    sched->Tick();
  }
  std::uint64_t bytes = 0;
  for (const auto& ch : link.chunks) bytes += ch.length;
  EXPECT_LE(static_cast<double>(bytes), (2 << 20) * 1.05);
  EXPECT_GE(static_cast<double>(bytes), (2 << 20) * 0.95);
}

// RFC 4180 reader for the test: quoted fields, doubled quotes, CRLF records.
std::vector<std::vector<std::string>> ParseCsv(const std::string& text) {
  std::vector<std::vector<std::string>> rows;
  std::vector<std::string> row;
  std::string field;
  std::size_t i = 0;
  while (i < text.size()) {
    if (text[i] == '"') {
      ++i;
      while (i < text.size()) {
        if (text[i] == '"' && i + 1 < text.size() && text[i + 1] == '"') {
          field += '"';
          i += 2;
        } else if (text[i] == '"') {
          ++i;
          break;
        } else {
          field += text[i++];
        }
      }
    }
    if (i < text.size() && text[i] == ',') {
      row.push_back(field);
      field.clear();
      ++i;
    } else if (i + 1 < text.size() && text[i] == '\r' && text[i + 1] == '\n') {
      row.push_back(field);
      field.clear();
      rows.push_back(row);
      row.clear();
      i += 2;
    } else if (i < text.size()) {
      ADD_FAILURE() << "bad CSV at byte " << i;
      return rows;
    }
  }
  return rows;
}

TEST_F(SchedulerTest, ExportQuotesHostileIds) {
  auto s = Small();
  s.max_concurrent_client_upgrades = 1;
  auto sched = Make(s);
  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 1000)}).ok());
  const std::vector<std::string> ids = {"plain",      "com,ma",        "quo\"te\"\"",    "new\r\nline",
                                        "=HYPERLINK(\"x\")", "tab\there", "\xff\xfe not utf8", "  spaced  "};
  for (const auto& id : ids) Arrive(*sched, id, "1.0.0");
  Arrive(*sched, "current-one", "2.0.0");
  wall.Advance(10s);
  Arrive(*sched, "gone", "1.0.0");
  sched->ClientGone("gone");

  auto rows = ParseCsv(sched->ExportCsv());
  ASSERT_EQ(rows.size(), ids.size() + 3);
  EXPECT_EQ(rows[0], (std::vector<std::string>{"id", "platform", "version", "state", "detail", "last_checkin"}));
  std::map<std::string, std::vector<std::string>> by_id;
  for (std::size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 6u);
    by_id[rows[i][0]] = rows[i];
  }
  for (const auto& id : ids) {
    ASSERT_TRUE(by_id.count(id)) << id;
    EXPECT_EQ(by_id[id][1], "linux");
    EXPECT_EQ(by_id[id][2], "1.0.0");
    EXPECT_EQ(by_id[id][5], "2030-03-17T17:46:40Z");
  }
  ASSERT_EQ(link.starts.front(), "plain");
  EXPECT_EQ(by_id["plain"][3], "upgrading");
  EXPECT_EQ(by_id["plain"][4], "0/1000 bytes");
  EXPECT_EQ(by_id["com,ma"][3], "upgrade pending");
  EXPECT_EQ(by_id["com,ma"][4], "version 2.0.0");
  EXPECT_EQ(by_id["current-one"][3], "current");
  EXPECT_EQ(by_id["gone"][3], "offline");
  EXPECT_EQ(by_id["gone"][5], "2030-03-17T17:46:50Z");

  auto json = ParseJson(sched->ExportJson());
  ASSERT_TRUE(json.ok());
  const Json& list = (*json)["clients"];
  ASSERT_EQ(list.size(), ids.size() + 2);
  std::set<std::string> json_ids;
  for (const Json& c : list) {
    json_ids.insert(c["id"].get<std::string>());
    EXPECT_TRUE(c.contains("state") && c.contains("version") && c.contains("detail") && c.contains("last_checkin"));
  }
  EXPECT_TRUE(json_ids.count("quo\"te\"\""));
  EXPECT_TRUE(json_ids.count("new\r\nline"));
  EXPECT_TRUE(json_ids.count("\xEF\xBF\xBD\xEF\xBF\xBD not utf8"));  // replaced, not thrown
}

// ---------------------------------------------------------------------------------------------
// The fleet: 2,000 clients over two platforms, one relay, fake time in 5 ms steps.

struct SimClient {
  std::string id, platform, version;
  double rate = 0;             // link bytes/s
  bool online = false;
  double checkin_at = 0;       // seconds after the install
  int stall_attempts = 0;      // attempts in which it stops reading mid-build
  int fail_reports = 0;        // attempts that end with result "failed"
  bool drops_once = false;     // disconnects mid-upgrade once, back 2 s later
  double back_at = -1;
  // The running attempt.
  bool upgrading = false, want_get = false, stalled = false;
  std::string target;
  std::uint64_t length = 0, received = 0, stall_at = 0;
  std::deque<std::uint32_t> inbox;
  double credit = 0;
  double report_at = -1, restart_at = -1;
};

TEST_F(SchedulerTest, FleetOf2000ClientsUnderBothCaps) {
  SchedulerSettings s;
  s.max_concurrent_client_upgrades = 50;
  s.max_client_upgrade_bandwidth = 8 << 20;
  s.stall_timeout = 3s;
  s.retry_backoff = 2s;
  s.max_attempts = 4;
  auto sched = Make(s);
  link.cap = s.max_concurrent_client_upgrades;

  std::mt19937_64 rng(20261125);
  auto uniform = [&](double a, double b) { return std::uniform_real_distribution<double>(a, b)(rng); };
  std::vector<SimClient> fleet(2000);
  std::unordered_map<std::string, SimClient*> by_id;
  for (std::size_t i = 0; i < fleet.size(); ++i) {
    SimClient& c = fleet[i];
    c.id = "client-" + std::to_string(10000 + i);
    if (i % 400 == 7) c.id += ",\"evil\"\r\n=1+1";  // hostile ids travel through the whole wave
    c.platform = i % 3 == 0 ? "windows" : "linux";
    c.version = i % 5 == 0 ? "1.2.0" : "1.1.7";
    const double kind = uniform(0, 1);
    if (kind < 0.02) {
      c.rate = uniform(40e3, 80e3);  // slow
    } else if (kind < 0.15) {
      c.rate = uniform(100e3, 400e3);
    } else {
      c.rate = uniform(400e3, 4e6);
    }
    if (uniform(0, 1) < 0.04) c.stall_attempts = 1 + static_cast<int>(uniform(0, 2));  // 1 or 2
    if (uniform(0, 1) < 0.02) c.fail_reports = 1;
    if (uniform(0, 1) < 0.02) c.drops_once = true;
    c.online = i % 2 == 0;  // active clients are connected at the install
    c.checkin_at = c.online ? 0 : uniform(0.5, 30);
    by_id[c.id] = &c;
  }

  const MonoTime t0 = mono.Now();
  auto now_s = [&] { return std::chrono::duration<double>(mono.Now() - t0).count(); };
  const SysTime install_time = wall.Now();
  auto checkin = [&](SimClient& c) {
    CheckIn in;
    in.id = c.id;
    in.platform = c.platform;
    in.version = c.version;
    c.online = true;
    ASSERT_TRUE(sched->ClientCheckedIn(in).ok());
  };
  for (SimClient& c : fleet)
    if (c.online) checkin(c);

  // The link: the relay queues chunks on the client's connection; events come back later.
  std::deque<std::function<void()>> posted;
  link.on_start = [&](const std::string& id, const ClientBuild& b) {
    SimClient& c = *by_id.at(id);
    c.upgrading = true;
    c.want_get = true;
    c.stalled = false;
    c.target = b.version;
    c.length = b.length;
    c.inbox.clear();
    c.credit = 0;
    if (c.stall_attempts > 0) c.stall_at = static_cast<std::uint64_t>(uniform(0, static_cast<double>(b.length)));
  };
  link.on_cancel = [&](const std::string& id) {
    SimClient& c = *by_id.at(id);
    if (c.stalled) c.stall_attempts--;
    c.upgrading = false;
    c.stalled = false;
    c.inbox.clear();
    c.report_at = -1;
  };

  // Per-millisecond grant counts and backlog flags, for the 1-second windows.
  std::vector<std::uint64_t> ms_bytes;
  std::vector<std::uint8_t> ms_backlog;
  std::vector<double> ms_rate;
  std::size_t chunks_seen = 0;
  double console_at = 20.0;
  std::string console_pick;
  bool console_checked = false;
  bool lowered = false, raised_bw = false, restored = false;
  std::size_t max_active_seen = 0;

  ASSERT_TRUE(sched->SetBuilds({Build("linux", "2.0.0", 700000), Build("windows", "2.0.0", 900000)}).ok());
  const double dt = 0.005;
  std::size_t step = 0;
  for (; step < 400000; ++step) {
    mono.Advance(5ms);
    if (step % 200 == 0) wall.Advance(1s);
    const double t = now_s();

    // Clients that come online, come back, restart after installing.
    for (SimClient& c : fleet) {
      if (!c.online && c.checkin_at > 0 && t >= c.checkin_at) {
        c.checkin_at = 0;
        checkin(c);
      }
      if (!c.online && c.back_at > 0 && t >= c.back_at) {
        c.back_at = -1;
        checkin(c);
      }
      if (c.restart_at > 0 && t >= c.restart_at) {
        c.restart_at = -1;
        checkin(c);  // checks in with the new version after replacing itself
      }
    }

    // Each upgrading client works for dt.
    for (SimClient& c : fleet) {
      if (!c.upgrading) continue;
      if (c.want_get) {
        c.want_get = false;
        const std::uint64_t offset = c.received <= c.length && c.target == "2.0.0" ? c.received : 0;
        c.received = offset;
        ASSERT_TRUE(sched->BuildRequested(c.id, c.target, offset).ok());
        continue;
      }
      if (c.drops_once && c.received > c.length / 2) {
        c.drops_once = false;
        c.upgrading = false;
        c.online = false;
        c.inbox.clear();
        c.back_at = t + 2;
        link.Finished(c.id);
        sched->ClientGone(c.id);
        continue;
      }
      if (c.stall_attempts > 0 && c.received >= c.stall_at) c.stalled = true;
      if (c.stalled) continue;
      c.credit += c.rate * dt;
      while (!c.inbox.empty() && c.credit >= c.inbox.front()) {
        const std::uint32_t len = c.inbox.front();
        c.credit -= len;
        c.inbox.pop_front();
        c.received += len;
        sched->ChunkAccepted(c.id, len);
        if (!c.upgrading) break;
      }
      if (c.inbox.empty()) c.credit = std::min(c.credit, c.rate * dt);  // no banking while idle
      if (c.upgrading && c.received == c.length && c.report_at < 0) c.report_at = t + 0.05;
      if (c.upgrading && c.report_at > 0 && t >= c.report_at) {
        BuildReport r;
        r.version = c.target;
        c.report_at = -1;
        c.upgrading = false;
        link.Finished(c.id);
        if (c.fail_reports > 0) {
          c.fail_reports--;
          c.received = 0;
          r.result = "failed";
          r.detail = "signature check failed";
        } else {
          r.result = "installed";
          c.version = c.target;
          c.restart_at = t + 1;
        }
        ASSERT_TRUE(sched->BuildReported(c.id, r).ok());
      }
    }

    // Console: ask for a client deep in the queue; it must be the next to start.
    if (!console_checked && t >= console_at) {
      if (console_pick.empty()) {
        auto q = sched->QueueOrder();
        ASSERT_GT(q.size(), 100u);
        console_pick = q[q.size() - 10];
        const std::size_t starts_before = link.starts.size();
        EXPECT_EQ(sched->ConsoleAsked(console_pick).kind, ConsoleAnswer::Kind::kMovedToFront);
        EXPECT_EQ(sched->QueueOrder().front(), console_pick);
        link.on_chunk = nullptr;
        const std::size_t mark = starts_before;
        link.on_start = [&, prev = link.on_start, mark](const std::string& id, const ClientBuild& b) {
          if (!console_checked && link.starts.size() == mark + 1) {
            EXPECT_EQ(id, console_pick) << "the console's client was not the next to start";
            console_checked = true;
          }
          prev(id, b);
        };
      }
    }

    // Live settings during the wave.
    if (!lowered && t >= 40) {
      lowered = true;
      ASSERT_TRUE(sched->SetMaxConcurrent(20).ok());
      link.cap = 20;
    }
    if (!raised_bw && t >= 60) {
      raised_bw = true;
      ASSERT_TRUE(sched->SetBandwidth(6 << 20).ok());
    }
    if (!restored && t >= 80) {
      restored = true;
      link.cap = 50;
      ASSERT_TRUE(sched->SetMaxConcurrent(50).ok());
    }

    sched->Tick();
    ASSERT_LE(sched->ActiveCount(), std::max<std::size_t>(link.cap, link.in_flight.size()));
    ASSERT_EQ(sched->ActiveCount(), link.in_flight.size());
    max_active_seen = std::max(max_active_seen, sched->ActiveCount());

    // Deliver this step's grants to the clients' connections, and record them.
    const std::size_t ms = static_cast<std::size_t>(std::llround(t * 1000));
    if (ms_bytes.size() < ms + 1) {
      ms_bytes.resize(ms + 1, 0);
      ms_backlog.resize(ms + 1, 0);
      ms_rate.resize(ms + 1, 0);
    }
    for (; chunks_seen < link.chunks.size(); ++chunks_seen) {
      const auto& ch = link.chunks[chunks_seen];
      const std::size_t at = static_cast<std::size_t>(
          std::llround(std::chrono::duration<double>(ch.at - t0).count() * 1000));
      ASSERT_LT(at, ms_bytes.size());
      ms_bytes[at] += ch.length;
      by_id.at(ch.id)->inbox.push_back(ch.length);
    }
    // A backlog: clients wait in the queue for a slot.
    for (std::size_t k = ms > 4 ? ms - 4 : 0; k <= ms; ++k) {
      ms_backlog[k] = sched->QueueLength() > 0;
      ms_rate[k] = static_cast<double>(sched->settings().max_client_upgrade_bandwidth);
    }

    if (step % 200 == 0) {
      auto st = sched->Stats();
      const bool restarted = std::none_of(fleet.begin(), fleet.end(), [](const SimClient& c) { return c.restart_at > 0; });
      if (st.current == fleet.size() && restarted) break;
    }
  }
  auto stats = sched->Stats();
  ASSERT_EQ(stats.current, fleet.size()) << "not every client reached the new version after " << now_s() << " s";
  EXPECT_TRUE(console_checked);
  EXPECT_GE(max_active_seen, 40u);
  EXPECT_LE(link.max_in_flight_seen, 50u);

  // Every 1-second window inside the backlog: at most 5 % over the cap in effect.
  std::size_t windows = 0, worst_window = 0;
  double worst_ratio = 0, used = 0, budget = 0;
  std::vector<std::uint64_t> sum_bytes(ms_bytes.size() + 1, 0), sum_backlog(ms_bytes.size() + 1, 0);
  for (std::size_t k = 0; k < ms_bytes.size(); ++k) {
    sum_bytes[k + 1] = sum_bytes[k] + ms_bytes[k];
    sum_backlog[k + 1] = sum_backlog[k] + ms_backlog[k];
  }
  for (std::size_t start = 0; start + 1000 <= ms_bytes.size(); ++start) {
    if (sum_backlog[start + 1000] - sum_backlog[start] != 1000) continue;
    const double rate = std::max(ms_rate[start], ms_rate[start + 999]);  // the rate changes once
    const std::uint64_t bytes = sum_bytes[start + 1000] - sum_bytes[start];
    ++windows;
    const double ratio = static_cast<double>(bytes) / rate;
    if (ratio > worst_ratio) {
      worst_ratio = ratio;
      worst_window = start;
    }
    EXPECT_LE(ratio, 1.05) << "window at " << start << " ms";
  }
  for (std::size_t k = 0; k < ms_bytes.size(); ++k) {
    if (!ms_backlog[k]) continue;
    used += static_cast<double>(ms_bytes[k]);
    budget += ms_rate[k] / 1000.0;
  }
  const double use = used / budget;
  std::printf("fleet: %zu clients current after %.1f s; %llu upgrades started, %zu cancels; %zu backlog windows, "
              "worst %.4f x cap (at %zu ms); average use %.4f; max concurrent %zu\n",
              fleet.size(), now_s(), static_cast<unsigned long long>(stats.upgrades_started), link.cancels.size(),
              windows, worst_ratio, worst_window, use, link.max_in_flight_seen);
  EXPECT_GT(windows, 30000u);
  EXPECT_GE(use, 0.95);
  EXPECT_GT(link.cancels.size(), 20u);  // stalls and drops happened and were retried

  // The export lists every client, current, checked in after the install.
  auto rows = ParseCsv(sched->ExportCsv());
  ASSERT_EQ(rows.size(), fleet.size() + 1);
  for (std::size_t i = 1; i < rows.size(); ++i) {
    ASSERT_EQ(rows[i].size(), 6u);
    ASSERT_TRUE(by_id.count(rows[i][0])) << rows[i][0];
    EXPECT_EQ(rows[i][2], "2.0.0");
    EXPECT_EQ(rows[i][3], "current");
    auto when = ParseTimestamp(rows[i][5]);
    ASSERT_TRUE(when.ok());
    EXPECT_GT(*when, install_time);
  }
  auto json = ParseJson(sched->ExportJson());
  ASSERT_TRUE(json.ok());
  ASSERT_EQ((*json)["clients"].size(), fleet.size());
  std::size_t hostile = 0;
  for (const Json& c : (*json)["clients"]) {
    EXPECT_EQ(c["state"], "current");
    EXPECT_EQ(c["version"], "2.0.0");
    ASSERT_TRUE(by_id.count(c["id"].get<std::string>()));
    if (c["id"].get<std::string>().find(",\"evil\"") != std::string::npos) ++hostile;
  }
  EXPECT_EQ(hostile, 5u);
}

}  // namespace
}  // namespace upkeep::relay
