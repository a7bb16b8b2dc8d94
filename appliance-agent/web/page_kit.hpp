// The pieces every part of the appliance updates page is built from (internal to
// upkeep_agent_web): the page shell with its security headers, form fields with their errors,
// the admin-form guard, defensive readers of the status JSON, and the Panel interface. The page
// is the host's core (status, setup, sign-in; web_host.cpp) plus panels, one file each, that
// add a <section> and their own routes: jobs (jobs_panel.cpp), install and history
// (install_panel.cpp), air-gapped updates (airgap_panel.cpp), backups (backup_panel.cpp),
// endpoint clients (clients_panel.cpp).
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <variant>

#include "upkeep/agent/config.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/net/http.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/web/authenticator.hpp"
#include "upkeep/web/forms.hpp"

namespace upkeep::agent::webpage {

// ---- responses (every one carries the security headers)

net::Response Secure(net::Response r);
// The page shell: title, the stylesheet, `body` as given (already escaped HTML).
net::Response Page(int status, const std::string& title, const std::string& body);
net::Response Redirect(const std::string& to);
net::Response ErrorPage(int status, const std::string& message);
net::Response FromRefusal(const web::Refusal& refusal);
// A static asset (stylesheet, script, icon), cacheable for an hour.
net::Response Asset(const char* body, const char* content_type);

// A form shown again with its errors next to the fields is a page that worked: 200, so the
// browser logs no failed load. A rate-limited login keeps its 429, server errors their status.
inline int FormStatus(int status) { return status == 429 || status >= 500 ? status : 200; }

// `body` as a download named `filename` (Content-Disposition: attachment), with the security
// headers. `filename` must need no quoting (callers build it from validated ids).
net::Response Attachment(net::Response body, const std::string& filename);
// A JSON error {"error": {"code", "message"}} with the security headers: the answer a page script
// reads (the raw-body uploads).
net::Response JsonRefusal(int status, const std::string& code, const std::string& message);

// ---- forms

std::string Hidden(const std::string& name, const std::string& value);
std::string CsrfField(const std::string& token);  // the hidden csrf_token input
// A labelled input; its error (if `errors` has one for `name`) right after it, linked by
// aria-describedby. `type` "text", "password", "number", ...; `required` adds the attribute.
std::string Field(const std::string& name, const std::string& label, const std::string& type,
                  const std::string& value, const std::map<std::string, std::string>& errors,
                  const std::string& autocomplete, bool required = true);
// "<p class=error role=alert>" for a message not tied to one field; empty for an empty message.
std::string Alert(const std::string& message);

// An authenticated, CSRF-checked form post by an account with at least `role`.
struct FormPost {
  web::Principal who;
  web::Form form;
};
// The refusal page (or the redirect to /login) otherwise. `limits` bounds the form.
std::variant<FormPost, net::Response> AcceptForm(const net::Request& req, web::Authenticator& auth, web::Role role,
                                                 const web::FormLimits& limits = {});

// ---- raw-body uploads

// The guard of a POST route whose body is a file a page script sends as is (the form's CSRF token
// for that route in the X-CSRF-Token header), streamed by the server into dir() before the
// handler runs: nothing is written for a request refused by its headers. One per route; lives as
// long as the panel that registered the route. Thread-safe.
class RawUpload {
 public:
  // Creates `dir` (0700) and deletes the files an earlier run left in it (never used later).
  // `authenticator` is PanelEnv::authenticator: the precheck authenticates with it.
  Status Prepare(const std::filesystem::path& dir, std::function<web::Authenticator*()> authenticator);
  const std::filesystem::path& dir() const { return dir_; }
  // The route's options: the body to a file in dir(), at most `max_bytes`; the precheck is
  // Precheck() then `more` (the route's own checks, in memory on the I/O thread).
  net::RouteOptions Options(std::uint64_t max_bytes,
                            std::function<std::optional<net::Response>(const net::Request&)> more = {});
  // Session, admin role, the X-CSRF-Token header for the request's path, the Origin/Referer; the
  // refusal as a JSON error, or nullopt with *who (may be null) set.
  std::optional<net::Response> Check(const net::Request& req, web::Authenticator& auth, web::Principal* who) const;
  // Before any body byte is written: an empty body, then Check(); 503 while the host starts.
  std::optional<net::Response> Precheck(const net::Request& req) const;
  // Deletes every file in dir() but `keep`.
  void RemoveFiles(const std::filesystem::path& keep = {}) const;

 private:
  std::filesystem::path dir_;
  std::function<web::Authenticator*()> authenticator_;
};

// ---- reading the status JSON defensively (fields of unexpected types read as absent)

std::string Str(const Json& j, const char* key);
const Json& Arr(const Json& j, const char* key);
// A CSS class fragment from free text ("upgrade pending" -> "upgrade-pending").
std::string ClassName(const std::string& text);

// ---- panels

// What the host gives a panel. `jobs` and `config` are null when the page runs without a daemon
// (unit tests with a fake UpdatesSource): panels then show their actions as unavailable.
struct PanelEnv {
  UpdatesSource* source = nullptr;
  JobQueue* jobs = nullptr;
  const AgentConfig* config = nullptr;
  const Clock* clock = nullptr;
  web::AccountRepository* accounts = nullptr;    // the page's accounts (accounts_panel.cpp)
  // The host's Authenticator for code that runs outside a route handler (an upload's precheck on
  // the I/O thread); null while the host starts.
  std::function<web::Authenticator*()> authenticator;
  std::function<void(const std::string&)> log;  // may be empty
};

// A route's handler, run on the worker pool with the host's Authenticator.
using PanelHandler = std::function<net::Response(const net::Request&, web::Authenticator&)>;

class RouteSink {
 public:
  virtual ~RouteSink() = default;
  // `options.use_worker_pool` is forced on; max_body_bytes defaults to 64 KiB.
  virtual Status Add(net::Method method, const std::string& path, PanelHandler handler,
                     net::RouteOptions options = {}) = 0;
};

class Panel {
 public:
  virtual ~Panel() = default;
  virtual Status Register(RouteSink& routes) = 0;
  // The panel's part of the updates page (a <section>, or "" to show nothing); `status` is
  // UpdatesSource::Status(). Runs on a worker thread, possibly several at once.
  virtual std::string Render(const web::Principal& who, const Json& status, web::Authenticator& auth) = 0;
  // CSS rules the panel adds to /static/style.css (inline styles are refused by the CSP).
  virtual std::string Css() const { return {}; }
};

// In page order below the status section.
std::unique_ptr<Panel> MakeJobsPanel(const PanelEnv& env);     // jobs_panel.cpp
std::unique_ptr<Panel> MakeInstallPanel(const PanelEnv& env);  // install_panel.cpp: the plan, install
std::unique_ptr<Panel> MakeAirgapPanel(const PanelEnv& env);   // airgap_panel.cpp
std::unique_ptr<Panel> MakeBackupPanel(const PanelEnv& env);   // backup_panel.cpp
std::unique_ptr<Panel> MakeClientsPanel(const PanelEnv& env);  // clients_panel.cpp
std::unique_ptr<Panel> MakeHistoryPanel(const PanelEnv& env);  // install_panel.cpp
std::unique_ptr<Panel> MakeAccountsPanel(const PanelEnv& env); // accounts_panel.cpp: /account, /accounts

}  // namespace upkeep::agent::webpage
