// The repository half of the updater service (docs/updater-api.md, "Repository and publishing",
// "Channels") against real PostgreSQL and the FakeKeyserver: bootstrap and rotation, blobs,
// publish (and every refusal, with the database unchanged), yank, channels, the /repo/ files a
// real TUF client verifies, the refresh job, and re-materialisation at start.
#include <gtest/gtest.h>

#include <fstream>

#include "publish_support.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/packages/package.hpp"
#include "upkeep/trust/payload.hpp"
#include "upkeep/tuf/fetcher.hpp"
#include "upkeep/tuf/repository.hpp"
#include "upkeep/tuf/updater.hpp"

namespace upkeep::updater::test {
namespace {

namespace fs = std::filesystem;

std::string FileBytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::int64_t ServedVersion(ServiceFixture& f, const std::string& file) {
  Reply r = f.Call("GET", "/repo/metadata/" + file);
  if (r.status != 200) return -1;
  return r.json["signed"]["version"].get<std::int64_t>();
}

std::int64_t CatalogGeneration(ServiceFixture& f) {
  auto conn = f.pool().Acquire().value();
  return conn->Exec("SELECT generation FROM catalog_generation").value().Get<std::int64_t>(0, "generation").value();
}

std::vector<std::string> AuditActions(ServiceFixture& f) {
  Reply r = f.Call("GET", "/api/v1/audit?limit=100", "", f.token("support"));
  std::vector<std::string> out;
  for (const Json& e : r.json["entries"]) out.push_back(e["action"].get<std::string>());
  return out;
}

bool Contains(const std::vector<std::string>& v, const std::string& s) {
  return std::find(v.begin(), v.end(), s) != v.end();
}

TEST(UpdaterRepositoryApi, BootstrapServesTheRepository) {
  ServiceFixture f;
  Reply before = f.Call("GET", "/api/v1/repository", "", f.token("support"));
  ASSERT_EQ(before.status, 200) << before.body;
  EXPECT_EQ(before.json["initialised"], false);
  EXPECT_TRUE(before.json["root"].is_null());
  EXPECT_EQ(before.json["online_keys"]["snapshot"]["keyid"], f.keyserver().snapshot_key().keyid());
  EXPECT_EQ(before.json["online_keys"]["timestamp"]["keyid"], f.keyserver().timestamp_key().keyid());
  EXPECT_EQ(before.json["content_key"]["x25519_public"], ToHex(f.keyserver().content_identity().public_key().x25519()));
  EXPECT_EQ(f.Call("GET", "/repo/metadata/timestamp.json").status, 404);

  // Only an admin may bootstrap.
  Json body{{"root", MakeRoot(f, 1, {TestKeys().root})},
            {"targets", MakeTargets(1, Json::object(), TestKeys().targets)}};
  EXPECT_EQ(f.Call("POST", "/api/v1/repository/root", body.dump(), f.token("publisher")).status, 403);
  EXPECT_EQ(f.Call("POST", "/api/v1/repository/root", body.dump()).status, 401);

  Reply boot = Bootstrap(f);
  ASSERT_EQ(boot.status, 200) << boot.body;
  EXPECT_EQ(boot.json["versions"], (Json{{"root", 1}, {"targets", 1}, {"snapshot", 1}, {"timestamp", 1}}));
  EXPECT_EQ(f.keyserver().sign_calls("snapshot"), 1);
  EXPECT_EQ(f.keyserver().sign_calls("timestamp"), 1);

  for (const char* file : {"1.root.json", "root.json", "1.targets.json", "1.snapshot.json", "timestamp.json"}) {
    Reply r = f.Call("GET", std::string("/repo/metadata/") + file);
    EXPECT_EQ(r.status, 200) << file;
    EXPECT_EQ(r.json["signed"]["version"], 1) << file;
  }
  EXPECT_EQ(f.Call("GET", "/repo/metadata/1.root.json").Header("Cache-Control"), "public, max-age=31536000, immutable");
  EXPECT_EQ(f.Call("GET", "/repo/metadata/timestamp.json").Header("Cache-Control"), "no-cache");
  Reply after = f.Call("GET", "/api/v1/repository", "", f.token("support"));
  EXPECT_EQ(after.json["initialised"], true);
  EXPECT_EQ(after.json["root"]["signed"]["version"], 1);
  EXPECT_EQ(after.json["targets"]["signed"]["targets"], Json::object());
  EXPECT_TRUE(Contains(AuditActions(f), "repository.bootstrap"));

  // A second root v1 is a version conflict and changes nothing.
  const std::string tables = f.DumpTables();
  Reply again = Bootstrap(f);
  EXPECT_EQ(again.status, 409) << again.body;
  EXPECT_EQ(again.ErrorCode(), "version_conflict");
  EXPECT_EQ(f.DumpTables(), tables);
}

TEST(UpdaterRepositoryApi, BootstrapRefusesBadMetadata) {
  ServiceFixture f;
  const std::string tables = f.DumpTables();
  const auto stranger = packages::PrivateKey::GenerateEd25519();
  auto post = [&](const Json& body) {
    return f.Call("POST", "/api/v1/repository/root", body.dump(), f.token("admin"));
  };
  const Json empty_targets = MakeTargets(1, Json::object(), TestKeys().targets);

  // Root not signed by its own root key.
  Reply r = post(Json{{"root", MakeRoot(f, 1, {stranger})}, {"targets", empty_targets}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.ErrorCode(), "verification_failed");
  // Targets not signed by the root's targets key.
  r = post(Json{{"root", MakeRoot(f, 1, {TestKeys().root})}, {"targets", MakeTargets(1, Json::object(), stranger)}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.ErrorCode(), "verification_failed");
  // Root whose snapshot role is not the keyserver's key.
  Json root = MakeRoot(f, 1, {TestKeys().root});
  Json signed_part = root["signed"];
  signed_part["roles"]["snapshot"]["keyids"] = Json::array({TestKeys().targets.keyid()});
  r = post(Json{{"root", tuf::SignMetadata(signed_part, {TestKeys().root}).value()}, {"targets", empty_targets}});
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.ErrorCode(), "invalid_metadata");
  // Bootstrap without targets, with a non-empty one, a root version 2, malformed bodies.
  r = post(Json{{"root", MakeRoot(f, 1, {TestKeys().root})}});
  EXPECT_EQ(r.ErrorCode(), "invalid_metadata") << r.body;
  Json one{
      {"a.txt", {{"length", 1}, {"hashes", {{"sha256", std::string(64, 'a')}, {"sha512", std::string(128, 'b')}}}}}};
  r = post(Json{{"root", MakeRoot(f, 1, {TestKeys().root})}, {"targets", MakeTargets(1, one, TestKeys().targets)}});
  EXPECT_EQ(r.ErrorCode(), "invalid_metadata") << r.body;
  r = post(Json{{"root", MakeRoot(f, 2, {TestKeys().root})}, {"targets", empty_targets}});
  EXPECT_EQ(r.ErrorCode(), "version_conflict") << r.body;
  EXPECT_EQ(post(Json{{"root", 5}}).ErrorCode(), "invalid_metadata");
  EXPECT_EQ(post(Json{{"root", {{"signed", {}}, {"signatures", Json::array()}, {"x", 1}}}}).ErrorCode(),
            "invalid_metadata");
  EXPECT_EQ(post(Json{{"rooot", 1}}).ErrorCode(), "unknown_field");
  EXPECT_EQ(f.Call("POST", "/api/v1/repository/root", "{", f.token("admin")).ErrorCode(), "malformed_json");

  EXPECT_EQ(f.DumpTables(), tables);
  EXPECT_FALSE(fs::exists(f.dir() / "repo/metadata/1.root.json"));
  EXPECT_EQ(f.keyserver().sign_calls("snapshot"), 0);
}

TEST(UpdaterRepositoryApi, RootRotation) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  const auto new_root = packages::PrivateKey::GenerateEd25519();
  auto post = [&](const Json& root) {
    return f.Call("POST", "/api/v1/repository/root", Json{{"root", root}}.dump(), f.token("admin"));
  };
  const std::string tables = f.DumpTables();
  // Only the new key: the previous root's threshold is missing.
  Reply r = post(MakeRoot(f, 2, {new_root}, {new_root}));
  EXPECT_EQ(r.ErrorCode(), "verification_failed") << r.body;
  // Skipping a version.
  r = post(MakeRoot(f, 3, {TestKeys().root, new_root}, {new_root}));
  EXPECT_EQ(r.ErrorCode(), "version_conflict") << r.body;
  // A new targets key without re-signed targets would orphan the current targets.
  const auto new_targets = packages::PrivateKey::GenerateEd25519();
  r = post(MakeRoot(f, 2, {TestKeys().root, new_root}, {new_root}, &new_targets));
  EXPECT_EQ(r.ErrorCode(), "verification_failed") << r.body;
  EXPECT_EQ(f.DumpTables(), tables);

  r = post(MakeRoot(f, 2, {TestKeys().root, new_root}, {new_root}));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["versions"]["root"], 2);
  EXPECT_EQ(r.json["versions"]["snapshot"], 2);
  EXPECT_EQ(ServedVersion(f, "2.root.json"), 2);
  EXPECT_EQ(ServedVersion(f, "root.json"), 2);
  EXPECT_EQ(ServedVersion(f, "1.root.json"), 1);
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 2);
  EXPECT_TRUE(Contains(AuditActions(f), "repository.rotate_root"));
}

TEST(UpdaterRepositoryApi, BlobUploadAndDownload) {
  ServiceFixture f;
  const std::string bytes = "encrypted blob bytes, in a test: 0123456789abcdefghijklmnopqrstuvwxyz";
  const std::string hex = Sha256Hex(bytes);
  const std::string path = "/api/v1/blobs/sha256/" + hex;
  const fs::path stored = f.dir() / "blobs/sha256" / hex;
  auto uploads_empty = [&] { return fs::is_empty(f.dir() / "blobs/uploads"); };

  // Refused before the body is stored.
  Reply r = f.Call("PUT", path, bytes);
  EXPECT_EQ(r.status, 401) << r.body;
  r = f.Call("PUT", path, bytes, f.token("support"));
  EXPECT_EQ(r.status, 403) << r.body;
  r = f.Call("PUT", "/api/v1/blobs/sha256/" + std::string(64, 'G'), bytes, f.token("publisher"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_FALSE(fs::exists(stored));
  EXPECT_TRUE(uploads_empty());
  // A body that does not hash to the address.
  const std::string tables = f.DumpTables();
  r = f.Call("PUT", path, bytes + "x", f.token("publisher"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(r.ErrorCode(), "digest_mismatch");
  EXPECT_FALSE(fs::exists(stored));
  EXPECT_TRUE(uploads_empty());
  EXPECT_EQ(f.DumpTables(), tables);

  r = f.Call("PUT", path, bytes, f.token("publisher"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(r.json["sha256"], hex);
  EXPECT_EQ(r.json["length"], bytes.size());
  EXPECT_EQ(r.json["created"], true);
  EXPECT_EQ(FileBytes(stored), bytes);
  EXPECT_TRUE(Contains(AuditActions(f), "blob.upload"));
  r = f.Call("PUT", path, bytes, f.token("publisher"));
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["created"], false);
  EXPECT_TRUE(uploads_empty());

  // Downloads need no token.
  r = f.Call("GET", path);
  ASSERT_EQ(r.status, 200);
  EXPECT_EQ(r.body, bytes);
  const std::string etag = "\"sha256-" + hex + "\"";
  EXPECT_EQ(r.Header("ETag"), etag);
  EXPECT_EQ(r.Header("Cache-Control"), "public, max-age=31536000, immutable");
  r = f.Call("GET", path, "", "", {{"Range", "bytes=10-19"}});
  EXPECT_EQ(r.status, 206);
  EXPECT_EQ(r.body, bytes.substr(10, 10));
  r = f.Call("GET", path, "", "", {{"Range", "bytes=10-19"}, {"If-Range", etag}});
  EXPECT_EQ(r.status, 206);
  r = f.Call("GET", path, "", "", {{"Range", "bytes=10-19"}, {"If-Range", "\"sha256-other\""}});
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.body, bytes);
  r = f.Call("HEAD", path);
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.Header("Content-Length"), std::to_string(bytes.size()));
  EXPECT_EQ(f.Call("GET", "/api/v1/blobs/sha256/" + std::string(64, '0')).status, 404);
  EXPECT_EQ(f.Call("GET", "/api/v1/blobs/sha256/abc").status, 400);
  EXPECT_EQ(f.Call("GET", "/api/v1/blobs/sha256/" + std::string(64, 'A')).status, 400);
}

TEST(UpdaterRepositoryApi, BlobLargerThanTheLimitIsRefusedBeforeItIsRead) {
  ServiceConfig config;
  config.max_blob_bytes = 16;
  ServiceFixture f(config);
  const std::string bytes(17, 'x');
  Reply r = f.Call("PUT", "/api/v1/blobs/sha256/" + Sha256Hex(bytes), bytes, f.token("publisher"));
  EXPECT_EQ(r.status, 413) << r.body;
  EXPECT_FALSE(fs::exists(f.dir() / "blobs/sha256" / Sha256Hex(bytes)));
  EXPECT_TRUE(fs::is_empty(f.dir() / "blobs/uploads"));
  const std::string fits(16, 'y');
  EXPECT_EQ(f.Call("PUT", "/api/v1/blobs/sha256/" + Sha256Hex(fits), fits, f.token("publisher")).status, 201);
}

TEST(UpdaterRepositoryApi, PublishHappyPath) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  const std::int64_t generation = CatalogGeneration(f);
  PublishedRelease pub = PublishRelease(f, "site", "5.1.0", "software", Json{{"settle_hours", 24}}, {"stable"});
  ASSERT_EQ(pub.reply.status, 201) << pub.reply.body;
  const Json& release = pub.reply.json["release"];
  EXPECT_EQ(release["name"], "site");
  EXPECT_EQ(release["version"], "5.1.0");
  EXPECT_EQ(release["kind"], "software");
  EXPECT_EQ(release["target_path"], "site/site-5.1.0.upk.enc");
  EXPECT_EQ(release["length"], pub.prepared.length);
  EXPECT_EQ(release["sha256"], pub.prepared.sha256);
  EXPECT_EQ(release["channels"], Json::array({"stable"}));
  EXPECT_EQ(release["published_by"], "token:test-publisher");
  EXPECT_TRUE(release["yanked_at"].is_null());
  EXPECT_EQ(release["manifest"]["settle_hours"], 24);
  EXPECT_EQ(pub.reply.json["versions"], (Json{{"root", 1}, {"targets", 2}, {"snapshot", 2}, {"timestamp", 2}}));
  EXPECT_GT(CatalogGeneration(f), generation);

  Reply list = f.Call("GET", "/api/v1/releases", "", f.token("support"));
  ASSERT_EQ(list.status, 200);
  ASSERT_EQ(list.json["releases"].size(), 1u);
  EXPECT_EQ(list.json["releases"][0], release);
  EXPECT_EQ(f.Call("GET", "/api/v1/releases?name=other", "", f.token("support")).json["releases"].size(), 0u);
  EXPECT_EQ(f.Call("GET", "/api/v1/releases/site/5.1.0", "", f.token("support")).json["release"], release);
  EXPECT_EQ(f.Call("GET", "/api/v1/releases/site/9.9.9", "", f.token("support")).ErrorCode(), "unknown_release");
  Reply channels = f.Call("GET", "/api/v1/channels", "", f.token("support"));
  EXPECT_EQ(channels.json["channels"][0]["name"], "stable");
  EXPECT_EQ(channels.json["channels"][0]["releases"], (Json::array({{{"name", "site"}, {"version", "5.1.0"}}})));
  auto actions = AuditActions(f);
  EXPECT_TRUE(Contains(actions, "blob.upload"));
  EXPECT_TRUE(Contains(actions, "release.publish"));

  // Files: the new metadata and both hash-prefixed names of the target.
  EXPECT_EQ(ServedVersion(f, "2.targets.json"), 2);
  EXPECT_EQ(ServedVersion(f, "2.snapshot.json"), 2);
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 2);
  const std::string blob = FileBytes(pub.prepared.blob);
  for (const std::string& h : {pub.prepared.sha256, pub.prepared.sha512}) {
    Reply t = f.Call("GET", "/repo/targets/site/" + h + ".site-5.1.0.upk.enc");
    EXPECT_EQ(t.status, 200) << h;
    EXPECT_EQ(t.body, blob);
  }

  // A second release follows from the new state.
  PublishedRelease second = PublishRelease(f, "site", "5.2.0");
  ASSERT_EQ(second.reply.status, 201) << second.reply.body;
  EXPECT_EQ(second.reply.json["versions"]["targets"], 3);
  EXPECT_EQ(f.Call("GET", "/api/v1/releases", "", f.token("support")).json["releases"].size(), 2u);
}

TEST(UpdaterRepositoryApi, TufClientVerifiesPublishedTarget) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  PublishedRelease pub = PublishRelease(f, "base", "2.0.0", "base");
  ASSERT_EQ(pub.reply.status, 201) << pub.reply.body;

  TempDir client;
  fs::create_directories(client.path() / "metadata");
  fs::create_directories(client.path() / "targets");
  { std::ofstream(client.path() / "metadata/root.json") << f.Call("GET", "/repo/metadata/1.root.json").body; }
  const std::string base = "http://127.0.0.1:" + std::to_string(f.port());
  tuf::UpdaterOptions options;
  options.metadata_dir = client.path() / "metadata";
  options.metadata_base_url = base + "/repo/metadata/";
  options.target_dir = client.path() / "targets";
  options.target_base_url = base + "/repo/targets/";
  auto fetcher = tuf::MakeHttpFetcher();
  tuf::Updater updater(options, *fetcher, SystemClock::Instance());
  ASSERT_TRUE(updater.Refresh().ok());
  auto info = updater.GetTargetInfo("base/base-2.0.0.upk.enc");
  ASSERT_TRUE(info.ok()) << info.error().message();
  ASSERT_TRUE(info->has_value());
  auto file = updater.DownloadTarget(**info);
  ASSERT_TRUE(file.ok()) << file.error().message();
  EXPECT_EQ(FileBytes(*file), FileBytes(pub.prepared.blob));
  // And the content key opens it into the signed package.
  const fs::path plain = client.path() / "base.upk";
  ASSERT_TRUE(trust::DecryptFile(*file, plain, *pub.prepared.content_key).ok());
  EXPECT_EQ(FileBytes(plain), FileBytes(pub.prepared.package));
}

TEST(UpdaterRepositoryApi, BadPublishInputsChangeNothing) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  ASSERT_EQ(PublishRelease(f, "site", "5.0.0").reply.status, 201);
  PreparedRelease good = PrepareRelease(f, ReleaseSpec{"site", "5.1.0"});
  const std::string tables = f.DumpTables();
  const auto stranger = packages::PrivateKey::GenerateEd25519();
  const Json current = CurrentTargets(f);
  const std::int64_t next = current["signed"]["version"].get<std::int64_t>() + 1;
  const Json good_targets = good.body["targets"]["signed"]["targets"];

  struct Case {
    std::string name;
    std::function<void(Json&)> tweak;
    int status;
    std::string code;
  };
  auto with_targets = [&](std::function<void(Json&)> edit, std::int64_t version = 0,
                          const packages::PrivateKey* key = nullptr) {
    return [=, &next](Json& body) {
      Json t = good_targets;
      edit(t);
      body["targets"] = MakeTargets(version ? version : next, t, key ? *key : TestKeys().targets);
    };
  };
  const std::string path = good.target_path;
  std::vector<Case> cases = {
      {"wrong targets signature", with_targets([](Json&) {}, 0, &stranger), 400, "verification_failed"},
      {"version not current + 1", with_targets([](Json&) {}, next + 1), 409, "version_conflict"},
      {"version equal to current", with_targets([](Json&) {}, next - 1), 409, "version_conflict"},
      {"extra target", with_targets([&](Json& t) { t["other/x.bin"] = t[path]; }), 400, "targets_mismatch"},
      {"missing old target", with_targets([](Json& t) { t.erase("site/site-5.0.0.upk.enc"); }), 400,
       "targets_mismatch"},
      {"new target not listed", with_targets([&](Json& t) { t.erase(path); }), 400, "targets_mismatch"},
      {"old target changed", with_targets([](Json& t) { t["site/site-5.0.0.upk.enc"]["length"] = 1; }), 400,
       "targets_mismatch"},
      {"length mismatch", with_targets([&](Json& t) { t[path]["length"] = good.length + 1; }), 400, "digest_mismatch"},
      {"sha512 mismatch", with_targets([&](Json& t) { t[path]["hashes"]["sha512"] = std::string(128, 'e'); }), 400,
       "digest_mismatch"},
      {"blob not uploaded", with_targets([&](Json& t) { t[path]["hashes"]["sha256"] = std::string(64, 'd'); }), 400,
       "blob_missing"},
      {"manifest signed by a wrong key",
       [&](Json& b) {
         b["manifest_signature"] = Base64Encode(
             packages::SerializeSignatureFile(packages::SignManifestBytes(good.manifest_bytes, {stranger})));
       },
       400, "verification_failed"},
      {"custom version differs from manifest",
       with_targets([&](Json& t) { t[path]["custom"]["upkeep"]["version"] = "5.1.1"; }), 400, "manifest_mismatch"},
      {"custom kind differs from manifest",
       with_targets([&](Json& t) { t[path]["custom"]["upkeep"]["kind"] = "base"; }), 400, "manifest_mismatch"},
      {"unknown channel",
       [](Json& b) {
         b["channels"] = Json::array({"stable", "nightly"});
       },
       404, "unknown_channel"},
      {"bad channel name", [](Json& b) { b["channels"] = Json::array({"Bad Name"}); }, 400, "invalid_field"},
      {"unknown field", [](Json& b) { b["extra"] = 1; }, 400, "unknown_field"},
      {"missing field", [](Json& b) { b.erase("manifest"); }, 400, ""},
      {"manifest not base64", [](Json& b) { b["manifest"] = "%%%"; }, 400, "invalid_field"},
      {"manifest not a manifest", [](Json& b) { b["manifest"] = Base64Encode(std::string("{}")); }, 400,
       "invalid_field"},
      {"sealed key malformed", [](Json& b) { b["sealed_content_key"] = Base64Encode(std::string("short")); }, 400,
       "invalid_field"},
      {"target path malformed", [](Json& b) { b["target_path"] = "../x"; }, 400, "invalid_field"},
      {"targets not metadata",
       [](Json& b) {
         b["targets"] = Json{{"signed", 1}};
       },
       400, "invalid_metadata"},
      {"targets expired",
       [&](Json& b) {
         Json s = b["targets"]["signed"];
         s["expires"] = "2001-01-01T00:00:00Z";
         b["targets"] = tuf::SignMetadata(s, {TestKeys().targets}).value();
       },
       400, "invalid_metadata"},
  };
  for (const Case& c : cases) {
    Json body = good.body;
    c.tweak(body);
    Reply r = f.Call("POST", "/api/v1/releases", body.dump(), f.token("publisher"));
    EXPECT_EQ(r.status, c.status) << c.name << ": " << r.body;
    if (!c.code.empty()) {
      EXPECT_EQ(r.ErrorCode(), c.code) << c.name << ": " << r.body;
    }
    EXPECT_EQ(f.DumpTables(), tables) << c.name;
  }
  Reply r = f.Call("POST", "/api/v1/releases", "{\"targets\":", f.token("publisher"));
  EXPECT_EQ(r.ErrorCode(), "malformed_json");
  r = f.Call("POST", "/api/v1/releases", good.body.dump(), f.token("support"));
  EXPECT_EQ(r.status, 403);
  EXPECT_EQ(f.DumpTables(), tables);

  // The untouched request still publishes.
  r = f.Call("POST", "/api/v1/releases", good.body.dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 201) << r.body;
}

TEST(UpdaterRepositoryApi, KeyserverOutageDuringPublishChangesNothing) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  PreparedRelease good = PrepareRelease(f, ReleaseSpec{"site", "5.1.0"});
  const std::string tables = f.DumpTables();
  f.keyserver().SetUnavailable(true);
  Reply r = f.Call("POST", "/api/v1/releases", good.body.dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 503) << r.body;
  EXPECT_EQ(r.ErrorCode(), "unavailable");
  EXPECT_TRUE(r.Header("Retry-After").has_value());
  EXPECT_EQ(f.DumpTables(), tables);
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 1);
  EXPECT_FALSE(fs::exists(f.dir() / "repo/metadata/2.targets.json"));
  f.keyserver().SetUnavailable(false);
  EXPECT_EQ(f.Call("POST", "/api/v1/releases", good.body.dump(), f.token("publisher")).status, 201);
}

TEST(UpdaterRepositoryApi, YankRemovesTheTargetButKeepsTheBlob) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  PublishedRelease pub = PublishRelease(f, "site", "5.1.0");
  ASSERT_EQ(pub.reply.status, 201) << pub.reply.body;
  const std::int64_t generation = CatalogGeneration(f);
  Json current = CurrentTargets(f);
  Json without = current["signed"]["targets"];
  without.erase(pub.prepared.target_path);
  const std::string url = "/api/v1/releases/site/5.1.0/yank";

  const std::string tables = f.DumpTables();
  // Not minus exactly the target; unknown release; empty reason.
  Reply r = f.Call(
      "POST", url,
      Json{{"targets", MakeTargets(3, current["signed"]["targets"], TestKeys().targets)}, {"reason", "broken"}}.dump(),
      f.token("publisher"));
  EXPECT_EQ(r.ErrorCode(), "targets_mismatch") << r.body;
  r = f.Call("POST", "/api/v1/releases/site/9.9.9/yank",
             Json{{"targets", MakeTargets(3, without, TestKeys().targets)}, {"reason", "broken"}}.dump(),
             f.token("publisher"));
  EXPECT_EQ(r.status, 404) << r.body;
  r = f.Call("POST", url, Json{{"targets", MakeTargets(3, without, TestKeys().targets)}, {"reason", ""}}.dump(),
             f.token("publisher"));
  EXPECT_EQ(r.status, 400) << r.body;
  EXPECT_EQ(f.DumpTables(), tables);

  const std::string yank = Json{{"targets", MakeTargets(3, without, TestKeys().targets)}, {"reason", "broken"}}.dump();
  r = f.Call("POST", url, yank, f.token("publisher"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_FALSE(r.json["release"]["yanked_at"].is_null());
  EXPECT_EQ(r.json["release"]["yank_reason"], "broken");
  EXPECT_EQ(r.json["versions"]["targets"], 3);
  EXPECT_GT(CatalogGeneration(f), generation);
  EXPECT_TRUE(Contains(AuditActions(f), "release.yank"));
  Reply targets3 = f.Call("GET", "/repo/metadata/3.targets.json");
  EXPECT_FALSE(targets3.json["signed"]["targets"].contains(pub.prepared.target_path));
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 3);
  // The blob and the old hash-prefixed target stay for clients of older metadata.
  EXPECT_EQ(f.Call("GET", "/api/v1/blobs/sha256/" + pub.prepared.sha256).status, 200);
  EXPECT_EQ(f.Call("GET", "/repo/targets/site/" + pub.prepared.sha256 + ".site-5.1.0.upk.enc").status, 200);

  r = f.Call("POST", url, yank, f.token("publisher"));
  EXPECT_EQ(r.status, 409);
  EXPECT_EQ(r.ErrorCode(), "already_yanked");
  // Its name and version stay taken, and it cannot join a channel any more.
  PreparedRelease again = PrepareRelease(f, ReleaseSpec{"site", "5.1.0"});
  r = f.Call("POST", "/api/v1/releases", again.body.dump(), f.token("publisher"));
  EXPECT_EQ(r.status, 409) << r.body;
  EXPECT_EQ(r.ErrorCode(), "release_exists");
  ASSERT_EQ(f.Call("POST", "/api/v1/channels", R"({"name":"beta"})", f.token("publisher")).status, 201);
  r = f.Call("POST", "/api/v1/channels/beta/releases", R"({"name":"site","version":"5.1.0"})", f.token("publisher"));
  EXPECT_EQ(r.status, 409) << r.body;
}

TEST(UpdaterRepositoryApi, Channels) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  EXPECT_EQ(f.Call("POST", "/api/v1/channels", R"({"name":"beta"})", f.token("support")).status, 403);
  Reply r =
      f.Call("POST", "/api/v1/channels", R"({"name":"beta","description":"early adopters"})", f.token("publisher"));
  ASSERT_EQ(r.status, 201) << r.body;
  EXPECT_EQ(f.Call("POST", "/api/v1/channels", R"({"name":"beta"})", f.token("publisher")).ErrorCode(),
            "channel_exists");
  const std::string tables = f.DumpTables();
  for (const char* bad : {R"({"name":"Beta"})", R"({"name":"-x"})", R"({"name":""})", R"({"name":1})",
                          R"({"name":"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"})", R"({"name":"x","other":1})"}) {
    EXPECT_EQ(f.Call("POST", "/api/v1/channels", bad, f.token("publisher")).status, 400) << bad;
  }
  EXPECT_EQ(f.DumpTables(), tables);
  EXPECT_TRUE(Contains(AuditActions(f), "channel.create"));

  ASSERT_EQ(PublishRelease(f, "site", "5.1.0", "software", Json::object(), {}).reply.status, 201);
  const std::int64_t generation = CatalogGeneration(f);
  r = f.Call("POST", "/api/v1/channels/beta/releases", R"({"name":"site","version":"5.1.0"})", f.token("publisher"));
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["added"], true);
  EXPECT_GT(CatalogGeneration(f), generation);
  r = f.Call("POST", "/api/v1/channels/beta/releases", R"({"name":"site","version":"5.1.0"})", f.token("publisher"));
  EXPECT_EQ(r.json["added"], false);
  EXPECT_EQ(
      f.Call("POST", "/api/v1/channels/nope/releases", R"({"name":"site","version":"5.1.0"})", f.token("publisher"))
          .ErrorCode(),
      "unknown_channel");
  EXPECT_EQ(
      f.Call("POST", "/api/v1/channels/beta/releases", R"({"name":"site","version":"1.0.0"})", f.token("publisher"))
          .ErrorCode(),
      "unknown_release");
  Reply list = f.Call("GET", "/api/v1/channels", "", f.token("support"));
  ASSERT_EQ(list.json["channels"].size(), 2u);
  EXPECT_EQ(list.json["channels"][0]["name"], "beta");
  EXPECT_EQ(list.json["channels"][0]["description"], "early adopters");
  EXPECT_EQ(list.json["channels"][0]["releases"], (Json::array({{{"name", "site"}, {"version", "5.1.0"}}})));
  EXPECT_EQ(list.json["channels"][1]["releases"], Json::array());
  EXPECT_EQ(f.Call("GET", "/api/v1/releases/site/5.1.0", "", f.token("support")).json["release"]["channels"],
            Json::array({"beta"}));
  EXPECT_TRUE(Contains(AuditActions(f), "channel.add_release"));
}

TEST(UpdaterRepositoryApi, RefreshJobKeepsTimestampAndSnapshotFresh) {
  FakeClock clock(SystemClock::Instance().Now());
  ServiceFixture f({}, &clock);
  ASSERT_EQ(Bootstrap(f).status, 200);
  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 1);  // fresh: nothing to do

  Reply metrics = f.Call("GET", "/metrics");
  EXPECT_NE(metrics.body.find("upkeep_updater_timestamp_expires_seconds"), std::string::npos) << metrics.body;

  clock.Advance(std::chrono::hours(13));  // past half of the 24 h timestamp validity
  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());
  Reply ts = f.Call("GET", "/repo/metadata/timestamp.json");
  EXPECT_EQ(ts.json["signed"]["version"], 2);
  EXPECT_EQ(ts.json["signed"]["meta"]["snapshot.json"]["version"], 1);
  EXPECT_EQ(ts.json["signed"]["expires"], FormatTimestamp(clock.Now() + std::chrono::hours(24)));

  // Keyserver down: the job fails, nothing changes, the next round succeeds.
  clock.Advance(std::chrono::hours(13));
  f.keyserver().SetUnavailable(true);
  const std::string tables = f.DumpTables();
  EXPECT_FALSE(f.service().RunBackgroundOnce().ok());
  EXPECT_EQ(f.DumpTables(), tables);
  f.keyserver().SetUnavailable(false);
  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 3);

  clock.Advance(std::chrono::hours(24 * 4));  // past half of the 7-day snapshot validity
  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());
  EXPECT_EQ(ServedVersion(f, "2.snapshot.json"), 2);
  ts = f.Call("GET", "/repo/metadata/timestamp.json");
  EXPECT_EQ(ts.json["signed"]["version"], 4);
  EXPECT_EQ(ts.json["signed"]["meta"]["snapshot.json"]["version"], 2);
}

TEST(UpdaterRepositoryApi, RepositoryDirectoryIsRematerialisedAtStart) {
  ServiceFixture f;
  ASSERT_EQ(Bootstrap(f).status, 200);
  PublishedRelease pub = PublishRelease(f, "site", "5.1.0");
  ASSERT_EQ(pub.reply.status, 201) << pub.reply.body;
  const fs::path repo = f.dir() / "repo";
  const std::string timestamp = FileBytes(repo / "metadata/timestamp.json");
  fs::remove_all(repo / "metadata");
  fs::remove_all(repo / "targets");

  ServiceConfig config;
  config.repo_dir = repo;
  config.blob_dir = f.dir() / "blobs";
  // The keyserver's keys are needed at start.
  f.keyserver().SetUnavailable(true);
  auto refused = Service::Create(
      ServiceDeps{f.pool(), f.keyserver(), SystemClock::Instance(), SystemRandom::Instance(), {}}, config);
  ASSERT_FALSE(refused.ok());
  EXPECT_NE(refused.error().message().find("keyserver"), std::string::npos);
  f.keyserver().SetUnavailable(false);

  auto second = Service::Create(
      ServiceDeps{f.pool(), f.keyserver(), SystemClock::Instance(), SystemRandom::Instance(), {}}, config);
  ASSERT_TRUE(second.ok()) << second.error().message();
  for (const char* file :
       {"1.root.json", "root.json", "1.targets.json", "2.targets.json", "1.snapshot.json", "2.snapshot.json"}) {
    EXPECT_TRUE(fs::exists(repo / "metadata" / file)) << file;
  }
  EXPECT_EQ(FileBytes(repo / "metadata/timestamp.json"), timestamp);
  for (const std::string& h : {pub.prepared.sha256, pub.prepared.sha512}) {
    EXPECT_EQ(FileBytes(repo / "targets/site" / (h + ".site-5.1.0.upk.enc")), FileBytes(pub.prepared.blob));
  }
  // The fixture's routes serve the rewritten files too.
  EXPECT_EQ(ServedVersion(f, "timestamp.json"), 2);
}

}  // namespace
}  // namespace upkeep::updater::test
