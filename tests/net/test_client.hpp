// A blocking HTTP/1.1 test client over a raw socket (optionally TLS through OpenSSL), so tests
// can send malformed bytes, split writes, pipeline, and watch exactly when the server closes.
// Every read has a time-out, so a misbehaving server fails a test instead of hanging it.
#pragma once

#include <openssl/ssl.h>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace upkeep::net::test {

struct HttpResponse {
  int status = 0;
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  std::optional<std::string> Header(std::string_view name) const;
};

class RawClient {
 public:
  // Connects to 127.0.0.1:port (or ::1); with `tls`, also runs the TLS handshake.
  explicit RawClient(std::uint16_t port, SSL_CTX* tls = nullptr, bool ipv6 = false,
                     std::chrono::milliseconds timeout = std::chrono::seconds(5));
  ~RawClient();
  RawClient(const RawClient&) = delete;
  RawClient& operator=(const RawClient&) = delete;

  bool connected() const { return fd_ >= 0 && (!tls_ || ssl_ != nullptr); }
  SSL* ssl() const { return ssl_; }
  bool Send(std::string_view bytes);
  // Reads one response; the body by Content-Length unless `head_request` or a 1xx/204/304.
  std::optional<HttpResponse> Read(bool head_request = false);
  // Send + Read.
  std::optional<HttpResponse> Request(std::string_view bytes, bool head_request = false);
  // True if the server closes (EOF or reset) within `within`, discarding any bytes it sends.
  bool WaitClosed(std::chrono::milliseconds within);
  void Close();

 private:
  // Reads more bytes into buf_; 0 on EOF, -1 on error or time-out.
  long Fill();

  int fd_ = -1;
  SSL_CTX* tls_ = nullptr;
  SSL* ssl_ = nullptr;
  std::string buf_;
};

// "GET path HTTP/1.1" with a Host header and any extra header lines ("Name: value\r\n").
std::string Get(std::string_view path, std::string_view extra = "");

}  // namespace upkeep::net::test
