// `relay`: the relay core (RelayCore: server + upgrade scheduler) as a standalone daemon, for
// tests and benchmarks (docs/relay.md).
//   relay serve --cert F --key F --clients FILE --listen HOST:PORT [--rate N] [--max-connections N]
//               [--builds FILE] [--max-concurrent-upgrades N] [--upgrade-bandwidth BYTES] [--settings FILE]
//     SIGHUP: re-read --settings and --builds; SIGUSR2: the client export (CSV) on stdout;
//     SIGUSR1: drain; SIGTERM/SIGINT: stop.
//   relay hash-secret   (secret on stdin -> stored form on stdout)
#include <CLI/CLI.hpp>

#include <asio.hpp>

#include <csignal>
#include <iostream>
#include <mutex>
#include <string>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/relay/address.hpp"
#include "upkeep/relay/builds_file.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/relay_core.hpp"

namespace {

using namespace upkeep;

struct ServeArgs {
  std::string cert;
  std::string key;
  std::string clients;
  std::string listen;
  double rate = 500;
  std::size_t max_connections = 25000;
  std::string builds;
  std::string settings;
  std::uint32_t max_concurrent = 10;
  std::uint64_t bandwidth = 10u << 20;
};

constexpr std::uint64_t kMaxConfigBytes = 1 << 20;

// --settings: {"max_concurrent_client_upgrades": N, "max_client_upgrade_bandwidth": BYTES}, both
// optional; all values are checked before any is applied.
Status ApplySettings(const std::filesystem::path& file, relay::RelayCore& core, relay::SchedulerSettings& current) {
  UPK_TRY_ASSIGN(auto text, ReadFileBounded(file, kMaxConfigBytes));
  auto json = ParseJson(text);
  if (!json.ok()) return json.error().Wrap(file.string());
  if (!json->is_object()) return Error(Errc::kParse, file.string() + ": not a JSON object");
  relay::SchedulerSettings next = current;
  if (json->contains("max_concurrent_client_upgrades")) {
    auto n = GetInt(*json, "max_concurrent_client_upgrades");
    if (!n.ok()) return n.error().Wrap(file.string());
    if (*n < 1 || *n > 100000) return Error(Errc::kInvalidArgument, file.string() + ": field 'max_concurrent_client_upgrades': must be 1..100000");
    next.max_concurrent_client_upgrades = static_cast<std::uint32_t>(*n);
  }
  if (json->contains("max_client_upgrade_bandwidth")) {
    auto n = GetInt(*json, "max_client_upgrade_bandwidth");
    if (!n.ok()) return n.error().Wrap(file.string());
    if (*n < 1) return Error(Errc::kInvalidArgument, file.string() + ": field 'max_client_upgrade_bandwidth': must be positive");
    next.max_client_upgrade_bandwidth = static_cast<std::uint64_t>(*n);
  }
  if (auto st = relay::ValidateSettings(next); !st.ok()) return st.error().Wrap(file.string());
  UPK_TRY(core.SetMaxConcurrent(next.max_concurrent_client_upgrades));
  UPK_TRY(core.SetBandwidth(next.max_client_upgrade_bandwidth));
  current = next;
  return OkStatus();
}

int Serve(const ServeArgs& args) {
  std::mutex log_mu;
  auto log = [&log_mu](std::string_view line) {
    std::lock_guard lock(log_mu);
    std::cout << "relay: " << line << "\n" << std::flush;
  };
  auto store = relay::JsonFileClientStore::Open(args.clients);
  if (!store.ok()) {
    std::cerr << "relay: --clients: " << store.error().message() << "\n";
    return 2;
  }
  relay::ServerOptions opt;
  auto listen = relay::ParseHostPort(args.listen, true);
  if (!listen.ok()) {
    std::cerr << "relay: --listen: " << listen.error().message() << "\n";
    return 2;
  }
  opt.address = listen->first;
  opt.port = listen->second;
  opt.certificate_chain = args.cert;
  opt.private_key = args.key;
  opt.accept_rate = args.rate;
  opt.max_connections = args.max_connections;
  opt.log = log;
  relay::RelayCoreOptions core_opt;
  core_opt.server = opt;
  core_opt.scheduler.max_concurrent_client_upgrades = args.max_concurrent;
  core_opt.scheduler.max_client_upgrade_bandwidth = args.bandwidth;
  relay::SteadyMonoClock mono;
  auto created = relay::RelayCore::Create(core_opt, **store, SystemClock::Instance(), mono);
  if (!created.ok()) {
    std::cerr << "relay: " << created.error().message() << "\n";
    return 2;
  }
  relay::RelayCore& server = **created;
  relay::SchedulerSettings current = core_opt.scheduler;
  if (!args.settings.empty()) {
    if (auto st = ApplySettings(args.settings, server, current); !st.ok()) {
      std::cerr << "relay: --settings: " << st.error().message() << "\n";
      return 2;
    }
  }
  auto load_builds = [&]() -> Status {
    if (args.builds.empty()) return OkStatus();
    UPK_TRY_ASSIGN(auto builds, relay::LoadClientBuilds(args.builds, false));
    return server.SetBuilds(std::move(builds));
  };
  if (auto st = load_builds(); !st.ok()) {
    std::cerr << "relay: --builds: " << st.error().message() << "\n";
    return 2;
  }
  if (auto st = server.Start(); !st.ok()) {
    std::cerr << "relay: " << st.error().message() << "\n";
    return 2;
  }
  const bool v6 = opt.address.find(':') != std::string::npos;
  {
    std::lock_guard lock(log_mu);
    std::cout << "relay: listening on " << (v6 ? "[" : "") << opt.address << (v6 ? "]" : "") << ":" << server.port()
              << "\n"
              << std::flush;
  }
  asio::io_context signals_io;
  asio::signal_set stop_signals(signals_io, SIGTERM, SIGINT);
  asio::signal_set drain_signal(signals_io, SIGUSR1);
  asio::signal_set admin_signals(signals_io, SIGHUP, SIGUSR2);
  stop_signals.async_wait([&](const asio::error_code& ec, int) {
    if (ec) return;
    drain_signal.cancel();
    admin_signals.cancel();
  });
  // Runs on this (main) thread, never the relay's I/O thread, so the core's blocking calls are fine.
  std::function<void()> wait_admin = [&] {
    admin_signals.async_wait([&](const asio::error_code& ec, int signo) {
      if (ec) return;
      if (signo == SIGHUP) {
        if (!args.settings.empty()) {
          auto st = ApplySettings(args.settings, server, current);
          log(st.ok() ? "settings: max_concurrent_client_upgrades " + std::to_string(current.max_concurrent_client_upgrades) +
                            ", max_client_upgrade_bandwidth " + std::to_string(current.max_client_upgrade_bandwidth)
                      : "settings unchanged: " + st.error().message());
        }
        if (auto st = load_builds(); !st.ok()) log("builds unchanged: " + st.error().message());
      } else {
        std::string csv = server.ExportCsv();
        std::lock_guard lock(log_mu);
        std::cout << csv << std::flush;
      }
      wait_admin();
    });
  };
  wait_admin();
  std::function<void()> wait_drain = [&] {
    drain_signal.async_wait([&](const asio::error_code& ec, int) {
      if (ec) return;
      server.Drain([log] { log("drained"); });
      wait_drain();
    });
  };
  wait_drain();
  signals_io.run();
  log("stopping");
  server.Stop();
  if (auto st = (*store)->Save(); !st.ok()) log("check-ins not saved: " + st.error().message());
  log("stopped");
  return 0;
}

int HashSecretCommand() {
  std::string secret;
  std::getline(std::cin, secret);
  if (!secret.empty() && secret.back() == '\r') secret.pop_back();
  auto hashed = relay::HashSecret(secret, SystemRandom::Instance());
  if (!hashed.ok()) {
    std::cerr << "relay: hash-secret: " << hashed.error().message() << "\n";
    return 2;
  }
  std::cout << *hashed << "\n";
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"upkeep relay: endpoint clients and technicians' consoles over TLS"};
  app.require_subcommand(1);
  ServeArgs serve_args;
  auto* serve = app.add_subcommand("serve", "run the relay until SIGTERM/SIGINT (SIGUSR1: drain, SIGHUP: re-read settings and builds, SIGUSR2: export CSV)");
  serve->add_option("--cert", serve_args.cert, "PEM certificate chain")->required();
  serve->add_option("--key", serve_args.key, "PEM private key")->required();
  serve->add_option("--clients", serve_args.clients, "JSON client and technician store")->required();
  serve->add_option("--listen", serve_args.listen, "ADDRESS:PORT (port 0: ephemeral)")->required();
  serve->add_option("--rate", serve_args.rate, "new connections per second (token bucket)")->check(CLI::PositiveNumber);
  serve->add_option("--max-connections", serve_args.max_connections, "connection cap")->check(CLI::PositiveNumber);
  serve->add_option("--builds", serve_args.builds, "JSON list of client builds to upgrade clients to (SIGHUP re-reads)");
  serve->add_option("--max-concurrent-upgrades", serve_args.max_concurrent, "client upgrades at a time (1..100000)");
  serve->add_option("--upgrade-bandwidth", serve_args.bandwidth, "bytes per second for all client upgrades");
  serve->add_option("--settings", serve_args.settings, "JSON live settings, re-read on SIGHUP");
  auto* hash = app.add_subcommand("hash-secret", "read a secret on stdin, print its stored form");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 2;
  }
  if (*serve) return Serve(serve_args);
  if (*hash) return HashSecretCommand();
  return 2;
}
