#include "upkeep/agent/relay_host.hpp"

#include <sys/stat.h>

#include <asio.hpp>

#include <chrono>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "upkeep/agent/runtime.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/packages/version.hpp"
#include "upkeep/relay/address.hpp"
#include "upkeep/relay/builds_file.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/relay_core.hpp"

namespace upkeep::agent {
namespace {

using asio::local::stream_protocol;

constexpr std::uint64_t kRelayLogRotateBytes = 16u << 20;
constexpr std::size_t kMaxRequestBytes = 64;
constexpr auto kRequestTimeout = std::chrono::seconds(5);
constexpr auto kProgressEvery = std::chrono::seconds(10);

std::string Stamp() { return FormatTimestamp(SystemClock::Instance().Now()); }

// One build per platform, the newest version when several releases bring one.
struct Chosen {
  relay::ClientBuild build;
  std::string package;
};

bool SameBuilds(const std::map<std::string, Chosen>& a, const std::map<std::string, Chosen>& b) {
  if (a.size() != b.size()) return false;
  for (auto ia = a.begin(), ib = b.begin(); ia != a.end(); ++ia, ++ib) {
    if (ia->first != ib->first || ia->second.build.version != ib->second.build.version ||
        ia->second.build.sha256 != ib->second.build.sha256 || ia->second.build.path != ib->second.build.path) {
      return false;
    }
  }
  return true;
}

}  // namespace

struct RelayHost::Impl {
  AgentConfig config;
  std::function<void(const std::string&)> log;
  std::unique_ptr<relay::JsonFileClientStore> store;
  relay::SteadyMonoClock mono;
  std::unique_ptr<relay::RelayCore> core;

  std::mutex mu;  // Sync and the state below
  std::map<std::string, Chosen> builds;  // by platform
  std::uint32_t max_concurrent = 0;
  std::uint64_t bandwidth = 0;
  std::set<std::string> reported;  // problems already logged once ("site 5.3.0: no client-builds.json")

  std::mutex log_mu;  // the relay's event log file
  std::ofstream relay_log;
  std::uint64_t relay_log_bytes = 0;

  asio::io_context io;
  stream_protocol::acceptor acceptor{io};
  asio::steady_timer progress{io};
  std::string last_progress;
  std::thread thread;

  void Log(const std::string& line) const {
    if (log) log("relay: " + line);
  }

  void RelayEvent(std::string_view line) {
    std::lock_guard lock(log_mu);
    if (relay_log_bytes > kRelayLogRotateBytes) {
      relay_log.close();
      std::error_code ec;
      std::filesystem::rename(config.state_dir / "relay.log", config.state_dir / "relay.log.1", ec);
      relay_log.open(config.state_dir / "relay.log", std::ios::app);
      relay_log_bytes = 0;
    }
    const std::string text = Stamp() + " " + std::string(line) + "\n";
    relay_log << text << std::flush;
    relay_log_bytes += text.size();
  }

  std::string ProgressLine() {
    const relay::SchedulerStats s = core->Stats();
    return "clients " + std::to_string(s.clients) + ": " + std::to_string(s.current) + " current, " +
           std::to_string(s.pending) + " upgrade pending, " + std::to_string(s.upgrading) + " upgrading, " +
           std::to_string(s.failed) + " failed, " + std::to_string(s.offline) + " offline";
  }

  void ArmProgress() {
    progress.expires_after(kProgressEvery);
    progress.async_wait([this](const asio::error_code& ec) {
      if (ec) return;
      std::string line = ProgressLine();
      if (line != last_progress) Log(line);
      last_progress = std::move(line);
      ArmProgress();
    });
  }

  std::string Answer(const std::string& request) {
    if (request == "status") return Describe().dump(2) + "\n";
    if (request == "export csv") return core->ExportCsv();
    if (request == "export json") return core->ExportJson() + "\n";
    if (request == "drain") {
      if (!core->server_stats().draining) {
        Log("drain: no new clients or sessions; waiting for the open sessions to end");
        core->Drain([this] { Log("drained: no session remains"); });
      }
      return "draining: " + std::to_string(core->server_stats().sessions) + " session(s) open\n";
    }
    return "error: unknown request\n";
  }

  Json Describe() {
    const relay::SchedulerStats s = core->Stats();
    const relay::ServerStats n = core->server_stats();
    Json out;
    out["listen"] = config.relay->listen;
    out["port"] = core->port();
    out["connections"] = {{"open", n.connections},         {"clients_online", n.clients},
                          {"consoles", n.consoles},        {"sessions", n.sessions},
                          {"accepted", n.accepted},        {"refused_rate", n.refused_rate},
                          {"refused_cap", n.refused_cap},  {"auth_failures", n.auth_failures},
                          {"protocol_errors", n.protocol_errors}, {"draining", n.draining}};
    out["clients"] = {{"total", s.clients},         {"current", s.current}, {"upgrade pending", s.pending},
                      {"upgrading", s.upgrading},   {"failed", s.failed},   {"offline", s.offline}};
    out["upgrades"] = {{"started", s.upgrades_started}, {"installed", s.upgrades_installed},
                       {"bytes_sent", s.bytes_granted}};
    std::lock_guard lock(mu);
    out["settings"] = {{"max_concurrent_client_upgrades", max_concurrent}, {"max_client_upgrade_bandwidth", bandwidth}};
    Json list = Json::array();
    for (const auto& [platform, c] : builds) {
      list.push_back({{"platform", platform}, {"version", c.build.version}, {"sha256", c.build.sha256},
                      {"length", c.build.length}, {"package", c.package}});
    }
    out["builds"] = list;
    return out;
  }

  // One control connection: a request line (at most 64 bytes, 5 s), the answer, close.
  struct Conn : std::enable_shared_from_this<Conn> {
    Conn(Impl& impl, stream_protocol::socket s) : owner(impl), sock(std::move(s)), timer(impl.io), buf(kMaxRequestBytes) {}
    Impl& owner;
    stream_protocol::socket sock;
    asio::steady_timer timer;
    asio::streambuf buf;
    std::string answer;

    void Run() {
      auto self = shared_from_this();
      timer.expires_after(kRequestTimeout);
      timer.async_wait([self](const asio::error_code& ec) {
        if (!ec) self->sock.close();
      });
      asio::async_read_until(sock, buf, '\n', [self](const asio::error_code& ec, std::size_t n) {
        if (ec) return;  // closed, too long, or timed out: nothing to answer
        std::string line(asio::buffers_begin(self->buf.data()), asio::buffers_begin(self->buf.data()) + n - 1);
        self->answer = self->owner.Answer(line);
        asio::async_write(self->sock, asio::buffer(self->answer), [self](const asio::error_code&, std::size_t) {
          self->timer.cancel();
          asio::error_code ignored;
          self->sock.shutdown(stream_protocol::socket::shutdown_both, ignored);
          self->sock.close(ignored);
        });
      });
    }
  };

  void Accept() {
    acceptor.async_accept([this](const asio::error_code& ec, stream_protocol::socket s) {
      if (ec == asio::error::operation_aborted) return;
      if (!ec) std::make_shared<Conn>(*this, std::move(s))->Run();
      Accept();
    });
  }
};

RelayHost::RelayHost(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

RelayHost::~RelayHost() {
  Impl& s = *impl_;
  asio::post(s.io, [&s] {
    asio::error_code ignored;
    s.acceptor.close(ignored);
    s.progress.cancel();
  });
  s.io.stop();
  if (s.thread.joinable()) s.thread.join();
  std::error_code ec;
  std::filesystem::remove(s.config.RelaySocket(), ec);
  s.core->Stop();
  if (auto st = s.store->Save(); !st.ok()) s.Log("client check-ins not saved: " + st.error().message());
  s.Log("stopped");
}

Expected<std::unique_ptr<RelayHost>> RelayHost::Start(const AgentConfig& config,
                                                      std::function<void(const std::string&)> log) {
  if (!config.relay) return Error(Errc::kInvalidArgument, "agent config: no relay section");
  const RelayConfig& rc = *config.relay;
  auto impl = std::make_unique<Impl>();
  Impl& s = *impl;
  s.config = config;
  s.log = std::move(log);
  auto listen = relay::ParseHostPort(rc.listen, true);
  if (!listen.ok()) return listen.error().Wrap("agent config: relay: listen");
  auto store = relay::JsonFileClientStore::Open(rc.clients);
  if (!store.ok()) return store.error().Wrap("relay clients");
  s.store = std::move(*store);

  // One relay per state directory: a control socket that answers belongs to a running daemon.
  const auto socket_path = config.RelaySocket();
  if (socket_path.string().size() >= sizeof(sockaddr_un::sun_path)) {
    return Error(Errc::kInvalidArgument, socket_path.string() + ": path too long for a unix socket");
  }
  if (std::filesystem::exists(socket_path)) {
    if (AskRelay(socket_path, "status").ok()) {
      return Error(Errc::kPolicy, socket_path.string() + ": another agent daemon hosts the relay of this state directory");
    }
    std::error_code ec;
    std::filesystem::remove(socket_path, ec);
  }

  s.relay_log.open(config.state_dir / "relay.log", std::ios::app);
  if (!s.relay_log) return Error(Errc::kIo, (config.state_dir / "relay.log").string() + ": cannot open for writing");
  s.relay_log_bytes = std::filesystem::file_size(config.state_dir / "relay.log");

  relay::RelayCoreOptions opt;
  opt.server.address = listen->first;
  opt.server.port = listen->second;
  opt.server.certificate_chain = rc.certificate;
  opt.server.private_key = rc.private_key;
  opt.server.accept_rate = rc.accept_rate;
  opt.server.max_connections = rc.max_connections;
  opt.server.log = [&s](std::string_view line) { s.RelayEvent(line); };
  const Settings defaults;
  opt.scheduler.max_concurrent_client_upgrades = defaults.max_concurrent_client_upgrades;
  opt.scheduler.max_client_upgrade_bandwidth = defaults.max_client_upgrade_bandwidth;
  s.max_concurrent = defaults.max_concurrent_client_upgrades;
  s.bandwidth = defaults.max_client_upgrade_bandwidth;
  UPK_TRY_ASSIGN(s.core, relay::RelayCore::Create(opt, *s.store, SystemClock::Instance(), s.mono));
  if (auto st = s.core->Start(); !st.ok()) return st.error().Wrap("relay (" + rc.listen + ")");

  asio::error_code ec;
  const mode_t old_mask = ::umask(0177);  // the socket is born 0600: only root asks the relay
  s.acceptor.open(stream_protocol(), ec);
  if (!ec) s.acceptor.bind(stream_protocol::endpoint(socket_path.string()), ec);
  ::umask(old_mask);
  if (!ec) s.acceptor.listen(16, ec);
  if (ec) {
    s.core->Stop();
    return Error(Errc::kIo, socket_path.string() + ": " + ec.message());
  }
  s.Accept();
  s.ArmProgress();
  s.thread = std::thread([&s] { s.io.run(); });
  s.Log("listening on " + rc.listen + " (port " + std::to_string(s.core->port()) + "), " +
        std::to_string(s.store->ListClients().size()) + " clients provisioned");
  return std::unique_ptr<RelayHost>(new RelayHost(std::move(impl)));
}

Status RelayHost::Sync(const std::vector<ClientBuildsFile>& files, const Settings& settings) {
  Impl& s = *impl_;
  std::lock_guard lock(s.mu);
  auto once = [&s](const std::string& line) {
    if (s.reported.insert(line).second) s.Log(line);
  };
  if (settings.max_concurrent_client_upgrades != s.max_concurrent || settings.max_client_upgrade_bandwidth != s.bandwidth) {
    UPK_TRY(s.core->SetMaxConcurrent(settings.max_concurrent_client_upgrades));
    UPK_TRY(s.core->SetBandwidth(settings.max_client_upgrade_bandwidth));
    s.max_concurrent = settings.max_concurrent_client_upgrades;
    s.bandwidth = settings.max_client_upgrade_bandwidth;
    s.Log("client upgrades: at most " + std::to_string(s.max_concurrent) + " at a time, " +
          std::to_string(s.bandwidth) + " bytes/s in total");
  }
  std::map<std::string, Chosen> next;
  for (const auto& f : files) {
    std::error_code ec;
    if (!std::filesystem::exists(f.path, ec)) {
      once(f.package + " " + f.version + " says client_upgrade but has no " + f.path.filename().string() +
           ": it brings no client builds");
      continue;
    }
    auto list = relay::LoadClientBuilds(f.path, true);
    if (!list.ok()) {
      const auto err = list.error().Wrap(f.package + " " + f.version + ": client builds refused, the previous ones stay");
      once(err.message());
      return err;
    }
    for (auto& b : *list) {
      auto it = next.find(b.platform);
      if (it != next.end()) {
        auto have = packages::Version::Parse(it->second.build.version);
        auto mine = packages::Version::Parse(b.version);
        if (have.ok() && mine.ok() && !(*have < *mine)) continue;
      }
      next[b.platform] = Chosen{b, f.package + " " + f.version};
    }
  }
  if (SameBuilds(next, s.builds)) return OkStatus();
  std::vector<relay::ClientBuild> list;
  std::string names;
  std::set<std::string> sources;
  for (const auto& [platform, c] : next) {
    list.push_back(c.build);
    names += (names.empty() ? "" : ", ") + platform + " " + c.build.version + " (from " + c.package + ")";
    sources.insert(c.package);
  }
  if (auto st = s.core->SetBuilds(list); !st.ok()) {
    std::string from;
    for (const auto& p : sources) from += (from.empty() ? "" : ", ") + p;
    const auto err = st.error().Wrap(from + ": client builds refused, the previous ones stay");
    once(err.message());
    return err;
  }
  s.builds = std::move(next);
  s.Log(list.empty() ? std::string("no client builds") : "client upgrade wave: " + names);
  return OkStatus();
}

std::uint16_t RelayHost::port() const { return impl_->core->port(); }
Json RelayHost::Describe() { return impl_->Describe(); }
std::string RelayHost::ExportCsv() { return impl_->core->ExportCsv(); }
std::string RelayHost::ExportJson() { return impl_->core->ExportJson(); }

namespace {

class RelayService final : public DaemonService {
 public:
  explicit RelayService(std::unique_ptr<RelayHost> host) : host_(std::move(host)) {}
  void AfterCycle(Agent& agent) override {
    auto files = agent.ClientBuildFiles();
    if (!files.ok()) return;  // the installed document is checked and reported by the cycle itself
    (void)host_->Sync(*files, agent.CurrentSettings());  // Sync logs its refusals once
  }

 private:
  std::unique_ptr<RelayHost> host_;
};

}  // namespace

DaemonServiceFactory RelayDaemonService() {
  return [](const AgentConfig& config,
            std::function<void(const std::string&)> log) -> Expected<std::unique_ptr<DaemonService>> {
    if (!config.relay) return std::unique_ptr<DaemonService>();
    UPK_TRY_ASSIGN(auto host, RelayHost::Start(config, std::move(log)));
    return std::unique_ptr<DaemonService>(new RelayService(std::move(host)));
  };
}

}  // namespace upkeep::agent
