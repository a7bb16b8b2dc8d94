// Relay frames (docs/relay-protocol.md): `u8 type, u24 big-endian length, payload`.
//
// FrameDecoder is an incremental, allocation-light decoder: feed it whatever bytes arrived (any
// split), it hands out complete control frames and DATA payload pieces as they arrive, so a
// connection never buffers more than one partial control frame (at most kMaxControlPayload bytes).
// It is pure (no I/O, no clock), single-threaded, and safe on hostile input: an unknown type, a
// length over the limit of its type, or anything after a failure is an error; after an error the
// decoder stays failed. Encoding is EncodeFrame / AppendFrame.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <span>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::relay {

enum class FrameType : std::uint8_t {
  kHello = 0x01,
  kWelcome = 0x02,
  kError = 0x03,
  kPing = 0x04,
  kPong = 0x05,
  kOpen = 0x10,
  kOpened = 0x11,
  kData = 0x12,
  kClose = 0x13,
  kUpgrade = 0x20,
  kBuildGet = 0x21,
  kBuildChunk = 0x22,
  kBuildReport = 0x23,
};

constexpr std::size_t kFrameHeaderSize = 4;
constexpr std::size_t kMaxFramePayload = 65536;       // DATA and BUILD_CHUNK
constexpr std::size_t kMaxControlPayload = 16 * 1024;  // every JSON (control) frame

// The wire error codes (ERROR frame "code"), see docs/relay-protocol.md.
namespace codes {
inline constexpr const char* kBadHello = "bad_hello";
inline constexpr const char* kUnknownClient = "unknown_client";
inline constexpr const char* kBadSecret = "bad_secret";
inline constexpr const char* kRateLimited = "rate_limited";
inline constexpr const char* kDraining = "draining";
inline constexpr const char* kClientOffline = "client_offline";
inline constexpr const char* kClientUnknown = "client_unknown";
inline constexpr const char* kClientBusy = "client_busy";
inline constexpr const char* kGarbageFrame = "garbage_frame";
inline constexpr const char* kOversizedFrame = "oversized_frame";
inline constexpr const char* kIdleTimeout = "idle_timeout";
inline constexpr const char* kUpgradeStalled = "upgrade_stalled";
inline constexpr const char* kReplaced = "replaced";  // a newer connection of the same client took over
}  // namespace codes

bool IsKnownFrameType(std::uint8_t type);
// True for types whose payload is raw bytes (DATA, BUILD_CHUNK); the others carry JSON.
bool IsRawFrameType(FrameType type);
const char* FrameTypeName(FrameType type);
// The largest payload a frame of this type may carry.
std::size_t MaxPayload(FrameType type);

// One decoded unit. For DATA, `payload` is a piece of the frame's payload (the frame may arrive as
// several pieces; `last` marks its end); every other type arrives whole with last == true.
struct FramePiece {
  FrameType type = FrameType::kPing;
  std::string_view payload;  // valid only during the callback
  bool last = true;
};

// Errors from the decoder carry the wire code in `code` (codes::kGarbageFrame or
// codes::kOversizedFrame) and a human message.
struct DecodeError {
  const char* code = codes::kGarbageFrame;
  std::string message;
};

class FrameDecoder {
 public:
  // Return false from the callback to stop decoding: Feed returns at once with the count of
  // bytes consumed so far (the caller may feed the rest later).
  using Sink = std::function<bool(const FramePiece&)>;

  struct Result {
    std::size_t consumed = 0;
    bool failed = false;
    DecodeError error;  // when failed
  };

  // Consumes bytes (all of them unless the sink stopped early or the input is bad).
  Result Feed(std::span<const std::uint8_t> data, const Sink& sink);
  Result Feed(std::string_view data, const Sink& sink) {
    return Feed(std::span<const std::uint8_t>(reinterpret_cast<const std::uint8_t*>(data.data()), data.size()), sink);
  }

  bool failed() const { return failed_; }
  // Bytes held for a partial control frame (0 between frames and for DATA).
  std::size_t buffered() const { return partial_.size(); }
  // True between frames (no partial header or payload pending).
  bool at_boundary() const { return header_len_ == 0 && remaining_ == 0 && !in_frame_; }
  // Frees the partial buffer's capacity when idle (called by connections to keep idle memory low).
  void ShrinkIfIdle();

 private:
  std::uint8_t header_[kFrameHeaderSize] = {};
  std::uint8_t header_len_ = 0;
  bool in_frame_ = false;
  FrameType type_ = FrameType::kPing;
  std::uint32_t remaining_ = 0;
  std::string partial_;
  bool failed_ = false;
  DecodeError error_;
};

// Appends one encoded frame to `out`. The payload must fit MaxPayload(type) (a programmer error
// otherwise: it returns kInvalidArgument and appends nothing).
Status AppendFrame(std::string& out, FrameType type, std::string_view payload);
Expected<std::string> EncodeFrame(FrameType type, std::string_view payload);

}  // namespace upkeep::relay
