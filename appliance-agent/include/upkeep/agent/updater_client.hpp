// UpdaterApi: the updater's appliance API (docs/updater-api.md, "Appliance API") as the agent
// calls it: signed check-in and idempotent events. The core depends on the interface only; its
// tests fake it. MakeUpdaterApi gives the real one over an HttpClient.
//
// Errors (the same for every call):
//   - 429 or 503 with a Retry-After of N seconds -> kLimit "updater busy, retry after N s" (N is
//     clamped to 1..86400); RetryAfter(error) gives N back. This message format IS the carrier:
//     Error has only a code and a message, and callers must not parse anything else.
//   - other 4xx -> the server's {"error":{"code","message"}} in the message; 400 kInvalidArgument,
//     401/403 kPolicy, 404 kNotFound, 413 kLimit, 422 kVerification, others kPolicy.
//   - 5xx (and 503 without Retry-After), unreachable, time-outs -> kIo.
//   - a 200 whose body is not what the contract says -> kParse, naming the field.
// Not thread-safe: one caller at a time (the clock, random and client references are shared).
// Everything passed to MakeUpdaterApi must outlive the returned object.
#pragma once

#include <chrono>
#include <cstddef>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/agent/http_client.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::agent {

struct CheckinReply {
  // The signed envelope exactly as the agent must verify it: the JSON text of "assignment"
  // (re-serialised from the parsed reply; the director signs the canonical form of "signed", so
  // trust::VerifyAssignment over this text checks the bytes that were signed).
  std::string assignment;
  SysTime server_time{};
  std::chrono::seconds next_checkin{0};
};

struct AgentEvent {
  std::string id;    // 32 lower-case hex, chosen once and kept across retries (idempotency)
  std::string type;  // download|install|success|failure|rollback
  std::string name;
  std::string version;
  SysTime at{};
  Json detail = Json::object();  // at most 16 KiB as JSON
  std::string log_tail;          // longer than 64 KiB: only the last 64 KiB are sent
};

class UpdaterApi {
 public:
  virtual ~UpdaterApi() = default;
  virtual Expected<CheckinReply> Checkin(const trust::InstalledSet& installed, std::string_view agent_version) = 0;
  // Sends in batches of at most 100; returns accepted + duplicates. Events that break the
  // contract (id, type, sizes) -> kInvalidArgument naming the event, nothing sent.
  virtual Expected<std::size_t> SendEvents(const std::vector<AgentEvent>& events) = 0;
};

struct UpdaterEndpoint {
  std::string base_url;  // "https://updater.example:8443" (a path prefix is allowed, no trailing '/')
  std::uint64_t max_reply_bytes = 1024 * 1024;
};

// The Retry-After seconds of a "busy" error produced by this API (or by Download), else nullopt.
std::optional<std::chrono::seconds> RetryAfter(const Error& error);

// The message (and code) for a busy answer; shared with the downloader.
Error BusyError(std::chrono::seconds retry_after);

// Maps a non-2xx answer to an Error as described above (`what` names the request).
Error ErrorFromResponse(const HttpResponse& response, std::string_view what);

Expected<std::unique_ptr<UpdaterApi>> MakeUpdaterApi(UpdaterEndpoint endpoint, const trust::ApplianceIdentity& identity,
                                                     const Clock& clock, Random& random, HttpClient& http);

}  // namespace upkeep::agent
