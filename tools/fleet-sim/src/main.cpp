#include <iostream>

#include "upkeep/fleet_sim/cli.hpp"

int main(int argc, char** argv) { return upkeep::fleet_sim::Main(argc, argv, std::cout, std::cerr); }
