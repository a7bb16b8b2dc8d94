// The load generator behind `fleet-sim load`: signed check-ins over kept-alive connections,
// either open-loop at a constant rate or closed-loop as fast as possible.
//
// Open loop (rate > 0): request k is scheduled at start + k / rate. Each connection has its own
// thread; a free thread takes the next scheduled request, sleeps until its time, signs it (fresh
// nonce and time) and sends it. Latency runs from the *scheduled* time, not the send time, so a
// slow server shows up as latency instead of silently lowering the rate (no coordinated
// omission). If every connection is busy, requests queue behind their schedule and that wait is
// counted.
// Closed loop (rate == 0, --max): each thread sends its next request as soon as the previous
// answer arrived; latency runs from the send.
//
// Bounded: duration and request count are capped, threads = connections <= kMaxConnections, and
// latencies go into a fixed-size log-linear histogram (about 0.1 % resolution, 1 us .. ~19 h)
// per thread, merged at the end, so memory does not grow with the run.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "upkeep/common/error.hpp"
#include "upkeep/fleet_sim/http_client.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"

namespace upkeep::fleet_sim {

inline constexpr unsigned kMaxConnections = 1024;
inline constexpr std::chrono::seconds kMaxDuration{24 * 3600};

// Log-linear histogram of microsecond values: values below 2^kSubBits exactly, above that
// 2^(kSubBits-1) buckets per power of two. Fixed size (~200 KiB); not thread-safe (one per thread).
class Histogram {
 public:
  static constexpr unsigned kSubBits = 11;  // 1024 sub-buckets per octave: < 0.1 % error
  static constexpr unsigned kOctaves = 26;  // up to 2^(11+25) us ~ 19 h; larger values clamp
  void Record(std::uint64_t micros);
  void Merge(const Histogram& other);
  std::uint64_t count() const { return count_; }
  std::uint64_t max() const { return max_; }
  double mean() const { return count_ ? static_cast<double>(sum_) / static_cast<double>(count_) : 0.0; }
  // The smallest recorded value v such that at least q (0..1) of all values are <= v (upper edge
  // of its bucket, so never an underestimate).
  std::uint64_t Percentile(double q) const;

 private:
  static constexpr std::size_t kHalf = std::size_t{1} << (kSubBits - 1);
  static constexpr std::size_t kBuckets = (std::size_t{1} << kSubBits) + (kOctaves - 1) * kHalf;
  static std::size_t Index(std::uint64_t v);
  static std::uint64_t UpperEdge(std::size_t index);

  std::array<std::uint64_t, kBuckets> buckets_{};
  std::uint64_t count_ = 0, max_ = 0, sum_ = 0;
};

struct LoadOptions {
  Url server;
  std::uint64_t appliances = 0;   // identities 0..appliances-1, round-robin
  std::uint64_t first_index = 0;  // request k is by identity (first_index + k) % appliances
  double rate = 0;                // requests/s; 0 = closed loop (--max)
  std::chrono::milliseconds duration{10'000};
  std::uint64_t max_requests = 0;  // stop after this many (0: only the duration limits)
  unsigned connections = 16;
  trust::InstalledSet installed;
  std::string agent_version = "0.1.0";
  std::chrono::milliseconds timeout{10'000};
  // Reference mode: unsigned "GET get_path" instead of signed check-ins (e.g. nginx serving a
  // static file, to compare latencies at the same rate with the same generator). No identities.
  std::string get_path;
};

struct LoadReport {
  double elapsed_seconds = 0;
  std::uint64_t completed = 0;        // answers received (any status)
  std::uint64_t transport_errors = 0;  // no answer (connect, send, read, time-out)
  std::vector<std::pair<int, std::uint64_t>> statuses;  // status -> count, ascending
  std::vector<std::string> sample_errors;  // the first few distinct failures, for the operator
  Histogram latency;                       // microseconds, answers of any status
  std::uint64_t connects = 0;
  double achieved_rate() const { return elapsed_seconds > 0 ? static_cast<double>(completed) / elapsed_seconds : 0; }
  std::uint64_t Count(int status) const;
};

// `identities` must hold at least options.appliances entries (FleetIdentities), unless get_path is set.
Expected<LoadReport> RunLoad(const LoadOptions& options, const std::vector<trust::ApplianceIdentity>& identities);

// Human-readable summary, or JSON.
std::string FormatReport(const LoadOptions& options, const LoadReport& report);
Json ReportJson(const LoadOptions& options, const LoadReport& report);

}  // namespace upkeep::fleet_sim
