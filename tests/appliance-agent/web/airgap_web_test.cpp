// The updates page's air-gapped panel (appliance-agent/web/airgap_panel.cpp) over real HTTPS on
// loopback, with a real agent state (the core tests' world, core_world.hpp) and the page's job
// queue run by the test as the daemon would: the download key (form validation, the job, the key
// page with its inline QR code), the bundle upload (every refusal before a job, a real bundle
// imported and installed, a tampered one failing its job and changing nothing, the uploaded file
// gone either way) and the installation report download.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <algorithm>
#include <filesystem>
#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "../core/bundle_entries.hpp"
#include "../core/core_world.hpp"
#include "page_test_kit.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/bundle/bundle.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/qr.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/trust/download_key.hpp"
#include "upkeep/web/password.hpp"

// In the kit's namespace: its names come first (net::test's HttpResponse, not the agent's).
namespace upkeep::agent::pagetest {
namespace {

std::vector<std::string> FilesIn(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) out.push_back(e.path().filename().string());
  return out;
}

class AirgapWebTest : public PageTest {
 protected:
  // The read-only runtime judges by the system clock: the world runs on it too.
  AirgapWebTest() : PageTest(NowSeconds()) {}
  void SetUp() override {
    AddStandardReleases(vendor_);
    vendor_.channel = {"base-2.0.0", "software-7.1.0", "software-8.0.0"};
    world_ = std::make_unique<World>(vendor_, clock_);
    world_->Provision("base-1.0.0");
    world_->Provision("software-7.0.0");
    // The page's read-only views open the state through the configuration's files.
    world_->config.identity_file = world_->root() / "identity.json";
    world_->config.director_key_file = world_->root() / "director.pub";
    ASSERT_TRUE(vendor_.identity().Save(world_->config.identity_file).ok());
    ASSERT_TRUE(
        WriteFileAtomic(world_->config.director_key_file, vendor_.director().public_key().ToJson().dump()).ok());
    source_ = MakeRuntimeUpdatesSource(world_->config);
    TrustCertificate(certs_.path());
    StartHost(true);
  }

  void StartHost(bool with_daemon) {
    WebDaemonLink link;
    if (with_daemon) {
      link.jobs = &jobs_;
      link.config = &world_->config;
    }
    StartWebHost(*source_, link);
  }

  Jar SignIn(const std::string& name = "admin", const std::string& password = kAdminPassword) {
    if (auto n = accounts_.Count(); n.ok() && *n == 0) DoSetup();
    return LoginAs(name, password);
  }

  // Runs the queued jobs as the daemon does, over the world's agent.
  void RunJobs() {
    AgentRuntime rt;
    rt.config = world_->config;
    rt.store = std::move(world_->store);
    rt.agent = std::move(world_->agent);
    jobs_.RunPending(rt);
    world_->store = std::move(rt.store);
    world_->agent = std::move(rt.agent);
  }

  JobSnapshot Job(std::uint64_t id) {
    auto j = jobs_.Get(id);
    EXPECT_TRUE(j.has_value()) << "job " << id;
    return j.value_or(JobSnapshot{});
  }

  // Makes a download key through the page; returns its text as the key page shows it.
  std::string MakeKeyOnThePage(Jar& jar) {
    auto page = Do("GET", "/", &jar);
    auto r = Do("POST", "/download-key", &jar, "csrf_token=" + CsrfFor(page.body, "/download-key") + "&valid_hours=24",
                origin_);
    EXPECT_EQ(r.status, 303) << r.body;
    const std::string location = r.Header("Location").value_or("");
    EXPECT_EQ(location.rfind("/download-key?job=", 0), 0u) << location;
    RunJobs();
    auto shown = Do("GET", location, &jar);
    EXPECT_EQ(shown.status, 200);
    return HtmlUnescape(Between(shown.body, "<pre id=\"download-key-text\">", '<'));
  }

  static std::string HtmlUnescape(std::string s) {
    for (const auto& [from, to] : std::vector<std::pair<std::string, std::string>>{
             {"&lt;", "<"}, {"&gt;", ">"}, {"&quot;", "\""}, {"&#39;", "'"}, {"&amp;", "&"}}) {
      for (auto at = s.find(from); at != std::string::npos; at = s.find(from, at + to.size())) s.replace(at, from.size(), to);
    }
    return s;
  }

  // What the portal gives for a key: this appliance's assignment bound to the key, every blob.
  fs::path BundleForKey(const std::string& key_text) {
    auto decoded = trust::DecodeDownloadKey(key_text);
    EXPECT_TRUE(decoded.ok()) << decoded.error().message();
    if (!decoded.ok()) return {};
    trust::Assignment a = vendor_.AssignmentFor(decoded->key.installed);
    a.nonce = decoded->key.nonce_hex();
    a.expires = clock_.Now() + std::chrono::days(30);
    auto entries = BundleEntries(vendor_, {{vendor_.identity().appliance_id(), vendor_.Sign(a)}}, vendor_.channel);
    const fs::path out = bundles_.path() / "update.upkb";
    auto h = bundle::WriteBundle(out, Sha256Hex(key_text).substr(0, 32), clock_.Now(),
                                 {vendor_.identity().appliance_id()}, std::move(entries));
    EXPECT_TRUE(h.ok()) << h.error().message();
    return out;
  }

  HttpResponse Upload(Jar& jar, const std::string& body, const std::string& extra) {
    return Do("POST", "/airgap/upload", &jar, body, extra, "application/octet-stream");
  }
  std::string UploadToken(Jar& jar) { return Between(Do("GET", "/", &jar).body, "data-csrf=\""); }

  std::map<std::string, std::string> Installed() {
    std::map<std::string, std::string> out;
    const Json doc = world_->agent->InstalledJson();
    for (const auto& [name, p] : doc["packages"].items()) out[name] = p.value("version", "");
    return out;
  }
  fs::path UploadDir() const { return world_->config.state_dir / "uploads"; }

  Vendor vendor_{clock_};
  std::unique_ptr<World> world_;
  std::unique_ptr<UpdatesSource> source_ = nullptr;
  WorldDir certs_, bundles_;
};

using AirgapPageTest = AirgapWebTest;

TEST_F(AirgapPageTest, TheSectionOffersTheKeyFormAndTheUpload) {
  Jar jar = SignIn();
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200) << page.body;
  EXPECT_NE(page.body.find("<h2>Air-gapped updates</h2>"), std::string::npos);
  EXPECT_NE(page.body.find("action=\"/download-key\""), std::string::npos);
  EXPECT_NE(page.body.find("value=\"72\""), std::string::npos);  // the CLI's default validity
  EXPECT_NE(page.body.find("id=\"airgap-upload\""), std::string::npos);
  EXPECT_NE(page.body.find("<noscript>"), std::string::npos);
  EXPECT_NE(page.body.find("<script src=\"/static/airgap.js\">"), std::string::npos);
  EXPECT_EQ(page.body.find("Download the installation report"), std::string::npos);  // nothing imported yet
  auto js = Do("GET", "/static/airgap.js");
  EXPECT_EQ(js.status, 200);
  EXPECT_NE(js.body.find("X-CSRF-Token"), std::string::npos);
  EXPECT_NE(js.body.find("upload.addEventListener('progress'"), std::string::npos);
  EXPECT_TRUE(fs::is_directory(UploadDir()));
}

TEST_F(AirgapPageTest, DownloadKeyValidityIsValidatedNextToTheField) {
  Jar jar = SignIn();
  for (const std::string bad : {"", "0", "2161", "abc", "12x", "-5", "99999999999"}) {
    auto page = Do("GET", "/", &jar);
    auto r = Do("POST", "/download-key", &jar,
                "csrf_token=" + CsrfFor(page.body, "/download-key") + "&valid_hours=" + bad, origin_);
    EXPECT_EQ(r.status, 200) << bad;
    EXPECT_NE(r.body.find("id=\"valid_hours-error\""), std::string::npos) << bad << "\n" << r.body;
    EXPECT_NE(r.body.find("aria-invalid=\"true\""), std::string::npos) << bad;
  }
  EXPECT_TRUE(jobs_.Recent(10).empty());
  // Without the CSRF token: refused, no job.
  auto r = Do("POST", "/download-key", &jar, "valid_hours=24", origin_);
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(jobs_.Recent(10).empty());
}

TEST_F(AirgapPageTest, TheKeyIsMadeByAJobAndShownWithItsQrCode) {
  Jar jar = SignIn();
  auto page = Do("GET", "/", &jar);
  auto r = Do("POST", "/download-key", &jar, "csrf_token=" + CsrfFor(page.body, "/download-key") + "&valid_hours=24",
              origin_);
  ASSERT_EQ(r.status, 303) << r.body;
  const std::string location = r.Header("Location").value_or("");
  ASSERT_EQ(location, "/download-key?job=1");
  // Queued: the page waits for it.
  auto pending = Do("GET", location, &jar);
  EXPECT_NE(pending.body.find("id=\"download-key-pending\" data-job=\"1\""), std::string::npos) << pending.body;
  RunJobs();
  const JobSnapshot job = Job(1);
  EXPECT_EQ(job.state, "succeeded") << job.result;
  EXPECT_EQ(job.kind, "download-key");
  auto shown = Do("GET", location, &jar);
  ASSERT_EQ(shown.status, 200);
  const std::string key = HtmlUnescape(Between(shown.body, "<pre id=\"download-key-text\">", '<'));
  ASSERT_EQ(key.rfind("UPK1-", 0), 0u) << shown.body;
  auto decoded = trust::DecodeDownloadKey(key);
  ASSERT_TRUE(decoded.ok()) << decoded.error().message();
  EXPECT_EQ(decoded->key.appliance_id, vendor_.identity().appliance_id());
  EXPECT_EQ(decoded->key.validity, std::chrono::hours(24));
  // The store remembers its nonce (MakeDownloadKey ran on the daemon's runtime).
  EXPECT_NE(world_->store->Get("download_keys").value_or(Json(nullptr)).dump().find(decoded->key.nonce_hex()),
            std::string::npos);
  // The key is in no job text or log line.
  std::string compact;
  for (char c : key) {
    if (c != '\n' && c != '\r' && c != ' ') compact += c;
  }
  EXPECT_EQ(job.result.find(compact.substr(5, 20)), std::string::npos);
  for (const auto& l : job.lines) EXPECT_EQ(l.find(compact.substr(5, 20)), std::string::npos);
  {
    std::lock_guard lock(log_mu_);
    for (const auto& l : log_) EXPECT_EQ(l.find(compact.substr(5, 20)), std::string::npos) << l;
  }
  // The QR code: inline SVG (no XML declaration), the key's module count, one square per dark module.
  auto qr = EncodeQr(compact);
  ASSERT_TRUE(qr.ok());
  const auto svg_at = shown.body.find("<svg role=\"img\"");
  ASSERT_NE(svg_at, std::string::npos) << shown.body;
  EXPECT_EQ(shown.body.find("<?xml"), std::string::npos);
  const std::string svg = shown.body.substr(svg_at, shown.body.find("</svg>", svg_at) + 6 - svg_at);
  const std::string n = std::to_string(qr->size + 8);
  EXPECT_NE(svg.find("viewBox=\"0 0 " + n + " " + n + "\""), std::string::npos) << svg.substr(0, 300);
  EXPECT_EQ(std::count(svg.begin(), svg.end(), 'z'), std::count(qr->dark.begin(), qr->dark.end(), true));
  EXPECT_NE(shown.body.find("id=\"download-key-copy\""), std::string::npos);
  EXPECT_NE(shown.body.find("download portal"), std::string::npos);
  // Shown again while valid: the updates page links to it.
  page = Do("GET", "/", &jar);
  EXPECT_NE(page.body.find("show the download key"), std::string::npos);
  EXPECT_EQ(Do("GET", "/download-key", &jar).body.find(key.substr(0, 30)) != std::string::npos, true);
  // Expired: gone.
  clock_.Advance(std::chrono::hours(25));
  jar = SignIn();
  auto later = Do("GET", "/download-key", &jar);
  EXPECT_EQ(later.body.find("download-key-text"), std::string::npos);
  EXPECT_NE(later.body.find("No valid download key"), std::string::npos);
}

TEST_F(AirgapPageTest, AnUploadWithoutASessionIsRefusedBeforeItsBodyEvenAsTheFirstRequest) {
  // Nothing was asked of the page yet: the precheck still authenticates (no body byte is read or
  // written for a stranger), so the answer comes at once although the body never does.
  Jar forged;
  forged.cookies["__Host-upkeep_session"] = std::string(64, 'a');
  auto r = Do("POST", "/airgap/upload", &forged, "",
              origin_ + "X-CSRF-Token: " + std::string(64, 'b') +
                  "\r\nContent-Type: application/octet-stream\r\nContent-Length: 1048576\r\n");
  EXPECT_EQ(r.status, 401) << r.body;
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
}

TEST_F(AirgapPageTest, UploadsAreRefusedBeforeAnyJob) {
  Jar jar = SignIn();
  const std::string token = UploadToken(jar);
  ASSERT_FALSE(token.empty());
  const std::string body(4096, 'x');
  // No session.
  Jar none;
  EXPECT_EQ(Upload(none, body, origin_ + "X-CSRF-Token: " + token + "\r\n").status, 401);
  // No header, a wrong token, a token with odd characters, another origin.
  EXPECT_EQ(Upload(jar, body, origin_).status, 403);
  auto wrong = Upload(jar, body, origin_ + "X-CSRF-Token: " + std::string(token.size(), 'A') + "\r\n");
  EXPECT_EQ(wrong.status, 403) << wrong.body;
  EXPECT_EQ(Upload(jar, body, origin_ + "X-CSRF-Token: a b\r\n").status, 403);
  auto other = Upload(jar, body, "Origin: https://evil.example\r\nX-CSRF-Token: " + token + "\r\n");
  EXPECT_EQ(other.status, 403) << other.body;
  // Too big: refused from the Content-Length before a byte is read.
  auto big = Do("POST", "/airgap/upload", &jar, "",
                origin_ + "X-CSRF-Token: " + token + "\r\nContent-Type: application/octet-stream\r\nContent-Length: " +
                    std::to_string((16ull << 30) + 1) + "\r\n");
  EXPECT_EQ(big.status, 413) << big.body;
  // Empty.
  EXPECT_EQ(Upload(jar, "", origin_ + "X-CSRF-Token: " + token + "\r\n").status, 400);
  // A read-only account: the role decides, whatever the token.
  ASSERT_NO_FATAL_FAILURE(AddAccount("viewer", web::Role::kReadOnly, "viewer-password-1"));
  Jar vjar = SignIn("viewer", "viewer-password-1");
  auto vpage = Do("GET", "/", &vjar);
  EXPECT_EQ(vpage.body.find("id=\"airgap-upload\""), std::string::npos);
  EXPECT_NE(vpage.body.find("<button type=\"submit\" disabled>Make a download key"), std::string::npos);
  // The page gives the viewer no upload token; any token it sends is refused.
  auto ro = Upload(vjar, body, origin_ + "X-CSRF-Token: " + token + "\r\n");
  EXPECT_EQ(ro.status, 403);
  EXPECT_TRUE(jobs_.Recent(10).empty());
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
}

TEST_F(AirgapPageTest, ABundleIsImportedAndInstalledByAJobAndItsReportDownloaded) {
  Jar jar = SignIn();
  const std::string key = MakeKeyOnThePage(jar);
  ASSERT_EQ(key.rfind("UPK1-", 0), 0u);
  const fs::path bundle = BundleForKey(key);
  clock_.Advance(std::chrono::hours(2));  // carried to the portal and back
  jar = SignIn();
  const std::string bytes = ReadAll(bundle);
  auto r = Upload(jar, bytes, origin_ + "X-CSRF-Token: " + UploadToken(jar) + "\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  const Json reply = Json::parse(r.body);
  const std::uint64_t id = reply["job"].get<std::uint64_t>();
  EXPECT_EQ(reply["location"], "/jobs/" + std::to_string(id));
  ASSERT_EQ(FilesIn(UploadDir()).size(), 1u);  // kept for the job
  // A second upload while the first waits: refused before the body.
  EXPECT_EQ(Upload(jar, bytes, origin_ + "X-CSRF-Token: " + UploadToken(jar) + "\r\n").status, 409);
  RunJobs();
  const JobSnapshot job = Job(id);
  EXPECT_EQ(job.state, "succeeded") << job.result << "\n" << world_->JournalDump();
  EXPECT_EQ(job.kind, "import");
  EXPECT_NE(job.result.find("installed base 2.0.0, software 7.1.0, software 8.0.0"), std::string::npos) << job.result;
  EXPECT_EQ(job.total, 0u);  // the install phase (the verify phase reached its total)
  EXPECT_EQ(Installed(), (std::map<std::string, std::string>{{"base", "2.0.0"}, {"software", "8.0.0"}}));
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
  // The page shows the new versions and the report link; the report is the agent's signed one.
  auto page = Do("GET", "/", &jar);
  EXPECT_NE(page.body.find("Download the installation report"), std::string::npos) << page.body;
  auto report = Do("GET", "/airgap/report", &jar);
  ASSERT_EQ(report.status, 200) << report.body;
  EXPECT_NE(report.Header("Content-Disposition").value_or("").find("attachment; filename=\"upkeep-report-"),
            std::string::npos);
  EXPECT_NE(report.body.find(vendor_.identity().appliance_id()), std::string::npos);
  EXPECT_EQ(Do("GET", "/airgap/report").status, 303);  // needs a session
  // The same bundle again: its download key is used up; the job fails with the agent's reason.
  const Json last = world_->store->Get("last_import").value_or(Json(nullptr));
  r = Upload(jar, bytes, origin_ + "X-CSRF-Token: " + UploadToken(jar) + "\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  RunJobs();
  const JobSnapshot again = Job(Json::parse(r.body)["job"].get<std::uint64_t>());
  EXPECT_EQ(again.state, "failed");
  EXPECT_NE(again.result.find("download key"), std::string::npos) << again.result;
  EXPECT_EQ(Installed(), (std::map<std::string, std::string>{{"base", "2.0.0"}, {"software", "8.0.0"}}));
  EXPECT_EQ(world_->store->Get("last_import").value_or(Json(nullptr)), last);
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
}

TEST_F(AirgapPageTest, ARefusedBundleFailsItsJobAndChangesNothing) {
  Jar jar = SignIn();
  const std::string key = MakeKeyOnThePage(jar);
  std::string bytes = ReadAll(BundleForKey(key));
  const auto before = Installed();
  const Json assignment = world_->store->Get("assignment").value_or(Json(nullptr));
  // Tampered: one byte in the middle flipped.
  bytes[bytes.size() / 2] = static_cast<char>(bytes[bytes.size() / 2] ^ 0x55);
  auto r = Upload(jar, bytes, origin_ + "X-CSRF-Token: " + UploadToken(jar) + "\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  RunJobs();
  JobSnapshot job = Job(Json::parse(r.body)["job"].get<std::uint64_t>());
  EXPECT_EQ(job.state, "failed");
  EXPECT_FALSE(job.result.empty());
  EXPECT_EQ(Installed(), before);
  EXPECT_EQ(world_->store->Get("assignment").value_or(Json(nullptr)), assignment);
  EXPECT_FALSE(world_->store->Get("last_import").has_value());
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
  // Not a bundle at all.
  r = Upload(jar, std::string(1000, 'z'), origin_ + "X-CSRF-Token: " + UploadToken(jar) + "\r\n");
  ASSERT_EQ(r.status, 200) << r.body;
  RunJobs();
  job = Job(Json::parse(r.body)["job"].get<std::uint64_t>());
  EXPECT_EQ(job.state, "failed");
  EXPECT_NE(job.result.find("bundle"), std::string::npos) << job.result;
  EXPECT_EQ(Installed(), before);
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
  EXPECT_EQ(Do("GET", "/", &jar).body.find("Download the installation report"), std::string::npos);
}

TEST_F(AirgapPageTest, WithoutTheDaemonTheActionsAreUnavailable) {
  StartHost(false);
  Jar jar = SignIn();
  auto page = Do("GET", "/", &jar);
  EXPECT_NE(page.body.find("Manual installation is unavailable"), std::string::npos);
  EXPECT_NE(page.body.find("Making a download key is unavailable"), std::string::npos);
  auto r = Upload(jar, "x", origin_ + "X-CSRF-Token: t\r\n");
  EXPECT_EQ(r.status, 503) << r.body;
}

TEST_F(AirgapPageTest, LeftoverUploadsAreRemovedAtStart) {
  ASSERT_TRUE(WriteFileAtomic(UploadDir() / "import-1-deadbeef.upkb", "partial").ok());
  StartHost(true);
  EXPECT_TRUE(FilesIn(UploadDir()).empty());
}

}  // namespace
}  // namespace upkeep::agent::pagetest
