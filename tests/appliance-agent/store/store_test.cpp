// Store: documents, logs (framing, torn tails, corruption, compaction), migrations, lock,
// read-only opening, and crash-point enumeration over a realistic sequence on FaultFs.
#include <sys/wait.h>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <unistd.h>

#include <gtest/gtest.h>

#include "test_util.hpp"
#include "upkeep/agent/fault_fs.hpp"
#include "upkeep/agent/store.hpp"

namespace upkeep::agent {
namespace {
namespace fs = std::filesystem;
using testing::Slurp;
using testing::Spit;
using testing::TempDir;

std::unique_ptr<Store> MustOpen(Fs& fs, const fs::path& dir, StoreOptions options = {}) {
  auto s = Store::Open(fs, dir, std::move(options));
  EXPECT_TRUE(s) << s.error().message();
  return s ? std::move(*s) : nullptr;
}

TEST(StoreTest, FreshOpenAppliesMigrationOneAndDocumentsPersist) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  {
    auto s = MustOpen(RealFs::Instance(), dir);
    ASSERT_TRUE(s);
    EXPECT_EQ(s->report().from_version, 0);
    EXPECT_EQ(s->report().to_version, 1);
    EXPECT_EQ(s->report().migrations_applied.size(), 1u);
    EXPECT_EQ(s->format_version(), 1);
    ASSERT_TRUE(s->Put("settings", Json{{"poll", 60}}));
    ASSERT_TRUE(s->Put("plan", Json{{"steps", Json::array({1, 2})}}));
    ASSERT_TRUE(s->Put("settings", Json{{"poll", 30}}));
    ASSERT_TRUE(s->Remove("plan"));
    ASSERT_TRUE(s->Remove("never-there"));
    EXPECT_EQ(*s->Get("settings"), (Json{{"poll", 30}}));
  }
  EXPECT_TRUE(fs::is_directory(dir / "docs"));
  EXPECT_TRUE(fs::is_directory(dir / "logs"));
  EXPECT_EQ(Slurp(dir / "format.json"), "{\"version\":1}\n");
  auto s = MustOpen(RealFs::Instance(), dir);
  ASSERT_TRUE(s);
  EXPECT_EQ(s->report().from_version, 1);
  EXPECT_TRUE(s->report().migrations_applied.empty());
  EXPECT_EQ(*s->Get("settings"), (Json{{"poll", 30}}));
  EXPECT_FALSE(s->Get("plan"));
  EXPECT_EQ(s->ListDocuments(), std::vector<std::string>{"settings"});
}

TEST(StoreTest, DocumentErrors) {
  TempDir tmp;
  auto s = MustOpen(RealFs::Instance(), tmp.path() / "state");
  ASSERT_TRUE(s);
  for (const std::string& bad : std::vector<std::string>{"", "Upper", "a/b", "..", std::string(65, 'a'), "sp ace"}) {
    auto st = s->Put(bad, Json::object());
    ASSERT_FALSE(st) << bad;
    EXPECT_EQ(st.error().code(), Errc::kInvalidArgument);
  }
  EXPECT_TRUE(s->Put(std::string(64, 'a'), Json::object()));
  auto utf = s->Put("bad-utf8", Json{{"k", std::string("\xff\xfe")}});
  ASSERT_FALSE(utf);
  EXPECT_EQ(utf.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(utf.error().message().find("bad-utf8"), std::string::npos);
  auto big = s->Put("big", Json{{"k", std::string(kMaxDocumentBytes, 'x')}});
  ASSERT_FALSE(big);
  EXPECT_EQ(big.error().code(), Errc::kLimit);
  EXPECT_FALSE(s->Get("big"));
  EXPECT_FALSE(fs::exists(tmp.path() / "state" / "docs" / "big.json"));
}

TEST(StoreTest, CorruptDocumentFailsOpenNamingIt) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  {
    auto s = MustOpen(RealFs::Instance(), dir);
    ASSERT_TRUE(s->Put("settings", Json{{"a", 1}}));
  }
  Spit(dir / "docs" / "settings.json", "{\"a\": ");
  auto s = Store::Open(RealFs::Instance(), dir);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), Errc::kParse);
  EXPECT_NE(s.error().message().find("settings"), std::string::npos);
  EXPECT_EQ(Slurp(dir / "docs" / "settings.json"), "{\"a\": ");  // never silently reset
}

TEST(StoreTest, AppendReadPageCompact) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  {
    auto s = MustOpen(RealFs::Instance(), dir);
    EXPECT_EQ(s->NextSeq("journal"), 1u);
    for (int i = 1; i <= 10; ++i) {
      auto seq = s->Append("journal", Json{{"i", i}});
      ASSERT_TRUE(seq);
      EXPECT_EQ(*seq, static_cast<std::uint64_t>(i));
    }
    auto page = s->Read("journal", 4, 3);
    ASSERT_TRUE(page);
    ASSERT_EQ(page->size(), 3u);
    EXPECT_EQ((*page)[0].seq, 4u);
    EXPECT_EQ((*page)[2].value, (Json{{"i", 6}}));
    ASSERT_TRUE(s->Compact("journal", 8));
    EXPECT_EQ(s->FirstSeq("journal"), 8u);
    auto rest = s->Read("journal", 0, 100);
    ASSERT_EQ(rest->size(), 3u);
    EXPECT_EQ(rest->front().seq, 8u);
    EXPECT_EQ(*s->Append("journal", Json{{"i", 11}}), 11u);
    auto past = s->Compact("journal", 13);
    ASSERT_FALSE(past);
    EXPECT_EQ(past.error().code(), Errc::kInvalidArgument);
    ASSERT_TRUE(s->Compact("journal", 12));  // everything: the sequence must not restart
    EXPECT_TRUE(s->Read("journal", 0, 100)->empty());
    EXPECT_FALSE(s->Append("journal", Json::array()));
    EXPECT_FALSE(s->Append("Bad", Json::object()));
    EXPECT_TRUE(s->Read("never", 1, 10)->empty());
  }
  auto s = MustOpen(RealFs::Instance(), dir);
  EXPECT_EQ(s->NextSeq("journal"), 12u);
  EXPECT_EQ(*s->Append("journal", Json{{"i", 12}}), 12u);
  EXPECT_EQ(s->ListLogs(), std::vector<std::string>{"journal"});
}

TEST(StoreTest, RecordOverLimitRefused) {
  TempDir tmp;
  auto s = MustOpen(RealFs::Instance(), tmp.path() / "state");
  auto r = s->Append("outbox", Json{{"k", std::string(kMaxRecordBytes, 'x')}});
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kLimit);
  EXPECT_EQ(s->NextSeq("outbox"), 1u);
}

class TornTailTest : public ::testing::TestWithParam<int> {};

// Param: how many bytes to cut from the end (1 .. whole last record), or -1: garbage appended.
TEST_P(TornTailTest, TruncatedAndReported) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  fs::path log = dir / "logs" / "journal.log";
  std::uint64_t good_size = 0;
  {
    auto s = MustOpen(RealFs::Instance(), dir);
    ASSERT_TRUE(s->Append("journal", Json{{"n", 1}}));
    ASSERT_TRUE(s->Append("journal", Json{{"n", 2}}));
    good_size = fs::file_size(log);
    ASSERT_TRUE(s->Append("journal", Json{{"n", 3}}));
  }
  std::string bytes = Slurp(log);
  if (GetParam() < 0) {
    good_size = bytes.size();
    bytes += std::string("UPKR\x05\x00\x00\x00garbage-and-more", 23);
  } else {
    bytes.resize(bytes.size() - static_cast<std::size_t>(GetParam()));
  }
  Spit(log, bytes);
  {
    auto ro = Store::OpenReadOnly(RealFs::Instance(), dir);
    ASSERT_TRUE(ro) << ro.error().message();
    ASSERT_EQ((*ro)->report().torn_tails.size(), 1u);
    EXPECT_EQ(fs::file_size(log), bytes.size());  // read-only: nothing cut
  }
  auto s = MustOpen(RealFs::Instance(), dir);
  ASSERT_EQ(s->report().torn_tails.size(), 1u);
  EXPECT_EQ(s->report().torn_tails[0].log, "journal");
  EXPECT_EQ(s->report().torn_tails[0].offset, good_size);
  EXPECT_EQ(s->report().torn_tails[0].dropped_bytes, bytes.size() - good_size);
  EXPECT_EQ(fs::file_size(log), good_size);
  std::uint64_t next = GetParam() < 0 ? 4 : 3;
  EXPECT_EQ(s->NextSeq("journal"), next);
  EXPECT_EQ(*s->Append("journal", Json{{"n", 9}}), next);
  s.reset();
  auto again = MustOpen(RealFs::Instance(), dir);
  EXPECT_TRUE(again->report().torn_tails.empty());
  EXPECT_EQ(again->Read("journal", 1, 10)->size(), next);
}

INSTANTIATE_TEST_SUITE_P(Cuts, TornTailTest, ::testing::Values(-1, 1, 5, 19, 20, 21, 26));

TEST(StoreTest, MidLogCorruptionRefused) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  fs::path log = dir / "logs" / "outbox.log";
  {
    auto s = MustOpen(RealFs::Instance(), dir);
    for (int i = 0; i < 3; ++i) ASSERT_TRUE(s->Append("outbox", Json{{"event", i}}));
  }
  std::string good = Slurp(log);
  for (std::size_t pos : {std::size_t{20}, std::size_t{25}, std::size_t{45}}) {
    std::string bytes = good;
    bytes[pos] = static_cast<char>(bytes[pos] ^ 0x40);
    Spit(log, bytes);
    auto s = Store::Open(RealFs::Instance(), dir);
    ASSERT_FALSE(s) << pos;
    EXPECT_EQ(s.error().code(), Errc::kParse);
    EXPECT_NE(s.error().message().find("outbox"), std::string::npos);
    EXPECT_NE(s.error().message().find("offset"), std::string::npos);
    EXPECT_EQ(Slurp(log), bytes);  // nothing changed
    EXPECT_FALSE(Store::OpenReadOnly(RealFs::Instance(), dir));
  }
  std::string bad_header = good;
  bad_header[3] = 'x';
  Spit(log, bad_header);
  EXPECT_FALSE(Store::Open(RealFs::Instance(), dir));
}

TEST(StoreTest, SequenceGapRefused) {
  std::string bytes = EncodeLogHeader(5) + EncodeLogRecord(5, "{}") + EncodeLogRecord(7, "{}");
  auto r = ParseLog(bytes, "journal");
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().message().find("expected 6"), std::string::npos);
  auto notobj = ParseLog(EncodeLogHeader(1) + EncodeLogRecord(1, "[1]"), "journal");
  ASSERT_FALSE(notobj);
  auto ok = ParseLog(EncodeLogHeader(5) + EncodeLogRecord(5, "{}") + EncodeLogRecord(6, "{\"a\":1}"), "j");
  ASSERT_TRUE(ok);
  EXPECT_EQ(ok->records.size(), 2u);
  EXPECT_EQ(ok->torn_bytes, 0u);
  EXPECT_EQ(Crc32c("123456789"), 0xE3069283u);  // the CRC-32C check value
}

TEST(StoreTest, ReadOnlyRefusesWritesAndWorksBesideAWriter) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  auto missing = Store::OpenReadOnly(RealFs::Instance(), dir);
  ASSERT_FALSE(missing);
  EXPECT_EQ(missing.error().code(), Errc::kNotFound);
  auto writer = MustOpen(RealFs::Instance(), dir);
  ASSERT_TRUE(writer->Put("settings", Json{{"x", 1}}));
  ASSERT_TRUE(writer->Append("journal", Json{{"e", 1}}));
  auto ro = Store::OpenReadOnly(RealFs::Instance(), dir);
  ASSERT_TRUE(ro) << ro.error().message();
  EXPECT_EQ(*(*ro)->Get("settings"), (Json{{"x", 1}}));
  EXPECT_EQ((*ro)->Read("journal", 1, 10)->size(), 1u);
  auto st = (*ro)->Put("settings", Json::object());
  ASSERT_FALSE(st);
  EXPECT_EQ(st.error().code(), Errc::kPolicy);
  EXPECT_FALSE((*ro)->Append("journal", Json::object()));
  EXPECT_FALSE((*ro)->Compact("journal", 2));
  EXPECT_FALSE((*ro)->Remove("settings"));
}

TEST(StoreTest, SecondOpenerGetsPolicyErrorWithPid) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  auto first = MustOpen(RealFs::Instance(), dir);
  auto second = Store::Open(RealFs::Instance(), dir);
  ASSERT_FALSE(second);
  EXPECT_EQ(second.error().code(), Errc::kPolicy);
  EXPECT_EQ(second.error().message(),
            "state directory " + dir.string() + " is in use by process " + std::to_string(::getpid()));
  EXPECT_TRUE(IsStoreLocked(second.error()));
  EXPECT_TRUE(IsStoreLocked(second.error().Wrap("agent")));  // callers add context
  // Only Open's lock refusal counts: not another code, not another kPolicy refusal.
  EXPECT_FALSE(IsStoreLocked(Error(Errc::kIo, second.error().message())));
  EXPECT_FALSE(IsStoreLocked(Error(Errc::kPolicy, "store format 9 is newer than this agent (2)")));
  auto ro = Store::OpenReadOnly(RealFs::Instance(), dir);
  ASSERT_TRUE(ro) << ro.error().message();
  auto refused = (*ro)->Put("settings", Json::object());
  ASSERT_FALSE(refused);
  EXPECT_FALSE(IsStoreLocked(refused.error()));
  // From another process too.
  pid_t child = ::fork();
  if (child == 0) {
    auto s = Store::Open(RealFs::Instance(), dir);
    ::_exit(!s && IsStoreLocked(s.error()) ? 0 : 1);
  }
  int status = 0;
  ASSERT_EQ(::waitpid(child, &status, 0), child);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  first.reset();
  EXPECT_TRUE(Store::Open(RealFs::Instance(), dir));
}

TEST(StoreTest, NewerThanCodeRefusedNamingBothVersions) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  { MustOpen(RealFs::Instance(), dir); }
  Spit(dir / "format.json", "{\"version\":7}");
  auto s = Store::Open(RealFs::Instance(), dir);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), Errc::kPolicy);
  EXPECT_NE(s.error().message().find("version 7"), std::string::npos);
  EXPECT_NE(s.error().message().find("(1)"), std::string::npos);
  EXPECT_FALSE(Store::OpenReadOnly(RealFs::Instance(), dir));
  Spit(dir / "format.json", "{\"version\":\"x\"}");
  auto bad = Store::Open(RealFs::Instance(), dir);
  ASSERT_FALSE(bad);
  EXPECT_NE(bad.error().message().find("format.json"), std::string::npos);
}

TEST(StoreTest, BadMigrationListIsAnInternalError) {
  TempDir tmp;
  StoreOptions opts;
  opts.migrations[0].to_version = 2;
  auto s = Store::Open(RealFs::Instance(), tmp.path() / "state", opts);
  ASSERT_FALSE(s);
  EXPECT_EQ(s.error().code(), Errc::kInternal);
}

// A test migration 2: moves the "poll" field of settings into a nested object and starts a
// "notes" log. Idempotent: it checks what is already done.
Migration TestMigration2() {
  Migration m;
  m.to_version = 2;
  m.description = "nest poll settings";
  m.apply = [](Fs& fs, const fs::path& dir) -> Status {
    fs::path p = dir / "docs" / "settings.json";
    UPK_TRY_ASSIGN(bool exists, fs.Exists(p));
    if (!exists) return OkStatus();
    UPK_TRY_ASSIGN(std::string text, fs.ReadFile(p, kMaxDocumentBytes));
    UPK_TRY_ASSIGN(Json j, ParseJson(text));
    if (j.contains("poll")) {
      Json out = {{"timing", {{"poll", j["poll"]}}}};
      UPK_TRY(fs.WriteFileAtomic(p, out.dump(), 0600));
    }
    return OkStatus();
  };
  return m;
}

TEST(StoreTest, MigrationRerunAfterCrashAtEveryPoint) {
  StoreOptions v2;
  v2.migrations.push_back(TestMigration2());
  auto prepare = [](const fs::path& dir) {
    auto s = MustOpen(RealFs::Instance(), dir);
    ASSERT_TRUE(s->Put("settings", Json{{"poll", 60}}));
  };
  std::uint64_t count = 0;
  {
    TempDir tmp;
    prepare(tmp.path() / "state");
    FaultFs ffs(tmp.path());
    auto s = MustOpen(ffs, tmp.path() / "state", v2);
    EXPECT_EQ(s->report().migrations_applied, std::vector<std::string>{"nest poll settings"});
    count = ffs.operations();
  }
  for (int power = 0; power < 2; ++power) {
    for (std::uint64_t i = 0; i < count; ++i) {
      TempDir tmp;
      fs::path dir = tmp.path() / "state";
      prepare(dir);
      FaultFs ffs(tmp.path());
      ffs.SetTornWrites(true);
      ffs.CrashAfter(i);
      EXPECT_FALSE(Store::Open(ffs, dir, v2)) << i;
      if (power) {
        ASSERT_TRUE(ffs.SimulatePowerLoss());
      } else {
        ffs.Restart();
      }
      auto s = Store::Open(ffs, dir, v2);
      ASSERT_TRUE(s) << "crash " << i << " power " << power << ": " << s.error().message();
      EXPECT_EQ((*s)->format_version(), 2);
      EXPECT_EQ(*(*s)->Get("settings"), (Json{{"timing", {{"poll", 60}}}})) << i;
    }
  }
}

// --- Crash-point enumeration over a realistic sequence. ---

struct Step {
  enum Kind { kPut, kRemove, kAppend, kCompact } kind;
  std::string name;
  Json value;
  std::uint64_t keep = 0;
};

std::vector<Step> Workload() {
  std::vector<Step> w;
  auto put = [&](std::string n, Json v) { w.push_back(Step{Step::kPut, std::move(n), std::move(v), 0}); };
  auto app = [&](std::string n, Json v) { w.push_back(Step{Step::kAppend, std::move(n), std::move(v), 0}); };
  put("settings", {{"poll", 60}});
  app("journal", {{"step", "check"}});
  app("outbox", {{"event", 1}});
  app("outbox", {{"event", 2}});
  put("plan", {{"target", "1.2.0"}});
  app("journal", {{"step", "download"}});
  app("outbox", {{"event", 3}});
  w.push_back(Step{Step::kCompact, "outbox", Json(), 3});
  app("journal", {{"step", "install"}});
  put("installed", {{"app", "1.2.0"}});
  w.push_back(Step{Step::kRemove, "plan", Json(), 0});
  app("outbox", {{"event", 4}});
  put("settings", {{"poll", 30}});
  w.push_back(Step{Step::kCompact, "journal", Json(), 3});
  app("journal", {{"step", "done"}});
  return w;
}

struct State {
  std::map<std::string, Json> docs;
  std::map<std::string, std::pair<std::uint64_t, std::vector<Json>>> logs;  // base, records
  bool operator==(const State&) const = default;
};

void ApplyStep(State& s, const Step& step) {
  switch (step.kind) {
    case Step::kPut: s.docs[step.name] = step.value; break;
    case Step::kRemove: s.docs.erase(step.name); break;
    case Step::kAppend: {
      auto& l = s.logs[step.name];
      if (l.first == 0) l.first = 1;
      l.second.push_back(step.value);
      break;
    }
    case Step::kCompact: {
      auto& l = s.logs[step.name];
      std::size_t drop = static_cast<std::size_t>(step.keep - l.first);
      l.second.erase(l.second.begin(), l.second.begin() + static_cast<std::ptrdiff_t>(drop));
      l.first = step.keep;
      break;
    }
  }
}

Status RunStep(Store& s, const Step& step) {
  switch (step.kind) {
    case Step::kPut: return s.Put(step.name, step.value);
    case Step::kRemove: return s.Remove(step.name);
    case Step::kAppend: {
      auto r = s.Append(step.name, step.value);
      if (!r) return r.error();
      return OkStatus();
    }
    case Step::kCompact: return s.Compact(step.name, step.keep);
  }
  return OkStatus();
}

State Observe(Store& s) {
  State st;
  for (const auto& n : s.ListDocuments()) st.docs[n] = *s.Get(n);
  for (const auto& n : s.ListLogs()) {
    auto recs = s.Read(n, 0, 1000);
    EXPECT_TRUE(recs);
    auto& l = st.logs[n];
    l.first = s.FirstSeq(n);
    std::uint64_t expect = l.first;
    for (auto& r : *recs) {
      EXPECT_EQ(r.seq, expect++);
      l.second.push_back(r.value);
    }
  }
  return st;
}

TEST(StoreCrashTest, EveryCrashPointWithAndWithoutPowerLoss) {
  const std::vector<Step> work = Workload();
  std::uint64_t count = 0;
  {
    TempDir tmp;
    FaultFs ffs(tmp.path());
    auto s = MustOpen(ffs, tmp.path() / "state");
    for (const auto& step : work) ASSERT_TRUE(RunStep(*s, step));
    count = ffs.operations();
  }
  EXPECT_GT(count, 40u);
  int checked = 0;
  for (int power = 0; power < 2; ++power) {
    for (std::uint64_t i = 0; i <= count; ++i) {
      SCOPED_TRACE("crash after " + std::to_string(i) + " ops, power loss " + std::to_string(power));
      TempDir tmp;
      fs::path dir = tmp.path() / "state";
      FaultFs ffs(tmp.path());
      ffs.SetTornWrites(true);
      ffs.CrashAfter(i);
      State acked;
      State inflight;
      bool opened = false;
      std::size_t done = 0;
      {
        auto s = Store::Open(ffs, dir);
        if (s) {
          opened = true;
          for (; done < work.size(); ++done) {
            inflight = acked;
            ApplyStep(inflight, work[done]);
            if (!RunStep(**s, work[done])) break;
            acked = inflight;
          }
        }
      }
      if (done == work.size()) inflight = acked;
      if (!opened) inflight = acked;
      if (power) {
        ASSERT_TRUE(ffs.SimulatePowerLoss());
      } else {
        ffs.Restart();
      }
      auto s = Store::Open(ffs, dir);
      ASSERT_TRUE(s) << s.error().message();
      State seen = Observe(**s);
      // Empty logs created by a crashed first append are equivalent to absent ones.
      for (auto it = seen.logs.begin(); it != seen.logs.end();) {
        if (it->second.second.empty() && it->second.first == 1 && !acked.logs.count(it->first))
          it = seen.logs.erase(it);
        else
          ++it;
      }
      EXPECT_TRUE(seen == acked || seen == inflight) << "step " << done;
      // The store keeps working after recovery and the result survives another reopen.
      ASSERT_TRUE((*s)->Append("journal", Json{{"after", "crash"}}));
      ASSERT_TRUE((*s)->Put("settings", Json{{"after", true}}));
      s->reset();
      auto again = Store::Open(ffs, dir);
      ASSERT_TRUE(again) << again.error().message();
      EXPECT_EQ((*again)->Read("journal", 0, 1000)->back().value, (Json{{"after", "crash"}}));
      ++checked;
    }
  }
  EXPECT_EQ(checked, static_cast<int>(2 * (count + 1)));
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

TEST(StoreTest, ReadOnlyRefusesAStoreNeedingMigration) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  { MustOpen(RealFs::Instance(), dir); }
  StoreOptions v2;
  v2.migrations.push_back(TestMigration2());
  auto ro = Store::OpenReadOnly(RealFs::Instance(), dir, v2);
  ASSERT_FALSE(ro);
  EXPECT_EQ(ro.error().code(), Errc::kPolicy);
  EXPECT_NE(ro.error().message().find("needs migrating to 2"), std::string::npos);
}

TEST(StoreTest, StrayTempFilesAreRemovedAndCounted) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  { EXPECT_TRUE(MustOpen(RealFs::Instance(), dir)->Put("settings", Json::object())); }
  Spit(dir / "docs" / ".settings.json.tmp-0011223344556677", "{\"half");
  Spit(dir / "logs" / ".journal.log.tmp-0011223344556677", "UPK");
  Spit(dir / "docs" / "README", "not a document: ignored");
  auto ro = Store::OpenReadOnly(RealFs::Instance(), dir);
  ASSERT_TRUE(ro);
  EXPECT_EQ((*ro)->report().temp_files_removed, 0);
  ro->reset();
  auto s = MustOpen(RealFs::Instance(), dir);
  EXPECT_EQ(s->report().temp_files_removed, 2);
  EXPECT_FALSE(fs::exists(dir / "docs" / ".settings.json.tmp-0011223344556677"));
  EXPECT_TRUE(fs::exists(dir / "docs" / "README"));
  EXPECT_EQ(s->ListDocuments(), std::vector<std::string>{"settings"});
}

TEST(StoreTest, FailedAppendPoisonsTheLogUntilReopen) {
  TempDir tmp;
  fs::path dir = tmp.path() / "state";
  FaultFs ffs(tmp.path());
  {
    auto s = MustOpen(ffs, dir);
    ASSERT_TRUE(s->Append("journal", Json{{"n", 1}}));
    ffs.SetTornWrites(true);
    ffs.CrashAfter(0);
    auto r = s->Append("journal", Json{{"n", 2}});
    ASSERT_FALSE(r);
    EXPECT_NE(r.error().message().find("injected crash"), std::string::npos);
    ffs.Restart();  // the rollback failed while "dead": the log refuses until reopened
    auto again = s->Append("journal", Json{{"n", 3}});
    ASSERT_FALSE(again);
    EXPECT_EQ(again.error().code(), Errc::kIo);
    EXPECT_NE(again.error().message().find("reopen"), std::string::npos);
    EXPECT_TRUE(s->Append("outbox", Json{{"other", "log"}}));  // other logs are unaffected
  }
  auto s = MustOpen(ffs, dir);
  ASSERT_EQ(s->report().torn_tails.size(), 1u);
  EXPECT_EQ(*s->Append("journal", Json{{"n", 2}}), 2u);
}

TEST(StoreTest, SeveralThreadsOnDistinctFiles) {
  TempDir tmp;
  FaultFs ffs(tmp.path());
  std::vector<std::thread> threads;
  std::atomic<int> failures{0};
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&, t] {
      for (Fs* f : {static_cast<Fs*>(&ffs), static_cast<Fs*>(&RealFs::Instance())}) {
        fs::path p = tmp.path() / ("t" + std::to_string(t) + (f == &ffs ? "-fault" : "-real"));
        auto file = f->OpenForAppend(p);
        if (!file) { ++failures; continue; }
        for (int i = 0; i < 20; ++i)
          if (!(*file)->Append("x") || !(*file)->Sync()) ++failures;
        if (!f->WriteFileAtomic(p.string() + ".doc", "doc")) ++failures;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(failures.load(), 0);
  EXPECT_EQ(ffs.operations(), 4u * (1 + 40 + 5));  // open, 20 x (append, sync), atomic write: 5 steps
  EXPECT_EQ(Slurp(tmp.path() / "t3-fault"), std::string(20, 'x'));
}

// Not a pass/fail test: prints what the store and the seam cost on this machine's disk.
TEST(StorePerfTest, MeasureAppendAndStreamedWrite) {
  TempDir tmp;
  auto s = MustOpen(RealFs::Instance(), tmp.path() / "state");
  constexpr int kAppends = 200;
  auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < kAppends; ++i) ASSERT_TRUE(s->Append("journal", Json{{"step", "install"}, {"i", i}}));
  auto t1 = std::chrono::steady_clock::now();
  ASSERT_TRUE(s->Compact("journal", kAppends / 2));
  auto t2 = std::chrono::steady_clock::now();
  std::vector<std::uint8_t> chunk(1 << 20, 0x5a);
  constexpr int kMiB = 64;
  auto f = RealFs::Instance().OpenForWrite(tmp.path() / "image", 0600);
  ASSERT_TRUE(f);
  auto t3 = std::chrono::steady_clock::now();
  for (int i = 0; i < kMiB; ++i) ASSERT_TRUE((*f)->Write(chunk));
  auto t4 = std::chrono::steady_clock::now();
  ASSERT_TRUE((*f)->Sync());
  ASSERT_TRUE((*f)->Close());
  auto t5 = std::chrono::steady_clock::now();
  auto us = [](auto a, auto b) { return std::chrono::duration_cast<std::chrono::microseconds>(b - a).count(); };
  std::printf("[ MEASURE  ] durable append: %.0f us/record (%d records)\n", double(us(t0, t1)) / kAppends, kAppends);
  std::printf("[ MEASURE  ] compact %d records: %lld us\n", kAppends, static_cast<long long>(us(t1, t2)));
  std::printf("[ MEASURE  ] streamed write %d MiB: %.0f MiB/s before fsync, fsync %lld ms\n", kMiB,
              kMiB / (double(us(t3, t4)) / 1e6), static_cast<long long>(us(t4, t5) / 1000));
}

}  // namespace
}  // namespace upkeep::agent

namespace upkeep::agent {
namespace {

TEST(StoreTest, StoreDirectoryMayBeTheFaultFsRoot) {
  TempDir tmp;
  FaultFs ffs(tmp.path());
  {
    auto s = MustOpen(ffs, tmp.path());
    ASSERT_TRUE(s);
    ASSERT_TRUE(s->Append("journal", Json{{"a", 1}}));
  }
  ASSERT_TRUE(ffs.SimulatePowerLoss());
  auto s = MustOpen(ffs, tmp.path());
  EXPECT_EQ(s->NextSeq("journal"), 2u);
}

TEST(StoreTest, ManyFakeRecordHeadersAfterCorruptionAreBounded) {
  // A hostile tail made of record headers claiming 1 MiB each: refused or cut, quickly.
  std::string bytes = EncodeLogHeader(1) + EncodeLogRecord(1, "{}");
  std::string fake = std::string("UPKR") + std::string("\x00\x00\x10\x00", 4) + std::string(12, '\0');
  bytes += "X";
  while (bytes.size() < (3u << 20)) bytes += fake;
  auto t0 = std::chrono::steady_clock::now();
  auto r = ParseLog(bytes, "journal");
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count();
  EXPECT_LT(ms, 20000);
  if (r) {
    EXPECT_EQ(r->records.size(), 1u);
    EXPECT_EQ(r->valid_bytes + r->torn_bytes, bytes.size());
  }
}

}  // namespace
}  // namespace upkeep::agent
