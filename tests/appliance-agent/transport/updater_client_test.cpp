#include <gtest/gtest.h>

#include <mutex>
#include <set>

#include "test_servers.hpp"
#include "upkeep/agent/updater_client.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/request_signing.hpp"
#include "upkeep/trust/signed_document.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;

trust::InstalledSet Installed() {
  trust::InstalledSet set;
  set.emplace("base", *packages::Version::Parse("1.0.0"));
  set.emplace("software", *packages::Version::Parse("7.0.0"));
  return set;
}

// An updater stand-in: verifies every request's signature like the real one, answers per `mode`.
class UpdaterApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    net::ServerOptions o;
    o.io_threads = 1;
    server_ = std::make_unique<net::Server>(o);
    for (const std::string prefix : {"", "/up"}) {
      ASSERT_TRUE(server_->Handle(net::Method::kPost, prefix + "/api/v1/checkin",
                                  [this](const net::Request& r) { return Checkin(r); }).ok());
      ASSERT_TRUE(server_->Handle(net::Method::kPost, prefix + "/api/v1/events",
                                  [this](const net::Request& r) { return Events(r); }).ok());
    }
    ASSERT_TRUE(server_->Start().ok());
    base_ = "http://127.0.0.1:" + std::to_string(server_->ports().at(0));
    auto http = MakeHttpClient();
    ASSERT_TRUE(http.ok());
    http_ = std::move(http).value();
  }
  void TearDown() override { server_->Stop(1s); }

  std::unique_ptr<UpdaterApi> Api(const trust::ApplianceIdentity& id, const std::string& prefix = "") {
    UpdaterEndpoint e;
    e.base_url = base_ + prefix;
    auto api = MakeUpdaterApi(e, id, SystemClock::Instance(), SystemRandom::Instance(), *http_);
    EXPECT_TRUE(api.ok());
    return std::move(api).value();
  }

  std::optional<net::Response> Authenticate(const net::Request& r) {
    trust::RequestSignature sig;
    sig.appliance_id = std::string(r.Header(trust::kApplianceHeader).value_or(""));
    sig.timestamp = std::string(r.Header(trust::kTimestampHeader).value_or(""));
    sig.nonce = std::string(r.Header(trust::kNonceHeader).value_or(""));
    sig.signature_hex = std::string(r.Header(trust::kSignatureHeader).value_or(""));
    if (sig.appliance_id != identity_.appliance_id()) {
      return net::Response::JsonError(404, "unknown_appliance", "no appliance " + sig.appliance_id);
    }
    trust::RequestToSign req{r.method_name(), r.target(), r.body()};
    auto st = verifier_.Verify(req, sig, identity_.public_key());
    if (!st.ok()) return net::Response::JsonError(401, "bad_signature", st.error().message());
    std::lock_guard<std::mutex> lock(mu_);
    ++verified_;
    return std::nullopt;
  }

  net::Response Checkin(const net::Request& r) {
    if (auto refused = Authenticate(r)) return *refused;
    std::string mode;
    {
      std::lock_guard<std::mutex> lock(mu_);
      mode = mode_;
      last_body_ = r.body();
    }
    if (mode == "busy") {
      net::Response resp = net::Response::JsonError(503, "busy", "try later");
      resp.SetHeader("Retry-After", "120");
      return resp;
    }
    if (mode == "429") {
      net::Response resp = net::Response::JsonError(429, "slow_down", "too many");
      resp.SetHeader("Retry-After", "7");
      return resp;
    }
    if (mode == "503-bare") return net::Response::JsonError(503, "busy", "no hint");
    if (mode == "500") return net::Response::Text(500, "boom");
    if (mode == "422") return net::Response::JsonError(422, "bad_state", "installed set is odd");
    if (mode == "garbage") return net::Response::Text(200, "{\"assignment\": 5}");
    if (mode == "bad-next") {
      return net::Response::Json(200, Json{{"assignment", Json::object()}, {"server_time", "2030-01-01T00:00:00Z"},
                                           {"next_checkin_seconds", -5}});
    }
    auto body = ParseJson(r.body());
    trust::Assignment a;
    a.appliance_id = identity_.appliance_id();
    a.state_digest = trust::StateDigest(Installed());
    a.issued = SystemClock::Instance().Now();
    a.expires = a.issued + std::chrono::hours(24 * 7);
    a.channel = "stable";
    auto doc = trust::SignedDocument::Sign(a.ToJson(), director_);
    if (!doc.ok()) return net::Response::FromError(doc.error());
    auto envelope = ParseJson(doc->Serialize());
    return net::Response::Json(
        200, Json{{"assignment", *envelope}, {"server_time", "2030-01-01T00:00:00Z"}, {"next_checkin_seconds", 900}});
  }

  net::Response Events(const net::Request& r) {
    if (auto refused = Authenticate(r)) return *refused;
    auto body = ParseJson(r.body());
    if (!body.ok() || !(*body)["events"].is_array() || (*body)["events"].empty() || (*body)["events"].size() > 100) {
      return net::Response::JsonError(400, "bad_request", "events must be 1..100");
    }
    std::lock_guard<std::mutex> lock(mu_);
    int accepted = 0, duplicates = 0;
    for (const Json& e : (*body)["events"]) {
      if (ids_.insert(e["id"].get<std::string>()).second) {
        ++accepted;
      } else {
        ++duplicates;
      }
      last_event_ = e;
    }
    ++event_batches_;
    return net::Response::Json(200, Json{{"accepted", accepted}, {"duplicates", duplicates}});
  }

  void SetMode(const std::string& m) {
    std::lock_guard<std::mutex> lock(mu_);
    mode_ = m;
  }

  trust::ApplianceIdentity identity_ = trust::ApplianceIdentity::Generate();
  packages::PrivateKey director_ = packages::PrivateKey::GenerateEd25519();
  trust::ReplayCache cache_{1000};
  trust::RequestVerifier verifier_{SystemClock::Instance(), cache_};
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<HttpClient> http_;
  std::string base_;
  std::mutex mu_;
  std::string mode_ = "ok";
  std::string last_body_;
  Json last_event_;
  std::set<std::string> ids_;
  int verified_ = 0;
  int event_batches_ = 0;
};

TEST_F(UpdaterApiTest, CheckinIsSignedAndTheAssignmentVerifies) {
  for (const std::string prefix : {"", "/up"}) {
    auto api = Api(identity_, prefix);
    auto reply = api->Checkin(Installed(), "0.4.2");
    ASSERT_TRUE(reply.ok()) << reply.error().message();
    EXPECT_EQ(reply->next_checkin, 900s);
    EXPECT_EQ(reply->server_time, *ParseTimestamp("2030-01-01T00:00:00Z"));
    trust::AssignmentExpectation expect{identity_.appliance_id(), trust::StateDigest(Installed()), std::nullopt};
    auto verified = trust::VerifyAssignment(reply->assignment, director_.public_key(), SystemClock::Instance(), expect);
    ASSERT_TRUE(verified.ok()) << verified.error().message();
    EXPECT_EQ(verified->channel, "stable");
    // Another director key does not verify it.
    auto other = packages::PrivateKey::GenerateEd25519();
    EXPECT_FALSE(trust::VerifyAssignment(reply->assignment, other.public_key(), SystemClock::Instance(), expect).ok());
  }
  auto body = ParseJson(last_body_);
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["installed"], (Json{{"base", "1.0.0"}, {"software", "7.0.0"}}));
  EXPECT_EQ((*body)["agent_version"], "0.4.2");
  EXPECT_TRUE(ParseTimestamp((*body)["time"].get<std::string>()).ok());
  EXPECT_EQ(verified_, 2);
}

TEST_F(UpdaterApiTest, BusyAnswersCarryRetryAfter) {
  auto api = Api(identity_);
  SetMode("busy");
  auto r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kLimit);
  EXPECT_NE(r.error().message().find("updater busy, retry after 120 s"), std::string::npos) << r.error().message();
  EXPECT_EQ(RetryAfter(r.error()), std::optional<std::chrono::seconds>(120s));
  SetMode("429");
  r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(RetryAfter(r.error()), std::optional<std::chrono::seconds>(7s));
  SetMode("503-bare");
  r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_EQ(RetryAfter(r.error()), std::nullopt);
  EXPECT_EQ(RetryAfter(Error(Errc::kIo, "updater busy, retry after 5 s")), std::nullopt);
}

TEST_F(UpdaterApiTest, ErrorMapping) {
  auto api = Api(identity_);
  SetMode("500");
  auto r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_NE(r.error().message().find("HTTP 500"), std::string::npos);
  SetMode("422");
  r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
  EXPECT_NE(r.error().message().find("HTTP 422 bad_state: installed set is odd"), std::string::npos)
      << r.error().message();
  SetMode("garbage");
  r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);
  EXPECT_NE(r.error().message().find("'assignment'"), std::string::npos);
  SetMode("bad-next");
  r = api->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("next_checkin_seconds"), std::string::npos);

  // A stranger is refused by the server; a wrong key gets bad_signature.
  SetMode("ok");
  const auto stranger_id = trust::ApplianceIdentity::Generate();
  auto stranger = Api(stranger_id);
  r = stranger->Checkin(Installed(), "1");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound) << r.error().message();
  EXPECT_NE(r.error().message().find("unknown_appliance"), std::string::npos);

  // Unreachable.
  UpdaterEndpoint e;
  e.base_url = "http://127.0.0.1:1";
  auto dead = MakeUpdaterApi(e, identity_, SystemClock::Instance(), SystemRandom::Instance(), *http_);
  ASSERT_TRUE(dead.ok());
  auto d = (*dead)->Checkin(Installed(), "1");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), Errc::kIo);

  for (const std::string bad : {"ftp://x", "http://x/", "http://x?y=1", "x"}) {
    UpdaterEndpoint be;
    be.base_url = bad;
    EXPECT_FALSE(MakeUpdaterApi(be, identity_, SystemClock::Instance(), SystemRandom::Instance(), *http_).ok()) << bad;
  }
}

TEST(UpdaterSignatureTest, ServerRejectsTamperedSignature) {
  // The verifier the updater runs refuses a request whose body changed after signing.
  auto id = trust::ApplianceIdentity::Generate();
  trust::RequestToSign req{"POST", "/api/v1/checkin", "{}"};
  auto sig = trust::SignRequest(id, req, SystemClock::Instance(), SystemRandom::Instance());
  ASSERT_TRUE(sig.ok());
  trust::ReplayCache cache(10);
  trust::RequestVerifier verifier(SystemClock::Instance(), cache);
  trust::RequestToSign tampered{"POST", "/api/v1/checkin", "{ }"};
  EXPECT_FALSE(verifier.Verify(tampered, *sig, id.public_key()).ok());
  EXPECT_TRUE(verifier.Verify(req, *sig, id.public_key()).ok());
}

AgentEvent Event(int i) {
  AgentEvent e;
  char buf[40];
  std::snprintf(buf, sizeof buf, "%032x", i + 1);
  e.id = buf;
  e.type = "install";
  e.name = "software";
  e.version = "7.1.0";
  e.at = *ParseTimestamp("2030-01-01T00:00:00Z");
  return e;
}

TEST_F(UpdaterApiTest, EventsAreBatchedAndIdempotent) {
  auto api = Api(identity_);
  std::vector<AgentEvent> events;
  for (int i = 0; i < 150; ++i) events.push_back(Event(i));
  events[3].detail = Json{{"step", 2}};
  events[149].log_tail = std::string(70 * 1024, 'l') + "\xff" + "END";
  auto sent = api->SendEvents(events);
  ASSERT_TRUE(sent.ok()) << sent.error().message();
  EXPECT_EQ(*sent, 150u);
  EXPECT_EQ(event_batches_, 2);
  EXPECT_EQ(ids_.size(), 150u);
  const std::string tail = last_event_["log_tail"].get<std::string>();
  EXPECT_LE(tail.size(), 64u * 1024 + 2);
  EXPECT_TRUE(tail.ends_with("END"));
  // Sent again (e.g. the answer was lost): all duplicates, still counted as delivered.
  auto again = api->SendEvents(events);
  ASSERT_TRUE(again.ok());
  EXPECT_EQ(*again, 150u);
  EXPECT_EQ(ids_.size(), 150u);
}

TEST_F(UpdaterApiTest, InvalidEventsAreRefusedBeforeSending) {
  auto api = Api(identity_);
  std::vector<AgentEvent> events = {Event(0), Event(1)};
  events[1].id = "ABC";
  auto r = api->SendEvents(events);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(r.error().message().find("event 1"), std::string::npos);
  events[1] = Event(1);
  events[1].type = "reboot";
  EXPECT_FALSE(api->SendEvents(events).ok());
  events[1] = Event(1);
  events[1].detail = Json{{"big", std::string(17 * 1024, 'x')}};
  EXPECT_FALSE(api->SendEvents(events).ok());
  EXPECT_EQ(event_batches_, 0);
  auto empty = api->SendEvents({});
  ASSERT_TRUE(empty.ok());
  EXPECT_EQ(*empty, 0u);
}

}  // namespace
}  // namespace upkeep::agent
