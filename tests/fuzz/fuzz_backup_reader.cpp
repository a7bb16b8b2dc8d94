// Fuzzes the .upkbak reader without a password: header parsing and bounds, plain framing and its
// digest, and tar entry validation (the whole verification pass). Nothing is ever written.
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <string>

#include "upkeep/agent/backup.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  int fd = ::memfd_create("fuzz_backup_reader", MFD_CLOEXEC);
  if (fd < 0) return 0;
  std::size_t done = 0;
  while (done < size) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  (void)upkeep::agent::InspectBackupFile(path);
  (void)upkeep::agent::VerifyBackupFile(path, std::nullopt);
  ::close(fd);
  return 0;
}
