#include "upkeep/web/authenticator.hpp"

#include <sodium.h>

#include "upkeep/common/hash.hpp"

namespace upkeep::web {
namespace {

std::string_view CodeFor(int status) {
  switch (status) {
    case 400: return "invalid_argument";
    case 401: return "unauthenticated";
    case 403: return "forbidden";
    case 404: return "not_found";
    case 409: return "conflict";
    case 429: return "rate_limited";
    case 503: return "unavailable";
    default: return "internal";
  }
}

Refusal Refuse(int status, std::string reason) {
  Refusal r;
  r.status = status;
  r.reason = std::move(reason);
  return r;
}

constexpr std::string_view kWrongLogin = "wrong account name or password";

}  // namespace

net::Response Refusal::ToResponse() const {
  net::Response response = net::Response::JsonError(status, CodeFor(status), reason);
  if (status == 429 && retry_after.count() > 0) response.SetHeader("Retry-After", std::to_string(retry_after.count()));
  if (status == 401 || status == 403) response.SetHeader("Cache-Control", "no-store");
  return response;
}

Authenticator::Authenticator(AccountRepository& accounts, const Clock& clock, Random& random, AuthOptions options)
    : accounts_(accounts),
      clock_(clock),
      random_(random),
      options_(std::move(options)),
      hasher_(options_.password_cost),
      sessions_(clock, random_, options_.sessions),
      limiter_(clock, options_.rate_limit) {}

Refusal Authenticator::FromError(const Error& error) const {
  switch (error.code()) {
    case Errc::kInvalidArgument:
    case Errc::kParse: return Refuse(400, error.message());
    case Errc::kNotFound: return Refuse(404, error.message());
    case Errc::kPolicy: return Refuse(409, error.message());
    case Errc::kLimit: return Refuse(503, error.message());
    default: return Refuse(500, error.message());
  }
}

Expected<std::optional<std::string>> Authenticator::IssueSetupToken() {
  std::lock_guard lock(setup_mu_);
  UPK_TRY_ASSIGN(std::size_t count, accounts_.Count());
  if (count > 0) {
    setup_hash_.reset();
    return std::optional<std::string>{};
  }
  Bytes raw = random_.Generate(16);
  if (raw.size() != 16) return Error(Errc::kInternal, "random source returned too few bytes");
  std::string token = ToHex(raw);
  sodium_memzero(raw.data(), raw.size());
  setup_hash_ = Sha256Hex(token);
  setup_expires_ = clock_.Now() + options_.setup_token_ttl;
  setup_used_ = false;
  return std::optional<std::string>(std::move(token));
}

bool Authenticator::SetupPending() const {
  auto count = accounts_.Count();
  return count.ok() && *count == 0;
}

AuthResult<Account> Authenticator::Setup(std::string_view token, std::string_view name, std::string_view password) {
  std::lock_guard lock(setup_mu_);
  auto count = accounts_.Count();
  if (!count) return FromError(count.error());
  if (*count > 0 || setup_used_) return Refuse(409, "setup is already done; log in instead");
  if (!setup_hash_) return Refuse(409, "no setup token was issued; restart the daemon to get one");
  if (clock_.Now() >= setup_expires_) {
    return Refuse(401, "setup token expired (valid 24 h); restart the daemon to get a new one");
  }
  std::string given = Sha256Hex(token);
  if (sodium_memcmp(given.data(), setup_hash_->data(), given.size()) != 0) return Refuse(401, "wrong setup token");
  auto made = NewAccount(name, Role::kAdmin, password);
  if (!made.ok()) return made;
  Account account = made.value();
  if (auto st = accounts_.CreateFirst(account); !st) return FromError(st.error());
  setup_hash_.reset();
  setup_used_ = true;
  return account;
}

AuthResult<LoginSuccess> Authenticator::Login(std::string_view name, std::string_view password,
                                              std::string_view client_address) {
  if (password.size() > kMaxPasswordBytes) {
    return Refuse(400, "password: longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
  }
  if (auto wait = limiter_.Check(name, client_address)) {
    Refusal r = Refuse(429, "too many failed logins; try again in " + std::to_string(wait->count()) + " s");
    r.retry_after = *wait;
    return r;
  }
  std::optional<Account> account;
  if (CheckAccountName(name)) {
    auto found = accounts_.Find(name);
    if (!found) return FromError(found.error());
    account = std::move(*found);
  }
  if (!account) {
    hasher_.VerifyDummy(password);  // same cost as a real check: existence does not show in timing
    limiter_.RecordFailure(name, client_address);
    return Refuse(401, std::string(kWrongLogin));
  }
  if (!hasher_.Verify(account->password_hash, password)) {
    limiter_.RecordFailure(name, client_address);
    return Refuse(401, std::string(kWrongLogin));
  }
  if (account->disabled) return Refuse(403, "account '" + account->name + "' is disabled; ask an admin");
  limiter_.RecordSuccess(name);
  if (hasher_.NeedsRehash(account->password_hash)) {
    if (auto fresh = hasher_.Hash(password)) {
      std::lock_guard lock(update_mu_);
      auto current = accounts_.Find(account->name);
      // Only if nothing changed the hash meanwhile (a password change wins); best effort.
      if (current && *current && (*current)->password_hash == account->password_hash) {
        Account updated = **current;
        updated.password_hash = std::move(*fresh);
        if (accounts_.Update(updated)) *account = std::move(updated);
      }
    }
  }
  auto session = sessions_.Create(account->name);
  if (!session) return FromError(session.error());
  LoginSuccess out;
  out.account = std::move(*account);
  out.set_cookie = SessionCookie(session->id);
  out.session_id = std::move(session->id);
  return out;
}

AuthResult<Principal> Authenticator::Authenticate(const net::Request& request) {
  auto header = request.Header("Cookie");
  if (!header) return Refuse(401, "not logged in");
  auto id = FindCookie(*header, kSessionCookieName);
  if (!id) return Refuse(401, id.error().message());
  if (!*id) return Refuse(401, "not logged in");
  auto session = sessions_.Touch(**id);
  if (!session) return Refuse(401, session.error().message());
  auto account = accounts_.Find(session->account);
  if (!account) return FromError(account.error());
  if (!*account || (*account)->disabled) {
    sessions_.Remove(**id);
    return Refuse(401, "account '" + session->account + "' is no longer active");
  }
  Principal p;
  p.account = std::move(**account);
  p.session = std::move(*session);
  p.session_id = std::move(**id);
  return p;
}

std::optional<Refusal> Authenticator::RequireRole(const Principal& principal, Role need) const {
  auto st = CheckPermission(principal.account.name, principal.account.role, need);
  if (st) return std::nullopt;
  return Refuse(403, st.error().message());
}

std::string Authenticator::Logout(const net::Request& request) {
  if (auto header = request.Header("Cookie")) {
    auto id = FindCookie(*header, kSessionCookieName);
    if (id && *id) sessions_.Remove(**id);
  }
  return LogoutCookie();
}

std::string Authenticator::CsrfToken(const Principal& principal, std::string_view action_path) const {
  return MakeCsrfToken(principal.session.csrf_secret, action_path);
}

std::optional<Refusal> Authenticator::CheckCsrf(const net::Request& request, const Principal& principal,
                                                const Form& form) const {
  if (!IsStateChanging(request.method())) return std::nullopt;
  if (auto st = CheckOrigin(request, options_.site_origin); !st) return Refuse(403, st.error().message());
  auto token = form.Optional(kCsrfField);
  if (!token) return Refuse(403, "forbidden: CSRF token given more than once");
  if (!*token) return Refuse(403, "forbidden: form without a CSRF token; reload the page and try again");
  if (!CsrfTokenValid(principal.session.csrf_secret, request.path(), **token)) {
    return Refuse(403, "forbidden: invalid CSRF token for " + request.path() + "; reload the page and try again");
  }
  return std::nullopt;
}

AuthResult<LoginSuccess> Authenticator::ChangePassword(const Principal& principal, std::string_view old_password,
                                                       std::string_view new_password) {
  const std::string& name = principal.account.name;
  const std::string limiter_client = "password-change:" + name;
  if (auto wait = limiter_.Check(name, limiter_client)) {
    Refusal r = Refuse(429, "too many wrong passwords; try again in " + std::to_string(wait->count()) + " s");
    r.retry_after = *wait;
    return r;
  }
  if (auto st = CheckPasswordRules(new_password, name); !st) return Refuse(400, st.error().message());
  auto fresh = hasher_.Hash(new_password);
  if (!fresh) return FromError(fresh.error());
  {
    std::lock_guard lock(update_mu_);
    auto current = accounts_.Find(name);
    if (!current) return FromError(current.error());
    if (!*current || (*current)->disabled) return Refuse(401, "account '" + name + "' is no longer active");
    if (!hasher_.Verify((*current)->password_hash, old_password)) {
      limiter_.RecordFailure(name, limiter_client);
      return Refuse(401, "current password is wrong");
    }
    Account updated = **current;
    updated.password_hash = std::move(*fresh);
    if (auto st = accounts_.Update(updated); !st) return FromError(st.error());
    sessions_.RemoveAllFor(name);
    limiter_.RecordSuccess(name);
    auto session = sessions_.Create(name);
    if (!session) return FromError(session.error());
    LoginSuccess out;
    out.account = std::move(updated);
    out.set_cookie = SessionCookie(session->id);
    out.session_id = std::move(session->id);
    return out;
  }
}

AuthResult<Account> Authenticator::CreateAccount(const Principal& actor, std::string_view name, Role role,
                                                 std::string_view password) {
  if (auto refusal = RequireRole(actor, Role::kAdmin)) return *refusal;
  auto made = NewAccount(name, role, password);
  if (!made.ok()) return made;
  if (auto st = accounts_.Create(made.value()); !st) return FromError(st.error());
  return made;
}

AuthResult<Account> Authenticator::NewAccount(std::string_view name, Role role, std::string_view password) {
  if (auto st = CheckAccountName(name); !st) return Refuse(400, st.error().message());
  if (auto st = CheckPasswordRules(password, name); !st) return Refuse(400, st.error().message());
  auto hash = hasher_.Hash(password);
  if (!hash) return FromError(hash.error());
  Account account;
  account.name = std::string(name);
  account.role = role;
  account.password_hash = std::move(*hash);
  account.created = clock_.Now();
  account.disabled = false;
  return account;
}

AuthResult<Account> Authenticator::SetDisabled(const Principal& actor, std::string_view name, bool disabled) {
  if (auto refusal = RequireRole(actor, Role::kAdmin)) return *refusal;
  if (disabled && name == actor.account.name) return Refuse(409, "you cannot disable your own account");
  std::lock_guard lock(update_mu_);
  auto current = accounts_.Find(name);
  if (!current) return FromError(current.error());
  if (!*current) return Refuse(404, "account '" + std::string(name.substr(0, 64)) + "' does not exist");
  Account updated = **current;
  updated.disabled = disabled;
  if (auto st = accounts_.Update(updated); !st) return FromError(st.error());
  if (disabled) sessions_.RemoveAllFor(updated.name);
  return updated;
}

}  // namespace upkeep::web
