// upkeep-tuf-client: the TUF client command line (see cli.hpp). Time comes from libc's time()
// through SystemClock, so clock shifters like faketime work on this (dynamically linked) binary.
#include <iostream>

#include "upkeep/tuf/fetcher.hpp"
#include "upkeep/tuf_client/cli.hpp"

int main(int argc, char** argv) {
  auto fetcher = upkeep::tuf::MakeHttpFetcher();
  return upkeep::tuf_client::Run(argc, argv, *fetcher, upkeep::SystemClock::Instance(), std::cout, std::cerr);
}
