// RouteOptions::body_to_file and RouteOptions::precheck: request bodies streamed to a file (hash,
// size, 0600, deleted after the answer unless renamed), the early check before any body byte is
// read (with and without Expect: 100-continue), and the failure paths (over the limit, no
// Content-Length, disconnect, stall, server stop, unwritable directory) leaving no file behind.
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <sstream>
#include <thread>

#include "test_client.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::net {
namespace {

using namespace std::chrono_literals;
using test::Get;
using test::RawClient;
namespace fs = std::filesystem;

std::string RandomBytes(std::size_t n, unsigned seed) {
  std::string s(n, '\0');
  std::mt19937_64 rng(seed);
  for (std::size_t i = 0; i + 8 <= n; i += 8) {
    std::uint64_t v = rng();
    std::memcpy(s.data() + i, &v, 8);
  }
  for (std::size_t i = n - n % 8; i < n; ++i) s[i] = static_cast<char>(rng());
  return s;
}

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  std::ostringstream out;
  out << in.rdbuf();
  return out.str();
}

std::size_t CountEntries(const fs::path& dir) {
  std::error_code ec;
  std::size_t n = 0;
  for (auto it = fs::directory_iterator(dir, ec); !ec && it != fs::directory_iterator(); it.increment(ec)) ++n;
  return n;
}

// Polls until `dir` holds `count` entries (the server removes files on its own threads).
bool WaitEntries(const fs::path& dir, std::size_t count, std::chrono::milliseconds within = 3s) {
  auto until = std::chrono::steady_clock::now() + within;
  while (CountEntries(dir) != count) {
    if (std::chrono::steady_clock::now() > until) return false;
    std::this_thread::sleep_for(5ms);
  }
  return true;
}

std::string PutHead(std::string_view path, std::uint64_t length, std::string_view extra = "Authorization: ok\r\n") {
  return "PUT " + std::string(path) + " HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(length) + "\r\n" +
         std::string(extra) + "\r\n";
}

class UploadTest : public ::testing::Test {
 protected:
  void SetUp() override {
    root_ = fs::temp_directory_path() / ("upkeep-net-upload-" + std::to_string(::getpid()) + "-" +
                                         ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(root_);
    fs::create_directories(root_ / "incoming");
    fs::create_directories(root_ / "kept");
  }
  void TearDown() override {
    server_.reset();
    std::error_code ec;
    fs::remove_all(root_, ec);
  }

  ServerOptions Options() {
    ServerOptions o;
    o.io_threads = 2;
    o.worker_threads = 2;
    o.header_timeout = 3s;
    o.idle_timeout = 3s;
    o.body_timeout = 3s;
    o.send_timeout = 3s;
    o.linger_timeout = 300ms;
    o.access_log = [this](const AccessLogEntry& e) {
      std::lock_guard lock(mu_);
      log_.push_back(std::string(e.route) + " " + std::to_string(e.status));
    };
    return o;
  }

  // PUT /blobs/{name}: to a file, at most 100 MiB, precheck wants "Authorization: ok". The
  // handler checks what it got and keeps the file under kept/ when asked (?keep=1).
  void Start(ServerOptions o, std::optional<fs::path> upload_dir = std::nullopt) {
    server_ = std::make_unique<Server>(std::move(o));
    RouteOptions ro;
    ro.max_body_bytes = 100 * 1024 * 1024;
    ro.body_to_file = upload_dir.value_or(root_ / "incoming");
    ro.use_worker_pool = true;
    ro.precheck = [this](const Request& r) -> std::optional<Response> {
      ++prechecks_;
      if (r.Header("Authorization").value_or("") != "ok") return Response::JsonError(401, "unauthorized", "no");
      return std::nullopt;
    };
    ASSERT_TRUE(server_
                    ->Handle(
                        Method::kPut, "/blobs/{name}",
                        [this](const Request& r) {
                          ++handled_;
                          const auto& bf = r.body_file();
                          if (!bf) return Response::JsonError(500, "test", "no body_file");
                          struct stat st {};
                          ::stat(bf->path.c_str(), &st);
                          auto digest = HashFile(bf->path);
                          Json j = {{"size", bf->size},
                                    {"sha256", bf->sha256_hex},
                                    {"file_sha256", digest.ok() ? digest->sha256_hex : ""},
                                    {"file_size", digest.ok() ? digest->size : 0},
                                    {"mode", st.st_mode & 0777},
                                    {"in_dir", bf->path.parent_path() == root_ / "incoming"},
                                    {"body_empty", r.body().empty()}};
                          if (r.QueryParam("keep")) {
                            fs::path to = root_ / "kept" / std::string(r.PathParam("name"));
                            j["renamed"] = ::rename(bf->path.c_str(), to.c_str()) == 0;
                          }
                          return Response::Json(200, j);
                        },
                        ro)
                    .ok());
    // An in-memory route with a precheck too.
    RouteOptions mem;
    mem.precheck = [](const Request& r) -> std::optional<Response> {
      if (r.Header("Authorization").value_or("") != "ok") return Response::JsonError(403, "forbidden", "no");
      return std::nullopt;
    };
    ASSERT_TRUE(server_
                    ->Handle(
                        Method::kPost, "/mem", [](const Request& r) { return Response::Text(200, r.body()); }, mem)
                    .ok());
    ASSERT_TRUE(server_->Handle(Method::kGet, "/hello", [](const Request&) { return Response::Text(200, "hi"); }).ok());
    auto st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.error().message();
    port_ = server_->ports().at(0);
  }

  fs::path root_;
  std::unique_ptr<Server> server_;
  std::uint16_t port_ = 0;
  std::atomic<int> prechecks_{0}, handled_{0};
  std::mutex mu_;
  std::vector<std::string> log_;
};

TEST_F(UploadTest, LargeBodyStreamsToAFileAndIsDeletedAfterTheAnswer) {
  Start(Options());
  std::string content = RandomBytes(64 * 1024 * 1024, 1);
  RawClient c(port_, nullptr, false, 20s);
  ASSERT_TRUE(c.connected());
  ASSERT_TRUE(c.Send(PutHead("/blobs/a", content.size())));
  ASSERT_TRUE(c.Send(content));
  auto r = c.Read();
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  auto j = ParseJson(r->body);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["size"], content.size());
  EXPECT_EQ((*j)["sha256"], Sha256Hex(content));
  EXPECT_EQ((*j)["file_sha256"], Sha256Hex(content));
  EXPECT_EQ((*j)["file_size"], content.size());
  EXPECT_EQ((*j)["mode"], 0600);
  EXPECT_EQ((*j)["in_dir"], true);
  EXPECT_EQ((*j)["body_empty"], true);
  // Not renamed: gone once answered.
  EXPECT_TRUE(WaitEntries(root_ / "incoming", 0));

  // Keep-alive: the next request on the same connection, another upload the handler keeps.
  std::string small = RandomBytes(300 * 1024 + 7, 2);
  r = c.Request(PutHead("/blobs/kept-one?keep=1", small.size()) + small);
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200) << r->body;
  j = ParseJson(r->body);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["renamed"], true);
  EXPECT_TRUE(ReadAll(root_ / "kept" / "kept-one") == small);
  EXPECT_TRUE(WaitEntries(root_ / "incoming", 0));

  // An empty body is an empty file; then a plain GET still works on the connection.
  r = c.Request(PutHead("/blobs/empty", 0));
  ASSERT_TRUE(r);
  ASSERT_EQ(r->status, 200);
  j = ParseJson(r->body);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["sha256"], Sha256Hex(""));
  r = c.Request(Get("/hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hi");
  EXPECT_EQ(handled_.load(), 3);

  std::lock_guard lock(mu_);
  ASSERT_GE(log_.size(), 3u);
  EXPECT_EQ(log_[0], "/blobs/{name} 200");
  EXPECT_NE(server_->metrics().Render().find("upkeep_http_requests_total{route=\"/blobs/{name}\",status=\"200\"} 3"),
            std::string::npos);
}

TEST_F(UploadTest, LimitAndMissingLengthAreRefusedBeforeAnyFile) {
  Start(Options());
  RawClient c(port_);
  auto r = c.Request(PutHead("/blobs/a", 100 * 1024 * 1024 + 1));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_TRUE(c.WaitClosed(2s));
  EXPECT_EQ(CountEntries(root_ / "incoming"), 0u);

  RawClient c2(port_);
  r = c2.Request("PUT /blobs/a HTTP/1.1\r\nHost: x\r\nAuthorization: ok\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 411);
  auto j = ParseJson(r->body);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["error"]["code"], "length_required");
  EXPECT_TRUE(c2.WaitClosed(2s));
  EXPECT_EQ(CountEntries(root_ / "incoming"), 0u);
  EXPECT_EQ(handled_.load(), 0);
}

TEST_F(UploadTest, PrecheckAnswersBeforeTheBodyIsRead) {
  Start(Options());
  // No Expect: the answer comes without a byte of the 10 MiB body sent.
  RawClient c(port_);
  auto r = c.Request(PutHead("/blobs/a", 10 * 1024 * 1024, ""));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_EQ(r->Header("Connection").value_or(""), "close");
  EXPECT_TRUE(c.WaitClosed(2s));

  // Expect: 100-continue: the final 401 instead of 100 Continue.
  RawClient c2(port_);
  r = c2.Request(PutHead("/blobs/a", 10 * 1024 * 1024, "Expect: 100-continue\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 401);
  EXPECT_TRUE(c2.WaitClosed(2s));
  EXPECT_EQ(CountEntries(root_ / "incoming"), 0u);
  EXPECT_EQ(handled_.load(), 0);

  // Precheck passes: 100 Continue, then the body.
  RawClient c3(port_);
  std::string body = RandomBytes(5000, 3);
  r = c3.Request(PutHead("/blobs/a", body.size(), "Authorization: ok\r\nExpect: 100-continue\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 100);
  r = c3.Request(body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(handled_.load(), 1);

  // In-memory routes: refused with the body unread (close), or with no body (connection kept).
  RawClient m(port_);
  r = m.Request("POST /mem HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_FALSE(r->Header("Connection"));
  r = m.Request("POST /mem HTTP/1.1\r\nHost: x\r\nAuthorization: ok\r\nContent-Length: 4\r\n\r\nping");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ping");
  r = m.Request("POST /mem HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 403);
  EXPECT_TRUE(m.WaitClosed(2s));
}

TEST_F(UploadTest, DisconnectMidBodyLeavesNoFile) {
  Start(Options());
  {
    RawClient c(port_);
    ASSERT_TRUE(c.Send(PutHead("/blobs/a", 8 * 1024 * 1024)));
    ASSERT_TRUE(c.Send(RandomBytes(4 * 1024 * 1024, 4)));
    ASSERT_TRUE(WaitEntries(root_ / "incoming", 1));  // the partial file exists while it uploads
  }                                                   // closed halfway
  EXPECT_TRUE(WaitEntries(root_ / "incoming", 0));
  EXPECT_EQ(handled_.load(), 0);
  RawClient c(port_);
  auto r = c.Request(Get("/hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(UploadTest, StalledBodyTimesOutAndLeavesNoFile) {
  ServerOptions o = Options();
  o.body_timeout = 300ms;
  Start(o);
  RawClient c(port_);
  ASSERT_TRUE(c.Send(PutHead("/blobs/a", 1024 * 1024)));
  ASSERT_TRUE(c.Send(RandomBytes(1000, 5)));
  ASSERT_TRUE(WaitEntries(root_ / "incoming", 1));
  EXPECT_TRUE(c.WaitClosed(3s));
  EXPECT_TRUE(WaitEntries(root_ / "incoming", 0));
  EXPECT_EQ(handled_.load(), 0);
}

TEST_F(UploadTest, ProgressRearmsTheBodyTimeout) {
  ServerOptions o = Options();
  o.body_timeout = 400ms;
  Start(o);
  RawClient c(port_);
  std::string body = RandomBytes(10 * 1000, 6);
  ASSERT_TRUE(c.Send(PutHead("/blobs/a", body.size())));
  for (int i = 0; i < 10; ++i) {  // 10 x 150 ms: longer than the timeout in total, never stalled
    ASSERT_TRUE(c.Send(std::string_view(body).substr(static_cast<std::size_t>(i) * 1000, 1000)));
    std::this_thread::sleep_for(150ms);
  }
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(UploadTest, ServerStopMidBodyLeavesNoFile) {
  Start(Options());
  RawClient c(port_);
  ASSERT_TRUE(c.Send(PutHead("/blobs/a", 8 * 1024 * 1024)));
  ASSERT_TRUE(c.Send(RandomBytes(1024 * 1024, 7)));
  ASSERT_TRUE(WaitEntries(root_ / "incoming", 1));
  server_->Stop(100ms);
  EXPECT_EQ(CountEntries(root_ / "incoming"), 0u);
  EXPECT_EQ(handled_.load(), 0);
}

TEST_F(UploadTest, UnwritableDirectoryAnswers500WithoutLeakingThePath) {
  Start(Options(), root_ / "missing");
  RawClient c(port_);
  auto r = c.Request(PutHead("/blobs/a", 10) + "0123456789");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_EQ(r->body.find(root_.string()), std::string::npos) << r->body;
  EXPECT_EQ(handled_.load(), 0);
}

// ENOSPC needs a small filesystem, which a unit test can't make portably: set
// UPKEEP_TEST_SMALL_FS_DIR to a directory on one (e.g. a 1 MiB tmpfs) to run this.
TEST_F(UploadTest, FullDiskAnswers507AndLeavesNoFile) {
  const char* small = std::getenv("UPKEEP_TEST_SMALL_FS_DIR");
  if (!small || !*small) GTEST_SKIP() << "UPKEEP_TEST_SMALL_FS_DIR not set";
  fs::path dir = fs::path(small) / ("upload-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  Start(Options(), dir);
  RawClient c(port_, nullptr, false, 10s);
  std::string body = RandomBytes(8 * 1024 * 1024, 8);
  ASSERT_TRUE(c.Send(PutHead("/blobs/a", body.size())));
  (void)c.Send(body);  // the server may close before all of it is sent
  auto r = c.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 507);
  auto j = ParseJson(r->body);
  ASSERT_TRUE(j.ok());
  EXPECT_EQ((*j)["error"]["code"], "insufficient_storage");
  EXPECT_EQ(CountEntries(dir), 0u);
  EXPECT_EQ(handled_.load(), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace upkeep::net
