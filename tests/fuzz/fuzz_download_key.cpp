// Fuzz target: arbitrary bytes as download-key text: decoded, its signature checked against a
// fixed appliance key, its time checked against a fixed clock, and (when it decodes) re-encoded
// if it is that appliance's. Seeds in tests/fuzz/corpus/fuzz_download_key are real keys of the
// appliance with seed 0x33.., so mutations reach the signature and field checks. Must never
// crash, hang or grow without bound.
#include <cstdint>
#include <string_view>

#include "upkeep/trust/download_key.hpp"

namespace {

using namespace upkeep;
using namespace upkeep::trust;

const ApplianceIdentity& Appliance() {
  static const ApplianceIdentity id = ApplianceIdentity::FromSeed(Bytes(32, 0x33)).value();
  return id;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  auto d = DecodeDownloadKey(in);
  if (!d.ok()) return 0;
  (void)VerifyDownloadKeySignature(*d, Appliance().public_key());
  (void)CheckDownloadKeyTime(d->key, ParseTimestamp("2030-01-01T12:00:00Z").value(), std::chrono::hours(1));
  (void)d->key.nonce_hex();
  (void)d->key.state_digest();
  if (d->key.appliance_id == Appliance().appliance_id()) {
    auto again = EncodeDownloadKey(d->key, Appliance());
    if (again.ok() && !DecodeDownloadKey(*again).ok()) __builtin_trap();  // what we write, we read
  }
  return 0;
}
