#include "upkeep/db/pool.hpp"

#include <algorithm>

#include "upkeep/db/errors.hpp"

namespace upkeep::db {

using Steady = std::chrono::steady_clock;

// ---- PooledConnection ----

PooledConnection::PooledConnection(PooledConnection&& other) noexcept
    : pool_(std::exchange(other.pool_, nullptr)), conn_(std::move(other.conn_)) {}

PooledConnection& PooledConnection::operator=(PooledConnection&& other) noexcept {
  if (this != &other) {
    Return();
    pool_ = std::exchange(other.pool_, nullptr);
    conn_ = std::move(other.conn_);
  }
  return *this;
}

PooledConnection::~PooledConnection() { Return(); }

void PooledConnection::Return() {
  if (pool_ && conn_) pool_->Release(std::move(conn_));
  pool_ = nullptr;
}

// ---- Pool ----

Expected<std::unique_ptr<Pool>> Pool::Create(PoolOptions options) {
  if (options.max_size == 0) return Error(Errc::kInvalidArgument, "database pool: max_size must be at least 1");
  if (options.reconnect_backoff_min.count() <= 0 || options.reconnect_backoff_max < options.reconnect_backoff_min) {
    return Error(Errc::kInvalidArgument, "database pool: reconnect back-off bounds are inconsistent");
  }
  // Catch a malformed connection string at start-up rather than at the first request.
  auto checked = ConninfoWithDatabase(options.connect.conninfo, "x");
  if (!checked.ok()) return checked.error();
  return std::unique_ptr<Pool>(new Pool(std::move(options)));
}

Pool::~Pool() {
  std::lock_guard lock(mu_);
  idle_.clear();
}

Expected<PooledConnection> Pool::Acquire() { return Acquire(options_.acquire_timeout); }

Expected<PooledConnection> Pool::Acquire(std::chrono::milliseconds timeout) {
  const auto deadline = Steady::now() + timeout;
  std::unique_lock lock(mu_);
  for (;;) {
    if (!idle_.empty()) {
      std::unique_ptr<Connection> conn = std::move(idle_.back());
      idle_.pop_back();
      lock.unlock();
      // Checked outside the lock: it may read from the socket.
      if (conn->CheckAlive()) return PooledConnection(this, std::move(conn));
      conn.reset();
      lock.lock();
      --open_;
      ++stats_.dropped_broken;
      continue;
    }
    if (open_ < options_.max_size) {
      const auto now = Steady::now();
      if (now < next_connect_) {
        // Backing off after a failed connect; a connection coming back also wakes us.
        if (next_connect_ >= deadline) {
          return MakeDbError(
              kCannotConnect,
              "database unavailable (reconnecting in " +
                  std::to_string(std::chrono::duration_cast<std::chrono::milliseconds>(next_connect_ - now).count()) +
                  " ms): " + last_connect_error_);
        }
        cv_.wait_until(lock, next_connect_);
        continue;
      }
      ++open_;  // reserve the slot while connecting without the lock
      lock.unlock();
      auto opened = Connection::Open(options_.connect);
      lock.lock();
      if (!opened.ok()) {
        --open_;
        ++stats_.failed_connects;
        backoff_ = backoff_.count() == 0 ? options_.reconnect_backoff_min
                                         : std::min(backoff_ * 2, options_.reconnect_backoff_max);
        next_connect_ = Steady::now() + backoff_;
        last_connect_error_ = opened.error().message();
        cv_.notify_all();
        return opened.error();
      }
      ++stats_.connects;
      backoff_ = std::chrono::milliseconds(0);
      next_connect_ = {};
      lock.unlock();
      return PooledConnection(this, std::make_unique<Connection>(std::move(opened).value()));
    }
    if (cv_.wait_until(lock, deadline) == std::cv_status::timeout && idle_.empty() && open_ >= options_.max_size) {
      ++stats_.busy_timeouts;
      return Error(Errc::kLimit, "database busy: all " + std::to_string(options_.max_size) +
                                     " pooled connections stayed in use for " + std::to_string(timeout.count()) +
                                     " ms");
    }
  }
}

void Pool::Release(std::unique_ptr<Connection> conn) {
  // A body that returned early may leave a transaction open; never hand that to the next user.
  if (conn->IsOpen() && conn->InTransaction()) (void)conn->Exec("ROLLBACK");
  const bool reusable = conn->IsOpen() && !conn->InTransaction();
  if (!reusable) conn.reset();  // closes outside the lock
  {
    std::lock_guard lock(mu_);
    if (reusable) {
      idle_.push_back(std::move(conn));
    } else {
      --open_;
      ++stats_.dropped_broken;
    }
  }
  cv_.notify_one();
}

Status Pool::HealthCheck() {
  Error last(Errc::kInternal, "database health check did not run");
  for (int i = 0; i < 2; ++i) {
    auto conn = Acquire();
    if (!conn.ok()) return conn.error();
    auto r = (*conn)->Exec("SELECT 1");
    if (r.ok()) return OkStatus();
    last = r.error();
    if (!IsConnectionLost(last)) break;
  }
  return last.Wrap("database health check");
}

PoolStats Pool::Stats() const {
  std::lock_guard lock(mu_);
  PoolStats s = stats_;
  s.max_size = options_.max_size;
  s.open = open_;
  s.idle = idle_.size();
  return s;
}

}  // namespace upkeep::db
