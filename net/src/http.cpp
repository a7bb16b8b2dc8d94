#include "upkeep/net/http.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace upkeep::net {
namespace {

// RFC 9110 tchar.
constexpr bool IsTokenChar(unsigned char c) {
  if (c >= '0' && c <= '9') return true;
  if ((c | 0x20) >= 'a' && (c | 0x20) <= 'z') return true;
  switch (c) {
    case '!': case '#': case '$': case '%': case '&': case '\'': case '*': case '+': case '-':
    case '.': case '^': case '_': case '`': case '|': case '~':
      return true;
    default:
      return false;
  }
}

constexpr bool IsFieldValueChar(unsigned char c) { return c == '\t' || (c >= 0x20 && c != 0x7f); }

int HexValue(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string Printable(std::string_view s) {
  std::string out;
  for (char c : s.substr(0, 64)) {
    auto u = static_cast<unsigned char>(c);
    out.push_back(u >= 0x20 && u < 0x7f ? c : '?');
  }
  if (s.size() > 64) out += "...";
  return out;
}

HeadResult Fail(int status, std::string message) {
  HeadResult r;
  r.kind = HeadResult::Kind::kError;
  r.status = status;
  r.message = std::move(message);
  return r;
}

}  // namespace

std::string_view MethodName(Method method) {
  switch (method) {
    case Method::kGet: return "GET";
    case Method::kHead: return "HEAD";
    case Method::kPost: return "POST";
    case Method::kPut: return "PUT";
    case Method::kDelete: return "DELETE";
    case Method::kPatch: return "PATCH";
    case Method::kOptions: return "OPTIONS";
  }
  return "GET";
}

std::optional<Method> ParseMethod(std::string_view token) {
  for (int i = 0; i < kMethodCount; ++i) {
    auto m = static_cast<Method>(i);
    if (token == MethodName(m)) return m;  // methods are case-sensitive
  }
  return std::nullopt;
}

std::string_view StatusReason(int status) {
  switch (status) {
    case 100: return "Continue";
    case 200: return "OK";
    case 201: return "Created";
    case 202: return "Accepted";
    case 204: return "No Content";
    case 206: return "Partial Content";
    case 301: return "Moved Permanently";
    case 302: return "Found";
    case 303: return "See Other";
    case 304: return "Not Modified";
    case 307: return "Temporary Redirect";
    case 308: return "Permanent Redirect";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 408: return "Request Timeout";
    case 409: return "Conflict";
    case 410: return "Gone";
    case 411: return "Length Required";
    case 412: return "Precondition Failed";
    case 413: return "Content Too Large";
    case 414: return "URI Too Long";
    case 415: return "Unsupported Media Type";
    case 416: return "Range Not Satisfiable";
    case 417: return "Expectation Failed";
    case 422: return "Unprocessable Content";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 500: return "Internal Server Error";
    case 501: return "Not Implemented";
    case 502: return "Bad Gateway";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    case 505: return "HTTP Version Not Supported";
    case 507: return "Insufficient Storage";
    default: return "Unknown";
  }
}

bool HasToken(std::string_view list, std::string_view token) {
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    std::string_view item = TrimSpaceTab(list.substr(0, comma));
    if (EqualsIgnoreCase(item, token)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

Expected<std::string> DecodePath(std::string_view raw) {
  if (raw.empty() || raw.front() != '/') {
    return Error(Errc::kParse, "path '" + Printable(raw) + "': must start with '/'");
  }
  std::string out;
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '%') {
      if (i + 2 >= raw.size() || HexValue(raw[i + 1]) < 0 || HexValue(raw[i + 2]) < 0) {
        return Error(Errc::kParse, "path '" + Printable(raw) + "': bad percent-escape");
      }
      c = static_cast<char>(HexValue(raw[i + 1]) * 16 + HexValue(raw[i + 2]));
      i += 2;
    }
    auto u = static_cast<unsigned char>(c);
    if (u < 0x20 || u == 0x7f) {
      return Error(Errc::kUnsafe, "path '" + Printable(raw) + "': control character or NUL");
    }
    out.push_back(c);
  }
  // Segment rules on the decoded path, so "%2e%2e" and "%2F" can't sneak past them.
  std::string_view rest = std::string_view(out).substr(1);
  while (true) {
    std::size_t slash = rest.find('/');
    std::string_view seg = rest.substr(0, slash);
    bool last = slash == std::string_view::npos;
    if (seg == "." || seg == "..") {
      return Error(Errc::kUnsafe, "path '" + Printable(raw) + "': '.' or '..' segment");
    }
    if (seg.empty() && !last) {
      return Error(Errc::kUnsafe, "path '" + Printable(raw) + "': empty segment");
    }
    if (last) break;
    rest.remove_prefix(slash + 1);
  }
  return out;
}

bool PercentDecodeComponent(std::string_view raw, std::string& out) {
  out.clear();
  out.reserve(raw.size());
  for (std::size_t i = 0; i < raw.size(); ++i) {
    char c = raw[i];
    if (c == '+') {
      c = ' ';
    } else if (c == '%') {
      if (i + 2 >= raw.size() || HexValue(raw[i + 1]) < 0 || HexValue(raw[i + 2]) < 0) return false;
      c = static_cast<char>(HexValue(raw[i + 1]) * 16 + HexValue(raw[i + 2]));
      i += 2;
    }
    if (c == '\0') return false;
    out.push_back(c);
  }
  return true;
}

Expected<std::string> DecodeQueryComponent(std::string_view raw) {
  std::string out;
  if (!PercentDecodeComponent(raw, out)) {
    return Error(Errc::kParse, "query '" + Printable(raw) + "': bad percent-escape or encoded NUL");
  }
  return out;
}

Expected<std::vector<std::pair<std::string, std::string>>> ParseQuery(std::string_view query,
                                                                      std::size_t max_params) {
  std::vector<std::pair<std::string, std::string>> out;
  while (!query.empty()) {
    std::size_t amp = query.find('&');
    std::string_view item = query.substr(0, amp);
    if (!item.empty()) {
      if (out.size() >= max_params) {
        return Error(Errc::kLimit, "query: more than " + std::to_string(max_params) + " parameters");
      }
      std::size_t eq = item.find('=');
      UPK_TRY_ASSIGN(std::string name, DecodeQueryComponent(item.substr(0, eq)));
      std::string value;
      if (eq != std::string_view::npos) {
        UPK_TRY_ASSIGN(value, DecodeQueryComponent(item.substr(eq + 1)));
      }
      out.emplace_back(std::move(name), std::move(value));
    }
    if (amp == std::string_view::npos) break;
    query.remove_prefix(amp + 1);
  }
  return out;
}

RangeResult ParseByteRange(std::string_view header, std::uint64_t size) {
  RangeResult ignore;
  header = TrimSpaceTab(header);
  if (header.size() < 6 || !EqualsIgnoreCase(header.substr(0, 6), "bytes=")) return ignore;
  std::string_view spec = TrimSpaceTab(header.substr(6));
  if (spec.find(',') != std::string_view::npos) return ignore;  // several ranges: whole file instead
  std::size_t dash = spec.find('-');
  if (dash == std::string_view::npos) return ignore;
  std::string_view first_s = spec.substr(0, dash);
  std::string_view last_s = spec.substr(dash + 1);
  RangeResult unsatisfiable;
  unsatisfiable.kind = RangeResult::Kind::kUnsatisfiable;
  RangeResult ok;
  ok.kind = RangeResult::Kind::kSatisfiable;
  if (first_s.empty()) {
    auto n = ParseDecimalU64(last_s);
    if (!n) return ignore;
    if (*n == 0 || size == 0) return unsatisfiable;
    ok.range.first = size > *n ? size - *n : 0;
    ok.range.last = size - 1;
    return ok;
  }
  auto first = ParseDecimalU64(first_s);
  if (!first) return ignore;
  std::uint64_t last = size == 0 ? 0 : size - 1;
  if (!last_s.empty()) {
    auto l = ParseDecimalU64(last_s);
    if (!l || *l < *first) return ignore;
    if (*l < last) last = *l;
  }
  if (*first >= size) return unsatisfiable;
  ok.range.first = *first;
  ok.range.last = last;
  return ok;
}

std::string FormatHttpDate(std::time_t t) {
  static constexpr const char* kDays[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
  static constexpr const char* kMonths[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                            "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[40];
  std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", kDays[tm.tm_wday % 7], tm.tm_mday,
                kMonths[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
  return buf;
}

HeadResult ParseRequestHead(std::string_view data, const ParseLimits& limits, Request& out,
                            std::size_t scan_from) {
  std::size_t from = scan_from >= 3 ? scan_from - 3 : 0;
  std::size_t end = from < data.size() ? data.find("\r\n\r\n", from) : std::string_view::npos;
  if (end == std::string_view::npos) {
    if (data.size() > limits.max_head_bytes) {
      return Fail(431, "request head longer than " + std::to_string(limits.max_head_bytes) + " bytes");
    }
    return HeadResult{};
  }
  std::size_t head_bytes = end + 4;
  if (head_bytes > limits.max_head_bytes) {
    return Fail(431, "request head longer than " + std::to_string(limits.max_head_bytes) + " bytes");
  }

  out = Request{};
  out.head_.assign(data.data(), head_bytes);
  std::string_view head = out.head_;
  auto span = [&](std::string_view part) {
    return Request::Span{static_cast<std::uint32_t>(part.data() - head.data()),
                         static_cast<std::uint32_t>(part.size())};
  };

  // Line ends: CRLF only. A bare CR or LF is how request smuggling between parsers starts.
  for (std::size_t i = 0; i < head_bytes; ++i) {
    if (head[i] == '\r' && (i + 1 >= head_bytes || head[i + 1] != '\n')) return Fail(400, "bare CR in request head");
    if (head[i] == '\n' && (i == 0 || head[i - 1] != '\r')) return Fail(400, "bare LF in request head");
  }

  // Request line: method SP target SP version.
  std::size_t line_end = head.find("\r\n");
  std::string_view line = head.substr(0, line_end);
  std::size_t sp1 = line.find(' ');
  if (sp1 == std::string_view::npos || sp1 == 0) return Fail(400, "malformed request line");
  std::string_view method = line.substr(0, sp1);
  for (char c : method) {
    if (!IsTokenChar(static_cast<unsigned char>(c))) return Fail(400, "malformed method");
  }
  std::size_t sp2 = line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || sp2 == sp1 + 1) return Fail(400, "malformed request line");
  std::string_view target = line.substr(sp1 + 1, sp2 - sp1 - 1);
  std::string_view version = line.substr(sp2 + 1);
  for (char c : target) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f) return Fail(400, "malformed request target");
  }
  if (version.size() != 8 || version.substr(0, 5) != "HTTP/" || version[6] != '.' || version[5] < '0' ||
      version[5] > '9' || version[7] < '0' || version[7] > '9') {
    return Fail(400, "malformed HTTP version");
  }
  if (version[5] != '1' || (version[7] != '0' && version[7] != '1')) {
    return Fail(505, "HTTP version " + std::string(version.substr(5)) + " not supported");
  }
  out.version_minor_ = version[7] - '0';
  auto m = ParseMethod(method);
  if (!m) return Fail(501, "method '" + Printable(method) + "' not implemented");
  out.method_ = *m;
  if (target.front() != '/') return Fail(400, "request target must be origin-form ('/...')");
  out.target_ = span(target);
  std::size_t qmark = target.find('?');
  std::string_view raw_path = target.substr(0, qmark);
  if (qmark != std::string_view::npos) out.query_ = span(target.substr(qmark + 1));
  auto path = DecodePath(raw_path);
  if (!path.ok()) return Fail(400, path.error().message());
  out.path_ = std::move(path).value();

  // Header fields.
  bool have_length = false, have_te = false, close = false, keep_alive = false;
  int hosts = 0;
  std::size_t pos = line_end + 2;
  while (pos < end + 2) {
    std::size_t eol = head.find("\r\n", pos);
    std::string_view field = head.substr(pos, eol - pos);
    pos = eol + 2;
    if (field.empty()) break;
    if (field.front() == ' ' || field.front() == '\t') return Fail(400, "obsolete line folding in header");
    std::size_t colon = field.find(':');
    if (colon == std::string_view::npos || colon == 0) return Fail(400, "malformed header field");
    std::string_view name = field.substr(0, colon);
    for (char c : name) {
      if (!IsTokenChar(static_cast<unsigned char>(c))) {
        return Fail(400, "malformed header name '" + Printable(name) + "'");
      }
    }
    std::string_view value = TrimSpaceTab(field.substr(colon + 1));
    for (char c : value) {
      if (!IsFieldValueChar(static_cast<unsigned char>(c))) {
        return Fail(400, "control character in header '" + Printable(name) + "'");
      }
    }
    if (out.headers_.size() >= limits.max_headers) {
      return Fail(431, "more than " + std::to_string(limits.max_headers) + " header fields");
    }
    out.headers_.emplace_back(span(name), span(value));

    if (EqualsIgnoreCase(name, "content-length")) {
      auto n = ParseDecimalU64(value);
      if (!n) return Fail(400, "bad Content-Length '" + Printable(value) + "'");
      if (have_length) return Fail(400, "more than one Content-Length");
      have_length = true;
      out.has_content_length_ = true;
      out.content_length_ = *n;
    } else if (EqualsIgnoreCase(name, "transfer-encoding")) {
      have_te = true;
    } else if (EqualsIgnoreCase(name, "host")) {
      ++hosts;
    } else if (EqualsIgnoreCase(name, "connection")) {
      close = close || HasToken(value, "close");
      keep_alive = keep_alive || HasToken(value, "keep-alive");
    } else if (EqualsIgnoreCase(name, "expect")) {
      if (!EqualsIgnoreCase(value, "100-continue")) return Fail(417, "unsupported Expect '" + Printable(value) + "'");
      out.expect_continue_ = true;
    }
  }
  if (have_te && have_length) return Fail(400, "both Transfer-Encoding and Content-Length");
  if (have_te) return Fail(501, "Transfer-Encoding request bodies are not supported; send Content-Length");
  if (out.version_minor_ == 1 && hosts != 1) return Fail(400, hosts == 0 ? "missing Host header" : "more than one Host header");
  out.keep_alive_ = out.version_minor_ == 1 ? !close : (keep_alive && !close);

  HeadResult ok;
  ok.kind = HeadResult::Kind::kComplete;
  ok.head_bytes = head_bytes;
  return ok;
}

std::optional<std::string> Request::QueryParam(std::string_view name) const {
  std::string_view q = query();
  while (!q.empty()) {
    std::size_t amp = q.find('&');
    std::string_view item = q.substr(0, amp);
    std::size_t eq = item.find('=');
    auto key = DecodeQueryComponent(item.substr(0, eq));
    if (key.ok() && *key == name) {
      if (eq == std::string_view::npos) return std::string();
      auto value = DecodeQueryComponent(item.substr(eq + 1));
      if (!value.ok()) return std::nullopt;
      return std::move(value).value();
    }
    if (amp == std::string_view::npos) break;
    q.remove_prefix(amp + 1);
  }
  return std::nullopt;
}

std::optional<std::string_view> Request::Header(std::string_view name) const {
  for (const auto& [n, v] : headers_) {
    if (EqualsIgnoreCase(View(n), name)) return View(v);
  }
  return std::nullopt;
}

std::string_view Request::PathParam(std::string_view name) const {
  for (const auto& [n, v] : params_) {
    if (n == name) return v;
  }
  return {};
}

Expected<std::shared_ptr<const OpenFile>> OpenFile::Open(const std::filesystem::path& path, std::string etag) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOCTTY);
  if (fd < 0) {
    int err = errno;
    return Error(err == ENOENT ? Errc::kNotFound : Errc::kIo, path.string() + ": " + std::strerror(err));
  }
  std::shared_ptr<OpenFile> file(new OpenFile());
  file->fd_ = fd;
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error(Errc::kIo, path.string() + ": " + std::strerror(errno));
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, path.string() + ": not a regular file");
  file->size_ = static_cast<std::uint64_t>(st.st_size);
  if (etag.empty()) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "\"%llx-%llx\"", static_cast<unsigned long long>(st.st_size),
                  static_cast<unsigned long long>(st.st_mtim.tv_sec) * 1000000000ULL +
                      static_cast<unsigned long long>(st.st_mtim.tv_nsec));
    etag = buf;
  }
  file->etag_ = std::move(etag);
  file->last_modified_ = FormatHttpDate(st.st_mtim.tv_sec);
  return std::shared_ptr<const OpenFile>(std::move(file));
}

OpenFile::~OpenFile() {
  if (fd_ >= 0) ::close(fd_);
}

Response& Response::SetHeader(std::string name, std::string value) {
  for (auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) {
      v = std::move(value);
      return *this;
    }
  }
  headers.emplace_back(std::move(name), std::move(value));
  return *this;
}

std::optional<std::string_view> Response::Header(std::string_view name) const {
  for (const auto& [n, v] : headers) {
    if (EqualsIgnoreCase(n, name)) return std::string_view(v);
  }
  return std::nullopt;
}

Response Response::Text(int status, std::string body, std::string content_type) {
  Response r(status);
  r.headers.emplace_back("Content-Type", std::move(content_type));
  r.body = std::move(body);
  return r;
}

Response Response::Json(int status, const upkeep::Json& value) {
  // Invalid UTF-8 in a string must not throw out of a handler.
  return Text(status, value.dump(-1, ' ', false, upkeep::Json::error_handler_t::replace), "application/json");
}

Response Response::JsonError(int status, std::string_view code, std::string_view message) {
  upkeep::Json body = {{"error", {{"code", std::string(code)}, {"message", std::string(message)}}}};
  return Json(status, body);
}

Response Response::FromError(const upkeep::Error& error) {
  int status = 500;
  switch (error.code()) {
    case Errc::kInvalidArgument:
    case Errc::kParse:
    case Errc::kUnsafe: status = 400; break;
    case Errc::kNotFound: status = 404; break;
    case Errc::kPolicy: status = 403; break;
    case Errc::kLimit: status = 413; break;
    case Errc::kVerification: status = 422; break;
    case Errc::kIo:
    case Errc::kInternal: status = 500; break;
  }
  return JsonError(status, ErrcName(error.code()), error.message());
}

Response Response::FromFile(std::shared_ptr<const OpenFile> file, std::string content_type) {
  Response r(200);
  r.headers.emplace_back("Content-Type", std::move(content_type));
  r.file = std::move(file);
  return r;
}

}  // namespace upkeep::net
