#include "publish_support.hpp"

#include <atomic>
#include <fstream>
#include <stdexcept>

#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/tuf/repository.hpp"

namespace upkeep::updater::test {

namespace fs = std::filesystem;

namespace {

template <typename T>
T Must(Expected<T> value, const std::string& what) {
  if (!value.ok()) throw std::runtime_error(what + ": " + value.error().message());
  return std::move(value).value();
}

std::string Sha512OfFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  Hasher h(HashAlgorithm::kSha512);
  std::string buf(1 << 16, '\0');
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    if (in.gcount() > 0) h.Update(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
  }
  return h.FinishHex();
}

Json RoleDef(const std::vector<std::string>& ids) {
  Json keyids = Json::array();
  for (const auto& id : ids) keyids.push_back(id);
  return Json{{"keyids", keyids}, {"threshold", 1}};
}

}  // namespace

const OfflineKeys& TestKeys() {
  static const OfflineKeys keys{packages::PrivateKey::GenerateEd25519(), packages::PrivateKey::GenerateEd25519()};
  return keys;
}

Json MakeRoot(ServiceFixture& f, std::int64_t version, const std::vector<packages::PrivateKey>& signers,
              const std::vector<packages::PrivateKey>& root_keys, const packages::PrivateKey* targets_key) {
  const std::vector<packages::PrivateKey> roots = root_keys.empty() ? std::vector{TestKeys().root} : root_keys;
  const packages::PrivateKey& targets = targets_key ? *targets_key : TestKeys().targets;
  Json keys = Json::object();
  std::vector<std::string> root_ids;
  for (const auto& k : roots) {
    keys[k.keyid()] = k.public_key().ToJson();
    root_ids.push_back(k.keyid());
  }
  keys[targets.keyid()] = targets.public_key().ToJson();
  const auto& snapshot = f.keyserver().snapshot_key();
  const auto& timestamp = f.keyserver().timestamp_key();
  keys[snapshot.keyid()] = snapshot.public_key().ToJson();
  keys[timestamp.keyid()] = timestamp.public_key().ToJson();
  Json root{{"_type", "root"},
            {"spec_version", tuf::kSpecVersion},
            {"version", version},
            {"expires", FormatTimestamp(SystemClock::Instance().Now() + std::chrono::hours(24 * 365))},
            {"consistent_snapshot", true},
            {"keys", keys},
            {"roles",
             {{"root", RoleDef(root_ids)},
              {"targets", RoleDef({targets.keyid()})},
              {"snapshot", RoleDef({snapshot.keyid()})},
              {"timestamp", RoleDef({timestamp.keyid()})}}}};
  return Must(tuf::SignMetadata(root, signers), "sign root");
}

Json MakeTargets(std::int64_t version, const Json& targets, const packages::PrivateKey& key) {
  Json signed_part{{"_type", "targets"},
                   {"spec_version", tuf::kSpecVersion},
                   {"version", version},
                   {"expires", FormatTimestamp(SystemClock::Instance().Now() + std::chrono::hours(24 * 90))},
                   {"targets", targets}};
  return Must(tuf::SignMetadata(signed_part, {key}), "sign targets");
}

Reply Bootstrap(ServiceFixture& f) {
  Json body{{"root", MakeRoot(f, 1, {TestKeys().root})},
            {"targets", MakeTargets(1, Json::object(), TestKeys().targets)}};
  return f.Call("POST", "/api/v1/repository/root", body.dump(), f.token("admin"));
}

Json CurrentTargets(ServiceFixture& f) {
  Reply r = f.Call("GET", "/api/v1/repository", "", f.token("support"));
  if (r.status != 200 || !r.json["targets"].is_object()) {
    throw std::runtime_error("GET /api/v1/repository: " + std::to_string(r.status) + " " + r.body);
  }
  return r.json["targets"];
}

PreparedRelease PrepareRelease(ServiceFixture& f, const ReleaseSpec& spec, bool upload) {
  static std::atomic<int> counter{0};
  const fs::path work = f.dir() / ("publish-" + std::to_string(counter++));
  fs::create_directories(work / "payload/bin");
  { std::ofstream(work / "payload/bin/app") << "#!/bin/sh\necho " << spec.name << " " << spec.version << "\n"; }
  packages::PackSpec pack;
  pack.manifest.name = spec.name;
  pack.manifest.version = Must(packages::Version::Parse(spec.version), "version");
  pack.manifest.kind = Must(packages::ParseKind(spec.kind), "kind");
  pack.manifest.description = "test release " + spec.name + " " + spec.version;
  if (!spec.extra_manifest.empty()) {
    Json full = pack.manifest.ToJson();
    for (const auto& [k, v] : spec.extra_manifest.items()) full[k] = v;
    pack.manifest = Must(packages::Manifest::FromJson(full), "manifest with extra fields");
  }
  pack.payload_dir = work / "payload";

  PreparedRelease out;
  out.package = work / (spec.name + "-" + spec.version + ".upk");
  Must(packages::WritePackage(pack, {TestKeys().targets}, out.package), "write package");
  auto reader = Must(packages::PackageReader::OpenFile(out.package), "read package");
  out.manifest_bytes = reader.manifest_bytes();
  out.signature_bytes = packages::SerializeSignatureFile(reader.signatures());

  out.content_key = std::make_shared<trust::ContentKey>(trust::ContentKey::Generate());
  out.blob = work / (spec.name + "-" + spec.version + ".upk.enc");
  auto info = Must(trust::EncryptFile(out.package, out.blob, *out.content_key), "encrypt");
  out.sha256 = info.blob_sha256_hex;
  out.length = info.blob_bytes;
  out.sha512 = Sha512OfFile(out.blob);
  out.target_path = spec.name + "/" + spec.name + "-" + spec.version + ".upk.enc";

  if (upload) {
    std::ifstream in(out.blob, std::ios::binary);
    const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    Reply put = f.Call("PUT", "/api/v1/blobs/sha256/" + out.sha256, bytes, f.token("publisher"));
    if (put.status != 201 && put.status != 200) {
      throw std::runtime_error("PUT blob: " + std::to_string(put.status) + " " + put.body);
    }
  }

  const std::string sealed = trust::SealContentKey(*out.content_key, f.keyserver().content_identity().public_key());
  Json current = CurrentTargets(f);
  Json targets = current["signed"]["targets"];
  targets[out.target_path] =
      Json{{"length", out.length},
           {"hashes", {{"sha256", out.sha256}, {"sha512", out.sha512}}},
           {"custom",
            {{"upkeep", {{"name", spec.name}, {"version", spec.version}, {"kind", spec.kind}, {"encrypted", true}}}}}};
  Json channels = Json::array();
  for (const auto& c : spec.channels) channels.push_back(c);
  out.body =
      Json{{"targets", MakeTargets(current["signed"]["version"].get<std::int64_t>() + 1, targets, TestKeys().targets)},
           {"target_path", out.target_path},
           {"manifest", Base64Encode(out.manifest_bytes)},
           {"manifest_signature", Base64Encode(out.signature_bytes)},
           {"sealed_content_key", sealed},
           {"channels", channels}};
  return out;
}

PublishedRelease PublishRelease(ServiceFixture& f, const ReleaseSpec& spec) {
  PublishedRelease out;
  out.prepared = PrepareRelease(f, spec);
  out.reply = f.Call("POST", "/api/v1/releases", out.prepared.body.dump(), f.token("publisher"));
  return out;
}

}  // namespace upkeep::updater::test
