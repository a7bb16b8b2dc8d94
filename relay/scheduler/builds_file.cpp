#include "upkeep/relay/builds_file.hpp"

#include <string>
#include <system_error>
#include <utility>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/relay/build_signature.hpp"

namespace upkeep::relay {

namespace {
constexpr std::uint64_t kMaxBuildsFileBytes = 1 << 20;
}

Expected<std::vector<ClientBuild>> LoadClientBuilds(const std::filesystem::path& file, bool confined) {
  UPK_TRY_ASSIGN(auto text, ReadFileBounded(file, kMaxBuildsFileBytes));
  auto json = ParseJson(text);
  if (!json.ok()) return json.error().Wrap(file.string());
  if (!json->is_object()) return Error(Errc::kParse, file.string() + ": not a JSON object");
  auto list = GetArray(*json, "builds");
  if (!list.ok()) return list.error().Wrap(file.string());
  if ((*list)->size() > kMaxClientBuilds) {
    return Error(Errc::kLimit, file.string() + ": more than " + std::to_string(kMaxClientBuilds) + " builds");
  }
  std::vector<ClientBuild> out;
  for (std::size_t i = 0; i < (*list)->size(); ++i) {
    const Json& e = (**list)[i];
    const std::string where = file.string() + ": build " + std::to_string(i);
    if (!e.is_object()) return Error(Errc::kParse, where + ": not an object");
    ClientBuild b;
    std::string path;
    for (auto [key, dst] : {std::pair<const char*, std::string*>{"platform", &b.platform}, {"version", &b.version},
                            {"path", &path}, {"sha256", &b.sha256}, {"signature", &b.signature}}) {
      auto v = GetString(e, key);
      if (!v.ok()) return v.error().Wrap(where);
      *dst = *v;
    }
    if (confined) {
      if (auto st = packages::CheckRelativePath(path); !st.ok()) return st.error().Wrap(where + ": field 'path'");
    }
    b.path = std::filesystem::path(path).is_absolute() ? std::filesystem::path(path) : file.parent_path() / path;
    std::error_code ec;
    const auto size = std::filesystem::file_size(b.path, ec);
    if (ec) return Error(Errc::kNotFound, where + ": " + b.path.string() + ": " + ec.message());
    b.length = size;
    out.push_back(std::move(b));
  }
  return out;
}

Expected<Json> AddSignedClientBuild(const std::filesystem::path& list_path, const std::filesystem::path& build_path,
                                    std::string_view platform, std::string_view version,
                                    const packages::PrivateKey& key, bool confined) {
  namespace fs = std::filesystem;
  std::error_code ec;
  const fs::path list = fs::absolute(list_path, ec).lexically_normal();
  const fs::path build = fs::absolute(build_path, ec).lexically_normal();
  std::string path = build.string();
  if (confined) {
    path = build.lexically_relative(list.parent_path()).generic_string();
    if (path.empty() || !packages::CheckRelativePath(path).ok()) {
      return Error(Errc::kInvalidArgument, build_path.string() + ": must be inside " + list.parent_path().string() +
                                               " (the package payload its builds list belongs to)");
    }
  }
  UPK_TRY_ASSIGN(auto digest, HashFile(build));
  const Json entry = {{"platform", std::string(platform)},
                      {"version", std::string(version)},
                      {"path", path},
                      {"sha256", digest.sha256_hex},
                      {"signature", ToHex(key.Sign(BuildSigningMessage(platform, version, digest.sha256_hex)))}};
  Json doc = {{"builds", Json::array()}};
  if (fs::exists(list, ec)) {
    if (auto existing = LoadClientBuilds(list, confined); !existing.ok()) return existing.error();
    UPK_TRY_ASSIGN(auto text, ReadFileBounded(list, kMaxBuildsFileBytes));
    UPK_TRY_ASSIGN(doc, ParseJson(text));
  }
  Json kept = Json::array();
  for (const auto& e : doc["builds"]) {
    if (e.value("platform", "") != platform) kept.push_back(e);
  }
  kept.push_back(entry);
  doc["builds"] = std::move(kept);
  const fs::path check = list.parent_path() / ("." + list.filename().string() + ".check");
  UPK_TRY(WriteFileAtomic(check, doc.dump(2) + "\n"));
  auto checked = LoadClientBuilds(check, confined);
  fs::remove(check, ec);
  if (!checked.ok()) return checked.error().Wrap(list.string());
  UPK_TRY(WriteFileAtomic(list, doc.dump(2) + "\n", 0644));
  return entry;
}

}  // namespace upkeep::relay
