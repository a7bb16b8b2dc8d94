// Driver for bench/install/run.sh (not a product tool).
//
//   bench_install --encrypt IN.upk OUT.blob KEYFILE [CHUNK_BYTES]
//       encrypts IN.upk to OUT.blob with the 32-byte raw content key in KEYFILE (a fresh key is
//       written there, 0600, when it does not exist), prints "<blob sha256> <blob length>".
//   bench_install BLOB KEYFILE SHA256 LENGTH TRUSTED.pub DEST [--no-fsync]
//       OpenEncryptedPackage -> VerifySignatures -> ExtractFromReader into DEST; prints what it
//       installed. Exit 0 on success, 1 on a verification failure, 2 on bad usage or I/O.
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/files.hpp"
#include "upkeep/packages/extract.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/payload.hpp"

namespace {

using namespace upkeep;

int Fail(const Error& e) {
  std::fprintf(stderr, "bench_install: %s\n", e.message().c_str());
  return e.ExitCode() == 1 ? 1 : 2;
}

int Usage() {
  std::fprintf(stderr,
               "usage: bench_install --encrypt IN.upk OUT.blob KEYFILE [CHUNK_BYTES]\n"
               "       bench_install BLOB KEYFILE SHA256 LENGTH TRUSTED.pub DEST [--no-fsync]\n");
  return 2;
}

Expected<trust::ContentKey> LoadKey(const char* path) {
  UPK_TRY_ASSIGN(std::string raw, ReadFileBounded(path, trust::ContentKey::kBytes));
  return trust::ContentKey::FromBytes(AsBytes(raw));
}

int Encrypt(int argc, char** argv) {
  if (argc != 5 && argc != 6) return Usage();
  std::error_code ec;
  if (!std::filesystem::exists(argv[4], ec)) {
    auto fresh = trust::ContentKey::Generate();
    const auto bytes = fresh.bytes();
    if (auto s = WriteFileAtomic(argv[4], std::string_view(reinterpret_cast<const char*>(bytes.data()), bytes.size()), 0600); !s) {
      return Fail(s.error());
    }
  }
  auto key = LoadKey(argv[4]);
  if (!key) return Fail(key.error());
  trust::EncryptOptions options;
  if (argc == 6) options.chunk_bytes = static_cast<std::uint32_t>(std::strtoul(argv[5], nullptr, 10));
  auto info = trust::EncryptFile(argv[2], argv[3], *key, options);
  if (!info) return Fail(info.error());
  std::printf("%s %llu\n", info->blob_sha256_hex.c_str(), static_cast<unsigned long long>(info->blob_bytes));
  return 0;
}

int Install(int argc, char** argv) {
  if (argc != 7 && argc != 8) return Usage();
  packages::ExtractOptions extract;
  if (argc == 8) {
    if (std::string_view(argv[7]) != "--no-fsync") return Usage();
    extract.fsync = false;
  }
  auto key = LoadKey(argv[2]);
  if (!key) return Fail(key.error());
  trust::BlobExpectation expect;
  expect.sha256_hex = argv[3];
  expect.length = std::strtoull(argv[4], nullptr, 10);
  auto trusted = packages::LoadPublicKey(argv[5]);
  if (!trusted) return Fail(trusted.error());

  auto reader = trust::OpenEncryptedPackage(argv[1], *key, expect);
  if (!reader) return Fail(reader.error());
  if (auto v = reader->VerifySignatures({*trusted}); !v) return Fail(v.error());
  auto result = packages::ExtractFromReader(*reader, argv[6], {}, extract);
  if (!result) return Fail(result.error());
  std::printf("installed %zu entries, %llu payload bytes from a %llu-byte package\n", result->entries,
              static_cast<unsigned long long>(result->payload_bytes),
              static_cast<unsigned long long>(result->package_bytes));
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc >= 2 && std::string_view(argv[1]) == "--encrypt") return Encrypt(argc, argv);
  return Install(argc, argv);
}
