// The appliance updates page the agent daemon serves over HTTPS (docs/agent/web.md, issue 7 item 1):
// first-start setup with a one-time token, login/logout, the updates page (status, "Check for
// updates", the plan in install order with reasons, history) and GET /api/v1/status, all behind
// the upkeep_web Authenticator (docs/web-security.md): Argon2id on the server's worker pool,
// session cookies, CSRF on every form, login rate limiting, roles (admin acts, read-only views).
//
// The page reads the agent through UpdatesSource, so tests give it a fake; the daemon's is
// RuntimeUpdatesSource (a read-only AgentRuntime per request, SIGUSR1 to itself for "check now").
//
// Threads: WebHost's handlers run on the server's worker pool and may call the UpdatesSource from
// several threads at once (it must be thread-safe). Destruction stops the server (waiting for
// requests in progress). Errors name the file or address at fault; no password, token or session
// id is ever logged or put in an error.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "upkeep/agent/cli.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/web/accounts.hpp"

namespace upkeep::agent {

// What the updates page shows. Status() returns one JSON object (the body of GET /api/v1/status):
//   {"agent_version": "0.4.0", "system_time": RFC 3339, "time_synchronised": bool|null,
//    "installed": [{"name", "version", "kind"}] (by name),
//    "last_check": null | {"at", "ok", "error"?, "steps"?, "clock_offset_seconds"?},
//    "operation": null | {"name", "version", "phase"},
//    "plan": [{"name", "version", "kind", "state", "reason"}] (install order), "plan_error"?: text,
//    "history": [journal record] (newest first: {"at", "type", "name"?, "version"?, "phase"?,
//               "message"?, "log_tail"?, ...}),
//    "auto_install": bool, "maintenance_windows": [text], "next_window": RFC 3339 | null,
//    "install_approval": null | {"name", "version", "by", "at"}}
// Fields of unexpected types are shown as absent, never trusted.
class UpdatesSource {
 public:
  virtual ~UpdatesSource() = default;
  virtual Expected<Json> Status() = 0;
  // Asks the daemon to check for updates now (returns at once; the check runs in the daemon).
  virtual upkeep::Status RequestCheck() = 0;
};

// The daemon's source: Status() opens OpenAgentRuntime(config, read_only=true) per call (the
// daemon's store lock is not needed) and reads the last `history` journal records; the clock's
// synchronisation comes from adjtimex(2) (STA_UNSYNC). RequestCheck() sends SIGUSR1 to this
// process (the daemon's "check now", see RunDaemon in core/cli.cpp).
std::unique_ptr<UpdatesSource> MakeRuntimeUpdatesSource(const AgentConfig& config, std::size_t history = 50);

struct WebHostOptions {
  std::string listen;  // "ADDRESS:PORT"; port 0 picks one (see WebHost::port())
  std::filesystem::path certificate;
  std::filesystem::path private_key;
  // The site origin browsers use ("https://appliance.example:8443"), checked against Origin and
  // Referer. Empty: "https://" + the listen address (the host name for a wildcard) + ":" + port.
  std::string origin;
  unsigned worker_threads = 2;
  bool fast_password_hashing = false;  // tests only: PasswordCost::MinForTests()
};

// What the page needs of the daemon beyond reading its state: the queue its actions (install,
// upload, backup, ...) go through and the configuration. Both null when the page runs alone (tests
// with a fake UpdatesSource): the actions are then shown as unavailable.
struct WebDaemonLink {
  JobQueue* jobs = nullptr;
  const AgentConfig* config = nullptr;
};

class WebHost {
 public:
  // Starts the HTTPS server. `accounts`, `source`, `clock` and `random` must outlive the host.
  // While no account exists, issues the setup token and logs the one line
  // "web: first start: open ORIGIN/setup with the one-time setup token TOKEN (valid 24 h)".
  // Errors: a bad listen address, unreadable certificate or key, a port in use.
  static Expected<std::unique_ptr<WebHost>> Start(const WebHostOptions& options, web::AccountRepository& accounts,
                                                  UpdatesSource& source, const Clock& clock, Random& random,
                                                  std::function<void(const std::string&)> log,
                                                  WebDaemonLink link = {});
  ~WebHost();
  WebHost(const WebHost&) = delete;
  WebHost& operator=(const WebHost&) = delete;

  std::uint16_t port() const;
  const std::string& origin() const;

  struct Impl;

 private:
  explicit WebHost(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The daemon service serving the page when the configuration has a "web" section: accounts in
// STATE/web-accounts.json, sessions in memory (a restart logs everyone out).
DaemonServiceFactory WebDaemonService();

}  // namespace upkeep::agent
