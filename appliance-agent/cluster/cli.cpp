// `appliance-agent cluster serve|distribute FILE|install|status --cluster FILE [--json]`.
#include <ostream>

#include "upkeep/agent/cluster.hpp"
#include "upkeep/agent/relay_host.hpp"

namespace upkeep::agent {
namespace {

constexpr const char* kUsage =
    "usage: appliance-agent cluster serve|distribute BUNDLE|install|status --cluster FILE [--json]\n";

Json ResultJson(const NodeResult& r) {
  Json j = {{"node", r.node}, {"ok", r.ok}, {"http_status", r.http_status}, {"message", r.message}};
  j["answer"] = r.body;
  return j;
}

void PrintStatus(std::ostream& out, const NodeResult& r) {
  if (!r.ok) {
    out << r.node << ": unavailable: " << r.message << "\n";
    return;
  }
  out << r.node << ":";
  if (r.body.is_object() && r.body.contains("installed") && r.body["installed"].is_object()) {
    for (const auto& [name, version] : r.body["installed"].items()) {
      out << " " << name << " " << (version.is_string() ? version.get<std::string>() : "?");
    }
  }
  std::size_t staged = 0;
  if (r.body.is_object() && r.body.contains("staged") && r.body["staged"].is_array()) staged = r.body["staged"].size();
  out << "; " << staged << " staged" << (r.body.is_object() && r.body.value("busy", false) ? "; busy" : "") << "\n";
}

}  // namespace

constexpr std::chrono::seconds kDrainWait{600};

int ClusterMain(const std::string& agent_config_path, const std::vector<std::string>& args, std::ostream& out,
                std::ostream& err) {
  std::string command, bundle, cluster_file;
  bool json = false;
  for (std::size_t i = 0; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--cluster" && i + 1 < args.size()) {
      cluster_file = args[++i];
    } else if (a == "--json") {
      json = true;
    } else if (a == "-h" || a == "--help") {
      out << kUsage;
      return 0;
    } else if (command.empty() && (a == "serve" || a == "distribute" || a == "install" || a == "status")) {
      command = a;
    } else if (command == "distribute" && bundle.empty() && !a.starts_with("-")) {
      bundle = a;
    } else {
      err << "appliance-agent cluster: unexpected argument '" << a << "'\n" << kUsage;
      return 2;
    }
  }
  if (command.empty() || cluster_file.empty() || (command == "distribute" && bundle.empty())) {
    err << kUsage;
    return 2;
  }
  const auto fail = [&err](const Error& e) {
    err << "appliance-agent: error: " << e.message() << "\n";
    return e.ExitCode();
  };
  auto cluster = ClusterConfig::Load(cluster_file);
  if (!cluster.ok()) return fail(cluster.error());
  auto agent_config = AgentConfig::Load(agent_config_path);
  if (!agent_config.ok()) return fail(agent_config.error());
  auto identity = trust::ApplianceIdentity::Load(agent_config->identity_file);
  if (!identity.ok()) return fail(identity.error().Wrap("identity"));
  if (identity->appliance_id() != cluster->Self().appliance_id) {
    return fail(Error(Errc::kInvalidArgument, cluster_file + ": node " + cluster->node + " has appliance_id " +
                                                  cluster->Self().appliance_id + " but this appliance is " +
                                                  identity->appliance_id()));
  }
  const auto log = [&out](const std::string& line) { out << line << "\n"; };
  // A node that hosts a relay drains it first: no client or console session is cut by the upgrade.
  std::function<Status()> drain;
  if (agent_config->relay) {
    drain = [socket = agent_config->RelaySocket(), log]() -> Status {
      auto left = DrainRelay(socket, kDrainWait, log);
      if (!left.ok() && left.error().code() == Errc::kNotFound) return OkStatus();  // no daemon: no sessions
      if (!left.ok()) return left.error().Wrap("relay drain");
      if (*left > 0) {
        return Error(Errc::kPolicy, "relay drain: " + std::to_string(*left) + " session(s) still open after " +
                                        std::to_string(kDrainWait.count()) + " s; install again once they ended");
      }
      log("relay drained: no session remains");
      return OkStatus();
    };
  }
  NodeService service(MakeAgentOpener(agent_config_path), log, drain);

  if (command == "serve") {
    PeerServerOptions o;
    o.config = &*cluster;
    o.clock = &SystemClock::Instance();
    o.service = &service;
    o.upload_dir = agent_config->state_dir / "cluster-uploads";
    auto server = PeerServer::Start(o);
    if (!server.ok()) return fail(server.error());
    out << "cluster node " << cluster->node << " listening on port " << (*server)->port() << std::endl;
    (*server)->StopOnSignals();
    (*server)->Wait();
    return 0;
  }

  ClusterClientOptions co;
  if (!json) {
    co.progress = [&out, last = -1](const std::string& node, std::uint64_t done, std::uint64_t total) mutable {
      const int pct = total == 0 ? 100 : static_cast<int>(done * 100 / total);
      if (pct / 10 != last / 10) out << "upload " << node << ": " << pct << "%" << std::endl;
      last = pct;
    };
  }
  ClusterClient client(*cluster, *identity, SystemClock::Instance(), SystemRandom::Instance(), service, co);
  bool all_ok = true;
  Json report = Json::object();
  if (command == "distribute") {
    auto results = client.Distribute(bundle);
    if (!results.ok()) return fail(results.error());
    report["nodes"] = Json::array();
    for (const auto& r : *results) {
      all_ok = all_ok && r.ok;
      report["nodes"].push_back(ResultJson(r));
      if (json) continue;
      if (r.ok) {
        const std::size_t steps = r.body.contains("steps") && r.body["steps"].is_array() ? r.body["steps"].size() : 0;
        out << r.node << ": staged bundle " << r.body.value("bundle_id", "") << " (" << steps << " steps)\n";
      } else {
        out << r.node << ": refused: " << r.message << "\n";
      }
    }
  } else if (command == "install") {
    RolloutResult rollout = client.InstallNodeByNode();
    all_ok = !rollout.stopped_at.has_value();
    report["installs"] = Json::array();
    for (const auto& r : rollout.installs) report["installs"].push_back(ResultJson(r));
    report["stopped_at"] = rollout.stopped_at ? Json(*rollout.stopped_at) : Json(nullptr);
    report["status"] = Json::array();
    for (const auto& r : rollout.status) report["status"].push_back(ResultJson(r));
    if (!json) {
      for (const auto& r : rollout.installs) {
        std::string what;
        if (r.body.is_object() && r.body.contains("installed") && r.body["installed"].is_array()) {
          for (const auto& s : r.body["installed"]) what += (what.empty() ? "" : ", ") + s.get<std::string>();
        }
        out << r.node << ": " << (r.ok ? "healthy" : "FAILED: " + r.message)
            << (what.empty() ? "" : " (installed " + what + ")") << "\n";
      }
      if (rollout.stopped_at) out << "rollout stopped at " << *rollout.stopped_at << "; later nodes untouched\n";
      for (const auto& r : rollout.status) PrintStatus(out, r);
    }
  } else {
    report["status"] = Json::array();
    for (const auto& r : client.StatusAll()) {
      all_ok = all_ok && r.ok;
      report["status"].push_back(ResultJson(r));
      if (!json) PrintStatus(out, r);
    }
  }
  if (json) out << report.dump(2) << "\n";
  return all_ok ? 0 : 1;
}

}  // namespace upkeep::agent
