// The client upgrade scheduler: after a software install brought new client builds, it queues
// every outdated client that checks in (or is connected), starts at most
// `max_concurrent_client_upgrades` upgrades at a time and paces all BUILD_CHUNK bytes together
// through ONE token bucket of `max_client_upgrade_bandwidth` bytes/s (docs/relay-scheduler.md).
//
// It is a pure state machine with no I/O: the relay core feeds it events (check-ins, departures,
// console requests, BUILD_GET, chunk write completions, BUILD_REPORT, Tick) and it acts through the
// UpgradeLink the relay implements (send UPGRADE, send a BUILD_CHUNK range, abandon an upgrade).
// Time: MonoClock (pacing, time-outs, back-off) and Clock (last check-in dates in the export).
//
// Threads: NOT thread-safe. One strand (the relay's ASIO strand, or a test loop) calls every
// method. UpgradeLink callbacks run inside scheduler calls and must not call back into the
// scheduler synchronously (post the follow-up event instead); const queries are fine.
// Ownership: the scheduler keeps references to the link and clocks; they must outlive it.
// Errors: Status / Expected with kInvalidArgument (bad build, bad id, bad setting), kNotFound
// (unknown client), kLimit (too many clients), kVerification (a corrupt BUILD_REPORT or a
// BUILD_GET out of turn; the client is marked failed and the event is otherwise refused).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <list>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"

namespace upkeep::relay {

using MonoTime = std::chrono::steady_clock::time_point;

// Monotonic time with sub-second resolution (Clock has whole seconds, too coarse for pacing).
class MonoClock {
 public:
  virtual ~MonoClock() = default;
  virtual MonoTime Now() const = 0;
};

class SteadyMonoClock final : public MonoClock {
 public:
  MonoTime Now() const override { return std::chrono::steady_clock::now(); }
};

class FakeMonoClock final : public MonoClock {
 public:
  MonoTime Now() const override { return now_; }
  void Advance(std::chrono::nanoseconds d) { now_ += d; }

 private:
  MonoTime now_{};
};

// One new client build for one platform, as the installed software package brought it.
struct ClientBuild {
  std::string platform;        // 1-64 of [A-Za-z0-9._-]
  std::string version;         // MAJOR.MINOR.BUILD (packages::Version)
  std::uint64_t length = 0;    // > 0
  std::string sha256;          // 64 lower-case hex
  std::string signature;       // vendor signature as sent in UPGRADE (opaque, non-empty, <= 4 KiB)
  std::filesystem::path path;  // where the relay reads the bytes from
};

struct SchedulerSettings {
  std::uint32_t max_concurrent_client_upgrades = 10;          // 1..100000
  std::uint64_t max_client_upgrade_bandwidth = 10u << 20;     // bytes/s, 16 KiB/s .. 1 TiB/s
  std::chrono::milliseconds stall_timeout{60'000};            // no progress this long: "stalled"
  std::chrono::milliseconds retry_backoff{60'000};            // doubled after each failure
  std::uint32_t max_attempts = 3;                             // then the client is given up
  std::uint32_t chunk_bytes = 65536;                          // largest grant (BUILD_CHUNK limit)
  std::uint32_t window_chunks = 2;                            // granted-but-unaccepted chunks per client
};

// Validates a settings value set (ranges above); the message names the field.
Status ValidateSettings(const SchedulerSettings& s);

// What the relay core does on the scheduler's behalf. Implementations send frames; they must not
// call scheduler events synchronously (see the thread rule above).
class UpgradeLink {
 public:
  virtual ~UpgradeLink() = default;
  // Send UPGRADE {version, length, sha256, signature}; the client answers with BUILD_GET.
  virtual void StartUpgrade(const std::string& client_id, const ClientBuild& build) = 0;
  // Send bytes [offset, offset + length) of the build as BUILD_CHUNK frame(s), then report
  // ChunkAccepted(client_id, length) once they left the client's send queue.
  virtual void SendChunk(const std::string& client_id, const ClientBuild& build, std::uint64_t offset,
                         std::uint32_t length) = 0;
  // The attempt is over without success (stalled, superseded, reconnected): drop queued chunks;
  // `reason` is the protocol error code to send ("upgrade_stalled") or empty for none.
  virtual void CancelUpgrade(const std::string& client_id, std::string_view reason) = 0;
};

enum class ClientState { kCurrent, kPending, kUpgrading, kFailed, kOffline };
// "current", "upgrade pending", "upgrading", "failed", "offline" (the export's words).
const char* ClientStateName(ClientState s);

struct ClientStatus {
  std::string id;
  std::string platform;
  std::string version;         // as the client last reported it (or the build it installed)
  ClientState state = ClientState::kOffline;
  std::string detail;          // pending: "version X"; upgrading: "S/T bytes"; failed: the reason
  std::string target_version;  // the build it is (or will be) upgraded to; empty if none
  std::uint64_t bytes_sent = 0;   // upgrading: granted bytes of this attempt (offset included)
  std::uint64_t bytes_total = 0;  // upgrading: build length
  std::uint32_t attempts = 0;     // failed attempts since the last success or new build
  bool given_up = false;
  SysTime last_checkin{};
};

struct CheckIn {
  std::string id;        // 1-256 bytes, no NUL (authenticated by the relay before)
  std::string platform;  // may be unknown: then nothing to upgrade
  std::string version;   // as the client says; not MAJOR.MINOR.BUILD: failed, not upgraded
};

struct BuildReport {
  std::string version;
  std::string result;  // "installed" or "failed"; anything else is corrupt
  std::string detail;  // truncated to 200 bytes, control characters replaced
};

struct ConsoleAnswer {
  enum class Kind { kNotPending, kMovedToFront, kUpgrading };
  Kind kind = Kind::kNotPending;
  std::chrono::milliseconds estimated_wait{0};  // kUpgrading: remaining bytes at the fair share
};

struct SchedulerStats {
  std::size_t clients = 0, current = 0, pending = 0, upgrading = 0, failed = 0, offline = 0;
  std::uint64_t bytes_granted = 0;  // all SendChunk lengths so far
  std::uint64_t upgrades_started = 0, upgrades_installed = 0;
};

constexpr std::size_t kMaxClients = 1'000'000;
constexpr std::size_t kMaxClientIdBytes = 256;

class UpgradeScheduler {
 public:
  static Expected<std::unique_ptr<UpgradeScheduler>> Create(UpgradeLink& link, const MonoClock& mono,
                                                            const Clock& wall, SchedulerSettings settings);
  ~UpgradeScheduler();
  UpgradeScheduler(const UpgradeScheduler&) = delete;
  UpgradeScheduler& operator=(const UpgradeScheduler&) = delete;

  // A software install brought these builds (one per platform, validated, replaces the previous
  // set): every known client is re-evaluated; connected outdated ones are queued, running
  // upgrades to an older build are cancelled and re-queued, given-up clients get a new chance.
  Status SetBuilds(std::vector<ClientBuild> builds);

  // Live settings: a lower concurrency lets running upgrades finish and starts none until under
  // the cap; a new bandwidth applies from the next grant (the bucket is re-sized, not refilled).
  Status SetMaxConcurrent(std::uint32_t n);
  Status SetBandwidth(std::uint64_t bytes_per_second);
  const SchedulerSettings& settings() const { return settings_; }

  // Events (each one also runs the pacing loop).
  Status ClientCheckedIn(const CheckIn& c);
  void ClientGone(const std::string& id);  // unknown ids are ignored
  // A provisioned client not connected now (from the client store at start), so the export lists
  // every client: offline with what it last reported. No-op for a client already known.
  Status ClientKnown(const CheckIn& c, std::optional<SysTime> last_checkin);
  ConsoleAnswer ConsoleAsked(const std::string& id);
  // BUILD_GET: version must be the target, offset <= length; else kVerification and failed.
  Status BuildRequested(const std::string& id, std::string_view version, std::uint64_t offset);
  // `bytes` of earlier SendChunks reached the client (write completed); resets the stall timer.
  void ChunkAccepted(const std::string& id, std::uint64_t bytes);
  // BUILD_REPORT. A report from a client not upgrading, for another version, with another
  // result, or "installed" before the whole build was sent is corrupt: kVerification, failed.
  Status BuildReported(const std::string& id, const BuildReport& r);
  // Refill the bucket, grant bytes, detect stalls, start retries. Call at least every 10 ms while
  // Busy(); NextWakeup() says when something is due.
  void Tick();
  bool Busy() const;
  std::optional<MonoTime> NextWakeup() const;
  // An administrator's manual retry of a failed (or given-up) client.
  Status Retry(const std::string& id);

  // Queries.
  Expected<ClientStatus> Find(const std::string& id) const;
  std::vector<ClientStatus> Snapshot() const;  // sorted by id
  SchedulerStats Stats() const;
  std::vector<std::string> QueueOrder() const;  // pending ids, next first
  std::size_t QueueLength() const { return queue_.size(); }
  std::size_t ActiveCount() const { return active_.size(); }

  // Export: every client, sorted by id. CSV (RFC 4180, every field quoted, CRLF): header
  // "id,platform,version,state,detail,last_checkin". JSON: {"clients": [{"id", "platform",
  // "version", "state", "detail", "target_version", "last_checkin"}]}, serialized with invalid
  // UTF-8 replaced by U+FFFD (so a hostile id cannot make it throw). Dates RFC 3339 UTC.
  std::string ExportCsv() const;
  std::string ExportJson() const;

 private:
  struct Client;
  UpgradeScheduler(UpgradeLink& link, const MonoClock& mono, const Clock& wall, SchedulerSettings s);

  const ClientBuild* BuildFor(const std::string& platform) const;
  bool Outdated(const Client& c) const;
  void Evaluate(Client& c, bool front);
  void Enqueue(Client& c, bool front);
  void Dequeue(Client& c);
  void EndAttempt(Client& c);
  void Fail(Client& c, std::string reason, MonoTime now);
  void Pump();
  void Refill(MonoTime now);
  double Capacity() const;
  std::uint32_t ChunkSize() const;
  ClientStatus StatusOf(const Client& c) const;

  UpgradeLink& link_;
  const MonoClock& mono_;
  const Clock& wall_;
  SchedulerSettings settings_;
  std::map<std::string, ClientBuild> builds_;  // by platform
  std::unordered_map<std::string, std::unique_ptr<Client>> clients_;
  std::list<Client*> queue_;     // pending and online, next first
  std::list<Client*> active_;    // upgrading, round-robin order for grants
  std::multimap<MonoTime, std::string> retries_;  // retry time -> client id (lazily validated)
  double tokens_ = 0;
  MonoTime last_refill_{};
  SchedulerStats counters_;
};

}  // namespace upkeep::relay
