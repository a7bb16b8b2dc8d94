#include "upkeep/net/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace upkeep::net {
namespace {

std::string SanitizeName(std::string_view name, bool label) {
  std::string out(name);
  if (out.empty()) out = "_";
  for (std::size_t i = 0; i < out.size(); ++i) {
    char c = out[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!label && c == ':') ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) out[i] = '_';
  }
  return out;
}

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '\n') out += "\\n";
    else out.push_back(c);
  }
  return out;
}

std::string RenderLabels(const Labels& labels) {
  if (labels.empty()) return {};
  std::string out = "{";
  for (std::size_t i = 0; i < labels.size(); ++i) {
    if (i) out += ',';
    out += SanitizeName(labels[i].first, true);
    out += "=\"";
    out += EscapeLabelValue(labels[i].second);
    out += '"';
  }
  out += '}';
  return out;
}

// Adds one more label to an already rendered label set.
std::string WithLabel(const std::string& rendered, const std::string& extra) {
  if (rendered.empty()) return "{" + extra + "}";
  return rendered.substr(0, rendered.size() - 1) + "," + extra + "}";
}

std::string FormatDouble(double v) {
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (std::isnan(v)) return "NaN";
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  // Shorter form when it round-trips.
  char shorter[40];
  std::snprintf(shorter, sizeof shorter, "%g", v);
  if (std::strtod(shorter, nullptr) == v) return shorter;
  return buf;
}

}  // namespace

Histogram::Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)) {
  std::sort(bounds_.begin(), bounds_.end());
  bounds_.erase(std::unique(bounds_.begin(), bounds_.end()), bounds_.end());
  buckets_ = std::make_unique<std::atomic<std::uint64_t>[]>(bounds_.size() + 1);
  for (std::size_t i = 0; i <= bounds_.size(); ++i) buckets_[i].store(0, std::memory_order_relaxed);
}

void Histogram::Observe(double value) {
  std::size_t i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), value) - bounds_.begin());
  buckets_[i].fetch_add(1, std::memory_order_relaxed);
  count_.fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(value, std::memory_order_relaxed);
}

std::vector<double> DefaultLatencyBuckets() {
  return {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10};
}

MetricsRegistry::Series& MetricsRegistry::Find(Type type, std::string_view name, std::string_view help,
                                               const Labels& labels) {
  std::string key = SanitizeName(name, false);
  auto [it, inserted] = families_.try_emplace(key, Family{type, std::string(help), {}});
  if (!inserted && it->second.type != type) {
    orphans_.emplace_back();
    return orphans_.back();
  }
  return it->second.series[RenderLabels(labels)];
}

Counter& MetricsRegistry::GetCounter(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = Find(Type::kCounter, name, help, labels);
  if (!s.counter) s.counter = std::make_unique<Counter>();
  return *s.counter;
}

Gauge& MetricsRegistry::GetGauge(std::string_view name, std::string_view help, const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = Find(Type::kGauge, name, help, labels);
  if (!s.gauge) s.gauge = std::make_unique<Gauge>();
  return *s.gauge;
}

Histogram& MetricsRegistry::GetHistogram(std::string_view name, std::string_view help, std::vector<double> bounds,
                                         const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = Find(Type::kHistogram, name, help, labels);
  if (!s.histogram) s.histogram = std::make_unique<Histogram>(std::move(bounds));
  return *s.histogram;
}

void MetricsRegistry::AddGaugeCallback(std::string_view name, std::string_view help, std::function<double()> read,
                                       const Labels& labels) {
  std::lock_guard lock(mu_);
  Series& s = Find(Type::kGauge, name, help, labels);
  s.read = std::move(read);
}

std::string MetricsRegistry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  out.reserve(4096);
  for (const auto& [name, family] : families_) {
    const char* type = family.type == Type::kCounter ? "counter" : family.type == Type::kGauge ? "gauge" : "histogram";
    out += "# HELP " + name + " " + EscapeHelp(family.help) + "\n";
    out += "# TYPE " + name + " " + type + "\n";
    for (const auto& [labels, s] : family.series) {
      if (s.counter) {
        out += name + labels + " " + std::to_string(s.counter->Value()) + "\n";
      } else if (s.read) {
        out += name + labels + " " + FormatDouble(s.read()) + "\n";
      } else if (s.gauge) {
        out += name + labels + " " + FormatDouble(s.gauge->Value()) + "\n";
      } else if (s.histogram) {
        const Histogram& h = *s.histogram;
        std::uint64_t cumulative = 0;
        for (std::size_t i = 0; i <= h.bounds().size(); ++i) {
          cumulative += h.BucketCount(i);
          std::string le = i < h.bounds().size() ? FormatDouble(h.bounds()[i]) : "+Inf";
          out += name + "_bucket" + WithLabel(labels, "le=\"" + le + "\"") + " " + std::to_string(cumulative) + "\n";
        }
        out += name + "_sum" + labels + " " + FormatDouble(h.Sum()) + "\n";
        // The cumulative total, so _count always equals the +Inf bucket in one scrape.
        out += name + "_count" + labels + " " + std::to_string(cumulative) + "\n";
      }
    }
  }
  return out;
}

}  // namespace upkeep::net
