#include <iostream>

#include "upkeep/relay_sim/cli.hpp"

int main(int argc, char** argv) { return upkeep::relay::sim::Main(argc, argv, std::cout, std::cerr); }
