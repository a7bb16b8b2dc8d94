// QR codes for short texts a person carries from one screen to another (the download key, see
// docs/airgap.md), through libqrencode (docs/dependencies.md). Error correction level M;
// upper-case alphanumeric text gets the compact alphanumeric mode by itself.
// Thread-safe (libqrencode keeps no global state in QRcode_encodeString).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/common/error.hpp"

namespace upkeep {

struct QrCode {
  int size = 0;                      // modules per side
  std::vector<bool> dark;            // size * size, row-major
  bool At(int x, int y) const { return dark[static_cast<std::size_t>(y) * size + x]; }
};

// kInvalidArgument for empty text or text with a NUL; kLimit when it doesn't fit a QR code.
Expected<QrCode> EncodeQr(std::string_view text);

// For a terminal: two module rows per text line with the Unicode half blocks and a 4-module
// quiet zone. Dark modules are drawn as spaces and light ones as blocks, so on the usual
// light-text-on-dark terminal the code shows dark on light, as scanners expect.
std::string QrToTerminal(const QrCode& qr);

// A standalone SVG document (one path, black on white, 4-module quiet zone), `module_px` per module.
std::string QrToSvg(const QrCode& qr, int module_px = 4);

}  // namespace upkeep
