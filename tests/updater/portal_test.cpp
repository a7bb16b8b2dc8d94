// The download portal in-process (real PostgreSQL, FakeKeyserver, real releases published through
// the API so blobs and TUF metadata exist): offers and bundles for a real download key, the
// bundle read back with bundle::Reader and its assignment verified, withheld re-downloads and
// support's re-enable, every refused key with its status and code and nothing changed, install
// reports (once, then duplicates), the support bundle, link expiry, and the HTML form flow.
// Cluster bundles (several keys, one bundle), orphan bundle files, and upk's download stall
// time-out (against a raw socket server that stops sending).
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <fstream>
#include <sstream>
#include <thread>

#include "../../tools/upk/src/api_client.hpp"

#include "fleet_support.hpp"
#include "publish_support.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/packages/source.hpp"
#include "upkeep/trust/download_key.hpp"
#include "upkeep/trust/install_report.hpp"
#include "upkeep/upk/cli.hpp"

namespace upkeep::updater::test {
namespace {

const std::map<std::string, std::string> kInstalled = {{"base", "1.0.0"}, {"site", "5.0.0"}};

struct Portal {
  ServiceFixture& f;
  trust::ApplianceIdentity id = trust::ApplianceIdentity::Generate();

  explicit Portal(ServiceFixture& fixture) : f(fixture) {
    EXPECT_EQ(Bootstrap(f).status, 200);
    auto base = PublishRelease(f, "base", "1.1.0", "base");
    EXPECT_EQ(base.reply.status, 201) << base.reply.body;
    auto site = PublishRelease(f, "site", "5.1.0");
    EXPECT_EQ(site.reply.status, 201) << site.reply.body;
    EXPECT_TRUE(f.service().RunBackgroundOnce().ok());
    f.keyserver().AddAppliance(id);
  }

  std::string Key(SysTime issued, std::chrono::seconds validity = std::chrono::hours(24),
                  const std::map<std::string, std::string>& installed = kInstalled) const {
    trust::DownloadKey key;
    key.appliance_id = id.appliance_id();
    key.installed = ToInstalled(installed);
    key.issued = std::chrono::time_point_cast<std::chrono::seconds>(issued);
    key.validity = validity;
    Bytes nonce = SystemRandom::Instance().Generate(trust::kDownloadKeyNonceBytes);
    std::copy(nonce.begin(), nonce.end(), key.nonce.begin());
    auto text = trust::EncodeDownloadKey(key, id);
    if (!text.ok()) throw std::runtime_error(text.error().message());
    return *text;
  }
  std::string Key() const { return Key(SystemClock::Instance().Now()); }
  // A key of another node (enrolled by the caller).
  static std::string KeyOf(const trust::ApplianceIdentity& node, const std::map<std::string, std::string>& installed,
                           SysTime issued = SystemClock::Instance().Now()) {
    trust::DownloadKey key;
    key.appliance_id = node.appliance_id();
    key.installed = ToInstalled(installed);
    key.issued = std::chrono::time_point_cast<std::chrono::seconds>(issued);
    key.validity = std::chrono::hours(24);
    Bytes nonce = SystemRandom::Instance().Generate(trust::kDownloadKeyNonceBytes);
    std::copy(nonce.begin(), nonce.end(), key.nonce.begin());
    auto text = trust::EncodeDownloadKey(key, node);
    if (!text.ok()) throw std::runtime_error(text.error().message());
    return *text;
  }

  Reply Offers(const std::string& key) { return f.Call("POST", "/api/v1/portal/offers", Json{{"download_key", key}}.dump()); }
  Reply Bundles(const std::string& key) { return f.Call("POST", "/api/v1/portal/bundles", Json{{"download_key", key}}.dump()); }
};

std::string PortalTables(ServiceFixture& f) {
  std::string out = f.DumpTables();
  for (const char* t : {"portal_keys", "portal_bundles", "portal_downloads"}) {
    out += std::string(t) + ": " + SqlValue(f, std::string("SELECT coalesce(string_agg(t::text, ',' ORDER BY t::text), '') FROM ") + t + " t") + "\n";
  }
  return out;
}

struct ReadBundle {
  bundle::Header header;
  std::map<std::string, std::string> metadata;  // name -> bytes
  std::map<std::string, std::string> assignments;
  std::map<std::string, std::uint64_t> blobs;   // sha256 -> bytes read
};

ReadBundle ReadBack(const std::filesystem::path& path) {
  ReadBundle out;
  auto source = packages::OpenFileSource(path);
  if (!source.ok()) throw std::runtime_error(source.error().message());
  auto reader = bundle::Reader::Open(**source);
  if (!reader.ok()) throw std::runtime_error(reader.error().message());
  out.header = (*reader)->header();
  while (true) {
    auto next = (*reader)->Next();
    if (!next.ok()) throw std::runtime_error(next.error().message());
    if (!*next) break;
    std::string data;
    std::uint64_t n = 0;
    auto st = (*reader)->Read([&](std::string_view chunk) -> Status {
      n += chunk.size();
      if ((*next)->type != bundle::EntryType::kBlob) data.append(chunk);
      return OkStatus();
    });
    if (!st.ok()) throw std::runtime_error(st.error().message());
    if ((*next)->type == bundle::EntryType::kMetadata) out.metadata[(*next)->name] = data;
    if ((*next)->type == bundle::EntryType::kAssignment) out.assignments[(*next)->name] = data;
    if ((*next)->type == bundle::EntryType::kBlob) out.blobs[(*next)->name] = n;
  }
  return out;
}

std::filesystem::path Download(ServiceFixture& f, const std::string& url, const std::string& name) {
  HttpReply r = Call(f.port(), "GET", url);
  EXPECT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.Header("Content-Disposition").value_or(""), "attachment; filename=\"" + url.substr(url.rfind('/') + 1) + "\"");
  auto path = f.dir() / name;
  std::ofstream(path, std::ios::binary) << r.body;
  return path;
}

std::string FormEncode(std::string_view s) {
  std::string out;
  for (unsigned char ch : s) {
    if (std::isalnum(ch) || ch == '-' || ch == '_' || ch == '.') {
      out += static_cast<char>(ch);
    } else {
      char buf[4];
      std::snprintf(buf, sizeof buf, "%%%02X", ch);
      out += buf;
    }
  }
  return out;
}

HttpReply PostForm(ServiceFixture& f, const std::string& target, const std::string& body) {
  return Call(f.port(), "POST", target, {{"Content-Type", "application/x-www-form-urlencoded"}}, body);
}

TEST(UpdaterPortal, OffersThePlanAndBuildsAVerifiableBundle) {
  ServiceFixture f;
  Portal p(f);
  const std::string key = p.Key();
  Reply offers = p.Offers(key);
  ASSERT_EQ(offers.status, 200) << offers.body;
  EXPECT_EQ(offers.json["appliance_id"], p.id.appliance_id());
  EXPECT_LE(std::abs(offers.json["clock_offset_seconds"].get<std::int64_t>()), 5);
  ASSERT_EQ(offers.json["updates"].size(), 2u) << offers.body;
  EXPECT_EQ(offers.json["updates"][0]["name"], "base");
  EXPECT_EQ(offers.json["updates"][1]["name"], "site");
  EXPECT_EQ(offers.json["updates"][1]["version"], "5.1.0");
  EXPECT_TRUE(offers.json["updates"][1]["offered"].get<bool>());
  EXPECT_TRUE(offers.json["updates"][1]["withheld"].is_null());
  EXPECT_FALSE(offers.json["updates"][1]["reason"].get<std::string>().empty());
  EXPECT_GT(offers.json["bundle_bytes"].get<std::uint64_t>(), 0u);
  // Offers records the key as seen (and the appliance, new to the updater).
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_keys"), "1");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "0");

  Reply made = p.Bundles(key);
  ASSERT_EQ(made.status, 201) << made.body;
  EXPECT_EQ(made.json["updates"].size(), 2u);
  const std::string url = made.json["url"].get<std::string>();
  ASSERT_TRUE(url.starts_with("/portal/bundles/")) << url;
  auto path = Download(f, url, "got.upkb");
  EXPECT_EQ(std::filesystem::file_size(path), made.json["bytes"].get<std::uint64_t>());
  // The estimate of the offers was close (the signed assignment differs by a few bytes).
  EXPECT_LT(std::llabs(static_cast<long long>(offers.json["bundle_bytes"].get<std::uint64_t>()) -
                       static_cast<long long>(made.json["bytes"].get<std::uint64_t>())),
            2048);

  // Resume: a Range request answers the part.
  HttpReply part = Call(f.port(), "GET", url, {{"Range", "bytes=0-6"}});
  EXPECT_EQ(part.status, 206);
  EXPECT_EQ(part.body, "UPKBNDL");

  ReadBundle b = ReadBack(path);
  EXPECT_EQ(b.header.bundle_id, made.json["bundle_id"]);
  EXPECT_EQ(b.header.appliances, std::vector<std::string>{p.id.appliance_id()});
  // Root chain complete, and the newest of the other roles under consistent-snapshot names.
  EXPECT_TRUE(b.metadata.count("1.root.json"));
  EXPECT_TRUE(b.metadata.count("timestamp.json"));
  const std::string targets_version = SqlValue(f, "SELECT max(version) FROM tuf_metadata WHERE role = 'targets'");
  const std::string snapshot_version = SqlValue(f, "SELECT max(version) FROM tuf_metadata WHERE role = 'snapshot'");
  EXPECT_TRUE(b.metadata.count(targets_version + ".targets.json"));
  EXPECT_TRUE(b.metadata.count(snapshot_version + ".snapshot.json"));
  EXPECT_EQ(b.metadata.size(), 4u);

  // The assignment: the director's signature, bound to the key's nonce and state digest, 30 days.
  ASSERT_EQ(b.assignments.count(p.id.appliance_id()), 1u);
  auto decoded = trust::DecodeDownloadKey(key).value();
  auto a = trust::VerifyAssignment(b.assignments[p.id.appliance_id()], f.keyserver().director_key().public_key(),
                                   SystemClock::Instance(),
                                   {p.id.appliance_id(), decoded.key.state_digest(), decoded.key.nonce_hex()});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_EQ(a->nonce, decoded.key.nonce_hex());
  EXPECT_GT(a->expires - a->issued, std::chrono::hours(24 * 29));
  ASSERT_EQ(a->steps.size(), 2u);
  // Another nonce does not verify.
  EXPECT_FALSE(trust::VerifyAssignment(b.assignments[p.id.appliance_id()], f.keyserver().director_key().public_key(),
                                       SystemClock::Instance(),
                                       {p.id.appliance_id(), decoded.key.state_digest(), std::string(32, '0')})
                   .ok());
  for (const auto& step : a->steps) {
    ASSERT_TRUE(b.blobs.count(step.sha256)) << step.name;
    EXPECT_EQ(b.blobs[step.sha256], step.length);
    EXPECT_TRUE(trust::OpenContentKey(step.sealed_content_key, p.id).ok()) << "sealed to the appliance";
  }

  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "2");
  EXPECT_EQ(SqlValue(f, "SELECT nonce FROM portal_keys"), decoded.key.nonce_hex());
  EXPECT_EQ(SqlValue(f, "SELECT detail->>'key_nonce' FROM audit WHERE action = 'portal.bundle'"), decoded.key.nonce_hex());
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM appliances"), "1");

  // A newer key only looked at on the portal makes this one stale.
  ASSERT_EQ(p.Offers(p.Key(SystemClock::Instance().Now() + std::chrono::seconds(30))).status, 200);
  Reply stale = p.Offers(key);
  EXPECT_EQ(stale.status, 409);
  EXPECT_EQ(stale.ErrorCode(), "download_key_replayed");
}

TEST(UpdaterPortal, DownloadedStepsAreWithheldUntilSupportReEnablesThem) {
  ServiceFixture f;
  Portal p(f);
  const std::string key = p.Key();
  ASSERT_EQ(p.Bundles(key).status, 201);

  // The same key again: allowed, but nothing is offered any more.
  Reply again = p.Offers(key);
  ASSERT_EQ(again.status, 200) << again.body;
  for (const Json& u : again.json["updates"]) {
    EXPECT_FALSE(u["offered"].get<bool>());
    EXPECT_NE(u["withheld"].get<std::string>().find("support can re-enable it"), std::string::npos);
  }
  EXPECT_EQ(again.json["bundle_bytes"], 0);
  Reply none = p.Bundles(key);
  EXPECT_EQ(none.status, 409);
  EXPECT_EQ(none.ErrorCode(), "nothing_to_download");
  EXPECT_NE(none.json["error"]["message"].get<std::string>().find("already downloaded"), std::string::npos);

  const std::string base = "/api/v1/appliances/" + p.id.appliance_id();
  Reply list = f.Call("GET", base + "/downloads", "", f.token("support"));
  ASSERT_EQ(list.status, 200) << list.body;
  EXPECT_EQ(list.json["downloads"].size(), 2u);
  EXPECT_EQ(f.Call("GET", base + "/downloads").status, 401);

  Reply missing = f.Call("POST", base + "/downloads/reenable", Json{{"name", "site"}, {"version", "9.9.9"}}.dump(),
                         f.token("support"));
  EXPECT_EQ(missing.status, 404);
  EXPECT_EQ(missing.ErrorCode(), "not_downloaded");
  Reply re = f.Call("POST", base + "/downloads/reenable", Json{{"name", "site"}, {"version", "5.1.0"}}.dump(),
                    f.token("support"));
  ASSERT_EQ(re.status, 200) << re.body;
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'portal.reenable'"), "1");

  Reply offers = p.Offers(key);
  ASSERT_EQ(offers.status, 200);
  EXPECT_FALSE(offers.json["updates"][0]["offered"].get<bool>());
  EXPECT_TRUE(offers.json["updates"][1]["offered"].get<bool>());
  Reply made = p.Bundles(key);
  ASSERT_EQ(made.status, 201) << made.body;
  ASSERT_EQ(made.json["updates"].size(), 1u);
  EXPECT_EQ(made.json["updates"][0]["name"], "site");
}

TEST(UpdaterPortal, RefusesEveryBadKeyWithItsOwnAnswerAndChangesNothing) {
  ServiceFixture f;
  Portal p(f);
  const SysTime now = SystemClock::Instance().Now();
  // A newer key used first, so an older one is superseded.
  ASSERT_EQ(p.Bundles(p.Key(now - std::chrono::seconds(60))).status, 201);
  ASSERT_EQ(f.Call("POST", "/api/v1/appliances/" + p.id.appliance_id() + "/downloads/reenable",
                   Json{{"name", "site"}, {"version", "5.1.0"}}.dump(), f.token("support"))
                .status,
            200);
  const std::string before = PortalTables(f);

  std::string forged = p.Key();
  forged[forged.size() - 12] = forged[forged.size() - 12] == 'A' ? 'B' : 'A';
  trust::ApplianceIdentity stranger = trust::ApplianceIdentity::Generate();
  trust::DownloadKey sk;
  sk.appliance_id = stranger.appliance_id();
  sk.issued = std::chrono::time_point_cast<std::chrono::seconds>(now);
  const std::string unknown = trust::EncodeDownloadKey(sk, stranger).value();
  trust::ApplianceIdentity revoked = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(revoked);
  f.keyserver().Revoke(revoked.appliance_id());
  sk.appliance_id = revoked.appliance_id();
  const std::string revoked_key = trust::EncodeDownloadKey(sk, revoked).value();

  struct Case {
    std::string name, key;
    int status;
    std::string code, says;
  };
  const std::vector<Case> cases = {
      {"garbage", "UPK1-NOT-A-KEY!!", 400, "invalid_download_key", "damaged"},
      {"unknown appliance", unknown, 404, "unknown_appliance", stranger.appliance_id()},
      {"revoked", revoked_key, 403, "appliance_revoked", "revoked"},
      {"forged", forged, 400, "invalid_download_key", ""},
      {"expired", p.Key(now - std::chrono::hours(2), std::chrono::seconds(60)), 400, "download_key_expired", "expired"},
      {"clock ahead", p.Key(now + std::chrono::hours(1)), 400, "clock_skew", "NTP"},
      {"superseded", p.Key(now - std::chrono::seconds(120)), 409, "download_key_replayed", "use the newest"},
  };
  for (const Case& c : cases) {
    for (const char* route : {"offers", "bundles"}) {
      Reply r = f.Call("POST", std::string("/api/v1/portal/") + route, Json{{"download_key", c.key}}.dump());
      EXPECT_EQ(r.status, c.status) << c.name << " " << route << ": " << r.body;
      EXPECT_EQ(r.ErrorCode(), c.code) << c.name << " " << route;
      EXPECT_NE(r.json["error"]["message"].get<std::string>().find(c.says), std::string::npos)
          << c.name << ": " << r.body;
    }
  }
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/offers", "{\"download_key\": 5}").status, 400);
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/offers", Json{{"download_key", std::string(20000, 'A')}}.dump()).status, 413);
  EXPECT_EQ(PortalTables(f), before);
}

TEST(UpdaterPortal, AcceptsAnInstallReportOnce) {
  ServiceFixture f;
  Portal p(f);
  Reply made = p.Bundles(p.Key());
  ASSERT_EQ(made.status, 201);
  trust::InstallReport report;
  report.appliance_id = p.id.appliance_id();
  report.bundle_id = made.json["bundle_id"].get<std::string>();
  report.created = std::chrono::time_point_cast<std::chrono::seconds>(SystemClock::Instance().Now());
  report.installed = ToInstalled({{"base", "1.1.0"}, {"site", "5.1.0"}});
  const std::string at = FormatTimestamp(report.created);
  report.events = Json::array({Json{{"id", std::string(32, 'a')}, {"type", "install"}, {"name", "site"}, {"version", "5.1.0"}, {"at", at}, {"detail", Json::object()}},
                               Json{{"id", std::string(32, 'b')}, {"type", "success"}, {"name", "site"}, {"version", "5.1.0"}, {"at", at}, {"detail", Json::object()}}});
  const std::string text = trust::SignInstallReport(report, p.id).value();

  Reply r = f.Call("POST", "/api/v1/portal/reports", text);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.json["accepted_events"], 2);
  EXPECT_EQ(r.json["duplicates"], 0);
  Reply twice = f.Call("POST", "/api/v1/portal/reports", text);
  ASSERT_EQ(twice.status, 200);
  EXPECT_EQ(twice.json["accepted_events"], 0);
  EXPECT_EQ(twice.json["duplicates"], 2);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM events"), "2");
  EXPECT_EQ(SqlValue(f, "SELECT installed->>'site' FROM appliances"), "5.1.0");
  EXPECT_EQ(SqlValue(f, "SELECT last_checkin IS NOT NULL FROM appliances"), "t");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'portal.report'"), "2");

  // Signed by someone else: refused, nothing recorded.
  trust::ApplianceIdentity other = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(other);
  auto forged = ParseJson(text).value();
  forged["signed"]["installed"]["site"] = "9.0.0";
  const std::string before = PortalTables(f);
  Reply bad = f.Call("POST", "/api/v1/portal/reports", forged.dump());
  EXPECT_EQ(bad.status, 400) << bad.body;
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/reports", "not json").status, 400);
  EXPECT_EQ(PortalTables(f), before);
}

TEST(UpdaterPortal, SupportBuildsABundleForANamedAppliance) {
  ServiceFixture f;
  Portal p(f);
  const std::string target = "/api/v1/appliances/" + p.id.appliance_id() + "/bundle";
  const std::string body = Json{{"installed", {{"base", "1.1.0"}, {"site", "5.0.0"}}}}.dump();
  EXPECT_EQ(f.Call("POST", target, body).status, 401);
  Reply made = f.Call("POST", target, body, f.token("support"));
  ASSERT_EQ(made.status, 201) << made.body;
  ASSERT_EQ(made.json["updates"].size(), 1u);
  auto path = Download(f, made.json["url"].get<std::string>(), "support.upkb");
  ReadBundle b = ReadBack(path);
  auto a = trust::VerifyAssignment(b.assignments[p.id.appliance_id()], f.keyserver().director_key().public_key(),
                                   SystemClock::Instance(),
                                   {p.id.appliance_id(), trust::StateDigest(ToInstalled({{"base", "1.1.0"}, {"site", "5.0.0"}})),
                                    std::nullopt});
  ASSERT_TRUE(a.ok()) << a.error().message();
  EXPECT_FALSE(a->nonce.has_value());
  EXPECT_EQ(SqlValue(f, "SELECT actor FROM audit WHERE action = 'support.bundle'"), "token:test-support");
  // With a key for another appliance: refused.
  trust::ApplianceIdentity other = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(other);
  Portal* none = nullptr;
  (void)none;
  trust::DownloadKey k;
  k.appliance_id = other.appliance_id();
  k.issued = std::chrono::time_point_cast<std::chrono::seconds>(SystemClock::Instance().Now());
  Reply wrong = f.Call("POST", target, Json{{"download_key", trust::EncodeDownloadKey(k, other).value()}}.dump(),
                       f.token("support"));
  EXPECT_EQ(wrong.status, 400);
  EXPECT_EQ(wrong.ErrorCode(), "invalid_download_key");
}

TEST(UpdaterPortal, DownloadLinksExpireAndTheirFilesAreDeleted) {
  FakeClock clock(std::chrono::time_point_cast<std::chrono::seconds>(SystemClock::Instance().Now()));
  ServiceFixture f({}, &clock);
  Portal p(f);
  Reply made = p.Bundles(p.Key(clock.Now()));
  ASSERT_EQ(made.status, 201) << made.body;
  const std::string url = made.json["url"].get<std::string>();
  EXPECT_EQ(Call(f.port(), "GET", url).status, 200);
  EXPECT_EQ(Call(f.port(), "GET", url + "x").status, 404);
  clock.Advance(std::chrono::hours(25));
  EXPECT_EQ(Call(f.port(), "GET", url).status, 404);
  (void)f.service().RunBackgroundOnce();
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_bundles"), "0");
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(f.dir() / "blobs" / "bundles")) {
    (void)e;
    ++files;
  }
  EXPECT_EQ(files, 0u);
}

TEST(UpdaterPortal, TheHtmlFormFlowWorksLikeABrowser) {
  ServiceFixture f;
  Portal p(f);
  HttpReply page = Call(f.port(), "GET", "/portal");
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(page.Header("Content-Type").value_or("").starts_with("text/html"));
  EXPECT_NE(page.Header("Content-Security-Policy").value_or("").find("default-src 'none'"), std::string::npos);
  EXPECT_NE(page.body.find("name=\"download_key\""), std::string::npos);
  EXPECT_EQ(page.body.find("<script"), std::string::npos);

  const std::string key = p.Key();
  HttpReply offers = PostForm(f, "/portal", "download_key=" + FormEncode(key));
  ASSERT_EQ(offers.status, 200) << offers.body;
  EXPECT_NE(offers.body.find(p.id.appliance_id()), std::string::npos);
  EXPECT_NE(offers.body.find("<td>site</td><td>5.1.0</td>"), std::string::npos) << offers.body;
  EXPECT_NE(offers.body.find("action=\"/portal/bundle\""), std::string::npos);

  HttpReply go = PostForm(f, "/portal/bundle", "download_key=" + FormEncode(key));
  ASSERT_EQ(go.status, 303) << go.body;
  const std::string location = go.Header("Location").value_or("");
  ASSERT_TRUE(location.starts_with("/portal/bundles/")) << location;
  auto path = Download(f, location, "browser.upkb");
  EXPECT_EQ(ReadBack(path).assignments.size(), 1u);

  // Again: the page says why there is nothing to download, next to the button.
  HttpReply none = PostForm(f, "/portal/bundle", "download_key=" + FormEncode(key));
  EXPECT_EQ(none.status, 200) << "a form shown again with its error is a page that worked (no failed load in a browser)";
  EXPECT_NE(none.body.find("already downloaded"), std::string::npos);

  // Errors are shown escaped next to the field.
  HttpReply bad = PostForm(f, "/portal", "download_key=" + FormEncode("<script>alert(1)</script>"));
  EXPECT_EQ(bad.status, 200);
  EXPECT_EQ(bad.body.find("<script>"), std::string::npos);
  EXPECT_NE(bad.body.find("&lt;script&gt;"), std::string::npos);
  EXPECT_NE(bad.body.find("class=\"error\""), std::string::npos);
  HttpReply undecodable = PostForm(f, "/portal", "download_key=%ZZ");
  EXPECT_EQ(undecodable.status, 200);
  EXPECT_NE(undecodable.body.find("class=\"error\""), std::string::npos);
  EXPECT_NE(PostForm(f, "/portal", "download_key=").body.find("it is empty"), std::string::npos);
  EXPECT_EQ(PostForm(f, "/portal", std::string(600 * 1024, 'a')).status, 413);

  // The report form.
  trust::InstallReport report;
  report.appliance_id = p.id.appliance_id();
  report.bundle_id = std::string(32, 'c');
  report.created = std::chrono::time_point_cast<std::chrono::seconds>(SystemClock::Instance().Now());
  report.installed = ToInstalled({{"base", "1.1.0"}, {"site", "5.1.0"}});
  HttpReply accepted = PostForm(f, "/portal/report", "report=" + FormEncode(trust::SignInstallReport(report, p.id).value()));
  EXPECT_EQ(accepted.status, 200) << accepted.body;
  EXPECT_NE(accepted.body.find("accepted"), std::string::npos);
  HttpReply refused = PostForm(f, "/portal/report", "report=nonsense");
  EXPECT_EQ(refused.status, 200);
  EXPECT_NE(refused.body.find("class=\"error\""), std::string::npos);
  // The same report as a file upload (multipart/form-data, as a browser's file field sends it).
  const std::string multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"report\"; filename=\"report.json\"\r\n"
                                "Content-Type: application/json\r\n\r\n" +
                                trust::SignInstallReport(report, p.id).value() + "\r\n--XyZ--\r\n";
  HttpReply uploaded = Call(f.port(), "POST", "/portal/report", {{"Content-Type", "multipart/form-data; boundary=XyZ"}}, multipart);
  EXPECT_EQ(uploaded.status, 200) << uploaded.body;
  EXPECT_NE(uploaded.body.find("accepted"), std::string::npos);
  HttpReply unterminated = Call(f.port(), "POST", "/portal/report", {{"Content-Type", "multipart/form-data; boundary=XyZ"}},
                                multipart.substr(0, multipart.size() - 12));
  EXPECT_EQ(unterminated.status, 200);
  EXPECT_NE(unterminated.body.find("Paste the installation report"), std::string::npos);
}

struct UpkRun {
  int code;
  std::string out, err;
};

UpkRun Upk(ServiceFixture& f, std::vector<std::string> args) {
  const auto token = f.dir() / "support.token";
  std::ofstream(token) << f.token("support") << "\n";
  std::filesystem::permissions(token, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write);
  args.insert(args.begin(), "upk");
  for (const std::string& extra : std::vector<std::string>{"--server", "http://127.0.0.1:" + std::to_string(f.port()), "--token-file", token.string()}) {
    args.push_back(extra);
  }
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  int code = upk::Main(static_cast<int>(argv.size()), argv.data(), out, err);
  return {code, out.str(), err.str()};
}

TEST(UpdaterPortal, UpkBundleDownloadsTheBundleAtomically) {
  ServiceFixture f;
  Portal p(f);
  const auto key_file = f.dir() / "key.txt";
  std::ofstream(key_file) << p.Key() << "\n";
  const auto out = f.dir() / "upk.upkb";
  UpkRun run = Upk(f, {"bundle", p.id.appliance_id(), "--download-key", "@" + key_file.string(), "-o", out.string()});
  ASSERT_EQ(run.code, 0) << run.err;
  EXPECT_NE(run.out.find("wrote " + out.string()), std::string::npos) << run.out;
  EXPECT_FALSE(std::filesystem::exists(out.string() + ".part"));
  ReadBundle b = ReadBack(out);
  EXPECT_EQ(b.blobs.size(), 2u);
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'support.bundle'"), "1");

  UpkRun list = Upk(f, {"appliance", "downloads", p.id.appliance_id()});
  ASSERT_EQ(list.code, 0) << list.err;
  EXPECT_NE(list.out.find("site"), std::string::npos) << list.out;
  // Nothing left to download: a policy refusal (exit 1), no file written.
  const auto again = f.dir() / "again.upkb";
  UpkRun none = Upk(f, {"bundle", p.id.appliance_id(), "--installed", "base=1.0.0", "--installed", "site=5.0.0", "-o",
                        again.string()});
  EXPECT_EQ(none.code, 1) << none.err;
  EXPECT_NE(none.err.find("nothing_to_download"), std::string::npos) << none.err;
  EXPECT_FALSE(std::filesystem::exists(again));
  UpkRun re = Upk(f, {"appliance", "reenable-download", p.id.appliance_id(), "site", "5.1.0"});
  ASSERT_EQ(re.code, 0) << re.err;
  UpkRun made = Upk(f, {"bundle", p.id.appliance_id(), "--installed", "base=1.1.0", "--installed", "site=5.0.0", "-o",
                        again.string()});
  ASSERT_EQ(made.code, 0) << made.err;
  EXPECT_EQ(ReadBack(again).blobs.size(), 1u);
  EXPECT_EQ(Upk(f, {"appliance", "reenable-download", p.id.appliance_id(), "site", "9.9.9"}).code, 2);
}

// ---- clusters ---------------------------------------------------------------------------------

const std::map<std::string, std::string> kNode2 = {{"base", "1.1.0"}, {"site", "5.0.0"}};

Reply ClusterCall(ServiceFixture& f, const std::string& route, const std::vector<std::string>& keys) {
  return f.Call("POST", "/api/v1/portal/" + route, Json{{"download_keys", keys}}.dump());
}

TEST(UpdaterPortal, OneBundleForAClusterHasAnAssignmentPerNodeAndEachBlobOnce) {
  ServiceFixture f;
  Portal p(f);
  trust::ApplianceIdentity node2 = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(node2);
  const std::string k1 = p.Key(), k2 = Portal::KeyOf(node2, kNode2);

  Reply offers = ClusterCall(f, "offers", {k1, k2});
  ASSERT_EQ(offers.status, 200) << offers.body;
  ASSERT_EQ(offers.json["appliances"].size(), 2u);
  EXPECT_EQ(offers.json["appliances"][0]["appliance_id"], p.id.appliance_id());
  EXPECT_EQ(offers.json["appliances"][1]["appliance_id"], node2.appliance_id());
  EXPECT_EQ(offers.json["appliances"][0]["updates"].size(), 2u);  // base and site
  ASSERT_EQ(offers.json["appliances"][1]["updates"].size(), 1u);  // site only
  EXPECT_EQ(offers.json["appliances"][1]["updates"][0]["name"], "site");
  const auto cluster_estimate = offers.json["bundle_bytes"].get<std::uint64_t>();
  // The shared blob counts once: less than the two nodes' own bundles together.
  EXPECT_GT(cluster_estimate, offers.json["appliances"][0]["bundle_bytes"].get<std::uint64_t>());
  EXPECT_LT(cluster_estimate, offers.json["appliances"][0]["bundle_bytes"].get<std::uint64_t>() +
                                  offers.json["appliances"][1]["bundle_bytes"].get<std::uint64_t>());
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_keys"), "2");

  Reply made = ClusterCall(f, "bundles", {k1, k2});
  ASSERT_EQ(made.status, 201) << made.body;
  ASSERT_EQ(made.json["appliances"].size(), 2u);
  EXPECT_EQ(made.json["appliances"][1]["updates"].size(), 1u);
  EXPECT_EQ(made.json["updates"].size(), 3u);  // every node's, each naming its node
  EXPECT_EQ(made.json["updates"][2]["appliance_id"], node2.appliance_id());
  auto path = Download(f, made.json["url"].get<std::string>(), "cluster.upkb");
  EXPECT_EQ(std::filesystem::file_size(path), made.json["bytes"].get<std::uint64_t>());
  EXPECT_LT(std::llabs(static_cast<long long>(cluster_estimate) - static_cast<long long>(made.json["bytes"].get<std::uint64_t>())),
            4096);

  ReadBundle b = ReadBack(path);
  EXPECT_EQ(b.header.appliances, (std::vector<std::string>{p.id.appliance_id(), node2.appliance_id()}));
  ASSERT_EQ(b.assignments.size(), 2u);
  EXPECT_EQ(b.blobs.size(), 2u);  // site 5.1.0 is needed by both, carried once
  const std::vector<std::pair<const trust::ApplianceIdentity*, std::string>> nodes = {{&p.id, k1}, {&node2, k2}};
  for (std::size_t i = 0; i < nodes.size(); ++i) {
    const trust::ApplianceIdentity& me = *nodes[i].first;
    const trust::ApplianceIdentity& other = *nodes[1 - i].first;
    auto key = trust::DecodeDownloadKey(nodes[i].second).value().key;
    ASSERT_TRUE(b.assignments.count(me.appliance_id()));
    auto a = trust::VerifyAssignment(b.assignments[me.appliance_id()], f.keyserver().director_key().public_key(),
                                     SystemClock::Instance(), {me.appliance_id(), key.state_digest(), key.nonce_hex()});
    ASSERT_TRUE(a.ok()) << i << ": " << a.error().message();
    EXPECT_EQ(a->steps.size(), i == 0 ? 2u : 1u);
    // Bound to this node: the other node's id or nonce does not verify.
    auto other_key = trust::DecodeDownloadKey(nodes[1 - i].second).value().key;
    EXPECT_FALSE(trust::VerifyAssignment(b.assignments[me.appliance_id()], f.keyserver().director_key().public_key(),
                                         SystemClock::Instance(), {me.appliance_id(), key.state_digest(), other_key.nonce_hex()})
                     .ok());
    EXPECT_FALSE(trust::VerifyAssignment(b.assignments[me.appliance_id()], f.keyserver().director_key().public_key(),
                                         SystemClock::Instance(), {other.appliance_id(), key.state_digest(), key.nonce_hex()})
                     .ok());
    for (const auto& step : a->steps) {
      ASSERT_TRUE(b.blobs.count(step.sha256)) << step.name;
      EXPECT_EQ(b.blobs[step.sha256], step.length);
      EXPECT_TRUE(trust::OpenContentKey(step.sealed_content_key, me).ok()) << "sealed to node " << i;
      EXPECT_FALSE(trust::OpenContentKey(step.sealed_content_key, other).ok()) << "not to the other node";
    }
  }
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_downloads"), "3");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM portal_bundles"), "1");
  EXPECT_EQ(SqlValue(f, "SELECT count(*) FROM audit WHERE action = 'portal.bundle'"), "2");
  EXPECT_EQ(SqlValue(f, "SELECT count(DISTINCT detail->>'bundle_id') FROM audit WHERE action = 'portal.bundle'"), "1");

  // Downloaded once, per node: the same keys again offer nothing.
  Reply again = ClusterCall(f, "bundles", {k1, k2});
  EXPECT_EQ(again.status, 409);
  EXPECT_EQ(again.ErrorCode(), "nothing_to_download");
  // Support re-enables site for node 2 only: the cluster bundle holds node 1 with no steps.
  ASSERT_EQ(f.Call("POST", "/api/v1/appliances/" + node2.appliance_id() + "/downloads/reenable",
                   Json{{"name", "site"}, {"version", "5.1.0"}}.dump(), f.token("support"))
                .status,
            200);
  Reply partial = ClusterCall(f, "bundles", {k1, k2});
  ASSERT_EQ(partial.status, 201) << partial.body;
  ReadBundle b2 = ReadBack(Download(f, partial.json["url"].get<std::string>(), "partial.upkb"));
  EXPECT_EQ(b2.assignments.size(), 2u);
  EXPECT_EQ(b2.blobs.size(), 1u);
  // The single-key form still answers as before.
  Reply single = p.Offers(k1);
  ASSERT_EQ(single.status, 200);
  EXPECT_FALSE(single.json.contains("appliances"));
}

TEST(UpdaterPortal, AClusterSubmissionNamesItsFirstBadKeyAndRecordsNothing) {
  ServiceFixture f;
  Portal p(f);
  trust::ApplianceIdentity node2 = trust::ApplianceIdentity::Generate(), node3 = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(node2);
  f.keyserver().AddAppliance(node3);
  const SysTime now = SystemClock::Instance().Now();
  // Node 3 has used a newer key: its older one is superseded.
  ASSERT_EQ(p.Offers(Portal::KeyOf(node3, kNode2, now)).status, 200);
  const std::string before = PortalTables(f);

  std::string forged = Portal::KeyOf(node2, kNode2);
  forged[forged.size() - 12] = forged[forged.size() - 12] == 'A' ? 'B' : 'A';
  const std::string good = p.Key();
  struct Case {
    std::string name;
    std::vector<std::string> keys;
    int status;
    std::string code, starts;
  };
  const std::vector<Case> cases = {
      {"forged second", {good, forged}, 400, "invalid_download_key", "key 2 of 2"},
      {"garbage second", {good, "UPK1-NOPE"}, 400, "invalid_download_key", "key 2 of 2: "},
      {"expired first", {Portal::KeyOf(node2, kNode2, now - std::chrono::hours(30)), good}, 400, "download_key_expired",
       "key 1 of 2 (" + node2.appliance_id() + "): "},
      {"superseded third", {good, Portal::KeyOf(node2, kNode2), Portal::KeyOf(node3, kNode2, now - std::chrono::seconds(90))},
       409, "download_key_replayed", "key 3 of 3 (" + node3.appliance_id() + "): "},
      {"same appliance twice", {good, p.Key()}, 400, "duplicate_appliance", "key 2 of 2 (" + p.id.appliance_id() + "): "},
  };
  for (const Case& c : cases) {
    for (const char* route : {"offers", "bundles"}) {
      Reply r = ClusterCall(f, route, c.keys);
      EXPECT_EQ(r.status, c.status) << c.name << " " << route << ": " << r.body;
      EXPECT_EQ(r.ErrorCode(), c.code) << c.name << " " << route;
      EXPECT_TRUE(r.json["error"]["message"].get<std::string>().starts_with(c.starts)) << c.name << ": " << r.body;
    }
  }
  EXPECT_EQ(PortalTables(f), before);  // not even the good first key was recorded

  EXPECT_EQ(ClusterCall(f, "offers", {}).status, 400);
  EXPECT_EQ(ClusterCall(f, "offers", std::vector<std::string>(65, good)).status, 400);
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/offers", Json{{"download_keys", good}}.dump()).status, 400);
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/offers", Json{{"download_keys", Json::array({good, 5})}}.dump()).status, 400);
  EXPECT_EQ(f.Call("POST", "/api/v1/portal/offers", Json{{"download_key", good}, {"download_keys", {good}}}.dump()).status,
            400);
  EXPECT_EQ(PortalTables(f), before);
}

TEST(UpdaterPortal, TheHtmlFormTakesAClustersKeysInOneTextarea) {
  ServiceFixture f;
  Portal p(f);
  trust::ApplianceIdentity node2 = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(node2);
  // As pasted: each key keeps its own line breaks, blank lines between them.
  const std::string both = p.Key() + "\r\n\r\n" + Portal::KeyOf(node2, kNode2) + "\r\n";
  ASSERT_NE(both.find('\n'), std::string::npos);
  HttpReply offers = PostForm(f, "/portal", "download_key=" + FormEncode(both));
  ASSERT_EQ(offers.status, 200) << offers.body;
  EXPECT_NE(offers.body.find("2 nodes"), std::string::npos) << offers.body;
  EXPECT_NE(offers.body.find("Node " + p.id.appliance_id()), std::string::npos);
  EXPECT_NE(offers.body.find("Node " + node2.appliance_id()), std::string::npos);
  EXPECT_NE(offers.body.find("<td>site</td><td>5.1.0</td>"), std::string::npos);

  HttpReply go = PostForm(f, "/portal/bundle", "download_key=" + FormEncode(both));
  ASSERT_EQ(go.status, 303) << go.body;
  auto path = Download(f, go.Header("Location").value_or(""), "cluster-form.upkb");
  ReadBundle b = ReadBack(path);
  EXPECT_EQ(b.assignments.size(), 2u);
  EXPECT_EQ(b.blobs.size(), 2u);

  // A bad second key: the page names it.
  HttpReply bad = PostForm(f, "/portal", "download_key=" + FormEncode(p.Key() + "\nUPK1-AAAA"));
  EXPECT_EQ(bad.status, 200);
  EXPECT_NE(bad.body.find("key 2 of 2"), std::string::npos) << bad.body;
  EXPECT_EQ(PostForm(f, "/portal", std::string(600 * 1024, 'a')).status, 413);
}

// ---- clean-up of files without a link ---------------------------------------------------------

TEST(UpdaterPortal, CleanupDeletesBundleFilesWithoutARowAndStalePartFiles) {
  FakeClock clock(std::chrono::time_point_cast<std::chrono::seconds>(SystemClock::Instance().Now()));
  ServiceFixture f({}, &clock);
  Portal p(f);
  Reply made = p.Bundles(p.Key(clock.Now()));
  ASSERT_EQ(made.status, 201) << made.body;
  const auto dir = f.dir() / "blobs" / "bundles";
  const std::string url = made.json["url"].get<std::string>();
  const auto linked = dir / (url.substr(16, 32) + ".upkb");
  ASSERT_TRUE(std::filesystem::exists(linked)) << linked;

  auto make = [&](const std::string& name, std::chrono::hours age) {
    const auto path = dir / name;
    std::ofstream(path) << "x";
    std::filesystem::last_write_time(path, std::chrono::file_clock::from_sys(std::chrono::system_clock::now() - age));
    return path;
  };
  const auto old = std::chrono::hours(25), recent = std::chrono::hours(0);
  const auto orphan_old = make(std::string(32, 'a') + ".upkb", old);
  const auto orphan_new = make(std::string(32, 'b') + ".upkb", recent);
  const auto part_old = make(std::string(32, 'c') + ".upkb.part", std::chrono::hours(2));
  const auto part_new = make(std::string(32, 'd') + ".upkb.part", recent);
  const auto foreign = make("README.txt", old);
  std::filesystem::last_write_time(linked, std::chrono::file_clock::from_sys(std::chrono::system_clock::now() - old));

  ASSERT_TRUE(f.service().RunBackgroundOnce().ok());
  EXPECT_FALSE(std::filesystem::exists(orphan_old));
  EXPECT_TRUE(std::filesystem::exists(orphan_new));
  EXPECT_FALSE(std::filesystem::exists(part_old));
  EXPECT_TRUE(std::filesystem::exists(part_new));
  EXPECT_TRUE(std::filesystem::exists(foreign));
  EXPECT_TRUE(std::filesystem::exists(linked)) << "its link is still valid";
  EXPECT_EQ(Call(f.port(), "GET", url).status, 200);
}

// ---- upk: the download fails on a stall, not on its total time ---------------------------------

// Serves one GET: the head and `chunks` pieces of 64 KiB (cpprestsdk's read size) `gap` apart,
// then (stall) nothing more.
constexpr std::size_t kPiece = 64 * 1024;
class TrickleServer {
 public:
  TrickleServer(int chunks, std::chrono::milliseconds gap, bool stall) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 || ::listen(fd_, 4) != 0 ||
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
      throw std::runtime_error("cannot listen");
    }
    port_ = ntohs(addr.sin_port);
    thread_ = std::thread([this, chunks, gap, stall] {
      int c = ::accept(fd_, nullptr, nullptr);
      if (c < 0) return;
      std::string head;
      char buf[1024];
      while (head.find("\r\n\r\n") == std::string::npos) {
        ssize_t n = ::recv(c, buf, sizeof buf, 0);
        if (n <= 0) break;
        head.append(buf, static_cast<std::size_t>(n));
      }
      const std::size_t total = static_cast<std::size_t>(chunks) * kPiece + (stall ? kPiece : 0);
      std::string reply = "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                          std::to_string(total) + "\r\n\r\n";
      (void)::send(c, reply.data(), reply.size(), MSG_NOSIGNAL);
      for (int i = 0; i < chunks && !stop_; ++i) {
        std::this_thread::sleep_for(gap);
        const std::string piece(kPiece, 'z');
        (void)::send(c, piece.data(), piece.size(), MSG_NOSIGNAL);
      }
      while (stall && !stop_) std::this_thread::sleep_for(std::chrono::milliseconds(50));
      ::close(c);
    });
  }
  ~TrickleServer() {
    stop_ = true;
    ::shutdown(fd_, SHUT_RDWR);
    thread_.join();
    ::close(fd_);
  }
  std::uint16_t port() const { return port_; }

 private:
  int fd_ = -1;
  std::uint16_t port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

TEST(UpkDownload, ASlowButMovingDownloadOutlastsTheTimeoutAndAStalledOneFails) {
  const auto dir = std::filesystem::temp_directory_path() / ("upk-stall-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  {
    // 3.5 s in all with the time-out at 1 s: fine, it never stops for a second.
    TrickleServer server(7, std::chrono::milliseconds(500), false);
    upk::ApiClientOptions o;
    o.server = "http://127.0.0.1:" + std::to_string(server.port());
    o.timeout = std::chrono::seconds(1);
    auto client = upk::ApiClient::Create(o).value();
    std::uint64_t last = 0;
    auto got = client.Download("/slow.upkb", dir / "slow", [&](std::uint64_t n, std::uint64_t) { last = n; });
    ASSERT_TRUE(got.ok()) << got.error().message();
    EXPECT_EQ(got->status, 200);
    EXPECT_EQ(std::filesystem::file_size(dir / "slow"), 7 * kPiece);
    EXPECT_EQ(last, 7 * kPiece);
  }
  {
    TrickleServer server(2, std::chrono::milliseconds(100), true);
    upk::ApiClientOptions o;
    o.server = "http://127.0.0.1:" + std::to_string(server.port());
    o.timeout = std::chrono::seconds(1);
    auto client = upk::ApiClient::Create(o).value();
    const auto start = std::chrono::steady_clock::now();
    auto got = client.Download("/stalled.upkb", dir / "stalled");
    const auto took = std::chrono::steady_clock::now() - start;
    ASSERT_FALSE(got.ok());
    EXPECT_EQ(got.error().code(), Errc::kIo);
    EXPECT_NE(got.error().message().find("stalled"), std::string::npos) << got.error().message();
    EXPECT_LT(took, std::chrono::seconds(10));
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace upkeep::updater::test
