// The .upk reader on an arbitrary byte buffer: open, check signatures against a fixed key (the
// seed corpus is signed with it), then read every payload entry. Must never crash, hang or
// allocate without bound, whatever the bytes.
#include <cstdint>
#include <cstdlib>

#include "upkeep/packages/package.hpp"

namespace {

// The public half of the fixed corpus key: ed25519 from the seed 0x01 repeated 32 times
// (tests/packages/package_test.cpp, FuzzCorpus, signs the seed packages with it).
const upkeep::packages::PublicKey& FuzzKey() {
  static const auto key = [] {
    std::string seed;
    for (int i = 0; i < 32; ++i) seed += "01";
    upkeep::Json json = {{"keytype", "ed25519"}, {"scheme", "ed25519"}, {"keyval", {{"private", seed}}}};
    return upkeep::packages::PrivateKey::FromJson(json).value().public_key();
  }();
  return key;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  auto reader = upkeep::packages::PackageReader::OpenMemory(std::span<const std::uint8_t>(data, size));
  if (!reader) return 0;
  if (!reader->VerifySignatures({FuzzKey()})) reader->SkipSignatureCheck();
  std::uint64_t seen = 0;
  for (;;) {
    auto entry = reader->NextEntry();
    if (!entry || !*entry) break;
    for (;;) {
      auto chunk = reader->ReadData();
      if (!chunk || chunk->empty()) break;
      seen += chunk->size();
    }
  }
  // Data is only ever handed out from the buffer: more than its size would be a reader bug.
  if (seen > size) std::abort();
  return 0;
}
