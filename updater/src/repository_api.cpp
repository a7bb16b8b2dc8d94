// PLACEHOLDER (being written): bootstrap, blobs, releases, channels, /repo/.
#include "context.hpp"
namespace upkeep::updater {
Status InitRepository(Context&) { return OkStatus(); }
Status RegisterRepositoryApi(const std::shared_ptr<Context>&, net::Server&) { return OkStatus(); }
}  // namespace upkeep::updater
