// Rollouts and appliances for operators, end to end with check-ins and events (real PostgreSQL,
// FakeKeyserver): validation, waves opening on success, the error threshold pausing a rollout by
// itself, pause/resume/abort and what appliances are offered in each state, and the appliance
// list, detail and update.
#include <gtest/gtest.h>

#include <thread>

#include "fleet_support.hpp"

namespace upkeep::updater::test {
namespace {

const std::map<std::string, std::string> kOld = {{"software", "5.0.0"}};

std::vector<std::string> Offered(ServiceFixture& f, const trust::ApplianceIdentity& id,
                                 const std::map<std::string, std::string>& installed = kOld) {
  return StepIds(Verified(f, id, Checkin(f, id, installed), installed));
}

const std::vector<std::string> kNothing = {};
const std::vector<std::string> kRelease = {"software 5.1.0"};

Reply SetGroups(ServiceFixture& f, const trust::ApplianceIdentity& id, const Json& groups) {
  return f.Call("POST", "/api/v1/appliances/" + id.appliance_id(), Json{{"groups", groups}}.dump(), f.token("publisher"));
}

std::int64_t CreateRollout(ServiceFixture& f, const Json& body) {
  Reply r = f.Call("POST", "/api/v1/rollouts", body.dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 201) << r.body;
  return r.json["rollout"]["id"].get<std::int64_t>();
}

Json RolloutBody(Json waves, int success = 100, int error = 50) {
  return Json{{"name", "software"}, {"version", "5.1.0"}, {"channel", "stable"}, {"waves", std::move(waves)},
              {"success_threshold", success}, {"error_threshold", error}};
}

Json GetRollout(ServiceFixture& f, std::int64_t id) {
  Reply r = f.Call("GET", "/api/v1/rollouts/" + std::to_string(id), "", f.token("support"));
  EXPECT_EQ(r.status, 200) << r.body;
  return r.json["rollout"];
}

Json LastAudit(ServiceFixture& f, const std::string& action) {
  Reply r = f.Call("GET", "/api/v1/audit?limit=100", "", f.token("support"));
  for (const Json& e : r.json["entries"]) {
    if (e["action"] == action) return e;
  }
  return nullptr;
}

TEST(UpdaterFleetApi, RolloutCreationIsValidated) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  InsertRelease(f, {.name = "software", .version = "5.2.0", .channels = {"beta"}});
  Refresh(f);
  const std::string before = f.DumpTables();
  const Json good = RolloutBody(Json::array({Json{{"percent", 10}}, Json{{"groups", {"lab"}}}, Json{{"percent", 100}}}));
  auto with = [&](const char* key, Json value) {
    Json b = good;
    b[key] = std::move(value);
    return b;
  };
  auto without = [&](const char* key) {
    Json b = good;
    b.erase(key);
    return b;
  };
  const std::vector<Json> bad = {
      without("waves"),
      without("success_threshold"),
      with("waves", Json::array()),
      with("waves", Json::array({Json{{"percent", 0}}})),
      with("waves", Json::array({Json{{"percent", 101}}})),
      with("waves", Json::array({Json{{"percent", 50}}, Json{{"percent", 10}}})),
      with("waves", Json::array({Json{{"percent", 10}, {"groups", {"lab"}}}})),
      with("waves", Json::array({Json{{"groups", {"Lab!"}}}})),
      with("waves", Json::array({Json{{"groups", Json::array()}}})),
      with("waves", Json::array({Json{{"percent", "10"}}})),
      with("success_threshold", 101),
      with("error_threshold", -1),
      with("min_wave_members", -1),
      with("start_at", "tomorrow"),
      with("name", "Bad Name"),
      with("version", "5.1"),
      with("extra", 1),
  };
  for (const Json& body : bad) {
    Reply r = f.Call("POST", "/api/v1/rollouts", body.dump(), f.token("publisher"));
    EXPECT_EQ(r.status, 400) << body.dump() << " -> " << r.body;
  }
  Reply r = f.Call("POST", "/api/v1/rollouts", with("version", "9.9.9").dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.ErrorCode(), "unknown_release");
  r = f.Call("POST", "/api/v1/rollouts", with("channel", "nochan").dump(), f.token("publisher"));
  EXPECT_EQ(r.ErrorCode(), "unknown_channel");
  r = f.Call("POST", "/api/v1/rollouts", with("version", "5.2.0").dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "not_in_channel");
  r = f.Call("POST", "/api/v1/rollouts", good.dump(), f.token("support"));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(r.ErrorCode(), "forbidden");
  EXPECT_EQ(f.Call("POST", "/api/v1/rollouts", good.dump()).status, 401);
  EXPECT_EQ(f.DumpTables(), before);

  r = f.Call("POST", "/api/v1/rollouts", good.dump(), f.token("publisher"));
  ASSERT_EQ(r.status, 201) << r.body;
  const Json& ro = r.json["rollout"];
  EXPECT_EQ(ro["state"], "active");
  EXPECT_EQ(ro["current_wave"], 0);
  EXPECT_EQ(ro["min_wave_members"], 1);
  EXPECT_EQ(ro["created_by"], "token:test-publisher");
  EXPECT_TRUE(ro["pause_reason"].is_null());
  ASSERT_EQ(ro["waves"].size(), 3u);
  EXPECT_EQ(ro["waves"][0]["percent"], 10);
  EXPECT_TRUE(ro["waves"][0]["opened_at"].is_string());
  EXPECT_EQ(ro["waves"][1]["groups"], Json::array({"lab"}));
  EXPECT_TRUE(ro["waves"][1]["opened_at"].is_null());
  EXPECT_EQ(ro["waves"][2]["members"], 0);
  EXPECT_EQ(LastAudit(f, "rollout.create")["target"], std::to_string(ro["id"].get<std::int64_t>()));

  r = f.Call("POST", "/api/v1/rollouts", good.dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "rollout_exists");

  EXPECT_EQ(f.Call("GET", "/api/v1/rollouts/999999", "", f.token("support")).ErrorCode(), "unknown_rollout");
  EXPECT_EQ(f.Call("GET", "/api/v1/rollouts/abc", "", f.token("support")).status, 404);
  Reply list = f.Call("GET", "/api/v1/rollouts?state=active", "", f.token("support"));
  ASSERT_EQ(list.status, 200);
  EXPECT_EQ(list.json["rollouts"].size(), 1u);
  EXPECT_EQ(f.Call("GET", "/api/v1/rollouts?state=paused", "", f.token("support")).json["rollouts"].size(), 0u);
  EXPECT_EQ(f.Call("GET", "/api/v1/rollouts?state=bogus", "", f.token("support")).ErrorCode(), "invalid_query");
}

TEST(UpdaterFleetApi, WavesOpenOnSuccessAndTheLastCompletes) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  const std::int64_t id =
      CreateRollout(f, RolloutBody(Json::array({Json{{"groups", {"lab"}}}, Json{{"percent", 100}}})));
  auto lab = Enrolled(f);
  auto other = Enrolled(f);
  EXPECT_EQ(Offered(f, lab), kNothing);
  EXPECT_EQ(Offered(f, other), kNothing);
  ASSERT_EQ(SetGroups(f, lab, {"lab"}).status, 200);
  EXPECT_EQ(Offered(f, lab), kRelease);
  EXPECT_EQ(Offered(f, other), kNothing);
  EXPECT_EQ(GetRollout(f, id)["waves"][0]["members"], 1);

  // Progress reports don't move anything; success does.
  ASSERT_EQ(PostEvents(f, lab, Json::array({Event("download", "software", "5.1.0")})).status, 200);
  EXPECT_EQ(GetRollout(f, id)["current_wave"], 0);
  ASSERT_EQ(PostEvents(f, lab, Json::array({Event("success", "software", "5.1.0")})).status, 200);
  Json ro = GetRollout(f, id);
  EXPECT_EQ(ro["current_wave"], 1);
  EXPECT_EQ(ro["state"], "active");
  EXPECT_TRUE(ro["waves"][1]["opened_at"].is_string());
  EXPECT_EQ(ro["waves"][0]["succeeded"], 1);
  Json audit = LastAudit(f, "rollout.wave_open");
  EXPECT_EQ(audit["actor"], "updater");
  EXPECT_EQ(audit["detail"]["wave"], 1);

  // Wave 1 is 100 %: the other appliance is offered it now.
  EXPECT_EQ(Offered(f, other), kRelease);
  ASSERT_EQ(PostEvents(f, other, Json::array({Event("success", "software", "5.1.0")})).status, 200);
  ro = GetRollout(f, id);
  EXPECT_EQ(ro["state"], "completed");
  EXPECT_EQ(ro["waves"][1]["members"], 1);
  EXPECT_EQ(ro["waves"][1]["succeeded"], 1);
  // Completed: the open waves (here everybody) keep being offered it.
  auto late = Enrolled(f);
  EXPECT_EQ(Offered(f, late), kRelease);
}

TEST(UpdaterFleetApi, FailuresPauseTheRolloutAndOperatorsSteerIt) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  const std::int64_t id =
      CreateRollout(f, RolloutBody(Json::array({Json{{"groups", {"lab"}}}, Json{{"percent", 100}}})));
  const std::string path = "/api/v1/rollouts/" + std::to_string(id);
  auto first = Enrolled(f);
  auto second = Enrolled(f);
  auto outsider = Enrolled(f);
  for (auto* a : {&first, &second, &outsider}) ASSERT_EQ(Checkin(f, *a, kOld).status, 200);
  ASSERT_EQ(SetGroups(f, first, {"lab"}).status, 200);
  ASSERT_EQ(SetGroups(f, second, {"lab"}).status, 200);
  EXPECT_EQ(Offered(f, first), kRelease);

  // The one member fails: 100 % >= 50 %, the rollout pauses itself and says why.
  Json failure = Event("failure", "software", "5.1.0");
  failure["log_tail"] = "postinst: exit 1";
  ASSERT_EQ(PostEvents(f, first, Json::array({failure})).status, 200);
  Json ro = GetRollout(f, id);
  EXPECT_EQ(ro["state"], "paused");
  EXPECT_NE(ro["pause_reason"].get<std::string>().find("1 failed of 1"), std::string::npos) << ro["pause_reason"];
  Json audit = LastAudit(f, "rollout.auto_pause");
  EXPECT_EQ(audit["actor"], "updater");
  EXPECT_EQ(audit["target"], std::to_string(id));

  // Paused: the member keeps it, nobody new gets it.
  EXPECT_EQ(Offered(f, first), kRelease);
  EXPECT_EQ(Offered(f, second), kNothing);
  EXPECT_EQ(f.Call("POST", path + "/pause", "", f.token("support")).ErrorCode(), "invalid_state");

  // Support resumes; wave 0 (lab) is open again for the second lab appliance.
  Reply resumed = f.Call("POST", path + "/resume", "", f.token("support"));
  ASSERT_EQ(resumed.status, 200) << resumed.body;
  EXPECT_EQ(resumed.json["rollout"]["state"], "active");
  EXPECT_TRUE(resumed.json["rollout"]["pause_reason"].is_null());
  EXPECT_EQ(f.Call("POST", path + "/resume", "", f.token("support")).status, 409);
  EXPECT_EQ(Offered(f, second), kRelease);
  EXPECT_EQ(Offered(f, outsider), kNothing);

  // Pause with a reason; abort needs a publisher.
  Reply paused = f.Call("POST", path + "/pause", R"({"reason":"maintenance window"})", f.token("support"));
  ASSERT_EQ(paused.status, 200) << paused.body;
  EXPECT_EQ(paused.json["rollout"]["pause_reason"], "maintenance window");
  EXPECT_EQ(f.Call("POST", path + "/pause", R"({"reason":7})", f.token("support")).status, 400);  // body before state
  EXPECT_EQ(f.Call("POST", path + "/abort", "", f.token("support")).status, 403);
  Reply aborted = f.Call("POST", path + "/abort", R"({"reason":"bad build"})", f.token("publisher"));
  ASSERT_EQ(aborted.status, 200) << aborted.body;
  EXPECT_EQ(aborted.json["rollout"]["state"], "aborted");
  EXPECT_EQ(LastAudit(f, "rollout.abort")["detail"]["reason"], "bad build");
  EXPECT_EQ(LastAudit(f, "rollout.pause")["actor"], "token:test-support");
  EXPECT_FALSE(LastAudit(f, "rollout.resume").is_null());

  // Aborted: nobody is offered it, not even earlier members, and nothing moves it any more.
  EXPECT_EQ(Offered(f, first), kNothing);
  EXPECT_EQ(Offered(f, second), kNothing);
  for (const char* action : {"/pause", "/resume", "/abort"}) {
    Reply r = f.Call("POST", path + action, "", f.token("admin"));
    EXPECT_EQ(r.status, 409) << action;
    EXPECT_EQ(r.ErrorCode(), "invalid_state") << action;
  }
  EXPECT_EQ(f.Call("POST", "/api/v1/rollouts/999999/pause", "", f.token("support")).status, 404);

  // A new rollout for the same release may follow an aborted one.
  const std::int64_t again = CreateRollout(f, RolloutBody(Json::array({Json{{"percent", 100}}})));
  EXPECT_NE(again, id);
  EXPECT_EQ(Offered(f, outsider), kRelease);
}

TEST(UpdaterFleetApi, ScheduledRolloutStartsAtItsTime) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  Refresh(f);
  Json body = RolloutBody(Json::array({Json{{"percent", 100}}}));
  body["start_at"] = FormatTimestamp(SystemClock::Instance().Now() + std::chrono::seconds(2));
  const std::int64_t id = CreateRollout(f, body);
  EXPECT_EQ(GetRollout(f, id)["state"], "scheduled");
  auto a = Enrolled(f);
  EXPECT_EQ(Offered(f, a), kNothing);
  std::this_thread::sleep_for(std::chrono::milliseconds(3100));
  Refresh(f);
  EXPECT_EQ(GetRollout(f, id)["state"], "active");
  EXPECT_TRUE(GetRollout(f, id)["waves"][0]["opened_at"].is_string());
  EXPECT_EQ(Offered(f, a), kRelease);
}

TEST(UpdaterFleetApi, AppliancesListShowAndUpdate) {
  ServiceFixture f;
  InsertRelease(f, {.name = "software", .version = "5.1.0"});
  InsertRelease(f, {.name = "software", .version = "5.2.0"});
  Sql(f, "UPDATE releases SET yanked_at = now(), yank_reason = 'x' WHERE version = '5.2.0'");
  Sql(f, "INSERT INTO channels (name) VALUES ('beta')");
  Refresh(f);
  std::vector<trust::ApplianceIdentity> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(trust::ApplianceIdentity::Generate());
    f.keyserver().AddAppliance(ids.back(), i == 2 ? "Globex" : "ACME");
    ASSERT_EQ(Checkin(f, ids.back(), kOld).status, 200);
  }
  std::vector<std::string> sorted;
  for (const auto& id : ids) sorted.push_back(id.appliance_id());
  std::sort(sorted.begin(), sorted.end());

  Reply all = f.Call("GET", "/api/v1/appliances", "", f.token("support"));
  ASSERT_EQ(all.status, 200) << all.body;
  ASSERT_EQ(all.json["appliances"].size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) EXPECT_EQ(all.json["appliances"][i]["appliance_id"], sorted[i]);
  const Json& s = all.json["appliances"][0];
  EXPECT_EQ(s["channel"], "stable");
  EXPECT_EQ(s["status"], "active");
  // Not yet written by the batch job, but shown.
  EXPECT_EQ(s["installed"]["software"], "5.0.0");
  EXPECT_EQ(s["agent_version"], "1.0.0");
  EXPECT_TRUE(s["last_checkin"].is_string());
  EXPECT_EQ(f.Call("GET", "/api/v1/appliances?customer=Globex", "", f.token("support")).json["appliances"].size(), 1u);
  EXPECT_EQ(f.Call("GET", "/api/v1/appliances?channel=beta", "", f.token("support")).json["appliances"].size(), 0u);
  Reply page = f.Call("GET", "/api/v1/appliances?limit=2", "", f.token("support"));
  ASSERT_EQ(page.json["appliances"].size(), 2u);
  Reply rest = f.Call("GET", "/api/v1/appliances?limit=2&after=" + sorted[1], "", f.token("support"));
  ASSERT_EQ(rest.json["appliances"].size(), 1u);
  EXPECT_EQ(rest.json["appliances"][0]["appliance_id"], sorted[2]);
  for (const char* q : {"?limit=0", "?limit=1001", "?limit=x", "?after=nope", "?channel=B%20C"}) {
    EXPECT_EQ(f.Call("GET", std::string("/api/v1/appliances") + q, "", f.token("support")).ErrorCode(), "invalid_query") << q;
  }

  // Detail: plan now (with what is withheld and why), last assignment, events with log tails.
  const auto& a = ids[0];
  Json failure = Event("failure", "software", "5.1.0");
  failure["log_tail"] = "step 3 failed";
  ASSERT_EQ(PostEvents(f, a, Json::array({Event("download", "software", "5.1.0"), failure})).status, 200);
  Reply detail = f.Call("GET", "/api/v1/appliances/" + a.appliance_id(), "", f.token("support"));
  ASSERT_EQ(detail.status, 200) << detail.body;
  const Json& d = detail.json["appliance"];
  EXPECT_EQ(d["customer"], "ACME");
  EXPECT_TRUE(d["enrolled_at"].is_string());
  EXPECT_TRUE(d["maintenance_end"].is_string());
  EXPECT_TRUE(d["clock_offset_seconds"].is_number_integer());
  ASSERT_EQ(d["plan"]["steps"].size(), 1u);
  EXPECT_EQ(d["plan"]["steps"][0]["version"], "5.1.0");
  EXPECT_FALSE(d["plan"]["steps"][0]["reason"].get<std::string>().empty());
  ASSERT_EQ(d["plan"]["withheld"].size(), 1u);
  EXPECT_EQ(d["plan"]["withheld"][0]["version"], "5.2.0");
  EXPECT_EQ(d["plan"]["withheld"][0]["reason"], "yanked");
  ASSERT_TRUE(d["assignment"].is_object());
  EXPECT_EQ(d["assignment"]["steps"][0]["target_path"], "software/software-5.1.0.upk.enc");
  EXPECT_FALSE(d["assignment"]["steps"][0].contains("sealed_content_key"));
  ASSERT_EQ(d["events"].size(), 2u);
  bool saw_tail = false;
  for (const Json& e : d["events"]) saw_tail = saw_tail || e["log_tail"] == "step 3 failed";
  EXPECT_TRUE(saw_tail) << d["events"].dump();
  EXPECT_EQ(f.Call("GET", "/api/v1/appliances/apl-" + std::string(32, 'a'), "", f.token("support")).status, 404);

  // Update: groups folded and sorted, channel moved, audited; refusals change nothing.
  const std::string path = "/api/v1/appliances/" + a.appliance_id();
  const std::string before = f.DumpTables();
  EXPECT_EQ(f.Call("POST", path, R"({"groups":["lab"]})", f.token("support")).status, 403);
  EXPECT_EQ(f.Call("POST", path, R"({"channel":"nochan"})", f.token("publisher")).ErrorCode(), "unknown_channel");
  EXPECT_EQ(f.Call("POST", path, R"({})", f.token("publisher")).status, 400);
  EXPECT_EQ(f.Call("POST", path, R"({"groups":["Bad Group"]})", f.token("publisher")).status, 400);
  EXPECT_EQ(f.Call("POST", path, R"({"groups":"lab"})", f.token("publisher")).status, 400);
  EXPECT_EQ(f.Call("POST", path, R"({"owner":"x"})", f.token("publisher")).ErrorCode(), "unknown_field");
  EXPECT_EQ(f.Call("POST", "/api/v1/appliances/apl-" + std::string(32, 'a'), R"({"groups":[]})", f.token("publisher")).status,
            404);
  EXPECT_EQ(f.DumpTables(), before);
  Reply updated = f.Call("POST", path, R"({"groups":["lab","edge","lab"],"channel":"beta"})", f.token("publisher"));
  ASSERT_EQ(updated.status, 200) << updated.body;
  EXPECT_EQ(updated.json["appliance"]["groups"], Json::array({"edge", "lab"}));
  EXPECT_EQ(updated.json["appliance"]["channel"], "beta");
  Json audit = LastAudit(f, "appliance.update");
  EXPECT_EQ(audit["target"], a.appliance_id());
  EXPECT_EQ(audit["detail"]["channel"]["to"], "beta");
  // Beta has no releases: nothing is offered any more.
  EXPECT_EQ(Offered(f, a), kNothing);
}

Reply SetAllowMajor(ServiceFixture& f, const trust::ApplianceIdentity& id, const Json& names) {
  return f.Call("POST", "/api/v1/appliances/" + id.appliance_id(), Json{{"allow_major", names}}.dump(),
                f.token("publisher"));
}

// base 1.0.0 / software 7.1.0 installed; base 2.0.0, software 7.2.0 and 8.0.0 (needs base 2) offered.
void InsertMajorLines(ServiceFixture& f) {
  InsertRelease(f, {.name = "base", .version = "2.0.0", .kind = packages::Kind::kBase});
  InsertRelease(f, {.name = "software", .version = "7.2.0"});
  InsertRelease(f, {.name = "software",
                    .version = "8.0.0",
                    .kind = packages::Kind::kSoftware,
                    .requires_ = {packages::Requirement{"base", packages::Version::Parse("2.0.0").value()}}});
  Refresh(f);
}

const std::map<std::string, std::string> kLine1 = {{"base", "1.0.0"}, {"software", "7.1.0"}};

TEST(UpdaterFleetApi, AllowMajorLetsAnApplianceCrossIntoANewMajorLine) {
  ServiceFixture f;
  InsertMajorLines(f);
  auto a = Enrolled(f);
  auto other = Enrolled(f);
  const std::string path = "/api/v1/appliances/" + a.appliance_id();

  // Without the opt-in: each package stays in its line, and the same state reuses the assignment.
  EXPECT_EQ(Offered(f, a, kLine1), std::vector<std::string>{"software 7.2.0"});
  EXPECT_EQ(Offered(f, a, kLine1), std::vector<std::string>{"software 7.2.0"});
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 1);
  Reply detail = f.Call("GET", path, "", f.token("support"));
  ASSERT_EQ(detail.status, 200) << detail.body;
  EXPECT_EQ(detail.json["appliance"]["allow_major"], Json::array());
  bool blocked_base = false;
  for (const Json& b : detail.json["appliance"]["plan"]["blocked"]) {
    blocked_base = blocked_base || (b["name"] == "base" && b["version"] == "2.0.0");
  }
  EXPECT_TRUE(blocked_base) << detail.json["appliance"]["plan"].dump();

  // Opt in for base: the next check-in, same installed state, gets a new assignment with base 2.0.0.
  Reply set = SetAllowMajor(f, a, {"base"});
  ASSERT_EQ(set.status, 200) << set.body;
  EXPECT_EQ(set.json["appliance"]["allow_major"], Json::array({"base"}));
  Json audit = LastAudit(f, "appliance.update");
  EXPECT_EQ(audit["target"], a.appliance_id());
  EXPECT_EQ(audit["detail"]["allow_major"]["from"], Json::array());
  EXPECT_EQ(audit["detail"]["allow_major"]["to"], Json::array({"base"}));
  EXPECT_FALSE(audit["detail"].contains("channel"));
  EXPECT_EQ(Offered(f, a, kLine1), (std::vector<std::string>{"base 2.0.0", "software 7.2.0"}));
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 2);
  EXPECT_EQ(Offered(f, a, kLine1), (std::vector<std::string>{"base 2.0.0", "software 7.2.0"}));
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), 2) << "unchanged settings and state reuse the assignment";
  // Only this appliance opted in.
  EXPECT_EQ(Offered(f, other, kLine1), std::vector<std::string>{"software 7.2.0"});

  // Both lines: base 1.0.0 -> 2.0.0, then software 7.1.0 -> 8.0.0 (which needs base 2).
  ASSERT_EQ(SetAllowMajor(f, a, {"software", "base"}).status, 200);
  EXPECT_EQ(Offered(f, a, kLine1), (std::vector<std::string>{"base 2.0.0", "software 8.0.0"}));
  detail = f.Call("GET", path, "", f.token("support"));
  ASSERT_EQ(detail.status, 200) << detail.body;
  const Json& d = detail.json["appliance"];
  EXPECT_EQ(d["allow_major"], Json::array({"base", "software"}));  // sorted
  ASSERT_EQ(d["plan"]["steps"].size(), 2u) << d["plan"].dump();
  EXPECT_EQ(d["plan"]["steps"][0]["version"], "2.0.0");
  EXPECT_EQ(d["plan"]["steps"][1]["version"], "8.0.0");
  Reply list = f.Call("GET", "/api/v1/appliances", "", f.token("support"));
  ASSERT_EQ(list.status, 200);
  for (const Json& s : list.json["appliances"]) {
    EXPECT_EQ(s["allow_major"], s["appliance_id"] == a.appliance_id() ? Json::array({"base", "software"}) : Json::array());
  }

  // A changed setting alone (same steps, same state) still gets a new assignment.
  const int signed_before = f.keyserver().sign_calls("assignment");
  ASSERT_EQ(SetAllowMajor(f, a, {"base", "software", "tools"}).status, 200);
  EXPECT_EQ(Offered(f, a, kLine1), (std::vector<std::string>{"base 2.0.0", "software 8.0.0"}));
  EXPECT_EQ(f.keyserver().sign_calls("assignment"), signed_before + 1);

  // An empty list clears it: back to the installed lines.
  Reply cleared = SetAllowMajor(f, a, Json::array());
  ASSERT_EQ(cleared.status, 200) << cleared.body;
  EXPECT_EQ(cleared.json["appliance"]["allow_major"], Json::array());
  EXPECT_EQ(LastAudit(f, "appliance.update")["detail"]["allow_major"]["from"], Json::array({"base", "software", "tools"}));
  EXPECT_EQ(Offered(f, a, kLine1), std::vector<std::string>{"software 7.2.0"});
}

TEST(UpdaterFleetApi, AllowMajorIsValidatedAndRefusalsChangeNothing) {
  ServiceFixture f;
  InsertMajorLines(f);
  auto a = Enrolled(f);
  ASSERT_EQ(Checkin(f, a, kLine1).status, 200);
  ASSERT_EQ(SetAllowMajor(f, a, {"software"}).status, 200);
  const std::string path = "/api/v1/appliances/" + a.appliance_id();
  Json too_many = Json::array();
  for (int i = 0; i < 65; ++i) too_many.push_back("pkg" + std::to_string(i));
  Json just_enough = too_many;
  just_enough.erase(just_enough.size() - 1);
  const std::string before = f.DumpTables();
  const std::vector<Json> bad = {
      Json("base"),
      Json(nullptr),
      Json::object(),
      Json::array({1}),
      Json::array({"Bad Name"}),
      Json::array({""}),
      Json::array({"base", "../etc"}),
      Json::array({"base", "base"}),
      too_many,
  };
  for (const Json& names : bad) {
    Reply r = SetAllowMajor(f, a, names);
    EXPECT_EQ(r.status, 400) << names.dump() << " -> " << r.body;
    EXPECT_EQ(r.ErrorCode(), "invalid_field") << names.dump();
    EXPECT_NE(r.body.find("allow_major"), std::string::npos) << r.body;
  }
  // A bad field refuses the whole body, valid parts included.
  Reply mixed = f.Call("POST", path, R"({"channel":"stable","allow_major":["base","base"]})", f.token("publisher"));
  EXPECT_EQ(mixed.status, 400) << mixed.body;
  EXPECT_EQ(f.Call("POST", path, R"({"allow_major":["base"]})", f.token("support")).status, 403);
  EXPECT_EQ(f.DumpTables(), before);
  // The setting is unchanged: software may cross, base may not.
  EXPECT_EQ(Offered(f, a, kLine1), std::vector<std::string>{"software 7.2.0"});

  Reply most = SetAllowMajor(f, a, just_enough);
  ASSERT_EQ(most.status, 200) << most.body;
  EXPECT_EQ(most.json["appliance"]["allow_major"].size(), 64u);
}

}  // namespace
}  // namespace upkeep::updater::test
