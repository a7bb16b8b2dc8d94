// The appliance updates page's test kit: one copy of what every HTTPS test of the page needs
// (web_host_test, web_install_test, airgap_web_test, backup_panel_test, clients_panel_test):
// a cookie jar, the form token finders, a fake UpdatesSource, and PageTest, a fixture that starts
// a WebHost on loopback with a self-signed certificate and drives it with the net tests' raw TLS
// client (one request a connection), signing in through the page's own setup and login forms.
// Single-threaded use from the test body; the host's log lines arrive on its threads (log_mu_).
#pragma once

#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "test_client.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/web/accounts.hpp"

namespace upkeep::agent::pagetest {

using net::test::HttpResponse;
using net::test::RawClient;

// The cookies a browser would keep: Set-Cookie of every answer, an empty value deletes.
struct Jar {
  std::map<std::string, std::string> cookies;
  void Take(const HttpResponse& r);
  std::string Header() const;  // "a=1; b=2"
};

bool Has(const std::string& body, const std::string& text);
// The text after the first `marker` up to `end` (exclusive); "" without the marker.
std::string Between(const std::string& html, const std::string& marker, char end = '"');
// The csrf_token value of the form posting to `action`; "" without such a form.
std::string CsrfFor(const std::string& html, const std::string& action);
// The system time to the second (a FakeClock for tests whose agent state judges by the real one).
SysTime NowSeconds();

// An UpdatesSource whose Status() is `status` (an empty object unless set), or an I/O error with
// `fail`; counts RequestCheck calls.
class FakeSource final : public UpdatesSource {
 public:
  Expected<Json> Status() override;
  upkeep::Status RequestCheck() override;
  std::mutex mu;
  Json status = Json::object();
  bool fail = false;
  std::atomic<int> checks{0};
};

class PageTest : public ::testing::Test {
 protected:
  explicit PageTest(SysTime start) : clock_(start) {}
  void TearDown() override;

  // Writes a self-signed certificate into `dir` and makes the client trust it (before StartWebHost).
  void TrustCertificate(const std::filesystem::path& dir);
  // (Re)starts the page on 127.0.0.1:0 with the certificate, fast password hashing, the log kept
  // in log_, and `link` (jobs_ and the agent configuration when a test plays the daemon).
  void StartWebHost(UpdatesSource& source, const WebDaemonLink& link = {});

  // One request on a new connection. A POST gets `type` and the body's Content-Length unless
  // `extra` (raw header lines, each ending "\r\n") sets its own, and an Origin with post_origin_.
  HttpResponse Do(const std::string& method, const std::string& path, Jar* jar = nullptr, const std::string& body = "",
                  const std::string& extra = "", const std::string& type = "application/x-www-form-urlencoded");
  // GET the form page, then POST it with its token and `fields`.
  HttpResponse Submit(Jar& jar, const std::string& page, const std::string& action, const std::string& fields);

  // The one-time setup token of the latest start (a restarted host logs a new one); "" if none.
  std::string SetupToken();
  // Creates the first admin "admin" / kAdminPassword through /setup.
  void DoSetup();
  // Signs in through /login (expects the redirect to "/").
  Jar LoginAs(const std::string& name, const std::string& password);
  // An account made directly in the repository (cheap hashing).
  void AddAccount(const std::string& name, web::Role role, const std::string& password);
  std::string LogText();  // every log line, each ending "\n"

  static constexpr const char* kAdminPassword = "correct-horse-42";

  FakeClock clock_;
  JobQueue jobs_{clock_, {}};
  web::InMemoryAccountRepository accounts_;
  net::testing::CertificateFiles cert_;
  SSL_CTX* ctx_ = nullptr;
  bool post_origin_ = false;
  std::string origin_;  // "Origin: https://127.0.0.1:PORT\r\n" of the running host
  std::mutex log_mu_;
  std::vector<std::string> log_;
  std::unique_ptr<WebHost> host_;
};

}  // namespace upkeep::agent::pagetest
