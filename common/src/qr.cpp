// QR codes through libqrencode (qr.hpp).
#include "upkeep/common/qr.hpp"

#include <qrencode.h>

#include <cerrno>
#include <memory>
#include <string>

namespace upkeep {
namespace {

constexpr int kQuiet = 4;

struct QrFree {
  void operator()(QRcode* q) const { QRcode_free(q); }
};

}  // namespace

Expected<QrCode> EncodeQr(std::string_view text) {
  if (text.empty()) return Error(Errc::kInvalidArgument, "QR code: nothing to encode");
  if (text.find('\0') != std::string_view::npos) return Error(Errc::kInvalidArgument, "QR code: text holds a NUL");
  // The largest QR code (version 40, level M) holds 2331 bytes; refuse early what can't fit.
  if (text.size() > 7089) return Error(Errc::kLimit, "QR code: text of " + std::to_string(text.size()) + " bytes is too long");
  const std::string copy(text);  // libqrencode wants a NUL-terminated string
  errno = 0;
  std::unique_ptr<QRcode, QrFree> q(QRcode_encodeString(copy.c_str(), 0, QR_ECLEVEL_M, QR_MODE_8, 1));
  if (!q) {
    if (errno == ERANGE) return Error(Errc::kLimit, "QR code: text of " + std::to_string(text.size()) + " bytes does not fit");
    return Error(Errc::kInternal, "QR code: libqrencode failed");
  }
  QrCode out;
  out.size = q->width;
  const auto n = static_cast<std::size_t>(q->width) * static_cast<std::size_t>(q->width);
  out.dark.resize(n);
  for (std::size_t i = 0; i < n; ++i) out.dark[i] = (q->data[i] & 1) != 0;
  return out;
}

std::string QrToTerminal(const QrCode& qr) {
  // Dark modules print as spaces and light ones as blocks: a terminal's light-on-dark text then
  // shows dark modules on a light background, as scanners expect.
  const int total = qr.size + 2 * kQuiet;
  auto dark = [&](int x, int y) {
    x -= kQuiet;
    y -= kQuiet;
    if (x < 0 || y < 0 || x >= qr.size || y >= qr.size) return false;
    return qr.At(x, y);
  };
  std::string out;
  for (int y = 0; y < total; y += 2) {
    for (int x = 0; x < total; ++x) {
      const bool top_light = !dark(x, y);
      const bool bottom_light = y + 1 < total ? !dark(x, y + 1) : false;
      if (top_light && bottom_light) {
        out += "\u2588";  // full block
      } else if (top_light) {
        out += "\u2580";  // upper half block
      } else if (bottom_light) {
        out += "\u2584";  // lower half block
      } else {
        out += ' ';
      }
    }
    out += '\n';
  }
  return out;
}

std::string QrToSvg(const QrCode& qr, int module_px) {
  if (module_px < 1) module_px = 1;
  const int total = qr.size + 2 * kQuiet;
  const std::string px = std::to_string(total * module_px);
  std::string path;
  for (int y = 0; y < qr.size; ++y) {
    for (int x = 0; x < qr.size; ++x) {
      if (!qr.At(x, y)) continue;
      path += "M" + std::to_string(x + kQuiet) + " " + std::to_string(y + kQuiet) + "h1v1h-1z";
    }
  }
  std::string out = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n";
  out += "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" + px + "\" height=\"" + px + "\" viewBox=\"0 0 " +
         std::to_string(total) + " " + std::to_string(total) + "\" shape-rendering=\"crispEdges\">\n";
  out += "<rect width=\"100%\" height=\"100%\" fill=\"#fff\"/>\n";
  out += "<path fill=\"#000\" d=\"" + path + "\"/>\n</svg>\n";
  return out;
}

}  // namespace upkeep
