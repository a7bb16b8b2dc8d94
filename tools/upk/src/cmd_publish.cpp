// upk repo bootstrap, upk publish, upk yank: the commands that sign TUF metadata offline with the
// operator's root/targets keys and hand it to the updater's operator API (docs/updater-api.md,
// "Repository and publishing"). The private keys never leave this process; the updater only
// ever receives signed metadata, the encrypted blob and the content key sealed to the keyserver.
#include <stdlib.h>

#include <CLI/CLI.hpp>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <set>
#include <thread>

#include "server_common.hpp"
#include "server_requests.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::upk {

namespace {

namespace fs = std::filesystem;
using packages::PrivateKey;
using packages::PublicKey;

Expected<std::vector<PrivateKey>> LoadKeys(const std::vector<std::string>& paths, const char* flag) {
  std::vector<PrivateKey> keys;
  for (const auto& p : paths) {
    auto k = PrivateKey::Load(p);
    if (!k) return k.error().Wrap(std::string(flag) + " " + p);
    keys.push_back(std::move(*k));
  }
  return keys;
}

std::vector<PublicKey> Publics(const std::vector<PrivateKey>& keys) {
  std::vector<PublicKey> out;
  for (const auto& k : keys) out.push_back(k.public_key());
  return out;
}

std::string MiB(std::uint64_t bytes) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.1f MiB", static_cast<double>(bytes) / (1024.0 * 1024.0));
  return buf;
}

// The repository state as GET /api/v1/repository gives it, checked for what we build on.
struct RepositoryView {
  Json root;     // signed root metadata (envelope)
  Json targets;  // signed targets metadata (envelope)
  Json versions;
  std::string content_key_hex;  // keyserver content key, X25519, 64 hex
};

Expected<RepositoryView> ViewRepository(const Json& body) {
  if (!body.is_object() || !body.contains("initialised") || !body["initialised"].is_boolean()) {
    return Error(Errc::kParse, "GET /api/v1/repository: not a repository description");
  }
  if (!body["initialised"].get<bool>()) {
    return Error(Errc::kPolicy, "the updater's repository is not initialised yet; run 'upk repo bootstrap' first");
  }
  RepositoryView v;
  v.root = body.value("root", Json());
  v.targets = body.value("targets", Json());
  v.versions = body.value("versions", Json::object());
  if (!v.root.is_object() || !v.root.contains("signed") || !v.targets.is_object() || !v.targets.contains("signed")) {
    return Error(Errc::kParse, "GET /api/v1/repository: root or targets metadata missing");
  }
  if (body.contains("content_key") && body["content_key"].is_object()) {
    v.content_key_hex = Str(body["content_key"], "x25519_public", "");
  }
  return v;
}

// Refuses, before any expensive work, keys the updater's root does not list for targets, and
// names the key file; the updater would refuse the signature anyway.
Status CheckTargetsKeys(const Json& root_signed, const std::vector<PrivateKey>& keys,
                        const std::vector<std::string>& paths) {
  std::set<std::string> allowed;
  try {
    for (const auto& id : root_signed.at("roles").at("targets").at("keyids")) allowed.insert(id.get<std::string>());
  } catch (const std::exception&) {
    return Error(Errc::kParse, "the updater's root has no targets role");
  }
  for (std::size_t i = 0; i < keys.size(); ++i) {
    if (!allowed.count(keys[i].keyid())) {
      return Error(Errc::kPolicy, "--targets-key " + paths[i] + ": key " + keys[i].keyid().substr(0, 16) +
                                      "... is not a targets key of the updater's root");
    }
  }
  return OkStatus();
}

// Signs targets N+1 and checks it against the updater's root as the updater will.
Expected<Json> SignTargets(const Json& next_signed, const Json& root_signed, const std::vector<PrivateKey>& keys) {
  UPK_TRY_ASSIGN(Json md, tuf::SignMetadata(next_signed, keys));
  if (auto s = tuf::VerifyRoleSignatures(md, root_signed, tuf::Role::kTargets); !s) {
    return s.error().Wrap("the targets keys given do not meet the root's targets threshold");
  }
  return md;
}

// A private temporary directory, removed with everything in it when this goes out of scope, so
// the blob is cleaned up on every path out of `publish`.
class TempWorkDir {
 public:
  static Expected<TempWorkDir> Create() {
    std::error_code ec;
    fs::path base = fs::temp_directory_path(ec);
    if (ec) base = "/tmp";
    std::string tmpl = (base / "upk-publish-XXXXXX").string();
    if (::mkdtemp(tmpl.data()) == nullptr) {
      return Error(Errc::kIo, "cannot create a temporary directory in " + base.string() + ": " + std::strerror(errno));
    }
    return TempWorkDir(tmpl);
  }
  TempWorkDir(TempWorkDir&& o) noexcept : path_(std::move(o.path_)) { o.path_.clear(); }
  TempWorkDir& operator=(TempWorkDir&&) = delete;
  ~TempWorkDir() {
    if (path_.empty()) return;
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  explicit TempWorkDir(fs::path p) : path_(std::move(p)) {}
  fs::path path_;
};

// EncryptFile has no progress callback; on a terminal, a thread watches the blob grow in the
// private directory (EncryptFile writes a temporary sibling there first).
class GrowthWatcher {
 public:
  GrowthWatcher(const Context& ctx, fs::path dir, std::uint64_t total) : total_(total) {
    if (!ctx.progress_tty) return;
    progress_ = std::make_unique<Progress>(ctx, "encrypt", total);
    thread_ = std::jthread([this, dir = std::move(dir)](std::stop_token stop) {
      while (!stop.stop_requested()) {
        std::uint64_t size = 0;
        std::error_code ec;
        for (const auto& e : fs::directory_iterator(dir, ec)) {
          std::error_code ec2;
          const auto s = e.file_size(ec2);
          if (!ec2) size += s;
        }
        progress_->Update(size);
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
      }
    });
  }
  ~GrowthWatcher() { Stop(false); }
  // Stops watching; `complete` draws the bar full (the last poll may predate the end).
  void Stop(bool complete) {
    if (thread_.joinable()) {
      thread_.request_stop();
      thread_.join();
    }
    if (progress_ && complete) progress_->Update(total_);
    if (progress_) progress_->Finish();
  }

 private:
  std::uint64_t total_;
  std::unique_ptr<Progress> progress_;
  std::jthread thread_;
};

Expected<std::string> Sha512OfFile(const Context& ctx, const fs::path& file, std::uint64_t size) {
  std::ifstream in(file, std::ios::binary);
  if (!in) return Error(Errc::kIo, file.string() + ": cannot be read");
  Hasher h(HashAlgorithm::kSha512);
  Progress progress(ctx, "hash", size);
  std::vector<char> buf(1 << 20);
  std::uint64_t done = 0;
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    h.Update(std::string_view(buf.data(), n));
    done += n;
    progress.Update(done);
  }
  if (in.bad()) return Error(Errc::kIo, file.string() + ": read error");
  return h.FinishHex();
}

void Say(const Context& ctx, const std::string& line) {
  if (!ctx.json && !ctx.quiet) *ctx.err << line << "\n";
}

// --- bootstrap ---

struct BootstrapArgs {
  ServerArgs server;
  std::vector<std::string> root_keys, targets_keys, expires;
  int root_threshold = 1;
};

// One of the keyserver's online keys from GET /api/v1/repository: {"keyid", "public_key": KEY}
// (what the updater sends) or the bare TUF key. A key id that is not the key's own would give a
// root the updater can't match, so it is refused here.
Expected<PublicKey> OnlineKey(const Json& online_keys, const char* role) {
  const std::string what = std::string("the keyserver's ") + role + " key";
  const Json entry = online_keys.value(role, Json());
  const bool wrapped = entry.is_object() && entry.contains("public_key");
  auto key = PublicKey::FromJson(wrapped ? entry["public_key"] : entry);
  if (!key) return key.error().Wrap(what);
  if (wrapped && entry.contains("keyid") && entry["keyid"] != key->keyid()) {
    return Error(Errc::kVerification, what + ": listed under key id " + Str(entry, "keyid") + ", which is not its own");
  }
  return key;
}

int RunBootstrap(const Context& ctx, const BootstrapArgs& a) {
  auto expiry = ParseBootstrapExpires(a.expires);
  if (!expiry) return ctx.Fail(expiry.error());
  auto root_keys = LoadKeys(a.root_keys, "--root-key");
  if (!root_keys) return ctx.Fail(root_keys.error());
  auto targets_keys = LoadKeys(a.targets_keys, "--targets-key");
  if (!targets_keys) return ctx.Fail(targets_keys.error());
  std::set<std::string> distinct_root;
  for (const auto& k : *root_keys) distinct_root.insert(k.keyid());
  if (static_cast<std::size_t>(a.root_threshold) > distinct_root.size()) {
    // Checked again by BuildBootstrapRoot; here so a usage mistake costs no round trip.
    return ctx.Fail(Error(Errc::kInvalidArgument, "--root-threshold " + std::to_string(a.root_threshold) +
                                                      " is more than the " + std::to_string(distinct_root.size()) +
                                                      " distinct --root-key(s) given"));
  }
  auto client = Connect(ctx, a.server);
  if (!client) return ctx.Fail(client.error());

  auto r = client->Get("/api/v1/repository");
  if (!r || !r->ok()) return FailRequest(ctx, r);
  const Json& body = r->body;
  if (!body.is_object() || !body.contains("initialised") || !body["initialised"].is_boolean()) {
    return ctx.Fail(Error(Errc::kParse, "GET /api/v1/repository: not a repository description"));
  }
  if (body["initialised"].get<bool>()) {
    std::string version = body.contains("versions") ? Num(body["versions"], "root", "?") : "?";
    return ctx.Fail(Error(
        Errc::kPolicy, "the updater's repository is already initialised (root v" + version + "); bootstrap runs once"));
  }
  if (!body.contains("online_keys") || !body["online_keys"].is_object()) {
    return ctx.Fail(Error(Errc::kParse, "GET /api/v1/repository: no online_keys (is the keyserver reachable?)"));
  }
  auto snapshot = OnlineKey(body["online_keys"], "snapshot");
  if (!snapshot) return ctx.Fail(snapshot.error());
  auto timestamp = OnlineKey(body["online_keys"], "timestamp");
  if (!timestamp) return ctx.Fail(timestamp.error());

  const SysTime now = SystemClock::Instance().Now();
  auto root = BuildBootstrapRoot(Publics(*root_keys), a.root_threshold, Publics(*targets_keys), *snapshot, *timestamp,
                                 now + expiry->root);
  if (!root) return ctx.Fail(root.error());
  auto root_md = tuf::SignMetadata(*root, *root_keys);
  if (!root_md) return ctx.Fail(root_md.error());
  auto targets_md = tuf::SignMetadata(BuildEmptyTargets(now + expiry->targets), *targets_keys);
  if (!targets_md) return ctx.Fail(targets_md.error());

  auto posted = client->Post("/api/v1/repository/root", Json{{"root", *root_md}, {"targets", *targets_md}});
  if (!posted || !posted->ok()) return FailRequest(ctx, posted);
  if (ctx.json) {
    ctx.PrintJson(posted->body);
    return 0;
  }
  const Json versions = posted->body.value("versions", Json::object());
  *ctx.out << "bootstrapped the updater's repository: root v" << Num(versions, "root", "1") << ", targets v"
           << Num(versions, "targets", "1") << ", snapshot v" << Num(versions, "snapshot", "1") << ", timestamp v"
           << Num(versions, "timestamp", "1") << "\n"
           << "  root keys: " << root_keys->size() << " (threshold " << a.root_threshold
           << "), targets keys: " << targets_keys->size() << "\n"
           << "  trusted root for clients: " << client->server() << "/repo/metadata/1.root.json\n";
  return 0;
}

// --- publish ---

struct PublishArgs {
  ServerArgs server;
  std::string package;
  std::vector<std::string> targets_keys, channels;
  bool no_channel = false;
  int expires_days = 90;
};

int RunPublish(const Context& ctx, const PublishArgs& a) {
  auto keys = LoadKeys(a.targets_keys, "--targets-key");
  if (!keys) return ctx.Fail(keys.error());
  auto client = Connect(ctx, a.server);
  if (!client) return ctx.Fail(client.error());

  // 1. The package must be signed by the targets keys: the updater checks the manifest signature
  // against the root's targets role, and a package we can't verify is not published.
  packages::VerifyOptions vo;
  vo.trusted = Publics(*keys);
  std::optional<Progress> verify_progress;
  auto verified = packages::VerifyPackage(a.package, vo, [&](std::uint64_t done, std::uint64_t total) {
    if (!verify_progress) verify_progress.emplace(ctx, "verify", total);
    verify_progress->Update(done);
  });
  if (verify_progress) verify_progress->Finish();
  if (!verified) return ctx.Fail(verified.error().Wrap(a.package));
  auto reader = packages::PackageReader::OpenFile(a.package);
  if (!reader) return ctx.Fail(reader.error().Wrap(a.package));
  const packages::Manifest& manifest = verified->manifest;
  const std::string target_path = ReleaseTargetPath(manifest);
  // PackageReader keeps manifest.sig parsed, not as read. `upk pack` writes it with
  // SerializeSignatureFile, so for its packages this is the same bytes; for any other it carries
  // the same signatures, which is what the updater verifies. (PackageReader could expose the raw
  // bytes; see docs/upk.md.)
  const std::string manifest_sig = packages::SerializeSignatureFile(reader->signatures());

  // 2. The current state, checked before the (long) encryption and upload.
  auto repo = client->Get("/api/v1/repository");
  if (!repo || !repo->ok()) return FailRequest(ctx, repo);
  auto view = ViewRepository(repo->body);
  if (!view) return ctx.Fail(view.error());
  const Json& root_signed = view->root["signed"];
  if (auto s = CheckTargetsKeys(root_signed, *keys, a.targets_keys); !s) return ctx.Fail(s.error());
  const Json& current = view->targets["signed"];
  if (current.contains("targets") && current["targets"].is_object() && current["targets"].contains(target_path)) {
    return ctx.Fail(Error(Errc::kPolicy, manifest.Id() + " is already published (" + target_path + ")"));
  }
  auto recipient_bytes = FromHex(view->content_key_hex);
  if (!recipient_bytes || recipient_bytes->size() != trust::kX25519KeyBytes) {
    return ctx.Fail(Error(Errc::kParse, "GET /api/v1/repository: content_key.x25519_public is not 64 hex digits"));
  }
  trust::X25519PublicKey recipient{};
  std::copy(recipient_bytes->begin(), recipient_bytes->end(), recipient.begin());

  // 3. Encrypt into a private temporary directory (removed on every way out).
  auto work = TempWorkDir::Create();
  if (!work) return ctx.Fail(work.error());
  const fs::path blob = work->path() / (manifest.Id() + ".upk.enc");
  const trust::ContentKey content_key = trust::ContentKey::Generate();
  Say(ctx, "encrypting " + a.package + " (" + MiB(verified->package_bytes) + ")");
  Expected<trust::EncryptedBlobInfo> info = Error(Errc::kInternal, "not run");
  {
    GrowthWatcher watch(ctx, work->path(),
                        trust::EncryptedBlobSize(verified->package_bytes, trust::kDefaultPayloadChunkBytes));
    info = trust::EncryptFile(a.package, blob, content_key);
    watch.Stop(info.ok());
  }
  if (!info) return ctx.Fail(info.error().Wrap("encrypting " + a.package));
  auto sha512 = Sha512OfFile(ctx, blob, info->blob_bytes);
  if (!sha512) return ctx.Fail(sha512.error());

  // 4. Upload (streamed from the file). The updater re-hashes what it receives.
  Say(ctx, "uploading " + MiB(info->blob_bytes) + " to " + client->server());
  std::unique_ptr<Progress> upload_progress;
  if (ctx.progress_tty) upload_progress = std::make_unique<Progress>(ctx, "upload", info->blob_bytes);
  auto put = client->PutFile("/api/v1/blobs/sha256/" + info->blob_sha256_hex, blob, [&](std::uint64_t sent) {
    if (upload_progress) upload_progress->Update(sent);
  });
  if (upload_progress) upload_progress->Finish();
  if (!put || !put->ok()) return FailRequest(ctx, put);
  if (Str(put->body, "sha256", "") != info->blob_sha256_hex ||
      Num(put->body, "length", "") != std::to_string(info->blob_bytes)) {
    return ctx.Fail(
        Error(Errc::kVerification, "the updater stored a blob with another digest or length than was sent"));
  }

  // 5. Seal the content key to the keyserver and sign targets N+1 offline.
  const std::string sealed = trust::SealContentKeyTo(content_key, recipient);
  if (sealed.empty())
    return ctx.Fail(Error(Errc::kVerification, "the keyserver's content key is not a usable X25519 key"));
  tuf::TargetInfo target;
  target.path = target_path;
  target.length = info->blob_bytes;
  target.sha256 = info->blob_sha256_hex;
  target.sha512 = *sha512;
  target.custom = ReleaseCustom(manifest);
  const SysTime now = SystemClock::Instance().Now();
  auto next = BuildPublishTargets(current, target, now + std::chrono::days(a.expires_days));
  if (!next) return ctx.Fail(next.error());
  auto signed_targets = SignTargets(*next, root_signed, *keys);
  if (!signed_targets) return ctx.Fail(signed_targets.error());

  Json channels = Json::array();
  for (const auto& c : a.channels) channels.push_back(c);
  // Like every appliance, a release starts in "stable" unless told otherwise.
  if (a.channels.empty() && !a.no_channel) channels.push_back("stable");
  Json request{{"targets", *signed_targets},
               {"target_path", target_path},
               {"manifest", Base64Encode(reader->manifest_bytes())},
               {"manifest_signature", Base64Encode(manifest_sig)},
               {"sealed_content_key", sealed},
               {"channels", channels}};
  auto posted = client->Post("/api/v1/releases", request);
  if (!posted || !posted->ok()) {
    const int code = FailRequest(ctx, posted);
    if (posted && posted->status == 409 &&
        Str(posted->body.value("error", Json::object()), "code", "") == "version_conflict" && !ctx.json) {
      *ctx.err << "upk: someone else changed the updater's targets (now past v" << Num(current, "version", "?")
               << ") while this publish ran; nothing was published. Check 'upk channel list' / the releases, then run "
                  "'upk publish' again if it is still wanted.\n";
    }
    return code;
  }
  if (ctx.json) {
    ctx.PrintJson(posted->body);
    return 0;
  }
  const Json release = posted->body.value("release", Json::object());
  const Json versions = posted->body.value("versions", Json::object());
  std::string chans;
  for (const auto& c : release.value("channels", channels)) chans += (chans.empty() ? "" : ",") + c.get<std::string>();
  *ctx.out << "published " << Str(release, "name", manifest.name) << " "
           << Str(release, "version", manifest.version.ToString()) << " ("
           << Str(release, "kind", packages::KindName(manifest.kind)) << ") as " << target_path << ", "
           << MiB(info->blob_bytes) << ", channels " << (chans.empty() ? "-" : chans) << "\n"
           << "  targets v" << Num(versions, "targets") << ", snapshot v" << Num(versions, "snapshot")
           << ", timestamp v" << Num(versions, "timestamp") << "\n";
  return 0;
}

// --- yank ---

struct YankArgs {
  ServerArgs server;
  std::string name, version, reason;
  std::vector<std::string> targets_keys;
  int expires_days = 90;
};

int RunYank(const Context& ctx, const YankArgs& a) {
  auto keys = LoadKeys(a.targets_keys, "--targets-key");
  if (!keys) return ctx.Fail(keys.error());
  auto client = Connect(ctx, a.server);
  if (!client) return ctx.Fail(client.error());
  const std::string release_path = "/api/v1/releases/" + EncodeComponent(a.name) + "/" + EncodeComponent(a.version);
  auto rel = client->Get(release_path);
  if (!rel || !rel->ok()) return FailRequest(ctx, rel);
  const Json release = rel->body.value("release", Json::object());
  if (release.contains("yanked_at") && !release["yanked_at"].is_null()) {
    return ctx.Fail(
        Error(Errc::kPolicy, a.name + " " + a.version + " was already yanked at " + Str(release, "yanked_at")));
  }
  const std::string target_path = Str(release, "target_path", "");
  if (target_path.empty()) return ctx.Fail(Error(Errc::kParse, "GET " + release_path + ": no target_path"));

  auto repo = client->Get("/api/v1/repository");
  if (!repo || !repo->ok()) return FailRequest(ctx, repo);
  auto view = ViewRepository(repo->body);
  if (!view) return ctx.Fail(view.error());
  const Json& root_signed = view->root["signed"];
  if (auto s = CheckTargetsKeys(root_signed, *keys, a.targets_keys); !s) return ctx.Fail(s.error());
  const SysTime now = SystemClock::Instance().Now();
  auto next = BuildYankTargets(view->targets["signed"], target_path, now + std::chrono::days(a.expires_days));
  if (!next) return ctx.Fail(next.error());
  auto signed_targets = SignTargets(*next, root_signed, *keys);
  if (!signed_targets) return ctx.Fail(signed_targets.error());
  auto posted = client->Post(release_path + "/yank", Json{{"targets", *signed_targets}, {"reason", a.reason}});
  if (!posted || !posted->ok()) return FailRequest(ctx, posted);
  if (ctx.json) {
    ctx.PrintJson(posted->body);
    return 0;
  }
  const Json versions = posted->body.value("versions", Json::object());
  *ctx.out << "yanked " << a.name << " " << a.version << " (" << target_path << "); targets v"
           << Num(versions, "targets") << ", snapshot v" << Num(versions, "snapshot") << ", timestamp v"
           << Num(versions, "timestamp") << "\n";
  return 0;
}

}  // namespace

void AddPublishCommands(CLI::App& app, Context& ctx) {
  // repo bootstrap joins the static-repository commands of cmd_repo.cpp.
  CLI::App* repo = app.get_subcommand("repo");
  {
    auto* sub = repo->add_subcommand(
        "bootstrap", "Initialise the updater's TUF repository: root v1 and empty targets v1, signed offline");
    sub->fallthrough();
    sub->footer(
        "Example:\n  upk repo bootstrap --server https://updater.example:8443 --token-file ~/.upkeep/admin.token \\\n"
        "      --root-key keys/root1.key --root-key keys/root2.key --root-threshold 2 \\\n"
        "      --targets-key keys/targets.key --expires root=365,targets=90\n"
        "Needs an admin token. Snapshot and timestamp are the keyserver's online keys.");
    auto a = std::make_shared<BootstrapArgs>();
    AddServerOptions(sub, a->server);
    sub->add_option("--root-key", a->root_keys, "Root private key file (repeatable)")->required();
    sub->add_option("--root-threshold", a->root_threshold, "Root signatures required (default 1)")
        ->check(CLI::Range(1, 64));
    sub->add_option("--targets-key", a->targets_keys, "Targets private key file (repeatable)")->required();
    sub->add_option("--expires", a->expires, "Validity in days: root=DAYS,targets=DAYS (defaults 365 and 90)");
    OnRun(sub, ctx, [&ctx, a] { return RunBootstrap(ctx, *a); });
  }
  {
    auto* sub = app.add_subcommand("publish", "Encrypt, upload and publish a signed .upk package on the updater");
    sub->fallthrough();
    sub->footer(
        "Example:\n  upk publish site-8.1.0.upk --server https://updater.example:8443 --token-file publisher.token \\\n"
        "      --targets-key keys/targets.key --channel stable --channel beta\n"
        "The package must be signed by the targets key(s). It is encrypted with a fresh content key in a\n"
        "temporary file (removed afterwards), uploaded, and listed in targets N+1 signed here.");
    auto a = std::make_shared<PublishArgs>();
    AddServerOptions(sub, a->server);
    sub->add_option("PKG", a->package, "The .upk package")->required()->check(CLI::ExistingFile);
    sub->add_option("--targets-key", a->targets_keys, "Targets private key file (repeatable)")->required();
    auto* channel = sub->add_option("--channel", a->channels, "Channel to add the release to (repeatable; default stable)");
    sub->add_flag("--no-channel", a->no_channel, "Publish into no channel (add it later with 'upk channel add')")
        ->excludes(channel);
    sub->add_option("--expires-days", a->expires_days, "Validity of the new targets metadata (default 90)")
        ->check(CLI::Range(1, 36500));
    OnRun(sub, ctx, [&ctx, a] { return RunPublish(ctx, *a); });
  }
  {
    auto* sub = app.add_subcommand("yank", "Withdraw a published release: targets N+1 without it, signed here");
    sub->fallthrough();
    sub->footer(
        "Example:\n  upk yank site 8.1.0 --server https://updater.example:8443 --token-file publisher.token \\\n"
        "      --targets-key keys/targets.key --reason \"breaks the LDAP sync\"\n"
        "Appliances are no longer offered it; the blob stays for clients of older metadata.");
    auto a = std::make_shared<YankArgs>();
    AddServerOptions(sub, a->server);
    sub->add_option("NAME", a->name, "Release name")->required();
    sub->add_option("VERSION", a->version, "Release version")->required();
    sub->add_option("--targets-key", a->targets_keys, "Targets private key file (repeatable)")->required();
    sub->add_option("--reason", a->reason, "Why (kept in the release and the audit log)")->required();
    sub->add_option("--expires-days", a->expires_days, "Validity of the new targets metadata (default 90)")
        ->check(CLI::Range(1, 36500));
    OnRun(sub, ctx, [&ctx, a] { return RunYank(ctx, *a); });
  }
}

}  // namespace upkeep::upk
