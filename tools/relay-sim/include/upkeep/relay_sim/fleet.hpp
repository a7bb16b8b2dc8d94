// relay-sim's fleet: thousands of simulated endpoint clients and technicians' consoles talking to
// a relay (docs/relay-protocol.md) over TLS 1.3 from one process (docs/relay-sim.md).
//
// Each client is a small state machine on one non-blocking socket; OpenSSL is driven directly on
// the fd (asio only reports readiness), with SSL_MODE_RELEASE_BUFFERS and one shared read buffer,
// so an idle connection costs its SSL object and a few hundred bytes. A client checks in, stays
// (active, PING every heartbeat) or leaves and comes back every `passive_interval` (passive),
// echoes DATA, and on UPGRADE downloads the build (BUILD_GET / BUILD_CHUNK), verifies its length,
// SHA-256 and the vendor's ed25519 signature over the SHA-256 hex, "installs" it (its version
// becomes the offered one), sends BUILD_REPORT and reconnects with the new version.
//
// Threads: the Fleet runs one io_context on one thread of its own (Start/Stop). Every public
// method is safe from any other thread; Summary() and AllAtVersion() post to the I/O thread and
// wait, so they must not be called from it. Randomness comes from the injected Random.
// Errors: Start() fails for a bad option or CA file; everything on the wire is counted in the
// summary (refusals by ERROR code, connect failures, failed upgrades), never thrown.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::relay::sim {

struct SimClientSpec {
  std::string id;
  std::string secret;
  std::string version = "1.0.0";
  std::string platform = "linux-x86_64";
  std::string mode = "active";  // "active" or "passive"
};

// The secrets file written by `relay-sim make-clients` (0600):
//   {"clients": [{"id", "secret", "version", "platform", "mode"}], "console_token"?}
struct SecretsFile {
  std::vector<SimClientSpec> clients;
  std::string console_token;  // empty when none
};
// Bounded read (64 MiB), every field validated; errors name the file and entry, never a secret.
Expected<SecretsFile> LoadSecretsFile(const std::filesystem::path& path);
Json SecretsToJson(const SecretsFile& secrets);

struct FleetOptions {
  std::string host = "127.0.0.1";  // IPv4 or IPv6 literal
  std::uint16_t port = 0;
  std::filesystem::path ca_file;   // PEM trust anchor for the relay's certificate
  std::string server_name = "localhost";  // SNI and certificate host name check
  // Vendor key that signs client builds; without one every UPGRADE is reported failed.
  std::optional<packages::PublicKey> vendor_key;

  std::chrono::milliseconds passive_interval{30000};  // a passive client's time between check-ins
  std::chrono::milliseconds passive_linger{500};      // a passive client's stay when nothing is offered
  double connect_rate = 400;                          // new connections per second (fleet-wide)
  std::chrono::milliseconds reconnect_delay{1000};    // after a failure or a close by the relay
  std::chrono::milliseconds heartbeat_override{0};    // 0: use WELCOME's heartbeat_seconds

  double chunk_rate = 0;       // per-client download limit in bytes per second (0: none)
  double stall_fraction = 0;   // share of upgrades that stop reading halfway (once per client)
  std::chrono::milliseconds stall_time{60000};       // how long such a client stops reading

  int consoles = 0;            // console connections
  std::string console_token;
  int writes_per_session = 20;                       // 1 KiB echo round trips before CLOSE
  std::size_t console_write_bytes = 1024;
  std::chrono::milliseconds console_pause{5};        // between round trips

  // The version the wave brings (run --until-version): a client online at another version that
  // has no UPGRADE yet counts as waiting (FleetSummary::waiting_per_slot). Empty: not tracked.
  std::string target_version;
  // >= 0: once this many upgrades were installed, one extra console (the console token) OPENs the
  // waiting client with the highest id (the last in the relay's initial queue order) and records
  // what follows (FleetSummary::front_request). < 0: off.
  int front_request_after = -1;
};

// What the technician's front request saw (docs/relay-sim.md, "Front request").
struct FrontRequestSummary {
  bool done = false;              // the OPEN was answered
  std::string client_id;
  std::string answer;             // ERROR code, or "opened"
  std::string message;            // the ERROR's message (the relay's estimated wait)
  std::uint64_t waiting_at_answer = 0;   // other clients waiting when the answer arrived
  // Times are the kernel's arrival times of the frames, i.e. the order in which the relay wrote them.
  bool started = false;           // the client got its UPGRADE (after the answer, or just before)
  std::uint64_t others_started_between = 0;  // other clients' UPGRADEs written between answer and its UPGRADE
  std::uint64_t others_started_while_asking = 0;  // other UPGRADEs written between OPEN sent and the answer
  std::uint64_t others_read_after_answer = 0;  // of those, read by the simulator only after the answer
  std::vector<std::string> others_between_ids;  // the first 256 of others_started_between
  double wait_ms = 0;             // answer -> its UPGRADE (0 when it came first)
  Json ToJson() const;
};

struct LatencySummary {
  std::uint64_t count = 0;
  double p50_us = 0, p99_us = 0, p999_us = 0, max_us = 0;
};

struct FleetSummary {
  std::size_t clients = 0;
  std::map<std::string, std::uint64_t> by_state;    // offline, connecting, online, downloading, refused
  std::map<std::string, std::uint64_t> by_version;  // the version every client has now
  std::uint64_t checkins = 0;                        // WELCOMEs received by clients
  std::uint64_t connect_failures = 0;                // TCP or TLS set-up failed / closed before WELCOME
  std::map<std::string, std::uint64_t> refusals;     // ERROR code -> count (clients and consoles)
  std::uint64_t upgrades_installed = 0, upgrades_failed = 0, upgrades_stalled = 0;
  std::vector<std::uint64_t> build_bytes_per_second;  // BUILD_CHUNK bytes per 1-second window since Start
  std::uint64_t max_concurrent_downloading = 0;  // clients between their first chunk and the last byte
  // The same at a finer grain, slot i = [i*slot_ms, (i+1)*slot_ms) since Start: chunk bytes
  // received, the most clients receiving at once, the most clients waiting (see target_version).
  std::uint32_t slot_ms = 100;
  std::vector<std::uint64_t> build_bytes_per_slot, downloading_per_slot, waiting_per_slot;
  double first_chunk_ms = -1;     // first BUILD_CHUNK byte, ms since Start (-1: none)
  double last_waiting_ms = -1;    // last sweep after the first chunk with a client waiting
  std::int64_t start_unix_ms = 0; // Start on the system clock, to line up outside events
  // The I/O thread's health: CPU time so far, and the longest gap between two 20 ms sweeps (how far
  // it fell behind: descheduled, or busy).
  double io_cpu_seconds = 0, max_sweep_gap_ms = 0;
  FrontRequestSummary front_request;
  std::uint64_t console_sessions = 0, console_errors = 0;
  LatencySummary console_latency;
  double elapsed_seconds = 0;
  Json ToJson() const;
};

class Fleet {
 public:
  Fleet(FleetOptions options, std::vector<SimClientSpec> clients, Random& random);
  ~Fleet();
  Fleet(const Fleet&) = delete;
  Fleet& operator=(const Fleet&) = delete;

  // Loads the CA, starts the I/O thread; clients connect at `connect_rate`.
  Status Start();
  // Closes every connection and joins the I/O thread. Idempotent.
  void Stop();

  FleetSummary Summary();
  // True when every client has checked in at least once with `version` (as its current version).
  bool AllAtVersion(const std::string& version);
  // Online clients (checked in and connected now).
  std::size_t OnlineCount();
  // From now on passive clients come back at once and stay (an "on request" check-in), so that a
  // relay's export can see the whole fleet connected.
  void Hold();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace upkeep::relay::sim
