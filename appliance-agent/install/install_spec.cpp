// Strict parsing of the manifest's `install` object.
#include "upkeep/agent/install_spec.hpp"

#include <set>

namespace upkeep::agent {
namespace {

using packages::EntryType;
using packages::Manifest;
using packages::PayloadEntry;

Error ParseErr(const std::string& field, const std::string& why) {
  return Error(Errc::kParse, "manifest.json: install: field '" + field + "': " + why);
}
Error PolicyErr(const std::string& field, const std::string& why) {
  return Error(Errc::kPolicy, "manifest.json: install: field '" + field + "': " + why);
}

const PayloadEntry* FindEntry(const Manifest& m, std::string_view path) {
  for (const auto& e : m.payload) {
    if (e.path == path) return &e;
  }
  return nullptr;
}

// A relative payload path naming a regular-file entry, executable when `exec` is set.
Status CheckPayloadFile(const Manifest& m, const std::string& field, const std::string& path, bool exec) {
  if (path.empty()) return ParseErr(field, "must not be empty");
  if (path.front() == '/') return PolicyErr(field, "'" + path + "' is absolute; commands are payload paths");
  if (auto s = packages::CheckRelativePath(path); !s) return PolicyErr(field, s.error().message());
  const PayloadEntry* e = FindEntry(m, path);
  if (!e) return PolicyErr(field, "'" + path + "' is not a payload entry");
  if (e->type != EntryType::kFile) return PolicyErr(field, "'" + path + "' is not a regular file entry");
  if (exec && (e->mode & 0111) == 0) return PolicyErr(field, "'" + path + "' is not executable (mode has no x bit)");
  return OkStatus();
}

Expected<HookSpec> ParseHook(const Json& j, const std::string& field, const Manifest& m) {
  if (!j.is_object()) return ParseErr(field, "must be an object");
  for (auto it = j.begin(); it != j.end(); ++it) {
    if (it.key() != "command" && it.key() != "timeout_seconds")
      return ParseErr(field + "." + it.key(), "unknown field");
  }
  HookSpec hook;
  auto cmd = j.find("command");
  if (cmd == j.end()) return ParseErr(field + ".command", "missing");
  if (!cmd->is_array()) return ParseErr(field + ".command", "must be an array of strings");
  if (cmd->empty()) return ParseErr(field + ".command", "must not be empty");
  if (cmd->size() > kMaxCommandArgs)
    return Error(Errc::kLimit, "manifest.json: install: field '" + field + ".command': more than " +
                                   std::to_string(kMaxCommandArgs) + " arguments");
  for (const auto& arg : *cmd) {
    if (!arg.is_string()) return ParseErr(field + ".command", "must be an array of strings");
    const auto& s = arg.get_ref<const std::string&>();
    if (s.size() > kMaxCommandArgBytes)
      return Error(Errc::kLimit, "manifest.json: install: field '" + field + ".command': argument longer than " +
                                     std::to_string(kMaxCommandArgBytes) + " bytes");
    if (s.find('\0') != std::string::npos) return ParseErr(field + ".command", "argument contains a NUL byte");
    hook.command.push_back(s);
  }
  UPK_TRY(CheckPayloadFile(m, field + ".command[0]", hook.command[0], true));
  if (auto t = j.find("timeout_seconds"); t != j.end()) {
    if (!t->is_number_integer()) return ParseErr(field + ".timeout_seconds", "must be an integer");
    std::int64_t v = t->is_number_unsigned() && t->get<std::uint64_t>() > static_cast<std::uint64_t>(INT64_MAX)
                         ? INT64_MAX
                         : t->get<std::int64_t>();
    if (v < 1 || v > kMaxHookTimeoutSeconds) return PolicyErr(field + ".timeout_seconds", "must be within 1..3600");
    hook.timeout = std::chrono::seconds(v);
  }
  return hook;
}

}  // namespace

const char* HandlerKindName(HandlerKind kind) {
  switch (kind) {
    case HandlerKind::kFiles:
      return "files";
    case HandlerKind::kImage:
      return "image";
    case HandlerKind::kModule:
      return "module";
  }
  return "?";
}

Expected<HandlerKind> ParseHandlerKind(std::string_view text) {
  if (text == "files") return HandlerKind::kFiles;
  if (text == "image") return HandlerKind::kImage;
  if (text == "module") return HandlerKind::kModule;
  return Error(Errc::kParse,
               "unknown install handler '" + std::string(text.substr(0, 64)) + "' (files, image, module)");
}

Expected<InstallSpec> InstallSpec::FromManifest(const Manifest& manifest) {
  if (!manifest.extra.is_object()) return InstallSpec{};
  auto it = manifest.extra.find("install");
  if (it == manifest.extra.end()) return InstallSpec{};
  return FromJson(*it, manifest);
}

Expected<InstallSpec> InstallSpec::FromJson(const Json& j, const Manifest& m) {
  try {
    if (!j.is_object()) return Error(Errc::kParse, "manifest.json: field 'install': must be an object");
    static const std::set<std::string> kKnown = {"handler",     "image",        "module",
                                                 "pre_install", "post_install", "health_check"};
    for (auto it = j.begin(); it != j.end(); ++it) {
      if (!kKnown.count(it.key())) return ParseErr(it.key(), "unknown field");
    }
    InstallSpec spec;
    if (auto h = j.find("handler"); h != j.end()) {
      if (!h->is_string()) return ParseErr("handler", "must be a string");
      auto kind = ParseHandlerKind(h->get_ref<const std::string&>());
      if (!kind) return ParseErr("handler", kind.error().message());
      spec.handler = *kind;
    }
    auto image = j.find("image");
    auto module = j.find("module");
    if (image != j.end()) {
      if (spec.handler != HandlerKind::kImage) return PolicyErr("image", "only allowed with handler \"image\"");
      if (!image->is_string()) return ParseErr("image", "must be a string");
      spec.image = image->get<std::string>();
    }
    if (module != j.end()) {
      if (spec.handler != HandlerKind::kModule) return PolicyErr("module", "only allowed with handler \"module\"");
      if (!module->is_string()) return ParseErr("module", "must be a string");
      spec.module = module->get<std::string>();
    }
    if (spec.handler == HandlerKind::kImage) {
      if (image == j.end()) return ParseErr("image", "missing (required by handler \"image\")");
      UPK_TRY(CheckPayloadFile(m, "image", spec.image, false));
    }
    if (spec.handler == HandlerKind::kModule) {
      if (module == j.end()) return ParseErr("module", "missing (required by handler \"module\")");
      UPK_TRY(CheckPayloadFile(m, "module", spec.module, true));
    }
    for (auto [field, slot] :
         {std::pair{"pre_install", &spec.pre_install}, std::pair{"post_install", &spec.post_install},
          std::pair{"health_check", &spec.health_check}}) {
      auto h = j.find(field);
      if (h == j.end()) continue;
      UPK_TRY_ASSIGN(HookSpec hook, ParseHook(*h, field, m));
      // An image's hooks run from meta/VERSION, which holds everything but the image.
      if (spec.handler == HandlerKind::kImage && hook.command[0] == spec.image) {
        return PolicyErr(std::string(field) + ".command[0]", "must not be the image entry");
      }
      *slot = std::move(hook);
    }
    return spec;
  } catch (const std::exception& e) {
    return Error(Errc::kParse, std::string("manifest.json: install: ") + e.what());
  }
}

Json InstallSpec::ToJson() const {
  Json j = Json::object();
  j["handler"] = HandlerKindName(handler);
  if (handler == HandlerKind::kImage) j["image"] = image;
  if (handler == HandlerKind::kModule) j["module"] = module;
  auto hook = [](const HookSpec& h) {
    Json o = Json::object();
    o["command"] = h.command;
    o["timeout_seconds"] = h.timeout.count();
    return o;
  };
  if (pre_install) j["pre_install"] = hook(*pre_install);
  if (post_install) j["post_install"] = hook(*post_install);
  if (health_check) j["health_check"] = hook(*health_check);
  return j;
}

}  // namespace upkeep::agent
