// The production wiring of an Agent: everything it needs (store, identity, director key, HTTP
// client, updater API, TUF fetcher, process runner), opened from the agent configuration. The CLI
// and the cluster's node service each open one per unit of work; holding a writable one holds the
// store lock (a second opener gets IsStoreLocked()).
#pragma once

#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "upkeep/agent/agent.hpp"
#include "upkeep/agent/config.hpp"
#include "upkeep/agent/http_client.hpp"
#include "upkeep/agent/process.hpp"
#include "upkeep/agent/store.hpp"
#include "upkeep/agent/updater_client.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::agent {

struct AgentRuntime {
  AgentConfig config;
  std::unique_ptr<Store> store;
  std::optional<trust::ApplianceIdentity> identity;
  std::optional<packages::PublicKey> director;
  std::unique_ptr<HttpClient> http;
  std::unique_ptr<UpdaterApi> api;
  std::unique_ptr<tuf::Fetcher> tuf;
  RealProcessRunner runner;
  std::unique_ptr<Agent> agent;
};

// read_only: the store opened read-only and no network parts (status views while the daemon may
// be working; the Agent then only answers queries). `log` receives progress lines.
Expected<std::unique_ptr<AgentRuntime>> OpenAgentRuntime(AgentConfig config, bool read_only,
                                                         std::function<void(const std::string&)> log = {});

}  // namespace upkeep::agent
