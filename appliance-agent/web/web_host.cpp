// The appliance updates page (web_host.hpp, docs/agent/web.md): routes, HTML rendering, the
// pre-session form token, the daemon's UpdatesSource and the daemon service.
#include "upkeep/common/text.hpp"
#include "upkeep/agent/web_host.hpp"

#include <sys/timex.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <csignal>
#include <map>
#include <mutex>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/timing.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/web/authenticator.hpp"
#include "upkeep/web/forms.hpp"
#include "upkeep/web/rate_limit.hpp"
#include "upkeep/web/sessions.hpp"
#include "page_kit.hpp"

namespace upkeep::agent {

using net::Method;
using net::Request;
using net::Response;
using webpage::Arr;
using webpage::CsrfField;
using webpage::ErrorPage;
using webpage::Field;
using webpage::FormStatus;
using webpage::FromRefusal;
using webpage::Page;
using webpage::Redirect;
using webpage::Secure;
using webpage::Str;

namespace {

// ---------------------------------------------------------------------------------------------
// The daemon's UpdatesSource.

std::optional<bool> ClockSynchronised() {
  struct timex tx {};
  const int state = ::adjtimex(&tx);
  if (state == -1) return std::nullopt;
  return state != TIME_ERROR && (tx.status & STA_UNSYNC) == 0;
}

class RuntimeUpdatesSource final : public UpdatesSource {
 public:
  RuntimeUpdatesSource(AgentConfig config, std::size_t history) : config_(std::move(config)), history_(history) {}

  Expected<Json> Status() override {
    UPK_TRY_ASSIGN(auto rt, OpenAgentRuntime(config_, true));
    Agent& agent = *rt->agent;
    Store& store = *rt->store;
    Json out = Json::object();
    out["agent_version"] = kAgentVersion;
    out["system_time"] = FormatTimestamp(SystemClock::Instance().Now());
    const auto synced = ClockSynchronised();
    out["time_synchronised"] = synced ? Json(*synced) : Json(nullptr);
    Json installed = Json::array();
    const Json doc = agent.InstalledJson();  // kept: the loop must not range over a temporary's member
    for (const auto& [name, p] : doc["packages"].items()) {
      if (!p.is_object()) continue;
      installed.push_back({{"name", name}, {"version", p.value("version", "")}, {"kind", p.value("kind", "")}});
    }
    out["installed"] = installed;
    out["last_check"] = store.Get("last_check").value_or(Json(nullptr));
    Json op = store.Get("operation").value_or(Json(nullptr));
    if (op.is_object() && op.contains("step") && op["step"].is_object()) {
      out["operation"] = {{"name", op["step"].value("name", "")}, {"version", op["step"].value("version", "")},
                          {"phase", op.value("phase", "")}};
    } else {
      out["operation"] = nullptr;
    }
    Json plan = Json::array();
    auto planned = agent.Plan();
    if (planned.ok()) {
      for (const auto& p : *planned) {
        plan.push_back({{"name", p.step.name}, {"version", p.step.version.ToString()},
                        {"kind", packages::KindName(p.step.kind)}, {"state", p.state}, {"reason", p.reason}});
      }
    } else {
      out["plan_error"] = planned.error().message();
    }
    out["plan"] = plan;
    // What the install panel needs to offer "in the next maintenance window".
    const Settings settings = agent.CurrentSettings();
    out["auto_install"] = settings.auto_install;
    out["maintenance_windows"] = settings.maintenance_windows;
    out["next_window"] = nullptr;
    if (auto windows = MaintenanceWindows::Parse(settings.maintenance_windows); windows.ok() && !windows->always()) {
      out["next_window"] = FormatTimestamp(windows->NextStart(SystemClock::Instance().Now()));
    }
    out["install_approval"] = store.Get(kInstallApprovalDoc).value_or(Json(nullptr));
    Json history = Json::array();
    const std::uint64_t next = store.NextSeq("journal");
    const std::uint64_t first = std::max(store.FirstSeq("journal"), next > history_ ? next - history_ : 1);
    auto records = store.Read("journal", first, history_);
    if (records.ok()) {
      for (auto it = records->rbegin(); it != records->rend(); ++it) history.push_back(it->value);
    }
    out["history"] = history;
    return out;
  }

  upkeep::Status RequestCheck() override {
    // Process-directed, so the daemon's sigtimedwait (main thread) takes it; every thread blocks it.
    if (::kill(::getpid(), SIGUSR1) != 0) return Error(Errc::kIo, "cannot signal the daemon to check");
    return OkStatus();
  }

 private:
  AgentConfig config_;
  std::size_t history_;
};

constexpr const char* kCss =
    "body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em;color:#222}\n"
    "header{display:flex;justify-content:space-between;align-items:center;border-bottom:1px solid #ccc}\n"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;text-align:left;"
    "vertical-align:top}\n"
    "label{display:block;margin-top:.6em}input[type=text],input[type=password]{width:24em;max-width:100%}\n"
    ".error{color:#a00;font-weight:bold}.field-error{color:#a00;display:block}.ok{color:#060}\n"
    ".state-failed,.state-blocked{color:#a00}.state-next{color:#060;font-weight:bold}\n"
    "pre{background:#f4f4f4;padding:.5em;overflow:auto;max-height:20em}form.inline{display:inline}\n";

// The status section's live view of an install the daemon runs (by itself or for a job): while
// the page shows an operation, poll the status every 2 s, show its phase, and reload the page
// once it has ended (installed versions, plan and history change then). A file: the CSP allows
// no inline script.
constexpr const char* kStatusScript = R"JS('use strict';
(function () {
  const cell = document.getElementById('operation');
  if (!cell || cell.getAttribute('data-running') !== 'true') return;
  let timer = null;
  async function poll() {
    try {
      const r = await fetch('/api/v1/status', {credentials: 'same-origin'});
      if (!r.ok) return;
      const s = await r.json();
      const op = s.operation;
      if (op && typeof op === 'object') {
        document.getElementById('operation-step').textContent = String(op.name) + ' ' + String(op.version);
        document.getElementById('operation-phase').textContent = String(op.phase);
      } else {
        clearInterval(timer);
        cell.setAttribute('data-running', 'false');
        document.getElementById('operation-phase').textContent = 'finished; reloading';
        window.location.reload();
      }
    } catch (e) {
      document.getElementById('operation-phase').textContent = '(the appliance did not answer; retrying)';
    }
  }
  timer = setInterval(poll, 2000);
})();
)JS";

// The site icon at /favicon.ico: browsers ask for it on every page (a 404 otherwise). Not linked
// from the pages: a linked icon is a page resource, aborted (and reported) on quick navigations.
constexpr const char* kIconSvg =
    "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 16 16\"><rect width=\"16\" height=\"16\" rx=\"3\" "
    "fill=\"#060\"/><path d=\"M8 3 13 9H10v4H6V9H3z\" fill=\"#fff\"/></svg>\n";

}  // namespace

std::unique_ptr<UpdatesSource> MakeRuntimeUpdatesSource(const AgentConfig& config, std::size_t history) {
  return std::make_unique<RuntimeUpdatesSource>(config, history == 0 ? 1 : history);
}

// ---------------------------------------------------------------------------------------------
// WebHost

struct WebHost::Impl {
  WebHostOptions options;
  web::AccountRepository* accounts = nullptr;
  UpdatesSource* source = nullptr;
  const Clock* clock = nullptr;
  Random* random = nullptr;
  std::mutex random_mu;
  std::function<void(const std::string&)> log;
  std::string origin;
  std::uint16_t port = 0;
  std::unique_ptr<web::Authenticator> auth_owner;
  std::atomic<web::Authenticator*> published{nullptr};  // set once after Start (the port is known then)
  std::unique_ptr<net::Server> server;
  std::vector<std::unique_ptr<webpage::Panel>> panels;
  std::string css;  // the stylesheet: the host's rules and every panel's

  // ---- the pre-session form token (setup and login have no session yet): a double-submit cookie

  // The setup and login forms' token (no session yet): a double-submit cookie.
  const web::PreSessionToken form_token{"__Host-upkeep_form"};

  std::string FormToken(const Request& req, std::string* set_cookie) {
    std::lock_guard lock(random_mu);
    auto issued = form_token.ForRequest(req, *random);
    *set_cookie = issued.set_cookie;
    return issued.value;
  }

  std::optional<std::string> CheckFormToken(const Request& req, const web::Form& form) const {
    if (auto s = web::CheckOrigin(req, origin); !s.ok()) return s.error().message();
    return form_token.Check(req, form);
  }

  // ---- setup

  Response SetupForm(int status, const std::string& token, const std::string& name,
                     const std::map<std::string, std::string>& errors, const std::string& set_cookie,
                     const std::string& general = {}) {
    std::string body = "<h1>First start: create the administrator</h1>\n"
                       "<p>Enter the one-time setup token the agent printed in its log, and choose the "
                       "administrator's name and password (at least 12 characters).</p>\n";
    if (!general.empty()) body += "<p class=\"error\" role=\"alert\">" + HtmlEscape(general) + "</p>\n";
    body += "<form method=\"post\" action=\"/setup\">" + CsrfField(token) + "\n" +
            Field("setup_token", "Setup token", "text", "", errors, "off") +
            Field("name", "Administrator name", "text", name, errors, "username") +
            Field("password", "Password", "password", "", errors, "new-password") +
            Field("password2", "Password again", "password", "", errors, "new-password") +
            "<p><button type=\"submit\">Create the administrator</button></p></form>\n";
    Response r = Page(FormStatus(status), "Setup", body);
    if (!set_cookie.empty()) r.SetHeader("Set-Cookie", set_cookie);
    return r;
  }

  Response GetSetup(const Request& req, web::Authenticator& auth) {
    if (!auth.SetupPending()) return Redirect("/login");
    std::string set_cookie;
    const std::string token = FormToken(req, &set_cookie);
    return SetupForm(200, token, "", {}, set_cookie);
  }

  Response PostSetup(const Request& req, web::Authenticator& auth) {
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return ErrorPage(400, form.error().message());
    if (auto why = CheckFormToken(req, *form)) return ErrorPage(403, *why);
    if (!auth.SetupPending()) return ErrorPage(409, "setup is already done");
    std::map<std::string, std::string> errors;
    auto token = form->Single("setup_token");
    auto name = form->Single("name");
    auto password = form->Single("password");
    auto password2 = form->Single("password2");
    const std::string name_text = name.ok() ? *name : "";
    if (!token.ok() || token->empty()) errors["setup_token"] = "enter the setup token from the agent's log";
    if (!name.ok() || name->empty()) errors["name"] = "enter a name";
    if (!password.ok() || password->empty()) errors["password"] = "enter a password";
    if (!password2.ok() || (password.ok() && *password != *password2)) errors["password2"] = "the passwords differ";
    const std::string csrf = *form->Single(web::kCsrfField);
    if (!errors.empty()) return SetupForm(400, csrf, name_text, errors, "");
    auto made = auth.Setup(*token, *name, *password);
    if (!made.ok()) {
      const web::Refusal& r = made.refusal();
      if (r.status == 409) return ErrorPage(409, r.reason);
      if (r.status == 400) {
        errors[r.reason.find("password") != std::string::npos ? "password" : "name"] = r.reason;
      } else if (r.status == 401) {
        errors["setup_token"] = r.reason;
      } else {
        return SetupForm(r.status, csrf, name_text, errors, "", r.reason);
      }
      return SetupForm(r.status, csrf, name_text, errors, "");
    }
    if (log) log("web: the administrator '" + made->name + "' was created; setup is done");
    return Redirect("/login?setup=done");
  }

  // ---- login, logout

  Response LoginForm(int status, const std::string& token, const std::string& name,
                     const std::map<std::string, std::string>& errors, const std::string& set_cookie,
                     const std::string& note = {}) {
    std::string body = "<h1>Sign in to the appliance</h1>\n";
    if (!note.empty()) body += "<p class=\"ok\">" + HtmlEscape(note) + "</p>\n";
    body += "<form method=\"post\" action=\"/login\">" + CsrfField(token) + "\n" +
            Field("name", "Account name", "text", name, errors, "username") +
            Field("password", "Password", "password", "", errors, "current-password") +
            "<p><button type=\"submit\">Sign in</button></p></form>\n";
    Response r = Page(FormStatus(status), "Sign in", body);
    if (!set_cookie.empty()) r.SetHeader("Set-Cookie", set_cookie);
    return r;
  }

  Response GetLogin(const Request& req, web::Authenticator& auth) {
    if (auth.SetupPending()) return Redirect("/setup");
    std::string set_cookie;
    const std::string token = FormToken(req, &set_cookie);
    const bool after_setup = req.QueryParam("setup").value_or("") == "done";
    return LoginForm(200, token, "", {}, set_cookie, after_setup ? "The administrator was created: sign in." : "");
  }

  Response PostLogin(const Request& req, web::Authenticator& auth) {
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return ErrorPage(400, form.error().message());
    if (auto why = CheckFormToken(req, *form)) return ErrorPage(403, *why);
    std::map<std::string, std::string> errors;
    auto name = form->Single("name");
    auto password = form->Single("password");
    const std::string csrf = *form->Single(web::kCsrfField);
    const std::string name_text = name.ok() ? *name : "";
    if (!name.ok() || name->empty()) errors["name"] = "enter your account name";
    if (!password.ok() || password->empty()) errors["password"] = "enter your password";
    if (!errors.empty()) return LoginForm(400, csrf, name_text, errors, "");
    auto in = auth.Login(*name, *password, web::ClientAddress(req.remote()));
    if (!in.ok()) {
      const web::Refusal& r = in.refusal();
      errors["password"] = r.reason;
      Response resp = LoginForm(r.status, csrf, name_text, errors, "");
      if (r.status == 429) resp.SetHeader("Retry-After", std::to_string(r.retry_after.count()));
      return resp;
    }
    Response resp = Redirect("/");
    resp.SetHeader("Set-Cookie", in->set_cookie);
    return resp;
  }

  Response PostLogout(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return ErrorPage(400, form.error().message());
    if (auto refused = auth.CheckCsrf(req, who.value(), *form)) return FromRefusal(*refused);
    Response r = Redirect("/login");
    r.SetHeader("Set-Cookie", auth.Logout(req));
    return r;
  }

  // ---- the updates page

  std::string RenderUpdates(const web::Principal& who, const Json& s, web::Authenticator& auth,
                            const std::string& note) {
    std::string b = "<header><h1>Appliance updates</h1><div>Signed in as <strong>" + HtmlEscape(who.account.name) +
                    "</strong> (" + HtmlEscape(std::string(web::RoleName(who.account.role))) +
                    ") <a href=\"/account\">Account</a> <form class=\"inline\" method=\"post\" action=\"/logout\">" +
                    CsrfField(auth.CsrfToken(who, "/logout")) +
                    "<button type=\"submit\">Sign out</button></form></div></header>\n";
    if (!note.empty()) b += "<p class=\"ok\" role=\"status\">" + HtmlEscape(note) + "</p>\n";

    b += "<section id=\"status\"><h2>Status</h2>\n<table>";
    b += "<tr><th>Agent version</th><td id=\"agent-version\">" + HtmlEscape(Str(s, "agent_version")) + "</td></tr>";
    std::string sync = "unknown";
    if (s.is_object() && s.contains("time_synchronised") && s["time_synchronised"].is_boolean()) {
      sync = s["time_synchronised"].get<bool>() ? "synchronised" : "NOT synchronised";
    }
    b += "<tr><th>System time</th><td id=\"system-time\">" + HtmlEscape(Str(s, "system_time")) + " (" +
         HtmlEscape(sync) + ")</td></tr>";
    const Json last = s.is_object() && s.contains("last_check") ? s["last_check"] : Json(nullptr);
    std::string last_text = "never";
    if (last.is_object()) {
      const bool ok = last.contains("ok") && last["ok"].is_boolean() && last["ok"].get<bool>();
      last_text = Str(last, "at") + (ok ? " ok" : " failed: " + Str(last, "error"));
      if (ok && last.contains("steps")) last_text += ", " + Str(last, "steps") + " update(s) to install";
    }
    b += "<tr><th>Last check</th><td id=\"last-check\">" + HtmlEscape(last_text) + "</td></tr>";
    const Json op = s.is_object() && s.contains("operation") ? s["operation"] : Json(nullptr);
    if (op.is_object()) {
      // static/status.js polls the status while this row exists and reloads the page when it ends.
      b += "<tr><th>In progress</th><td id=\"operation\" data-running=\"true\">Installing <span id=\"operation-step\">" +
           HtmlEscape(Str(op, "name") + " " + Str(op, "version")) + "</span>: <span id=\"operation-phase\">" +
           HtmlEscape(Str(op, "phase")) + "</span></td></tr>";
    }
    b += "</table>\n<h3>Installed</h3>\n";
    const Json& installed = Arr(s, "installed");
    if (installed.empty()) {
      b += "<p>Nothing is installed yet.</p>\n";
    } else {
      b += "<table id=\"installed\"><tr><th>Package</th><th>Kind</th><th>Version</th></tr>";
      for (const auto& p : installed) {
        b += "<tr><td>" + HtmlEscape(Str(p, "name")) + "</td><td>" + HtmlEscape(Str(p, "kind")) + "</td><td>" +
             HtmlEscape(Str(p, "version")) + "</td></tr>";
      }
      b += "</table>\n";
    }
    // Shown to every role (disabled below admin): the server checks the role either way.
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    b += "<form method=\"post\" action=\"/check\">" + CsrfField(auth.CsrfToken(who, "/check")) +
         "<button type=\"submit\"" + std::string(admin ? "" : " disabled") + ">Check for updates</button>";
    if (!admin) b += " <span>(your role may view this page; an administrator checks for updates)</span>";
    b += "</form>\n";
    if (op.is_object()) b += "<script src=\"/static/status.js\"></script>\n";
    b += "</section>\n";

    for (const auto& panel : panels) b += panel->Render(who, s, auth);
    return b;
  }

  Response GetUpdates(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect(auth.SetupPending() ? "/setup" : "/login");
    auto status = source->Status();
    if (!status.ok()) return ErrorPage(503, "cannot read the agent's state: " + status.error().message());
    const std::string note = req.QueryParam("checked").value_or("") == "1"
                                 ? "The agent was asked to check for updates; reload in a moment to see the result."
                                 : "";
    return Page(200, "Updates", RenderUpdates(who.value(), *status, auth, note));
  }

  Response PostCheck(const Request& req, web::Authenticator& auth) {
    auto post = webpage::AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& who = std::get<webpage::FormPost>(post).who;
    if (auto s = source->RequestCheck(); !s.ok()) return ErrorPage(503, s.error().message());
    if (log) log("web: '" + who.account.name + "' asked for an update check");
    return Redirect("/?checked=1");
  }

  Response GetStatusJson(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Secure(who.refusal().ToResponse());
    auto status = source->Status();
    if (!status.ok()) return Secure(Response::JsonError(503, "unavailable", status.error().message()));
    return Secure(Response::Json(200, *status));
  }

  // Routes run on the worker pool (Argon2id, the store); before the Authenticator is published
  // (between Start and the end of WebHost::Start) they answer 503.
  Status Route(Method method, const std::string& path, webpage::PanelHandler handler, net::RouteOptions ro = {}) {
    ro.use_worker_pool = true;
    if (!ro.max_body_bytes) ro.max_body_bytes = 64 * 1024;
    return server->Handle(
        method, path,
        [this, handler = std::move(handler)](const Request& req) {
          web::Authenticator* a = published.load();
          if (a == nullptr) return ErrorPage(503, "starting");
          return handler(req, *a);
        },
        ro);
  }
  Status Route(Method method, const std::string& path, Response (Impl::*fn)(const Request&, web::Authenticator&)) {
    return Route(method, path, [this, fn](const Request& req, web::Authenticator& a) { return (this->*fn)(req, a); });
  }

  class Routes final : public webpage::RouteSink {
   public:
    explicit Routes(Impl& impl) : impl_(impl) {}
    Status Add(Method method, const std::string& path, webpage::PanelHandler handler,
               net::RouteOptions options) override {
      return impl_.Route(method, path, std::move(handler), std::move(options));
    }

   private:
    Impl& impl_;
  };
};

WebHost::WebHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
WebHost::~WebHost() {
  if (impl_ && impl_->server) impl_->server->Stop(std::chrono::seconds(5));
}
std::uint16_t WebHost::port() const { return impl_->port; }
const std::string& WebHost::origin() const { return impl_->origin; }

Expected<std::unique_ptr<WebHost>> WebHost::Start(const WebHostOptions& options, web::AccountRepository& accounts,
                                                  UpdatesSource& source, const Clock& clock, Random& random,
                                                  std::function<void(const std::string&)> log, WebDaemonLink link) {
  auto impl = std::make_unique<Impl>();
  impl->options = options;
  impl->accounts = &accounts;
  impl->source = &source;
  impl->clock = &clock;
  impl->random = &random;
  impl->log = std::move(log);
  UPK_TRY_ASSIGN(net::Endpoint endpoint, net::ParseEndpoint(options.listen));
  endpoint.tls = true;
  net::ServerOptions so;
  so.endpoints = {endpoint};
  net::TlsOptions tls;
  tls.certificate_chain = options.certificate;
  tls.private_key = options.private_key;
  so.tls = tls;
  so.io_threads = 1;
  so.worker_threads = options.worker_threads == 0 ? 1 : options.worker_threads;
  so.metrics = false;  // nothing about the appliance is served without a session
  so.max_connections = 256;
  so.default_max_body = 64 * 1024;
  impl->server = std::make_unique<net::Server>(so);
  Impl* p = impl.get();
  UPK_TRY(p->Route(Method::kGet, "/", &Impl::GetUpdates));
  UPK_TRY(p->Route(Method::kGet, "/setup", &Impl::GetSetup));
  UPK_TRY(p->Route(Method::kPost, "/setup", &Impl::PostSetup));
  UPK_TRY(p->Route(Method::kGet, "/login", &Impl::GetLogin));
  UPK_TRY(p->Route(Method::kPost, "/login", &Impl::PostLogin));
  UPK_TRY(p->Route(Method::kPost, "/logout", &Impl::PostLogout));
  UPK_TRY(p->Route(Method::kPost, "/check", &Impl::PostCheck));
  UPK_TRY(p->Route(Method::kGet, "/api/v1/status", &Impl::GetStatusJson));
  webpage::PanelEnv env;
  env.source = &source;
  env.jobs = link.jobs;
  env.config = link.config;
  env.clock = &clock;
  env.accounts = &accounts;
  env.authenticator = [p] { return p->published.load(); };
  env.log = p->log;
  for (auto make : {webpage::MakeJobsPanel, webpage::MakeInstallPanel, webpage::MakeAirgapPanel,
                    webpage::MakeBackupPanel, webpage::MakeClientsPanel, webpage::MakeHistoryPanel,
                    webpage::MakeAccountsPanel}) {
    p->panels.push_back(make(env));
  }
  p->css = kCss;
  Impl::Routes routes(*p);
  for (const auto& panel : p->panels) {
    UPK_TRY(panel->Register(routes));
    p->css += panel->Css();
  }
  UPK_TRY(p->server->Handle(Method::kGet, "/static/style.css", [p](const Request&) {
    return webpage::Asset(p->css.c_str(), "text/css; charset=utf-8");
  }));
  UPK_TRY(p->server->Handle(Method::kGet, "/static/status.js", [](const Request&) {
    return webpage::Asset(kStatusScript, "text/javascript; charset=utf-8");
  }));
  UPK_TRY(p->server->Handle(Method::kGet, "/favicon.ico", [](const Request&) {
    return webpage::Asset(kIconSvg, "image/svg+xml");
  }));
  if (auto s = p->server->Start(); !s.ok()) return s.error().Wrap("web: " + options.listen);
  p->port = p->server->ports().at(0);
  if (!options.origin.empty()) {
    p->origin = options.origin;
  } else {
    std::string host = endpoint.address;
    if (host == "0.0.0.0" || host == "::") {
      char name[256] = {};
      host = ::gethostname(name, sizeof(name) - 1) == 0 && name[0] != '\0' ? std::string(name) : "localhost";
    } else if (host.find(':') != std::string::npos) {
      host = "[" + host + "]";
    }
    p->origin = "https://" + host + ":" + std::to_string(p->port);
  }
  web::AuthOptions ao;
  ao.site_origin = p->origin;
  if (options.fast_password_hashing) ao.password_cost = web::PasswordCost::MinForTests();
  p->auth_owner = std::make_unique<web::Authenticator>(accounts, clock, random, ao);
  auto token = p->auth_owner->IssueSetupToken();
  if (!token.ok()) {
    p->server->Stop(std::chrono::seconds(0));
    return token.error().Wrap("web: accounts");
  }
  p->published.store(p->auth_owner.get());
  if (*token && p->log) {
    p->log("web: first start: open " + p->origin + "/setup with the one-time setup token " + **token +
           " (valid 24 h)");
  }
  return std::unique_ptr<WebHost>(new WebHost(std::move(impl)));
}

// ---------------------------------------------------------------------------------------------
// The daemon service

namespace {

class WebService final : public DaemonService {
 public:
  explicit WebService(AgentConfig c)
      : config(std::move(c)), jobs(SystemClock::Instance(), [] { ::kill(::getpid(), SIGUSR2); }) {}
  AgentConfig config;
  JobQueue jobs;  // the page's actions, run by the daemon between cycles
  std::unique_ptr<web::JsonFileAccountRepository> accounts;
  std::unique_ptr<UpdatesSource> source;
  std::unique_ptr<WebHost> host;
  ~WebService() override { host.reset(); }  // stop serving before the source, jobs and accounts go
  void AfterCycle(Agent&) override {}       // the page reads the state itself, per request
  void BeforeCycle(AgentRuntime& runtime) override { jobs.RunPending(runtime); }
  void OnLog(const std::string& line) override { jobs.OnLog(line); }
};

}  // namespace

DaemonServiceFactory WebDaemonService() {
  return [](const AgentConfig& config,
            std::function<void(const std::string&)> log) -> Expected<std::unique_ptr<DaemonService>> {
    if (!config.web) return std::unique_ptr<DaemonService>();
    auto service = std::make_unique<WebService>(config);
    auto accounts = web::JsonFileAccountRepository::Open(config.WebAccountsFile());
    if (!accounts.ok()) return accounts.error().Wrap("web");
    service->accounts = std::move(*accounts);
    service->source = MakeRuntimeUpdatesSource(config);
    WebHostOptions o;
    o.listen = config.web->listen;
    o.certificate = config.web->certificate;
    o.private_key = config.web->private_key;
    o.origin = config.web->origin;
    WebDaemonLink link;
    link.jobs = &service->jobs;
    link.config = &service->config;
    auto host = WebHost::Start(o, *service->accounts, *service->source, SystemClock::Instance(),
                               SystemRandom::Instance(), log, link);
    if (!host.ok()) return host.error();
    service->host = std::move(*host);
    if (log) {
      log("web: the updates page is at " + service->host->origin() +
          "/ (forms are accepted from this origin only; web.origin in the configuration sets it)");
    }
    return std::unique_ptr<DaemonService>(std::move(service));
  };
}

}  // namespace upkeep::agent
