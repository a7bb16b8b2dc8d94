#include "upkeep/trust/key_store.hpp"

#include <sodium.h>
#include <sys/stat.h>

#include "encoding.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/secret.hpp"

namespace upkeep::trust {
namespace {

constexpr const char* kFileType = "upkeep-encrypted-key";
constexpr const char* kCipher = "xchacha20poly1305-ietf";
constexpr const char* kKdfArgon = "argon2id13";
constexpr const char* kKdfKeyFile = "keyfile-blake2b";
constexpr char kCheckContext[] = "upkeep key file check v1";
constexpr char kKeyFileContext[] = "upkeep key wrapping v1";
constexpr std::size_t kSaltBytes = crypto_pwhash_argon2id_SALTBYTES;
constexpr std::size_t kWrapKeyBytes = crypto_aead_xchacha20poly1305_ietf_KEYBYTES;
constexpr std::size_t kNonceBytes = crypto_aead_xchacha20poly1305_ietf_NPUBBYTES;
constexpr std::size_t kCheckBytes = 16;
constexpr std::size_t kSeedBytes = crypto_sign_SEEDBYTES;
constexpr std::uint64_t kMaxOpslimit = 16;
constexpr std::size_t kMaxMemlimit = std::size_t{1} << 30;
constexpr std::uint64_t kMaxKeyFileBytes = 64 * 1024;

static_assert(kSaltBytes == 16);

bool Exists(const std::filesystem::path& path) {
  struct stat st;
  return ::lstat(path.c_str(), &st) == 0;
}

Expected<SecretBytes> ReadWrappingKey(const std::filesystem::path& path) {
  auto text = ReadFileBounded(path, 130);
  if (!text) return text.error();
  SecretBytes raw;
  std::string& t = *text;
  if (t.size() == kWrapKeyBytes) {
    raw = SecretBytes(AsBytes(t));
  } else {
    std::string_view hex = t;
    while (!hex.empty() && (hex.back() == '\n' || hex.back() == '\r')) hex.remove_suffix(1);
    auto decoded = hex.size() == 2 * kWrapKeyBytes ? FromHex(hex) : Expected<Bytes>(Error(Errc::kParse, ""));
    if (decoded) {
      raw = SecretBytes(*decoded);
      sodium_memzero(decoded->data(), decoded->size());
    }
  }
  internal::WipeString(t);
  if (raw.empty()) {
    return Error(Errc::kParse, path.string() + ": a wrapping key file holds 32 raw bytes or 64 hex digits");
  }
  return raw;
}

Expected<SecretBytes> DeriveKey(const KeyWrapping& wrapping, const Json& kdf, const std::string& file_name) {
  UPK_TRY_ASSIGN(std::string name, GetString(kdf, "name"));
  UPK_TRY_ASSIGN(std::string salt_hex, GetString(kdf, "salt"));
  auto salt = FromHex(salt_hex);
  if (!salt || salt->size() != kSaltBytes) return Error(Errc::kParse, file_name + ": kdf salt is not 16 bytes of hex");
  SecretBytes out(kWrapKeyBytes);
  if (name == kKdfArgon) {
    if (wrapping.kind != KeyWrapping::Kind::kPassphrase) {
      return Error(Errc::kInvalidArgument, file_name + ": encrypted with a passphrase, not a key file");
    }
    UPK_TRY_ASSIGN(std::int64_t ops, GetInt(kdf, "opslimit"));
    UPK_TRY_ASSIGN(std::int64_t mem, GetInt(kdf, "memlimit"));
    if (ops < static_cast<std::int64_t>(crypto_pwhash_argon2id_OPSLIMIT_MIN) ||
        ops > static_cast<std::int64_t>(kMaxOpslimit) ||
        mem < static_cast<std::int64_t>(crypto_pwhash_argon2id_MEMLIMIT_MIN) ||
        mem > static_cast<std::int64_t>(kMaxMemlimit)) {
      return Error(Errc::kLimit, file_name + ": kdf cost outside 1..16 passes and 8 KiB..1 GiB");
    }
    if (crypto_pwhash(out.data(), out.size(), wrapping.passphrase.data(), wrapping.passphrase.size(), salt->data(),
                      static_cast<unsigned long long>(ops), static_cast<std::size_t>(mem),
                      crypto_pwhash_ALG_ARGON2ID13) != 0) {
      return Error(Errc::kInternal, file_name + ": Argon2id failed (out of memory?)");
    }
    return out;
  }
  if (name == kKdfKeyFile) {
    if (wrapping.kind != KeyWrapping::Kind::kKeyFile) {
      return Error(Errc::kInvalidArgument, file_name + ": encrypted with a wrapping key file, not a passphrase");
    }
    UPK_TRY_ASSIGN(SecretBytes master, ReadWrappingKey(wrapping.key_file));
    crypto_generichash_state st;
    crypto_generichash_init(&st, master.data(), master.size(), out.size());
    crypto_generichash_update(&st, reinterpret_cast<const unsigned char*>(kKeyFileContext), sizeof kKeyFileContext - 1);
    crypto_generichash_update(&st, salt->data(), salt->size());
    crypto_generichash_final(&st, out.data(), out.size());
    sodium_memzero(&st, sizeof st);
    return out;
  }
  return Error(Errc::kParse, file_name + ": unknown kdf '" + name.substr(0, 32) + "'");
}

Bytes Check(const SecretBytes& key) {
  Bytes out(kCheckBytes);
  crypto_generichash(out.data(), out.size(), reinterpret_cast<const unsigned char*>(kCheckContext),
                     sizeof kCheckContext - 1, key.data(), key.size());
  return out;
}

// Additional data: the canonical JSON of every field but the ciphertext.
Expected<std::string> AdditionalData(const Json& file) {
  Json header = file;
  header.erase("ciphertext");
  return CanonicalJson(header);
}

// The private seed of a key, through its TUF JSON form; the JSON copies are wiped.
SecretBytes SeedOf(const packages::PrivateKey& key) {
  Json j = key.ToJson();
  SecretBytes seed;
  auto it = j["keyval"].find("private");
  if (it != j["keyval"].end() && it->is_string()) {
    auto raw = FromHex(it->get_ref<const std::string&>());
    if (raw && raw->size() == kSeedBytes) seed = SecretBytes(*raw);
    if (raw) sodium_memzero(raw->data(), raw->size());
  }
  internal::WipeJsonStrings(j);
  return seed;
}

}  // namespace

KdfParams KdfParams::Moderate() {
  return {crypto_pwhash_argon2id_OPSLIMIT_MODERATE, crypto_pwhash_argon2id_MEMLIMIT_MODERATE};
}
KdfParams KdfParams::Interactive() {
  return {crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE, crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE};
}
KdfParams KdfParams::FastForTests() { return {1, std::size_t{8} << 20}; }

Status GenerateWrappingKeyFile(const std::filesystem::path& path) {
  internal::EnsureSodium();
  if (Exists(path))
    return Error(Errc::kInvalidArgument, path.string() + ": already exists; refusing to overwrite a key");
  SecretBytes key(kWrapKeyBytes);
  randombytes_buf(key.data(), key.size());
  return WriteFileAtomic(path, std::string_view(reinterpret_cast<const char*>(key.data()), key.size()), 0600);
}

Status SaveEncryptedKey(const packages::PrivateKey& key, const std::filesystem::path& path,
                        const KeyWrapping& wrapping) {
  internal::EnsureSodium();
  if (Exists(path))
    return Error(Errc::kInvalidArgument, path.string() + ": already exists; refusing to overwrite a key");
  SecretBytes seed = SeedOf(key);
  if (seed.size() != kSeedBytes) return Error(Errc::kInternal, "cannot read the seed of key " + key.keyid());

  std::uint8_t salt[kSaltBytes];
  std::uint8_t nonce[kNonceBytes];
  randombytes_buf(salt, sizeof salt);
  randombytes_buf(nonce, sizeof nonce);
  Json kdf = {{"salt", ToHex(std::span<const std::uint8_t>(salt, sizeof salt))}};
  if (wrapping.kind == KeyWrapping::Kind::kPassphrase) {
    if (wrapping.kdf.opslimit < crypto_pwhash_argon2id_OPSLIMIT_MIN || wrapping.kdf.opslimit > kMaxOpslimit ||
        wrapping.kdf.memlimit < crypto_pwhash_argon2id_MEMLIMIT_MIN || wrapping.kdf.memlimit > kMaxMemlimit) {
      return Error(Errc::kInvalidArgument, "kdf cost outside 1..16 passes and 8 KiB..1 GiB");
    }
    if (wrapping.passphrase.empty()) return Error(Errc::kInvalidArgument, "empty passphrase");
    kdf["name"] = kKdfArgon;
    kdf["opslimit"] = wrapping.kdf.opslimit;
    kdf["memlimit"] = wrapping.kdf.memlimit;
  } else {
    kdf["name"] = kKdfKeyFile;
  }
  UPK_TRY_ASSIGN(SecretBytes wrap, DeriveKey(wrapping, kdf, path.string()));

  Json file = {{"_type", kFileType},
               {"format", 1},
               {"public_key", key.public_key().ToJson()},
               {"keyid", key.keyid()},
               {"kdf", kdf},
               {"cipher", kCipher},
               {"nonce", ToHex(std::span<const std::uint8_t>(nonce, sizeof nonce))},
               {"check", ToHex(Check(wrap))}};
  UPK_TRY_ASSIGN(std::string ad, AdditionalData(file));
  Bytes sealed(kSeedBytes + crypto_aead_xchacha20poly1305_ietf_ABYTES);
  unsigned long long sealed_len = 0;
  crypto_aead_xchacha20poly1305_ietf_encrypt(sealed.data(), &sealed_len, seed.data(), seed.size(),
                                             reinterpret_cast<const unsigned char*>(ad.data()), ad.size(), nullptr,
                                             nonce, wrap.data());
  file["ciphertext"] = ToHex(std::span<const std::uint8_t>(sealed.data(), static_cast<std::size_t>(sealed_len)));
  return WriteFileAtomic(path, file.dump(2) + "\n", 0600);
}

namespace {

struct ParsedKeyFile {
  Json file;
  packages::PublicKey public_key;
};

Expected<ParsedKeyFile> ParseKeyFile(const std::filesystem::path& path) {
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, kMaxKeyFileBytes));
  auto json = ParseJson(text);
  if (!json) return json.error().Wrap(path.string());
  const std::string name = path.string();
  auto type = GetString(*json, "_type");
  if (!type || *type != kFileType) return Error(Errc::kParse, name + ": not an encrypted Upkeep key file (_type)");
  auto format = GetInt(*json, "format");
  if (!format || *format != 1) return Error(Errc::kParse, name + ": unsupported key file format");
  auto cipher = GetString(*json, "cipher");
  if (!cipher || *cipher != kCipher) return Error(Errc::kParse, name + ": unsupported cipher");
  auto pub_json = GetObject(*json, "public_key");
  if (!pub_json) return pub_json.error().Wrap(name);
  auto pub = packages::PublicKey::FromJson(**pub_json);
  if (!pub) return pub.error().Wrap(name);
  auto keyid = GetString(*json, "keyid");
  if (!keyid || *keyid != pub->keyid())
    return Error(Errc::kVerification, name + ": corrupted: keyid does not match public_key");
  return ParsedKeyFile{std::move(json).value(), std::move(pub).value()};
}

}  // namespace

Expected<packages::PublicKey> ReadEncryptedKeyPublic(const std::filesystem::path& path) {
  UPK_TRY_ASSIGN(ParsedKeyFile parsed, ParseKeyFile(path));
  return parsed.public_key;
}

Expected<packages::PrivateKey> LoadEncryptedKey(const std::filesystem::path& path, const KeyWrapping& wrapping) {
  internal::EnsureSodium();
  UPK_TRY_ASSIGN(ParsedKeyFile parsed, ParseKeyFile(path));
  const std::string name = path.string();
  const Json& file = parsed.file;
  auto kdf = GetObject(file, "kdf");
  if (!kdf) return kdf.error().Wrap(name);
  auto nonce_hex = GetString(file, "nonce");
  auto check_hex = GetString(file, "check");
  auto ct_hex = GetString(file, "ciphertext");
  if (!nonce_hex || !check_hex || !ct_hex) return Error(Errc::kParse, name + ": missing nonce, check or ciphertext");
  auto nonce = FromHex(*nonce_hex);
  auto check = FromHex(*check_hex);
  auto ct = FromHex(*ct_hex);
  if (!nonce || nonce->size() != kNonceBytes || !check || check->size() != kCheckBytes || !ct ||
      ct->size() != kSeedBytes + crypto_aead_xchacha20poly1305_ietf_ABYTES) {
    return Error(Errc::kVerification, name + ": corrupted: nonce, check or ciphertext has the wrong size");
  }
  UPK_TRY_ASSIGN(SecretBytes wrap, DeriveKey(wrapping, **kdf, name));
  Bytes expected = Check(wrap);
  if (sodium_memcmp(expected.data(), check->data(), kCheckBytes) != 0) {
    return Error(Errc::kVerification, wrapping.kind == KeyWrapping::Kind::kPassphrase
                                          ? name + ": wrong passphrase"
                                          : name + ": wrong wrapping key file " + wrapping.key_file.string());
  }
  UPK_TRY_ASSIGN(std::string ad, AdditionalData(file));
  SecretBytes seed(kSeedBytes);
  unsigned long long seed_len = 0;
  if (crypto_aead_xchacha20poly1305_ietf_decrypt(seed.data(), &seed_len, nullptr, ct->data(), ct->size(),
                                                 reinterpret_cast<const unsigned char*>(ad.data()), ad.size(),
                                                 nonce->data(), wrap.data()) != 0 ||
      seed_len != kSeedBytes) {
    return Error(Errc::kVerification, name + ": corrupted: the encrypted key or its header was altered");
  }
  Json priv = {{"keytype", "ed25519"}, {"scheme", "ed25519"}};
  priv["keyval"]["private"] = ToHex(seed.span());
  auto key = packages::PrivateKey::FromJson(priv);
  internal::WipeJsonStrings(priv);
  if (!key) return key.error().Wrap(name);
  if (key->keyid() != parsed.public_key.keyid()) {
    return Error(Errc::kVerification, name + ": corrupted: the decrypted key does not match its public key");
  }
  return key;
}

Expected<std::string> HashPassword(std::string_view password, KdfParams params) {
  internal::EnsureSodium();
  if (password.size() > kMaxPasswordBytes) {
    return Error(Errc::kLimit, "password longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
  }
  char out[crypto_pwhash_argon2id_STRBYTES];
  if (crypto_pwhash_argon2id_str(out, password.data(), password.size(), params.opslimit, params.memlimit) != 0) {
    return Error(Errc::kInternal, "Argon2id password hashing failed (out of memory or bad parameters)");
  }
  return std::string(out);
}

Status VerifyPassword(std::string_view hash, std::string_view password) {
  internal::EnsureSodium();
  constexpr std::string_view kPrefix = "$argon2id$";
  if (hash.size() >= crypto_pwhash_argon2id_STRBYTES || hash.substr(0, kPrefix.size()) != kPrefix) {
    return Error(Errc::kParse, "stored password hash is not an Argon2id string");
  }
  if (password.size() > kMaxPasswordBytes) return Error(Errc::kVerification, "wrong password");
  const std::string terminated(hash);  // libsodium wants a NUL-terminated string
  if (crypto_pwhash_argon2id_str_verify(terminated.c_str(), password.data(), password.size()) != 0) {
    return Error(Errc::kVerification, "wrong password");
  }
  return OkStatus();
}

bool PasswordNeedsRehash(std::string_view hash, KdfParams params) {
  internal::EnsureSodium();
  if (hash.size() >= crypto_pwhash_argon2id_STRBYTES) return true;
  const std::string terminated(hash);
  return crypto_pwhash_argon2id_str_needs_rehash(terminated.c_str(), params.opslimit, params.memlimit) != 0;
}

}  // namespace upkeep::trust
