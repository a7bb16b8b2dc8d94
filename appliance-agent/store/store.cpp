// The agent's crash-safe store (store.hpp, docs/agent/store.md).
#include "upkeep/agent/store.hpp"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <utility>

namespace upkeep::agent {
namespace fs = std::filesystem;

namespace {

constexpr std::string_view kLogMagic = "UPKLOG01";
constexpr std::string_view kRecordMagic = "UPKR";
constexpr std::size_t kLogHeaderSize = 20;     // magic(8) base_seq(8) crc32c(4)
constexpr std::size_t kRecordHeaderSize = 20;  // magic(4) length(4) seq(8) crc32c(4)
constexpr std::uint64_t kMaxFormatBytes = 4096;

constexpr std::array<std::uint32_t, 256> MakeCrcTable() {
  std::array<std::uint32_t, 256> table{};
  for (std::uint32_t i = 0; i < 256; ++i) {
    std::uint32_t c = i;
    for (int k = 0; k < 8; ++k) c = (c & 1) ? (c >> 1) ^ 0x82F63B78u : c >> 1;  // Castagnoli, reflected
    table[i] = c;
  }
  return table;
}
constexpr std::array<std::uint32_t, 256> kCrcTable = MakeCrcTable();

void PutLe(std::string& out, std::uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
}
std::uint64_t GetLe(std::string_view in, std::size_t off, int bytes) {
  std::uint64_t v = 0;
  for (int i = 0; i < bytes; ++i) v |= std::uint64_t{static_cast<unsigned char>(in[off + static_cast<std::size_t>(i)])} << (8 * i);
  return v;
}

bool ValidName(std::string_view name) {
  if (name.empty() || name.size() > 64) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
  });
}

Status CheckName(std::string_view what, std::string_view name) {
  if (ValidName(name)) return OkStatus();
  return Error(Errc::kInvalidArgument,
               std::string(what) + " name '" + std::string(name.substr(0, 80)) + "': must match [a-z0-9_-]{1,64}");
}

bool IsTempName(const std::string& name) { return !name.empty() && name[0] == '.' && name.find(".tmp-") != std::string::npos; }

// Compact JSON that ParseJson will accept back (depth, UTF-8), or an error naming `what`.
Expected<std::string> Serialize(const Json& value, const std::string& what) {
  std::string text;
  try {
    text = value.dump();
  } catch (const std::exception& e) {
    return Error(Errc::kInvalidArgument, what + ": cannot serialise: " + e.what());
  }
  auto back = ParseJson(text);
  if (!back) return back.error().Wrap(what);
  return text;
}

// A complete, checksummed record at `off`, or nullopt (seq and JSON are checked by the caller).
std::optional<ParsedRecord> TryRecord(std::string_view bytes, std::size_t off) {
  if (bytes.size() - off < kRecordHeaderSize) return std::nullopt;
  if (bytes.substr(off, 4) != kRecordMagic) return std::nullopt;
  std::uint64_t len = GetLe(bytes, off + 4, 4);
  if (len > kMaxRecordBytes || bytes.size() - off - kRecordHeaderSize < len) return std::nullopt;
  std::uint32_t crc = Crc32c(bytes.substr(off + 4, 12));
  crc = Crc32c(bytes.substr(off + kRecordHeaderSize, len), crc);
  if (crc != GetLe(bytes, off + 16, 4)) return std::nullopt;
  ParsedRecord r;
  r.seq = GetLe(bytes, off + 8, 8);
  r.offset = off;
  r.payload = std::string(bytes.substr(off + kRecordHeaderSize, len));
  return r;
}

}  // namespace

std::uint32_t Crc32c(std::string_view data, std::uint32_t crc) {
  crc = ~crc;
  for (char ch : data) crc = kCrcTable[(crc ^ static_cast<unsigned char>(ch)) & 0xff] ^ (crc >> 8);
  return ~crc;
}

std::string EncodeLogHeader(std::uint64_t base_seq) {
  std::string out(kLogMagic);
  PutLe(out, base_seq, 8);
  PutLe(out, Crc32c(out), 4);
  return out;
}

std::string EncodeLogRecord(std::uint64_t seq, std::string_view payload) {
  std::string out(kRecordMagic);
  out.reserve(kRecordHeaderSize + payload.size());
  PutLe(out, payload.size(), 4);
  PutLe(out, seq, 8);
  std::uint32_t crc = Crc32c(std::string_view(out).substr(4, 12));
  PutLe(out, Crc32c(payload, crc), 4);
  out.append(payload);
  return out;
}

Expected<ParsedLog> ParseLog(std::string_view bytes, const std::string& name) {
  const std::string where = "log " + name;
  if (bytes.size() < kLogHeaderSize || bytes.substr(0, kLogMagic.size()) != kLogMagic ||
      Crc32c(bytes.substr(0, 16)) != GetLe(bytes, 16, 4))
    return Error(Errc::kParse, where + ": bad file header");
  ParsedLog log;
  log.base_seq = GetLe(bytes, 8, 8);
  if (log.base_seq == 0 || log.base_seq > (std::uint64_t{1} << 62))
    return Error(Errc::kParse, where + ": bad base sequence number");
  std::size_t off = kLogHeaderSize;
  std::uint64_t expect = log.base_seq;
  while (off < bytes.size()) {
    auto rec = TryRecord(bytes, off);
    if (!rec) {
      // Torn tail only if nothing valid follows; otherwise the middle is corrupt: refuse. The
      // checksum work of the scan is bounded, so hostile bytes cannot make it quadratic; past
      // the bound it cannot rule out a valid record further on, and refuses rather than guess.
      std::uint64_t budget = kMaxLogBytes;
      for (std::size_t y = off + 1; y + kRecordHeaderSize <= bytes.size(); ++y) {
        if (bytes[y] != kRecordMagic[0] || bytes.substr(y, 4) != kRecordMagic) continue;
        std::uint64_t len = GetLe(bytes, y + 4, 4);
        if (len > kMaxRecordBytes || bytes.size() - y - kRecordHeaderSize < len) continue;  // cannot be valid
        if (len > budget)
          return Error(Errc::kParse, where + ": corrupt record at offset " + std::to_string(off) +
                                         " and too many candidate records after it to tell a torn tail");
        budget -= len;
        if (TryRecord(bytes, y))
          return Error(Errc::kParse, where + ": corrupt record at offset " + std::to_string(off) +
                                         " followed by a valid record at offset " + std::to_string(y));
      }
      log.torn_bytes = bytes.size() - off;
      break;
    }
    if (rec->seq != expect)
      return Error(Errc::kParse, where + ": record at offset " + std::to_string(off) + " has sequence " +
                                     std::to_string(rec->seq) + ", expected " + std::to_string(expect));
    auto json = ParseJson(rec->payload);
    if (!json || !json->is_object())
      return Error(Errc::kParse, where + ": record at offset " + std::to_string(off) + " is not a JSON object");
    off += kRecordHeaderSize + rec->payload.size();
    log.records.push_back(std::move(*rec));
    ++expect;
  }
  log.valid_bytes = off;
  return log;
}

const std::vector<Migration>& BuiltinMigrations() {
  static const std::vector<Migration> migrations = [] {
    std::vector<Migration> m;
    Migration initial;
    initial.to_version = 1;
    initial.description = "initial layout (docs/, logs/)";
    // Idempotent: creating existing directories and syncing again are no-ops.
    initial.apply = [](Fs& fs, const fs::path& dir) -> Status {
      UPK_TRY(fs.CreateDirectories(dir / "docs", 0700));
      UPK_TRY(fs.CreateDirectories(dir / "logs", 0700));
      return fs.SyncDir(dir);
    };
    m.push_back(std::move(initial));
    return m;
  }();
  return migrations;
}

struct Store::LogState {
  fs::path path;
  bool exists = false;  // the file has been created (header written)
  bool poisoned = false;
  std::uint64_t base_seq = 1;
  std::uint64_t size = 0;
  std::vector<ParsedRecord> records;
  std::unique_ptr<AppendFile> file;
  std::uint64_t next() const { return base_seq + records.size(); }
};

Store::Store(Fs& fs, fs::path dir, bool read_only) : fs_(fs), dir_(std::move(dir)), read_only_(read_only) {}

Store::~Store() {
  logs_.clear();  // close append handles before the lock goes
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

namespace {

Status ValidateMigrations(const std::vector<Migration>& migrations) {
  for (std::size_t i = 0; i < migrations.size(); ++i) {
    if (migrations[i].to_version != static_cast<int>(i + 1) || !migrations[i].apply)
      return Error(Errc::kInternal, "store migrations must be numbered 1..N in order (entry " + std::to_string(i) + ")");
  }
  return OkStatus();
}

// The one phrase IsStoreLocked recognises; nothing else in the store says it.
constexpr const char* kLockedText = " is in use by process ";

// flock on DIR/lock, not through Fs: the lock is process coordination, not persisted state.
Expected<int> TakeLock(const fs::path& dir) {
  fs::path path = dir / "lock";
  int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Error(Errc::kIo, path.string() + ": open: " + std::strerror(errno));
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    int e = errno;
    std::string pid;
    char buf[32];
    ssize_t n = ::pread(fd, buf, sizeof buf - 1, 0);
    if (n > 0) {
      for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; ++i) pid.push_back(buf[i]);
    }
    ::close(fd);
    if (e == EWOULDBLOCK)
      return Error(Errc::kPolicy, "state directory " + dir.string() + kLockedText +
                                      (pid.empty() ? std::string("(unknown)") : pid));
    return Error(Errc::kIo, path.string() + ": flock: " + std::strerror(e));
  }
  std::string pid = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, pid.data(), pid.size(), 0) != static_cast<ssize_t>(pid.size())) {
    int e = errno;
    ::close(fd);
    return Error(Errc::kIo, path.string() + ": write pid: " + std::strerror(e));
  }
  return fd;
}

}  // namespace

bool IsStoreLocked(const Error& error) {
  return error.code() == Errc::kPolicy && error.message().find(kLockedText) != std::string::npos &&
         error.message().find("state directory ") != std::string::npos;
}

Expected<std::unique_ptr<Store>> Store::Open(Fs& fs, const fs::path& dir, StoreOptions options) {
  UPK_TRY(ValidateMigrations(options.migrations));
  UPK_TRY(fs.CreateDirectories(dir, 0700));
  if (dir.has_parent_path()) UPK_TRY(fs.SyncDir(dir.parent_path()));
  std::unique_ptr<Store> store(new Store(fs, dir, false));
  UPK_TRY_ASSIGN(store->lock_fd_, TakeLock(dir));
  UPK_TRY(store->Load(options));
  return store;
}

Expected<std::unique_ptr<Store>> Store::OpenReadOnly(Fs& fs, const fs::path& dir, StoreOptions options) {
  UPK_TRY(ValidateMigrations(options.migrations));
  std::unique_ptr<Store> store(new Store(fs, dir, true));
  UPK_TRY(store->Load(options));
  return store;
}

Status Store::Load(const StoreOptions& options) {
  const int current = static_cast<int>(options.migrations.size());
  const fs::path format_path = dir_ / "format.json";
  UPK_TRY_ASSIGN(bool have_format, fs_.Exists(format_path));
  int version = 0;
  if (have_format) {
    UPK_TRY_ASSIGN(std::string text, fs_.ReadFile(format_path, kMaxFormatBytes));
    auto json = ParseJson(text);
    if (!json) return json.error().Wrap(format_path.string());
    auto v = GetInt(*json, "version");
    if (!v) return v.error().Wrap(format_path.string());
    if (*v < 1 || *v > 1000000) return Error(Errc::kParse, format_path.string() + ": field 'version': out of range");
    version = static_cast<int>(*v);
  }
  report_.from_version = version;
  if (version > current)
    return Error(Errc::kPolicy, dir_.string() + ": state format version " + std::to_string(version) +
                                    " is newer than this agent supports (" + std::to_string(current) + ")");
  if (read_only_) {
    if (version == 0) return Error(Errc::kNotFound, dir_.string() + ": no agent state here yet");
    if (version < current)
      return Error(Errc::kPolicy, dir_.string() + ": state format version " + std::to_string(version) +
                                      " needs migrating to " + std::to_string(current) + "; open it read-write first");
  }
  // Each migration is idempotent and the version is recorded only after it completed, so a
  // crash anywhere re-runs the interrupted migration from its start.
  for (int v = version; v < current; ++v) {
    const Migration& m = options.migrations[static_cast<std::size_t>(v)];
    Status st = m.apply(fs_, dir_);
    if (!st) return st.error().Wrap("migration " + std::to_string(m.to_version) + " (" + m.description + ")");
    UPK_TRY(fs_.WriteFileAtomic(format_path, "{\"version\":" + std::to_string(m.to_version) + "}\n", 0600));
    version_ = m.to_version;
    report_.migrations_applied.push_back(m.description);
  }
  version_ = std::max(version_, version);
  report_.to_version = version_;

  const fs::path docs = dir_ / "docs";
  const fs::path logs = dir_ / "logs";
  if (!read_only_) {
    for (const fs::path& d : {dir_, docs, logs}) {
      UPK_TRY_ASSIGN(std::vector<std::string> names, fs_.ListDir(d));
      for (const auto& n : names) {
        if (!IsTempName(n)) continue;
        UPK_TRY(fs_.Remove(d / n));
        ++report_.temp_files_removed;
      }
    }
  }

  UPK_TRY_ASSIGN(std::vector<std::string> doc_names, fs_.ListDir(docs));
  for (const auto& file : doc_names) {
    if (file.size() <= 5 || file.substr(file.size() - 5) != ".json") continue;
    std::string name = file.substr(0, file.size() - 5);
    if (!ValidName(name)) continue;
    fs::path p = docs / file;
    UPK_TRY_ASSIGN(std::string text, fs_.ReadFile(p, kMaxDocumentBytes));
    auto json = ParseJson(text);
    if (!json) return json.error().Wrap("document '" + name + "' (" + p.string() + ")");
    docs_[name] = std::move(*json);
  }

  UPK_TRY_ASSIGN(std::vector<std::string> log_names, fs_.ListDir(logs));
  for (const auto& file : log_names) {
    if (file.size() <= 4 || file.substr(file.size() - 4) != ".log") continue;
    std::string name = file.substr(0, file.size() - 4);
    if (!ValidName(name)) continue;
    fs::path p = logs / file;
    UPK_TRY_ASSIGN(std::string bytes, fs_.ReadFile(p, kMaxLogBytes + kMaxRecordBytes + kLogHeaderSize));
    auto parsed = ParseLog(bytes, name);
    if (!parsed) return parsed.error().Wrap(p.string());
    if (parsed->torn_bytes > 0) {
      TornTail t;
      t.log = name;
      t.offset = parsed->valid_bytes;
      t.dropped_bytes = parsed->torn_bytes;
      report_.torn_tails.push_back(t);
      if (!read_only_) {
        UPK_TRY(fs_.Truncate(p, parsed->valid_bytes));
        UPK_TRY(fs_.SyncFile(p));
      }
    }
    auto st = std::make_unique<LogState>();
    st->path = p;
    st->exists = true;
    st->base_seq = parsed->base_seq;
    st->size = parsed->valid_bytes;
    st->records = std::move(parsed->records);
    logs_[name] = std::move(st);
  }
  return OkStatus();
}

Status Store::CheckWritable() const {
  if (read_only_) return Error(Errc::kPolicy, dir_.string() + ": store opened read-only");
  return OkStatus();
}

Status Store::Put(std::string_view name, const Json& value) {
  UPK_TRY(CheckWritable());
  UPK_TRY(CheckName("document", name));
  const std::string what = "document '" + std::string(name) + "'";
  UPK_TRY_ASSIGN(std::string text, Serialize(value, what));
  if (text.size() > kMaxDocumentBytes)
    return Error(Errc::kLimit, what + ": " + std::to_string(text.size()) + " bytes is over the limit of " +
                                   std::to_string(kMaxDocumentBytes));
  UPK_TRY(fs_.WriteFileAtomic(dir_ / "docs" / (std::string(name) + ".json"), text, 0600));
  docs_[std::string(name)] = value;
  return OkStatus();
}

std::optional<Json> Store::Get(std::string_view name) const {
  auto it = docs_.find(name);
  if (it == docs_.end()) return std::nullopt;
  return it->second;
}

Status Store::Remove(std::string_view name) {
  UPK_TRY(CheckWritable());
  UPK_TRY(CheckName("document", name));
  UPK_TRY(fs_.Remove(dir_ / "docs" / (std::string(name) + ".json")));
  UPK_TRY(fs_.SyncDir(dir_ / "docs"));
  auto it = docs_.find(name);
  if (it != docs_.end()) docs_.erase(it);
  return OkStatus();
}

std::vector<std::string> Store::ListDocuments() const {
  std::vector<std::string> out;
  for (const auto& [name, value] : docs_) out.push_back(name);
  return out;
}

std::vector<std::string> Store::ListLogs() const {
  std::vector<std::string> out;
  for (const auto& [name, st] : logs_)
    if (st->exists) out.push_back(name);
  return out;
}

Expected<Store::LogState*> Store::WritableLog(std::string_view log) {
  UPK_TRY(CheckWritable());
  UPK_TRY(CheckName("log", log));
  auto it = logs_.find(log);
  if (it == logs_.end()) {
    auto st = std::make_unique<LogState>();
    st->path = dir_ / "logs" / (std::string(log) + ".log");
    it = logs_.emplace(std::string(log), std::move(st)).first;
  }
  LogState* st = it->second.get();
  if (st->poisoned)
    return Error(Errc::kIo, "log " + std::string(log) + ": an earlier write failed and could not be rolled back; reopen the store");
  return st;
}

Expected<std::uint64_t> Store::Append(std::string_view log, const Json& record) {
  UPK_TRY_ASSIGN(LogState * st, WritableLog(log));
  const std::string what = "log " + std::string(log);
  if (!record.is_object()) return Error(Errc::kInvalidArgument, what + ": a record must be a JSON object");
  UPK_TRY_ASSIGN(std::string payload, Serialize(record, what));
  if (payload.size() > kMaxRecordBytes)
    return Error(Errc::kLimit, what + ": record of " + std::to_string(payload.size()) + " bytes is over the limit of " +
                                   std::to_string(kMaxRecordBytes));
  std::string frame = EncodeLogRecord(st->next(), payload);
  if (st->size + frame.size() > kMaxLogBytes)
    return Error(Errc::kLimit, what + ": would grow over " + std::to_string(kMaxLogBytes) + " bytes; compact it");
  if (!st->exists) {
    // The header is written atomically, so a log file never exists without a whole header.
    UPK_TRY(fs_.WriteFileAtomic(st->path, EncodeLogHeader(st->base_seq), 0600));
    st->exists = true;
    st->size = kLogHeaderSize;
  }
  Status result = OkStatus();
  if (!st->file) {
    auto file = fs_.OpenForAppend(st->path);
    if (!file) return file.error();
    st->file = std::move(*file);
    if (st->file->size() != st->size) {
      st->file.reset();
      st->poisoned = true;
      return Error(Errc::kIo, what + ": file size changed behind the store's back; reopen the store");
    }
  }
  result = st->file->Append(frame);
  if (result) result = st->file->Sync();
  if (!result) {
    // Roll back so the next append does not follow a partial record (which would later read
    // as corruption in the middle); if that fails too, refuse appends until reopened.
    st->file.reset();
    Status undo = fs_.Truncate(st->path, st->size);
    if (undo) undo = fs_.SyncFile(st->path);
    if (!undo) st->poisoned = true;
    return result.error();
  }
  ParsedRecord rec;
  rec.seq = st->next();
  rec.offset = st->size;
  rec.payload = std::move(payload);
  st->records.push_back(std::move(rec));
  st->size += frame.size();
  return st->records.back().seq;
}

Expected<std::vector<LogRecord>> Store::Read(std::string_view log, std::uint64_t from_seq, std::size_t max_records) const {
  UPK_TRY(CheckName("log", log));
  std::vector<LogRecord> out;
  auto it = logs_.find(log);
  if (it == logs_.end()) return out;
  const LogState& st = *it->second;
  std::uint64_t start = from_seq <= st.base_seq ? 0 : from_seq - st.base_seq;
  for (std::uint64_t i = start; i < st.records.size() && out.size() < max_records; ++i) {
    const ParsedRecord& r = st.records[i];
    auto json = ParseJson(r.payload);
    if (!json) return json.error().Wrap("log " + std::string(log) + " record " + std::to_string(r.seq));
    LogRecord lr;
    lr.seq = r.seq;
    lr.value = std::move(*json);
    out.push_back(std::move(lr));
  }
  return out;
}

std::uint64_t Store::NextSeq(std::string_view log) const {
  auto it = logs_.find(log);
  return it == logs_.end() ? 1 : it->second->next();
}

std::uint64_t Store::FirstSeq(std::string_view log) const {
  auto it = logs_.find(log);
  return it == logs_.end() ? 1 : it->second->base_seq;
}

Status Store::Compact(std::string_view log, std::uint64_t keep_from_seq) {
  UPK_TRY_ASSIGN(LogState * st, WritableLog(log));
  if (keep_from_seq > st->next())
    return Error(Errc::kInvalidArgument, "log " + std::string(log) + ": cannot compact from " +
                                             std::to_string(keep_from_seq) + ", past the next sequence " +
                                             std::to_string(st->next()));
  if (keep_from_seq <= st->base_seq) return OkStatus();
  std::size_t drop = static_cast<std::size_t>(keep_from_seq - st->base_seq);
  std::string content = EncodeLogHeader(keep_from_seq);
  for (std::size_t i = drop; i < st->records.size(); ++i)
    content += EncodeLogRecord(st->records[i].seq, st->records[i].payload);
  st->file.reset();  // the rename replaces the inode the handle points at
  Status written = fs_.WriteFileAtomic(st->path, content, 0600);
  if (!written) {
    // Unknown whether the old or the new file is in place: reopening re-reads it.
    st->poisoned = true;
    return written;
  }
  st->records.erase(st->records.begin(), st->records.begin() + static_cast<std::ptrdiff_t>(drop));
  std::uint64_t off = kLogHeaderSize;
  for (auto& r : st->records) {
    r.offset = off;
    off += kRecordHeaderSize + r.payload.size();
  }
  st->base_seq = keep_from_seq;
  st->exists = true;
  st->size = content.size();
  return OkStatus();
}

}  // namespace upkeep::agent
