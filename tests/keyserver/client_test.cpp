// upkeep_keyserver_client against a real keyserver Service (in-process Server on 127.0.0.1, real
// PostgreSQL): every method's happy path and each error mapping, plus raw sockets standing in
// for a dead, hung or hostile keyserver.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <memory>
#include <optional>
#include <thread>

#include "http_client.hpp"
#include "test_util.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/db/testing.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/keyserver/service.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::keyserver {
namespace {

using namespace std::chrono_literals;

// A listening socket on an ephemeral loopback port.
struct Listener {
  int fd = -1;
  std::uint16_t port = 0;
  Listener() {
    fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd, 8) != 0) return;
    socklen_t len = sizeof addr;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
    port = ntohs(addr.sin_port);
  }
  ~Listener() { Close(); }
  void Close() {
    if (fd >= 0) ::close(fd);
    fd = -1;
  }
};

// Accepts one connection, reads the request head, writes `raw` and closes.
class RawServer {
 public:
  explicit RawServer(std::string raw) : raw_(std::move(raw)) {
    thread_ = std::thread([this] {
      const int c = ::accept(listener_.fd, nullptr, nullptr);
      if (c < 0) return;
      std::string got;
      char buf[4096];
      while (got.find("\r\n\r\n") == std::string::npos) {
        const ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        got.append(buf, static_cast<std::size_t>(n));
      }
      std::size_t sent = 0;
      while (sent < raw_.size()) {
        const ssize_t n = ::send(c, raw_.data() + sent, raw_.size() - sent, MSG_NOSIGNAL);
        if (n <= 0) break;
        sent += static_cast<std::size_t>(n);
      }
      ::close(c);
    });
  }
  ~RawServer() {
    ::shutdown(listener_.fd, SHUT_RDWR);  // unblocks accept() when no client came
    thread_.join();
  }
  std::uint16_t port() const { return listener_.port; }

 private:
  Listener listener_;
  std::string raw_;
  std::thread thread_;
};

std::string Url(std::uint16_t port) { return "http://127.0.0.1:" + std::to_string(port); }

class KeyserverClientTest : public ::testing::Test {
 protected:
  void SetUp() override {
    KS_ASSERT_OK(InitState(tmp_.path() / "state", test::TestWrapping()));
    updater_ = test::ReadToken(tmp_.path() / "state" / "updater.token");
    admin_ = test::ReadToken(tmp_.path() / "state" / "admin.token");
    KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(tmp_.path() / "state", test::TestWrapping()));
    keys_.emplace(std::move(keys));
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    KS_ASSERT_OK_AND_ASSIGN(auto db, db::testing::TestDatabase::Create(std::string("ksc_") + info->name()));
    db_.emplace(std::move(db));
    db::PoolOptions po;
    po.connect = db_->options();
    po.max_size = 4;
    KS_ASSERT_OK_AND_ASSIGN(pool_, db::Pool::Create(po));
    KS_ASSERT_OK(db::Migrate(*pool_, "keyserver", Migrations()));

    net::ServerOptions options;
    options.endpoints = {net::Endpoint{"127.0.0.1", 0, false}};
    options.io_threads = 1;
    options.worker_threads = 4;
    server_ = std::make_unique<net::Server>(options);
    service_ = std::make_unique<Service>(*keys_, *pool_, clock_, SystemRandom::Instance(), ServiceConfig{});
    KS_ASSERT_OK(service_->Register(*server_));
    KS_ASSERT_OK(server_->Start());
    port_ = server_->ports().at(0);
    KS_ASSERT_OK_AND_ASSIGN(client_, MakeClient(updater_));
  }
  void TearDown() override {
    if (server_) server_->Stop(std::chrono::milliseconds(0));
    server_.reset();
    service_.reset();
    pool_.reset();
    db_.reset();
  }

  Expected<std::unique_ptr<KeyserverClient>> MakeClient(const std::string& token,
                                                        std::chrono::milliseconds timeout = 10s) {
    return MakeHttpKeyserverClient({Url(port_), token, timeout});
  }

  // Licence + enrolment through the raw API; returns the identity.
  trust::ApplianceIdentity Enrolled() {
    const Json lic = {{"customer", "Acme"},
                      {"maintenance_end", FormatTimestamp(clock_.Now() + std::chrono::hours(24 * 30))},
                      {"features", Json::array({"base"})}};
    test::HttpReply created = test::Call(port_, "POST", "/api/v1/licences", lic.dump(), admin_);
    EXPECT_EQ(created.status, 201) << created.body;
    auto identity = trust::ApplianceIdentity::Generate();
    auto enrolled = client_->Enrol(EnrolBody(identity, created.json.value("licence_key", "")));
    EXPECT_TRUE(enrolled.ok() && enrolled->status == 200);
    return identity;
  }

  std::string EnrolBody(const trust::ApplianceIdentity& id, const std::string& licence) {
    const Json pub = id.public_key().signing_key().ToJson();
    const std::string ts = FormatTimestamp(clock_.Now());
    auto canonical = CanonicalJson(Json{{"licence_key", licence}, {"public_key", pub}, {"timestamp", ts}});
    return Json{{"licence_key", licence}, {"public_key", pub}, {"timestamp", ts}, {"signature", ToHex(id.Sign(*canonical))}}
        .dump();
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

  void Revoke(const std::string& id) {
    ASSERT_EQ(test::Call(port_, "POST", "/api/v1/appliances/" + id + "/revoke", "", admin_).status, 200);
  }

  test::TempDir tmp_;
  FakeClock clock_{std::chrono::floor<std::chrono::seconds>(std::chrono::system_clock::now())};
  std::string updater_, admin_;
  std::optional<KeySet> keys_;
  std::optional<db::testing::TestDatabase> db_;
  std::unique_ptr<db::Pool> pool_;
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<Service> service_;
  std::uint16_t port_ = 0;
  std::unique_ptr<KeyserverClient> client_;
};

TEST_F(KeyserverClientTest, KeysAndAppliance) {
  KS_ASSERT_OK_AND_ASSIGN(Json keys, client_->Keys());
  EXPECT_EQ(keys["roles"].size(), 5u);
  EXPECT_EQ(keys["roles"]["director"]["keyid"], keys_->signer(Role::kDirector).keyid());
  EXPECT_EQ(keys["roles"]["content"]["x25519_public"], ToHex(keys_->content_opener().public_key().x25519()));

  auto identity = Enrolled();
  KS_ASSERT_OK_AND_ASSIGN(ApplianceRecord rec, client_->GetAppliance(identity.appliance_id()));
  EXPECT_EQ(rec.appliance_id, identity.appliance_id());
  EXPECT_EQ(rec.public_key, identity.public_key().signing_key().ToJson());
  EXPECT_EQ(rec.customer, "Acme");
  EXPECT_FALSE(rec.revoked);
  EXPECT_FALSE(rec.revoked_at.has_value());
  EXPECT_EQ(rec.enrolled_at, clock_.Now());
  EXPECT_EQ(rec.maintenance_end, clock_.Now() + std::chrono::hours(24 * 30));
  EXPECT_TRUE(rec.in_maintenance);
  EXPECT_EQ(rec.features, std::vector<std::string>{"base"});

  Revoke(identity.appliance_id());
  KS_ASSERT_OK_AND_ASSIGN(ApplianceRecord gone, client_->GetAppliance(identity.appliance_id()));
  EXPECT_TRUE(gone.revoked);
  EXPECT_EQ(gone.revoked_at, clock_.Now());

  auto unknown = client_->GetAppliance(trust::ApplianceIdentity::Generate().appliance_id());
  ASSERT_FALSE(unknown.ok());
  EXPECT_EQ(unknown.error().code(), Errc::kNotFound);
  EXPECT_NE(unknown.error().message().find("unknown_appliance"), std::string::npos) << unknown.error().message();
  EXPECT_NE(unknown.error().message().find("no appliance apl-"), std::string::npos) << unknown.error().message();
  // Checked before it reaches a URL.
  auto bad = client_->GetAppliance("../audit");
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

TEST_F(KeyserverClientTest, WrongTokenIsVerificationAndNeverEchoed) {
  auto identity = Enrolled();
  const std::string wrong_token = "ksu_" + std::string(64, '7');
  for (const std::string& token : {wrong_token, admin_}) {
    KS_ASSERT_OK_AND_ASSIGN(auto client, MakeClient(token));
    auto r = client->GetAppliance(identity.appliance_id());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().message().find(token), std::string::npos);
    if (token == wrong_token) {
      EXPECT_EQ(r.error().code(), Errc::kVerification);
      EXPECT_EQ(r.error().message().rfind("keyserver refused the updater token", 0), 0u) << r.error().message();
      EXPECT_NE(r.error().message().find("unauthenticated"), std::string::npos) << r.error().message();
    } else {
      // The admin token is known but not allowed here.
      EXPECT_EQ(r.error().code(), Errc::kPolicy);
      EXPECT_NE(r.error().message().find("forbidden"), std::string::npos) << r.error().message();
    }
    auto rev = client->RevokedSince(std::nullopt);
    ASSERT_FALSE(rev.ok());
    EXPECT_EQ(rev.error().message().find(token), std::string::npos);
  }
}

TEST_F(KeyserverClientTest, SignsAndMapsRefusals) {
  const Json ts = {{"_type", "timestamp"},
                   {"spec_version", "1.0.31"},
                   {"version", 4},
                   {"expires", FormatTimestamp(clock_.Now() + 24h)},
                   {"meta", {{"snapshot.json", {{"version", 3}}}}}};
  KS_ASSERT_OK_AND_ASSIGN(Json envelope, client_->Sign("timestamp", ts));
  EXPECT_EQ(envelope["signed"], ts);
  EXPECT_EQ(envelope["signatures"][0]["keyid"], keys_->signer(Role::kTimestamp).keyid());

  Json expired = ts;
  expired["expires"] = FormatTimestamp(clock_.Now() - 1h);
  auto refused = client_->Sign("timestamp", expired);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(refused.error().message().find("expired"), std::string::npos) << refused.error().message();
  EXPECT_EQ(client_->Sign("root", ts).error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(client_->Sign("timestamp", Json::array()).error().code(), Errc::kInvalidArgument);

  // An assignment: content key sealed to the keyserver comes back sealed to the appliance.
  auto identity = Enrolled();
  const auto content_key = trust::ContentKey::Generate();
  Json body = AssignmentBody(identity.appliance_id());
  trust::AssignmentStep step;
  step.name = "base";
  step.version = packages::Version::Parse("2.0.0").value();
  step.target_path = "base-2.0.0.enc";
  step.length = 10;
  step.sha256 = std::string(64, 'b');
  step.sealed_content_key = trust::SealContentKeyTo(content_key, keys_->content_opener().public_key().x25519());
  body["steps"] = Json::array({step.ToJson()});
  KS_ASSERT_OK_AND_ASSIGN(Json signed_assignment, client_->Sign("assignment", body));
  auto verified = trust::VerifyAssignment(signed_assignment.dump(), keys_->signer(Role::kDirector).public_key(), clock_,
                                          {identity.appliance_id(), trust::StateDigest({}), std::nullopt});
  ASSERT_TRUE(verified.ok()) << verified.error().message();
  auto opened = trust::OpenContentKey(verified->steps.at(0).sealed_content_key, identity);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  EXPECT_TRUE(std::equal(opened->bytes().begin(), opened->bytes().end(), content_key.bytes().begin()));

  // Unknown appliance: kNotFound; revoked: kPolicy, both naming the keyserver's code.
  auto stranger = client_->Sign("assignment", AssignmentBody(trust::ApplianceIdentity::Generate().appliance_id()));
  ASSERT_FALSE(stranger.ok());
  EXPECT_EQ(stranger.error().code(), Errc::kNotFound);
  Revoke(identity.appliance_id());
  auto revoked = client_->Sign("assignment", AssignmentBody(identity.appliance_id()));
  ASSERT_FALSE(revoked.ok());
  EXPECT_EQ(revoked.error().code(), Errc::kPolicy);
  EXPECT_NE(revoked.error().message().find("appliance_revoked"), std::string::npos) << revoked.error().message();
}

TEST_F(KeyserverClientTest, EnrolPassesEverythingThrough) {
  auto identity = trust::ApplianceIdentity::Generate();
  KS_ASSERT_OK_AND_ASSIGN(PassThrough unknown, client_->Enrol(EnrolBody(identity, "AAAAA-BBBBB-CCCCC-DDDDD")));
  EXPECT_EQ(unknown.status, 404);
  EXPECT_NE(unknown.body.find("unknown_licence"), std::string::npos) << unknown.body;
  KS_ASSERT_OK_AND_ASSIGN(PassThrough malformed, client_->Enrol("{nope"));
  EXPECT_EQ(malformed.status, 400);
  auto enrolled = Enrolled();
  KS_ASSERT_OK_AND_ASSIGN(ApplianceRecord rec, client_->GetAppliance(enrolled.appliance_id()));
  EXPECT_EQ(rec.appliance_id, enrolled.appliance_id());
}

TEST_F(KeyserverClientTest, RevocationFeed) {
  auto a = Enrolled();
  auto b = Enrolled();
  KS_ASSERT_OK_AND_ASSIGN(RevocationPage empty, client_->RevokedSince(std::nullopt));
  EXPECT_TRUE(empty.revoked.empty());
  EXPECT_EQ(empty.now, clock_.Now());
  Revoke(b.appliance_id());
  const SysTime first = clock_.Now();
  clock_.Advance(5min);
  Revoke(a.appliance_id());
  KS_ASSERT_OK_AND_ASSIGN(RevocationPage all, client_->RevokedSince(std::nullopt));
  ASSERT_EQ(all.revoked.size(), 2u);
  EXPECT_EQ(all.revoked[0].appliance_id, b.appliance_id());
  EXPECT_EQ(all.revoked[0].revoked_at, first);
  EXPECT_EQ(all.revoked[1].appliance_id, a.appliance_id());
  EXPECT_FALSE(all.truncated);
  KS_ASSERT_OK_AND_ASSIGN(RevocationPage later, client_->RevokedSince(first + 1s));
  ASSERT_EQ(later.revoked.size(), 1u);
  EXPECT_EQ(later.revoked[0].appliance_id, a.appliance_id());
}

TEST_F(KeyserverClientTest, ConcurrentCallsFromManyThreads) {
  auto identity = Enrolled();
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 6; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 5; ++i) {
        if (!client_->Keys().ok()) ++failures;
        if (!client_->GetAppliance(identity.appliance_id()).ok()) ++failures;
        if (!client_->RevokedSince(std::nullopt).ok()) ++failures;
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(failures.load(), 0);
}

TEST(KeyserverClientUnavailable, RefusedHungAndHostileKeyservers) {
  // Connection refused: a port that was just free.
  std::uint16_t free_port = 0;
  {
    Listener l;
    free_port = l.port;
  }
  KS_ASSERT_OK_AND_ASSIGN(auto refused, MakeHttpKeyserverClient({Url(free_port), "ksu_token", 2s}));
  auto r = refused->Keys();
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_EQ(r.error().message().rfind("keyserver unavailable:", 0), 0u) << r.error().message();
  auto e = refused->Enrol("{}");
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code(), Errc::kIo);

  // Accepts (the kernel does) but never answers: the time-out.
  Listener hung;
  KS_ASSERT_OK_AND_ASSIGN(auto slow, MakeHttpKeyserverClient({Url(hung.port), "ksu_token", 300ms}));
  const auto start = std::chrono::steady_clock::now();
  auto timed_out = slow->RevokedSince(std::nullopt);
  ASSERT_FALSE(timed_out.ok());
  EXPECT_EQ(timed_out.error().code(), Errc::kIo);
  EXPECT_EQ(timed_out.error().message().rfind("keyserver unavailable:", 0), 0u) << timed_out.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);

  {  // 503 with the keyserver's error body.
    const std::string body = R"({"error":{"code":"unavailable","message":"database unavailable, try again"}})";
    RawServer s("HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: " +
                std::to_string(body.size()) + "\r\nConnection: close\r\n\r\n" + body);
    KS_ASSERT_OK_AND_ASSIGN(auto c, MakeHttpKeyserverClient({Url(s.port()), "ksu_token", 2s}));
    auto k = c->Keys();
    ASSERT_FALSE(k.ok());
    EXPECT_EQ(k.error().code(), Errc::kIo);
    EXPECT_EQ(k.error().message().rfind("keyserver unavailable:", 0), 0u) << k.error().message();
    EXPECT_NE(k.error().message().find("unavailable: database unavailable"), std::string::npos) << k.error().message();
  }
  {  // An answer announcing more than the bound is refused before it is read.
    RawServer s("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 100000000\r\n\r\n{");
    KS_ASSERT_OK_AND_ASSIGN(auto c, MakeHttpKeyserverClient({Url(s.port()), "ksu_token", 2s}));
    auto k = c->Keys();
    ASSERT_FALSE(k.ok());
    EXPECT_EQ(k.error().code(), Errc::kLimit) << k.error().message();
  }
  {  // 200 with something that is not the expected shape.
    RawServer s("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 14\r\n"
                "Connection: close\r\n\r\n{\"revoked\": 1}");
    KS_ASSERT_OK_AND_ASSIGN(auto c, MakeHttpKeyserverClient({Url(s.port()), "ksu_token", 2s}));
    auto k = c->RevokedSince(std::nullopt);
    ASSERT_FALSE(k.ok());
    EXPECT_EQ(k.error().code(), Errc::kParse) << k.error().message();
  }
  {  // A hostile error text is shortened and made printable before it reaches a log.
    const std::string message = "evil\\u001b[31m" + std::string(5000, 'x');
    const std::string body = "{\"error\":{\"code\":\"bad\",\"message\":\"" + message + "\"}}";
    RawServer s("HTTP/1.1 400 Bad Request\r\nContent-Length: " + std::to_string(body.size()) +
                "\r\nConnection: close\r\n\r\n" + body);
    KS_ASSERT_OK_AND_ASSIGN(auto c, MakeHttpKeyserverClient({Url(s.port()), "ksu_token", 2s}));
    auto k = c->Keys();
    ASSERT_FALSE(k.ok());
    EXPECT_EQ(k.error().code(), Errc::kInvalidArgument);
    EXPECT_LT(k.error().message().size(), 500u);
    EXPECT_EQ(k.error().message().find('\x1b'), std::string::npos);
  }
}

TEST(KeyserverClientOptionsTest, RefusesBadOptions) {
  EXPECT_FALSE(MakeHttpKeyserverClient({"ftp://127.0.0.1:1", "t", 1s}).ok());
  EXPECT_FALSE(MakeHttpKeyserverClient({"http://127.0.0.1:1/api", "t", 1s}).ok());
  EXPECT_FALSE(MakeHttpKeyserverClient({"http://user:secret@127.0.0.1:1", "t", 1s}).ok());
  EXPECT_FALSE(MakeHttpKeyserverClient({"not a url", "t", 1s}).ok());
  EXPECT_FALSE(MakeHttpKeyserverClient({"http://127.0.0.1:1", "", 1s}).ok());
  EXPECT_FALSE(MakeHttpKeyserverClient({"http://127.0.0.1:1", "t", 0ms}).ok());
  auto injected = MakeHttpKeyserverClient({"http://127.0.0.1:1", "secret\r\nX-Evil: 1", 1s});
  ASSERT_FALSE(injected.ok());
  EXPECT_EQ(injected.error().message().find("secret"), std::string::npos);
  auto with_user = MakeHttpKeyserverClient({"http://user:hunter2@127.0.0.1:1", "t", 1s});
  ASSERT_FALSE(with_user.ok());
  EXPECT_EQ(with_user.error().message().find("hunter2"), std::string::npos);
  EXPECT_TRUE(MakeHttpKeyserverClient({"https://keyserver.internal:8443/", "t", 1s}).ok());
}

}  // namespace
}  // namespace upkeep::keyserver
