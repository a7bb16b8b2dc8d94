#include "server_common.hpp"

#include <sys/stat.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <iostream>

namespace upkeep::upk {

namespace {

constexpr std::size_t kMaxTokenBytes = 4096;

std::string Trim(std::string s) {
  const auto space = [](unsigned char c) { return c == ' ' || c == '\t' || c == '\r' || c == '\n'; };
  while (!s.empty() && space(static_cast<unsigned char>(s.back()))) s.pop_back();
  std::size_t start = 0;
  while (start < s.size() && space(static_cast<unsigned char>(s[start]))) ++start;
  return s.substr(start);
}

// Messages name where the token came from, never the token.
Expected<std::string> ReadToken(const ServerArgs& a) {
  std::string token, source;
  if (!a.token_file.empty()) {
    source = "--token-file " + a.token_file;
    std::ifstream in(a.token_file, std::ios::binary);
    if (!in) return Error(Errc::kIo, source + ": cannot be read");
    token.resize(kMaxTokenBytes + 1);
    in.read(token.data(), static_cast<std::streamsize>(token.size()));
    token.resize(static_cast<std::size_t>(in.gcount()));
    if (token.size() > kMaxTokenBytes)
      return Error(Errc::kInvalidArgument, source + ": larger than 4 KiB, not a token");
  } else if (const char* env = std::getenv("UPKEEP_TOKEN"); env != nullptr) {
    source = "UPKEEP_TOKEN";
    token = env;
  } else {
    return Error(Errc::kInvalidArgument, "no token: use --token-file FILE or set UPKEEP_TOKEN");
  }
  token = Trim(std::move(token));
  if (token.empty()) return Error(Errc::kInvalidArgument, source + ": empty token");
  // Printable ASCII only: anything else could break out of the Authorization header.
  if (!std::all_of(token.begin(), token.end(), [](char c) { return c > 0x20 && c < 0x7f; })) {
    return Error(Errc::kInvalidArgument, source + ": the token contains characters a token cannot have");
  }
  return token;
}

}  // namespace

void AddServerOptions(CLI::App* sub, ServerArgs& a) {
  sub->add_option("--server", a.server, "Updater URL, e.g. https://updater.example:8443 (default: $UPKEEP_SERVER)");
  sub->add_option("--token-file", a.token_file,
                  "File holding the operator token (default: $UPKEEP_TOKEN); never pass a token as an argument");
  sub->add_option("--ca-file", a.ca_file, "PEM file of the CA (or self-signed certificate) to trust for https");
  sub->add_option("--timeout", a.timeout_seconds, "Network time-out in seconds without progress (default 60)")
      ->check(CLI::Range(1, 86400));
}

Expected<ApiClient> Connect(const Context& ctx, const ServerArgs& a) {
  ApiClientOptions o;
  o.server = a.server;
  if (o.server.empty()) {
    if (const char* env = std::getenv("UPKEEP_SERVER"); env != nullptr) o.server = env;
  }
  o.ca_file = a.ca_file;
  o.timeout = std::chrono::seconds(a.timeout_seconds);
  UPK_TRY_ASSIGN(o.token, ReadToken(a));
  struct stat st {};
  if (!a.token_file.empty() && ::stat(a.token_file.c_str(), &st) == 0 && (st.st_mode & 077) != 0 && !ctx.quiet) {
    *ctx.err << "upk: warning: --token-file " << a.token_file << " is readable by other users; chmod 600 it\n";
  }
  UPK_TRY_ASSIGN(ApiClient client, ApiClient::Create(std::move(o)));
  if (client.cleartext_remote() && !ctx.quiet) {
    *ctx.err << "upk: warning: sending the token to " << client.server() << " over plain http\n";
  }
  return client;
}

int FailRequest(const Context& ctx, const Expected<ApiResponse>& r) {
  if (!r) return ctx.Fail(r.error());
  const Error e = ResponseError(*r);
  if (ctx.json && r->body.is_object() && r->body.contains("error")) {
    Json body = r->body;
    body["status"] = r->status;
    *ctx.out << body.dump() << "\n";
    return e.ExitCode();
  }
  return ctx.Fail(e);
}

std::string Str(const Json& obj, const char* key, const std::string& fallback) {
  if (!obj.is_object() || !obj.contains(key)) return fallback;
  const Json& v = obj[key];
  if (v.is_string()) return v.get<std::string>();
  if (v.is_null()) return fallback;
  return v.dump();
}

std::string Num(const Json& obj, const char* key, const std::string& fallback) {
  if (!obj.is_object() || !obj.contains(key) || !obj[key].is_number()) return fallback;
  return obj[key].dump();
}

void PrintTable(std::ostream& out, const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    if (width.size() < row.size()) width.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out << line << "\n";
  }
}

std::string Bar(std::int64_t part, std::int64_t whole, int width) {
  int filled = 0;
  if (whole > 0) filled = static_cast<int>(std::clamp<std::int64_t>(part * width / whole, 0, width));
  return std::string(static_cast<std::size_t>(filled), '#') +
         std::string(static_cast<std::size_t>(width - filled), '.');
}

bool StdoutIsTerminal(const Context& ctx) { return ctx.out == &std::cout && ::isatty(STDOUT_FILENO); }

}  // namespace upkeep::upk
