// The only file that includes cpprestsdk (and with it Boost): keep it that way.
#include <cpprest/http_client.h>
#include <pplx/pplxtasks.h>

#include <exception>

#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::tuf {
namespace {

namespace http = web::http;

class HttpFetcher final : public Fetcher {
 public:
  explicit HttpFetcher(HttpFetcherOptions options) : options_(std::move(options)) {}

  Status Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override {
    // Cancelling closes the connection, so data past the cap is not even received.
    pplx::cancellation_token_source cancel;
    try {
      web::uri uri{utility::conversions::to_string_t(url)};
      const auto scheme = uri.scheme();
      if (scheme != U("http") && scheme != U("https")) {
        return Error(Errc::kInvalidArgument, url + ": only http and https URLs are supported");
      }
      http::client::http_client_config config;
      config.set_timeout(options_.timeout);
      http::client::http_client client(uri, config);
      http::http_request request(http::methods::GET);
      request.headers().add(http::header_names::user_agent, utility::conversions::to_string_t(options_.user_agent));
      http::http_response response = client.request(request, cancel.get_token()).get();

      const auto code = response.status_code();
      if (code == http::status_codes::NotFound || code == http::status_codes::Forbidden) {
        cancel.cancel();
        return Error(Errc::kNotFound, url + ": HTTP " + std::to_string(code));
      }
      if (code != http::status_codes::OK) {
        cancel.cancel();
        return Error(Errc::kIo, url + ": HTTP " + std::to_string(code));
      }
      const auto& headers = response.headers();
      if (headers.has(http::header_names::content_length) && headers.content_length() > max_bytes) {
        cancel.cancel();
        return Error(Errc::kLimit, url + ": Content-Length " + std::to_string(headers.content_length()) +
                                       " is more than the limit of " + std::to_string(max_bytes) + " bytes");
      }

      auto body = response.body().streambuf();
      std::uint64_t total = 0;
      char buf[65536];
      for (;;) {
        std::size_t n = body.getn(reinterpret_cast<std::uint8_t*>(buf), sizeof buf).get();
        if (n == 0) break;
        total += n;
        if (total > max_bytes) {
          cancel.cancel();
          return Error(Errc::kLimit, url + ": more than the limit of " + std::to_string(max_bytes) + " bytes");
        }
        auto st = sink(std::string_view(buf, n));
        if (!st) {
          cancel.cancel();
          return st.error();
        }
      }
      return OkStatus();
    } catch (const std::exception& e) {
      cancel.cancel();
      return Error(Errc::kIo, url + ": " + e.what());
    }
  }

 private:
  HttpFetcherOptions options_;
};

}  // namespace

std::unique_ptr<Fetcher> MakeHttpFetcher(HttpFetcherOptions options) {
  return std::make_unique<HttpFetcher>(std::move(options));
}

}  // namespace upkeep::tuf
