// What every server-facing upk command shares: the --server/--token-file/--ca-file/--timeout
// options, turning them into an ApiClient, reporting failed requests, and small printing helpers.
// Not a public header of upkeep_upk.
//
// The token comes from --token-file or the environment (UPKEEP_TOKEN), never from a command-line
// value, so it does not show up in `ps` or shell history; it is never printed.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "api_client.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

struct ServerArgs {
  std::string server;      // --server, else $UPKEEP_SERVER
  std::string token_file;  // --token-file, else $UPKEEP_TOKEN holds the token itself
  std::string ca_file;     // --ca-file
  int timeout_seconds = 60;
};

void AddServerOptions(CLI::App* sub, ServerArgs& args);

// Reads the token (a token file is at most 4 KiB, surrounding whitespace trimmed, printable
// ASCII only) and builds the client. Warns on stderr when a token would go over plain http to
// a remote host.
Expected<ApiClient> Connect(const Context& ctx, const ServerArgs& args);

// Reports a failed request, a transport error or a non-2xx answer, and returns the exit code.
// Text: "upk: error: MESSAGE (CODE, HTTP STATUS)". --json: the server's error body as it came,
// with "status" added, on stdout.
int FailRequest(const Context& ctx, const Expected<ApiResponse>& response);

// Field access that tolerates what a newer or older server may leave out.
std::string Str(const Json& obj, const char* key, const std::string& fallback = "-");
std::string Num(const Json& obj, const char* key, const std::string& fallback = "-");

// Prints rows as left-aligned columns separated by two spaces; the first row is the header.
void PrintTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows);

// A bar of `width` cells, `part` of `whole` filled ("#####.....").
std::string Bar(std::int64_t part, std::int64_t whole, int width = 20);

// True when stdout is a terminal (and not captured by a test).
bool StdoutIsTerminal(const Context& ctx);

}  // namespace upkeep::upk
