// Login sessions, their cookie, and CSRF tokens.
//
// A session id is 256 random bits sent as 64 lower-case hex in the cookie
// "__Host-upkeep_session"; the store keeps only SHA-256(id), so a memory or log leak of the store
// gives no usable cookie. Sessions end after `idle` without use (30 min) or `absolute` after
// login (12 h), at logout, or when all sessions of an account are dropped (password change,
// disable). Each session has its own 256-bit CSRF secret; a form's token is
// HMAC-SHA256(secret, action path), checked in constant time.
//
// SessionStore is thread-safe; the Clock and Random it is given must outlive it (Random is only
// called under the store's lock).
#pragma once

#include <chrono>
#include <cstddef>
#include <map>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/net/http.hpp"
#include "upkeep/web/forms.hpp"

namespace upkeep::web {

inline constexpr std::string_view kSessionCookieName = "__Host-upkeep_session";

// "__Host-upkeep_session=ID; Path=/; Secure; HttpOnly; SameSite=Strict"
std::string SessionCookie(std::string_view session_id);
// The same attributes with an empty value and Max-Age=0: the browser drops the cookie.
std::string LogoutCookie();

struct SessionPolicy {
  std::chrono::seconds idle{30 * 60};
  std::chrono::seconds absolute{12 * 60 * 60};
  std::size_t max_sessions = 100000;        // all accounts; beyond: expired ones swept, then kLimit
  std::size_t max_per_account = 32;         // beyond: that account's oldest session is dropped
};

struct Session {
  std::string account;
  Bytes csrf_secret;  // 32 bytes
  SysTime created{};
  SysTime last_used{};
};

struct NewSession {
  std::string id;  // the cookie value: give it to the browser once, it is not kept
  Session session;
};

class SessionStore {
 public:
  SessionStore(const Clock& clock, Random& random, SessionPolicy policy = {});

  // A new session for `account`. kLimit when the store is full of live sessions.
  Expected<NewSession> Create(std::string_view account);
  // Looks the id up and marks it used. kVerification with the 401 reason: "malformed session
  // cookie", "unknown session", "session expired (idle)", "session expired (12 h limit)"; an
  // expired session is removed.
  Expected<Session> Touch(std::string_view id);
  // Logout; false when there was no such session.
  bool Remove(std::string_view id);
  // Drops every session of `account`; returns how many.
  std::size_t RemoveAllFor(std::string_view account);
  // Drops expired sessions; returns how many.
  std::size_t Sweep();
  std::size_t size() const;
  const SessionPolicy& policy() const { return policy_; }

 private:
  bool Expired(const Session& s, SysTime now) const;
  std::size_t SweepLocked(SysTime now);

  const Clock& clock_;
  Random& random_;
  SessionPolicy policy_;
  mutable std::mutex mu_;
  std::map<std::string, Session, std::less<>> by_hash_;  // key: hex SHA-256 of the id
};

// 64 hex characters: HMAC-SHA256 keyed by the session's CSRF secret over the form's action path.
std::string MakeCsrfToken(const Bytes& csrf_secret, std::string_view action_path);
// Constant-time comparison of `token` with MakeCsrfToken(secret, path).
bool CsrfTokenValid(const Bytes& csrf_secret, std::string_view action_path, std::string_view token);

// Defence in depth for state-changing requests: when Origin is present it must equal
// `site_origin` ("https://host:port"; "null" is refused); otherwise when Referer is present it
// must be that origin or start with origin + "/". Neither present passes (the token decides).
// kPolicy with the 403 reason.
Status CheckOrigin(const net::Request& request, std::string_view site_origin);

// POST, PUT, PATCH, DELETE.
bool IsStateChanging(net::Method method);

// The CSRF defence of the forms shown before a session exists (first-start setup, sign-in): a
// double-submit token, one random value in a `__Host-` cookie (Secure, HttpOnly,
// SameSite=Strict) and the same value in the form's csrf_token field. Callers check the origin
// first (CheckOrigin or their own). Stateless and thread-safe; `random` is the caller's to lock.
class PreSessionToken {
 public:
  explicit PreSessionToken(std::string cookie_name) : cookie_name_(std::move(cookie_name)) {}
  struct Issued {
    std::string value;       // 64 hex characters, for the form's hidden csrf_token field
    std::string set_cookie;  // a Set-Cookie value, or empty: the browser's cookie is kept
  };
  // The browser's well-formed cookie when it sends one (two open tabs both keep working), else
  // a new value from `random` (then set_cookie is filled).
  Issued ForRequest(const net::Request& request, Random& random) const;
  // The form's csrf_token equals the cookie (constant time): nullopt; else the 403 reason.
  std::optional<std::string> Check(const net::Request& request, const Form& form) const;

 private:
  std::string cookie_name_;
};

}  // namespace upkeep::web
