// Hex and base64 (common/bytes.hpp): RFC 4648 vectors, strict decoding, bounds.
#include "upkeep/common/bytes.hpp"

#include <gtest/gtest.h>

namespace upkeep {
namespace {

std::string Str(const Bytes& b) { return std::string(b.begin(), b.end()); }

TEST(Base64, Rfc4648Vectors) {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (const auto& [plain, encoded] : vectors) {
    EXPECT_EQ(Base64Encode(std::string_view(plain)), encoded);
    auto back = Base64Decode(encoded, 100);
    ASSERT_TRUE(back.ok()) << encoded;
    EXPECT_EQ(Str(*back), plain);
  }
  const std::string binary("\x00\xff\xfe\x80", 4);
  EXPECT_EQ(Str(Base64Decode(Base64Encode(binary), 4).value()), binary);
}

TEST(Base64, DecodingIsStrict) {
  for (const char* bad : {"Zg", "Zg=", "Zm9v\n", " Zm9v", "Zm9v!", "Zm-v", "Zm9vYg==Zg=="}) {
    auto r = Base64Decode(bad, 100);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_EQ(r.error().code(), Errc::kParse) << bad;
    }
  }
}

TEST(Base64, BoundsAreCheckedBeforeDecoding) {
  EXPECT_EQ(Base64Decode("Zm9vYmFy", 5).error().code(), Errc::kLimit);
  EXPECT_EQ(Base64Decode(std::string(4000, 'A'), 30).error().code(), Errc::kLimit);
  EXPECT_TRUE(Base64Decode("Zm9vYmFy", 6).ok());
}

TEST(Hex, RoundTripAndErrors) {
  EXPECT_EQ(ToHex(std::string_view("\x01\xab", 2)), "01ab");
  EXPECT_EQ(Str(FromHex("01AB").value()), std::string("\x01\xab", 2));
  EXPECT_FALSE(FromHex("abc").ok());
  EXPECT_FALSE(FromHex("zz").ok());
}

}  // namespace
}  // namespace upkeep
