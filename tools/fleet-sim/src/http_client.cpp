#include "upkeep/fleet_sim/http_client.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <cstring>

namespace upkeep::fleet_sim {
namespace {

using SteadyClock = std::chrono::steady_clock;

bool IEquals(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t' || s.back() == '\r')) s.remove_suffix(1);
  return s;
}

template <typename T>
bool ParseNumber(std::string_view s, T& out, int base = 10) {
  if (s.empty()) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out, base);
  return ec == std::errc() && p == s.data() + s.size();
}

int MillisLeft(SteadyClock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - SteadyClock::now()).count();
  return left <= 0 ? 0 : static_cast<int>(std::min<long long>(left, 1 << 30));
}

}  // namespace

Expected<Url> Url::Parse(std::string_view text) {
  constexpr std::string_view kHttp = "http://";
  if (text.starts_with("https://")) {
    return Error(Errc::kInvalidArgument, "server URL '" + std::string(text) +
                                             "': https is not supported by fleet-sim yet; use http:// on a trusted network");
  }
  if (!text.starts_with(kHttp)) {
    return Error(Errc::kInvalidArgument, "server URL '" + std::string(text) + "' must start with http://");
  }
  std::string_view rest = text.substr(kHttp.size());
  std::string_view authority = rest.substr(0, rest.find('/'));
  std::string_view path = rest.substr(authority.size());
  Url url;
  if (!authority.empty() && authority.front() == '[') {  // [v6]:port
    auto close = authority.find(']');
    if (close == std::string_view::npos) return Error(Errc::kInvalidArgument, "server URL: unclosed '[' in host");
    url.host = std::string(authority.substr(1, close - 1));
    authority.remove_prefix(close + 1);
    if (!authority.empty() && authority.front() != ':') {
      return Error(Errc::kInvalidArgument, "server URL: junk after ']'");
    }
  } else {
    url.host = std::string(authority.substr(0, authority.find(':')));
    authority.remove_prefix(url.host.size());
  }
  if (url.host.empty()) return Error(Errc::kInvalidArgument, "server URL '" + std::string(text) + "' has no host");
  if (!authority.empty()) {  // ":port"
    std::uint16_t port = 0;
    if (!ParseNumber(authority.substr(1), port) || port == 0) {
      return Error(Errc::kInvalidArgument, "server URL '" + std::string(text) + "': bad port");
    }
    url.port = port;
  }
  while (!path.empty() && path.back() == '/') path.remove_suffix(1);
  if (path.find_first_of("?# \r\n") != std::string_view::npos) {
    return Error(Errc::kInvalidArgument, "server URL '" + std::string(text) + "': a base URL takes no query or fragment");
  }
  url.prefix = std::string(path);
  return url;
}

std::string Url::HostHeader() const {
  std::string h = host.find(':') != std::string::npos ? "[" + host + "]" : host;
  return h + ":" + std::to_string(port);
}

std::optional<std::string> HttpReply::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (IEquals(k, name)) return v;
  }
  return std::nullopt;
}

HttpClient::HttpClient(Url url, HttpClientOptions options) : url_(std::move(url)), options_(options) {}

HttpClient::~HttpClient() { Close(); }

void HttpClient::Close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
  buf_.clear();
}

Status HttpClient::Connect() {
  Close();
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  addrinfo* res = nullptr;
  const std::string port = std::to_string(url_.port);
  if (int rc = ::getaddrinfo(url_.host.c_str(), port.c_str(), &hints, &res); rc != 0) {
    return Error(Errc::kIo, "resolve " + url_.host + ": " + gai_strerror(rc));
  }
  std::string last = "no address";
  const auto deadline = SteadyClock::now() + options_.timeout;
  for (addrinfo* ai = res; ai != nullptr && fd_ < 0; ai = ai->ai_next) {
    int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC, ai->ai_protocol);
    if (fd < 0) {
      last = std::strerror(errno);
      continue;
    }
    int rc = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
    if (rc != 0 && errno == EINPROGRESS) {
      pollfd p{fd, POLLOUT, 0};
      rc = ::poll(&p, 1, MillisLeft(deadline)) == 1 ? 0 : -1;
      int so_error = rc == 0 ? 0 : ETIMEDOUT;
      socklen_t len = sizeof so_error;
      if (rc == 0) ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &so_error, &len);
      if (so_error != 0) {
        errno = so_error;
        rc = -1;
      }
    }
    if (rc != 0) {
      last = std::strerror(errno);
      ::close(fd);
      continue;
    }
    int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);  // small requests, no Nagle delay
    fd_ = fd;
  }
  ::freeaddrinfo(res);
  if (fd_ < 0) return Error(Errc::kIo, "connect to " + url_.HostHeader() + ": " + last);
  ++connects_;
  return OkStatus();
}

Status HttpClient::WriteAll(std::string_view data) {
  const auto deadline = SteadyClock::now() + options_.timeout;
  while (!data.empty()) {
    ssize_t n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
    if (n > 0) {
      data.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd p{fd_, POLLOUT, 0};
      if (::poll(&p, 1, MillisLeft(deadline)) <= 0) return Error(Errc::kIo, "send to " + url_.HostHeader() + ": time-out");
      continue;
    }
    return Error(Errc::kIo, "send to " + url_.HostHeader() + ": " + std::strerror(errno));
  }
  return OkStatus();
}

Status HttpClient::ReadMore(SteadyClock::time_point deadline) {
  char chunk[16 * 1024];
  for (;;) {
    ssize_t n = ::recv(fd_, chunk, sizeof chunk, 0);
    if (n > 0) {
      buf_.append(chunk, static_cast<std::size_t>(n));
      return OkStatus();
    }
    if (n == 0) return Error(Errc::kIo, "connection to " + url_.HostHeader() + " closed by the server");
    if (errno == EINTR) continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK) {
      return Error(Errc::kIo, "read from " + url_.HostHeader() + ": " + std::strerror(errno));
    }
    pollfd p{fd_, POLLIN, 0};
    int rc = ::poll(&p, 1, MillisLeft(deadline));
    if (rc == 0) return Error(Errc::kIo, "read from " + url_.HostHeader() + ": time-out");
    if (rc < 0 && errno != EINTR) return Error(Errc::kIo, std::string("poll: ") + std::strerror(errno));
  }
}

Expected<HttpReply> HttpClient::ReadReply(bool head) {
  const auto deadline = SteadyClock::now() + options_.timeout;
  std::size_t end;
  while ((end = buf_.find("\r\n\r\n")) == std::string::npos) {
    if (buf_.size() > options_.max_header_bytes) return Error(Errc::kLimit, "answer headers over the limit");
    UPK_TRY(ReadMore(deadline));
  }
  std::string_view head_text(buf_.data(), end);
  HttpReply reply;
  // "HTTP/1.1 200 OK"
  auto line_end = head_text.find("\r\n");
  std::string_view status_line = head_text.substr(0, line_end);
  if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || !ParseNumber(status_line.substr(9, 3), reply.status)) {
    return Error(Errc::kParse, "bad status line from " + url_.HostHeader());
  }
  bool close = status_line.starts_with("HTTP/1.0");
  std::optional<std::uint64_t> length;
  bool chunked = false;
  std::string_view rest = line_end == std::string_view::npos ? std::string_view() : head_text.substr(line_end + 2);
  while (!rest.empty()) {
    auto e = rest.find("\r\n");
    std::string_view line = rest.substr(0, e);
    rest = e == std::string_view::npos ? std::string_view() : rest.substr(e + 2);
    auto colon = line.find(':');
    if (colon == std::string_view::npos) return Error(Errc::kParse, "bad header line from " + url_.HostHeader());
    std::string_view name = line.substr(0, colon), value = Trim(line.substr(colon + 1));
    if (IEquals(name, "Content-Length")) {
      std::uint64_t n = 0;
      if (!ParseNumber(value, n)) return Error(Errc::kParse, "bad Content-Length from " + url_.HostHeader());
      length = n;
    } else if (IEquals(name, "Transfer-Encoding")) {
      chunked = value.find("chunked") != std::string_view::npos;
    } else if (IEquals(name, "Connection")) {
      if (IEquals(value, "close")) close = true;
    }
    reply.headers.emplace_back(std::string(name), std::string(value));
  }
  buf_.erase(0, end + 4);

  const bool no_body = head || reply.status == 204 || reply.status == 304 || (reply.status >= 100 && reply.status < 200);
  if (no_body) {
  } else if (chunked) {
    for (;;) {
      std::size_t e;
      while ((e = buf_.find("\r\n")) == std::string::npos) {
        if (buf_.size() > 1024) return Error(Errc::kParse, "bad chunk header");
        UPK_TRY(ReadMore(deadline));
      }
      std::string_view size_text = std::string_view(buf_).substr(0, e);
      size_text = size_text.substr(0, size_text.find(';'));
      std::uint64_t size = 0;
      if (!ParseNumber(Trim(size_text), size, 16)) return Error(Errc::kParse, "bad chunk size");
      if (reply.body.size() + size > options_.max_body_bytes) return Error(Errc::kLimit, "answer body over the limit");
      buf_.erase(0, e + 2);
      while (buf_.size() < size + 2) UPK_TRY(ReadMore(deadline));
      reply.body.append(buf_, 0, size);
      buf_.erase(0, size + 2);
      if (size == 0) break;  // trailers are not used by our servers; the CRLF after 0 was consumed
    }
  } else if (length) {
    if (*length > options_.max_body_bytes) return Error(Errc::kLimit, "answer body over the limit");
    while (buf_.size() < *length) UPK_TRY(ReadMore(deadline));
    reply.body = buf_.substr(0, *length);
    buf_.erase(0, *length);
  } else {
    // Body delimited by the end of the connection.
    close = true;
    for (;;) {
      if (buf_.size() > options_.max_body_bytes) return Error(Errc::kLimit, "answer body over the limit");
      auto more = ReadMore(deadline);
      if (!more.ok()) break;
    }
    reply.body = std::move(buf_);
    buf_.clear();
  }
  if (close) Close();
  return reply;
}

std::string HttpClient::BuildRequest(std::string_view method, std::string_view path, const HeaderList& headers,
                                     std::string_view body) const {
  std::string r;
  r.reserve(256 + body.size());
  r.append(method).append(" ").append(url_.prefix).append(path).append(" HTTP/1.1\r\nHost: ");
  r.append(url_.HostHeader()).append("\r\n");
  for (const auto& [k, v] : headers) r.append(k).append(": ").append(v).append("\r\n");
  if (!body.empty() || method == "POST" || method == "PUT") {
    r.append("Content-Length: ").append(std::to_string(body.size())).append("\r\n");
  }
  r.append("\r\n").append(body);
  return r;
}

Expected<HttpReply> HttpClient::Send(std::string_view method, std::string_view path, const HeaderList& headers,
                                     std::string_view body) {
  return SendRaw(BuildRequest(method, path, headers, body), method == "HEAD");
}

Expected<HttpReply> HttpClient::SendRaw(std::string_view request, bool head) {
  // A kept-alive connection may have been closed by the server while idle; that shows as a
  // failed write or an EOF before any answer byte. Then, and only then, try once more on a new
  // connection: the server cannot have acted on a request it never read.
  for (int attempt = 0; attempt < 2; ++attempt) {
    const bool reused = fd_ >= 0;
    if (!reused) UPK_TRY(Connect());
    auto written = WriteAll(request);
    if (!written.ok()) {
      Close();
      if (reused) continue;
      return written.error();
    }
    if (buf_.empty()) {
      auto first = ReadMore(SteadyClock::now() + options_.timeout);
      if (!first.ok()) {
        Close();
        if (reused && first.error().message().find("closed by the server") != std::string::npos) continue;
        return first.error();
      }
    }
    auto reply = ReadReply(head);
    if (!reply.ok()) Close();
    return reply;
  }
  return Error(Errc::kIo, "connection to " + url_.HostHeader() + " closed twice before an answer");
}

}  // namespace upkeep::fleet_sim
