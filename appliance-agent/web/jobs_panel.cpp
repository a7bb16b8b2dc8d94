// The updates page's jobs: what the page asked the daemon to do, with live progress
// (page_kit.hpp, web_jobs.hpp). GET /jobs/ID is a job's page; /static/job.js polls
// GET /api/v1/jobs/ID every second and updates it in place until the job has finished.
#include <charconv>

#include "page_kit.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {
namespace {

using net::Method;
using net::Request;
using net::Response;

// Served as a file: the CSP allows no inline script. Reads the job's id from the page, asks for
// the job every second, and fills in the state, phase, progress bar, result and log lines.
constexpr const char* kJobScript = R"JS('use strict';
(function () {
  const root = document.getElementById('job');
  if (!root) return;
  const id = root.getAttribute('data-job');
  const $ = (name) => document.getElementById(name);
  let timer = null;
  function show(job) {
    $('job-state').textContent = job.state;
    $('job-phase').textContent = job.phase || '';
    const bar = $('job-progress');
    if (typeof job.percent === 'number') {
      bar.value = job.percent;
      bar.textContent = job.percent + '%';
      $('job-percent').textContent = job.percent + '%';
    } else if (job.state === 'succeeded') {
      bar.value = 100;
      $('job-percent').textContent = '100%';
    }
    $('job-lines').textContent = job.lines.join('\n');
    const done = job.state === 'succeeded' || job.state === 'failed';
    root.className = 'job job-' + job.state;
    if (done) {
      $('job-result').textContent = job.result;
      $('job-result').className = job.state === 'succeeded' ? 'ok' : 'error';
      if (job.state === 'succeeded') bar.value = 100;
      clearInterval(timer);
    }
  }
  async function poll() {
    try {
      const r = await fetch('/api/v1/jobs/' + encodeURIComponent(id), {credentials: 'same-origin'});
      if (r.ok) show(await r.json());
    } catch (e) {
      $('job-phase').textContent = '(the appliance did not answer; retrying)';
    }
  }
  if (root.getAttribute('data-finished') !== 'true') {
    timer = setInterval(poll, 1000);
    poll();
  }
})();
)JS";

constexpr const char* kJobCss =
    "progress{width:30em;max-width:100%;height:1.2em}.job-failed h1{color:#a00}\n"
    "#jobs td progress{width:10em}\n";

std::optional<std::uint64_t> JobId(std::string_view text) {
  std::uint64_t id = 0;
  if (text.empty() || text.size() > 19) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id == 0) return std::nullopt;
  return id;
}

std::string ProgressBar(const JobSnapshot& j, const std::string& id_attr) {
  std::string bar = "<progress" + id_attr + " max=\"100\"";
  if (j.total > 0) {
    const auto pct = std::to_string(std::min<std::uint64_t>(100, j.done * 100 / j.total));
    bar += " value=\"" + pct + "\">" + pct + "%";
  } else if (j.state == "succeeded") {
    bar += " value=\"100\">100%";
  } else {
    bar += ">";  // indeterminate until the job reports a percent
  }
  return bar + "</progress>";
}

class JobsPanel final : public Panel {
 public:
  explicit JobsPanel(const PanelEnv& env) : env_(env) {}

  Status Register(RouteSink& routes) override {
    UPK_TRY(routes.Add(Method::kGet, "/jobs/{id}", [this](const Request& r, web::Authenticator& a) { return JobPage(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/api/v1/jobs/{id}",
                       [this](const Request& r, web::Authenticator& a) { return JobJson(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/static/job.js", [](const Request&, web::Authenticator&) {
      return Asset(kJobScript, "text/javascript; charset=utf-8");
    }));
    return OkStatus();
  }

  std::string Css() const override { return kJobCss; }

  std::string Render(const web::Principal&, const Json&, web::Authenticator&) override {
    if (env_.jobs == nullptr) return {};
    const auto jobs = env_.jobs->Recent(5);
    if (jobs.empty()) return {};
    std::string b = "<section id=\"jobs\"><h2>Recent actions</h2>\n<table><tr><th>Action</th><th>By</th><th>State</th>"
                    "<th>Progress</th><th>Result</th></tr>";
    for (const auto& j : jobs) {
      b += "<tr class=\"state-" + ClassName(j.state) + "\"><td><a href=\"/jobs/" + std::to_string(j.id) + "\">" +
           HtmlEscape(j.title) + "</a></td><td>" + HtmlEscape(j.by) + "</td><td>" + HtmlEscape(j.state) + "</td><td>" +
           (j.state == "running" ? HtmlEscape(j.phase) + " " + ProgressBar(j, "") : "") + "</td><td>" +
           HtmlEscape(j.result) + "</td></tr>";
    }
    return b + "</table></section>\n";
  }

 private:
  Response JobPage(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    const auto id = JobId(req.PathParam("id"));
    if (!id || env_.jobs == nullptr) return ErrorPage(404, "no such job");
    auto job = env_.jobs->Get(*id);
    if (!job) return ErrorPage(404, "no such job (the appliance keeps the last " +
                                        std::to_string(JobQueue::kMaxFinished) + " finished ones)");
    const bool finished = job->state == "succeeded" || job->state == "failed";
    std::string lines;
    for (const auto& l : job->lines) lines += l + "\n";
    std::string b = "<div id=\"job\" class=\"job job-" + ClassName(job->state) + "\" data-job=\"" + std::to_string(*id) +
                    "\" data-finished=\"" + (finished ? "true" : "false") + "\">\n<h1>" + HtmlEscape(job->title) +
                    "</h1>\n<table><tr><th>Asked by</th><td>" + HtmlEscape(job->by) + " at " +
                    HtmlEscape(FormatTimestamp(job->submitted)) + "</td></tr><tr><th>State</th><td id=\"job-state\">" +
                    HtmlEscape(job->state) + "</td></tr><tr><th>Step</th><td id=\"job-phase\">" + HtmlEscape(job->phase) +
                    "</td></tr><tr><th>Progress</th><td>" + ProgressBar(*job, " id=\"job-progress\"") +
                    " <span id=\"job-percent\"></span></td></tr></table>\n<p id=\"job-result\" class=\"" +
                    (job->state == "failed" ? "error" : "ok") + "\" role=\"status\">" + HtmlEscape(job->result) +
                    "</p>\n<h2>Log</h2>\n<pre id=\"job-lines\">" + HtmlEscape(lines) +
                    "</pre>\n<p><a href=\"/\">Back to the updates page</a></p></div>\n"
                    "<script src=\"/static/job.js\"></script>\n";
    return Page(200, job->title, b);
  }

  Response JobJson(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Secure(who.refusal().ToResponse());
    const auto id = JobId(req.PathParam("id"));
    std::optional<JobSnapshot> job;
    if (id && env_.jobs != nullptr) job = env_.jobs->Get(*id);
    if (!job) return Secure(Response::JsonError(404, "not_found", "no such job"));
    return Secure(Response::Json(200, job->ToJson()));
  }

  PanelEnv env_;
};

}  // namespace

std::unique_ptr<Panel> MakeJobsPanel(const PanelEnv& env) { return std::make_unique<JobsPanel>(env); }

}  // namespace upkeep::agent::webpage
