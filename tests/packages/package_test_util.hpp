// Helpers for the .upk tests: temp directories, files, tree comparison, and hand-built (possibly
// hostile) tar archives written directly with libarchive, bypassing WritePackage's checks.
#pragma once

#include <archive.h>
#include <archive_entry.h>
#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include "upkeep/common/hash.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::packages::testing {

namespace fs = std::filesystem;

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "upk-test-XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    // Tests make read-only directories; give the owner write access back before removing.
    for (auto it = fs::recursive_directory_iterator(path_, ec); !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
      if (it->is_directory(ec) && !it->is_symlink(ec)) ::chmod(it->path().c_str(), 0700);
    }
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }
  fs::path operator/(const std::string& p) const { return path_ / p; }

 private:
  fs::path path_;
};

inline void WriteFile(const fs::path& p, const std::string& data, unsigned mode = 0644) {
  fs::create_directories(p.parent_path());
  std::ofstream(p, std::ios::binary) << data;
  ::chmod(p.c_str(), mode);
}

inline std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

// Every entry below `root`: relative path -> "type mode content-or-target".
inline std::map<std::string, std::string> Snapshot(const fs::path& root) {
  std::map<std::string, std::string> out;
  for (auto it = fs::recursive_directory_iterator(root); it != fs::recursive_directory_iterator(); ++it) {
    struct stat st {};
    ::lstat(it->path().c_str(), &st);
    std::string rel = it->path().lexically_relative(root).string();
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    if (S_ISLNK(st.st_mode)) {
      out[rel] = std::string("symlink -> ") + fs::read_symlink(it->path()).string();
    } else if (S_ISDIR(st.st_mode)) {
      out[rel] = std::string("dir ") + mode;
    } else {
      out[rel] = std::string("file ") + mode + " " + Sha256Hex(ReadAll(it->path()));
    }
  }
  return out;
}

inline std::vector<std::string> ListDir(const fs::path& dir) {
  std::vector<std::string> names;
  for (const auto& e : fs::directory_iterator(dir)) names.push_back(e.path().filename().string());
  std::sort(names.begin(), names.end());
  return names;
}

// One tar entry exactly as given. type: 'f' file, 'd' dir, 'l' symlink, 'h' hard link,
// 'c' char device, 'b' block device, 'p' FIFO, 's' socket.
struct RawEntry {
  std::string name;
  char type = 'f';
  std::string data;
  unsigned mode = 0644;
  std::string link;
  long long size_override = -1;  // header size differing from the data
};

inline RawEntry RawFile(std::string name, std::string data, unsigned mode = 0644) {
  return RawEntry{std::move(name), 'f', std::move(data), mode, "", -1};
}

// Writes a pax tar with exactly these entries; `filter` "gzip" compresses it.
inline void WriteRawTar(const fs::path& path, const std::vector<RawEntry>& entries, const std::string& filter = "") {
  archive* a = archive_write_new();
  archive_write_set_format_pax_restricted(a);
  if (filter == "gzip") archive_write_add_filter_gzip(a);
  ASSERT_EQ(archive_write_open_filename(a, path.c_str()), ARCHIVE_OK);
  for (const auto& e : entries) {
    archive_entry* ae = archive_entry_new();
    archive_entry_copy_pathname(ae, e.name.c_str());
    archive_entry_set_mode(ae, e.mode);
    switch (e.type) {
      case 'f': archive_entry_set_filetype(ae, AE_IFREG); break;
      case 'd': archive_entry_set_filetype(ae, AE_IFDIR); break;
      case 'l': archive_entry_set_filetype(ae, AE_IFLNK); archive_entry_copy_symlink(ae, e.link.c_str()); break;
      case 'h': archive_entry_set_filetype(ae, AE_IFREG); archive_entry_copy_hardlink(ae, e.link.c_str()); break;
      case 'c': archive_entry_set_filetype(ae, AE_IFCHR); archive_entry_set_rdev(ae, makedev(1, 3)); break;
      case 'b': archive_entry_set_filetype(ae, AE_IFBLK); archive_entry_set_rdev(ae, makedev(8, 0)); break;
      case 'p': archive_entry_set_filetype(ae, AE_IFIFO); break;
      case 's': archive_entry_set_filetype(ae, AE_IFSOCK); break;
    }
    archive_entry_set_perm(ae, e.mode & 07777);
    archive_entry_set_size(ae, e.size_override >= 0 ? e.size_override : static_cast<long long>(e.data.size()));
    archive_write_header(a, ae);
    if (!e.data.empty()) archive_write_data(a, e.data.data(), e.data.size());
    archive_entry_free(ae);
  }
  ASSERT_EQ(archive_write_close(a), ARCHIVE_OK);
  archive_write_free(a);
}

inline PayloadEntry FileEntry(std::string path, const std::string& data, std::uint32_t mode = 0644) {
  PayloadEntry e;
  e.path = std::move(path);
  e.type = EntryType::kFile;
  e.size = data.size();
  e.sha256 = Sha256Hex(data);
  e.mode = mode;
  return e;
}
inline PayloadEntry DirEntry(std::string path, std::uint32_t mode = 0755) {
  PayloadEntry e;
  e.path = std::move(path);
  e.type = EntryType::kDirectory;
  e.mode = mode;
  return e;
}
inline PayloadEntry LinkEntry(std::string path, std::string target) {
  PayloadEntry e;
  e.path = std::move(path);
  e.type = EntryType::kSymlink;
  e.mode = 0777;
  e.target = std::move(target);
  return e;
}

inline Manifest BaseManifest(std::vector<PayloadEntry> payload = {}) {
  Manifest m;
  m.name = "site";
  m.version = Version::Parse("8.1.0").value();
  m.kind = Kind::kSoftware;
  m.description = "test package";
  m.payload = std::move(payload);
  return m;
}

// A package written by hand: manifest.json (given bytes), manifest.sig signed by `signers`, then
// exactly `payload` (names as given, e.g. "payload/x").
inline void WriteRawPackage(const fs::path& path, const std::string& manifest_bytes, const std::vector<PrivateKey>& signers,
                            const std::vector<RawEntry>& payload) {
  std::vector<RawEntry> all = {RawFile("manifest.json", manifest_bytes),
                               RawFile("manifest.sig", SerializeSignatureFile(SignManifestBytes(manifest_bytes, signers)))};
  all.insert(all.end(), payload.begin(), payload.end());
  WriteRawTar(path, all);
}

}  // namespace upkeep::packages::testing
