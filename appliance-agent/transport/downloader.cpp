#include "upkeep/agent/downloader.hpp"

#include <fcntl.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <thread>

#include "upkeep/agent/updater_client.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::agent {

std::chrono::steady_clock::time_point RealSleeper::Now() { return std::chrono::steady_clock::now(); }
void RealSleeper::Sleep(std::chrono::nanoseconds duration) { std::this_thread::sleep_for(duration); }
RealSleeper& RealSleeper::Instance() {
  static RealSleeper sleeper;
  return sleeper;
}

namespace {

constexpr std::uint64_t kMaxMetaBytes = 16 * 1024;

std::filesystem::path WithSuffix(const std::filesystem::path& p, const char* suffix) {
  std::filesystem::path out = p;
  out += suffix;
  return out;
}

void RemoveQuietly(const std::filesystem::path& p) {
  std::error_code ec;
  std::filesystem::remove(p, ec);
}

// Token bucket: `limit` bytes per second, at most one second of burst, starting empty so the
// long-run rate never exceeds the limit.
class Throttle {
 public:
  Throttle(Sleeper& sleeper, const DownloadRequest& request) : sleeper_(sleeper), request_(request), last_(sleeper.Now()) {}

  Status Take(std::uint64_t bytes) {
    const std::uint64_t limit = request_.live_bandwidth_limit != nullptr ? request_.live_bandwidth_limit->load()
                                                                         : request_.bandwidth_limit_bytes_per_second;
    Refill(limit);
    if (limit == 0) return OkStatus();
    tokens_ -= static_cast<double>(bytes);
    while (tokens_ < 0) {
      if (request_.cancelled && request_.cancelled()) return Error(Errc::kIo, request_.url + ": download cancelled");
      const double seconds = std::min(-tokens_ / static_cast<double>(limit), 0.25);
      sleeper_.Sleep(std::chrono::nanoseconds(static_cast<std::int64_t>(seconds * 1e9) + 1));
      Refill(limit);
    }
    return OkStatus();
  }

 private:
  void Refill(std::uint64_t limit) {
    const auto now = sleeper_.Now();
    const double elapsed = std::chrono::duration<double>(now - last_).count();
    last_ = now;
    if (limit == 0) {
      tokens_ = 0;
      return;
    }
    tokens_ = std::min(tokens_ + elapsed * static_cast<double>(limit), static_cast<double>(limit));
  }

  Sleeper& sleeper_;
  const DownloadRequest& request_;
  std::chrono::steady_clock::time_point last_;
  double tokens_ = 0;
};

struct Meta {
  std::string validator;  // "etag:..." or "last-modified:..."
};

Expected<Meta> ReadMeta(const std::filesystem::path& path, const DownloadRequest& r) {
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(path, kMaxMetaBytes));
  UPK_TRY_ASSIGN(Json j, ParseJson(text));
  if (!j.is_object()) return Error(Errc::kParse, path.string() + ": not an object");
  UPK_TRY_ASSIGN(std::string url, GetString(j, "url"));
  UPK_TRY_ASSIGN(std::string sha, GetString(j, "sha256"));
  UPK_TRY_ASSIGN(std::int64_t length, GetInt(j, "length"));
  UPK_TRY_ASSIGN(std::string validator, GetString(j, "validator"));
  if (url != r.url || sha != r.sha256_hex || length < 0 || static_cast<std::uint64_t>(length) != r.length) {
    return Error(Errc::kVerification, path.string() + ": for another blob");
  }
  Meta m;
  m.validator = validator;
  return m;
}

Status WriteMeta(const std::filesystem::path& path, const DownloadRequest& r, const std::string& validator,
                 const Clock& clock) {
  Json j = {{"url", r.url},
            {"sha256", r.sha256_hex},
            {"length", r.length},
            {"validator", validator},
            {"started", FormatTimestamp(clock.Now())}};
  return WriteFileAtomic(path, j.dump(-1, ' ', false, Json::error_handler_t::replace), 0600);
}

// Hashes the part (chunked, constant memory) into `hasher`; returns its size.
Expected<std::uint64_t> HashPart(const std::filesystem::path& part, Hasher& hasher) {
  const int fd = ::open(part.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Error(Errc::kIo, part.string() + ": cannot open: " + std::strerror(errno));
  std::vector<char> buf(1 << 20);
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      const int err = errno;
      ::close(fd);
      return Error(Errc::kIo, part.string() + ": read failed: " + std::strerror(err));
    }
    if (n == 0) break;
    hasher.Update(std::string_view(buf.data(), static_cast<std::size_t>(n)));
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  return total;
}

class Part {
 public:
  ~Part() { Close(); }
  Status Open(const std::filesystem::path& path, bool truncate) {
    Close();
    path_ = path;
    fd_ = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | (truncate ? O_TRUNC : 0), 0600);
    if (fd_ < 0) return Error(Errc::kIo, path.string() + ": cannot open for writing: " + std::strerror(errno));
    return OkStatus();
  }
  Status Write(std::string_view data) { return WriteAll(fd_, data, path_); }
  Status Sync() {
    if (fd_ >= 0 && ::fsync(fd_) != 0) return Error(Errc::kIo, path_.string() + ": fsync failed: " + std::strerror(errno));
    return OkStatus();
  }
  void Close() {
    if (fd_ >= 0) ::close(fd_);
    fd_ = -1;
  }

 private:
  std::filesystem::path path_;
  int fd_ = -1;
};

}  // namespace

Expected<std::filesystem::path> Download(HttpClient& http, const DownloadRequest& r, const Clock& clock, Sleeper& sleeper,
                                         DownloadStats* stats_out) {
  DownloadStats stats;
  if (stats_out != nullptr) *stats_out = stats;
  if (!IsLowerHex(r.sha256_hex, 64)) {
    return Error(Errc::kInvalidArgument, "download " + r.url + ": sha256 must be 64 lower-case hex");
  }
  if (r.length == 0) return Error(Errc::kInvalidArgument, "download " + r.url + ": length must be positive");
  if (r.dest.empty() || !r.dest.has_filename()) return Error(Errc::kInvalidArgument, "download " + r.url + ": no destination");
  const std::filesystem::path part_path = WithSuffix(r.dest, ".part");
  const std::filesystem::path meta_path = WithSuffix(r.dest, ".part.json");
  const std::string what = "download " + r.url;

  std::error_code ec;
  if (std::filesystem::is_regular_file(r.dest, ec)) {
    auto digest = HashFile(r.dest);
    if (digest.ok() && digest->size == r.length && digest->sha256_hex == r.sha256_hex) {
      RemoveQuietly(part_path);
      RemoveQuietly(meta_path);
      if (r.progress) r.progress(r.length, r.length);
      return r.dest;
    }
  }

  Hasher hasher;
  std::uint64_t have = 0;
  std::string validator;
  if (std::filesystem::exists(part_path, ec)) {
    auto meta = ReadMeta(meta_path, r);
    if (!meta.ok() || meta->validator.empty()) {
      RemoveQuietly(part_path);  // unknown provenance: start over
    } else {
      UPK_TRY_ASSIGN(std::uint64_t size, HashPart(part_path, hasher));
      if (size > r.length) {
        const std::string actual = hasher.FinishHex();
        RemoveQuietly(part_path);
        RemoveQuietly(meta_path);
        return Error(Errc::kVerification, what + ": partial file is " + std::to_string(size) + " bytes, longer than " +
                                              std::to_string(r.length) + " (sha256 expected " + r.sha256_hex +
                                              ", got " + actual + "); deleted");
      }
      have = size;
      validator = meta->validator;
    }
  }
  if (have == 0) {
    hasher.Finish();  // reset
    RemoveQuietly(meta_path);
  }
  stats.resumed_from = have;

  auto finish = [&]() -> Expected<std::filesystem::path> {
    const std::string actual = hasher.FinishHex();
    if (actual != r.sha256_hex) {
      RemoveQuietly(part_path);
      RemoveQuietly(meta_path);
      return Error(Errc::kVerification, what + ": sha256 mismatch: expected " + r.sha256_hex + ", got " + actual +
                                            "; partial file deleted");
    }
    std::filesystem::rename(part_path, r.dest, ec);
    if (ec) return Error(Errc::kIo, what + ": cannot rename " + part_path.string() + " to " + r.dest.string() + ": " + ec.message());
    RemoveQuietly(meta_path);
    UPK_TRY(SyncDirectory(r.dest.parent_path().empty() ? std::filesystem::path(".") : r.dest.parent_path()));
    if (r.progress) r.progress(r.length, r.length);
    return r.dest;
  };

  if (have == r.length) {
    if (stats_out != nullptr) *stats_out = stats;
    return finish();
  }

  Part part;
  UPK_TRY(part.Open(part_path, have == 0));
  Throttle throttle(sleeper, r);
  if (r.progress) r.progress(have, r.length);

  HttpRequest request;
  request.url = r.url;
  if (have > 0) {
    request.headers.emplace_back("Range", "bytes=" + std::to_string(have) + "-");
    request.headers.emplace_back("If-Range", validator.substr(validator.find(':') + 1));
  }
  bool verification_failure = false;
  BodySink sink;
  sink.head = [&](const HttpResponse& head) -> Status {
    if (head.status == 206) {
      const auto range = head.Header("Content-Range");
      // "bytes FIRST-LAST/TOTAL"
      bool good = false;
      if (range && range->starts_with("bytes ")) {
        const std::string_view v = std::string_view(*range).substr(6);
        const std::size_t dash = v.find('-');
        const std::size_t slash = v.find('/');
        if (dash != std::string_view::npos && slash != std::string_view::npos && dash < slash) {
          auto first = ParseDecimalU64(v.substr(0, dash));
          auto last = ParseDecimalU64(v.substr(dash + 1, slash - dash - 1));
          auto total = ParseDecimalU64(v.substr(slash + 1));
          good = first && last && *first == have && *last >= *first && (!total || *total == r.length) &&
                 *last < r.length;
        }
      }
      if (!good || have == 0) {
        verification_failure = true;
        return Error(Errc::kVerification, what + ": answer 206 with Content-Range '" + range.value_or("") +
                                              "' does not continue at byte " + std::to_string(have));
      }
    } else {
      if (have > 0) {
        // The blob changed (If-Range failed) or Range is not supported: start over.
        stats.restarted = true;
        have = 0;
        hasher.Finish();
        UPK_TRY(part.Open(part_path, true));
      }
      if (auto etag = head.Header("ETag"); etag && !etag->empty() && !etag->starts_with("W/")) {
        validator = "etag:" + *etag;
      } else if (auto lm = head.Header("Last-Modified"); lm && !lm->empty()) {
        validator = "last-modified:" + *lm;
      } else {
        validator.clear();
      }
      if (!validator.empty()) {
        UPK_TRY(WriteMeta(meta_path, r, validator, clock));
      } else {
        RemoveQuietly(meta_path);  // not resumable safely
      }
      if (r.progress) r.progress(0, r.length);
    }
    if (auto cl = head.Header("Content-Length")) {
      auto n = ParseDecimalU64(*cl);
      if (n && *n > r.length - have) {
        verification_failure = true;
        return Error(Errc::kVerification, what + ": server offers " + *cl + " bytes, expected " +
                                              std::to_string(r.length - have));
      }
    }
    return OkStatus();
  };
  sink.data = [&](std::string_view chunk) -> Status {
    if (r.cancelled && r.cancelled()) return Error(Errc::kIo, what + ": download cancelled");
    if (chunk.size() > r.length - have) {
      verification_failure = true;
      return Error(Errc::kVerification, what + ": more than the expected " + std::to_string(r.length) + " bytes");
    }
    UPK_TRY(part.Write(chunk));
    hasher.Update(chunk);
    have += chunk.size();
    stats.bytes_transferred += chunk.size();
    if (r.progress) r.progress(have, r.length);
    return throttle.Take(chunk.size());
  };
  // Never more than the blob: the sink refuses bytes past `length` exactly (the remainder after a
  // resume, the whole blob after a restart), the client cap backs it up.
  request.max_body_bytes = std::max<std::uint64_t>(r.length, 1);
  auto response = http.Send(request, &sink);
  const Status synced = part.Sync();
  part.Close();
  if (stats_out != nullptr) *stats_out = stats;
  if (!response.ok()) {
    if (verification_failure) {
      RemoveQuietly(part_path);
      RemoveQuietly(meta_path);
      return response.error().Wrap("partial file deleted");
    }
    if (response.error().code() == Errc::kLimit) {
      // Only possible when the server sent more than the rest of the blob.
      RemoveQuietly(part_path);
      RemoveQuietly(meta_path);
      return Error(Errc::kVerification, response.error().message() + "; partial file deleted");
    }
    UPK_TRY(synced);
    return response.error();
  }
  UPK_TRY(synced);
  const int status = response->status;
  if (status == 416) {
    RemoveQuietly(part_path);
    RemoveQuietly(meta_path);
    return Error(Errc::kVerification, what + ": HTTP 416 for a part of " + std::to_string(have) +
                                          " bytes (sha256 expected " + r.sha256_hex + ", got " + hasher.FinishHex() +
                                          " for the part); partial file deleted");
  }
  if (status != 200 && status != 206) return ErrorFromResponse(*response, what);
  if (have < r.length) {
    return Error(Errc::kIo, what + ": connection closed after " + std::to_string(have) + " of " +
                                std::to_string(r.length) + " bytes; kept for resume");
  }
  return finish();
}

Status CheckFreeSpace(const std::filesystem::path& dir, std::uint64_t needed_bytes, std::string_view what) {
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) != 0) {
    return Error(Errc::kIo, "cannot check free space on " + dir.string() + ": " + std::strerror(errno));
  }
  const std::uint64_t free_bytes = static_cast<std::uint64_t>(st.f_bavail) * static_cast<std::uint64_t>(st.f_frsize);
  if (free_bytes >= needed_bytes) return OkStatus();
  constexpr std::uint64_t kMiB = 1024 * 1024;
  auto mib_up = [](std::uint64_t b) { return (b + kMiB - 1) / kMiB; };
  return Error(Errc::kLimit, "not enough space on " + dir.string() + " for " + std::string(what) + ": need " +
                                 std::to_string(mib_up(needed_bytes)) + " MiB, " + std::to_string(free_bytes / kMiB) +
                                 " MiB free, " + std::to_string(mib_up(needed_bytes - free_bytes)) + " MiB missing");
}

}  // namespace upkeep::agent
