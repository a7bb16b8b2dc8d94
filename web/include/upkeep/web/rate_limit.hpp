// Login rate limiting per account name and per client address.
//
// Each key (account name, client address) has a failure counter. The first `free_failures`
// failures cost nothing; each further one blocks the key for base_delay * 2^(n-1), at most
// max_delay (15 min). A key with no failure for `forget_after` is forgotten (the decay). A
// success resets the account's counter (not the address's: one good password must not unlock
// guessing at other accounts from the same address). Memory is bounded: at most `max_entries`
// keys, the least recently failed dropped first.
//
// Thread-safe; the Clock must outlive it.
#pragma once

#include <chrono>
#include <cstddef>
#include <list>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>

#include "upkeep/common/clock.hpp"

namespace upkeep::web {

struct RateLimitPolicy {
  int free_failures = 5;
  std::chrono::seconds base_delay{1};
  std::chrono::seconds max_delay{15 * 60};
  std::chrono::seconds forget_after{60 * 60};
  std::size_t max_entries = 100000;
};

class LoginRateLimiter {
 public:
  explicit LoginRateLimiter(const Clock& clock, RateLimitPolicy policy = {});

  // nullopt when a login attempt may go ahead; otherwise how long to wait (at least 1 s).
  std::optional<std::chrono::seconds> Check(std::string_view account, std::string_view client);
  void RecordFailure(std::string_view account, std::string_view client);
  void RecordSuccess(std::string_view account);
  std::size_t size() const;

 private:
  struct Entry {
    int failures = 0;
    SysTime last_failure{};
    SysTime blocked_until{};
    std::list<std::string>::iterator lru;
  };
  std::chrono::seconds WaitFor(const std::string& key, SysTime now);
  void Fail(const std::string& key, SysTime now);

  const Clock& clock_;
  RateLimitPolicy policy_;
  mutable std::mutex mu_;
  std::list<std::string> lru_;  // front: most recently failed
  std::unordered_map<std::string, Entry> entries_;
};

// "203.0.113.5:4711" -> "203.0.113.5", "[2001:db8::1]:443" -> "2001:db8::1"; anything else as is.
std::string ClientAddress(std::string_view remote);

}  // namespace upkeep::web
