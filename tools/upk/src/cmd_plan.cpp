// upk plan: the ordered install plan for an appliance, from its installed packages and a catalog
// directory of release manifests, with the waits between software packages and the releases it
// cannot reach yet (and why).
#include <CLI/CLI.hpp>
#include <algorithm>
#include <memory>

#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/planner.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

namespace {

struct PlanArgs {
  std::string catalog;
  std::vector<std::string> installed;
  std::vector<std::string> allow_major;
  std::vector<std::string> max;
  std::uint32_t last_settle_hours = 0;
};

Expected<packages::Installed> ParseNameVersions(const std::vector<std::string>& specs, const char* flag) {
  packages::Installed result;
  for (const auto& spec : specs) {
    auto parsed = packages::ParseNameVersion(spec);
    if (!parsed) return parsed.error().Wrap(flag);
    if (!result.emplace(parsed->first, parsed->second).second) {
      return Error(Errc::kInvalidArgument, std::string(flag) + ": package '" + parsed->first + "' given twice");
    }
  }
  return result;
}

std::string Pad(const std::string& text, std::size_t width) {
  return text.size() >= width ? text : text + std::string(width - text.size(), ' ');
}

void PrintText(std::ostream& out, const packages::Plan& plan, std::size_t releases) {
  if (plan.steps.empty()) {
    out << "Nothing to install: every installed package is at its newest reachable release (" << releases
        << " releases in the catalog).\n";
  } else {
    out << "Install plan: " << plan.steps.size() << (plan.steps.size() == 1 ? " step" : " steps") << ", "
        << plan.TotalWaitHours() << " h of waiting in total\n";
    std::size_t wname = 0, wversion = 0;
    for (const auto& s : plan.steps) {
      wname = std::max(wname, s.name.size());
      wversion = std::max(wversion, s.version.ToString().size());
    }
    std::size_t wnum = std::to_string(plan.steps.size()).size();
    for (std::size_t i = 0; i < plan.steps.size(); ++i) {
      const auto& s = plan.steps[i];
      std::string num = std::to_string(i + 1);
      std::string indent(2 + wnum + 2, ' ');
      if (s.wait_hours > 0) out << indent << "... wait " << s.wait_hours << " h for clients to follow\n";
      out << "  " << std::string(wnum - num.size(), ' ') << num << ". " << Pad(s.name, wname) << "  "
          << Pad(s.version.ToString(), wversion) << "  " << Pad(packages::KindName(s.kind), 8) << "  " << s.reason
          << "\n";
    }
  }
  if (plan.blocked.empty()) {
    out << "Blocked: none\n";
    return;
  }
  out << "Blocked (" << plan.blocked.size() << "):\n";
  for (const auto& b : plan.blocked) out << "  - " << b.name << " " << b.version.ToString() << ": " << b.reason << "\n";
}

}  // namespace

void AddPlanCommand(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("plan", "Compute the ordered install plan for an appliance from a catalog directory");
  auto args = std::make_shared<PlanArgs>();
  sub->add_option("--catalog", args->catalog, "Directory of *.manifest.json and *.upk releases")->required();
  sub->add_option("--installed", args->installed, "An installed package, NAME=VERSION (repeatable)")->required();
  sub->add_option("--allow-major", args->allow_major, "Allow NAME to cross into a newer major line (repeatable)");
  sub->add_option("--max", args->max, "Never plan NAME above VERSION, NAME=VERSION (repeatable)");
  sub->add_option("--last-settle-hours", args->last_settle_hours,
                  "settle_hours of the software installed last, if it was installed recently")
      ->check(CLI::Range(0, 24 * 365));
  OnRun(sub, ctx, [&ctx, args]() -> int {
    auto installed = ParseNameVersions(args->installed, "--installed");
    if (!installed) return ctx.Fail(installed.error());
    auto caps = ParseNameVersions(args->max, "--max");
    if (!caps) return ctx.Fail(caps.error());
    packages::PlanOptions options;
    for (const auto& name : args->allow_major) {
      if (!packages::IsValidPackageName(name)) {
        return ctx.Fail(Error(Errc::kInvalidArgument, "--allow-major: '" + name.substr(0, 64) +
                                                          "' is not a valid package name"));
      }
      options.allow_major.insert(name);
    }
    options.max_version = std::move(*caps);
    options.last_software_settle_hours = args->last_settle_hours;
    auto catalog = packages::Catalog::LoadDirectory(args->catalog);
    if (!catalog) return ctx.Fail(catalog.error());
    packages::Plan plan = packages::MakePlan(*installed, *catalog, options);
    if (ctx.json) {
      ctx.PrintJson(plan.ToJson());
    } else {
      PrintText(*ctx.out, plan, catalog->size());
    }
    return 0;
  });
}

}  // namespace upkeep::upk
