#include "upkeep/updater/service.hpp"

#include <condition_variable>
#include <mutex>
#include <thread>

#include "context.hpp"
#include "dashboard.hpp"

namespace upkeep::updater {

Expected<ServiceConfig> ServiceConfig::FromJson(const Json& json) {
  ServiceConfig config;
  if (!json.is_object()) return Error(Errc::kParse, "config: must be a JSON object");
  struct Field {
    const char* name;
    std::int64_t min, max;
    std::function<void(std::int64_t)> set;
  };
  const Field fields[] = {
      {"assignment_validity_days", 1, 90, [&](std::int64_t v) { config.assignment_validity = std::chrono::hours(24 * v); }},
      {"checkin_interval_seconds", 10, 7 * 86400, [&](std::int64_t v) { config.checkin_interval = std::chrono::seconds(v); }},
      {"timestamp_validity_hours", 1, 24 * 30, [&](std::int64_t v) { config.timestamp_validity = std::chrono::hours(v); }},
      {"snapshot_validity_days", 1, 365, [&](std::int64_t v) { config.snapshot_validity = std::chrono::hours(24 * v); }},
      {"request_skew_seconds", 10, 3600, [&](std::int64_t v) { config.request_skew = std::chrono::seconds(v); }},
      {"revocation_poll_seconds", 1, 3600, [&](std::int64_t v) { config.revocation_poll = std::chrono::seconds(v); }},
      {"max_blob_gib", 1, 1024, [&](std::int64_t v) { config.max_blob_bytes = static_cast<std::uint64_t>(v) << 30; }},
      {"bundle_validity_days", 1, 31, [&](std::int64_t v) { config.bundle_validity = std::chrono::hours(24 * v); }},
      {"bundle_link_validity_hours", 1, 24 * 30, [&](std::int64_t v) { config.bundle_link_validity = std::chrono::hours(v); }},
      {"portal_max_skew_seconds", 10, 86400, [&](std::int64_t v) { config.portal_max_skew = std::chrono::seconds(v); }},
  };
  for (const auto& [name, value] : json.items()) {
    const Field* field = nullptr;
    for (const Field& f : fields) {
      if (name == f.name) field = &f;
    }
    if (!field) return Error(Errc::kParse, "config: unknown field '" + name + "'");
    if (!value.is_number_integer() || value.get<std::int64_t>() < field->min || value.get<std::int64_t>() > field->max) {
      return Error(Errc::kParse, "config: " + name + " must be an integer " + std::to_string(field->min) + ".." +
                                     std::to_string(field->max));
    }
    field->set(value.get<std::int64_t>());
  }
  return config;
}

struct Service::Impl {
  std::shared_ptr<Context> ctx;
  std::mutex mu;
  std::condition_variable cv;
  bool stopping = false;
  std::thread background;

  Status RunJob(const BackgroundJob& job) {
    auto st = job.run();
    if (!st.ok()) ctx->Log("background job " + job.name + ": " + st.error().message());
    return st;
  }

  void Loop() {
    using Steady = std::chrono::steady_clock;
    std::vector<Steady::time_point> next(ctx->jobs.size(), Steady::now());
    std::unique_lock lock(mu);
    while (!stopping) {
      auto now = Steady::now();
      auto wake = now + std::chrono::seconds(60);
      for (std::size_t i = 0; i < ctx->jobs.size(); ++i) {
        if (next[i] <= now) {
          lock.unlock();
          (void)RunJob(ctx->jobs[i]);  // logged inside; the job runs again at its next interval
          lock.lock();
          if (stopping) return;
          next[i] = Steady::now() + ctx->jobs[i].interval;
        }
        wake = std::min(wake, next[i]);
      }
      cv.wait_until(lock, wake, [&] { return stopping; });
    }
  }
};

Expected<std::unique_ptr<Service>> Service::Create(ServiceDeps deps, ServiceConfig config) {
  if (config.repo_dir.empty() || config.blob_dir.empty()) {
    return Error(Errc::kInvalidArgument, "the repository and blob directories must be set");
  }
  auto ctx = std::make_shared<Context>(deps.pool, deps.keyserver, deps.clock, deps.random, std::move(config),
                                       std::move(deps.log));
  UPK_TRY(ctx->tokens.Reload(ctx->pool));
  ctx->jobs.push_back(BackgroundJob{"token reload", std::chrono::seconds(10), [c = ctx.get()] { return c->tokens.Reload(c->pool); }});
  UPK_TRY(InitRepository(*ctx));
  UPK_TRY(InitFleet(*ctx));
  auto impl = std::make_shared<Impl>();
  impl->ctx = std::move(ctx);
  return std::unique_ptr<Service>(new Service(std::move(impl)));
}

Service::~Service() { StopBackground(); }

Status Service::Register(net::Server& server) {
  impl_->ctx->metrics = &server.metrics();
  UPK_TRY(RegisterRepositoryApi(impl_->ctx, server));
  UPK_TRY(RegisterApplianceApi(impl_->ctx, server));
  UPK_TRY(RegisterFleetApi(impl_->ctx, server));
  UPK_TRY(RegisterAdminApi(impl_->ctx, server));
  UPK_TRY(RegisterPortal(impl_->ctx, server));
  UPK_TRY(RegisterDashboard(impl_->ctx, server));  // dashboard.cpp; logs its setup token in a background job
  return OkStatus();
}

void Service::StartBackground() {
  std::lock_guard lock(impl_->mu);
  if (impl_->background.joinable() || impl_->stopping) return;
  impl_->background = std::thread([impl = impl_.get()] { impl->Loop(); });
}

void Service::StopBackground() {
  {
    std::lock_guard lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->cv.notify_all();
  if (impl_->background.joinable()) impl_->background.join();
  for (const auto& hook : impl_->ctx->stop_hooks) hook();
}

Status Service::RunBackgroundOnce() {
  Status result = OkStatus();
  for (const BackgroundJob& job : impl_->ctx->jobs) {
    auto st = impl_->RunJob(job);
    if (!st.ok() && result.ok()) result = st;
  }
  return result;
}

}  // namespace upkeep::updater
