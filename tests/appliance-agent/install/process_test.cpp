// RunProcess: exit codes, signals, time-outs (with a SIGTERM-ignoring child and its grandchild),
// the bounded log tail, the clean environment, cwd, stdin and descriptor hygiene.
#include "upkeep/agent/process.hpp"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <thread>

#include "package_test_util.hpp"

namespace upkeep::agent {
namespace {

using packages::testing::ReadAll;
using packages::testing::TempDir;
using namespace std::chrono_literals;

ProcessResult Sh(const std::string& script, std::chrono::milliseconds timeout = 10s,
                 std::chrono::milliseconds grace = 5s, const std::filesystem::path& cwd = {}) {
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", script};
  spec.timeout = timeout;
  spec.kill_grace = grace;
  spec.cwd = cwd;
  auto r = RunProcess(spec);
  EXPECT_TRUE(r.ok()) << r.error().message();
  return r.ok() ? *r : ProcessResult{};
}

// True while `pid` exists and is not a zombie.
bool Alive(pid_t pid) {
  std::ifstream stat("/proc/" + std::to_string(pid) + "/stat");
  if (!stat) return false;
  std::string line;
  std::getline(stat, line);
  auto close = line.rfind(')');
  return close != std::string::npos && close + 2 < line.size() && line[close + 2] != 'Z' && line[close + 2] != 'X';
}

TEST(ProcessTest, ExitCodesAndOutput) {
  auto ok = Sh("echo out; echo err >&2; exit 0");
  EXPECT_TRUE(ok.Succeeded());
  EXPECT_EQ(ok.log_tail, "out\nerr\n");
  EXPECT_EQ(ok.log_bytes, 8u);
  auto three = Sh("exit 3");
  EXPECT_TRUE(three.exited);
  EXPECT_EQ(three.exit_code, 3);
  EXPECT_FALSE(three.Succeeded());
  EXPECT_EQ(three.Describe(), "exit code 3");
}

TEST(ProcessTest, KilledBySignal) {
  auto r = Sh("kill -SEGV $$");
  EXPECT_FALSE(r.exited);
  EXPECT_EQ(r.signal, SIGSEGV);
  EXPECT_FALSE(r.timed_out);
  EXPECT_FALSE(r.Succeeded());
}

TEST(ProcessTest, CannotStart) {
  ProcessSpec spec;
  auto r = RunProcess(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  spec.argv = {"/nonexistent/tool"};
  r = RunProcess(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_NE(r.error().message().find("/nonexistent/tool"), std::string::npos);
  TempDir dir;
  packages::testing::WriteFile(dir / "noexec", "#!/bin/sh\n", 0644);
  spec.argv = {(dir / "noexec").string()};
  r = RunProcess(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  spec.argv = {"/bin/true"};
  spec.env = {{"BAD=NAME", "x"}};
  r = RunProcess(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  spec.env = {{"PATH", "/tmp"}};
  EXPECT_FALSE(RunProcess(spec).ok());
  spec.env = {};
  spec.cwd = dir / "missing-dir";
  r = RunProcess(spec);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
}

TEST(ProcessTest, TimeoutKillsGroupIncludingSigtermIgnoringChildAndGrandchild) {
  TempDir dir;
  const auto pids = dir / "pids";
  // The child ignores SIGTERM; its grandchild (background) does too and would live forever.
  auto start = std::chrono::steady_clock::now();
  auto r = Sh("trap '' TERM; sh -c 'trap \"\" TERM; echo $$ >> " + pids.string() +
                  "; while :; do sleep 0.05; done' & echo $$ >> " + pids.string() + "; while :; do sleep 0.05; done",
              300ms, 200ms);
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.exited);
  EXPECT_EQ(r.signal, SIGKILL);
  EXPECT_NE(r.Describe().find("timed out"), std::string::npos);
  EXPECT_LT(took, 3s);
  EXPECT_GE(took, 450ms);
  std::ifstream in(pids);
  std::vector<pid_t> seen;
  for (pid_t p; in >> p;) seen.push_back(p);
  ASSERT_EQ(seen.size(), 2u);
  for (int i = 0; i < 100 && (Alive(seen[0]) || Alive(seen[1])); ++i) std::this_thread::sleep_for(20ms);
  EXPECT_FALSE(Alive(seen[0]));
  EXPECT_FALSE(Alive(seen[1]));
}

TEST(ProcessTest, TimeoutSigtermIsEnoughForPoliteChild) {
  auto r = Sh("sleep 30", 200ms, 5s);
  EXPECT_TRUE(r.timed_out);
  EXPECT_FALSE(r.exited);
  EXPECT_EQ(r.signal, SIGTERM);
  EXPECT_LT(r.duration, 3s);
}

TEST(ProcessTest, BackgroundGrandchildHoldingThePipeDoesNotHangUs) {
  auto start = std::chrono::steady_clock::now();
  auto r = Sh("sleep 30 & echo done", 20s);
  EXPECT_TRUE(r.Succeeded());
  EXPECT_FALSE(r.timed_out);
  EXPECT_EQ(r.log_tail, "done\n");
  EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
}

TEST(ProcessTest, LogTailIsBoundedWithTenMegabytesOfOutput) {
  // 10 MiB of numbered lines; the tail must be the exact end of that stream.
  auto r = Sh("head -c 10485760 /dev/zero | tr '\\0' 'a'; echo; echo THE-END", 60s);
  ASSERT_TRUE(r.Succeeded()) << r.Describe();
  EXPECT_EQ(r.log_bytes, 10485760u + 1 + 8);
  EXPECT_EQ(r.log_tail.size(), kLogTailBytes);
  EXPECT_EQ(r.log_tail.substr(r.log_tail.size() - 9), "\nTHE-END\n");
  EXPECT_EQ(r.log_tail.substr(0, 10), std::string(10, 'a'));
}

TEST(ProcessTest, EndlessOutputStillTimesOut) {
  auto r = Sh("yes upkeep", 300ms, 200ms);
  EXPECT_TRUE(r.timed_out);
  EXPECT_LT(r.duration, 3s);
  EXPECT_EQ(r.log_tail.size(), kLogTailBytes);
  EXPECT_GT(r.log_bytes, kLogTailBytes);
}

TEST(ProcessTest, CleanEnvironmentCwdAndStdin) {
  ::setenv("UPKEEP_SECRET_TEST", "leak", 1);
  TempDir dir;
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "env | sort; pwd; cat; echo stdin-eof"};
  spec.cwd = dir.path();
  spec.env = {{"UPKEEP_PACKAGE", "site"}, {"A_B", "x y"}};
  auto r = RunProcess(spec);
  ::unsetenv("UPKEEP_SECRET_TEST");
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_TRUE(r->Succeeded());
  EXPECT_NE(r->log_tail.find("PATH=/usr/sbin:/usr/bin:/sbin:/bin\n"), std::string::npos) << r->log_tail;
  EXPECT_NE(r->log_tail.find("UPKEEP_PACKAGE=site\n"), std::string::npos);
  EXPECT_NE(r->log_tail.find("A_B=x y\n"), std::string::npos);
  EXPECT_EQ(r->log_tail.find("UPKEEP_SECRET_TEST"), std::string::npos);
  EXPECT_EQ(r->log_tail.find("HOME="), std::string::npos);
  EXPECT_NE(r->log_tail.find(std::filesystem::canonical(dir.path()).string() + "\nstdin-eof\n"), std::string::npos)
      << r->log_tail;
}

TEST(ProcessTest, NoDescriptorLeaksIntoTheChild) {
  // A descriptor opened without O_CLOEXEC by someone else in the process must not reach the child.
  int leaky = ::open("/dev/null", O_RDONLY);
  ASSERT_GE(leaky, 0);
  auto r = Sh("ls /proc/self/fd | sort -n | tr '\\n' ' '");
  ::close(leaky);
  // Only 0,1,2 and the fd ls itself opens for the listing.
  EXPECT_TRUE(r.Succeeded());
  std::istringstream in(r.log_tail);
  int fd = 0, count = 0;
  while (in >> fd) {
    ++count;
    EXPECT_TRUE(fd <= 3) << r.log_tail;
  }
  EXPECT_LE(count, 4);
}

TEST(ProcessTest, RealRunnerDelegates) {
  ProcessSpec spec;
  spec.argv = {"/bin/sh", "-c", "exit 7"};
  auto r = RealProcessRunner::Instance().Run(spec);
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->exit_code, 7);
}

}  // namespace
}  // namespace upkeep::agent
