// upk repo: build and maintain a static TUF repository (init, add, remove, publish, timestamp,
// rotate-root, status) through upkeep::tuf::RepositoryWriter. Private keys are read from the
// files named on the command line and never copied into the repository.
#include <CLI/CLI.hpp>
#include <algorithm>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "upkeep/common/clock.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

namespace {

using packages::PrivateKey;
using tuf::RepositoryWriter;

Expected<std::vector<PrivateKey>> LoadKeys(const std::vector<std::string>& paths, const char* flag) {
  std::vector<PrivateKey> keys;
  for (const auto& p : paths) {
    auto k = PrivateKey::Load(p);
    if (!k) return k.error().Wrap(flag);
    keys.push_back(std::move(*k));
  }
  return keys;
}

// Names the key file behind a key id in an error, so "not a targets key" points at a file.
Error NameKeyFile(const Error& error, const std::vector<PrivateKey>& keys, const std::vector<std::string>& paths,
                  const char* flag) {
  for (std::size_t i = 0; i < keys.size() && i < paths.size(); ++i) {
    if (error.message().find(keys[i].keyid()) != std::string::npos) return error.Wrap(std::string(flag) + " " + paths[i]);
  }
  return error;
}

Expected<std::vector<packages::PublicKey>> LoadPublicKeys(const std::vector<std::string>& paths, const char* flag) {
  std::vector<packages::PublicKey> keys;
  for (const auto& p : paths) {
    auto k = packages::LoadPublicKey(p);
    if (!k) return k.error().Wrap(std::string(flag) + " " + p);
    keys.push_back(std::move(*k));
  }
  return keys;
}

Expected<tuf::ExpiryPolicy> Expiry(const std::vector<std::string>& overrides) {
  tuf::ExpiryPolicy policy;
  for (const auto& o : overrides) {
    auto s = policy.Override(o);
    if (!s) return s.error().Wrap("--expires");
  }
  return policy;
}

Json StateJson(const tuf::RoleState& s, SysTime now) {
  return Json{{"version", s.version}, {"expires", FormatTimestamp(s.expires)}, {"expired", s.expires <= now}};
}

Json TargetJson(const tuf::TargetInfo& t) {
  Json j = t.ToJson();
  j["path"] = t.path;
  return j;
}

void AddExpiresOption(CLI::App* sub, std::vector<std::string>& into) {
  sub->add_option("--expires", into,
                  "Validity of newly signed metadata, ROLE=DAYS (repeatable; defaults root=365 targets=90 "
                  "snapshot=7 timestamp=1)");
}

struct InitArgs {
  std::string dir;
  std::vector<std::string> root_keys, targets_keys, snapshot_keys, timestamp_keys, expires;
  int root_threshold = 1;
};

struct AddArgs {
  std::string dir;
  std::vector<std::string> files;
  std::string path;
  bool replace = false;
};

struct PublishArgs {
  std::string dir;
  std::vector<std::string> targets_keys, snapshot_keys, timestamp_keys, expires;
};

struct TimestampArgs {
  std::string dir;
  std::vector<std::string> timestamp_keys, expires;
  std::string expires_at;
};

struct RotateArgs {
  std::string dir;
  std::vector<std::string> old_root_keys, root_keys, targets_pub, snapshot_pub, timestamp_pub, expires;
  int root_threshold = 1;
};

struct RemoveArgs {
  std::string dir;
  std::vector<std::string> paths;
};

// What one FILE argument becomes: its target path and custom metadata.
struct PlannedAdd {
  std::string file;
  tuf::AddOptions options;
};

Expected<std::vector<PlannedAdd>> PlanAdds(const AddArgs& a) {
  if (!a.path.empty() && a.files.size() != 1) {
    return Error(Errc::kInvalidArgument, "--path needs exactly one FILE, got " + std::to_string(a.files.size()));
  }
  std::vector<PlannedAdd> out;
  std::set<std::string> seen;
  for (const auto& file : a.files) {
    PlannedAdd p;
    p.file = file;
    p.options.replace = a.replace;
    if (std::filesystem::path(file).extension() == ".upk") {
      // A package is published under its name and version, whatever the file is called.
      auto manifest = packages::ReadPackageManifest(file);
      if (!manifest) return manifest.error().Wrap(file);
      p.options.target_path = tuf::PackageTargetPath(*manifest);
      p.options.custom = tuf::PackageCustom(*manifest);
    } else {
      p.options.target_path = std::filesystem::path(file).filename().string();
    }
    if (!a.path.empty()) p.options.target_path = a.path;
    if (auto s = tuf::CheckTargetPath(p.options.target_path); !s) return s.error().Wrap(file);
    if (!seen.insert(p.options.target_path).second) {
      return Error(Errc::kInvalidArgument, "two FILEs map to the same target path '" + p.options.target_path + "'");
    }
    out.push_back(std::move(p));
  }
  return out;
}

void PrintStatusText(std::ostream& out, const std::string& dir, const tuf::RepositoryStatus& s, SysTime now) {
  out << "repository " << dir << (s.consistent_snapshot ? " (consistent snapshots)" : "") << "\n";
  auto line = [&](const char* role, const tuf::RoleState& st) {
    out << "  " << role << std::string(10 - std::string(role).size(), ' ') << "version " << st.version << "  expires "
        << FormatTimestamp(st.expires) << (st.expires <= now ? "  EXPIRED" : "") << "\n";
  };
  line("root", s.root);
  line("targets", s.targets);
  line("snapshot", s.snapshot);
  line("timestamp", s.timestamp);
  out << "targets (" << s.targets_list.size() << "):\n";
  for (const auto& t : s.targets_list) {
    out << "  " << t.path << "  " << t.length << " bytes  sha256 " << t.sha256.substr(0, 16) << "...\n";
  }
  if (s.staged_adds.empty() && s.staged_removals.empty()) {
    out << "staged: nothing\n";
    return;
  }
  out << "staged for the next publish:\n";
  for (const auto& t : s.staged_adds) out << "  + " << t.path << "  " << t.length << " bytes\n";
  for (const auto& p : s.staged_removals) out << "  - " << p << "\n";
}

}  // namespace

void AddRepoCommands(CLI::App& app, Context& ctx) {
  auto* repo = app.add_subcommand("repo", "Build and maintain a static TUF repository (metadata/ and targets/)");
  repo->require_subcommand(1);
  repo->fallthrough();

  // init
  {
    auto* sub = repo->add_subcommand("init", "Create a repository: root v1 and empty, signed targets/snapshot/timestamp");
    sub->fallthrough();
    auto a = std::make_shared<InitArgs>();
    sub->add_option("DIR", a->dir, "Repository directory (absent or empty)")->required();
    sub->add_option("--root-key", a->root_keys, "Root private key file (repeatable)")->required();
    sub->add_option("--root-threshold", a->root_threshold, "Root signatures required (default 1)")
        ->check(CLI::Range(1, 64));
    sub->add_option("--targets-key", a->targets_keys, "Targets private key file")->required();
    sub->add_option("--snapshot-key", a->snapshot_keys, "Snapshot private key file")->required();
    sub->add_option("--timestamp-key", a->timestamp_keys, "Timestamp private key file")->required();
    AddExpiresOption(sub, a->expires);
    OnRun(sub, ctx, [&ctx, a]() -> int {
      tuf::InitOptions o;
      o.root_threshold = a->root_threshold;
      auto expiry = Expiry(a->expires);
      if (!expiry) return ctx.Fail(expiry.error());
      o.expiry = *expiry;
      auto root = LoadKeys(a->root_keys, "--root-key");
      if (!root) return ctx.Fail(root.error());
      auto targets = LoadKeys(a->targets_keys, "--targets-key");
      if (!targets) return ctx.Fail(targets.error());
      auto snapshot = LoadKeys(a->snapshot_keys, "--snapshot-key");
      if (!snapshot) return ctx.Fail(snapshot.error());
      auto timestamp = LoadKeys(a->timestamp_keys, "--timestamp-key");
      if (!timestamp) return ctx.Fail(timestamp.error());
      o.root_keys = std::move(*root);
      o.targets_keys = std::move(*targets);
      o.snapshot_keys = std::move(*snapshot);
      o.timestamp_keys = std::move(*timestamp);
      RepositoryWriter writer(a->dir);
      if (auto s = writer.Init(o); !s) return ctx.Fail(s.error());
      Json keyids{{"root", Json::array()}, {"targets", Json::array()}, {"snapshot", Json::array()}, {"timestamp", Json::array()}};
      for (const auto& k : o.root_keys) keyids["root"].push_back(k.keyid());
      for (const auto& k : o.targets_keys) keyids["targets"].push_back(k.keyid());
      for (const auto& k : o.snapshot_keys) keyids["snapshot"].push_back(k.keyid());
      for (const auto& k : o.timestamp_keys) keyids["timestamp"].push_back(k.keyid());
      if (ctx.json) {
        ctx.PrintJson({{"repository", a->dir}, {"root_version", 1}, {"root_threshold", a->root_threshold}, {"keyids", keyids}});
      } else {
        *ctx.out << "initialised TUF repository " << a->dir << "\n"
                 << "  serve " << a->dir << "/metadata/ as the metadata URL and " << a->dir
                 << "/targets/ as the targets URL\n"
                 << "  trusted root for clients: " << a->dir << "/metadata/1.root.json\n";
      }
      return 0;
    });
  }

  // add
  {
    auto* sub = repo->add_subcommand("add", "Stage target files for the next publish (.upk packages by name and version)");
    sub->fallthrough();
    auto a = std::make_shared<AddArgs>();
    sub->add_option("DIR", a->dir, "Repository directory")->required();
    sub->add_option("FILE", a->files, "Files to add; a .upk is published as NAME/NAME-VERSION.upk")->required();
    sub->add_option("--path", a->path, "Target path for the single FILE (default: its file name)");
    sub->add_flag("--replace", a->replace, "Replace a different file already listed under the same target path");
    OnRun(sub, ctx, [&ctx, a]() -> int {
      auto planned = PlanAdds(*a);
      if (!planned) return ctx.Fail(planned.error());
      RepositoryWriter writer(a->dir);
      Json added = Json::array();
      for (auto& p : *planned) {
        std::optional<Progress> sized;
        p.options.progress = [&](std::uint64_t done, std::uint64_t total) {
          if (!sized) sized.emplace(ctx, "add " + p.options.target_path, total);
          sized->Update(done);
        };
        auto r = writer.Add(p.file, p.options);
        if (sized) sized->Finish();
        if (!r) return ctx.Fail(r.error().Wrap(p.file));
        Json t = TargetJson(r->target);
        t["file"] = p.file;
        t["unchanged"] = r->unchanged;
        added.push_back(t);
        if (!ctx.json) {
          *ctx.out << (r->unchanged ? "unchanged " : "staged    ") << r->target.path << "  (" << r->target.length
                   << " bytes, sha256 " << r->target.sha256.substr(0, 16) << "...)\n";
        }
      }
      if (ctx.json) {
        ctx.PrintJson({{"added", added}});
      } else {
        *ctx.out << "run 'upk repo publish " << a->dir << " ...' to make them visible to clients\n";
      }
      return 0;
    });
  }

  // remove
  {
    auto* sub = repo->add_subcommand("remove", "Stage the removal (yank) of listed targets for the next publish");
    sub->fallthrough();
    auto a = std::make_shared<RemoveArgs>();
    sub->add_option("DIR", a->dir, "Repository directory")->required();
    sub->add_option("TARGETPATH", a->paths, "Target paths to remove")->required();
    OnRun(sub, ctx, [&ctx, a]() -> int {
      RepositoryWriter writer(a->dir);
      for (const auto& p : a->paths) {
        if (auto s = writer.Remove(p); !s) return ctx.Fail(s.error());
      }
      if (ctx.json) {
        ctx.PrintJson({{"removed", a->paths}});
      } else {
        for (const auto& p : a->paths) *ctx.out << "staged removal of " << p << "\n";
      }
      return 0;
    });
  }

  // publish
  {
    auto* sub = repo->add_subcommand("publish", "Sign and write new targets, snapshot and timestamp metadata");
    sub->fallthrough();
    auto a = std::make_shared<PublishArgs>();
    sub->add_option("DIR", a->dir, "Repository directory")->required();
    sub->add_option("--targets-key", a->targets_keys, "Targets private key file")->required();
    sub->add_option("--snapshot-key", a->snapshot_keys, "Snapshot private key file")->required();
    sub->add_option("--timestamp-key", a->timestamp_keys, "Timestamp private key file")->required();
    AddExpiresOption(sub, a->expires);
    OnRun(sub, ctx, [&ctx, a]() -> int {
      auto expiry = Expiry(a->expires);
      if (!expiry) return ctx.Fail(expiry.error());
      tuf::PublishKeys keys;
      auto targets = LoadKeys(a->targets_keys, "--targets-key");
      if (!targets) return ctx.Fail(targets.error());
      auto snapshot = LoadKeys(a->snapshot_keys, "--snapshot-key");
      if (!snapshot) return ctx.Fail(snapshot.error());
      auto timestamp = LoadKeys(a->timestamp_keys, "--timestamp-key");
      if (!timestamp) return ctx.Fail(timestamp.error());
      keys.targets = std::move(*targets);
      keys.snapshot = std::move(*snapshot);
      keys.timestamp = std::move(*timestamp);
      RepositoryWriter writer(a->dir);
      auto r = writer.Publish(keys, *expiry);
      if (!r) {
        // The error names the role, so the flag of that role names the file.
        const std::string& m = r.error().message();
        if (m.rfind("targets", 0) == 0) return ctx.Fail(NameKeyFile(r.error(), keys.targets, a->targets_keys, "--targets-key"));
        if (m.rfind("snapshot", 0) == 0) {
          return ctx.Fail(NameKeyFile(r.error(), keys.snapshot, a->snapshot_keys, "--snapshot-key"));
        }
        return ctx.Fail(NameKeyFile(r.error(), keys.timestamp, a->timestamp_keys, "--timestamp-key"));
      }
      const SysTime now = SystemClock::Instance().Now();
      if (ctx.json) {
        ctx.PrintJson({{"targets", StateJson(r->targets, now)},
                       {"snapshot", StateJson(r->snapshot, now)},
                       {"timestamp", StateJson(r->timestamp, now)},
                       {"target_count", r->target_count}});
      } else {
        *ctx.out << "published targets v" << r->targets.version << " (" << r->target_count << " targets), snapshot v"
                 << r->snapshot.version << ", timestamp v" << r->timestamp.version << " (expires "
                 << FormatTimestamp(r->timestamp.expires) << ")\n";
      }
      return 0;
    });
  }

  // timestamp
  {
    auto* sub = repo->add_subcommand("timestamp", "Re-sign only timestamp.json with a new version and expiry");
    sub->fallthrough();
    auto a = std::make_shared<TimestampArgs>();
    sub->add_option("DIR", a->dir, "Repository directory")->required();
    sub->add_option("--timestamp-key", a->timestamp_keys, "Timestamp private key file")->required();
    sub->add_option("--expires-at", a->expires_at, "Explicit expiry, RFC 3339 UTC (e.g. 2030-01-01T00:00:00Z)");
    AddExpiresOption(sub, a->expires);
    OnRun(sub, ctx, [&ctx, a]() -> int {
      auto expiry = Expiry(a->expires);
      if (!expiry) return ctx.Fail(expiry.error());
      std::optional<SysTime> at;
      if (!a->expires_at.empty()) {
        auto t = ParseTimestamp(a->expires_at);
        if (!t) return ctx.Fail(Error(Errc::kInvalidArgument, "--expires-at: " + t.error().message()));
        at = *t;
      }
      auto keys = LoadKeys(a->timestamp_keys, "--timestamp-key");
      if (!keys) return ctx.Fail(keys.error());
      RepositoryWriter writer(a->dir);
      auto r = writer.RefreshTimestamp(*keys, *expiry, at);
      if (!r) return ctx.Fail(NameKeyFile(r.error(), *keys, a->timestamp_keys, "--timestamp-key"));
      const SysTime now = SystemClock::Instance().Now();
      if (ctx.json) {
        ctx.PrintJson({{"timestamp", StateJson(*r, now)}});
      } else {
        *ctx.out << "timestamp v" << r->version << " expires " << FormatTimestamp(r->expires)
                 << (r->expires <= now ? " (already expired)" : "") << "\n";
      }
      return 0;
    });
  }

  // rotate-root
  {
    auto* sub = repo->add_subcommand("rotate-root", "Write root N+1, signed by the old and the new root keys");
    sub->fallthrough();
    auto a = std::make_shared<RotateArgs>();
    sub->add_option("DIR", a->dir, "Repository directory")->required();
    sub->add_option("--old-root-key", a->old_root_keys, "Current root private key file (repeatable, up to the threshold)")
        ->required();
    sub->add_option("--root-key", a->root_keys, "New root private key file (repeatable)")->required();
    sub->add_option("--root-threshold", a->root_threshold, "New root signatures required (default 1)")
        ->check(CLI::Range(1, 64));
    sub->add_option("--targets-pub", a->targets_pub, "Replace the targets keys with these public key files");
    sub->add_option("--snapshot-pub", a->snapshot_pub, "Replace the snapshot keys with these public key files");
    sub->add_option("--timestamp-pub", a->timestamp_pub, "Replace the timestamp keys with these public key files");
    AddExpiresOption(sub, a->expires);
    OnRun(sub, ctx, [&ctx, a]() -> int {
      tuf::RotateRootOptions o;
      auto expiry = Expiry(a->expires);
      if (!expiry) return ctx.Fail(expiry.error());
      o.expiry = *expiry;
      o.new_root_threshold = a->root_threshold;
      auto old_keys = LoadKeys(a->old_root_keys, "--old-root-key");
      if (!old_keys) return ctx.Fail(old_keys.error());
      auto new_keys = LoadKeys(a->root_keys, "--root-key");
      if (!new_keys) return ctx.Fail(new_keys.error());
      auto t = LoadPublicKeys(a->targets_pub, "--targets-pub");
      if (!t) return ctx.Fail(t.error());
      auto s = LoadPublicKeys(a->snapshot_pub, "--snapshot-pub");
      if (!s) return ctx.Fail(s.error());
      auto ts = LoadPublicKeys(a->timestamp_pub, "--timestamp-pub");
      if (!ts) return ctx.Fail(ts.error());
      o.old_root_keys = std::move(*old_keys);
      o.new_root_keys = std::move(*new_keys);
      o.targets_keys = std::move(*t);
      o.snapshot_keys = std::move(*s);
      o.timestamp_keys = std::move(*ts);
      RepositoryWriter writer(a->dir);
      auto r = writer.RotateRoot(o);
      if (!r) return ctx.Fail(NameKeyFile(r.error(), o.old_root_keys, a->old_root_keys, "--old-root-key"));
      const SysTime now = SystemClock::Instance().Now();
      if (ctx.json) {
        ctx.PrintJson({{"root", StateJson(*r, now)}});
      } else {
        *ctx.out << "root v" << r->version << " written (expires " << FormatTimestamp(r->expires) << ")";
        if (!o.targets_keys.empty() || !o.snapshot_keys.empty() || !o.timestamp_keys.empty()) {
          *ctx.out << "; run 'upk repo publish' with the new role keys now";
        }
        *ctx.out << "\n";
      }
      return 0;
    });
  }

  // status
  {
    auto* sub = repo->add_subcommand("status", "Show metadata versions, expiries, targets and staged changes");
    sub->fallthrough();
    auto dir = std::make_shared<std::string>();
    sub->add_option("DIR", *dir, "Repository directory")->required();
    OnRun(sub, ctx, [&ctx, dir]() -> int {
      RepositoryWriter writer(*dir);
      auto s = writer.GetStatus();
      if (!s) return ctx.Fail(s.error());
      const SysTime now = SystemClock::Instance().Now();
      if (ctx.json) {
        Json targets = Json::array(), staged = Json::array();
        for (const auto& t : s->targets_list) targets.push_back(TargetJson(t));
        for (const auto& t : s->staged_adds) staged.push_back(TargetJson(t));
        ctx.PrintJson({{"repository", *dir},
                       {"consistent_snapshot", s->consistent_snapshot},
                       {"root", StateJson(s->root, now)},
                       {"targets", StateJson(s->targets, now)},
                       {"snapshot", StateJson(s->snapshot, now)},
                       {"timestamp", StateJson(s->timestamp, now)},
                       {"target_files", targets},
                       {"staged", {{"add", staged}, {"remove", s->staged_removals}}}});
      } else {
        PrintStatusText(*ctx.out, *dir, *s, now);
      }
      return 0;
    });
  }
}

}  // namespace upkeep::upk
