// Download: resumable, verified, bandwidth-limited download of one package blob, and the free
// space check the core runs before downloading and before installing.
//
// Files: partial data lives at DEST.part, its resume validator (ETag or Last-Modified of the
// first answer, with url, length and sha256) at DEST.part.json. DEST itself appears only after
// the whole blob hashed to the expected sha256 (fsync + rename + directory fsync).
// Resume: an existing part is re-hashed (its bytes are not trusted; the hash continues over
// them), then "Range: bytes=N-" with "If-Range: VALIDATOR" is sent. 206 continues (Content-Range
// must start at N), 200 means the blob changed or Range is not supported: start over.
// Errors:
//   kVerification: 416, a part longer than `length`, more bytes offered than `length`, a wrong
//                  Content-Range, the final hash mismatch ("expected X, got Y"); the part is deleted.
//   kIo:           transport failure, connection closed early, cancelled ("download cancelled"),
//                  5xx; the part is kept (fsync'd) for the next attempt.
//   kLimit:        busy (429/503 + Retry-After, see RetryAfter() in updater_client.hpp), or
//                  CheckFreeSpace. kNotFound: 404. kInvalidArgument: a bad request (length 0,
//                  sha256 not 64 lower-case hex, no file name).
// Single-threaded per destination: two Downloads of the same dest at once are not supported.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>

#include "upkeep/agent/http_client.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/packages/package.hpp"

namespace upkeep::agent {

// Monotonic time and sleeping, so throttling is testable without real sleeps.
class Sleeper {
 public:
  virtual ~Sleeper() = default;
  virtual std::chrono::steady_clock::time_point Now() = 0;
  virtual void Sleep(std::chrono::nanoseconds duration) = 0;
};

class RealSleeper final : public Sleeper {
 public:
  std::chrono::steady_clock::time_point Now() override;
  void Sleep(std::chrono::nanoseconds duration) override;
  static RealSleeper& Instance();
};

struct DownloadRequest {
  std::string url;
  std::filesystem::path dest;  // final file; its directory must exist
  std::uint64_t length = 0;    // expected, exact, > 0
  std::string sha256_hex;      // expected, 64 lower-case hex
  // Bytes per second, 0 = unlimited. When `live_bandwidth_limit` is set it is read before every
  // chunk instead (the settings may change during a long download).
  std::uint64_t bandwidth_limit_bytes_per_second = 0;
  const std::atomic<std::uint64_t>* live_bandwidth_limit = nullptr;
  packages::ProgressFn progress;      // (bytes of the blob present, length); may be empty
  std::function<bool()> cancelled;    // polled per chunk and while throttled; may be empty
};

// Statistics of the last attempt, for logs and tests.
struct DownloadStats {
  std::uint64_t resumed_from = 0;       // bytes of the part that were re-hashed and kept
  std::uint64_t bytes_transferred = 0;  // body bytes received in this call
  bool restarted = false;               // the server answered 200 to a Range request
};

// Returns `dest`. When dest already holds the expected blob it is returned without a request.
Expected<std::filesystem::path> Download(HttpClient& http, const DownloadRequest& request, const Clock& clock,
                                         Sleeper& sleeper, DownloadStats* stats = nullptr);

// kLimit "not enough space on DIR for WHAT: need X MiB, Y MiB free, Z MiB missing" when the
// file system of `dir` has fewer than `needed_bytes` available to unprivileged users; kIo when
// statvfs fails.
Status CheckFreeSpace(const std::filesystem::path& dir, std::uint64_t needed_bytes, std::string_view what);

}  // namespace upkeep::agent
