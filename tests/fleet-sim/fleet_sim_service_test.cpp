// fleet-sim against the real updater service in-process (ServiceFixture: real PostgreSQL, the
// Service on a real net::Server, FakeKeyserver with real keys): `fleet-sim checkin` through its
// library Main, the assignment verified with the director key and its content keys opened, an
// event report, and the refusals a stranger gets.
#include <gtest/gtest.h>

#include <sstream>
#include <string>
#include <vector>

#include "service_fixture.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/fleet_sim/cli.hpp"
#include "upkeep/fleet_sim/fleet.hpp"

namespace upkeep::fleet_sim {
namespace {

struct Run {
  int code = 0;
  std::string out, err;
};

Run RunCli(std::vector<std::string> args) {
  args.insert(args.begin(), "fleet-sim");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  Run r;
  r.code = Main(static_cast<int>(argv.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

TEST(FleetSimService, CheckinVerifiesAndReportIsAccepted) {
  updater::test::ServiceFixture f;
  const std::string server = "http://127.0.0.1:" + std::to_string(f.port());
  auto id = FleetIdentity(0);
  ASSERT_TRUE(id.ok());
  const auto id_file = (f.dir() / "id0.json").string();
  ASSERT_EQ(RunCli({"identity", "new", id_file, "--fleet-index", "0"}).code, 0);
  f.keyserver().AddAppliance(*id);
  const auto director_file = f.dir() / "director.pub";
  ASSERT_TRUE(WriteFileAtomic(director_file, f.keyserver().director_key().public_key().ToJson().dump()).ok());

  auto r = RunCli({"checkin", "--server", server, "--identity", id_file, "--installed", "base=1.0.0",
                   "--installed", "site=5.0.0", "--director-key", director_file.string()});
  ASSERT_EQ(r.code, 0) << r.err << r.out;
  EXPECT_NE(r.out.find("appliance " + id->appliance_id()), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("assignment verified with director key"), std::string::npos) << r.out;

  // Raw answer: an assignment, the server's time and the next check-in interval.
  r = RunCli({"--json", "checkin", "--server", server, "--identity", id_file, "--installed", "base=1.0.0"});
  ASSERT_EQ(r.code, 0) << r.err;
  auto json = ParseJson(r.out);
  ASSERT_TRUE(json.ok()) << r.out;
  EXPECT_TRUE((*json).contains("assignment"));

  r = RunCli({"report", "--server", server, "--identity", id_file, "--event", "success", "--name", "base",
              "--version", "1.0.0", "--id", std::string(32, 'a')});
  EXPECT_EQ(r.code, 0) << r.err;
  // The same id again is a duplicate, still 200.
  r = RunCli({"report", "--server", server, "--identity", id_file, "--event", "success", "--name", "base",
              "--version", "1.0.0", "--id", std::string(32, 'a')});
  EXPECT_EQ(r.code, 0) << r.err;

  // A stranger (not enrolled at the keyserver) is refused: exit 1 with the server's error code.
  const auto stranger = (f.dir() / "stranger.json").string();
  ASSERT_EQ(RunCli({"identity", "new", stranger}).code, 0);
  r = RunCli({"checkin", "--server", server, "--identity", stranger, "--installed", "base=1.0.0"});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.err.find("unknown_appliance"), std::string::npos) << r.err;

  // Enrolment is relayed to the keyserver and its answer passed through (the fake knows no
  // licence): exit 1, the appliance id on stdout, the keyserver's code on stderr.
  const auto licence = f.dir() / "licence.txt";
  ASSERT_TRUE(WriteFileAtomic(licence, "ABCDE-FGHJK-LMNPQ-RSTUV\n", 0600).ok());
  r = RunCli({"enrol", "--server", server, "--identity", stranger, "--licence-key-file", licence.string()});
  EXPECT_EQ(r.code, 1) << r.err;
  EXPECT_NE(r.out.find("appliance apl-"), std::string::npos) << r.out;
  EXPECT_NE(r.err.find("unknown_licence"), std::string::npos) << r.err;

  // The load generator against the same service: every check-in answered 200.
  for (std::uint64_t i = 1; i < 4; ++i) f.keyserver().AddAppliance(*FleetIdentity(i));
  r = RunCli({"--json", "load", "--server", server, "--appliances", "4", "--max", "--requests", "40", "--connections",
              "2", "--installed", "base=1.0.0", "--fail-over-permille", "0"});
  EXPECT_EQ(r.code, 0) << r.err << r.out;
}

}  // namespace
}  // namespace upkeep::fleet_sim
