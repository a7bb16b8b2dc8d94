#include "upkeep/trust/key_store.hpp"

#include <gtest/gtest.h>

#include <filesystem>
#include <functional>

#include "trust_test_util.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::trust {
namespace {

using packages::PrivateKey;
using testing::ReadAll;
using testing::TempDir;
using testing::WriteBytes;

const KdfParams kFast = KdfParams::FastForTests();

std::string SeedHex(const PrivateKey& key) { return key.ToJson()["keyval"]["private"].get<std::string>(); }

void ExpectOwnerOnly(const std::filesystem::path& p) {
  auto perms = std::filesystem::status(p).permissions() & std::filesystem::perms::all;
  EXPECT_EQ(perms, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write) << p;
}

// Loads a JSON file, applies `edit`, writes it to `out`.
void EditJson(const std::filesystem::path& in, const std::filesystem::path& out,
              const std::function<void(Json&)>& edit) {
  Json j = ParseJson(ReadAll(in)).value();
  edit(j);
  WriteBytes(out, j.dump(2));
}

TEST(KeyStoreTest, PassphraseRoundTripNeverWritesThePlaintextKey) {
  TempDir dir;
  auto key = PrivateKey::GenerateEd25519();
  ASSERT_TRUE(SaveEncryptedKey(key, dir / "director.key", KeyWrapping::Passphrase("correct horse", kFast)).ok());
  ExpectOwnerOnly(dir / "director.key");
  EXPECT_EQ(dir.EntryCount(), 1u);
  std::string text = ReadAll(dir / "director.key");
  EXPECT_EQ(text.find(SeedHex(key)), std::string::npos) << "the seed must not appear in the file";
  EXPECT_NE(text.find("argon2id13"), std::string::npos);

  auto loaded = LoadEncryptedKey(dir / "director.key", KeyWrapping::Passphrase("correct horse"));
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->keyid(), key.keyid());
  EXPECT_TRUE(key.public_key().Verify("m", loaded->Sign("m")));

  auto pub = ReadEncryptedKeyPublic(dir / "director.key");
  ASSERT_TRUE(pub.ok());
  EXPECT_EQ(pub->keyid(), key.keyid());

  auto again = SaveEncryptedKey(key, dir / "director.key", KeyWrapping::Passphrase("x", kFast));
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(ReadAll(dir / "director.key"), text) << "an existing key file is never overwritten";
}

TEST(KeyStoreTest, WrongPassphraseIsNamed) {
  TempDir dir;
  auto key = PrivateKey::GenerateEd25519();
  ASSERT_TRUE(SaveEncryptedKey(key, dir / "k", KeyWrapping::Passphrase("right", kFast)).ok());
  auto r = LoadEncryptedKey(dir / "k", KeyWrapping::Passphrase("wrong"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
  EXPECT_NE(r.error().message().find("wrong passphrase"), std::string::npos);
  r = LoadEncryptedKey(dir / "k", KeyWrapping::Passphrase(""));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("wrong passphrase"), std::string::npos);
}

TEST(KeyStoreTest, CorruptedFilesAreRefused) {
  TempDir dir;
  auto key = PrivateKey::GenerateEd25519();
  auto other = PrivateKey::GenerateEd25519();
  const auto good = dir / "k";
  ASSERT_TRUE(SaveEncryptedKey(key, good, KeyWrapping::Passphrase("pw", kFast)).ok());
  const auto pw = KeyWrapping::Passphrase("pw");

  struct Case {
    const char* what;
    std::function<void(Json&)> edit;
    Errc code;
    const char* words;
  };
  const Case cases[] = {
      {"ciphertext byte",
       [](Json& j) {
         std::string ct = j["ciphertext"];
         ct[4] = ct[4] == '0' ? '1' : '0';
         j["ciphertext"] = ct;
       },
       Errc::kVerification, "corrupted"},
      {"nonce byte",
       [](Json& j) {
         std::string n = j["nonce"];
         n[0] = n[0] == '0' ? '1' : '0';
         j["nonce"] = n;
       },
       Errc::kVerification, "corrupted"},
      {"ciphertext cut", [](Json& j) { j["ciphertext"] = j["ciphertext"].get<std::string>().substr(0, 40); },
       Errc::kVerification, "corrupted"},
      {"public key swapped consistently",
       [&](Json& j) {
         j["public_key"] = other.public_key().ToJson();
         j["keyid"] = other.keyid();
       },
       Errc::kVerification, "corrupted"},
      {"keyid only", [&](Json& j) { j["keyid"] = other.keyid(); }, Errc::kVerification, "keyid"},
      {"salt changed",
       [](Json& j) {
         std::string s = j["kdf"]["salt"];
         s[0] = s[0] == '0' ? '1' : '0';
         j["kdf"]["salt"] = s;
       },
       Errc::kVerification, "wrong passphrase"},
      {"hostile memlimit", [](Json& j) { j["kdf"]["memlimit"] = std::uint64_t{64} << 30; }, Errc::kLimit, "kdf cost"},
      {"hostile opslimit", [](Json& j) { j["kdf"]["opslimit"] = 1000000; }, Errc::kLimit, "kdf cost"},
      {"cipher", [](Json& j) { j["cipher"] = "rot13"; }, Errc::kParse, "cipher"},
      {"type", [](Json& j) { j["_type"] = "tuf-key"; }, Errc::kParse, "_type"},
      {"unknown kdf", [](Json& j) { j["kdf"]["name"] = "md5"; }, Errc::kParse, "unknown kdf"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    auto bad = dir / "bad";
    std::filesystem::remove(bad);
    EditJson(good, bad, c.edit);
    auto r = LoadEncryptedKey(bad, pw);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.code) << r.error().message();
    EXPECT_NE(r.error().message().find(c.words), std::string::npos) << r.error().message();
  }

  std::string text = ReadAll(good);
  WriteBytes(dir / "truncated", text.substr(0, text.size() / 2));
  auto r = LoadEncryptedKey(dir / "truncated", pw);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kParse);

  // The untouched file still loads: each failure came from its one edit.
  EXPECT_TRUE(LoadEncryptedKey(good, pw).ok());
}

TEST(KeyStoreTest, WrappingKeyFile) {
  TempDir dir;
  auto key = PrivateKey::GenerateEd25519();
  ASSERT_TRUE(GenerateWrappingKeyFile(dir / "wrap.key").ok());
  ExpectOwnerOnly(dir / "wrap.key");
  EXPECT_EQ(std::filesystem::file_size(dir / "wrap.key"), 32u);
  EXPECT_FALSE(GenerateWrappingKeyFile(dir / "wrap.key").ok());

  ASSERT_TRUE(SaveEncryptedKey(key, dir / "snapshot.key", KeyWrapping::KeyFile(dir / "wrap.key")).ok());
  ExpectOwnerOnly(dir / "snapshot.key");
  EXPECT_EQ(ReadAll(dir / "snapshot.key").find(SeedHex(key)), std::string::npos);
  auto loaded = LoadEncryptedKey(dir / "snapshot.key", KeyWrapping::KeyFile(dir / "wrap.key"));
  ASSERT_TRUE(loaded.ok()) << loaded.error().message();
  EXPECT_EQ(loaded->keyid(), key.keyid());

  // The same wrapping key written as hex works too.
  WriteBytes(dir / "wrap.hex", ToHex(ReadAll(dir / "wrap.key")) + "\n");
  EXPECT_TRUE(LoadEncryptedKey(dir / "snapshot.key", KeyWrapping::KeyFile(dir / "wrap.hex")).ok());

  ASSERT_TRUE(GenerateWrappingKeyFile(dir / "other.key").ok());
  auto wrong = LoadEncryptedKey(dir / "snapshot.key", KeyWrapping::KeyFile(dir / "other.key"));
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);
  EXPECT_NE(wrong.error().message().find("wrong wrapping key file"), std::string::npos);

  WriteBytes(dir / "short.key", std::string(31, 'k'));
  auto bad = LoadEncryptedKey(dir / "snapshot.key", KeyWrapping::KeyFile(dir / "short.key"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kParse);

  auto mismatched = LoadEncryptedKey(dir / "snapshot.key", KeyWrapping::Passphrase("pw"));
  ASSERT_FALSE(mismatched.ok());
  EXPECT_EQ(mismatched.error().code(), Errc::kInvalidArgument);
}

TEST(KeyStoreTest, SaveRefusesWeakOrAbsurdSettings) {
  TempDir dir;
  auto key = PrivateKey::GenerateEd25519();
  EXPECT_FALSE(SaveEncryptedKey(key, dir / "a", KeyWrapping::Passphrase("", kFast)).ok());
  EXPECT_FALSE(SaveEncryptedKey(key, dir / "b", KeyWrapping::Passphrase("pw", KdfParams{0, 1 << 20})).ok());
  EXPECT_FALSE(
      SaveEncryptedKey(key, dir / "c", KeyWrapping::Passphrase("pw", KdfParams{3, std::size_t{4} << 30})).ok());
  EXPECT_EQ(dir.EntryCount(), 0u);
  EXPECT_GE(KdfParams::Moderate().memlimit, std::size_t{256} << 20);
  EXPECT_GE(KdfParams::Moderate().opslimit, 3u);
}

TEST(PasswordTest, HashesVerifyAndRehash) {
  auto h = HashPassword("hunter2 but longer", kFast);
  ASSERT_TRUE(h.ok()) << h.error().message();
  EXPECT_EQ(h->rfind("$argon2id$", 0), 0u);
  EXPECT_EQ(h->find("hunter2"), std::string::npos);
  EXPECT_TRUE(VerifyPassword(*h, "hunter2 but longer").ok());
  auto wrong = VerifyPassword(*h, "hunter3 but longer");
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);

  auto h2 = HashPassword("hunter2 but longer", kFast);
  ASSERT_TRUE(h2.ok());
  EXPECT_NE(*h, *h2) << "fresh salt per hash";

  EXPECT_FALSE(PasswordNeedsRehash(*h, kFast));
  EXPECT_TRUE(PasswordNeedsRehash(*h, KdfParams::Interactive()));

  auto garbage = VerifyPassword("$2y$10$bcrypt-hash", "x");
  ASSERT_FALSE(garbage.ok());
  EXPECT_EQ(garbage.error().code(), Errc::kParse);
  EXPECT_FALSE(HashPassword(std::string(kMaxPasswordBytes + 1, 'p'), kFast).ok());
}

}  // namespace
}  // namespace upkeep::trust
