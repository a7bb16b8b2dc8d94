// upkeep-tuf-client as a library, so tests can run the whole command line in-process.
//
// The command line is the tuf-conformance "client-under-test" contract (CLIENT-CLI.md):
//   --metadata-dir DIR init TRUSTED_ROOT
//   --metadata-dir DIR --metadata-url URL refresh
//   --metadata-dir DIR --metadata-url URL --target-name PATH [--target-name PATH ...]
//       --target-base-url URL --target-dir DIR download
// Exit code 0 on success, 1 on any failure (usage errors included), with a one-line reason on
// `err`. Downloaded targets are stored flat in the target dir under their percent-encoded
// target path; an already downloaded file that still matches the metadata is not fetched again.
// Run() borrows the fetcher and clock; it keeps no state between calls.
#pragma once

#include <iosfwd>

#include "upkeep/common/clock.hpp"
#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::tuf_client {

int Run(int argc, const char* const* argv, tuf::Fetcher& fetcher, const Clock& clock, std::ostream& out,
        std::ostream& err);

}  // namespace upkeep::tuf_client
