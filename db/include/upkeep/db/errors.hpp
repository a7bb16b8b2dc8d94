// How database failures look as upkeep::Error values, and how callers tell them apart.
//
// Every error from upkeep_db carries the SQLSTATE in its message as a trailing
// "[SQLSTATE xxxxx]" (Error::Wrap only prepends, so the tag survives wrapping). Server errors
// keep the server's code; failures libpq detects itself get a standard code: 08001 when a
// connection cannot be made, 08006 when an open one is lost. Pool exhaustion is Errc::kLimit
// with the message "database busy: ..." and no SQLSTATE.
// Messages never contain a password: connection strings are not echoed, and a password known
// from the connection string is scrubbed from libpq's messages.
// Errc mapping: connection and transient server states (08, 53, 57P01-57P03), serialization
// failure and deadlock -> kIo; integrity violations (23) and raise_exception (P0001) -> kPolicy;
// data exceptions (22) -> kInvalidArgument; authorization (28) -> kPolicy; the rest -> kInternal.
// Pure functions; thread-safe.
#pragma once

#include <optional>
#include <string>
#include <string_view>

#include "upkeep/common/error.hpp"

namespace upkeep::db {

// Well-known SQLSTATEs callers branch on.
inline constexpr std::string_view kUniqueViolation = "23505";
inline constexpr std::string_view kForeignKeyViolation = "23503";
inline constexpr std::string_view kSerializationFailure = "40001";
inline constexpr std::string_view kDeadlockDetected = "40P01";
inline constexpr std::string_view kConnectionFailure = "08006";
inline constexpr std::string_view kCannotConnect = "08001";

// The five-character SQLSTATE an error carries, if it came from the database layer.
std::optional<std::string> SqlState(const Error& error);

bool IsUniqueViolation(const Error& error);
// Serialization failure or deadlock: the transaction may succeed when run again.
bool IsRetryableTransaction(const Error& error);
// The connection is gone or could not be made (class 08, or the server shutting down/starting).
bool IsConnectionLost(const Error& error);
// Every pooled connection was in use for the whole acquire time-out.
bool IsBusy(const Error& error);
// Busy or unreachable: an HTTP layer answers 503 and the client tries again later.
inline bool IsUnavailable(const Error& error) { return IsBusy(error) || IsConnectionLost(error); }

// Builds an error in the format above (used by the library; exposed for fakes in tests).
Error MakeDbError(std::string_view sqlstate, std::string message);

}  // namespace upkeep::db
