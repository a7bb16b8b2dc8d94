// appliance-agent's command line as a library: Main() parses arguments and runs one command, so
// tests drive the whole CLI in-process. Commands (docs/agent.md): init, run, status, check,
// install, history, rollback, backup create|list|restore|export-vault-key, settings.
//
// Exit codes: 0 ok, 1 refused (verification or policy) or an install that failed and was rolled
// back, 2 usage, input or I/O error.
#pragma once

#include <iosfwd>

namespace upkeep::agent {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::agent
