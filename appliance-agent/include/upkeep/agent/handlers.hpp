// Install handlers: how a verified package becomes the active version of its payload kind, and
// how it is switched back. The agent core calls them step by step and journals each step; after
// a crash at any point it calls them again, so every method is idempotent and restartable, and
// Active() reads the truth back from disk. See docs/agent/install.md.
//
// Layout under `root` (the appliance's package area):
//   packages/NAME/slots/VERSION/      files, module: unpacked payload of each kept version
//   packages/NAME/current -> slots/V  files, module: the active version (switched atomically)
//   packages/NAME/switch              files, module: {"version":"V","previous":"U"} written
//                                     before each switch (tells Commit/Rollback the pair)
//   packages/NAME/modules/VERSION     module: {"module":"bin/m","installed":true} (install completed)
//   packages/NAME/image-a, image-b    image: the A/B pair (paths configurable: block devices)
//   packages/NAME/active              image: {"slot":"a","version":"V","previous":{"slot":"b","version":"U"}}
//   packages/NAME/staged              image: {"slot":"b","version":"V"} once a slot was verified
//   packages/NAME/meta/VERSION/       image: the package's non-image entries (hooks, health check)
//
// Every write that decides what is active (the `current` switch, `active`, `staged`, `switch`,
// image slot writes) goes through Fs. New slot directories are extracted by the packages
// extractor (temp dir, fsync, rename). Errors name the package, version and path; a module or
// hook that fails is kPolicy with its exit status and the end of its log. A handler is used by
// one thread at a time; it holds references to `fs` and `runner`, which must outlive it.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/agent/fs.hpp"
#include "upkeep/agent/install_spec.hpp"
#include "upkeep/agent/process.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/packages/version.hpp"

namespace upkeep::agent {

class Handler {
 public:
  virtual ~Handler() = default;
  // Writes VERSION beside the active one from a reader whose signatures were verified (or whose
  // payload was otherwise unlocked); nothing the running system uses changes. A leftover
  // (partial) staging of the same version is discarded first, so Stage can be retried after a
  // crash. Staging the active version is a no-op. The reader is consumed.
  virtual Status Stage(packages::PackageReader& reader, const InstallSpec& spec, packages::ProgressFn progress) = 0;
  // The directory hooks and the health check run in (slot dir, or meta dir for images).
  virtual std::filesystem::path WorkDir(std::string_view name, const packages::Version& v) const = 0;
  // Makes the staged VERSION active (atomic switch); a no-op when it already is. kNotFound when
  // VERSION was not staged.
  virtual Status Activate(std::string_view name, const packages::Version& v) = 0;
  // Re-activates `previous` (still kept); a no-op when it already is active.
  virtual Status Rollback(std::string_view name, const packages::Version& previous) = 0;
  // After the health check passed: module `commit`; drops everything but VERSION and the
  // version active before it (keep 2). kPolicy when VERSION is not the active one.
  virtual Status Commit(std::string_view name, const packages::Version& v) = 0;
  // Removes a staged, inactive version (absent is fine). kPolicy when VERSION is active.
  virtual Status Discard(std::string_view name, const packages::Version& v) = 0;
  // Undoes a package's first install (there is no previous version to roll back to): VERSION
  // stops being active and nothing is; the module (if any) is called with `rollback`. A no-op
  // when nothing is active; kPolicy when another version is active.
  virtual Status Deactivate(std::string_view name, const packages::Version& v) = 0;
  // What is active on disk now (nullopt: never installed). The core trusts this over its journal.
  virtual Expected<std::optional<packages::Version>> Active(std::string_view name) = 0;
};

// Where an image package's A/B slots live. Default: ROOT/packages/NAME/image-a and image-b
// (regular files). A real appliance maps a package to its two block devices.
struct ImageSlotPaths {
  std::filesystem::path a;
  std::filesystem::path b;
};

struct HandlerOptions {
  std::map<std::string, ImageSlotPaths, std::less<>> image_slots;  // by package name
  std::chrono::seconds module_timeout{600};                        // each update-module call
  std::chrono::milliseconds kill_grace{5000};
  // Test hook: called after an image slot was written and synced, before it is read back.
  std::function<void(const std::filesystem::path& slot)> before_image_verify;
};

Expected<std::unique_ptr<Handler>> MakeHandler(HandlerKind kind, Fs& fs, std::filesystem::path root,
                                               ProcessRunner& runner);
Expected<std::unique_ptr<Handler>> MakeHandler(HandlerKind kind, Fs& fs, std::filesystem::path root,
                                               ProcessRunner& runner, HandlerOptions options);

// The environment of every hook, health check and module call.
struct HookEnv {
  std::string package;                        // UPKEEP_PACKAGE
  packages::Version version;                  // UPKEEP_VERSION
  std::optional<packages::Version> previous;  // UPKEEP_PREVIOUS_VERSION ("" when none)
  std::filesystem::path root;                 // UPKEEP_ROOT
};

// Runs one hook/health check of `spec` in `work_dir` (argv[0] = work_dir/command[0]) with env
// UPKEEP_PACKAGE, UPKEEP_VERSION, UPKEEP_PREVIOUS_VERSION, UPKEEP_ROOT; returns the result
// (non-zero exit or time-out is a result, not an Error). kInvalidArgument for an empty command.
Expected<ProcessResult> RunHook(ProcessRunner& runner, const HookSpec& spec, const std::filesystem::path& work_dir,
                                const HookEnv& env,
                                std::chrono::milliseconds kill_grace = std::chrono::milliseconds(5000));

}  // namespace upkeep::agent
