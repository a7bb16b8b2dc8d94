// The package manifest: what a package is, what it needs, how it may be applied, and the exact
// size and SHA-256 of every payload entry. The manifest is the signed part of a package; since
// it pins every payload digest, one signature covers the whole package.
//
// Unknown top-level fields are kept in `extra` and written back unchanged, so newer publishers
// can add fields that older readers pass through.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/version.hpp"

namespace upkeep::packages {

enum class Kind { kBase, kSoftware, kAddon, kClient };
const char* KindName(Kind kind);
Expected<Kind> ParseKind(std::string_view text);

struct Requirement {
  std::string name;
  Version min_version;
};

enum class EntryType { kFile, kDirectory, kSymlink };
const char* EntryTypeName(EntryType type);

struct PayloadEntry {
  std::string path;         // relative, '/'-separated, no "." or ".." components
  EntryType type = EntryType::kFile;
  std::uint64_t size = 0;   // files only
  std::string sha256;       // files only, lower-case hex
  std::uint32_t mode = 0644;  // permission bits only (no set-uid/set-gid/sticky)
  std::string target;       // symlinks only, must stay inside the payload
};

// Bounds on what a manifest may declare; hostile manifests are refused before any work.
constexpr std::uint64_t kMaxManifestBytes = 16u << 20;
constexpr std::size_t kMaxPayloadEntries = 200000;
constexpr std::size_t kMaxPathLength = 1024;

struct Manifest {
  std::string name;
  Version version;
  Kind kind = Kind::kSoftware;
  std::vector<Requirement> requires_;
  std::optional<Version> upgrades_from;  // unset: any older installed version may upgrade
  bool client_upgrade = false;
  std::uint32_t settle_hours = 0;
  std::string description;
  std::vector<PayloadEntry> payload;
  Json extra = Json::object();  // unknown fields, kept verbatim

  static Expected<Manifest> FromJson(const Json& json);
  static Expected<Manifest> Parse(std::string_view text);
  Json ToJson() const;
  // The canonical JSON bytes: what is stored in a package and signed.
  std::string Serialize() const;

  std::uint64_t PayloadBytes() const;
  std::string Id() const { return name + "-" + version.ToString(); }
};

// Package names: 1-64 of [a-z0-9._-], starting with a letter or digit.
bool IsValidPackageName(std::string_view name);
// Relative payload path check shared by the manifest parser and the extractor.
Status CheckRelativePath(std::string_view path);

}  // namespace upkeep::packages
