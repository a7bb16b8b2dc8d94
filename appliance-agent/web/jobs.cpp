// The updates page's job queue (web_jobs.hpp).
#include "upkeep/agent/web_jobs.hpp"

#include <algorithm>
#include <cctype>
#include <string_view>
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
        const bool vowel = !kind.empty() && std::string_view("aeiou").find(kind.front()) != std::string_view::npos;
        return Error(Errc::kPolicy, (vowel ? "an " : "a ") + kind + " job is already " + j->view.state + " (job " +
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
  // "site 5.3.0: phase verify" (Agent::SetPhase): a new phase, its progress unknown yet.
  if (const auto at = line.rfind(": phase "); at != std::string::npos) {
    const std::string phase = line.substr(at + 8);
    const bool word = !phase.empty() && phase.size() <= 32 && std::all_of(phase.begin(), phase.end(), [](char c) {
      return (c >= 'a' && c <= 'z') || c == '_';
    });
    if (word) {
      running_->view.phase = phase;
      running_->view.done = running_->view.total = 0;
      return;
    }
  }
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

namespace {

std::string Label(const PlannedStep& p) { return p.step.name + " " + p.step.version.ToString(); }

const PlannedStep* FindStep(const std::vector<PlannedStep>& plan, const std::string& name, const std::string& version) {
  for (const auto& p : plan) {
    if (p.step.name == name && p.step.version.ToString() == version) return &p;
  }
  return nullptr;
}

const PlannedStep* FirstToInstall(const std::vector<PlannedStep>& plan) {
  for (const auto& p : plan) {
    if (p.state != "installed") return &p;
  }
  return nullptr;
}

// "5.2.0" or "nothing" (a first install that was undone).
std::string RunningVersion(const Agent& agent, const std::string& name) {
  const auto installed = agent.Installed();
  auto it = installed.find(name);
  return it == installed.end() ? std::string("nothing") : it->second.ToString();
}

std::string Joined(const std::vector<std::string>& parts) {
  std::string out;
  for (const auto& p : parts) out += (out.empty() ? "" : ", ") + p;
  return out;
}

}  // namespace

Expected<std::string> InstallUpTo(Agent& agent, Store& store, const std::string& name, const std::string& version,
                                  JobReporter& report) {
  const std::string target = name + " " + version;
  std::vector<std::string> done;
  const auto before = [&done]() { return done.empty() ? std::string() : " (installed before it: " + Joined(done) + ")"; };
  for (int i = 0; i < 1000; ++i) {  // bounded: no plan is that long
    auto plan = agent.Plan();
    if (!plan.ok()) return plan.error().Wrap("the plan" + before());
    const PlannedStep* wanted = FindStep(*plan, name, version);
    if (wanted == nullptr) {
      // An assignment names only what is still to install: the step may be installed meanwhile.
      const auto now_installed = agent.Installed();
      if (auto it = now_installed.find(name); it != now_installed.end() && it->second.ToString() == version) {
        return done.empty() ? target + " is installed already" : Joined(done) + " installed";
      }
      return Error(Errc::kNotFound, "the assignment no longer names " + target + before() + "; check for updates again");
    }
    if (wanted->state == "installed") {
      return done.empty() ? target + " is installed already" : Joined(done) + " installed";
    }
    const PlannedStep* next = FirstToInstall(*plan);  // at or before `wanted`
    const std::string label = Label(*next);
    if (next->state == "failed") {
      return Error(Errc::kPolicy, label + " failed before and was rolled back; it is not retried from this page" +
                                      before());
    }
    report.Line("installing " + label + (next == wanted ? "" : " (needed before " + target + ")"));
    auto r = agent.InstallNext(true);
    if (!r.ok()) {
      return Error(r.error().code(), label + " was not installed: " + r.error().message() + "; " +
                                         RunningVersion(agent, next->step.name) + " is still running" + before());
    }
    switch (r->outcome) {
      case InstallOutcome::kInstalled:
        break;
      case InstallOutcome::kFailedRolledBack: {
        const std::string failed = r->name + " " + r->version;
        std::string why = "its install failed";
        if (auto doc = store.Get("failed"); doc && doc->is_object() && doc->contains(failed)) {
          const Json& entry = (*doc)[failed];
          if (entry.is_object() && entry.contains("reason") && entry["reason"].is_string()) {
            why = entry["reason"].get<std::string>();
          }
        }
        const std::string now = RunningVersion(agent, r->name);
        return Error(Errc::kVerification, failed + ": " + why + "; " +
                                              (now == "nothing" ? std::string("removed again (nothing was installed before)")
                                                                : "rolled back to " + now) +
                                              before());
      }
      case InstallOutcome::kNothing:
      case InstallOutcome::kNotAllowedNow:
        return Error(Errc::kPolicy, (r->message.empty() ? label + " was not installed" : r->message) + before());
    }
    done.push_back(r->name + " " + r->version);
    report.Line(r->message);
    const bool reached = r->name == name && r->version == version;
    // The next step is bound to the new state: ask the director again (an imported bundle covers
    // the walk). After the last step too, as `install --all` does: the plan is then current.
    if (!agent.AssignmentFromBundle()) {
      if (auto c = agent.Check(); !c.ok()) {
        if (reached) {
          report.Line("the check after the install failed: " + c.error().message());
        } else {
          return Error(c.error().code(), "the check before the next step failed: " + c.error().message() + before());
        }
      }
    }
    if (reached) return Joined(done) + " installed";
  }
  return Error(Errc::kLimit, "too many steps before " + target + before());
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
