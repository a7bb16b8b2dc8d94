#include "crash_points.hpp"

#include <csignal>
#include <cstdlib>
#include <unistd.h>

namespace upkeep::agent {

const std::vector<std::string>& CrashPointNames() {
  static const std::vector<std::string> names = {
      "mid-download", "after-download", "after-backup", "mid-stage",    "after-stage",
      "after-activate", "after-health-check", "after-commit", "after-rollback"};
  return names;
}

void CrashPoint(std::string_view name) {
  static const char* const target = std::getenv("UPKEEP_AGENT_CRASH_AT");
  if (target == nullptr || name != target) return;
  ::kill(::getpid(), SIGKILL);
  ::_exit(137);  // not reached
}

}  // namespace upkeep::agent
