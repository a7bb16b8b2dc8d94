// Who may connect to the relay: endpoint clients (id -> salted hash of their secret, plus what
// they last reported at check-in) and technicians (id -> salted hash of their console token).
//
// Secret hashing: "b2k1$<salt hex>$<digest hex>" where digest = BLAKE2b-256 keyed with a random
// 16-byte per-entry salt over the secret. Secrets and tokens are random (at least 16 bytes,
// HashSecret refuses shorter ones), so a slow password hash buys nothing against guessing while
// it would make thousands of reconnects after an outage cost seconds of CPU each; the salt keeps
// equal secrets from having equal hashes. Comparison is constant time (sodium_memcmp).
//
// Threads: every ClientStore method may be called from any thread (implementations lock).
// Errors: JSON files are hostile input (bounded read, every field validated, file named).
#pragma once

#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"

namespace upkeep::relay {

constexpr std::size_t kMinSecretBytes = 16;
constexpr std::size_t kMaxSecretBytes = 1024;
constexpr std::size_t kMaxIdBytes = 128;

// Returns the stored form of a secret. kInvalidArgument when shorter than kMinSecretBytes or
// longer than kMaxSecretBytes.
Expected<std::string> HashSecret(std::string_view secret, Random& random);
// Constant-time check of a secret against a stored form; false for a malformed stored form.
bool VerifySecret(std::string_view secret, std::string_view stored);
// Ids: 1..kMaxIdBytes of [A-Za-z0-9._:-].
bool IsValidId(std::string_view id);

struct ClientRecord {
  std::string id;
  std::string secret_hash;  // HashSecret form
  // Last check-in (empty / nullopt until the first one).
  std::string version;
  std::string platform;
  std::string mode;  // "active" or "passive"
  std::optional<SysTime> last_checkin;
};

struct TechnicianRecord {
  std::string id;
  std::string token_hash;  // HashSecret form
};

class ClientStore {
 public:
  virtual ~ClientStore() = default;
  virtual std::optional<ClientRecord> FindClient(std::string_view id) const = 0;
  // Records a successful check-in. kNotFound for an unknown id.
  virtual Status RecordCheckIn(std::string_view id, const std::string& version, const std::string& platform,
                               const std::string& mode, SysTime when) = 0;
  virtual std::vector<ClientRecord> ListClients() const = 0;
  // The technician whose token matches (every entry is checked, in constant time each), or nullopt.
  virtual std::optional<std::string> FindTechnicianByToken(std::string_view token) const = 0;
};

class MemoryClientStore : public ClientStore {
 public:
  // Adds or replaces. kInvalidArgument for a bad id or a malformed hash.
  Status PutClient(ClientRecord record);
  Status PutTechnician(TechnicianRecord record);

  std::optional<ClientRecord> FindClient(std::string_view id) const override;
  Status RecordCheckIn(std::string_view id, const std::string& version, const std::string& platform,
                       const std::string& mode, SysTime when) override;
  std::vector<ClientRecord> ListClients() const override;
  std::optional<std::string> FindTechnicianByToken(std::string_view token) const override;

 protected:
  mutable std::mutex mu_;
  std::unordered_map<std::string, ClientRecord> clients_;
  std::vector<TechnicianRecord> technicians_;
};

// A MemoryClientStore loaded from and saved to a JSON file:
//   {"clients": [{"id", "secret_hash", "version"?, "platform"?, "mode"?, "last_checkin"?}],
//    "technicians": [{"id", "token_hash"}]}
// (last_checkin in RFC 3339). Check-ins change memory only; Save() writes the file atomically
// (the caller decides when, e.g. periodically and at shutdown). At most 64 MiB.
class JsonFileClientStore final : public MemoryClientStore {
 public:
  static Expected<std::unique_ptr<JsonFileClientStore>> Open(const std::filesystem::path& path);
  Status Save() const;
  const std::filesystem::path& path() const { return path_; }

 private:
  explicit JsonFileClientStore(std::filesystem::path path) : path_(std::move(path)) {}
  std::filesystem::path path_;
};

}  // namespace upkeep::relay
