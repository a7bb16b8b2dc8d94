// The keyserver's state directory: its five online keys (snapshot, timestamp, director, licence,
// content), encrypted at rest with trust::SaveEncryptedKey, the retired keys kept after a
// rotation, and the SHA-256 hashes of its two bearer tokens (updater, admin).
//
// The `content` key signs nothing: it is an ed25519 key used in its X25519 form
// (trust::ApplianceIdentity::FromSeed) so the operator can seal each release's content key to the
// keyserver, which re-seals it to each appliance when it signs that appliance's assignment. The
// updater, facing the internet, only ever handles sealed content keys.
//
// Layout (DIR is 0700, every file 0600, written atomically):
//   DIR/state.json        {"_type": "upkeep-keyserver-state", "format": 1,
//                          "roles": {ROLE: {"current": "ROLE-N.key", "retired": ["ROLE-M.key", ...]}},
//                          "tokens": {"updater": {"sha256": HEX}, "admin": {"sha256": HEX}}}
//   DIR/keys/ROLE-N.key   encrypted key files (docs/trust.md, "Keys at rest")
//   DIR/updater.token, DIR/admin.token   the plaintext tokens, written once by InitState for the
//                          operator to hand out; the keyserver itself only reads state.json.
// The root and targets keys never come here. Private keys are only ever in memory (wiped by
// PrivateKey's and ApplianceIdentity's destructors); nothing here logs or returns a secret except
// InitState writing the token files. Tokens are 256 random bits, so a SHA-256 hash is enough to
// make a stolen state.json useless (Argon2id would cost ~0.1 s per authenticated request for no
// gain).
//
// Thread safety: a loaded KeySet is immutable and safe to share between threads. InitState and
// RotateKey change the directory and must not run concurrently with each other.
#pragma once

#include <array>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/trust/key_store.hpp"

namespace upkeep::keyserver {

enum class Role { kSnapshot, kTimestamp, kDirector, kLicence, kContent };
inline constexpr std::array<Role, 5> kAllRoles = {Role::kSnapshot, Role::kTimestamp, Role::kDirector,
                                                  Role::kLicence, Role::kContent};
std::string_view RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);

// Who a bearer token belongs to.
enum class Actor { kUpdater, kAdmin };
std::string_view ActorName(Actor actor);

// Creates DIR (0700) with five fresh keys and two fresh tokens. Refuses (kPolicy) when DIR
// already holds anything. Returns what the operator needs: the public keys and key ids per role
// (plus "x25519_public" for content) and the paths of the token files (never the tokens).
Expected<Json> InitState(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping);

// The unlocked state: private keys of the current generation, public keys of the retired ones
// (and, for the content role only, their private X25519 forms too: a content key sealed before
// a rotation must still open), and the token hashes. Move-only.
class KeySet {
 public:
  // Decrypts every current key. A wrong passphrase or wrapping key file is kVerification
  // ("wrong passphrase"); a missing or malformed state is kNotFound / kParse.
  static Expected<KeySet> Load(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping);

  const packages::PrivateKey& signer(Role role) const { return roles_.at(role).current; }
  const std::vector<packages::PublicKey>& retired(Role role) const { return roles_.at(role).retired; }
  // The current content key in X25519 form: opens content keys sealed to it.
  const trust::ApplianceIdentity& content_opener() const { return content_.front(); }
  // Opens a content key sealed to the current content key or, failing that, to a retired one
  // (newest first). kVerification when none opens it; kParse when it is not a sealed key.
  Expected<trust::ContentKey> OpenContentKey(std::string_view sealed_base64) const;
  // {"roles": {ROLE: {"keyid", "public_key", "retired": [{"keyid", "public_key"}]}}}; the content
  // role's entry and its retired entries also carry "x25519_public" (64 hex).
  Json PublicJson() const;
  // The actor whose token this is, compared in constant time; nullopt for an unknown token.
  std::optional<Actor> Authenticate(std::string_view token) const;

 private:
  struct RoleKeys {
    packages::PrivateKey current;
    std::vector<packages::PublicKey> retired;
  };
  std::map<Role, RoleKeys> roles_;
  // Content role in X25519 form: [0] is current, then retired in state.json order (oldest first).
  std::vector<trust::ApplianceIdentity> content_;
  std::map<Actor, std::string> token_sha256_;  // hex
};

// Generates a new key for `role`, after proving the wrapping secret opens the current one. The
// old key is kept (retired) so earlier signatures still verify. A running keyserver picks the
// new key up at its next start. Returns {"role", "keyid", "public_key", "retired": [keyid...]}.
Expected<Json> RotateKey(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping, Role role);

}  // namespace upkeep::keyserver
