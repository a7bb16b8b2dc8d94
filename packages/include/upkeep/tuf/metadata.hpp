// TUF 1.0 metadata: the signed envelope and the four role types (root, timestamp, snapshot,
// targets, including delegations), parsed from untrusted bytes, plus signature threshold checks.
//
// Contract: Metadata<T>::Parse accepts only well-formed metadata of role type T (field types,
// "_type", spec_version major 1, version >= 1, RFC 3339 expiry, no duplicate JSON keys) and
// keeps the canonical JSON of the "signed" object, which is what signatures cover: unknown
// fields stay in it, as the specification requires. Parsing never verifies signatures, expiry
// or versions: that is the job of TrustedMetadataSet (trusted_set.hpp).
// Keys are looked up by the key id the metadata lists them under (real repositories do not
// always list the id TUF would compute); threshold counting counts each distinct key (by its
// computed PublicKey::keyid()) once, so one key listed under two ids cannot count twice.
// All types are plain values: copyable, no shared state, safe to use from one thread at a time.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::tuf {

inline constexpr const char* kRootRole = "root";
inline constexpr const char* kTimestampRole = "timestamp";
inline constexpr const char* kSnapshotRole = "snapshot";
inline constexpr const char* kTargetsRole = "targets";

// True for "root", "timestamp", "snapshot" and "targets".
bool IsTopLevelRole(std::string_view name);

// Keys by the id the metadata lists them under. A key of a type we cannot verify (or whose
// public value does not parse) stays listed as nullopt: it never verifies anything.
using KeyMap = std::map<std::string, std::optional<packages::PublicKey>>;

struct Signature {
  std::string keyid;
  std::string sig;  // hex, as in the metadata; a signature that is not hex never verifies
};

// The key ids allowed to sign a role and how many distinct keys must.
struct RoleKeys {
  std::vector<std::string> keyids;  // unique
  std::int64_t threshold = 1;       // >= 1
};

// Checks length and hashes of data streamed through it. Only sha256 and sha512 are
// supported: an entry naming another algorithm fails (we never skip a hash we were given).
class DigestChecker {
 public:
  // `what` names the checked thing in error messages ("snapshot.json", "target 'a/b.txt'").
  static Expected<DigestChecker> Create(std::optional<std::uint64_t> length,
                                        const std::map<std::string, std::string>& hashes, std::string what);
  DigestChecker(DigestChecker&&) noexcept;
  DigestChecker& operator=(DigestChecker&&) noexcept;
  ~DigestChecker();

  void Update(std::string_view chunk);
  std::uint64_t size() const { return size_; }
  // Compares the total length and every digest; consumes the hash state.
  Status Finish();

 private:
  DigestChecker() = default;
  std::string what_;
  std::optional<std::uint64_t> length_;
  std::vector<std::pair<std::string, std::string>> expected_;  // algorithm, lowercase hex
  std::vector<std::unique_ptr<Hasher>> hashers_;
  std::uint64_t size_ = 0;
};

// One entry of timestamp "meta" or snapshot "meta".
struct MetaFile {
  std::int64_t version = 0;
  std::optional<std::uint64_t> length;
  std::map<std::string, std::string> hashes;  // empty when the metadata gives none

  static Expected<MetaFile> FromJson(const Json& json);
  Json ToJson() const;
  // Checks the length and hashes given (if any) against data.
  Status VerifyLengthAndHashes(std::string_view data, const std::string& what) const;
};

// One entry of targets "targets".
struct TargetFile {
  std::string path;
  std::uint64_t length = 0;
  std::map<std::string, std::string> hashes;  // never empty
  Json custom;                                // null when absent

  static Expected<TargetFile> FromJson(const std::string& path, const Json& json);
  Json ToJson() const;
  Status VerifyLengthAndHashes(std::string_view data) const;
  // Streams the file (bounded by length + 1 bytes read) and checks length and hashes.
  Status VerifyFile(const std::filesystem::path& file) const;
};

// Matches a TUF PATHPATTERN against a target path: shell-style '*', '?' and '[...]' (with '!'
// negation) that never match '/', so pattern and path must have the same number of
// '/'-separated parts (the specification's glob-like reading; python-tuf does the same).
bool MatchPathPattern(std::string_view pattern, std::string_view target_path);

struct DelegatedRole {
  std::string name;
  RoleKeys keys;
  bool terminating = false;
  // Exactly one of these is set.
  std::optional<std::vector<std::string>> paths;
  std::optional<std::vector<std::string>> path_hash_prefixes;

  // True when this role is trusted for target_path (paths or sha256-hex prefixes).
  bool IsDelegatedPath(std::string_view target_path) const;
};

struct Delegations {
  KeyMap keys;
  std::vector<DelegatedRole> roles;  // in metadata order, which is the search order

  const DelegatedRole* Find(std::string_view name) const;
};

// Fields every role type carries.
struct SignedCommon {
  std::string spec_version;
  std::int64_t version = 0;
  SysTime expires{};

  // Expired when the reference time has reached the expiry (python-tuf and go-tuf agree).
  bool IsExpired(SysTime reference_time) const { return reference_time >= expires; }
};

struct Root : SignedCommon {
  static constexpr const char* kType = "root";
  bool consistent_snapshot = false;
  KeyMap keys;
  std::map<std::string, RoleKeys> roles;  // exactly the four top-level roles

  static Expected<Root> FromJson(const Json& signed_json);
};

struct Timestamp : SignedCommon {
  static constexpr const char* kType = "timestamp";
  MetaFile snapshot_meta;  // meta["snapshot.json"]

  static Expected<Timestamp> FromJson(const Json& signed_json);
};

struct Snapshot : SignedCommon {
  static constexpr const char* kType = "snapshot";
  std::map<std::string, MetaFile> meta;  // "targets.json", "<role>.json"

  static Expected<Snapshot> FromJson(const Json& signed_json);
};

struct Targets : SignedCommon {
  static constexpr const char* kType = "targets";
  std::map<std::string, TargetFile> targets;
  std::optional<Delegations> delegations;

  static Expected<Targets> FromJson(const Json& signed_json);
};

// The result of counting signatures for one role.
struct VerificationResult {
  std::int64_t threshold = 0;
  std::set<std::string> signed_keyids;  // listed ids whose key produced a valid signature
  std::size_t distinct_keys = 0;        // distinct keys among them: what counts
  bool ok() const { return threshold >= 1 && static_cast<std::int64_t>(distinct_keys) >= threshold; }
};

// Counts valid signatures over `message` by keys the role authorises. Signatures by keys not
// authorised for the role, or unknown, are ignored; each key counts once.
VerificationResult CheckSignatures(const KeyMap& keys, const RoleKeys& role, const std::vector<Signature>& signatures,
                                   std::string_view message);

// A role's parsed metadata plus the envelope it came in.
template <typename T>
struct Metadata {
  T signed_body;                     // the parsed "signed" object
  std::vector<Signature> signatures;
  std::string signed_canonical;      // canonical JSON of "signed": what signatures cover

  // Parses untrusted bytes. The error names the role type and the offending field.
  static Expected<Metadata<T>> Parse(std::string_view bytes);
};

// Verifies that `md` carries a threshold of signatures for role `role_name` as delegated by
// `keys` + `role`. The error names the role and how many valid signatures were found.
template <typename T>
Status VerifyThreshold(const KeyMap& keys, const RoleKeys& role, const std::string& role_name, const Metadata<T>& md) {
  VerificationResult r = CheckSignatures(keys, role, md.signatures, md.signed_canonical);
  if (r.ok()) return OkStatus();
  return Error(Errc::kVerification, role_name + ": " + std::to_string(r.distinct_keys) + " valid signature(s), threshold is " +
                                        std::to_string(role.threshold));
}

// Root delegates the four top-level roles.
template <typename T>
Status VerifyByRoot(const Root& root, const std::string& role_name, const Metadata<T>& md) {
  auto it = root.roles.find(role_name);
  if (it == root.roles.end()) return Error(Errc::kVerification, role_name + ": not a role root delegates");
  return VerifyThreshold(root.keys, it->second, role_name, md);
}

// A targets role delegates to its delegated roles.
template <typename T>
Status VerifyByDelegator(const Targets& delegator, const std::string& role_name, const Metadata<T>& md) {
  const DelegatedRole* role = delegator.delegations ? delegator.delegations->Find(role_name) : nullptr;
  if (!role) return Error(Errc::kVerification, role_name + ": not delegated by its delegator");
  return VerifyThreshold(delegator.delegations->keys, role->keys, role_name, md);
}

extern template struct Metadata<Root>;
extern template struct Metadata<Timestamp>;
extern template struct Metadata<Snapshot>;
extern template struct Metadata<Targets>;

}  // namespace upkeep::tuf
