// The pure parts of upkeep::net: request head parsing, path and query decoding, byte ranges.
#include <gtest/gtest.h>

#include "upkeep/net/http.hpp"

namespace upkeep::net {
namespace {

HeadResult Parse(std::string_view text, Request& req, ParseLimits limits = {}) {
  return ParseRequestHead(text, limits, req);
}

TEST(ParseRequestHead, ParsesRequestLineHeadersAndFraming) {
  Request req;
  std::string text =
      "POST /api/v1/check-in?id=a%20b&x HTTP/1.1\r\nHost: upd\r\ncontent-LENGTH:  12 \r\nX-Empty:\r\n"
      "Connection: keep-alive, Upgrade\r\n\r\nBODY...";
  auto r = Parse(text, req);
  ASSERT_EQ(r.kind, HeadResult::Kind::kComplete) << r.message;
  EXPECT_EQ(r.head_bytes, text.find("BODY"));
  EXPECT_EQ(req.method(), Method::kPost);
  EXPECT_EQ(req.path(), "/api/v1/check-in");
  EXPECT_EQ(req.query(), "id=a%20b&x");
  EXPECT_EQ(req.QueryParam("id").value_or("?"), "a b");
  EXPECT_EQ(req.QueryParam("x").value_or("?"), "");
  EXPECT_FALSE(req.QueryParam("missing"));
  EXPECT_EQ(req.Header("CONTENT-length").value_or(""), "12");
  EXPECT_EQ(req.Header("x-empty").value_or("?"), "");
  EXPECT_EQ(req.content_length(), 12u);
  EXPECT_TRUE(req.keep_alive());
  EXPECT_EQ(req.header_count(), 4u);
  EXPECT_EQ(req.header(0).first, "Host");

  // Copies and moves keep their views valid (they are offsets, not pointers).
  Request copy = req;
  Request moved = std::move(req);
  EXPECT_EQ(copy.Header("host").value_or(""), "upd");
  EXPECT_EQ(moved.Header("host").value_or(""), "upd");
}

TEST(ParseRequestHead, IncompleteUntilTheEmptyLine) {
  Request req;
  std::string text = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
  for (std::size_t n = 0; n < text.size(); ++n) {
    EXPECT_EQ(Parse(text.substr(0, n), req).kind, HeadResult::Kind::kIncomplete) << n;
  }
  // Scanning resumes where the previous call stopped, even with the terminator split.
  auto r = ParseRequestHead(text, ParseLimits{}, req, text.size() - 2);
  EXPECT_EQ(r.kind, HeadResult::Kind::kComplete);
}

TEST(ParseRequestHead, ConnectionSemanticsByVersion) {
  Request req;
  ASSERT_EQ(Parse("GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", req).kind, HeadResult::Kind::kComplete);
  EXPECT_FALSE(req.keep_alive());
  ASSERT_EQ(Parse("GET / HTTP/1.0\r\n\r\n", req).kind, HeadResult::Kind::kComplete);
  EXPECT_FALSE(req.keep_alive());
  EXPECT_EQ(req.version_minor(), 0);
  ASSERT_EQ(Parse("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", req).kind, HeadResult::Kind::kComplete);
  EXPECT_TRUE(req.keep_alive());
  ASSERT_EQ(Parse("PUT / HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 3\r\n\r\n", req).kind,
            HeadResult::Kind::kComplete);
  EXPECT_TRUE(req.expects_continue());
}

TEST(ParseRequestHead, LimitsGive431) {
  Request req;
  ParseLimits limits;
  limits.max_head_bytes = 64;
  limits.max_headers = 2;
  std::string long_head = "GET / HTTP/1.1\r\nHost: a\r\nX: " + std::string(60, 'y') + "\r\n\r\n";
  auto r = Parse(long_head, req, limits);
  EXPECT_EQ(r.kind, HeadResult::Kind::kError);
  EXPECT_EQ(r.status, 431);
  // Without a terminator yet, but already too long: refused without waiting for more.
  r = Parse(std::string(65, 'G'), req, limits);
  EXPECT_EQ(r.status, 431);
  r = Parse("GET / HTTP/1.1\r\nHost: a\r\nA: 1\r\nB: 2\r\n\r\n", req, limits);
  EXPECT_EQ(r.status, 431);
}

TEST(ParseRequestHead, RefusesHostileHeads) {
  struct Case {
    const char* text;
    int status;
  } cases[] = {
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 1x\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nX: a\x01z\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\nX\r\n\r\n", 400},
      {"GET / HTTP/1.1\r\nHost: a\r\n: v\r\n\r\n", 400},
      {"GET / HTTP/1.1\rHost: a\r\n\r\n", 400},
      {"GET /a\x7f HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/1.1 \r\nHost: a\r\n\r\n", 400},
      {"GET / HTTPS/1.1\r\nHost: a\r\n\r\n", 400},
      {"GET / HTTP/0.9\r\nHost: a\r\n\r\n", 505},
      {"CONNECT / HTTP/1.1\r\nHost: a\r\n\r\n", 501},
      {"G(T / HTTP/1.1\r\nHost: a\r\n\r\n", 400},
      {"\r\n\r\n", 400},
  };
  for (const auto& c : cases) {
    Request req;
    auto r = Parse(c.text, req);
    EXPECT_EQ(r.kind, HeadResult::Kind::kError) << c.text;
    EXPECT_EQ(r.status, c.status) << c.text;
    EXPECT_FALSE(r.message.empty());
  }
}

TEST(DecodePath, DecodesAndRefusesTraversal) {
  EXPECT_EQ(DecodePath("/a%20b/c%2Fd").value(), "/a b/c/d");
  EXPECT_EQ(DecodePath("/").value(), "/");
  EXPECT_EQ(DecodePath("/dir/").value(), "/dir/");
  EXPECT_EQ(DecodePath("/a..b/.c").value(), "/a..b/.c");
  for (const char* bad : {"", "a", "/a/../b", "/..", "/.", "/a/%2e%2E/b", "/a%2F..%2Fb", "/a//b", "/%00", "/a%0a",
                          "/%", "/%4", "/%g1", "/a\x01"}) {
    auto r = DecodePath(bad);
    EXPECT_FALSE(r.ok()) << bad;
  }
  auto err = DecodePath("/x/%2e%2e");
  ASSERT_FALSE(err.ok());
  EXPECT_NE(err.error().message().find("/x/%2e%2e"), std::string::npos);
}

TEST(ParseQuery, DecodesPairsAndBoundsCount) {
  auto q = ParseQuery("a=1&b=x+y&&c&d=%41%3d");
  ASSERT_TRUE(q.ok());
  ASSERT_EQ(q->size(), 4u);
  EXPECT_EQ((*q)[1].second, "x y");
  EXPECT_EQ((*q)[2].first, "c");
  EXPECT_EQ((*q)[3].second, "A=");
  EXPECT_FALSE(ParseQuery("a=%00").ok());
  EXPECT_FALSE(ParseQuery("a=%zz").ok());
  auto many = ParseQuery("a&b&c&d", 3);
  ASSERT_FALSE(many.ok());
  EXPECT_EQ(many.error().code(), Errc::kLimit);
}

TEST(ParseByteRange, SingleRangesAndEdgeCases) {
  using K = RangeResult::Kind;
  auto check = [](std::string_view h, std::uint64_t size, K kind, std::uint64_t first = 0, std::uint64_t last = 0) {
    auto r = ParseByteRange(h, size);
    EXPECT_EQ(r.kind, kind) << h;
    if (kind == K::kSatisfiable) {
      EXPECT_EQ(r.range.first, first) << h;
      EXPECT_EQ(r.range.last, last) << h;
    }
  };
  check("bytes=0-99", 1000, K::kSatisfiable, 0, 99);
  check("bytes=500-", 1000, K::kSatisfiable, 500, 999);
  check("bytes=-100", 1000, K::kSatisfiable, 900, 999);
  check("bytes=-5000", 1000, K::kSatisfiable, 0, 999);
  check("bytes=990-5000", 1000, K::kSatisfiable, 990, 999);
  check("Bytes = 1-1", 1000, K::kIgnore);  // no spaces around '='
  check("BYTES=1-1", 1000, K::kSatisfiable, 1, 1);
  check("bytes=1000-", 1000, K::kUnsatisfiable);
  check("bytes=-0", 1000, K::kUnsatisfiable);
  check("bytes=0-", 0, K::kUnsatisfiable);
  check("bytes=5-4", 1000, K::kIgnore);
  check("bytes=0-1,5-6", 1000, K::kIgnore);
  check("items=0-1", 1000, K::kIgnore);
  check("bytes=a-b", 1000, K::kIgnore);
  check("bytes=-", 1000, K::kIgnore);
  check("bytes=99999999999999999999-", 1000, K::kIgnore);
}

TEST(Response, HelpersFollowTheProjectConventions) {
  auto r = Response::JsonError(404, "not_found", "package 'x' not found");
  EXPECT_EQ(r.status, 404);
  EXPECT_EQ(r.body, R"({"error":{"code":"not_found","message":"package 'x' not found"}})");
  EXPECT_EQ(r.Header("content-type").value_or(""), "application/json");
  EXPECT_EQ(Response::FromError(Error(Errc::kPolicy, "no")).status, 403);
  EXPECT_EQ(Response::FromError(Error(Errc::kNotFound, "no")).status, 404);
  EXPECT_EQ(Response::FromError(Error(Errc::kLimit, "no")).status, 413);
  // Invalid UTF-8 is replaced, never thrown.
  auto bad = Response::Json(200, Json{{"s", std::string("\xff\xfe")}});
  EXPECT_EQ(bad.status, 200);
  r.SetHeader("Content-Type", "text/plain");
  EXPECT_EQ(r.headers.size(), 1u);
  EXPECT_EQ(FormatHttpDate(784111777), "Sun, 06 Nov 1994 08:49:37 GMT");
  EXPECT_TRUE(HasToken("keep-alive, Close", "close"));
  EXPECT_FALSE(HasToken("closed", "close"));
  EXPECT_FALSE(OpenFile::Open("/nonexistent/file").ok());
  EXPECT_FALSE(OpenFile::Open("/tmp").ok());  // a directory is not a file body
}

}  // namespace
}  // namespace upkeep::net
