// Fault injection for the crash-safety tests: when the environment variable UPKEEP_AGENT_CRASH_AT
// names a point, the agent kills itself with SIGKILL the first time it reaches it, exactly as a
// power cut or `kill -9` would stop it there. Unset (production), a point costs one branch.
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace upkeep::agent {

void CrashPoint(std::string_view name);
// Every point the agent has, in the order an install reaches them (`appliance-agent crash-points`).
const std::vector<std::string>& CrashPointNames();

}  // namespace upkeep::agent
