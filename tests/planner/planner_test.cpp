// MakePlan on long, realistic chains: intermediate versions, base/software interleaving, waits,
// major lines, caps, missing requirements, gaps, and the wording of every reason.
#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <algorithm>
#include <random>

#include "fixtures.hpp"
#include "upkeep/packages/planner.hpp"

namespace upkeep::packages {
namespace {

using namespace testing;
using ::testing::HasSubstr;

const BlockedRelease* FindBlocked(const Plan& plan, const std::string& name, const char* version) {
  for (const auto& b : plan.blocked) {
    if (b.name == name && b.version == V(version)) return &b;
  }
  return nullptr;
}

PlanOptions AllowMajor(std::initializer_list<const char*> names) {
  PlanOptions o;
  for (const char* n : names) o.allow_major.insert(n);
  return o;
}

// Replays a plan on the installed set and checks every step was applicable when taken.
void ExpectStepsApplicable(const Installed& installed, const Catalog& catalog, const Plan& plan) {
  Installed state = installed;
  for (const auto& step : plan.steps) {
    const auto* r = catalog.Find(step.name, step.version);
    ASSERT_NE(r, nullptr) << step.name;
    ASSERT_TRUE(state.count(step.name)) << step.name;
    EXPECT_GT(step.version, state[step.name]) << step.name;
    if (r->manifest.upgrades_from) {
      EXPECT_GE(state[step.name], *r->manifest.upgrades_from) << step.name;
    }
    for (const auto& req : r->manifest.requires_) {
      ASSERT_TRUE(state.count(req.name)) << step.name << " needs " << req.name;
      EXPECT_GE(state[req.name], req.min_version) << step.name << " needs " << req.name;
    }
    state[step.name] = step.version;
  }
}

TEST(Planner, ApplianceYearsBehindInstallsEveryIntermediateInOrder) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Installed installed = Inst({{"base", "1.0.0"}, {"software", "5.0.0"}});
  Plan plan = MakePlan(installed, catalog, AllowMajor({"base", "software"}));
  std::vector<std::string> expected = {
      "base 1.1.0",     "base 1.3.0",     "software 5.2.0", "software 6.0.0", "base 1.5.0",
      "software 6.1.0", "software 7.0.0", "software 7.2.0", "base 2.0.0",     "base 2.2.0",
      "software 8.0.0", "software 8.1.0", "software 9.0.0"};
  EXPECT_EQ(StepLabels(plan), expected);
  ExpectStepsApplicable(installed, catalog, plan);
  EXPECT_TRUE(plan.blocked.empty());
  // Each software step waits for the previous software step's settle time; base steps never wait.
  std::vector<std::uint32_t> waits;
  for (const auto& s : plan.steps) waits.push_back(s.wait_hours);
  std::vector<std::uint32_t> expected_waits = {0, 0, 0, 24, 0, 24, 12, 48, 0, 0, 24, 24, 0};
  EXPECT_EQ(waits, expected_waits);
  EXPECT_EQ(plan.TotalWaitHours(), 156u);
  EXPECT_EQ(plan.steps[0].kind, Kind::kBase);
  EXPECT_EQ(plan.steps[2].kind, Kind::kSoftware);
}

TEST(Planner, StepReasonsSayWhyEachStepIsThere) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "5.0.0"}}), catalog, AllowMajor({"base", "software"}));
  ASSERT_EQ(plan.steps.size(), 13u);
  // An intermediate step names the gate of the next step of the same package.
  EXPECT_EQ(plan.steps[0].reason, "intermediate: base 1.3.0 upgrades only from >= 1.1.0");
  EXPECT_EQ(plan.steps[1].reason, "intermediate: base 1.5.0 upgrades only from >= 1.3.0; enables software 6.0.0");
  EXPECT_EQ(plan.steps[2].reason, "intermediate: software 6.0.0 upgrades only from >= 5.2.0");
  EXPECT_EQ(plan.steps[6].reason, "intermediate: software 7.2.0 upgrades only from >= 7.0.0");
  // base 1.5.0 opens software 7.0.0.
  EXPECT_THAT(plan.steps[4].reason, HasSubstr("enables software 7.0.0"));
  // base 2.0.0 enables software 8.0.0.
  EXPECT_EQ(plan.steps[8].reason, "intermediate: base 2.2.0 upgrades only from >= 2.0.0; enables software 8.0.0");
  EXPECT_EQ(plan.steps[9].reason, "target: newest release of base; enables software 9.0.0");
  EXPECT_EQ(plan.steps[12].reason, "target: newest release of software");
  // software 7.2.0 is what base 2.0.0 was waiting for.
  EXPECT_THAT(plan.steps[7].reason, HasSubstr("enables base 2.0.0"));
}

TEST(Planner, LastSoftwareSettleAppliesToTheFirstSoftwareStep) {
  Catalog catalog = MakeCatalog(VendorReleases());
  PlanOptions options = AllowMajor({"base", "software"});
  options.last_software_settle_hours = 36;
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "5.0.0"}}), catalog, options);
  ASSERT_GE(plan.steps.size(), 4u);
  EXPECT_EQ(plan.steps[0].wait_hours, 0u);  // base
  EXPECT_EQ(plan.steps[1].wait_hours, 0u);  // base
  EXPECT_EQ(plan.steps[2].wait_hours, 36u);
  EXPECT_EQ(plan.steps[3].wait_hours, 24u);
  EXPECT_EQ(plan.TotalWaitHours(), 156u + 36u);
}

TEST(Planner, MajorLinesAreNotCrossedWithoutOptIn) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Installed installed = Inst({{"base", "1.0.0"}, {"software", "5.0.0"}});
  Plan plan = MakePlan(installed, catalog, {});
  EXPECT_EQ(StepLabels(plan), (std::vector<std::string>{"base 1.1.0", "base 1.3.0", "software 5.2.0"}));
  EXPECT_EQ(plan.steps[1].reason, "highest reachable: base 1.5.0 needs software >= 6.0.0");
  EXPECT_EQ(plan.steps[2].reason, "target: newest release of software in the 5.x line");
  // One blocked entry per major line above the final version, each the newest of its line.
  std::vector<std::string> blocked;
  for (const auto& b : plan.blocked) blocked.push_back(b.name + " " + b.version.ToString());
  EXPECT_EQ(blocked, (std::vector<std::string>{"base 1.5.0", "base 2.2.0", "software 6.1.0", "software 7.2.0",
                                               "software 8.1.0", "software 9.0.0"}));
  EXPECT_EQ(FindBlocked(plan, "base", "1.5.0")->reason,
            "base 1.5.0 needs software >= 6.0.0; software 6.0.0 is a new major version (5.x installed): crossing "
            "majors needs an explicit opt-in (--allow-major software)");
  EXPECT_EQ(FindBlocked(plan, "base", "2.2.0")->reason,
            "base 2.2.0 is a new major version (1.x installed): crossing majors needs an explicit opt-in "
            "(--allow-major base)");
  EXPECT_EQ(FindBlocked(plan, "software", "9.0.0")->reason,
            "software 9.0.0 is a new major version (5.x installed): crossing majors needs an explicit opt-in "
            "(--allow-major software)");
}

TEST(Planner, SoftwareOptInButBaseNotStopsAtTheBaseLine) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Installed installed = Inst({{"base", "1.0.0"}, {"software", "5.0.0"}});
  Plan plan = MakePlan(installed, catalog, AllowMajor({"software"}));
  EXPECT_EQ(StepLabels(plan), (std::vector<std::string>{"base 1.1.0", "base 1.3.0", "software 5.2.0",
                                                        "software 6.0.0", "base 1.5.0", "software 6.1.0",
                                                        "software 7.0.0", "software 7.2.0"}));
  ExpectStepsApplicable(installed, catalog, plan);
  EXPECT_EQ(plan.steps.back().reason, "highest reachable: software 9.0.0 upgrades only from >= 8.1.0");
  EXPECT_EQ(FindBlocked(plan, "software", "8.1.0")->reason,
            "software 8.1.0 upgrades only from >= 8.0.0; software 8.0.0 needs base >= 2.0.0; base 2.0.0 is a new "
            "major version (1.x installed): crossing majors needs an explicit opt-in (--allow-major base)");
  EXPECT_EQ(FindBlocked(plan, "software", "9.0.0")->reason,
            "software 9.0.0 upgrades only from >= 8.1.0; software 8.1.0 upgrades only from >= 8.0.0; software 8.0.0 "
            "needs base >= 2.0.0; base 2.0.0 is a new major version (1.x installed): crossing majors needs an "
            "explicit opt-in (--allow-major base)");
  EXPECT_EQ(FindBlocked(plan, "base", "2.2.0")->reason,
            "base 2.2.0 is a new major version (1.x installed): crossing majors needs an explicit opt-in "
            "(--allow-major base)");
  EXPECT_EQ(FindBlocked(plan, "base", "1.5.0"), nullptr);  // reached
}

TEST(Planner, MajorLineCrossedWithOptIn) {
  Catalog catalog = MakeCatalog({{"base", "2.3.0", kBase},
                                 {"base", "2.4.0", kBase},
                                 {"base", "3.0.0", kBase, {}, "2.4.0"},
                                 {"base", "3.1.0", kBase, {}, "3.0.0"}});
  Installed installed = Inst({{"base", "2.3.0"}});
  Plan without = MakePlan(installed, catalog, {});
  EXPECT_EQ(StepLabels(without), (std::vector<std::string>{"base 2.4.0"}));
  ASSERT_EQ(without.blocked.size(), 1u);
  EXPECT_EQ(without.blocked[0].reason,
            "base 3.1.0 is a new major version (2.x installed): crossing majors needs an explicit opt-in "
            "(--allow-major base)");
  EXPECT_EQ(without.steps[0].reason, "target: newest release of base in the 2.x line");

  Plan with = MakePlan(installed, catalog, AllowMajor({"base"}));
  EXPECT_EQ(StepLabels(with), (std::vector<std::string>{"base 2.4.0", "base 3.0.0", "base 3.1.0"}));
  EXPECT_EQ(with.steps[0].reason, "intermediate: base 3.0.0 upgrades only from >= 2.4.0");
  EXPECT_EQ(with.steps[1].reason, "intermediate: base 3.1.0 upgrades only from >= 3.0.0");
  EXPECT_EQ(with.steps[2].reason, "target: newest release of base");
  EXPECT_TRUE(with.blocked.empty());
}

TEST(Planner, CapStopsThePlanAndIsReported) {
  Catalog catalog = MakeCatalog(VendorReleases());
  PlanOptions options = AllowMajor({"base", "software"});
  options.max_version["software"] = V("8.0.0");
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "5.0.0"}}), catalog, options);
  ASSERT_FALSE(plan.steps.empty());
  EXPECT_EQ(plan.steps.back().name + " " + plan.steps.back().version.ToString(), "software 8.0.0");
  EXPECT_EQ(plan.steps.back().reason, "target: highest release of software allowed by the cap 8.0.0");
  for (const auto& s : plan.steps) {
    if (s.name == "software") {
      EXPECT_LE(s.version, V("8.0.0"));
    }
  }
  EXPECT_EQ(FindBlocked(plan, "software", "8.1.0")->reason, "software 8.1.0 is capped at 8.0.0 by the rollout/option");
  EXPECT_EQ(FindBlocked(plan, "software", "9.0.0")->reason, "software 9.0.0 is capped at 8.0.0 by the rollout/option");
  EXPECT_EQ(plan.blocked.size(), 2u);
}

TEST(Planner, CapAboveWhereThePlanStopsSaysBoth) {
  Catalog catalog = MakeCatalog(VendorReleases());
  PlanOptions options = AllowMajor({"software"});
  options.max_version["software"] = V("8.0.0");
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "5.0.0"}}), catalog, options);
  EXPECT_EQ(plan.steps.back().version, V("7.2.0"));
  EXPECT_EQ(FindBlocked(plan, "software", "8.1.0")->reason,
            "software 8.1.0 is capped at 8.0.0 by the rollout/option; software 8.0.0 needs base >= 2.0.0; base 2.0.0 "
            "is a new major version (1.x installed): crossing majors needs an explicit opt-in (--allow-major base)");
  EXPECT_EQ(FindBlocked(plan, "software", "9.0.0")->reason, "software 9.0.0 is capped at 8.0.0 by the rollout/option");
}

TEST(Planner, CapBelowInstalledPlansNothingForThatName) {
  Catalog catalog = MakeCatalog({{"software", "8.0.0"}, {"software", "8.1.0"}});
  PlanOptions options;
  options.max_version["software"] = V("7.0.0");
  Plan plan = MakePlan(Inst({{"software", "8.0.0"}}), catalog, options);
  EXPECT_TRUE(plan.steps.empty());
  ASSERT_EQ(plan.blocked.size(), 1u);
  EXPECT_EQ(plan.blocked[0].reason, "software 8.1.0 is capped at 7.0.0 by the rollout/option");
}

TEST(Planner, RequirementOnAPackageThatIsNotInstalled) {
  Catalog catalog = MakeCatalog({{"software", "9.0.0"},
                                 {"software", "9.1.0", kSw, {{"addon-x", "1.0.0"}}},
                                 {"addon-x", "1.0.0", Kind::kAddon}});
  Plan plan = MakePlan(Inst({{"software", "9.0.0"}}), catalog, {});
  EXPECT_TRUE(plan.steps.empty());  // addon-x is not installed, so it is not planned either
  ASSERT_EQ(plan.blocked.size(), 1u);
  EXPECT_EQ(plan.blocked[0].name, "software");
  EXPECT_EQ(plan.blocked[0].version, V("9.1.0"));
  EXPECT_EQ(plan.blocked[0].reason, "software 9.1.0 needs addon-x >= 1.0.0, which is not installed");
}

TEST(Planner, AddonInstalledIsPlannedBeforeSoftwareThatNeedsIt) {
  Catalog catalog = MakeCatalog({{"software", "9.0.0"},
                                 {"software", "9.1.0", kSw, {{"addon-x", "1.2.0"}}, std::nullopt, 24},
                                 {"addon-x", "1.0.0", Kind::kAddon},
                                 {"addon-x", "1.2.0", Kind::kAddon},
                                 {"console", "9.1.0", Kind::kClient, {{"software", "9.1.0"}}}});
  Installed installed = Inst({{"software", "9.0.0"}, {"addon-x", "1.0.0"}, {"console", "9.0.0"}});
  Plan plan = MakePlan(installed, catalog, {});
  EXPECT_EQ(StepLabels(plan), (std::vector<std::string>{"addon-x 1.2.0", "software 9.1.0", "console 9.1.0"}));
  EXPECT_EQ(plan.steps[0].reason, "target: newest release of addon-x; enables software 9.1.0");
  EXPECT_EQ(plan.steps[1].reason, "target: newest release of software; enables console 9.1.0");
  EXPECT_EQ(plan.steps[1].wait_hours, 0u);
  EXPECT_EQ(plan.steps[2].wait_hours, 0u);  // clients don't take part in the software wait chain
  EXPECT_EQ(plan.steps[2].kind, Kind::kClient);
}

TEST(Planner, GapInTheChainIsReported) {
  Catalog catalog = MakeCatalog({{"software", "8.0.0"},
                                 {"software", "8.1.0"},
                                 {"software", "8.3.0", kSw, {}, "8.2.0"},
                                 {"software", "9.0.0", kSw, {}, "8.5.0"}});
  Plan plan = MakePlan(Inst({{"software", "8.0.0"}}), catalog, AllowMajor({"software"}));
  EXPECT_EQ(StepLabels(plan), (std::vector<std::string>{"software 8.1.0"}));
  ASSERT_EQ(plan.blocked.size(), 2u);
  EXPECT_EQ(FindBlocked(plan, "software", "8.3.0")->reason,
            "software 8.3.0 upgrades only from >= 8.2.0, and no release of software in [8.2.0, 8.3.0) exists to "
            "bridge the gap from 8.1.0");
  EXPECT_EQ(FindBlocked(plan, "software", "9.0.0")->reason,
            "software 9.0.0 upgrades only from >= 8.5.0, and no release of software in [8.5.0, 9.0.0) exists to "
            "bridge the gap from 8.1.0");
  EXPECT_EQ(plan.steps[0].reason, "highest reachable: software 9.0.0 upgrades only from >= 8.5.0");
}

TEST(Planner, RequirementNoReleaseSatisfies) {
  Catalog catalog = MakeCatalog({{"base", "1.0.0", kBase}, {"software", "2.0.0"},
                                 {"software", "2.1.0", kSw, {{"base", "1.5.0"}}}});
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "2.0.0"}}), catalog, {});
  EXPECT_TRUE(plan.steps.empty());
  ASSERT_EQ(plan.blocked.size(), 1u);
  EXPECT_EQ(plan.blocked[0].reason, "software 2.1.0 needs base >= 1.5.0, and no release of base >= 1.5.0 exists");
}

TEST(Planner, CircularRequirementIsNamedNotLooped) {
  Catalog catalog = MakeCatalog({{"a", "1.1.0", kSw, {{"b", "1.1.0"}}}, {"b", "1.1.0", kSw, {{"a", "1.1.0"}}}});
  Plan plan = MakePlan(Inst({{"a", "1.0.0"}, {"b", "1.0.0"}}), catalog, {});
  EXPECT_TRUE(plan.steps.empty());
  ASSERT_EQ(plan.blocked.size(), 2u);
  EXPECT_EQ(plan.blocked[0].reason,
            "a 1.1.0 needs b >= 1.1.0; b 1.1.0 needs a >= 1.1.0; a 1.1.0 is already waiting on this chain (circular "
            "requirement)");
}

TEST(Planner, BaseThatNeedsSoftwareDoesNotDeadlock) {
  // Base goes first by rule, but its only release needs newer software: software must go first.
  Catalog catalog = MakeCatalog({{"base", "4.1.0", kBase, {{"software", "10.2.0"}}},
                                 {"software", "10.2.0", kSw, {}, std::nullopt, 24},
                                 {"software", "10.3.0", kSw, {{"base", "4.1.0"}}, std::nullopt, 24}});
  Installed installed = Inst({{"base", "4.0.0"}, {"software", "10.1.0"}});
  Plan plan = MakePlan(installed, catalog, {});
  EXPECT_EQ(StepLabels(plan), (std::vector<std::string>{"software 10.2.0", "base 4.1.0", "software 10.3.0"}));
  EXPECT_EQ(plan.steps[2].wait_hours, 24u);
  EXPECT_EQ(plan.steps[0].reason, "intermediate: software 10.3.0 needs base >= 4.1.0; enables base 4.1.0");
  EXPECT_EQ(plan.steps[1].reason, "target: newest release of base; enables software 10.3.0");
  EXPECT_TRUE(plan.blocked.empty());
  ExpectStepsApplicable(installed, catalog, plan);
}

TEST(Planner, EmptyCatalogAndUpToDate) {
  Catalog empty;
  Plan none = MakePlan(Inst({{"base", "1.0.0"}}), empty, {});
  EXPECT_TRUE(none.steps.empty());
  EXPECT_TRUE(none.blocked.empty());
  EXPECT_EQ(none.ToJson().dump(), R"({"blocked":[],"steps":[]})");

  Catalog catalog = MakeCatalog(VendorReleases());
  Plan current = MakePlan(Inst({{"base", "2.2.0"}, {"software", "9.0.0"}}), catalog, {});
  EXPECT_TRUE(current.steps.empty());
  EXPECT_TRUE(current.blocked.empty());
  // Installed newer than anything in the catalog, and nothing installed at all.
  EXPECT_TRUE(MakePlan(Inst({{"software", "99.0.0"}}), catalog, {}).steps.empty());
  EXPECT_TRUE(MakePlan({}, catalog, {}).steps.empty());
}

TEST(Planner, OnlyInstalledNamesArePlanned) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Plan plan = MakePlan(Inst({{"software", "9.0.0"}, {"other", "1.0.0"}}), catalog, {});
  EXPECT_TRUE(plan.steps.empty());  // base is in the catalog but not installed
  EXPECT_TRUE(plan.blocked.empty());
}

TEST(Planner, ShuffledCatalogGivesTheSamePlan) {
  std::vector<R> releases = VendorReleases();
  releases.push_back({"software", "10.0.0", kSw, {{"base", "3.0.0"}}, "9.0.0"});
  releases.push_back({"console", "9.0.0", Kind::kClient, {{"software", "9.0.0"}}});
  releases.push_back({"addon-x", "1.1.0", Kind::kAddon, {{"base", "2.0.0"}}});
  Installed installed = Inst({{"base", "1.0.0"}, {"software", "5.0.0"}, {"console", "5.0.0"}, {"addon-x", "1.0.0"}});
  PlanOptions options = AllowMajor({"base", "software", "console"});
  std::string reference = MakePlan(installed, MakeCatalog(releases), options).ToJson().dump();
  std::mt19937 rng(7);
  for (int i = 0; i < 20; ++i) {
    std::shuffle(releases.begin(), releases.end(), rng);
    EXPECT_EQ(MakePlan(installed, MakeCatalog(releases), options).ToJson().dump(), reference);
  }
}

TEST(Planner, PlanJsonHasExactlyTheDocumentedShape) {
  Catalog catalog = MakeCatalog(VendorReleases());
  Plan plan = MakePlan(Inst({{"base", "1.0.0"}, {"software", "5.0.0"}}), catalog, AllowMajor({"software"}));
  Json j = plan.ToJson();
  ASSERT_EQ(j.size(), 2u);
  ASSERT_TRUE(j["steps"].is_array());
  ASSERT_TRUE(j["blocked"].is_array());
  ASSERT_EQ(j["steps"].size(), plan.steps.size());
  for (const auto& s : j["steps"]) {
    EXPECT_EQ(s.size(), 5u);
    EXPECT_TRUE(s["name"].is_string());
    EXPECT_TRUE(Version::Parse(s["version"].get<std::string>()).ok());
    EXPECT_TRUE(ParseKind(s["kind"].get<std::string>()).ok());
    EXPECT_TRUE(s["wait_hours"].is_number_unsigned());
    EXPECT_FALSE(s["reason"].get<std::string>().empty());
  }
  ASSERT_FALSE(j["blocked"].empty());
  for (const auto& b : j["blocked"]) {
    EXPECT_EQ(b.size(), 3u);
    EXPECT_FALSE(b["reason"].get<std::string>().empty());
  }
  EXPECT_EQ(j["steps"][3]["wait_hours"], 24);
  EXPECT_EQ(j["steps"][0]["kind"], "base");
}

TEST(Planner, ParseNameVersion) {
  auto ok = ParseNameVersion("software=8.1.0");
  ASSERT_TRUE(ok.ok());
  EXPECT_EQ(ok->first, "software");
  EXPECT_EQ(ok->second, V("8.1.0"));
  for (const char* bad : {"software", "software=", "=8.1.0", "Software=8.1.0", "software=8.1", "software=8.1.0.1",
                          "software=v8.1.0", "soft ware=1.0.0"}) {
    auto r = ParseNameVersion(bad);
    EXPECT_FALSE(r.ok()) << bad;
    if (!r.ok()) {
      EXPECT_THAT(r.error().message(), HasSubstr(std::string(bad))) << bad;
    }
  }
}

// 5,000 releases: 50 packages of 100 releases each, a gate every 10 releases, every package
// needing base at a matching minor; an appliance at the start of every line.
TEST(Planner, FiveThousandReleaseCatalog) {
  std::vector<Manifest> ms;
  Installed installed;
  for (int p = 0; p < 50; ++p) {
    std::string name = p == 0 ? "base" : "pkg" + std::to_string(p);
    for (int i = 0; i < 100; ++i) {
      Manifest m;
      m.name = name;
      m.kind = p == 0 ? Kind::kBase : Kind::kSoftware;
      m.version = Version{1, static_cast<std::uint32_t>(i), 0};
      // Releases 10-19 upgrade only from 9, 20-29 only from 19, ...
      if (i >= 10) m.upgrades_from = Version{1, static_cast<std::uint32_t>(i / 10 * 10 - 1), 0};
      if (p > 0 && i >= 5) m.requires_.push_back({"base", Version{1, static_cast<std::uint32_t>(i - 5), 0}});
      m.settle_hours = 24;
      ms.push_back(std::move(m));
    }
    installed[name] = Version{1, 0, 0};
  }
  std::reverse(ms.begin(), ms.end());
  auto catalog = Catalog::FromManifests(std::move(ms));
  ASSERT_TRUE(catalog.ok());
  EXPECT_EQ(catalog->size(), 5000u);
  Plan plan = MakePlan(installed, *catalog, {});
  // Each gate (every 10 releases) forces one intermediate: 10 steps per package.
  EXPECT_EQ(plan.steps.size(), 500u);
  EXPECT_TRUE(plan.blocked.empty());
  ExpectStepsApplicable(installed, *catalog, plan);
  Installed final_state = installed;
  for (const auto& s : plan.steps) final_state[s.name] = s.version;
  for (const auto& [name, v] : final_state) EXPECT_EQ(v, (Version{1, 99, 0})) << name;
  EXPECT_EQ(plan.steps.front().name, "base");
}

}  // namespace
}  // namespace upkeep::packages
