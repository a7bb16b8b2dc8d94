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
  // Make every file and directory durable before the final rename: writeback starts per file
  // (sync_file_range), then one syncfs() of the destination filesystem; then the parent is fsynced.
  bool fsync = true;
};

// Opens `upk`, checks its signatures per `options` (none given: integrity only), then
// ExtractFromReader.
Expected<VerifyResult> ExtractPackage(const std::filesystem::path& upk, const std::filesystem::path& dest,
                                      const VerifyOptions& options, ProgressFn progress = {},
                                      const ExtractOptions& extract = {});

// Extracts the payload of a reader whose signatures were already verified (VerifySignatures) or
// explicitly skipped (SkipSignatureCheck), with the same guarantees as ExtractPackage: `dest` must
// not exist, entries go to a temporary directory beside it, renamed only when every entry (and
// the archive's end) verified; on any failure neither `dest` nor the temporary directory remains.
// A still-locked reader fails with kPolicy and leaves nothing. The reader is consumed: afterwards
// it is at its end or failed. In the result, integrity_only is true when reader.signed_by() is
// empty; package_bytes is reader.package_bytes() at the end.
Expected<VerifyResult> ExtractFromReader(PackageReader& reader, const std::filesystem::path& dest,
                                         ProgressFn progress = {}, const ExtractOptions& extract = {});

}  // namespace upkeep::packages
