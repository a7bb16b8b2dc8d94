// Content keys and sealing them to appliances.
//
// Every release payload is encrypted once with a random 32-byte content key (payload.hpp), so
// the encrypted blob is the same for every appliance and any CDN or proxy can cache it. The
// content key then travels inside each entitled appliance's assignment, sealed to that
// appliance's X25519 key with crypto_box_seal (ephemeral sender key, 80 bytes: 32-byte ephemeral
// public key, 32-byte ciphertext, 16-byte tag), written as base64 (108 characters). Only the
// holder of the appliance's identity can open it; a key sealed to appliance A can't be opened
// by B, and anyone can seal (sealing proves nothing about the sender: the assignment signature
// does that).
//
// A ContentKey wipes itself; it is move-only and never printed. Functions are thread-safe.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/trust/secret.hpp"

namespace upkeep::trust {

class ContentKey {
 public:
  static constexpr std::size_t kBytes = 32;

  // A fresh key from the system CSPRNG.
  static ContentKey Generate();
  // Exactly kBytes bytes; anything else is refused.
  static Expected<ContentKey> FromBytes(std::span<const std::uint8_t> bytes);

  std::span<const std::uint8_t> bytes() const { return key_.span(); }
  const std::uint8_t* data() const { return key_.data(); }

 private:
  explicit ContentKey(SecretBytes key) : key_(std::move(key)) {}
  SecretBytes key_;
};

// Seals `key` to one appliance; returns the base64 text that goes into its assignment.
std::string SealContentKey(const ContentKey& key, const AppliancePublicKey& appliance);
// The same wire format, to any X25519 public key: the operator's CLI seals each release's content
// key to the keyserver's `content` key with this, so the updater never holds a plaintext key.
// Returns "" when libsodium refuses the recipient (a small-order point): never a key in clear.
std::string SealContentKeyTo(const ContentKey& key, const X25519PublicKey& recipient);

// Opens a sealed content key with this appliance's identity. A key sealed to another appliance,
// or altered on the way, is a kVerification error; malformed text is kParse.
Expected<ContentKey> OpenContentKey(std::string_view sealed_base64, const ApplianceIdentity& identity);
// The same with a bare X25519 key pair (`x25519_secret` must be 32 bytes, else kInvalidArgument);
// the keyserver opens keys sealed to its `content` key with this. Errors name no key material.
Expected<ContentKey> OpenContentKeyWith(std::string_view sealed_base64, const X25519PublicKey& pub,
                                        std::span<const std::uint8_t> x25519_secret);

}  // namespace upkeep::trust
