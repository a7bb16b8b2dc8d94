// "HOST:PORT" as the relay's command lines and the agent's configuration write it: an IPv4 or
// IPv6 literal (IPv6 in brackets: "[::1]:7443") and a decimal port. `allow_zero` admits port 0
// (listen on an ephemeral port). Errors (kInvalidArgument) quote the text.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include "upkeep/common/error.hpp"

namespace upkeep::relay {

inline Expected<std::pair<std::string, std::uint16_t>> ParseHostPort(std::string_view text, bool allow_zero) {
  const auto bad = [&] {
    return Error(Errc::kInvalidArgument, "'" + std::string(text.substr(0, 100)) + "' is not HOST:PORT (IPv6 as [ADDR]:PORT)");
  };
  const auto colon = text.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == text.size()) return bad();
  std::string host(text.substr(0, colon));
  if (host.front() == '[') {
    if (host.size() < 3 || host.back() != ']') return bad();
    host = host.substr(1, host.size() - 2);
  }
  const std::string_view port_text = text.substr(colon + 1);
  if (port_text.size() > 5) return bad();
  std::uint32_t port = 0;
  for (char ch : port_text) {
    if (ch < '0' || ch > '9') return bad();
    port = port * 10 + static_cast<std::uint32_t>(ch - '0');
  }
  if (port > 65535 || (port == 0 && !allow_zero)) return bad();
  return std::make_pair(std::move(host), static_cast<std::uint16_t>(port));
}

}  // namespace upkeep::relay
