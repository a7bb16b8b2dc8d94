#include "upkeep/packages/catalog.hpp"

#include <algorithm>
#include <system_error>

#include "upkeep/common/files.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages {

namespace {

bool EndsWith(std::string_view text, std::string_view suffix) {
  return text.size() >= suffix.size() && text.substr(text.size() - suffix.size()) == suffix;
}

// Roughly what a parsed manifest costs in memory, to bound manifests that don't come from a
// plain file of known size.
std::uint64_t ApproxBytes(const Manifest& m) {
  std::uint64_t total = 256 + m.name.size() + m.description.size();
  for (const auto& r : m.requires_) total += 32 + r.name.size();
  for (const auto& e : m.payload) total += 128 + e.path.size() + e.target.size();
  return total;
}

}  // namespace

Expected<Catalog> Catalog::FromManifests(std::vector<Manifest> manifests, const CatalogLimits& limits) {
  if (manifests.size() > limits.max_releases) {
    return Error(Errc::kLimit, "catalog: " + std::to_string(manifests.size()) + " releases exceed the limit of " +
                                   std::to_string(limits.max_releases));
  }
  std::vector<Release> releases;
  releases.reserve(manifests.size());
  for (std::size_t i = 0; i < manifests.size(); ++i) {
    releases.push_back(Release{std::move(manifests[i]), "manifest #" + std::to_string(i)});
  }
  return FromReleases(std::move(releases), limits);
}

Expected<Catalog> Catalog::FromReleases(std::vector<Release> releases, const CatalogLimits& limits) {
  if (releases.size() > limits.max_releases) {
    return Error(Errc::kLimit, "catalog: " + std::to_string(releases.size()) + " releases exceed the limit of " +
                                   std::to_string(limits.max_releases));
  }
  Catalog catalog;
  for (auto& r : releases) {
    std::string name = r.manifest.name;
    catalog.by_name_[name].push_back(std::move(r));
  }
  for (auto& [name, list] : catalog.by_name_) {
    std::stable_sort(list.begin(), list.end(),
                     [](const Release& a, const Release& b) { return a.manifest.version < b.manifest.version; });
    for (std::size_t i = 1; i < list.size(); ++i) {
      if (list[i].manifest.version == list[i - 1].manifest.version) {
        // Sources in sorted order so the message does not depend on the input order.
        const std::string& first = std::min(list[i - 1].source, list[i].source);
        const std::string& second = std::max(list[i - 1].source, list[i].source);
        return Error(Errc::kInvalidArgument, "catalog: duplicate release " + name + " " +
                                                 list[i].manifest.version.ToString() + " in " + first + " and " +
                                                 second);
      }
    }
    for (std::size_t i = 1; i < list.size(); ++i) {
      if (list[i].manifest.kind != list[0].manifest.kind) {
        return Error(Errc::kInvalidArgument,
                     "catalog: package " + name + " has kind " + KindName(list[0].manifest.kind) + " in " +
                         list[0].source + " but kind " + KindName(list[i].manifest.kind) + " in " + list[i].source);
      }
    }
    catalog.size_ += list.size();
  }
  return catalog;
}

Expected<Catalog> Catalog::LoadDirectory(const std::filesystem::path& dir, const CatalogLimits& limits) {
  namespace fs = std::filesystem;
  std::error_code ec;
  auto status = fs::status(dir, ec);
  if (ec || !fs::exists(status)) {
    return Error(Errc::kNotFound, "catalog directory '" + dir.string() + "' does not exist");
  }
  if (!fs::is_directory(status)) {
    return Error(Errc::kInvalidArgument, "catalog '" + dir.string() + "' is not a directory");
  }
  std::vector<fs::path> files;
  fs::directory_iterator it(dir, ec);
  if (ec) return Error(Errc::kIo, "catalog directory '" + dir.string() + "': " + ec.message());
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    if (ec) return Error(Errc::kIo, "catalog directory '" + dir.string() + "': " + ec.message());
    std::string fname = it->path().filename().string();
    if (!EndsWith(fname, ".manifest.json") && !EndsWith(fname, ".upk")) continue;
    std::error_code type_ec;
    if (!it->is_regular_file(type_ec)) continue;
    if (files.size() >= limits.max_releases) {
      return Error(Errc::kLimit, "catalog directory '" + dir.string() + "': more than " +
                                     std::to_string(limits.max_releases) + " release files");
    }
    files.push_back(it->path());
  }
  if (ec) return Error(Errc::kIo, "catalog directory '" + dir.string() + "': " + ec.message());
  std::sort(files.begin(), files.end());

  std::vector<Release> releases;
  releases.reserve(files.size());
  std::uint64_t total = 0;
  auto over_budget = [&](const fs::path& file) {
    return Error(Errc::kLimit, file.string() + ": catalog manifests exceed " +
                                   std::to_string(limits.max_total_bytes >> 20) + " MiB in total");
  };
  for (const auto& file : files) {
    Manifest manifest;
    if (EndsWith(file.filename().string(), ".upk")) {
      // Only the manifest is read (no signature check): enough to plan, never to trust.
      auto m = ReadPackageManifest(file);
      if (!m) return m.error().Wrap(file.string());
      manifest = std::move(*m);
      total += ApproxBytes(manifest);
      if (total > limits.max_total_bytes) return over_budget(file);
    } else {
      std::error_code size_ec;
      auto size = fs::file_size(file, size_ec);
      if (!size_ec) {
        total += size;
        if (total > limits.max_total_bytes) return over_budget(file);
      }
      auto text = ReadFileBounded(file, kMaxManifestBytes);
      if (!text) return text.error().Wrap(file.string());
      auto m = Manifest::Parse(*text);
      if (!m) return m.error().Wrap(file.string());
      manifest = std::move(*m);
    }
    releases.push_back(Release{std::move(manifest), file.string()});
  }
  return FromReleases(std::move(releases), limits);
}

std::span<const Catalog::Release> Catalog::Releases(std::string_view name) const {
  auto it = by_name_.find(name);
  if (it == by_name_.end()) return {};
  return it->second;
}

const Catalog::Release* Catalog::Find(std::string_view name, const Version& version) const {
  auto list = Releases(name);
  auto it = std::lower_bound(list.begin(), list.end(), version,
                             [](const Release& r, const Version& v) { return r.manifest.version < v; });
  if (it == list.end() || it->manifest.version != version) return nullptr;
  return &*it;
}

const Catalog::Release* Catalog::Newest(std::string_view name) const {
  auto list = Releases(name);
  return list.empty() ? nullptr : &list.back();
}

std::vector<std::string> Catalog::Names() const {
  std::vector<std::string> names;
  names.reserve(by_name_.size());
  for (const auto& [name, list] : by_name_) names.push_back(name);
  return names;
}

}  // namespace upkeep::packages
