#include "upkeep/upk/cli.hpp"

#include <unistd.h>

#include <iostream>

#include "upkeep/common/cli_parse.hpp"

namespace upkeep::upk {

int Context::Fail(const Error& error) const {
  if (json) {
    *out << Json{{"error", {{"code", ErrcName(error.code())}, {"message", error.message()}}}}.dump() << "\n";
  } else {
    *err << "upk: error: " << error.message() << "\n";
  }
  return error.ExitCode();
}

void Context::PrintJson(const Json& value) const { *out << value.dump(2) << "\n"; }

void OnRun(CLI::App* sub, Context& ctx, std::function<int()> body) {
  sub->callback([&ctx, body = std::move(body)] { ctx.run = body; });
}

Progress::Progress(const Context& ctx, std::string label, std::uint64_t total)
    : ctx_(ctx), label_(std::move(label)), total_(total) {}

Progress::~Progress() { Finish(); }

void Progress::Update(std::uint64_t done) {
  if (!ctx_.progress_tty || finished_ || total_ == 0) return;
  int permille = static_cast<int>(std::min<std::uint64_t>(1000, done * 1000 / total_));
  if (permille == last_permille_) return;
  last_permille_ = permille;
  constexpr int kWidth = 30;
  int filled = permille * kWidth / 1000;
  std::string bar(static_cast<std::size_t>(filled), '#');
  bar.append(static_cast<std::size_t>(kWidth - filled), '.');
  char pct[16];
  std::snprintf(pct, sizeof pct, "%5.1f%%", permille / 10.0);
  *ctx_.err << "\r" << label_ << " [" << bar << "] " << pct << " " << (done >> 20) << "/" << (total_ >> 20) << " MiB"
            << std::flush;
}

void Progress::Finish() {
  if (finished_) return;
  finished_ = true;
  if (ctx_.progress_tty && last_permille_ >= 0) *ctx_.err << "\n";
}

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err) {
  Context ctx;
  ctx.out = &out;
  ctx.err = &err;
  CLI::App app("upk: the Upkeep operator CLI (keys, packages, plans, TUF repositories, the updater)", "upk");
  app.require_subcommand(1);
  app.fallthrough();
  app.add_flag("--json", ctx.json, "Print machine-readable JSON on stdout");
  app.add_flag("-q,--quiet", ctx.quiet, "No progress bars");
  app.set_version_flag("--version", "upk 0.1.0");
  AddKeyCommands(app, ctx);
  AddPackageCommands(app, ctx);
  AddClientBuildCommands(app, ctx);
  AddPlanCommand(app, ctx);
  AddRepoCommands(app, ctx);
  AddPublishCommands(app, ctx);
  AddFleetCommands(app, ctx);
  if (auto code = ParseCommandLine(app, argc, argv, out, err)) return *code;
  ctx.progress_tty = !ctx.json && !ctx.quiet && &err == &std::cerr && ::isatty(STDERR_FILENO);
  if (!ctx.run) {
    err << "upk: no command given; run 'upk --help'\n";
    return 2;
  }
  try {
    return ctx.run();
  } catch (const std::exception& e) {
    // Exceptions must not escape a part; reaching here is a bug, reported rather than crashing.
    return ctx.Fail(Error(Errc::kInternal, std::string("unexpected failure: ") + e.what()));
  }
}

}  // namespace upkeep::upk
