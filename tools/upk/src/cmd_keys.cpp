// upk keygen: a new ed25519 signing key pair (private key file 0600, public key JSON beside it).
#include <CLI/CLI.hpp>

#include "upkeep/common/files.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

void AddKeyCommands(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("keygen", "Generate an ed25519 key pair: PATH (private, 0600) and PATH.pub (public)");
  auto path = std::make_shared<std::string>();
  sub->add_option("PATH", *path, "Private key file to create (must not exist)")->required();
  OnRun(sub, ctx, [&ctx, path]() -> int {
    auto key = packages::PrivateKey::GenerateEd25519();
    if (auto s = key.Save(*path); !s) return ctx.Fail(s.error());
    std::string pub_path = *path + ".pub";
    if (auto s = WriteFileAtomic(pub_path, key.public_key().ToJson().dump(2) + "\n", 0644); !s) return ctx.Fail(s.error());
    if (ctx.json) {
      ctx.PrintJson({{"keyid", key.keyid()}, {"private", *path}, {"public", pub_path}});
    } else {
      *ctx.out << "key id  " << key.keyid() << "\nprivate " << *path << " (keep offline)\npublic  " << pub_path << "\n";
    }
    return 0;
  });
}

}  // namespace upkeep::upk
