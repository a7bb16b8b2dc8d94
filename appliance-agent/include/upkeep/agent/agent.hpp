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
// Not thread-safe: one thread drives an Agent.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
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

  // Views for status and the CLI.
  trust::InstalledSet Installed() const;
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
  void Log(const std::string& line) const;

  AgentDeps d_;
};

}  // namespace upkeep::agent
