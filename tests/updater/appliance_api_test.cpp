// The appliance API in-process (real PostgreSQL, FakeKeyserver): check-in and its assignment,
// reuse, request authentication, input validation, events, revocation, gating by yank, channel
// and licence, enrolment pass-through, and a lost database connection.
#include <gtest/gtest.h>

#include <atomic>
#include <thread>

#include "fleet_support.hpp"
#include "upkeep/packages/planner.hpp"

namespace upkeep::updater::test {
namespace {

using packages::Kind;

TEST(UpdaterApplianceApi, CheckinAnswersAVerifiedAssignmentOfThePlannersSteps) {
  ServiceFixture f;
  std::map<std::string, InsertedRelease> rel;
  rel["base 1.1.0"] = InsertRelease(f, {.name = "base", .version = "1.1.0", .kind = Kind::kBase});
  rel["software 5.1.0"] = InsertRelease(f, {.name = "software", .version = "5.1.0", .settle_hours = 24});
  rel["software 5.2.0"] = InsertRelease(
      f, {.name = "software", .version = "5.2.0", .requires_ = {{"base", packages::Version{1, 1, 0}}}, .settle_hours = 24});
  Refresh(f);
  auto id = Enrolled(f);
  const std::map<std::string, std::string> installed = {{"base", "1.0.0"}, {"software", "5.0.0"}};
  Reply r = Checkin(f, id, installed);
  trust::Assignment a = Verified(f, id, r, installed);
  EXPECT_EQ(a.appliance_id, id.appliance_id());
  EXPECT_EQ(a.channel, "stable");
  EXPECT_EQ(r.json["next_checkin_seconds"], 1800);
  EXPECT_TRUE(r.json["server_time"].is_string());

  // The planner's steps over the same releases.
  std::vector<packages::Manifest> manifests;
  for (const auto& [k, v] : rel) manifests.push_back(v.manifest);
  auto plan = packages::MakePlan(ToInstalled(installed), packages::Catalog::FromManifests(manifests).value());
  ASSERT_EQ(a.steps.size(), plan.steps.size());
  for (std::size_t i = 0; i < plan.steps.size(); ++i) {
    const auto& step = a.steps[i];
    EXPECT_EQ(step.name, plan.steps[i].name);
    EXPECT_EQ(step.version, plan.steps[i].version);
    EXPECT_EQ(step.wait_hours, plan.steps[i].wait_hours);
    const InsertedRelease& ir = rel.at(step.name + " " + step.version.ToString());
    EXPECT_EQ(step.target_path, ir.target_path);
    EXPECT_EQ(step.sha256, ir.sha256);
    EXPECT_EQ(step.length, ir.length);
    // Re-sealed by the keyserver to this appliance: opens with its identity to the release's key.
    auto key = trust::OpenContentKey(step.sealed_content_key, id);
    ASSERT_TRUE(key.ok()) << key.error().message();
    EXPECT_EQ(ToHex(key->bytes()), ToHex(ir.key->bytes()));
  }
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"base 1.1.0", "software 5.2.0"}));

  // The appliance row exists at once; the check-in state is written by the batch job.
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM appliances"), "1");
  EXPECT_EQ(SqlValue(f, "SELECT last_checkin IS NULL FROM appliances"), "t");
  Refresh(f);
  EXPECT_EQ(SqlValue(f, "SELECT agent_version FROM appliances"), "1.0.0");
  EXPECT_EQ(SqlValue(f, "SELECT installed->>'software' FROM appliances"), "5.0.0");
  EXPECT_EQ(SqlValue(f, "SELECT state_digest FROM appliances"), trust::StateDigest(ToInstalled(installed)));
  EXPECT_EQ(SqlValue(f, "SELECT abs(clock_offset_seconds) < 5 FROM appliances"), "t");

  auto metrics = f.Call("GET", "/metrics");
  EXPECT_NE(metrics.body.find("upkeep_updater_checkins_total 1"), std::string::npos) << metrics.body;
  EXPECT_NE(metrics.body.find("upkeep_updater_assignments_signed_total 1"), std::string::npos);
}

TEST(UpdaterApplianceApi, IntermediateStepsComeInOrder) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.2.0", .settle_hours = 24});
  InsertRelease(f, {.name = "software", .version = "5.4.0", .upgrades_from = "5.2.0", .settle_hours = 48});
  InsertRelease(f, {.name = "software", .version = "5.6.0", .upgrades_from = "5.4.0"});
  // Another major line is never planned without an opt-in (docs/planner.md).
  InsertRelease(f, {.name = "software", .version = "6.0.0"});
  Refresh(f);
  auto id = Enrolled(f);
  const std::map<std::string, std::string> installed = {{"software", "5.0.0"}};
  trust::Assignment a = Verified(f, id, Checkin(f, id, installed), installed);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"software 5.2.0", "software 5.4.0", "software 5.6.0"}));
  ASSERT_EQ(a.steps.size(), 3u);
  EXPECT_EQ(a.steps[1].wait_hours, 24u);
  EXPECT_EQ(a.steps[2].wait_hours, 48u);
}

TEST(UpdaterApplianceApi, UnchangedStateReusesTheStoredAssignment) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  auto id = Enrolled(f);
  const std::map<std::string, std::string> installed = {{"software", "5.0.0"}};
  Reply first = Checkin(f, id, installed);
  ASSERT_EQ(first.status, 200) << first.body;
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 1);
  Reply second = Checkin(f, id, installed);
  ASSERT_EQ(second.status, 200) << second.body;
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 1) << "the steady state must not call the keyserver";
  EXPECT_EQ(second.json["assignment"], first.json["assignment"]);
  Verified(f, id, second, installed);

  // A new state is a new assignment.
  const std::map<std::string, std::string> moved = {{"software", "5.1.0"}};
  trust::Assignment a = Verified(f, id, Checkin(f, id, moved), moved);
  EXPECT_TRUE(a.steps.empty());
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 2);
  // A new release changes the plan for the same state: signed again.
  InsertRelease(f, {.name = "software", .version = "5.2.0"});
  Refresh(f);
  a = Verified(f, id, Checkin(f, id, moved), moved);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"software 5.2.0"}));
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 3);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM assignments"), "1");
}

Reply RawSigned(ServiceFixture& f, const trust::ApplianceIdentity& id, const Clock& clock, std::string_view body,
                std::vector<std::pair<std::string, std::string>>* headers_out = nullptr) {
  auto sig = trust::SignRequest(id, trust::RequestToSign{"POST", "/api/v1/checkin", body}, clock, SystemRandom::Instance());
  auto headers = sig.value().Headers();
  headers.emplace_back("Content-Type", "application/json");
  if (headers_out) *headers_out = headers;
  Reply r;
  HttpReply raw = test::Call(f.port(), "POST", "/api/v1/checkin", headers, body);
  r.status = raw.status;
  r.body = raw.body;
  auto parsed = ParseJson(raw.body);
  if (parsed.ok()) r.json = *parsed;
  return r;
}

TEST(UpdaterApplianceApi, RefusedRequestsChangeNothing) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  auto id = Enrolled(f);
  ASSERT_EQ(Checkin(f, id, {{"software", "5.0.0"}}).status, 200);
  Refresh(f);  // written
  const std::string before = f.DumpTables();
  const int signs = f.keyserver().sign_calls("assignment");
  const std::string now = FormatTimestamp(SystemClock::Instance().Now());

  struct Case {
    std::string body;
    int status;
    std::string code;
  };
  std::string many = "{";
  for (int i = 0; i < 1001; ++i) many += std::string(i ? "," : "") + "\"p" + std::to_string(i) + "\":\"1.0.0\"";
  many += "}";
  const std::vector<Case> cases = {
      {"{", 400, "malformed_json"},
      {"[]", 400, "invalid_body"},
      {R"({"installed":{"software":"5.0.0"},"agent_version":"1","time":")" + now + R"(","x":1})", 400, "unknown_field"},
      {R"({"installed":[],"agent_version":"1","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{"software":5},"agent_version":"1","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{"software":"5.0"},"agent_version":"1","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{"Bad Name":"5.0.0"},"agent_version":"1","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{},"agent_version":")" + std::string(65, 'a') + R"(","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{},"agent_version":"a\nb","time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{},"agent_version":1,"time":")" + now + R"("})", 400, "invalid_field"},
      {R"({"installed":{},"agent_version":"1"})", 400, "invalid_field"},
      {R"({"installed":{},"agent_version":"1","time":"yesterday"})", 400, "invalid_field"},
      {R"({"installed":{"a":"1.0.0","a":"2.0.0"},"agent_version":"1","time":")" + now + R"("})", 400, "malformed_json"},
      {R"({"installed":)" + many + R"(,"agent_version":"1","time":")" + now + R"("})", 400, "invalid_field"},
      {std::string(300 * 1024, ' '), 413, "body_too_large"},
  };
  for (const Case& c : cases) {
    Reply r = f.ApplianceCall(id, "POST", "/api/v1/checkin", c.body);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 200) << " -> " << r.body;
    if (c.status != 413) {
      EXPECT_EQ(r.ErrorCode(), c.code) << c.body.substr(0, 200) << " -> " << r.body;
    }
  }

  const std::string good = CheckinBody({{"software", "5.0.0"}});
  // Missing headers.
  Reply missing = f.Call("POST", "/api/v1/checkin", good);
  EXPECT_EQ(missing.status, 400);
  EXPECT_EQ(missing.ErrorCode(), "malformed_signature");
  // A signature over another body.
  {
    auto sig = trust::SignRequest(id, trust::RequestToSign{"POST", "/api/v1/checkin", "{}"}, SystemClock::Instance(),
                                  SystemRandom::Instance());
    Reply bad = f.Call("POST", "/api/v1/checkin", good, "", sig->Headers());
    EXPECT_EQ(bad.status, 401);
    EXPECT_EQ(bad.ErrorCode(), "bad_signature");
    // Signed by another appliance's key under this one's id.
    auto other = trust::ApplianceIdentity::Generate();
    auto sig2 = trust::SignRequest(other, trust::RequestToSign{"POST", "/api/v1/checkin", good}, SystemClock::Instance(),
                                   SystemRandom::Instance());
    auto headers = sig2->Headers();
    for (auto& [k, v] : headers) {
      if (k == trust::kApplianceHeader) v = id.appliance_id();
    }
    Reply forged = f.Call("POST", "/api/v1/checkin", good, "", headers);
    EXPECT_EQ(forged.status, 401) << forged.body;
    EXPECT_EQ(forged.ErrorCode(), "bad_signature");
    // A malformed nonce.
    headers = sig->Headers();
    for (auto& [k, v] : headers) {
      if (k == trust::kNonceHeader) v = "xyz";
    }
    EXPECT_EQ(f.Call("POST", "/api/v1/checkin", "{}", "", headers).ErrorCode(), "malformed_signature");
  }
  // Stale timestamp: signed ten minutes ago.
  FakeClock past(SystemClock::Instance().Now() - std::chrono::minutes(10));
  Reply stale = RawSigned(f, id, past, good);
  EXPECT_EQ(stale.status, 401);
  EXPECT_EQ(stale.ErrorCode(), "stale_timestamp");
  EXPECT_NE(stale.json["error"]["message"].get<std::string>().find("NTP"), std::string::npos) << stale.body;
  // Replay: the same signed request twice; the first is answered (from the stored assignment).
  std::vector<std::pair<std::string, std::string>> headers;
  Reply once = RawSigned(f, id, SystemClock::Instance(), good, &headers);
  EXPECT_EQ(once.status, 200) << once.body;
  HttpReply again = test::Call(f.port(), "POST", "/api/v1/checkin", headers, good);
  EXPECT_EQ(again.status, 401);
  EXPECT_NE(again.body.find("replayed"), std::string::npos) << again.body;

  EXPECT_EQ(f.keyserver().sign_calls("assignment"), signs);
  EXPECT_EQ(f.DumpTables(), before);
}

TEST(UpdaterApplianceApi, UnknownRevokedAndKeyserverDown) {
  ServiceFixture f;
  const std::string before = f.DumpTables();
  auto stranger = trust::ApplianceIdentity::Generate();
  Reply unknown = Checkin(f, stranger, {});
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.ErrorCode(), "unknown_appliance");

  auto revoked = Enrolled(f);
  f.keyserver().Revoke(revoked.appliance_id());
  Reply refused = Checkin(f, revoked, {});
  EXPECT_EQ(refused.status, 403);
  EXPECT_EQ(refused.ErrorCode(), "appliance_revoked");

  auto late = Enrolled(f);
  f.keyserver().SetUnavailable(true);
  Reply down = Checkin(f, late, {});
  EXPECT_EQ(down.status, 503) << down.body;
  EXPECT_EQ(down.Header("Retry-After"), "5");
  EXPECT_EQ(f.DumpTables(), before);
  f.keyserver().SetUnavailable(false);
  EXPECT_EQ(Checkin(f, late, {}).status, 200);

  // Known appliances keep checking in while the keyserver is down (the assignment is reused).
  f.keyserver().SetUnavailable(true);
  EXPECT_EQ(Checkin(f, late, {}).status, 200);
  // ... but a new state needs a signature.
  EXPECT_EQ(Checkin(f, late, {{"software", "1.0.0"}}).status, 503);
  f.keyserver().SetUnavailable(false);
}

TEST(UpdaterApplianceApi, RevocationFeedLocksOutAKnownAppliance) {
  ServiceFixture f;
  auto id = Enrolled(f);
  ASSERT_EQ(Checkin(f, id, {}).status, 200);
  f.keyserver().Revoke(id.appliance_id());
  // Cached as active until the feed is polled.
  Refresh(f);
  EXPECT_EQ(SqlValue(f, "SELECT status FROM appliances"), "revoked");
  EXPECT_EQ(SqlValue(f, "SELECT revoked_at IS NOT NULL FROM appliances"), "t");
  Reply r = Checkin(f, id, {});
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.ErrorCode(), "appliance_revoked");
  Reply e = PostEvents(f, id, Json::array({Event("download", "software", "1.0.0")}));
  EXPECT_EQ(e.status, 403);
}

TEST(UpdaterApplianceApi, EventsAreValidatedAndIdempotent) {
  ServiceFixture f;
  auto id = Enrolled(f);
  // Events before any check-in also make the appliance known.
  const std::string event_id = NewEventId();
  Json first = Event("download", "software", "5.1.0", event_id);
  first["detail"] = Json{{"bytes", 123}};
  first["log_tail"] = "line 1\nline 2";
  Reply r = PostEvents(f, id, Json::array({first, Event("install", "software", "5.1.0")}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["accepted"], 2);
  EXPECT_EQ(r.json["duplicates"], 0);
  Reply again = PostEvents(f, id, Json::array({first}));
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json["accepted"], 0);
  EXPECT_EQ(again.json["duplicates"], 1);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM events WHERE event_id = '" + event_id + "'"), "1");
  EXPECT_EQ(SqlValue(f, "SELECT log_tail FROM events WHERE event_id = '" + event_id + "'"), "line 1\nline 2");

  const std::string before = f.DumpTables();
  auto with = [](Json e, const char* key, Json value) {
    e[key] = std::move(value);
    return e;
  };
  const Json ok = Event("success", "software", "5.1.0");
  const std::vector<Json> bad = {
      Json::array(),
      Json::array({with(ok, "id", "ABC")}),
      Json::array({with(ok, "id", std::string(32, 'A'))}),
      Json::array({with(ok, "type", "exploded")}),
      Json::array({with(ok, "name", "Bad Name")}),
      Json::array({with(ok, "version", "1.0")}),
      Json::array({with(ok, "at", "2026-11-25 16:00:00")}),
      Json::array({with(ok, "detail", "text")}),
      Json::array({with(ok, "detail", Json{{"x", std::string(17 * 1024, 'a')}})}),
      Json::array({with(ok, "log_tail", std::string(64 * 1024 + 1, 'a'))}),
      Json::array({with(ok, "log_tail", 5)}),
      Json::array({with(ok, "extra", 1)}),
      Json::array({"not an object"}),
  };
  for (const Json& events : bad) {
    Reply rr = PostEvents(f, id, events);
    EXPECT_EQ(rr.status, 400) << events.dump().substr(0, 200) << " -> " << rr.body;
  }
  Json hundred_one = Json::array();
  for (int i = 0; i < 101; ++i) hundred_one.push_back(Event("download", "software", "5.1.0"));
  EXPECT_EQ(PostEvents(f, id, hundred_one).status, 400);
  EXPECT_EQ(f.DumpTables(), before);

  auto metrics = f.Call("GET", "/metrics");
  EXPECT_NE(metrics.body.find("upkeep_updater_events_total{type=\"download\"} 1"), std::string::npos) << metrics.body;
}

TEST(UpdaterApplianceApi, YankedChannelAndLicenceGating) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  InsertRelease(f, {.name = "software", .version = "5.2.0"});
  InsertRelease(f, {.name = "software", .version = "5.3.0", .channels = {"beta"}});
  Refresh(f);
  auto id = Enrolled(f);
  const std::map<std::string, std::string> installed = {{"software", "5.0.0"}};
  auto a = Verified(f, id, Checkin(f, id, installed), installed);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"software 5.2.0"}));

  // Yanked: no longer assigned; the next best release is.
  Sql(f, "UPDATE releases SET yanked_at = now(), yank_reason = 'broken' WHERE version = '5.2.0'");
  Sql(f, "UPDATE catalog_generation SET generation = generation + 1");
  Refresh(f);
  a = Verified(f, id, Checkin(f, id, installed), installed);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"software 5.1.0"}));

  // Moving the appliance to beta offers beta's releases (and only those).
  Reply moved = f.Call("POST", "/api/v1/appliances/" + id.appliance_id(), R"({"channel":"beta"})", f.token("publisher"));
  ASSERT_EQ(moved.status, 200) << moved.body;
  a = Verified(f, id, Checkin(f, id, installed), installed);
  EXPECT_EQ(a.channel, "beta");
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"software 5.3.0"}));

  // A licence whose maintenance ended gets nothing published after its end.
  const SysTime now = SystemClock::Instance().Now();
  InsertRelease(f, {.name = "base", .version = "1.1.0", .kind = Kind::kBase, .published_at = now - std::chrono::hours(48)});
  InsertRelease(f, {.name = "base", .version = "1.2.0", .kind = Kind::kBase, .published_at = now - std::chrono::hours(1)});
  Refresh(f);
  auto expired = Enrolled(f, now - std::chrono::hours(24));
  const std::map<std::string, std::string> base = {{"base", "1.0.0"}};
  a = Verified(f, expired, Checkin(f, expired, base), base);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"base 1.1.0"}));
  auto current = Enrolled(f);
  a = Verified(f, current, Checkin(f, current, base), base);
  EXPECT_EQ(StepIds(a), (std::vector<std::string>{"base 1.2.0"}));
}

TEST(UpdaterApplianceApi, AnotherInstancesApplianceUpdateReachesTheCache) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  InsertRelease(f, {.name = "software", .version = "5.3.0", .channels = {"beta"}});
  Refresh(f);
  auto id = Enrolled(f);
  const std::map<std::string, std::string> installed = {{"software", "5.0.0"}};
  EXPECT_EQ(StepIds(Verified(f, id, Checkin(f, id, installed), installed)), (std::vector<std::string>{"software 5.1.0"}));
  // What POST /api/v1/appliances/{id} on another updater instance writes: the row, its audit row
  // and a generation bump. This instance's cached copy must go when it sees the generation move.
  Sql(f, "UPDATE appliances SET channel = 'beta' WHERE appliance_id = '" + id.appliance_id() + "'");
  Sql(f, "INSERT INTO audit (at, actor, action, target) VALUES (now(), 'token:elsewhere', 'appliance.update', '" +
             id.appliance_id() + "')");
  Sql(f, "UPDATE catalog_generation SET generation = generation + 1");
  Refresh(f);
  EXPECT_EQ(StepIds(Verified(f, id, Checkin(f, id, installed), installed)), (std::vector<std::string>{"software 5.3.0"}));
}

TEST(UpdaterApplianceApi, EnrolIsPassedThrough) {
  ServiceFixture f;
  Reply r = f.Call("POST", "/api/v1/enrol", R"({"licence_key":"x"})");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.ErrorCode(), "unknown_licence");
  f.keyserver().SetUnavailable(true);
  EXPECT_EQ(f.Call("POST", "/api/v1/enrol", "{}").status, 503);
  f.keyserver().SetUnavailable(false);
  EXPECT_EQ(f.Call("POST", "/api/v1/enrol", std::string(65 * 1024, ' ')).status, 413);
}

TEST(UpdaterApplianceApi, PendingCheckinsSurviveALostDatabaseConnection) {
  ServiceFixture f;
  auto id = Enrolled(f);
  ASSERT_EQ(Checkin(f, id, {{"software", "5.0.0"}}).status, 200);
  // Every pooled connection is killed, as a PostgreSQL restart would.
  Sql(f, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
         "AND pid <> pg_backend_pid()");
  Sql(f, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
         "AND pid <> pg_backend_pid()");
  // The batch job reconnects and writes what was pending.
  for (int i = 0; i < 3 && SqlValue(f, "SELECT last_checkin IS NULL FROM appliances") == "t"; ++i) {
    (void)f.service().RunBackgroundOnce();
  }
  EXPECT_EQ(SqlValue(f, "SELECT installed->>'software' FROM appliances"), "5.0.0");
  EXPECT_EQ(Checkin(f, id, {{"software", "5.0.0"}}).status, 200);
}


TEST(UpdaterApplianceApi, ConcurrentCheckinsEventsAndBackgroundJobs) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  constexpr int kThreads = 4;
  constexpr int kRounds = 8;
  std::vector<trust::ApplianceIdentity> ids;
  for (int i = 0; i < kThreads; ++i) ids.push_back(Enrolled(f));
  auto shared = Enrolled(f);
  std::atomic<int> failures{0};
  std::atomic<bool> done{false};
  std::thread background([&] {
    while (!done) {
      (void)f.service().RunBackgroundOnce();
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  });
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < kRounds; ++i) {
        const std::map<std::string, std::string> installed = {{"software", i % 2 ? "5.0.0" : "5.1.0"}};
        if (Checkin(f, ids[static_cast<std::size_t>(t)], installed).status != 200) ++failures;
        if (Checkin(f, shared, {{"software", "5.0.0"}}).status != 200) ++failures;
        if (PostEvents(f, ids[static_cast<std::size_t>(t)], Json::array({Event("download", "software", "5.1.0")})).status != 200) {
          ++failures;
        }
      }
    });
  }
  for (auto& th : threads) th.join();
  done = true;
  background.join();
  EXPECT_EQ(failures.load(), 0);
  Refresh(f);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM appliances WHERE last_checkin IS NOT NULL"), std::to_string(kThreads + 1));
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM events"), std::to_string(kThreads * kRounds));
}

}  // namespace
}  // namespace upkeep::updater::test
