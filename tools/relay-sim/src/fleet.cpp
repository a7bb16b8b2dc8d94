// The simulated fleet. Single I/O thread: clients, consoles and their connections are touched only
// there, so nothing on the hot path locks; public methods post and wait.
#include "upkeep/relay_sim/fleet.hpp"

#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sys/socket.h>
#include <sys/types.h>

#include <cerrno>
#include <cstring>
#include <ctime>

#include <asio.hpp>

#include <algorithm>
#include <cmath>
#include <csignal>
#include <future>
#include <thread>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/frame.hpp"

namespace upkeep::relay::sim {
namespace {

using SteadyClock = std::chrono::steady_clock;
using TimePoint = SteadyClock::time_point;
using asio::ip::tcp;

constexpr std::size_t kReadBuffer = 16 * 1024 + 64;
constexpr int kReadsPerTurn = 8;
constexpr std::size_t kMaxField = 256;
constexpr std::uint64_t kMaxSecretsFileBytes = 64ull << 20;
constexpr std::uint64_t kMaxBuildBytes = 4ull << 30;
constexpr std::chrono::milliseconds kSweep{20};
constexpr std::chrono::milliseconds kSlot{100};

enum class State : std::uint8_t { kOffline, kConnecting, kOnline, kRefused };

const char* StateName(State s, bool downloading) {
  switch (s) {
    case State::kOffline: return "offline";
    case State::kConnecting: return "connecting";
    case State::kOnline: return downloading ? "downloading" : "online";
    case State::kRefused: return "refused";
  }
  return "unknown";
}

std::string Dump(const Json& j) {
  try {
    return j.dump();
  } catch (const std::exception&) {
    return "{}";
  }
}

Expected<std::string> Field(const Json& j, const char* key, std::size_t max) {
  UPK_TRY_ASSIGN(std::string v, GetString(j, key));
  if (v.size() > max) return Error(Errc::kLimit, std::string("field '") + key + "' is longer than " + std::to_string(max));
  return v;
}

}  // namespace

// ---- secrets file ----

Expected<SecretsFile> LoadSecretsFile(const std::filesystem::path& path) {
  const std::string where = path.string();
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, kMaxSecretsFileBytes));
  auto parsed = ParseJson(text);
  if (!parsed.ok()) return parsed.error().Wrap(where);
  const Json& j = *parsed;
  if (!j.is_object()) return Error(Errc::kParse, where + ": not a JSON object");
  auto arr = GetArray(j, "clients");
  if (!arr.ok()) return arr.error().Wrap(where);
  SecretsFile out;
  std::size_t i = 0;
  for (const Json& e : **arr) {
    const std::string entry = where + ": clients[" + std::to_string(i++) + "]";
    if (!e.is_object()) return Error(Errc::kParse, entry + ": not an object");
    SimClientSpec s;
    auto id = Field(e, "id", kMaxIdBytes);
    if (!id.ok()) return id.error().Wrap(entry);
    s.id = *id;
    if (!IsValidId(s.id)) return Error(Errc::kInvalidArgument, entry + ": id is not 1..128 of [A-Za-z0-9._:-]");
    auto secret = Field(e, "secret", kMaxSecretBytes);
    if (!secret.ok() || secret->size() < kMinSecretBytes)
      return Error(Errc::kInvalidArgument, entry + " (" + s.id + "): field 'secret' missing or not 16..1024 bytes");
    s.secret = *secret;
    for (auto [key, dst] : {std::pair<const char*, std::string*>{"version", &s.version}, {"platform", &s.platform},
                            {"mode", &s.mode}}) {
      if (!e.contains(key)) continue;
      auto v = Field(e, key, kMaxField);
      if (!v.ok()) return v.error().Wrap(entry + " (" + s.id + ")");
      *dst = *v;
    }
    if (s.mode != "active" && s.mode != "passive")
      return Error(Errc::kInvalidArgument, entry + " (" + s.id + "): mode must be active or passive");
    out.clients.push_back(std::move(s));
  }
  if (j.contains("console_token")) {
    auto t = Field(j, "console_token", kMaxSecretBytes);
    if (!t.ok()) return t.error().Wrap(where);
    out.console_token = *t;
  }
  return out;
}

Json SecretsToJson(const SecretsFile& secrets) {
  Json arr = Json::array();
  for (const auto& c : secrets.clients)
    arr.push_back(Json{{"id", c.id}, {"secret", c.secret}, {"version", c.version}, {"platform", c.platform},
                       {"mode", c.mode}});
  Json j{{"clients", std::move(arr)}};
  if (!secrets.console_token.empty()) j["console_token"] = secrets.console_token;
  return j;
}

Json FleetSummary::ToJson() const {
  Json j;
  j["clients"] = clients;
  j["by_state"] = by_state;
  j["by_version"] = by_version;
  j["checkins"] = checkins;
  j["connect_failures"] = connect_failures;
  j["refusals"] = refusals;
  j["upgrades"] = Json{{"installed", upgrades_installed}, {"failed", upgrades_failed}, {"stalled", upgrades_stalled}};
  j["build_bytes_per_second"] = build_bytes_per_second;
  j["max_concurrent_downloading"] = max_concurrent_downloading;
  j["console"] = Json{{"sessions", console_sessions},
                      {"errors", console_errors},
                      {"round_trips", console_latency.count},
                      {"latency_us", Json{{"p50", console_latency.p50_us},
                                          {"p99", console_latency.p99_us},
                                          {"p99_9", console_latency.p999_us},
                                          {"max", console_latency.max_us}}}};
  j["slot_ms"] = slot_ms;
  j["build_bytes_per_slot"] = build_bytes_per_slot;
  j["downloading_per_slot"] = downloading_per_slot;
  j["waiting_per_slot"] = waiting_per_slot;
  j["first_chunk_ms"] = first_chunk_ms;
  j["last_waiting_ms"] = last_waiting_ms;
  j["start_unix_ms"] = start_unix_ms;
  j["io_thread"] = Json{{"cpu_seconds", io_cpu_seconds}, {"max_sweep_gap_ms", max_sweep_gap_ms}};
  if (front_request.done || !front_request.client_id.empty()) j["front_request"] = front_request.ToJson();
  j["elapsed_seconds"] = elapsed_seconds;
  return j;
}

Json FrontRequestSummary::ToJson() const {
  return Json{{"done", done},
              {"client_id", client_id},
              {"answer", answer},
              {"message", message},
              {"waiting_at_answer", waiting_at_answer},
              {"started", started},
              {"others_started_between", others_started_between},
              {"others_started_while_asking", others_started_while_asking},
              {"others_read_after_answer", others_read_after_answer},
              {"others_between_ids", others_between_ids},
              {"wait_ms", wait_ms}};
}

// ---- the fleet ----

// The read side of a connection's TLS: recvmsg() with SO_TIMESTAMPNS, so each TLS record comes with
// the kernel's arrival time. On loopback that is when the relay wrote it; build bytes are counted
// at that time, not when this (one, possibly descheduled) I/O thread got round to reading them, so
// the bandwidth windows measure the relay's pacing and not the simulator's scheduling.
struct RxBio {
  int fd = -1;
  bool has_time = false;
  timespec time{};  // CLOCK_REALTIME arrival of the last bytes read
};

namespace {

int RxBioRead(BIO* bio, char* buf, size_t len, size_t* readbytes) {
  auto* rx = static_cast<RxBio*>(BIO_get_data(bio));
  BIO_clear_retry_flags(bio);
  iovec iov{buf, len};
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(timespec)) + 64];
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = sizeof(control);
  ssize_t n = ::recvmsg(rx->fd, &msg, 0);
  if (n > 0) {
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c))
      if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_TIMESTAMPNS && c->cmsg_len >= CMSG_LEN(sizeof(timespec))) {
        std::memcpy(&rx->time, CMSG_DATA(c), sizeof(timespec));
        rx->has_time = true;
      }
    *readbytes = static_cast<size_t>(n);
    return 1;
  }
  if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) BIO_set_retry_read(bio);
  *readbytes = 0;
  return 0;  // EOF or error: SSL_get_error reports it as for a socket BIO
}

long RxBioCtrl(BIO*, int cmd, long, void*) { return cmd == BIO_CTRL_FLUSH ? 1 : 0; }

int RxBioCreate(BIO* bio) {
  BIO_set_init(bio, 1);
  return 1;
}

BIO_METHOD* RxBioMethod() {
  static BIO_METHOD* method = [] {
    BIO_METHOD* m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "relay-sim rx");
    if (m != nullptr) {
      BIO_meth_set_read_ex(m, RxBioRead);
      BIO_meth_set_ctrl(m, RxBioCtrl);
      BIO_meth_set_create(m, RxBioCreate);
    }
    return m;
  }();
  return method;
}

}  // namespace

struct Conn : std::enable_shared_from_this<Conn> {
  Conn(Fleet::Impl* i, tcp::socket s, bool is_console, std::size_t idx)
      : impl(i), sock(std::move(s)), console(is_console), index(idx) {}
  ~Conn() {
    if (ssl != nullptr) SSL_free(ssl);
  }
  Fleet::Impl* impl;
  tcp::socket sock;
  bool console;
  std::size_t index;
  SSL* ssl = nullptr;
  bool connected = false;
  bool handshaking = true;
  bool closed = false;
  bool close_after_flush = false;
  bool read_waiting = false;
  bool write_waiting = false;
  bool read_paused = false;
  FrameDecoder decoder;
  RxBio rx;  // the read BIO's state; a member, so it outlives `ssl` (freed in ~Conn)
  std::string out;
  std::size_t out_off = 0;
  TimePoint last_tx;
  TimePoint resume_at;
};

struct Download {
  std::string version, sha256, signature;
  std::uint64_t length = 0;
  std::uint64_t received = 0;
  bool receiving = false;  // counted in downloading_now (from UPGRADE to the last byte)
  bool stall = false;
  TimePoint first_byte;
  Hasher hasher;
};

struct SimClient {
  SimClientSpec spec;
  State state = State::kOffline;
  std::shared_ptr<Conn> conn;
  TimePoint next_connect;
  TimePoint online_since;
  std::string checked_in_version;  // version of the last WELCOMEd HELLO
  std::chrono::milliseconds heartbeat{30000};
  bool in_session = false;
  bool stalled_once = false;
  std::unique_ptr<Download> dl;
};

struct SimConsole {
  State state = State::kOffline;
  std::shared_ptr<Conn> conn;
  TimePoint next_connect;
  std::string client_id;
  bool opening = false;
  bool paired = false;
  int writes_done = 0;
  std::size_t echo_got = 0;
  bool waiting_echo = false;
  TimePoint sent_at;
  TimePoint next_write;
};

struct Fleet::Impl : std::enable_shared_from_this<Fleet::Impl> {
  Impl(FleetOptions o, std::vector<SimClientSpec> specs, Random& r) : opt(std::move(o)), random(r), sweep(io) {
    clients.resize(specs.size());
    for (std::size_t i = 0; i < specs.size(); ++i) clients[i].spec = std::move(specs[i]);
    consoles.resize(static_cast<std::size_t>(std::max(opt.consoles, 0)));
    if (opt.front_request_after >= 0) {
      front_index = consoles.size();
      consoles.emplace_back();
    }
  }
  ~Impl() {
    if (ctx != nullptr) SSL_CTX_free(ctx);
  }

  FleetOptions opt;
  Random& random;
  asio::io_context io;
  asio::steady_timer sweep;
  std::thread thread;
  bool running = false;
  bool stopping = false;
  SSL_CTX* ctx = nullptr;
  tcp::endpoint endpoint;
  std::vector<std::uint8_t> read_buf = std::vector<std::uint8_t>(kReadBuffer);
  std::vector<SimClient> clients;
  std::vector<SimConsole> consoles;
  std::size_t cursor = 0;
  double tokens = 0;
  TimePoint tokens_at, start;

  // stats (I/O thread only)
  std::uint64_t checkins = 0, connect_failures = 0, installed = 0, failed = 0, stalled = 0;
  std::uint64_t downloading_now = 0, max_downloading = 0, console_sessions = 0, console_errors = 0;
  std::map<std::string, std::uint64_t> refusals;
  std::vector<std::uint64_t> windows;
  std::vector<std::uint32_t> latencies_us;
  std::vector<std::uint64_t> slot_bytes, slot_downloading, slot_waiting;
  double first_chunk_ms = -1, last_waiting_ms = -1;
  std::int64_t start_unix_ms = 0;
  bool holding = false;
  TimePoint last_sweep;
  SteadyClock::duration max_sweep_gap{0};
  std::int64_t start_realtime_ns = 0;

  // When the bytes just read arrived (the kernel's receive time of the last TLS record, on the
  // steady clock); `now` when the kernel gave no time or it is implausible.
  TimePoint Arrival(const Conn& c, TimePoint now) const {
    if (!c.rx.has_time) return now;
    const std::int64_t ns = static_cast<std::int64_t>(c.rx.time.tv_sec) * 1000000000 + c.rx.time.tv_nsec;
    const TimePoint t = start + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::nanoseconds(ns - start_realtime_ns));
    return t <= now && t >= start ? t : now;
  }

  // The front request (FleetOptions::front_request_after).
  static constexpr std::size_t kNoFront = static_cast<std::size_t>(-1);
  std::size_t front_index = kNoFront;
  std::size_t front_client = kNoFront;
  bool front_asked = false;
  TimePoint front_asked_at, front_answer_at;  // OPEN sent (our clock); answer written (kernel arrival)
  // Every UPGRADE after the OPEN: kernel arrival (the relay's write order), whose, read after the answer.
  struct FrontUpgrade {
    TimePoint arrived;
    bool target;
    bool read_after_answer;
    std::string id;
  };
  std::vector<FrontUpgrade> front_upgrades;

  // Orders the UPGRADEs by when the relay wrote them (kernel arrival), not when this thread read
  // them: the relay writes on one thread, so that is its order.
  FrontRequestSummary FrontSummary() const {
    FrontRequestSummary f = front;
    if (!f.done) return f;
    std::optional<TimePoint> target;
    for (const auto& u : front_upgrades)
      if (u.target && (!target || u.arrived < *target)) target = u.arrived;
    f.started = target.has_value();
    f.others_started_between = f.others_started_while_asking = f.others_read_after_answer = 0;
    for (const auto& u : front_upgrades) {
      if (u.target) continue;
      if (u.arrived > front_answer_at && (!target || u.arrived < *target)) {
        f.others_started_between++;
        if (f.others_between_ids.size() < 256) f.others_between_ids.push_back(u.id);
      }
      if (u.arrived <= front_answer_at && u.arrived >= front_asked_at) f.others_started_while_asking++;
      if (u.arrived <= front_answer_at && u.read_after_answer) f.others_read_after_answer++;
    }
    if (target)
      f.wait_ms = std::max(0.0, std::chrono::duration<double, std::milli>(*target - front_answer_at).count());
    return f;
  }
  FrontRequestSummary front;

  bool IsFront(const SimConsole& co) const { return front_index != kNoFront && &co == &consoles[front_index]; }

  double MsSince(TimePoint t) const { return std::chrono::duration<double, std::milli>(t - start).count(); }

  // The index of `now`'s slot; new slots start with the current number of receiving clients.
  std::size_t Slot(TimePoint now) {
    auto w = static_cast<std::size_t>(std::max<std::int64_t>(0, std::chrono::duration_cast<std::chrono::milliseconds>(now - start).count() / kSlot.count()));
    if (slot_bytes.size() <= w) {
      slot_bytes.resize(w + 1, 0);
      slot_downloading.resize(w + 1, downloading_now);
      slot_waiting.resize(w + 1, 0);
    }
    return w;
  }

  // Online at an old version, checked in at least one slot ago and not offered the build yet: a
  // client the relay starts within a slot of its check-in was never held back by a cap.
  bool Waiting(const SimClient& cl, TimePoint now) const {
    return cl.state == State::kOnline && !cl.dl && cl.spec.version != opt.target_version && now - cl.online_since >= kSlot;
  }

  std::uint64_t RandomBelow(std::uint64_t n) {
    if (n == 0) return 0;
    Bytes b = random.Generate(8);
    std::uint64_t v = 0;
    for (auto x : b) v = (v << 8) | x;
    return v % n;
  }

  // ---- set-up ----
  Status Init() {
    asio::error_code ec;
    auto addr = asio::ip::make_address(opt.host, ec);
    if (ec) return Error(Errc::kInvalidArgument, "relay address '" + opt.host + "': not an IP literal");
    if (opt.port == 0) return Error(Errc::kInvalidArgument, "relay port: must be 1..65535");
    endpoint = tcp::endpoint(addr, opt.port);
    if (opt.connect_rate <= 0) return Error(Errc::kInvalidArgument, "connect rate: must be positive");
    if (opt.stall_fraction < 0 || opt.stall_fraction > 1)
      return Error(Errc::kInvalidArgument, "stall fraction: must be 0..1");
    if (opt.chunk_rate < 0) return Error(Errc::kInvalidArgument, "chunk rate: must be >= 0");
    if ((opt.consoles > 0 || opt.front_request_after >= 0) && opt.console_token.size() < kMinSecretBytes)
      return Error(Errc::kInvalidArgument, "consoles need a console token of at least 16 bytes");
    if (opt.console_write_bytes == 0 || opt.console_write_bytes > kMaxFramePayload)
      return Error(Errc::kInvalidArgument, "console write size: must be 1..65536");
    ctx = SSL_CTX_new(TLS_client_method());
    if (ctx == nullptr) return Error(Errc::kInternal, "SSL_CTX_new failed");
    SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS | SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
    if (SSL_CTX_load_verify_locations(ctx, opt.ca_file.c_str(), nullptr) != 1) {
      ERR_clear_error();
      return Error(Errc::kIo, opt.ca_file.string() + ": cannot load the CA certificate (PEM)");
    }
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    return OkStatus();
  }

  void Run() {
    start = SteadyClock::now();
    start_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                        std::chrono::system_clock::now().time_since_epoch()).count();
    timespec rt{};
    clock_gettime(CLOCK_REALTIME, &rt);
    start_realtime_ns = static_cast<std::int64_t>(rt.tv_sec) * 1000000000 + rt.tv_nsec;
    tokens_at = start;
    tokens = 1;
    for (auto& c : clients) c.next_connect = start;
    for (auto& c : consoles) c.next_connect = start;
    Sweep();
  }

  // ---- connections ----
  std::shared_ptr<Conn> Open(bool console, std::size_t index) {
    auto c = std::make_shared<Conn>(this, tcp::socket(io), console, index);
    c->last_tx = SteadyClock::now();
    c->sock.async_connect(endpoint, [c](const asio::error_code& ec) {
      if (c->closed) return;
      if (ec) {
        c->impl->connect_failures++;
        c->impl->Close(*c);
        return;
      }
      c->impl->Begin(*c);
    });
    return c;
  }

  void Begin(Conn& c) {
    asio::error_code ec;
    c.sock.non_blocking(true, ec);
    if (!ec) c.sock.set_option(tcp::no_delay(true), ec);
    c.ssl = ec ? nullptr : SSL_new(ctx);
    const int fd = static_cast<int>(c.sock.native_handle());
    const int on = 1;
    BIO* rbio = c.ssl == nullptr || RxBioMethod() == nullptr ? nullptr : BIO_new(RxBioMethod());
    BIO* wbio = rbio == nullptr ? nullptr : BIO_new_socket(fd, BIO_NOCLOSE);
    if (c.ssl == nullptr || rbio == nullptr || wbio == nullptr ||
        ::setsockopt(fd, SOL_SOCKET, SO_TIMESTAMPNS, &on, sizeof(on)) != 0) {
      if (rbio != nullptr) BIO_free(rbio);
      if (wbio != nullptr) BIO_free(wbio);
      ERR_clear_error();
      connect_failures++;
      Close(c);
      return;
    }
    c.rx.fd = fd;
    BIO_set_data(rbio, &c.rx);
    SSL_set_bio(c.ssl, rbio, wbio);
    SSL_set_connect_state(c.ssl);
    SSL_set_tlsext_host_name(c.ssl, opt.server_name.c_str());
    SSL_set1_host(c.ssl, opt.server_name.c_str());
    c.connected = true;
    Drive(c);
  }

  void WaitRead(Conn& c) {
    if (c.read_waiting || c.closed) return;
    c.read_waiting = true;
    c.sock.async_wait(tcp::socket::wait_read, [self = c.shared_from_this()](const asio::error_code& ec) {
      self->read_waiting = false;
      if (!ec && !self->closed) self->impl->Drive(*self);
    });
  }
  void WaitWrite(Conn& c) {
    if (c.write_waiting || c.closed) return;
    c.write_waiting = true;
    c.sock.async_wait(tcp::socket::wait_write, [self = c.shared_from_this()](const asio::error_code& ec) {
      self->write_waiting = false;
      if (!ec && !self->closed) self->impl->Drive(*self);
    });
  }

  // Advances the handshake, then writes what is queued and reads what arrived.
  void Drive(Conn& c) {
    if (c.closed || !c.connected) return;
    auto keep = c.shared_from_this();
    if (c.handshaking) {
      int r = SSL_do_handshake(c.ssl);
      if (r != 1) {
        int err = SSL_get_error(c.ssl, r);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ) return WaitRead(c);
        if (err == SSL_ERROR_WANT_WRITE) return WaitWrite(c);
        connect_failures++;
        return Close(c);
      }
      c.handshaking = false;
      SendHello(c);
    }
    if (!Flush(c)) return;
    if (!c.read_paused) ReadSome(c);
  }

  // False when the connection closed.
  bool Flush(Conn& c) {
    while (c.out_off < c.out.size()) {
      std::size_t n = std::min<std::size_t>(c.out.size() - c.out_off, 16384);
      int w = SSL_write(c.ssl, c.out.data() + c.out_off, static_cast<int>(n));
      if (w <= 0) {
        int err = SSL_get_error(c.ssl, w);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_WRITE) {
          WaitWrite(c);
          return true;
        }
        if (err == SSL_ERROR_WANT_READ) {
          WaitRead(c);
          return true;
        }
        Close(c);
        return false;
      }
      c.out_off += static_cast<std::size_t>(w);
      c.last_tx = SteadyClock::now();
    }
    c.out.clear();
    c.out_off = 0;
    if (c.out.capacity() > 4096) c.out.shrink_to_fit();
    if (c.close_after_flush) {
      Close(c);  // with close_notify
      return false;
    }
    return true;
  }

  void ReadSome(Conn& c) {
    for (int i = 0; i < kReadsPerTurn; ++i) {
      if (c.closed || c.read_paused) return;
      int n = SSL_read(c.ssl, read_buf.data(), static_cast<int>(read_buf.size()));
      if (n <= 0) {
        int err = SSL_get_error(c.ssl, n);
        ERR_clear_error();
        if (err == SSL_ERROR_WANT_READ) return WaitRead(c);
        if (err == SSL_ERROR_WANT_WRITE) return WaitWrite(c);
        return Close(c);
      }
      auto r = c.decoder.Feed(std::span<const std::uint8_t>(read_buf.data(), static_cast<std::size_t>(n)),
                              [&](const FramePiece& p) {
                                if (c.console)
                                  OnConsoleFrame(consoles[c.index], c, p);
                                else
                                  OnClientFrame(clients[c.index], c, p);
                                return !c.closed;
                              });
      if (c.closed) return;
      if (r.failed) {
        refusals["bad_frame_from_relay"]++;
        return Close(c);
      }
      if (!Flush(c)) return;
    }
    // Yield to the other connections, then continue.
    asio::post(io, [self = c.shared_from_this()] { self->impl->Drive(*self); });
  }

  void Queue(Conn& c, FrameType type, std::string_view payload) {
    if (c.closed) return;
    if (!AppendFrame(c.out, type, payload).ok()) return;
    if (c.connected && !c.handshaking && !c.write_waiting) Flush(c);
  }
  void QueueJson(Conn& c, FrameType type, const Json& j) { Queue(c, type, Dump(j)); }

  // Closes the socket and tells the owner; idempotent. An established TLS session ends with
  // close_notify (best effort, never waiting), so the relay logs a clean close, not a lost one.
  void Close(Conn& c) {
    if (c.closed) return;
    c.closed = true;
    if (c.ssl != nullptr && c.connected && !c.handshaking) {
      SSL_shutdown(c.ssl);
      ERR_clear_error();
    }
    asio::error_code ignored;
    c.sock.close(ignored);
    if (c.console)
      OnConsoleClosed(consoles[c.index]);
    else
      OnClientClosed(clients[c.index]);
  }

  void SendHello(Conn& c) {
    if (c.console) {
      QueueJson(c, FrameType::kHello, Json{{"role", "console"}, {"token", opt.console_token}});
      return;
    }
    const auto& s = clients[c.index].spec;
    QueueJson(c, FrameType::kHello, Json{{"role", "client"}, {"id", s.id}, {"secret", s.secret}, {"version", s.version},
                                         {"platform", s.platform}, {"mode", s.mode}});
  }

  // ---- clients ----
  void OnClientFrame(SimClient& cl, Conn& c, const FramePiece& p) {
    const TimePoint now = SteadyClock::now();
    switch (p.type) {
      case FrameType::kWelcome: {
        cl.state = State::kOnline;
        cl.online_since = now;
        cl.checked_in_version = cl.spec.version;
        checkins++;
        auto j = ParseJson(p.payload);
        cl.heartbeat = std::chrono::milliseconds(30000);
        if (j.ok() && j->is_object()) {
          auto hb = GetInt(*j, "heartbeat_seconds");
          if (hb.ok() && *hb >= 1 && *hb <= 3600) cl.heartbeat = std::chrono::milliseconds(*hb * 1000);
        }
        if (opt.heartbeat_override.count() > 0) cl.heartbeat = opt.heartbeat_override;
        return;
      }
      case FrameType::kError: {
        auto j = ParseJson(p.payload);
        std::string code = "unparsable_error";
        if (j.ok() && j->is_object()) {
          auto v = Field(*j, "code", 64);
          if (v.ok()) code = *v;
        }
        refusals[code]++;
        if (code == codes::kBadSecret || code == codes::kUnknownClient || code == codes::kBadHello)
          cl.state = State::kRefused;  // retrying cannot help
        return Close(c);
      }
      case FrameType::kPing: return Queue(c, FrameType::kPong, "");
      case FrameType::kOpened: cl.in_session = true; return;
      case FrameType::kClose: cl.in_session = false; return;
      case FrameType::kData: return Queue(c, FrameType::kData, p.payload);  // the echo
      case FrameType::kUpgrade: return OnUpgrade(cl, c, p.payload);
      case FrameType::kBuildChunk: return OnChunk(cl, c, p.payload, now);
      default: return;
    }
  }

  void Report(Conn& c, const std::string& version, bool ok, const std::string& detail) {
    QueueJson(c, FrameType::kBuildReport,
              Json{{"version", version}, {"result", ok ? "installed" : "failed"}, {"detail", detail}});
    if (ok)
      installed++;
    else
      failed++;
  }

  void EndReceiving(SimClient& cl) {
    if (cl.dl && cl.dl->receiving) {
      cl.dl->receiving = false;
      downloading_now--;
    }
  }

  void OnUpgrade(SimClient& cl, Conn& c, std::string_view payload) {
    if (front_asked) {
      const bool is_target = front_client != kNoFront && &cl == &clients[front_client];
      const TimePoint now = SteadyClock::now();
      front_upgrades.push_back(FrontUpgrade{Arrival(c, now), is_target, front.done, cl.spec.id});
    }
    EndReceiving(cl);
    cl.dl.reset();
    auto j = ParseJson(payload);
    auto bad = [&](const std::string& why) { Report(c, "", false, "bad UPGRADE: " + why); };
    if (!j.ok() || !j->is_object()) return bad("not a JSON object");
    auto version = Field(*j, "version", kMaxField);
    auto sha = Field(*j, "sha256", 64);
    auto sig = Field(*j, "signature", 4096);
    auto length = GetInt(*j, "length");
    if (!version.ok() || version->empty()) return bad("version");
    if (!sha.ok() || !IsLowerHex(*sha, 64)) return bad("sha256 is not 64 lower-case hex");
    if (!sig.ok() || sig->empty()) return bad("signature");
    if (!length.ok() || *length <= 0 || static_cast<std::uint64_t>(*length) > kMaxBuildBytes) return bad("length");
    auto d = std::make_unique<Download>();
    d->version = *version;
    d->sha256 = *sha;
    d->signature = *sig;
    d->length = static_cast<std::uint64_t>(*length);
    if (!cl.stalled_once && opt.stall_fraction > 0 &&
        static_cast<double>(RandomBelow(1000000)) < opt.stall_fraction * 1000000.0) {
      d->stall = true;
      cl.stalled_once = true;
    }
    cl.dl = std::move(d);
    // The client holds one of the relay's upgrade slots from UPGRADE until its last byte (the
    // relay frees it at the report that follows), so this count can never exceed the cap.
    cl.dl->receiving = true;
    downloading_now++;
    max_downloading = std::max(max_downloading, downloading_now);
    const std::size_t slot = Slot(SteadyClock::now());
    slot_downloading[slot] = std::max(slot_downloading[slot], downloading_now);
    QueueJson(c, FrameType::kBuildGet, Json{{"version", cl.dl->version}, {"offset", 0}});
  }

  void CountBytes(std::size_t n, TimePoint now) {
    auto w = static_cast<std::size_t>(std::chrono::duration_cast<std::chrono::seconds>(now - start).count());
    if (windows.size() <= w) windows.resize(w + 1, 0);
    windows[w] += n;
  }

  void OnChunk(SimClient& cl, Conn& c, std::string_view bytes, TimePoint now) {
    if (!cl.dl) return;  // not asked for: ignored (the relay may race a cancelled upgrade)
    Download& d = *cl.dl;
    const TimePoint arrived = Arrival(c, now);
    CountBytes(bytes.size(), arrived);
    const std::size_t slot = Slot(arrived);
    slot_bytes[slot] += bytes.size();
    if (first_chunk_ms < 0) first_chunk_ms = MsSince(arrived);
    if (d.received == 0) d.first_byte = now;
    if (d.received + bytes.size() > d.length) {
      std::string v = d.version;
      EndReceiving(cl);
      cl.dl.reset();
      return Report(c, v, false, "build is longer than announced");
    }
    d.hasher.Update(bytes);
    d.received += bytes.size();
    if (d.received == d.length) return Finish(cl, c);
    if (d.stall && d.received * 2 >= d.length) {
      d.stall = false;
      stalled++;
      c.read_paused = true;
      c.resume_at = now + opt.stall_time;
      return;
    }
    if (opt.chunk_rate > 0) {
      // Pause until the bytes so far fit the per-client rate (one TLS record of burst).
      double allowed_s = static_cast<double>(d.received) / opt.chunk_rate;
      auto due = d.first_byte + std::chrono::duration_cast<SteadyClock::duration>(std::chrono::duration<double>(allowed_s));
      if (due > now + kSweep) {
        c.read_paused = true;
        c.resume_at = due;
      }
    }
  }

  void Finish(SimClient& cl, Conn& c) {
    EndReceiving(cl);
    std::unique_ptr<Download> d = std::move(cl.dl);
    const std::string got = d->hasher.FinishHex();
    if (got != d->sha256) return Report(c, d->version, false, "sha256 mismatch");
    if (!opt.vendor_key) return Report(c, d->version, false, "no vendor key to check the signature");
    auto sig = FromHex(d->signature);
    if (!sig.ok() || !opt.vendor_key->Verify(relay::BuildSigningMessage(cl.spec.platform, d->version, d->sha256), *sig))
      return Report(c, d->version, false, "bad vendor signature");
    cl.spec.version = d->version;  // "installed"
    Report(c, d->version, true, "");
    // Restart with the new build: check in again at once.
    c.close_after_flush = true;
    cl.next_connect = SteadyClock::now();
    if (!c.write_waiting) Flush(c);
  }

  void OnClientClosed(SimClient& cl) {
    EndReceiving(cl);
    cl.dl.reset();
    cl.in_session = false;
    const TimePoint now = SteadyClock::now();
    if (cl.state != State::kRefused) {
      if (cl.conn && !cl.conn->handshaking && cl.state != State::kOnline && !cl.conn->close_after_flush)
        connect_failures++;  // TLS up but closed before WELCOME
      // next_connect was set by whoever closed on purpose; otherwise back off.
      if (cl.next_connect <= now && !(cl.conn && cl.conn->close_after_flush)) cl.next_connect = now + opt.reconnect_delay;
      cl.state = State::kOffline;
    }
    cl.conn.reset();
  }

  // ---- consoles ----
  SimClient* PickClient() {
    if (clients.empty()) return nullptr;
    for (int tries = 0; tries < 32; ++tries) {
      auto& cl = clients[RandomBelow(clients.size())];
      if (cl.state == State::kOnline && cl.spec.mode == "active" && !cl.dl && !cl.in_session) return &cl;
    }
    return nullptr;
  }

  void OnConsoleFrame(SimConsole& co, Conn& c, const FramePiece& p) {
    const TimePoint now = SteadyClock::now();
    switch (p.type) {
      case FrameType::kWelcome: co.state = State::kOnline; return;
      case FrameType::kError: {
        auto j = ParseJson(p.payload);
        std::string code = "unparsable_error";
        if (j.ok() && j->is_object()) {
          auto v = Field(*j, "code", 64);
          if (v.ok()) code = *v;
        }
        refusals[code]++;
        if (IsFront(co) && front_asked && !front.done) {
          std::string message;
          if (j.ok() && j->is_object()) {
            auto m = Field(*j, "message", 1024);
            if (m.ok()) message = *m;
          }
          FrontAnswered(co, code, message, Arrival(c, now));
          return Close(c);
        }
        console_errors++;
        if (code == codes::kBadSecret) co.state = State::kRefused;
        return Close(c);
      }
      case FrameType::kPing: return Queue(c, FrameType::kPong, "");
      case FrameType::kOpened:
        if (IsFront(co)) {
          FrontAnswered(co, "opened", "", Arrival(c, now));
          return QueueJson(c, FrameType::kClose, Json{{"reason", "done"}});
        }
        co.opening = false;
        co.paired = true;
        co.writes_done = 0;
        return SendEcho(co, c);
      case FrameType::kData: {
        if (!co.waiting_echo) return;
        co.echo_got += p.payload.size();
        if (co.echo_got < opt.console_write_bytes) return;
        co.waiting_echo = false;
        auto us = std::chrono::duration_cast<std::chrono::microseconds>(now - co.sent_at).count();
        latencies_us.push_back(static_cast<std::uint32_t>(std::min<std::int64_t>(us, UINT32_MAX)));
        if (++co.writes_done >= opt.writes_per_session) {
          QueueJson(c, FrameType::kClose, Json{{"reason", "done"}});
          co.paired = false;
          console_sessions++;
          return;
        }
        co.next_write = now + opt.console_pause;
        if (opt.console_pause.count() == 0) SendEcho(co, c);
        return;
      }
      case FrameType::kClose:
        if (co.paired && co.waiting_echo) console_errors++;
        if (co.paired) console_sessions++;
        co.paired = false;
        co.waiting_echo = false;
        return;
      default: return;
    }
  }

  void FrontAnswered(SimConsole& co, const std::string& answer, const std::string& message, TimePoint arrived) {
    front.done = true;
    front.answer = answer;
    front.message = message;
    front_answer_at = arrived;
    co.opening = false;
    co.state = State::kRefused;  // asked once; no reconnect
    for (std::size_t i = 0; i < clients.size(); ++i)
      if (i != front_client && Waiting(clients[i], front_answer_at)) front.waiting_at_answer++;
  }

  void SendEcho(SimConsole& co, Conn& c) {
    std::string bytes(opt.console_write_bytes, 'x');
    co.echo_got = 0;
    co.waiting_echo = true;
    co.sent_at = SteadyClock::now();
    Queue(c, FrameType::kData, bytes);
  }

  void OnConsoleClosed(SimConsole& co) {
    if (co.paired && co.waiting_echo) console_errors++;
    co.paired = co.opening = co.waiting_echo = false;
    if (co.state != State::kRefused) {
      co.state = State::kOffline;
      co.next_connect = SteadyClock::now() + opt.reconnect_delay;
    }
    co.conn.reset();
  }

  // ---- the periodic sweep: connects, heartbeats, passive leaves, paced reads, console turns ----
  void Sweep() {
    if (stopping) return;
    const TimePoint now = SteadyClock::now();
    if (last_sweep != TimePoint()) max_sweep_gap = std::max(max_sweep_gap, now - last_sweep);
    last_sweep = now;
    tokens = std::min(std::max(1.0, opt.connect_rate * 0.1),
                      tokens + std::chrono::duration<double>(now - tokens_at).count() * opt.connect_rate);
    tokens_at = now;
    const std::size_t n = clients.size();
    for (std::size_t k = 0; k < n; ++k) {
      std::size_t i = (cursor + k) % n;
      SimClient& cl = clients[i];
      if (cl.state == State::kOffline) {
        if ((cl.next_connect <= now || (holding && cl.spec.mode == "passive")) && tokens >= 1.0) {
          tokens -= 1.0;
          cl.state = State::kConnecting;
          cl.conn = Open(false, i);
          cursor = i + 1;
        }
        continue;
      }
      if (!cl.conn || cl.conn->closed) continue;
      Conn& c = *cl.conn;
      if (c.read_paused && c.resume_at <= now) {
        c.read_paused = false;
        Drive(c);
        if (!cl.conn) continue;
      }
      if (cl.state != State::kOnline) continue;
      if (cl.spec.mode == "passive" && !holding && !cl.dl && !cl.in_session &&
          now - cl.online_since >= opt.passive_linger) {
        cl.next_connect = now + opt.passive_interval;
        c.close_after_flush = true;
        Flush(c);
        continue;
      }
      if (now - c.last_tx >= cl.heartbeat) Queue(c, FrameType::kPing, "");
    }
    {
      const std::size_t slot = Slot(now);
      if (!opt.target_version.empty()) {
        const auto waiting = static_cast<std::uint64_t>(
            std::count_if(clients.begin(), clients.end(), [&](const SimClient& cl) { return Waiting(cl, now); }));
        slot_waiting[slot] = std::max(slot_waiting[slot], waiting);
        if (waiting > 0 && first_chunk_ms >= 0) last_waiting_ms = MsSince(now);
      }
    }
    for (std::size_t i = 0; i < consoles.size(); ++i) {
      SimConsole& co = consoles[i];
      if (i == front_index) {
        if (co.state == State::kOnline && co.conn && !front_asked &&
            installed >= static_cast<std::uint64_t>(opt.front_request_after)) {
          // The waiting client with the highest id: the relay queued the fleet by id, so it is among
          // the last to start unless the request moves it.
          for (std::size_t k = 0; k < clients.size(); ++k) {
            const SimClient& cl = clients[k];
            if (Waiting(cl, now) && cl.spec.mode == "active" && !cl.in_session &&
                (front_client == kNoFront || clients[front_client].spec.id < cl.spec.id))
              front_client = k;
          }
          if (front_client != kNoFront) {
            front_asked = true;
            front_asked_at = now;
            front.client_id = clients[front_client].spec.id;
            co.opening = true;
            QueueJson(*co.conn, FrameType::kOpen, Json{{"client_id", front.client_id}});
          }
        } else if (co.state == State::kOffline && co.next_connect <= now && tokens >= 1.0) {
          tokens -= 1.0;
          co.state = State::kConnecting;
          co.conn = Open(true, i);
        }
        continue;
      }
      if (co.state == State::kOffline) {
        if (co.next_connect <= now && tokens >= 1.0) {
          tokens -= 1.0;
          co.state = State::kConnecting;
          co.conn = Open(true, i);
        }
        continue;
      }
      if (co.state != State::kOnline || !co.conn) continue;
      if (!co.paired && !co.opening) {
        if (SimClient* target = PickClient()) {
          co.client_id = target->spec.id;
          co.opening = true;
          QueueJson(*co.conn, FrameType::kOpen, Json{{"client_id", co.client_id}});
        }
      } else if (co.paired && !co.waiting_echo && co.next_write <= now) {
        SendEcho(co, *co.conn);
      }
    }
    sweep.expires_after(kSweep);
    sweep.async_wait([self = shared_from_this()](const asio::error_code& ec) {
      if (!ec) self->Sweep();
    });
  }

  // ---- reports ----
  FleetSummary MakeSummary() const {
    FleetSummary s;
    s.clients = clients.size();
    for (const auto& c : clients) {
      s.by_state[StateName(c.state, c.dl != nullptr)]++;
      s.by_version[c.spec.version]++;
    }
    s.checkins = checkins;
    s.connect_failures = connect_failures;
    s.refusals = refusals;
    s.upgrades_installed = installed;
    s.upgrades_failed = failed;
    s.upgrades_stalled = stalled;
    s.build_bytes_per_second = windows;
    s.max_concurrent_downloading = max_downloading;
    s.console_sessions = console_sessions;
    s.console_errors = console_errors;
    std::vector<std::uint32_t> l = latencies_us;
    std::sort(l.begin(), l.end());
    s.console_latency.count = l.size();
    if (!l.empty()) {
      auto at = [&](double q) {
        auto idx = static_cast<std::size_t>(std::ceil(q * static_cast<double>(l.size()))) ;
        return static_cast<double>(l[std::min(l.size() - 1, idx == 0 ? 0 : idx - 1)]);
      };
      s.console_latency.p50_us = at(0.5);
      s.console_latency.p99_us = at(0.99);
      s.console_latency.p999_us = at(0.999);
      s.console_latency.max_us = static_cast<double>(l.back());
    }
    s.slot_ms = static_cast<std::uint32_t>(kSlot.count());
    s.build_bytes_per_slot = slot_bytes;
    s.downloading_per_slot = slot_downloading;
    s.waiting_per_slot = slot_waiting;
    s.first_chunk_ms = first_chunk_ms;
    s.last_waiting_ms = last_waiting_ms;
    s.start_unix_ms = start_unix_ms;
    s.max_sweep_gap_ms = std::chrono::duration<double, std::milli>(max_sweep_gap).count();
    timespec cpu{};
    if (clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu) == 0)
      s.io_cpu_seconds = static_cast<double>(cpu.tv_sec) + static_cast<double>(cpu.tv_nsec) / 1e9;
    s.front_request = FrontSummary();
    s.elapsed_seconds = running || start != TimePoint() ? std::chrono::duration<double>(SteadyClock::now() - start).count() : 0;
    return s;
  }

  template <typename F>
  auto OnIo(F f) -> decltype(f()) {
    if (!running) return f();
    std::packaged_task<decltype(f())()> task(std::move(f));
    auto fut = task.get_future();
    asio::post(io, [&task] { task(); });
    return fut.get();
  }

  void CloseAll() {
    stopping = true;
    asio::error_code ignored;
    sweep.cancel();
    for (auto& c : clients)
      if (c.conn) {
        c.state = State::kRefused;  // no reconnect
        Close(*c.conn);
      }
    for (auto& c : consoles)
      if (c.conn) {
        c.state = State::kRefused;
        Close(*c.conn);
      }
  }
};

Fleet::Fleet(FleetOptions options, std::vector<SimClientSpec> clients, Random& random)
    : impl_(std::make_shared<Impl>(std::move(options), std::move(clients), random)) {}

Fleet::~Fleet() { Stop(); }

Status Fleet::Start() {
  if (impl_->running) return Error(Errc::kInvalidArgument, "fleet already started");
  std::signal(SIGPIPE, SIG_IGN);  // OpenSSL writes the sockets: a relay gone mid-write is an error, not a signal
  UPK_TRY(impl_->Init());
  asio::post(impl_->io, [impl = impl_] { impl->Run(); });
  impl_->running = true;
  impl_->thread = std::thread([impl = impl_] {
    auto guard = asio::make_work_guard(impl->io);
    impl->io.run();
  });
  return OkStatus();
}

void Fleet::Stop() {
  if (!impl_->running) return;
  asio::post(impl_->io, [impl = impl_] {
    impl->CloseAll();
    impl->io.stop();
  });
  if (impl_->thread.joinable()) impl_->thread.join();
  impl_->running = false;
  // Run the cancelled handlers: they hold references to the Impl and the connections.
  impl_->io.restart();
  impl_->io.poll();
}

FleetSummary Fleet::Summary() {
  return impl_->OnIo([impl = impl_.get()] { return impl->MakeSummary(); });
}

bool Fleet::AllAtVersion(const std::string& version) {
  return impl_->OnIo([impl = impl_.get(), &version] {
    return std::all_of(impl->clients.begin(), impl->clients.end(), [&](const SimClient& c) {
      return c.spec.version == version && c.checked_in_version == version;
    });
  });
}

void Fleet::Hold() {
  impl_->OnIo([impl = impl_.get()] { impl->holding = true; });
}

std::size_t Fleet::OnlineCount() {
  return impl_->OnIo([impl = impl_.get()] {
    return static_cast<std::size_t>(std::count_if(impl->clients.begin(), impl->clients.end(),
                                                  [](const SimClient& c) { return c.state == State::kOnline; }));
  });
}

}  // namespace upkeep::relay::sim
