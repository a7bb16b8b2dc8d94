#include "upkeep/trust/content_key.hpp"

#include <sodium.h>

#include "encoding.hpp"

namespace upkeep::trust {

static_assert(ContentKey::kBytes == crypto_secretstream_xchacha20poly1305_KEYBYTES);

ContentKey ContentKey::Generate() {
  internal::EnsureSodium();
  SecretBytes key(kBytes);
  crypto_secretstream_xchacha20poly1305_keygen(key.data());
  return ContentKey(std::move(key));
}

Expected<ContentKey> ContentKey::FromBytes(std::span<const std::uint8_t> bytes) {
  if (bytes.size() != kBytes) {
    return Error(Errc::kInvalidArgument, "content key is " + std::to_string(bytes.size()) + " bytes, not 32");
  }
  return ContentKey(SecretBytes(bytes));
}

std::string SealContentKey(const ContentKey& key, const AppliancePublicKey& appliance) {
  return SealContentKeyTo(key, appliance.x25519());
}

std::string SealContentKeyTo(const ContentKey& key, const X25519PublicKey& recipient) {
  internal::EnsureSodium();
  Bytes sealed(crypto_box_SEALBYTES + ContentKey::kBytes);
  // Fails only for a small-order recipient key; AppliancePublicKey refuses those, and for any
  // other caller an all-zero output would silently lose the key, so it must not be ignored.
  if (crypto_box_seal(sealed.data(), key.data(), ContentKey::kBytes, recipient.data()) != 0) {
    return std::string();
  }
  return internal::Base64Encode(sealed);
}

Expected<ContentKey> OpenContentKey(std::string_view sealed_base64, const ApplianceIdentity& identity) {
  auto key = OpenContentKeyWith(sealed_base64, identity.public_key().x25519(), identity.x25519_secret());
  if (!key.ok() && key.error().code() == Errc::kVerification) {
    return Error(Errc::kVerification, "sealed content key cannot be opened by appliance " + identity.appliance_id() +
                                          " (sealed to another appliance, or altered)");
  }
  return key;
}

Expected<ContentKey> OpenContentKeyWith(std::string_view sealed_base64, const X25519PublicKey& pub,
                                        std::span<const std::uint8_t> x25519_secret) {
  internal::EnsureSodium();
  if (x25519_secret.size() != kX25519KeyBytes) {
    return Error(Errc::kInvalidArgument, "X25519 secret key is " + std::to_string(x25519_secret.size()) +
                                             " bytes, not " + std::to_string(kX25519KeyBytes));
  }
  constexpr std::size_t kSealedBytes = crypto_box_SEALBYTES + ContentKey::kBytes;
  auto sealed = internal::Base64Decode(sealed_base64, kSealedBytes);
  if (!sealed) return sealed.error().Wrap("sealed content key");
  if (sealed->size() != kSealedBytes) {
    return Error(Errc::kParse, "sealed content key is " + std::to_string(sealed->size()) + " bytes, not " +
                                   std::to_string(kSealedBytes));
  }
  SecretBytes key(ContentKey::kBytes);
  if (crypto_box_seal_open(key.data(), sealed->data(), sealed->size(), pub.data(), x25519_secret.data()) != 0) {
    return Error(Errc::kVerification, "sealed content key cannot be opened with this key (sealed to another key, "
                                      "or altered)");
  }
  return ContentKey::FromBytes(key.span());
}

}  // namespace upkeep::trust
