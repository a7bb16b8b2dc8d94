// upkeep::net::Server: the HTTP/1.1 (plain TCP and TLS) server every Upkeep daemon embeds.
//
// Contract: register routes, Start(), serve until Stop() (or a SIGTERM/SIGINT through
// StopOnSignals). Each connection lives on one of N I/O threads (standalone ASIO, one io_context
// per thread). Handlers run on that I/O thread unless their route asks for the worker pool, so a
// handler on the I/O thread must not block (no database, no disk-heavy work): it stalls every
// connection of that thread. Blocking work goes on the worker pool (RouteOptions::use_worker_pool)
// or into an async handler that completes its Responder later from any thread.
//
// Hardening is built in and on by default: head size (431), body size per route (413), syntax
// (400), methods (501), header/body/idle/send time-outs (close), a connection cap (503 +
// Retry-After, then close) and an in-flight handler cap (503 + Retry-After). See docs/http.md.
//
// Thread safety: route registration and Start() are for one thread before serving. Stop(),
// RequestStop(), Wait(), ports() and metrics() are safe from any thread (Stop() and Wait() must
// not be called from a handler: they wait for the I/O threads). The Server must outlive every
// Responder it handed out; Stop() waits up to its grace period for them.
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

#include "upkeep/common/error.hpp"
#include "upkeep/net/http.hpp"
#include "upkeep/net/metrics.hpp"

namespace upkeep::net {

struct Endpoint {
  std::string address = "127.0.0.1";  // an IPv4 or IPv6 literal ("::1", "0.0.0.0")
  std::uint16_t port = 0;             // 0: an ephemeral port, see Server::ports()
  bool tls = false;                   // needs ServerOptions::tls
};

// Parses "ADDRESS:PORT" as given to a daemon's --listen ("127.0.0.1:8443", "[::1]:0"; port 0 picks
// an ephemeral port). Errors name the flag and the text.
Expected<Endpoint> ParseEndpoint(const std::string& text);

struct TlsOptions {
  std::filesystem::path certificate_chain;  // PEM: leaf first, then intermediates
  std::filesystem::path private_key;        // PEM, unencrypted
};

// What the access log hook sees for each answered request. Never bodies, never header values
// (so no Authorization or cookies), the path without its query string.
struct AccessLogEntry {
  std::string_view method;
  std::string_view path;
  std::string_view route;   // the matching route pattern, or "unmatched"
  std::string_view remote;  // "address:port"
  int status = 0;
  std::uint64_t bytes_sent = 0;  // head and body bytes written
  std::chrono::nanoseconds duration{0};  // first byte of the request to last byte of the response
};

struct ServerOptions {
  std::vector<Endpoint> endpoints{Endpoint{}};
  std::optional<TlsOptions> tls;

  unsigned io_threads = 0;      // 0: std::thread::hardware_concurrency()
  unsigned worker_threads = 4;  // for routes with use_worker_pool

  ParseLimits limits;                            // 16 KiB head, 100 headers
  std::size_t default_max_body = 1024 * 1024;    // RouteOptions::max_body_bytes default
  std::size_t max_connections = 10000;           // beyond: 503 + Retry-After, close
  std::size_t max_in_flight = 1024;              // handlers running or pending; beyond: 503
  int retry_after_seconds = 1;

  std::chrono::milliseconds header_timeout{10000};  // TLS handshake / first request / one request head
  std::chrono::milliseconds body_timeout{30000};    // one request body
  std::chrono::milliseconds idle_timeout{60000};    // keep-alive wait between requests
  std::chrono::milliseconds send_timeout{30000};    // a response write making no progress
  std::chrono::milliseconds linger_timeout{2000};   // draining input after a final response

  bool healthz = true;   // GET /healthz -> "OK"
  bool metrics = true;   // GET /metrics -> Prometheus text

  // Called on the I/O thread after each response; must be quick (hand off to a logger).
  std::function<void(const AccessLogEntry&)> access_log;
  // Shared registry for the daemon's own metrics; the server creates one when null.
  std::shared_ptr<MetricsRegistry> registry;
};

struct RouteOptions {
  std::optional<std::size_t> max_body_bytes;  // default ServerOptions::default_max_body
  bool use_worker_pool = false;               // run the (sync) handler on the worker pool
  // Stream the body into a new file in this directory instead of memory (see Request::body_file()).
  // The route's max_body_bytes still bounds it (413 before any byte is read when Content-Length
  // is larger). Content-Length is required (411 Length Required otherwise).
  //
  // The body is read through one fixed 256 KiB buffer per connection, hashed (SHA-256) and written
  // to the file on the connection's I/O thread, one chunk per read (page-cache writes, short);
  // the final fsync runs on the worker pool so a large flush stalls no other connection. The
  // body_timeout is rearmed on every chunk (a stall limit, not a total), since a multi-GiB upload
  // can legitimately take longer. A disconnect, a stall, a write error (507 for ENOSPC/EDQUOT,
  // 500 otherwise) or a server stop removes the partial file and runs no handler.
  std::optional<std::filesystem::path> body_to_file;
  // Runs on the I/O thread once the head is parsed and the route matched (after the 411/413
  // checks), before any body byte is read (and before "100 Continue" is sent for Expect:
  // 100-continue). Returning a Response answers with it at once (e.g. 401/403/409) and the body
  // is not read (then the connection is closed unless the body is empty). Must be quick and
  // non-blocking (in-memory checks only). A precheck that throws answers 500.
  std::function<std::optional<Response>(const Request&)> precheck;
};

namespace detail {
class ResponseSink {
 public:
  virtual ~ResponseSink() = default;
  virtual void Deliver(Response response) = 0;
};
}  // namespace detail

// Completes one request from any thread, once. The Request passed with it stays valid until
// Send() is called or the Responder is destroyed. Destroying an unsent Responder answers 500, so
// a forgotten request never hangs a client.
class Responder {
 public:
  explicit Responder(std::shared_ptr<detail::ResponseSink> sink) : sink_(std::move(sink)) {}
  Responder(Responder&&) noexcept = default;
  Responder& operator=(Responder&& other) noexcept;
  Responder(const Responder&) = delete;
  Responder& operator=(const Responder&) = delete;
  ~Responder();

  void Send(Response response);
  bool sent() const { return !sink_; }

 private:
  std::shared_ptr<detail::ResponseSink> sink_;
};

using Handler = std::function<Response(const Request&)>;
using AsyncHandler = std::function<void(const Request&, Responder)>;

class Server {
 public:
  explicit Server(ServerOptions options);
  ~Server();  // Stop() with a zero grace period if still running
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // Patterns: an exact path ("/api/v1/check-in"); {name} segments ("/api/v1/appliances/{id}",
  // read with Request::PathParam); or a prefix ending in "/*" ("/repo/targets/*", rest in
  // Request::path_suffix). Exact beats pattern beats the longest prefix. A GET route also answers
  // HEAD. Errors: a malformed pattern, or the same method and pattern twice.
  Status Handle(Method method, std::string pattern, Handler handler, RouteOptions options = {});
  Status HandleAsync(Method method, std::string pattern, AsyncHandler handler, RouteOptions options = {});

  // Every registered (method, pattern), built-ins included, in registration order: lets a
  // daemon's tests check its routes against its API document.
  std::vector<std::pair<Method, std::string>> Routes() const;

  // Binds every endpoint, loads the TLS certificate, starts the threads.
  Status Start();
  // The bound port of each endpoint, in ServerOptions::endpoints order (after Start()).
  std::vector<std::uint16_t> ports() const;

  // Stops accepting, closes idle keep-alive connections, lets requests in progress finish for up
  // to `grace`, then closes everything and joins the threads. Safe to call more than once.
  void Stop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Starts the same shutdown without waiting (usable from a handler or a signal callback).
  void RequestStop(std::chrono::milliseconds grace = std::chrono::seconds(10));
  // Blocks until a stop has completed.
  void Wait();
  // SIGTERM and SIGINT call RequestStop(grace). Call after Start().
  void StopOnSignals(std::chrono::milliseconds grace = std::chrono::seconds(10));

  MetricsRegistry& metrics();

  struct Impl;  // implementation detail, defined in server.cpp

 private:
  std::shared_ptr<Impl> impl_;
};

}  // namespace upkeep::net
