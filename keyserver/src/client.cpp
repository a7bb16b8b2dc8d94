// Like packages/tuf/http_fetcher.cpp, the only keyserver file that includes cpprestsdk (and with
// it Boost): the rest of the updater sees just client.hpp.
#include "upkeep/keyserver/client.hpp"

#include <cpprest/http_client.h>
#include <pplx/pplxtasks.h>

#include <exception>

#include "upkeep/trust/identity.hpp"

namespace upkeep::keyserver {
namespace {

namespace http = web::http;

constexpr std::uint64_t kMaxAnswerBytes = 16 * 1024 * 1024;
// Error text from the keyserver ends up in the updater's logs: keep it short and printable.
constexpr std::size_t kMaxErrorTextChars = 300;

std::string Printable(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, kMaxErrorTextChars)) {
    out += (c >= 0x20 && c < 0x7f) ? c : '?';
  }
  if (text.size() > kMaxErrorTextChars) out += "...";
  return out;
}

// "HTTP 404 unknown_appliance: no appliance apl-..." from a {"error": {"code", "message"}} body.
std::string DescribeAnswer(int status, const std::string& body) {
  std::string out = "HTTP " + std::to_string(status);
  auto json = ParseJson(body);
  if (json.ok() && json->is_object() && json->contains("error") && (*json)["error"].is_object()) {
    const Json& e = (*json)["error"];
    if (e.contains("code") && e["code"].is_string()) out += " " + Printable(e["code"].get<std::string>());
    if (e.contains("message") && e["message"].is_string()) out += ": " + Printable(e["message"].get<std::string>());
  } else {
    out += " (no error body)";
  }
  return out;
}

Error ErrorFor(int status, const std::string& what, const std::string& body) {
  const std::string detail = what + ": " + DescribeAnswer(status, body);
  if (status == 401) return Error(Errc::kVerification, "keyserver refused the updater token: " + detail);
  if (status == 404) return Error(Errc::kNotFound, "keyserver: " + detail);
  if (status == 403) return Error(Errc::kPolicy, "keyserver: " + detail);
  if (status >= 400 && status < 500) return Error(Errc::kInvalidArgument, "keyserver: " + detail);
  return Error(Errc::kIo, "keyserver unavailable: " + detail);
}

Error Malformed(const std::string& what, const std::string& why) {
  return Error(Errc::kParse, "keyserver: " + what + ": malformed answer: " + why);
}

// Serialising a Json with invalid UTF-8 throws; this is a public-API boundary.
Expected<std::string> Dump(const Json& json) {
  try {
    return json.dump();
  } catch (const std::exception& e) {
    return Error(Errc::kInvalidArgument, std::string("cannot serialise request body: ") + e.what());
  }
}

Expected<SysTime> TimeField(const Json& obj, const char* name) {
  UPK_TRY_ASSIGN(std::string text, GetString(obj, name));
  auto t = ParseTimestamp(text);
  if (!t.ok()) return t.error().Wrap(std::string("field '") + name + "'");
  return t;
}

struct Answer {
  int status = 0;
  std::string body;
};

class HttpKeyserverClient final : public KeyserverClient {
 public:
  HttpKeyserverClient(web::uri base, KeyserverClientOptions options)
      : base_(std::move(base)), options_(std::move(options)) {}

  Expected<Json> Keys() override {
    const std::string what = "GET /api/v1/keys";
    UPK_TRY_ASSIGN(Json json, Call(http::methods::GET, "/api/v1/keys", std::nullopt, false, what));
    if (!json.is_object() || !json.contains("roles") || !json["roles"].is_object()) {
      return Malformed(what, "no 'roles' object");
    }
    return json;
  }

  Expected<ApplianceRecord> GetAppliance(const std::string& appliance_id) override {
    // Checked before it goes into a URL path.
    if (!trust::IsValidApplianceId(appliance_id)) {
      return Error(Errc::kInvalidArgument, "not an appliance id: " + Printable(appliance_id));
    }
    const std::string path = "/api/v1/appliances/" + appliance_id;
    const std::string what = "GET " + path;
    UPK_TRY_ASSIGN(Json json, Call(http::methods::GET, path, std::nullopt, true, what));
    auto record = ParseAppliance(json, appliance_id);
    if (!record.ok()) return Malformed(what, record.error().message());
    return record;
  }

  Expected<Json> Sign(std::string_view role, const Json& signed_part) override {
    if (role != "timestamp" && role != "snapshot" && role != "assignment") {
      return Error(Errc::kInvalidArgument, "keyserver signs timestamp, snapshot or assignment, not '" +
                                               Printable(role) + "'");
    }
    if (!signed_part.is_object()) return Error(Errc::kInvalidArgument, "the signed part must be a JSON object");
    UPK_TRY_ASSIGN(std::string body, Dump(signed_part));
    const std::string path = "/api/v1/sign/" + std::string(role);
    const std::string what = "POST " + path;
    UPK_TRY_ASSIGN(Json json, Call(http::methods::POST, path, std::move(body), true, what));
    if (!json.is_object() || !json.contains("signatures") || !json["signatures"].is_array() ||
        json["signatures"].empty() || !json.contains("signed") || !json["signed"].is_object()) {
      return Malformed(what, "not a signed envelope {\"signatures\", \"signed\"}");
    }
    // What came back must be what was asked for; an assignment differs only in its re-sealed
    // content keys, so at least its type and appliance must match.
    const Json& got = json["signed"];
    if (role == "assignment") {
      if (got.value("_type", "") != "assignment" || !signed_part.contains("appliance_id") ||
          got.value("appliance_id", Json()) != signed_part["appliance_id"]) {
        return Malformed(what, "signed assignment is not the one sent");
      }
    } else if (got != signed_part) {
      return Malformed(what, "signed metadata differs from what was sent");
    }
    return json;
  }

  Expected<PassThrough> Enrol(std::string_view request_body) override {
    // No token: the appliance's licence key and signature are the proof, not the updater.
    UPK_TRY_ASSIGN(Answer answer,
                   Exchange(http::methods::POST, "/api/v1/enrol", std::string(request_body), false, "POST /api/v1/enrol"));
    return PassThrough{answer.status, std::move(answer.body)};
  }

  Expected<RevocationPage> RevokedSince(std::optional<SysTime> since) override {
    std::string path = "/api/v1/revocations";
    if (since) path += "?since=" + FormatTimestamp(*since);  // [0-9TZ:-] only: nothing to escape
    const std::string what = "GET /api/v1/revocations";
    UPK_TRY_ASSIGN(Json json, Call(http::methods::GET, path, std::nullopt, true, what));
    auto page = ParseRevocations(json);
    if (!page.ok()) return Malformed(what, page.error().message());
    return page;
  }

 private:
  static Expected<ApplianceRecord> ParseAppliance(const Json& json, const std::string& asked) {
    if (!json.is_object()) return Error(Errc::kParse, "not a JSON object");
    ApplianceRecord rec;
    UPK_TRY_ASSIGN(rec.appliance_id, GetString(json, "appliance_id"));
    if (rec.appliance_id != asked) return Error(Errc::kParse, "answer is for another appliance");
    UPK_TRY_ASSIGN(const Json* key, GetObject(json, "public_key"));
    // The id is derived from the key: a record whose key doesn't give its id is not trusted.
    auto pub = trust::AppliancePublicKey::FromJson(*key);
    if (!pub.ok()) return pub.error().Wrap("field 'public_key'");
    if (pub->appliance_id() != asked) return Error(Errc::kParse, "field 'public_key' does not match the appliance id");
    rec.public_key = *key;
    UPK_TRY_ASSIGN(rec.customer, GetString(json, "customer"));
    UPK_TRY_ASSIGN(std::string status, GetString(json, "status"));
    if (status != "active" && status != "revoked") return Error(Errc::kParse, "field 'status': unknown value");
    rec.revoked = status == "revoked";
    UPK_TRY_ASSIGN(rec.enrolled_at, TimeField(json, "enrolled_at"));
    if (json.contains("revoked_at") && !json["revoked_at"].is_null()) {
      UPK_TRY_ASSIGN(SysTime at, TimeField(json, "revoked_at"));
      rec.revoked_at = at;
    }
    UPK_TRY_ASSIGN(rec.maintenance_end, TimeField(json, "maintenance_end"));
    UPK_TRY_ASSIGN(rec.in_maintenance, GetBool(json, "in_maintenance"));
    UPK_TRY_ASSIGN(const Json* features, GetArray(json, "features"));
    for (const Json& f : *features) {
      if (!f.is_string()) return Error(Errc::kParse, "field 'features': not all strings");
      rec.features.push_back(f.get<std::string>());
    }
    return rec;
  }

  static Expected<RevocationPage> ParseRevocations(const Json& json) {
    if (!json.is_object()) return Error(Errc::kParse, "not a JSON object");
    RevocationPage page;
    UPK_TRY_ASSIGN(page.now, TimeField(json, "now"));
    if (json.contains("truncated")) {
      UPK_TRY_ASSIGN(page.truncated, GetBool(json, "truncated"));
    }
    UPK_TRY_ASSIGN(const Json* revoked, GetArray(json, "revoked"));
    page.revoked.reserve(revoked->size());
    for (const Json& r : *revoked) {
      if (!r.is_object()) return Error(Errc::kParse, "field 'revoked': entries must be objects");
      RevokedAppliance entry;
      UPK_TRY_ASSIGN(entry.appliance_id, GetString(r, "appliance_id"));
      if (!trust::IsValidApplianceId(entry.appliance_id)) {
        return Error(Errc::kParse, "field 'revoked': not an appliance id: " + Printable(entry.appliance_id));
      }
      UPK_TRY_ASSIGN(entry.revoked_at, TimeField(r, "revoked_at"));
      page.revoked.push_back(std::move(entry));
    }
    return page;
  }

  // A 2xx answer as JSON, or the mapped error.
  Expected<Json> Call(const http::method& method, const std::string& path_and_query, std::optional<std::string> body,
                      bool authenticated, const std::string& what) {
    UPK_TRY_ASSIGN(Answer answer, Exchange(method, path_and_query, std::move(body), authenticated, what));
    if (answer.status < 200 || answer.status > 299) return ErrorFor(answer.status, what, answer.body);
    auto json = ParseJson(answer.body);
    if (!json.ok()) return Malformed(what, json.error().message());
    return json;
  }

  // One request on its own connection. Nothing here is shared between calls, which is what makes
  // the client safe to use from several threads.
  Expected<Answer> Exchange(const http::method& method, const std::string& path_and_query,
                            std::optional<std::string> body, bool authenticated, const std::string& what) {
    // Cancelling closes the connection, so an oversized answer is not even received in full.
    pplx::cancellation_token_source cancel;
    try {
      http::client::http_client_config config;
      config.set_timeout(options_.timeout);
      http::client::http_client client(base_, config);
      http::http_request request(method);
      request.set_request_uri(utility::conversions::to_string_t(path_and_query));
      request.headers().add(http::header_names::accept, U("application/json"));
      if (authenticated) {
        request.headers().add(http::header_names::authorization,
                              utility::conversions::to_string_t("Bearer " + options_.updater_token));
      }
      if (body) request.set_body(std::move(*body), "application/json");
      http::http_response response = client.request(request, cancel.get_token()).get();

      Answer answer;
      answer.status = response.status_code();
      const auto& headers = response.headers();
      if (headers.has(http::header_names::content_length) && headers.content_length() > kMaxAnswerBytes) {
        cancel.cancel();
        return Error(Errc::kLimit, "keyserver: " + what + ": answer of " + std::to_string(headers.content_length()) +
                                       " bytes is more than the limit of " + std::to_string(kMaxAnswerBytes));
      }
      auto stream = response.body().streambuf();
      char buf[65536];
      for (;;) {
        const std::size_t n = stream.getn(reinterpret_cast<std::uint8_t*>(buf), sizeof buf).get();
        if (n == 0) break;
        if (answer.body.size() + n > kMaxAnswerBytes) {
          cancel.cancel();
          return Error(Errc::kLimit, "keyserver: " + what + ": answer is more than the limit of " +
                                         std::to_string(kMaxAnswerBytes) + " bytes");
        }
        answer.body.append(buf, n);
      }
      return answer;
    } catch (const std::exception& e) {
      // cpprestsdk's messages name the failure (refused, timed out, ...), never our headers.
      cancel.cancel();
      return Error(Errc::kIo, "keyserver unavailable: " + what + ": " + Printable(e.what()));
    }
  }

  const web::uri base_;
  const KeyserverClientOptions options_;
};

}  // namespace

Expected<std::unique_ptr<KeyserverClient>> MakeHttpKeyserverClient(KeyserverClientOptions options) {
  if (options.updater_token.empty()) return Error(Errc::kInvalidArgument, "keyserver client: no updater token");
  for (char c : options.updater_token) {
    // Anything else could split or corrupt the Authorization header; the token itself is not named.
    if (c <= 0x20 || c >= 0x7f) {
      return Error(Errc::kInvalidArgument, "keyserver client: the updater token has a space or control character");
    }
  }
  if (options.timeout <= std::chrono::milliseconds(0)) {
    return Error(Errc::kInvalidArgument, "keyserver client: the time-out must be positive");
  }
  try {
    web::uri base{utility::conversions::to_string_t(options.base_url)};
    const bool bare = base.user_info().empty() && (base.path().empty() || base.path() == U("/")) &&
                      base.query().empty() && base.fragment().empty() && !base.host().empty();
    if ((base.scheme() != U("http") && base.scheme() != U("https")) || !bare) {
      // Not echoed: a URL with user info would put a credential into the message.
      return Error(Errc::kInvalidArgument, "keyserver client: base URL must be http(s)://HOST[:PORT]");
    }
    return std::unique_ptr<KeyserverClient>(std::make_unique<HttpKeyserverClient>(std::move(base), std::move(options)));
  } catch (const std::exception& e) {
    return Error(Errc::kInvalidArgument, "keyserver client: base URL is not a URL: " + Printable(e.what()));
  }
}

}  // namespace upkeep::keyserver
