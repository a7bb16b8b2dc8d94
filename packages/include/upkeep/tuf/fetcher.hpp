// The network seam of the TUF client: fetch a URL with a hard cap on the bytes accepted.
//
// Contract: Stream() delivers the body of a GET in order, in chunks, to `sink`, and stops as
// soon as more than max_bytes have arrived (kLimit) so an endless-data attack costs at most
// max_bytes + one chunk; HTTP 403/404 is kNotFound (the root update loop ends on it), any
// other failure kIo. A sink error aborts the transfer and is returned as is.
// Fetch() and DownloadToFile() are conveniences over Stream(). A Fetcher is used by one
// thread at a time; implementations hold no global state.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::tuf {

class Fetcher {
 public:
  using Sink = std::function<Status(std::string_view chunk)>;

  virtual ~Fetcher() = default;
  virtual Status Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) = 0;

  // The whole body in memory (at most max_bytes).
  Expected<std::string> Fetch(const std::string& url, std::uint64_t max_bytes);
  // Writes the body to `file` (created or truncated, mode 0644); removes it again on failure.
  Status DownloadToFile(const std::string& url, std::uint64_t max_bytes, const std::filesystem::path& file);
};

struct HttpFetcherOptions {
  // No progress for this long fails the transfer.
  std::chrono::seconds timeout{30};
  std::string user_agent = "upkeep-tuf-client";
};

// The production fetcher: http:// and https:// through cpprestsdk.
std::unique_ptr<Fetcher> MakeHttpFetcher(HttpFetcherOptions options = {});

}  // namespace upkeep::tuf
