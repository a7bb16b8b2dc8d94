// Shared helpers for the upkeep_web tests: a deterministic Random and a parsed Request.
#pragma once

#include <gtest/gtest.h>

#include <cstdint>
#include <mutex>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/net/http.hpp"

namespace upkeep::web::testing {

// Distinct bytes on every call (a counter mixed in), so ids never repeat.
class CountingRandom final : public Random {
 public:
  Bytes Generate(std::size_t n) override {
    std::lock_guard lock(mu_);
    Bytes out(n);
    ++calls_;
    for (std::size_t i = 0; i < n; ++i) {
      out[i] = static_cast<std::uint8_t>((calls_ * 131 + i * 7 + (calls_ >> 8) * 17 + (i == 0 ? calls_ >> 16 : 0)) & 0xff);
    }
    if (n >= 8) {
      for (int b = 0; b < 8; ++b) out[b] = static_cast<std::uint8_t>((calls_ >> (8 * b)) & 0xff);
    }
    return out;
  }

 private:
  std::mutex mu_;
  std::uint64_t calls_ = 0;
};

inline SysTime T0() { return SysTime(std::chrono::seconds(1'900'000'000)); }

// Parses a request head built from a method, a path and extra header lines ("Name: value").
inline net::Request MakeRequest(const std::string& method, const std::string& path,
                                const std::vector<std::string>& headers = {}) {
  std::string raw = method + " " + path + " HTTP/1.1\r\nHost: appliance.test\r\n";
  for (const auto& h : headers) raw += h + "\r\n";
  raw += "\r\n";
  net::Request req;
  auto result = net::ParseRequestHead(raw, net::ParseLimits{}, req);
  EXPECT_EQ(result.kind, net::HeadResult::Kind::kComplete) << result.message;
  return req;
}

}  // namespace upkeep::web::testing
