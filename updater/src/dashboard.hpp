// The support dashboard (docs/dashboard.md): server-rendered HTML pages under /dashboard for the
// vendor's support staff, signed in with web accounts (upkeep::web, docs/web-security.md) kept in
// PostgreSQL. Internal to upkeep_updater.
//
// Contract:
// - PgAccountRepository is web::AccountRepository over the dashboard_accounts table (migration 4).
//   Thread-safe (every call takes its own pooled connection); the Pool must outlive it. Errors name
//   the account, never a hash. CreateFirst locks the table, so of two racing setups exactly one
//   wins (the other gets kPolicy); a partial unique index backs this up.
// - RegisterDashboard registers the pages on `server` and a background job that, on its first run
//   (after the server started), logs the one-time setup token while no account exists. Every page
//   runs on the worker pool (database, Argon2id).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "context.hpp"
#include "upkeep/web/accounts.hpp"
#include "upkeep/web/password.hpp"

namespace upkeep::updater {

class PgAccountRepository final : public web::AccountRepository {
 public:
  explicit PgAccountRepository(db::Pool& pool) : pool_(pool) {}
  Expected<std::optional<web::Account>> Find(std::string_view name) const override;
  Expected<std::vector<web::Account>> List() const override;
  Expected<std::size_t> Count() const override;
  Status Create(const web::Account& account) override;
  Status CreateFirst(const web::Account& account) override;
  Status Update(const web::Account& account) override;

 private:
  Status Insert(const web::Account& account, bool first);
  db::Pool& pool_;
};

// Registers the pages of docs/dashboard.md: setup, login, logout, search, the appliance page and
// its actions (reenable, assign, pin, unpin, revoke), the fleet page and the rollout controls
// (pause, resume, abort: ChangeRolloutState), accounts (list, create, role, disable) and the own
// password. Appliance changes go through ChangeAppliance (fleet_state.hpp), audited as
// dashboard:NAME.
Status RegisterDashboard(const std::shared_ptr<Context>& ctx, net::Server& server);

// Inline SVG charts (dashboard_fleet.cpp): presentation attributes only, every text escaped.
struct ChartBar {
  std::string label;
  std::int64_t value = 0;
};
// Horizontal bars, one per entry, scaled to the largest value; each bar's <title> names its value.
std::string BarChartSvg(const std::string& id, const std::string& title, const std::vector<ChartBar>& bars);
struct ChartPoint {
  std::string label;  // e.g. the hour
  double value = 0;   // percent 0..100 (clamped)
};
// A 0..100 % line chart over the points in order, one circle per point with its label and value.
std::string LineChartSvg(const std::string& id, const std::string& title, const std::vector<ChartPoint>& points);

// The Argon2id cost of dashboards registered afterwards (default: INTERACTIVE). Tests only, to
// use PasswordCost::MinForTests(); never called by the updater.
void SetDashboardPasswordCostForTests(web::PasswordCost cost);

}  // namespace upkeep::updater
