#include "upkeep/keyserver/state.hpp"

#include <sodium.h>
#include <sys/stat.h>

#include <system_error>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::keyserver {
namespace fs = std::filesystem;

namespace {

constexpr const char* kStateType = "upkeep-keyserver-state";
constexpr std::uint64_t kMaxStateBytes = 256 * 1024;

fs::path StatePath(const fs::path& dir) { return dir / "state.json"; }

Status MakePrivateDir(const fs::path& path) {
  if (::mkdir(path.c_str(), 0700) != 0) {
    return Error(Errc::kIo, "cannot create " + path.string() + ": " + std::error_code(errno, std::generic_category()).message());
  }
  if (::chmod(path.c_str(), 0700) != 0) return Error(Errc::kIo, "cannot chmod " + path.string());
  return OkStatus();
}

// Key file names come from state.json: only "ROLE-N.key", so a tampered state can't point elsewhere.
bool IsKeyFileName(const std::string& name) {
  constexpr std::string_view kSuffix = ".key";
  for (Role role : kAllRoles) {
    const std::string prefix = std::string(RoleName(role)) + "-";
    if (name.size() <= prefix.size() + kSuffix.size() || name.compare(0, prefix.size(), prefix) != 0 ||
        name.compare(name.size() - kSuffix.size(), kSuffix.size(), kSuffix) != 0) {
      continue;
    }
    const std::string digits = name.substr(prefix.size(), name.size() - prefix.size() - kSuffix.size());
    if (digits.size() > 6) return false;
    for (char c : digits) {
      if (c < '0' || c > '9') return false;
    }
    return true;
  }
  return false;
}

std::string NewToken(std::string_view prefix) {
  Bytes raw = SystemRandom::Instance().Generate(32);
  std::string token = std::string(prefix) + ToHex(raw);
  sodium_memzero(raw.data(), raw.size());
  return token;
}

Expected<Json> ReadState(const fs::path& dir) {
  std::error_code ec;
  if (!fs::exists(StatePath(dir), ec)) {
    return Error(Errc::kNotFound, "no keyserver state in " + dir.string() + " (run 'keyserver init' first)");
  }
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(StatePath(dir), kMaxStateBytes));
  auto json = ParseJson(text);
  if (!json.ok()) return json.error().Wrap(StatePath(dir).string());
  const Json& s = *json;
  if (!s.is_object() || s.value("_type", "") != kStateType || s.value("format", 0) != 1) {
    return Error(Errc::kParse, StatePath(dir).string() + ": not a keyserver state file (format 1)");
  }
  auto roles = GetObject(s, "roles");
  if (!roles.ok()) return roles.error().Wrap(StatePath(dir).string());
  for (Role role : kAllRoles) {
    const std::string name(RoleName(role));
    auto entry = GetObject(**roles, name.c_str());
    if (!entry.ok()) return entry.error().Wrap(StatePath(dir).string() + ": roles");
    auto current = GetString(**entry, "current");
    auto retired = GetArray(**entry, "retired");
    if (!current.ok() || !retired.ok() || !IsKeyFileName(*current)) {
      return Error(Errc::kParse, StatePath(dir).string() + ": roles." + name + " is malformed");
    }
    for (const Json& r : **retired) {
      if (!r.is_string() || !IsKeyFileName(r.get<std::string>())) {
        return Error(Errc::kParse, StatePath(dir).string() + ": roles." + name + ".retired is malformed");
      }
    }
  }
  auto tokens = GetObject(s, "tokens");
  if (!tokens.ok()) return tokens.error().Wrap(StatePath(dir).string());
  for (const char* actor : {"updater", "admin"}) {
    auto entry = GetObject(**tokens, actor);
    if (!entry.ok()) return entry.error().Wrap(StatePath(dir).string() + ": tokens");
    auto hash = GetString(**entry, "sha256");
    if (!hash.ok() || hash->size() != 64 || !FromHex(*hash).ok()) {
      return Error(Errc::kParse, StatePath(dir).string() + ": tokens." + actor + ".sha256 is malformed");
    }
  }
  return s;
}

Status WriteState(const fs::path& dir, const Json& state) {
  return WriteFileAtomic(StatePath(dir), state.dump(2) + "\n", 0600);
}

Json KeyJson(const packages::PublicKey& key) { return Json{{"keyid", key.keyid()}, {"public_key", key.ToJson()}}; }

// The X25519 form of a content-role key. The seed copy is wiped whatever happens.
Expected<trust::ApplianceIdentity> ContentForm(const packages::PrivateKey& key) {
  Bytes seed = key.Seed();
  auto identity = trust::ApplianceIdentity::FromSeed(seed);
  sodium_memzero(seed.data(), seed.size());
  if (!identity.ok()) return identity.error().Wrap("content key");
  return identity;
}

std::string X25519Hex(const trust::ApplianceIdentity& identity) { return ToHex(identity.public_key().x25519()); }

}  // namespace

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kSnapshot: return "snapshot";
    case Role::kTimestamp: return "timestamp";
    case Role::kDirector: return "director";
    case Role::kLicence: return "licence";
    case Role::kContent: return "content";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (Role role : kAllRoles) {
    if (RoleName(role) == name) return role;
  }
  return std::nullopt;
}

std::string_view ActorName(Actor actor) { return actor == Actor::kAdmin ? "admin" : "updater"; }

Expected<Json> InitState(const fs::path& dir, const trust::KeyWrapping& wrapping) {
  std::error_code ec;
  if (fs::exists(dir, ec)) {
    if (!fs::is_directory(dir, ec)) return Error(Errc::kPolicy, dir.string() + " exists and is not a directory");
    if (!fs::is_empty(dir, ec)) {
      return Error(Errc::kPolicy, dir.string() + " is not empty: refusing to overwrite an existing keyserver state");
    }
    if (::chmod(dir.c_str(), 0700) != 0) return Error(Errc::kIo, "cannot chmod " + dir.string());
  } else {
    UPK_TRY(MakePrivateDir(dir));
  }
  UPK_TRY(MakePrivateDir(dir / "keys"));

  Json roles = Json::object();
  Json keys_out = Json::object();
  for (Role role : kAllRoles) {
    const std::string file = std::string(RoleName(role)) + "-1.key";
    packages::PrivateKey key = packages::PrivateKey::GenerateEd25519();
    UPK_TRY(trust::SaveEncryptedKey(key, dir / "keys" / file, wrapping));
    roles[std::string(RoleName(role))] = Json{{"current", file}, {"retired", Json::array()}};
    keys_out[std::string(RoleName(role))] = KeyJson(key.public_key());
    if (role == Role::kContent) {
      UPK_TRY_ASSIGN(trust::ApplianceIdentity content, ContentForm(key));
      keys_out[std::string(RoleName(role))]["x25519_public"] = X25519Hex(content);
    }
  }

  Json tokens = Json::object();
  Json token_files = Json::object();
  for (Actor actor : {Actor::kUpdater, Actor::kAdmin}) {
    const std::string name(ActorName(actor));
    std::string token = NewToken(actor == Actor::kAdmin ? "ksa_" : "ksu_");
    const fs::path file = dir / (name + ".token");
    Status written = WriteFileAtomic(file, token + "\n", 0600);
    tokens[name] = Json{{"sha256", Sha256Hex(token)}};
    sodium_memzero(token.data(), token.size());
    UPK_TRY(written);
    token_files[name] = file.string();
  }

  // state.json last: it is what makes the directory a state, so a failed init leaves none.
  Json state = {{"_type", kStateType}, {"format", 1}, {"roles", roles}, {"tokens", tokens}};
  UPK_TRY(WriteState(dir, state));
  return Json{{"state", dir.string()}, {"keys", keys_out}, {"token_files", token_files}};
}

Expected<KeySet> KeySet::Load(const fs::path& dir, const trust::KeyWrapping& wrapping) {
  UPK_TRY_ASSIGN(Json state, ReadState(dir));
  KeySet set;
  for (Role role : kAllRoles) {
    const Json& entry = state["roles"][std::string(RoleName(role))];
    RoleKeys keys;
    const fs::path current = dir / "keys" / entry["current"].get<std::string>();
    auto key = trust::LoadEncryptedKey(current, wrapping);
    if (!key.ok()) return key.error().Wrap(current.string());
    keys.current = std::move(key).value();
    if (role == Role::kContent) {
      auto form = ContentForm(keys.current);
      if (!form.ok()) return form.error().Wrap(current.string());
      set.content_.push_back(std::move(form).value());
    }
    for (const Json& r : entry["retired"]) {
      const fs::path path = dir / "keys" / r.get<std::string>();
      if (role == Role::kContent) {
        // Retired content keys stay private: keys sealed to them (releases published before the
        // rotation) must still be re-sealed to appliances.
        auto old = trust::LoadEncryptedKey(path, wrapping);
        if (!old.ok()) return old.error().Wrap(path.string());
        auto form = ContentForm(*old);
        if (!form.ok()) return form.error().Wrap(path.string());
        keys.retired.push_back(old->public_key());
        set.content_.push_back(std::move(form).value());
        continue;
      }
      auto pub = trust::ReadEncryptedKeyPublic(path);
      if (!pub.ok()) return pub.error().Wrap(path.string());
      keys.retired.push_back(std::move(pub).value());
    }
    set.roles_.emplace(role, std::move(keys));
  }
  set.token_sha256_[Actor::kUpdater] = state["tokens"]["updater"]["sha256"].get<std::string>();
  set.token_sha256_[Actor::kAdmin] = state["tokens"]["admin"]["sha256"].get<std::string>();
  return set;
}

Json KeySet::PublicJson() const {
  Json roles = Json::object();
  for (const auto& [role, keys] : roles_) {
    Json entry = KeyJson(keys.current.public_key());
    Json retired = Json::array();
    for (std::size_t i = 0; i < keys.retired.size(); ++i) {
      retired.push_back(KeyJson(keys.retired[i]));
      // content_ holds the current key, then the retired ones in the same order as keys.retired.
      if (role == Role::kContent) retired.back()["x25519_public"] = X25519Hex(content_.at(i + 1));
    }
    entry["retired"] = retired;
    if (role == Role::kContent) entry["x25519_public"] = X25519Hex(content_.front());
    roles[std::string(RoleName(role))] = entry;
  }
  return Json{{"roles", roles}};
}

Expected<trust::ContentKey> KeySet::OpenContentKey(std::string_view sealed_base64) const {
  // Current first (the common case), then retired newest first.
  auto opened = trust::OpenContentKeyWith(sealed_base64, content_.front().public_key().x25519(),
                                          content_.front().x25519_secret());
  for (std::size_t i = content_.size() - 1; !opened.ok() && opened.error().code() == Errc::kVerification && i >= 1;
       --i) {
    opened = trust::OpenContentKeyWith(sealed_base64, content_[i].public_key().x25519(), content_[i].x25519_secret());
  }
  if (!opened.ok() && opened.error().code() == Errc::kVerification) {
    return Error(Errc::kVerification, "sealed content key is not sealed to this keyserver's content key (current or "
                                      "retired), or was altered");
  }
  return opened;
}

std::optional<Actor> KeySet::Authenticate(std::string_view token) const {
  if (token.empty()) return std::nullopt;
  const Bytes digest = Sha256(token);
  std::optional<Actor> found;
  for (const auto& [actor, hex] : token_sha256_) {
    auto expected = FromHex(hex);
    if (!expected.ok() || expected->size() != digest.size()) continue;
    // Constant time, and both compared every time, so timing says nothing about either token.
    if (sodium_memcmp(expected->data(), digest.data(), digest.size()) == 0) found = actor;
  }
  return found;
}

Expected<Json> RotateKey(const fs::path& dir, const trust::KeyWrapping& wrapping, Role role) {
  UPK_TRY_ASSIGN(Json state, ReadState(dir));
  const std::string name(RoleName(role));
  Json& entry = state["roles"][name];
  const std::string current_file = entry["current"].get<std::string>();
  // Proves the operator holds the wrapping secret of this state before adding a key under it.
  auto current = trust::LoadEncryptedKey(dir / "keys" / current_file, wrapping);
  if (!current.ok()) return current.error().Wrap((dir / "keys" / current_file).string());

  std::string new_file;
  for (int n = 2; n < 1000000; ++n) {
    std::string candidate = name + "-" + std::to_string(n) + ".key";
    std::error_code ec;
    if (!fs::exists(dir / "keys" / candidate, ec)) {
      new_file = candidate;
      break;
    }
  }
  if (new_file.empty()) return Error(Errc::kLimit, "too many key generations for role " + name);
  packages::PrivateKey key = packages::PrivateKey::GenerateEd25519();
  UPK_TRY(trust::SaveEncryptedKey(key, dir / "keys" / new_file, wrapping));

  entry["retired"].push_back(current_file);
  entry["current"] = new_file;
  UPK_TRY(WriteState(dir, state));

  Json retired = Json::array();
  for (const Json& r : entry["retired"]) {
    auto pub = trust::ReadEncryptedKeyPublic(dir / "keys" / r.get<std::string>());
    if (pub.ok()) retired.push_back(pub->keyid());
  }
  Json out = {{"role", name}, {"keyid", key.keyid()}, {"public_key", key.public_key().ToJson()}, {"retired", retired}};
  if (role == Role::kContent) {
    UPK_TRY_ASSIGN(trust::ApplianceIdentity content, ContentForm(key));
    out["x25519_public"] = X25519Hex(content);
  }
  return out;
}

}  // namespace upkeep::keyserver
