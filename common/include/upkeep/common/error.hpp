// The one error vocabulary of Upkeep.
//
// Every fallible function returns Expected<T>: either a value or an Error. An Error carries a
// stable machine-readable code (used in JSON error bodies and exit-code mapping) and a one-line
// human message that names the offending thing ("manifest.json: field 'version': ...").
// Exceptions never cross a public API; code that calls throwing libraries (nlohmann::json,
// std::filesystem) catches at the boundary and converts. Asserts are for programmer errors only;
// anything that comes from a file, the network or a user is an Error.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace upkeep {

enum class Errc {
  kInvalidArgument,   // usage or malformed input (exit code 2)
  kIo,                // file system or network I/O failed (exit code 2)
  kNotFound,          // a named thing does not exist (exit code 2)
  kParse,             // input is not well-formed (exit code 2)
  kVerification,      // a signature, hash, size, expiry or version rule failed (exit code 1)
  kPolicy,            // well-formed and authentic but not allowed (exit code 1)
  kUnsafe,            // hostile content refused (path escape, device node, ...) (exit code 1)
  kLimit,             // input exceeds a configured bound (exit code 1)
  kInternal,          // a bug or an unexpected library failure
};

const char* ErrcName(Errc code);

class Error {
 public:
  Error(Errc code, std::string message) : code_(code), message_(std::move(message)) {}

  Errc code() const { return code_; }
  const std::string& message() const { return message_; }

  // Returns a copy with "context: " prepended, so callers can say where an error happened.
  Error Wrap(const std::string& context) const { return Error(code_, context + ": " + message_); }

  // Exit code for command-line tools: 1 for verification and policy failures, 2 for usage/input.
  int ExitCode() const;

 private:
  Errc code_;
  std::string message_;
};

// Holds either a T or an Error. Minimal on purpose (C++20 has no std::expected).
template <typename T>
class [[nodiscard]] Expected {
 public:
  Expected(T value) : v_(std::in_place_index<0>, std::move(value)) {}  // NOLINT implicit by design
  Expected(Error error) : v_(std::in_place_index<1>, std::move(error)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<0>(v_); }
  const T& value() const& { return std::get<0>(v_); }
  T&& value() && { return std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const { return std::get<1>(v_); }

 private:
  std::variant<T, Error> v_;
};

// For functions that return nothing on success.
struct Ok {};
using Status = Expected<Ok>;
inline Status OkStatus() { return Ok{}; }

}  // namespace upkeep

// Propagates an error from an Expected-returning expression; otherwise binds its value.
#define UPK_CONCAT_INNER(a, b) a##b
#define UPK_CONCAT(a, b) UPK_CONCAT_INNER(a, b)
#define UPK_TRY_IMPL(tmp, decl, expr) \
  auto tmp = (expr);                  \
  if (!tmp.ok()) return tmp.error();  \
  decl = std::move(tmp).value()
#define UPK_TRY_ASSIGN(decl, expr) UPK_TRY_IMPL(UPK_CONCAT(upk_try_, __LINE__), decl, expr)
#define UPK_TRY(expr)                                                 \
  do {                                                                \
    auto upk_try_status = (expr);                                     \
    if (!upk_try_status.ok()) return upk_try_status.error();          \
  } while (0)
