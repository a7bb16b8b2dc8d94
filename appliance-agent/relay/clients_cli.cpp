// `appliance-agent clients`: the relay's client counts, throttles and builds, or the client
// export, asked of the running daemon over its control socket.
#include <chrono>
#include <cstdlib>
#include <functional>
#include <thread>
#include <ostream>

#include "upkeep/agent/control_socket.hpp"
#include "upkeep/agent/relay_host.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::agent {
namespace {

constexpr std::size_t kMaxAnswerBytes = 256u << 20;  // an export of a million clients fits
constexpr auto kAnswerTimeout = std::chrono::seconds(30);

constexpr const char* kUsage =
    "usage: appliance-agent clients [--export csv|json] [-o FILE] [--json]\n"
    "       appliance-agent clients drain [--wait SECONDS]\n"
    "  The endpoint clients of the relay this appliance's agent daemon hosts: counts by state\n"
    "  (current, upgrade pending, upgrading, failed, offline), the two throttle settings\n"
    "  (appliance-agent settings max_concurrent_client_upgrades|max_client_upgrade_bandwidth VALUE)\n"
    "  and the client builds being rolled out.\n"
    "  --export csv|json  every client with id, platform, version, state, detail and last check-in\n"
    "  -o FILE            write the export to FILE (atomically) instead of standard output\n"
    "  drain              stop accepting new clients and console sessions (before a cluster node is\n"
    "                     upgraded) and wait until no session is open (default at most 600 s; exit 1\n"
    "                     if some remain); the relay stays drained until the daemon restarts\n";

std::string Count(const Json& clients, const char* key) {
  return std::to_string(clients.value(key, std::uint64_t{0})) + " " + key;
}

}  // namespace

Expected<std::string> AskRelay(const std::filesystem::path& socket_path, const std::string& request) {
  auto answer = AskControlSocket(socket_path, request, kAnswerTimeout, kMaxAnswerBytes);
  if (!answer.ok() && answer.error().code() == Errc::kNotFound) {
    return Error(Errc::kNotFound, "no running agent daemon hosts a relay here (" + socket_path.string() +
                                      "): start `appliance-agent run` with a \"relay\" section in the agent config");
  }
  return answer;
}

Expected<std::uint64_t> DrainRelay(const std::filesystem::path& socket, std::chrono::seconds wait,
                                   const std::function<void(const std::string&)>& progress) {
  UPK_TRY_ASSIGN(std::string answer, AskRelay(socket, "drain"));
  if (progress) progress(answer);
  const auto until = std::chrono::steady_clock::now() + wait;
  for (;;) {
    UPK_TRY_ASSIGN(std::string status, AskRelay(socket, "status"));
    auto j = ParseJson(status);
    if (!j.ok() || !j->is_object()) return Error(Errc::kParse, "the daemon's relay status is not a JSON object");
    const auto sessions = j->value("connections", Json::object()).value("sessions", std::uint64_t{0});
    if (sessions == 0 || std::chrono::steady_clock::now() >= until) return sessions;
    std::this_thread::sleep_for(std::chrono::milliseconds(500));
  }
}

int ClientsMain(const std::string& config_path, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err) {
  std::string format, output;
  bool json = false, drain = false;
  long wait_seconds = 600;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "drain" && i == 0) {
      drain = true;
    } else if (drain && a == "--wait" && i + 1 < args.size()) {
      char* end = nullptr;
      wait_seconds = std::strtol(args[++i].c_str(), &end, 10);
      if (*end != '\0' || wait_seconds < 0 || wait_seconds > 86400) {
        err << "appliance-agent clients drain: --wait takes 0..86400 seconds\n";
        return 2;
      }
    } else if (a == "--export" && i + 1 < args.size()) {
      format = args[++i];
    } else if (a == "-o" && i + 1 < args.size()) {
      output = args[++i];
    } else if (a == "--json") {
      json = true;
    } else if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    } else {
      err << "appliance-agent clients: unexpected argument '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  if (!format.empty() && format != "csv" && format != "json") {
    err << "appliance-agent clients: --export takes csv or json, not '" << format << "'\n";
    return 2;
  }
  if (!output.empty() && format.empty()) {
    err << "appliance-agent clients: -o needs --export csv|json\n";
    return 2;
  }
  const auto fail = [&err](const Error& e) {
    err << "appliance-agent: error: " << e.message() << "\n";
    return e.ExitCode();
  };
  auto config = AgentConfig::Load(config_path);
  if (!config.ok()) return fail(config.error());
  if (!config->relay) return fail(Error(Errc::kNotFound, config_path + ": no \"relay\" section: this agent hosts no relay"));
  if (drain) {
    auto left = DrainRelay(config->RelaySocket(), std::chrono::seconds(wait_seconds),
                           [&out](const std::string& line) { out << line << std::flush; });
    if (!left.ok()) return fail(left.error());
    if (*left > 0) {
      return fail(Error(Errc::kPolicy, std::to_string(*left) + " session(s) still open after " +
                                           std::to_string(wait_seconds) + " s (the relay stays drained)"));
    }
    out << "drained: no session remains\n";
    return 0;
  }
  auto answer = AskRelay(config->RelaySocket(), format.empty() ? "status" : "export " + format);
  if (!answer.ok()) return fail(answer.error());
  if (!format.empty()) {
    if (output.empty()) {
      out << *answer;
      return 0;
    }
    if (auto st = WriteFileAtomic(output, *answer); !st.ok()) return fail(st.error());
    return 0;
  }
  if (json) {
    out << *answer;
    return 0;
  }
  auto status = ParseJson(*answer);
  if (!status.ok() || !status->is_object()) return fail(Error(Errc::kParse, "the daemon's relay status is not a JSON object"));
  const Json& s = *status;
  const Json clients = s.value("clients", Json::object());
  std::string listen = s.value("listen", "");
  if (listen.size() >= 2 && listen.compare(listen.size() - 2, 2, ":0") == 0) {  // an ephemeral port: show the real one
    listen = listen.substr(0, listen.size() - 1) + std::to_string(s.value("port", 0));
  }
  out << "Relay on " << listen << ", " << s.value("connections", Json::object()).value("clients_online", 0)
      << " clients online\n";
  out << "Clients: " << clients.value("total", 0) << " (" << Count(clients, "current") << ", "
      << Count(clients, "upgrade pending") << ", " << Count(clients, "upgrading") << ", " << Count(clients, "failed")
      << ", " << Count(clients, "offline") << ")\n";
  const Json settings = s.value("settings", Json::object());
  out << "Upgrades: at most " << settings.value("max_concurrent_client_upgrades", 0) << " at a time, "
      << settings.value("max_client_upgrade_bandwidth", 0) << " bytes/s in total\n";
  const Json builds = s.value("builds", Json::array());
  if (builds.empty()) out << "Client builds: none (no installed software release brought any)\n";
  for (const auto& b : builds) {
    out << "Client build: " << b.value("platform", "") << " " << b.value("version", "") << " ("
        << b.value("length", 0) << " bytes, from " << b.value("package", "") << ")\n";
  }
  return 0;
}

}  // namespace upkeep::agent
