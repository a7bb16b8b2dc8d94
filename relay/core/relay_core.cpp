#include "upkeep/relay/relay_core.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <shared_mutex>
#include <unordered_map>

#include "upkeep/common/hash.hpp"

namespace upkeep::relay {
namespace {

using SteadyClock = std::chrono::steady_clock;
constexpr std::size_t kHashChunk = 64 * 1024;
// Floor of the pacing timer: the scheduler may report a wake-up that is already due while a
// client's window is full; this keeps that from spinning.
constexpr std::chrono::milliseconds kMinWakeup{2};

class BuildFile {
 public:
  explicit BuildFile(int fd) : fd_(fd) {}
  ~BuildFile() { ::close(fd_); }
  BuildFile(const BuildFile&) = delete;
  BuildFile& operator=(const BuildFile&) = delete;
  int fd() const { return fd_; }

 private:
  int fd_;
};

std::string Errno() { return std::strerror(errno); }

// Reads exactly `length` bytes at `offset`; false on an error or a short file.
bool ReadAt(int fd, std::uint64_t offset, char* out, std::size_t length) {
  std::size_t done = 0;
  while (done < length) {
    ssize_t n = ::pread(fd, out + done, length - done, static_cast<off_t>(offset + done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<std::size_t>(n);
  }
  return true;
}

// Opens a build file and checks its length and SHA-256 against what the package said.
Expected<std::shared_ptr<BuildFile>> OpenVerified(const ClientBuild& b) {
  const std::string what = "client build for '" + b.platform + "' (" + b.path.string() + ")";
  int fd = ::open(b.path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Errc::kNotFound, what + ": cannot open: " + Errno());
  auto file = std::make_shared<BuildFile>(fd);
  struct stat st {};
  if (::fstat(fd, &st) != 0) return Error(Errc::kIo, what + ": stat: " + Errno());
  if (!S_ISREG(st.st_mode)) return Error(Errc::kInvalidArgument, what + ": not a regular file");
  if (static_cast<std::uint64_t>(st.st_size) != b.length) {
    return Error(Errc::kVerification, what + ": length " + std::to_string(st.st_size) + ", expected " +
                                          std::to_string(b.length));
  }
  Hasher hasher(HashAlgorithm::kSha256);
  std::string buf(kHashChunk, '\0');
  for (std::uint64_t off = 0; off < b.length; off += kHashChunk) {
    const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(kHashChunk, b.length - off));
    if (!ReadAt(fd, off, buf.data(), n)) return Error(Errc::kIo, what + ": read at " + std::to_string(off) + " failed");
    hasher.Update(std::string_view(buf.data(), n));
  }
  if (hasher.FinishHex() != b.sha256) return Error(Errc::kVerification, what + ": SHA-256 does not match");
  return file;
}

std::string Seconds(std::chrono::milliseconds ms) {
  return std::to_string((ms.count() + 999) / 1000) + " s";
}

}  // namespace

struct RelayCore::Impl final : ServerObserver, UpgradeLink {
  Impl(RelayCoreOptions o, const MonoClock& m) : opt(std::move(o)), mono(m) {}

  RelayCoreOptions opt;
  const MonoClock& mono;
  // Declared before the server so the server (and its thread) is gone first.
  std::unique_ptr<UpgradeScheduler> sched;
  std::unique_ptr<Server> server;

  // Public calls take it shared; Start/Stop exclusive, so no call waits on a stopped thread.
  std::shared_mutex state_mu;
  std::mutex inline_mu;  // serialises calls while no I/O thread runs
  bool running = false;
  bool stopped = false;  // a stopped core does not start again

  // I/O thread state.
  std::map<std::filesystem::path, std::shared_ptr<BuildFile>> files;  // by build path
  std::unordered_map<std::string, std::uint64_t> attempt_of;          // client id -> running attempt
  std::uint64_t next_attempt = 0;
  std::optional<SteadyClock::time_point> armed;

  void Log(const std::string& line) const {
    if (opt.server.log) opt.server.log(line);
  }

  // Runs `f` on the I/O thread and returns its result (or inline when the thread does not run).
  template <typename F>
  auto Call(F f) -> decltype(f()) {
    using R = decltype(f());
    std::shared_lock lock(state_mu);
    if (!running) {
      std::lock_guard g(inline_mu);
      return f();
    }
    auto task = std::make_shared<std::packaged_task<R()>>(std::move(f));
    auto fut = task->get_future();
    server->Post([task] { (*task)(); });
    return fut.get();
  }

  // Keeps one timer armed at the scheduler's next due time.
  void Rearm() {
    if (!running) return;
    auto w = sched->NextWakeup();
    if (!w) return;
    auto delay = std::chrono::duration_cast<std::chrono::milliseconds>(*w - mono.Now());
    if (delay < kMinWakeup) delay = kMinWakeup;
    auto target = SteadyClock::now() + delay;
    if (armed && *armed <= target) return;
    armed = target;
    server->RunAt(target, [this] {
      armed.reset();
      sched->Tick();
      Rearm();
    });
  }

  // UpgradeLink (called inside scheduler calls on the I/O thread). Without the thread (before
  // Start, after Stop) no client is connected and nothing is posted to the stopped server.
  void StartUpgrade(const std::string& id, const ClientBuild& build) override {
    if (!running) return;
    attempt_of[id] = ++next_attempt;
    Json offer;
    offer["version"] = build.version;
    offer["length"] = build.length;
    offer["sha256"] = build.sha256;
    offer["signature"] = build.signature;
    server->SendUpgrade(id, offer, nullptr);
    Log("client '" + id + "': upgrade to " + build.version + " offered");
  }

  void SendChunk(const std::string& id, const ClientBuild& build, std::uint64_t offset, std::uint32_t length) override {
    auto at = attempt_of.find(id);
    auto file = files.find(build.path);
    if (!running || at == attempt_of.end() || file == files.end()) return;
    std::string bytes(length, '\0');
    if (!ReadAt(file->second->fd(), offset, bytes.data(), length)) {
      // The file changed under us; nothing is sent, so the scheduler fails the attempt as stalled.
      Log("client build " + build.path.string() + ": read of " + std::to_string(length) + " bytes at " +
          std::to_string(offset) + " failed");
      return;
    }
    server->SendBuildChunk(id, std::move(bytes), [this, id, attempt = at->second, length](Status st) {
      auto it = attempt_of.find(id);
      if (!st.ok() || it == attempt_of.end() || it->second != attempt) return;  // cancelled attempt
      sched->ChunkAccepted(id, length);
      Rearm();
    });
  }

  void CancelUpgrade(const std::string& id, std::string_view reason) override {
    attempt_of.erase(id);
    if (running && !reason.empty()) {
      Log("client '" + id + "': upgrade cancelled: " + std::string(reason));
      server->DisconnectClient(id, std::string(reason),
                               "no upgrade progress for " + Seconds(sched->settings().stall_timeout));
    }
  }

  // ServerObserver (I/O thread).
  void OnClientCheckIn(const ClientInfo& client) override {
    CheckIn c;
    c.id = client.id;
    c.platform = client.platform;
    c.version = client.version;
    if (auto st = sched->ClientCheckedIn(c); !st.ok()) Log("scheduler: " + st.error().message());
    Rearm();
  }
  void OnClientDisconnect(const std::string& id) override {
    attempt_of.erase(id);
    sched->ClientGone(id);
    Rearm();
  }
  std::optional<std::string> OnConsoleOpen(const std::string& id) override {
    auto answer = sched->ConsoleAsked(id);
    Rearm();
    switch (answer.kind) {
      case ConsoleAnswer::Kind::kNotPending:
        return std::nullopt;
      case ConsoleAnswer::Kind::kUpgrading:
        return "upgrading, about " + Seconds(answer.estimated_wait) + " left";
      case ConsoleAnswer::Kind::kMovedToFront:
        break;
    }
    // Next to start: roughly its own download at a fair share of the bandwidth.
    std::chrono::milliseconds wait{0};
    if (auto s = sched->Find(id); s.ok()) {
      const auto& set = sched->settings();
      const double share = static_cast<double>(set.max_client_upgrade_bandwidth) /
                           static_cast<double>(std::max<std::uint32_t>(1, set.max_concurrent_client_upgrades));
      const double bytes = static_cast<double>(BuildLength(s->platform));
      wait = std::chrono::milliseconds(static_cast<std::int64_t>(bytes / share * 1000));
    }
    return "upgrade pending: moved to the front of the queue, about " + Seconds(wait);
  }
  void OnBuildGet(const std::string& id, const std::string& version, std::uint64_t offset) override {
    if (auto st = sched->BuildRequested(id, version, offset); !st.ok()) Log("scheduler: " + st.error().message());
    Rearm();
  }
  void OnBuildReport(const std::string& id, const BuildReport& report) override {
    if (auto st = sched->BuildReported(id, report); !st.ok()) {
      Log("scheduler: " + st.error().message());
    } else {
      Log("client '" + id + "': build " + report.version + " " + report.result);
    }
    Rearm();
  }

  std::uint64_t BuildLength(const std::string& platform) const {
    for (const auto& b : builds) {
      if (b.platform == platform) return b.length;
    }
    return 0;
  }
  std::vector<ClientBuild> builds;  // I/O thread: the current set, for estimates
};

RelayCore::RelayCore(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RelayCore::~RelayCore() { Stop(); }

Expected<std::unique_ptr<RelayCore>> RelayCore::Create(RelayCoreOptions options, ClientStore& store, const Clock& wall,
                                                       const MonoClock& mono) {
  auto impl = std::make_unique<Impl>(std::move(options), mono);
  UPK_TRY_ASSIGN(auto sched, UpgradeScheduler::Create(*impl, mono, wall, impl->opt.scheduler));
  impl->sched = std::move(sched);
  // Every provisioned client is in the export from the start, offline until it checks in.
  for (const auto& rec : store.ListClients()) {
    CheckIn known;
    known.id = rec.id;
    known.platform = rec.platform;
    known.version = rec.version;
    if (auto st = impl->sched->ClientKnown(known, rec.last_checkin); !st.ok()) return st.error().Wrap("client store");
  }
  impl->server = std::make_unique<Server>(impl->opt.server, store, wall, impl.get());
  return std::unique_ptr<RelayCore>(new RelayCore(std::move(impl)));
}

Status RelayCore::Start() {
  Impl& s = *impl_;
  std::unique_lock lock(s.state_mu);
  if (s.running || s.stopped) return Error(Errc::kInvalidArgument, "relay core: already started");
  s.running = true;  // before the thread exists, so its callbacks see it
  if (auto st = s.server->Start(); !st.ok()) {
    s.running = false;
    return st;
  }
  s.server->Post([&s] { s.Rearm(); });
  return OkStatus();
}

void RelayCore::Stop() {
  Impl& s = *impl_;
  std::unique_lock lock(s.state_mu);
  if (!s.running) return;
  s.server->Stop();
  s.running = false;
  s.stopped = true;
  s.armed.reset();
}

std::uint16_t RelayCore::port() const { return impl_->server->port(); }

void RelayCore::Drain(std::function<void()> on_drained) { impl_->server->Drain(std::move(on_drained)); }

Status RelayCore::SetBuilds(std::vector<ClientBuild> builds) {
  std::map<std::filesystem::path, std::shared_ptr<BuildFile>> files;
  for (const auto& b : builds) {
    if (files.count(b.path) != 0) continue;
    UPK_TRY_ASSIGN(auto f, OpenVerified(b));
    files.emplace(b.path, std::move(f));
  }
  Impl& s = *impl_;
  return s.Call([&s, &builds, &files]() -> Status {
    auto copy = builds;
    // The files must be in place before the scheduler starts sending chunks of the new builds.
    auto old = std::move(s.files);
    s.files = std::move(files);
    if (auto st = s.sched->SetBuilds(std::move(copy)); !st.ok()) {
      s.files = std::move(old);
      return st.error().Wrap("client builds refused");
    }
    s.builds = builds;
    s.Log("client builds set: " + std::to_string(builds.size()));
    s.Rearm();
    return OkStatus();
  });
}

Status RelayCore::SetMaxConcurrent(std::uint32_t n) {
  Impl& s = *impl_;
  return s.Call([&s, n]() -> Status {
    UPK_TRY(s.sched->SetMaxConcurrent(n));
    s.Rearm();
    return OkStatus();
  });
}

Status RelayCore::SetBandwidth(std::uint64_t bytes_per_second) {
  Impl& s = *impl_;
  return s.Call([&s, bytes_per_second]() -> Status {
    UPK_TRY(s.sched->SetBandwidth(bytes_per_second));
    s.Rearm();
    return OkStatus();
  });
}

std::vector<ClientStatus> RelayCore::Snapshot() {
  Impl& s = *impl_;
  return s.Call([&s] { return s.sched->Snapshot(); });
}

SchedulerStats RelayCore::Stats() {
  Impl& s = *impl_;
  return s.Call([&s] { return s.sched->Stats(); });
}

ServerStats RelayCore::server_stats() const { return impl_->server->stats(); }

std::string RelayCore::ExportCsv() {
  Impl& s = *impl_;
  return s.Call([&s] { return s.sched->ExportCsv(); });
}

std::string RelayCore::ExportJson() {
  Impl& s = *impl_;
  return s.Call([&s] { return s.sched->ExportJson(); });
}

}  // namespace upkeep::relay
