// Test helpers: a raw loopback TCP server whose answers are scripted byte for byte (so it can
// drop a connection mid-body, stall, or send garbage), fakes for Sleeper and Random.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/agent/downloader.hpp"
#include "upkeep/common/clock.hpp"

namespace upkeep::agent::test {

struct RawRequest {
  std::string head;  // request line + headers
  std::string body;
  std::string Header(const std::string& name) const;  // "" when absent
};

struct RawAnswer {
  std::string bytes;                        // written as is, then the connection is closed
  std::chrono::milliseconds stall_after{0};  // > 0: keep the connection open this long after writing
};

class RawServer {
 public:
  explicit RawServer(std::function<RawAnswer(const RawRequest&)> handler);
  ~RawServer();
  std::uint16_t port() const { return port_; }
  std::string url(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(port_) + path; }
  std::vector<RawRequest> requests() const;

 private:
  void Loop();
  std::function<RawAnswer(const RawRequest&)> handler_;
  int listen_fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  mutable std::mutex mu_;
  std::vector<RawRequest> requests_;
};

// Time only moves when Sleep is called; records the total.
class FakeSleeper final : public Sleeper {
 public:
  std::chrono::steady_clock::time_point Now() override { return now_; }
  void Sleep(std::chrono::nanoseconds d) override {
    now_ += d;
    total += d;
  }
  std::chrono::nanoseconds total{0};

 private:
  std::chrono::steady_clock::time_point now_{};
};

// Returns bytes that decode to a chosen fraction in [0, 1) (see PollSchedule's jitter).
class FixedRandom final : public Random {
 public:
  std::uint8_t fill = 0;
  Bytes Generate(std::size_t n) override { return Bytes(n, fill); }
};

}  // namespace upkeep::agent::test
