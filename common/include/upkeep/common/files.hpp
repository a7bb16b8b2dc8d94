// File helpers with the safety rules every part follows: reads are bounded (a hostile file can't
// exhaust memory), writes are atomic (temp file, fsync, rename, fsync of the directory) so a
// crash never leaves a half-written file under the final name.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep {

// Reads a whole file, refusing (kLimit) one larger than max_bytes.
Expected<std::string> ReadFileBounded(const std::filesystem::path& path, std::uint64_t max_bytes);

// Writes data to path atomically with the given permission bits.
Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, unsigned mode = 0644);

// Writes all of data to fd, retrying short writes and EINTR; errors name `path`.
Status WriteAll(int fd, std::string_view data, const std::filesystem::path& path);

// Makes a fresh temporary sibling path next to `path` (same directory, so rename() is atomic).
std::filesystem::path TempSibling(const std::filesystem::path& path);

// fsyncs a directory so a rename inside it survives power loss.
Status SyncDirectory(const std::filesystem::path& dir);

}  // namespace upkeep
