// The filesystem seam of the appliance agent. Every byte the agent persists (its store, the
// switch of a package's `current` link, image slots) goes through an Fs, so tests can replace it
// with FaultFs (fault_fs.hpp), which injects crashes at any operation and simulates power loss by
// dropping what was not fsynced. Production code uses RealFs.
//
// Contract: every call returns Status/Expected and names the path in its error; nothing throws.
// "Durable on return" means the data and the directory entry were fsynced. Implementations are
// safe to use from several threads for distinct files.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep::agent {

// A file opened for appending (logs).
class AppendFile {
 public:
  virtual ~AppendFile() = default;
  virtual Status Append(std::string_view data) = 0;
  virtual Status Sync() = 0;  // fdatasync: what was appended so far survives power loss
  virtual std::uint64_t size() const = 0;
};

// A file opened for writing from the start (large streamed files: image slots, downloads).
class WritableFile {
 public:
  virtual ~WritableFile() = default;
  virtual Status Write(std::span<const std::uint8_t> data) = 0;
  virtual Status Sync() = 0;
  virtual Status Close() = 0;  // idempotent; the destructor closes without syncing
};

class Fs {
 public:
  virtual ~Fs() = default;

  // Reading.
  virtual Expected<std::string> ReadFile(const std::filesystem::path& path, std::uint64_t max_bytes) = 0;
  virtual Expected<bool> Exists(const std::filesystem::path& path) = 0;  // without following a final symlink
  virtual Expected<std::vector<std::string>> ListDir(const std::filesystem::path& dir) = 0;  // names, sorted
  virtual Expected<std::uint64_t> FileSize(const std::filesystem::path& path) = 0;
  virtual Expected<std::filesystem::path> ReadSymlink(const std::filesystem::path& link) = 0;

  // Writing. WriteFileAtomic and ReplaceSymlink are durable on return.
  virtual Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644) = 0;
  virtual Expected<std::unique_ptr<AppendFile>> OpenForAppend(const std::filesystem::path& path) = 0;
  virtual Expected<std::unique_ptr<WritableFile>> OpenForWrite(const std::filesystem::path& path,
                                                               unsigned mode = 0644) = 0;
  virtual Status Truncate(const std::filesystem::path& path, std::uint64_t size) = 0;
  virtual Status Rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  virtual Status Remove(const std::filesystem::path& path) = 0;     // a file, symlink or empty dir; absent is ok
  virtual Status RemoveAll(const std::filesystem::path& path) = 0;  // absent is ok
  virtual Status CreateDirectories(const std::filesystem::path& dir, unsigned mode = 0755) = 0;
  // Points `link` at `target` atomically (temp symlink renamed over the old one, dir fsynced).
  virtual Status ReplaceSymlink(const std::filesystem::path& link, const std::filesystem::path& target) = 0;
  virtual Status SyncDir(const std::filesystem::path& dir) = 0;
  virtual Status SyncFile(const std::filesystem::path& path) = 0;
};

// POSIX calls, nothing else.
class RealFs final : public Fs {
 public:
  Expected<std::string> ReadFile(const std::filesystem::path& path, std::uint64_t max_bytes) override;
  Expected<bool> Exists(const std::filesystem::path& path) override;
  Expected<std::vector<std::string>> ListDir(const std::filesystem::path& dir) override;
  Expected<std::uint64_t> FileSize(const std::filesystem::path& path) override;
  Expected<std::filesystem::path> ReadSymlink(const std::filesystem::path& link) override;
  Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644) override;
  Expected<std::unique_ptr<AppendFile>> OpenForAppend(const std::filesystem::path& path) override;
  Expected<std::unique_ptr<WritableFile>> OpenForWrite(const std::filesystem::path& path, unsigned mode = 0644) override;
  Status Truncate(const std::filesystem::path& path, std::uint64_t size) override;
  Status Rename(const std::filesystem::path& from, const std::filesystem::path& to) override;
  Status Remove(const std::filesystem::path& path) override;
  Status RemoveAll(const std::filesystem::path& path) override;
  Status CreateDirectories(const std::filesystem::path& dir, unsigned mode = 0755) override;
  Status ReplaceSymlink(const std::filesystem::path& link, const std::filesystem::path& target) override;
  Status SyncDir(const std::filesystem::path& dir) override;
  Status SyncFile(const std::filesystem::path& path) override;

  static RealFs& Instance();
};

}  // namespace upkeep::agent
