// Arbitrary bytes through the relay frame decoder: nothing may crash or over-read, the result must
// not depend on how the bytes were split, and re-encoding the decoded frames must give back the
// bytes consumed.
#include <cstddef>
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "upkeep/relay/frame.hpp"

namespace {

using upkeep::relay::FrameDecoder;
using upkeep::relay::FramePiece;

struct Outcome {
  std::vector<std::pair<int, std::string>> frames;
  std::string partial;
  bool failed = false;
  std::string code;
};

Outcome Decode(std::string_view input, std::size_t step) {
  Outcome out;
  FrameDecoder d;
  auto sink = [&](const FramePiece& p) {
    out.partial.append(p.payload);
    if (p.last) {
      out.frames.emplace_back(static_cast<int>(p.type), std::move(out.partial));
      out.partial.clear();
    }
    return true;
  };
  for (std::size_t pos = 0; pos < input.size(); pos += step) {
    auto r = d.Feed(input.substr(pos, step), sink);
    if (r.failed) {
      out.failed = true;
      out.code = r.error.code;
      break;
    }
  }
  return out;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view input(reinterpret_cast<const char*>(data), size);
  Outcome whole = Decode(input, size == 0 ? 1 : size);
  for (std::size_t step : {std::size_t{1}, std::size_t{3}, std::size_t{4096}}) {
    // Tiny steps over big inputs cost runs, not coverage: the boundaries are the same kinds.
    if ((step == 1 && size > 2048) || (step == 3 && size > 16384)) continue;
    Outcome split = Decode(input, step);
    if (split.failed != whole.failed || split.code != whole.code || split.frames != whole.frames) __builtin_trap();
  }
  std::string encoded;
  for (const auto& [type, payload] : whole.frames) {
    if (!upkeep::relay::AppendFrame(encoded, static_cast<upkeep::relay::FrameType>(type), payload).ok()) __builtin_trap();
  }
  if (input.substr(0, encoded.size()) != encoded) __builtin_trap();
  return 0;
}
