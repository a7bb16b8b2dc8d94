// The agent's crash-safe local store: a directory (e.g. /var/lib/upkeep-agent/state) holding
// small named JSON documents (replaced atomically), append-only record logs ("journal",
// "outbox"), a format version with forward-only migrations, and an exclusive lock. Every byte
// goes through an Fs (fs.hpp), so tests run it on FaultFs (crash points, power loss).
// Layout, framing and guarantees: docs/agent/store.md.
//
// Durability: Put, Remove, Append and Compact are durable when they return OK; a crash or power
// loss at any point leaves every acknowledged document/record intact and nothing half-written
// visible (a torn log tail is cut off on the next Open and reported in OpenReport).
// Errors: names are [a-z0-9_-]{1,64} (kInvalidArgument); a document over 4 MiB or a record over
// 1 MiB is kLimit, as is a log over 64 MiB (compact it); a document that does not parse or a log
// corrupt in the middle makes Open fail with kParse naming the file; a second read-write opener
// gets kPolicy "state directory DIR is in use by process PID"; a store newer than the code gets
// kPolicy naming both versions. After a failed Append the log is rolled back to its last good
// size; if even that fails, the log refuses further appends (kIo) until the store is reopened.
// Threads: a Store is used from one thread at a time (the agent serialises access). The Fs must
// outlive the Store. A read-only store (OpenReadOnly) takes no lock, runs no migrations, changes
// nothing, and ignores a torn tail (a writer may be appending); its writes fail with kPolicy.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/agent/fs.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::agent {

inline constexpr std::uint64_t kMaxDocumentBytes = 4u << 20;
inline constexpr std::uint64_t kMaxRecordBytes = 1u << 20;
inline constexpr std::uint64_t kMaxLogBytes = 64u << 20;

// A forward-only migration from version to_version - 1 to to_version. `apply` must be
// idempotent: Open re-runs it from the start if a crash interrupted it, and only then records
// to_version in the `format` document (atomically), so a half-done migration is simply redone.
// Whether `error` (possibly wrapped with context) is Open's "another process holds the lock":
// a try-again condition (the daemon or a CLI command is working), unlike the other kPolicy
// refusals. Errc has no code of its own for it: a new Errc would change exhaustive switches
// outside the agent (HTTP status mapping), so the store owns the test instead of its callers
// matching message text.
bool IsStoreLocked(const Error& error);

struct Migration {
  int to_version = 0;
  std::string description;
  std::function<Status(Fs& fs, const std::filesystem::path& dir)> apply;
};

// The built-in migrations, in order; migration 1 creates the initial layout (docs/, logs/).
const std::vector<Migration>& BuiltinMigrations();

struct StoreOptions {
  // Must be numbered 1..N in order; the code's format version is N. Tests may add their own.
  std::vector<Migration> migrations = BuiltinMigrations();
};

struct TornTail {
  std::string log;
  std::uint64_t offset = 0;         // where the valid part of the file ends
  std::uint64_t dropped_bytes = 0;  // what was cut off (read-only: ignored)
};

// What Open found and did, so the agent can journal it.
struct OpenReport {
  int from_version = 0;  // 0: a fresh directory
  int to_version = 0;
  std::vector<std::string> migrations_applied;  // descriptions
  std::vector<TornTail> torn_tails;
  int temp_files_removed = 0;  // left behind by writes a crash interrupted
};

struct LogRecord {
  std::uint64_t seq = 0;
  Json value;
};

// --- The log file format, exposed for the fuzz target and tests. ---
struct ParsedRecord {
  std::uint64_t seq = 0;
  std::uint64_t offset = 0;
  std::string payload;  // compact JSON text of an object
};
struct ParsedLog {
  std::uint64_t base_seq = 1;  // sequence number of the first record (or the next one if empty)
  std::vector<ParsedRecord> records;
  std::uint64_t valid_bytes = 0;  // header + all valid records
  std::uint64_t torn_bytes = 0;   // a torn/corrupt tail after valid_bytes (nothing valid follows it)
};
// Parses a whole log file. A bad record followed by no valid record is a torn tail (reported in
// torn_bytes); a bad record followed by a valid one, a bad header, a sequence gap or a payload
// that is not a JSON object is kParse naming `name` and the offset.
Expected<ParsedLog> ParseLog(std::string_view bytes, const std::string& name);
std::string EncodeLogHeader(std::uint64_t base_seq);
std::string EncodeLogRecord(std::uint64_t seq, std::string_view payload);
std::uint32_t Crc32c(std::string_view data, std::uint32_t crc = 0);

class Store {
 public:
  static Expected<std::unique_ptr<Store>> Open(Fs& fs, const std::filesystem::path& dir, StoreOptions options = {});
  static Expected<std::unique_ptr<Store>> OpenReadOnly(Fs& fs, const std::filesystem::path& dir,
                                                       StoreOptions options = {});
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const OpenReport& report() const { return report_; }
  int format_version() const { return version_; }
  const std::filesystem::path& dir() const { return dir_; }

  // Documents (DIR/docs/NAME.json; the store's own version lives apart, in DIR/format.json).
  Status Put(std::string_view name, const Json& value);
  std::optional<Json> Get(std::string_view name) const;
  Status Remove(std::string_view name);  // absent is ok
  std::vector<std::string> ListDocuments() const;

  // Logs. Append returns the record's sequence number (1, 2, ... per log, never reused).
  Expected<std::uint64_t> Append(std::string_view log, const Json& record);
  // Up to max_records records with seq >= from_seq, in order. A log never appended is empty.
  Expected<std::vector<LogRecord>> Read(std::string_view log, std::uint64_t from_seq, std::size_t max_records) const;
  std::uint64_t NextSeq(std::string_view log) const;   // the seq the next Append gets
  std::uint64_t FirstSeq(std::string_view log) const;  // the oldest kept record (== NextSeq if empty)
  // Drops records with seq < keep_from_seq (atomic rewrite). keep_from_seq > NextSeq is kInvalidArgument.
  Status Compact(std::string_view log, std::uint64_t keep_from_seq);
  std::vector<std::string> ListLogs() const;  // logs that have a file

 private:
  struct LogState;
  Store(Fs& fs, std::filesystem::path dir, bool read_only);
  Status Load(const StoreOptions& options);
  Status CheckWritable() const;
  Expected<LogState*> WritableLog(std::string_view log);

  Fs& fs_;
  std::filesystem::path dir_;
  bool read_only_;
  int lock_fd_ = -1;
  int version_ = 0;
  OpenReport report_;
  std::map<std::string, Json, std::less<>> docs_;
  std::map<std::string, std::unique_ptr<LogState>, std::less<>> logs_;
};

}  // namespace upkeep::agent
