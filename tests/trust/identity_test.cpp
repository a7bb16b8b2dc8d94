#include "upkeep/trust/identity.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <filesystem>

#include "trust_test_util.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/content_key.hpp"

namespace upkeep::trust {
namespace {

using testing::ReadAll;
using testing::TempDir;
using testing::WriteBytes;

Bytes CountingSeed() {
  Bytes seed(32);
  for (std::size_t i = 0; i < seed.size(); ++i) seed[i] = static_cast<std::uint8_t>(i);
  return seed;
}

TEST(IdentityTest, ApplianceIdMatchesIndependentlyComputedVector) {
  // Public key computed by libsodium for the seed 00 01 .. 1f; the id by Python's hashlib and
  // base64.b32encode (lower-cased, padding stripped), an implementation independent of ours.
  auto id = ApplianceIdentity::FromSeed(CountingSeed());
  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(id->signing_key().public_key().public_value(),
            "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8");
  EXPECT_EQ(id->appliance_id(), "apl-kzdvvj2umnduyauf35o36k6kw462mujv");
  EXPECT_TRUE(IsValidApplianceId(id->appliance_id()));
}

TEST(IdentityTest, GeneratedIdentitiesAreDistinctAndWellFormed) {
  auto a = ApplianceIdentity::Generate();
  auto b = ApplianceIdentity::Generate();
  EXPECT_NE(a.appliance_id(), b.appliance_id());
  EXPECT_TRUE(IsValidApplianceId(a.appliance_id()));
  EXPECT_EQ(a.appliance_id(), a.public_key().appliance_id());
  auto raw = FromHex(a.signing_key().public_key().public_value()).value();
  EXPECT_EQ(ApplianceIdFor(raw), a.appliance_id());
}

TEST(IdentityTest, RejectsMalformedIds) {
  EXPECT_FALSE(IsValidApplianceId(""));
  EXPECT_FALSE(IsValidApplianceId("apl-"));
  EXPECT_FALSE(IsValidApplianceId("apl-kzdvvj2umnduyauf35o36k6kw462muj"));    // 31 chars
  EXPECT_FALSE(IsValidApplianceId("apl-kzdvvj2umnduyauf35o36k6kw462mujv1"));  // '1' not base32
  EXPECT_FALSE(IsValidApplianceId("APL-kzdvvj2umnduyauf35o36k6kw462mujv"));
  EXPECT_FALSE(IsValidApplianceId("apl-Kzdvvj2umnduyauf35o36k6kw462mujv"));
}

TEST(IdentityTest, SignsWithItsKey) {
  auto id = ApplianceIdentity::Generate();
  auto sig = id.Sign("check-in");
  EXPECT_TRUE(id.public_key().signing_key().Verify("check-in", sig));
  EXPECT_FALSE(id.public_key().signing_key().Verify("check-in!", sig));
}

TEST(IdentityTest, X25519FormsArePair) {
  auto id = ApplianceIdentity::Generate();
  ASSERT_EQ(id.x25519_secret().size(), 32u);
  unsigned char derived_public[32];
  ASSERT_EQ(crypto_scalarmult_base(derived_public, id.x25519_secret().data()), 0);
  EXPECT_EQ(0, std::memcmp(derived_public, id.public_key().x25519().data(), 32));
}

TEST(IdentityTest, FromSeedRefusesWrongLength) {
  Bytes short_seed(31, 7);
  auto id = ApplianceIdentity::FromSeed(short_seed);
  ASSERT_FALSE(id.ok());
  EXPECT_EQ(id.error().code(), Errc::kInvalidArgument);
}

TEST(IdentityTest, PublicKeyFromJsonRecomputesIdAndRefusesOtherKeyTypes) {
  auto id = ApplianceIdentity::Generate();
  auto pub = AppliancePublicKey::FromJson(id.signing_key().public_key().ToJson());
  ASSERT_TRUE(pub.ok()) << pub.error().message();
  EXPECT_EQ(pub->appliance_id(), id.appliance_id());
  EXPECT_EQ(pub->x25519(), id.public_key().x25519());

  Json ecdsa = {{"keytype", "ecdsa"},
                {"scheme", "ecdsa-sha2-nistp256"},
                {"keyval", {{"public", "-----BEGIN PUBLIC KEY-----\n-----END PUBLIC KEY-----\n"}}}};
  auto refused = AppliancePublicKey::FromJson(ecdsa);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kInvalidArgument);
}

TEST(IdentityTest, RefusesSmallOrderPublicKey) {
  // The identity point (small order) has no safe X25519 form.
  Json j = {{"keytype", "ed25519"},
            {"scheme", "ed25519"},
            {"keyval", {{"public", "0100000000000000000000000000000000000000000000000000000000000000"}}}};
  auto pub = AppliancePublicKey::FromJson(j);
  ASSERT_FALSE(pub.ok());
  EXPECT_EQ(pub.error().code(), Errc::kVerification);
}

TEST(IdentityTest, SavesAndLoadsWithTightPermissions) {
  TempDir dir;
  auto id = ApplianceIdentity::Generate();
  ASSERT_TRUE(id.Save(dir / "identity.json").ok());
  auto perms = std::filesystem::status(dir / "identity.json").permissions() & std::filesystem::perms::all;
  EXPECT_EQ(perms, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  EXPECT_EQ(dir.EntryCount(), 1u) << "no temporary file left behind";

  auto loaded = ApplianceIdentity::Load(dir / "identity.json");
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->appliance_id(), id.appliance_id());
  EXPECT_EQ(0, std::memcmp(loaded->x25519_secret().data(), id.x25519_secret().data(), 32));
  EXPECT_TRUE(id.public_key().signing_key().Verify("m", loaded->Sign("m")));

  auto again = id.Save(dir / "identity.json");
  ASSERT_FALSE(again.ok());
  EXPECT_NE(again.error().message().find("refusing to overwrite"), std::string::npos);
}

TEST(IdentityTest, LoadRefusesMismatchedIdAndBrokenFiles) {
  TempDir dir;
  auto id = ApplianceIdentity::Generate();
  ASSERT_TRUE(id.Save(dir / "identity.json").ok());
  std::string text = ReadAll(dir / "identity.json");

  auto other = ApplianceIdentity::Generate();
  std::string swapped = text;
  swapped.replace(swapped.find(id.appliance_id()), id.appliance_id().size(), other.appliance_id());
  WriteBytes(dir / "swapped.json", swapped);
  auto r = ApplianceIdentity::Load(dir / "swapped.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
  EXPECT_NE(r.error().message().find("does not match"), std::string::npos);

  WriteBytes(dir / "truncated.json", text.substr(0, text.size() / 2));
  r = ApplianceIdentity::Load(dir / "truncated.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);

  WriteBytes(dir / "not-identity.json", R"({"_type":"something-else","format":1})");
  r = ApplianceIdentity::Load(dir / "not-identity.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);

  r = ApplianceIdentity::Load(dir / "missing.json");
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kNotFound);
}

TEST(SealedKeyTest, OpensOnlyOnTheApplianceItWasSealedTo) {
  auto a = ApplianceIdentity::Generate();
  auto b = ApplianceIdentity::Generate();
  auto key = ContentKey::Generate();
  std::string sealed = SealContentKey(key, a.public_key());
  EXPECT_EQ(sealed.size(), 108u);

  auto opened = OpenContentKey(sealed, a);
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  EXPECT_EQ(0, std::memcmp(opened->data(), key.data(), ContentKey::kBytes));

  auto by_b = OpenContentKey(sealed, b);
  ASSERT_FALSE(by_b.ok());
  EXPECT_EQ(by_b.error().code(), Errc::kVerification);
  EXPECT_NE(by_b.error().message().find(b.appliance_id()), std::string::npos);
}

TEST(SealedKeyTest, SealingIsRandomizedAndTamperingIsDetected) {
  auto a = ApplianceIdentity::Generate();
  auto key = ContentKey::Generate();
  std::string s1 = SealContentKey(key, a.public_key());
  std::string s2 = SealContentKey(key, a.public_key());
  EXPECT_NE(s1, s2) << "each seal uses a fresh ephemeral key";

  // Flip one character in the middle (still valid base64) of the ciphertext.
  std::string tampered = s1;
  tampered[50] = tampered[50] == 'A' ? 'B' : 'A';
  auto r = OpenContentKey(tampered, a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);

  r = OpenContentKey(s1.substr(0, 100), a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);

  r = OpenContentKey("not base64 at all!", a);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);

  r = OpenContentKey(s1 + s1, a);
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().code(), Errc::kVerification);
}

TEST(SealedKeyTest, SealToBareX25519KeyAndOpenWithIt) {
  // What the operator CLI and the keyserver do with the keyserver's `content` key: the same wire
  // format as SealContentKey, opened with a bare X25519 pair.
  auto server = ApplianceIdentity::Generate();
  auto key = ContentKey::Generate();
  std::string sealed = SealContentKeyTo(key, server.public_key().x25519());
  EXPECT_EQ(sealed.size(), 108u);
  auto opened = OpenContentKeyWith(sealed, server.public_key().x25519(), server.x25519_secret());
  ASSERT_TRUE(opened.ok()) << opened.error().message();
  EXPECT_EQ(0, std::memcmp(opened->data(), key.data(), ContentKey::kBytes));
  // Interchangeable with the identity form, both ways.
  auto via_identity = OpenContentKey(sealed, server);
  ASSERT_TRUE(via_identity.ok()) << via_identity.error().message();
  auto sealed_old_way = SealContentKey(key, server.public_key());
  EXPECT_TRUE(OpenContentKeyWith(sealed_old_way, server.public_key().x25519(), server.x25519_secret()).ok());

  auto other = ApplianceIdentity::Generate();
  auto wrong = OpenContentKeyWith(sealed, other.public_key().x25519(), other.x25519_secret());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);
  auto short_secret = OpenContentKeyWith(sealed, server.public_key().x25519(), server.x25519_secret().first(16));
  ASSERT_FALSE(short_secret.ok());
  EXPECT_EQ(short_secret.error().code(), Errc::kInvalidArgument);
  auto truncated = OpenContentKeyWith(sealed.substr(0, 100), server.public_key().x25519(), server.x25519_secret());
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.error().code(), Errc::kParse);
  // A small-order recipient is refused by libsodium: no output rather than a key lost in clear.
  EXPECT_EQ(SealContentKeyTo(key, X25519PublicKey{}), "");
}

TEST(SealedKeyTest, ContentKeyFromBytesChecksLength) {
  Bytes k(32, 9);
  auto ok = ContentKey::FromBytes(k);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->bytes().size(), 32u);
  EXPECT_FALSE(ContentKey::FromBytes(Bytes(16, 1)).ok());
  auto g1 = ContentKey::Generate();
  auto g2 = ContentKey::Generate();
  EXPECT_NE(0, std::memcmp(g1.data(), g2.data(), 32));
}

}  // namespace
}  // namespace upkeep::trust
