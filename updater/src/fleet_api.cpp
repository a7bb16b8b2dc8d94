// Rollouts and appliances for operators (docs/updater-api.md, "Rollouts" and "Appliances").
// Every write runs in one transaction with its audit row and bumps catalog_generation, then
// refreshes this process's FleetState so the next check-in sees it at once; other instances see
// it within a second.
#include <algorithm>
#include <charconv>
#include <set>

#include "fleet_state.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::updater {

using net::ApiError;
using net::Method;
using net::Request;
using net::Response;

namespace {

constexpr std::size_t kMaxWaves = 100;
constexpr std::size_t kMaxGroups = 32;
constexpr std::size_t kMaxAllowMajor = 64;
constexpr std::size_t kMaxWaveGroups = 100;
constexpr std::int64_t kMaxMinWaveMembers = 1'000'000;
constexpr std::size_t kMaxReason = 500;
constexpr std::int64_t kMaxListedRollouts = 1000;
constexpr std::int64_t kMaxApplianceLimit = 1000;
constexpr std::int64_t kDefaultApplianceLimit = 100;
constexpr std::size_t kMaxCustomerQuery = 200;
constexpr int kDetailEvents = 50;

// Channel and group names share one form: [a-z0-9][a-z0-9-]{0,31}.
bool IsShortName(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char ch = s[i];
    const bool ok = (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') || (i > 0 && ch == '-');
    if (!ok) return false;
  }
  return true;
}

bool IsPrintableText(std::string_view s) {
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) return false;
  }
  return true;
}

Response Invalid(std::string_view field, std::string_view why) {
  return ApiError(400, "invalid_field", "field '" + std::string(field) + "': " + std::string(why));
}

std::optional<std::int64_t> PositiveId(std::string_view text) {
  std::int64_t id = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || ptr != text.data() + text.size() || id < 1) return std::nullopt;
  return id;
}

Expected<std::vector<std::string>> JsonStrings(const std::string& text) {
  UPK_TRY_ASSIGN(Json parsed, ParseJson(text));
  std::vector<std::string> out;
  if (!parsed.is_array()) return out;
  for (const Json& v : parsed) {
    if (v.is_string()) out.push_back(v.get<std::string>());
  }
  return out;
}

// A group list from a request: 0..limit valid names, duplicates folded, sorted.
std::variant<std::vector<std::string>, Response> GroupList(const Json& value, std::string_view field, std::size_t limit,
                                                          bool allow_empty) {
  if (!value.is_array()) return Invalid(field, "must be an array of group names");
  if (value.size() > limit || (!allow_empty && value.empty())) {
    return Invalid(field, "must hold " + std::string(allow_empty ? "0" : "1") + ".." + std::to_string(limit) + " groups");
  }
  std::set<std::string> groups;
  for (const Json& g : value) {
    if (!g.is_string() || !IsShortName(g.get<std::string>())) {
      return Invalid(field, "group names are [a-z0-9][a-z0-9-]{0,31}");
    }
    groups.insert(g.get<std::string>());
  }
  return std::vector<std::string>(groups.begin(), groups.end());
}

// An allow_major list from a request: 0..64 package names, each at most once; sorted.
std::variant<std::vector<std::string>, Response> AllowMajorList(const Json& value) {
  constexpr std::string_view kField = "allow_major";
  if (!value.is_array()) return Invalid(kField, "must be an array of package names");
  if (value.size() > kMaxAllowMajor) {
    return Invalid(kField, "must hold 0.." + std::to_string(kMaxAllowMajor) + " package names");
  }
  std::set<std::string> names;
  for (const Json& n : value) {
    if (!n.is_string() || !packages::IsValidPackageName(n.get_ref<const std::string&>())) {
      return Invalid(kField, "every entry must be a package name");
    }
    if (!names.insert(n.get<std::string>()).second) {
      return Invalid(kField, "'" + n.get<std::string>() + "' is given twice");
    }
  }
  return std::vector<std::string>(names.begin(), names.end());
}

// An optional {"reason"} body (pause, abort); an empty body means no reason.
std::variant<std::optional<std::string>, Response> OptionalReason(const Request& req) {
  if (req.body().empty()) return std::optional<std::string>();
  Json body;
  if (auto r = net::ParseJsonObject(req, {"reason"}, body)) return *r;
  if (!body.contains("reason")) return std::optional<std::string>();
  auto reason = GetString(body, "reason");
  if (!reason.ok()) return net::BadField(reason.error());
  if (reason->empty() || reason->size() > kMaxReason || !IsPrintableText(*reason)) {
    return Invalid("reason", "must be 1..500 characters without control characters");
  }
  return std::optional<std::string>(*reason);
}

constexpr const char* kSummaryColumns =
    "appliance_id, customer, channel, to_jsonb(groups)::text AS groups, to_jsonb(allow_major)::text AS allow_major, "
    "status, installed::text AS installed, agent_version, last_checkin, pinned_by, pinned_reason, pinned_at";

// SUMMARY (docs/updater-api.md) of row i, with check-ins not yet written by the batch job.
Expected<Json> ApplianceSummary(const FleetState& fleet, const db::Result& r, int i) {
  Json s;
  UPK_TRY_ASSIGN(std::string id, r.Get<std::string>(i, "appliance_id"));
  s["appliance_id"] = id;
  UPK_TRY_ASSIGN(std::string customer, r.Get<std::string>(i, "customer"));
  s["customer"] = customer;
  UPK_TRY_ASSIGN(std::string channel, r.Get<std::string>(i, "channel"));
  s["channel"] = channel;
  UPK_TRY_ASSIGN(std::string groups, r.Get<std::string>(i, "groups"));
  UPK_TRY_ASSIGN(auto group_list, JsonStrings(groups));
  s["groups"] = group_list;
  UPK_TRY_ASSIGN(std::string allow_major, r.Get<std::string>(i, "allow_major"));
  UPK_TRY_ASSIGN(auto allow_list, JsonStrings(allow_major));
  s["allow_major"] = allow_list;
  UPK_TRY_ASSIGN(std::string status, r.Get<std::string>(i, "status"));
  s["status"] = status;
  UPK_TRY_ASSIGN(std::string installed, r.Get<std::string>(i, "installed"));
  UPK_TRY_ASSIGN(s["installed"], ParseJson(installed));
  UPK_TRY_ASSIGN(auto agent, r.GetOptional<std::string>(i, "agent_version"));
  s["agent_version"] = agent ? Json(*agent) : Json(nullptr);
  UPK_TRY_ASSIGN(auto last, r.GetOptional<SysTime>(i, "last_checkin"));
  s["last_checkin"] = last ? Json(FormatTimestamp(*last)) : Json(nullptr);
  // Check-ins not yet written by the batch job are newer than the row.
  UPK_TRY_ASSIGN(auto pinned_by, r.GetOptional<std::string>(i, "pinned_by"));
  UPK_TRY_ASSIGN(auto pinned_reason, r.GetOptional<std::string>(i, "pinned_reason"));
  UPK_TRY_ASSIGN(auto pinned_at, r.GetOptional<SysTime>(i, "pinned_at"));
  s["pinned"] = pinned_by && pinned_reason && pinned_at
                    ? Json{{"by", *pinned_by}, {"reason", *pinned_reason}, {"at", FormatTimestamp(*pinned_at)}}
                    : Json(nullptr);
  if (auto pending = fleet.Pending(id)) {
    s["installed"] = pending->installed;
    s["agent_version"] = pending->agent_version;
    s["last_checkin"] = FormatTimestamp(pending->at);
  }
  return s;
}

bool IsValidPinReason(std::string_view reason) {
  return !reason.empty() && reason.size() <= kMaxReason && IsPrintableText(reason);
}

struct FleetApi {
  std::shared_ptr<Context> ctx;
  FleetState* fleet;

  void RefreshAfterWrite() const {
    if (auto st = fleet->Refresh(); !st.ok()) ctx->Log("catalog refresh: " + st.error().message());
  }

  // ---- rollouts ----

  Response CreateRollout(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    Json body;
    if (auto r = net::ParseJsonObject(req, {"name", "version", "channel", "start_at", "waves", "success_threshold",
                                            "error_threshold", "min_wave_members"},
                                      body)) {
      return *r;
    }
    auto name = GetString(body, "name");
    if (!name.ok()) return net::BadField(name.error());
    if (!packages::IsValidPackageName(*name)) return Invalid("name", "not a package name");
    auto version_text = GetString(body, "version");
    if (!version_text.ok()) return net::BadField(version_text.error());
    auto version = packages::Version::Parse(*version_text);
    if (!version.ok()) return Invalid("version", version.error().message());
    auto channel = GetString(body, "channel");
    if (!channel.ok()) return net::BadField(channel.error());
    if (!IsShortName(*channel)) return Invalid("channel", "channel names are [a-z0-9][a-z0-9-]{0,31}");
    const SysTime now = ctx->clock.Now();
    SysTime start_at = now;
    if (body.contains("start_at")) {
      auto text = GetString(body, "start_at");
      if (!text.ok()) return net::BadField(text.error());
      auto t = ParseTimestamp(*text);
      if (!t.ok()) return Invalid("start_at", t.error().message());
      start_at = *t;
    }
    auto waves_json = GetArray(body, "waves");
    if (!waves_json.ok()) return net::BadField(waves_json.error());
    if ((*waves_json)->empty() || (*waves_json)->size() > kMaxWaves) return Invalid("waves", "must hold 1..100 waves");
    std::vector<policy::Wave> waves;
    int last_percent = 0;
    for (std::size_t i = 0; i < (*waves_json)->size(); ++i) {
      const Json& w = (**waves_json)[i];
      const std::string field = "waves[" + std::to_string(i) + "]";
      if (!w.is_object() || w.size() != 1 || (!w.contains("percent") && !w.contains("groups"))) {
        return Invalid(field, "must be {\"percent\": P} or {\"groups\": [...]}");
      }
      policy::Wave wave;
      if (w.contains("percent")) {
        const Json& p = w["percent"];
        if (!p.is_number_integer() || p.get<std::int64_t>() < 1 || p.get<std::int64_t>() > 100) {
          return Invalid(field + ".percent", "must be an integer 1..100");
        }
        wave.percent = static_cast<int>(p.get<std::int64_t>());
        if (*wave.percent < last_percent) return Invalid(field + ".percent", "percent waves must not decrease");
        last_percent = *wave.percent;
      } else {
        auto groups = GroupList(w["groups"], field + ".groups", kMaxWaveGroups, false);
        if (auto* r = std::get_if<Response>(&groups)) return std::move(*r);
        wave.groups = std::get<std::vector<std::string>>(std::move(groups));
      }
      waves.push_back(std::move(wave));
    }
    std::int64_t thresholds[2] = {0, 0};
    const char* threshold_names[2] = {"success_threshold", "error_threshold"};
    for (int i = 0; i < 2; ++i) {
      auto v = GetInt(body, threshold_names[i]);
      if (!v.ok()) return net::BadField(v.error());
      if (*v < 0 || *v > 100) return Invalid(threshold_names[i], "must be an integer 0..100");
      thresholds[i] = *v;
    }
    std::int64_t min_members = 1;
    if (body.contains("min_wave_members")) {
      auto v = GetInt(body, "min_wave_members");
      if (!v.ok()) return net::BadField(v.error());
      if (*v < 0 || *v > kMaxMinWaveMembers) return Invalid("min_wave_members", "must be an integer 0..1000000");
      min_members = *v;
    }
    const std::string version_str = version->ToString();
    const bool starts_now = start_at <= now;

    auto done = ctx->Transact<Json>("rollout.create", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      auto refuse = [&](Response r) -> Error {
        reject = std::move(r);
        return Error(Errc::kInvalidArgument, "refused");
      };
      UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT 1 FROM channels WHERE name = $1", *channel));
      if (ch.rows() == 0) return refuse(ApiError(404, "unknown_channel", "no channel '" + *channel + "'"));
      UPK_TRY_ASSIGN(db::Result rel, c.Exec("SELECT yanked_at IS NOT NULL AS yanked FROM releases WHERE name = $1 AND "
                                            "version = $2 FOR SHARE",
                                            *name, version_str));
      if (rel.rows() == 0) {
        return refuse(ApiError(404, "unknown_release", "no release " + *name + " " + version_str));
      }
      UPK_TRY_ASSIGN(bool yanked, rel.Get<bool>(0, "yanked"));
      if (yanked) return refuse(ApiError(409, "release_yanked", *name + " " + version_str + " is yanked"));
      UPK_TRY_ASSIGN(db::Result member, c.Exec("SELECT 1 FROM channel_releases WHERE channel = $1 AND name = $2 AND "
                                               "version = $3",
                                               *channel, *name, version_str));
      if (member.rows() == 0) {
        return refuse(ApiError(409, "not_in_channel", *name + " " + version_str + " is not in channel '" + *channel + "'"));
      }
      UPK_TRY_ASSIGN(db::Result live, c.Exec("SELECT id FROM rollouts WHERE name = $1 AND version = $2 AND channel = $3 "
                                             "AND state <> 'aborted'",
                                             *name, version_str, *channel));
      if (live.rows() > 0) {
        UPK_TRY_ASSIGN(std::int64_t existing, live.Get<std::int64_t>(0, "id"));
        return refuse(ApiError(409, "rollout_exists", "rollout " + std::to_string(existing) + " already controls " + *name +
                                                          " " + version_str + " in '" + *channel + "'"));
      }
      UPK_TRY_ASSIGN(db::Result ins,
                     c.Exec("INSERT INTO rollouts (name, version, channel, state, start_at, success_threshold, "
                            "error_threshold, min_wave_members, current_wave, created_by, created_at, updated_at) "
                            "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9, $10, $10) RETURNING id",
                            *name, version_str, *channel, starts_now ? "active" : "scheduled", start_at, thresholds[0],
                            thresholds[1], min_members, op.actor(), now));
      UPK_TRY_ASSIGN(std::int64_t id, ins.Get<std::int64_t>(0, "id"));
      for (std::size_t i = 0; i < waves.size(); ++i) {
        const policy::Wave& w = waves[i];
        std::optional<std::int64_t> percent;
        std::optional<std::string> groups;
        if (w.percent) {
          percent = *w.percent;
        } else {
          groups = Json(w.groups).dump();
        }
        std::optional<SysTime> opened;
        if (i == 0 && starts_now) opened = now;
        UPK_TRY(c.Exec("INSERT INTO rollout_waves (rollout_id, idx, percent, groups, opened_at) VALUES ($1, $2, $3, "
                       "CASE WHEN $4::jsonb IS NULL THEN NULL ELSE ARRAY(SELECT jsonb_array_elements_text($4::jsonb)) END, $5)",
                       id, static_cast<std::int64_t>(i), percent, groups, opened));
      }
      UPK_TRY(InsertAudit(c, now, op.actor(), "rollout.create", std::to_string(id),
                          Json{{"name", *name}, {"version", version_str}, {"channel", *channel},
                               {"waves", static_cast<std::int64_t>(waves.size())},
                               {"start_at", FormatTimestamp(start_at)}}));
      UPK_TRY(Context::BumpCatalogGeneration(c));
      UPK_TRY_ASSIGN(auto rollout, LoadRolloutJson(c, id));
      return rollout ? *rollout : Json();
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    RefreshAfterWrite();
    return Response::Json(201, Json{{"rollout", std::get<Json>(done)}});
  }

  Response ListRollouts(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    std::optional<std::string> state = req.QueryParam("state");
    static const std::set<std::string, std::less<>> kStates = {"scheduled", "active", "paused", "aborted", "completed"};
    if (state && !kStates.contains(*state)) {
      return ApiError(400, "invalid_query", "'state' must be scheduled, active, paused, aborted or completed");
    }
    auto done = ctx->Transact<Json>("rollouts", [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result ids, c.Exec("SELECT id FROM rollouts WHERE ($1::text IS NULL OR state = $1) "
                                            "ORDER BY id DESC LIMIT $2",
                                            state, kMaxListedRollouts));
      Json list = Json::array();
      for (int i = 0; i < ids.rows(); ++i) {
        UPK_TRY_ASSIGN(std::int64_t id, ids.Get<std::int64_t>(i, "id"));
        UPK_TRY_ASSIGN(auto rollout, LoadRolloutJson(c, id));
        if (rollout) list.push_back(std::move(*rollout));
      }
      return list;
    }, db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"rollouts", std::get<Json>(done)}});
  }

  Response GetRollout(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    auto id = PositiveId(req.PathParam("id"));
    if (!id) return ApiError(404, "unknown_rollout", "rollout ids are positive integers");
    auto done = ctx->Transact<Json>("rollout", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      UPK_TRY_ASSIGN(auto rollout, LoadRolloutJson(c, *id));
      if (!rollout) {
        reject = ApiError(404, "unknown_rollout", "no rollout " + std::to_string(*id));
        return Error(Errc::kNotFound, "unknown rollout");
      }
      return *rollout;
    }, db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"rollout", std::get<Json>(done)}});
  }

  using Transition = RolloutTransition;

  Response ChangeRollout(const Request& req, Transition t) const {
    auto who = ctx->Authorize(req, t == Transition::kAbort ? OperatorRole::kPublisher : OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    auto id = PositiveId(req.PathParam("id"));
    if (!id) return ApiError(404, "unknown_rollout", "rollout ids are positive integers");
    std::optional<std::string> reason;
    if (t == Transition::kResume) {
      if (!req.body().empty()) {
        Json body;
        if (auto r = net::ParseJsonObject(req, {}, body)) return *r;
      }
    } else {
      auto parsed = OptionalReason(req);
      if (auto* r = std::get_if<Response>(&parsed)) return std::move(*r);
      reason = std::get<std::optional<std::string>>(parsed);
    }
    auto done = ChangeRolloutState(*ctx, *fleet, *id, t, reason, op.actor());
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"rollout", std::get<Json>(done)}});
  }

  // ---- appliances ----


  Expected<Json> Summary(const db::Result& r, int i) const { return ApplianceSummary(*fleet, r, i); }

  Response ListAppliances(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    std::optional<std::string> customer = req.QueryParam("customer");
    if (customer && (customer->empty() || customer->size() > kMaxCustomerQuery)) {
      return ApiError(400, "invalid_query", "'customer' must be 1..200 bytes");
    }
    std::optional<std::string> channel = req.QueryParam("channel");
    if (channel && !IsShortName(*channel)) return ApiError(400, "invalid_query", "'channel' is not a channel name");
    std::optional<std::string> after = req.QueryParam("after");
    if (after && !trust::IsValidApplianceId(*after)) return ApiError(400, "invalid_query", "'after' is not an appliance id");
    std::int64_t limit = kDefaultApplianceLimit;
    if (auto text = req.QueryParam("limit")) {
      auto [ptr, ec] = std::from_chars(text->data(), text->data() + text->size(), limit);
      if (ec != std::errc() || ptr != text->data() + text->size() || limit < 1 || limit > kMaxApplianceLimit) {
        return ApiError(400, "invalid_query", "'limit' must be an integer 1..1000");
      }
    }
    auto done = ctx->Transact<Json>("appliances", [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result r, c.Exec(std::string("SELECT ") + kSummaryColumns +
                                              " FROM appliances WHERE ($1::text IS NULL OR customer = $1) AND "
                                              "($2::text IS NULL OR channel = $2) AND ($3::text IS NULL OR appliance_id > $3) "
                                              "ORDER BY appliance_id LIMIT $4",
                                          customer, channel, after, limit));
      Json list = Json::array();
      for (int i = 0; i < r.rows(); ++i) {
        UPK_TRY_ASSIGN(Json s, Summary(r, i));
        list.push_back(std::move(s));
      }
      return list;
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"appliances", std::get<Json>(done)}});
  }

  Response GetAppliance(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return ApiError(404, "unknown_appliance", "not an appliance id");
    auto done = ctx->Transact<Json>("appliance", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result r, c.Exec(std::string("SELECT ") + kSummaryColumns +
                                              ", enrolled_at, maintenance_end, clock_offset_seconds, first_seen "
                                              "FROM appliances WHERE appliance_id = $1",
                                          id));
      if (r.rows() == 0) {
        reject = ApiError(404, "unknown_appliance", "no appliance " + id);
        return Error(Errc::kNotFound, "unknown appliance");
      }
      UPK_TRY_ASSIGN(Json d, Summary(r, 0));
      UPK_TRY_ASSIGN(SysTime enrolled, r.Get<SysTime>(0, "enrolled_at"));
      d["enrolled_at"] = FormatTimestamp(enrolled);
      UPK_TRY_ASSIGN(SysTime maintenance_end, r.Get<SysTime>(0, "maintenance_end"));
      d["maintenance_end"] = FormatTimestamp(maintenance_end);
      UPK_TRY_ASSIGN(SysTime first_seen, r.Get<SysTime>(0, "first_seen"));
      d["first_seen"] = FormatTimestamp(first_seen);
      UPK_TRY_ASSIGN(auto offset, r.GetOptional<std::int64_t>(0, "clock_offset_seconds"));
      d["clock_offset_seconds"] = offset ? Json(*offset) : Json(nullptr);
      if (auto pending = fleet->Pending(id)) d["clock_offset_seconds"] = pending->clock_offset_seconds;

      // The last signed assignment, without the sealed keys (they are for the appliance only).
      UPK_TRY_ASSIGN(db::Result a, c.Exec("SELECT envelope FROM assignments WHERE appliance_id = $1", id));
      d["assignment"] = nullptr;
      if (a.rows() > 0) {
        UPK_TRY_ASSIGN(std::string text, a.Get<std::string>(0, "envelope"));
        UPK_TRY_ASSIGN(Json envelope, ParseJson(text));
        UPK_TRY_ASSIGN(trust::Assignment signed_part, trust::Assignment::FromJson(envelope["signed"]));
        Json steps = Json::array();
        for (const auto& s : signed_part.steps) {
          Json step = s.ToJson();
          step.erase("sealed_content_key");
          steps.push_back(std::move(step));
        }
        d["assignment"] = Json{{"issued", FormatTimestamp(signed_part.issued)},
                               {"expires", FormatTimestamp(signed_part.expires)},
                               {"state_digest", signed_part.state_digest},
                               {"channel", signed_part.channel},
                               {"steps", std::move(steps)}};
      }

      // The plan it still needs, computed now over what it may be offered.
      CachedAppliance view;
      view.appliance_id = id;
      view.channel = d["channel"].get<std::string>();
      view.groups = d["groups"].get<std::vector<std::string>>();
      view.allow_major = d["allow_major"].get<std::vector<std::string>>();
      view.maintenance_end = maintenance_end;
      if (d["pinned"].is_object()) {
        view.pin = "pinned by " + d["pinned"]["by"].get<std::string>() + ": " + d["pinned"]["reason"].get<std::string>();
      }
      packages::Installed installed;
      for (const auto& [name, v] : d["installed"].items()) {
        if (!v.is_string()) continue;
        auto version = packages::Version::Parse(v.get<std::string>());
        if (version.ok()) installed.emplace(name, *version);
      }
      auto snapshot = fleet->snapshot();
      Offer offer = OfferFor(*snapshot, view, /*explain=*/true);
      Json plan = packages::MakePlan(installed, *offer.catalog, PlanOptionsFor(view)).ToJson();
      plan["withheld"] = offer.withheld;
      plan["pinned"] = view.pin.empty() ? Json(nullptr) : Json(view.pin);
      d["plan"] = std::move(plan);

      UPK_TRY_ASSIGN(db::Result e, c.Exec("SELECT event_id, type, name, version, at, received_at, detail::text AS detail, "
                                          "log_tail FROM events WHERE appliance_id = $1 "
                                          "ORDER BY received_at DESC, at DESC, event_id LIMIT $2",
                                          id, kDetailEvents));
      Json events = Json::array();
      for (int i = 0; i < e.rows(); ++i) {
        Json ev;
        for (const char* f : {"event_id", "type", "name", "version"}) {
          UPK_TRY_ASSIGN(std::string v, e.Get<std::string>(i, f));
          ev[f == std::string_view("event_id") ? "id" : f] = v;
        }
        UPK_TRY_ASSIGN(SysTime at, e.Get<SysTime>(i, "at"));
        ev["at"] = FormatTimestamp(at);
        UPK_TRY_ASSIGN(SysTime received, e.Get<SysTime>(i, "received_at"));
        ev["received_at"] = FormatTimestamp(received);
        UPK_TRY_ASSIGN(std::string detail, e.Get<std::string>(i, "detail"));
        UPK_TRY_ASSIGN(ev["detail"], ParseJson(detail));
        UPK_TRY_ASSIGN(auto tail, e.GetOptional<std::string>(i, "log_tail"));
        ev["log_tail"] = tail ? Json(*tail) : Json(nullptr);
        events.push_back(std::move(ev));
      }
      d["events"] = std::move(events);
      return d;
    }, db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"appliance", std::get<Json>(done)}});
  }

  Response UpdateAppliance(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return ApiError(404, "unknown_appliance", "not an appliance id");
    Json body;
    if (auto r = net::ParseJsonObject(req, {"channel", "groups", "allow_major", "pinned"}, body)) return *r;
    if (body.empty()) {
      return ApiError(400, "invalid_body", "give one or more of 'channel', 'groups', 'allow_major', 'pinned'");
    }
    ApplianceChange change;
    if (body.contains("channel")) {
      auto text = GetString(body, "channel");
      if (!text.ok()) return net::BadField(text.error());
      if (!IsShortName(*text)) return Invalid("channel", "channel names are [a-z0-9][a-z0-9-]{0,31}");
      change.channel = *text;
    }
    if (body.contains("groups")) {
      auto groups = GroupList(body["groups"], "groups", kMaxGroups, true);
      if (auto* r = std::get_if<Response>(&groups)) return std::move(*r);
      change.groups = std::get<std::vector<std::string>>(groups);
    }
    if (body.contains("allow_major")) {
      auto names = AllowMajorList(body["allow_major"]);
      if (auto* r = std::get_if<Response>(&names)) return std::move(*r);
      change.allow_major = std::get<std::vector<std::string>>(names);
    }
    if (body.contains("pinned")) {
      const Json& pin = body["pinned"];
      if (pin.is_null()) {
        change.pinned = std::optional<PinChange>();
      } else {
        if (!pin.is_object() || pin.size() != 1 || !pin.contains("reason") || !pin["reason"].is_string()) {
          return Invalid("pinned", "must be {\"reason\": TEXT} or null");
        }
        const std::string reason = pin["reason"].get<std::string>();
        if (!IsValidPinReason(reason)) return Invalid("pinned.reason", "must be 1..500 characters without control characters");
        change.pinned = std::optional<PinChange>(PinChange{reason});
      }
    }
    auto done = ChangeAppliance(*ctx, *fleet, id, change, op.actor());
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"appliance", std::get<Json>(done)}});
  }
};

}  // namespace

std::variant<Json, Response> ChangeRolloutState(Context& ctx, FleetState& fleet, std::int64_t id, RolloutTransition t,
                                                const std::optional<std::string>& reason, const std::string& actor) {
  using Transition = RolloutTransition;
  auto done = ctx.Transact<Json>("rollout.change", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
    const SysTime now = ctx.clock.Now();
    UPK_TRY_ASSIGN(db::Result row, c.Exec("SELECT state, start_at, current_wave FROM rollouts WHERE id = $1 FOR UPDATE", id));
    if (row.rows() == 0) {
      reject = ApiError(404, "unknown_rollout", "no rollout " + std::to_string(id));
      return Error(Errc::kNotFound, "unknown rollout");
    }
    UPK_TRY_ASSIGN(std::string state, row.Get<std::string>(0, "state"));
    UPK_TRY_ASSIGN(SysTime start_at, row.Get<SysTime>(0, "start_at"));
    UPK_TRY_ASSIGN(std::int64_t current, row.Get<std::int64_t>(0, "current_wave"));
    auto invalid = [&](std::string_view allowed) -> Error {
      reject = ApiError(409, "invalid_state", "rollout " + std::to_string(id) + " is " + state + "; only " +
                                                  std::string(allowed) + " rollouts can be changed this way");
      return Error(Errc::kPolicy, "invalid state");
    };
    std::string action;
    Json detail = Json::object();
    detail["from"] = state;
    if (t == Transition::kPause) {
      if (state != "active" && state != "scheduled") return invalid("active or scheduled");
      const std::string why = reason.value_or("paused by " + actor);
      UPK_TRY(c.Exec("UPDATE rollouts SET state = 'paused', pause_reason = $2, updated_at = $3 WHERE id = $1", id, why, now));
      action = "rollout.pause";
      detail["reason"] = why;
    } else if (t == Transition::kResume) {
      if (state != "paused") return invalid("paused");
      const bool started = start_at <= now;
      UPK_TRY(c.Exec("UPDATE rollouts SET state = $2, pause_reason = NULL, updated_at = $3 WHERE id = $1", id,
                     started ? "active" : "scheduled", now));
      if (started) {
        UPK_TRY(c.Exec("UPDATE rollout_waves SET opened_at = $3 WHERE rollout_id = $1 AND idx = $2 AND opened_at IS NULL",
                       id, current, now));
      }
      action = "rollout.resume";
    } else {
      if (state != "active" && state != "scheduled" && state != "paused") return invalid("active, scheduled or paused");
      UPK_TRY(c.Exec("UPDATE rollouts SET state = 'aborted', updated_at = $2 WHERE id = $1", id, now));
      action = "rollout.abort";
      if (reason) detail["reason"] = *reason;
    }
    UPK_TRY(InsertAudit(c, now, actor, action, std::to_string(id), detail));
    UPK_TRY(Context::BumpCatalogGeneration(c));
    UPK_TRY_ASSIGN(auto rollout, LoadRolloutJson(c, id));
    return rollout ? *rollout : Json();
  });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
  if (auto st = fleet.Refresh(); !st.ok()) ctx.Log("catalog refresh: " + st.error().message());
  return std::get<Json>(std::move(done));
}

std::variant<Json, Response> ChangeAppliance(Context& ctx, FleetState& fleet, const std::string& id,
                                             const ApplianceChange& change, const std::string& actor) {
  std::optional<std::string> groups_json, allow_major_json;
  if (change.groups) groups_json = Json(*change.groups).dump();
  if (change.allow_major) allow_major_json = Json(*change.allow_major).dump();
  auto done = ctx.Transact<Json>("appliance.update", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
    const SysTime now = ctx.clock.Now();
    if (change.channel) {
      UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT 1 FROM channels WHERE name = $1", *change.channel));
      if (ch.rows() == 0) {
        reject = ApiError(404, "unknown_channel", "no channel '" + *change.channel + "'");
        return Error(Errc::kNotFound, "unknown channel");
      }
    }
    UPK_TRY_ASSIGN(db::Result before, c.Exec("SELECT channel, to_jsonb(groups)::text AS groups, "
                                             "to_jsonb(allow_major)::text AS allow_major, status, pinned_by, pinned_reason "
                                             "FROM appliances WHERE appliance_id = $1 FOR UPDATE",
                                             id));
    if (before.rows() == 0) {
      reject = ApiError(404, "unknown_appliance", "no appliance " + id);
      return Error(Errc::kNotFound, "unknown appliance");
    }
    UPK_TRY_ASSIGN(std::string old_channel, before.Get<std::string>(0, "channel"));
    UPK_TRY_ASSIGN(std::string old_groups, before.Get<std::string>(0, "groups"));
    UPK_TRY_ASSIGN(std::string old_allow_major, before.Get<std::string>(0, "allow_major"));
    UPK_TRY_ASSIGN(std::string old_status, before.Get<std::string>(0, "status"));
    UPK_TRY_ASSIGN(auto old_pinned_by, before.GetOptional<std::string>(0, "pinned_by"));
    UPK_TRY_ASSIGN(auto old_pinned_reason, before.GetOptional<std::string>(0, "pinned_reason"));
    UPK_TRY(c.Exec("UPDATE appliances SET channel = coalesce($2, channel), groups = CASE WHEN $3::jsonb IS NULL "
                   "THEN groups ELSE ARRAY(SELECT jsonb_array_elements_text($3::jsonb)) END, "
                   "allow_major = CASE WHEN $4::jsonb IS NULL THEN allow_major "
                   "ELSE ARRAY(SELECT jsonb_array_elements_text($4::jsonb)) END WHERE appliance_id = $1",
                   id, change.channel, groups_json, allow_major_json));
    Json detail = Json::object();
    if (change.channel) detail["channel"] = Json{{"from", old_channel}, {"to", *change.channel}};
    if (groups_json) {
      UPK_TRY_ASSIGN(Json from, ParseJson(old_groups));
      detail["groups"] = Json{{"from", from}, {"to", *change.groups}};
    }
    if (allow_major_json) {
      UPK_TRY_ASSIGN(Json from, ParseJson(old_allow_major));
      detail["allow_major"] = Json{{"from", from}, {"to", *change.allow_major}};
    }
    if (change.pinned) {
      const Json from = old_pinned_by && old_pinned_reason ? Json{{"by", *old_pinned_by}, {"reason", *old_pinned_reason}}
                                                           : Json(nullptr);
      if (*change.pinned) {
        UPK_TRY(c.Exec("UPDATE appliances SET pinned_by = $2, pinned_reason = $3, pinned_at = $4 WHERE appliance_id = $1",
                       id, actor, (*change.pinned)->reason, now));
        detail["pinned"] = Json{{"from", from}, {"to", Json{{"by", actor}, {"reason", (*change.pinned)->reason}}}};
      } else {
        UPK_TRY(c.Exec("UPDATE appliances SET pinned_by = NULL, pinned_reason = NULL, pinned_at = NULL "
                       "WHERE appliance_id = $1", id));
        detail["pinned"] = Json{{"from", from}, {"to", nullptr}};
      }
    }
    if (change.revoke) {
      UPK_TRY(c.Exec("UPDATE appliances SET status = 'revoked', revoked_at = coalesce(revoked_at, $2) "
                     "WHERE appliance_id = $1", id, now));
      detail["status"] = Json{{"from", old_status}, {"to", "revoked"}};
    }
    // The audit row is also how every updater instance learns to drop its cached copy.
    UPK_TRY(InsertAudit(c, now, actor, "appliance.update", id, detail));
    UPK_TRY(Context::BumpCatalogGeneration(c));
    UPK_TRY_ASSIGN(db::Result r, c.Exec(std::string("SELECT ") + kSummaryColumns + " FROM appliances WHERE appliance_id = $1",
                                        id));
    return ApplianceSummary(fleet, r, 0);
  });
  if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
  fleet.Forget(id);
  if (auto st = fleet.Refresh(); !st.ok()) ctx.Log("catalog refresh: " + st.error().message());
  return std::get<Json>(std::move(done));
}

Status RegisterFleetApi(const std::shared_ptr<Context>& ctx, net::Server& server) {
  if (!ctx->fleet) return Error(Errc::kInternal, "InitFleet() must run before the fleet API is registered");
  auto api = std::make_shared<FleetApi>(FleetApi{ctx, ctx->fleet.get()});
  net::RouteOptions opts;
  opts.max_body_bytes = ctx->config.max_body_bytes;
  opts.use_worker_pool = true;
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/rollouts", [api](const Request& r) { return api->CreateRollout(r); }, opts));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/rollouts", [api](const Request& r) { return api->ListRollouts(r); }, opts));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/rollouts/{id}", [api](const Request& r) { return api->GetRollout(r); }, opts));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/rollouts/{id}/pause",
                        [api](const Request& r) { return api->ChangeRollout(r, FleetApi::Transition::kPause); }, opts));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/rollouts/{id}/resume",
                        [api](const Request& r) { return api->ChangeRollout(r, FleetApi::Transition::kResume); }, opts));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/rollouts/{id}/abort",
                        [api](const Request& r) { return api->ChangeRollout(r, FleetApi::Transition::kAbort); }, opts));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/appliances", [api](const Request& r) { return api->ListAppliances(r); }, opts));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/appliances/{id}", [api](const Request& r) { return api->GetAppliance(r); }, opts));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/appliances/{id}", [api](const Request& r) { return api->UpdateAppliance(r); }, opts));
  return OkStatus();
}

}  // namespace upkeep::updater
