// ByteSource over a regular file.
#include "upkeep/packages/source.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

namespace upkeep::packages {
namespace {

class FileSource final : public ByteSource {
 public:
  FileSource(int fd, std::string name) : fd_(fd), name_(std::move(name)) {}
  ~FileSource() override { ::close(fd_); }
  FileSource(const FileSource&) = delete;
  FileSource& operator=(const FileSource&) = delete;

  Expected<std::size_t> Read(std::span<std::uint8_t> buf) override {
    if (error_) return *error_;
    for (;;) {
      ssize_t n = ::read(fd_, buf.data(), buf.size());
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) {
        error_ = Error(Errc::kIo, name_ + ": " + std::strerror(errno));
        return *error_;
      }
      position_ += static_cast<std::uint64_t>(n);
      return static_cast<std::size_t>(n);
    }
  }
  std::uint64_t position() const override { return position_; }

 private:
  int fd_;
  std::string name_;
  std::uint64_t position_ = 0;
  std::optional<Error> error_;
};

}  // namespace

Expected<std::unique_ptr<ByteSource>> OpenFileSource(const std::filesystem::path& file) {
  int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    int e = errno;
    return Error(e == ENOENT ? Errc::kNotFound : Errc::kIo, file.string() + ": " + std::strerror(e));
  }
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    int e = errno;
    ::close(fd);
    return Error(Errc::kIo, file.string() + ": " + std::strerror(e));
  }
  if (!S_ISREG(st.st_mode)) {
    ::close(fd);
    return Error(Errc::kInvalidArgument, file.string() + ": not a regular file");
  }
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  return std::unique_ptr<ByteSource>(std::make_unique<FileSource>(fd, file.string()));
}

}  // namespace upkeep::packages
