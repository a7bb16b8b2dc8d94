#include "upkeep/common/qr.hpp"

#include <gtest/gtest.h>

#include <algorithm>

#include "upkeep/trust/download_key.hpp"

namespace upkeep {
namespace {

std::string SampleKeyText() {
  auto id = trust::ApplianceIdentity::FromSeed(Bytes(32, 0x42)).value();
  trust::DownloadKey k;
  k.appliance_id = id.appliance_id();
  k.installed = {{"base", {2, 0, 0}}, {"agent", {1, 2, 3}}, {"database", {14, 11, 2024}}};
  k.issued = ParseTimestamp("2030-01-01T00:00:00Z").value();
  return trust::EncodeDownloadKey(k, id).value();
}

// A finder pattern: 7x7 dark ring, light ring inside, 3x3 dark core.
bool FinderAt(const QrCode& qr, int x0, int y0) {
  for (int y = 0; y < 7; ++y) {
    for (int x = 0; x < 7; ++x) {
      const bool ring = x == 0 || y == 0 || x == 6 || y == 6;
      const bool core = x >= 2 && x <= 4 && y >= 2 && y <= 4;
      if (qr.At(x0 + x, y0 + y) != (ring || core)) return false;
    }
  }
  return true;
}

TEST(QrTest, EncodesDownloadKeyText) {
  const std::string text = SampleKeyText();
  auto qr = EncodeQr(text);
  ASSERT_TRUE(qr.ok()) << qr.error().message();
  // A QR code of version v has 17 + 4v modules per side.
  EXPECT_EQ((qr->size - 17) % 4, 0);
  EXPECT_GE(qr->size, 21);
  EXPECT_LE(qr->size, 81) << "a download key should fit a QR code a phone reads from a screen";
  ASSERT_EQ(qr->dark.size(), static_cast<std::size_t>(qr->size * qr->size));
  EXPECT_TRUE(FinderAt(*qr, 0, 0));
  EXPECT_TRUE(FinderAt(*qr, qr->size - 7, 0));
  EXPECT_TRUE(FinderAt(*qr, 0, qr->size - 7));
  EXPECT_FALSE(FinderAt(*qr, qr->size - 7, qr->size - 7));

  // Without line breaks the text is all QR-alphanumeric: the code is no larger.
  std::string flat = text;
  std::replace(flat.begin(), flat.end(), '\n', '-');
  auto flat_qr = EncodeQr(flat);
  ASSERT_TRUE(flat_qr.ok());
  EXPECT_LE(flat_qr->size, qr->size);
  // Different texts give different codes.
  EXPECT_NE(EncodeQr("UPK1-AAAAAA").value().dark, EncodeQr("UPK1-AAAAAB").value().dark);
}

TEST(QrTest, TerminalOutput) {
  auto qr = EncodeQr("UPK1-HELLO").value();
  const std::string t = QrToTerminal(qr);
  const int total = qr.size + 8;
  const auto lines = std::count(t.begin(), t.end(), '\n');
  EXPECT_EQ(lines, (total + 1) / 2);
  // The quiet zone (light) prints as full blocks: the first line is all of them.
  const std::string first = t.substr(0, t.find('\n'));
  std::string blocks;
  for (int i = 0; i < total; ++i) blocks += "\u2588";
  EXPECT_EQ(first, blocks);
  // Dark modules are spaces; the top-left finder's top row is on line 2 (quiet rows 0..3).
  EXPECT_NE(t.find(' '), std::string::npos);
}

TEST(QrTest, SvgOutput) {
  auto qr = EncodeQr("UPK1-HELLO").value();
  const std::string svg = QrToSvg(qr, 5);
  const int total = qr.size + 8;
  EXPECT_EQ(svg.rfind("<?xml", 0), 0u);
  EXPECT_NE(svg.find("<svg xmlns=\"http://www.w3.org/2000/svg\""), std::string::npos);
  EXPECT_NE(svg.find("width=\"" + std::to_string(total * 5) + "\""), std::string::npos);
  EXPECT_NE(svg.find("viewBox=\"0 0 " + std::to_string(total) + " " + std::to_string(total) + "\""),
            std::string::npos);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), 'z'),
            std::count(qr.dark.begin(), qr.dark.end(), true));  // one square per dark module
  EXPECT_NE(svg.find("M4 4h1v1h-1z"), std::string::npos);  // the finder's corner, after the quiet zone
  EXPECT_NE(svg.find("</svg>"), std::string::npos);
}

TEST(QrTest, RefusesBadInput) {
  auto empty = EncodeQr("");
  ASSERT_FALSE(empty.ok());
  EXPECT_EQ(empty.error().code(), Errc::kInvalidArgument);
  auto nul = EncodeQr(std::string("AB\0CD", 5));
  ASSERT_FALSE(nul.ok());
  EXPECT_EQ(nul.error().code(), Errc::kInvalidArgument);
  auto big = EncodeQr(std::string(5000, 'x'));
  ASSERT_FALSE(big.ok());
  EXPECT_EQ(big.error().code(), Errc::kLimit);
}

}  // namespace
}  // namespace upkeep
