// The state directory: init creates encrypted keys and hashed tokens with private permissions,
// refuses to overwrite, a wrong passphrase is refused, rotation keeps the old key as retired.
#include <sys/stat.h>

#include <sstream>

#include "test_util.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/keyserver/cli.hpp"
#include "upkeep/keyserver/state.hpp"
#include "upkeep/trust/content_key.hpp"

namespace upkeep::keyserver {
namespace {

using test::TempDir;
using test::TestWrapping;
namespace fs = std::filesystem;

unsigned Mode(const fs::path& p) {
  struct stat st {};
  if (::stat(p.c_str(), &st) != 0) return 0;
  return st.st_mode & 0777;
}

std::string Slurp(const fs::path& p) {
  auto text = ReadFileBounded(p, 1 << 20);
  return text.ok() ? *text : std::string();
}

TEST(KeyserverState, InitCreatesEncryptedPrivateState) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK_AND_ASSIGN(Json out, InitState(dir, TestWrapping()));
  EXPECT_EQ(out["keys"].size(), 5u) << out.dump();
  EXPECT_EQ(kAllRoles.size(), 5u);
  EXPECT_EQ(Mode(dir), 0700u);
  EXPECT_EQ(Mode(dir / "keys"), 0700u);
  for (Role role : kAllRoles) {
    const std::string name(RoleName(role));
    ASSERT_TRUE(out["keys"].contains(name)) << out.dump();
    EXPECT_EQ(out["keys"][name]["keyid"].get<std::string>().size(), 64u);
    EXPECT_EQ(Mode(dir / "keys" / (name + "-1.key")), 0600u);
  }
  EXPECT_EQ(Mode(dir / "state.json"), 0600u);
  EXPECT_EQ(Mode(dir / "updater.token"), 0600u);
  EXPECT_EQ(Mode(dir / "admin.token"), 0600u);

  const std::string updater = test::ReadToken(dir / "updater.token");
  const std::string admin = test::ReadToken(dir / "admin.token");
  ASSERT_GE(updater.size(), 64u);
  ASSERT_GE(admin.size(), 64u);
  EXPECT_NE(updater, admin);
  // Tokens are stored hashed, never in the state file or the printed output.
  const std::string state = Slurp(dir / "state.json");
  EXPECT_EQ(state.find(updater), std::string::npos);
  EXPECT_EQ(state.find(admin), std::string::npos);
  EXPECT_NE(state.find(Sha256Hex(updater)), std::string::npos);
  EXPECT_EQ(out.dump().find(updater), std::string::npos);

  KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(dir, TestWrapping()));
  EXPECT_EQ(keys.Authenticate(updater), Actor::kUpdater);
  EXPECT_EQ(keys.Authenticate(admin), Actor::kAdmin);
  EXPECT_FALSE(keys.Authenticate(updater + "x").has_value());
  EXPECT_FALSE(keys.Authenticate("").has_value());

  // No file holds a private seed in plaintext (raw, lower or upper hex).
  std::vector<std::string> files;
  for (const auto& entry : fs::recursive_directory_iterator(dir)) {
    if (entry.is_regular_file()) files.push_back(Slurp(entry.path()));
  }
  ASSERT_GE(files.size(), 8u);
  // Nor the content key's X25519 secret.
  const std::span<const std::uint8_t> x_secret = keys.content_opener().x25519_secret();
  const std::string x_raw(x_secret.begin(), x_secret.end());
  for (const std::string& content : files) {
    EXPECT_EQ(content.find(x_raw), std::string::npos);
    EXPECT_EQ(content.find(ToHex(x_secret)), std::string::npos);
  }
  for (Role role : kAllRoles) {
    EXPECT_EQ(keys.signer(role).keyid(), out["keys"][std::string(RoleName(role))]["keyid"].get<std::string>());
    Bytes seed = keys.signer(role).Seed();
    ASSERT_EQ(seed.size(), 32u);
    const std::string raw(seed.begin(), seed.end());
    std::string hex = ToHex(seed);
    std::string upper = hex;
    for (char& c : upper) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
    for (const std::string& content : files) {
      EXPECT_EQ(content.find(raw), std::string::npos);
      EXPECT_EQ(content.find(hex), std::string::npos);
      EXPECT_EQ(content.find(upper), std::string::npos);
    }
  }
}

TEST(KeyserverState, InitRefusesExistingState) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK(InitState(dir, TestWrapping()));
  const std::string before = Slurp(dir / "state.json");
  auto again = InitState(dir, TestWrapping());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), Errc::kPolicy);
  EXPECT_NE(again.error().message().find("refusing to overwrite"), std::string::npos);
  EXPECT_EQ(Slurp(dir / "state.json"), before);
}

TEST(KeyserverState, WrongPassphraseRefused) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK(InitState(dir, TestWrapping()));
  auto loaded = KeySet::Load(dir, TestWrapping("not the passphrase"));
  ASSERT_FALSE(loaded.ok());
  EXPECT_EQ(loaded.error().code(), Errc::kVerification);
  EXPECT_NE(loaded.error().message().find("wrong passphrase"), std::string::npos) << loaded.error().message();
  EXPECT_FALSE(KeySet::Load(tmp.path() / "missing", TestWrapping()).ok());
}

TEST(KeyserverState, WrappingKeyFile) {
  TempDir tmp;
  KS_ASSERT_OK(trust::GenerateWrappingKeyFile(tmp.path() / "wrap.key"));
  KS_ASSERT_OK(trust::GenerateWrappingKeyFile(tmp.path() / "other.key"));
  KS_ASSERT_OK(InitState(tmp.path() / "state", trust::KeyWrapping::KeyFile(tmp.path() / "wrap.key")));
  KS_ASSERT_OK(KeySet::Load(tmp.path() / "state", trust::KeyWrapping::KeyFile(tmp.path() / "wrap.key")));
  EXPECT_FALSE(KeySet::Load(tmp.path() / "state", trust::KeyWrapping::KeyFile(tmp.path() / "other.key")).ok());
}

TEST(KeyserverState, RotateKeepsRetiredKey) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK_AND_ASSIGN(Json out, InitState(dir, TestWrapping()));
  const std::string old_id = out["keys"]["snapshot"]["keyid"].get<std::string>();

  auto refused = RotateKey(dir, TestWrapping("wrong"), Role::kSnapshot);
  ASSERT_FALSE(refused.ok());
  EXPECT_FALSE(fs::exists(dir / "keys" / "snapshot-2.key"));

  KS_ASSERT_OK_AND_ASSIGN(Json rotated, RotateKey(dir, TestWrapping(), Role::kSnapshot));
  const std::string new_id = rotated["keyid"].get<std::string>();
  EXPECT_NE(new_id, old_id);
  EXPECT_EQ(rotated["retired"], Json::array({old_id}));

  KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(dir, TestWrapping()));
  EXPECT_EQ(keys.signer(Role::kSnapshot).keyid(), new_id);
  ASSERT_EQ(keys.retired(Role::kSnapshot).size(), 1u);
  EXPECT_EQ(keys.retired(Role::kSnapshot)[0].keyid(), old_id);
  EXPECT_EQ(keys.signer(Role::kTimestamp).keyid(), out["keys"]["timestamp"]["keyid"].get<std::string>());
  const Json pub = keys.PublicJson();
  EXPECT_EQ(pub["roles"]["snapshot"]["keyid"], new_id);
  EXPECT_EQ(pub["roles"]["snapshot"]["retired"][0]["keyid"], old_id);
}

TEST(KeyserverState, ContentKeyOpensAcrossRotation) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK_AND_ASSIGN(Json out, InitState(dir, TestWrapping()));
  const std::string x_hex = out["keys"]["content"]["x25519_public"].get<std::string>();
  ASSERT_EQ(x_hex.size(), 64u);
  KS_ASSERT_OK_AND_ASSIGN(Bytes x_bytes, FromHex(x_hex));
  trust::X25519PublicKey old_x{};
  std::copy(x_bytes.begin(), x_bytes.end(), old_x.begin());

  KS_ASSERT_OK_AND_ASSIGN(KeySet keys, KeySet::Load(dir, TestWrapping()));
  // The opener is the content role's ed25519 key in X25519 form.
  Bytes seed = keys.signer(Role::kContent).Seed();
  KS_ASSERT_OK_AND_ASSIGN(auto derived, trust::ApplianceIdentity::FromSeed(seed));
  EXPECT_EQ(derived.public_key().x25519(), keys.content_opener().public_key().x25519());
  EXPECT_EQ(keys.content_opener().public_key().x25519(), old_x);
  EXPECT_EQ(keys.PublicJson()["roles"]["content"]["x25519_public"], x_hex);
  EXPECT_FALSE(keys.PublicJson()["roles"]["director"].contains("x25519_public"));

  const auto content_key = trust::ContentKey::Generate();
  const std::string sealed_old = trust::SealContentKeyTo(content_key, old_x);
  KS_ASSERT_OK_AND_ASSIGN(auto opened, keys.OpenContentKey(sealed_old));
  EXPECT_TRUE(std::equal(opened.bytes().begin(), opened.bytes().end(), content_key.bytes().begin()));
  auto stranger = trust::ApplianceIdentity::Generate();
  auto refused = keys.OpenContentKey(trust::SealContentKey(content_key, stranger.public_key()));
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kVerification);
  EXPECT_EQ(keys.OpenContentKey("!!").error().code(), Errc::kParse);

  KS_ASSERT_OK_AND_ASSIGN(Json rotated, RotateKey(dir, TestWrapping(), Role::kContent));
  ASSERT_TRUE(rotated["x25519_public"].is_string());
  EXPECT_NE(rotated["x25519_public"], x_hex);
  KS_ASSERT_OK_AND_ASSIGN(KeySet after, KeySet::Load(dir, TestWrapping()));
  EXPECT_EQ(ToHex(after.content_opener().public_key().x25519()), rotated["x25519_public"].get<std::string>());
  // Sealed before the rotation: still opens, with the retired key.
  KS_ASSERT_OK_AND_ASSIGN(auto reopened, after.OpenContentKey(sealed_old));
  EXPECT_TRUE(std::equal(reopened.bytes().begin(), reopened.bytes().end(), content_key.bytes().begin()));
  KS_ASSERT_OK(after.OpenContentKey(trust::SealContentKeyTo(content_key, after.content_opener().public_key().x25519())));
  const Json pub = after.PublicJson();
  EXPECT_EQ(pub["roles"]["content"]["x25519_public"], rotated["x25519_public"]);
  ASSERT_EQ(pub["roles"]["content"]["retired"].size(), 1u);
  EXPECT_EQ(pub["roles"]["content"]["retired"][0]["x25519_public"], x_hex);
  EXPECT_EQ(pub["roles"]["content"]["retired"][0]["keyid"], out["keys"]["content"]["keyid"]);
  EXPECT_EQ(after.retired(Role::kContent).size(), 1u);
}

TEST(KeyserverState, TamperedStateFileRefused) {
  TempDir tmp;
  const fs::path dir = tmp.path() / "state";
  KS_ASSERT_OK(InitState(dir, TestWrapping()));
  const std::string original = Slurp(dir / "state.json");
  for (const char* bad : {"../../etc/passwd", "snapshot-1.key.bak", "snapshot-x.key", "root-1.key", "snapshot-.key"}) {
    Json state = ParseJson(original).value();
    state["roles"]["snapshot"]["current"] = bad;
    KS_ASSERT_OK(WriteFileAtomic(dir / "state.json", state.dump(), 0600));
    auto loaded = KeySet::Load(dir, TestWrapping());
    ASSERT_FALSE(loaded.ok()) << bad;
    EXPECT_EQ(loaded.error().code(), Errc::kParse) << bad;
  }
  KS_ASSERT_OK(WriteFileAtomic(dir / "state.json", original, 0600));
  KS_ASSERT_OK(KeySet::Load(dir, TestWrapping()));
}

int RunMain(std::vector<std::string> args, std::string* out, std::string* err) {
  std::vector<const char*> argv{"keyserver"};
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream o, e;
  int rc = Main(static_cast<int>(argv.size()), argv.data(), o, e);
  *out = o.str();
  *err = e.str();
  return rc;
}

TEST(KeyserverCli, InitServeRotateExitCodes) {
  TempDir tmp;
  const fs::path pass = tmp.path() / "pass";
  const fs::path wrong = tmp.path() / "wrong";
  KS_ASSERT_OK(WriteFileAtomic(pass, std::string(test::kPassphrase) + "\n", 0600));
  KS_ASSERT_OK(WriteFileAtomic(wrong, "guess\n", 0600));
  const std::string state = (tmp.path() / "state").string();
  std::string out, err;

  ASSERT_EQ(RunMain({"init", "--state", state, "--passphrase-file", pass.string(), "--fast-kdf-for-tests"}, &out, &err),
            0)
      << err;
  auto printed = ParseJson(out);
  ASSERT_TRUE(printed.ok()) << out;
  EXPECT_TRUE((*printed)["keys"].contains("timestamp"));
  const std::string admin = test::ReadToken(fs::path(state) / "admin.token");
  EXPECT_EQ(out.find(admin), std::string::npos);
  EXPECT_EQ(err.find(admin), std::string::npos);

  // A second init refuses and leaves the state alone.
  EXPECT_NE(RunMain({"init", "--state", state, "--passphrase-file", pass.string(), "--fast-kdf-for-tests"}, &out, &err),
            0);
  EXPECT_NE(err.find("refusing to overwrite"), std::string::npos) << err;
  EXPECT_EQ(test::ReadToken(fs::path(state) / "admin.token"), admin);

  // serve with a wrong passphrase: a clear error and exit 2, before touching any database.
  EXPECT_EQ(RunMain({"serve", "--state", state, "--passphrase-file", wrong.string(), "--database",
                     "host=/nonexistent dbname=x", "--listen", "127.0.0.1:0"},
                    &out, &err),
            2);
  EXPECT_NE(err.find("wrong passphrase"), std::string::npos) << err;
  EXPECT_EQ(err.find("guess"), std::string::npos);

  // Usage errors are 2: no secret, both secrets, bad role.
  EXPECT_EQ(RunMain({"init", "--state", (tmp.path() / "s2").string()}, &out, &err), 2);
  EXPECT_EQ(RunMain({"rotate", "--state", state, "--passphrase-file", pass.string(), "--role", "root"}, &out, &err), 2);

  ASSERT_EQ(RunMain({"rotate", "--state", state, "--passphrase-file", pass.string(), "--role", "timestamp",
                     "--fast-kdf-for-tests"},
                    &out, &err),
            0)
      << err;
  auto rotated = ParseJson(out);
  ASSERT_TRUE(rotated.ok()) << out;
  EXPECT_NE((*rotated)["keyid"], (*printed)["keys"]["timestamp"]["keyid"]);
  EXPECT_EQ((*rotated)["retired"][0], (*printed)["keys"]["timestamp"]["keyid"]);
}

}  // namespace
}  // namespace upkeep::keyserver
