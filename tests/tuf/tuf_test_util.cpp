#include "tuf_test_util.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>

#include <optional>
#include <stdexcept>

#include "upkeep/common/hash.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::tuf::testing {

struct TestKey::Impl {
  std::optional<packages::PrivateKey> ed25519;
  EVP_PKEY* pkey = nullptr;
  bool pss = false;
  ~Impl() { EVP_PKEY_free(pkey); }
};

namespace {

std::string PemPublic(EVP_PKEY* pkey) {
  BIO* bio = BIO_new(BIO_s_mem());
  if (!bio || PEM_write_bio_PUBKEY(bio, pkey) != 1) throw std::runtime_error("PEM_write_bio_PUBKEY failed");
  char* data = nullptr;
  long n = BIO_get_mem_data(bio, &data);
  std::string pem(data, static_cast<std::size_t>(n));
  BIO_free(bio);
  return pem;
}

std::string ComputeKeyid(const Json& pub) {
  auto k = packages::PublicKey::FromJson(pub);
  if (!k) throw std::runtime_error("test key does not parse: " + k.error().message());
  return k->keyid();
}

std::string RoleFile(const std::string& role, std::optional<std::int64_t> version) {
  std::string name = PercentEncode(role) + ".json";
  if (version) name = std::to_string(*version) + "." + name;
  return "metadata/" + name;
}

}  // namespace

TestKey TestKey::Ed25519() {
  TestKey k;
  k.impl_ = std::make_shared<Impl>();
  k.impl_->ed25519 = packages::PrivateKey::GenerateEd25519();
  k.public_json_ = k.impl_->ed25519->public_key().ToJson();
  k.keyid_ = k.impl_->ed25519->keyid();
  return k;
}

TestKey TestKey::Ecdsa(bool short_keytype) {
  TestKey k;
  k.impl_ = std::make_shared<Impl>();
  k.impl_->pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256");
  if (!k.impl_->pkey) throw std::runtime_error("EC keygen failed");
  k.public_json_ = {{"keytype", short_keytype ? "ecdsa" : "ecdsa-sha2-nistp256"},
                    {"scheme", "ecdsa-sha2-nistp256"},
                    {"keyval", {{"public", PemPublic(k.impl_->pkey)}}}};
  k.keyid_ = ComputeKeyid(k.public_json_);
  return k;
}

TestKey TestKey::RsaPss() {
  TestKey k;
  k.impl_ = std::make_shared<Impl>();
  k.impl_->pkey = EVP_PKEY_Q_keygen(nullptr, nullptr, "RSA", static_cast<std::size_t>(2048));
  if (!k.impl_->pkey) throw std::runtime_error("RSA keygen failed");
  k.impl_->pss = true;
  k.public_json_ = {{"keytype", "rsa"}, {"scheme", "rsassa-pss-sha256"}, {"keyval", {{"public", PemPublic(k.impl_->pkey)}}}};
  k.keyid_ = ComputeKeyid(k.public_json_);
  return k;
}

Bytes TestKey::Sign(std::string_view message) const {
  if (impl_->ed25519) return impl_->ed25519->Sign(message);
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_PKEY_CTX* pctx = nullptr;
  Bytes sig;
  bool ok = ctx && EVP_DigestSignInit(ctx, &pctx, EVP_sha256(), nullptr, impl_->pkey) == 1;
  if (ok && impl_->pss) {
    ok = EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_PSS_PADDING) == 1 &&
         EVP_PKEY_CTX_set_rsa_pss_saltlen(pctx, RSA_PSS_SALTLEN_DIGEST) == 1;
  }
  std::size_t len = 0;
  const auto* msg = reinterpret_cast<const unsigned char*>(message.data());
  ok = ok && EVP_DigestSign(ctx, nullptr, &len, msg, message.size()) == 1;
  if (ok) {
    sig.resize(len);
    ok = EVP_DigestSign(ctx, sig.data(), &len, msg, message.size()) == 1;
    sig.resize(len);
  }
  EVP_MD_CTX_free(ctx);
  if (!ok) throw std::runtime_error("signing failed");
  return sig;
}

RepoSim::RepoSim(SysTime t, bool consistent_snapshot) : now(t) {
  const std::string expires = Expiry(now + std::chrono::days(30));
  root = {{"_type", "root"},
          {"spec_version", "1.0.31"},
          {"version", 1},
          {"expires", Expiry(now + std::chrono::days(365))},
          {"consistent_snapshot", consistent_snapshot},
          {"keys", Json::object()},
          {"roles", Json::object()}};
  for (const char* role : {"root", "timestamp", "snapshot", "targets"}) SetRoleKeys(role, {TestKey::Ed25519()});
  timestamp = {{"_type", "timestamp"}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", expires},
               {"meta", {{"snapshot.json", {{"version", 1}}}}}};
  snapshot = {{"_type", "snapshot"}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", expires},
              {"meta", {{"targets.json", {{"version", 1}}}}}};
  targets["targets"] = {{"_type", "targets"}, {"spec_version", "1.0.31"}, {"version", 1}, {"expires", expires},
                        {"targets", Json::object()}};
  PublishAll();
  initial_root = files.at("metadata/1.root.json");
}

std::string RepoSim::SignEnvelope(const Json& signed_part, const std::vector<TestKey>& keys) {
  std::string canonical = CanonicalJson(signed_part).value();
  Json sigs = Json::array();
  for (const auto& k : keys) sigs.push_back({{"keyid", k.keyid()}, {"sig", ToHex(k.Sign(canonical))}});
  return Json{{"signatures", sigs}, {"signed", signed_part}}.dump(1);
}

void RepoSim::SetRoleKeys(const std::string& role, const std::vector<TestKey>& keys, std::int64_t threshold) {
  Json ids = Json::array();
  for (const auto& k : keys) {
    root["keys"][k.keyid()] = k.PublicJson();
    ids.push_back(k.keyid());
  }
  root["roles"][role] = {{"keyids", ids}, {"threshold", threshold}};
  signers[role] = keys;
}

void RepoSim::BumpRoot(const std::vector<TestKey>& extra) {
  root["version"] = root["version"].get<std::int64_t>() + 1;
  std::vector<TestKey> keys = signers["root"];
  keys.insert(keys.end(), extra.begin(), extra.end());
  std::string bytes = SignEnvelope(root, keys);
  files[RoleFile("root", root["version"].get<std::int64_t>())] = bytes;
  files[RoleFile("root", std::nullopt)] = bytes;
}

std::string RepoSim::Publish(const std::string& role) {
  Json* part = nullptr;
  if (role == "root") {
    part = &root;
  } else if (role == "timestamp") {
    part = &timestamp;
  } else if (role == "snapshot") {
    part = &snapshot;
  } else {
    part = &targets.at(role);
  }
  std::string bytes = SignEnvelope(*part, signers[role]);
  if (role != "timestamp") files[RoleFile(role, (*part)["version"].get<std::int64_t>())] = bytes;
  files[RoleFile(role, std::nullopt)] = bytes;
  return bytes;
}

void RepoSim::AddTarget(const std::string& role, const std::string& path, const std::string& content) {
  std::string sha256 = Sha256Hex(content), sha512 = Sha512Hex(content);
  targets.at(role)["targets"][path] = {{"length", content.size()}, {"hashes", {{"sha256", sha256}, {"sha512", sha512}}}};
  artifacts[path] = content;
  files["targets/" + path] = content;
  auto slash = path.rfind('/');
  std::string dir = slash == std::string::npos ? "" : path.substr(0, slash + 1);
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  files["targets/" + dir + sha256 + "." + name] = content;
  files["targets/" + dir + sha512 + "." + name] = content;
}

void RepoSim::AddDelegation(const std::string& delegator, const std::string& name, const TestKey& key,
                            const std::vector<std::string>& paths, bool terminating,
                            const std::vector<std::string>* hash_prefixes) {
  Json& d = targets.at(delegator);
  if (!d.contains("delegations")) d["delegations"] = {{"keys", Json::object()}, {"roles", Json::array()}};
  d["delegations"]["keys"][key.keyid()] = key.PublicJson();
  Json role = {{"name", name}, {"keyids", {key.keyid()}}, {"threshold", 1}, {"terminating", terminating}};
  if (hash_prefixes) {
    role["path_hash_prefixes"] = *hash_prefixes;
  } else {
    role["paths"] = paths;
  }
  d["delegations"]["roles"].push_back(role);
  if (!targets.count(name)) {
    targets[name] = {{"_type", "targets"}, {"spec_version", "1.0.31"}, {"version", 1},
                     {"expires", Expiry(now + std::chrono::days(30))}, {"targets", Json::object()}};
  }
  signers[name] = {key};
  Publish(name);
}

void RepoSim::BumpTargets(const std::string& role) {
  Json& t = targets.at(role);
  t["version"] = t["version"].get<std::int64_t>() + 1;
  Publish(role);
}

void RepoSim::UpdateSnapshot() {
  Json meta = Json::object();
  for (const auto& [name, part] : targets) {
    std::int64_t v = part["version"].get<std::int64_t>();
    Json m = {{"version", v}};
    if (compute_meta_hashes) {
      const std::string& bytes = files.at(RoleFile(name, v));
      m["length"] = bytes.size();
      m["hashes"] = {{"sha256", Sha256Hex(bytes)}};
    }
    meta[name + ".json"] = m;
  }
  snapshot["meta"] = meta;
  snapshot["version"] = snapshot["version"].get<std::int64_t>() + 1;
  Publish("snapshot");
  UpdateTimestamp();
}

void RepoSim::UpdateTimestamp() {
  std::int64_t v = snapshot["version"].get<std::int64_t>();
  Json m = {{"version", v}};
  if (compute_meta_hashes) {
    const std::string& bytes = files.at(RoleFile("snapshot", v));
    m["length"] = bytes.size();
    m["hashes"] = {{"sha256", Sha256Hex(bytes)}};
  }
  timestamp["meta"]["snapshot.json"] = m;
  timestamp["version"] = timestamp["version"].get<std::int64_t>() + 1;
  Publish("timestamp");
}

void RepoSim::PublishAll() {
  Publish("root");
  for (const auto& [name, part] : targets) Publish(name);
  Publish("snapshot");
  Publish("timestamp");
}

Status FakeFetcher::Stream(const std::string& url, std::uint64_t max_bytes, const Sink& sink) {
  const std::string base = kBaseUrl;
  if (url.compare(0, base.size(), base) != 0) return Error(Errc::kIo, url + ": unknown host");
  const std::string path = url.substr(base.size());
  requests.push_back(path);
  const std::string* body = nullptr;
  auto f = faults_.find(path);
  if (f != faults_.end()) {
    switch (f->second.fault) {
      case Fault::kNotFound: return Error(Errc::kNotFound, url + ": HTTP 404");
      case Fault::kIoError: return Error(Errc::kIo, url + ": connection reset");
      case Fault::kEndless: {
        const std::string chunk(kChunk, 'x');
        std::uint64_t total = 0;
        // The cap is the client's job; this bound only keeps a broken client from spinning forever.
        for (int i = 0; i < (1 << 20); ++i) {
          total += chunk.size();
          if (total > max_bytes) return Error(Errc::kLimit, url + ": more than " + std::to_string(max_bytes) + " bytes");
          bytes_delivered += chunk.size();
          auto st = sink(chunk);
          if (!st) return st;
        }
        return Error(Errc::kIo, url + ": endless data was never cut off");
      }
      case Fault::kReplace: body = &f->second.replacement; break;
      case Fault::kNone: break;
    }
  }
  if (!body) {
    auto it = files_.find(path);
    if (it == files_.end()) return Error(Errc::kNotFound, url + ": HTTP 404");
    body = &it->second;
  }
  std::uint64_t total = 0;
  for (std::size_t off = 0; off < body->size(); off += kChunk) {
    std::string_view chunk = std::string_view(*body).substr(off, kChunk);
    total += chunk.size();
    if (total > max_bytes) return Error(Errc::kLimit, url + ": more than " + std::to_string(max_bytes) + " bytes");
    bytes_delivered += chunk.size();
    UPK_TRY(sink(chunk));
  }
  return OkStatus();
}

std::vector<std::string> MetadataRequests(const std::vector<std::string>& requests) {
  std::vector<std::string> out;
  for (const auto& r : requests) {
    if (r.rfind("metadata/", 0) == 0) out.push_back(r.substr(9));
  }
  return out;
}

}  // namespace upkeep::tuf::testing
