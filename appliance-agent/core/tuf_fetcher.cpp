#include "tuf_fetcher.hpp"

namespace upkeep::agent {
namespace {

class AgentTufFetcher final : public tuf::Fetcher {
 public:
  explicit AgentTufFetcher(HttpClient& http) : http_(http) {}

  Status Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) override {
    HttpRequest request;
    request.url = url;
    request.max_body_bytes = max_bytes;
    BodySink body;
    body.data = [&](std::string_view chunk) { return sink(chunk); };
    UPK_TRY_ASSIGN(HttpResponse response, http_.Send(request, &body));
    if (response.status == 403 || response.status == 404) {
      return Error(Errc::kNotFound, url + ": HTTP " + std::to_string(response.status));
    }
    if (response.status < 200 || response.status > 299) {
      return Error(Errc::kIo, url + ": HTTP " + std::to_string(response.status));
    }
    return OkStatus();
  }

 private:
  HttpClient& http_;
};

}  // namespace

std::unique_ptr<tuf::Fetcher> MakeTufFetcher(HttpClient& http) { return std::make_unique<AgentTufFetcher>(http); }

}  // namespace upkeep::agent
