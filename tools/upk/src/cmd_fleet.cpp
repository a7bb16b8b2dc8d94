// upk channel, rollout, appliance, audit, token: thin commands over the updater's operator API
// (docs/updater-api.md). Each builds one request, prints a short table or line for humans and
// the server's JSON as it came with --json. The server enforces roles and every rule; the checks
// here only catch usage mistakes before a round trip.
#include <CLI/CLI.hpp>
#include <filesystem>
#include <memory>

#include "server_common.hpp"
#include "server_requests.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

namespace {

// Runs a request and hands the 2xx body to `print` (text) or prints it (--json).
template <typename Print>
int Show(const Context& ctx, const Expected<ApiResponse>& r, Print print) {
  if (!r || !r->ok()) return FailRequest(ctx, r);
  if (ctx.json) {
    ctx.PrintJson(r->body);
    return 0;
  }
  print(r->body);
  return 0;
}

std::string Join(const Json& array, const char* sep = ",") {
  std::string out;
  if (!array.is_array()) return "-";
  for (const auto& v : array) {
    if (!out.empty()) out += sep;
    out += v.is_string() ? v.get<std::string>() : v.dump();
  }
  return out.empty() ? "-" : out;
}

template <typename Args>
std::shared_ptr<Args> Command(CLI::App* parent, Context& ctx, const char* name, const char* help, const char* example,
                              std::function<int(const Context&, const Args&, const ApiClient&)> run) {
  auto* sub = parent->add_subcommand(name, help);
  sub->fallthrough();
  sub->footer(std::string("Example:\n  ") + example);
  auto a = std::make_shared<Args>();
  AddServerOptions(sub, a->server);
  a->Declare(sub);
  OnRun(sub, ctx, [&ctx, a, run]() -> int {
    if (auto s = a->Check(); !s) return ctx.Fail(s.error());
    auto client = Connect(ctx, a->server);
    if (!client) return ctx.Fail(client.error());
    return run(ctx, *a, *client);
  });
  return a;
}

// --- channels ---

struct NoArgs {
  ServerArgs server;
  void Declare(CLI::App*) {}
  Status Check() const { return OkStatus(); }
};

struct ChannelCreateArgs {
  ServerArgs server;
  std::string name, description;
  void Declare(CLI::App* sub) {
    sub->add_option("NAME", name, "Channel name: [a-z0-9][a-z0-9-]{0,31}")->required();
    sub->add_option("--description", description, "What the channel is for");
  }
  Status Check() const {
    bool ok = !name.empty() && name.size() <= 32 &&
              ((name[0] >= 'a' && name[0] <= 'z') || (name[0] >= '0' && name[0] <= '9'));
    for (char c : name) ok = ok && ((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-');
    if (!ok) return Error(Errc::kInvalidArgument, "channel name '" + name + "': expected [a-z0-9][a-z0-9-]{0,31}");
    return OkStatus();
  }
};

struct ChannelAddArgs {
  ServerArgs server;
  std::string channel, name, version;
  void Declare(CLI::App* sub) {
    sub->add_option("CHANNEL", channel, "Channel")->required();
    sub->add_option("NAME", name, "Release name")->required();
    sub->add_option("VERSION", version, "Release version")->required();
  }
  Status Check() const { return OkStatus(); }
};

void AddChannelCommands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("channel", "List and manage release channels on the updater");
  group->require_subcommand(1);
  group->fallthrough();
  Command<NoArgs>(
      group, ctx, "list", "List channels and their releases", "upk channel list --server URL --token-file T",
      [](const Context& c, const NoArgs&, const ApiClient& api) {
        return Show(c, api.Get("/api/v1/channels"), [&](const Json& body) {
          std::vector<std::vector<std::string>> rows{{"CHANNEL", "RELEASES", "DESCRIPTION"}};
          for (const auto& ch : body.value("channels", Json::array())) {
            std::string releases;
            for (const auto& r : ch.value("releases", Json::array())) {
              releases += (releases.empty() ? "" : " ") + Str(r, "name") + "-" + Str(r, "version");
            }
            rows.push_back({Str(ch, "name"), releases.empty() ? "-" : releases, Str(ch, "description", "")});
          }
          PrintTable(*c.out, rows);
        });
      });
  Command<ChannelCreateArgs>(group, ctx, "create", "Create a channel",
                             "upk channel create beta --description \"early adopters\" --server URL --token-file T",
                             [](const Context& c, const ChannelCreateArgs& a, const ApiClient& api) {
                               return Show(
                                   c, api.Post("/api/v1/channels", {{"name", a.name}, {"description", a.description}}),
                                   [&](const Json&) { *c.out << "created channel " << a.name << "\n"; });
                             });
  Command<ChannelAddArgs>(group, ctx, "add", "Add a published release to a channel",
                          "upk channel add beta site 8.1.0 --server URL --token-file T",
                          [](const Context& c, const ChannelAddArgs& a, const ApiClient& api) {
                            return Show(c,
                                        api.Post("/api/v1/channels/" + EncodeComponent(a.channel) + "/releases",
                                                 {{"name", a.name}, {"version", a.version}}),
                                        [&](const Json& body) {
                                          const bool added = body.value("added", true);
                                          *c.out << (added ? "added " : "already in the channel: ") << a.name << " "
                                                 << a.version << (added ? " to " : " in ") << a.channel << "\n";
                                        });
                          });
}

// --- rollouts ---

struct RolloutCreateArgs {
  ServerArgs server;
  std::string name, version, channel, start_at;
  std::vector<std::string> waves;
  int success_threshold = -1, error_threshold = -1, min_wave_members = 0;
  void Declare(CLI::App* sub) {
    sub->add_option("NAME", name, "Release name")->required();
    sub->add_option("VERSION", version, "Release version")->required();
    sub->add_option("--channel", channel, "Channel the rollout controls")->required();
    sub->add_option("--wave", waves, "A wave: PERCENT (cumulative, 1..100) or group:NAME[,NAME] (repeatable, in order)")
        ->required();
    sub->add_option("--start-at", start_at, "When wave 0 opens, RFC 3339 UTC (default: now)");
    sub->add_option("--success-threshold", success_threshold, "% of wave members reporting success to open the next")
        ->required()
        ->check(CLI::Range(0, 100));
    sub->add_option("--error-threshold", error_threshold, "% of failures among members that pauses the rollout")
        ->required()
        ->check(CLI::Range(0, 100));
    sub->add_option("--min-wave-members", min_wave_members, "Members needed before a wave can complete (default 1)")
        ->check(CLI::Range(1, 1000000));
  }
  Status Check() const {
    if (!start_at.empty()) {
      if (auto t = ParseTimestamp(start_at); !t)
        return Error(Errc::kInvalidArgument, "--start-at: " + t.error().message());
    }
    for (const auto& w : waves) UPK_TRY(ParseWave(w));
    return OkStatus();
  }
  Json Body() const {
    Json w = Json::array();
    for (const auto& spec : waves) w.push_back(*ParseWave(spec));
    Json body{{"name", name},
              {"version", version},
              {"channel", channel},
              {"waves", w},
              {"success_threshold", success_threshold},
              {"error_threshold", error_threshold}};
    if (!start_at.empty()) body["start_at"] = start_at;
    if (min_wave_members > 0) body["min_wave_members"] = min_wave_members;
    return body;
  }
};

struct RolloutListArgs {
  ServerArgs server;
  std::string state;
  void Declare(CLI::App* sub) {
    sub->add_option("--state", state, "Only rollouts in this state")
        ->check(CLI::IsMember({"scheduled", "active", "paused", "completed", "aborted"}));
  }
  Status Check() const { return OkStatus(); }
};

struct RolloutIdArgs {
  ServerArgs server;
  std::string id, reason;
  bool with_reason = false;
  void Declare(CLI::App* sub) {
    sub->add_option("ID", id, "Rollout id")->required();
    if (with_reason) sub->add_option("--reason", reason, "Why (kept in the audit log)");
  }
  Status Check() const { return OkStatus(); }
};
struct RolloutReasonArgs : RolloutIdArgs {
  RolloutReasonArgs() { with_reason = true; }
};

std::string WaveLabel(const Json& w) {
  if (w.contains("percent")) return Num(w, "percent") + "%";
  if (w.contains("groups")) return "group:" + Join(w["groups"]);
  return "?";
}

void PrintRollout(const Context& ctx, const Json& r) {
  std::ostream& out = *ctx.out;
  out << "rollout " << Str(r, "id") << ": " << Str(r, "name") << " " << Str(r, "version") << " in " << Str(r, "channel")
      << "  state " << Str(r, "state");
  if (r.contains("pause_reason") && r["pause_reason"].is_string() && !r["pause_reason"].get<std::string>().empty()) {
    out << " (" << r["pause_reason"].get<std::string>() << ")";
  }
  out << "\n  start " << Str(r, "start_at") << ", success >= " << Num(r, "success_threshold") << "%, errors < "
      << Num(r, "error_threshold") << "%, min members " << Num(r, "min_wave_members", "1") << ", current wave "
      << Num(r, "current_wave") << "\n";
  const bool bars = StdoutIsTerminal(ctx);
  std::vector<std::vector<std::string>> rows{{"WAVE", "TARGET", "OPENED", "MEMBERS", "SUCCEEDED", "FAILED"}};
  if (bars) rows[0].push_back("PROGRESS");
  for (const auto& w : r.value("waves", Json::array())) {
    std::vector<std::string> row{Num(w, "index"),          WaveLabel(w),
                                 Str(w, "opened_at"),      Num(w, "members", "0"),
                                 Num(w, "succeeded", "0"), Num(w, "failed", "0")};
    if (bars) {
      const auto members = w.value("members", std::int64_t{0});
      row.push_back("[" + Bar(w.value("succeeded", std::int64_t{0}), members) + "]");
    }
    rows.push_back(std::move(row));
  }
  PrintTable(out, rows);
}

void AddRolloutCommands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("rollout", "Staged rollouts of a release in a channel");
  group->require_subcommand(1);
  group->fallthrough();
  Command<RolloutCreateArgs>(
      group, ctx, "create", "Create a staged rollout (waves open as earlier ones succeed)",
      "upk rollout create site 8.1.0 --channel stable --wave group:lab --wave 10 --wave 50 --wave 100 \\\n"
      "      --success-threshold 95 --error-threshold 5 --start-at 2026-12-01T08:00:00Z --server URL --token-file T",
      [](const Context& c, const RolloutCreateArgs& a, const ApiClient& api) {
        return Show(c, api.Post("/api/v1/rollouts", a.Body()), [&](const Json& body) {
          const Json r = body.value("rollout", Json::object());
          *c.out << "created rollout " << Str(r, "id") << " (" << Str(r, "state") << ")\n";
        });
      });
  Command<RolloutListArgs>(
      group, ctx, "list", "List rollouts", "upk rollout list --state active --server URL --token-file T",
      [](const Context& c, const RolloutListArgs& a, const ApiClient& api) {
        std::string target = "/api/v1/rollouts";
        if (!a.state.empty()) target += "?state=" + EncodeComponent(a.state);
        return Show(c, api.Get(target), [&](const Json& body) {
          std::vector<std::vector<std::string>> rows{{"ID", "RELEASE", "CHANNEL", "STATE", "WAVE", "CREATED"}};
          for (const auto& r : body.value("rollouts", Json::array())) {
            const auto waves = r.value("waves", Json::array()).size();
            rows.push_back({Str(r, "id"), Str(r, "name") + " " + Str(r, "version"), Str(r, "channel"), Str(r, "state"),
                            Num(r, "current_wave") + "/" + std::to_string(waves), Str(r, "created_at")});
          }
          PrintTable(*c.out, rows);
        });
      });
  Command<RolloutIdArgs>(
      group, ctx, "status", "Show a rollout and its waves", "upk rollout status 42 --server URL --token-file T",
      [](const Context& c, const RolloutIdArgs& a, const ApiClient& api) {
        return Show(c, api.Get("/api/v1/rollouts/" + EncodeComponent(a.id)),
                    [&](const Json& body) { PrintRollout(c, body.value("rollout", Json::object())); });
      });
  struct Action {
    const char* name;
    const char* help;
    bool reason;
  };
  for (const Action& act :
       {Action{"pause", "Pause a rollout: nobody new is offered the release", true},
        Action{"resume", "Resume a paused rollout", false}, Action{"abort", "Abort a rollout for good", true}}) {
    const std::string verb = act.name;
    const std::string example = "upk rollout " + verb + " 42" + (act.reason ? " --reason \"tickets from ACME\"" : "") +
                                " --server URL --token-file T";
    auto run = [verb](const Context& c, const RolloutIdArgs& a, const ApiClient& api) {
      Json body = Json::object();
      if (!a.reason.empty()) body["reason"] = a.reason;
      return Show(c, api.Post("/api/v1/rollouts/" + EncodeComponent(a.id) + "/" + verb, body), [&](const Json& answer) {
        const Json r = answer.value("rollout", Json::object());
        *c.out << "rollout " << a.id << ": " << verb
               << (r.contains("state") ? " -> " + Str(r, "state") : std::string(" done")) << "\n";
      });
    };
    // The help text must outlive the parser; CLI11 copies strings, so temporaries are fine.
    if (act.reason) {
      Command<RolloutReasonArgs>(
          group, ctx, act.name, act.help, example.c_str(),
          [run](const Context& c, const RolloutReasonArgs& a, const ApiClient& api) { return run(c, a, api); });
    } else {
      Command<RolloutIdArgs>(group, ctx, act.name, act.help, example.c_str(), run);
    }
  }
}

// --- appliances ---

struct ApplianceListArgs {
  ServerArgs server;
  std::string customer, channel, after;
  int limit = 0;
  void Declare(CLI::App* sub) {
    sub->add_option("--customer", customer, "Only this customer's appliances");
    sub->add_option("--channel", channel, "Only appliances in this channel");
    sub->add_option("--limit", limit, "At most N (1..1000, server default 100)")->check(CLI::Range(1, 1000));
    sub->add_option("--after", after, "Start after this appliance id (paging)");
  }
  Status Check() const { return OkStatus(); }
};

struct ApplianceIdArgs {
  ServerArgs server;
  std::string id;
  void Declare(CLI::App* sub) { sub->add_option("ID", id, "Appliance id (apl-...)")->required(); }
  Status Check() const { return OkStatus(); }
};

struct ApplianceSetArgs {
  ServerArgs server;
  std::string id, channel;
  std::vector<std::string> groups;
  bool clear_groups = false;
  std::vector<std::string> allow_major;
  bool clear_allow_major = false;
  void Declare(CLI::App* sub) {
    sub->add_option("ID", id, "Appliance id (apl-...)")->required();
    sub->add_option("--channel", channel, "Move it to this channel");
    sub->add_option("--group", groups, "Set its groups to these (repeatable; replaces the current groups)");
    sub->add_flag("--clear-groups", clear_groups, "Remove it from every group");
    sub->add_option("--allow-major", allow_major,
                    "Let package NAME cross into a newer major line (repeatable; replaces the current list)");
    sub->add_flag("--clear-allow-major", clear_allow_major, "Keep every package in its installed major line again");
  }
  Status Check() const {
    if (channel.empty() && groups.empty() && !clear_groups && allow_major.empty() && !clear_allow_major) {
      return Error(Errc::kInvalidArgument,
                   "nothing to change: give --channel, --group, --clear-groups, --allow-major or --clear-allow-major");
    }
    if (clear_groups && !groups.empty())
      return Error(Errc::kInvalidArgument, "--group and --clear-groups exclude each other");
    if (clear_allow_major && !allow_major.empty())
      return Error(Errc::kInvalidArgument, "--allow-major and --clear-allow-major exclude each other");
    return OkStatus();
  }
};

std::string Installed(const Json& installed) {
  if (!installed.is_object()) return "-";
  std::string out;
  for (const auto& [name, version] : installed.items()) {
    out += (out.empty() ? "" : " ") + name + "-" + (version.is_string() ? version.get<std::string>() : version.dump());
  }
  return out.empty() ? "-" : out;
}

void PrintPlan(std::ostream& out, const Json& plan) {
  if (plan.is_null()) {
    out << "plan: -\n";
    return;
  }
  const Json steps = plan.is_array() ? plan : plan.value("steps", Json::array());
  out << "plan (" << steps.size() << " step" << (steps.size() == 1 ? "" : "s") << "):\n";
  for (const auto& s : steps) {
    out << "  " << Str(s, "name") << " " << Str(s, "version");
    if (s.value("wait_hours", std::int64_t{0}) > 0) out << "  after " << Num(s, "wait_hours") << " h";
    if (s.contains("reason")) out << "  (" << Str(s, "reason") << ")";
    out << "\n";
  }
  if (plan.is_object()) {
    // blocked: the planner can't get there; withheld: rollouts, yanks or the licence keep it back.
    for (const char* key : {"blocked", "withheld"}) {
      for (const auto& b : plan.value(key, Json::array())) {
        out << "  " << key << ": " << Str(b, "name") << " " << Str(b, "version") << "  (" << Str(b, "reason") << ")\n";
      }
    }
  }
}

void PrintAppliance(std::ostream& out, const Json& d) {
  out << "appliance " << Str(d, "appliance_id") << "  customer " << Str(d, "customer") << "  status "
      << Str(d, "status") << "\n"
      << "  channel " << Str(d, "channel") << ", groups " << Join(d.value("groups", Json::array()))
      << ", allow major " << Join(d.value("allow_major", Json::array())) << "\n"
      << "  installed " << Installed(d.value("installed", Json())) << "\n"
      << "  agent " << Str(d, "agent_version") << ", last check-in " << Str(d, "last_checkin") << ", clock offset "
      << Num(d, "clock_offset_seconds") << " s\n"
      << "  enrolled " << Str(d, "enrolled_at") << ", maintenance until " << Str(d, "maintenance_end") << "\n";
  const Json assignment = d.value("assignment", Json());
  if (assignment.is_object()) {
    out << "  assignment issued " << Str(assignment, "issued") << ", expires " << Str(assignment, "expires") << ", "
        << assignment.value("steps", Json::array()).size() << " step(s)\n";
  }
  PrintPlan(out, d.value("plan", Json()));
  const Json events = d.value("events", Json::array());
  out << "recent events (" << events.size() << "):\n";
  for (const auto& e : events) {
    out << "  " << Str(e, "at") << "  " << Str(e, "type") << "  " << Str(e, "name") << " " << Str(e, "version") << "\n";
    // Failures come with the end of the agent's log; show its last lines.
    if ((Str(e, "type") == "failure" || Str(e, "type") == "rollback") && e.contains("log_tail") &&
        e["log_tail"].is_string()) {
      const std::string tail = e["log_tail"].get<std::string>();
      std::vector<std::string> lines;
      std::size_t start = 0;
      while (start < tail.size()) {
        auto nl = tail.find('\n', start);
        if (nl == std::string::npos) nl = tail.size();
        lines.push_back(tail.substr(start, nl - start));
        start = nl + 1;
      }
      const std::size_t from = lines.size() > 10 ? lines.size() - 10 : 0;
      for (std::size_t i = from; i < lines.size(); ++i) out << "      | " << lines[i] << "\n";
    }
  }
}

struct ReenableArgs {
  ServerArgs server;
  std::string id, name, version;
  void Declare(CLI::App* sub) {
    sub->add_option("ID", id, "Appliance id (apl-...)")->required();
    sub->add_option("NAME", name, "Package name")->required();
    sub->add_option("VERSION", version, "Package version (MAJOR.MINOR.BUILD)")->required();
  }
  Status Check() const { return OkStatus(); }
};

struct BundleArgs {
  ServerArgs server;
  std::string id, download_key, output;
  std::vector<std::string> installed;
  void Declare(CLI::App* sub) {
    sub->add_option("APPLIANCE_ID", id, "Appliance id (apl-...)")->required();
    sub->add_option("--download-key", download_key, "The appliance's download key, or @FILE holding it");
    sub->add_option("--installed", installed, "NAME=VERSION of what the appliance has (repeat); default: its last known state");
    sub->add_option("-o,--output", output, "Where to write the bundle (FILE.upkb)")->required();
  }
  Status Check() const {
    if (!download_key.empty() && !installed.empty()) {
      return Error(Errc::kInvalidArgument, "give --download-key or --installed, not both");
    }
    for (const auto& i : installed) {
      auto eq = i.find('=');
      if (eq == std::string::npos || eq == 0 || eq + 1 == i.size()) {
        return Error(Errc::kInvalidArgument, "--installed " + i + ": expected NAME=VERSION");
      }
    }
    return OkStatus();
  }
};

// Builds the request body of POST /api/v1/appliances/ID/bundle.
Expected<Json> BundleBody(const BundleArgs& a) {
  Json body = Json::object();
  if (!a.download_key.empty()) {
    std::string key = a.download_key;
    if (key[0] == '@') {
      auto text = ReadFileBounded(key.substr(1), 64 * 1024);
      if (!text.ok()) return text.error().Wrap("--download-key");
      key = std::move(text).value();
    }
    body["download_key"] = key;
  }
  if (!a.installed.empty()) {
    Json installed = Json::object();
    for (const auto& i : a.installed) {
      auto eq = i.find('=');
      installed[i.substr(0, eq)] = i.substr(eq + 1);
    }
    body["installed"] = installed;
  }
  return body;
}

int RunBundle(const Context& c, const BundleArgs& a, const ApiClient& api) {
  auto body = BundleBody(a);
  if (!body.ok()) return c.Fail(body.error());
  auto made = api.Post("/api/v1/appliances/" + EncodeComponent(a.id) + "/bundle", *body);
  if (!made || !made->ok()) return FailRequest(c, made);
  const std::string url = Str(made->body, "url", "");
  if (url.rfind("/portal/bundles/", 0) != 0) {
    return c.Fail(Error(Errc::kIo, "the updater answered without a bundle URL"));
  }
  const std::filesystem::path out(a.output);
  std::filesystem::path part = out;
  part += ".part";
  std::uint64_t total = made->body.value("bytes", std::uint64_t{0});
  Progress progress(c, "downloading " + out.filename().string(), total);
  auto got = api.Download(url, part, [&](std::uint64_t n, std::uint64_t) { progress.Update(n); });
  std::error_code ec;
  if (!got || !got->ok()) {
    std::filesystem::remove(part, ec);
    return FailRequest(c, got);
  }
  progress.Finish();
  std::filesystem::rename(part, out, ec);
  if (ec) {
    std::filesystem::remove(part, ec);
    return c.Fail(Error(Errc::kIo, a.output + ": cannot rename the download into place"));
  }
  if (c.json) {
    Json j = made->body;
    j["file"] = a.output;
    c.PrintJson(j);
    return 0;
  }
  *c.out << "wrote " << a.output << " (" << Num(made->body, "bytes") << " bytes, bundle " << Str(made->body, "bundle_id")
         << ", valid until " << Str(made->body, "valid_until") << ")\n";
  for (const auto& u : made->body.value("updates", Json::array())) {
    *c.out << "  " << Str(u, "name") << " " << Str(u, "version") << "  " << Str(u, "reason") << "\n";
  }
  return 0;
}

void AddApplianceCommands(CLI::App& app, Context& ctx) {
  auto* group = app.add_subcommand("appliance", "Appliances known to the updater");
  group->require_subcommand(1);
  group->fallthrough();
  Command<ApplianceListArgs>(
      group, ctx, "list", "List appliances (by id)",
      "upk appliance list --customer ACME --channel stable --limit 50 --server URL --token-file T",
      [](const Context& c, const ApplianceListArgs& a, const ApiClient& api) {
        std::string query;
        auto add = [&](const char* k, const std::string& v) {
          if (!v.empty()) query += (query.empty() ? "?" : "&") + std::string(k) + "=" + EncodeComponent(v);
        };
        add("customer", a.customer);
        add("channel", a.channel);
        add("limit", a.limit > 0 ? std::to_string(a.limit) : "");
        add("after", a.after);
        return Show(c, api.Get("/api/v1/appliances" + query), [&](const Json& body) {
          std::vector<std::vector<std::string>> rows{
              {"APPLIANCE", "CUSTOMER", "CHANNEL", "STATUS", "INSTALLED", "LAST CHECK-IN"}};
          for (const auto& s : body.value("appliances", Json::array())) {
            rows.push_back({Str(s, "appliance_id"), Str(s, "customer"), Str(s, "channel"), Str(s, "status"),
                            Installed(s.value("installed", Json())), Str(s, "last_checkin")});
          }
          PrintTable(*c.out, rows);
        });
      });
  Command<ApplianceIdArgs>(
      group, ctx, "show", "Show an appliance: state, plan, recent events",
      "upk appliance show apl-kzdvvj2umnduyauf35o36k6kw462mujv --server URL --token-file T",
      [](const Context& c, const ApplianceIdArgs& a, const ApiClient& api) {
        return Show(c, api.Get("/api/v1/appliances/" + EncodeComponent(a.id)),
                    [&](const Json& body) { PrintAppliance(*c.out, body.value("appliance", Json::object())); });
      });
  Command<ApplianceSetArgs>(
      group, ctx, "set", "Change an appliance's channel, groups or major-line opt-ins",
      "upk appliance set apl-... --channel beta --group lab --group eu --allow-major base --server URL --token-file T",
      [](const Context& c, const ApplianceSetArgs& a, const ApiClient& api) {
        Json body = Json::object();
        if (!a.channel.empty()) body["channel"] = a.channel;
        if (!a.groups.empty() || a.clear_groups) body["groups"] = a.groups;
        if (!a.allow_major.empty() || a.clear_allow_major) body["allow_major"] = a.allow_major;
        return Show(c, api.Post("/api/v1/appliances/" + EncodeComponent(a.id), body),
                    [&](const Json&) { *c.out << "updated " << a.id << "\n"; });
      });
  Command<ApplianceIdArgs>(
      group, ctx, "downloads", "List the packages already put in a bundle for an appliance",
      "upk appliance downloads apl-... --server URL --token-file T",
      [](const Context& c, const ApplianceIdArgs& a, const ApiClient& api) {
        return Show(c, api.Get("/api/v1/appliances/" + EncodeComponent(a.id) + "/downloads"), [&](const Json& body) {
          std::vector<std::vector<std::string>> rows{{"NAME", "VERSION", "BUNDLE", "DOWNLOADED"}};
          for (const auto& d : body.value("downloads", Json::array())) {
            rows.push_back({Str(d, "name"), Str(d, "version"), Str(d, "bundle_id"), Str(d, "downloaded_at")});
          }
          PrintTable(*c.out, rows);
        });
      });
  Command<ReenableArgs>(
      group, ctx, "reenable-download", "Offer a package already downloaded for an appliance again on the portal",
      "upk appliance reenable-download apl-... site 5.1.0 --server URL --token-file T",
      [](const Context& c, const ReenableArgs& a, const ApiClient& api) {
        return Show(c,
                    api.Post("/api/v1/appliances/" + EncodeComponent(a.id) + "/downloads/reenable",
                             Json{{"name", a.name}, {"version", a.version}}),
                    [&](const Json&) { *c.out << "re-enabled " << a.name << " " << a.version << " for " << a.id << "\n"; });
      });
  Command<BundleArgs>(&app, ctx, "bundle", "Build the air-gap bundle (.upkb) for an appliance and download it",
                      "upk bundle apl-... --download-key @key.txt -o site.upkb --server URL --token-file T", RunBundle);
}

// --- audit, tokens ---

struct AuditArgs {
  ServerArgs server;
  int limit = 0;
  void Declare(CLI::App* sub) {
    sub->add_option("--limit", limit, "At most N entries, newest first")->check(CLI::Range(1, 100000));
  }
  Status Check() const { return OkStatus(); }
};

struct TokenCreateArgs {
  ServerArgs server;
  std::string name, role;
  int expires_days = 0;
  void Declare(CLI::App* sub) {
    sub->add_option("--name", name, "Who or what the token is for (shows in the audit log)")->required();
    sub->add_option("--role", role, "support, publisher or admin")
        ->required()
        ->check(CLI::IsMember({"support", "publisher", "admin"}));
    sub->add_option("--expires-days", expires_days, "Validity (default 90, at most 3650)")->check(CLI::Range(1, 3650));
  }
  Status Check() const { return OkStatus(); }
};

void AddAdminCommands(CLI::App& app, Context& ctx) {
  Command<AuditArgs>(
      &app, ctx, "audit", "Show the updater's audit log", "upk audit --limit 20 --server URL --token-file T",
      [](const Context& c, const AuditArgs& a, const ApiClient& api) {
        std::string target = "/api/v1/audit";
        if (a.limit > 0) target += "?limit=" + std::to_string(a.limit);
        return Show(c, api.Get(target), [&](const Json& body) {
          std::vector<std::vector<std::string>> rows{{"ID", "AT", "ACTOR", "ACTION", "TARGET"}};
          for (const auto& e : body.value("entries", Json::array())) {
            rows.push_back({Num(e, "id"), Str(e, "at"), Str(e, "actor"), Str(e, "action"), Str(e, "target")});
          }
          PrintTable(*c.out, rows);
        });
      });
  auto* token = app.add_subcommand("token", "Operator tokens (admin)");
  token->require_subcommand(1);
  token->fallthrough();
  Command<TokenCreateArgs>(token, ctx, "create", "Create an operator token; it is printed once, on stdout",
                           "upk token create --name ci-publisher --role publisher --expires-days 30 --server URL "
                           "--token-file admin.token \\\n"
                           "      > publisher.token",
                           [](const Context& c, const TokenCreateArgs& a, const ApiClient& api) {
                             Json body{{"name", a.name}, {"role", a.role}};
                             if (a.expires_days > 0) body["expires_days"] = a.expires_days;
                             auto r = api.Post("/api/v1/tokens", body);
                             if (!r || !r->ok()) return FailRequest(c, r);
                             if (c.json) {
                               c.PrintJson(r->body);
                               return 0;
                             }
                             // Only the token on stdout, so it can be redirected into a file; the rest on stderr.
                             *c.out << Str(r->body, "token", "") << "\n";
                             *c.err << "created token " << Num(r->body, "id", Str(r->body, "id")) << " '" << a.name
                                    << "' (" << a.role << "), expires " << Str(r->body, "expires_at")
                                    << "; it is not shown again\n";
                             return 0;
                           });
}

}  // namespace

void AddFleetCommands(CLI::App& app, Context& ctx) {
  AddChannelCommands(app, ctx);
  AddRolloutCommands(app, ctx);
  AddApplianceCommands(app, ctx);
  AddAdminCommands(app, ctx);
}

}  // namespace upkeep::upk
