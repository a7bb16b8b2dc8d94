#include "upkeep/trust/request_signing.hpp"

#include <sodium.h>

#include "encoding.hpp"

#include "upkeep/common/hash.hpp"
#include "upkeep/common/bytes.hpp"

namespace upkeep::trust {
namespace {

constexpr std::size_t kNonceBytes = 16;
constexpr std::size_t kSignatureHexChars = 128;

Error Refuse(RequestCheck check, RequestCheck* failed, Errc code, std::string message) {
  if (failed) *failed = check;
  return Error(code, std::move(message));
}

}  // namespace

const char* RequestCheckName(RequestCheck check) {
  switch (check) {
    case RequestCheck::kOk:
      return "ok";
    case RequestCheck::kMalformed:
      return "malformed_signature_headers";
    case RequestCheck::kWrongKey:
      return "wrong_appliance_key";
    case RequestCheck::kStaleTimestamp:
      return "stale_timestamp";
    case RequestCheck::kBadSignature:
      return "bad_signature";
    case RequestCheck::kReplayed:
      return "replayed_nonce";
    case RequestCheck::kBusy:
      return "busy";
  }
  return "unknown";
}

std::vector<std::pair<std::string, std::string>> RequestSignature::Headers() const {
  return {{kApplianceHeader, appliance_id},
          {kTimestampHeader, timestamp},
          {kNonceHeader, nonce},
          {kSignatureHeader, signature_hex}};
}

Expected<std::string> RequestCanonicalString(const RequestToSign& request, std::string_view timestamp,
                                             std::string_view nonce, std::string_view appliance_id) {
  if (request.method.empty() || request.method.size() > 16) return Error(Errc::kInvalidArgument, "bad HTTP method");
  for (char c : request.method) {
    if (c < 'A' || c > 'Z') return Error(Errc::kInvalidArgument, "HTTP method must be upper-case letters");
  }
  if (request.path_and_query.empty() || request.path_and_query.front() != '/' || request.path_and_query.size() > 8192) {
    return Error(Errc::kInvalidArgument, "request path must start with '/' and be at most 8192 bytes");
  }
  // Field separators must not appear inside a field, or two requests could sign the same bytes.
  for (std::string_view field : {request.path_and_query, timestamp, nonce, appliance_id}) {
    for (char c : field) {
      if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) {
        return Error(Errc::kInvalidArgument, "request field has a control character");
      }
    }
  }
  std::string out = "UPKEEP-REQUEST-V1\n";
  out.append(request.method).push_back('\n');
  out.append(request.path_and_query).push_back('\n');
  out.append(Sha256Hex(request.body)).push_back('\n');
  out.append(timestamp).push_back('\n');
  out.append(nonce).push_back('\n');
  out.append(appliance_id);
  return out;
}

Expected<RequestSignature> SignRequest(const ApplianceIdentity& identity, const RequestToSign& request,
                                       const Clock& clock, Random& random) {
  RequestSignature sig;
  sig.appliance_id = identity.appliance_id();
  sig.timestamp = FormatTimestamp(clock.Now());
  Bytes nonce = random.Generate(kNonceBytes);
  if (nonce.size() != kNonceBytes) return Error(Errc::kInternal, "random source returned a short nonce");
  sig.nonce = ToHex(nonce);
  UPK_TRY_ASSIGN(std::string canonical, RequestCanonicalString(request, sig.timestamp, sig.nonce, sig.appliance_id));
  sig.signature_hex = ToHex(identity.Sign(canonical));
  return sig;
}

ReplayCache::ReplayCache(std::size_t max_entries, std::chrono::seconds window)
    : max_entries_(max_entries), window_(window) {
  internal::EnsureSodium();
  randombytes_buf(hash_key_.data(), hash_key_.size());
}

ReplayCache::Key ReplayCache::KeyOf(std::string_view appliance_id, std::string_view nonce) const {
  // Length-prefixed so ("ab", "c") and ("a", "bc") differ.
  std::string input;
  input.reserve(appliance_id.size() + nonce.size() + 1);
  input.push_back(static_cast<char>(appliance_id.size() & 0xff));
  input.append(appliance_id).append(nonce);
  std::array<std::uint8_t, crypto_shorthash_siphashx24_BYTES> out{};
  crypto_shorthash_siphashx24(out.data(), reinterpret_cast<const unsigned char*>(input.data()), input.size(),
                              hash_key_.data());
  Key k;
  for (int i = 0; i < 8; ++i) {
    k.hi = (k.hi << 8) | out[i];
    k.lo = (k.lo << 8) | out[8 + i];
  }
  return k;
}

void ReplayCache::EvictLocked(SysTime now) {
  while (!by_expiry_.empty() && by_expiry_.begin()->first < now) {
    for (const Key& k : by_expiry_.begin()->second) entries_.erase(k);
    by_expiry_.erase(by_expiry_.begin());
  }
}

Status ReplayCache::Insert(std::string_view appliance_id, std::string_view nonce, SysTime request_time, SysTime now) {
  const Key key = KeyOf(appliance_id, nonce);
  const SysTime forget_at = request_time + window_;
  std::lock_guard<std::mutex> lock(mu_);
  EvictLocked(now);
  if (entries_.count(key) != 0) {
    return Error(Errc::kVerification, "nonce " + std::string(nonce) + " of appliance " + std::string(appliance_id) +
                                          " was already used (replayed request)");
  }
  if (entries_.size() >= max_entries_) {
    return Error(Errc::kLimit,
                 "busy: replay cache is full (" + std::to_string(max_entries_) + " recent requests); try again later");
  }
  entries_.insert(key);
  by_expiry_[forget_at].push_back(key);
  return OkStatus();
}

std::size_t ReplayCache::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return entries_.size();
}

Status RequestVerifier::Verify(const RequestToSign& request, const RequestSignature& signature,
                               const AppliancePublicKey& appliance, RequestCheck* failed) const {
  if (failed) *failed = RequestCheck::kOk;
  if (!IsValidApplianceId(signature.appliance_id)) {
    return Refuse(RequestCheck::kMalformed, failed, Errc::kInvalidArgument,
                  std::string(kApplianceHeader) + " is not an appliance id");
  }
  if (signature.nonce.size() != 2 * kNonceBytes || !IsLowerHex(signature.nonce)) {
    return Refuse(RequestCheck::kMalformed, failed, Errc::kInvalidArgument,
                  std::string(kNonceHeader) + " is not 32 lower-case hex digits");
  }
  if (signature.signature_hex.size() != kSignatureHexChars || !IsLowerHex(signature.signature_hex)) {
    return Refuse(RequestCheck::kMalformed, failed, Errc::kInvalidArgument,
                  std::string(kSignatureHeader) + " is not 128 lower-case hex digits");
  }
  auto stamped = ParseTimestamp(signature.timestamp);
  if (!stamped) {
    return Refuse(RequestCheck::kMalformed, failed, Errc::kInvalidArgument,
                  std::string(kTimestampHeader) + ": " + stamped.error().message());
  }
  auto canonical = RequestCanonicalString(request, signature.timestamp, signature.nonce, signature.appliance_id);
  if (!canonical) return Refuse(RequestCheck::kMalformed, failed, Errc::kInvalidArgument, canonical.error().message());

  if (signature.appliance_id != appliance.appliance_id()) {
    return Refuse(
        RequestCheck::kWrongKey, failed, Errc::kVerification,
        "appliance id " + signature.appliance_id + " does not belong to the key of " + appliance.appliance_id());
  }
  const SysTime now = clock_.Now();
  const auto offset = *stamped - now;
  if (offset > skew_ || offset < -skew_) {
    return Refuse(RequestCheck::kStaleTimestamp, failed, Errc::kVerification,
                  "request timestamp " + signature.timestamp + " is " + std::to_string(offset.count()) +
                      " s away from the server clock (" + FormatTimestamp(now) + "), more than the allowed " +
                      std::to_string(skew_.count()) + " s: check the appliance clock and NTP");
  }
  auto sig = FromHex(signature.signature_hex);
  if (!sig || !appliance.signing_key().Verify(*canonical, *sig)) {
    return Refuse(RequestCheck::kBadSignature, failed, Errc::kVerification,
                  "bad request signature from appliance " + signature.appliance_id);
  }
  if (auto inserted = cache_.Insert(signature.appliance_id, signature.nonce, *stamped, now); !inserted) {
    const bool busy = inserted.error().code() == Errc::kLimit;
    return Refuse(busy ? RequestCheck::kBusy : RequestCheck::kReplayed, failed, inserted.error().code(),
                  inserted.error().message());
  }
  return OkStatus();
}

}  // namespace upkeep::trust
