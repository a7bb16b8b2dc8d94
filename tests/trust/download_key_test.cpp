#include "upkeep/trust/download_key.hpp"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

#include "../../packages/trust/encoding.hpp"

namespace upkeep::trust {
namespace {

using packages::Version;

const SysTime kNow = ParseTimestamp("2030-01-01T12:00:00Z").value();

ApplianceIdentity Identity(std::uint8_t b) { return ApplianceIdentity::FromSeed(Bytes(32, b)).value(); }

DownloadKey SampleKey(const ApplianceIdentity& id) {
  DownloadKey k;
  k.appliance_id = id.appliance_id();
  k.installed = {{"base", Version{2, 0, 0}}, {"agent", Version{1, 2, 3}}, {"database", Version{14, 11, 2024}}};
  k.issued = kNow;
  k.validity = std::chrono::hours(24);
  for (std::size_t i = 0; i < k.nonce.size(); ++i) k.nonce[i] = static_cast<std::uint8_t>(0xa0 + i);
  return k;
}

// The binary form behind a text, for byte-level tampering.
Bytes Binary(const std::string& text) {
  std::string clean;
  for (char c : text) {
    if (c != '-' && c != '\n') clean.push_back(c);
  }
  return internal::Base32Decode(clean.substr(4)).value();
}
std::string Text(const Bytes& bin) { return internal::Base32Upper(bin); }

TEST(DownloadKeyTest, RoundTripAndSignature) {
  auto id = Identity(1);
  DownloadKey k = SampleKey(id);
  auto text = EncodeDownloadKey(k, id);
  ASSERT_TRUE(text.ok()) << text.error().message();
  EXPECT_TRUE(text->starts_with("UPK1-"));
  auto d = DecodeDownloadKey(*text);
  ASSERT_TRUE(d.ok()) << d.error().message();
  EXPECT_EQ(d->key.appliance_id, k.appliance_id);
  EXPECT_EQ(d->key.installed, k.installed);
  EXPECT_EQ(d->key.issued, k.issued);
  EXPECT_EQ(d->key.validity, k.validity);
  EXPECT_EQ(d->key.nonce, k.nonce);
  EXPECT_EQ(d->key.nonce_hex(), "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  EXPECT_EQ(d->key.state_digest(), StateDigest(k.installed));
  EXPECT_EQ(d->signature.size(), 64u);
  EXPECT_TRUE(VerifyDownloadKeySignature(*d, id.public_key()).ok());
}

TEST(DownloadKeyTest, TextFormShapeAndLength) {
  auto id = Identity(2);
  auto text = EncodeDownloadKey(SampleKey(id), id).value();
  // Groups of 6, '-' between them, a line break after every 8 groups; alphabet QR alphanumeric.
  std::size_t line_start = 0;
  while (line_start < text.size()) {
    std::size_t end = text.find('\n', line_start);
    std::string line = text.substr(line_start, end == std::string::npos ? std::string::npos : end - line_start);
    std::size_t groups = static_cast<std::size_t>(std::count(line.begin(), line.end(), '-')) + 1;
    EXPECT_LE(groups, 9u) << line;  // the first line also holds the "UPK1" prefix
    line_start = end == std::string::npos ? text.size() : end + 1;
  }
  for (char c : text) {
    EXPECT_TRUE((c >= 'A' && c <= 'Z') || (c >= '2' && c <= '7') || c == '1' || c == '-' || c == '\n') << c;
  }
  EXPECT_LT(text.size(), 300u) << text;
}

TEST(DownloadKeyTest, TolerantDecoding) {
  auto id = Identity(3);
  const std::string text = EncodeDownloadKey(SampleKey(id), id).value();
  std::string lower = text;
  std::transform(lower.begin(), lower.end(), lower.begin(), [](unsigned char c) { return std::tolower(c); });
  std::string spaced;
  for (char c : text) spaced += (c == '\n') ? std::string("\r\n  ") : std::string(1, c) + (c == '-' ? " " : "");
  std::string no_prefix = text.substr(5);
  std::string bare;
  for (char c : text) {
    if (c != '-' && c != '\n') bare.push_back(c);
  }
  for (const std::string& variant : {lower, spaced, no_prefix, bare, "\t" + text + "\n\n"}) {
    auto d = DecodeDownloadKey(variant);
    ASSERT_TRUE(d.ok()) << variant << ": " << d.error().message();
    EXPECT_TRUE(VerifyDownloadKeySignature(*d, id.public_key()).ok());
  }
}

TEST(DownloadKeyTest, EveryByteFlipFailsDecodeOrSignature) {
  auto id = Identity(4);
  const Bytes bin = Binary(EncodeDownloadKey(SampleKey(id), id).value());
  for (std::size_t i = 0; i < bin.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80, 0xff}) {
      Bytes b = bin;
      b[i] ^= mask;
      auto d = DecodeDownloadKey(Text(b));
      if (!d.ok()) {
        EXPECT_EQ(d.error().code(), Errc::kParse) << i;
        continue;
      }
      auto st = VerifyDownloadKeySignature(*d, id.public_key());
      EXPECT_FALSE(st.ok()) << "flip at byte " << i << " went unnoticed";
      if (!st.ok()) {
        EXPECT_EQ(st.error().code(), Errc::kVerification);
      }
    }
  }
}

TEST(DownloadKeyTest, MalformedForms) {
  auto id = Identity(5);
  const Bytes bin = Binary(EncodeDownloadKey(SampleKey(id), id).value());
  for (std::size_t n : {0ul, 3ul, 10ul, 40ul, bin.size() - 64, bin.size() - 1}) {
    auto d = DecodeDownloadKey(Text(Bytes(bin.begin(), bin.begin() + static_cast<std::ptrdiff_t>(n))));
    ASSERT_FALSE(d.ok()) << n;
    EXPECT_EQ(d.error().code(), Errc::kParse);
    EXPECT_NE(d.error().message().find("download key is damaged"), std::string::npos) << d.error().message();
  }
  Bytes trailing = bin;
  trailing.push_back(0);
  auto d = DecodeDownloadKey(Text(trailing));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("after its signature"), std::string::npos) << d.error().message();

  Bytes bad_magic = bin;
  bad_magic[3] = 0x02;
  d = DecodeDownloadKey(Text(bad_magic));
  ASSERT_FALSE(d.ok());
  EXPECT_NE(d.error().message().find("does not start like"), std::string::npos) << d.error().message();

  d = DecodeDownloadKey("UPK1-HELLO!-WORLD");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), Errc::kParse);
  d = DecodeDownloadKey("UPK1- \n -");
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), Errc::kParse);

  d = DecodeDownloadKey(std::string(kMaxDownloadKeyText + 1, 'A'));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), Errc::kLimit);
}

TEST(DownloadKeyTest, WrongApplianceKey) {
  auto id = Identity(6);
  auto other = Identity(7);
  auto d = DecodeDownloadKey(EncodeDownloadKey(SampleKey(id), id).value()).value();
  auto st = VerifyDownloadKeySignature(d, other.public_key());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kVerification);

  // A forged key: the id of `id`, signed by `other`, checked against `id`'s real key.
  DownloadKey k = SampleKey(id);
  k.appliance_id = other.appliance_id();
  auto forged = DecodeDownloadKey(EncodeDownloadKey(k, other).value()).value();
  forged.key.appliance_id = id.appliance_id();
  st = VerifyDownloadKeySignature(forged, id.public_key());
  ASSERT_FALSE(st.ok());
  EXPECT_EQ(st.error().code(), Errc::kVerification);
  EXPECT_NE(st.error().message().find("does not verify for " + id.appliance_id()), std::string::npos);
}

TEST(DownloadKeyTest, EncodeRefusesBadInput) {
  auto id = Identity(8);
  auto other = Identity(9);
  auto e = EncodeDownloadKey(SampleKey(id), other);
  ASSERT_FALSE(e.ok());
  EXPECT_EQ(e.error().code(), Errc::kInvalidArgument);

  DownloadKey k = SampleKey(id);
  k.validity = std::chrono::seconds(59);
  EXPECT_EQ(EncodeDownloadKey(k, id).error().code(), Errc::kInvalidArgument);
  k.validity = kMaxDownloadKeyValidity + std::chrono::seconds(1);
  EXPECT_EQ(EncodeDownloadKey(k, id).error().code(), Errc::kInvalidArgument);
  k.validity = kMinDownloadKeyValidity;
  EXPECT_TRUE(EncodeDownloadKey(k, id).ok());
  k.validity = kMaxDownloadKeyValidity;
  EXPECT_TRUE(EncodeDownloadKey(k, id).ok());

  for (const std::string& name : {std::string(), std::string(256, 'a'), std::string("bad name"), std::string("\x01")}) {
    DownloadKey n = SampleKey(id);
    n.installed.emplace(name, Version{1, 0, 0});
    auto r = EncodeDownloadKey(n, id);
    ASSERT_FALSE(r.ok()) << name;
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument);
  }
  DownloadKey many = SampleKey(id);
  for (int i = 0; i < 70; ++i) many.installed.emplace("p" + std::to_string(i), Version{1, 0, 0});
  EXPECT_EQ(EncodeDownloadKey(many, id).error().code(), Errc::kInvalidArgument);

  // The largest key there can be still decodes: 64 packages with 255-byte names, huge versions.
  DownloadKey big = SampleKey(id);
  big.installed.clear();
  for (int i = 0; i < 64; ++i) {
    big.installed.emplace(std::string(253, 'x') + std::to_string(10 + i), Version{999999999, 999999999, 999999999});
  }
  auto text = EncodeDownloadKey(big, id);
  ASSERT_TRUE(text.ok()) << text.error().message();
  auto d = DecodeDownloadKey(*text);
  // Its text is over the 4 KiB limit: the limit refuses it, clearly.
  if (text->size() > kMaxDownloadKeyText) {
    ASSERT_FALSE(d.ok());
    EXPECT_EQ(d.error().code(), Errc::kLimit);
  } else {
    ASSERT_TRUE(d.ok());
    EXPECT_EQ(d->key.installed, big.installed);
  }
}

TEST(DownloadKeyTest, TimeChecks) {
  auto id = Identity(10);
  DownloadKey k = SampleKey(id);
  const auto skew = std::chrono::minutes(10);
  auto ok = CheckDownloadKeyTime(k, kNow + std::chrono::minutes(5), skew);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, -300);
  ok = CheckDownloadKeyTime(k, kNow - std::chrono::minutes(10), skew);
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(*ok, 600);

  // The appliance's clock is behind: its "issued" is earlier than the server's now.
  auto behind = CheckDownloadKeyTime(k, kNow + std::chrono::hours(3) + std::chrono::minutes(12), skew);
  ASSERT_FALSE(behind.ok());
  EXPECT_EQ(behind.error().code(), Errc::kPolicy);
  EXPECT_NE(behind.error().message().find("3h 12m behind"), std::string::npos) << behind.error().message();
  EXPECT_NE(behind.error().message().find("NTP"), std::string::npos);
  auto ahead = CheckDownloadKeyTime(k, kNow - std::chrono::minutes(45), skew);
  ASSERT_FALSE(ahead.ok());
  EXPECT_NE(ahead.error().message().find("45m 0s ahead"), std::string::npos) << ahead.error().message();

  auto expired = CheckDownloadKeyTime(k, k.expires(), std::chrono::hours(48));
  ASSERT_FALSE(expired.ok());
  EXPECT_EQ(expired.error().code(), Errc::kPolicy);
  EXPECT_NE(expired.error().message().find("expired at 2030-01-02T12:00:00Z"), std::string::npos)
      << expired.error().message();
  EXPECT_NE(expired.error().message().find("valid 24 h"), std::string::npos);
  EXPECT_TRUE(CheckDownloadKeyTime(k, k.expires() - std::chrono::seconds(1), std::chrono::hours(48)).ok());
}

}  // namespace
}  // namespace upkeep::trust
