// upkeep::relay::RelayCore: the relay server and the client upgrade scheduler wired together
// (docs/relay.md, "RelayCore"). This is what the agent hosts: it owns a Server and an
// UpgradeScheduler, feeds the scheduler the server's events (check-ins, departures, console OPENs,
// BUILD_GET, BUILD_REPORT) and carries out the scheduler's decisions over the server (UPGRADE,
// BUILD_CHUNKs read from the build files with pread, ERROR upgrade_stalled).
//
// Threads: every scheduler call runs on the server's I/O thread; a wake-up timer on that thread
// calls Tick() when the scheduler's NextWakeup() is due. Public methods are safe from any thread
// EXCEPT the I/O thread (the server's callbacks): those that return data post to the I/O thread and
// wait for the answer. Before Start() and after Stop() they run on the calling thread.
// Ownership: the store and clocks must outlive the core. Stop() (and the destructor) join the I/O
// thread. Errors: Status/Expected; SetBuilds refuses a build whose file is missing, has another
// length or another SHA-256 (kVerification), and then changes nothing.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/scheduler.hpp"
#include "upkeep/relay/server.hpp"

namespace upkeep::relay {

struct RelayCoreOptions {
  ServerOptions server;          // its `log` also receives the core's lines
  SchedulerSettings scheduler;   // validated by Create
};

class RelayCore {
 public:
  // `mono` paces the upgrades (SteadyMonoClock in production); `wall` stamps check-ins.
  static Expected<std::unique_ptr<RelayCore>> Create(RelayCoreOptions options, ClientStore& store, const Clock& wall,
                                                     const MonoClock& mono);
  ~RelayCore();
  RelayCore(const RelayCore&) = delete;
  RelayCore& operator=(const RelayCore&) = delete;

  // Binds and starts the server's I/O thread (errors name the file or address). Once only: a
  // second Start, also after Stop, is kInvalidArgument.
  Status Start();
  // Closes every connection, joins the I/O thread. Idempotent.
  void Stop();
  std::uint16_t port() const;
  // Server::Drain: no new clients or sessions; `on_drained` on the I/O thread when none remain.
  void Drain(std::function<void()> on_drained);

  // New client builds (one per platform). Each file is opened, its size compared with `length`
  // and its SHA-256 with `sha256` (read in chunks, constant memory) on the calling thread; any
  // mismatch or a scheduler refusal (bad field): an error naming the build, nothing changes.
  // The files stay open while the builds are current, so a later rename does not affect them.
  Status SetBuilds(std::vector<ClientBuild> builds);
  // Live settings (UpgradeScheduler::SetMaxConcurrent / SetBandwidth); kInvalidArgument if out of range.
  Status SetMaxConcurrent(std::uint32_t n);
  Status SetBandwidth(std::uint64_t bytes_per_second);

  std::vector<ClientStatus> Snapshot();
  SchedulerStats Stats();
  ServerStats server_stats() const;
  std::string ExportCsv();
  std::string ExportJson();

 private:
  struct Impl;
  explicit RelayCore(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace upkeep::relay
