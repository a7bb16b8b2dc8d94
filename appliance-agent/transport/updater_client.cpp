#include "upkeep/agent/updater_client.hpp"

#include <algorithm>
#include <charconv>
#include <set>

#include "upkeep/trust/request_signing.hpp"
#include "upkeep/common/bytes.hpp"

namespace upkeep::agent {
namespace {

constexpr std::string_view kBusyPrefix = "updater busy, retry after ";
constexpr std::size_t kMaxEventsPerBatch = 100;
constexpr std::size_t kMaxDetailBytes = 16 * 1024;
constexpr std::size_t kMaxLogTail = 64 * 1024;

std::string Dump(const Json& j) { return j.dump(-1, ' ', false, Json::error_handler_t::replace); }

class Api final : public UpdaterApi {
 public:
  Api(UpdaterEndpoint endpoint, std::string path_prefix, const trust::ApplianceIdentity& identity, const Clock& clock,
      Random& random, HttpClient& http)
      : endpoint_(std::move(endpoint)), prefix_(std::move(path_prefix)), identity_(identity), clock_(clock),
        random_(random), http_(http) {}

  Expected<CheckinReply> Checkin(const trust::InstalledSet& installed, std::string_view agent_version) override {
    Json inst = Json::object();
    for (const auto& [name, version] : installed) inst[name] = version.ToString();
    const std::string body =
        Dump(Json{{"installed", inst}, {"agent_version", agent_version}, {"time", FormatTimestamp(clock_.Now())}});
    UPK_TRY_ASSIGN(Json reply, Post("/api/v1/checkin", body));
    const std::string what = "check-in answer";
    if (!reply.is_object()) return Error(Errc::kParse, what + ": not a JSON object");
    auto it = reply.find("assignment");
    if (it == reply.end() || !it->is_object()) return Error(Errc::kParse, what + ": field 'assignment': not an object");
    CheckinReply out;
    out.assignment = Dump(*it);
    auto server_time = GetString(reply, "server_time");
    if (!server_time.ok()) return server_time.error().Wrap(what);
    auto t = ParseTimestamp(*server_time);
    if (!t.ok()) return t.error().Wrap(what + ": field 'server_time'");
    out.server_time = *t;
    auto next = GetInt(reply, "next_checkin_seconds");
    if (!next.ok()) return next.error().Wrap(what);
    if (*next < 1 || *next > 7 * 86400) {
      return Error(Errc::kParse, what + ": field 'next_checkin_seconds': " + std::to_string(*next) + " is not in 1..604800");
    }
    out.next_checkin = std::chrono::seconds(*next);
    return out;
  }

  Expected<std::size_t> SendEvents(const std::vector<AgentEvent>& events) override {
    static const std::set<std::string, std::less<>> kTypes = {"download", "install", "success", "failure", "rollback"};
    std::vector<Json> encoded;
    encoded.reserve(events.size());
    for (std::size_t i = 0; i < events.size(); ++i) {
      const AgentEvent& e = events[i];
      const std::string what = "event " + std::to_string(i) + " (" + e.id + ")";
      if (!IsLowerHex(e.id, 32)) return Error(Errc::kInvalidArgument, what + ": id must be 32 lower-case hex");
      if (kTypes.find(e.type) == kTypes.end()) return Error(Errc::kInvalidArgument, what + ": unknown type '" + e.type + "'");
      if (e.name.empty() || e.version.empty()) return Error(Errc::kInvalidArgument, what + ": name and version are required");
      Json ev = {{"id", e.id}, {"type", e.type}, {"name", e.name}, {"version", e.version}, {"at", FormatTimestamp(e.at)}};
      if (!e.detail.is_null()) {
        if (!e.detail.is_object()) return Error(Errc::kInvalidArgument, what + ": detail must be an object");
        if (!e.detail.empty()) {
          if (Dump(e.detail).size() > kMaxDetailBytes) {
            return Error(Errc::kInvalidArgument, what + ": detail is more than 16 KiB as JSON");
          }
          ev["detail"] = e.detail;
        }
      }
      if (!e.log_tail.empty()) {
        std::string tail = e.log_tail.size() > kMaxLogTail ? e.log_tail.substr(e.log_tail.size() - kMaxLogTail) : e.log_tail;
        // Invalid UTF-8 is replaced when dumping, which may grow it: keep well inside the bound.
        ev["log_tail"] = std::move(tail);
        if (Dump(ev["log_tail"]).size() > kMaxLogTail + 2) {
          std::string s = e.log_tail.substr(e.log_tail.size() - kMaxLogTail / 4);
          ev["log_tail"] = s;
        }
      }
      encoded.push_back(std::move(ev));
    }
    std::size_t total = 0;
    for (std::size_t begin = 0; begin < encoded.size(); begin += kMaxEventsPerBatch) {
      Json batch = Json::array();
      for (std::size_t i = begin; i < std::min(encoded.size(), begin + kMaxEventsPerBatch); ++i) batch.push_back(encoded[i]);
      UPK_TRY_ASSIGN(Json reply, Post("/api/v1/events", Dump(Json{{"events", batch}})));
      if (!reply.is_object()) return Error(Errc::kParse, "events answer: not a JSON object");
      auto accepted = GetInt(reply, "accepted");
      if (!accepted.ok()) return accepted.error().Wrap("events answer");
      auto duplicates = GetInt(reply, "duplicates");
      if (!duplicates.ok()) return duplicates.error().Wrap("events answer");
      if (*accepted < 0 || *duplicates < 0 || static_cast<std::size_t>(*accepted + *duplicates) > batch.size()) {
        return Error(Errc::kParse, "events answer: accepted + duplicates is not within 0.." + std::to_string(batch.size()));
      }
      total += static_cast<std::size_t>(*accepted + *duplicates);
    }
    return total;
  }

 private:
  Expected<Json> Post(const std::string& path, const std::string& body) {
    const std::string target = prefix_ + path;
    trust::RequestToSign req{"POST", target, body};
    UPK_TRY_ASSIGN(trust::RequestSignature sig, trust::SignRequest(identity_, req, clock_, random_));
    HttpRequest request;
    request.method = "POST";
    request.url = endpoint_.base_url + path;
    request.headers = sig.Headers();
    request.headers.emplace_back("Content-Type", "application/json");
    request.body = body;
    request.max_body_bytes = endpoint_.max_reply_bytes;
    const std::string what = "updater: POST " + target;
    auto response = http_.Send(request);
    if (!response.ok()) {
      if (response.error().code() == Errc::kLimit) return response.error().Wrap(what);
      return Error(Errc::kIo, what + ": " + response.error().message());
    }
    if (response->status != 200) return ErrorFromResponse(*response, what);
    auto json = ParseJson(response->body);
    if (!json.ok()) return json.error().Wrap(what + ": answer");
    return std::move(json).value();
  }

  UpdaterEndpoint endpoint_;
  std::string prefix_;
  const trust::ApplianceIdentity& identity_;
  const Clock& clock_;
  Random& random_;
  HttpClient& http_;
};

}  // namespace

Error BusyError(std::chrono::seconds retry_after) {
  return Error(Errc::kLimit, std::string(kBusyPrefix) + std::to_string(retry_after.count()) + " s");
}

std::optional<std::chrono::seconds> RetryAfter(const Error& error) {
  if (error.code() != Errc::kLimit) return std::nullopt;
  const std::string& m = error.message();
  const std::size_t at = m.rfind(kBusyPrefix);
  if (at == std::string::npos) return std::nullopt;
  const char* begin = m.data() + at + kBusyPrefix.size();
  const char* end = m.data() + m.size();
  long long n = 0;
  auto [ptr, ec] = std::from_chars(begin, end, n);
  if (ec != std::errc() || ptr == begin || std::string_view(ptr, static_cast<std::size_t>(end - ptr)).substr(0, 2) != " s") {
    return std::nullopt;
  }
  return std::chrono::seconds(n);
}

Error ErrorFromResponse(const HttpResponse& response, std::string_view what_view) {
  const std::string what(what_view);
  const int status = response.status;
  if (status == 429 || status == 503) {
    if (auto ra = response.Header("Retry-After")) {
      long long n = 0;
      auto [ptr, ec] = std::from_chars(ra->data(), ra->data() + ra->size(), n);
      if (ec == std::errc() && ptr == ra->data() + ra->size()) {
        return BusyError(std::chrono::seconds(std::clamp<long long>(n, 1, 86400))).Wrap(what);
      }
    }
  }
  std::string detail = "HTTP " + std::to_string(status);
  auto json = ParseJson(response.body.size() <= 64 * 1024 ? response.body : std::string());
  if (json.ok() && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
    const Json& e = (*json)["error"];
    if (e.contains("code") && e["code"].is_string()) detail += " " + e["code"].get<std::string>().substr(0, 64);
    if (e.contains("message") && e["message"].is_string()) detail += ": " + e["message"].get<std::string>().substr(0, 512);
  }
  Errc code = Errc::kIo;
  if (status >= 400 && status < 500) {
    switch (status) {
      case 400: code = Errc::kInvalidArgument; break;
      case 404: code = Errc::kNotFound; break;
      case 413: code = Errc::kLimit; break;
      case 422: code = Errc::kVerification; break;
      default: code = Errc::kPolicy; break;
    }
  }
  return Error(code, what + ": " + detail);
}

Expected<std::unique_ptr<UpdaterApi>> MakeUpdaterApi(UpdaterEndpoint endpoint, const trust::ApplianceIdentity& identity,
                                                     const Clock& clock, Random& random, HttpClient& http) {
  std::string_view url = endpoint.base_url;
  std::size_t scheme = url.find("://");
  if (scheme == std::string_view::npos || (url.substr(0, scheme) != "http" && url.substr(0, scheme) != "https")) {
    return Error(Errc::kInvalidArgument, "updater URL '" + endpoint.base_url + "': must start with http:// or https://");
  }
  if (url.ends_with("/")) return Error(Errc::kInvalidArgument, "updater URL '" + endpoint.base_url + "': no trailing '/'");
  if (url.find_first_of("?#") != std::string_view::npos) {
    return Error(Errc::kInvalidArgument, "updater URL '" + endpoint.base_url + "': no query or fragment");
  }
  const std::size_t path = url.find('/', scheme + 3);
  std::string prefix = path == std::string_view::npos ? std::string() : std::string(url.substr(path));
  return std::unique_ptr<UpdaterApi>(
      std::make_unique<Api>(std::move(endpoint), std::move(prefix), identity, clock, random, http));
}

}  // namespace upkeep::agent
