// The updates page's panel for air-gapped updates (page_kit.hpp, docs/agent/web.md "Air-gapped
// updates on the page"): a download key made by the daemon (text and QR code, kept in memory while
// it is valid), the manual installation of a bundle (.upkb) streamed to a file under the state
// directory and imported + installed by the daemon as a job, and the signed installation report
// of the last import for the portal.
//
// Nothing here writes the agent's state: MakeDownloadKey and ImportBundle run as jobs on the
// daemon's thread with the store lock; the report is read through a read-only runtime. An uploaded
// bundle lives only as long as its job (or the refused request): its deleter goes with the job's
// function, which the queue drops when the job ends.
#include <sys/statvfs.h>

#include <algorithm>
#include <atomic>
#include <charconv>
#include <filesystem>
#include <mutex>

#include "page_kit.hpp"
#include "upkeep/agent/runtime.hpp"
#include "upkeep/common/qr.hpp"
#include "upkeep/common/text.hpp"
#include "upkeep/packages/source.hpp"

namespace upkeep::agent::webpage {
namespace {

using net::Method;
using net::Request;
using net::Response;

constexpr std::uint64_t kMaxBundleBytes = 16ull << 30;  // 16 GiB
constexpr std::uint64_t kSpareBytes = 64ull << 20;      // left free after an upload
constexpr int kDefaultValidHours = 72;                  // as `appliance-agent download-key`
constexpr int kMaxValidHours = 90 * 24;
constexpr const char* kUploadPath = "/airgap/upload";

// Served as a file (the CSP allows no inline script): the key page's "Copy" button and its wait
// for the key job, and the bundle upload with its progress bar.
constexpr const char* kAirgapScript = R"JS('use strict';
(function () {
  const $ = (id) => document.getElementById(id);

  const copy = $('download-key-copy');
  if (copy) {
    copy.hidden = false;
    copy.addEventListener('click', async () => {
      const text = $('download-key-text').textContent;
      try {
        await navigator.clipboard.writeText(text);
        copy.textContent = 'Copied';
      } catch (e) {
        const range = document.createRange();
        range.selectNodeContents($('download-key-text'));
        const sel = window.getSelection();
        sel.removeAllRanges();
        sel.addRange(range);
        copy.textContent = 'Selected: press Ctrl+C';
      }
    });
  }

  const pending = $('download-key-pending');
  if (pending) {
    const id = pending.getAttribute('data-job');
    const timer = setInterval(async () => {
      try {
        const r = await fetch('/api/v1/jobs/' + encodeURIComponent(id), {credentials: 'same-origin'});
        if (!r.ok) return;
        const job = await r.json();
        if (job.state === 'succeeded' || job.state === 'failed') {
          clearInterval(timer);
          window.location.reload();
        }
      } catch (e) { /* the appliance is busy: try again */ }
    }, 1000);
  }

  const form = $('airgap-upload');
  if (!form) return;
  form.hidden = false;
  const input = $('bundle');
  const button = $('airgap-upload-button');
  const bar = $('airgap-progress');
  const status = $('airgap-upload-status');
  const max = Number(form.getAttribute('data-max'));
  const say = (text, error) => {
    status.textContent = text;
    status.className = error ? 'error' : '';
  };
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const file = input.files && input.files[0];
    if (!file) { say('Choose the bundle file (.upkb) first.', true); return; }
    if (file.size === 0) { say('The chosen file is empty.', true); return; }
    if (file.size > max) { say('The file is larger than the ' + Math.round(max / 1073741824) + ' GiB a bundle may have.', true); return; }
    const xhr = new XMLHttpRequest();
    xhr.open('POST', form.getAttribute('data-action'));
    xhr.setRequestHeader('X-CSRF-Token', form.getAttribute('data-csrf'));
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    bar.hidden = false;
    bar.setAttribute('value', '0');
    button.disabled = true;
    say('Uploading ' + file.name + ' ...', false);
    xhr.upload.addEventListener('progress', (e) => {
      if (!e.lengthComputable) return;
      const pct = Math.floor(e.loaded * 100 / e.total);
      bar.setAttribute('value', String(pct));
      bar.textContent = pct + '%';
      say('Uploading ' + file.name + ': ' + pct + '%', false);
    });
    xhr.addEventListener('load', () => {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 200 && body && body.location) {
        bar.setAttribute('value', '100');
        say('Uploaded; the appliance verifies and installs it now.', false);
        window.location.assign(body.location);
        return;
      }
      button.disabled = false;
      const why = body && body.error && body.error.message ? body.error.message : 'the appliance answered ' + xhr.status;
      say('The upload was refused: ' + why, true);
    });
    xhr.addEventListener('error', () => {
      button.disabled = false;
      say('The upload failed: the connection to the appliance broke (is the disk full?).', true);
    });
    xhr.send(file);
  });
})();
)JS";

constexpr const char* kAirgapCss =
    "#download-key-text{white-space:pre-wrap;word-break:break-all;font-family:monospace;max-width:40em}\n"
    ".qr svg{width:20em;max-width:100%;height:auto;border:1px solid #ccc}\n"
    "#airgap-progress{width:30em;max-width:100%}\n";

// The key the daemon made last, kept only while it is valid (never logged).
struct KeyStore {
  std::mutex mu;
  DownloadKeyResult key;
  bool has = false;
};

// The SVG of QrToSvg without its XML declaration, for inline use in the page.
std::string InlineQr(const std::string& key_text) {
  std::string compact;  // as the CLI: alphanumeric mode has no line breaks; the portal ignores them
  for (char c : key_text) {
    if (c != '\n' && c != '\r' && c != ' ') compact += c;
  }
  auto qr = EncodeQr(compact);
  if (!qr.ok()) return "<p>(no QR code: " + HtmlEscape(qr.error().message()) + ")</p>";
  std::string svg = QrToSvg(*qr, 4);
  const auto at = svg.find("<svg");
  if (at == std::string::npos) return {};
  svg = svg.substr(at);
  svg.insert(4, " role=\"img\" aria-label=\"QR code of the download key\"");
  return svg;
}

std::optional<std::uint64_t> ParseJobId(std::string_view text) {
  std::uint64_t id = 0;
  if (text.empty() || text.size() > 19) return std::nullopt;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), id);
  if (ec != std::errc() || end != text.data() + text.size() || id == 0) return std::nullopt;
  return id;
}

class AirgapPanel final : public Panel {
 public:
  explicit AirgapPanel(const PanelEnv& env) : env_(env), keys_(std::make_shared<KeyStore>()) {}

  Status Register(RouteSink& routes) override {
    UPK_TRY(routes.Add(Method::kGet, "/download-key",
                       [this](const Request& r, web::Authenticator& a) { return KeyPage(r, a); }));
    UPK_TRY(routes.Add(Method::kPost, "/download-key",
                       [this](const Request& r, web::Authenticator& a) { return PostKey(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/airgap/report",
                       [this](const Request& r, web::Authenticator& a) { return Report(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/static/airgap.js", [](const Request&, web::Authenticator&) {
      return Asset(kAirgapScript, "text/javascript; charset=utf-8");
    }));
    net::RouteOptions upload;
    if (env_.config != nullptr && env_.jobs != nullptr) {
      UPK_TRY(upload_.Prepare(env_.config->state_dir / "uploads", env_.authenticator));
      upload = upload_.Options(kMaxBundleBytes, [this](const Request& r) { return Precheck(r); });
    }
    UPK_TRY(routes.Add(Method::kPost, kUploadPath,
                       [this](const Request& r, web::Authenticator& a) { return Upload(r, a); }, upload));
    return OkStatus();
  }

  std::string Css() const override { return kAirgapCss; }

  std::string Render(const web::Principal& who, const Json&, web::Authenticator& auth) override {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    const bool available = env_.jobs != nullptr && env_.config != nullptr;
    std::string b = "<section id=\"airgap\"><h2>Air-gapped updates</h2>\n"
                    "<p>For an appliance without a connection to the update server: make a download key, "
                    "enter it in the vendor's download portal on any computer, download the bundle it offers "
                    "and install it here.</p>\n<h3>Download key</h3>\n";
    if (auto key = CurrentKey()) {
      b += "<p>A download key is valid until " + HtmlEscape(FormatTimestamp(key->expires)) +
           ": <a href=\"/download-key\">show the download key</a>.</p>\n";
    }
    b += KeyForm(who, auth, std::to_string(kDefaultValidHours), {}, admin, available);
    b += "<h3>Manual installation</h3>\n";
    if (!available) {
      b += "<p>Manual installation is unavailable: the page runs without the agent daemon.</p>\n";
    } else if (!admin) {
      b += "<p>An administrator uploads and installs update bundles.</p>\n";
    } else {
      b += "<noscript><p class=\"error\">Uploading a bundle needs JavaScript: enable it for this page, or copy the "
           "bundle to the appliance and run <code>appliance-agent import FILE.upkb</code>.</p></noscript>\n"
           "<form id=\"airgap-upload\" hidden data-action=\"" + std::string(kUploadPath) + "\" data-csrf=\"" +
           HtmlEscape(auth.CsrfToken(who, kUploadPath)) + "\" data-max=\"" + std::to_string(kMaxBundleBytes) +
           "\"><label for=\"bundle\">Update bundle (.upkb) from the download portal</label>"
           "<input id=\"bundle\" name=\"bundle\" type=\"file\" accept=\".upkb\" required>\n"
           "<p><button id=\"airgap-upload-button\" type=\"submit\">Upload and install</button></p>\n"
           "<progress id=\"airgap-progress\" max=\"100\" value=\"0\" hidden></progress> "
           "<span id=\"airgap-upload-status\" role=\"status\"></span></form>\n"
           "<script src=\"/static/airgap.js\"></script>\n";
    }
    if (auto last = LastImport(); last.is_object()) {
      b += "<p id=\"last-import\">Last import: bundle " + HtmlEscape(Str(last, "bundle_id")) +
           (Str(last, "at").empty() ? std::string() : " at " + HtmlEscape(Str(last, "at"))) +
           ". <a id=\"import-report\" href=\"/airgap/report\" download>Download the installation report</a> "
           "and upload it to the download portal.</p>\n";
    }
    return b + "</section>\n";
  }

 private:
  std::optional<DownloadKeyResult> CurrentKey() const {
    std::lock_guard lock(keys_->mu);
    if (!keys_->has) return std::nullopt;
    const SysTime now = env_.clock != nullptr ? env_.clock->Now() : SystemClock::Instance().Now();
    if (keys_->key.expires <= now) {
      keys_->has = false;
      keys_->key = DownloadKeyResult{};
      return std::nullopt;
    }
    return keys_->key;
  }

  Json LastImport() const {
    if (env_.config == nullptr) return nullptr;
    auto rt = OpenAgentRuntime(*env_.config, true);
    if (!rt.ok()) return nullptr;
    return (*rt)->store->Get("last_import").value_or(Json(nullptr));
  }

  std::string KeyForm(const web::Principal& who, web::Authenticator& auth, const std::string& hours,
                      const std::map<std::string, std::string>& errors, bool admin, bool available) const {
    if (!available) return "<p>Making a download key is unavailable: the page runs without the agent daemon.</p>\n";
    std::string b = "<form method=\"post\" action=\"/download-key\">" +
                    CsrfField(auth.CsrfToken(who, "/download-key")) + "\n" +
                    Field("valid_hours", "Valid for (hours, 1 to " + std::to_string(kMaxValidHours) + ")", "number",
                          hours, errors, "off") +
                    "<p><button type=\"submit\"" + (admin ? "" : " disabled") + ">Make a download key</button>";
    if (!admin) b += " <span>(an administrator makes download keys)</span>";
    return b + "</p></form>\n";
  }

  Response KeyFormPage(const web::Principal& who, web::Authenticator& auth, const std::string& hours,
                       const std::map<std::string, std::string>& errors, const std::string& alert) {
    const bool admin = web::Permits(who.account.role, web::Role::kAdmin);
    return Page(200, "Download key",
                "<h1>Download key</h1>\n" + Alert(alert) +
                    KeyForm(who, auth, hours, errors, admin, env_.jobs != nullptr && env_.config != nullptr) +
                    "<p><a href=\"/\">Back to the updates page</a></p>\n");
  }

  // GET /download-key[?job=ID]: the key being made, or the valid key with its QR code.
  Response KeyPage(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    std::string b = "<h1>Download key</h1>\n";
    if (auto job_text = req.QueryParam("job"); job_text && env_.jobs != nullptr) {
      auto id = ParseJobId(*job_text);
      auto job = id ? env_.jobs->Get(*id) : std::nullopt;
      if (job && job->kind == "download-key" && (job->state == "queued" || job->state == "running")) {
        b += "<p id=\"download-key-pending\" data-job=\"" + std::to_string(*id) +
             "\">The appliance is making the key; this page shows it when it is ready "
             "(<a href=\"/download-key?job=" + std::to_string(*id) + "\">reload</a>).</p>\n"
             "<script src=\"/static/airgap.js\"></script>\n";
        return Page(200, "Download key", b);
      }
      if (job && job->kind == "download-key" && job->state == "failed") {
        return KeyFormPage(who.value(), auth, std::to_string(kDefaultValidHours), {},
                           "The download key could not be made: " + job->result);
      }
    }
    auto key = CurrentKey();
    if (!key) {
      return KeyFormPage(who.value(), auth, std::to_string(kDefaultValidHours), {},
                         "No valid download key yet: make one.");
    }
    b += "<p>Download key for appliance <strong>" + HtmlEscape(key->appliance_id) + "</strong>, made " +
         HtmlEscape(FormatTimestamp(key->issued)) + ", valid until <strong id=\"download-key-expires\">" +
         HtmlEscape(FormatTimestamp(key->expires)) + "</strong>.</p>\n<pre id=\"download-key-text\">" +
         HtmlEscape(key->text) + "</pre>\n<p><button id=\"download-key-copy\" type=\"button\" hidden>Copy</button></p>\n"
         "<div class=\"qr\">" + InlineQr(key->text) + "</div>\n"
         "<ol><li>Copy the key (or scan the QR code) and carry it to a computer that can reach the vendor's "
         "download portal.</li><li>Enter it in the portal: it lists the updates for this appliance in install "
         "order.</li><li>Download the bundle (.upkb) and bring it back.</li><li>Upload it here under "
         "\"Manual installation\" before the key expires; then download the installation report and upload it "
         "to the portal.</li></ol>\n<p><a href=\"/\">Back to the updates page</a></p>\n"
         "<script src=\"/static/airgap.js\"></script>\n";
    return Page(200, "Download key", b);
  }

  // POST /download-key: valid_hours -> a job making the key on the daemon's thread.
  Response PostKey(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& [who, form] = std::get<FormPost>(post);
    auto hours_text = form.Single("valid_hours");
    const std::string shown = hours_text.ok() ? *hours_text : "";
    int hours = 0;
    std::map<std::string, std::string> errors;
    if (!hours_text.ok() || hours_text->empty()) {
      errors["valid_hours"] = "enter how many hours the key is valid (1 to " + std::to_string(kMaxValidHours) + ")";
    } else {
      const auto& t = *hours_text;
      auto [end, ec] = std::from_chars(t.data(), t.data() + t.size(), hours);
      if (ec != std::errc() || end != t.data() + t.size() || hours < 1 || hours > kMaxValidHours) {
        errors["valid_hours"] = "the validity must be a whole number of hours from 1 to " +
                                std::to_string(kMaxValidHours) + " (90 days)";
      }
    }
    if (!errors.empty()) return KeyFormPage(who, auth, shown, errors, {});
    if (env_.jobs == nullptr || env_.config == nullptr) {
      return KeyFormPage(who, auth, shown, {}, "Making a download key is unavailable: the page runs without the agent daemon.");
    }
    auto keys = keys_;
    JobFn fn = [keys, hours](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
      report.Phase("download-key");
      UPK_TRY_ASSIGN(DownloadKeyResult key, rt.agent->MakeDownloadKey(std::chrono::hours(hours)));
      const std::string until = FormatTimestamp(key.expires);
      {
        std::lock_guard lock(keys->mu);
        keys->key = std::move(key);
        keys->has = true;
      }
      return "download key made, valid until " + until + " (shown on the page under Air-gapped updates)";
    };
    auto id = env_.jobs->Submit("download-key", "Make a download key (" + std::to_string(hours) + " h)",
                                who.account.name, std::move(fn));
    if (!id.ok()) return KeyFormPage(who, auth, shown, {}, id.error().message());
    if (env_.log) env_.log("web: '" + who.account.name + "' asked for a download key");
    return Redirect("/download-key?job=" + std::to_string(*id));
  }

  // ---- the upload

  // The checks after the upload guard's that need no body, before any byte of it is written (I/O
  // thread: in memory only, plus one statvfs).
  std::optional<Response> Precheck(const Request& req) {
    if (ImportRunning()) return JsonRefusal(409, "conflict", "an import is already queued or running");
    struct statvfs fs {};
    if (::statvfs(upload_.dir().c_str(), &fs) == 0) {
      const std::uint64_t free = static_cast<std::uint64_t>(fs.f_bavail) * fs.f_frsize;
      if (free < kSpareBytes || free - kSpareBytes < req.content_length()) {
        return JsonRefusal(507, "insufficient_storage",
                           "not enough free space on the appliance for a bundle of " +
                               std::to_string(req.content_length()) + " bytes (" + std::to_string(free) + " free)");
      }
    }
    return std::nullopt;
  }

  bool ImportRunning() const {
    if (env_.jobs == nullptr) return false;
    for (const auto& j : env_.jobs->Recent(JobQueue::kMaxQueued + JobQueue::kMaxFinished + 1)) {
      if (j.kind == "import" && (j.state == "queued" || j.state == "running")) return true;
    }
    return false;
  }

  // POST /airgap/upload (X-CSRF-Token, the bundle as the body): 200 {"job", "location"}, or a
  // JSON error. The body file is moved aside for the job and deleted when the job ends.
  Response Upload(const Request& req, web::Authenticator& auth) {
    if (env_.jobs == nullptr || env_.config == nullptr || !req.body_file()) {
      return JsonRefusal(503, "unavailable", "manual installation is unavailable: the page runs without the agent daemon");
    }
    web::Principal who;
    if (auto refused = upload_.Check(req, auth, &who)) return std::move(*refused);
    const auto& body = *req.body_file();
    const std::filesystem::path kept =
        upload_.dir() / ("import-" + std::to_string(++uploads_) + "-" + body.sha256_hex.substr(0, 16) + ".upkb");
    std::error_code ec;
    std::filesystem::rename(body.path, kept, ec);
    if (ec) return JsonRefusal(500, "internal", "cannot keep the uploaded bundle: " + ec.message());
    // Deletes the bundle when the last copy of the job's function goes (job ended, or refused).
    std::shared_ptr<void> cleanup(nullptr, [kept](void*) {
      std::error_code ignored;
      std::filesystem::remove(kept, ignored);
    });
    const std::uint64_t size = body.size;
    JobFn fn = [kept, cleanup, size](AgentRuntime& rt, JobReporter& report) -> Expected<std::string> {
      report.Phase("verify");
      report.Line("verifying the bundle (" + std::to_string(size) + " bytes)");
      auto source = packages::OpenFileSource(kept);
      if (!source.ok()) return source.error().Wrap("bundle");
      ImportOptions o;
      o.install = true;
      bool installing = false;
      o.progress = [&report, &installing](std::uint64_t done, std::uint64_t total) {
        if (installing) return;
        report.Progress(done, total);
        if (total > 0 && done >= total) {
          installing = true;
          report.Line("the bundle is verified and kept; installing its updates in order");
          report.Phase("install");
        }
      };
      UPK_TRY_ASSIGN(ImportResult r, rt.agent->ImportBundle(**source, o));
      std::string result = "bundle " + r.bundle_id + " verified (" + std::to_string(r.steps.size()) + " step(s))";
      bool failed = false;
      for (const auto& i : r.installs) {
        if (i.message.empty()) continue;
        report.Line(i.message);
        if (i.outcome == InstallOutcome::kFailedRolledBack) failed = true;
      }
      if (r.up_to_date) result += "; up to date: it names nothing newer than what is installed";
      std::string installed;
      for (const auto& i : r.installs) {
        if (i.outcome == InstallOutcome::kInstalled) installed += (installed.empty() ? "" : ", ") + i.name + " " + i.version;
      }
      if (!installed.empty()) result += "; installed " + installed;
      if (r.install_error) return r.install_error->Wrap(result + "; install stopped");
      if (failed) return Error(Errc::kInternal, result + "; an install failed and was rolled back (see the history)");
      return result;
    };
    auto id = env_.jobs->Submit("import", "Install an update bundle", who.account.name, std::move(fn));
    if (!id.ok()) {
      const int status = id.error().code() == Errc::kPolicy ? 409 : 503;
      return JsonRefusal(status, status == 409 ? "conflict" : "unavailable", id.error().message());
    }
    if (env_.log) env_.log("web: '" + who.account.name + "' uploaded a bundle (" + std::to_string(size) + " bytes)");
    return Secure(Response::Json(200, Json{{"job", *id}, {"location", "/jobs/" + std::to_string(*id)}}));
  }

  // GET /airgap/report: the signed installation report of the last import, as a download.
  Response Report(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    if (env_.config == nullptr) return ErrorPage(503, "the page runs without the agent daemon");
    auto rt = OpenAgentRuntime(*env_.config, true);
    if (!rt.ok()) return ErrorPage(503, "cannot read the agent's state: " + rt.error().message());
    auto report = (*rt)->agent->LastImportReport();
    if (!report.ok()) {
      return ErrorPage(report.error().code() == Errc::kNotFound ? 404 : 500, report.error().message());
    }
    const Json last = (*rt)->store->Get("last_import").value_or(Json::object());
    std::string name = "upkeep-report";
    const std::string bundle = Str(last, "bundle_id");
    if (!bundle.empty()) name += "-" + ClassName(bundle);
    return Attachment(Response::Text(200, *report + "\n", "application/json"), name + ".json");
  }

  PanelEnv env_;
  std::shared_ptr<KeyStore> keys_;
  RawUpload upload_;  // knows the host's Authenticator once any handler of this panel ran
  std::atomic<std::uint64_t> uploads_{0};
};

}  // namespace

std::unique_ptr<Panel> MakeAirgapPanel(const PanelEnv& env) { return std::make_unique<AirgapPanel>(env); }

}  // namespace upkeep::agent::webpage
