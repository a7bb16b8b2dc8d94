// The relay core hosted by the agent daemon (docs/agent/relay.md): the appliance's endpoint
// clients and technicians' consoles connect to it, and after a software release that brings new
// client builds it paces their upgrade wave.
//
// RelayHost owns the client store, a relay::RelayCore and a control socket (STATE/relay.sock,
// 0600) through which `appliance-agent clients` asks the running daemon for the counts and the
// export. Sync() is what the daemon calls after every cycle (and on SIGHUP): it takes the client
// builds of the installed software releases that said `client_upgrade` (Agent::ClientBuildFiles)
// and the live throttle settings; a changed set of builds starts a wave, an unchanged one (a base
// update, an add-on, a restart) changes nothing. Relay events go to STATE/relay.log (rotated at
// 16 MiB); the daemon's own log gets the wave's progress every 10 s while it changes.
//
// Threads: Sync, Status and the export are safe from any thread (one mutex); the relay has its own
// I/O thread, the control socket and progress timer another. Destruction stops both, saves the
// client store's check-ins and removes the socket. Errors name the file or address at fault.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/cli.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::agent {

class RelayHost {
 public:
  // Opens the client store, binds the relay's listen address and the control socket, starts both.
  // kPolicy when another daemon's control socket answers (one relay per state directory).
  static Expected<std::unique_ptr<RelayHost>> Start(const AgentConfig& config,
                                                    std::function<void(const std::string&)> log);
  ~RelayHost();
  RelayHost(const RelayHost&) = delete;
  RelayHost& operator=(const RelayHost&) = delete;

  // Builds from these files (missing files are skipped with one log line; a malformed file or a
  // build whose bytes do not match is refused and the previous builds stay) and the throttles.
  // One build per platform: when two releases bring one, the newer version wins.
  Status Sync(const std::vector<ClientBuildsFile>& files, const Settings& settings);
  std::uint16_t port() const;

  // The status the CLI shows: {"listen", "port", "connections": {...}, "clients": {"total", "current", "upgrade pending",
  //  "upgrading", "failed", "offline"}, "settings": {...}, "builds": [{"platform", "version",
  //  "sha256", "package"}]}
  Json Describe();
  std::string ExportCsv();
  std::string ExportJson();

 private:
  struct Impl;
  explicit RelayHost(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// The daemon service that hosts a RelayHost when the configuration has a "relay" section.
DaemonServiceFactory RelayDaemonService();

// `appliance-agent clients [--export csv|json] [-o FILE] [--json]`: asks the running daemon's
// relay through the control socket (exit 2 with a clear message when no daemon hosts one).
int ClientsMain(const std::string& config_path, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err);

// One request on the control socket ("status", "export csv", "export json", "drain"); the
// answer's body. kNotFound when no daemon listens there.
Expected<std::string> AskRelay(const std::filesystem::path& socket, const std::string& request);

// Puts the running daemon's relay in drain mode and waits (polling its status) until no session
// is open: returns the number still open when `wait` ran out (0: drained). kNotFound when no
// daemon hosts a relay there.
Expected<std::uint64_t> DrainRelay(const std::filesystem::path& socket, std::chrono::seconds wait,
                                   const std::function<void(const std::string&)>& progress = {});

}  // namespace upkeep::agent
