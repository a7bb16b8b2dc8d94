// Builds the entries of an air-gapped bundle in the core tests' world (core_world.hpp) the way the
// portal does: the vendor's TUF metadata (sorted by name), the signed assignments, the blobs of the
// named releases. Shared by the import tests and the updates page's air-gapped panel tests.
#pragma once

#include <algorithm>
#include <string>
#include <utility>
#include <vector>

#include "core_world.hpp"
#include "upkeep/bundle/bundle.hpp"

namespace upkeep::agent {
namespace {

inline std::vector<bundle::EntrySource> BundleEntries(
    Vendor& vendor, const std::vector<std::pair<std::string, std::string>>& assignments,
    const std::vector<std::string>& releases) {
  std::vector<bundle::EntrySource> entries;
  std::vector<fs::path> meta;
  for (const auto& e : fs::directory_iterator(vendor.repo_dir() / "metadata")) meta.push_back(e.path());
  std::sort(meta.begin(), meta.end());
  for (const auto& m : meta) {
    bundle::EntrySource s;
    s.info.type = bundle::EntryType::kMetadata;
    s.info.name = m.filename().string();
    s.data = ReadAll(m);
    entries.push_back(std::move(s));
  }
  for (const auto& [id, text] : assignments) {
    bundle::EntrySource s;
    s.info.type = bundle::EntryType::kAssignment;
    s.info.name = id;
    s.data = text;
    entries.push_back(std::move(s));
  }
  for (const auto& r : releases) {
    const Release& rel = vendor.Get(r);
    bundle::EntrySource s;
    s.info.type = bundle::EntryType::kBlob;
    s.info.name = rel.step.sha256;
    s.info.length = rel.step.length;
    s.info.sha256 = rel.step.sha256;
    s.file = rel.blob;
    entries.push_back(std::move(s));
  }
  return entries;
}

}  // namespace
}  // namespace upkeep::agent
