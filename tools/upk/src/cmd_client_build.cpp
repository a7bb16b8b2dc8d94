// upk client-build: the vendor signs an endpoint client build and lists it in a software
// package's client-builds.json (relay/builds_file.hpp), which the appliance's relay serves to
// its clients once the package is installed (docs/relay.md, "Client builds").
#include <CLI/CLI.hpp>

#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/version.hpp"
#include "upkeep/relay/builds_file.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {
namespace {

struct ClientBuildArgs {
  std::string file, platform, version, key, builds;
};

Expected<Json> AddBuild(const ClientBuildArgs& a) {
  if (!packages::Version::Parse(a.version).ok()) {
    return Error(Errc::kInvalidArgument, "--version '" + a.version + "' is not MAJOR.MINOR.BUILD");
  }
  UPK_TRY_ASSIGN(auto key, packages::PrivateKey::Load(a.key));
  return relay::AddSignedClientBuild(a.builds, a.file, a.platform, a.version, key, true);
}

}  // namespace

void AddClientBuildCommands(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand(
      "client-build", "Sign an endpoint client build and list it in a software package's client-builds.json");
  auto a = std::make_shared<ClientBuildArgs>();
  sub->add_option("FILE", a->file, "The client build (inside the package payload directory)")->required();
  sub->add_option("--platform", a->platform, "Client platform, e.g. linux-x86_64")->required();
  sub->add_option("--version", a->version, "Client version MAJOR.MINOR.BUILD")->required();
  sub->add_option("--key", a->key, "The vendor's client signing key (upk keygen)")->required();
  sub->add_option("--builds", a->builds, "The list to add it to (created if missing), e.g. PAYLOAD/client-builds.json")
      ->required();
  OnRun(sub, ctx, [&ctx, a]() -> int {
    auto entry = AddBuild(*a);
    if (!entry.ok()) return ctx.Fail(entry.error());
    if (ctx.json) {
      ctx.PrintJson(*entry);
    } else {
      *ctx.out << a->platform << " " << a->version << " (sha256 " << (*entry)["sha256"].get<std::string>()
               << ") signed and listed in " << a->builds << "\n";
    }
    return 0;
  });
}

}  // namespace upkeep::upk
