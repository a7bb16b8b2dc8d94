// Fuzz target: arbitrary bytes as a signed document, parsed and verified as an assignment (for
// a fixed appliance and state) and as a licence, against fixed keys and a fixed clock; a valid
// assignment's sealed keys are also opened. Seeds in tests/fuzz/corpus/fuzz_signed_document are
// signed with the same deterministic keys, so mutations reach the code behind the signature
// checks. Must never crash, hang or grow without bound; every outcome is a value or an Error.
#include <cstdint>
#include <string_view>

#include "upkeep/common/clock.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace {

using namespace upkeep;
using namespace upkeep::trust;

// Seeds: director 0x11.., licence key 0x22.., appliance 0x33.. (32 bytes each).
packages::PrivateKey KeyFromByte(std::uint8_t b) {
  Json priv = {{"keytype", "ed25519"}, {"scheme", "ed25519"}};
  priv["keyval"]["private"] = ToHex(Bytes(32, b));
  return packages::PrivateKey::FromJson(priv).value();
}

struct Fixture {
  packages::PrivateKey director = KeyFromByte(0x11);
  packages::PrivateKey licence = KeyFromByte(0x22);
  ApplianceIdentity appliance = ApplianceIdentity::FromSeed(Bytes(32, 0x33)).value();
  FakeClock clock{ParseTimestamp("2030-01-01T12:00:00Z").value()};
  AssignmentExpectation expect{
      appliance.appliance_id(),
      StateDigest({{"base", packages::Version{2, 0, 0}}, {"agent", packages::Version{1, 2, 3}}}), std::nullopt};
};

const Fixture& GetFixture() {
  static const Fixture f;
  return f;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size > (2u << 20)) return 0;
  const std::string_view in(reinterpret_cast<const char*>(data), size);
  const Fixture& f = GetFixture();

  if (auto doc = SignedDocument::Parse(in)) {
    (void)doc->VerifySignature(f.director.public_key());
    (void)doc->Serialize();
    if (auto a = Assignment::FromJson(doc->signed_part())) (void)CanonicalJson(a->ToJson());
    if (auto l = Licence::FromJson(doc->signed_part())) (void)CanonicalJson(l->ToJson());
  }
  if (auto a = VerifyAssignment(in, f.director.public_key(), f.clock, f.expect)) {
    for (const auto& step : a->steps) (void)OpenContentKey(step.sealed_content_key, f.appliance);
  }
  (void)VerifyLicence(in, f.licence.public_key(), f.clock, f.appliance.appliance_id());
  return 0;
}
