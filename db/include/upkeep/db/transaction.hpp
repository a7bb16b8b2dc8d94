// Transactions with retry: WithTransaction(conn, fn) runs fn(Connection&) inside BEGIN/COMMIT.
//
// fn returns an Expected<T> (or Status). On an error, or an exception thrown by fn, the
// transaction is rolled back and the error returned. A serialization failure (40001) or a
// deadlock (40P01), whether from fn's statements or from COMMIT, reruns the whole transaction,
// up to TxOptions::max_attempts, with a short randomized back-off: fn must therefore be safe to
// run again (no side effects outside the database, or idempotent ones).
// The Pool overload (in pool.hpp) also retries once on a fresh connection when the connection
// was lost before COMMIT was sent; a loss during COMMIT is returned (the outcome is unknown).
// Same thread-safety as the Connection it runs on.
#pragma once

#include <chrono>
#include <exception>
#include <string>
#include <type_traits>
#include <utility>

#include "upkeep/common/error.hpp"
#include "upkeep/db/connection.hpp"
#include "upkeep/db/errors.hpp"

namespace upkeep::db {

enum class Isolation { kReadCommitted, kRepeatableRead, kSerializable };

struct TxOptions {
  Isolation isolation = Isolation::kReadCommitted;
  bool read_only = false;
  int max_attempts = 5;                       // runs of fn in total, the first included
  std::chrono::milliseconds backoff_base{5};  // doubled per retry, with jitter, capped at 64x
};

namespace internal {

Status Begin(Connection& conn, const TxOptions& options);
// Fails with the server's error, or with 25P02 when the server turned COMMIT into ROLLBACK
// because fn swallowed an error. Sets *sent when COMMIT reached libpq.
Status Commit(Connection& conn, bool* sent);
void Rollback(Connection& conn);
void Backoff(int attempt, const TxOptions& options);

template <typename F>
auto Invoke(F& fn, Connection& conn) -> std::invoke_result_t<F&, Connection&> {
  try {
    return fn(conn);
  } catch (const std::exception& e) {
    return Error(Errc::kInternal, std::string("exception in transaction body: ") + e.what());
  } catch (...) {
    return Error(Errc::kInternal, "unknown exception in transaction body");
  }
}

// *commit_in_doubt is set when the connection failed while COMMIT was in flight.
template <typename F>
auto RunTransaction(Connection& conn, F& fn, const TxOptions& options, bool* commit_in_doubt)
    -> std::invoke_result_t<F&, Connection&> {
  *commit_in_doubt = false;
  for (int attempt = 1;; ++attempt) {
    if (Status begun = Begin(conn, options); !begun.ok()) return begun.error();
    auto result = Invoke(fn, conn);
    Status outcome = OkStatus();
    if (result.ok()) {
      bool sent = false;
      outcome = Commit(conn, &sent);
      if (outcome.ok()) return result;
      *commit_in_doubt = sent && IsConnectionLost(outcome.error());
    } else {
      outcome = result.error();
      Rollback(conn);
    }
    if (!IsRetryableTransaction(outcome.error()) || attempt >= options.max_attempts) return outcome.error();
    Backoff(attempt, options);
  }
}

}  // namespace internal

template <typename F>
requires std::is_invocable_v<F&, Connection&>
auto WithTransaction(Connection& conn, F&& fn, const TxOptions& options = {}) -> std::invoke_result_t<F&, Connection&> {
  bool in_doubt = false;
  return internal::RunTransaction(conn, fn, options, &in_doubt);
}

}  // namespace upkeep::db
