#include "upkeep/bundle/bundle.hpp"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>

#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"

namespace upkeep::bundle {
namespace {

namespace fs = std::filesystem;

const SysTime kCreated = ParseTimestamp("2030-01-01T00:00:00Z").value();
const std::string kBundleId = "0123456789abcdef0123456789abcdef";
const std::string kApl1 = "apl-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
const std::string kApl2 = "apl-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "upk-bundle-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

// An in-memory ByteSource that hands out bytes in small, uneven reads.
class MemorySource final : public packages::ByteSource {
 public:
  explicit MemorySource(std::string data) : data_(std::move(data)) {}
  Expected<std::size_t> Read(std::span<std::uint8_t> buf) override {
    std::size_t n = std::min({buf.size(), data_.size() - pos_, std::size_t{700001}});
    std::copy_n(data_.data() + pos_, n, buf.data());
    pos_ += n;
    return n;
  }
  std::uint64_t position() const override { return pos_; }

 private:
  std::string data_;
  std::size_t pos_ = 0;
};

EntrySource Mem(EntryType type, std::string name, std::string data) {
  EntrySource s;
  s.info.type = type;
  s.info.name = std::move(name);
  s.data = std::move(data);
  return s;
}

EntrySource FileEntry(const fs::path& file) {
  EntrySource s;
  s.info.type = EntryType::kBlob;
  auto d = HashFile(file).value();
  s.info.name = d.sha256_hex;
  s.info.length = d.size;
  s.info.sha256 = d.sha256_hex;
  s.file = file;
  return s;
}

void WriteFile(const fs::path& p, const std::string& data) { std::ofstream(p, std::ios::binary) << data; }
std::string ReadAll(const fs::path& p) { return ReadFileBounded(p, 1u << 30).value(); }

struct Sample {
  TempDir dir;
  fs::path out;
  std::string blob1 = std::string(3 * 1024 * 1024 + 17, 'b');  // spans several chunks
  std::string blob2 = "small blob";
  std::vector<EntrySource> entries;

  Sample() : out(dir.path() / "test.upkb") {
    WriteFile(dir.path() / "b1", blob1);
    WriteFile(dir.path() / "b2", blob2);
    entries.push_back(Mem(EntryType::kMetadata, "1.root.json", "{\"root\":1}"));
    entries.push_back(Mem(EntryType::kMetadata, "timestamp.json", "{\"ts\":1}"));
    entries.push_back(Mem(EntryType::kAssignment, kApl1, "{\"assignment\":1}"));
    entries.push_back(Mem(EntryType::kAssignment, kApl2, "{\"assignment\":2}"));
    entries.push_back(FileEntry(dir.path() / "b1"));
    entries.push_back(FileEntry(dir.path() / "b2"));
  }
  Expected<Header> Write() { return WriteBundle(out, kBundleId, kCreated, {kApl1, kApl2}, entries); }
};

// Reads every entry; returns the first error.
Status ReadAllEntries(Reader& r, std::vector<std::string>* contents = nullptr) {
  for (;;) {
    UPK_TRY_ASSIGN(auto next, r.Next());
    if (!next) return OkStatus();
    std::string got;
    UPK_TRY(r.Read([&](std::string_view chunk) -> Status {
      EXPECT_LE(chunk.size(), 1u << 20);
      got.append(chunk);
      return OkStatus();
    }));
    if (contents) contents->push_back(std::move(got));
  }
}

Status ReadBytes(const std::string& bytes) {
  MemorySource src(bytes);
  UPK_TRY_ASSIGN(auto r, Reader::Open(src));
  return ReadAllEntries(*r);
}

// A bundle whose header is `header` (serialised as is) followed by `body`.
std::string Raw(const Json& header, const std::string& body = "") {
  const std::string h = header.dump();
  std::string out("UPKBNDL\x01", 8);
  for (int i = 3; i >= 0; --i) out.push_back(static_cast<char>((h.size() >> (8 * i)) & 0xff));
  return out + h + body;
}

Json EntryJson(const std::string& type, const std::string& name, std::uint64_t length, const std::string& sha) {
  return Json{{"type", type}, {"name", name}, {"length", length}, {"sha256", sha}};
}

Json BaseHeader(Json entries) {
  return Json{{"format", 1}, {"bundle_id", kBundleId}, {"created", "2030-01-01T00:00:00Z"},
              {"appliances", Json::array({kApl1})}, {"entries", std::move(entries)}};
}

// First, so the peak RSS it measures is not raised by the other tests' allocations.
// Peak RSS in KiB: VmHWM (which "5" > /proc/self/clear_refs resets), else ru_maxrss.
long MaxRssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  struct rusage ru {};
  ::getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

TEST(BundleTest, LargeBundleStreamsInConstantMemory) {
  TempDir dir;
  const std::uint64_t kSize = 256ull << 20;
  const fs::path blob = dir.path() / "blob";
  {
    std::ofstream f(blob, std::ios::binary);
    std::string chunk(1 << 20, '\0');
    std::uint64_t x = 88172645463325252ull;
    for (std::uint64_t done = 0; done < kSize; done += chunk.size()) {
      for (auto& c : chunk) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c = static_cast<char>(x);
      }
      f.write(chunk.data(), static_cast<std::streamsize>(chunk.size()));
    }
  }
  // Earlier tests may have raised the peak: reset it (Linux: "5" > clear_refs), so the delta
  // below measures this test alone.
  { std::ofstream("/proc/self/clear_refs") << "5"; }
  const long before = MaxRssKiB();
  EntrySource src;
  src.info.type = EntryType::kBlob;
  src.file = blob;
  const fs::path out = dir.path() / "big.upkb";
  auto h = WriteBundle(out, kBundleId, kCreated, {kApl1}, {Mem(EntryType::kAssignment, kApl1, "{}"), src});
  ASSERT_TRUE(h.ok()) << h.error().message();
  auto file = packages::OpenFileSource(out).value();
  auto r = Reader::Open(*file).value();
  std::uint64_t seen = 0;
  for (;;) {
    auto next = r->Next();
    ASSERT_TRUE(next.ok()) << next.error().message();
    if (!*next) break;
    ASSERT_TRUE(r->Read([&](std::string_view c) {
                   seen += c.size();
                   return OkStatus();
                 }).ok());
  }
  EXPECT_EQ(seen, kSize + 2);
  const long grown_kib = MaxRssKiB() - before;
  std::printf("256 MiB bundle: peak RSS %ld KiB before, grew by %ld KiB while writing and reading it\n", before,
              grown_kib);
  EXPECT_LT(grown_kib, 32 * 1024);
}

TEST(BundleTest, WriteReadRoundTrip) {
  Sample s;
  auto size = BundleSize(kBundleId, kCreated, {kApl1, kApl2}, s.entries);
  ASSERT_TRUE(size.ok()) << size.error().message();
  std::uint64_t last_progress = 0, progress_total = 0;
  WriteOptions opts;
  opts.progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_GE(done, last_progress);
    last_progress = done;
    progress_total = total;
  };
  auto h = WriteBundle(s.out, kBundleId, kCreated, {kApl1, kApl2}, s.entries, opts);
  ASSERT_TRUE(h.ok()) << h.error().message();
  EXPECT_EQ(fs::file_size(s.out), *size);
  EXPECT_EQ(h->TotalBytes(), *size);
  EXPECT_EQ(last_progress, *size);
  EXPECT_EQ(progress_total, *size);
  EXPECT_FALSE(fs::exists(s.out.string() + ".part"));
  struct stat st {};
  ASSERT_EQ(::stat(s.out.c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 0777, 0600u);

  auto src = packages::OpenFileSource(s.out).value();
  auto r = Reader::Open(*src);
  ASSERT_TRUE(r.ok()) << r.error().message();
  const Header& rh = (*r)->header();
  EXPECT_EQ(rh.bundle_id, kBundleId);
  EXPECT_EQ(rh.created, kCreated);
  EXPECT_EQ(rh.appliances, (std::vector<std::string>{kApl1, kApl2}));
  ASSERT_EQ(rh.entries.size(), 6u);
  EXPECT_EQ(rh.entries[4].name, Sha256Hex(s.blob1));
  EXPECT_EQ(rh.entries[4].length, s.blob1.size());
  EXPECT_EQ(rh.entries[0].sha256, Sha256Hex("{\"root\":1}"));
  std::vector<std::string> contents;
  auto st2 = ReadAllEntries(**r, &contents);
  ASSERT_TRUE(st2.ok()) << st2.error().message();
  ASSERT_EQ(contents.size(), 6u);
  EXPECT_EQ(contents[2], "{\"assignment\":1}");
  EXPECT_EQ(contents[4], s.blob1);
  EXPECT_EQ(contents[5], s.blob2);
  // After the end, Next keeps saying so.
  auto again = (*r)->Next();
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());
}

TEST(BundleTest, SkipAndCallOrder) {
  Sample s;
  ASSERT_TRUE(s.Write().ok());
  MemorySource src(ReadAll(s.out));
  auto r = Reader::Open(src).value();
  EXPECT_EQ(r->Read([](std::string_view) { return OkStatus(); }).error().code(), Errc::kInvalidArgument);
  int n = 0;
  for (;;) {
    auto next = r->Next();
    ASSERT_TRUE(next.ok()) << next.error().message();
    if (!*next) break;
    ++n;
    if (n == 1) {
      // Next before the current entry was consumed is a usage error, not final.
      EXPECT_EQ(r->Next().error().code(), Errc::kInvalidArgument);
    }
    ASSERT_TRUE(r->Skip().ok());
  }
  EXPECT_EQ(n, 6);
  // A sink error is returned as is and is final.
  MemorySource src2(ReadAll(s.out));
  auto r2 = Reader::Open(src2).value();
  ASSERT_TRUE(r2->Next().ok());
  auto st = r2->Read([](std::string_view) -> Status { return Error(Errc::kIo, "disk full"); });
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().message(), "disk full");
  EXPECT_EQ(r2->Next().error().message(), "disk full");
}

TEST(BundleTest, TruncatedAtEveryPositionClass) {
  Sample s;
  s.entries.erase(s.entries.begin() + 4);  // keep it small: one small blob
  auto h = s.Write();
  ASSERT_TRUE(h.ok()) << h.error().message();
  const std::string full = ReadAll(s.out);
  std::size_t header_len = 0;
  for (int i = 8; i < 12; ++i) header_len = (header_len << 8) | static_cast<unsigned char>(full[i]);
  const std::size_t total = full.size();

  auto err = [&](std::size_t cut) { return ReadBytes(full.substr(0, cut)); };
  EXPECT_EQ(err(0).error().code(), Errc::kParse);
  EXPECT_NE(err(0).error().message().find("not an Upkeep bundle"), std::string::npos);
  EXPECT_EQ(err(5).error().code(), Errc::kIo);
  EXPECT_NE(err(5).error().message().find("ends at byte 5, inside its magic"), std::string::npos)
      << err(5).error().message();
  EXPECT_NE(err(10).error().message().find("ends at byte 10, inside its header length"), std::string::npos);
  auto in_header = err(12 + header_len / 2);
  EXPECT_EQ(in_header.error().code(), Errc::kIo);
  EXPECT_NE(in_header.error().message().find("inside its " + std::to_string(header_len) + "-byte header"),
            std::string::npos)
      << in_header.error().message();
  // Inside each entry (and at each entry's start): "ends at byte N of TOTAL".
  std::size_t offset = 12 + header_len;
  for (const auto& e : h->entries) {
    for (std::size_t cut : {offset, offset + e.length / 2}) {
      auto st = err(cut);
      ASSERT_FALSE(st.ok()) << cut;
      EXPECT_EQ(st.error().code(), Errc::kIo) << cut;
      EXPECT_EQ(st.error().message(), "bundle is truncated: it ends at byte " + std::to_string(cut) + " of " +
                                          std::to_string(total));
    }
    offset += e.length;
  }
  EXPECT_EQ(offset, total);
  // Every cut whatsoever is an error, never a crash or success.
  for (std::size_t cut = 0; cut < total; ++cut) ASSERT_FALSE(err(cut).ok()) << cut;
  EXPECT_TRUE(err(total).ok());
}

TEST(BundleTest, ByteFlipInEntryNamesIt) {
  Sample s;
  auto h = s.Write();
  ASSERT_TRUE(h.ok());
  std::string bytes = ReadAll(s.out);
  const std::size_t blob1_start = bytes.size() - s.blob2.size() - s.blob1.size();
  bytes[blob1_start + 1000000] ^= 0x04;
  MemorySource src(bytes);
  auto r = Reader::Open(src).value();
  Status st = OkStatus();
  for (int i = 0; i < 6 && st.ok(); ++i) {
    ASSERT_TRUE(r->Next().ok());
    st = r->Skip();  // skipping still hashes
  }
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kVerification);
  EXPECT_NE(st.error().message().find("bundle entry blob " + Sha256Hex(s.blob1) + " is damaged or tampered with"),
            std::string::npos)
      << st.error().message();
  EXPECT_EQ(r->Next().error().code(), Errc::kVerification);  // final
}

TEST(BundleTest, TrailingGarbage) {
  Sample s;
  ASSERT_TRUE(s.Write().ok());
  auto st = ReadBytes(ReadAll(s.out) + "12345");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kParse);
  EXPECT_EQ(st.error().message(), "bundle has 5 bytes after its last entry");
}

TEST(BundleTest, MagicLengthAndFormat) {
  EXPECT_NE(ReadBytes("PK\x03\x04 not a bundle at all").error().message().find("not an Upkeep bundle"),
            std::string::npos);
  EXPECT_NE(ReadBytes(std::string("UPKBNDL\x02", 8) + "xxxx").error().message().find("format version 2"),
            std::string::npos);
  EXPECT_EQ(ReadBytes(std::string("UPKBNDL\x01\x01\x00\x00\x01", 12)).error().code(), Errc::kLimit);
  EXPECT_EQ(ReadBytes(std::string("UPKBNDL\x01\x00\x00\x00\x00", 12)).error().code(), Errc::kParse);
  EXPECT_EQ(ReadBytes(std::string("UPKBNDL\x01\x00\x00\x00\x03", 12) + "{[}").error().code(), Errc::kParse);
  Json h = BaseHeader(Json::array());
  h["format"] = 2;
  EXPECT_NE(ReadBytes(Raw(h)).error().message().find("format 2 is not supported"), std::string::npos);
  EXPECT_TRUE(ReadBytes(Raw(BaseHeader(Json::array()))).ok());
}

TEST(BundleTest, HeaderRuleViolations) {
  const std::string sha = Sha256Hex("x");
  struct Case {
    const char* what;
    Json entries;
    Errc code;
    const char* message;
  };
  const std::vector<Case> cases = {
      {"duplicate", Json::array({EntryJson("metadata", "a.json", 1, sha), EntryJson("metadata", "a.json", 1, sha)}),
       Errc::kParse, "appears twice"},
      {"unsafe", Json::array({EntryJson("metadata", "../x", 1, sha)}), Errc::kParse, "not a safe file name"},
      {"dotfile", Json::array({EntryJson("metadata", ".hidden", 1, sha)}), Errc::kParse, "not a safe file name"},
      {"slash", Json::array({EntryJson("metadata", "a/b", 1, sha)}), Errc::kParse, "not a safe file name"},
      {"long", Json::array({EntryJson("metadata", std::string(201, 'a'), 1, sha)}), Errc::kParse, "safe file name"},
      {"blob first", Json::array({EntryJson("blob", sha, 1, sha), EntryJson("metadata", "a.json", 1, sha)}),
       Errc::kParse, "comes after a blob"},
      {"blob name", Json::array({EntryJson("blob", "b", 1, sha)}), Errc::kParse, "name must be its SHA-256"},
      {"huge", Json::array({EntryJson("blob", sha, ~std::uint64_t{0}, sha)}), Errc::kLimit, "more than"},
      {"big metadata", Json::array({EntryJson("metadata", "a.json", kMaxMetadataBytes + 1, sha)}), Errc::kLimit,
       "more than"},
      {"big assignment", Json::array({EntryJson("assignment", kApl1, kMaxAssignmentBytes + 1, sha)}), Errc::kLimit,
       "more than"},
      {"other appliance", Json::array({EntryJson("assignment", kApl2, 1, sha)}), Errc::kParse,
       "does not list"},
      {"bad type", Json::array({EntryJson("script", "a", 1, sha)}), Errc::kParse, "unknown type"},
      {"bad sha", Json::array({EntryJson("metadata", "a", 1, "ABC")}), Errc::kParse, "sha256"},
  };
  for (const Case& c : cases) {
    auto st = ReadBytes(Raw(BaseHeader(c.entries)));
    ASSERT_FALSE(st.ok()) << c.what;
    EXPECT_EQ(st.error().code(), c.code) << c.what << ": " << st.error().message();
    EXPECT_NE(st.error().message().find(c.message), std::string::npos) << c.what << ": " << st.error().message();
    EXPECT_NE(st.error().message().find("bundle header"), std::string::npos) << st.error().message();
  }
  Json negative = BaseHeader(Json::array({EntryJson("metadata", "a", 1, sha)}));
  negative["entries"][0]["length"] = -1;
  EXPECT_EQ(ReadBytes(Raw(negative)).error().code(), Errc::kParse);
  negative["entries"][0]["length"] = 1.5;
  EXPECT_EQ(ReadBytes(Raw(negative)).error().code(), Errc::kParse);

  Json many = Json::array();
  for (std::size_t i = 0; i <= kMaxEntries; ++i) many.push_back(EntryJson("metadata", "m" + std::to_string(i), 0, sha));
  auto st = ReadBytes(Raw(BaseHeader(many)));
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kLimit);
  EXPECT_NE(st.error().message().find("10001 entries"), std::string::npos) << st.error().message();

  // The writer applies the same rules.
  TempDir dir;
  auto w = WriteBundle(dir.path() / "x.upkb", kBundleId, kCreated, {kApl1},
                       {Mem(EntryType::kMetadata, "../evil", "x")});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), Errc::kInvalidArgument);
  EXPECT_FALSE(fs::exists(dir.path() / "x.upkb"));
  w = WriteBundle(dir.path() / "x.upkb", "not-an-id", kCreated, {kApl1}, {});
  ASSERT_FALSE(w.ok());
  EXPECT_EQ(w.error().code(), Errc::kInvalidArgument);
}

TEST(BundleTest, WriterRefusesLyingFileSourcesAndLeavesNoFile) {
  TempDir dir;
  const fs::path out = dir.path() / "b.upkb";
  WriteFile(dir.path() / "blob", "the real content");
  EntrySource good = FileEntry(dir.path() / "blob");
  auto expect_nothing = [&](const Expected<Header>& w, Errc code) {
    ASSERT_FALSE(w.ok());
    EXPECT_EQ(w.error().code(), code) << w.error().message();
    EXPECT_NE(w.error().message().find("bundle entry blob"), std::string::npos) << w.error().message();
    EXPECT_FALSE(fs::exists(out));
    EXPECT_FALSE(fs::exists(out.string() + ".part"));
  };
  EntrySource shorter = good;
  shorter.info.length += 1;
  expect_nothing(WriteBundle(out, kBundleId, kCreated, {kApl1}, {shorter}), Errc::kIo);
  EntrySource longer = good;
  longer.info.length -= 1;
  expect_nothing(WriteBundle(out, kBundleId, kCreated, {kApl1}, {longer}), Errc::kIo);
  EntrySource other_hash = good;
  WriteFile(dir.path() / "blob", "the fake content");  // same length, another digest
  expect_nothing(WriteBundle(out, kBundleId, kCreated, {kApl1}, {other_hash}), Errc::kVerification);
  EntrySource missing = good;
  missing.file = dir.path() / "nope";
  auto w = WriteBundle(out, kBundleId, kCreated, {kApl1}, {missing});
  ASSERT_FALSE(w.ok());
  EXPECT_FALSE(fs::exists(out));
  EXPECT_FALSE(fs::exists(out.string() + ".part"));
  // In-memory data with a digest that does not match.
  EntrySource mem = Mem(EntryType::kMetadata, "a.json", "abc");
  mem.info.sha256 = Sha256Hex("abd");
  EXPECT_EQ(WriteBundle(out, kBundleId, kCreated, {kApl1}, {mem}).error().code(), Errc::kVerification);
  // A file source without a digest is hashed by the writer.
  EntrySource unhashed;
  unhashed.info.type = EntryType::kBlob;
  unhashed.file = dir.path() / "blob";
  auto ok = WriteBundle(out, kBundleId, kCreated, {kApl1}, {unhashed});
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->entries[0].name, Sha256Hex("the fake content"));
  EXPECT_TRUE(ReadBytes(ReadAll(out)).ok());
}

}  // namespace
}  // namespace upkeep::bundle
