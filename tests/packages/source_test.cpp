// PackageReader over a ByteSource: the same results as OpenFile whatever the read sizes, a
// failing source surfacing its own error, the archive's end checked through the source, and
// ExtractFromReader with its all-or-nothing guarantee.
#include "upkeep/packages/source.hpp"

#include <gtest/gtest.h>

#include <optional>

#include "package_test_util.hpp"
#include "upkeep/packages/extract.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;

// Serves `data` at most `step` bytes per Read; from byte `fail_at` on it fails with `error`.
class TestSource final : public ByteSource {
 public:
  TestSource(std::string data, std::size_t step, std::uint64_t fail_at = UINT64_MAX,
             Error error = Error(Errc::kIo, "test source: disk on fire"))
      : data_(std::move(data)), step_(step), fail_at_(fail_at), error_(std::move(error)) {}

  Expected<std::size_t> Read(std::span<std::uint8_t> buf) override {
    if (pos_ >= fail_at_) {
      ++failures_;
      return error_;
    }
    std::size_t n = std::min<std::size_t>({buf.size(), step_, data_.size() - pos_});
    if (fail_at_ != UINT64_MAX) n = std::min<std::size_t>(n, fail_at_ - pos_);
    std::memcpy(buf.data(), data_.data() + pos_, n);
    pos_ += n;
    return n;
  }
  std::uint64_t position() const override { return pos_; }

  int failures_ = 0;

 private:
  std::string data_;
  std::size_t step_;
  std::uint64_t fail_at_;
  Error error_;
  std::uint64_t pos_ = 0;
};

// Everything a reader yields, as text: entry paths, types and file contents.
Expected<std::string> Walk(PackageReader& r) {
  std::string out;
  for (;;) {
    UPK_TRY_ASSIGN(const PayloadEntry* e, r.NextEntry());
    if (!e) break;
    out += e->path + " " + std::string(EntryTypeName(e->type)) + "\n";
    for (;;) {
      UPK_TRY_ASSIGN(auto chunk, r.ReadData());
      if (chunk.empty()) break;
      out.append(reinterpret_cast<const char*>(chunk.data()), chunk.size());
    }
  }
  return out;
}

class SourceTest : public ::testing::Test {
 protected:
  void SetUp() override {
    src_ = tmp_ / "src";
    WriteFile(src_ / "bin/app", "#!/bin/sh\necho app\n", 0755);
    WriteFile(src_ / "big.bin", std::string(3 << 20, 'b') + "tail", 0644);  // spans several reader buffers
    WriteFile(src_ / "share/empty", "", 0644);
    fs::create_directories(src_ / "var/empty-dir");
    fs::create_symlink("../bin/app", src_ / "share/app-link");
    PackSpec spec;
    spec.manifest = BaseManifest();
    spec.payload_dir = src_;
    auto m = WritePackage(spec, {key_}, tmp_ / "p.upk");
    ASSERT_TRUE(m.ok()) << m.error().message();
    bytes_ = ReadAll(tmp_ / "p.upk");
  }

  static Expected<PackageReader> Open(std::string data, std::size_t step, std::uint64_t fail_at = UINT64_MAX) {
    return PackageReader::OpenSource(std::make_unique<TestSource>(std::move(data), step, fail_at));
  }

  TempDir tmp_;
  fs::path src_;
  std::string bytes_;
  PrivateKey key_ = PrivateKey::GenerateEd25519();
};

TEST_F(SourceTest, SourceReaderGivesTheSameResultsAsOpenFile) {
  auto file = PackageReader::OpenFile(tmp_ / "p.upk");
  ASSERT_TRUE(file.ok()) << file.error().message();
  file->SkipSignatureCheck();
  auto want = Walk(*file);
  ASSERT_TRUE(want.ok()) << want.error().message();
  EXPECT_NE(want->find("tail"), std::string::npos);

  for (std::size_t step : {std::size_t{1} << 30, std::size_t{1} << 20, std::size_t{4093}, std::size_t{511}}) {
    SCOPED_TRACE(step);
    auto r = Open(bytes_, step);
    ASSERT_TRUE(r.ok()) << r.error().message();
    EXPECT_EQ(r->manifest_bytes(), file->manifest_bytes());
    ASSERT_TRUE(r->VerifySignatures({key_.public_key()}).ok());
    EXPECT_EQ(r->signed_by(), std::vector<std::string>{key_.keyid()});
    auto got = Walk(*r);
    ASSERT_TRUE(got.ok()) << got.error().message();
    EXPECT_EQ(*got, *want);
    EXPECT_EQ(r->payload_bytes_read(), file->payload_bytes_read());
    EXPECT_EQ(r->entries_read(), file->entries_read());
    EXPECT_EQ(r->package_bytes(), bytes_.size()) << "the source is read to its end";
  }

  auto fs_source = OpenFileSource(tmp_ / "p.upk");
  ASSERT_TRUE(fs_source.ok());
  auto r = PackageReader::OpenSource(std::move(*fs_source));
  ASSERT_TRUE(r.ok()) << r.error().message();
  r->SkipSignatureCheck();
  auto got = Walk(*r);
  ASSERT_TRUE(got.ok()) << got.error().message();
  EXPECT_EQ(*got, *want);
}

TEST_F(SourceTest, OpenFileSourceErrors) {
  auto missing = OpenFileSource(tmp_ / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  auto dir = OpenFileSource(tmp_.path());
  ASSERT_FALSE(dir.ok());
  EXPECT_EQ(dir.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(PackageReader::OpenSource(nullptr).ok());
}

TEST_F(SourceTest, ASourceFailingMidStreamSurfacesItsOwnError) {
  // Inside manifest.json, inside the big file, and in the end-of-archive trailer.
  for (std::uint64_t at : {std::uint64_t{700}, std::uint64_t{2} << 20, std::uint64_t{bytes_.size() - 100}}) {
    SCOPED_TRACE(at);
    for (std::size_t step : {std::size_t{1} << 20, std::size_t{777}}) {
      auto r = Open(bytes_, step, at);
      Expected<std::string> walked = r.ok() ? (r->SkipSignatureCheck(), Walk(*r)) : Expected<std::string>(r.error());
      ASSERT_FALSE(walked.ok());
      EXPECT_EQ(walked.error().code(), Errc::kIo);
      EXPECT_EQ(walked.error().message(), "test source: disk on fire");
      if (r.ok()) {
        auto again = r->NextEntry();
        ASSERT_FALSE(again.ok());
        EXPECT_EQ(again.error().message(), "test source: disk on fire") << "errors are sticky";
      }
    }
  }
}

TEST_F(SourceTest, TheArchiveEndIsCheckedThroughTheSource) {
  auto walk = [&](std::string data) -> Status {
    auto r = Open(std::move(data), 1000);
    if (!r.ok()) return r.error();
    r->SkipSignatureCheck();
    UPK_TRY(Walk(*r));
    return OkStatus();
  };
  ASSERT_TRUE(walk(bytes_).ok());
  auto garbage = walk(bytes_ + "x");
  ASSERT_FALSE(garbage.ok());
  EXPECT_NE(garbage.error().message().find("trailing data"), std::string::npos) << garbage.error().message();
  auto late_garbage = walk(bytes_ + std::string(5000, '\0') + "x");
  ASSERT_FALSE(late_garbage.ok());
  EXPECT_NE(late_garbage.error().message().find("trailing data"), std::string::npos) << late_garbage.error().message();
  auto too_much = walk(bytes_ + std::string(40000, '\0'));
  ASSERT_FALSE(too_much.ok());
  EXPECT_NE(too_much.error().message().find("trailing data"), std::string::npos) << too_much.error().message();
  // The writer ends with the 1024-byte marker plus padding to a 10240-byte record.
  std::string cut = bytes_;
  while (cut.size() > 0 && cut.back() == '\0') cut.pop_back();
  cut.resize(cut.size() + (512 - cut.size() % 512) % 512, '\0');
  auto truncated = walk(cut + std::string(512, '\0'));
  ASSERT_FALSE(truncated.ok());
  EXPECT_EQ(truncated.error().code(), Errc::kVerification) << truncated.error().message();
}

TEST_F(SourceTest, ExtractFromReaderInstallsTheVerifiedPayload) {
  auto r = Open(bytes_, 65536);
  ASSERT_TRUE(r.ok()) << r.error().message();
  ASSERT_TRUE(r->VerifySignatures({key_.public_key()}).ok());
  std::uint64_t last_done = 0;
  auto x = ExtractFromReader(*r, tmp_ / "out", [&](std::uint64_t done, std::uint64_t) { last_done = done; },
                             ExtractOptions{false});
  ASSERT_TRUE(x.ok()) << x.error().message();
  EXPECT_EQ(Snapshot(tmp_ / "out"), Snapshot(src_));
  EXPECT_FALSE(x->integrity_only);
  EXPECT_EQ(x->signed_by, std::vector<std::string>{key_.keyid()});
  EXPECT_EQ(x->entries, x->manifest.payload.size());
  EXPECT_EQ(x->payload_bytes, x->manifest.PayloadBytes());
  EXPECT_EQ(x->package_bytes, bytes_.size());
  EXPECT_EQ(last_done, x->manifest.PayloadBytes());

  auto skipped = Open(bytes_, 65536);
  ASSERT_TRUE(skipped.ok());
  skipped->SkipSignatureCheck();
  auto y = ExtractFromReader(*skipped, tmp_ / "out2");
  ASSERT_TRUE(y.ok()) << y.error().message();
  EXPECT_TRUE(y->integrity_only);
  EXPECT_EQ(Snapshot(tmp_ / "out2"), Snapshot(src_));
}

TEST_F(SourceTest, ExtractFromReaderLeavesNothingOnFailure) {
  const auto before = ListDir(tmp_.path());
  {
    auto locked = Open(bytes_, 65536);
    ASSERT_TRUE(locked.ok());
    auto x = ExtractFromReader(*locked, tmp_ / "out");
    ASSERT_FALSE(x.ok());
    EXPECT_EQ(x.error().code(), Errc::kPolicy);
  }
  EXPECT_EQ(ListDir(tmp_.path()), before);
  // Fails in the trailer, after every payload entry was written.
  for (std::uint64_t at : {std::uint64_t{2} << 20, std::uint64_t{bytes_.size() - 10}}) {
    auto r = Open(bytes_, 65536, at);
    ASSERT_TRUE(r.ok());
    r->SkipSignatureCheck();
    auto x = ExtractFromReader(*r, tmp_ / "out", {}, ExtractOptions{false});
    ASSERT_FALSE(x.ok());
    EXPECT_EQ(x.error().message(), "test source: disk on fire");
    EXPECT_EQ(ListDir(tmp_.path()), before) << "nothing left after a failure at byte " << at;
  }
  fs::create_directory(tmp_ / "exists");
  auto r = Open(bytes_, 65536);
  ASSERT_TRUE(r.ok());
  r->SkipSignatureCheck();
  auto x = ExtractFromReader(*r, tmp_ / "exists");
  ASSERT_FALSE(x.ok());
  EXPECT_EQ(x.error().code(), Errc::kInvalidArgument);
  EXPECT_TRUE(fs::is_empty(tmp_ / "exists"));
}

}  // namespace
}  // namespace upkeep::packages
