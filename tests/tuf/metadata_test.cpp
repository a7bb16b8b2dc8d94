// Metadata parsing, canonical signing form, signature thresholds and delegation path rules.
#include <gtest/gtest.h>

#include <chrono>

#include "tuf_test_util.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/tuf/metadata.hpp"

namespace upkeep::tuf {
namespace {

using testing::RepoSim;
using testing::TestKey;

const SysTime kNow = SysTime(std::chrono::seconds(1'900'000'000));

Json BaseSigned(const char* type) {
  Json j = {{"_type", type}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", "2030-01-01T00:00:00Z"}};
  if (std::string(type) == "timestamp") j["meta"] = {{"snapshot.json", {{"version", 1}}}};
  if (std::string(type) == "snapshot") j["meta"] = {{"targets.json", {{"version", 1}}}};
  if (std::string(type) == "targets") j["targets"] = Json::object();
  return j;
}

std::string Envelope(const Json& signed_part) { return Json{{"signatures", Json::array()}, {"signed", signed_part}}.dump(); }

TEST(TufMetadata, ParsesEveryRoleFromASimulatedRepository) {
  RepoSim repo(kNow);
  repo.AddTarget("targets", "a/b.txt", "hello");
  std::string t = repo.Publish("targets");
  auto root = Metadata<Root>::Parse(repo.initial_root);
  ASSERT_TRUE(root.ok()) << root.error().message();
  EXPECT_EQ(root->signed_body.version, 1);
  EXPECT_TRUE(root->signed_body.consistent_snapshot);
  EXPECT_EQ(root->signed_body.roles.size(), 4u);
  EXPECT_EQ(root->signed_body.keys.size(), 4u);
  auto targets = Metadata<Targets>::Parse(t);
  ASSERT_TRUE(targets.ok()) << targets.error().message();
  const TargetFile& f = targets->signed_body.targets.at("a/b.txt");
  EXPECT_EQ(f.length, 5u);
  EXPECT_EQ(f.hashes.at("sha256"), Sha256Hex("hello"));
  EXPECT_TRUE(f.VerifyLengthAndHashes("hello").ok());
  EXPECT_FALSE(f.VerifyLengthAndHashes("hellO").ok());
  EXPECT_FALSE(f.VerifyLengthAndHashes("hello!").ok());
  EXPECT_TRUE(Metadata<Snapshot>::Parse(repo.files.at("metadata/snapshot.json")).ok());
  auto ts = Metadata<Timestamp>::Parse(repo.files.at("metadata/timestamp.json"));
  ASSERT_TRUE(ts.ok());
  EXPECT_EQ(ts->signed_body.snapshot_meta.version, 1);
  // The wrong role type is refused, naming what was expected.
  auto wrong = Metadata<Timestamp>::Parse(repo.initial_root);
  ASSERT_FALSE(wrong.ok());
  EXPECT_NE(wrong.error().message().find("_type"), std::string::npos);
}

TEST(TufMetadata, RefusesMalformedFields) {
  struct Case {
    const char* what;
    std::function<void(Json&)> mutate;
  };
  std::vector<Case> cases = {
      {"version 0", [](Json& j) { j["version"] = 0; }},
      {"version string", [](Json& j) { j["version"] = "1"; }},
      {"no expires", [](Json& j) { j.erase("expires"); }},
      {"bad expires", [](Json& j) { j["expires"] = "2030-01-01 00:00:00"; }},
      {"spec 2.0", [](Json& j) { j["spec_version"] = "2.0.0"; }},
      {"spec garbage", [](Json& j) { j["spec_version"] = "1.x"; }},
      {"float in signed", [](Json& j) { j["custom"] = 1.5; }},
      {"meta version 0", [](Json& j) { j["meta"]["snapshot.json"]["version"] = 0; }},
      {"meta negative length", [](Json& j) { j["meta"]["snapshot.json"]["length"] = -1; }},
      {"meta empty hashes", [](Json& j) { j["meta"]["snapshot.json"]["hashes"] = Json::object(); }},
      {"no snapshot.json", [](Json& j) { j["meta"] = Json::object(); }},
  };
  for (const auto& c : cases) {
    Json j = BaseSigned("timestamp");
    c.mutate(j);
    EXPECT_FALSE(Metadata<Timestamp>::Parse(Envelope(j)).ok()) << c.what;
  }
  EXPECT_TRUE(Metadata<Timestamp>::Parse(Envelope(BaseSigned("timestamp"))).ok());
  // Duplicate keys (two readers could disagree) and duplicate signatures are refused.
  std::string dup = R"({"signatures":[],"signed":{"_type":"targets","_type":"targets"}})";
  EXPECT_FALSE(Metadata<Targets>::Parse(dup).ok());
  Json two_sigs = {{"signatures", {{{"keyid", "ab"}, {"sig", "00"}}, {{"keyid", "ab"}, {"sig", "01"}}}},
                   {"signed", BaseSigned("targets")}};
  EXPECT_FALSE(Metadata<Targets>::Parse(two_sigs.dump()).ok());
  EXPECT_FALSE(Metadata<Targets>::Parse("[]").ok());
  EXPECT_FALSE(Metadata<Targets>::Parse("").ok());
  EXPECT_FALSE(Metadata<Targets>::Parse(R"({"signatures":[],"signed":[]})").ok());
}

TEST(TufMetadata, RefusesBadRootsAndDelegations) {
  RepoSim repo(kNow);
  Json root = repo.root;
  root["roles"].erase("snapshot");
  EXPECT_FALSE(Metadata<Root>::Parse(Envelope(root)).ok());
  root = repo.root;
  root["roles"]["mirror"] = root["roles"]["root"];
  EXPECT_FALSE(Metadata<Root>::Parse(Envelope(root)).ok());
  root = repo.root;
  root["roles"]["root"]["threshold"] = 0;
  EXPECT_FALSE(Metadata<Root>::Parse(Envelope(root)).ok());
  root = repo.root;
  root["roles"]["root"]["keyids"].push_back(root["roles"]["root"]["keyids"][0]);
  EXPECT_FALSE(Metadata<Root>::Parse(Envelope(root)).ok());
  // A key of an unknown type stays listed but unusable; it does not break the root.
  root = repo.root;
  root["keys"]["feed"] = {{"keytype", "sphincs"}, {"scheme", "sphincs"}, {"keyval", {{"public", "00"}}}};
  auto parsed = Metadata<Root>::Parse(Envelope(root));
  ASSERT_TRUE(parsed.ok()) << parsed.error().message();
  EXPECT_FALSE(parsed->signed_body.keys.at("feed").has_value());

  auto key = TestKey::Ed25519();
  Json t = BaseSigned("targets");
  Json role = {{"name", "a"}, {"keyids", {key.keyid()}}, {"threshold", 1}, {"terminating", false}, {"paths", {"*"}}};
  t["delegations"] = {{"keys", {{key.keyid(), key.PublicJson()}}}, {"roles", {role}}};
  ASSERT_TRUE(Metadata<Targets>::Parse(Envelope(t)).ok());
  Json both = t;
  both["delegations"]["roles"][0]["path_hash_prefixes"] = {"ab"};
  EXPECT_FALSE(Metadata<Targets>::Parse(Envelope(both)).ok());
  Json neither = t;
  neither["delegations"]["roles"][0].erase("paths");
  EXPECT_FALSE(Metadata<Targets>::Parse(Envelope(neither)).ok());
  Json top = t;
  top["delegations"]["roles"][0]["name"] = "snapshot";
  EXPECT_FALSE(Metadata<Targets>::Parse(Envelope(top)).ok());
  Json twice = t;
  twice["delegations"]["roles"].push_back(role);
  EXPECT_FALSE(Metadata<Targets>::Parse(Envelope(twice)).ok());
  Json no_term = t;
  no_term["delegations"]["roles"][0].erase("terminating");
  EXPECT_FALSE(Metadata<Targets>::Parse(Envelope(no_term)).ok());
}

TEST(TufMetadata, SignaturesCoverUnknownFieldsInCanonicalForm) {
  auto key = TestKey::Ed25519();
  Json s = BaseSigned("targets");
  s["x-custom"] = {{"z", 1}, {"a", "text with \"quotes\" and \\"}};
  std::string bytes = RepoSim::SignEnvelope(s, {key});
  auto md = Metadata<Targets>::Parse(bytes);
  ASSERT_TRUE(md.ok());
  KeyMap keys = {{key.keyid(), packages::PublicKey::FromJson(key.PublicJson()).value()}};
  RoleKeys role{{key.keyid()}, 1};
  EXPECT_TRUE(VerifyThreshold(keys, role, "targets", *md).ok());
  // Changing the unknown field breaks the signature.
  Json env = Json::parse(bytes);
  env["signed"]["x-custom"]["z"] = 2;
  auto tampered = Metadata<Targets>::Parse(env.dump());
  ASSERT_TRUE(tampered.ok());
  EXPECT_FALSE(VerifyThreshold(keys, role, "targets", *tampered).ok());
}

TEST(TufMetadata, ThresholdCountsDistinctAuthorisedKeys) {
  auto a = TestKey::Ed25519(), b = TestKey::Ed25519(), outsider = TestKey::Ed25519();
  Json s = BaseSigned("targets");
  std::string canonical = CanonicalJson(s).value();
  auto sig = [&](const TestKey& k, const std::string& id) { return Signature{id, ToHex(k.Sign(canonical))}; };
  KeyMap keys = {{a.keyid(), packages::PublicKey::FromJson(a.PublicJson()).value()},
                 {b.keyid(), packages::PublicKey::FromJson(b.PublicJson()).value()},
                 {"alias-of-a", packages::PublicKey::FromJson(a.PublicJson()).value()},
                 {outsider.keyid(), packages::PublicKey::FromJson(outsider.PublicJson()).value()}};
  RoleKeys two{{a.keyid(), b.keyid(), "alias-of-a"}, 2};

  EXPECT_TRUE(CheckSignatures(keys, two, {sig(a, a.keyid()), sig(b, b.keyid())}, canonical).ok());
  // One key listed under two ids counts once.
  auto r = CheckSignatures(keys, two, {sig(a, a.keyid()), sig(a, "alias-of-a")}, canonical);
  EXPECT_FALSE(r.ok());
  EXPECT_EQ(r.distinct_keys, 1u);
  // A valid signature by a key the role does not authorise is ignored.
  EXPECT_FALSE(CheckSignatures(keys, two, {sig(a, a.keyid()), sig(outsider, outsider.keyid())}, canonical).ok());
  // A signature filed under the wrong key id does not count.
  EXPECT_FALSE(CheckSignatures(keys, two, {sig(a, a.keyid()), sig(a, b.keyid())}, canonical).ok());
  // Unknown key ids and non-hex or empty signatures are ignored, not errors.
  EXPECT_TRUE(CheckSignatures(keys, two,
                              {Signature{"unknown", "00"}, Signature{a.keyid(), "zz"}, sig(b, b.keyid())}, canonical)
                  .distinct_keys == 1);
  EXPECT_EQ(CheckSignatures(keys, two, {Signature{a.keyid(), ""}}, canonical).distinct_keys, 0u);
}

TEST(TufMetadata, VerifiesEcdsaAndRsaPssSignatures) {
  std::vector<TestKey> keys = {TestKey::Ecdsa(true), TestKey::Ecdsa(false), TestKey::RsaPss()};
  Json s = BaseSigned("snapshot");
  std::string bytes = RepoSim::SignEnvelope(s, keys);
  auto md = Metadata<Snapshot>::Parse(bytes);
  ASSERT_TRUE(md.ok());
  KeyMap km;
  RoleKeys role;
  for (const auto& k : keys) {
    km[k.keyid()] = packages::PublicKey::FromJson(k.PublicJson()).value();
    role.keyids.push_back(k.keyid());
  }
  role.threshold = 3;
  auto r = CheckSignatures(km, role, md->signatures, md->signed_canonical);
  EXPECT_EQ(r.distinct_keys, 3u);
  EXPECT_TRUE(r.ok());
  // The same signatures over different content do not verify.
  s["version"] = 2;
  std::string other = CanonicalJson(s).value();
  EXPECT_EQ(CheckSignatures(km, role, md->signatures, other).distinct_keys, 0u);
}

TEST(TufMetadata, RealWorldEcdsaRootFromTufOnCi) {
  auto bytes = ReadFileBounded(std::string(UPKEEP_SOURCE_DIR) + "/tests/tuf/data/tuf-on-ci-0.11/initial_root.json", 1 << 20);
  ASSERT_TRUE(bytes.ok());
  auto root = Metadata<Root>::Parse(*bytes);
  ASSERT_TRUE(root.ok()) << root.error().message();
  EXPECT_TRUE(VerifyByRoot(root->signed_body, kRootRole, *root).ok());
  // A changed byte inside the signed part (a custom field) must break it.
  std::string tampered = *bytes;
  auto pos = tampered.find("\"@jku\"");
  ASSERT_NE(pos, std::string::npos);
  tampered.replace(pos, 6, "\"@jkv\"");
  auto bad = Metadata<Root>::Parse(tampered);
  ASSERT_TRUE(bad.ok());
  EXPECT_FALSE(VerifyByRoot(bad->signed_body, kRootRole, *bad).ok());
}

TEST(TufMetadata, PathPatternsAreGlobsThatDoNotCrossSlashes) {
  struct Case {
    const char* pattern;
    const char* path;
    bool match;
  };
  const Case cases[] = {
      {"targets/*.tgz", "targets/foo.tgz", true},
      {"targets/*.tgz", "targets/foo.txt", false},
      {"*.tgz", "targets/foo.tgz", false},
      {"*", "a", true},
      {"*", "a/b", false},
      {"*/*", "a/b", true},
      {"foo-version-?.tgz", "foo-version-2.tgz", true},
      {"foo-version-?.tgz", "foo-version-alpha.tgz", false},
      {"releases/*/*", "releases/x/x_v1", true},
      {"releases/y/*.zip", "releases/z/z_v1.zip", false},
      {"file[0-9].txt", "file7.txt", true},
      {"file[0-9].txt", "filex.txt", false},
      {"file[!0-9].txt", "filex.txt", true},
      {"file[!0-9].txt", "file1.txt", false},
      {"[]]x", "]x", true},
      {"a[", "a[", true},
      {"a*", "a", true},
      {"*b*c", "xxbyyc", true},
      {"*b*c", "xxbyyd", false},
      {"exact/path.txt", "exact/path.txt", true},
      {"exact/path.txt", "exact/path.txt2", false},
      {"", "", true},
      {"a/", "a", false},
  };
  for (const auto& c : cases) {
    EXPECT_EQ(MatchPathPattern(c.pattern, c.path), c.match) << c.pattern << " vs " << c.path;
  }
  // A hostile pattern stays fast (no exponential backtracking).
  std::string pattern, path(4000, 'a');
  for (int i = 0; i < 200; ++i) pattern += "*a";
  pattern += "b";
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_FALSE(MatchPathPattern(pattern, path));
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(2));
}

TEST(TufMetadata, PathHashPrefixes) {
  DelegatedRole r;
  r.name = "bin";
  std::string h = Sha256Hex("some/target.bin");
  r.path_hash_prefixes = std::vector<std::string>{"ffff", h.substr(0, 2)};
  EXPECT_TRUE(r.IsDelegatedPath("some/target.bin"));
  r.path_hash_prefixes = std::vector<std::string>{h.substr(0, 2) == "00" ? "01" : "00"};
  EXPECT_FALSE(r.IsDelegatedPath("some/target.bin"));
  r.path_hash_prefixes = std::vector<std::string>{h + "0"};  // longer than a digest
  EXPECT_FALSE(r.IsDelegatedPath("some/target.bin"));
}

TEST(TufMetadata, DigestCheckerRefusesUnknownAlgorithms) {
  EXPECT_FALSE(DigestChecker::Create(3, {{"md5", "00"}}, "x").ok());
  auto c = DigestChecker::Create(3, {{"sha256", Sha256Hex("abc")}, {"sha512", Sha512Hex("abc")}}, "x");
  ASSERT_TRUE(c.ok());
  c->Update("ab");
  c->Update("c");
  EXPECT_TRUE(c->Finish().ok());
  auto upper = DigestChecker::Create(std::nullopt, {{"sha256", "BA7816BF8F01CFEA414140DE5DAE2223B00361A396177A9CB410FF61F20015AD"}}, "x");
  ASSERT_TRUE(upper.ok());
  upper->Update("abc");
  EXPECT_TRUE(upper->Finish().ok());
  auto wrong = DigestChecker::Create(3, {{"sha256", Sha256Hex("abc")}, {"sha512", Sha512Hex("abd")}}, "x");
  wrong->Update("abc");
  EXPECT_FALSE(wrong->Finish().ok());
}

}  // namespace
}  // namespace upkeep::tuf
