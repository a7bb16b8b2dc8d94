// A small HTTP(S) client for the updater's operator API (docs/updater-api.md), used by the
// server-facing upk commands. Not a public header of upkeep_upk.
//
// Every request carries `Authorization: Bearer TOKEN` when a token is set; the token is never
// put into an error message, a log line or a URL. Answers are returned whatever their status
// (ApiResponse); only transport failures (connection refused, TLS verification, time-out, a
// body over the size limit) are Errors, as kIo. Bodies are parsed with ParseJson (size-bounded,
// duplicate keys refused). Uploads are streamed from the file, never read into memory.
//
// api_client.cpp is the only upk file that includes cpprestsdk (and with it Boost). One client
// per command; not thread-safe.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::upk {

struct ApiClientOptions {
  std::string server;   // base URL: http(s)://host[:port][/prefix], no credentials, query or fragment
  std::string token;    // bearer token (may be empty for unauthenticated routes)
  std::string ca_file;  // PEM trust anchors for https (a private CA or the updater's self-signed cert)
  std::chrono::seconds timeout{60};
};

struct ApiResponse {
  int status = 0;
  Json body;        // null when the body is empty or not JSON
  std::string raw;  // the first bytes of a body that is not JSON (for error messages)
  bool ok() const { return status >= 200 && status < 300; }
};

// Called from a cpprestsdk thread with the number of body bytes sent so far.
using UploadProgress = std::function<void(std::uint64_t sent)>;
// Called with the bytes received so far and the Content-Length (0 when the server sent none).
using DownloadProgress = std::function<void(std::uint64_t received, std::uint64_t total)>;

class ApiClient {
 public:
  // Validates the URL (kInvalidArgument names what is wrong with it) and the CA file's presence.
  static Expected<ApiClient> Create(ApiClientOptions options);

  // `target` is the path and query below the server URL, e.g. "/api/v1/rollouts?state=active".
  Expected<ApiResponse> Get(const std::string& target) const;
  Expected<ApiResponse> Post(const std::string& target, const Json& body) const;
  // Streams `file` as the body (Content-Length set, application/octet-stream).
  Expected<ApiResponse> PutFile(const std::string& target, const std::filesystem::path& file,
                                UploadProgress progress = {}) const;

  // GET whose 2xx body is streamed into `file` (created or truncated, 0600; constant memory,
  // no size limit); a non-2xx answer is returned as by Get() and `file` is left untouched.
  // The caller renames the file into place (atomic downloads). `timeout` is a stall time-out
  // here: the download fails (kIo, "the download stalled: nothing arrived for N s") only when no
  // byte arrived for that long, however long the whole transfer takes (a week at most).
  Expected<ApiResponse> Download(const std::string& target, const std::filesystem::path& file,
                                 DownloadProgress progress = {}) const;

  const std::string& server() const { return options_.server; }
  // True for http:// to a host other than localhost/127.x/::1: a token would cross the network
  // in clear.
  bool cleartext_remote() const { return cleartext_remote_; }

 private:
  explicit ApiClient(ApiClientOptions options) : options_(std::move(options)) {}
  ApiClientOptions options_;
  bool cleartext_remote_ = false;
};

// Percent-encodes one path segment or query value (everything but RFC 3986 unreserved).
std::string EncodeComponent(std::string_view text);

// The Error for a non-2xx answer, "MESSAGE (CODE, HTTP STATUS)", with an Errc that gives the
// exit code: refusals by policy or verification (403, 409, 400 verification_failed and the
// other digest/metadata checks, 411/413) exit 1; usage, missing things, authentication and
// server-side outages (400 invalid_*, 401, 404, 5xx) exit 2.
Error ResponseError(const ApiResponse& response);

}  // namespace upkeep::upk
