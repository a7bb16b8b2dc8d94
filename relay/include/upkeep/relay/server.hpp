// upkeep::relay::Server: the relay core (docs/relay.md, wire format docs/relay-protocol.md).
//
// Endpoint clients and technicians' consoles connect over TLS 1.3; clients authenticate and check
// in (ClientStore), consoles ask for a client by id and the relay pumps DATA both ways with
// back-pressure; heartbeat, hello, session and send time-outs; drain mode; a token bucket on
// accepted connections (refused before the TLS handshake) and a connection cap.
//
// TLS is driven directly through OpenSSL on the non-blocking socket (no asio::ssl::stream, which
// keeps two 16 KiB buffers per stream): SSL_MODE_RELEASE_BUFFERS, no session tickets or cache,
// one shared read buffer, so an idle connection holds only its SSL object and a few hundred bytes.
//
// Threads: the server runs one io_context on one I/O thread of its own. Every ServerObserver
// callback and every Completion runs on that thread, and must not block (hand long work off).
// All public methods are safe from any thread, including from inside the callbacks (they post to
// the I/O thread), except Stop() and the destructor, which join the thread and must not be called
// from a callback. Errors reach the peer as ERROR frames and the log (never a secret).
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/scheduler.hpp"  // BuildReport

namespace upkeep::relay {

struct ServerOptions {
  std::string address = "127.0.0.1";  // IPv4 or IPv6 literal
  std::uint16_t port = 0;              // 0: ephemeral, see Server::port()
  std::filesystem::path certificate_chain;  // PEM, leaf first
  std::filesystem::path private_key;        // PEM, unencrypted

  std::size_t max_connections = 25000;   // beyond: closed at accept, before the handshake
  double accept_rate = 500;              // new connections per second (token bucket, burst = rate)
  std::size_t send_queue_limit = 64 * 1024;  // back-pressure bound per connection

  std::chrono::milliseconds hello_timeout{10000};          // accept to WELCOME (handshake + HELLO)
  std::chrono::seconds heartbeat{30};                      // WELCOME "heartbeat_seconds"
  std::chrono::milliseconds idle_timeout{95000};           // no frame from the peer: ERROR idle_timeout
  std::chrono::milliseconds session_idle_timeout{600000};  // no DATA either way: CLOSE "idle_timeout"
  std::chrono::milliseconds send_timeout{30000};           // queued bytes making no progress: close
  std::chrono::seconds checkin_interval{24 * 3600};        // WELCOME "checkin_seconds" (<= 24 h)
  std::chrono::milliseconds sweep_interval{1000};          // how often time-outs are checked

  // One event per line, never a secret. Runs on the I/O thread; null: no logging.
  std::function<void(std::string_view)> log;
};

struct ClientInfo {
  std::string id;
  std::string version;
  std::string platform;
  std::string mode;  // "active" or "passive"
};

// What a client sent in BUILD_REPORT (validated: result is "installed" or "failed") is the
// scheduler's BuildReport (scheduler.hpp), one type for both so the core passes it through.

// Hooks for the client upgrade scheduler. Called on the I/O thread; keep them quick.
class ServerObserver {
 public:
  virtual ~ServerObserver() = default;
  // After a client authenticated and its check-in was recorded (WELCOME already queued).
  virtual void OnClientCheckIn(const ClientInfo& client) = 0;
  // The client's connection is gone (any reason, including being replaced by a newer one).
  virtual void OnClientDisconnect(const std::string& client_id) = 0;
  // A console asked for this (known, online, not paired) client. Return a message to refuse with
  // ERROR client_busy (e.g. "upgrading, about 40 s left"); nullopt pairs them. This is also the
  // hint to move a pending client to the front of the upgrade queue.
  virtual std::optional<std::string> OnConsoleOpen(const std::string& client_id) = 0;
  virtual void OnBuildGet(const std::string& client_id, const std::string& version, std::uint64_t offset) = 0;
  virtual void OnBuildReport(const std::string& client_id, const BuildReport& report) = 0;
};

// Called once on the I/O thread: Ok when the frame's bytes were handed to TLS and the socket,
// an error (kNotFound: client not connected; kIo: connection closed first; kInvalidArgument).
using Completion = std::function<void(Status)>;

struct ServerStats {
  std::uint64_t connections = 0;  // open TCP connections (any phase)
  std::uint64_t clients = 0;      // authenticated clients online
  std::uint64_t consoles = 0;
  std::uint64_t sessions = 0;
  std::uint64_t accepted = 0;
  std::uint64_t refused_rate = 0;  // closed at accept by the rate limit
  std::uint64_t refused_cap = 0;   // closed at accept by max_connections
  std::uint64_t auth_failures = 0;
  std::uint64_t protocol_errors = 0;  // garbage / oversized frames
  // The largest number of bytes the relay held for one session at once (both send queues and
  // both partial frames): the back-pressure bound (about 2 x send_queue_limit).
  std::uint64_t peak_session_buffered = 0;
  std::uint64_t backpressure_pauses = 0;  // times a side stopped being read for its peer's full queue
  bool draining = false;
};

class Server {
 public:
  // The store and observer (may be null) must outlive the Server. `clock` stamps check-ins.
  Server(ServerOptions options, ClientStore& store, const Clock& clock, ServerObserver* observer = nullptr);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Loads the certificate and key, binds, starts the I/O thread. Errors name the file or address.
  Status Start();
  std::uint16_t port() const;
  // Closes every connection and joins the I/O thread. Idempotent.
  void Stop();

  // Drain mode: new client HELLOs and new OPENs get ERROR draining; sessions run to their end.
  // `on_drained` runs on the I/O thread once no session remains (at once if none).
  void Drain(std::function<void()> on_drained);

  // Scheduler hooks. The frame is queued behind what the connection already has queued.
  void SendUpgrade(const std::string& client_id, const Json& offer, Completion done);
  void SendBuildChunk(const std::string& client_id, std::string bytes, Completion done);  // <= 64 KiB
  // Sends ERROR {code, message} to a connected client and closes it (e.g. "upgrade_stalled").
  void DisconnectClient(const std::string& client_id, std::string code, std::string message);
  // Calls `done` on the I/O thread with every authenticated client online now.
  void ListOnlineClients(std::function<void(std::vector<ClientInfo>)> done);
  // Runs `fn` on the I/O thread.
  void Post(std::function<void()> fn);
  // One re-armable wake-up on the I/O thread: `fn` runs at `when` unless a later RunAt replaces
  // it first (the replaced one never runs) or Stop() comes first. For the upgrade pacing timer.
  void RunAt(std::chrono::steady_clock::time_point when, std::function<void()> fn);

  ServerStats stats() const;

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace upkeep::relay
