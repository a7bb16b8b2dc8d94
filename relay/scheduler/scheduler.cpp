// The client upgrade scheduler (see scheduler.hpp and docs/relay-scheduler.md).
#include "upkeep/relay/scheduler.hpp"

#include <algorithm>
#include <cmath>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/version.hpp"

namespace upkeep::relay {

namespace {

using std::chrono::duration_cast;
using std::chrono::milliseconds;
using std::chrono::nanoseconds;

// The bucket holds at most 40 ms of budget: the bytes granted in any 1-second window are then at
// most 1.04 x the rate, inside the promised 5 % even right after an idle spell.
constexpr double kBurstSeconds = 0.040;
constexpr std::uint64_t kMinBandwidth = 16 * 1024;
constexpr std::uint64_t kMaxBandwidth = std::uint64_t{1} << 40;
constexpr std::size_t kMaxDetailBytes = 200;
constexpr std::size_t kMaxFieldBytes = 64;

bool ValidPlatform(std::string_view p) {
  if (p.empty() || p.size() > kMaxFieldBytes) return false;
  return std::all_of(p.begin(), p.end(), [](char ch) {
    return (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9') || ch == '.' ||
           ch == '_' || ch == '-';
  });
}

// Client-supplied text for the export: bounded, no control characters, not cut inside a UTF-8
// sequence.
std::string CleanText(std::string_view in) {
  std::size_t n = in.size();
  if (n > kMaxDetailBytes) {
    n = kMaxDetailBytes;
    while (n > 0 && (static_cast<unsigned char>(in[n]) & 0xC0) == 0x80) --n;
  }
  std::string out(in.substr(0, n));
  for (char& ch : out) {
    const auto u = static_cast<unsigned char>(ch);
    if (u < 0x20 || u == 0x7f) ch = '?';
  }
  return out;
}

std::string Quoted(std::string_view s) { return "'" + CleanText(s) + "'"; }

std::string CsvField(std::string_view s) {
  std::string out = "\"";
  for (char ch : s) {
    if (ch == '"') out += '"';
    out += ch;
  }
  out += '"';
  return out;
}

}  // namespace

struct UpgradeScheduler::Client {
  std::string id, platform, version;
  bool online = false;
  ClientState state = ClientState::kOffline;
  std::string fail_reason;
  SysTime last_checkin{};
  std::string target;  // build version while pending / upgrading
  // The running attempt (absolute offsets into the build).
  bool got_get = false;
  std::uint64_t length = 0, granted = 0, accepted = 0;
  MonoTime last_progress{};
  // Failures.
  std::uint32_t attempts = 0;
  bool given_up = false;
  MonoTime retry_at{};
  std::optional<std::list<Client*>::iterator> qpos, apos;
};

const char* ClientStateName(ClientState s) {
  switch (s) {
    case ClientState::kCurrent: return "current";
    case ClientState::kPending: return "upgrade pending";
    case ClientState::kUpgrading: return "upgrading";
    case ClientState::kFailed: return "failed";
    case ClientState::kOffline: return "offline";
  }
  return "unknown";
}

Status ValidateSettings(const SchedulerSettings& s) {
  auto bad = [](const std::string& field, const std::string& why) {
    return Error(Errc::kInvalidArgument, "scheduler settings: field '" + field + "': " + why);
  };
  if (s.max_concurrent_client_upgrades < 1 || s.max_concurrent_client_upgrades > 100000)
    return bad("max_concurrent_client_upgrades", "must be 1..100000");
  if (s.max_client_upgrade_bandwidth < kMinBandwidth || s.max_client_upgrade_bandwidth > kMaxBandwidth)
    return bad("max_client_upgrade_bandwidth", "must be 16384..2^40 bytes per second");
  if (s.stall_timeout.count() < 1) return bad("stall_timeout", "must be positive");
  if (s.retry_backoff.count() < 0) return bad("retry_backoff", "must not be negative");
  if (s.max_attempts < 1 || s.max_attempts > 100) return bad("max_attempts", "must be 1..100");
  if (s.chunk_bytes < 1 || s.chunk_bytes > 65536) return bad("chunk_bytes", "must be 1..65536");
  if (s.window_chunks < 1 || s.window_chunks > 64) return bad("window_chunks", "must be 1..64");
  return OkStatus();
}

Expected<std::unique_ptr<UpgradeScheduler>> UpgradeScheduler::Create(UpgradeLink& link, const MonoClock& mono,
                                                                      const Clock& wall, SchedulerSettings settings) {
  UPK_TRY(ValidateSettings(settings));
  return std::unique_ptr<UpgradeScheduler>(new UpgradeScheduler(link, mono, wall, settings));
}

UpgradeScheduler::UpgradeScheduler(UpgradeLink& link, const MonoClock& mono, const Clock& wall, SchedulerSettings s)
    : link_(link), mono_(mono), wall_(wall), settings_(s), last_refill_(mono.Now()) {}

UpgradeScheduler::~UpgradeScheduler() = default;

double UpgradeScheduler::Capacity() const {
  return static_cast<double>(settings_.max_client_upgrade_bandwidth) * kBurstSeconds;
}

std::uint32_t UpgradeScheduler::ChunkSize() const {
  const double cap = std::floor(Capacity());
  return static_cast<std::uint32_t>(std::max(1.0, std::min<double>(settings_.chunk_bytes, cap)));
}

void UpgradeScheduler::Refill(MonoTime now) {
  if (now > last_refill_) {
    const double dt = std::chrono::duration<double>(now - last_refill_).count();
    tokens_ = std::min(Capacity(), tokens_ + dt * static_cast<double>(settings_.max_client_upgrade_bandwidth));
  }
  last_refill_ = std::max(last_refill_, now);
}

const ClientBuild* UpgradeScheduler::BuildFor(const std::string& platform) const {
  auto it = builds_.find(platform);
  return it == builds_.end() ? nullptr : &it->second;
}

bool UpgradeScheduler::Outdated(const Client& c) const {
  const ClientBuild* b = BuildFor(c.platform);
  if (b == nullptr) return false;
  auto have = packages::Version::Parse(c.version);
  auto want = packages::Version::Parse(b->version);
  return have.ok() && want.ok() && *have < *want;
}

void UpgradeScheduler::Enqueue(Client& c, bool front) {
  if (c.qpos) return;
  c.qpos = front ? queue_.insert(queue_.begin(), &c) : queue_.insert(queue_.end(), &c);
}

void UpgradeScheduler::Dequeue(Client& c) {
  if (!c.qpos) return;
  queue_.erase(*c.qpos);
  c.qpos.reset();
}

void UpgradeScheduler::EndAttempt(Client& c) {
  if (c.apos) {
    active_.erase(*c.apos);
    c.apos.reset();
  }
  c.got_get = false;
  c.granted = c.accepted = c.length = 0;
}

// Decides the state of a client that is not upgrading, from its version, the builds and its
// failure history; queues it when it should upgrade.
void UpgradeScheduler::Evaluate(Client& c, bool front) {
  if (c.state == ClientState::kUpgrading) return;
  const ClientBuild* b = BuildFor(c.platform);
  const bool parseable = packages::Version::Parse(c.version).ok();
  if (!c.online) {
    Dequeue(c);
    c.state = ClientState::kOffline;
    c.target = (parseable && Outdated(c)) ? b->version : "";
    return;
  }
  if (b != nullptr && !parseable) {
    Dequeue(c);
    c.state = ClientState::kFailed;
    c.fail_reason = "version " + Quoted(c.version) + " is not MAJOR.MINOR.BUILD";
    c.target.clear();
    return;
  }
  if (!Outdated(c)) {
    Dequeue(c);
    c.state = ClientState::kCurrent;
    c.target.clear();
    c.attempts = 0;
    c.given_up = false;
    c.fail_reason.clear();
    return;
  }
  c.target = b->version;
  if (c.given_up || (c.attempts > 0 && c.retry_at > mono_.Now())) {
    Dequeue(c);
    c.state = ClientState::kFailed;
    return;
  }
  c.state = ClientState::kPending;
  Enqueue(c, front);
}

void UpgradeScheduler::Fail(Client& c, std::string reason, MonoTime now) {
  EndAttempt(c);
  Dequeue(c);
  c.attempts++;
  c.fail_reason = std::move(reason);
  c.state = ClientState::kFailed;
  if (c.attempts >= settings_.max_attempts) {
    c.given_up = true;
    return;
  }
  const auto shift = std::min<std::uint32_t>(c.attempts - 1, 20);
  c.retry_at = now + settings_.retry_backoff * (std::int64_t{1} << shift);
  retries_.emplace(c.retry_at, c.id);
}

Status UpgradeScheduler::SetBuilds(std::vector<ClientBuild> builds) {
  std::map<std::string, ClientBuild> next;
  for (auto& b : builds) {
    const std::string where = "client build for platform " + Quoted(b.platform);
    if (!ValidPlatform(b.platform)) return Error(Errc::kInvalidArgument, where + ": bad platform name");
    auto v = packages::Version::Parse(b.version);
    if (!v.ok()) return v.error().Wrap(where + ": version");
    if (b.length == 0) return Error(Errc::kInvalidArgument, where + ": length is 0");
    if (!IsLowerHex(b.sha256, 64)) return Error(Errc::kInvalidArgument, where + ": sha256 is not 64 lower-case hex");
    if (b.signature.empty() || b.signature.size() > 4096)
      return Error(Errc::kInvalidArgument, where + ": signature is empty or over 4 KiB");
    if (b.path.empty()) return Error(Errc::kInvalidArgument, where + ": no file path");
    if (next.count(b.platform) != 0) return Error(Errc::kInvalidArgument, where + ": given twice");
    std::string platform = b.platform;
    next.emplace(std::move(platform), std::move(b));
  }
  builds_ = std::move(next);
  retries_.clear();
  std::vector<Client*> all;
  all.reserve(clients_.size());
  for (auto& [id, c] : clients_) all.push_back(c.get());
  std::sort(all.begin(), all.end(), [](const Client* a, const Client* b) { return a->id < b->id; });
  for (Client* c : all) {
    c->attempts = 0;
    c->given_up = false;
    c->fail_reason.clear();
    if (c->state == ClientState::kUpgrading) {
      const ClientBuild* b = BuildFor(c->platform);
      if (b != nullptr && b->version == c->target) continue;  // same build: let it run
      EndAttempt(*c);
      link_.CancelUpgrade(c->id, "");
      c->state = ClientState::kPending;  // so Evaluate decides afresh
    }
    if (c->state == ClientState::kPending && !Outdated(*c)) Dequeue(*c);
    c->state = c->online ? ClientState::kCurrent : ClientState::kOffline;
    Evaluate(*c, false);
  }
  Pump();
  return OkStatus();
}

Status UpgradeScheduler::SetMaxConcurrent(std::uint32_t n) {
  SchedulerSettings s = settings_;
  s.max_concurrent_client_upgrades = n;
  UPK_TRY(ValidateSettings(s));
  settings_ = s;
  Pump();
  return OkStatus();
}

Status UpgradeScheduler::SetBandwidth(std::uint64_t bytes_per_second) {
  SchedulerSettings s = settings_;
  s.max_client_upgrade_bandwidth = bytes_per_second;
  UPK_TRY(ValidateSettings(s));
  Refill(mono_.Now());  // budget earned so far at the old rate
  settings_ = s;
  tokens_ = std::min(tokens_, Capacity());
  Pump();
  return OkStatus();
}

Status UpgradeScheduler::ClientCheckedIn(const CheckIn& in) {
  if (in.id.empty() || in.id.size() > kMaxClientIdBytes || in.id.find('\0') != std::string::npos)
    return Error(Errc::kInvalidArgument, "check-in: client id is empty, over 256 bytes or has a NUL byte");
  if (in.platform.size() > kMaxFieldBytes || in.version.size() > kMaxFieldBytes)
    return Error(Errc::kInvalidArgument, "check-in of client " + Quoted(in.id) + ": platform or version over 64 bytes");
  auto it = clients_.find(in.id);
  if (it == clients_.end()) {
    if (clients_.size() >= kMaxClients)
      return Error(Errc::kLimit, "check-in of client " + Quoted(in.id) + ": more than 1000000 clients");
    auto c = std::make_unique<Client>();
    c->id = in.id;
    it = clients_.emplace(in.id, std::move(c)).first;
  }
  Client& c = *it->second;
  c.platform = in.platform;
  c.version = in.version;
  c.online = true;
  c.last_checkin = wall_.Now();
  bool front = false;
  if (c.state == ClientState::kUpgrading) {
    // Reconnected mid-upgrade (its old connection is gone): not its fault, resume first.
    EndAttempt(c);
    link_.CancelUpgrade(c.id, "");
    c.state = ClientState::kPending;
    front = true;
  }
  if (c.state != ClientState::kPending) Dequeue(c);
  Evaluate(c, front);
  Pump();
  return OkStatus();
}

Status UpgradeScheduler::ClientKnown(const CheckIn& in, std::optional<SysTime> last_checkin) {
  if (in.id.empty() || in.id.size() > kMaxClientIdBytes || in.id.find('\0') != std::string::npos)
    return Error(Errc::kInvalidArgument, "known client: id is empty, over 256 bytes or has a NUL byte");
  if (in.platform.size() > kMaxFieldBytes || in.version.size() > kMaxFieldBytes)
    return Error(Errc::kInvalidArgument, "known client " + Quoted(in.id) + ": platform or version over 64 bytes");
  if (clients_.count(in.id) != 0) return OkStatus();
  if (clients_.size() >= kMaxClients) return Error(Errc::kLimit, "known client " + Quoted(in.id) + ": more than 1000000 clients");
  auto c = std::make_unique<Client>();
  c->id = in.id;
  c->platform = in.platform;
  c->version = in.version;
  if (last_checkin) c->last_checkin = *last_checkin;
  Client& ref = *c;
  clients_.emplace(in.id, std::move(c));
  Evaluate(ref, false);
  return OkStatus();
}

void UpgradeScheduler::ClientGone(const std::string& id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  if (c.state == ClientState::kUpgrading) {
    EndAttempt(c);
    link_.CancelUpgrade(c.id, "");
    c.state = ClientState::kOffline;
  }
  c.online = false;
  Evaluate(c, false);
  Pump();
}

ConsoleAnswer UpgradeScheduler::ConsoleAsked(const std::string& id) {
  ConsoleAnswer a;
  auto it = clients_.find(id);
  if (it == clients_.end()) return a;
  Client& c = *it->second;
  if (c.state == ClientState::kPending && c.qpos) {
    queue_.splice(queue_.begin(), queue_, *c.qpos);
    a.kind = ConsoleAnswer::Kind::kMovedToFront;
    Pump();
    if (c.state == ClientState::kUpgrading) a.kind = ConsoleAnswer::Kind::kUpgrading;
  } else if (c.state == ClientState::kUpgrading) {
    a.kind = ConsoleAnswer::Kind::kUpgrading;
  }
  if (a.kind == ConsoleAnswer::Kind::kUpgrading) {
    const double share = static_cast<double>(settings_.max_client_upgrade_bandwidth) /
                         static_cast<double>(std::max<std::size_t>(1, active_.size()));
    const double left = static_cast<double>(c.length - c.accepted);
    a.estimated_wait = milliseconds(static_cast<std::int64_t>(left / share * 1000.0));
  }
  return a;
}

Status UpgradeScheduler::BuildRequested(const std::string& id, std::string_view version, std::uint64_t offset) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return Error(Errc::kNotFound, "BUILD_GET from unknown client " + Quoted(id));
  Client& c = *it->second;
  const std::string where = "BUILD_GET from client " + Quoted(id);
  if (c.state != ClientState::kUpgrading) return Error(Errc::kVerification, where + ": no upgrade running");
  std::string why;
  if (c.got_get) {
    why = "BUILD_GET out of turn";
  } else if (version != c.target) {
    why = "BUILD_GET for version " + Quoted(version) + ", expected '" + c.target + "'";
  } else if (offset > c.length) {
    why = "BUILD_GET offset " + std::to_string(offset) + " beyond length " + std::to_string(c.length);
  }
  const MonoTime now = mono_.Now();
  if (!why.empty()) {
    link_.CancelUpgrade(c.id, "");
    Fail(c, why, now);
    Pump();
    return Error(Errc::kVerification, where + ": " + why);
  }
  c.got_get = true;
  c.granted = c.accepted = offset;
  c.last_progress = now;
  Pump();
  return OkStatus();
}

void UpgradeScheduler::ChunkAccepted(const std::string& id, std::uint64_t bytes) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return;
  Client& c = *it->second;
  if (c.state != ClientState::kUpgrading || !c.got_get) return;  // late completion of a cancelled attempt
  c.accepted = std::min(c.granted, c.accepted + bytes);
  c.last_progress = mono_.Now();
  Pump();
}

Status UpgradeScheduler::BuildReported(const std::string& id, const BuildReport& r) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return Error(Errc::kNotFound, "BUILD_REPORT from unknown client " + Quoted(id));
  Client& c = *it->second;
  const std::string where = "BUILD_REPORT from client " + Quoted(id);
  if (c.state != ClientState::kUpgrading) return Error(Errc::kVerification, where + ": no upgrade running");
  std::string why;
  if (r.version != c.target) {
    why = "corrupt build report: version " + Quoted(r.version) + ", expected '" + c.target + "'";
  } else if (r.result == "failed") {
    why = "client reports failure: " + CleanText(r.detail);
  } else if (r.result != "installed") {
    why = "corrupt build report: result " + Quoted(r.result);
  } else if (!c.got_get || c.accepted < c.length) {
    why = "corrupt build report: installed before the whole build was sent";
  }
  const MonoTime now = mono_.Now();
  if (!why.empty()) {
    const bool client_failure = r.result == "failed" && r.version == c.target;
    link_.CancelUpgrade(c.id, "");
    Fail(c, why, now);
    Pump();
    if (client_failure) return OkStatus();  // a well-formed report of a failure is not an error
    return Error(Errc::kVerification, where + ": " + why);
  }
  EndAttempt(c);
  c.version = c.target;
  c.target.clear();
  c.state = ClientState::kCurrent;
  c.attempts = 0;
  c.fail_reason.clear();
  counters_.upgrades_installed++;
  Pump();
  return OkStatus();
}

void UpgradeScheduler::Tick() { Pump(); }

Status UpgradeScheduler::Retry(const std::string& id) {
  auto it = clients_.find(id);
  if (it == clients_.end()) return Error(Errc::kNotFound, "retry: unknown client " + Quoted(id));
  Client& c = *it->second;
  if (c.state != ClientState::kFailed && !(c.state == ClientState::kOffline && c.attempts > 0))
    return Error(Errc::kInvalidArgument, "retry: client " + Quoted(id) + " has not failed");
  c.attempts = 0;
  c.given_up = false;
  c.fail_reason.clear();
  c.retry_at = {};
  c.state = c.online ? ClientState::kCurrent : ClientState::kOffline;
  Evaluate(c, false);
  Pump();
  return OkStatus();
}

// The one place that starts upgrades and grants bytes; every event ends here.
void UpgradeScheduler::Pump() {
  const MonoTime now = mono_.Now();
  Refill(now);

  // Stalls: the client owes us something (BUILD_GET, reading a chunk, the report) for too long.
  for (auto it = active_.begin(); it != active_.end();) {
    Client& c = **it++;
    const bool owes = !c.got_get || c.accepted < c.granted || c.accepted == c.length;
    if (owes && now - c.last_progress > settings_.stall_timeout) {
      link_.CancelUpgrade(c.id, "upgrade_stalled");
      Fail(c, "stalled", now);
    }
  }

  // Retries that are due.
  while (!retries_.empty() && retries_.begin()->first <= now) {
    const std::string id = retries_.begin()->second;
    const MonoTime when = retries_.begin()->first;
    retries_.erase(retries_.begin());
    auto it = clients_.find(id);
    if (it == clients_.end()) continue;
    Client& c = *it->second;
    if (c.state == ClientState::kFailed && !c.given_up && c.retry_at == when) Evaluate(c, false);
  }

  // New upgrades while under the (possibly lowered) cap.
  while (active_.size() < settings_.max_concurrent_client_upgrades && !queue_.empty()) {
    Client& c = *queue_.front();
    Dequeue(c);
    const ClientBuild* b = BuildFor(c.platform);
    if (b == nullptr) continue;  // cannot happen: queued clients have a build
    c.state = ClientState::kUpgrading;
    c.got_get = false;
    c.length = b->length;
    c.granted = c.accepted = 0;
    c.last_progress = now;
    c.apos = active_.insert(active_.end(), &c);
    counters_.upgrades_started++;
    link_.StartUpgrade(c.id, *b);
  }

  // Grants, round-robin over the active clients, while the bucket holds a whole grant.
  const std::uint32_t chunk = ChunkSize();
  const std::uint64_t window = std::uint64_t{chunk} * settings_.window_chunks;
  bool granted_any = true;
  while (granted_any && !active_.empty()) {
    granted_any = false;
    for (std::size_t n = active_.size(); n > 0; --n) {
      Client& c = *active_.front();
      if (c.got_get && c.granted < c.length && c.granted - c.accepted < window) {
        const auto len = static_cast<std::uint32_t>(
            std::min<std::uint64_t>({chunk, c.length - c.granted, window - (c.granted - c.accepted)}));
        if (tokens_ < static_cast<double>(len)) return;  // the bucket is empty for now
        tokens_ -= len;
        if (c.accepted == c.granted) c.last_progress = now;  // waiting on us until now
        const std::uint64_t offset = c.granted;
        c.granted += len;
        counters_.bytes_granted += len;
        granted_any = true;
        link_.SendChunk(c.id, *BuildFor(c.platform), offset, len);
      }
      active_.splice(active_.end(), active_, active_.begin());  // rotate for fairness
      c.apos = std::prev(active_.end());
    }
  }
}

bool UpgradeScheduler::Busy() const { return !queue_.empty() || !active_.empty() || !retries_.empty(); }

std::optional<MonoTime> UpgradeScheduler::NextWakeup() const {
  std::optional<MonoTime> next;
  auto consider = [&](MonoTime t) {
    if (!next || t < *next) next = t;
  };
  if (!retries_.empty()) consider(retries_.begin()->first);
  const std::uint32_t chunk = ChunkSize();
  const double rate = static_cast<double>(settings_.max_client_upgrade_bandwidth);
  for (const Client* c : active_) {
    const bool owes = !c->got_get || c->accepted < c->granted || c->accepted == c->length;
    if (owes) consider(c->last_progress + settings_.stall_timeout + nanoseconds(1));
    if (c->got_get && c->granted < c->length) {
      const double need = std::max(0.0, static_cast<double>(chunk) - tokens_);
      consider(last_refill_ + nanoseconds(static_cast<std::int64_t>(std::ceil(need / rate * 1e9))));
    }
  }
  return next;
}

ClientStatus UpgradeScheduler::StatusOf(const Client& c) const {
  ClientStatus s;
  s.id = c.id;
  s.platform = c.platform;
  s.version = c.version;
  s.state = c.state;
  s.target_version = c.target;
  s.attempts = c.attempts;
  s.given_up = c.given_up;
  s.last_checkin = c.last_checkin;
  switch (c.state) {
    case ClientState::kCurrent:
      if (BuildFor(c.platform) == nullptr && !builds_.empty()) s.detail = "no client build for this platform";
      break;
    case ClientState::kPending: s.detail = "version " + c.target; break;
    case ClientState::kUpgrading:
      s.bytes_sent = c.granted;
      s.bytes_total = c.length;
      s.detail = std::to_string(c.granted) + "/" + std::to_string(c.length) + " bytes";
      break;
    case ClientState::kFailed:
      if (c.given_up) {
        s.detail = "gave up after " + std::to_string(c.attempts) + " attempts: " + c.fail_reason;
      } else if (c.attempts > 0) {
        s.detail = c.fail_reason + " (attempt " + std::to_string(c.attempts) + " of " +
                   std::to_string(settings_.max_attempts) + ", retried later)";
      } else {
        s.detail = c.fail_reason;
      }
      break;
    case ClientState::kOffline:
      if (!c.target.empty()) s.detail = "upgrade pending: version " + c.target;
      if (c.attempts > 0) s.detail += (s.detail.empty() ? "" : "; ") + std::string("last failure: ") + c.fail_reason;
      break;
  }
  return s;
}

Expected<ClientStatus> UpgradeScheduler::Find(const std::string& id) const {
  auto it = clients_.find(id);
  if (it == clients_.end()) return Error(Errc::kNotFound, "unknown client " + Quoted(id));
  return StatusOf(*it->second);
}

std::vector<ClientStatus> UpgradeScheduler::Snapshot() const {
  std::vector<ClientStatus> out;
  out.reserve(clients_.size());
  for (const auto& [id, c] : clients_) out.push_back(StatusOf(*c));
  std::sort(out.begin(), out.end(), [](const ClientStatus& a, const ClientStatus& b) { return a.id < b.id; });
  return out;
}

SchedulerStats UpgradeScheduler::Stats() const {
  SchedulerStats s = counters_;
  s.clients = clients_.size();
  for (const auto& [id, c] : clients_) {
    switch (c->state) {
      case ClientState::kCurrent: s.current++; break;
      case ClientState::kPending: s.pending++; break;
      case ClientState::kUpgrading: s.upgrading++; break;
      case ClientState::kFailed: s.failed++; break;
      case ClientState::kOffline: s.offline++; break;
    }
  }
  return s;
}

std::vector<std::string> UpgradeScheduler::QueueOrder() const {
  std::vector<std::string> out;
  out.reserve(queue_.size());
  for (const Client* c : queue_) out.push_back(c->id);
  return out;
}

std::string UpgradeScheduler::ExportCsv() const {
  std::string out = "\"id\",\"platform\",\"version\",\"state\",\"detail\",\"last_checkin\"\r\n";
  for (const ClientStatus& s : Snapshot()) {
    out += CsvField(s.id) + "," + CsvField(s.platform) + "," + CsvField(s.version) + "," +
           CsvField(ClientStateName(s.state)) + "," + CsvField(s.detail) + "," +
           CsvField(FormatTimestamp(s.last_checkin)) + "\r\n";
  }
  return out;
}

std::string UpgradeScheduler::ExportJson() const {
  Json list = Json::array();
  for (const ClientStatus& s : Snapshot()) {
    Json o = Json::object();
    o["id"] = s.id;
    o["platform"] = s.platform;
    o["version"] = s.version;
    o["state"] = ClientStateName(s.state);
    o["detail"] = s.detail;
    o["target_version"] = s.target_version;
    o["last_checkin"] = FormatTimestamp(s.last_checkin);
    list.push_back(std::move(o));
  }
  Json doc = Json::object();
  doc["clients"] = std::move(list);
  return doc.dump(-1, ' ', false, Json::error_handler_t::replace);
}

}  // namespace upkeep::relay
