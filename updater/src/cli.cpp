#include "upkeep/updater/cli.hpp"

#include <CLI/CLI.hpp>
#include <chrono>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/updater/repository_routes.hpp"

namespace upkeep::updater {
namespace {

constexpr unsigned kMaxThreads = 256;

int Fail(std::ostream& err, const Error& error, std::optional<int> code = std::nullopt) {
  err << "updater: error: " << error.message() << "\n";
  return code ? *code : error.ExitCode();
}

struct ServeArgs {
  std::string repo;
  std::string listen;
  unsigned threads = 0;
  std::string tls_cert;
  std::string tls_key;
};

int RunServe(const ServeArgs& args, std::ostream& out, std::ostream& err) {
  auto endpoint = net::ParseEndpoint(args.listen);
  if (!endpoint.ok()) return Fail(err, endpoint.error(), 2);
  if (args.tls_cert.empty() != args.tls_key.empty()) {
    return Fail(err, Error(Errc::kInvalidArgument, "--tls-cert and --tls-key go together"), 2);
  }
  if (args.threads > kMaxThreads) {
    return Fail(err, Error(Errc::kInvalidArgument, "--threads: at most " + std::to_string(kMaxThreads)), 2);
  }
  auto routes = RepositoryRoutes::Create(args.repo);
  if (!routes.ok()) return Fail(err, routes.error(), 2);

  auto log_mutex = std::make_shared<std::mutex>();
  auto log = [&err, log_mutex](const std::string& line) {
    std::lock_guard lock(*log_mutex);
    err << "updater: " << line << "\n" << std::flush;
  };
  net::ServerOptions options;
  options.endpoints = {*endpoint};
  if (!args.tls_cert.empty()) {
    options.endpoints[0].tls = true;
    options.tls = net::TlsOptions{args.tls_cert, args.tls_key};
  }
  options.io_threads = args.threads;
  options.access_log = [log](const net::AccessLogEntry& e) {
    // Method, decoded path (no query), status, size, time, peer: never header values.
    log(std::string(e.method) + " " + std::string(e.path) + " " + std::to_string(e.status) + " " +
        std::to_string(e.bytes_sent) + "B " +
        std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(e.duration).count()) + "us " +
        std::string(e.remote));
  };
  net::Server server(options);
  if (auto st = routes->Register(server); !st.ok()) return Fail(err, st.error(), 2);
  if (auto st = server.Start(); !st.ok()) return Fail(err, st.error().Wrap("--listen " + args.listen), 2);
  server.StopOnSignals(std::chrono::seconds(10));
  const auto ports = server.ports();
  const bool v6 = endpoint->address.find(':') != std::string::npos;
  out << "updater: listening on " << (v6 ? "[" : "") << endpoint->address << (v6 ? "]" : "") << ":"
      << (ports.empty() ? 0 : ports[0]) << "\n"
      << std::flush;
  log("serving the TUF repository " + routes->root().string() + " under /repo/metadata/ and /repo/targets/");
  server.Wait();
  log("stopped");
  return 0;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app("updater: the Upkeep central update server (this slice: serves the TUF repository under /repo/)",
               "updater");
  app.require_subcommand(1);
  app.set_version_flag("--version", "updater 0.1.0");

  ServeArgs serve_args;
  auto* serve = app.add_subcommand("serve", "Serve a TUF repository written by `upk repo` until SIGTERM/SIGINT");
  serve->add_option("--repo", serve_args.repo, "Repository directory (holds metadata/ and targets/)")->required();
  serve->add_option("--listen", serve_args.listen, "ADDRESS:PORT (port 0: ephemeral)")->required();
  serve->add_option("--threads", serve_args.threads, "I/O threads (0: one per core)");
  serve->add_option("--tls-cert", serve_args.tls_cert, "PEM certificate chain (serve HTTPS)");
  serve->add_option("--tls-key", serve_args.tls_key, "PEM private key for --tls-cert");

  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  try {
    if (serve->parsed()) return RunServe(serve_args, out, err);
  } catch (const std::exception& e) {
    return Fail(err, Error(Errc::kInternal, std::string("unexpected failure: ") + e.what()));
  }
  err << "updater: no command given; run 'updater --help'\n";
  return 2;
}

}  // namespace upkeep::updater
