// The files, image and module handlers. Each method first reads the on-disk state, so calling
// it again after a crash (or twice) converges to the same result.
#include "upkeep/agent/handlers.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <system_error>
#include <vector>

#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/extract.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using packages::Version;

constexpr std::uint64_t kMaxStateBytes = 64u << 10;
constexpr std::size_t kErrorLogBytes = 2048;

std::string Id(std::string_view name, const Version& v) { return std::string(name) + " " + v.ToString(); }

Status CheckName(std::string_view name) {
  if (!packages::IsValidPackageName(name)) {
    return Error(Errc::kInvalidArgument, "invalid package name '" + std::string(name.substr(0, 64)) + "'");
  }
  return OkStatus();
}

// Directories extracted read-only (payload modes) must become writable before they can go.
void MakeTreeWritable(const fs::path& root) {
  std::error_code ec;
  auto st = fs::symlink_status(root, ec);
  if (ec || !fs::is_directory(st)) return;
  ::chmod(root.c_str(), 0700);
  for (fs::directory_iterator it(root, ec), end; !ec && it != end; it.increment(ec)) MakeTreeWritable(it->path());
}

std::string TailOf(const std::string& log) {
  return log.size() > kErrorLogBytes ? "..." + log.substr(log.size() - kErrorLogBytes) : log;
}

class HandlerBase : public Handler {
 public:
  HandlerBase(Fs& fs, fs::path root, ProcessRunner& runner, HandlerOptions options)
      : fs_(fs), root_(std::move(root)), runner_(runner), options_(std::move(options)) {}

 protected:
  fs::path PkgDir(std::string_view name) const { return root_ / "packages" / std::string(name); }

  // nullopt when the file does not exist.
  Expected<std::optional<Json>> ReadState(const fs::path& path) {
    UPK_TRY_ASSIGN(bool exists, fs_.Exists(path));
    if (!exists) return std::optional<Json>();
    UPK_TRY_ASSIGN(std::string text, fs_.ReadFile(path, kMaxStateBytes));
    auto j = ParseJson(text);
    if (!j) return j.error().Wrap(path.string());
    if (!j->is_object()) return Error(Errc::kParse, path.string() + ": not a JSON object");
    return std::optional<Json>(std::move(*j));
  }

  static Expected<Version> VersionField(const Json& j, const char* key, const fs::path& path) {
    auto it = j.find(key);
    if (it == j.end() || !it->is_string())
      return Error(Errc::kParse, path.string() + ": field '" + key + "': missing or not a string");
    auto v = Version::Parse(it->get_ref<const std::string&>());
    if (!v) return v.error().Wrap(path.string() + ": field '" + key + "'");
    return *v;
  }

  Status WriteJson(const fs::path& path, const Json& j) {
    auto text = CanonicalJson(j);
    if (!text) return text.error();
    return fs_.WriteFileAtomic(path, *text + "\n");
  }

  // Removes DIR/NAME and the extractor's leftover temp siblings ".NAME.tmp-*".
  Status RemoveWithLeftovers(const fs::path& dir, const std::string& name) {
    UPK_TRY_ASSIGN(bool exists, fs_.Exists(dir));
    if (!exists) return OkStatus();
    UPK_TRY_ASSIGN(auto names, fs_.ListDir(dir));
    const std::string prefix = "." + name + ".tmp-";
    for (const auto& n : names) {
      if (n == name || n.rfind(prefix, 0) == 0) {
        MakeTreeWritable(dir / n);
        UPK_TRY(fs_.RemoveAll(dir / n));
      }
    }
    return OkStatus();
  }

  // Keeps only the versions in `keep` (and anything not looking like ours) below `dir`.
  Status Prune(const fs::path& dir, const std::vector<std::string>& keep) {
    UPK_TRY_ASSIGN(bool exists, fs_.Exists(dir));
    if (!exists) return OkStatus();
    UPK_TRY_ASSIGN(auto names, fs_.ListDir(dir));
    for (const auto& n : names) {
      if (std::find(keep.begin(), keep.end(), n) != keep.end()) continue;
      std::string base = n;
      if (!base.empty() && base[0] == '.') {
        auto pos = base.find(".tmp-");
        if (pos == std::string::npos) continue;
        base = base.substr(1, pos - 1);
        if (std::find(keep.begin(), keep.end(), base) != keep.end()) continue;
      }
      if (!Version::Parse(base)) continue;
      MakeTreeWritable(dir / n);
      UPK_TRY(fs_.RemoveAll(dir / n));
    }
    return OkStatus();
  }

  HookEnv Env(std::string_view name, const Version& v, const std::optional<Version>& previous) const {
    HookEnv env;
    env.package = std::string(name);
    env.version = v;
    env.previous = previous;
    env.root = root_;
    return env;
  }

  Fs& fs_;
  fs::path root_;
  ProcessRunner& runner_;
  HandlerOptions options_;
};

// files and module: a directory per version, a `current` symlink.
class SlotHandler final : public HandlerBase {
 public:
  SlotHandler(Fs& fs, fs::path root, ProcessRunner& runner, HandlerOptions options, bool module)
      : HandlerBase(fs, std::move(root), runner, std::move(options)), module_(module) {}

  Status Stage(packages::PackageReader& reader, const InstallSpec& spec, packages::ProgressFn progress) override {
    const auto& m = reader.manifest();
    UPK_TRY(CheckName(m.name));
    const HandlerKind want = module_ ? HandlerKind::kModule : HandlerKind::kFiles;
    if (spec.handler != want) {
      return Error(Errc::kInvalidArgument, Id(m.name, m.version) + ": install spec is for handler " +
                                               HandlerKindName(spec.handler) + ", not " + HandlerKindName(want));
    }
    UPK_TRY_ASSIGN(auto active, Active(m.name));
    if (active && *active == m.version) return OkStatus();  // already in use: never touched
    const fs::path pkg = PkgDir(m.name);
    const std::string v = m.version.ToString();
    UPK_TRY(fs_.CreateDirectories(pkg / "slots"));
    UPK_TRY(RemoveWithLeftovers(pkg / "slots", v));
    auto extracted = packages::ExtractFromReader(reader, pkg / "slots" / v, std::move(progress));
    if (!extracted) return extracted.error().Wrap("stage " + Id(m.name, m.version));
    if (!module_) return OkStatus();
    // The record says which executable is the module, and whether its `install` completed:
    // Activate refuses a version whose install was interrupted or failed.
    UPK_TRY(fs_.CreateDirectories(pkg / "modules"));
    UPK_TRY(WriteModuleRecord(m.name, m.version, spec.module, false));
    UPK_TRY(RunModule("install", m.name, m.version, active));
    return WriteModuleRecord(m.name, m.version, spec.module, true);
  }

  fs::path WorkDir(std::string_view name, const Version& v) const override {
    return PkgDir(name) / "slots" / v.ToString();
  }

  Status Activate(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, Active(name));
    if (active && *active == v) return OkStatus();
    const fs::path pkg = PkgDir(name);
    UPK_TRY_ASSIGN(bool staged, fs_.Exists(pkg / "slots" / v.ToString()));
    if (!staged)
      return Error(Errc::kNotFound,
                   "activate " + Id(name, v) + ": not staged (" + (pkg / "slots" / v.ToString()).string() + ")");
    // Recorded before the switch, so Commit and Rollback know the pair even after a crash.
    Json sw = Json::object();
    sw["version"] = v.ToString();
    if (active) sw["previous"] = active->ToString();
    UPK_TRY(WriteJson(pkg / "switch", sw));
    if (module_) {
      UPK_TRY_ASSIGN(auto record, ReadModuleRecord(name, v));
      if (!record.second) {
        return Error(Errc::kNotFound, "activate " + Id(name, v) + ": update module 'install' did not complete");
      }
      UPK_TRY(RunModule("activate", name, v, active));
    }
    return fs_.ReplaceSymlink(pkg / "current", fs::path("slots") / v.ToString());
  }

  Status Rollback(std::string_view name, const Version& previous) override {
    UPK_TRY(CheckName(name));
    const fs::path pkg = PkgDir(name);
    UPK_TRY_ASSIGN(auto active, Active(name));
    UPK_TRY_ASSIGN(auto sw, ReadState(pkg / "switch"));
    // The version being left: the switch record's, when it was a switch away from `previous`.
    std::optional<Version> switching;
    if (sw && sw->contains("previous")) {
      UPK_TRY_ASSIGN(Version from, VersionField(*sw, "previous", pkg / "switch"));
      UPK_TRY_ASSIGN(Version to, VersionField(*sw, "version", pkg / "switch"));
      if (from == previous && to != previous) switching = to;
    }
    if (active && *active == previous && !switching) return OkStatus();
    UPK_TRY_ASSIGN(bool kept, fs_.Exists(pkg / "slots" / previous.ToString()));
    if (!kept) return Error(Errc::kNotFound, "rollback " + Id(name, previous) + ": that version is no longer kept");
    if (module_ && switching) {
      UPK_TRY_ASSIGN(bool failed_kept, fs_.Exists(pkg / "slots" / switching->ToString()));
      if (failed_kept) {
        UPK_TRY(RunModule("rollback", name, *switching, previous));
      }
    }
    if (!active || *active != previous) {
      UPK_TRY(fs_.ReplaceSymlink(pkg / "current", fs::path("slots") / previous.ToString()));
    }
    Json done = Json::object();
    done["version"] = previous.ToString();
    return WriteJson(pkg / "switch", done);
  }

  Status Commit(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    const fs::path pkg = PkgDir(name);
    UPK_TRY_ASSIGN(auto active, Active(name));
    if (!active || *active != v) return Error(Errc::kPolicy, "commit " + Id(name, v) + ": not the active version");
    std::optional<Version> previous;
    UPK_TRY_ASSIGN(auto sw, ReadState(pkg / "switch"));
    if (sw && sw->contains("previous")) {
      UPK_TRY_ASSIGN(Version sv, VersionField(*sw, "version", pkg / "switch"));
      if (sv == v) {
        UPK_TRY_ASSIGN(previous, VersionField(*sw, "previous", pkg / "switch"));
      }
    }
    if (module_) {
      UPK_TRY(RunModule("commit", name, v, previous));
    }
    std::vector<std::string> keep = {v.ToString()};
    if (previous) keep.push_back(previous->ToString());
    UPK_TRY(Prune(pkg / "slots", keep));
    if (module_) {
      UPK_TRY(Prune(pkg / "modules", keep));
    }
    return OkStatus();
  }

  Status Discard(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, Active(name));
    if (active && *active == v) return Error(Errc::kPolicy, "discard " + Id(name, v) + ": it is the active version");
    const fs::path pkg = PkgDir(name);
    UPK_TRY(RemoveWithLeftovers(pkg / "slots", v.ToString()));
    if (module_) {
      UPK_TRY(RemoveWithLeftovers(pkg / "modules", v.ToString()));
    }
    return OkStatus();
  }

  Status Deactivate(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, Active(name));
    if (!active) return OkStatus();
    if (*active != v) return Error(Errc::kPolicy, "deactivate " + Id(name, v) + ": " + active->ToString() + " is active");
    const fs::path pkg = PkgDir(name);
    if (module_) {
      UPK_TRY(RunModule("rollback", name, v, std::nullopt));
    }
    UPK_TRY(fs_.Remove(pkg / "current"));
    UPK_TRY(fs_.Remove(pkg / "switch"));
    return fs_.SyncDir(pkg);
  }

  Expected<std::optional<Version>> Active(std::string_view name) override {
    UPK_TRY(CheckName(name));
    const fs::path link = PkgDir(name) / "current";
    UPK_TRY_ASSIGN(bool exists, fs_.Exists(link));
    if (!exists) return std::optional<Version>();
    UPK_TRY_ASSIGN(fs::path target, fs_.ReadSymlink(link));
    auto it = target.begin();
    if (target.is_absolute() || it == target.end() || *it != "slots" || ++it == target.end()) {
      return Error(Errc::kParse, link.string() + ": unexpected target '" + target.string() + "'");
    }
    auto v = Version::Parse(it->string());
    if (!v || ++it != target.end())
      return Error(Errc::kParse, link.string() + ": unexpected target '" + target.string() + "'");
    return std::optional<Version>(*v);
  }

 private:
  Status WriteModuleRecord(std::string_view name, const Version& v, const std::string& module, bool installed) {
    Json j = Json::object();
    j["module"] = module;
    j["installed"] = installed;
    return WriteJson(PkgDir(name) / "modules" / v.ToString(), j);
  }

  // (module payload path, install completed)
  Expected<std::pair<std::string, bool>> ReadModuleRecord(std::string_view name, const Version& v) {
    const fs::path path = PkgDir(name) / "modules" / v.ToString();
    UPK_TRY_ASSIGN(auto j, ReadState(path));
    if (!j) return Error(Errc::kNotFound, Id(name, v) + ": no update-module record (" + path.string() + ")");
    auto m = j->find("module");
    auto installed = j->find("installed");
    if (m == j->end() || !m->is_string() || installed == j->end() || !installed->is_boolean()) {
      return Error(Errc::kParse, path.string() + ": expected {\"module\": string, \"installed\": bool}");
    }
    std::string rel = m->get<std::string>();
    if (auto s = packages::CheckRelativePath(rel); !s) return s.error().Wrap(path.string());
    return std::pair<std::string, bool>(std::move(rel), installed->get<bool>());
  }

  // MODULE VERB SLOT_DIR NAME VERSION PREVIOUS_VERSION, in SLOT_DIR, with the hook environment.
  Status RunModule(const char* verb, std::string_view name, const Version& v, const std::optional<Version>& previous) {
    const fs::path pkg = PkgDir(name);
    const fs::path slot = WorkDir(name, v);
    UPK_TRY_ASSIGN(auto record, ReadModuleRecord(name, v));
    const std::string& rel = record.first;
    ProcessSpec ps;
    ps.argv = {(slot / rel).string(), verb,         slot.string(),
               std::string(name),     v.ToString(), previous ? previous->ToString() : ""};
    ps.cwd = slot;
    HookEnv env = Env(name, v, previous);
    ps.env = {{"UPKEEP_PACKAGE", env.package},
              {"UPKEEP_VERSION", env.version.ToString()},
              {"UPKEEP_PREVIOUS_VERSION", previous ? previous->ToString() : ""},
              {"UPKEEP_ROOT", env.root.string()}};
    ps.timeout = options_.module_timeout;
    ps.kill_grace = options_.kill_grace;
    auto r = runner_.Run(ps);
    if (!r) return r.error().Wrap(Id(name, v) + ": update module '" + verb + "'");
    if (!r->Succeeded()) {
      return Error(Errc::kPolicy, Id(name, v) + ": update module '" + verb + "' failed: " + r->Describe() +
                                      "; log: " + TailOf(r->log_tail));
    }
    return OkStatus();
  }

  bool module_;
};

// image: an A/B pair of slots and an `active` record.
class ImageHandler final : public HandlerBase {
 public:
  using HandlerBase::HandlerBase;

  struct Rec {
    std::string slot;  // "a" or "b"
    Version version;
  };
  struct ActiveRec {
    Rec cur;
    std::optional<Rec> previous;
  };

  Status Stage(packages::PackageReader& reader, const InstallSpec& spec, packages::ProgressFn progress) override {
    const auto& m = reader.manifest();
    UPK_TRY(CheckName(m.name));
    const std::string id = Id(m.name, m.version);
    if (spec.handler != HandlerKind::kImage)
      return Error(Errc::kInvalidArgument, id + ": install spec is not for the image handler");
    const packages::PayloadEntry* image = nullptr;
    for (const auto& e : m.payload) {
      if (e.path == spec.image && e.type == packages::EntryType::kFile) image = &e;
    }
    if (!image) return Error(Errc::kPolicy, id + ": image entry '" + spec.image + "' is not a file of the payload");
    const fs::path pkg = PkgDir(m.name);
    UPK_TRY_ASSIGN(auto active, ReadActive(m.name));
    if (active && active->cur.version == m.version) return OkStatus();
    const std::string target = active ? Other(active->cur.slot) : "a";
    const fs::path slot = SlotPath(m.name, target);
    UPK_TRY(fs_.CreateDirectories(pkg / "meta"));
    // The target slot is about to be overwritten: first drop every claim about its content.
    // Durably: a `staged` that came back after a power cut would vouch for a half-written slot.
    UPK_TRY(fs_.Remove(pkg / "staged"));
    UPK_TRY(fs_.SyncDir(pkg));
    if (active && active->previous) {
      active->previous.reset();
      UPK_TRY(WriteActive(m.name, *active));
    }
    const std::string v = m.version.ToString();
    UPK_TRY(RemoveWithLeftovers(pkg / "meta", v));
    const fs::path meta_tmp = pkg / "meta" / ("." + v + ".tmp-stage");
    UPK_TRY(fs_.CreateDirectories(meta_tmp, 0700));

    // On failure the meta temp dir goes (best effort: a crash leaves it to the next Stage).
    auto write = [&]() -> Status {
      UPK_TRY_ASSIGN(auto out, fs_.OpenForWrite(slot));
      const std::uint64_t total = m.PayloadBytes();
      std::map<std::string, std::uint32_t> dirs;  // meta dirs below meta_tmp -> final mode
      for (;;) {
        auto next = reader.NextEntry();
        if (!next) return next.error().Wrap("stage " + id);
        const packages::PayloadEntry* e = *next;
        if (!e) break;
        if (e->path == spec.image) {
          for (;;) {
            auto chunk = reader.ReadData();
            if (!chunk) return chunk.error().Wrap("stage " + id);
            if (chunk->empty()) break;
            UPK_TRY(out->Write(*chunk));
            if (progress) progress(reader.payload_bytes_read(), total);
          }
          continue;
        }
        UPK_TRY(PlaceMeta(reader, *e, meta_tmp, dirs, id));
        if (progress) progress(reader.payload_bytes_read(), total);
      }
      UPK_TRY(out->Sync());
      UPK_TRY(out->Close());
      out.reset();
      if (options_.before_image_verify) options_.before_image_verify(slot);
      UPK_TRY(VerifySlot(slot, *image, id + ": image slot " + target));

      // Deepest first, so a read-only directory is locked only after everything below it is synced.
      std::vector<std::pair<std::string, std::uint32_t>> order(dirs.begin(), dirs.end());
      auto depth = [](const std::string& x) { return std::count(x.begin(), x.end(), '/'); };
      std::stable_sort(order.begin(), order.end(),
                       [&](const auto& x, const auto& y) { return depth(x.first) > depth(y.first); });
      for (const auto& [rel, mode] : order) {
        const fs::path dir = meta_tmp / rel;
        UPK_TRY(fs_.SyncDir(dir));
        if (::chmod(dir.c_str(), mode) != 0) return Error(Errc::kIo, dir.string() + ": chmod: " + std::strerror(errno));
      }
      if (::chmod(meta_tmp.c_str(), 0755) != 0)
        return Error(Errc::kIo, meta_tmp.string() + ": chmod: " + std::strerror(errno));
      UPK_TRY(fs_.SyncDir(meta_tmp));
      return OkStatus();
    };
    if (Status s = write(); !s.ok()) {
      Status cleanup = RemoveWithLeftovers(pkg / "meta", v);
      (void)cleanup;
      return s;
    }
    UPK_TRY(fs_.Rename(meta_tmp, pkg / "meta" / v));
    UPK_TRY(fs_.SyncDir(pkg / "meta"));
    Json staged = Json::object();
    staged["slot"] = target;
    staged["version"] = v;
    return WriteJson(pkg / "staged", staged);
  }

  fs::path WorkDir(std::string_view name, const Version& v) const override {
    return PkgDir(name) / "meta" / v.ToString();
  }

  Status Activate(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (active && active->cur.version == v) return OkStatus();
    UPK_TRY_ASSIGN(auto staged, ReadStaged(name));
    if (!staged || staged->version != v || (active && staged->slot == active->cur.slot)) {
      return Error(Errc::kNotFound, "activate " + Id(name, v) + ": not staged in the inactive slot");
    }
    ActiveRec next;
    next.cur = *staged;
    if (active) next.previous = active->cur;
    return WriteActive(name, next);
  }

  Status Rollback(std::string_view name, const Version& previous) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (active && active->cur.version == previous) return OkStatus();
    if (!active || !active->previous || active->previous->version != previous) {
      return Error(Errc::kNotFound, "rollback " + Id(name, previous) + ": that version is not in the other slot");
    }
    // The failed image stays in its slot but is no longer offered as a rollback target.
    ActiveRec next;
    next.cur = *active->previous;
    return WriteActive(name, next);
  }

  Status Commit(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (!active || active->cur.version != v)
      return Error(Errc::kPolicy, "commit " + Id(name, v) + ": not the active version");
    std::vector<std::string> keep = {v.ToString()};
    if (active->previous) keep.push_back(active->previous->version.ToString());
    UPK_TRY(Prune(PkgDir(name) / "meta", keep));
    UPK_TRY_ASSIGN(auto staged, ReadStaged(name));
    if (staged && staged->version == v) {
      UPK_TRY(fs_.Remove(PkgDir(name) / "staged"));
    }
    return OkStatus();
  }

  Status Discard(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (active && active->cur.version == v)
      return Error(Errc::kPolicy, "discard " + Id(name, v) + ": it is the active version");
    UPK_TRY_ASSIGN(auto staged, ReadStaged(name));
    if (staged && staged->version == v) {
      UPK_TRY(fs_.Remove(PkgDir(name) / "staged"));
    }
    // meta of the previous version stays as long as it is a rollback target
    if (active && active->previous && active->previous->version == v) return OkStatus();
    return RemoveWithLeftovers(PkgDir(name) / "meta", v.ToString());
  }

  Status Deactivate(std::string_view name, const Version& v) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (!active) return OkStatus();
    if (active->cur.version != v) {
      return Error(Errc::kPolicy, "deactivate " + Id(name, v) + ": " + active->cur.version.ToString() + " is active");
    }
    UPK_TRY(fs_.Remove(PkgDir(name) / "active"));
    return fs_.SyncDir(PkgDir(name));
  }

  Expected<std::optional<Version>> Active(std::string_view name) override {
    UPK_TRY(CheckName(name));
    UPK_TRY_ASSIGN(auto active, ReadActive(name));
    if (!active) return std::optional<Version>();
    return std::optional<Version>(active->cur.version);
  }

 private:
  static std::string Other(const std::string& slot) { return slot == "a" ? "b" : "a"; }

  fs::path SlotPath(std::string_view name, const std::string& slot) const {
    auto it = options_.image_slots.find(name);
    if (it != options_.image_slots.end()) return slot == "a" ? it->second.a : it->second.b;
    return PkgDir(name) / ("image-" + slot);
  }

  Expected<Rec> ParseRec(const Json& j, const fs::path& path) {
    if (!j.is_object()) return Error(Errc::kParse, path.string() + ": not an object");
    auto s = j.find("slot");
    if (s == j.end() || !s->is_string() || (*s != "a" && *s != "b"))
      return Error(Errc::kParse, path.string() + ": field 'slot': must be \"a\" or \"b\"");
    Rec r;
    r.slot = s->get<std::string>();
    UPK_TRY_ASSIGN(r.version, VersionField(j, "version", path));
    return r;
  }

  Expected<std::optional<ActiveRec>> ReadActive(std::string_view name) {
    const fs::path path = PkgDir(name) / "active";
    UPK_TRY_ASSIGN(auto j, ReadState(path));
    if (!j) return std::optional<ActiveRec>();
    ActiveRec a;
    UPK_TRY_ASSIGN(a.cur, ParseRec(*j, path));
    if (auto p = j->find("previous"); p != j->end()) {
      UPK_TRY_ASSIGN(Rec prev, ParseRec(*p, path));
      if (prev.slot == a.cur.slot) return Error(Errc::kParse, path.string() + ": previous is in the active slot");
      a.previous = prev;
    }
    return std::optional<ActiveRec>(a);
  }

  Expected<std::optional<Rec>> ReadStaged(std::string_view name) {
    const fs::path path = PkgDir(name) / "staged";
    UPK_TRY_ASSIGN(auto j, ReadState(path));
    if (!j) return std::optional<Rec>();
    UPK_TRY_ASSIGN(Rec r, ParseRec(*j, path));
    return std::optional<Rec>(r);
  }

  Status WriteActive(std::string_view name, const ActiveRec& a) {
    Json j = Json::object();
    j["slot"] = a.cur.slot;
    j["version"] = a.cur.version.ToString();
    if (a.previous) j["previous"] = Json{{"slot", a.previous->slot}, {"version", a.previous->version.ToString()}};
    return WriteJson(PkgDir(name) / "active", j);
  }

  // "verified by reading it back": the first `size` bytes of the slot (a block device is larger).
  Status VerifySlot(const fs::path& slot, const packages::PayloadEntry& e, const std::string& what) {
    int fd = ::open(slot.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return Error(Errc::kIo, what + ": " + slot.string() + ": " + std::strerror(errno));
    Hasher hasher;
    std::vector<std::uint8_t> buf(1 << 20);
    std::uint64_t left = e.size;
    while (left > 0) {
      ssize_t n = ::read(fd, buf.data(), std::min<std::uint64_t>(left, buf.size()));
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        int err = n < 0 ? errno : 0;
        ::close(fd);
        return Error(err ? Errc::kIo : Errc::kVerification,
                     what + ": " + slot.string() + ": read-back " + (err ? std::strerror(err) : "ended early"));
      }
      hasher.Update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
      left -= static_cast<std::uint64_t>(n);
    }
    ::close(fd);
    if (hasher.FinishHex() != e.sha256)
      return Error(Errc::kVerification, what + ": " + slot.string() + ": read-back SHA-256 mismatch");
    return OkStatus();
  }

  // One non-image entry into the meta temp dir, through Fs (so FaultFs sees it). The reader
  // checked the layout (relative, unique paths; nothing below a symlink or a file) and the temp
  // dir is fresh, so no path component can be a symlink planted by someone else.
  Status PlaceMeta(packages::PackageReader& reader, const packages::PayloadEntry& e, const fs::path& base,
                   std::map<std::string, std::uint32_t>& dirs, const std::string& id) {
    if (auto s = packages::CheckRelativePath(e.path); !s) return s.error().Wrap(id);
    const fs::path p = base / e.path;
    // Parents first (0700 while we write; 0755 unless an explicit entry says otherwise).
    std::string prefix;
    const std::string parent = fs::path(e.path).parent_path().string();
    if (!parent.empty()) {
      for (const auto& part : fs::path(parent)) {
        prefix += (prefix.empty() ? "" : "/") + part.string();
        if (dirs.emplace(prefix, 0755).second) UPK_TRY(fs_.CreateDirectories(base / prefix, 0700));
      }
    }
    switch (e.type) {
      case packages::EntryType::kDirectory:
        if (dirs.find(e.path) == dirs.end()) UPK_TRY(fs_.CreateDirectories(p, 0700));
        dirs[e.path] = e.mode;
        return OkStatus();
      case packages::EntryType::kSymlink:
        if (auto s = packages::CheckSymlinkTarget(e.path, e.target); !s) return s.error().Wrap(id);
        return fs_.ReplaceSymlink(p, e.target);
      case packages::EntryType::kFile: {
        UPK_TRY_ASSIGN(auto out, fs_.OpenForWrite(p, 0600));
        for (;;) {
          auto chunk = reader.ReadData();
          if (!chunk) return chunk.error().Wrap("stage " + id);
          if (chunk->empty()) break;
          UPK_TRY(out->Write(*chunk));
        }
        UPK_TRY(out->Sync());
        UPK_TRY(out->Close());
        // chmod ignores the umask: the file gets exactly the manifest's mode.
        if (::chmod(p.c_str(), e.mode) != 0) {
          return Error(Errc::kIo, id + ": payload entry '" + e.path + "': chmod: " + std::strerror(errno));
        }
        return OkStatus();
      }
    }
    return OkStatus();
  }
};

}  // namespace

Expected<std::unique_ptr<Handler>> MakeHandler(HandlerKind kind, Fs& fs, fs::path root, ProcessRunner& runner) {
  return MakeHandler(kind, fs, std::move(root), runner, HandlerOptions{});
}

Expected<std::unique_ptr<Handler>> MakeHandler(HandlerKind kind, Fs& fs, fs::path root, ProcessRunner& runner,
                                               HandlerOptions options) {
  if (root.empty() || !root.is_absolute())
    return Error(Errc::kInvalidArgument, "handler root '" + root.string() + "' must be an absolute path");
  switch (kind) {
    case HandlerKind::kFiles:
      return std::unique_ptr<Handler>(
          std::make_unique<SlotHandler>(fs, std::move(root), runner, std::move(options), false));
    case HandlerKind::kModule:
      return std::unique_ptr<Handler>(
          std::make_unique<SlotHandler>(fs, std::move(root), runner, std::move(options), true));
    case HandlerKind::kImage:
      return std::unique_ptr<Handler>(std::make_unique<ImageHandler>(fs, std::move(root), runner, std::move(options)));
  }
  return Error(Errc::kInvalidArgument, "unknown handler kind");
}

Expected<ProcessResult> RunHook(ProcessRunner& runner, const HookSpec& spec, const fs::path& work_dir,
                                const HookEnv& env, std::chrono::milliseconds kill_grace) {
  if (spec.command.empty()) return Error(Errc::kInvalidArgument, "hook: empty command");
  if (auto s = packages::CheckRelativePath(spec.command[0]); !s) return s.error().Wrap("hook command");
  ProcessSpec ps;
  ps.argv = spec.command;
  ps.argv[0] = (work_dir / spec.command[0]).string();
  ps.cwd = work_dir;
  ps.env = {{"UPKEEP_PACKAGE", env.package},
            {"UPKEEP_VERSION", env.version.ToString()},
            {"UPKEEP_PREVIOUS_VERSION", env.previous ? env.previous->ToString() : ""},
            {"UPKEEP_ROOT", env.root.string()}};
  ps.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(spec.timeout);
  ps.kill_grace = kill_grace;
  return runner.Run(ps);
}

}  // namespace upkeep::agent
