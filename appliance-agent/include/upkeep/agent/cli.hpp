// appliance-agent's command line as a library: Main() parses arguments and runs one command, so
// tests drive the whole CLI in-process. Commands (docs/agent.md): init, run, status, check,
// install, history, rollback, download-key, import, report, backup create|list|restore|export-vault-key,
// settings; `cluster` comes from the cluster library through ExtraCommands (main.cpp).
//
// Exit codes: 0 ok, 1 refused (verification or policy) or an install that failed and was rolled
// back, 2 usage, input or I/O error.
#pragma once

#include <functional>
#include <iosfwd>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::agent {

struct AgentRuntime;  // runtime.hpp

// A command implemented by a library built on this one (e.g. `cluster`): it gets the agent
// configuration path and the arguments after its name, unparsed.
struct ExtraCommand {
  std::string description;
  std::function<int(const std::string& config_path, const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err)>
      run;
};
using ExtraCommands = std::map<std::string, ExtraCommand>;

// Something the daemon (`run`) hosts beside its update cycles, from a library built on this one
// (the relay core, relay_host.hpp). Made once at start; AfterCycle runs on the daemon's thread at
// the end of every cycle with that cycle's Agent (store lock held), so it sees what was just
// installed; the service is destroyed (and stops) when the daemon exits.
//
// Work a service queues for the daemon (the updates page's "Install now", a bundle upload, a
// backup) runs in BeforeCycle, on the daemon's thread with the store lock held, before the
// cycle's check and installs; a service that queued work wakes the daemon with SIGUSR2 (a cycle
// without a check). OnLog sees every line the daemon logs during a cycle (progress lines
// included), on the daemon's thread.
class DaemonService {
 public:
  virtual ~DaemonService() = default;
  virtual void AfterCycle(Agent& agent) = 0;
  virtual void BeforeCycle(AgentRuntime&) {}
  virtual void OnLog(const std::string&) {}
};
// Returns nullptr when the configuration does not ask for the service; an error stops the start.
using DaemonServiceFactory = std::function<Expected<std::unique_ptr<DaemonService>>(
    const AgentConfig& config, std::function<void(const std::string&)> log)>;

// An admin's approval to install up to NAME VERSION in the next maintenance window, kept in the
// store document kInstallApprovalDoc as {"name", "version", "by", "at"} (at most one; a new one
// replaces it). The daemon's cycle installs up to that step inside a window even when
// auto_install is off, and removes the approval once the step is installed, when the assignment
// no longer names it, or when a step up to it failed.
inline constexpr const char* kInstallApprovalDoc = "install_approval";

struct CycleInstallDecision {
  bool install = false;        // run the install loop (InstallNext(false): windows still apply)
  bool drop_approval = false;  // remove kInstallApprovalDoc now
  std::string why;             // why the approval ends (for the daemon's log); empty otherwise
};

// One decision per install of a daemon cycle (DaemonCycle uses it). `approval`: the kept
// document or null; `plan`: Agent::Plan(), null when it could not be computed (the approval is
// then kept). Pure: no clock, no store.
CycleInstallDecision DecideCycleInstall(bool auto_install, const Json* approval, const std::vector<PlannedStep>* plan);

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err, const ExtraCommands& extra = {},
         const std::vector<DaemonServiceFactory>& services = {});

}  // namespace upkeep::agent
