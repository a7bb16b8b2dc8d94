// "Distribute to cluster" in one process: three nodes, each a real agent in its own temp dir with
// its own identity, each behind a real TLS peer server on loopback; a vendor (TUF repository,
// encrypted releases, a director) writes a cluster bundle with one assignment per node. Covers
// staging on every node (nothing installed), node-by-node install to the new versions, a failing
// health check stopping the rollout at that node, the refusals of the peer API (unsigned,
// unknown node, bad signature, replayed, busy, tampered body), a bundle without an assignment for
// a node, and the cluster file's strict parsing.
#include "upkeep/agent/cluster.hpp"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <thread>

#include <sys/resource.h>
#include <stdlib.h>

#include "package_test_util.hpp"
#include "tuf_fetcher.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/trust/request_signing.hpp"
#include "upkeep/trust/signed_document.hpp"
#include "upkeep/tuf/repository.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using packages::PrivateKey;
using packages::Version;
using packages::testing::TempDir;
using packages::testing::WriteFile;

#define ASSERT_OK(expr)                                            \
  do {                                                             \
    const auto& s_ = (expr);                                              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.error().message(); \
  } while (0)

Version V(const std::string& s) { return Version::Parse(s).value(); }
SysTime T0() { return ParseTimestamp("2026-06-03T12:00:00Z").value(); }

// One release: plaintext package, its encrypted blob, its content key (sealed per node later).
struct Release {
  std::string name;
  Version version;
  fs::path upk, blob;
  std::optional<trust::ContentKey> key;
  trust::AssignmentStep step;  // without sealed_content_key
};

class Vendor {
 public:
  explicit Vendor(const Clock& clock) : repo_(dir_.path() / "repo", clock) {
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
  fs::path metadata_dir() const { return dir_.path() / "repo" / "metadata"; }
  const PrivateKey& director() const { return director_; }
  const fs::path& dir() const { return dir_.path(); }

  // A software package whose health check fails while $UPKEEP_ROOT/../fail-NAME-VERSION exists,
  // so one node can be made unhealthy on its own.
  Release& Add(const std::string& name, const std::string& version) {
    Release r;
    r.name = name;
    r.version = V(version);
    const std::string id = name + "-" + version;
    const fs::path src = dir_.path() / ("src-" + id);
    WriteFile(src / "bin" / "health",
              "#!/bin/sh\nif [ -e \"$UPKEEP_ROOT/../fail-$UPKEEP_PACKAGE-$UPKEEP_VERSION\" ]; then "
              "echo 'service did not come up'; exit 3; fi\necho healthy\n",
              0755);
    WriteFile(src / "app" / "version.txt", id + "\n");
    packages::PackSpec spec;
    spec.manifest = packages::testing::BaseManifest();
    spec.manifest.name = name;
    spec.manifest.version = r.version;
    spec.manifest.kind = packages::Kind::kSoftware;
    spec.manifest.extra["install"] = {{"health_check", {{"command", {"bin/health"}}, {"timeout_seconds", 20}}}};
    spec.payload_dir = src;
    r.upk = dir_.path() / (id + ".upk");
    auto m = packages::WritePackage(spec, {targets_}, r.upk);
    EXPECT_TRUE(m.ok()) << m.error().message();
    r.key = trust::ContentKey::Generate();
    r.blob = dir_.path() / (id + ".upk.enc");
    auto info = trust::EncryptFile(r.upk, r.blob, *r.key);
    EXPECT_TRUE(info.ok()) << info.error().message();
    r.step.name = name;
    r.step.version = r.version;
    r.step.kind = packages::Kind::kSoftware;
    r.step.target_path = name + "/" + id + ".upk.enc";
    r.step.length = info->blob_bytes;
    r.step.sha256 = info->blob_sha256_hex;
    tuf::AddOptions ao;
    ao.target_path = r.step.target_path;
    EXPECT_TRUE(repo_.Add(r.blob, ao).ok());
    auto& slot = releases_[id];
    slot = std::move(r);
    return slot;
  }
  Release& Get(const std::string& id) { return releases_.at(id); }

  void Publish() {
    tuf::PublishKeys k;
    k.targets = {targets_};
    k.snapshot = {snapshot_};
    k.timestamp = {timestamp_};
    auto p = repo_.Publish(k, Expiry());
    ASSERT_TRUE(p.ok()) << p.error().message();
  }

 private:
  TempDir dir_;
  PrivateKey root_ = PrivateKey::GenerateEd25519();
  PrivateKey targets_ = PrivateKey::GenerateEd25519();
  PrivateKey snapshot_ = PrivateKey::GenerateEd25519();
  PrivateKey timestamp_ = PrivateKey::GenerateEd25519();
  PrivateKey director_ = PrivateKey::GenerateEd25519();
  tuf::RepositoryWriter repo_;
  std::map<std::string, Release> releases_;
};

// No network at all: an air-gapped appliance.
class OfflineApi final : public UpdaterApi {
 public:
  Expected<CheckinReply> Checkin(const trust::InstalledSet&, std::string_view) override {
    return Error(Errc::kIo, "updater: no route to host");
  }
  Expected<std::size_t> SendEvents(const std::vector<AgentEvent>&) override {
    return Error(Errc::kIo, "updater: no route to host");
  }
};
class OfflineHttp final : public HttpClient {
 public:
  Expected<HttpResponse> Send(const HttpRequest& r, const BodySink*) override {
    return Error(Errc::kIo, r.url + ": no route to host");
  }
};
class NoSleep final : public Sleeper {
 public:
  std::chrono::steady_clock::time_point Now() override { return std::chrono::steady_clock::now(); }
  void Sleep(std::chrono::nanoseconds) override {}
};

// An Agent on an opened store (the store lock is held while the session lives).
class TestSession final : public AgentSession {
 public:
  Agent& agent() override { return *agent_; }
  std::unique_ptr<Store> store;
  std::unique_ptr<tuf::Fetcher> tuf;
  std::unique_ptr<Agent> agent_;
};

// One node: its own identity, state, system root, agent, service and peer server.
class Node {
  TempDir dir_;  // first: removed last

 public:
  Node(std::string name, const Vendor& vendor, const Clock& clock)
      : name_(std::move(name)), clock_(clock), identity_(trust::ApplianceIdentity::Generate()) {
    config.state_dir = dir_.path() / "state";
    config.system_root = dir_.path() / "system";
    config.updater_url = "https://updater.invalid";
    fs::create_directories(config.TufDir());
    fs::create_directories(config.DownloadDir());
    fs::create_directories(config.system_root);
    fs::copy_file(vendor.metadata_dir() / "1.root.json", config.TufDir() / "root.json");
    director_ = vendor.director().public_key();
    service = std::make_unique<NodeService>([this](bool ro) { return Open(ro); }, std::function<void(const std::string&)>{},
                                            [this]() -> Status { return before_install ? before_install() : OkStatus(); });
  }

  Expected<std::unique_ptr<AgentSession>> Open(bool read_only) {
    auto s = std::make_unique<TestSession>();
    if (read_only) {
      UPK_TRY_ASSIGN(s->store, Store::OpenReadOnly(RealFs::Instance(), config.StoreDir()));
    } else {
      UPK_TRY_ASSIGN(s->store, Store::Open(RealFs::Instance(), config.StoreDir()));
    }
    s->tuf = MakeTufFetcher(http_);
    AgentDeps d;
    d.config = &config;
    d.fs = &RealFs::Instance();
    d.store = s->store.get();
    d.clock = &clock_;
    d.random = &SystemRandom::Instance();
    d.identity = &identity_;
    d.director_key = &director_;
    d.api = &api_;
    d.http = &http_;
    d.tuf_fetcher = s->tuf.get();
    d.runner = &RealProcessRunner::Instance();
    d.sleeper = &sleeper_;
    s->agent_ = std::make_unique<Agent>(std::move(d));
    return std::unique_ptr<AgentSession>(std::move(s));
  }

  // Provisions the factory version and makes a download key; returns what the portal needs.
  void Provision(const fs::path& upk) {
    auto s = Open(false);
    ASSERT_OK(s);
    ASSERT_OK((*s)->agent().Provision(upk));
  }
  std::string DownloadKeyNonce() {
    auto s = Open(false);
    EXPECT_TRUE(s.ok());
    auto k = (*s)->agent().MakeDownloadKey(std::chrono::hours(72));
    EXPECT_TRUE(k.ok()) << k.error().message();
    return k.ok() ? k->nonce_hex : "";
  }
  trust::InstalledSet Installed() {
    auto s = Open(true);
    EXPECT_TRUE(s.ok());
    return s.ok() ? (*s)->agent().Installed() : trust::InstalledSet{};
  }
  std::optional<Version> VersionOf(const std::string& name) {
    auto set = Installed();
    auto it = set.find(name);
    return it == set.end() ? std::nullopt : std::optional(it->second);
  }
  std::map<std::string, std::string> SystemTree() const { return packages::testing::Snapshot(config.system_root); }
  void FailHealth(const std::string& name, const std::string& version) {
    WriteFile(dir_.path() / ("fail-" + name + "-" + version), "x");
  }

  const std::string& name() const { return name_; }
  const trust::ApplianceIdentity& identity() const { return identity_; }
  const fs::path& dir() const { return dir_.path(); }

  AgentConfig config;
  std::function<Status()> before_install;  // the relay drain hook (ClusterMain sets the real one)
  std::unique_ptr<NodeService> service;
  std::unique_ptr<PeerServer> server;

 private:
  std::string name_;
  const Clock& clock_;
  trust::ApplianceIdentity identity_;
  packages::PublicKey director_ = PrivateKey::GenerateEd25519().public_key();
  OfflineApi api_;
  OfflineHttp http_;
  NoSleep sleeper_;
};

class ClusterTest : public ::testing::Test {
 protected:
  void SetUp() override {
    vendor_.Add("software", "7.0.0");
    vendor_.Add("software", "7.1.0");
    vendor_.Add("software", "8.0.0");
    vendor_.Publish();
    if (HasFatalFailure()) return;
    auto cert = net::testing::WriteSelfSignedCertificate(certs_.path());
    ASSERT_OK(cert);
    cert_ = *cert;
    for (const char* n : {"alpha", "beta", "gamma"}) {
      nodes_.push_back(std::make_unique<Node>(n, vendor_, clock_));
      nodes_.back()->Provision(vendor_.Get("software-7.0.0").upk);
      if (HasFatalFailure()) return;
    }
    StartServers();
  }
  void TearDown() override {
    for (auto& n : nodes_) {
      if (n->server) n->server->Stop();
    }
  }

  ClusterConfig BaseConfig(const std::string& self, const std::vector<std::uint16_t>& ports) {
    Json nodes = Json::array();
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      nodes.push_back({{"name", nodes_[i]->name()},
                       {"url", "https://127.0.0.1:" + std::to_string(i < ports.size() ? ports[i] : 1)},
                       {"appliance_id", nodes_[i]->identity().appliance_id()},
                       {"public_key", nodes_[i]->identity().public_key().signing_key().ToJson()}});
    }
    Json j = {{"node", self},
              {"listen", "127.0.0.1:0"},
              {"tls_cert", cert_.certificate.string()},
              {"tls_key", cert_.private_key.string()},
              {"ca_file", cert_.certificate.string()},
              {"nodes", nodes}};
    auto c = ClusterConfig::FromJson(j, "/");
    EXPECT_TRUE(c.ok()) << c.error().message();
    return c.ok() ? *c : ClusterConfig{};
  }

  // Each node's server listens on an ephemeral port; the configs then name the real ports.
  void StartServers() {
    std::vector<std::uint16_t> ports;
    std::vector<ClusterConfig> first;
    for (auto& node : nodes_) first.push_back(BaseConfig(node->name(), {}));
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      server_configs_.push_back(std::make_unique<ClusterConfig>(first[i]));
      PeerServerOptions o;
      o.config = server_configs_.back().get();
      o.clock = &clock_;
      o.service = nodes_[i]->service.get();
      o.upload_dir = nodes_[i]->config.state_dir / "cluster-uploads";
      auto s = PeerServer::Start(o);
      ASSERT_OK(s);
      nodes_[i]->server = std::move(s).value();
      ports.push_back(nodes_[i]->server->port());
    }
    for (std::size_t i = 0; i < nodes_.size(); ++i) {
      // Only the node list's URLs change; the servers' configs are read per request (same ids).
      *server_configs_[i] = BaseConfig(nodes_[i]->name(), ports);
    }
    client_config_ = BaseConfig("alpha", ports);
  }

  // The portal's cluster bundle: one assignment per node (bound to its installed state and its
  // download key nonce, content keys sealed to it), the blobs once.
  fs::path WriteClusterBundle(const std::vector<std::string>& release_ids, const std::vector<Node*>& for_nodes,
                              const std::string& file = "cluster.upkb") {
    std::vector<bundle::EntrySource> entries;
    for (const auto& e : fs::directory_iterator(vendor_.metadata_dir())) {
      const std::string n = e.path().filename().string();
      if (n == "root.json" || n == "targets.json" || n == "snapshot.json") continue;
      bundle::EntrySource src;
      src.info.type = bundle::EntryType::kMetadata;
      src.info.name = n;
      src.data = packages::testing::ReadAll(e.path());
      entries.push_back(std::move(src));
    }
    std::vector<std::string> appliances;
    for (Node* node : for_nodes) {
      trust::Assignment a;
      a.appliance_id = node->identity().appliance_id();
      a.state_digest = trust::StateDigest(node->Installed());
      a.issued = clock_.Now();
      a.expires = clock_.Now() + std::chrono::days(30);
      a.nonce = node->DownloadKeyNonce();
      a.channel = "stable";
      for (const auto& id : release_ids) {
        trust::AssignmentStep step = vendor_.Get(id).step;
        step.sealed_content_key = trust::SealContentKey(*vendor_.Get(id).key, node->identity().public_key());
        a.steps.push_back(step);
      }
      auto doc = trust::SignedDocument::Sign(a.ToJson(), vendor_.director());
      EXPECT_TRUE(doc.ok());
      bundle::EntrySource src;
      src.info.type = bundle::EntryType::kAssignment;
      src.info.name = a.appliance_id;
      src.data = doc->Serialize();
      entries.push_back(std::move(src));
      appliances.push_back(a.appliance_id);
    }
    for (const auto& id : release_ids) {
      const Release& r = vendor_.Get(id);
      bundle::EntrySource src;
      src.info.type = bundle::EntryType::kBlob;
      src.info.name = r.step.sha256;
      src.info.length = r.step.length;
      src.info.sha256 = r.step.sha256;
      src.file = r.blob;
      entries.push_back(std::move(src));
    }
    const fs::path out = vendor_.dir() / file;
    auto h = bundle::WriteBundle(out, Sha256Hex(file).substr(0, 32), clock_.Now(), appliances, std::move(entries));
    EXPECT_TRUE(h.ok()) << h.error().message();
    return out;
  }

  std::unique_ptr<ClusterClient> Client(ClusterClientOptions o = {}) {
    return std::make_unique<ClusterClient>(client_config_, nodes_[0]->identity(), clock_, SystemRandom::Instance(),
                                           *nodes_[0]->service, std::move(o));
  }
  std::vector<Node*> All() {
    std::vector<Node*> v;
    for (auto& n : nodes_) v.push_back(n.get());
    return v;
  }

  // A raw signed (or not) request to node i's server, through the agent's HTTP client.
  HttpResponse Raw(std::size_t i, const std::string& method, const std::string& path, HeaderList headers,
                   const std::string& body = {}) {
    HttpClientOptions ho;
    ho.ca_file = cert_.certificate;
    auto http = MakeHttpClient(ho);
    EXPECT_TRUE(http.ok());
    HttpRequest r;
    r.method = method;
    r.url = client_config_.nodes[i].url + path;
    r.headers = std::move(headers);
    r.body = body;
    auto resp = (*http)->Send(r);
    EXPECT_TRUE(resp.ok()) << resp.error().message();
    return resp.ok() ? *resp : HttpResponse{};
  }
  HeaderList Signed(const trust::ApplianceIdentity& who, const std::string& method, const std::string& path) {
    trust::RequestToSign t;
    t.method = method;
    t.path_and_query = path;
    auto sig = trust::SignRequest(who, t, clock_, SystemRandom::Instance());
    EXPECT_TRUE(sig.ok());
    HeaderList h;
    for (auto& kv : sig->Headers()) h.push_back(kv);
    return h;
  }

  FakeClock clock_{T0()};
  Vendor vendor_{clock_};
  TempDir certs_;
  net::testing::CertificateFiles cert_;
  std::vector<std::unique_ptr<Node>> nodes_;
  std::vector<std::unique_ptr<ClusterConfig>> server_configs_;
  ClusterConfig client_config_;
};

TEST_F(ClusterTest, DistributeStagesEverywhereThenInstallsNodeByNode) {
  const fs::path bundle = WriteClusterBundle({"software-7.1.0", "software-8.0.0"}, All());
  std::vector<std::map<std::string, std::string>> before;
  for (auto& n : nodes_) before.push_back(n->SystemTree());
  std::map<std::string, std::uint64_t> progress;
  ClusterClientOptions o;
  o.progress = [&](const std::string& node, std::uint64_t done, std::uint64_t) { progress[node] = done; };
  auto client = Client(o);
  auto staged = client->Distribute(bundle);
  ASSERT_OK(staged);
  ASSERT_EQ(staged->size(), 3u);
  for (std::size_t i = 0; i < 3; ++i) {
    const NodeResult& r = (*staged)[i];
    EXPECT_EQ(r.node, nodes_[i]->name());
    EXPECT_TRUE(r.ok) << r.node << ": " << r.message;
    EXPECT_EQ(r.body.value("steps", Json::array()).size(), 2u) << r.body.dump();
    // Staged: nothing installed, nothing on disk changed.
    EXPECT_EQ(nodes_[i]->VersionOf("software"), V("7.0.0"));
    EXPECT_EQ(nodes_[i]->SystemTree(), before[i]);
  }
  EXPECT_EQ(progress.count("alpha"), 0u);  // this node stages locally
  EXPECT_EQ(progress["beta"], fs::file_size(bundle));
  EXPECT_EQ(progress["gamma"], fs::file_size(bundle));
  // The uploads are not left behind.
  for (auto& n : nodes_) {
    std::error_code ec;
    EXPECT_TRUE(fs::is_empty(n->config.state_dir / "cluster-uploads", ec) || ec) << n->name();
  }
  auto status = client->StatusAll();
  ASSERT_EQ(status.size(), 3u);
  for (const auto& s : status) {
    EXPECT_TRUE(s.ok) << s.message;
    EXPECT_EQ(s.body["installed"].value("software", ""), "7.0.0") << s.body.dump();
    EXPECT_EQ(s.body["staged"].size(), 2u) << s.body.dump();
    EXPECT_FALSE(s.body.value("busy", true));
  }

  RolloutResult rollout = client->InstallNodeByNode();
  EXPECT_FALSE(rollout.stopped_at.has_value()) << *rollout.stopped_at;
  ASSERT_EQ(rollout.installs.size(), 3u);
  for (const auto& r : rollout.installs) {
    EXPECT_TRUE(r.ok) << r.node << ": " << r.message;
    EXPECT_EQ(r.body["installed"], Json::array({"software 7.1.0", "software 8.0.0"})) << r.body.dump();
    EXPECT_EQ(r.body["versions"].value("software", ""), "8.0.0");
  }
  for (auto& n : nodes_) EXPECT_EQ(n->VersionOf("software"), V("8.0.0")) << n->name();
  ASSERT_EQ(rollout.status.size(), 3u);
  for (const auto& s : rollout.status) EXPECT_EQ(s.body["staged"].size(), 0u) << s.body.dump();
  // A second install has nothing left to do and is still healthy.
  EXPECT_TRUE(client->Install(client_config_.nodes[1]).ok);
}

TEST_F(ClusterTest, UnhealthyNodeStopsTheRolloutThere) {
  const fs::path bundle = WriteClusterBundle({"software-8.0.0"}, All());
  nodes_[1]->FailHealth("software", "8.0.0");
  auto client = Client();
  auto staged = client->Distribute(bundle);
  ASSERT_OK(staged);
  for (const auto& r : *staged) ASSERT_TRUE(r.ok) << r.node << ": " << r.message;
  const auto gamma_before = nodes_[2]->SystemTree();
  RolloutResult rollout = client->InstallNodeByNode();
  ASSERT_TRUE(rollout.stopped_at.has_value());
  EXPECT_EQ(*rollout.stopped_at, "beta");
  ASSERT_EQ(rollout.installs.size(), 2u);
  EXPECT_TRUE(rollout.installs[0].ok);
  EXPECT_FALSE(rollout.installs[1].ok);
  EXPECT_EQ(rollout.installs[1].http_status, 200);
  EXPECT_EQ(rollout.installs[1].body.value("outcome", ""), "failed") << rollout.installs[1].body.dump();
  EXPECT_NE(rollout.installs[1].message.find("failed"), std::string::npos) << rollout.installs[1].message;
  EXPECT_EQ(nodes_[0]->VersionOf("software"), V("8.0.0"));
  EXPECT_EQ(nodes_[1]->VersionOf("software"), V("7.0.0"));  // rolled back
  EXPECT_EQ(nodes_[2]->VersionOf("software"), V("7.0.0"));  // untouched
  EXPECT_EQ(nodes_[2]->SystemTree(), gamma_before);
  ASSERT_EQ(rollout.status.size(), 3u);
  EXPECT_EQ(rollout.status[2].body["staged"].size(), 1u);  // still staged there
}

// A node whose relay cannot be drained (sessions still open) installs nothing and stops the
// rollout there; the nodes before it are upgraded, the ones after it untouched.
TEST_F(ClusterTest, ANodeWhoseRelayDoesNotDrainStopsTheRolloutBeforeItChangesAnything) {
  const fs::path bundle = WriteClusterBundle({"software-8.0.0"}, All());
  int drained = 0;
  nodes_[0]->before_install = [&]() -> Status {
    ++drained;
    return OkStatus();
  };
  nodes_[1]->before_install = [] {
    return Status(Error(Errc::kPolicy, "relay drain: 2 session(s) still open after 600 s; install again once they ended"));
  };
  auto client = Client();
  auto staged = client->Distribute(bundle);
  ASSERT_OK(staged);
  const auto beta_before = nodes_[1]->SystemTree();
  RolloutResult rollout = client->InstallNodeByNode();
  ASSERT_TRUE(rollout.stopped_at.has_value());
  EXPECT_EQ(*rollout.stopped_at, "beta");
  EXPECT_EQ(drained, 1);
  ASSERT_EQ(rollout.installs.size(), 2u);
  EXPECT_FALSE(rollout.installs[1].ok);
  EXPECT_NE(rollout.installs[1].message.find("2 session(s) still open"), std::string::npos) << rollout.installs[1].message;
  EXPECT_EQ(nodes_[0]->VersionOf("software"), V("8.0.0"));
  EXPECT_EQ(nodes_[1]->VersionOf("software"), V("7.0.0"));
  EXPECT_EQ(nodes_[1]->SystemTree(), beta_before);
  EXPECT_EQ(nodes_[2]->VersionOf("software"), V("7.0.0"));
}

TEST_F(ClusterTest, BundleWithoutAssignmentForANodeIsReportedForThatNode) {
  const fs::path bundle = WriteClusterBundle({"software-7.1.0"}, {nodes_[0].get(), nodes_[1].get()});
  const auto gamma_before = nodes_[2]->SystemTree();
  auto staged = Client()->Distribute(bundle);
  ASSERT_OK(staged);
  ASSERT_EQ(staged->size(), 3u);
  EXPECT_TRUE((*staged)[0].ok) << (*staged)[0].message;
  EXPECT_TRUE((*staged)[1].ok) << (*staged)[1].message;
  const NodeResult& gamma = (*staged)[2];
  EXPECT_FALSE(gamma.ok);
  EXPECT_EQ(gamma.node, "gamma");
  EXPECT_EQ(gamma.http_status, 409);
  EXPECT_NE(gamma.message.find(nodes_[0]->identity().appliance_id()), std::string::npos) << gamma.message;
  EXPECT_EQ(nodes_[2]->SystemTree(), gamma_before);
  // The CLI-facing client says the same through the status: nothing staged on gamma.
  auto st = Client()->Status(client_config_.nodes[2]);
  EXPECT_EQ(st.body["staged"].size(), 0u) << st.body.dump();
}

TEST_F(ClusterTest, UnsignedUnknownForgedReplayedAndStaleRequestsAreRefused) {
  const std::string path = "/cluster/v1/status";
  EXPECT_EQ(Raw(1, "GET", path, {}).status, 401);  // unsigned
  const auto stranger = trust::ApplianceIdentity::Generate();
  auto unknown = Raw(1, "GET", path, Signed(stranger, "GET", path));
  EXPECT_EQ(unknown.status, 401);
  EXPECT_NE(unknown.body.find("unknown_node"), std::string::npos) << unknown.body;
  // A stranger claiming a member's id: the signature does not verify with that member's key.
  auto forged = Signed(stranger, "GET", path);
  for (auto& [k, v] : forged) {
    if (k == trust::kApplianceHeader) v = nodes_[0]->identity().appliance_id();
  }
  EXPECT_EQ(Raw(1, "GET", path, forged).status, 401);
  // Signed for another path.
  EXPECT_EQ(Raw(1, "POST", "/cluster/v1/install", Signed(nodes_[0]->identity(), "GET", path)).status, 401);
  auto good = Signed(nodes_[0]->identity(), "GET", path);
  EXPECT_EQ(Raw(1, "GET", path, good).status, 200);
  auto replayed = Raw(1, "GET", path, good);
  EXPECT_EQ(replayed.status, 401);
  EXPECT_NE(replayed.body.find("replayed"), std::string::npos) << replayed.body;
  // Stamped 10 minutes ago (the server allows 5).
  FakeClock old(clock_.Now() - std::chrono::minutes(10));
  trust::RequestToSign t;
  t.method = "GET";
  t.path_and_query = path;
  auto stale = trust::SignRequest(nodes_[0]->identity(), t, old, SystemRandom::Instance());
  ASSERT_OK(stale);
  HeaderList sh;
  for (auto& kv : stale->Headers()) sh.push_back(kv);
  EXPECT_EQ(Raw(1, "GET", path, sh).status, 401);
  // Nothing was installed or staged by any of it.
  EXPECT_EQ(nodes_[1]->VersionOf("software"), V("7.0.0"));
}

TEST_F(ClusterTest, TamperedBundleIsRefusedWithTheImportsMessage) {
  const fs::path bundle = WriteClusterBundle({"software-7.1.0"}, All());
  {
    std::fstream f(bundle, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(fs::file_size(bundle) - 100));
    f.put('\x01');
  }
  const auto before = nodes_[1]->SystemTree();
  auto r = Client()->Upload(client_config_.nodes[1], bundle, Sha256Hex(packages::testing::ReadAll(bundle)),
                            fs::file_size(bundle));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.http_status, 409);
  EXPECT_NE(r.message.find("tampered"), std::string::npos) << r.message;
  EXPECT_EQ(nodes_[1]->SystemTree(), before);
  auto st = nodes_[1]->service->Status();
  ASSERT_OK(st);
  EXPECT_EQ((*st)["staged"].size(), 0u) << st->dump();
}

TEST_F(ClusterTest, UploadWhoseBodyIsNotTheSignedOneIsRefused) {
  const fs::path bundle = WriteClusterBundle({"software-7.1.0"}, All());
  auto client = Client();
  // Signed for the SHA-256 of other bytes: the server compares it with what it received.
  auto r = client->Upload(client_config_.nodes[1], bundle, std::string(64, 'a'), fs::file_size(bundle));
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.http_status, 400);
  EXPECT_NE(r.message.find("not the signed"), std::string::npos) << r.message;
  auto st = nodes_[1]->service->Status();
  ASSERT_OK(st);
  EXPECT_EQ((*st)["staged"].size(), 0u);
}

TEST_F(ClusterTest, SecondRequestWhileTheNodeWorksIsBusy) {
  // The store is held (as by the daemon or another request): install and stage are refused 409.
  auto held = nodes_[1]->Open(false);
  ASSERT_OK(held);
  auto client = Client();
  auto r = client->Install(client_config_.nodes[1]);
  EXPECT_FALSE(r.ok);
  EXPECT_EQ(r.http_status, 409);
  EXPECT_NE(r.message.find("busy"), std::string::npos) << r.message;
  const fs::path bundle = WriteClusterBundle({"software-7.1.0"}, {nodes_[0].get()});
  auto up = client->Upload(client_config_.nodes[1], bundle, Sha256Hex(packages::testing::ReadAll(bundle)),
                           fs::file_size(bundle));
  EXPECT_EQ(up.http_status, 409) << up.message;
  // Status still answers (read-only) while the node is busy.
  EXPECT_TRUE(client->Status(client_config_.nodes[1]).ok);
}

TEST_F(ClusterTest, ClusterFileIsParsedStrictly) {
  Json good = {{"node", "alpha"},
               {"listen", "127.0.0.1:0"},
               {"tls_cert", "c.pem"},
               {"tls_key", "k.pem"},
               {"ca_file", "ca.pem"},
               {"nodes",
                {{{"name", "alpha"},
                  {"url", "https://10.0.0.1:7443"},
                  {"appliance_id", nodes_[0]->identity().appliance_id()},
                  {"public_key", nodes_[0]->identity().public_key().signing_key().ToJson()}}}}};
  auto ok = ClusterConfig::FromJson(good, "/etc/upkeep");
  ASSERT_OK(ok);
  EXPECT_EQ(ok->tls_cert, fs::path("/etc/upkeep/c.pem"));
  EXPECT_TRUE(ok->listen.tls);
  EXPECT_EQ(ok->Self().name, "alpha");
  auto expect_error = [&](Json j, const std::string& field) {
    auto c = ClusterConfig::FromJson(j, "/");
    ASSERT_FALSE(c.ok()) << j.dump();
    EXPECT_EQ(c.error().code(), Errc::kInvalidArgument);
    EXPECT_NE(c.error().message().find(field), std::string::npos) << c.error().message();
  };
  Json j = good;
  j["extra"] = 1;
  expect_error(j, "'extra'");
  j = good;
  j["node"] = "omega";
  expect_error(j, "'node'");
  j = good;
  j.erase("ca_file");
  expect_error(j, "'ca_file'");
  j = good;
  j["listen"] = "nowhere";
  expect_error(j, "'listen'");
  j = good;
  j["nodes"][0]["url"] = "http://10.0.0.1:80";
  expect_error(j, "nodes[0]: field 'url'");
  j = good;
  j["nodes"][0]["appliance_id"] = nodes_[1]->identity().appliance_id();
  expect_error(j, "nodes[0]: field 'appliance_id'");
  j = good;
  j["nodes"][0]["public_key"] = "x";
  expect_error(j, "nodes[0]: field 'public_key'");
  j = good;
  j["nodes"].push_back(good["nodes"][0]);
  expect_error(j, "nodes[1]: field 'name'");
  j = good;
  j["nodes"] = Json::array();
  expect_error(j, "'nodes'");
}

TEST_F(ClusterTest, ClusterMainUsageAndBadFiles) {
  std::ostringstream out, err;
  EXPECT_EQ(ClusterMain("/nonexistent/agent.json", {"status"}, out, err), 2);
  EXPECT_NE(err.str().find("usage"), std::string::npos);
  err.str("");
  EXPECT_EQ(ClusterMain("/nonexistent/agent.json", {"status", "--cluster", "/nonexistent/cluster.json"}, out, err), 2);
  EXPECT_NE(err.str().find("/nonexistent/cluster.json"), std::string::npos) << err.str();
  EXPECT_EQ(ClusterMain("/x", {"--help"}, out, err), 0);
}

// Measurement, not a timed test: UPKEEP_CLUSTER_BIG_MB=1024 uploads a file of that size to a node
// (streamed to its disk and hashed, then refused as not a bundle) and prints the time and the
// process's peak RSS growth (client and server are both in this process).
TEST_F(ClusterTest, BigUploadStaysFlat) {
  const char* env = std::getenv("UPKEEP_CLUSTER_BIG_MB");
  if (env == nullptr) GTEST_SKIP() << "set UPKEEP_CLUSTER_BIG_MB to measure";
  const std::uint64_t mb = std::strtoull(env, nullptr, 10);
  const fs::path big = nodes_[0]->dir() / "big.bin";
  {
    std::ofstream o(big, std::ios::binary);
    std::string chunk(1 << 20, '\x5a');
    for (std::uint64_t i = 0; i < mb; ++i) o.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
  }
  std::string sha;
  {
    Hasher all;
    std::string chunk(1 << 20, '\x5a');
    for (std::uint64_t i = 0; i < mb; ++i) all.Update(chunk);
    sha = all.FinishHex();
  }
  rusage before{};
  ::getrusage(RUSAGE_SELF, &before);
  const auto t0 = std::chrono::steady_clock::now();
  auto r = Client()->Upload(client_config_.nodes[1], big, sha, mb << 20);
  const auto secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  rusage after{};
  ::getrusage(RUSAGE_SELF, &after);
  EXPECT_EQ(r.http_status, 409) << r.message;  // not a bundle: refused by the import, after the whole body
  std::cout << "upload " << mb << " MiB: " << secs << " s (" << static_cast<double>(mb) / secs
            << " MiB/s), peak RSS " << before.ru_maxrss / 1024 << " -> " << after.ru_maxrss / 1024 << " MiB\n";
  EXPECT_LT(after.ru_maxrss - before.ru_maxrss, 64 * 1024);  // KiB: flat, not the body's size
}

// The whole command on alpha's files: the production opener (read-only store) for itself, the
// peer API for the others, and the identity check against the cluster file.
TEST_F(ClusterTest, ClusterMainStatusFromFiles) {
  Node& alpha = *nodes_[0];
  AgentConfig c = alpha.config;
  c.identity_file = alpha.dir() / "identity.json";
  c.director_key_file = alpha.dir() / "director.pub";
  ASSERT_OK(alpha.identity().Save(c.identity_file));
  WriteFile(c.director_key_file, vendor_.director().public_key().ToJson().dump());
  const fs::path agent_json = alpha.dir() / "agent.json";
  WriteFile(agent_json, c.ToJson().dump());
  Json cluster_json = {{"node", "alpha"},
                       {"listen", "127.0.0.1:0"},
                       {"tls_cert", cert_.certificate.string()},
                       {"tls_key", cert_.private_key.string()},
                       {"ca_file", cert_.certificate.string()},
                       {"nodes", Json::array()}};
  for (const auto& n : client_config_.nodes) {
    cluster_json["nodes"].push_back({{"name", n.name}, {"url", n.url}, {"appliance_id", n.appliance_id},
                                     {"public_key", n.public_key.signing_key().ToJson()}});
  }
  const fs::path cluster_file = alpha.dir() / "cluster.json";
  WriteFile(cluster_file, cluster_json.dump());
  clock_.Set(SystemClock::Instance().Now());  // the CLI signs with the system clock; servers are idle
  std::ostringstream out, err;
  ASSERT_EQ(ClusterMain(agent_json.string(), {"status", "--cluster", cluster_file.string(), "--json"}, out, err), 0)
      << err.str() << out.str();
  auto report = ParseJson(out.str());
  ASSERT_OK(report);
  ASSERT_EQ((*report)["status"].size(), 3u);
  for (const auto& s : (*report)["status"]) {
    EXPECT_TRUE(s.value("ok", false)) << s.dump();
    EXPECT_EQ(s["answer"]["installed"].value("software", ""), "7.0.0") << s.dump();
  }
  std::ostringstream text;
  EXPECT_EQ(ClusterMain(agent_json.string(), {"status", "--cluster", cluster_file.string()}, text, err), 0);
  EXPECT_NE(text.str().find("gamma: software 7.0.0; 0 staged"), std::string::npos) << text.str();
  // A cluster file that names another appliance as this node.
  cluster_json["node"] = "beta";
  WriteFile(cluster_file, cluster_json.dump());
  std::ostringstream err2;
  EXPECT_EQ(ClusterMain(agent_json.string(), {"status", "--cluster", cluster_file.string()}, out, err2), 2);
  EXPECT_NE(err2.str().find("but this appliance is " + alpha.identity().appliance_id()), std::string::npos)
      << err2.str();
}

}  // namespace
}  // namespace upkeep::agent
