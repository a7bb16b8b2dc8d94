// The relay server. Single I/O thread: every Conn is touched only on it, so there are no locks on
// the hot path; public methods post. OpenSSL reads the raw non-blocking fd and writes its records
// into the connection's own buffer, which leaves in one send(2) per flush; asio only reports
// readiness (socket.async_wait), so no per-connection TLS buffers outlive a read or a write.
#include "upkeep/relay/server.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>

#include <cerrno>

#include <asio.hpp>

#include <algorithm>
#include <atomic>
#include <csignal>
#include <deque>
#include <thread>
#include <unordered_map>

#include "upkeep/relay/frame.hpp"

namespace upkeep::relay {
namespace {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using asio::ip::tcp;

constexpr std::size_t kReadBuffer = 16 * 1024 + 64;  // one TLS record of plaintext
// Records encrypted per flush before one send(2); the unsent rest counts toward send_queue_limit.
constexpr std::size_t kSendBatch = 128 * 1024;
// A record buffer's capacity: a batch plus the records' overhead (22 bytes per 16 KiB record).
constexpr std::size_t kRecordBuffer = kSendBatch + 1024;
// OpenSSL's read-ahead buffer: a read(2) takes up to two whole records (freed when empty,
// RELEASE_BUFFERS). 64 and 128 KiB measured no better.
constexpr std::size_t kTlsReadAhead = 34 * 1024;
constexpr int kReadsPerTurn = 8;                     // one bulk slice: then yield to other connections
// Scheduling classes (docs/relay.md "Scheduling"): a connection reads as bulk when its last read
// burst was a whole record or more, or it read kBulkWindowBytes within the current or previous
// kClassWindow; it writes as bulk while more than kSmallWrite is queued for it. Bulk work runs as
// one slice per loop turn, every other ready handler (interactive) runs before the next slice.
constexpr std::size_t kBulkBurst = 16 * 1024;
constexpr std::uint32_t kBulkWindowBytes = 256 * 1024;  // about 2.5 MiB/s
constexpr std::chrono::milliseconds kClassWindow{100};
constexpr std::size_t kSmallWrite = 16 * 1024;
// Ready handlers run between two bulk slices at most (bounded bypass: bulk never starves).
constexpr int kBypassLimit = 64;
constexpr std::size_t kMaxField = 256;

std::string OpenSslError() {
  unsigned long e = ERR_get_error();
  ERR_clear_error();
  if (e == 0) return "unknown error";
  char buf[256];
  ERR_error_string_n(e, buf, sizeof(buf));
  return buf;
}

std::string ControlJson(const Json& j) {
  try {
    return j.dump();
  } catch (const std::exception&) {
    return "{}";
  }
}

}  // namespace

struct Conn;

namespace {

// The write side of every connection's SSL: records are appended to Conn::enc (never refused, so
// SSL_write never wants to write; the caller bounds what it feeds SSL_write) and the server sends
// them itself. Created once for the process and never freed.
int OutWrite(BIO* b, const char* data, int len);
long OutCtrl(BIO* b, int cmd, long num, void* ptr);

int OutCreate(BIO* b) {
  BIO_set_init(b, 1);
  return 1;
}

int OutDestroy(BIO*) { return 1; }

const BIO_METHOD* OutMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "upkeep relay records out");
    if (m != nullptr) {
      BIO_meth_set_write(m, OutWrite);
      BIO_meth_set_ctrl(m, OutCtrl);
      BIO_meth_set_create(m, OutCreate);
      BIO_meth_set_destroy(m, OutDestroy);
    }
    return m;
  }();
  return method;
}

}  // namespace

enum class Phase : std::uint8_t { kHandshake, kHello, kClient, kConsole, kClosing, kClosed };

struct Conn : std::enable_shared_from_this<Conn> {
  Conn(Server::Impl* i, tcp::socket s) : impl(i), sock(std::move(s)) {}
  ~Conn() {
    if (ssl != nullptr) SSL_free(ssl);
  }

  Server::Impl* impl;
  tcp::socket sock;
  SSL* ssl = nullptr;
  Phase phase = Phase::kHandshake;
  bool read_waiting = false;
  bool write_waiting = false;
  bool read_paused = false;      // back-pressure: the peer's queue is full
  bool read_needs_write = false;  // SSL_read asked for writability
  bool write_needs_read = false;  // SSL_write asked for readability
  bool in_read = false;
  bool bulk_read_queued = false;   // in Impl::bulk as a read slice
  bool bulk_write_queued = false;  // in Impl::bulk as a write slice
  std::uint32_t last_burst = 0;    // plaintext bytes the last read burst took
  std::uint32_t window_bytes = 0;  // plaintext bytes read since window_start
  std::uint32_t prev_window_bytes = 0;
  TimePoint window_start;
  FrameDecoder decoder;
  std::string out;  // encoded frames not yet taken by SSL_write
  std::size_t out_off = 0;
  std::string enc;  // TLS records (SSL_write's output) not yet taken by the socket
  std::size_t enc_off = 0;
  std::uint64_t queued_total = 0;
  std::uint64_t encrypted_total = 0;  // taken by SSL_write (records in enc or sent)
  std::uint64_t written_total = 0;    // whose records the socket took: completions are due
  std::vector<std::pair<std::uint64_t, Completion>> completions;
  std::string id;  // client id, or technician id for a console
  Conn* peer = nullptr;
  std::uint64_t session = 0;
  TimePoint last_rx;
  TimePoint deadline;        // hello deadline while not authenticated
  TimePoint last_tx;         // last write progress (or when the queue became non-empty)
  TimePoint session_activity;

  std::size_t plain_pending() const { return out.size() - out_off; }
  std::size_t enc_pending() const { return enc.size() - enc_off; }
  // Everything queued for this connection (the back-pressure bound applies to it).
  std::size_t pending() const { return plain_pending() + enc_pending(); }
};

namespace {

int OutWrite(BIO* b, const char* data, int len) {
  auto* c = static_cast<Conn*>(BIO_get_data(b));
  if (c == nullptr || len < 0) return -1;
  c->enc.append(data, static_cast<std::size_t>(len));
  return len;
}

long OutCtrl(BIO* b, int cmd, long, void*) {
  auto* c = static_cast<Conn*>(BIO_get_data(b));
  switch (cmd) {
    case BIO_CTRL_FLUSH: return 1;  // sent by the server, not here
    case BIO_CTRL_WPENDING: return c == nullptr ? 0 : static_cast<long>(c->enc_pending());
    default: return 0;
  }
}

}  // namespace

struct Server::Impl : std::enable_shared_from_this<Server::Impl> {
  Impl(ServerOptions o, ClientStore& s, const Clock& c, ServerObserver* obs)
      : opt(std::move(o)), store(s), clock(c), observer(obs), acceptor(io), sweep(io), accept_retry(io) {}

  ServerOptions opt;
  ClientStore& store;
  const Clock& clock;
  ServerObserver* observer;

  asio::io_context io;
  tcp::acceptor acceptor;
  asio::steady_timer sweep;
  asio::steady_timer accept_retry;
  asio::steady_timer wakeup{io};  // Server::RunAt
  std::thread thread;
  SSL_CTX* ctx = nullptr;
  std::uint16_t bound_port = 0;
  bool stopping = false;
  std::atomic<bool> stopped{false};

  std::unordered_map<Conn*, std::shared_ptr<Conn>> conns;
  // Bulk slices waiting for their turn, oldest first (a connection at most once per kind).
  std::deque<std::pair<std::shared_ptr<Conn>, bool /*write*/>> bulk;
  std::unordered_map<std::string, Conn*> online;  // client id -> its connection
  std::vector<std::shared_ptr<Conn>> graveyard;   // closed, freed on the next turn
  std::vector<std::uint8_t> read_buf = std::vector<std::uint8_t>(kReadBuffer);
  // One spare record buffer for the whole thread: a connection borrows it for a flush and gives it
  // back once the socket took everything, so a busy session does not allocate (and fault in) a
  // fresh buffer per flush, and only a connection with unsent records holds one of its own.
  std::string spare_enc;
  std::string spare_out;  // the same for the frames queue (Conn::out)
  std::size_t OutBuffer() const { return opt.send_queue_limit + 32 * 1024; }

  double tokens = 0;
  TimePoint tokens_at;
  std::uint64_t refused_since_log = 0;
  std::uint64_t next_session = 1;
  std::function<void()> on_drained;

  struct AtomicStats {
    std::atomic<std::uint64_t> connections{0}, clients{0}, consoles{0}, sessions{0}, accepted{0}, refused_rate{0},
        refused_cap{0}, auth_failures{0}, protocol_errors{0}, peak_session_buffered{0}, backpressure_pauses{0};
    std::atomic<bool> draining{false};
  } st;

  void Log(const std::string& line) {
    if (opt.log) opt.log(line);
  }

  // ---- accepting ----
  void Accept() {
    if (stopping) return;
    acceptor.async_accept([self = shared_from_this()](const asio::error_code& ec, tcp::socket s) {
      self->OnAccept(ec, std::move(s));
    });
  }

  void OnAccept(const asio::error_code& ec, tcp::socket s) {
    if (stopping) return;
    if (ec) {
      if (ec == asio::error::operation_aborted) return;
      Log("accept failed: " + ec.message());
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([self = shared_from_this()](const asio::error_code& e) {
        if (!e) self->Accept();
      });
      return;
    }
    const TimePoint now = SteadyClock::now();
    const double rate = std::max(opt.accept_rate, 0.001);
    tokens = std::min(rate, tokens + std::chrono::duration<double>(now - tokens_at).count() * rate);
    tokens_at = now;
    asio::error_code ignored;
    if (conns.size() >= opt.max_connections) {
      st.refused_cap++;
      refused_since_log++;
      s.close(ignored);  // refused before the handshake: the cheapest answer overload allows
    } else if (tokens < 1.0) {
      st.refused_rate++;
      refused_since_log++;
      s.close(ignored);
    } else {
      tokens -= 1.0;
      Begin(std::move(s), now);
    }
    Accept();
  }

  void Begin(tcp::socket s, TimePoint now) {
    asio::error_code ec;
    s.non_blocking(true, ec);
    if (!ec) s.set_option(tcp::no_delay(true), ec);
    const int fd = static_cast<int>(s.native_handle());
    auto c = ec ? nullptr : std::make_shared<Conn>(this, std::move(s));
    SSL* ssl = c ? SSL_new(ctx) : nullptr;
    BIO* rbio = ssl != nullptr ? BIO_new_socket(fd, BIO_NOCLOSE) : nullptr;
    BIO* wbio = rbio != nullptr && OutMethod() != nullptr ? BIO_new(OutMethod()) : nullptr;
    if (wbio == nullptr) {
      if (rbio != nullptr) BIO_free(rbio);
      if (ssl != nullptr) SSL_free(ssl);
      Log("connection set-up failed: " + (ec ? ec.message() : OpenSslError()));
      if (c) {
        c->sock.close(ec);
      } else {
        s.close(ec);
      }
      return;
    }
    BIO_set_data(wbio, c.get());
    SSL_set_bio(ssl, rbio, wbio);  // the SSL owns both
    SSL_set_accept_state(ssl);
    c->ssl = ssl;
    c->last_rx = now;
    c->deadline = now + opt.hello_timeout;
    c->last_tx = now;
    conns.emplace(c.get(), c);
    st.accepted++;
    st.connections = conns.size();
    Handshake(*c);
  }

  // ---- readiness ----
  void WaitRead(Conn& c) {
    if (c.read_waiting || c.phase == Phase::kClosed) return;
    c.read_waiting = true;
    c.sock.async_wait(tcp::socket::wait_read, [self = c.shared_from_this()](const asio::error_code& ec) {
      self->read_waiting = false;
      if (ec || self->phase == Phase::kClosed) return;
      if (self->impl->BulkReader(*self)) return self->impl->QueueBulk(*self, false);
      self->impl->OnReadable(*self);
    });
  }

  void WaitWrite(Conn& c) {
    if (c.write_waiting || c.phase == Phase::kClosed) return;
    c.write_waiting = true;
    c.sock.async_wait(tcp::socket::wait_write, [self = c.shared_from_this()](const asio::error_code& ec) {
      self->write_waiting = false;
      if (ec || self->phase == Phase::kClosed) return;
      if (self->pending() > kSmallWrite) return self->impl->QueueBulk(*self, true);
      self->impl->OnWritable(*self);
    });
  }

  // ---- scheduling: interactive work first, bulk work in slices ----
  bool BulkReader(const Conn& c) const {
    if (c.phase != Phase::kClient && c.phase != Phase::kConsole) return false;
    if (c.last_burst >= kBulkBurst) return true;
    const auto age = SteadyClock::now() - c.window_start;
    return (age < kClassWindow && c.window_bytes >= kBulkWindowBytes) ||
           (age < 2 * kClassWindow && std::max(c.window_bytes, c.prev_window_bytes) >= kBulkWindowBytes);
  }

  void CountRead(Conn& c, std::size_t n, TimePoint now) {
    if (now - c.window_start >= kClassWindow) {
      c.prev_window_bytes = now - c.window_start < 2 * kClassWindow ? c.window_bytes : 0;
      c.window_bytes = 0;
      c.window_start = now;
    }
    c.window_bytes = static_cast<std::uint32_t>(std::min<std::size_t>(c.window_bytes + n, UINT32_MAX));
  }

  void QueueBulk(Conn& c, bool write) {
    bool& queued = write ? c.bulk_write_queued : c.bulk_read_queued;
    if (queued || c.phase == Phase::kClosed) return;
    queued = true;
    bulk.emplace_back(c.shared_from_this(), write);
  }

  void RunBulkSlice() {
    auto [cp, write] = std::move(bulk.front());
    bulk.pop_front();
    Conn& c = *cp;
    (write ? c.bulk_write_queued : c.bulk_read_queued) = false;
    if (c.phase == Phase::kClosed) return;
    if (write) {
      OnWritable(c);
    } else {
      OnReadable(c);
    }
  }

  // The I/O thread's loop: every handler ready now runs (interactive work at once; bulk readiness
  // only queues a slice), then one bulk slice, so a small record waits for at most the slice in
  // progress instead of every bulk connection's turn.
  void Run() {
    for (;;) {
      if (bulk.empty() && io.run_one() == 0) break;  // waits; 0: stopped or out of work
      for (int i = 0; i < kBypassLimit && io.poll_one() > 0; ++i) {
      }
      if (!bulk.empty()) RunBulkSlice();
    }
    bulk.clear();
  }

  void OnReadable(Conn& c) {
    if (c.phase == Phase::kHandshake) return Handshake(c);
    if (c.write_needs_read) {
      c.write_needs_read = false;
      Flush(c);
      if (c.phase == Phase::kClosed) return;
    }
    Read(c);
  }

  void OnWritable(Conn& c) {
    // The records a full socket left behind go first; the rest of the connection waits for them.
    if (c.enc_pending() > 0 && (!SendRecords(c) || c.enc_pending() > 0)) return;
    if (c.phase == Phase::kHandshake) return;  // its records are out; reading drives it on
    if (c.read_needs_write) {
      c.read_needs_write = false;
      Read(c);
      if (c.phase == Phase::kClosed) return;
    }
    Flush(c);
  }

  void Handshake(Conn& c) {
    ERR_clear_error();
    int r = SSL_do_handshake(c.ssl);
    if (!SendRecords(c)) return;
    if (r == 1) {
      c.phase = Phase::kHello;
      Read(c);
      return;
    }
    int err = SSL_get_error(c.ssl, r);
    if (err == SSL_ERROR_WANT_READ) return WaitRead(c);
    if (err == SSL_ERROR_WANT_WRITE) return WaitWrite(c);
    Close(c, "TLS handshake failed: " + (err == SSL_ERROR_SSL ? OpenSslError() : std::string("connection closed")));
  }

  // ---- reading ----
  void Read(Conn& c) {
    if (c.in_read) return;
    c.in_read = true;
    c.last_burst = 0;
    ReadLoop(c);
    // What the burst queued for the peer leaves now, once: per DATA frame, a relayed 16 KiB TLS
    // record went out as a full record plus a 4-byte one (twice the records and writes).
    if (c.peer != nullptr) Flush(*c.peer);
    // Records SSL_read itself produced (an alert, a key update) leave too.
    if (c.enc_pending() > 0 && c.phase != Phase::kClosed) Flush(c);
    c.in_read = false;
    if (c.phase != Phase::kClosed) c.decoder.ShrinkIfIdle();
  }

  void ReadLoop(Conn& c) {
    for (int turn = 0;; ++turn) {
      if (c.phase != Phase::kHello && c.phase != Phase::kClient && c.phase != Phase::kConsole) return;
      if (c.peer != nullptr && c.peer->pending() >= opt.send_queue_limit) {
        Flush(*c.peer);  // the burst's DATA first: pause only if the peer really cannot take more
        if (c.phase != Phase::kClient && c.phase != Phase::kConsole) return;
      }
      if (c.peer != nullptr && c.peer->pending() >= opt.send_queue_limit) {
        if (!c.read_paused) st.backpressure_pauses++;
        c.read_paused = true;  // resumed by the peer's Flush once its queue is below the bound
        return;
      }
      if (turn == kReadsPerTurn) return QueueBulk(c, false);
      ERR_clear_error();
      int n = SSL_read(c.ssl, read_buf.data(), static_cast<int>(read_buf.size()));
      if (n <= 0) {
        int err = SSL_get_error(c.ssl, n);
        if (err == SSL_ERROR_WANT_READ) return WaitRead(c);
        if (err == SSL_ERROR_WANT_WRITE) {
          c.read_needs_write = true;
          return WaitWrite(c);
        }
        if (err == SSL_ERROR_ZERO_RETURN) return Close(c, "peer closed the connection");
        return Close(c, err == SSL_ERROR_SSL ? "TLS error: " + OpenSslError() : std::string("connection lost"));
      }
      c.last_rx = SteadyClock::now();
      c.last_burst = static_cast<std::uint32_t>(std::min<std::size_t>(c.last_burst + static_cast<std::size_t>(n), UINT32_MAX));
      CountRead(c, static_cast<std::size_t>(n), c.last_rx);
      auto keep = c.shared_from_this();
      auto result = c.decoder.Feed(std::span<const std::uint8_t>(read_buf.data(), static_cast<std::size_t>(n)),
                                   [&](const FramePiece& piece) { return OnPiece(c, piece); });
      if (result.failed) {
        st.protocol_errors++;
        return CloseWithError(c, result.error.code, result.error.message);
      }
      if (result.consumed < static_cast<std::size_t>(n)) return;  // a handler closed or failed the connection
    }
  }

  // Returns false once the connection stops reading (closed or closing).
  bool OnPiece(Conn& c, const FramePiece& p) {
    if (c.phase == Phase::kClosing || c.phase == Phase::kClosed) return false;
    if (p.type == FrameType::kPing) {
      Queue(c, FrameType::kPong, {});
      Flush(c);
    } else if (c.phase == Phase::kHello) {
      if (p.type != FrameType::kHello) return Garbage(c, std::string(FrameTypeName(p.type)) + " before HELLO");
      OnHello(c, p.payload);
    } else if (p.type == FrameType::kData) {
      if (c.peer == nullptr) return true;  // a session just ended while bytes were in flight: dropped
      const TimePoint now = SteadyClock::now();
      c.session_activity = c.peer->session_activity = now;
      if (!p.payload.empty()) {
        Queue(*c.peer, FrameType::kData, p.payload);  // flushed when this read burst ends (Read)
        NotePeak(c);
      }
    } else if (p.type == FrameType::kClose) {
      if (c.peer != nullptr) EndSession(c, "closed by the " + std::string(c.phase == Phase::kClient ? "client" : "console"), false);
    } else if (c.phase == Phase::kConsole && p.type == FrameType::kOpen) {
      OnOpen(c, p.payload);
    } else if (c.phase == Phase::kClient && p.type == FrameType::kBuildGet) {
      OnBuildGet(c, p.payload);
    } else if (c.phase == Phase::kClient && p.type == FrameType::kBuildReport) {
      OnBuildReport(c, p.payload);
    } else {
      return Garbage(c, std::string(FrameTypeName(p.type)) + " frame out of turn");
    }
    return c.phase != Phase::kClosing && c.phase != Phase::kClosed;
  }

  bool Garbage(Conn& c, const std::string& why) {
    st.protocol_errors++;
    CloseWithError(c, codes::kGarbageFrame, why);
    return false;
  }

  std::optional<Json> ParseControl(Conn& c, std::string_view payload, const char* what) {
    auto j = ParseJson(payload);
    if (!j.ok() || !j->is_object()) {
      Garbage(c, std::string("malformed ") + what + " payload");
      return std::nullopt;
    }
    return std::move(j).value();
  }

  // A short string field; nullopt (and the connection refused) when missing, wrong or too long.
  static std::optional<std::string> Field(const Json& j, const char* key, bool required = true) {
    auto it = j.find(key);
    if (it == j.end()) return required ? std::nullopt : std::optional<std::string>(std::string());
    if (!it->is_string()) return std::nullopt;
    std::string s = it->get<std::string>();
    if (s.size() > kMaxField) return std::nullopt;
    return s;
  }

  void OnHello(Conn& c, std::string_view payload) {
    auto j = ParseJson(payload);
    if (!j.ok() || !j->is_object()) return Refuse(c, codes::kBadHello, "HELLO is not a JSON object", false);
    auto role = Field(*j, "role");
    if (role == "client") return ClientHello(c, *j);
    if (role == "console") return ConsoleHello(c, *j);
    Refuse(c, codes::kBadHello, "HELLO role must be \"client\" or \"console\"", false);
  }

  void Refuse(Conn& c, const char* code, const std::string& why, bool auth) {
    if (auth) st.auth_failures++;
    CloseWithError(c, code, why);
  }

  void ClientHello(Conn& c, const Json& j) {
    auto id = Field(j, "id");
    auto version = Field(j, "version");
    auto platform = Field(j, "platform");
    auto mode = Field(j, "mode");
    auto secret_it = j.find("secret");
    if (!id || !IsValidId(*id)) return Refuse(c, codes::kBadHello, "HELLO: field 'id' missing or not a valid id", false);
    if (!version || version->empty() || !platform || !mode || (*mode != "active" && *mode != "passive") ||
        secret_it == j.end() || !secret_it->is_string()) {
      return Refuse(c, codes::kBadHello, "client '" + *id + "': HELLO needs secret, version, platform, mode", false);
    }
    if (st.draining) return Refuse(c, codes::kDraining, "client '" + *id + "': the relay is draining", false);
    auto record = store.FindClient(*id);
    if (!record) return Refuse(c, codes::kUnknownClient, "client '" + *id + "' is not known", true);
    if (!VerifySecret(secret_it->get_ref<const std::string&>(), record->secret_hash)) {
      return Refuse(c, codes::kBadSecret, "client '" + *id + "': bad secret", true);
    }
    if (auto old = online.find(*id); old != online.end()) {
      CloseWithError(*old->second, codes::kReplaced, "replaced by a new connection of the same client");
    }
    if (auto rec = store.RecordCheckIn(*id, *version, *platform, *mode, clock.Now()); !rec.ok()) {
      Log("client '" + *id + "': check-in not recorded: " + rec.error().message());
    }
    c.phase = Phase::kClient;
    c.id = *id;
    online[c.id] = &c;
    st.clients = online.size();
    Welcome(c);
    Log("client '" + c.id + "' checked in (version " + *version + ", " + *platform + ", " + *mode + ")");
    if (observer != nullptr) {
      ClientInfo info;
      info.id = c.id;
      info.version = *version;
      info.platform = *platform;
      info.mode = *mode;
      observer->OnClientCheckIn(info);
    }
  }

  void ConsoleHello(Conn& c, const Json& j) {
    auto token = j.find("token");
    if (token == j.end() || !token->is_string() || token->get_ref<const std::string&>().size() > kMaxSecretBytes) {
      return Refuse(c, codes::kBadHello, "console HELLO needs a token", false);
    }
    auto tech = store.FindTechnicianByToken(token->get_ref<const std::string&>());
    if (!tech) return Refuse(c, codes::kBadSecret, "console: token not accepted", true);
    c.phase = Phase::kConsole;
    c.id = *tech;
    st.consoles++;
    Welcome(c);
    Log("console of technician '" + c.id + "' connected");
  }

  void Welcome(Conn& c) {
    c.deadline = TimePoint::max();
    Json w = {{"heartbeat_seconds", opt.heartbeat.count()}, {"checkin_seconds", opt.checkin_interval.count()}};
    Queue(c, FrameType::kWelcome, ControlJson(w));
    Flush(c);
  }

  void OnOpen(Conn& c, std::string_view payload) {
    auto j = ParseControl(c, payload, "OPEN");
    if (!j) return;
    auto id = Field(*j, "client_id");
    if (!id || !IsValidId(*id)) return (void)Garbage(c, "OPEN: field 'client_id' missing or not a valid id");
    if (c.peer != nullptr) return (void)Garbage(c, "OPEN while a session is open");
    const std::string who = "console '" + c.id + "' asked for client '" + *id + "': ";
    if (st.draining) return Refuse(c, codes::kDraining, who + "the relay is draining", false);
    if (!store.FindClient(*id)) return Refuse(c, codes::kClientUnknown, who + "not known", false);
    auto it = online.find(*id);
    if (it == online.end()) return Refuse(c, codes::kClientOffline, who + "offline", false);
    Conn& client = *it->second;
    if (client.peer != nullptr) return Refuse(c, codes::kClientBusy, who + "in a session with another console", false);
    if (observer != nullptr) {
      if (auto busy = observer->OnConsoleOpen(*id)) return Refuse(c, codes::kClientBusy, who + *busy, false);
    }
    if (client.phase != Phase::kClient) return Refuse(c, codes::kClientOffline, who + "offline", false);
    const std::uint64_t session = next_session++;
    c.peer = &client;
    client.peer = &c;
    c.session = client.session = session;
    c.session_activity = client.session_activity = SteadyClock::now();
    st.sessions++;
    Queue(c, FrameType::kOpened, ControlJson(Json{{"client_id", client.id}}));
    Queue(client, FrameType::kOpened, ControlJson(Json{{"session", std::to_string(session)}}));
    Log("session " + std::to_string(session) + ": console '" + c.id + "' <-> client '" + client.id + "'");
    Flush(client);
    Flush(c);
  }

  void OnBuildGet(Conn& c, std::string_view payload) {
    auto j = ParseControl(c, payload, "BUILD_GET");
    if (!j) return;
    auto version = Field(*j, "version");
    auto off = j->find("offset");
    if (!version || off == j->end() || !off->is_number_unsigned()) {
      return (void)Garbage(c, "BUILD_GET needs version and a non-negative offset");
    }
    if (observer != nullptr) observer->OnBuildGet(c.id, *version, off->get<std::uint64_t>());
  }

  void OnBuildReport(Conn& c, std::string_view payload) {
    auto j = ParseControl(c, payload, "BUILD_REPORT");
    if (!j) return;
    BuildReport r;
    auto version = Field(*j, "version");
    auto result = Field(*j, "result");
    auto detail = Field(*j, "detail", false);
    if (!version || !result || (*result != "installed" && *result != "failed") || !detail) {
      return (void)Garbage(c, "BUILD_REPORT needs version, result installed/failed and a short detail");
    }
    r.version = *version;
    r.result = *result;
    r.detail = *detail;
    Log("client '" + c.id + "' build report: " + r.version + " " + r.result);
    if (observer != nullptr) observer->OnBuildReport(c.id, r);
  }

  void NotePeak(Conn& c) {
    if (c.peer == nullptr) return;
    std::uint64_t total = c.pending() + c.peer->pending() + c.decoder.buffered() + c.peer->decoder.buffered();
    std::uint64_t prev = st.peak_session_buffered.load();
    if (total > prev) st.peak_session_buffered = total;
  }

  void EndSession(Conn& c, const std::string& reason, bool tell_both) {
    Conn* p = c.peer;
    if (p == nullptr) return;
    Log("session " + std::to_string(c.session) + " ended: " + reason);
    c.peer = nullptr;
    p->peer = nullptr;
    c.session = p->session = 0;
    st.sessions--;
    const std::string payload = ControlJson(Json{{"reason", reason}});
    if (p->phase == Phase::kClient || p->phase == Phase::kConsole) {
      Queue(*p, FrameType::kClose, payload);
      Flush(*p);
    }
    if (tell_both && (c.phase == Phase::kClient || c.phase == Phase::kConsole)) {
      Queue(c, FrameType::kClose, payload);
      Flush(c);
    }
    Resume(c);
    Resume(*p);
    CheckDrained();
  }

  void Resume(Conn& c) {
    if (!c.read_paused || c.phase == Phase::kClosed) return;
    c.read_paused = false;
    // Post: OpenSSL may already hold decrypted bytes, so don't wait for the socket.
    asio::post(io, [self = c.shared_from_this()] {
      if (self->phase == Phase::kClosed) return;
      if (self->impl->BulkReader(*self)) return self->impl->QueueBulk(*self, false);
      self->impl->Read(*self);
    });
  }

  void CheckDrained() {
    if (st.draining && st.sessions == 0 && on_drained) {
      auto cb = std::move(on_drained);
      on_drained = nullptr;
      Log("drained: no session remains");
      cb();
    }
  }

  // ---- writing ----
  void Queue(Conn& c, FrameType type, std::string_view payload) {
    if (c.pending() == 0) c.last_tx = SteadyClock::now();
    if (c.out.empty()) {
      Borrow(c.out, spare_out, OutBuffer());
      c.out_off = 0;
    } else if (c.out_off > 0 &&
               (c.out_off >= c.out.size() / 2 || c.out.size() + kFrameHeaderSize + payload.size() > c.out.capacity())) {
      c.out.erase(0, c.out_off);
      c.out_off = 0;
    }
    if (AppendFrame(c.out, type, payload).ok()) c.queued_total += kFrameHeaderSize + payload.size();
  }

  // Sends what SSL_write left in c.enc, in one send(2) unless the socket takes less. Returns false
  // once the connection is closed; a socket that is full arms a writable wait.
  bool SendRecords(Conn& c) {
    while (c.enc_pending() > 0) {
      if (c.write_waiting) return true;  // it was full: the writable wait sends the rest
      const ssize_t n = ::send(c.sock.native_handle(), c.enc.data() + c.enc_off, c.enc_pending(), MSG_NOSIGNAL);
      if (n > 0) {
        c.enc_off += static_cast<std::size_t>(n);
        c.last_tx = SteadyClock::now();
        if (c.enc_pending() > 0) WaitWrite(c);  // a short send: the socket is full now
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        WaitWrite(c);
        return true;
      }
      Close(c, "connection lost while sending");
      return false;
    }
    c.written_total = c.encrypted_total;
    GiveBackRecordBuffer(c);  // an idle connection keeps no record buffer
    return true;
  }

  // An empty buffer takes the thread's spare (or reserves `cap`); a spare is always empty.
  static void Borrow(std::string& buf, std::string& spare, std::size_t cap) {
    if (!buf.empty() || buf.capacity() >= cap) return;
    if (spare.capacity() >= cap) {
      buf.swap(spare);
    } else {
      buf.reserve(cap);
    }
  }

  // A drained buffer becomes the spare if there is none; else it is freed.
  static void GiveBack(std::string& buf, std::string& spare, std::size_t cap) {
    buf.clear();
    if (buf.capacity() >= cap && spare.capacity() < cap) spare.swap(buf);
    std::string().swap(buf);
  }

  void GiveBackRecordBuffer(Conn& c) {
    GiveBack(c.enc, spare_enc, kRecordBuffer);
    c.enc_off = 0;
  }

  void Flush(Conn& c) {
    if (c.phase == Phase::kClosed || c.phase == Phase::kHandshake) return;
    for (bool blocked = false; !blocked;) {
      if (c.enc_off > 0 && c.plain_pending() > 0) {  // keep the batch within the buffer's capacity
        c.enc.erase(0, c.enc_off);
        c.enc_off = 0;
      }
      // Encrypt a batch of records (SSL_write splits into records of at most 16 KiB), then send.
      if (c.plain_pending() > 0 && c.enc.empty()) {
        Borrow(c.enc, spare_enc, kRecordBuffer);
        c.enc_off = 0;
      }
      while (c.plain_pending() > 0 && c.enc_pending() < kSendBatch) {
        ERR_clear_error();
        const int len = static_cast<int>(std::min(c.plain_pending(), kSendBatch - c.enc_pending()));
        int n = SSL_write(c.ssl, c.out.data() + c.out_off, len);
        if (n > 0) {
          c.out_off += static_cast<std::size_t>(n);
          c.encrypted_total += static_cast<std::uint64_t>(n);
          continue;
        }
        int err = SSL_get_error(c.ssl, n);
        blocked = true;
        if (err == SSL_ERROR_WANT_WRITE) {  // not from our record buffer; kept for completeness
          WaitWrite(c);
          break;
        }
        if (err == SSL_ERROR_WANT_READ) {
          c.write_needs_read = true;
          WaitRead(c);
          break;
        }
        blocked = false;
        Close(c, err == SSL_ERROR_SSL ? "TLS error: " + OpenSslError() : std::string("connection lost while sending"));
        return;
      }
      if (!SendRecords(c)) return;
      if (c.enc_pending() > 0 || c.plain_pending() == 0) break;
    }
    if (c.plain_pending() == 0) {
      GiveBack(c.out, spare_out, OutBuffer());  // an idle connection keeps no send buffer
      c.out_off = 0;
    }
    if (!c.completions.empty()) {
      auto keep = c.shared_from_this();
      std::vector<Completion> ready;
      auto it = c.completions.begin();
      while (it != c.completions.end() && it->first <= c.written_total) {
        ready.push_back(std::move(it->second));
        ++it;
      }
      c.completions.erase(c.completions.begin(), it);
      if (c.completions.empty()) std::vector<std::pair<std::uint64_t, Completion>>().swap(c.completions);
      for (auto& done : ready) done(OkStatus());
    }
    if (c.phase == Phase::kClosing && c.pending() == 0) return Close(c, "");
    if (c.peer != nullptr && c.peer->read_paused && c.pending() < opt.send_queue_limit) Resume(*c.peer);
  }

  void CloseWithError(Conn& c, const char* code, const std::string& message) {
    if (c.phase == Phase::kClosing || c.phase == Phase::kClosed) return;
    Log("closing " + Describe(c) + ": " + code + ": " + message);
    if (c.phase == Phase::kHandshake) return Close(c, "");
    ClosePartOne(c, message);
    Queue(c, FrameType::kError, ControlJson(Json{{"code", code}, {"message", message}}));
    c.phase = Phase::kClosing;
    c.last_tx = SteadyClock::now();
    Flush(c);
  }

  std::string Describe(const Conn& c) const {
    switch (c.phase) {
      case Phase::kClient: return "client '" + c.id + "'";
      case Phase::kConsole: return "console '" + c.id + "'";
      default: return "connection";
    }
  }

  // Leaves the session and the online table (the connection may still flush a last frame).
  void ClosePartOne(Conn& c, const std::string& reason) {
    if (c.peer != nullptr) {
      EndSession(c, std::string(c.phase == Phase::kClient ? "client" : "console") + " disconnected" +
                        (reason.empty() ? "" : ": " + reason),
                 false);
    }
    if (c.phase == Phase::kClient) {
      auto it = online.find(c.id);
      if (it != online.end() && it->second == &c) {
        online.erase(it);
        st.clients = online.size();
        if (observer != nullptr) observer->OnClientDisconnect(c.id);
      }
    } else if (c.phase == Phase::kConsole) {
      st.consoles--;
    }
  }

  void Close(Conn& c, const std::string& reason) {
    if (c.phase == Phase::kClosed) return;
    if (!reason.empty() && c.phase != Phase::kHandshake) Log("closing " + Describe(c) + ": " + reason);
    if (c.phase != Phase::kClosing) ClosePartOne(c, reason);
    c.phase = Phase::kClosed;
    auto keep = c.shared_from_this();
    auto completions = std::move(c.completions);
    for (auto& [at, done] : completions) done(Error(Errc::kIo, "connection of '" + c.id + "' closed"));
    if (c.ssl != nullptr && SSL_is_init_finished(c.ssl)) {
      ERR_clear_error();
      SSL_shutdown(c.ssl);  // best effort close_notify; the socket is non-blocking
    }
    if (c.enc_pending() > 0) {  // best effort: the last frames and alerts, if the socket takes them
      [[maybe_unused]] ssize_t n =
          ::send(c.sock.native_handle(), c.enc.data() + c.enc_off, c.enc_pending(), MSG_NOSIGNAL | MSG_DONTWAIT);
    }
    GiveBackRecordBuffer(c);
    ERR_clear_error();
    asio::error_code ignored;
    c.sock.close(ignored);
    auto it = conns.find(&c);
    if (it != conns.end()) {
      graveyard.push_back(std::move(it->second));
      conns.erase(it);
      if (graveyard.size() == 1) asio::post(io, [this] { graveyard.clear(); });
    }
    st.connections = conns.size();
  }

  // ---- time-outs ----
  void ArmSweep() {
    sweep.expires_after(opt.sweep_interval);
    sweep.async_wait([self = shared_from_this()](const asio::error_code& ec) {
      if (ec || self->stopping) return;
      self->Sweep();
      self->ArmSweep();
    });
  }

  void Sweep() {
    const TimePoint now = SteadyClock::now();
    if (refused_since_log > 0) {
      Log("refused " + std::to_string(refused_since_log) + " connection(s) at accept (rate limit or connection cap)");
      refused_since_log = 0;
    }
    std::vector<std::shared_ptr<Conn>> all;
    all.reserve(conns.size());
    for (auto& [p, c] : conns) all.push_back(c);
    for (auto& cp : all) {
      Conn& c = *cp;
      if (c.phase == Phase::kClosed) continue;
      if ((c.phase == Phase::kHandshake || c.phase == Phase::kHello) && now > c.deadline) {
        CloseWithError(c, codes::kIdleTimeout, "no HELLO within the hello time-out");
        continue;
      }
      if (c.pending() > 0 && now - c.last_tx > opt.send_timeout) {
        Close(c, "send time-out: the peer reads nothing");
        continue;
      }
      if (c.phase == Phase::kClosing) continue;
      if (!c.read_paused && now - c.last_rx > opt.idle_timeout) {
        CloseWithError(c, codes::kIdleTimeout, "no frame within the idle time-out");
        continue;
      }
      if (c.phase == Phase::kConsole && c.peer != nullptr && now - c.session_activity > opt.session_idle_timeout) {
        EndSession(c, codes::kIdleTimeout, true);
      }
    }
  }

  Conn* OnlineClient(const std::string& id) {
    auto it = online.find(id);
    return it == online.end() || it->second->phase != Phase::kClient ? nullptr : it->second;
  }

  void SendWithCompletion(const std::string& id, FrameType type, std::string payload, Completion done) {
    Conn* c = OnlineClient(id);
    if (c == nullptr) {
      if (done) done(Error(Errc::kNotFound, "client '" + id + "' is not connected"));
      return;
    }
    if (payload.size() > MaxPayload(type)) {
      if (done) done(Error(Errc::kInvalidArgument, std::string(FrameTypeName(type)) + " payload over the frame limit"));
      return;
    }
    Queue(*c, type, payload);
    if (done) c->completions.emplace_back(c->queued_total, std::move(done));
    Flush(*c);
  }

  void Shutdown() {
    stopping = true;
    asio::error_code ignored;
    acceptor.close(ignored);
    sweep.cancel();
    accept_retry.cancel();
    wakeup.cancel();
    std::vector<std::shared_ptr<Conn>> all;
    for (auto& [p, c] : conns) all.push_back(c);
    for (auto& c : all) Close(*c, "relay stopping");
    graveyard.clear();
  }
};

Server::Server(ServerOptions options, ClientStore& store, const Clock& clock, ServerObserver* observer)
    : impl_(std::make_shared<Impl>(std::move(options), store, clock, observer)) {}

Server::~Server() {
  Stop();
  if (impl_->ctx != nullptr) SSL_CTX_free(impl_->ctx);
}

Status Server::Start() {
  Impl& s = *impl_;
  if (s.thread.joinable()) return Error(Errc::kInvalidArgument, "relay: already started");
  std::signal(SIGPIPE, SIG_IGN);  // a peer vanishing mid-write must be an error, not a signal
  s.ctx = SSL_CTX_new(TLS_server_method());
  if (s.ctx == nullptr) return Error(Errc::kInternal, "TLS context: " + OpenSslError());
  SSL_CTX_set_min_proto_version(s.ctx, TLS1_3_VERSION);
  SSL_CTX_set_options(s.ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
  SSL_CTX_set_num_tickets(s.ctx, 0);
  SSL_CTX_set_session_cache_mode(s.ctx, SSL_SESS_CACHE_OFF);
  // Whole socket reads instead of a header read and a body read per record. Safe with the read
  // loop: it reads until OpenSSL would block, and a resumed reader reads before waiting on the
  // socket, so bytes OpenSSL buffered are never stranded; RELEASE_BUFFERS frees the buffer when empty.
  SSL_CTX_set_read_ahead(s.ctx, 1);
  SSL_CTX_set_default_read_buffer_len(s.ctx, kTlsReadAhead);
  SSL_CTX_set_mode(s.ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ENABLE_PARTIAL_WRITE | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
  if (SSL_CTX_use_certificate_chain_file(s.ctx, s.opt.certificate_chain.c_str()) != 1) {
    return Error(Errc::kInvalidArgument, s.opt.certificate_chain.string() + ": cannot load the certificate chain: " + OpenSslError());
  }
  if (SSL_CTX_use_PrivateKey_file(s.ctx, s.opt.private_key.c_str(), SSL_FILETYPE_PEM) != 1) {
    return Error(Errc::kInvalidArgument, s.opt.private_key.string() + ": cannot load the private key: " + OpenSslError());
  }
  if (SSL_CTX_check_private_key(s.ctx) != 1) {
    return Error(Errc::kInvalidArgument, s.opt.private_key.string() + ": does not match the certificate");
  }
  if (s.opt.checkin_interval > std::chrono::hours(24)) s.opt.checkin_interval = std::chrono::hours(24);
  asio::error_code ec;
  auto address = asio::ip::make_address(s.opt.address, ec);
  if (ec) return Error(Errc::kInvalidArgument, "listen address '" + s.opt.address + "': " + ec.message());
  tcp::endpoint ep(address, s.opt.port);
  s.acceptor.open(ep.protocol(), ec);
  if (!ec) s.acceptor.set_option(tcp::acceptor::reuse_address(true), ec);
  if (!ec) s.acceptor.bind(ep, ec);
  if (!ec) s.acceptor.listen(asio::socket_base::max_listen_connections, ec);
  if (ec) {
    return Error(Errc::kIo, "listen on " + s.opt.address + ":" + std::to_string(s.opt.port) + ": " + ec.message());
  }
  s.bound_port = s.acceptor.local_endpoint(ec).port();
  s.tokens = std::max(s.opt.accept_rate, 1.0);
  s.tokens_at = SteadyClock::now();
  s.Accept();
  s.ArmSweep();
  s.thread = std::thread([impl = impl_] { impl->Run(); });
  return OkStatus();
}

std::uint16_t Server::port() const { return impl_->bound_port; }

void Server::Stop() {
  Impl& s = *impl_;
  if (!s.thread.joinable() || s.stopped.exchange(true)) return;
  // Shutdown closes the acceptor, the timers and every socket, so run() returns once the aborted
  // handlers have run (which also drops every reference they hold).
  asio::post(s.io, [impl = impl_] { impl->Shutdown(); });
  s.thread.join();
}

void Server::Drain(std::function<void()> on_drained) {
  asio::post(impl_->io, [impl = impl_, cb = std::move(on_drained)]() mutable {
    impl->st.draining = true;
    impl->on_drained = std::move(cb);
    impl->Log("drain mode: refusing new clients and sessions");
    impl->CheckDrained();
  });
}

void Server::SendUpgrade(const std::string& client_id, const Json& offer, Completion done) {
  asio::post(impl_->io, [impl = impl_, client_id, payload = ControlJson(offer), done = std::move(done)]() mutable {
    impl->SendWithCompletion(client_id, FrameType::kUpgrade, std::move(payload), std::move(done));
  });
}

void Server::SendBuildChunk(const std::string& client_id, std::string bytes, Completion done) {
  asio::post(impl_->io, [impl = impl_, client_id, bytes = std::move(bytes), done = std::move(done)]() mutable {
    impl->SendWithCompletion(client_id, FrameType::kBuildChunk, std::move(bytes), std::move(done));
  });
}

void Server::RunAt(std::chrono::steady_clock::time_point when, std::function<void()> fn) {
  asio::post(impl_->io, [impl = impl_, when, fn = std::move(fn)]() mutable {
    if (impl->stopping) return;
    impl->wakeup.expires_at(when);  // aborts the wait it replaces
    impl->wakeup.async_wait([fn = std::move(fn)](const asio::error_code& ec) {
      if (!ec) fn();
    });
  });
}

void Server::DisconnectClient(const std::string& client_id, std::string code, std::string message) {
  asio::post(impl_->io, [impl = impl_, client_id, code = std::move(code), message = std::move(message)] {
    if (Conn* c = impl->OnlineClient(client_id)) {
      // The code must outlive the call only; keep it in a local string.
      impl->CloseWithError(*c, code.c_str(), message);
    }
  });
}

void Server::ListOnlineClients(std::function<void(std::vector<ClientInfo>)> done) {
  asio::post(impl_->io, [impl = impl_, done = std::move(done)] {
    std::vector<ClientInfo> out;
    out.reserve(impl->online.size());
    for (const auto& [id, c] : impl->online) {
      ClientInfo info;
      info.id = id;
      if (auto rec = impl->store.FindClient(id)) {
        info.version = rec->version;
        info.platform = rec->platform;
        info.mode = rec->mode;
      }
      out.push_back(std::move(info));
    }
    done(std::move(out));
  });
}

void Server::Post(std::function<void()> fn) { asio::post(impl_->io, std::move(fn)); }

ServerStats Server::stats() const {
  const auto& a = impl_->st;
  ServerStats s;
  s.connections = a.connections;
  s.clients = a.clients;
  s.consoles = a.consoles;
  s.sessions = a.sessions;
  s.accepted = a.accepted;
  s.refused_rate = a.refused_rate;
  s.refused_cap = a.refused_cap;
  s.auth_failures = a.auth_failures;
  s.protocol_errors = a.protocol_errors;
  s.peak_session_buffered = a.peak_session_buffered;
  s.backpressure_pauses = a.backpressure_pauses;
  s.draining = a.draining;
  return s;
}

}  // namespace upkeep::relay
