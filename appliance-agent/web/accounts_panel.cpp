// The updates page's accounts (page_kit.hpp): every signed-in user changes their own password
// (GET/POST /account); an admin lists the accounts, adds one with a role, and disables or
// enables others (GET /accounts, POST /accounts, POST /accounts/state). All through the
// Authenticator: password rules, Argon2id, sessions ended when a password changes or an account
// is disabled. Adds nothing to the updates page itself (the header links here).
#include "page_kit.hpp"
#include "upkeep/common/text.hpp"

namespace upkeep::agent::webpage {
namespace {

using net::Method;
using net::Request;
using net::Response;

using Errors = std::map<std::string, std::string>;

std::string Value(const web::Form& form, const char* name) {
  auto v = form.Single(name);
  return v.ok() ? *v : std::string();
}

class AccountsPanel final : public Panel {
 public:
  explicit AccountsPanel(const PanelEnv& env) : env_(env) {}

  Status Register(RouteSink& routes) override {
    UPK_TRY(routes.Add(Method::kGet, "/account", [this](const Request& r, web::Authenticator& a) { return GetAccount(r, a); }));
    UPK_TRY(routes.Add(Method::kPost, "/account", [this](const Request& r, web::Authenticator& a) { return PostAccount(r, a); }));
    UPK_TRY(routes.Add(Method::kGet, "/accounts", [this](const Request& r, web::Authenticator& a) { return GetAccounts(r, a); }));
    UPK_TRY(routes.Add(Method::kPost, "/accounts", [this](const Request& r, web::Authenticator& a) { return PostCreate(r, a); }));
    UPK_TRY(routes.Add(Method::kPost, "/accounts/state",
                       [this](const Request& r, web::Authenticator& a) { return PostState(r, a); }));
    return OkStatus();
  }

  std::string Render(const web::Principal&, const Json&, web::Authenticator&) override { return {}; }

 private:
  static std::string Back() { return "<p><a href=\"/\">Back to the updates page</a></p>\n"; }

  // ---- own password

  Response PasswordForm(const web::Principal& who, web::Authenticator& auth, const Errors& errors,
                        const std::string& note = {}) {
    std::string b = "<h1>Your account</h1>\n<p>Signed in as <strong>" + HtmlEscape(who.account.name) + "</strong> (" +
                    HtmlEscape(std::string(web::RoleName(who.account.role))) + ").</p>\n";
    if (!note.empty()) b += "<p class=\"ok\" role=\"status\">" + HtmlEscape(note) + "</p>\n";
    b += "<h2>Change your password</h2>\n<p>At least 12 characters. Your other sessions end.</p>\n"
         "<form method=\"post\" action=\"/account\" novalidate>" + CsrfField(auth.CsrfToken(who, "/account")) + "\n" +
         Field("current_password", "Current password", "password", "", errors, "current-password") +
         Field("new_password", "New password", "password", "", errors, "new-password") +
         Field("new_password2", "New password again", "password", "", errors, "new-password") +
         "<p><button type=\"submit\">Change the password</button></p></form>\n";
    if (web::Permits(who.account.role, web::Role::kAdmin)) b += "<p><a href=\"/accounts\">Manage accounts</a></p>\n";
    return Page(200, "Your account", b + Back());
  }

  Response GetAccount(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    return PasswordForm(who.value(), auth, {}, req.QueryParam("changed").value_or("") == "1" ? "Your password was changed." : "");
  }

  Response PostAccount(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kReadOnly);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& [who, form] = std::get<FormPost>(post);
    const std::string current = Value(form, "current_password");
    const std::string next = Value(form, "new_password");
    Errors errors;
    if (current.empty()) errors["current_password"] = "enter your current password";
    if (next.empty()) errors["new_password"] = "enter a new password";
    if (next != Value(form, "new_password2")) errors["new_password2"] = "the passwords differ";
    if (!errors.empty()) return PasswordForm(who, auth, errors);
    auto changed = auth.ChangePassword(who, current, next);
    if (!changed.ok()) {
      const web::Refusal& r = changed.refusal();
      if (r.status >= 500) return ErrorPage(r.status, r.reason);
      errors[r.status == 400 ? "new_password" : "current_password"] = r.reason;
      return PasswordForm(who, auth, errors);
    }
    if (env_.log) env_.log("web: '" + who.account.name + "' changed their password");
    Response resp = Redirect("/account?changed=1");
    resp.SetHeader("Set-Cookie", changed->set_cookie);
    return resp;
  }

  // ---- accounts (admin)

  Response AccountsPage(const web::Principal& who, web::Authenticator& auth, const Errors& errors,
                        const std::string& name, const std::string& role, const std::string& note = {}) {
    std::string b = "<h1>Accounts</h1>\n";
    if (!note.empty()) b += "<p class=\"ok\" role=\"status\">" + HtmlEscape(note) + "</p>\n";
    if (auto it = errors.find("account"); it != errors.end()) b += Alert(it->second);
    auto list = env_.accounts != nullptr ? env_.accounts->List() : Expected<std::vector<web::Account>>(std::vector<web::Account>{});
    if (!list.ok()) return ErrorPage(503, "cannot read the accounts: " + list.error().message());
    b += "<table id=\"accounts\"><tr><th>Name</th><th>Role</th><th>Created</th><th>State</th><th></th></tr>";
    const std::string token = auth.CsrfToken(who, "/accounts/state");
    for (const auto& a : *list) {
      b += "<tr><td>" + HtmlEscape(a.name) + "</td><td>" + HtmlEscape(std::string(web::RoleName(a.role))) + "</td><td>" +
           HtmlEscape(FormatTimestamp(a.created)) + "</td><td>" + (a.disabled ? "disabled" : "active") + "</td><td>";
      if (a.name != who.account.name) {
        b += "<form class=\"inline\" method=\"post\" action=\"/accounts/state\">" + CsrfField(token) +
             Hidden("name", a.name) + Hidden("disabled", a.disabled ? "false" : "true") + "<button type=\"submit\">" +
             (a.disabled ? "Enable" : "Disable") + "</button></form>";
      }
      b += "</td></tr>";
    }
    b += "</table>\n<h2>Add an account</h2>\n<p>Read-only accounts see the page; administrators also act "
         "(check, install, upload, back up, restore, change settings).</p>\n"
         "<form method=\"post\" action=\"/accounts\" novalidate>" + CsrfField(auth.CsrfToken(who, "/accounts")) + "\n" +
         Field("name", "Name", "text", name, errors, "off") + "<label for=\"role\">Role</label><select id=\"role\" name=\"role\">";
    for (const char* r : {"read-only", "admin"}) {
      b += std::string("<option") + (role == r ? " selected" : "") + ">" + r + "</option>";
    }
    b += "</select>";
    if (auto it = errors.find("role"); it != errors.end()) {
      b += "<span class=\"field-error\" id=\"role-error\" role=\"alert\">" + HtmlEscape(it->second) + "</span>";
    }
    b += "\n" + Field("password", "Initial password", "password", "", errors, "new-password") +
         Field("password2", "Initial password again", "password", "", errors, "new-password") +
         "<p><button type=\"submit\">Add the account</button></p></form>\n";
    return Page(200, "Accounts", b + Back());
  }

  Response GetAccounts(const Request& req, web::Authenticator& auth) {
    auto who = auth.Authenticate(req);
    if (!who.ok()) return Redirect("/login");
    if (auto refused = auth.RequireRole(who.value(), web::Role::kAdmin)) return FromRefusal(*refused);
    const std::string done = req.QueryParam("done").value_or("");
    return AccountsPage(who.value(), auth, {}, "", "read-only",
                        done == "created" ? "The account was added." : done == "changed" ? "The account was changed." : "");
  }

  Response PostCreate(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& [who, form] = std::get<FormPost>(post);
    const std::string name = Value(form, "name");
    const std::string role_text = Value(form, "role");
    const std::string password = Value(form, "password");
    Errors errors;
    if (auto s = web::CheckAccountName(name); !s.ok()) errors["name"] = s.error().message();
    const auto role = web::ParseRole(role_text);
    if (!role || *role == web::Role::kSupport) errors["role"] = "choose read-only or admin";
    if (password.empty()) errors["password"] = "enter an initial password";
    if (password != Value(form, "password2")) errors["password2"] = "the passwords differ";
    if (!errors.empty()) return AccountsPage(who, auth, errors, name, role_text);
    auto made = auth.CreateAccount(who, name, *role, password);
    if (!made.ok()) {
      const web::Refusal& r = made.refusal();
      if (r.status == 403 || r.status >= 500) return FromRefusal(r);
      errors[r.status == 409 || r.reason.find("name") != std::string::npos ? "name" : "password"] = r.reason;
      return AccountsPage(who, auth, errors, name, role_text);
    }
    if (env_.log) env_.log("web: '" + who.account.name + "' added the account '" + made->name + "' (" +
                           std::string(web::RoleName(made->role)) + ")");
    return Redirect("/accounts?done=created");
  }

  Response PostState(const Request& req, web::Authenticator& auth) {
    auto post = AcceptForm(req, auth, web::Role::kAdmin);
    if (auto* refused = std::get_if<Response>(&post)) return std::move(*refused);
    const auto& [who, form] = std::get<FormPost>(post);
    const std::string name = Value(form, "name");
    const std::string disabled = Value(form, "disabled");
    if (disabled != "true" && disabled != "false") {
      return AccountsPage(who, auth, {{"account", "the form is damaged: reload the page"}}, "", "read-only");
    }
    auto changed = auth.SetDisabled(who, name, disabled == "true");
    if (!changed.ok()) {
      const web::Refusal& r = changed.refusal();
      if (r.status == 403 || r.status >= 500) return FromRefusal(r);
      return AccountsPage(who, auth, {{"account", r.reason}}, "", "read-only");
    }
    if (env_.log) {
      env_.log("web: '" + who.account.name + "' " + (disabled == "true" ? "disabled" : "enabled") + " the account '" +
               changed->name + "'");
    }
    return Redirect("/accounts?done=changed");
  }

  PanelEnv env_;
};

}  // namespace

std::unique_ptr<Panel> MakeAccountsPanel(const PanelEnv& env) { return std::make_unique<AccountsPanel>(env); }

}  // namespace upkeep::agent::webpage
