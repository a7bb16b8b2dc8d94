// The server-facing upk commands (repo bootstrap, publish, yank, channel, rollout, appliance,
// audit, token), in two layers:
//  - the documents they build (server_requests.hpp) and the error mapping, without a server;
//  - the whole commands through upk::Main against FakeUpdater, a net::Server on loopback that
//    speaks the operator API (docs/updater-api.md) with just enough logic to check what upk sends
//    (signatures against the root it was given, versions, blob digests, the sealed content key
//    opened with the fake keyserver's content key and the blob decrypted back to the package),
//    and to answer with any error. The real updater is exercised by tests/updater/upk_publish_test.
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>

#include "api_client.hpp"
#include "server_requests.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {
namespace {

namespace fs = std::filesystem;
using packages::PrivateKey;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "upk-server-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& p) const { return path_ / p; }

 private:
  fs::path path_;
};

void WriteFile(const fs::path& p, const std::string& data, unsigned mode = 0644) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
  ::chmod(p.c_str(), mode);
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

struct UpkRun {
  int code;
  std::string out, err;
  Json json() const {
    auto j = ParseJson(out);
    EXPECT_TRUE(j.ok()) << out;
    return j.ok() ? *j : Json();
  }
};

UpkRun Upk(std::vector<std::string> args) {
  args.insert(args.begin(), "upk");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  int code = upk::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

Expected<Bytes> Base64Field(const Json& value) { return Base64Decode(value.get<std::string>(), 1 << 20); }

// ---------------------------------------------------------------------------------------------
// Layer 1: documents and error mapping

class RequestsTest : public ::testing::Test {
 protected:
  PrivateKey root1_ = PrivateKey::GenerateEd25519(), root2_ = PrivateKey::GenerateEd25519();
  PrivateKey targets_ = PrivateKey::GenerateEd25519(), snapshot_ = PrivateKey::GenerateEd25519(),
             timestamp_ = PrivateKey::GenerateEd25519();
  SysTime now_ = *ParseTimestamp("2026-11-25T16:00:00Z");
};

TEST_F(RequestsTest, BootstrapRootListsOfflineAndOnlineKeysAndVerifies) {
  auto root = BuildBootstrapRoot({root1_.public_key(), root2_.public_key()}, 2, {targets_.public_key()},
                                 snapshot_.public_key(), timestamp_.public_key(), now_ + std::chrono::days(365));
  ASSERT_TRUE(root.ok()) << root.error().message();
  EXPECT_EQ((*root)["_type"], "root");
  EXPECT_EQ((*root)["version"], 1);
  EXPECT_EQ((*root)["consistent_snapshot"], true);
  EXPECT_EQ((*root)["expires"], "2027-11-25T16:00:00Z");
  EXPECT_EQ((*root)["keys"].size(), 5u);
  EXPECT_EQ((*root)["roles"]["root"]["threshold"], 2);
  EXPECT_EQ((*root)["roles"]["root"]["keyids"].size(), 2u);
  EXPECT_EQ((*root)["roles"]["snapshot"]["keyids"][0], snapshot_.keyid());
  EXPECT_EQ((*root)["roles"]["timestamp"]["keyids"][0], timestamp_.keyid());
  EXPECT_EQ((*root)["roles"]["targets"]["keyids"][0], targets_.keyid());

  // Signed by both root keys it verifies as root; by one it does not (threshold 2).
  auto both = tuf::SignMetadata(*root, {root1_, root2_});
  ASSERT_TRUE(both.ok());
  EXPECT_TRUE(tuf::VerifyRoleSignatures(*both, *root, tuf::Role::kRoot).ok());
  auto one = tuf::SignMetadata(*root, {root1_});
  EXPECT_FALSE(tuf::VerifyRoleSignatures(*one, *root, tuf::Role::kRoot).ok());
  // The empty targets v1 verifies under the targets role.
  auto targets = tuf::SignMetadata(BuildEmptyTargets(now_), {targets_});
  EXPECT_TRUE(tuf::VerifyRoleSignatures(*targets, *root, tuf::Role::kTargets).ok());
  EXPECT_EQ((*targets)["signed"]["targets"], Json::object());
}

TEST_F(RequestsTest, BootstrapRootRefusesBadThresholdsAndMissingKeys) {
  auto three = BuildBootstrapRoot({root1_.public_key(), root1_.public_key()}, 2, {targets_.public_key()},
                                  snapshot_.public_key(), timestamp_.public_key(), now_);
  ASSERT_FALSE(three.ok());
  EXPECT_EQ(three.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(three.error().message().find("1 distinct root key"), std::string::npos) << three.error().message();
  EXPECT_FALSE(
      BuildBootstrapRoot({}, 1, {targets_.public_key()}, snapshot_.public_key(), timestamp_.public_key(), now_).ok());
  EXPECT_FALSE(
      BuildBootstrapRoot({root1_.public_key()}, 1, {}, snapshot_.public_key(), timestamp_.public_key(), now_).ok());
}

TEST_F(RequestsTest, BootstrapExpiresAcceptsRootAndTargetsOnly) {
  auto p = ParseBootstrapExpires({"root=730,targets=30"});
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->root, std::chrono::days(730));
  EXPECT_EQ(p->targets, std::chrono::days(30));
  auto repeated = ParseBootstrapExpires({"root=10", "targets=5"});
  ASSERT_TRUE(repeated.ok());
  EXPECT_EQ(repeated->targets, std::chrono::days(5));
  EXPECT_FALSE(ParseBootstrapExpires({"timestamp=1"}).ok());
  EXPECT_FALSE(ParseBootstrapExpires({"root=0"}).ok());
  EXPECT_FALSE(ParseBootstrapExpires({"root=ten"}).ok());
}

Json CurrentTargets() {
  return Json{
      {"_type", "targets"},
      {"spec_version", "1.0.31"},
      {"version", 4},
      {"expires", "2026-12-01T00:00:00Z"},
      {"targets", {{"base/base-1.0.0.upk.enc", {{"length", 10}, {"hashes", {{"sha256", std::string(64, 'a')}}}}}}},
      {"x_extra", "kept"}};
}

TEST_F(RequestsTest, PublishTargetsIsCurrentPlusOneTargetVersionPlusOne) {
  tuf::TargetInfo t;
  t.path = "site/site-5.1.0.upk.enc";
  t.length = 1234;
  t.sha256 = std::string(64, 'b');
  t.sha512 = std::string(128, 'c');
  packages::Manifest m;
  m.name = "site";
  m.version = *packages::Version::Parse("5.1.0");
  m.kind = packages::Kind::kSoftware;
  EXPECT_EQ(ReleaseTargetPath(m), "site/site-5.1.0.upk.enc");
  t.custom = ReleaseCustom(m);
  EXPECT_EQ(t.custom,
            (Json{{"upkeep", {{"name", "site"}, {"version", "5.1.0"}, {"kind", "software"}, {"encrypted", true}}}}));

  auto next = BuildPublishTargets(CurrentTargets(), t, now_ + std::chrono::days(90));
  ASSERT_TRUE(next.ok()) << next.error().message();
  EXPECT_EQ((*next)["version"], 5);
  EXPECT_EQ((*next)["expires"], "2027-02-23T16:00:00Z");
  EXPECT_EQ((*next)["x_extra"], "kept");
  EXPECT_EQ((*next)["targets"].size(), 2u);
  EXPECT_EQ((*next)["targets"]["base/base-1.0.0.upk.enc"], CurrentTargets()["targets"]["base/base-1.0.0.upk.enc"]);
  const Json& added = (*next)["targets"]["site/site-5.1.0.upk.enc"];
  EXPECT_EQ(added["length"], 1234);
  EXPECT_EQ(added["hashes"]["sha256"], std::string(64, 'b'));
  EXPECT_EQ(added["hashes"]["sha512"], std::string(128, 'c'));
  EXPECT_EQ(added["custom"]["upkeep"]["encrypted"], true);

  // Already listed: the release exists.
  t.path = "base/base-1.0.0.upk.enc";
  auto dup = BuildPublishTargets(CurrentTargets(), t, now_);
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kPolicy);
  // Not targets metadata.
  Json wrong = CurrentTargets();
  wrong["_type"] = "snapshot";
  t.path = "x/x-1.0.0.upk.enc";
  EXPECT_EQ(BuildPublishTargets(wrong, t, now_).error().code(), Errc::kParse);
  t.path = "../evil";
  EXPECT_FALSE(BuildPublishTargets(CurrentTargets(), t, now_).ok());
}

TEST_F(RequestsTest, YankTargetsIsCurrentMinusOneTarget) {
  auto next = BuildYankTargets(CurrentTargets(), "base/base-1.0.0.upk.enc", now_ + std::chrono::days(1));
  ASSERT_TRUE(next.ok());
  EXPECT_EQ((*next)["version"], 5);
  EXPECT_EQ((*next)["targets"], Json::object());
  EXPECT_EQ((*next)["x_extra"], "kept");
  auto missing = BuildYankTargets(CurrentTargets(), "site/site-1.0.0.upk.enc", now_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
}

TEST(WaveTest, PercentAndGroups) {
  EXPECT_EQ(*ParseWave("10"), (Json{{"percent", 10}}));
  EXPECT_EQ(*ParseWave("100%"), (Json{{"percent", 100}}));
  EXPECT_EQ(*ParseWave("group:lab"), (Json{{"groups", {"lab"}}}));
  EXPECT_EQ(*ParseWave("group:lab,eu"), (Json{{"groups", {"lab", "eu"}}}));
  for (const char* bad : {"0", "101", "-5", "ten", "", "10.5", "group:", "group:lab,", "5x"}) {
    EXPECT_FALSE(ParseWave(bad).ok()) << bad;
  }
}

TEST(ResponseErrorTest, MessageCodeStatusAndExitCodes) {
  auto err = [](int status, const std::string& code) {
    ApiResponse r;
    r.status = status;
    r.body = Json{{"error", {{"code", code}, {"message", "the message"}}}};
    return ResponseError(r);
  };
  EXPECT_EQ(err(409, "version_conflict").message(), "the message (version_conflict, HTTP 409)");
  EXPECT_EQ(err(409, "version_conflict").ExitCode(), 1);
  EXPECT_EQ(err(403, "forbidden").ExitCode(), 1);
  EXPECT_EQ(err(400, "verification_failed").ExitCode(), 1);
  EXPECT_EQ(err(400, "digest_mismatch").ExitCode(), 1);
  EXPECT_EQ(err(400, "targets_mismatch").ExitCode(), 1);
  EXPECT_EQ(err(413, "body_too_large").ExitCode(), 1);
  EXPECT_EQ(err(400, "invalid_field").ExitCode(), 2);
  EXPECT_EQ(err(401, "unauthenticated").ExitCode(), 2);
  EXPECT_EQ(err(404, "unknown_release").ExitCode(), 2);
  EXPECT_EQ(err(503, "unavailable").ExitCode(), 2);
  ApiResponse html;
  html.status = 502;
  html.raw = "<html>Bad Gateway</html>";
  EXPECT_EQ(ResponseError(html).message(), "<html>Bad Gateway</html> (http_error, HTTP 502)");
}

TEST(ApiClientTest, RefusesBadServerUrls) {
  auto make = [](std::string server) {
    ApiClientOptions o;
    o.server = std::move(server);
    return ApiClient::Create(o);
  };
  EXPECT_TRUE(make("http://127.0.0.1:8080/").ok());
  EXPECT_FALSE(make("").ok());
  EXPECT_FALSE(make("ftp://host/").ok());
  EXPECT_FALSE(make("https://user:secret@host/").ok());
  EXPECT_FALSE(make("https://host/?x=1").ok());
  EXPECT_FALSE(make("not a url").ok());
  EXPECT_FALSE(make("http://127.0.0.1:8080/")->cleartext_remote());
  EXPECT_TRUE(make("http://updater.example/")->cleartext_remote());
  EXPECT_FALSE(make("https://updater.example/")->cleartext_remote());
  EXPECT_EQ(EncodeComponent("a b/c%d~e"), "a%20b%2Fc%25d~e");
}

// ---------------------------------------------------------------------------------------------
// Layer 2: the commands against a fake updater

// Speaks enough of the operator API to check what upk sends. Thread-safe (one mutex).
class FakeUpdater {
 public:
  explicit FakeUpdater(const fs::path& dir, bool tls = false) : dir_(dir) {
    fs::create_directories(dir_ / "uploads");
    net::ServerOptions o;
    o.io_threads = 2;
    if (tls) {
      auto cert = net::testing::WriteSelfSignedCertificate(dir_);
      if (!cert) throw std::runtime_error(cert.error().message());
      cert_ = cert->certificate;
      o.tls = net::TlsOptions{cert->certificate, cert->private_key};
      o.endpoints[0].tls = true;
    }
    server_ = std::make_unique<net::Server>(o);
    Routes();
    if (auto s = server_->Start(); !s) throw std::runtime_error(s.error().message());
  }
  ~FakeUpdater() { server_->Stop(std::chrono::milliseconds(100)); }

  std::string url() const {
    return std::string(cert_.empty() ? "http" : "https") + "://127.0.0.1:" + std::to_string(server_->ports()[0]);
  }
  const fs::path& certificate() const { return cert_; }

  // The next request to "METHOD /path" (no query), or to a route starting with it, is answered
  // with this instead.
  void FailNext(const std::string& route, int status, const std::string& code, const std::string& message) {
    std::lock_guard lock(mu_);
    fail_[route] = net::Response::JsonError(status, code, message);
  }

  std::vector<std::string> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }
  std::string last_authorization() const {
    std::lock_guard lock(mu_);
    return authorization_;
  }
  Json last_body(const std::string& route) const {
    std::lock_guard lock(mu_);
    auto it = bodies_.find(route);
    return it == bodies_.end() ? Json() : it->second;
  }
  bool initialised() const {
    std::lock_guard lock(mu_);
    return !root_.is_null();
  }
  Json targets() const {
    std::lock_guard lock(mu_);
    return targets_;
  }
  fs::path blob(const std::string& sha256) const {
    std::lock_guard lock(mu_);
    auto it = blobs_.find(sha256);
    return it == blobs_.end() ? fs::path() : it->second;
  }
  const trust::ApplianceIdentity& content_identity() const { return content_; }
  const PrivateKey& snapshot_key() const { return snapshot_; }

 private:
  using Handler = std::function<net::Response(const net::Request&, const Json&)>;

  void Route(net::Method method, const std::string& pattern, Handler handler, net::RouteOptions options = {}) {
    auto s = server_->Handle(
        method, pattern,
        [this, handler](const net::Request& req) {
          const std::string route = std::string(req.method_name()) + " " + req.path();
          Json body;
          {
            std::lock_guard lock(mu_);
            requests_.push_back(std::string(req.method_name()) + " " + std::string(req.target()));
            authorization_ = std::string(req.Header("Authorization").value_or(""));
            if (!req.body().empty()) {
              auto parsed = ParseJson(req.body());
              body = parsed ? *parsed : Json("<not json>");
              bodies_[route] = body;
            }
            if (authorization_ != "Bearer " + std::string(kToken)) {
              return net::Response::JsonError(401, "unauthenticated", "no or unknown token");
            }
            // A rule matches its route or any route it is a prefix of ("PUT /api/v1/blobs/").
            auto it =
                std::find_if(fail_.begin(), fail_.end(), [&](const auto& f) { return route.rfind(f.first, 0) == 0; });
            if (it != fail_.end()) {
              net::Response r = it->second;
              fail_.erase(it);
              return r;
            }
          }
          return handler(req, body);
        },
        options);
    if (!s) throw std::runtime_error(s.error().message());
  }

  static net::Response Bad(const std::string& code, const std::string& message, int status = 400) {
    return net::Response::JsonError(status, code, message);
  }

  Json Versions() const {
    return Json{
        {"root", 1}, {"targets", targets_version_}, {"snapshot", targets_version_}, {"timestamp", targets_version_}};
  }

  void Routes() {
    Route(net::Method::kGet, "/api/v1/repository", [this](const net::Request&, const Json&) {
      std::lock_guard lock(mu_);
      Json body{{"initialised", !root_.is_null()},
                {"root", root_},
                {"targets", targets_},
                {"versions", root_.is_null() ? Json(nullptr) : Versions()},
                {"online_keys",
                 {{"snapshot", {{"keyid", snapshot_.keyid()}, {"public_key", snapshot_.public_key().ToJson()}}},
                  {"timestamp", {{"keyid", timestamp_.keyid()}, {"public_key", timestamp_.public_key().ToJson()}}}}},
                {"content_key",
                 {{"keyid", "ck1"},
                  {"x25519_public", ToHex(std::span<const std::uint8_t>(content_.public_key().x25519()))}}}};
      return net::Response::Json(200, body);
    });
    Route(net::Method::kPost, "/api/v1/repository/root", [this](const net::Request&, const Json& body) {
      std::lock_guard lock(mu_);
      if (!root_.is_null()) return Bad("version_conflict", "already bootstrapped", 409);
      const Json& root = body["root"];
      const Json& targets = body["targets"];
      if (!tuf::VerifyRoleSignatures(root, root["signed"], tuf::Role::kRoot).ok() ||
          !tuf::VerifyRoleSignatures(targets, root["signed"], tuf::Role::kTargets).ok()) {
        return Bad("verification_failed", "root or targets signatures do not verify");
      }
      if (root["signed"]["roles"]["snapshot"]["keyids"] != Json::array({snapshot_.keyid()}) ||
          root["signed"]["roles"]["timestamp"]["keyids"] != Json::array({timestamp_.keyid()}) ||
          root["signed"]["version"] != 1 || root["signed"]["consistent_snapshot"] != true ||
          targets["signed"]["version"] != 1) {
        return Bad("invalid_metadata", "not the root v1 / targets v1 the updater needs");
      }
      root_ = root;
      targets_ = targets;
      targets_version_ = 1;
      return net::Response::Json(200, {{"versions", Versions()}});
    });
    net::RouteOptions upload;
    upload.body_to_file = dir_ / "uploads";
    upload.max_body_bytes = std::size_t{1} << 30;
    Route(
        net::Method::kPut, "/api/v1/blobs/sha256/{hex}",
        [this](const net::Request& req, const Json&) {
          const auto& file = req.body_file();
          const std::string hex(req.PathParam("hex"));
          if (!file || file->sha256_hex != hex) return Bad("digest_mismatch", "the blob's sha256 is not " + hex);
          std::lock_guard lock(mu_);
          const fs::path kept = dir_ / ("blob-" + hex);
          std::error_code ec;
          fs::rename(file->path, kept, ec);
          blobs_[hex] = kept;
          return net::Response::Json(201, {{"sha256", hex}, {"length", file->size}, {"created", true}});
        },
        upload);
    Route(net::Method::kPost, "/api/v1/releases", [this](const net::Request&, const Json& body) {
      std::lock_guard lock(mu_);
      if (auto s = CheckNextTargets(body["targets"]); !s) return Bad("verification_failed", s.error().message());
      const std::string path = body["target_path"];
      const Json& added = body["targets"]["signed"]["targets"][path];
      auto blob = blobs_.find(added["hashes"]["sha256"].get<std::string>());
      if (blob == blobs_.end()) return Bad("blob_missing", "no blob " + added["hashes"]["sha256"].get<std::string>());
      if (fs::file_size(blob->second) != added["length"].get<std::uint64_t>()) return Bad("digest_mismatch", "length");
      targets_ = body["targets"];
      targets_version_++;
      const Json& custom = added["custom"]["upkeep"];
      Json release{{"name", custom["name"]},       {"version", custom["version"]},
                   {"kind", custom["kind"]},       {"target_path", path},
                   {"length", added["length"]},    {"sha256", added["hashes"]["sha256"]},
                   {"channels", body["channels"]}, {"yanked_at", nullptr}};
      releases_[custom["name"].get<std::string>() + "/" + custom["version"].get<std::string>()] = release;
      return net::Response::Json(201, {{"release", release}, {"versions", Versions()}});
    });
    Route(net::Method::kGet, "/api/v1/releases/{name}/{version}", [this](const net::Request& req, const Json&) {
      std::lock_guard lock(mu_);
      auto it = releases_.find(std::string(req.PathParam("name")) + "/" + std::string(req.PathParam("version")));
      if (it == releases_.end()) return Bad("unknown_release", "no such release", 404);
      return net::Response::Json(200, {{"release", it->second}});
    });
    Route(net::Method::kPost, "/api/v1/releases/{name}/{version}/yank",
          [this](const net::Request& req, const Json& body) {
            std::lock_guard lock(mu_);
            auto it = releases_.find(std::string(req.PathParam("name")) + "/" + std::string(req.PathParam("version")));
            if (it == releases_.end()) return Bad("unknown_release", "no such release", 404);
            if (!body["reason"].is_string() || body["reason"].get<std::string>().empty()) {
              return Bad("invalid_field", "field 'reason' must not be empty");
            }
            if (auto s = CheckNextTargets(body["targets"]); !s) return Bad("verification_failed", s.error().message());
            Json expected = targets_["signed"]["targets"];
            expected.erase(it->second["target_path"].get<std::string>());
            if (body["targets"]["signed"]["targets"] != expected)
              return Bad("targets_mismatch", "not current minus the release");
            targets_ = body["targets"];
            targets_version_++;
            it->second["yanked_at"] = "2026-11-25T17:00:00Z";
            it->second["yank_reason"] = body["reason"];
            return net::Response::Json(200, {{"release", it->second}, {"versions", Versions()}});
          });
    Route(net::Method::kGet, "/api/v1/channels", [](const net::Request&, const Json&) {
      return net::Response::Json(200, {{"channels",
                                        {{{"name", "stable"},
                                          {"description", "everyone"},
                                          {"releases", {{{"name", "tool"}, {"version", "2.3.4"}}}}}}}});
    });
    Route(net::Method::kPost, "/api/v1/channels", [](const net::Request&, const Json& body) {
      return net::Response::Json(201, {{"channel", {{"name", body["name"]}}}});
    });
    Route(net::Method::kPost, "/api/v1/channels/{channel}/releases", [](const net::Request&, const Json&) {
      return net::Response::Json(200, {{"added", true}});
    });
    Route(net::Method::kPost, "/api/v1/rollouts", [](const net::Request&, const Json& body) {
      Json r = body;
      r["id"] = 7;
      r["state"] = "scheduled";
      return net::Response::Json(201, {{"rollout", r}});
    });
    Route(net::Method::kGet, "/api/v1/rollouts/{id}", [](const net::Request&, const Json&) {
      return net::Response::Json(200, {{"rollout",
                                        {{"id", 7},
                                         {"name", "tool"},
                                         {"version", "2.3.4"},
                                         {"channel", "stable"},
                                         {"state", "active"},
                                         {"current_wave", 1},
                                         {"success_threshold", 95},
                                         {"error_threshold", 5},
                                         {"min_wave_members", 1},
                                         {"waves",
                                          {{{"index", 0},
                                            {"groups", {"lab"}},
                                            {"opened_at", "2026-11-25T10:00:00Z"},
                                            {"members", 4},
                                            {"succeeded", 4},
                                            {"failed", 0}},
                                           {{"index", 1},
                                            {"percent", 10},
                                            {"opened_at", "2026-11-25T12:00:00Z"},
                                            {"members", 20},
                                            {"succeeded", 11},
                                            {"failed", 1}}}}}}});
    });
    Route(net::Method::kPost, "/api/v1/rollouts/{id}/pause", [](const net::Request&, const Json&) {
      return net::Response::Json(200, {{"rollout", {{"id", 7}, {"state", "paused"}}}});
    });
    Route(net::Method::kGet, "/api/v1/appliances/{id}", [](const net::Request& req, const Json&) {
      return net::Response::Json(
          200, {{"appliance",
                 {{"appliance_id", std::string(req.PathParam("id"))},
                  {"customer", "ACME"},
                  {"channel", "stable"},
                  {"groups", {"lab"}},
                  {"status", "ok"},
                  {"installed", {{"base", "2.0.0"}, {"tool", "2.3.3"}}},
                  {"agent_version", "1.0.0"},
                  {"last_checkin", "2026-11-25T15:00:00Z"},
                  {"plan", {{"steps", {{{"name", "tool"}, {"version", "2.3.4"}, {"reason", "newest in stable"}}}}}},
                  {"events",
                   {{{"type", "failure"},
                     {"name", "tool"},
                     {"version", "2.3.4"},
                     {"at", "2026-11-25T14:00:00Z"},
                     {"log_tail", "step 1\nstep 2\nE: disk full"}}}}}}});
    });
    Route(net::Method::kPost, "/api/v1/tokens", [](const net::Request&, const Json&) {
      return net::Response::Json(
          201, {{"token", "upk_secret_token_value"}, {"id", 3}, {"expires_at", "2027-02-23T00:00:00Z"}});
    });
    Route(net::Method::kGet, "/api/v1/audit", [](const net::Request&, const Json&) {
      return net::Response::Json(200, {{"entries",
                                        {{{"id", 1},
                                          {"at", "2026-11-25T16:00:00Z"},
                                          {"actor", "token:ci"},
                                          {"action", "release.publish"},
                                          {"target", "tool 2.3.4"}}}}});
    });
  }

  // targets N+1 must be signed by the root's targets role and be version + 1 (caller holds mu_).
  Status CheckNextTargets(const Json& md) const {
    if (root_.is_null()) return Error(Errc::kPolicy, "not bootstrapped");
    UPK_TRY(tuf::VerifyRoleSignatures(md, root_["signed"], tuf::Role::kTargets));
    if (md["signed"]["version"] != targets_version_ + 1)
      return Error(Errc::kVerification, "version is not current + 1");
    return OkStatus();
  }

 public:
  static constexpr const char* kToken = "tok_0123456789abcdef";

 private:
  fs::path dir_;
  fs::path cert_;
  std::unique_ptr<net::Server> server_;
  PrivateKey snapshot_ = PrivateKey::GenerateEd25519(), timestamp_ = PrivateKey::GenerateEd25519();
  trust::ApplianceIdentity content_ = trust::ApplianceIdentity::Generate();
  mutable std::mutex mu_;
  Json root_, targets_;
  std::int64_t targets_version_ = 0;
  std::map<std::string, fs::path> blobs_;
  std::map<std::string, Json> releases_;
  std::map<std::string, net::Response> fail_;
  std::map<std::string, Json> bodies_;
  std::vector<std::string> requests_;
  std::string authorization_;
};

class UpkServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    // publish's temporary blob goes under $TMPDIR: point it at a directory we can check is left empty.
    fs::create_directories(tmpdir_);
    ::setenv("TMPDIR", tmpdir_.c_str(), 1);
    ::unsetenv("UPKEEP_TOKEN");
    ::unsetenv("UPKEEP_SERVER");
    server_ = std::make_unique<FakeUpdater>(tmp_ / "server");
    WriteFile(token_file_, std::string(FakeUpdater::kToken) + "\n", 0600);
    for (const auto& k : {root_key_, targets_key_, other_key_}) ASSERT_EQ(Upk({"keygen", k}).code, 0);
    WriteFile(tmp_ / "src/bin/tool", "#!/bin/sh\necho tool\n", 0755);
    WriteFile(tmp_ / "src/etc/tool.conf", std::string(300000, 'x'), 0644);
  }
  void TearDown() override { ::unsetenv("TMPDIR"); }

  std::vector<std::string> Common() const { return {"--server", server_->url(), "--token-file", token_file_}; }

  UpkRun Run(std::vector<std::string> args, bool json = false) {
    auto c = Common();
    args.insert(args.end(), c.begin(), c.end());
    if (json) args.insert(args.begin(), "--json");
    return Upk(args);
  }

  UpkRun Bootstrap() { return Run({"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_}); }

  std::string Pack(const std::string& version, const std::string& key) {
    const std::string out = (tmp_ / ("tool-" + version + ".upk")).string();
    UpkRun r = Upk({"pack", "--name", "tool", "--version", version, "--kind", "software", "--key", key, "--dir",
                    (tmp_ / "src").string(), "-o", out});
    EXPECT_EQ(r.code, 0) << r.err;
    return out;
  }

  bool TmpdirEmpty() const { return fs::is_empty(tmpdir_); }

  TempDir tmp_;
  fs::path tmpdir_ = tmp_ / "tmpdir";
  std::unique_ptr<FakeUpdater> server_;
  std::string token_file_ = (tmp_ / "publisher.token").string();
  std::string root_key_ = (tmp_ / "root.key").string();
  std::string targets_key_ = (tmp_ / "targets.key").string();
  std::string other_key_ = (tmp_ / "other.key").string();
};

TEST_F(UpkServerTest, BootstrapPostsSignedRootAndTargetsOnce) {
  UpkRun r = Bootstrap();
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("bootstrapped the updater's repository: root v1"), std::string::npos) << r.out;
  EXPECT_TRUE(server_->initialised());
  EXPECT_EQ(server_->last_authorization(), std::string("Bearer ") + FakeUpdater::kToken);

  UpkRun again = Bootstrap();
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already initialised"), std::string::npos) << again.err;

  // Usage: threshold above the keys, bad --expires: exit 2 before any request.
  const auto before = server_->requests().size();
  EXPECT_EQ(
      Run({"repo", "bootstrap", "--root-key", root_key_, "--root-threshold", "2", "--targets-key", targets_key_}).code,
      2);
  EXPECT_EQ(
      Run({"repo", "bootstrap", "--root-key", root_key_, "--targets-key", targets_key_, "--expires", "timestamp=1"})
          .code,
      2);
  EXPECT_EQ(server_->requests().size(), before) << "usage errors cost no round trip";
}

TEST_F(UpkServerTest, PublishEncryptsUploadsSealsAndSignsTargetsNPlusOne) {
  ASSERT_EQ(Bootstrap().code, 0);
  const std::string pkg = Pack("2.3.4", targets_key_);
  UpkRun r = Run({"publish", pkg, "--targets-key", targets_key_, "--channel", "stable", "--channel", "beta"});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("published tool 2.3.4 (software) as tool/tool-2.3.4.upk.enc"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("channels stable,beta"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("targets v2"), std::string::npos) << r.out;
  EXPECT_TRUE(TmpdirEmpty()) << "the temporary blob must be removed";

  const Json body = server_->last_body("POST /api/v1/releases");
  EXPECT_EQ(body["target_path"], "tool/tool-2.3.4.upk.enc");
  EXPECT_EQ(body["channels"], Json::array({"stable", "beta"}));
  const Json& t = body["targets"]["signed"];
  EXPECT_EQ(t["version"], 2);
  ASSERT_EQ(t["targets"].size(), 1u);
  const Json& target = t["targets"]["tool/tool-2.3.4.upk.enc"];
  EXPECT_EQ(target["custom"],
            (Json{{"upkeep", {{"name", "tool"}, {"version", "2.3.4"}, {"kind", "software"}, {"encrypted", true}}}}));

  // The blob the updater stored has the listed length and hashes...
  const fs::path blob = server_->blob(target["hashes"]["sha256"]);
  ASSERT_FALSE(blob.empty());
  const std::string blob_bytes = ReadAll(blob);
  EXPECT_EQ(target["length"], blob_bytes.size());
  EXPECT_EQ(target["hashes"]["sha512"], Sha512Hex(blob_bytes));
  // ...the content key opens with the keyserver's content key and decrypts it to the package...
  auto key = trust::OpenContentKeyWith(body["sealed_content_key"].get<std::string>(),
                                       server_->content_identity().public_key().x25519(),
                                       server_->content_identity().x25519_secret());
  ASSERT_TRUE(key.ok()) << key.error().message();
  const fs::path plain = tmp_ / "decrypted.upk";
  ASSERT_TRUE(trust::DecryptFile(blob, plain, *key).ok());
  EXPECT_EQ(ReadAll(plain), ReadAll(pkg));
  // ...and the manifest and its signature are the package's own bytes.
  auto reader = packages::PackageReader::OpenFile(pkg);
  ASSERT_TRUE(reader.ok());
  auto manifest = Base64Field(body["manifest"]);
  ASSERT_TRUE(manifest.ok());
  EXPECT_EQ(std::string(manifest->begin(), manifest->end()), reader->manifest_bytes());
  auto sig = Base64Field(body["manifest_signature"]);
  ASSERT_TRUE(sig.ok());
  auto sigs = packages::ParseSignatureFile(std::string(sig->begin(), sig->end()));
  ASSERT_TRUE(sigs.ok());
  EXPECT_EQ(sigs->size(), 1u);

  // Publishing the same release again is refused locally, before encrypting or uploading.
  const auto puts = server_->requests().size();
  UpkRun again = Run({"publish", pkg, "--targets-key", targets_key_});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already published"), std::string::npos) << again.err;
  EXPECT_EQ(server_->requests().size(), puts + 1) << "only GET /api/v1/repository";

  // --json gives the server's answer.
  UpkRun json = Run({"publish", Pack("2.3.5", targets_key_), "--targets-key", targets_key_}, true);
  ASSERT_EQ(json.code, 0) << json.err;
  EXPECT_EQ(json.json()["release"]["version"], "2.3.5");
  EXPECT_EQ(json.json()["versions"]["targets"], 3);
}

// With stderr a terminal (run the test under `script`), publish draws verify/encrypt/hash/
// upload bars from a watcher thread and cpprestsdk's progress callback; otherwise this is the
// plain path writing its status lines to the real stderr.
TEST_F(UpkServerTest, PublishWithProgressOnTheRealStderr) {
  ASSERT_EQ(Bootstrap().code, 0);
  const std::string pkg = Pack("4.0.0", targets_key_);
  std::vector<std::string> args = {"upk", "publish", pkg, "--targets-key", targets_key_};
  for (const auto& c : Common()) args.push_back(c);
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out;
  EXPECT_EQ(upk::Main(static_cast<int>(argv.size()), argv.data(), out, std::cerr), 0);
  EXPECT_NE(out.str().find("published tool 4.0.0"), std::string::npos) << out.str();
  EXPECT_TRUE(TmpdirEmpty());
}

TEST_F(UpkServerTest, PublishRefusesPackagesAndKeysTheRootDoesNotTrust) {
  ASSERT_EQ(Bootstrap().code, 0);
  // A package signed by another key does not verify against the targets key.
  UpkRun foreign = Run({"publish", Pack("1.0.0", other_key_), "--targets-key", targets_key_});
  EXPECT_EQ(foreign.code, 1) << foreign.err;
  // A targets key that is not the root's: named, nothing uploaded.
  UpkRun wrong = Run({"publish", Pack("1.0.1", other_key_), "--targets-key", other_key_});
  EXPECT_EQ(wrong.code, 1);
  EXPECT_NE(wrong.err.find("--targets-key " + other_key_), std::string::npos) << wrong.err;
  EXPECT_NE(wrong.err.find("not a targets key"), std::string::npos) << wrong.err;
  for (const auto& req : server_->requests()) EXPECT_EQ(req.rfind("PUT", 0), std::string::npos) << req;
  EXPECT_TRUE(TmpdirEmpty());
}

TEST_F(UpkServerTest, PublishVersionConflictIsReportedAndCleansUp) {
  ASSERT_EQ(Bootstrap().code, 0);
  server_->FailNext("POST /api/v1/releases", 409, "version_conflict", "targets version 2 is taken");
  UpkRun r = Run({"publish", Pack("2.3.4", targets_key_), "--targets-key", targets_key_});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("upk: error: targets version 2 is taken (version_conflict, HTTP 409)"), std::string::npos)
      << r.err;
  EXPECT_NE(r.err.find("someone else changed the updater's targets"), std::string::npos) << r.err;
  EXPECT_TRUE(TmpdirEmpty());
  // With --json: the server's error body with the status.
  server_->FailNext("POST /api/v1/releases", 409, "version_conflict", "taken");
  UpkRun j = Run({"publish", Pack("2.3.6", targets_key_), "--targets-key", targets_key_}, true);
  EXPECT_EQ(j.code, 1);
  EXPECT_EQ(j.json()["error"]["code"], "version_conflict");
  EXPECT_EQ(j.json()["status"], 409);
  EXPECT_TRUE(TmpdirEmpty());
}

TEST_F(UpkServerTest, UploadRefusedByTheServerStopsThePublish) {
  ASSERT_EQ(Bootstrap().code, 0);
  server_->FailNext("PUT /api/v1/blobs/sha256/", 400, "digest_mismatch", "the blob's sha256 differs");
  UpkRun r = Run({"publish", Pack("2.3.4", targets_key_), "--targets-key", targets_key_});
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.err.find("(digest_mismatch, HTTP 400)"), std::string::npos) << r.err;
  for (const auto& req : server_->requests()) EXPECT_NE(req, "POST /api/v1/releases");
  EXPECT_TRUE(TmpdirEmpty());
  // Not bootstrapped: a clear message, exit 1.
  FakeUpdater fresh(tmp_ / "fresh");
  UpkRun nb = Upk({"publish", Pack("2.3.7", targets_key_), "--targets-key", targets_key_, "--server", fresh.url(),
                   "--token-file", token_file_});
  EXPECT_EQ(nb.code, 1);
  EXPECT_NE(nb.err.find("run 'upk repo bootstrap' first"), std::string::npos) << nb.err;
  EXPECT_TRUE(TmpdirEmpty());
}

TEST_F(UpkServerTest, YankSignsTargetsWithoutTheRelease) {
  ASSERT_EQ(Bootstrap().code, 0);
  ASSERT_EQ(Run({"publish", Pack("2.3.4", targets_key_), "--targets-key", targets_key_}).code, 0);
  UpkRun r = Run({"yank", "tool", "2.3.4", "--targets-key", targets_key_, "--reason", "breaks LDAP"});
  ASSERT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("yanked tool 2.3.4 (tool/tool-2.3.4.upk.enc); targets v3"), std::string::npos) << r.out;
  const Json body = server_->last_body("POST /api/v1/releases/tool/2.3.4/yank");
  EXPECT_EQ(body["reason"], "breaks LDAP");
  EXPECT_EQ(body["targets"]["signed"]["version"], 3);
  EXPECT_EQ(body["targets"]["signed"]["targets"], Json::object());

  EXPECT_EQ(Run({"yank", "tool", "2.3.4", "--targets-key", targets_key_}).code, 2) << "--reason is required";
  UpkRun again = Run({"yank", "tool", "2.3.4", "--targets-key", targets_key_, "--reason", "x"});
  EXPECT_EQ(again.code, 1);
  EXPECT_NE(again.err.find("already yanked"), std::string::npos) << again.err;
  UpkRun unknown = Run({"yank", "tool", "9.9.9", "--targets-key", targets_key_, "--reason", "x"});
  EXPECT_EQ(unknown.code, 2);
  EXPECT_NE(unknown.err.find("(unknown_release, HTTP 404)"), std::string::npos) << unknown.err;
}

TEST_F(UpkServerTest, TokenComesFromFileOrEnvironmentAndNeverShows) {
  UpkRun none = Upk({"channel", "list", "--server", server_->url()});
  EXPECT_EQ(none.code, 2);
  EXPECT_NE(none.err.find("--token-file"), std::string::npos);
  EXPECT_TRUE(server_->requests().empty());

  ::setenv("UPKEEP_TOKEN", FakeUpdater::kToken, 1);
  ::setenv("UPKEEP_SERVER", server_->url().c_str(), 1);
  UpkRun env = Upk({"channel", "list"});
  ::unsetenv("UPKEEP_TOKEN");
  ::unsetenv("UPKEEP_SERVER");
  ASSERT_EQ(env.code, 0) << env.err;
  EXPECT_NE(env.out.find("stable"), std::string::npos);
  EXPECT_NE(env.out.find("tool-2.3.4"), std::string::npos);

  WriteFile(tmp_ / "bad.token", "wrong-token\n", 0600);
  UpkRun bad = Upk({"channel", "list", "--server", server_->url(), "--token-file", (tmp_ / "bad.token").string()});
  EXPECT_EQ(bad.code, 2);
  EXPECT_NE(bad.err.find("(unauthenticated, HTTP 401)"), std::string::npos) << bad.err;
  EXPECT_EQ(bad.err.find("wrong-token"), std::string::npos) << "the token must never be printed";

  WriteFile(tmp_ / "evil.token", "abc\r\nX-Injected: 1\n", 0600);
  UpkRun evil = Upk({"channel", "list", "--server", server_->url(), "--token-file", (tmp_ / "evil.token").string()});
  EXPECT_EQ(evil.code, 2);
  EXPECT_EQ(evil.err.find("abc"), std::string::npos) << evil.err;

  WriteFile(tmp_ / "shared.token", std::string(FakeUpdater::kToken) + "\n", 0644);
  UpkRun shared =
      Upk({"channel", "list", "--server", server_->url(), "--token-file", (tmp_ / "shared.token").string()});
  EXPECT_EQ(shared.code, 0) << shared.err;
  EXPECT_NE(shared.err.find("readable by other users"), std::string::npos) << shared.err;

  // No --token option exists: a secret on the command line is a usage error.
  EXPECT_EQ(Upk({"channel", "list", "--server", server_->url(), "--token", "x"}).code, 2);
}

TEST_F(UpkServerTest, ErrorsMapToExitCodes) {
  server_->FailNext("GET /api/v1/channels", 403, "forbidden", "needs the publisher role");
  UpkRun forbidden = Run({"channel", "list"});
  EXPECT_EQ(forbidden.code, 1);
  EXPECT_EQ(forbidden.err, "upk: error: needs the publisher role (forbidden, HTTP 403)\n");
  server_->FailNext("GET /api/v1/channels", 503, "unavailable", "database down");
  EXPECT_EQ(Run({"channel", "list"}).code, 2);
  // Nothing listening: a connection problem, exit 2.
  UpkRun refused = Upk({"channel", "list", "--server", "http://127.0.0.1:1", "--token-file", token_file_});
  EXPECT_EQ(refused.code, 2);
  EXPECT_NE(refused.err.find("127.0.0.1:1"), std::string::npos) << refused.err;
}

TEST_F(UpkServerTest, ChannelRolloutApplianceAuditTokenCommands) {
  UpkRun create = Run({"channel", "create", "beta", "--description", "early adopters"});
  ASSERT_EQ(create.code, 0) << create.err;
  EXPECT_EQ(server_->last_body("POST /api/v1/channels"), (Json{{"name", "beta"}, {"description", "early adopters"}}));
  EXPECT_EQ(Run({"channel", "create", "Bad_Name"}).code, 2);
  ASSERT_EQ(Run({"channel", "add", "beta", "tool", "2.3.4"}).code, 0);
  EXPECT_EQ(server_->last_body("POST /api/v1/channels/beta/releases"), (Json{{"name", "tool"}, {"version", "2.3.4"}}));

  UpkRun rollout = Run({"rollout",
                        "create",
                        "tool",
                        "2.3.4",
                        "--channel",
                        "stable",
                        "--wave",
                        "group:lab",
                        "--wave",
                        "10",
                        "--wave",
                        "100",
                        "--success-threshold",
                        "95",
                        "--error-threshold",
                        "5",
                        "--start-at",
                        "2026-12-01T08:00:00Z",
                        "--min-wave-members",
                        "3"});
  ASSERT_EQ(rollout.code, 0) << rollout.err;
  EXPECT_NE(rollout.out.find("created rollout 7 (scheduled)"), std::string::npos) << rollout.out;
  EXPECT_EQ(server_->last_body("POST /api/v1/rollouts"),
            (Json{{"name", "tool"},
                  {"version", "2.3.4"},
                  {"channel", "stable"},
                  {"waves", {{{"groups", {"lab"}}}, {{"percent", 10}}, {{"percent", 100}}}},
                  {"success_threshold", 95},
                  {"error_threshold", 5},
                  {"start_at", "2026-12-01T08:00:00Z"},
                  {"min_wave_members", 3}}));
  const auto before = server_->requests().size();
  EXPECT_EQ(Run({"rollout", "create", "tool", "2.3.4", "--channel", "stable", "--wave", "150", "--success-threshold",
                 "95", "--error-threshold", "5"})
                .code,
            2);
  EXPECT_EQ(Run({"rollout", "create", "tool", "2.3.4", "--channel", "stable", "--wave", "10", "--success-threshold",
                 "95", "--error-threshold", "5", "--start-at", "tomorrow"})
                .code,
            2);
  EXPECT_EQ(server_->requests().size(), before);

  UpkRun status = Run({"rollout", "status", "7"});
  ASSERT_EQ(status.code, 0) << status.err;
  EXPECT_NE(status.out.find("rollout 7: tool 2.3.4 in stable  state active"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("group:lab"), std::string::npos) << status.out;
  EXPECT_NE(status.out.find("10%"), std::string::npos) << status.out;
  UpkRun pause = Run({"rollout", "pause", "7", "--reason", "tickets"});
  ASSERT_EQ(pause.code, 0) << pause.err;
  EXPECT_EQ(server_->last_body("POST /api/v1/rollouts/7/pause"), (Json{{"reason", "tickets"}}));
  EXPECT_NE(pause.out.find("paused"), std::string::npos);

  UpkRun show = Run({"appliance", "show", "apl-kzdvvj2umnduyauf35o36k6kw462mujv"});
  ASSERT_EQ(show.code, 0) << show.err;
  EXPECT_NE(show.out.find("installed base-2.0.0 tool-2.3.3"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("tool 2.3.4  (newest in stable)"), std::string::npos) << show.out;
  EXPECT_NE(show.out.find("| E: disk full"), std::string::npos) << show.out;
  EXPECT_EQ(Run({"appliance", "set", "apl-x"}).code, 2) << "nothing to change";

  UpkRun audit = Run({"audit", "--limit", "5"});
  ASSERT_EQ(audit.code, 0) << audit.err;
  EXPECT_NE(audit.out.find("release.publish"), std::string::npos);
  EXPECT_EQ(server_->requests().back(), "GET /api/v1/audit?limit=5");

  UpkRun token = Run({"token", "create", "--name", "ci", "--role", "publisher", "--expires-days", "30"});
  ASSERT_EQ(token.code, 0) << token.err;
  EXPECT_EQ(token.out, "upk_secret_token_value\n") << "only the token on stdout";
  EXPECT_EQ(token.err.find("upk_secret_token_value"), std::string::npos);
  EXPECT_EQ(server_->last_body("POST /api/v1/tokens"),
            (Json{{"name", "ci"}, {"role", "publisher"}, {"expires_days", 30}}));
  EXPECT_EQ(Run({"token", "create", "--name", "ci", "--role", "root"}).code, 2);
}

TEST(UpkServerTlsTest, CaFileTrustsASelfSignedUpdater) {
  TempDir tmp;
  FakeUpdater server(tmp / "server", /*tls=*/true);
  WriteFile(tmp / "t", FakeUpdater::kToken, 0600);
  UpkRun trusted = Upk({"channel", "list", "--server", server.url(), "--token-file", (tmp / "t").string(), "--ca-file",
                        server.certificate().string()});
  EXPECT_EQ(trusted.code, 0) << trusted.err;
  UpkRun untrusted = Upk({"channel", "list", "--server", server.url(), "--token-file", (tmp / "t").string()});
  EXPECT_EQ(untrusted.code, 2);
  EXPECT_TRUE(server.requests().size() == 1) << "the untrusted connection never sent a request";
}

}  // namespace
}  // namespace upkeep::upk
