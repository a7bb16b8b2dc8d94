// SHA-256 and SHA-512 over memory, streams and files, through OpenSSL's EVP (which uses the
// CPU's SHA extensions where present: verification speed is bounded by this).
// A Hasher is single-threaded; create one per stream.
#pragma once

#include <filesystem>
#include <memory>
#include <span>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/error.hpp"

namespace upkeep {

enum class HashAlgorithm { kSha256, kSha512 };

class Hasher {
 public:
  explicit Hasher(HashAlgorithm algorithm = HashAlgorithm::kSha256);
  ~Hasher();
  Hasher(const Hasher&) = delete;
  Hasher& operator=(const Hasher&) = delete;

  void Update(std::span<const std::uint8_t> data);
  void Update(std::string_view data) { Update(AsBytes(data)); }
  // Finishes the hash and returns the raw digest; the Hasher is reset for reuse.
  Bytes Finish();
  std::string FinishHex() { return ToHex(Finish()); }

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

std::string Sha256Hex(std::string_view data);
Bytes Sha256(std::string_view data);
std::string Sha512Hex(std::string_view data);

// Hashes a file in fixed-size chunks (constant memory); also returns its size.
struct FileDigest {
  std::uint64_t size = 0;
  std::string sha256_hex;
};
Expected<FileDigest> HashFile(const std::filesystem::path& path);

}  // namespace upkeep
