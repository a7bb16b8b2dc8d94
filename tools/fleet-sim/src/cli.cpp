#include "upkeep/fleet_sim/cli.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/fleet_sim/fleet.hpp"
#include "upkeep/fleet_sim/http_client.hpp"
#include "upkeep/fleet_sim/load.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::fleet_sim {
namespace {

constexpr std::uint64_t kMaxLicenceFileBytes = 4096;
constexpr std::uint64_t kMaxAnswerPrintBytes = 64 * 1024;

struct Ctx {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool json = false;
  std::function<int()> run;

  int Fail(const Error& e) const {
    *err << "fleet-sim: error: " << e.message() << "\n";
    return e.ExitCode();
  }
};

void OnRun(CLI::App* sub, Ctx& ctx, std::function<int()> body) {
  sub->callback([&ctx, body = std::move(body)] { ctx.run = body; });
}

unsigned DefaultThreads() { return std::clamp(std::thread::hardware_concurrency(), 1u, 16u); }

// Refusals by the server (4xx) are policy/verification failures (exit 1); anything else that
// is not 2xx means the request could not be served (exit 2).
int RefusedExit(int status) { return status >= 400 && status < 500 ? 1 : 2; }

std::string ErrorText(const HttpReply& reply) {
  auto json = ParseJson(reply.body);
  if (json.ok() && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
    const Json& e = (*json)["error"];
    return std::to_string(reply.status) + " " + e.value("code", "") + ": " + e.value("message", "");
  }
  return std::to_string(reply.status) + " " + reply.body.substr(0, 300);
}

struct ApplianceArgs {
  std::string server;
  std::string identity;
};

void AddApplianceOptions(CLI::App* sub, ApplianceArgs& a) {
  sub->add_option("--server", a.server, "Updater base URL, e.g. http://127.0.0.1:8080")->required();
  sub->add_option("--identity", a.identity, "Appliance identity file (fleet-sim identity new)")->required();
}

struct Loaded {
  Url url;
  trust::ApplianceIdentity identity;
};
Expected<Loaded> LoadAppliance(const ApplianceArgs& a) {
  UPK_TRY_ASSIGN(Url url, Url::Parse(a.server));
  auto id = trust::ApplianceIdentity::Load(a.identity);
  if (!id.ok()) return id.error().Wrap("--identity " + a.identity);
  return Loaded{std::move(url), std::move(id).value()};
}

// Sends one signed appliance request.
Expected<HttpReply> SignedCall(const Loaded& l, std::string_view path, const std::string& body) {
  UPK_TRY_ASSIGN(SignedHeaders h, SignAppliance(l.identity, "POST", l.url.prefix + std::string(path), body,
                                                SystemClock::Instance(), SystemRandom::Instance()));
  HttpClient client(l.url);
  return client.Send("POST", path, h.headers, body);
}

// ---- identity new -----------------------------------------------------------------------------
void AddIdentity(CLI::App& app, Ctx& ctx) {
  auto* identity = app.add_subcommand("identity", "Appliance identity files");
  identity->require_subcommand(1);
  auto* fresh = identity->add_subcommand("new", "Generate an appliance identity (ed25519) into FILE (0600)");
  auto file = std::make_shared<std::string>();
  auto index = std::make_shared<std::int64_t>(-1);
  fresh->add_option("FILE", *file, "Where to write it (refused if it exists)")->required();
  fresh->add_option("--fleet-index", *index,
                    "Write deterministic fleet identity I instead (the one seed-sql and load use; public "
                    "knowledge, benchmarks and tests only)");
  OnRun(fresh, ctx, [&ctx, file, index] {
    if (*index < -1) return ctx.Fail(Error(Errc::kInvalidArgument, "--fleet-index must be >= 0"));
    auto made = *index >= 0 ? FleetIdentity(static_cast<std::uint64_t>(*index))
                            : Expected<trust::ApplianceIdentity>(trust::ApplianceIdentity::Generate());
    if (!made.ok()) return ctx.Fail(made.error());
    const trust::ApplianceIdentity& id = *made;
    auto saved = id.Save(*file);
    if (!saved.ok()) return ctx.Fail(saved.error());
    if (ctx.json) {
      *ctx.out << Json{{"appliance_id", id.appliance_id()}, {"file", *file}}.dump() << "\n";
    } else {
      *ctx.out << id.appliance_id() << "\n";
    }
    return 0;
  });
}

// ---- enrol ------------------------------------------------------------------------------------
void AddEnrol(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand("enrol", "Enrol the appliance with a licence key (POST /api/v1/enrol)");
  auto a = std::make_shared<ApplianceArgs>();
  auto licence_file = std::make_shared<std::string>();
  AddApplianceOptions(sub, *a);
  // Only from a file: a licence key in argv would show in ps and shell history.
  sub->add_option("--licence-key-file", *licence_file, "File holding the licence key")->required();
  OnRun(sub, ctx, [&ctx, a, licence_file] {
    auto l = LoadAppliance(*a);
    if (!l.ok()) return ctx.Fail(l.error());
    auto text = ReadFileBounded(*licence_file, kMaxLicenceFileBytes);
    if (!text.ok()) return ctx.Fail(text.error().Wrap("--licence-key-file"));
    std::string key = *text;
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.back()))) key.pop_back();
    while (!key.empty() && std::isspace(static_cast<unsigned char>(key.front()))) key.erase(0, 1);
    if (key.empty()) return ctx.Fail(Error(Errc::kInvalidArgument, "--licence-key-file: the file is empty"));
    auto body = trust::EnrolmentRequestBody(l->identity, key, SystemClock::Instance().Now());
    if (!body.ok()) return ctx.Fail(body.error());
    HttpClient client(l->url);
    auto reply = client.Send("POST", kEnrolPath, {{"Content-Type", "application/json"}}, *body);
    if (!reply.ok()) return ctx.Fail(reply.error());
    if (ctx.json) {
      *ctx.out << reply->body.substr(0, kMaxAnswerPrintBytes) << "\n";
    } else {
      *ctx.out << "appliance " << l->identity.appliance_id() << "\n";
      *ctx.out << "answer " << reply->status << ": " << reply->body.substr(0, kMaxAnswerPrintBytes) << "\n";
    }
    if (reply->status != 200) {
      *ctx.err << "fleet-sim: enrolment refused: " << ErrorText(*reply) << "\n";
      return RefusedExit(reply->status);
    }
    return 0;
  });
}

// ---- checkin ----------------------------------------------------------------------------------
struct CheckinArgs {
  ApplianceArgs a;
  std::vector<std::string> installed;
  std::string agent_version = "0.1.0";
  std::string director_key;
};

int RunCheckin(Ctx& ctx, const CheckinArgs& args) {
  auto l = LoadAppliance(args.a);
  if (!l.ok()) return ctx.Fail(l.error());
  auto installed = ParseInstalled(args.installed);
  if (!installed.ok()) return ctx.Fail(installed.error());
  std::optional<packages::PublicKey> director;
  if (!args.director_key.empty()) {
    auto key = packages::LoadPublicKey(args.director_key);
    if (!key.ok()) return ctx.Fail(key.error().Wrap("--director-key"));
    director = *key;
  }
  const std::string body = CheckinBody(*installed, args.agent_version, SystemClock::Instance().Now());
  auto reply = SignedCall(*l, kCheckinPath, body);
  if (!reply.ok()) return ctx.Fail(reply.error());
  if (reply->status != 200) {
    *ctx.err << "fleet-sim: check-in refused: " << ErrorText(*reply) << "\n";
    return RefusedExit(reply->status);
  }
  auto answer = ParseJson(reply->body);
  if (!answer.ok()) return ctx.Fail(answer.error().Wrap("check-in answer"));
  if (!answer->is_object() || !answer->contains("assignment") || !(*answer)["assignment"].is_object()) {
    return ctx.Fail(Error(Errc::kParse, "check-in answer has no 'assignment' object"));
  }
  const Json& envelope = (*answer)["assignment"];
  trust::Assignment assignment;
  if (director) {
    trust::AssignmentExpectation expect{l->identity.appliance_id(), trust::StateDigest(*installed), std::nullopt};
    auto verified = trust::VerifyAssignment(envelope.dump(), *director, SystemClock::Instance(), expect);
    if (!verified.ok()) return ctx.Fail(verified.error().Wrap("assignment"));
    assignment = std::move(verified).value();
  } else {
    if (!envelope.contains("signed")) return ctx.Fail(Error(Errc::kParse, "assignment has no 'signed' part"));
    auto parsed = trust::Assignment::FromJson(envelope["signed"]);
    if (!parsed.ok()) return ctx.Fail(parsed.error().Wrap("assignment"));
    assignment = std::move(parsed).value();
  }
  // Opening every sealed key proves the keyserver re-sealed them to this identity.
  std::vector<std::string> key_checks;
  if (director) {
    for (std::size_t i = 0; i < assignment.steps.size(); ++i) {
      auto key = trust::OpenContentKey(assignment.steps[i].sealed_content_key, l->identity);
      if (!key.ok()) return ctx.Fail(key.error().Wrap("step " + std::to_string(i + 1) + " content key"));
      key_checks.push_back("opens");
    }
  }
  if (ctx.json) {
    *ctx.out << reply->body.substr(0, kMaxAnswerPrintBytes) << "\n";
    return 0;
  }
  std::ostream& o = *ctx.out;
  o << "appliance " << assignment.appliance_id << ", channel " << assignment.channel << ", "
    << assignment.steps.size() << " step(s), expires " << FormatTimestamp(assignment.expires) << "\n";
  if (director) o << "assignment verified with director key " << director->keyid() << "\n";
  for (std::size_t i = 0; i < assignment.steps.size(); ++i) {
    const auto& s = assignment.steps[i];
    o << (i + 1) << ". " << s.name << " " << s.version.ToString() << " (" << packages::KindName(s.kind) << "), wait "
      << s.wait_hours << " h, blob " << s.length << " bytes";
    if (director) o << ", content key " << key_checks[i];
    o << "\n";
  }
  if (answer->contains("next_checkin_seconds")) o << "next check-in in " << (*answer)["next_checkin_seconds"] << " s\n";
  return 0;
}

void AddCheckin(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand("checkin", "Signed check-in (POST /api/v1/checkin); prints the assignment");
  auto args = std::make_shared<CheckinArgs>();
  AddApplianceOptions(sub, args->a);
  sub->add_option("--installed", args->installed, "NAME=VERSION installed (repeat)");
  sub->add_option("--agent-version", args->agent_version, "Agent version to report")->capture_default_str();
  sub->add_option("--director-key", args->director_key,
                  "Director public key (TUF key JSON): verify the assignment and open every content key");
  OnRun(sub, ctx, [&ctx, args] { return RunCheckin(ctx, *args); });
}

// ---- report -----------------------------------------------------------------------------------
void AddReport(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand("report", "Report one event (POST /api/v1/events), with a random id");
  auto a = std::make_shared<ApplianceArgs>();
  auto type = std::make_shared<std::string>(), name = std::make_shared<std::string>(),
       version = std::make_shared<std::string>(), id = std::make_shared<std::string>();
  AddApplianceOptions(sub, *a);
  sub->add_option("--event", *type, "download, install, success, failure or rollback")
      ->required()
      ->check(CLI::IsMember({"download", "install", "success", "failure", "rollback"}));
  sub->add_option("--name", *name, "Release name")->required();
  sub->add_option("--version", *version, "Release version")->required();
  sub->add_option("--id", *id, "Event id (32 lower-case hex; default: random). The same id again is a duplicate");
  OnRun(sub, ctx, [&ctx, a, type, name, version, id] {
    auto l = LoadAppliance(*a);
    if (!l.ok()) return ctx.Fail(l.error());
    auto v = packages::Version::Parse(*version);
    if (!v.ok()) return ctx.Fail(v.error().Wrap("--version"));
    std::string event_id = *id;
    if (event_id.empty()) event_id = ToHex(SystemRandom::Instance().Generate(16));
    if (event_id.size() != 32 || event_id.find_first_not_of("0123456789abcdef") != std::string::npos) {
      return ctx.Fail(Error(Errc::kInvalidArgument, "--id must be 32 lower-case hex digits"));
    }
    const std::string body = EventBody(event_id, *type, *name, *version, SystemClock::Instance().Now());
    auto reply = SignedCall(*l, kEventsPath, body);
    if (!reply.ok()) return ctx.Fail(reply.error());
    if (reply->status != 200) {
      *ctx.err << "fleet-sim: report refused: " << ErrorText(*reply) << "\n";
      return RefusedExit(reply->status);
    }
    if (ctx.json) {
      *ctx.out << reply->body.substr(0, kMaxAnswerPrintBytes) << "\n";
    } else {
      *ctx.out << "event " << event_id << ": " << reply->body.substr(0, kMaxAnswerPrintBytes) << "\n";
    }
    return 0;
  });
}

// ---- seed-sql ---------------------------------------------------------------------------------
void AddSeedSql(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand(
      "seed-sql",
      "Write COPY files enrolling N deterministic appliances straight into the keyserver's and updater's "
      "databases (benchmark set-up only: bypasses the enrolment API)");
  auto opts = std::make_shared<SeedSqlOptions>();
  auto dir = std::make_shared<std::string>();
  opts->threads = DefaultThreads();
  sub->add_option("--count", opts->count, "Number of appliances")->required();
  sub->add_option("--out", *dir, "Output directory")->required();
  sub->add_option("--customers", opts->customers, "Distinct customers (round-robin)")->capture_default_str();
  sub->add_option("--threads", opts->threads, "Key derivation threads")->capture_default_str();
  OnRun(sub, ctx, [&ctx, opts, dir] {
    auto done = WriteSeedSql(*opts, *dir);
    if (!done.ok()) return ctx.Fail(done.error());
    *ctx.out << "wrote " << opts->count << " appliances to " << *dir << "\n"
             << "load: psql KEYSERVER_DB -f " << *dir << "/keyserver.sql && psql UPDATER_DB -f " << *dir
             << "/updater.sql\n";
    return 0;
  });
}

// ---- presign ----------------------------------------------------------------------------------
void AddPresign(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand(
      "presign",
      "Write M signed check-in requests (one escaped raw HTTP request per line) for wrk to replay; "
      "timestamps are now, so generate right before the run (server skew window: 300 s)");
  auto opts = std::make_shared<PresignOptions>();
  auto installed = std::make_shared<std::vector<std::string>>();
  auto out = std::make_shared<std::string>();
  opts->threads = DefaultThreads();
  sub->add_option("--count-appliances", opts->appliances, "Deterministic appliances 0..N-1 (round-robin)")->required();
  sub->add_option("--requests", opts->requests, "Number of requests")->required();
  sub->add_option("--server-host", opts->host_header, "Host header value, HOST:PORT")->required();
  sub->add_option("--installed", *installed, "NAME=VERSION installed (repeat)");
  sub->add_option("--agent-version", opts->agent_version, "Agent version")->capture_default_str();
  sub->add_option("--first-index", opts->first_index, "Index of the first appliance")->capture_default_str();
  sub->add_option("--path-prefix", opts->path_prefix, "Path before /api/v1/checkin (a reverse proxy's)");
  sub->add_option("--threads", opts->threads, "Signing threads")->capture_default_str();
  sub->add_option("--out", *out, "Output file")->required();
  OnRun(sub, ctx, [&ctx, opts, installed, out] {
    auto set = ParseInstalled(*installed);
    if (!set.ok()) return ctx.Fail(set.error());
    opts->installed = *set;
    if (opts->host_header.find_first_of(" \r\n/") != std::string::npos) {
      return ctx.Fail(Error(Errc::kInvalidArgument, "--server-host wants HOST:PORT"));
    }
    auto done = WritePresigned(*opts, *out, SystemClock::Instance());
    if (!done.ok()) return ctx.Fail(done.error());
    *ctx.out << "wrote " << opts->requests << " signed check-ins to " << *out << "\n";
    return 0;
  });
}

// ---- load -------------------------------------------------------------------------------------
struct LoadArgs {
  std::string server;
  std::uint64_t appliances = 0;
  double rate = 0;
  double duration_s = 10;
  bool max = false;
  std::uint64_t requests = 0;
  std::uint64_t first_index = 0;
  unsigned connections = 16;
  std::vector<std::string> installed;
  std::string agent_version = "0.1.0";
  double timeout_s = 10;
  std::uint64_t fail_over_permille = 1000;
  std::string get_path;
};

int RunLoadCommand(Ctx& ctx, const LoadArgs& a) {
  LoadOptions o;
  auto url = Url::Parse(a.server);
  if (!url.ok()) return ctx.Fail(url.error());
  o.server = *url;
  if (a.max == (a.rate > 0)) {
    return ctx.Fail(Error(Errc::kInvalidArgument, "give exactly one of --rate R (open loop) and --max (closed loop)"));
  }
  o.get_path = a.get_path;
  if (!o.get_path.empty() && (o.get_path.front() != '/' || o.get_path.find_first_of(" \r\n") != std::string::npos)) {
    return ctx.Fail(Error(Errc::kInvalidArgument, "--reference-get wants a path starting with '/'"));
  }
  if (o.get_path.empty() && (a.appliances == 0 || a.appliances > kMaxLoadedIdentities)) {
    return ctx.Fail(
        Error(Errc::kInvalidArgument, "--appliances must be 1.." + std::to_string(kMaxLoadedIdentities)));
  }
  if (!(a.duration_s > 0) || a.duration_s > static_cast<double>(kMaxDuration.count())) {
    return ctx.Fail(Error(Errc::kInvalidArgument, "--duration must be > 0 and at most 86400 s"));
  }
  if (!(a.timeout_s > 0) || a.timeout_s > 600) {
    return ctx.Fail(Error(Errc::kInvalidArgument, "--timeout must be > 0 and at most 600 s"));
  }
  auto installed = ParseInstalled(a.installed);
  if (!installed.ok()) return ctx.Fail(installed.error());
  o.appliances = a.appliances;
  o.first_index = a.first_index;
  o.rate = a.max ? 0 : a.rate;
  o.duration = std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(a.duration_s * 1000)));
  o.max_requests = a.requests;
  o.connections = a.connections;
  o.installed = *installed;
  o.agent_version = a.agent_version;
  o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(std::llround(a.timeout_s * 1000)));
  if (o.connections == 0 || o.connections > kMaxConnections) {
    return ctx.Fail(Error(Errc::kInvalidArgument, "--connections must be 1.." + std::to_string(kMaxConnections)));
  }
  // Only the identities the run can reach are derived.
  auto identities = FleetIdentities(o.get_path.empty() ? a.appliances : 0, DefaultThreads());
  if (!identities.ok()) return ctx.Fail(identities.error());
  auto report = RunLoad(o, *identities);
  if (!report.ok()) return ctx.Fail(report.error());
  if (ctx.json) {
    *ctx.out << ReportJson(o, *report).dump() << "\n";
  } else {
    *ctx.out << FormatReport(o, *report);
  }
  const std::uint64_t bad = report->completed - report->Count(200) + report->transport_errors;
  const std::uint64_t all = report->completed + report->transport_errors;
  if (all == 0 || bad * 1000 > all * a.fail_over_permille) {
    *ctx.err << "fleet-sim: " << bad << " of " << all << " requests failed (limit " << a.fail_over_permille
             << " per mille)\n";
    return 1;
  }
  return 0;
}

void AddLoad(CLI::App& app, Ctx& ctx) {
  auto* sub = app.add_subcommand(
      "load",
      "Check-in load from the deterministic fleet: open loop at --rate (latency from each request's scheduled "
      "time) or closed loop with --max; one thread per connection, signing on the fly");
  auto a = std::make_shared<LoadArgs>();
  sub->add_option("--server", a->server, "Updater base URL")->required();
  sub->add_option("--appliances", a->appliances, "Deterministic appliances 0..N-1 (round-robin)");
  sub->add_option("--rate", a->rate, "Requests per second (open loop)");
  sub->add_flag("--max", a->max, "Closed loop: as fast as the connections allow");
  sub->add_option("--duration", a->duration_s, "Seconds")->capture_default_str();
  sub->add_option("--requests", a->requests, "Stop after this many requests (0: duration only)");
  sub->add_option("--first-index", a->first_index, "Request k goes to appliance (first + k) % N")
      ->capture_default_str();
  sub->add_option("--connections", a->connections, "Kept-alive connections (= threads)")->capture_default_str();
  sub->add_option("--installed", a->installed, "NAME=VERSION installed (repeat)");
  sub->add_option("--agent-version", a->agent_version, "Agent version")->capture_default_str();
  sub->add_option("--timeout", a->timeout_s, "Seconds per request")->capture_default_str();
  sub->add_option("--fail-over-permille", a->fail_over_permille,
                  "Exit 1 when more than this many per 1000 requests get no 200 (default 1000: never)");
  sub->add_option("--reference-get", a->get_path,
                  "Reference run: unsigned GET of this path instead of check-ins (e.g. nginx's 1 KiB file)");
  OnRun(sub, ctx, [&ctx, a] { return RunLoadCommand(ctx, *a); });
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Ctx ctx;
  ctx.out = &out;
  ctx.err = &err;
  CLI::App app("fleet-sim: a simulated fleet of appliances (enrol, check in, report, load)", "fleet-sim");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("--json", ctx.json, "Print the raw JSON answer (checkin, report, enrol) or the load report as JSON");
  AddIdentity(app, ctx);
  AddEnrol(app, ctx);
  AddCheckin(app, ctx);
  AddReport(app, ctx);
  AddSeedSql(app, ctx);
  AddPresign(app, ctx);
  AddLoad(app, ctx);
  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  if (!ctx.run) {
    err << "fleet-sim: no command\n";
    return 2;
  }
  try {
    return ctx.run();
  } catch (const std::exception& e) {  // nlohmann::json and std:: throw; nothing may escape Main
    err << "fleet-sim: error: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace upkeep::fleet_sim
