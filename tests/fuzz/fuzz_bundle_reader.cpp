// Fuzz target: arbitrary bytes as a .upkb bundle, read entry by entry (alternating Read and
// Skip) to the end. Seeds in tests/fuzz/corpus/fuzz_bundle_reader are small valid bundles (and
// damaged ones), so mutations reach the header rules and the entry checks. Must never crash,
// hang or grow without bound: the reader's memory is bounded by the header and one chunk.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string_view>

#include "upkeep/bundle/bundle.hpp"

namespace {

class Source final : public upkeep::packages::ByteSource {
 public:
  Source(const std::uint8_t* data, std::size_t size) : data_(data), size_(size) {}
  upkeep::Expected<std::size_t> Read(std::span<std::uint8_t> buf) override {
    const std::size_t n = std::min(buf.size(), size_ - pos_);
    if (n > 0) std::memcpy(buf.data(), data_ + pos_, n);
    pos_ += n;
    return n;
  }
  std::uint64_t position() const override { return pos_; }

 private:
  const std::uint8_t* data_;
  std::size_t size_;
  std::size_t pos_ = 0;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  Source src(data, size);
  auto reader = upkeep::bundle::Reader::Open(src);
  if (!reader.ok()) return 0;
  (void)(*reader)->header().TotalBytes();
  for (int i = 0;; ++i) {
    auto next = (*reader)->Next();
    if (!next.ok() || !*next) break;
    const auto st = (i % 2 == 0) ? (*reader)->Skip()
                                 : (*reader)->Read([](std::string_view) { return upkeep::OkStatus(); });
    if (!st.ok()) break;
  }
  return 0;
}
