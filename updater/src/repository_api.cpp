// The repository half of the operator API (docs/updater-api.md, "Repository and publishing" and
// "Channels"): bootstrap and root rotation, blobs, releases, yanks, channels, the /repo/ file
// routes, and the background job that keeps snapshot and timestamp fresh.
//
// Every repository write (bootstrap, rotation, publish, yank, refresh) runs in one transaction
// that first takes the repository advisory lock, checks the posted metadata against the newest
// stored versions, has the keyserver sign the new snapshot and timestamp, and inserts it all with
// the audit row. The files are written after commit (repository_store.hpp).
#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <set>

#include "context.hpp"
#include "fleet_state.hpp"
#include "repository_store.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/tuf/metadata.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/updater/repository_routes.hpp"

namespace upkeep::updater {

using net::ApiError;
using net::Method;
using net::Request;
using net::Response;
namespace fs = std::filesystem;

namespace {

constexpr std::size_t kSealedContentKeyBytes = 80;  // crypto_box_seal of a 32-byte key
constexpr std::size_t kMaxChannelsPerRelease = 64;
constexpr std::size_t kMaxReasonBytes = 1000;
constexpr std::size_t kMaxDescriptionBytes = 1000;
constexpr std::chrono::seconds kRefreshInterval{60};

bool IsLowerHex(std::string_view s, std::size_t n) {
  if (s.size() != n) return false;
  for (char c : s) {
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  }
  return true;
}

bool IsChannelName(std::string_view s) {
  if (s.empty() || s.size() > 32) return false;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9');
    if (!alnum && !(i > 0 && c == '-')) return false;
  }
  return true;
}

Status CheckText(std::string_view what, std::string_view s, std::size_t max) {
  if (s.size() > max)
    return Error(Errc::kInvalidArgument, std::string(what) + " is longer than " + std::to_string(max) + " bytes");
  for (char ch : s) {
    if (static_cast<unsigned char>(ch) < 0x20 || ch == 0x7f) {
      return Error(Errc::kInvalidArgument, std::string(what) + " must not hold control characters");
    }
  }
  return OkStatus();
}

// Sets the answer of a rejected transaction and returns the error that rolls it back.
Error Refuse(std::optional<Response>& reject, int status, std::string_view code, const std::string& message) {
  reject = ApiError(status, code, message);
  return Error(Errc::kPolicy, message);
}

Json VersionsJson(std::int64_t root, std::int64_t targets, std::int64_t snapshot, std::int64_t timestamp) {
  return Json{{"root", root}, {"targets", targets}, {"snapshot", snapshot}, {"timestamp", timestamp}};
}

// A posted metadata envelope {"signatures": [...], "signed": {...}} with nothing else.
Status CheckEnvelope(const Json& md, std::string_view role) {
  if (!md.is_object()) return Error(Errc::kParse, std::string(role) + ": must be a JSON object");
  for (const auto& [key, value] : md.items()) {
    if (key != "signatures" && key != "signed")
      return Error(Errc::kParse, std::string(role) + ": unknown field '" + key + "'");
  }
  if (!md.contains("signed") || !md["signed"].is_object())
    return Error(Errc::kParse, std::string(role) + ": no 'signed' object");
  if (!md.contains("signatures") || !md["signatures"].is_array()) {
    return Error(Errc::kParse, std::string(role) + ": no 'signatures' array");
  }
  return OkStatus();
}

// Posted targets metadata, parsed: the envelope, its version and expiry, and its entries.
struct PostedTargets {
  Json md;
  std::int64_t version = 0;
  SysTime expires{};
  std::map<std::string, tuf::TargetInfo> targets;
};

Expected<std::map<std::string, tuf::TargetInfo>> TargetInfos(const Json& signed_targets) {
  std::map<std::string, tuf::TargetInfo> out;
  if (!signed_targets.contains("targets") || !signed_targets["targets"].is_object()) {
    return Error(Errc::kParse, "targets: no 'targets' object");
  }
  for (const auto& [path, entry] : signed_targets["targets"].items()) {
    UPK_TRY_ASSIGN(tuf::TargetInfo info, tuf::TargetInfo::FromJson(path, entry));
    out.emplace(path, std::move(info));
  }
  return out;
}

Expected<PostedTargets> ParseTargets(const Json& md, SysTime now) {
  UPK_TRY(CheckEnvelope(md, "targets"));
  auto parsed = tuf::Targets::FromJson(md["signed"]);
  if (!parsed.ok()) return parsed.error().Wrap("targets");
  if (parsed->delegations) return Error(Errc::kParse, "targets: delegations are not supported by the updater");
  if (parsed->IsExpired(now)) {
    return Error(Errc::kParse, "targets: expires " + FormatTimestamp(parsed->expires) + ", which is not in the future");
  }
  PostedTargets out;
  out.md = md;
  out.version = parsed->version;
  out.expires = parsed->expires;
  UPK_TRY_ASSIGN(out.targets, TargetInfos(md["signed"]));
  return out;
}

// The public keys of the root's targets role and its threshold (for manifest signatures).
Expected<std::pair<std::vector<packages::PublicKey>, std::size_t>> TargetsKeys(const Json& root_signed) {
  UPK_TRY_ASSIGN(tuf::Root root, tuf::Root::FromJson(root_signed));
  const auto& role = root.roles.at(tuf::kTargetsRole);
  std::vector<packages::PublicKey> keys;
  for (const auto& id : role.keyids) {
    auto it = root.keys.find(id);
    if (it != root.keys.end() && it->second) keys.push_back(*it->second);
  }
  return std::make_pair(std::move(keys), static_cast<std::size_t>(role.threshold));
}

// The updater signs snapshot and timestamp through the keyserver, so a root must delegate both
// roles to exactly the keyserver's keys (threshold 1), or clients would refuse what it serves.
Status CheckOnlineRoles(const Json& root_signed, const RepositoryStore& store) {
  UPK_TRY_ASSIGN(tuf::Root root, tuf::Root::FromJson(root_signed));
  for (const auto& [role, key] : {std::pair<const char*, const OnlineKey*>{tuf::kSnapshotRole, &store.snapshot_key()},
                                  {tuf::kTimestampRole, &store.timestamp_key()}}) {
    const auto& def = root.roles.at(role);
    const bool listed = std::find(def.keyids.begin(), def.keyids.end(), key->keyid) != def.keyids.end();
    auto it = root.keys.find(key->keyid);
    const bool same_key = it != root.keys.end() && it->second && it->second->keyid() == key->keyid;
    if (!listed || !same_key || def.threshold != 1) {
      return Error(Errc::kParse, std::string("root: the ") + role + " role must list the keyserver's " + role +
                                     " key " + key->keyid.substr(0, 12) + " with threshold 1");
    }
  }
  return OkStatus();
}

Expected<std::string> SerializePosted(const Json& md) { return tuf::SerializeMetadata(md); }

// RELEASE rows: the columns every query selects, and their JSON form.
constexpr const char* kReleaseColumns =
    "r.name, r.version, r.kind, r.target_path, r.blob_length, r.blob_sha256, r.published_at, r.published_by, "
    "r.yanked_at, r.yank_reason, r.manifest, "
    "coalesce((SELECT json_agg(cr.channel ORDER BY cr.channel) FROM channel_releases cr "
    "WHERE cr.name = r.name AND cr.version = r.version)::text, '[]') AS channels";

Expected<Json> ReleaseJson(const db::Result& r, int i) {
  UPK_TRY_ASSIGN(std::string name, r.Get<std::string>(i, "name"));
  UPK_TRY_ASSIGN(std::string version, r.Get<std::string>(i, "version"));
  UPK_TRY_ASSIGN(std::string kind, r.Get<std::string>(i, "kind"));
  UPK_TRY_ASSIGN(std::string target_path, r.Get<std::string>(i, "target_path"));
  UPK_TRY_ASSIGN(std::int64_t length, r.Get<std::int64_t>(i, "blob_length"));
  UPK_TRY_ASSIGN(std::string sha256, r.Get<std::string>(i, "blob_sha256"));
  UPK_TRY_ASSIGN(SysTime published_at, r.Get<SysTime>(i, "published_at"));
  UPK_TRY_ASSIGN(std::string published_by, r.Get<std::string>(i, "published_by"));
  UPK_TRY_ASSIGN(std::optional<SysTime> yanked_at, r.GetOptional<SysTime>(i, "yanked_at"));
  UPK_TRY_ASSIGN(std::optional<std::string> yank_reason, r.GetOptional<std::string>(i, "yank_reason"));
  UPK_TRY_ASSIGN(std::string manifest_text, r.Get<std::string>(i, "manifest"));
  UPK_TRY_ASSIGN(std::string channels_text, r.Get<std::string>(i, "channels"));
  UPK_TRY_ASSIGN(Json manifest, ParseJson(manifest_text));
  UPK_TRY_ASSIGN(Json channels, ParseJson(channels_text));
  return Json{{"name", name},
              {"version", version},
              {"kind", kind},
              {"target_path", target_path},
              {"length", length},
              {"sha256", sha256},
              {"channels", channels},
              {"published_at", FormatTimestamp(published_at)},
              {"published_by", published_by},
              {"yanked_at", yanked_at ? Json(FormatTimestamp(*yanked_at)) : Json(nullptr)},
              {"yank_reason", yank_reason ? Json(*yank_reason) : Json(nullptr)},
              {"manifest", manifest}};
}

Expected<std::optional<Json>> LoadRelease(db::Connection& c, std::string_view name, std::string_view version) {
  UPK_TRY_ASSIGN(db::Result r, c.Exec(std::string("SELECT ") + kReleaseColumns +
                                          " FROM releases r WHERE r.name = $1 AND r.version = $2",
                                      name, version));
  if (r.rows() == 0) return std::optional<Json>();
  UPK_TRY_ASSIGN(Json release, ReleaseJson(r, 0));
  return std::optional<Json>(std::move(release));
}

Expected<std::string> Sha512OfFile(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return Error(Errc::kIo, path.string() + ": cannot open");
  Hasher hasher(HashAlgorithm::kSha512);
  std::string buffer(1 << 20, '\0');
  while (in) {
    in.read(buffer.data(), static_cast<std::streamsize>(buffer.size()));
    const auto n = in.gcount();
    if (n > 0) hasher.Update(std::string_view(buffer.data(), static_cast<std::size_t>(n)));
  }
  if (in.bad()) return Error(Errc::kIo, path.string() + ": read error");
  return hasher.FinishHex();
}

// What a repository write commits.
struct Committed {
  std::vector<MetadataRow> rows;
  Json versions;
  Json release;  // publish and yank
};

struct RepositoryApi {
  std::shared_ptr<Context> ctx;

  RepositoryStore& store() const { return *ctx->repository; }

  // Writes the committed files. A failure is logged, not answered: the database already holds
  // the new state, and the next write, refresh round or start rewrites the files.
  void WriteFiles() const {
    if (auto st = store().Sync(ctx->pool, ctx->log); !st.ok()) {
      ctx->Log("repository: writing files after commit failed (healed at the next start): " + st.error().message());
    }
  }

  // Makes this process offer a publish, yank or channel change at once instead of at the next
  // generation poll (about a second later); other instances follow through catalog_generation.
  void RefreshOffers() const {
    if (!ctx->fleet) return;
    if (auto st = ctx->fleet->Refresh(true); !st.ok()) ctx->Log("fleet view refresh: " + st.error().message());
  }

  // The signed snapshot and timestamp following `head`, or the answer for a keyserver failure.
  Expected<std::vector<MetadataRow>> SignNext(const Json& root_signed, std::int64_t snapshot_version,
                                              std::int64_t targets_version, std::int64_t timestamp_version,
                                              std::optional<Response>& reject) const {
    auto rows = SignSnapshotAndTimestamp(ctx->keyserver, root_signed, snapshot_version, targets_version,
                                         timestamp_version, ctx->clock.Now(), ctx->config);
    if (!rows.ok()) {
      reject = ctx->KeyserverFailure("repository signing", rows.error());
      return rows.error();
    }
    return rows;
  }

  // ---------------------------------------------------------------------------------------
  // GET /api/v1/repository

  Response GetRepository(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    auto done = ctx->Transact<Json>(
        "repository",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
          UPK_TRY_ASSIGN(std::optional<RepositoryHead> head, LoadHead(c));
          const auto& s = store();
          Json out{
              {"initialised", head.has_value()},
              {"root", nullptr},
              {"targets", nullptr},
              {"versions", VersionsJson(0, 0, 0, 0)},
              {"online_keys",
               {{"snapshot", {{"keyid", s.snapshot_key().keyid}, {"public_key", s.snapshot_key().public_key}}},
                {"timestamp", {{"keyid", s.timestamp_key().keyid}, {"public_key", s.timestamp_key().public_key}}}}},
              {"content_key", {{"keyid", s.content_keyid()}, {"x25519_public", s.content_x25519_public()}}}};
          if (head) {
            out["root"] = head->root_md;
            out["targets"] = head->targets_md;
            out["versions"] = VersionsJson(head->root.version, head->targets.version, head->snapshot.version,
                                           head->timestamp.version);
          }
          return out;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, std::get<Json>(done));
  }

  // ---------------------------------------------------------------------------------------
  // POST /api/v1/repository/root: bootstrap (root v1 + targets v1) and root rotation.

  Response PostRoot(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kAdmin);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    Json body;
    if (auto r = net::ParseJsonObject(req, {"root", "targets"}, body)) return *r;
    if (!body.contains("root")) return ApiError(400, "invalid_body", "field 'root' is missing");
    const SysTime now = ctx->clock.Now();
    const Json& root_md = body["root"];
    if (auto st = CheckEnvelope(root_md, "root"); !st.ok())
      return ApiError(400, "invalid_metadata", st.error().message());
    auto root = tuf::Root::FromJson(root_md["signed"]);
    if (!root.ok()) return ApiError(400, "invalid_metadata", "root: " + root.error().message());
    if (!root->consistent_snapshot) {
      return ApiError(400, "invalid_metadata",
                      "root: consistent_snapshot must be true (the updater serves hash-prefixed targets)");
    }
    if (root->IsExpired(now)) {
      return ApiError(400, "invalid_metadata",
                      "root: expires " + FormatTimestamp(root->expires) + ", which is not in the future");
    }
    if (auto st = CheckOnlineRoles(root_md["signed"], store()); !st.ok()) {
      return ApiError(400, "invalid_metadata", st.error().message());
    }
    if (auto st = tuf::VerifyRoleSignatures(root_md, root_md["signed"], tuf::Role::kRoot); !st.ok()) {
      return ApiError(400, "verification_failed",
                      "root is not signed by a threshold of its own root keys: " + st.error().message());
    }
    std::optional<PostedTargets> targets;
    if (body.contains("targets")) {
      auto parsed = ParseTargets(body["targets"], now);
      if (!parsed.ok()) return ApiError(400, "invalid_metadata", parsed.error().message());
      if (auto st = tuf::VerifyRoleSignatures(parsed->md, root_md["signed"], tuf::Role::kTargets); !st.ok()) {
        return ApiError(400, "verification_failed",
                        "targets is not signed by the root's targets role: " + st.error().message());
      }
      targets = std::move(parsed).value();
    }
    auto root_text = SerializePosted(root_md);
    if (!root_text.ok()) return ApiError(400, "invalid_metadata", root_text.error().message());
    std::optional<std::string> targets_text;
    if (targets) {
      auto text = SerializePosted(targets->md);
      if (!text.ok()) return ApiError(400, "invalid_metadata", text.error().message());
      targets_text = std::move(text).value();
    }
    const std::int64_t new_version = root->version;

    auto done = ctx->Transact<
        Committed>("repository.root", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Committed> {
      UPK_TRY(LockRepository(c));
      UPK_TRY_ASSIGN(std::optional<MetadataRow> current_root, NewestMetadata(c, "root"));
      Committed out;
      MetadataRow root_row{"root", new_version, *root_text, root->expires};
      if (!current_root) {
        // Bootstrap.
        if (new_version != 1) {
          return Refuse(
              reject, 409, "version_conflict",
              "the repository is not bootstrapped: root must be version 1, not " + std::to_string(new_version));
        }
        if (!targets) return Refuse(reject, 400, "invalid_metadata", "bootstrap needs 'targets' (an empty targets v1)");
        if (targets->version != 1 || !targets->targets.empty()) {
          return Refuse(reject, 400, "invalid_metadata", "bootstrap needs an empty targets version 1");
        }
        UPK_TRY_ASSIGN(out.rows, SignNext(root_md["signed"], 1, 1, 1, reject));
        out.rows.insert(out.rows.begin(), MetadataRow{"targets", 1, *targets_text, targets->expires});
        out.rows.insert(out.rows.begin(), root_row);
        for (const auto& row : out.rows) UPK_TRY(InsertMetadata(c, row, now));
        UPK_TRY(InsertAudit(c, now, op.actor(), "repository.bootstrap", "root",
                            Json{{"root_version", 1}, {"targets_version", 1}}));
        out.versions = VersionsJson(1, 1, 1, 1);
        return out;
      }
      // Rotation: version + 1, signed by a threshold of the previous root too.
      if (new_version != current_root->version + 1) {
        return Refuse(reject, 409, "version_conflict",
                      "root version must be " + std::to_string(current_root->version + 1) + " (current + 1), not " +
                          std::to_string(new_version));
      }
      UPK_TRY_ASSIGN(std::optional<RepositoryHead> head, LoadHead(c));
      if (!head) return Error(Errc::kInternal, "repository head incomplete");
      if (auto st = tuf::VerifyRoleSignatures(root_md, head->root_md["signed"], tuf::Role::kRoot); !st.ok()) {
        return Refuse(reject, 400, "verification_failed",
                      "root is not signed by a threshold of the previous root's keys: " + st.error().message());
      }
      std::int64_t targets_version = head->targets.version;
      if (targets) {
        if (targets->version != head->targets.version + 1) {
          return Refuse(reject, 409, "version_conflict",
                        "targets version must be " + std::to_string(head->targets.version + 1) + ", not " +
                            std::to_string(targets->version));
        }
        UPK_TRY_ASSIGN(auto current, TargetInfos(head->targets_md["signed"]));
        if (current != targets->targets) {
          return Refuse(reject, 400, "targets_mismatch",
                        "targets posted with a root must list exactly the current targets");
        }
        targets_version = targets->version;
      } else if (auto st = tuf::VerifyRoleSignatures(head->targets_md, root_md["signed"], tuf::Role::kTargets);
                 !st.ok()) {
        return Refuse(reject, 400, "verification_failed",
                      "the current targets is not signed by the new root's targets role; post targets re-signed with "
                      "the new keys");
      }
      UPK_TRY_ASSIGN(out.rows, SignNext(root_md["signed"], head->snapshot.version + 1, targets_version,
                                        head->timestamp.version + 1, reject));
      if (targets)
        out.rows.insert(out.rows.begin(), MetadataRow{"targets", targets->version, *targets_text, targets->expires});
      out.rows.insert(out.rows.begin(), root_row);
      for (const auto& row : out.rows) UPK_TRY(InsertMetadata(c, row, now));
      UPK_TRY(InsertAudit(c, now, op.actor(), "repository.rotate_root", "root",
                          Json{{"root_version", new_version}, {"targets_version", targets_version}}));
      out.versions =
          VersionsJson(new_version, targets_version, head->snapshot.version + 1, head->timestamp.version + 1);
      return out;
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const Committed& committed = std::get<Committed>(done);
    WriteFiles();
    return Response::Json(200, Json{{"versions", committed.versions}});
  }

  // ---------------------------------------------------------------------------------------
  // Blobs

  // The blob PUT's pre-body check (I/O thread, in-memory only): a malformed digest or a token
  // that is not a cached publisher's is answered before a byte of the body is stored.
  std::optional<Response> PrecheckBlobUpload(const Request& req) const {
    if (!IsLowerHex(req.PathParam("hex"), 64)) {
      return ApiError(400, "invalid_digest", "the blob address must be 64 lower-case hex characters (sha256)");
    }
    auto token = net::BearerToken(req);
    if (!token) return net::Unauthorized("missing 'Authorization: Bearer TOKEN'");
    if (token->empty()) return net::Unauthorized("Authorization must be 'Bearer TOKEN'");
    TokenStore::Lookup found = ctx->tokens.Find(*token, ctx->clock.Now());
    switch (found.outcome) {
      case TokenStore::Outcome::kUnknown:
        return net::Unauthorized("unknown or revoked token");
      case TokenStore::Outcome::kExpired:
        return net::Unauthorized("token '" + found.op.name + "' expired at " + FormatTimestamp(found.op.expires_at),
                                 "token_expired");
      case TokenStore::Outcome::kOk:
        break;
    }
    if (found.op.role < OperatorRole::kPublisher) {
      return ApiError(403, "forbidden",
                      "this needs the publisher role; token '" + found.op.name + "' has " +
                          std::string(OperatorRoleName(found.op.role)));
    }
    return std::nullopt;
  }

  Response PutBlob(const Request& req) const {
    if (auto r = PrecheckBlobUpload(req)) return *r;  // again: the token may have been revoked meanwhile
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    const std::string hex(req.PathParam("hex"));
    const auto& body = req.body_file();
    if (!body) return ApiError(411, "length_required", "the blob must be sent with a Content-Length");
    if (body->sha256_hex != hex) {
      return ApiError(400, "digest_mismatch", "the body's sha256 is " + body->sha256_hex + ", the URL names " + hex);
    }
    const fs::path dest = store().BlobPath(hex);
    // Already stored: nothing to do (the upload is deleted by the server).
    auto known = ctx->Transact<bool>(
        "blob lookup",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<bool> {
          UPK_TRY_ASSIGN(db::Result r, c.Exec("SELECT 1 FROM blobs WHERE sha256 = $1", hex));
          return r.rows() > 0;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&known)) return std::move(*r);
    std::error_code ec;
    const Json answer{{"sha256", hex}, {"length", body->size}};
    if (std::get<bool>(known) && fs::is_regular_file(dest, ec)) {
      Json a = answer;
      a["created"] = false;
      return Response::Json(200, a);
    }
    auto sha512 = Sha512OfFile(body->path);
    if (!sha512.ok()) {
      ctx->Log("blob upload: " + sha512.error().message());
      return ApiError(500, "internal", "cannot read the uploaded blob");
    }
    // The file goes into place before the row commits, so a row never names a missing file; a
    // failed commit leaves an unreferenced, content-addressed file that the next upload reuses.
    if (::rename(body->path.c_str(), dest.c_str()) != 0) {
      ctx->Log("blob upload: rename into " + dest.string() + ": " + std::strerror(errno));
      return ApiError(500, "internal", "cannot store the blob");
    }
    if (auto st = SyncDirectory(dest.parent_path()); !st.ok()) ctx->Log("blob upload: " + st.error().message());
    auto done = ctx->Transact<bool>("blob.upload", [&](db::Connection& c, std::optional<Response>&) -> Expected<bool> {
      const SysTime now = ctx->clock.Now();
      UPK_TRY_ASSIGN(db::Result r,
                     c.Exec("INSERT INTO blobs (sha256, sha512, length, created_at) VALUES ($1, $2, $3, $4) "
                            "ON CONFLICT (sha256) DO NOTHING RETURNING sha256",
                            hex, *sha512, static_cast<std::int64_t>(body->size), now));
      if (r.rows() == 0) return false;
      UPK_TRY(InsertAudit(c, now, op.actor(), "blob.upload", hex, Json{{"length", body->size}, {"sha512", *sha512}}));
      return true;
    });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    Json a = answer;
    a["created"] = std::get<bool>(done);
    return Response::Json(std::get<bool>(done) ? 201 : 200, a);
  }

  Response GetBlob(const Request& req) const {
    const std::string_view hex = req.PathParam("hex");
    if (!IsLowerHex(hex, 64)) {
      return ApiError(400, "invalid_digest", "the blob address must be 64 lower-case hex characters (sha256)");
    }
    auto file = net::OpenFile::Open(store().BlobPath(hex), "\"sha256-" + std::string(hex) + "\"");
    if (!file.ok()) {
      if (file.error().code() == Errc::kNotFound) return ApiError(404, "unknown_blob", "no blob " + std::string(hex));
      ctx->Log("blob " + std::string(hex) + ": " + file.error().message());
      return ApiError(404, "unknown_blob", "no blob " + std::string(hex));
    }
    Response r = Response::FromFile(std::move(file).value(), "application/octet-stream");
    r.SetHeader("Cache-Control", std::string(kImmutable));
    return r;
  }

  // ---------------------------------------------------------------------------------------
  // POST /api/v1/releases

  Response Publish(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    Json body;
    if (auto r = net::ParseJsonObject(
            req, {"targets", "target_path", "manifest", "manifest_signature", "sealed_content_key", "channels"},
            body)) {
      return *r;
    }
    const SysTime now = ctx->clock.Now();
    auto get = [&](const char* field) { return GetString(body, field); };
    if (!body.contains("targets")) return ApiError(400, "invalid_body", "field 'targets' is missing");
    auto target_path = get("target_path");
    if (!target_path.ok()) return net::BadField(target_path.error());
    if (auto st = tuf::CheckTargetPath(*target_path); !st.ok()) {
      return ApiError(400, "invalid_field", "field 'target_path': " + st.error().message());
    }
    auto manifest_b64 = get("manifest");
    if (!manifest_b64.ok()) return net::BadField(manifest_b64.error());
    auto manifest_bytes = Base64Decode(*manifest_b64, packages::kMaxManifestBytes);
    if (!manifest_bytes.ok())
      return ApiError(400, "invalid_field", "field 'manifest': " + manifest_bytes.error().message());
    const std::string manifest_text(manifest_bytes->begin(), manifest_bytes->end());
    auto manifest = packages::Manifest::Parse(manifest_text);
    if (!manifest.ok()) return ApiError(400, "invalid_field", "field 'manifest': " + manifest.error().message());
    // Signatures cover the exact bytes; only the canonical form is what a package carries.
    if (manifest->Serialize() != manifest_text) {
      return ApiError(400, "invalid_field", "field 'manifest': not the canonical manifest.json bytes of a package");
    }
    auto sig_b64 = get("manifest_signature");
    if (!sig_b64.ok()) return net::BadField(sig_b64.error());
    auto sig_bytes = Base64Decode(*sig_b64, packages::kMaxSignatureFileBytes);
    if (!sig_bytes.ok())
      return ApiError(400, "invalid_field", "field 'manifest_signature': " + sig_bytes.error().message());
    const std::string sig_text(sig_bytes->begin(), sig_bytes->end());
    auto signatures = packages::ParseSignatureFile(sig_text);
    if (!signatures.ok())
      return ApiError(400, "invalid_field", "field 'manifest_signature': " + signatures.error().message());
    auto sealed = get("sealed_content_key");
    if (!sealed.ok()) return net::BadField(sealed.error());
    auto sealed_bytes = Base64Decode(*sealed, kSealedContentKeyBytes);
    if (!sealed_bytes.ok() || sealed_bytes->size() != kSealedContentKeyBytes) {
      return ApiError(400, "invalid_field",
                      "field 'sealed_content_key': must be base64 of an 80-byte sealed content key");
    }
    std::vector<std::string> channels;
    if (body.contains("channels")) {
      const Json& list = body["channels"];
      if (!list.is_array() || list.size() > kMaxChannelsPerRelease) {
        return ApiError(400, "invalid_field",
                        "field 'channels': must be an array of at most " + std::to_string(kMaxChannelsPerRelease) +
                            " channel names");
      }
      std::set<std::string> seen;
      for (const Json& ch : list) {
        if (!ch.is_string() || !IsChannelName(ch.get<std::string>())) {
          return ApiError(400, "invalid_field",
                          "field 'channels': each must be a channel name ([a-z0-9][a-z0-9-]{0,31})");
        }
        if (seen.insert(ch.get<std::string>()).second) channels.push_back(ch.get<std::string>());
      }
    }
    auto posted = ParseTargets(body["targets"], now);
    if (!posted.ok()) return ApiError(400, "invalid_metadata", posted.error().message());
    auto targets_text = SerializePosted(posted->md);
    if (!targets_text.ok()) return ApiError(400, "invalid_metadata", targets_text.error().message());
    const std::string release_name = manifest->name;
    const std::string release_version = manifest->version.ToString();

    auto done = ctx->Transact<Committed>(
        "release.publish", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Committed> {
          UPK_TRY(LockRepository(c));
          UPK_TRY_ASSIGN(std::optional<RepositoryHead> head, LoadHead(c));
          if (!head) return Refuse(reject, 409, "not_initialised", "the repository is not bootstrapped yet");
          const Json& root_signed = head->root_md["signed"];
          if (auto st = tuf::VerifyRoleSignatures(posted->md, root_signed, tuf::Role::kTargets); !st.ok()) {
            return Refuse(reject, 400, "verification_failed",
                          "targets is not signed by the root's targets role: " + st.error().message());
          }
          if (posted->version != head->targets.version + 1) {
            return Refuse(reject, 409, "version_conflict",
                          "targets version must be " + std::to_string(head->targets.version + 1) +
                              " (current + 1), not " + std::to_string(posted->version));
          }
          UPK_TRY_ASSIGN(auto current, TargetInfos(head->targets_md["signed"]));
          auto expected = current;
          auto added = posted->targets.find(*target_path);
          if (current.count(*target_path) || added == posted->targets.end()) {
            return Refuse(reject, 400, "targets_mismatch",
                          "targets must be the current targets plus '" + *target_path + "', which " +
                              (current.count(*target_path) ? "is already listed" : "it does not list"));
          }
          expected.emplace(*target_path, added->second);
          if (expected != posted->targets) {
            return Refuse(reject, 400, "targets_mismatch",
                          "targets must be the current targets plus exactly '" + *target_path +
                              "' (an entry was added, removed or changed besides it)");
          }
          const tuf::TargetInfo& info = added->second;
          UPK_TRY_ASSIGN(db::Result blob, c.Exec("SELECT sha512, length FROM blobs WHERE sha256 = $1", info.sha256));
          std::error_code ec;
          if (blob.rows() == 0 || !fs::is_regular_file(store().BlobPath(info.sha256), ec)) {
            return Refuse(reject, 400, "blob_missing", "no blob with sha256 " + info.sha256 + " was uploaded");
          }
          UPK_TRY_ASSIGN(std::string blob_sha512, blob.Get<std::string>(0, "sha512"));
          UPK_TRY_ASSIGN(std::int64_t blob_length, blob.Get<std::int64_t>(0, "length"));
          if (static_cast<std::int64_t>(info.length) != blob_length || info.sha512 != blob_sha512) {
            return Refuse(reject, 400, "digest_mismatch",
                          "target '" + *target_path + "': length or sha512 differ from the stored blob (" +
                              std::to_string(blob_length) + " bytes)");
          }
          UPK_TRY_ASSIGN(auto trusted, TargetsKeys(root_signed));
          if (trusted.first.size() < trusted.second) {
            return Refuse(reject, 400, "verification_failed",
                          "the root's targets role lists fewer usable keys than its threshold");
          }
          auto signed_by =
              packages::VerifyManifestSignatures(manifest_text, *signatures, trusted.first, trusted.second);
          if (!signed_by.ok()) {
            return Refuse(reject, 400, "verification_failed",
                          "the manifest is not signed by the root's targets keys: " + signed_by.error().message());
          }
          const Json& custom = info.custom;
          const Json want{
              {"name", release_name}, {"version", release_version}, {"kind", packages::KindName(manifest->kind)}};
          bool custom_ok = custom.is_object() && custom.contains("upkeep") && custom["upkeep"].is_object();
          if (custom_ok) {
            const Json& upkeep = custom["upkeep"];
            for (const auto& [key, value] : want.items())
              custom_ok = custom_ok && upkeep.contains(key) && upkeep[key] == value;
            custom_ok = custom_ok && upkeep.contains("encrypted") && upkeep["encrypted"] == true;
          }
          if (!custom_ok) {
            return Refuse(
                reject, 400, "manifest_mismatch",
                "target custom.upkeep must be " + want.dump() + " plus \"encrypted\": true, as in the manifest");
          }
          const std::string want_path = release_name + "/" + manifest->Id() + ".upk.enc";
          if (*target_path != want_path) {
            return Refuse(reject, 400, "manifest_mismatch",
                          "the target path of " + manifest->Id() + " must be '" + want_path + "'");
          }
          UPK_TRY_ASSIGN(db::Result exists,
                         c.Exec("SELECT 1 FROM releases WHERE (name = $1 AND version = $2) OR target_path = $3",
                                release_name, release_version, *target_path));
          if (exists.rows() > 0) {
            return Refuse(reject, 409, "release_exists",
                          release_name + " " + release_version + " is already published");
          }
          for (const std::string& channel : channels) {
            UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT 1 FROM channels WHERE name = $1", channel));
            if (ch.rows() == 0) return Refuse(reject, 404, "unknown_channel", "no channel '" + channel + "'");
          }
          Committed out;
          UPK_TRY_ASSIGN(out.rows, SignNext(root_signed, head->snapshot.version + 1, posted->version,
                                            head->timestamp.version + 1, reject));
          out.rows.insert(out.rows.begin(), MetadataRow{"targets", posted->version, *targets_text, posted->expires});
          for (const auto& row : out.rows) UPK_TRY(InsertMetadata(c, row, now));
          UPK_TRY(c.Exec(
              "INSERT INTO releases (name, version, version_major, version_minor, version_build, kind, manifest, "
              "manifest_signature, target_path, blob_sha256, blob_length, sealed_content_key, targets_version, "
              "published_at, published_by) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
              release_name, release_version, static_cast<std::int64_t>(manifest->version.major),
              static_cast<std::int64_t>(manifest->version.minor), static_cast<std::int64_t>(manifest->version.build),
              packages::KindName(manifest->kind), manifest_text, sig_text, *target_path, info.sha256, blob_length,
              *sealed, posted->version, now, op.actor()));
          for (const std::string& channel : channels) {
            UPK_TRY(c.Exec("INSERT INTO channel_releases (channel, name, version, added_at) VALUES ($1, $2, $3, $4)",
                           channel, release_name, release_version, now));
          }
          UPK_TRY(InsertAudit(c, now, op.actor(), "release.publish", release_name + "/" + release_version,
                              Json{{"target_path", *target_path},
                                   {"sha256", info.sha256},
                                   {"targets_version", posted->version},
                                   {"channels", channels},
                                   {"signed_by", *signed_by}}));
          UPK_TRY(Context::BumpCatalogGeneration(c));
          out.versions = VersionsJson(head->root.version, posted->version, head->snapshot.version + 1,
                                      head->timestamp.version + 1);
          UPK_TRY_ASSIGN(std::optional<Json> release, LoadRelease(c, release_name, release_version));
          if (!release) return Error(Errc::kInternal, "release vanished");
          out.release = std::move(*release);
          return out;
        });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const Committed& committed = std::get<Committed>(done);
    WriteFiles();
    RefreshOffers();
    ctx->Log("repository: published " + release_name + " " + release_version + " (targets v" +
             std::to_string(posted->version) + ")");
    return Response::Json(201, Json{{"release", committed.release}, {"versions", committed.versions}});
  }

  // ---------------------------------------------------------------------------------------
  // Releases: list, get, yank

  Response ListReleases(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    std::optional<std::string> name = req.QueryParam("name");
    if (name && !packages::IsValidPackageName(*name))
      return ApiError(400, "invalid_query", "'name' is not a package name");
    auto done = ctx->Transact<Json>(
        "releases",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
          UPK_TRY_ASSIGN(db::Result r, c.Exec(std::string("SELECT ") + kReleaseColumns +
                                                  " FROM releases r WHERE ($1::text IS NULL OR r.name = $1) "
                                                  "ORDER BY r.published_at DESC, r.name, r.version_major DESC, "
                                                  "r.version_minor DESC, r.version_build DESC",
                                              name));
          Json list = Json::array();
          for (int i = 0; i < r.rows(); ++i) {
            UPK_TRY_ASSIGN(Json release, ReleaseJson(r, i));
            list.push_back(std::move(release));
          }
          return list;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"releases", std::get<Json>(done)}});
  }

  Response GetRelease(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const std::string name(req.PathParam("name")), version(req.PathParam("version"));
    auto done = ctx->Transact<Json>(
        "release",
        [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Json> {
          UPK_TRY_ASSIGN(std::optional<Json> release, LoadRelease(c, name, version));
          if (!release) return Refuse(reject, 404, "unknown_release", "no release " + name + " " + version);
          return *release;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"release", std::get<Json>(done)}});
  }

  Response Yank(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    const std::string name(req.PathParam("name")), version(req.PathParam("version"));
    Json body;
    if (auto r = net::ParseJsonObject(req, {"targets", "reason"}, body)) return *r;
    if (!body.contains("targets")) return ApiError(400, "invalid_body", "field 'targets' is missing");
    auto reason = GetString(body, "reason");
    if (!reason.ok()) return net::BadField(reason.error());
    if (auto st = CheckText("field 'reason'", *reason, kMaxReasonBytes); !st.ok() || reason->empty()) {
      return ApiError(400, "invalid_field", st.ok() ? "field 'reason' must not be empty" : st.error().message());
    }
    const SysTime now = ctx->clock.Now();
    auto posted = ParseTargets(body["targets"], now);
    if (!posted.ok()) return ApiError(400, "invalid_metadata", posted.error().message());
    auto targets_text = SerializePosted(posted->md);
    if (!targets_text.ok()) return ApiError(400, "invalid_metadata", targets_text.error().message());

    auto done = ctx->Transact<Committed>(
        "release.yank", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<Committed> {
          UPK_TRY(LockRepository(c));
          UPK_TRY_ASSIGN(db::Result rel, c.Exec("SELECT target_path, yanked_at IS NOT NULL AS yanked FROM releases "
                                                "WHERE name = $1 AND version = $2 FOR UPDATE",
                                                name, version));
          if (rel.rows() == 0) return Refuse(reject, 404, "unknown_release", "no release " + name + " " + version);
          UPK_TRY_ASSIGN(bool yanked, rel.Get<bool>(0, "yanked"));
          if (yanked) return Refuse(reject, 409, "already_yanked", name + " " + version + " is already yanked");
          UPK_TRY_ASSIGN(std::string target_path, rel.Get<std::string>(0, "target_path"));
          UPK_TRY_ASSIGN(std::optional<RepositoryHead> head, LoadHead(c));
          if (!head) return Error(Errc::kInternal, "release without a repository");
          const Json& root_signed = head->root_md["signed"];
          if (auto st = tuf::VerifyRoleSignatures(posted->md, root_signed, tuf::Role::kTargets); !st.ok()) {
            return Refuse(reject, 400, "verification_failed",
                          "targets is not signed by the root's targets role: " + st.error().message());
          }
          if (posted->version != head->targets.version + 1) {
            return Refuse(reject, 409, "version_conflict",
                          "targets version must be " + std::to_string(head->targets.version + 1) +
                              " (current + 1), not " + std::to_string(posted->version));
          }
          UPK_TRY_ASSIGN(auto expected, TargetInfos(head->targets_md["signed"]));
          expected.erase(target_path);
          if (expected != posted->targets) {
            return Refuse(reject, 400, "targets_mismatch",
                          "targets must be the current targets minus exactly '" + target_path + "'");
          }
          Committed out;
          UPK_TRY_ASSIGN(out.rows, SignNext(root_signed, head->snapshot.version + 1, posted->version,
                                            head->timestamp.version + 1, reject));
          out.rows.insert(out.rows.begin(), MetadataRow{"targets", posted->version, *targets_text, posted->expires});
          for (const auto& row : out.rows) UPK_TRY(InsertMetadata(c, row, now));
          UPK_TRY(
              c.Exec("UPDATE releases SET yanked_at = $3, yank_reason = $4, yank_targets_version = $5 "
                     "WHERE name = $1 AND version = $2",
                     name, version, now, *reason, posted->version));
          UPK_TRY(InsertAudit(
              c, now, op.actor(), "release.yank", name + "/" + version,
              Json{{"reason", *reason}, {"target_path", target_path}, {"targets_version", posted->version}}));
          UPK_TRY(Context::BumpCatalogGeneration(c));
          out.versions = VersionsJson(head->root.version, posted->version, head->snapshot.version + 1,
                                      head->timestamp.version + 1);
          UPK_TRY_ASSIGN(std::optional<Json> release, LoadRelease(c, name, version));
          if (!release) return Error(Errc::kInternal, "release vanished");
          out.release = std::move(*release);
          return out;
        });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    const Committed& committed = std::get<Committed>(done);
    WriteFiles();
    RefreshOffers();
    return Response::Json(200, Json{{"release", committed.release}, {"versions", committed.versions}});
  }

  // ---------------------------------------------------------------------------------------
  // Channels

  Response ListChannels(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kSupport);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    auto done = ctx->Transact<Json>(
        "channels",
        [&](db::Connection& c, std::optional<Response>&) -> Expected<Json> {
          UPK_TRY_ASSIGN(
              db::Result r,
              c.Exec("SELECT c.name, c.description, coalesce((SELECT json_agg(json_build_object('name', cr.name, "
                     "'version', cr.version) ORDER BY cr.name, cr.version) FROM channel_releases cr "
                     "WHERE cr.channel = c.name)::text, '[]') AS releases FROM channels c ORDER BY c.name"));
          Json list = Json::array();
          for (int i = 0; i < r.rows(); ++i) {
            UPK_TRY_ASSIGN(std::string name, r.Get<std::string>(i, "name"));
            UPK_TRY_ASSIGN(std::string description, r.Get<std::string>(i, "description"));
            UPK_TRY_ASSIGN(std::string releases_text, r.Get<std::string>(i, "releases"));
            UPK_TRY_ASSIGN(Json releases, ParseJson(releases_text));
            list.push_back(Json{{"name", name}, {"description", description}, {"releases", releases}});
          }
          return list;
        },
        db::TxOptions{.read_only = true});
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(200, Json{{"channels", std::get<Json>(done)}});
  }

  Response CreateChannel(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    Json body;
    if (auto r = net::ParseJsonObject(req, {"name", "description"}, body)) return *r;
    auto name = GetString(body, "name");
    if (!name.ok()) return net::BadField(name.error());
    if (!IsChannelName(*name))
      return ApiError(400, "invalid_field", "field 'name': must match [a-z0-9][a-z0-9-]{0,31}");
    std::string description;
    if (body.contains("description")) {
      auto d = GetString(body, "description");
      if (!d.ok()) return net::BadField(d.error());
      if (auto st = CheckText("field 'description'", *d, kMaxDescriptionBytes); !st.ok()) {
        return ApiError(400, "invalid_field", st.error().message());
      }
      description = *d;
    }
    auto done = ctx->Transact<bool>(
        "channel.create", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
          const SysTime now = ctx->clock.Now();
          UPK_TRY_ASSIGN(db::Result r,
                         c.Exec("INSERT INTO channels (name, description, created_at) VALUES ($1, $2, $3) "
                                "ON CONFLICT (name) DO NOTHING RETURNING name",
                                *name, description, now));
          if (r.rows() == 0) return Refuse(reject, 409, "channel_exists", "channel '" + *name + "' exists");
          UPK_TRY(InsertAudit(c, now, op.actor(), "channel.create", *name, Json{{"description", description}}));
          return true;
        });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    return Response::Json(
        201, Json{{"channel", {{"name", *name}, {"description", description}, {"releases", Json::array()}}}});
  }

  Response AddChannelRelease(const Request& req) const {
    auto who = ctx->Authorize(req, OperatorRole::kPublisher);
    if (auto* r = std::get_if<Response>(&who)) return std::move(*r);
    const Operator& op = std::get<Operator>(who);
    const std::string channel(req.PathParam("channel"));
    Json body;
    if (auto r = net::ParseJsonObject(req, {"name", "version"}, body)) return *r;
    auto name = GetString(body, "name");
    if (!name.ok()) return net::BadField(name.error());
    auto version = GetString(body, "version");
    if (!version.ok()) return net::BadField(version.error());
    auto done = ctx->Transact<bool>(
        "channel.add_release", [&](db::Connection& c, std::optional<Response>& reject) -> Expected<bool> {
          const SysTime now = ctx->clock.Now();
          UPK_TRY_ASSIGN(db::Result ch, c.Exec("SELECT 1 FROM channels WHERE name = $1", channel));
          if (ch.rows() == 0) return Refuse(reject, 404, "unknown_channel", "no channel '" + channel + "'");
          UPK_TRY_ASSIGN(db::Result rel, c.Exec("SELECT yanked_at IS NOT NULL AS yanked FROM releases "
                                                "WHERE name = $1 AND version = $2 FOR SHARE",
                                                *name, *version));
          if (rel.rows() == 0) return Refuse(reject, 404, "unknown_release", "no release " + *name + " " + *version);
          UPK_TRY_ASSIGN(bool yanked, rel.Get<bool>(0, "yanked"));
          if (yanked) return Refuse(reject, 409, "release_yanked", *name + " " + *version + " is yanked");
          UPK_TRY_ASSIGN(db::Result r, c.Exec("INSERT INTO channel_releases (channel, name, version, added_at) "
                                              "VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING RETURNING channel",
                                              channel, *name, *version, now));
          if (r.rows() == 0) return false;
          UPK_TRY(InsertAudit(c, now, op.actor(), "channel.add_release", channel,
                              Json{{"name", *name}, {"version", *version}}));
          UPK_TRY(Context::BumpCatalogGeneration(c));
          return true;
        });
    if (auto* r = std::get_if<Response>(&done)) return std::move(*r);
    if (std::get<bool>(done)) RefreshOffers();
    return Response::Json(200, Json{{"added", std::get<bool>(done)}});
  }
};

// The background refresh: a new timestamp when the newest one is within half its validity of
// expiring, a new snapshot (and timestamp) likewise for the snapshot.
Status RefreshOnlineMetadata(Context& ctx) {
  std::vector<MetadataRow> rows;
  Status st = db::WithTransaction(ctx.pool, [&](db::Connection& c) -> Status {
    rows.clear();
    UPK_TRY(LockRepository(c));
    UPK_TRY_ASSIGN(std::optional<RepositoryHead> head, LoadHead(c));
    if (!head) return OkStatus();  // not bootstrapped: nothing to keep fresh
    ctx.repository->NoteTimestampExpiry(head->timestamp.expires);
    const SysTime now = ctx.clock.Now();
    const Json& root_signed = head->root_md["signed"];
    if (head->snapshot.expires - now < ctx.config.snapshot_validity / 2) {
      UPK_TRY_ASSIGN(
          rows, SignSnapshotAndTimestamp(ctx.keyserver, root_signed, head->snapshot.version + 1, head->targets.version,
                                         head->timestamp.version + 1, now, ctx.config));
    } else if (head->timestamp.expires - now < ctx.config.timestamp_validity / 2) {
      const SysTime expires = now + ctx.config.timestamp_validity;
      UPK_TRY_ASSIGN(MetadataRow timestamp,
                     SignOnline(ctx.keyserver, tuf::Role::kTimestamp,
                                tuf::TimestampSigned(head->timestamp.version + 1, expires, head->snapshot.version,
                                                     head->snapshot.body),
                                root_signed, expires));
      rows.push_back(std::move(timestamp));
    }
    for (const auto& row : rows) UPK_TRY(InsertMetadata(c, row, now));
    return OkStatus();
  });
  if (!st.ok()) return st;
  // Every round, changed or not: it also writes what another instance (or a failed write after
  // a commit) left behind.
  UPK_TRY(ctx.repository->Sync(ctx.pool, ctx.log));
  if (!rows.empty()) {
    std::string what;
    for (const auto& row : rows) what += " " + row.role + " v" + std::to_string(row.version);
    ctx.Log("repository: refreshed" + what);
  }
  return OkStatus();
}

}  // namespace

Status InitRepository(Context& ctx) {
  UPK_TRY_ASSIGN(ctx.repository, RepositoryStore::Create(ctx.keyserver, ctx.config));
  UPK_TRY(ctx.repository->Materialise(ctx.pool, ctx.log));
  ctx.jobs.push_back(
      BackgroundJob{"repository refresh", kRefreshInterval, [c = &ctx] { return RefreshOnlineMetadata(*c); }});
  return OkStatus();
}

Status RegisterRepositoryApi(const std::shared_ptr<Context>& ctx, net::Server& server) {
  if (!ctx->repository) return Error(Errc::kInternal, "InitRepository was not run");
  auto api = std::make_shared<RepositoryApi>(RepositoryApi{ctx});
  UPK_TRY_ASSIGN(RepositoryRoutes routes, RepositoryRoutes::Create(ctx->config.repo_dir));
  UPK_TRY(routes.Register(server));

  net::RouteOptions json_opts;
  json_opts.max_body_bytes = ctx->config.max_body_bytes;
  json_opts.use_worker_pool = true;
  net::RouteOptions metadata_opts;
  metadata_opts.max_body_bytes = ctx->config.max_metadata_body_bytes;
  metadata_opts.use_worker_pool = true;
  net::RouteOptions upload_opts;
  upload_opts.max_body_bytes = static_cast<std::size_t>(ctx->config.max_blob_bytes);
  upload_opts.use_worker_pool = true;  // the handler hashes the file a second time (sha512)
  upload_opts.body_to_file = ctx->repository->upload_dir();
  upload_opts.precheck = [api](const Request& r) { return api->PrecheckBlobUpload(r); };
  net::RouteOptions blob_opts;  // a few syscalls: served from the I/O thread

  UPK_TRY(server.Handle(
      Method::kGet, "/api/v1/repository", [api](const Request& r) { return api->GetRepository(r); }, json_opts));
  UPK_TRY(server.Handle(
      Method::kPost, "/api/v1/repository/root", [api](const Request& r) { return api->PostRoot(r); }, metadata_opts));
  UPK_TRY(server.Handle(
      Method::kPut, "/api/v1/blobs/sha256/{hex}", [api](const Request& r) { return api->PutBlob(r); }, upload_opts));
  UPK_TRY(server.Handle(
      Method::kGet, "/api/v1/blobs/sha256/{hex}", [api](const Request& r) { return api->GetBlob(r); }, blob_opts));
  UPK_TRY(server.Handle(
      Method::kPost, "/api/v1/releases", [api](const Request& r) { return api->Publish(r); }, metadata_opts));
  UPK_TRY(server.Handle(
      Method::kGet, "/api/v1/releases", [api](const Request& r) { return api->ListReleases(r); }, json_opts));
  UPK_TRY(server.Handle(
      Method::kGet, "/api/v1/releases/{name}/{version}", [api](const Request& r) { return api->GetRelease(r); },
      json_opts));
  UPK_TRY(server.Handle(
      Method::kPost, "/api/v1/releases/{name}/{version}/yank", [api](const Request& r) { return api->Yank(r); },
      metadata_opts));
  UPK_TRY(server.Handle(
      Method::kGet, "/api/v1/channels", [api](const Request& r) { return api->ListChannels(r); }, json_opts));
  UPK_TRY(server.Handle(
      Method::kPost, "/api/v1/channels", [api](const Request& r) { return api->CreateChannel(r); }, json_opts));
  UPK_TRY(server.Handle(
      Method::kPost, "/api/v1/channels/{channel}/releases",
      [api](const Request& r) { return api->AddChannelRelease(r); }, json_opts));

  if (ctx->metrics) {
    std::weak_ptr<RepositoryStore> store = ctx->repository;
    const Clock* clock = &ctx->clock;
    ctx->metrics->AddGaugeCallback("upkeep_updater_timestamp_expires_seconds",
                                   "Seconds until the served timestamp.json expires (negative: expired)",
                                   [store, clock]() -> double {
                                     auto s = store.lock();
                                     auto expires = s ? s->timestamp_expires() : std::nullopt;
                                     if (!expires) return 0;
                                     return static_cast<double>((*expires - clock->Now()).count());
                                   });
  }
  return OkStatus();
}

}  // namespace upkeep::updater
