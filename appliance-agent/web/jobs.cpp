// The updates page's job queue (web_jobs.hpp).
#include "upkeep/agent/web_jobs.hpp"

#include <algorithm>
#include <cctype>
#include <utility>

namespace upkeep::agent {

struct JobQueue::Job {
  JobSnapshot view;
  JobFn fn;
};

class JobQueue::Reporter final : public JobReporter {
 public:
  Reporter(JobQueue& queue, Job& job) : queue_(queue), job_(job) {}
  void Phase(const std::string& phase) override {
    std::lock_guard lock(queue_.mu_);
    job_.view.phase = phase;
    job_.view.done = job_.view.total = 0;
  }
  void Progress(std::uint64_t done, std::uint64_t total) override {
    std::lock_guard lock(queue_.mu_);
    job_.view.done = done;
    job_.view.total = total;
  }
  void Line(const std::string& line) override {
    std::lock_guard lock(queue_.mu_);
    queue_.Append(job_, line);
  }

 private:
  JobQueue& queue_;
  Job& job_;
};

Json JobSnapshot::ToJson() const {
  Json j = {{"id", id},       {"kind", kind},   {"title", title}, {"by", by},
            {"state", state}, {"phase", phase}, {"done", done},   {"total", total},
            {"result", result}, {"lines", lines}, {"submitted", FormatTimestamp(submitted)}};
  if (total > 0) j["percent"] = static_cast<int>(std::min<std::uint64_t>(100, done * 100 / total));
  if (started != SysTime{}) j["started"] = FormatTimestamp(started);
  if (finished != SysTime{}) j["finished"] = FormatTimestamp(finished);
  return j;
}

JobQueue::JobQueue(const Clock& clock, std::function<void()> wake) : clock_(clock), wake_(std::move(wake)) {}

Expected<std::uint64_t> JobQueue::Submit(const std::string& kind, const std::string& title, const std::string& by,
                                         JobFn fn) {
  std::uint64_t id = 0;
  {
    std::lock_guard lock(mu_);
    std::size_t queued = 0;
    for (const auto& j : jobs_) {
      if (j->view.state != "queued" && j->view.state != "running") continue;
      if (j->view.kind == kind) {
        return Error(Errc::kPolicy, "a " + kind + " job is already " + j->view.state + " (job " +
                                        std::to_string(j->view.id) + ")");
      }
      if (j->view.state == "queued") ++queued;
    }
    if (queued >= kMaxQueued) return Error(Errc::kLimit, "too many jobs are waiting; try again when one has run");
    auto job = std::make_shared<Job>();
    job->view.id = id = next_id_++;
    job->view.kind = kind;
    job->view.title = title;
    job->view.by = by;
    job->view.state = "queued";
    job->view.submitted = clock_.Now();
    job->fn = std::move(fn);
    jobs_.push_back(std::move(job));
    // Forget the oldest finished jobs beyond the bound (queued and running ones stay).
    std::size_t finished = 0;
    for (const auto& j : jobs_) finished += j->view.finished != SysTime{} ? 1 : 0;
    for (auto it = jobs_.begin(); finished > kMaxFinished && it != jobs_.end();) {
      if ((*it)->view.finished != SysTime{}) {
        it = jobs_.erase(it);
        --finished;
      } else {
        ++it;
      }
    }
  }
  if (wake_) wake_();
  return id;
}

void JobQueue::RunPending(AgentRuntime& runtime) {
  for (std::size_t guard = 0; guard < kMaxQueued + 8; ++guard) {  // bounded: jobs queued while running wait a cycle
    std::shared_ptr<Job> job;
    {
      std::lock_guard lock(mu_);
      for (const auto& j : jobs_) {
        if (j->view.state == "queued") {
          job = j;
          break;
        }
      }
      if (!job) return;
      job->view.state = "running";
      job->view.started = clock_.Now();
      running_ = job;
    }
    Reporter reporter(*this, *job);
    Expected<std::string> result = Error(Errc::kInternal, "the job did not run");
    try {
      result = job->fn(runtime, reporter);
    } catch (const std::exception& e) {  // a job must not take the daemon down
      result = Error(Errc::kInternal, std::string("the job stopped: ") + e.what());
    }
    std::lock_guard lock(mu_);
    job->view.state = result.ok() ? "succeeded" : "failed";
    job->view.result = result.ok() ? *result : result.error().message();
    job->view.finished = clock_.Now();
    job->fn = nullptr;  // releases what the job captured (an uploaded file's path, a password)
    running_.reset();
  }
}

void JobQueue::Append(Job& job, const std::string& line) {
  auto& lines = job.view.lines;
  lines.push_back(line.size() > 1000 ? line.substr(0, 1000) + "..." : line);
  if (lines.size() > kMaxLines) lines.erase(lines.begin(), lines.begin() + static_cast<long>(lines.size() - kMaxLines));
}

void JobQueue::OnLog(const std::string& line) {
  std::lock_guard lock(mu_);
  if (!running_) return;
  Append(*running_, line);
  // "download site 5.3.0: 40%": the phase is the first word, the percent the progress.
  if (line.size() >= 2 && line.back() == '%') {
    std::size_t i = line.size() - 1;
    while (i > 0 && std::isdigit(static_cast<unsigned char>(line[i - 1])) != 0) --i;
    if (i < line.size() - 1 && line.size() - 1 - i <= 3) {
      const std::uint64_t pct = std::stoull(line.substr(i, line.size() - 1 - i));
      running_->view.phase = line.substr(0, line.find(' '));
      running_->view.done = std::min<std::uint64_t>(pct, 100);
      running_->view.total = 100;
    }
  }
}

std::optional<JobSnapshot> JobQueue::Get(std::uint64_t id) const {
  std::lock_guard lock(mu_);
  for (const auto& j : jobs_) {
    if (j->view.id == id) return j->view;
  }
  return std::nullopt;
}

std::vector<JobSnapshot> JobQueue::Recent(std::size_t n) const {
  std::lock_guard lock(mu_);
  std::vector<JobSnapshot> out;
  for (auto it = jobs_.rbegin(); it != jobs_.rend() && out.size() < n; ++it) out.push_back((*it)->view);
  return out;
}

bool JobQueue::Busy() const {
  std::lock_guard lock(mu_);
  return std::any_of(jobs_.begin(), jobs_.end(),
                     [](const auto& j) { return j->view.state == "queued" || j->view.state == "running"; });
}

}  // namespace upkeep::agent
