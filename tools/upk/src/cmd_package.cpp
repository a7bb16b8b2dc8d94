// upk pack | inspect | verify | unpack: build signed .upk packages, look inside them, verify them
// (signatures and every payload digest) and extract them safely.
#include <CLI/CLI.hpp>
#include <cstdio>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>

#include "upkeep/common/files.hpp"
#include "upkeep/packages/extract.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

namespace {

using packages::EntryType;
using packages::Manifest;

// A progress bar that appears on the first report, when the total is known.
class LazyProgress {
 public:
  LazyProgress(const Context& ctx, std::string label) : ctx_(ctx), label_(std::move(label)) {}
  packages::ProgressFn Fn() {
    return [this](std::uint64_t done, std::uint64_t total) {
      if (!bar_) bar_ = std::make_unique<Progress>(ctx_, label_, total);
      bar_->Update(done);
    };
  }
  void Finish() {
    if (bar_) bar_->Finish();
  }

 private:
  const Context& ctx_;
  std::string label_;
  std::unique_ptr<Progress> bar_;
};

Expected<std::vector<packages::PublicKey>> LoadPublicKeys(const std::vector<std::string>& paths) {
  std::vector<packages::PublicKey> keys;
  for (const auto& p : paths) {
    auto key = packages::LoadPublicKey(p);
    if (!key) return key.error().Wrap("--key");
    keys.push_back(std::move(*key));
  }
  return keys;
}

Expected<packages::VerifyOptions> TrustFromArgs(const std::vector<std::string>& key_paths, std::size_t threshold,
                                                bool threshold_given) {
  packages::VerifyOptions options;
  if (key_paths.empty() && threshold_given) {
    return Error(Errc::kInvalidArgument, "--threshold needs trusted keys (--key PUB.json)");
  }
  UPK_TRY_ASSIGN(options.trusted, LoadPublicKeys(key_paths));
  options.threshold = threshold;
  return options;
}

Json TrustJson(const packages::VerifyResult& r, std::size_t threshold) {
  Json j = {{"integrity_only", r.integrity_only}, {"signed_by", r.signed_by}};
  if (!r.integrity_only) j["threshold"] = threshold;
  return j;
}

std::string TrustText(const packages::VerifyResult& r, std::size_t threshold) {
  if (r.integrity_only) {
    return "integrity only: no --key given, so every digest and size was checked but NOT who signed the package";
  }
  std::string ids;
  for (const auto& id : r.signed_by) ids += (ids.empty() ? "" : ", ") + id.substr(0, 16);
  return "signed by " + std::to_string(r.signed_by.size()) + " trusted key(s) (threshold " + std::to_string(threshold) +
         "): " + ids;
}

// ---- pack ----------------------------------------------------------------------------------

struct PackArgs {
  std::string manifest_file, extra_file, name, version, kind, upgrades_from, description, dir, tar, out;
  std::vector<std::string> requires_, keys;
  bool client_upgrade = false;
  std::int64_t settle_hours = 0;
  CLI::Option* client_upgrade_opt = nullptr;
  CLI::Option* settle_opt = nullptr;
  CLI::Option* description_opt = nullptr;
};

const std::set<std::string>& ManifestFields() {
  static const std::set<std::string> k = {"name", "version", "kind", "requires", "upgrades_from",
                                          "client_upgrade", "settle_hours", "description", "payload"};
  return k;
}

Expected<Json> ReadJsonObject(const std::string& path, const char* flag) {
  auto text = ReadFileBounded(path, packages::kMaxManifestBytes);
  if (!text) return text.error().Wrap(flag);
  auto json = ParseJson(*text);
  if (!json) return json.error().Wrap(std::string(flag) + " " + path);
  if (!json->is_object()) return Error(Errc::kParse, std::string(flag) + " " + path + ": not a JSON object");
  return json;
}

// --manifest gives the fields, --manifest-extra adds unknown ones, flags override both.
Expected<Manifest> BuildManifest(const PackArgs& a) {
  Json j = Json::object();
  if (!a.manifest_file.empty()) {
    UPK_TRY_ASSIGN(j, ReadJsonObject(a.manifest_file, "--manifest"));
    if (j.contains("payload")) {
      return Error(Errc::kInvalidArgument, "--manifest " + a.manifest_file + ": 'payload' is computed by upk pack; remove it");
    }
  }
  if (!a.extra_file.empty()) {
    UPK_TRY_ASSIGN(Json extra, ReadJsonObject(a.extra_file, "--manifest-extra"));
    for (auto it = extra.begin(); it != extra.end(); ++it) {
      if (ManifestFields().count(it.key())) {
        return Error(Errc::kInvalidArgument, "--manifest-extra " + a.extra_file + ": field '" + it.key() +
                                                 "' is a manifest field; set it with its flag or --manifest");
      }
      j[it.key()] = it.value();
    }
  }
  if (!a.name.empty()) j["name"] = a.name;
  if (!a.version.empty()) j["version"] = a.version;
  if (!a.kind.empty()) j["kind"] = a.kind;
  if (!a.requires_.empty()) {
    Json reqs = Json::array();
    for (const auto& r : a.requires_) {
      auto pos = r.find(">=");
      if (pos == std::string::npos || pos == 0) {
        return Error(Errc::kInvalidArgument, "--requires '" + r + "': expected NAME>=VERSION");
      }
      reqs.push_back({{"name", r.substr(0, pos)}, {"min_version", r.substr(pos + 2)}});
    }
    j["requires"] = std::move(reqs);
  }
  if (!a.upgrades_from.empty()) j["upgrades_from"] = a.upgrades_from;
  if (a.client_upgrade_opt->count() > 0) j["client_upgrade"] = a.client_upgrade;
  if (a.settle_opt->count() > 0) j["settle_hours"] = a.settle_hours;
  if (a.description_opt->count() > 0) j["description"] = a.description;
  for (const char* field : {"name", "version", "kind"}) {
    if (!j.contains(field)) {
      return Error(Errc::kInvalidArgument, std::string("no package ") + field + ": give --" + field + " or --manifest");
    }
  }
  auto m = Manifest::FromJson(j);
  if (!m) return Error(Errc::kInvalidArgument, "manifest: " + m.error().message());
  return m;
}

void AddPack(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("pack", "Build a signed .upk package from a directory or an archive");
  sub->footer(
      "The manifest (name, version, kind, ...) comes from the flags, or from --manifest FILE.json with\n"
      "flags overriding it. The payload list (sizes, SHA-256) is computed from --dir or --tar. Device\n"
      "nodes, FIFOs, sockets, hard links, set-uid/set-gid bits and symlinks leaving the payload are\n"
      "refused. Prints the package id, its size and its SHA-256.\n"
      "Example: upk pack --name site --version 8.1.0 --kind software --requires base>=2.0.0 \\\n"
      "           --key release.key --dir build/site -o site-8.1.0.upk");
  auto a = std::make_shared<PackArgs>();
  sub->add_option("--manifest", a->manifest_file, "JSON file with the manifest fields (no payload)");
  sub->add_option("--name", a->name, "Package name ([a-z0-9._-], at most 64)");
  sub->add_option("--version", a->version, "Version MAJOR.MINOR.BUILD");
  sub->add_option("--kind", a->kind, "base, software, addon or client");
  sub->add_option("--requires", a->requires_, "Requirement NAME>=VERSION (repeatable)")->allow_extra_args(false);
  sub->add_option("--upgrades-from", a->upgrades_from, "Only this installed version may upgrade to the package");
  a->client_upgrade_opt = sub->add_flag("--client-upgrade", a->client_upgrade, "The package carries endpoint client builds");
  a->settle_opt = sub->add_option("--settle-hours", a->settle_hours, "Hours to wait after installing before the next package");
  a->description_opt = sub->add_option("--description", a->description, "One-line description");
  sub->add_option("--manifest-extra", a->extra_file, "JSON object of extra (vendor) fields to add to the manifest");
  sub->add_option("--key", a->keys, "Private signing key file (repeatable)")->allow_extra_args(false)->required();
  auto* dir = sub->add_option("--dir", a->dir, "Payload directory");
  auto* tar = sub->add_option("--tar", a->tar, "Payload archive (tar, tar.gz, zip, ... anything libarchive reads)");
  dir->excludes(tar);
  sub->add_option("-o,--output", a->out, "The .upk file to write")->required();
  OnRun(sub, ctx, [&ctx, a]() -> int {
    if (a->dir.empty() && a->tar.empty()) return ctx.Fail(Error(Errc::kInvalidArgument, "give the payload with --dir DIR or --tar FILE"));
    auto manifest = BuildManifest(*a);
    if (!manifest) return ctx.Fail(manifest.error());
    std::vector<packages::PrivateKey> signers;
    for (const auto& path : a->keys) {
      auto key = packages::PrivateKey::Load(path);
      if (!key) return ctx.Fail(key.error().Wrap("--key"));
      signers.push_back(std::move(*key));
    }
    packages::PackSpec spec;
    spec.manifest = std::move(*manifest);
    spec.payload_dir = a->dir;
    spec.payload_tar = a->tar;
    LazyProgress progress(ctx, "pack  ");
    packages::PackedFile packed;
    auto written = packages::WritePackage(spec, signers, a->out, progress.Fn(), &packed);
    progress.Finish();
    if (!written) return ctx.Fail(written.error());
    std::vector<std::string> keyids;
    for (const auto& k : signers) keyids.push_back(k.keyid());
    if (ctx.json) {
      ctx.PrintJson({{"id", written->Id()},
                     {"name", written->name},
                     {"version", written->version.ToString()},
                     {"kind", packages::KindName(written->kind)},
                     {"file", a->out},
                     {"size", packed.bytes},
                     {"sha256", packed.sha256},
                     {"entries", written->payload.size()},
                     {"payload_bytes", written->PayloadBytes()},
                     {"signed_by", keyids}});
    } else {
      *ctx.out << "packed  " << written->Id() << " (" << packages::KindName(written->kind) << ")\n"
               << "file    " << a->out << "\n"
               << "size    " << packed.bytes << " bytes\n"
               << "sha256  " << packed.sha256 << "\n"
               << "payload " << written->payload.size() << " entries, " << written->PayloadBytes() << " bytes\n";
      for (const auto& id : keyids) *ctx.out << "signer  " << id << "\n";
    }
    return 0;
  });
}

// ---- inspect -------------------------------------------------------------------------------

struct PayloadSummary {
  std::size_t files = 0, dirs = 0, symlinks = 0;
  std::uint64_t bytes = 0;
};

PayloadSummary Summarise(const Manifest& m) {
  PayloadSummary s;
  for (const auto& e : m.payload) {
    if (e.type == EntryType::kFile) ++s.files;
    if (e.type == EntryType::kDirectory) ++s.dirs;
    if (e.type == EntryType::kSymlink) ++s.symlinks;
    s.bytes += e.size;
  }
  return s;
}

void AddInspect(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("inspect", "Show a package's manifest and payload summary (does NOT verify it)");
  sub->footer("Reads only manifest.json and manifest.sig; use 'upk verify' to check signatures and digests.\n"
              "--json prints the full manifest.");
  auto path = std::make_shared<std::string>();
  auto list = std::make_shared<bool>(false);
  sub->add_option("PKG", *path, "The .upk file")->required();
  sub->add_flag("--list", *list, "Also list every payload entry");
  OnRun(sub, ctx, [&ctx, path, list]() -> int {
    // A damaged manifest.sig must not hide the manifest: fall back to reading the first entry only.
    Manifest m;
    std::vector<std::string> keyids;
    std::string sig_problem;
    std::uint64_t package_bytes = 0;
    if (auto reader = packages::PackageReader::OpenFile(*path)) {
      m = reader->manifest();
      for (const auto& sig : reader->signatures()) keyids.push_back(sig.keyid);
      package_bytes = reader->package_bytes();
    } else {
      auto only = packages::ReadPackageManifest(*path);
      if (!only) return ctx.Fail(only.error());
      m = std::move(*only);
      sig_problem = reader.error().message();
      std::error_code ec;
      package_bytes = std::filesystem::file_size(*path, ec);
    }
    PayloadSummary s = Summarise(m);
    if (ctx.json) {
      Json j = {{"id", m.Id()},
                {"manifest", m.ToJson()},
                {"signatures", keyids},
                {"package_bytes", package_bytes},
                {"payload", {{"entries", m.payload.size()}, {"files", s.files}, {"dirs", s.dirs},
                             {"symlinks", s.symlinks}, {"bytes", s.bytes}}},
                {"verified", false}};
      if (!sig_problem.empty()) j["signatures_error"] = sig_problem;
      ctx.PrintJson(j);
      return 0;
    }
    auto& out = *ctx.out;
    out << "package      " << m.Id() << "\n"
        << "kind         " << packages::KindName(m.kind) << "\n";
    out << "requires     ";
    if (m.requires_.empty()) out << "-";
    for (std::size_t i = 0; i < m.requires_.size(); ++i) {
      out << (i ? ", " : "") << m.requires_[i].name << ">=" << m.requires_[i].min_version.ToString();
    }
    out << "\nupgrades     " << (m.upgrades_from ? "from " + m.upgrades_from->ToString() + " only" : "from any older version")
        << "\nclient upg.  " << (m.client_upgrade ? "yes" : "no") << "\nsettle       " << m.settle_hours << " h\n";
    if (!m.description.empty()) out << "description  " << m.description << "\n";
    for (auto it = m.extra.begin(); it != m.extra.end(); ++it) out << "extra        " << it.key() << " = " << it.value().dump() << "\n";
    out << "payload      " << m.payload.size() << " entries: " << s.files << " files (" << s.bytes << " bytes), " << s.dirs
        << " dirs, " << s.symlinks << " symlinks\n";
    if (sig_problem.empty()) {
      out << "signatures   " << keyids.size() << (keyids.empty() ? "" : " by");
      for (const auto& id : keyids) out << " " << id.substr(0, 16);
      out << " (not verified: run 'upk verify')\n";
    } else {
      out << "signatures   unreadable: " << sig_problem << "\n";
    }
    out << "file size    " << package_bytes << " bytes\n";
    if (*list) {
      for (const auto& e : m.payload) {
        char mode[8];
        std::snprintf(mode, sizeof mode, "%04o", e.mode);
        out << "  " << packages::EntryTypeName(e.type) << std::string(8 - std::string(packages::EntryTypeName(e.type)).size(), ' ')
            << mode << " " << std::string(12 - std::min<std::size_t>(12, std::to_string(e.size).size()), ' ') << e.size << "  "
            << e.path;
        if (e.type == EntryType::kSymlink) out << " -> " << e.target;
        out << "\n";
      }
    }
    return 0;
  });
}

// ---- verify and unpack ---------------------------------------------------------------------

struct TrustArgs {
  std::vector<std::string> keys;
  std::size_t threshold = 1;
  CLI::Option* threshold_opt = nullptr;
};

void AddTrustOptions(CLI::App* sub, TrustArgs& t) {
  sub->add_option("--key", t.keys, "Trusted public key file (repeatable); none: integrity check only")->allow_extra_args(false);
  t.threshold_opt = sub->add_option("--threshold", t.threshold, "How many trusted keys must have signed (default 1)");
}

void AddVerify(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("verify", "Verify a package: signatures by trusted keys, then every payload size and SHA-256");
  sub->footer("Exit code 0 when everything matches, 1 with the reason when anything does not, 2 for usage\n"
              "or I/O errors. Without --key only integrity is checked, and the output says so.");
  auto path = std::make_shared<std::string>();
  auto trust = std::make_shared<TrustArgs>();
  sub->add_option("PKG", *path, "The .upk file")->required();
  AddTrustOptions(sub, *trust);
  OnRun(sub, ctx, [&ctx, path, trust]() -> int {
    auto options = TrustFromArgs(trust->keys, trust->threshold, trust->threshold_opt->count() > 0);
    if (!options) return ctx.Fail(options.error());
    LazyProgress progress(ctx, "verify");
    auto result = packages::VerifyPackage(*path, *options, progress.Fn());
    progress.Finish();
    if (!result) return ctx.Fail(result.error());
    if (ctx.json) {
      Json j = {{"ok", true},
                {"id", result->manifest.Id()},
                {"entries", result->entries},
                {"payload_bytes", result->payload_bytes},
                {"package_bytes", result->package_bytes}};
      j.update(TrustJson(*result, trust->threshold));
      ctx.PrintJson(j);
    } else {
      *ctx.out << "OK  " << result->manifest.Id() << ": " << result->entries << " entries, " << result->payload_bytes
               << " payload bytes match the manifest\n    " << TrustText(*result, trust->threshold) << "\n";
    }
    return 0;
  });
}

void AddUnpack(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("unpack", "Verify a package and extract its payload safely into a new directory");
  sub->footer("DEST must not exist. The payload is verified as it is written into a temporary directory\n"
              "beside DEST, which is renamed to DEST only when everything matched; on failure nothing is\n"
              "left behind. Without --key only integrity is checked.");
  auto path = std::make_shared<std::string>();
  auto dest = std::make_shared<std::string>();
  auto trust = std::make_shared<TrustArgs>();
  sub->add_option("PKG", *path, "The .upk file")->required();
  sub->add_option("DEST", *dest, "Directory to create")->required();
  AddTrustOptions(sub, *trust);
  OnRun(sub, ctx, [&ctx, path, dest, trust]() -> int {
    auto options = TrustFromArgs(trust->keys, trust->threshold, trust->threshold_opt->count() > 0);
    if (!options) return ctx.Fail(options.error());
    LazyProgress progress(ctx, "unpack");
    auto result = packages::ExtractPackage(*path, *dest, *options, progress.Fn());
    progress.Finish();
    if (!result) return ctx.Fail(result.error());
    if (ctx.json) {
      Json j = {{"ok", true},
                {"id", result->manifest.Id()},
                {"dest", *dest},
                {"entries", result->entries},
                {"payload_bytes", result->payload_bytes}};
      j.update(TrustJson(*result, trust->threshold));
      ctx.PrintJson(j);
    } else {
      *ctx.out << "unpacked " << result->manifest.Id() << " into " << *dest << " (" << result->entries << " entries, "
               << result->payload_bytes << " bytes)\n    " << TrustText(*result, trust->threshold) << "\n";
    }
    return 0;
  });
}

}  // namespace

void AddPackageCommands(CLI::App& app, Context& ctx) {
  AddPack(app, ctx);
  AddInspect(app, ctx);
  AddVerify(app, ctx);
  AddUnpack(app, ctx);
}

}  // namespace upkeep::upk
