// The only upk file that includes cpprestsdk (and with it Boost): keep it that way.
#include "api_client.hpp"

#include <cpprest/filestream.h>
#include <cpprest/http_client.h>
#include <pplx/pplxtasks.h>

#include <unistd.h>

#include <cerrno>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <mutex>
#include <set>
#include <system_error>
#include <thread>
#include <vector>

namespace upkeep::upk {

namespace {

namespace http = web::http;

// The largest answer we read. GET /api/v1/repository carries root and the whole targets
// metadata (about 400 bytes per release), so this leaves room for ~100k releases.
constexpr std::uint64_t kMaxResponseBytes = 64u << 20;
constexpr std::size_t kRawExcerptBytes = 200;

// cpprestsdk's own time-out of a download: far out, so a multi-GiB bundle on a slow link is not
// cut off; the Watchdog below is what fails a download that stopped moving.
constexpr std::chrono::hours kDownloadCeiling{24 * 7};

// Cancels the request when nothing arrived for `stall` (the response head, or any body bytes as
// cpprestsdk reads them off the network). A stall is a duration, not a time of day: the steady
// clock, not Clock.
class Watchdog {
 public:
  Watchdog(std::chrono::seconds stall, pplx::cancellation_token_source cancel)
      : stall_(stall), last_(std::chrono::steady_clock::now()) {
    thread_ = std::thread([this, cancel]() mutable {
      std::unique_lock<std::mutex> lock(mutex_);
      while (!done_) {
        const auto deadline = last_ + stall_;
        if (std::chrono::steady_clock::now() >= deadline) {
          fired_ = true;
          cancel.cancel();
          return;
        }
        cv_.wait_until(lock, deadline);
      }
    });
  }
  Watchdog(const Watchdog&) = delete;
  Watchdog& operator=(const Watchdog&) = delete;
  ~Watchdog() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      done_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  void Progress() {
    std::lock_guard<std::mutex> lock(mutex_);
    last_ = std::chrono::steady_clock::now();
  }
  bool fired() {
    std::lock_guard<std::mutex> lock(mutex_);
    return fired_;
  }

 private:
  const std::chrono::seconds stall_;
  std::mutex mutex_;
  std::condition_variable cv_;
  std::chrono::steady_clock::time_point last_;
  bool done_ = false, fired_ = false;
  std::thread thread_;
};

std::string Describe(const std::exception& e) {
  // cpprestsdk's messages name the URL and the OS error; they never contain request headers.
  std::string m = e.what();
  return m.empty() ? "request failed" : m;
}

}  // namespace

Expected<ApiClient> ApiClient::Create(ApiClientOptions options) {
  while (!options.server.empty() && options.server.back() == '/') options.server.pop_back();
  if (options.server.empty()) {
    return Error(Errc::kInvalidArgument, "no updater given: use --server URL or set UPKEEP_SERVER");
  }
  bool cleartext_remote = false;
  try {
    web::uri uri{utility::conversions::to_string_t(options.server)};
    const std::string host = utility::conversions::to_utf8string(uri.host());
    cleartext_remote = uri.scheme() == U("http") && host != "localhost" && host.rfind("127.", 0) != 0 &&
                       host != "::1" && host != "[::1]";
    if (uri.scheme() != U("http") && uri.scheme() != U("https")) {
      return Error(Errc::kInvalidArgument,
                   "--server " + options.server + ": only http:// and https:// URLs are supported");
    }
    if (uri.host().empty()) return Error(Errc::kInvalidArgument, "--server " + options.server + ": no host");
    // Credentials in the URL would sit in argv and in the environment; tokens go by file.
    if (!uri.user_info().empty()) {
      return Error(Errc::kInvalidArgument, "--server: credentials in the URL are refused; use --token-file");
    }
    if (!uri.query().empty() || !uri.fragment().empty()) {
      return Error(Errc::kInvalidArgument, "--server " + options.server + ": no query or fragment allowed");
    }
    if (!options.ca_file.empty() && uri.scheme() != U("https")) {
      return Error(Errc::kInvalidArgument, "--ca-file is only used with an https:// server");
    }
  } catch (const std::exception&) {
    return Error(Errc::kInvalidArgument, "--server " + options.server + ": not a valid URL");
  }
  if (!options.ca_file.empty()) {
    std::error_code ec;
    if (!std::filesystem::is_regular_file(options.ca_file, ec)) {
      return Error(Errc::kInvalidArgument, "--ca-file " + options.ca_file + ": not a readable file");
    }
  }
  if (options.timeout.count() <= 0) return Error(Errc::kInvalidArgument, "--timeout must be at least 1 second");
  ApiClient client(std::move(options));
  client.cleartext_remote_ = cleartext_remote;
  return client;
}

namespace {

struct Outgoing {
  http::method method;
  std::string target;
  std::optional<std::string> json_body;
  std::optional<std::filesystem::path> file;
  UploadProgress progress;
  std::optional<std::filesystem::path> save_to;  // a 2xx body goes here instead of memory
  DownloadProgress download_progress;
};

Expected<ApiResponse> Send(const ApiClientOptions& o, Outgoing req) {
  const std::string where = std::string(utility::conversions::to_utf8string(req.method)) + " " + req.target;
  pplx::cancellation_token_source cancel;
  // A download fails when it stops moving for o.timeout, however long it takes in all.
  // Shared with the progress handler, which a cpprestsdk thread may still call after we return.
  std::shared_ptr<Watchdog> watchdog;
  if (req.save_to) watchdog = std::make_shared<Watchdog>(o.timeout, cancel);
  auto stalled = [&](std::uint64_t received) {
    return Error(Errc::kIo, where + " at " + o.server + ": the download stalled: nothing arrived for " +
                                std::to_string(o.timeout.count()) + " s (after " + std::to_string(received) +
                                " bytes); run the command again");
  };
  try {
    http::client::http_client_config config;
    if (req.save_to) {
      config.set_timeout(std::chrono::duration_cast<std::chrono::seconds>(kDownloadCeiling));
    } else {
      config.set_timeout(o.timeout);
    }
    if (!o.ca_file.empty()) {
      const std::string ca = o.ca_file;
      config.set_ssl_context_callback([ca](boost::asio::ssl::context& ssl) { ssl.load_verify_file(ca); });
    }
    http::client::http_client client(web::uri(utility::conversions::to_string_t(o.server)), config);
    http::http_request request(req.method);
    request.set_request_uri(web::uri(utility::conversions::to_string_t(req.target)));
    request.headers().add(http::header_names::user_agent, U("upk/0.1.0"));
    request.headers().add(http::header_names::accept, U("application/json"));
    if (!o.token.empty()) {
      request.headers().add(http::header_names::authorization, utility::conversions::to_string_t("Bearer " + o.token));
    }
    if (req.json_body) {
      // As bytes, not set_body(std::string): cpprestsdk serves a string body through a char
      // streambuf that it then calls as an unsigned-char one, which UBSan (rightly) aborts on.
      request.set_body(std::vector<unsigned char>(req.json_body->begin(), req.json_body->end()));
      request.headers().set_content_type(U("application/json"));
    }
    if (req.file) {
      std::error_code ec;
      const auto size = std::filesystem::file_size(*req.file, ec);
      if (ec) return Error(Errc::kIo, req.file->string() + ": " + ec.message());
      auto stream = concurrency::streams::file_stream<std::uint8_t>::open_istream(req.file->string()).get();
      request.set_body(stream, size, U("application/octet-stream"));
      if (req.progress) {
        auto progress = req.progress;
        request.set_progress_handler([progress](http::message_direction::direction d, utility::size64_t n) {
          if (d == http::message_direction::upload) progress(n);
        });
      }
    }
    if (watchdog) {
      request.set_progress_handler([w = watchdog](http::message_direction::direction d, utility::size64_t) {
        if (d == http::message_direction::download) w->Progress();
      });
    }
    http::http_response response;
    try {
      response = client.request(request, cancel.get_token()).get();
    } catch (const std::exception&) {
      if (watchdog && watchdog->fired()) return stalled(0);
      throw;
    }
    if (watchdog) watchdog->Progress();  // the head arrived

    ApiResponse out;
    out.status = response.status_code();
    const auto& headers = response.headers();
    if (headers.has(http::header_names::content_length) && headers.content_length() > kMaxResponseBytes) {
      cancel.cancel();
      return Error(Errc::kIo,
                   where + ": the answer is larger than " + std::to_string(kMaxResponseBytes >> 20) + " MiB");
    }
    if (req.save_to && out.status >= 200 && out.status < 300) {
      const std::uint64_t total = headers.has(http::header_names::content_length) ? headers.content_length() : 0;
      std::FILE* f = std::fopen(req.save_to->c_str(), "wb");
      if (!f) {
        cancel.cancel();
        return Error(Errc::kIo, req.save_to->string() + ": cannot create: " + std::strerror(errno));
      }
      std::filesystem::permissions(*req.save_to, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
      auto in = response.body().streambuf();
      std::vector<std::uint8_t> block(1 << 20);
      std::uint64_t received = 0;
      for (;;) {
        std::size_t n = 0;
        try {
          n = in.getn(block.data(), block.size()).get();
        } catch (const std::exception&) {
          std::fclose(f);
          if (watchdog->fired()) return stalled(received);
          throw;
        }
        if (n == 0) break;
        if (std::fwrite(block.data(), 1, n, f) != n) {
          std::fclose(f);
          cancel.cancel();
          return Error(Errc::kIo, req.save_to->string() + ": write failed (disk full?)");
        }
        received += n;
        if (req.download_progress) req.download_progress(received, total);
      }
      if (std::fflush(f) != 0 || ::fsync(fileno(f)) != 0) {
        std::fclose(f);
        return Error(Errc::kIo, req.save_to->string() + ": write failed (disk full?)");
      }
      std::fclose(f);
      if (watchdog->fired() && (total == 0 || received != total)) return stalled(received);
      if (total != 0 && received != total) {
        return Error(Errc::kIo, where + ": the download stopped at " + std::to_string(received) + " of " +
                                    std::to_string(total) + " bytes");
      }
      return out;
    }
    std::string body;
    auto buf = response.body().streambuf();
    std::vector<std::uint8_t> chunk(64 * 1024);
    for (;;) {
      std::size_t n = buf.getn(chunk.data(), chunk.size()).get();
      if (n == 0) break;
      if (body.size() + n > kMaxResponseBytes) {
        cancel.cancel();
        return Error(Errc::kIo,
                     where + ": the answer is larger than " + std::to_string(kMaxResponseBytes >> 20) + " MiB");
      }
      body.append(reinterpret_cast<const char*>(chunk.data()), n);
    }
    if (!body.empty()) {
      auto parsed = ParseJson(body);
      if (parsed) {
        out.body = std::move(*parsed);
      } else {
        out.raw = body.substr(0, kRawExcerptBytes);
      }
    }
    return out;
  } catch (const std::exception& e) {
    cancel.cancel();
    return Error(Errc::kIo, where + " at " + o.server + ": " + Describe(e));
  }
}

}  // namespace

Expected<ApiResponse> ApiClient::Get(const std::string& target) const {
  return Send(options_, Outgoing{http::methods::GET, target, std::nullopt, std::nullopt, {}, std::nullopt, {}});
}

Expected<ApiResponse> ApiClient::Post(const std::string& target, const Json& body) const {
  return Send(options_, Outgoing{http::methods::POST, target, body.dump(), std::nullopt, {}, std::nullopt, {}});
}

Expected<ApiResponse> ApiClient::PutFile(const std::string& target, const std::filesystem::path& file,
                                         UploadProgress progress) const {
  return Send(options_, Outgoing{http::methods::PUT, target, std::nullopt, file, std::move(progress), std::nullopt, {}});
}

Expected<ApiResponse> ApiClient::Download(const std::string& target, const std::filesystem::path& file,
                                          DownloadProgress progress) const {
  Outgoing req{http::methods::GET, target, std::nullopt, std::nullopt, {}, file, std::move(progress)};
  return Send(options_, std::move(req));
}

std::string EncodeComponent(std::string_view text) {
  static constexpr char kHex[] = "0123456789ABCDEF";
  std::string out;
  for (unsigned char c : text) {
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
        c == '_' || c == '~') {
      out.push_back(static_cast<char>(c));
    } else {
      out.push_back('%');
      out.push_back(kHex[c >> 4]);
      out.push_back(kHex[c & 15]);
    }
  }
  return out;
}

Error ResponseError(const ApiResponse& r) {
  std::string code, message;
  if (r.body.is_object() && r.body.contains("error") && r.body["error"].is_object()) {
    const Json& e = r.body["error"];
    if (e.contains("code") && e["code"].is_string()) code = e["code"].get<std::string>();
    if (e.contains("message") && e["message"].is_string()) message = e["message"].get<std::string>();
  }
  if (message.empty()) message = r.raw.empty() ? "the updater refused the request" : r.raw;
  if (code.empty()) code = "http_error";
  // 400s that are verification refusals of what we sent (signatures, digests, metadata), not
  // malformed requests.
  static const std::set<std::string> kVerification = {"verification_failed", "digest_mismatch",  "targets_mismatch",
                                                      "blob_missing",        "invalid_metadata", "bad_signature"};
  Errc errc = Errc::kIo;
  const int s = r.status;
  if (s == 400) {
    errc = kVerification.count(code) ? Errc::kVerification : Errc::kInvalidArgument;
  } else if (s == 401) {
    errc = Errc::kInvalidArgument;
  } else if (s == 403 || s == 409) {
    errc = Errc::kPolicy;
  } else if (s == 404) {
    errc = Errc::kNotFound;
  } else if (s == 411 || s == 413) {
    errc = Errc::kLimit;
  } else if (s >= 400 && s < 500) {
    errc = Errc::kInvalidArgument;
  }
  return Error(errc, message + " (" + code + ", HTTP " + std::to_string(s) + ")");
}

}  // namespace upkeep::upk
