#include "upkeep/updater/cli.hpp"

#include <CLI/CLI.hpp>
#include <chrono>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <ostream>
#include <string>

#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/updater/repository_routes.hpp"
#include "upkeep/updater/service.hpp"

namespace upkeep::updater {
namespace {

constexpr unsigned kMaxThreads = 256;
constexpr std::uint64_t kMaxConfigBytes = 64 * 1024;
constexpr std::uint64_t kMaxTokenFileBytes = 4096;

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
  // Full mode (database-backed service); without --database only the static repository is served.
  std::string database;
  std::string keyserver;
  std::string keyserver_token_file;
  std::string blobs;
  std::string config;
};

// A connection string from the command line or, so a password need not be in argv, from
// $UPKEEP_DATABASE_URL.
std::string DatabaseUrl(const std::string& flag) {
  if (!flag.empty()) return flag;
  const char* env = std::getenv("UPKEEP_DATABASE_URL");
  return env ? env : "";
}

Expected<std::unique_ptr<db::Pool>> OpenDatabase(const std::string& url) {
  if (url.empty()) return Error(Errc::kInvalidArgument, "--database (or $UPKEEP_DATABASE_URL) is required");
  db::PoolOptions pool_options;
  pool_options.connect.conninfo = url;
  pool_options.connect.application_name = "updater";
  pool_options.max_size = 16;
  auto pool = db::Pool::Create(pool_options);
  if (!pool.ok()) return pool.error().Wrap("--database");
  auto migrated = db::Migrate(**pool, "updater", Migrations());
  if (!migrated.ok()) return migrated.error().Wrap("database migration");
  return pool;
}

Expected<std::string> ReadToken(const std::string& path) {
  auto text = ReadFileBounded(path, kMaxTokenFileBytes);
  if (!text.ok()) return text.error().Wrap("--keyserver-token-file");
  std::string token = std::move(text).value();
  while (!token.empty() && (token.back() == '\n' || token.back() == '\r' || token.back() == ' ')) token.pop_back();
  if (token.empty()) return Error(Errc::kInvalidArgument, "--keyserver-token-file: the file is empty");
  return token;
}

int RunServe(const ServeArgs& args, std::ostream& out, std::ostream& err) {
  auto endpoint = net::ParseEndpoint(args.listen);
  if (!endpoint.ok()) return Fail(err, endpoint.error(), 2);
  if (args.tls_cert.empty() != args.tls_key.empty()) {
    return Fail(err, Error(Errc::kInvalidArgument, "--tls-cert and --tls-key go together"), 2);
  }
  if (args.threads > kMaxThreads) {
    return Fail(err, Error(Errc::kInvalidArgument, "--threads: at most " + std::to_string(kMaxThreads)), 2);
  }
  const bool full = !DatabaseUrl(args.database).empty();
  if (full && (args.keyserver.empty() || args.keyserver_token_file.empty())) {
    return Fail(err, Error(Errc::kInvalidArgument, "--database needs --keyserver and --keyserver-token-file"), 2);
  }
  ServiceConfig config;
  if (!args.config.empty()) {
    auto text = ReadFileBounded(args.config, kMaxConfigBytes);
    if (!text.ok()) return Fail(err, text.error().Wrap("--config"), 2);
    auto json = ParseJson(*text);
    if (!json.ok()) return Fail(err, json.error().Wrap(args.config), 2);
    auto parsed = ServiceConfig::FromJson(*json);
    if (!parsed.ok()) return Fail(err, parsed.error().Wrap(args.config), 2);
    config = *parsed;
  }

  auto log_mutex = std::make_shared<std::mutex>();
  auto log = [&err, log_mutex](std::string_view line) {
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
  std::unique_ptr<db::Pool> pool;
  std::unique_ptr<keyserver::KeyserverClient> keyserver_client;
  std::unique_ptr<Service> service;
  std::string what;
  if (full) {
    auto opened = OpenDatabase(DatabaseUrl(args.database));
    if (!opened.ok()) return Fail(err, opened.error(), 2);
    pool = std::move(opened).value();
    auto token = ReadToken(args.keyserver_token_file);
    if (!token.ok()) return Fail(err, token.error(), 2);
    auto client = keyserver::MakeHttpKeyserverClient(keyserver::KeyserverClientOptions{args.keyserver, *token});
    if (!client.ok()) return Fail(err, client.error().Wrap("--keyserver"), 2);
    keyserver_client = std::move(client).value();
    config.repo_dir = args.repo;
    config.blob_dir = args.blobs.empty() ? std::filesystem::path(args.repo) / "blobs" : std::filesystem::path(args.blobs);
    auto created = Service::Create(ServiceDeps{*pool, *keyserver_client, SystemClock::Instance(),
                                               SystemRandom::Instance(), log},
                                   config);
    if (!created.ok()) return Fail(err, created.error(), 2);
    service = std::move(created).value();
    if (auto st = service->Register(server); !st.ok()) return Fail(err, st.error(), 2);
    what = "the update service (API under /api/v1/, TUF repository under /repo/) from " + args.repo;
  } else {
    auto routes = RepositoryRoutes::Create(args.repo);
    if (!routes.ok()) return Fail(err, routes.error(), 2);
    if (auto st = routes->Register(server); !st.ok()) return Fail(err, st.error(), 2);
    what = "the TUF repository " + routes->root().string() + " under /repo/metadata/ and /repo/targets/";
  }
  if (auto st = server.Start(); !st.ok()) return Fail(err, st.error().Wrap("--listen " + args.listen), 2);
  if (service) service->StartBackground();
  server.StopOnSignals(std::chrono::seconds(10));
  const auto ports = server.ports();
  const bool v6 = endpoint->address.find(':') != std::string::npos;
  out << "updater: listening on " << (v6 ? "[" : "") << endpoint->address << (v6 ? "]" : "") << ":"
      << (ports.empty() ? 0 : ports[0]) << "\n"
      << std::flush;
  log("serving " + what);
  server.Wait();
  if (service) service->StopBackground();
  log("stopped");
  return 0;
}

struct TokenArgs {
  std::string database;
  std::string name;
  std::string role;
  int expires_days = 90;
};

int RunTokenCreate(const TokenArgs& args, std::ostream& out, std::ostream& err) {
  if (args.expires_days < 1 || args.expires_days > 3650) {
    return Fail(err, Error(Errc::kInvalidArgument, "--expires-days must be 1..3650"), 2);
  }
  auto pool = OpenDatabase(DatabaseUrl(args.database));
  if (!pool.ok()) return Fail(err, pool.error(), 2);
  auto made = CreateOperatorToken(**pool, SystemClock::Instance(), SystemRandom::Instance(), args.name, args.role,
                                  std::chrono::hours(24 * args.expires_days), "updater-cli");
  if (!made.ok()) return Fail(err, made.error(), 2);
  // The only place the token is ever shown: stdout, for the operator to store.
  out << made->dump(2) << "\n";
  err << "updater: token '" << args.name << "' (" << args.role << ") created; it is shown only once\n";
  return 0;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app("updater: the Upkeep central update server", "updater");
  app.require_subcommand(1);
  app.set_version_flag("--version", "updater 0.1.0");

  ServeArgs serve_args;
  auto* serve = app.add_subcommand(
      "serve",
      "Serve until SIGTERM/SIGINT: with --database the whole update service (docs/updater-api.md), without it\n"
      "only a TUF repository written by `upk repo`.\n"
      "Example: updater serve --repo /srv/upkeep/repo --database 'host=/run/postgresql dbname=updater'\n"
      "         --keyserver http://10.0.0.5:8444 --keyserver-token-file /etc/upkeep/keyserver.token\n"
      "         --listen 0.0.0.0:8443 --tls-cert cert.pem --tls-key key.pem");
  serve->add_option("--repo", serve_args.repo, "Repository directory (metadata/ and targets/)")->required();
  serve->add_option("--database", serve_args.database, "PostgreSQL connection string (or $UPKEEP_DATABASE_URL)");
  serve->add_option("--keyserver", serve_args.keyserver, "Keyserver base URL, e.g. http://127.0.0.1:8444");
  serve->add_option("--keyserver-token-file", serve_args.keyserver_token_file, "File holding the keyserver's updater token");
  serve->add_option("--blobs", serve_args.blobs, "Blob directory (default REPO/blobs; same filesystem as REPO)");
  serve->add_option("--config", serve_args.config, "JSON file with limits and intervals (docs/updater.md)");
  serve->add_option("--listen", serve_args.listen, "ADDRESS:PORT (port 0: ephemeral)")->required();
  serve->add_option("--threads", serve_args.threads, "I/O threads (0: one per core)");
  serve->add_option("--tls-cert", serve_args.tls_cert, "PEM certificate chain (serve HTTPS)");
  serve->add_option("--tls-key", serve_args.tls_key, "PEM private key for --tls-cert");

  TokenArgs token_args;
  auto* token = app.add_subcommand("token", "Operator tokens");
  token->require_subcommand(1);
  auto* token_create = token->add_subcommand(
      "create", "Make an operator token and print it once\nExample: updater token create --name ci --role publisher");
  token_create->add_option("--database", token_args.database, "PostgreSQL connection string (or $UPKEEP_DATABASE_URL)");
  token_create->add_option("--name", token_args.name, "Who or what uses it (in the audit log)")->required();
  token_create->add_option("--role", token_args.role, "admin, publisher or support")->required();
  token_create->add_option("--expires-days", token_args.expires_days, "Validity in days (default 90)");

  std::string migrate_database;
  auto* migrate = app.add_subcommand("migrate", "Apply the database migrations and exit");
  migrate->add_option("--database", migrate_database, "PostgreSQL connection string (or $UPKEEP_DATABASE_URL)");

  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  try {
    if (serve->parsed()) return RunServe(serve_args, out, err);
    if (token_create->parsed()) return RunTokenCreate(token_args, out, err);
    if (migrate->parsed()) {
      auto pool = OpenDatabase(DatabaseUrl(migrate_database));
      if (!pool.ok()) return Fail(err, pool.error(), 2);
      out << "updater: database schema is current\n";
      return 0;
    }
  } catch (const std::exception& e) {
    return Fail(err, Error(Errc::kInternal, std::string("unexpected failure: ") + e.what()));
  }
  err << "updater: no command given; run 'updater --help'\n";
  return 2;
}

}  // namespace upkeep::updater
