// NodeService (this node's stage/install/status on its own agent), the production AgentOpener,
// and the signed TLS peer server in front of them.
#include <sys/stat.h>

#include <mutex>

#include "upkeep/agent/cluster.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/store.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/source.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::agent {
namespace {

// This node's agent as the CLI opens it (runtime.hpp).
class FileSession final : public AgentSession {
 public:
  explicit FileSession(std::unique_ptr<AgentRuntime> rt) : rt_(std::move(rt)) {}
  Agent& agent() override { return *rt_->agent; }

 private:
  std::unique_ptr<AgentRuntime> rt_;
};

Expected<std::unique_ptr<AgentSession>> OpenFileSession(const std::filesystem::path& config_path, bool read_only,
                                                        const std::function<void(const std::string&)>& log) {
  UPK_TRY_ASSIGN(AgentConfig config, AgentConfig::Load(config_path));
  UPK_TRY_ASSIGN(auto rt, OpenAgentRuntime(std::move(config), read_only, log));
  return std::unique_ptr<AgentSession>(std::make_unique<FileSession>(std::move(rt)));
}

// The staged steps as ["NAME VERSION", ...].
Json StepsJson(const std::vector<trust::AssignmentStep>& steps) {
  Json a = Json::array();
  for (const auto& s : steps) a.push_back(s.name + " " + s.version.ToString());
  return a;
}

// Installed versions as {NAME: VERSION}.
Json Versions(const Agent& agent) {
  Json out = Json::object();
  for (const auto& [name, version] : agent.Installed()) out[name] = version.ToString();
  return out;
}

class BusyGuard {
 public:
  explicit BusyGuard(std::atomic<bool>& flag) : flag_(flag) {}
  ~BusyGuard() { flag_.store(false); }
  BusyGuard(const BusyGuard&) = delete;
  BusyGuard& operator=(const BusyGuard&) = delete;

 private:
  std::atomic<bool>& flag_;
};

constexpr const char* kBusyPrefix = "busy: ";

}  // namespace

bool IsBusyError(const Error& e) { return e.code() == Errc::kPolicy && e.message().starts_with(kBusyPrefix); }

AgentOpener MakeAgentOpener(std::filesystem::path agent_config_path) {
  return [path = std::move(agent_config_path)](bool read_only) { return OpenFileSession(path, read_only, {}); };
}

NodeService::NodeService(AgentOpener opener, std::function<void(const std::string&)> log,
                         std::function<::upkeep::Status()> before_install)
    : opener_(std::move(opener)), log_(std::move(log)), before_install_(std::move(before_install)) {}

void NodeService::Log(const std::string& line) const {
  if (log_) log_(line);
}

// Opens the agent for one unit of work; the caller must have set busy_ and resets it.
Expected<std::unique_ptr<AgentSession>> NodeService::Claim() {
  auto session = opener_(false);
  if (!session.ok()) {
    // Another process (the daemon, a CLI command) holds the store lock.
    if (IsStoreLocked(session.error())) {
      return Error(Errc::kPolicy, std::string(kBusyPrefix) + session.error().message());
    }
    return session.error();
  }
  return session;
}

Expected<Json> NodeService::Stage(const std::filesystem::path& bundle) {
  bool expected = false;
  if (!busy_.compare_exchange_strong(expected, true)) {
    return Error(Errc::kPolicy, std::string(kBusyPrefix) + "this node is working on another cluster request");
  }
  BusyGuard guard(busy_);
  UPK_TRY_ASSIGN(auto session, Claim());
  UPK_TRY_ASSIGN(auto source, packages::OpenFileSource(bundle));
  ImportOptions options;
  options.install = false;
  options.force = false;
  options.retry = false;
  auto imported = session->agent().ImportBundle(*source, options);
  if (!imported.ok()) {
    Log("stage refused: " + imported.error().message());
    return imported.error();
  }
  Log("staged bundle " + imported->bundle_id);
  return Json{{"bundle_id", imported->bundle_id}, {"steps", StepsJson(imported->steps)}};
}

Expected<Json> NodeService::Install() {
  bool expected = false;
  if (!busy_.compare_exchange_strong(expected, true)) {
    return Error(Errc::kPolicy, std::string(kBusyPrefix) + "this node is working on another cluster request");
  }
  BusyGuard guard(busy_);
  if (before_install_) {
    if (auto st = before_install_(); !st.ok()) {
      Log("install not started: " + st.error().message());
      return st.error();
    }
  }
  UPK_TRY_ASSIGN(auto session, Claim());
  Agent& agent = session->agent();
  Json installed = Json::array();
  std::string outcome = "ok";
  std::string message;
  // Each step changes the installed state, so the next InstallNext sees the next step; the
  // bound only guards against a loop that never ends.
  for (int i = 0; i < 1000; ++i) {
    auto r = agent.InstallNext(true);
    if (!r.ok()) {
      outcome = "error";
      message = r.error().message();
      break;
    }
    if (r->outcome == InstallOutcome::kNothing) {
      if (!r->message.empty()) message = r->message;
      break;
    }
    if (r->outcome == InstallOutcome::kInstalled) {
      installed.push_back(r->name + " " + r->version);
      Log("installed " + r->name + " " + r->version);
      continue;
    }
    outcome = r->outcome == InstallOutcome::kFailedRolledBack ? "failed" : "waiting";
    message = r->message.empty() ? r->name + " " + r->version : r->message;
    break;
  }
  return Json{{"installed", installed}, {"outcome", outcome}, {"message", message}, {"versions", Versions(agent)}};
}

Expected<Json> NodeService::Status() {
  UPK_TRY_ASSIGN(auto session, opener_(true));
  Agent& agent = session->agent();
  Json staged = Json::array();
  auto plan = agent.Plan();
  if (plan.ok()) {
    for (const auto& p : *plan) {
      if (p.state == "installed") continue;
      staged.push_back({{"name", p.step.name}, {"version", p.step.version.ToString()}, {"state", p.state},
                        {"reason", p.reason}});
    }
  }
  Json out = {{"installed", Versions(agent)}, {"staged", staged}, {"busy", busy_.load()}};
  if (!plan.ok()) out["plan_error"] = plan.error().message();
  return out;
}

// ---------------------------------------------------------------------------------------------
// Peer server

struct PeerServer::Impl {
  PeerServerOptions o;
  trust::ReplayCache cache;
  trust::RequestVerifier verifier;
  std::unique_ptr<net::Server> server;

  explicit Impl(PeerServerOptions options)
      : o(std::move(options)), cache(o.replay_cache_entries), verifier(*o.clock, cache) {}

  // Who signed the request, or the 4xx answer. The body is bound by the signature: for the
  // bundle upload through the signed "sha256" query parameter (checked against the received
  // file), for the other routes it must be empty.
  std::optional<net::Response> Authenticate(const net::Request& req) const {
    trust::RequestSignature sig;
    const auto id = req.Header(trust::kApplianceHeader);
    const auto ts = req.Header(trust::kTimestampHeader);
    const auto nonce = req.Header(trust::kNonceHeader);
    const auto signature = req.Header(trust::kSignatureHeader);
    if (!id || !ts || !nonce || !signature) {
      return net::Response::JsonError(401, "unsigned", "cluster requests must be signed by a cluster node");
    }
    const ClusterNode* node = o.config->FindById(*id);
    if (node == nullptr) {
      return net::Response::JsonError(401, "unknown_node",
                                      "appliance " + std::string(id->substr(0, 80)) + " is not a node of this cluster");
    }
    sig.appliance_id = std::string(*id);
    sig.timestamp = std::string(*ts);
    sig.nonce = std::string(*nonce);
    sig.signature_hex = std::string(*signature);
    trust::RequestToSign to_sign;
    const std::string method(req.method_name());
    to_sign.method = method;
    to_sign.path_and_query = req.target();
    to_sign.body = {};
    trust::RequestCheck failed = trust::RequestCheck::kOk;
    auto verified = verifier.Verify(to_sign, sig, node->public_key, &failed);
    if (!verified.ok()) {
      const int status = failed == trust::RequestCheck::kMalformed ? 400
                         : failed == trust::RequestCheck::kBusy    ? 503
                                                                   : 401;
      return net::Response::JsonError(status, trust::RequestCheckName(failed), verified.error().message());
    }
    return std::nullopt;
  }

  std::optional<net::Response> CheckBusy() const {
    if (o.service->busy()) {
      return net::Response::JsonError(409, "busy", "this node is working on another cluster request");
    }
    return std::nullopt;
  }

  static net::Response Refused(const Error& e) {
    if (IsBusyError(e)) return net::Response::JsonError(409, "busy", e.message());
    if (e.code() == Errc::kIo || e.code() == Errc::kInternal) return net::Response::FromError(e);
    // The node refused the bundle (another appliance's, tampered, expired, older...).
    return net::Response::JsonError(409, ErrcName(e.code()), e.message());
  }

  net::Response OnBundle(const net::Request& req) const {
    const auto& file = req.body_file();
    const auto want = req.QueryParam("sha256");
    if (!file || !want || !IsLowerHex(*want, 64)) {
      return net::Response::JsonError(400, "bad_request", "PUT /cluster/v1/bundle needs ?sha256=HEX and a body");
    }
    if (file->sha256_hex != *want) {
      return net::Response::JsonError(400, "body_mismatch",
                                      "the bundle received has SHA-256 " + file->sha256_hex +
                                          ", not the signed " + *want + " (damaged in transit?)");
    }
    auto staged = o.service->Stage(file->path);
    if (!staged.ok()) return Refused(staged.error());
    return net::Response::Json(200, *staged);
  }
};

PeerServer::PeerServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
PeerServer::~PeerServer() { Stop(); }

Expected<std::unique_ptr<PeerServer>> PeerServer::Start(PeerServerOptions options) {
  if (options.config == nullptr || options.clock == nullptr || options.service == nullptr ||
      options.upload_dir.empty()) {
    return Error(Errc::kInvalidArgument, "PeerServer: config, clock, service and upload_dir are required");
  }
  std::error_code ec;
  std::filesystem::create_directories(options.upload_dir, ec);
  if (ec) return Error(Errc::kIo, options.upload_dir.string() + ": " + ec.message());
  ::chmod(options.upload_dir.c_str(), 0700);
  auto impl = std::make_unique<Impl>(std::move(options));
  Impl* self = impl.get();
  net::ServerOptions so;
  so.endpoints = {self->o.config->listen};
  so.endpoints[0].tls = true;
  net::TlsOptions tls;
  tls.certificate_chain = self->o.config->tls_cert;
  tls.private_key = self->o.config->tls_key;
  so.tls = tls;
  so.io_threads = self->o.io_threads;
  so.worker_threads = self->o.worker_threads;
  so.max_connections = 256;
  so.max_in_flight = 64;
  so.metrics = false;
  so.default_max_body = 0;  // only the bundle route has a body
  self->server = std::make_unique<net::Server>(std::move(so));

  net::RouteOptions bundle;
  bundle.max_body_bytes = static_cast<std::size_t>(self->o.max_bundle_bytes);
  bundle.use_worker_pool = true;
  bundle.body_to_file = self->o.upload_dir;
  // Authenticate and refuse a busy node before a single body byte is read.
  bundle.precheck = [self](const net::Request& req) -> std::optional<net::Response> {
    if (auto refused = self->Authenticate(req)) return refused;
    return self->CheckBusy();
  };
  UPK_TRY(self->server->Handle(
      net::Method::kPut, "/cluster/v1/bundle", [self](const net::Request& req) { return self->OnBundle(req); },
      bundle));

  net::RouteOptions install;
  install.max_body_bytes = 0;
  install.use_worker_pool = true;
  install.precheck = bundle.precheck;
  UPK_TRY(self->server->Handle(
      net::Method::kPost, "/cluster/v1/install",
      [self](const net::Request&) {
        auto r = self->o.service->Install();
        if (!r.ok()) return Impl::Refused(r.error());
        return net::Response::Json(200, *r);
      },
      install));

  net::RouteOptions status;
  status.max_body_bytes = 0;
  status.use_worker_pool = true;
  status.precheck = [self](const net::Request& req) { return self->Authenticate(req); };
  UPK_TRY(self->server->Handle(
      net::Method::kGet, "/cluster/v1/status",
      [self](const net::Request&) {
        auto r = self->o.service->Status();
        if (!r.ok()) return net::Response::FromError(r.error());
        return net::Response::Json(200, *r);
      },
      status));
  UPK_TRY(self->server->Start());
  return std::unique_ptr<PeerServer>(new PeerServer(std::move(impl)));
}

std::uint16_t PeerServer::port() const {
  auto p = impl_->server->ports();
  return p.empty() ? 0 : p.front();
}
void PeerServer::Stop() {
  if (impl_ && impl_->server) impl_->server->Stop(std::chrono::seconds(5));
}
void PeerServer::Wait() { impl_->server->Wait(); }
void PeerServer::StopOnSignals() { impl_->server->StopOnSignals(); }

}  // namespace upkeep::agent
