// Arbitrary bytes through the HTTP request parser and the helpers that see request text:
// nothing may crash, hang or read out of bounds; a complete head must yield consistent views.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "upkeep/net/http.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  upkeep::net::ParseLimits limits;
  limits.max_head_bytes = 4096;
  limits.max_headers = 32;
  upkeep::net::Request req;
  // Once in one piece, once as if it arrived in two reads.
  auto result = upkeep::net::ParseRequestHead(input, limits, req);
  (void)upkeep::net::ParseRequestHead(input, limits, req, size / 2);
  if (result.kind == upkeep::net::HeadResult::Kind::kComplete) {
    if (result.head_bytes > size) __builtin_trap();
    (void)req.Header("Host");
    (void)req.QueryParam("id");
    for (std::size_t i = 0; i < req.header_count(); ++i) (void)req.header(i);
    if (auto range = req.Header("Range")) (void)upkeep::net::ParseByteRange(*range, 1000);
  }
  (void)upkeep::net::DecodePath(input);
  (void)upkeep::net::ParseQuery(input);
  (void)upkeep::net::ParseByteRange(input, size);
  return 0;
}
