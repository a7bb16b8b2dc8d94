// ClusterClient: signed requests to the other nodes; the bundle upload streams from disk over its
// own small TLS connection (the agent's HttpClient holds request bodies in memory).
#include <arpa/inet.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>

#include "upkeep/agent/cluster.hpp"
#include "upkeep/agent/http_client.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::agent {
namespace {

constexpr std::size_t kChunk = 1u << 20;
constexpr std::size_t kMaxAnswerBytes = 1u << 20;

struct HostPort {
  std::string host, port, authority;
};

Expected<HostPort> SplitUrl(const std::string& url) {
  HostPort hp;
  hp.authority = url.substr(8);  // ClusterConfig guarantees "https://" and no path
  const std::string& a = hp.authority;
  if (!a.empty() && a.front() == '[') {
    const auto close = a.find(']');
    if (close == std::string::npos) return Error(Errc::kInvalidArgument, url + ": bad IPv6 host");
    hp.host = a.substr(1, close - 1);
    hp.port = close + 2 <= a.size() && a[close + 1] == ':' ? a.substr(close + 2) : "443";
  } else {
    const auto colon = a.find(':');
    hp.host = a.substr(0, colon);
    hp.port = colon == std::string::npos ? "443" : a.substr(colon + 1);
  }
  return hp;
}

std::string SslError() {
  const unsigned long e = ERR_get_error();
  if (e == 0) return std::strerror(errno);
  char buf[256];
  ERR_error_string_n(e, buf, sizeof buf);
  ERR_clear_error();
  return buf;
}

// One TLS connection used for a single request with a body streamed from a file.
class UploadConnection {
 public:
  UploadConnection(std::string what, std::chrono::milliseconds timeout) : what_(std::move(what)), timeout_(timeout) {}
  ~UploadConnection() {
    if (ssl_) SSL_free(ssl_);
    if (ctx_) SSL_CTX_free(ctx_);
    if (fd_ >= 0) ::close(fd_);
  }
  UploadConnection(const UploadConnection&) = delete;
  UploadConnection& operator=(const UploadConnection&) = delete;

  Status Connect(const HostPort& hp, const std::filesystem::path& ca_file) {
    ctx_ = SSL_CTX_new(TLS_client_method());
    if (!ctx_) return Error(Errc::kInternal, what_ + ": SSL_CTX_new: " + SslError());
    SSL_CTX_set_min_proto_version(ctx_, TLS1_2_VERSION);
    SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
    if (SSL_CTX_load_verify_locations(ctx_, ca_file.c_str(), nullptr) != 1) {
      return Error(Errc::kInvalidArgument, what_ + ": cannot load ca_file " + ca_file.string() + ": " + SslError());
    }
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    if (int rc = ::getaddrinfo(hp.host.c_str(), hp.port.c_str(), &hints, &res); rc != 0) {
      return Error(Errc::kIo, what_ + ": cannot resolve " + hp.host + ": " + gai_strerror(rc));
    }
    std::string last = "no address";
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(timeout_.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((timeout_.count() % 1000) * 1000);
    for (addrinfo* ai = res; ai && fd_ < 0; ai = ai->ai_next) {
      const int fd = ::socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC, ai->ai_protocol);
      if (fd < 0) continue;
      ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
      ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
      if (::connect(fd, ai->ai_addr, ai->ai_addrlen) == 0) {
        fd_ = fd;
      } else {
        last = std::strerror(errno);
        ::close(fd);
      }
    }
    ::freeaddrinfo(res);
    if (fd_ < 0) return Error(Errc::kIo, what_ + ": cannot connect to " + hp.authority + ": " + last);
    ssl_ = SSL_new(ctx_);
    if (!ssl_) return Error(Errc::kInternal, what_ + ": SSL_new: " + SslError());
    in_addr a4{};
    in6_addr a6{};
    X509_VERIFY_PARAM* param = SSL_get0_param(ssl_);
    if (::inet_pton(AF_INET, hp.host.c_str(), &a4) == 1 || ::inet_pton(AF_INET6, hp.host.c_str(), &a6) == 1) {
      X509_VERIFY_PARAM_set1_ip_asc(param, hp.host.c_str());
    } else {
      SSL_set_tlsext_host_name(ssl_, hp.host.c_str());
      SSL_set1_host(ssl_, hp.host.c_str());
    }
    SSL_set_fd(ssl_, fd_);
    ERR_clear_error();
    if (SSL_connect(ssl_) != 1) {
      const long v = SSL_get_verify_result(ssl_);
      return Error(Errc::kIo, what_ + ": TLS handshake with " + hp.authority + " failed: " +
                                  (v != X509_V_OK ? X509_verify_cert_error_string(v) : SslError()));
    }
    return OkStatus();
  }

  Status Write(std::string_view data) {
    while (!data.empty()) {
      ERR_clear_error();
      const int n = SSL_write(ssl_, data.data(), static_cast<int>(std::min<std::size_t>(data.size(), kChunk)));
      if (n <= 0) return Error(Errc::kIo, what_ + ": send failed: " + SslError());
      data.remove_prefix(static_cast<std::size_t>(n));
    }
    return OkStatus();
  }

  // The node verifies the whole bundle before it answers: minutes for a large one.
  void SetReadTimeout(std::chrono::milliseconds t) {
    timeval tv{};
    tv.tv_sec = static_cast<time_t>(t.count() / 1000);
    tv.tv_usec = static_cast<suseconds_t>((t.count() % 1000) * 1000);
    if (fd_ >= 0) ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }

  // Reads the answer to the end of its Content-Length (or of the connection), bounded.
  Expected<HttpResponse> ReadAnswer() {
    std::string buf;
    std::size_t head_end = std::string::npos;
    std::optional<std::size_t> length;
    char tmp[16384];
    for (;;) {
      if (head_end != std::string::npos && length && buf.size() >= head_end + *length) break;
      ERR_clear_error();
      const int n = SSL_read(ssl_, tmp, sizeof tmp);
      if (n <= 0) break;
      buf.append(tmp, static_cast<std::size_t>(n));
      if (buf.size() > kMaxAnswerBytes) return Error(Errc::kLimit, what_ + ": answer over 1 MiB");
      if (head_end == std::string::npos && (head_end = buf.find("\r\n\r\n")) != std::string::npos) {
        head_end += 4;
        const auto lower = [](std::string s) {
          for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
          return s;
        };
        const std::string head = lower(buf.substr(0, head_end));
        if (auto p = head.find("\r\ncontent-length:"); p != std::string::npos) {
          length = static_cast<std::size_t>(std::strtoull(head.c_str() + p + 17, nullptr, 10));
        }
      }
    }
    if (head_end == std::string::npos || !buf.starts_with("HTTP/1.") || buf.size() < 12) {
      return Error(Errc::kIo, what_ + ": no HTTP answer");
    }
    HttpResponse r;
    r.status = std::atoi(buf.substr(9, 3).c_str());
    r.body = buf.substr(head_end, length ? *length : std::string::npos);
    if (length && r.body.size() < *length) return Error(Errc::kIo, what_ + ": answer cut short");
    return r;
  }

 private:
  std::string what_;
  std::chrono::milliseconds timeout_;
  SSL_CTX* ctx_ = nullptr;
  SSL* ssl_ = nullptr;
  int fd_ = -1;
};

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
  auto hp = SplitUrl(node.url);
  if (!hp.ok()) return Failed(node.name, hp.error());
  UploadConnection conn(node.name, options_.timeout);
  if (auto s = conn.Connect(*hp, config_.ca_file); !s.ok()) return Failed(node.name, s.error());
  std::string head = "PUT " + path + " HTTP/1.1\r\nHost: " + hp->authority +
                     "\r\nContent-Type: application/octet-stream\r\nContent-Length: " + std::to_string(size) +
                     "\r\nConnection: close\r\n";
  for (const auto& [k, v] : sig->Headers()) head += k + ": " + v + "\r\n";
  head += "\r\n";
  ::upkeep::Status sent = conn.Write(head);
  std::ifstream in(bundle, std::ios::binary);
  if (!in) return Failed(node.name, Error(Errc::kIo, bundle.string() + ": cannot open"));
  std::string buf(kChunk, '\0');
  std::uint64_t done = 0;
  while (sent.ok() && done < size) {
    in.read(buf.data(), static_cast<std::streamsize>(std::min<std::uint64_t>(kChunk, size - done)));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) return Failed(node.name, Error(Errc::kIo, bundle.string() + ": changed while it was sent"));
    sent = conn.Write(std::string_view(buf.data(), n));
    done += n;
    if (options_.progress) options_.progress(node.name, done, size);
  }
  // A node that refused early (401, 409, 413) answered before closing: prefer its answer.
  if (sent.ok()) conn.SetReadTimeout(options_.install_timeout);
  auto answer = conn.ReadAnswer();
  if (answer.ok()) return FromAnswer(node.name, *answer);
  return Failed(node.name, sent.ok() ? answer.error() : sent.error());
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
