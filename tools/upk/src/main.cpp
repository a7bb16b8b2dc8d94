#include <iostream>

#include "upkeep/upk/cli.hpp"

int main(int argc, char** argv) { return upkeep::upk::Main(argc, argv, std::cout, std::cerr); }
