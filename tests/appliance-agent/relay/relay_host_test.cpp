// The relay core hosted by the agent: which installed releases bring client builds (only
// software releases whose manifest says client_upgrade), the wave a new set of builds starts
// against simulated clients over real TLS (tools/relay-sim's Fleet), the throttles, the control
// socket and `appliance-agent clients`, and the refusals (bad builds files, a second daemon).
#include <gtest/gtest.h>

#include <sstream>
#include <thread>

#include "../core/core_world.hpp"
#include "upkeep/agent/relay_host.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay_sim/fleet.hpp"

namespace upkeep::agent {
namespace {

constexpr int kClients = 24;
const std::string kPlatform = "linux-x86_64";

std::string SecretFor(int i) { return "secret-of-relay-host-client-" + std::to_string(i) + "-0123456789"; }
std::string IdFor(int i) { return "ep-" + std::to_string(i); }

template <typename F>
bool Eventually(F f, std::chrono::milliseconds timeout = 30000ms) {
  const auto until = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < until) {
    if (f()) return true;
    std::this_thread::sleep_for(20ms);
  }
  return f();
}

TEST(RelayConfig, TheRelaySectionAndTheThrottleSettingsParseStrictly) {
  const Json base = {{"state_dir", "s"}, {"system_root", "r"}, {"updater_url", "https://u"}, {"director_key_file", "d"}};
  Json j = base;
  j["relay"] = {{"listen", "0.0.0.0:7443"}, {"certificate", "relay.pem"}, {"private_key", "relay.key"},
                {"clients", "clients.json"}, {"accept_rate", 200}, {"max_connections", 30000}};
  auto c = AgentConfig::FromJson(j, "/etc/upkeep-agent");
  ASSERT_TRUE(c.ok()) << c.error().message();
  ASSERT_TRUE(c->relay.has_value());
  EXPECT_EQ(c->relay->certificate, fs::path("/etc/upkeep-agent/relay.pem"));
  EXPECT_EQ(c->relay->max_connections, 30000u);
  EXPECT_EQ(c->RelaySocket(), fs::path("/etc/upkeep-agent/s/relay.sock"));
  auto round = AgentConfig::FromJson(c->ToJson(), "/");
  ASSERT_TRUE(round.ok()) << round.error().message();
  EXPECT_EQ(round->relay->clients, c->relay->clients);
  EXPECT_FALSE(AgentConfig::FromJson(base, "/").value().relay.has_value());

  const std::vector<std::pair<std::function<void(Json&)>, std::string>> bad = {
      {[](Json& r) { r["colour"] = "red"; }, "unknown field 'colour'"},
      {[](Json& r) { r.erase("listen"); }, "field 'listen' is missing"},
      {[](Json& r) { r["clients"] = ""; }, "must not be empty"},
      {[](Json& r) { r["accept_rate"] = 0; }, "accept_rate"},
      {[](Json& r) { r["max_connections"] = -1; }, "max_connections"},
  };
  for (const auto& [mutate, want] : bad) {
    Json b = j;
    mutate(b["relay"]);
    auto e = AgentConfig::FromJson(b, "/");
    ASSERT_FALSE(e.ok()) << want;
    EXPECT_NE(e.error().message().find(want), std::string::npos) << e.error().message();
  }

  Settings s;
  EXPECT_EQ(s.max_concurrent_client_upgrades, 10u);
  ASSERT_TRUE(s.Set("max_concurrent_client_upgrades", "25").ok());
  ASSERT_TRUE(s.Set("max_client_upgrade_bandwidth", "2000000").ok());
  EXPECT_EQ(Settings::FromJson(s.ToJson()).value().max_client_upgrade_bandwidth, 2000000u);
  EXPECT_FALSE(s.Set("max_concurrent_client_upgrades", "0").ok());
  EXPECT_FALSE(s.Set("max_concurrent_client_upgrades", "100001").ok());
  auto low = s.Set("max_client_upgrade_bandwidth", "1000");
  ASSERT_FALSE(low.ok());
  EXPECT_NE(low.error().message().find("max_client_upgrade_bandwidth must be 16384"), std::string::npos);
  EXPECT_EQ(s.max_client_upgrade_bandwidth, 2000000u) << "a refused value changes nothing";
}

// A vendor's client build for kPlatform: the bytes, and the builds file entry that signs them.
struct BuildFiles {
  std::string bytes;
  Json entry;
};

BuildFiles MakeBuild(const PrivateKey& vendor, const std::string& version, std::size_t size) {
  BuildFiles b;
  b.bytes.resize(size);
  for (std::size_t i = 0; i < size; ++i) b.bytes[i] = static_cast<char>((i * 7 + version.size() * 13) % 251);
  const std::string sha = Sha256Hex(b.bytes);
  b.entry = {{"platform", kPlatform}, {"version", version}, {"path", "clients/agent-" + version + ".bin"},
             {"sha256", sha}, {"signature", ToHex(vendor.Sign(relay::BuildSigningMessage(kPlatform, version, sha)))}};
  return b;
}

std::map<std::string, std::string> PayloadWith(const BuildFiles& b) {
  return {{"client-builds.json", Json{{"builds", {b.entry}}}.dump()},
          {b.entry["path"].get<std::string>(), b.bytes}};
}

class RelayHostTest : public ::testing::Test {
 protected:
  void SetUp() override { vendor_ = std::make_unique<Vendor>(clock_); }

  // The relay section of the world's config: a certificate, and a client store with kClients.
  void ConfigureRelay(World& w) {
    auto cert = net::testing::WriteSelfSignedCertificate(w.root() / "tls");
    ASSERT_TRUE(cert.ok()) << cert.error().message();
    ca_ = cert->certificate;
    Json clients = Json::array();
    for (int i = 0; i < kClients; ++i) {
      auto h = relay::HashSecret(SecretFor(i), SystemRandom::Instance());
      ASSERT_TRUE(h.ok());
      clients.push_back({{"id", IdFor(i)}, {"secret_hash", *h}});
    }
    ASSERT_OK(WriteFileAtomic(w.root() / "relay-clients.json",
                              Json{{"clients", clients}, {"technicians", Json::array()}}.dump()));
    RelayConfig rc;
    rc.listen = "127.0.0.1:0";
    rc.certificate = cert->certificate;
    rc.private_key = cert->private_key;
    rc.clients = w.root() / "relay-clients.json";
    w.config.relay = rc;
  }

  relay::sim::FleetOptions FleetOpts(std::uint16_t port) {
    relay::sim::FleetOptions o;
    o.port = port;
    o.ca_file = ca_;
    auto pub = packages::LoadPublicKey(vendor_key_file_);
    EXPECT_TRUE(pub.ok());
    if (pub.ok()) o.vendor_key = *pub;
    o.reconnect_delay = 200ms;
    return o;
  }

  std::vector<relay::sim::SimClientSpec> Specs() {
    std::vector<relay::sim::SimClientSpec> specs;
    for (int i = 0; i < kClients; ++i) {
      relay::sim::SimClientSpec s;
      s.id = IdFor(i);
      s.secret = SecretFor(i);
      s.version = "1.0.0";
      s.platform = kPlatform;
      specs.push_back(s);
    }
    return specs;
  }

  void WriteVendorKey(const fs::path& dir) {
    vendor_key_file_ = dir / "vendor.pub";
    ASSERT_OK(WriteFileAtomic(vendor_key_file_, client_vendor_.public_key().ToJson().dump()));
  }

  FakeClock clock_{T0()};
  std::unique_ptr<Vendor> vendor_;
  PrivateKey client_vendor_ = PrivateKey::GenerateEd25519();
  fs::path ca_;
  fs::path vendor_key_file_;
};

TEST_F(RelayHostTest, OnlySoftwareReleasesThatSayClientUpgradeBringClientBuilds) {
  const BuildFiles b = MakeBuild(client_vendor_, "2.0.0", 4096);
  ReleaseOptions base;
  base.client_upgrade = true;  // a base release never starts a wave, whatever its manifest says
  base.files = PayloadWith(b);
  vendor_->Add("base", "1.0.0", base);
  ReleaseOptions addon = base;
  addon.kind = packages::Kind::kAddon;
  vendor_->Add("reports", "1.0.0", addon);
  ReleaseOptions plain;
  plain.files = PayloadWith(b);  // carries the file but does not say client_upgrade
  vendor_->Add("tools", "1.0.0", plain);
  ReleaseOptions site;
  site.client_upgrade = true;
  site.files = PayloadWith(b);
  vendor_->Add("site", "5.0.0", site);
  ReleaseOptions bare;
  bare.client_upgrade = true;  // says so, but has no client-builds.json
  vendor_->Add("extras", "1.0.0", bare);
  vendor_->Publish();
  World w(*vendor_, clock_);
  for (const char* id : {"base-1.0.0", "reports-1.0.0", "tools-1.0.0", "site-5.0.0", "extras-1.0.0"}) w.Provision(id);

  auto files = w.agent->ClientBuildFiles();
  ASSERT_TRUE(files.ok()) << files.error().message();
  ASSERT_EQ(files->size(), 2u);
  EXPECT_EQ((*files)[0].package, "extras");
  EXPECT_FALSE(fs::exists((*files)[0].path));
  EXPECT_EQ((*files)[1].package, "site");
  EXPECT_EQ((*files)[1].version, "5.0.0");
  EXPECT_TRUE(fs::exists((*files)[1].path)) << (*files)[1].path;
  EXPECT_EQ(ReadAll((*files)[1].path.parent_path() / b.entry["path"].get<std::string>()), b.bytes);
}

TEST_F(RelayHostTest, ANewSetOfBuildsStartsAWaveThatBringsEveryClientUpToDate) {
  const BuildFiles b2 = MakeBuild(client_vendor_, "2.0.0", 200 * 1024 + 11);
  ReleaseOptions o;
  o.client_upgrade = true;
  o.files = PayloadWith(b2);
  vendor_->Add("site", "5.1.0", o);
  vendor_->Add("base", "1.0.0");
  vendor_->Publish();
  World w(*vendor_, clock_);
  ConfigureRelay(w);
  WriteVendorKey(w.root());
  w.Provision("base-1.0.0");

  std::vector<std::string> lines;
  std::mutex lines_mu;
  auto host = RelayHost::Start(w.config, [&](const std::string& l) {
    std::lock_guard lock(lines_mu);
    lines.push_back(l);
  });
  ASSERT_TRUE(host.ok()) << host.error().message();
  RelayHost& relay = **host;
  Settings settings;
  settings.max_concurrent_client_upgrades = 3;
  settings.max_client_upgrade_bandwidth = 4u << 20;

  // Every provisioned client is listed from the start, offline.
  auto status = ParseJson(AskRelay(w.config.RelaySocket(), "status").value()).value();
  EXPECT_EQ(status["clients"]["total"], kClients);
  EXPECT_EQ(status["clients"]["offline"], kClients);

  relay::sim::Fleet fleet(FleetOpts(relay.port()), Specs(), SystemRandom::Instance());
  ASSERT_TRUE(fleet.Start().ok());
  ASSERT_TRUE(Eventually([&] { return relay.Describe()["connections"]["clients_online"] == kClients; }));

  // A base install changes nothing: no builds, no wave.
  auto files = w.agent->ClientBuildFiles();
  ASSERT_TRUE(files.ok());
  ASSERT_OK(relay.Sync(*files, settings));
  EXPECT_EQ(relay.Describe()["builds"].size(), 0u);
  EXPECT_EQ(relay.Describe()["clients"]["current"], kClients) << "nothing to upgrade to: every client is current";
  EXPECT_EQ(relay.Describe()["settings"]["max_concurrent_client_upgrades"], 3);

  // The software release that brings client builds: the wave runs to the end.
  w.Provision("site-5.1.0");
  files = w.agent->ClientBuildFiles();
  ASSERT_TRUE(files.ok());
  ASSERT_OK(relay.Sync(*files, settings));
  EXPECT_EQ(relay.Describe()["builds"][0]["package"], "site 5.1.0");
  ASSERT_TRUE(Eventually([&] { return fleet.AllAtVersion("2.0.0"); })) << relay.Describe().dump();
  ASSERT_TRUE(Eventually([&] { return relay.Describe()["clients"]["current"] == kClients; }));
  const auto summary = fleet.Summary();
  EXPECT_EQ(summary.upgrades_installed, static_cast<std::uint64_t>(kClients));
  EXPECT_EQ(summary.upgrades_failed, 0u);
  EXPECT_LE(summary.max_concurrent_downloading, 3u);
  const auto started = relay.Describe()["upgrades"]["started"].get<std::uint64_t>();

  // The same builds again (a later cycle, a restart's first sync): no new wave.
  ASSERT_OK(relay.Sync(*files, settings));
  EXPECT_EQ(relay.Describe()["upgrades"]["started"].get<std::uint64_t>(), started);

  // The export through the control socket (what `appliance-agent clients --export` prints).
  const std::string csv = AskRelay(w.config.RelaySocket(), "export csv").value();
  std::size_t rows = 0;
  for (std::size_t p = 0; (p = csv.find("\r\n", p)) != std::string::npos; p += 2) ++rows;
  EXPECT_EQ(rows, static_cast<std::size_t>(kClients) + 1);
  EXPECT_NE(csv.find("\"ep-7\",\"linux-x86_64\",\"2.0.0\",\"current\""), std::string::npos) << csv.substr(0, 400);
  auto json = ParseJson(AskRelay(w.config.RelaySocket(), "export json").value());
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["clients"].size(), static_cast<std::size_t>(kClients));
  auto unknown = AskRelay(w.config.RelaySocket(), "drop tables");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.error().message().find("unknown request"), std::string::npos);

  // The CLI command asks the same socket.
  const fs::path config_file = w.root() / "agent.json";
  Json cj = w.config.ToJson();
  cj["director_key_file"] = (w.root() / "director.pub").string();
  ASSERT_OK(WriteFileAtomic(config_file, cj.dump()));
  std::ostringstream out, err;
  EXPECT_EQ(ClientsMain(config_file.string(), {}, out, err), 0) << err.str();
  EXPECT_NE(out.str().find("Clients: 24 (24 current, 0 upgrade pending, 0 upgrading, 0 failed, 0 offline)"),
            std::string::npos)
      << out.str();
  EXPECT_NE(out.str().find("Client build: linux-x86_64 2.0.0"), std::string::npos) << out.str();
  std::ostringstream out2, err2;
  EXPECT_EQ(ClientsMain(config_file.string(), {"--export", "xml"}, out2, err2), 2);
  EXPECT_NE(err2.str().find("csv or json"), std::string::npos);

  // Drain (before a cluster node's upgrade): no session is open, so it is drained at once.
  std::ostringstream out3, err3;
  EXPECT_EQ(ClientsMain(config_file.string(), {"drain", "--wait", "10"}, out3, err3), 0) << err3.str();
  EXPECT_NE(out3.str().find("drained: no session remains"), std::string::npos) << out3.str();
  EXPECT_TRUE(relay.Describe()["connections"]["draining"].get<bool>());

  // One relay per state directory.
  auto second = RelayHost::Start(w.config, {});
  ASSERT_FALSE(second.ok());
  EXPECT_EQ(second.error().code(), Errc::kPolicy);
  EXPECT_NE(second.error().message().find("another agent daemon"), std::string::npos);
  fleet.Stop();
  host->reset();
  EXPECT_FALSE(fs::exists(w.config.RelaySocket()));
  auto gone = AskRelay(w.config.RelaySocket(), "status");
  ASSERT_FALSE(gone.ok());
  EXPECT_NE(gone.error().message().find("no running agent daemon"), std::string::npos);
  // The check-ins were saved: a restarted relay lists the clients with their new version.
  auto store = relay::JsonFileClientStore::Open(w.config.relay->clients);
  ASSERT_TRUE(store.ok());
  EXPECT_EQ((*store)->FindClient("ep-3")->version, "2.0.0");
  std::lock_guard lock(lines_mu);
  bool announced = false;
  for (const auto& l : lines) announced = announced || l.find("client upgrade wave: linux-x86_64 2.0.0 (from site 5.1.0)") != std::string::npos;
  EXPECT_TRUE(announced);
}

TEST_F(RelayHostTest, BadBuildsFilesAreRefusedAndThePreviousBuildsStay) {
  vendor_->Add("base", "1.0.0");
  vendor_->Publish();
  World w(*vendor_, clock_);
  ConfigureRelay(w);
  auto host = RelayHost::Start(w.config, {});
  ASSERT_TRUE(host.ok()) << host.error().message();
  RelayHost& relay = **host;
  const Settings settings;
  const fs::path dir = w.root() / "pkg";
  const BuildFiles good = MakeBuild(client_vendor_, "2.0.0", 1000);
  fs::create_directories(dir / "clients");
  ASSERT_OK(WriteFileAtomic(dir / "clients" / "agent-2.0.0.bin", good.bytes));
  ASSERT_OK(WriteFileAtomic(dir / "client-builds.json", Json{{"builds", {good.entry}}}.dump()));
  ClientBuildsFile f{"site", "5.1.0", dir / "client-builds.json"};
  ASSERT_OK(relay.Sync({f}, settings));
  ASSERT_EQ(relay.Describe()["builds"].size(), 1u);

  const std::vector<std::pair<Json, std::string>> bad = {
      {Json{{"builds", {{{"platform", kPlatform}}}}}, "field 'version'"},
      {[&] { Json e = good.entry; e["path"] = "../outside.bin"; return Json{{"builds", {e}}}; }(), "field 'path'"},
      {[&] { Json e = good.entry; e["path"] = "/etc/passwd"; return Json{{"builds", {e}}}; }(), "field 'path'"},
      {[&] { Json e = good.entry; e["sha256"] = std::string(64, 'a'); return Json{{"builds", {e}}}; }(), "SHA-256"},
      {[&] { Json e = good.entry; e["path"] = "clients/none.bin"; return Json{{"builds", {e}}}; }(), "none.bin"},
      {Json::array(), "not a JSON object"},
  };
  for (const auto& [content, want] : bad) {
    ASSERT_OK(WriteFileAtomic(dir / "client-builds.json", content.dump()));
    auto st = relay.Sync({ClientBuildsFile{"site", "5.2.0", f.path}}, settings);
    ASSERT_FALSE(st.ok()) << content.dump();
    EXPECT_NE(st.error().message().find(want), std::string::npos) << st.error().message();
    EXPECT_NE(st.error().message().find("site 5.2.0"), std::string::npos) << st.error().message();
    EXPECT_EQ(relay.Describe()["builds"][0]["package"], "site 5.1.0") << "the previous builds stay";
  }
}

}  // namespace
}  // namespace upkeep::agent
