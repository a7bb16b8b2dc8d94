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

#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/cli.hpp"
#include "upkeep/agent/store.hpp"
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
  // 5.3.0: 40%") sets its progress and its first word the phase; a phase line of the agent
  // ("site 5.3.0: phase verify", Agent::SetPhase) sets the phase and resets the progress.
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

// ---- "Install this update" (install_panel.cpp submits these; the daemon runs them)

// The job "Install now": installs the kept assignment's steps in order up to and including NAME
// VERSION, like `appliance-agent install --all --force` stopping after that step. `force` skips
// maintenance windows and settle times only, never a verification rule; between steps the agent
// checks in again (the next step is bound to the new state) unless the assignment came from a
// bundle, and after the chosen step (its failure is then only a line of the job). Returns "site 5.3.0 installed" (earlier steps named: "base 2.0.0, site 5.3.0
// installed"). Errors (the job fails; messages name the step): the step is not (any more) in the
// assignment (kNotFound); a step failed and was rolled back ("site 5.3.0: health check exited 1;
// rolled back to 5.2.0"); a step failed before anything was switched ("site 5.3.0 was not
// installed: ...; 5.2.0 is still running"); a step whose install failed before (kPolicy; it is
// not retried from the page); a check between steps failed. Progress reaches the page through
// the agent's log lines (JobQueue::OnLog); each finished step is also reported as a line.
Expected<std::string> InstallUpTo(Agent& agent, Store& store, const std::string& name, const std::string& version,
                                  JobReporter& report);

}  // namespace upkeep::agent
