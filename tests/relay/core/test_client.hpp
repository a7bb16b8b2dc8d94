// A blocking TLS relay client for tests: OpenSSL on a plain socket, frames through FrameDecoder
// (DATA pieces reassembled into whole frames). One thread per object at a time.
#pragma once

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <chrono>
#include <deque>
#include <optional>
#include <string>

#include "upkeep/common/json.hpp"
#include "upkeep/relay/frame.hpp"

namespace upkeep::relay::testing {

struct Frame {
  FrameType type = FrameType::kPing;
  std::string payload;
  Json json() const {
    auto j = ParseJson(payload);
    return j.ok() ? *j : Json();
  }
};

class ClientTlsContext {
 public:
  explicit ClientTlsContext(const std::string& ca_file) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx_, SSL_MODE_RELEASE_BUFFERS);
    SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  }
  ~ClientTlsContext() { SSL_CTX_free(ctx_); }
  SSL_CTX* get() const { return ctx_; }

 private:
  SSL_CTX* ctx_;
};

class TestClient {
 public:
  TestClient() = default;
  TestClient(const TestClient&) = delete;
  TestClient& operator=(const TestClient&) = delete;
  ~TestClient() { Disconnect(); }

  // TCP only (no TLS); for floods.
  bool ConnectTcp(std::uint16_t port, int rcvbuf = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0) return false;
    if (rcvbuf > 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return false;
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    timeval tv{5, 0};
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    return true;
  }

  bool Connect(const ClientTlsContext& ctx, std::uint16_t port, int rcvbuf = 0) {
    if (!ConnectTcp(port, rcvbuf)) return false;
    ssl_ = SSL_new(ctx.get());
    SSL_set_fd(ssl_, fd_);
    SSL_set_tlsext_host_name(ssl_, "localhost");
    SSL_set1_host(ssl_, "localhost");
    if (SSL_connect(ssl_) != 1) {
      ERR_clear_error();
      return false;
    }
    return true;
  }

  void Disconnect() {
    if (ssl_ != nullptr) {
      SSL_free(ssl_);
      ssl_ = nullptr;
    }
    if (fd_ >= 0) {
      ::close(fd_);
      fd_ = -1;
    }
  }

  bool SendRaw(std::string_view bytes) {
    while (!bytes.empty()) {
      int n = SSL_write(ssl_, bytes.data(), static_cast<int>(std::min<std::size_t>(bytes.size(), 1 << 20)));
      if (n <= 0) {
        ERR_clear_error();
        return false;
      }
      bytes.remove_prefix(static_cast<std::size_t>(n));
    }
    return true;
  }

  bool Send(FrameType type, std::string_view payload) {
    auto f = EncodeFrame(type, payload);
    return f.ok() && SendRaw(*f);
  }
  bool SendJson(FrameType type, const Json& j) { return Send(type, j.dump()); }

  bool HelloClient(const std::string& id, const std::string& secret, const std::string& version = "1.0.0") {
    return SendJson(FrameType::kHello, Json{{"role", "client"}, {"id", id}, {"secret", secret}, {"version", version},
                                            {"platform", "linux-x86_64"}, {"mode", "active"}});
  }
  bool HelloConsole(const std::string& token) {
    return SendJson(FrameType::kHello, Json{{"role", "console"}, {"token", token}});
  }

  // The next whole frame, or nullopt on close / time-out / decode error.
  std::optional<Frame> Read(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (frames_.empty()) {
      if (closed_) return std::nullopt;
      if (SSL_pending(ssl_) == 0) {
        auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
        if (left.count() <= 0) return std::nullopt;
        pollfd p{fd_, POLLIN, 0};
        if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) return std::nullopt;
      }
      char buf[16384];
      int n = SSL_read(ssl_, buf, sizeof(buf));
      if (n <= 0) {
        int err = SSL_get_error(ssl_, n);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ) continue;
        closed_ = true;
        return std::nullopt;
      }
      auto r = decoder_.Feed(std::string_view(buf, static_cast<std::size_t>(n)), [&](const FramePiece& p) {
        current_.type = p.type;
        current_.payload.append(p.payload);
        if (p.last) {
          frames_.push_back(std::move(current_));
          current_ = Frame();
        }
        return true;
      });
      if (r.failed) {
        closed_ = true;
        return std::nullopt;
      }
    }
    Frame f = std::move(frames_.front());
    frames_.pop_front();
    return f;
  }

  // The next frame that is not `skip` (e.g. PONG).
  std::optional<Frame> ReadType(FrameType want, std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    auto f = Read(timeout);
    if (f && f->type != want) return std::nullopt;
    return f;
  }

  // True when the relay closed the connection (EOF) within the time-out.
  bool WaitClosed(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    auto until = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < until) {
      auto f = Read(std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now()));
      if (!f && closed_) return true;
      if (!f) return false;
    }
    return false;
  }

  // Reads raw DATA bytes (skipping other frames) until `n` bytes arrived.
  std::optional<Frame> ReadData(std::chrono::milliseconds timeout = std::chrono::milliseconds(5000)) {
    for (;;) {
      auto f = Read(timeout);
      if (!f) return f;
      if (f->type == FrameType::kData) return f;
    }
  }

  int fd() const { return fd_; }
  bool closed() const { return closed_; }

 private:
  int fd_ = -1;
  SSL* ssl_ = nullptr;
  FrameDecoder decoder_;
  Frame current_;
  std::deque<Frame> frames_;
  bool closed_ = false;
};

}  // namespace upkeep::relay::testing
