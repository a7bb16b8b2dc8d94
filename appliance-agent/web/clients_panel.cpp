// The updates page's panel for endpoint clients of the relay (counts by state, the wave's
// progress, the two upgrade throttles, the client list export) (page_kit.hpp, docs/agent/web.md
// "Clients on the page"). Shown only when the configuration has a "relay" section.
//
// The counts and the export come from the daemon's relay through its control socket
// (STATE/relay.sock: one request line, the answer, close), asked with the agent core's
// AskControlSocket (control_socket.hpp; AskRelay uses it too) with a short deadline so a relay
// that hangs never holds a page for long. The throttles
// are settings: a job "settings" stores them, and the same daemon cycle's AfterCycle hands them to
// the relay.
#include <chrono>

#include "page_kit.hpp"
#include "upkeep/agent/control_socket.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {
namespace {

using net::Method;
using net::Request;
using net::Response;
using Errors = std::map<std::string, std::string>;

constexpr auto kStatusWait = std::chrono::seconds(3);
constexpr auto kExportWait = std::chrono::seconds(30);
constexpr std::size_t kMaxStatusBytes = 1u << 20;
constexpr std::size_t kMaxExportBytes = 256u << 20;

constexpr const char* kClientsCss =
    "#clients .counts td{text-align:right;min-width:4em}#clients .state-failed td{color:#a00}\n";

std::uint64_t Num(const Json& j, const char* key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number_unsigned() ? it->get<std::uint64_t>() : 0;
}

// The relay's throttle values as typed (kept when the form is shown again).
struct Throttles {
  std::string concurrent, bandwidth;
};

class ClientsPanel final : public Panel {
 public:
  explicit ClientsPanel(const PanelEnv& env) : env_(env) {}

  bool Enabled() const { return env_.config != nullptr && env_.config->relay.has_value(); }

  Status Register(RouteSink& routes) override {
    if (!Enabled()) return OkStatus();
    UPK_TRY(routes.Add(Method::kPost, "/clients/settings",
                       [this](const Request& r, web::Authenticator& a) { return PostSettings(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/clients/export.csv",
                       [this](const Request& r, web::Authenticator& a) { return Export(r, a, "csv"); }));
    UPK_TRY(routes.Add(Method::kGet, "/clients/export.json",
                       [this](const Request& r, web::Authenticator& a) { return Export(r, a, "json"); }));
    return OkStatus();
  }

  std::string Css() const override { return kClientsCss; }

  std::string Render(const web::Principal& who, const Json&, web::Authenticator& auth) override {
    if (!Enabled()) return {};
    std::string b = "<section id=\"clients\"><h2>Endpoint clients</h2>\n";
    auto status = RelayStatus();
    Throttles t;
    if (!status.ok()) {
      b += "<p class=\"error\" id=\"relay-down\" role=\"alert\">The relay does not answer: " +
           HtmlEscape(status.error().message()) + "</p>\n";
    } else {
      const Json& s = *status;
      const Json clients = s.is_object() && s.contains("clients") ? s["clients"] : Json::object();
      b += "<table class=\"counts\" id=\"client-counts\"><tr>";
      const char* states[] = {"current", "upgrade pending", "upgrading", "failed", "offline"};
      for (const char* st : states) b += "<th>" + std::string(st) + "</th>";
      b += "<th>total</th></tr><tr>";
      for (const char* st : states) {
        b += "<td class=\"state-" + ClassName(st) + "\" id=\"clients-" + ClassName(st) + "\">" +
             std::to_string(Num(clients, st)) + "</td>";
      }
      b += "<td id=\"clients-total\">" + std::to_string(Num(clients, "total")) + "</td></tr></table>\n";
      const std::uint64_t total = Num(clients, "total"), current = Num(clients, "current");
      const Json upgrades = s.is_object() && s.contains("upgrades") ? s["upgrades"] : Json::object();
      std::string builds;
      for (const auto& x : Arr(s, "builds")) {
        if (!builds.empty()) builds += ", ";
        builds += Str(x, "platform") + " " + Str(x, "version");
      }
      b += "<p id=\"wave\">Wave: " +
           (total == 0 ? std::string("no clients yet")
                       : std::to_string(current) + " of " + std::to_string(total) + " clients current (" +
                             std::to_string(current * 100 / total) + "%)") +
           "; upgrades started " + std::to_string(Num(upgrades, "started")) + ", installed " +
           std::to_string(Num(upgrades, "installed")) + "; builds: " + HtmlEscape(builds.empty() ? "none" : builds) +
           ".</p>\n";
      const Json settings = s.is_object() && s.contains("settings") ? s["settings"] : Json::object();
      t.concurrent = Str(settings, "max_concurrent_client_upgrades");
      t.bandwidth = Str(settings, "max_client_upgrade_bandwidth");
    }
    b += "<p><a id=\"export-csv\" href=\"/clients/export.csv\" download>Export CSV</a> · "
         "<a id=\"export-json\" href=\"/clients/export.json\" download>Export JSON</a></p>\n";
    b += "<h3>Upgrade throttles</h3>\n" + SettingsForm(who, auth, t, {}, {});
    return b + "</section>\n";
  }

 private:
  Expected<Json> RelayStatus() const {
    UPK_TRY_ASSIGN(std::string text, AskControlSocket(env_.config->RelaySocket(), "status", kStatusWait, kMaxStatusBytes));
    auto parsed = ParseJson(text);
    if (!parsed.ok()) return parsed.error().Wrap("the relay's status");
    return parsed;
  }

  std::string SettingsForm(const web::Principal& who, web::Authenticator& auth, const Throttles& t, const Errors& errors,
                           const std::string& general) const {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    const bool enabled = admin && env_.jobs != nullptr;
    std::string b = Alert(general);
    b += "<form id=\"client-throttles\" method=\"post\" action=\"/clients/settings\">" +
         CsrfField(auth.CsrfToken(who, "/clients/settings")) + "\n" +
         Field("max_concurrent_client_upgrades", "Clients upgrading at once (1 to 100000)", "number", t.concurrent, errors,
               "off") +
         Field("max_client_upgrade_bandwidth", "Upgrade bandwidth, bytes per second (16384 to 1099511627776)", "number",
               t.bandwidth, errors, "off") +
         "<p><button type=\"submit\"" + (enabled ? "" : " disabled") + ">Apply the throttles</button>";
    if (!admin) {
      b += " <span>(an administrator changes the throttles)</span>";
    } else if (env_.jobs == nullptr) {
      b += " <span>(unavailable: the agent daemon applies settings)</span>";
    }
    return b + "</p></form>\n";
  }

  Response PostSettings(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const FormPost& fp = std::get<FormPost>(post);
    Throttles t;
    auto concurrent = fp.form.Optional("max_concurrent_client_upgrades");
    auto bandwidth = fp.form.Optional("max_client_upgrade_bandwidth");
    t.concurrent = concurrent.ok() && concurrent->has_value() ? std::string(TrimSpaceTab(**concurrent)) : "";
    t.bandwidth = bandwidth.ok() && bandwidth->has_value() ? std::string(TrimSpaceTab(**bandwidth)) : "";
    // Settings::Set's own rules, each field on its own so the message lands next to it.
    Errors errors;
    Settings check;
    if (t.concurrent.empty()) {
      errors["max_concurrent_client_upgrades"] = "enter a number";
    } else if (auto s = check.Set("max_concurrent_client_upgrades", t.concurrent); !s.ok()) {
      errors["max_concurrent_client_upgrades"] = s.error().message();
    }
    if (t.bandwidth.empty()) {
      errors["max_client_upgrade_bandwidth"] = "enter a number";
    } else if (auto s = check.Set("max_client_upgrade_bandwidth", t.bandwidth); !s.ok()) {
      errors["max_client_upgrade_bandwidth"] = s.error().message();
    }
    std::string general;
    if (errors.empty() && env_.jobs == nullptr) general = "unavailable: the agent daemon applies settings";
    auto again = [&](const Errors& e, const std::string& g) {
      return Page(200, "Upgrade throttles",
                  "<section id=\"clients\"><h1>Upgrade throttles</h1>\n" + SettingsForm(fp.who, auth, t, e, g) +
                      "<p><a href=\"/\">Back to the updates page</a></p></section>\n");
    };
    if (!errors.empty() || !general.empty()) return again(errors, general);
    const std::string concurrent_text = t.concurrent, bandwidth_text = t.bandwidth;
    JobFn fn = [concurrent_text, bandwidth_text](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
      report.Phase("settings");
      Settings s = rt.agent->CurrentSettings();
      UPK_TRY(s.Set("max_concurrent_client_upgrades", concurrent_text));
      UPK_TRY(s.Set("max_client_upgrade_bandwidth", bandwidth_text));
      UPK_TRY(rt.store->Put("settings", s.ToJson()));
      return "client upgrade throttles set: " + std::to_string(s.max_concurrent_client_upgrades) + " at once, " +
             std::to_string(s.max_client_upgrade_bandwidth) + " bytes per second (the relay applies them after this cycle)";
    };
    auto id = env_.jobs->Submit("settings", "Set the client upgrade throttles", fp.who.account.name, std::move(fn));
    if (!id.ok()) return again({}, id.error().message());
    if (env_.log) env_.log("web: '" + fp.who.account.name + "' set the client upgrade throttles");
    return Redirect("/jobs/" + std::to_string(*id));
  }

  Response Export(const Request& req, web::Authenticator& auth, const std::string& format) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    auto body = AskControlSocket(env_.config->RelaySocket(), "export " + format, kExportWait, kMaxExportBytes);
    if (!body.ok()) return ErrorPage(503, "the relay does not answer: " + body.error().message());
    return Attachment(Response::Text(200, std::move(*body),
                                     format == "csv" ? "text/csv; charset=utf-8" : "application/json; charset=utf-8"),
                      "clients." + format);
  }

  PanelEnv env_;
};

}  // namespace

std::unique_ptr<Panel> MakeClientsPanel(const PanelEnv& env) { return std::make_unique<ClientsPanel>(env); }

}  // namespace upkeep::agent::webpage
