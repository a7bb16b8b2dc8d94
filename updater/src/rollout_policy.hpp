// The rollout rules as pure functions (docs/updater-api.md, "Rollouts"; docs/updater.md): which
// appliances a rollout's open waves cover, and what the success/failure counts of its members
// decide. No database, no clock: the callers (fleet_state.cpp at check-in, appliance_api.cpp on
// events) feed them what they read. Thread-safe (no state).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace upkeep::updater::policy {

// Percent waves are resolved on 10,000 buckets (0.01 % steps).
inline constexpr int kBuckets = 10000;

// The stable bucket (0..9999) of an appliance in one rollout: the first 8 bytes of
// SHA-256("rollout:" ID ":" APPLIANCE_ID), big-endian, mod 10000. Salting with the rollout id
// spreads the early waves of successive rollouts over different appliances; the same pair
// always gives the same bucket, so a wave's members never change.
int RolloutBucket(std::int64_t rollout_id, std::string_view appliance_id);

struct Wave {
  std::optional<int> percent;       // 0..100: buckets below percent * 100
  std::vector<std::string> groups;  // used when percent is unset: appliances in any of them
};

// Whether `wave` covers an appliance with this bucket and these groups.
bool WaveCovers(const Wave& wave, int bucket, const std::vector<std::string>& groups);

// The index of the first wave among 0..open_through that covers the appliance, or nullopt.
// Waves are cumulative, so this is the wave the appliance joined the rollout through.
std::optional<int> OpenWaveFor(std::int64_t rollout_id, const std::vector<Wave>& waves, int open_through,
                               std::string_view appliance_id, const std::vector<std::string>& groups);

// Members of one wave and what they reported for the release.
struct WaveCounts {
  std::int64_t members = 0;
  std::int64_t succeeded = 0;
  std::int64_t failed = 0;
};

struct Thresholds {
  int success_threshold = 100;  // % of the open waves' members that must succeed
  int error_threshold = 100;    // % of failures among them that pauses the rollout
  int min_wave_members = 1;     // members the newest open wave needs before the next opens
};

enum class Decision { kNothing, kOpenNextWave, kComplete, kPause };

struct Verdict {
  Decision decision = Decision::kNothing;
  std::string reason;  // for kPause (the pause_reason) and in audit details: names the counts
};

// `counts[i]` are wave i's members; `current_wave` is the newest open wave; `wave_count` how many
// waves the rollout has. Failures are checked first (a failing rollout never advances): when at
// least one member failed and failures reach error_threshold % of the open waves' members, pause.
// Otherwise, when the newest open wave has at least min_wave_members members and the successes
// reach success_threshold % of the open waves' members, open the next wave, or complete after the
// last. Requiring members in the newest wave is what stops every wave opening in a cascade the
// moment the previous ones qualified.
Verdict Evaluate(const std::vector<WaveCounts>& counts, int current_wave, int wave_count, const Thresholds& thresholds);

}  // namespace upkeep::updater::policy
