#include "upkeep/relay/client_store.hpp"

#include <sodium.h>

#include <algorithm>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::relay {
namespace {

constexpr std::string_view kPrefix = "b2k1$";
constexpr std::size_t kSaltBytes = 16;
constexpr std::size_t kDigestBytes = 32;
constexpr std::uint64_t kMaxStoreFile = 64ull * 1024 * 1024;

bool Digest(std::string_view secret, const std::uint8_t* salt, std::uint8_t* out) {
  return crypto_generichash(out, kDigestBytes, reinterpret_cast<const unsigned char*>(secret.data()), secret.size(),
                            salt, kSaltBytes) == 0;
}

bool WellFormedHash(std::string_view stored) {
  if (stored.substr(0, kPrefix.size()) != kPrefix) return false;
  auto rest = stored.substr(kPrefix.size());
  auto dollar = rest.find('$');
  if (dollar == std::string_view::npos) return false;
  return IsLowerHex(rest.substr(0, dollar), kSaltBytes * 2) && IsLowerHex(rest.substr(dollar + 1), kDigestBytes * 2);
}

}  // namespace

bool IsValidId(std::string_view id) {
  if (id.empty() || id.size() > kMaxIdBytes) return false;
  return std::all_of(id.begin(), id.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
           c == ':' || c == '-';
  });
}

Expected<std::string> HashSecret(std::string_view secret, Random& random) {
  if (secret.size() < kMinSecretBytes) {
    return Error(Errc::kInvalidArgument, "secret: shorter than " + std::to_string(kMinSecretBytes) + " bytes");
  }
  if (secret.size() > kMaxSecretBytes) {
    return Error(Errc::kInvalidArgument, "secret: longer than " + std::to_string(kMaxSecretBytes) + " bytes");
  }
  if (sodium_init() < 0) return Error(Errc::kInternal, "libsodium: initialisation failed");
  Bytes salt = random.Generate(kSaltBytes);
  if (salt.size() != kSaltBytes) return Error(Errc::kInternal, "random: short salt");
  std::uint8_t digest[kDigestBytes];
  if (!Digest(secret, salt.data(), digest)) return Error(Errc::kInternal, "BLAKE2b failed");
  return std::string(kPrefix) + ToHex(salt) + "$" + ToHex(std::span<const std::uint8_t>(digest, kDigestBytes));
}

bool VerifySecret(std::string_view secret, std::string_view stored) {
  if (!WellFormedHash(stored) || secret.size() > kMaxSecretBytes) return false;
  auto rest = stored.substr(kPrefix.size());
  auto dollar = rest.find('$');
  auto salt = FromHex(rest.substr(0, dollar));
  auto expected = FromHex(rest.substr(dollar + 1));
  if (!salt.ok() || !expected.ok()) return false;
  std::uint8_t digest[kDigestBytes];
  if (!Digest(secret, salt->data(), digest)) return false;
  return sodium_memcmp(digest, expected->data(), kDigestBytes) == 0;
}

Status MemoryClientStore::PutClient(ClientRecord record) {
  if (!IsValidId(record.id)) return Error(Errc::kInvalidArgument, "client id '" + record.id.substr(0, 64) + "' is not valid");
  if (!WellFormedHash(record.secret_hash)) {
    return Error(Errc::kInvalidArgument, "client '" + record.id + "': secret_hash is not in the b2k1$ form");
  }
  std::lock_guard lock(mu_);
  std::string id = record.id;
  clients_[id] = std::move(record);
  return OkStatus();
}

Status MemoryClientStore::PutTechnician(TechnicianRecord record) {
  if (!IsValidId(record.id)) return Error(Errc::kInvalidArgument, "technician id '" + record.id.substr(0, 64) + "' is not valid");
  if (!WellFormedHash(record.token_hash)) {
    return Error(Errc::kInvalidArgument, "technician '" + record.id + "': token_hash is not in the b2k1$ form");
  }
  std::lock_guard lock(mu_);
  auto it = std::find_if(technicians_.begin(), technicians_.end(), [&](const auto& t) { return t.id == record.id; });
  if (it != technicians_.end()) {
    *it = std::move(record);
  } else {
    technicians_.push_back(std::move(record));
  }
  return OkStatus();
}

std::optional<ClientRecord> MemoryClientStore::FindClient(std::string_view id) const {
  std::lock_guard lock(mu_);
  auto it = clients_.find(std::string(id));
  if (it == clients_.end()) return std::nullopt;
  return it->second;
}

Status MemoryClientStore::RecordCheckIn(std::string_view id, const std::string& version, const std::string& platform,
                                        const std::string& mode, SysTime when) {
  std::lock_guard lock(mu_);
  auto it = clients_.find(std::string(id));
  if (it == clients_.end()) return Error(Errc::kNotFound, "client '" + std::string(id) + "' is not known");
  it->second.version = version;
  it->second.platform = platform;
  it->second.mode = mode;
  it->second.last_checkin = when;
  return OkStatus();
}

std::vector<ClientRecord> MemoryClientStore::ListClients() const {
  std::lock_guard lock(mu_);
  std::vector<ClientRecord> out;
  out.reserve(clients_.size());
  for (const auto& [id, record] : clients_) out.push_back(record);
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.id < b.id; });
  return out;
}

std::optional<std::string> MemoryClientStore::FindTechnicianByToken(std::string_view token) const {
  std::lock_guard lock(mu_);
  std::optional<std::string> found;
  // Every entry is checked so the time taken does not tell which one matched.
  for (const auto& t : technicians_) {
    if (VerifySecret(token, t.token_hash) && !found) found = t.id;
  }
  return found;
}

Expected<std::unique_ptr<JsonFileClientStore>> JsonFileClientStore::Open(const std::filesystem::path& path) {
  const std::string name = path.string();
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, kMaxStoreFile));
  auto parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.error().Wrap(name);
  const Json& doc = *parsed;
  if (!doc.is_object()) return Error(Errc::kParse, name + ": not a JSON object");
  std::unique_ptr<JsonFileClientStore> store(new JsonFileClientStore(path));
  auto optional_string = [&](const Json& obj, const char* key, std::string& out) -> Status {
    if (!obj.contains(key)) return OkStatus();
    UPK_TRY_ASSIGN(out, GetString(obj, key));
    if (out.size() > 256) return Error(Errc::kLimit, std::string("field '") + key + "' is over 256 bytes");
    return OkStatus();
  };
  if (doc.contains("clients")) {
    auto arr = GetArray(doc, "clients");
    if (!arr.ok()) return arr.error().Wrap(name);
    std::size_t index = 0;
    for (const Json& entry : **arr) {
      std::string where = name + ": clients[" + std::to_string(index++) + "]";
      if (!entry.is_object()) return Error(Errc::kParse, where + ": not an object");
      ClientRecord record;
      auto id = GetString(entry, "id");
      if (!id.ok()) return id.error().Wrap(where);
      record.id = *id;
      auto hash = GetString(entry, "secret_hash");
      if (!hash.ok()) return hash.error().Wrap(where);
      record.secret_hash = *hash;
      for (auto [key, field] : {std::pair{"version", &record.version}, std::pair{"platform", &record.platform},
                                std::pair{"mode", &record.mode}}) {
        if (auto st = optional_string(entry, key, *field); !st.ok()) return st.error().Wrap(where);
      }
      if (entry.contains("last_checkin")) {
        std::string text_time;
        if (auto st = optional_string(entry, "last_checkin", text_time); !st.ok()) return st.error().Wrap(where);
        auto t = ParseTimestamp(text_time);
        if (!t.ok()) return t.error().Wrap(where + ": field 'last_checkin'");
        record.last_checkin = *t;
      }
      if (store->clients_.count(record.id)) return Error(Errc::kParse, where + ": duplicate id '" + record.id + "'");
      if (auto st = store->PutClient(std::move(record)); !st.ok()) return st.error().Wrap(where);
    }
  }
  if (doc.contains("technicians")) {
    auto arr = GetArray(doc, "technicians");
    if (!arr.ok()) return arr.error().Wrap(name);
    std::size_t index = 0;
    for (const Json& entry : **arr) {
      std::string where = name + ": technicians[" + std::to_string(index++) + "]";
      if (!entry.is_object()) return Error(Errc::kParse, where + ": not an object");
      TechnicianRecord record;
      auto id = GetString(entry, "id");
      if (!id.ok()) return id.error().Wrap(where);
      record.id = *id;
      auto hash = GetString(entry, "token_hash");
      if (!hash.ok()) return hash.error().Wrap(where);
      record.token_hash = *hash;
      if (auto st = store->PutTechnician(std::move(record)); !st.ok()) return st.error().Wrap(where);
    }
  }
  return store;
}

Status JsonFileClientStore::Save() const {
  std::string text;
  try {
    Json doc = Json::object();
    doc["clients"] = Json::array();
    doc["technicians"] = Json::array();
    for (const auto& c : ListClients()) {
      Json e = {{"id", c.id}, {"secret_hash", c.secret_hash}};
      if (!c.version.empty()) e["version"] = c.version;
      if (!c.platform.empty()) e["platform"] = c.platform;
      if (!c.mode.empty()) e["mode"] = c.mode;
      if (c.last_checkin) e["last_checkin"] = FormatTimestamp(*c.last_checkin);
      doc["clients"].push_back(std::move(e));
    }
    {
      std::lock_guard lock(mu_);
      for (const auto& t : technicians_) doc["technicians"].push_back({{"id", t.id}, {"token_hash", t.token_hash}});
    }
    text = doc.dump(1) + "\n";
  } catch (const std::exception& e) {
    return Error(Errc::kInternal, path_.string() + ": " + e.what());
  }
  return WriteFileAtomic(path_, text, 0600);
}

}  // namespace upkeep::relay
