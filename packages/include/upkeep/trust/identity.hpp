// Appliance identities: the ed25519 key pair an appliance generates for itself, its X25519 form
// for sealed content keys, and the appliance id derived from the public key.
//
// Appliance id: "apl-" followed by the first 20 bytes of SHA-256(raw 32-byte ed25519 public key)
// in lower-case RFC 4648 base32 without padding (32 characters), e.g.
// "apl-kzdvvj2umnduyauf35o36k6kw462mujv". Anyone holding the public key can recompute it, so an
// id can't be claimed with someone else's key.
//
// An ApplianceIdentity holds private keys (the signing key and the X25519 secret, wiped on
// destruction); it is move-only and never logs or prints them. Its file is JSON, written 0600
// and atomically, and is refused on load if the id inside does not match the key.
// An AppliancePublicKey is a plain value, safe to copy and share between threads.
#pragma once

#include <array>
#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/secret.hpp"

namespace upkeep::trust {

constexpr std::size_t kX25519KeyBytes = 32;
using X25519PublicKey = std::array<std::uint8_t, kX25519KeyBytes>;

// "apl-" + base32(SHA-256(ed25519 public key)[0..20)).
std::string ApplianceIdFor(std::span<const std::uint8_t> ed25519_public_key);
// True for a well-formed appliance id ("apl-" and 32 base32 characters).
bool IsValidApplianceId(std::string_view id);

// What the keyserver and updater know about an appliance: its signing key and its sealing key.
class AppliancePublicKey {
 public:
  // From a TUF-form ed25519 public key; any other key type is refused.
  static Expected<AppliancePublicKey> FromPublicKey(const packages::PublicKey& key);
  // {"keytype":"ed25519","scheme":"ed25519","keyval":{"public":HEX}} as sent at enrolment.
  static Expected<AppliancePublicKey> FromJson(const Json& json);

  const std::string& appliance_id() const { return appliance_id_; }
  const packages::PublicKey& signing_key() const { return signing_key_; }
  const X25519PublicKey& x25519() const { return x25519_; }

 private:
  packages::PublicKey signing_key_;
  X25519PublicKey x25519_{};
  std::string appliance_id_;
};

class ApplianceIdentity {
 public:
  // A fresh identity from the system CSPRNG.
  static ApplianceIdentity Generate();
  // From a 32-byte ed25519 seed (deterministic; tests and fuzzers use fixed seeds).
  static Expected<ApplianceIdentity> FromSeed(std::span<const std::uint8_t> seed);

  // Identity file: {"_type":"upkeep-appliance-identity","format":1,"appliance_id":ID,
  // "key":{TUF ed25519 private key}}. Save writes it 0600 atomically and refuses to overwrite.
  static Expected<ApplianceIdentity> Load(const std::filesystem::path& path);
  Status Save(const std::filesystem::path& path) const;

  const std::string& appliance_id() const { return public_.appliance_id(); }
  const AppliancePublicKey& public_key() const { return public_; }
  const packages::PrivateKey& signing_key() const { return signing_key_; }
  // The X25519 secret key (crypto_sign_ed25519_sk_to_curve25519), for opening sealed content keys.
  std::span<const std::uint8_t> x25519_secret() const { return x25519_secret_.span(); }

  Bytes Sign(std::string_view message) const { return signing_key_.Sign(message); }

 private:
  ApplianceIdentity(packages::PrivateKey key, AppliancePublicKey pub, SecretBytes x_secret)
      : signing_key_(std::move(key)), public_(std::move(pub)), x25519_secret_(std::move(x_secret)) {}

  packages::PrivateKey signing_key_;
  AppliancePublicKey public_;
  SecretBytes x25519_secret_;
};

}  // namespace upkeep::trust
