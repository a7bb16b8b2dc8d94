// The updates page's panel for backups (create, list, download, restore) and the vault key export (page_kit.hpp).
#include "page_kit.hpp"

namespace upkeep::agent::webpage {
namespace {

// Not built yet (issue 7): shows nothing and adds no route.
class BackupPanel final : public Panel {
 public:
  Status Register(RouteSink&) override { return OkStatus(); }
  std::string Render(const web::Principal&, const Json&, web::Authenticator&) override { return {}; }
};

}  // namespace

std::unique_ptr<Panel> MakeBackupPanel(const PanelEnv&) { return std::make_unique<BackupPanel>(); }

}  // namespace upkeep::agent::webpage
