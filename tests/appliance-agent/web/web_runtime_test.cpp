// The daemon's UpdatesSource (MakeRuntimeUpdatesSource) over a real agent state: the core tests'
// world (core_world.hpp) provisions, checks in and installs; the source reads it read-only.
#include "../core/core_world.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::agent {
namespace {

TEST(RuntimeUpdatesSourceTest, ReadsInstalledPlanAndHistoryFromTheStore) {
  // The read-only runtime judges the assignment by the system clock: the world runs on it too.
  FakeClock clock(std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()));
  Vendor vendor(clock);
  AddStandardReleases(vendor);
  vendor.channel = {"base-2.0.0", "software-7.1.0", "software-8.0.0"};
  World w(vendor, clock);
  w.Provision("base-1.0.0");
  w.Provision("software-7.0.0");
  w.Check();
  w.config.identity_file = w.root() / "identity.json";
  w.config.director_key_file = w.root() / "director.pub";
  ASSERT_TRUE(vendor.identity().Save(w.config.identity_file).ok());
  ASSERT_TRUE(WriteFileAtomic(w.config.director_key_file, vendor.director().public_key().ToJson().dump()).ok());

  auto source = MakeRuntimeUpdatesSource(w.config, 3);
  auto s = source->Status();
  ASSERT_TRUE(s.ok()) << s.error().message();
  EXPECT_EQ((*s)["agent_version"], kAgentVersion);
  ASSERT_EQ((*s)["installed"].size(), 2u) << s->dump(2);
  EXPECT_EQ((*s)["installed"][0]["name"], "base");
  EXPECT_EQ((*s)["installed"][0]["version"], "1.0.0");
  EXPECT_EQ((*s)["installed"][1]["version"], "7.0.0");
  EXPECT_TRUE((*s)["last_check"]["ok"].get<bool>());
  EXPECT_TRUE((*s)["operation"].is_null());
  EXPECT_TRUE((*s)["time_synchronised"].is_boolean() || (*s)["time_synchronised"].is_null());
  ASSERT_FALSE(s->contains("plan_error")) << s->dump(2);
  const Json& plan = (*s)["plan"];
  ASSERT_EQ(plan.size(), 3u) << s->dump(2);
  EXPECT_EQ(plan[0]["name"], "base");
  EXPECT_EQ(plan[0]["version"], "2.0.0");
  EXPECT_EQ(plan[0]["state"], "next");
  EXPECT_EQ(plan[2]["name"], "software");
  EXPECT_EQ(plan[2]["version"], "8.0.0");
  EXPECT_FALSE(plan[2]["reason"].get<std::string>().empty());
  // At most 3 journal records, newest first: the check is the last thing that happened.
  const Json& history = (*s)["history"];
  ASSERT_EQ(history.size(), 3u);
  EXPECT_EQ(history[0]["type"], "check");
  const auto journal = w.Journal();
  EXPECT_EQ(history[2], journal[journal.size() - 3]);
}

TEST(RuntimeUpdatesSourceTest, AnUnreadableStateIsAnError) {
  AgentConfig config;
  config.state_dir = "/nonexistent/upkeep-web-test";
  config.system_root = "/nonexistent/upkeep-web-test/system";
  config.identity_file = "/nonexistent/upkeep-web-test/identity.json";
  config.director_key_file = "/nonexistent/upkeep-web-test/director.pub";
  auto s = MakeRuntimeUpdatesSource(config)->Status();
  EXPECT_FALSE(s.ok());
}

TEST(WebDaemonServiceTest, NoWebSectionNoService) {
  AgentConfig config;
  auto service = WebDaemonService()(config, {});
  ASSERT_TRUE(service.ok());
  EXPECT_EQ(*service, nullptr);
}

}  // namespace
}  // namespace upkeep::agent
