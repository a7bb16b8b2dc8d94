#include "upkeep/db/connection.hpp"

#include <libpq-fe.h>
#include <poll.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <vector>

#include "upkeep/db/errors.hpp"

namespace upkeep::db {
namespace {

// Type OIDs from pg_type.dat; stable across PostgreSQL versions.
constexpr Oid kBool = 16, kBytea = 17, kChar = 18, kName = 19, kInt8 = 20, kInt2 = 21, kInt4 = 23, kText = 25,
              kJson = 114, kFloat4 = 700, kFloat8 = 701, kUnknown = 705, kBpchar = 1042, kVarchar = 1043,
              kTimestamp = 1114, kTimestampTz = 1184, kNumeric = 1700, kUuid = 2950, kJsonb = 3802;

constexpr int kMaxParams = 65535;  // the protocol's limit

// libpq messages span lines ("...failed: FATAL:  x\n\tThis probably means..."); errors are one line.
std::string OneLine(std::string_view text) {
  std::string out;
  bool space = false;
  for (char c : text) {
    if (c == '\n' || c == '\t' || c == '\r' || c == ' ') {
      space = true;
      continue;
    }
    if (space && !out.empty()) out += ' ';
    space = false;
    out += c;
  }
  return out;
}

// Names a statement in an error without its full text.
std::string Abbrev(std::string_view sql) {
  std::string s = OneLine(sql);
  if (s.size() > 60) s = s.substr(0, 57) + "...";
  return s;
}

// libpq's parse errors may quote fragments of the connection string; hide them.
std::string HideQuoted(std::string_view text) {
  std::string out;
  bool in_quote = false;
  for (char c : text) {
    if (c == '"') {
      out += in_quote ? "\"" : "\"...";
      in_quote = !in_quote;
      continue;
    }
    if (!in_quote) out += c;
  }
  return out;
}

struct ParsedConninfo {
  std::vector<std::pair<std::string, std::string>> options;  // only those that are set
};

Expected<ParsedConninfo> ParseConninfo(std::string_view conninfo) {
  char* err = nullptr;
  const std::string text(conninfo);
  PQconninfoOption* opts = PQconninfoParse(text.c_str(), &err);
  if (opts == nullptr) {
    std::string msg = err ? HideQuoted(OneLine(err)) : "out of memory";
    if (err) PQfreemem(err);
    return Error(Errc::kInvalidArgument, "invalid database connection string: " + msg);
  }
  ParsedConninfo parsed;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val != nullptr) parsed.options.emplace_back(o->keyword, o->val);
  }
  PQconninfoFree(opts);
  return parsed;
}

std::string FindOption(const ParsedConninfo& p, std::string_view key) {
  for (const auto& [k, v] : p.options) {
    if (k == key) return v;
  }
  return {};
}

Expected<std::int64_t> ParseInt(std::string_view text, const std::string& what) {
  std::int64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) {
    return Error(Errc::kParse, what + ": not an integer: '" + std::string(text) + "'");
  }
  return v;
}

// "2030-01-02 03:04:05[.ffffff][+00[:00]]" as the server prints it with DateStyle ISO, TimeZone UTC.
Expected<SysTime> ParseServerTimestamp(const char* text, const std::string& what) {
  int y = 0, mo = 0, d = 0, h = 0, mi = 0, s = 0, n = 0;
  if (std::sscanf(text, "%5d-%2d-%2d %2d:%2d:%2d%n", &y, &mo, &d, &h, &mi, &s, &n) != 6) {
    return Error(Errc::kParse, what + ": not a timestamp: '" + std::string(text) + "'");
  }
  std::string_view rest(text + n);
  if (!rest.empty() && rest.front() == '.') {
    rest.remove_prefix(1);
    while (!rest.empty() && rest.front() >= '0' && rest.front() <= '9') rest.remove_prefix(1);
  }
  if (!(rest.empty() || rest == "+00" || rest == "+00:00" || rest == "Z")) {
    return Error(Errc::kParse, what + ": timestamp not in UTC or out of range: '" + std::string(text) + "'");
  }
  const std::chrono::year_month_day ymd{std::chrono::year(y), std::chrono::month(static_cast<unsigned>(mo)),
                                        std::chrono::day(static_cast<unsigned>(d))};
  if (!ymd.ok() || h > 23 || mi > 59 || s > 60) {
    return Error(Errc::kParse, what + ": invalid timestamp '" + std::string(text) + "'");
  }
  return SysTime(std::chrono::sys_days(ymd)) + std::chrono::hours(h) + std::chrono::minutes(mi) +
         std::chrono::seconds(s);
}

}  // namespace

// ---- Param ----

Param::Param(double v) : oid_(kFloat8) {
  char buf[64];
  auto [ptr, ec] = std::to_chars(buf, buf + sizeof buf, v);
  value_ = ec == std::errc() ? std::string(buf, ptr) : std::string("NaN");
}

Param::Param(SysTime t) : value_(FormatTimestamp(t)), oid_(kTimestampTz) {}

// ---- Result ----

void Result::Clear::operator()(pg_result* r) const { PQclear(r); }

Result::Result(pg_result* res) : res_(res) {}

int Result::rows() const { return res_ ? PQntuples(res_.get()) : 0; }
int Result::columns() const { return res_ ? PQnfields(res_.get()) : 0; }

std::int64_t Result::affected_rows() const {
  if (!res_) return 0;
  const char* t = PQcmdTuples(res_.get());
  std::int64_t v = 0;
  if (t == nullptr || *t == '\0') return 0;
  std::from_chars(t, t + std::strlen(t), v);
  return v;
}

std::string Result::command_tag() const {
  if (!res_) return {};
  const char* t = PQcmdStatus(res_.get());
  return t ? t : "";
}

std::string Result::column_name(int column) const {
  if (!res_ || column < 0 || column >= columns()) return {};
  return PQfname(res_.get(), column);
}

Expected<int> Result::ColumnIndex(std::string_view name) const {
  for (int i = 0; i < columns(); ++i) {
    if (name == PQfname(res_.get(), i)) return i;
  }
  return Error(Errc::kNotFound, "result has no column '" + std::string(name) + "'");
}

Expected<int> Result::Locate(int row, ColumnRef column) const {
  int col = column.index();
  if (col < 0) {
    UPK_TRY_ASSIGN(col, ColumnIndex(column.name()));
  } else if (col >= columns()) {
    return Error(Errc::kNotFound,
                 "result has no column " + std::to_string(col) + " (it has " + std::to_string(columns()) + ")");
  }
  if (row < 0 || row >= rows()) {
    return Error(Errc::kNotFound, "result has no row " + std::to_string(row) + " (it has " + std::to_string(rows()) +
                                      ") for column '" + column_name(col) + "'");
  }
  return col;
}

Expected<bool> Result::IsNull(int row, ColumnRef column) const {
  UPK_TRY_ASSIGN(int col, Locate(row, column));
  return PQgetisnull(res_.get(), row, col) == 1;
}

Expected<const char*> Result::NonNull(int row, ColumnRef column, int* col_out) const {
  UPK_TRY_ASSIGN(int col, Locate(row, column));
  if (PQgetisnull(res_.get(), row, col)) {
    return Error(Errc::kNotFound, "column '" + column_name(col) + "' is NULL in row " + std::to_string(row));
  }
  *col_out = col;
  return static_cast<const char*>(PQgetvalue(res_.get(), row, col));
}

Expected<std::string> Result::GetText(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  return std::string(v, static_cast<std::size_t>(PQgetlength(res_.get(), row, col)));
}

namespace {
Error TypeMismatch(const std::string& column, Oid oid, const char* wanted) {
  return Error(Errc::kInvalidArgument,
               "column '" + column + "' has type oid " + std::to_string(oid) + ", not " + wanted);
}
}  // namespace

template <>
Expected<std::string> Result::Get<std::string>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kText && t != kVarchar && t != kBpchar && t != kName && t != kChar && t != kJson && t != kJsonb &&
      t != kUuid && t != kUnknown) {
    return TypeMismatch(column_name(col), t, "a string type");
  }
  return std::string(v, static_cast<std::size_t>(PQgetlength(res_.get(), row, col)));
}

template <>
Expected<std::int64_t> Result::Get<std::int64_t>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kInt2 && t != kInt4 && t != kInt8) return TypeMismatch(column_name(col), t, "an integer type");
  return ParseInt(v, "column '" + column_name(col) + "'");
}

template <>
Expected<bool> Result::Get<bool>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kBool) return TypeMismatch(column_name(col), t, "bool");
  return v[0] == 't';
}

template <>
Expected<double> Result::Get<double>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kFloat4 && t != kFloat8 && t != kNumeric) return TypeMismatch(column_name(col), t, "a floating type");
  double d = 0;
  const char* end = v + std::strlen(v);
  auto [ptr, ec] = std::from_chars(v, end, d);
  if (ec != std::errc() || ptr != end) {
    if (std::strcmp(v, "Infinity") == 0) return std::numeric_limits<double>::infinity();
    if (std::strcmp(v, "-Infinity") == 0) return -std::numeric_limits<double>::infinity();
    return Error(Errc::kParse, "column '" + column_name(col) + "': not a number: '" + v + "'");
  }
  return d;
}

template <>
Expected<Bytes> Result::Get<Bytes>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kBytea) return TypeMismatch(column_name(col), t, "bytea");
  std::string_view text(v, static_cast<std::size_t>(PQgetlength(res_.get(), row, col)));
  if (!text.starts_with("\\x")) {
    return Error(Errc::kParse, "column '" + column_name(col) + "': bytea not in hex format");
  }
  auto bytes = FromHex(text.substr(2));
  if (!bytes.ok()) return bytes.error().Wrap("column '" + column_name(col) + "'");
  return std::move(bytes).value();
}

template <>
Expected<SysTime> Result::Get<SysTime>(int row, ColumnRef column) const {
  int col = 0;
  UPK_TRY_ASSIGN(const char* v, NonNull(row, column, &col));
  const Oid t = PQftype(res_.get(), col);
  if (t != kTimestampTz && t != kTimestamp) return TypeMismatch(column_name(col), t, "a timestamp");
  return ParseServerTimestamp(v, "column '" + column_name(col) + "'");
}

// ---- Connection ----

Connection::Connection(pg_conn* conn, std::string password) : conn_(conn), password_(std::move(password)) {}

Connection::Connection(Connection&& other) noexcept
    : conn_(std::exchange(other.conn_, nullptr)), password_(std::move(other.password_)) {}

Connection& Connection::operator=(Connection&& other) noexcept {
  if (this != &other) {
    if (conn_) PQfinish(conn_);
    conn_ = std::exchange(other.conn_, nullptr);
    password_ = std::move(other.password_);
  }
  return *this;
}

Connection::~Connection() {
  if (conn_) PQfinish(conn_);
}

Expected<Connection> Connection::Open(std::string_view conninfo) {
  ConnectOptions o;
  o.conninfo = std::string(conninfo);
  return Open(o);
}

Expected<Connection> Connection::Open(const ConnectOptions& options) {
  UPK_TRY_ASSIGN(ParsedConninfo parsed, ParseConninfo(options.conninfo));
  std::string password = FindOption(parsed, "password");

  const std::string timeout = std::to_string(std::max<std::int64_t>(2, options.connect_timeout.count()));
  // Order matters: later keywords override earlier ones. Our defaults come first so that the
  // connection string may change them; the encoding and an explicit dbname come last.
  std::vector<const char*> keys = {"connect_timeout",  "keepalives",       "keepalives_idle", "keepalives_interval",
                                   "keepalives_count", "application_name", "dbname",          "client_encoding"};
  std::vector<const char*> vals = {timeout.c_str(),          "1",   "30", "10", "3", options.application_name.c_str(),
                                   options.conninfo.c_str(), "UTF8"};
  if (options.dbname) {
    keys.push_back("dbname");
    vals.push_back(options.dbname->c_str());
  }
  keys.push_back(nullptr);
  vals.push_back(nullptr);

  PGconn* raw = PQconnectdbParams(keys.data(), vals.data(), /*expand_dbname=*/1);
  if (raw == nullptr) return MakeDbError(kCannotConnect, "cannot connect to the database: out of memory");
  Connection conn(raw, std::move(password));
  if (PQstatus(raw) != CONNECTION_OK) {
    const std::string msg = conn.Scrub(OneLine(PQerrorMessage(raw)));
    // Wrong credentials are a configuration error, not an outage.
    const bool auth = msg.find("authentication failed") != std::string::npos;
    return MakeDbError(auth ? "28P01" : kCannotConnect, "cannot connect to the database: " + msg);
  }
  // Fixed session settings, so the text the getters parse does not depend on server defaults;
  // NOTICEs (e.g. "already exists, skipping" from idempotent DDL) would otherwise go to stderr.
  auto set = conn.ExecScript(
      "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET bytea_output = 'hex'; SET client_min_messages = 'warning'");
  if (!set.ok()) return set.error().Wrap("setting up the session on " + conn.Describe());
  return conn;
}

std::string Connection::Scrub(std::string text) const {
  if (password_.size() < 4) return text;  // scrubbing a tiny string would mangle the message
  for (std::size_t at = text.find(password_); at != std::string::npos; at = text.find(password_, at)) {
    text.replace(at, password_.size(), "***");
  }
  return text;
}

std::string Connection::Describe() const {
  if (!conn_) return "(closed connection)";
  const char* host = PQhost(conn_);
  const char* port = PQport(conn_);
  const char* user = PQuser(conn_);
  const char* db = PQdb(conn_);
  return std::string(user ? user : "") + "@" + (host ? host : "") + ":" + (port ? port : "") + "/" + (db ? db : "");
}

Error Connection::ErrorFromConnection(std::string_view what, std::string_view fallback_state) const {
  std::string msg = conn_ ? Scrub(OneLine(PQerrorMessage(conn_))) : "no connection";
  if (msg.empty()) msg = "unknown error";
  const bool lost = !conn_ || PQstatus(conn_) != CONNECTION_OK;
  return MakeDbError(lost ? kConnectionFailure : fallback_state, std::string(what) + ": " + msg);
}

Error Connection::ErrorFromResult(pg_result* res, std::string_view sql) const {
  const char* state = PQresultErrorField(res, PG_DIAG_SQLSTATE);
  const char* primary = PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY);
  const char* constraint = PQresultErrorField(res, PG_DIAG_CONSTRAINT_NAME);
  std::string msg = primary ? primary : OneLine(PQresultErrorMessage(res));
  if (msg.empty()) msg = OneLine(PQerrorMessage(conn_));
  msg = Scrub(OneLine(msg));
  if (constraint) msg += std::string(" (constraint ") + constraint + ")";
  std::string st = state ? state : "";
  // Errors libpq makes itself (socket closed) have no SQLSTATE; a dead connection is class 08.
  if (st.empty() && PQstatus(conn_) != CONNECTION_OK) st = std::string(kConnectionFailure);
  if (st.empty()) st = "XX000";
  return MakeDbError(st, "query \"" + Abbrev(sql) + "\" failed: " + msg);
}

Expected<Result> Connection::ExecParams(std::string_view sql, std::span<const Param> params) {
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    return MakeDbError(kConnectionFailure, "query \"" + Abbrev(sql) + "\" not sent: the database connection is closed");
  }
  if (params.size() > static_cast<std::size_t>(kMaxParams)) {
    return Error(Errc::kLimit, "query \"" + Abbrev(sql) + "\" has " + std::to_string(params.size()) +
                                   " parameters; the protocol allows " + std::to_string(kMaxParams));
  }
  const std::string text(sql);
  std::vector<Oid> types;
  std::vector<const char*> values;
  std::vector<int> lengths, formats;
  types.reserve(params.size());
  values.reserve(params.size());
  lengths.reserve(params.size());
  formats.reserve(params.size());
  for (const Param& p : params) {
    types.push_back(p.oid());
    values.push_back(p.is_null() ? nullptr : p.value()->data());
    lengths.push_back(p.is_null() ? 0 : static_cast<int>(p.value()->size()));
    formats.push_back(p.binary() ? 1 : 0);
  }
  PGresult* raw = PQexecParams(conn_, text.c_str(), static_cast<int>(params.size()), types.data(), values.data(),
                               lengths.data(), formats.data(), /*resultFormat=*/0);
  if (raw == nullptr) return ErrorFromConnection("query \"" + Abbrev(sql) + "\" failed", "XX000");
  Result result(raw);
  switch (PQresultStatus(raw)) {
    case PGRES_COMMAND_OK:
    case PGRES_TUPLES_OK:
    case PGRES_EMPTY_QUERY:
      return result;
    case PGRES_COPY_IN:
    case PGRES_COPY_OUT:
    case PGRES_COPY_BOTH:
      return Error(Errc::kInvalidArgument, "query \"" + Abbrev(sql) + "\": COPY is not supported");
    default:
      return ErrorFromResult(raw, sql);
  }
}

Status Connection::ExecScript(std::string_view trusted_sql) {
  if (!conn_ || PQstatus(conn_) != CONNECTION_OK) {
    return MakeDbError(kConnectionFailure, "script not sent: the database connection is closed");
  }
  const std::string text(trusted_sql);
  PGresult* raw = PQexec(conn_, text.c_str());
  if (raw == nullptr) return ErrorFromConnection("script \"" + Abbrev(trusted_sql) + "\" failed", "XX000");
  Result result(raw);
  const ExecStatusType st = PQresultStatus(raw);
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK || st == PGRES_EMPTY_QUERY) return OkStatus();
  return ErrorFromResult(raw, trusted_sql);
}

Expected<std::string> Connection::QuoteIdentifier(std::string_view identifier) const {
  if (!conn_) return Error(Errc::kInternal, "QuoteIdentifier on a closed connection");
  if (identifier.empty() || identifier.find('\0') != std::string_view::npos) {
    return Error(Errc::kInvalidArgument, "invalid SQL identifier (empty or holds NUL)");
  }
  char* q = PQescapeIdentifier(conn_, identifier.data(), identifier.size());
  if (q == nullptr) {
    return Error(Errc::kInvalidArgument, "invalid SQL identifier: " + OneLine(PQerrorMessage(conn_)));
  }
  std::string out(q);
  PQfreemem(q);
  return out;
}

bool Connection::IsOpen() const { return conn_ != nullptr && PQstatus(conn_) == CONNECTION_OK; }

bool Connection::CheckAlive() {
  if (!IsOpen()) return false;
  const int fd = PQsocket(conn_);
  if (fd < 0) return false;
  // An idle connection has nothing to read unless the server sent a notice or said goodbye
  // (an error then end-of-file); a few rounds reach the end-of-file that marks it dead.
  for (int i = 0; i < 4; ++i) {
    pollfd p{fd, POLLIN, 0};
    const int r = ::poll(&p, 1, 0);
    if (r <= 0) break;
    if (PQconsumeInput(conn_) == 0) return false;
    while (PGnotify* n = PQnotifies(conn_)) PQfreemem(n);
    if (PQstatus(conn_) != CONNECTION_OK) return false;
  }
  return PQstatus(conn_) == CONNECTION_OK;
}

bool Connection::InTransaction() const {
  if (!conn_) return false;
  const PGTransactionStatusType t = PQtransactionStatus(conn_);
  return t == PQTRANS_INTRANS || t == PQTRANS_INERROR;
}

// ---- conninfo ----

Expected<std::string> ConninfoWithDatabase(std::string_view conninfo, std::string_view dbname) {
  UPK_TRY_ASSIGN(ParsedConninfo parsed, ParseConninfo(conninfo));
  auto quote = [](std::string_view v) {
    std::string out = "'";
    for (char c : v) {
      if (c == '\'' || c == '\\') out += '\\';
      out += c;
    }
    return out + "'";
  };
  std::string out;
  for (const auto& [k, v] : parsed.options) {
    if (k == "dbname") continue;
    out += k + "=" + quote(v) + " ";
  }
  out += "dbname=" + quote(dbname);
  return out;
}

}  // namespace upkeep::db
