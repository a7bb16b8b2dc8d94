#include "test_client.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "upkeep/net/http.hpp"

namespace upkeep::net::test {

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) return v;
  }
  return std::nullopt;
}

RawClient::RawClient(std::uint16_t port, SSL_CTX* tls, bool ipv6, std::chrono::milliseconds timeout) : tls_(tls) {
  fd_ = ::socket(ipv6 ? AF_INET6 : AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd_ < 0) return;
  timeval tv{static_cast<time_t>(timeout.count() / 1000), static_cast<suseconds_t>((timeout.count() % 1000) * 1000)};
  ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  int one = 1;
  ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  int rc;
  if (ipv6) {
    sockaddr_in6 addr{};
    addr.sin6_family = AF_INET6;
    addr.sin6_port = htons(port);
    addr.sin6_addr = in6addr_loopback;
    rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  } else {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    rc = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr);
  }
  if (rc != 0) {
    ::close(fd_);
    fd_ = -1;
    return;
  }
  if (tls_) {
    ssl_ = SSL_new(tls_);
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    if (SSL_connect(ssl_) != 1) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
  }
}

RawClient::~RawClient() { Close(); }

void RawClient::Close() {
  if (ssl_) {
    SSL_free(ssl_);
    ssl_ = nullptr;
  }
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
}

bool RawClient::Send(std::string_view bytes) {
  if (!connected()) return false;
  while (!bytes.empty()) {
    long n;
    if (ssl_) {
      n = SSL_write(ssl_, bytes.data(), static_cast<int>(bytes.size()));
    } else {
      n = ::send(fd_, bytes.data(), bytes.size(), MSG_NOSIGNAL);
      if (n < 0 && errno == EINTR) continue;
    }
    if (n <= 0) return false;
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

long RawClient::Fill() {
  if (!connected()) return -1;
  char tmp[65536];
  long n;
  if (ssl_) {
    // Test contexts set SSL_OP_IGNORE_UNEXPECTED_EOF, so a plain TCP close reads as a clean EOF.
    n = SSL_read(ssl_, tmp, sizeof tmp);
    if (n <= 0) return SSL_get_error(ssl_, static_cast<int>(n)) == SSL_ERROR_ZERO_RETURN ? 0 : -1;
  } else {
    do {
      n = ::recv(fd_, tmp, sizeof tmp, 0);
    } while (n < 0 && errno == EINTR);
    if (n <= 0) return n;
  }
  buf_.append(tmp, static_cast<std::size_t>(n));
  return n;
}

std::optional<HttpResponse> RawClient::Read(bool head_request) {
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > 1 << 20 || Fill() <= 0) return std::nullopt;
  }
  std::string head = buf_.substr(0, end + 2);
  buf_.erase(0, end + 4);
  HttpResponse r;
  if (head.size() < 12 || head.compare(0, 9, "HTTP/1.1 ") != 0) return std::nullopt;
  r.status = std::atoi(head.c_str() + 9);
  std::size_t pos = head.find("\r\n") + 2;
  while (pos < head.size()) {
    std::size_t eol = head.find("\r\n", pos);
    std::string line = head.substr(pos, eol - pos);
    pos = eol + 2;
    std::size_t colon = line.find(':');
    if (colon == std::string::npos) return std::nullopt;
    std::size_t v = colon + 1;
    while (v < line.size() && line[v] == ' ') ++v;
    r.headers.emplace_back(line.substr(0, colon), line.substr(v));
  }
  bool no_body = head_request || r.status < 200 || r.status == 204 || r.status == 304;
  if (!no_body) {
    auto cl = r.Header("Content-Length");
    if (!cl) return std::nullopt;  // this server always sends Content-Length
    std::size_t length = std::stoull(*cl);
    while (buf_.size() < length) {
      if (Fill() <= 0) return std::nullopt;
    }
    r.body = buf_.substr(0, length);
    buf_.erase(0, length);
  }
  return r;
}

std::optional<HttpResponse> RawClient::Request(std::string_view bytes, bool head_request) {
  if (!Send(bytes)) return std::nullopt;
  return Read(head_request);
}

bool RawClient::WaitClosed(std::chrono::milliseconds within) {
  if (!connected()) return true;
  auto until = std::chrono::steady_clock::now() + within;
  while (true) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (!ssl_ || SSL_pending(ssl_) == 0) {
      pollfd p{fd_, POLLIN, 0};
      int rc = ::poll(&p, 1, static_cast<int>(left.count()));
      if (rc == 0) return false;
      if (rc < 0 && errno != EINTR) return true;
    }
    buf_.clear();
    long n = Fill();
    if (n == 0) return true;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) return true;
  }
}

std::string Get(std::string_view path, std::string_view extra) {
  std::string s = "GET ";
  s += path;
  s += " HTTP/1.1\r\nHost: test\r\n";
  s += extra;
  s += "\r\n";
  return s;
}

}  // namespace upkeep::net::test
