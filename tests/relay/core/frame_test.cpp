#include "upkeep/relay/frame.hpp"

#include <gtest/gtest.h>

#include <string>
#include <utility>
#include <vector>

namespace upkeep::relay {
namespace {

struct Collected {
  std::vector<std::pair<FrameType, std::string>> frames;
  std::string partial;
  std::size_t pieces = 0;
};

FrameDecoder::Sink Collect(Collected& c) {
  return [&c](const FramePiece& p) {
    ++c.pieces;
    c.partial.append(p.payload);
    if (p.last) {
      c.frames.emplace_back(p.type, std::move(c.partial));
      c.partial.clear();
    }
    return true;
  };
}

std::string Enc(FrameType t, std::string_view payload) {
  auto e = EncodeFrame(t, payload);
  EXPECT_TRUE(e.ok());
  return e.ok() ? *e : std::string();
}

std::string Pattern(std::size_t n) {
  std::string s(n, '\0');
  for (std::size_t i = 0; i < n; ++i) s[i] = static_cast<char>((i * 131 + 7) & 0xff);
  return s;
}

TEST(RelayFrame, EncodesHeaderBigEndian) {
  std::string f = Enc(FrameType::kData, std::string(0x010203 & 0xffff, 'x'));
  ASSERT_EQ(f.size(), 4u + 0x0203);
  EXPECT_EQ(static_cast<unsigned char>(f[0]), 0x12);
  EXPECT_EQ(static_cast<unsigned char>(f[1]), 0x00);
  EXPECT_EQ(static_cast<unsigned char>(f[2]), 0x02);
  EXPECT_EQ(static_cast<unsigned char>(f[3]), 0x03);
}

TEST(RelayFrame, SplitAtEveryByteBoundaryGivesTheSameFrames) {
  const std::string hello = R"({"role":"console","token":"abc"})";
  const std::string data = Pattern(1000);
  std::string stream = Enc(FrameType::kHello, hello) + Enc(FrameType::kPing, "") + Enc(FrameType::kData, data) +
                       Enc(FrameType::kData, "") + Enc(FrameType::kClose, R"({"reason":"x"})") +
                       Enc(FrameType::kBuildChunk, Pattern(300));
  for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
    for (std::size_t cut2 : {cut, (cut + stream.size()) / 2}) {
      Collected c;
      FrameDecoder d;
      std::string_view s(stream);
      auto r1 = d.Feed(s.substr(0, cut), Collect(c));
      auto r2 = d.Feed(s.substr(cut, cut2 - cut), Collect(c));
      auto r3 = d.Feed(s.substr(cut2), Collect(c));
      ASSERT_FALSE(r1.failed || r2.failed || r3.failed) << cut;
      EXPECT_EQ(r1.consumed + r2.consumed + r3.consumed, stream.size());
      ASSERT_EQ(c.frames.size(), 6u) << "cut at " << cut;
      EXPECT_EQ(c.frames[0], std::make_pair(FrameType::kHello, hello));
      EXPECT_EQ(c.frames[1], std::make_pair(FrameType::kPing, std::string()));
      EXPECT_EQ(c.frames[2], std::make_pair(FrameType::kData, data));
      EXPECT_EQ(c.frames[3], std::make_pair(FrameType::kData, std::string()));
      EXPECT_EQ(c.frames[4].first, FrameType::kClose);
      EXPECT_EQ(c.frames[5], std::make_pair(FrameType::kBuildChunk, Pattern(300)));
      EXPECT_TRUE(d.at_boundary());
      EXPECT_EQ(d.buffered(), 0u);
    }
  }
}

TEST(RelayFrame, DataStreamsInPiecesWithoutBuffering) {
  std::string stream = Enc(FrameType::kData, Pattern(kMaxFramePayload));
  Collected c;
  FrameDecoder d;
  for (std::size_t i = 0; i < stream.size(); i += 1000) {
    auto r = d.Feed(std::string_view(stream).substr(i, 1000), Collect(c));
    ASSERT_FALSE(r.failed);
    EXPECT_EQ(d.buffered(), 0u);  // DATA is never held by the decoder
  }
  ASSERT_EQ(c.frames.size(), 1u);
  EXPECT_EQ(c.frames[0].second, Pattern(kMaxFramePayload));
  EXPECT_GT(c.pieces, 60u);
}

TEST(RelayFrame, ControlFrameIsBufferedUntilComplete) {
  std::string stream = Enc(FrameType::kOpen, R"({"client_id":"c1"})");
  Collected c;
  FrameDecoder d;
  ASSERT_FALSE(d.Feed(std::string_view(stream).substr(0, 10), Collect(c)).failed);
  EXPECT_EQ(c.pieces, 0u);
  EXPECT_EQ(d.buffered(), 6u);
  ASSERT_FALSE(d.Feed(std::string_view(stream).substr(10), Collect(c)).failed);
  ASSERT_EQ(c.frames.size(), 1u);
  d.ShrinkIfIdle();
  EXPECT_EQ(d.buffered(), 0u);
}

TEST(RelayFrame, OversizedDataIsRefused) {
  std::string ok = Enc(FrameType::kData, Pattern(kMaxFramePayload));
  Collected c;
  FrameDecoder d;
  EXPECT_FALSE(d.Feed(ok, Collect(c)).failed);
  const char header[] = {0x12, 0x01, 0x00, 0x01};  // 65,537
  auto r = d.Feed(std::string_view(header, 4), Collect(c));
  ASSERT_TRUE(r.failed);
  EXPECT_STREQ(r.error.code, codes::kOversizedFrame);
  EXPECT_NE(r.error.message.find("65537"), std::string::npos);
  EXPECT_TRUE(d.failed());
  // Stays failed, whatever comes next.
  EXPECT_TRUE(d.Feed(Enc(FrameType::kPing, ""), Collect(c)).failed);
  EXPECT_EQ(c.frames.size(), 1u);
}

TEST(RelayFrame, OversizedControlIsRefusedAtTheHeader) {
  const char header[] = {0x01, 0x00, 0x40, 0x01};  // HELLO of 16,385 bytes
  Collected c;
  FrameDecoder d;
  auto r = d.Feed(std::string_view(header, 4), Collect(c));
  ASSERT_TRUE(r.failed);
  EXPECT_STREQ(r.error.code, codes::kOversizedFrame);
  EXPECT_EQ(d.buffered(), 0u);
  FrameDecoder d2;
  EXPECT_FALSE(d2.Feed(Enc(FrameType::kHello, std::string(kMaxControlPayload, ' ')), Collect(c)).failed);
}

TEST(RelayFrame, UnknownTypeIsGarbage) {
  for (std::uint8_t t : {0x00, 0x06, 0x14, 0x24, 0x47, 0xff}) {
    Collected c;
    FrameDecoder d;
    std::string bytes = std::string(1, static_cast<char>(t)) + std::string(3, '\0');
    auto r = d.Feed(bytes, Collect(c));
    ASSERT_TRUE(r.failed) << int(t);
    EXPECT_STREQ(r.error.code, codes::kGarbageFrame);
  }
  Collected c;
  FrameDecoder d;
  auto r = d.Feed(std::string_view("GET / HTTP/1.1\r\n"), Collect(c));
  EXPECT_TRUE(r.failed);
  EXPECT_TRUE(c.frames.empty());
}

TEST(RelayFrame, SinkCanStopDecoding) {
  std::string stream = Enc(FrameType::kPing, "") + Enc(FrameType::kPing, "") + Enc(FrameType::kPing, "");
  FrameDecoder d;
  int seen = 0;
  auto r = d.Feed(stream, [&](const FramePiece&) { return ++seen < 2; });
  EXPECT_FALSE(r.failed);
  EXPECT_EQ(seen, 2);
  EXPECT_EQ(r.consumed, 8u);
  auto r2 = d.Feed(std::string_view(stream).substr(r.consumed), [&](const FramePiece&) { return ++seen > 0; });
  EXPECT_EQ(r2.consumed, 4u);
  EXPECT_EQ(seen, 3);
}

TEST(RelayFrame, EncoderRefusesTooLargePayloads) {
  EXPECT_FALSE(EncodeFrame(FrameType::kData, std::string(kMaxFramePayload + 1, 'x')).ok());
  EXPECT_FALSE(EncodeFrame(FrameType::kHello, std::string(kMaxControlPayload + 1, 'x')).ok());
  std::string out = "keep";
  EXPECT_FALSE(AppendFrame(out, FrameType::kOpen, std::string(kMaxControlPayload + 1, 'x')).ok());
  EXPECT_EQ(out, "keep");
}

TEST(RelayFrame, TypeHelpers) {
  EXPECT_TRUE(IsKnownFrameType(0x23));
  EXPECT_FALSE(IsKnownFrameType(0x24));
  EXPECT_TRUE(IsRawFrameType(FrameType::kBuildChunk));
  EXPECT_FALSE(IsRawFrameType(FrameType::kBuildReport));
  EXPECT_STREQ(FrameTypeName(FrameType::kOpened), "OPENED");
}

}  // namespace
}  // namespace upkeep::relay
