// fleet-sim, a simulated fleet of appliances, as a library: Main() parses arguments and runs one
// command, so tests drive the whole CLI in-process. Commands (docs/fleet-sim.md):
//   identity new FILE | enrol | checkin | report      one appliance, against a real updater
//   seed-sql | presign                                 benchmark set-up (deterministic fleet)
//   load                                               open-loop or closed-loop check-in load
//
// Exit codes: 0 ok, 1 the server refused (verification or policy: 4xx) or a check failed,
// 2 usage, input or I/O error (including 5xx and unreachable servers).
#pragma once

#include <iosfwd>

namespace upkeep::fleet_sim {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::fleet_sim
