// Request signing with replay protection, appliance -> updater API.
//
// The appliance signs, with its identity key, the canonical string
//   "UPKEEP-REQUEST-V1\n" METHOD "\n" PATH_AND_QUERY "\n" SHA256_HEX(BODY) "\n" TIMESTAMP "\n"
//   NONCE "\n" APPLIANCE_ID
// and sends it in four headers: X-Upkeep-Appliance (its id), X-Upkeep-Timestamp (RFC 3339 UTC),
// X-Upkeep-Nonce (32 lower-case hex: 16 random bytes) and X-Upkeep-Signature (128 hex: ed25519).
//
// The server looks the appliance's public key up by id (unknown appliances are its job), then
// RequestVerifier checks, in this order: header syntax, that the id belongs to the key, the
// timestamp within ±skew of its clock, the signature, and finally the nonce in the ReplayCache.
// Only authentic requests reach the cache, so strangers can't fill it.
//
// ReplayCache: thread-safe (one mutex), bounded. A nonce is remembered until its timestamp +
// skew, after which the timestamp check alone refuses the request, so memory is bounded by the
// request rate times 2 x skew, and hard-capped at max_entries: when full, new requests are
// refused as busy (kLimit) rather than risking accepting a replay.
#pragma once

#include <chrono>
#include <cstddef>
#include <array>
#include <cstdint>
#include <map>
#include <mutex>
#include <unordered_set>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::trust {

inline constexpr const char* kApplianceHeader = "X-Upkeep-Appliance";
inline constexpr const char* kTimestampHeader = "X-Upkeep-Timestamp";
inline constexpr const char* kNonceHeader = "X-Upkeep-Nonce";
inline constexpr const char* kSignatureHeader = "X-Upkeep-Signature";
inline constexpr std::chrono::seconds kDefaultRequestSkew{300};

struct RequestToSign {
  std::string_view method;          // upper-case letters, e.g. "POST"
  std::string_view path_and_query;  // as sent on the request line, e.g. "/api/v1/checkin?x=1"
  std::string_view body;
};

struct RequestSignature {
  std::string appliance_id;
  std::string timestamp;
  std::string nonce;
  std::string signature_hex;

  // The four (name, value) header pairs.
  std::vector<std::pair<std::string, std::string>> Headers() const;
};

// The exact bytes that are signed (exposed so other implementations can be tested against it).
// kInvalidArgument for a method or path that could not be unambiguously signed (newlines etc.).
Expected<std::string> RequestCanonicalString(const RequestToSign& request, std::string_view timestamp,
                                             std::string_view nonce, std::string_view appliance_id);

// Client side: signs with a fresh nonce from `random` and the time from `clock`.
Expected<RequestSignature> SignRequest(const ApplianceIdentity& identity, const RequestToSign& request,
                                       const Clock& clock, Random& random);

// Which check refused a request, so the server can pick its HTTP status and error code.
enum class RequestCheck {
  kOk,
  kMalformed,       // a header is missing or not of the right form (400)
  kWrongKey,        // the appliance id does not belong to the key given (401)
  kStaleTimestamp,  // outside the skew window (401; the message names the clock)
  kBadSignature,    // (401)
  kReplayed,        // nonce seen within the window (401)
  kBusy,            // replay cache full: try again later (503)
};
const char* RequestCheckName(RequestCheck check);

class ReplayCache {
 public:
  // `window` is the allowed clock skew: requests stamped more than this away from the server's
  // clock are refused, and nonces are remembered this long after their timestamp.
  explicit ReplayCache(std::size_t max_entries, std::chrono::seconds window = kDefaultRequestSkew);

  // Records (appliance id, nonce) of a request stamped `request_time` as used until
  // request_time + window. kVerification if it is already recorded, kLimit ("busy") if the cache
  // is still full after forgetting the entries whose time has passed at `now`.
  Status Insert(std::string_view appliance_id, std::string_view nonce, SysTime request_time, SysTime now);

  std::size_t size() const;
  std::size_t max_entries() const { return max_entries_; }
  std::chrono::seconds window() const { return window_; }

 private:
  // (appliance id, nonce) as a 128-bit SipHash under a per-cache random key: 16 bytes and one
  // allocation per remembered request instead of two copies of a 70-byte string in two trees.
  // A false "replayed" needs a 128-bit collision of a keyed hash: not a practical event.
  struct Key {
    std::uint64_t hi = 0, lo = 0;
    bool operator==(const Key&) const = default;
  };
  struct KeyHash {
    std::size_t operator()(const Key& k) const { return static_cast<std::size_t>(k.lo); }
  };
  Key KeyOf(std::string_view appliance_id, std::string_view nonce) const;
  void EvictLocked(SysTime now);

  const std::size_t max_entries_;
  const std::chrono::seconds window_;
  std::array<std::uint8_t, 16> hash_key_{};
  mutable std::mutex mu_;
  std::unordered_set<Key, KeyHash> entries_;
  std::map<SysTime, std::vector<Key>> by_expiry_;  // one bucket per second of forget_at
};

class RequestVerifier {
 public:
  // `cache` must outlive the verifier. The skew window is the cache's window, so a nonce is
  // always remembered for as long as its timestamp would be accepted.
  RequestVerifier(const Clock& clock, ReplayCache& cache) : clock_(clock), cache_(cache), skew_(cache.window()) {}

  // Verifies one request signed by `appliance`. On failure `failed` (when given) says which
  // check refused it. Thread-safe.
  Status Verify(const RequestToSign& request, const RequestSignature& signature, const AppliancePublicKey& appliance,
                RequestCheck* failed = nullptr) const;

 private:
  const Clock& clock_;
  ReplayCache& cache_;
  std::chrono::seconds skew_;
};

}  // namespace upkeep::trust
