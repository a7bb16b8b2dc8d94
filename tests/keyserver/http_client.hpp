// A tiny blocking HTTP/1.1 client for the keyserver tests: one request per connection
// (Connection: close), read to EOF, every read bounded by a time-out so a hung server fails the
// test instead of hanging it.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/json.hpp"

namespace upkeep::keyserver::test {

struct HttpReply {
  int status = 0;  // 0 when the exchange failed
  std::string head;
  std::string body;
  Json json;  // the parsed body, or null when it is not JSON
  // The "code" of a JSON error body, or "" when there is none.
  std::string ErrorCode() const;
};

HttpReply Call(std::uint16_t port, std::string_view method, std::string_view path, std::string_view body = "",
               std::optional<std::string> bearer = std::nullopt);

}  // namespace upkeep::keyserver::test
