#include <iostream>

#include "upkeep/keyserver/cli.hpp"

int main(int argc, char** argv) { return upkeep::keyserver::Main(argc, argv, std::cout, std::cerr); }
