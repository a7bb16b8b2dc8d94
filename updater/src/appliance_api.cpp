// PLACEHOLDER (being written): enrol, check-in, events.
#include "context.hpp"
namespace upkeep::updater {
Status InitFleet(Context&) { return OkStatus(); }
Status RegisterApplianceApi(const std::shared_ptr<Context>&, net::Server&) { return OkStatus(); }
}  // namespace upkeep::updater
