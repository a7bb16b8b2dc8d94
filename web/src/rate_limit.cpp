#include "upkeep/web/rate_limit.hpp"

#include <algorithm>

namespace upkeep::web {
namespace {

// Account names are case-insensitive for counting, so "Admin" and "admin" share one counter;
// long hostile names are cut so a key stays small.
std::string AccountKey(std::string_view account) {
  std::string key = "a:";
  for (char c : account.substr(0, 128)) key.push_back(c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c);
  return key;
}

std::string ClientKey(std::string_view client) { return "c:" + std::string(client.substr(0, 128)); }

}  // namespace

LoginRateLimiter::LoginRateLimiter(const Clock& clock, RateLimitPolicy policy) : clock_(clock), policy_(policy) {
  if (policy_.max_entries < 2) policy_.max_entries = 2;
}

std::chrono::seconds LoginRateLimiter::WaitFor(const std::string& key, SysTime now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) return std::chrono::seconds(0);
  Entry& e = it->second;
  if (now >= e.blocked_until && now - e.last_failure >= policy_.forget_after) {
    lru_.erase(e.lru);
    entries_.erase(it);
    return std::chrono::seconds(0);
  }
  if (e.blocked_until > now) return e.blocked_until - now;
  return std::chrono::seconds(0);
}

void LoginRateLimiter::Fail(const std::string& key, SysTime now) {
  auto it = entries_.find(key);
  if (it == entries_.end()) {
    while (entries_.size() >= policy_.max_entries && !lru_.empty()) {
      entries_.erase(lru_.back());
      lru_.pop_back();
    }
    lru_.push_front(key);
    Entry fresh;
    fresh.lru = lru_.begin();
    it = entries_.emplace(key, fresh).first;
  } else {
    lru_.splice(lru_.begin(), lru_, it->second.lru);
  }
  Entry& e = it->second;
  if (now >= e.blocked_until && now - e.last_failure >= policy_.forget_after) e.failures = 0;
  e.failures = std::min(e.failures + 1, 1000);
  e.last_failure = now;
  if (e.failures >= policy_.free_failures) {
    int exponent = std::min(e.failures - policy_.free_failures, 30);
    auto delay = policy_.base_delay * (std::int64_t{1} << exponent);
    e.blocked_until = now + std::min<std::chrono::seconds>(delay, policy_.max_delay);
  }
}

std::optional<std::chrono::seconds> LoginRateLimiter::Check(std::string_view account, std::string_view client) {
  std::lock_guard lock(mu_);
  SysTime now = clock_.Now();
  auto wait = std::max(WaitFor(AccountKey(account), now), WaitFor(ClientKey(client), now));
  if (wait.count() <= 0) return std::nullopt;
  return wait;
}

void LoginRateLimiter::RecordFailure(std::string_view account, std::string_view client) {
  std::lock_guard lock(mu_);
  SysTime now = clock_.Now();
  Fail(AccountKey(account), now);
  Fail(ClientKey(client), now);
}

void LoginRateLimiter::RecordSuccess(std::string_view account) {
  std::lock_guard lock(mu_);
  auto it = entries_.find(AccountKey(account));
  if (it == entries_.end()) return;
  lru_.erase(it->second.lru);
  entries_.erase(it);
}

std::size_t LoginRateLimiter::size() const {
  std::lock_guard lock(mu_);
  return entries_.size();
}

std::string ClientAddress(std::string_view remote) {
  if (remote.starts_with('[')) {
    std::size_t close = remote.find(']');
    if (close != std::string_view::npos) return std::string(remote.substr(1, close - 1));
    return std::string(remote);
  }
  std::size_t colon = remote.rfind(':');
  if (colon != std::string_view::npos && remote.find(':') == colon) return std::string(remote.substr(0, colon));
  return std::string(remote);
}

}  // namespace upkeep::web
