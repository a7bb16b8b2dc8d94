#include "upkeep/db/transaction.hpp"

#include <algorithm>
#include <random>
#include <thread>

namespace upkeep::db::internal {

Status Begin(Connection& conn, const TxOptions& options) {
  std::string sql = "BEGIN ISOLATION LEVEL ";
  switch (options.isolation) {
    case Isolation::kReadCommitted:
      sql += "READ COMMITTED";
      break;
    case Isolation::kRepeatableRead:
      sql += "REPEATABLE READ";
      break;
    case Isolation::kSerializable:
      sql += "SERIALIZABLE";
      break;
  }
  sql += options.read_only ? " READ ONLY" : " READ WRITE";
  if (conn.InTransaction()) {
    return Error(Errc::kInternal, "WithTransaction on a connection that is already inside a transaction");
  }
  auto r = conn.Exec(sql);
  if (!r.ok()) return r.error();
  return OkStatus();
}

Status Commit(Connection& conn, bool* sent) {
  *sent = conn.IsOpen();
  auto r = conn.Exec("COMMIT");
  if (!r.ok()) {
    if (conn.InTransaction()) Rollback(conn);
    return r.error();
  }
  // COMMIT of an aborted transaction "succeeds" with the tag ROLLBACK: fn ignored an error.
  if (r->command_tag() == "ROLLBACK") {
    return MakeDbError("25P02", "transaction rolled back at COMMIT: a statement in it had failed");
  }
  return OkStatus();
}

void Rollback(Connection& conn) {
  if (conn.IsOpen()) (void)conn.Exec("ROLLBACK");
}

void Backoff(int attempt, const TxOptions& options) {
  thread_local std::minstd_rand rng(std::random_device{}());
  const int shift = std::min(attempt - 1, 6);
  const auto cap = options.backoff_base * (1 << shift);
  // Full jitter, so two transactions that just collided do not collide again in lockstep.
  std::uniform_int_distribution<long long> dist(0, std::max<long long>(1, cap.count()));
  std::this_thread::sleep_for(std::chrono::milliseconds(dist(rng)));
}

}  // namespace upkeep::db::internal
