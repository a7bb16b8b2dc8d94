#include "fleet_state.hpp"

#include <algorithm>

namespace upkeep::updater {

namespace {

constexpr std::size_t kFlushChunk = 2000;
constexpr std::size_t kMaxCachedCatalogs = 4096;
constexpr int kMaxRevocationPages = 100;
// The keyserver stamps a revocation when its request starts; asking again from a minute before
// the previous answer's clock catches one that committed slowly (docs/keyserver.md).
constexpr std::chrono::seconds kRevocationOverlap{60};

std::int64_t SteadyMs() {
  return std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

Expected<std::vector<std::string>> StringArray(const std::string& json_text) {
  UPK_TRY_ASSIGN(Json parsed, ParseJson(json_text));
  std::vector<std::string> out;
  if (parsed.is_null()) return out;
  if (!parsed.is_array()) return Error(Errc::kParse, "expected a JSON array");
  for (const Json& v : parsed) {
    if (!v.is_string()) return Error(Errc::kParse, "expected strings");
    out.push_back(v.get<std::string>());
  }
  return out;
}

std::size_t EnvelopeBytes(const CachedAppliance& a) {
  return a.assignment && a.assignment->envelope ? a.assignment->envelope->size() : 0;
}

}  // namespace

const ReleaseInfo* CatalogSnapshot::Find(std::string_view name, std::string_view version) const {
  auto it = by_id.find({std::string(name), std::string(version)});
  return it == by_id.end() ? nullptr : &releases[it->second];
}

Offer OfferFor(const CatalogSnapshot& snapshot, const CachedAppliance& appliance, bool explain) {
  Offer offer;
  std::vector<std::size_t> allowed;
  auto channel = snapshot.channels.find(appliance.channel);
  if (channel != snapshot.channels.end()) {
    for (std::size_t index : channel->second) {
      const ReleaseInfo& r = snapshot.releases[index];
      auto withhold = [&](std::string reason) {
        if (!explain) return;  // the check-in path needs no reasons: no allocations for them
        offer.withheld.push_back(Json{{"name", r.manifest.name}, {"version", r.version}, {"reason", std::move(reason)}});
      };
      if (!appliance.pin.empty()) {  // held at its installed versions: nothing is offered
        withhold(appliance.pin);
        continue;
      }
      if (r.yanked) {
        withhold("yanked");
        continue;
      }
      if (r.published_at > appliance.maintenance_end) {
        withhold("published after the licence's maintenance ended (" + FormatTimestamp(appliance.maintenance_end) + ")");
        continue;
      }
      auto gate = snapshot.gates.find({index, appliance.channel});
      if (gate != snapshot.gates.end()) {
        const RolloutView& ro = gate->second;
        const std::string which = "rollout " + std::to_string(ro.id);
        if (ro.state == "active" || ro.state == "completed") {
          auto wave = policy::OpenWaveFor(ro.id, ro.waves, ro.current_wave, appliance.appliance_id, appliance.groups);
          if (!wave) {
            withhold(which + " (" + ro.state + "): not in an open wave yet");
            continue;
          }
          offer.gated[index] = {ro.id, *wave};
        } else if (ro.state == "paused") {
          if (!ro.members.contains(appliance.appliance_id)) {
            withhold(which + " is paused");
            continue;
          }
          offer.gated[index] = {ro.id, -1};  // already a member: nothing to record
        } else {
          withhold(which + " is " + ro.state);
          continue;
        }
      }
      allowed.push_back(index);
    }
  }
  std::lock_guard lock(snapshot.catalogs_mu);
  auto found = snapshot.catalogs.find(allowed);
  if (found != snapshot.catalogs.end()) {
    offer.catalog = found->second;
    return offer;
  }
  std::vector<packages::Manifest> manifests;
  manifests.reserve(allowed.size());
  for (std::size_t index : allowed) manifests.push_back(snapshot.releases[index].manifest);
  auto built = packages::Catalog::FromManifests(std::move(manifests));
  // The releases table keys on (name, version), so building cannot fail on duplicates; a kind
  // clash between two releases of one name would, and then nothing of this set is offered.
  offer.catalog = built.ok() ? std::make_shared<const packages::Catalog>(std::move(built).value())
                             : std::make_shared<const packages::Catalog>();
  if (snapshot.catalogs.size() >= kMaxCachedCatalogs) snapshot.catalogs.clear();
  snapshot.catalogs.emplace(std::move(allowed), offer.catalog);
  return offer;
}

packages::PlanOptions PlanOptionsFor(const CachedAppliance& appliance) {
  packages::PlanOptions options;
  options.allow_major.insert(appliance.allow_major.begin(), appliance.allow_major.end());
  return options;
}

Status FleetState::Init() {
  std::lock_guard lock(refresh_mu_);
  auto conn = ctx_.pool.Acquire();
  if (!conn.ok()) return conn.error();
  UPK_TRY_ASSIGN(db::Result r, (*conn)->Exec("SELECT coalesce(max(id), 0) AS id FROM audit"));
  UPK_TRY_ASSIGN(audit_cursor_, r.Get<std::int64_t>(0, "id"));
  UPK_TRY_ASSIGN(auto snap, LoadSnapshot(**conn));
  std::lock_guard slock(snapshot_mu_);
  snapshot_ = std::move(snap);
  return OkStatus();
}

std::shared_ptr<const CatalogSnapshot> FleetState::snapshot() const {
  std::lock_guard lock(snapshot_mu_);
  return snapshot_;
}

Expected<std::shared_ptr<CatalogSnapshot>> FleetState::LoadSnapshot(db::Connection& conn) {
  auto previous = snapshot();
  std::shared_ptr<CatalogSnapshot> snap;
  auto body = [&](db::Connection& c) -> Status {
    snap = std::make_shared<CatalogSnapshot>();
    UPK_TRY_ASSIGN(db::Result g, c.Exec("SELECT generation FROM catalog_generation"));
    UPK_TRY_ASSIGN(snap->generation, g.Get<std::int64_t>(0, "generation"));
    UPK_TRY_ASSIGN(db::Result rel,
                   c.Exec("SELECT name, version, target_path, blob_sha256, blob_length, sealed_content_key, "
                          "published_at, yanked_at IS NOT NULL AS yanked FROM releases ORDER BY name, version"));
    for (int i = 0; i < rel.rows(); ++i) {
      ReleaseInfo info;
      UPK_TRY_ASSIGN(std::string name, rel.Get<std::string>(i, "name"));
      UPK_TRY_ASSIGN(info.version, rel.Get<std::string>(i, "version"));
      UPK_TRY_ASSIGN(info.target_path, rel.Get<std::string>(i, "target_path"));
      UPK_TRY_ASSIGN(info.sha256, rel.Get<std::string>(i, "blob_sha256"));
      UPK_TRY_ASSIGN(std::int64_t length, rel.Get<std::int64_t>(i, "blob_length"));
      info.length = static_cast<std::uint64_t>(length);
      UPK_TRY_ASSIGN(info.sealed_content_key, rel.Get<std::string>(i, "sealed_content_key"));
      UPK_TRY_ASSIGN(info.published_at, rel.Get<SysTime>(i, "published_at"));
      UPK_TRY_ASSIGN(info.yanked, rel.Get<bool>(i, "yanked"));
      const ReleaseInfo* known = previous ? previous->Find(name, info.version) : nullptr;
      if (known) {
        info.manifest = known->manifest;  // release manifests never change once published
      } else {
        UPK_TRY_ASSIGN(db::Result m, c.Exec("SELECT manifest FROM releases WHERE name = $1 AND version = $2", name,
                                            info.version));
        UPK_TRY_ASSIGN(std::string text, m.Get<std::string>(0, "manifest"));
        auto manifest = packages::Manifest::Parse(text);
        if (!manifest.ok()) {
          ctx_.Log("catalog: release " + name + " " + info.version + " has an unreadable manifest, not offered: " +
                   manifest.error().message());
          continue;
        }
        info.manifest = std::move(manifest).value();
        info.manifest.payload.clear();
        info.manifest.payload.shrink_to_fit();
      }
      snap->by_id[{name, info.version}] = snap->releases.size();
      snap->releases.push_back(std::move(info));
    }
    UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT channel, name, version FROM channel_releases"));
    for (int i = 0; i < ch.rows(); ++i) {
      UPK_TRY_ASSIGN(std::string channel, ch.Get<std::string>(i, "channel"));
      UPK_TRY_ASSIGN(std::string name, ch.Get<std::string>(i, "name"));
      UPK_TRY_ASSIGN(std::string version, ch.Get<std::string>(i, "version"));
      auto it = snap->by_id.find({name, version});
      if (it != snap->by_id.end()) snap->channels[channel].push_back(it->second);
    }
    // Per (release, channel): the live rollout, else the newest aborted one (an aborted release
    // stays withheld until a new rollout is made; it does not fall back to "offered to all").
    UPK_TRY_ASSIGN(db::Result ro,
                   c.Exec("SELECT DISTINCT ON (name, version, channel) id, name, version, channel, state, start_at, "
                          "current_wave FROM rollouts ORDER BY name, version, channel, (state <> 'aborted') DESC, id DESC"));
    std::map<std::int64_t, std::pair<std::size_t, std::string>> by_rollout;
    const SysTime now = ctx_.clock.Now();
    for (int i = 0; i < ro.rows(); ++i) {
      RolloutView v;
      UPK_TRY_ASSIGN(v.id, ro.Get<std::int64_t>(i, "id"));
      UPK_TRY_ASSIGN(v.name, ro.Get<std::string>(i, "name"));
      UPK_TRY_ASSIGN(v.version, ro.Get<std::string>(i, "version"));
      UPK_TRY_ASSIGN(v.channel, ro.Get<std::string>(i, "channel"));
      UPK_TRY_ASSIGN(v.state, ro.Get<std::string>(i, "state"));
      UPK_TRY_ASSIGN(v.start_at, ro.Get<SysTime>(i, "start_at"));
      UPK_TRY_ASSIGN(std::int64_t wave, ro.Get<std::int64_t>(i, "current_wave"));
      v.current_wave = static_cast<int>(wave);
      auto rel_it = snap->by_id.find({v.name, v.version});
      if (rel_it == snap->by_id.end()) continue;
      if (v.state == "scheduled" && v.start_at <= now) snap->has_due_schedule = true;
      by_rollout[v.id] = {rel_it->second, v.channel};
      snap->gates[{rel_it->second, v.channel}] = std::move(v);
    }
    UPK_TRY_ASSIGN(db::Result wv, c.Exec("SELECT w.rollout_id, w.idx, w.percent, to_jsonb(w.groups)::text AS groups "
                                         "FROM rollout_waves w JOIN rollouts r ON r.id = w.rollout_id "
                                         "WHERE r.state <> 'aborted' ORDER BY w.rollout_id, w.idx"));
    for (int i = 0; i < wv.rows(); ++i) {
      UPK_TRY_ASSIGN(std::int64_t id, wv.Get<std::int64_t>(i, "rollout_id"));
      auto owner = by_rollout.find(id);
      if (owner == by_rollout.end()) continue;
      policy::Wave wave;
      UPK_TRY_ASSIGN(auto percent, wv.GetOptional<std::int64_t>(i, "percent"));
      if (percent) wave.percent = static_cast<int>(*percent);
      UPK_TRY_ASSIGN(auto groups, wv.GetOptional<std::string>(i, "groups"));
      if (groups) {
        UPK_TRY_ASSIGN(wave.groups, StringArray(*groups));
      }
      snap->gates[owner->second].waves.push_back(std::move(wave));
    }
    UPK_TRY_ASSIGN(db::Result pm, c.Exec("SELECT m.rollout_id, m.appliance_id FROM rollout_members m "
                                         "JOIN rollouts r ON r.id = m.rollout_id WHERE r.state = 'paused'"));
    for (int i = 0; i < pm.rows(); ++i) {
      UPK_TRY_ASSIGN(std::int64_t id, pm.Get<std::int64_t>(i, "rollout_id"));
      UPK_TRY_ASSIGN(std::string appliance, pm.Get<std::string>(i, "appliance_id"));
      auto owner = by_rollout.find(id);
      if (owner != by_rollout.end()) snap->gates[owner->second].members.insert(std::move(appliance));
    }
    return OkStatus();
  };
  // One repeatable-read transaction: releases, channels and rollouts from one instant.
  db::TxOptions options;
  options.isolation = db::Isolation::kRepeatableRead;
  options.read_only = true;
  Status st = db::WithTransaction(conn, body, options);
  if (!st.ok()) return st.error();
  return snap;
}

Status FleetState::InvalidateUpdated(db::Connection& c) {
  UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT id, target FROM audit WHERE id > $1 AND action = 'appliance.update' "
                                      "ORDER BY id LIMIT 100000",
                                      audit_cursor_));
  std::vector<std::string> changed;
  for (int i = 0; i < r.rows(); ++i) {
    UPK_TRY_ASSIGN(audit_cursor_, r.Get<std::int64_t>(i, "id"));
    UPK_TRY_ASSIGN(std::string target, r.Get<std::string>(i, "target"));
    changed.push_back(std::move(target));
  }
  for (const std::string& id : changed) Forget(id);
  return OkStatus();
}

Status FleetState::Refresh(bool force) {
  std::lock_guard lock(refresh_mu_);
  last_refresh_ms_ = SteadyMs();
  auto conn = ctx_.pool.Acquire();
  if (!conn.ok()) return conn.error();
  UPK_TRY_ASSIGN(db::Result g, (*conn)->Exec("SELECT generation FROM catalog_generation"));
  UPK_TRY_ASSIGN(std::int64_t generation, g.Get<std::int64_t>(0, "generation"));
  auto current = snapshot();
  if (!force && current && current->generation == generation) return OkStatus();
  UPK_TRY(InvalidateUpdated(**conn));
  UPK_TRY_ASSIGN(auto snap, LoadSnapshot(**conn));
  std::lock_guard slock(snapshot_mu_);
  snapshot_ = std::move(snap);
  return OkStatus();
}

bool FleetState::RefreshDue() const { return SteadyMs() - last_refresh_ms_.load() >= 1000; }

void FleetState::MaybeRefresh() {
  if (SteadyMs() - last_refresh_ms_.load() < 1000) return;
  std::unique_lock lock(refresh_mu_, std::try_to_lock);
  if (!lock.owns_lock()) return;  // another thread is at it; use the current snapshot
  lock.unlock();
  if (auto st = Refresh(); !st.ok()) ctx_.Log("catalog refresh: " + st.error().message());
}

std::shared_ptr<const CachedAppliance> FleetState::Find(const std::string& appliance_id) const {
  std::lock_guard lock(cache_mu_);
  auto it = cache_.find(appliance_id);
  return it == cache_.end() ? nullptr : it->second;
}

std::uint64_t FleetState::epoch() const {
  std::lock_guard lock(cache_mu_);
  return epoch_;
}

void FleetState::Remember(std::shared_ptr<const CachedAppliance> entry, std::uint64_t epoch_at_load) {
  std::lock_guard lock(cache_mu_);
  if (epoch_at_load != epoch_) return;  // invalidated while it was loading: the next look reloads
  auto it = cache_.find(entry->appliance_id);
  if (it != cache_.end()) {
    envelope_bytes_ -= EnvelopeBytes(*it->second);
    cache_.erase(it);
  }
  // Full: drop an arbitrary entry. Eviction costs that appliance one database read next time.
  while (cache_.size() >= kMaxCachedAppliances && !cache_.empty()) {
    envelope_bytes_ -= EnvelopeBytes(*cache_.begin()->second);
    cache_.erase(cache_.begin());
  }
  if (envelope_bytes_ + EnvelopeBytes(*entry) > kMaxCachedEnvelopeBytes) {
    auto slim = std::make_shared<CachedAppliance>(*entry);
    slim->assignment->envelope.reset();  // kept in the database only
    entry = std::move(slim);
  }
  envelope_bytes_ += EnvelopeBytes(*entry);
  cache_.emplace(entry->appliance_id, std::move(entry));
}

void FleetState::Replace(const std::shared_ptr<const CachedAppliance>& old,
                         std::shared_ptr<const CachedAppliance> updated) {
  std::uint64_t at;
  {
    std::lock_guard lock(cache_mu_);
    auto it = cache_.find(old->appliance_id);
    if (it == cache_.end() || it->second != old) return;  // changed or dropped meanwhile
    at = epoch_;
  }
  Remember(std::move(updated), at);
}

void FleetState::Forget(const std::string& appliance_id) {
  std::lock_guard lock(cache_mu_);
  ++epoch_;
  auto it = cache_.find(appliance_id);
  if (it == cache_.end()) return;
  envelope_bytes_ -= EnvelopeBytes(*it->second);
  cache_.erase(it);
}

Expected<std::shared_ptr<const CachedAppliance>> FleetState::Load(const std::string& appliance_id) {
  auto conn = ctx_.pool.Acquire();
  if (!conn.ok()) return conn.error();
  UPK_TRY_ASSIGN(
      db::Result r,
      (*conn)->Exec("SELECT a.public_key, a.customer, a.channel, to_jsonb(a.groups)::text AS groups, "
                    "to_jsonb(a.allow_major)::text AS allow_major, a.status, a.pinned_by, a.pinned_reason, "
                    "a.enrolled_at, a.maintenance_end, s.state_digest, s.plan_hash, s.expires_at, s.envelope, "
                    "(SELECT coalesce(jsonb_agg(m.rollout_id), '[]'::jsonb)::text FROM rollout_members m "
                    " WHERE m.appliance_id = a.appliance_id) AS memberships "
                    "FROM appliances a LEFT JOIN assignments s ON s.appliance_id = a.appliance_id "
                    "WHERE a.appliance_id = $1",
                    appliance_id));
  if (r.rows() == 0) return std::shared_ptr<const CachedAppliance>();
  auto a = std::make_shared<CachedAppliance>();
  a->appliance_id = appliance_id;
  UPK_TRY_ASSIGN(std::string key_text, r.Get<std::string>(0, "public_key"));
  UPK_TRY_ASSIGN(a->public_key, ParseJson(key_text));
  UPK_TRY_ASSIGN(a->key, trust::AppliancePublicKey::FromJson(a->public_key));
  if (a->key.appliance_id() != appliance_id) return Error(Errc::kInternal, "stored key does not match " + appliance_id);
  UPK_TRY_ASSIGN(a->customer, r.Get<std::string>(0, "customer"));
  UPK_TRY_ASSIGN(a->channel, r.Get<std::string>(0, "channel"));
  UPK_TRY_ASSIGN(std::string groups, r.Get<std::string>(0, "groups"));
  UPK_TRY_ASSIGN(a->groups, StringArray(groups));
  UPK_TRY_ASSIGN(std::string allow_major, r.Get<std::string>(0, "allow_major"));
  UPK_TRY_ASSIGN(a->allow_major, StringArray(allow_major));
  UPK_TRY_ASSIGN(std::string status, r.Get<std::string>(0, "status"));
  a->revoked = status == "revoked";
  UPK_TRY_ASSIGN(auto pinned_by, r.GetOptional<std::string>(0, "pinned_by"));
  UPK_TRY_ASSIGN(auto pinned_reason, r.GetOptional<std::string>(0, "pinned_reason"));
  if (pinned_by && pinned_reason) a->pin = "pinned by " + *pinned_by + ": " + *pinned_reason;
  UPK_TRY_ASSIGN(a->enrolled_at, r.Get<SysTime>(0, "enrolled_at"));
  UPK_TRY_ASSIGN(a->maintenance_end, r.Get<SysTime>(0, "maintenance_end"));
  UPK_TRY_ASSIGN(auto digest, r.GetOptional<std::string>(0, "state_digest"));
  if (digest) {
    StoredAssignment s;
    s.state_digest = *digest;
    UPK_TRY_ASSIGN(s.plan_hash, r.Get<std::string>(0, "plan_hash"));
    UPK_TRY_ASSIGN(s.expires, r.Get<SysTime>(0, "expires_at"));
    UPK_TRY_ASSIGN(std::string envelope, r.Get<std::string>(0, "envelope"));
    // Cached as the exact bytes a check-in answer splices in (the dump() of the parsed envelope,
    // which is what was stored); an unreadable one stays uncached, so the check-in reads it and
    // answers 500 as before.
    auto parsed = ParseJson(envelope);
    if (parsed.ok()) {
      std::string canonical = parsed->dump(-1, ' ', false, Json::error_handler_t::replace);
      s.envelope = std::make_shared<const std::string>(canonical == envelope ? std::move(envelope) : std::move(canonical));
    }
    a->assignment = std::move(s);
  }
  UPK_TRY_ASSIGN(std::string members, r.Get<std::string>(0, "memberships"));
  UPK_TRY_ASSIGN(Json ids, ParseJson(members));
  for (const Json& id : ids) {
    if (id.is_number_integer()) a->memberships.push_back(id.get<std::int64_t>());
  }
  return std::shared_ptr<const CachedAppliance>(std::move(a));
}

void FleetState::RecordCheckin(const std::string& appliance_id, PendingCheckin checkin) {
  std::lock_guard lock(pending_mu_);
  auto it = pending_.find(appliance_id);
  if (it != pending_.end()) {
    if (it->second.at <= checkin.at) it->second = std::move(checkin);
    return;
  }
  if (pending_.size() >= kMaxPendingCheckins) {
    // Only reachable when the database has been away for a long time with more distinct
    // appliances checking in than the bound: the newest state of this one is dropped.
    ctx_.Log("check-in writes: pending limit reached, dropping the state of " + appliance_id);
    return;
  }
  pending_.emplace(appliance_id, std::move(checkin));
}

std::optional<PendingCheckin> FleetState::Pending(const std::string& appliance_id) const {
  std::lock_guard lock(pending_mu_);
  auto it = pending_.find(appliance_id);
  if (it == pending_.end()) return std::nullopt;
  return it->second;
}

Status FleetState::FlushCheckins() {
  std::lock_guard flush_lock(flush_mu_);
  std::unordered_map<std::string, PendingCheckin> batch;
  {
    std::lock_guard lock(pending_mu_);
    batch.swap(pending_);
  }
  if (batch.empty()) return OkStatus();
  Status result = OkStatus();
  std::vector<std::pair<std::string, PendingCheckin>> failed;
  Json rows = Json::array();
  std::vector<std::pair<std::string, PendingCheckin>> in_rows;
  auto write = [&]() {
    if (rows.empty()) return;
    auto st = db::WithTransaction(ctx_.pool, [&](db::Connection& c) -> Status {
      auto r = c.Exec(
          "UPDATE appliances a SET installed = u.installed, state_digest = u.state_digest, "
          "agent_version = u.agent_version, last_checkin = u.at, clock_offset_seconds = u.clock_offset "
          "FROM jsonb_to_recordset($1::jsonb) AS u(appliance_id text, installed jsonb, state_digest text, "
          "agent_version text, at timestamptz, clock_offset bigint) "
          "WHERE a.appliance_id = u.appliance_id AND (a.last_checkin IS NULL OR a.last_checkin <= u.at)",
          rows.dump());
      if (!r.ok()) return r.error();
      return OkStatus();
    });
    if (!st.ok()) {
      if (result.ok()) result = st;
      for (auto& p : in_rows) failed.push_back(std::move(p));
    }
    rows = Json::array();
    in_rows.clear();
  };
  for (auto& [id, p] : batch) {
    rows.push_back(Json{{"appliance_id", id}, {"installed", p.installed}, {"state_digest", p.state_digest},
                        {"agent_version", p.agent_version}, {"at", FormatTimestamp(p.at)},
                        {"clock_offset", p.clock_offset_seconds}});
    in_rows.emplace_back(id, std::move(p));
    if (rows.size() >= kFlushChunk) write();
  }
  write();
  if (!failed.empty()) {
    // Put them back unless a newer check-in arrived meanwhile; the next run writes them.
    std::lock_guard lock(pending_mu_);
    for (auto& [id, p] : failed) {
      if (!pending_.contains(id)) pending_.emplace(std::move(id), std::move(p));
    }
  }
  return result;
}

Status FleetState::PollRevocations() {
  std::lock_guard lock(revocation_mu_);
  for (int page = 0; page < kMaxRevocationPages; ++page) {
    auto got = ctx_.keyserver.RevokedSince(revocations_since_);
    if (!got.ok()) return got.error();
    Json ids = Json::array();
    Json times = Json::array();
    for (const auto& r : got->revoked) {
      ids.push_back(r.appliance_id);
      times.push_back(FormatTimestamp(r.revoked_at));
    }
    if (!ids.empty()) {
      auto st = db::WithTransaction(ctx_.pool, [&](db::Connection& c) -> Status {
        auto r = c.Exec(
            "UPDATE appliances a SET status = 'revoked', revoked_at = u.at "
            "FROM jsonb_to_recordset($1::jsonb) AS u(appliance_id text, at timestamptz) "
            "WHERE a.appliance_id = u.appliance_id AND a.status <> 'revoked'",
            [&] {
              Json rows = Json::array();
              for (std::size_t i = 0; i < ids.size(); ++i) rows.push_back(Json{{"appliance_id", ids[i]}, {"at", times[i]}});
              return rows.dump();
            }());
        if (!r.ok()) return r.error();
        return OkStatus();
      });
      if (!st.ok()) return st;  // `since` not advanced: the same page is asked for again
      for (const auto& r : got->revoked) Forget(r.appliance_id);  // reloaded as revoked on next contact
    }
    if (got->truncated && !got->revoked.empty()) {
      revocations_since_ = got->revoked.back().revoked_at;
      continue;
    }
    revocations_since_ = got->now - kRevocationOverlap;
    return OkStatus();
  }
  return OkStatus();
}

Status FleetState::StartDueRollouts() {
  auto snap = snapshot();
  if (!snap || !snap->has_due_schedule) {
    // A schedule that fell due since the last load is not in the snapshot's flag: look at the times.
    bool due = false;
    const SysTime now = ctx_.clock.Now();
    if (snap) {
      for (const auto& [key, ro] : snap->gates) {
        if (ro.state == "scheduled" && ro.start_at <= now) due = true;
      }
    }
    if (!due) return OkStatus();
  }
  const SysTime now = ctx_.clock.Now();
  auto changed = db::WithTransaction(ctx_.pool, [&](db::Connection& c) -> Expected<bool> {
    UPK_TRY_ASSIGN(db::Result r, c.Exec("UPDATE rollouts SET state = 'active', updated_at = $1 "
                                        "WHERE state = 'scheduled' AND start_at <= $1 RETURNING id, name, version, channel",
                                        now));
    for (int i = 0; i < r.rows(); ++i) {
      UPK_TRY_ASSIGN(std::int64_t id, r.Get<std::int64_t>(i, "id"));
      UPK_TRY(c.Exec("UPDATE rollout_waves SET opened_at = $2 WHERE rollout_id = $1 AND idx = 0 AND opened_at IS NULL",
                     id, now)
                  );
      UPK_TRY(InsertAudit(c, now, "updater", "rollout.wave_open", std::to_string(id),
                          Json{{"wave", 0}, {"reason", "start_at reached"}}));
    }
    if (r.rows() > 0) UPK_TRY(Context::BumpCatalogGeneration(c));
    return r.rows() > 0;
  });
  if (!changed.ok()) return changed.error();
  if (*changed) return Refresh();
  return OkStatus();
}

Expected<std::optional<Json>> LoadRolloutJson(db::Connection& c, std::int64_t id) {
  UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT id, name, version, channel, state, start_at, success_threshold, "
                                      "error_threshold, min_wave_members, current_wave, pause_reason, created_by, "
                                      "created_at FROM rollouts WHERE id = $1",
                                      id));
  if (r.rows() == 0) return std::optional<Json>();
  Json out;
  UPK_TRY_ASSIGN(std::int64_t rid, r.Get<std::int64_t>(0, "id"));
  out["id"] = rid;
  for (const char* f : {"name", "version", "channel", "state", "created_by"}) {
    UPK_TRY_ASSIGN(std::string v, r.Get<std::string>(0, f));
    out[f] = v;
  }
  for (const char* f : {"success_threshold", "error_threshold", "min_wave_members", "current_wave"}) {
    UPK_TRY_ASSIGN(std::int64_t v, r.Get<std::int64_t>(0, f));
    out[f] = v;
  }
  UPK_TRY_ASSIGN(SysTime start, r.Get<SysTime>(0, "start_at"));
  out["start_at"] = FormatTimestamp(start);
  UPK_TRY_ASSIGN(SysTime created, r.Get<SysTime>(0, "created_at"));
  out["created_at"] = FormatTimestamp(created);
  UPK_TRY_ASSIGN(auto reason, r.GetOptional<std::string>(0, "pause_reason"));
  out["pause_reason"] = reason ? Json(*reason) : Json(nullptr);
  UPK_TRY_ASSIGN(db::Result w,
                 c.Exec("SELECT w.idx, w.percent, to_jsonb(w.groups)::text AS groups, w.opened_at, "
                        "count(m.appliance_id) AS members, "
                        "count(m.appliance_id) FILTER (WHERE m.status = 'succeeded') AS succeeded, "
                        "count(m.appliance_id) FILTER (WHERE m.status = 'failed') AS failed "
                        "FROM rollout_waves w LEFT JOIN rollout_members m ON m.rollout_id = w.rollout_id AND m.wave = w.idx "
                        "WHERE w.rollout_id = $1 GROUP BY w.idx, w.percent, w.groups, w.opened_at ORDER BY w.idx",
                        id));
  Json waves = Json::array();
  for (int i = 0; i < w.rows(); ++i) {
    Json wave;
    UPK_TRY_ASSIGN(std::int64_t idx, w.Get<std::int64_t>(i, "idx"));
    wave["index"] = idx;
    UPK_TRY_ASSIGN(auto percent, w.GetOptional<std::int64_t>(i, "percent"));
    if (percent) wave["percent"] = *percent;
    UPK_TRY_ASSIGN(auto groups, w.GetOptional<std::string>(i, "groups"));
    if (groups) {
      UPK_TRY_ASSIGN(auto list, StringArray(*groups));
      wave["groups"] = list;
    }
    UPK_TRY_ASSIGN(auto opened, w.GetOptional<SysTime>(i, "opened_at"));
    wave["opened_at"] = opened ? Json(FormatTimestamp(*opened)) : Json(nullptr);
    for (const char* f : {"members", "succeeded", "failed"}) {
      UPK_TRY_ASSIGN(std::int64_t v, w.Get<std::int64_t>(i, f));
      wave[f] = v;
    }
    waves.push_back(std::move(wave));
  }
  out["waves"] = std::move(waves);
  return std::optional<Json>(std::move(out));
}

Expected<bool> EvaluateRollout(db::Connection& c, std::int64_t id, SysTime now) {
  UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT state, current_wave, success_threshold, error_threshold, "
                                      "min_wave_members, (SELECT count(*) FROM rollout_waves w WHERE w.rollout_id = $1) "
                                      "AS wave_count FROM rollouts WHERE id = $1 FOR UPDATE",
                                      id));
  if (r.rows() == 0) return false;
  UPK_TRY_ASSIGN(std::string state, r.Get<std::string>(0, "state"));
  if (state != "active") return false;  // paused, scheduled, finished: nothing moves by itself
  UPK_TRY_ASSIGN(std::int64_t current, r.Get<std::int64_t>(0, "current_wave"));
  UPK_TRY_ASSIGN(std::int64_t wave_count, r.Get<std::int64_t>(0, "wave_count"));
  policy::Thresholds t;
  UPK_TRY_ASSIGN(std::int64_t success, r.Get<std::int64_t>(0, "success_threshold"));
  UPK_TRY_ASSIGN(std::int64_t error, r.Get<std::int64_t>(0, "error_threshold"));
  UPK_TRY_ASSIGN(std::int64_t min_members, r.Get<std::int64_t>(0, "min_wave_members"));
  t.success_threshold = static_cast<int>(success);
  t.error_threshold = static_cast<int>(error);
  t.min_wave_members = static_cast<int>(min_members);
  UPK_TRY_ASSIGN(db::Result m, c.Exec("SELECT wave, count(*) AS members, "
                                      "count(*) FILTER (WHERE status = 'succeeded') AS succeeded, "
                                      "count(*) FILTER (WHERE status = 'failed') AS failed "
                                      "FROM rollout_members WHERE rollout_id = $1 GROUP BY wave",
                                      id));
  std::vector<policy::WaveCounts> counts(static_cast<std::size_t>(std::max<std::int64_t>(wave_count, 0)));
  for (int i = 0; i < m.rows(); ++i) {
    UPK_TRY_ASSIGN(std::int64_t wave, m.Get<std::int64_t>(i, "wave"));
    if (wave < 0 || wave >= wave_count) continue;
    auto& wc = counts[static_cast<std::size_t>(wave)];
    UPK_TRY_ASSIGN(wc.members, m.Get<std::int64_t>(i, "members"));
    UPK_TRY_ASSIGN(wc.succeeded, m.Get<std::int64_t>(i, "succeeded"));
    UPK_TRY_ASSIGN(wc.failed, m.Get<std::int64_t>(i, "failed"));
  }
  policy::Verdict v = policy::Evaluate(counts, static_cast<int>(current), static_cast<int>(wave_count), t);
  const std::string target = std::to_string(id);
  switch (v.decision) {
    case policy::Decision::kNothing:
      return false;
    case policy::Decision::kPause:
      UPK_TRY(c.Exec("UPDATE rollouts SET state = 'paused', pause_reason = $2, updated_at = $3 WHERE id = $1", id,
                     v.reason, now)
                  );
      UPK_TRY(InsertAudit(c, now, "updater", "rollout.auto_pause", target, Json{{"reason", v.reason}}));
      return true;
    case policy::Decision::kOpenNextWave:
      UPK_TRY(c.Exec("UPDATE rollouts SET current_wave = current_wave + 1, updated_at = $2 WHERE id = $1", id, now)
                  );
      UPK_TRY(c.Exec("UPDATE rollout_waves SET opened_at = $3 WHERE rollout_id = $1 AND idx = $2", id, current + 1, now)
                  );
      UPK_TRY(InsertAudit(c, now, "updater", "rollout.wave_open", target,
                          Json{{"wave", current + 1}, {"reason", v.reason}}));
      return true;
    case policy::Decision::kComplete:
      UPK_TRY(c.Exec("UPDATE rollouts SET state = 'completed', updated_at = $2 WHERE id = $1", id, now));
      UPK_TRY(InsertAudit(c, now, "updater", "rollout.complete", target, Json{{"reason", v.reason}}));
      return true;
  }
  return false;
}

Status InitFleet(Context& ctx) {
  auto fleet = std::make_shared<FleetState>(ctx);
  UPK_TRY(fleet->Init());
  ctx.fleet = fleet;
  // The jobs hold a raw pointer: the Context owns the FleetState and outlives its jobs.
  FleetState* f = fleet.get();
  ctx.jobs.push_back(BackgroundJob{"check-in writes", std::chrono::seconds(1), [f] { return f->FlushCheckins(); }});
  ctx.jobs.push_back(BackgroundJob{"catalog refresh", std::chrono::seconds(1), [f] { return f->Refresh(); }});
  ctx.jobs.push_back(BackgroundJob{"rollout start", std::chrono::seconds(1), [f] { return f->StartDueRollouts(); }});
  ctx.jobs.push_back(BackgroundJob{"revocation feed", ctx.config.revocation_poll, [f] { return f->PollRevocations(); }});
  return OkStatus();
}

}  // namespace upkeep::updater
