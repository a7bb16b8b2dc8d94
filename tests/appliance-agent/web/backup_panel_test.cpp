// The updates page's backups panel (backup_panel.cpp) over real HTTPS on loopback against a real
// agent state (the core tests' world): form validation with the errors next to the fields, roles,
// CSRF, the download's id checks, a password-protected backup job then restore jobs (a wrong
// password changes nothing), and the vault key export with re-authentication.
#include <gtest/gtest.h>
#include <openssl/ssl.h>

#include <map>
#include <mutex>
#include <string>
#include <vector>

#include "../core/core_world.hpp"
#include "page_test_kit.hpp"
#include "upkeep/agent/backup.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/agent/web_host.hpp"
#include "upkeep/agent/web_jobs.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/net/testing_cert.hpp"
#include "upkeep/web/password.hpp"

// In the kit's namespace: its names come first (net::test's HttpResponse, not the agent's).
namespace upkeep::agent::pagetest {
namespace {

constexpr const char* kViewerPassword = "viewer-horse-42";
constexpr const char* kBackupPassword = "backup-secret-123";
constexpr const char* kMagic = "UPKBAK1\n";

class BackupPanelTest : public PageTest {
 protected:
  BackupPanelTest() : PageTest(NowSeconds()) {}
  void SetUp() override {
    AddStandardReleases(vendor_);
    world_ = std::make_unique<World>(vendor_, clock_);
    world_->Provision("base-1.0.0");
    world_->Close();  // the jobs open the state themselves, as the daemon does
    AgentConfig& c = world_->config;
    c.identity_file = world_->root() / "identity.json";
    c.director_key_file = world_->root() / "director.pub";
    ASSERT_TRUE(vendor_.identity().Save(c.identity_file).ok());
    ASSERT_TRUE(WriteFileAtomic(c.director_key_file, vendor_.director().public_key().ToJson().dump()).ok());
    vault_ = world_->root() / "secrets" / "vault.key";
    fs::create_directories(vault_.parent_path());
    ASSERT_TRUE(WriteFileAtomic(vault_, "the-vault-key-0123456789\n").ok());
    c.backup.vault_key_path = vault_;
    conf_ = world_->root() / "etc" / "app.conf";

    TrustCertificate(world_->root());
    AddAccount("admin", web::Role::kAdmin, kAdminPassword);
    AddAccount("viewer", web::Role::kReadOnly, kViewerPassword);
    StartHost(true);
  }

  void StartHost(bool with_jobs) {
    WebDaemonLink link;
    link.jobs = with_jobs ? &jobs_ : nullptr;
    link.config = &world_->config;
    StartWebHost(source_, link);
  }

  // The daemon's part: runs the queued jobs with a writable runtime (the store lock).
  void RunJobs() {
    auto rt = OpenAgentRuntime(world_->config, false);
    ASSERT_TRUE(rt.ok()) << rt.error().message();
    jobs_.RunPending(**rt);
  }

  // The job a post redirected to, after running it.
  JobSnapshot RunRedirected(const HttpResponse& r) {
    EXPECT_EQ(r.status, 303) << r.body;
    const std::string loc = r.Header("Location").value_or("");
    EXPECT_EQ(loc.rfind("/jobs/", 0), 0u) << loc;
    RunJobs();
    auto job = jobs_.Get(std::stoull(loc.substr(6)));
    EXPECT_TRUE(job.has_value());
    return job.value_or(JobSnapshot{});
  }

  std::vector<BackupInfo> Backups() {
    BackupStore store(world_->config.BackupDir(), 5, clock_, SystemRandom::Instance());
    return store.List().value();
  }

  Vendor vendor_{clock_};
  std::unique_ptr<World> world_;
  fs::path vault_, conf_;
  FakeSource source_;
};

TEST_F(BackupPanelTest, CreateFormErrorsAreShownNextToTheFieldsAndNothingIsQueued) {
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "<section id=\"backups\"><h2>Backups</h2>")) << page.body;
  EXPECT_TRUE(Has(page.body, "No backups yet."));
  EXPECT_TRUE(Has(page.body, "only in a password-protected backup"));

  auto r = Submit(jar, "/", "/backups/create", "backup_password=backup-secret-123&backup_password2=backup-secret-456");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"backup_password2-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "the passwords differ"));
  EXPECT_FALSE(Has(r.body, "backup-secret-123"));  // a password never comes back

  r = Submit(jar, "/", "/backups/create", "backup_password=short&backup_password2=short");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"backup_password-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "shorter than 12 bytes"));

  r = Submit(jar, "/", "/backups/create", "include_vault_key=1&include_licence=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"include_vault_key-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "id=\"include_licence\" name=\"include_licence\" value=\"1\" checked"));  // choices kept
  EXPECT_TRUE(jobs_.Recent(10).empty());
  EXPECT_TRUE(Backups().empty());
}

TEST_F(BackupPanelTest, OnlyAnAdminCreatesDownloadsRestoresOrExports) {
  // An admin's backup to act on.
  Jar admin = LoginAs("admin", kAdminPassword);
  auto job = RunRedirected(Submit(admin, "/", "/backups/create", "backup_password=&backup_password2="));
  ASSERT_EQ(job.state, "succeeded") << job.result;
  const std::string id = Backups().at(0).id;

  Jar viewer = LoginAs("viewer", kViewerPassword);
  auto page = Do("GET", "/", &viewer);
  ASSERT_EQ(page.status, 200);
  EXPECT_TRUE(Has(page.body, "id=\"backup-" + id + "\"")) << page.body;  // the list is for every role
  EXPECT_FALSE(Has(page.body, "/backups/" + id + "/download"));
  EXPECT_TRUE(Has(page.body, "(an administrator creates backups)"));
  EXPECT_TRUE(Has(page.body, "disabled>Create a backup"));
  EXPECT_EQ(Do("GET", "/backups/" + id + "/download", &viewer).status, 403);
  const std::string create = CsrfFor(page.body, "/backups/create");
  ASSERT_FALSE(create.empty());
  EXPECT_EQ(Do("POST", "/backups/create", &viewer, "csrf_token=" + create).status, 403);
  auto form = Do("GET", "/backups/" + id + "/restore", &viewer);
  EXPECT_EQ(form.status, 200);
  EXPECT_TRUE(Has(form.body, "disabled>Restore this backup"));
  EXPECT_EQ(Do("POST", "/backups/" + id + "/restore", &viewer,
               "csrf_token=" + CsrfFor(form.body, "/backups/" + id + "/restore") + "&confirm=1")
                .status,
            403);
  EXPECT_EQ(Do("POST", "/backups/vault-key", &viewer,
               "csrf_token=" + CsrfFor(page.body, "/backups/vault-key") +
                   "&vault_account_password=viewer-horse-42&vault_password=export-pass-123&vault_password2=export-pass-123")
                .status,
            403);
  EXPECT_EQ(jobs_.Recent(10).size(), 1u);
  // Without a session: the login page, no file.
  auto anon = Do("GET", "/backups/" + id + "/download");
  EXPECT_EQ(anon.status, 303);
  EXPECT_EQ(anon.Header("Location").value_or(""), "/login");
}

TEST_F(BackupPanelTest, FormsWithoutTheRightCsrfTokenAreRefused) {
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);
  auto r = Do("POST", "/backups/create", &jar, "backup_password=");
  EXPECT_EQ(r.status, 403);
  EXPECT_TRUE(Has(r.body, "form without a CSRF token"));
  // A token for another action.
  EXPECT_EQ(Do("POST", "/backups/create", &jar, "csrf_token=" + CsrfFor(page.body, "/backups/vault-key")).status, 403);
  EXPECT_EQ(Do("POST", "/backups/vault-key", &jar, "csrf_token=" + CsrfFor(page.body, "/backups/create") +
                                                     "&vault_account_password=correct-horse-42&vault_password="
                                                     "export-pass-123&vault_password2=export-pass-123")
                .status,
            403);
  EXPECT_TRUE(jobs_.Recent(10).empty());
}

TEST_F(BackupPanelTest, DownloadValidatesTheId) {
  Jar jar = LoginAs("admin", kAdminPassword);
  for (const std::string bad : {"..%2F..%2Fidentity", "20261125T193000Z-zzzz", "20261125T193000Z-7f3a%2F..",
                                "x", "20261125T193000Z-7f3a.upkbak", "20991231T000000Z-0000"}) {
    auto r = Do("GET", "/backups/" + bad + "/download", &jar);
    EXPECT_TRUE(r.status == 404 || r.status == 400) << bad << ": " << r.status;  // 400: the server refuses %2F itself
    EXPECT_FALSE(Has(r.body, kMagic)) << bad;
  }
  EXPECT_EQ(Do("GET", "/backups/../identity.json/download", &jar).status == 200, false);
}

TEST_F(BackupPanelTest, BackupWithAPasswordThenDownloadThenRestoreWrongAndRightPassword) {
  Jar jar = LoginAs("admin", kAdminPassword);
  auto job = RunRedirected(Submit(jar, "/", "/backups/create",
                                  "backup_password=backup-secret-123&backup_password2=backup-secret-123&include_vault_key=1"));
  ASSERT_EQ(job.state, "succeeded") << job.result;
  EXPECT_EQ(job.kind, "backup");
  EXPECT_EQ(job.phase, "backup");
  EXPECT_GT(job.total, 0u);
  EXPECT_EQ(job.done, job.total);
  EXPECT_TRUE(Has(job.result, "encrypted")) << job.result;
  auto list = Backups();
  ASSERT_EQ(list.size(), 1u);
  const std::string id = list[0].id;
  EXPECT_TRUE(list[0].encrypted);
  EXPECT_FALSE(Has(LogText(), kBackupPassword));
  EXPECT_FALSE(Has(job.ToJson().dump(), kBackupPassword));

  auto page = Do("GET", "/", &jar);
  EXPECT_TRUE(Has(page.body, "id=\"backup-" + id + "\"")) << page.body;
  EXPECT_TRUE(Has(page.body, "yes (password)"));
  EXPECT_TRUE(Has(page.body, "<td class=\"secrets\">vault key</td>")) << page.body;
  EXPECT_TRUE(Has(page.body, "base 1.0.0"));  // the installed versions

  auto dl = Do("GET", "/backups/" + id + "/download", &jar);
  ASSERT_EQ(dl.status, 200);
  EXPECT_EQ(dl.body.substr(0, 8), kMagic);
  EXPECT_EQ(dl.body.size(), list[0].bytes);
  EXPECT_EQ(dl.Header("Content-Disposition").value_or(""), "attachment; filename=\"" + id + ".upkbak\"");
  EXPECT_TRUE(dl.Header("Content-Security-Policy").has_value());

  // The configuration changes; a restore without the confirmation or the password is refused at the field.
  ASSERT_TRUE(WriteFileAtomic(conf_, "listen = 9999\n").ok());
  const std::string action = "/backups/" + id + "/restore";
  auto r = Submit(jar, action, action, "restore_password=backup-secret-123");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"confirm-error\"")) << r.body;
  r = Submit(jar, action, action, "restore_password=&confirm=1");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"restore_password-error\"")) << r.body;
  EXPECT_EQ(jobs_.Recent(10).size(), 1u);

  // A wrong password fails the job and changes nothing.
  job = RunRedirected(Submit(jar, action, action, "restore_password=not-the-password&confirm=1"));
  EXPECT_EQ(job.state, "failed");
  EXPECT_TRUE(Has(job.result, "wrong password")) << job.result;
  EXPECT_EQ(ReadFileBounded(conf_, 1024).value(), "listen = 9999\n");
  ASSERT_TRUE(WriteFileAtomic(vault_, "a-new-vault-key\n").ok());

  // The right one restores the file (and the vault key it holds).
  job = RunRedirected(Submit(jar, action, action, "restore_password=backup-secret-123&confirm=1"));
  ASSERT_EQ(job.state, "succeeded") << job.result;
  EXPECT_EQ(job.kind, "restore");
  EXPECT_TRUE(Has(job.result, "from backup " + id)) << job.result;
  EXPECT_EQ(ReadFileBounded(conf_, 1024).value(), "listen = 8080\n");
  EXPECT_EQ(ReadFileBounded(vault_, 1024).value(), "the-vault-key-0123456789\n");
  EXPECT_FALSE(Has(LogText(), kBackupPassword));
  EXPECT_FALSE(Has(job.ToJson().dump(), kBackupPassword));
  EXPECT_TRUE(Has(LogText(), "web: 'admin' asked to restore backup " + id));

  // An unknown backup's restore form is a 404, a bad id too.
  EXPECT_EQ(Do("GET", "/backups/20991231T000000Z-0000/restore", &jar).status, 404);
  EXPECT_EQ(Do("GET", "/backups/20261125T193000Z-7f3a.x/restore", &jar).status, 404);
  EXPECT_NE(Do("GET", "/backups/..%2Fx/restore", &jar).status, 200);
}

TEST_F(BackupPanelTest, VaultKeyExportNeedsTheAccountPasswordAndGivesAProtectedFile) {
  Jar jar = LoginAs("admin", kAdminPassword);
  const std::string good = "&vault_password=export-pass-123&vault_password2=export-pass-123";
  auto r = Submit(jar, "/", "/backups/vault-key", "vault_account_password=wrong-password-1" + good);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"vault_account_password-error\"")) << r.body;
  EXPECT_TRUE(Has(r.body, "wrong account name or password"));
  EXPECT_FALSE(Has(r.body, kMagic));

  r = Submit(jar, "/", "/backups/vault-key",
             "vault_account_password=correct-horse-42&vault_password=export-pass-123&vault_password2=other-pass-123");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"vault_password2-error\"")) << r.body;
  r = Submit(jar, "/", "/backups/vault-key", "vault_account_password=correct-horse-42&vault_password=&vault_password2=");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "id=\"vault_password-error\"")) << r.body;

  r = Submit(jar, "/", "/backups/vault-key", "vault_account_password=correct-horse-42" + good);
  ASSERT_EQ(r.status, 200) << r.body;
  EXPECT_EQ(r.body.substr(0, 8), kMagic);
  EXPECT_EQ(r.Header("Content-Disposition").value_or(""), "attachment; filename=\"vault-key.upkbak\"");
  // Nothing is left behind, the re-authentication's session is gone, no password is logged.
  const fs::path exports = world_->config.state_dir / "web-exports";
  EXPECT_TRUE(fs::is_empty(exports));
  EXPECT_EQ(fs::status(exports).permissions() & fs::perms::all, fs::perms::owner_all);
  EXPECT_FALSE(Has(LogText(), "export-pass-123"));
  EXPECT_FALSE(Has(LogText(), kAdminPassword));
  EXPECT_TRUE(Has(LogText(), "web: 'admin' exported the vault key (password-protected)"));
  // The session that asked is still the one signed in.
  EXPECT_EQ(Do("GET", "/", &jar).status, 200);

  // The file restores the vault key with the export password only.
  const fs::path file = world_->root() / "exported.upkbak";
  ASSERT_TRUE(WriteFileAtomic(file, r.body).ok());
  EXPECT_FALSE(VerifyBackupFile(file, std::string_view("wrong-pass-123")).ok());
  const fs::path into = world_->root() / "into";
  fs::create_directories(into);
  RestoreOptions ro;
  ro.root = into;
  auto restored = RestoreBackupFile(file, std::string_view("export-pass-123"), ro);
  ASSERT_TRUE(restored.ok()) << restored.error().message();
  EXPECT_EQ(ReadFileBounded(into / vault_.relative_path(), 1024).value(), "the-vault-key-0123456789\n");
}

TEST_F(BackupPanelTest, ASecondBackupWhileOneWaitsIsRefusedAtTheFormAndADamagedFileIsListed) {
  Jar jar = LoginAs("admin", kAdminPassword);
  auto r = Submit(jar, "/", "/backups/create", "backup_password=&backup_password2=");
  ASSERT_EQ(r.status, 303) << r.body;
  r = Submit(jar, "/", "/backups/create", "backup_password=&backup_password2=");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "a backup job is already queued")) << r.body;
  EXPECT_TRUE(Has(r.body, "id=\"backup-create\""));
  RunJobs();
  auto list = Backups();
  ASSERT_EQ(list.size(), 1u);
  EXPECT_FALSE(list[0].encrypted);

  // A plain backup's restore page asks for no password; it restores with the confirmation alone.
  const std::string action = "/backups/" + list[0].id + "/restore";
  auto form = Do("GET", action, &jar);
  EXPECT_EQ(form.status, 200);
  EXPECT_FALSE(Has(form.body, "restore_password"));
  ASSERT_TRUE(WriteFileAtomic(conf_, "listen = 1\n").ok());
  auto job = RunRedirected(Submit(jar, action, action, "confirm=1"));
  EXPECT_EQ(job.state, "succeeded") << job.result;
  EXPECT_EQ(ReadFileBounded(conf_, 1024).value(), "listen = 8080\n");

  // A damaged file is listed as such, with no actions.
  ASSERT_TRUE(WriteFileAtomic(world_->config.BackupDir() / "20300101T000000Z-abcd.upkbak", "not a backup").ok());
  auto page = Do("GET", "/", &jar);
  EXPECT_TRUE(Has(page.body, "<tr id=\"backup-20300101T000000Z-abcd\" class=\"error\">")) << page.body;
  EXPECT_TRUE(Has(page.body, "damaged: "));
  EXPECT_FALSE(Has(page.body, "/backups/20300101T000000Z-abcd/download"));
}

// The upload form's data-csrf token (the script sends it as X-CSRF-Token).
std::string UploadToken(const std::string& html) {
  const auto form = html.find("id=\"backup-upload\"");
  if (form == std::string::npos) return {};
  const std::string marker = "data-csrf=\"";
  const auto at = html.find(marker, form);
  if (at == std::string::npos) return {};
  const auto start = at + marker.size();
  return html.substr(start, html.find('"', start) - start);
}

TEST_F(BackupPanelTest, RestoreFromAnUploadedFile) {
  Jar jar = LoginAs("admin", kAdminPassword);
  auto job = RunRedirected(Submit(jar, "/", "/backups/create", "backup_password=backup-secret-123&backup_password2=backup-secret-123"));
  ASSERT_EQ(job.state, "succeeded") << job.result;
  const std::string id = Backups().at(0).id;
  const std::string bytes = Do("GET", "/backups/" + id + "/download", &jar).body;
  ASSERT_EQ(bytes.substr(0, 8), kMagic);
  const fs::path uploads = world_->config.state_dir / "web-uploads";
  ASSERT_TRUE(fs::is_directory(uploads));
  EXPECT_EQ(fs::status(uploads).permissions() & fs::perms::all, fs::perms::owner_all);

  auto page = Do("GET", "/", &jar);
  const std::string token = UploadToken(page.body);
  ASSERT_FALSE(token.empty()) << page.body;
  EXPECT_TRUE(Has(page.body, "<script src=\"/static/backup.js\"></script>"));
  EXPECT_EQ(Do("GET", "/static/backup.js").status, 200);
  const std::string octet = "application/octet-stream";

  // Refused: no token, a token of another action, another role; nothing is kept.
  EXPECT_EQ(Do("POST", "/backups/upload", &jar, bytes, "", octet).status, 403);
  EXPECT_EQ(Do("POST", "/backups/upload", &jar, bytes, "X-CSRF-Token: " + CsrfFor(page.body, "/backups/create") + "\r\n", octet)
                .status,
            403);
  Jar viewer = LoginAs("viewer", kViewerPassword);
  auto vpage = Do("GET", "/", &viewer);
  EXPECT_TRUE(UploadToken(vpage.body).empty());
  EXPECT_EQ(Do("POST", "/backups/upload", &viewer, bytes, "X-CSRF-Token: " + token + "\r\n", octet).status, 403);
  EXPECT_EQ(Do("POST", "/backups/upload", nullptr, bytes, "X-CSRF-Token: " + token + "\r\n", octet).status, 401);
  // Not a backup: said in a JSON answer the page shows.
  auto r = Do("POST", "/backups/upload", &jar, "this is not a backup", "X-CSRF-Token: " + token + "\r\n", octet);
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "not a backup file")) << r.body;
  EXPECT_FALSE(Has(r.body, "location"));
  EXPECT_TRUE(fs::is_empty(uploads));

  ASSERT_TRUE(WriteFileAtomic(conf_, "listen = 7\n").ok());
  r = Do("POST", "/backups/upload", &jar, bytes, "X-CSRF-Token: " + token + "\r\n", octet);
  ASSERT_EQ(r.status, 200) << r.body;
  const std::string location = ParseJson(r.body).value().value("location", "");
  ASSERT_EQ(location.rfind("/backup-uploads/", 0), 0u) << r.body;
  auto form = Do("GET", location, &jar);
  ASSERT_EQ(form.status, 200);
  EXPECT_TRUE(Has(form.body, "uploaded file"));
  EXPECT_EQ(Do("GET", location, &viewer).status, 403);
  EXPECT_EQ(Do("GET", "/backup-uploads/0123456789abcdef", &jar).status, 404);
  EXPECT_EQ(Do("GET", "/backup-uploads/..", &jar).status == 200, false);

  // The wrong password fails and keeps the file for another try; the right one restores and removes it.
  job = RunRedirected(Submit(jar, location, location, "restore_password=wrong-password-1&confirm=1"));
  EXPECT_EQ(job.state, "failed");
  EXPECT_TRUE(Has(job.result, "the uploaded backup: wrong password")) << job.result;
  EXPECT_EQ(ReadFileBounded(conf_, 1024).value(), "listen = 7\n");
  job = RunRedirected(Submit(jar, location, location, "restore_password=backup-secret-123&confirm=1"));
  ASSERT_EQ(job.state, "succeeded") << job.result;
  EXPECT_EQ(ReadFileBounded(conf_, 1024).value(), "listen = 8080\n");
  EXPECT_TRUE(fs::is_empty(uploads));
  EXPECT_FALSE(Has(LogText(), "backup-secret-123"));
}

TEST_F(BackupPanelTest, WithoutTheDaemonTheActionsAreUnavailable) {
  StartHost(false);
  Jar jar = LoginAs("admin", kAdminPassword);
  auto page = Do("GET", "/", &jar);
  EXPECT_TRUE(Has(page.body, "disabled>Create a backup")) << page.body;
  EXPECT_TRUE(Has(page.body, "unavailable: the agent daemon runs these actions"));
  auto r = Submit(jar, "/", "/backups/create", "backup_password=&backup_password2=");
  EXPECT_EQ(r.status, 200);
  EXPECT_TRUE(Has(r.body, "unavailable: the agent daemon makes backups")) << r.body;
}

}  // namespace
}  // namespace upkeep::agent::pagetest
