// ClusterClient: signed requests to the other nodes through the agent's HttpClient; the bundle
// upload streams from disk (HttpRequest::body_file), so memory stays flat for any bundle size.
#include <csignal>
#include <fstream>

#include "upkeep/agent/cluster.hpp"
#include "upkeep/agent/http_client.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::agent {
namespace {

constexpr std::size_t kChunk = 1u << 20;
constexpr std::size_t kMaxAnswerBytes = 1u << 20;

NodeResult FromAnswer(const std::string& node, const HttpResponse& r) {
  NodeResult out;
  out.node = node;
  out.http_status = r.status;
  auto body = ParseJson(r.body);
  if (body.ok()) out.body = std::move(body).value();
  out.ok = r.status >= 200 && r.status < 300;
  if (!out.ok) {
    const Json& b = out.body;
    if (b.is_object() && b.contains("error") && b["error"].is_object() && b["error"].contains("message") &&
        b["error"]["message"].is_string()) {
      out.message = b["error"]["message"].get<std::string>();
    } else {
      out.message = "HTTP " + std::to_string(r.status);
    }
  }
  return out;
}

NodeResult Failed(const std::string& node, const Error& e) {
  NodeResult r;
  r.node = node;
  r.message = e.message();
  return r;
}

NodeResult Local(const std::string& node, Expected<Json> value) {
  NodeResult r;
  r.node = node;
  if (!value.ok()) {
    r.message = value.error().message();
    return r;
  }
  r.ok = true;
  r.body = std::move(value).value();
  return r;
}

// An install answer is healthy when every kept step went in.
void JudgeInstall(NodeResult& r) {
  if (!r.ok) return;
  const std::string outcome = r.body.is_object() ? r.body.value("outcome", "") : "";
  if (outcome != "ok") {
    r.ok = false;
    r.message = outcome + ": " + (r.body.is_object() ? r.body.value("message", "") : "");
  }
}

}  // namespace

ClusterClient::ClusterClient(const ClusterConfig& config, const trust::ApplianceIdentity& identity,
                             const Clock& clock, Random& random, NodeService& local, ClusterClientOptions options)
    : config_(config), identity_(identity), clock_(clock), random_(random), local_(local),
      options_(std::move(options)) {
  std::signal(SIGPIPE, SIG_IGN);  // a peer closing mid-upload must be an error, not a signal
}

NodeResult ClusterClient::Call(const ClusterNode& node, const std::string& method, const std::string& path,
                               std::chrono::milliseconds timeout) {
  trust::RequestToSign to_sign;
  to_sign.method = method;
  to_sign.path_and_query = path;
  auto sig = trust::SignRequest(identity_, to_sign, clock_, random_);
  if (!sig.ok()) return Failed(node.name, sig.error());
  HttpClientOptions hopt;
  hopt.ca_file = config_.ca_file;
  hopt.timeout = timeout;
  hopt.max_body_bytes = kMaxAnswerBytes;
  auto http = MakeHttpClient(hopt);
  if (!http.ok()) return Failed(node.name, http.error());
  HttpRequest req;
  req.method = method;
  req.url = node.url + path;
  req.headers = sig->Headers();
  auto r = (*http)->Send(req);
  if (!r.ok()) return Failed(node.name, r.error());
  return FromAnswer(node.name, *r);
}

NodeResult ClusterClient::Upload(const ClusterNode& node, const std::filesystem::path& bundle,
                                 const std::string& sha256_hex, std::uint64_t size) {
  const std::string path = "/cluster/v1/bundle?sha256=" + sha256_hex;
  trust::RequestToSign to_sign;
  to_sign.method = "PUT";
  to_sign.path_and_query = path;  // binds the body through its SHA-256
  auto sig = trust::SignRequest(identity_, to_sign, clock_, random_);
  if (!sig.ok()) return Failed(node.name, sig.error());
  HttpClientOptions hopt;
  hopt.ca_file = config_.ca_file;
  hopt.timeout = options_.timeout;
  hopt.max_body_bytes = kMaxAnswerBytes;
  auto http = MakeHttpClient(hopt);
  if (!http.ok()) return Failed(node.name, http.error());
  HttpRequest req;
  req.method = "PUT";
  req.url = node.url + path;
  req.headers = sig->Headers();
  req.headers.emplace_back("Content-Type", "application/octet-stream");
  req.body_file = bundle;
  // The node verifies the whole bundle before it answers: minutes for a large one.
  req.response_timeout = options_.install_timeout;
  req.upload_progress = [&](std::uint64_t sent, std::uint64_t total) -> ::upkeep::Status {
    if (total != size) {
      return Error(Errc::kIo, bundle.string() + ": changed while it was sent (" + std::to_string(total) +
                                  " bytes, hashed " + std::to_string(size) + ")");
    }
    if (options_.progress) options_.progress(node.name, sent, total);
    return OkStatus();
  };
  auto r = (*http)->Send(req);
  if (!r.ok()) return Failed(node.name, r.error());
  return FromAnswer(node.name, *r);
}

Expected<std::vector<NodeResult>> ClusterClient::Distribute(const std::filesystem::path& bundle) {
  std::uint64_t size = 0;
  std::string sha;
  {
    std::ifstream in(bundle, std::ios::binary);
    if (!in) return Error(Errc::kNotFound, bundle.string() + ": cannot open the bundle");
    Hasher h;
    std::string buf(kChunk, '\0');
    while (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const auto n = static_cast<std::size_t>(in.gcount());
      h.Update(std::string_view(buf.data(), n));
      size += n;
    }
    if (in.bad()) return Error(Errc::kIo, bundle.string() + ": read failed");
    sha = h.FinishHex();
  }
  std::vector<NodeResult> out;
  for (const auto& node : config_.nodes) {
    if (node.name == config_.node) {
      out.push_back(Local(node.name, local_.Stage(bundle)));
    } else {
      out.push_back(Upload(node, bundle, sha, size));
    }
  }
  return out;
}

NodeResult ClusterClient::Install(const ClusterNode& node) {
  NodeResult r = node.name == config_.node ? Local(node.name, local_.Install())
                                           : Call(node, "POST", "/cluster/v1/install", options_.install_timeout);
  JudgeInstall(r);
  return r;
}

NodeResult ClusterClient::Status(const ClusterNode& node) {
  if (node.name == config_.node) return Local(node.name, local_.Status());
  return Call(node, "GET", "/cluster/v1/status", options_.timeout);
}

RolloutResult ClusterClient::InstallNodeByNode() {
  RolloutResult out;
  for (const auto& node : config_.nodes) {
    out.installs.push_back(Install(node));
    if (!out.installs.back().ok) {
      out.stopped_at = node.name;
      break;
    }
  }
  out.status = StatusAll();
  return out;
}

std::vector<NodeResult> ClusterClient::StatusAll() {
  std::vector<NodeResult> out;
  for (const auto& node : config_.nodes) out.push_back(Status(node));
  return out;
}

}  // namespace upkeep::agent
