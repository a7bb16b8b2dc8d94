#include "upkeep/tuf/metadata.hpp"

#include <algorithm>
#include <cctype>
#include <fstream>

#include "upkeep/common/bytes.hpp"

namespace upkeep::tuf {
namespace {

Error ParseError(const std::string& msg) { return Error(Errc::kParse, msg); }

std::string Short(std::string_view s) {
  // Names from hostile input are cut so an error message stays one short line.
  std::string out(s.substr(0, 64));
  if (s.size() > 64) out += "...";
  return out;
}

Expected<std::int64_t> GetPositiveInt(const Json& obj, const char* key) {
  UPK_TRY_ASSIGN(std::int64_t v, GetInt(obj, key));
  if (v < 1) return ParseError(std::string("field '") + key + "': must be >= 1");
  return v;
}

Expected<std::vector<std::string>> GetStringList(const Json& obj, const char* key, bool unique) {
  UPK_TRY_ASSIGN(const Json* arr, GetArray(obj, key));
  std::vector<std::string> out;
  std::set<std::string> seen;
  for (const auto& e : *arr) {
    if (!e.is_string()) return ParseError(std::string("field '") + key + "': entries must be strings");
    if (unique && !seen.insert(e.get<std::string>()).second) {
      return ParseError(std::string("field '") + key + "': duplicate entry '" + Short(e.get<std::string>()) + "'");
    }
    out.push_back(e.get<std::string>());
  }
  return out;
}

Expected<std::map<std::string, std::string>> GetHashes(const Json& obj) {
  UPK_TRY_ASSIGN(const Json* h, GetObject(obj, "hashes"));
  if (h->empty()) return ParseError("field 'hashes': must not be empty");
  std::map<std::string, std::string> out;
  for (auto it = h->begin(); it != h->end(); ++it) {
    if (!it->is_string()) return ParseError("field 'hashes': value of '" + Short(it.key()) + "' is not a string");
    out[it.key()] = it->get<std::string>();
  }
  return out;
}

Expected<RoleKeys> ParseRoleKeys(const Json& obj) {
  RoleKeys r;
  UPK_TRY_ASSIGN(r.keyids, GetStringList(obj, "keyids", /*unique=*/true));
  UPK_TRY_ASSIGN(r.threshold, GetPositiveInt(obj, "threshold"));
  return r;
}

Expected<KeyMap> ParseKeys(const Json& obj) {
  UPK_TRY_ASSIGN(const Json* keys, GetObject(obj, "keys"));
  KeyMap out;
  for (auto it = keys->begin(); it != keys->end(); ++it) {
    const Json& k = *it;
    // The structure must be right; an unsupported algorithm only makes the key unusable.
    if (!k.is_object() || !k.contains("keytype") || !k["keytype"].is_string() || !k.contains("scheme") ||
        !k["scheme"].is_string() || !k.contains("keyval") || !k["keyval"].is_object()) {
      return ParseError("key '" + Short(it.key()) + "': needs string 'keytype', string 'scheme' and object 'keyval'");
    }
    auto pk = packages::PublicKey::FromJson(k);
    if (pk) {
      out.emplace(it.key(), std::move(pk).value());
    } else {
      out.emplace(it.key(), std::nullopt);
    }
  }
  return out;
}

Status ParseCommon(const Json& s, const char* type, SignedCommon& out) {
  if (!s.is_object()) return ParseError("'signed' is not an object");
  UPK_TRY_ASSIGN(std::string t, GetString(s, "_type"));
  if (t != type) return ParseError("expected _type '" + std::string(type) + "', got '" + Short(t) + "'");
  UPK_TRY_ASSIGN(out.spec_version, GetString(s, "spec_version"));
  // "1.0", "1.0.31": digits only, major 1.
  {
    std::vector<std::string> parts;
    std::string cur;
    for (char c : out.spec_version) {
      if (c == '.') {
        parts.push_back(cur);
        cur.clear();
      } else {
        cur.push_back(c);
      }
    }
    parts.push_back(cur);
    bool ok = parts.size() == 2 || parts.size() == 3;
    for (const auto& p : parts) {
      ok = ok && !p.empty() && p.size() < 10 && std::all_of(p.begin(), p.end(), [](char c) { return c >= '0' && c <= '9'; });
    }
    if (!ok || parts[0] != "1") {
      return ParseError("unsupported spec_version '" + Short(out.spec_version) + "' (need 1.x)");
    }
  }
  UPK_TRY_ASSIGN(out.version, GetPositiveInt(s, "version"));
  UPK_TRY_ASSIGN(std::string expires, GetString(s, "expires"));
  auto t_exp = ParseTimestamp(expires);
  if (!t_exp) return ParseError("field 'expires': " + t_exp.error().message());
  out.expires = *t_exp;
  return OkStatus();
}

Expected<DelegatedRole> ParseDelegatedRole(const Json& j) {
  if (!j.is_object()) return ParseError("delegated role is not an object");
  DelegatedRole r;
  UPK_TRY_ASSIGN(r.name, GetString(j, "name"));
  auto fail = [&](const Error& e) { return e.Wrap("delegated role '" + Short(r.name) + "'"); };
  if (r.name.empty()) return ParseError("delegated role with an empty name");
  if (IsTopLevelRole(r.name)) return ParseError("delegated role may not be named '" + r.name + "'");
  auto keys = ParseRoleKeys(j);
  if (!keys) return fail(keys.error());
  r.keys = std::move(keys).value();
  auto term = GetBool(j, "terminating");
  if (!term) return fail(term.error());
  r.terminating = *term;
  bool has_paths = j.contains("paths");
  bool has_prefixes = j.contains("path_hash_prefixes");
  if (has_paths == has_prefixes) {
    return fail(ParseError("exactly one of 'paths' and 'path_hash_prefixes' must be given"));
  }
  if (has_paths) {
    auto p = GetStringList(j, "paths", /*unique=*/false);
    if (!p) return fail(p.error());
    r.paths = std::move(p).value();
  } else {
    auto p = GetStringList(j, "path_hash_prefixes", /*unique=*/false);
    if (!p) return fail(p.error());
    r.path_hash_prefixes = std::move(p).value();
  }
  return r;
}

Expected<Delegations> ParseDelegations(const Json& j) {
  if (!j.is_object()) return ParseError("'delegations' is not an object");
  if (j.contains("succinct_roles")) return ParseError("'delegations': succinct_roles (TAP 15) is not supported");
  Delegations d;
  UPK_TRY_ASSIGN(d.keys, ParseKeys(j));
  UPK_TRY_ASSIGN(const Json* roles, GetArray(j, "roles"));
  std::set<std::string> names;
  for (const auto& rj : *roles) {
    UPK_TRY_ASSIGN(DelegatedRole r, ParseDelegatedRole(rj));
    if (!names.insert(r.name).second) return ParseError("'delegations': duplicate role name '" + Short(r.name) + "'");
    d.roles.push_back(std::move(r));
  }
  return d;
}

// Matches one path segment (no '/') against one pattern segment. Backtracks only to the last
// '*', so the cost is O(len(name) * len(pattern)) even for hostile patterns.
bool MatchSegment(std::string_view name, std::string_view pat) {
  // Returns the index after a bracket expression at pat[p] == '[' and whether c matched,
  // or npos when the '[' has no closing ']' (then it is a literal '[').
  auto match_bracket = [&](std::size_t p, char c, bool& matched) -> std::size_t {
    std::size_t i = p + 1;
    bool negate = false;
    if (i < pat.size() && pat[i] == '!') {
      negate = true;
      ++i;
    }
    std::size_t start = i;
    bool found = false;
    while (i < pat.size() && (pat[i] != ']' || i == start)) {
      char lo = pat[i];
      if (i + 2 < pat.size() && pat[i + 1] == '-' && pat[i + 2] != ']') {
        char hi = pat[i + 2];
        if (static_cast<unsigned char>(lo) <= static_cast<unsigned char>(c) &&
            static_cast<unsigned char>(c) <= static_cast<unsigned char>(hi)) {
          found = true;
        }
        i += 3;
      } else {
        if (lo == c) found = true;
        ++i;
      }
    }
    if (i >= pat.size()) return std::string_view::npos;
    matched = found != negate;
    return i + 1;
  };

  std::size_t n = 0, p = 0;
  std::size_t star_p = std::string_view::npos, star_n = 0;
  while (n < name.size()) {
    if (p < pat.size()) {
      char pc = pat[p];
      if (pc == '*') {
        star_p = ++p;
        star_n = n;
        continue;
      }
      if (pc == '?') {
        ++p;
        ++n;
        continue;
      }
      if (pc == '[') {
        bool matched = false;
        std::size_t next = match_bracket(p, name[n], matched);
        if (next == std::string_view::npos) {
          if (name[n] == '[') {
            ++p;
            ++n;
            continue;
          }
        } else if (matched) {
          p = next;
          ++n;
          continue;
        }
      } else if (pc == name[n]) {
        ++p;
        ++n;
        continue;
      }
    }
    if (star_p == std::string_view::npos) return false;
    p = star_p;
    n = ++star_n;
  }
  while (p < pat.size() && pat[p] == '*') ++p;
  return p == pat.size();
}

std::vector<std::string_view> SplitSlash(std::string_view s) {
  std::vector<std::string_view> out;
  std::size_t start = 0;
  for (;;) {
    std::size_t pos = s.find('/', start);
    if (pos == std::string_view::npos) {
      out.push_back(s.substr(start));
      return out;
    }
    out.push_back(s.substr(start, pos - start));
    start = pos + 1;
  }
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

bool IsTopLevelRole(std::string_view name) {
  return name == kRootRole || name == kTimestampRole || name == kSnapshotRole || name == kTargetsRole;
}

// ---- DigestChecker ----

DigestChecker::DigestChecker(DigestChecker&&) noexcept = default;
DigestChecker& DigestChecker::operator=(DigestChecker&&) noexcept = default;
DigestChecker::~DigestChecker() = default;

Expected<DigestChecker> DigestChecker::Create(std::optional<std::uint64_t> length,
                                              const std::map<std::string, std::string>& hashes, std::string what) {
  DigestChecker c;
  c.what_ = std::move(what);
  c.length_ = length;
  for (const auto& [algo, hex] : hashes) {
    HashAlgorithm a;
    if (algo == "sha256") {
      a = HashAlgorithm::kSha256;
    } else if (algo == "sha512") {
      a = HashAlgorithm::kSha512;
    } else {
      return Error(Errc::kVerification, c.what_ + ": unsupported hash algorithm '" + Short(algo) + "'");
    }
    c.expected_.emplace_back(algo, Lower(hex));
    c.hashers_.push_back(std::make_unique<Hasher>(a));
  }
  return c;
}

void DigestChecker::Update(std::string_view chunk) {
  size_ += chunk.size();
  for (auto& h : hashers_) h->Update(chunk);
}

Status DigestChecker::Finish() {
  if (length_ && size_ != *length_) {
    return Error(Errc::kVerification, what_ + ": length " + std::to_string(size_) + " does not match the expected " +
                                          std::to_string(*length_));
  }
  for (std::size_t i = 0; i < hashers_.size(); ++i) {
    std::string got = hashers_[i]->FinishHex();
    if (got != expected_[i].second) {
      return Error(Errc::kVerification, what_ + ": " + expected_[i].first + " hash does not match");
    }
  }
  return OkStatus();
}

// ---- MetaFile / TargetFile ----

Expected<MetaFile> MetaFile::FromJson(const Json& json) {
  if (!json.is_object()) return ParseError("meta entry is not an object");
  MetaFile m;
  UPK_TRY_ASSIGN(m.version, GetPositiveInt(json, "version"));
  if (json.contains("length")) {
    UPK_TRY_ASSIGN(std::int64_t len, GetInt(json, "length"));
    if (len < 0) return ParseError("field 'length': must be >= 0");
    m.length = static_cast<std::uint64_t>(len);
  }
  if (json.contains("hashes")) {
    UPK_TRY_ASSIGN(m.hashes, GetHashes(json));
  }
  return m;
}

Json MetaFile::ToJson() const {
  Json j = {{"version", version}};
  if (length) j["length"] = *length;
  if (!hashes.empty()) j["hashes"] = hashes;
  return j;
}

Status MetaFile::VerifyLengthAndHashes(std::string_view data, const std::string& what) const {
  UPK_TRY_ASSIGN(DigestChecker c, DigestChecker::Create(length, hashes, what));
  c.Update(data);
  return c.Finish();
}

Expected<TargetFile> TargetFile::FromJson(const std::string& path, const Json& json) {
  if (!json.is_object()) return ParseError("target '" + Short(path) + "': not an object");
  TargetFile t;
  t.path = path;
  auto len = GetInt(json, "length");
  if (!len) return len.error().Wrap("target '" + Short(path) + "'");
  if (*len < 0) return ParseError("target '" + Short(path) + "': field 'length': must be >= 0");
  t.length = static_cast<std::uint64_t>(*len);
  auto hashes = GetHashes(json);
  if (!hashes) return hashes.error().Wrap("target '" + Short(path) + "'");
  t.hashes = std::move(hashes).value();
  if (json.contains("custom")) t.custom = json["custom"];
  return t;
}

Json TargetFile::ToJson() const {
  Json j = {{"length", length}, {"hashes", hashes}};
  if (!custom.is_null()) j["custom"] = custom;
  return j;
}

Status TargetFile::VerifyLengthAndHashes(std::string_view data) const {
  UPK_TRY_ASSIGN(DigestChecker c, DigestChecker::Create(length, hashes, "target '" + Short(path) + "'"));
  c.Update(data);
  return c.Finish();
}

Status TargetFile::VerifyFile(const std::filesystem::path& file) const {
  UPK_TRY_ASSIGN(DigestChecker c, DigestChecker::Create(length, hashes, "target '" + Short(path) + "'"));
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error(Errc::kNotFound, file.string() + ": cannot open");
  char buf[65536];
  // Never read more than one byte past the expected length: a huge file fails fast.
  while (c.size() <= length) {
    in.read(buf, sizeof buf);
    std::streamsize n = in.gcount();
    if (n <= 0) break;
    c.Update(std::string_view(buf, static_cast<std::size_t>(n)));
  }
  if (in.bad()) return Error(Errc::kIo, file.string() + ": read error");
  return c.Finish();
}

// ---- delegations ----

bool MatchPathPattern(std::string_view pattern, std::string_view target_path) {
  auto pp = SplitSlash(pattern);
  auto tp = SplitSlash(target_path);
  if (pp.size() != tp.size()) return false;
  for (std::size_t i = 0; i < pp.size(); ++i) {
    if (!MatchSegment(tp[i], pp[i])) return false;
  }
  return true;
}

bool DelegatedRole::IsDelegatedPath(std::string_view target_path) const {
  if (paths) {
    return std::any_of(paths->begin(), paths->end(),
                       [&](const std::string& p) { return MatchPathPattern(p, target_path); });
  }
  if (path_hash_prefixes) {
    std::string digest = Sha256Hex(target_path);
    return std::any_of(path_hash_prefixes->begin(), path_hash_prefixes->end(),
                       [&](const std::string& prefix) { return digest.compare(0, prefix.size(), prefix) == 0 && prefix.size() <= digest.size(); });
  }
  return false;
}

const DelegatedRole* Delegations::Find(std::string_view name) const {
  for (const auto& r : roles) {
    if (r.name == name) return &r;
  }
  return nullptr;
}

// ---- role types ----

Expected<Root> Root::FromJson(const Json& s) {
  Root r;
  UPK_TRY(ParseCommon(s, kType, r));
  if (s.contains("consistent_snapshot")) {
    UPK_TRY_ASSIGN(r.consistent_snapshot, GetBool(s, "consistent_snapshot"));
  }
  UPK_TRY_ASSIGN(r.keys, ParseKeys(s));
  UPK_TRY_ASSIGN(const Json* roles, GetObject(s, "roles"));
  for (auto it = roles->begin(); it != roles->end(); ++it) {
    if (!IsTopLevelRole(it.key())) return ParseError("'roles': unexpected role '" + Short(it.key()) + "'");
    if (!it->is_object()) return ParseError("'roles': role '" + it.key() + "' is not an object");
    auto keys = ParseRoleKeys(*it);
    if (!keys) return keys.error().Wrap("role '" + it.key() + "'");
    r.roles.emplace(it.key(), std::move(keys).value());
  }
  for (const char* name : {kRootRole, kTimestampRole, kSnapshotRole, kTargetsRole}) {
    if (!r.roles.count(name)) return ParseError(std::string("'roles': missing role '") + name + "'");
  }
  return r;
}

Expected<Timestamp> Timestamp::FromJson(const Json& s) {
  Timestamp t;
  UPK_TRY(ParseCommon(s, kType, t));
  UPK_TRY_ASSIGN(const Json* meta, GetObject(s, "meta"));
  auto it = meta->find("snapshot.json");
  if (it == meta->end()) return ParseError("'meta': missing 'snapshot.json'");
  auto m = MetaFile::FromJson(*it);
  if (!m) return m.error().Wrap("meta 'snapshot.json'");
  t.snapshot_meta = std::move(m).value();
  return t;
}

Expected<Snapshot> Snapshot::FromJson(const Json& s) {
  Snapshot sn;
  UPK_TRY(ParseCommon(s, kType, sn));
  UPK_TRY_ASSIGN(const Json* meta, GetObject(s, "meta"));
  for (auto it = meta->begin(); it != meta->end(); ++it) {
    auto m = MetaFile::FromJson(*it);
    if (!m) return m.error().Wrap("meta '" + Short(it.key()) + "'");
    sn.meta.emplace(it.key(), std::move(m).value());
  }
  return sn;
}

Expected<Targets> Targets::FromJson(const Json& s) {
  Targets t;
  UPK_TRY(ParseCommon(s, kType, t));
  UPK_TRY_ASSIGN(const Json* targets, GetObject(s, "targets"));
  for (auto it = targets->begin(); it != targets->end(); ++it) {
    UPK_TRY_ASSIGN(TargetFile f, TargetFile::FromJson(it.key(), *it));
    t.targets.emplace(it.key(), std::move(f));
  }
  if (s.contains("delegations")) {
    auto d = ParseDelegations(s["delegations"]);
    if (!d) return d.error();
    t.delegations = std::move(d).value();
  }
  return t;
}

// ---- signatures ----

VerificationResult CheckSignatures(const KeyMap& keys, const RoleKeys& role, const std::vector<Signature>& signatures,
                                   std::string_view message) {
  VerificationResult r;
  r.threshold = role.threshold;
  std::set<std::string> counted_keys;  // computed key ids: one key counts once
  for (const auto& keyid : role.keyids) {
    auto k = keys.find(keyid);
    if (k == keys.end() || !k->second) continue;
    const packages::PublicKey& key = *k->second;
    if (counted_keys.count(key.keyid())) continue;
    for (const auto& sig : signatures) {
      if (sig.keyid != keyid) continue;
      auto raw = FromHex(sig.sig);
      if (!raw || raw->empty()) continue;
      if (key.Verify(message, *raw)) {
        r.signed_keyids.insert(keyid);
        counted_keys.insert(key.keyid());
      }
      break;  // signature key ids are unique (Parse refuses duplicates)
    }
  }
  r.distinct_keys = counted_keys.size();
  return r;
}

template <typename T>
Expected<Metadata<T>> Metadata<T>::Parse(std::string_view bytes) {
  const std::string ctx = std::string(T::kType) + " metadata";
  auto json = ParseJson(bytes);
  if (!json) return json.error().Wrap(ctx);
  if (!json->is_object()) return ParseError(ctx + ": not a JSON object");
  Metadata<T> md;
  auto sigs = GetArray(*json, "signatures");
  if (!sigs) return sigs.error().Wrap(ctx);
  std::set<std::string> seen;
  for (const auto& sj : **sigs) {
    auto keyid = GetString(sj, "keyid");
    if (!keyid) return keyid.error().Wrap(ctx + ": signature");
    auto sig = GetString(sj, "sig");
    if (!sig) return sig.error().Wrap(ctx + ": signature");
    if (!seen.insert(*keyid).second) return ParseError(ctx + ": more than one signature by key '" + Short(*keyid) + "'");
    md.signatures.push_back(Signature{std::move(keyid).value(), std::move(sig).value()});
  }
  auto signed_json = GetObject(*json, "signed");
  if (!signed_json) return signed_json.error().Wrap(ctx);
  auto body = T::FromJson(**signed_json);
  if (!body) return body.error().Wrap(ctx);
  md.signed_body = std::move(body).value();
  auto canonical = CanonicalJson(**signed_json);
  if (!canonical) return ParseError(ctx + ": 'signed' has no canonical form (floats?)");
  md.signed_canonical = std::move(canonical).value();
  return md;
}

template struct Metadata<Root>;
template struct Metadata<Timestamp>;
template struct Metadata<Snapshot>;
template struct Metadata<Targets>;

}  // namespace upkeep::tuf
