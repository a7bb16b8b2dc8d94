// manifest.sig in and out, and the layout rules a manifest must meet before extraction.
#include <string>
#include <unordered_map>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {

Expected<std::vector<Signature>> ParseSignatureFile(std::string_view text) {
  auto bad = [](const std::string& why) { return Error(Errc::kVerification, "manifest.sig: " + why); };
  if (text.size() > kMaxSignatureFileBytes) {
    return Error(Errc::kLimit, "manifest.sig: larger than " + std::to_string(kMaxSignatureFileBytes) + " bytes");
  }
  auto json = ParseJson(text);
  if (!json) return bad(json.error().message());
  auto list = GetArray(*json, "signatures");
  if (!list) return bad(list.error().message());
  if ((*list)->size() > kMaxSignatures) {
    return Error(Errc::kLimit, "manifest.sig: more than " + std::to_string(kMaxSignatures) + " signatures");
  }
  std::vector<Signature> out;
  for (const auto& item : **list) {
    auto keyid = GetString(item, "keyid");
    auto sig = GetString(item, "sig");
    if (!keyid || !sig) return bad("signature " + std::to_string(out.size()) + ": needs string fields 'keyid' and 'sig'");
    // Key ids are SHA-256 hex; RSA-4096 signatures are 1024 hex digits. Anything longer is junk.
    if (keyid->empty() || keyid->size() > 128) return bad("signature " + std::to_string(out.size()) + ": bad key id length");
    if (sig->size() > 2048 || !FromHex(*sig)) return bad("signature " + std::to_string(out.size()) + ": 'sig' is not hex");
    out.push_back({std::move(*keyid), std::move(*sig)});
  }
  return out;
}

std::string SerializeSignatureFile(const std::vector<Signature>& signatures) {
  Json list = Json::array();
  for (const auto& s : signatures) list.push_back({{"keyid", s.keyid}, {"sig", s.sig_hex}});
  // Strings and arrays only: canonical form always exists.
  return CanonicalJson(Json{{"signatures", std::move(list)}}).value();
}

std::vector<Signature> SignManifestBytes(std::string_view manifest_bytes, const std::vector<PrivateKey>& signers) {
  std::vector<Signature> out;
  for (const auto& key : signers) out.push_back({key.keyid(), ToHex(key.Sign(manifest_bytes))});
  return out;
}

Status CheckSymlinkTarget(std::string_view link_path, std::string_view target) {
  auto bad = [&](const char* why) {
    return Error(Errc::kUnsafe, "symlink '" + std::string(link_path.substr(0, 200)) + "' -> '" +
                                    std::string(target.substr(0, 200)) + "': " + why);
  };
  if (target.empty()) return bad("empty target");
  if (target.size() > kMaxPathLength) return bad("target too long");
  if (target.find('\0') != std::string_view::npos) return bad("target contains a NUL byte");
  if (target.front() == '/') return bad("absolute target leaves the payload");
  std::size_t depth = 0;  // directories above the link, inside the payload
  for (char c : link_path) depth += c == '/';
  // Only leading ".." are allowed: "x/.." would resolve through x, which may itself be a symlink.
  std::size_t ups = 0;
  bool named = false;
  std::size_t start = 0;
  while (start <= target.size()) {
    std::size_t end = target.find('/', start);
    if (end == std::string_view::npos) end = target.size();
    std::string_view part = target.substr(start, end - start);
    if (part == "..") {
      if (named) return bad("'..' after a name component");
      if (++ups > depth) return bad("target leaves the payload");
    } else if (!part.empty() && part != ".") {
      named = true;
    }
    start = end + 1;
  }
  return OkStatus();
}

Status CheckPayloadLayout(const Manifest& manifest) {
  std::unordered_map<std::string_view, EntryType> leaves;  // files and symlinks: nothing may lie below them
  for (const auto& e : manifest.payload) {
    if (e.type != EntryType::kDirectory) leaves.emplace(e.path, e.type);
  }
  for (const auto& e : manifest.payload) {
    auto named = [&](const std::string& why) {
      return Error(Errc::kUnsafe, "payload entry '" + e.path.substr(0, 200) + "': " + why);
    };
    if (e.mode > 0777) return named("mode has bits beyond 0777");
    if (e.type == EntryType::kSymlink) {
      auto s = CheckSymlinkTarget(e.path, e.target);
      if (!s) return s.error();
    }
    for (std::size_t pos = e.path.find('/'); pos != std::string::npos; pos = e.path.find('/', pos + 1)) {
      std::string_view parent(e.path.data(), pos);
      auto it = leaves.find(parent);
      if (it != leaves.end()) {
        return named(std::string("lies below ") + (it->second == EntryType::kSymlink ? "symlink" : "file") + " '" +
                     std::string(parent) + "'");
      }
    }
  }
  return OkStatus();
}

}  // namespace upkeep::packages
