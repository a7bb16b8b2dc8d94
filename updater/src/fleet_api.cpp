// PLACEHOLDER (being written): rollouts, appliances.
#include "context.hpp"
namespace upkeep::updater {
Status RegisterFleetApi(const std::shared_ptr<Context>&, net::Server&) { return OkStatus(); }
}  // namespace upkeep::updater
