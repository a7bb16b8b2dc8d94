#include "rollout_policy.hpp"

#include <algorithm>

#include "upkeep/common/hash.hpp"

namespace upkeep::updater::policy {

int RolloutBucket(std::int64_t rollout_id, std::string_view appliance_id) {
  const Bytes digest = Sha256("rollout:" + std::to_string(rollout_id) + ":" + std::string(appliance_id));
  std::uint64_t value = 0;
  for (int i = 0; i < 8; ++i) value = (value << 8) | digest[static_cast<std::size_t>(i)];
  return static_cast<int>(value % kBuckets);
}

bool WaveCovers(const Wave& wave, int bucket, const std::vector<std::string>& groups) {
  if (wave.percent) return bucket < *wave.percent * (kBuckets / 100);
  for (const std::string& g : wave.groups) {
    if (std::find(groups.begin(), groups.end(), g) != groups.end()) return true;
  }
  return false;
}

std::optional<int> OpenWaveFor(std::int64_t rollout_id, const std::vector<Wave>& waves, int open_through,
                               std::string_view appliance_id, const std::vector<std::string>& groups) {
  const int last = std::min(open_through, static_cast<int>(waves.size()) - 1);
  if (last < 0) return std::nullopt;
  const int bucket = RolloutBucket(rollout_id, appliance_id);
  for (int i = 0; i <= last; ++i) {
    if (WaveCovers(waves[static_cast<std::size_t>(i)], bucket, groups)) return i;
  }
  return std::nullopt;
}

Verdict Evaluate(const std::vector<WaveCounts>& counts, int current_wave, int wave_count, const Thresholds& t) {
  WaveCounts open;
  for (int i = 0; i <= current_wave && i < static_cast<int>(counts.size()); ++i) {
    const WaveCounts& c = counts[static_cast<std::size_t>(i)];
    open.members += c.members;
    open.succeeded += c.succeeded;
    open.failed += c.failed;
  }
  const std::string tally = std::to_string(open.succeeded) + " succeeded, " + std::to_string(open.failed) +
                            " failed of " + std::to_string(open.members) + " members in waves 0.." +
                            std::to_string(current_wave);
  if (open.failed > 0 && open.failed * 100 >= static_cast<std::int64_t>(t.error_threshold) * open.members) {
    return {Decision::kPause, "error threshold " + std::to_string(t.error_threshold) + "% reached: " + tally};
  }
  const std::int64_t newest =
      current_wave >= 0 && current_wave < static_cast<int>(counts.size()) ? counts[static_cast<std::size_t>(current_wave)].members : 0;
  if (newest < t.min_wave_members) return {Decision::kNothing, tally};
  if (open.succeeded * 100 < static_cast<std::int64_t>(t.success_threshold) * open.members) {
    return {Decision::kNothing, tally};
  }
  if (current_wave + 1 >= wave_count) {
    return {Decision::kComplete, "success threshold " + std::to_string(t.success_threshold) + "% reached: " + tally};
  }
  return {Decision::kOpenNextWave, "success threshold " + std::to_string(t.success_threshold) + "% reached: " + tally};
}

}  // namespace upkeep::updater::policy
