// How a package says it installs: the manifest's optional top-level `install` object (kept
// verbatim in Manifest::extra["install"]), parsed strictly into an InstallSpec.
//
//   "install": {"handler": "files" | "image" | "module",
//               "image": "disk.img",              // image handler only: a regular file entry
//               "module": "bin/update-module",    // module handler only: an executable file entry
//               "pre_install":  {"command": ["hooks/pre", "arg"], "timeout_seconds": 60},
//               "post_install": {"command": [...], "timeout_seconds": 60},
//               "health_check": {"command": ["bin/health"], "timeout_seconds": 60}}
//
// Absent `install`: the files handler, no hooks, no health check. Only signed content ever runs:
// command[0] and `module` are relative payload paths naming an executable regular-file entry of
// the (signed) manifest; they are resolved against the version's work directory at run time.
// Errors: kParse for a malformed object (unknown field, wrong type, empty command) and kPolicy
// for a well-formed but unacceptable one (entry missing or not executable, timeout outside
// 1..3600, field not allowed for the handler); the message names the field. Pure functions.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/manifest.hpp"

namespace upkeep::agent {

enum class HandlerKind { kFiles, kImage, kModule };
const char* HandlerKindName(HandlerKind kind);
Expected<HandlerKind> ParseHandlerKind(std::string_view text);

inline constexpr std::int64_t kDefaultHookTimeoutSeconds = 60;
inline constexpr std::int64_t kMaxHookTimeoutSeconds = 3600;
inline constexpr std::size_t kMaxCommandArgs = 64;
inline constexpr std::size_t kMaxCommandArgBytes = 4096;

// One hook or health check: argv (argv[0] a payload path) and its time-out.
struct HookSpec {
  std::vector<std::string> command;
  std::chrono::seconds timeout{kDefaultHookTimeoutSeconds};
};

struct InstallSpec {
  HandlerKind handler = HandlerKind::kFiles;
  std::string image;   // image handler: payload path of the image file
  std::string module;  // module handler: payload path of the update module
  std::optional<HookSpec> pre_install;
  std::optional<HookSpec> post_install;
  std::optional<HookSpec> health_check;

  static Expected<InstallSpec> FromManifest(const packages::Manifest& manifest);
  static Expected<InstallSpec> FromJson(const Json& install, const packages::Manifest& manifest);
  Json ToJson() const;
};

}  // namespace upkeep::agent
