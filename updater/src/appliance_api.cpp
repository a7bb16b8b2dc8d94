// The appliance API (docs/updater-api.md, "Appliance API"; docs/updater.md): enrolment passed
// through to the keyserver, signed check-ins answered with a director-signed assignment, and
// idempotent event reports that drive rollout thresholds.
//
// Every request is hostile until its signature checks out: headers are checked before any
// lookup, unknown appliances cost one keyserver lookup (then a short negative cache), and bodies
// are bounded per route and validated field by field before anything is written.
#include <array>
#include <charconv>
#include <condition_variable>
#include <deque>
#include <set>
#include <thread>
#include <unordered_map>

#include "fleet_state.hpp"
#include "portal_shared.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::updater {

using net::ApiError;
using net::Method;
using net::Request;
using net::Response;

namespace {

constexpr std::size_t kEnrolBodyBytes = 64 * 1024;
constexpr std::size_t kCheckinBodyBytes = 256 * 1024;
constexpr std::size_t kMaxInstalled = 1000;
constexpr std::size_t kMaxAgentVersion = 64;
constexpr std::size_t kMaxEvents = 100;
constexpr std::size_t kMaxEventDetailBytes = 16 * 1024;
// One events request: agents with long log tails send fewer events per request.
constexpr std::size_t kEventsBodyBytes = 4u << 20;
constexpr std::chrono::hours kReuseMargin{24};
constexpr std::size_t kMaxNegative = 10000;
constexpr std::chrono::seconds kNegativeTtl{10};
// Check-ins that need the database or the keyserver run on this many threads of the API's own
// pool, at most kSlowQueue of them waiting; beyond that, 503 + Retry-After.
constexpr unsigned kSlowThreads = 4;
constexpr std::size_t kSlowQueue = 1024;

bool Printable(std::string_view s) {
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) < 0x20 || static_cast<unsigned char>(ch) > 0x7e) return false;
  }
  return true;
}

Response Invalid(std::string_view field, std::string_view why) {
  return ApiError(400, "invalid_field", "field '" + std::string(field) + "': " + std::string(why));
}

// A small bounded pool for the check-ins that must block (database, keyserver): the check-in
// route is async so the warm path is answered on the I/O thread. The state is shared with the
// threads so a thread that ends up destroying the pool (the last reference to the API dropped
// while it ran a task, only possible at shutdown) detaches instead of joining itself.
class WorkQueue {
 public:
  explicit WorkQueue(unsigned threads) : state_(std::make_shared<State>()) {
    for (unsigned i = 0; i < threads; ++i) {
      threads_.emplace_back([st = state_] { Run(*st); });
    }
  }
  WorkQueue(const WorkQueue&) = delete;
  WorkQueue& operator=(const WorkQueue&) = delete;
  ~WorkQueue() { Stop(); }

  // Drops what is still queued (their Responders answer 500 when destroyed) and joins the
  // threads. Idempotent. The service calls it at shutdown, before the database pool and the
  // keyserver client it borrows go away.
  void Stop() {
    std::deque<std::function<void()>> dropped;
    {
      std::lock_guard lock(state_->mu);
      state_->stopping = true;
      dropped.swap(state_->tasks);
    }
    state_->cv.notify_all();
    for (auto& t : threads_) {
      if (!t.joinable()) continue;
      if (t.get_id() == std::this_thread::get_id()) {
        t.detach();
      } else {
        t.join();
      }
    }
  }

  // False when kSlowQueue tasks are already waiting.
  bool Post(std::function<void()> task) {
    {
      std::lock_guard lock(state_->mu);
      if (state_->stopping || state_->tasks.size() >= kSlowQueue) return false;
      state_->tasks.push_back(std::move(task));
    }
    state_->cv.notify_one();
    return true;
  }

 private:
  struct State {
    std::mutex mu;
    std::condition_variable cv;
    std::deque<std::function<void()>> tasks;
    bool stopping = false;
  };
  static void Run(State& st) {
    std::unique_lock lock(st.mu);
    while (true) {
      st.cv.wait(lock, [&] { return st.stopping || !st.tasks.empty(); });
      if (st.stopping) return;
      auto task = std::move(st.tasks.front());
      st.tasks.pop_front();
      lock.unlock();
      task();
      task = nullptr;
      lock.lock();
    }
  }
  std::shared_ptr<State> state_;
  std::vector<std::thread> threads_;
};

struct Authenticated {
  std::shared_ptr<const CachedAppliance> appliance;
  bool is_new = false;             // known to the keyserver, not yet to our table
  std::uint64_t epoch_at_load = 0;  // for caching a new one
};

struct ApplianceApi {
  std::shared_ptr<Context> ctx;
  FleetState* fleet;
  trust::ReplayCache replay;
  net::Counter* checkins = nullptr;
  net::Counter* signed_total = nullptr;
  std::map<std::string, net::Counter*, std::less<>> events_total;

  std::mutex negative_mu;
  std::map<std::string, std::chrono::steady_clock::time_point, std::less<>> negative;  // unknown ids, briefly

  // The warm path's memo: the plan hash PlanCheckin computed for an appliance in a given installed
  // state. Valid while that same appliance object and catalog snapshot are the current ones (both
  // are immutable; any change replaces them), so a steady-state check-in skips the planner.
  // Identity goes through weak_ptrs: two live objects never share an address.
  struct WarmMemo {
    std::weak_ptr<const CachedAppliance> appliance;
    std::weak_ptr<const CatalogSnapshot> snapshot;
    std::string state_digest;
    std::string plan_hash;
  };
  struct WarmShard {
    std::mutex mu;
    std::unordered_map<std::string, WarmMemo> memos;
  };
  static constexpr std::size_t kWarmShardCap = 1 << 16;  // per shard; a full shard starts over
  std::array<WarmShard, 64> warm;
  WorkQueue slow{kSlowThreads};  // last: its threads stop before anything above is destroyed

  ApplianceApi(std::shared_ptr<Context> c, FleetState* f)
      : ctx(std::move(c)), fleet(f), replay(ctx->config.replay_cache_entries, ctx->config.request_skew) {}

  bool KnownUnknown(const std::string& id) {
    std::lock_guard lock(negative_mu);
    auto it = negative.find(id);
    if (it == negative.end()) return false;
    if (it->second > std::chrono::steady_clock::now()) return true;
    negative.erase(it);
    return false;
  }
  void RememberUnknown(const std::string& id) {
    std::lock_guard lock(negative_mu);
    if (negative.size() >= kMaxNegative) negative.clear();
    negative[id] = std::chrono::steady_clock::now() + kNegativeTtl;
  }

  // The four signature headers, checked before any lookup.
  static std::variant<trust::RequestSignature, Response> SignatureHeaders(const Request& req) {
    trust::RequestSignature sig;
    auto id = req.Header(trust::kApplianceHeader);
    auto ts = req.Header(trust::kTimestampHeader);
    auto nonce = req.Header(trust::kNonceHeader);
    auto signature = req.Header(trust::kSignatureHeader);
    if (!id || !ts || !nonce || !signature) {
      return ApiError(400, "malformed_signature",
                      "requests must carry X-Upkeep-Appliance, X-Upkeep-Timestamp, X-Upkeep-Nonce and X-Upkeep-Signature");
    }
    if (!trust::IsValidApplianceId(*id)) return ApiError(400, "malformed_signature", "X-Upkeep-Appliance is not an appliance id");
    sig.appliance_id = std::string(*id);
    sig.timestamp = std::string(*ts);
    sig.nonce = std::string(*nonce);
    sig.signature_hex = std::string(*signature);
    return sig;
  }

  // Headers, lookup (may read the database or ask the keyserver), signature.
  std::variant<Authenticated, Response> Authenticate(const Request& req) {
    auto parsed = SignatureHeaders(req);
    if (auto* r = std::get_if<Response>(&parsed)) return std::move(*r);
    const trust::RequestSignature& sig = std::get<trust::RequestSignature>(parsed);

    Authenticated auth;
    auth.appliance = fleet->Find(sig.appliance_id);
    if (!auth.appliance) {
      auth.epoch_at_load = fleet->epoch();
      auto loaded = fleet->Load(sig.appliance_id);
      if (!loaded.ok()) return ctx->DbFailure("appliance lookup", loaded.error());
      if (*loaded) {
        auth.appliance = *loaded;
        fleet->Remember(auth.appliance, auth.epoch_at_load);
      } else {
        if (KnownUnknown(sig.appliance_id)) return ApiError(404, "unknown_appliance", "appliance is not enrolled");
        // First contact: the keyserver is the authority on who is enrolled.
        auto record = ctx->keyserver.GetAppliance(sig.appliance_id);
        if (!record.ok()) {
          if (record.error().code() == Errc::kNotFound) {
            RememberUnknown(sig.appliance_id);
            return ApiError(404, "unknown_appliance", "appliance is not enrolled");
          }
          return ctx->KeyserverFailure("appliance lookup", record.error());
        }
        if (record->revoked) return ApiError(403, "appliance_revoked", "this appliance has been revoked");
        auto a = ApplianceFromRecord(sig.appliance_id, *record);
        if (!a.ok()) return ctx->KeyserverFailure("appliance lookup", a.error());
        auth.appliance = std::move(a).value();
        auth.is_new = true;
      }
    }
    if (auto r = Verify(req, sig, *auth.appliance)) return std::move(*r);
    return auth;
  }

  // The revocation flag and the signature (timestamp window, replay cache): memory only.
  std::optional<Response> Verify(const Request& req, const trust::RequestSignature& sig, const CachedAppliance& appliance) {
    if (appliance.revoked) return ApiError(403, "appliance_revoked", "this appliance has been revoked");

    trust::RequestVerifier verifier(ctx->clock, replay);
    trust::RequestCheck failed = trust::RequestCheck::kOk;
    auto st = verifier.Verify(trust::RequestToSign{req.method_name(), req.target(), req.body()}, sig, appliance.key,
                              &failed);
    if (!st.ok()) {
      switch (failed) {
        case trust::RequestCheck::kMalformed:
          return ApiError(400, "malformed_signature", st.error().message());
        case trust::RequestCheck::kStaleTimestamp:
          return ApiError(401, "stale_timestamp", st.error().message());
        case trust::RequestCheck::kReplayed:
          return ApiError(401, "replayed", st.error().message());
        case trust::RequestCheck::kBusy: {
          Response r = ApiError(503, "busy", "too many requests in flight, try again");
          r.SetHeader("Retry-After", "5");
          return r;
        }
        default:
          return ApiError(401, "bad_signature", st.error().message());
      }
    }
    return std::nullopt;
  }

  Response Enrol(const Request& req) const {
    auto answer = ctx->keyserver.Enrol(req.body());
    if (!answer.ok()) return ctx->KeyserverFailure("enrol", answer.error());
    if (answer->status < 200 || answer->status > 599) {
      return ApiError(502, "keyserver_refused", "keyserver answered with status " + std::to_string(answer->status));
    }
    if (answer->status >= 200 && answer->status < 300) {
      // For support's search by licence; a failure here must not fail the enrolment.
      if (auto st = RecordEnrolmentLicence(ctx->pool, answer->body, ctx->clock.Now()); !st.ok()) {
        ctx->Log("enrol: licence reference not recorded: " + st.error().message());
      }
    }
    // Verbatim: the keyserver's codes (unknown_licence, licence_bound, ...) are the contract.
    Response r(answer->status);
    r.body = std::move(answer->body);
    r.SetHeader("Content-Type", "application/json");
    return r;
  }

  struct CheckinInput {
    packages::Installed installed;
    Json installed_clean = Json::object();
    std::string agent;
    SysTime appliance_time{};
  };

  // The body, field by field: memory only.
  static std::variant<CheckinInput, Response> ParseCheckin(const Request& req) {
    Json body;
    if (auto r = net::ParseJsonObject(req, {"installed", "agent_version", "time"}, body)) return *r;
    auto installed_json = GetObject(body, "installed");
    if (!installed_json.ok()) return net::BadField(installed_json.error());
    if ((*installed_json)->size() > kMaxInstalled) {
      return Invalid("installed", "at most " + std::to_string(kMaxInstalled) + " packages");
    }
    CheckinInput in;
    for (const auto& [name, value] : (*installed_json)->items()) {
      if (!packages::IsValidPackageName(name)) return Invalid("installed", "'" + name + "' is not a package name");
      if (!value.is_string()) return Invalid("installed." + name, "must be a version string");
      auto version = packages::Version::Parse(value.get_ref<const std::string&>());
      if (!version.ok()) return Invalid("installed." + name, version.error().message());
      in.installed_clean[name] = version->ToString();
      in.installed.emplace(name, *std::move(version));
    }
    auto agent = GetString(body, "agent_version");
    if (!agent.ok()) return net::BadField(agent.error());
    if (agent->empty() || agent->size() > kMaxAgentVersion || !Printable(*agent)) {
      return Invalid("agent_version", "must be 1..64 printable ASCII characters");
    }
    in.agent = *agent;
    auto time_text = GetString(body, "time");
    if (!time_text.ok()) return net::BadField(time_text.error());
    auto appliance_time = ParseTimestamp(*time_text);
    if (!appliance_time.ok()) return Invalid("time", appliance_time.error().message());
    in.appliance_time = *appliance_time;
    return in;
  }

  struct CheckinPlan {
    trust::Assignment assignment;
    std::string plan_hash;
    std::vector<std::pair<std::int64_t, int>> new_members;  // (rollout, wave) to record
    SysTime now{};
  };

  // What to assign now, from the current catalog snapshot: memory only (the caller has run
  // MaybeRefresh(), or found no refresh due).
  std::variant<CheckinPlan, Response> PlanCheckin(const CachedAppliance& appliance, const CheckinInput& in) const {
    return PlanCheckin(fleet->snapshot(), appliance, in);
  }
  std::variant<CheckinPlan, Response> PlanCheckin(const std::shared_ptr<const CatalogSnapshot>& snapshot,
                                                  const CachedAppliance& appliance, const CheckinInput& in) const {
    CheckinPlan out;
    out.now = ctx->clock.Now();
    auto planned = PlanAppliance(*snapshot, appliance, in.installed, out.now, ctx->config.assignment_validity);
    if (!planned.ok()) return ApiError(500, "internal", planned.error().message());
    out.assignment = std::move(planned->assignment);
    out.plan_hash = std::move(planned->plan_hash);
    out.new_members = std::move(planned->new_members);
    return out;
  }

  // The steady state: same state, same plan, a day or more of validity left -> the stored
  // envelope, no keyserver call.
  static bool Reusable(const CachedAppliance& appliance, const CheckinPlan& plan) {
    return appliance.assignment && appliance.assignment->state_digest == plan.assignment.state_digest &&
           appliance.assignment->plan_hash == plan.plan_hash && appliance.assignment->expires - plan.now > kReuseMargin;
  }

  WarmShard& ShardOf(const std::string& appliance_id) {
    return warm[std::hash<std::string>{}(appliance_id) % warm.size()];
  }

  // The memoised plan hash, when it was computed for this very appliance object, snapshot and state.
  std::optional<std::string> WarmHash(const std::shared_ptr<const CachedAppliance>& appliance,
                                      const std::shared_ptr<const CatalogSnapshot>& snapshot,
                                      const std::string& state_digest) {
    WarmShard& shard = ShardOf(appliance->appliance_id);
    std::lock_guard lock(shard.mu);
    auto it = shard.memos.find(appliance->appliance_id);
    if (it == shard.memos.end() || it->second.state_digest != state_digest) return std::nullopt;
    if (it->second.appliance.lock() != appliance || it->second.snapshot.lock() != snapshot) return std::nullopt;
    return it->second.plan_hash;
  }

  void RememberWarm(const std::shared_ptr<const CachedAppliance>& appliance,
                    const std::shared_ptr<const CatalogSnapshot>& snapshot, const CheckinPlan& plan) {
    WarmShard& shard = ShardOf(appliance->appliance_id);
    std::lock_guard lock(shard.mu);
    if (shard.memos.size() >= kWarmShardCap) shard.memos.clear();
    WarmMemo& m = shard.memos[appliance->appliance_id];
    m.appliance = appliance;
    m.snapshot = snapshot;
    m.state_digest = plan.assignment.state_digest;
    m.plan_hash = plan.plan_hash;
  }

  void Record(const CachedAppliance& appliance, CheckinInput&& in, const CheckinPlan& plan) {
    Record(appliance, std::move(in), plan.assignment.state_digest, plan.now);
  }
  void Record(const CachedAppliance& appliance, CheckinInput&& in, const std::string& state_digest, SysTime now) {
    PendingCheckin pending;
    pending.installed = std::move(in.installed_clean);
    pending.state_digest = state_digest;
    pending.agent_version = std::move(in.agent);
    pending.at = now;
    pending.clock_offset_seconds = (in.appliance_time - now).count();
    fleet->RecordCheckin(appliance.appliance_id, std::move(pending));
    if (checkins) checkins->Inc();
  }

  // The stored envelope bytes spliced in as they are: the same bytes Response::Json would give
  // for {"assignment": parsed envelope, ...} (cached envelopes are our own dump() output, see
  // FleetState::Load), without a parse and a dump per answer. Keys in nlohmann's (sorted) order.
  Response Answer(const std::string& envelope, SysTime now) const {
    static constexpr std::string_view kHead = "{\"assignment\":";
    static constexpr std::string_view kInterval = ",\"next_checkin_seconds\":";
    static constexpr std::string_view kTime = ",\"server_time\":\"";
    const std::string server_time = FormatTimestamp(now);
    char interval[24];
    auto [end, ec] = std::to_chars(interval, interval + sizeof interval, ctx->config.checkin_interval.count());
    (void)ec;
    Response r(200);
    r.body.reserve(kHead.size() + envelope.size() + kInterval.size() + static_cast<std::size_t>(end - interval) +
                   kTime.size() + server_time.size() + 2);
    r.body.append(kHead).append(envelope).append(kInterval).append(interval, end).append(kTime).append(server_time).append("\"}");
    r.headers.emplace_back("Content-Type", "application/json");
    return r;
  }

  // On the I/O thread: the warm check-in (cached appliance, reusable assignment with its envelope
  // in memory, no rollout membership to record) is answered here; anything that needs the
  // database or the keyserver goes to the pool, past the steps already done.
  void CheckinAsync(const Request& req, net::Responder responder) {
    auto parsed = SignatureHeaders(req);
    if (auto* r = std::get_if<Response>(&parsed)) return responder.Send(std::move(*r));
    const trust::RequestSignature& sig = std::get<trust::RequestSignature>(parsed);
    std::shared_ptr<const CachedAppliance> appliance = fleet->Find(sig.appliance_id);
    if (!appliance) {
      // Unknown here: a database row, the negative cache or the keyserver decides.
      return Offload(std::move(responder), [this, &req] { return Checkin(req); });
    }
    if (auto r = Verify(req, sig, *appliance)) return responder.Send(std::move(*r));
    auto input = ParseCheckin(req);
    if (auto* r = std::get_if<Response>(&input)) return responder.Send(std::move(*r));
    auto in = std::make_shared<CheckinInput>(std::get<CheckinInput>(std::move(input)));
    Authenticated auth;
    auth.appliance = std::move(appliance);
    if (!fleet->RefreshDue()) {
      const CachedAppliance& a = *auth.appliance;
      auto snapshot = fleet->snapshot();
      // The steady state: same appliance, catalog and installed state as last time -> the plan
      // hash is known, and if the kept assignment still matches it, its envelope is the answer.
      const std::string digest = trust::StateDigest(in->installed);
      if (auto hash = WarmHash(auth.appliance, snapshot, digest)) {
        const SysTime now = ctx->clock.Now();
        if (a.assignment && a.assignment->envelope && a.assignment->state_digest == digest &&
            a.assignment->plan_hash == *hash && a.assignment->expires - now > kReuseMargin) {
          Response answer = Answer(*a.assignment->envelope, now);
          Record(a, std::move(*in), digest, now);
          return responder.Send(std::move(answer));
        }
      }
      auto planned = PlanCheckin(snapshot, a, *in);
      if (auto* r = std::get_if<Response>(&planned)) return responder.Send(std::move(*r));
      const CheckinPlan& plan = std::get<CheckinPlan>(planned);
      if (plan.new_members.empty()) RememberWarm(auth.appliance, snapshot, plan);
      if (plan.new_members.empty() && Reusable(a, plan) && a.assignment->envelope) {
        Response answer = Answer(*a.assignment->envelope, plan.now);
        Record(a, std::move(*in), plan);
        return responder.Send(std::move(answer));
      }
    }
    Offload(std::move(responder), [this, auth = std::move(auth), in] { return Continue(auth, std::move(*in)); });
  }

  // Runs `work` on the pool and answers with its response; 503 + Retry-After when the queue is full.
  template <typename F>
  void Offload(net::Responder responder, F work) {
    auto job = std::make_shared<std::pair<net::Responder, F>>(std::move(responder), std::move(work));
    if (!slow.Post([job] {
          Response r;
          try {
            r = job->second();
          } catch (...) {
            r = Response::JsonError(500, "internal", "handler failed");
          }
          job->first.Send(std::move(r));
        })) {
      Response r = ApiError(503, "overloaded", "server busy; retry later");
      r.SetHeader("Retry-After", "1");
      job->first.Send(std::move(r));
    }
  }

  // The whole check-in, blocking allowed (pool threads only).
  Response Checkin(const Request& req) {
    auto authed = Authenticate(req);
    if (auto* r = std::get_if<Response>(&authed)) return std::move(*r);
    Authenticated& auth = std::get<Authenticated>(authed);
    auto input = ParseCheckin(req);
    if (auto* r = std::get_if<Response>(&input)) return std::move(*r);
    return Continue(auth, std::get<CheckinInput>(std::move(input)));
  }

  // After authentication and the body: plan, reuse or sign, store (pool threads only).
  Response Continue(const Authenticated& auth, CheckinInput in) {
    const CachedAppliance& appliance = *auth.appliance;
    fleet->MaybeRefresh();
    auto planned = PlanCheckin(appliance, in);
    if (auto* r = std::get_if<Response>(&planned)) return std::move(*r);
    const CheckinPlan& plan = std::get<CheckinPlan>(planned);
    const trust::Assignment& assignment = plan.assignment;
    const std::string& plan_hash = plan.plan_hash;
    const auto& new_members = plan.new_members;
    const SysTime now = plan.now;

    std::shared_ptr<const std::string> envelope;
    bool reused = false;
    bool from_cache = false;
    if (Reusable(appliance, plan)) {
      envelope = appliance.assignment->envelope;
      from_cache = envelope != nullptr;
      if (!envelope) {
        auto stored = ReadEnvelope(appliance.appliance_id, assignment.state_digest, plan_hash);
        if (auto* r = std::get_if<Response>(&stored)) return std::move(*r);
        envelope = std::get<std::shared_ptr<const std::string>>(stored);
      }
      reused = envelope != nullptr;
    }
    if (!reused) {
      auto signed_doc = ctx->keyserver.Sign("assignment", assignment.ToJson());
      if (!signed_doc.ok()) {
        if (signed_doc.error().code() == Errc::kNotFound) return ApiError(404, "unknown_appliance", "appliance is not enrolled");
        if (signed_doc.error().code() == Errc::kPolicy) return ApiError(403, "appliance_revoked", "this appliance has been revoked");
        return ctx->KeyserverFailure("sign assignment", signed_doc.error());
      }
      envelope = std::make_shared<const std::string>(signed_doc->dump());
      from_cache = true;  // our own dump(): splicing gives the same bytes
      if (signed_total) signed_total->Inc();
    }

    if (auth.is_new || !reused || !new_members.empty()) {
      auto stored = ctx->Transact<bool>("check-in", [&](db::Connection& c, std::optional<Response>&) -> Expected<bool> {
        if (auth.is_new) UPK_TRY(InsertAppliance(c, appliance, now));
        if (!reused) {
          UPK_TRY(c.Exec("INSERT INTO assignments (appliance_id, state_digest, plan_hash, envelope, issued_at, expires_at) "
                         "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (appliance_id) DO UPDATE SET "
                         "state_digest = EXCLUDED.state_digest, plan_hash = EXCLUDED.plan_hash, "
                         "envelope = EXCLUDED.envelope, issued_at = EXCLUDED.issued_at, expires_at = EXCLUDED.expires_at",
                         appliance.appliance_id, assignment.state_digest, plan_hash, *envelope, assignment.issued,
                         assignment.expires));
        }
        for (const auto& [rollout, wave] : new_members) {
          UPK_TRY(c.Exec("INSERT INTO rollout_members (rollout_id, appliance_id, wave, status, updated_at) "
                         "VALUES ($1, $2, $3, 'assigned', $4) ON CONFLICT (rollout_id, appliance_id) DO NOTHING",
                         rollout, appliance.appliance_id, wave, now));
        }
        return true;
      });
      if (auto* r = std::get_if<Response>(&stored)) return std::move(*r);
      auto updated = std::make_shared<CachedAppliance>(appliance);
      if (!reused) updated->assignment = StoredAssignment{assignment.state_digest, plan_hash, assignment.expires, envelope};
      for (const auto& m : new_members) updated->memberships.push_back(m.first);
      if (auth.is_new) {
        fleet->Remember(std::move(updated), auth.epoch_at_load);
      } else {
        fleet->Replace(auth.appliance, std::move(updated));
      }
    }

    Record(appliance, std::move(in), plan);
    if (from_cache) return Answer(*envelope, now);
    // Read back from the assignments table just now: parse (it may be unreadable) and re-dump.
    auto parsed = ParseJson(*envelope);
    if (!parsed.ok()) return ApiError(500, "internal", "stored assignment unreadable");
    return Response::Json(200, Json{{"assignment", std::move(parsed).value()},
                                    {"server_time", FormatTimestamp(now)},
                                    {"next_checkin_seconds", ctx->config.checkin_interval.count()}});
  }

  std::variant<std::shared_ptr<const std::string>, Response> ReadEnvelope(const std::string& id, const std::string& digest,
                                                                          const std::string& plan_hash) const {
    auto got = ctx->Transact<std::shared_ptr<const std::string>>(
        "assignment lookup",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<std::shared_ptr<const std::string>> {
          UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT envelope FROM assignments WHERE appliance_id = $1 AND "
                                              "state_digest = $2 AND plan_hash = $3",
                                              id, digest, plan_hash));
          if (r.rows() == 0) return std::shared_ptr<const std::string>();  // moved on elsewhere: sign anew
          UPK_TRY_ASSIGN(std::string text, r.Get<std::string>(0, "envelope"));
          return std::make_shared<const std::string>(std::move(text));
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return std::get<std::shared_ptr<const std::string>>(std::move(got));
  }

  Response Events(const Request& req) {
    auto authed = Authenticate(req);
    if (auto* r = std::get_if<Response>(&authed)) return std::move(*r);
    Authenticated& auth = std::get<Authenticated>(authed);
    const CachedAppliance& appliance = *auth.appliance;

    Json body;
    if (auto r = net::ParseJsonObject(req, {"events"}, body)) return *r;
    auto list = GetArray(body, "events");
    if (!list.ok()) return net::BadField(list.error());
    auto parsed = ParseEvents(**list, kMaxEvents, ctx->config.max_event_log_tail_bytes);
    if (auto* r = std::get_if<Response>(&parsed)) return std::move(*r);
    const auto& events = std::get<std::vector<ApplianceEvent>>(parsed);

    using Outcome = EventsOutcome;
    auto done = ctx->Transact<Outcome>("events", [&](db::Connection& c, std::optional<Response>&) -> Expected<Outcome> {
      const SysTime now = ctx->clock.Now();
      if (auth.is_new) UPK_TRY(InsertAppliance(c, appliance, now));
      return InsertEvents(c, appliance.appliance_id, events, now);
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const Outcome& out = std::get<Outcome>(done);
    if (auth.is_new) fleet->Remember(auth.appliance, auth.epoch_at_load);
    if (out.rollouts_changed) {
      if (auto st = fleet->Refresh(); !st.ok()) ctx->Log("catalog refresh after events: " + st.error().message());
    }
    for (const auto& [type, n] : out.by_type) {
      auto it = events_total.find(type);
      if (it != events_total.end() && it->second) it->second->Inc(static_cast<std::uint64_t>(n));
    }
    return Response::Json(200, Json{{"accepted", out.accepted}, {"duplicates", out.duplicates}});
  }
};

// Before the body is read: a request without the four signature headers is refused at once, so
// an anonymous client can't make the server buffer bodies it will refuse anyway.
std::optional<Response> SignedHeadersPrecheck(const Request& req) {
  for (const char* h : {trust::kApplianceHeader, trust::kTimestampHeader, trust::kNonceHeader, trust::kSignatureHeader}) {
    if (!req.Header(h)) {
      return ApiError(400, "malformed_signature",
                      "requests must carry X-Upkeep-Appliance, X-Upkeep-Timestamp, X-Upkeep-Nonce and X-Upkeep-Signature");
    }
  }
  return std::nullopt;
}

}  // namespace

Expected<std::shared_ptr<CachedAppliance>> ApplianceFromRecord(const std::string& id,
                                                               const keyserver::ApplianceRecord& record) {
  auto key = trust::AppliancePublicKey::FromJson(record.public_key);
  if (!key.ok() || key->appliance_id() != id) return Error(Errc::kParse, "keyserver record has a mismatched key");
  auto a = std::make_shared<CachedAppliance>();
  a->appliance_id = id;
  a->key = std::move(key).value();
  a->public_key = record.public_key;
  a->customer = record.customer;
  a->enrolled_at = record.enrolled_at;
  a->maintenance_end = record.maintenance_end;
  a->revoked = record.revoked;
  return a;
}

Status RecordEnrolmentLicence(db::Pool& pool, std::string_view keyserver_answer, SysTime now) {
  auto parsed = ParseJson(keyserver_answer);
  if (!parsed.ok()) return Error(Errc::kParse, "enrolment answer: not JSON");
  const Json& a = *parsed;
  if (!a.is_object() || !a.contains("appliance_id") || !a["appliance_id"].is_string() || !a.contains("licence") ||
      !a["licence"].is_object() || !a["licence"].contains("signed") || !a["licence"]["signed"].is_object()) {
    return Error(Errc::kParse, "enrolment answer: no appliance_id or licence");
  }
  const std::string id = a["appliance_id"].get<std::string>();
  if (!trust::IsValidApplianceId(id)) return Error(Errc::kParse, "enrolment answer: not an appliance id");
  const Json& signed_part = a["licence"]["signed"];
  if (!signed_part.contains("licence_key") || !signed_part["licence_key"].is_string() ||
      signed_part["licence_key"].get_ref<const std::string&>().empty()) {
    return Error(Errc::kParse, "enrolment answer for " + id + ": licence without a licence key");
  }
  // Only the hash: the licence key is the credential that enrols an appliance.
  const std::string digest = Sha256Hex(signed_part["licence_key"].get_ref<const std::string&>());
  return db::WithTransaction(pool, [&](db::Connection& c) -> Status {
    UPK_TRY(c.Exec("INSERT INTO appliance_licences (appliance_id, licence_sha256, recorded_at) VALUES ($1, $2, $3) "
                   "ON CONFLICT (appliance_id) DO UPDATE SET licence_sha256 = excluded.licence_sha256, "
                   "recorded_at = excluded.recorded_at",
                   id, digest, now));
    return OkStatus();
  });
}

Status InsertAppliance(db::Connection& c, const CachedAppliance& a, SysTime now) {
  UPK_TRY(c.Exec("INSERT INTO appliances (appliance_id, public_key, customer, enrolled_at, maintenance_end, first_seen) "
                 "VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (appliance_id) DO NOTHING",
                 a.appliance_id, a.public_key.dump(), a.customer, a.enrolled_at, a.maintenance_end, now));
  return OkStatus();
}

Expected<AppliancePlan> PlanAppliance(const CatalogSnapshot& snapshot, const CachedAppliance& appliance,
                                      const packages::Installed& installed, SysTime now, std::chrono::seconds validity) {
  Offer offer = OfferFor(snapshot, appliance);
  packages::Plan plan = packages::MakePlan(installed, *offer.catalog, PlanOptionsFor(appliance));

  AppliancePlan out;
  trust::Assignment& assignment = out.assignment;
  assignment.appliance_id = appliance.appliance_id;
  assignment.state_digest = trust::StateDigest(installed);
  assignment.issued = now;
  assignment.expires = now + validity;
  assignment.channel = appliance.channel;
  Json plan_steps = Json::array();
  for (const packages::PlanStep& p : plan.steps) {
    const std::string version = p.version.ToString();
    auto idx = snapshot.by_id.find({p.name, version});
    if (idx == snapshot.by_id.end()) return Error(Errc::kInternal, "planned release missing from the catalog");
    const ReleaseInfo& r = snapshot.releases[idx->second];
    trust::AssignmentStep step;
    step.name = p.name;
    step.version = p.version;
    step.kind = p.kind;
    step.wait_hours = p.wait_hours;
    step.target_path = r.target_path;
    step.length = r.length;
    step.sha256 = r.sha256;
    Json hashed = step.ToJson();
    hashed.erase("sealed_content_key");
    plan_steps.push_back(std::move(hashed));
    step.sealed_content_key = r.sealed_content_key;
    assignment.steps.push_back(std::move(step));
    out.reasons.push_back(p.reason);
    auto gated = offer.gated.find(idx->second);
    if (gated != offer.gated.end() && gated->second.second >= 0 &&
        std::find(appliance.memberships.begin(), appliance.memberships.end(), gated->second.first) ==
            appliance.memberships.end()) {
      out.new_members.push_back(gated->second);
    }
  }
  // The reuse key (state digest, plan hash) covers the appliance's settings: a changed
  // allow_major gets a new assignment even when the steps come out the same. Left out while
  // empty so the hashes of assignments issued before the setting existed stay valid.
  Json hashed_plan{{"channel", appliance.channel}, {"steps", std::move(plan_steps)}};
  if (!appliance.allow_major.empty()) hashed_plan["allow_major"] = appliance.allow_major;
  UPK_TRY_ASSIGN(std::string canonical, CanonicalJson(hashed_plan));
  out.plan_hash = Sha256Hex(canonical);
  return out;
}

std::variant<std::vector<ApplianceEvent>, Response> ParseEvents(const Json& list, std::size_t max_events,
                                                                std::size_t max_log_tail) {
  if (!list.is_array() || list.empty() || list.size() > max_events) {
    return Invalid("events", "must hold 1.." + std::to_string(max_events) + " events");
  }
  static const std::set<std::string, std::less<>> kTypes = {"download", "install", "success", "failure", "rollback"};
  std::vector<ApplianceEvent> events;
  for (std::size_t i = 0; i < list.size(); ++i) {
    const Json& e = list[i];
    const std::string where = "events[" + std::to_string(i) + "]";
    if (!e.is_object()) return Invalid(where, "must be an object");
    for (const auto& [key, value] : e.items()) {
      if (key != "id" && key != "type" && key != "name" && key != "version" && key != "at" && key != "detail" &&
          key != "log_tail") {
        return ApiError(400, "unknown_field", "unknown field '" + where + "." + key + "'");
      }
    }
    ApplianceEvent ev;
    auto id = GetString(e, "id");
    if (!id.ok()) return Invalid(where + ".id", id.error().message());
    ev.id = *id;
    bool hex = ev.id.size() == 32;
    for (char ch : ev.id) hex = hex && ((ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'f'));
    if (!hex) return Invalid(where + ".id", "must be 32 lower-case hex digits");
    auto type = GetString(e, "type");
    if (!type.ok() || !kTypes.contains(*type)) {
      return Invalid(where + ".type", "must be download, install, success, failure or rollback");
    }
    ev.type = *type;
    auto name = GetString(e, "name");
    if (!name.ok() || !packages::IsValidPackageName(*name)) return Invalid(where + ".name", "must be a package name");
    ev.name = *name;
    auto version = GetString(e, "version");
    if (!version.ok()) return Invalid(where + ".version", version.error().message());
    auto parsed_version = packages::Version::Parse(*version);
    if (!parsed_version.ok()) return Invalid(where + ".version", parsed_version.error().message());
    ev.version = parsed_version->ToString();
    auto at = GetString(e, "at");
    if (!at.ok()) return Invalid(where + ".at", at.error().message());
    auto at_time = ParseTimestamp(*at);
    if (!at_time.ok()) return Invalid(where + ".at", at_time.error().message());
    ev.at = *at_time;
    ev.detail = "{}";
    if (e.contains("detail")) {
      if (!e["detail"].is_object()) return Invalid(where + ".detail", "must be an object");
      ev.detail = e["detail"].dump();
      if (ev.detail.size() > kMaxEventDetailBytes) return Invalid(where + ".detail", "at most 16 KiB");
      // PostgreSQL's jsonb refuses \u0000; refuse it here rather than fail the insert.
      if (ev.detail.find("\\u0000") != std::string::npos) return Invalid(where + ".detail", "must not hold NUL");
    }
    if (e.contains("log_tail")) {
      if (!e["log_tail"].is_string()) return Invalid(where + ".log_tail", "must be a string");
      ev.log_tail = e["log_tail"].get<std::string>();
      ev.has_log_tail = true;
      if (ev.log_tail.size() > max_log_tail) {
        return Invalid(where + ".log_tail", "at most " + std::to_string(max_log_tail) + " bytes");
      }
      if (ev.log_tail.find('\0') != std::string::npos) return Invalid(where + ".log_tail", "must not hold NUL");
    }
    events.push_back(std::move(ev));
  }
  return events;
}

Expected<EventsOutcome> InsertEvents(db::Connection& c, const std::string& appliance_id,
                                     const std::vector<ApplianceEvent>& events, SysTime now) {
  EventsOutcome out;
  std::set<std::int64_t> touched;
  for (const ApplianceEvent& ev : events) {
    UPK_TRY_ASSIGN(db::Result r,
                   c.Exec("INSERT INTO events (appliance_id, event_id, type, name, version, at, received_at, detail, "
                          "log_tail) VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9) "
                          "ON CONFLICT (appliance_id, event_id) DO NOTHING RETURNING event_id",
                          appliance_id, ev.id, ev.type, ev.name, ev.version, ev.at, now, ev.detail,
                          ev.has_log_tail ? std::optional<std::string>(ev.log_tail) : std::nullopt));
    if (r.rows() == 0) {
      ++out.duplicates;
      continue;
    }
    ++out.accepted;
    ++out.by_type[ev.type];
    if (ev.type != "success" && ev.type != "failure") continue;
    UPK_TRY_ASSIGN(db::Result m,
                   c.Exec("UPDATE rollout_members m SET status = $1, updated_at = $2 FROM rollouts r "
                          "WHERE m.rollout_id = r.id AND m.appliance_id = $3 AND r.name = $4 AND r.version = $5 "
                          "AND r.state IN ('active', 'paused') RETURNING r.id",
                          ev.type == "success" ? "succeeded" : "failed", now, appliance_id, ev.name, ev.version));
    for (int i = 0; i < m.rows(); ++i) {
      UPK_TRY_ASSIGN(std::int64_t id, m.Get<std::int64_t>(i, "id"));
      touched.insert(id);
    }
  }
  for (std::int64_t id : touched) {
    UPK_TRY_ASSIGN(bool changed, EvaluateRollout(c, id, now));
    out.rollouts_changed = out.rollouts_changed || changed;
  }
  if (out.rollouts_changed) UPK_TRY(Context::BumpCatalogGeneration(c));
  return out;
}

Status RegisterApplianceApi(const std::shared_ptr<Context>& ctx, net::Server& server) {
  if (!ctx->fleet) return Error(Errc::kInternal, "InitFleet() must run before the appliance API is registered");
  auto api = std::make_shared<ApplianceApi>(ctx, ctx->fleet.get());
  ctx->stop_hooks.push_back([weak = std::weak_ptr<ApplianceApi>(api)] {
    if (auto a = weak.lock()) a->slow.Stop();
  });
  if (ctx->metrics) {
    api->checkins = &ctx->metrics->GetCounter("upkeep_updater_checkins_total", "Appliance check-ins answered");
    api->signed_total = &ctx->metrics->GetCounter("upkeep_updater_assignments_signed_total",
                                                  "Assignments signed by the keyserver (not reused)");
    for (const char* type : {"download", "install", "success", "failure", "rollback"}) {
      api->events_total[type] =
          &ctx->metrics->GetCounter("upkeep_updater_events_total", "Appliance events accepted", {{"type", type}});
    }
  }
  net::RouteOptions enrol;
  enrol.max_body_bytes = kEnrolBodyBytes;
  enrol.use_worker_pool = true;  // a keyserver round trip
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/enrol", [api](const Request& r) { return api->Enrol(r); }, enrol));
  net::RouteOptions checkin;
  checkin.max_body_bytes = kCheckinBodyBytes;
  checkin.precheck = SignedHeadersPrecheck;
  // Async: the warm path is answered on the I/O thread, the rest goes to the API's own pool.
  UPK_TRY(server.HandleAsync(
      Method::kPost, "/api/v1/checkin",
      [api](const Request& r, net::Responder responder) { api->CheckinAsync(r, std::move(responder)); }, checkin));
  net::RouteOptions events;
  events.max_body_bytes = kEventsBodyBytes;
  events.use_worker_pool = true;
  events.precheck = SignedHeadersPrecheck;
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/events", [api](const Request& r) { return api->Events(r); }, events));
  return OkStatus();
}

}  // namespace upkeep::updater
