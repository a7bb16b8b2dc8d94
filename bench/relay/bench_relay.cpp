// bench_relay: the endpoints of the relay benchmarks (issue 6, (b) and (c)), the same for every
// middle so that only the middle differs:
//   --mode relay   console -> build/bin/relay serve -> client, bytes as DATA frames (HELLO, OPEN);
//   --mode socat   TLS client -> socat (TLS in, TLS out) -> this process's TLS server;
//   --mode direct  TLS client -> this process's TLS server (no relay: the latency baseline).
// Tests:
//   --test throughput --streams N --mib M: N parallel sessions each send M MiB; the receivers
//       count; prints the aggregate MiB/s from the start barrier to the last byte received.
//   --test latency --bg N --load-mibps R --probes K --interval-us U: N background sessions paced
//       to R MiB/s in total, plus one session where 1 KiB is written and the far end echoes it
//       back; prints p50/p99/p99.9/max of send -> last echoed byte, and the count over 40 ms.
// Output: one line of key=value pairs (bench/relay/run.sh parses it). Blocking sockets and one
// thread per stream end; every socket has 30 s send/receive time-outs so nothing waits forever.
// A benchmark tool, not production code: peers are not verified (loopback, throw-away certs).
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using Steady = std::chrono::steady_clock;

struct Options {
  std::string mode;  // relay | socat | direct
  std::string test;  // throughput | latency
  int port = 0;      // where the sender connects (relay, socat's listen port, or our listener)
  int listen = 0;    // our TLS server (socat's target; direct)
  std::string cert, key, secret, token, ciphersuites;
  int streams = 1;
  int mib = 256;
  int bg = 2;
  double load_mibps = 0;
  int probes = 2000;
  int interval_us = 5000;
  int warmup = 50;
  int first_client = 0;  // relay client ids used: c-<first_client + i>
  int middle_pid = 0;    // the relay or socat's parent: its CPU time (with reaped children) is reported
  int probe_rt = 0;      // 1: the probe and echo threads run SCHED_FIFO (the endpoints' own
                         // scheduling then adds nothing to what the middle adds)
};

[[noreturn]] void Die(const std::string& why) {
  std::fprintf(stderr, "bench_relay: %s\n", why.c_str());
  std::exit(1);
}

std::string SslError() {
  char buf[256];
  unsigned long e = ERR_get_error();
  if (e == 0) return "no OpenSSL error";
  ERR_error_string_n(e, buf, sizeof buf);
  return buf;
}

void SetSocketOptions(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  timeval tv{};
  tv.tv_sec = 30;
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
}

// One TLS connection over a blocking socket; owns both.
class Tls {
 public:
  Tls(int fd, SSL* ssl) : fd_(fd), ssl_(ssl) {}
  ~Tls() {
    SSL_shutdown(ssl_);  // best effort close_notify
    SSL_free(ssl_);
    close(fd_);
  }
  Tls(const Tls&) = delete;
  Tls& operator=(const Tls&) = delete;

  bool WriteAll(const void* data, std::size_t n) {
    const auto* p = static_cast<const std::uint8_t*>(data);
    while (n > 0) {
      int w = SSL_write(ssl_, p, static_cast<int>(std::min<std::size_t>(n, 1 << 30)));
      if (w <= 0) return false;
      p += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }
  // Some bytes (at most n); 0 at end of stream or on error.
  std::size_t ReadSome(void* data, std::size_t n) {
    int r = SSL_read(ssl_, data, static_cast<int>(std::min<std::size_t>(n, 1 << 30)));
    return r > 0 ? static_cast<std::size_t>(r) : 0;
  }
  bool ReadExact(void* data, std::size_t n) {
    auto* p = static_cast<std::uint8_t*>(data);
    while (n > 0) {
      std::size_t r = ReadSome(p, n);
      if (r == 0) return false;
      p += r;
      n -= r;
    }
    return true;
  }
  std::string Cipher() const { return std::string(SSL_get_version(ssl_)) + "/" + SSL_get_cipher_name(ssl_); }
  void ShutdownWrite() { shutdown(fd_, SHUT_WR); }

 private:
  int fd_;
  SSL* ssl_;
};

// A byte stream between the two endpoints: raw TLS bytes, or DATA frames through our relay.
class Stream {
 public:
  virtual ~Stream() = default;
  virtual bool Send(const std::uint8_t* data, std::size_t n) = 0;
  virtual std::size_t Recv(std::uint8_t* data, std::size_t n) = 0;  // 0: end of the stream
  virtual std::string Cipher() const = 0;
  virtual void Finish() = 0;  // no more sends
};

class RawStream final : public Stream {
 public:
  explicit RawStream(std::unique_ptr<Tls> tls) : tls_(std::move(tls)) {}
  bool Send(const std::uint8_t* data, std::size_t n) override { return tls_->WriteAll(data, n); }
  std::size_t Recv(std::uint8_t* data, std::size_t n) override { return tls_->ReadSome(data, n); }
  std::string Cipher() const override { return tls_->Cipher(); }
  void Finish() override { tls_->ShutdownWrite(); }

 private:
  std::unique_ptr<Tls> tls_;
};

constexpr std::uint8_t kHello = 0x01, kWelcome = 0x02, kError = 0x03, kPing = 0x04, kPong = 0x05, kOpen = 0x10,
                       kOpened = 0x11, kData = 0x12, kClose = 0x13;
constexpr std::size_t kMaxFramePayload = 65536;
// Throughput writes: 64 KiB less a frame header, so that in relay mode a DATA frame fills exactly
// four TLS records and every mode carries four records per write (a 64 KiB payload made every
// frame four full records plus one of 4 bytes: 25 % more records for the relay to open and seal
// than socat was given).
constexpr std::size_t kThroughputWrite = 4 * 16384 - 4;

void AppendHeader(std::vector<std::uint8_t>& out, std::uint8_t type, std::size_t len) {
  out.push_back(type);
  out.push_back(static_cast<std::uint8_t>(len >> 16));
  out.push_back(static_cast<std::uint8_t>(len >> 8));
  out.push_back(static_cast<std::uint8_t>(len));
}

bool SendFrame(Tls& tls, std::uint8_t type, const std::string& payload) {
  std::vector<std::uint8_t> f;
  AppendHeader(f, type, payload.size());
  f.insert(f.end(), payload.begin(), payload.end());
  return tls.WriteAll(f.data(), f.size());
}

// Reads one whole frame (control frames only: used during setup).
bool ReadFrame(Tls& tls, std::uint8_t& type, std::string& payload) {
  std::uint8_t h[4];
  if (!tls.ReadExact(h, 4)) return false;
  type = h[0];
  std::size_t len = (std::size_t{h[1]} << 16) | (std::size_t{h[2]} << 8) | h[3];
  if (len > kMaxFramePayload) return false;
  payload.assign(len, '\0');
  return len == 0 || tls.ReadExact(payload.data(), len);
}

class FramedStream final : public Stream {
 public:
  explicit FramedStream(std::unique_ptr<Tls> tls) : tls_(std::move(tls)) {}
  bool Send(const std::uint8_t* data, std::size_t n) override {
    while (n > 0) {
      std::size_t piece = std::min(n, kMaxFramePayload);
      buf_.clear();
      AppendHeader(buf_, kData, piece);
      buf_.insert(buf_.end(), data, data + piece);
      if (!tls_->WriteAll(buf_.data(), buf_.size())) return false;
      data += piece;
      n -= piece;
    }
    return true;
  }
  std::size_t Recv(std::uint8_t* data, std::size_t n) override {
    while (left_ == 0) {
      std::uint8_t h[4];
      if (!tls_->ReadExact(h, 4)) return 0;
      std::size_t len = (std::size_t{h[1]} << 16) | (std::size_t{h[2]} << 8) | h[3];
      if (len > kMaxFramePayload) return 0;
      if (h[0] == kData) {
        left_ = len;
        continue;
      }
      std::string skip(len, '\0');
      if (len > 0 && !tls_->ReadExact(skip.data(), len)) return 0;
      if (h[0] == kClose || h[0] == kError) return 0;
      if (h[0] == kPing && !SendFrame(*tls_, kPong, "")) return 0;
    }
    std::size_t r = tls_->ReadSome(data, std::min(n, left_));
    left_ -= r;
    return r;
  }
  std::string Cipher() const override { return tls_->Cipher(); }
  void Finish() override { SendFrame(*tls_, kClose, R"({"reason":"done"})"); }

 private:
  std::unique_ptr<Tls> tls_;
  std::size_t left_ = 0;
  std::vector<std::uint8_t> buf_;
};

struct Pair {
  std::unique_ptr<Stream> sender;    // the console (relay) or the TLS client
  std::unique_ptr<Stream> receiver;  // the relay's client, or the connection our server accepted
};

class Bench {
 public:
  explicit Bench(Options o) : o_(std::move(o)) {
    cctx_ = SSL_CTX_new(TLS_client_method());
    if (cctx_ == nullptr) Die("SSL_CTX_new: " + SslError());
    SSL_CTX_set_min_proto_version(cctx_, TLS1_3_VERSION);
    SSL_CTX_set_verify(cctx_, SSL_VERIFY_NONE, nullptr);
    if (!o_.ciphersuites.empty() && SSL_CTX_set_ciphersuites(cctx_, o_.ciphersuites.c_str()) != 1) {
      Die("--ciphersuites: " + SslError());
    }
    if (o_.mode != "relay") StartListener();
  }
  ~Bench() {
    if (lfd_ >= 0) close(lfd_);
    if (sctx_ != nullptr) SSL_CTX_free(sctx_);
    SSL_CTX_free(cctx_);
  }
  Bench(const Bench&) = delete;
  Bench& operator=(const Bench&) = delete;

  std::vector<Pair> MakePairs(int n) {
    std::vector<Pair> pairs(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
      auto& p = pairs[static_cast<std::size_t>(i)];
      if (o_.mode == "relay") {
        RelayPair(o_.first_client + i, p);
      } else {
        // Our server accepts on its own thread: direct, its handshake is the one Connect waits for.
        std::pair<std::uint8_t, std::unique_ptr<Tls>> got;
        std::thread acceptor([&] { got = Accept(); });
        auto tls = Connect();
        std::uint8_t tag = static_cast<std::uint8_t>(i);
        if (!tls->WriteAll(&tag, 1)) Die("tag write failed");
        acceptor.join();
        auto& [got_tag, accepted] = got;
        // One connection at a time, so the tag only checks that the middle delivered ours.
        if (got_tag != tag) Die("connection tag mismatch");
        p.sender = std::make_unique<RawStream>(std::move(tls));
        p.receiver = std::make_unique<RawStream>(std::move(accepted));
      }
    }
    return pairs;
  }

 private:
  std::unique_ptr<Tls> Connect() {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) Die("socket failed");
    SetSocketOptions(fd);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(o_.port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) Die("connect to port " + std::to_string(o_.port) + ": " + std::strerror(errno));
    SSL* ssl = SSL_new(cctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_connect(ssl) != 1) Die("TLS handshake with port " + std::to_string(o_.port) + ": " + SslError());
    return std::make_unique<Tls>(fd, ssl);
  }

  void StartListener() {
    sctx_ = SSL_CTX_new(TLS_server_method());
    if (sctx_ == nullptr) Die("SSL_CTX_new: " + SslError());
    SSL_CTX_set_min_proto_version(sctx_, TLS1_3_VERSION);
    if (!o_.ciphersuites.empty() && SSL_CTX_set_ciphersuites(sctx_, o_.ciphersuites.c_str()) != 1) {
      Die("--ciphersuites: " + SslError());
    }
    if (SSL_CTX_use_certificate_chain_file(sctx_, o_.cert.c_str()) != 1 ||
        SSL_CTX_use_PrivateKey_file(sctx_, o_.key.c_str(), SSL_FILETYPE_PEM) != 1) {
      Die("--cert/--key: " + SslError());
    }
    lfd_ = socket(AF_INET, SOCK_STREAM, 0);
    int one = 1;
    setsockopt(lfd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<std::uint16_t>(o_.listen));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(lfd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(lfd_, 64) != 0) {
      Die("listen on port " + std::to_string(o_.listen) + ": " + std::strerror(errno));
    }
  }

  std::pair<std::uint8_t, std::unique_ptr<Tls>> Accept() {
    pollfd pfd{};
    pfd.fd = lfd_;
    pfd.events = POLLIN;
    if (poll(&pfd, 1, 10000) != 1) Die("no connection reached our TLS server within 10 s");
    int fd = accept(lfd_, nullptr, nullptr);
    if (fd < 0) Die("accept failed");
    SetSocketOptions(fd);
    SSL* ssl = SSL_new(sctx_);
    SSL_set_fd(ssl, fd);
    if (SSL_accept(ssl) != 1) Die("TLS accept: " + SslError());
    auto tls = std::make_unique<Tls>(fd, ssl);
    std::uint8_t tag = 0;
    if (!tls->ReadExact(&tag, 1)) Die("no tag byte");
    return {tag, std::move(tls)};
  }

  void Expect(Tls& tls, std::uint8_t want, const char* who) {
    std::uint8_t type = 0;
    std::string payload;
    if (!ReadFrame(tls, type, payload)) Die(std::string(who) + ": connection lost during setup");
    if (type != want) Die(std::string(who) + ": unexpected frame type " + std::to_string(type) + ": " + payload);
  }

  void RelayPair(int index, Pair& p) {
    const std::string id = "c-" + std::to_string(index);
    auto client = Connect();
    if (!SendFrame(*client, kHello,
                   R"({"role":"client","id":")" + id + R"(","secret":")" + o_.secret +
                       R"(","version":"1.0.0","platform":"linux-x86_64","mode":"active"})")) {
      Die("client HELLO failed");
    }
    Expect(*client, kWelcome, "client");
    auto console = Connect();
    if (!SendFrame(*console, kHello, R"({"role":"console","token":")" + o_.token + R"("})")) Die("console HELLO failed");
    Expect(*console, kWelcome, "console");
    if (!SendFrame(*console, kOpen, R"({"client_id":")" + id + R"("})")) Die("OPEN failed");
    Expect(*console, kOpened, "console");
    Expect(*client, kOpened, "client");
    p.sender = std::make_unique<FramedStream>(std::move(console));
    p.receiver = std::make_unique<FramedStream>(std::move(client));
  }

  Options o_;
  SSL_CTX* cctx_ = nullptr;
  SSL_CTX* sctx_ = nullptr;
  int lfd_ = -1;
};

// utime + stime + cutime + cstime of a process in seconds (socat's forked children count once reaped).
double CpuSeconds(int pid) {
  if (pid <= 0) return 0;
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return 0;
  char buf[2048];
  std::size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* p = std::strrchr(buf, ')');
  if (p == nullptr) return 0;
  // After ")": field 3 (state) onwards; utime..cstime are fields 14..17.
  std::vector<std::string> fields;
  std::string cur;
  for (p += 2; *p != 0; ++p) {
    if (*p == ' ') {
      fields.push_back(cur);
      cur.clear();
    } else {
      cur += *p;
    }
  }
  if (fields.size() < 15) return 0;
  double ticks = 0;
  for (std::size_t i = 11; i <= 14; ++i) ticks += std::stod(fields[i]);
  return ticks / double(sysconf(_SC_CLK_TCK));
}

double Seconds(Steady::duration d) { return std::chrono::duration<double>(d).count(); }

void Throughput(const Options& o, Bench& bench) {
  auto pairs = bench.MakePairs(o.streams);
  const std::uint64_t each = std::uint64_t(o.mib) << 20;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  std::atomic<bool> failed{false};
  std::vector<std::thread> threads;
  for (auto& p : pairs) {
    threads.emplace_back([&, s = p.sender.get()] {
      std::vector<std::uint8_t> chunk(kThroughputWrite, 0x5a);
      ready++;
      while (!go) std::this_thread::yield();
      for (std::uint64_t sent = 0; sent < each;) {
        std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(chunk.size(), each - sent));
        if (!s->Send(chunk.data(), n)) {
          failed = true;
          return;
        }
        sent += n;
      }
    });
    threads.emplace_back([&, r = p.receiver.get()] {
      std::vector<std::uint8_t> buf(64 * 1024);
      std::uint64_t got = 0;
      while (got < each) {
        std::size_t n = r->Recv(buf.data(), static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), each - got)));
        if (n == 0) {
          failed = true;
          return;
        }
        got += n;
      }
    });
  }
  while (ready < o.streams) std::this_thread::yield();
  const double cpu0 = CpuSeconds(o.middle_pid);
  const auto t0 = Steady::now();
  go = true;
  for (auto& t : threads) t.join();
  const double secs = Seconds(Steady::now() - t0);
  if (failed) Die("a stream ended early (see the relay's log)");
  const std::string cipher_send = pairs[0].sender->Cipher(), cipher_recv = pairs[0].receiver->Cipher();
  for (auto& p : pairs) p.sender->Finish();
  pairs.clear();
  // socat's children linger 0.5 s after an EOF (its -t) before they exit and are reaped: wait 1 s.
  std::this_thread::sleep_for(std::chrono::milliseconds(o.middle_pid > 0 ? 1000 : 0));
  const double cpu = CpuSeconds(o.middle_pid) - cpu0;
  const double total_mib = double(o.streams) * o.mib;
  std::printf("mode=%s test=throughput streams=%d mib_each=%d seconds=%.3f mibps=%.1f middle_cpu_s=%.2f mib_per_cpu_s=%.0f cipher_send=%s cipher_recv=%s\n",
              o.mode.c_str(), o.streams, o.mib, secs, total_mib / secs, cpu, cpu > 0 ? total_mib / cpu : 0.0, cipher_send.c_str(),
              cipher_recv.c_str());
}

// The probe's two ends ahead of the background load's threads on the endpoints' CPU, so a probe
// never waits for a bulk thread's time slice there (the same for every middle and for direct).
void RaiseToRealtime(const Options& o) {
  if (o.probe_rt == 0) return;
  sched_param sp{};
  sp.sched_priority = 10;
  if (int e = pthread_setschedparam(pthread_self(), SCHED_FIFO, &sp); e != 0) Die("--probe-rt: SCHED_FIFO refused (root needed)");
}

void Latency(const Options& o, Bench& bench) {
  auto pairs = bench.MakePairs(o.bg + 1);
  Pair& echo = pairs[0];
  std::atomic<bool> stop{false};
  std::atomic<std::uint64_t> bg_bytes{0};
  std::vector<std::thread> threads;
  const double per_stream = o.bg > 0 ? o.load_mibps * 1048576.0 / o.bg : 0;
  const auto start = Steady::now();
  for (std::size_t i = 1; i < pairs.size(); ++i) {
    threads.emplace_back([&, s = pairs[i].sender.get()] {
      std::vector<std::uint8_t> chunk(16 * 1024, 0x5a);  // small writes so the pacing is smooth
      double sent = 0;
      while (!stop) {
        auto due = start + std::chrono::duration_cast<Steady::duration>(std::chrono::duration<double>(sent / per_stream));
        std::this_thread::sleep_until(due);
        if (!s->Send(chunk.data(), chunk.size())) return;
        sent += double(chunk.size());
      }
      s->Finish();
    });
    threads.emplace_back([&, r = pairs[i].receiver.get()] {
      std::vector<std::uint8_t> buf(64 * 1024);
      for (;;) {
        std::size_t n = r->Recv(buf.data(), buf.size());
        if (n == 0) return;
        bg_bytes += n;
      }
    });
  }
  threads.emplace_back([&o, r = echo.receiver.get()] {
    RaiseToRealtime(o);
    std::vector<std::uint8_t> buf(64 * 1024);
    for (;;) {
      std::size_t n = r->Recv(buf.data(), buf.size());
      if (n == 0 || !r->Send(buf.data(), n)) return;
    }
  });
  // Let the background load settle before probing.
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  RaiseToRealtime(o);
  const std::uint64_t bytes0 = bg_bytes;
  const auto p0 = Steady::now();
  std::vector<double> us;
  us.reserve(static_cast<std::size_t>(o.probes));
  std::vector<std::uint8_t> msg(1024, 0x33), back(1024);
  auto next = Steady::now();
  bool ok = true;
  for (int k = 0; k < o.warmup + o.probes && ok; ++k) {
    const auto t = Steady::now();
    ok = echo.sender->Send(msg.data(), msg.size());
    for (std::size_t got = 0; ok && got < msg.size();) {
      std::size_t n = echo.sender->Recv(back.data(), msg.size() - got);
      ok = n > 0;
      got += n;
    }
    if (k >= o.warmup) us.push_back(std::chrono::duration<double, std::micro>(Steady::now() - t).count());
    next += std::chrono::microseconds(o.interval_us);
    std::this_thread::sleep_until(next);
  }
  const double window = Seconds(Steady::now() - p0);
  const double load = double(bg_bytes - bytes0) / 1048576.0 / window;
  stop = true;
  echo.sender->Finish();
  for (auto& t : threads) t.join();
  if (!ok || us.empty()) Die("the echo session ended early");
  std::sort(us.begin(), us.end());
  auto q = [&](double f) { return us[std::min(us.size() - 1, static_cast<std::size_t>(f * double(us.size())))]; };
  const auto over40 = std::count_if(us.begin(), us.end(), [](double v) { return v > 40000.0; });
  std::printf(
      "mode=%s test=latency bg=%d load_target_mibps=%.1f load_mibps=%.1f probes=%zu p50_us=%.0f p99_us=%.0f p999_us=%.0f "
      "max_us=%.0f over40ms=%ld cipher_send=%s cipher_recv=%s\n",
      o.mode.c_str(), o.bg, o.load_mibps, load, us.size(), q(0.50), q(0.99), q(0.999), us.back(), static_cast<long>(over40),
      echo.sender->Cipher().c_str(), echo.receiver->Cipher().c_str());
}

Options Parse(int argc, char** argv) {
  Options o;
  std::map<std::string, std::string> kv;
  for (int i = 1; i < argc; ++i) {
    std::string k = argv[i];
    if (k.rfind("--", 0) != 0 || i + 1 >= argc) Die("usage: bench_relay --mode M --test T --port P [--OPTION VALUE]... (see the header)");
    kv[k.substr(2)] = argv[++i];
  }
  auto num = [&](const char* k, auto& out) {
    if (auto it = kv.find(k); it != kv.end()) {
      try {
        out = static_cast<std::remove_reference_t<decltype(out)>>(std::stod(it->second));
      } catch (const std::exception&) {
        Die(std::string("--") + k + ": not a number");
      }
      kv.erase(it);
    }
  };
  auto str = [&](const char* k, std::string& out) {
    if (auto it = kv.find(k); it != kv.end()) {
      out = it->second;
      kv.erase(it);
    }
  };
  str("mode", o.mode);
  str("test", o.test);
  str("cert", o.cert);
  str("key", o.key);
  str("secret", o.secret);
  str("token", o.token);
  str("ciphersuites", o.ciphersuites);
  num("port", o.port);
  num("listen", o.listen);
  num("streams", o.streams);
  num("mib", o.mib);
  num("bg", o.bg);
  num("load-mibps", o.load_mibps);
  num("probes", o.probes);
  num("interval-us", o.interval_us);
  num("warmup", o.warmup);
  num("first-client", o.first_client);
  num("middle-pid", o.middle_pid);
  num("probe-rt", o.probe_rt);
  if (!kv.empty()) Die("unknown option --" + kv.begin()->first);
  if (o.mode != "relay" && o.mode != "socat" && o.mode != "direct") Die("--mode must be relay, socat or direct");
  if (o.test != "throughput" && o.test != "latency") Die("--test must be throughput or latency");
  if (o.port <= 0 || o.port > 65535) Die("--port required");
  if (o.mode != "relay" && (o.listen <= 0 || o.cert.empty() || o.key.empty())) Die("--listen, --cert, --key required for socat/direct");
  if (o.mode == "relay" && (o.secret.empty() || o.token.empty())) Die("--secret and --token required for relay");
  if (o.streams < 1 || o.streams > 64 || o.bg < 0 || o.bg > 63 || o.mib < 1 || o.probes < 1 || o.interval_us < 0) Die("option out of range");
  if (o.test == "latency" && o.bg > 0 && o.load_mibps <= 0) Die("--load-mibps required with --bg");
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer gone mid-write is an error return, not a kill
  Options o = Parse(argc, argv);
  Bench bench(o);
  if (o.test == "throughput") {
    Throughput(o, bench);
  } else {
    Latency(o, bench);
  }
  return 0;
}
