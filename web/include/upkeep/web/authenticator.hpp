// The facade a daemon's HTTP handlers call for everything account-related: first-start setup,
// login (rate-limited, timing-safe), session authentication, roles, CSRF, password changes and
// account administration. Built on password.hpp, accounts.hpp, sessions.hpp, rate_limit.hpp and
// forms.hpp.
//
// First start: while the repository holds no account, IssueSetupToken() makes a one-time token
// (128 random bits, 32 hex) that the daemon prints once; only its SHA-256 is kept, it expires
// after setup_token_ttl (24 h), and Setup() consumes it by creating the first admin. There is no
// default password anywhere.
//
// Refusals carry the HTTP status and a one-line reason for the user, never a secret. Thread-safe:
// call any method from any handler thread. The repository, Clock and Random must outlive it.
// Login and Setup and ChangePassword run Argon2id (tens of ms at INTERACTIVE cost): call them
// from the worker pool, not an I/O thread. Authenticate and CheckCsrf are cheap.
#pragma once

#include <chrono>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

#include "upkeep/common/clock.hpp"
#include "upkeep/net/http.hpp"
#include "upkeep/web/accounts.hpp"
#include "upkeep/web/forms.hpp"
#include "upkeep/web/password.hpp"
#include "upkeep/web/rate_limit.hpp"
#include "upkeep/web/sessions.hpp"

namespace upkeep::web {

// Why a request was refused.
struct Refusal {
  int status = 401;                     // 400, 401, 403, 409, 429 or 500
  std::string reason;                   // one line, safe to show
  std::chrono::seconds retry_after{0};  // 429 only
  // {"error": {"code": ..., "message": reason}} with Retry-After on 429.
  net::Response ToResponse() const;
};

template <typename T>
class [[nodiscard]] AuthResult {
 public:
  AuthResult(T value) : v_(std::in_place_index<0>, std::move(value)) {}       // NOLINT
  AuthResult(Refusal refusal) : v_(std::in_place_index<1>, std::move(refusal)) {}  // NOLINT
  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }
  T& value() { return std::get<0>(v_); }
  const T& value() const { return std::get<0>(v_); }
  const T* operator->() const { return &value(); }
  const Refusal& refusal() const { return std::get<1>(v_); }

 private:
  std::variant<T, Refusal> v_;
};

struct AuthOptions {
  std::string site_origin;  // "https://appliance.example:8443": checked against Origin/Referer
  PasswordCost password_cost = PasswordCost::Interactive();
  SessionPolicy sessions;
  RateLimitPolicy rate_limit;
  std::chrono::seconds setup_token_ttl{24 * 60 * 60};
};


// An authenticated request's account and session.
struct Principal {
  Account account;
  Session session;
  std::string session_id;
};

struct LoginSuccess {
  Account account;
  std::string session_id;
  std::string set_cookie;  // the Set-Cookie header value
};

class Authenticator {
 public:
  Authenticator(AccountRepository& accounts, const Clock& clock, Random& random, AuthOptions options);

  // While no account exists: a fresh one-time setup token (replacing any earlier one) for the
  // daemon to print once. nullopt when accounts exist (setup is done).
  Expected<std::optional<std::string>> IssueSetupToken();
  bool SetupPending() const;
  // Creates the first admin. Refused: 409 when setup is already done or no token was issued,
  // 401 for a wrong/expired/used token, 400 for a bad name or a password breaking a rule.
  AuthResult<Account> Setup(std::string_view token, std::string_view name, std::string_view password);

  // 429 "too many failed logins; try again in N s", 401 "wrong account name or password" (same
  // for unknown accounts, which cost the same time), 403 for a disabled account, 400 for a
  // password over 1024 bytes. A success resets the account's failure counter and rehashes a
  // hash made at another cost.
  AuthResult<LoginSuccess> Login(std::string_view name, std::string_view password, std::string_view client_address);
  // The session cookie's account: 401 "not logged in", "malformed session cookie", "unknown
  // session", "session expired ...", "account ... no longer active".
  AuthResult<Principal> Authenticate(const net::Request& request);
  // 403 with CheckPermission's reason when the principal's role is below `need`.
  std::optional<Refusal> RequireRole(const Principal& principal, Role need) const;
  // Ends the request's session (if any); returns the Set-Cookie value that clears the cookie.
  std::string Logout(const net::Request& request);

  std::string CsrfToken(const Principal& principal, std::string_view action_path) const;
  // For a state-changing method: Origin/Referer against the site origin, then the form's
  // csrf_token against the request path. 403 with the reason; nullopt when fine (and always for
  // GET/HEAD/OPTIONS).
  std::optional<Refusal> CheckCsrf(const net::Request& request, const Principal& principal, const Form& form) const;

  // Checks the old password, applies the rules, stores the new hash, ends every session of the
  // account and returns a fresh one for the caller. 401 wrong old password, 400 rule broken.
  AuthResult<LoginSuccess> ChangePassword(const Principal& principal, std::string_view old_password,
                                          std::string_view new_password);
  // Admin only (403 otherwise): a new account (409 when the name is taken, 400 bad input).
  AuthResult<Account> CreateAccount(const Principal& actor, std::string_view name, Role role, std::string_view password);
  // Admin only: disables or re-enables an account; disabling ends its sessions. An admin cannot
  // disable itself (409). 404 for an unknown account.
  AuthResult<Account> SetDisabled(const Principal& actor, std::string_view name, bool disabled);

  SessionStore& sessions() { return sessions_; }
  LoginRateLimiter& rate_limiter() { return limiter_; }

 private:
  // Serialises the caller's Random between the session store and setup tokens.
  class LockedRandom final : public Random {
   public:
    explicit LockedRandom(Random& inner) : inner_(inner) {}
    Bytes Generate(std::size_t n) override {
      std::lock_guard lock(mu_);
      return inner_.Generate(n);
    }

   private:
    Random& inner_;
    std::mutex mu_;
  };
  Refusal FromError(const Error& error) const;
  // A new account after the name and password rules, its password hashed (not stored yet).
  AuthResult<Account> NewAccount(std::string_view name, Role role, std::string_view password);

  AccountRepository& accounts_;
  const Clock& clock_;
  LockedRandom random_;
  AuthOptions options_;
  PasswordHasher hasher_;
  SessionStore sessions_;
  LoginRateLimiter limiter_;

  std::mutex update_mu_;  // read-modify-write of one account (password, disabled, rehash)
  mutable std::mutex setup_mu_;
  std::optional<std::string> setup_hash_;  // SHA-256 hex of the pending token
  SysTime setup_expires_{};
  bool setup_used_ = false;
};

}  // namespace upkeep::web
