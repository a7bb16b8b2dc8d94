// The updater's only way to talk to the keyserver: a small client for the keyserver's HTTP API
// (docs/keyserver.md), authenticated with the updater's bearer token.
//
// Contract: every answer is hostile input. Bodies read back are bounded (16 MiB), JSON is parsed
// with ParseJson (depth, duplicate keys) and checked for the fields each call needs. Non-2xx
// answers become errors (Enrol excepted: it passes every answer through, for the updater to
// relay to the appliance):
//
//   404 -> kNotFound   403 -> kPolicy   400, 409 -> kInvalidArgument (other 4xx too)
//   401 -> kVerification "keyserver refused the updater token"
//   5xx, other statuses, time-outs, connection failures -> kIo "keyserver unavailable: ..."
//
// Each message names the method and path and the keyserver's error code and message from its
// {"error": {"code", "message"}} body (sanitised and shortened). The token is never logged and
// never appears in an error message.
//
// Thread safety: a KeyserverClient may be called from several threads at once; each call makes
// its own HTTP connection and shares nothing mutable.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::keyserver {

struct ApplianceRecord {  // GET /api/v1/appliances/{id}
  std::string appliance_id;
  Json public_key;  // TUF ed25519 public key JSON as enrolled
  std::string customer;
  bool revoked = false;
  std::optional<SysTime> revoked_at;
  SysTime enrolled_at{};
  SysTime maintenance_end{};
  bool in_maintenance = false;
  std::vector<std::string> features;
};

struct RevokedAppliance {
  std::string appliance_id;
  SysTime revoked_at{};
};

struct RevocationPage {
  std::vector<RevokedAppliance> revoked;  // ordered by revoked_at
  SysTime now{};                          // the keyserver's clock when it answered
  bool truncated = false;                 // more rows follow: ask again from the last revoked_at
};

struct PassThrough {  // the keyserver's answer verbatim
  int status = 0;
  std::string body;
};

class KeyserverClient {
 public:
  virtual ~KeyserverClient() = default;
  // Body of GET /api/v1/keys ({"roles": {...}}; checked to be an object with a "roles" object).
  virtual Expected<Json> Keys() = 0;
  // GET /api/v1/appliances/{id}; a malformed id is kInvalidArgument without any request.
  virtual Expected<ApplianceRecord> GetAppliance(const std::string& appliance_id) = 0;
  // role: "timestamp", "snapshot" or "assignment"; returns the signed envelope {"signatures","signed"}.
  // For assignments, "signed" differs from `signed_part` in the steps' sealed_content_key (re-sealed
  // by the keyserver to the appliance); sign the rest as it came back.
  virtual Expected<Json> Sign(std::string_view role, const Json& signed_part) = 0;
  // POST /api/v1/enrol with the appliance's body as received; any HTTP status is passed through.
  // Only a failure to get an answer at all (time-out, connection) is an error (kIo).
  virtual Expected<PassThrough> Enrol(std::string_view request_body) = 0;
  // GET /api/v1/revocations[?since=]. `since` is inclusive. To poll without gaps, pass the previous
  // page's `now` minus a little (a revocation's time is taken when its request starts, so one
  // committing slowly can carry a time just before a `now`); duplicates are harmless. When
  // `truncated`, ask again with since = the last revoked_at.
  virtual Expected<RevocationPage> RevokedSince(std::optional<SysTime> since) = 0;
};

struct KeyserverClientOptions {
  std::string base_url;       // "http://127.0.0.1:PORT" (https also accepted); no path, query or user info
  std::string updater_token;  // bearer token (never logged, never in an error message)
  std::chrono::milliseconds timeout{10000};
};

// Checks the options (URL form, a non-empty token without control characters, a positive
// time-out) and returns a client; it does not contact the keyserver.
Expected<std::unique_ptr<KeyserverClient>> MakeHttpKeyserverClient(KeyserverClientOptions options);

}  // namespace upkeep::keyserver
