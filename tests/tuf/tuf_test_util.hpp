// Test helpers for the TUF client: signing keys of every supported scheme, a small in-memory
// repository that makes and signs metadata the way a TUF repository publishes it, and a fake
// Fetcher that serves it with injectable faults (404, tampered bytes, endless data, errors).
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::tuf::testing {

// A private key of one of the three schemes the client verifies.
class TestKey {
 public:
  static TestKey Ed25519();
  // P-256; keytype "ecdsa" (what tuf-on-ci and sigstore use) or "ecdsa-sha2-nistp256".
  static TestKey Ecdsa(bool short_keytype = true);
  static TestKey RsaPss();

  Json PublicJson() const { return public_json_; }
  // The id TUF computes (SHA-256 of the canonical public key).
  std::string keyid() const { return keyid_; }
  Bytes Sign(std::string_view message) const;

 private:
  struct Impl;
  std::shared_ptr<Impl> impl_;
  Json public_json_;
  std::string keyid_;
};

// The repository: one Json per role's "signed" part, keys per role, published files by path
// ("metadata/2.root.json", "targets/a/<sha256>.b.txt"). Publishing signs and stores both the
// versioned and the unversioned metadata name, like a static repository does.
class RepoSim {
 public:
  explicit RepoSim(SysTime now, bool consistent_snapshot = true);

  SysTime now;
  bool compute_meta_hashes = false;  // put length + hashes into snapshot/timestamp meta
  Json root, timestamp, snapshot;
  std::map<std::string, Json> targets;             // "targets" and delegated roles
  std::map<std::string, std::vector<TestKey>> signers;  // who signs each role
  std::map<std::string, std::string> files;        // the served tree
  std::map<std::string, std::string> artifacts;    // target path -> content

  static std::string Expiry(SysTime t) { return FormatTimestamp(t); }

  // Signs `signed_part` with `keys` into an envelope; serialized with indentation like real
  // repositories (signatures cover the canonical form, not these bytes).
  static std::string SignEnvelope(const Json& signed_part, const std::vector<TestKey>& keys);

  // Replaces the keys of a top-level role in root (does not publish root).
  void SetRoleKeys(const std::string& role, const std::vector<TestKey>& keys, std::int64_t threshold = 1);
  // Bumps root's version and publishes it signed by the current root signers plus `extra`
  // (the previous root keys, for a rotation).
  void BumpRoot(const std::vector<TestKey>& extra = {});
  // Publishes a role's current Json (root: without bumping) and returns the bytes.
  std::string Publish(const std::string& role);
  // Adds a target to a targets role (not published).
  void AddTarget(const std::string& role, const std::string& path, const std::string& content);
  // Adds a delegation from `delegator` to a new role `name` signed by `key`.
  void AddDelegation(const std::string& delegator, const std::string& name, const TestKey& key,
                     const std::vector<std::string>& paths, bool terminating = false,
                     const std::vector<std::string>* hash_prefixes = nullptr);
  // Bumps the version of a targets role and publishes it.
  void BumpTargets(const std::string& role = "targets");
  // Refreshes snapshot meta from the targets roles, bumps, publishes; then UpdateTimestamp().
  void UpdateSnapshot();
  void UpdateTimestamp();
  // Publishes everything as it is now (initial repository state).
  void PublishAll();

  // The bytes of root version 1, to initialize a client with.
  std::string initial_root;
};

// Serves RepoSim::files under kBaseUrl ("https://repo.test/"), chunked, and records requests.
class FakeFetcher final : public Fetcher {
 public:
  static constexpr const char* kBaseUrl = "https://repo.test/";
  static constexpr std::size_t kChunk = 4096;

  enum class Fault { kNone, kNotFound, kIoError, kEndless, kReplace };
  struct Injected {
    Fault fault = Fault::kNone;
    std::string replacement;  // for kReplace
  };

  explicit FakeFetcher(const std::map<std::string, std::string>& files) : files_(files) {}

  Status Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override;

  // Fault for one served path ("metadata/timestamp.json").
  void Inject(const std::string& path, Injected fault) { faults_[path] = std::move(fault); }
  void Clear() { faults_.clear(); }

  std::vector<std::string> requests;  // served paths, in order
  std::uint64_t bytes_delivered = 0;  // total over all requests

 private:
  const std::map<std::string, std::string>& files_;
  std::map<std::string, Injected> faults_;
};

// Metadata-only request names ("2.root.json", "timestamp.json", ...) from a request log.
std::vector<std::string> MetadataRequests(const std::vector<std::string>& requests);

}  // namespace upkeep::tuf::testing
