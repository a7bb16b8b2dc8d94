// HTTP/1.1 message types of upkeep::net and the pure, bounded parsing functions behind them.
//
// Request: one parsed request. It owns its bytes (the raw head, the decoded path, the body) and
// hands out string_views into itself, valid as long as the Request lives. Header names are looked
// up case-insensitively. Response: what a handler produces: status, headers, a string body or an
// open file (served with sendfile, Range, ETag by the server). Both are plain values: move them
// between threads freely, never mutate one from two threads at once.
//
// The parsing functions (ParseRequestHead, DecodePath, ParseQuery, ParseByteRange) never read past
// their input, allocate at most in proportion to it, and turn hostile input into an HTTP status
// plus a one-line reason. They are what the fuzz target fuzz_http_request exercises.
#pragma once

#include <cstddef>
#include <cstdint>
#include <ctime>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::net {

enum class Method : std::uint8_t { kGet, kHead, kPost, kPut, kDelete, kPatch, kOptions };
inline constexpr int kMethodCount = 7;

std::string_view MethodName(Method method);
// The methods this server implements; anything else is answered 501.
std::optional<Method> ParseMethod(std::string_view token);

// "Not Found" for 404; "Unknown" for codes without a standard phrase.
std::string_view StatusReason(int status);

// ASCII case-insensitive equality, as HTTP field names compare (common/text.hpp).
using ::upkeep::EqualsIgnoreCase;

// True when a comma-separated header value (e.g. Connection) holds `token` case-insensitively.
bool HasToken(std::string_view list, std::string_view token);

struct ParseLimits {
  std::size_t max_head_bytes = 16 * 1024;  // request line + headers + the empty line (431 beyond)
  std::size_t max_headers = 100;           // header fields (431 beyond)
};

class Request;

// Outcome of looking at the start of a buffer for one request head.
struct HeadResult {
  enum class Kind { kIncomplete, kComplete, kError };
  Kind kind = Kind::kIncomplete;
  std::size_t head_bytes = 0;  // kComplete: bytes of the head, including the empty line
  int status = 0;              // kError: 400, 431, 501 or 505
  std::string message;         // kError: one line naming what was wrong
};

// Looks for a complete request head (request line, header fields, empty line) at the start of
// `data`; `scan_from` lets a caller that calls again with more bytes skip what it already
// searched. On kComplete fills `out` (method, target, decoded path, headers, framing). Only CRLF
// line ends are accepted; obsolete line folding, whitespace before a colon, absolute-form
// targets, Transfer-Encoding (501) and bad or conflicting Content-Length (400) are refused.
HeadResult ParseRequestHead(std::string_view data, const ParseLimits& limits, Request& out,
                            std::size_t scan_from = 0);

// Percent-decodes a request path and checks it: must start with '/', no encoded or raw NUL, no
// "." or ".." segment, no empty segment ("//"), only valid %XX escapes. The error names the path.
Expected<std::string> DecodePath(std::string_view raw_path);

// Decodes one query component ('+' is a space, %XX escapes, NUL refused).
Expected<std::string> DecodeQueryComponent(std::string_view raw);

// The same decoding into `out`, with no message: false on a bad %XX escape or an encoded NUL. For
// callers whose text must never appear in an error (a form's password field).
bool PercentDecodeComponent(std::string_view raw, std::string& out);

// Splits "a=1&b=two" into decoded pairs; at most max_params (kLimit beyond).
Expected<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view query,
                                                                      std::size_t max_params = 256);

// A single satisfiable byte range [first, last] of a representation of `size` bytes.
struct ByteRange {
  std::uint64_t first = 0;
  std::uint64_t last = 0;
};

struct RangeResult {
  enum class Kind {
    kIgnore,          // not a usable single range (bad syntax, other unit, several ranges): send 200
    kSatisfiable,     // send 206 with `range`
    kUnsatisfiable,   // send 416 with "Content-Range: bytes */size"
  };
  Kind kind = Kind::kIgnore;
  ByteRange range;
};

// Interprets a Range header value ("bytes=0-99", "bytes=100-", "bytes=-500") against `size`.
RangeResult ParseByteRange(std::string_view header, std::uint64_t size);

// IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") as Date and Last-Modified use.
std::string FormatHttpDate(std::time_t t);

class Request {
 public:
  Method method() const { return method_; }
  std::string_view method_name() const { return MethodName(method_); }
  // The request target as sent (path and query, still percent-encoded).
  std::string_view target() const { return View(target_); }
  // The percent-decoded, validated path.
  const std::string& path() const { return path_; }
  // The raw query string without '?' (empty when absent).
  std::string_view query() const { return View(query_); }
  // First value of query parameter `name`, decoded; nullopt when absent or badly encoded.
  std::optional<std::string> QueryParam(std::string_view name) const;
  int version_minor() const { return version_minor_; }  // 1 for HTTP/1.1, 0 for HTTP/1.0

  // First value of header `name` (case-insensitive), nullopt when absent.
  std::optional<std::string_view> Header(std::string_view name) const;
  std::size_t header_count() const { return headers_.size(); }
  std::pair<std::string_view, std::string_view> header(std::size_t i) const {
    return {View(headers_[i].first), View(headers_[i].second)};
  }

  // The body, for routes that read it into memory; always empty on RouteOptions::body_to_file routes.
  const std::string& body() const { return body_; }
  std::uint64_t content_length() const { return content_length_; }
  // Whether the request carried a Content-Length header (absent means no body).
  bool has_content_length() const { return has_content_length_; }

  // The body as a file, for RouteOptions::body_to_file routes (nullopt on other routes).
  struct BodyFile {
    std::filesystem::path path;  // a file in body_to_file's dir, 0600, fully written and fsync'd
    std::uint64_t size = 0;
    std::string sha256_hex;      // of the whole body, computed while it was written
  };
  // The handler may rename() the file elsewhere (same filesystem) to keep it; whatever is still at
  // `path` when the request is answered is deleted by the server.
  const std::optional<BodyFile>& body_file() const { return body_file_; }
  // Whether the client wants the connection kept open after this request.
  bool keep_alive() const { return keep_alive_; }
  bool expects_continue() const { return expect_continue_; }

  // Set by routing: {name} segments of a pattern route, and the rest of the path after the
  // prefix of a prefix route ("/repo/targets/*" and "/repo/targets/a/b" give "a/b").
  std::string_view PathParam(std::string_view name) const;
  std::string_view path_suffix() const { return path_suffix_; }
  // The peer as "address:port" ("[::1]:5555" for IPv6).
  std::string_view remote() const { return remote_; }

 private:
  friend HeadResult ParseRequestHead(std::string_view, const ParseLimits&, Request&, std::size_t);
  friend struct RequestAccess;
  struct Span {
    std::uint32_t offset = 0;
    std::uint32_t length = 0;
  };
  std::string_view View(Span s) const { return std::string_view(head_).substr(s.offset, s.length); }

  std::string head_;
  Method method_ = Method::kGet;
  Span target_, query_;
  std::string path_;
  int version_minor_ = 1;
  std::vector<std::pair<Span, Span>> headers_;
  std::uint64_t content_length_ = 0;
  bool has_content_length_ = false;
  bool keep_alive_ = true;
  bool expect_continue_ = false;
  std::string body_;
  std::optional<BodyFile> body_file_;
  std::vector<std::pair<std::string, std::string>> params_;
  std::string path_suffix_;
  std::string remote_;
};

// An open regular file a Response can carry. Opened once, shared read-only (the descriptor is
// only used with pread/sendfile, never its file offset), closed when the last owner goes.
class OpenFile {
 public:
  // Opens `path` read-only; refuses anything that is not a regular file. The default ETag is
  // derived from size and modification time; daemons serving content-addressed blobs should pass
  // their digest as `etag` instead (a quoted string, e.g. "\"sha256-ab12...\"").
  static Expected<std::shared_ptr<const OpenFile>> Open(const std::filesystem::path& path,
                                                        std::string etag = {});
  ~OpenFile();
  OpenFile(const OpenFile&) = delete;
  OpenFile& operator=(const OpenFile&) = delete;

  int fd() const { return fd_; }
  std::uint64_t size() const { return size_; }
  const std::string& etag() const { return etag_; }
  const std::string& last_modified() const { return last_modified_; }

 private:
  OpenFile() = default;
  int fd_ = -1;
  std::uint64_t size_ = 0;
  std::string etag_;
  std::string last_modified_;
};

class Response {
 public:
  Response() = default;
  explicit Response(int status_code) : status(status_code) {}

  int status = 200;
  // Extra header fields. The server writes Date, Content-Length and Connection itself and drops
  // those names here; a name or value with CR, LF or NUL turns the response into a 500.
  std::vector<std::pair<std::string, std::string>> headers;
  std::string body;
  // When set (and status is 200) the file is the body: the server answers Range, If-Range,
  // If-None-Match and HEAD, and sends it with sendfile(2) on plain TCP.
  std::shared_ptr<const OpenFile> file;

  // Replaces any header of the same name (case-insensitive).
  Response& SetHeader(std::string name, std::string value);
  std::optional<std::string_view> Header(std::string_view name) const;

  static Response Text(int status, std::string body, std::string content_type = "text/plain; charset=utf-8");
  static Response Json(int status, const upkeep::Json& value);
  // The project's error body: {"error": {"code": code, "message": message}}.
  static Response JsonError(int status, std::string_view code, std::string_view message);
  // An Error as a JSON error response, its Errc mapped to a status (not found 404, policy 403,
  // limit 413, verification 422, parse/argument/unsafe 400, io/internal 500).
  static Response FromError(const upkeep::Error& error);
  static Response FromFile(std::shared_ptr<const OpenFile> file, std::string content_type);
};

}  // namespace upkeep::net
