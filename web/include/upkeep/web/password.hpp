// Password storage and password rules for web accounts.
//
// Hashes are libsodium's Argon2id strings (crypto_pwhash_str: "$argon2id$v=19$m=...,t=...,p=1$
// salt$hash"), cost INTERACTIVE by default (tests use MIN). A PasswordHasher is immutable after
// construction and thread-safe. Errors never contain the password.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::web {

inline constexpr std::size_t kMinPasswordBytes = 12;
inline constexpr std::size_t kMaxPasswordBytes = 1024;

// The rules every new password must meet; the error (kInvalidArgument) names the rule broken:
// "password: shorter than 12 bytes", "longer than 1024 bytes", "all one character", "equal to
// the account name".
Status CheckPasswordRules(std::string_view password, std::string_view account_name);

struct PasswordCost {
  unsigned long long opslimit = 0;
  std::size_t memlimit = 0;
  static PasswordCost Interactive();  // libsodium's INTERACTIVE limits (production)
  static PasswordCost MinForTests();  // libsodium's MIN limits: fast, for tests only
};

class PasswordHasher {
 public:
  // Computes a dummy hash at `cost` once, so failed logins for unknown accounts cost the same.
  explicit PasswordHasher(PasswordCost cost = PasswordCost::Interactive());

  // An Argon2id string for `password` with a fresh random salt. kInternal on libsodium failure
  // (out of memory); kInvalidArgument for a password over kMaxPasswordBytes.
  Expected<std::string> Hash(std::string_view password) const;
  // True when `hash` is a well-formed Argon2id string and `password` matches it. Never throws;
  // a malformed or foreign hash is simply false. Passwords over kMaxPasswordBytes are false.
  bool Verify(std::string_view hash, std::string_view password) const;
  // Spends the time of one Verify against the dummy hash (for unknown or disabled accounts).
  void VerifyDummy(std::string_view password) const;
  // True when `hash` was made with another cost (or is not an Argon2id string at all).
  bool NeedsRehash(std::string_view hash) const;
  const PasswordCost& cost() const { return cost_; }

 private:
  PasswordCost cost_;
  std::string dummy_hash_;
};

}  // namespace upkeep::web
