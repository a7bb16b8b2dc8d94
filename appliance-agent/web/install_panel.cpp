// The updates page's plan ("Available updates", in install order, with "Install now" and
// "Install in the next maintenance window") and history panels (page_kit.hpp).
//
// POST /install (name, version, when=now|window): "now" queues the job "install" that installs the
// plan's steps in order up to and including the chosen one (InstallUpTo, web_jobs.hpp); "window"
// queues a job that keeps the admin's approval (kInstallApprovalDoc), which the daemon's cycle
// acts on inside the next maintenance window. POST /install/cancel removes the approval (a job
// too: the page never writes the agent's state itself).
#include "page_kit.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/timing.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {
namespace {

using net::Method;
using net::Request;
using net::Response;

constexpr std::size_t kMaxFieldBytes = 200;  // a package name or version is far shorter

constexpr const char* kInstallCss =
    "#plan form{margin:0}#plan button{margin:.1em .3em .1em 0}#plan .note{color:#555;font-size:90%}\n"
    "#approval{border:1px solid #060;padding:.4em .8em}\n"
    "#history tr.error td{color:#a00}#history .restored{color:#060;font-weight:bold}\n";

bool IsObject(const Json& j, const char* key) { return j.is_object() && j.contains(key) && j[key].is_object(); }

// The step's state, and why a step cannot be installed from the page ("" when it can).
struct StepView {
  std::string name, version, state;
  std::size_t before = 0;  // steps not installed before it (installed first, in order)
  std::string blocked;
};

std::vector<StepView> Steps(const Json& status) {
  std::vector<StepView> out;
  std::string failed;  // the first failed step: later ones wait for it
  std::size_t pending = 0;
  for (const auto& p : Arr(status, "plan")) {
    StepView v;
    v.name = Str(p, "name");
    v.version = Str(p, "version");
    v.state = Str(p, "state");
    if (v.state != "installed") {
      v.before = pending++;
      if (v.state == "failed") {
        v.blocked = "its install failed and was rolled back; it is not retried from this page (a newer release or "
                    "`appliance-agent install --retry` will)";
        if (failed.empty()) failed = v.name + " " + v.version;
      } else if (!failed.empty()) {
        v.blocked = "needs " + failed + " first, whose install failed";
      }
    }
    out.push_back(std::move(v));
  }
  return out;
}

class InstallPanel final : public Panel {
 public:
  explicit InstallPanel(const PanelEnv& env) : env_(env) {}

  Status Register(RouteSink& routes) override {
    UPK_TRY(routes.Add(Method::kPost, "/install", [this](const Request& r, web::Authenticator& a) { return PostInstall(r, a); }));
    UPK_TRY(routes.Add(Method::kPost, "/install/cancel",
                       [this](const Request& r, web::Authenticator& a) { return PostCancel(r, a); }));
    return OkStatus();
  }

  std::string Css() const override { return kInstallCss; }

  std::string Render(const web::Principal& who, const Json& s, web::Authenticator& auth) override {
    return Section(who, s, auth, {}, {});
  }

 private:
  // `errors`: messages by "NAME VERSION" shown next to that step's form; `general` above the table.
  std::string Section(const web::Principal& who, const Json& s, web::Authenticator& auth,
                      const std::map<std::string, std::string>& errors, const std::string& general) {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    const bool windows = !Arr(s, "maintenance_windows").empty();
    const std::string next_window = Str(s, "next_window");
    std::string b = "<section id=\"plan\"><h2>Available updates</h2>\n" + Alert(general);
    if (s.is_object() && s.contains("plan_error")) {
      b += "<p class=\"error\">" + HtmlEscape(Str(s, "plan_error")) + "</p>\n";
    }
    if (IsObject(s, "install_approval")) b += Approval(who, s, auth, admin);
    const auto steps = Steps(s);
    const Json& plan = Arr(s, "plan");
    if (plan.empty()) {
      b += "<p>Up to date: nothing to install.</p>\n";
      return b + "</section>\n";
    }
    b += "<p>In install order; each step needs the ones before it (installing a later step installs the ones "
         "before it first, in order).";
    if (windows) {
      b += " Maintenance windows: " + HtmlEscape(JoinWindows(s)) +
           (next_window.empty() ? "" : "; the next one opens at " + HtmlEscape(next_window)) + ".";
    }
    b += "</p>\n";
    if (!admin) b += "<p class=\"note\">Your role may view this page; an administrator installs updates.</p>\n";
    if (env_.jobs == nullptr) b += "<p class=\"note\">Installing from this page needs the agent daemon.</p>\n";
    b += "<table><tr><th>#</th><th>Package</th><th>Kind</th><th>Version</th><th>State</th><th>Why</th>"
         "<th>Install</th></tr>";
    for (std::size_t i = 0; i < plan.size() && i < steps.size(); ++i) {
      const auto& p = plan[i];
      const StepView& v = steps[i];
      const std::string key = v.name + " " + v.version;
      b += "<tr class=\"state-" + ClassName(v.state) + "\"><td>" + std::to_string(i + 1) + "</td><td>" +
           HtmlEscape(v.name) + "</td><td>" + HtmlEscape(Str(p, "kind")) + "</td><td>" + HtmlEscape(v.version) +
           "</td><td>" + HtmlEscape(v.state) + "</td><td>" + HtmlEscape(Str(p, "reason")) + "</td><td>";
      if (v.state != "installed") {
        if (!v.blocked.empty()) {
          b += "<span class=\"note\">Not installable: " + HtmlEscape(v.blocked) + "</span>";
        } else {
          b += StepForm(who, auth, v, admin && env_.jobs != nullptr, windows, next_window, i + 1);
        }
        if (auto e = errors.find(key); e != errors.end()) {
          b += "<span class=\"field-error\" id=\"install-error-" + std::to_string(i + 1) + "\" role=\"alert\">" +
               HtmlEscape(e->second) + "</span>";
        }
      }
      b += "</td></tr>";
    }
    b += "</table>\n</section>\n";
    return b;
  }

  static std::string JoinWindows(const Json& s) {
    std::string out;
    for (const auto& w : Arr(s, "maintenance_windows")) {
      if (w.is_string()) out += (out.empty() ? "" : ", ") + w.get<std::string>();
    }
    return out;
  }

  std::string StepForm(const web::Principal& who, web::Authenticator& auth, const StepView& v, bool enabled,
                       bool windows, const std::string& next_window, std::size_t index) {
    const std::string dis = enabled ? "" : " disabled";
    const std::string id = std::to_string(index);
    std::string f = "<form method=\"post\" action=\"/install\" id=\"install-" + id + "\">" +
                    CsrfField(auth.CsrfToken(who, "/install")) + Hidden("name", v.name) + Hidden("version", v.version) +
                    "<button type=\"submit\" name=\"when\" value=\"now\"" + dis + ">Install now</button>";
    if (windows) {
      f += "<button type=\"submit\" name=\"when\" value=\"window\"" + dis + ">Install in the next maintenance window" +
           (next_window.empty() ? "" : " (" + HtmlEscape(next_window) + ")") + "</button>";
    }
    if (v.before > 0) {
      f += "<span class=\"note\">installs the " + std::to_string(v.before) + " step" + (v.before == 1 ? "" : "s") +
           " before it first, in order</span>";
    }
    return f + "</form>";
  }

  std::string Approval(const web::Principal& who, const Json& s, web::Authenticator& auth, bool admin) {
    const Json& a = s["install_approval"];
    const std::string next = Str(s, "next_window");
    std::string b = "<div id=\"approval\"><p class=\"ok\" role=\"status\">" +
                    HtmlEscape(Str(a, "name") + " " + Str(a, "version")) +
                    (next.empty() ? std::string(": scheduled for the next maintenance window")
                                  : ": scheduled for the maintenance window at " + HtmlEscape(next)) +
                    " (approved by " + HtmlEscape(Str(a, "by")) + " at " + HtmlEscape(Str(a, "at")) + ")";
    b += "</p><form method=\"post\" action=\"/install/cancel\">" + CsrfField(auth.CsrfToken(who, "/install/cancel")) +
         "<button type=\"submit\"" + std::string(admin && env_.jobs != nullptr ? "" : " disabled") +
         ">Cancel the scheduled install</button></form></div>\n";
    return b;
  }

  // The form again with its message (200: a refused form is a page that worked).
  Response Again(const web::Principal& who, const Json& s, web::Authenticator& auth,
                 const std::map<std::string, std::string>& errors, const std::string& general) {
    return Page(200, "Install",
                "<header><h1>Appliance updates</h1></header>\n" + Section(who, s, auth, errors, general) +
                    "<p><a href=\"/\">Back to the updates page</a></p>\n");
  }

  Response PostInstall(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& [who, form] = std::get<FormPost>(post);
    auto status = env_.source->Status();
    if (!status.ok()) return ErrorPage(503, "cannot read the agent's state: " + status.error().message());
    const Json& s = *status;
    const auto name = form.Single("name");
    const auto version = form.Single("version");
    const auto when = form.Single("when");
    const bool fields_ok = name.ok() && version.ok() && !name->empty() && !version->empty() &&
                           name->size() <= kMaxFieldBytes && version->size() <= kMaxFieldBytes;
    if (!fields_ok) return Again(who, s, auth, {}, "choose a step of the plan to install");
    const std::string key = *name + " " + *version;
    const auto steps = Steps(s);
    const StepView* step = nullptr;
    for (const auto& v : steps) {
      if (v.name == *name && v.version == *version) step = &v;
    }
    if (step == nullptr) {
      return Again(who, s, auth, {}, key + " is not in the plan (check for updates again)");
    }
    if (!when.ok() || (*when != "now" && *when != "window")) {
      return Again(who, s, auth, {{key, "choose when: now or in the next maintenance window"}}, "");
    }
    if (step->state == "installed") return Again(who, s, auth, {}, key + " is installed already");
    if (!step->blocked.empty()) return Again(who, s, auth, {{key, key + ": " + step->blocked}}, "");
    const bool window = *when == "window";
    if (window && Arr(s, "maintenance_windows").empty()) {
      return Again(who, s, auth,
                   {{key, "no maintenance windows are set (settings maintenance_windows): install it now instead"}}, "");
    }
    if (env_.jobs == nullptr) return Again(who, s, auth, {{key, "installing from this page needs the agent daemon"}}, "");

    const std::string by = who.account.name;
    const std::string n = *name, v = *version;
    Expected<std::uint64_t> id = Error(Errc::kInternal, "not submitted");
    if (!window) {
      id = env_.jobs->Submit("install", "Install " + key, by, [n, v](AgentRuntime& rt, JobReporter& report) {
        return InstallUpTo(*rt.agent, *rt.store, n, v, report);
      });
    } else {
      const Clock* clock = env_.clock != nullptr ? env_.clock : &SystemClock::Instance();
      id = env_.jobs->Submit("install", "Install " + key + " in the next maintenance window", by,
                             [n, v, by, clock](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
                               return Approve(rt, n, v, by, *clock, report);
                             });
    }
    if (!id.ok()) return Again(who, s, auth, {{key, id.error().message()}}, "");
    if (env_.log) env_.log("web: '" + by + "' asked to install " + key + (window ? " in the next maintenance window" : " now"));
    return Redirect("/jobs/" + std::to_string(*id));
  }

  // The window job: keeps the approval once the step is still one to install.
  static Expected<std::string> Approve(AgentRuntime& rt, const std::string& name, const std::string& version,
                                       const std::string& by, const Clock& clock, JobReporter& report) {
    const std::string key = name + " " + version;
    UPK_TRY_ASSIGN(auto plan, rt.agent->Plan());
    const PlannedStep* step = nullptr;
    for (const auto& p : plan) {
      if (p.step.name == name && p.step.version.ToString() == version) step = &p;
    }
    if (step == nullptr) return Error(Errc::kNotFound, "the assignment no longer names " + key);
    if (step->state == "installed") return Error(Errc::kPolicy, key + " is installed already");
    const Settings settings = rt.agent->CurrentSettings();
    UPK_TRY_ASSIGN(MaintenanceWindows windows, MaintenanceWindows::Parse(settings.maintenance_windows));
    if (windows.always()) return Error(Errc::kPolicy, "no maintenance windows are set: install it now instead");
    const SysTime now = clock.Now();
    UPK_TRY(rt.store->Put(kInstallApprovalDoc,
                          Json{{"name", name}, {"version", version}, {"by", by}, {"at", FormatTimestamp(now)}}));
    const std::string at = FormatTimestamp(windows.NextStart(now));
    report.Line("approved by " + by + ": install up to " + key + " in the maintenance window at " + at);
    return key + " is scheduled for the maintenance window at " + at + " (approved by " + by + ")";
  }

  Response PostCancel(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& who = std::get<FormPost>(post).who;
    auto status = env_.source->Status();
    if (!status.ok()) return ErrorPage(503, "cannot read the agent's state: " + status.error().message());
    if (!IsObject(*status, "install_approval")) return Again(who, *status, auth, {}, "no install is scheduled");
    if (env_.jobs == nullptr) return Again(who, *status, auth, {}, "cancelling from this page needs the agent daemon");
    const std::string by = who.account.name;
    auto id = env_.jobs->Submit("install", "Cancel the scheduled install", by,
                                [by](AgentRuntime& rt, JobReporter&) -> Expected<std::string> {
                                  auto a = rt.store->Get(kInstallApprovalDoc);
                                  if (!a) return std::string("nothing was scheduled any more");
                                  UPK_TRY(rt.store->Remove(kInstallApprovalDoc));
                                  return "the scheduled install of " + Str(*a, "name") + " " + Str(*a, "version") +
                                         " was cancelled by " + by;
                                });
    if (!id.ok()) return Again(who, *status, auth, {}, id.error().message());
    if (env_.log) env_.log("web: '" + by + "' cancelled the scheduled install");
    return Redirect("/jobs/" + std::to_string(*id));
  }

  PanelEnv env_;
};

// History, newest first. Failures and rollbacks say what failed, why and which version runs
// again; phase records (one per phase of every install) are left out: the job page and the
// status section show phases live.
class HistoryPanel final : public Panel {
 public:
  Status Register(RouteSink&) override { return OkStatus(); }

  std::string Render(const web::Principal&, const Json& s, web::Authenticator&) override {
    std::string b = "<section id=\"history\"><h2>History</h2>\n";
    const Json& history = Arr(s, "history");
    std::string rows;
    for (const auto& h : history) {
      const std::string type = Str(h, "type");
      if (type == "phase") continue;
      std::string what = Str(h, "name");
      if (!Str(h, "version").empty()) what += " " + Str(h, "version");
      std::string cell;
      if (type == "rollback") {
        const std::string to = Str(h, "to");
        cell = "<strong>" + HtmlEscape(what) + " failed</strong>: " + HtmlEscape(Str(h, "message")) + "; " +
               (to.empty() ? std::string("removed again (nothing was installed before)")
                           : "<span class=\"restored\">rolled back to " + HtmlEscape(to) + "</span>");
      } else if (type == "failure") {
        cell = "<strong>" + HtmlEscape(what) + " failed</strong> during " + HtmlEscape(Str(h, "phase")) + ": " +
               HtmlEscape(Str(h, "message")) + "; nothing was switched";
      } else {
        std::string details;
        if (!Str(h, "phase").empty()) details += Str(h, "phase") + " ";
        if (!Str(h, "message").empty()) details += Str(h, "message");
        if (!Str(h, "reason").empty()) details += Str(h, "reason");
        if (!Str(h, "to").empty()) details += "to " + Str(h, "to");
        if (type == "success" && !Str(h, "previous").empty()) details += "was " + Str(h, "previous");
        if (h.is_object() && h.contains("steps")) details += Str(h, "steps") + " step(s) to install";
        cell = HtmlEscape(details);
      }
      const std::string tail = Str(h, "log_tail");
      if (!tail.empty()) cell += "<details><summary>log</summary><pre>" + HtmlEscape(tail) + "</pre></details>";
      const bool bad = type == "failure" || type == "rollback" || type == "refused";
      rows += "<tr class=\"history-" + ClassName(type) + (bad ? " error" : "") + "\"><td>" + HtmlEscape(Str(h, "at")) +
              "</td><td>" + HtmlEscape(type) + "</td><td>" + HtmlEscape(what) + "</td><td>" + cell + "</td></tr>";
    }
    if (rows.empty()) {
      b += "<p>Nothing happened yet.</p>\n";
    } else {
      b += "<table><tr><th>When</th><th>What</th><th>Package</th><th>Details</th></tr>" + rows + "</table>\n";
    }
    b += "</section>\n";
    return b;
  }
};

}  // namespace

std::unique_ptr<Panel> MakeInstallPanel(const PanelEnv& env) { return std::make_unique<InstallPanel>(env); }
std::unique_ptr<Panel> MakeHistoryPanel(const PanelEnv&) { return std::make_unique<HistoryPanel>(); }

}  // namespace upkeep::agent::webpage
