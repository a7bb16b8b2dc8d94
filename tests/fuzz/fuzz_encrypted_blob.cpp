// The streaming blob decryptor (OpenEncryptedBlob) on arbitrary bytes as the blob, with a fixed
// content key (bytes 0x00..0x1f; the seed corpus is encrypted with it). The expectation is the
// input's own length and SHA-256, so inputs get past the end checks and exercise decryption.
// Every third input (by size) is read as a package through OpenEncryptedPackage instead. Must
// never crash, hang or allocate without bound, and never serve more plaintext than the blob holds.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>
#include <vector>

#include "upkeep/common/hash.hpp"
#include "upkeep/trust/payload.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const upkeep::trust::ContentKey key = [] {
    std::uint8_t raw[upkeep::trust::ContentKey::kBytes];
    for (std::size_t i = 0; i < sizeof raw; ++i) raw[i] = static_cast<std::uint8_t>(i);
    return std::move(upkeep::trust::ContentKey::FromBytes(raw)).value();
  }();
  // The API takes a path: an anonymous in-memory file, named through /proc/self/fd.
  int fd = ::memfd_create("fuzz_encrypted_blob", MFD_CLOEXEC);
  if (fd < 0) std::abort();
  for (std::size_t done = 0; done < size;) {
    ssize_t n = ::write(fd, data + done, size - done);
    if (n <= 0) std::abort();
    done += static_cast<std::size_t>(n);
  }
  upkeep::trust::BlobExpectation expect;
  expect.length = size;
  expect.sha256_hex = upkeep::Sha256Hex(std::string_view(reinterpret_cast<const char*>(data), size));
  const std::string path = "/proc/self/fd/" + std::to_string(fd);
  if (size % 3 == 0) {
    // Every third input goes through the package reader too (seed p.upk.blob is a real package).
    auto reader = upkeep::trust::OpenEncryptedPackage(path, key, expect);
    if (reader) {
      reader->SkipSignatureCheck();
      for (;;) {
        auto entry = reader->NextEntry();
        if (!entry || !*entry) break;
        for (;;) {
          auto chunk = reader->ReadData();
          if (!chunk || chunk->empty()) break;
        }
      }
      if (reader->package_bytes() > size) std::abort();
    }
    ::close(fd);
    return 0;
  }
  auto source = upkeep::trust::OpenEncryptedBlob(path, key, expect);
  if (source) {
    std::vector<std::uint8_t> buf(size % 2 ? 4093 : 1u << 20);  // both the copying and the direct path
    std::uint64_t served = 0;
    for (;;) {
      auto n = (*source)->Read(buf);
      if (!n || *n == 0) break;
      served += *n;
    }
    // Plaintext is never larger than the blob.
    if (served > size) std::abort();
  }
  ::close(fd);
  return 0;
}
