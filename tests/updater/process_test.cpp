// The real updater binary: `updater serve` on an ephemeral port over a repository made with the
// real `upk`, the port read from its stdout, /healthz and a metadata file fetched, the request
// logged, and a clean exit 0 on SIGTERM; and the same over TLS (--tls-cert/--tls-key) with a
// verifying client.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "test_client.hpp"  // tests/net: raw HTTP client with TLS
#include "test_support.hpp"
#include "upkeep/net/testing_cert.hpp"

namespace upkeep::updater {
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

// Makes an empty but valid repository (upk repo init) in dir/repo.
void MakeRepository(const fs::path& dir) {
  std::string output;
  for (const char* role : {"root", "targets", "snapshot", "timestamp"}) {
    ASSERT_EQ(test::RunBinary("upk", {"keygen", (dir / (std::string(role) + ".key")).string()}, &output), 0) << output;
  }
  const auto key = [&](const char* role) { return (dir / (std::string(role) + ".key")).string(); };
  ASSERT_EQ(test::RunBinary("upk", {"repo", "init", (dir / "repo").string(), "--root-key", key("root"),
                                    "--targets-key", key("targets"), "--snapshot-key", key("snapshot"),
                                    "--timestamp-key", key("timestamp")},
                            &output),
            0)
      << output;
}

// `updater serve ...` as a child process with its stdout and stderr on pipes; killed (SIGKILL) if
// the test ends without stopping it.
class UpdaterProcess {
 public:
  explicit UpdaterProcess(const std::vector<std::string>& args) {
    const std::string binary = std::string(UPKEEP_BIN_DIR) + "/updater";
    int out_pipe[2], err_pipe[2];
    if (::pipe(out_pipe) != 0 || ::pipe(err_pipe) != 0) return;
    pid_ = ::fork();
    if (pid_ == 0) {
      ::dup2(out_pipe[1], 1);
      ::dup2(err_pipe[1], 2);
      ::close(out_pipe[0]);
      ::close(err_pipe[0]);
      std::vector<char*> argv{const_cast<char*>("updater")};
      for (const auto& a : args) argv.push_back(const_cast<char*>(a.c_str()));
      argv.push_back(nullptr);
      ::execv(binary.c_str(), argv.data());
      ::_exit(127);
    }
    ::close(out_pipe[1]);
    ::close(err_pipe[1]);
    out_ = out_pipe[0];
    err_ = err_pipe[0];
    ::fcntl(err_, F_SETFL, O_NONBLOCK);
  }
  ~UpdaterProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
    if (out_ >= 0) ::close(out_);
    if (err_ >= 0) ::close(err_);
  }
  UpdaterProcess(const UpdaterProcess&) = delete;
  UpdaterProcess& operator=(const UpdaterProcess&) = delete;

  // The port from "updater: listening on 127.0.0.1:PORT", or 0 (with `diagnostics`) when it
  // does not appear within 30 s.
  std::uint16_t Port(std::string* diagnostics) {
    const std::string out = ReadUntil(out_, "\n", std::chrono::seconds(30));
    const std::string prefix = "updater: listening on 127.0.0.1:";
    const auto at = out.find(prefix);
    if (at == std::string::npos) {
      *diagnostics = out + ReadUntil(err_, "\n", std::chrono::seconds(1));
      return 0;
    }
    return static_cast<std::uint16_t>(std::stoi(out.substr(at + prefix.size())));
  }

  // Sends SIGTERM and waits up to 10 s; the exit status, or -1 when it did not stop.
  int Terminate() {
    if (::kill(pid_, SIGTERM) != 0) return -1;
    int status = 0;
    for (int i = 0; i < 200; ++i) {
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    return -1;
  }

  std::string Log() { return ReadUntil(err_, "stopped", std::chrono::seconds(2)); }

 private:
  pid_t pid_ = -1;
  int out_ = -1;
  int err_ = -1;
};

TEST(UpdaterProcess, ServesAndStopsOnSigterm) {
  test::TempDir tmp;
  ASSERT_NO_FATAL_FAILURE(MakeRepository(tmp.path()));
  UpdaterProcess updater(
      {"serve", "--repo", (tmp.path() / "repo").string(), "--listen", "127.0.0.1:0", "--threads", "1"});
  std::string diagnostics;
  const std::uint16_t port = updater.Port(&diagnostics);
  ASSERT_GT(port, 0) << diagnostics;

  const auto health = test::Call(port, "GET", "/healthz");
  EXPECT_EQ(health.status, 200);
  EXPECT_EQ(health.body.substr(0, 2), "OK");
  const auto root = test::Call(port, "GET", "/repo/metadata/1.root.json");
  EXPECT_EQ(root.status, 200);
  EXPECT_EQ(root.body, test::ReadAll(tmp.path() / "repo" / "metadata" / "1.root.json"));
  const auto metrics = test::Call(port, "GET", "/metrics");
  EXPECT_EQ(metrics.status, 200);
  EXPECT_NE(metrics.body.find("upkeep_http_requests_total"), std::string::npos);

  EXPECT_EQ(updater.Terminate(), 0);
  const std::string log = updater.Log();
  EXPECT_NE(log.find("GET /healthz 200"), std::string::npos) << log;
  EXPECT_NE(log.find("GET /repo/metadata/1.root.json 200"), std::string::npos) << log;
  EXPECT_NE(log.find("stopped"), std::string::npos) << log;
}

TEST(UpdaterProcess, ServesOverTls) {
  test::TempDir tmp;
  ASSERT_NO_FATAL_FAILURE(MakeRepository(tmp.path()));
  auto cert = net::testing::WriteSelfSignedCertificate(tmp.path());
  ASSERT_TRUE(cert.ok()) << cert.error().message();
  UpdaterProcess updater({"serve", "--repo", (tmp.path() / "repo").string(), "--listen", "127.0.0.1:0",
                          "--threads", "1", "--tls-cert", cert->certificate.string(), "--tls-key",
                          cert->private_key.string()});
  std::string diagnostics;
  const std::uint16_t port = updater.Port(&diagnostics);
  ASSERT_GT(port, 0) << diagnostics;

  std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)> ctx(SSL_CTX_new(TLS_client_method()), &SSL_CTX_free);
  SSL_CTX_set_verify(ctx.get(), SSL_VERIFY_PEER, nullptr);
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx.get(), cert->certificate.c_str(), nullptr), 1);
  SSL_CTX_set_options(ctx.get(), SSL_OP_IGNORE_UNEXPECTED_EOF);
  {
    net::test::RawClient client(port, ctx.get());
    ASSERT_TRUE(client.connected());
    auto reply = client.Request(net::test::Get("/repo/metadata/timestamp.json"));
    ASSERT_TRUE(reply.has_value());
    EXPECT_EQ(reply->status, 200);
    EXPECT_EQ(reply->body, test::ReadAll(tmp.path() / "repo" / "metadata" / "timestamp.json"));
    EXPECT_EQ(reply->Header("Cache-Control"), "no-cache");
  }
  // Plain HTTP on the TLS port gets no repository file.
  EXPECT_NE(test::Call(port, "GET", "/repo/metadata/timestamp.json").status, 200);
  EXPECT_EQ(updater.Terminate(), 0);
}

TEST(UpdaterProcess, RefusesAMismatchedTlsPair) {
  test::TempDir tmp;
  ASSERT_NO_FATAL_FAILURE(MakeRepository(tmp.path()));
  auto a = net::testing::WriteSelfSignedCertificate(tmp.path() / "a");
  auto b = net::testing::WriteSelfSignedCertificate(tmp.path() / "b");
  ASSERT_TRUE(a.ok() && b.ok());
  std::string output;
  EXPECT_EQ(test::RunBinary("updater", {"serve", "--repo", (tmp.path() / "repo").string(), "--listen", "127.0.0.1:0",
                                        "--tls-cert", a->certificate.string(), "--tls-key", b->private_key.string()},
                            &output),
            2)
      << output;
}

}  // namespace
}  // namespace upkeep::updater
