// The agent's configuration (a JSON file written at provisioning, read at every start) and its
// settings (live-editable by the admin, kept in the store). See docs/agent.md.
//
// Configuration says where things are and whom to trust; settings say how the agent behaves.
// Both parse strictly: an unknown field, a wrong type or a value out of range is an error naming
// the field, and nothing is changed.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "upkeep/agent/backup.hpp"
#include "upkeep/common/error.hpp"
#include "upkeep/common/json.hpp"

namespace upkeep::agent {

// The relay core the daemon hosts for the appliance's endpoint clients and technicians' consoles
// (docs/agent/relay.md). Certificate and key are PEM files; `clients` is the relay's client store
// (relay::JsonFileClientStore); the control socket lets the CLI ask the running daemon's relay.
struct RelayConfig {
  std::string listen;                  // "ADDRESS:PORT" ("[::]:7443"); port 0 picks one
  std::filesystem::path certificate;
  std::filesystem::path private_key;
  std::filesystem::path clients;
  double accept_rate = 500;            // new connections per second
  std::size_t max_connections = 25000;
};

// The appliance updates page the daemon serves over HTTPS (docs/agent/web.md). PEM files; web
// accounts live in STATE/web-accounts.json.
struct WebConfig {
  std::string listen;                  // "ADDRESS:PORT" ("[::]:8443"); port 0 picks one
  std::filesystem::path certificate;
  std::filesystem::path private_key;
  std::string origin;                  // optional "https://host:port" browsers use; empty: derived
};

struct AgentConfig {
  std::filesystem::path state_dir;    // store, downloads, TUF metadata, backups, identity
  std::filesystem::path system_root;  // the package area the handlers install into
  std::string updater_url;            // "https://updates.example:8443" (no trailing '/')
  std::filesystem::path ca_file;      // PEM trust anchor for https (empty: the system's)
  std::filesystem::path identity_file;      // default STATE/identity.json
  std::filesystem::path director_key_file;  // the director's public key (TUF key JSON)
  BackupSource backup;                      // what a configuration backup holds
  std::optional<RelayConfig> relay;         // set: the daemon hosts the relay core
  std::optional<WebConfig> web;             // set: the daemon serves the updates page

  // Paths the agent derives from state_dir.
  std::filesystem::path StoreDir() const { return state_dir / "state"; }
  std::filesystem::path DownloadDir() const { return state_dir / "downloads"; }
  std::filesystem::path TufDir() const { return state_dir / "tuf"; }
  std::filesystem::path BackupDir() const { return state_dir / "backups"; }
  std::filesystem::path RelaySocket() const { return state_dir / "relay.sock"; }
  std::filesystem::path WebAccountsFile() const { return state_dir / "web-accounts.json"; }

  // {"state_dir", "system_root", "updater_url", "ca_file"?, "identity_file"?, "director_key_file",
  //  "backup"?: {"paths": [...], "tls_key_paths": [...], "licence_path"?, "vault_key_path"?},
  //  "relay"?: {"listen", "certificate", "private_key", "clients", "accept_rate"?, "max_connections"?},
  //  "web"?: {"listen", "certificate", "private_key", "origin"?}}.
  // Relative paths are resolved against `base` (the config file's directory).
  static Expected<AgentConfig> FromJson(const Json& json, const std::filesystem::path& base);
  static Expected<AgentConfig> Load(const std::filesystem::path& file);
  Json ToJson() const;
};

struct Settings {
  std::chrono::seconds poll_interval{3600};
  double poll_jitter = 0.2;
  std::chrono::seconds backoff_cap{6 * 3600};
  std::uint64_t bandwidth_limit = 0;  // bytes per second, 0 = unlimited
  std::vector<std::string> maintenance_windows;  // timing.hpp grammar; empty = any time
  bool auto_install = true;   // install what the assignment names without being asked
  std::size_t backups_keep = 5;
  bool backup_before_install = true;
  // The relay's client upgrade throttles (relay::SchedulerSettings), applied live by the daemon.
  std::uint32_t max_concurrent_client_upgrades = 10;      // 1..100000
  std::uint64_t max_client_upgrade_bandwidth = 10u << 20;  // bytes per second, 16384..2^40

  static Expected<Settings> FromJson(const Json& json);  // missing fields keep their defaults
  Json ToJson() const;
  // Sets one field from text as typed on the command line ("bandwidth_limit" "2000000",
  // "maintenance_windows" "Sat 01:00-05:00,daily 02:00-03:00"); the result is validated whole.
  Status Set(std::string_view key, std::string_view value);
};

}  // namespace upkeep::agent
