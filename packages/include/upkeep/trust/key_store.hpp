// Keys at rest: the keyserver's online keys (snapshot, timestamp, director, licence) in files
// encrypted under a passphrase (Argon2id) or a 32-byte wrapping key file, and Argon2id hashes
// for account passwords.
//
// Encrypted key file (JSON, written 0600 atomically, never overwritten):
//   {"_type": "upkeep-encrypted-key", "format": 1,
//    "public_key": {TUF public key}, "keyid": HEX,
//    "kdf": {"name": "argon2id13", "salt": HEX16, "opslimit": N, "memlimit": BYTES}
//         | {"name": "keyfile-blake2b", "salt": HEX16},
//    "cipher": "xchacha20poly1305-ietf", "nonce": HEX24, "check": HEX16, "ciphertext": HEX}
// The ciphertext is the 32-byte ed25519 seed, encrypted with the derived key and all the other
// fields (their canonical JSON) as additional data, so no header field can be altered unseen.
// "check" is BLAKE2b keyed with the derived key: it tells a wrong passphrase ("wrong
// passphrase") from a corrupted file ("corrupted"). The plaintext key is only ever in memory
// and wiped after use; the public key and key id are readable without the passphrase.
//
// Loading bounds the KDF cost a file may ask for (opslimit <= 16, memlimit <= 1 GiB), so a
// hostile file can't make a load take minutes or exhaust memory. Functions are thread-safe.
// Passphrases are borrowed, never copied, never logged; callers wipe their own copies.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::trust {

struct KdfParams {
  std::uint64_t opslimit = 0;
  std::size_t memlimit = 0;
  // libsodium's MODERATE (3 passes, 256 MiB, about a second): the default for key files.
  static KdfParams Moderate();
  // libsodium's INTERACTIVE (2 passes, 64 MiB): the default for account passwords.
  static KdfParams Interactive();
  // 1 pass, 8 MiB: for tests only, far too weak for real secrets.
  static KdfParams FastForTests();
};

// The source of the key-encryption key.
struct KeyWrapping {
  enum class Kind { kPassphrase, kKeyFile };
  Kind kind = Kind::kPassphrase;
  std::string_view passphrase;            // kPassphrase (borrowed)
  std::filesystem::path key_file;         // kKeyFile: 32 raw bytes, or 64 hex digits and a newline
  KdfParams kdf = KdfParams::Moderate();  // kPassphrase, when saving

  static KeyWrapping Passphrase(std::string_view passphrase, KdfParams kdf = KdfParams::Moderate()) {
    KeyWrapping w;
    w.passphrase = passphrase;
    w.kdf = kdf;
    return w;
  }
  static KeyWrapping KeyFile(std::filesystem::path path) {
    KeyWrapping w;
    w.kind = Kind::kKeyFile;
    w.key_file = std::move(path);
    return w;
  }
};

// Writes a fresh 32-byte random wrapping key file (0600); refuses to overwrite.
Status GenerateWrappingKeyFile(const std::filesystem::path& path);

// Writes `key` encrypted to `path` (0600, atomically); refuses to overwrite an existing file.
Status SaveEncryptedKey(const packages::PrivateKey& key, const std::filesystem::path& path,
                        const KeyWrapping& wrapping);

// Loads and decrypts a key file. kVerification "wrong passphrase"/"wrong key file" for a wrong
// secret, kVerification "corrupted" for an altered file, kParse for one that is not a key file.
Expected<packages::PrivateKey> LoadEncryptedKey(const std::filesystem::path& path, const KeyWrapping& wrapping);

// The public key of an encrypted key file, without decrypting it.
Expected<packages::PublicKey> ReadEncryptedKeyPublic(const std::filesystem::path& path);

// Account passwords: libsodium's Argon2id string form ("$argon2id$v=19$m=...,t=...,p=1$...").
constexpr std::size_t kMaxPasswordBytes = 4096;
Expected<std::string> HashPassword(std::string_view password, KdfParams params = KdfParams::Interactive());
// kVerification when the password does not match, kParse when `hash` is not an Argon2id string.
Status VerifyPassword(std::string_view hash, std::string_view password);
// True when `hash` was made with other parameters than `params` (rehash at the next login).
bool PasswordNeedsRehash(std::string_view hash, KdfParams params = KdfParams::Interactive());

}  // namespace upkeep::trust
