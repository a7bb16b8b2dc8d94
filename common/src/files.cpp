#include "upkeep/common/files.hpp"

#include <fcntl.h>
#include <sodium.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "upkeep/common/bytes.hpp"

namespace upkeep {
namespace {
Error IoError(const std::filesystem::path& path, int err) {
  return Error(Errc::kIo, path.string() + ": " + std::strerror(err));
}
}  // namespace

Expected<std::string> ReadFileBounded(const std::filesystem::path& path, std::uint64_t max_bytes) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, path.string() + ": " + std::strerror(e));
  }
  std::string out;
  char buf[65536];
  for (;;) {
    ssize_t n = ::read(fd, buf, sizeof buf);
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return IoError(path, e);
    }
    if (n == 0) break;
    if (out.size() + static_cast<std::uint64_t>(n) > max_bytes) {
      ::close(fd);
      return Error(Errc::kLimit, path.string() + ": larger than the limit of " + std::to_string(max_bytes) + " bytes");
    }
    out.append(buf, static_cast<std::size_t>(n));
  }
  ::close(fd);
  return out;
}

std::filesystem::path TempSibling(const std::filesystem::path& path) {
  unsigned char rnd[8];
  randombytes_buf(rnd, sizeof rnd);
  auto name = "." + path.filename().string() + ".tmp-" + ToHex(std::span<const std::uint8_t>(rnd, sizeof rnd));
  return path.parent_path() / name;
}

Status SyncDirectory(const std::filesystem::path& dir) {
  int fd = ::open(dir.empty() ? "." : dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return IoError(dir, errno);
  ::fsync(fd);
  ::close(fd);
  return OkStatus();
}

Status WriteAll(int fd, std::string_view data, const std::filesystem::path& path) {
  const char* p = data.data();
  std::size_t left = data.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      return IoError(path, errno);
    }
    p += n;
    left -= static_cast<std::size_t>(n);
  }
  return OkStatus();
}

Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, unsigned mode) {
  auto tmp = TempSibling(path);
  int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0) return IoError(tmp, errno);
  if (auto written = WriteAll(fd, data, path); !written) {
    ::close(fd);
    ::unlink(tmp.c_str());
    return written.error();
  }
  ::fchmod(fd, mode);
  if (::fsync(fd) != 0 || ::close(fd) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return IoError(path, e);
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    int e = errno;
    ::unlink(tmp.c_str());
    return IoError(path, e);
  }
  return SyncDirectory(path.parent_path());
}

}  // namespace upkeep
