// The updates page's panel for backups (create, list, download, restore) and the vault key export
// (page_kit.hpp, docs/agent/web.md "Backups on the page").
//
// Reads (the list, a download) run in the handler on a BackupStore of their own, without the store
// lock. Creating and restoring are daemon jobs ("backup", "restore"): the password a job needs is
// captured by its JobFn only (wiped when the queue drops the fn) and never logged, put in a title,
// a line or a result. The vault key export runs in the handler (it changes nothing): the admin's
// own account password again (a rate-limited Login whose new session is dropped at once), then the
// key is exported to a 0600 file in STATE/web-exports that is unlinked as soon as it is open, so
// only the response still holds it. "Restore from a file" streams an uploaded .upkbak to
// STATE/web-uploads (one kept at a time) and restores it through the same kind of job.
#include <algorithm>
#include <atomic>
#include <cctype>
#include <cstdio>
#include <filesystem>
#include <string_view>

#include "page_kit.hpp"
#include "upkeep/agent/backup.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/web/password.hpp"
#include "upkeep/web/rate_limit.hpp"

namespace upkeep::agent::webpage {
namespace {

namespace fs = std::filesystem;
using net::Method;
using net::Request;
using net::Response;
using Errors = std::map<std::string, std::string>;

constexpr const char* kBackupCss =
    "#backups .hint{color:#555;font-size:.9em;margin-left:.4em}#backups td.secrets{font-size:.9em}\n"
    "label.check{display:inline;margin-right:1em}.check-row{margin-top:.6em}\n";

// Served as a file (the CSP allows no inline script): "Restore from a file" sends the chosen
// .upkbak as the raw body of POST /backups/upload with the form's CSRF token in X-CSRF-Token, then
// goes to the restore page the answer names, or shows the refusal next to the button.
constexpr const char* kBackupScript = R"JS('use strict';
(function () {
  const form = document.getElementById('backup-upload');
  if (!form) return;
  const input = document.getElementById('backup_file');
  const status = document.getElementById('backup-upload-status');
  const button = form.querySelector('button');
  const say = (text, error) => {
    status.textContent = text;
    status.className = error ? 'field-error' : '';
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = input.files && input.files[0];
    if (!file) { say('Choose a backup file (.upkbak) first.', true); return; }
    if (file.size === 0) { say('The chosen file is empty.', true); return; }
    const xhr = new XMLHttpRequest();
    xhr.open('POST', form.getAttribute('data-action'));
    xhr.setRequestHeader('X-CSRF-Token', form.getAttribute('data-csrf'));
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    button.disabled = true;
    say('Uploading ' + file.name + ' ...', false);
    xhr.addEventListener('load', () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 200 && body && body.location) {
        window.location.assign(body.location);
        return;
      }
      button.disabled = false;
      const why = body && body.error && body.error.message ? body.error.message : 'the appliance answered ' + xhr.status;
      say('Refused: ' + why, true);
    });
    xhr.addEventListener('error', () => {
      button.disabled = false;
      say('The upload failed: the connection to the appliance broke.', true);
    });
    xhr.send(file);
  });
})();
)JS";

constexpr const char* kUploadPath = "/backups/upload";
constexpr std::uint64_t kMaxUploadBytes = std::uint64_t{1} << 30;  // configuration, not software

// An uploaded backup's handle: 16 lower hex characters.
bool ValidUploadId(std::string_view id) {
  if (id.size() != 16) return false;
  return std::all_of(id.begin(), id.end(), [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

// A password held only as long as a job's function: wiped when the last copy of the fn goes.
struct Secret {
  std::string text;
  explicit Secret(std::string t) : text(std::move(t)) {}
  ~Secret() {
    volatile char* p = text.data();
    for (std::size_t i = 0; i < text.size(); ++i) p[i] = 0;
  }
  Secret(const Secret&) = delete;
  Secret& operator=(const Secret&) = delete;
};

// BackupStore's id: YYYYMMDDTHHMMSSZ-xxxx (lower hex). Anything else never reaches the filesystem.
bool ValidBackupId(std::string_view id) {
  if (id.size() != 21) return false;
  for (std::size_t i = 0; i < id.size(); ++i) {
    const char c = id[i];
    const bool ok = i == 8    ? c == 'T'
                    : i == 15 ? c == 'Z'
                    : i == 16 ? c == '-'
                    : i > 16  ? ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))
                              : (c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

std::string HumanSize(std::uint64_t n) {
  const char* units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(n);
  int u = 0;
  while (v >= 1024 && u < 4) {
    v /= 1024;
    ++u;
  }
  if (u == 0) return std::to_string(n) + " B";
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.1f %s", v, units[u]);
  return buf;
}

std::string Checkbox(const std::string& name, const std::string& label, bool checked, const Errors& errors,
                     const std::string& hint = {}) {
  std::string out = "<div class=\"check-row\"><input type=\"checkbox\" id=\"" + name + "\" name=\"" + name +
                    "\" value=\"1\"" + (checked ? " checked" : "");
  auto it = errors.find(name);
  if (it != errors.end()) out += " aria-invalid=\"true\" aria-describedby=\"" + name + "-error\"";
  out += "><label class=\"check\" for=\"" + name + "\">" + HtmlEscape(label) + "</label>";
  if (!hint.empty()) out += "<span class=\"hint\" id=\"" + name + "-hint\">" + HtmlEscape(hint) + "</span>";
  if (it != errors.end()) {
    out += "<span class=\"field-error\" id=\"" + name + "-error\" role=\"alert\">" + HtmlEscape(it->second) + "</span>";
  }
  return out + "</div>\n";
}

bool Ticked(const web::Form& form, const char* name) {
  auto v = form.Optional(name);
  return v.ok() && v->has_value() && !(*v)->empty();
}

std::string Text(const web::Form& form, const char* name) {
  auto v = form.Optional(name);
  return v.ok() && v->has_value() ? **v : std::string();
}

// What the admin asked a backup to hold, kept when the form is shown again (never the passwords).
struct CreateChoice {
  bool tls = false, licence = false, vault = false;
};

class BackupPanel final : public Panel {
 public:
  explicit BackupPanel(const PanelEnv& env) : env_(env) {}

  Status Register(RouteSink& routes) override {
    if (env_.config == nullptr) return OkStatus();
    auto bind = [this](Response (BackupPanel::*fn)(const Request&, web::Authenticator&)) {
      return [this, fn](const Request& r, web::Authenticator& a) { return (this->*fn)(r, a); };
    };
    UPK_TRY(routes.Add(Method::kPost, "/backups/create", bind(&BackupPanel::PostCreate)));
    UPK_TRY(routes.Add(Method::kGet, "/backups/{id}/download", bind(&BackupPanel::GetDownload)));
    UPK_TRY(routes.Add(Method::kGet, "/backups/{id}/restore", bind(&BackupPanel::GetRestore)));
    UPK_TRY(routes.Add(Method::kPost, "/backups/{id}/restore", bind(&BackupPanel::PostRestore)));
    UPK_TRY(routes.Add(Method::kPost, "/backups/vault-key", bind(&BackupPanel::PostVaultKey)));
    UPK_TRY(routes.Add(Method::kGet, "/static/backup.js", [](const Request&, web::Authenticator&) {
      return Asset(kBackupScript, "text/javascript; charset=utf-8");
    }));
    UPK_TRY(routes.Add(Method::kGet, "/backup-uploads/{uid}", bind(&BackupPanel::GetUploaded)));
    UPK_TRY(routes.Add(Method::kPost, "/backup-uploads/{uid}", bind(&BackupPanel::PostUploaded)));
    net::RouteOptions upload;
    if (env_.jobs != nullptr) {
      UPK_TRY(upload_.Prepare(env_.config->state_dir / "web-uploads", env_.authenticator));  // an earlier run's uploads are never restored later
      upload = upload_.Options(kMaxUploadBytes);
    }
    UPK_TRY(routes.Add(Method::kPost, kUploadPath, bind(&BackupPanel::PostUpload), upload));
    return OkStatus();
  }

  std::string Css() const override { return kBackupCss; }

  std::string Render(const web::Principal& who, const Json&, web::Authenticator& auth) override {
    if (env_.config == nullptr) return {};
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    std::string b = "<section id=\"backups\"><h2>Backups</h2>\n";
    b += ListHtml(admin);
    b += "<h3>Create a backup</h3>\n" + CreateForm(who, auth, {}, {}, {});
    b += "<h3>Restore from a file</h3>\n";
    if (admin && env_.jobs != nullptr) {
      b += "<form id=\"backup-upload\" method=\"post\" action=\"" + std::string(kUploadPath) + "\" data-action=\"" +
           kUploadPath + "\" data-csrf=\"" + HtmlEscape(auth.CsrfToken(who, kUploadPath)) +
           "\">\n<label for=\"backup_file\">Backup file (.upkbak)</label><input id=\"backup_file\" name=\"backup_file\" "
           "type=\"file\" accept=\".upkbak\" required>\n<p><button type=\"submit\">Upload the backup file</button> "
           "<span id=\"backup-upload-status\" role=\"status\"></span></p></form>\n<script src=\"/static/backup.js\"></script>\n";
    } else {
      b += "<p>An administrator can upload a downloaded backup here and restore it" +
           std::string(env_.jobs == nullptr ? " (unavailable: the agent daemon restores backups)" : "") + ".</p>\n";
    }
    b += "<h3>Export the vault key</h3>\n" + VaultForm(who, auth, {}, {});
    return b + "</section>\n";
  }

 private:
  BackupStore Backups(std::size_t keep = 1) const {
    return BackupStore(env_.config->BackupDir(), keep, *env_.clock, SystemRandom::Instance());
  }

  // Which of the configured secrets a backup holds: every configured kind it does not list as left out.
  std::string SecretsInside(const BackupInfo& info) const {
    const BackupSource& src = env_.config->backup;
    std::vector<std::string> kinds;
    if (!src.tls_key_paths.empty()) kinds.emplace_back("tls_key");
    if (!src.licence_path.empty()) kinds.emplace_back("licence");
    if (!src.vault_key_path.empty()) kinds.emplace_back("vault_key");
    auto name = [](const std::string& k) {
      return k == "tls_key" ? std::string("TLS keys") : k == "licence" ? std::string("licence") : std::string("vault key");
    };
    std::string inside, out;
    for (const auto& k : kinds) {
      const bool left_out = std::any_of(info.excluded.begin(), info.excluded.end(),
                                        [&k](const ExcludedSecret& x) { return x.kind == k; });
      std::string& to = left_out ? out : inside;
      if (!to.empty()) to += ", ";
      to += name(k);
    }
    if (inside.empty() && out.empty()) return "none configured";
    return (inside.empty() ? std::string("none") : inside) + (out.empty() ? "" : " (left out: " + out + ")");
  }

  std::string ListHtml(bool admin) const {
    BackupStore store = Backups();
    auto list = store.List();
    if (!list.ok()) return Alert("cannot list the backups: " + list.error().message());
    if (list->empty()) return "<p id=\"backups-none\">No backups yet.</p>\n";
    std::string b = "<table id=\"backup-list\"><tr><th>Created</th><th>Reason</th><th>Size</th><th>Installed</th>"
                    "<th>Encrypted</th><th>Secrets inside</th><th>Actions</th></tr>";
    for (const auto& info : *list) {
      b += "<tr id=\"backup-" + HtmlEscape(info.id) + "\"" + (info.error ? " class=\"error\"" : "") + ">";
      if (info.error) {
        b += "<td>" + HtmlEscape(info.id) + "</td><td colspan=\"6\">damaged: " + HtmlEscape(info.error->message()) +
             "</td></tr>";
        continue;
      }
      std::string installed;
      if (info.installed.is_object()) {
        for (const auto& [name, p] : info.installed.items()) {
          if (!installed.empty()) installed += ", ";
          installed += name + " " + Str(p, "version");
        }
      }
      b += "<td>" + HtmlEscape(FormatTimestamp(info.created)) + "</td><td>" + HtmlEscape(info.reason) + "</td><td>" +
           HtmlEscape(HumanSize(info.bytes)) + "</td><td>" + HtmlEscape(installed) + "</td><td>" +
           (info.encrypted ? "yes (password)" : "no") + "</td><td class=\"secrets\">" +
           HtmlEscape(SecretsInside(info)) + "</td><td>";
      if (admin) {
        b += "<a href=\"/backups/" + info.id + "/download\" download>Download</a> <a href=\"/backups/" + info.id +
             "/restore\">Restore…</a>";
      } else {
        b += "(an administrator downloads and restores)";
      }
      b += "</td></tr>";
    }
    return b + "</table>\n";
  }

  std::string Unavailable() const {
    return env_.jobs == nullptr ? " <span>(unavailable: the agent daemon runs these actions)</span>" : "";
  }

  std::string CreateForm(const web::Principal& who, web::Authenticator& auth, const CreateChoice& c,
                         const Errors& errors, const std::string& general) const {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    const bool enabled = admin && env_.jobs != nullptr;
    std::string b = Alert(general);
    b += "<form id=\"backup-create\" method=\"post\" action=\"/backups/create\">" +
         CsrfField(auth.CsrfToken(who, "/backups/create")) + "\n" +
         "<p>A password encrypts the backup (at least 12 characters); without one it is stored plain with a "
         "checksum.</p>\n" +
         Field("backup_password", "Backup password (optional)", "password", "", errors, "new-password", false) +
         Field("backup_password2", "Backup password again", "password", "", errors, "new-password", false) +
         Checkbox("include_tls_keys", "Include the TLS private keys", c.tls, errors) +
         Checkbox("include_licence", "Include the licence", c.licence, errors) +
         Checkbox("include_vault_key", "Include the vault key", c.vault, errors,
                  "only in a password-protected backup: set a password above") +
         "<p><button type=\"submit\"" + (enabled ? "" : " disabled") + ">Create a backup</button>" +
         (admin ? Unavailable() : " <span>(an administrator creates backups)</span>") + "</p></form>\n";
    return b;
  }

  std::string VaultForm(const web::Principal& who, web::Authenticator& auth, const Errors& errors,
                        const std::string& general) const {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    if (env_.config->backup.vault_key_path.empty()) return "<p id=\"vault-none\">No vault key is configured.</p>\n";
    std::string b = Alert(general);
    b += "<form id=\"vault-export\" method=\"post\" action=\"/backups/vault-key\">" +
         CsrfField(auth.CsrfToken(who, "/backups/vault-key")) + "\n" +
         "<p>The vault key is downloaded as a password-protected file. Enter your own account password again, "
         "and the password that will protect the file (twice).</p>\n" +
         Field("vault_account_password", "Your account password", "password", "", errors, "current-password") +
         Field("vault_password", "Export password", "password", "", errors, "new-password") +
         Field("vault_password2", "Export password again", "password", "", errors, "new-password") +
         "<p><button type=\"submit\"" + (admin ? "" : " disabled") + ">Export the vault key</button>" +
         (admin ? "" : " <span>(an administrator exports the vault key)</span>") + "</p></form>\n";
    return b;
  }

  Response FormPage(const std::string& title, const std::string& body) const {
    return Page(200, title,
                "<section id=\"backups\"><h1>" + HtmlEscape(title) + "</h1>\n" + body +
                    "<p><a href=\"/\">Back to the updates page</a></p></section>\n");
  }

  void Log(const std::string& line) const {
    if (env_.log) env_.log(line);
  }

  // ---- create

  Response PostCreate(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const FormPost& fp = std::get<FormPost>(post);
    const web::Principal& who = fp.who;
    const web::Form& form = fp.form;
    CreateChoice c;
    c.tls = Ticked(form, "include_tls_keys");
    c.licence = Ticked(form, "include_licence");
    c.vault = Ticked(form, "include_vault_key");
    std::string password = Text(form, "backup_password");
    const std::string password2 = Text(form, "backup_password2");
    Errors errors;
    if (!password.empty()) {
      if (auto s = web::CheckPasswordRules(password, who.account.name); !s.ok()) {
        errors["backup_password"] = s.error().message();
      }
    }
    if (password != password2) errors["backup_password2"] = "the passwords differ";
    if (c.vault && password.empty()) {
      errors["include_vault_key"] = "the vault key goes only into a password-protected backup: set a password";
    }
    if (c.vault && env_.config->backup.vault_key_path.empty()) errors["include_vault_key"] = "no vault key is configured";
    std::string general;
    if (errors.empty() && env_.jobs == nullptr) general = "unavailable: the agent daemon makes backups";
    if (!errors.empty() || !general.empty()) {
      return FormPage("Create a backup", CreateForm(who, auth, c, errors, general));
    }
    auto secret = std::make_shared<Secret>(std::move(password));
    const Clock* clock = env_.clock;
    JobFn fn = [secret, c, clock](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
      const Settings settings = rt.agent->CurrentSettings();
      Json installed = Json::object();
      if (auto doc = rt.store->Get("installed"); doc && doc->is_object() && doc->contains("packages") &&
                                                  (*doc)["packages"].is_object()) {
        installed = (*doc)["packages"];
      }
      BackupOptions o;
      o.include_tls_keys = c.tls;
      o.include_licence = c.licence;
      o.include_vault_key = c.vault;
      if (!secret->text.empty()) o.password = std::string_view(secret->text);
      o.reason = "manual";
      BackupStore store(rt.config.BackupDir(), settings.backups_keep, *clock, SystemRandom::Instance());
      report.Phase("backup");
      UPK_TRY_ASSIGN(BackupInfo info, store.Create(rt.config.backup, o, installed, [&report](std::uint64_t d, std::uint64_t t) {
        report.Progress(d, t);
      }));
      std::string result = "backup " + info.id + " made (" + HumanSize(info.bytes) +
                           (info.encrypted ? ", encrypted" : ", plain") + ")";
      for (const auto& x : info.excluded) report.Line("left out " + x.path.string() + ": " + x.reason);
      return result;
    };
    auto id = env_.jobs->Submit("backup", "Create a backup", who.account.name, std::move(fn));
    if (!id.ok()) return FormPage("Create a backup", CreateForm(who, auth, c, {}, id.error().message()));
    Log("web: '" + who.account.name + "' asked for a backup");
    return Redirect("/jobs/" + std::to_string(*id));
  }

  // ---- download

  Response GetDownload(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    if (auto refused = auth.RequireRole(who.value(), web::Role::kAdmin)) return FromRefusal(*refused);
    const std::string id(req.PathParam("id"));
    if (!ValidBackupId(id)) return ErrorPage(404, "no such backup");
    BackupStore store = Backups();
    auto info = store.Inspect(id);
    if (!info.ok()) return ErrorPage(404, "no such backup: " + id);
    auto file = net::OpenFile::Open(store.PathOf(id));
    if (!file.ok()) return ErrorPage(404, "no such backup: " + id);
    return Attachment(Response::FromFile(*file, "application/octet-stream"), id + ".upkbak");
  }

  // ---- restore

  std::string RestoreForm(const web::Principal& who, web::Authenticator& auth, const BackupInfo& info,
                          const Errors& errors, const std::string& general, const std::string& upload = {}) const {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    const std::string action = upload.empty() ? "/backups/" + info.id + "/restore" : "/backup-uploads/" + upload;
    const std::string name = upload.empty() ? info.id : "uploaded file";
    std::string b = "<table><tr><th>Backup</th><td id=\"restore-id\">" + HtmlEscape(name) + "</td></tr><tr><th>Created</th><td>" +
                    HtmlEscape(FormatTimestamp(info.created)) + "</td></tr><tr><th>Reason</th><td>" +
                    HtmlEscape(info.reason) + "</td></tr><tr><th>Encrypted</th><td>" +
                    (info.encrypted ? "yes" : "no") + "</td></tr><tr><th>Secrets inside</th><td>" +
                    HtmlEscape(SecretsInside(info)) + "</td></tr></table>\n";
    b += "<p>The whole file is verified first; only then do its files replace the current configuration. "
         "A wrong password changes nothing.</p>\n" + Alert(general);
    b += "<form id=\"backup-restore\" method=\"post\" action=\"" + action + "\">" + CsrfField(auth.CsrfToken(who, action)) +
         "\n";
    if (info.encrypted) b += Field("restore_password", "The backup's password", "password", "", errors, "off");
    b += Checkbox("confirm", "Yes, replace the current configuration with this backup", false, errors);
    b += "<p><button type=\"submit\"" + std::string(admin && env_.jobs != nullptr ? "" : " disabled") +
         ">Restore this backup</button>" +
         (admin ? Unavailable() : " <span>(an administrator restores backups)</span>") + "</p></form>\n";
    return b;
  }

  Response GetRestore(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    const std::string id(req.PathParam("id"));
    if (!ValidBackupId(id)) return ErrorPage(404, "no such backup");
    auto info = Backups().Inspect(id);
    if (!info.ok()) return ErrorPage(404, "no such backup: " + id);
    return FormPage("Restore a backup", RestoreForm(who.value(), auth, *info, {}, {}));
  }

  Response PostRestore(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const FormPost& fp = std::get<FormPost>(post);
    const web::Principal& who = fp.who;
    const web::Form& form = fp.form;
    const std::string id(req.PathParam("id"));
    if (!ValidBackupId(id)) return ErrorPage(404, "no such backup");
    auto info = Backups().Inspect(id);
    if (!info.ok()) return ErrorPage(404, "no such backup: " + id);
    std::string password = Text(form, "restore_password");
    Errors errors;
    if (info->encrypted && password.empty()) errors["restore_password"] = "enter the password this backup was made with";
    if (password.size() > web::kMaxPasswordBytes) errors["restore_password"] = "longer than 1024 bytes";
    if (!Ticked(form, "confirm")) errors["confirm"] = "tick this to confirm: the backup's files replace the current ones";
    std::string general;
    if (errors.empty() && env_.jobs == nullptr) general = "unavailable: the agent daemon restores backups";
    if (!errors.empty() || !general.empty()) {
      return FormPage("Restore a backup", RestoreForm(who, auth, *info, errors, general));
    }
    auto secret = std::make_shared<Secret>(info->encrypted ? std::move(password) : std::string());
    const Clock* clock = env_.clock;
    JobFn fn = [secret, id, clock](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
      BackupStore store(rt.config.BackupDir(), 1, *clock, SystemRandom::Instance());
      std::optional<std::string_view> pw;
      if (!secret->text.empty()) pw = std::string_view(secret->text);
      RestoreOptions ro;
      ro.progress = [&report](std::uint64_t d, std::uint64_t t) { report.Progress(d, t); };
      report.Phase("restore");
      UPK_TRY_ASSIGN(RestoreReport done, store.Restore(id, pw, ro));
      for (const auto& p : done.restored) report.Line("restored " + p.string());
      for (const auto& x : done.not_in_backup) report.Line("not in the backup: " + x.path.string() + " (" + x.reason + ")");
      return "restored " + std::to_string(done.restored.size()) + " file(s) from backup " + id;
    };
    auto job = env_.jobs->Submit("restore", "Restore backup " + id, who.account.name, std::move(fn));
    if (!job.ok()) return FormPage("Restore a backup", RestoreForm(who, auth, *info, {}, job.error().message()));
    Log("web: '" + who.account.name + "' asked to restore backup " + id);
    return Redirect("/jobs/" + std::to_string(*job));
  }

  // ---- restore from an uploaded file

  fs::path UploadPath(const std::string& uid) const { return upload_.dir() / ("upload-" + uid + ".upkbak"); }

  // POST /backups/upload (X-CSRF-Token, the .upkbak as the body): 200 {"location"} of the restore
  // page, or 200 {"error"} for a file that is not a readable backup (the page shows it).
  Response PostUpload(const Request& req, web::Authenticator& auth) {
    if (env_.jobs == nullptr || !req.body_file()) {
      return JsonRefusal(503, "unavailable", "unavailable: the agent daemon restores backups");
    }
    web::Principal who;
    if (auto refused = upload_.Check(req, auth, &who)) return std::move(*refused);
    auto info = InspectBackupFile(req.body_file()->path);
    if (!info.ok()) {
      std::string why = info.error().message();
      const std::string prefix = req.body_file()->path.string() + ": ";
      if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());  // the temp name means nothing to the admin
      return JsonRefusal(200, "invalid_backup", "not a backup file: " + why);
    }
    const std::string uid = ToHex(SystemRandom::Instance().Generate(8));
    const fs::path kept = UploadPath(uid);
    std::error_code ec;
    fs::rename(req.body_file()->path, kept, ec);
    if (ec) return JsonRefusal(500, "internal", "cannot keep the uploaded backup: " + ec.message());
    upload_.RemoveFiles(kept);  // one uploaded backup at a time
    Log("web: '" + who.account.name + "' uploaded a backup file (" + std::to_string(req.body_file()->size) + " bytes)");
    return Secure(Response::Json(200, Json{{"location", "/backup-uploads/" + uid}}));
  }

  Response GetUploaded(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    if (auto refused = auth.RequireRole(who.value(), web::Role::kAdmin)) return FromRefusal(*refused);
    const std::string uid(req.PathParam("uid"));
    if (!ValidUploadId(uid) || upload_.dir().empty()) return ErrorPage(404, "no such upload");
    auto info = InspectBackupFile(UploadPath(uid));
    if (!info.ok()) return ErrorPage(404, "no such upload (a newer upload replaces it)");
    return FormPage("Restore an uploaded backup", RestoreForm(who.value(), auth, *info, {}, {}, uid));
  }

  Response PostUploaded(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const FormPost& fp = std::get<FormPost>(post);
    const std::string uid(req.PathParam("uid"));
    if (!ValidUploadId(uid) || upload_.dir().empty()) return ErrorPage(404, "no such upload");
    const fs::path file = UploadPath(uid);
    auto info = InspectBackupFile(file);
    if (!info.ok()) return ErrorPage(404, "no such upload (a newer upload replaces it)");
    std::string password = Text(fp.form, "restore_password");
    Errors errors;
    if (info->encrypted && password.empty()) errors["restore_password"] = "enter the password this backup was made with";
    if (password.size() > web::kMaxPasswordBytes) errors["restore_password"] = "longer than 1024 bytes";
    if (!Ticked(fp.form, "confirm")) errors["confirm"] = "tick this to confirm: the backup's files replace the current ones";
    if (!errors.empty()) {
      return FormPage("Restore an uploaded backup", RestoreForm(fp.who, auth, *info, errors, {}, uid));
    }
    auto secret = std::make_shared<Secret>(info->encrypted ? std::move(password) : std::string());
    JobFn fn = [secret, file](AgentRuntime&, JobReporter& report) -> Expected<std::string> {
      std::optional<std::string_view> pw;
      if (!secret->text.empty()) pw = std::string_view(secret->text);
      RestoreOptions ro;
      ro.progress = [&report](std::uint64_t d, std::uint64_t t) { report.Progress(d, t); };
      report.Phase("restore");
      auto done = RestoreBackupFile(file, pw, ro);
      if (!done.ok()) {
        std::string why = done.error().message();
        const std::string prefix = file.string() + ": ";
        if (why.rfind(prefix, 0) == 0) why = why.substr(prefix.size());
        return Error(done.error().code(), "the uploaded backup: " + why);
      }
      std::error_code ignored;
      fs::remove(file, ignored);  // restored: not kept (a failed one stays for another try)
      for (const auto& p : done->restored) report.Line("restored " + p.string());
      for (const auto& x : done->not_in_backup) report.Line("not in the backup: " + x.path.string() + " (" + x.reason + ")");
      return "restored " + std::to_string(done->restored.size()) + " file(s) from the uploaded backup";
    };
    auto job = env_.jobs->Submit("restore", "Restore an uploaded backup", fp.who.account.name, std::move(fn));
    if (!job.ok()) return FormPage("Restore an uploaded backup", RestoreForm(fp.who, auth, *info, {}, job.error().message(), uid));
    Log("web: '" + fp.who.account.name + "' asked to restore an uploaded backup");
    return Redirect("/jobs/" + std::to_string(*job));
  }

  // ---- vault key export

  Response PostVaultKey(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const FormPost& fp = std::get<FormPost>(post);
    const web::Principal& who = fp.who;
    const web::Form& form = fp.form;
    auto again = [&](const Errors& errors, const std::string& general) {
      return FormPage("Export the vault key", VaultForm(who, auth, errors, general));
    };
    const fs::path vault = env_.config->backup.vault_key_path;
    if (vault.empty()) return again({}, "no vault key is configured");
    Secret account(Text(form, "vault_account_password"));
    Secret password(Text(form, "vault_password"));
    Secret password2(Text(form, "vault_password2"));
    Errors errors;
    if (account.text.empty()) errors["vault_account_password"] = "enter your account password";
    if (auto s = web::CheckPasswordRules(password.text, who.account.name); !s.ok()) {
      errors["vault_password"] = s.error().message();
    }
    if (password.text != password2.text) errors["vault_password2"] = "the passwords differ";
    if (!errors.empty()) return again(errors, {});
    // Re-authentication: the same rate-limited, timing-safe check as signing in; its session is dropped.
    auto in = auth.Login(who.account.name, account.text, web::ClientAddress(req.remote()));
    if (!in.ok()) {
      errors["vault_account_password"] = in.refusal().reason;
      Log("web: '" + who.account.name + "' was refused the vault key export (account password)");
      return again(errors, {});
    }
    auth.sessions().Remove(in->session_id);

    const fs::path dir = env_.config->state_dir / "web-exports";
    std::error_code ec;
    fs::create_directories(dir, ec);
    fs::permissions(dir, fs::perms::owner_all, ec);
    if (ec) return again({}, "cannot prepare " + dir.string() + ": " + ec.message());
    static std::atomic<std::uint64_t> counter{0};
    const fs::path out =
        dir / ("vault-key-" + ToHex(SystemRandom::Instance().Generate(8)) + "-" + std::to_string(++counter) + ".upkbak");
    auto s = ExportVaultKey(vault, out, password.text, trust::KdfParams::Moderate(), SystemRandom::Instance(), *env_.clock);
    if (!s.ok()) {
      fs::remove(out, ec);
      return again({}, "the vault key was not exported: " + s.error().message());
    }
    auto file = net::OpenFile::Open(out);
    fs::remove(out, ec);  // the open descriptor keeps the bytes for this response only
    if (!file.ok()) return again({}, "the vault key was not exported: " + file.error().message());
    Log("web: '" + who.account.name + "' exported the vault key (password-protected)");
    return Attachment(Response::FromFile(*file, "application/octet-stream"), "vault-key.upkbak");
  }

  PanelEnv env_;
  RawUpload upload_;  // its dir() set by Register when jobs can run
};

}  // namespace

std::unique_ptr<Panel> MakeBackupPanel(const PanelEnv& env) { return std::make_unique<BackupPanel>(env); }

}  // namespace upkeep::agent::webpage
