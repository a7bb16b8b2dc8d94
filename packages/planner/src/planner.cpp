#include "upkeep/packages/planner.hpp"

#include <algorithm>
#include <functional>
#include <limits>
#include <queue>
#include <span>

namespace upkeep::packages {

int KindRank(Kind kind) {
  switch (kind) {
    case Kind::kBase: return 0;
    case Kind::kAddon: return 1;
    case Kind::kSoftware: return 2;
    case Kind::kClient: return 3;
  }
  return 2;
}

Expected<std::pair<std::string, Version>> ParseNameVersion(std::string_view text) {
  auto eq = text.find('=');
  if (eq == std::string_view::npos) {
    return Error(Errc::kInvalidArgument,
                 "'" + std::string(text.substr(0, 100)) + "' is not NAME=VERSION (e.g. software=8.1.0)");
  }
  std::string name(text.substr(0, eq));
  if (!IsValidPackageName(name)) {
    return Error(Errc::kInvalidArgument, "'" + std::string(text.substr(0, 100)) +
                                             "': '" + name.substr(0, 64) + "' is not a valid package name");
  }
  auto version = Version::Parse(text.substr(eq + 1));
  if (!version) return version.error().Wrap("'" + std::string(text.substr(0, 100)) + "'");
  return std::make_pair(std::move(name), *version);
}

std::uint64_t Plan::TotalWaitHours() const {
  std::uint64_t total = 0;
  for (const auto& s : steps) total += s.wait_hours;
  return total;
}

Json Plan::ToJson() const {
  Json js = Json::array();
  for (const auto& s : steps) {
    js.push_back({{"name", s.name},
                  {"version", s.version.ToString()},
                  {"kind", KindName(s.kind)},
                  {"wait_hours", s.wait_hours},
                  {"reason", s.reason}});
  }
  Json jb = Json::array();
  for (const auto& b : blocked) {
    jb.push_back({{"name", b.name}, {"version", b.version.ToString()}, {"reason", b.reason}});
  }
  return Json{{"steps", std::move(js)}, {"blocked", std::move(jb)}};
}

namespace {

using Releases = std::span<const Catalog::Release>;

std::string Label(std::string_view name, const Version& v) { return std::string(name) + " " + v.ToString(); }

std::size_t UpperBound(Releases list, const Version& v) {
  return static_cast<std::size_t>(
      std::upper_bound(list.begin(), list.end(), v,
                       [](const Version& x, const Catalog::Release& r) { return x < r.manifest.version; }) -
      list.begin());
}

std::size_t LowerBound(Releases list, const Version& v) {
  return static_cast<std::size_t>(
      std::lower_bound(list.begin(), list.end(), v,
                       [](const Catalog::Release& r, const Version& x) { return r.manifest.version < x; }) -
      list.begin());
}

// One installed package as the simulation sees it.
struct Line {
  std::string_view name;
  Releases releases;
  Version installed;
  Version current;
  std::optional<Version> cap;
  bool allow_major = false;
  int rank = 2;
  // Candidates: releases[lo, hi) are newer than installed, in an allowed line and within the cap.
  std::size_t lo = 0;
  std::size_t hi = 0;
  // Highest candidate whose conditions are all met (conditions only ever become met), or npos.
  std::size_t best = npos;

  static constexpr std::size_t npos = std::numeric_limits<std::size_t>::max();

  bool LineAllowed(const Version& v) const { return allow_major || v.major == installed.major; }
};

// A candidate waiting for a package (whose heap holds the watch) to reach `threshold`.
struct Watch {
  Version threshold;
  std::uint32_t owner;    // the candidate's package
  std::uint32_t index;    // the candidate's position in its package's releases
  bool operator>(const Watch& o) const { return threshold > o.threshold; }
};

constexpr int kMaxExplainDepth = 8;

class Planner {
 public:
  Planner(const Installed& installed, const Catalog& catalog, const PlanOptions& options) : catalog_(catalog) {
    lines_.reserve(installed.size());
    for (const auto& [name, version] : installed) {
      Line line;
      line.name = name;
      line.releases = catalog.Releases(name);
      line.installed = version;
      line.current = version;
      if (auto it = options.max_version.find(name); it != options.max_version.end()) line.cap = it->second;
      line.allow_major = options.allow_major.count(name) > 0;
      if (!line.releases.empty()) line.rank = KindRank(line.releases.front().manifest.kind);
      line.lo = UpperBound(line.releases, version);
      line.hi = line.releases.size();
      if (!line.allow_major && version.major < std::numeric_limits<std::uint32_t>::max()) {
        line.hi = LowerBound(line.releases, Version{version.major + 1, 0, 0});
      }
      if (line.cap) line.hi = std::min(line.hi, UpperBound(line.releases, *line.cap));
      line.hi = std::max(line.hi, line.lo);
      lines_.push_back(line);
    }
    watches_.resize(lines_.size());
    order_.resize(lines_.size());
    for (std::uint32_t i = 0; i < order_.size(); ++i) order_[i] = i;
    std::sort(order_.begin(), order_.end(), [&](std::uint32_t a, std::uint32_t b) {
      if (lines_[a].rank != lines_[b].rank) return lines_[a].rank < lines_[b].rank;
      return lines_[a].name < lines_[b].name;
    });
  }

  Plan Run(const PlanOptions& options) {
    for (std::uint32_t id = 0; id < lines_.size(); ++id) {
      for (std::size_t i = lines_[id].lo; i < lines_[id].hi; ++i) Evaluate(id, static_cast<std::uint32_t>(i));
    }
    Plan plan;
    std::vector<std::uint32_t> step_lines;
    std::vector<std::size_t> step_index;
    while (true) {
      std::uint32_t chosen = Pick();
      if (chosen == kNone) break;
      Line& line = lines_[chosen];
      const Manifest& m = line.releases[line.best].manifest;
      plan.steps.push_back(PlanStep{std::string(line.name), m.version, m.kind, 0, {}});
      step_lines.push_back(chosen);
      step_index.push_back(line.best);
      line.current = m.version;
      Fire(chosen);
    }
    StepReasons(plan, step_lines, step_index);
    Enables(plan, step_lines);
    ComputeWaits(plan, options);
    Blocked(plan);
    return plan;
  }

 private:
  static constexpr std::uint32_t kNone = std::numeric_limits<std::uint32_t>::max();

  std::uint32_t LineId(std::string_view name) const {
    // lines_ was built from a sorted map, so it is sorted by name.
    auto it = std::lower_bound(lines_.begin(), lines_.end(), name,
                               [](const Line& l, std::string_view n) { return l.name < n; });
    if (it == lines_.end() || it->name != name) return kNone;
    return static_cast<std::uint32_t>(it - lines_.begin());
  }

  // Finds the first unmet condition of a candidate and waits on it, or marks it ready.
  void Evaluate(std::uint32_t owner, std::uint32_t index) {
    Line& line = lines_[owner];
    const Manifest& m = line.releases[index].manifest;
    if (m.upgrades_from && line.current < *m.upgrades_from) {
      watches_[owner].push(Watch{*m.upgrades_from, owner, index});
      return;
    }
    for (const auto& req : m.requires_) {
      std::uint32_t id = LineId(req.name);
      if (id == kNone) return;  // needs a package that is not installed: never applicable
      if (lines_[id].current < req.min_version) {
        watches_[id].push(Watch{req.min_version, owner, index});
        return;
      }
    }
    if (line.best == Line::npos || index > line.best) line.best = index;
  }

  // Re-evaluates every candidate that waited on `id` reaching at most its new version.
  void Fire(std::uint32_t id) {
    auto& heap = watches_[id];
    while (!heap.empty() && heap.top().threshold <= lines_[id].current) {
      Watch w = heap.top();
      heap.pop();
      Evaluate(w.owner, w.index);
    }
  }

  // The first package, in kind then name order, with a ready candidate above its version.
  std::uint32_t Pick() const {
    for (std::uint32_t id : order_) {
      const Line& line = lines_[id];
      if (line.best != Line::npos && line.releases[line.best].manifest.version > line.current) return id;
    }
    return kNone;
  }

  std::string TargetReason(const Line& line) const {
    const Version& target = line.releases[line.hi - 1].manifest.version;
    std::size_t line_end = line.releases.size();
    if (!line.allow_major && line.installed.major < std::numeric_limits<std::uint32_t>::max()) {
      line_end = LowerBound(line.releases, Version{line.installed.major + 1, 0, 0});
    }
    if (line.hi < line_end) {
      return "target: highest release of " + std::string(line.name) + " allowed by the cap " + line.cap->ToString();
    }
    if (line_end < line.releases.size()) {
      return "target: newest release of " + std::string(line.name) + " in the " + std::to_string(target.major) +
             ".x line";
    }
    return "target: newest release of " + std::string(line.name);
  }

  // Why release `index` of package `id` can't be installed in the current state, naming what must
  // happen first; follows the chain of blockers up to `max_depth` levels.
  std::string Explain(std::uint32_t id, std::size_t index, int depth, int max_depth,
                      std::vector<std::pair<std::uint32_t, std::size_t>>& path) const {
    const Line& line = lines_[id];
    const Manifest& m = line.releases[index].manifest;
    std::string label = Label(line.name, m.version);
    if (!line.LineAllowed(m.version)) {
      return label + " is a new major version (" + std::to_string(line.current.major) +
             ".x installed): crossing majors needs an explicit opt-in (--allow-major " + std::string(line.name) + ")";
    }
    if (line.cap && m.version > *line.cap) {
      return label + " is capped at " + line.cap->ToString() + " by the rollout/option";
    }
    if (std::find(path.begin(), path.end(), std::make_pair(id, index)) != path.end()) {
      return label + " is already waiting on this chain (circular requirement)";
    }
    path.emplace_back(id, index);
    auto deeper = [&](std::uint32_t next_id, std::size_t next_index) {
      return Explain(next_id, next_index, depth + 1, max_depth, path);
    };
    std::string why;
    if (m.upgrades_from && line.current < *m.upgrades_from) {
      why = label + " upgrades only from >= " + m.upgrades_from->ToString();
      if (depth < max_depth) {
        std::size_t first = LowerBound(line.releases, *m.upgrades_from);
        if (first >= index) {
          why += ", and no release of " + std::string(line.name) + " in [" + m.upgrades_from->ToString() + ", " +
                 m.version.ToString() + ") exists to bridge the gap from " + line.current.ToString();
        } else {
          why += "; " + deeper(id, first);
        }
      }
    } else {
      for (const auto& req : m.requires_) {
        std::uint32_t rid = LineId(req.name);
        std::string needs = label + " needs " + req.name + " >= " + req.min_version.ToString();
        if (rid == kNone) {
          why = needs + ", which is not installed";
          break;
        }
        const Line& other = lines_[rid];
        if (other.current >= req.min_version) continue;
        why = needs;
        if (depth < max_depth) {
          std::size_t first = LowerBound(other.releases, req.min_version);
          if (first == other.releases.size()) {
            why += ", and no release of " + req.name + " >= " + req.min_version.ToString() + " exists";
          } else {
            why += "; " + deeper(rid, first);
          }
        }
        break;
      }
      // Unreachable when the simulation reached its fixed point; kept so a message always exists.
      if (why.empty()) why = label + " is not applicable yet";
    }
    path.pop_back();
    return why;
  }

  // Replays the plan: an intermediate step says why the next step of the same package could not
  // be installed before it; the last step of a package is its target or the furthest it gets.
  void StepReasons(Plan& plan, const std::vector<std::uint32_t>& step_lines,
                   const std::vector<std::size_t>& step_index) {
    std::vector<Version> final_versions;
    for (auto& line : lines_) {
      final_versions.push_back(line.current);
      line.current = line.installed;
    }
    std::vector<std::size_t> next(step_lines.size(), Line::npos);
    std::vector<std::size_t> later(lines_.size(), Line::npos);
    for (std::size_t s = step_lines.size(); s-- > 0;) {
      next[s] = later[step_lines[s]];
      later[step_lines[s]] = s;
    }
    std::vector<std::pair<std::uint32_t, std::size_t>> path;
    for (std::size_t s = 0; s < step_lines.size(); ++s) {
      Line& line = lines_[step_lines[s]];
      if (next[s] != Line::npos) {
        plan.steps[s].reason = "intermediate: " + Explain(step_lines[s], step_index[next[s]], 0, 0, path);
      }
      line.current = plan.steps[s].version;
    }
    for (std::uint32_t id = 0; id < lines_.size(); ++id) lines_[id].current = final_versions[id];
    for (std::size_t s = 0; s < step_lines.size(); ++s) {
      if (next[s] != Line::npos) continue;
      const Line& line = lines_[step_lines[s]];
      plan.steps[s].reason = step_index[s] + 1 == line.hi
                                 ? TargetReason(line)
                                 : "highest reachable: " + Explain(step_lines[s], line.hi - 1, 0, 0, path);
    }
  }

  // A step that first satisfies a later step's requirement says so ("enables ...").
  void Enables(Plan& plan, const std::vector<std::uint32_t>& step_lines) const {
    std::vector<std::vector<std::size_t>> steps_of(lines_.size());
    std::vector<std::vector<std::string>> enables(plan.steps.size());
    for (std::size_t s = 0; s < plan.steps.size(); ++s) {
      const Line& line = lines_[step_lines[s]];
      const Catalog::Release* r = catalog_.Find(line.name, plan.steps[s].version);
      for (const auto& req : r->manifest.requires_) {
        std::uint32_t rid = LineId(req.name);
        if (rid == kNone || rid == step_lines[s] || lines_[rid].installed >= req.min_version) continue;
        const auto& prior = steps_of[rid];
        auto it = std::partition_point(prior.begin(), prior.end(),
                                       [&](std::size_t p) { return plan.steps[p].version < req.min_version; });
        if (it != prior.end()) enables[*it].push_back(Label(plan.steps[s].name, plan.steps[s].version));
      }
      steps_of[step_lines[s]].push_back(s);
    }
    for (std::size_t s = 0; s < plan.steps.size(); ++s) {
      if (enables[s].empty()) continue;
      std::string text = "; enables ";
      constexpr std::size_t kShown = 3;
      for (std::size_t i = 0; i < enables[s].size() && i < kShown; ++i) text += (i ? ", " : "") + enables[s][i];
      if (enables[s].size() > kShown) text += " and " + std::to_string(enables[s].size() - kShown) + " more";
      plan.steps[s].reason += text;
    }
  }

  void ComputeWaits(Plan& plan, const PlanOptions& options) const {
    std::uint32_t settle = options.last_software_settle_hours;
    for (auto& step : plan.steps) {
      if (step.kind != Kind::kSoftware) continue;
      step.wait_hours = settle;
      settle = catalog_.Find(step.name, step.version)->manifest.settle_hours;
    }
  }

  void Blocked(Plan& plan) const {
    for (std::uint32_t id : order_) {
      const Line& line = lines_[id];
      std::size_t i = UpperBound(line.releases, line.current);
      while (i < line.releases.size()) {
        // The newest release of this major line.
        std::uint32_t major = line.releases[i].manifest.version.major;
        std::size_t end = major < std::numeric_limits<std::uint32_t>::max()
                              ? LowerBound(line.releases, Version{major + 1, 0, 0})
                              : line.releases.size();
        std::size_t newest = end - 1;
        std::vector<std::pair<std::uint32_t, std::size_t>> path;
        std::string reason = Explain(id, newest, 0, kMaxExplainDepth, path);
        // Capped inside the line the plan targets: also say why the plan stops below the cap.
        if (line.cap && line.releases[newest].manifest.version > *line.cap && line.hi > line.lo &&
            line.releases[line.hi - 1].manifest.version.major == major &&
            line.releases[line.hi - 1].manifest.version > line.current) {
          reason += "; " + Explain(id, line.hi - 1, 0, kMaxExplainDepth, path);
        }
        plan.blocked.push_back(BlockedRelease{std::string(line.name), line.releases[newest].manifest.version,
                                              std::move(reason)});
        i = end;
      }
    }
  }

  const Catalog& catalog_;
  std::vector<Line> lines_;
  std::vector<std::uint32_t> order_;
  std::vector<std::priority_queue<Watch, std::vector<Watch>, std::greater<>>> watches_;
};

}  // namespace

Plan MakePlan(const Installed& installed, const Catalog& catalog, const PlanOptions& options) {
  Planner planner(installed, catalog, options);
  return planner.Run(options);
}

}  // namespace upkeep::packages
