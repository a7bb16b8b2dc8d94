#include "upkeep/trust/payload.hpp"

#include <gtest/gtest.h>
#include <sodium.h>

#include <cctype>
#include <fstream>
#include <vector>

#include "trust_test_util.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/extract.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::trust {
namespace {

using testing::ReadAll;
using testing::TempDir;
using testing::WriteBytes;

constexpr std::uint32_t kChunk = 4096;
constexpr std::size_t kSealedChunk = kChunk + kPayloadChunkOverhead;

std::string PseudoRandom(std::size_t n, std::uint8_t tweak = 0) {
  std::string out(n, '\0');
  unsigned char seed[randombytes_SEEDBYTES] = {tweak};
  randombytes_buf_deterministic(out.data(), n, seed);
  return out;
}

struct Fixture {
  TempDir dir;
  ContentKey key = ContentKey::Generate();
  std::string plain;
  std::filesystem::path plain_path = dir / "payload.upk";
  std::filesystem::path blob_path = dir / "payload.upk.enc";
  std::string blob;

  explicit Fixture(std::size_t size) : plain(PseudoRandom(size)) {
    WriteBytes(plain_path, plain);
    EncryptOptions opts;
    opts.chunk_bytes = kChunk;
    auto info = EncryptFile(plain_path, blob_path, key, opts);
    EXPECT_TRUE(info.ok()) << info.error().message();
    blob = ReadAll(blob_path);
  }

  // Decrypts `bytes` written as a blob; checks that a failure leaves no output or temp file.
  Expected<std::uint64_t> DecryptBytes(const std::string& bytes, const ContentKey* with = nullptr) {
    auto in = dir / "candidate.enc";
    auto out = dir / "candidate.out";
    std::filesystem::remove(in);
    std::filesystem::remove(out);
    WriteBytes(in, bytes);
    const std::size_t before = dir.EntryCount();
    auto r = DecryptFile(in, out, with ? *with : key);
    if (!r.ok()) {
      EXPECT_FALSE(std::filesystem::exists(out)) << "a failed decrypt must leave nothing behind";
      EXPECT_EQ(dir.EntryCount(), before) << "no temporary file may be left";
    } else {
      EXPECT_EQ(ReadAll(out), plain);
    }
    return r;
  }
};

void ExpectFailure(const Expected<std::uint64_t>& r, Errc code, const std::string& words) {
  ASSERT_FALSE(r.ok()) << "expected failure: " << words;
  EXPECT_EQ(r.error().code(), code) << r.error().message();
  EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
}

TEST(PayloadTest, RoundTripsEverySizeAroundChunkBoundaries) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{kChunk - 1}, std::size_t{kChunk},
                           std::size_t{kChunk + 1}, std::size_t{3 * kChunk}, std::size_t{3 * kChunk + 5}}) {
    SCOPED_TRACE(size);
    Fixture f(size);
    EXPECT_EQ(f.blob.size(), EncryptedBlobSize(size, kChunk));
    EXPECT_EQ(f.blob.size(), kPayloadHeaderBytes + size + kPayloadChunkOverhead * (size / kChunk + 1));
    auto out = f.dir / "decrypted.upk";
    auto n = DecryptFile(f.blob_path, out, f.key);
    ASSERT_TRUE(n.ok()) << n.error().message();
    EXPECT_EQ(*n, size);
    EXPECT_EQ(ReadAll(out), f.plain);
    // The ciphertext does not contain the plaintext.
    if (size >= 64) {
      EXPECT_EQ(f.blob.find(f.plain.substr(0, 64)), std::string::npos);
    }
  }
}

TEST(PayloadTest, ReportsBlobDigestAndLengthForTufTargets) {
  TempDir dir;
  auto key = ContentKey::Generate();
  WriteBytes(dir / "p", PseudoRandom(10000));
  EncryptOptions opts;
  opts.chunk_bytes = kChunk;
  auto info = EncryptFile(dir / "p", dir / "p.enc", key, opts);
  ASSERT_TRUE(info.ok());
  auto digest = HashFile(dir / "p.enc").value();
  EXPECT_EQ(info->blob_sha256_hex, digest.sha256_hex);
  EXPECT_EQ(info->blob_bytes, digest.size);
  EXPECT_EQ(info->plaintext_bytes, 10000u);
}

TEST(PayloadTest, EncryptingTwiceGivesDifferentBlobs) {
  TempDir dir;
  auto key = ContentKey::Generate();
  WriteBytes(dir / "p", PseudoRandom(5000));
  ASSERT_TRUE(EncryptFile(dir / "p", dir / "a", key).ok());
  ASSERT_TRUE(EncryptFile(dir / "p", dir / "b", key).ok());
  EXPECT_NE(ReadAll(dir / "a"), ReadAll(dir / "b"));
}

TEST(PayloadTest, WrongKeyIsNamedAsSuch) {
  Fixture f(3 * kChunk + 7);
  auto other = ContentKey::Generate();
  ExpectFailure(f.DecryptBytes(f.blob, &other), Errc::kVerification, "wrong content key");
}

TEST(PayloadTest, TamperedByteInEachPartIsRefused) {
  Fixture f(3 * kChunk + 100);
  struct Case {
    const char* what;
    std::size_t offset;
    Errc code;
    const char* words;
  };
  const std::size_t chunks = kPayloadHeaderBytes;
  const Case cases[] = {
      {"magic", 0, Errc::kParse, "not an encrypted Upkeep payload"},
      {"version", 9, Errc::kParse, "version"},
      {"flags", 11, Errc::kParse, "flags"},
      {"chunk size (to another valid size)", 13, Errc::kVerification, "chunk 0"},
      {"chunk size (to an invalid size)", 12, Errc::kParse, "chunk size"},
      {"plaintext length (in range)", 20, Errc::kVerification, "chunk 0"},
      {"plaintext length (low byte)", 23, Errc::kVerification, "chunk 0"},
      {"plaintext length (out of range)", 16, Errc::kParse, "length"},
      {"key check", 30, Errc::kVerification, "key check"},
      {"stream header", 50, Errc::kVerification, "chunk 0"},
      {"first chunk ciphertext", chunks + 100, Errc::kVerification, "chunk 0"},
      {"first chunk tag", chunks + kSealedChunk - 1, Errc::kVerification, "chunk 0"},
      {"middle chunk", chunks + kSealedChunk + 2000, Errc::kVerification, "chunk 1"},
      {"final chunk", chunks + 3 * kSealedChunk + 10, Errc::kVerification, "chunk 3"},
      {"last byte", f.blob.size() - 1, Errc::kVerification, "chunk 3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::string bad = f.blob;
    bad[c.offset] = static_cast<char>(bad[c.offset] ^ (c.offset == 12 ? 0x80 : 0x10));
    ExpectFailure(f.DecryptBytes(bad), c.code, c.words);
  }
  // The untouched blob still decrypts, so each failure above came from its one byte.
  EXPECT_TRUE(f.DecryptBytes(f.blob).ok());
}

TEST(PayloadTest, TruncationAtEveryChunkBoundaryIsDetected) {
  Fixture f(3 * kChunk + 100);  // chunks 0..2 full (MESSAGE), chunk 3 FINAL
  for (std::size_t k = 0; k <= 3; ++k) {
    SCOPED_TRACE(k);
    ExpectFailure(f.DecryptBytes(f.blob.substr(0, kPayloadHeaderBytes + k * kSealedChunk)), Errc::kVerification,
                  "truncated");
  }
}

TEST(PayloadTest, TruncationMidChunkAndInsideHeaderIsDetected) {
  Fixture f(3 * kChunk + 100);
  for (std::size_t cut : {kPayloadHeaderBytes + 1, kPayloadHeaderBytes + 16, kPayloadHeaderBytes + 17,
                          kPayloadHeaderBytes + kSealedChunk + 500, f.blob.size() - 1}) {
    SCOPED_TRACE(cut);
    ExpectFailure(f.DecryptBytes(f.blob.substr(0, cut)), Errc::kVerification, "truncated");
  }
  ExpectFailure(f.DecryptBytes(f.blob.substr(0, 40)), Errc::kVerification, "truncated inside the");
  ExpectFailure(f.DecryptBytes(""), Errc::kParse, "bad magic");
}

TEST(PayloadTest, ExactMultipleOfChunkEndsWithEmptyFinalChunk) {
  Fixture f(2 * kChunk);
  // Dropping the empty FINAL chunk leaves a blob that ends on a MESSAGE chunk: truncated.
  ExpectFailure(f.DecryptBytes(f.blob.substr(0, f.blob.size() - kPayloadChunkOverhead)), Errc::kVerification,
                "truncated");
}

TEST(PayloadTest, TrailingDataAndReorderedChunksAreRefused) {
  Fixture f(3 * kChunk + 100);
  ExpectFailure(f.DecryptBytes(f.blob + "x"), Errc::kVerification, "trailing data");
  ExpectFailure(f.DecryptBytes(f.blob + f.blob.substr(kPayloadHeaderBytes, kSealedChunk)), Errc::kVerification,
                "trailing data");

  std::string swapped = f.blob;
  std::string c0 = f.blob.substr(kPayloadHeaderBytes, kSealedChunk);
  std::string c1 = f.blob.substr(kPayloadHeaderBytes + kSealedChunk, kSealedChunk);
  swapped.replace(kPayloadHeaderBytes, kSealedChunk, c1);
  swapped.replace(kPayloadHeaderBytes + kSealedChunk, kSealedChunk, c0);
  ExpectFailure(f.DecryptBytes(swapped), Errc::kVerification, "chunk 0");

  // A chunk dropped from the middle.
  std::string dropped = f.blob;
  dropped.erase(kPayloadHeaderBytes + kSealedChunk, kSealedChunk);
  ExpectFailure(f.DecryptBytes(dropped), Errc::kVerification, "chunk 1");
}

TEST(PayloadTest, RefusesToOverwriteAndReportsMissingInput) {
  Fixture f(100);
  WriteBytes(f.dir / "existing", "keep me");
  auto r = DecryptFile(f.blob_path, f.dir / "existing", f.key);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(ReadAll(f.dir / "existing"), "keep me");
  auto e = EncryptFile(f.plain_path, f.dir / "existing", f.key);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(ReadAll(f.dir / "existing"), "keep me");

  auto missing = DecryptFile(f.dir / "nope", f.dir / "out", f.key);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  EXPECT_FALSE(std::filesystem::exists(f.dir / "out"));
}

TEST(PayloadTest, RefusesChunkSizesOutOfBounds) {
  Fixture f(10);
  for (std::uint32_t bad : {std::uint32_t{0}, kMinPayloadChunkBytes - 1, kMaxPayloadChunkBytes + 1}) {
    EncryptOptions opts;
    opts.chunk_bytes = bad;
    auto r = EncryptFile(f.plain_path, f.dir / ("x" + std::to_string(bad)), f.key, opts);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  }
}

// Peak resident memory (VmHWM) in KiB; resets the mark first when the kernel allows it.
long PeakRssKiB() {
  std::ifstream status("/proc/self/status");
  std::string line;
  while (std::getline(status, line)) {
    if (line.rfind("VmHWM:", 0) == 0) return std::stol(line.substr(6));
  }
  return -1;
}
bool ResetPeakRss() {
  std::ofstream clear("/proc/self/clear_refs");
  clear << "5";
  clear.flush();
  return static_cast<bool>(clear);
}

TEST(PayloadTest, Streams64MiBWithBoundedMemory) {
  TempDir dir;
  constexpr std::size_t kMiB = 1 << 20;
  constexpr std::size_t kTotal = 64 * kMiB;
  Hasher plain_hash;
  {
    std::ofstream out(dir / "big", std::ios::binary);
    std::string block(kMiB, '\0');
    for (std::size_t i = 0; i < kTotal / kMiB; ++i) {
      unsigned char seed[randombytes_SEEDBYTES] = {static_cast<unsigned char>(i)};
      randombytes_buf_deterministic(block.data(), block.size(), seed);
      plain_hash.Update(block);
      out.write(block.data(), static_cast<std::streamsize>(block.size()));
    }
  }
  const std::string plain_digest = plain_hash.FinishHex();
  auto key = ContentKey::Generate();

  const bool reset = ResetPeakRss();
  const long before = PeakRssKiB();
  auto info = EncryptFile(dir / "big", dir / "big.enc", key);
  ASSERT_TRUE(info.ok()) << info.error().message();
  auto n = DecryptFile(dir / "big.enc", dir / "big.out", key);
  ASSERT_TRUE(n.ok()) << n.error().message();
  const long after = PeakRssKiB();

  EXPECT_EQ(*n, kTotal);
  EXPECT_EQ(info->blob_bytes, EncryptedBlobSize(kTotal, kDefaultPayloadChunkBytes));
  EXPECT_EQ(HashFile(dir / "big.out").value().sha256_hex, plain_digest);
  EXPECT_EQ(HashFile(dir / "big.enc").value().sha256_hex, info->blob_sha256_hex);
  ASSERT_GT(before, 0);
  RecordProperty("peak_rss_growth_kib", std::to_string(after - before));
  RecordProperty("peak_rss_reset", reset ? "yes" : "no");
  // Two 1 MiB buffers per call; reading the file whole would add 64 MiB.
  EXPECT_LT(after - before, 16 * 1024) << "peak RSS grew by " << (after - before) << " KiB (reset: " << reset << ")";
}

// ---------------------------------------------------------------------------------------------
// OpenEncryptedBlob / OpenEncryptedPackage

BlobExpectation ExpectationOf(const std::string& blob) {
  BlobExpectation e;
  e.length = blob.size();
  e.sha256_hex = Sha256Hex(blob);
  return e;
}

// Writes `blob` as a file and reads the plaintext through OpenEncryptedBlob, `step` bytes per Read.
Expected<std::string> ReadBlob(const TempDir& dir, const std::string& blob, const ContentKey& key,
                               const BlobExpectation& expect, std::size_t step = 1 << 20) {
  auto path = dir / "stream.enc";
  WriteBytes(path, blob);
  UPK_TRY_ASSIGN(auto source, OpenEncryptedBlob(path, key, expect));
  std::string out;
  std::vector<std::uint8_t> buf(step);
  for (;;) {
    UPK_TRY_ASSIGN(std::size_t n, source->Read(buf));
    if (n == 0) break;
    EXPECT_LE(n, step);
    out.append(reinterpret_cast<const char*>(buf.data()), n);
    EXPECT_EQ(source->position(), out.size());
  }
  // The end is sticky, and so would an error be.
  auto again = source->Read(buf);
  EXPECT_TRUE(again.ok() && *again == 0);
  return out;
}

void ExpectStreamFailure(const Expected<std::string>& r, Errc code, const std::string& words) {
  ASSERT_FALSE(r.ok()) << "expected failure: " << words;
  EXPECT_EQ(r.error().code(), code) << r.error().message();
  EXPECT_NE(r.error().message().find(words), std::string::npos) << r.error().message();
}

TEST(BlobSourceTest, RoundTripsInOddSizedBuffers) {
  for (std::size_t size : {std::size_t{0}, std::size_t{1}, std::size_t{kChunk}, std::size_t{3 * kChunk + 5}}) {
    Fixture f(size);
    for (std::size_t step : {std::size_t{1}, std::size_t{7}, std::size_t{kChunk - 1}, std::size_t{kChunk},
                             std::size_t{kChunk + 1}, std::size_t{1} << 20}) {
      SCOPED_TRACE(std::to_string(size) + " bytes read " + std::to_string(step) + " at a time");
      auto got = ReadBlob(f.dir, f.blob, f.key, ExpectationOf(f.blob), step);
      ASSERT_TRUE(got.ok()) << got.error().message();
      EXPECT_EQ(*got, f.plain);
    }
  }
}

TEST(BlobSourceTest, AcceptsUpperCaseDigestAndRefusesMalformedOnes) {
  Fixture f(100);
  auto e = ExpectationOf(f.blob);
  for (char& c : e.sha256_hex) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  EXPECT_TRUE(ReadBlob(f.dir, f.blob, f.key, e).ok());
  e.sha256_hex = "abc";
  ExpectStreamFailure(ReadBlob(f.dir, f.blob, f.key, e), Errc::kInvalidArgument, "sha256");
  auto missing = OpenEncryptedBlob(f.dir / "nope", f.key, ExpectationOf(f.blob));
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
}

TEST(BlobSourceTest, WrongKeyIsRefusedAtOpen) {
  Fixture f(3 * kChunk);
  auto other = ContentKey::Generate();
  ExpectStreamFailure(ReadBlob(f.dir, f.blob, other, ExpectationOf(f.blob)), Errc::kVerification, "wrong content key");
}

TEST(BlobSourceTest, OneAlteredByteIsRefusedEvenWhenTheExpectationMatchesIt) {
  Fixture f(3 * kChunk + 100);
  struct Case {
    const char* what;
    std::size_t offset;
    Errc code;
    const char* words;
  };
  const Case cases[] = {
      {"header magic", 0, Errc::kParse, "not an encrypted Upkeep payload"},
      {"header length", 20, Errc::kVerification, "chunk 0"},
      {"header stream header", 50, Errc::kVerification, "chunk 0"},
      {"middle chunk", kPayloadHeaderBytes + kSealedChunk + 2000, Errc::kVerification, "chunk 1"},
      {"last chunk", f.blob.size() - 1, Errc::kVerification, "chunk 3"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.what);
    std::string bad = f.blob;
    bad[c.offset] = static_cast<char>(bad[c.offset] ^ 0x10);
    // The expectation describes the altered blob, so only decryption can catch it.
    ExpectStreamFailure(ReadBlob(f.dir, bad, f.key, ExpectationOf(bad), 1000), c.code, c.words);
    // And against the real expectation: the same size, so it gets as far as decrypting too.
    ExpectStreamFailure(ReadBlob(f.dir, bad, f.key, ExpectationOf(f.blob)), c.code, c.words);
  }
}

TEST(BlobSourceTest, TruncatedAndTrailingBytesAreRefused) {
  Fixture f(3 * kChunk + 100);
  for (std::size_t cut : {std::size_t{40}, kPayloadHeaderBytes + kSealedChunk, f.blob.size() - 1}) {
    SCOPED_TRACE(cut);
    std::string shorter = f.blob.substr(0, cut);
    ExpectStreamFailure(ReadBlob(f.dir, shorter, f.key, ExpectationOf(shorter)), Errc::kVerification, "truncated");
  }
  std::string longer = f.blob + "x";
  ExpectStreamFailure(ReadBlob(f.dir, longer, f.key, ExpectationOf(longer)), Errc::kVerification, "trailing data");
}

TEST(BlobSourceTest, WrongExpectedLengthIsRefusedBeforeDecrypting) {
  Fixture f(3 * kChunk);
  for (std::uint64_t length : {std::uint64_t{f.blob.size() - 1}, std::uint64_t{f.blob.size() + 1}, std::uint64_t{0}}) {
    auto e = ExpectationOf(f.blob);
    e.length = length;
    auto path = f.dir / "stream.enc";
    WriteBytes(path, f.blob);
    auto source = OpenEncryptedBlob(path, f.key, e);
    ASSERT_FALSE(source.ok());
    EXPECT_EQ(source.error().code(), Errc::kVerification);
    EXPECT_NE(source.error().message().find("blob length " + std::to_string(f.blob.size()) + ", expected " +
                                            std::to_string(length)),
              std::string::npos)
        << source.error().message();
  }
}

TEST(BlobSourceTest, WrongExpectedDigestFailsAtTheEndAndStaysFailed) {
  Fixture f(3 * kChunk + 100);
  auto e = ExpectationOf(f.blob);
  e.sha256_hex = Sha256Hex("something else");
  auto path = f.dir / "stream.enc";
  WriteBytes(path, f.blob);
  auto source = OpenEncryptedBlob(path, f.key, e);
  ASSERT_TRUE(source.ok()) << source.error().message();
  std::vector<std::uint8_t> buf(1000);
  std::uint64_t served = 0;
  Expected<std::size_t> n = std::size_t{0};
  while ((n = (*source)->Read(buf)).ok() && *n > 0) served += *n;
  ASSERT_FALSE(n.ok()) << "the final 0 must never come for a blob that differs from the expectation";
  EXPECT_EQ(n.error().code(), Errc::kVerification);
  EXPECT_NE(n.error().message().find("blob sha256 mismatch"), std::string::npos) << n.error().message();
  EXPECT_EQ(served, f.plain.size());
  auto again = (*source)->Read(buf);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().message(), n.error().message());
}

// A real package, encrypted, installed in one pass.
struct PackageBlob {
  TempDir dir;
  packages::PrivateKey signer = packages::PrivateKey::GenerateEd25519();
  ContentKey key = ContentKey::Generate();
  EncryptedBlobInfo info;
  std::string big = PseudoRandom(3 << 20, 9);

  PackageBlob() {
    std::filesystem::create_directories(dir / "src/sub");
    WriteBytes(dir / "src/big.bin", big);
    WriteBytes(dir / "src/sub/small.txt", "small\n");
    packages::PackSpec spec;
    spec.manifest.name = "site";
    spec.manifest.version = packages::Version::Parse("1.2.3").value();
    spec.manifest.kind = packages::Kind::kSoftware;
    spec.payload_dir = dir / "src";
    auto m = packages::WritePackage(spec, {signer}, dir / "p.upk");
    EXPECT_TRUE(m.ok()) << m.error().message();
    auto i = EncryptFile(dir / "p.upk", dir / "p.enc", key);
    EXPECT_TRUE(i.ok()) << i.error().message();
    if (i.ok()) info = *i;
  }
  BlobExpectation Expect() const {
    BlobExpectation e;
    e.length = info.blob_bytes;
    e.sha256_hex = info.blob_sha256_hex;
    return e;
  }
};

TEST(EncryptedPackageTest, VerifiesDecryptsAndInstallsInOnePass) {
  PackageBlob b;
  auto reader = OpenEncryptedPackage(b.dir / "p.enc", b.key, b.Expect());
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  ASSERT_TRUE(reader->VerifySignatures({b.signer.public_key()}).ok());
  auto x = packages::ExtractFromReader(*reader, b.dir / "out", {}, packages::ExtractOptions{false});
  ASSERT_TRUE(x.ok()) << x.error().message();
  EXPECT_EQ(ReadAll(b.dir / "out/big.bin"), b.big);
  EXPECT_EQ(ReadAll(b.dir / "out/sub/small.txt"), "small\n");
  EXPECT_EQ(x->package_bytes, std::filesystem::file_size(b.dir / "p.upk"));
  EXPECT_FALSE(x->integrity_only);
}

TEST(EncryptedPackageTest, OnlyTheBlobDigestWrongMeansNothingIsInstalled) {
  PackageBlob b;
  auto e = b.Expect();
  e.sha256_hex = Sha256Hex("not this blob");
  auto reader = OpenEncryptedPackage(b.dir / "p.enc", b.key, e);
  ASSERT_TRUE(reader.ok()) << reader.error().message();
  ASSERT_TRUE(reader->VerifySignatures({b.signer.public_key()}).ok());
  const std::size_t before = b.dir.EntryCount();
  auto x = packages::ExtractFromReader(*reader, b.dir / "out", {}, packages::ExtractOptions{false});
  ASSERT_FALSE(x.ok()) << "a blob that differs from the TUF target must never be installed";
  EXPECT_EQ(x.error().code(), Errc::kVerification);
  EXPECT_NE(x.error().message().find("blob sha256 mismatch"), std::string::npos) << x.error().message();
  EXPECT_FALSE(std::filesystem::exists(b.dir / "out"));
  EXPECT_EQ(b.dir.EntryCount(), before) << "no temporary directory may be left";
}

TEST(EncryptedPackageTest, WrongKeyOrLengthFailsAtOpen) {
  PackageBlob b;
  auto other = ContentKey::Generate();
  auto r = OpenEncryptedPackage(b.dir / "p.enc", other, b.Expect());
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("wrong content key"), std::string::npos);
  auto e = b.Expect();
  e.length += 1;
  auto r2 = OpenEncryptedPackage(b.dir / "p.enc", b.key, e);
  ASSERT_FALSE(r2.ok());
  EXPECT_NE(r2.error().message().find("blob length"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::trust
