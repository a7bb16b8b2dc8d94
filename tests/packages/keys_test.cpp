#include "upkeep/packages/keys.hpp"

#include <gtest/gtest.h>

#include <unistd.h>

#include <filesystem>

#include "upkeep/common/hash.hpp"

namespace upkeep::packages {
namespace {

TEST(KeysTest, SignsAndVerifiesEd25519) {
  auto key = PrivateKey::GenerateEd25519();
  auto sig = key.Sign("hello");
  EXPECT_TRUE(key.public_key().Verify("hello", sig));
  EXPECT_FALSE(key.public_key().Verify("hellO", sig));
  sig[0] ^= 1;
  EXPECT_FALSE(key.public_key().Verify("hello", sig));
  EXPECT_EQ(key.keyid().size(), 64u);
}

TEST(KeysTest, PrivateKeyRoundTripsThroughFileWithTightPermissions) {
  auto dir = std::filesystem::temp_directory_path() / ("upk-keys-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto key = PrivateKey::GenerateEd25519();
  ASSERT_TRUE(key.Save(dir / "k.json").ok());
  EXPECT_FALSE(key.Save(dir / "k.json").ok()) << "must not overwrite a key";
  auto perms = std::filesystem::status(dir / "k.json").permissions();
  EXPECT_EQ(perms & std::filesystem::perms::all, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  auto loaded = PrivateKey::Load(dir / "k.json");
  ASSERT_TRUE(loaded.ok());
  EXPECT_EQ(loaded->keyid(), key.keyid());
  EXPECT_TRUE(key.public_key().Verify("m", loaded->Sign("m")));
  std::filesystem::remove_all(dir);
}

TEST(KeysTest, KeyIdIsSha256OfCanonicalPublicKey) {
  // Key id of a known TUF ed25519 public key, computed as the specification does.
  Json j = {{"keytype", "ed25519"}, {"scheme", "ed25519"},
            {"keyval", {{"public", "edcd0a32a07dce33f7c7873aaffbff36d20ea30787574ead335eefd337e4dacd"}}}};
  auto k = PublicKey::FromJson(j);
  ASSERT_TRUE(k.ok());
  // Extra fields (like keyid_hash_algorithms) do not change the id.
  Json with_extra = j;
  with_extra["keyid_hash_algorithms"] = {"sha256", "sha512"};
  EXPECT_EQ(PublicKey::FromJson(with_extra)->keyid(), k->keyid());
  EXPECT_EQ(k->keyid(), Sha256Hex(CanonicalJson(j).value()));
}

}  // namespace
}  // namespace upkeep::packages
