// A small blocking HTTP/1.1 client for fleet-sim: plain TCP, one kept-alive connection per client,
// every wait bounded by a time-out, every answer bounded in size. It is the load generator's
// client, so it does nothing clever: no TLS (fleet-sim drives loopback benchmarks and tests), no
// redirects, no pipelining, no proxies.
//
// Ownership and threads: an HttpClient owns its socket and its read buffer; use one per thread
// (the load generator gives each connection thread its own). Url and HttpReply are plain values.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep::fleet_sim {

using HeaderList = std::vector<std::pair<std::string, std::string>>;

// http://HOST[:PORT][/PREFIX]. https is refused with a clear message (not supported yet).
struct Url {
  std::string host;
  std::uint16_t port = 80;
  std::string prefix;  // without a trailing '/', e.g. "" or "/updater"

  static Expected<Url> Parse(std::string_view text);
  std::string HostHeader() const;  // "host:port"
};

struct HttpReply {
  int status = 0;
  HeaderList headers;
  std::string body;
  // First header of that name (case-insensitive).
  std::optional<std::string> Header(std::string_view name) const;
};

struct HttpClientOptions {
  std::chrono::milliseconds timeout{10'000};  // per connect, per send and per read of one request
  std::size_t max_header_bytes = 64 * 1024;
  std::size_t max_body_bytes = 16u << 20;
};

class HttpClient {
 public:
  explicit HttpClient(Url url, HttpClientOptions options = {});
  ~HttpClient();
  HttpClient(const HttpClient&) = delete;
  HttpClient& operator=(const HttpClient&) = delete;

  // Builds and sends "METHOD PREFIX+path" with Host, Content-Length and `headers`, then reads the
  // answer. Keeps the connection open unless the server closes it.
  Expected<HttpReply> Send(std::string_view method, std::string_view path, const HeaderList& headers,
                           std::string_view body);
  // Sends complete request bytes as they are (the load generator builds them itself).
  // `head` when the request is a HEAD (no body follows the answer's headers).
  Expected<HttpReply> SendRaw(std::string_view request, bool head = false);

  // The request bytes Send would write (Host, Content-Length, keep-alive).
  std::string BuildRequest(std::string_view method, std::string_view path, const HeaderList& headers,
                           std::string_view body) const;

  const Url& url() const { return url_; }
  void Close();
  // Connections opened so far (a reconnect after the server closed one counts).
  std::uint64_t connects() const { return connects_; }

 private:
  Status Connect();
  Status WriteAll(std::string_view data);
  // Reads at least one more byte into buf_; kIo on EOF, time-out or error.
  Status ReadMore(std::chrono::steady_clock::time_point deadline);
  Expected<HttpReply> ReadReply(bool head);

  Url url_;
  HttpClientOptions options_;
  int fd_ = -1;
  std::string buf_;  // bytes read and not consumed yet
  std::uint64_t connects_ = 0;
};

}  // namespace upkeep::fleet_sim
