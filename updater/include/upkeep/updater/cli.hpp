// The updater executable as a library, so tests run it in-process: Main() parses the command
// line and runs one command. This first slice has one command:
//
//   updater serve --repo DIR --listen ADDRESS:PORT [--threads N] [--tls-cert FILE --tls-key FILE]
//
// serve publishes the TUF repository in DIR (written by `upk repo`) under /repo/metadata/ and
// /repo/targets/ (see repository_routes.hpp), plus /healthz and /metrics. It prints
// "updater: listening on ADDRESS:PORT" on `out` once it accepts connections (PORT 0 picks an
// ephemeral port), logs one line per request on `err` (method, path, status, bytes, duration,
// peer; never header values or query strings), runs until SIGTERM or SIGINT and exits 0 after a
// graceful stop. Exit codes: 0 ok, 2 usage or input error (bad flags, missing repository, port in
// use, unreadable certificate).
#pragma once

#include <iosfwd>

namespace upkeep::updater {

int Main(int argc, const char* const* argv, std::ostream& out, std::ostream& err);

}  // namespace upkeep::updater
