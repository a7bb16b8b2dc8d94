// The upkeep-tuf-client command-line contract (tuf-conformance CLIENT-CLI.md): in-process with
// the fake fetcher, then the real binary against a real HTTP server on 127.0.0.1, and with its
// clock shifted through an LD_PRELOAD time() shim (what faketime does to it in the suite).
#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

#include "tuf_test_util.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/tuf_client/cli.hpp"

namespace upkeep::tuf {
namespace {

namespace fs = std::filesystem;
using testing::FakeFetcher;
using testing::RepoSim;

const SysTime kNow = SysTime(std::chrono::seconds(1'900'000'000));

fs::path FreshDir(const std::string& name) {
  fs::path d = fs::temp_directory_path() / ("tuf-cli-" + std::to_string(::getpid()) + "-" + name);
  fs::remove_all(d);
  fs::create_directories(d);
  return d;
}

class CliTest : public ::testing::Test {
 protected:
  CliTest() : repo(kNow), fetcher(repo.files), clock(kNow) {
    dir = FreshDir(::testing::UnitTest::GetInstance()->current_test_info()->name());
    md = (dir / "metadata").string();
    td = (dir / "targets").string();
    root_file = (dir / "initial_root.json").string();
    EXPECT_TRUE(WriteFileAtomic(root_file, repo.initial_root).ok());
  }
  ~CliTest() override { fs::remove_all(dir); }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "upkeep-tuf-client");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    out.str("");
    err.str("");
    return tuf_client::Run(static_cast<int>(argv.size()), argv.data(), fetcher, clock, out, err);
  }

  const std::string url = std::string(FakeFetcher::kBaseUrl) + "metadata";
  const std::string turl = std::string(FakeFetcher::kBaseUrl) + "targets";
  RepoSim repo;
  FakeFetcher fetcher;
  FakeClock clock;
  fs::path dir;
  std::string md, td, root_file;
  std::ostringstream out, err;
};

TEST_F(CliTest, InitRefreshDownload) {
  repo.AddTarget("targets", "file.txt", "one");
  repo.AddTarget("targets", "sub/dir/two.txt", "two");
  repo.BumpTargets();
  repo.UpdateSnapshot();

  ASSERT_EQ(Run({"--metadata-dir", md, "init", root_file}), 0) << err.str();
  EXPECT_TRUE(fetcher.requests.empty());  // init makes no requests
  EXPECT_EQ(ReadFileBounded(fs::path(md) / "root.json", 1 << 20).value(), repo.initial_root);

  ASSERT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "refresh"}), 0) << err.str();
  for (const char* f : {"root.json", "timestamp.json", "snapshot.json", "targets.json"}) {
    EXPECT_TRUE(fs::exists(fs::path(md) / f)) << f;
  }

  ASSERT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "--target-name", "file.txt", "--target-name",
                 "sub/dir/two.txt", "--target-dir", td, "--target-base-url", turl, "download"}),
            0)
      << err.str();
  EXPECT_EQ(ReadFileBounded(fs::path(td) / "file.txt", 100).value(), "one");
  EXPECT_EQ(ReadFileBounded(fs::path(td) / "sub%2Fdir%2Ftwo.txt", 100).value(), "two");

  // The same artifact changed legitimately: stored again under the same name.
  repo.AddTarget("targets", "file.txt", "one, updated");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  ASSERT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "--target-name", "file.txt", "--target-dir", td,
                 "--target-base-url", turl, "download"}),
            0)
      << err.str();
  EXPECT_EQ(ReadFileBounded(fs::path(td) / "file.txt", 100).value(), "one, updated");
}

TEST_F(CliTest, FailuresExitOneWithAOneLineReason) {
  auto one_line = [&] {
    std::string e = err.str();
    return !e.empty() && e.find('\n') == e.size() - 1;
  };
  EXPECT_EQ(Run({"--metadata-dir", md, "init", (dir / "nope.json").string()}), 1);
  EXPECT_TRUE(one_line()) << err.str();
  ASSERT_TRUE(WriteFileAtomic(dir / "garbage.json", "{not json").ok());
  EXPECT_EQ(Run({"--metadata-dir", md, "init", (dir / "garbage.json").string()}), 1);
  EXPECT_TRUE(one_line()) << err.str();

  // refresh before init: no trusted root.
  EXPECT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "refresh"}), 1);
  EXPECT_NE(err.str().find("root.json"), std::string::npos) << err.str();
  EXPECT_TRUE(fetcher.requests.empty());

  ASSERT_EQ(Run({"--metadata-dir", md, "init", root_file}), 0);
  EXPECT_EQ(Run({"--metadata-dir", md, "refresh"}), 1);  // no --metadata-url
  EXPECT_EQ(Run({"--metadata-dir", md}), 1);             // no command
  EXPECT_EQ(Run({"--metadata-dir", md, "frobnicate"}), 1);
  EXPECT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "--target-dir", td, "--target-base-url", turl,
                 "download"}),
            1);  // no --target-name
  EXPECT_EQ(Run({"--help"}), 0);

  EXPECT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "--target-name", "nonexistent artifact", "--target-dir",
                 td, "--target-base-url", turl, "download"}),
            1);
  EXPECT_NE(err.str().find("not in the repository"), std::string::npos) << err.str();
  EXPECT_TRUE(one_line()) << err.str();
  // Download refreshed implicitly.
  EXPECT_TRUE(fs::exists(fs::path(md) / "targets.json"));

  // An expired timestamp fails refresh.
  repo.timestamp["expires"] = RepoSim::Expiry(kNow - std::chrono::hours(1));
  repo.UpdateTimestamp();
  EXPECT_EQ(Run({"--metadata-url", url, "--metadata-dir", md, "refresh"}), 1);
  EXPECT_NE(err.str().find("expired"), std::string::npos) << err.str();
}

TEST_F(CliTest, SubstitutedArtifactIsNotAccepted) {
  repo.AddTarget("targets", "a.txt", "good a");
  repo.AddTarget("targets", "b.txt", "good b");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  ASSERT_EQ(Run({"--metadata-dir", md, "init", root_file}), 0);
  auto download = [&](const char* name) {
    return Run({"--metadata-url", url, "--metadata-dir", md, "--target-name", name, "--target-dir", td,
                "--target-base-url", turl, "download"});
  };
  ASSERT_EQ(download("a.txt"), 0) << err.str();
  for (auto& [path, bytes] : repo.files) {
    if (path.rfind("targets/", 0) == 0) bytes = "malicious data - should not download";
  }
  EXPECT_EQ(download("a.txt"), 0);  // cached copy still matches
  EXPECT_EQ(download("b.txt"), 1);
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(td)) names.push_back(e.path().filename().string());
  EXPECT_EQ(names, std::vector<std::string>{"a.txt"});
  EXPECT_EQ(ReadFileBounded(fs::path(td) / "a.txt", 100).value(), "good a");
}

// ---- the real binary over real HTTP ----

// Runs a command with a bounded wait; returns its exit code (or -1 on timeout, after killing it).
int RunProcess(const std::vector<std::string>& args, const std::vector<std::string>& env_extra = {},
               std::chrono::seconds limit = std::chrono::seconds(60)) {
  pid_t pid = ::fork();
  if (pid == 0) {
    for (const auto& e : env_extra) ::putenv(const_cast<char*>(e.c_str()));
    std::vector<char*> argv;
    for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execvp(argv[0], argv.data());
    ::_exit(127);
  }
  auto deadline = std::chrono::steady_clock::now() + limit;
  int status = 0;
  while (::waitpid(pid, &status, WNOHANG) == 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, &status, 0);
      return -1;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

int FreePort() {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ::bind(s, reinterpret_cast<sockaddr*>(&a), sizeof a);
  socklen_t len = sizeof a;
  ::getsockname(s, reinterpret_cast<sockaddr*>(&a), &len);
  ::close(s);
  return ntohs(a.sin_port);
}

bool CanConnect(int port) {
  int s = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<std::uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  bool ok = ::connect(s, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(s);
  return ok;
}

// A python3 HTTP server on 127.0.0.1 (http.server serving `root`, or `script` PORT), killed
// when this goes out of scope.
class HttpServer {
 public:
  explicit HttpServer(const fs::path& root, const fs::path& script = {}) : port_(FreePort()) {
    pid_ = ::fork();
    if (pid_ == 0) {
      std::string port = std::to_string(port_), dir = root.string(), py = script.string();
      int devnull = ::open("/dev/null", O_WRONLY);
      ::dup2(devnull, 1);
      ::dup2(devnull, 2);
      if (script.empty()) {
        ::execlp("python3", "python3", "-m", "http.server", "--bind", "127.0.0.1", "--directory", dir.c_str(),
                 port.c_str(), static_cast<char*>(nullptr));
      } else {
        ::execlp("python3", "python3", py.c_str(), port.c_str(), static_cast<char*>(nullptr));
      }
      ::_exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(15);
    while (std::chrono::steady_clock::now() < deadline && !CanConnect(port_)) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    ready_ = CanConnect(port_);
  }
  ~HttpServer() {
    if (pid_ > 0) {
      ::kill(pid_, SIGTERM);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  bool ready() const { return ready_; }
  std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }

 private:
  int port_;
  pid_t pid_ = -1;
  bool ready_ = false;
};

void WriteTree(const std::map<std::string, std::string>& files, const fs::path& root) {
  for (const auto& [path, bytes] : files) {
    fs::create_directories((root / path).parent_path());
    ASSERT_TRUE(WriteFileAtomic(root / path, bytes).ok());
  }
}

TEST(CliBinaryTest, RealHttpServerAndRealBinary) {
  const std::string bin = std::string(UPKEEP_BIN_DIR) + "/upkeep-tuf-client";
  ASSERT_TRUE(fs::exists(bin));
  fs::path dir = FreshDir("http");
  RepoSim repo(SystemClock::Instance().Now());
  repo.compute_meta_hashes = true;
  repo.AddTarget("targets", "pkg/app-1.0.upk", std::string(200000, 'A') + "end");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  WriteTree(repo.files, dir / "www");
  ASSERT_TRUE(WriteFileAtomic(dir / "root.json", repo.initial_root).ok());

  HttpServer server(dir / "www");
  ASSERT_TRUE(server.ready()) << "python3 http.server did not start";
  const std::string md = (dir / "md").string(), td = (dir / "t").string();
  const std::string murl = server.url() + "/metadata", turl = server.url() + "/targets";

  EXPECT_EQ(RunProcess({bin, "--metadata-dir", md, "init", (dir / "root.json").string()}), 0);
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "refresh"}), 0);
  EXPECT_EQ(ReadFileBounded(fs::path(md) / "snapshot.json", 1 << 20).value(), repo.files.at("metadata/2.snapshot.json"));
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "--target-name", "pkg/app-1.0.upk",
                        "--target-base-url", turl, "--target-dir", td, "download"}),
            0);
  auto got = HashFile(fs::path(td) / "pkg%2Fapp-1.0.upk");
  ASSERT_TRUE(got.ok());
  EXPECT_EQ(got->sha256_hex, Sha256Hex(repo.artifacts.at("pkg/app-1.0.upk")));

  // Endless data over HTTP: a timestamp far over its 16 KiB cap is refused, the trusted one kept.
  const std::string trusted_ts = ReadFileBounded(fs::path(md) / "timestamp.json", 1 << 20).value();
  ASSERT_TRUE(WriteFileAtomic(dir / "www/metadata/timestamp.json", std::string(8 << 20, ' ')).ok());
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "refresh"}), 1);
  EXPECT_EQ(ReadFileBounded(fs::path(md) / "timestamp.json", 1 << 20).value(), trusted_ts);
  ASSERT_TRUE(WriteFileAtomic(dir / "www/metadata/timestamp.json", repo.files.at("metadata/timestamp.json")).ok());

  // A tampered artifact on the server is refused and leaves nothing behind.
  repo.AddTarget("targets", "pkg/app-2.0.upk", "version two");
  repo.BumpTargets();
  repo.UpdateSnapshot();
  WriteTree(repo.files, dir / "www");
  ASSERT_TRUE(WriteFileAtomic(dir / "www/targets/pkg" / (Sha256Hex("version two") + ".app-2.0.upk"), "version tw0").ok());
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "--target-name", "pkg/app-2.0.upk",
                        "--target-base-url", turl, "--target-dir", td, "download"}),
            1);
  EXPECT_FALSE(fs::exists(fs::path(td) / "pkg%2Fapp-2.0.upk"));
  EXPECT_EQ(std::distance(fs::directory_iterator(td), fs::directory_iterator()), 1);

  // A missing server is a clean failure, not a hang.
  const std::string dead = "http://127.0.0.1:" + std::to_string(FreePort()) + "/metadata";
  EXPECT_EQ(RunProcess({bin, "--metadata-url", dead, "--metadata-dir", md, "refresh"}), 1);
  fs::remove_all(dir);
}

TEST(CliBinaryTest, EndlessHttpBodyWithoutContentLengthIsCutOff) {
  const std::string bin = std::string(UPKEEP_BIN_DIR) + "/upkeep-tuf-client";
  fs::path dir = FreshDir("endless");
  // Answers every GET with 200 and data until the client hangs up.
  ASSERT_TRUE(WriteFileAtomic(dir / "endless.py",
                              "import http.server, sys\n"
                              "class H(http.server.BaseHTTPRequestHandler):\n"
                              "    def do_GET(self):\n"
                              "        self.send_response(200)\n"
                              "        self.end_headers()\n"
                              "        try:\n"
                              "            while True: self.wfile.write(b'x' * 65536)\n"
                              "        except Exception: pass\n"
                              "    def log_message(self, *a): pass\n"
                              "http.server.ThreadingHTTPServer(('127.0.0.1', int(sys.argv[1])), H).serve_forever()\n")
                  .ok());
  RepoSim repo(SystemClock::Instance().Now());
  ASSERT_TRUE(WriteFileAtomic(dir / "root.json", repo.initial_root).ok());
  HttpServer server(dir, dir / "endless.py");
  ASSERT_TRUE(server.ready());
  const std::string md = (dir / "md").string();
  ASSERT_EQ(RunProcess({bin, "--metadata-dir", md, "init", (dir / "root.json").string()}), 0);
  auto t0 = std::chrono::steady_clock::now();
  EXPECT_EQ(RunProcess({bin, "--metadata-url", server.url(), "--metadata-dir", md, "refresh"}, {},
                       std::chrono::seconds(30)),
            1);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, std::chrono::seconds(20));
  EXPECT_EQ(ReadFileBounded(fs::path(md) / "root.json", 1 << 20).value(), repo.initial_root);
  fs::remove_all(dir);
}

TEST(CliBinaryTest, ReadsTimeThroughLibcSoAClockShifterWorks) {
#ifdef UPKEEP_TEST_SANITIZED
  GTEST_SKIP() << "sanitizer runtimes refuse a preloaded library ahead of them";
#endif
  const std::string bin = std::string(UPKEEP_BIN_DIR) + "/upkeep-tuf-client";
  const std::string shim = UPKEEP_FAKE_TIME_LIB;
  ASSERT_TRUE(fs::exists(shim));
  fs::path dir = FreshDir("faketime");
  const SysTime now = SystemClock::Instance().Now();
  RepoSim repo(now);
  WriteTree(repo.files, dir / "www");
  ASSERT_TRUE(WriteFileAtomic(dir / "root.json", repo.initial_root).ok());
  HttpServer server(dir / "www");
  ASSERT_TRUE(server.ready());
  const std::string md = (dir / "md").string(), murl = server.url() + "/metadata";
  ASSERT_EQ(RunProcess({bin, "--metadata-dir", md, "init", (dir / "root.json").string()}), 0);
  // 60 days ahead the 30-day timestamp has expired: only a client reading libc time notices.
  const std::string later = std::to_string((now + std::chrono::days(60)).time_since_epoch().count());
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "refresh"},
                       {"LD_PRELOAD=" + shim, "UPKEEP_FAKE_TIME=" + later}),
            1);
  EXPECT_EQ(RunProcess({bin, "--metadata-url", murl, "--metadata-dir", md, "refresh"}), 0);
  fs::remove_all(dir);
}

}  // namespace
}  // namespace upkeep::tuf
