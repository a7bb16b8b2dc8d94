// What every part of the updater service shares: its dependencies, configuration, the operator
// token cache, the background job list, and the helpers every handler uses to answer JSON
// errors, run a transaction that a rejection rolls back, and write audit rows.
// Internal to upkeep_updater; the route groups live in repository_api.cpp (bootstrap, blobs,
// releases, channels, /repo/), appliance_api.cpp (enrol, check-in, events), fleet_api.cpp
// (rollouts, appliances), admin_api.cpp (tokens, audit) and portal_api.cpp (download portal).
#pragma once

#include <atomic>
#include <chrono>
#include <functional>
#include <initializer_list>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

#include "auth.hpp"
#include "upkeep/db/audit.hpp"
#include "upkeep/db/errors.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/db/transaction.hpp"
#include "upkeep/net/api.hpp"
#include "upkeep/net/metrics.hpp"
#include "upkeep/updater/service.hpp"

namespace upkeep::updater {

class RepositoryStore;  // repository_store.hpp

// A periodic task run by the service's background thread.
struct BackgroundJob {
  std::string name;
  std::chrono::milliseconds interval;
  std::function<Status()> run;  // an error is logged; the job runs again at the next interval
};

struct Context {
  Context(db::Pool& p, keyserver::KeyserverClient& k, const Clock& c, Random& r, ServiceConfig cfg,
          std::function<void(std::string_view)> log_fn)
      : pool(p), keyserver(k), clock(c), random(r), config(std::move(cfg)), log(std::move(log_fn)) {}
  Context(const Context&) = delete;
  Context& operator=(const Context&) = delete;

  db::Pool& pool;
  keyserver::KeyserverClient& keyserver;
  const Clock& clock;
  Random& random;
  ServiceConfig config;
  std::function<void(std::string_view)> log;
  net::MetricsRegistry* metrics = nullptr;  // set by Register()
  TokenStore tokens;
  std::vector<BackgroundJob> jobs;           // filled before StartBackground()
  // Run by Service::StopBackground(): stop threads that borrow the pool or the keyserver client.
  std::vector<std::function<void()>> stop_hooks;
  std::shared_ptr<RepositoryStore> repository;  // set by InitRepository()
  std::shared_ptr<class FleetState> fleet;   // set by InitFleet() (fleet_state.hpp)

  void Log(std::string_view line) const {
    if (log) log(line);
  }

  // 503 + Retry-After for an unreachable or busy database, 500 (logged) otherwise.
  net::Response DbFailure(std::string_view what, const Error& error) const;
  // 503 for an unreachable keyserver (kIo), otherwise the keyserver's refusal as 502.
  net::Response KeyserverFailure(std::string_view what, const Error& error) const;

  // Runs fn(connection, reject) in a transaction. fn rejects the request by setting `reject` and
  // returning an error, which rolls everything back; the response is then `reject`.
  template <typename T, typename F>
  std::variant<T, net::Response> Transact(std::string_view what, F&& fn, const db::TxOptions& options = {}) const {
    std::optional<net::Response> reject;
    auto result = db::WithTransaction(
        pool,
        [&](db::Connection& c) -> Expected<T> {
          reject.reset();
          return fn(c, reject);
        },
        options);
    if (reject) return std::move(*reject);
    if (!result.ok()) {
      if (db::IsUniqueViolation(result.error())) {
        return net::ApiError(409, "conflict", "conflicting concurrent change, retry");
      }
      return DbFailure(what, result.error());
    }
    return std::move(result).value();
  }

  // The operator behind the request's bearer token if its role is at least `needed`, else the
  // 401/403 answer. May reload the token cache from the database on a miss.
  std::variant<Operator, net::Response> Authorize(const net::Request& req, OperatorRole needed);

  // Bumps catalog_generation inside the caller's transaction: every updater instance reloads
  // what it offers appliances. Call from any write that changes releases, channels or rollouts.
  static Status BumpCatalogGeneration(db::Connection& c);
};

using db::InsertAudit;  // the audit row of a request, in its transaction (db/audit.hpp)

// Route groups, each in its own file.
Status InitRepository(Context& ctx);  // at Create(): keyserver keys, materialise the repository directory
Status RegisterRepositoryApi(const std::shared_ptr<Context>& ctx, net::Server& server);
Status InitFleet(Context& ctx);       // at Create(): catalog and caches
Status RegisterApplianceApi(const std::shared_ptr<Context>& ctx, net::Server& server);
Status RegisterFleetApi(const std::shared_ptr<Context>& ctx, net::Server& server);
Status RegisterAdminApi(const std::shared_ptr<Context>& ctx, net::Server& server);
Status RegisterPortal(const std::shared_ptr<Context>& ctx, net::Server& server);  // portal_api.cpp

}  // namespace upkeep::updater
