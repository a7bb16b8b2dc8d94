// Helpers for the updater tests: a temporary directory, running a real binary from build/bin,
// and a tiny blocking HTTP/1.1 client that sends the request target verbatim (so tests can send
// hostile paths) with every read bounded by a time-out.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upkeep::updater::test {

class TempDir {
 public:
  TempDir();
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Runs UPKEEP_BIN_DIR/`program` with `args` (stdout and stderr into `output`); returns the exit
// code, or -1 when it could not run.
int RunBinary(const std::string& program, const std::vector<std::string>& args, std::string* output = nullptr);

std::string ReadAll(const std::filesystem::path& path);

struct HttpReply {
  int status = 0;  // 0 when the exchange failed
  std::string head;
  std::string body;
  // First value of header `name` (case-insensitive) in the head.
  std::optional<std::string> Header(std::string_view name) const;
};

// One request on its own connection (Connection: close); `target` is sent exactly as given.
HttpReply Call(std::uint16_t port, std::string_view method, std::string_view target,
               const std::vector<std::pair<std::string, std::string>>& headers = {}, std::string_view body = {});

}  // namespace upkeep::updater::test
