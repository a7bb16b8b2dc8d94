// The download portal (docs/updater-api.md, "Download portal"; docs/airgap.md): an air-gapped
// appliance's admin pastes its download key on any internet-connected machine; the portal checks
// the key, shows the plan a check-in would get, and builds one .upkb bundle holding the TUF
// metadata, a director-signed assignment bound to the key's nonce and state digest, and the
// encrypted blobs. Packages put in a bundle are not offered to that appliance again until
// support re-enables them. The same as a JSON API, a plain HTML page, and support routes.
//
// Every key is hostile until it checks out (decode, appliance, signature, expiry, clock, replay,
// in that order, each with its own answer). Bundles are written to BLOB_DIR/bundles on a worker
// thread through bundle::WriteBundle (constant memory) and served with Response::FromFile.
#include <algorithm>
#include <filesystem>
#include <set>

#include "fleet_state.hpp"
#include "portal_shared.hpp"
#include "repository_store.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/trust/download_key.hpp"
#include "upkeep/trust/install_report.hpp"

namespace upkeep::updater {

using net::ApiError;
using net::Method;
using net::Request;
using net::Response;

namespace {

constexpr std::size_t kKeyBodyBytes = 16 * 1024;     // {"download_key"}: as it always was
constexpr std::size_t kKeysBodyBytes = 512 * 1024;   // {"download_keys"}: 64 keys of up to 4 KiB, escaped
constexpr std::size_t kMaxClusterKeys = 64;          // as many as a cluster has nodes
constexpr std::size_t kReportBodyBytes = 1u << 20;
constexpr std::size_t kFormBodyBytes = 512 * 1024;   // the key textarea may hold a whole cluster's keys
constexpr std::size_t kReportFormBodyBytes = 3u << 20;  // a 1 MiB report, percent-encoded
constexpr std::chrono::minutes kCleanupInterval{10};
constexpr std::chrono::hours kPartFileAge{1};  // a ".part" older than this was left by a crash

// ---- small helpers ----------------------------------------------------------------------------

std::string Hex(Random& random, std::size_t bytes) { return ToHex(random.Generate(bytes)); }

int HexValue(char ch) {
  if (ch >= '0' && ch <= '9') return ch - '0';
  if (ch >= 'a' && ch <= 'f') return ch - 'a' + 10;
  if (ch >= 'A' && ch <= 'F') return ch - 'A' + 10;
  return -1;
}

// application/x-www-form-urlencoded: the first value of `field`, decoded; nullopt when absent or
// badly encoded.
std::optional<std::string> FormField(std::string_view body, std::string_view field) {
  while (!body.empty()) {
    std::size_t amp = body.find('&');
    std::string_view pair = body.substr(0, amp);
    body = amp == std::string_view::npos ? std::string_view() : body.substr(amp + 1);
    std::size_t eq = pair.find('=');
    if (pair.substr(0, eq) != field) continue;
    std::string_view raw = eq == std::string_view::npos ? std::string_view() : pair.substr(eq + 1);
    std::string out;
    out.reserve(raw.size());
    for (std::size_t i = 0; i < raw.size(); ++i) {
      if (raw[i] == '+') {
        out += ' ';
      } else if (raw[i] == '%') {
        if (i + 2 >= raw.size()) return std::nullopt;
        int hi = HexValue(raw[i + 1]), lo = HexValue(raw[i + 2]);
        if (hi < 0 || lo < 0) return std::nullopt;
        out += static_cast<char>(hi * 16 + lo);
        i += 2;
      } else {
        out += raw[i];
      }
    }
    return out;
  }
  return std::nullopt;
}

// The {"error": {"code", "message"}} of an API answer (for the HTML page).
std::pair<std::string, std::string> ErrorOf(const Response& r) {
  auto parsed = ParseJson(r.body);
  if (parsed.ok() && parsed->is_object() && parsed->contains("error") && (*parsed)["error"].is_object()) {
    const Json& e = (*parsed)["error"];
    std::string code = e.contains("code") && e["code"].is_string() ? e["code"].get<std::string>() : "error";
    std::string message = e.contains("message") && e["message"].is_string() ? e["message"].get<std::string>() : "";
    return {code, message};
  }
  return {"error", "the request failed (status " + std::to_string(r.status) + ")"};
}

// The same error answer with `prefix` in front of its message (which key of a cluster failed).
Response Prefixed(Response r, const std::string& prefix) {
  auto parsed = ParseJson(r.body);
  if (parsed.ok() && parsed->is_object() && parsed->contains("error") && (*parsed)["error"].is_object()) {
    Json& e = (*parsed)["error"];
    if (e.contains("message") && e["message"].is_string()) {
      e["message"] = prefix + e["message"].get<std::string>();
      r.body = parsed->dump();
    }
  }
  return r;
}

// "key 2 of 3 (apl-...): " (the id once the key decoded).
std::string KeyLabel(std::size_t index, std::size_t count, const std::string& appliance_id) {
  std::string out = "key " + std::to_string(index + 1) + " of " + std::to_string(count);
  if (!appliance_id.empty()) out += " (" + appliance_id + ")";
  return out + ": ";
}

// The keys pasted into one textarea: a new key starts at every "UPK1" (case-insensitive; "1" is
// not a base32 letter, so it never occurs inside a key); a key's own line breaks stay in it. Text
// before the first prefix is a key of its own (a key may be pasted without its prefix). Blank
// pieces are dropped.
std::vector<std::string> SplitKeys(std::string_view text) {
  auto upper = [](char ch) { return ch >= 'a' && ch <= 'z' ? static_cast<char>(ch - 'a' + 'A') : ch; };
  auto prefix_at = [&](std::size_t i) {
    return i + 4 <= text.size() && upper(text[i]) == 'U' && upper(text[i + 1]) == 'P' && upper(text[i + 2]) == 'K' &&
           text[i + 3] == '1';
  };
  auto blank = [](std::string_view piece) {
    return piece.find_first_not_of(" \t\r\n-") == std::string_view::npos;
  };
  std::vector<std::string> out;
  std::size_t start = 0;
  for (std::size_t i = 1; i <= text.size(); ++i) {
    if (i == text.size() || prefix_at(i)) {
      std::string_view piece = text.substr(start, i - start);
      if (!blank(piece)) out.emplace_back(piece);
      start = i;
    }
  }
  return out;
}

std::string FormatOffset(std::int64_t seconds) {
  std::int64_t a = seconds < 0 ? -seconds : seconds;
  std::string text = std::to_string(a / 3600) + "h " + std::to_string(a % 3600 / 60) + "m " + std::to_string(a % 60) + "s";
  if (seconds == 0) return "0s (in step with this server)";
  return text + (seconds < 0 ? " behind this server" : " ahead of this server");
}

// ---- the portal -------------------------------------------------------------------------------

struct Resolved {
  std::shared_ptr<const CachedAppliance> appliance;
  bool is_new = false;  // known to the keyserver, not yet to our table
};

struct CheckedKey {
  trust::DownloadKey key;
  Resolved who;
  std::int64_t offset = 0;  // the appliance's clock minus ours, seconds
};

// One row of the "updates" list.
struct PortalStep {
  trust::AssignmentStep step;
  std::string reason;
  std::optional<std::string> withheld;  // why not offered
};

struct PortalPlan {
  std::vector<PortalStep> steps;
  SysTime now{};
  std::string nothing_reason;  // when no step is offered: why
  std::vector<std::pair<std::int64_t, int>> new_members;  // rollout waves the plan puts it in
};

struct PortalApi {
  std::shared_ptr<Context> ctx;
  FleetState* fleet;

  PortalApi(std::shared_ptr<Context> c, FleetState* f) : ctx(std::move(c)), fleet(f) {}

  std::filesystem::path BundleDir() const { return ctx->config.blob_dir / "bundles"; }

  // The appliance by id: the cache, our table, then the keyserver (the authority on enrolment).
  std::variant<Resolved, Response> FindAppliance(const std::string& id) const {
    Resolved out;
    out.appliance = fleet->Find(id);
    if (!out.appliance) {
      const std::uint64_t epoch = fleet->epoch();
      auto loaded = fleet->Load(id);
      if (!loaded.ok()) return ctx->DbFailure("appliance lookup", loaded.error());
      if (*loaded) {
        out.appliance = *loaded;
        fleet->Remember(out.appliance, epoch);
      } else {
        auto record = ctx->keyserver.GetAppliance(id);
        if (!record.ok()) {
          if (record.error().code() == Errc::kNotFound) {
            return ApiError(404, "unknown_appliance", "appliance " + id + " is not enrolled with this vendor");
          }
          return ctx->KeyserverFailure("appliance lookup", record.error());
        }
        auto a = ApplianceFromRecord(id, *record);
        if (!a.ok()) return ctx->KeyserverFailure("appliance lookup", a.error());
        out.appliance = std::move(a).value();
        out.is_new = true;
      }
    }
    bool revoked = out.appliance->revoked;
    if (!out.is_new && !revoked) {
      // The cache learns revocations from the feed, minutes late; handing out packages asks the
      // authority now (the portal's rate is a person's, not a fleet's).
      auto record = ctx->keyserver.GetAppliance(id);
      if (!record.ok()) return ctx->KeyserverFailure("appliance lookup", record.error());
      revoked = record->revoked;
    }
    if (revoked) {
      return ApiError(403, "appliance_revoked", "appliance " + id + " has been revoked: no updates are offered to it");
    }
    return out;
  }

  // A key older than the newest one seen from its appliance: the 409 answer (else nullopt).
  static Expected<std::optional<Response>> Superseded(db::Connection& c, const trust::DownloadKey& key) {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT issued_at, first_seen FROM portal_keys WHERE appliance_id = $1 "
                                        "ORDER BY issued_at DESC LIMIT 1",
                                        key.appliance_id));
    if (r.rows() == 0) return std::optional<Response>();
    UPK_TRY_ASSIGN(SysTime issued, r.Get<SysTime>(0, "issued_at"));
    UPK_TRY_ASSIGN(SysTime first_seen, r.Get<SysTime>(0, "first_seen"));
    if (issued <= key.issued) return std::optional<Response>();
    return std::optional<Response>(ApiError(409, "download_key_replayed",
                                            "a newer download key from this appliance was used on " +
                                                FormatTimestamp(first_seen) + "; use the newest (this one was made " +
                                                FormatTimestamp(key.issued) + ")"));
  }

  // Every check on a key, in the documented order, recording nothing. `before` are the keys
  // checked before this one in the same submission: the same appliance twice is refused.
  std::variant<CheckedKey, Response> VerifyKey(std::string_view text, const std::vector<CheckedKey>& before,
                                               std::string& appliance_id) const {
    auto decoded = trust::DecodeDownloadKey(text);
    if (!decoded.ok()) return ApiError(400, "invalid_download_key", decoded.error().message());
    CheckedKey out;
    out.key = decoded->key;
    appliance_id = out.key.appliance_id;
    for (std::size_t i = 0; i < before.size(); ++i) {
      if (before[i].key.appliance_id == appliance_id) {
        return ApiError(400, "duplicate_appliance", "the same appliance as key " + std::to_string(i + 1) +
                                                        ": give one download key per node");
      }
    }
    auto found = FindAppliance(out.key.appliance_id);
    if (auto* r = std::get_if<Response>(&found)) return std::move(*r);
    out.who = std::get<Resolved>(std::move(found));
    if (auto st = trust::VerifyDownloadKeySignature(*decoded, out.who.appliance->key); !st.ok()) {
      return ApiError(400, "invalid_download_key", st.error().message());
    }
    const SysTime now = ctx->clock.Now();
    auto offset = trust::CheckDownloadKeyTime(out.key, now, ctx->config.portal_max_skew);
    if (!offset.ok()) {
      if (now >= out.key.expires()) return ApiError(400, "download_key_expired", offset.error().message());
      return ApiError(400, "clock_skew", offset.error().message());
    }
    out.offset = *offset;
    if (!out.who.is_new) {
      // Looked at here too so that, in a cluster, the first failing key is the one named; the
      // recording transaction checks again under the row lock.
      auto stale = ctx->Transact<bool>("download key", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
        UPK_TRY_ASSIGN(auto superseded, Superseded(c, out.key));
        if (superseded) {
          reject = std::move(*superseded);
          return Error(Errc::kPolicy, "superseded");
        }
        return true;
      }, db::TxOptions{.read_only = true});
      if (auto* r = std::get_if<Response>(&stale)) return std::move(*r);
    }
    return out;
  }

  // Records keys that passed VerifyKey as seen, all or none (under their appliances' row locks,
  // taken in id order, so two submissions racing are ordered): every older key of these
  // appliances is stale from now on. With `label`, a refusal names the key ("key 2 of 3 (...)").
  std::optional<Response> RecordKeys(std::vector<CheckedKey>& keys, bool label) const {
    std::vector<std::size_t> order(keys.size());
    for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](std::size_t x, std::size_t y) { return keys[x].key.appliance_id < keys[y].key.appliance_id; });
    const SysTime now = ctx->clock.Now();
    auto seen = ctx->Transact<bool>("download key", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
      for (std::size_t i : order) {
        if (keys[i].who.is_new) UPK_TRY(InsertAppliance(c, *keys[i].who.appliance, now));
        UPK_TRY(c.Exec("SELECT 1 FROM appliances WHERE appliance_id = $1 FOR UPDATE", keys[i].key.appliance_id));
      }
      for (std::size_t i = 0; i < keys.size(); ++i) {
        const trust::DownloadKey& key = keys[i].key;
        UPK_TRY_ASSIGN(auto superseded, Superseded(c, key));
        if (superseded) {
          reject = label ? Prefixed(std::move(*superseded), KeyLabel(i, keys.size(), key.appliance_id))
                         : std::move(*superseded);
          return Error(Errc::kPolicy, "superseded");
        }
        UPK_TRY(c.Exec("INSERT INTO portal_keys (appliance_id, nonce, issued_at, first_seen) VALUES ($1, $2, $3, $4) "
                       "ON CONFLICT (appliance_id, nonce) DO NOTHING",
                       key.appliance_id, key.nonce_hex(), key.issued, now));
      }
      return true;
    });
    if (auto* r = std::get_if<Response>(&seen)) return std::move(*r);
    for (CheckedKey& k : keys) k.who.is_new = false;  // its row exists now
    return std::nullopt;
  }

  std::variant<CheckedKey, Response> CheckKey(std::string_view text) const {
    std::string id;
    auto checked = VerifyKey(text, {}, id);
    if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
    std::vector<CheckedKey> one{std::get<CheckedKey>(std::move(checked))};
    if (auto r = RecordKeys(one, false)) return std::move(*r);
    return std::move(one.front());
  }

  // A cluster's keys: each gets every check, the first failing one is named, and nothing is
  // recorded unless all pass.
  std::variant<std::vector<CheckedKey>, Response> CheckKeys(const std::vector<std::string>& texts) const {
    if (texts.empty() || texts.size() > kMaxClusterKeys) {
      return ApiError(400, "invalid_field", "give 1.." + std::to_string(kMaxClusterKeys) + " download keys (one per node), not " +
                                                std::to_string(texts.size()));
    }
    std::vector<CheckedKey> keys;
    for (std::size_t i = 0; i < texts.size(); ++i) {
      std::string id;
      auto checked = VerifyKey(texts[i], keys, id);
      if (auto* r = std::get_if<Response>(&checked)) return Prefixed(std::move(*r), KeyLabel(i, texts.size(), id));
      keys.push_back(std::get<CheckedKey>(std::move(checked)));
    }
    if (auto r = RecordKeys(keys, true)) return std::move(*r);
    return keys;
  }

  // The plan a check-in in state `installed` would get, with what was already downloaded withheld.
  std::variant<PortalPlan, Response> Plan(const CachedAppliance& appliance, const packages::Installed& installed) const {
    fleet->MaybeRefresh();
    PortalPlan out;
    out.now = ctx->clock.Now();
    auto planned = PlanAppliance(*fleet->snapshot(), appliance, installed, out.now, ctx->config.bundle_validity);
    if (!planned.ok()) return ApiError(500, "internal", planned.error().message());
    out.new_members = planned->new_members;
    struct Downloaded {
      std::string bundle_id;
      SysTime at{};
    };
    auto got = ctx->Transact<std::map<std::pair<std::string, std::string>, Downloaded>>(
        "downloads lookup",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<std::map<std::pair<std::string, std::string>, Downloaded>> {
          std::map<std::pair<std::string, std::string>, Downloaded> m;
          UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT name, version, bundle_id, downloaded_at FROM portal_downloads "
                                              "WHERE appliance_id = $1",
                                              appliance.appliance_id));
          for (int i = 0; i < r.rows(); ++i) {
            UPK_TRY_ASSIGN(std::string name, r.Get<std::string>(i, "name"));
            UPK_TRY_ASSIGN(std::string version, r.Get<std::string>(i, "version"));
            UPK_TRY_ASSIGN(std::string bundle, r.Get<std::string>(i, "bundle_id"));
            UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(i, "downloaded_at"));
            m[{name, version}] = Downloaded{bundle, at};
          }
          return m;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    const auto& downloaded = std::get<0>(got);
    std::optional<SysTime> last_download;
    for (std::size_t i = 0; i < planned->assignment.steps.size(); ++i) {
      PortalStep s;
      s.step = planned->assignment.steps[i];
      s.reason = planned->reasons[i];
      auto it = downloaded.find({s.step.name, s.step.version.ToString()});
      if (it != downloaded.end()) {
        s.withheld = "downloaded on " + FormatTimestamp(it->second.at) + " in bundle " + it->second.bundle_id +
                     "; support can re-enable it";
        if (!last_download || *last_download < it->second.at) last_download = it->second.at;
      }
      out.steps.push_back(std::move(s));
    }
    if (out.steps.empty()) {
      out.nothing_reason = "nothing to download: appliance " + appliance.appliance_id + " is up to date";
    } else if (last_download) {
      out.nothing_reason = "nothing to download: every update for appliance " + appliance.appliance_id +
                           " was already downloaded (last on " + FormatTimestamp(*last_download) +
                           "); support can re-enable them";
    }
    return out;
  }

  static Json StepsJson(const PortalPlan& plan) {
    Json list = Json::array();
    for (const PortalStep& s : plan.steps) {
      list.push_back(Json{{"name", s.step.name},
                          {"version", s.step.version.ToString()},
                          {"kind", packages::KindName(s.step.kind)},
                          {"size", s.step.length},
                          {"reason", s.reason},
                          {"offered", !s.withheld.has_value()},
                          {"withheld", s.withheld ? Json(*s.withheld) : Json(nullptr)}});
    }
    return list;
  }

  static std::size_t OfferedCount(const PortalPlan& plan) {
    return static_cast<std::size_t>(std::count_if(plan.steps.begin(), plan.steps.end(),
                                                  [](const PortalStep& s) { return !s.withheld; }));
  }

  // Every root version, then timestamp, snapshot and targets as /repo/metadata serves them.
  std::variant<std::vector<bundle::EntrySource>, Response> MetadataEntries() const {
    auto got = ctx->Transact<std::vector<bundle::EntrySource>>(
        "repository metadata",
        [&](db::Connection& c, std::optional<Response>& reject) -> Expected<std::vector<bundle::EntrySource>> {
          std::vector<bundle::EntrySource> out;
          UPK_TRY_ASSIGN(db::Result roots, c.Exec("SELECT version, body FROM tuf_metadata WHERE role = 'root' ORDER BY version"));
          if (roots.rows() == 0) {
            reject = ApiError(409, "not_bootstrapped", "the repository has no root metadata yet");
            return Error(Errc::kPolicy, "not bootstrapped");
          }
          for (int i = 0; i < roots.rows(); ++i) {
            bundle::EntrySource e;
            e.info.type = bundle::EntryType::kMetadata;
            UPK_TRY_ASSIGN(std::int64_t v, roots.Get<std::int64_t>(i, "version"));
            e.info.name = std::to_string(v) + ".root.json";
            UPK_TRY_ASSIGN(e.data, roots.Get<std::string>(i, "body"));
            out.push_back(std::move(e));
          }
          for (const char* role : {"timestamp", "snapshot", "targets"}) {
            UPK_TRY_ASSIGN(auto row, NewestMetadata(c, role));
            if (!row) {
              reject = ApiError(409, "not_bootstrapped", std::string("the repository has no ") + role + " metadata yet");
              return Error(Errc::kPolicy, "not bootstrapped");
            }
            bundle::EntrySource e;
            e.info.type = bundle::EntryType::kMetadata;
            e.info.name = std::string(role) == "timestamp" ? "timestamp.json"
                                                           : std::to_string(row->version) + "." + role + ".json";
            e.data = std::move(row->body);
            out.push_back(std::move(e));
          }
          return out;
        },
        db::TxOptions{.isolation = db::Isolation::kRepeatableRead, .read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return std::get<std::vector<bundle::EntrySource>>(std::move(got));
  }

  bundle::EntrySource BlobEntry(const trust::AssignmentStep& step) const {
    bundle::EntrySource e;
    e.info.type = bundle::EntryType::kBlob;
    e.info.name = step.sha256;
    e.info.length = step.length;
    e.info.sha256 = step.sha256;
    e.file = ctx->repository->BlobPath(step.sha256);
    return e;
  }

  // One appliance of a submission: who, in which state, from which key (none: support).
  struct Node {
    Resolved who;
    packages::Installed installed;
    const trust::DownloadKey* key = nullptr;
    PortalPlan plan;
  };

  // The assignment of a node's offered steps, unsigned (issued now, bundle_validity).
  trust::Assignment AssignmentOf(const Node& n) const {
    trust::Assignment a;
    a.appliance_id = n.who.appliance->appliance_id;
    a.state_digest = trust::StateDigest(n.installed);
    a.issued = n.plan.now;
    a.expires = n.plan.now + ctx->config.bundle_validity;
    if (n.key) a.nonce = n.key->nonce_hex();
    a.channel = n.who.appliance->channel;
    for (const PortalStep& s : n.plan.steps) {
      if (!s.withheld) a.steps.push_back(s.step);
    }
    return a;
  }

  // Each blob once, in the order the assignments first need it (a cluster shares packages).
  std::vector<bundle::EntrySource> BlobEntries(const std::vector<trust::Assignment>& assignments) const {
    std::vector<bundle::EntrySource> out;
    std::set<std::string> seen;
    for (const auto& a : assignments) {
      for (const auto& s : a.steps) {
        if (seen.insert(s.sha256).second) out.push_back(BlobEntry(s));
      }
    }
    return out;
  }

  // The size of the bundle of `assignments` as it would be built now (signatures estimated).
  std::uint64_t EstimateBytes(const std::vector<bundle::EntrySource>& metadata,
                              const std::vector<trust::Assignment>& assignments, SysTime now) const {
    std::vector<bundle::EntrySource> list = metadata;
    std::vector<std::string> ids;
    for (const auto& a : assignments) {
      bundle::EntrySource e;
      e.info.type = bundle::EntryType::kAssignment;
      e.info.name = a.appliance_id;
      // Signatures and re-sealed keys are about this size again on top of the body.
      e.data = Json{{"signatures", Json::array({Json{{"keyid", std::string(64, '0')}, {"sig", std::string(128, '0')}}})},
                    {"signed", a.ToJson()}}
                   .dump();
      list.push_back(std::move(e));
      ids.push_back(a.appliance_id);
    }
    for (auto& e : BlobEntries(assignments)) list.push_back(std::move(e));
    auto size = bundle::BundleSize(std::string(32, '0'), now, ids, list);
    return size.ok() ? *size : 0;
  }

  // The offers answer of one checked key (JSON API and page), its plan in `node`.
  std::variant<Json, Response> OfferOne(const CheckedKey& k, Node& node,
                                        std::optional<std::vector<bundle::EntrySource>>& metadata) const {
    node.who = k.who;
    node.installed = k.key.installed;
    node.key = &k.key;
    auto planned = Plan(*k.who.appliance, k.key.installed);
    if (auto* r = std::get_if<Response>(&planned)) return std::move(*r);
    node.plan = std::get<PortalPlan>(std::move(planned));
    Json out{{"appliance_id", k.key.appliance_id},
             {"clock_offset_seconds", k.offset},
             {"key_expires", FormatTimestamp(k.key.expires())},
             {"updates", StepsJson(node.plan)},
             {"bundle_bytes", 0}};
    if (OfferedCount(node.plan) > 0) {
      if (!metadata) {
        auto entries = MetadataEntries();
        if (auto* r = std::get_if<Response>(&entries)) return std::move(*r);
        metadata = std::get<std::vector<bundle::EntrySource>>(std::move(entries));
      }
      out["bundle_bytes"] = EstimateBytes(*metadata, {AssignmentOf(node)}, node.plan.now);
    }
    return out;
  }

  std::variant<Json, Response> Offers(std::string_view key_text) const {
    auto checked = CheckKey(key_text);
    if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
    Node node;
    std::optional<std::vector<bundle::EntrySource>> metadata;
    return OfferOne(std::get<CheckedKey>(checked), node, metadata);
  }

  // A cluster's offers: {"appliances": [each node's offers], "bundle_bytes" (of the one bundle)}.
  std::variant<Json, Response> OffersMany(const std::vector<std::string>& texts) const {
    auto checked = CheckKeys(texts);
    if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
    const auto& keys = std::get<std::vector<CheckedKey>>(checked);
    std::vector<Node> nodes(keys.size());
    std::optional<std::vector<bundle::EntrySource>> metadata;
    Json list = Json::array();
    std::vector<trust::Assignment> assignments;
    std::size_t offered = 0;
    for (std::size_t i = 0; i < keys.size(); ++i) {
      auto one = OfferOne(keys[i], nodes[i], metadata);
      if (auto* r = std::get_if<Response>(&one)) return Prefixed(std::move(*r), KeyLabel(i, keys.size(), keys[i].key.appliance_id));
      list.push_back(std::get<Json>(std::move(one)));
      assignments.push_back(AssignmentOf(nodes[i]));
      offered += OfferedCount(nodes[i].plan);
    }
    Json out{{"appliances", std::move(list)}, {"bundle_bytes", 0}};
    if (offered > 0 && metadata) out["bundle_bytes"] = EstimateBytes(*metadata, assignments, nodes.front().plan.now);
    return out;
  }

  static Json OfferedJson(const PortalPlan& plan) {
    Json updates = Json::array();
    for (const PortalStep& s : plan.steps) {
      if (s.withheld) continue;
      updates.push_back(Json{{"name", s.step.name},
                             {"version", s.step.version.ToString()},
                             {"kind", packages::KindName(s.step.kind)},
                             {"size", s.step.length},
                             {"reason", s.reason}});
    }
    return updates;
  }

  // Builds one bundle for `nodes` (one assignment each, every needed blob once), records it.
  // `cluster`: the answer lists the nodes and refusals name the node's key.
  std::variant<Json, Response> Build(std::vector<Node> nodes, const std::string& actor, const std::string& action,
                                     bool cluster) const {
    auto label = [&](std::size_t i) {
      return cluster ? KeyLabel(i, nodes.size(), nodes[i].who.appliance->appliance_id) : std::string();
    };
    std::size_t offered = 0;
    std::string nothing;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      auto planned = Plan(*nodes[i].who.appliance, nodes[i].installed);
      if (auto* r = std::get_if<Response>(&planned)) return Prefixed(std::move(*r), label(i));
      nodes[i].plan = std::get<PortalPlan>(std::move(planned));
      offered += OfferedCount(nodes[i].plan);
      nothing += (nothing.empty() ? "" : "; ") + nodes[i].plan.nothing_reason;
    }
    if (offered == 0) return ApiError(409, "nothing_to_download", nothing);

    auto metadata = MetadataEntries();
    if (auto* r = std::get_if<Response>(&metadata)) return std::move(*r);
    std::vector<bundle::EntrySource> entries = std::get<std::vector<bundle::EntrySource>>(std::move(metadata));

    // One assignment per node, each signed by the director for that node (the keyserver seals
    // its content keys to that node); a node with nothing offered gets one with no steps.
    std::vector<trust::Assignment> assignments;
    std::vector<std::string> ids;
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      const std::string& id = nodes[i].who.appliance->appliance_id;
      assignments.push_back(AssignmentOf(nodes[i]));
      auto signed_doc = ctx->keyserver.Sign("assignment", assignments.back().ToJson());
      if (!signed_doc.ok()) {
        if (signed_doc.error().code() == Errc::kNotFound) {
          return ApiError(404, "unknown_appliance", label(i) + "appliance is not enrolled");
        }
        if (signed_doc.error().code() == Errc::kPolicy) {
          return ApiError(403, "appliance_revoked", label(i) + "appliance " + id + " has been revoked");
        }
        return Prefixed(ctx->KeyserverFailure("sign assignment", signed_doc.error()), label(i));
      }
      bundle::EntrySource assignment;
      assignment.info.type = bundle::EntryType::kAssignment;
      assignment.info.name = id;
      assignment.data = signed_doc->dump();
      entries.push_back(std::move(assignment));
      ids.push_back(id);
    }
    for (auto& e : BlobEntries(assignments)) entries.push_back(std::move(e));

    const SysTime now = nodes.front().plan.now;
    const std::string& first = ids.front();
    const std::string bundle_id = Hex(ctx->random, 16);
    const std::string token = Hex(ctx->random, 16);
    const std::string file_name =
        (cluster ? "cluster-" + std::to_string(nodes.size()) + "-nodes" : first) + "-" + bundle_id.substr(0, 8) + ".upkb";
    const std::filesystem::path out = BundleDir() / (token + ".upkb");
    std::error_code ec;
    std::filesystem::create_directories(BundleDir(), ec);
    if (ec) return ApiError(500, "internal", "cannot create the bundle directory");
    auto written = bundle::WriteBundle(out, bundle_id, now, ids, std::move(entries));
    if (!written.ok()) {
      ctx->Log("portal: bundle for " + first + (cluster ? " and its cluster" : "") +
               " failed: " + written.error().message());
      return ApiError(500, "bundle_failed", "the bundle could not be written: " + written.error().message());
    }
    const std::uint64_t bytes = written->TotalBytes();
    const SysTime link_expires = now + ctx->config.bundle_link_validity;

    auto done = ctx->Transact<bool>("portal bundle", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
      // Under the appliances' row locks (taken in id order), two bundles for one appliance are
      // built one after the other: a key superseded meanwhile, or a step another request just
      // bundled, is refused.
      std::vector<std::size_t> order(nodes.size());
      for (std::size_t i = 0; i < order.size(); ++i) order[i] = i;
      std::sort(order.begin(), order.end(), [&](std::size_t x, std::size_t y) { return ids[x] < ids[y]; });
      for (std::size_t i : order) {
        if (nodes[i].who.is_new) UPK_TRY(InsertAppliance(c, *nodes[i].who.appliance, now));
        UPK_TRY(c.Exec("SELECT 1 FROM appliances WHERE appliance_id = $1 FOR UPDATE", ids[i]));
      }
      for (std::size_t i = 0; i < nodes.size(); ++i) {
        const std::string& id = ids[i];
        for (const auto& s : assignments[i].steps) {
          UPK_TRY_ASSIGN(db::Result taken, c.Exec("SELECT downloaded_at FROM portal_downloads WHERE appliance_id = $1 "
                                                  "AND name = $2 AND version = $3",
                                                  id, s.name, s.version.ToString()));
          if (taken.rows() > 0) {
            reject = ApiError(409, "nothing_to_download",
                              label(i) + s.name + " " + s.version.ToString() + " was put in another bundle for appliance " +
                                  id + " meanwhile; support can re-enable it");
            return Error(Errc::kPolicy, "raced");
          }
        }
        if (const trust::DownloadKey* key = nodes[i].key) {
          UPK_TRY_ASSIGN(db::Result newer, c.Exec("SELECT first_seen FROM portal_keys WHERE appliance_id = $1 AND "
                                                  "issued_at > $2 ORDER BY issued_at DESC LIMIT 1",
                                                  id, key->issued));
          if (newer.rows() > 0) {
            UPK_TRY_ASSIGN(SysTime seen, newer.Get<SysTime>(0, "first_seen"));
            reject = ApiError(409, "download_key_replayed",
                              label(i) + "a newer download key from this appliance was used on " + FormatTimestamp(seen) +
                                  "; use the newest");
            return Error(Errc::kPolicy, "replayed");
          }
          UPK_TRY(c.Exec("INSERT INTO portal_keys (appliance_id, nonce, issued_at, first_seen) VALUES ($1, $2, $3, $4) "
                         "ON CONFLICT (appliance_id, nonce) DO NOTHING",
                         id, key->nonce_hex(), key->issued, now));
        }
      }
      // One row per bundle (its link); a cluster bundle's row names its first node.
      UPK_TRY(c.Exec("INSERT INTO portal_bundles (bundle_id, token, appliance_id, file_name, bytes, created_at, expires_at) "
                     "VALUES ($1, $2, $3, $4, $5, $6, $7)",
                     bundle_id, token, first, file_name, static_cast<std::int64_t>(bytes), now, link_expires));
      for (std::size_t i = 0; i < nodes.size(); ++i) {
        const std::string& id = ids[i];
        Json steps = Json::array();
        for (const auto& s : assignments[i].steps) {
          steps.push_back(Json{{"name", s.name}, {"version", s.version.ToString()}});
          UPK_TRY(c.Exec("INSERT INTO portal_downloads (appliance_id, name, version, bundle_id, downloaded_at) "
                         "VALUES ($1, $2, $3, $4, $5) ON CONFLICT (appliance_id, name, version) DO UPDATE SET "
                         "bundle_id = EXCLUDED.bundle_id, downloaded_at = EXCLUDED.downloaded_at",
                         id, s.name, s.version.ToString(), bundle_id, now));
        }
        // Like a check-in: the rollout waves that gate these steps count this appliance, so the
        // success events of its install report drive their thresholds.
        for (const auto& [rollout, wave] : nodes[i].plan.new_members) {
          UPK_TRY(c.Exec("INSERT INTO rollout_members (rollout_id, appliance_id, wave, status, updated_at) "
                         "VALUES ($1, $2, $3, 'assigned', $4) ON CONFLICT (rollout_id, appliance_id) DO NOTHING",
                         rollout, id, wave, now));
        }
        Json detail{{"appliance_id", id}, {"bundle_id", bundle_id}, {"steps", steps}, {"bytes", bytes}};
        detail["key_nonce"] = nodes[i].key ? Json(nodes[i].key->nonce_hex()) : Json(nullptr);
        if (cluster) detail["cluster"] = ids;
        UPK_TRY(InsertAudit(c, now, actor, action, id, detail));
      }
      return true;
    });
    if (auto* r = std::get_if<Response>(&done)) {
      std::filesystem::remove(out, ec);
      return std::move(*r);
    }
    for (const Node& n : nodes) {
      if (!n.plan.new_members.empty()) fleet->Forget(n.who.appliance->appliance_id);  // reload its memberships
    }
    Json answer{{"bundle_id", bundle_id},
                {"url", "/portal/bundles/" + token + "/" + file_name},
                {"bytes", bytes},
                {"expires", FormatTimestamp(link_expires)},
                {"valid_until", FormatTimestamp(assignments.front().expires)},
                {"updates", Json::array()}};
    if (!cluster) {
      answer["updates"] = OfferedJson(nodes.front().plan);
      return answer;
    }
    Json list = Json::array();
    for (std::size_t i = 0; i < nodes.size(); ++i) {
      Json updates = OfferedJson(nodes[i].plan);
      for (Json u : updates) {
        u["appliance_id"] = ids[i];
        answer["updates"].push_back(std::move(u));
      }
      list.push_back(Json{{"appliance_id", ids[i]}, {"updates", std::move(updates)}});
    }
    answer["appliances"] = std::move(list);
    return answer;
  }

  // One node, as before clusters.
  std::variant<Json, Response> BuildOne(const Resolved& who, const packages::Installed& installed,
                                        const trust::DownloadKey* key, const std::string& actor,
                                        const std::string& action) const {
    std::vector<Node> nodes(1);
    nodes[0].who = who;
    nodes[0].installed = installed;
    nodes[0].key = key;
    return Build(std::move(nodes), actor, action, false);
  }

  std::variant<Json, Response> BundleForKey(std::string_view key_text) const {
    auto checked = CheckKey(key_text);
    if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
    const CheckedKey& k = std::get<CheckedKey>(checked);
    return BuildOne(k.who, k.key.installed, &k.key, "portal", "portal.bundle");
  }

  std::variant<Json, Response> BundleForKeys(const std::vector<std::string>& texts) const {
    auto checked = CheckKeys(texts);
    if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
    const auto& keys = std::get<std::vector<CheckedKey>>(checked);
    std::vector<Node> nodes(keys.size());
    for (std::size_t i = 0; i < keys.size(); ++i) {
      nodes[i].who = keys[i].who;
      nodes[i].installed = keys[i].key.installed;
      nodes[i].key = &keys[i].key;
    }
    return Build(std::move(nodes), "portal", "portal.bundle", true);
  }

  // The signed install report: verified with the appliance's key, events recorded like online.
  std::variant<Json, Response> Report(std::string_view text) const {
    if (text.size() > kReportBodyBytes) return ApiError(413, "too_large", "an install report is at most 1 MiB");
    auto id = trust::InstallReportApplianceId(text);
    if (!id.ok()) return ApiError(400, "invalid_report", id.error().message());
    auto found = FindAppliance(*id);
    if (auto* r = std::get_if<Response>(&found)) return std::move(*r);
    const Resolved who = std::get<Resolved>(std::move(found));
    auto report = trust::VerifyInstallReport(text, who.appliance->key, ctx->clock);
    if (!report.ok()) {
      const Errc code = report.error().code();
      if (code == Errc::kVerification) return ApiError(400, "bad_signature", report.error().message());
      if (code == Errc::kPolicy) return ApiError(400, "report_refused", report.error().message());
      return ApiError(400, "invalid_report", report.error().message());
    }
    std::vector<ApplianceEvent> events;
    if (report->events.is_array() && !report->events.empty()) {
      auto parsed = ParseEvents(report->events, trust::kMaxReportEvents, trust::kMaxReportLogTail);
      if (auto* r = std::get_if<Response>(&parsed)) return std::move(*r);
      events = std::get<std::vector<ApplianceEvent>>(std::move(parsed));
    }
    Json installed = Json::object();
    for (const auto& [name, version] : report->installed) installed[name] = version.ToString();
    const std::string digest = trust::StateDigest(report->installed);
    auto done = ctx->Transact<EventsOutcome>("portal report", [&](db::Connection& c, std::optional<Response>&) -> Expected<EventsOutcome> {
      const SysTime now = ctx->clock.Now();
      if (who.is_new) UPK_TRY(InsertAppliance(c, *who.appliance, now));
      EventsOutcome out;
      if (!events.empty()) {
        UPK_TRY_ASSIGN(out, InsertEvents(c, who.appliance->appliance_id, events, now));
      }
      // Seen at the report's time (never later than now); an older report than the last
      // check-in does not roll the fleet view back.
      const SysTime seen = std::min(report->created, now);
      UPK_TRY(c.Exec("UPDATE appliances SET installed = $2::jsonb, state_digest = $3, last_checkin = $4 "
                     "WHERE appliance_id = $1 AND (last_checkin IS NULL OR last_checkin <= $4)",
                     who.appliance->appliance_id, installed.dump(), digest, seen));
      UPK_TRY(InsertAudit(c, now, "appliance:" + who.appliance->appliance_id, "portal.report",
                          who.appliance->appliance_id,
                          Json{{"bundle_id", report->bundle_id},
                               {"nonce", report->nonce ? Json(*report->nonce) : Json(nullptr)},
                               {"installed", installed},
                               {"accepted_events", out.accepted},
                               {"duplicates", out.duplicates}}));
      return out;
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const EventsOutcome& out = std::get<EventsOutcome>(done);
    if (out.rollouts_changed) {
      if (auto st = fleet->Refresh(); !st.ok()) ctx->Log("catalog refresh after a report: " + st.error().message());
    }
    return Json{{"appliance_id", who.appliance->appliance_id},
                {"accepted_events", out.accepted},
                {"duplicates", out.duplicates}};
  }

  // ---- JSON routes ----

  // The body of the offers and bundles routes: {"download_key": TEXT} (one appliance, answered
  // as before clusters) or {"download_keys": [TEXT, ...]} (1..64, a cluster).
  struct Keys {
    std::vector<std::string> texts;
    bool cluster = false;
  };
  static std::variant<Keys, Response> KeysOf(const Request& req) {
    Json body;
    if (auto r = net::ParseJsonObject(req, {"download_key", "download_keys"}, body)) return *r;
    Keys out;
    if (body.contains("download_keys")) {
      if (body.contains("download_key")) return ApiError(400, "invalid_body", "give 'download_key' or 'download_keys', not both");
      const Json& list = body["download_keys"];
      if (!list.is_array() || list.empty() || list.size() > kMaxClusterKeys) {
        return ApiError(400, "invalid_field", "field 'download_keys': must be an array of 1.." +
                                                  std::to_string(kMaxClusterKeys) + " download keys (one per node)");
      }
      for (std::size_t i = 0; i < list.size(); ++i) {
        if (!list[i].is_string()) {
          return ApiError(400, "invalid_field", "field 'download_keys[" + std::to_string(i) + "]': must be a string");
        }
        out.texts.push_back(list[i].get<std::string>());
      }
      out.cluster = true;
      return out;
    }
    // One key keeps its own limit (the route's is sized for a cluster's keys).
    if (req.body().size() > kKeyBodyBytes) {
      return ApiError(413, "body_too_large", "request body of " + std::to_string(req.body().size()) +
                                                 " bytes exceeds the limit of " + std::to_string(kKeyBodyBytes) +
                                                 " for one download key");
    }
    auto text = GetString(body, "download_key");
    if (!text.ok()) return net::BadField(text.error());
    out.texts.push_back(*text);
    return out;
  }

  Response OffersRoute(const Request& req) const {
    auto keys = KeysOf(req);
    if (auto* r = std::get_if<Response>(&keys)) return std::move(*r);
    const Keys& k = std::get<Keys>(keys);
    auto got = k.cluster ? OffersMany(k.texts) : Offers(k.texts.front());
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(200, std::get<Json>(got));
  }

  Response BundlesRoute(const Request& req) const {
    auto keys = KeysOf(req);
    if (auto* r = std::get_if<Response>(&keys)) return std::move(*r);
    const Keys& k = std::get<Keys>(keys);
    auto got = k.cluster ? BundleForKeys(k.texts) : BundleForKey(k.texts.front());
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(201, std::get<Json>(got));
  }

  Response ReportsRoute(const Request& req) const {
    auto got = Report(req.body());
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(200, std::get<Json>(got));
  }

  Response FileRoute(const Request& req) const {
    const std::string token(req.PathParam("token"));
    const std::string file(req.PathParam("file"));
    auto not_found = [] { return ApiError(404, "not_found", "no such bundle (download links expire; build a new one)"); };
    if (!IsLowerHex(token, 32) || !file.ends_with(".upkb")) return not_found();
    auto got = ctx->Transact<std::optional<std::string>>(
        "bundle lookup",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<std::optional<std::string>> {
          UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT file_name FROM portal_bundles WHERE token = $1 AND expires_at > $2",
                                              token, ctx->clock.Now()));
          if (r.rows() == 0) return std::optional<std::string>();
          UPK_TRY_ASSIGN(std::string name, r.Get<std::string>(0, "file_name"));
          return std::optional<std::string>(name);
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    const auto& name = std::get<std::optional<std::string>>(got);
    if (!name || *name != file) return not_found();
    auto opened = net::OpenFile::Open(BundleDir() / (token + ".upkb"));
    if (!opened.ok()) return not_found();
    Response r = Response::FromFile(std::move(opened).value(), "application/octet-stream");
    r.SetHeader("Content-Disposition", "attachment; filename=\"" + file + "\"");
    r.SetHeader("Cache-Control", "private, no-store");
    return r;
  }

  std::variant<std::string, Response> ApplianceParam(const Request& req) const {
    const std::string id(req.PathParam("id"));
    if (!trust::IsValidApplianceId(id)) return ApiError(404, "unknown_appliance", "not an appliance id");
    return id;
  }

  Response DownloadsRoute(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    auto id = ApplianceParam(req);
    if (auto* r = std::get_if<Response>(&id)) return std::move(*r);
    const std::string& appliance = std::get<std::string>(id);
    auto got = ctx->Transact<Json>("downloads", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      UPK_TRY_ASSIGN(db::Result a, c.Exec("SELECT 1 FROM appliances WHERE appliance_id = $1", appliance));
      if (a.rows() == 0) {
        reject = ApiError(404, "unknown_appliance", "no appliance " + appliance);
        return Error(Errc::kNotFound, "unknown appliance");
      }
      UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT name, version, bundle_id, downloaded_at FROM portal_downloads "
                                          "WHERE appliance_id = $1 ORDER BY downloaded_at, name, version",
                                          appliance));
      Json list = Json::array();
      for (int i = 0; i < r.rows(); ++i) {
        Json d;
        for (const char* f : {"name", "version", "bundle_id"}) {
          UPK_TRY_ASSIGN(std::string v, r.Get<std::string>(i, f));
          d[f] = v;
        }
        UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(i, "downloaded_at"));
        d["downloaded_at"] = FormatTimestamp(at);
        list.push_back(std::move(d));
      }
      return list;
    }, db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(200, Json{{"downloads", std::get<Json>(got)}});
  }

  Response ReenableRoute(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    auto id = ApplianceParam(req);
    if (auto* r = std::get_if<Response>(&id)) return std::move(*r);
    const std::string& appliance = std::get<std::string>(id);
    Json body;
    if (auto r = net::ParseJsonObject(req, {"name", "version"}, body)) return *r;
    auto name = GetString(body, "name");
    if (!name.ok()) return net::BadField(name.error());
    auto version_text = GetString(body, "version");
    if (!version_text.ok()) return net::BadField(version_text.error());
    auto version = packages::Version::Parse(*version_text);
    if (!version.ok()) return ApiError(400, "invalid_field", "field 'version': " + version.error().message());
    const std::string v = version->ToString();
    auto got = ctx->Transact<Json>("reenable", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
      const SysTime now = ctx->clock.Now();
      UPK_TRY_ASSIGN(db::Result r, c.Exec("DELETE FROM portal_downloads WHERE appliance_id = $1 AND name = $2 AND "
                                          "version = $3 RETURNING bundle_id, downloaded_at",
                                          appliance, *name, v));
      if (r.rows() == 0) {
        reject = ApiError(404, "not_downloaded", *name + " " + v + " was not downloaded for appliance " + appliance);
        return Error(Errc::kNotFound, "not downloaded");
      }
      UPK_TRY_ASSIGN(std::string bundle_id, r.Get<std::string>(0, "bundle_id"));
      UPK_TRY_ASSIGN(SysTime at, r.Get<SysTime>(0, "downloaded_at"));
      Json d{{"appliance_id", appliance}, {"name", *name}, {"version", v}, {"bundle_id", bundle_id},
             {"downloaded_at", FormatTimestamp(at)}};
      UPK_TRY(InsertAudit(c, now, op.actor(), "portal.reenable", appliance, d));
      return d;
    });
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(200, Json{{"reenabled", std::get<Json>(got)}});
  }

  // Support: the same bundle for a named appliance, from a key or a stated/last known state.
  Response SupportBundleRoute(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    auto id = ApplianceParam(req);
    if (auto* r = std::get_if<Response>(&id)) return std::move(*r);
    const std::string& appliance = std::get<std::string>(id);
    Json body = Json::object();
    if (!req.body().empty()) {
      if (auto r = net::ParseJsonObject(req, {"download_key", "installed"}, body)) return *r;
    }
    if (body.contains("download_key")) {
      if (body.contains("installed")) {
        return ApiError(400, "invalid_body", "give 'download_key' or 'installed', not both");
      }
      auto text = GetString(body, "download_key");
      if (!text.ok()) return net::BadField(text.error());
      auto checked = CheckKey(*text);
      if (auto* r = std::get_if<Response>(&checked)) return std::move(*r);
      const CheckedKey& k = std::get<CheckedKey>(checked);
      if (k.key.appliance_id != appliance) {
        return ApiError(400, "invalid_download_key", "the download key is for appliance " + k.key.appliance_id +
                                                         ", not " + appliance);
      }
      auto got = BuildOne(k.who, k.key.installed, &k.key, op.actor(), "support.bundle");
      if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
      return Response::Json(201, std::get<Json>(got));
    }
    auto found = FindAppliance(appliance);
    if (auto* r = std::get_if<Response>(&found)) return std::move(*r);
    const Resolved resolved = std::get<Resolved>(std::move(found));
    packages::Installed installed;
    Json state = Json::object();
    if (body.contains("installed")) {
      if (!body["installed"].is_object()) return ApiError(400, "invalid_field", "field 'installed': must be an object");
      state = body["installed"];
    } else if (auto pending = fleet->Pending(appliance)) {
      state = pending->installed;
    } else {
      auto got = ctx->Transact<Json>("appliance state", [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
        UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT installed::text AS installed FROM appliances WHERE appliance_id = $1",
                                            appliance));
        if (r.rows() == 0) return Json::object();
        UPK_TRY_ASSIGN(std::string text, r.Get<std::string>(0, "installed"));
        return ParseJson(text);
      }, db::TxOptions{.read_only = true});
      if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
      state = std::get<Json>(got);
    }
    if (state.size() > 1000) return ApiError(400, "invalid_field", "field 'installed': at most 1000 packages");
    for (const auto& [name, value] : state.items()) {
      if (!packages::IsValidPackageName(name)) {
        return ApiError(400, "invalid_field", "field 'installed': '" + name + "' is not a package name");
      }
      if (!value.is_string()) return ApiError(400, "invalid_field", "field 'installed." + name + "': must be a version string");
      auto version = packages::Version::Parse(value.get<std::string>());
      if (!version.ok()) return ApiError(400, "invalid_field", "field 'installed." + name + "': " + version.error().message());
      installed.emplace(name, *version);
    }
    auto got = BuildOne(resolved, installed, nullptr, op.actor(), "support.bundle");
    if (auto* r = std::get_if<Response>(&got)) return std::move(*r);
    return Response::Json(201, std::get<Json>(got));
  }

  // The background job: links past their validity lose their file and row; a bundle file with
  // no row (a crash between writing it and committing its row) is deleted once it is older than
  // a link's validity, a ".part" left by a crash once it is older than an hour.
  Status Cleanup() const {
    auto conn = ctx->pool.Acquire();
    if (!conn.ok()) return conn.error();
    const SysTime now = ctx->clock.Now();
    UPK_TRY_ASSIGN(db::Result r, (*conn)->Exec("DELETE FROM portal_bundles WHERE expires_at <= $1 RETURNING token", now));
    for (int i = 0; i < r.rows(); ++i) {
      UPK_TRY_ASSIGN(std::string token, r.Get<std::string>(i, "token"));
      std::error_code ec;
      std::filesystem::remove(BundleDir() / (token + ".upkb"), ec);
      if (ec) ctx->Log("portal: cannot delete expired bundle " + token + ": " + ec.message());
    }
    return RemoveOrphans(**conn, now);
  }

  Status RemoveOrphans(db::Connection& c, SysTime now) const {
    std::error_code ec;
    std::filesystem::directory_iterator it(BundleDir(), ec);
    if (ec) return OkStatus();  // no bundle yet
    std::vector<std::pair<std::filesystem::path, std::string>> candidates;  // (file, token): old, no row known yet
    for (; !ec && it != std::filesystem::directory_iterator(); it.increment(ec)) {
      const std::filesystem::path path = it->path();
      const std::string name = path.filename().string();
      const bool part = name.size() == 32 + 10 && name.ends_with(".upkb.part");
      const bool whole = name.size() == 32 + 5 && name.ends_with(".upkb");
      if ((!part && !whole) || !IsLowerHex(name.substr(0, 32), 32)) continue;  // not ours: left alone
      std::error_code fec;
      if (!it->is_regular_file(fec) || fec) continue;
      const auto mtime = std::filesystem::last_write_time(path, fec);
      if (fec) continue;
      const auto modified = std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::file_clock::to_sys(mtime));
      if (part) {
        if (now - modified > kPartFileAge) {
          std::filesystem::remove(path, fec);
          ctx->Log("portal: deleted an unfinished bundle file " + name + (fec ? " failed: " + fec.message() : ""));
        }
      } else if (now - modified > ctx->config.bundle_link_validity) {
        candidates.emplace_back(path, name.substr(0, 32));
      }
    }
    for (const auto& [path, token] : candidates) {
      UPK_TRY_ASSIGN(db::Result row, c.Exec("SELECT 1 FROM portal_bundles WHERE token = $1", token));
      if (row.rows() > 0) continue;
      std::error_code fec;
      std::filesystem::remove(path, fec);
      ctx->Log("portal: deleted bundle file " + token + ".upkb, which has no download link" +
               (fec ? " (failed: " + fec.message() + ")" : ""));
    }
    return OkStatus();
  }

  // ---- the HTML page ----

  // A form shown again with its error next to the field is a page that worked: 200, so a browser
  // logs no failed load (the JSON API answers the same refusals with their 4xx status).
  static int FormStatus(int status) { return status < 500 ? 200 : status; }

  static Response Page(int status, const std::string& content) {
    std::string html =
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Upkeep download portal</title>"
        "<style>body{font-family:sans-serif;max-width:60em;margin:2em auto;padding:0 1em}"
        "textarea{width:100%;font-family:monospace}table{border-collapse:collapse}"
        "td,th{border:1px solid #999;padding:.3em .6em;text-align:left}.error{color:#a00;font-weight:bold}"
        ".withheld{color:#666}</style></head><body><h1>Upkeep download portal</h1>\n" +
        content + "</body></html>\n";
    Response r = Response::Text(status, std::move(html), "text/html; charset=utf-8");
    r.SetHeader("Content-Security-Policy",
                "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'");
    r.SetHeader("X-Content-Type-Options", "nosniff");
    r.SetHeader("Referrer-Policy", "no-referrer");
    r.SetHeader("Cache-Control", "no-store");
    return r;
  }

  static std::string KeyForm(const std::string& key, const std::string& error) {
    std::string out =
        "<h2>1. Paste the download key</h2><p>On the appliance: <code>appliance-agent download-key</code> or the "
        "updates page. Line breaks and spaces do not matter.</p>\n<form method=\"post\" action=\"/portal\" novalidate>"
        "<label for=\"download_key\">Download key</label><br>"
        "<textarea id=\"download_key\" name=\"download_key\" rows=\"8\" required>" +
        HtmlEscape(key) + "</textarea>";
    if (!error.empty()) out += "<p class=\"error\" role=\"alert\">" + HtmlEscape(error) + "</p>";
    out += "<p><button type=\"submit\">Check the key</button></p></form>\n";
    return out;
  }

  static std::string ReportForm(const std::string& message, bool error) {
    std::string out =
        "<h2>After the import: upload the installation report</h2><p>The appliance writes a signed report next to "
        "the bundle; paste it here so the vendor's fleet view stays true.</p>\n"
        "<form method=\"post\" action=\"/portal/report\" novalidate><label for=\"report\">Installation report</label><br>"
        "<textarea id=\"report\" name=\"report\" rows=\"6\" required></textarea>";
    if (!message.empty()) {
      out += std::string("<p class=\"") + (error ? "error\" role=\"alert\"" : "ok\"") + ">" + HtmlEscape(message) + "</p>";
    }
    out += "<p><button type=\"submit\">Upload the report</button></p></form>\n"
           "<form method=\"post\" action=\"/portal/report\" enctype=\"multipart/form-data\" novalidate>"
           "<label for=\"report_file\">or the report file</label> "
           "<input type=\"file\" id=\"report_file\" name=\"report\" required> "
           "<button type=\"submit\">Upload the file</button></form>\n";
    return out;
  }

  // One appliance's updates table, under `heading`.
  static std::string NodeHtml(const Json& offers, const std::string& heading) {
    std::string out = heading + HtmlEscape(offers["appliance_id"].get<std::string>()) + "</h" + heading.substr(2, 1) + ">";
    out += "<p>Appliance clock: " + HtmlEscape(FormatOffset(offers["clock_offset_seconds"].get<std::int64_t>())) +
           ". This key expires " + HtmlEscape(offers["key_expires"].get<std::string>()) + ".</p>\n";
    if (offers["updates"].empty()) {
      out += "<p>The appliance is up to date.</p>\n";
    } else {
      out += "<table><thead><tr><th>#</th><th>Package</th><th>Version</th><th>Kind</th><th>Size (bytes)</th>"
             "<th>Why</th><th>In the bundle</th></tr></thead><tbody>\n";
      int n = 0;
      for (const Json& u : offers["updates"]) {
        const bool offered = u["offered"].get<bool>();
        out += std::string("<tr") + (offered ? "" : " class=\"withheld\"") + "><td>" + std::to_string(++n) + "</td><td>" +
               HtmlEscape(u["name"].get<std::string>()) + "</td><td>" + HtmlEscape(u["version"].get<std::string>()) +
               "</td><td>" + HtmlEscape(u["kind"].get<std::string>()) + "</td><td>" +
               std::to_string(u["size"].get<std::uint64_t>()) + "</td><td>" + HtmlEscape(u["reason"].get<std::string>()) +
               "</td><td>" + (offered ? std::string("yes") : "no: " + HtmlEscape(u["withheld"].get<std::string>())) +
               "</td></tr>\n";
      }
      out += "</tbody></table>\n";
    }
    return out;
  }

  // The offers of one key, or of a cluster's keys ({"appliances": [...]}), and the bundle button
  // (the whole pasted text in a hidden field).
  static std::string OffersHtml(const Json& offers, const std::string& key, const std::string& error) {
    std::string out;
    if (offers.contains("appliances")) {
      out += "<h2>2. Updates for the " + std::to_string(offers["appliances"].size()) +
             " nodes of the cluster (one bundle for all)</h2>\n";
      for (const Json& node : offers["appliances"]) out += NodeHtml(node, "<h3>Node ");
    } else {
      out += NodeHtml(offers, "<h2>2. Updates for ");
    }
    out += "<form method=\"post\" action=\"/portal/bundle\"><input type=\"hidden\" name=\"download_key\" value=\"" +
           HtmlEscape(key) + "\">";
    if (!error.empty()) out += "<p class=\"error\" role=\"alert\">" + HtmlEscape(error) + "</p>";
    out += "<p>Bundle size: about " + std::to_string(offers["bundle_bytes"].get<std::uint64_t>()) +
           " bytes.</p><p><button type=\"submit\">3. Download the bundle</button></p></form>\n";
    return out;
  }

  // The textarea's keys: one (answered as before clusters) or several.
  std::variant<Json, Response> OffersForText(const std::string& text) const {
    const auto keys = SplitKeys(text);
    return keys.size() > 1 ? OffersMany(keys) : Offers(text);
  }
  std::variant<Json, Response> BundleForText(const std::string& text) const {
    const auto keys = SplitKeys(text);
    return keys.size() > 1 ? BundleForKeys(keys) : BundleForKey(text);
  }

  static std::optional<std::string> Form(const Request& req, std::string_view field) {
    auto type = req.Header("Content-Type");
    if (!type) return std::nullopt;
    if (type->starts_with("multipart/form-data")) return MultipartField(*type, req.body(), field);
    if (!type->starts_with("application/x-www-form-urlencoded")) return std::nullopt;
    return FormField(req.body(), field);
  }

  // multipart/form-data (RFC 7578): the body of the part named `field` (a file or a text field);
  // nullopt when the boundary is missing or the part is absent or unterminated.
  static std::optional<std::string> MultipartField(std::string_view type, std::string_view body, std::string_view field) {
    auto at = type.find("boundary=");
    if (at == std::string_view::npos) return std::nullopt;
    std::string_view boundary = type.substr(at + 9);
    boundary = boundary.substr(0, boundary.find(';'));
    if (boundary.size() >= 2 && boundary.front() == '"' && boundary.back() == '"') {
      boundary = boundary.substr(1, boundary.size() - 2);
    }
    if (boundary.empty() || boundary.size() > 70) return std::nullopt;
    const std::string delimiter = "--" + std::string(boundary);
    std::size_t pos = body.find(delimiter);
    while (pos != std::string_view::npos) {
      pos += delimiter.size();
      if (body.substr(pos, 2) == "--") return std::nullopt;  // the closing delimiter
      if (body.substr(pos, 2) != "\r\n") return std::nullopt;
      const std::size_t head_end = body.find("\r\n\r\n", pos);
      if (head_end == std::string_view::npos) return std::nullopt;
      const std::string_view head = body.substr(pos, head_end - pos);
      const std::size_t content = head_end + 4;
      const std::size_t next = body.find("\r\n" + delimiter, content);
      if (next == std::string_view::npos) return std::nullopt;
      // The part's name: Content-Disposition: form-data; name="FIELD"[; filename="..."].
      const std::string wanted = "name=\"" + std::string(field) + "\"";
      std::size_t name_at = head.find(wanted);
      if (name_at != std::string_view::npos && (name_at == 0 || head[name_at - 1] == ' ' || head[name_at - 1] == ';')) {
        return std::string(body.substr(content, next - content));
      }
      pos = next + 2;
    }
    return std::nullopt;
  }

  Response PortalGet(const Request&) const { return Page(200, KeyForm("", "") + ReportForm("", false)); }

  Response PortalPost(const Request& req) const {
    auto key = Form(req, "download_key");
    if (!key) return Page(200, KeyForm("", "Paste the download key into the field (a form field named download_key).") +
                                   ReportForm("", false));
    auto got = OffersForText(*key);
    if (auto* r = std::get_if<Response>(&got)) {
      return Page(FormStatus(r->status), KeyForm(*key, ErrorOf(*r).second) + ReportForm("", false));
    }
    return Page(200, KeyForm(*key, "") + OffersHtml(std::get<Json>(got), *key, "") + ReportForm("", false));
  }

  Response PortalBundle(const Request& req) const {
    auto key = Form(req, "download_key");
    if (!key) return Page(200, KeyForm("", "Paste the download key into the field.") + ReportForm("", false));
    auto got = BundleForText(*key);
    if (auto* r = std::get_if<Response>(&got)) {
      const std::string message = ErrorOf(*r).second;
      // Show the list again (with what is withheld now) and the reason next to the button.
      auto offers = OffersForText(*key);
      if (auto* j = std::get_if<Json>(&offers)) {
        return Page(FormStatus(r->status), KeyForm(*key, "") + OffersHtml(*j, *key, message) + ReportForm("", false));
      }
      return Page(FormStatus(r->status), KeyForm(*key, message) + ReportForm("", false));
    }
    Response r(303);
    r.SetHeader("Location", std::get<Json>(got)["url"].get<std::string>());
    r.SetHeader("Cache-Control", "no-store");
    return r;
  }

  Response PortalReport(const Request& req) const {
    auto report = Form(req, "report");
    if (!report) return Page(200, KeyForm("", "") + ReportForm("Paste the installation report into the field.", true));
    auto got = Report(*report);
    if (auto* r = std::get_if<Response>(&got)) {
      return Page(FormStatus(r->status), KeyForm("", "") + ReportForm(ErrorOf(*r).second, true));
    }
    const Json& j = std::get<Json>(got);
    return Page(200, KeyForm("", "") +
                         ReportForm("Report of " + j["appliance_id"].get<std::string>() + " accepted: " +
                                        std::to_string(j["accepted_events"].get<std::int64_t>()) + " new events, " +
                                        std::to_string(j["duplicates"].get<std::int64_t>()) + " already known.",
                                    false));
  }
};

}  // namespace

Status RegisterPortal(const std::shared_ptr<Context>& ctx, net::Server& server) {
  if (!ctx->fleet || !ctx->repository) return Error(Errc::kInternal, "the fleet and repository must be initialised first");
  auto api = std::make_shared<PortalApi>(ctx, ctx->fleet.get());
  // Weak: the context owns the jobs and the portal owns the context (no cycle); the routes keep it alive.
  ctx->jobs.push_back(BackgroundJob{"portal bundle cleanup", kCleanupInterval, [weak = std::weak_ptr<PortalApi>(api)] {
                                      auto a = weak.lock();
                                      return a ? a->Cleanup() : OkStatus();
                                    }});

  auto opts = [](std::size_t max_body) {
    net::RouteOptions o;
    o.max_body_bytes = max_body;
    o.use_worker_pool = true;  // database, keyserver, bundle writing: never on the I/O thread
    return o;
  };
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/portal/offers", [api](const Request& r) { return api->OffersRoute(r); },
                        opts(kKeysBodyBytes)));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/portal/bundles", [api](const Request& r) { return api->BundlesRoute(r); },
                        opts(kKeysBodyBytes)));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/portal/reports", [api](const Request& r) { return api->ReportsRoute(r); },
                        opts(kReportBodyBytes)));
  UPK_TRY(server.Handle(Method::kGet, "/portal/bundles/{token}/{file}", [api](const Request& r) { return api->FileRoute(r); },
                        opts(0)));
  UPK_TRY(server.Handle(Method::kGet, "/api/v1/appliances/{id}/downloads",
                        [api](const Request& r) { return api->DownloadsRoute(r); }, opts(0)));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/appliances/{id}/downloads/reenable",
                        [api](const Request& r) { return api->ReenableRoute(r); }, opts(kKeyBodyBytes)));
  UPK_TRY(server.Handle(Method::kPost, "/api/v1/appliances/{id}/bundle",
                        [api](const Request& r) { return api->SupportBundleRoute(r); }, opts(kKeyBodyBytes + 64 * 1024)));
  UPK_TRY(server.Handle(Method::kGet, "/portal", [api](const Request& r) { return api->PortalGet(r); }, opts(0)));
  UPK_TRY(server.Handle(Method::kPost, "/portal", [api](const Request& r) { return api->PortalPost(r); },
                        opts(kFormBodyBytes)));
  UPK_TRY(server.Handle(Method::kPost, "/portal/bundle", [api](const Request& r) { return api->PortalBundle(r); },
                        opts(kFormBodyBytes)));
  UPK_TRY(server.Handle(Method::kPost, "/portal/report", [api](const Request& r) { return api->PortalReport(r); },
                        opts(kReportFormBodyBytes)));
  return OkStatus();
}

}  // namespace upkeep::updater
