// Signed documents: the envelope the director's assignments, licences (and later download keys)
// travel in. The same shape as TUF metadata:
//   {"signed": {"_type": TYPE, "expires": RFC3339, ...}, "signatures": [{"keyid": HEX, "sig": HEX}]}
// where each "sig" is an ed25519 signature over the OLPC canonical JSON of "signed" and "keyid"
// is the TUF key id of the signing key. Parsing is bounded (size, nesting, signature count) and
// refuses duplicate keys, so two readers can never disagree on what was signed. The "signed"
// object is kept exactly as parsed, so fields this version does not know survive a round trip
// and are covered by the signature.
//
// A SignedDocument is a plain value: safe to copy, and to read from several threads.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::trust {

constexpr std::size_t kMaxSignedDocumentBytes = 1u << 20;
constexpr std::size_t kMaxSignatures = 16;

struct DocumentSignature {
  std::string keyid;
  std::string sig_hex;
};

class SignedDocument {
 public:
  // Parses an envelope of at most max_bytes; checks shape only (no signature or expiry check).
  static Expected<SignedDocument> Parse(std::string_view text, std::size_t max_bytes = kMaxSignedDocumentBytes);
  // Signs `signed_part` (an object with "_type" and "expires") with `key`.
  static Expected<SignedDocument> Sign(const Json& signed_part, const packages::PrivateKey& key);

  // Adds one more signature (for documents that need several keys).
  Status AddSignature(const packages::PrivateKey& key);

  // Succeeds when a signature listed under key's key id is a valid signature of the canonical
  // "signed" object by that key. Other signatures are ignored, never an error.
  Status VerifySignature(const packages::PublicKey& key) const;
  // The full check a reader makes: signature by `key`, "_type" equal to `type`, and "expires"
  // later than clock.Now(). The error names the check that failed.
  Status Verify(const packages::PublicKey& key, std::string_view type, const Clock& clock) const;

  const Json& signed_part() const { return signed_; }
  const std::string& canonical_signed() const { return canonical_; }
  const std::vector<DocumentSignature>& signatures() const { return signatures_; }
  std::string type() const;

  // The envelope as JSON text (compact, so it fits in an HTTP header or a bundle file).
  std::string Serialize() const;

 private:
  Json signed_;
  std::string canonical_;
  std::vector<DocumentSignature> signatures_;
};

}  // namespace upkeep::trust
