#include "upkeep/packages/keys.hpp"

#include <algorithm>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <sodium.h>
#include <sys/stat.h>

#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::packages {

Expected<PublicKey> PublicKey::FromJson(const Json& json) {
  PublicKey k;
  UPK_TRY_ASSIGN(k.keytype_, GetString(json, "keytype"));
  UPK_TRY_ASSIGN(k.scheme_, GetString(json, "scheme"));
  UPK_TRY_ASSIGN(const Json* keyval, GetObject(json, "keyval"));
  UPK_TRY_ASSIGN(k.public_, GetString(*keyval, "public"));
  if (k.keytype_ == "ed25519") {
    if (k.scheme_ != "ed25519") return Error(Errc::kParse, "ed25519 key with scheme '" + k.scheme_ + "'");
    auto raw = FromHex(k.public_);
    if (!raw || raw->size() != crypto_sign_PUBLICKEYBYTES) return Error(Errc::kParse, "ed25519 public key is not 32 bytes of hex");
  } else if (k.keytype_ == "ecdsa" || k.keytype_ == "ecdsa-sha2-nistp256") {
    if (k.scheme_ != "ecdsa-sha2-nistp256") return Error(Errc::kParse, "ecdsa key with scheme '" + k.scheme_ + "'");
  } else if (k.keytype_ == "rsa") {
    if (k.scheme_ != "rsassa-pss-sha256") return Error(Errc::kParse, "rsa key with scheme '" + k.scheme_ + "'");
  } else {
    return Error(Errc::kParse, "unsupported key type '" + k.keytype_.substr(0, 32) + "'");
  }
  // The key id covers exactly the fields TUF hashes, whatever else the JSON carried.
  auto canonical = CanonicalJson(k.ToJson());
  if (!canonical) return canonical.error();
  k.keyid_ = Sha256Hex(*canonical);
  return k;
}

Json PublicKey::ToJson() const {
  return Json{{"keytype", keytype_}, {"scheme", scheme_}, {"keyval", Json{{"public", public_}}}};
}

namespace {

// The PEM's algorithm must match the declared keytype: an "ecdsa" key that is really RSA (or EC
// on another curve) would otherwise verify under a scheme the metadata never named.
bool PemMatchesType(EVP_PKEY* pkey, bool rsa) {
  if (rsa) return EVP_PKEY_is_a(pkey, "RSA") == 1;
  if (EVP_PKEY_is_a(pkey, "EC") != 1) return false;
  char group[64] = {0};
  std::size_t len = 0;
  if (EVP_PKEY_get_utf8_string_param(pkey, "group", group, sizeof group, &len) != 1) return false;
  return std::string_view(group, len) == "prime256v1" || std::string_view(group, len) == "P-256";
}

bool VerifyWithOpenSsl(const std::string& pem, bool pss, std::string_view message,
                       std::span<const std::uint8_t> signature) {
  if (pem.size() > 16384) return false;
  BIO* bio = BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size()));
  if (!bio) return false;
  EVP_PKEY* pkey = PEM_read_bio_PUBKEY(bio, nullptr, nullptr, nullptr);
  BIO_free(bio);
  if (!pkey) return false;
  if (!PemMatchesType(pkey, pss)) {
    EVP_PKEY_free(pkey);
    return false;
  }
  bool ok = false;
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  if (ctx && EVP_DigestVerifyInit(ctx, &pctx, EVP_sha256(), nullptr, pkey) == 1) {
    bool params_ok = true;
    if (pss) {
      params_ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
                  EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_AUTO) == 1;
    }
    ok = params_ok && EVP_DigestVerify(ctx, signature.data(), signature.size(),
                                       reinterpret_cast<const unsigned char*>(message.data()), message.size()) == 1;
  }
  EVP_MD_CTX_free(ctx);
  EVP_PKEY_free(pkey);
  return ok;
}

}  // namespace

bool PublicKey::Verify(std::string_view message, std::span<const std::uint8_t> signature) const {
  if (keytype_ == "ed25519") {
    auto pub = FromHex(public_);
    if (!pub || pub->size() != crypto_sign_PUBLICKEYBYTES || signature.size() != crypto_sign_BYTES) return false;
    return crypto_sign_verify_detached(signature.data(), reinterpret_cast<const unsigned char*>(message.data()),
                                       message.size(), pub->data()) == 0;
  }
  if (keytype_ == "rsa") {
    return VerifyWithOpenSsl(public_, /*pss=*/true, message, signature);
  }
  return VerifyWithOpenSsl(public_, /*pss=*/false, message, signature);
}

PrivateKey PrivateKey::GenerateEd25519() {
  PrivateKey k;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  k.secret_.resize(crypto_sign_SECRETKEYBYTES);
  crypto_sign_keypair(pk, k.secret_.data());
  Json pub = {{"keytype", "ed25519"}, {"scheme", "ed25519"},
              {"keyval", {{"public", ToHex(std::span<const std::uint8_t>(pk, sizeof pk))}}}};
  k.public_key_ = PublicKey::FromJson(pub).value();
  return k;
}

Expected<PrivateKey> PrivateKey::FromJson(const Json& json) {
  UPK_TRY_ASSIGN(std::string keytype, GetString(json, "keytype"));
  if (keytype != "ed25519") return Error(Errc::kParse, "only ed25519 private keys can sign");
  UPK_TRY_ASSIGN(const Json* keyval, GetObject(json, "keyval"));
  UPK_TRY_ASSIGN(std::string priv_hex, GetString(*keyval, "private"));
  auto seed = FromHex(priv_hex);
  sodium_memzero(priv_hex.data(), priv_hex.size());
  if (!seed || seed->size() != crypto_sign_SEEDBYTES) return Error(Errc::kParse, "ed25519 private key is not a 32-byte hex seed");
  PrivateKey k;
  unsigned char pk[crypto_sign_PUBLICKEYBYTES];
  k.secret_.resize(crypto_sign_SECRETKEYBYTES);
  crypto_sign_seed_keypair(pk, k.secret_.data(), seed->data());
  sodium_memzero(seed->data(), seed->size());
  Json pub = {{"keytype", "ed25519"}, {"scheme", "ed25519"},
              {"keyval", {{"public", ToHex(std::span<const std::uint8_t>(pk, sizeof pk))}}}};
  k.public_key_ = PublicKey::FromJson(pub).value();
  return k;
}

Expected<PrivateKey> PrivateKey::Load(const std::filesystem::path& path) {
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, 64 * 1024));
  auto json = ParseJson(text);
  if (!json) return json.error().Wrap(path.string());
  auto key = FromJson(*json);
  if (!key) return key.error().Wrap(path.string());
  return key;
}

Json PrivateKey::ToJson() const {
  Json j = public_key_.ToJson();
  j["keyval"]["private"] = ToHex(std::span<const std::uint8_t>(secret_.data(), crypto_sign_SEEDBYTES));
  return j;
}

Status PrivateKey::Save(const std::filesystem::path& path) const {
  struct stat st;
  if (::stat(path.c_str(), &st) == 0) return Error(Errc::kInvalidArgument, path.string() + ": already exists; refusing to overwrite a key");
  return WriteFileAtomic(path, ToJson().dump(2) + "\n", 0600);
}

PrivateKey::~PrivateKey() {
  if (!secret_.empty()) sodium_memzero(secret_.data(), secret_.size());
}

Bytes PrivateKey::Seed() const {
  return Bytes(secret_.begin(), secret_.begin() + std::min<std::size_t>(secret_.size(), crypto_sign_SEEDBYTES));
}

Bytes PrivateKey::Sign(std::string_view message) const {
  Bytes sig(crypto_sign_BYTES);
  crypto_sign_detached(sig.data(), nullptr, reinterpret_cast<const unsigned char*>(message.data()), message.size(),
                       secret_.data());
  return sig;
}

Expected<PublicKey> LoadPublicKey(const std::filesystem::path& path) {
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, 64 * 1024));
  auto json = ParseJson(text);
  if (!json) return json.error().Wrap(path.string());
  auto key = PublicKey::FromJson(*json);
  if (!key) return key.error().Wrap(path.string());
  return key;
}

}  // namespace upkeep::packages
