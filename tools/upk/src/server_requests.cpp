#include "server_requests.hpp"

#include <charconv>
#include <set>

namespace upkeep::upk {

namespace {

Json RoleDefinition(const std::vector<packages::PublicKey>& keys, int threshold, Json& key_map) {
  std::set<std::string> ids;  // sorted and unique, as `upk repo init` writes them
  for (const auto& k : keys) {
    key_map[k.keyid()] = k.ToJson();
    ids.insert(k.keyid());
  }
  return Json{{"keyids", Json(std::vector<std::string>(ids.begin(), ids.end()))}, {"threshold", threshold}};
}

Json Common(const char* type, std::int64_t version, SysTime expires) {
  return Json{{"_type", type},
              {"spec_version", tuf::kSpecVersion},
              {"version", version},
              {"expires", FormatTimestamp(expires)}};
}

// Checks the parts of a current targets `signed` object that N+1 is built from.
Expected<Json> NextTargets(const Json& current, SysTime expires) {
  if (!current.is_object() || !current.contains("_type") || current["_type"] != "targets") {
    return Error(Errc::kParse, "the updater's current targets metadata is not targets metadata");
  }
  if (!current.contains("version") || !current["version"].is_number_integer() ||
      current["version"].get<std::int64_t>() < 1) {
    return Error(Errc::kParse, "the updater's current targets metadata has no valid version");
  }
  if (!current.contains("targets") || !current["targets"].is_object()) {
    return Error(Errc::kParse, "the updater's current targets metadata has no 'targets' object");
  }
  Json next = current;
  next["version"] = current["version"].get<std::int64_t>() + 1;
  next["expires"] = FormatTimestamp(expires);
  return next;
}

}  // namespace

Expected<Json> BuildBootstrapRoot(const std::vector<packages::PublicKey>& root_keys, int root_threshold,
                                  const std::vector<packages::PublicKey>& targets_keys,
                                  const packages::PublicKey& snapshot_key, const packages::PublicKey& timestamp_key,
                                  SysTime expires) {
  if (root_keys.empty()) return Error(Errc::kInvalidArgument, "bootstrap needs at least one root key");
  if (targets_keys.empty()) return Error(Errc::kInvalidArgument, "bootstrap needs at least one targets key");
  std::set<std::string> distinct;
  for (const auto& k : root_keys) distinct.insert(k.keyid());
  if (root_threshold < 1 || static_cast<std::size_t>(root_threshold) > distinct.size()) {
    return Error(Errc::kInvalidArgument, "--root-threshold " + std::to_string(root_threshold) +
                                             " must be between 1 and the " + std::to_string(distinct.size()) +
                                             " distinct root key(s) given");
  }
  // The same construction as RepositoryWriter::Init (packages/tuf/repository.cpp), whose helpers
  // are private; here the online roles' keys are public keys from the keyserver.
  Json keys = Json::object();
  Json roles = Json::object();
  roles["root"] = RoleDefinition(root_keys, root_threshold, keys);
  roles["targets"] = RoleDefinition(targets_keys, 1, keys);
  roles["snapshot"] = RoleDefinition({snapshot_key}, 1, keys);
  roles["timestamp"] = RoleDefinition({timestamp_key}, 1, keys);
  Json root = Common("root", 1, expires);
  root["consistent_snapshot"] = true;
  root["keys"] = keys;
  root["roles"] = roles;
  return root;
}

Json BuildEmptyTargets(SysTime expires) { return tuf::TargetsSigned(1, expires, {}); }

Expected<tuf::ExpiryPolicy> ParseBootstrapExpires(const std::vector<std::string>& values) {
  tuf::ExpiryPolicy policy;
  for (const auto& value : values) {
    std::string_view rest = value;
    while (!rest.empty()) {
      const auto comma = rest.find(',');
      const std::string_view item = rest.substr(0, comma);
      rest = comma == std::string_view::npos ? std::string_view() : rest.substr(comma + 1);
      if (item.rfind("root=", 0) != 0 && item.rfind("targets=", 0) != 0) {
        return Error(Errc::kInvalidArgument, "--expires " + std::string(item) +
                                                 ": only root=DAYS and targets=DAYS (the keyserver signs snapshot "
                                                 "and timestamp)");
      }
      if (auto s = policy.Override(item); !s) return s.error().Wrap("--expires");
    }
  }
  return policy;
}

std::string ReleaseTargetPath(const packages::Manifest& manifest) { return tuf::PackageTargetPath(manifest) + ".enc"; }

Json ReleaseCustom(const packages::Manifest& manifest) {
  Json custom = tuf::PackageCustom(manifest);
  custom["upkeep"]["encrypted"] = true;
  return custom;
}

Expected<Json> BuildPublishTargets(const Json& current_signed, const tuf::TargetInfo& target, SysTime expires) {
  UPK_TRY(tuf::CheckTargetPath(target.path));
  UPK_TRY_ASSIGN(Json next, NextTargets(current_signed, expires));
  if (next["targets"].contains(target.path)) {
    return Error(Errc::kPolicy, target.path + " is already listed in the updater's targets (the release exists)");
  }
  next["targets"][target.path] = target.ToJson();
  return next;
}

Expected<Json> BuildYankTargets(const Json& current_signed, const std::string& target_path, SysTime expires) {
  UPK_TRY_ASSIGN(Json next, NextTargets(current_signed, expires));
  if (!next["targets"].contains(target_path)) {
    return Error(Errc::kNotFound, target_path + " is not listed in the updater's current targets (already yanked?)");
  }
  next["targets"].erase(target_path);
  return next;
}

Expected<Json> ParseWave(std::string_view spec) {
  if (spec.rfind("group:", 0) == 0) {
    std::string_view rest = spec.substr(6);
    Json groups = Json::array();
    while (true) {
      const auto comma = rest.find(',');
      const std::string_view g = rest.substr(0, comma);
      if (g.empty()) return Error(Errc::kInvalidArgument, "--wave " + std::string(spec) + ": empty group name");
      groups.push_back(std::string(g));
      if (comma == std::string_view::npos) break;
      rest = rest.substr(comma + 1);
    }
    return Json{{"groups", groups}};
  }
  std::string_view digits = spec;
  if (!digits.empty() && digits.back() == '%') digits.remove_suffix(1);
  int percent = 0;
  auto [end, ec] = std::from_chars(digits.data(), digits.data() + digits.size(), percent);
  if (digits.empty() || ec != std::errc() || end != digits.data() + digits.size() || percent < 1 || percent > 100) {
    return Error(Errc::kInvalidArgument,
                 "--wave " + std::string(spec) + ": expected a percentage 1..100 or group:NAME[,NAME...]");
  }
  return Json{{"percent", percent}};
}

}  // namespace upkeep::upk
