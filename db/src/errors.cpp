#include "upkeep/db/errors.hpp"

#include <cctype>

namespace upkeep::db {
namespace {

constexpr std::string_view kTag = "[SQLSTATE ";

Errc ErrcForState(std::string_view s) {
  if (s.size() != 5) return Errc::kInternal;
  const std::string_view cls = s.substr(0, 2);
  if (cls == "08" || cls == "53" || s == "57P01" || s == "57P02" || s == "57P03") return Errc::kIo;
  if (s == kSerializationFailure || s == kDeadlockDetected) return Errc::kIo;
  if (cls == "23" || cls == "28" || s == "P0001") return Errc::kPolicy;
  if (cls == "22") return Errc::kInvalidArgument;
  return Errc::kInternal;
}

}  // namespace

Error MakeDbError(std::string_view sqlstate, std::string message) {
  if (sqlstate.empty()) return Error(Errc::kInternal, std::move(message));
  message += " ";
  message += kTag;
  message += sqlstate;
  message += "]";
  return Error(ErrcForState(sqlstate), std::move(message));
}

std::optional<std::string> SqlState(const Error& error) {
  const std::string& m = error.message();
  // The tag is appended last, so only a trailing one counts.
  if (m.size() < kTag.size() + 6 || m.back() != ']') return std::nullopt;
  const std::size_t at = m.size() - 1 - 5 - kTag.size();
  if (std::string_view(m).substr(at, kTag.size()) != kTag) return std::nullopt;
  std::string state = m.substr(at + kTag.size(), 5);
  for (char c : state) {
    if (!std::isdigit(static_cast<unsigned char>(c)) && !std::isupper(static_cast<unsigned char>(c))) {
      return std::nullopt;
    }
  }
  return state;
}

bool IsUniqueViolation(const Error& error) { return SqlState(error) == std::string(kUniqueViolation); }

bool IsRetryableTransaction(const Error& error) {
  auto s = SqlState(error);
  return s && (*s == kSerializationFailure || *s == kDeadlockDetected);
}

bool IsConnectionLost(const Error& error) {
  auto s = SqlState(error);
  if (!s) return false;
  return s->starts_with("08") || *s == "57P01" || *s == "57P02" || *s == "57P03";
}

bool IsBusy(const Error& error) {
  return error.code() == Errc::kLimit && error.message().find("database busy") != std::string::npos;
}

}  // namespace upkeep::db
