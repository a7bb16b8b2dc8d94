// The metrics registry: identity of (name, labels), Prometheus text, histogram buckets.
#include <gtest/gtest.h>

#include <thread>
#include <vector>

#include "upkeep/net/metrics.hpp"

namespace upkeep::net {
namespace {

TEST(Metrics, SameNameAndLabelsIsTheSameMetric) {
  MetricsRegistry reg;
  Counter& a = reg.GetCounter("jobs_total", "Jobs", {{"kind", "x"}});
  Counter& b = reg.GetCounter("jobs_total", "Jobs", {{"kind", "x"}});
  Counter& c = reg.GetCounter("jobs_total", "Jobs", {{"kind", "y"}});
  EXPECT_EQ(&a, &b);
  EXPECT_NE(&a, &c);
  a.Inc();
  b.Inc(2);
  c.Inc();
  std::string text = reg.Render();
  EXPECT_NE(text.find("# HELP jobs_total Jobs\n# TYPE jobs_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("jobs_total{kind=\"x\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("jobs_total{kind=\"y\"} 1\n"), std::string::npos) << text;
}

TEST(Metrics, GaugesCallbacksEscapingAndTypeClashes) {
  MetricsRegistry reg;
  reg.GetGauge("temp", "T").Set(1.5);
  reg.AddGaugeCallback("queue", "Q", [] { return 42.0; });
  reg.GetCounter("odd name-1", "x", {{"path", "a\"b\\c\nd"}}).Inc();
  reg.GetGauge("temp_total", "x");
  reg.GetGauge("queue", "clash").Set(7);  // same name, same type: the same series
  reg.GetCounter("temp", "clash").Inc();  // type clash: not rendered
  std::string text = reg.Render();
  EXPECT_NE(text.find("\ntemp 1.5\n"), std::string::npos) << text;
  EXPECT_NE(text.find("\nqueue 42\n"), std::string::npos) << text;
  EXPECT_NE(text.find("odd_name_1{path=\"a\\\"b\\\\c\\nd\"} 1\n"), std::string::npos) << text;
  EXPECT_EQ(text.find("# TYPE temp counter"), std::string::npos);
}

TEST(Metrics, HistogramBucketsAreCumulative) {
  MetricsRegistry reg;
  Histogram& h = reg.GetHistogram("lat_seconds", "L", {0.1, 1, 0.5}, {{"route", "/a"}});
  for (double v : {0.05, 0.1, 0.3, 0.7, 2.0, 3.0}) h.Observe(v);
  std::string text = reg.Render();
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/a\",le=\"0.1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/a\",le=\"0.5\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/a\",le=\"1\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{route=\"/a\",le=\"+Inf\"} 6\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count{route=\"/a\"} 6\n"), std::string::npos) << text;
  EXPECT_NEAR(h.Sum(), 6.15, 1e-9);
}

TEST(Metrics, ConcurrentUpdatesAreNotLost) {
  MetricsRegistry reg;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 10000; ++i) {
        reg.GetCounter("c_total", "c").Inc();
        reg.GetHistogram("h", "h", {1}).Observe(0.5);
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(reg.GetCounter("c_total", "c").Value(), 40000u);
  EXPECT_EQ(reg.GetHistogram("h", "h", {1}).Count(), 40000u);
}

}  // namespace
}  // namespace upkeep::net
