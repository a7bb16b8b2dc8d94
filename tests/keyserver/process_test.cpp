// The real keyserver binary: serve on an ephemeral port against a fresh database, answer a
// request, log it without secrets, and stop cleanly (exit 0) on SIGTERM.
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <thread>

#include "http_client.hpp"
#include "test_util.hpp"
#include "upkeep/db/testing.hpp"

namespace upkeep::keyserver {
namespace {

namespace fs = std::filesystem;

// Reads from fd until `until` appears or the deadline passes.
std::string ReadUntil(int fd, const std::string& until, std::chrono::milliseconds within) {
  std::string data;
  const auto deadline = std::chrono::steady_clock::now() + within;
  while (data.find(until) == std::string::npos) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) break;
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) break;
    char buf[4096];
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n <= 0) break;
    data.append(buf, static_cast<std::size_t>(n));
  }
  return data;
}

TEST(KeyserverProcess, ServesAndStopsOnSigterm) {
  test::TempDir tmp;
  KS_ASSERT_OK(WriteFileAtomic(tmp.path() / "pass", std::string(test::kPassphrase) + "\n", 0600));
  KS_ASSERT_OK(InitState(tmp.path() / "state", test::TestWrapping()));
  const std::string updater = test::ReadToken(tmp.path() / "state" / "updater.token");
  KS_ASSERT_OK_AND_ASSIGN(auto db, db::testing::TestDatabase::Create("ks_process"));

  const std::string binary = std::string(UPKEEP_BIN_DIR) + "/keyserver";
  const std::string state = (tmp.path() / "state").string();
  const std::string pass = (tmp.path() / "pass").string();
  int out_pipe[2], err_pipe[2];
  ASSERT_EQ(::pipe(out_pipe), 0);
  ASSERT_EQ(::pipe(err_pipe), 0);
  pid_t pid = ::fork();
  ASSERT_GE(pid, 0);
  if (pid == 0) {
    ::dup2(out_pipe[1], 1);
    ::dup2(err_pipe[1], 2);
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    ::execl(binary.c_str(), "keyserver", "serve", "--state", state.c_str(), "--passphrase-file", pass.c_str(),
            "--database", db.url().c_str(), "--listen", "127.0.0.1:0", static_cast<char*>(nullptr));
    ::_exit(127);
  }
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  ::fcntl(err_pipe[0], F_SETFL, O_NONBLOCK);

  const std::string out = ReadUntil(out_pipe[0], "\n", std::chrono::seconds(30));
  const auto at = out.find("listening on 127.0.0.1:");
  ASSERT_NE(at, std::string::npos) << out << ReadUntil(err_pipe[0], "\n", std::chrono::seconds(1));
  const int port = std::stoi(out.substr(at + std::string("listening on 127.0.0.1:").size()));
  ASSERT_GT(port, 0);

  test::HttpReply keys = test::Call(static_cast<std::uint16_t>(port), "GET", "/api/v1/keys");
  EXPECT_EQ(keys.status, 200);
  test::HttpReply none = test::Call(static_cast<std::uint16_t>(port), "GET", "/api/v1/audit", "", updater);
  EXPECT_EQ(none.status, 403);

  ASSERT_EQ(::kill(pid, SIGTERM), 0);
  int status = 0;
  pid_t done = 0;
  for (int i = 0; i < 200 && done == 0; ++i) {
    done = ::waitpid(pid, &status, WNOHANG);
    if (done == 0) std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  if (done == 0) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    FAIL() << "keyserver did not stop within 10 s of SIGTERM";
  }
  EXPECT_TRUE(WIFEXITED(status));
  EXPECT_EQ(WEXITSTATUS(status), 0);
  const std::string log = ReadUntil(err_pipe[0], "stopped", std::chrono::seconds(2));
  EXPECT_NE(log.find("GET /api/v1/keys 200"), std::string::npos) << log;
  EXPECT_NE(log.find("GET /api/v1/audit 403"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
  EXPECT_EQ(log.find(updater), std::string::npos);
  EXPECT_EQ(log.find(test::kPassphrase), std::string::npos);
  ::close(out_pipe[0]);
  ::close(err_pipe[0]);
}

}  // namespace
}  // namespace upkeep::keyserver
