// The support dashboard pages (dashboard.hpp, docs/dashboard.md). Every page is rendered here with
// every value escaped; the CSP allows no script and only our own stylesheet; forms that change
// state carry the session's CSRF token (setup and login, which have no session yet, a
// double-submit cookie), and every POST checks Origin/Referer against the request's own Host.
#include "dashboard.hpp"

#include <unistd.h>

#include <atomic>
#include <charconv>
#include <set>
#include <mutex>

#include "fleet_state.hpp"
#include "portal_shared.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/web/authenticator.hpp"

namespace upkeep::updater {

using net::Method;
using net::Request;
using net::Response;

namespace {

std::mutex g_cost_mu;
std::optional<web::PasswordCost> g_cost;  // tests only

constexpr std::size_t kFormBytes = 16 * 1024;
constexpr std::size_t kMaxResults = 100;
constexpr std::size_t kMaxQueryBytes = 200;
constexpr int kEvents = 50;

std::string ErrorP(const std::string& id, const std::string& message) {
  if (message.empty()) return "";
  return "<p class=\"error\" id=\"" + id + "-error\" role=\"alert\">" + HtmlEscape(message) + "</p>";
}

std::string Offset(std::optional<std::int64_t> seconds) {
  if (!seconds) return "unknown";
  std::int64_t a = *seconds < 0 ? -*seconds : *seconds;
  if (a == 0) return "0 s (in step with this server)";
  return std::to_string(a) + " s " + (*seconds < 0 ? "behind" : "ahead of") + " this server";
}

constexpr std::string_view kCss =
    "body{font-family:sans-serif;max-width:70em;margin:1em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #999;padding:.3em .6em;text-align:left;"
    "vertical-align:top}.error{color:#a00;font-weight:bold}.ok{color:#060}pre{white-space:pre-wrap;max-height:20em;"
    "overflow:auto;background:#f4f4f4;padding:.4em}nav form{display:inline}label{display:block;margin-top:.5em}"
    ".failure{background:#fdd}";

struct Dashboard {
  std::shared_ptr<Context> ctx;
  FleetState* fleet;
  PgAccountRepository accounts;
  const web::PreSessionToken pre_session{"__Host-upkeep_dashboard_form"};
  web::PasswordCost cost;
  std::once_flag auth_once;
  std::unique_ptr<web::Authenticator> auth_ptr;
  std::mutex server_mu;
  net::Server* server = nullptr;  // for the port of the setup announcement; cleared at stop
  std::atomic<bool> announced{false};

  Dashboard(std::shared_ptr<Context> c, FleetState* f, web::PasswordCost k)
      : ctx(std::move(c)), fleet(f), accounts(ctx->pool), cost(k) {}

  // Built on first use: its hasher spends one Argon2id hash at construction.
  web::Authenticator& auth() {
    std::call_once(auth_once, [&] {
      web::AuthOptions o;
      o.password_cost = cost;
      auth_ptr = std::make_unique<web::Authenticator>(accounts, ctx->clock, ctx->random, o);
    });
    return *auth_ptr;
  }

  // ---- the background announcement of the setup token ----

  Status Announce() {
    if (announced.load()) return OkStatus();
    std::uint16_t port = 0;
    {
      std::lock_guard lock(server_mu);
      if (!server) return OkStatus();
      auto ports = server->ports();
      if (ports.empty()) return OkStatus();  // not started yet: next run
      port = ports[0];
    }
    UPK_TRY_ASSIGN(std::size_t n, accounts.Count());
    if (n > 0) {
      announced = true;
      return OkStatus();
    }
    UPK_TRY_ASSIGN(auto token, auth().IssueSetupToken());  // an error: tried again at the next run
    announced = true;
    if (!token) return OkStatus();
    char host[256] = {};
    if (gethostname(host, sizeof(host) - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof(host), "localhost");
    ctx->Log("dashboard: first start: open https://" + std::string(host) + ":" + std::to_string(port) +
             "/dashboard/setup with the one-time setup token " + *token + " (valid 24 h)");
    return OkStatus();
  }

  // ---- page helpers ----

  static Response Page(int status, const std::string& title, const std::string& content,
                       const std::string& nav = "") {
    std::string html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>" + HtmlEscape(title) +
                       " - Upkeep support dashboard</title><link rel=\"stylesheet\" href=\"/dashboard/style.css\">"
                       "</head><body><header><h1>Upkeep support dashboard</h1>" +
                       nav + "</header><main>\n<h2>" + HtmlEscape(title) + "</h2>\n" + content + "</main></body></html>\n";
    Response r = Response::Text(status, std::move(html), "text/html; charset=utf-8");
    Secure(r);
    return r;
  }

  static void Secure(Response& r) {
    r.SetHeader("Content-Security-Policy",
                "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
                "base-uri 'none'");
    r.SetHeader("X-Frame-Options", "DENY");
    r.SetHeader("X-Content-Type-Options", "nosniff");
    r.SetHeader("Referrer-Policy", "same-origin");
    r.SetHeader("Cache-Control", "no-store");
  }

  static Response Redirect(const std::string& location, const std::string& cookie = "") {
    Response r(303);
    r.SetHeader("Location", location);
    if (!cookie.empty()) r.SetHeader("Set-Cookie", cookie);
    Secure(r);
    return r;
  }

  static Response Refused(int status, const std::string& reason) {
    return Page(status, status == 403 ? "Forbidden" : "Refused",
                "<p class=\"error\" role=\"alert\">" + HtmlEscape(reason) + "</p><p><a href=\"/dashboard\">Back</a></p>");
  }

  std::string Nav(const web::Principal& p) const {
    return "<nav><a href=\"/dashboard\">Find an appliance</a> | <a href=\"/dashboard/fleet\">Fleet</a> | " +
           std::string(p.account.role == web::Role::kAdmin ? "<a href=\"/dashboard/accounts\">Accounts</a> | " : "") +
           "<a href=\"/dashboard/password\">Password</a> | signed in as " + HtmlEscape(p.account.name) + " (" +
           HtmlEscape(web::RoleName(p.account.role)) + ") <form method=\"post\" action=\"/dashboard/logout\">" +
           Csrf(p, "/dashboard/logout") + "<button type=\"submit\">Sign out</button></form></nav>";
  }

  std::string Csrf(const web::Principal& p, std::string_view action) const {
    return "<input type=\"hidden\" name=\"" + std::string(web::kCsrfField) + "\" value=\"" +
           HtmlEscape(web::MakeCsrfToken(p.session.csrf_secret, action)) + "\">";
  }

  // Origin/Referer must name the host the request was sent to (either scheme: one port serves
  // one protocol), so a form posted from another site is refused.
  static std::optional<std::string> OriginProblem(const Request& req) {
    auto host = req.Header("Host");
    if (!host || host->empty()) return "request without a Host header";
    const std::string h(*host);
    auto https = web::CheckOrigin(req, "https://" + h);
    if (https.ok()) return std::nullopt;
    if (web::CheckOrigin(req, "http://" + h).ok()) return std::nullopt;
    return https.error().message();
  }

  // The session, or where to send the browser.
  std::variant<web::Principal, Response> Session(const Request& req) {
    auto p = auth().Authenticate(req);
    if (!p.ok()) return Redirect("/dashboard/login");
    return std::move(p.value());
  }

  // A state-changing form of a signed-in user: Origin, form, CSRF token for the request path.
  std::variant<web::Form, Response> CheckedForm(const Request& req, const web::Principal& p) {
    if (auto problem = OriginProblem(req)) return Refused(403, *problem);
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return Refused(400, "the form could not be read: " + form.error().message());
    auto token = form->Single(web::kCsrfField);
    if (!token.ok()) return Refused(403, "form without a valid CSRF token");
    if (!web::CsrfTokenValid(p.session.csrf_secret, req.path(), *token)) {
      return Refused(403, "invalid CSRF token for " + std::string(req.path()));
    }
    return std::move(form).value();
  }

  // Setup and login have no session yet: a double-submit cookie (web::PreSessionToken).
  std::pair<std::string, std::string> PreForm(const Request& req) const {
    auto issued = pre_session.ForRequest(req, ctx->random);
    return {"<input type=\"hidden\" name=\"" + std::string(web::kCsrfField) + "\" value=\"" + issued.value + "\">",
            issued.set_cookie};
  }

  std::optional<std::string> PreFormProblem(const Request& req, const web::Form& form) const {
    if (auto problem = OriginProblem(req)) return problem;
    return pre_session.Check(req, form);
  }

  // ---- setup ----

  Response SetupPage(const Request& req, const std::map<std::string, std::string>& errors, const std::string& name) {
    auto count = accounts.Count();
    if (!auth().SetupPending() && (!count.ok() || *count > 0)) {
      return Page(200, "Setup", "<p>Setup is already done. <a href=\"/dashboard/login\">Sign in</a>.</p>");
    }
    auto [hidden, cookie] = PreForm(req);
    auto err = [&](const std::string& f) { return errors.count(f) ? ErrorP(f, errors.at(f)) : ""; };
    std::string c =
        "<p>Create the first administrator with the one-time setup token the updater printed at its first "
        "start.</p>" + err("form") +
        "<form method=\"post\" action=\"/dashboard/setup\" novalidate>" + hidden +
        "<label for=\"token\">Setup token</label><input id=\"token\" name=\"token\" autocomplete=\"off\" required>" +
        err("token") +
        "<label for=\"name\">Account name</label><input id=\"name\" name=\"name\" value=\"" + HtmlEscape(name) +
        "\" autocomplete=\"username\" required>" + err("name") +
        "<label for=\"password\">Password (at least 12 bytes)</label><input id=\"password\" name=\"password\" "
        "type=\"password\" autocomplete=\"new-password\" required>" + err("password") +
        "<label for=\"password2\">Password again</label><input id=\"password2\" name=\"password2\" type=\"password\" "
        "autocomplete=\"new-password\" required>" + err("password2") +
        "<p><button type=\"submit\">Create the administrator</button></p></form>";
    Response r = Page(200, "Setup", c);
    if (!cookie.empty()) r.SetHeader("Set-Cookie", cookie);
    return r;
  }

  Response SetupGet(const Request& req) { return SetupPage(req, {}, ""); }

  Response SetupPost(const Request& req) {
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return SetupPage(req, {{"form", "the form could not be read: " + form.error().message()}}, "");
    if (auto problem = PreFormProblem(req, *form)) return Refused(403, *problem);
    auto field = [&](const char* f) {
      auto v = form->Single(f);  // absent or repeated: empty, refused below
      return v.ok() ? *v : std::string();
    };
    const std::string token = field("token"), name = field("name"), password = field("password"),
                      password2 = field("password2");
    std::map<std::string, std::string> errors;
    if (token.empty()) errors["token"] = "enter the setup token";
    if (name.empty()) errors["name"] = "enter an account name";
    if (password.empty()) errors["password"] = "enter a password";
    if (password != password2) errors["password2"] = "the two passwords differ";
    if (!errors.empty()) return SetupPage(req, errors, name);
    auto made = auth().Setup(token, name, password);
    if (!made.ok()) {
      const auto& ref = made.refusal();
      std::string f = "form";
      if (ref.status == 401) f = "token";
      if (ref.status == 400) f = ref.reason.starts_with("password") ? "password" : "name";
      if (ref.status == 409) return Page(200, "Setup", "<p class=\"error\" role=\"alert\">" + HtmlEscape(ref.reason) +
                                                           "</p><p><a href=\"/dashboard/login\">Sign in</a></p>");
      return SetupPage(req, {{f, ref.reason}}, name);
    }
    ctx->Log("dashboard: first administrator '" + made->name + "' created");
    auto login = auth().Login(name, password, web::ClientAddress(req.remote()));
    if (!login.ok()) return Redirect("/dashboard/login");
    return Redirect("/dashboard", login->set_cookie);
  }

  // ---- login, logout ----

  Response LoginPage(const Request& req, const std::map<std::string, std::string>& errors, const std::string& name) {
    auto [hidden, cookie] = PreForm(req);
    auto err = [&](const std::string& f) { return errors.count(f) ? ErrorP(f, errors.at(f)) : ""; };
    std::string c = err("form") + "<form method=\"post\" action=\"/dashboard/login\" novalidate>" + hidden +
                    "<label for=\"name\">Account name</label><input id=\"name\" name=\"name\" value=\"" + HtmlEscape(name) +
                    "\" autocomplete=\"username\" required>" + err("name") +
                    "<label for=\"password\">Password</label><input id=\"password\" name=\"password\" "
                    "type=\"password\" autocomplete=\"current-password\" required>" + err("password") +
                    "<p><button type=\"submit\">Sign in</button></p></form>";
    if (auth().SetupPending()) c += "<p>No account exists yet: <a href=\"/dashboard/setup\">set up</a>.</p>";
    Response r = Page(200, "Sign in", c);
    if (!cookie.empty()) r.SetHeader("Set-Cookie", cookie);
    return r;
  }

  Response LoginGet(const Request& req) {
    if (auth().Authenticate(req).ok()) return Redirect("/dashboard");
    return LoginPage(req, {}, "");
  }

  Response LoginPost(const Request& req) {
    auto form = web::Form::FromRequest(req);
    if (!form.ok()) return LoginPage(req, {{"form", "the form could not be read: " + form.error().message()}}, "");
    if (auto problem = PreFormProblem(req, *form)) return Refused(403, *problem);
    auto field = [&](const char* f) {
      auto v = form->Single(f);  // absent or repeated: empty, refused below
      return v.ok() ? *v : std::string();
    };
    const std::string name = field("name"), password = field("password");
    std::map<std::string, std::string> errors;
    if (name.empty()) errors["name"] = "enter your account name";
    if (password.empty()) errors["password"] = "enter your password";
    if (!errors.empty()) return LoginPage(req, errors, name);
    auto login = auth().Login(name, password, web::ClientAddress(req.remote()));
    if (!login.ok()) {
      Response r = LoginPage(req, {{"password", login.refusal().reason}}, name);
      if (login.refusal().status == 429) {
        r.SetHeader("Retry-After", std::to_string(login.refusal().retry_after.count()));
      }
      return r;
    }
    ctx->Log("dashboard: '" + login->account.name + "' signed in");
    return Redirect("/dashboard", login->set_cookie);
  }

  Response LogoutPost(const Request& req) {
    auto p = auth().Authenticate(req);
    if (!p.ok()) return Redirect("/dashboard/login", web::LogoutCookie());
    auto form = CheckedForm(req, p.value());
    if (auto* r = std::get_if<Response>(&form)) return std::move(*r);
    return Redirect("/dashboard/login", auth().Logout(req));
  }

  Response Style(const Request&) {
    Response r = Response::Text(200, std::string(kCss), "text/css; charset=utf-8");
    Secure(r);
    return r;
  }

  // ---- search ----

  static std::string Like(std::string_view s) {
    std::string out;
    for (char ch : s) {
      if (ch == '%' || ch == '_' || ch == '\\') out += '\\';
      out += ch;
    }
    return out;
  }

  Response Home(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    const web::Principal& p = std::get<web::Principal>(s);
    const std::string q = req.QueryParam("q").value_or("");
    std::string error;
    if (q.size() > kMaxQueryBytes) error = "at most " + std::to_string(kMaxQueryBytes) + " bytes";
    std::string c =
        "<form method=\"get\" action=\"/dashboard\" role=\"search\"><label for=\"q\">Appliance id, customer or licence reference</label>"
        "<input id=\"q\" name=\"q\" value=\"" + HtmlEscape(q) + "\" required>" + ErrorP("q", error) +
        "<p><button type=\"submit\">Find</button></p></form>\n";
    if (q.empty() || !error.empty()) return Page(200, "Find an appliance", c, Nav(p));
    Json rows = Json::array();
    auto got = ctx->Transact<Json>("dashboard search", [&](db::Connection& conn, std::optional<Response>&) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result r, conn.Exec(
          "SELECT appliance_id, customer, channel, status, installed::text AS installed, last_checkin FROM appliances "
          "WHERE appliance_id = lower($1) OR appliance_id LIKE lower($2) || '%' OR customer ILIKE '%' || $2 || '%' "
          "OR (length($1) >= 8 AND EXISTS (SELECT 1 FROM appliance_licences l WHERE l.appliance_id = appliances.appliance_id "
          "AND l.licence_sha256 LIKE lower($2) || '%')) "
          "ORDER BY (appliance_id = lower($1)) DESC, customer, appliance_id LIMIT $3",
          q, Like(q), static_cast<std::int64_t>(kMaxResults)));
      Json list = Json::array();
      for (int i = 0; i < r.rows(); ++i) {
        Json row;
        for (const char* f : {"appliance_id", "customer", "channel", "status", "installed"}) {
          UPK_TRY_ASSIGN(std::string v, r.Get<std::string>(i, f));
          row[f] = v;
        }
        UPK_TRY_ASSIGN(auto last, r.GetOptional<SysTime>(i, "last_checkin"));
        row["last_checkin"] = last ? FormatTimestamp(*last) : "never";
        list.push_back(std::move(row));
      }
      return list;
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return Refused(r->status, "the database is unavailable; try again");
    rows = std::get<Json>(got);
    if (rows.empty()) {
      c += "<p id=\"results\">No appliance matches &quot;" + HtmlEscape(q) + "&quot;.</p>";
    } else {
      c += "<table id=\"results\"><tr><th>Appliance</th><th>Customer</th><th>Channel</th><th>Status</th>"
           "<th>Installed</th><th>Last check-in</th></tr>";
      for (const Json& row : rows) {
        std::string installed;
        auto parsed = ParseJson(row["installed"].get<std::string>());
        if (parsed.ok() && parsed->is_object()) {
          for (const auto& [n, v] : parsed->items()) {
            installed += (installed.empty() ? "" : ", ") + n + " " + (v.is_string() ? v.get<std::string>() : "?");
          }
        }
        const std::string id = row["appliance_id"].get<std::string>();
        c += "<tr><td><a href=\"/dashboard/appliances/" + HtmlEscape(id) + "\">" + HtmlEscape(id) + "</a></td><td>" +
             HtmlEscape(row["customer"].get<std::string>()) + "</td><td>" + HtmlEscape(row["channel"].get<std::string>()) +
             "</td><td>" + HtmlEscape(row["status"].get<std::string>()) + "</td><td>" + HtmlEscape(installed) + "</td><td>" +
             HtmlEscape(row["last_checkin"].get<std::string>()) + "</td></tr>";
      }
      c += "</table>";
      if (rows.size() == kMaxResults) c += "<p>Only the first " + std::to_string(kMaxResults) + " are shown.</p>";
    }
    return Page(200, "Find an appliance", c, Nav(p));
  }

  // ---- one appliance ----

  struct Detail {
    std::string customer, channel, status, agent_version, state;
    Json installed = Json::object();
    std::optional<SysTime> last_checkin;
    std::optional<std::int64_t> offset;
    SysTime maintenance_end{};
    std::optional<Json> assignment;  // issued, expires, steps
    std::vector<std::string> groups, channels;  // its groups; every channel (for the move form)
    std::optional<std::string> pinned_by, pinned_reason, licence;
    std::vector<std::array<std::string, 4>> downloads;  // name, version, bundle, at
    Json events = Json::array();
  };

  Response AppliancePage(const Request& req, const web::Principal& p, const std::string& message, bool error,
                         const std::map<std::string, std::string>& field_errors = {}) {
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    auto got = ctx->Transact<std::optional<Detail>>("dashboard appliance", [&](db::Connection& c, std::optional<Response>&)
                                                                              -> Expected<std::optional<Detail>> {
      Detail d;
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT customer, channel, status, installed::text AS installed, agent_version, "
                                          "last_checkin, clock_offset_seconds, maintenance_end, to_jsonb(groups)::text AS groups, "
                                          "pinned_by, pinned_reason, (SELECT licence_sha256 FROM appliance_licences l "
                                          "WHERE l.appliance_id = appliances.appliance_id) AS licence FROM appliances "
                                          "WHERE appliance_id = $1", id));
      if (r.rows() == 0) return std::optional<Detail>();
      UPK_TRY_ASSIGN(d.customer, r.Get<std::string>(0, "customer"));
      UPK_TRY_ASSIGN(d.channel, r.Get<std::string>(0, "channel"));
      UPK_TRY_ASSIGN(d.status, r.Get<std::string>(0, "status"));
      UPK_TRY_ASSIGN(std::string installed, r.Get<std::string>(0, "installed"));
      UPK_TRY_ASSIGN(d.installed, ParseJson(installed));
      UPK_TRY_ASSIGN(auto agent, r.GetOptional<std::string>(0, "agent_version"));
      d.agent_version = agent.value_or("unknown");
      UPK_TRY_ASSIGN(d.last_checkin, r.GetOptional<SysTime>(0, "last_checkin"));
      UPK_TRY_ASSIGN(d.offset, r.GetOptional<std::int64_t>(0, "clock_offset_seconds"));
      UPK_TRY_ASSIGN(d.maintenance_end, r.Get<SysTime>(0, "maintenance_end"));
      UPK_TRY_ASSIGN(std::string groups, r.Get<std::string>(0, "groups"));
      UPK_TRY_ASSIGN(Json group_list, ParseJson(groups));
      for (const Json& g : group_list) {
        if (g.is_string()) d.groups.push_back(g.get<std::string>());
      }
      UPK_TRY_ASSIGN(d.pinned_by, r.GetOptional<std::string>(0, "pinned_by"));
      UPK_TRY_ASSIGN(d.pinned_reason, r.GetOptional<std::string>(0, "pinned_reason"));
      UPK_TRY_ASSIGN(d.licence, r.GetOptional<std::string>(0, "licence"));
      UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT name FROM channels ORDER BY name"));
      for (int i = 0; i < ch.rows(); ++i) {
        UPK_TRY_ASSIGN(std::string name, ch.Get<std::string>(i, "name"));
        d.channels.push_back(std::move(name));
      }
      UPK_TRY_ASSIGN(db::Result a, c.Exec("SELECT envelope FROM assignments WHERE appliance_id = $1", id));
      if (a.rows() > 0) {
        UPK_TRY_ASSIGN(std::string text, a.Get<std::string>(0, "envelope"));
        UPK_TRY_ASSIGN(Json envelope, ParseJson(text));
        if (envelope.is_object() && envelope.contains("signed")) {
          UPK_TRY_ASSIGN(trust::Assignment s, trust::Assignment::FromJson(envelope["signed"]));
          Json steps = Json::array();
          for (const auto& st : s.steps) steps.push_back(st.name + " " + st.version.ToString());
          d.assignment = Json{{"issued", FormatTimestamp(s.issued)}, {"expires", FormatTimestamp(s.expires)},
                              {"steps", steps}};
        }
      }
      UPK_TRY_ASSIGN(db::Result w, c.Exec("SELECT name, version, bundle_id, downloaded_at FROM portal_downloads "
                                          "WHERE appliance_id = $1 ORDER BY downloaded_at, name, version", id));
      for (int i = 0; i < w.rows(); ++i) {
        std::array<std::string, 4> row;
        UPK_TRY_ASSIGN(row[0], w.Get<std::string>(i, "name"));
        UPK_TRY_ASSIGN(row[1], w.Get<std::string>(i, "version"));
        UPK_TRY_ASSIGN(row[2], w.Get<std::string>(i, "bundle_id"));
        UPK_TRY_ASSIGN(SysTime at, w.Get<SysTime>(i, "downloaded_at"));
        row[3] = FormatTimestamp(at);
        d.downloads.push_back(std::move(row));
      }
      UPK_TRY_ASSIGN(db::Result e, c.Exec("SELECT type, name, version, at, detail::text AS detail, log_tail FROM events "
                                          "WHERE appliance_id = $1 ORDER BY received_at DESC, at DESC, event_id LIMIT $2",
                                          id, static_cast<std::int64_t>(kEvents)));
      for (int i = 0; i < e.rows(); ++i) {
        Json ev;
        for (const char* f : {"type", "name", "version", "detail"}) {
          UPK_TRY_ASSIGN(std::string v, e.Get<std::string>(i, f));
          ev[f] = v;
        }
        UPK_TRY_ASSIGN(SysTime at, e.Get<SysTime>(i, "at"));
        ev["at"] = FormatTimestamp(at);
        UPK_TRY_ASSIGN(auto tail, e.GetOptional<std::string>(i, "log_tail"));
        ev["log_tail"] = tail ? Json(*tail) : Json(nullptr);
        d.events.push_back(std::move(ev));
      }
      return std::optional<Detail>(std::move(d));
    }, db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return Refused(r->status, "the database is unavailable; try again");
    auto& found = std::get<std::optional<Detail>>(got);
    if (!found) return Refused(404, "no appliance " + id);
    Detail& d = *found;
    if (auto pending = fleet->Pending(id)) {  // a check-in not yet written: newer than the row
      d.installed = pending->installed;
      d.agent_version = pending->agent_version;
      d.last_checkin = pending->at;
      d.offset = pending->clock_offset_seconds;
    }

    std::string c;
    if (!message.empty()) {
      c += std::string("<p class=\"") + (error ? "error\" role=\"alert\"" : "ok\"") + " id=\"message\">" +
           HtmlEscape(message) + "</p>";
    }
    c += "<table id=\"status\"><tr><th>Appliance</th><td>" + HtmlEscape(id) + "</td></tr><tr><th>Customer</th><td>" +
         HtmlEscape(d.customer) + "</td></tr><tr><th>Channel</th><td>" + HtmlEscape(d.channel) + "</td></tr><tr><th>Status</th><td>" +
         HtmlEscape(d.status) + "</td></tr><tr><th>Licence maintenance ends</th><td>" + HtmlEscape(FormatTimestamp(d.maintenance_end)) +
         "</td></tr><tr><th>Agent version</th><td>" + HtmlEscape(d.agent_version) + "</td></tr><tr><th>Last check-in</th><td>" +
         HtmlEscape(d.last_checkin ? FormatTimestamp(*d.last_checkin) : "never") + "</td></tr><tr><th>Clock offset</th><td>" +
         HtmlEscape(Offset(d.offset)) + "</td></tr><tr><th>Groups</th><td>" + HtmlEscape(Joined(d.groups)) +
         "</td></tr><tr><th>Licence reference</th><td id=\"licence\">" +
         HtmlEscape(d.licence ? d.licence->substr(0, 16) : "unknown (enrolled before the updater recorded licences)") +
         "</td></tr><tr><th>Pinned</th><td id=\"pinned\">" +
         HtmlEscape(d.pinned_by && d.pinned_reason ? "pinned by " + *d.pinned_by + ": " + *d.pinned_reason : "no") +
         "</td></tr></table>\n";

    c += "<h3>Installed versions</h3><table id=\"installed\"><tr><th>Package</th><th>Version</th></tr>";
    packages::Installed installed;
    for (const auto& [n, v] : d.installed.items()) {
      const std::string text = v.is_string() ? v.get<std::string>() : "?";
      c += "<tr><td>" + HtmlEscape(n) + "</td><td>" + HtmlEscape(text) + "</td></tr>";
      auto version = packages::Version::Parse(text);
      if (version.ok()) installed.emplace(n, *version);
    }
    c += "</table>\n<h3>Current assignment</h3>";
    if (d.assignment) {
      std::string steps;
      for (const auto& s : (*d.assignment)["steps"]) steps += (steps.empty() ? "" : ", ") + s.get<std::string>();
      c += "<p id=\"assignment\">Issued " + HtmlEscape((*d.assignment)["issued"].get<std::string>()) + ", expires " +
           HtmlEscape((*d.assignment)["expires"].get<std::string>()) + ": " + HtmlEscape(steps.empty() ? "nothing to install" : steps) +
           "</p>";
    } else {
      c += "<p id=\"assignment\">None yet (no check-in answered).</p>";
    }

    // The plan a check-in in the installed state would get now (the same PlanAppliance).
    c += "<h3>Upgrade path still needed</h3>";
    fleet->MaybeRefresh();
    std::shared_ptr<const CachedAppliance> cached = fleet->Find(id);
    if (!cached) {
      auto loaded = fleet->Load(id);
      if (loaded.ok()) cached = *loaded;
    }
    if (!cached) {
      c += "<p class=\"error\">the plan could not be computed (appliance not loadable)</p>";
    } else {
      auto plan = PlanAppliance(*fleet->snapshot(), *cached, installed, ctx->clock.Now(), ctx->config.assignment_validity);
      if (!plan.ok()) {
        c += "<p class=\"error\">the plan could not be computed: " + HtmlEscape(plan.error().message()) + "</p>";
      } else if (!cached->pin.empty()) {
        c += "<p id=\"plan\">Held at its installed versions, nothing newer is offered: " + HtmlEscape(cached->pin) + "</p>";
      } else if (plan->assignment.steps.empty()) {
        c += "<p id=\"plan\">Up to date: nothing to install.</p>";
      } else {
        c += "<table id=\"plan\"><tr><th>#</th><th>Package</th><th>Version</th><th>Kind</th><th>Why</th></tr>";
        for (std::size_t i = 0; i < plan->assignment.steps.size(); ++i) {
          const auto& s = plan->assignment.steps[i];
          c += "<tr><td>" + std::to_string(i + 1) + "</td><td>" + HtmlEscape(s.name) + "</td><td>" + HtmlEscape(s.version.ToString()) +
               "</td><td>" + HtmlEscape(packages::KindName(s.kind)) + "</td><td>" + HtmlEscape(plan->reasons[i]) + "</td></tr>";
        }
        c += "</table>";
      }
    }

    c += "<h3>Withheld downloads (already put in a bundle)</h3>";
    const bool may_reenable = web::Permits(p.account.role, web::Role::kSupport);
    if (d.downloads.empty()) {
      c += "<p id=\"downloads\">None.</p>";
    } else {
      const std::string action = "/dashboard/appliances/" + id + "/reenable";
      c += "<table id=\"downloads\"><tr><th>Package</th><th>Version</th><th>Bundle</th><th>Downloaded</th><th></th></tr>";
      for (const auto& row : d.downloads) {
        c += "<tr><td>" + HtmlEscape(row[0]) + "</td><td>" + HtmlEscape(row[1]) + "</td><td>" + HtmlEscape(row[2]) + "</td><td>" +
             HtmlEscape(row[3]) + "</td><td>";
        if (may_reenable) {
          c += "<form method=\"post\" action=\"" + HtmlEscape(action) + "\">" + Csrf(p, action) +
               "<input type=\"hidden\" name=\"name\" value=\"" + HtmlEscape(row[0]) +
               "\"><input type=\"hidden\" name=\"version\" value=\"" + HtmlEscape(row[1]) +
               "\"><button type=\"submit\">Re-enable download</button></form>";
        } else {
          c += "(support role needed to re-enable)";
        }
        c += "</td></tr>";
      }
      c += "</table>";
    }

    c += "<h3>Download and install history</h3>";
    if (d.events.empty()) {
      c += "<p id=\"history\">No reports yet.</p>";
    } else {
      c += "<table id=\"history\"><tr><th>When</th><th>Event</th><th>Package</th><th>Detail</th><th>Log tail</th></tr>";
      for (const Json& ev : d.events) {
        const std::string type = ev["type"].get<std::string>();
        const bool bad = type == "failure" || type == "rollback";
        c += std::string("<tr") + (bad ? " class=\"failure\"" : "") + "><td>" + HtmlEscape(ev["at"].get<std::string>()) +
             "</td><td>" + HtmlEscape(type) + "</td><td>" + HtmlEscape(ev["name"].get<std::string>()) + " " +
             HtmlEscape(ev["version"].get<std::string>()) + "</td><td>" +
             HtmlEscape(ev["detail"].get<std::string>() == "{}" ? "" : ev["detail"].get<std::string>()) + "</td><td>" +
             (ev["log_tail"].is_string() ? "<pre>" + HtmlEscape(ev["log_tail"].get<std::string>()) + "</pre>" : "") +
             "</td></tr>";
      }
      c += "</table>";
    }
    c += ManageForms(p, id, d, field_errors);
    return Page(200, "Appliance " + id, c, Nav(p));
  }

  static std::string Joined(const std::vector<std::string>& v) {
    std::string out;
    for (const auto& x : v) out += (out.empty() ? "" : ", ") + x;
    return out;
  }

  // Move / groups (admin), pin (support), revoke (admin).
  std::string ManageForms(const web::Principal& p, const std::string& id, const Detail& d,
                          const std::map<std::string, std::string>& errors) const {
    auto err = [&](const std::string& f) { return errors.count(f) ? ErrorP(f, errors.at(f)) : std::string(); };
    const std::string base = "/dashboard/appliances/" + id;
    std::string c = "<h3>Manage</h3>";
    const bool admin = p.account.role == web::Role::kAdmin;
    const bool support = web::Permits(p.account.role, web::Role::kSupport);
    if (admin) {
      c += "<form method=\"post\" action=\"" + HtmlEscape(base + "/assign") + "\" novalidate>" + Csrf(p, base + "/assign") +
           "<label for=\"channel\">Channel</label><select id=\"channel\" name=\"channel\">";
      for (const auto& ch : d.channels) {
        c += "<option value=\"" + HtmlEscape(ch) + "\"" + (ch == d.channel ? " selected" : "") + ">" + HtmlEscape(ch) + "</option>";
      }
      c += "</select>" + err("channel") +
           "<label for=\"groups\">Groups (separated by commas or spaces)</label><input id=\"groups\" name=\"groups\" value=\"" +
           HtmlEscape(Joined(d.groups)) + "\">" + err("groups") + "<p><button type=\"submit\">Save channel and groups</button></p></form>";
    }
    if (support) {
      if (d.pinned_by) {
        c += "<form method=\"post\" action=\"" + HtmlEscape(base + "/unpin") + "\">" + Csrf(p, base + "/unpin") +
             "<p><button type=\"submit\">Unpin</button></p></form>";
      } else {
        c += "<form method=\"post\" action=\"" + HtmlEscape(base + "/pin") + "\" novalidate>" + Csrf(p, base + "/pin") +
             "<label for=\"reason\">Pin at the installed versions; reason</label><input id=\"reason\" name=\"reason\">" +
             err("reason") + "<p><button type=\"submit\">Pin</button></p></form>";
      }
    } else {
      c += "<p>(support role needed to pin)</p>";
    }
    if (admin && d.status != "revoked") {
      c += "<form method=\"post\" action=\"" + HtmlEscape(base + "/revoke") + "\" novalidate>" + Csrf(p, base + "/revoke") +
           "<label for=\"confirm\">Revoke: type the appliance id to confirm</label><input id=\"confirm\" name=\"confirm\" "
           "autocomplete=\"off\">" + err("confirm") + "<p><button type=\"submit\">Revoke this appliance</button></p></form>";
    }
    return c;
  }

  // The operator API's {"error": {"message"}} of a refusal, for the page.
  static std::string ApiMessage(const Response& r) {
    auto parsed = ParseJson(r.body);
    if (parsed.ok() && parsed->is_object() && parsed->contains("error") && (*parsed)["error"].is_object() &&
        (*parsed)["error"].contains("message") && (*parsed)["error"]["message"].is_string()) {
      return (*parsed)["error"]["message"].get<std::string>();
    }
    return "refused (status " + std::to_string(r.status) + ")";
  }

  // The common start of a state-changing form: session, role, Origin + CSRF.
  std::variant<std::pair<web::Principal, web::Form>, Response> Begin(const Request& req, web::Role need) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    web::Principal& p = std::get<web::Principal>(s);
    if (auto refusal = auth().RequireRole(p, need)) return Refused(403, refusal->reason);
    auto form = CheckedForm(req, p);
    if (auto* r = std::get_if<Response>(&form)) return std::move(*r);
    return std::make_pair(std::move(p), std::get<web::Form>(std::move(form)));
  }

  Response ApplianceChangeResult(const Request& req, const web::Principal& p, const std::string& id,
                                 const ApplianceChange& change, const std::string& done, const std::string& field) {
    auto got = ChangeAppliance(*ctx, *fleet, id, change, "dashboard:" + p.account.name);
    if (auto* r = std::get_if<Response>(&got)) {
      if (r->status == 404 && ApiMessage(*r).starts_with("no appliance")) return Refused(404, ApiMessage(*r));
      if (r->status >= 500) return Refused(r->status, "the database is unavailable; try again");
      return AppliancePage(req, p, "", false, {{field, ApiMessage(*r)}});
    }
    ctx->Log("dashboard: dashboard:" + p.account.name + " " + done + " " + id);
    return AppliancePage(req, p, done + ".", false);
  }

  Response AssignPost(const Request& req) {
    auto b = Begin(req, web::Role::kAdmin);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    auto channel = f.Single("channel");
    auto groups_text = f.Single("groups");
    std::map<std::string, std::string> errors;
    if (!channel.ok() || channel->empty()) errors["channel"] = "choose a channel";
    std::vector<std::string> groups;
    if (!groups_text.ok()) {
      errors["groups"] = "give the groups once";
    } else {
      std::string cur;
      std::set<std::string> seen;
      auto flush = [&] {
        if (cur.empty()) return;
        bool ok = cur.size() <= 32;
        for (std::size_t i = 0; i < cur.size(); ++i) {
          const char ch = cur[i];
          ok = ok && ((ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (i > 0 && ch == '-'));
        }
        if (!ok) errors["groups"] = "group names are [a-z0-9][a-z0-9-]{0,31}: '" + cur + "' is not";
        seen.insert(cur);
        cur.clear();
      };
      for (char ch : *groups_text) {
        if (ch == ',' || ch == ' ' || ch == '\t' || ch == '\r' || ch == '\n') {
          flush();
        } else {
          cur += ch;
        }
      }
      flush();
      if (seen.size() > 32) errors["groups"] = "at most 32 groups";
      groups.assign(seen.begin(), seen.end());
    }
    if (!errors.empty()) return AppliancePage(req, p, "", false, errors);
    ApplianceChange change;
    change.channel = *channel;
    change.groups = groups;
    return ApplianceChangeResult(req, p, id, change, "Saved the channel and groups of", "channel");
  }

  Response PinPost(const Request& req) {
    auto b = Begin(req, web::Role::kSupport);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    auto reason = f.Single("reason");
    bool ok = reason.ok() && !reason->empty() && reason->size() <= 500;
    if (ok) {
      for (char ch : *reason) ok = ok && static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
    }
    if (!ok) return AppliancePage(req, p, "", false, {{"reason", "give a reason: 1..500 characters without control characters"}});
    ApplianceChange change;
    change.pinned = std::optional<PinChange>(PinChange{*reason});
    return ApplianceChangeResult(req, p, id, change, "Pinned", "reason");
  }

  Response UnpinPost(const Request& req) {
    auto b = Begin(req, web::Role::kSupport);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    (void)f;
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    ApplianceChange change;
    change.pinned = std::optional<PinChange>();
    return ApplianceChangeResult(req, p, id, change, "Unpinned", "reason");
  }

  Response RevokePost(const Request& req) {
    auto b = Begin(req, web::Role::kAdmin);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    auto confirm = f.Single("confirm");
    if (!confirm.ok() || *confirm != id) {
      return AppliancePage(req, p, "", false, {{"confirm", "type this appliance's id exactly to confirm the revocation"}});
    }
    ApplianceChange change;
    change.revoke = true;
    return ApplianceChangeResult(req, p, id, change, "Revoked", "confirm");
  }

  // ---- the fleet ----

  Response FleetPage(const Request& req, const web::Principal& p, const std::map<std::string, std::string>& errors,
                     const std::string& message) {
    (void)req;
    struct Data {
      std::vector<ChartBar> versions;
      std::vector<Json> rollouts;
      std::vector<std::vector<ChartPoint>> failure_rates;
    };
    auto got = ctx->Transact<Data>("dashboard fleet", [&](db::Connection& c, std::optional<Response>&) -> Expected<Data> {
      Data d;
      UPK_TRY_ASSIGN(db::Result v, c.Exec("SELECT i.key AS name, i.value AS version, count(*) AS n FROM appliances a, "
                                          "jsonb_each_text(a.installed) i GROUP BY i.key, i.value ORDER BY i.key, i.value "
                                          "LIMIT 200"));
      for (int i = 0; i < v.rows(); ++i) {
        ChartBar b;
        UPK_TRY_ASSIGN(std::string name, v.Get<std::string>(i, "name"));
        UPK_TRY_ASSIGN(std::string version, v.Get<std::string>(i, "version"));
        UPK_TRY_ASSIGN(b.value, v.Get<std::int64_t>(i, "n"));
        b.label = name + " " + version;
        d.versions.push_back(std::move(b));
      }
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT id FROM rollouts ORDER BY id DESC LIMIT 20"));
      for (int i = 0; i < r.rows(); ++i) {
        UPK_TRY_ASSIGN(std::int64_t id, r.Get<std::int64_t>(i, "id"));
        UPK_TRY_ASSIGN(auto rollout, LoadRolloutJson(c, id));
        if (!rollout) continue;
        // Failures among the results its members reported, per hour of the rollout's life.
        UPK_TRY_ASSIGN(db::Result h, c.Exec(
            "SELECT to_char(date_trunc('hour', e.received_at) AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:00') AS hour, "
            "count(*) FILTER (WHERE e.type = 'failure') AS failed, count(*) AS results FROM events e "
            "JOIN rollout_members m ON m.appliance_id = e.appliance_id AND m.rollout_id = $1 "
            "WHERE e.name = $2 AND e.version = $3 AND e.type IN ('success', 'failure') "
            "GROUP BY 1 ORDER BY 1 LIMIT 500",
            id, (*rollout)["name"].get<std::string>(), (*rollout)["version"].get<std::string>()));
        std::vector<ChartPoint> points;
        for (int j = 0; j < h.rows(); ++j) {
          ChartPoint pt;
          UPK_TRY_ASSIGN(pt.label, h.Get<std::string>(j, "hour"));
          UPK_TRY_ASSIGN(std::int64_t failed, h.Get<std::int64_t>(j, "failed"));
          UPK_TRY_ASSIGN(std::int64_t results, h.Get<std::int64_t>(j, "results"));
          pt.value = results > 0 ? 100.0 * static_cast<double>(failed) / static_cast<double>(results) : 0.0;
          points.push_back(std::move(pt));
        }
        d.rollouts.push_back(std::move(*rollout));
        d.failure_rates.push_back(std::move(points));
      }
      return d;
    }, db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return Refused(r->status, "the database is unavailable; try again");
    const Data& d = std::get<Data>(got);
    std::string c;
    if (!message.empty()) c += "<p class=\"ok\" id=\"message\">" + HtmlEscape(message) + "</p>";
    c += "<h3>Installed versions</h3>";
    if (d.versions.empty()) {
      c += "<p id=\"versions\">No appliance has reported yet.</p>";
    } else {
      c += BarChartSvg("versions-chart", "Appliances per installed version", d.versions);
      c += "<table id=\"versions\"><tr><th>Package</th><th>Appliances</th></tr>";
      for (const auto& b : d.versions) c += "<tr><td>" + HtmlEscape(b.label) + "</td><td>" + std::to_string(b.value) + "</td></tr>";
      c += "</table>";
    }
    c += "<h3>Rollouts</h3>";
    if (d.rollouts.empty()) c += "<p id=\"rollouts\">No rollouts.</p>";
    const bool support = web::Permits(p.account.role, web::Role::kSupport);
    const bool admin = p.account.role == web::Role::kAdmin;
    for (std::size_t i = 0; i < d.rollouts.size(); ++i) {
      const Json& ro = d.rollouts[i];
      const std::string id = std::to_string(ro["id"].get<std::int64_t>());
      const std::string state = ro["state"].get<std::string>();
      c += "<section id=\"rollout-" + id + "\"><h4>Rollout " + id + ": " + HtmlEscape(ro["name"].get<std::string>()) + " " +
           HtmlEscape(ro["version"].get<std::string>()) + " on " + HtmlEscape(ro["channel"].get<std::string>()) +
           " <span class=\"state\" id=\"rollout-" + id + "-state\">" + HtmlEscape(state) + "</span></h4>";
      for (const char* verb : {"pause", "resume", "abort"}) {  // a refusal, next to the rollout's controls
        auto e = errors.find(std::string(verb) + "-" + id);
        if (e != errors.end()) c += ErrorP(e->first, e->second);
      }
      if (ro["pause_reason"].is_string()) c += "<p>Paused: " + HtmlEscape(ro["pause_reason"].get<std::string>()) + "</p>";
      c += "<table><tr><th>Wave</th><th>Who</th><th>Opened</th><th>Offered</th><th>Succeeded</th><th>Failed</th></tr>";
      for (const Json& w : ro["waves"]) {
        std::string who = w.contains("percent") ? std::to_string(w["percent"].get<std::int64_t>()) + " %" : "";
        if (w.contains("groups")) {
          std::string g;
          for (const Json& x : w["groups"]) g += (g.empty() ? "" : ", ") + x.get<std::string>();
          who += (who.empty() ? "groups " : "; groups ") + g;
        }
        c += "<tr><td>" + std::to_string(w["index"].get<std::int64_t>()) + "</td><td>" + HtmlEscape(who) + "</td><td>" +
             HtmlEscape(w["opened_at"].is_string() ? w["opened_at"].get<std::string>() : "not yet") + "</td><td>" +
             std::to_string(w["members"].get<std::int64_t>()) + "</td><td>" + std::to_string(w["succeeded"].get<std::int64_t>()) +
             "</td><td>" + std::to_string(w["failed"].get<std::int64_t>()) + "</td></tr>";
      }
      c += "</table>";
      if (!d.failure_rates[i].empty()) {
        c += LineChartSvg("rollout-" + id + "-failures", "Failure rate per hour, rollout " + id, d.failure_rates[i]);
      } else {
        c += "<p>No results reported yet.</p>";
      }
      auto control = [&](const std::string& verb, const std::string& label, bool with_reason) {
        const std::string action = "/dashboard/rollouts/" + id + "/" + verb;
        std::string f = "<form method=\"post\" action=\"" + action + "\" novalidate>" + Csrf(p, action);
        if (with_reason) {
          const std::string fid = verb + "-reason-" + id;
          f += "<label for=\"" + fid + "\">Reason (optional)</label><input id=\"" + fid + "\" name=\"reason\">";
        }
        return f + "<button type=\"submit\">" + label + "</button></form>";
      };
      if (support && (state == "active" || state == "scheduled")) c += control("pause", "Pause", true);
      if (support && state == "paused") c += control("resume", "Resume", false);
      if (admin && (state == "active" || state == "scheduled" || state == "paused")) c += control("abort", "Abort", true);
      c += "</section>";
    }
    return Page(200, "Fleet", c, Nav(p));
  }

  Response FleetGet(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    return FleetPage(req, std::get<web::Principal>(s), {}, "");
  }

  // The operator API's roles: support pauses and resumes, publisher (here: admin) aborts.
  Response RolloutPost(const Request& req, RolloutTransition t) {
    auto b = Begin(req, t == RolloutTransition::kAbort ? web::Role::kAdmin : web::Role::kSupport);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string id_text(req.PathParam("id"));
    std::int64_t id = 0;
    auto [ptr, ec] = std::from_chars(id_text.data(), id_text.data() + id_text.size(), id);
    if (ec != std::errc() || ptr != id_text.data() + id_text.size() || id < 1) return Refused(404, "not a rollout id");
    const std::string verb = t == RolloutTransition::kPause ? "pause" : t == RolloutTransition::kResume ? "resume" : "abort";
    std::optional<std::string> reason;
    if (t != RolloutTransition::kResume) {
      auto given = f.Optional("reason");
      if (!given.ok()) return FleetPage(req, p, {{verb + "-" + id_text, "give the reason once"}}, "");
      if (*given && !(*given)->empty()) {
        bool ok = (*given)->size() <= 500;
        for (char ch : **given) ok = ok && static_cast<unsigned char>(ch) >= 0x20 && ch != 0x7f;
        if (!ok) return FleetPage(req, p, {{verb + "-" + id_text, "at most 500 characters without control characters"}}, "");
        reason = **given;
      }
    }
    auto got = ChangeRolloutState(*ctx, *fleet, id, t, reason, "dashboard:" + p.account.name);
    if (auto* r = std::get_if<Response>(&got)) {
      if (r->status == 404) return Refused(404, ApiMessage(*r));
      if (r->status >= 500) return Refused(r->status, "the database is unavailable; try again");
      return FleetPage(req, p, {{verb + "-" + id_text, ApiMessage(*r)}}, "");
    }
    ctx->Log("dashboard: dashboard:" + p.account.name + " " + verb + " rollout " + id_text);
    return FleetPage(req, p, {}, "Rollout " + id_text + ": " + verb + " done; it is now " +
                                     std::get<Json>(got)["state"].get<std::string>() + ".");
  }
  Response PausePost(const Request& req) { return RolloutPost(req, RolloutTransition::kPause); }
  Response ResumePost(const Request& req) { return RolloutPost(req, RolloutTransition::kResume); }
  Response AbortPost(const Request& req) { return RolloutPost(req, RolloutTransition::kAbort); }

  // ---- accounts (admin) and the own password ----

  static std::string RoleSelect(const std::string& id, web::Role current) {
    std::string s = "<select id=\"" + id + "\" name=\"role\">";
    for (web::Role r : {web::Role::kReadOnly, web::Role::kSupport, web::Role::kAdmin}) {
      const std::string n(web::RoleName(r));
      s += "<option value=\"" + n + "\"" + (r == current ? " selected" : "") + ">" + n + "</option>";
    }
    return s + "</select>";
  }

  Response AccountsPage(const web::Principal& p, const std::map<std::string, std::string>& errors, const std::string& message,
                        const std::string& new_name) {
    auto err = [&](const std::string& f) { return errors.count(f) ? ErrorP(f, errors.at(f)) : std::string(); };
    auto list = accounts.List();
    if (!list.ok()) return Refused(503, "the database is unavailable; try again");
    std::string c;
    if (!message.empty()) c += "<p class=\"ok\" id=\"message\">" + HtmlEscape(message) + "</p>";
    c += "<table id=\"accounts\"><tr><th>Account</th><th>Role</th><th>State</th><th>Created</th><th></th></tr>";
    for (const auto& a : *list) {
      const std::string base = "/dashboard/accounts/" + a.name;
      c += "<tr><td>" + HtmlEscape(a.name) + "</td><td><form method=\"post\" action=\"" + HtmlEscape(base + "/role") +
           "\" novalidate>" + Csrf(p, base + "/role") + RoleSelect("role-" + a.name, a.role) +
           "<button type=\"submit\">Change role</button>" + err("role-" + a.name) + "</form></td><td>" +
           (a.disabled ? "disabled" : "active") + "</td><td>" + HtmlEscape(FormatTimestamp(a.created)) + "</td><td>" +
           "<form method=\"post\" action=\"" + HtmlEscape(base + "/disable") + "\">" + Csrf(p, base + "/disable") +
           "<input type=\"hidden\" name=\"disabled\" value=\"" + (a.disabled ? "0" : "1") + "\"><button type=\"submit\">" +
           (a.disabled ? "Enable" : "Disable") + "</button>" + err("disable-" + a.name) + "</form></td></tr>";
    }
    c += "</table><h3>New account</h3><form method=\"post\" action=\"/dashboard/accounts\" novalidate>" +
         Csrf(p, "/dashboard/accounts") + "<label for=\"name\">Account name</label><input id=\"name\" name=\"name\" value=\"" +
         HtmlEscape(new_name) + "\" autocomplete=\"off\">" + err("name") + "<label for=\"role\">Role</label>" +
         RoleSelect("role", web::Role::kReadOnly) + err("role") +
         "<label for=\"password\">Initial password (at least 12 bytes)</label><input id=\"password\" name=\"password\" "
         "type=\"password\" autocomplete=\"new-password\">" + err("password") +
         "<p><button type=\"submit\">Create the account</button></p></form>";
    return Page(200, "Accounts", c, Nav(p));
  }

  Response AccountsGet(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    const web::Principal& p = std::get<web::Principal>(s);
    if (auto refusal = auth().RequireRole(p, web::Role::kAdmin)) return Refused(403, refusal->reason);
    return AccountsPage(p, {}, "", "");
  }

  Response AccountCreatePost(const Request& req) {
    auto b = Begin(req, web::Role::kAdmin);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    auto name = f.Single("name");
    auto role_text = f.Single("role");
    auto password = f.Single("password");
    std::map<std::string, std::string> errors;
    if (!name.ok() || name->empty()) errors["name"] = "enter an account name";
    std::optional<web::Role> role = role_text.ok() ? web::ParseRole(*role_text) : std::nullopt;
    if (!role) errors["role"] = "choose read-only, support or admin";
    if (!password.ok() || password->empty()) errors["password"] = "enter an initial password";
    const std::string shown = name.ok() ? *name : "";
    if (!errors.empty()) return AccountsPage(p, errors, "", shown);
    auto made = auth().CreateAccount(p, *name, *role, *password);
    if (!made.ok()) {
      const auto& why = made.refusal();
      if (why.status >= 500) return Refused(503, "the database is unavailable; try again");
      const std::string field = why.reason.find("password") != std::string::npos ? "password" : "name";
      return AccountsPage(p, {{field, why.reason}}, "", shown);
    }
    ctx->Log("dashboard: dashboard:" + p.account.name + " created account '" + made->name + "'");
    return AccountsPage(p, {}, "Created the account " + made->name + ".", "");
  }

  Response AccountRolePost(const Request& req) {
    auto b = Begin(req, web::Role::kAdmin);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string name(req.PathParam("name"));
    auto role_text = f.Single("role");
    std::optional<web::Role> role = role_text.ok() ? web::ParseRole(*role_text) : std::nullopt;
    if (!role) return AccountsPage(p, {{"role-" + name, "choose read-only, support or admin"}}, "", "");
    if (name == p.account.name && *role != web::Role::kAdmin) {
      return AccountsPage(p, {{"role-" + name, "you cannot take the admin role from yourself"}}, "", "");
    }
    auto found = accounts.Find(name);
    if (!found.ok()) return Refused(503, "the database is unavailable; try again");
    if (!*found) return Refused(404, "no account '" + name + "'");
    web::Account a = **found;
    a.role = *role;
    if (auto st = accounts.Update(a); !st.ok()) return Refused(503, "the database is unavailable; try again");
    ctx->Log("dashboard: dashboard:" + p.account.name + " gave '" + name + "' the role " + std::string(web::RoleName(*role)));
    return AccountsPage(p, {}, "The account " + name + " now has the role " + std::string(web::RoleName(*role)) + ".", "");
  }

  Response AccountDisablePost(const Request& req) {
    auto b = Begin(req, web::Role::kAdmin);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    const std::string name(req.PathParam("name"));
    auto value = f.Single("disabled");
    if (!value.ok() || (*value != "0" && *value != "1")) return AccountsPage(p, {{"disable-" + name, "disabled must be 0 or 1"}}, "", "");
    auto done = auth().SetDisabled(p, name, *value == "1");
    if (!done.ok()) {
      if (done.refusal().status == 404) return Refused(404, done.refusal().reason);
      if (done.refusal().status >= 500) return Refused(503, "the database is unavailable; try again");
      return AccountsPage(p, {{"disable-" + name, done.refusal().reason}}, "", "");
    }
    ctx->Log("dashboard: dashboard:" + p.account.name + (*value == "1" ? " disabled '" : " enabled '") + name + "'");
    return AccountsPage(p, {}, "The account " + name + " is now " + (*value == "1" ? "disabled" : "active") + ".", "");
  }

  Response PasswordPage(const web::Principal& p, const std::map<std::string, std::string>& errors, const std::string& message) {
    auto err = [&](const std::string& f) { return errors.count(f) ? ErrorP(f, errors.at(f)) : std::string(); };
    std::string c;
    if (!message.empty()) c += "<p class=\"ok\" id=\"message\">" + HtmlEscape(message) + "</p>";
    c += "<form method=\"post\" action=\"/dashboard/password\" novalidate>" + Csrf(p, "/dashboard/password") +
         "<input type=\"hidden\" name=\"name\" value=\"" + HtmlEscape(p.account.name) + "\" autocomplete=\"username\">"
         "<label for=\"current\">Current password</label><input id=\"current\" name=\"current\" type=\"password\" "
         "autocomplete=\"current-password\">" + err("current") +
         "<label for=\"password\">New password (at least 12 bytes)</label><input id=\"password\" name=\"password\" "
         "type=\"password\" autocomplete=\"new-password\">" + err("password") +
         "<label for=\"password2\">New password again</label><input id=\"password2\" name=\"password2\" type=\"password\" "
         "autocomplete=\"new-password\">" + err("password2") + "<p><button type=\"submit\">Change the password</button></p></form>";
    return Page(200, "Change your password", c, Nav(p));
  }

  Response PasswordGet(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    return PasswordPage(std::get<web::Principal>(s), {}, req.QueryParam("changed") ? "Your password was changed." : "");
  }

  Response PasswordPost(const Request& req) {
    auto b = Begin(req, web::Role::kReadOnly);
    if (auto* r = std::get_if<Response>(&b)) return std::move(*r);
    auto& [p, f] = std::get<0>(b);
    auto current = f.Single("current");
    auto password = f.Single("password");
    auto password2 = f.Single("password2");
    std::map<std::string, std::string> errors;
    if (!current.ok() || current->empty()) errors["current"] = "enter your current password";
    if (!password.ok() || password->empty()) errors["password"] = "enter a new password";
    if (errors.empty() && (!password2.ok() || *password2 != *password)) errors["password2"] = "the two new passwords differ";
    if (!errors.empty()) return PasswordPage(p, errors, "");
    auto changed = auth().ChangePassword(p, *current, *password);
    if (!changed.ok()) {
      const auto& why = changed.refusal();
      if (why.status >= 500) return Refused(503, "the database is unavailable; try again");
      return PasswordPage(p, {{why.status == 401 ? "current" : "password", why.reason}}, "");
    }
    ctx->Log("dashboard: '" + p.account.name + "' changed its password");
    return Redirect("/dashboard/password?changed=1", changed->set_cookie);
  }

  Response ApplianceGet(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    return AppliancePage(req, std::get<web::Principal>(s), "", false);
  }

  // The same operation and audit row as POST /api/v1/appliances/{id}/downloads/reenable.
  Response ReenablePost(const Request& req) {
    auto s = Session(req);
    if (auto* r = std::get_if<Response>(&s)) return std::move(*r);
    const web::Principal& p = std::get<web::Principal>(s);
    if (auto refusal = auth().RequireRole(p, web::Role::kSupport)) return Refused(403, refusal->reason);
    auto form = CheckedForm(req, p);
    if (auto* r = std::get_if<Response>(&form)) return std::move(*r);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return Refused(404, "not an appliance id");
    const web::Form& f = std::get<web::Form>(form);
    auto name = f.Single("name");
    auto version_text = f.Single("version");
    if (!name.ok() || !version_text.ok()) return AppliancePage(req, p, "give one package name and version", true);
    auto version = packages::Version::Parse(*version_text);
    if (!version.ok()) return AppliancePage(req, p, "version: " + version.error().message(), true);
    const std::string v = version->ToString();
    const std::string actor = "dashboard:" + p.account.name;
    auto got = ctx->Transact<bool>("dashboard reenable", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
      UPK_TRY_ASSIGN(db::Result r, c.Exec("DELETE FROM portal_downloads WHERE appliance_id = $1 AND name = $2 AND "
                                          "version = $3 RETURNING bundle_id, downloaded_at",
                                          id, *name, v));
      if (r.rows() == 0) {
        reject = Response(404);
        return Error(Errc::kNotFound, "not downloaded");
      }
      UPK_TRY_ASSIGN(std::string bundle_id, r.Get<std::string>(0, "bundle_id"));
      UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(0, "downloaded_at"));
      Json detail{{"appliance_id", id}, {"name", *name}, {"version", v}, {"bundle_id", bundle_id},
                  {"downloaded_at", FormatTimestamp(at)}};
      UPK_TRY(InsertAudit(c, ctx->clock.Now(), actor, "portal.reenable", id, detail));
      return true;
    });
    if (auto* r = std::get_if<Response>(&got)) {
      if (r->status == 404) return AppliancePage(req, p, *name + " " + v + " was not withheld for this appliance", true);
      return Refused(r->status, "the database is unavailable; try again");
    }
    ctx->Log("dashboard: " + actor + " re-enabled " + *name + " " + v + " for " + id);
    return AppliancePage(req, p, "Re-enabled the download of " + *name + " " + v + ".", false);
  }
};

}  // namespace

void SetDashboardPasswordCostForTests(web::PasswordCost cost) {
  std::lock_guard lock(g_cost_mu);
  g_cost = cost;
}

Status RegisterDashboard(const std::shared_ptr<Context>& ctx, net::Server& server) {
  if (!ctx->fleet) return Error(Errc::kInternal, "InitFleet() must run before the dashboard is registered");
  web::PasswordCost cost = web::PasswordCost::Interactive();
  {
    std::lock_guard lock(g_cost_mu);
    if (g_cost) cost = *g_cost;
  }
  auto d = std::make_shared<Dashboard>(ctx, ctx->fleet.get(), cost);
  d->server = &server;
  ctx->stop_hooks.push_back([weak = std::weak_ptr<Dashboard>(d)] {
    if (auto a = weak.lock()) {
      std::lock_guard lock(a->server_mu);
      a->server = nullptr;
    }
  });
  ctx->jobs.push_back(BackgroundJob{"dashboard setup token", std::chrono::seconds(5), [weak = std::weak_ptr<Dashboard>(d)] {
                                      auto a = weak.lock();
                                      return a ? a->Announce() : OkStatus();
                                    }});
  net::RouteOptions o;
  o.max_body_bytes = kFormBytes;
  o.use_worker_pool = true;  // database and Argon2id: never on an I/O thread
  using H = Response (Dashboard::*)(const Request&);
  auto route = [&](Method m, const char* pattern, H h) {
    return server.Handle(m, pattern, [d, h](const Request& r) { return ((*d).*h)(r); }, o);
  };
  UPK_TRY(route(Method::kGet, "/dashboard/style.css", &Dashboard::Style));
  UPK_TRY(route(Method::kGet, "/dashboard/setup", &Dashboard::SetupGet));
  UPK_TRY(route(Method::kPost, "/dashboard/setup", &Dashboard::SetupPost));
  UPK_TRY(route(Method::kGet, "/dashboard/login", &Dashboard::LoginGet));
  UPK_TRY(route(Method::kPost, "/dashboard/login", &Dashboard::LoginPost));
  UPK_TRY(route(Method::kPost, "/dashboard/logout", &Dashboard::LogoutPost));
  UPK_TRY(route(Method::kGet, "/dashboard", &Dashboard::Home));
  UPK_TRY(route(Method::kGet, "/dashboard/appliances/{id}", &Dashboard::ApplianceGet));
  UPK_TRY(route(Method::kPost, "/dashboard/appliances/{id}/reenable", &Dashboard::ReenablePost));
  UPK_TRY(route(Method::kPost, "/dashboard/appliances/{id}/assign", &Dashboard::AssignPost));
  UPK_TRY(route(Method::kPost, "/dashboard/appliances/{id}/pin", &Dashboard::PinPost));
  UPK_TRY(route(Method::kPost, "/dashboard/appliances/{id}/unpin", &Dashboard::UnpinPost));
  UPK_TRY(route(Method::kPost, "/dashboard/appliances/{id}/revoke", &Dashboard::RevokePost));
  UPK_TRY(route(Method::kGet, "/dashboard/fleet", &Dashboard::FleetGet));
  UPK_TRY(route(Method::kPost, "/dashboard/rollouts/{id}/pause", &Dashboard::PausePost));
  UPK_TRY(route(Method::kPost, "/dashboard/rollouts/{id}/resume", &Dashboard::ResumePost));
  UPK_TRY(route(Method::kPost, "/dashboard/rollouts/{id}/abort", &Dashboard::AbortPost));
  UPK_TRY(route(Method::kGet, "/dashboard/accounts", &Dashboard::AccountsGet));
  UPK_TRY(route(Method::kPost, "/dashboard/accounts", &Dashboard::AccountCreatePost));
  UPK_TRY(route(Method::kPost, "/dashboard/accounts/{name}/role", &Dashboard::AccountRolePost));
  UPK_TRY(route(Method::kPost, "/dashboard/accounts/{name}/disable", &Dashboard::AccountDisablePost));
  UPK_TRY(route(Method::kGet, "/dashboard/password", &Dashboard::PasswordGet));
  UPK_TRY(route(Method::kPost, "/dashboard/password", &Dashboard::PasswordPost));
  return OkStatus();
}

}  // namespace upkeep::updater
