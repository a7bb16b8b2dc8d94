// RealFs: each operation on a real directory, and the errors that name the path.
#include <sys/stat.h>

#include <gtest/gtest.h>

#include "test_util.hpp"
#include "upkeep/agent/fs.hpp"

namespace upkeep::agent {
namespace {
namespace fs = std::filesystem;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;

TEST(RealFsTest, WriteFileAtomicReadBackWithModeAndNoTempLeft) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  ASSERT_TRUE(rfs.WriteFileAtomic(dir.path() / "a", "hello", 0600));
  ASSERT_TRUE(rfs.WriteFileAtomic(dir.path() / "a", "world!", 0600));
  auto data = rfs.ReadFile(dir.path() / "a", 100);
  ASSERT_TRUE(data);
  EXPECT_EQ(*data, "world!");
  struct stat st;
  ASSERT_EQ(::stat((dir.path() / "a").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);
  auto names = rfs.ListDir(dir.path());
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, std::vector<std::string>{"a"});
}

TEST(RealFsTest, ReadFileBoundedAndMissing) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  Spit(dir.path() / "big", std::string(100, 'x'));
  auto r = rfs.ReadFile(dir.path() / "big", 99);
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kLimit);
  EXPECT_NE(r.error().message().find("big"), std::string::npos);
  auto m = rfs.ReadFile(dir.path() / "missing", 99);
  ASSERT_FALSE(m);
  EXPECT_EQ(m.error().code(), Errc::kNotFound);
  EXPECT_NE(m.error().message().find("missing"), std::string::npos);
}

TEST(RealFsTest, ExistsDoesNotFollowFinalSymlink) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  fs::create_symlink("nowhere", dir.path() / "dangling");
  EXPECT_TRUE(*rfs.Exists(dir.path() / "dangling"));
  EXPECT_FALSE(*rfs.Exists(dir.path() / "nothing"));
  EXPECT_FALSE(*rfs.Exists(dir.path() / "nothing" / "below"));
}

TEST(RealFsTest, ListDirSortedAndMissing) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  for (const char* n : {"c", "a", "b"}) Spit(dir.path() / n, n);
  auto names = rfs.ListDir(dir.path());
  ASSERT_TRUE(names);
  EXPECT_EQ(*names, (std::vector<std::string>{"a", "b", "c"}));
  auto missing = rfs.ListDir(dir.path() / "nope");
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_NE(missing.error().message().find("nope"), std::string::npos);
}

TEST(RealFsTest, AppendFileKeepsExistingSizeAndAppends) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  Spit(dir.path() / "log", "abc");
  auto f = rfs.OpenForAppend(dir.path() / "log");
  ASSERT_TRUE(f);
  EXPECT_EQ((*f)->size(), 3u);
  ASSERT_TRUE((*f)->Append("def"));
  ASSERT_TRUE((*f)->Sync());
  EXPECT_EQ((*f)->size(), 6u);
  EXPECT_EQ(Slurp(dir.path() / "log"), "abcdef");
  EXPECT_EQ(*rfs.FileSize(dir.path() / "log"), 6u);
  auto bad = rfs.OpenForAppend(dir.path() / "no" / "log");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("no/log"), std::string::npos);
}

TEST(RealFsTest, WritableFileTruncatesWritesAndClosesIdempotently) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  Spit(dir.path() / "img", "old content that is long");
  auto f = rfs.OpenForWrite(dir.path() / "img", 0640);
  ASSERT_TRUE(f);
  std::string data = "new";
  ASSERT_TRUE((*f)->Write(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(data.data()), data.size())));
  ASSERT_TRUE((*f)->Sync());
  ASSERT_TRUE((*f)->Close());
  ASSERT_TRUE((*f)->Close());
  EXPECT_FALSE((*f)->Write(std::span<const std::uint8_t>()));
  EXPECT_EQ(Slurp(dir.path() / "img"), "new");
}

TEST(RealFsTest, TruncateRenameRemove) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  Spit(dir.path() / "f", "123456");
  ASSERT_TRUE(rfs.Truncate(dir.path() / "f", 2));
  EXPECT_EQ(Slurp(dir.path() / "f"), "12");
  ASSERT_TRUE(rfs.Rename(dir.path() / "f", dir.path() / "g"));
  EXPECT_FALSE(fs::exists(dir.path() / "f"));
  EXPECT_EQ(Slurp(dir.path() / "g"), "12");
  auto bad = rfs.Rename(dir.path() / "f", dir.path() / "h");
  ASSERT_FALSE(bad);
  EXPECT_EQ(bad.error().code(), Errc::kNotFound);
  ASSERT_TRUE(rfs.Remove(dir.path() / "g"));
  ASSERT_TRUE(rfs.Remove(dir.path() / "g"));  // absent is ok
  fs::create_directory(dir.path() / "empty");
  ASSERT_TRUE(rfs.Remove(dir.path() / "empty"));
  EXPECT_FALSE(fs::exists(dir.path() / "empty"));
  fs::create_directories(dir.path() / "full" / "sub");
  EXPECT_FALSE(rfs.Remove(dir.path() / "full"));  // not empty
  ASSERT_TRUE(rfs.RemoveAll(dir.path() / "full"));
  ASSERT_TRUE(rfs.RemoveAll(dir.path() / "full"));
  EXPECT_FALSE(fs::exists(dir.path() / "full"));
  EXPECT_FALSE(rfs.Truncate(dir.path() / "missing", 0));
}

TEST(RealFsTest, CreateDirectoriesWithModeAndOverFile) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  ASSERT_TRUE(rfs.CreateDirectories(dir.path() / "a" / "b", 0700));
  ASSERT_TRUE(rfs.CreateDirectories(dir.path() / "a" / "b", 0700));
  struct stat st;
  ASSERT_EQ(::stat((dir.path() / "a" / "b").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0700u);
  Spit(dir.path() / "file", "x");
  EXPECT_FALSE(rfs.CreateDirectories(dir.path() / "file", 0700));
  EXPECT_FALSE(rfs.CreateDirectories(dir.path() / "file" / "sub", 0700));
}

TEST(RealFsTest, ReplaceSymlinkSwitchesAtomically) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  fs::create_directory(dir.path() / "slot-a");
  fs::create_directory(dir.path() / "slot-b");
  ASSERT_TRUE(rfs.ReplaceSymlink(dir.path() / "current", "slot-a"));
  EXPECT_EQ(*rfs.ReadSymlink(dir.path() / "current"), fs::path("slot-a"));
  ASSERT_TRUE(rfs.ReplaceSymlink(dir.path() / "current", "slot-b"));
  EXPECT_EQ(*rfs.ReadSymlink(dir.path() / "current"), fs::path("slot-b"));
  auto names = rfs.ListDir(dir.path());
  EXPECT_EQ(names->size(), 3u);  // no temp link left
  auto bad = rfs.ReadSymlink(dir.path() / "slot-a");
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("slot-a"), std::string::npos);
}

TEST(RealFsTest, SyncOnMissingPathsFails) {
  TempDir dir;
  RealFs& rfs = RealFs::Instance();
  ASSERT_TRUE(rfs.SyncDir(dir.path()));
  EXPECT_FALSE(rfs.SyncDir(dir.path() / "nope"));
  EXPECT_FALSE(rfs.SyncFile(dir.path() / "nope"));
  EXPECT_FALSE(rfs.FileSize(dir.path() / "nope"));
  Spit(dir.path() / "f", "x");
  EXPECT_TRUE(rfs.SyncFile(dir.path() / "f"));
}

}  // namespace
}  // namespace upkeep::agent
