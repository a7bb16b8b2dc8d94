// The world the agent core tests run in (agent_core_test, agent_import_test): a vendor (TUF
// repository with consistent snapshots, encrypted releases, a director signing assignments) and
// an appliance in a temp dir behind FaultFs, with fakes for the updater API and HTTP.
#pragma once

#include "upkeep/agent/agent.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <iostream>
#include <map>
#include <set>

#include <stdlib.h>

#include "package_test_util.hpp"
#include "tuf_fetcher.hpp"
#include "upkeep/agent/fault_fs.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/trust/signed_document.hpp"
#include "upkeep/tuf/repository.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using packages::PrivateKey;
using packages::Version;
using packages::testing::ReadAll;
using packages::testing::TempDir;
using packages::testing::WriteFile;
using namespace std::chrono_literals;

#define ASSERT_OK(expr)                                            \
  do {                                                             \
    auto s_ = (expr);                                              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.error().message(); \
  } while (0)

inline Version V(const std::string& s) { return Version::Parse(s).value(); }

// Wednesday noon, UTC.
inline SysTime T0() { return ParseTimestamp("2026-06-03T12:00:00Z").value(); }

const char* kUpdater = "http://updater.test";

// Distinct, reproducible bytes on every call (operation ids, backup ids).
class CountingRandom final : public Random {
 public:
  Bytes Generate(std::size_t n) override {
    const std::string h = Sha256Hex("random " + std::to_string(counter_++));
    Bytes out(n);
    for (std::size_t i = 0; i < n; ++i) out[i] = static_cast<std::uint8_t>(h[i % h.size()] * 7 + i);
    return out;
  }

 private:
  std::uint64_t counter_ = 0;
};

class FakeSleeper final : public Sleeper {
 public:
  std::chrono::steady_clock::time_point Now() override { return now_; }
  void Sleep(std::chrono::nanoseconds d) override { now_ += d; }

 private:
  std::chrono::steady_clock::time_point now_{};
};

// A temp dir on tmpfs when there is one: FaultFs really fsyncs, and the crash tests run a few
// hundred installs, so a disk shared with builds would make them slow.
class WorldDir {
 public:
  WorldDir() {
    std::error_code ec;
    const fs::path base = fs::is_directory("/dev/shm", ec) ? fs::path("/dev/shm") : fs::temp_directory_path();
    std::string tmpl = (base / "upkeep-agent-core-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) != nullptr) path_ = tmpl;
    EXPECT_FALSE(path_.empty()) << "mkdtemp in " << base;
  }
  ~WorldDir() {
    std::error_code ec;
    if (!path_.empty()) fs::remove_all(path_, ec);
  }
  WorldDir(const WorldDir&) = delete;
  WorldDir& operator=(const WorldDir&) = delete;
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// One release as the vendor published it.
struct Release {
  std::string name;
  Version version;
  packages::Kind kind = packages::Kind::kSoftware;
  fs::path upk;   // plaintext, signed (provisioning)
  fs::path blob;  // encrypted, listed in TUF
  trust::AssignmentStep step;
  std::string content;  // image bytes (base) or app/version.txt (software)
};

struct ReleaseOptions {
  const PrivateKey* signer = nullptr;            // default: the TUF targets key
  std::optional<std::string> manifest_version;   // default: the release's own
  std::vector<packages::Requirement> requires_;
  std::string tag;                               // makes the target path unique
  std::optional<packages::Kind> kind;            // default: base for "base", else software
  bool client_upgrade = false;                   // the manifest's client_upgrade
  std::map<std::string, std::string> files;      // extra payload files (path -> content)
};

// The vendor side: keys, the TUF repository, releases, the director.
class Vendor {
 public:
  explicit Vendor(FakeClock& clock) : clock_(clock), repo_(dir_.path() / "repo", clock) {
    const auto seed = Bytes(32, 7);
    identity_.emplace(trust::ApplianceIdentity::FromSeed(seed).value());
    tuf::InitOptions init;
    init.root_keys = {root_};
    init.targets_keys = {targets_};
    init.snapshot_keys = {snapshot_};
    init.timestamp_keys = {timestamp_};
    init.expiry = Expiry();
    EXPECT_TRUE(repo_.Init(init).ok());
  }

  static tuf::ExpiryPolicy Expiry() {
    tuf::ExpiryPolicy e;
    e.timestamp = std::chrono::days(30);
    e.snapshot = std::chrono::days(30);
    return e;
  }

  const fs::path& dir() const { return dir_.path(); }
  fs::path repo_dir() const { return dir_.path() / "repo"; }
  const trust::ApplianceIdentity& identity() const { return *identity_; }
  const PrivateKey& director() const { return director_; }
  const PrivateKey& targets_key() const { return targets_; }
  // The health check of NAME VERSION fails while this file exists.
  fs::path HealthFailMarker(const std::string& name, const std::string& version) const {
    return dir_.path() / ("health-fail-" + name + "-" + version);
  }

  // Builds, encrypts and stages a release (Publish() makes it visible).
  Release& Add(const std::string& name, const std::string& version, ReleaseOptions o = {}) {
    const bool base = name == "base";
    Release r;
    r.name = name;
    r.version = V(version);
    r.kind = o.kind.value_or(base ? packages::Kind::kBase : packages::Kind::kSoftware);
    const std::string id = name + "-" + version + o.tag;
    const fs::path src = dir_.path() / ("src-" + id);
    const std::string health = "#!/bin/sh\nif [ -e '" + HealthFailMarker(name, version).string() +
                               "' ]; then echo 'service did not come up: port 8080 closed'; exit 3; fi\n"
                               "echo healthy $UPKEEP_PACKAGE $UPKEEP_VERSION\n";
    WriteFile(src / "bin" / "health", health, 0755);
    Json install = {{"health_check", {{"command", {"bin/health"}}, {"timeout_seconds", 20}}}};
    if (base) {
      r.content = "BASE IMAGE " + version + "\n" + std::string(3000, static_cast<char>('a' + r.version.major % 26));
      WriteFile(src / "rootfs.img", r.content);
      install["handler"] = "image";
      install["image"] = "rootfs.img";
    } else {
      r.content = "software " + version + "\n";
      WriteFile(src / "app" / "version.txt", r.content);
    }
    for (const auto& [path, content] : o.files) WriteFile(src / path, content);
    packages::PackSpec spec;
    spec.manifest = packages::testing::BaseManifest();
    spec.manifest.client_upgrade = o.client_upgrade;
    spec.manifest.name = name;
    spec.manifest.version = V(o.manifest_version.value_or(version));
    spec.manifest.kind = r.kind;
    spec.manifest.requires_ = o.requires_;
    spec.manifest.extra["install"] = install;
    spec.payload_dir = src;
    r.upk = dir_.path() / (id + ".upk");
    auto m = packages::WritePackage(spec, {o.signer ? *o.signer : targets_}, r.upk);
    EXPECT_TRUE(m.ok()) << m.error().message();
    const trust::ContentKey key = trust::ContentKey::Generate();
    r.blob = dir_.path() / (id + ".upk.enc");
    auto info = trust::EncryptFile(r.upk, r.blob, key);
    EXPECT_TRUE(info.ok()) << info.error().message();
    r.step.name = name;
    r.step.version = r.version;
    r.step.kind = r.kind;
    r.step.target_path = name + "/" + id + ".upk.enc";
    r.step.length = info->blob_bytes;
    r.step.sha256 = info->blob_sha256_hex;
    r.step.sealed_content_key = trust::SealContentKey(key, identity_->public_key());
    tuf::AddOptions ao;
    ao.target_path = r.step.target_path;
    auto added = repo_.Add(r.blob, ao);
    EXPECT_TRUE(added.ok()) << added.error().message();
    auto& slot = releases_[id];
    slot = std::move(r);
    return slot;
  }

  void Publish() {
    tuf::PublishKeys k;
    k.targets = {targets_};
    k.snapshot = {snapshot_};
    k.timestamp = {timestamp_};
    auto p = repo_.Publish(k, Expiry());
    ASSERT_TRUE(p.ok()) << p.error().message();
  }
  void RefreshTimestamp(std::optional<SysTime> expires = std::nullopt) {
    auto t = repo_.RefreshTimestamp({timestamp_}, Expiry(), expires);
    ASSERT_TRUE(t.ok()) << t.error().message();
  }

  Release& Get(const std::string& id) { return releases_.at(id); }

  // What the director assigns: every release of `channel` newer than what is installed.
  std::vector<std::string> channel;

  trust::Assignment AssignmentFor(const trust::InstalledSet& installed) const {
    trust::Assignment a;
    a.appliance_id = identity_->appliance_id();
    a.state_digest = trust::StateDigest(installed);
    a.issued = clock_.Now();
    a.expires = clock_.Now() + std::chrono::days(7);
    a.channel = "stable";
    for (const auto& id : channel) {
      const Release& r = releases_.at(id);
      auto it = installed.find(r.name);
      if (it == installed.end() || it->second < r.version) a.steps.push_back(r.step);
    }
    return a;
  }
  std::string Sign(const trust::Assignment& a, const PrivateKey* key = nullptr) const {
    auto doc = trust::SignedDocument::Sign(a.ToJson(), key ? *key : director_);
    EXPECT_TRUE(doc.ok()) << doc.error().message();
    return doc.ok() ? doc->Serialize() : "";
  }

 private:
  FakeClock& clock_;
  TempDir dir_;
  PrivateKey root_ = PrivateKey::GenerateEd25519();
  PrivateKey targets_ = PrivateKey::GenerateEd25519();
  PrivateKey snapshot_ = PrivateKey::GenerateEd25519();
  PrivateKey timestamp_ = PrivateKey::GenerateEd25519();
  PrivateKey director_ = PrivateKey::GenerateEd25519();
  std::optional<trust::ApplianceIdentity> identity_;
  tuf::RepositoryWriter repo_;
  std::map<std::string, Release> releases_;
};

// The updater's appliance API: assignments from the vendor; events counted by id.
class FakeApi final : public UpdaterApi {
 public:
  FakeApi(Vendor& vendor, const Clock& clock) : vendor_(vendor), clock_(clock) {}

  Expected<CheckinReply> Checkin(const trust::InstalledSet& installed, std::string_view) override {
    ++checkins;
    if (unreachable) return Error(Errc::kIo, "updater.test: connection refused");
    if (busy) return BusyError(30s);
    CheckinReply reply;
    reply.assignment = assign ? assign(installed) : vendor_.Sign(vendor_.AssignmentFor(installed));
    reply.server_time = clock_.Now();
    reply.next_checkin = 3600s;
    return reply;
  }

  Expected<std::size_t> SendEvents(const std::vector<AgentEvent>& batch) override {
    if (unreachable) return Error(Errc::kIo, "updater.test: connection refused");
    for (const auto& e : batch) {
      if (seen[e.id]++ == 0) events.push_back(e);
    }
    return batch.size();
  }

  std::size_t Duplicates() const {
    std::size_t n = 0;
    for (const auto& [id, count] : seen) n += static_cast<std::size_t>(count - 1);
    return n;
  }
  std::vector<std::string> Summary() const {  // "type name version"
    std::vector<std::string> out;
    for (const auto& e : events) out.push_back(e.type + " " + e.name + " " + e.version);
    return out;
  }

  std::function<std::string(const trust::InstalledSet&)> assign;
  bool unreachable = false;
  bool busy = false;
  int checkins = 0;
  std::vector<AgentEvent> events;  // first copy of each id
  std::map<std::string, int> seen;

 private:
  Vendor& vendor_;
  const Clock& clock_;
};

// Serves the repository directory under KUPDATER/repo/ (metadata and targets).
class FakeHttp final : public HttpClient {
 public:
  explicit FakeHttp(fs::path repo) : repo_(std::move(repo)) {}

  Expected<HttpResponse> Send(const HttpRequest& request, const BodySink* sink) override {
    ++requests;
    const std::string prefix = std::string(kUpdater) + "/repo/";
    HttpResponse resp;
    if (request.url.rfind(prefix, 0) != 0) {
      resp.status = 404;
      return resp;
    }
    const std::string rel = request.url.substr(prefix.size());
    std::string body;
    if (auto o = overrides.find(rel); o != overrides.end()) {
      body = o->second;
    } else {
      std::error_code ec;
      if (rel.find("..") != std::string::npos || !fs::is_regular_file(repo_ / rel, ec)) {
        resp.status = 404;
        resp.body = "not found";
        return resp;
      }
      body = ReadAll(repo_ / rel);
    }
    resp.status = 200;
    std::string range;
    for (const auto& [k, v] : request.headers) {
      if (k == "Range") range = v;
    }
    const std::string etag = "\"" + Sha256Hex(body).substr(0, 16) + "\"";
    if (range.rfind("bytes=", 0) == 0) {
      ++range_requests;
      const std::uint64_t from = std::stoull(range.substr(6));
      if (from < body.size()) {
        resp.status = 206;
        resp.headers.emplace_back("Content-Range", "bytes " + std::to_string(from) + "-" +
                                                       std::to_string(body.size() - 1) + "/" +
                                                       std::to_string(body.size()));
        body = body.substr(from);
      }
    }
    resp.headers.emplace_back("Content-Length", std::to_string(body.size()));
    resp.headers.emplace_back("ETag", etag);
    if (request.max_body_bytes && body.size() > request.max_body_bytes) {
      return Error(Errc::kLimit, request.url + ": body over " + std::to_string(request.max_body_bytes) + " bytes");
    }
    if (!sink) {
      resp.body = std::move(body);
      return resp;
    }
    if (sink->head) UPK_TRY(sink->head(resp));
    std::size_t sent = 0;
    while (sent < body.size()) {
      if (drop_after && sent >= *drop_after) {
        drop_after.reset();
        return Error(Errc::kIo, "connection closed after " + std::to_string(sent) + " of " +
                                    std::to_string(body.size()) + " body bytes");
      }
      const std::size_t n = std::min<std::size_t>(1024, body.size() - sent);
      if (sink->data) UPK_TRY(sink->data(std::string_view(body).substr(sent, n)));
      sent += n;
    }
    return resp;
  }

  std::map<std::string, std::string> overrides;  // path under /repo/ -> body served instead
  std::optional<std::size_t> drop_after;         // next body: the connection drops after N bytes
  int requests = 0;
  int range_requests = 0;

 private:
  fs::path repo_;
};

// One appliance: a temp dir with state, system root and configuration, the agent on FaultFs.
class World {
  WorldDir dir_;  // first: removed last
  Vendor& vendor_;
  FakeClock& clock_;

 public:
  // A fresh appliance, or (`from`) a copy of another world's directory, all of it durable.
  World(Vendor& vendor, FakeClock& clock, const fs::path* from = nullptr)
      : vendor_(vendor), clock_(clock), api(vendor, clock), http(vendor.repo_dir()) {
    config.state_dir = root() / "state";
    config.system_root = root() / "system";
    config.updater_url = kUpdater;
    config.backup.paths = {root() / "etc"};
    if (from) {
      fs::copy(*from, root(), fs::copy_options::recursive | fs::copy_options::copy_symlinks);
    } else {
      fs::create_directories(config.TufDir());
      fs::create_directories(config.system_root);
      WriteFile(root() / "etc" / "app.conf", "listen = 8080\n");
      fs::copy_file(vendor.repo_dir() / "metadata" / "1.root.json", config.TufDir() / "root.json");
    }
    ffs = std::make_unique<FaultFs>(root());
    tuf = MakeTufFetcher(http);
    Open();
  }
  ~World() { Close(); }

  fs::path root() const { return dir_.path() / "w"; }

  void Open() {
    auto s = Store::Open(*ffs, config.StoreDir());
    ASSERT_TRUE(s.ok()) << s.error().message();
    store = std::move(s).value();
    AgentDeps d;
    d.config = &config;
    d.fs = ffs.get();
    d.store = store.get();
    d.clock = &clock_;
    d.random = &random;
    d.identity = &vendor_.identity();
    d.director_key = &vendor_.director().public_key();
    d.api = &api;
    d.http = &http;
    d.tuf_fetcher = tuf.get();
    d.runner = &RealProcessRunner::Instance();
    d.sleeper = &sleeper;
    agent = std::make_unique<Agent>(std::move(d));
  }
  void Close() {
    agent.reset();
    store.reset();
  }

  void Provision(const std::string& id) {
    auto p = agent->Provision(vendor_.Get(id).upk);
    ASSERT_TRUE(p.ok()) << p.error().message();
  }
  void Check() {
    auto c = agent->Check();
    ASSERT_TRUE(c.ok()) << c.error().message();
  }

  std::optional<Version> Active(const std::string& name) {
    auto kind = name == "base" ? HandlerKind::kImage : HandlerKind::kFiles;
    auto h = MakeHandler(kind, *ffs, config.system_root, RealProcessRunner::Instance());
    EXPECT_TRUE(h.ok());
    auto a = (*h)->Active(name);
    EXPECT_TRUE(a.ok()) << a.error().message();
    return a.ok() ? *a : std::nullopt;
  }
  std::optional<Version> InstalledVersion(const std::string& name) {
    auto set = agent->Installed();
    auto it = set.find(name);
    if (it == set.end()) return std::nullopt;
    return it->second;
  }
  std::vector<Json> Journal() {
    auto r = store->Read("journal", 1, 100000);
    EXPECT_TRUE(r.ok());
    std::vector<Json> out;
    if (r.ok()) {
      for (auto& rec : *r) out.push_back(rec.value);
    }
    return out;
  }
  // The last journal record of `type` whose message contains `text` (null when none).
  Json JournalFind(const std::string& type, const std::string& text) {
    Json found;
    for (const auto& j : Journal()) {
      if (j.value("type", "") == type && j.value("message", "").find(text) != std::string::npos) found = j;
    }
    return found;
  }
  std::string JournalDump() {
    std::string s;
    for (const auto& j : Journal()) s += j.dump() + "\n";
    return s;
  }
  // The package area as a comparable snapshot (what "nothing changed on disk" means).
  std::map<std::string, std::string> SystemTree() const { return packages::testing::Snapshot(config.system_root); }

  AgentConfig config;
  std::unique_ptr<FaultFs> ffs;
  std::unique_ptr<Store> store;
  std::unique_ptr<Agent> agent;
  FakeApi api;
  FakeHttp http;
  std::unique_ptr<tuf::Fetcher> tuf;
  CountingRandom random;
  FakeSleeper sleeper;
};

// The releases every test uses.
inline void AddStandardReleases(Vendor& v) {
  v.Add("base", "1.0.0");
  v.Add("base", "2.0.0");
  v.Add("software", "7.0.0");
  v.Add("software", "7.1.0");
  ReleaseOptions needs_base2;
  needs_base2.requires_ = {{"base", V("2.0.0")}};
  v.Add("software", "8.0.0", needs_base2);
  v.Publish();
}

}  // namespace
}  // namespace upkeep::agent
