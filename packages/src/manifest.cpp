#include "upkeep/packages/manifest.hpp"

#include <algorithm>
#include <set>

#include "upkeep/common/bytes.hpp"

namespace upkeep::packages {

const char* KindName(Kind kind) {
  switch (kind) {
    case Kind::kBase: return "base";
    case Kind::kSoftware: return "software";
    case Kind::kAddon: return "addon";
    case Kind::kClient: return "client";
  }
  return "software";
}

Expected<Kind> ParseKind(std::string_view text) {
  if (text == "base") return Kind::kBase;
  if (text == "software") return Kind::kSoftware;
  if (text == "addon") return Kind::kAddon;
  if (text == "client") return Kind::kClient;
  return Error(Errc::kParse, "kind '" + std::string(text.substr(0, 32)) + "' is not one of base, software, addon, client");
}

const char* EntryTypeName(EntryType type) {
  switch (type) {
    case EntryType::kFile: return "file";
    case EntryType::kDirectory: return "dir";
    case EntryType::kSymlink: return "symlink";
  }
  return "file";
}

bool IsValidPackageName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  auto alnum = [](char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); };
  if (!alnum(name[0])) return false;
  return std::all_of(name.begin(), name.end(), [&](char c) { return alnum(c) || c == '.' || c == '_' || c == '-'; });
}

Status CheckRelativePath(std::string_view path) {
  auto bad = [&](const char* why) {
    return Error(Errc::kUnsafe, "path '" + std::string(path.substr(0, 200)) + "': " + why);
  };
  if (path.empty()) return bad("empty");
  if (path.size() > kMaxPathLength) return bad("too long");
  if (path.front() == '/') return bad("absolute path");
  if (path.find('\0') != std::string_view::npos) return bad("contains a NUL byte");
  std::size_t start = 0;
  while (start <= path.size()) {
    std::size_t end = path.find('/', start);
    if (end == std::string_view::npos) end = path.size();
    std::string_view part = path.substr(start, end - start);
    if (part == "..") return bad("contains '..'");
    if (part == "." || part.empty()) {
      // A trailing slash on a directory is harmless; anything else is a non-normal path.
      if (!(part.empty() && end == path.size() && end > 0)) return bad("not a normalised relative path");
    }
    start = end + 1;
  }
  return OkStatus();
}

namespace {

Expected<PayloadEntry> ParseEntry(const Json& j) {
  PayloadEntry e;
  UPK_TRY_ASSIGN(e.path, GetString(j, "path"));
  if (!e.path.empty() && e.path.back() == '/') e.path.pop_back();
  UPK_TRY(CheckRelativePath(e.path));
  UPK_TRY_ASSIGN(std::string type, GetString(j, "type"));
  if (type == "file") {
    e.type = EntryType::kFile;
    UPK_TRY_ASSIGN(std::int64_t size, GetInt(j, "size"));
    if (size < 0) return Error(Errc::kParse, "field 'size' is negative");
    e.size = static_cast<std::uint64_t>(size);
    UPK_TRY_ASSIGN(e.sha256, GetString(j, "sha256"));
    if (e.sha256.size() != 64 || !FromHex(e.sha256).ok()) return Error(Errc::kParse, "field 'sha256' is not 64 hex digits");
    std::transform(e.sha256.begin(), e.sha256.end(), e.sha256.begin(), [](char c) { return static_cast<char>(std::tolower(c)); });
  } else if (type == "dir") {
    e.type = EntryType::kDirectory;
  } else if (type == "symlink") {
    e.type = EntryType::kSymlink;
    UPK_TRY_ASSIGN(e.target, GetString(j, "target"));
    if (e.target.empty() || e.target.size() > kMaxPathLength) return Error(Errc::kParse, "field 'target' is empty or too long");
  } else {
    return Error(Errc::kParse, "field 'type' must be file, dir or symlink");
  }
  if (j.contains("mode")) {
    UPK_TRY_ASSIGN(std::int64_t mode, GetInt(j, "mode"));
    if (mode < 0 || mode > 0777) return Error(Errc::kUnsafe, "mode " + std::to_string(mode) + " has bits beyond 0777 (set-uid, set-gid or sticky)");
    e.mode = static_cast<std::uint32_t>(mode);
  } else {
    e.mode = e.type == EntryType::kDirectory ? 0755 : 0644;
  }
  return e;
}

bool HasControlChar(std::string_view text) {
  return std::any_of(text.begin(), text.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
}

// Canonical JSON writes strings raw (only '"' and '\\' escaped), so a control character would make
// the signed manifest bytes unparseable by any strict JSON reader: refuse it up front.
bool HoldsControlChar(const Json& j) {
  if (j.is_string()) return HasControlChar(j.get_ref<const std::string&>());
  if (j.is_object()) {
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (HasControlChar(it.key()) || HoldsControlChar(it.value())) return true;
    }
  } else if (j.is_array()) {
    for (const auto& e : j) {
      if (HoldsControlChar(e)) return true;
    }
  }
  return false;
}

const std::set<std::string>& KnownFields() {
  static const std::set<std::string> k = {"name", "version", "kind", "requires", "upgrades_from",
                                          "client_upgrade", "settle_hours", "description", "payload"};
  return k;
}

}  // namespace

Expected<Manifest> Manifest::FromJson(const Json& j) {
  if (!j.is_object()) return Error(Errc::kParse, "manifest is not a JSON object");
  if (!CanonicalJson(j)) return Error(Errc::kParse, "manifest holds floating-point numbers, which cannot be signed canonically");
  if (HoldsControlChar(j)) {
    return Error(Errc::kParse, "manifest holds a control character (tab, newline, ...) in a string, which canonical JSON cannot carry");
  }
  Manifest m;
  UPK_TRY_ASSIGN(m.name, GetString(j, "name"));
  if (!IsValidPackageName(m.name)) {
    return Error(Errc::kParse, "field 'name': '" + m.name.substr(0, 64) + "' is not a valid package name ([a-z0-9._-], at most 64)");
  }
  UPK_TRY_ASSIGN(std::string version, GetString(j, "version"));
  {
    auto v = Version::Parse(version);
    if (!v) return v.error().Wrap("field 'version'");
    m.version = *v;
  }
  UPK_TRY_ASSIGN(std::string kind, GetString(j, "kind"));
  {
    auto k = ParseKind(kind);
    if (!k) return k.error().Wrap("field 'kind'");
    m.kind = *k;
  }
  if (j.contains("requires")) {
    UPK_TRY_ASSIGN(const Json* reqs, GetArray(j, "requires"));
    if (reqs->size() > 256) return Error(Errc::kLimit, "field 'requires': more than 256 entries");
    for (const auto& r : *reqs) {
      Requirement req;
      auto name = GetString(r, "name");
      if (!name) return name.error().Wrap("field 'requires'");
      if (!IsValidPackageName(*name)) return Error(Errc::kParse, "field 'requires': invalid package name");
      req.name = *name;
      auto mv = GetString(r, "min_version");
      if (!mv) return mv.error().Wrap("field 'requires'");
      auto v = Version::Parse(*mv);
      if (!v) return v.error().Wrap("field 'requires'");
      req.min_version = *v;
      m.requires_.push_back(std::move(req));
    }
  }
  if (j.contains("upgrades_from") && !j["upgrades_from"].is_null()) {
    UPK_TRY_ASSIGN(std::string uf, GetString(j, "upgrades_from"));
    auto v = Version::Parse(uf);
    if (!v) return v.error().Wrap("field 'upgrades_from'");
    m.upgrades_from = *v;
  }
  if (j.contains("client_upgrade")) {
    UPK_TRY_ASSIGN(m.client_upgrade, GetBool(j, "client_upgrade"));
  }
  if (j.contains("settle_hours")) {
    UPK_TRY_ASSIGN(std::int64_t h, GetInt(j, "settle_hours"));
    if (h < 0 || h > 24 * 365) return Error(Errc::kParse, "field 'settle_hours' must be between 0 and 8760");
    m.settle_hours = static_cast<std::uint32_t>(h);
  }
  if (j.contains("description")) {
    UPK_TRY_ASSIGN(m.description, GetString(j, "description"));
  }
  if (j.contains("payload")) {
    UPK_TRY_ASSIGN(const Json* entries, GetArray(j, "payload"));
    if (entries->size() > kMaxPayloadEntries) return Error(Errc::kLimit, "field 'payload': too many entries");
    std::set<std::string> seen;
    for (const auto& ej : *entries) {
      auto e = ParseEntry(ej);
      if (!e) return e.error().Wrap("payload entry " + std::to_string(m.payload.size()));
      if (!seen.insert(e->path).second) return Error(Errc::kParse, "payload entry '" + e->path + "' appears twice");
      m.payload.push_back(std::move(*e));
    }
  }
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (!KnownFields().count(it.key())) m.extra[it.key()] = it.value();
  }
  return m;
}

Expected<Manifest> Manifest::Parse(std::string_view text) {
  if (text.size() > kMaxManifestBytes) return Error(Errc::kLimit, "manifest larger than 16 MiB");
  UPK_TRY_ASSIGN(Json j, ParseJson(text));
  return FromJson(j);
}

Json Manifest::ToJson() const {
  Json j = extra;
  j["name"] = name;
  j["version"] = version.ToString();
  j["kind"] = KindName(kind);
  Json reqs = Json::array();
  for (const auto& r : requires_) reqs.push_back({{"name", r.name}, {"min_version", r.min_version.ToString()}});
  j["requires"] = reqs;
  if (upgrades_from) j["upgrades_from"] = upgrades_from->ToString();
  j["client_upgrade"] = client_upgrade;
  j["settle_hours"] = settle_hours;
  j["description"] = description;
  Json entries = Json::array();
  for (const auto& e : payload) {
    Json ej = {{"path", e.path}, {"type", EntryTypeName(e.type)}, {"mode", e.mode}};
    if (e.type == EntryType::kFile) {
      ej["size"] = e.size;
      ej["sha256"] = e.sha256;
    } else if (e.type == EntryType::kSymlink) {
      ej["target"] = e.target;
    }
    entries.push_back(std::move(ej));
  }
  j["payload"] = std::move(entries);
  return j;
}

std::string Manifest::Serialize() const {
  // FromJson refuses floats, and the fields we write are integers and strings, so this succeeds.
  return CanonicalJson(ToJson()).value();
}

std::uint64_t Manifest::PayloadBytes() const {
  std::uint64_t total = 0;
  for (const auto& e : payload) total += e.size;
  return total;
}

}  // namespace upkeep::packages
