#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

#include "test_servers.hpp"
#include "upkeep/agent/http_client.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/net/testing_cert.hpp"

namespace upkeep::agent {
namespace {

using namespace std::chrono_literals;
using test::RawAnswer;
using test::RawRequest;
using test::RawServer;

std::unique_ptr<HttpClient> Client(HttpClientOptions o = {}) {
  auto c = MakeHttpClient(std::move(o));
  EXPECT_TRUE(c.ok()) << c.error().message();
  return std::move(c).value();
}

HttpRequest Get(const std::string& url) {
  HttpRequest r;
  r.url = url;
  return r;
}

class TlsServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::path(::testing::TempDir()) / ("h5-tls-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    auto files = net::testing::WriteSelfSignedCertificate(dir_, "localhost");
    ASSERT_TRUE(files.ok()) << files.error().message();
    files_ = *files;
    auto other_dir = dir_ / "other";
    std::filesystem::create_directories(other_dir);
    auto other = net::testing::WriteSelfSignedCertificate(other_dir, "other.example");
    ASSERT_TRUE(other.ok());
    other_ = *other;
    net::ServerOptions o;
    o.io_threads = 1;
    o.header_timeout = 2s;
    o.endpoints = {net::Endpoint{"127.0.0.1", 0, true}, net::Endpoint{"127.0.0.1", 0, false}};
    o.tls = net::TlsOptions{files_.certificate, files_.private_key};
    server_ = std::make_unique<net::Server>(o);
    ASSERT_TRUE(server_->Handle(net::Method::kGet, "/hello", [](const net::Request& r) {
                  return net::Response::Text(200, "hello " + std::string(r.Header("X-Test").value_or("-")));
                }).ok());
    ASSERT_TRUE(server_->Handle(net::Method::kPost, "/echo", [](const net::Request& r) {
                  return net::Response::Text(201, r.body());
                }).ok());
    ASSERT_TRUE(server_->Handle(net::Method::kGet, "/big", [](const net::Request&) {
                  return net::Response::Text(200, std::string(100000, 'x'));
                }).ok());
    ASSERT_TRUE(server_->Start().ok());
    tls_port_ = server_->ports().at(0);
    plain_port_ = server_->ports().at(1);
  }
  void TearDown() override {
    if (server_) server_->Stop(1s);
    std::filesystem::remove_all(dir_);
  }
  std::string Https(const std::string& host, const std::string& path) const {
    return "https://" + host + ":" + std::to_string(tls_port_) + path;
  }
  std::string Http(const std::string& path) const { return "http://127.0.0.1:" + std::to_string(plain_port_) + path; }

  std::filesystem::path dir_;
  net::testing::CertificateFiles files_, other_;
  std::unique_ptr<net::Server> server_;
  std::uint16_t tls_port_ = 0, plain_port_ = 0;
};

TEST_F(TlsServerTest, PlainGetAndPost) {
  auto client = Client();
  HttpRequest get = Get(Http("/hello"));
  get.headers.emplace_back("X-Test", "yes");
  auto r = client->Send(get);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello yes");
  EXPECT_TRUE(r->Header("content-type").has_value());

  HttpRequest post = Get(Http("/echo"));
  post.method = "POST";
  post.body = std::string(300000, 'b');
  HttpClientOptions o;
  auto echoed = client->Send(post);
  ASSERT_TRUE(echoed.ok()) << echoed.error().message();
  EXPECT_EQ(echoed->status, 201);
  EXPECT_EQ(echoed->body, post.body);

  auto missing = client->Send(Get(Http("/nope")));
  ASSERT_TRUE(missing.ok());
  EXPECT_EQ(missing->status, 404);
}

TEST_F(TlsServerTest, HttpsWithPrivateCaVerifiesHostAndIp) {
  HttpClientOptions o;
  o.ca_file = files_.certificate;
  auto client = Client(o);
  for (const std::string host : {"127.0.0.1", "localhost"}) {
    auto r = client->Send(Get(Https(host, "/hello")));
    ASSERT_TRUE(r.ok()) << host << ": " << r.error().message();
    EXPECT_EQ(r->body, "hello -");
  }
  // Streaming through a sink over TLS.
  std::string got;
  BodySink sink;
  int seen_status = 0;
  sink.head = [&](const HttpResponse& h) {
    seen_status = h.status;
    return OkStatus();
  };
  sink.data = [&](std::string_view c) {
    got.append(c);
    return OkStatus();
  };
  auto r = client->Send(Get(Https("127.0.0.1", "/big")), &sink);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(seen_status, 200);
  EXPECT_EQ(got, std::string(100000, 'x'));
  EXPECT_TRUE(r->body.empty());
}

TEST_F(TlsServerTest, HttpsRefusesUntrustedOrMismatchedCertificates) {
  // System trust store only: the self-signed certificate is not trusted.
  auto system = Client();
  auto r = system->Send(Get(Https("127.0.0.1", "/hello")));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_NE(r.error().message().find("certificate"), std::string::npos) << r.error().message();

  // Trusting another certificate does not help.
  HttpClientOptions o;
  o.ca_file = other_.certificate;
  auto wrong_ca = Client(o)->Send(Get(Https("127.0.0.1", "/hello")));
  ASSERT_FALSE(wrong_ca.ok());
  EXPECT_NE(wrong_ca.error().message().find("TLS handshake"), std::string::npos);

  HttpClientOptions missing;
  missing.ca_file = dir_ / "absent.pem";
  auto bad = MakeHttpClient(missing);
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kInvalidArgument);
}

TEST(HttpClientTest, HostNameMismatchIsRefused) {
  const auto dir = std::filesystem::path(::testing::TempDir()) / ("h5-host-" + std::to_string(::getpid()));
  std::filesystem::create_directories(dir);
  auto files = net::testing::WriteSelfSignedCertificate(dir, "other.example");
  ASSERT_TRUE(files.ok());
  net::ServerOptions so;
  so.io_threads = 1;
  so.endpoints = {net::Endpoint{"127.0.0.1", 0, true}};
  so.tls = net::TlsOptions{files->certificate, files->private_key};
  net::Server server(so);
  ASSERT_TRUE(server.Handle(net::Method::kGet, "/", [](const net::Request&) { return net::Response::Text(200, "x"); }).ok());
  ASSERT_TRUE(server.Start().ok());
  HttpClientOptions o;
  o.ca_file = files->certificate;
  auto r = Client(o)->Send(Get("https://localhost:" + std::to_string(server.ports().at(0)) + "/"));
  ASSERT_FALSE(r.ok());
  EXPECT_NE(r.error().message().find("certificate"), std::string::npos) << r.error().message();
  server.Stop(1s);
  std::filesystem::remove_all(dir);
}

TEST(HttpClientTest, BodiesAreBounded) {
  RawServer server([](const RawRequest& req) {
    if (req.head.find(" /cl ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 200 OK\r\nContent-Length: 5000\r\n\r\n" + std::string(5000, 'a'), 0ms};
    }
    return RawAnswer{"HTTP/1.1 200 OK\r\n\r\n" + std::string(5000, 'a'), 0ms};  // until close
  });
  HttpClientOptions o;
  o.max_body_bytes = 4000;
  auto client = Client(o);
  for (const std::string path : {"/cl", "/close"}) {
    auto r = client->Send(Get(server.url(path)));
    ASSERT_FALSE(r.ok()) << path;
    EXPECT_EQ(r.error().code(), Errc::kLimit) << path;
  }
  HttpRequest raised = Get(server.url("/close"));
  raised.max_body_bytes = 5000;
  auto ok = client->Send(raised);
  ASSERT_TRUE(ok.ok()) << ok.error().message();
  EXPECT_EQ(ok->body.size(), 5000u);
}

TEST(HttpClientTest, TruncatedChunkedAndStalledBodies) {
  RawServer server([](const RawRequest& req) {
    if (req.head.find(" /short ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + std::string(50, 'a'), 0ms};
    }
    if (req.head.find(" /chunked ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\n\r\n", 0ms};
    }
    if (req.head.find(" /badchunk ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n", 0ms};
    }
    if (req.head.find(" /garbage ") != std::string::npos) return RawAnswer{"SSH-2.0-nope\r\n\r\n", 0ms};
    return RawAnswer{"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc", 1500ms};  // stall
  });
  HttpClientOptions o;
  o.timeout = 300ms;
  auto client = Client(o);
  auto s = client->Send(Get(server.url("/short")));
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kIo);
  EXPECT_NE(s.error().message().find("connection closed after 50 of 100"), std::string::npos) << s.error().message();

  auto c = client->Send(Get(server.url("/chunked")));
  ASSERT_TRUE(c.ok()) << c.error().message();
  EXPECT_EQ(c->body, "hello world");

  auto b = client->Send(Get(server.url("/badchunk")));
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kIo);

  auto g = client->Send(Get(server.url("/garbage")));
  ASSERT_FALSE(g.ok());
  EXPECT_NE(g.error().message().find("status line"), std::string::npos);

  const auto start = std::chrono::steady_clock::now();
  auto t = client->Send(Get(server.url("/stall")));
  ASSERT_FALSE(t.ok());
  EXPECT_NE(t.error().message().find("no progress for 300 ms"), std::string::npos) << t.error().message();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1400ms);
}

TEST(HttpClientTest, SinkErrorAbortsAndErrorBodiesStayInMemory) {
  RawServer server([](const RawRequest& req) {
    if (req.head.find(" /err ") != std::string::npos) {
      return RawAnswer{"HTTP/1.1 500 Oops\r\nContent-Length: 200000\r\n\r\n" + std::string(200000, 'e'), 0ms};
    }
    return RawAnswer{"HTTP/1.1 200 OK\r\nContent-Length: 200000\r\n\r\n" + std::string(200000, 'a'), 0ms};
  });
  auto client = Client();
  std::size_t got = 0;
  BodySink sink;
  sink.data = [&](std::string_view c) -> Status {
    got += c.size();
    if (got > 1000) return Error(Errc::kUnsafe, "enough");
    return OkStatus();
  };
  auto r = client->Send(Get(server.url("/ok")), &sink);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kUnsafe);
  EXPECT_LT(got, 200000u);

  got = 0;
  auto e = client->Send(Get(server.url("/err")), &sink);
  ASSERT_TRUE(e.ok()) << e.error().message();
  EXPECT_EQ(e->status, 500);
  EXPECT_EQ(got, 0u);
  EXPECT_EQ(e->body.size(), 64u * 1024);  // only the first 64 KiB of an error body
}

TEST(HttpClientTest, BadUrlsAndUnreachableHosts) {
  auto client = Client();
  for (const std::string url : {"ftp://x/", "http://", "http://h:99999/", "http://a b/", "http://u@h/"}) {
    auto r = client->Send(Get(url));
    ASSERT_FALSE(r.ok()) << url;
    EXPECT_EQ(r.error().code(), Errc::kInvalidArgument) << url;
  }
  std::uint16_t port;
  { RawServer gone([](const RawRequest&) { return RawAnswer{}; }); port = gone.port(); }
  auto r = client->Send(Get("http://127.0.0.1:" + std::to_string(port) + "/"));
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kIo);
  EXPECT_NE(r.error().message().find("cannot connect"), std::string::npos) << r.error().message();
  HttpRequest bad_header = Get("http://127.0.0.1:1/");
  bad_header.headers.emplace_back("X-Evil", "a\r\nInjected: 1");
  EXPECT_EQ(client->Send(bad_header).error().code(), Errc::kInvalidArgument);
}

}  // namespace
}  // namespace upkeep::agent
