// bench_planner: MakePlan over synthetic catalogs of 1k, 5k and 20k releases, beside a naive
// reference that applies the same greedy rule by rescanning every release every round.
//
//   build/bin/bench_planner --benchmark_min_time=0.2
//
// Catalog shape: one base package plus software packages, `per` releases each, a gate
// (upgrades_from) every `gate` releases, every software release needing a recent base; the
// appliance has the first release of every package installed.
#include <benchmark/benchmark.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "upkeep/packages/catalog.hpp"
#include "upkeep/packages/planner.hpp"

namespace {

using namespace upkeep::packages;

struct Fixture {
  Catalog catalog;
  Installed installed;
};

Fixture MakeFixture(int releases, int gate) {
  int per = std::min(releases, releases >= 5000 ? 200 : 100);
  if (releases >= 20000) per = 400;
  int packages = releases / per;
  std::vector<Manifest> ms;
  Fixture f;
  for (int p = 0; p < packages; ++p) {
    std::string name = p == 0 ? "base" : "software-" + std::to_string(p);
    for (int i = 0; i < per; ++i) {
      Manifest m;
      m.name = name;
      m.kind = p == 0 ? Kind::kBase : Kind::kSoftware;
      m.version = Version{1, static_cast<std::uint32_t>(i), 0};
      if (i >= gate) m.upgrades_from = Version{1, static_cast<std::uint32_t>(i / gate * gate - 1), 0};
      if (p > 0 && i >= 5) m.requires_.push_back({"base", Version{1, static_cast<std::uint32_t>(i - 5), 0}});
      m.settle_hours = 24;
      ms.push_back(std::move(m));
    }
    f.installed[name] = Version{1, 0, 0};
  }
  f.catalog = Catalog::FromManifests(std::move(ms)).value();
  return f;
}

bool Applicable(const Manifest& m, const Installed& state, const Installed& installed) {
  auto it = state.find(m.name);
  if (it == state.end() || m.version <= it->second || m.version.major != installed.at(m.name).major) return false;
  if (m.upgrades_from && it->second < *m.upgrades_from) return false;
  for (const auto& req : m.requires_) {
    auto r = state.find(req.name);
    if (r == state.end() || r->second < req.min_version) return false;
  }
  return true;
}

// The reference: the rule as written, no indexing (steps only; no reasons, no blocked list).
std::size_t NaivePlan(const Installed& installed, const Catalog& catalog) {
  std::vector<std::pair<int, std::string>> order;
  for (const auto& [name, v] : installed) order.emplace_back(KindRank(catalog.Releases(name).front().manifest.kind), name);
  std::sort(order.begin(), order.end());
  Installed state = installed;
  std::size_t steps = 0;
  for (bool stepped = true; stepped;) {
    stepped = false;
    for (const auto& [rank, name] : order) {
      auto rs = catalog.Releases(name);
      for (auto it = rs.rbegin(); it != rs.rend() && !stepped; ++it) {
        if (Applicable(it->manifest, state, installed)) {
          state[name] = it->manifest.version;
          ++steps;
          stepped = true;
        }
      }
      if (stepped) break;
    }
  }
  return steps;
}

void BM_MakePlan(benchmark::State& state) {
  Fixture f = MakeFixture(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  std::size_t steps = 0;
  for (auto _ : state) {
    Plan plan = MakePlan(f.installed, f.catalog, {});
    steps = plan.steps.size();
    benchmark::DoNotOptimize(plan);
  }
  // The reference must agree, or the comparison means nothing.
  if (steps != NaivePlan(f.installed, f.catalog)) {
    state.SkipWithError("MakePlan and the naive reference disagree");
  }
  state.counters["releases"] = static_cast<double>(f.catalog.size());
  state.counters["steps"] = static_cast<double>(steps);
}

void BM_NaiveReference(benchmark::State& state) {
  Fixture f = MakeFixture(static_cast<int>(state.range(0)), static_cast<int>(state.range(1)));
  std::size_t steps = 0;
  for (auto _ : state) {
    steps = NaivePlan(f.installed, f.catalog);
    benchmark::DoNotOptimize(steps);
  }
  state.counters["releases"] = static_cast<double>(f.catalog.size());
  state.counters["steps"] = static_cast<double>(steps);
}

void BM_CatalogBuild(benchmark::State& state) {
  Fixture f = MakeFixture(static_cast<int>(state.range(0)), 10);
  std::vector<Manifest> ms;
  for (const auto& name : f.catalog.Names()) {
    for (const auto& r : f.catalog.Releases(name)) ms.push_back(r.manifest);
  }
  std::reverse(ms.begin(), ms.end());
  for (auto _ : state) {
    auto catalog = Catalog::FromManifests(ms);
    benchmark::DoNotOptimize(catalog);
  }
}

// {releases, gate}: gate 10 is a typical catalog; gate 1 makes every release a mandatory step.
#define PLANNER_ARGS ->Args({1000, 10})->Args({5000, 10})->Args({20000, 10})->Args({5000, 1})->Unit(benchmark::kMillisecond)
BENCHMARK(BM_MakePlan) PLANNER_ARGS;
BENCHMARK(BM_NaiveReference) PLANNER_ARGS;
BENCHMARK(BM_CatalogBuild)->Arg(1000)->Arg(5000)->Arg(20000)->Unit(benchmark::kMillisecond);

}  // namespace

BENCHMARK_MAIN();
