// `upk plan` driven in-process through upkeep::upk::Main, against *.manifest.json fixtures
// written by the test: JSON shape, the readable table, and exit codes for bad input.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "fixtures.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;
using ::testing::HasSubstr;
namespace fs = std::filesystem;

class UpkPlan : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("upkeep-upk-plan-" + std::to_string(::getpid()) + "-" +
                                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    for (const auto& r : VendorReleases()) {
      Manifest m = r.ToManifest();
      std::ofstream(dir_ / (m.Id() + ".manifest.json")) << m.ToJson().dump(2);
    }
  }
  void TearDown() override {
    std::error_code ec;
    fs::remove_all(dir_, ec);
  }

  int Run(std::vector<std::string> args) {
    args.insert(args.begin(), "upk");
    std::vector<const char*> argv;
    for (const auto& a : args) argv.push_back(a.c_str());
    out_.str("");
    err_.str("");
    return upk::Main(static_cast<int>(argv.size()), argv.data(), out_, err_);
  }

  fs::path dir_;
  std::ostringstream out_;
  std::ostringstream err_;
};

TEST_F(UpkPlan, JsonPlanForAnApplianceYearsBehind) {
  int rc = Run({"plan", "--catalog", dir_.string(), "--installed", "base=1.0.0", "--installed", "software=5.0.0",
                "--allow-major", "software", "--json"});
  ASSERT_EQ(rc, 0) << err_.str() << out_.str();
  auto j = ParseJson(out_.str());
  ASSERT_TRUE(j.ok()) << out_.str();
  ASSERT_EQ(j->size(), 2u);
  const Json& steps = (*j)["steps"];
  const Json& blocked = (*j)["blocked"];
  ASSERT_EQ(steps.size(), 8u);
  for (const auto& s : steps) {
    EXPECT_EQ(s.size(), 5u);
    for (const char* key : {"name", "version", "kind", "wait_hours", "reason"}) EXPECT_TRUE(s.contains(key)) << key;
  }
  EXPECT_EQ(steps[0]["name"], "base");
  EXPECT_EQ(steps[0]["version"], "1.1.0");
  EXPECT_EQ(steps[0]["kind"], "base");
  EXPECT_EQ(steps[0]["wait_hours"], 0);
  EXPECT_EQ(steps[3]["name"], "software");
  EXPECT_EQ(steps[3]["version"], "6.0.0");
  EXPECT_EQ(steps[3]["wait_hours"], 24);
  EXPECT_EQ(steps[7]["version"], "7.2.0");
  EXPECT_EQ(steps[7]["wait_hours"], 48);
  ASSERT_EQ(blocked.size(), 3u);
  for (const auto& b : blocked) EXPECT_EQ(b.size(), 3u);
  EXPECT_EQ(blocked[0]["name"], "base");
  EXPECT_EQ(blocked[0]["version"], "2.2.0");
  EXPECT_THAT(blocked[1]["reason"].get<std::string>(), HasSubstr("--allow-major base"));
}

TEST_F(UpkPlan, OptionsReachTheBoundary) {
  ASSERT_EQ(Run({"plan", "--catalog", dir_.string(), "--installed", "base=1.0.0", "--installed", "software=5.0.0",
                 "--allow-major", "software", "--allow-major", "base", "--max", "software=8.0.0",
                 "--last-settle-hours", "36", "--json"}),
            0)
      << err_.str();
  Json j = ParseJson(out_.str()).value();
  EXPECT_EQ(j["steps"].back()["version"], "8.0.0");
  EXPECT_EQ(j["steps"][2]["wait_hours"], 36);
  ASSERT_EQ(j["blocked"].size(), 2u);
  EXPECT_EQ(j["blocked"][0]["reason"], "software 8.1.0 is capped at 8.0.0 by the rollout/option");
}

TEST_F(UpkPlan, ReadableTableWithWaitsAndBlocked) {
  int rc = Run({"plan", "--catalog", dir_.string(), "--installed", "base=1.0.0", "--installed", "software=5.0.0",
                "--allow-major", "software"});
  ASSERT_EQ(rc, 0) << err_.str();
  std::string text = out_.str();
  EXPECT_THAT(text, HasSubstr("Install plan: 8 steps, 108 h of waiting in total"));
  EXPECT_THAT(text, HasSubstr(" 1. base      1.1.0  base"));
  EXPECT_THAT(text, HasSubstr("wait 48 h for clients to follow"));
  EXPECT_THAT(text, HasSubstr("Blocked (3):"));
  EXPECT_THAT(text, HasSubstr("  - base 2.2.0: base 2.2.0 is a new major version"));
  // The wait line comes right before the step it delays.
  auto wait = text.find("wait 48 h");
  auto step = text.find("software  7.2.0");
  ASSERT_NE(wait, std::string::npos);
  ASSERT_NE(step, std::string::npos);
  EXPECT_LT(wait, step);
  EXPECT_EQ(text.find('\n', wait) + 1, text.rfind('\n', step) + 1);
}

TEST_F(UpkPlan, EmptyPlanStillExitsZero) {
  ASSERT_EQ(Run({"plan", "--catalog", dir_.string(), "--installed", "base=2.2.0", "--installed", "software=9.0.0"}), 0);
  EXPECT_THAT(out_.str(), HasSubstr("Nothing to install"));
  EXPECT_THAT(out_.str(), HasSubstr("Blocked: none"));
  ASSERT_EQ(Run({"plan", "--catalog", dir_.string(), "--installed", "base=2.2.0", "--json"}), 0);
  EXPECT_EQ(ParseJson(out_.str()).value(), Json::parse(R"({"steps": [], "blocked": []})"));
}

TEST_F(UpkPlan, BadInputExitsTwo) {
  const std::string catalog = dir_.string();
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("'base' is not NAME=VERSION"));
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("--installed"));
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0.0", "--installed", "base=1.1.0"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("given twice"));
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0.0", "--max", "software"}), 2);
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0.0", "--allow-major", "Bad Name"}), 2);
  EXPECT_EQ(Run({"plan", "--catalog", (dir_ / "missing").string(), "--installed", "base=1.0.0"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("missing"));
  EXPECT_EQ(Run({"plan", "--installed", "base=1.0.0"}), 2);  // --catalog is required
  EXPECT_EQ(Run({"plan", "--catalog", catalog}), 2);         // --installed is required

  std::ofstream(dir_ / "broken.manifest.json") << R"({"name": "base", "version": "x", "kind": "base"})";
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0.0", "--json"}), 2);
  auto j = ParseJson(out_.str());
  ASSERT_TRUE(j.ok()) << out_.str();
  EXPECT_THAT((*j)["error"]["message"].get<std::string>(), HasSubstr("broken.manifest.json"));
  fs::remove(dir_ / "broken.manifest.json");

  std::ofstream(dir_ / "dup.manifest.json") << VendorReleases()[0].ToManifest().ToJson().dump();
  EXPECT_EQ(Run({"plan", "--catalog", catalog, "--installed", "base=1.0.0"}), 2);
  EXPECT_THAT(err_.str(), HasSubstr("duplicate release base 1.0.0"));
  EXPECT_THAT(err_.str(), HasSubstr("dup.manifest.json"));
}

}  // namespace
}  // namespace upkeep::packages
