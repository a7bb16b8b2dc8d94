// Air-gapped updates in the agent: download keys, bundle import, installation reports
// (docs/agent.md "Air-gapped updates"; the trust model is in docs/airgap.md).
#include <fcntl.h>  // AT_FDCWD
#include <stdio.h>  // renameat2

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <map>
#include <set>

#include "agent_internal.hpp"
#include "upkeep/agent/agent.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/trust/download_key.hpp"
#include "upkeep/trust/install_report.hpp"
#include "upkeep/trust/signed_document.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using namespace internal;
using packages::Version;

constexpr const char* kDownloadKeys = "download_keys";
constexpr std::size_t kMaxDownloadKeys = 20;
// A bundle made later than this by the appliance's clock means the clock is behind.
constexpr std::chrono::hours kMaxClockBehind{1};
// The longest window a bundle's assignment has (the keyserver signs at most 31 days).
constexpr std::chrono::hours kMaxBundleValidity{31 * 24};

std::string Join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ", ") + s;
  return out.empty() ? "no appliance" : out;
}

Error FsError(const std::string& what, const std::error_code& ec) {
  return Error(Errc::kIo, what + ": " + ec.message());
}

// Puts directory `from` in place of `to` atomically (an exchange when `to` exists), then removes
// what was at `to`. A crash leaves either the old or the new directory at `to`, never none.
Status ReplaceDir(const fs::path& from, const fs::path& to) {
  std::error_code ec;
  if (!fs::exists(to, ec)) {
    fs::rename(from, to, ec);
    if (ec) return FsError("rename " + from.string() + " -> " + to.string(), ec);
  } else if (::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_EXCHANGE) != 0) {
    const int e = errno;
    if (e != EINVAL && e != ENOSYS)
      return Error(Errc::kIo, "exchange " + from.string() + " and " + to.string() + ": " + std::strerror(e));
    // A file system without RENAME_EXCHANGE: move the old one aside first.
    const fs::path aside = to.string() + ".old";
    fs::remove_all(aside, ec);
    fs::rename(to, aside, ec);
    if (ec) return FsError("rename " + to.string(), ec);
    fs::rename(from, to, ec);
    if (ec) {
      std::error_code ignored;
      fs::rename(aside, to, ignored);
      return FsError("rename " + from.string() + " -> " + to.string(), ec);
    }
    fs::remove_all(aside, ec);
  } else {
    fs::remove_all(from, ec);  // the old directory, now at `from`
  }
  return SyncDirectory(to.parent_path());
}

// The parsed "download_keys" document: nonce -> {issued, expires, used_at|null}.
Json DownloadKeysDoc(const Store& store) {
  auto doc = store.Get(kDownloadKeys);
  if (!doc || !doc->is_object() || !doc->contains("keys") || !(*doc)["keys"].is_object()) {
    return Json{{"keys", Json::object()}};
  }
  return *doc;
}

}  // namespace

bool Agent::AssignmentFromBundle() const {
  auto doc = d_.store->Get("assignment");
  return doc && doc->is_object() && doc->value("source", "") == "bundle";
}

Expected<DownloadKeyResult> Agent::MakeDownloadKey(std::chrono::seconds validity) {
  trust::DownloadKey key;
  key.appliance_id = d_.identity->appliance_id();
  key.installed = Installed();
  key.issued = d_.clock->Now();
  key.validity = validity;
  const Bytes nonce = d_.random->Generate(trust::kDownloadKeyNonceBytes);
  if (nonce.size() != key.nonce.size()) return Error(Errc::kInternal, "random source gave a short nonce");
  std::copy(nonce.begin(), nonce.end(), key.nonce.begin());
  UPK_TRY_ASSIGN(std::string text, trust::EncodeDownloadKey(key, *d_.identity));

  // Remember the nonce: only bundles answering a key made here are accepted, once each.
  Json doc = DownloadKeysDoc(*d_.store);
  Json& keys = doc["keys"];
  std::vector<std::pair<std::string, std::string>> by_issued;  // (issued, nonce)
  for (auto it = keys.begin(); it != keys.end();) {
    // Kept while a bundle made from it may still be valid: replays are named as such.
    auto expires = ParseTimestamp(it.value().value("expires", ""));
    if (!expires.ok() || *expires + kMaxBundleValidity <= key.issued) {
      it = keys.erase(it);
    } else {
      by_issued.emplace_back(it.value().value("issued", ""), it.key());
      ++it;
    }
  }
  std::sort(by_issued.begin(), by_issued.end());
  for (std::size_t i = 0; i + kMaxDownloadKeys <= by_issued.size(); ++i) keys.erase(by_issued[i].second);
  keys[key.nonce_hex()] = {
      {"issued", FormatTimestamp(key.issued)}, {"expires", FormatTimestamp(key.expires())}, {"used_at", nullptr}};
  UPK_TRY(d_.store->Put(kDownloadKeys, doc));
  UPK_TRY(Journal("download_key", {{"nonce", key.nonce_hex()},
                                   {"expires", FormatTimestamp(key.expires())},
                                   {"message", "download key made, valid until " + FormatTimestamp(key.expires())}}));
  DownloadKeyResult r;
  r.text = std::move(text);
  r.appliance_id = key.appliance_id;
  r.issued = key.issued;
  r.expires = key.expires();
  r.nonce_hex = key.nonce_hex();
  return r;
}

// Step 2 of an import: the whole check of the bundle's assignment, each refusal in plain words.
Expected<trust::Assignment> Agent::VerifyBundleAssignment(const std::string& text, SysTime now) const {
  const std::string me = d_.identity->appliance_id();
  UPK_TRY_ASSIGN(trust::SignedDocument doc, trust::SignedDocument::Parse(text));
  // Authenticity first: nothing unsigned is interpreted beyond its shape.
  if (auto s = doc.VerifySignature(*d_.director_key); !s.ok()) {
    return Error(Errc::kVerification,
                 "the bundle's assignment is not signed by the director (damaged or forged): " + s.error().message());
  }
  if (doc.type() != trust::kAssignmentType) {
    return Error(Errc::kVerification, "the bundle's assignment is a '" + doc.type() + "' document");
  }
  auto parsed = trust::Assignment::FromJson(doc.signed_part());
  if (!parsed.ok()) return parsed.error().Wrap("the bundle's assignment");
  const trust::Assignment& a = *parsed;
  if (a.appliance_id != me) {
    return Error(Errc::kPolicy, "this bundle is for " + a.appliance_id + ", not for this appliance (" + me + ")");
  }
  const Json keys = DownloadKeysDoc(*d_.store)["keys"];
  const Json* key = nullptr;
  if (a.nonce && keys.contains(*a.nonce)) key = &keys[*a.nonce];
  if (key && !key->is_object()) key = nullptr;  // damaged: unknown
  if (key && key->value("used_at", Json(nullptr)).is_string()) {
    return Error(Errc::kPolicy, "replayed: the download key of this bundle was already used for an import on " +
                                    key->value("used_at", std::string()));
  }
  if (a.issued > now + kMaxClockBehind) {
    return Error(Errc::kPolicy, "the bundle was made at " + FormatTimestamp(a.issued) +
                                    ", but this appliance's clock says " + FormatTimestamp(now) +
                                    ": the appliance's clock is behind; set it (or enable NTP) and "
                                    "import again");
  }
  if (a.expires <= now) {
    return Error(Errc::kVerification,
                 "the bundle expired on " + FormatTimestamp(a.expires) + ": make a new download key and a new bundle");
  }
  const trust::InstalledSet installed = Installed();
  const std::string digest = trust::StateDigest(installed);
  if (a.state_digest != digest) {
    bool older = true;
    for (const auto& s : a.steps) {
      auto it = installed.find(s.name);
      older &= it != installed.end() && it->second >= s.version;
    }
    if (older) {
      return Error(Errc::kPolicy,
                   "the bundle is older than what is installed (it was made for an earlier installed "
                   "state): nothing to import");
    }
    return Error(Errc::kPolicy, "the bundle was made for another installed state: make a new download key");
  }
  if (a.nonce) {
    if (!key) {
      return Error(Errc::kPolicy, "the bundle was not made from a download key of this appliance (nonce " +
                                      a.nonce->substr(0, 8) + "... is unknown here)");
    }
    // The key bounds when the bundle may be made; the bundle's own window bounds the import, so
    // a bundle may wait on a USB stick after its key expired.
    auto expires = ParseTimestamp(key->value("expires", ""));
    if (!expires.ok() || a.issued > *expires) {
      return Error(Errc::kPolicy, "the bundle was made at " + FormatTimestamp(a.issued) + ", after its download key expired (" +
                                      key->value("expires", "?") + "): make a new download key and a new bundle");
    }
  }
  for (const auto& s : a.steps) {
    auto it = installed.find(s.name);
    if (it != installed.end() && s.version < it->second) {
      return Error(Errc::kPolicy, "the bundle would downgrade " + s.name + " from " + it->second.ToString() + " to " +
                                      s.version.ToString());
    }
  }
  // The same reader-side check as a check-in, as the last word.
  trust::AssignmentExpectation expect;
  expect.appliance_id = me;
  expect.state_digest = digest;
  expect.nonce = a.nonce;
  return trust::VerifyAssignment(text, *d_.director_key, *d_.clock, expect);
}

Expected<ImportResult> Agent::ImportBundle(packages::ByteSource& source, const ImportOptions& options) {
  if (d_.store->Get("operation")) UPK_TRY(Recover());
  const SysTime now = d_.clock->Now();
  const std::string me = d_.identity->appliance_id();
  const std::uint64_t outbox_start = d_.store->NextSeq(kOutbox);
  const fs::path work = d_.config->state_dir / "import";
  const fs::path staging = work / "metadata";
  const fs::path tuf_copy = work / "tuf";
  const fs::path downloads = d_.config->DownloadDir();
  std::vector<fs::path> parts;  // blob parts written by this import

  // Whatever happens, no work files stay behind; the parts are renamed only at the commit.
  struct Cleanup {
    Fs& agent_fs;
    const fs::path& work;
    std::vector<fs::path>& parts;
    ~Cleanup() {
      for (const auto& p : parts) (void)agent_fs.Remove(p);
      std::error_code ec;
      fs::remove_all(work, ec);
    }
  } cleanup{*d_.fs, work, parts};

  struct Verified {
    trust::Assignment assignment;
    std::string text;
    bundle::Header header;
  };
  auto verify = [&]() -> Expected<Verified> {
    UPK_TRY_ASSIGN(auto reader, bundle::Reader::Open(source));
    const bundle::Header& header = reader->header();
    const std::uint64_t total = header.TotalBytes();
    auto progress = [&] {
      if (options.progress) options.progress(source.position(), total);
    };
    // 1. An assignment for this appliance must be in it.
    bool mine = false;
    for (const auto& e : header.entries) mine |= e.type == bundle::EntryType::kAssignment && e.name == me;
    if (!mine) {
      return Error(Errc::kPolicy,
                   "this bundle is for " + Join(header.appliances) + ", not for this appliance (" + me + ")");
    }
    std::error_code ec;
    fs::remove_all(work, ec);  // what an import a crash interrupted left
    for (fs::directory_iterator it(downloads, ec), end; !ec && it != end; it.increment(ec)) {
      const std::string n = it->path().filename().string();
      std::error_code ignored;
      if (n.ends_with(".import-part")) fs::remove(it->path(), ignored);
    }
    ec.clear();
    fs::create_directories(staging, ec);
    if (ec) return FsError(staging.string(), ec);

    // Metadata and assignments come before the first blob (the reader enforces it).
    std::string text;
    std::optional<bundle::EntryInfo> entry;
    for (;;) {
      UPK_TRY_ASSIGN(entry, reader->Next());
      if (!entry || entry->type == bundle::EntryType::kBlob) break;
      if (entry->type == bundle::EntryType::kAssignment && entry->name != me) {
        UPK_TRY(reader->Skip());  // another cluster node's
        continue;
      }
      std::string data;
      UPK_TRY(reader->Read([&](std::string_view chunk) -> Status {
        data.append(chunk);
        return OkStatus();
      }));
      progress();
      if (entry->type == bundle::EntryType::kAssignment) {
        text = std::move(data);
      } else {
        if (entry->name.find('/') != std::string::npos || entry->name.empty() || entry->name[0] == '.') {
          return Error(Errc::kUnsafe, "bundle metadata entry '" + entry->name + "' is not a plain file name");
        }
        UPK_TRY(WriteFileAtomic(staging / entry->name, data, 0644));
      }
    }
    if (text.empty()) return Error(Errc::kParse, "bundle: the assignment for " + me + " is empty");

    // 2. The assignment: director's signature, this appliance, its state, its download key.
    UPK_TRY_ASSIGN(trust::Assignment a, VerifyBundleAssignment(text, now));

    // 3. TUF, on a copy of the trusted metadata, with the reference time at the issue time.
    fs::copy(d_.config->TufDir(), tuf_copy, fs::copy_options::recursive, ec);
    if (ec) return FsError("copy " + d_.config->TufDir().string(), ec);
    FakeClock tuf_clock(a.issued);
    auto fetcher = MakeDirFetcher(staging);
    tuf::UpdaterOptions to = TufOptions(*d_.config);
    to.metadata_dir = tuf_copy;
    tuf::Updater tuf(to, *fetcher, tuf_clock);
    if (auto r = tuf.Refresh(); !r.ok()) return r.error().Wrap("the bundle's TUF metadata");
    for (const auto& s : a.steps) {
      const std::string label = s.name + " " + s.version.ToString();
      UPK_TRY_ASSIGN(auto target, tuf.GetTargetInfo(s.target_path));
      if (!target) return Error(Errc::kVerification, label + ": the bundle's TUF targets do not list " + s.target_path);
      auto sha = target->hashes.find("sha256");
      if (target->length != s.length || sha == target->hashes.end() || sha->second != s.sha256) {
        return Error(Errc::kVerification, label + ": the TUF targets and the assignment disagree about " +
                                              s.target_path + " (length or sha256)");
      }
    }

    // 4. The blobs of the steps still to install, into the download area (as parts until the commit).
    const trust::InstalledSet installed = Installed();
    std::map<std::string, const trust::AssignmentStep*> needed;  // sha256 -> step
    std::uint64_t needed_bytes = 0;
    for (const auto& s : a.steps) {
      auto it = installed.find(s.name);
      if (it != installed.end() && it->second >= s.version) continue;
      if (needed.emplace(s.sha256, &s).second) needed_bytes += s.length;
    }
    UPK_TRY(d_.fs->CreateDirectories(downloads, 0700));
    if (needed_bytes > 0) UPK_TRY(CheckFreeSpace(downloads, needed_bytes, "the bundle's packages"));
    std::set<std::string> written;
    for (; entry;) {
      auto step = needed.find(entry->name);
      if (entry->type != bundle::EntryType::kBlob || step == needed.end() || written.count(entry->name)) {
        UPK_TRY(reader->Skip());  // another node's package, or one installed already
        progress();
      } else {
        const fs::path part = downloads / (entry->name + ".blob.import-part");
        UPK_TRY_ASSIGN(auto file, d_.fs->OpenForWrite(part, 0600));
        parts.push_back(part);
        Hasher hasher;
        std::uint64_t bytes = 0;
        std::uint64_t last_report = 0;
        UPK_TRY(reader->Read([&](std::string_view chunk) -> Status {
          const auto span = AsBytes(chunk);
          hasher.Update(span);
          bytes += chunk.size();
          if (bytes > step->second->length) {
            return Error(Errc::kVerification, "bundle blob " + entry->name + " is longer than its assignment says");
          }
          if (auto w = file->Write(span); !w.ok()) return w.error();
          if (bytes - last_report >= (8u << 20)) {
            last_report = bytes;
            progress();
          }
          return OkStatus();
        }));
        UPK_TRY(file->Sync());
        UPK_TRY(file->Close());
        if (bytes != step->second->length || hasher.FinishHex() != step->second->sha256) {
          return Error(Errc::kVerification,
                       "bundle blob " + entry->name + " does not match the assignment (length or sha256)");
        }
        written.insert(entry->name);
        progress();
      }
      UPK_TRY_ASSIGN(entry, reader->Next());  // after the last one: checks nothing follows
    }
    for (const auto& [sha, s] : needed) {
      if (written.count(sha)) continue;
      // A package already here (downloaded or imported before) is fine: it is verified on use.
      const auto have = HashFile(downloads / (sha + ".blob"));
      if (have.ok() && have->size == s->length && have->sha256_hex == sha) continue;
      return Error(Errc::kPolicy, "the bundle does not carry the package of " + s->name + " " + s->version.ToString() +
                                      " (blob " + sha.substr(0, 16) + "...)");
    }
    progress();
    return Verified{std::move(a), std::move(text), header};
  };

  auto verified = verify();
  if (!verified.ok()) {
    (void)Journal("refused", {{"message", "import refused: " + verified.error().message()}});
    return verified.error().Wrap("import refused");
  }
  const trust::Assignment& a = verified->assignment;

  // 5. Commit: the packages, the TUF metadata, then the assignment.
  for (const auto& p : parts) {
    std::string name = p.filename().string();
    name = name.substr(0, name.size() - std::string(".import-part").size());
    UPK_TRY(d_.fs->Rename(p, downloads / name));
  }
  parts.clear();
  UPK_TRY(d_.fs->SyncDir(downloads));
  UPK_TRY(ReplaceDir(tuf_copy, d_.config->TufDir()));
  UPK_TRY(ReplaceDir(staging, BundleMetadataDir(*d_.config)));
  if (a.nonce) {
    // Used before the assignment is kept: a crash in between wastes a key, never allows a replay.
    Json keys = DownloadKeysDoc(*d_.store);
    keys["keys"][*a.nonce]["used_at"] = FormatTimestamp(now);
    UPK_TRY(d_.store->Put(kDownloadKeys, keys));
  }
  const trust::InstalledSet installed = Installed();
  UPK_TRY(d_.store->Put("assignment", Json{{"text", verified->text},
                                           {"state", StateJson(installed)},
                                           {"received_at", FormatTimestamp(now)},
                                           {"source", "bundle"},
                                           {"bundle_id", verified->header.bundle_id},
                                           {"tuf_time", FormatTimestamp(a.issued)}}));
  Json last = {{"bundle_id", verified->header.bundle_id}, {"at", FormatTimestamp(now)}, {"outbox_seq", outbox_start}};
  last["nonce"] = a.nonce ? Json(*a.nonce) : Json(nullptr);
  UPK_TRY(d_.store->Put("last_import", last));

  ImportResult result;
  result.bundle_id = verified->header.bundle_id;
  result.steps = a.steps;
  std::size_t todo = 0;
  for (const auto& s : a.steps) {
    auto it = installed.find(s.name);
    if (it == installed.end() || it->second < s.version) ++todo;
  }
  result.up_to_date = todo == 0;
  UPK_TRY(Journal("import", {{"bundle_id", result.bundle_id},
                             {"steps", todo},
                             {"message", "bundle " + result.bundle_id + " imported (" + std::to_string(todo) +
                                             " step(s) to install)"}}));
  Log("bundle " + result.bundle_id + " verified: " + std::to_string(todo) + " update(s) to install");

  // 6. The same install loop as `install --all`, without checking in between (no network).
  if (options.install && todo > 0) {
    if (options.retry) UPK_TRY(d_.store->Remove("failed"));
    for (int i = 0; i < 1000; ++i) {  // bounded: no plan is that long
      auto r = InstallNext(options.force);
      if (!r.ok()) {
        result.install_error = r.error();
        break;
      }
      result.installs.push_back(*r);
      if (r->outcome != InstallOutcome::kInstalled) break;
    }
  }
  return result;
}

Expected<std::string> Agent::LastImportReport() {
  auto last = d_.store->Get("last_import");
  if (!last || !last->is_object()) return Error(Errc::kNotFound, "no bundle was imported yet");
  trust::InstallReport report;
  report.appliance_id = d_.identity->appliance_id();
  report.bundle_id = last->value("bundle_id", "");
  if (auto n = last->find("nonce"); n != last->end() && n->is_string()) report.nonce = n->get<std::string>();
  report.created = d_.clock->Now();
  report.installed = Installed();
  const std::uint64_t from = std::max(last->value("outbox_seq", std::uint64_t{1}), d_.store->FirstSeq(kOutbox));
  UPK_TRY_ASSIGN(auto records, d_.store->Read(kOutbox, from, trust::kMaxReportEvents));
  for (const auto& r : records) report.events.push_back(r.value);
  return trust::SignInstallReport(report, *d_.identity);
}

}  // namespace upkeep::agent
