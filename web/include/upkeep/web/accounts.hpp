// Web accounts (name, role, Argon2id hash, created, disabled), the roles, and where accounts are
// kept: AccountRepository with an in-memory and a JSON-file implementation (the appliance); the
// updater adds a PostgreSQL one.
//
// Contract: repositories are thread-safe (any method from any thread). A failed write changes
// nothing (neither the file nor what later reads return). Errors name the account or the file,
// never a password or a hash.
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"

namespace upkeep::web {

// Each role may do what the ones before it may: read-only < support < admin.
enum class Role : std::uint8_t { kReadOnly = 0, kSupport = 1, kAdmin = 2 };
std::string_view RoleName(Role role);  // "read-only", "support", "admin"
std::optional<Role> ParseRole(std::string_view name);
bool Permits(Role have, Role need);
// kPolicy with the 403 reason ("forbidden: needs role 'admin'; account 'bob' has 'support'").
Status CheckPermission(std::string_view account, Role have, Role need);

// Names: 1..64 bytes of a-z 0-9 . _ - starting with a letter or digit (kInvalidArgument).
Status CheckAccountName(std::string_view name);

struct Account {
  std::string name;
  Role role = Role::kReadOnly;
  std::string password_hash;  // Argon2id string
  SysTime created{};
  bool disabled = false;
};

class AccountRepository {
 public:
  virtual ~AccountRepository() = default;
  virtual Expected<std::optional<Account>> Find(std::string_view name) const = 0;
  virtual Expected<std::vector<Account>> List() const = 0;  // sorted by name
  virtual Expected<std::size_t> Count() const = 0;
  // kPolicy when the name is taken.
  virtual Status Create(const Account& account) = 0;
  // Creates only while no account exists at all (the first admin); kPolicy otherwise. Atomic
  // with respect to every other method.
  virtual Status CreateFirst(const Account& account) = 0;
  // Replaces the account of the same name; kNotFound when there is none.
  virtual Status Update(const Account& account) = 0;
};

class InMemoryAccountRepository final : public AccountRepository {
 public:
  Expected<std::optional<Account>> Find(std::string_view name) const override;
  Expected<std::vector<Account>> List() const override;
  Expected<std::size_t> Count() const override;
  Status Create(const Account& account) override;
  Status CreateFirst(const Account& account) override;
  Status Update(const Account& account) override;

 private:
  mutable std::mutex mu_;
  std::map<std::string, Account, std::less<>> accounts_;
};

// One JSON file: {"version": 1, "accounts": [{"name", "role", "password_hash", "created"
// (RFC 3339), "disabled"}]}. Read once at Open (bounded to kMaxFileBytes; unknown or missing
// fields, duplicate names, bad names/roles/hashes are refused with the file named); every change
// rewrites it atomically with mode 0600 before it becomes visible.
class JsonFileAccountRepository final : public AccountRepository {
 public:
  static constexpr std::uint64_t kMaxFileBytes = 4 * 1024 * 1024;
  static constexpr std::size_t kMaxAccounts = 10000;
  // A missing file is an empty repository (the file is created on the first change).
  static Expected<std::unique_ptr<JsonFileAccountRepository>> Open(std::filesystem::path path);

  Expected<std::optional<Account>> Find(std::string_view name) const override;
  Expected<std::vector<Account>> List() const override;
  Expected<std::size_t> Count() const override;
  Status Create(const Account& account) override;
  Status CreateFirst(const Account& account) override;
  Status Update(const Account& account) override;

 private:
  explicit JsonFileAccountRepository(std::filesystem::path path) : path_(std::move(path)) {}
  Status Save(const std::map<std::string, Account, std::less<>>& accounts);  // caller holds mu_

  std::filesystem::path path_;
  mutable std::mutex mu_;
  std::map<std::string, Account, std::less<>> accounts_;
};

}  // namespace upkeep::web
