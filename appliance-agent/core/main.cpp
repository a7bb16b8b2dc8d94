#include <iostream>

#include "upkeep/agent/cli.hpp"
#include "upkeep/agent/cluster.hpp"

int main(int argc, char** argv) {
  upkeep::agent::ExtraCommands extra;
  extra["cluster"] = {"Distribute a bundle to the cluster's nodes, install node by node (docs/agent/cluster.md)",
                      upkeep::agent::ClusterMain};
  return upkeep::agent::Main(argc, argv, std::cout, std::cerr, extra);
}
