// The updates page's panel for air-gapped updates (download key with QR code, manual bundle upload) (page_kit.hpp).
#include "page_kit.hpp"

namespace upkeep::agent::webpage {
namespace {

// Not built yet (issue 7): shows nothing and adds no route.
class AirgapPanel final : public Panel {
 public:
  Status Register(RouteSink&) override { return OkStatus(); }
  std::string Render(const web::Principal&, const Json&, web::Authenticator&) override { return {}; }
};

}  // namespace

std::unique_ptr<Panel> MakeAirgapPanel(const PanelEnv&) { return std::make_unique<AirgapPanel>(); }

}  // namespace upkeep::agent::webpage
