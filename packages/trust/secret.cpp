#include "upkeep/trust/secret.hpp"

#include <sodium.h>

namespace upkeep::trust {

void SecretBytes::Wipe() {
  if (!bytes_.empty()) sodium_memzero(bytes_.data(), bytes_.size());
  bytes_.clear();
}

}  // namespace upkeep::trust
