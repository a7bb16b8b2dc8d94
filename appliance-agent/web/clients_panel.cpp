// The updates page's panel for endpoint clients of the relay (counts by state, throttles, export) (page_kit.hpp).
#include "page_kit.hpp"

namespace upkeep::agent::webpage {
namespace {

// Not built yet (issue 7): shows nothing and adds no route.
class ClientsPanel final : public Panel {
 public:
  Status Register(RouteSink&) override { return OkStatus(); }
  std::string Render(const web::Principal&, const Json&, web::Authenticator&) override { return {}; }
};

}  // namespace

std::unique_ptr<Panel> MakeClientsPanel(const PanelEnv&) { return std::make_unique<ClientsPanel>(); }

}  // namespace upkeep::agent::webpage
