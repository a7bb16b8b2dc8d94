#include <iostream>

#include "upkeep/updater/cli.hpp"

int main(int argc, char** argv) { return upkeep::updater::Main(argc, argv, std::cout, std::cerr); }
