// `relay`: the relay core as a standalone daemon, for tests and benchmarks (docs/relay.md).
//   relay serve --cert F --key F --clients FILE --listen HOST:PORT [--rate N] [--max-connections N]
//   relay hash-secret   (secret on stdin -> stored form on stdout)
#include <CLI/CLI.hpp>

#include <asio.hpp>

#include <csignal>
#include <iostream>
#include <mutex>
#include <string>

#include "upkeep/common/clock.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay/server.hpp"

namespace {

using namespace upkeep;

struct ServeArgs {
  std::string cert;
  std::string key;
  std::string clients;
  std::string listen;
  double rate = 500;
  std::size_t max_connections = 25000;
};

bool SplitListen(const std::string& text, std::string& host, std::uint16_t& port) {
  auto colon = text.rfind(':');
  if (colon == std::string::npos || colon + 1 == text.size()) return false;
  host = text.substr(0, colon);
  if (host.size() >= 2 && host.front() == '[' && host.back() == ']') host = host.substr(1, host.size() - 2);
  unsigned long p = 0;
  for (char ch : text.substr(colon + 1)) {
    if (ch < '0' || ch > '9') return false;
    p = p * 10 + static_cast<unsigned long>(ch - '0');
    if (p > 65535) return false;
  }
  port = static_cast<std::uint16_t>(p);
  return !host.empty();
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
  if (!SplitListen(args.listen, opt.address, opt.port)) {
    std::cerr << "relay: --listen: '" << args.listen << "' is not ADDRESS:PORT\n";
    return 2;
  }
  opt.certificate_chain = args.cert;
  opt.private_key = args.key;
  opt.accept_rate = args.rate;
  opt.max_connections = args.max_connections;
  opt.log = log;
  relay::Server server(opt, **store, SystemClock::Instance());
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
  stop_signals.async_wait([&](const asio::error_code& ec, int) {
    if (ec) return;
    drain_signal.cancel();
  });
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
  auto* serve = app.add_subcommand("serve", "run the relay until SIGTERM/SIGINT (SIGUSR1: drain)");
  serve->add_option("--cert", serve_args.cert, "PEM certificate chain")->required();
  serve->add_option("--key", serve_args.key, "PEM private key")->required();
  serve->add_option("--clients", serve_args.clients, "JSON client and technician store")->required();
  serve->add_option("--listen", serve_args.listen, "ADDRESS:PORT (port 0: ephemeral)")->required();
  serve->add_option("--rate", serve_args.rate, "new connections per second (token bucket)")->check(CLI::PositiveNumber);
  serve->add_option("--max-connections", serve_args.max_connections, "connection cap")->check(CLI::PositiveNumber);
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
