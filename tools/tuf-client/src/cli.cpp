#include "upkeep/tuf_client/cli.hpp"

#include <CLI/CLI.hpp>

#include <ostream>
#include <string>
#include <vector>

#include "upkeep/common/files.hpp"
#include "upkeep/tuf/trusted_set.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::tuf_client {
namespace {

constexpr const char* kProgram = "upkeep-tuf-client";

struct Args {
  std::string metadata_dir, metadata_url, target_base_url, target_dir, trusted_root;
  std::vector<std::string> target_names;
};

int Fail(std::ostream& err, const Error& e) {
  err << kProgram << ": " << e.message() << "\n";
  return 1;
}

Status Init(const Args& a) {
  tuf::UpdaterConfig limits;
  UPK_TRY_ASSIGN(std::string root, ReadFileBounded(a.trusted_root, limits.root_max_length));
  // Not required by the contract, but an unusable trust anchor is better refused now.
  auto check = tuf::TrustedMetadataSet::Create(root, SysTime{});
  if (!check) return check.error().Wrap(a.trusted_root);
  std::error_code ec;
  std::filesystem::create_directories(a.metadata_dir, ec);
  if (ec) return Error(Errc::kIo, a.metadata_dir + ": " + ec.message());
  return WriteFileAtomic(std::filesystem::path(a.metadata_dir) / "root.json", root);
}

tuf::UpdaterOptions Options(const Args& a) {
  tuf::UpdaterOptions o;
  o.metadata_dir = a.metadata_dir;
  o.metadata_base_url = a.metadata_url;
  o.target_dir = a.target_dir;
  o.target_base_url = a.target_base_url;
  return o;
}

Status Download(tuf::Updater& updater, const std::string& name, std::ostream& out) {
  UPK_TRY_ASSIGN(std::optional<tuf::TargetFile> info, updater.GetTargetInfo(name));
  if (!info) return Error(Errc::kNotFound, "target '" + name + "' is not in the repository");
  if (auto cached = updater.FindCachedTarget(*info)) {
    out << name << ": already up to date in " << cached->string() << "\n";
    return OkStatus();
  }
  UPK_TRY_ASSIGN(std::filesystem::path path, updater.DownloadTarget(*info));
  out << name << ": downloaded to " << path.string() << "\n";
  return OkStatus();
}

}  // namespace

int Run(int argc, const char* const* argv, tuf::Fetcher& fetcher, const Clock& clock, std::ostream& out,
        std::ostream& err) {
  Args a;
  CLI::App app{"TUF 1.0 client (tuf-conformance command line)", kProgram};
  app.add_option("--metadata-dir", a.metadata_dir, "directory of trusted metadata");
  app.add_option("--metadata-url", a.metadata_url, "base URL of the repository metadata");
  app.add_option("--target-name", a.target_names, "TUF target path to download (repeatable)");
  app.add_option("--target-base-url", a.target_base_url, "base URL of the repository targets");
  app.add_option("--target-dir", a.target_dir, "directory for downloaded targets");
  app.require_subcommand(1);
  auto* init = app.add_subcommand("init", "trust TRUSTED_ROOT: copy it into the metadata dir as root.json");
  init->add_option("TRUSTED_ROOT", a.trusted_root, "initial root.json")->required();
  auto* refresh = app.add_subcommand("refresh", "update the trusted metadata from the repository");
  auto* download = app.add_subcommand("download", "refresh, then download and verify the named targets");
  for (auto* sub : {init, refresh, download}) sub->fallthrough();

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {
      app.exit(e, out, err);
      return 0;
    }
    err << kProgram << ": " << e.what() << "\n";
    return 1;
  }

  auto usage = [&](const char* what) { return Fail(err, Error(Errc::kInvalidArgument, what)); };
  if (a.metadata_dir.empty()) return usage("--metadata-dir is required");

  if (init->parsed()) {
    auto st = Init(a);
    if (!st) return Fail(err, st.error());
    out << "initialized " << a.metadata_dir << "\n";
    return 0;
  }

  if (a.metadata_url.empty()) return usage("--metadata-url is required");
  if (refresh->parsed()) {
    tuf::Updater updater(Options(a), fetcher, clock);
    auto st = updater.Refresh();
    if (!st) return Fail(err, st.error());
    out << "refreshed " << a.metadata_dir << "\n";
    return 0;
  }

  if (a.target_names.empty()) return usage("download needs at least one --target-name");
  if (a.target_base_url.empty()) return usage("--target-base-url is required");
  if (a.target_dir.empty()) return usage("--target-dir is required");
  std::error_code ec;
  std::filesystem::create_directories(a.target_dir, ec);
  if (ec) return Fail(err, Error(Errc::kIo, a.target_dir + ": " + ec.message()));
  tuf::Updater updater(Options(a), fetcher, clock);
  int rc = 0;
  for (const auto& name : a.target_names) {
    auto st = Download(updater, name, out);
    if (!st) rc = Fail(err, st.error());
  }
  return rc;
}

}  // namespace upkeep::tuf_client
