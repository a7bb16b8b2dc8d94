// relay-sim against a real relay: an in-process relay::Server on loopback TLS (and build/bin/relay
// in a child process for the memory measurement).
#include <gtest/gtest.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <fstream>
#include <future>
#include <map>
#include <set>
#include <mutex>
#include <sstream>
#include <thread>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/relay/server.hpp"
#include "upkeep/relay_sim/cli.hpp"
#include "upkeep/relay_sim/fleet.hpp"

extern char** environ;

namespace upkeep::relay::sim {
namespace {

using namespace std::chrono_literals;

const std::string kToken = "technician-token-0123456789abcdef";

std::string SecretFor(int i) { return "secret-of-sim-client-" + std::to_string(i) + "-0123456789"; }
std::string IdFor(int i) { return "sim-" + std::to_string(i); }

template <typename F>
bool Eventually(F f, std::chrono::milliseconds timeout = 20000ms) {
  auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

long RssKiB(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atol(line.c_str() + 6);
  return -1;
}

// Records what the relay saw; optionally serves a build on BUILD_GET from the I/O thread.
class Observer : public ServerObserver {
 public:
  void OnClientCheckIn(const ClientInfo& c) override {
    std::lock_guard l(mu);
    checkins.push_back(c);
  }
  void OnClientDisconnect(const std::string&) override { disconnects++; }
  std::optional<std::string> OnConsoleOpen(const std::string&) override { return std::nullopt; }
  void OnBuildGet(const std::string& id, const std::string&, std::uint64_t offset) override {
    {
      std::lock_guard l(mu);
      build_gets.push_back(id);
    }
    if (server == nullptr) return;
    for (std::size_t off = offset; off < build.size(); off += 65536)
      server->SendBuildChunk(id, build.substr(off, 65536), [](Status) {});
  }
  void OnBuildReport(const std::string& id, const BuildReport& r) override {
    std::lock_guard l(mu);
    reports[id] = r.result + ":" + r.version + ":" + r.detail;
  }
  std::size_t CheckinsWithVersion(const std::string& id, const std::string& version) {
    std::lock_guard l(mu);
    return static_cast<std::size_t>(std::count_if(checkins.begin(), checkins.end(), [&](const ClientInfo& c) {
      return c.id == id && c.version == version;
    }));
  }
  std::size_t CheckinCount() {
    std::lock_guard l(mu);
    return checkins.size();
  }
  std::string ReportOf(const std::string& id) {
    std::lock_guard l(mu);
    auto it = reports.find(id);
    return it == reports.end() ? "" : it->second;
  }

  std::mutex mu;
  std::vector<ClientInfo> checkins;
  std::vector<std::string> build_gets;
  std::map<std::string, std::string> reports;
  std::atomic<int> disconnects{0};
  Server* server = nullptr;
  std::string build;
};

class RelaySimTest : public ::testing::Test {
 protected:
  void SetUp() override {
    static int counter = 0;
    dir_ = std::filesystem::temp_directory_path() /
           ("relay-sim-test-" + std::to_string(::getpid()) + "-" + std::to_string(counter++));
    std::filesystem::create_directories(dir_);
    auto cert = net::testing::WriteSelfSignedCertificate(dir_);
    ASSERT_TRUE(cert.ok());
    cert_ = *cert;
    TechnicianRecord t;
    t.id = "alice";
    t.token_hash = *HashSecret(kToken, SystemRandom::Instance());
    ASSERT_TRUE(store_.PutTechnician(t).ok());
    options_.certificate_chain = cert_.certificate;
    options_.private_key = cert_.private_key;
    options_.sweep_interval = 50ms;
    options_.accept_rate = 20000;
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // Registers n clients with the store; `passive` of them (the last) passive.
  std::vector<SimClientSpec> MakeClients(int n, int passive = 0) {
    std::vector<SimClientSpec> specs;
    for (int i = 0; i < n; ++i) {
      ClientRecord r;
      r.id = IdFor(i);
      r.secret_hash = *HashSecret(SecretFor(i), SystemRandom::Instance());
      EXPECT_TRUE(store_.PutClient(r).ok());
      SimClientSpec s;
      s.id = r.id;
      s.secret = SecretFor(i);
      s.mode = i >= n - passive ? "passive" : "active";
      specs.push_back(s);
    }
    return specs;
  }

  void StartServer() {
    server_ = std::make_unique<Server>(options_, store_, clock_, &observer_);
    observer_.server = server_.get();
    ASSERT_TRUE(server_->Start().ok());
  }

  FleetOptions FleetOpts() {
    FleetOptions o;
    o.port = server_->port();
    o.ca_file = cert_.certificate;
    o.connect_rate = 2000;
    o.reconnect_delay = 200ms;
    return o;
  }

  std::filesystem::path dir_;
  net::testing::CertificateFiles cert_;
  MemoryClientStore store_;
  FakeClock clock_{SysTime{}};
  ServerOptions options_;
  Observer observer_;
  std::unique_ptr<Server> server_;
};

TEST_F(RelaySimTest, FiveHundredClientsCheckInPassiveOnesComeAndGoConsolesEchoBadSecretsRefused) {
  auto specs = MakeClients(500, 100);
  for (int i = 0; i < 5; ++i) {  // known ids, wrong secrets
    SimClientSpec s = specs[static_cast<std::size_t>(i)];
    s.secret = "not-the-right-secret-at-all";
    specs.push_back(s);
  }
  StartServer();
  auto o = FleetOpts();
  o.passive_interval = 300ms;
  o.passive_linger = 100ms;
  o.consoles = 2;
  o.console_token = kToken;
  o.writes_per_session = 10;
  o.console_pause = 1ms;
  Fleet fleet(o, specs, SystemRandom::Instance());
  ASSERT_TRUE(fleet.Start().ok());
  // Every one of the 500 checks in; the 400 active stay.
  ASSERT_TRUE(Eventually([&] {
    std::set<std::string> ids;
    std::lock_guard l(observer_.mu);
    for (const auto& c : observer_.checkins) ids.insert(c.id);
    return ids.size() == 500;
  }));
  ASSERT_TRUE(Eventually([&] { return server_->stats().clients >= 400; }));
  // Passive clients come back: many more check-ins than clients, while the active count holds.
  ASSERT_TRUE(Eventually([&] { return observer_.CheckinCount() >= 800; }));
  ASSERT_TRUE(Eventually([&] {
    auto s = fleet.Summary();
    return s.console_latency.count >= 50 && s.console_sessions >= 2;
  }));
  auto s = fleet.Summary();
  EXPECT_EQ(s.refusals["bad_secret"], 5u);
  EXPECT_EQ(s.by_state["refused"], 5u);
  EXPECT_GE(s.by_state["online"], 400u);
  EXPECT_LE(s.by_state["online"], 500u);
  EXPECT_GE(s.checkins, 800u);
  EXPECT_GE(observer_.disconnects.load(), 100);  // passive ones left
  EXPECT_GT(s.console_latency.p50_us, 0);
  EXPECT_LE(s.console_latency.p50_us, s.console_latency.p99_us);
  EXPECT_EQ(s.by_version["1.0.0"], 505u);
  EXPECT_GE(server_->stats().auth_failures, 5u);
  auto j = s.ToJson();
  EXPECT_TRUE(j.contains("build_bytes_per_second"));
  EXPECT_TRUE(j["console"]["latency_us"].contains("p99_9"));
  std::printf("[ relay-sim] %zu check-ins, console round trips %llu: p50 %.0f us, p99 %.0f us, p99.9 %.0f us\n",
              static_cast<std::size_t>(s.checkins), static_cast<unsigned long long>(s.console_latency.count),
              s.console_latency.p50_us, s.console_latency.p99_us, s.console_latency.p999_us);
  fleet.Stop();
}

TEST_F(RelaySimTest, UpgradeIsDownloadedVerifiedInstalledAndReportedAndBadOnesFail) {
  auto specs = MakeClients(6);
  StartServer();
  auto vendor = packages::PrivateKey::GenerateEd25519();
  auto pub_file = dir_ / "vendor.pub";
  ASSERT_TRUE(WriteFileAtomic(pub_file, vendor.public_key().ToJson().dump()).ok());
  auto pub = packages::LoadPublicKey(pub_file);
  ASSERT_TRUE(pub.ok());
  std::string build(300 * 1024 + 17, '\0');
  for (std::size_t i = 0; i < build.size(); ++i) build[i] = static_cast<char>((i * 131) % 251);
  observer_.build = build;
  const std::string sha = Sha256Hex(build);
  const std::string platform = SimClientSpec{}.platform;
  const std::string good_sig = ToHex(vendor.Sign(relay::BuildSigningMessage(platform, "2.0.0", sha)));
  // Signed, but for another version: a relay can't relabel an old build.
  const std::string other_sig = ToHex(vendor.Sign(relay::BuildSigningMessage(platform, "1.9.0", sha)));
  auto o = FleetOpts();
  o.vendor_key = *pub;
  o.chunk_rate = 2 * 1024 * 1024;  // slow links: 2 MiB/s per client
  Fleet fleet(o, specs, SystemRandom::Instance());
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_TRUE(Eventually([&] { return server_->stats().clients == 6; }));
  auto offer = [&](int i, const std::string& sig, const std::string& hash, std::uint64_t length) {
    std::promise<Status> p;
    server_->SendUpgrade(IdFor(i), Json{{"version", "2.0.0"}, {"length", length}, {"sha256", hash}, {"signature", sig}},
                         [&](Status s) { p.set_value(s); });
    EXPECT_TRUE(p.get_future().get().ok());
  };
  offer(0, good_sig, sha, build.size());
  offer(1, good_sig, sha, build.size());
  offer(2, good_sig, sha, build.size());
  offer(3, other_sig, sha, build.size());                                  // wrong signature
  offer(4, good_sig, Sha256Hex("not the build"), build.size());           // wrong hash
  offer(5, good_sig, sha, build.size() - 1);                              // longer than announced
  const auto reported = [&] {
    std::lock_guard l(observer_.mu);
    return observer_.reports.size();
  };
  ASSERT_TRUE(Eventually([&] { return reported() == 6; })) << reported();
  for (int i = 0; i < 3; ++i) EXPECT_EQ(observer_.ReportOf(IdFor(i)), "installed:2.0.0:");
  EXPECT_EQ(observer_.ReportOf(IdFor(3)), "failed:2.0.0:bad vendor signature");
  EXPECT_EQ(observer_.ReportOf(IdFor(4)), "failed:2.0.0:sha256 mismatch");
  EXPECT_EQ(observer_.ReportOf(IdFor(5)), "failed:2.0.0:build is longer than announced");
  // The installed ones come back with the new version.
  for (int i = 0; i < 3; ++i)
    EXPECT_TRUE(Eventually([&] { return observer_.CheckinsWithVersion(IdFor(i), "2.0.0") == 1; })) << i;
  EXPECT_EQ(observer_.CheckinsWithVersion(IdFor(3), "2.0.0"), 0u);
  auto s = fleet.Summary();
  EXPECT_EQ(s.upgrades_installed, 3u);
  EXPECT_EQ(s.upgrades_failed, 3u);
  EXPECT_EQ(s.by_version["2.0.0"], 3u);
  EXPECT_EQ(s.by_version["1.0.0"], 3u);
  EXPECT_GE(s.max_concurrent_downloading, 1u);
  EXPECT_LE(s.max_concurrent_downloading, 6u);
  std::uint64_t total = 0;
  for (auto b : s.build_bytes_per_second) total += b;
  EXPECT_GE(total, 3 * build.size());
  EXPECT_FALSE(fleet.AllAtVersion("2.0.0"));
  fleet.Stop();
}

TEST_F(RelaySimTest, AStallingClientStopsReadingHalfwayThenResumes) {
  auto specs = MakeClients(1);
  StartServer();
  auto vendor = packages::PrivateKey::GenerateEd25519();
  std::string build(256 * 1024, 'b');
  observer_.build = build;
  auto o = FleetOpts();
  o.vendor_key = vendor.public_key();
  o.stall_fraction = 1;
  o.stall_time = 600ms;
  Fleet fleet(o, specs, SystemRandom::Instance());
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_TRUE(Eventually([&] { return server_->stats().clients == 1; }));
  const auto t0 = std::chrono::steady_clock::now();
  server_->SendUpgrade(IdFor(0),
                       Json{{"version", "2.0.0"}, {"length", build.size()}, {"sha256", Sha256Hex(build)},
                            {"signature", ToHex(vendor.Sign(relay::BuildSigningMessage(SimClientSpec{}.platform, "2.0.0",
                                                                                        Sha256Hex(build))))}},
                       [](Status) {});
  ASSERT_TRUE(Eventually([&] { return fleet.Summary().upgrades_stalled == 1; }));
  EXPECT_EQ(fleet.Summary().by_state["downloading"], 1u);
  ASSERT_TRUE(Eventually([&] { return observer_.ReportOf(IdFor(0)) == "installed:2.0.0:"; }));
  EXPECT_GE(std::chrono::steady_clock::now() - t0, 600ms);
  EXPECT_TRUE(Eventually([&] { return fleet.AllAtVersion("2.0.0"); }));
}

TEST_F(RelaySimTest, WithoutAVendorKeyEveryUpgradeFails) {
  auto specs = MakeClients(1);
  StartServer();
  observer_.build = "tiny build";
  Fleet fleet(FleetOpts(), specs, SystemRandom::Instance());
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_TRUE(Eventually([&] { return server_->stats().clients == 1; }));
  server_->SendUpgrade(IdFor(0),
                       Json{{"version", "2.0.0"}, {"length", 10}, {"sha256", Sha256Hex("tiny build")}, {"signature", "00"}},
                       [](Status) {});
  ASSERT_TRUE(Eventually([&] { return !observer_.ReportOf(IdFor(0)).empty(); }));
  EXPECT_EQ(observer_.ReportOf(IdFor(0)), "failed:2.0.0:no vendor key to check the signature");
}

TEST_F(RelaySimTest, BadOptionsAreRefusedAtStart) {
  FleetOptions o;
  o.port = 1;
  o.ca_file = dir_ / "missing.pem";
  Fleet a(o, {}, SystemRandom::Instance());
  auto s = a.Start();
  ASSERT_FALSE(s.ok());
  EXPECT_NE(s.error().message().find("missing.pem"), std::string::npos);
  o.ca_file = cert_.certificate;
  o.host = "not-an-ip";
  Fleet b(o, {}, SystemRandom::Instance());
  EXPECT_FALSE(b.Start().ok());
  o.host = "127.0.0.1";
  o.consoles = 1;  // no token
  Fleet c(o, {}, SystemRandom::Instance());
  EXPECT_FALSE(c.Start().ok());
}

TEST(RelaySimSecrets, HostileSecretsFilesAreRefusedWithTheirName) {
  auto dir = std::filesystem::temp_directory_path() / ("relay-sim-secrets-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto check = [&](const std::string& text, const std::string& want) {
    auto p = dir / "s.json";
    ASSERT_TRUE(WriteFileAtomic(p, text).ok());
    auto r = LoadSecretsFile(p);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_NE(r.error().message().find("s.json"), std::string::npos) << r.error().message();
    EXPECT_NE(r.error().message().find(want), std::string::npos) << r.error().message();
    EXPECT_EQ(r.error().message().find("0123456789abcdef-secret"), std::string::npos);  // never the secret
  };
  check("{", "");
  check("[]", "not a JSON object");
  check(R"({"clients": [{"id": "bad id", "secret": "0123456789abcdef-secret"}]})", "id");
  check(R"({"clients": [{"id": "a", "secret": "short"}]})", "secret");
  check(R"({"clients": [{"id": "a", "secret": "0123456789abcdef-secret", "mode": "sleepy"}]})", "mode");
  check(R"({"clients": [{"id": "a", "secret": "0123456789abcdef-secret", "version": 3}]})", "clients[0]");
  std::filesystem::remove_all(dir);
}

TEST(RelaySimCli, MakeClientsWritesTheRelayClientFileAndTheSecrets) {
  auto dir = std::filesystem::temp_directory_path() / ("relay-sim-cli-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto clients = (dir / "clients.json").string();
  std::ostringstream out, err;
  const char* argv[] = {"relay-sim", "make-clients", "20", "--prefix", "c-", "-o", clients.c_str(), "--passive-fraction",
                        "0.25"};
  ASSERT_EQ(Main(9, argv, out, err), 0) << err.str();
  auto store = JsonFileClientStore::Open(clients);
  ASSERT_TRUE(store.ok()) << store.error().message();
  EXPECT_EQ((*store)->ListClients().size(), 20u);
  auto secrets = LoadSecretsFile(clients + ".secrets");
  ASSERT_TRUE(secrets.ok()) << secrets.error().message();
  ASSERT_EQ(secrets->clients.size(), 20u);
  int passive = 0;
  for (const auto& c : secrets->clients) {
    auto rec = (*store)->FindClient(c.id);
    ASSERT_TRUE(rec.has_value());
    EXPECT_TRUE(VerifySecret(c.secret, rec->secret_hash));
    passive += c.mode == "passive";
  }
  EXPECT_EQ(passive, 5);
  EXPECT_TRUE((*store)->FindTechnicianByToken(secrets->console_token).has_value());
  EXPECT_EQ(std::filesystem::status(clients + ".secrets").permissions() & std::filesystem::perms::others_read,
            std::filesystem::perms::none);
  // Usage errors exit 2.
  const char* bad[] = {"relay-sim", "make-clients", "0", "-o", clients.c_str()};
  EXPECT_EQ(Main(5, bad, out, err), 2);
  const char* bad_run[] = {"relay-sim", "run", "--relay", "localhost", "--ca", "x", "--secrets", "y", "--duration", "1"};
  EXPECT_EQ(Main(10, bad_run, out, err), 2);
  std::filesystem::remove_all(dir);
}

TEST(RelaySimCli, MakeBuildSignsRandomBuildsIntoTheBuildsFileAndPlatformsAlternate) {
  auto dir = std::filesystem::temp_directory_path() / ("relay-sim-build-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  const std::string key = (dir / "vendor.key").string(), builds = (dir / "builds.json").string();
  const std::string a = (dir / "a.bin").string(), b = (dir / "b.bin").string();
  std::ostringstream out, err;
  auto make = [&](const char* platform, const char* version, const char* size, const std::string& file) {
    const char* argv[] = {"relay-sim", "make-build", "--key", key.c_str(), "--platform", platform, "--version", version,
                          "--size", size, "-o", file.c_str(), "--builds", builds.c_str()};
    return Main(14, argv, out, err);
  };
  ASSERT_EQ(make("linux-x86_64", "2.0.0", "1000", a), 0) << err.str();
  ASSERT_EQ(make("linux-aarch64", "2.0.0", "2000", b), 0) << err.str();
  ASSERT_EQ(make("linux-x86_64", "2.0.1", "1500", a), 0) << err.str();  // replaces x86_64's entry, same key
  auto pub = packages::LoadPublicKey(key + ".pub");
  ASSERT_TRUE(pub.ok()) << pub.error().message();
  auto text = ReadFileBounded(builds, 1 << 20);
  ASSERT_TRUE(text.ok());
  auto j = ParseJson(*text);
  ASSERT_TRUE(j.ok());
  ASSERT_EQ((*j)["builds"].size(), 2u);
  std::map<std::string, std::uint64_t> sizes;
  for (const auto& e : (*j)["builds"]) {
    const std::string platform = e["platform"], version = e["version"], path = e["path"], sha = e["sha256"];
    auto data = ReadFileBounded(path, 1 << 20);
    ASSERT_TRUE(data.ok());
    EXPECT_EQ(Sha256Hex(*data), sha);
    auto sig = FromHex(std::string(e["signature"]));
    ASSERT_TRUE(sig.ok());
    EXPECT_TRUE(pub->Verify(relay::BuildSigningMessage(platform, version, sha), *sig)) << platform;
    EXPECT_FALSE(pub->Verify(relay::BuildSigningMessage(platform, "9.9.9", sha), *sig));
    sizes[platform + " " + version] = data->size();
  }
  EXPECT_EQ(sizes, (std::map<std::string, std::uint64_t>{{"linux-aarch64 2.0.0", 2000}, {"linux-x86_64 2.0.1", 1500}}));
  // Errors exit 2 and name the offending thing: a zero size, a builds file without a 'builds' array.
  err.str("");
  EXPECT_EQ(make("linux-x86_64", "2.0.0", "0", a), 2);
  EXPECT_NE(err.str().find("--size"), std::string::npos) << err.str();
  ASSERT_TRUE(WriteFileAtomic(builds, "{\"other\": []}").ok());
  err.str("");
  EXPECT_EQ(make("linux-x86_64", "2.0.0", "10", a), 2);
  EXPECT_NE(err.str().find("builds.json"), std::string::npos) << err.str();
  // make-clients hands several platforms out in turn.
  const std::string clients = (dir / "clients.json").string();
  const char* mk[] = {"relay-sim", "make-clients", "4", "-o", clients.c_str(), "--platform", "p-a", "--platform", "p-b"};
  ASSERT_EQ(Main(9, mk, out, err), 0) << err.str();
  auto secrets = LoadSecretsFile(clients + ".secrets");
  ASSERT_TRUE(secrets.ok());
  std::vector<std::string> platforms;
  for (const auto& c : secrets->clients) platforms.push_back(c.platform);
  EXPECT_EQ(platforms, (std::vector<std::string>{"p-a", "p-b", "p-a", "p-b"}));
  // --front-request needs --until-version.
  const std::string secrets_file = clients + ".secrets";
  const char* front[] = {"relay-sim", "run", "--relay", "127.0.0.1:1", "--ca", "x", "--secrets", secrets_file.c_str(),
                         "--duration", "1", "--front-request", "1"};
  err.str("");
  EXPECT_EQ(Main(12, front, out, err), 2);
  EXPECT_NE(err.str().find("--front-request"), std::string::npos) << err.str();
  std::filesystem::remove_all(dir);
}

TEST_F(RelaySimTest, RunCommandDrivesTheFleetAndWritesTheSummary) {
  auto clients_file = (dir_ / "clients.json").string();
  std::ostringstream out, err;
  const char* make[] = {"relay-sim", "make-clients", "30", "-o", clients_file.c_str(), "--passive-fraction", "0.3"};
  ASSERT_EQ(Main(7, make, out, err), 0) << err.str();
  auto store = JsonFileClientStore::Open(clients_file);
  ASSERT_TRUE(store.ok());
  Server server(options_, **store, clock_, nullptr);
  ASSERT_TRUE(server.Start().ok());
  const std::string relay = "127.0.0.1:" + std::to_string(server.port());
  const std::string secrets = clients_file + ".secrets", summary = (dir_ / "summary.json").string();
  const std::string ca = cert_.certificate.string();
  const char* run[] = {"relay-sim", "run", "--relay", relay.c_str(), "--ca", ca.c_str(), "--secrets", secrets.c_str(),
                       "--duration", "1.5", "--consoles", "1", "--passive-interval", "0.3", "--passive-linger", "0.1",
                       "--summary", summary.c_str()};
  ASSERT_EQ(Main(18, run, out, err), 0) << err.str();
  auto text = ReadFileBounded(summary, 1 << 20);
  ASSERT_TRUE(text.ok());
  auto j = ParseJson(*text);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["clients"], 30);
  EXPECT_GE((*j)["checkins"].get<int>(), 30);
  EXPECT_EQ((*j)["by_version"]["1.0.0"], 30);
  EXPECT_GT((*j)["console"]["round_trips"].get<int>(), 0);
  // A version nobody reaches: exit 1 after the time-out, summary on stdout.
  std::ostringstream out2;
  const char* until[] = {"relay-sim", "run", "--relay", relay.c_str(), "--ca", ca.c_str(), "--secrets", secrets.c_str(),
                         "--until-version", "9.9.9", "--timeout", "0.5"};
  EXPECT_EQ(Main(12, until, out2, err), 1);
  EXPECT_NE(out2.str().find("\"reached\": false"), std::string::npos) << out2.str();
  const char* bad_secrets[] = {"relay-sim", "run", "--relay", relay.c_str(), "--ca", ca.c_str(), "--secrets",
                               "/nonexistent/secrets", "--duration", "1"};
  EXPECT_EQ(Main(10, bad_secrets, out2, err), 2);
  server.Stop();
}

// Memory of the simulator per connected client, against build/bin/relay in a child process (so
// only the fleet's side is in this process's RSS). UPKEEP_RELAY_SIM_CLIENTS overrides 2,000.
TEST_F(RelaySimTest, MemoryPerSimulatedConnection) {
  int n = 2000;
  if (const char* env = std::getenv("UPKEEP_RELAY_SIM_CLIENTS")) n = std::atoi(env);
  auto clients_file = (dir_ / "clients.json").string();
  {
    std::ostringstream out, err;
    const std::string count = std::to_string(n);
    const char* argv[] = {"relay-sim", "make-clients", count.c_str(), "-o", clients_file.c_str()};
    ASSERT_EQ(Main(5, argv, out, err), 0) << err.str();
  }
  auto secrets = LoadSecretsFile(clients_file + ".secrets");
  ASSERT_TRUE(secrets.ok());
  auto out_file = dir_ / "relay.out";
  std::string bin = std::string(UPKEEP_BIN_DIR) + "/relay";
  std::vector<std::string> args = {bin, "serve", "--cert", cert_.certificate.string(), "--key", cert_.private_key.string(),
                                   "--clients", clients_file, "--listen", "127.0.0.1:0", "--rate", "100000",
                                   "--max-connections", std::to_string(n + 100)};
  std::vector<char*> argv;
  for (auto& a : args) argv.push_back(a.data());
  argv.push_back(nullptr);
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 1, out_file.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
  pid_t pid = 0;
  ASSERT_EQ(posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ), 0);
  posix_spawn_file_actions_destroy(&actions);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reaper{pid};
  std::uint16_t port = 0;
  ASSERT_TRUE(Eventually([&] {
    std::ifstream in(out_file);
    std::string line;
    while (std::getline(in, line)) {
      auto at = line.find("listening on 127.0.0.1:");
      if (at != std::string::npos) port = static_cast<std::uint16_t>(std::atoi(line.c_str() + at + 23));
    }
    return port != 0;
  }, 60000ms));
  FleetOptions o;
  o.port = port;
  o.ca_file = cert_.certificate;
  o.connect_rate = 5000;
  Fleet fleet(o, secrets->clients, SystemRandom::Instance());
  const long before = RssKiB(::getpid());
  const auto t0 = std::chrono::steady_clock::now();
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_TRUE(Eventually([&] { return fleet.OnlineCount() == static_cast<std::size_t>(n); }, 120000ms))
      << fleet.Summary().ToJson().dump();
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::this_thread::sleep_for(300ms);
  const long after = RssKiB(::getpid());
  const double each = static_cast<double>(after - before) / n;
  std::printf("[ relay-sim] %d simulated TLS clients connected in %.1f s; test process RSS %ld KiB before, %ld KiB "
              "after: %.2f KiB per simulated connection (marginal)\n",
              n, secs, before, after, each);
#if !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)  // both inflate memory
  EXPECT_LT(each, 48.0);
#endif
  fleet.Stop();
}

}  // namespace
}  // namespace upkeep::relay::sim
