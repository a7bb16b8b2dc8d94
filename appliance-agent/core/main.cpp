#include <iostream>

#include "upkeep/agent/cli.hpp"
#include "upkeep/agent/cluster.hpp"
#include "upkeep/agent/relay_host.hpp"
#include "upkeep/agent/web_host.hpp"

int main(int argc, char** argv) {
  upkeep::agent::ExtraCommands extra;
  extra["cluster"] = {"Distribute a bundle to the cluster's nodes, install node by node (docs/agent/cluster.md)",
                      upkeep::agent::ClusterMain};
  extra["clients"] = {"The endpoint clients of the relay the daemon hosts: counts, throttles, export (docs/agent/relay.md)",
                      upkeep::agent::ClientsMain};
  return upkeep::agent::Main(argc, argv, std::cout, std::cerr, extra,
                             {upkeep::agent::RelayDaemonService(), upkeep::agent::WebDaemonService()});
}
