#include "upkeep/trust/signed_document.hpp"

#include "encoding.hpp"

namespace upkeep::trust {

Expected<SignedDocument> SignedDocument::Parse(std::string_view text, std::size_t max_bytes) {
  if (text.size() > max_bytes) {
    return Error(Errc::kLimit, "signed document of " + std::to_string(text.size()) + " bytes exceeds the limit of " +
                                   std::to_string(max_bytes));
  }
  UPK_TRY_ASSIGN(Json json, ParseJson(text));
  if (!json.is_object()) return Error(Errc::kParse, "signed document is not a JSON object");
  for (auto it = json.begin(); it != json.end(); ++it) {
    if (it.key() != "signed" && it.key() != "signatures") {
      return Error(Errc::kParse, "signed document has an unexpected top-level field '" + it.key().substr(0, 64) + "'");
    }
  }
  UPK_TRY_ASSIGN(const Json* signed_part, GetObject(json, "signed"));
  UPK_TRY_ASSIGN(const Json* sigs, GetArray(json, "signatures"));
  if (sigs->size() > kMaxSignatures) {
    return Error(Errc::kLimit, "signed document has more than " + std::to_string(kMaxSignatures) + " signatures");
  }
  SignedDocument doc;
  for (const Json& s : *sigs) {
    DocumentSignature sig;
    UPK_TRY_ASSIGN(sig.keyid, GetString(s, "keyid"));
    UPK_TRY_ASSIGN(sig.sig_hex, GetString(s, "sig"));
    doc.signatures_.push_back(std::move(sig));
  }
  UPK_TRY_ASSIGN(std::string type, GetString(*signed_part, "_type"));
  (void)type;
  UPK_TRY_ASSIGN(std::string expires, GetString(*signed_part, "expires"));
  if (auto t = ParseTimestamp(expires); !t) return t.error().Wrap("field 'expires'");
  auto canonical = CanonicalJson(*signed_part);
  if (!canonical) return Error(Errc::kParse, "signed part cannot be written as canonical JSON (floats?)");
  doc.canonical_ = std::move(canonical).value();
  doc.signed_ = *signed_part;
  return doc;
}

Expected<SignedDocument> SignedDocument::Sign(const Json& signed_part, const packages::PrivateKey& key) {
  if (!signed_part.is_object()) return Error(Errc::kInvalidArgument, "signed part is not a JSON object");
  UPK_TRY_ASSIGN(std::string type, GetString(signed_part, "_type"));
  (void)type;
  UPK_TRY_ASSIGN(std::string expires, GetString(signed_part, "expires"));
  UPK_TRY(ParseTimestamp(expires));
  try {
    (void)signed_part.dump();  // Serialize must not throw later: strings have to be valid UTF-8
  } catch (const Json::exception&) {
    return Error(Errc::kInvalidArgument, "signed part has a string that is not valid UTF-8");
  }
  SignedDocument doc;
  UPK_TRY_ASSIGN(doc.canonical_, CanonicalJson(signed_part));
  doc.signed_ = signed_part;
  UPK_TRY(doc.AddSignature(key));
  return doc;
}

Status SignedDocument::AddSignature(const packages::PrivateKey& key) {
  for (const auto& s : signatures_) {
    if (s.keyid == key.keyid()) return Error(Errc::kInvalidArgument, "document already signed by key " + key.keyid());
  }
  if (signatures_.size() >= kMaxSignatures) return Error(Errc::kLimit, "too many signatures");
  signatures_.push_back({key.keyid(), ToHex(key.Sign(canonical_))});
  return OkStatus();
}

Status SignedDocument::VerifySignature(const packages::PublicKey& key) const {
  bool listed = false;
  for (const auto& s : signatures_) {
    if (s.keyid != key.keyid()) continue;
    listed = true;
    auto sig = FromHex(s.sig_hex);
    if (sig && key.Verify(canonical_, *sig)) return OkStatus();
  }
  if (!listed) return Error(Errc::kVerification, "no signature by trusted key " + key.keyid());
  return Error(Errc::kVerification, "bad signature for trusted key " + key.keyid());
}

Status SignedDocument::Verify(const packages::PublicKey& key, std::string_view expected_type,
                              const Clock& clock) const {
  UPK_TRY(VerifySignature(key));
  const std::string actual = type();
  if (actual != expected_type) {
    return Error(Errc::kVerification,
                 "document type '" + actual.substr(0, 64) + "' is not '" + std::string(expected_type) + "'");
  }
  // Parse and Sign both checked the timestamp, so this cannot fail here.
  auto expires = ParseTimestamp(signed_["expires"].get<std::string>());
  if (!expires) return expires.error();
  if (*expires <= clock.Now()) {
    return Error(Errc::kVerification, "document '" + actual + "' expired at " + FormatTimestamp(*expires) + " (now " +
                                          FormatTimestamp(clock.Now()) + ")");
  }
  return OkStatus();
}

std::string SignedDocument::type() const {
  auto it = signed_.find("_type");
  return it != signed_.end() && it->is_string() ? it->get<std::string>() : std::string();
}

std::string SignedDocument::Serialize() const {
  Json sigs = Json::array();
  for (const auto& s : signatures_) sigs.push_back({{"keyid", s.keyid}, {"sig", s.sig_hex}});
  // Escaped JSON (canonical JSON would leave control characters raw); keys come out sorted, so
  // the same document always serializes to the same bytes. Parse and Sign checked UTF-8.
  return Json{{"signatures", std::move(sigs)}, {"signed", signed_}}.dump();
}

}  // namespace upkeep::trust
