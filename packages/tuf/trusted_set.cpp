#include "upkeep/tuf/trusted_set.hpp"

namespace upkeep::tuf {
namespace {

Error Verification(const std::string& msg) { return Error(Errc::kVerification, msg); }
Error OutOfOrder(const std::string& msg) { return Error(Errc::kInvalidArgument, msg); }

std::string V(std::int64_t v) { return std::to_string(v); }

}  // namespace

Expected<TrustedMetadataSet> TrustedMetadataSet::Create(std::string_view root_bytes, SysTime reference_time) {
  auto root = Metadata<Root>::Parse(root_bytes);
  if (!root) return root.error().Wrap("trusted root.json");
  auto self = VerifyByRoot(root->signed_body, kRootRole, *root);
  if (!self) return self.error().Wrap("trusted root.json");
  return TrustedMetadataSet(std::move(root).value(), reference_time);
}

Status TrustedMetadataSet::UpdateRoot(std::string_view bytes) {
  if (timestamp_) return OutOfOrder("cannot update root after timestamp");
  auto parsed = Metadata<Root>::Parse(bytes);
  if (!parsed) return parsed.error();
  Metadata<Root>& next = *parsed;
  const std::string name = "root.json version " + V(next.signed_body.version);
  // 5.3.4: signed by a threshold of the old root's root keys and of the new root's.
  auto by_old = VerifyByRoot(root_.signed_body, kRootRole, next);
  if (!by_old) return by_old.error().Wrap(name + ": by the trusted root");
  // 5.3.5: exactly N+1 (no rollback, no skipped version).
  if (next.signed_body.version != root_.signed_body.version + 1) {
    return Verification("root.json: expected version " + V(root_.signed_body.version + 1) + ", got " +
                        V(next.signed_body.version));
  }
  auto by_new = VerifyByRoot(next.signed_body, kRootRole, next);
  if (!by_new) return by_new.error().Wrap(name + ": by itself");
  root_ = std::move(next);
  return OkStatus();
}

Expected<TimestampUpdate> TrustedMetadataSet::UpdateTimestamp(std::string_view bytes) {
  if (snapshot_) return OutOfOrder("cannot update timestamp after snapshot");
  // 5.3.10: the root we ended the root update with must not be expired.
  if (root_.signed_body.IsExpired(reference_time_)) {
    return Verification("root.json version " + V(root_.signed_body.version) + " expired at " +
                        FormatTimestamp(root_.signed_body.expires));
  }
  auto parsed = Metadata<Timestamp>::Parse(bytes);
  if (!parsed) return parsed.error();
  UPK_TRY(VerifyByRoot(root_.signed_body, kTimestampRole, *parsed));
  const Timestamp& next = parsed->signed_body;
  if (timestamp_) {
    const Timestamp& cur = timestamp_->signed_body;
    if (next.version < cur.version) {
      return Verification("timestamp.json: version " + V(next.version) + " is older than the trusted " + V(cur.version));
    }
    if (next.version == cur.version) return TimestampUpdate::kUnchanged;
    if (next.snapshot_meta.version < cur.snapshot_meta.version) {
      return Verification("timestamp.json: snapshot version " + V(next.snapshot_meta.version) +
                          " is older than the trusted " + V(cur.snapshot_meta.version));
    }
  }
  // Trusted from here for rollback checks, even if it turns out expired below.
  timestamp_ = std::move(parsed).value();
  UPK_TRY(CheckFinalTimestamp());
  return TimestampUpdate::kAccepted;
}

Status TrustedMetadataSet::CheckFinalTimestamp() const {
  const Timestamp& t = timestamp_->signed_body;
  if (t.IsExpired(reference_time_)) {
    return Verification("timestamp.json version " + V(t.version) + " expired at " + FormatTimestamp(t.expires));
  }
  return OkStatus();
}

Status TrustedMetadataSet::UpdateSnapshot(std::string_view bytes, bool trusted) {
  if (!timestamp_) return OutOfOrder("cannot update snapshot before timestamp");
  if (targets_.count(kTargetsRole)) return OutOfOrder("cannot update snapshot after targets");
  UPK_TRY(CheckFinalTimestamp());
  const MetaFile& meta = timestamp_->signed_body.snapshot_meta;
  if (!trusted) UPK_TRY(meta.VerifyLengthAndHashes(bytes, "snapshot.json"));
  auto parsed = Metadata<Snapshot>::Parse(bytes);
  if (!parsed) return parsed.error();
  UPK_TRY(VerifyByRoot(root_.signed_body, kSnapshotRole, *parsed));
  // 5.5.5: no targets role may disappear or go back in version.
  if (snapshot_) {
    for (const auto& [name, old_meta] : snapshot_->signed_body.meta) {
      auto it = parsed->signed_body.meta.find(name);
      if (it == parsed->signed_body.meta.end()) {
        return Verification("snapshot.json: '" + name + "' was removed");
      }
      if (it->second.version < old_meta.version) {
        return Verification("snapshot.json: '" + name + "' version " + V(it->second.version) +
                            " is older than the trusted " + V(old_meta.version));
      }
    }
  }
  snapshot_ = std::move(parsed).value();
  return CheckFinalSnapshot();
}

Status TrustedMetadataSet::CheckFinalSnapshot() const {
  const Snapshot& s = snapshot_->signed_body;
  if (s.IsExpired(reference_time_)) {
    return Verification("snapshot.json version " + V(s.version) + " expired at " + FormatTimestamp(s.expires));
  }
  std::int64_t want = timestamp_->signed_body.snapshot_meta.version;
  if (s.version != want) {
    return Verification("snapshot.json: version " + V(s.version) + " is not the version " + V(want) +
                        " that timestamp.json names");
  }
  return OkStatus();
}

Expected<const Targets*> TrustedMetadataSet::UpdateDelegatedTargets(std::string_view bytes, const std::string& role_name,
                                                                    const std::string& delegator_name, bool trusted) {
  if (!snapshot_) return OutOfOrder("cannot load targets before snapshot");
  UPK_TRY(CheckFinalSnapshot());
  const Targets* delegator = nullptr;
  if (delegator_name == kRootRole) {
    if (role_name != kTargetsRole) return OutOfOrder("root delegates only 'targets', not '" + role_name + "'");
  } else {
    auto it = targets_.find(delegator_name);
    if (it == targets_.end()) return OutOfOrder("cannot load '" + role_name + "' before its delegator '" + delegator_name + "'");
    delegator = &it->second.signed_body;
  }
  const std::string file = role_name + ".json";
  auto meta_it = snapshot_->signed_body.meta.find(file);
  if (meta_it == snapshot_->signed_body.meta.end()) {
    return Verification("snapshot.json does not list '" + file + "'");
  }
  const MetaFile& meta = meta_it->second;
  if (!trusted) UPK_TRY(meta.VerifyLengthAndHashes(bytes, file));
  auto parsed = Metadata<Targets>::Parse(bytes);
  if (!parsed) return parsed.error().Wrap(file);
  if (delegator) {
    UPK_TRY(VerifyByDelegator(*delegator, role_name, *parsed));
  } else {
    UPK_TRY(VerifyByRoot(root_.signed_body, kTargetsRole, *parsed));
  }
  const Targets& t = parsed->signed_body;
  if (t.version != meta.version) {
    return Verification(file + ": version " + V(t.version) + " is not the version " + V(meta.version) +
                        " that snapshot.json names");
  }
  if (t.IsExpired(reference_time_)) {
    return Verification(file + " version " + V(t.version) + " expired at " + FormatTimestamp(t.expires));
  }
  auto [it, inserted] = targets_.insert_or_assign(role_name, std::move(parsed).value());
  (void)inserted;
  return &it->second.signed_body;
}

const Metadata<Targets>* TrustedMetadataSet::targets(const std::string& role_name) const {
  auto it = targets_.find(role_name);
  return it == targets_.end() ? nullptr : &it->second;
}

}  // namespace upkeep::tuf
