// TLS endpoints: handshake against a freshly generated self-signed certificate, TLS 1.3 by
// default, 1.2 accepted, older refused, requests and file bodies (the buffered path) over TLS.
#include <gtest/gtest.h>
#include <openssl/err.h>

#include <filesystem>
#include <fstream>
#include <random>

#include "test_client.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/net/testing_cert.hpp"

namespace upkeep::net {
namespace {

using namespace std::chrono_literals;
using test::Get;
using test::RawClient;

class TlsTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("upkeep-net-tls-" + std::to_string(::getpid()));
    auto files = testing::WriteSelfSignedCertificate(dir_);
    ASSERT_TRUE(files.ok()) << files.error().message();
    files_ = *files;
    content_.resize(700 * 1024 + 3);
    std::mt19937 rng(3);
    for (auto& ch : content_) ch = static_cast<char>(rng());
    std::ofstream(dir_ / "blob", std::ios::binary).write(content_.data(), static_cast<std::streamsize>(content_.size()));

    ServerOptions o;
    o.io_threads = 2;
    o.header_timeout = 2s;
    o.endpoints = {Endpoint{"127.0.0.1", 0, true}, Endpoint{"127.0.0.1", 0, false}};
    o.tls = TlsOptions{files_.certificate, files_.private_key};
    server_ = std::make_unique<Server>(o);
    ASSERT_TRUE(server_->Handle(Method::kGet, "/hello", [](const Request& r) {
                          return Response::Text(200, "hello over " + std::string(r.path()));
                        }).ok());
    ASSERT_TRUE(server_->Handle(Method::kGet, "/blob", [this](const Request&) {
                          auto f = OpenFile::Open(dir_ / "blob");
                          if (!f.ok()) return Response::FromError(f.error());
                          return Response::FromFile(std::move(f).value(), "application/octet-stream");
                        }).ok());
    std::filesystem::create_directories(dir_ / "incoming");
    RouteOptions upload;
    upload.max_body_bytes = 16 * 1024 * 1024;
    upload.body_to_file = dir_ / "incoming";
    ASSERT_TRUE(server_->Handle(Method::kPut, "/upload", [](const Request& r) {
                          const auto& f = r.body_file();
                          if (!f) return Response::Text(500, "no file");
                          auto digest = HashFile(f->path);
                          bool same = digest.ok() && digest->sha256_hex == f->sha256_hex && digest->size == f->size;
                          return Response::Text(200, f->sha256_hex + (same ? " same" : " differs"));
                        }, upload).ok());
    auto st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.error().message();
    tls_port_ = server_->ports()[0];
    plain_port_ = server_->ports()[1];
  }

  void TearDown() override {
    server_.reset();
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }

  // A verifying client context trusting only the test certificate.
  SSL_CTX* ClientContext(int max_version = 0) {
    SSL_CTX* ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    EXPECT_EQ(SSL_CTX_load_verify_locations(ctx, files_.certificate.c_str(), nullptr), 1);
    SSL_CTX_set_options(ctx, SSL_OP_IGNORE_UNEXPECTED_EOF);
    if (max_version) {
      SSL_CTX_set_min_proto_version(ctx, 0);
      SSL_CTX_set_max_proto_version(ctx, max_version);
    }
    contexts_.emplace_back(ctx, &SSL_CTX_free);
    return ctx;
  }

  std::filesystem::path dir_;
  testing::CertificateFiles files_;
  std::string content_;
  std::unique_ptr<Server> server_;
  std::uint16_t tls_port_ = 0, plain_port_ = 0;
  std::vector<std::unique_ptr<SSL_CTX, decltype(&SSL_CTX_free)>> contexts_;
};

TEST_F(TlsTest, HandshakeAndRequestsOverTls13) {
  RawClient c(tls_port_, ClientContext());
  ASSERT_TRUE(c.connected());
  EXPECT_EQ(SSL_version(c.ssl()), TLS1_3_VERSION);
  EXPECT_EQ(SSL_get_verify_result(c.ssl()), X509_V_OK);
  for (int i = 0; i < 3; ++i) {  // keep-alive over TLS
    auto r = c.Request(Get("/hello"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, "hello over /hello");
  }
  // The plain endpoint of the same server answers in clear.
  RawClient p(plain_port_);
  auto r = p.Request(Get("/hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(TlsTest, Tls12IsAcceptedOlderIsRefused) {
  RawClient c12(tls_port_, ClientContext(TLS1_2_VERSION));
  ASSERT_TRUE(c12.connected());
  EXPECT_EQ(SSL_version(c12.ssl()), TLS1_2_VERSION);
  auto r = c12.Request(Get("/hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);

  SSL_CTX* old = ClientContext(TLS1_1_VERSION);
  SSL_CTX_set_security_level(old, 0);  // let the client try; the server must say no
  SSL_CTX_set_cipher_list(old, "ALL:@SECLEVEL=0");
  RawClient c11(tls_port_, old);
  EXPECT_FALSE(c11.connected());
  ERR_clear_error();
}

TEST_F(TlsTest, FileBodiesAndRangesOverTls) {
  RawClient c(tls_port_, ClientContext());
  ASSERT_TRUE(c.connected());
  auto r = c.Request(Get("/blob"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->body == content_);
  r = c.Request(Get("/blob", "Range: bytes=100000-\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_TRUE(r->body == content_.substr(100000));
}

TEST_F(TlsTest, BodyToFileUploadsOverTls) {
  RawClient c(tls_port_, ClientContext());
  ASSERT_TRUE(c.connected());
  std::string body = content_ + content_ + content_;  // 2.1 MiB: many TLS records and read chunks
  auto r = c.Request("PUT /upload HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(body.size()) +
                     "\r\n\r\n" + body);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, Sha256Hex(body) + " same");
  r = c.Request(Get("/hello"));  // keep-alive after the upload
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(std::filesystem::is_empty(dir_ / "incoming"));
}

TEST_F(TlsTest, PlaintextOrGarbageOnTheTlsPortIsDropped) {
  RawClient plain(tls_port_);
  ASSERT_TRUE(plain.Send(Get("/hello")));
  EXPECT_TRUE(plain.WaitClosed(2s));
  RawClient silent(tls_port_);  // never starts the handshake: the header time-out closes it
  EXPECT_TRUE(silent.WaitClosed(4s));
  RawClient c(tls_port_, ClientContext());
  ASSERT_TRUE(c.connected());
  auto r = c.Request(Get("/hello"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

}  // namespace
}  // namespace upkeep::net
