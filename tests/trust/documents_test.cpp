#include "upkeep/trust/documents.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::trust {
namespace {

using packages::PrivateKey;
using packages::Version;

const SysTime kIssued = ParseTimestamp("2030-01-01T00:00:00Z").value();
const SysTime kExpires = ParseTimestamp("2030-01-02T00:00:00Z").value();

InstalledSet SampleInstalled() {
  return {{"base", Version::Parse("2.0.0").value()}, {"agent", Version::Parse("1.2.3").value()}};
}

struct DocFixture {
  PrivateKey director = PrivateKey::GenerateEd25519();
  PrivateKey licence_key = PrivateKey::GenerateEd25519();
  ApplianceIdentity appliance = ApplianceIdentity::Generate();
  FakeClock clock{kIssued + std::chrono::hours(1)};

  Assignment MakeAssignment() const {
    Assignment a;
    a.appliance_id = appliance.appliance_id();
    a.state_digest = StateDigest(SampleInstalled());
    a.issued = kIssued;
    a.expires = kExpires;
    a.channel = "stable";
    AssignmentStep s;
    s.name = "base";
    s.version = Version::Parse("2.1.0").value();
    s.kind = packages::Kind::kBase;
    s.wait_hours = 0;
    s.target_path = "base/base-2.1.0.upk.enc";
    s.length = 123456;
    s.sha256 = Sha256Hex("blob");
    s.sealed_content_key = SealContentKey(ContentKey::Generate(), appliance.public_key());
    a.steps.push_back(s);
    s.name = "agent";
    s.version = Version::Parse("1.3.0").value();
    s.kind = packages::Kind::kSoftware;
    s.wait_hours = 24;
    s.target_path = "agent/agent-1.3.0.upk.enc";
    a.steps.push_back(s);
    return a;
  }

  std::string Signed(const Json& signed_part, const PrivateKey& key) const {
    auto doc = SignedDocument::Sign(signed_part, key);
    EXPECT_TRUE(doc.ok()) << doc.error().message();
    return doc->Serialize();
  }

  AssignmentExpectation Expect() const {
    return {appliance.appliance_id(), StateDigest(SampleInstalled()), std::nullopt};
  }
};

TEST(StateDigestTest, IsSha256OfCanonicalNameToVersionObject) {
  EXPECT_EQ(StateDigest(SampleInstalled()), Sha256Hex(R"({"agent":"1.2.3","base":"2.0.0"})"));
  EXPECT_EQ(StateDigest({}), Sha256Hex("{}"));
  auto changed = SampleInstalled();
  changed["agent"] = Version::Parse("1.2.4").value();
  EXPECT_NE(StateDigest(changed), StateDigest(SampleInstalled()));
}

TEST(AssignmentTest, RoundTripsThroughSigningAndVerification) {
  DocFixture f;
  Assignment a = f.MakeAssignment();
  std::string text = f.Signed(a.ToJson(), f.director);
  auto v = VerifyAssignment(text, f.director.public_key(), f.clock, f.Expect());
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_EQ(v->appliance_id, a.appliance_id);
  EXPECT_EQ(v->channel, "stable");
  ASSERT_EQ(v->steps.size(), 2u);
  EXPECT_EQ(v->steps[1].name, "agent");
  EXPECT_EQ(v->steps[1].version, Version::Parse("1.3.0").value());
  EXPECT_EQ(v->steps[1].kind, packages::Kind::kSoftware);
  EXPECT_EQ(v->steps[1].wait_hours, 24u);
  EXPECT_EQ(v->steps[0].length, 123456u);
  EXPECT_EQ(v->issued, kIssued);
  EXPECT_EQ(v->expires, kExpires);
  EXPECT_FALSE(v->nonce.has_value());
  // The sealed key in the verified assignment opens on this appliance.
  EXPECT_TRUE(OpenContentKey(v->steps[0].sealed_content_key, f.appliance).ok());
}

TEST(AssignmentTest, ExpiryFollowsTheClock) {
  DocFixture f;
  std::string text = f.Signed(f.MakeAssignment().ToJson(), f.director);
  f.clock.Set(kExpires - std::chrono::seconds(1));
  EXPECT_TRUE(VerifyAssignment(text, f.director.public_key(), f.clock, f.Expect()).ok());
  f.clock.Set(kExpires);
  auto v = VerifyAssignment(text, f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
  EXPECT_NE(v.error().message().find("expired"), std::string::npos);
}

TEST(AssignmentTest, RefusesAnotherApplianceStateOrNonce) {
  DocFixture f;
  Assignment a = f.MakeAssignment();
  a.nonce = "n-123";
  std::string text = f.Signed(a.ToJson(), f.director);

  auto other = ApplianceIdentity::Generate();
  AssignmentExpectation e = f.Expect();
  e.appliance_id = other.appliance_id();
  auto v = VerifyAssignment(text, f.director.public_key(), f.clock, e);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kPolicy);
  EXPECT_NE(v.error().message().find("for appliance"), std::string::npos);

  e = f.Expect();
  auto moved_on = SampleInstalled();
  moved_on["base"] = Version::Parse("2.1.0").value();
  e.state_digest = StateDigest(moved_on);
  v = VerifyAssignment(text, f.director.public_key(), f.clock, e);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kPolicy);
  EXPECT_NE(v.error().message().find("state"), std::string::npos);

  e = f.Expect();
  e.nonce = "n-999";
  v = VerifyAssignment(text, f.director.public_key(), f.clock, e);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("nonce"), std::string::npos);
  e.nonce = "n-123";
  v = VerifyAssignment(text, f.director.public_key(), f.clock, e);
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_EQ(v->nonce, "n-123");
}

TEST(AssignmentTest, RefusesSignatureByAnotherKey) {
  DocFixture f;
  std::string by_licence_key = f.Signed(f.MakeAssignment().ToJson(), f.licence_key);
  auto v = VerifyAssignment(by_licence_key, f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
  EXPECT_NE(v.error().message().find("no signature by trusted key"), std::string::npos);

  // A signature made by another key but listed under the director's key id.
  auto doc = SignedDocument::Sign(f.MakeAssignment().ToJson(), f.licence_key).value();
  Json env = ParseJson(doc.Serialize()).value();
  env["signatures"][0]["keyid"] = f.director.keyid();
  v = VerifyAssignment(env.dump(), f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("bad signature"), std::string::npos);

  // No signatures at all.
  env["signatures"] = Json::array();
  v = VerifyAssignment(env.dump(), f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
}

TEST(AssignmentTest, RefusesContentChangedAfterSigning) {
  DocFixture f;
  Json env = ParseJson(f.Signed(f.MakeAssignment().ToJson(), f.director)).value();
  env["signed"]["steps"][0]["sha256"] = Sha256Hex("another blob");
  auto v = VerifyAssignment(env.dump(), f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("bad signature"), std::string::npos);

  // Pretty-printing the same content does not matter: the signature covers canonical JSON.
  Json good = ParseJson(f.Signed(f.MakeAssignment().ToJson(), f.director)).value();
  EXPECT_TRUE(VerifyAssignment(good.dump(4), f.director.public_key(), f.clock, f.Expect()).ok());
}

TEST(AssignmentTest, RefusesWrongType) {
  DocFixture f;
  Json body = f.MakeAssignment().ToJson();
  body["_type"] = "licence";
  auto v = VerifyAssignment(f.Signed(body, f.director), f.director.public_key(), f.clock, f.Expect());
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
  EXPECT_NE(v.error().message().find("type"), std::string::npos);
}

TEST(AssignmentTest, PreservesUnknownFields) {
  DocFixture f;
  Json body = f.MakeAssignment().ToJson();
  body["rollout"] = {{"wave", 3}, {"id", "r-17"}};
  body["steps"][1]["delta_from"] = "1.2.3";
  std::string text = f.Signed(body, f.director);
  auto v = VerifyAssignment(text, f.director.public_key(), f.clock, f.Expect());
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_EQ(v->unknown["rollout"]["wave"], 3);
  EXPECT_EQ(v->steps[1].unknown["delta_from"], "1.2.3");
  EXPECT_TRUE(v->steps[0].unknown.empty());
  // Re-serialising gives back exactly what was signed, so re-signing would not drop anything.
  EXPECT_EQ(CanonicalJson(v->ToJson()).value(), CanonicalJson(body).value());
}

TEST(AssignmentTest, RefusesMalformedFields) {
  DocFixture f;
  auto refuse = [&](const std::function<void(Json&)>& edit, const std::string& words) {
    Json body = f.MakeAssignment().ToJson();
    edit(body);
    auto v = VerifyAssignment(f.Signed(body, f.director), f.director.public_key(), f.clock, f.Expect());
    ASSERT_FALSE(v.ok()) << words;
    EXPECT_NE(v.error().message().find(words), std::string::npos) << v.error().message();
  };
  refuse([](Json& b) { b["appliance_id"] = "apl-short"; }, "appliance_id");
  refuse([](Json& b) { b["state_digest"] = "ABC"; }, "state_digest");
  refuse([](Json& b) { b.erase("channel"); }, "channel");
  refuse([](Json& b) { b["issued"] = "2030-01-03T00:00:00Z"; }, "expires before");
  refuse([](Json& b) { b["steps"][0]["target_path"] = "../../etc/passwd"; }, "target_path");
  refuse([](Json& b) { b["steps"][0]["target_path"] = "/abs"; }, "target_path");
  refuse([](Json& b) { b["steps"][0]["sha256"] = std::string(64, 'G'); }, "sha256");
  refuse([](Json& b) { b["steps"][0]["version"] = "1.2"; }, "steps[0]");
  refuse([](Json& b) { b["steps"][0]["kind"] = "firmware"; }, "steps[0]");
  refuse([](Json& b) { b["steps"][0]["length"] = -1; }, "length");
  refuse([](Json& b) { b["steps"][1]["wait_hours"] = "24"; }, "wait_hours");
  refuse([](Json& b) { b["steps"] = Json::array({1}); }, "step is not a JSON object");
  refuse(
      [](Json& b) {
        Json step = b["steps"][0];
        b["steps"] = Json::array();
        for (std::size_t i = 0; i <= kMaxAssignmentSteps; ++i) b["steps"].push_back(step);
      },
      "more than");
}

TEST(SignedDocumentTest, ParseIsBounded) {
  DocFixture f;
  Json body = f.MakeAssignment().ToJson();
  body["padding"] = std::string(kMaxSignedDocumentBytes, 'x');
  auto big = SignedDocument::Sign(body, f.director);
  ASSERT_TRUE(big.ok());
  auto parsed = SignedDocument::Parse(big->Serialize());
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code(), Errc::kLimit);

  // Duplicate keys would let two readers see different content.
  std::string dup =
      R"({"signed":{"_type":"assignment","_type":"licence","expires":"2030-01-02T00:00:00Z"},"signatures":[]})";
  parsed = SignedDocument::Parse(dup);
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("duplicate"), std::string::npos);

  parsed = SignedDocument::Parse(R"({"signed":{"_type":"a","expires":"2030-01-02T00:00:00Z"},"signatures":[],"x":1})");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("top-level"), std::string::npos);

  parsed =
      SignedDocument::Parse(R"({"signed":{"_type":"a","expires":"2030-01-02T00:00:00Z","f":1.5},"signatures":[]})");
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code(), Errc::kParse);

  parsed = SignedDocument::Parse(R"({"signed":{"_type":"a","expires":"soon"},"signatures":[]})");
  ASSERT_FALSE(parsed.ok());
  EXPECT_NE(parsed.error().message().find("expires"), std::string::npos);

  Json many = {{"signed", {{"_type", "a"}, {"expires", "2030-01-02T00:00:00Z"}}}, {"signatures", Json::array()}};
  for (std::size_t i = 0; i <= kMaxSignatures; ++i) many["signatures"].push_back({{"keyid", "k"}, {"sig", "00"}});
  parsed = SignedDocument::Parse(many.dump());
  ASSERT_FALSE(parsed.ok());
  EXPECT_EQ(parsed.error().code(), Errc::kLimit);
}

TEST(SignedDocumentTest, SeveralSignaturesVerifyIndependently) {
  DocFixture f;
  auto doc = SignedDocument::Sign(f.MakeAssignment().ToJson(), f.director).value();
  ASSERT_TRUE(doc.AddSignature(f.licence_key).ok());
  EXPECT_FALSE(doc.AddSignature(f.director).ok()) << "one signature per key";
  auto parsed = SignedDocument::Parse(doc.Serialize()).value();
  EXPECT_EQ(parsed.signatures().size(), 2u);
  EXPECT_TRUE(parsed.VerifySignature(f.director.public_key()).ok());
  EXPECT_TRUE(parsed.VerifySignature(f.licence_key.public_key()).ok());
  EXPECT_FALSE(parsed.VerifySignature(PrivateKey::GenerateEd25519().public_key()).ok());
  EXPECT_EQ(parsed.Serialize(), doc.Serialize()) << "serialisation is stable";
}

TEST(SignedDocumentTest, SignRefusesBadInput) {
  DocFixture f;
  EXPECT_FALSE(SignedDocument::Sign(Json::array(), f.director).ok());
  EXPECT_FALSE(SignedDocument::Sign(Json{{"_type", "x"}}, f.director).ok()) << "expires is required";
  EXPECT_FALSE(
      SignedDocument::Sign(Json{{"_type", "x"}, {"expires", "2030-01-01T00:00:00Z"}, {"s", "\xff"}}, f.director).ok())
      << "invalid UTF-8";
}

Licence MakeLicence(const std::optional<std::string>& appliance_id) {
  Licence l;
  l.licence_key = "UPK-1234-5678-9ABC";
  l.customer = "Example Hospital";
  l.appliance_id = appliance_id;
  l.maintenance_end = ParseTimestamp("2030-06-01T00:00:00Z").value();
  l.features = {"relay", "airgap"};
  l.issued = kIssued;
  l.expires = ParseTimestamp("2031-01-01T00:00:00Z").value();
  return l;
}

TEST(LicenceTest, RoundTripsAndChecksBinding) {
  DocFixture f;
  std::string bound = f.Signed(MakeLicence(f.appliance.appliance_id()).ToJson(), f.licence_key);
  auto l = VerifyLicence(bound, f.licence_key.public_key(), f.clock, f.appliance.appliance_id());
  ASSERT_TRUE(l.ok()) << l.error().message();
  EXPECT_EQ(l->licence_key, "UPK-1234-5678-9ABC");
  EXPECT_EQ(l->customer, "Example Hospital");
  EXPECT_EQ(l->features, (std::vector<std::string>{"relay", "airgap"}));
  EXPECT_EQ(l->appliance_id, f.appliance.appliance_id());
  EXPECT_TRUE(l->InMaintenance(f.clock));
  FakeClock later(ParseTimestamp("2030-07-01T00:00:00Z").value());
  EXPECT_FALSE(l->InMaintenance(later));

  auto other = ApplianceIdentity::Generate();
  auto wrong = VerifyLicence(bound, f.licence_key.public_key(), f.clock, other.appliance_id());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kPolicy);

  // Not yet enrolled: no appliance id, valid for whoever presents it at enrolment.
  std::string unbound = f.Signed(MakeLicence(std::nullopt).ToJson(), f.licence_key);
  auto u = VerifyLicence(unbound, f.licence_key.public_key(), f.clock, other.appliance_id());
  ASSERT_TRUE(u.ok()) << u.error().message();
  EXPECT_FALSE(u->appliance_id.has_value());
}

TEST(LicenceTest, RefusesWrongKeyExpiryAndType) {
  DocFixture f;
  std::string by_director = f.Signed(MakeLicence(std::nullopt).ToJson(), f.director);
  auto l = VerifyLicence(by_director, f.licence_key.public_key(), f.clock);
  ASSERT_FALSE(l.ok());
  EXPECT_EQ(l.error().code(), Errc::kVerification);

  std::string good = f.Signed(MakeLicence(std::nullopt).ToJson(), f.licence_key);
  FakeClock late(ParseTimestamp("2031-01-01T00:00:01Z").value());
  l = VerifyLicence(good, f.licence_key.public_key(), late);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("expired"), std::string::npos);

  // An assignment signed by the licence key is still not a licence.
  std::string assignment = f.Signed(f.MakeAssignment().ToJson(), f.licence_key);
  l = VerifyLicence(assignment, f.licence_key.public_key(), f.clock);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("type"), std::string::npos);
}

TEST(LicenceTest, PreservesUnknownFieldsAndRefusesBadFeatures) {
  DocFixture f;
  Json body = MakeLicence(std::nullopt).ToJson();
  body["seats"] = 40;
  auto l = VerifyLicence(f.Signed(body, f.licence_key), f.licence_key.public_key(), f.clock);
  ASSERT_TRUE(l.ok()) << l.error().message();
  EXPECT_EQ(l->unknown["seats"], 40);
  EXPECT_EQ(CanonicalJson(l->ToJson()).value(), CanonicalJson(body).value());

  body["features"] = Json::array({"relay", 7});
  l = VerifyLicence(f.Signed(body, f.licence_key), f.licence_key.public_key(), f.clock);
  ASSERT_FALSE(l.ok());
  EXPECT_NE(l.error().message().find("features"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::trust

namespace upkeep::trust {
namespace {

// The fuzz seeds are signed with fixed keys (tests/fuzz/fuzz_signed_document.cpp); the valid ones
// must pass verification, or the fuzzer would never get past the signature checks.
TEST(FuzzCorpusTest, ValidSeedsVerifyWithTheFuzzerKeys) {
  auto key_from_byte = [](std::uint8_t b) {
    Json priv = {{"keytype", "ed25519"}, {"scheme", "ed25519"}};
    priv["keyval"]["private"] = ToHex(Bytes(32, b));
    return PrivateKey::FromJson(priv).value();
  };
  const auto director = key_from_byte(0x11);
  const auto licence = key_from_byte(0x22);
  auto appliance = ApplianceIdentity::FromSeed(Bytes(32, 0x33)).value();
  FakeClock clock(ParseTimestamp("2030-01-01T12:00:00Z").value());
  AssignmentExpectation expect{appliance.appliance_id(),
                               StateDigest({{"base", Version{2, 0, 0}}, {"agent", Version{1, 2, 3}}}), std::nullopt};
  const std::filesystem::path corpus =
      std::filesystem::path(UPKEEP_SOURCE_DIR) / "tests/fuzz/corpus/fuzz_signed_document";
  auto read = [&](const char* name) { return upkeep::ReadFileBounded(corpus / name, 1 << 20).value(); };

  auto a = VerifyAssignment(read("assignment-valid.json"), director.public_key(), clock, expect);
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_EQ(a->steps.size(), 2u);
  EXPECT_TRUE(OpenContentKey(a->steps[0].sealed_content_key, appliance).ok());
  EXPECT_TRUE(VerifyAssignment(read("assignment-unknown-fields.json"), director.public_key(), clock, expect).ok());
  EXPECT_FALSE(VerifyAssignment(read("assignment-expired.json"), director.public_key(), clock, expect).ok());
  EXPECT_FALSE(VerifyAssignment(read("assignment-other-appliance.json"), director.public_key(), clock, expect).ok());
  EXPECT_TRUE(VerifyLicence(read("licence-bound.json"), licence.public_key(), clock, appliance.appliance_id()).ok());
  EXPECT_TRUE(VerifyLicence(read("licence-unbound-two-signatures.json"), licence.public_key(), clock).ok());
}

}  // namespace
}  // namespace upkeep::trust
