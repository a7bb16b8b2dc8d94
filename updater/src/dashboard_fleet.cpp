// Server-rendered SVG charts of the dashboard's fleet page (dashboard.hpp). Presentation
// attributes only (fill, stroke): the dashboard's CSP allows no inline style and no script.
#include <algorithm>
#include <cstdio>

#include "dashboard.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::updater {

namespace {

std::string Num(double v) {
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f", v);
  return buf;
}

}  // namespace

std::string BarChartSvg(const std::string& id, const std::string& title, const std::vector<ChartBar>& bars) {
  constexpr double kRow = 22, kLabel = 260, kWidth = 640, kBar = kWidth - kLabel - 60;
  std::int64_t max = 1;
  for (const auto& b : bars) max = std::max(max, b.value);
  const double height = kRow * static_cast<double>(bars.size()) + 10;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"" + HtmlEscape(id) + "\" role=\"img\" width=\"" +
                  Num(kWidth) + "\" height=\"" + Num(height) + "\" viewBox=\"0 0 " + Num(kWidth) + " " + Num(height) +
                  "\"><title>" + HtmlEscape(title) + "</title>";
  for (std::size_t i = 0; i < bars.size(); ++i) {
    const double y = 5 + kRow * static_cast<double>(i);
    const double w = kBar * static_cast<double>(bars[i].value) / static_cast<double>(max);
    s += "<text x=\"0\" y=\"" + Num(y + 15) + "\" font-size=\"13\" fill=\"#000\">" + HtmlEscape(bars[i].label) + "</text>";
    s += "<rect x=\"" + Num(kLabel) + "\" y=\"" + Num(y + 2) + "\" width=\"" + Num(std::max(w, 1.0)) +
         "\" height=\"16\" fill=\"#36c\"><title>" + HtmlEscape(bars[i].label) + ": " + std::to_string(bars[i].value) +
         "</title></rect>";
    s += "<text x=\"" + Num(kLabel + w + 6) + "\" y=\"" + Num(y + 15) + "\" font-size=\"13\" fill=\"#000\">" +
         std::to_string(bars[i].value) + "</text>";
  }
  return s + "</svg>";
}

std::string LineChartSvg(const std::string& id, const std::string& title, const std::vector<ChartPoint>& points) {
  constexpr double kWidth = 640, kHeight = 200, kLeft = 40, kBottom = 30, kTop = 10;
  const double plot_w = kWidth - kLeft - 10, plot_h = kHeight - kBottom - kTop;
  std::string s = "<svg xmlns=\"http://www.w3.org/2000/svg\" id=\"" + HtmlEscape(id) + "\" role=\"img\" width=\"" +
                  Num(kWidth) + "\" height=\"" + Num(kHeight) + "\" viewBox=\"0 0 " + Num(kWidth) + " " + Num(kHeight) +
                  "\"><title>" + HtmlEscape(title) + "</title>";
  // Axes and the 0 / 50 / 100 % lines.
  for (int pct : {0, 50, 100}) {
    const double y = kTop + plot_h * (1.0 - pct / 100.0);
    s += "<line x1=\"" + Num(kLeft) + "\" y1=\"" + Num(y) + "\" x2=\"" + Num(kWidth - 10) + "\" y2=\"" + Num(y) +
         "\" stroke=\"#ccc\"/><text x=\"0\" y=\"" + Num(y + 4) + "\" font-size=\"11\" fill=\"#000\">" +
         std::to_string(pct) + "%</text>";
  }
  const std::size_t n = points.size();
  auto x_of = [&](std::size_t i) { return kLeft + (n <= 1 ? plot_w / 2 : plot_w * static_cast<double>(i) / static_cast<double>(n - 1)); };
  auto y_of = [&](double v) { return kTop + plot_h * (1.0 - std::clamp(v, 0.0, 100.0) / 100.0); };
  if (n > 1) {
    std::string pts;
    for (std::size_t i = 0; i < n; ++i) pts += (i ? " " : "") + Num(x_of(i)) + "," + Num(y_of(points[i].value));
    s += "<polyline fill=\"none\" stroke=\"#c33\" stroke-width=\"2\" points=\"" + pts + "\"/>";
  }
  for (std::size_t i = 0; i < n; ++i) {
    s += "<circle cx=\"" + Num(x_of(i)) + "\" cy=\"" + Num(y_of(points[i].value)) + "\" r=\"3\" fill=\"#c33\"><title>" +
         HtmlEscape(points[i].label) + ": " + Num(std::clamp(points[i].value, 0.0, 100.0)) + "% failed</title></circle>";
  }
  if (n > 0) {
    s += "<text x=\"" + Num(kLeft) + "\" y=\"" + Num(kHeight - 8) + "\" font-size=\"11\" fill=\"#000\">" +
         HtmlEscape(points.front().label) + "</text>";
    if (n > 1) {
      s += "<text x=\"" + Num(kWidth - 10) + "\" y=\"" + Num(kHeight - 8) + "\" font-size=\"11\" fill=\"#000\" "
           "text-anchor=\"end\">" + HtmlEscape(points.back().label) + "</text>";
    }
  }
  return s + "</svg>";
}

}  // namespace upkeep::updater
