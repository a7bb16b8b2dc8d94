#include "upkeep/agent/runtime.hpp"

#include <utility>

#include "tuf_fetcher.hpp"
#include "upkeep/agent/downloader.hpp"
#include "upkeep/agent/fs.hpp"

namespace upkeep::agent {

Expected<std::unique_ptr<AgentRuntime>> OpenAgentRuntime(AgentConfig config, bool read_only,
                                                         std::function<void(const std::string&)> log) {
  auto rt = std::make_unique<AgentRuntime>();
  rt->config = std::move(config);
  auto identity = trust::ApplianceIdentity::Load(rt->config.identity_file);
  if (!identity.ok()) return identity.error().Wrap("identity (run `appliance-agent init` first)");
  rt->identity.emplace(std::move(identity).value());
  auto director = packages::LoadPublicKey(rt->config.director_key_file);
  if (!director.ok()) return director.error().Wrap("director key");
  rt->director = *director;
  AgentDeps d;
  d.config = &rt->config;
  d.clock = &SystemClock::Instance();
  d.identity = &*rt->identity;
  d.director_key = &*rt->director;
  d.log = std::move(log);
  if (read_only) {
    UPK_TRY_ASSIGN(rt->store, Store::OpenReadOnly(RealFs::Instance(), rt->config.StoreDir()));
    d.store = rt->store.get();
    rt->agent = std::make_unique<Agent>(std::move(d));
    return rt;
  }
  UPK_TRY(RealFs::Instance().CreateDirectories(rt->config.state_dir, 0700));
  UPK_TRY_ASSIGN(rt->store, Store::Open(RealFs::Instance(), rt->config.StoreDir()));
  HttpClientOptions hopt;
  hopt.ca_file = rt->config.ca_file;
  hopt.max_body_bytes = std::uint64_t{8} << 30;  // blobs stream to disk; the download checks the exact length
  UPK_TRY_ASSIGN(rt->http, MakeHttpClient(hopt));
  UpdaterEndpoint endpoint;
  endpoint.base_url = rt->config.updater_url;
  UPK_TRY_ASSIGN(rt->api, MakeUpdaterApi(endpoint, *rt->identity, SystemClock::Instance(), SystemRandom::Instance(),
                                         *rt->http));
  rt->tuf = MakeTufFetcher(*rt->http);
  d.fs = &RealFs::Instance();
  d.store = rt->store.get();
  d.random = &SystemRandom::Instance();
  d.api = rt->api.get();
  d.http = rt->http.get();
  d.tuf_fetcher = rt->tuf.get();
  d.runner = &rt->runner;
  d.sleeper = &RealSleeper::Instance();
  rt->agent = std::make_unique<Agent>(std::move(d));
  return rt;
}

}  // namespace upkeep::agent
