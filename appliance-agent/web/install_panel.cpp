// The updates page's plan ("Available updates", in install order, with install actions) and
// history panels (page_kit.hpp).
#include "page_kit.hpp"

#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {
namespace {

class InstallPanel final : public Panel {
 public:
  explicit InstallPanel(const PanelEnv& env) : env_(env) {}
  Status Register(RouteSink&) override { return OkStatus(); }

  std::string Render(const web::Principal&, const Json& s, web::Authenticator&) override {
    std::string b = "<section id=\"plan\"><h2>Available updates</h2>\n";
    if (s.is_object() && s.contains("plan_error")) {
      b += "<p class=\"error\">" + HtmlEscape(Str(s, "plan_error")) + "</p>\n";
    }
    const Json& plan = Arr(s, "plan");
    if (plan.empty()) {
      b += "<p>Up to date: nothing to install.</p>\n";
    } else {
      b += "<p>In install order; each step needs the ones before it.</p>\n<table><tr><th>#</th><th>Package</th>"
           "<th>Kind</th><th>Version</th><th>State</th><th>Why</th></tr>";
      int i = 0;
      for (const auto& p : plan) {
        const std::string state = Str(p, "state");
        const std::string cls = ClassName(state);
        b += "<tr class=\"state-" + cls + "\"><td>" + std::to_string(++i) + "</td><td>" + HtmlEscape(Str(p, "name")) +
             "</td><td>" + HtmlEscape(Str(p, "kind")) + "</td><td>" + HtmlEscape(Str(p, "version")) + "</td><td>" +
             HtmlEscape(state) + "</td><td>" + HtmlEscape(Str(p, "reason")) + "</td></tr>";
      }
      b += "</table>\n";
    }
    b += "</section>\n";
    return b;
  }

 private:
  PanelEnv env_;
};

class HistoryPanel final : public Panel {
 public:
  Status Register(RouteSink&) override { return OkStatus(); }

  std::string Render(const web::Principal&, const Json& s, web::Authenticator&) override {
    std::string b = "<section id=\"history\"><h2>History</h2>\n";
    const Json& history = Arr(s, "history");
    if (history.empty()) {
      b += "<p>Nothing happened yet.</p>\n";
    } else {
      b += "<table><tr><th>When</th><th>What</th><th>Package</th><th>Details</th></tr>";
      for (const auto& h : history) {
        std::string what = Str(h, "name");
        if (!Str(h, "version").empty()) what += " " + Str(h, "version");
        std::string details;
        if (!Str(h, "phase").empty()) details += Str(h, "phase") + " ";
        if (!Str(h, "message").empty()) details += Str(h, "message");
        if (!Str(h, "reason").empty()) details += Str(h, "reason");
        if (!Str(h, "to").empty()) details += "to " + Str(h, "to");
        if (h.is_object() && h.contains("steps")) details += Str(h, "steps") + " step(s) to install";
        const std::string type = Str(h, "type");
        std::string cell = HtmlEscape(details);
        const std::string tail = Str(h, "log_tail");
        if (!tail.empty()) cell += "<details><summary>log</summary><pre>" + HtmlEscape(tail) + "</pre></details>";
        b += "<tr" + std::string(type == "failure" || type == "rollback" || type == "refused" ? " class=\"error\"" : "") +
             "><td>" + HtmlEscape(Str(h, "at")) + "</td><td>" + HtmlEscape(type) + "</td><td>" + HtmlEscape(what) +
             "</td><td>" + cell + "</td></tr>";
      }
      b += "</table>\n";
    }
    b += "</section>\n";
    return b;
  }
};

}  // namespace

std::unique_ptr<Panel> MakeInstallPanel(const PanelEnv& env) { return std::make_unique<InstallPanel>(env); }
std::unique_ptr<Panel> MakeHistoryPanel(const PanelEnv&) { return std::make_unique<HistoryPanel>(); }

}  // namespace upkeep::agent::webpage
