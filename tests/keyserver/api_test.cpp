// The keyserver HTTP API in-process: a real Server on 127.0.0.1 (ephemeral port), a real
// PostgreSQL database per test, a FakeClock. Every rejection is checked to answer a JSON error
// with the right status and to leave the database exactly as it was.
#include <memory>
#include <optional>

#include "http_client.hpp"
#include "test_util.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/db/testing.hpp"
#include "upkeep/keyserver/service.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/tuf/metadata.hpp"

namespace upkeep::keyserver {
namespace {

using test::Call;
using test::HttpReply;
using namespace std::chrono_literals;

class KeyserverApi : public ::testing::Test {
 protected:
  void SetUp() override {
    KS_ASSERT_OK_AND_ASSIGN(Json init, InitState(tmp_.path() / "state", test::TestWrapping()));
    (void)init;
    updater_ = test::ReadToken(tmp_.path() / "state" / "updater.token");
    admin_ = test::ReadToken(tmp_.path() / "state" / "admin.token");
    KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(tmp_.path() / "state", test::TestWrapping()));
    keys_.emplace(std::move(keys));
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    KS_ASSERT_OK_AND_ASSIGN(auto db, db::testing::TestDatabase::Create(std::string("ks_") + info->name()));
    db_.emplace(std::move(db));
    db::PoolOptions po;
    po.connect = db_->options();
    po.max_size = 4;
    KS_ASSERT_OK_AND_ASSIGN(pool_, db::Pool::Create(po));
    KS_ASSERT_OK(db::Migrate(*pool_, "keyserver", Migrations()));
    KS_ASSERT_OK_AND_ASSIGN(auto conn, db_->Connect());
    conn_.emplace(std::move(conn));
    StartServer();
  }

  void StartServer() {
    net::ServerOptions options;
    options.endpoints = {net::Endpoint{"127.0.0.1", 0, false}};
    options.io_threads = 1;
    options.worker_threads = 2;
    server_ = std::make_unique<net::Server>(options);
    service_ = std::make_unique<Service>(*keys_, *pool_, clock_, SystemRandom::Instance(), ServiceConfig{});
    KS_ASSERT_OK(service_->Register(*server_));
    KS_ASSERT_OK(server_->Start());
    port_ = server_->ports().at(0);
  }
  // A keyserver restart with the state on disk, as after `keyserver rotate`.
  void Restart() {
    server_->Stop(std::chrono::milliseconds(0));
    server_.reset();
    service_.reset();
    keys_.reset();
    KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(tmp_.path() / "state", test::TestWrapping()));
    keys_.emplace(std::move(keys));
    StartServer();
  }

  void TearDown() override {
    if (server_) server_->Stop(std::chrono::milliseconds(0));
    server_.reset();
    service_.reset();
    conn_.reset();
    pool_.reset();
    db_.reset();
  }

  HttpReply Get(const std::string& path, std::optional<std::string> token = std::nullopt) {
    return Call(port_, "GET", path, "", std::move(token));
  }
  HttpReply Post(const std::string& path, const std::string& body, std::optional<std::string> token = std::nullopt) {
    return Call(port_, "POST", path, body, std::move(token));
  }

  // Every row of every keyserver table, as one string: equal before and after = nothing changed.
  std::string Dump() {
    auto r = conn_->Exec(
        "SELECT (SELECT coalesce(json_agg(l ORDER BY licence_key), '[]') FROM licences l)::text || "
        "(SELECT coalesce(json_agg(a ORDER BY appliance_id), '[]') FROM appliances a)::text || "
        "(SELECT coalesce(json_agg(u ORDER BY id), '[]') FROM audit u)::text");
    if (!r.ok()) return "error: " + r.error().message();
    auto text = r->Get<std::string>(0, 0);
    return text.ok() ? *text : "error";
  }
  std::int64_t AuditCount(const std::string& action) {
    auto r = conn_->Exec("SELECT count(*) FROM audit WHERE action = $1", action);
    if (!r.ok()) return -1;
    auto n = r->Get<std::int64_t>(0, 0);
    return n.ok() ? *n : -1;
  }

  // POSTs a licence; returns the licence key.
  std::string CreateLicence(SysTime maintenance_end, const std::string& customer = "Acme") {
    Json body = {{"customer", customer},
                 {"maintenance_end", FormatTimestamp(maintenance_end)},
                 {"features", Json::array({"base", "reports"})}};
    HttpReply r = Post("/api/v1/licences", body.dump(), admin_);
    EXPECT_EQ(r.status, 201) << r.body;
    if (r.status != 201) return "";
    return r.json["licence_key"].get<std::string>();
  }

  static std::string EnrolBody(const trust::ApplianceIdentity& id, const std::string& licence, SysTime ts,
                               const trust::ApplianceIdentity* signer = nullptr) {
    const Json pub = id.public_key().signing_key().ToJson();
    const std::string ts_text = FormatTimestamp(ts);
    auto canonical = CanonicalJson(Json{{"licence_key", licence}, {"public_key", pub}, {"timestamp", ts_text}});
    const Bytes sig = (signer ? signer : &id)->Sign(*canonical);
    return Json{{"licence_key", licence}, {"public_key", pub}, {"timestamp", ts_text}, {"signature", ToHex(sig)}}
        .dump();
  }

  HttpReply Enrol(const trust::ApplianceIdentity& id, const std::string& licence) {
    return Post("/api/v1/enrol", EnrolBody(id, licence, clock_.Now()));
  }

  Json TufBody(const std::string& type, std::int64_t version, SysTime expires) {
    Json body = {{"_type", type}, {"spec_version", "1.0.31"}, {"version", version}, {"expires", FormatTimestamp(expires)}};
    if (type == "timestamp") body["meta"] = {{"snapshot.json", {{"version", 3}}}};
    if (type == "snapshot") body["meta"] = {{"targets.json", {{"version", 2}}}};
    if (type == "targets") body["targets"] = Json::object();
    return body;
  }

  Json AssignmentBody(const std::string& appliance_id) {
    trust::Assignment a;
    a.appliance_id = appliance_id;
    a.state_digest = trust::StateDigest({});
    a.issued = clock_.Now();
    a.expires = clock_.Now() + std::chrono::hours(24);
    a.channel = "stable";
    return a.ToJson();
  }

  // The keyserver's current content key (X25519), as the operator's CLI reads it from /keys.
  trust::X25519PublicKey PublishedContentKey() {
    HttpReply r = Get("/api/v1/keys");
    trust::X25519PublicKey out{};
    auto bytes = FromHex(r.json["roles"]["content"]["x25519_public"].get<std::string>());
    EXPECT_TRUE(bytes.ok() && bytes->size() == out.size());
    if (bytes.ok() && bytes->size() == out.size()) std::copy(bytes->begin(), bytes->end(), out.begin());
    return out;
  }

  static trust::AssignmentStep Step(const std::string& name, const std::string& sealed) {
    trust::AssignmentStep step;
    step.name = name;
    step.version = packages::Version::Parse("2.1.0").value();
    step.target_path = name + "-2.1.0.upk.enc";
    step.length = 4096;
    step.sha256 = std::string(64, 'a');
    step.sealed_content_key = sealed;
    return step;
  }

  packages::PublicKey PublishedKey(const std::string& role) {
    HttpReply r = Get("/api/v1/keys");
    EXPECT_EQ(r.status, 200);
    auto key = packages::PublicKey::FromJson(r.json["roles"][role]["public_key"]);
    EXPECT_TRUE(key.ok());
    return *key;
  }

  static bool VerifyEnvelope(const Json& envelope, const packages::PublicKey& key) {
    if (!envelope.contains("signatures") || envelope["signatures"].size() != 1) return false;
    auto canonical = CanonicalJson(envelope["signed"]);
    auto sig = FromHex(envelope["signatures"][0]["sig"].get<std::string>());
    return canonical.ok() && sig.ok() && envelope["signatures"][0]["keyid"] == key.keyid() &&
           key.Verify(*canonical, *sig);
  }

  test::TempDir tmp_;
  FakeClock clock_{std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())};
  std::string updater_, admin_;
  std::optional<KeySet> keys_;
  std::optional<db::testing::TestDatabase> db_;
  std::unique_ptr<db::Pool> pool_;
  std::optional<db::Connection> conn_;
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<Service> service_;
  std::uint16_t port_ = 0;
};

TEST_F(KeyserverApi, HealthKeysAndMetrics) {
  EXPECT_EQ(Get("/healthz").status, 200);
  HttpReply keys = Get("/api/v1/keys");
  ASSERT_EQ(keys.status, 200) << keys.body;
  for (Role role : kAllRoles) {
    EXPECT_EQ(keys.json["roles"][std::string(RoleName(role))]["keyid"], keys_->signer(role).keyid());
  }
  EXPECT_EQ(keys.body.find("private"), std::string::npos);
  // Five roles; the content role also publishes its X25519 form, the key releases are sealed to.
  EXPECT_EQ(keys.json["roles"].size(), 5u);
  EXPECT_EQ(keys.json["roles"]["content"]["x25519_public"],
            ToHex(keys_->content_opener().public_key().x25519()));
  EXPECT_EQ(keys.json["roles"]["content"]["retired"], Json::array());
  EXPECT_FALSE(keys.json["roles"]["timestamp"].contains("x25519_public"));
  HttpReply metrics = Get("/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("upkeep_http_requests_total"), std::string::npos);
}

TEST_F(KeyserverApi, LicenceCreationNeedsAdminAndIsSigned) {
  const SysTime end = clock_.Now() + std::chrono::hours(24 * 365);
  const Json body = {{"customer", "Acme"}, {"maintenance_end", FormatTimestamp(end)}, {"features", {"base"}}};
  const std::string before = Dump();
  HttpReply none = Post("/api/v1/licences", body.dump());
  EXPECT_EQ(none.status, 401);
  EXPECT_EQ(none.ErrorCode(), "unauthenticated");
  HttpReply wrong = Post("/api/v1/licences", body.dump(), updater_);
  EXPECT_EQ(wrong.status, 403);
  EXPECT_EQ(wrong.ErrorCode(), "forbidden");
  HttpReply bogus = Post("/api/v1/licences", body.dump(), std::string("ksa_") + std::string(64, '0'));
  EXPECT_EQ(bogus.status, 401);
  EXPECT_EQ(Dump(), before);

  HttpReply ok = Post("/api/v1/licences", body.dump(), admin_);
  ASSERT_EQ(ok.status, 201) << ok.body;
  const std::string key = ok.json["licence_key"].get<std::string>();
  EXPECT_EQ(key.size(), 23u);
  auto lic = trust::VerifyLicence(ok.json["licence"].dump(), PublishedKey("licence"), clock_);
  ASSERT_TRUE(lic.ok()) << lic.error().message();
  EXPECT_EQ(lic->licence_key, key);
  EXPECT_EQ(lic->customer, "Acme");
  EXPECT_EQ(lic->maintenance_end, end);
  EXPECT_FALSE(lic->appliance_id.has_value());
  EXPECT_EQ(AuditCount("licence.create"), 1);
  // The audit row does not leak the licence key.
  EXPECT_EQ(Dump().find(key, Dump().find("[{\"id\"")), std::string::npos);
}

TEST_F(KeyserverApi, BadLicenceInputChangesNothing) {
  CreateLicence(clock_.Now() + std::chrono::hours(24));
  const std::string before = Dump();
  const std::string end = FormatTimestamp(clock_.Now() + std::chrono::hours(24));
  struct Case {
    std::string body;
    int status;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"{not json", 400, "malformed_json"},
      {"[1,2]", 400, "invalid_body"},
      {"", 400, "malformed_json"},
      {Json{{"customer", 5}, {"maintenance_end", end}, {"features", Json::array()}}.dump(), 400, "invalid_field"},
      {Json{{"customer", "A"}, {"maintenance_end", "tomorrow"}, {"features", Json::array()}}.dump(), 400, "invalid_field"},
      {Json{{"customer", "A"}, {"maintenance_end", end}, {"features", "base"}}.dump(), 400, "invalid_field"},
      {Json{{"customer", "A"}, {"maintenance_end", end}, {"features", {1}}}.dump(), 400, "invalid_field"},
      {Json{{"customer", "A"}, {"maintenance_end", end}}.dump(), 400, "invalid_field"},
      {Json{{"customer", ""}, {"maintenance_end", end}, {"features", Json::array()}}.dump(), 400, "invalid_field"},
      {Json{{"customer", "A"}, {"maintenance_end", end}, {"features", Json::array()}, {"admin", true}}.dump(), 400,
       "unknown_field"},
      {"{\"customer\":\"A\",\"customer\":\"B\",\"maintenance_end\":\"" + end + "\",\"features\":[]}", 400,
       "malformed_json"},
      {std::string(100 * 1024, ' '), 413, "body_too_large"},
  };
  for (const Case& c : cases) {
    HttpReply r = Post("/api/v1/licences", c.body, admin_);
    EXPECT_EQ(r.status, c.status) << c.body.substr(0, 100) << " -> " << r.body;
    EXPECT_EQ(r.ErrorCode(), c.code) << c.body.substr(0, 100) << " -> " << r.body;
    EXPECT_FALSE(r.json["error"]["message"].get<std::string>().empty());
  }
  EXPECT_EQ(Dump(), before);
}

TEST_F(KeyserverApi, EnrolHappyPathIsIdempotent) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  HttpReply r = Enrol(identity, licence);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["appliance_id"], identity.appliance_id());
  EXPECT_EQ(r.json["enrolled"], "new");
  auto lic = trust::VerifyLicence(r.json["licence"].dump(), PublishedKey("licence"), clock_, identity.appliance_id());
  ASSERT_TRUE(lic.ok()) << lic.error().message();
  EXPECT_EQ(lic->appliance_id, identity.appliance_id());
  EXPECT_EQ(AuditCount("appliance.enrol"), 1);

  const std::string before = Dump();
  HttpReply again = Enrol(identity, licence);
  ASSERT_EQ(again.status, 200) << again.body;
  EXPECT_EQ(again.json["appliance_id"], identity.appliance_id());
  EXPECT_EQ(again.json["enrolled"], "existing");
  EXPECT_EQ(Dump(), before);

  HttpReply info = Get("/api/v1/appliances/" + identity.appliance_id(), updater_);
  ASSERT_EQ(info.status, 200) << info.body;
  EXPECT_EQ(info.json["status"], "active");
  EXPECT_EQ(info.json["customer"], "Acme");
  EXPECT_EQ(info.json["public_key"], identity.public_key().signing_key().ToJson());
  EXPECT_EQ(info.json["maintenance_end"], FormatTimestamp(clock_.Now() + std::chrono::hours(24 * 30)));
  EXPECT_EQ(info.json["in_maintenance"], true);
  EXPECT_EQ(info.body.find(licence), std::string::npos);
}

TEST_F(KeyserverApi, EnrolRejectionsChangeNothing) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  const std::string expired = CreateLicence(clock_.Now() - std::chrono::hours(1));
  auto identity = trust::ApplianceIdentity::Generate();
  auto other = trust::ApplianceIdentity::Generate();
  const std::string before = Dump();

  HttpReply stale = Post("/api/v1/enrol", EnrolBody(identity, licence, clock_.Now() - std::chrono::minutes(10)));
  EXPECT_EQ(stale.status, 401) << stale.body;
  EXPECT_EQ(stale.ErrorCode(), "stale_timestamp");
  EXPECT_NE(stale.body.find("NTP"), std::string::npos);
  HttpReply future = Post("/api/v1/enrol", EnrolBody(identity, licence, clock_.Now() + std::chrono::minutes(10)));
  EXPECT_EQ(future.status, 401);

  HttpReply badsig = Post("/api/v1/enrol", EnrolBody(identity, licence, clock_.Now(), &other));
  EXPECT_EQ(badsig.status, 401) << badsig.body;
  EXPECT_EQ(badsig.ErrorCode(), "bad_signature");
  // A signature over another licence key does not transfer.
  Json tampered = ParseJson(EnrolBody(identity, licence, clock_.Now())).value();
  tampered["licence_key"] = expired;
  HttpReply moved = Post("/api/v1/enrol", tampered.dump());
  EXPECT_EQ(moved.ErrorCode(), "bad_signature");

  HttpReply unknown = Post("/api/v1/enrol", EnrolBody(identity, "AAAAA-BBBBB-CCCCC-DDDDD", clock_.Now()));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.ErrorCode(), "unknown_licence");

  HttpReply lapsed = Enrol(identity, expired);
  EXPECT_EQ(lapsed.status, 403);
  EXPECT_EQ(lapsed.ErrorCode(), "licence_expired");

  Json no_sig = ParseJson(EnrolBody(identity, licence, clock_.Now())).value();
  no_sig.erase("signature");
  EXPECT_EQ(Post("/api/v1/enrol", no_sig.dump()).status, 400);
  Json bad_key = ParseJson(EnrolBody(identity, licence, clock_.Now())).value();
  bad_key["public_key"]["keyval"]["public"] = "zz";
  EXPECT_EQ(Post("/api/v1/enrol", bad_key.dump()).ErrorCode(), "invalid_public_key");
  Json wrong_type = ParseJson(EnrolBody(identity, licence, clock_.Now())).value();
  wrong_type["timestamp"] = 12;
  EXPECT_EQ(Post("/api/v1/enrol", wrong_type.dump()).ErrorCode(), "invalid_field");
  EXPECT_EQ(Post("/api/v1/enrol", "{\"licence_key\":").ErrorCode(), "malformed_json");
  EXPECT_EQ(Post("/api/v1/enrol", std::string(70 * 1024, '{')).status, 413);
  EXPECT_EQ(Dump(), before);

  // Bound to one key: another key gets 409, and nothing changes.
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  const std::string bound = Dump();
  HttpReply taken = Enrol(other, licence);
  EXPECT_EQ(taken.status, 409) << taken.body;
  EXPECT_EQ(taken.ErrorCode(), "licence_bound");
  // One appliance, one licence.
  const std::string second = CreateLicence(clock_.Now() + std::chrono::hours(24));
  const std::string with_second = Dump();
  HttpReply twice = Enrol(identity, second);
  EXPECT_EQ(twice.status, 409);
  EXPECT_EQ(twice.ErrorCode(), "appliance_enrolled");
  EXPECT_EQ(Dump(), with_second);
  EXPECT_NE(bound, with_second);
}

TEST_F(KeyserverApi, ApplianceLookupAndRevocation) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  const std::string path = "/api/v1/appliances/" + identity.appliance_id();

  EXPECT_EQ(Get(path).status, 401);
  EXPECT_EQ(Get(path, admin_).status, 403);
  EXPECT_EQ(Get(path, "nonsense").status, 401);
  EXPECT_EQ(Get(path, updater_).status, 200);
  auto unknown = trust::ApplianceIdentity::Generate();
  HttpReply missing = Get("/api/v1/appliances/" + unknown.appliance_id(), updater_);
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.ErrorCode(), "unknown_appliance");
  EXPECT_EQ(Get("/api/v1/appliances/apl-nope", updater_).status, 400);

  const std::string before = Dump();
  EXPECT_EQ(Post(path + "/revoke", "", updater_).status, 403);
  EXPECT_EQ(Post(path + "/revoke", "").status, 401);
  EXPECT_EQ(Post(path + "/revoke", "{\"reason\": 7}", admin_).status, 400);
  EXPECT_EQ(Post("/api/v1/appliances/" + unknown.appliance_id() + "/revoke", "", admin_).status, 404);
  EXPECT_EQ(Dump(), before);

  HttpReply revoked = Post(path + "/revoke", "{\"reason\": \"stolen\"}", admin_);
  ASSERT_EQ(revoked.status, 200) << revoked.body;
  EXPECT_EQ(revoked.json["changed"], true);
  EXPECT_EQ(AuditCount("appliance.revoke"), 1);
  HttpReply again = Post(path + "/revoke", "", admin_);
  EXPECT_EQ(again.status, 200);
  EXPECT_EQ(again.json["changed"], false);
  EXPECT_EQ(AuditCount("appliance.revoke"), 1);

  HttpReply info = Get(path, updater_);
  EXPECT_EQ(info.json["status"], "revoked");
  EXPECT_TRUE(info.json["revoked_at"].is_string());

  const std::string after_revoke = Dump();
  HttpReply enrol = Enrol(identity, licence);
  EXPECT_EQ(enrol.status, 403) << enrol.body;
  EXPECT_EQ(enrol.ErrorCode(), "appliance_revoked");
  HttpReply assign = Post("/api/v1/sign/assignment", AssignmentBody(identity.appliance_id()).dump(), updater_);
  EXPECT_EQ(assign.status, 403) << assign.body;
  EXPECT_EQ(assign.ErrorCode(), "appliance_revoked");
  EXPECT_EQ(Dump(), after_revoke);
}

TEST_F(KeyserverApi, SignsTimestampAndSnapshotWithRoleChecks) {
  const SysTime now = clock_.Now();
  const std::string before = Dump();
  struct Case {
    std::string path;
    Json body;
    std::string code;
  };
  const std::vector<Case> cases = {
      {"/api/v1/sign/timestamp", TufBody("targets", 1, now + 1h), "wrong_type"},
      {"/api/v1/sign/timestamp", TufBody("snapshot", 1, now + 1h), "wrong_type"},
      {"/api/v1/sign/snapshot", TufBody("timestamp", 1, now + 1h), "wrong_type"},
      {"/api/v1/sign/timestamp", TufBody("timestamp", 1, now - 1h), "expired"},
      {"/api/v1/sign/timestamp", TufBody("timestamp", 1, now + std::chrono::hours(24 * 8)), "expiry_too_far"},
      {"/api/v1/sign/snapshot", TufBody("snapshot", 1, now + std::chrono::hours(24 * 31)), "expiry_too_far"},
      {"/api/v1/sign/timestamp", TufBody("timestamp", 0, now + 1h), "invalid_field"},
      {"/api/v1/sign/timestamp", TufBody("timestamp", -3, now + 1h), "invalid_field"},
      {"/api/v1/sign/timestamp", [&] { Json b = TufBody("timestamp", 1, now + 1h); b["version"] = "1"; return b; }(),
       "invalid_field"},
      {"/api/v1/sign/timestamp", [&] { Json b = TufBody("timestamp", 1, now + 1h); b.erase("meta"); return b; }(),
       "invalid_metadata"},
      {"/api/v1/sign/timestamp", [&] { Json b = TufBody("timestamp", 1, now + 1h); b["x"] = 1.5; return b; }(),
       "invalid_metadata"},
  };
  for (const Case& c : cases) {
    HttpReply r = Post(c.path, c.body.dump(), updater_);
    EXPECT_EQ(r.status, 400) << c.body.dump() << " -> " << r.body;
    EXPECT_EQ(r.ErrorCode(), c.code) << c.body.dump() << " -> " << r.body;
  }
  EXPECT_EQ(Post("/api/v1/sign/timestamp", "nope", updater_).ErrorCode(), "malformed_json");
  EXPECT_EQ(Post("/api/v1/sign/timestamp", TufBody("timestamp", 1, now + 1h).dump(), admin_).status, 403);
  EXPECT_EQ(Post("/api/v1/sign/timestamp", TufBody("timestamp", 1, now + 1h).dump()).status, 401);
  EXPECT_EQ(Dump(), before);

  const packages::PublicKey ts_key = PublishedKey("timestamp");
  const packages::PublicKey snap_key = PublishedKey("snapshot");
  HttpReply ts = Post("/api/v1/sign/timestamp", TufBody("timestamp", 7, now + 24h).dump(), updater_);
  ASSERT_EQ(ts.status, 200) << ts.body;
  EXPECT_EQ(ts.json["signed"], TufBody("timestamp", 7, now + 24h));
  EXPECT_TRUE(VerifyEnvelope(ts.json, ts_key));
  EXPECT_FALSE(VerifyEnvelope(ts.json, snap_key));
  HttpReply snap = Post("/api/v1/sign/snapshot", TufBody("snapshot", 3, now + std::chrono::hours(24 * 7)).dump(), updater_);
  ASSERT_EQ(snap.status, 200) << snap.body;
  EXPECT_TRUE(VerifyEnvelope(snap.json, snap_key));
  EXPECT_FALSE(VerifyEnvelope(snap.json, ts_key));
  // Metadata the TUF parser accepts, signed by the role key.
  auto parsed = tuf::Metadata<tuf::Timestamp>::Parse(ts.body);
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_EQ(parsed->signed_body.version, 7);
  ASSERT_EQ(parsed->signatures.size(), 1u);
  EXPECT_EQ(AuditCount("sign.timestamp"), 1);
  EXPECT_EQ(AuditCount("sign.snapshot"), 1);
  HttpReply metrics = Get("/metrics");
  EXPECT_NE(metrics.body.find("upkeep_keyserver_signatures_total{role=\"timestamp\"} 1"), std::string::npos)
      << metrics.body;
}

TEST_F(KeyserverApi, SignsAssignmentsForActiveAppliancesOnly) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  const Json body = AssignmentBody(identity.appliance_id());

  const std::string before = Dump();
  auto stranger = trust::ApplianceIdentity::Generate();
  HttpReply unknown = Post("/api/v1/sign/assignment", AssignmentBody(stranger.appliance_id()).dump(), updater_);
  EXPECT_EQ(unknown.status, 404);
  EXPECT_EQ(unknown.ErrorCode(), "unknown_appliance");
  Json far = body;
  far["expires"] = FormatTimestamp(clock_.Now() + std::chrono::hours(24 * 60));
  EXPECT_EQ(Post("/api/v1/sign/assignment", far.dump(), updater_).ErrorCode(), "expiry_too_far");
  Json wrong = body;
  wrong["_type"] = "licence";
  EXPECT_EQ(Post("/api/v1/sign/assignment", wrong.dump(), updater_).ErrorCode(), "wrong_type");
  Json broken = body;
  broken["state_digest"] = "abc";
  EXPECT_EQ(Post("/api/v1/sign/assignment", broken.dump(), updater_).ErrorCode(), "invalid_assignment");
  EXPECT_EQ(Post("/api/v1/sign/assignment", body.dump(), admin_).status, 403);
  EXPECT_EQ(Dump(), before);

  HttpReply ok = Post("/api/v1/sign/assignment", body.dump(), updater_);
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto verified = trust::VerifyAssignment(ok.json.dump(), PublishedKey("director"), clock_,
                                          {identity.appliance_id(), trust::StateDigest({}), std::nullopt});
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  EXPECT_FALSE(VerifyEnvelope(ok.json, PublishedKey("timestamp")));
  EXPECT_EQ(AuditCount("sign.assignment"), 1);
}

TEST_F(KeyserverApi, AuditLogForActionsOnly) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  ASSERT_EQ(Post("/api/v1/sign/timestamp", TufBody("timestamp", 1, clock_.Now() + 1h).dump(), updater_).status, 200);
  // Rejected requests write nothing.
  EXPECT_EQ(Post("/api/v1/sign/timestamp", TufBody("targets", 1, clock_.Now() + 1h).dump(), updater_).status, 400);
  EXPECT_EQ(Post("/api/v1/licences", "{}", admin_).status, 400);

  EXPECT_EQ(Get("/api/v1/audit").status, 401);
  EXPECT_EQ(Get("/api/v1/audit", updater_).status, 403);
  EXPECT_EQ(Get("/api/v1/audit?limit=0", admin_).ErrorCode(), "invalid_query");
  EXPECT_EQ(Get("/api/v1/audit?limit=abc", admin_).ErrorCode(), "invalid_query");
  EXPECT_EQ(Get("/api/v1/audit?limit=5000", admin_).ErrorCode(), "invalid_query");

  HttpReply all = Get("/api/v1/audit", admin_);
  ASSERT_EQ(all.status, 200) << all.body;
  ASSERT_EQ(all.json["entries"].size(), 3u) << all.body;
  EXPECT_EQ(all.json["entries"][0]["action"], "sign.timestamp");
  EXPECT_EQ(all.json["entries"][0]["actor"], "updater");
  EXPECT_EQ(all.json["entries"][1]["action"], "appliance.enrol");
  EXPECT_EQ(all.json["entries"][1]["target"], identity.appliance_id());
  EXPECT_EQ(all.json["entries"][2]["action"], "licence.create");
  EXPECT_EQ(all.json["entries"][2]["actor"], "admin");
  EXPECT_EQ(all.json["entries"][2]["at"], FormatTimestamp(clock_.Now()));
  HttpReply two = Get("/api/v1/audit?limit=2", admin_);
  ASSERT_EQ(two.json["entries"].size(), 2u);
  EXPECT_EQ(all.body.find(licence), std::string::npos);

  // Append-only, enforced by the database.
  EXPECT_FALSE(conn_->Exec("DELETE FROM audit").ok());
  EXPECT_FALSE(conn_->Exec("UPDATE audit SET actor = 'x'").ok());
}

TEST_F(KeyserverApi, AssignmentContentKeysAreResealedToTheAppliance) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  const auto content_key = trust::ContentKey::Generate();
  const std::string to_keyserver = trust::SealContentKeyTo(content_key, PublishedContentKey());

  const auto site_key = trust::ContentKey::Generate();
  trust::Assignment a = trust::Assignment::FromJson(AssignmentBody(identity.appliance_id())).value();
  a.steps = {Step("base", to_keyserver), Step("site", trust::SealContentKeyTo(site_key, PublishedContentKey()))};
  HttpReply ok = Post("/api/v1/sign/assignment", a.ToJson().dump(), updater_);
  ASSERT_EQ(ok.status, 200) << ok.body;
  auto verified = trust::VerifyAssignment(ok.json.dump(), PublishedKey("director"), clock_,
                                          {identity.appliance_id(), trust::StateDigest({}), std::nullopt});
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  ASSERT_EQ(verified->steps.size(), 2u);
  const std::string resealed = verified->steps[0].sealed_content_key;
  EXPECT_NE(resealed, to_keyserver);
  auto opened = trust::OpenContentKey(resealed, identity);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  EXPECT_TRUE(std::equal(opened->bytes().begin(), opened->bytes().end(), content_key.bytes().begin()));
  auto opened_site = trust::OpenContentKey(verified->steps[1].sealed_content_key, identity);
  ASSERT_TRUE(opened_site.ok()) << opened_site.error().message();
  EXPECT_TRUE(std::equal(opened_site->bytes().begin(), opened_site->bytes().end(), site_key.bytes().begin()));
  // Only the keys change; the rest of the body is signed as sent.
  Json expected = a.ToJson();
  expected["steps"][0]["sealed_content_key"] = resealed;
  expected["steps"][1]["sealed_content_key"] = verified->steps[1].sealed_content_key;
  EXPECT_EQ(ok.json["signed"], expected);
  EXPECT_EQ(AuditCount("sign.assignment"), 1);
  // trust::Assignment itself refuses a step without a key, before any content key is looked at.
  Json keyless = a.ToJson();
  keyless["steps"][1]["sealed_content_key"] = "";
  EXPECT_EQ(Post("/api/v1/sign/assignment", keyless.dump(), updater_).ErrorCode(), "invalid_assignment");

  // A key sealed to something else than the keyserver's content key: 400, nothing written.
  auto stranger = trust::ApplianceIdentity::Generate();
  const std::string before = Dump();
  a.steps = {Step("base", to_keyserver), Step("site", trust::SealContentKey(content_key, identity.public_key()))};
  HttpReply wrong = Post("/api/v1/sign/assignment", a.ToJson().dump(), updater_);
  EXPECT_EQ(wrong.status, 400) << wrong.body;
  EXPECT_EQ(wrong.ErrorCode(), "invalid_content_key");
  const std::string message = wrong.json["error"]["message"].get<std::string>();
  EXPECT_NE(message.find("steps[1]"), std::string::npos) << message;
  EXPECT_NE(message.find("site"), std::string::npos) << message;
  a.steps = {Step("base", trust::SealContentKeyTo(content_key, stranger.public_key().x25519()))};
  EXPECT_EQ(Post("/api/v1/sign/assignment", a.ToJson().dump(), updater_).ErrorCode(), "invalid_content_key");
  a.steps = {Step("base", "bm90IGEga2V5")};
  EXPECT_EQ(Post("/api/v1/sign/assignment", a.ToJson().dump(), updater_).ErrorCode(), "invalid_content_key");
  EXPECT_EQ(Dump(), before);
  EXPECT_EQ(AuditCount("sign.assignment"), 1);
}

TEST_F(KeyserverApi, ContentKeySealedBeforeRotationStillReseals) {
  const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30));
  auto identity = trust::ApplianceIdentity::Generate();
  ASSERT_EQ(Enrol(identity, licence).status, 200);
  const auto content_key = trust::ContentKey::Generate();
  const trust::X25519PublicKey old_key = PublishedContentKey();
  const std::string sealed_old = trust::SealContentKeyTo(content_key, old_key);

  KS_ASSERT_OK(RotateKey(tmp_.path() / "state", test::TestWrapping(), Role::kContent));
  Restart();
  HttpReply keys = Get("/api/v1/keys");
  ASSERT_EQ(keys.json["roles"]["content"]["retired"].size(), 1u);
  EXPECT_EQ(keys.json["roles"]["content"]["retired"][0]["x25519_public"], ToHex(old_key));
  EXPECT_NE(PublishedContentKey(), old_key);

  trust::Assignment a = trust::Assignment::FromJson(AssignmentBody(identity.appliance_id())).value();
  a.steps = {Step("base", sealed_old),
             Step("site", trust::SealContentKeyTo(content_key, PublishedContentKey()))};
  HttpReply ok = Post("/api/v1/sign/assignment", a.ToJson().dump(), updater_);
  ASSERT_EQ(ok.status, 200) << ok.body;
  for (int i = 0; i < 2; ++i) {
    auto opened = trust::OpenContentKey(ok.json["signed"]["steps"][i]["sealed_content_key"].get<std::string>(), identity);
    ASSERT_TRUE(opened.ok()) << i << ": " << opened.error().message();
    EXPECT_TRUE(std::equal(opened->bytes().begin(), opened->bytes().end(), content_key.bytes().begin()));
  }
}

TEST_F(KeyserverApi, RevocationFeed) {
  const SysTime start = clock_.Now();
  std::vector<std::string> ids;
  for (int i = 0; i < 3; ++i) {
    const std::string licence = CreateLicence(clock_.Now() + std::chrono::hours(24 * 30), "C" + std::to_string(i));
    auto identity = trust::ApplianceIdentity::Generate();
    ASSERT_EQ(Enrol(identity, licence).status, 200);
    ids.push_back(identity.appliance_id());
  }
  // Revoked in the order 2, 0 (10 minutes later); 1 stays active.
  ASSERT_EQ(Post("/api/v1/appliances/" + ids[2] + "/revoke", "", admin_).status, 200);
  const SysTime first = clock_.Now();
  clock_.Advance(std::chrono::minutes(10));
  ASSERT_EQ(Post("/api/v1/appliances/" + ids[0] + "/revoke", "", admin_).status, 200);
  const SysTime second = clock_.Now();
  clock_.Advance(std::chrono::minutes(1));
  const std::string before = Dump();

  HttpReply all = Get("/api/v1/revocations", updater_);
  ASSERT_EQ(all.status, 200) << all.body;
  ASSERT_EQ(all.json["revoked"].size(), 2u) << all.body;
  EXPECT_EQ(all.json["revoked"][0]["appliance_id"], ids[2]);
  EXPECT_EQ(all.json["revoked"][0]["revoked_at"], FormatTimestamp(first));
  EXPECT_EQ(all.json["revoked"][1]["appliance_id"], ids[0]);
  EXPECT_EQ(all.json["revoked"][1]["revoked_at"], FormatTimestamp(second));
  EXPECT_EQ(all.json["now"], FormatTimestamp(clock_.Now()));
  EXPECT_FALSE(all.json.contains("truncated"));

  HttpReply since_start = Get("/api/v1/revocations?since=" + FormatTimestamp(start), updater_);
  EXPECT_EQ(since_start.json["revoked"].size(), 2u);
  // Inclusive: since == revoked_at includes it.
  HttpReply since_second = Get("/api/v1/revocations?since=" + FormatTimestamp(second), updater_);
  ASSERT_EQ(since_second.json["revoked"].size(), 1u) << since_second.body;
  EXPECT_EQ(since_second.json["revoked"][0]["appliance_id"], ids[0]);
  HttpReply later = Get("/api/v1/revocations?since=" + FormatTimestamp(clock_.Now()), updater_);
  ASSERT_EQ(later.status, 200);
  EXPECT_EQ(later.json["revoked"], Json::array());

  for (const std::string query : {"?since=yesterday", "?since=2026-01-01T00:00:00", "?since=", "?limit=3",
                                  "?since=2026-13-01T00:00:00Z"}) {
    HttpReply bad = Get("/api/v1/revocations" + query, updater_);
    EXPECT_EQ(bad.status, 400) << query << " -> " << bad.body;
    EXPECT_EQ(bad.ErrorCode(), "invalid_query") << query;
  }
  EXPECT_EQ(Get("/api/v1/revocations").status, 401);
  EXPECT_EQ(Get("/api/v1/revocations", admin_).status, 403);
  // A read: nothing audited.
  EXPECT_EQ(Dump(), before);
}

}  // namespace
}  // namespace upkeep::keyserver
