// One PostgreSQL connection over libpq, parameterized queries and typed results.
//
// Queries take their values only as bound parameters (PQexecParams, one statement per call):
// SQL text never contains data, so nothing a user sends can change a statement. The one
// exception is ExecScript, for multi-statement SQL compiled into the binary (migrations).
// Identifiers that must be spliced (CREATE DATABASE name) go through QuoteIdentifier.
//
// Every session runs with client_encoding UTF8, TimeZone UTC and DateStyle ISO, so the text
// forms the typed getters parse are fixed.
//
// Ownership: a Connection owns its PGconn and closes it in the destructor; a Result owns its
// PGresult and stays valid after the Connection is gone. Neither is thread-safe: use one
// Connection per thread at a time (the Pool hands them out). No exception escapes.
#pragma once

#include <array>
#include <chrono>
#include <concepts>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"

struct pg_conn;
struct pg_result;

namespace upkeep::db {

// A bound parameter value. Constructed implicitly from the supported C++ types:
//   strings -> text (the server infers the column type), integers -> int8, bool, double,
//   Bytes / span of bytes -> bytea (sent in binary, no escaping), SysTime -> timestamptz,
//   std::nullopt / nullptr / std::optional<T> without value -> NULL.
class Param {
 public:
  Param(std::nullptr_t) {}                               // NOLINT: implicit by design
  Param(std::nullopt_t) {}                               // NOLINT
  Param(std::string_view s) : value_(std::string(s)) {}  // NOLINT
  Param(const std::string& s) : value_(s) {}             // NOLINT
  Param(const char* s) : value_(std::string(s)) {}       // NOLINT
  template <typename I>
  requires(std::integral<I> && !std::same_as<I, bool> && !std::same_as<I, char> &&
           (std::signed_integral<I> || sizeof(I) < 8)) Param(I v)
      : value_(std::to_string(static_cast<std::int64_t>(v))), oid_(kInt8Oid) {}  // NOLINT
  Param(bool v) : value_(v ? "t" : "f"), oid_(kBoolOid) {}                       // NOLINT
  Param(double v);                                                               // NOLINT
  Param(std::span<const std::uint8_t> bytes)                                     // NOLINT
      : value_(std::string(reinterpret_cast<const char*>(bytes.data()), bytes.size())),
        oid_(kByteaOid),
        binary_(true) {}
  Param(const Bytes& bytes) : Param(std::span<const std::uint8_t>(bytes)) {}  // NOLINT
  Param(SysTime t);                                                           // NOLINT
  template <typename T>
  Param(const std::optional<T>& v) {  // NOLINT
    if (v) *this = Param(*v);
  }

  bool is_null() const { return !value_.has_value(); }
  const std::optional<std::string>& value() const { return value_; }
  unsigned oid() const { return oid_; }
  bool binary() const { return binary_; }

 private:
  static constexpr unsigned kBoolOid = 16, kByteaOid = 17, kInt8Oid = 20;
  std::optional<std::string> value_;
  unsigned oid_ = 0;  // 0: let the server infer from context
  bool binary_ = false;
};

// Names a result column by index or by name.
class ColumnRef {
 public:
  ColumnRef(int index) : index_(index) {}                        // NOLINT
  ColumnRef(const char* name) : index_(-1), name_(name) {}       // NOLINT
  ColumnRef(std::string_view name) : index_(-1), name_(name) {}  // NOLINT
  int index() const { return index_; }
  std::string_view name() const { return name_; }

 private:
  int index_;
  std::string_view name_;
};

// The rows of one statement, in text format. Getters check the row, the column, NULL and the
// column's type, and return an Error naming the column on any mismatch:
//   Get<std::string>: text, varchar, char, name, json, jsonb, uuid, unknown
//   Get<std::int64_t>: int2, int4, int8        Get<bool>: bool      Get<double>: float4/8, numeric
//   Get<Bytes>: bytea                           Get<SysTime>: timestamptz, timestamp (as UTC)
// GetText returns any column's text form.
class Result {
 public:
  Result() = default;
  explicit Result(pg_result* res);
  Result(Result&&) noexcept = default;
  Result& operator=(Result&&) noexcept = default;

  int rows() const;
  int columns() const;
  // Rows touched by INSERT/UPDATE/DELETE/...; 0 when the command reports none.
  std::int64_t affected_rows() const;
  // The command tag, e.g. "INSERT 0 1" or "COMMIT".
  std::string command_tag() const;
  std::string column_name(int column) const;
  Expected<int> ColumnIndex(std::string_view name) const;

  Expected<bool> IsNull(int row, ColumnRef column) const;
  Expected<std::string> GetText(int row, ColumnRef column) const;

  template <typename T>
  Expected<T> Get(int row, ColumnRef column) const;

  template <typename T>
  Expected<std::optional<T>> GetOptional(int row, ColumnRef column) const {
    auto null = IsNull(row, column);
    if (!null.ok()) return null.error();
    if (*null) return std::optional<T>();
    auto v = Get<T>(row, column);
    if (!v.ok()) return v.error();
    return std::optional<T>(std::move(v).value());
  }

 private:
  struct Clear {
    void operator()(pg_result* r) const;
  };
  // Resolves a column and checks the row; the error names the column.
  Expected<int> Locate(int row, ColumnRef column) const;
  Expected<const char*> NonNull(int row, ColumnRef column, int* col_out) const;
  std::unique_ptr<pg_result, Clear> res_;
};

template <>
Expected<std::string> Result::Get<std::string>(int row, ColumnRef column) const;
template <>
Expected<std::int64_t> Result::Get<std::int64_t>(int row, ColumnRef column) const;
template <>
Expected<bool> Result::Get<bool>(int row, ColumnRef column) const;
template <>
Expected<double> Result::Get<double>(int row, ColumnRef column) const;
template <>
Expected<Bytes> Result::Get<Bytes>(int row, ColumnRef column) const;
template <>
Expected<SysTime> Result::Get<SysTime>(int row, ColumnRef column) const;

struct ConnectOptions {
  // A libpq connection string: "postgresql://user@host:port/db?passfile=..." or "host=... dbname=...".
  std::string conninfo;
  // When set, replaces the database named in conninfo.
  std::optional<std::string> dbname;
  // Bound on establishing the connection (libpq counts whole seconds, at least 2).
  std::chrono::seconds connect_timeout{10};
  std::string application_name = "upkeep";
};

class Connection {
 public:
  static Expected<Connection> Open(const ConnectOptions& options);
  static Expected<Connection> Open(std::string_view conninfo);

  Connection(Connection&& other) noexcept;
  Connection& operator=(Connection&& other) noexcept;
  Connection(const Connection&) = delete;
  Connection& operator=(const Connection&) = delete;
  ~Connection();

  // Runs one statement with its parameters bound ($1, $2, ...).
  template <typename... Args>
  Expected<Result> Exec(std::string_view sql, const Args&... args) {
    const std::array<Param, sizeof...(Args)> params{Param(args)...};
    return ExecParams(sql, params);
  }
  Expected<Result> ExecParams(std::string_view sql, std::span<const Param> params);

  // Runs trusted, compiled-in SQL that may hold several statements. Never pass data here.
  Status ExecScript(std::string_view trusted_sql);

  // "name" -> "\"name\"" with embedded quotes doubled, for identifiers that cannot be parameters.
  Expected<std::string> QuoteIdentifier(std::string_view identifier) const;

  // False once libpq knows the connection is broken.
  bool IsOpen() const;
  // Notices, without a round trip, whether the server closed an idle connection (restart,
  // termination): reads whatever is pending on the socket. False if the connection is unusable.
  bool CheckAlive();
  // True inside a transaction block (also an aborted one).
  bool InTransaction() const;
  // "user@host:port/dbname" for logs; never the password.
  std::string Describe() const;

 private:
  explicit Connection(pg_conn* conn, std::string password);
  Error ErrorFromConnection(std::string_view what, std::string_view fallback_state) const;
  Error ErrorFromResult(pg_result* res, std::string_view sql) const;
  std::string Scrub(std::string text) const;

  pg_conn* conn_ = nullptr;
  std::string password_;  // only to scrub it from messages
};

// Returns conninfo as a key=value string naming database `dbname` instead (other settings kept).
Expected<std::string> ConninfoWithDatabase(std::string_view conninfo, std::string_view dbname);

}  // namespace upkeep::db
