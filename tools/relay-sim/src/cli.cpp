#include "upkeep/relay/address.hpp"
#include "upkeep/relay/builds_file.hpp"
#include "upkeep/relay_sim/cli.hpp"

#include <functional>
#include <ostream>
#include <string>
#include <thread>
#include <vector>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/cli_parse.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/relay/client_store.hpp"
#include "upkeep/relay_sim/fleet.hpp"

namespace upkeep::relay::sim {
namespace {

constexpr int kMaxClients = 1000000;

struct Ctx {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  std::function<int()> run;
  int Fail(const Error& e) const {
    *err << "relay-sim: error: " << e.message() << "\n";
    return e.ExitCode();
  }
};

std::string RandomSecret(Random& r) { return ToHex(r.Generate(32)); }

struct MakeArgs {
  int count = 0;
  std::string prefix = "sim-";
  std::string output;
  std::string secrets;
  std::string version = "1.0.0";
  std::vector<std::string> platforms{"linux-x86_64"};
  double passive_fraction = 0;
  std::string technician = "sim-console";
};

int MakeClients(const MakeArgs& a, const Ctx& ctx) {
  if (a.count < 1 || a.count > kMaxClients) return ctx.Fail(Error(Errc::kInvalidArgument, "N: must be 1..1000000"));
  if (a.passive_fraction < 0 || a.passive_fraction > 1)
    return ctx.Fail(Error(Errc::kInvalidArgument, "--passive-fraction: must be 0..1"));
  if (!IsValidId(a.technician)) return ctx.Fail(Error(Errc::kInvalidArgument, "--technician: not a valid id"));
  bool bad_platform = a.platforms.empty();
  for (const auto& p : a.platforms) bad_platform = bad_platform || p.empty() || p.size() > 256;
  if (a.version.empty() || a.version.size() > 256 || bad_platform)
    return ctx.Fail(Error(Errc::kInvalidArgument, "--version / --platform: must be 1..256 bytes"));
  Random& random = SystemRandom::Instance();
  SecretsFile secrets;
  Json clients = Json::array();
  const auto passive = static_cast<int>(a.passive_fraction * a.count + 0.5);
  for (int i = 0; i < a.count; ++i) {
    SimClientSpec s;
    s.id = a.prefix + std::to_string(i);
    if (!IsValidId(s.id)) return ctx.Fail(Error(Errc::kInvalidArgument, "--prefix: ids like '" + s.id + "' are not valid"));
    s.secret = RandomSecret(random);
    s.version = a.version;
    s.platform = a.platforms[static_cast<std::size_t>(i) % a.platforms.size()];
    s.mode = i < a.count - passive ? "active" : "passive";
    auto hash = HashSecret(s.secret, random);
    if (!hash.ok()) return ctx.Fail(hash.error());
    clients.push_back(Json{{"id", s.id}, {"secret_hash", *hash}});
    secrets.clients.push_back(std::move(s));
  }
  secrets.console_token = RandomSecret(random);
  auto token_hash = HashSecret(secrets.console_token, random);
  if (!token_hash.ok()) return ctx.Fail(token_hash.error());
  Json store{{"clients", std::move(clients)},
             {"technicians", Json::array({Json{{"id", a.technician}, {"token_hash", *token_hash}}})}};
  std::string secrets_path = a.secrets.empty() ? a.output + ".secrets" : a.secrets;
  // Secrets first (0600): a client file without its secrets would be useless.
  if (auto s = WriteFileAtomic(secrets_path, SecretsToJson(secrets).dump(1) + "\n", 0600); !s.ok())
    return ctx.Fail(s.error());
  if (auto s = WriteFileAtomic(a.output, store.dump(1) + "\n", 0600); !s.ok()) return ctx.Fail(s.error());
  *ctx.out << "wrote " << a.count << " clients (" << passive << " passive) to " << a.output << ", secrets to "
           << secrets_path << "\n";
  return 0;
}

// make-build: a random client build of SIZE bytes signed with the vendor key (created when
// missing), entered into a `relay serve --builds` file (replacing that platform's entry).
struct BuildArgs {
  std::string key;
  std::string platform;
  std::string version;
  std::uint64_t size = 0;
  std::string output;
  std::string builds;
};

int MakeBuild(const BuildArgs& a, const Ctx& ctx) {
  constexpr std::uint64_t kMaxSize = 1ull << 30;
  if (a.size == 0 || a.size > kMaxSize) return ctx.Fail(Error(Errc::kInvalidArgument, "--size: must be 1..1073741824"));
  packages::PrivateKey key;
  std::error_code ec;
  if (std::filesystem::exists(a.key, ec)) {
    auto loaded = packages::PrivateKey::Load(a.key);
    if (!loaded.ok()) return ctx.Fail(loaded.error());
    key = *loaded;
  } else {
    key = packages::PrivateKey::GenerateEd25519();
    if (auto s = key.Save(a.key); !s.ok()) return ctx.Fail(s.error());
    if (auto s = WriteFileAtomic(a.key + ".pub", key.public_key().ToJson().dump() + "\n"); !s.ok())
      return ctx.Fail(s.error());
  }
  Bytes content = SystemRandom::Instance().Generate(static_cast<std::size_t>(a.size));
  const std::string data(content.begin(), content.end());
  if (auto s = WriteFileAtomic(a.output, data); !s.ok()) return ctx.Fail(s.error());
  auto entry = relay::AddSignedClientBuild(a.builds, a.output, a.platform, a.version, key, false);
  if (!entry.ok()) return ctx.Fail(entry.error());
  const std::string sha = (*entry)["sha256"].get<std::string>();
  *ctx.out << "wrote " << a.output << " (" << a.size << " bytes, " << a.platform << " " << a.version << ", sha256 "
           << sha << ") into " << a.builds << "\n";
  return 0;
}

struct RunArgs {
  std::string relay;
  std::string ca;
  std::string secrets;
  std::string vendor_key;
  double passive_interval = 30;
  double passive_linger = 0.5;
  double connect_rate = 400;
  double chunk_rate = 0;
  double stall_fraction = 0;
  double stall_time = 60;
  int consoles = 0;
  int console_writes = 20;
  int limit = 0;
  int front_request = -1;
  double hold = 0;
  double duration = 0;
  std::string until_version;
  double timeout = 600;
  std::string summary;
};

std::chrono::milliseconds Ms(double seconds) {
  return std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000.0));
}

int RunFleet(const RunArgs& a, const Ctx& ctx) {
  auto hp = ParseHostPort(a.relay, false);
  if (!hp.ok()) return ctx.Fail(hp.error().Wrap("--relay"));
  for (double v : {a.passive_interval, a.passive_linger, a.stall_time, a.duration, a.timeout, a.hold})
    if (v < 0 || v > 30 * 86400.0) return ctx.Fail(Error(Errc::kInvalidArgument, "durations must be 0..30 days"));
  if (a.duration == 0 && a.until_version.empty())
    return ctx.Fail(Error(Errc::kInvalidArgument, "give --duration S or --until-version V"));
  auto secrets = LoadSecretsFile(a.secrets);
  if (!secrets.ok()) return ctx.Fail(secrets.error());
  std::vector<SimClientSpec> specs = std::move(secrets->clients);
  if (a.limit > 0 && static_cast<std::size_t>(a.limit) < specs.size()) specs.resize(static_cast<std::size_t>(a.limit));
  FleetOptions o;
  o.host = hp->first;
  o.port = hp->second;
  o.ca_file = a.ca;
  if (!a.vendor_key.empty()) {
    auto key = packages::LoadPublicKey(a.vendor_key);
    if (!key.ok()) return ctx.Fail(key.error());
    o.vendor_key = *key;
  }
  o.passive_interval = Ms(a.passive_interval);
  o.passive_linger = Ms(a.passive_linger);
  o.connect_rate = a.connect_rate;
  o.chunk_rate = a.chunk_rate;
  o.stall_fraction = a.stall_fraction;
  o.stall_time = Ms(a.stall_time);
  o.consoles = a.consoles;
  o.console_token = secrets->console_token;
  o.writes_per_session = a.console_writes;
  o.target_version = a.until_version;
  o.front_request_after = a.front_request;
  if (a.front_request >= 0 && a.until_version.empty())
    return ctx.Fail(Error(Errc::kInvalidArgument, "--front-request needs --until-version"));
  Fleet fleet(o, std::move(specs), SystemRandom::Instance());
  if (auto s = fleet.Start(); !s.ok()) return ctx.Fail(s.error());
  const auto begin = std::chrono::steady_clock::now();
  const auto limit = a.until_version.empty() ? Ms(a.duration) : Ms(a.timeout);
  bool reached = false;
  while (std::chrono::steady_clock::now() - begin < limit) {
    if (!a.until_version.empty() && fleet.AllAtVersion(a.until_version)) {
      reached = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  bool held = false;
  if (reached && a.hold > 0) {
    // Everyone comes back and stays, so the relay's export sees the whole fleet connected.
    fleet.Hold();
    const std::size_t n = fleet.Summary().clients;
    const auto hold_begin = std::chrono::steady_clock::now();
    while (std::chrono::steady_clock::now() - hold_begin < Ms(a.timeout)) {
      if (fleet.OnlineCount() == n) {
        held = true;
        break;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
    *ctx.err << "relay-sim: " << (held ? "all" : "not all") << " " << n << " clients online at " << a.until_version
             << "; holding " << a.hold << " s" << std::endl;
    std::this_thread::sleep_for(Ms(a.hold));
  }
  Json summary = fleet.Summary().ToJson();
  fleet.Stop();
  if (!a.until_version.empty()) summary["until_version"] = Json{{"version", a.until_version}, {"reached", reached}};
  if (a.hold > 0) summary["held_all_online"] = held;
  const std::string text = summary.dump(1) + "\n";
  if (a.summary.empty()) {
    *ctx.out << text;
  } else if (auto s = WriteFileAtomic(a.summary, text); !s.ok()) {
    return ctx.Fail(s.error());
  }
  if (!a.until_version.empty() && !reached) {
    *ctx.err << "relay-sim: not every client reached " << a.until_version << " within " << a.timeout << " s\n";
    return 1;
  }
  return 0;
}

}  // namespace

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Ctx ctx;
  ctx.out = &out;
  ctx.err = &err;
  CLI::App app("relay-sim: a simulated fleet of relay endpoint clients and consoles", "relay-sim");
  app.require_subcommand(1);

  MakeArgs make;
  auto* mk = app.add_subcommand("make-clients", "Write the relay's client file and the simulator's secrets file");
  mk->add_option("N", make.count, "Number of clients")->required();
  mk->add_option("--prefix", make.prefix, "Client id prefix (ids are PREFIX0, PREFIX1, ...)");
  mk->add_option("-o,--output", make.output, "The relay's client file (relay serve --clients)")->required();
  mk->add_option("--secrets", make.secrets, "The secrets file for relay-sim run (default: OUTPUT.secrets)");
  mk->add_option("--version", make.version, "Initial client version");
  mk->add_option("--platform", make.platforms, "Client platform(s), given to the clients in turn");
  mk->add_option("--passive-fraction", make.passive_fraction, "Share of passive clients (the last ids)");
  mk->add_option("--technician", make.technician, "Technician id for the console token");
  mk->callback([&] { ctx.run = [&] { return MakeClients(make, ctx); }; });

  BuildArgs build;
  auto* mb = app.add_subcommand("make-build", "Write a random client build signed with a vendor key into a --builds file");
  mb->add_option("--key", build.key, "Vendor private key (created with KEY.pub when missing)")->required();
  mb->add_option("--platform", build.platform, "Platform of the build")->required();
  mb->add_option("--version", build.version, "Version of the build (MAJOR.MINOR.BUILD)")->required();
  mb->add_option("--size", build.size, "Build size in bytes")->required();
  mb->add_option("-o,--output", build.output, "The build file")->required();
  mb->add_option("--builds", build.builds, "The relay's --builds file (created or updated)")->required();
  mb->callback([&] { ctx.run = [&] { return MakeBuild(build, ctx); }; });

  RunArgs run;
  auto* r = app.add_subcommand("run", "Run the fleet against a relay and print a JSON summary");
  r->add_option("--relay", run.relay, "HOST:PORT of the relay (IP literal)")->required();
  r->add_option("--ca", run.ca, "PEM trust anchor for the relay's certificate")->required();
  r->add_option("--secrets", run.secrets, "Secrets file from make-clients")->required();
  r->add_option("--vendor-key", run.vendor_key, "Vendor public key (TUF JSON form) that signs client builds");
  r->add_option("--passive-interval", run.passive_interval, "Seconds between a passive client's check-ins");
  r->add_option("--passive-linger", run.passive_linger, "Seconds a passive client stays when nothing is offered");
  r->add_option("--connect-rate", run.connect_rate, "New connections per second, fleet-wide");
  r->add_option("--chunk-rate", run.chunk_rate, "Per-client download limit in bytes/s (0: none)");
  r->add_option("--stall-fraction", run.stall_fraction, "Share of upgrades that stop reading halfway (once per client)");
  r->add_option("--stall-time", run.stall_time, "Seconds such a client stops reading");
  r->add_option("--consoles", run.consoles, "Console connections echoing 1 KiB writes through random clients");
  r->add_option("--console-writes", run.console_writes, "Round trips per console session");
  r->add_option("--limit", run.limit, "Use only the first N clients of the secrets file");
  r->add_option("--front-request", run.front_request,
                "After N installs, a console asks for the waiting client with the highest id (needs --until-version)");
  r->add_option("--hold", run.hold, "With --until-version: once reached, keep every client connected S seconds");
  r->add_option("--duration", run.duration, "Run this many seconds, then print the summary");
  r->add_option("--until-version", run.until_version, "Stop (exit 0) once every client reports this version");
  r->add_option("--timeout", run.timeout, "With --until-version: give up (exit 1) after this many seconds");
  r->add_option("--summary", run.summary, "Write the JSON summary to this file instead of stdout");
  r->callback([&] { ctx.run = [&] { return RunFleet(run, ctx); }; });

  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  if (!ctx.run) {
    err << "relay-sim: no command\n";
    return 2;
  }
  try {
    return ctx.run();
  } catch (const std::exception& e) {  // nlohmann::json and std:: throw; nothing may escape Main
    err << "relay-sim: error: " << e.what() << "\n";
    return 2;
  }
}

}  // namespace upkeep::relay::sim
