#include "upkeep/updater/repository_routes.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <system_error>
#include <utility>
#include <vector>

namespace upkeep::updater {
namespace {

namespace fs = std::filesystem;

// Owns one descriptor (O_PATH ones included).
class Fd {
 public:
  explicit Fd(int fd = -1) : fd_(fd) {}
  ~Fd() {
    if (fd_ >= 0) ::close(fd_);
  }
  Fd(Fd&& other) noexcept : fd_(std::exchange(other.fd_, -1)) {}
  Fd& operator=(Fd&& other) noexcept {
    if (this != &other) {
      if (fd_ >= 0) ::close(fd_);
      fd_ = std::exchange(other.fd_, -1);
    }
    return *this;
  }
  Fd(const Fd&) = delete;
  Fd& operator=(const Fd&) = delete;
  int get() const { return fd_; }

 private:
  int fd_;
};

bool IsNameChar(char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
         c == '+' || c == '-';
}

bool IsHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

std::vector<std::string_view> Split(std::string_view path) {
  std::vector<std::string_view> parts;
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    parts.push_back(path.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return parts;
}

std::string_view AreaName(RepoArea area) { return area == RepoArea::kMetadata ? "metadata" : "targets"; }

Error NotFound(RepoArea area, std::string_view relative) {
  return Error(Errc::kNotFound, "no such file in the repository: /repo/" + std::string(AreaName(area)) + "/" +
                                    std::string(relative.substr(0, 200)));
}

// "N.ROLE.json" with N all digits.
bool IsVersionedMetadata(std::string_view name) {
  const auto dot = name.find('.');
  if (dot == 0 || dot == std::string_view::npos) return false;
  for (std::size_t i = 0; i < dot; ++i) {
    if (name[i] < '0' || name[i] > '9') return false;
  }
  return name.size() > dot + 1 + std::string_view(".json").size();
}

// "<sha256 or sha512 hex>.NAME".
bool IsHashPrefixed(std::string_view name) {
  const auto dot = name.find('.');
  if (dot != 64 && dot != 128) return false;
  for (std::size_t i = 0; i < dot; ++i) {
    if (!IsHex(name[i])) return false;
  }
  return name.size() > dot + 1;
}

}  // namespace

Status CheckRequestPath(RepoArea area, std::string_view relative) {
  if (relative.empty() || relative.size() > kMaxPathBytes) return NotFound(area, relative);
  const auto parts = Split(relative);
  if (parts.size() > kMaxDepth) return NotFound(area, relative);
  if (area == RepoArea::kMetadata) {
    if (parts.size() != 1) return NotFound(area, relative);
    const std::string_view suffix = ".json";
    if (parts[0].size() <= suffix.size() || parts[0].substr(parts[0].size() - suffix.size()) != suffix) {
      return NotFound(area, relative);
    }
  }
  for (std::string_view part : parts) {
    if (part.empty() || part.front() == '.') return NotFound(area, relative);
    for (char c : part) {
      if (!IsNameChar(c)) return NotFound(area, relative);
    }
  }
  return OkStatus();
}

std::string_view CacheControlFor(RepoArea area, std::string_view relative) {
  const auto slash = relative.rfind('/');
  const std::string_view name = slash == std::string_view::npos ? relative : relative.substr(slash + 1);
  if (area == RepoArea::kMetadata) return IsVersionedMetadata(name) ? kImmutable : kNoCache;
  return IsHashPrefixed(name) ? kImmutable : kNoCache;
}

Expected<RepositoryRoutes> RepositoryRoutes::Create(const fs::path& repo_dir) {
  std::error_code ec;
  fs::path root = fs::canonical(repo_dir, ec);
  if (ec) return Error(Errc::kNotFound, "--repo " + repo_dir.string() + ": " + ec.message());
  for (const char* area : {"metadata", "targets"}) {
    const auto st = fs::symlink_status(root / area, ec);
    if (ec || !fs::is_directory(st)) {
      return Error(Errc::kNotFound, (root / area).string() +
                                        ": not a directory (expected a repository written by `upk repo init`)");
    }
  }
  return RepositoryRoutes(std::move(root));
}

net::Response RepositoryRoutes::Serve(RepoArea area, std::string_view relative) const {
  if (auto st = CheckRequestPath(area, relative); !st.ok()) return net::Response::FromError(st.error());
  const fs::path area_dir = root_ / std::string(AreaName(area));
  Fd dir(::open(area_dir.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
  if (dir.get() < 0) {
    return net::Response::FromError(Error(Errc::kIo, area_dir.string() + ": " + std::strerror(errno)));
  }
  const auto parts = Split(relative);
  // One component at a time, never following a symbolic link: nothing outside the area is reachable.
  for (std::size_t i = 0; i + 1 < parts.size(); ++i) {
    const std::string part(parts[i]);
    Fd next(::openat(dir.get(), part.c_str(), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    if (next.get() < 0) return net::Response::FromError(NotFound(area, relative));
    dir = std::move(next);
  }
  const std::string last(parts.back());
  Fd leaf(::openat(dir.get(), last.c_str(), O_PATH | O_NOFOLLOW | O_CLOEXEC));
  if (leaf.get() < 0) return net::Response::FromError(NotFound(area, relative));
  struct stat st {};
  if (::fstat(leaf.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    return net::Response::FromError(NotFound(area, relative));
  }
  // Reopen exactly the inode checked above for reading (not the path, which could change meanwhile).
  auto file = net::OpenFile::Open("/proc/self/fd/" + std::to_string(leaf.get()));
  if (!file.ok()) {
    return net::Response::FromError(
        Error(Errc::kIo, "cannot open /repo/" + std::string(AreaName(area)) + "/" + std::string(relative)));
  }
  net::Response response = net::Response::FromFile(
      std::move(file).value(), area == RepoArea::kMetadata ? "application/json" : "application/octet-stream");
  response.SetHeader("Cache-Control", std::string(CacheControlFor(area, relative)));
  response.SetHeader("X-Content-Type-Options", "nosniff");
  return response;
}

Status RepositoryRoutes::Register(net::Server& server) const {
  UPK_TRY(server.Handle(net::Method::kGet, "/repo/metadata/*", [routes = *this](const net::Request& req) {
    return routes.Serve(RepoArea::kMetadata, req.path_suffix());
  }));
  UPK_TRY(server.Handle(net::Method::kGet, "/repo/targets/*", [routes = *this](const net::Request& req) {
    return routes.Serve(RepoArea::kTargets, req.path_suffix());
  }));
  return OkStatus();
}

}  // namespace upkeep::updater
