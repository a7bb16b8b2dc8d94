// Serving a static TUF repository (the layout `upk repo` writes, docs/repository.md) over HTTP
// under /repo/: GET/HEAD /repo/metadata/<file> from DIR/metadata and /repo/targets/<path...> from
// DIR/targets, through upkeep::net (sendfile, Range, If-Range, ETag, HEAD come from the server).
//
// Contract:
// - Only names the repository layout can hold are looked up: one metadata file name
//   `[A-Za-z0-9._+-]+.json`; target paths of `/`-separated `[A-Za-z0-9._+-]` components. No
//   component may start with '.' (that also hides the atomic writers' `.NAME.tmp-*` files), at most
//   kMaxPathBytes bytes and kMaxDepth components. Anything else is a JSON 404.
// - The file is opened by walking DIR/metadata or DIR/targets one component at a time with
//   O_NOFOLLOW: a symbolic link anywhere below the area directory is never followed (404), so no
//   request reaches a file outside DIR whatever the directory holds. The final object must be a
//   regular file. DIR itself (and the area directories) are resolved once, at Create().
// - Cache-Control: `no-cache` for files that change in place (timestamp.json, root.json, any
//   unversioned metadata, target files without a hash prefix); `public, max-age=31536000,
//   immutable` for versioned metadata (`N.ROLE.json`) and hash-prefixed targets
//   (`<64 or 128 hex>.NAME`), which consistent snapshots never rewrite.
// - Content-Type: application/json for metadata, application/octet-stream for targets.
//
// Thread safety: a RepositoryRoutes is immutable after Create(); Serve* may run on any number
// of threads at once. Handlers do a few openat/fstat calls and are registered on the I/O threads.
#pragma once

#include <cstddef>
#include <filesystem>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"
#include "upkeep/net/http.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::updater {

enum class RepoArea { kMetadata, kTargets };

inline constexpr std::size_t kMaxPathBytes = 1024;
inline constexpr std::size_t kMaxDepth = 16;

inline constexpr std::string_view kNoCache = "no-cache";
inline constexpr std::string_view kImmutable = "public, max-age=31536000, immutable";

// Checks a decoded path below an area (the route's suffix, e.g. "demo/<sha256>.demo-1.0.0.upk")
// against the naming rules above. kNotFound names the path when it is refused.
Status CheckRequestPath(RepoArea area, std::string_view relative);

// The Cache-Control value for a (valid) path below `area`.
std::string_view CacheControlFor(RepoArea area, std::string_view relative);

class RepositoryRoutes {
 public:
  // `repo_dir` must hold metadata/ and targets/ directories (kNotFound naming the missing one).
  static Expected<RepositoryRoutes> Create(const std::filesystem::path& repo_dir);

  // Registers GET (and so HEAD) /repo/metadata/* and /repo/targets/* on `server` (before Start()).
  // Fails when the server refuses a route (already registered, server started).
  Status Register(net::Server& server) const;

  // The response for `relative` below `area`: the file with its headers, or a JSON 404
  // ({"error": {"code": "not_found", ...}}); 500 only for unexpected I/O failures.
  net::Response Serve(RepoArea area, std::string_view relative) const;

  const std::filesystem::path& root() const { return root_; }

 private:
  explicit RepositoryRoutes(std::filesystem::path root) : root_(std::move(root)) {}
  std::filesystem::path root_;  // canonical DIR
};

}  // namespace upkeep::updater
