// Payload encryption throughput against `openssl dgst -sha256` of the same file (the hash speed
// limit of this CPU, the reference docs/benchmarks.md uses). Not a test: it prints figures.
//   bench_trust_payload [--size-mib 256] [--runs 5] [--dir /dev/shm]
// Runs alternate (openssl, encrypt, decrypt) and medians are reported. Encrypt includes hashing
// the blob for TUF; both include the final fsync (a no-op on tmpfs, real disk writes elsewhere).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/trust/payload.hpp"

namespace {

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

template <typename F>
double Seconds(F&& f) {
  auto t0 = std::chrono::steady_clock::now();
  f();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

int main(int argc, char** argv) {
  using namespace upkeep;
  std::size_t size_mib = 256;
  int runs = 5;
  std::filesystem::path dir = std::filesystem::exists("/dev/shm") ? "/dev/shm" : "/tmp";
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--size-mib")
      size_mib = std::stoul(argv[i + 1]);
    else if (flag == "--runs")
      runs = std::stoi(argv[i + 1]);
    else if (flag == "--dir")
      dir = argv[i + 1];
    else {
      std::fprintf(stderr, "usage: %s [--size-mib N] [--runs N] [--dir DIR]\n", argv[0]);
      return 2;
    }
  }
  dir /= "upk-bench-payload-" + std::to_string(::getpid());
  std::filesystem::create_directories(dir);
  const auto plain = dir / "payload.upk";
  const auto blob = dir / "payload.enc";
  const auto out = dir / "payload.out";
  {
    std::ofstream f(plain, std::ios::binary);
    for (std::size_t i = 0; i < size_mib; ++i) {
      Bytes block = SystemRandom::Instance().Generate(1 << 20);
      f.write(reinterpret_cast<const char*>(block.data()), static_cast<std::streamsize>(block.size()));
    }
  }
  const std::string openssl = "openssl dgst -sha256 '" + plain.string() + "' > /dev/null";
  auto key = trust::ContentKey::Generate();
  std::vector<double> t_openssl, t_enc, t_dec;
  bool ok = true;
  for (int r = 0; r < runs && ok; ++r) {
    std::filesystem::remove(blob);
    std::filesystem::remove(out);
    t_openssl.push_back(Seconds([&] { ok = ok && std::system(openssl.c_str()) == 0; }));
    t_enc.push_back(Seconds([&] {
      auto info = trust::EncryptFile(plain, blob, key);
      if (!info) std::fprintf(stderr, "encrypt: %s\n", info.error().message().c_str());
      ok = ok && info.ok();
    }));
    t_dec.push_back(Seconds([&] {
      auto n = trust::DecryptFile(blob, out, key);
      if (!n) std::fprintf(stderr, "decrypt: %s\n", n.error().message().c_str());
      ok = ok && n.ok();
    }));
  }
  std::filesystem::remove_all(dir);
  if (!ok) return 1;
  const double mib = static_cast<double>(size_mib);
  const double o = Median(t_openssl), e = Median(t_enc), d = Median(t_dec);
  std::printf("file: %zu MiB in %s, %d runs, medians\n", size_mib, dir.parent_path().c_str(), runs);
  std::printf("openssl dgst -sha256: %.3f s  %.0f MiB/s\n", o, mib / o);
  std::printf("encrypt (+sha256):    %.3f s  %.0f MiB/s  %.2fx openssl time\n", e, mib / e, e / o);
  std::printf("decrypt:              %.3f s  %.0f MiB/s  %.2fx openssl time\n", d, mib / d, d / o);
  return 0;
}
