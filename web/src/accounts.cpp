#include "upkeep/web/accounts.hpp"

#include <set>

#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::web {

std::string_view RoleName(Role role) {
  switch (role) {
    case Role::kReadOnly: return "read-only";
    case Role::kSupport: return "support";
    case Role::kAdmin: return "admin";
  }
  return "unknown";
}

std::optional<Role> ParseRole(std::string_view name) {
  for (Role r : {Role::kReadOnly, Role::kSupport, Role::kAdmin}) {
    if (RoleName(r) == name) return r;
  }
  return std::nullopt;
}

bool Permits(Role have, Role need) { return static_cast<int>(have) >= static_cast<int>(need); }

Status CheckPermission(std::string_view account, Role have, Role need) {
  if (Permits(have, need)) return OkStatus();
  return Error(Errc::kPolicy, "forbidden: needs role '" + std::string(RoleName(need)) + "'; account '" +
                                  std::string(account) + "' has '" + std::string(RoleName(have)) + "'");
}

Status CheckAccountName(std::string_view name) {
  if (name.empty() || name.size() > 64) return Error(Errc::kInvalidArgument, "account name: must be 1 to 64 bytes");
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name.front())) {
    return Error(Errc::kInvalidArgument, "account name: must start with a lower-case letter or a digit");
  }
  for (char c : name) {
    if (!alnum(c) && c != '.' && c != '_' && c != '-') {
      return Error(Errc::kInvalidArgument, "account name: only a-z, 0-9, '.', '_' and '-' are allowed");
    }
  }
  return OkStatus();
}

namespace {

using AccountMap = std::map<std::string, Account, std::less<>>;

Status CheckAccount(const Account& a) {
  UPK_TRY(CheckAccountName(a.name));
  if (!a.password_hash.starts_with("$argon2id$") || a.password_hash.size() > 256) {
    return Error(Errc::kInvalidArgument, "account '" + a.name + "': password hash is not an Argon2id string");
  }
  return OkStatus();
}

Status CreateIn(AccountMap& map, const Account& account) {
  UPK_TRY(CheckAccount(account));
  if (map.count(account.name) != 0) return Error(Errc::kPolicy, "account '" + account.name + "' already exists");
  map.emplace(account.name, account);
  return OkStatus();
}

Status UpdateIn(AccountMap& map, const Account& account) {
  UPK_TRY(CheckAccount(account));
  auto it = map.find(account.name);
  if (it == map.end()) return Error(Errc::kNotFound, "account '" + account.name + "' does not exist");
  it->second = account;
  return OkStatus();
}

std::vector<Account> Values(const AccountMap& map) {
  std::vector<Account> out;
  out.reserve(map.size());
  for (const auto& [name, a] : map) out.push_back(a);
  return out;
}

Expected<Account> AccountFromJson(const Json& j, std::size_t index) {
  std::string where = "accounts[" + std::to_string(index) + "]";
  if (!j.is_object()) return Error(Errc::kParse, where + ": not an object");
  static const std::set<std::string> kFields = {"name", "role", "password_hash", "created", "disabled"};
  for (const auto& [key, value] : j.items()) {
    if (kFields.count(key) == 0) return Error(Errc::kParse, where + ": unknown field '" + key.substr(0, 64) + "'");
  }
  Account a;
  auto name = GetString(j, "name");
  if (!name) return name.error().Wrap(where);
  a.name = *name;
  auto role_text = GetString(j, "role");
  if (!role_text) return role_text.error().Wrap(where);
  auto role = ParseRole(*role_text);
  if (!role) return Error(Errc::kParse, where + ": field 'role': unknown role");
  a.role = *role;
  auto hash = GetString(j, "password_hash");
  if (!hash) return hash.error().Wrap(where);
  a.password_hash = *hash;
  auto created = GetString(j, "created");
  if (!created) return created.error().Wrap(where);
  auto t = ParseTimestamp(*created);
  if (!t) return t.error().Wrap(where + ": field 'created'");
  a.created = *t;
  auto disabled = GetBool(j, "disabled");
  if (!disabled) return disabled.error().Wrap(where);
  a.disabled = *disabled;
  auto ok = CheckAccount(a);
  if (!ok) return ok.error().Wrap(where);
  return a;
}

}  // namespace

// --- in memory ---

Expected<std::optional<Account>> InMemoryAccountRepository::Find(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = accounts_.find(name);
  if (it == accounts_.end()) return std::optional<Account>{};
  return std::optional<Account>(it->second);
}

Expected<std::vector<Account>> InMemoryAccountRepository::List() const {
  std::lock_guard lock(mu_);
  return Values(accounts_);
}

Expected<std::size_t> InMemoryAccountRepository::Count() const {
  std::lock_guard lock(mu_);
  return accounts_.size();
}

Status InMemoryAccountRepository::Create(const Account& account) {
  std::lock_guard lock(mu_);
  return CreateIn(accounts_, account);
}

Status InMemoryAccountRepository::CreateFirst(const Account& account) {
  std::lock_guard lock(mu_);
  if (!accounts_.empty()) return Error(Errc::kPolicy, "setup is done: accounts already exist");
  return CreateIn(accounts_, account);
}

Status InMemoryAccountRepository::Update(const Account& account) {
  std::lock_guard lock(mu_);
  return UpdateIn(accounts_, account);
}

// --- JSON file ---

Expected<std::unique_ptr<JsonFileAccountRepository>> JsonFileAccountRepository::Open(std::filesystem::path path) {
  std::unique_ptr<JsonFileAccountRepository> repo(new JsonFileAccountRepository(path));
  const std::string file = path.string();
  std::error_code ec;
  bool exists = std::filesystem::exists(path, ec);
  if (ec) return Error(Errc::kIo, file + ": " + ec.message());
  if (!exists) return repo;
  auto text = ReadFileBounded(path, kMaxFileBytes);
  if (!text) return text.error().Wrap(file);
  auto json = ParseJson(*text);
  if (!json) return json.error().Wrap(file);
  const Json& root = *json;
  if (!root.is_object()) return Error(Errc::kParse, file + ": not a JSON object");
  for (const auto& [key, value] : root.items()) {
    if (key != "version" && key != "accounts") {
      return Error(Errc::kParse, file + ": unknown field '" + key.substr(0, 64) + "'");
    }
  }
  auto version = GetInt(root, "version");
  if (!version) return version.error().Wrap(file);
  if (*version != 1) return Error(Errc::kParse, file + ": unsupported version " + std::to_string(*version));
  auto list = GetArray(root, "accounts");
  if (!list) return list.error().Wrap(file);
  if ((*list)->size() > kMaxAccounts) {
    return Error(Errc::kLimit, file + ": more than " + std::to_string(kMaxAccounts) + " accounts");
  }
  std::size_t index = 0;
  for (const Json& item : **list) {
    auto account = AccountFromJson(item, index++);
    if (!account) return account.error().Wrap(file);
    if (repo->accounts_.count(account->name) != 0) {
      return Error(Errc::kParse, file + ": account '" + account->name + "' listed twice");
    }
    repo->accounts_.emplace(account->name, std::move(*account));
  }
  return repo;
}

Status JsonFileAccountRepository::Save(const AccountMap& accounts) {
  Json list = Json::array();
  for (const auto& [name, a] : accounts) {
    Json j = Json::object();
    j["name"] = a.name;
    j["role"] = std::string(RoleName(a.role));
    j["password_hash"] = a.password_hash;
    j["created"] = FormatTimestamp(a.created);
    j["disabled"] = a.disabled;
    list.push_back(std::move(j));
  }
  Json root = Json::object();
  root["version"] = 1;
  root["accounts"] = std::move(list);
  std::string text;
  try {
    text = root.dump(2) + "\n";
  } catch (const std::exception& e) {
    return Error(Errc::kInternal, path_.string() + ": cannot serialise: " + e.what());
  }
  auto st = WriteFileAtomic(path_, text, 0600);
  if (!st) return st.error().Wrap(path_.string());
  return OkStatus();
}

Expected<std::optional<Account>> JsonFileAccountRepository::Find(std::string_view name) const {
  std::lock_guard lock(mu_);
  auto it = accounts_.find(name);
  if (it == accounts_.end()) return std::optional<Account>{};
  return std::optional<Account>(it->second);
}

Expected<std::vector<Account>> JsonFileAccountRepository::List() const {
  std::lock_guard lock(mu_);
  return Values(accounts_);
}

Expected<std::size_t> JsonFileAccountRepository::Count() const {
  std::lock_guard lock(mu_);
  return accounts_.size();
}

Status JsonFileAccountRepository::Create(const Account& account) {
  std::lock_guard lock(mu_);
  if (accounts_.size() >= kMaxAccounts) return Error(Errc::kLimit, path_.string() + ": account limit reached");
  AccountMap next = accounts_;
  UPK_TRY(CreateIn(next, account));
  UPK_TRY(Save(next));
  accounts_ = std::move(next);
  return OkStatus();
}

Status JsonFileAccountRepository::CreateFirst(const Account& account) {
  std::lock_guard lock(mu_);
  if (!accounts_.empty()) return Error(Errc::kPolicy, "setup is done: accounts already exist");
  AccountMap next;
  UPK_TRY(CreateIn(next, account));
  UPK_TRY(Save(next));
  accounts_ = std::move(next);
  return OkStatus();
}

Status JsonFileAccountRepository::Update(const Account& account) {
  std::lock_guard lock(mu_);
  AccountMap next = accounts_;
  UPK_TRY(UpdateIn(next, account));
  UPK_TRY(Save(next));
  accounts_ = std::move(next);
  return OkStatus();
}

}  // namespace upkeep::web
