// The appliance updates page's test kit (page_test_kit.hpp).
#include "page_test_kit.hpp"

#include "upkeep/common/text.hpp"
#include "upkeep/web/password.hpp"

namespace upkeep::agent::pagetest {

void Jar::Take(const HttpResponse& r) {
  for (const auto& [name, value] : r.headers) {
    if (!upkeep::EqualsIgnoreCase(name, "Set-Cookie")) continue;
    const auto eq = value.find('=');
    const auto semi = value.find(';');
    const std::string n = value.substr(0, eq);
    const std::string v = value.substr(eq + 1, semi == std::string::npos ? std::string::npos : semi - eq - 1);
    if (v.empty()) {
      cookies.erase(n);
    } else {
      cookies[n] = v;
    }
  }
}

std::string Jar::Header() const {
  std::string out;
  for (const auto& [n, v] : cookies) out += (out.empty() ? "" : "; ") + n + "=" + v;
  return out;
}

bool Has(const std::string& body, const std::string& text) { return body.find(text) != std::string::npos; }

std::string Between(const std::string& html, const std::string& marker, char end) {
  const auto at = html.find(marker);
  if (at == std::string::npos) return {};
  const auto start = at + marker.size();
  return html.substr(start, html.find(end, start) - start);
}

std::string CsrfFor(const std::string& html, const std::string& action) {
  const auto form = html.find("action=\"" + action + "\"");
  if (form == std::string::npos) return {};
  return Between(html.substr(form), "name=\"csrf_token\" value=\"");
}

SysTime NowSeconds() { return std::chrono::time_point_cast<std::chrono::seconds>(std::chrono::system_clock::now()); }

Expected<Json> FakeSource::Status() {
  std::lock_guard lock(mu);
  if (fail) return Error(Errc::kIo, "store unreadable");
  return status;
}

upkeep::Status FakeSource::RequestCheck() {
  ++checks;
  return OkStatus();
}

void PageTest::TearDown() {
  host_.reset();
  if (ctx_ != nullptr) SSL_CTX_free(ctx_);
  ctx_ = nullptr;
}

void PageTest::TrustCertificate(const std::filesystem::path& dir) {
  auto cert = net::testing::WriteSelfSignedCertificate(dir);
  ASSERT_TRUE(cert.ok()) << cert.error().message();
  cert_ = *cert;
  ctx_ = SSL_CTX_new(TLS_client_method());
  SSL_CTX_set_verify(ctx_, SSL_VERIFY_PEER, nullptr);
  ASSERT_EQ(SSL_CTX_load_verify_locations(ctx_, cert_.certificate.c_str(), nullptr), 1);
}

void PageTest::StartWebHost(UpdatesSource& source, const WebDaemonLink& link) {
  host_.reset();
  WebHostOptions o;
  o.listen = "127.0.0.1:0";
  o.certificate = cert_.certificate;
  o.private_key = cert_.private_key;
  o.fast_password_hashing = true;
  auto host = WebHost::Start(
      o, accounts_, source, clock_, SystemRandom::Instance(),
      [this](const std::string& l) {
        std::lock_guard lock(log_mu_);
        log_.push_back(l);
      },
      link);
  ASSERT_TRUE(host.ok()) << host.error().message();
  host_ = std::move(*host);
  origin_ = "Origin: https://127.0.0.1:" + std::to_string(host_->port()) + "\r\n";
}

HttpResponse PageTest::Do(const std::string& method, const std::string& path, Jar* jar, const std::string& body,
                          const std::string& extra, const std::string& type) {
  RawClient c(host_->port(), ctx_, false, std::chrono::seconds(30));
  EXPECT_TRUE(c.connected());
  std::string req = method + " " + path + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
  if (jar != nullptr && !jar->cookies.empty()) req += "Cookie: " + jar->Header() + "\r\n";
  if (method == "POST" && post_origin_) req += origin_;
  if (method == "POST" && extra.find("Content-Length:") == std::string::npos) {
    req += "Content-Type: " + type + "\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += extra + "Connection: close\r\n\r\n" + body;
  auto r = c.Request(req);
  EXPECT_TRUE(r.has_value()) << method << " " << path;
  if (!r) return {};
  if (jar != nullptr) jar->Take(*r);
  return *r;
}

HttpResponse PageTest::Submit(Jar& jar, const std::string& page, const std::string& action, const std::string& fields) {
  auto form = Do("GET", page, &jar);
  const std::string csrf = CsrfFor(form.body, action);
  EXPECT_FALSE(csrf.empty()) << form.body;
  return Do("POST", action, &jar, "csrf_token=" + csrf + "&" + fields);
}

std::string PageTest::SetupToken() {
  std::lock_guard lock(log_mu_);
  for (auto it = log_.rbegin(); it != log_.rend(); ++it) {
    const std::string marker = "one-time setup token ";
    const auto at = it->find(marker);
    if (at != std::string::npos) return it->substr(at + marker.size(), 32);
  }
  return {};
}

void PageTest::DoSetup() {
  Jar jar;
  auto r = Submit(jar, "/setup", "/setup",
                  "setup_token=" + SetupToken() + "&name=admin&password=" + kAdminPassword + "&password2=" +
                      kAdminPassword);
  ASSERT_EQ(r.status, 303) << r.body;
}

Jar PageTest::LoginAs(const std::string& name, const std::string& password) {
  Jar jar;
  auto r = Submit(jar, "/login", "/login", "name=" + name + "&password=" + password);
  EXPECT_EQ(r.status, 303) << r.body;
  EXPECT_EQ(r.Header("Location").value_or(""), "/");
  return jar;
}

void PageTest::AddAccount(const std::string& name, web::Role role, const std::string& password) {
  web::Account a;
  a.name = name;
  a.role = role;
  a.password_hash = web::PasswordHasher(web::PasswordCost::MinForTests()).Hash(password).value();
  a.created = clock_.Now();
  ASSERT_TRUE(accounts_.Create(a).ok());
}

std::string PageTest::LogText() {
  std::lock_guard lock(log_mu_);
  std::string all;
  for (const auto& l : log_) all += l + "\n";
  return all;
}

}  // namespace upkeep::agent::pagetest
