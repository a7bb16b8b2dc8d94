// Work the updates page asks of the daemon ("Install now", a bundle upload, a backup, a restore),
// queued by the page's handlers and run one at a time on the daemon's thread, between cycles,
// with the store lock held (DaemonService::BeforeCycle), so the page never writes the agent's
// state itself. Each job has progress the page polls (GET /api/v1/jobs/ID): a phase, bytes or
// percent done, the log lines the daemon wrote while it ran, and its result.
//
// Threads: Submit/Get/Recent/Busy from any thread; RunPending and OnLog on the daemon's thread.
// A job's function runs with no lock of the queue held. Bounds: at most kMaxQueued jobs wait,
// the last kMaxFinished finished jobs are kept, each keeps its last kMaxLines log lines.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::agent {

struct AgentRuntime;

struct JobSnapshot {
  std::uint64_t id = 0;
  std::string kind;   // "install", "import", "backup", ... (the submitter's word)
  std::string title;  // "Install site 5.3.0"
  std::string by;     // the account that asked
  std::string state;  // "queued", "running", "succeeded", "failed"
  std::string phase;  // the job's current step ("download", "backup", "install", "health_check")
  std::uint64_t done = 0, total = 0;  // progress within the phase; total 0 = unknown
  std::string result;                 // the outcome in plain words, once finished
  std::vector<std::string> lines;     // the daemon's log lines while it ran (last kMaxLines)
  SysTime submitted{}, started{}, finished{};
  bool finished_ok() const { return state == "succeeded"; }
  // {"id", "kind", "title", "by", "state", "phase", "done", "total", "percent"?, "result",
  //  "lines", "submitted", "started"?, "finished"?}
  Json ToJson() const;
};

// What a running job tells the page.
class JobReporter {
 public:
  virtual ~JobReporter() = default;
  virtual void Phase(const std::string& phase) = 0;  // resets done/total
  virtual void Progress(std::uint64_t done, std::uint64_t total) = 0;
  virtual void Line(const std::string& line) = 0;
};

// Returns the result shown to the admin ("site 5.3.0 installed"); an error fails the job with
// its message. A job that did its work but ended badly (an install rolled back) returns an error
// too, so the page shows it as failed.
using JobFn = std::function<Expected<std::string>(AgentRuntime& runtime, JobReporter& report)>;

class JobQueue {
 public:
  static constexpr std::size_t kMaxQueued = 4;
  static constexpr std::size_t kMaxFinished = 20;
  static constexpr std::size_t kMaxLines = 200;

  // `wake` asks the daemon for a cycle (the daemon service sends SIGUSR2); may be empty.
  JobQueue(const Clock& clock, std::function<void()> wake);

  // Queues a job; kLimit when kMaxQueued wait already, kPolicy when a job of the same kind is
  // queued or running (one install, one import at a time).
  Expected<std::uint64_t> Submit(const std::string& kind, const std::string& title, const std::string& by, JobFn fn);

  // Runs every queued job in order (the daemon's thread).
  void RunPending(AgentRuntime& runtime);
  // A line the daemon logged: kept in the running job; a line ending in "NN%" ("download site
  // 5.3.0: 40%") sets its progress and its first word the phase.
  void OnLog(const std::string& line);

  std::optional<JobSnapshot> Get(std::uint64_t id) const;
  std::vector<JobSnapshot> Recent(std::size_t n) const;  // newest first, running and queued included
  bool Busy() const;                                     // a job queued or running

 private:
  struct Job;
  class Reporter;
  void Append(Job& job, const std::string& line);

  const Clock& clock_;
  std::function<void()> wake_;
  mutable std::mutex mu_;
  std::uint64_t next_id_ = 1;
  std::deque<std::shared_ptr<Job>> jobs_;  // queued, running and the last finished ones, oldest first
  std::shared_ptr<Job> running_;
};

}  // namespace upkeep::agent
