#include "upkeep/common/error.hpp"

namespace upkeep {

const char* ErrcName(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return "invalid_argument";
    case Errc::kIo: return "io_error";
    case Errc::kNotFound: return "not_found";
    case Errc::kParse: return "parse_error";
    case Errc::kVerification: return "verification_failed";
    case Errc::kPolicy: return "policy";
    case Errc::kUnsafe: return "unsafe_content";
    case Errc::kLimit: return "limit_exceeded";
    case Errc::kInternal: return "internal";
  }
  return "internal";
}

int Error::ExitCode() const {
  switch (code_) {
    case Errc::kVerification:
    case Errc::kPolicy:
    case Errc::kUnsafe:
    case Errc::kLimit:
      return 1;
    default:
      return 2;
  }
}

}  // namespace upkeep
