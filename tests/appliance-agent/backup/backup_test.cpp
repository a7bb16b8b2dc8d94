// Tests of the configuration backups: round trips, secrets, pruning, tampering, hostile entries,
// streaming of large files, and listing damaged files.
#include "upkeep/agent/backup.hpp"

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <fstream>
#include <iterator>

#include "backup_internal.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

class CountingRandom final : public Random {
 public:
  Bytes Generate(std::size_t n) override {
    Bytes out(n);
    for (auto& b : out) b = static_cast<std::uint8_t>(next_++ * 37 + 11);
    return out;
  }

 private:
  unsigned next_ = 0;
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void WriteAllTo(const fs::path& p, const std::string& data) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out << data;
}

class BackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::string tmpl = (fs::temp_directory_path() / "upkeep-backup-test-XXXXXX").string();
    ASSERT_NE(::mkdtemp(tmpl.data()), nullptr);
    base_ = tmpl;
    conf_ = base_ / "etc" / "upkeep";
    fs::create_directories(conf_ / "sub" / "empty");
    fs::create_directories(conf_ / "tls");
    WriteAllTo(conf_ / "settings.json", "{\"poll\": 60}\n");
    ::chmod((conf_ / "settings.json").c_str(), 0640);
    WriteAllTo(conf_ / "sub" / "hooks.conf", "pre=1\n");
    fs::create_symlink("settings.json", conf_ / "current");
    WriteAllTo(conf_ / "tls" / "key.pem", "PRIVATE KEY\n");
    WriteAllTo(conf_ / "tls" / "cert.pem", "CERT\n");
    WriteAllTo(conf_ / "licence.lic", "LICENCE\n");
    WriteAllTo(conf_ / "vault.key", "VAULTKEY\n");
    source_.paths = {conf_};
    source_.tls_key_paths = {conf_ / "tls" / "key.pem"};
    source_.licence_path = conf_ / "licence.lic";
    source_.vault_key_path = conf_ / "vault.key";
    options_.reason = "manual";
    options_.kdf = trust::KdfParams::FastForTests();
    installed_ = Json{{"software", "7.0.0"}};
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(base_, ec);
  }

  BackupStore Store(std::size_t keep = 5) { return BackupStore(base_ / "backups", keep, clock_, random_); }
  fs::path Restored(const fs::path& abs) const { return base_ / "restore" / abs.relative_path(); }
  RestoreOptions Into() const {
    RestoreOptions o;
    o.root = base_ / "restore";
    return o;
  }

  fs::path base_, conf_;
  BackupSource source_;
  BackupOptions options_;
  Json installed_;
  FakeClock clock_{SysTime{std::chrono::seconds{1795634400}}};  // 2026-11-25T19:20:00Z
  CountingRandom random_;
};

TEST_F(BackupTest, PlainRoundTripKeepsContentModesSymlinksAndEmptyDirs) {
  ::chmod((conf_ / "sub").c_str(), 0550);  // a read-only directory still gets its contents
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(info->id.size(), 21u);
  EXPECT_EQ(info->id.substr(0, 16), "20261125T192000Z");
  EXPECT_FALSE(info->encrypted);
  EXPECT_EQ(info->reason, "manual");
  EXPECT_EQ(info->installed, installed_);
  EXPECT_EQ(info->path, store.PathOf(info->id));
  EXPECT_GT(info->bytes, 0u);
  EXPECT_EQ((fs::status(info->path).permissions() & fs::perms::all), fs::perms::owner_read | fs::perms::owner_write);

  auto report = store.Restore(info->id, std::nullopt, Into());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(ReadAll(Restored(conf_ / "settings.json")), "{\"poll\": 60}\n");
  EXPECT_EQ(ReadAll(Restored(conf_ / "sub" / "hooks.conf")), "pre=1\n");
  EXPECT_EQ(fs::status(Restored(conf_ / "settings.json")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_write | fs::perms::group_read);
  EXPECT_TRUE(fs::is_symlink(Restored(conf_ / "current")));
  EXPECT_EQ(fs::read_symlink(Restored(conf_ / "current")), "settings.json");
  EXPECT_TRUE(fs::is_directory(Restored(conf_ / "sub" / "empty")));
  EXPECT_EQ(fs::status(Restored(conf_ / "sub")).permissions() & fs::perms::all,
            fs::perms::owner_read | fs::perms::owner_exec | fs::perms::group_read | fs::perms::group_exec);
  EXPECT_TRUE(fs::exists(Restored(conf_ / "tls" / "cert.pem")));
  struct stat a {
  }, b{};
  ASSERT_EQ(::stat((conf_ / "settings.json").c_str(), &a), 0);
  ASSERT_EQ(::stat(Restored(conf_ / "settings.json").c_str(), &b), 0);
  EXPECT_EQ(a.st_mtim.tv_sec, b.st_mtim.tv_sec);
  EXPECT_EQ(a.st_mtim.tv_nsec, b.st_mtim.tv_nsec);
  EXPECT_EQ(report->id, info->id);
  EXPECT_FALSE(report->restored.empty());
  // No temp files left behind.
  for (const auto& e : fs::recursive_directory_iterator(base_ / "restore"))
    EXPECT_EQ(e.path().filename().string().find(".upk-restore-"), std::string::npos) << e.path();
}

TEST_F(BackupTest, RestoreOverwritesExistingFilesInPlace) {
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  WriteAllTo(conf_ / "settings.json", "changed");
  fs::remove(conf_ / "current");
  fs::create_symlink("/nonexistent", conf_ / "current");
  auto report = store.Restore(info->id, std::nullopt, RestoreOptions{});
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(ReadAll(conf_ / "settings.json"), "{\"poll\": 60}\n");
  EXPECT_EQ(fs::read_symlink(conf_ / "current"), "settings.json");
}

TEST_F(BackupTest, PasswordRoundTripAndWrongPassword) {
  options_.password = "correct horse";
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_TRUE(info->encrypted);
  std::string file = ReadAll(info->path);
  EXPECT_EQ(file.find("poll"), std::string::npos);  // content is sealed
  EXPECT_EQ(file.find("correct horse"), std::string::npos);

  auto inspected = store.Inspect(info->id);
  ASSERT_TRUE(inspected.ok()) << inspected.error().message();
  EXPECT_TRUE(inspected->encrypted);
  EXPECT_EQ(inspected->reason, "manual");

  auto none = store.Restore(info->id, std::nullopt, Into());
  ASSERT_FALSE(none.ok());
  EXPECT_EQ(none.error().code(), Errc::kInvalidArgument);
  auto wrong = store.Restore(info->id, std::string_view("wrong horse"), Into());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);
  EXPECT_NE(wrong.error().message().find("wrong password"), std::string::npos);
  EXPECT_EQ(wrong.error().message().find("wrong horse"), std::string::npos);
  EXPECT_FALSE(fs::exists(base_ / "restore"));

  auto report = store.Restore(info->id, std::string_view("correct horse"), Into());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_EQ(ReadAll(Restored(conf_ / "settings.json")), "{\"poll\": 60}\n");
  EXPECT_EQ(fs::read_symlink(Restored(conf_ / "current")), "settings.json");
  EXPECT_TRUE(fs::is_directory(Restored(conf_ / "sub" / "empty")));
}

TEST_F(BackupTest, SecretsExcludedUnlessAsked) {
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_EQ(info->excluded.size(), 3u);
  EXPECT_EQ(info->excluded[0].kind, "tls_key");
  EXPECT_EQ(info->excluded[1].kind, "licence");
  EXPECT_EQ(info->excluded[2].kind, "vault_key");
  EXPECT_NE(info->excluded[2].reason.find("password"), std::string::npos);
  std::string file = ReadAll(info->path);
  EXPECT_EQ(file.find("PRIVATE KEY"), std::string::npos);
  EXPECT_EQ(file.find("LICENCE\n"), std::string::npos);
  EXPECT_EQ(file.find("VAULTKEY"), std::string::npos);
  auto report = store.Restore(info->id, std::nullopt, Into());
  ASSERT_TRUE(report.ok()) << report.error().message();
  EXPECT_FALSE(fs::exists(Restored(conf_ / "tls" / "key.pem")));
  EXPECT_FALSE(fs::exists(Restored(conf_ / "licence.lic")));
  EXPECT_FALSE(fs::exists(Restored(conf_ / "vault.key")));
  EXPECT_TRUE(fs::exists(Restored(conf_ / "tls" / "cert.pem")));
  EXPECT_EQ(report->not_in_backup.size(), 3u);

  options_.include_tls_keys = true;
  options_.include_licence = true;
  clock_.Advance(1s);
  auto with = store.Create(source_, options_, installed_);
  ASSERT_TRUE(with.ok()) << with.error().message();
  ASSERT_EQ(with->excluded.size(), 1u);
  EXPECT_EQ(with->excluded[0].kind, "vault_key");
  fs::remove_all(base_ / "restore");
  ASSERT_TRUE(store.Restore(with->id, std::nullopt, Into()).ok());
  EXPECT_EQ(ReadAll(Restored(conf_ / "tls" / "key.pem")), "PRIVATE KEY\n");
  EXPECT_EQ(ReadAll(Restored(conf_ / "licence.lic")), "LICENCE\n");
  EXPECT_FALSE(fs::exists(Restored(conf_ / "vault.key")));
}

TEST_F(BackupTest, SecretUnderAnotherNameIsStillExcluded) {
  // The key is configured through a symlinked directory and hard-linked elsewhere in the tree.
  fs::create_directory_symlink(conf_ / "tls", base_ / "tls-link");
  source_.tls_key_paths = {base_ / "tls-link" / "key.pem"};
  ASSERT_EQ(::link((conf_ / "tls" / "key.pem").c_str(), (conf_ / "sub" / "key-copy.pem").c_str()), 0);
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  EXPECT_EQ(ReadAll(info->path).find("PRIVATE KEY"), std::string::npos);
  ASSERT_TRUE(store.Restore(info->id, std::nullopt, Into()).ok());
  EXPECT_FALSE(fs::exists(Restored(conf_ / "tls" / "key.pem")));
  EXPECT_FALSE(fs::exists(Restored(conf_ / "sub" / "key-copy.pem")));
  EXPECT_TRUE(fs::exists(Restored(conf_ / "tls" / "cert.pem")));
}

TEST_F(BackupTest, SecretOutsideSourcePathsIsAddedWhenAsked) {
  WriteAllTo(base_ / "licence-elsewhere", "L2");
  source_.licence_path = base_ / "licence-elsewhere";
  options_.include_licence = true;
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_EQ(info->roots.size(), 2u);
  ASSERT_TRUE(store.Restore(info->id, std::nullopt, Into()).ok());
  EXPECT_EQ(ReadAll(Restored(base_ / "licence-elsewhere")), "L2");
}

TEST_F(BackupTest, VaultKeyOnlyWithPassword) {
  auto store = Store();
  options_.include_vault_key = true;
  auto refused = store.Create(source_, options_, installed_);
  ASSERT_FALSE(refused.ok());
  EXPECT_EQ(refused.error().code(), Errc::kPolicy);
  EXPECT_FALSE(fs::exists(base_ / "backups") && !fs::is_empty(base_ / "backups"));

  options_.password = "pw";
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_TRUE(store.Restore(info->id, std::string_view("pw"), Into()).ok());
  EXPECT_EQ(ReadAll(Restored(conf_ / "vault.key")), "VAULTKEY\n");
}

TEST_F(BackupTest, EmptyPasswordAndBadInputsRefused) {
  auto store = Store();
  options_.password = "";
  auto empty = store.Create(source_, options_, installed_);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);

  options_.password.reset();
  auto not_object = store.Create(source_, options_, Json::array());
  ASSERT_FALSE(not_object.ok());
  EXPECT_EQ(not_object.error().code(), Errc::kInvalidArgument);

  BackupSource missing = source_;
  missing.paths = {base_ / "nope"};
  auto nf = store.Create(missing, options_, installed_);
  ASSERT_FALSE(nf.ok());
  EXPECT_EQ(nf.error().code(), Errc::kNotFound);

  BackupSource relative = source_;
  relative.paths = {"etc/upkeep"};
  auto rel = store.Create(relative, options_, installed_);
  ASSERT_FALSE(rel.ok());
  EXPECT_EQ(rel.error().code(), Errc::kInvalidArgument);

  ASSERT_EQ(::mkfifo((conf_ / "fifo").c_str(), 0600), 0);
  auto fifo = store.Create(source_, options_, installed_);
  ASSERT_FALSE(fifo.ok());
  EXPECT_EQ(fifo.error().code(), Errc::kUnsafe);

  auto bad_id = store.Inspect("../../etc/passwd");
  ASSERT_FALSE(bad_id.ok());
  EXPECT_EQ(bad_id.error().code(), Errc::kInvalidArgument);
  auto bad_restore = store.Restore("x", std::nullopt, Into());
  ASSERT_FALSE(bad_restore.ok());
  EXPECT_EQ(bad_restore.error().code(), Errc::kInvalidArgument);
  auto absent = store.Inspect("20200101T000000Z-abcd");
  ASSERT_FALSE(absent.ok());
  EXPECT_EQ(absent.error().code(), Errc::kNotFound);
}

TEST_F(BackupTest, KeepsLastNNewestFirst) {
  auto store = Store(2);
  std::vector<std::string> ids;
  for (int i = 0; i < 4; ++i) {
    auto info = store.Create(source_, options_, installed_);
    ASSERT_TRUE(info.ok()) << info.error().message();
    ids.push_back(info->id);
    clock_.Advance(60s);
  }
  auto list = store.List();
  ASSERT_TRUE(list.ok()) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, ids[3]);
  EXPECT_EQ((*list)[1].id, ids[2]);
  EXPECT_FALSE(fs::exists(store.PathOf(ids[0])));

  // The one just made is kept even if the clock went back.
  clock_.Advance(-3600s);
  auto older = store.Create(source_, options_, installed_);
  ASSERT_TRUE(older.ok());
  EXPECT_TRUE(fs::exists(older->path));
  list = store.List();
  ASSERT_TRUE(list.ok());
  EXPECT_EQ(list->size(), 2u);
}

TEST_F(BackupTest, ProgressReachesTotal) {
  auto store = Store();
  std::uint64_t last_done = 0, last_total = 0;
  auto info = store.Create(source_, options_, installed_, [&](std::uint64_t d, std::uint64_t t) {
    last_done = d;
    last_total = t;
  });
  ASSERT_TRUE(info.ok());
  EXPECT_GT(last_total, 0u);
  EXPECT_EQ(last_done, last_total);
  RestoreOptions o = Into();
  std::uint64_t restored_done = 0;
  o.progress = [&](std::uint64_t d, std::uint64_t) { restored_done = d; };
  ASSERT_TRUE(store.Restore(info->id, std::nullopt, o).ok());
  EXPECT_EQ(restored_done, last_total);
}

// Every kind of damage, plain and sealed: refused with kVerification and nothing written.
class TamperTest : public BackupTest, public ::testing::WithParamInterface<bool> {};

TEST_P(TamperTest, EveryKindOfTamperingRefusedWithNothingWritten) {
  const bool encrypted = GetParam();
  if (encrypted) options_.password = "pw";
  std::optional<std::string_view> pw;
  if (encrypted) pw = "pw";
  WriteAllTo(conf_ / "multi-chunk.bin", std::string(150 * 1024, 'q'));  // several 64 KiB chunks
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok()) << info.error().message();
  const std::string good = ReadAll(info->path);
  const std::size_t reason_at = good.find("\"reason\":\"manual\"");
  ASSERT_NE(reason_at, std::string::npos);
  const std::size_t header_end =
      12 + (static_cast<std::uint8_t>(good[8]) << 24 | static_cast<std::uint8_t>(good[9]) << 16 |
            static_cast<std::uint8_t>(good[10]) << 8 | static_cast<std::uint8_t>(good[11]));

  auto be32 = [&](std::size_t at) {
    return std::size_t{static_cast<std::uint8_t>(good[at])} << 24 |
           std::size_t{static_cast<std::uint8_t>(good[at + 1])} << 16 |
           std::size_t{static_cast<std::uint8_t>(good[at + 2])} << 8 |
           std::size_t{static_cast<std::uint8_t>(good[at + 3])};
  };
  // Frame offsets, to cut at a chunk boundary and to reorder chunks.
  std::vector<std::size_t> frames;
  for (std::size_t at = header_end + (encrypted ? 24 : 0); at + 4 <= good.size();) {
    frames.push_back(at);
    const std::size_t len = be32(at);
    if (len == 0) break;
    at += 4 + len;
  }
  ASSERT_GE(frames.size(), 3u);
  struct Case {
    std::string name;
    std::string bytes;
    std::string says = "tampered";
  };
  std::vector<Case> cases;
  cases.push_back({"last chunk dropped", good.substr(0, frames.back()), "truncated"});
  {
    // Swap the first two (full-size) chunks.
    const std::size_t a = frames[0], b = frames[1], c = frames[2];
    cases.push_back(
        {"chunks reordered", good.substr(0, a) + good.substr(b, c - b) + good.substr(a, b - a) + good.substr(c)});
  }
  {
    std::string b = good;
    b[reason_at + 15] = 'X';  // "manual" -> "manuXl"
    cases.push_back({"header field", b});
  }
  {
    std::string b = good;
    b[header_end + (good.size() - header_end) / 2] ^= 0x01;
    cases.push_back({"middle byte", b});
  }
  {
    std::string b = good;
    b[header_end + 30] ^= 0x40;
    cases.push_back({"early body byte", b});
  }
  {
    std::string b = good;
    b[good.size() - 1] ^= 0x01;
    cases.push_back({"last byte", b});
  }
  cases.push_back({"truncated end", good.substr(0, good.size() - 7), "truncated"});
  cases.push_back({"truncated middle", good.substr(0, header_end + (good.size() - header_end) / 2), "truncated"});
  cases.push_back({"truncated after header", good.substr(0, header_end), "truncated"});
  cases.push_back({"trailing bytes", good + "extra", "after the final chunk"});
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    WriteAllTo(info->path, c.bytes);
    auto r = store.Restore(info->id, pw, Into());
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kVerification) << r.error().message();
    EXPECT_NE(r.error().message().find(c.says), std::string::npos) << r.error().message();
    EXPECT_FALSE(fs::exists(base_ / "restore"));
    auto v = VerifyBackupFile(info->path, pw);
    EXPECT_FALSE(v.ok());
  }
  WriteAllTo(info->path, good);
  EXPECT_TRUE(store.Restore(info->id, pw, Into()).ok());
}

INSTANTIATE_TEST_SUITE_P(PlainAndSealed, TamperTest, ::testing::Values(false, true));

// Hostile tar content that Create would never make, written with the internal writer.
struct HostileEntry {
  std::string name;
  unsigned type = AE_IFREG;
  std::string data;
  std::string link;  // symlink target or hard link target
  bool hardlink = false;
};

Status WriteHostile(const fs::path& out, const fs::path& root, const std::vector<HostileEntry>& entries,
                    Random& random) {
  Json header = {{"created", "2026-11-25T16:00:00Z"},
                 {"reason", "hostile"},
                 {"installed", Json::object()},
                 {"roots", Json::array({root.string()})},
                 {"excluded", Json::array()}};
  return backup_internal::WriteBackupFile(out, header, std::nullopt, trust::KdfParams::FastForTests(), random,
                                          [&](struct archive* a) -> Status {
                                            for (const auto& h : entries) {
                                              archive_entry* e = archive_entry_new();
                                              archive_entry_copy_pathname(e, h.name.c_str());
                                              archive_entry_set_filetype(e, h.type);
                                              archive_entry_set_perm(e, 0644);
                                              if (h.hardlink) archive_entry_copy_hardlink(e, h.link.c_str());
                                              if (h.type == AE_IFLNK) archive_entry_copy_symlink(e, h.link.c_str());
                                              if (h.type == AE_IFREG && !h.hardlink)
                                                archive_entry_set_size(e, static_cast<la_int64_t>(h.data.size()));
                                              if (h.type == AE_IFCHR) archive_entry_set_rdev(e, 0x0101);
                                              archive_write_header(a, e);
                                              if (!h.data.empty()) archive_write_data(a, h.data.data(), h.data.size());
                                              archive_entry_free(e);
                                            }
                                            return OkStatus();
                                          });
}

TEST_F(BackupTest, HostileEntriesRefusedBeforeAnyWrite) {
  const std::string root_rel = conf_.relative_path().string();  // "tmp/.../etc/upkeep"
  const fs::path outside = base_ / "outside";
  fs::create_directories(outside);
  struct Case {
    std::string name;
    std::vector<HostileEntry> entries;
    Errc code;
    std::string says;
  };
  std::vector<Case> cases = {
      {"dot-dot",
       {{root_rel + "/ok", AE_IFREG, "x", "", false}, {root_rel + "/../../evil", AE_IFREG, "x", "", false}},
       Errc::kUnsafe,
       "'..'"},
      {"outside roots",
       {{root_rel + "/ok", AE_IFREG, "x", "", false}, {"etc/passwd", AE_IFREG, "x", "", false}},
       Errc::kUnsafe,
       "outside the backup's source paths"},
      {"absolute outside roots", {{"/etc/shadow", AE_IFREG, "x", "", false}}, Errc::kUnsafe, "outside"},
      {"prefix trick", {{root_rel + "-evil/x", AE_IFREG, "x", "", false}}, Errc::kUnsafe, "outside"},
      {"device node",
       {{root_rel + "/ok", AE_IFREG, "x", "", false}, {root_rel + "/dev", AE_IFCHR, "", "", false}},
       Errc::kUnsafe,
       "device nodes"},
      {"fifo", {{root_rel + "/fifo", AE_IFIFO, "", "", false}}, Errc::kUnsafe, "fifos"},
      {"hard link",
       {{root_rel + "/ok", AE_IFREG, "x", "", false}, {root_rel + "/hl", AE_IFREG, "", root_rel + "/ok", true}},
       Errc::kUnsafe,
       "hard links"},
      {"through symlink",
       {{root_rel + "/link", AE_IFLNK, "", outside.string(), false},
        {root_rel + "/link/x", AE_IFREG, "pwn", "", false}},
       Errc::kUnsafe,
       "below a symlink"},
      {"long component",
       {{root_rel + "/" + std::string(300, 'a'), AE_IFREG, "x", "", false}},
       Errc::kLimit,
       "too long"},
  };
  int n = 0;
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    const fs::path file = base_ / ("hostile-" + std::to_string(n++) + ".upkbak");
    auto written = WriteHostile(file, conf_, c.entries, random_);
    ASSERT_TRUE(written.ok()) << written.error().message();
    RestoreOptions o;  // no prefix: a failure to refuse would write into the real tree
    o.root = base_ / "restore";
    auto r = RestoreBackupFile(file, std::nullopt, o);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.code) << r.error().message();
    EXPECT_NE(r.error().message().find(c.says), std::string::npos) << r.error().message();
    EXPECT_FALSE(fs::exists(base_ / "restore"));
    EXPECT_TRUE(fs::is_empty(outside));
  }
}

TEST_F(BackupTest, HostileHeadersRefused) {
  auto make = [&](const std::string& json) {
    std::string b = "UPKBAK1\n";
    const auto len = static_cast<std::uint32_t>(json.size());
    b += static_cast<char>(len >> 24);
    b += static_cast<char>(len >> 16);
    b += static_cast<char>(len >> 8);
    b += static_cast<char>(len);
    return b + json;
  };
  const fs::path f = base_ / "h.upkbak";
  const std::string roots = "\"roots\":[\"/etc/upkeep\"],\"excluded\":[],";
  const std::string common =
      "\"format\":1,\"created\":\"2026-11-25T16:00:00Z\",\"reason\":\"r\",\"installed\":{}," + roots;
  struct Case {
    std::string name;
    std::string bytes;
    Errc code;
  };
  std::vector<Case> cases = {
      {"bad magic", "NOTABACKUP", Errc::kParse},
      {"huge header length", std::string("UPKBAK1\n\x7f\xff\xff\xff", 12), Errc::kLimit},
      {"not json", make("{nope"), Errc::kParse},
      {"huge opslimit",
       make("{" + common +
            "\"encrypted\":true,\"kdf\":{\"name\":\"argon2id13\",\"salt\":\"00112233445566778899aabbccddeeff\","
            "\"opslimit\":100000,\"memlimit\":8388608,\"check\":\"" +
            std::string(64, '0') + "\"}}"),
       Errc::kLimit},
      {"huge memlimit",
       make("{" + common +
            "\"encrypted\":true,\"kdf\":{\"name\":\"argon2id13\",\"salt\":\"00112233445566778899aabbccddeeff\","
            "\"opslimit\":1,\"memlimit\":68719476736,\"check\":\"" +
            std::string(64, '0') + "\"}}"),
       Errc::kLimit},
      {"relative root",
       make("{\"format\":1,\"created\":\"2026-11-25T16:00:00Z\",\"reason\":\"r\",\"installed\":{},\"roots\":[\"etc\"],"
            "\"excluded\":[],\"encrypted\":false}"),
       Errc::kUnsafe},
      {"future format", make("{\"format\":2}"), Errc::kParse},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.name);
    WriteAllTo(f, c.bytes);
    auto r = InspectBackupFile(f);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), c.code) << r.error().message();
  }
}

TEST_F(BackupTest, ListShowsDamagedFilesWithTheirError) {
  auto store = Store();
  auto info = store.Create(source_, options_, installed_);
  ASSERT_TRUE(info.ok());
  WriteAllTo(base_ / "backups" / "20200101T000000Z-abcd.upkbak", "garbage");
  WriteAllTo(base_ / "backups" / "notes.txt", "ignored");
  WriteAllTo(base_ / "backups" / ".20300101T000000Z-abcd.upkbak.tmp-1", "ignored temp");
  auto list = store.List();
  ASSERT_TRUE(list.ok()) << list.error().message();
  ASSERT_EQ(list->size(), 2u);
  EXPECT_EQ((*list)[0].id, info->id);
  EXPECT_FALSE((*list)[0].error.has_value());
  EXPECT_EQ((*list)[1].id, "20200101T000000Z-abcd");
  ASSERT_TRUE((*list)[1].error.has_value());
  EXPECT_EQ((*list)[1].error->code(), Errc::kParse);
  EXPECT_EQ((*list)[1].bytes, 7u);

  auto empty = BackupStore(base_ / "no-such-dir", 3, clock_, random_).List();
  ASSERT_TRUE(empty.ok());
  EXPECT_TRUE(empty->empty());
}

TEST_F(BackupTest, ExportVaultKeyIsPasswordProtected) {
  const fs::path out = base_ / "vault-export.upkbak";
  auto empty = ExportVaultKey(conf_ / "vault.key", out, "", trust::KdfParams::FastForTests(), random_, clock_);
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(out));

  auto ok = ExportVaultKey(conf_ / "vault.key", out, "secret", trust::KdfParams::FastForTests(), random_, clock_);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ReadAll(out).find("VAULTKEY"), std::string::npos);
  auto info = InspectBackupFile(out);
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->encrypted);
  auto again = ExportVaultKey(conf_ / "vault.key", out, "secret", trust::KdfParams::FastForTests(), random_, clock_);
  EXPECT_FALSE(again.ok());  // never overwritten

  auto wrong = RestoreBackupFile(out, std::string_view("nope"), Into());
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kVerification);
  auto restored = RestoreBackupFile(out, std::string_view("secret"), Into());
  ASSERT_TRUE(restored.ok()) << restored.error().message();
  EXPECT_EQ(ReadAll(Restored(conf_ / "vault.key")), "VAULTKEY\n");
}

long MaxRssKiB() {
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST_F(BackupTest, LargeFileStreamsInConstantMemory) {
  constexpr std::uint64_t kSize = std::uint64_t{200} << 20;
  const fs::path big = conf_ / "big.bin";
  {
    std::ofstream out(big, std::ios::binary);
    out << "start";
    out.seekp(static_cast<std::streamoff>(kSize / 2));
    out << "middle";
    out.seekp(static_cast<std::streamoff>(kSize - 3));
    out << "end";
  }
  ASSERT_EQ(fs::file_size(big), kSize);
  const long before = MaxRssKiB();
  for (bool encrypted : {false, true}) {
    SCOPED_TRACE(encrypted ? "sealed" : "plain");
    BackupOptions o = options_;
    std::optional<std::string_view> pw;
    if (encrypted) {
      o.password = "pw";
      pw = "pw";
    }
    auto store = Store();
    auto info = store.Create(source_, o, installed_);
    ASSERT_TRUE(info.ok()) << info.error().message();
    EXPECT_GT(info->bytes, kSize);
    auto report = store.Restore(info->id, pw, Into());
    ASSERT_TRUE(report.ok()) << report.error().message();
    const fs::path restored = Restored(big);
    ASSERT_EQ(fs::file_size(restored), kSize);
    std::ifstream in(restored, std::ios::binary);
    char buf[6] = {};
    in.read(buf, 5);
    EXPECT_EQ(std::string(buf, 5), "start");
    in.seekg(static_cast<std::streamoff>(kSize / 2));
    in.read(buf, 6);
    EXPECT_EQ(std::string(buf, 6), "middle");
    fs::remove_all(base_ / "restore");
    fs::remove(info->path);
    clock_.Advance(1s);
  }
  const long delta_kib = MaxRssKiB() - before;
  std::printf("peak RSS growth over 2 x (backup + restore) of 200 MiB: %ld KiB\n", delta_kib);
  EXPECT_LT(delta_kib, 32 * 1024);
}

// Writes seed inputs for fuzz_backup_reader when UPKEEP_BACKUP_SEED_DIR is set (run by hand).
TEST_F(BackupTest, WritesFuzzSeedsWhenAsked) {
  const char* dir = std::getenv("UPKEEP_BACKUP_SEED_DIR");
  if (!dir) GTEST_SKIP() << "set UPKEEP_BACKUP_SEED_DIR to write seeds";
  auto store = Store();
  auto plain = store.Create(source_, options_, installed_);
  ASSERT_TRUE(plain.ok());
  fs::copy_file(plain->path, fs::path(dir) / "plain.upkbak", fs::copy_options::overwrite_existing);
  clock_.Advance(1s);
  options_.password = "pw";
  auto sealed = store.Create(source_, options_, installed_);
  ASSERT_TRUE(sealed.ok());
  fs::copy_file(sealed->path, fs::path(dir) / "sealed.upkbak", fs::copy_options::overwrite_existing);
  ASSERT_TRUE(WriteHostile(fs::path(dir) / "hostile-dotdot.upkbak", conf_,
                           {{conf_.relative_path().string() + "/../x", AE_IFREG, "x", "", false}}, random_)
                  .ok());
  std::string p = ReadAll(plain->path);
  WriteAllTo(fs::path(dir) / "truncated.upkbak", p.substr(0, p.size() / 2));
}

}  // namespace
}  // namespace upkeep::agent
