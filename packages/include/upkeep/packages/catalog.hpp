// The release catalog the planner reads: every known release (a packages::Manifest), indexed by
// package name and sorted by version, with the source each one came from (a file path or
// "manifest #N") so errors can name it.
//
// A catalog is immutable once built; building refuses a duplicate (name, version) with an error
// naming both sources, and loading a directory is bounded (files, releases and bytes) so a
// hostile directory cannot exhaust memory. Lookups are const and safe to share between threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/packages/manifest.hpp"

namespace upkeep::packages {

// Bounds on what a catalog may hold.
struct CatalogLimits {
  std::size_t max_releases = 100000;                 // also bounds the files a directory may list
  std::uint64_t max_total_bytes = std::uint64_t{512} << 20;  // summed manifest bytes read from disk
};

class Catalog {
 public:
  struct Release {
    Manifest manifest;
    std::string source;  // where it came from, for error messages
  };

  Catalog() = default;

  // Builds from manifests; their sources are "manifest #N" (0-based position in the vector).
  static Expected<Catalog> FromManifests(std::vector<Manifest> manifests, const CatalogLimits& limits = {});
  // Builds from releases that already carry their source.
  static Expected<Catalog> FromReleases(std::vector<Release> releases, const CatalogLimits& limits = {});
  // Loads every "*.manifest.json" and "*.upk" regular file directly inside `dir` (not recursive).
  // A file that can't be read or parsed is an error naming the file.
  static Expected<Catalog> LoadDirectory(const std::filesystem::path& dir, const CatalogLimits& limits = {});

  // The releases of `name`, sorted by ascending version; empty if the name is unknown.
  std::span<const Release> Releases(std::string_view name) const;
  // The release (name, version), or nullptr.
  const Release* Find(std::string_view name, const Version& version) const;
  // The newest release of `name`, or nullptr.
  const Release* Newest(std::string_view name) const;
  // Every package name, sorted.
  std::vector<std::string> Names() const;

  std::size_t size() const { return size_; }
  bool empty() const { return size_ == 0; }

 private:
  std::map<std::string, std::vector<Release>, std::less<>> by_name_;
  std::size_t size_ = 0;
};

}  // namespace upkeep::packages
