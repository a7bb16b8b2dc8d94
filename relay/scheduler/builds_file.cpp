#include "upkeep/relay/builds_file.hpp"

#include <string>
#include <system_error>
#include <utility>

#include "upkeep/common/files.hpp"
#include "upkeep/common/json.hpp"
#include "upkeep/packages/manifest.hpp"

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

}  // namespace upkeep::relay
