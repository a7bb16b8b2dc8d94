// ParseLog (the agent store's record-log parser) on arbitrary bytes: never crashes, and what it
// accepts re-encodes to exactly the valid prefix it reported (framing is unambiguous).
#include <cstdint>
#include <cstdlib>
#include <string>
#include <string_view>

#include "upkeep/agent/store.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view bytes(reinterpret_cast<const char*>(data), size);
  auto log = upkeep::agent::ParseLog(bytes, "fuzz");
  if (!log) return 0;
  if (log->valid_bytes + log->torn_bytes != size) std::abort();
  std::string again = upkeep::agent::EncodeLogHeader(log->base_seq);
  for (const auto& r : log->records) again += upkeep::agent::EncodeLogRecord(r.seq, r.payload);
  if (again != bytes.substr(0, log->valid_bytes)) std::abort();
  return 0;
}
