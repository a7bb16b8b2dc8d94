// A lean HTTP/1.1 client over POSIX sockets and OpenSSL. Chosen over cpprestsdk because its
// asio client reads a response ahead into memory without back-pressure: neither a byte cap nor a
// bandwidth limit would hold on the wire. Here the caller's sink runs between socket reads.
#include "upkeep/agent/http_client.hpp"
#include "upkeep/common/text.hpp"

#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/stat.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <fcntl.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstring>
#include <thread>
#include <vector>

namespace upkeep::agent {

std::optional<std::string> HttpResponse::Header(std::string_view name) const {
  for (const auto& [k, v] : headers) {
    if (k.size() != name.size()) continue;
    bool eq = true;
    for (std::size_t i = 0; i < k.size() && eq; ++i) {
      eq = std::tolower(static_cast<unsigned char>(k[i])) == std::tolower(static_cast<unsigned char>(name[i]));
    }
    if (eq) return v;
  }
  return std::nullopt;
}

namespace {

struct Url {
  bool tls = false;
  std::string host;  // without brackets
  std::string port;
  std::string host_header;
  std::string target;  // path and query
};

Expected<Url> ParseUrl(const std::string& url) {
  Url u;
  std::string_view rest = url;
  if (rest.starts_with("http://")) {
    rest.remove_prefix(7);
  } else if (rest.starts_with("https://")) {
    u.tls = true;
    rest.remove_prefix(8);
  } else {
    return Error(Errc::kInvalidArgument, "URL '" + url + "': only http:// and https:// are supported");
  }
  const std::size_t slash = rest.find_first_of("/?");
  std::string_view authority = rest.substr(0, slash);
  u.target = slash == std::string_view::npos ? "/" : std::string(rest.substr(slash));
  if (u.target[0] == '?') u.target = "/" + u.target;
  if (authority.empty() || authority.find('@') != std::string_view::npos) {
    return Error(Errc::kInvalidArgument, "URL '" + url + "': bad host");
  }
  for (char c : url) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) {
      return Error(Errc::kInvalidArgument, "URL: contains a space or control character");
    }
  }
  u.host_header = std::string(authority);
  std::string_view port;
  if (authority.front() == '[') {
    const std::size_t close = authority.find(']');
    if (close == std::string_view::npos) return Error(Errc::kInvalidArgument, "URL '" + url + "': bad IPv6 host");
    u.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (after.front() != ':') return Error(Errc::kInvalidArgument, "URL '" + url + "': bad host");
      port = after.substr(1);
    }
  } else {
    const std::size_t colon = authority.find(':');
    u.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
  }
  if (u.host.empty()) return Error(Errc::kInvalidArgument, "URL '" + url + "': no host");
  if (port.empty()) {
    u.port = u.tls ? "443" : "80";
  } else {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos || std::stoi(std::string(port)) == 0 ||
        std::stoi(std::string(port)) > 65535) {
      return Error(Errc::kInvalidArgument, "URL '" + url + "': bad port");
    }
    u.port = std::string(port);
  }
  return u;
}

std::string SslErrorText() {
  unsigned long e = ERR_get_error();
  if (e == 0) return "unknown TLS error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// One connection: a socket with per-operation time-outs, optionally wrapped in TLS.
class Connection {
 public:
  Connection(std::string what, std::chrono::milliseconds timeout) : what_(std::move(what)), timeout_(timeout) {}
  ~Connection() {
    if (ssl_ != nullptr) SSL_free(ssl_);
    if (fd_ >= 0) ::close(fd_);
  }
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;

  Status Connect(const Url& url, SSL_CTX* ctx) {
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(url.host.c_str(), url.port.c_str(), &hints, &res);
    if (rc != 0) return Error(Errc::kIo, what_ + ": cannot resolve " + url.host + ": " + gai_strerror(rc));
    std::string last = "no address";
    for (addrinfo* ai = res; ai != nullptr; ai = ai->ai_next) {
      int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, ai->ai_protocol);
      if (fd < 0) {
        last = std::strerror(errno);
        continue;
      }
      int r = ::connect(fd, ai->ai_addr, ai->ai_addrlen);
      if (r != 0 && errno == EINPROGRESS) {
        pollfd p{fd, POLLOUT, 0};
        r = ::poll(&p, 1, static_cast<int>(timeout_.count()));
        if (r == 1) {
          int err = 0;
          socklen_t len = sizeof err;
          ::getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
          r = err == 0 ? 0 : -1;
          errno = err;
        } else {
          if (r == 0) errno = ETIMEDOUT;
          r = -1;
        }
      }
      if (r == 0) {
        fd_ = fd;
        break;
      }
      last = std::strerror(errno);
      ::close(fd);
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) return Error(Errc::kIo, what_ + ": cannot connect to " + url.host_header + ": " + last);
    ::fcntl(fd_, F_SETFL, ::fcntl(fd_, F_GETFL) & ~O_NONBLOCK);
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!url.tls) return OkStatus();

    ssl_ = SSL_new(ctx);
    if (ssl_ == nullptr) return Error(Errc::kInternal, what_ + ": SSL_new: " + SslErrorText());
    in6_addr a6{};
    in_addr a4{};
    const bool is_ip = ::inet_pton(AF_INET, url.host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, url.host.c_str(), &a6) == 1;
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    if (is_ip) {
      if (X509_VERIFY_PARAM_set1_ip_asc(param, url.host.c_str()) != 1) {
        return Error(Errc::kInternal, what_ + ": cannot set the expected IP");
      }
    } else {
      SSL_set_tlsext_host_name(ssl_, url.host.c_str());
      X509_VERIFY_PARAM_set_hostflags(param, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
      if (SSL_set1_host(ssl_, url.host.c_str()) != 1) return Error(Errc::kInternal, what_ + ": cannot set the host name");
    }
    SSL_set_fd(ssl_, fd_);
    ERR_clear_error();
    if (SSL_connect(ssl_) != 1) {
      const long verify = SSL_get_verify_result(ssl_);
      std::string why = verify != X509_V_OK ? std::string("certificate: ") + X509_verify_cert_error_string(verify)
                                           : SslErrorText();
      return Error(Errc::kIo, what_ + ": TLS handshake with " + url.host_header + " failed: " + why);
    }
    return OkStatus();
  }

  // After the request is sent: the peer may need longer to answer than to accept bytes.
  void SetReceiveTimeout(std::chrono::milliseconds t) {
    timeout_ = t;
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  Status WriteAll(std::string_view data) {
    while (!data.empty()) {
      long n;
      if (ssl_ != nullptr) {
        ERR_clear_error();
        n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<std::size_t>(data.size(), 1 << 20)));
        if (n <= 0) return Error(Errc::kIo, what_ + ": send failed: " + IoText());
      } else {
        n = ::send(fd_, data.data(), data.size(), MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR) continue;
        if (n < 0) return Error(Errc::kIo, what_ + ": send failed: " + IoText());
      }
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return OkStatus();
  }

  // Bytes read (0 at end of stream).
  Expected<std::size_t> Read(char* buf, std::size_t cap) {
    for (;;) {
      if (ssl_ != nullptr) {
        ERR_clear_error();
        const int n = SSL_read(ssl_, buf, static_cast<int>(std::min<std::size_t>(cap, 1 << 20)));
        if (n > 0) return static_cast<std::size_t>(n);
        const int err = SSL_get_error(ssl_, n);
        if (err == SSL_ERROR_ZERO_RETURN) return std::size_t{0};
        if (err == SSL_ERROR_SYSCALL && errno == EINTR) continue;
        if (err == SSL_ERROR_SYSCALL && errno == 0) return std::size_t{0};  // peer closed without close_notify
        if (err == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING) {
          ERR_clear_error();
          return std::size_t{0};  // framing (Content-Length) decides whether that was early
        }
        return Error(Errc::kIo, what_ + ": receive failed: " + IoText());
      }
      const ssize_t n = ::recv(fd_, buf, cap, 0);
      if (n >= 0) return static_cast<std::size_t>(n);
      if (errno == EINTR) continue;
      return Error(Errc::kIo, what_ + ": receive failed: " + IoText());
    }
  }

 private:
  std::string IoText() const {
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      return "no progress for " + std::to_string(timeout_.count()) + " ms";
    }
    if (errno != 0) return std::strerror(errno);
    return SslErrorText();
  }

  std::string what_;
  std::chrono::milliseconds timeout_;
  int fd_ = -1;
  SSL* ssl_ = nullptr;
};

// Buffered reader over a Connection.
class Reader {
 public:
  explicit Reader(Connection& c) : c_(c) {}

  // Fills the buffer with at least one more byte; false at end of stream.
  Expected<bool> Fill() {
    if (pos_ > 0 && pos_ == buf_.size()) {
      buf_.clear();
      pos_ = 0;
    }
    char tmp[64 * 1024];
    UPK_TRY_ASSIGN(std::size_t n, c_.Read(tmp, sizeof tmp));
    if (n == 0) return false;
    buf_.append(tmp, n);
    return true;
  }
  std::string_view Available() const { return std::string_view(buf_).substr(pos_); }
  void Consume(std::size_t n) { pos_ += n; }

 private:
  Connection& c_;
  std::string buf_;
  std::size_t pos_ = 0;
};

std::optional<std::uint64_t> ParseUint(std::string_view s, int base = 10) {
  if (s.empty() || s.size() > 18) return std::nullopt;
  std::uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (base == 16 && c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else if (base == 16 && c >= 'A' && c <= 'F') {
      d = c - 'A' + 10;
    } else {
      return std::nullopt;
    }
    v = v * static_cast<std::uint64_t>(base) + static_cast<std::uint64_t>(d);
  }
  return v;
}

// An open body_file; closes on destruction.
class BodyFile {
 public:
  BodyFile() = default;
  ~BodyFile() {
    if (fd_ >= 0) ::close(fd_);
  }
  BodyFile(const BodyFile&) = delete;
  BodyFile& operator=(const BodyFile&) = delete;

  Status Open(const std::filesystem::path& path) {
    path_ = path;
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) {
      const int e = errno;
      return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, "request body " + path.string() + ": cannot open: " + std::strerror(e));
    }
    struct stat st {};
    if (::fstat(fd_, &st) != 0) return Error(Errc::kIo, "request body " + path.string() + ": stat: " + std::strerror(errno));
    if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, "request body " + path.string() + ": not a regular file");
    size_ = static_cast<std::uint64_t>(st.st_size);
    return OkStatus();
  }
  bool open() const { return fd_ >= 0; }
  std::uint64_t size() const { return size_; }

  // Exactly `n` bytes at `offset`; a file that ended early changed underneath.
  Status ReadAt(char* buf, std::size_t n, std::uint64_t offset) {
    std::size_t got = 0;
    while (got < n) {
      const ssize_t r = ::pread(fd_, buf + got, n - got, static_cast<off_t>(offset + got));
      if (r < 0 && errno == EINTR) continue;
      if (r < 0) return Error(Errc::kIo, "request body " + path_.string() + ": read: " + std::strerror(errno));
      if (r == 0) {
        return Error(Errc::kIo, "request body " + path_.string() + ": changed while it was sent: it ended after " +
                                    std::to_string(offset + got) + " of " + std::to_string(size_) + " bytes");
      }
      got += static_cast<std::size_t>(r);
    }
    return OkStatus();
  }

  // After the last byte: the file must not have grown either.
  Status CheckUnchanged() {
    char c;
    ssize_t r;
    do {
      r = ::pread(fd_, &c, 1, static_cast<off_t>(size_));
    } while (r < 0 && errno == EINTR);
    if (r > 0) {
      return Error(Errc::kIo, "request body " + path_.string() + ": changed while it was sent: it grew past " +
                                  std::to_string(size_) + " bytes");
    }
    return OkStatus();
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
  std::uint64_t size_ = 0;
};

// Token bucket for uploads, as the downloader's: `limit` bytes per second, at most one second of
// burst, starting empty so the long-run rate never exceeds the limit.
class UploadThrottle {
 public:
  explicit UploadThrottle(const HttpRequest& request) : request_(request), last_(std::chrono::steady_clock::now()) {}

  std::uint64_t Limit() const {
    return request_.live_bandwidth_limit != nullptr ? request_.live_bandwidth_limit->load()
                                                    : request_.bandwidth_limit_bytes_per_second;
  }

  void Take(std::uint64_t bytes) {
    const std::uint64_t limit = Limit();
    Refill(limit);
    if (limit == 0) return;
    tokens_ -= static_cast<double>(bytes);
    while (tokens_ < 0) {
      const double seconds = std::min(-tokens_ / static_cast<double>(limit), 0.25);
      std::this_thread::sleep_for(std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9) + 1));
      Refill(limit);
    }
  }

 private:
  void Refill(std::uint64_t limit) {
    const auto now = std::chrono::steady_clock::now();
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    if (limit == 0) {
      tokens_ = 0;
      return;
    }
    tokens_ = std::min(tokens_ + elapsed * static_cast<double>(limit), static_cast<double>(limit));
  }

  const HttpRequest& request_;
  std::chrono::steady_clock::time_point last_;
  double tokens_ = 0;
};

constexpr std::size_t kUploadChunk = 1u << 20;

class Client final : public HttpClient {
 public:
  Client(HttpClientOptions options, SSL_CTX* ctx) : options_(std::move(options)), ctx_(ctx) {}
  ~Client() override { SSL_CTX_free(ctx_); }

  Expected<HttpResponse> Send(const HttpRequest& request, const BodySink* sink) override {
    UPK_TRY_ASSIGN(Url url, ParseUrl(request.url));
    const std::string what = request.method + " " + url.host_header + url.target.substr(0, url.target.find('?'));
    if (request.method.empty() || request.method.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string::npos) {
      return Error(Errc::kInvalidArgument, "HTTP method '" + request.method + "' is not an upper-case token");
    }
    BodyFile file;
    if (!request.body_file.empty()) {
      if (!request.body.empty()) {
        return Error(Errc::kInvalidArgument, what + ": both a body and a body file (" + request.body_file.string() + ")");
      }
      UPK_TRY(file.Open(request.body_file));
    }
    std::string head = request.method + " " + url.target + " HTTP/1.1\r\nHost: " + url.host_header +
                       "\r\nUser-Agent: " + options_.user_agent + "\r\nConnection: close\r\n";
    if (file.open()) {
      head += "Content-Length: " + std::to_string(file.size()) + "\r\n";
    } else if (!request.body.empty() || request.method == "POST" || request.method == "PUT") {
      head += "Content-Length: " + std::to_string(request.body.size()) + "\r\n";
    }
    for (const auto& [k, v] : request.headers) {
      if (k.empty() || (k + v).find_first_of("\r\n\0", 0, 3) != std::string::npos || k.find(':') != std::string::npos) {
        return Error(Errc::kInvalidArgument, what + ": header '" + k + "' has a bad name or value");
      }
      head += k + ": " + v + "\r\n";
    }
    head += "\r\n";

    Connection conn(what, options_.timeout);
    UPK_TRY(conn.Connect(url, ctx_));
    // A send error may mean the peer answered early and closed: its answer is worth more.
    Status sent = conn.WriteAll(head);
    if (sent.ok() && !request.body.empty()) sent = conn.WriteAll(request.body);
    if (sent.ok() && file.open()) {
      bool send_failed = false;
      Status streamed = SendFile(conn, file, request, send_failed);
      if (!streamed.ok() && !send_failed) return streamed.error();
      sent = streamed;
    }
    if (sent.ok() && request.response_timeout.count() > 0) conn.SetReceiveTimeout(request.response_timeout);

    Reader reader(conn);
    HttpResponse response;
    // Interim 1xx answers are skipped.
    for (;;) {
      Status head_read = ReadHead(reader, what, response);
      if (!head_read.ok()) return sent.ok() ? head_read.error() : sent.error();
      if (response.status >= 200) break;
    }
    // Success without the whole body delivered would be a lie: only a refusal counts early.
    if (!sent.ok() && response.status < 300) return sent.error();
    const bool stream = sink != nullptr && response.status >= 200 && response.status < 300;
    // With a sink, a non-2xx body only feeds an error message: keep its first 64 KiB, drop the rest.
    const bool error_body = sink != nullptr && !stream;
    const std::uint64_t cap = error_body                    ? kMaxErrorBody
                              : request.max_body_bytes != 0 ? request.max_body_bytes
                                                            : options_.max_body_bytes;
    if (stream && sink->head) UPK_TRY(sink->head(response));
    std::uint64_t received = 0;
    auto deliver = [&](std::string_view chunk) -> Status {
      received += chunk.size();
      if (error_body && received > cap) {
        response.body.append(chunk.substr(0, chunk.size() - static_cast<std::size_t>(received - cap)));
        return Error(Errc::kInternal, kTruncated);
      }
      if (received > cap) {
        return Error(Errc::kLimit, what + ": body is more than the limit of " + std::to_string(cap) + " bytes");
      }
      if (stream) return sink->data ? sink->data(chunk) : OkStatus();
      response.body.append(chunk);
      return OkStatus();
    };
    if (request.method == "HEAD" || response.status == 204 || response.status == 304) return response;
    Status body = ReadBody(reader, what, response, cap, !error_body, deliver);
    // After a failed send the peer's (early) answer is what matters, even if its body was cut.
    if (!body.ok() && !(error_body && body.error().message() == kTruncated) && sent.ok()) return body.error();
    return response;
  }

 private:
  static constexpr std::uint64_t kMaxErrorBody = 64 * 1024;

  // Streams the file; `send_failed` tells a connection error from a file error.
  static Status SendFile(Connection& conn, BodyFile& file, const HttpRequest& request, bool& send_failed) {
    UploadThrottle throttle(request);
    std::vector<char> buf(std::min<std::uint64_t>(kUploadChunk, file.size()));
    std::uint64_t sent = 0;
    while (sent < file.size()) {
      const std::uint64_t limit = throttle.Limit();
      // Under a limit, smaller chunks keep the pace smooth (a quarter second each).
      const std::uint64_t chunk = limit == 0 ? kUploadChunk : std::clamp<std::uint64_t>(limit / 4, 16 * 1024, kUploadChunk);
      const auto n = static_cast<std::size_t>(std::min(chunk, file.size() - sent));
      UPK_TRY(file.ReadAt(buf.data(), n, sent));
      throttle.Take(n);
      Status w = conn.WriteAll(std::string_view(buf.data(), n));
      if (!w.ok()) {
        send_failed = true;
        return w.error();
      }
      sent += n;
      if (request.upload_progress) UPK_TRY(request.upload_progress(sent, file.size()));
    }
    return file.CheckUnchanged();
  }
  static constexpr const char* kTruncated = "error body truncated";

  template <typename Deliver>
  Status ReadBody(Reader& reader, const std::string& what, HttpResponse& response, std::uint64_t cap,
                  bool refuse_long, Deliver& deliver) {
    const auto te = response.Header("Transfer-Encoding");
    const auto cl = response.Header("Content-Length");
    if (te) {
      if (!EqualsIgnoreCase(TrimSpaceTab(*te), "chunked")) return Error(Errc::kIo, what + ": unsupported Transfer-Encoding '" + *te + "'");
      UPK_TRY(ReadChunked(reader, what, deliver));
    } else if (cl) {
      auto length = ParseUint(TrimSpaceTab(*cl));
      if (!length) return Error(Errc::kIo, what + ": bad Content-Length '" + *cl + "'");
      if (*length > cap && refuse_long) {
        return Error(Errc::kLimit, what + ": Content-Length " + std::to_string(*length) + " is more than the limit of " +
                                       std::to_string(cap) + " bytes");
      }
      std::uint64_t left = *length;
      while (left > 0) {
        if (reader.Available().empty()) {
          UPK_TRY_ASSIGN(bool more, reader.Fill());
          if (!more) {
            return Error(Errc::kIo, what + ": connection closed after " + std::to_string(*length - left) + " of " +
                                        std::to_string(*length) + " body bytes");
          }
        }
        std::string_view a = reader.Available();
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(a.size(), left));
        UPK_TRY(deliver(a.substr(0, n)));
        reader.Consume(n);
        left -= n;
      }
    } else {
      for (;;) {
        std::string_view a = reader.Available();
        if (!a.empty()) {
          UPK_TRY(deliver(a));
          reader.Consume(a.size());
        }
        UPK_TRY_ASSIGN(bool more, reader.Fill());
        if (!more) break;
      }
    }
    return OkStatus();
  }

  Status ReadHead(Reader& reader, const std::string& what, HttpResponse& response) {
    std::size_t end;
    for (;;) {
      std::string_view a = reader.Available();
      end = a.find("\r\n\r\n");
      if (end != std::string_view::npos) break;
      if (a.size() > options_.max_head_bytes) {
        return Error(Errc::kLimit, what + ": response head is more than " + std::to_string(options_.max_head_bytes) +
                                       " bytes");
      }
      UPK_TRY_ASSIGN(bool more, reader.Fill());
      if (!more) return Error(Errc::kIo, what + ": connection closed before a complete response head");
    }
    if (end + 4 > options_.max_head_bytes) {
      return Error(Errc::kLimit, what + ": response head is more than " + std::to_string(options_.max_head_bytes) + " bytes");
    }
    std::string head(reader.Available().substr(0, end + 2));
    reader.Consume(end + 4);
    response = HttpResponse{};
    std::size_t pos = head.find("\r\n");
    std::string_view status_line = std::string_view(head).substr(0, pos);
    if (!status_line.starts_with("HTTP/1.") || status_line.size() < 12 || status_line[8] != ' ') {
      return Error(Errc::kIo, what + ": malformed status line");
    }
    auto code = ParseUint(status_line.substr(9, 3));
    if (!code || *code < 100 || *code > 599 || (status_line.size() > 12 && status_line[12] != ' ')) {
      return Error(Errc::kIo, what + ": malformed status line");
    }
    response.status = static_cast<int>(*code);
    pos += 2;
    while (pos < head.size()) {
      const std::size_t eol = head.find("\r\n", pos);
      std::string_view line = std::string_view(head).substr(pos, eol - pos);
      pos = eol + 2;
      const std::size_t colon = line.find(':');
      if (colon == std::string_view::npos || colon == 0) return Error(Errc::kIo, what + ": malformed header line");
      response.headers.emplace_back(std::string(line.substr(0, colon)), std::string(TrimSpaceTab(line.substr(colon + 1))));
      if (response.headers.size() > 200) return Error(Errc::kLimit, what + ": more than 200 response headers");
    }
    return OkStatus();
  }

  template <typename Deliver>
  Status ReadChunked(Reader& reader, const std::string& what, Deliver& deliver) {
    auto read_line = [&](std::string& line) -> Status {
      for (;;) {
        std::string_view a = reader.Available();
        const std::size_t eol = a.find("\r\n");
        if (eol != std::string_view::npos) {
          line = std::string(a.substr(0, eol));
          reader.Consume(eol + 2);
          return OkStatus();
        }
        if (a.size() > 4096) return Error(Errc::kIo, what + ": chunk header line too long");
        UPK_TRY_ASSIGN(bool more, reader.Fill());
        if (!more) return Error(Errc::kIo, what + ": connection closed inside a chunked body");
      }
    };
    std::string line;
    for (;;) {
      UPK_TRY(read_line(line));
      std::string_view size_text = TrimSpaceTab(std::string_view(line).substr(0, line.find(';')));
      auto size = ParseUint(size_text, 16);
      if (!size) return Error(Errc::kIo, what + ": bad chunk size");
      if (*size == 0) {
        do {
          UPK_TRY(read_line(line));
        } while (!line.empty());
        return OkStatus();
      }
      std::uint64_t left = *size;
      while (left > 0) {
        if (reader.Available().empty()) {
          UPK_TRY_ASSIGN(bool more, reader.Fill());
          if (!more) return Error(Errc::kIo, what + ": connection closed inside a chunked body");
        }
        std::string_view a = reader.Available();
        const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(a.size(), left));
        UPK_TRY(deliver(a.substr(0, n)));
        reader.Consume(n);
        left -= n;
      }
      UPK_TRY(read_line(line));
      if (!line.empty()) return Error(Errc::kIo, what + ": malformed chunk end");
    }
  }

  HttpClientOptions options_;
  SSL_CTX* ctx_;
};

}  // namespace

Expected<std::unique_ptr<HttpClient>> MakeHttpClient(HttpClientOptions options) {
  std::signal(SIGPIPE, SIG_IGN);
  if (options.timeout.count() <= 0) return Error(Errc::kInvalidArgument, "HTTP client: timeout must be positive");
  SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
  if (ctx == nullptr) return Error(Errc::kInternal, "SSL_CTX_new: " + SslErrorText());
  SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
  if (!options.ca_file.empty()) {
    if (SSL_CTX_load_verify_locations(ctx, options.ca_file.c_str(), nullptr) != 1) {
      SSL_CTX_free(ctx);
      ERR_clear_error();
      return Error(Errc::kInvalidArgument, "CA file " + options.ca_file.string() + ": cannot load PEM certificates");
    }
  } else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
    SSL_CTX_free(ctx);
    return Error(Errc::kInternal, "cannot load the system trust store: " + SslErrorText());
  }
  return std::unique_ptr<HttpClient>(std::make_unique<Client>(std::move(options), ctx));
}

}  // namespace upkeep::agent
