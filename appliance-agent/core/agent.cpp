#include "upkeep/agent/agent.hpp"

#include <algorithm>
#include <utility>

#include "agent_internal.hpp"
#include "crash_points.hpp"
#include "upkeep/agent/install_spec.hpp"
#include "upkeep/agent/timing.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/install_report.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::agent {
namespace internal {

Json StateJson(const trust::InstalledSet& installed) {
  Json j = Json::object();
  for (const auto& [name, version] : installed) j[name] = version.ToString();
  return j;
}

Expected<trust::InstalledSet> StateFromJson(const Json& j) {
  trust::InstalledSet out;
  if (!j.is_object()) return Error(Errc::kParse, "installed state: not an object");
  for (const auto& [name, v] : j.items()) {
    if (!v.is_string()) return Error(Errc::kParse, "installed state: " + name + ": not a version string");
    UPK_TRY_ASSIGN(packages::Version version, packages::Version::Parse(v.get<std::string>()));
    out.emplace(name, version);
  }
  return out;
}

tuf::UpdaterOptions TufOptions(const AgentConfig& config) {
  tuf::UpdaterOptions o;
  o.metadata_dir = config.TufDir();
  o.metadata_base_url = config.updater_url + "/repo/metadata";
  o.target_dir = config.DownloadDir();
  o.target_base_url = config.updater_url + "/repo/targets";
  return o;
}

}  // namespace internal

namespace {

using packages::Version;
using namespace internal;

constexpr std::size_t kJournalKeep = 2000;    // records kept after a compaction
constexpr std::size_t kOutboxBatch = 100;     // the events API takes at most 100 at once
constexpr int kMaxInterruptedAttempts = 3;    // then an interrupted release counts as failed

std::string FailedKey(const std::string& name, const std::string& version) { return name + " " + version; }

// The consistent-snapshot file name the updater serves a target under: DIR/SHA256.NAME.
std::string HashedTargetPath(const std::string& target_path, const std::string& sha256) {
  const auto slash = target_path.rfind('/');
  if (slash == std::string::npos) return sha256 + "." + target_path;
  return target_path.substr(0, slash + 1) + sha256 + "." + target_path.substr(slash + 1);
}

// The keys (and threshold) the TUF root trusts for targets: the release signing keys, which
// also sign every package manifest.
Expected<std::pair<std::vector<packages::PublicKey>, std::size_t>> TargetsKeys(const tuf::Root& root) {
  std::vector<packages::PublicKey> keys;
  auto role = root.roles.find("targets");
  if (role == root.roles.end()) return Error(Errc::kVerification, "the TUF root has no targets role");
  for (const auto& id : role->second.keyids) {
    if (auto k = root.keys.find(id); k != root.keys.end() && k->second) keys.push_back(*k->second);
  }
  if (keys.empty()) return Error(Errc::kVerification, "the TUF root lists no usable targets key");
  return std::pair{std::move(keys), static_cast<std::size_t>(role->second.threshold)};
}

std::string Percent(std::uint64_t done, std::uint64_t total) {
  if (total == 0) return "100%";
  return std::to_string(done * 100 / total) + "%";
}

}  // namespace

// One install in progress, as kept in the "operation" document.
struct Agent::Operation {
  std::string id;
  trust::AssignmentStep step;
  std::string handler;  // known once the package was opened
  std::optional<Version> previous;
  std::string phase;
  int attempts = 1;
  SysTime started{};
  bool client_upgrade = false;  // a software package that brings endpoint client builds

  Json ToJson() const {
    Json j = {{"id", id}, {"step", step.ToJson()}, {"handler", handler}, {"phase", phase},
              {"attempts", attempts}, {"started", FormatTimestamp(started)}};
    j["previous"] = previous ? Json(previous->ToString()) : Json(nullptr);
    if (client_upgrade) j["client_upgrade"] = true;
    return j;
  }
  static Expected<Operation> FromJson(const Json& j) {
    try {
      Operation op;
      op.id = j.at("id").get<std::string>();
      UPK_TRY_ASSIGN(op.step, trust::AssignmentStep::FromJson(j.at("step")));
      op.handler = j.at("handler").get<std::string>();
      op.phase = j.at("phase").get<std::string>();
      op.attempts = j.at("attempts").get<int>();
      UPK_TRY_ASSIGN(op.started, ParseTimestamp(j.at("started").get<std::string>()));
      op.client_upgrade = j.value("client_upgrade", false);
      if (!j.at("previous").is_null()) {
        UPK_TRY_ASSIGN(Version v, Version::Parse(j.at("previous").get<std::string>()));
        op.previous = v;
      }
      return op;
    } catch (const std::exception& e) {
      return Error(Errc::kParse, std::string("operation document: ") + e.what());
    }
  }
  std::string Label() const { return step.name + " " + step.version.ToString(); }
};

Agent::Agent(AgentDeps deps) : d_(std::move(deps)) {}

void Agent::Log(const std::string& line) const {
  if (d_.log) d_.log(line);
}

Settings Agent::CurrentSettings() const {
  if (auto j = d_.store->Get("settings")) {
    if (auto s = Settings::FromJson(*j); s.ok()) return *s;
  }
  return Settings{};
}

Json Agent::InstalledJson() const {
  auto j = d_.store->Get("installed");
  if (!j || !j->is_object() || !j->contains("packages")) return Json{{"packages", Json::object()}};
  return *j;
}

Expected<std::vector<ClientBuildsFile>> Agent::ClientBuildFiles() {
  std::vector<ClientBuildsFile> out;
  const Json doc = InstalledJson();
  for (const auto& [name, p] : doc.at("packages").items()) {
    if (!p.value("client_upgrade", false) || p.value("kind", "") != "software") continue;
    UPK_TRY_ASSIGN(Version v, Version::Parse(p.value("version", "")));
    UPK_TRY_ASSIGN(auto handler, HandlerFor(p.value("handler", "files")));
    ClientBuildsFile f;
    f.package = name;
    f.version = v.ToString();
    f.path = handler->WorkDir(name, v) / kClientBuildsFileName;
    out.push_back(std::move(f));
  }
  return out;
}

trust::InstalledSet Agent::Installed() const {
  trust::InstalledSet out;
  const Json doc = InstalledJson();  // named: a range-for over a temporary's member dangles
  for (const auto& [name, p] : doc.at("packages").items()) {
    if (auto v = Version::Parse(p.value("version", "")); v.ok()) out.emplace(name, *v);
  }
  return out;
}

std::size_t Agent::PendingReports() const {
  std::uint64_t sent = 1;
  if (auto j = d_.store->Get("outbox_sent")) sent = j->value("next_seq", std::uint64_t{1});
  const std::uint64_t next = d_.store->NextSeq(kOutbox);
  return next > sent ? static_cast<std::size_t>(next - sent) : 0;
}

Status Agent::Journal(const std::string& type, const Json& fields) {
  Json record = fields;
  record["type"] = type;
  record["at"] = FormatTimestamp(d_.clock->Now());
  UPK_TRY_ASSIGN(std::uint64_t seq, d_.store->Append(kJournal, record));
  const std::uint64_t first = d_.store->FirstSeq(kJournal);
  if (seq - first > 2 * kJournalKeep) UPK_TRY(d_.store->Compact(kJournal, seq + 1 - kJournalKeep));
  return OkStatus();
}

Status Agent::Report(const Operation& op, const std::string& type, const Json& detail, const std::string& log_tail) {
  // The id depends only on the operation, its attempt and the event type: a report re-queued
  // after a crash is a duplicate the updater drops, never a second report.
  const std::string seed = op.id + "/" + std::to_string(op.attempts) + "/" + type;
  Json event = {{"id", Sha256Hex(seed).substr(0, 32)}, {"type", type}, {"name", op.step.name},
                {"version", op.step.version.ToString()}, {"at", FormatTimestamp(d_.clock->Now())},
                {"detail", detail}};
  if (!log_tail.empty()) event["log_tail"] = log_tail.size() > 65536 ? log_tail.substr(log_tail.size() - 65536) : log_tail;
  return d_.store->Append(kOutbox, event).ok() ? OkStatus() : Error(Errc::kIo, "outbox: could not queue a report");
}

Expected<std::size_t> Agent::FlushOutbox() {
  std::uint64_t next = 1;
  if (auto j = d_.store->Get("outbox_sent")) next = std::max<std::uint64_t>(1, j->value("next_seq", std::uint64_t{1}));
  next = std::max(next, d_.store->FirstSeq(kOutbox));
  std::size_t acknowledged = 0;
  for (int round = 0; round < 1000; ++round) {  // bounded: 100,000 events per flush at most
    UPK_TRY_ASSIGN(auto records, d_.store->Read(kOutbox, next, kOutboxBatch));
    if (records.empty()) break;
    std::vector<AgentEvent> events;
    for (const auto& r : records) {
      AgentEvent e;
      e.id = r.value.value("id", "");
      e.type = r.value.value("type", "");
      e.name = r.value.value("name", "");
      e.version = r.value.value("version", "");
      if (auto at = ParseTimestamp(r.value.value("at", "")); at.ok()) e.at = *at;
      e.detail = r.value.value("detail", Json::object());
      e.log_tail = r.value.value("log_tail", "");
      events.push_back(std::move(e));
    }
    auto sent = d_.api->SendEvents(events);
    if (!sent.ok()) return sent.error();
    next = records.back().seq + 1;
    acknowledged += records.size();
    UPK_TRY(d_.store->Put("outbox_sent", Json{{"next_seq", next}}));
  }
  // The events since the last import stay (at most kMaxReportEvents): its installation report
  // lists them even when they were sent online meanwhile.
  std::uint64_t keep_from = next;
  if (auto li = d_.store->Get("last_import")) {
    const std::uint64_t since = li->value("outbox_seq", next);
    const std::uint64_t floor = next > trust::kMaxReportEvents ? next - trust::kMaxReportEvents : 1;
    keep_from = std::min(next, std::max(since, floor));
  }
  if (keep_from > d_.store->FirstSeq(kOutbox)) UPK_TRY(d_.store->Compact(kOutbox, keep_from));
  return acknowledged;
}

Expected<CheckResult> Agent::Check() {
  if (auto flushed = FlushOutbox(); !flushed.ok()) {
    Log("reports stay queued: " + flushed.error().message());
  }
  const trust::InstalledSet installed = Installed();
  const SysTime asked = d_.clock->Now();
  auto reply = d_.api->Checkin(installed, kAgentVersion);
  if (!reply.ok()) {
    Json last = {{"at", FormatTimestamp(asked)}, {"ok", false}, {"error", reply.error().message()}};
    (void)d_.store->Put("last_check", last);
    (void)Journal("check", {{"ok", false}, {"message", reply.error().message()}});
    return reply.error();
  }
  trust::AssignmentExpectation expect;
  expect.appliance_id = d_.identity->appliance_id();
  expect.state_digest = trust::StateDigest(installed);
  auto assignment = trust::VerifyAssignment(reply->assignment, *d_.director_key, *d_.clock, expect);
  if (!assignment.ok()) {
    const std::string why = "assignment refused: " + assignment.error().message();
    (void)d_.store->Put("last_check", Json{{"at", FormatTimestamp(asked)}, {"ok", false}, {"error", why}});
    (void)Journal("refused", {{"message", why}});
    return assignment.error().Wrap("assignment refused");
  }
  // Refresh the TUF metadata now, so a repository problem shows at check time, not mid-install.
  tuf::Updater tuf(TufOptions(*d_.config), *d_.tuf_fetcher, *d_.clock);
  if (auto refreshed = tuf.Refresh(); !refreshed.ok()) {
    const std::string why = "TUF metadata refused: " + refreshed.error().message();
    (void)d_.store->Put("last_check", Json{{"at", FormatTimestamp(asked)}, {"ok", false}, {"error", why}});
    (void)Journal("refused", {{"message", why}});
    return refreshed.error().Wrap("TUF metadata");
  }
  UPK_TRY(d_.store->Put("assignment", Json{{"text", reply->assignment},
                                           {"state", StateJson(installed)},
                                           {"received_at", FormatTimestamp(asked)}}));
  const auto offset = std::chrono::duration_cast<std::chrono::seconds>(reply->server_time - asked).count();
  std::size_t todo = 0;
  for (const auto& s : assignment->steps) {
    auto it = installed.find(s.name);
    if (it == installed.end() || it->second < s.version) ++todo;
  }
  UPK_TRY(d_.store->Put("last_check", Json{{"at", FormatTimestamp(asked)}, {"ok", true},
                                           {"server_time", FormatTimestamp(reply->server_time)},
                                           {"clock_offset_seconds", offset},
                                           {"steps", todo}}));
  UPK_TRY(Journal("check", {{"ok", true}, {"steps", todo}, {"channel", assignment->channel}}));
  CheckResult result;
  result.steps = todo;
  result.next_checkin = reply->next_checkin;
  return result;
}

Expected<trust::Assignment> Agent::KeptAssignment() const {
  auto doc = d_.store->Get("assignment");
  if (!doc) return Error(Errc::kNotFound, "no assignment yet: run a check first");
  UPK_TRY_ASSIGN(trust::InstalledSet state, StateFromJson(doc->value("state", Json::object())));
  trust::AssignmentExpectation expect;
  expect.appliance_id = d_.identity->appliance_id();
  expect.state_digest = trust::StateDigest(state);
  // Verified again on every use: the store is on the appliance's disk, not a trusted place.
  auto a = trust::VerifyAssignment(doc->value("text", ""), *d_.director_key, *d_.clock, expect);
  if (!a.ok()) return a.error().Wrap("kept assignment (check again)");
  return a;
}

bool Agent::IsFailed(const std::string& name, const std::string& version) const {
  auto doc = d_.store->Get("failed");
  return doc && doc->contains(FailedKey(name, version));
}

Status Agent::MarkFailed(const std::string& name, const std::string& version, const std::string& reason) {
  Json doc = d_.store->Get("failed").value_or(Json::object());
  doc[FailedKey(name, version)] = {{"at", FormatTimestamp(d_.clock->Now())}, {"reason", reason}};
  return d_.store->Put("failed", doc);
}

Expected<std::vector<PlannedStep>> Agent::Plan() const {
  UPK_TRY_ASSIGN(trust::Assignment a, KeptAssignment());
  const trust::InstalledSet installed = Installed();
  const Settings settings = CurrentSettings();
  std::vector<PlannedStep> out;
  bool next_taken = false;
  for (const auto& s : a.steps) {
    PlannedStep p;
    p.step = s;
    auto it = installed.find(s.name);
    if (it != installed.end() && it->second >= s.version) {
      p.state = "installed";
    } else if (IsFailed(s.name, s.version.ToString())) {
      p.state = "failed";
      p.reason = "its install failed and was rolled back; it is not retried by itself";
      next_taken = true;
    } else if (!next_taken) {
      p.state = "next";
      next_taken = true;
      if (s.wait_hours > 0) p.reason = "waits " + std::to_string(s.wait_hours) + " h after the previous software";
      if (!settings.auto_install) p.reason = "automatic installs are off: install it by hand";
    } else {
      p.state = "waiting";
      p.reason = "needs the steps before it first";
    }
    out.push_back(std::move(p));
  }
  return out;
}

Expected<std::unique_ptr<Handler>> Agent::HandlerFor(const std::string& kind) {
  UPK_TRY_ASSIGN(HandlerKind k, ParseHandlerKind(kind));
  return MakeHandler(k, *d_.fs, d_.config->system_root, *d_.runner);
}

Status Agent::SetPhase(Operation& op, const std::string& phase) {
  op.phase = phase;
  UPK_TRY(d_.store->Put("operation", op.ToJson()));
  // One line per phase: the page's job queue (JobQueue::OnLog) shows the phase from it.
  Log(op.Label() + ": phase " + phase);
  return Journal("phase", {{"name", op.step.name}, {"version", op.step.version.ToString()}, {"phase", phase}});
}

Status Agent::MarkInstalled(const Operation& op) {
  Json doc = InstalledJson();
  Json entry = {{"version", op.step.version.ToString()}, {"kind", packages::KindName(op.step.kind)},
                {"handler", op.handler}, {"installed_at", FormatTimestamp(d_.clock->Now())}};
  entry["previous"] = op.previous ? Json(op.previous->ToString()) : Json(nullptr);
  if (op.client_upgrade) entry["client_upgrade"] = true;
  doc["packages"][op.step.name] = entry;
  if (op.step.kind == packages::Kind::kSoftware) {
    doc["last_software"] = {{"at", FormatTimestamp(d_.clock->Now())}, {"name", op.step.name}};
  }
  return d_.store->Put("installed", doc);
}

Expected<InstallResult> Agent::InstallNext(bool force) {
  if (d_.store->Get("operation")) UPK_TRY(Recover());
  UPK_TRY_ASSIGN(trust::Assignment assignment, KeptAssignment());
  const trust::InstalledSet installed = Installed();
  const Settings settings = CurrentSettings();

  const trust::AssignmentStep* next = nullptr;
  for (const auto& s : assignment.steps) {
    auto it = installed.find(s.name);
    if (it != installed.end() && it->second >= s.version) continue;  // done (never install older)
    next = &s;
    break;
  }
  InstallResult result;
  if (!next) {
    result.message = "up to date: the assignment names nothing newer than what is installed";
    return result;
  }
  result.name = next->name;
  result.version = next->version.ToString();
  if (IsFailed(next->name, result.version)) {
    result.message = next->name + " " + result.version +
                     " failed before and was rolled back; it is not retried by itself (a newer release or "
                     "`appliance-agent install --retry` will)";
    return result;
  }
  const SysTime now = d_.clock->Now();
  if (!force) {
    UPK_TRY_ASSIGN(MaintenanceWindows windows, MaintenanceWindows::Parse(settings.maintenance_windows));
    if (!windows.Contains(now)) {
      result.outcome = InstallOutcome::kNotAllowedNow;
      result.not_before = windows.NextStart(now);
      result.message = "outside the maintenance windows; next one starts " + FormatTimestamp(result.not_before);
      return result;
    }
    std::optional<SysTime> last_software;
    if (auto j = InstalledJson(); j.contains("last_software")) {
      if (auto t = ParseTimestamp(j["last_software"].value("at", "")); t.ok()) last_software = *t;
    }
    SettleGate gate(last_software, std::chrono::hours(next->wait_hours));
    if (!gate.Allows(next->kind, now)) {
      result.outcome = InstallOutcome::kNotAllowedNow;
      result.not_before = gate.EarliestStart(next->kind);
      result.message = "settling: the previous software asks " + std::to_string(next->wait_hours) +
                       " h before the next one; it may start " + FormatTimestamp(result.not_before);
      return result;
    }
  }

  Operation op;
  op.id = ToHex(d_.random->Generate(16));
  op.step = *next;
  if (auto it = installed.find(next->name); it != installed.end()) op.previous = it->second;
  op.started = now;
  UPK_TRY(SetPhase(op, "download"));
  Status run = RunOperation(op);
  if (!run.ok() && d_.store->Get("operation")) {
    if (op.phase == "download" || op.phase == "verify" || op.phase == "backup" || op.phase == "stage") {
      // Refused or failed before anything was switched: nothing on the system changed.
      if (!op.handler.empty()) {
        if (auto h = HandlerFor(op.handler); h.ok()) (void)(*h)->Discard(op.step.name, op.step.version);
      }
      (void)Journal("failure", {{"name", op.step.name}, {"version", op.step.version.ToString()},
                                {"phase", op.phase}, {"message", run.error().message()}});
      // Verification and policy refusals are final for this release and reported; I/O trouble
      // (an unreachable updater, a full disk) is retried later and counts against no rollout.
      if (run.error().code() != Errc::kIo && run.error().code() != Errc::kLimit) {
        (void)Report(op, "failure", Json{{"phase", op.phase}, {"error", run.error().message()}});
        (void)MarkFailed(op.step.name, op.step.version.ToString(), run.error().message());
      }
      (void)d_.store->Remove("operation");
    } else {
      // Something failed after the switch: undo it now rather than at the next start.
      (void)Recover();
    }
    return run.error();
  }
  UPK_TRY(run);
  auto installed_now = Installed();
  auto it = installed_now.find(op.step.name);
  const bool ok = it != installed_now.end() && it->second == op.step.version;
  result.outcome = ok ? InstallOutcome::kInstalled : InstallOutcome::kFailedRolledBack;
  result.message = ok ? op.Label() + " installed"
                      : op.Label() + " failed and was undone (see `appliance-agent history`)";
  return result;
}

Status Agent::RunOperation(Operation& op) {
  const auto& step = op.step;
  const std::string label = op.Label();
  const Settings settings = CurrentSettings();

  // 1. What the repository says about this target must be what the director said. A bundle's
  // assignment is checked against the bundle's metadata, kept under STATE/bundle-metadata, with
  // the reference time fixed at the assignment's issue time (no network; docs/airgap.md).
  const bool from_bundle = AssignmentFromBundle();
  tuf::Fetcher* tuf_fetcher = d_.tuf_fetcher;
  const Clock* tuf_clock = d_.clock;
  std::unique_ptr<tuf::Fetcher> offline_fetcher;
  std::optional<FakeClock> fixed_clock;
  if (from_bundle) {
    const Json doc = d_.store->Get("assignment").value_or(Json::object());
    auto at = ParseTimestamp(doc.value("tuf_time", ""));
    if (!at.ok()) return at.error().Wrap("kept assignment: tuf_time");
    fixed_clock.emplace(*at);
    tuf_clock = &*fixed_clock;
    offline_fetcher = MakeDirFetcher(BundleMetadataDir(*d_.config));
    tuf_fetcher = offline_fetcher.get();
  }
  tuf::Updater tuf(TufOptions(*d_.config), *tuf_fetcher, *tuf_clock);
  UPK_TRY_ASSIGN(auto target, tuf.GetTargetInfo(step.target_path));
  if (!target) return Error(Errc::kVerification, label + ": the TUF targets do not list " + step.target_path);
  auto sha = target->hashes.find("sha256");
  if (target->length != step.length || sha == target->hashes.end() || sha->second != step.sha256) {
    return Error(Errc::kVerification, label + ": the TUF targets and the assignment disagree about " +
                                          step.target_path + " (length or sha256)");
  }
  UPK_TRY_ASSIGN(auto keys, TargetsKeys(tuf.trusted_set()->root().signed_body));
  const auto& targets_keys = keys.first;
  const std::size_t threshold = keys.second;

  // 2. Download (resumable) into the download area.
  UPK_TRY(d_.fs->CreateDirectories(d_.config->DownloadDir(), 0700));
  const auto blob = d_.config->DownloadDir() / (step.sha256 + ".blob");
  // An imported blob is used as it is (OpenEncryptedPackage below checks length and SHA-256).
  const auto blob_size = d_.fs->FileSize(blob);
  const bool present = from_bundle && blob_size.ok() && *blob_size == step.length;
  if (from_bundle && !present) {
    return Error(Errc::kNotFound, label + ": its package is not in " + d_.config->DownloadDir().string() +
                                      " (import the bundle again; an imported assignment never downloads)");
  }
  if (!present) UPK_TRY(CheckFreeSpace(d_.config->DownloadDir(), step.length, label + " (download)"));
  DownloadRequest req;
  req.url = d_.config->updater_url + "/repo/targets/" + HashedTargetPath(step.target_path, step.sha256);
  req.dest = blob;
  req.length = step.length;
  req.sha256_hex = step.sha256;
  req.bandwidth_limit_bytes_per_second = settings.bandwidth_limit;
  int last_pct = -1;
  req.progress = [&](std::uint64_t done, std::uint64_t total) {
    const int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (pct / 10 != last_pct / 10) Log("download " + label + ": " + Percent(done, total));
    last_pct = pct;
  };
  req.progress = [&, inner = req.progress](std::uint64_t done, std::uint64_t total) {
    inner(done, total);
    if (total && done * 2 >= total) CrashPoint("mid-download");
  };
  if (present) {
    (void)Report(op, "download", Json{{"bytes", step.length}, {"source", "bundle"}});
  } else {
    auto fetched = Download(*d_.http, req, *d_.clock, *d_.sleeper);
    if (!fetched.ok()) return fetched.error().Wrap(label + ": download");
    (void)Report(op, "download", Json{{"bytes", step.length}});
  }
  CrashPoint("after-download");

  // 3. Open: decrypt with this appliance's key, check the manifest's signature and identity.
  UPK_TRY(SetPhase(op, "verify"));
  UPK_TRY_ASSIGN(trust::ContentKey key, trust::OpenContentKey(step.sealed_content_key, *d_.identity));
  trust::BlobExpectation expect;
  expect.length = step.length;
  expect.sha256_hex = step.sha256;
  UPK_TRY_ASSIGN(packages::PackageReader reader, trust::OpenEncryptedPackage(blob, key, expect));
  auto signed_by = reader.VerifySignatures(targets_keys, threshold);
  if (!signed_by.ok()) return signed_by.error().Wrap(label + ": package signature");
  const packages::Manifest& manifest = reader.manifest();
  if (manifest.name != step.name || manifest.version != step.version || manifest.kind != step.kind) {
    return Error(Errc::kVerification, label + ": the package inside is " + manifest.Id() + ", not what was assigned");
  }
  const trust::InstalledSet installed = Installed();
  for (const auto& r : manifest.requires_) {
    auto it = installed.find(r.name);
    if (it == installed.end() || it->second < r.min_version) {
      return Error(Errc::kPolicy, label + " needs " + r.name + " >= " + r.min_version.ToString() + " first");
    }
  }
  UPK_TRY_ASSIGN(InstallSpec spec, InstallSpec::FromManifest(manifest));
  op.handler = HandlerKindName(spec.handler);
  // Only software releases start a client upgrade wave; base updates and add-ons never do.
  op.client_upgrade = manifest.client_upgrade && manifest.kind == packages::Kind::kSoftware;
  UPK_TRY_ASSIGN(auto handler, HandlerFor(op.handler));
  UPK_TRY(d_.fs->CreateDirectories(d_.config->system_root, 0755));
  UPK_TRY(CheckFreeSpace(d_.config->system_root, manifest.PayloadBytes(), label + " (unpacked)"));

  // 4. Back up the configuration first.
  if (settings.backup_before_install && !d_.config->backup.paths.empty()) {
    UPK_TRY(SetPhase(op, "backup"));
    BackupStore backups(d_.config->BackupDir(), settings.backups_keep, *d_.clock, *d_.random);
    BackupOptions bo;
    bo.reason = "before install of " + label;
    auto made = backups.Create(d_.config->backup, bo, InstalledJson()["packages"]);
    if (!made.ok()) return made.error().Wrap("backup before " + label);
    UPK_TRY(Journal("backup", {{"id", made->id}, {"reason", bo.reason}}));
    CrashPoint("after-backup");
  }

  // 5. Stage beside the running version.
  UPK_TRY(SetPhase(op, "stage"));
  (void)Report(op, "install", Json{{"handler", op.handler}});
  last_pct = -1;
  auto staged = handler->Stage(reader, spec, [&](std::uint64_t done, std::uint64_t total) {
    const int pct = total ? static_cast<int>(done * 100 / total) : 100;
    if (pct / 10 != last_pct / 10) Log("install " + label + ": " + Percent(done, total));
    last_pct = pct;
    if (total && done * 2 >= total) CrashPoint("mid-stage");
  });
  if (!staged.ok()) return staged.error().Wrap(label + ": staging");
  CrashPoint("after-stage");
  HookEnv env;
  env.package = step.name;
  env.version = step.version;
  env.previous = op.previous;
  env.root = d_.config->system_root;
  const auto work = handler->WorkDir(step.name, step.version);
  if (spec.pre_install) {
    UPK_TRY_ASSIGN(ProcessResult pre, RunHook(*d_.runner, *spec.pre_install, work, env));
    if (!pre.exited || pre.exit_code != 0) {
      (void)handler->Discard(step.name, step.version);
      (void)Report(op, "failure", Json{{"phase", "pre_install"}}, pre.log_tail);
      (void)Journal("failure", {{"name", step.name}, {"version", step.version.ToString()}, {"phase", "pre_install"},
                                {"message", "pre-install hook failed"}});
      UPK_TRY(MarkFailed(step.name, step.version.ToString(), "pre-install hook failed"));
      UPK_TRY(d_.store->Remove("operation"));
      return OkStatus();
    }
  }

  // 6. Switch, then prove it works.
  UPK_TRY(SetPhase(op, "activate"));
  UPK_TRY(handler->Activate(step.name, step.version));
  CrashPoint("after-activate");
  UPK_TRY(SetPhase(op, "health_check"));
  bool healthy = true;
  std::string tail;
  std::string why;
  for (const auto* hook : {&spec.post_install, &spec.health_check}) {
    if (!*hook || !healthy) continue;
    auto r = RunHook(*d_.runner, **hook, work, env);
    if (!r.ok()) {
      healthy = false;
      why = r.error().message();
    } else if (!r->exited || r->exit_code != 0) {
      healthy = false;
      tail = r->log_tail;
      why = std::string(hook == &spec.post_install ? "post-install hook" : "health check") +
            (r->timed_out ? " timed out" : r->exited ? " exited " + std::to_string(r->exit_code)
                                                     : " killed by signal " + std::to_string(r->signal));
    }
  }
  CrashPoint("after-health-check");
  return Finish(op, healthy, tail, why);
}

// Commits a healthy install, or rolls an unhealthy one back; both are restartable from their
// phase, so Recover() calls this too.
Status Agent::Finish(Operation& op, bool healthy, const std::string& log_tail, const std::string& why) {
  UPK_TRY_ASSIGN(auto handler, HandlerFor(op.handler));
  const std::string label = op.Label();
  if (healthy) {
    if (op.phase != "commit") UPK_TRY(SetPhase(op, "commit"));
    UPK_TRY(handler->Commit(op.step.name, op.step.version));
    CrashPoint("after-commit");
    UPK_TRY(MarkInstalled(op));
    UPK_TRY(Report(op, "success", Json::object()));
    UPK_TRY(Journal("success", {{"name", op.step.name}, {"version", op.step.version.ToString()},
                                {"previous", op.previous ? op.previous->ToString() : ""}}));
    return d_.store->Remove("operation");
  }
  if (op.phase != "rollback") UPK_TRY(SetPhase(op, "rollback"));
  // Re-sent after a restart mid-rollback: the same event id, so the updater keeps one.
  UPK_TRY(Report(op, "failure", Json{{"phase", "health_check"}, {"error", why}}, log_tail));
  if (op.previous) {
    UPK_TRY(handler->Rollback(op.step.name, *op.previous));
  } else {
    UPK_TRY(handler->Deactivate(op.step.name, op.step.version));
  }
  CrashPoint("after-rollback");
  UPK_TRY(handler->Discard(op.step.name, op.step.version));
  UPK_TRY(Report(op, "rollback", Json{{"to", op.previous ? op.previous->ToString() : ""}, {"reason", why}}));
  UPK_TRY(Journal("rollback", {{"name", op.step.name}, {"version", op.step.version.ToString()},
                               {"to", op.previous ? op.previous->ToString() : ""}, {"message", why},
                               {"log_tail", log_tail.size() > 4096 ? log_tail.substr(log_tail.size() - 4096) : log_tail}}));
  UPK_TRY(MarkFailed(op.step.name, op.step.version.ToString(), why));
  Log(label + " failed (" + why + "); rolled back to " + (op.previous ? op.previous->ToString() : "nothing"));
  return d_.store->Remove("operation");
}

Status Agent::Recover() {
  for (const auto& torn : d_.store->report().torn_tails) {
    UPK_TRY(Journal("recovered", {{"message", "cut a torn record off log " + torn.log + " (" +
                                                  std::to_string(torn.dropped_bytes) + " bytes) after a crash"}}));
  }
  auto doc = d_.store->Get("operation");
  if (!doc) return OkStatus();
  UPK_TRY_ASSIGN(Operation op, Operation::FromJson(*doc));
  const std::string label = op.Label();
  std::optional<Version> active;
  std::unique_ptr<Handler> handler;
  if (!op.handler.empty()) {
    UPK_TRY_ASSIGN(handler, HandlerFor(op.handler));
    UPK_TRY_ASSIGN(active, handler->Active(op.step.name));
  }
  if (op.phase == "commit") {
    UPK_TRY(Journal("recovered", {{"message", "the agent stopped while committing " + label + "; finishing the commit"}}));
    return Finish(op, true, "", "");
  }
  if (op.phase == "rollback") {
    UPK_TRY(Journal("recovered", {{"message", "the agent stopped while rolling back " + label + "; finishing it"}}));
    return Finish(op, false, "", "interrupted rollback finished after a restart");
  }
  const bool switched = handler && active && *active == op.step.version;
  if (switched || op.phase == "activate" || op.phase == "health_check") {
    // The new version may be half-started: go back to the one that is known to work.
    UPK_TRY(Journal("recovered", {{"message", "the agent stopped during " + op.phase + " of " + label +
                                                  "; rolling back to " + (op.previous ? op.previous->ToString() : "nothing")}}));
    op.phase = "rollback";
    UPK_TRY(d_.store->Put("operation", op.ToJson()));
    if (op.previous) {
      UPK_TRY(handler->Rollback(op.step.name, *op.previous));
    } else {
      UPK_TRY(handler->Deactivate(op.step.name, op.step.version));
    }
    UPK_TRY(handler->Discard(op.step.name, op.step.version));
    UPK_TRY(Report(op, "rollback", Json{{"to", op.previous ? op.previous->ToString() : ""}, {"reason", "interrupted"}}));
    UPK_TRY(Journal("rollback", {{"name", op.step.name}, {"version", op.step.version.ToString()},
                                 {"to", op.previous ? op.previous->ToString() : ""},
                                 {"message", "interrupted install undone; it is tried again later"}}));
  } else {
    if (handler) UPK_TRY(handler->Discard(op.step.name, op.step.version));
    UPK_TRY(Journal("recovered", {{"message", "the agent stopped during " + op.phase + " of " + label +
                                                  "; nothing was switched, it is tried again later"}}));
  }
  // A release that keeps interrupting its own install (it kills the agent) stops being retried.
  Json attempts = d_.store->Get("interrupted").value_or(Json::object());
  const int n = attempts.value(label, 0) + 1;
  attempts[label] = n;
  UPK_TRY(d_.store->Put("interrupted", attempts));
  if (n >= kMaxInterruptedAttempts) {
    UPK_TRY(MarkFailed(op.step.name, op.step.version.ToString(),
                       "interrupted " + std::to_string(n) + " times; not retried by itself"));
  }
  return d_.store->Remove("operation");
}

Expected<std::string> Agent::Provision(const std::filesystem::path& upk) {
  if (d_.store->Get("operation")) UPK_TRY(Recover());
  UPK_TRY_ASSIGN(std::string root_text, d_.fs->ReadFile(d_.config->TufDir() / "root.json", 512000));
  UPK_TRY_ASSIGN(auto root_md, tuf::Metadata<tuf::Root>::Parse(root_text));
  UPK_TRY_ASSIGN(auto keys, TargetsKeys(root_md.signed_body));
  UPK_TRY_ASSIGN(packages::PackageReader reader, packages::PackageReader::OpenFile(upk));
  auto signed_by = reader.VerifySignatures(keys.first, keys.second);
  if (!signed_by.ok()) return signed_by.error().Wrap(upk.string());
  const packages::Manifest& m = reader.manifest();
  const trust::InstalledSet installed = Installed();
  if (installed.count(m.name)) {
    return Error(Errc::kPolicy, m.Id() + ": " + m.name + " is installed already (" +
                                    installed.find(m.name)->second.ToString() + "); updates come through the updater");
  }
  UPK_TRY_ASSIGN(InstallSpec spec, InstallSpec::FromManifest(m));
  Operation op;
  op.id = ToHex(d_.random->Generate(16));
  op.step.name = m.name;
  op.step.version = m.version;
  op.step.kind = m.kind;
  op.handler = HandlerKindName(spec.handler);
  op.client_upgrade = m.client_upgrade && m.kind == packages::Kind::kSoftware;
  op.started = d_.clock->Now();
  UPK_TRY_ASSIGN(auto handler, HandlerFor(op.handler));
  UPK_TRY(d_.fs->CreateDirectories(d_.config->system_root, 0755));
  UPK_TRY(SetPhase(op, "stage"));
  if (auto s = handler->Stage(reader, spec, {}); !s.ok()) {
    (void)handler->Discard(m.name, m.version);
    (void)d_.store->Remove("operation");
    return s.error().Wrap(m.Id());
  }
  UPK_TRY(SetPhase(op, "activate"));
  UPK_TRY(handler->Activate(m.name, m.version));
  UPK_TRY(SetPhase(op, "commit"));
  UPK_TRY(handler->Commit(m.name, m.version));
  UPK_TRY(MarkInstalled(op));
  UPK_TRY(Journal("provisioned", {{"name", m.name}, {"version", m.version.ToString()}, {"handler", op.handler}}));
  UPK_TRY(d_.store->Remove("operation"));
  return m.name + " " + m.version.ToString();
}

Status Agent::RollbackPackage(const std::string& name) {
  if (d_.store->Get("operation")) UPK_TRY(Recover());
  Json doc = InstalledJson();
  if (!doc["packages"].contains(name)) return Error(Errc::kNotFound, name + ": not installed");
  Json entry = doc["packages"][name];
  if (entry.value("previous", Json(nullptr)).is_null()) {
    return Error(Errc::kPolicy, name + ": no earlier version is kept to roll back to");
  }
  UPK_TRY_ASSIGN(Version current, Version::Parse(entry.value("version", "")));
  UPK_TRY_ASSIGN(Version previous, Version::Parse(entry["previous"].get<std::string>()));
  UPK_TRY_ASSIGN(auto handler, HandlerFor(entry.value("handler", "files")));
  UPK_TRY(handler->Rollback(name, previous));
  entry["version"] = previous.ToString();
  entry["previous"] = nullptr;
  entry["installed_at"] = FormatTimestamp(d_.clock->Now());
  doc["packages"][name] = entry;
  UPK_TRY(d_.store->Put("installed", doc));
  Operation op;
  op.id = ToHex(d_.random->Generate(16));
  op.step.name = name;
  op.step.version = current;
  UPK_TRY(Report(op, "rollback", Json{{"to", previous.ToString()}, {"reason", "rolled back by the admin"}}));
  UPK_TRY(MarkFailed(name, current.ToString(), "rolled back by the admin"));
  return Journal("rollback", {{"name", name}, {"version", current.ToString()}, {"to", previous.ToString()},
                              {"message", "rolled back by the admin"}});
}

}  // namespace upkeep::agent
