// The TUF client's network seam (tuf::Fetcher) over the agent's own HttpClient, so TUF metadata
// travels the same verified TLS connection settings (private CA) as check-ins and downloads.
#pragma once

#include <memory>

#include "upkeep/agent/http_client.hpp"
#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::agent {

// `http` must outlive the fetcher.
std::unique_ptr<tuf::Fetcher> MakeTufFetcher(HttpClient& http);

}  // namespace upkeep::agent
