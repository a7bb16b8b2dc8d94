#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "test_servers.hpp"
#include "upkeep/agent/downloader.hpp"
#include "upkeep/agent/updater_client.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/net/testing_cert.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;
using test::FakeSleeper;
using test::RawAnswer;
using test::RawRequest;
using test::RawServer;

constexpr std::size_t kLen = 1024 * 1024 + 17;
constexpr std::size_t kCut = 300000;

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::mt19937 rng(seed);
  std::string s(n, '\0');
  for (auto& c : s) c = static_cast<char>(rng());
  return s;
}

std::string ReadAll(const std::filesystem::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteAll(const std::filesystem::path& p, const std::string& data) {
  std::ofstream(p, std::ios::binary | std::ios::trunc).write(data.data(), static_cast<std::streamsize>(data.size()));
}

// A well-behaved range server for a blob with ETag "v1", in raw bytes.
RawAnswer Serve(const RawRequest& req, const std::string& blob, bool honour_range = true) {
  const std::string range = req.Header("Range");
  if (honour_range && !range.empty() && req.Header("If-Range") == "\"v1\"") {
    const std::size_t from = std::stoul(range.substr(6));
    if (from >= blob.size()) return RawAnswer{"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n", 0ms};
    return RawAnswer{"HTTP/1.1 206 Partial Content\r\nETag: \"v1\"\r\nContent-Range: bytes " + std::to_string(from) + "-" +
                         std::to_string(blob.size() - 1) + "/" + std::to_string(blob.size()) +
                         "\r\nContent-Length: " + std::to_string(blob.size() - from) + "\r\n\r\n" + blob.substr(from),
                     0ms};
  }
  return RawAnswer{"HTTP/1.1 200 OK\r\nETag: \"v1\"\r\nContent-Length: " + std::to_string(blob.size()) + "\r\n\r\n" + blob,
                   0ms};
}

class DownloaderTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) /
           ("h5-dl-" + std::to_string(::getpid()) + "-" + ::testing::UnitTest::GetInstance()->current_test_info()->name());
    std::filesystem::remove_all(dir_);
    std::filesystem::create_directories(dir_ / "srv");
    std::filesystem::create_directories(dir_ / "dl");
    blob_ = RandomBytes(kLen, 7);
    WriteAll(dir_ / "srv" / "blob", blob_);
    net::ServerOptions o;
    o.io_threads = 1;
    server_ = std::make_unique<net::Server>(o);
    ASSERT_TRUE(server_->Handle(net::Method::kGet, "/repo/targets/*", [this](const net::Request& r) {
                  auto f = net::OpenFile::Open(dir_ / "srv" / std::string(r.path_suffix()));
                  if (!f.ok()) return net::Response::JsonError(404, "not_found", "no such blob");
                  return net::Response::FromFile(*f, "application/octet-stream");
                }).ok());
    ASSERT_TRUE(server_->Start().ok());
    auto http = MakeHttpClient();
    ASSERT_TRUE(http.ok());
    http_ = std::move(http).value();
  }
  void TearDown() override {
    server_->Stop(1s);
    std::filesystem::remove_all(dir_);
  }

  DownloadRequest Request(const std::string& url) const {
    DownloadRequest r;
    r.url = url;
    r.dest = dir_ / "dl" / "blob.upk";
    r.length = blob_.size();
    r.sha256_hex = Sha256Hex(blob_);
    return r;
  }
  std::string NetUrl(const std::string& name = "blob") const {
    return "http://127.0.0.1:" + std::to_string(server_->ports().at(0)) + "/repo/targets/" + name;
  }
  std::filesystem::path Part() const { return dir_ / "dl" / "blob.upk.part"; }
  std::filesystem::path Meta() const { return dir_ / "dl" / "blob.upk.part.json"; }

  // Downloads with a cancel after `cut` bytes, leaving a part.
  void CancelAfter(DownloadRequest r, std::uint64_t cut) {
    std::uint64_t seen = 0;
    r.progress = [&](std::uint64_t done, std::uint64_t) { seen = done; };
    r.cancelled = [&] { return seen >= cut; };
    DownloadStats stats;
    auto res = Download(*http_, r, clock_, sleeper_, &stats);
    ASSERT_FALSE(res.ok());
    EXPECT_EQ(res.error().code(), Errc::kIo);
    EXPECT_NE(res.error().message().find("cancelled"), std::string::npos) << res.error().message();
    EXPECT_TRUE(std::filesystem::exists(Part()));
    EXPECT_TRUE(std::filesystem::exists(Meta()));
    EXPECT_FALSE(std::filesystem::exists(r.dest));
  }

  std::filesystem::path dir_;
  std::string blob_;
  std::unique_ptr<net::Server> server_;
  std::unique_ptr<HttpClient> http_;
  FakeClock clock_{*ParseTimestamp("2030-01-01T00:00:00Z")};
  FakeSleeper sleeper_;
};

TEST_F(DownloaderTest, DownloadsAndVerifies) {
  DownloadStats stats;
  std::uint64_t last_progress = 0;
  DownloadRequest r = Request(NetUrl());
  r.progress = [&](std::uint64_t done, std::uint64_t total) {
    EXPECT_EQ(total, kLen);
    EXPECT_GE(done, last_progress);
    last_progress = done;
  };
  auto res = Download(*http_, r, clock_, sleeper_, &stats);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_EQ(ReadAll(*res), blob_);
  EXPECT_EQ(stats.bytes_transferred, kLen);
  EXPECT_EQ(last_progress, kLen);
  EXPECT_FALSE(std::filesystem::exists(Part()));
  EXPECT_FALSE(std::filesystem::exists(Meta()));
  EXPECT_EQ(sleeper_.total, 0ns);

  // Already there: no transfer at all.
  auto again = Download(*http_, Request("http://127.0.0.1:1/unreachable"), clock_, sleeper_, &stats);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(stats.bytes_transferred, 0u);
}

TEST_F(DownloaderTest, ResumesAfterCancelWithRangeAndIfRange) {
  CancelAfter(Request(NetUrl()), kCut);
  const std::uint64_t part = std::filesystem::file_size(Part());
  ASSERT_GE(part, kCut);
  ASSERT_LT(part, kLen);
  DownloadStats stats;
  auto res = Download(*http_, Request(NetUrl()), clock_, sleeper_, &stats);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_EQ(stats.resumed_from, part);
  EXPECT_EQ(stats.bytes_transferred, kLen - part);  // only the remaining bytes the second time
  EXPECT_FALSE(stats.restarted);
  EXPECT_EQ(ReadAll(*res), blob_);
}

TEST_F(DownloaderTest, ResumesAfterTheConnectionDropsMidBody) {
  int calls = 0;
  RawServer raw([&](const RawRequest& req) {
    if (++calls == 1) {
      RawAnswer a = Serve(req, blob_);
      a.bytes.resize(a.bytes.find("\r\n\r\n") + 4 + kCut);  // drop after kCut body bytes
      return a;
    }
    return Serve(req, blob_);
  });
  DownloadStats stats;
  auto first = Download(*http_, Request(raw.url("/b")), clock_, sleeper_, &stats);
  ASSERT_FALSE(first.ok());
  EXPECT_EQ(first.error().code(), Errc::kIo);
  EXPECT_EQ(std::filesystem::file_size(Part()), kCut);
  EXPECT_EQ(stats.bytes_transferred, kCut);

  auto second = Download(*http_, Request(raw.url("/b")), clock_, sleeper_, &stats);
  ASSERT_TRUE(second.ok()) << second.error().message();
  EXPECT_EQ(stats.bytes_transferred, kLen - kCut);
  EXPECT_EQ(ReadAll(*second), blob_);
  const auto reqs = raw.requests();
  ASSERT_EQ(reqs.size(), 2u);
  EXPECT_EQ(reqs[0].Header("Range"), "");
  EXPECT_EQ(reqs[1].Header("Range"), "bytes=" + std::to_string(kCut) + "-");
  EXPECT_EQ(reqs[1].Header("If-Range"), "\"v1\"");
}

TEST_F(DownloaderTest, CorruptPartIsCaughtByTheRehash) {
  CancelAfter(Request(NetUrl()), kCut);
  std::string part = ReadAll(Part());
  part[1000] = static_cast<char>(part[1000] ^ 0x01);
  WriteAll(Part(), part);
  auto res = Download(*http_, Request(NetUrl()), clock_, sleeper_);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kVerification);
  EXPECT_NE(res.error().message().find("expected " + Sha256Hex(blob_)), std::string::npos) << res.error().message();
  EXPECT_NE(res.error().message().find("got "), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(Part()));
  EXPECT_FALSE(std::filesystem::exists(Meta()));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dl" / "blob.upk"));
  // The next attempt starts over and succeeds.
  DownloadStats stats;
  auto ok = Download(*http_, Request(NetUrl()), clock_, sleeper_, &stats);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(stats.bytes_transferred, kLen);
}

TEST_F(DownloaderTest, ServerIgnoringRangeMeansStartOver) {
  int calls = 0;
  RawServer raw([&](const RawRequest& req) {
    RawAnswer a = Serve(req, blob_, /*honour_range=*/false);
    if (++calls == 1) a.bytes.resize(a.bytes.find("\r\n\r\n") + 4 + kCut);
    return a;
  });
  ASSERT_FALSE(Download(*http_, Request(raw.url("/b")), clock_, sleeper_).ok());
  DownloadStats stats;
  auto res = Download(*http_, Request(raw.url("/b")), clock_, sleeper_, &stats);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_TRUE(stats.restarted);
  EXPECT_EQ(stats.bytes_transferred, kLen);
  EXPECT_EQ(ReadAll(*res), blob_);
}

TEST_F(DownloaderTest, FileChangedBetweenAttemptsRestartsViaIfRange) {
  CancelAfter(Request(NetUrl()), kCut);
  // The blob was re-published (new mtime -> new ETag): If-Range fails, the server sends it whole.
  std::filesystem::last_write_time(dir_ / "srv" / "blob", std::filesystem::file_time_type::clock::now() + 10s);
  DownloadStats stats;
  auto res = Download(*http_, Request(NetUrl()), clock_, sleeper_, &stats);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_GE(stats.resumed_from, kCut);
  EXPECT_TRUE(stats.restarted);
  EXPECT_EQ(stats.bytes_transferred, kLen);
  EXPECT_EQ(ReadAll(*res), blob_);

  // A part kept for another expected blob (new sha256) is not reused at all.
  std::filesystem::remove(dir_ / "dl" / "blob.upk");
  CancelAfter(Request(NetUrl("blob")), kCut);
  const std::string next = RandomBytes(kLen, 99);
  WriteAll(dir_ / "srv" / "blob", next);
  DownloadRequest r = Request(NetUrl());
  r.sha256_hex = Sha256Hex(next);
  auto fresh = Download(*http_, r, clock_, sleeper_, &stats);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  EXPECT_EQ(stats.resumed_from, 0u);
  EXPECT_EQ(ReadAll(*fresh), next);
}

TEST_F(DownloaderTest, WrongBytesAndTooManyBytesAreRefused) {
  const std::string wrong = RandomBytes(kLen, 8);
  RawServer raw([&](const RawRequest& req) {
    if (req.head.find(" /long ") != std::string::npos) return Serve(req, blob_ + "extra");
    if (req.head.find(" /nolen ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 200 OK\r\n\r\n" + blob_ + "extra", 0ms};
    }
    return Serve(req, wrong);
  });
  auto res = Download(*http_, Request(raw.url("/wrong")), clock_, sleeper_);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kVerification);
  EXPECT_NE(res.error().message().find("expected " + Sha256Hex(blob_) + ", got " + Sha256Hex(wrong)), std::string::npos)
      << res.error().message();
  EXPECT_FALSE(std::filesystem::exists(Part()));
  EXPECT_FALSE(std::filesystem::exists(dir_ / "dl" / "blob.upk"));

  for (const std::string path : {"/long", "/nolen"}) {
    auto r = Download(*http_, Request(raw.url(path)), clock_, sleeper_);
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_EQ(r.error().code(), Errc::kVerification) << path << ": " << r.error().message();
    EXPECT_FALSE(std::filesystem::exists(Part())) << path;
  }
}

TEST_F(DownloaderTest, UnsatisfiableRangeAndOverlongPartDeleteThePart) {
  RawServer raw([](const RawRequest&) {
    return RawAnswer{"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\n\r\n", 0ms};
  });
  DownloadRequest r = Request(raw.url("/b"));
  WriteAll(Part(), blob_.substr(0, 1000));
  ASSERT_TRUE(WriteFileAtomic(Meta(), Json{{"url", r.url}, {"sha256", r.sha256_hex}, {"length", r.length},
                                           {"validator", "etag:\"v1\""}}.dump()).ok());
  auto res = Download(*http_, r, clock_, sleeper_);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kVerification);
  EXPECT_NE(res.error().message().find("416"), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(Part()));
  ASSERT_EQ(raw.requests().size(), 1u);
  EXPECT_EQ(raw.requests()[0].Header("Range"), "bytes=1000-");

  WriteAll(Part(), blob_ + "xx");
  ASSERT_TRUE(WriteFileAtomic(Meta(), Json{{"url", r.url}, {"sha256", r.sha256_hex}, {"length", r.length},
                                           {"validator", "etag:\"v1\""}}.dump()).ok());
  res = Download(*http_, r, clock_, sleeper_);
  ASSERT_FALSE(res.ok());
  EXPECT_EQ(res.error().code(), Errc::kVerification);
  EXPECT_NE(res.error().message().find("longer than"), std::string::npos);
  EXPECT_NE(res.error().message().find("expected " + r.sha256_hex), std::string::npos);
  EXPECT_FALSE(std::filesystem::exists(Part()));
  EXPECT_EQ(raw.requests().size(), 1u);  // no request for that one

  // A part without its validator is not trusted: start over.
  WriteAll(Part(), "junk");
  std::filesystem::remove(Meta());
  DownloadStats stats;
  auto fresh = Download(*http_, Request(NetUrl()), clock_, sleeper_, &stats);
  ASSERT_TRUE(fresh.ok()) << fresh.error().message();
  EXPECT_EQ(stats.resumed_from, 0u);
}

TEST_F(DownloaderTest, BusyNotFoundAndBadRequests) {
  RawServer raw([](const RawRequest&) {
    return RawAnswer{"HTTP/1.1 503 Busy\r\nRetry-After: 30\r\nContent-Length: 4\r\n\r\nbusy", 0ms};
  });
  auto busy = Download(*http_, Request(raw.url("/b")), clock_, sleeper_);
  ASSERT_FALSE(busy.ok());
  EXPECT_EQ(busy.error().code(), Errc::kLimit);
  EXPECT_EQ(RetryAfter(busy.error()), std::optional<std::chrono::seconds>(30s));

  auto missing = Download(*http_, Request(NetUrl("absent")), clock_, sleeper_);
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);

  DownloadRequest bad = Request(NetUrl());
  bad.sha256_hex = "ABC";
  EXPECT_EQ(Download(*http_, bad, clock_, sleeper_).error().code(), Errc::kInvalidArgument);
  bad = Request(NetUrl());
  bad.length = 0;
  EXPECT_EQ(Download(*http_, bad, clock_, sleeper_).error().code(), Errc::kInvalidArgument);
}

TEST_F(DownloaderTest, BandwidthLimitSleepsBytesOverLimit) {
  std::atomic<std::uint64_t> limit{100 * 1024};
  DownloadRequest r = Request(NetUrl());
  r.live_bandwidth_limit = &limit;
  auto res = Download(*http_, r, clock_, sleeper_);
  ASSERT_TRUE(res.ok()) << res.error().message();
  const double slept = std::chrono::duration<double>(sleeper_.total).count();
  const double expected = static_cast<double>(kLen) / (100 * 1024);
  EXPECT_NEAR(slept, expected, expected * 0.02) << "slept " << slept << " s";
  EXPECT_EQ(ReadAll(*res), blob_);

  // Unlimited again: no sleeping.
  std::filesystem::remove(r.dest);
  limit = 0;
  sleeper_.total = 0ns;
  ASSERT_TRUE(Download(*http_, r, clock_, sleeper_).ok());
  EXPECT_EQ(sleeper_.total, 0ns);
}

TEST_F(DownloaderTest, CancelWhileThrottled) {
  DownloadRequest r = Request(NetUrl());
  r.bandwidth_limit_bytes_per_second = 1000;
  int polls = 0;
  r.cancelled = [&] { return ++polls > 3; };
  auto res = Download(*http_, r, clock_, sleeper_);
  ASSERT_FALSE(res.ok());
  EXPECT_NE(res.error().message().find("cancelled"), std::string::npos);
  EXPECT_LT(sleeper_.total, 5s);
  EXPECT_FALSE(std::filesystem::exists(r.dest));
}

TEST(FreeSpaceTest, ReportsWhatIsMissing) {
  const auto dir = std::filesystem::path(::testing::TempDir());
  EXPECT_TRUE(CheckFreeSpace(dir, 0, "nothing").ok());
  const std::uint64_t huge = std::uint64_t{1} << 60;
  auto st = CheckFreeSpace(dir, huge, "software 8.0.0");
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kLimit);
  const std::string& m = st.error().message();
  EXPECT_NE(m.find("not enough space on " + dir.string() + " for software 8.0.0: need 1099511627776 MiB, "),
            std::string::npos)
      << m;
  EXPECT_NE(m.find(" MiB free, "), std::string::npos);
  EXPECT_NE(m.find(" MiB missing"), std::string::npos);
  EXPECT_EQ(CheckFreeSpace(dir / "does-not-exist", 1, "x").error().code(), Errc::kIo);
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

TEST(DownloaderTlsTest, ResumesOverHttpsWithAPrivateCa) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / ("h5-dltls-" + std::to_string(::getpid()));
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir / "dl");
  auto cert = net::testing::WriteSelfSignedCertificate(dir, "localhost");
  ASSERT_TRUE(cert.ok());
  const std::string blob = RandomBytes(kLen, 11);
  WriteAll(dir / "blob", blob);
  net::ServerOptions o;
  o.io_threads = 1;
  o.endpoints = {net::Endpoint{"127.0.0.1", 0, true}};
  o.tls = net::TlsOptions{cert->certificate, cert->private_key};
  net::Server server(o);
  ASSERT_TRUE(server.Handle(net::Method::kGet, "/repo/targets/blob", [&](const net::Request&) {
                  auto f = net::OpenFile::Open(dir / "blob");
                  if (!f.ok()) return net::Response::FromError(f.error());
                  return net::Response::FromFile(*f, "application/octet-stream");
                }).ok());
  ASSERT_TRUE(server.Start().ok());
  HttpClientOptions ho;
  ho.ca_file = cert->certificate;
  auto http = MakeHttpClient(ho);
  ASSERT_TRUE(http.ok());
  DownloadRequest r;
  r.url = "https://127.0.0.1:" + std::to_string(server.ports().at(0)) + "/repo/targets/blob";
  r.dest = dir / "dl" / "blob.upk";
  r.length = blob.size();
  r.sha256_hex = Sha256Hex(blob);
  FakeClock clock(*ParseTimestamp("2030-01-01T00:00:00Z"));
  FakeSleeper sleeper;
  std::uint64_t seen = 0;
  DownloadRequest first = r;
  first.progress = [&](std::uint64_t done, std::uint64_t) { seen = done; };
  first.cancelled = [&] { return seen >= kCut; };
  ASSERT_FALSE(Download(**http, first, clock, sleeper).ok());
  DownloadStats stats;
  auto res = Download(**http, r, clock, sleeper, &stats);
  ASSERT_TRUE(res.ok()) << res.error().message();
  EXPECT_GE(stats.resumed_from, kCut);
  EXPECT_EQ(stats.resumed_from + stats.bytes_transferred, kLen);
  EXPECT_EQ(ReadAll(*res), blob);
  server.Stop(std::chrono::seconds(1));
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace upkeep::agent
