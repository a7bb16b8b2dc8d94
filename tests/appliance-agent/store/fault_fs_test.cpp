// FaultFs: each rule of the power-loss model, crash points, torn writes.
#include <gtest/gtest.h>

#include "test_util.hpp"
#include "upkeep/agent/fault_fs.hpp"

namespace upkeep::agent {
namespace {
namespace fs = std::filesystem;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;

std::span<const std::uint8_t> B(std::string_view s) {
  return {reinterpret_cast<const std::uint8_t*>(s.data()), s.size()};
}

TEST(FaultFsTest, PreexistingFilesAreDurable) {
  TempDir dir;
  Spit(dir.path() / "old", "kept");
  fs::create_directory(dir.path() / "d");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "old"), "kept");
  EXPECT_TRUE(fs::is_directory(dir.path() / "d"));
}

TEST(FaultFsTest, UnsyncedAppendRevertsToLastSync) {
  TempDir dir;
  Spit(dir.path() / "log", "");
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForAppend(dir.path() / "log");
    ASSERT_TRUE(f);
    ASSERT_TRUE((*f)->Append("abc"));
    ASSERT_TRUE((*f)->Sync());
    ASSERT_TRUE((*f)->Append("def"));
    EXPECT_EQ(Slurp(dir.path() / "log"), "abcdef");
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "log"), "abc");
}

TEST(FaultFsTest, NeverSyncedFileInUnsyncedDirVanishes) {
  TempDir dir;
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForAppend(dir.path() / "new");
    ASSERT_TRUE((*f)->Append("data"));
    ASSERT_TRUE((*f)->Sync());  // content synced, but the directory entry is not
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_FALSE(fs::exists(dir.path() / "new"));
}

TEST(FaultFsTest, NeverSyncedFileInSyncedDirSurvivesEmpty) {
  TempDir dir;
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForAppend(dir.path() / "new");
    ASSERT_TRUE((*f)->Append("data"));
    ASSERT_TRUE(ffs.SyncDir(dir.path()));
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  ASSERT_TRUE(fs::exists(dir.path() / "new"));
  EXPECT_EQ(Slurp(dir.path() / "new"), "");
}

TEST(FaultFsTest, SyncedFileInSyncedDirSurvives) {
  TempDir dir;
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForWrite(dir.path() / "img", 0600);
    ASSERT_TRUE((*f)->Write(B("image")));
    ASSERT_TRUE((*f)->Sync());
    ASSERT_TRUE((*f)->Close());
    ASSERT_TRUE(ffs.SyncDir(dir.path()));
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "img"), "image");
  EXPECT_EQ(fs::status(dir.path() / "img").permissions() & fs::perms::all, fs::perms::owner_read | fs::perms::owner_write);
}

TEST(FaultFsTest, SyncFileByPathCountsAsSync) {
  TempDir dir;
  Spit(dir.path() / "f", "v1");
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForWrite(dir.path() / "f");
    ASSERT_TRUE((*f)->Write(B("v2")));
  }
  ASSERT_TRUE(ffs.SyncFile(dir.path() / "f"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "f"), "v2");
}

TEST(FaultFsTest, OverwriteWithoutSyncRevertsToOldContent) {
  TempDir dir;
  Spit(dir.path() / "f", "old");
  FaultFs ffs(dir.path());
  {
    auto f = ffs.OpenForWrite(dir.path() / "f");
    ASSERT_TRUE((*f)->Write(B("new content")));
    ASSERT_TRUE((*f)->Close());
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "f"), "old");
}

TEST(FaultFsTest, TruncateWithoutSyncReverts) {
  TempDir dir;
  Spit(dir.path() / "f", "123456");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.Truncate(dir.path() / "f", 2));
  EXPECT_EQ(Slurp(dir.path() / "f"), "12");
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "f"), "123456");
  ASSERT_TRUE(ffs.Truncate(dir.path() / "f", 2));
  ASSERT_TRUE(ffs.SyncFile(dir.path() / "f"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "f"), "12");
}

TEST(FaultFsTest, RenameWithoutDirSyncIsUndone) {
  TempDir dir;
  Spit(dir.path() / "a", "A");
  Spit(dir.path() / "b", "B");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.Rename(dir.path() / "a", dir.path() / "b"));
  EXPECT_FALSE(fs::exists(dir.path() / "a"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "a"), "A");
  EXPECT_EQ(Slurp(dir.path() / "b"), "B");
  ASSERT_TRUE(ffs.Rename(dir.path() / "a", dir.path() / "b"));
  ASSERT_TRUE(ffs.SyncDir(dir.path()));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_FALSE(fs::exists(dir.path() / "a"));
  EXPECT_EQ(Slurp(dir.path() / "b"), "A");
}

TEST(FaultFsTest, RemoveWithoutDirSyncIsUndone) {
  TempDir dir;
  Spit(dir.path() / "a", "A");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.Remove(dir.path() / "a"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "a"), "A");
  ASSERT_TRUE(ffs.Remove(dir.path() / "a"));
  ASSERT_TRUE(ffs.SyncDir(dir.path()));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_FALSE(fs::exists(dir.path() / "a"));
}

TEST(FaultFsTest, RemoveAllWithoutDirSyncIsUndone) {
  TempDir dir;
  fs::create_directories(dir.path() / "t" / "u");
  Spit(dir.path() / "t" / "u" / "f", "deep");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.RemoveAll(dir.path() / "t"));
  EXPECT_FALSE(fs::exists(dir.path() / "t"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "t" / "u" / "f"), "deep");
}

TEST(FaultFsTest, NewDirectorySurvivesOnlyIfParentSynced) {
  TempDir dir;
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.CreateDirectories(dir.path() / "x" / "y", 0700));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_FALSE(fs::exists(dir.path() / "x"));
  ASSERT_TRUE(ffs.CreateDirectories(dir.path() / "x" / "y", 0700));
  ASSERT_TRUE(ffs.SyncDir(dir.path()));  // x survives, y (x not synced) does not
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_TRUE(fs::is_directory(dir.path() / "x"));
  EXPECT_FALSE(fs::exists(dir.path() / "x" / "y"));
}

TEST(FaultFsTest, WriteFileAtomicIsDurableOnReturn) {
  TempDir dir;
  Spit(dir.path() / "doc", "v1");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.WriteFileAtomic(dir.path() / "doc", "v2", 0600));
  ASSERT_TRUE(ffs.WriteFileAtomic(dir.path() / "fresh", "new", 0600));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "doc"), "v2");
  EXPECT_EQ(Slurp(dir.path() / "fresh"), "new");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 2);
}

TEST(FaultFsTest, ReplaceSymlinkIsDurableOnReturnAndFollowedInPaths) {
  TempDir dir;
  fs::create_directory(dir.path() / "slot-a");
  fs::create_directory(dir.path() / "slot-b");
  fs::create_directory_symlink("slot-a", dir.path() / "current");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.ReplaceSymlink(dir.path() / "current", "slot-b"));
  // Writing through the link lands in slot-b, and the model follows it.
  ASSERT_TRUE(ffs.WriteFileAtomic(dir.path() / "current" / "f", "in b"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(fs::read_symlink(dir.path() / "current"), fs::path("slot-b"));
  EXPECT_EQ(Slurp(dir.path() / "slot-b" / "f"), "in b");
  EXPECT_FALSE(fs::exists(dir.path() / "slot-a" / "f"));
}

TEST(FaultFsTest, CrashAfterFailsEveryLaterOperation) {
  TempDir dir;
  FaultFs ffs(dir.path());
  ffs.CrashAfter(2);
  ASSERT_TRUE(ffs.CreateDirectories(dir.path() / "a"));
  ASSERT_TRUE(ffs.SyncDir(dir.path()));
  EXPECT_EQ(ffs.operations(), 2u);
  EXPECT_FALSE(ffs.crashed());
  auto st = ffs.Remove(dir.path() / "a");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::kIo);
  EXPECT_EQ(st.error().message(), "injected crash at operation 3 (remove " + (dir.path() / "a").string() + ")");
  EXPECT_TRUE(ffs.crashed());
  EXPECT_TRUE(fs::exists(dir.path() / "a"));  // the refused op did nothing
  EXPECT_FALSE(ffs.ReadFile(dir.path() / "a", 10));
  EXPECT_FALSE(ffs.Exists(dir.path()));
  EXPECT_FALSE(ffs.ListDir(dir.path()));
  EXPECT_FALSE(ffs.WriteFileAtomic(dir.path() / "b", "x"));
  EXPECT_EQ(ffs.operations(), 2u);
  ffs.Restart();
  EXPECT_FALSE(ffs.crashed());
  EXPECT_TRUE(ffs.Remove(dir.path() / "a"));
}

TEST(FaultFsTest, OpenHandlesDieWithTheFs) {
  TempDir dir;
  FaultFs ffs(dir.path());
  auto f = ffs.OpenForAppend(dir.path() / "log");
  ASSERT_TRUE(f);
  ffs.CrashAfter(1);
  ASSERT_TRUE((*f)->Append("one"));
  EXPECT_FALSE((*f)->Append("two"));
  EXPECT_FALSE((*f)->Sync());
  EXPECT_EQ(Slurp(dir.path() / "log"), "one");
}

TEST(FaultFsTest, TornWriteLeavesHalfTheBytes) {
  TempDir dir;
  FaultFs ffs(dir.path());
  ffs.SetTornWrites(true);
  auto f = ffs.OpenForAppend(dir.path() / "log");
  ASSERT_TRUE(f);
  ffs.CrashAfter(0);
  EXPECT_FALSE((*f)->Append("12345678"));
  EXPECT_EQ(Slurp(dir.path() / "log"), "1234");
  auto w = ffs.OpenForWrite(dir.path() / "w");
  EXPECT_FALSE(w);
}

TEST(FaultFsTest, PathsOutsideTheRootAreRefused) {
  TempDir dir;
  TempDir other;
  FaultFs ffs(dir.path());
  auto st = ffs.WriteFileAtomic(other.path() / "x", "data");
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(other.path() / "x"));
  EXPECT_FALSE(ffs.CreateDirectories("relative/dir"));
  EXPECT_FALSE(ffs.Rename(dir.path() / "x", dir.path() / ".." / "y"));
}

// Every crash point of WriteFileAtomic, with and without power loss: the file holds the old
// or the new content, never anything else; after power loss no temp file is visible either.
TEST(FaultFsTest, WriteFileAtomicCrashPointsNeverTear) {
  std::uint64_t count = 0;
  {
    TempDir dir;
    Spit(dir.path() / "doc", "old");
    FaultFs ffs(dir.path());
    ASSERT_TRUE(ffs.WriteFileAtomic(dir.path() / "doc", "new-content"));
    count = ffs.operations();
  }
  EXPECT_GE(count, 5u);
  for (int power = 0; power < 2; ++power) {
    for (std::uint64_t i = 0; i <= count; ++i) {
      TempDir dir;
      Spit(dir.path() / "doc", "old");
      FaultFs ffs(dir.path());
      ffs.SetTornWrites(true);
      ffs.CrashAfter(i);
      Status st = ffs.WriteFileAtomic(dir.path() / "doc", "new-content");
      EXPECT_EQ(st.ok(), i == count) << i;
      if (power) {
        ASSERT_TRUE(ffs.SimulatePowerLoss());
      } else {
        ffs.Restart();
      }
      std::string got = Slurp(dir.path() / "doc");
      EXPECT_TRUE(got == "old" || got == "new-content") << "crash " << i << " power " << power << ": " << got;
      if (st.ok()) {
        EXPECT_EQ(got, "new-content");
      }
      if (power) {
        EXPECT_EQ(std::distance(fs::directory_iterator(dir.path()), fs::directory_iterator()), 1);
      }
    }
  }
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

TEST(FaultFsTest, RenameAcrossDirsWithOnlyTargetSyncedLeavesBoth) {
  TempDir dir;
  fs::create_directory(dir.path() / "a");
  fs::create_directory(dir.path() / "b");
  Spit(dir.path() / "a" / "f", "F");
  FaultFs ffs(dir.path());
  ASSERT_TRUE(ffs.Rename(dir.path() / "a" / "f", dir.path() / "b" / "f"));
  ASSERT_TRUE(ffs.SyncDir(dir.path() / "b"));
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  EXPECT_EQ(Slurp(dir.path() / "a" / "f"), "F");
  EXPECT_EQ(Slurp(dir.path() / "b" / "f"), "F");
}

TEST(FaultFsTest, AncestorsOfTheRootPassThrough) {
  TempDir dir;
  FaultFs ffs(dir.path());
  EXPECT_TRUE(ffs.SyncDir(dir.path().parent_path()));
  EXPECT_TRUE(ffs.CreateDirectories(dir.path()));
  EXPECT_TRUE(ffs.SyncDir(dir.path()));
  EXPECT_EQ(ffs.operations(), 3u);
}

// The install handlers' "switch current" primitive: at every crash point, with or without
// power loss, `current` points at the old slot or the new one, never anywhere else.
TEST(FaultFsTest, ReplaceSymlinkCrashPoints) {
  std::uint64_t count = 0;
  {
    TempDir dir;
    fs::create_directory_symlink("slot-a", dir.path() / "current");
    FaultFs ffs(dir.path());
    ASSERT_TRUE(ffs.ReplaceSymlink(dir.path() / "current", "slot-b"));
    count = ffs.operations();
  }
  EXPECT_EQ(count, 3u);  // symlink, rename, dir sync
  for (int power = 0; power < 2; ++power) {
    for (std::uint64_t i = 0; i <= count; ++i) {
      TempDir dir;
      fs::create_directory_symlink("slot-a", dir.path() / "current");
      FaultFs ffs(dir.path());
      ffs.CrashAfter(i);
      Status st = ffs.ReplaceSymlink(dir.path() / "current", "slot-b");
      if (power) {
        ASSERT_TRUE(ffs.SimulatePowerLoss());
      } else {
        ffs.Restart();
      }
      fs::path target = fs::read_symlink(dir.path() / "current");
      EXPECT_TRUE(target == "slot-a" || target == "slot-b") << i << " " << power;
      if (st.ok()) {
        EXPECT_EQ(target, fs::path("slot-b"));
      }
      if (power && i < 2) {
        EXPECT_EQ(target, fs::path("slot-a"));  // rename not reached
      }
    }
  }
}

}  // namespace
}  // namespace upkeep::agent
