// The keyserver's state directory: its four online signing keys (snapshot, timestamp, director,
// licence), encrypted at rest with trust::SaveEncryptedKey, the retired keys kept after a
// rotation, and the SHA-256 hashes of its two bearer tokens (updater, admin).
//
// Layout (DIR is 0700, every file 0600, written atomically):
//   DIR/state.json        {"_type": "upkeep-keyserver-state", "format": 1,
//                          "roles": {ROLE: {"current": "ROLE-N.key", "retired": ["ROLE-M.key", ...]}},
//                          "tokens": {"updater": {"sha256": HEX}, "admin": {"sha256": HEX}}}
//   DIR/keys/ROLE-N.key   encrypted key files (docs/trust.md, "Keys at rest")
//   DIR/updater.token, DIR/admin.token   the plaintext tokens, written once by InitState for the
//                          operator to hand out; the keyserver itself only reads state.json.
// The root and targets keys never come here. Private keys are only ever in memory (wiped by
// PrivateKey's destructor); nothing here logs or returns a secret except InitState writing the
// token files. Tokens are 256 random bits, so a SHA-256 hash is enough to make a stolen
// state.json useless (Argon2id would cost ~0.1 s per authenticated request for no gain).
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
#include "upkeep/trust/key_store.hpp"

namespace upkeep::keyserver {

enum class Role { kSnapshot, kTimestamp, kDirector, kLicence };
inline constexpr std::array<Role, 4> kAllRoles = {Role::kSnapshot, Role::kTimestamp, Role::kDirector,
                                                  Role::kLicence};
std::string_view RoleName(Role role);
std::optional<Role> ParseRole(std::string_view name);

// Who a bearer token belongs to.
enum class Actor { kUpdater, kAdmin };
std::string_view ActorName(Actor actor);

// Creates DIR (0700) with four fresh keys and two fresh tokens. Refuses (kPolicy) when DIR
// already holds anything. Returns what the operator needs: the public keys and key ids per role
// and the paths of the token files (never the tokens themselves).
Expected<Json> InitState(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping);

// The unlocked state: private keys of the current generation, public keys of the retired ones,
// and the token hashes.
class KeySet {
 public:
  // Decrypts every current key. A wrong passphrase or wrapping key file is kVerification
  // ("wrong passphrase"); a missing or malformed state is kNotFound / kParse.
  static Expected<KeySet> Load(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping);

  const packages::PrivateKey& signer(Role role) const { return roles_.at(role).current; }
  const std::vector<packages::PublicKey>& retired(Role role) const { return roles_.at(role).retired; }
  // {"roles": {ROLE: {"keyid", "public_key", "retired": [{"keyid", "public_key"}]}}}
  Json PublicJson() const;
  // The actor whose token this is, compared in constant time; nullopt for an unknown token.
  std::optional<Actor> Authenticate(std::string_view token) const;

 private:
  struct RoleKeys {
    packages::PrivateKey current;
    std::vector<packages::PublicKey> retired;
  };
  std::map<Role, RoleKeys> roles_;
  std::map<Actor, std::string> token_sha256_;  // hex
};

// Generates a new key for `role`, after proving the wrapping secret opens the current one. The
// old key is kept (retired) so earlier signatures still verify. A running keyserver picks the
// new key up at its next start. Returns {"role", "keyid", "public_key", "retired": [keyid...]}.
Expected<Json> RotateKey(const std::filesystem::path& dir, const trust::KeyWrapping& wrapping, Role role);

}  // namespace upkeep::keyserver
