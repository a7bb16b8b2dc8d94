#include "upkeep/relay/frame.hpp"

#include <algorithm>

namespace upkeep::relay {

bool IsKnownFrameType(std::uint8_t type) {
  switch (type) {
    case 0x01: case 0x02: case 0x03: case 0x04: case 0x05:
    case 0x10: case 0x11: case 0x12: case 0x13:
    case 0x20: case 0x21: case 0x22: case 0x23:
      return true;
    default:
      return false;
  }
}

bool IsRawFrameType(FrameType type) { return type == FrameType::kData || type == FrameType::kBuildChunk; }

const char* FrameTypeName(FrameType type) {
  switch (type) {
    case FrameType::kHello: return "HELLO";
    case FrameType::kWelcome: return "WELCOME";
    case FrameType::kError: return "ERROR";
    case FrameType::kPing: return "PING";
    case FrameType::kPong: return "PONG";
    case FrameType::kOpen: return "OPEN";
    case FrameType::kOpened: return "OPENED";
    case FrameType::kData: return "DATA";
    case FrameType::kClose: return "CLOSE";
    case FrameType::kUpgrade: return "UPGRADE";
    case FrameType::kBuildGet: return "BUILD_GET";
    case FrameType::kBuildChunk: return "BUILD_CHUNK";
    case FrameType::kBuildReport: return "BUILD_REPORT";
  }
  return "UNKNOWN";
}

std::size_t MaxPayload(FrameType type) { return IsRawFrameType(type) ? kMaxFramePayload : kMaxControlPayload; }

void FrameDecoder::ShrinkIfIdle() {
  if (partial_.empty() && partial_.capacity() > 0) std::string().swap(partial_);
}

FrameDecoder::Result FrameDecoder::Feed(std::span<const std::uint8_t> data, const Sink& sink) {
  Result result;
  if (failed_) {
    result.failed = true;
    result.error = error_;
    return result;
  }
  auto fail = [&](const char* code, std::string message) {
    failed_ = true;
    error_.code = code;
    error_.message = std::move(message);
    partial_.clear();
    result.failed = true;
    result.error = error_;
    return result;
  };
  std::size_t pos = 0;
  while (pos < data.size() || (in_frame_ && remaining_ == 0)) {
    if (!in_frame_) {
      std::size_t take = std::min<std::size_t>(kFrameHeaderSize - header_len_, data.size() - pos);
      std::copy_n(data.data() + pos, take, header_ + header_len_);
      header_len_ = static_cast<std::uint8_t>(header_len_ + take);
      pos += take;
      if (header_len_ < kFrameHeaderSize) break;
      header_len_ = 0;
      if (!IsKnownFrameType(header_[0])) {
        result.consumed = pos;
        return fail(codes::kGarbageFrame, "unknown frame type " + std::to_string(header_[0]));
      }
      type_ = static_cast<FrameType>(header_[0]);
      remaining_ = (std::uint32_t{header_[1]} << 16) | (std::uint32_t{header_[2]} << 8) | header_[3];
      if (remaining_ > MaxPayload(type_)) {
        result.consumed = pos;
        return fail(codes::kOversizedFrame, std::string("oversized ") + FrameTypeName(type_) + " frame (" +
                                                std::to_string(remaining_) + " bytes, at most " +
                                                std::to_string(MaxPayload(type_)) + ")");
      }
      in_frame_ = true;
    }
    std::size_t take = std::min<std::size_t>(remaining_, data.size() - pos);
    std::string_view piece(reinterpret_cast<const char*>(data.data() + pos), take);
    pos += take;
    remaining_ -= static_cast<std::uint32_t>(take);
    bool done = remaining_ == 0;
    bool keep_going = true;
    if (IsRawFrameType(type_)) {
      // Raw payloads pass through in pieces; an empty frame still yields one (empty, last) piece.
      if (!piece.empty() || done) {
        FramePiece out;
        out.type = type_;
        out.payload = piece;
        out.last = done;
        keep_going = sink(out);
      }
    } else {
      partial_.append(piece);
      if (done) {
        FramePiece out;
        out.type = type_;
        out.payload = partial_;
        out.last = true;
        keep_going = sink(out);
        partial_.clear();
      }
    }
    if (done) in_frame_ = false;
    if (!keep_going) break;
  }
  result.consumed = pos;
  return result;
}

Status AppendFrame(std::string& out, FrameType type, std::string_view payload) {
  if (payload.size() > MaxPayload(type)) {
    return Error(Errc::kInvalidArgument, std::string(FrameTypeName(type)) + " payload of " +
                                             std::to_string(payload.size()) + " bytes is over the frame limit");
  }
  const auto n = static_cast<std::uint32_t>(payload.size());
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>((n >> 16) & 0xff));
  out.push_back(static_cast<char>((n >> 8) & 0xff));
  out.push_back(static_cast<char>(n & 0xff));
  out.append(payload);
  return OkStatus();
}

Expected<std::string> EncodeFrame(FrameType type, std::string_view payload) {
  std::string out;
  out.reserve(kFrameHeaderSize + payload.size());
  UPK_TRY(AppendFrame(out, type, payload));
  return out;
}

}  // namespace upkeep::relay
