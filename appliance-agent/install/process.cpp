// fork/exec with a pipe for output, poll() for the time-out, a process group for clean kills.
#include "upkeep/agent/process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace upkeep::agent {
namespace {

using Steady = std::chrono::steady_clock;

bool ValidEnvName(const std::string& name) {
  if (name.empty() || name.size() > 256) return false;
  for (char c : name) {
    if (!(c == '_' || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))) return false;
  }
  return !(name[0] >= '0' && name[0] <= '9');
}

// Keeps the last `cap` bytes; memory stays under 2*cap whatever is appended.
class Tail {
 public:
  explicit Tail(std::size_t cap) : cap_(cap) {}
  void Append(const char* p, std::size_t n) {
    total_ += n;
    if (n >= cap_) {
      buf_.assign(p + (n - cap_), cap_);
      return;
    }
    buf_.append(p, n);
    if (buf_.size() > 2 * cap_) buf_.erase(0, buf_.size() - cap_);
  }
  std::string Take() {
    if (buf_.size() > cap_) buf_.erase(0, buf_.size() - cap_);
    return std::move(buf_);
  }
  std::uint64_t total() const { return total_; }

 private:
  std::size_t cap_;
  std::string buf_;
  std::uint64_t total_ = 0;
};

void CloseFd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

// In the child, between fork and exec: async-signal-safe calls only.
[[noreturn]] void Child(int out_fd, int err_fd, const char* cwd, char* const* argv, char* const* envp) {
  ::setpgid(0, 0);
  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  struct sigaction dfl {};
  dfl.sa_handler = SIG_DFL;
  for (int sig = 1; sig < NSIG; ++sig) {
    if (sig != SIGKILL && sig != SIGSTOP) ::sigaction(sig, &dfl, nullptr);
  }
  int err = 0;
  int in = ::open("/dev/null", O_RDONLY);
  if (in < 0 || ::dup2(in, 0) < 0 || ::dup2(out_fd, 1) < 0 || ::dup2(out_fd, 2) < 0) err = errno;
  if (!err && cwd && ::chdir(cwd) != 0) err = errno;
  if (!err) {
    // Everything above 2 goes, except the CLOEXEC error pipe that reports a failed exec.
    for (int fd = 3; fd < err_fd; ++fd) ::close(fd);
#ifdef SYS_close_range
    if (::syscall(SYS_close_range, static_cast<unsigned>(err_fd) + 1, ~0u, 0) != 0)
#endif
    {
      long max = ::sysconf(_SC_OPEN_MAX);
      for (int fd = err_fd + 1; fd < max && fd < 65536; ++fd) ::close(fd);
    }
    ::execve(argv[0], argv, envp);
    err = errno;
  }
  ssize_t ignored = ::write(err_fd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

}  // namespace

std::string ProcessResult::Describe() const {
  std::string s;
  if (timed_out) s = "timed out after " + std::to_string(duration.count()) + " ms (";
  if (exited) {
    s += "exit code " + std::to_string(exit_code);
  } else {
    s += "killed by signal " + std::to_string(signal);
  }
  if (timed_out) s += ")";
  return s;
}

Expected<ProcessResult> RunProcess(const ProcessSpec& spec) {
  if (spec.argv.empty() || spec.argv[0].empty()) return Error(Errc::kInvalidArgument, "run: empty command");
  const std::string& cmd = spec.argv[0];
  for (const auto& a : spec.argv) {
    if (a.find('\0') != std::string::npos)
      return Error(Errc::kInvalidArgument, "run " + cmd + ": argument contains NUL");
  }
  for (const auto& [k, v] : spec.env) {
    if (!ValidEnvName(k) || k == "PATH")
      return Error(Errc::kInvalidArgument, "run " + cmd + ": bad environment name '" + k.substr(0, 64) + "'");
    if (v.find('\0') != std::string::npos)
      return Error(Errc::kInvalidArgument, "run " + cmd + ": environment " + k + " contains NUL");
  }
  // Everything the child needs is built before fork.
  std::vector<std::string> env_strings = {std::string("PATH=") + kChildPath};
  for (const auto& [k, v] : spec.env) env_strings.push_back(k + "=" + v);
  std::vector<char*> argv, envp;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (auto& e : env_strings) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string cwd = spec.cwd.string();

  int out[2] = {-1, -1};
  int errp[2] = {-1, -1};
  if (::pipe2(out, O_CLOEXEC) != 0) return Error(Errc::kIo, "run " + cmd + ": pipe: " + std::strerror(errno));
  if (::pipe2(errp, O_CLOEXEC) != 0) {
    int e = errno;
    CloseFd(out[0]);
    CloseFd(out[1]);
    return Error(Errc::kIo, "run " + cmd + ": pipe: " + std::strerror(e));
  }
  const auto start = Steady::now();
  pid_t pid = ::fork();
  if (pid < 0) {
    int e = errno;
    CloseFd(out[0]);
    CloseFd(out[1]);
    CloseFd(errp[0]);
    CloseFd(errp[1]);
    return Error(Errc::kIo, "run " + cmd + ": fork: " + std::strerror(e));
  }
  if (pid == 0) Child(out[1], errp[1], cwd.empty() ? nullptr : cwd.c_str(), argv.data(), envp.data());
  ::setpgid(pid, pid);  // also in the child: whichever runs first wins, no race with kill(-pid)
  CloseFd(out[1]);
  CloseFd(errp[1]);

  // The error pipe closes on exec (CLOEXEC) or carries errno from a failed exec.
  int exec_errno = 0;
  for (;;) {
    ssize_t n = ::read(errp[0], &exec_errno, sizeof exec_errno);
    if (n < 0 && errno == EINTR) continue;
    if (n != static_cast<ssize_t>(sizeof exec_errno)) exec_errno = 0;
    break;
  }
  CloseFd(errp[0]);
  if (exec_errno != 0) {
    CloseFd(out[0]);
    while (::waitpid(pid, nullptr, 0) < 0 && errno == EINTR) {
    }
    return Error(Errc::kIo, "run " + cmd + ": " + std::strerror(exec_errno));
  }

  ::fcntl(out[0], F_SETFL, ::fcntl(out[0], F_GETFL) | O_NONBLOCK);
  Tail tail(kLogTailBytes);
  ProcessResult result;
  const auto deadline = start + spec.timeout;
  Steady::time_point kill_at{};
  bool term_sent = false, kill_sent = false, reaped = false;
  int status = 0;
  std::vector<char> buf(64 << 10);

  // At most 16 reads per call, so a child that never stops printing cannot starve the time-out.
  auto drain = [&]() {
    for (int reads = 0; reads < 16;) {
      ssize_t n = ::read(out[0], buf.data(), buf.size());
      if (n > 0) {
        tail.Append(buf.data(), static_cast<std::size_t>(n));
        ++reads;
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      return n == 0;  // EOF
    }
    return false;
  };

  // A pidfd wakes us the moment the child exits (even while a grandchild holds the pipe);
  // without one (old kernels) we look every 50 ms.
  int pidfd = -1;
#ifdef SYS_pidfd_open
  pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#endif
  bool eof = false;
  while (!reaped) {
    auto now = Steady::now();
    if (!term_sent && now >= deadline) {
      result.timed_out = true;
      term_sent = true;
      ::kill(-pid, SIGTERM);
      kill_at = now + spec.kill_grace;
    }
    if (term_sent && !kill_sent && now >= kill_at) {
      kill_sent = true;
      ::kill(-pid, SIGKILL);
    }
    auto next = term_sent ? (kill_sent ? now + std::chrono::milliseconds(50) : kill_at) : deadline;
    auto wait_ms = std::chrono::duration_cast<std::chrono::milliseconds>(next - now).count() + 1;
    int timeout_ms = static_cast<int>(std::clamp<long long>(wait_ms, 0, pidfd >= 0 ? 1000 : 50));
    pollfd p[2];
    nfds_t n = 0;
    if (!eof) p[n++] = pollfd{out[0], POLLIN, 0};
    if (pidfd >= 0) p[n++] = pollfd{pidfd, POLLIN, 0};
    int r = ::poll(n ? p : nullptr, n, timeout_ms);
    if (r > 0 && !eof && p[0].revents) eof = drain();
    pid_t w = ::waitpid(pid, &status, WNOHANG);
    if (w == pid) reaped = true;
    if (w < 0 && errno != EINTR) {
      int e = errno;
      CloseFd(out[0]);
      CloseFd(pidfd);
      return Error(Errc::kInternal, std::string("run ") + cmd + ": waitpid: " + std::strerror(e));
    }
  }
  CloseFd(pidfd);
  // The child is gone: stop whatever it left in its group, then take what is already buffered.
  ::kill(-pid, SIGKILL);
  if (!eof) drain();
  CloseFd(out[0]);

  result.duration = std::chrono::duration_cast<std::chrono::milliseconds>(Steady::now() - start);
  if (WIFEXITED(status)) {
    result.exited = true;
    result.exit_code = WEXITSTATUS(status);
  } else if (WIFSIGNALED(status)) {
    result.signal = WTERMSIG(status);
  }
  result.log_bytes = tail.total();
  result.log_tail = tail.Take();
  return result;
}

RealProcessRunner& RealProcessRunner::Instance() {
  static RealProcessRunner runner;
  return runner;
}

}  // namespace upkeep::agent
