// Safe extraction of a .upk package into a directory.
//
// The package is verified as it is extracted (signatures before any payload, then every entry
// against the manifest). Entries go into a fresh temporary directory beside `dest`, created 0700;
// only when every entry verified is it renamed to `dest` (which must not exist). On any failure
// nothing is left behind: neither `dest` nor the temporary directory.
//
// Hostile content is refused with an error naming the entry: absolute paths, "..", symlinks
// leaving the payload, entries below a symlink, hard links, device nodes, FIFOs, sockets,
// set-uid/set-gid/sticky bits, sizes or digests differing from the manifest. Symlinks are never
// followed: every path is walked with openat(O_NOFOLLOW) from the temporary directory, and files
// are created with O_CREAT|O_EXCL|O_NOFOLLOW. Modes are exactly the manifest's (umask ignored);
// directory modes are applied last so read-only directories still get their contents.
#pragma once

#include <filesystem>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {

struct ExtractOptions {
  bool fsync = true;  // fsync files and directories before the final rename
};

Expected<VerifyResult> ExtractPackage(const std::filesystem::path& upk, const std::filesystem::path& dest,
                                      const VerifyOptions& options, ProgressFn progress = {},
                                      const ExtractOptions& extract = {});

}  // namespace upkeep::packages
