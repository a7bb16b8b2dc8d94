#include "upkeep/common/hash.hpp"

#include <fcntl.h>
#include <openssl/evp.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace upkeep {

struct Hasher::Impl {
  EVP_MD_CTX* ctx = nullptr;
  const EVP_MD* md = nullptr;
};

Hasher::Hasher(HashAlgorithm algorithm) : impl_(std::make_unique<Impl>()) {
  impl_->md = algorithm == HashAlgorithm::kSha256 ? EVP_sha256() : EVP_sha512();
  impl_->ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(impl_->ctx, impl_->md, nullptr);
}

Hasher::~Hasher() { EVP_MD_CTX_free(impl_->ctx); }

void Hasher::Update(std::span<const std::uint8_t> data) {
  if (!data.empty()) EVP_DigestUpdate(impl_->ctx, data.data(), data.size());
}

Bytes Hasher::Finish() {
  Bytes out(static_cast<std::size_t>(EVP_MD_get_size(impl_->md)));
  unsigned int len = 0;
  EVP_DigestFinal_ex(impl_->ctx, out.data(), &len);
  EVP_DigestInit_ex(impl_->ctx, impl_->md, nullptr);
  return out;
}

Bytes Sha256(std::string_view data) {
  Hasher h;
  h.Update(data);
  return h.Finish();
}

std::string Sha256Hex(std::string_view data) { return ToHex(Sha256(data)); }

std::string Sha512Hex(std::string_view data) {
  Hasher h(HashAlgorithm::kSha512);
  h.Update(data);
  return h.FinishHex();
}

Expected<FileDigest> HashFile(const std::filesystem::path& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Errc::kIo, path.string() + ": " + std::strerror(errno));
  ::posix_fadvise(fd, 0, 0, POSIX_FADV_SEQUENTIAL);
  std::vector<std::uint8_t> buf(1 << 20);
  Hasher h;
  FileDigest d;
  for (;;) {
    ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      int e = errno;
      ::close(fd);
      return Error(Errc::kIo, path.string() + ": " + std::strerror(e));
    }
    if (n == 0) break;
    h.Update(std::span<const std::uint8_t>(buf.data(), static_cast<std::size_t>(n)));
    d.size += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  d.sha256_hex = h.FinishHex();
  return d;
}

}  // namespace upkeep
