#include "upkeep/web/password.hpp"

#include <sodium.h>

#include <algorithm>
#include <cstdlib>

namespace upkeep::web {
namespace {

// A NUL-terminated copy for libsodium, refusing what cannot be one of its hash strings.
bool PlausibleHash(std::string_view hash) {
  return hash.size() < crypto_pwhash_argon2id_STRBYTES && hash.starts_with("$argon2id$") &&
         hash.find('\0') == std::string_view::npos;
}

void EnsureSodium() {
  if (sodium_init() < 0) std::abort();  // no usable randomness: nothing here can be safe
}

}  // namespace

Status CheckPasswordRules(std::string_view password, std::string_view account_name) {
  if (password.size() < kMinPasswordBytes) {
    return Error(Errc::kInvalidArgument, "password: shorter than " + std::to_string(kMinPasswordBytes) + " bytes");
  }
  if (password.size() > kMaxPasswordBytes) {
    return Error(Errc::kInvalidArgument, "password: longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
  }
  if (std::all_of(password.begin(), password.end(), [&](char c) { return c == password.front(); })) {
    return Error(Errc::kInvalidArgument, "password: all one character");
  }
  if (password == account_name) {
    return Error(Errc::kInvalidArgument, "password: equal to the account name");
  }
  return OkStatus();
}

PasswordCost PasswordCost::Interactive() {
  PasswordCost c;
  c.opslimit = crypto_pwhash_argon2id_OPSLIMIT_INTERACTIVE;
  c.memlimit = crypto_pwhash_argon2id_MEMLIMIT_INTERACTIVE;
  return c;
}

PasswordCost PasswordCost::MinForTests() {
  PasswordCost c;
  c.opslimit = crypto_pwhash_argon2id_OPSLIMIT_MIN;
  c.memlimit = crypto_pwhash_argon2id_MEMLIMIT_MIN;
  return c;
}

PasswordHasher::PasswordHasher(PasswordCost cost) : cost_(cost) {
  EnsureSodium();
  auto dummy = Hash("upkeep-dummy-password-for-timing");
  if (dummy) dummy_hash_ = std::move(*dummy);
}

Expected<std::string> PasswordHasher::Hash(std::string_view password) const {
  if (password.size() > kMaxPasswordBytes) {
    return Error(Errc::kInvalidArgument, "password: longer than " + std::to_string(kMaxPasswordBytes) + " bytes");
  }
  char out[crypto_pwhash_argon2id_STRBYTES];
  if (crypto_pwhash_argon2id_str(out, password.data(), password.size(), cost_.opslimit, cost_.memlimit) != 0) {
    return Error(Errc::kInternal, "Argon2id password hashing failed (out of memory or bad cost)");
  }
  return std::string(out);
}

bool PasswordHasher::Verify(std::string_view hash, std::string_view password) const {
  if (password.size() > kMaxPasswordBytes || !PlausibleHash(hash)) return false;
  std::string z(hash);
  return crypto_pwhash_argon2id_str_verify(z.c_str(), password.data(), password.size()) == 0;
}

void PasswordHasher::VerifyDummy(std::string_view password) const {
  if (dummy_hash_.empty()) return;
  (void)Verify(dummy_hash_, password.substr(0, kMaxPasswordBytes));
}

bool PasswordHasher::NeedsRehash(std::string_view hash) const {
  if (!PlausibleHash(hash)) return true;
  std::string z(hash);
  return crypto_pwhash_argon2id_str_needs_rehash(z.c_str(), cost_.opslimit, cost_.memlimit) != 0;
}

}  // namespace upkeep::web
