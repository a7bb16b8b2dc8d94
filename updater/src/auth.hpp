// Operator authentication: bearer tokens with a role and an expiry, kept in PostgreSQL as
// SHA-256 hashes and cached in memory so authorising a request (and the pre-body check of a blob
// upload, which runs on an I/O thread) needs no database round trip.
//
// Tokens are "upkeep_" + 64 hex characters (256 random bits). A plain SHA-256 is enough to make
// a stolen table useless at that entropy, and costs nothing per request (unlike Argon2id).
// Thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/db/pool.hpp"

namespace upkeep::updater {

enum class OperatorRole { kSupport = 0, kPublisher = 1, kAdmin = 2 };  // each may do what the ones before may
std::string_view OperatorRoleName(OperatorRole role);
std::optional<OperatorRole> ParseOperatorRole(std::string_view name);

struct Operator {
  std::int64_t token_id = 0;
  std::string name;
  OperatorRole role = OperatorRole::kSupport;
  SysTime expires_at{};
  std::string actor() const { return "token:" + name; }  // how the audit log names it
};

// "upkeep_" + 64 lower-case hex.
std::string NewOperatorToken(Random& random);
std::string TokenHash(std::string_view token);

class TokenStore {
 public:
  enum class Outcome { kOk, kUnknown, kExpired };
  struct Lookup {
    Outcome outcome = Outcome::kUnknown;
    Operator op;  // kOk and kExpired
  };
  // Replaces the cache with the unrevoked tokens in the database.
  Status Reload(db::Pool& pool);
  // Cache only (safe on an I/O thread).
  Lookup Find(std::string_view token, SysTime now) const;
  // Cache, then (on a miss, at most once a second) a reload and a second look.
  Lookup FindOrReload(std::string_view token, SysTime now, db::Pool& pool);
  void Remember(std::string_view token_hash, Operator op);
  void Forget(std::int64_t token_id);

 private:
  mutable std::mutex mu_;
  std::map<std::string, Operator, std::less<>> by_hash_;
  std::optional<std::chrono::steady_clock::time_point> last_miss_reload_;
};

}  // namespace upkeep::updater
