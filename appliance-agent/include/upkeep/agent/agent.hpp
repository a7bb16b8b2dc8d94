// The appliance agent's core: check in, verify, download, back up, install through the
// handlers, health-check, commit or roll back, report. One Agent works on one opened Store; the
// daemon and the CLI build one per unit of work (the store lock is held only while working).
//
// Safety rules (docs/agent.md):
//  - A package is installed only when the director's assignment (signed, bound to this appliance
//    and its installed state) and the TUF targets both name it with the same length and SHA-256,
//    its manifest is signed by the TUF targets keys and names the same release, and it is newer
//    than what is installed.
//  - Every phase of an install is recorded in the store's "operation" document before it starts,
//    so Recover() can finish or undo an install a crash interrupted; what is active on disk
//    (Handler::Active) is the truth, the journal explains it.
//  - Reports go to the outbox log first and are sent later, so none is lost while the updater is
//    unreachable; event ids are derived from the operation, so a resend is a duplicate, never a
//    second report.
//  - Air-gapped updates (docs/agent.md, docs/airgap.md): MakeDownloadKey() makes the signed request
//    an admin carries to the portal; ImportBundle() verifies a .upkb bundle exactly as strictly as
//    a check-in (director signature, binding to this appliance, its installed state and a
//    remembered, unused, unexpired download key nonce; TUF with its reference time fixed at the
//    assignment's issue time), changes nothing unless every check passed, then installs through
//    the same InstallNext() as online, with no network at all.
// Not thread-safe: one thread drives an Agent.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "upkeep/agent/config.hpp"
#include "upkeep/agent/downloader.hpp"
#include "upkeep/agent/fs.hpp"
#include "upkeep/agent/handlers.hpp"
#include "upkeep/agent/process.hpp"
#include "upkeep/agent/store.hpp"
#include "upkeep/agent/updater_client.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/source.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/tuf/fetcher.hpp"

namespace upkeep::agent {

inline constexpr const char* kAgentVersion = "0.4.0";

// Everything the agent talks to; all must outlive the Agent.
struct AgentDeps {
  const AgentConfig* config = nullptr;
  Fs* fs = nullptr;
  Store* store = nullptr;
  const Clock* clock = nullptr;
  Random* random = nullptr;
  const trust::ApplianceIdentity* identity = nullptr;
  const packages::PublicKey* director_key = nullptr;
  UpdaterApi* api = nullptr;           // check-in and events
  HttpClient* http = nullptr;          // blob downloads
  tuf::Fetcher* tuf_fetcher = nullptr; // TUF metadata
  ProcessRunner* runner = nullptr;
  Sleeper* sleeper = nullptr;
  // Progress lines ("download site 5.1.0: 40%"); may be empty.
  std::function<void(const std::string&)> log;
};

struct PlannedStep {
  trust::AssignmentStep step;
  std::string state;   // "installed", "next", "waiting", "failed", "blocked"
  std::string reason;  // why it waits or is blocked, in plain words
};

struct CheckResult {
  std::size_t steps = 0;  // steps still to install
  std::chrono::seconds next_checkin{0};
};

enum class InstallOutcome { kNothing, kInstalled, kFailedRolledBack, kNotAllowedNow };

struct InstallResult {
  InstallOutcome outcome = InstallOutcome::kNothing;
  std::string name;
  std::string version;
  std::string message;
  SysTime not_before{};  // kNotAllowedNow: when it may start (window, settle time)
};

struct DownloadKeyResult {
  std::string text;  // the text form (trust/download_key.hpp), line breaks included
  std::string appliance_id;
  SysTime issued{}, expires{};
  std::string nonce_hex;
};

struct ImportOptions {
  bool install = true;  // install the bundle's steps right away (like `install --all`)
  bool force = false;   // ignore maintenance windows and settle times (never a verification rule)
  bool retry = false;   // try releases again whose install failed before
  // (bytes of the bundle read, its total size); may be empty.
  std::function<void(std::uint64_t, std::uint64_t)> progress;
};

struct ImportResult {
  std::string bundle_id;
  std::vector<trust::AssignmentStep> steps;  // the bundle's assignment, in order
  std::vector<InstallResult> installs;       // what the install loop did, one entry per InstallNext
  bool up_to_date = false;                   // the bundle names nothing newer than what is installed
  // Set when the bundle was verified and kept but the install loop stopped on an error (a disk
  // full, a refused package): the import itself stands, `install --all` continues later.
  std::optional<Error> install_error;
};

// Where an installed software release that brings endpoint client builds keeps their list
// (relay/builds_file.hpp format, in its payload's top directory).
inline constexpr const char* kClientBuildsFileName = "client-builds.json";
struct ClientBuildsFile {
  std::string package;
  std::string version;
  std::filesystem::path path;  // may be missing on disk: the release then brings no builds
};

class Agent {
 public:
  explicit Agent(AgentDeps deps);

  // Finishes or undoes an install a crash interrupted; journals what it found and did.
  Status Recover();
  // Signed check-in; verifies and keeps the assignment. Flushes the outbox first.
  Expected<CheckResult> Check();
  // Installs the next step of the kept assignment (one package), or says why not now.
  // `force` ignores maintenance windows and settle times (never a verification rule).
  Expected<InstallResult> InstallNext(bool force);
  // Factory provisioning: installs a plaintext .upk signed by the targets keys of the trusted TUF
  // root, for a package not installed yet (an appliance's first versions come this way, offline).
  // Returns "NAME VERSION".
  Expected<std::string> Provision(const std::filesystem::path& upk);
  // Rolls the package back to the version it had before its last install.
  Status RollbackPackage(const std::string& name);
  // Sends queued reports; returns how many were acknowledged.
  Expected<std::size_t> FlushOutbox();

  // Makes a download key for the installed state (nonce from Random) and remembers its nonce in
  // the store document "download_keys" (at most 20; expired ones are dropped when a new one is
  // made). kInvalidArgument for a validity outside 60 s .. 90 days.
  Expected<DownloadKeyResult> MakeDownloadKey(std::chrono::seconds validity);
  // Verifies and keeps a bundle read from `source` (streamed, constant memory), then
  // (options.install) installs its steps in order exactly like `install --all`. On a refusal
  // nothing changed: kept assignment, installed state, TUF metadata, store documents. Errors:
  // kPolicy (for another appliance, another state, replayed/unknown download key, downgrade,
  // clock behind), kVerification (signature, expiry, TUF, a damaged entry), kParse/kIo/kLimit
  // from the bundle reader (truncated, not a bundle) and the disk.
  Expected<ImportResult> ImportBundle(packages::ByteSource& source, const ImportOptions& options);
  // The signed installation report (trust::SignInstallReport) of the last import: the installed
  // state now and the report events queued since that import began (the same ids as online).
  // kNotFound when nothing was imported yet.
  Expected<std::string> LastImportReport();
  // True when the kept assignment came from a bundle: installs then need no network, and the
  // install loop does not check in between steps.
  bool AssignmentFromBundle() const;

  // Views for status and the CLI.
  trust::InstalledSet Installed() const;
  // The client builds files of the installed software releases whose manifest said
  // client_upgrade (base releases and add-ons never count), sorted by package name.
  Expected<std::vector<ClientBuildsFile>> ClientBuildFiles();
  Json InstalledJson() const;
  Expected<std::vector<PlannedStep>> Plan() const;
  Settings CurrentSettings() const;
  std::size_t PendingReports() const;

 private:
  struct Operation;
  Status RunOperation(Operation& op);
  Status Finish(Operation& op, bool healthy, const std::string& log_tail, const std::string& why);
  Status SetPhase(Operation& op, const std::string& phase);
  Status Journal(const std::string& type, const Json& fields);
  Status Report(const Operation& op, const std::string& type, const Json& detail, const std::string& log_tail = {});
  Status MarkInstalled(const Operation& op);
  Status MarkFailed(const std::string& name, const std::string& version, const std::string& reason);
  bool IsFailed(const std::string& name, const std::string& version) const;
  Expected<std::unique_ptr<Handler>> HandlerFor(const std::string& kind);
  Expected<trust::Assignment> KeptAssignment() const;
  Expected<trust::Assignment> VerifyBundleAssignment(const std::string& text, SysTime now) const;
  void Log(const std::string& line) const;

  AgentDeps d_;
};

}  // namespace upkeep::agent
