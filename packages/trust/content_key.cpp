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
  internal::EnsureSodium();
  Bytes sealed(crypto_box_SEALBYTES + ContentKey::kBytes);
  // Cannot fail for a valid X25519 public key, which AppliancePublicKey guarantees.
  crypto_box_seal(sealed.data(), key.data(), ContentKey::kBytes, appliance.x25519().data());
  return internal::Base64Encode(sealed);
}

Expected<ContentKey> OpenContentKey(std::string_view sealed_base64, const ApplianceIdentity& identity) {
  internal::EnsureSodium();
  constexpr std::size_t kSealedBytes = crypto_box_SEALBYTES + ContentKey::kBytes;
  auto sealed = internal::Base64Decode(sealed_base64, kSealedBytes);
  if (!sealed) return sealed.error().Wrap("sealed content key");
  if (sealed->size() != kSealedBytes) {
    return Error(Errc::kParse, "sealed content key is " + std::to_string(sealed->size()) + " bytes, not " +
                                   std::to_string(kSealedBytes));
  }
  SecretBytes key(ContentKey::kBytes);
  if (crypto_box_seal_open(key.data(), sealed->data(), sealed->size(), identity.public_key().x25519().data(),
                           identity.x25519_secret().data()) != 0) {
    return Error(Errc::kVerification, "sealed content key cannot be opened by appliance " + identity.appliance_id() +
                                          " (sealed to another appliance, or altered)");
  }
  return ContentKey::FromBytes(key.span());
}

}  // namespace upkeep::trust
