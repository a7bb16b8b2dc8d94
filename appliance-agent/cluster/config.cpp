#include <set>

#include "upkeep/agent/cluster.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/packages/keys.hpp"

namespace upkeep::agent {
namespace {

constexpr std::uint64_t kMaxClusterFileBytes = 1u << 20;

Status OnlyKnown(const Json& j, const std::set<std::string>& known, const std::string& what) {
  if (!j.is_object()) return Error(Errc::kInvalidArgument, what + ": not a JSON object");
  for (const auto& [key, _] : j.items()) {
    if (!known.count(key)) return Error(Errc::kInvalidArgument, what + ": unknown field '" + key + "'");
  }
  return OkStatus();
}

Expected<std::string> Str(const Json& j, const std::string& key, const std::string& what) {
  if (!j.contains(key)) return Error(Errc::kInvalidArgument, what + ": field '" + key + "' is missing");
  if (!j[key].is_string() || j[key].get<std::string>().empty()) {
    return Error(Errc::kInvalidArgument, what + ": field '" + key + "' must be a non-empty string");
  }
  return j[key].get<std::string>();
}

std::filesystem::path Resolve(const std::string& p, const std::filesystem::path& base) {
  std::filesystem::path path(p);
  return path.is_absolute() ? path : base / path;
}

bool ValidName(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                    c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

// "https://host:port" or "https://[v6]:port": requests are built by appending a path.
bool ValidUrl(std::string_view url) {
  if (!url.starts_with("https://") || url.size() > 300) return false;
  std::string_view authority = url.substr(8);
  if (authority.empty() || authority.find_first_of("/?#@ ") != std::string_view::npos) return false;
  for (char c : authority) {
    if (static_cast<unsigned char>(c) <= 0x20 || c == 0x7f) return false;
  }
  return true;
}

Expected<ClusterNode> ParseNode(const Json& j, const std::string& what) {
  UPK_TRY(OnlyKnown(j, {"name", "url", "appliance_id", "public_key"}, what));
  ClusterNode n;
  UPK_TRY_ASSIGN(n.name, Str(j, "name", what));
  if (!ValidName(n.name)) return Error(Errc::kInvalidArgument, what + ": field 'name' must be [A-Za-z0-9._-]{1,64}");
  UPK_TRY_ASSIGN(n.url, Str(j, "url", what));
  if (!ValidUrl(n.url)) {
    return Error(Errc::kInvalidArgument, what + ": field 'url' must be https://HOST:PORT without a path");
  }
  UPK_TRY_ASSIGN(n.appliance_id, Str(j, "appliance_id", what));
  if (!j.contains("public_key")) return Error(Errc::kInvalidArgument, what + ": field 'public_key' is missing");
  auto key = trust::AppliancePublicKey::FromJson(j["public_key"]);
  if (!key.ok()) return Error(Errc::kInvalidArgument, what + ": field 'public_key': " + key.error().message());
  n.public_key = std::move(key).value();
  if (n.public_key.appliance_id() != n.appliance_id) {
    return Error(Errc::kInvalidArgument, what + ": field 'appliance_id' " + n.appliance_id +
                                             " is not the id of its public_key (" + n.public_key.appliance_id() + ")");
  }
  return n;
}

}  // namespace

Expected<ClusterConfig> ClusterConfig::FromJson(const Json& json, const std::filesystem::path& base) {
  const std::string what = "cluster";
  try {
    UPK_TRY(OnlyKnown(json, {"node", "listen", "tls_cert", "tls_key", "ca_file", "nodes"}, what));
    ClusterConfig c;
    UPK_TRY_ASSIGN(c.node, Str(json, "node", what));
    UPK_TRY_ASSIGN(std::string listen, Str(json, "listen", what));
    auto endpoint = net::ParseEndpoint(listen);
    if (!endpoint.ok()) return Error(Errc::kInvalidArgument, what + ": field 'listen': " + endpoint.error().message());
    c.listen = *endpoint;
    c.listen.tls = true;
    UPK_TRY_ASSIGN(std::string cert, Str(json, "tls_cert", what));
    UPK_TRY_ASSIGN(std::string key, Str(json, "tls_key", what));
    UPK_TRY_ASSIGN(std::string ca, Str(json, "ca_file", what));
    c.tls_cert = Resolve(cert, base);
    c.tls_key = Resolve(key, base);
    c.ca_file = Resolve(ca, base);
    if (!json.contains("nodes") || !json["nodes"].is_array() || json["nodes"].empty()) {
      return Error(Errc::kInvalidArgument, what + ": field 'nodes' must be a non-empty array");
    }
    if (json["nodes"].size() > kMaxClusterNodes) {
      return Error(Errc::kInvalidArgument,
                   what + ": field 'nodes' has more than " + std::to_string(kMaxClusterNodes) + " entries");
    }
    std::set<std::string> names, ids;
    for (std::size_t i = 0; i < json["nodes"].size(); ++i) {
      const std::string w = what + ": nodes[" + std::to_string(i) + "]";
      UPK_TRY_ASSIGN(ClusterNode n, ParseNode(json["nodes"][i], w));
      if (!names.insert(n.name).second) return Error(Errc::kInvalidArgument, w + ": field 'name' " + n.name + " twice");
      if (!ids.insert(n.appliance_id).second) {
        return Error(Errc::kInvalidArgument, w + ": field 'appliance_id' " + n.appliance_id + " twice");
      }
      c.nodes.push_back(std::move(n));
    }
    if (!names.count(c.node)) {
      return Error(Errc::kInvalidArgument, what + ": field 'node' " + c.node + " is not one of 'nodes'");
    }
    return c;
  } catch (const std::exception& e) {
    return Error(Errc::kInvalidArgument, what + ": " + e.what());
  }
}

Expected<ClusterConfig> ClusterConfig::Load(const std::filesystem::path& file) {
  auto text = ReadFileBounded(file, kMaxClusterFileBytes);
  if (!text.ok()) return text.error();
  auto json = ParseJson(*text);
  if (!json.ok()) return Error(Errc::kInvalidArgument, file.string() + ": " + json.error().message());
  auto c = FromJson(*json, file.parent_path().empty() ? std::filesystem::path(".") : file.parent_path());
  if (!c.ok()) return c.error().Wrap(file.string());
  return c;
}

const ClusterNode& ClusterConfig::Self() const {
  for (const auto& n : nodes) {
    if (n.name == node) return n;
  }
  return nodes.front();  // unreachable for a parsed config
}

const ClusterNode* ClusterConfig::FindById(std::string_view appliance_id) const {
  for (const auto& n : nodes) {
    if (n.appliance_id == appliance_id) return &n;
  }
  return nullptr;
}

}  // namespace upkeep::agent
