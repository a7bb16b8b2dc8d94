#include "upkeep/web/sessions.hpp"

#include <sodium.h>

#include <vector>

#include "upkeep/common/hash.hpp"

namespace upkeep::web {

std::string SessionCookie(std::string_view session_id) {
  return std::string(kSessionCookieName) + "=" + std::string(session_id) + "; Path=/; Secure; HttpOnly; SameSite=Strict";
}

std::string LogoutCookie() {
  return std::string(kSessionCookieName) + "=; Path=/; Secure; HttpOnly; SameSite=Strict; Max-Age=0";
}

SessionStore::SessionStore(const Clock& clock, Random& random, SessionPolicy policy)
    : clock_(clock), random_(random), policy_(policy) {}

bool SessionStore::Expired(const Session& s, SysTime now) const {
  return now - s.last_used >= policy_.idle || now - s.created >= policy_.absolute;
}

std::size_t SessionStore::SweepLocked(SysTime now) {
  std::size_t removed = 0;
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    if (Expired(it->second, now)) {
      it = by_hash_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

Expected<NewSession> SessionStore::Create(std::string_view account) {
  std::lock_guard lock(mu_);
  SysTime now = clock_.Now();
  // Per-account cap: drop that account's least recently used sessions.
  std::vector<std::map<std::string, Session, std::less<>>::iterator> mine;
  for (auto it = by_hash_.begin(); it != by_hash_.end(); ++it) {
    if (it->second.account == account) mine.push_back(it);
  }
  while (!mine.empty() && mine.size() >= policy_.max_per_account) {
    auto oldest = mine.begin();
    for (auto i = mine.begin(); i != mine.end(); ++i) {
      if ((*i)->second.last_used < (*oldest)->second.last_used) oldest = i;
    }
    by_hash_.erase(*oldest);
    mine.erase(oldest);
  }
  if (by_hash_.size() >= policy_.max_sessions) SweepLocked(now);
  if (by_hash_.size() >= policy_.max_sessions) {
    return Error(Errc::kLimit, "too many open sessions (" + std::to_string(policy_.max_sessions) + ")");
  }
  Bytes id = random_.Generate(32);
  Bytes secret = random_.Generate(32);
  if (id.size() != 32 || secret.size() != 32) return Error(Errc::kInternal, "random source returned too few bytes");
  NewSession out;
  out.id = ToHex(id);
  out.session.account = std::string(account);
  out.session.csrf_secret = std::move(secret);
  out.session.created = now;
  out.session.last_used = now;
  std::string key = Sha256Hex(out.id);
  if (by_hash_.count(key) != 0) return Error(Errc::kInternal, "random source repeated a session id");
  by_hash_.emplace(std::move(key), out.session);
  sodium_memzero(id.data(), id.size());
  return out;
}

Expected<Session> SessionStore::Touch(std::string_view id) {
  if (!IsLowerHex(id, 64)) return Error(Errc::kVerification, "malformed session cookie");
  std::string key = Sha256Hex(id);
  std::lock_guard lock(mu_);
  auto it = by_hash_.find(key);
  if (it == by_hash_.end()) return Error(Errc::kVerification, "unknown session (logged out or expired)");
  SysTime now = clock_.Now();
  if (now - it->second.created >= policy_.absolute) {
    by_hash_.erase(it);
    return Error(Errc::kVerification, "session expired (" + std::to_string(policy_.absolute.count() / 3600) +
                                          " h limit); log in again");
  }
  if (now - it->second.last_used >= policy_.idle) {
    by_hash_.erase(it);
    return Error(Errc::kVerification, "session expired (idle for " + std::to_string(policy_.idle.count() / 60) +
                                          " min); log in again");
  }
  it->second.last_used = now;
  return it->second;
}

bool SessionStore::Remove(std::string_view id) {
  if (!IsLowerHex(id, 64)) return false;
  std::string key = Sha256Hex(id);
  std::lock_guard lock(mu_);
  return by_hash_.erase(key) != 0;
}

std::size_t SessionStore::RemoveAllFor(std::string_view account) {
  std::lock_guard lock(mu_);
  std::size_t removed = 0;
  for (auto it = by_hash_.begin(); it != by_hash_.end();) {
    if (it->second.account == account) {
      it = by_hash_.erase(it);
      ++removed;
    } else {
      ++it;
    }
  }
  return removed;
}

std::size_t SessionStore::Sweep() {
  std::lock_guard lock(mu_);
  return SweepLocked(clock_.Now());
}

std::size_t SessionStore::size() const {
  std::lock_guard lock(mu_);
  return by_hash_.size();
}

std::string MakeCsrfToken(const Bytes& csrf_secret, std::string_view action_path) {
  unsigned char mac[crypto_auth_hmacsha256_BYTES];
  crypto_auth_hmacsha256_state st;
  crypto_auth_hmacsha256_init(&st, csrf_secret.data(), csrf_secret.size());
  crypto_auth_hmacsha256_update(&st, reinterpret_cast<const unsigned char*>(action_path.data()), action_path.size());
  crypto_auth_hmacsha256_final(&st, mac);
  sodium_memzero(&st, sizeof st);
  return ToHex(std::span<const std::uint8_t>(mac, sizeof mac));
}

bool CsrfTokenValid(const Bytes& csrf_secret, std::string_view action_path, std::string_view token) {
  if (csrf_secret.empty()) return false;
  std::string expected = MakeCsrfToken(csrf_secret, action_path);
  if (token.size() != expected.size()) return false;
  return sodium_memcmp(expected.data(), token.data(), expected.size()) == 0;
}

namespace {
std::string Shown(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 100)) out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  if (s.size() > 100) out += "...";
  return out;
}
}  // namespace

Status CheckOrigin(const net::Request& request, std::string_view site_origin) {
  if (auto origin = request.Header("Origin")) {
    if (*origin != site_origin) {
      return Error(Errc::kPolicy, "forbidden: request from origin '" + Shown(*origin) + "', expected '" +
                                      std::string(site_origin) + "'");
    }
    return OkStatus();
  }
  if (auto referer = request.Header("Referer")) {
    std::string_view r = *referer;
    bool same = r == site_origin ||
                (r.size() > site_origin.size() && r.starts_with(site_origin) && r[site_origin.size()] == '/');
    if (!same) {
      return Error(Errc::kPolicy, "forbidden: request referred by another site (expected '" +
                                      std::string(site_origin) + "')");
    }
  }
  return OkStatus();
}

bool IsStateChanging(net::Method method) {
  return method == net::Method::kPost || method == net::Method::kPut || method == net::Method::kPatch ||
         method == net::Method::kDelete;
}

namespace {
bool IsToken(std::string_view v) {
  return v.size() == 64 && v.find_first_not_of("0123456789abcdef") == std::string_view::npos;
}
}  // namespace

PreSessionToken::Issued PreSessionToken::ForRequest(const net::Request& request, Random& random) const {
  if (auto header = request.Header("Cookie")) {
    auto v = FindCookie(*header, cookie_name_);
    if (v.ok() && *v && IsToken(**v)) return Issued{**v, {}};
  }
  Issued issued;
  issued.value = ToHex(random.Generate(32));
  issued.set_cookie = cookie_name_ + "=" + issued.value + "; Path=/; Secure; HttpOnly; SameSite=Strict";
  return issued;
}

std::optional<std::string> PreSessionToken::Check(const net::Request& request, const Form& form) const {
  auto sent = form.Single(kCsrfField);
  if (!sent.ok()) return std::string("form without a CSRF token");
  std::optional<std::string> cookie;
  if (auto header = request.Header("Cookie")) {
    auto v = FindCookie(*header, cookie_name_);
    if (v.ok()) cookie = *v;
  }
  if (!cookie || !IsToken(*cookie) || !IsToken(*sent) || sodium_memcmp(cookie->data(), sent->data(), 64) != 0) {
    return "invalid CSRF token for " + request.path();
  }
  return std::nullopt;
}

}  // namespace upkeep::web
