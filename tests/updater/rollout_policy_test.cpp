// The pure rollout rules: stable buckets, cumulative waves, threshold decisions.
#include "rollout_policy.hpp"

#include <gtest/gtest.h>

#include <string>

#include "upkeep/common/hash.hpp"

namespace upkeep::updater::policy {
namespace {

std::string Id(int i) {
  // Any string works for bucketing; real ids are "apl-" + 32 base32 characters.
  return "apl-" + std::string(32 - std::to_string(i).size(), 'a') + std::to_string(i);
}

TEST(RolloutPolicy, BucketIsStableAndMatchesTheDefinition) {
  const std::string id = Id(7);
  const int bucket = RolloutBucket(42, id);
  EXPECT_EQ(bucket, RolloutBucket(42, id));
  EXPECT_GE(bucket, 0);
  EXPECT_LT(bucket, kBuckets);
  // Recompute from the documented definition.
  const Bytes d = Sha256("rollout:42:" + id);
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | d[static_cast<std::size_t>(i)];
  EXPECT_EQ(bucket, static_cast<int>(v % 10000));
  // Another rollout salts differently (for this id; not a property of every id, so only one).
  int differ = 0;
  for (int i = 0; i < 50; ++i) differ += RolloutBucket(1, Id(i)) != RolloutBucket(2, Id(i));
  EXPECT_GT(differ, 40);
}

TEST(RolloutPolicy, PercentWavesCoverAboutThatShareAndNeverShrink) {
  std::vector<Wave> waves = {Wave{10, {}}, Wave{50, {}}, Wave{100, {}}};
  int in0 = 0, in1 = 0, in2 = 0;
  for (int i = 0; i < 10000; ++i) {
    const std::string id = Id(i);
    auto w0 = OpenWaveFor(9, waves, 0, id, {});
    auto w1 = OpenWaveFor(9, waves, 1, id, {});
    auto w2 = OpenWaveFor(9, waves, 2, id, {});
    in0 += w0.has_value();
    in1 += w1.has_value();
    in2 += w2.has_value();
    if (w0) {
      EXPECT_EQ(*w0, 0);
      EXPECT_EQ(w1, w0);  // a member of wave 0 stays a member of wave 0
    }
    if (w1 && !w0) {
      EXPECT_EQ(*w1, 1);
    }
  }
  EXPECT_NEAR(in0, 1000, 150);
  EXPECT_NEAR(in1, 5000, 300);
  EXPECT_EQ(in2, 10000);
}

TEST(RolloutPolicy, GroupWavesAndMixedWaves) {
  std::vector<Wave> waves = {Wave{std::nullopt, {"lab"}}, Wave{0, {}}, Wave{100, {}}};
  EXPECT_EQ(OpenWaveFor(1, waves, 0, Id(1), {"lab", "x"}), 0);
  EXPECT_EQ(OpenWaveFor(1, waves, 0, Id(1), {"prod"}), std::nullopt);
  EXPECT_EQ(OpenWaveFor(1, waves, 1, Id(1), {"prod"}), std::nullopt);  // 0 %: nobody
  EXPECT_EQ(OpenWaveFor(1, waves, 2, Id(1), {"prod"}), 2);
  EXPECT_EQ(OpenWaveFor(1, waves, 5, Id(1), {}), 2);  // past the last wave: all waves open
  EXPECT_EQ(OpenWaveFor(1, {}, 0, Id(1), {}), std::nullopt);
  EXPECT_FALSE(WaveCovers(Wave{std::nullopt, {}}, 0, {"lab"}));
}

TEST(RolloutPolicy, ThresholdsOpenCompleteAndPause) {
  Thresholds t{80, 20, 2};
  // Too few members in the newest wave: nothing, even at 100 %.
  EXPECT_EQ(Evaluate({{1, 1, 0}}, 0, 3, t).decision, Decision::kNothing);
  // 2 of 2: next wave.
  EXPECT_EQ(Evaluate({{2, 2, 0}}, 0, 3, t).decision, Decision::kOpenNextWave);
  // Below the success threshold: 3 of 4 = 75 %.
  EXPECT_EQ(Evaluate({{4, 3, 0}}, 0, 3, t).decision, Decision::kNothing);
  // 4 of 5 = 80 %: opens.
  EXPECT_EQ(Evaluate({{5, 4, 0}}, 0, 3, t).decision, Decision::kOpenNextWave);
  // The newest wave just opened has no members yet: no cascade.
  EXPECT_EQ(Evaluate({{5, 5, 0}, {0, 0, 0}}, 1, 3, t).decision, Decision::kNothing);
  // Cumulative over open waves: wave 1 with 2 members, all succeeded.
  EXPECT_EQ(Evaluate({{5, 5, 0}, {2, 2, 0}}, 1, 3, t).decision, Decision::kOpenNextWave);
  // Last wave: completes.
  EXPECT_EQ(Evaluate({{5, 5, 0}, {2, 2, 0}, {3, 3, 0}}, 2, 3, t).decision, Decision::kComplete);
  // 1 failure of 5 = 20 %: pauses, and says why with the counts.
  Verdict v = Evaluate({{5, 4, 1}}, 0, 3, t);
  EXPECT_EQ(v.decision, Decision::kPause);
  EXPECT_NE(v.reason.find("1 failed of 5 members"), std::string::npos) << v.reason;
  EXPECT_NE(v.reason.find("20%"), std::string::npos) << v.reason;
  // 1 of 6 = 16 %: below; 5 of 6 succeeded = 83 % -> opens.
  EXPECT_EQ(Evaluate({{6, 5, 1}}, 0, 3, t).decision, Decision::kOpenNextWave);
}

TEST(RolloutPolicy, EdgeThresholds) {
  // error_threshold 0: the first failure pauses; no failure never does.
  EXPECT_EQ(Evaluate({{100, 99, 1}}, 0, 2, Thresholds{0, 0, 1}).decision, Decision::kPause);
  EXPECT_EQ(Evaluate({{0, 0, 0}}, 0, 2, Thresholds{100, 0, 1}).decision, Decision::kNothing);
  // error_threshold 100: only when every member failed.
  EXPECT_EQ(Evaluate({{2, 0, 1}}, 0, 2, Thresholds{100, 100, 1}).decision, Decision::kNothing);
  EXPECT_EQ(Evaluate({{2, 0, 2}}, 0, 2, Thresholds{100, 100, 1}).decision, Decision::kPause);
  // min_wave_members 0 and success 0: the operator asked for waves on a timer of events alone.
  EXPECT_EQ(Evaluate({{0, 0, 0}}, 0, 2, Thresholds{0, 100, 0}).decision, Decision::kOpenNextWave);
  // A single-wave rollout completes instead of opening.
  EXPECT_EQ(Evaluate({{1, 1, 0}}, 0, 1, Thresholds{100, 100, 1}).decision, Decision::kComplete);
}

}  // namespace
}  // namespace upkeep::updater::policy
