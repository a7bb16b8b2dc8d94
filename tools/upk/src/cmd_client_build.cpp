// upk client-build: the vendor signs an endpoint client build and lists it in a software
// package's client-builds.json (relay/builds_file.hpp), which the appliance's relay serves to
// its clients once the package is installed (docs/relay.md, "Client builds").
#include <CLI/CLI.hpp>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/version.hpp"
#include "upkeep/relay/build_signature.hpp"
#include "upkeep/relay/builds_file.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {
namespace {

namespace fs = std::filesystem;

struct ClientBuildArgs {
  std::string file, platform, version, key, builds;
};

// Signs the build and adds (or replaces) its platform's entry; the list is checked whole by the
// relay's own loader before it is written, so upk never writes a list the appliance would refuse.
Expected<Json> AddBuild(const ClientBuildArgs& a) {
  if (!packages::Version::Parse(a.version).ok()) {
    return Error(Errc::kInvalidArgument, "--version '" + a.version + "' is not MAJOR.MINOR.BUILD");
  }
  const fs::path list = fs::absolute(a.builds).lexically_normal();
  const fs::path file = fs::absolute(a.file).lexically_normal();
  const std::string rel = file.lexically_relative(list.parent_path()).generic_string();
  if (rel.empty() || !packages::CheckRelativePath(rel).ok()) {
    return Error(Errc::kInvalidArgument, a.file + ": must be inside " + list.parent_path().string() +
                                             " (the package payload its builds list belongs to)");
  }
  UPK_TRY_ASSIGN(auto key, packages::PrivateKey::Load(a.key));
  UPK_TRY_ASSIGN(auto digest, HashFile(file));
  const Json entry = {{"platform", a.platform},
                      {"version", a.version},
                      {"path", rel},
                      {"sha256", digest.sha256_hex},
                      {"signature", ToHex(key.Sign(relay::BuildSigningMessage(a.platform, a.version, digest.sha256_hex)))}};
  Json doc = {{"builds", Json::array()}};
  if (fs::exists(list)) {
    if (auto existing = relay::LoadClientBuilds(list, true); !existing.ok()) return existing.error();
    UPK_TRY_ASSIGN(auto text, ReadFileBounded(list, 1 << 20));
    UPK_TRY_ASSIGN(doc, ParseJson(text));
  }
  Json kept = Json::array();
  for (const auto& e : doc["builds"]) {
    if (e.value("platform", "") != a.platform) kept.push_back(e);
  }
  kept.push_back(entry);
  doc["builds"] = kept;
  const fs::path tmp = list.parent_path() / (list.filename().string() + ".check");
  UPK_TRY(WriteFileAtomic(tmp, doc.dump(2) + "\n"));
  auto checked = relay::LoadClientBuilds(tmp, true);
  std::error_code ec;
  fs::remove(tmp, ec);
  if (!checked.ok()) return checked.error();
  UPK_TRY(WriteFileAtomic(list, doc.dump(2) + "\n", 0644));
  return entry;
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
