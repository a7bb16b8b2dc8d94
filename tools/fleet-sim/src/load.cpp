#include "upkeep/fleet_sim/load.hpp"

#include <algorithm>
#include <atomic>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "upkeep/common/json.hpp"
#include "upkeep/fleet_sim/fleet.hpp"

namespace upkeep::fleet_sim {

std::size_t Histogram::Index(std::uint64_t v) {
  const std::uint64_t linear = std::uint64_t{1} << kSubBits;
  if (v < linear) return static_cast<std::size_t>(v);
  const unsigned bits = 64 - static_cast<unsigned>(std::countl_zero(v));  // v in [2^(bits-1), 2^bits)
  const unsigned shift = bits - kSubBits;                                  // >= 1
  std::size_t octave = shift;                                              // 1-based above the linear part
  if (octave >= kOctaves) return kBuckets - 1;
  const std::size_t sub = static_cast<std::size_t>(v >> shift) - kHalf;  // 0..kHalf-1
  return linear + (octave - 1) * kHalf + sub;
}

std::uint64_t Histogram::UpperEdge(std::size_t index) {
  const std::size_t linear = std::size_t{1} << kSubBits;
  if (index < linear) return index;
  const std::size_t octave = (index - linear) / kHalf + 1;
  const std::size_t sub = (index - linear) % kHalf;
  return ((std::uint64_t{kHalf + sub + 1}) << octave) - 1;
}

void Histogram::Record(std::uint64_t micros) {
  ++buckets_[Index(micros)];
  ++count_;
  sum_ += micros;
  max_ = std::max(max_, micros);
}

void Histogram::Merge(const Histogram& other) {
  for (std::size_t i = 0; i < kBuckets; ++i) buckets_[i] += other.buckets_[i];
  count_ += other.count_;
  sum_ += other.sum_;
  max_ = std::max(max_, other.max_);
}

std::uint64_t Histogram::Percentile(double q) const {
  if (count_ == 0) return 0;
  const auto want = static_cast<std::uint64_t>(std::ceil(std::clamp(q, 0.0, 1.0) * static_cast<double>(count_)));
  std::uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += buckets_[i];
    // The last bucket also holds every clamped value, so only max_ bounds it.
    if (seen >= std::max<std::uint64_t>(want, 1)) return i + 1 == kBuckets ? max_ : std::min(UpperEdge(i), max_);
  }
  return max_;
}

std::uint64_t LoadReport::Count(int status) const {
  for (const auto& [s, n] : statuses) {
    if (s == status) return n;
  }
  return 0;
}

namespace {

using Steady = std::chrono::steady_clock;

struct ThreadResult {
  Histogram latency;
  std::map<int, std::uint64_t> statuses;
  std::uint64_t completed = 0, transport_errors = 0, connects = 0;
  std::vector<std::string> errors;  // at most kMaxSampleErrors
};
constexpr std::size_t kMaxSampleErrors = 5;

void NoteError(ThreadResult& r, const std::string& message) {
  if (r.errors.size() < kMaxSampleErrors &&
      std::find(r.errors.begin(), r.errors.end(), message) == r.errors.end()) {
    r.errors.push_back(message);
  }
}

}  // namespace

Expected<LoadReport> RunLoad(const LoadOptions& options, const std::vector<trust::ApplianceIdentity>& identities) {
  const bool reference = !options.get_path.empty();
  if (!reference && (options.appliances == 0 || identities.size() < options.appliances)) {
    return Error(Errc::kInvalidArgument, "load needs at least one identity per appliance");
  }
  if (options.connections == 0 || options.connections > kMaxConnections) {
    return Error(Errc::kInvalidArgument, "--connections must be 1.." + std::to_string(kMaxConnections));
  }
  if (options.duration <= std::chrono::milliseconds(0) || options.duration > kMaxDuration) {
    return Error(Errc::kInvalidArgument, "--duration must be 1 s .. 24 h");
  }
  if (options.rate < 0 || !std::isfinite(options.rate)) return Error(Errc::kInvalidArgument, "--rate must be > 0");
  const bool open_loop = options.rate > 0;
  // Open loop: the schedule itself bounds the count (rate x duration).
  std::uint64_t total = options.max_requests;
  if (open_loop) {
    const auto scheduled = static_cast<std::uint64_t>(options.rate * std::chrono::duration<double>(options.duration).count());
    total = total == 0 ? scheduled : std::min(total, scheduled);
    if (total == 0) return Error(Errc::kInvalidArgument, "--rate x --duration schedules no request");
  }
  const std::string path = options.server.prefix + kCheckinPath;
  const std::string signed_path = path;  // the signature covers the path as sent
  const double interval_us = open_loop ? 1e6 / options.rate : 0;

  std::atomic<std::uint64_t> next{0};
  std::vector<ThreadResult> results(options.connections);
  const auto start = Steady::now() + std::chrono::milliseconds(50);  // let every thread get ready
  const auto stop_at = start + options.duration;
  // Open-loop runs get a grace period after the last scheduled send for answers still in flight.
  const auto hard_stop = stop_at + (open_loop ? options.timeout : std::chrono::milliseconds(0));

  auto worker = [&](unsigned t) {
    ThreadResult& r = results[t];
    HttpClientOptions copts;
    copts.timeout = options.timeout;
    HttpClient client(options.server, copts);
    for (;;) {
      const std::uint64_t k = next.fetch_add(1, std::memory_order_relaxed);
      if (total != 0 && k >= total) break;
      Steady::time_point scheduled;
      if (open_loop) {
        scheduled = start + std::chrono::microseconds(static_cast<std::int64_t>(static_cast<double>(k) * interval_us));
        if (scheduled >= stop_at) break;
        std::this_thread::sleep_until(scheduled);
        if (Steady::now() >= hard_stop) break;  // too far behind: the run is over
      } else {
        if (k == 0) std::this_thread::sleep_until(start);
        scheduled = Steady::now();
        if (scheduled >= stop_at) break;
      }
      if (reference) {
        auto reply = client.Send("GET", options.get_path, {}, "");
        const auto done = Steady::now();
        if (!reply.ok()) {
          ++r.transport_errors;
          NoteError(r, reply.error().message());
          continue;
        }
        ++r.completed;
        ++r.statuses[reply->status];
        r.latency.Record(static_cast<std::uint64_t>(
            std::chrono::duration_cast<std::chrono::microseconds>(done - scheduled).count()));
        continue;
      }
      const auto& id = identities[(options.first_index + k) % options.appliances];
      const SysTime now = SystemClock::Instance().Now();
      const std::string body = CheckinBody(options.installed, options.agent_version, now);
      auto headers = SignAppliance(id, "POST", signed_path, body, SystemClock::Instance(), SystemRandom::Instance());
      if (!headers.ok()) {
        ++r.transport_errors;
        NoteError(r, headers.error().message());
        continue;
      }
      // Send builds "POST prefix + path": pass the path without the prefix.
      auto reply = client.Send("POST", kCheckinPath, headers->headers, body);
      const auto done = Steady::now();
      if (!reply.ok()) {
        ++r.transport_errors;
        NoteError(r, reply.error().message());
        continue;
      }
      ++r.completed;
      ++r.statuses[reply->status];
      if (reply->status != 200) {
        NoteError(r, std::to_string(reply->status) + " " + reply->body.substr(0, 200));
      }
      r.latency.Record(static_cast<std::uint64_t>(
          std::chrono::duration_cast<std::chrono::microseconds>(done - scheduled).count()));
    }
    r.connects = client.connects();
  };

  std::vector<std::thread> threads;
  threads.reserve(options.connections);
  for (unsigned t = 0; t < options.connections; ++t) threads.emplace_back(worker, t);
  for (auto& th : threads) th.join();
  const auto end = Steady::now();

  LoadReport report;
  report.elapsed_seconds = std::chrono::duration<double>(end - start).count();
  std::map<int, std::uint64_t> statuses;
  for (const auto& r : results) {
    report.latency.Merge(r.latency);
    report.completed += r.completed;
    report.transport_errors += r.transport_errors;
    report.connects += r.connects;
    for (const auto& [s, n] : r.statuses) statuses[s] += n;
    for (const auto& e : r.errors) {
      if (report.sample_errors.size() < kMaxSampleErrors &&
          std::find(report.sample_errors.begin(), report.sample_errors.end(), e) == report.sample_errors.end()) {
        report.sample_errors.push_back(e);
      }
    }
  }
  report.statuses.assign(statuses.begin(), statuses.end());
  return report;
}

Json ReportJson(const LoadOptions& options, const LoadReport& report) {
  Json statuses = Json::object();
  for (const auto& [s, n] : report.statuses) statuses[std::to_string(s)] = n;
  auto ms = [&](double q) { return static_cast<double>(report.latency.Percentile(q)) / 1000.0; };
  return Json{{"mode", options.rate > 0 ? "open-loop" : "closed-loop"},
              {"target_rate", options.rate},
              {"connections", options.connections},
              {"threads", options.connections},
              {"appliances", options.appliances},
              {"elapsed_seconds", report.elapsed_seconds},
              {"completed", report.completed},
              {"achieved_rate", report.achieved_rate()},
              {"transport_errors", report.transport_errors},
              {"connects", report.connects},
              {"statuses", statuses},
              {"latency_ms",
               {{"p50", ms(0.50)},
                {"p90", ms(0.90)},
                {"p99", ms(0.99)},
                {"p99.9", ms(0.999)},
                {"max", static_cast<double>(report.latency.max()) / 1000.0},
                {"mean", report.latency.mean() / 1000.0}}},
              {"sample_errors", report.sample_errors}};
}

std::string FormatReport(const LoadOptions& options, const LoadReport& report) {
  char line[512];
  std::string out;
  std::snprintf(line, sizeof line, "%s, %u connections (one thread each, signing on the fly), %llu appliances\n",
                options.rate > 0 ? "open loop" : "closed loop (--max)", options.connections,
                static_cast<unsigned long long>(options.appliances));
  out += line;
  if (options.rate > 0) {
    std::snprintf(line, sizeof line, "target %.1f req/s, ", options.rate);
    out += line;
  }
  std::snprintf(line, sizeof line, "achieved %.1f req/s: %llu answers in %.2f s, %llu transport errors, %llu connects\n",
                report.achieved_rate(), static_cast<unsigned long long>(report.completed), report.elapsed_seconds,
                static_cast<unsigned long long>(report.transport_errors),
                static_cast<unsigned long long>(report.connects));
  out += line;
  out += "statuses:";
  for (const auto& [s, n] : report.statuses) out += " " + std::to_string(s) + "=" + std::to_string(n);
  out += "\n";
  auto ms = [&](double q) { return static_cast<double>(report.latency.Percentile(q)) / 1000.0; };
  std::snprintf(line, sizeof line,
                "latency%s: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms, p99.9 %.2f ms, max %.2f ms, mean %.2f ms\n",
                options.rate > 0 ? " (from scheduled send)" : "", ms(0.5), ms(0.9), ms(0.99), ms(0.999),
                static_cast<double>(report.latency.max()) / 1000.0, report.latency.mean() / 1000.0);
  out += line;
  for (const auto& e : report.sample_errors) out += "error: " + e + "\n";
  return out;
}

}  // namespace upkeep::fleet_sim
