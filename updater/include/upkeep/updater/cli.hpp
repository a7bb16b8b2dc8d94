// The updater executable as a library, so tests run it in-process: Main() parses the command
// line and runs one command (docs/updater.md):
//
//   updater serve --repo DIR --listen ADDRESS:PORT [--database URL --keyserver URL
//                 --keyserver-token-file F [--blobs DIR] [--config F]] [--threads N] [--tls-cert F --tls-key F]
//   updater token create --database URL --name NAME --role admin|publisher|support [--expires-days N]
//   updater migrate --database URL
//
// serve with --database runs the whole Service (service.hpp); without it, only the static TUF
// repository in DIR under /repo/ (repository_routes.hpp). It prints "updater: listening on
// ADDRESS:PORT" on `out` once it accepts connections, logs one line per request on `err`
// (never header values, bodies or query strings), runs until SIGTERM or SIGINT and exits 0
// after a graceful stop. Exit codes: 0 ok, 2 usage or input error (bad flags, missing
// repository, unreachable database or keyserver at start, port in use, unreadable certificate).
#pragma once

#include <iosfwd>

namespace upkeep::updater {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::updater
