// A fixed-size, thread-safe pool of PostgreSQL connections that survives server restarts.
//
// Acquire() hands out a connection for exclusive use; the PooledConnection returns it when it
// goes out of scope. Connections are opened lazily, at most max_size at a time. When all are
// in use, Acquire waits up to acquire_timeout and then fails with a "database busy" error
// (IsBusy(); an HTTP layer answers 503). A connection the server has closed (restart,
// termination) is noticed at checkout without a round trip, or when a query on it fails; it is
// dropped and the next checkout opens a new one. After a failed connect, new connects wait a
// back-off (doubling from reconnect_backoff_min to reconnect_backoff_max) so an outage is not
// hammered; an Acquire whose deadline ends inside the back-off fails at once with the last
// connect error (IsConnectionLost()).
// A connection handed back inside a transaction is rolled back first.
//
// Thread safety: every Pool method may be called from any thread. A PooledConnection is used by
// one thread at a time. The Pool must outlive every PooledConnection it handed out.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/db/connection.hpp"
#include "upkeep/db/transaction.hpp"

namespace upkeep::db {

struct PoolOptions {
  ConnectOptions connect;
  std::size_t max_size = 8;
  std::chrono::milliseconds acquire_timeout{5000};
  std::chrono::milliseconds reconnect_backoff_min{50};
  std::chrono::milliseconds reconnect_backoff_max{2000};
};

struct PoolStats {
  std::size_t max_size = 0;
  std::size_t open = 0;  // idle + in use (+ being opened)
  std::size_t idle = 0;
  std::uint64_t connects = 0;  // successful opens, the first ones included
  std::uint64_t failed_connects = 0;
  std::uint64_t dropped_broken = 0;  // connections found dead and discarded
  std::uint64_t busy_timeouts = 0;
};

class Pool;

class PooledConnection {
 public:
  PooledConnection(PooledConnection&& other) noexcept;
  PooledConnection& operator=(PooledConnection&& other) noexcept;
  PooledConnection(const PooledConnection&) = delete;
  PooledConnection& operator=(const PooledConnection&) = delete;
  ~PooledConnection();

  Connection& operator*() { return *conn_; }
  Connection* operator->() { return conn_.get(); }
  Connection& get() { return *conn_; }

 private:
  friend class Pool;
  PooledConnection(Pool* pool, std::unique_ptr<Connection> conn) : pool_(pool), conn_(std::move(conn)) {}
  void Return();
  Pool* pool_;
  std::unique_ptr<Connection> conn_;
};

class Pool {
 public:
  // Checks the options and the connection string; does not connect yet.
  static Expected<std::unique_ptr<Pool>> Create(PoolOptions options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  Expected<PooledConnection> Acquire();
  Expected<PooledConnection> Acquire(std::chrono::milliseconds timeout);

  // Checks out a connection and runs "SELECT 1", trying a second connection if the first was
  // dead. OK means the database answers now.
  Status HealthCheck();

  PoolStats Stats() const;
  const PoolOptions& options() const { return options_; }

 private:
  friend class PooledConnection;
  explicit Pool(PoolOptions options) : options_(std::move(options)) {}
  void Release(std::unique_ptr<Connection> conn);

  const PoolOptions options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::unique_ptr<Connection>> idle_;
  std::size_t open_ = 0;
  std::chrono::steady_clock::time_point next_connect_{};
  std::chrono::milliseconds backoff_{0};
  std::string last_connect_error_;
  PoolStats stats_;
};

// Runs fn(Connection&) in a transaction on a pooled connection (see transaction.hpp). If the
// connection is lost before COMMIT was sent (the server restarted), runs it once more on a
// fresh connection: the lost transaction was rolled back by the server.
template <typename F>
requires std::is_invocable_v<F&, Connection&>
auto WithTransaction(Pool& pool, F&& fn, const TxOptions& options = {}) -> std::invoke_result_t<F&, Connection&> {
  for (int round = 0;; ++round) {
    auto conn = pool.Acquire();
    if (!conn.ok()) return conn.error();
    bool in_doubt = false;
    auto result = internal::RunTransaction(**conn, fn, options, &in_doubt);
    if (result.ok() || in_doubt || round >= 1 || !IsConnectionLost(result.error())) return result;
  }
}

}  // namespace upkeep::db
