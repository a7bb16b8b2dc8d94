// FaultFs: an Fs for tests that wraps RealFs on a real directory (its root) and can (1) inject a
// crash at any mutating operation and (2) simulate power loss by putting the directory back into
// what a disk would hold after the power was cut: only what was fsynced survives.
//
// Power-loss model (strict, per inode and per directory, like LevelDB's fault-injection env):
//   - File content: what survives is the content as of the file's last Sync/SyncFile (or the
//     content it had when FaultFs took its snapshot). A file never synced survives empty.
//   - Directory entries: what survives is the entry set as of the directory's last SyncDir (or
//     the snapshot). A create, rename or removal not followed by SyncDir of the directory it
//     touched is undone: a new name vanishes, a removed name comes back (with its inode's synced
//     content), a rename leaves the old name in place. A rename across directories whose target
//     directory was synced but whose source was not leaves both names (a copy each).
//   - A new directory survives only if its parent was synced after the mkdir.
//   - WriteFileAtomic and ReplaceSymlink sync before returning, so they survive once returned.
// At construction (and after SimulatePowerLoss) everything under the root counts as durable.
// Everything the code under test writes under the root must go through this FaultFs (paths
// outside the root are refused with kInvalidArgument, except SyncDir/CreateDirectories of the
// root's ancestors, which pass through); files created behind its back are not
// tracked and do not survive SimulatePowerLoss (the store's lock file is such a file: harmless).
//
// Crash points: every mutating operation (each step of WriteFileAtomic/ReplaceSymlink: create,
// write, sync, rename, dir sync; Append, Write, Sync, Truncate, Rename, Remove, RemoveAll,
// CreateDirectories, SyncDir, SyncFile, OpenForAppend, OpenForWrite) counts one; operations()
// returns the count. After CrashAfter(n), the (n+1)-th further mutating operation and every
// operation after it (reads too) fail with kIo "injected crash at operation N (OP PATH)", as if
// the process had been killed. With SetTornWrites(true), the Append/Write that hits the crash
// first writes half of its bytes (a process killed inside write(2)). Restart() revives the Fs
// without losing anything (SIGKILL only); SimulatePowerLoss() also revives it.
//
// Threads: all operations are serialised by one mutex, so it is safe from several threads.
// Handles (AppendFile/WritableFile) must not outlive the FaultFs, and must be destroyed before
// SimulatePowerLoss (it rebuilds the directory; the model is the only thing that survives).
#pragma once

#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>

#include "upkeep/agent/fs.hpp"

namespace upkeep::agent {

class FaultFs final : public Fs {
 public:
  // Snapshots everything under `root` (which must exist) as durable. Construction does not fail:
  // an unreadable root makes every later mutating operation fail with kInternal naming it.
  explicit FaultFs(std::filesystem::path root);
  ~FaultFs() override;
  FaultFs(const FaultFs&) = delete;
  FaultFs& operator=(const FaultFs&) = delete;

  const std::filesystem::path& root() const { return root_; }

  // Fault injection.
  void CrashAfter(std::uint64_t n);       // crash at the (n+1)-th mutating operation from now
  void SetTornWrites(bool on);            // the crashing Append/Write writes half its bytes first
  bool crashed() const;                   // an injected crash has happened
  std::uint64_t operations() const;       // mutating operations performed so far (not refused ones)
  void Restart();                         // clears the crash and the crash point; keeps all data
  // Rewrites the root to its durable state (see the model above), re-snapshots it, and clears
  // the crash. Errors only if the real directory cannot be rewritten.
  Status SimulatePowerLoss();

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

  struct Model;  // the inode/directory model (fault_fs.cpp)

 private:
  friend class FaultAppendFile;
  friend class FaultWritableFile;
  // Counts a mutating operation or refuses it (crash); caller holds mu_.
  Status BeginOp(const char* op, const std::filesystem::path& path, bool* crashing_now = nullptr);
  Status CheckAlive(const char* op, const std::filesystem::path& path);  // for reads
  Status CreateSymlink(const std::filesystem::path& link, const std::filesystem::path& target);
  void RecordFileSync(std::uint64_t inode, std::string content);

  std::filesystem::path root_;
  RealFs real_;
  mutable std::mutex mu_;
  std::unique_ptr<Model> model_;
  std::uint64_t ops_ = 0;
  std::optional<std::uint64_t> crash_at_;
  bool dead_ = false;
  bool torn_writes_ = false;
};

}  // namespace upkeep::agent
