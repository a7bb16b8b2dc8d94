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

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace upkeep::relay::sim
