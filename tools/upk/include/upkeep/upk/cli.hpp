// upk, the operator CLI, as a library: Main() parses arguments and runs one command, so tests
// can drive the whole CLI in-process. Command groups live in their own files and register
// their subcommands here.
//
// Exit codes: 0 ok, 1 verification or policy failure, 2 usage or input error.
#pragma once

#include <cstdint>
#include <functional>
#include <iosfwd>
#include <string>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace CLI {
class App;
}

namespace upkeep::upk {

// What every command can use: where to write, whether to write JSON, and the one error path.
struct Context {
  std::ostream* out = nullptr;
  std::ostream* err = nullptr;
  bool json = false;
  bool quiet = false;
  bool progress_tty = false;  // draw progress bars (stderr is a terminal and not --json/--quiet)
  std::function<int()> run;   // set by the chosen subcommand's callback

  // Prints the error (as {"error": {...}} with --json) and returns its exit code.
  int Fail(const Error& error) const;
  void PrintJson(const Json& value) const;
};

// Makes `sub` run `body` after parsing succeeded.
void OnRun(CLI::App* sub, Context& ctx, std::function<int()> body);

// A one-line progress bar on stderr; draws nothing unless ctx.progress_tty.
class Progress {
 public:
  Progress(const Context& ctx, std::string label, std::uint64_t total);
  ~Progress();
  void Update(std::uint64_t done);
  void Finish();

 private:
  const Context& ctx_;
  std::string label_;
  std::uint64_t total_;
  int last_permille_ = -1;
  bool finished_ = false;
};

// Command groups (one file each).
void AddKeyCommands(CLI::App& app, Context& ctx);
void AddPackageCommands(CLI::App& app, Context& ctx);  // pack, inspect, verify, unpack
void AddClientBuildCommands(CLI::App& app, Context& ctx);  // client-build
void AddPlanCommand(CLI::App& app, Context& ctx);
void AddRepoCommands(CLI::App& app, Context& ctx);
// Against the updater's operator API (docs/upk.md): `repo bootstrap` (added to the `repo` group,
// so call after AddRepoCommands), `publish`, `yank`.
void AddPublishCommands(CLI::App& app, Context& ctx);
void AddFleetCommands(CLI::App& app, Context& ctx);  // channel, rollout, appliance, audit, token

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::upk
