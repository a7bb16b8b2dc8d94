// "Distribute to cluster": a cluster is several appliances (nodes), each with its own agent,
// identity and appliance id. A cluster bundle (.upkb with one assignment per node) is uploaded
// from one node to every other node and staged there (verified and kept, nothing installed),
// then installed node by node, stopping at the first node that does not end healthy.
// See docs/agent/cluster.md.
//
// Pieces:
//  - ClusterConfig: the cluster file (strict JSON; errors name the field).
//  - NodeService: this node's side of the protocol (stage, install, status) on its own agent,
//    opened per unit of work through an AgentOpener (the store lock is held only while working;
//    a second unit of work while one runs is refused as busy, kPolicy "busy: ...").
//  - PeerServer: the TLS peer API (net::Server) in front of a NodeService. Every request must be
//    signed (trust/request_signing.hpp) by the identity of a node listed in the cluster file and
//    is replay-protected; anything else is 401 before any body byte is read.
//  - ClusterClient: distributes a bundle (streamed from disk) and drives the node-by-node install.
//
// Threads: PeerServer runs handlers on its own threads; NodeService is safe to call from several
// threads (one unit of work at a time, the others are refused as busy). ClusterClient is used by
// one thread. Everything passed by pointer or reference must outlive the object using it.
// No exception crosses these APIs.
#pragma once

#include <atomic>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/agent/agent.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::agent {

inline constexpr std::uint64_t kMaxClusterBundleBytes = 64ull << 30;
inline constexpr std::size_t kMaxClusterNodes = 64;

struct ClusterNode {
  std::string name;          // [A-Za-z0-9._-]{1,64}, unique
  std::string url;           // "https://host:port" (no path, no trailing '/')
  std::string appliance_id;  // must be the id of public_key
  trust::AppliancePublicKey public_key;
};

struct ClusterConfig {
  std::string node;          // this node's name (one of nodes)
  net::Endpoint listen;      // the peer server's TLS endpoint
  std::filesystem::path tls_cert, tls_key;  // PEM, the peer server's certificate and key
  std::filesystem::path ca_file;            // PEM trust anchor for the other nodes' certificates
  std::vector<ClusterNode> nodes;           // install order, 1..kMaxClusterNodes

  // {"node", "listen": "ADDR:PORT", "tls_cert", "tls_key", "ca_file", "nodes": [{"name", "url",
  //  "appliance_id", "public_key": TUF ed25519 key}]}. Unknown fields, wrong types, duplicates,
  // a node missing from "nodes", an id that is not the key's: kInvalidArgument naming the field.
  // Relative paths are resolved against `base`.
  static Expected<ClusterConfig> FromJson(const Json& json, const std::filesystem::path& base);
  static Expected<ClusterConfig> Load(const std::filesystem::path& file);  // bounded to 1 MiB

  const ClusterNode& Self() const;  // the entry named `node` (FromJson guarantees it exists)
  const ClusterNode* FindById(std::string_view appliance_id) const;
};

// One unit of work on this node's agent: an opened store (read-write: its lock is held) and an
// Agent on it. Destroying it closes the store.
class AgentSession {
 public:
  virtual ~AgentSession() = default;
  virtual Agent& agent() = 0;
};
// Opens a session; read_only opens the store without its lock (status while another works).
// A store locked by another process must come back as an error (kPolicy "... in use ...").
using AgentOpener = std::function<Expected<std::unique_ptr<AgentSession>>(bool read_only)>;

// The production opener: the agent configuration file, identity, director key and store, wired
// as the appliance-agent CLI does.
AgentOpener MakeAgentOpener(std::filesystem::path agent_config_path);

// This node's side: what the peer server runs, and what the client runs for its own node.
class NodeService {
 public:
  // `before_install` runs before Install() changes anything (the relay's drain, so no client or
  // console session is cut by the upgrade); its error stops the install and is returned.
  NodeService(AgentOpener opener, std::function<void(const std::string&)> log = {},
              std::function<::upkeep::Status()> before_install = {});

  // Agent::ImportBundle(install=false) of the bundle file: verified and kept, nothing installed.
  // -> {"bundle_id", "steps"}. Errors: busy (kPolicy "busy: ..."), the import's own error as is
  // (e.g. no assignment for this node).
  Expected<Json> Stage(const std::filesystem::path& bundle);
  // Installs the kept steps now: InstallNext(force) until nothing is left or the first failure.
  // -> {"installed": ["NAME VERSION"...], "outcome": "ok"|"failed"|"waiting"|"error",
  //     "message", "versions": {NAME: VERSION}}. An install that failed is a value
  // (outcome "failed"), not an error. Errors: busy, the store could not be opened.
  Expected<Json> Install();
  // -> {"appliance_id", "installed": {NAME: VERSION}, "staged": [{"name","version","state","reason"}],
  //     "busy"}. Works while a unit of work runs (read-only store).
  Expected<Json> Status();

  bool busy() const { return busy_.load(); }

 private:
  Expected<std::unique_ptr<AgentSession>> Claim();
  void Log(const std::string& line) const;
  AgentOpener opener_;
  std::function<void(const std::string&)> log_;
  std::function<::upkeep::Status()> before_install_;
  std::atomic<bool> busy_{false};
};

bool IsBusyError(const Error& e);

struct PeerServerOptions {
  const ClusterConfig* config = nullptr;
  const Clock* clock = nullptr;  // request timestamps
  NodeService* service = nullptr;
  std::filesystem::path upload_dir;  // received bundles land here (created 0700), deleted after the import
  std::uint64_t max_bundle_bytes = kMaxClusterBundleBytes;
  std::size_t replay_cache_entries = 100000;
  unsigned io_threads = 2;
  unsigned worker_threads = 2;
};

// Routes (all signed; 401 unsigned, unknown node, bad signature, replayed, stale; 400 malformed):
//   PUT  /cluster/v1/bundle?sha256=HEX  body: the bundle (streamed to upload_dir, <= max)
//        200 {"bundle_id","steps"}; 400 body does not match the signed sha256; 409 busy or the
//        import refused it {"error"}; 413 too large.
//   POST /cluster/v1/install   200 NodeService::Install(); 409 busy.
//   GET  /cluster/v1/status    200 NodeService::Status().
class PeerServer {
 public:
  static Expected<std::unique_ptr<PeerServer>> Start(PeerServerOptions options);
  ~PeerServer();
  std::uint16_t port() const;
  void Stop();
  void Wait();
  void StopOnSignals();

 private:
  struct Impl;
  explicit PeerServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// What one node answered (or why it could not be asked).
struct NodeResult {
  std::string node;
  bool ok = false;       // 2xx, and for an install: outcome "ok"
  int http_status = 0;   // 0: not over HTTP (this node, or the connection failed)
  std::string message;   // error or install message
  Json body;             // the answer (null when none)
};

struct RolloutResult {
  std::vector<NodeResult> installs;  // in order, up to and including the first that failed
  std::optional<std::string> stopped_at;  // the node that did not end healthy
  std::vector<NodeResult> status;    // every node afterwards
};

struct ClusterClientOptions {
  std::chrono::milliseconds timeout{60000};          // no progress on a connection for this long
  std::chrono::milliseconds install_timeout{3600000};  // waiting for one node's install, or its import of an upload
  // (node, bytes sent, total) while uploading; may be empty.
  std::function<void(const std::string&, std::uint64_t, std::uint64_t)> progress;
};

class ClusterClient {
 public:
  // `local` is this node's own service (staged and installed without HTTP). Ignores SIGPIPE
  // process-wide (a peer closing mid-upload must be an error, not a signal), as MakeHttpClient.
  ClusterClient(const ClusterConfig& config, const trust::ApplianceIdentity& identity, const Clock& clock,
                Random& random, NodeService& local, ClusterClientOptions options = {});

  // Stages the bundle here and uploads it to every other node (streamed from disk); one result
  // per node in config order. Errors only when the bundle file can't be read at all.
  Expected<std::vector<NodeResult>> Distribute(const std::filesystem::path& bundle);
  // Installs node by node in config order (this node locally), each waited for; stops at the
  // first node that did not end healthy; then the status of every node.
  RolloutResult InstallNodeByNode();
  std::vector<NodeResult> StatusAll();

  // One node.
  NodeResult Upload(const ClusterNode& node, const std::filesystem::path& bundle, const std::string& sha256_hex,
                    std::uint64_t size);
  NodeResult Install(const ClusterNode& node);
  NodeResult Status(const ClusterNode& node);

 private:
  NodeResult Call(const ClusterNode& node, const std::string& method, const std::string& path,
                  std::chrono::milliseconds timeout);
  const ClusterConfig& config_;
  const trust::ApplianceIdentity& identity_;
  const Clock& clock_;
  Random& random_;
  NodeService& local_;
  ClusterClientOptions options_;
};

// `appliance-agent cluster serve|distribute FILE|install|status --cluster FILE`.
// Exit codes: 0 ok, 1 a node refused or did not end healthy, 2 usage, input or I/O error.
int ClusterMain(const std::string& agent_config_path, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err);

}  // namespace upkeep::agent
