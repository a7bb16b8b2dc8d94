// Running an external command (hooks, health checks, update modules) with a time-out.
//
// RunProcess forks and execs argv[0] (a path; no PATH search) in its own process group, with
// stdin from /dev/null, stdout and stderr both into one pipe, the working directory `cwd`, and a
// small clean environment: PATH=/usr/sbin:/usr/bin:/sbin:/bin plus `env`. Every descriptor but
// 0-2 is closed in the child. Output is kept as a bounded tail (the last kLogTailBytes), so
// memory stays constant whatever the child prints.
//
// On time-out the whole group gets SIGTERM, then SIGKILL after `kill_grace`; when the child ends
// (by itself or not) any process left in its group is SIGKILLed, and the child is always reaped.
// Time-outs are measured on the monotonic clock (a child's run time is real time, not Clock time).
//
// Errors: kInvalidArgument for an empty argv or a bad env name, kIo when the command cannot be
// started (not found, not executable, fork failure; the message names argv[0]). A non-zero exit,
// a signal or a time-out is a result, not an error. Thread-safe (no shared state); the calling
// thread blocks until the child is reaped.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep::agent {

inline constexpr std::size_t kLogTailBytes = 64u << 10;
inline constexpr const char* kChildPath = "/usr/sbin:/usr/bin:/sbin:/bin";

struct ProcessSpec {
  std::vector<std::string> argv;
  std::filesystem::path cwd;                             // empty: the agent's own
  std::vector<std::pair<std::string, std::string>> env;  // added to PATH
  std::chrono::milliseconds timeout{60000};
  std::chrono::milliseconds kill_grace{5000};  // SIGTERM -> SIGKILL
};

struct ProcessResult {
  bool exited = false;  // ended by _exit/return (exit_code valid)
  int exit_code = -1;
  int signal = 0;               // the terminating signal when !exited
  bool timed_out = false;       // we had to stop it
  std::string log_tail;         // last kLogTailBytes of stdout+stderr
  std::uint64_t log_bytes = 0;  // everything it printed
  std::chrono::milliseconds duration{0};

  bool Succeeded() const { return exited && exit_code == 0 && !timed_out; }
  // "exit code 3", "killed by signal 9", "timed out after 60000 ms (killed by signal 15)"
  std::string Describe() const;
};

Expected<ProcessResult> RunProcess(const ProcessSpec& spec);

// The seam in front of RunProcess, so the agent core's tests can fake commands.
class ProcessRunner {
 public:
  virtual ~ProcessRunner() = default;
  virtual Expected<ProcessResult> Run(const ProcessSpec& spec) = 0;
};

class RealProcessRunner final : public ProcessRunner {
 public:
  Expected<ProcessResult> Run(const ProcessSpec& spec) override { return RunProcess(spec); }
  static RealProcessRunner& Instance();
};

}  // namespace upkeep::agent
