#include "upkeep/agent/config.hpp"

#include <charconv>
#include <set>

#include "upkeep/agent/timing.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::agent {
namespace {

constexpr std::uint64_t kMaxConfigBytes = 1u << 20;

Status OnlyKnown(const Json& j, const std::set<std::string>& known, const std::string& what) {
  if (!j.is_object()) return Error(Errc::kParse, what + ": not a JSON object");
  for (const auto& [key, _] : j.items()) {
    if (!known.count(key)) return Error(Errc::kParse, what + ": unknown field '" + key + "'");
  }
  return OkStatus();
}

Expected<std::string> String(const Json& j, const std::string& key, const std::string& what, bool required) {
  if (!j.contains(key)) {
    if (required) return Error(Errc::kParse, what + ": field '" + key + "' is missing");
    return std::string();
  }
  if (!j[key].is_string()) return Error(Errc::kParse, what + ": field '" + key + "' must be a string");
  return j[key].get<std::string>();
}

std::filesystem::path Resolve(const std::string& p, const std::filesystem::path& base) {
  if (p.empty()) return {};
  std::filesystem::path path(p);
  return path.is_absolute() ? path : base / path;
}

Expected<std::vector<std::filesystem::path>> Paths(const Json& j, const std::string& key, const std::string& what,
                                                   const std::filesystem::path& base) {
  std::vector<std::filesystem::path> out;
  if (!j.contains(key)) return out;
  if (!j[key].is_array()) return Error(Errc::kParse, what + ": field '" + key + "' must be an array of paths");
  for (const auto& p : j[key]) {
    if (!p.is_string() || p.get<std::string>().empty()) {
      return Error(Errc::kParse, what + ": field '" + key + "' must hold non-empty strings");
    }
    out.push_back(Resolve(p.get<std::string>(), base));
  }
  return out;
}

Json PathList(const std::vector<std::filesystem::path>& paths) {
  Json a = Json::array();
  for (const auto& p : paths) a.push_back(p.string());
  return a;
}

Expected<std::uint64_t> ParseUnsigned(std::string_view text, const std::string& key) {
  std::uint64_t v = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || end != text.data() + text.size() || text.empty()) {
    return Error(Errc::kInvalidArgument, "setting " + key + ": '" + std::string(text) + "' is not a whole number");
  }
  return v;
}

}  // namespace

Expected<AgentConfig> AgentConfig::FromJson(const Json& j, const std::filesystem::path& base) {
  const std::string what = "agent config";
  UPK_TRY(OnlyKnown(j, {"state_dir", "system_root", "updater_url", "ca_file", "identity_file", "director_key_file",
                        "backup", "relay", "web"},
                    what));
  AgentConfig c;
  UPK_TRY_ASSIGN(std::string state, String(j, "state_dir", what, true));
  UPK_TRY_ASSIGN(std::string system, String(j, "system_root", what, true));
  UPK_TRY_ASSIGN(c.updater_url, String(j, "updater_url", what, true));
  UPK_TRY_ASSIGN(std::string ca, String(j, "ca_file", what, false));
  UPK_TRY_ASSIGN(std::string identity, String(j, "identity_file", what, false));
  UPK_TRY_ASSIGN(std::string director, String(j, "director_key_file", what, true));
  if (state.empty() || system.empty()) return Error(Errc::kParse, what + ": state_dir and system_root must not be empty");
  if (c.updater_url.rfind("http://", 0) != 0 && c.updater_url.rfind("https://", 0) != 0) {
    return Error(Errc::kParse, what + ": updater_url must start with http:// or https://");
  }
  while (!c.updater_url.empty() && c.updater_url.back() == '/') c.updater_url.pop_back();
  c.state_dir = Resolve(state, base);
  c.system_root = Resolve(system, base);
  c.ca_file = Resolve(ca, base);
  c.identity_file = identity.empty() ? c.state_dir / "identity.json" : Resolve(identity, base);
  c.director_key_file = Resolve(director, base);
  if (j.contains("backup")) {
    const Json& b = j["backup"];
    const std::string bw = what + ": backup";
    UPK_TRY(OnlyKnown(b, {"paths", "tls_key_paths", "licence_path", "vault_key_path"}, bw));
    UPK_TRY_ASSIGN(c.backup.paths, Paths(b, "paths", bw, base));
    UPK_TRY_ASSIGN(c.backup.tls_key_paths, Paths(b, "tls_key_paths", bw, base));
    UPK_TRY_ASSIGN(std::string licence, String(b, "licence_path", bw, false));
    UPK_TRY_ASSIGN(std::string vault, String(b, "vault_key_path", bw, false));
    c.backup.licence_path = Resolve(licence, base);
    c.backup.vault_key_path = Resolve(vault, base);
  }
  if (j.contains("relay")) {
    const Json& r = j["relay"];
    const std::string rw = what + ": relay";
    UPK_TRY(OnlyKnown(r, {"listen", "certificate", "private_key", "clients", "accept_rate", "max_connections"}, rw));
    RelayConfig rc;
    UPK_TRY_ASSIGN(rc.listen, String(r, "listen", rw, true));
    UPK_TRY_ASSIGN(std::string cert, String(r, "certificate", rw, true));
    UPK_TRY_ASSIGN(std::string key, String(r, "private_key", rw, true));
    UPK_TRY_ASSIGN(std::string clients, String(r, "clients", rw, true));
    if (rc.listen.empty() || cert.empty() || key.empty() || clients.empty()) {
      return Error(Errc::kParse, rw + ": listen, certificate, private_key and clients must not be empty");
    }
    rc.certificate = Resolve(cert, base);
    rc.private_key = Resolve(key, base);
    rc.clients = Resolve(clients, base);
    if (r.contains("accept_rate")) {
      if (!r["accept_rate"].is_number() || !(r["accept_rate"].get<double>() > 0) || r["accept_rate"].get<double>() > 1e6) {
        return Error(Errc::kParse, rw + ": accept_rate must be a number of connections per second, 0 < rate <= 1000000");
      }
      rc.accept_rate = r["accept_rate"].get<double>();
    }
    if (r.contains("max_connections")) {
      if (!r["max_connections"].is_number_integer() || r["max_connections"].get<std::int64_t>() < 1 ||
          r["max_connections"].get<std::int64_t>() > 1000000) {
        return Error(Errc::kParse, rw + ": max_connections must be 1..1000000");
      }
      rc.max_connections = r["max_connections"].get<std::size_t>();
    }
    c.relay = std::move(rc);
  }
  if (j.contains("web")) {
    const Json& w = j["web"];
    const std::string ww = what + ": web";
    UPK_TRY(OnlyKnown(w, {"listen", "certificate", "private_key", "origin"}, ww));
    WebConfig wc;
    UPK_TRY_ASSIGN(wc.listen, String(w, "listen", ww, true));
    UPK_TRY_ASSIGN(std::string cert, String(w, "certificate", ww, true));
    UPK_TRY_ASSIGN(std::string key, String(w, "private_key", ww, true));
    UPK_TRY_ASSIGN(wc.origin, String(w, "origin", ww, false));
    if (wc.listen.empty() || cert.empty() || key.empty()) {
      return Error(Errc::kParse, ww + ": listen, certificate and private_key must not be empty");
    }
    if (!wc.origin.empty() && (wc.origin.rfind("https://", 0) != 0 || wc.origin.size() > 255 ||
                               wc.origin.find_first_of("/?#@ ", 8) != std::string::npos)) {
      return Error(Errc::kParse, ww + ": origin must be https://HOST[:PORT] without a path");
    }
    wc.certificate = Resolve(cert, base);
    wc.private_key = Resolve(key, base);
    c.web = std::move(wc);
  }
  return c;
}

Expected<AgentConfig> AgentConfig::Load(const std::filesystem::path& file) {
  UPK_TRY_ASSIGN(std::string text, ReadFileBounded(file, kMaxConfigBytes));
  Json j = Json::parse(text, nullptr, false);
  if (j.is_discarded()) return Error(Errc::kParse, file.string() + ": not valid JSON");
  auto c = FromJson(j, std::filesystem::absolute(file).parent_path());
  if (!c.ok()) return c.error().Wrap(file.string());
  return c;
}

Json AgentConfig::ToJson() const {
  Json j = {{"state_dir", state_dir.string()}, {"system_root", system_root.string()}, {"updater_url", updater_url},
            {"identity_file", identity_file.string()}, {"director_key_file", director_key_file.string()}};
  if (!ca_file.empty()) j["ca_file"] = ca_file.string();
  Json b = {{"paths", PathList(backup.paths)}, {"tls_key_paths", PathList(backup.tls_key_paths)}};
  if (!backup.licence_path.empty()) b["licence_path"] = backup.licence_path.string();
  if (!backup.vault_key_path.empty()) b["vault_key_path"] = backup.vault_key_path.string();
  j["backup"] = b;
  if (relay) {
    j["relay"] = {{"listen", relay->listen},          {"certificate", relay->certificate.string()},
                  {"private_key", relay->private_key.string()}, {"clients", relay->clients.string()},
                  {"accept_rate", relay->accept_rate}, {"max_connections", relay->max_connections}};
  }
  if (web) {
    j["web"] = {{"listen", web->listen}, {"certificate", web->certificate.string()},
                {"private_key", web->private_key.string()}};
    if (!web->origin.empty()) j["web"]["origin"] = web->origin;
  }
  return j;
}

Expected<Settings> Settings::FromJson(const Json& j) {
  const std::string what = "settings";
  UPK_TRY(OnlyKnown(j, {"poll_interval_seconds", "poll_jitter", "backoff_cap_seconds", "bandwidth_limit",
                        "maintenance_windows", "auto_install", "backups_keep", "backup_before_install",
                        "max_concurrent_client_upgrades", "max_client_upgrade_bandwidth"},
                    what));
  Settings s;
  try {
    auto seconds = [&](const char* key, std::chrono::seconds& out, std::int64_t lo, std::int64_t hi) -> Status {
      if (!j.contains(key)) return OkStatus();
      if (!j[key].is_number_integer()) return Error(Errc::kParse, what + ": " + key + " must be a whole number");
      const auto v = j[key].get<std::int64_t>();
      if (v < lo || v > hi) {
        return Error(Errc::kParse, what + ": " + key + " must be " + std::to_string(lo) + ".." + std::to_string(hi));
      }
      out = std::chrono::seconds(v);
      return OkStatus();
    };
    UPK_TRY(seconds("poll_interval_seconds", s.poll_interval, 60, 7 * 86400));
    UPK_TRY(seconds("backoff_cap_seconds", s.backoff_cap, 60, 7 * 86400));
    if (j.contains("poll_jitter")) {
      if (!j["poll_jitter"].is_number()) return Error(Errc::kParse, what + ": poll_jitter must be a number");
      s.poll_jitter = j["poll_jitter"].get<double>();
      if (!(s.poll_jitter >= 0 && s.poll_jitter <= 0.5)) return Error(Errc::kParse, what + ": poll_jitter must be 0..0.5");
    }
    if (j.contains("bandwidth_limit")) {
      if (!j["bandwidth_limit"].is_number_unsigned()) {
        return Error(Errc::kParse, what + ": bandwidth_limit must be bytes per second (0 = unlimited)");
      }
      s.bandwidth_limit = j["bandwidth_limit"].get<std::uint64_t>();
    }
    if (j.contains("maintenance_windows")) {
      if (!j["maintenance_windows"].is_array()) return Error(Errc::kParse, what + ": maintenance_windows must be a list");
      for (const auto& w : j["maintenance_windows"]) {
        if (!w.is_string()) return Error(Errc::kParse, what + ": maintenance_windows must hold strings");
        s.maintenance_windows.push_back(w.get<std::string>());
      }
      if (auto w = MaintenanceWindows::Parse(s.maintenance_windows); !w.ok()) return w.error().Wrap(what);
    }
    for (auto [key, field] : {std::pair{"auto_install", &s.auto_install},
                              std::pair{"backup_before_install", &s.backup_before_install}}) {
      if (!j.contains(key)) continue;
      if (!j[key].is_boolean()) return Error(Errc::kParse, what + ": " + key + " must be true or false");
      *field = j[key].get<bool>();
    }
    if (j.contains("backups_keep")) {
      if (!j["backups_keep"].is_number_unsigned() || j["backups_keep"].get<std::uint64_t>() < 1 ||
          j["backups_keep"].get<std::uint64_t>() > 1000) {
        return Error(Errc::kParse, what + ": backups_keep must be 1..1000");
      }
      s.backups_keep = j["backups_keep"].get<std::size_t>();
    }
    // The same ranges as relay::ValidateSettings (the agent core does not link the relay).
    if (j.contains("max_concurrent_client_upgrades")) {
      const Json& v = j["max_concurrent_client_upgrades"];
      if (!v.is_number_integer() || v.get<std::int64_t>() < 1 || v.get<std::int64_t>() > 100000) {
        return Error(Errc::kParse, what + ": max_concurrent_client_upgrades must be 1..100000");
      }
      s.max_concurrent_client_upgrades = v.get<std::uint32_t>();
    }
    if (j.contains("max_client_upgrade_bandwidth")) {
      const Json& v = j["max_client_upgrade_bandwidth"];
      if (!v.is_number_integer() || v.get<std::int64_t>() < 16384 || v.get<std::int64_t>() > (std::int64_t{1} << 40)) {
        return Error(Errc::kParse, what + ": max_client_upgrade_bandwidth must be 16384..1099511627776 bytes per second");
      }
      s.max_client_upgrade_bandwidth = v.get<std::uint64_t>();
    }
  } catch (const std::exception& e) {
    return Error(Errc::kParse, what + ": " + e.what());
  }
  return s;
}

Json Settings::ToJson() const {
  return Json{{"poll_interval_seconds", poll_interval.count()},
              {"poll_jitter", poll_jitter},
              {"backoff_cap_seconds", backoff_cap.count()},
              {"bandwidth_limit", bandwidth_limit},
              {"maintenance_windows", maintenance_windows},
              {"auto_install", auto_install},
              {"backups_keep", backups_keep},
              {"backup_before_install", backup_before_install},
              {"max_concurrent_client_upgrades", max_concurrent_client_upgrades},
              {"max_client_upgrade_bandwidth", max_client_upgrade_bandwidth}};
}

Status Settings::Set(std::string_view key, std::string_view value) {
  Json j = ToJson();
  const std::string k(key);
  if (!j.contains(k)) return Error(Errc::kInvalidArgument, "unknown setting '" + k + "'");
  if (k == "maintenance_windows") {
    Json list = Json::array();
    std::string_view rest = value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      std::string_view item = rest.substr(0, comma);
      while (!item.empty() && item.front() == ' ') item.remove_prefix(1);
      while (!item.empty() && item.back() == ' ') item.remove_suffix(1);
      if (!item.empty()) list.push_back(std::string(item));
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    j[k] = list;
  } else if (k == "auto_install" || k == "backup_before_install") {
    if (value != "true" && value != "false") {
      return Error(Errc::kInvalidArgument, "setting " + k + ": use true or false");
    }
    j[k] = value == "true";
  } else if (k == "poll_jitter") {
    try {
      std::size_t used = 0;
      const double d = std::stod(std::string(value), &used);
      if (used != value.size()) throw std::invalid_argument("trailing");
      j[k] = d;
    } catch (const std::exception&) {
      return Error(Errc::kInvalidArgument, "setting poll_jitter: '" + std::string(value) + "' is not a number");
    }
  } else {
    UPK_TRY_ASSIGN(std::uint64_t v, ParseUnsigned(value, k));
    j[k] = v;
  }
  auto parsed = FromJson(j);
  if (!parsed.ok()) return Error(Errc::kInvalidArgument, parsed.error().message());
  *this = std::move(*parsed);
  return OkStatus();
}

}  // namespace upkeep::agent
