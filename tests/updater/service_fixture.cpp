#include "service_fixture.hpp"

#include <set>
#include <stdexcept>

#include "upkeep/common/bytes.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/request_signing.hpp"
#include "upkeep/tuf/repository.hpp"

namespace upkeep::updater::test {

namespace {

Expected<Json> Envelope(const Json& signed_part, const packages::PrivateKey& key) {
  UPK_TRY_ASSIGN(std::string canonical, CanonicalJson(signed_part));
  return Json{{"signatures", Json::array({Json{{"keyid", key.keyid()}, {"sig", ToHex(key.Sign(canonical))}}})},
              {"signed", signed_part}};
}

Json RoleEntry(const packages::PrivateKey& key) {
  return Json{{"keyid", key.keyid()}, {"public_key", key.public_key().ToJson()}, {"retired", Json::array()}};
}

}  // namespace

FakeKeyserver::FakeKeyserver()
    : snapshot_(packages::PrivateKey::GenerateEd25519()),
      timestamp_(packages::PrivateKey::GenerateEd25519()),
      director_(packages::PrivateKey::GenerateEd25519()),
      content_(trust::ApplianceIdentity::Generate()) {}

Expected<Json> FakeKeyserver::Keys() {
  if (unavailable_) return Error(Errc::kIo, "keyserver unavailable: fake outage");
  Json content = RoleEntry(content_.signing_key());
  content["x25519_public"] = ToHex(content_.public_key().x25519());
  return Json{{"roles",
               {{"snapshot", RoleEntry(snapshot_)},
                {"timestamp", RoleEntry(timestamp_)},
                {"director", RoleEntry(director_)},
                {"licence", RoleEntry(director_)},
                {"content", content}}}};
}

Expected<keyserver::ApplianceRecord> FakeKeyserver::GetAppliance(const std::string& appliance_id) {
  if (unavailable_) return Error(Errc::kIo, "keyserver unavailable: fake outage");
  std::lock_guard lock(mu_);
  auto it = appliances_.find(appliance_id);
  if (it == appliances_.end()) return Error(Errc::kNotFound, "unknown_appliance: no appliance " + appliance_id);
  return it->second;
}

Expected<Json> FakeKeyserver::Sign(std::string_view role, const Json& signed_part) {
  if (unavailable_) return Error(Errc::kIo, "keyserver unavailable: fake outage");
  {
    std::lock_guard lock(mu_);
    ++sign_calls_[std::string(role)];
  }
  if (role == "timestamp") return Envelope(signed_part, timestamp_);
  if (role == "snapshot") return Envelope(signed_part, snapshot_);
  if (role != "assignment") return Error(Errc::kInvalidArgument, "unknown role");
  UPK_TRY_ASSIGN(trust::Assignment assignment, trust::Assignment::FromJson(signed_part));
  keyserver::ApplianceRecord record;
  {
    std::lock_guard lock(mu_);
    auto it = appliances_.find(assignment.appliance_id);
    if (it == appliances_.end()) return Error(Errc::kNotFound, "unknown_appliance");
    record = it->second;
  }
  if (record.revoked) return Error(Errc::kPolicy, "appliance_revoked");
  UPK_TRY_ASSIGN(trust::AppliancePublicKey pub, trust::AppliancePublicKey::FromJson(record.public_key));
  for (std::size_t i = 0; i < assignment.steps.size(); ++i) {
    auto& step = assignment.steps[i];
    if (step.sealed_content_key.empty()) continue;
    auto key = trust::OpenContentKey(step.sealed_content_key, content_);
    if (!key.ok()) return Error(Errc::kInvalidArgument, "invalid_content_key: step " + std::to_string(i));
    step.sealed_content_key = trust::SealContentKey(*key, pub);
  }
  return Envelope(assignment.ToJson(), director_);
}

Expected<keyserver::PassThrough> FakeKeyserver::Enrol(std::string_view) {
  if (unavailable_) return Error(Errc::kIo, "keyserver unavailable: fake outage");
  return keyserver::PassThrough{404, R"({"error":{"code":"unknown_licence","message":"fake keyserver"}})"};
}

Expected<keyserver::RevocationPage> FakeKeyserver::RevokedSince(std::optional<SysTime> since) {
  if (unavailable_) return Error(Errc::kIo, "keyserver unavailable: fake outage");
  keyserver::RevocationPage page;
  page.now = SystemClock::Instance().Now();
  std::lock_guard lock(mu_);
  for (const auto& [id, record] : appliances_) {
    if (record.revoked && record.revoked_at && (!since || *record.revoked_at >= *since)) {
      page.revoked.push_back({id, *record.revoked_at});
    }
  }
  return page;
}

void FakeKeyserver::AddAppliance(const trust::ApplianceIdentity& identity, std::string customer,
                                 std::optional<SysTime> maintenance_end) {
  keyserver::ApplianceRecord record;
  record.appliance_id = identity.appliance_id();
  record.public_key = identity.public_key().signing_key().ToJson();
  record.customer = std::move(customer);
  record.enrolled_at = SystemClock::Instance().Now();
  record.maintenance_end = maintenance_end.value_or(record.enrolled_at + std::chrono::hours(24 * 365));
  record.in_maintenance = SystemClock::Instance().Now() < record.maintenance_end;
  std::lock_guard lock(mu_);
  appliances_[record.appliance_id] = std::move(record);
}

void FakeKeyserver::Revoke(const std::string& appliance_id) {
  std::lock_guard lock(mu_);
  auto it = appliances_.find(appliance_id);
  if (it == appliances_.end()) return;
  it->second.revoked = true;
  it->second.revoked_at = SystemClock::Instance().Now();
}

int FakeKeyserver::sign_calls(std::string_view role) const {
  std::lock_guard lock(mu_);
  auto it = sign_calls_.find(role);
  return it == sign_calls_.end() ? 0 : it->second;
}

std::string Reply::ErrorCode() const {
  if (!json.is_object() || !json.contains("error") || !json["error"].is_object()) return "";
  const Json& code = json["error"]["code"];
  return code.is_string() ? code.get<std::string>() : "";
}

std::optional<std::string> Reply::Header(std::string_view name) const {
  HttpReply raw;
  raw.head = head;
  return raw.Header(name);
}

namespace {
std::mutex g_observed_mu;
std::set<ObservedExchange>& Observed() {
  static std::set<ObservedExchange> observed;
  return observed;
}

Reply ToReply(HttpReply raw) {
  Reply r{raw.status, std::move(raw.head), std::move(raw.body), nullptr};
  auto parsed = ParseJson(r.body);
  if (parsed.ok()) r.json = std::move(parsed).value();
  return r;
}

template <typename T>
T Must(Expected<T> value, const char* what) {
  if (!value.ok()) throw std::runtime_error(std::string(what) + ": " + value.error().message());
  return std::move(value).value();
}
}  // namespace

std::vector<ObservedExchange> ObservedExchanges() {
  std::lock_guard lock(g_observed_mu);
  return {Observed().begin(), Observed().end()};
}

ServiceFixture::ServiceFixture(ServiceConfig config, const Clock* clock)
    : clock_(clock ? *clock : SystemClock::Instance()) {
  db_.emplace(Must(db::testing::TestDatabase::Create("updater"), "test database"));
  db::PoolOptions pool_options;
  pool_options.connect = db_->options();
  pool_ = Must(db::Pool::Create(pool_options), "pool");
  if (auto st = db::Migrate(*pool_, "updater", Migrations()); !st.ok()) {
    throw std::runtime_error("migrate: " + st.error().message());
  }
  if (config.repo_dir.empty()) config.repo_dir = dir_.path() / "repo";
  if (config.blob_dir.empty()) config.blob_dir = dir_.path() / "blobs";
  for (const char* role : {"admin", "publisher", "support"}) {
    Json made = Must(CreateOperatorToken(*pool_, clock_, SystemRandom::Instance(), std::string("test-") + role, role,
                                         std::chrono::hours(24), "test"),
                     "token");
    tokens_[role] = made["token"].get<std::string>();
  }
  service_ = Must(Service::Create(ServiceDeps{*pool_, keyserver_, clock_, SystemRandom::Instance(), {}}, config),
                  "service");
  net::ServerOptions options;
  options.io_threads = 2;
  options.access_log = [](const net::AccessLogEntry& e) {
    std::lock_guard lock(g_observed_mu);
    Observed().insert(ObservedExchange{std::string(e.method), std::string(e.route), e.status});
  };
  server_ = std::make_unique<net::Server>(options);
  if (auto st = service_->Register(*server_); !st.ok()) throw std::runtime_error("register: " + st.error().message());
  if (auto st = server_->Start(); !st.ok()) throw std::runtime_error("start: " + st.error().message());
  port_ = server_->ports().at(0);
}

ServiceFixture::~ServiceFixture() {
  if (server_) server_->Stop(std::chrono::seconds(2));
  if (service_) service_->StopBackground();
  server_.reset();
  service_.reset();
  pool_.reset();
}

Reply ServiceFixture::Call(std::string_view method, std::string_view target, std::string_view body,
                           std::string_view token, const std::vector<std::pair<std::string, std::string>>& headers) {
  auto all = headers;
  if (!token.empty()) all.emplace_back("Authorization", "Bearer " + std::string(token));
  if (!body.empty()) all.emplace_back("Content-Type", "application/json");
  return ToReply(test::Call(port_, method, target, all, body));
}

Reply ServiceFixture::ApplianceCall(const trust::ApplianceIdentity& identity, std::string_view method,
                                    std::string_view target, std::string_view body) {
  auto sig = trust::SignRequest(identity, trust::RequestToSign{method, target, body}, SystemClock::Instance(),
                                SystemRandom::Instance());
  if (!sig.ok()) throw std::runtime_error("sign request: " + sig.error().message());
  auto headers = sig->Headers();
  headers.emplace_back("Content-Type", "application/json");
  return ToReply(test::Call(port_, method, target, headers, body));
}

std::string ServiceFixture::DumpTables() {
  auto conn = Must(pool_->Acquire(), "acquire");
  std::string out;
  for (const char* table : {"operator_tokens", "tuf_metadata", "blobs", "releases", "channels", "channel_releases",
                            "catalog_generation", "appliances", "assignments", "events", "rollouts", "rollout_waves",
                            "rollout_members", "audit"}) {
    auto r = conn->Exec(std::string("SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') AS d FROM ") +
                        table + " t");
    if (!r.ok()) throw std::runtime_error(std::string("dump ") + table + ": " + r.error().message());
    out += std::string("== ") + table + "\n" + r->Get<std::string>(0, "d").value() + "\n";
  }
  return out;
}

}  // namespace upkeep::updater::test
