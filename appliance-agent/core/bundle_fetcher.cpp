// MakeDirFetcher (agent_internal.hpp): TUF metadata from a directory instead of the network.
#include <fstream>

#include "agent_internal.hpp"

namespace upkeep::agent::internal {
namespace {

bool SafeName(const std::string& n) {
  if (n.empty() || n.size() > 200 || n[0] == '.') return false;
  for (char c : n) {
    const bool ok =
        (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

class DirFetcher final : public tuf::Fetcher {
 public:
  explicit DirFetcher(std::filesystem::path dir) : dir_(std::move(dir)) {}

  Status Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override {
    const auto slash = url.rfind('/');
    const std::string name = slash == std::string::npos ? url : url.substr(slash + 1);
    if (!SafeName(name)) return Error(Errc::kNotFound, url + ": not in the bundle");
    const auto file = dir_ / name;
    std::error_code ec;
    if (!std::filesystem::is_regular_file(file, ec)) return Error(Errc::kNotFound, name + ": not in the bundle");
    const auto size = std::filesystem::file_size(file, ec);
    if (ec) return Error(Errc::kIo, file.string() + ": " + ec.message());
    if (size > max_bytes) {
      return Error(Errc::kLimit, name + ": " + std::to_string(size) + " bytes, more than " + std::to_string(max_bytes));
    }
    std::ifstream in(file, std::ios::binary);
    if (!in) return Error(Errc::kIo, file.string() + ": cannot open");
    std::string buf(64 * 1024, '\0');
    std::uint64_t total = 0;
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const auto n = static_cast<std::size_t>(in.gcount());
      if (n == 0) break;
      total += n;
      if (total > max_bytes) return Error(Errc::kLimit, name + ": more than " + std::to_string(max_bytes) + " bytes");
      UPK_TRY(sink(std::string_view(buf.data(), n)));
    }
    if (in.bad()) return Error(Errc::kIo, file.string() + ": read failed");
    return OkStatus();
  }

 private:
  std::filesystem::path dir_;
};

}  // namespace

std::unique_ptr<tuf::Fetcher> MakeDirFetcher(std::filesystem::path dir) {
  return std::make_unique<DirFetcher>(std::move(dir));
}

}  // namespace upkeep::agent::internal
