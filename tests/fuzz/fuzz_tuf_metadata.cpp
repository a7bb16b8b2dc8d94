// Fuzz target: arbitrary bytes as each TUF role type, verified against a fixed root, and fed
// to the trusted-set state machine at every step (root update, timestamp, snapshot, targets).
// Must never crash, hang or grow without bound; every outcome is a value or an Error.
#include <cstdint>
#include <string>
#include <string_view>

#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/tuf/metadata.hpp"
#include "upkeep/tuf/trusted_set.hpp"

namespace {

using namespace upkeep;
using namespace upkeep::tuf;

// One deterministic ed25519 key signs every role of the fixed repository, so seeds signed with
// it (tests/fuzz/corpus/fuzz_tuf_metadata) reach the code behind the signature checks.
constexpr const char* kSeedHex = "0101010101010101010101010101010101010101010101010101010101010101";
const SysTime kNow = SysTime(std::chrono::seconds(1'900'000'000));

std::string Sign(const packages::PrivateKey& key, const Json& signed_part) {
  std::string canonical = CanonicalJson(signed_part).value();
  Json sig = {{"keyid", key.keyid()}, {"sig", ToHex(key.Sign(canonical))}};
  return Json{{"signatures", Json::array({sig})}, {"signed", signed_part}}.dump();
}

struct Fixture {
  Root root;
  std::optional<TrustedMetadataSet> at_root;      // only the root
  std::optional<TrustedMetadataSet> at_snapshot;  // root + timestamp + snapshot

  Fixture() {
    Json priv = {{"keytype", "ed25519"}, {"scheme", "ed25519"}, {"keyval", {{"private", kSeedHex}}}};
    auto key = packages::PrivateKey::FromJson(priv).value();
    const std::string id = key.keyid();
    Json role = {{"keyids", {id}}, {"threshold", 1}};
    Json root_json = {{"_type", "root"}, {"spec_version", "1.0.31"}, {"version", 1},
                      {"expires", "2040-01-01T00:00:00Z"}, {"consistent_snapshot", true},
                      {"keys", {{id, key.public_key().ToJson()}}},
                      {"roles", {{"root", role}, {"timestamp", role}, {"snapshot", role}, {"targets", role}}}};
    Json ts = {{"_type", "timestamp"}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", "2040-01-01T00:00:00Z"},
               {"meta", {{"snapshot.json", {{"version", 1}}}}}};
    Json sn = {{"_type", "snapshot"}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", "2040-01-01T00:00:00Z"},
               {"meta", {{"targets.json", {{"version", 1}}}}}};
    std::string root_bytes = Sign(key, root_json);
    root = Metadata<Root>::Parse(root_bytes).value().signed_body;
    at_root.emplace(TrustedMetadataSet::Create(root_bytes, kNow).value());
    at_snapshot.emplace(*at_root);
    (void)at_snapshot->UpdateTimestamp(Sign(key, ts)).value();
    (void)at_snapshot->UpdateSnapshot(Sign(key, sn)).value();
  }
};

const Fixture& GetFixture() {
  static const Fixture f;
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (1u << 20)) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const Fixture& f = GetFixture();

  if (auto md = Metadata<Root>::Parse(in)) {
    (void)VerifyByRoot(f.root, kRootRole, *md);
    (void)VerifyByRoot(md->signed_body, kRootRole, *md);
  }
  if (auto md = Metadata<Timestamp>::Parse(in)) {
    (void)VerifyByRoot(f.root, kTimestampRole, *md);
    (void)md->signed_body.snapshot_meta.VerifyLengthAndHashes(in, "fuzz");
  }
  if (auto md = Metadata<Snapshot>::Parse(in)) (void)VerifyByRoot(f.root, kSnapshotRole, *md);
  if (auto md = Metadata<Targets>::Parse(in)) {
    (void)VerifyByRoot(f.root, kTargetsRole, *md);
    if (md->signed_body.delegations) {
      for (const auto& role : md->signed_body.delegations->roles) {
        (void)role.IsDelegatedPath("a/b/c.txt");
        (void)VerifyByDelegator(md->signed_body, role.name, *md);
      }
    }
    for (const auto& [path, target] : md->signed_body.targets) (void)target.VerifyLengthAndHashes(path);
  }

  {
    TrustedMetadataSet set = *f.at_root;
    (void)set.UpdateRoot(in);
  }
  {
    TrustedMetadataSet set = *f.at_root;
    (void)set.UpdateTimestamp(in);
  }
  {
    TrustedMetadataSet set = *f.at_snapshot;
    (void)set.UpdateTargets(in);
  }
  {
    // A second snapshot: rollback and removal checks against the trusted one.
    TrustedMetadataSet set = *f.at_snapshot;
    (void)set.UpdateSnapshot(in);
  }
  return 0;
}
