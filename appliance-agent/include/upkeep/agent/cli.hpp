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
#include <string>
#include <vector>

namespace upkeep::agent {

// A command implemented by a library built on this one (e.g. `cluster`): it gets the agent
// configuration path and the arguments after its name, unparsed.
struct ExtraCommand {
  std::string description;
  std::function<int(const std::string& config_path, const std::vector<std::string>& args, std::ostream& out,
                    std::ostream& err)>
      run;
};
using ExtraCommands = std::map<std::string, ExtraCommand>;

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err, const ExtraCommands& extra = {});

}  // namespace upkeep::agent
