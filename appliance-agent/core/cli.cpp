#include "upkeep/agent/cli.hpp"

#include <signal.h>
#include <sodium.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <functional>
#include <iomanip>
#include <sstream>
#include <ostream>
#include <thread>

#include "crash_points.hpp"
#include "tuf_fetcher.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/backup.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/timing.hpp"
#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/qr.hpp"
#include "upkeep/packages/source.hpp"
#include "upkeep/tuf/metadata.hpp"

namespace upkeep::agent {
namespace {

constexpr const char* kDefaultConfig = "/etc/upkeep-agent/agent.json";
constexpr std::uint64_t kMaxSmallFileBytes = 64 * 1024;

struct Ctx {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::string config_path;
  bool json = false;
  std::function<int()> run;
  const std::vector<DaemonServiceFactory>* services = nullptr;

  int Fail(const Error& e) const {
    *err << "appliance-agent: error: " << e.message() << "\n";
    return e.ExitCode();
  }
};

void OnRun(CLI::App* sub, Ctx& ctx, std::function<int()> body) {
  sub->callback([&ctx, body = std::move(body)] { ctx.run = body; });
}


std::string LoadConfigPath(const Ctx& ctx) {
  if (!ctx.config_path.empty()) return ctx.config_path;
  const char* env = std::getenv("UPKEEP_AGENT_CONFIG");
  return env && *env ? env : kDefaultConfig;
}

Expected<AgentConfig> LoadConfig(const Ctx& ctx) { return AgentConfig::Load(LoadConfigPath(ctx)); }

Expected<std::unique_ptr<AgentRuntime>> OpenRuntime(const Ctx& ctx, std::function<void(const std::string&)> log) {
  UPK_TRY_ASSIGN(AgentConfig config, LoadConfig(ctx));
  return OpenAgentRuntime(std::move(config), false, std::move(log));
}

// A read-only view of the store for status and history while the daemon may be working.
Expected<std::unique_ptr<Store>> OpenStoreReadOnly(const AgentConfig& config) {
  return Store::OpenReadOnly(RealFs::Instance(), config.StoreDir());
}

Expected<std::string> ReadSecretFile(const std::string& path, const std::string& what) {
  auto text = ReadFileBounded(path, kMaxSmallFileBytes);
  if (!text.ok()) return text.error().Wrap(what);
  std::string s = std::move(text).value();
  while (!s.empty() && (s.back() == '\n' || s.back() == '\r')) s.pop_back();
  if (s.empty()) return Error(Errc::kInvalidArgument, what + " " + path + " is empty");
  return s;
}

std::string Now() { return FormatTimestamp(SystemClock::Instance().Now()); }

// ---------------------------------------------------------------------------------------------
// init

struct InitArgs {
  std::string state_dir, system_root, updater, director_key, trust_root, ca_file;
  std::vector<std::string> backup_paths;
  bool force = false;
};

int RunInit(const Ctx& ctx, const InitArgs& a) {
  const std::filesystem::path config_path = ctx.config_path.empty() ? kDefaultConfig : ctx.config_path;
  std::error_code ec;
  if (std::filesystem::exists(config_path, ec) && !a.force) {
    return ctx.Fail(Error(Errc::kPolicy, config_path.string() + " exists already (use --force to rewrite it)"));
  }
  Json j = {{"state_dir", std::filesystem::absolute(a.state_dir).string()},
            {"system_root", std::filesystem::absolute(a.system_root).string()},
            {"updater_url", a.updater},
            {"director_key_file", std::filesystem::absolute(a.state_dir + "/director.pub").string()}};
  if (!a.ca_file.empty()) j["ca_file"] = std::filesystem::absolute(a.ca_file).string();
  if (!a.backup_paths.empty()) {
    Json paths = Json::array();
    for (const auto& p : a.backup_paths) paths.push_back(std::filesystem::absolute(p).string());
    j["backup"] = {{"paths", paths}};
  }
  auto config = AgentConfig::FromJson(j, std::filesystem::current_path());
  if (!config.ok()) return ctx.Fail(config.error());
  // The trust anchors: the director's key and the TUF root, both checked before they are kept.
  auto director = packages::LoadPublicKey(a.director_key);
  if (!director.ok()) return ctx.Fail(director.error().Wrap("--director-key"));
  auto root_text = ReadFileBounded(a.trust_root, 512000);
  if (!root_text.ok()) return ctx.Fail(root_text.error().Wrap("--trust-root"));
  auto root = tuf::Metadata<tuf::Root>::Parse(*root_text);
  if (!root.ok()) return ctx.Fail(root.error().Wrap("--trust-root " + a.trust_root));
  Fs& fs = RealFs::Instance();
  for (const auto& dir : {config->state_dir, config->TufDir(), config->DownloadDir(), config->BackupDir()}) {
    if (auto s = fs.CreateDirectories(dir, 0700); !s.ok()) return ctx.Fail(s.error());
  }
  if (auto s = fs.CreateDirectories(config->system_root, 0755); !s.ok()) return ctx.Fail(s.error());
  if (auto s = fs.WriteFileAtomic(config->director_key_file, director->ToJson().dump() + "\n"); !s.ok()) {
    return ctx.Fail(s.error());
  }
  if (auto s = fs.WriteFileAtomic(config->TufDir() / "root.json", *root_text); !s.ok()) return ctx.Fail(s.error());
  std::string id;
  if (std::filesystem::exists(config->identity_file, ec)) {
    auto existing = trust::ApplianceIdentity::Load(config->identity_file);
    if (!existing.ok()) return ctx.Fail(existing.error());
    id = existing->appliance_id();
  } else {
    auto identity = trust::ApplianceIdentity::Generate();
    if (auto s = identity.Save(config->identity_file); !s.ok()) return ctx.Fail(s.error());
    id = identity.appliance_id();
  }
  if (config_path.has_parent_path()) {
    if (auto s = fs.CreateDirectories(config_path.parent_path(), 0755); !s.ok()) return ctx.Fail(s.error());
  }
  if (auto s = fs.WriteFileAtomic(config_path, config->ToJson().dump(2) + "\n", 0600); !s.ok()) {
    return ctx.Fail(s.error());
  }
  auto store = Store::Open(fs, config->StoreDir());
  if (!store.ok()) return ctx.Fail(store.error());
  if (ctx.json) {
    *ctx.out << Json{{"appliance_id", id}, {"config", config_path.string()}}.dump() << "\n";
  } else {
    *ctx.out << id << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// status, history

Json PlanJson(const std::vector<PlannedStep>& plan) {
  Json a = Json::array();
  for (const auto& p : plan) {
    a.push_back({{"name", p.step.name}, {"version", p.step.version.ToString()},
                 {"kind", packages::KindName(p.step.kind)}, {"wait_hours", p.step.wait_hours},
                 {"state", p.state}, {"reason", p.reason}});
  }
  return a;
}

int RunStatus(const Ctx& ctx) {
  auto config = LoadConfig(ctx);
  if (!config.ok()) return ctx.Fail(config.error());
  auto identity = trust::ApplianceIdentity::Load(config->identity_file);
  if (!identity.ok()) return ctx.Fail(identity.error().Wrap("identity"));
  auto director = packages::LoadPublicKey(config->director_key_file);
  if (!director.ok()) return ctx.Fail(director.error().Wrap("director key"));
  auto store = OpenStoreReadOnly(*config);
  if (!store.ok()) return ctx.Fail(store.error());
  AgentDeps d;
  d.config = &*config;
  d.store = store->get();
  d.clock = &SystemClock::Instance();
  d.identity = &*identity;
  d.director_key = &*director;
  Agent agent(d);
  Json installed = agent.InstalledJson();
  auto plan = agent.Plan();
  Json status = {{"appliance_id", identity->appliance_id()},
                 {"agent_version", kAgentVersion},
                 {"updater_url", config->updater_url},
                 {"system_time", Now()},
                 {"installed", installed["packages"]},
                 {"last_check", (*store)->Get("last_check").value_or(Json(nullptr))},
                 {"operation", (*store)->Get("operation").value_or(Json(nullptr))},
                 {"pending_reports", agent.PendingReports()},
                 {"settings", agent.CurrentSettings().ToJson()}};
  if (auto a = (*store)->Get("assignment"); a && a->value("source", "") == "bundle") {
    status["assignment_source"] =
        "bundle " + a->value("bundle_id", "") + " (imported " + a->value("received_at", "") + ")";
  }
  status["plan"] = plan.ok() ? PlanJson(*plan) : Json::array();
  if (!plan.ok()) status["plan_error"] = plan.error().message();
  if (ctx.json) {
    *ctx.out << status.dump(2) << "\n";
    return 0;
  }
  auto& o = *ctx.out;
  o << "appliance      " << identity->appliance_id() << "\n"
    << "agent          " << kAgentVersion << "\n"
    << "updater        " << config->updater_url << "\n"
    << "system time    " << status["system_time"].get<std::string>() << "\n";
  o << "installed\n";
  if (installed["packages"].empty()) o << "  (nothing yet)\n";
  for (const auto& [name, p] : installed["packages"].items()) {
    o << "  " << std::left << std::setw(16) << name << std::setw(10) << p.value("version", "") << p.value("kind", "")
      << " (" << p.value("handler", "") << ")\n";
  }
  const Json& last = status["last_check"];
  if (last.is_null()) {
    o << "last check     never\n";
  } else if (last.value("ok", false)) {
    o << "last check     " << last.value("at", "") << " ok, clock offset " << last.value("clock_offset_seconds", 0)
      << " s\n";
  } else {
    o << "last check     " << last.value("at", "") << " FAILED: " << last.value("error", "") << "\n";
  }
  const std::string source = status.value("assignment_source", "");
  o << "plan" << (source.empty() ? "" : " (from " + source + ")") << "\n";
  if (!plan.ok()) o << "  (" << plan.error().message() << ")\n";
  if (plan.ok() && plan->empty()) o << "  up to date\n";
  if (plan.ok()) {
    int i = 0;
    for (const auto& p : *plan) {
      o << "  " << ++i << ". " << std::left << std::setw(16) << p.step.name << std::setw(10)
        << p.step.version.ToString() << std::setw(10) << p.state << p.reason << "\n";
    }
  }
  if (!status["operation"].is_null()) {
    const Json& op = status["operation"];
    o << "in progress    " << op["step"].value("name", "") << " " << op["step"].value("version", "") << " ("
      << op.value("phase", "") << ")\n";
  }
  o << "reports queued " << agent.PendingReports() << "\n";
  return 0;
}

int RunHistory(const Ctx& ctx, std::size_t count) {
  auto config = LoadConfig(ctx);
  if (!config.ok()) return ctx.Fail(config.error());
  auto store = OpenStoreReadOnly(*config);
  if (!store.ok()) return ctx.Fail(store.error());
  const std::uint64_t next = (*store)->NextSeq("journal");
  const std::uint64_t first = std::max((*store)->FirstSeq("journal"), next > count ? next - count : 1);
  auto records = (*store)->Read("journal", first, count);
  if (!records.ok()) return ctx.Fail(records.error());
  if (ctx.json) {
    Json a = Json::array();
    for (const auto& r : *records) a.push_back(r.value);
    *ctx.out << a.dump(2) << "\n";
    return 0;
  }
  for (const auto& r : *records) {
    const Json& v = r.value;
    std::string what = v.value("name", "");
    if (v.contains("version")) what += " " + v.value("version", "");
    *ctx.out << v.value("at", "") << "  " << std::left << std::setw(10) << v.value("type", "") << std::setw(22) << what;
    if (v.contains("phase")) *ctx.out << v.value("phase", "") << " ";
    if (v.contains("message")) *ctx.out << v.value("message", "");
    if (v.contains("steps")) *ctx.out << v["steps"].dump() << " step(s) to install";
    if (v.value("type", "") == "backup") *ctx.out << v.value("id", "") << " (" << v.value("reason", "") << ")";
    if (v.value("type", "") == "success" && !v.value("previous", "").empty()) {
      *ctx.out << "installed (was " << v.value("previous", "") << ")";
    }
    *ctx.out << "\n";
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// check, install, rollback, run

int PrintInstall(const Ctx& ctx, const InstallResult& r) {
  if (ctx.json) {
    static const char* names[] = {"nothing", "installed", "failed_rolled_back", "not_allowed_now"};
    Json j = {{"outcome", names[static_cast<int>(r.outcome)]}, {"name", r.name}, {"version", r.version},
              {"message", r.message}};
    if (r.outcome == InstallOutcome::kNotAllowedNow) j["not_before"] = FormatTimestamp(r.not_before);
    *ctx.out << j.dump() << "\n";
  } else {
    *ctx.out << r.message << "\n";
  }
  return r.outcome == InstallOutcome::kFailedRolledBack ? 1 : 0;
}

std::function<void(const std::string&)> LogTo(std::ostream& o) {
  return [&o](const std::string& line) { o << Now() << " " << line << std::endl; };
}

int RunCheck(const Ctx& ctx) {
  auto rt = OpenRuntime(ctx, LogTo(*ctx.err));
  if (!rt.ok()) return ctx.Fail(rt.error());
  if (auto s = (*rt)->agent->Recover(); !s.ok()) return ctx.Fail(s.error());
  auto r = (*rt)->agent->Check();
  if (!r.ok()) return ctx.Fail(r.error());
  auto plan = (*rt)->agent->Plan();
  if (ctx.json) {
    *ctx.out << Json{{"steps", r->steps}, {"plan", plan.ok() ? PlanJson(*plan) : Json::array()}}.dump() << "\n";
  } else {
    *ctx.out << (r->steps == 0 ? "up to date" : std::to_string(r->steps) + " update(s) to install") << "\n";
    if (plan.ok()) {
      int i = 0;
      for (const auto& p : *plan) {
        if (p.state == "installed") continue;
        *ctx.out << "  " << ++i << ". " << p.step.name << " " << p.step.version.ToString() << " (" << p.state << ")"
                 << (p.reason.empty() ? "" : ": " + p.reason) << "\n";
      }
    }
  }
  // A running daemon acts on the new assignment now rather than at its next check.
  if (auto pid = ReadFileBounded((*rt)->config.state_dir / "agent.pid", 32); pid.ok()) {
    const long p = std::strtol(pid->c_str(), nullptr, 10);
    if (p > 1 && p != ::getpid()) ::kill(static_cast<pid_t>(p), SIGUSR1);
  }
  return 0;
}

int RunInstall(const Ctx& ctx, bool force, bool retry, bool all) {
  auto rt = OpenRuntime(ctx, LogTo(*ctx.err));
  if (!rt.ok()) return ctx.Fail(rt.error());
  Agent& agent = *(*rt)->agent;
  if (auto s = agent.Recover(); !s.ok()) return ctx.Fail(s.error());
  if (retry) (void)(*rt)->store->Remove("failed");
  int rc = 0;
  for (int i = 0; i < 1000; ++i) {  // bounded: no plan is that long
    auto r = agent.InstallNext(force);
    if (!r.ok()) return ctx.Fail(r.error());
    rc = PrintInstall(ctx, *r);
    if (!all || r->outcome != InstallOutcome::kInstalled) break;
    // An imported bundle's assignment covers the whole walk, offline: no check-in between steps.
    if (agent.AssignmentFromBundle()) continue;
    // The next step is bound to the new state: ask the director again.
    if (auto c = agent.Check(); !c.ok()) return ctx.Fail(c.error());
  }
  if (auto f = agent.FlushOutbox(); !f.ok()) *ctx.err << "reports stay queued: " << f.error().message() << "\n";
  return rc;
}

int RunProvision(const Ctx& ctx, const std::vector<std::string>& packages) {
  auto rt = OpenRuntime(ctx, LogTo(*ctx.err));
  if (!rt.ok()) return ctx.Fail(rt.error());
  for (const auto& p : packages) {
    auto r = (*rt)->agent->Provision(p);
    if (!r.ok()) return ctx.Fail(r.error());
    *ctx.out << "provisioned " << *r << "\n";
  }
  return 0;
}

int RunEnrol(const Ctx& ctx, const std::string& licence_file) {
  auto rt = OpenRuntime(ctx, {});
  if (!rt.ok()) return ctx.Fail(rt.error());
  auto key = ReadSecretFile(licence_file, "--licence-key-file");
  if (!key.ok()) return ctx.Fail(key.error());
  auto body = trust::EnrolmentRequestBody(*(*rt)->identity, *key, SystemClock::Instance().Now());
  if (!body.ok()) return ctx.Fail(body.error());
  HttpRequest req;
  req.method = "POST";
  req.url = (*rt)->config.updater_url + "/api/v1/enrol";
  req.headers = {{"Content-Type", "application/json"}};
  req.body = *body;
  auto reply = (*rt)->http->Send(req);
  if (!reply.ok()) return ctx.Fail(reply.error().Wrap("enrolment"));
  if (reply->status != 200) return ctx.Fail(ErrorFromResponse(*reply, "enrolment"));
  auto answer = ParseJson(reply->body);
  if (!answer.ok() || !answer->is_object() || !answer->contains("licence")) {
    return ctx.Fail(Error(Errc::kParse, "enrolment: the answer holds no licence"));
  }
  if (auto s = (*rt)->store->Put("licence", (*answer)["licence"]); !s.ok()) return ctx.Fail(s.error());
  if (ctx.json) {
    *ctx.out << answer->dump() << "\n";
  } else {
    *ctx.out << (*rt)->identity->appliance_id() << " enrolled (" << answer->value("enrolled", "") << ")\n";
  }
  return 0;
}

int RunRollback(const Ctx& ctx, const std::string& name) {
  auto rt = OpenRuntime(ctx, LogTo(*ctx.err));
  if (!rt.ok()) return ctx.Fail(rt.error());
  if (auto s = (*rt)->agent->RollbackPackage(name); !s.ok()) return ctx.Fail(s.error());
  *ctx.out << name << " rolled back to " << (*rt)->agent->InstalledJson()["packages"][name].value("version", "")
           << "\n";
  (void)(*rt)->agent->FlushOutbox();
  return 0;
}

}  // namespace

CycleInstallDecision DecideCycleInstall(bool auto_install, const Json* approval, const std::vector<PlannedStep>* plan) {
  CycleInstallDecision d;
  d.install = auto_install;
  if (approval == nullptr || plan == nullptr) return d;
  const auto field = [approval](const char* key) {
    auto it = approval->is_object() ? approval->find(key) : approval->end();
    return approval->is_object() && it != approval->end() && it->is_string() ? it->get<std::string>() : std::string();
  };
  const std::string name = field("name"), version = field("version");
  const std::string label = name + " " + version;
  if (name.empty() || version.empty()) {
    d.drop_approval = true;
    d.why = "the approval document is malformed";
    return d;
  }
  for (const auto& p : *plan) {
    if (p.state == "failed") {
      d.drop_approval = true;
      d.why = p.step.name + " " + p.step.version.ToString() + " failed; the approval of " + label + " is void";
      return d;
    }
    if (p.step.name != name || p.step.version.ToString() != version) continue;
    if (p.state == "installed") {
      d.drop_approval = true;
      d.why = label + " is installed";
      return d;
    }
    d.install = true;  // InstallNext takes the first step not installed: at or before the approved one
    return d;
  }
  d.drop_approval = true;
  d.why = "the assignment no longer names " + label;
  return d;
}

namespace {

// One unit of daemon work: recover, check when due, install what may be installed now.
// Returns when the daemon should wake up next.
SysTime DaemonCycle(const Ctx& ctx, PollSchedule& schedule, SysTime next_check, bool check_now, std::string* stop,
                    const std::vector<std::unique_ptr<DaemonService>>& services) {
  const SysTime now = SystemClock::Instance().Now();
  auto rt = OpenRuntime(ctx, [&ctx, &services](const std::string& line) {
    *ctx.out << Now() << " " << line << std::endl;
    for (const auto& service : services) service->OnLog(line);
  });
  if (!rt.ok()) {
    *ctx.err << Now() << " " << rt.error().message() << " (retrying in 30 s)\n";
    return now + std::chrono::seconds(30);
  }
  Agent& agent = *(*rt)->agent;
  if (auto s = agent.Recover(); !s.ok()) *ctx.err << Now() << " recovery: " << s.error().message() << "\n";
  for (const auto& service : services) service->BeforeCycle(**rt);
  SysTime wake = next_check;
  auto checked = [&]() -> bool {
    auto r = agent.Check();
    PollOutcome outcome;
    outcome.ok = r.ok();
    if (r.ok()) {
      outcome.next_checkin = r->next_checkin;
      *ctx.out << Now() << " check: " << r->steps << " update(s) to install" << std::endl;
    } else {
      outcome.retry_after = RetryAfter(r.error());
      *ctx.err << Now() << " check failed: " << r.error().message() << std::endl;
    }
    wake = schedule.NextCheck(outcome);
    return r.ok();
  };
  bool ok = true;
  if (check_now || now >= next_check) ok = checked();
  // An air-gapped appliance installs what an imported bundle assigned even when it cannot check in.
  ok = ok || agent.AssignmentFromBundle();
  const Settings settings = agent.CurrentSettings();
  for (int i = 0; ok && i < 1000 && stop->empty(); ++i) {
    // An admin's approval from the page installs up to its step in a window even without auto_install.
    const std::optional<Json> approval = (*rt)->store->Get(kInstallApprovalDoc);
    std::optional<std::vector<PlannedStep>> plan;
    if (approval) {
      if (auto p = agent.Plan(); p.ok()) plan = std::move(*p);
    }
    const CycleInstallDecision decision =
        DecideCycleInstall(settings.auto_install, approval ? &*approval : nullptr, plan ? &*plan : nullptr);
    if (decision.drop_approval) {
      (void)(*rt)->store->Remove(kInstallApprovalDoc);
      *ctx.out << Now() << " install approval ended: " << decision.why << std::endl;
    }
    if (!decision.install) break;
    auto r = agent.InstallNext(false);
    if (!r.ok()) {
      *ctx.err << Now() << " install: " << r.error().message() << std::endl;
      wake = std::min(wake, SystemClock::Instance().Now() + std::chrono::seconds(300));
      break;
    }
    if (r->outcome == InstallOutcome::kNothing) break;
    *ctx.out << Now() << " " << r->message << std::endl;
    if (r->outcome == InstallOutcome::kNotAllowedNow) {
      wake = std::min(wake, r->not_before);
      break;
    }
    if (!agent.AssignmentFromBundle()) ok = checked();  // the next step is bound to the new state
  }
  if (agent.PendingReports() > 0) {
    if (auto f = agent.FlushOutbox(); !f.ok()) {
      wake = std::min(wake, SystemClock::Instance().Now() + std::chrono::seconds(60));
    }
  }
  for (const auto& service : services) service->AfterCycle(agent);
  return wake;
}

// SIGHUP (sent by `settings KEY VALUE`): the services re-read settings and installed state now,
// from a read-only view so the next cycle's store lock is not in the way.
void ReloadServices(const AgentConfig& config, const std::vector<std::unique_ptr<DaemonService>>& services,
                    const Ctx& ctx) {
  if (services.empty()) return;
  auto rt = OpenAgentRuntime(config, true);
  if (!rt.ok()) {
    *ctx.err << Now() << " reload: " << rt.error().message() << std::endl;
    return;
  }
  for (const auto& service : services) service->AfterCycle(*(*rt)->agent);
}

// Tells a running daemon (its pid file) to reload; false when none runs.
bool NotifyDaemon(const AgentConfig& config) {
  auto text = ReadFileBounded(config.state_dir / "agent.pid", 64);
  if (!text.ok()) return false;
  const long pid = std::strtol(text->c_str(), nullptr, 10);
  return pid > 1 && ::kill(static_cast<pid_t>(pid), SIGHUP) == 0;
}

int RunDaemon(const Ctx& ctx, bool once) {
  auto config = LoadConfig(ctx);
  if (!config.ok()) return ctx.Fail(config.error());
  sigset_t set;
  sigemptyset(&set);
  sigaddset(&set, SIGTERM);
  sigaddset(&set, SIGINT);
  sigaddset(&set, SIGUSR1);
  sigaddset(&set, SIGHUP);
  sigaddset(&set, SIGUSR2);
  pthread_sigmask(SIG_BLOCK, &set, nullptr);
  const auto pid_file = config->state_dir / "agent.pid";
  std::error_code ec_ignored;
  if (auto s = WriteFileAtomic(pid_file, std::to_string(::getpid()) + "\n"); !s.ok()) return ctx.Fail(s.error());
  Settings settings;
  {
    auto rt = OpenRuntime(ctx, {});
    if (!rt.ok()) return ctx.Fail(rt.error());
    settings = (*rt)->agent->CurrentSettings();
  }
  PollOptions popt;
  popt.interval = settings.poll_interval;
  popt.jitter = settings.poll_jitter;
  popt.backoff_cap = settings.backoff_cap;
  auto schedule = PollSchedule::Create(popt, SystemClock::Instance(), SystemRandom::Instance());
  if (!schedule.ok()) return ctx.Fail(schedule.error());
  std::vector<std::unique_ptr<DaemonService>> services;
  for (const auto& factory : ctx.services ? *ctx.services : std::vector<DaemonServiceFactory>{}) {
    auto service = factory(*config, [out = ctx.out](const std::string& line) { *out << Now() << " " << line << std::endl; });
    if (!service.ok()) {
      std::filesystem::remove(pid_file, ec_ignored);
      return ctx.Fail(service.error());
    }
    if (*service) services.push_back(std::move(*service));
  }
  *ctx.out << Now() << " appliance-agent " << kAgentVersion << " started (pid " << ::getpid() << ")" << std::endl;
  std::string stop;
  SysTime next_check = SystemClock::Instance().Now();
  bool check_now = true;
  for (;;) {
    const SysTime wake = DaemonCycle(ctx, *schedule, next_check, check_now, &stop, services);
    check_now = false;
    next_check = wake;
    if (once) break;
    const auto wait = std::max<std::int64_t>(1, (wake - SystemClock::Instance().Now()).count());
    timespec ts{static_cast<time_t>(std::min<std::int64_t>(wait, 3600)), 0};
    const int sig = sigtimedwait(&set, nullptr, &ts);
    if (sig == SIGTERM || sig == SIGINT) break;
    if (sig == SIGUSR1) check_now = true;  // SIGUSR2 (queued work): a cycle without a check
    if (sig == SIGHUP) ReloadServices(*config, services, ctx);
  }
  services.clear();  // stops them before the pid file goes
  std::filesystem::remove(pid_file, ec_ignored);
  *ctx.out << Now() << " appliance-agent stopped" << std::endl;
  return 0;
}

// ---------------------------------------------------------------------------------------------
// download-key, import, report (air-gapped updates)

int RunDownloadKey(const Ctx& ctx, int valid_hours, bool no_qr) {
  auto rt = OpenRuntime(ctx, {});
  if (!rt.ok()) return ctx.Fail(rt.error());
  auto key = (*rt)->agent->MakeDownloadKey(std::chrono::hours(valid_hours));
  if (!key.ok()) return ctx.Fail(key.error());
  if (ctx.json) {
    *ctx.out << Json{{"download_key", key->text}, {"appliance_id", key->appliance_id},
                     {"issued", FormatTimestamp(key->issued)}, {"expires", FormatTimestamp(key->expires)},
                     {"nonce", key->nonce_hex}}.dump(2) << "\n";
    return 0;
  }
  *ctx.out << "Download key for appliance " << key->appliance_id << " (valid until " << FormatTimestamp(key->expires)
           << "):\n\n" << key->text << "\n\n";
  if (!no_qr) {
    std::string compact;  // QR alphanumeric mode has no line breaks; the decoder ignores them anyway
    for (char c : key->text) {
      if (c != '\n' && c != '\r' && c != ' ') compact += c;
    }
    auto qr = EncodeQr(compact);
    if (qr.ok()) {
      *ctx.out << QrToTerminal(*qr) << "\n";
    } else {
      *ctx.out << "(no QR code: " << qr.error().message() << ")\n";
    }
  }
  *ctx.out << "Paste it (or scan it) into the download portal, and import the bundle it gives with\n"
           << "`appliance-agent import FILE.upkb` before " << FormatTimestamp(key->expires) << ".\n";
  return 0;
}

// Writes the signed report to `wanted`, or into STATE/reports/ when that directory is not writable
// (a write-protected USB stick). Returns where it went.
Expected<std::filesystem::path> WriteReport(const AgentConfig& config, const std::filesystem::path& wanted,
                                            const std::string& text, bool* moved) {
  *moved = false;
  const auto dir = wanted.has_parent_path() ? wanted.parent_path() : std::filesystem::path(".");
  if (::access(dir.c_str(), W_OK) == 0) {
    if (auto s = WriteFileAtomic(wanted, text + "\n", 0644); s.ok()) return wanted;
  }
  const auto fallback_dir = config.state_dir / "reports";
  UPK_TRY(RealFs::Instance().CreateDirectories(fallback_dir, 0700));
  const auto fallback = fallback_dir / wanted.filename();
  UPK_TRY(WriteFileAtomic(fallback, text + "\n", 0644));
  *moved = true;
  return fallback;
}

struct ImportArgs {
  std::string file, report;
  bool no_install = false, force = false, retry = false;
};

int RunImport(const Ctx& ctx, const ImportArgs& a) {
  auto rt = OpenRuntime(ctx, LogTo(*ctx.err));
  if (!rt.ok()) return ctx.Fail(rt.error());
  Agent& agent = *(*rt)->agent;
  if (auto s = agent.Recover(); !s.ok()) return ctx.Fail(s.error());
  auto source = packages::OpenFileSource(a.file);
  if (!source.ok()) return ctx.Fail(source.error().Wrap("bundle"));
  ImportOptions o;
  o.install = !a.no_install;
  o.force = a.force;
  o.retry = a.retry;
  int last_pct = -1;
  o.progress = [&](std::uint64_t done, std::uint64_t total) {
    const int pct = total ? static_cast<int>(std::min<std::uint64_t>(done, total) * 100 / total) : 100;
    if (pct / 10 != last_pct / 10 && !ctx.json) *ctx.err << "reading bundle: " << pct << "%" << std::endl;
    last_pct = pct;
  };
  auto r = agent.ImportBundle(**source, o);
  if (!r.ok()) return ctx.Fail(r.error());
  int rc = 0;
  Json installs = Json::array();
  if (!ctx.json) {
    *ctx.out << "bundle " << r->bundle_id << " verified and kept (" << r->steps.size() << " step(s))\n";
    if (r->up_to_date) *ctx.out << "up to date: the bundle names nothing newer than what is installed\n";
    if (a.no_install && !r->up_to_date) *ctx.out << "not installed yet: run `appliance-agent install --all`\n";
  }
  for (const auto& i : r->installs) {
    if (ctx.json) {
      installs.push_back({{"name", i.name}, {"version", i.version}, {"message", i.message}});
    } else {
      *ctx.out << i.message << "\n";
    }
    if (i.outcome == InstallOutcome::kFailedRolledBack) rc = 1;
  }
  if (r->install_error) {
    *ctx.err << "appliance-agent: error: install: " << r->install_error->message() << "\n";
    rc = r->install_error->ExitCode();
  }
  // The signed report goes next to the bundle, for the portal.
  auto report = agent.LastImportReport();
  if (!report.ok()) return ctx.Fail(report.error());
  const std::filesystem::path wanted =
      a.report.empty() ? std::filesystem::path(a.file + ".report.json") : std::filesystem::path(a.report);
  bool moved = false;
  auto written = WriteReport((*rt)->config, wanted, *report, &moved);
  if (!written.ok()) return ctx.Fail(written.error().Wrap("installation report"));
  if (auto last = (*rt)->store->Get("last_import")) {
    (*last)["report_path"] = written->string();
    (void)(*rt)->store->Put("last_import", *last);
  }
  if (ctx.json) {
    *ctx.out << Json{{"bundle_id", r->bundle_id}, {"up_to_date", r->up_to_date}, {"installs", installs},
                     {"report", written->string()}}.dump(2) << "\n";
  } else if (moved) {
    *ctx.out << "installation report written to " << written->string() << " (" << wanted.parent_path().string()
             << " is not writable): upload it to the portal\n";
  } else {
    *ctx.out << "installation report written to " << written->string() << ": upload it to the portal\n";
  }
  return rc;
}

int RunReport(const Ctx& ctx, const std::string& path) {
  auto rt = OpenRuntime(ctx, {});
  if (!rt.ok()) return ctx.Fail(rt.error());
  auto report = (*rt)->agent->LastImportReport();
  if (!report.ok()) return ctx.Fail(report.error());
  std::filesystem::path wanted = path;
  if (wanted.empty()) {
    const Json last = (*rt)->store->Get("last_import").value_or(Json::object());
    const std::string kept = last.value("report_path", "");
    wanted = kept.empty() ? (*rt)->config.state_dir / "reports" / (last.value("bundle_id", "last") + ".report.json")
                          : std::filesystem::path(kept);
  }
  bool moved = false;
  auto written = WriteReport((*rt)->config, wanted, *report, &moved);
  if (!written.ok()) return ctx.Fail(written.error().Wrap("installation report"));
  *ctx.out << "installation report written to " << written->string()
           << (moved ? " (" + wanted.parent_path().string() + " is not writable)" : std::string()) << "\n";
  return 0;
}

// ---------------------------------------------------------------------------------------------
// backup, settings

std::string HumanBytes(std::uint64_t b) {
  std::ostringstream s;
  if (b >= (1u << 20)) {
    s << std::fixed << std::setprecision(1) << static_cast<double>(b) / (1 << 20) << " MiB";
  } else {
    s << b << " B";
  }
  return s.str();
}

struct BackupArgs {
  std::string password_file, root, id, out;
  bool tls = false, licence = false, vault = false;
};

int RunBackup(const Ctx& ctx, const std::string& action, const BackupArgs& a) {
  auto config = LoadConfig(ctx);
  if (!config.ok()) return ctx.Fail(config.error());
  std::string password;
  struct Wipe {
    std::string& s;
    ~Wipe() { sodium_memzero(s.data(), s.size()); }
  } wipe{password};
  std::optional<std::string_view> pw;
  if (!a.password_file.empty()) {
    auto p = ReadSecretFile(a.password_file, "--password-file");
    if (!p.ok()) return ctx.Fail(p.error());
    password = std::move(p).value();
    pw = password;
  }
  if (action == "export-vault-key") {
    if (!pw) return ctx.Fail(Error(Errc::kPolicy, "the vault key is exported only with a password (--password-file)"));
    if (config->backup.vault_key_path.empty()) return ctx.Fail(Error(Errc::kNotFound, "no vault key is configured"));
    auto s = ExportVaultKey(config->backup.vault_key_path, a.out, *pw, trust::KdfParams::Moderate(),
                            SystemRandom::Instance());
    if (!s.ok()) return ctx.Fail(s.error());
    *ctx.out << "vault key exported to " << a.out << " (password-protected)\n";
    return 0;
  }
  Settings settings;
  Json installed = Json::object();
  if (auto store = OpenStoreReadOnly(*config); store.ok()) {
    if (auto s = (*store)->Get("settings")) {
      if (auto parsed = Settings::FromJson(*s); parsed.ok()) settings = *parsed;
    }
    if (auto i = (*store)->Get("installed"); i && i->contains("packages")) installed = (*i)["packages"];
  }
  BackupStore backups(config->BackupDir(), settings.backups_keep, SystemClock::Instance(), SystemRandom::Instance());
  if (action == "create") {
    BackupOptions o;
    o.include_tls_keys = a.tls;
    o.include_licence = a.licence;
    o.include_vault_key = a.vault;
    o.password = pw;
    o.reason = "manual";
    auto info = backups.Create(config->backup, o, installed);
    if (!info.ok()) return ctx.Fail(info.error());
    if (ctx.json) {
      *ctx.out << Json{{"id", info->id}, {"path", info->path.string()}, {"bytes", info->bytes}}.dump() << "\n";
    } else {
      *ctx.out << "backup " << info->id << " (" << HumanBytes(info->bytes) << (info->encrypted ? ", encrypted" : "")
               << ")\n";
      for (const auto& x : info->excluded) *ctx.out << "  left out " << x.path.string() << ": " << x.reason << "\n";
    }
    return 0;
  }
  if (action == "list") {
    auto list = backups.List();
    if (!list.ok()) return ctx.Fail(list.error());
    Json a2 = Json::array();
    for (const auto& b : *list) {
      Json j = {{"id", b.id}, {"created", FormatTimestamp(b.created)}, {"reason", b.reason}, {"bytes", b.bytes},
                {"encrypted", b.encrypted}};
      if (b.error) j["error"] = b.error->message();
      a2.push_back(j);
      if (!ctx.json) {
        *ctx.out << std::left << std::setw(26) << b.id << std::setw(12) << HumanBytes(b.bytes)
                 << (b.encrypted ? "encrypted  " : "plain      ") << (b.error ? "DAMAGED: " + b.error->message() : b.reason)
                 << "\n";
      }
    }
    if (ctx.json) *ctx.out << a2.dump(2) << "\n";
    if (!ctx.json && list->empty()) *ctx.out << "no backups yet\n";
    return 0;
  }
  // restore
  RestoreOptions ro;
  ro.root = a.root;
  auto report = backups.Restore(a.id, pw, ro);
  if (!report.ok()) return ctx.Fail(report.error());
  *ctx.out << "restored " << report->restored.size() << " file(s) from " << report->id << "\n";
  for (const auto& x : report->not_in_backup) {
    *ctx.out << "  not in the backup: " << x.path.string() << " (" << x.reason << ")\n";
  }
  return 0;
}

int RunSettings(const Ctx& ctx, const std::string& key, const std::optional<std::string>& value) {
  if (!value) {
    auto config = LoadConfig(ctx);
    if (!config.ok()) return ctx.Fail(config.error());
    Settings s;
    if (auto store = OpenStoreReadOnly(*config); store.ok()) {
      if (auto j = (*store)->Get("settings")) {
        auto parsed = Settings::FromJson(*j);
        if (!parsed.ok()) return ctx.Fail(parsed.error());
        s = *parsed;
      }
    }
    const Json j = s.ToJson();
    if (!key.empty()) {
      if (!j.contains(key)) return ctx.Fail(Error(Errc::kInvalidArgument, "unknown setting '" + key + "'"));
      *ctx.out << j[key].dump() << "\n";
      return 0;
    }
    if (ctx.json) {
      *ctx.out << j.dump(2) << "\n";
    } else {
      for (const auto& [k, v] : j.items()) *ctx.out << std::left << std::setw(24) << k << v.dump() << "\n";
    }
    return 0;
  }
  auto rt = OpenRuntime(ctx, {});
  if (!rt.ok()) return ctx.Fail(rt.error());
  Settings s = (*rt)->agent->CurrentSettings();
  if (auto r = s.Set(key, *value); !r.ok()) return ctx.Fail(r.error());
  if (auto r = (*rt)->store->Put("settings", s.ToJson()); !r.ok()) return ctx.Fail(r.error());
  *ctx.out << key << " = " << s.ToJson()[key].dump() << "\n";
  const AgentConfig config = (*rt)->config;
  rt->reset();  // the store lock, before the daemon reads the new value
  if (NotifyDaemon(config)) *ctx.out << "the running agent daemon applies it now\n";
  return 0;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err, const ExtraCommands& extra,
         const std::vector<DaemonServiceFactory>& services) {
  CLI::App app{"appliance-agent: keeps this appliance up to date, safely (docs/agent.md)", "appliance-agent"};
  app.set_version_flag("--version", kAgentVersion);
  app.require_subcommand(1);
  app.fallthrough();  // --json and --config also after the command
  Ctx ctx;
  ctx.out = &out;
  ctx.err = &err;
  ctx.services = &services;
  app.add_option("--config", ctx.config_path, "Agent configuration file (default $UPKEEP_AGENT_CONFIG or " +
                                                  std::string(kDefaultConfig) + ")");
  app.add_flag("--json", ctx.json, "Machine-readable output");

  auto* init = app.add_subcommand("init", "Provision: identity, trust anchors, configuration");
  auto ia = std::make_shared<InitArgs>();
  init->add_option("--state-dir", ia->state_dir, "Where the agent keeps its state")->required();
  init->add_option("--system-root", ia->system_root, "The package area installs go to")->required();
  init->add_option("--updater", ia->updater, "Updater base URL")->required();
  init->add_option("--director-key", ia->director_key, "The director's public key (JSON)")->required();
  init->add_option("--trust-root", ia->trust_root, "The TUF root.json to trust first")->required();
  init->add_option("--ca-file", ia->ca_file, "PEM CA for an https updater with a private CA");
  init->add_option("--backup-path", ia->backup_paths, "Configuration to back up before installs (repeatable)");
  init->add_flag("--force", ia->force, "Rewrite an existing configuration (the identity is kept)");
  OnRun(init, ctx, [&ctx, ia] { return RunInit(ctx, *ia); });

  auto* provision = app.add_subcommand("provision", "Install the factory versions from signed .upk files (offline)");
  auto pkgs = std::make_shared<std::vector<std::string>>();
  provision->add_option("PKG", *pkgs, "Signed .upk packages, in install order")->required();
  OnRun(provision, ctx, [&ctx, pkgs] { return RunProvision(ctx, *pkgs); });

  auto* enrol = app.add_subcommand("enrol", "Bind this appliance to a licence (once, online)");
  auto lfile = std::make_shared<std::string>();
  enrol->add_option("--licence-key-file", *lfile, "File holding the licence key")->required();
  OnRun(enrol, ctx, [&ctx, lfile] { return RunEnrol(ctx, *lfile); });

  auto* run = app.add_subcommand("run", "The daemon: check on a schedule, install, report");
  auto once = std::make_shared<bool>(false);
  run->add_flag("--once", *once, "One cycle (recover, check, install what is allowed now), then exit");
  OnRun(run, ctx, [&ctx, once] { return RunDaemon(ctx, *once); });

  OnRun(app.add_subcommand("status", "Installed versions, last check, the plan"), ctx, [&ctx] { return RunStatus(ctx); });
  OnRun(app.add_subcommand("check", "Check in now and show what is to install"), ctx, [&ctx] { return RunCheck(ctx); });

  auto* install = app.add_subcommand("install", "Install the next update of the plan now");
  auto flags = std::make_shared<std::array<bool, 3>>();
  install->add_flag("--force", (*flags)[0], "Ignore maintenance windows and settle times");
  install->add_flag("--retry", (*flags)[1], "Try releases again whose install failed before");
  install->add_flag("--all", (*flags)[2], "Go on through the whole plan");
  OnRun(install, ctx, [&ctx, flags] { return RunInstall(ctx, (*flags)[0], (*flags)[1], (*flags)[2]); });

  auto* history = app.add_subcommand("history", "The install journal, newest last");
  auto count = std::make_shared<std::size_t>(50);
  history->add_option("-n,--count", *count, "How many records")->check(CLI::Range(1, 100000));
  OnRun(history, ctx, [&ctx, count] { return RunHistory(ctx, *count); });

  auto* rollback = app.add_subcommand("rollback", "Go back to the version a package had before its last install");
  auto rname = std::make_shared<std::string>();
  rollback->add_option("NAME", *rname, "Package name")->required();
  OnRun(rollback, ctx, [&ctx, rname] { return RunRollback(ctx, *rname); });

  auto* dkey = app.add_subcommand("download-key", "Make a download key for the air-gapped download portal");
  auto dk_hours = std::make_shared<int>(72);
  auto dk_noqr = std::make_shared<bool>(false);
  dkey->add_option("--valid-hours", *dk_hours, "How long the key (and its bundle) may be used (default 72)")
      ->check(CLI::Range(1, 90 * 24));
  dkey->add_flag("--no-qr", *dk_noqr, "Do not print the QR code");
  OnRun(dkey, ctx, [&ctx, dk_hours, dk_noqr] { return RunDownloadKey(ctx, *dk_hours, *dk_noqr); });

  auto* import = app.add_subcommand("import", "Verify and install an update bundle (.upkb) from the download portal");
  auto ima = std::make_shared<ImportArgs>();
  import->add_option("FILE", ima->file, "The .upkb bundle")->required();
  import->add_flag("--no-install", ima->no_install, "Verify and keep it only; `install --all` installs later");
  import->add_flag("--force", ima->force, "Ignore maintenance windows and settle times");
  import->add_flag("--retry", ima->retry, "Try releases again whose install failed before");
  import->add_option("--report", ima->report, "Where to write the signed installation report (default FILE.report.json)");
  OnRun(import, ctx, [&ctx, ima] { return RunImport(ctx, *ima); });

  auto* rep = app.add_subcommand("report", "Write the installation report of the last import again");
  auto rep_path = std::make_shared<std::string>();
  rep->add_option("PATH", *rep_path, "File to write (default: where the import wrote it)");
  OnRun(rep, ctx, [&ctx, rep_path] { return RunReport(ctx, *rep_path); });

  auto* backup = app.add_subcommand("backup", "Configuration backups");
  backup->require_subcommand(1);
  auto ba = std::make_shared<BackupArgs>();
  auto* bcreate = backup->add_subcommand("create", "Back up the configuration now");
  bcreate->add_option("--password-file", ba->password_file, "Encrypt with the password in this file");
  bcreate->add_flag("--include-tls-keys", ba->tls, "Also TLS private keys");
  bcreate->add_flag("--include-licence", ba->licence, "Also the licence");
  bcreate->add_flag("--include-vault-key", ba->vault, "Also the vault key (needs a password)");
  OnRun(bcreate, ctx, [&ctx, ba] { return RunBackup(ctx, "create", *ba); });
  OnRun(backup->add_subcommand("list", "Backups, newest first"), ctx, [&ctx, ba] { return RunBackup(ctx, "list", *ba); });
  auto* brestore = backup->add_subcommand("restore", "Restore a backup (verified whole first)");
  brestore->add_option("ID", ba->id, "Backup id (backup list)")->required();
  brestore->add_option("--password-file", ba->password_file, "The backup's password");
  brestore->add_option("--root", ba->root, "Restore under this directory instead of in place");
  OnRun(brestore, ctx, [&ctx, ba] { return RunBackup(ctx, "restore", *ba); });
  auto* bvault = backup->add_subcommand("export-vault-key", "Export the vault key, password-protected");
  bvault->add_option("OUT", ba->out, "File to write")->required();
  bvault->add_option("--password-file", ba->password_file, "Password to protect it with")->required();
  OnRun(bvault, ctx, [&ctx, ba] { return RunBackup(ctx, "export-vault-key", *ba); });

  auto* settings = app.add_subcommand("settings", "Show settings, or set one: settings KEY VALUE");
  auto skey = std::make_shared<std::string>();
  auto sval = std::make_shared<std::optional<std::string>>();
  settings->add_option("KEY", *skey, "Setting name");
  settings->add_option("VALUE", *sval, "New value");
  OnRun(settings, ctx, [&ctx, skey, sval] { return RunSettings(ctx, *skey, *sval); });

  auto* points = app.add_subcommand("crash-points", "List the fault-injection points (tests)");
  points->group("");  // hidden: for the crash-safety tests
  OnRun(points, ctx, [&ctx] {
    for (const auto& p : CrashPointNames()) *ctx.out << p << "\n";
    return 0;
  });

  // Commands from libraries above this one (cluster/): they parse their own arguments.
  for (const auto& [name, command] : extra) {
    auto* sub = app.add_subcommand(name, command.description);
    sub->prefix_command();
    sub->set_help_flag();  // its --help and options are its own
    sub->fallthrough(false);
    OnRun(sub, ctx, [&ctx, sub, run = command.run] {
      std::vector<std::string> args = sub->remaining();
      if (ctx.json) args.push_back("--json");  // given before the command name
      return run(LoadConfigPath(ctx), args, *ctx.out, *ctx.err);
    });
  }

  if (auto rc = ParseCommandLine(app, argc, argv, out, err)) return *rc;
  return ctx.run ? ctx.run() : 2;
}

}  // namespace upkeep::agent
