// Command-line parsing with the exit-code convention every Upkeep program shares: help and
// version print to `out` and exit 0; a usage error prints one line plus a pointer to --help on
// `err` and exits 2. Header-only so only programs that use CLI11 pull it in.
#pragma once

#include <CLI/CLI.hpp>
#include <optional>
#include <ostream>
#include <string>

namespace upkeep {

// Parses argv into `app`. Returns an exit code when the program should stop now (help, version,
// usage error), or nullopt when the parsed command should run.
inline std::optional<int> ParseCommandLine(CLI::App& app, int argc, const char* const* argv, std::ostream& out,
                                           std::ostream& err) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp&) {
    out << app.help();
    return 0;
  } catch (const CLI::CallForAllHelp&) {
    out << app.help("", CLI::AppFormatMode::All);
    return 0;
  } catch (const CLI::CallForVersion& e) {
    out << e.what() << "\n";
    return 0;
  } catch (const CLI::ParseError& e) {
    // Help requested on a subcommand arrives here too, with exit code 0.
    if (e.get_exit_code() == 0) return app.exit(e, out, err);
    const std::string name = app.get_name();
    err << name << ": " << e.what() << "\nRun '" << name << " --help' or '" << name << " COMMAND --help' for usage.\n";
    return 2;
  }
  return std::nullopt;
}

}  // namespace upkeep
