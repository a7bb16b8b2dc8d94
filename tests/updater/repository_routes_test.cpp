// The /repo/ routes in-process: a real repository made with the real `upk` (keygen, repo init,
// add, publish), served by upkeep::net::Server on 127.0.0.1 with an ephemeral port.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <memory>
#include <ostream>
#include <sstream>
#include <string>

#include "test_support.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/updater/cli.hpp"
#include "upkeep/updater/repository_routes.hpp"

namespace upkeep::updater {
namespace {

namespace fs = std::filesystem;

constexpr std::string_view kSecret = "TOP-SECRET-outside-the-repository";
constexpr std::size_t kBlobSize = 200000;

void WriteFile(const fs::path& path, const std::string& data) {
  std::ofstream out(path, std::ios::binary);
  out << data;
}

std::string ErrorCode(const test::HttpReply& reply) {
  auto json = ParseJson(reply.body);
  if (!json.ok() || !json->is_object() || !json->contains("error")) return "";
  const auto& error = (*json)["error"];
  if (!error.is_object() || !error.contains("code") || !error["code"].is_string()) return "";
  return error["code"].get<std::string>();
}

class RepositoryRoutesTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    tmp_ = new test::TempDir();
    const fs::path dir = tmp_->path();
    std::string output;
    for (const char* role : {"root", "targets", "snapshot", "timestamp"}) {
      ASSERT_EQ(test::RunBinary("upk", {"keygen", (dir / (std::string(role) + ".key")).string()}, &output), 0)
          << output;
    }
    std::string blob(kBlobSize, '\0');
    for (std::size_t i = 0; i < blob.size(); ++i) blob[i] = static_cast<char>((i * 7919 + i / 251) & 0xff);
    WriteFile(dir / "blob.bin", blob);
    const std::string repo = (dir / "repo").string();
    const auto key = [&](const char* role) { return (dir / (std::string(role) + ".key")).string(); };
    ASSERT_EQ(test::RunBinary("upk", {"repo", "init", repo, "--root-key", key("root"), "--targets-key", key("targets"),
                                      "--snapshot-key", key("snapshot"), "--timestamp-key", key("timestamp")},
                              &output),
              0)
        << output;
    ASSERT_EQ(test::RunBinary("upk", {"repo", "add", repo, (dir / "blob.bin").string()}, &output), 0) << output;
    ASSERT_EQ(test::RunBinary("upk", {"repo", "publish", repo, "--targets-key", key("targets"), "--snapshot-key",
                                      key("snapshot"), "--timestamp-key", key("timestamp")},
                              &output),
              0)
        << output;
    for (const auto& entry : fs::directory_iterator(dir / "repo" / "targets")) {
      const std::string name = entry.path().filename().string();
      if (name.size() == 64 + std::string(".blob.bin").size() && name.ends_with(".blob.bin")) blob_name_ = name;
    }
    ASSERT_FALSE(blob_name_.empty()) << "no sha256-prefixed blob.bin in targets/";

    // Hostile content inside the repository: links to a secret outside it, a directory, a
    // hidden temporary file.
    fs::create_directories(dir / "outside");
    WriteFile(dir / "outside" / "secret.txt", std::string(kSecret));
    WriteFile(dir / "outside" / "secret.json", "{\"secret\": \"" + std::string(kSecret) + "\"}");
    fs::create_symlink(dir / "outside" / "secret.txt", dir / "repo" / "targets" / "leak.bin");
    fs::create_directory_symlink(dir / "outside", dir / "repo" / "targets" / "linkdir");
    fs::create_symlink(dir / "outside" / "secret.json", dir / "repo" / "metadata" / "evil.json");
    fs::create_symlink("../../outside/secret.txt", dir / "repo" / "targets" / "relative.bin");
    fs::create_directories(dir / "repo" / "targets" / "subdir");
    WriteFile(dir / "repo" / "metadata" / ".timestamp.json.tmp-0011", "partial");

    auto routes = RepositoryRoutes::Create(dir / "repo");
    ASSERT_TRUE(routes.ok()) << routes.error().message();
    net::ServerOptions options;
    options.endpoints = {net::Endpoint{"127.0.0.1", 0, false}};
    options.io_threads = 1;
    server_ = new net::Server(options);
    auto registered = routes->Register(*server_);
    ASSERT_TRUE(registered.ok()) << registered.error().message();
    auto started = server_->Start();
    ASSERT_TRUE(started.ok()) << started.error().message();
    port_ = server_->ports().at(0);
  }

  static void TearDownTestSuite() {
    if (server_) server_->Stop(std::chrono::seconds(2));
    delete server_;
    server_ = nullptr;
    delete tmp_;
    tmp_ = nullptr;
  }

  void SetUp() override {
    if (server_ == nullptr || port_ == 0) GTEST_SKIP() << "suite set-up failed";
  }

  static fs::path Repo() { return tmp_->path() / "repo"; }
  static test::HttpReply Get(std::string_view target,
                             const std::vector<std::pair<std::string, std::string>>& headers = {}) {
    return test::Call(port_, "GET", target, headers);
  }

  static inline test::TempDir* tmp_ = nullptr;
  static inline net::Server* server_ = nullptr;
  static inline std::uint16_t port_ = 0;
  static inline std::string blob_name_;
};

TEST_F(RepositoryRoutesTest, ServesMetadataWithCachePolicy) {
  const auto timestamp = Get("/repo/metadata/timestamp.json");
  ASSERT_EQ(timestamp.status, 200) << timestamp.head;
  EXPECT_EQ(timestamp.body, test::ReadAll(Repo() / "metadata" / "timestamp.json"));
  EXPECT_EQ(timestamp.Header("Content-Type"), "application/json");
  EXPECT_EQ(timestamp.Header("Cache-Control"), "no-cache");
  EXPECT_TRUE(timestamp.Header("ETag").has_value());
  auto json = ParseJson(timestamp.body);
  ASSERT_TRUE(json.ok());
  EXPECT_EQ((*json)["signed"]["_type"], "timestamp");

  const auto root = Get("/repo/metadata/root.json");
  ASSERT_EQ(root.status, 200);
  EXPECT_EQ(root.Header("Cache-Control"), "no-cache");
  EXPECT_EQ(root.body, test::ReadAll(Repo() / "metadata" / "root.json"));

  for (const char* versioned : {"1.root.json", "2.targets.json", "2.snapshot.json"}) {
    const auto reply = Get(std::string("/repo/metadata/") + versioned);
    ASSERT_EQ(reply.status, 200) << versioned;
    EXPECT_EQ(reply.body, test::ReadAll(Repo() / "metadata" / versioned)) << versioned;
    EXPECT_EQ(reply.Header("Cache-Control"), "public, max-age=31536000, immutable") << versioned;
    EXPECT_EQ(reply.Header("Content-Type"), "application/json") << versioned;
  }
}

TEST_F(RepositoryRoutesTest, ServesHashPrefixedTargetAndHead) {
  const std::string path = "/repo/targets/" + blob_name_;
  const auto reply = Get(path);
  ASSERT_EQ(reply.status, 200) << reply.head;
  EXPECT_EQ(reply.body.size(), kBlobSize);
  EXPECT_EQ(reply.body, test::ReadAll(tmp_->path() / "blob.bin"));
  EXPECT_EQ(reply.Header("Content-Type"), "application/octet-stream");
  EXPECT_EQ(reply.Header("Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(reply.Header("Accept-Ranges"), "bytes");

  const auto head = test::Call(port_, "HEAD", path);
  ASSERT_EQ(head.status, 200);
  EXPECT_EQ(head.Header("Content-Length"), std::to_string(kBlobSize));
  EXPECT_TRUE(head.body.empty());

  // The ETag works for revalidation.
  const auto etag = reply.Header("ETag");
  ASSERT_TRUE(etag.has_value());
  const auto again = Get(path, {{"If-None-Match", *etag}});
  EXPECT_EQ(again.status, 304);
  EXPECT_TRUE(again.body.empty());
}

TEST_F(RepositoryRoutesTest, RangeGivesTheRightSlice) {
  const std::string path = "/repo/targets/" + blob_name_;
  const std::string blob = test::ReadAll(tmp_->path() / "blob.bin");
  const auto reply = Get(path, {{"Range", "bytes=1000-1999"}});
  ASSERT_EQ(reply.status, 206) << reply.head;
  EXPECT_EQ(reply.Header("Content-Range"), "bytes 1000-1999/" + std::to_string(kBlobSize));
  EXPECT_EQ(reply.body, blob.substr(1000, 1000));

  // A resumed download from an offset to the end (larger than the in-memory range path).
  const auto tail = Get(path, {{"Range", "bytes=100000-"}});
  ASSERT_EQ(tail.status, 206);
  EXPECT_EQ(tail.body, blob.substr(100000));

  // If-Range with a validator that no longer matches: the whole file.
  const auto stale = Get(path, {{"Range", "bytes=0-9"}, {"If-Range", "\"stale\""}});
  EXPECT_EQ(stale.status, 200);
  EXPECT_EQ(stale.body.size(), kBlobSize);

  const auto beyond = Get(path, {{"Range", "bytes=999999-"}});
  EXPECT_EQ(beyond.status, 416);
}

TEST_F(RepositoryRoutesTest, PathEscapesAreRefused) {
  const char* attempts[] = {
      "/repo/targets/../../etc/passwd",
      "/repo/targets/%2e%2e/%2e%2e/etc/passwd",
      "/repo/targets/%2E%2E%2F%2E%2E%2Fetc%2Fpasswd",
      "/repo/targets/..%2f..%2f..%2fetc%2fpasswd",
      "/repo/metadata/..%2fstaging.json",
      "/repo/metadata/../staging.json",
      "/repo/targets/%00",
      "/repo/targets/a%00b",
      "/repo/targets//etc/passwd",
      "/repo/targets/leak.bin",
      "/repo/targets/relative.bin",
      "/repo/targets/linkdir/secret.txt",
      "/repo/targets/linkdir%2fsecret.txt",
      "/repo/metadata/evil.json",
      "/repo/metadata/.timestamp.json.tmp-0011",
      "/repo/targets/subdir",
      "/repo/staging.json",
      "/repo/.upk-repo.lock",
      "/repo/metadata/%2fetc%2fpasswd",
  };
  for (const char* target : attempts) {
    const auto reply = Get(target);
    EXPECT_GE(reply.status, 400) << target;
    EXPECT_LT(reply.status, 500) << target;
    EXPECT_EQ(reply.body.find(kSecret), std::string::npos) << target;
    EXPECT_EQ(reply.body.find("root:"), std::string::npos) << target;
    EXPECT_EQ(reply.body.find("partial"), std::string::npos) << target;
  }
  // The symlinks themselves are what a 404 is about, not a malformed request.
  for (const char* target : {"/repo/targets/leak.bin", "/repo/targets/linkdir/secret.txt", "/repo/metadata/evil.json"}) {
    const auto reply = Get(target);
    EXPECT_EQ(reply.status, 404) << target;
    EXPECT_EQ(ErrorCode(reply), "not_found") << target;
  }
}

TEST_F(RepositoryRoutesTest, UnknownPathsAreJson404) {
  for (const char* target : {"/repo/metadata/99.root.json", "/repo/targets/nope.bin", "/repo/metadata/notes.txt",
                             "/nothing/here"}) {
    const auto reply = Get(target);
    EXPECT_EQ(reply.status, 404) << target;
    EXPECT_EQ(reply.Header("Content-Type").value_or("").find("application/json"), 0u) << target;
    EXPECT_EQ(ErrorCode(reply), "not_found") << target << " " << reply.body;
  }
  // Only GET and HEAD exist.
  const auto post = test::Call(port_, "DELETE", "/repo/metadata/timestamp.json");
  EXPECT_EQ(post.status, 405);
  EXPECT_TRUE(fs::exists(Repo() / "metadata" / "timestamp.json"));
}

TEST(RepositoryRules, CachePolicy) {
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "timestamp.json"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "root.json"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "targets.json"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "12.root.json"), kImmutable);
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "3.snapshot.json"), kImmutable);
  EXPECT_EQ(CacheControlFor(RepoArea::kMetadata, "3x.snapshot.json"), kNoCache);
  const std::string sha256(64, 'a');
  const std::string sha512(128, '0');
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, "demo/" + sha256 + ".demo-1.0.0.upk"), kImmutable);
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, sha512 + ".tool.bin"), kImmutable);
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, "demo/demo-1.0.0.upk"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, std::string(63, 'a') + ".x"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, std::string(64, 'g') + ".x"), kNoCache);
  EXPECT_EQ(CacheControlFor(RepoArea::kTargets, sha256 + "."), kNoCache);
}

TEST(RepositoryRules, RequestPaths) {
  EXPECT_TRUE(CheckRequestPath(RepoArea::kMetadata, "1.root.json").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kMetadata, "a/1.root.json").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kMetadata, ".json").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kMetadata, "root.txt").ok());
  EXPECT_TRUE(CheckRequestPath(RepoArea::kTargets, "demo/abc.demo-1.0.0.upk").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, "").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, "a//b").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, "../x").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, "a/.hidden").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, "a b").ok());
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, std::string(kMaxPathBytes + 1, 'a')).ok());
  std::string deep;
  for (std::size_t i = 0; i <= kMaxDepth; ++i) deep += "a/";
  EXPECT_FALSE(CheckRequestPath(RepoArea::kTargets, deep + "b").ok());
  EXPECT_EQ(CheckRequestPath(RepoArea::kTargets, "a%2fb").error().code(), Errc::kNotFound);
}

TEST(RepositoryRules, CreateNeedsARepository) {
  test::TempDir tmp;
  auto missing = RepositoryRoutes::Create(tmp.path() / "nope");
  ASSERT_FALSE(missing.ok());
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  fs::create_directories(tmp.path() / "metadata");
  auto half = RepositoryRoutes::Create(tmp.path());
  ASSERT_FALSE(half.ok());
  EXPECT_NE(half.error().message().find("targets"), std::string::npos);
  fs::create_directories(tmp.path() / "targets");
  EXPECT_TRUE(RepositoryRoutes::Create(tmp.path()).ok());
}

TEST(UpdaterCli, UsageErrors) {
  test::TempDir tmp;
  const auto run = [](std::vector<std::string> args, std::string* err_text) {
    std::vector<const char*> argv{"updater"};
    for (const auto& a : args) argv.push_back(a.c_str());
    std::ostringstream out, err;
    const int code = Main(static_cast<int>(argv.size()), argv.data(), out, err);
    *err_text = err.str();
    return code;
  };
  std::string err;
  EXPECT_EQ(run({"--help"}, &err), 0);
  EXPECT_EQ(run({}, &err), 2);
  EXPECT_EQ(run({"serve", "--listen", "127.0.0.1:0"}, &err), 2);
  EXPECT_EQ(run({"serve", "--repo", (tmp.path() / "none").string(), "--listen", "127.0.0.1:0"}, &err), 2);
  EXPECT_NE(err.find("none"), std::string::npos) << err;
  EXPECT_EQ(run({"serve", "--repo", tmp.path().string(), "--listen", "127.0.0.1"}, &err), 2);
  EXPECT_NE(err.find("--listen"), std::string::npos) << err;
  EXPECT_EQ(run({"serve", "--repo", tmp.path().string(), "--listen", "127.0.0.1:0", "--tls-cert", "x.pem"}, &err), 2);
  EXPECT_NE(err.find("--tls-key"), std::string::npos) << err;
}

}  // namespace
}  // namespace upkeep::updater
