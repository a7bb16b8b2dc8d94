// The set of TUF metadata a client trusts during one update cycle, and the rules for adding
// to it: the state machine of the specification's detailed client workflow (5.3 to 5.6).
//
// Contract: the set starts from a trusted root (verified against its own threshold, expiry not
// checked: a newer root may replace it) and a reference time fixed for the whole cycle. Updates
// must come in workflow order: root* -> timestamp -> snapshot -> targets -> delegated targets;
// an update out of order is refused (kInvalidArgument). Each Update* verifies signatures,
// versions, rollback, hashes/lengths and expiry exactly as the specification orders them and
// only then makes the new metadata trusted. Two documented exceptions, both as python-tuf does
// so a stale local copy still protects against rollback: a timestamp or snapshot that verifies
// but is expired (or, for snapshot, not the version the timestamp names) is kept as trusted for
// later rollback checks while the call still reports the failure.
// The set does no I/O: the Updater (updater.hpp) fetches and persists. Not thread-safe.
#pragma once

#include <map>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/tuf/metadata.hpp"

namespace upkeep::tuf {

enum class TimestampUpdate {
  kAccepted,   // the new timestamp is now trusted
  kUnchanged,  // same version as the trusted one: the trusted one is kept (not an error)
};

class TrustedMetadataSet {
 public:
  // Parses the trusted root and checks it carries a threshold of its own root signatures.
  static Expected<TrustedMetadataSet> Create(std::string_view root_bytes, SysTime reference_time);

  // 5.3: a root of version N+1, signed by a threshold of the trusted root's root keys and of
  // its own. Refused once a timestamp has been loaded.
  Status UpdateRoot(std::string_view bytes);

  // 5.3.10 + 5.4: checks the final root is not expired, then the timestamp's signatures,
  // version (lower: rollback error; equal: kUnchanged), that its snapshot version does not go
  // back, and its expiry.
  Expected<TimestampUpdate> UpdateTimestamp(std::string_view bytes);

  // 5.5: the trusted timestamp must not be expired; then length/hashes against timestamp meta
  // (skipped when `trusted`, i.e. read back from our own metadata dir), signatures, no targets
  // role removed or rolled back against the previously trusted snapshot, expiry and version
  // equal to the timestamp's meta.
  Status UpdateSnapshot(std::string_view bytes, bool trusted = false);

  // 5.6: top-level targets (delegator "root") or a delegated role of an already trusted targets
  // role. Needs a final snapshot; checks length/hashes against snapshot meta (unless
  // `trusted`), the delegator's signatures, version equal to snapshot meta, expiry.
  Expected<const Targets*> UpdateDelegatedTargets(std::string_view bytes, const std::string& role_name,
                                                  const std::string& delegator_name, bool trusted = false);
  Expected<const Targets*> UpdateTargets(std::string_view bytes, bool trusted = false) {
    return UpdateDelegatedTargets(bytes, kTargetsRole, kRootRole, trusted);
  }

  SysTime reference_time() const { return reference_time_; }
  const Metadata<Root>& root() const { return root_; }
  const Metadata<Timestamp>* timestamp() const { return timestamp_ ? &*timestamp_ : nullptr; }
  const Metadata<Snapshot>* snapshot() const { return snapshot_ ? &*snapshot_ : nullptr; }
  // "targets" or a delegated role name; nullptr when not (yet) trusted.
  const Metadata<Targets>* targets(const std::string& role_name) const;

 private:
  TrustedMetadataSet(Metadata<Root> root, SysTime reference_time)
      : reference_time_(reference_time), root_(std::move(root)) {}
  Status CheckFinalTimestamp() const;
  Status CheckFinalSnapshot() const;

  SysTime reference_time_;
  Metadata<Root> root_;
  std::optional<Metadata<Timestamp>> timestamp_;
  std::optional<Metadata<Snapshot>> snapshot_;
  std::map<std::string, Metadata<Targets>> targets_;
};

}  // namespace upkeep::tuf
