// Roles and permissions, account names, the in-memory repository (also from 4 threads) and the
// JSON file repository (round trip, 0600, atomic, corrupt and hostile files refused by name).
#include <gtest/gtest.h>
#include <sys/stat.h>

#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <thread>

#include "upkeep/common/files.hpp"
#include "upkeep/web/accounts.hpp"
#include "web_test_support.hpp"

namespace upkeep::web {
namespace {

namespace fs = std::filesystem;
using testing::T0;

const std::string kHash = "$argon2id$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNo";

Account Make(std::string name, Role role = Role::kSupport) {
  Account a;
  a.name = std::move(name);
  a.role = role;
  a.password_hash = kHash;
  a.created = T0();
  return a;
}

class TempDir {
 public:
  TempDir() {
    path_ = fs::temp_directory_path() / ("upkeep-web-test-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() { fs::remove_all(path_); }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

void WriteText(const fs::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::binary);
  out << text;
}

TEST(Roles, OrderNamesAndForbiddenReason) {
  EXPECT_TRUE(Permits(Role::kAdmin, Role::kSupport));
  EXPECT_TRUE(Permits(Role::kSupport, Role::kReadOnly));
  EXPECT_TRUE(Permits(Role::kReadOnly, Role::kReadOnly));
  EXPECT_FALSE(Permits(Role::kSupport, Role::kAdmin));
  EXPECT_FALSE(Permits(Role::kReadOnly, Role::kSupport));
  for (Role r : {Role::kReadOnly, Role::kSupport, Role::kAdmin}) EXPECT_EQ(ParseRole(RoleName(r)), r);
  EXPECT_FALSE(ParseRole("root").has_value());
  auto st = CheckPermission("bob", Role::kSupport, Role::kAdmin);
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kPolicy);
  EXPECT_EQ(st.error().message(), "forbidden: needs role 'admin'; account 'bob' has 'support'");
  EXPECT_TRUE(CheckPermission("bob", Role::kAdmin, Role::kAdmin).ok());
}

TEST(Accounts, NameRules) {
  EXPECT_TRUE(CheckAccountName("alice").ok());
  EXPECT_TRUE(CheckAccountName("ops-team_2.eu").ok());
  EXPECT_FALSE(CheckAccountName("").ok());
  EXPECT_FALSE(CheckAccountName(std::string(65, 'a')).ok());
  EXPECT_FALSE(CheckAccountName("Alice").ok());
  EXPECT_FALSE(CheckAccountName("-alice").ok());
  EXPECT_FALSE(CheckAccountName("al ice").ok());
  EXPECT_FALSE(CheckAccountName("al/ice").ok());
}

void ExerciseRepository(AccountRepository& repo) {
  EXPECT_EQ(*repo.Count(), 0u);
  ASSERT_TRUE(repo.CreateFirst(Make("root", Role::kAdmin)).ok());
  auto second_first = repo.CreateFirst(Make("other", Role::kAdmin));
  ASSERT_FALSE(second_first.ok());
  EXPECT_EQ(second_first.error().code(), Errc::kPolicy);
  ASSERT_TRUE(repo.Create(Make("bob")).ok());
  auto dup = repo.Create(Make("bob"));
  ASSERT_FALSE(dup.ok());
  EXPECT_EQ(dup.error().code(), Errc::kPolicy);
  EXPECT_NE(dup.error().message().find("'bob'"), std::string::npos);
  EXPECT_FALSE(repo.Create(Make("Bad Name")).ok());
  Account no_hash = Make("carol");
  no_hash.password_hash = "plaintext";
  EXPECT_FALSE(repo.Create(no_hash).ok());
  Account bob = Make("bob", Role::kReadOnly);
  bob.disabled = true;
  ASSERT_TRUE(repo.Update(bob).ok());
  auto found = repo.Find("bob");
  ASSERT_TRUE(found.ok() && found->has_value());
  EXPECT_TRUE((*found)->disabled);
  EXPECT_EQ((*found)->role, Role::kReadOnly);
  EXPECT_EQ((*found)->created, T0());
  EXPECT_EQ(repo.Update(Make("nobody")).error().code(), Errc::kNotFound);
  auto missing = repo.Find("nobody");
  ASSERT_TRUE(missing.ok());
  EXPECT_FALSE(missing->has_value());
  auto list = repo.List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "bob");
  EXPECT_EQ((*list)[1].name, "root");
}

TEST(InMemoryRepository, Contract) {
  InMemoryAccountRepository repo;
  ExerciseRepository(repo);
}

TEST(InMemoryRepository, ConcurrentFromFourThreads) {
  InMemoryAccountRepository repo;
  std::vector<std::thread> threads;
  std::vector<int> errors(4, 0);
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (int i = 0; i < 100; ++i) {
        Account a = Make("u" + std::to_string(t) + "-" + std::to_string(i));
        if (!repo.Create(a).ok()) ++errors[t];
        a.disabled = true;
        if (!repo.Update(a).ok()) ++errors[t];
        auto f = repo.Find(a.name);
        if (!f.ok() || !f->has_value() || !(*f)->disabled) ++errors[t];
        (void)repo.List();
        (void)repo.Count();
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(errors, (std::vector<int>{0, 0, 0, 0}));
  EXPECT_EQ(*repo.Count(), 400u);
}

TEST(InMemoryRepository, OnlyOneFirstAccountUnderRace) {
  InMemoryAccountRepository repo;
  std::atomic<int> created{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      if (repo.CreateFirst(Make("admin" + std::to_string(t), Role::kAdmin)).ok()) ++created;
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(created.load(), 1);
  EXPECT_EQ(*repo.Count(), 1u);
}

TEST(JsonFileRepository, ContractRoundTripAndMode0600) {
  TempDir dir;
  fs::path file = dir.path() / "accounts.json";
  {
    auto repo = JsonFileAccountRepository::Open(file);
    ASSERT_TRUE(repo.ok()) << repo.error().message();
    EXPECT_FALSE(fs::exists(file));  // created on the first change
    ExerciseRepository(**repo);
  }
  struct stat st {};
  ASSERT_EQ(::stat(file.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto reopened = JsonFileAccountRepository::Open(file);
  ASSERT_TRUE(reopened.ok()) << reopened.error().message();
  auto list = (*reopened)->List();
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].name, "bob");
  EXPECT_TRUE((*list)[0].disabled);
  EXPECT_EQ((*list)[0].role, Role::kReadOnly);
  EXPECT_EQ((*list)[0].password_hash, kHash);
  EXPECT_EQ((*list)[1].role, Role::kAdmin);
  EXPECT_EQ((*list)[1].created, T0());
  // No temp files left behind by the atomic writes.
  int files = 0;
  for (const auto& e : fs::directory_iterator(dir.path())) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 1);
}

TEST(JsonFileRepository, FailedWriteChangesNothing) {
  TempDir dir;
  fs::path file = dir.path() / "accounts.json";
  auto repo = JsonFileAccountRepository::Open(file);
  ASSERT_TRUE(repo.ok());
  ASSERT_TRUE((*repo)->Create(Make("alice")).ok());
  std::string before = *ReadFileBounded(file, 1 << 20);
  // A non-empty directory in the file's place makes the atomic rename fail (even for root).
  fs::rename(file, dir.path() / "saved");
  fs::create_directories(file / "blocker");
  auto st = (*repo)->Create(Make("bob"));
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("accounts.json"), std::string::npos);
  EXPECT_FALSE((*repo)->Find("bob")->has_value());  // memory unchanged too
  Account alice = Make("alice", Role::kAdmin);
  EXPECT_FALSE((*repo)->Update(alice).ok());
  EXPECT_EQ((*(*repo)->Find("alice"))->role, Role::kSupport);
  fs::remove_all(file);
  fs::rename(dir.path() / "saved", file);
  EXPECT_EQ(*ReadFileBounded(file, 1 << 20), before);
  auto reopened = JsonFileAccountRepository::Open(file);
  ASSERT_TRUE(reopened.ok());
  EXPECT_EQ(*(*reopened)->Count(), 1u);
}

struct BadFile {
  const char* label;
  std::string text;
};

TEST(JsonFileRepository, CorruptFilesRefusedNamingTheFile) {
  TempDir dir;
  const std::string good_account =
      R"({"name":"alice","role":"admin","password_hash":")" + kHash + R"(","created":"2030-01-01T00:00:00Z","disabled":false})";
  std::vector<BadFile> cases = {
      {"not json", "{not json"},
      {"array root", "[]"},
      {"wrong version", R"({"version":2,"accounts":[]})"},
      {"unknown top field", R"({"version":1,"accounts":[],"x":1})"},
      {"no accounts", R"({"version":1})"},
      {"duplicate key", R"({"version":1,"version":1,"accounts":[]})"},
      {"account not object", R"({"version":1,"accounts":[1]})"},
      {"unknown account field",
       R"({"version":1,"accounts":[{"name":"alice","role":"admin","password_hash":")" + kHash +
           R"(","created":"2030-01-01T00:00:00Z","disabled":false,"password":"x"}]})"},
      {"bad role", R"({"version":1,"accounts":[{"name":"alice","role":"root","password_hash":")" + kHash +
                       R"(","created":"2030-01-01T00:00:00Z","disabled":false}]})"},
      {"bad hash", R"({"version":1,"accounts":[{"name":"alice","role":"admin","password_hash":"plain",)"
                   R"("created":"2030-01-01T00:00:00Z","disabled":false}]})"},
      {"bad name", R"({"version":1,"accounts":[{"name":"../x","role":"admin","password_hash":")" + kHash +
                       R"(","created":"2030-01-01T00:00:00Z","disabled":false}]})"},
      {"bad time", R"({"version":1,"accounts":[{"name":"alice","role":"admin","password_hash":")" + kHash +
                       R"(","created":"yesterday","disabled":false}]})"},
      {"missing disabled", R"({"version":1,"accounts":[{"name":"alice","role":"admin","password_hash":")" + kHash +
                               R"(","created":"2030-01-01T00:00:00Z"}]})"},
      {"listed twice", R"({"version":1,"accounts":[)" + good_account + "," + good_account + "]}"},
  };
  for (const auto& c : cases) {
    fs::path file = dir.path() / "accounts.json";
    WriteText(file, c.text);
    auto repo = JsonFileAccountRepository::Open(file);
    ASSERT_FALSE(repo.ok()) << c.label;
    EXPECT_NE(repo.error().message().find("accounts.json"), std::string::npos) << c.label << ": " << repo.error().message();
  }
  fs::path file = dir.path() / "accounts.json";
  WriteText(file, R"({"version":1,"accounts":[)" + good_account + "]}");
  auto ok = JsonFileAccountRepository::Open(file);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(*(*ok)->Count(), 1u);
}

TEST(JsonFileRepository, OversizeFileRefused) {
  TempDir dir;
  fs::path file = dir.path() / "accounts.json";
  WriteText(file, std::string(JsonFileAccountRepository::kMaxFileBytes + 1, ' '));
  auto repo = JsonFileAccountRepository::Open(file);
  ASSERT_FALSE(repo.ok());
  EXPECT_EQ(repo.error().code(), Errc::kLimit);
  EXPECT_NE(repo.error().message().find("accounts.json"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::web
