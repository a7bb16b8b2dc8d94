// Safe extraction against hostile packages: each is refused with an error naming the entry, and
// afterwards neither the destination nor a temporary directory exists.
#include "upkeep/packages/extract.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include "package_test_util.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;

class ExtractTest : public ::testing::Test {
 protected:
  // Builds the package (signed by key_), extracts it with key_ trusted.
  Expected<VerifyResult> Extract(const std::string& manifest_bytes, const std::vector<RawEntry>& payload) {
    WriteRawPackage(tmp_ / "p.upk", manifest_bytes, {key_}, payload);
    return ExtractPackage(tmp_ / "p.upk", tmp_ / "dest", VerifyOptions{{key_.public_key()}, 1}, {}, ExtractOptions{false});
  }
  Expected<VerifyResult> Extract(const Manifest& m, const std::vector<RawEntry>& payload) {
    return Extract(m.Serialize(), payload);
  }

  void ExpectRefusedCleanly(const Expected<VerifyResult>& r, const std::string& needle, const char* what) {
    ASSERT_FALSE(r.ok()) << what;
    EXPECT_NE(r.error().message().find(needle), std::string::npos) << what << ": " << r.error().message();
    EXPECT_EQ(r.error().ExitCode(), 1) << what << ": " << r.error().message();
    EXPECT_FALSE(fs::exists(tmp_ / "dest")) << what;
    EXPECT_EQ(ListDir(tmp_.path()), std::vector<std::string>{"p.upk"}) << what << ": temporary directory left behind";
    EXPECT_FALSE(fs::exists(tmp_.path().parent_path() / "escaped")) << what;
  }

  TempDir tmp_;
  PrivateKey key_ = PrivateKey::GenerateEd25519();
};

TEST_F(ExtractTest, ExtractsExactModesIncludingReadOnlyDirectories) {
  Manifest m = BaseManifest({DirEntry("ro", 0555), FileEntry("ro/f", "data", 0400), FileEntry("x/y/z", "deep", 0640),
                             LinkEntry("x/l", "y/z"), DirEntry("x", 0750)});
  auto r = Extract(m, {RawEntry{"payload/ro/", 'd', "", 0555, "", -1}, RawFile("payload/ro/f", "data", 0400),
                       RawFile("payload/x/y/z", "deep", 0640), RawEntry{"payload/x/l", 'l', "", 0777, "y/z", -1},
                       RawEntry{"payload/x/", 'd', "", 0750, "", -1}});
  ASSERT_TRUE(r.ok()) << r.error().message();
  auto snap = Snapshot(tmp_ / "dest");
  EXPECT_EQ(snap["ro"], "dir 0555");
  EXPECT_EQ(snap["x"], "dir 0750");     // explicit entry after its contents
  EXPECT_EQ(snap["x/y"], "dir 0755");   // implied parent
  EXPECT_EQ(snap["x/l"], "symlink -> y/z");
  EXPECT_EQ(ReadAll(tmp_ / "dest/x/l"), "deep");
  struct stat st {};
  ASSERT_EQ(::stat((tmp_ / "dest/ro/f").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0400u);
  EXPECT_EQ(ListDir(tmp_.path()), (std::vector<std::string>{"dest", "p.upk"}));
}

TEST_F(ExtractTest, RefusesAbsoluteAndDotDotPaths) {
  ExpectRefusedCleanly(Extract(BaseManifest({FileEntry("/etc/passwd", "x")}), {RawFile("/etc/passwd", "x")}),
                       "'/etc/passwd': absolute path", "absolute path in the manifest");
  ExpectRefusedCleanly(Extract(BaseManifest({FileEntry("a", "x")}), {RawFile("/etc/passwd", "x")}), "'/etc/passwd'",
                       "absolute path in the archive");
  ExpectRefusedCleanly(Extract(BaseManifest({FileEntry("a/../../escaped", "x")}), {RawFile("payload/a/../../escaped", "x")}),
                       "'a/../../escaped': contains '..'", "dotdot in the manifest");
  ExpectRefusedCleanly(Extract(BaseManifest({FileEntry("escaped", "x")}), {RawFile("payload/../../escaped", "x")}),
                       "'payload/../../escaped'", "dotdot in the archive");
}

TEST_F(ExtractTest, RefusesSymlinksLeavingTheDestination) {
  ExpectRefusedCleanly(Extract(BaseManifest({LinkEntry("l", "../escaped")}), {RawEntry{"payload/l", 'l', "", 0777, "../escaped", -1}}),
                       "symlink 'l' -> '../escaped'", "relative escape");
  ExpectRefusedCleanly(Extract(BaseManifest({LinkEntry("d/l", "/tmp")}), {RawEntry{"payload/d/l", 'l', "", 0777, "/tmp", -1}}),
                       "symlink 'd/l' -> '/tmp'", "absolute target");
  ExpectRefusedCleanly(Extract(BaseManifest({LinkEntry("s", "."), LinkEntry("l", "s/..")}),
                               {RawEntry{"payload/s", 'l', "", 0777, ".", -1}, RawEntry{"payload/l", 'l', "", 0777, "s/..", -1}}),
                       "symlink 'l' -> 's/..'", "escape through another symlink");
}

TEST_F(ExtractTest, RefusesAFileWrittenThroughASymlink) {
  // The manifest is refused before any payload is read.
  ExpectRefusedCleanly(Extract(BaseManifest({LinkEntry("l", "d"), DirEntry("d"), FileEntry("l/x", "boom")}),
                               {RawEntry{"payload/l", 'l', "", 0777, "d", -1}, RawEntry{"payload/d/", 'd', "", 0755, "", -1},
                                RawFile("payload/l/x", "boom")}),
                       "'l/x': lies below symlink 'l'", "file through symlink");
  // An archive entry claiming to be the file while the manifest has a symlink there.
  ExpectRefusedCleanly(Extract(BaseManifest({FileEntry("l", "boom")}), {RawEntry{"payload/l", 'l', "", 0777, "x", -1}}),
                       "'l': is a symlink", "symlink where a file was declared");
}

TEST_F(ExtractTest, RefusesSpecialFilesHardLinksAndSetId) {
  Manifest m = BaseManifest({FileEntry("a", "alpha"), FileEntry("b", "")});
  struct Case {
    RawEntry entry;
    const char* needle;
  };
  std::vector<Case> cases = {
      {RawEntry{"payload/b", 'h', "", 0644, "payload/a", -1}, "'b': hard link refused"},
      {RawEntry{"payload/b", 'c', "", 0644, "", -1}, "'b': character device node refused"},
      {RawEntry{"payload/b", 'b', "", 0644, "", -1}, "'b': block device node refused"},
      {RawEntry{"payload/b", 'p', "", 0644, "", -1}, "'b': FIFO refused"},
      {RawFile("payload/b", "", 04644), "'b': set-uid, set-gid or sticky bit refused"},
      {RawFile("payload/b", "", 02644), "'b': set-uid, set-gid or sticky bit refused"},
  };
  for (const auto& c : cases) {
    ExpectRefusedCleanly(Extract(m, {RawFile("payload/a", "alpha"), c.entry}), c.needle, c.needle);
  }
  // A manifest that itself asks for set-uid.
  std::string suid = R"({"name":"x","version":"1.0.0","kind":"base","payload":[{"path":"a","type":"file","size":0,"sha256":")" +
                     Sha256Hex("") + R"(","mode":2541}]})";
  ExpectRefusedCleanly(Extract(suid, {RawFile("payload/a", "", 04755)}), "mode 2541 has bits beyond 0777", "set-uid in manifest");
}

TEST_F(ExtractTest, LateFailureRemovesEverythingAlreadyWritten) {
  Manifest m = BaseManifest({DirEntry("ro", 0500), FileEntry("ro/f", "first"), FileEntry("z", "second")});
  ExpectRefusedCleanly(Extract(m, {RawEntry{"payload/ro/", 'd', "", 0500, "", -1}, RawFile("payload/ro/f", "first"),
                                   RawFile("payload/z", "secon!")}),
                       "'z': SHA-256", "digest mismatch in the last entry");
  // Truncated inside the last entry.
  WriteRawPackage(tmp_ / "p.upk", m.Serialize(), {key_},
                  {RawEntry{"payload/ro/", 'd', "", 0500, "", -1}, RawFile("payload/ro/f", "first"),
                   RawFile("payload/z", std::string(5000, 'q'))});
  auto bytes = ReadAll(tmp_ / "p.upk");
  std::ofstream(tmp_ / "p.upk", std::ios::binary | std::ios::trunc) << bytes.substr(0, bytes.find("qqqq") + 100);
  auto r = ExtractPackage(tmp_ / "p.upk", tmp_ / "dest", VerifyOptions{{key_.public_key()}, 1}, {}, ExtractOptions{false});
  ExpectRefusedCleanly(r, "'z'", "truncated");
}

TEST_F(ExtractTest, UntrustedSignatureExtractsNothing) {
  WriteRawPackage(tmp_ / "p.upk", BaseManifest({FileEntry("a", "alpha")}).Serialize(), {key_}, {RawFile("payload/a", "alpha")});
  auto other = PrivateKey::GenerateEd25519();
  auto r = ExtractPackage(tmp_ / "p.upk", tmp_ / "dest", VerifyOptions{{other.public_key()}, 1});
  ExpectRefusedCleanly(r, "manifest.sig", "untrusted signer");
}

TEST_F(ExtractTest, ExistingDestinationIsNeverTouched) {
  fs::create_directories(tmp_ / "dest");
  WriteFile(tmp_ / "dest/keep", "mine");
  WriteRawPackage(tmp_ / "p.upk", BaseManifest({FileEntry("keep", "theirs")}).Serialize(), {key_}, {RawFile("payload/keep", "theirs")});
  auto r = ExtractPackage(tmp_ / "p.upk", tmp_ / "dest", VerifyOptions{{key_.public_key()}, 1});
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  EXPECT_EQ(ReadAll(tmp_ / "dest/keep"), "mine");
  EXPECT_EQ(ListDir(tmp_.path()), (std::vector<std::string>{"dest", "p.upk"}));
}

}  // namespace
}  // namespace upkeep::packages
