// Placeholder registration until this command group lands; see the issue tracker.
#include <CLI/CLI.hpp>

#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

void AddPlanCommand(CLI::App&, Context&) {}

}  // namespace upkeep::upk
