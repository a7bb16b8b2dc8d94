// Publishing helpers for the updater service tests: what `upk repo bootstrap` and `upk publish`
// will do, against a ServiceFixture. The offline root and targets keys are process-wide (one
// pair per test binary), so any test, including the appliance API tests, can publish.
//
//   Bootstrap(f)                        root v1 (offline root + targets keys, the fixture keyserver's
//                                       snapshot/timestamp keys) and an empty targets v1, posted
//   PublishRelease(f, "site", "5.1.0")  a real signed .upk, encrypted with a fresh content key,
//                                       the blob PUT, the key sealed to the keyserver, targets
//                                       N+1 signed offline, POST /api/v1/releases
//   PrepareRelease(...)                 the same up to (not including) the POST, for tests that
//                                       tamper with the request first
//
// Failures to build the inputs throw std::runtime_error; the service's answers are returned.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <vector>

#include "service_fixture.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/content_key.hpp"

namespace upkeep::updater::test {

// The offline keys of every test repository.
struct OfflineKeys {
  packages::PrivateKey root, targets;
};
const OfflineKeys& TestKeys();

// The signed root `version` (root keys `root_keys`, threshold 1, targets key TestKeys().targets
// unless `targets_key` is given, the fixture keyserver's online keys), signed by `signers`.
Json MakeRoot(ServiceFixture& f, std::int64_t version, const std::vector<packages::PrivateKey>& signers,
              const std::vector<packages::PrivateKey>& root_keys = {},
              const packages::PrivateKey* targets_key = nullptr);
// Signed targets metadata `version` listing `targets` ({path: {"length", "hashes", "custom"}}).
Json MakeTargets(std::int64_t version, const Json& targets, const packages::PrivateKey& key);

// POST /api/v1/repository/root with root v1 and an empty targets v1 (TestKeys()).
Reply Bootstrap(ServiceFixture& f);

struct ReleaseSpec {
  std::string name = "site";
  std::string version = "5.1.0";
  std::string kind = "software";
  Json extra_manifest = Json::object();  // added to the manifest (requires, settle_hours, ...)
  std::vector<std::string> channels = {"stable"};
};

struct PreparedRelease {
  Json body;                      // the POST /api/v1/releases body
  std::filesystem::path package;  // the plaintext .upk
  std::filesystem::path blob;     // the encrypted blob (as uploaded)
  std::string target_path;        // NAME/NAME-VERSION.upk.enc
  std::string sha256, sha512;     // of the blob
  std::uint64_t length = 0;       // of the blob
  std::shared_ptr<trust::ContentKey> content_key;
  std::string manifest_bytes, signature_bytes;  // manifest.json and manifest.sig as in the package
};

// Builds the package and blob, uploads the blob (unless `upload` is false), and signs targets
// current + 1 with the new target.
PreparedRelease PrepareRelease(ServiceFixture& f, const ReleaseSpec& spec, bool upload = true);

struct PublishedRelease {
  PreparedRelease prepared;
  Reply reply;  // the POST /api/v1/releases answer (201 {"release", "versions"} on success)
};

PublishedRelease PublishRelease(ServiceFixture& f, const ReleaseSpec& spec = {});
inline PublishedRelease PublishRelease(ServiceFixture& f, const std::string& name, const std::string& version,
                                       const std::string& kind = "software", Json extra_manifest = Json::object(),
                                       std::vector<std::string> channels = {"stable"}) {
  return PublishRelease(f, ReleaseSpec{name, version, kind, std::move(extra_manifest), std::move(channels)});
}

// The current signed targets of the service (GET /api/v1/repository).
Json CurrentTargets(ServiceFixture& f);

}  // namespace upkeep::updater::test
