// Signing keys in TUF's JSON form, shared by package signatures and TUF metadata.
//
// A PublicKey is {"keytype", "scheme", "keyval": {"public"}}; its key id is the SHA-256 of its
// canonical JSON, as the TUF specification computes it. Upkeep signs with ed25519 (libsodium);
// verification also accepts ecdsa-sha2-nistp256 and rsassa-pss-sha256 keys (PEM public keys,
// through OpenSSL), because real-world TUF repositories use them.
// Private keys never leave the operator's machine in this part; key files are written 0600.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::packages {

class PublicKey {
 public:
  static Expected<PublicKey> FromJson(const Json& json);
  Json ToJson() const;

  const std::string& keytype() const { return keytype_; }
  const std::string& scheme() const { return scheme_; }
  const std::string& public_value() const { return public_; }
  // SHA-256 hex of the canonical JSON of ToJson().
  const std::string& keyid() const { return keyid_; }

  // True only when `signature` is a valid signature of `message` under this key and scheme.
  bool Verify(std::string_view message, std::span<const std::uint8_t> signature) const;

 private:
  std::string keytype_, scheme_, public_, keyid_;
};

class PrivateKey {
 public:
  PrivateKey() = default;
  PrivateKey(const PrivateKey&) = default;
  PrivateKey(PrivateKey&&) = default;
  PrivateKey& operator=(const PrivateKey&) = default;
  PrivateKey& operator=(PrivateKey&&) = default;
  ~PrivateKey();  // wipes the secret

  // A fresh ed25519 key pair from the system's CSPRNG.
  static PrivateKey GenerateEd25519();
  static Expected<PrivateKey> FromJson(const Json& json);
  static Expected<PrivateKey> Load(const std::filesystem::path& path);
  // Writes the private key file (0600, atomically); refuses to overwrite an existing file.
  Status Save(const std::filesystem::path& path) const;
  Json ToJson() const;

  const PublicKey& public_key() const { return public_key_; }
  const std::string& keyid() const { return public_key_.keyid(); }
  Bytes Sign(std::string_view message) const;
  // The 32-byte ed25519 seed (for deriving the X25519 form); callers wipe their copy.
  Bytes Seed() const;

 private:
  PublicKey public_key_;
  Bytes secret_;  // libsodium's 64-byte ed25519 secret key (seed || public)
};

Expected<PublicKey> LoadPublicKey(const std::filesystem::path& path);

}  // namespace upkeep::packages
