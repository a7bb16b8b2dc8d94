// relay-sim as a library: Main() parses arguments and runs one command, so tests drive the whole
// CLI in-process. Commands (docs/relay-sim.md):
//   make-clients N --prefix ID -o clients.json [--secrets FILE]   provisioning files
//   run --relay HOST:PORT --ca FILE --secrets FILE ...               the simulated fleet
// Exit codes: 0 ok (and, with --until-version, every client reported it), 1 the target version
// was not reached in time, 2 usage, input or I/O error.
#pragma once

#include <iosfwd>

namespace upkeep::relay::sim {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::relay::sim
