#include "upkeep/trust/identity.hpp"

#include <sodium.h>
#include <sys/stat.h>

#include "encoding.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::trust {
namespace {

constexpr std::size_t kIdHashBytes = 20;
constexpr const char* kIdPrefix = "apl-";
constexpr const char* kIdentityType = "upkeep-appliance-identity";
constexpr std::uint64_t kMaxIdentityFileBytes = 64 * 1024;

}  // namespace

std::string ApplianceIdFor(std::span<const std::uint8_t> ed25519_public_key) {
  Hasher h;
  h.Update(ed25519_public_key);
  Bytes digest = h.Finish();
  return kIdPrefix + internal::Base32Lower(std::span<const std::uint8_t>(digest.data(), kIdHashBytes));
}

bool IsValidApplianceId(std::string_view id) {
  if (id.size() != 4 + 32 || id.substr(0, 4) != kIdPrefix) return false;
  for (char c : id.substr(4)) {
    if (!((c >= 'a' && c <= 'z') || (c >= '2' && c <= '7'))) return false;
  }
  return true;
}

Expected<AppliancePublicKey> AppliancePublicKey::FromPublicKey(const packages::PublicKey& key) {
  internal::EnsureSodium();
  if (key.keytype() != "ed25519" || key.scheme() != "ed25519") {
    return Error(Errc::kInvalidArgument, "appliance key " + key.keyid() + " is not an ed25519 key");
  }
  auto raw = FromHex(key.public_value());
  if (!raw || raw->size() != crypto_sign_PUBLICKEYBYTES) {
    return Error(Errc::kParse, "appliance key " + key.keyid() + " is not 32 bytes of hex");
  }
  AppliancePublicKey out;
  // Refuses small-order and non-canonical points, which have no usable X25519 form.
  if (crypto_sign_ed25519_pk_to_curve25519(out.x25519_.data(), raw->data()) != 0) {
    return Error(Errc::kVerification, "appliance key " + key.keyid() + " is not a valid ed25519 point");
  }
  out.signing_key_ = key;
  out.appliance_id_ = ApplianceIdFor(*raw);
  return out;
}

Expected<AppliancePublicKey> AppliancePublicKey::FromJson(const Json& json) {
  UPK_TRY_ASSIGN(packages::PublicKey key, packages::PublicKey::FromJson(json));
  return FromPublicKey(key);
}

ApplianceIdentity ApplianceIdentity::Generate() {
  internal::EnsureSodium();
  SecretBytes seed(crypto_sign_SEEDBYTES);
  randombytes_buf(seed.data(), seed.size());
  // A 32-byte seed from the CSPRNG is always a valid ed25519 seed.
  return FromSeed(seed.span()).value();
}

Expected<ApplianceIdentity> ApplianceIdentity::FromSeed(std::span<const std::uint8_t> seed) {
  internal::EnsureSodium();
  if (seed.size() != crypto_sign_SEEDBYTES) {
    return Error(Errc::kInvalidArgument, "appliance identity seed is not 32 bytes");
  }
  // PrivateKey takes its seed in TUF's JSON form; the hex copies are wiped right after.
  Json priv = {{"keytype", "ed25519"}, {"scheme", "ed25519"}};
  priv["keyval"]["private"] = ToHex(seed);  // moved in, so the one copy is wiped below
  auto key = packages::PrivateKey::FromJson(priv);
  internal::WipeJsonStrings(priv);
  if (!key) return key.error();

  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  SecretBytes sk(crypto_sign_SECRETKEYBYTES);
  crypto_sign_seed_keypair(pk, sk.data(), seed.data());
  SecretBytes x_secret(kX25519KeyBytes);
  if (crypto_sign_ed25519_sk_to_curve25519(x_secret.data(), sk.data()) != 0) {
    return Error(Errc::kInternal, "cannot derive the X25519 secret of an appliance key");
  }
  UPK_TRY_ASSIGN(AppliancePublicKey pub, AppliancePublicKey::FromPublicKey(key->public_key()));
  return ApplianceIdentity(std::move(key).value(), std::move(pub), std::move(x_secret));
}

Expected<ApplianceIdentity> ApplianceIdentity::Load(const std::filesystem::path& path) {
  internal::EnsureSodium();
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, kMaxIdentityFileBytes));
  auto json = ParseJson(text);
  internal::WipeString(text);
  if (!json) return json.error().Wrap(path.string());
  auto fail = [&](const std::string& what) -> Error {
    internal::WipeJsonStrings(*json);
    return Error(Errc::kParse, path.string() + ": " + what);
  };
  auto type = GetString(*json, "_type");
  if (!type || *type != kIdentityType) return fail("not an appliance identity file (_type)");
  auto format = GetInt(*json, "format");
  if (!format || *format != 1) return fail("unsupported identity file format");
  auto id = GetString(*json, "appliance_id");
  auto key_json = GetObject(*json, "key");
  if (!id || !key_json) return fail("missing appliance_id or key");
  auto keyval = GetObject(**key_json, "keyval");
  if (!keyval) return fail("key has no keyval");
  auto seed_hex = GetString(**keyval, "private");
  if (!seed_hex) return fail("key has no private seed");
  auto seed = FromHex(*seed_hex);
  internal::WipeString(*seed_hex);
  if (!seed || seed->size() != crypto_sign_SEEDBYTES) {
    if (seed) sodium_memzero(seed->data(), seed->size());
    return fail("private seed is not 32 bytes of hex");
  }
  SecretBytes seed_secret(*seed);
  sodium_memzero(seed->data(), seed->size());
  internal::WipeJsonStrings(*json);
  auto identity = FromSeed(seed_secret.span());
  if (!identity) return identity.error().Wrap(path.string());
  if (identity->appliance_id() != *id) {
    return Error(Errc::kVerification, path.string() + ": appliance id '" + id->substr(0, 40) +
                                          "' does not match the key (expected " + identity->appliance_id() + ")");
  }
  return identity;
}

Status ApplianceIdentity::Save(const std::filesystem::path& path) const {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) {
    return Error(Errc::kInvalidArgument, path.string() + ": already exists; refusing to overwrite an identity");
  }
  Json file = {{"_type", kIdentityType}, {"format", 1}, {"appliance_id", appliance_id()}};
  file["key"] = signing_key_.ToJson();  // moved in, so the one copy is wiped below
  std::string text = file.dump(2);
  internal::WipeJsonStrings(file);
  Status written = WriteFileAtomic(path, text, 0600);
  internal::WipeString(text);
  return written;
}

}  // namespace upkeep::trust
