// The .upk writer and reader: round trips, determinism, refused inputs, and every way a package
// can be tampered with or damaged.
#include "upkeep/packages/package.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <cstdlib>
#include <unistd.h>

#include "package_test_util.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/extract.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;

class PackageTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    WriteFile(src_ / "bin/app", "#!/bin/sh\necho app\n", 0755);
    WriteFile(src_ / "etc/app.conf", "level = 3\n", 0600);
    WriteFile(src_ / "share/doc/README", "read me\n", 0444);
    WriteFile(src_ / "share/empty", "", 0644);
    WriteFile(src_ / "données/été.txt", "non-ASCII names survive\n", 0644);
    fs::create_directories(src_ / "var/empty-dir");
    fs::create_directories(src_ / "ro");
    WriteFile(src_ / "ro/inside", "in a read-only directory\n", 0644);
    ::chmod((src_ / "ro").c_str(), 0555);
    fs::create_symlink("app", src_ / "bin/app-link");
    fs::create_symlink("../share/doc", src_ / "bin/doc");
  }

  Manifest Pack(const fs::path& out, PackedFile* packed = nullptr) {
    PackSpec spec;
    spec.manifest = BaseManifest();
    spec.payload_dir = src_;
    auto m = WritePackage(spec, {key_}, out, {}, packed);
    EXPECT_TRUE(m.ok()) << m.error().message();
    return m.ok() ? *m : Manifest{};
  }

  Expected<VerifyResult> Verify(const fs::path& upk, std::vector<PublicKey> keys = {}) {
    VerifyOptions o;
    o.trusted = std::move(keys);
    return VerifyPackage(upk, o);
  }

  TempDir tmp_;
  fs::path src_;
  PrivateKey key_ = PrivateKey::GenerateEd25519();
};

TEST_F(PackageTest, DirectoryRoundTripKeepsContentModesAndLinks) {
  PackedFile packed;
  Manifest m = Pack(tmp_ / "site.upk", &packed);
  ASSERT_EQ(m.payload.size(), 16u);
  EXPECT_EQ(m.payload[0].path, "bin");  // byte order, parents first
  EXPECT_EQ(m.payload[1].path, "bin/app");

  auto digest = HashFile(tmp_ / "site.upk");
  ASSERT_TRUE(digest.ok());
  EXPECT_EQ(packed.sha256, digest->sha256_hex);
  EXPECT_EQ(packed.bytes, digest->size);

  auto read = ReadPackageManifest(tmp_ / "site.upk");
  ASSERT_TRUE(read.ok()) << read.error().message();
  EXPECT_EQ(read->Serialize(), m.Serialize());

  auto v = Verify(tmp_ / "site.upk", {key_.public_key()});
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_FALSE(v->integrity_only);
  EXPECT_EQ(v->signed_by, std::vector<std::string>{key_.keyid()});
  EXPECT_EQ(v->entries, m.payload.size());
  EXPECT_EQ(v->payload_bytes, m.PayloadBytes());

  VerifyOptions o;
  o.trusted = {key_.public_key()};
  auto x = ExtractPackage(tmp_ / "site.upk", tmp_ / "out", o, {}, ExtractOptions{false});
  ASSERT_TRUE(x.ok()) << x.error().message();
  EXPECT_EQ(Snapshot(tmp_ / "out"), Snapshot(src_));
  EXPECT_EQ(ListDir(tmp_.path()), (std::vector<std::string>{"out", "site.upk", "src"}));
}

TEST_F(PackageTest, SameInputGivesTheSameBytes) {
  PackedFile a, b;
  Pack(tmp_ / "a.upk", &a);
  Pack(tmp_ / "b.upk", &b);
  EXPECT_EQ(a.sha256, b.sha256);
  EXPECT_EQ(ReadAll(tmp_ / "a.upk"), ReadAll(tmp_ / "b.upk"));
}

TEST_F(PackageTest, IntegrityOnlyModeIsReportedAsSuch) {
  Pack(tmp_ / "site.upk");
  auto v = Verify(tmp_ / "site.upk");
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_TRUE(v->integrity_only);
  EXPECT_TRUE(v->signed_by.empty());
}

TEST_F(PackageTest, PacksFromAnExistingCompressedTarInArchiveOrder) {
  WriteRawTar(tmp_ / "in.tar.gz",
              {RawEntry{"./", 'd', "", 0755, "", -1}, RawEntry{"./z-first/", 'd', "", 0750, "", -1},
               RawFile("./z-first/data.bin", std::string(100000, 'x') + "end", 0640),
               RawEntry{"./a-link", 'l', "", 0777, "z-first/data.bin", -1}, RawFile("./a-file", "A", 0755)},
              "gzip");
  PackSpec spec;
  spec.manifest = BaseManifest();
  spec.payload_tar = tmp_ / "in.tar.gz";
  auto m = WritePackage(spec, {key_}, tmp_ / "t.upk");
  ASSERT_TRUE(m.ok()) << m.error().message();
  ASSERT_EQ(m->payload.size(), 4u);
  EXPECT_EQ(m->payload[0].path, "z-first");
  EXPECT_EQ(m->payload[0].mode, 0750u);
  EXPECT_EQ(m->payload[1].size, 100003u);
  EXPECT_EQ(m->payload[2].target, "z-first/data.bin");

  VerifyOptions o;
  o.trusted = {key_.public_key()};
  auto x = ExtractPackage(tmp_ / "t.upk", tmp_ / "out", o, {}, ExtractOptions{false});
  ASSERT_TRUE(x.ok()) << x.error().message();
  EXPECT_EQ(ReadAll(tmp_ / "out/z-first/data.bin"), std::string(100000, 'x') + "end");
  EXPECT_EQ(fs::read_symlink(tmp_ / "out/a-link"), "z-first/data.bin");
  EXPECT_EQ(fs::status(tmp_ / "out/a-file").permissions() & fs::perms::all, static_cast<fs::perms>(0755));
}

TEST_F(PackageTest, RefusesUnsafeDirectoryInputNamingTheEntry) {
  struct Case {
    const char* name;
    std::function<void(const fs::path&)> make;
    const char* entry;
  };
  std::vector<Case> cases = {
      {"fifo", [](const fs::path& d) { ::mkfifo((d / "pipe").c_str(), 0644); }, "pipe"},
      {"hard link", [](const fs::path& d) { ASSERT_EQ(::link((d / "bin/app").c_str(), (d / "bin/app2").c_str()), 0); }, "bin/app"},
      {"setuid", [](const fs::path& d) { ::chmod((d / "bin/app").c_str(), 04755); }, "bin/app"},
      {"absolute symlink", [](const fs::path& d) { fs::create_symlink("/etc/passwd", d / "pw"); }, "pw"},
      {"escaping symlink", [](const fs::path& d) { fs::create_symlink("../../../etc", d / "bin/up"); }, "bin/up"},
      {"dotdot after name", [](const fs::path& d) { fs::create_symlink("doc/..", d / "share/sneaky"); }, "share/sneaky"},
  };
  for (const auto& c : cases) {
    TempDir t;
    WriteFile(t / "src/bin/app", "app", 0755);
    WriteFile(t / "src/share/doc/x", "x");
    c.make(t / "src");
    PackSpec spec;
    spec.manifest = BaseManifest();
    spec.payload_dir = t / "src";
    auto m = WritePackage(spec, {key_}, t / "out.upk");
    ASSERT_FALSE(m.ok()) << c.name;
    EXPECT_NE(m.error().message().find(c.entry), std::string::npos) << c.name << ": " << m.error().message();
    EXPECT_FALSE(fs::exists(t / "out.upk")) << c.name;
    EXPECT_EQ(ListDir(t.path()), std::vector<std::string>{"src"}) << c.name << ": temp file left behind";
  }
}

TEST_F(PackageTest, RefusesUnsafeArchiveInputNamingTheEntry) {
  struct Case {
    RawEntry entry;
    const char* expect;
  };
  std::vector<Case> cases = {
      {RawFile("../evil", "x"), "../evil"},
      {RawFile("/etc/passwd", "x"), "/etc/passwd"},
      {RawFile("a/../../evil", "x"), "a/../../evil"},
      {RawEntry{"dev/null", 'c', "", 0666, "", -1}, "dev/null"},
      {RawEntry{"blk", 'b', "", 0660, "", -1}, "blk"},
      {RawEntry{"fifo", 'p', "", 0644, "", -1}, "fifo"},
      {RawEntry{"hl", 'h', "", 0644, "ok", -1}, "hl"},
      {RawFile("suid", "x", 04755), "suid"},
      {RawFile("sgid", "x", 02755), "sgid"},
      {RawEntry{"esc", 'l', "", 0777, "../outside", -1}, "esc"},
      {RawEntry{"abs", 'l', "", 0777, "/etc", -1}, "abs"},
  };
  for (const auto& c : cases) {
    TempDir t;
    WriteRawTar(t / "in.tar", {RawFile("ok", "fine"), c.entry});
    PackSpec spec;
    spec.manifest = BaseManifest();
    spec.payload_tar = t / "in.tar";
    auto m = WritePackage(spec, {key_}, t / "out.upk");
    ASSERT_FALSE(m.ok()) << c.expect;
    EXPECT_NE(m.error().message().find(c.expect), std::string::npos) << m.error().message();
    EXPECT_EQ(ListDir(t.path()), std::vector<std::string>{"in.tar"}) << c.expect;
  }
}

TEST_F(PackageTest, WriterNeedsASignerAndExactlyOneSource) {
  PackSpec spec;
  spec.manifest = BaseManifest();
  spec.payload_dir = src_;
  EXPECT_EQ(WritePackage(spec, {}, tmp_ / "x.upk").error().code(), Errc::kInvalidArgument);
  spec.payload_tar = tmp_ / "in.tar";
  EXPECT_EQ(WritePackage(spec, {key_}, tmp_ / "x.upk").error().code(), Errc::kInvalidArgument);
  spec.payload_dir.clear();
  spec.payload_tar.clear();
  EXPECT_EQ(WritePackage(spec, {key_}, tmp_ / "x.upk").error().code(), Errc::kInvalidArgument);
}

// ---- tampering and damage ------------------------------------------------------------------

class TamperTest : public PackageTest {
 protected:
  void SetUp() override {
    PackageTest::SetUp();
    Pack(upk_);
    bytes_ = ReadAll(upk_);
  }
  void Rewrite(const std::string& bytes) { std::ofstream(upk_, std::ios::binary | std::ios::trunc) << bytes; }

  fs::path upk_ = tmp_ / "site.upk";
  std::string bytes_;
};

TEST_F(TamperTest, FlippedPayloadByteIsCaughtNamingTheEntry) {
  auto pos = bytes_.find("level = 3");
  ASSERT_NE(pos, std::string::npos);
  bytes_[pos + 8] = '4';
  Rewrite(bytes_);
  for (auto keys : {std::vector<PublicKey>{}, std::vector<PublicKey>{key_.public_key()}}) {
    auto v = Verify(upk_, keys);
    ASSERT_FALSE(v.ok());
    EXPECT_EQ(v.error().code(), Errc::kVerification);
    EXPECT_NE(v.error().message().find("etc/app.conf"), std::string::npos) << v.error().message();
    EXPECT_NE(v.error().message().find("SHA-256"), std::string::npos) << v.error().message();
  }
}

TEST_F(TamperTest, TamperedManifestFailsTheSignature) {
  auto pos = bytes_.find("\"version\":\"8.1.0\"");
  ASSERT_NE(pos, std::string::npos);
  bytes_[pos + 15] = '9';
  Rewrite(bytes_);
  auto v = Verify(upk_, {key_.public_key()});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
  EXPECT_NE(v.error().message().find("manifest.sig"), std::string::npos) << v.error().message();
  EXPECT_NE(v.error().message().find("invalid signature"), std::string::npos) << v.error().message();
  // The manifest still parses and the payload still matches it: integrity alone can't see this.
  EXPECT_TRUE(Verify(upk_).ok());
}

TEST_F(TamperTest, WrongKeyIsRefused) {
  auto other = PrivateKey::GenerateEd25519();
  auto v = Verify(upk_, {other.public_key()});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kVerification);
  EXPECT_NE(v.error().message().find("0 of the 1"), std::string::npos) << v.error().message();
}

TEST_F(TamperTest, TruncationAnywhereIsRefused) {
  auto data_pos = bytes_.find("non-ASCII names survive");
  ASSERT_NE(data_pos, std::string::npos);
  // Inside a file's data, right after a header, inside the end-of-archive marker, and the
  // marker removed entirely (everything else intact).
  std::vector<std::size_t> cuts = {data_pos + 5, data_pos, bytes_.size() - 700, bytes_.size() - 1024, 700, 100};
  for (std::size_t cut : cuts) {
    Rewrite(bytes_.substr(0, cut));
    auto v = Verify(upk_, {key_.public_key()});
    ASSERT_FALSE(v.ok()) << "cut at " << cut;
    EXPECT_NE(v.error().code(), Errc::kInternal) << v.error().message();
    EXPECT_EQ(v.error().ExitCode(), 1) << "cut at " << cut << ": " << v.error().message();
  }
}

TEST_F(TamperTest, TrailingGarbageIsRefusedButZeroPaddingIsNot) {
  Rewrite(bytes_ + std::string(512, '\0'));
  EXPECT_TRUE(Verify(upk_).ok());
  Rewrite(bytes_ + "garbage");
  auto v = Verify(upk_);
  ASSERT_FALSE(v.ok());
  EXPECT_NE(v.error().message().find("trailing"), std::string::npos) << v.error().message();
  Rewrite(bytes_ + std::string(1 << 20, '\0'));
  EXPECT_FALSE(Verify(upk_).ok());
}

TEST_F(TamperTest, ReadPackageManifestReadsOnlyTheFirstEntry) {
  auto pos = bytes_.find("level = 3");
  bytes_[pos] = 'X';
  Rewrite(bytes_.substr(0, pos + 3));  // damaged and truncated payload
  auto m = ReadPackageManifest(upk_);
  ASSERT_TRUE(m.ok()) << m.error().message();
  EXPECT_EQ(m->Id(), "site-8.1.0");
}

TEST_F(TamperTest, MemoryReaderMatchesTheFileReader) {
  auto r = PackageReader::OpenMemory(AsBytes(bytes_));
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->package_bytes(), bytes_.size());
  // Payload stays locked until the signatures were checked or explicitly skipped.
  EXPECT_EQ(r->NextEntry().error().code(), Errc::kPolicy);
  EXPECT_FALSE(r->VerifySignatures({PrivateKey::GenerateEd25519().public_key()}).ok());
  EXPECT_EQ(r->NextEntry().error().code(), Errc::kPolicy);
  ASSERT_TRUE(r->VerifySignatures({key_.public_key()}).ok());
  std::size_t n = 0;
  for (;;) {
    auto e = r->NextEntry();
    ASSERT_TRUE(e.ok()) << e.error().message();
    if (!*e) break;
    ++n;  // data left unread is drained and checked by NextEntry
  }
  EXPECT_EQ(n, r->manifest().payload.size());
}

// ---- hand-built packages that differ from their manifest -----------------------------------

class RawPackageTest : public ::testing::Test {
 protected:
  Expected<VerifyResult> Build(const Manifest& m, const std::vector<RawEntry>& payload, std::vector<PublicKey> keys = {}) {
    WriteRawPackage(upk_, m.Serialize(), {key_}, payload);
    VerifyOptions o;
    o.trusted = keys.empty() ? std::vector<PublicKey>{key_.public_key()} : std::move(keys);
    return VerifyPackage(upk_, o);
  }
  template <typename T>
  void ExpectRefused(const Expected<T>& v, const std::string& needle, Errc code = Errc::kVerification) {
    ASSERT_FALSE(v.ok()) << needle;
    EXPECT_EQ(v.error().code(), code) << v.error().message();
    EXPECT_NE(v.error().message().find(needle), std::string::npos) << v.error().message();
  }

  TempDir tmp_;
  fs::path upk_ = tmp_ / "raw.upk";
  PrivateKey key_ = PrivateKey::GenerateEd25519();
  Manifest two_ = BaseManifest({FileEntry("a", "alpha"), FileEntry("b", "beta")});
};

TEST_F(RawPackageTest, ExactMatchVerifies) {
  auto v = Build(two_, {RawFile("payload/a", "alpha"), RawFile("payload/b", "beta")});
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_EQ(v->entries, 2u);
}

TEST_F(RawPackageTest, ExtraMissingAndReorderedEntries) {
  ExpectRefused(Build(two_, {RawFile("payload/a", "alpha"), RawFile("payload/b", "beta"), RawFile("payload/c", "x")}),
                "'payload/c': not in the manifest");
  ExpectRefused(Build(two_, {RawFile("payload/a", "alpha")}), "'b' (2 of 2) is missing");
  ExpectRefused(Build(two_, {RawFile("payload/b", "beta"), RawFile("payload/a", "alpha")}), "'payload/b': out of order");
  ExpectRefused(Build(two_, {RawFile("payload/a", "alpha"), RawFile("other/b", "beta")}), "'other/b': outside payload/");
}

TEST_F(RawPackageTest, SizeTypeModeAndTargetMustMatch) {
  ExpectRefused(Build(two_, {RawFile("payload/a", "alphaX"), RawFile("payload/b", "beta")}), "'a': size 6");
  ExpectRefused(Build(two_, {RawFile("payload/a", "alpha", 0755), RawFile("payload/b", "beta")}), "'a': mode 0755");
  ExpectRefused(Build(two_, {RawEntry{"payload/a", 'd', "", 0755, "", -1}, RawFile("payload/b", "beta")}), "'a': is a dir");
  ExpectRefused(Build(two_, {RawFile("payload/a", "alphX"), RawFile("payload/b", "beta")}), "'a': SHA-256");
  Manifest link = BaseManifest({LinkEntry("l", "a"), FileEntry("a", "alpha")});
  ExpectRefused(Build(link, {RawEntry{"payload/l", 'l', "", 0777, "b", -1}, RawFile("payload/a", "alpha")}),
                "symlink target 'b'");
}

TEST_F(RawPackageTest, MissingOrBrokenSignatureFile) {
  WriteRawTar(upk_, {RawFile("manifest.json", two_.Serialize()), RawFile("payload/a", "alpha"), RawFile("payload/b", "beta")});
  auto v = VerifyPackage(upk_, VerifyOptions{{key_.public_key()}, 1});
  ExpectRefused(v, "expected entry 'manifest.sig'");
  WriteRawTar(upk_, {RawFile("manifest.json", two_.Serialize()), RawFile("manifest.sig", "{\"signatures\": 3}")});
  ExpectRefused(VerifyPackage(upk_, VerifyOptions{{key_.public_key()}, 1}), "manifest.sig");
  WriteRawPackage(upk_, two_.Serialize(), {}, {RawFile("payload/a", "alpha"), RawFile("payload/b", "beta")});
  ExpectRefused(VerifyPackage(upk_, VerifyOptions{{key_.public_key()}, 1}), "carries no signatures");
}

TEST_F(RawPackageTest, ManifestMustComeFirstBeCanonicalAndBounded) {
  WriteRawTar(upk_, {RawFile("payload/a", "alpha"), RawFile("manifest.json", two_.Serialize())});
  ExpectRefused(ReadPackageManifest(upk_), "expected entry 'manifest.json'");
  WriteRawPackage(upk_, two_.ToJson().dump(2), {key_}, {});
  ExpectRefused(ReadPackageManifest(upk_), "not in canonical form");
  // A header announcing more than 16 MiB is refused before anything is read.
  WriteRawTar(upk_, {RawEntry{"manifest.json", 'f', "", 0644, "", (16 << 20) + 1}});
  auto m = ReadPackageManifest(upk_);
  ASSERT_FALSE(m.ok());
  EXPECT_EQ(m.error().code(), Errc::kLimit) << m.error().message();
  // Not a tar archive at all.
  WriteFile(upk_, std::string(4096, 'z'));
  ExpectRefused(ReadPackageManifest(upk_), "not a package");
  EXPECT_EQ(ReadPackageManifest(tmp_ / "missing.upk").error().code(), Errc::kNotFound);
}

TEST_F(RawPackageTest, ThresholdCountsDistinctTrustedKeys) {
  auto k2 = PrivateKey::GenerateEd25519();
  auto k3 = PrivateKey::GenerateEd25519();
  WriteRawPackage(upk_, two_.Serialize(), {key_, k2}, {RawFile("payload/a", "alpha"), RawFile("payload/b", "beta")});
  auto ok = VerifyPackage(upk_, VerifyOptions{{key_.public_key(), k2.public_key()}, 2});
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->signed_by.size(), 2u);
  ExpectRefused(VerifyPackage(upk_, VerifyOptions{{key_.public_key(), k3.public_key()}, 2}), "1 of the 2");
  // The same key twice is one key.
  EXPECT_EQ(VerifyPackage(upk_, VerifyOptions{{key_.public_key(), key_.public_key()}, 2}).error().code(),
            Errc::kInvalidArgument);
  EXPECT_EQ(VerifyPackage(upk_, VerifyOptions{{key_.public_key()}, 0}).error().code(), Errc::kInvalidArgument);
}

TEST_F(RawPackageTest, SignatureFileIsBounded) {
  std::string big = "{\"signatures\": [" + std::string(70000, ' ') + "]}";
  WriteRawTar(upk_, {RawFile("manifest.json", two_.Serialize()), RawFile("manifest.sig", big)});
  auto v = VerifyPackage(upk_, VerifyOptions{});
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.error().code(), Errc::kLimit) << v.error().message();
}

TEST(PackageLargeTest, TwentyMebibyteFileStreamsWithProgress) {
  TempDir tmp;
  std::string big(20u << 20, '\0');
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 2654435761u) >> 13);
  WriteFile(tmp / "src/big.bin", big);
  auto key = PrivateKey::GenerateEd25519();
  PackSpec spec;
  spec.manifest = BaseManifest();
  spec.payload_dir = tmp / "src";
  std::uint64_t last_done = 0, last_total = 0, calls = 0;
  bool monotonic = true;
  auto progress = [&](std::uint64_t done, std::uint64_t total) {
    monotonic = monotonic && done >= last_done && done <= total;
    last_done = done;
    last_total = total;
    ++calls;
  };
  ASSERT_TRUE(WritePackage(spec, {key}, tmp / "big.upk", progress).ok());
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_total, 2 * big.size());  // hashing pass + writing pass
  EXPECT_EQ(last_done, last_total);

  last_done = 0;
  calls = 0;
  auto v = VerifyPackage(tmp / "big.upk", VerifyOptions{{key.public_key()}, 1}, progress);
  ASSERT_TRUE(v.ok()) << v.error().message();
  EXPECT_TRUE(monotonic);
  EXPECT_EQ(last_total, big.size());
  EXPECT_EQ(last_done, big.size());
  EXPECT_GT(calls, 2u);
}

TEST(PayloadLayoutTest, SymlinkTargetsStayInsideThePayload) {
  EXPECT_TRUE(CheckSymlinkTarget("a", "b").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/b/l", "../../x").ok());
  EXPECT_TRUE(CheckSymlinkTarget("a/l", "./x//y/").ok());
  EXPECT_FALSE(CheckSymlinkTarget("a/l", "../../x").ok());
  EXPECT_FALSE(CheckSymlinkTarget("l", "..").ok());
  EXPECT_FALSE(CheckSymlinkTarget("l", "/etc").ok());
  EXPECT_FALSE(CheckSymlinkTarget("a/l", "x/../..").ok());
  EXPECT_FALSE(CheckSymlinkTarget("a/l", "x/..").ok());  // x may itself be a symlink
  EXPECT_FALSE(CheckSymlinkTarget("l", "").ok());

  EXPECT_TRUE(CheckPayloadLayout(BaseManifest({DirEntry("d"), LinkEntry("d/l", "x"), FileEntry("d/x", "")})).ok());
  auto below_link = CheckPayloadLayout(BaseManifest({LinkEntry("l", "d"), DirEntry("d"), FileEntry("l/x", "")}));
  ASSERT_FALSE(below_link.ok());
  EXPECT_NE(below_link.error().message().find("'l/x': lies below symlink 'l'"), std::string::npos);
  EXPECT_FALSE(CheckPayloadLayout(BaseManifest({FileEntry("f", ""), FileEntry("f/x", "")})).ok());
}

TEST(SignatureFileTest, RoundTripsAndRefusesJunk) {
  std::vector<Signature> sigs = {{"ab", "00ff"}, {"cd", "11"}};
  auto parsed = ParseSignatureFile(SerializeSignatureFile(sigs));
  ASSERT_TRUE(parsed.ok());
  ASSERT_EQ(parsed->size(), 2u);
  EXPECT_EQ((*parsed)[1].keyid, "cd");
  EXPECT_EQ((*parsed)[0].sig_hex, "00ff");
  EXPECT_FALSE(ParseSignatureFile("[]").ok());
  EXPECT_FALSE(ParseSignatureFile(R"({"signatures": [{"keyid": "a"}]})").ok());
  EXPECT_FALSE(ParseSignatureFile(R"({"signatures": [{"keyid": "a", "sig": "xyz"}]})").ok());
  EXPECT_FALSE(ParseSignatureFile(R"({"signatures": [], "signatures": []})").ok());
}

// Writes the fuzz seed corpora (tests/fuzz/corpus/fuzz_manifest, fuzz_package_reader). Run by hand:
//   UPKEEP_WRITE_FUZZ_CORPUS=tests/fuzz/corpus build/tests/package_file_test
//     --gtest_also_run_disabled_tests --gtest_filter='*FuzzCorpus*'
TEST(FuzzCorpus, DISABLED_Write) {
  const char* root = std::getenv("UPKEEP_WRITE_FUZZ_CORPUS");
  ASSERT_NE(root, nullptr) << "set UPKEEP_WRITE_FUZZ_CORPUS to tests/fuzz/corpus";
  std::string seed;
  for (int i = 0; i < 32; ++i) seed += "01";
  auto key = PrivateKey::FromJson({{"keytype", "ed25519"}, {"scheme", "ed25519"}, {"keyval", {{"private", seed}}}}).value();
  fs::path pkgs = fs::path(root) / "fuzz_package_reader";
  fs::path manifests = fs::path(root) / "fuzz_manifest";
  fs::create_directories(pkgs);
  fs::create_directories(manifests);

  Manifest m = BaseManifest({DirEntry("bin"), FileEntry("bin/app", "#!/bin/sh\n", 0755), LinkEntry("bin/sh", "app"),
                             FileEntry("etc/app.conf", "level=3\n", 0600)});
  m.requires_.push_back({"base", Version::Parse("2.0.0").value()});
  m.upgrades_from = Version::Parse("8.0.0").value();
  m.settle_hours = 24;
  m.extra["x_vendor"] = Json{{"ticket", 42}};
  std::vector<RawEntry> payload = {RawEntry{"payload/bin/", 'd', "", 0755, "", -1}, RawFile("payload/bin/app", "#!/bin/sh\n", 0755),
                                   RawEntry{"payload/bin/sh", 'l', "", 0777, "app", -1},
                                   RawFile("payload/etc/app.conf", "level=3\n", 0600)};
  TempDir tmp;
  auto emit = [&](const std::string& name, const std::string& manifest_bytes, const std::vector<PrivateKey>& signers,
                  const std::vector<RawEntry>& entries) {
    WriteRawPackage(tmp / "p.upk", manifest_bytes, signers, entries);
    // Keep seeds small: drop the record padding, keep the end-of-archive marker.
    std::string bytes = ReadAll(tmp / "p.upk");
    while (bytes.size() > 1024 && bytes.substr(bytes.size() - 1536).find_first_not_of('\0') == std::string::npos) {
      bytes.resize(bytes.size() - 512);
    }
    std::ofstream(pkgs / (name + ".upk"), std::ios::binary | std::ios::trunc) << bytes;
  };
  emit("valid", m.Serialize(), {key}, payload);
  emit("unsigned", m.Serialize(), {}, payload);
  emit("extra-entry", m.Serialize(), {key}, [&] { auto p = payload; p.push_back(RawFile("payload/x", "x")); return p; }());
  emit("reordered", m.Serialize(), {key}, {payload[1], payload[0], payload[2], payload[3]});
  emit("hardlink", BaseManifest({FileEntry("a", "A"), FileEntry("b", "")}).Serialize(), {key},
       {RawFile("payload/a", "A"), RawEntry{"payload/b", 'h', "", 0644, "payload/a", -1}});
  emit("noncanonical", m.ToJson().dump(1), {key}, payload);
  emit("empty-payload", BaseManifest().Serialize(), {key}, {});
  std::string valid = ReadAll(pkgs / "valid.upk");
  std::ofstream(pkgs / "truncated.upk", std::ios::binary | std::ios::trunc) << valid.substr(0, valid.size() - 1500);

  std::ofstream(manifests / "full.json", std::ios::trunc) << m.Serialize();
  std::ofstream(manifests / "minimal.json", std::ios::trunc) << R"({"name":"a","version":"0.0.1","kind":"base"})";
  std::ofstream(manifests / "pretty.json", std::ios::trunc) << m.ToJson().dump(2);
  std::ofstream(manifests / "bad-path.json", std::ios::trunc)
      << R"({"name":"a","version":"1.0.0","kind":"client","payload":[{"path":"a/../b","type":"dir"}]})";
  std::ofstream(manifests / "bad-mode.json", std::ios::trunc)
      << R"({"name":"a","version":"1.0.0","kind":"addon","payload":[{"path":"a/","type":"dir","mode":4095}]})";
}

}  // namespace
}  // namespace upkeep::packages
