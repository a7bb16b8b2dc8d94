#include "upkeep/common/files.hpp"
#include "upkeep/tuf/fetcher.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

namespace upkeep::tuf {

Expected<std::string> Fetcher::Fetch(const std::string& url, std::uint64_t max_bytes) {
  std::string body;
  auto st = Stream(url, max_bytes, [&](std::string_view chunk) -> Status {
    // The fetcher enforces the cap too; this keeps a buggy fetcher from growing us unbounded.
    if (body.size() + chunk.size() > max_bytes) {
      return Error(Errc::kLimit, url + ": more than " + std::to_string(max_bytes) + " bytes");
    }
    body.append(chunk);
    return OkStatus();
  });
  if (!st) return st.error();
  return body;
}

Status Fetcher::DownloadToFile(const std::string& url, std::uint64_t max_bytes, const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return Error(Errc::kIo, file.string() + ": " + std::strerror(errno));
  std::uint64_t total = 0;
  auto st = Stream(url, max_bytes, [&](std::string_view chunk) -> Status {
    total += chunk.size();
    if (total > max_bytes) return Error(Errc::kLimit, url + ": more than " + std::to_string(max_bytes) + " bytes");
    return WriteAll(fd, chunk, file);
  });
  if (st && ::fsync(fd) != 0) st = Error(Errc::kIo, file.string() + ": " + std::strerror(errno));
  if (::close(fd) != 0 && st) st = Error(Errc::kIo, file.string() + ": " + std::strerror(errno));
  if (!st) ::unlink(file.c_str());
  return st;
}

}  // namespace upkeep::tuf
