// The keyserver executable as a library, so tests run it in-process: Main() parses the command
// line and runs one command.
//
//   keyserver init   --state DIR (--passphrase-file F | --wrapping-key-file F) [--fast-kdf-for-tests]
//   keyserver serve  --state DIR (--passphrase-file F | --wrapping-key-file F) --database URL
//                    --listen ADDRESS:PORT [--config FILE]
//   keyserver rotate --state DIR (--passphrase-file F | --wrapping-key-file F) --role ROLE
//                    [--fast-kdf-for-tests]
//
// Results go to `out` as JSON; diagnostics and the request log go to `err`. serve prints
// "keyserver: listening on ADDRESS:PORT" on `out` once it accepts connections (PORT 0 picks an
// ephemeral port), then runs until SIGTERM or SIGINT and exits 0 after a graceful stop.
// Exit codes: 0 ok, 1 verification or policy failure, 2 usage or input error (a wrong passphrase
// or wrapping key file at serve is 2). Passphrases and tokens are never printed or logged.
#pragma once

#include <iosfwd>

namespace upkeep::keyserver {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::keyserver
