// The updates page's endpoint clients panel (clients_panel.cpp) over real HTTPS on loopback: a fake
// relay control socket (the protocol of relay_host.hpp's AskRelay: one request line, the answer,
// close) gives the counts and the exports; the throttles form is validated with Settings::Set's
// rules and applied by a "settings" job over a real agent state (the core tests' world).
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <atomic>
#include <cstring>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "../core/core_world.hpp"
#include "page_test_kit.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/web/password.hpp"

// In the kit's namespace: its names come first (net::test's HttpResponse, not the agent's).
namespace upkeep::agent::pagetest {
namespace {

constexpr const char* kViewerPassword = "viewer-horse-42";

// A relay control socket that answers from a table (or, `silent`, never answers).
class FakeControlSocket {
 public:
  FakeControlSocket(const fs::path& path, std::map<std::string, std::string> answers, bool silent = false)
      : answers_(std::move(answers)), silent_(silent) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::strncpy(addr.sun_path, path.c_str(), sizeof(addr.sun_path) - 1);
    EXPECT_EQ(::bind(fd_, reinterpret_cast<const sockaddr*>(&addr), sizeof(addr)), 0) << std::strerror(errno);
    EXPECT_EQ(::listen(fd_, 8), 0);
    thread_ = std::thread([this] { Serve(); });
  }
  ~FakeControlSocket() {
    stop_ = true;
    thread_.join();
    ::close(fd_);
  }
  std::vector<std::string> requests() {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  void Serve() {
    std::vector<int> held;  // silent: connections kept open, never answered
    while (!stop_) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, 50) <= 0) continue;
      const int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) continue;
      std::string line;
      char ch = 0;
      while (::read(c, &ch, 1) == 1 && ch != '\n') line += ch;
      {
        std::lock_guard lock(mu_);
        requests_.push_back(line);
      }
      if (silent_) {
        held.push_back(c);
        continue;
      }
      auto it = answers_.find(line);
      const std::string answer = it != answers_.end() ? it->second : "error: unknown request\n";
      (void)!::write(c, answer.data(), answer.size());
      ::close(c);
    }
    for (int c : held) ::close(c);
  }

  int fd_ = -1;
  std::map<std::string, std::string> answers_;
  bool silent_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::mutex mu_;
  std::vector<std::string> requests_;
};

Json RelayStatus() {
  return Json::parse(R"({"listen": "127.0.0.1:0", "port": 7443,
    "connections": {"open": 3},
    "clients": {"total": 10, "current": 4, "upgrade pending": 3, "upgrading": 1, "failed": 1, "offline": 1},
    "upgrades": {"started": 5, "installed": 4, "bytes_sent": 1000},
    "settings": {"max_concurrent_client_upgrades": 7, "max_client_upgrade_bandwidth": 2000000},
    "builds": [{"platform": "linux-x86_64", "version": "<b>2.0.0</b>", "sha256": "ab", "length": 3, "package": "software"}]})");
}

const std::string kCsv = "id,platform,version,state\nep-1,linux-x86_64,2.0.0,current\n";

class ClientsPanelTest : public PageTest {
 protected:
  ClientsPanelTest() : PageTest(NowSeconds()) {}
  void SetUp() override {
    AddStandardReleases(vendor_);
    world_ = std::make_unique<World>(vendor_, clock_);
    world_->Provision("base-1.0.0");
    world_->Close();
    AgentConfig& c = world_->config;
    c.identity_file = world_->root() / "identity.json";
    c.director_key_file = world_->root() / "director.pub";
    ASSERT_TRUE(vendor_.identity().Save(c.identity_file).ok());
    ASSERT_TRUE(WriteFileAtomic(c.director_key_file, vendor_.director().public_key().ToJson().dump()).ok());
    RelayConfig relay;
    relay.listen = "127.0.0.1:0";
    relay.certificate = world_->root() / "relay.pem";
    relay.private_key = world_->root() / "relay.key";
    relay.clients = world_->root() / "clients.json";
    c.relay = relay;
    TrustCertificate(world_->root());
    AddAccount("admin", web::Role::kAdmin, kAdminPassword);
    AddAccount("viewer", web::Role::kReadOnly, kViewerPassword);
  }

  void StartHost() {
    WebDaemonLink link;
    link.jobs = &jobs_;
    link.config = &world_->config;
    StartWebHost(source_, link);
  }

  HttpResponse PostThrottles(Jar& jar, const std::string& fields) {
    return Submit(jar, "/", "/clients/settings", fields);
  }

  Settings StoredSettings() {
    auto rt = OpenAgentRuntime(world_->config, true);
    EXPECT_TRUE(rt.ok()) << rt.error().message();
    return rt.ok() ? (*rt)->agent->CurrentSettings() : Settings{};
  }

  Vendor vendor_{clock_};
  std::unique_ptr<World> world_;
  FakeSource source_;
};

TEST_F(ClientsPanelTest, WithoutARelaySectionThereIsNoPanelAndNoRoute) {
  world_->config.relay.reset();
  StartHost();
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_FALSE(Has(page.body, "Endpoint clients"));
  EXPECT_EQ(Do("GET", "/clients/export.csv", &jar).status, 404);
}

TEST_F(ClientsPanelTest, CountsWaveAndThrottlesFromTheRelayAndTheExports) {
  FakeControlSocket relay(world_->config.RelaySocket(),
                          {{"status", RelayStatus().dump(2) + "\n"}, {"export csv", kCsv}, {"export json", "[{\"id\":\"ep-1\"}]\n"}});
  StartHost();
  Jar jar = LoginAs("viewer", kViewerPassword);  // any signed-in role sees the panel and exports
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "<h2>Endpoint clients</h2>")) << page.body;
  EXPECT_TRUE(Has(page.body, "id=\"clients-current\">4<"));
  EXPECT_TRUE(Has(page.body, "id=\"clients-upgrade-pending\">3<"));
  EXPECT_TRUE(Has(page.body, "id=\"clients-upgrading\">1<"));
  EXPECT_TRUE(Has(page.body, "id=\"clients-failed\">1<"));
  EXPECT_TRUE(Has(page.body, "id=\"clients-offline\">1<"));
  EXPECT_TRUE(Has(page.body, "id=\"clients-total\">10<"));
  EXPECT_TRUE(Has(page.body, "4 of 10 clients current (40%)"));
  EXPECT_TRUE(Has(page.body, "linux-x86_64 &lt;b&gt;2.0.0&lt;/b&gt;"));  // escaped
  EXPECT_TRUE(Has(page.body, "name=\"max_concurrent_client_upgrades\" type=\"number\" autocomplete=\"off\" required value=\"7\""))
      << page.body;
  EXPECT_TRUE(Has(page.body, "value=\"2000000\""));
  EXPECT_TRUE(Has(page.body, "disabled>Apply the throttles"));  // not an admin

  auto csv = Do("GET", "/clients/export.csv", &jar);
  ASSERT_EQ(csv.status, 200);
  EXPECT_EQ(csv.body, kCsv);
  EXPECT_EQ(csv.Header("Content-Disposition").value_or(""), "attachment; filename=\"clients.csv\"");
  EXPECT_EQ(csv.Header("Content-Type").value_or("").rfind("text/csv", 0), 0u);
  auto json = Do("GET", "/clients/export.json", &jar);
  ASSERT_EQ(json.status, 200);
  EXPECT_EQ(json.body, "[{\"id\":\"ep-1\"}]\n");
  EXPECT_EQ(json.Header("Content-Disposition").value_or(""), "attachment; filename=\"clients.json\"");
  // Without a session: no export.
  auto anon = Do("GET", "/clients/export.csv");
  EXPECT_EQ(anon.status, 303);
  EXPECT_FALSE(Has(anon.body, "ep-1"));
  const auto asked = relay.requests();
  EXPECT_NE(std::find(asked.begin(), asked.end(), "export csv"), asked.end());
  EXPECT_NE(std::find(asked.begin(), asked.end(), "status"), asked.end());
}

TEST_F(ClientsPanelTest, ThrottlesAreValidatedAtTheFieldRoleCheckedAndAppliedByAJob) {
  FakeControlSocket relay(world_->config.RelaySocket(), {{"status", RelayStatus().dump() + "\n"}});
  StartHost();
  Jar admin = LoginAs("admin", kAdminPassword);
  auto r = PostThrottles(admin, "max_concurrent_client_upgrades=0&max_client_upgrade_bandwidth=1000");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"max_concurrent_client_upgrades-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "max_concurrent_client_upgrades must be 1..100000"));
  EXPECT_TRUE(Has(r.body, "id=\"max_client_upgrade_bandwidth-error\""));
  EXPECT_TRUE(Has(r.body, "max_client_upgrade_bandwidth must be 16384"));
  EXPECT_TRUE(Has(r.body, "value=\"1000\""));  // what was typed comes back
  r = PostThrottles(admin, "max_concurrent_client_upgrades=abc&max_client_upgrade_bandwidth=");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"max_concurrent_client_upgrades-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "id=\"max_client_upgrade_bandwidth-error\""));
  EXPECT_TRUE(jobs_.Recent(10).empty());

  // Other roles and forms without the token are refused.
  Jar viewer = LoginAs("viewer", kViewerPassword);
  EXPECT_EQ(PostThrottles(viewer, "max_concurrent_client_upgrades=20&max_client_upgrade_bandwidth=3000000").status, 403);
  EXPECT_EQ(Do("POST", "/clients/settings", &admin, "max_concurrent_client_upgrades=20&max_client_upgrade_bandwidth=3000000").status,
            403);
  EXPECT_TRUE(jobs_.Recent(10).empty());

  r = PostThrottles(admin, "max_concurrent_client_upgrades=20&max_client_upgrade_bandwidth=3000000");
  ASSERT_EQ(r.status, 303) << r.body;
  const std::string loc = r.Header("Location").value_or("");
  ASSERT_EQ(loc.rfind("/jobs/", 0), 0u);
  EXPECT_EQ(StoredSettings().max_concurrent_client_upgrades, 10u) << "nothing is stored before the daemon runs the job";
  {
    auto rt = OpenAgentRuntime(world_->config, false);
    ASSERT_TRUE(rt.ok()) << rt.error().message();
    jobs_.RunPending(**rt);
  }
  auto job = jobs_.Get(std::stoull(loc.substr(6)));
  ASSERT_TRUE(job.has_value());
  EXPECT_EQ(job->kind, "settings");
  EXPECT_EQ(job->state, "succeeded") << job->result;
  const Settings s = StoredSettings();
  EXPECT_EQ(s.max_concurrent_client_upgrades, 20u);
  EXPECT_EQ(s.max_client_upgrade_bandwidth, 3000000u);
  EXPECT_EQ(s.poll_interval, Settings{}.poll_interval);  // the other settings are kept
}

TEST_F(ClientsPanelTest, ARelayThatDoesNotAnswerIsShownWithoutHoldingThePage) {
  StartHost();
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);  // nothing listens
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "id=\"relay-down\"")) << page.body;
  EXPECT_TRUE(Has(page.body, "The relay does not answer"));
  EXPECT_FALSE(Has(page.body, "id=\"client-counts\""));

  FakeControlSocket silent(world_->config.RelaySocket(), {}, true);
  const auto start = std::chrono::steady_clock::now();
  page = Do("GET", "/", &jar);
  const auto took = std::chrono::steady_clock::now() - start;
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "The relay does not answer")) << page.body;
  EXPECT_LT(took, std::chrono::seconds(10));
}

TEST_F(ClientsPanelTest, ARelayAnsweringGarbageIsAnErrorNotACrash) {
  FakeControlSocket relay(world_->config.RelaySocket(), {{"status", "{not json"}});
  StartHost();
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "The relay does not answer: the relay&#39;s status")) << page.body;
}

}  // namespace
}  // namespace upkeep::agent::pagetest
