// The server: acceptors, one io_context per I/O thread, connections as a small state machine.
//
// Why this shape: a connection only ever runs on its own single-threaded io_context, so its
// state needs no locks and no strands; other threads (the worker pool, async handlers) reach it
// only through asio::post. Time-outs are one deadline field per connection checked by a sweep
// timer per I/O thread, which costs nothing per request (per-connection asio timers cost a
// timerfd_settime syscall on most requests).
#include <fcntl.h>
#include <openssl/ssl.h>
#include <sys/sendfile.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <charconv>
#include <cerrno>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <system_error>
#include <thread>
#include <type_traits>
#include <unordered_map>
#include <unordered_set>

#include <asio.hpp>
#include <asio/ssl.hpp>

#include "upkeep/common/hash.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::net {

// The server fills in what routing and the connection know; Request keeps these private.
struct RequestAccess {
  static std::string& body(Request& r) { return r.body_; }
  static std::optional<Request::BodyFile>& body_file(Request& r) { return r.body_file_; }
  static std::vector<std::pair<std::string, std::string>>& params(Request& r) { return r.params_; }
  static std::string& suffix(Request& r) { return r.path_suffix_; }
  static std::string& remote(Request& r) { return r.remote_; }
};

namespace {

using tcp = asio::ip::tcp;
using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;

constexpr std::size_t kInlineBodyBytes = 16 * 1024;   // string bodies copied behind the head: one write
constexpr std::size_t kInlineFileBytes = 64 * 1024;    // file ranges read into memory instead of sendfile
constexpr std::size_t kTlsFileChunk = 256 * 1024;  // also the read buffer of body_to_file uploads
constexpr std::uint64_t kSendfileTurn = 8 * 1024 * 1024;  // then yield to other connections
constexpr std::size_t kMaxLingerBytes = 1024 * 1024;
constexpr int kStatusSlots = 900;  // statuses 100..999

int MethodIndex(Method m) { return static_cast<int>(m); }

// Date header text, refreshed once per second per thread.
std::string_view CachedDate() {
  thread_local std::time_t cached_second = -1;
  thread_local std::string text;
  std::time_t now = std::time(nullptr);
  if (now != cached_second) {
    cached_second = now;
    text = FormatHttpDate(now);
  }
  return text;
}

std::string FormatEndpoint(const tcp::endpoint& ep) {
  std::string addr = ep.address().to_string();
  if (ep.address().is_v6()) addr = "[" + addr + "]";
  return addr + ":" + std::to_string(ep.port());
}

bool IsTokenString(std::string_view s) {
  if (s.empty()) return false;
  for (char c : s) {
    auto u = static_cast<unsigned char>(c);
    if (u <= 0x20 || u >= 0x7f || c == ':' || c == '(' || c == ')' || c == ',' || c == ';' || c == '"' ||
        c == '/' || c == '[' || c == ']' || c == '{' || c == '}' || c == '=' || c == '\\' || c == '<' ||
        c == '>' || c == '?' || c == '@')
      return false;
  }
  return true;
}

bool IsSafeValue(std::string_view s) {
  for (char c : s) {
    if (c == '\r' || c == '\n' || c == '\0') return false;
  }
  return true;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

std::string_view StripWeak(std::string_view tag) {
  if (tag.size() >= 2 && tag[0] == 'W' && tag[1] == '/') tag.remove_prefix(2);
  return tag;
}

// If-None-Match uses the weak comparison: W/"x" matches "x".
bool EtagListMatches(std::string_view list, std::string_view etag) {
  if (Trim(list) == "*") return true;
  while (!list.empty()) {
    std::size_t comma = list.find(',');
    if (StripWeak(Trim(list.substr(0, comma))) == StripWeak(etag)) return true;
    if (comma == std::string_view::npos) break;
    list.remove_prefix(comma + 1);
  }
  return false;
}

// If-Range uses the strong comparison for entity tags, exact match for dates.
bool IfRangeMatches(std::string_view value, const OpenFile& file) {
  value = Trim(value);
  if (value.size() >= 2 && value[0] == 'W' && value[1] == '/') return false;
  if (!value.empty() && value.front() == '"') return value == file.etag();
  return value == file.last_modified();
}

struct Live {
  std::atomic<std::int64_t> open_connections{0};
  std::atomic<std::int64_t> in_flight{0};
};

struct Route {
  Method method = Method::kGet;
  std::string pattern;
  Handler handler;
  AsyncHandler async_handler;
  std::size_t max_body = 0;
  bool use_pool = false;
  std::optional<std::filesystem::path> body_to_file;
  std::function<std::optional<Response>(const Request&)> precheck;
  bool builtin = false;  // /healthz, /metrics: outside the in-flight limit
  Histogram* latency = nullptr;
  std::unique_ptr<std::atomic<Counter*>[]> by_status;
};

struct PathEntry {
  std::string pattern;
  std::vector<std::string> segments;  // pattern routes
  std::string prefix;                 // prefix routes, with the trailing '/'
  std::array<Route*, kMethodCount> by_method{};
};

struct IoThread {
  asio::io_context ctx{1};
  std::optional<asio::executor_work_guard<asio::io_context::executor_type>> guard;
  std::thread thread;
  asio::steady_timer sweep{ctx};
  std::unordered_set<class ConnectionBase*> conns;  // touched only on this thread
  // After the server stopped, late results (a Responder sent after Stop) are dropped instead of
  // queued on a context nobody runs, where they would keep the connection and the server alive.
  std::mutex post_mu;
  bool dead = false;

  template <class F>
  void PostFromOutside(F&& f) {
    std::lock_guard lock(post_mu);
    if (!dead) asio::post(ctx, std::forward<F>(f));
  }
};

class ConnectionBase : public std::enable_shared_from_this<ConnectionBase> {
 public:
  explicit ConnectionBase(IoThread& io) : io_(io) {}
  virtual ~ConnectionBase() = default;
  virtual void OnStopping() = 0;
  virtual void Close() = 0;
  virtual void OnDeadline() = 0;
  virtual void Complete(Response response, std::uint64_t generation) = 0;

  IoThread& io_;
  TimePoint deadline_ = TimePoint::max();
};

class Sink final : public detail::ResponseSink {
 public:
  Sink(std::shared_ptr<ConnectionBase> conn, std::uint64_t generation)
      : conn_(std::move(conn)), generation_(generation) {}
  void Deliver(Response response) override {
    auto conn = conn_;
    conn->io_.PostFromOutside([conn, g = generation_, r = std::move(response)]() mutable {
      conn->Complete(std::move(r), g);
    });
  }

 private:
  std::shared_ptr<ConnectionBase> conn_;
  std::uint64_t generation_;
};

}  // namespace

Responder& Responder::operator=(Responder&& other) noexcept {
  if (this != &other) {
    if (sink_) Send(Response::JsonError(500, "internal", "handler dropped the request"));
    sink_ = std::move(other.sink_);
  }
  return *this;
}

Responder::~Responder() {
  if (sink_) Send(Response::JsonError(500, "internal", "handler dropped the request"));
}

void Responder::Send(Response response) {
  if (!sink_) return;
  auto sink = std::move(sink_);
  sink_.reset();
  sink->Deliver(std::move(response));
}

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  explicit Impl(ServerOptions o);
  ~Impl();

  Status AddRoute(Method method, std::string pattern, Handler handler, AsyncHandler async, RouteOptions options,
                  bool builtin);
  Route* Match(Request& req, std::uint32_t* allowed) const;
  Counter& StatusCounter(Route& route, int status);
  void Accept(std::size_t index);
  void Sweep(IoThread& t);
  void DoStop(std::chrono::milliseconds grace);

  ServerOptions opt;
  std::shared_ptr<MetricsRegistry> registry;
  std::shared_ptr<Live> live = std::make_shared<Live>();
  std::vector<std::unique_ptr<Route>> routes;
  std::unordered_map<std::string, PathEntry> exact;
  std::vector<PathEntry> patterns;
  std::vector<PathEntry> prefixes;
  Route unmatched;
  Counter* rejected_connections = nullptr;
  Counter* overload_responses = nullptr;
  Counter* timeouts = nullptr;
  std::chrono::milliseconds tick{100};

  std::vector<std::unique_ptr<IoThread>> threads;
  std::vector<std::unique_ptr<tcp::acceptor>> acceptors;
  std::vector<bool> acceptor_tls;
  std::vector<std::uint16_t> bound_ports;
  std::unique_ptr<asio::ssl::context> ssl;
  std::unique_ptr<asio::thread_pool> pool;
  std::unique_ptr<asio::signal_set> signals;
  std::atomic<bool> stopping{false};
  std::atomic<unsigned> next_thread{0};

  std::mutex mu;
  std::condition_variable cv;
  bool started = false, stop_requested = false, stopped = false;
  std::thread stopper;
};

namespace {

template <bool kTls>
class Connection final : public ConnectionBase {
  using Stream = std::conditional_t<kTls, asio::ssl::stream<tcp::socket>, tcp::socket>;
  enum class State { kHandshake, kIdle, kHead, kBody, kHandling, kWriting, kLinger, kClosed };

 public:
  Connection(std::shared_ptr<Server::Impl> impl, IoThread& io, tcp::socket socket, bool counted)
      : ConnectionBase(io), impl_(std::move(impl)), stream_(MakeStream(std::move(socket), *impl_)), counted_(counted) {}

  ~Connection() override {
    // Only reachable without Close() if a reference outlived the I/O thread (a late Responder).
    if (state_ != State::kClosed) {
      io_.conns.erase(this);
      if (counted_) impl_->live->open_connections.fetch_sub(1, std::memory_order_relaxed);
    }
    // Nobody else can use the descriptor now (a pending fsync held a reference to us).
    upload_syncing_ = false;
    DiscardUpload();
  }

  void Start() {
    io_.conns.insert(this);
    asio::error_code ec;
    tcp::endpoint peer = Sock().remote_endpoint(ec);
    if (!ec) remote_ = FormatEndpoint(peer);
    Sock().set_option(tcp::no_delay(true), ec);
    buf_.resize(4096);
    if constexpr (kTls) {
      state_ = State::kHandshake;
      deadline_ = SteadyClock::now() + impl_->opt.header_timeout;
      stream_.async_handshake(asio::ssl::stream_base::server, [self = Self()](const asio::error_code& e) {
        if (self->state_ == State::kClosed) return;
        if (e) return self->Close();
        self->BeginRequest();
      });
    } else {
      BeginRequest();
    }
  }

  // Over the connection limit: a canned 503 and a lingering close, nothing parsed.
  void StartReject() {
    io_.conns.insert(this);
    buf_.resize(4096);
    state_ = State::kWriting;
    deadline_ = SteadyClock::now() + impl_->opt.send_timeout;
    std::string body = R"({"error":{"code":"overloaded","message":"too many connections; retry later"}})";
    out_ = "HTTP/1.1 503 Service Unavailable\r\nDate: " + std::string(CachedDate()) +
           "\r\nRetry-After: " + std::to_string(impl_->opt.retry_after_seconds) +
           "\r\nContent-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) +
           "\r\nConnection: close\r\n\r\n" + body;
    asio::async_write(stream_, asio::buffer(out_), [self = Self()](const asio::error_code& e, std::size_t) {
      if (self->state_ == State::kClosed) return;
      if (e) return self->Close();
      self->LingerClose();
    });
  }

  void OnStopping() override {
    if (state_ == State::kIdle || state_ == State::kHandshake) Close();
    else close_after_ = true;
  }

  void OnDeadline() override {
    if (state_ == State::kClosed) return;
    if (state_ != State::kLinger) impl_->timeouts->Inc();
    if (state_ == State::kWriting) Record();
    Close();
  }

  void Close() override {
    if (state_ == State::kClosed) return;
    state_ = State::kClosed;
    // A partial upload goes now; a complete one stays while its handler may still use it.
    if (!handler_running_) DiscardUpload();
    asio::error_code ec;
    Sock().close(ec);
    io_.conns.erase(this);
    if (counted_) impl_->live->open_connections.fetch_sub(1, std::memory_order_relaxed);
  }

  void Complete(Response response, std::uint64_t generation) override {
    if (generation != generation_) return;
    handler_running_ = false;
    DiscardUpload();  // answered: whatever the handler left at body_file().path goes
    if (holds_in_flight_) {
      holds_in_flight_ = false;
      impl_->live->in_flight.fetch_sub(1, std::memory_order_relaxed);
    }
    if (state_ != State::kHandling) return;  // closed while the handler ran
    WriteResponse(std::move(response));
  }

 private:
  static Stream MakeStream(tcp::socket socket, Server::Impl& impl) {
    if constexpr (kTls) return Stream(std::move(socket), *impl.ssl);
    else return socket;
  }

  std::shared_ptr<Connection> Self() { return std::static_pointer_cast<Connection>(shared_from_this()); }

  tcp::socket& Sock() {
    if constexpr (kTls) return stream_.next_layer();
    else return stream_;
  }

  // --- reading a request -------------------------------------------------------------------

  void BeginRequest() {
    if (state_ == State::kClosed) return;
    route_ = nullptr;
    close_after_ = false;
    head_only_ = false;
    recorded_ = false;
    status_ = 0;
    bytes_sent_ = 0;
    resp_ = Response();
    if (begin_ > 0) {
      std::memmove(buf_.data(), buf_.data() + begin_, end_ - begin_);
      end_ -= begin_;
      begin_ = 0;
    }
    scanned_ = 0;
    if (impl_->stopping.load(std::memory_order_relaxed) && end_ == 0) return Close();
    if (buf_.size() > 64 * 1024 && end_ <= 4096) buf_.resize(4096), buf_.shrink_to_fit();
    TimePoint now = SteadyClock::now();
    if (end_ > 0) {  // a pipelined request is already here
      state_ = State::kHead;
      start_ = now;
      deadline_ = now + impl_->opt.header_timeout;
      return OnHeadBytes();
    }
    state_ = State::kIdle;
    deadline_ = now + (requests_ == 0 ? impl_->opt.header_timeout : impl_->opt.idle_timeout);
    ReadHead();
  }

  void ReadHead() {
    std::size_t want = impl_->opt.limits.max_head_bytes + 1;  // one more byte shows the limit was passed
    if (buf_.size() - end_ < 1024 && buf_.size() < want) {
      buf_.resize(std::min(want, std::max<std::size_t>(buf_.size() * 2, 4096)));
    }
    stream_.async_read_some(asio::buffer(buf_.data() + end_, buf_.size() - end_),
                            [self = Self()](const asio::error_code& ec, std::size_t n) { self->OnRead(ec, n); });
  }

  void OnRead(const asio::error_code& ec, std::size_t n) {
    if (state_ == State::kClosed) return;
    if (ec) return Close();
    end_ += n;
    if (state_ == State::kIdle) {
      state_ = State::kHead;
      start_ = SteadyClock::now();
      deadline_ = start_ + impl_->opt.header_timeout;
    }
    OnHeadBytes();
  }

  void OnHeadBytes() {
    std::string_view data(buf_.data() + begin_, end_ - begin_);
    HeadResult r = ParseRequestHead(data, impl_->opt.limits, req_, scanned_);
    scanned_ = data.size();
    switch (r.kind) {
      case HeadResult::Kind::kIncomplete:
        return ReadHead();
      case HeadResult::Kind::kError:
        return SendError(r.status, ErrorCode(r.status), r.message, true);
      case HeadResult::Kind::kComplete:
        begin_ += r.head_bytes;
        return OnHead();
    }
  }

  static std::string_view ErrorCode(int status) {
    switch (status) {
      case 400: return "bad_request";
      case 404: return "not_found";
      case 405: return "method_not_allowed";
      case 411: return "length_required";
      case 413: return "body_too_large";
      case 417: return "expectation_failed";
      case 431: return "header_too_large";
      case 501: return "not_implemented";
      case 503: return "overloaded";
      case 505: return "version_not_supported";
      case 507: return "insufficient_storage";
      default: return "internal";
    }
  }

  void OnHead() {
    head_only_ = req_.method() == Method::kHead;
    RequestAccess::remote(req_) = remote_;
    if (!req_.keep_alive()) close_after_ = true;
    allowed_ = 0;
    route_ = impl_->Match(req_, &allowed_);
    std::uint64_t max_body = route_ ? route_->max_body : impl_->opt.default_max_body;
    std::uint64_t length = req_.content_length();
    if (length > max_body) {
      return SendError(413, "body_too_large",
                       "request body of " + std::to_string(length) + " bytes exceeds the limit of " +
                           std::to_string(max_body),
                       true);
    }
    bool to_file = route_ && route_->body_to_file;
    if (to_file && !req_.has_content_length()) {
      // Without Content-Length there is no body by HTTP framing; whatever follows can't be trusted
      // to be a next request, so close.
      return SendError(411, "length_required", "this route needs a Content-Length", true);
    }
    if (route_ && route_->precheck) {
      std::optional<Response> early;
      try {
        early = route_->precheck(req_);
      } catch (...) {
        early = Response::JsonError(500, "internal", "precheck failed");
      }
      if (early) {
        // The body stays unread: the connection can't be reused unless there is none.
        if (length > 0) close_after_ = true;
        state_ = State::kHandling;
        return WriteResponse(std::move(*early));
      }
    }
    if (to_file) return BeginUpload();
    if (length == 0) return Dispatch();
    std::string& body = RequestAccess::body(req_);
    body.resize(length);
    std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(end_ - begin_, length));
    std::memcpy(body.data(), buf_.data() + begin_, have);
    begin_ += have;
    body_read_ = have;
    if (body_read_ == length) return Dispatch();
    state_ = State::kBody;
    deadline_ = SteadyClock::now() + impl_->opt.body_timeout;
    if (req_.expects_continue() && have == 0) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = Self()](const asio::error_code& ec, std::size_t) {
                          if (self->state_ == State::kClosed) return;
                          if (ec) return self->Close();
                          self->ReadBody();
                        });
      return;
    }
    ReadBody();
  }

  void ReadBody() {
    std::string& body = RequestAccess::body(req_);
    stream_.async_read_some(asio::buffer(body.data() + body_read_, body.size() - body_read_),
                            [self = Self()](const asio::error_code& ec, std::size_t n) {
                              if (self->state_ == State::kClosed) return;
                              if (ec) return self->Close();
                              self->body_read_ += n;
                              if (self->body_read_ == RequestAccess::body(self->req_).size()) return self->Dispatch();
                              self->ReadBody();
                            });
  }

  // --- streaming a body to a file (RouteOptions::body_to_file) -------------------------------

  void BeginUpload() {
    // mkostemp: O_EXCL, mode 0600, a random name, so nothing can pre-create or guess the file.
    std::string name = (*route_->body_to_file / ".upload-XXXXXX").string();
    int fd = ::mkostemp(name.data(), O_CLOEXEC);
    if (fd < 0) return UploadFailed(errno, "creating the file");
    upload_fd_ = fd;
    upload_path_ = std::move(name);
    upload_written_ = 0;
    upload_hash_ = std::make_unique<Hasher>(HashAlgorithm::kSha256);
    std::uint64_t length = req_.content_length();
    std::size_t have = static_cast<std::size_t>(std::min<std::uint64_t>(end_ - begin_, length));
    if (have > 0) {
      if (!WriteUpload(buf_.data() + begin_, have)) return;
      begin_ += have;
    }
    state_ = State::kBody;
    deadline_ = SteadyClock::now() + impl_->opt.body_timeout;
    if (upload_written_ == length) return SyncUpload();
    if (req_.expects_continue() && have == 0) {
      static constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
      asio::async_write(stream_, asio::buffer(kContinue.data(), kContinue.size()),
                        [self = Self()](const asio::error_code& ec, std::size_t) {
                          if (self->state_ == State::kClosed) return;
                          if (ec) return self->Close();
                          self->ReadUpload();
                        });
      return;
    }
    ReadUpload();
  }

  void ReadUpload() {
    if (!file_buf_) file_buf_ = std::make_unique<char[]>(kTlsFileChunk);
    std::size_t want = static_cast<std::size_t>(
        std::min<std::uint64_t>(req_.content_length() - upload_written_, kTlsFileChunk));
    stream_.async_read_some(asio::buffer(file_buf_.get(), want), [self = Self()](const asio::error_code& ec,
                                                                                 std::size_t n) {
      if (self->state_ == State::kClosed) return;
      if (ec) return self->Close();  // the client went away mid-body: Close removes the file
      if (!self->WriteUpload(self->file_buf_.get(), n)) return;
      // A stall limit rather than a total: a multi-GiB body may rightly take minutes.
      self->deadline_ = SteadyClock::now() + self->impl_->opt.body_timeout;
      if (self->upload_written_ == self->req_.content_length()) return self->SyncUpload();
      self->ReadUpload();
    });
  }

  bool WriteUpload(const char* data, std::size_t n) {
    upload_hash_->Update(std::string_view(data, n));
    std::size_t done = 0;
    while (done < n) {
      ssize_t w = ::write(upload_fd_, data + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w <= 0) {
        UploadFailed(w < 0 ? errno : EIO, "writing the file");
        return false;
      }
      done += static_cast<std::size_t>(w);
    }
    upload_written_ += n;
    return true;
  }

  // fsync on the worker pool: flushing gigabytes of dirty pages can take seconds.
  void SyncUpload() {
    deadline_ = TimePoint::max();  // the client has sent everything; the wait is ours
    upload_syncing_ = true;
    asio::post(*impl_->pool, [self = Self(), fd = upload_fd_] {
      int err = ::fsync(fd) == 0 ? 0 : errno;
      self->io_.PostFromOutside([self, err] { self->OnUploadSynced(err); });
    });
  }

  void OnUploadSynced(int err) {
    upload_syncing_ = false;
    if (state_ == State::kClosed) return DiscardUpload();
    if (err != 0) return UploadFailed(err, "syncing the file");
    ::close(upload_fd_);
    upload_fd_ = -1;
    file_buf_.reset();  // an idle keep-alive connection shouldn't hold 256 KiB
    RequestAccess::body_file(req_) = Request::BodyFile{upload_path_, upload_written_, upload_hash_->FinishHex()};
    Dispatch();
  }

  void UploadFailed(int err, const char* what) {
    DiscardUpload();
    if (err == ENOSPC || err == EDQUOT) {
      return SendError(507, "insufficient_storage",
                       std::string("no space left to store the request body (") + what + ")", true);
    }
    // The message names the step and errno, never the server's directory.
    SendError(500, "internal",
              std::string("could not store the request body: ") + what + ": " +
                  std::error_code(err, std::generic_category()).message(),
              true);
  }

  // Removes the upload's file (if still at its temporary path) and closes its descriptor unless
  // an fsync on the pool still uses it (then OnUploadSynced or the destructor closes it).
  void DiscardUpload() {
    if (upload_fd_ >= 0 && !upload_syncing_) {
      ::close(upload_fd_);
      upload_fd_ = -1;
    }
    if (!upload_path_.empty()) {
      ::unlink(upload_path_.c_str());  // ENOENT when the handler renamed it away: fine
      upload_path_.clear();
    }
  }

  // --- handling ----------------------------------------------------------------------------

  void Dispatch() {
    state_ = State::kHandling;
    deadline_ = TimePoint::max();
    if (!route_) {
      if (allowed_ != 0) {
        std::string allow;
        for (int i = 0; i < kMethodCount; ++i) {
          if (allowed_ & (1u << i)) {
            if (!allow.empty()) allow += ", ";
            allow += MethodName(static_cast<Method>(i));
          }
        }
        Response r = Response::JsonError(405, "method_not_allowed",
                                         std::string(req_.method_name()) + " not allowed on " + req_.path());
        r.headers.emplace_back("Allow", std::move(allow));
        return WriteResponse(std::move(r));
      }
      return WriteResponse(Response::JsonError(404, "not_found", "no route for " + req_.path()));
    }
    if (!route_->builtin) {
      auto previous = impl_->live->in_flight.fetch_add(1, std::memory_order_relaxed);
      if (previous >= static_cast<std::int64_t>(impl_->opt.max_in_flight)) {
        impl_->live->in_flight.fetch_sub(1, std::memory_order_relaxed);
        impl_->overload_responses->Inc();
        return SendError(503, "overloaded", "server busy; retry later", false);
      }
      holds_in_flight_ = true;
    }
    std::uint64_t generation = ++generation_;
    handler_running_ = true;
    Route* route = route_;
    if (route->async_handler) {
      try {
        route->async_handler(req_, Responder(std::make_shared<Sink>(shared_from_this(), generation)));
      } catch (...) {
        // The Responder, destroyed while unwinding, has already answered 500.
      }
      return;
    }
    if (route->use_pool && impl_->pool) {
      asio::post(*impl_->pool, [self = Self(), route, generation] {
        Response r = Invoke(*route, self->req_);
        self->io_.PostFromOutside([self, generation, r = std::move(r)]() mutable {
          self->Complete(std::move(r), generation);
        });
      });
      return;
    }
    Complete(Invoke(*route, req_), generation);
  }

  static Response Invoke(const Route& route, const Request& req) {
    try {
      return route.handler(req);
    } catch (...) {
      return Response::JsonError(500, "internal", "handler failed");
    }
  }

  void SendError(int status, std::string_view code, const std::string& message, bool close) {
    if (close) close_after_ = true;
    Response r = Response::JsonError(status, code, message);
    if (status == 503) r.headers.emplace_back("Retry-After", std::to_string(impl_->opt.retry_after_seconds));
    state_ = State::kHandling;
    WriteResponse(std::move(r));
  }

  // --- writing the response ----------------------------------------------------------------

  void ApplyFileConditionals() {
    const OpenFile& f = *resp_.file;
    if (!resp_.Header("ETag")) resp_.headers.emplace_back("ETag", f.etag());
    if (!resp_.Header("Last-Modified")) resp_.headers.emplace_back("Last-Modified", f.last_modified());
    resp_.headers.emplace_back("Accept-Ranges", "bytes");
    if (req_.method() != Method::kGet && req_.method() != Method::kHead) return;
    if (auto inm = req_.Header("If-None-Match")) {
      if (EtagListMatches(*inm, f.etag())) {
        status_ = 304;
        resp_.file.reset();
      }
      return;
    }
    auto range = req_.Header("Range");
    if (!range) return;
    if (auto if_range = req_.Header("If-Range"); if_range && !IfRangeMatches(*if_range, f)) return;
    RangeResult rr = ParseByteRange(*range, f.size());
    if (rr.kind == RangeResult::Kind::kSatisfiable) {
      status_ = 206;
      file_off_ = rr.range.first;
      file_end_ = rr.range.last + 1;
      resp_.headers.emplace_back("Content-Range", "bytes " + std::to_string(rr.range.first) + "-" +
                                                      std::to_string(rr.range.last) + "/" + std::to_string(f.size()));
    } else if (rr.kind == RangeResult::Kind::kUnsatisfiable) {
      status_ = 416;
      resp_.headers.emplace_back("Content-Range", "bytes */" + std::to_string(f.size()));
      resp_.file.reset();
      resp_.body.clear();
    }
  }

  void WriteResponse(Response response) {
    DiscardUpload();  // no handler runs or ran past this point: an upload file is no longer needed
    resp_ = std::move(response);
    state_ = State::kWriting;
    deadline_ = SteadyClock::now() + impl_->opt.send_timeout;
    if (impl_->stopping.load(std::memory_order_relaxed)) close_after_ = true;
    bool valid = resp_.status >= 200 && resp_.status <= 999;
    for (const auto& [name, value] : resp_.headers) valid = valid && IsTokenString(name) && IsSafeValue(value);
    if (!valid) resp_ = Response::JsonError(500, "internal", "handler produced an invalid response");
    status_ = resp_.status;
    file_off_ = file_end_ = 0;
    if (resp_.file) {
      file_end_ = resp_.file->size();
      if (status_ == 200) ApplyFileConditionals();
    }
    bool no_body = status_ == 204 || status_ == 304;
    std::uint64_t body_len = resp_.file ? file_end_ - file_off_ : resp_.body.size();

    out_.clear();
    out_ += "HTTP/1.1 ";
    out_ += std::to_string(status_);
    out_ += ' ';
    out_ += StatusReason(status_);
    out_ += "\r\nDate: ";
    out_ += CachedDate();
    out_ += "\r\n";
    for (const auto& [name, value] : resp_.headers) {
      if (EqualsIgnoreCase(name, "content-length") || EqualsIgnoreCase(name, "date") ||
          EqualsIgnoreCase(name, "connection") || EqualsIgnoreCase(name, "transfer-encoding"))
        continue;
      out_ += name;
      out_ += ": ";
      out_ += value;
      out_ += "\r\n";
    }
    if (!no_body) {
      out_ += "Content-Length: ";
      out_ += std::to_string(body_len);
      out_ += "\r\n";
    }
    if (close_after_) out_ += "Connection: close\r\n";
    else if (req_.version_minor() == 0) out_ += "Connection: keep-alive\r\n";
    out_ += "\r\n";
    if (no_body || head_only_) body_len = 0;

    file_pending_ = false;
    if (resp_.file && body_len > 0) {
      if (body_len <= kInlineFileBytes) {
        if (!AppendFileRange()) {
          Record();
          return Close();
        }
      } else {
        file_pending_ = true;
      }
      return WriteOut(asio::buffer(out_));
    }
    if (body_len == 0) return WriteOut(asio::buffer(out_));
    if (resp_.body.size() <= kInlineBodyBytes) {
      out_ += resp_.body;
      return WriteOut(asio::buffer(out_));
    }
    WriteOut(std::array<asio::const_buffer, 2>{asio::buffer(out_), asio::buffer(resp_.body)});
  }

  bool AppendFileRange() {
    std::size_t at = out_.size();
    std::size_t want = static_cast<std::size_t>(file_end_ - file_off_);
    out_.resize(at + want);
    std::size_t got = 0;
    while (got < want) {
      ssize_t n = ::pread(resp_.file->fd(), out_.data() + at + got, want - got, static_cast<off_t>(file_off_ + got));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) return false;  // read error or the file shrank under us
      got += static_cast<std::size_t>(n);
    }
    return true;
  }

  template <class Buffers>
  void WriteOut(const Buffers& buffers) {
    asio::async_write(stream_, buffers, [self = Self()](const asio::error_code& ec, std::size_t n) {
      if (self->state_ == State::kClosed) return;
      self->bytes_sent_ += n;
      if (ec) {
        self->Record();
        return self->Close();
      }
      if (self->file_pending_) {
        self->file_pending_ = false;
        if constexpr (kTls) return self->SendFileBuffered();
        else return self->SendFile();
      }
      self->Finish();
    });
  }

  // Plain TCP: the kernel copies file pages straight to the socket.
  void SendFile() {
    if (state_ == State::kClosed) return;
    int sock = Sock().native_handle();
    if (!non_blocking_) {
      asio::error_code ec;
      Sock().native_non_blocking(true, ec);
      if (ec) {
        Record();
        return Close();
      }
      non_blocking_ = true;
    }
    std::uint64_t this_turn = 0;
    while (file_off_ < file_end_) {
      off_t off = static_cast<off_t>(file_off_);
      std::size_t count = static_cast<std::size_t>(std::min<std::uint64_t>(file_end_ - file_off_, 1u << 30));
      ssize_t n = ::sendfile(sock, resp_.file->fd(), &off, count);
      if (n > 0) {
        file_off_ += static_cast<std::uint64_t>(n);
        bytes_sent_ += static_cast<std::uint64_t>(n);
        this_turn += static_cast<std::uint64_t>(n);
        if (this_turn >= kSendfileTurn && file_off_ < file_end_) {
          deadline_ = SteadyClock::now() + impl_->opt.send_timeout;
          asio::post(io_.ctx, [self = Self()] { self->SendFile(); });
          return;
        }
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        if (this_turn > 0) deadline_ = SteadyClock::now() + impl_->opt.send_timeout;
        Sock().async_wait(tcp::socket::wait_write, [self = Self()](const asio::error_code& ec) {
          if (self->state_ == State::kClosed) return;
          if (ec) {
            self->Record();
            return self->Close();
          }
          self->SendFile();
        });
        return;
      }
      Record();  // a send error, or the file shrank: the promised length can't be kept
      return Close();
    }
    Finish();
  }

  // TLS: read into a buffer and encrypt.
  void SendFileBuffered() {
    if (state_ == State::kClosed) return;
    if (!file_buf_) file_buf_ = std::make_unique<char[]>(kTlsFileChunk);
    std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(file_end_ - file_off_, kTlsFileChunk));
    ssize_t n;
    do {
      n = ::pread(resp_.file->fd(), file_buf_.get(), want, static_cast<off_t>(file_off_));
    } while (n < 0 && errno == EINTR);
    if (n <= 0) {
      Record();
      return Close();
    }
    asio::async_write(stream_, asio::buffer(file_buf_.get(), static_cast<std::size_t>(n)),
                      [self = Self()](const asio::error_code& ec, std::size_t written) {
                        if (self->state_ == State::kClosed) return;
                        self->bytes_sent_ += written;
                        if (ec) {
                          self->Record();
                          return self->Close();
                        }
                        self->file_off_ += written;
                        self->deadline_ = SteadyClock::now() + self->impl_->opt.send_timeout;
                        if (self->file_off_ < self->file_end_) return self->SendFileBuffered();
                        self->Finish();
                      });
  }

  void Finish() {
    Record();
    ++requests_;
    resp_.file.reset();  // don't hold the descriptor while idle
    if (out_.capacity() > 32 * 1024) std::string().swap(out_);  // idle connections stay small
    if (close_after_) return LingerClose();
    BeginRequest();
  }

  void Record() {
    if (recorded_) return;
    recorded_ = true;
    Route& route = route_ ? *route_ : impl_->unmatched;
    auto duration = SteadyClock::now() - start_;
    impl_->StatusCounter(route, status_).Inc();
    if (route.latency) route.latency->Observe(std::chrono::duration<double>(duration).count());
    if (impl_->opt.access_log) {
      AccessLogEntry e;
      e.method = req_.method_name();
      e.path = req_.path();
      e.route = route.pattern;
      e.remote = remote_;
      e.status = status_;
      e.bytes_sent = bytes_sent_;
      e.duration = std::chrono::duration_cast<std::chrono::nanoseconds>(duration);
      try {
        impl_->opt.access_log(e);
      } catch (...) {
      }
    }
  }

  // Half-close, then read and drop what the client still sends for a moment, so our last
  // response isn't destroyed by a TCP reset from unread input.
  void LingerClose() {
    state_ = State::kLinger;
    deadline_ = SteadyClock::now() + impl_->opt.linger_timeout;
    asio::error_code ec;
    Sock().shutdown(tcp::socket::shutdown_send, ec);
    if (ec) return Close();
    if (buf_.size() < 4096) buf_.resize(4096);
    Drain();
  }

  void Drain() {
    Sock().async_read_some(asio::buffer(buf_), [self = Self()](const asio::error_code& ec, std::size_t n) {
      if (self->state_ == State::kClosed) return;
      self->lingered_ += n;
      if (ec || self->lingered_ > kMaxLingerBytes) return self->Close();
      self->Drain();
    });
  }

  std::shared_ptr<Server::Impl> impl_;
  Stream stream_;
  bool counted_;
  State state_ = State::kIdle;
  std::string remote_;

  std::vector<char> buf_;
  std::size_t begin_ = 0, end_ = 0, scanned_ = 0;
  Request req_;
  Route* route_ = nullptr;
  std::uint32_t allowed_ = 0;
  std::size_t body_read_ = 0;
  std::uint64_t generation_ = 0;
  std::uint64_t requests_ = 0;
  bool close_after_ = false;
  bool head_only_ = false;
  bool holds_in_flight_ = false;
  bool recorded_ = false;
  bool non_blocking_ = false;
  bool file_pending_ = false;
  bool handler_running_ = false;  // a handler may still use req_ (and its body file)
  TimePoint start_{};

  // The body_to_file upload in progress (or complete and awaiting its answer).
  int upload_fd_ = -1;
  std::string upload_path_;  // non-empty while the server owns a file there
  std::uint64_t upload_written_ = 0;
  std::unique_ptr<Hasher> upload_hash_;
  bool upload_syncing_ = false;

  Response resp_;
  int status_ = 0;
  std::string out_;
  std::uint64_t bytes_sent_ = 0;
  std::uint64_t file_off_ = 0, file_end_ = 0;
  std::unique_ptr<char[]> file_buf_;
  std::size_t lingered_ = 0;
};

}  // namespace

// --- Impl ------------------------------------------------------------------------------------

Server::Impl::Impl(ServerOptions o) : opt(std::move(o)) {
  registry = opt.registry ? opt.registry : std::make_shared<MetricsRegistry>();
  unmatched.pattern = "unmatched";
  unmatched.by_status = std::make_unique<std::atomic<Counter*>[]>(kStatusSlots);
  for (int i = 0; i < kStatusSlots; ++i) unmatched.by_status[i].store(nullptr, std::memory_order_relaxed);
  unmatched.latency = &registry->GetHistogram("upkeep_http_request_duration_seconds",
                                              "Time from the first request byte to the last response byte",
                                              DefaultLatencyBuckets(), {{"route", "unmatched"}});
  rejected_connections = &registry->GetCounter("upkeep_http_rejected_connections_total",
                                               "Connections answered 503 because max_connections was reached");
  overload_responses = &registry->GetCounter("upkeep_http_overload_responses_total",
                                             "Requests answered 503 because max_in_flight was reached");
  timeouts = &registry->GetCounter("upkeep_http_timeouts_total",
                                   "Connections closed by a handshake, header, body, idle or send time-out");
  std::shared_ptr<Live> l = live;  // the registry may outlive the server
  registry->AddGaugeCallback("upkeep_http_open_connections", "Open client connections",
                             [l] { return static_cast<double>(l->open_connections.load(std::memory_order_relaxed)); });
  registry->AddGaugeCallback("upkeep_http_in_flight_requests", "Requests whose handler has not answered yet",
                             [l] { return static_cast<double>(l->in_flight.load(std::memory_order_relaxed)); });
  auto shortest = std::min({opt.header_timeout, opt.body_timeout, opt.idle_timeout, opt.send_timeout,
                            opt.linger_timeout});
  tick = std::clamp(shortest / 4, std::chrono::milliseconds(10), std::chrono::milliseconds(1000));
}

Server::Impl::~Impl() {
  if (stopper.joinable() && stopper.get_id() != std::this_thread::get_id()) stopper.join();
  if (stopper.joinable()) stopper.detach();  // the stopper itself dropped the last reference
}

Status Server::Impl::AddRoute(Method method, std::string pattern, Handler handler, AsyncHandler async,
                              RouteOptions options, bool builtin) {
  {
    std::lock_guard lock(mu);
    if (started || stop_requested) return Error(Errc::kInvalidArgument, "route " + pattern + ": add routes before Start()");
  }
  auto bad = [&](const std::string& why) {
    return Error(Errc::kInvalidArgument, "route pattern '" + pattern + "': " + why);
  };
  if (pattern.empty() || pattern.front() != '/') return bad("must start with '/'");
  if (options.body_to_file && options.body_to_file->empty()) return bad("body_to_file is an empty path");
  PathEntry* entry = nullptr;
  if (pattern.size() >= 2 && pattern.compare(pattern.size() - 2, 2, "/*") == 0) {
    std::string prefix = pattern.substr(0, pattern.size() - 1);
    if (prefix.find_first_of("*{}%") != std::string::npos) return bad("'*' only as the last segment");
    auto it = std::find_if(prefixes.begin(), prefixes.end(), [&](const PathEntry& e) { return e.prefix == prefix; });
    if (it == prefixes.end()) {
      prefixes.push_back(PathEntry{pattern, {}, prefix, {}});
      std::stable_sort(prefixes.begin(), prefixes.end(),
                       [](const PathEntry& a, const PathEntry& b) { return a.prefix.size() > b.prefix.size(); });
      it = std::find_if(prefixes.begin(), prefixes.end(), [&](const PathEntry& e) { return e.prefix == prefix; });
    }
    entry = &*it;
  } else if (pattern.find('{') != std::string::npos) {
    std::vector<std::string> segments;
    std::string_view rest = std::string_view(pattern).substr(1);
    while (true) {
      std::size_t slash = rest.find('/');
      std::string seg(rest.substr(0, slash));
      if (seg.empty() || seg.find_first_of("*%") != std::string::npos) return bad("empty or invalid segment");
      if (seg.front() == '{') {
        if (seg.size() < 3 || seg.back() != '}' || seg.find_first_of("{}", 1) != seg.size() - 1) {
          return bad("a parameter is a whole segment '{name}'");
        }
      } else if (seg.find_first_of("{}") != std::string::npos) {
        return bad("a parameter is a whole segment '{name}'");
      }
      segments.push_back(std::move(seg));
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
    auto it = std::find_if(patterns.begin(), patterns.end(), [&](const PathEntry& e) { return e.pattern == pattern; });
    if (it == patterns.end()) {
      patterns.push_back(PathEntry{pattern, std::move(segments), {}, {}});
      it = patterns.end() - 1;
    }
    entry = &*it;
  } else {
    auto decoded = DecodePath(pattern);
    if (!decoded.ok() || *decoded != pattern || pattern.find_first_of("*%") != std::string::npos) {
      return bad("not a plain path");
    }
    entry = &exact.try_emplace(pattern, PathEntry{pattern, {}, {}, {}}).first->second;
  }
  if (entry->by_method[MethodIndex(method)]) {
    return Error(Errc::kInvalidArgument, "route " + std::string(MethodName(method)) + " " + pattern + " registered twice");
  }
  auto route = std::make_unique<Route>();
  route->method = method;
  route->pattern = pattern;
  route->handler = std::move(handler);
  route->async_handler = std::move(async);
  route->max_body = options.max_body_bytes.value_or(opt.default_max_body);
  route->use_pool = options.use_worker_pool;
  route->body_to_file = std::move(options.body_to_file);
  route->precheck = std::move(options.precheck);
  route->builtin = builtin;
  route->latency = &registry->GetHistogram("upkeep_http_request_duration_seconds",
                                           "Time from the first request byte to the last response byte",
                                           DefaultLatencyBuckets(), {{"route", pattern}});
  route->by_status = std::make_unique<std::atomic<Counter*>[]>(kStatusSlots);
  for (int i = 0; i < kStatusSlots; ++i) route->by_status[i].store(nullptr, std::memory_order_relaxed);
  entry->by_method[MethodIndex(method)] = route.get();
  routes.push_back(std::move(route));
  return OkStatus();
}

Route* Server::Impl::Match(Request& req, std::uint32_t* allowed) const {
  const std::string& path = req.path();
  Method m = req.method();
  auto pick = [&](const PathEntry& e) -> Route* {
    Route* r = e.by_method[MethodIndex(m)];
    if (!r && m == Method::kHead) r = e.by_method[MethodIndex(Method::kGet)];
    if (!r) {
      for (int i = 0; i < kMethodCount; ++i) {
        if (e.by_method[i]) *allowed |= 1u << i;
      }
      if (e.by_method[MethodIndex(Method::kGet)]) *allowed |= 1u << MethodIndex(Method::kHead);
    }
    return r;
  };
  if (auto it = exact.find(path); it != exact.end()) {
    if (Route* r = pick(it->second)) return r;
  }
  if (!patterns.empty()) {
    std::vector<std::string_view> segs;
    std::string_view rest = std::string_view(path).substr(1);
    while (true) {
      std::size_t slash = rest.find('/');
      segs.push_back(rest.substr(0, slash));
      if (slash == std::string_view::npos) break;
      rest.remove_prefix(slash + 1);
    }
    for (const PathEntry& e : patterns) {
      if (e.segments.size() != segs.size()) continue;
      bool ok = true;
      for (std::size_t i = 0; ok && i < segs.size(); ++i) {
        ok = e.segments[i].front() == '{' ? !segs[i].empty() : e.segments[i] == segs[i];
      }
      if (!ok) continue;
      Route* r = pick(e);
      if (!r) continue;
      auto& params = RequestAccess::params(req);
      params.clear();
      for (std::size_t i = 0; i < segs.size(); ++i) {
        if (e.segments[i].front() == '{') {
          params.emplace_back(e.segments[i].substr(1, e.segments[i].size() - 2), std::string(segs[i]));
        }
      }
      return r;
    }
  }
  for (const PathEntry& e : prefixes) {
    if (path.size() >= e.prefix.size() && path.compare(0, e.prefix.size(), e.prefix) == 0) {
      Route* r = pick(e);
      if (!r) continue;
      RequestAccess::suffix(req) = path.substr(e.prefix.size());
      return r;
    }
  }
  return nullptr;
}

Counter& Server::Impl::StatusCounter(Route& route, int status) {
  int index = std::clamp(status, 100, 999) - 100;
  Counter* c = route.by_status[index].load(std::memory_order_acquire);
  if (!c) {
    c = &registry->GetCounter("upkeep_http_requests_total", "HTTP requests answered, by route and status",
                              {{"route", route.pattern}, {"status", std::to_string(status)}});
    route.by_status[index].store(c, std::memory_order_release);
  }
  return *c;
}

void Server::Impl::Accept(std::size_t index) {
  IoThread& target = *threads[next_thread.fetch_add(1, std::memory_order_relaxed) % threads.size()];
  acceptors[index]->async_accept(target.ctx, [self = shared_from_this(), index, &target](const asio::error_code& ec,
                                                                                          tcp::socket socket) mutable {
    if (self->stopping.load()) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      if (ec == asio::error::connection_aborted) return self->Accept(index);
      // Out of descriptors or memory: back off instead of spinning on the ready listener.
      auto timer = std::make_shared<asio::steady_timer>(self->threads[0]->ctx, std::chrono::milliseconds(50));
      timer->async_wait([weak = std::weak_ptr<Impl>(self), index, timer](const asio::error_code& e) {
        auto s = weak.lock();
        if (!e && s && !s->stopping.load()) s->Accept(index);
      });
      return;
    }
    bool tls = self->acceptor_tls[index];
    auto open = self->live->open_connections.fetch_add(1, std::memory_order_relaxed);
    bool over = open >= static_cast<std::int64_t>(self->opt.max_connections);
    if (over) {
      self->live->open_connections.fetch_sub(1, std::memory_order_relaxed);
      self->rejected_connections->Inc();
    }
    asio::post(target.ctx, [self, &target, tls, over, socket = std::move(socket)]() mutable {
      if (self->stopping.load()) {
        if (!over) self->live->open_connections.fetch_sub(1, std::memory_order_relaxed);
        return;  // the socket closes here
      }
      if (over) {
        // A TLS client can't read a plaintext 503 and a handshake is what overload can't afford.
        if (!tls) std::make_shared<Connection<false>>(self, target, std::move(socket), false)->StartReject();
        return;
      }
      if (tls) std::make_shared<Connection<true>>(self, target, std::move(socket), true)->Start();
      else std::make_shared<Connection<false>>(self, target, std::move(socket), true)->Start();
    });
    self->Accept(index);
  });
}

void Server::Impl::Sweep(IoThread& t) {
  t.sweep.expires_after(tick);
  t.sweep.async_wait([this, &t](const asio::error_code& ec) {
    if (ec) return;
    TimePoint now = SteadyClock::now();
    std::vector<std::shared_ptr<ConnectionBase>> expired;
    for (ConnectionBase* c : t.conns) {
      if (c->deadline_ <= now) expired.push_back(c->shared_from_this());
    }
    for (auto& c : expired) c->OnDeadline();
    Sweep(t);
  });
}

void Server::Impl::DoStop(std::chrono::milliseconds grace) {
  stopping.store(true);
  asio::post(threads[0]->ctx, [this] {
    asio::error_code ec;
    for (auto& a : acceptors) a->close(ec);
    if (signals) signals->cancel(ec);
  });
  for (auto& t : threads) {
    asio::post(t->ctx, [&t = *t] {
      std::vector<std::shared_ptr<ConnectionBase>> all;
      for (ConnectionBase* c : t.conns) all.push_back(c->shared_from_this());
      for (auto& c : all) c->OnStopping();
    });
  }
  auto until = SteadyClock::now() + grace;
  while (SteadyClock::now() < until &&
         (live->open_connections.load() > 0 || live->in_flight.load() > 0)) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  for (auto& t : threads) {
    asio::post(t->ctx, [&t = *t] {
      std::vector<std::shared_ptr<ConnectionBase>> all;
      for (ConnectionBase* c : t.conns) all.push_back(c->shared_from_this());
      for (auto& c : all) c->Close();
      t.sweep.cancel();
      t.ctx.stop();
    });
    t->guard.reset();
  }
  for (auto& t : threads) {
    if (t->thread.joinable()) t->thread.join();
  }
  if (pool) pool->join();
  for (auto& t : threads) {
    std::lock_guard lock(t->post_mu);
    t->dead = true;
  }
  // Run what the closes completed (aborted reads, late handler results) so nothing keeps a
  // connection alive after the server is gone.
  for (int round = 0; round < 16; ++round) {
    std::size_t ran = 0;
    for (auto& t : threads) {
      t->ctx.restart();
      ran += t->ctx.poll();
    }
    if (ran == 0) break;
  }
  signals.reset();
  acceptors.clear();
  std::lock_guard lock(mu);
  stopped = true;
  cv.notify_all();
}

// --- Server ----------------------------------------------------------------------------------

Server::Server(ServerOptions options) : impl_(std::make_shared<Impl>(std::move(options))) {
  if (impl_->opt.healthz) {
    (void)impl_->AddRoute(Method::kGet, "/healthz", [](const Request&) { return Response::Text(200, "OK"); }, {}, {},
                          true);
  }
  if (impl_->opt.metrics) {
    (void)impl_->AddRoute(
        Method::kGet, "/metrics",
        [reg = impl_->registry](const Request&) {
          return Response::Text(200, reg->Render(), "text/plain; version=0.0.4; charset=utf-8");
        },
        {}, {}, true);
  }
}

Server::~Server() {
  Stop(std::chrono::milliseconds(0));
  if (impl_->stopper.joinable()) impl_->stopper.join();
}

Status Server::Handle(Method method, std::string pattern, Handler handler, RouteOptions options) {
  return impl_->AddRoute(method, std::move(pattern), std::move(handler), {}, options, false);
}

Status Server::HandleAsync(Method method, std::string pattern, AsyncHandler handler, RouteOptions options) {
  options.use_worker_pool = false;
  return impl_->AddRoute(method, std::move(pattern), {}, std::move(handler), options, false);
}

std::vector<std::pair<Method, std::string>> Server::Routes() const {
  std::lock_guard lock(impl_->mu);
  std::vector<std::pair<Method, std::string>> out;
  for (const auto& route : impl_->routes) out.emplace_back(route->method, route->pattern);
  return out;
}

Status Server::Start() {
  Impl& s = *impl_;
  {
    std::lock_guard lock(s.mu);
    if (s.started || s.stop_requested || !s.threads.empty()) {
      return Error(Errc::kInvalidArgument, "server: Start() called twice or after Stop()");
    }
  }
  if (s.opt.endpoints.empty()) return Error(Errc::kInvalidArgument, "server: no endpoints to listen on");
  bool any_tls = std::any_of(s.opt.endpoints.begin(), s.opt.endpoints.end(), [](const Endpoint& e) { return e.tls; });
  if (any_tls) {
    if (!s.opt.tls) return Error(Errc::kInvalidArgument, "server: a TLS endpoint needs ServerOptions::tls");
    try {
      s.ssl = std::make_unique<asio::ssl::context>(asio::ssl::context::tls_server);
    } catch (const std::exception& e) {
      return Error(Errc::kInternal, std::string("TLS context: ") + e.what());
    }
    SSL_CTX* ctx = s.ssl->native_handle();
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_NO_RENEGOTIATION);
    SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20");  // TLS 1.2 only; 1.3 suites stay default
    asio::error_code ec;
    s.ssl->use_certificate_chain_file(s.opt.tls->certificate_chain.string(), ec);
    if (ec) return Error(Errc::kIo, s.opt.tls->certificate_chain.string() + ": " + ec.message());
    s.ssl->use_private_key_file(s.opt.tls->private_key.string(), asio::ssl::context::pem, ec);
    if (ec) return Error(Errc::kIo, s.opt.tls->private_key.string() + ": " + ec.message());
    if (SSL_CTX_check_private_key(ctx) != 1) {
      return Error(Errc::kInvalidArgument, s.opt.tls->private_key.string() + ": does not match the certificate");
    }
  }
  unsigned n = s.opt.io_threads ? s.opt.io_threads : std::max(1u, std::thread::hardware_concurrency());
  for (unsigned i = 0; i < n; ++i) {
    auto t = std::make_unique<IoThread>();
    t->guard.emplace(t->ctx.get_executor());
    s.threads.push_back(std::move(t));
  }
  for (const Endpoint& e : s.opt.endpoints) {
    std::string name = e.address + ":" + std::to_string(e.port);
    asio::error_code ec;
    auto address = asio::ip::make_address(e.address, ec);
    if (ec) return Error(Errc::kInvalidArgument, "listen address '" + e.address + "': not an IP address");
    tcp::endpoint ep(address, e.port);
    auto acceptor = std::make_unique<tcp::acceptor>(s.threads[0]->ctx);
    if (acceptor->open(ep.protocol(), ec); ec) return Error(Errc::kIo, "listen " + name + ": " + ec.message());
    acceptor->set_option(tcp::acceptor::reuse_address(true), ec);
    if (address.is_v6()) acceptor->set_option(asio::ip::v6_only(true), ec);
    if (acceptor->bind(ep, ec); ec) return Error(Errc::kIo, "listen " + name + ": " + ec.message());
    if (acceptor->listen(4096, ec); ec) return Error(Errc::kIo, "listen " + name + ": " + ec.message());
    s.bound_ports.push_back(acceptor->local_endpoint(ec).port());
    s.acceptors.push_back(std::move(acceptor));
    s.acceptor_tls.push_back(e.tls);
  }
  // Uploads to files fsync on the pool, so a large flush never stalls an I/O thread.
  bool any_pool = std::any_of(s.routes.begin(), s.routes.end(),
                              [](const auto& r) { return r->use_pool || r->body_to_file.has_value(); });
  if (any_pool) s.pool = std::make_unique<asio::thread_pool>(std::max(1u, s.opt.worker_threads));
  for (auto& t : s.threads) {
    IoThread* raw = t.get();
    raw->thread = std::thread([raw] {
      while (true) {
        try {
          raw->ctx.run();
          return;
        } catch (...) {
          // Handlers catch their own errors; keep serving if a library callback threw anyway.
        }
      }
    });
  }
  for (std::size_t i = 0; i < s.acceptors.size(); ++i) {
    asio::post(s.threads[0]->ctx, [impl = impl_, i] { impl->Accept(i); });
  }
  for (auto& t : s.threads) {
    asio::post(t->ctx, [impl = impl_.get(), raw = t.get()] { impl->Sweep(*raw); });
  }
  std::lock_guard lock(s.mu);
  s.started = true;
  return OkStatus();
}

std::vector<std::uint16_t> Server::ports() const { return impl_->bound_ports; }

void Server::RequestStop(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  if (s.stop_requested) return;
  s.stop_requested = true;
  if (!s.started) {
    s.stopped = true;
    s.cv.notify_all();
    return;
  }
  s.stopper = std::thread([self = impl_, grace] { self->DoStop(grace); });
}

void Server::Wait() {
  Impl& s = *impl_;
  std::unique_lock lock(s.mu);
  s.cv.wait(lock, [&] { return s.stopped; });
}

void Server::Stop(std::chrono::milliseconds grace) {
  RequestStop(grace);
  Wait();
}

void Server::StopOnSignals(std::chrono::milliseconds grace) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  if (!s.started || s.stop_requested) return;
  s.signals = std::make_unique<asio::signal_set>(s.threads[0]->ctx, SIGINT, SIGTERM);
  std::weak_ptr<Impl> weak = impl_;
  s.signals->async_wait([weak, grace](const asio::error_code& ec, int) {
    if (ec) return;
    auto self = weak.lock();
    if (!self) return;
    std::lock_guard l(self->mu);
    if (self->stop_requested) return;
    self->stop_requested = true;
    self->stopper = std::thread([self, grace] { self->DoStop(grace); });
  });
}

MetricsRegistry& Server::metrics() { return *impl_->registry; }

Expected<Endpoint> ParseEndpoint(const std::string& text) {
  const auto colon = text.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == text.size()) {
    return Error(Errc::kInvalidArgument, "--listen: expected ADDRESS:PORT, got '" + text + "'");
  }
  std::string address = text.substr(0, colon);
  if (address.size() > 2 && address.front() == '[' && address.back() == ']') address = address.substr(1, address.size() - 2);
  unsigned port = 0;
  const char* begin = text.data() + colon + 1;
  const char* end = text.data() + text.size();
  auto [ptr, ec] = std::from_chars(begin, end, port);
  if (ec != std::errc() || ptr != end || port > 65535) {
    return Error(Errc::kInvalidArgument, "--listen: bad port in '" + text + "'");
  }
  return Endpoint{address, static_cast<std::uint16_t>(port), false};
}

}  // namespace upkeep::net
