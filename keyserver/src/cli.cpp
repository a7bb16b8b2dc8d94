#include "upkeep/keyserver/cli.hpp"

#include <sodium.h>

#include <CLI/CLI.hpp>
#include <chrono>
#include <iostream>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/db/migrate.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/keyserver/service.hpp"
#include "upkeep/keyserver/state.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::keyserver {
namespace {

constexpr std::uint64_t kMaxPassphraseFileBytes = 4096;
constexpr std::uint64_t kMaxConfigBytes = 64 * 1024;

struct SecretArgs {
  std::string state;
  std::string passphrase_file;
  std::string wrapping_key_file;
  bool fast_kdf = false;
};

// Holds the passphrase read from its file and wipes it when done.
class Unlock {
 public:
  ~Unlock() {
    if (!passphrase_.empty()) sodium_memzero(passphrase_.data(), passphrase_.size());
  }
  Status Read(const SecretArgs& args) {
    if (!args.wrapping_key_file.empty()) {
      wrapping_ = trust::KeyWrapping::KeyFile(args.wrapping_key_file);
      return OkStatus();
    }
    auto text = ReadFileBounded(args.passphrase_file, kMaxPassphraseFileBytes);
    if (!text.ok()) return text.error().Wrap("--passphrase-file");
    passphrase_ = std::move(text).value();
    while (!passphrase_.empty() && (passphrase_.back() == '\n' || passphrase_.back() == '\r')) passphrase_.pop_back();
    if (passphrase_.empty()) return Error(Errc::kInvalidArgument, "--passphrase-file: the passphrase is empty");
    wrapping_ = trust::KeyWrapping::Passphrase(
        passphrase_, args.fast_kdf ? trust::KdfParams::FastForTests() : trust::KdfParams::Moderate());
    return OkStatus();
  }
  const trust::KeyWrapping& wrapping() const { return wrapping_; }

 private:
  std::string passphrase_;
  trust::KeyWrapping wrapping_;
};

void AddSecretOptions(CLI::App* sub, SecretArgs& args, bool with_fast_kdf) {
  sub->add_option("--state", args.state, "State directory")->required();
  auto* pass = sub->add_option("--passphrase-file", args.passphrase_file, "File holding the key passphrase");
  auto* wrap = sub->add_option("--wrapping-key-file", args.wrapping_key_file, "32-byte wrapping key file");
  pass->excludes(wrap);
  wrap->excludes(pass);
  if (with_fast_kdf) {
    sub->add_flag("--fast-kdf-for-tests", args.fast_kdf, "Weak Argon2id parameters (tests only, never production)");
  }
}

Status CheckSecretGiven(const SecretArgs& args) {
  if (args.passphrase_file.empty() && args.wrapping_key_file.empty()) {
    return Error(Errc::kInvalidArgument, "one of --passphrase-file or --wrapping-key-file is required");
  }
  return OkStatus();
}

int Fail(std::ostream& err, const Error& error, std::optional<int> code = std::nullopt) {
  err << "keyserver: error: " << error.message() << "\n";
  return code ? *code : error.ExitCode();
}

int RunInit(const SecretArgs& args, std::ostream& out, std::ostream& err) {
  if (auto st = CheckSecretGiven(args); !st.ok()) return Fail(err, st.error());
  Unlock unlock;
  if (auto st = unlock.Read(args); !st.ok()) return Fail(err, st.error());
  auto result = InitState(args.state, unlock.wrapping());
  if (!result.ok()) return Fail(err, result.error());
  out << result->dump(2) << "\n";
  err << "keyserver: state created in " << args.state
      << "; put the snapshot and timestamp public keys into the TUF root (upk), hand "
      << args.state << "/updater.token to the updater, keep admin.token for administrators\n";
  return 0;
}

int RunRotate(const SecretArgs& args, const std::string& role_name, std::ostream& out, std::ostream& err) {
  if (auto st = CheckSecretGiven(args); !st.ok()) return Fail(err, st.error());
  auto role = ParseRole(role_name);
  if (!role) {
    return Fail(err, Error(Errc::kInvalidArgument, "--role must be snapshot, timestamp, director, licence or content"));
  }
  Unlock unlock;
  if (auto st = unlock.Read(args); !st.ok()) return Fail(err, st.error());
  auto result = RotateKey(args.state, unlock.wrapping(), *role);
  if (!result.ok()) return Fail(err, result.error(), 2);
  out << result->dump(2) << "\n";
  if (*role == Role::kSnapshot || *role == Role::kTimestamp) {
    err << "keyserver: new " << role_name << " key; re-sign the TUF root with this key (upk, offline) and "
        << "restart the keyserver\n";
  } else if (*role == Role::kContent) {
    // Retired content keys still open what was sealed to them, so nothing published breaks.
    err << "keyserver: new content key; seal new releases to its x25519_public and restart the keyserver\n";
  } else {
    err << "keyserver: new " << role_name << " key; distribute its public key and restart the keyserver\n";
  }
  return 0;
}

struct ServeArgs {
  SecretArgs secret;
  std::string database;
  std::string listen;
  std::string config;
};

int RunServe(const ServeArgs& args, std::ostream& out, std::ostream& err) {
  if (auto st = CheckSecretGiven(args.secret); !st.ok()) return Fail(err, st.error());
  auto endpoint = net::ParseEndpoint(args.listen);
  if (!endpoint.ok()) return Fail(err, endpoint.error());
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
  std::optional<KeySet> keys;
  {
    Unlock unlock;
    if (auto st = unlock.Read(args.secret); !st.ok()) return Fail(err, st.error());
    auto loaded = KeySet::Load(args.secret.state, unlock.wrapping());
    if (!loaded.ok()) return Fail(err, loaded.error().Wrap("cannot unlock the keyserver state"), 2);
    keys.emplace(std::move(loaded).value());
  }
  db::PoolOptions pool_options;
  pool_options.connect.conninfo = args.database;
  pool_options.connect.application_name = "keyserver";
  auto pool = db::Pool::Create(pool_options);
  if (!pool.ok()) return Fail(err, pool.error().Wrap("--database"), 2);
  auto migrated = db::Migrate(**pool, "keyserver", Migrations());
  if (!migrated.ok()) return Fail(err, migrated.error().Wrap("database migration"), 2);

  auto log_mutex = std::make_shared<std::mutex>();
  auto log = [&err, log_mutex](std::string_view line) {
    std::lock_guard lock(*log_mutex);
    err << "keyserver: " << line << "\n" << std::flush;
  };
  net::ServerOptions options;
  options.endpoints = {*endpoint};
  options.io_threads = 1;
  options.access_log = [log](const net::AccessLogEntry& e) {
    // Method, path (no query), status: never bodies or header values, so no token or key.
    log(std::string(e.method) + " " + std::string(e.path) + " " + std::to_string(e.status) + " " +
        std::to_string(e.bytes_sent) + "B " +
        std::to_string(std::chrono::duration_cast<std::chrono::microseconds>(e.duration).count()) + "us " +
        std::string(e.remote));
  };
  net::Server server(options);
  Service service(*keys, **pool, SystemClock::Instance(), SystemRandom::Instance(), config, log);
  if (auto st = service.Register(server); !st.ok()) return Fail(err, st.error(), 2);
  if (auto st = server.Start(); !st.ok()) return Fail(err, st.error().Wrap("--listen " + args.listen), 2);
  server.StopOnSignals(std::chrono::seconds(10));
  const auto ports = server.ports();
  out << "keyserver: listening on " << endpoint->address << ":" << (ports.empty() ? 0 : ports[0]) << "\n"
      << std::flush;
  server.Wait();
  log("stopped");
  return 0;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  CLI::App app("keyserver: custody of Upkeep's online keys, appliance enrolment, licences, online signing",
               "keyserver");
  app.require_subcommand(1);
  app.set_version_flag("--version", "keyserver 0.1.0");

  SecretArgs init_args;
  auto* init = app.add_subcommand("init", "Create a state directory: five encrypted keys and two tokens");
  AddSecretOptions(init, init_args, true);

  ServeArgs serve_args;
  auto* serve = app.add_subcommand("serve", "Serve the HTTP API until SIGTERM/SIGINT");
  AddSecretOptions(serve, serve_args.secret, false);
  serve->add_option("--database", serve_args.database, "PostgreSQL connection string")->required();
  serve->add_option("--listen", serve_args.listen, "ADDRESS:PORT (port 0: ephemeral)")->required();
  serve->add_option("--config", serve_args.config, "JSON file with limits (docs/keyserver.md)");

  SecretArgs rotate_args;
  std::string role;
  auto* rotate = app.add_subcommand("rotate", "Replace one role's key; the old one is kept as retired");
  AddSecretOptions(rotate, rotate_args, true);
  rotate->add_option("--role", role, "snapshot, timestamp, director, licence or content")->required();

  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  try {
    if (init->parsed()) return RunInit(init_args, out, err);
    if (serve->parsed()) return RunServe(serve_args, out, err);
    if (rotate->parsed()) return RunRotate(rotate_args, role, out, err);
  } catch (const std::exception& e) {
    return Fail(err, Error(Errc::kInternal, std::string("unexpected failure: ") + e.what()));
  }
  err << "keyserver: no command given; run 'keyserver --help'\n";
  return 2;
}

}  // namespace upkeep::keyserver
