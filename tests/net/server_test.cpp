// A real upkeep::net::Server on 127.0.0.1 (ephemeral port), driven by the raw test client.
#include <gtest/gtest.h>

#include <atomic>
#include <condition_variable>
#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

#include "test_client.hpp"
#include "upkeep/net/server.hpp"

namespace upkeep::net {
namespace {

using namespace std::chrono_literals;
using test::Get;
using test::HttpResponse;
using test::RawClient;

ServerOptions TestOptions() {
  ServerOptions o;
  o.io_threads = 2;
  o.worker_threads = 2;
  o.header_timeout = 3s;
  o.idle_timeout = 3s;
  o.body_timeout = 3s;
  o.send_timeout = 3s;
  o.linger_timeout = 500ms;
  return o;
}

class ServerTest : public ::testing::Test {
 protected:
  void StartServer(ServerOptions options, const std::function<void(Server&)>& setup) {
    server_ = std::make_unique<Server>(std::move(options));
    setup(*server_);
    auto st = server_->Start();
    ASSERT_TRUE(st.ok()) << st.error().message();
    port_ = server_->ports().at(0);
  }

  static Response Hello(const Request& req) {
    return Response::Text(200, "hello " + std::string(req.method_name()) + " " + req.path());
  }

  std::unique_ptr<Server> server_;
  std::uint16_t port_ = 0;
};

// A metric's value in the /metrics text, or -1 when the series is absent.
double MetricValue(const std::string& text, const std::string& series) {
  std::size_t pos = text.find("\n" + series + " ");
  if (pos == std::string::npos) return -1;
  return std::strtod(text.c_str() + pos + series.size() + 2, nullptr);
}

TEST_F(ServerTest, RoutesExactPatternAndPrefix) {
  StartServer(TestOptions(), [](Server& s) {
    ASSERT_TRUE(s.Handle(Method::kGet, "/api/v1/ping", Hello).ok());
    ASSERT_TRUE(s.Handle(Method::kPost, "/api/v1/ping", Hello).ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/api/v1/appliances/{id}/events/{n}", [](const Request& r) {
                   return Response::Text(200, std::string(r.PathParam("id")) + "|" + std::string(r.PathParam("n")));
                 }).ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/repo/*", [](const Request& r) {
                   return Response::Text(200, "short:" + std::string(r.path_suffix()));
                 }).ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/repo/targets/*", [](const Request& r) {
                   return Response::Text(200, "targets:" + std::string(r.path_suffix()));
                 }).ok());
    // Misuse is reported, not accepted.
    EXPECT_FALSE(s.Handle(Method::kGet, "/api/v1/ping", Hello).ok());
    EXPECT_FALSE(s.Handle(Method::kGet, "no-slash", Hello).ok());
    EXPECT_FALSE(s.Handle(Method::kGet, "/a/{x", Hello).ok());
    EXPECT_FALSE(s.Handle(Method::kGet, "/a/*/b", Hello).ok());
  });
  RawClient c(port_);
  ASSERT_TRUE(c.connected());
  auto r = c.Request(Get("/api/v1/ping"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "hello GET /api/v1/ping");
  EXPECT_TRUE(r->Header("Date"));

  r = c.Request("POST /api/v1/ping HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello POST /api/v1/ping");

  r = c.Request(Get("/api/v1/appliances/a%2D7/events/42"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "a-7|42");

  r = c.Request(Get("/repo/targets/ab/c.upk"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "targets:ab/c.upk");  // the longest prefix wins
  r = c.Request(Get("/repo/metadata/1.root.json"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "short:metadata/1.root.json");

  r = c.Request(Get("/nothing/here"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
  auto body = ParseJson(r->body);
  ASSERT_TRUE(body.ok());
  EXPECT_EQ((*body)["error"]["code"], "not_found");

  r = c.Request("DELETE /api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 405);
  EXPECT_EQ(r->Header("Allow").value_or(""), "GET, HEAD, POST");

  // HEAD runs the GET route and sends its length without the body; the connection stays usable.
  r = c.Request("HEAD /api/v1/ping HTTP/1.1\r\nHost: x\r\n\r\n", true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("Content-Length").value_or(""), std::to_string(std::string("hello HEAD /api/v1/ping").size()));
  r = c.Request(Get("/api/v1/ping"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello GET /api/v1/ping");
}

TEST_F(ServerTest, KeepAlivePipeliningAndClose) {
  std::atomic<int> calls{0};
  StartServer(TestOptions(), [&](Server& s) {
    ASSERT_TRUE(s.Handle(Method::kGet, "/n", [&](const Request& r) {
                   ++calls;
                   return Response::Text(200, r.QueryParam("i").value_or("?"));
                 }).ok());
  });
  RawClient c(port_);
  for (int i = 0; i < 5; ++i) {
    auto r = c.Request(Get("/n?i=" + std::to_string(i)));
    ASSERT_TRUE(r) << i;
    EXPECT_EQ(r->body, std::to_string(i));
    EXPECT_FALSE(r->Header("Connection"));
  }
  // Three requests in one write, the last split across two writes.
  std::string three = Get("/n?i=a") + Get("/n?i=b") + Get("/n?i=c");
  ASSERT_TRUE(c.Send(three.substr(0, three.size() - 7)));
  std::this_thread::sleep_for(20ms);
  ASSERT_TRUE(c.Send(three.substr(three.size() - 7)));
  for (const char* want : {"a", "b", "c"}) {
    auto r = c.Read();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->body, want);
  }
  auto r = c.Request(Get("/n?i=last", "Connection: close\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("Connection").value_or(""), "close");
  EXPECT_TRUE(c.WaitClosed(2s));
  EXPECT_EQ(calls.load(), 9);

  // HTTP/1.0: closes unless asked to keep alive.
  RawClient c10(port_);
  r = c10.Request("GET /n?i=x HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("Connection").value_or(""), "keep-alive");
  r = c10.Request("GET /n?i=y HTTP/1.0\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "y");
  EXPECT_TRUE(c10.WaitClosed(2s));
}

TEST_F(ServerTest, RequestBodiesAndExpectContinue) {
  StartServer(TestOptions(), [](Server& s) {
    RouteOptions small;
    small.max_body_bytes = 100;
    ASSERT_TRUE(s.Handle(Method::kPost, "/echo", [](const Request& r) { return Response::Text(200, r.body()); }, small)
                    .ok());
  });
  RawClient c(port_);
  ASSERT_TRUE(c.Send("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello"));
  std::this_thread::sleep_for(20ms);
  auto r = c.Request(" world");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "hello world");

  r = c.Request("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 100);
  r = c.Request("ping");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "ping");

  // Over the route's limit: 413 before reading the body, then the connection closes.
  r = c.Request("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 101\r\n\r\n");
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 413);
  EXPECT_EQ(r->Header("Connection").value_or(""), "close");
  EXPECT_TRUE(c.WaitClosed(2s));
}

struct BadCase {
  std::string request;
  int status;
};

TEST_F(ServerTest, MalformedRequestsGetTheirStatusAndClose) {
  StartServer(TestOptions(), [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/a/b", Hello).ok()); });
  std::string huge_header = "GET /a/b HTTP/1.1\r\nHost: x\r\nX-Big: " + std::string(17 * 1024, 'a') + "\r\n\r\n";
  std::string many_headers = "GET /a/b HTTP/1.1\r\nHost: x\r\n";
  for (int i = 0; i < 101; ++i) many_headers += "X-" + std::to_string(i) + ": v\r\n";
  many_headers += "\r\n";
  std::vector<BadCase> cases = {
      {huge_header, 431},
      {many_headers, 431},
      {"get /a/b HTTP/1.1\r\nHost: x\r\n\r\n", 501},
      {"BREW /a/b HTTP/1.1\r\nHost: x\r\n\r\n", 501},
      {"GET /a/b HTTP/2.0\r\nHost: x\r\n\r\n", 505},
      {"GET /a/b HTTP/1.1\r\n\r\n", 400},                                  // no Host
      {"GET /a/b HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", 400},
      {"GET  /a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a/b HTTP/1.1\nHost: x\r\n\r\n", 400},                          // bare LF
      {"GET /a/b HTTP/1.1\r\nHost : x\r\n\r\n", 400},                       // space before colon
      {"GET /a/b HTTP/1.1\r\nHost: x\r\n folded\r\n\r\n", 400},
      {"GET http://x/a/b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a%00b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a/../b HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET //etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"GET /a/%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400},
      {"POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400},
      {"POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nx", 400},
      {"POST /a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 501},
      {"POST /a/b HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
      {"GET /a/b HTTP/1.1\r\nHost: x\r\nExpect: teapot\r\n\r\n", 417},
      {"POST /a/b HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n", 413},
  };
  for (const auto& bad : cases) {
    RawClient c(port_);
    auto r = c.Request(bad.request);
    ASSERT_TRUE(r) << bad.request.substr(0, 60);
    EXPECT_EQ(r->status, bad.status) << bad.request.substr(0, 60);
    EXPECT_EQ(r->Header("Content-Type").value_or(""), "application/json");
    EXPECT_EQ(r->Header("Connection").value_or(""), "close") << bad.request.substr(0, 60);
    EXPECT_TRUE(c.WaitClosed(2s)) << bad.request.substr(0, 60);
  }
  RawClient ok(port_);
  auto r = ok.Request(Get("/a/b"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST_F(ServerTest, GarbageBytesNeverCrashTheServer) {
  StartServer(TestOptions(), [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/a", Hello).ok()); });
  std::mt19937 rng(1234);
  for (int i = 0; i < 60; ++i) {
    std::string junk(1 + rng() % 3000, '\0');
    for (auto& ch : junk) ch = static_cast<char>(rng());
    if (i % 3 == 0) junk = "GET /a HTTP/1.1\r\n" + junk;  // garbage inside a head
    junk += "\r\n\r\n";
    RawClient c(port_, nullptr, false, 2s);
    c.Send(junk);
    auto r = c.Read();
    if (r) {
      EXPECT_GE(r->status, 400) << i;
    }
    EXPECT_TRUE(c.WaitClosed(2s)) << i;
  }
  RawClient c(port_);
  auto r = c.Request(Get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "OK");
}

TEST_F(ServerTest, SlowLorisAndIdleConnectionsAreClosed) {
  ServerOptions o = TestOptions();
  o.header_timeout = 300ms;
  o.idle_timeout = 400ms;
  StartServer(o, [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/a", Hello).ok()); });

  // Dripping a head byte by byte does not extend the header time-out.
  RawClient drip(port_);
  auto start = std::chrono::steady_clock::now();
  std::string head = Get("/a");
  bool closed = false;
  for (char ch : head) {
    if (!drip.Send(std::string(1, ch))) {
      closed = true;
      break;
    }
    if (drip.WaitClosed(100ms)) {
      closed = true;
      break;
    }
  }
  auto took = std::chrono::steady_clock::now() - start;
  EXPECT_TRUE(closed);
  EXPECT_GE(took, 250ms);
  EXPECT_LT(took, 1500ms);

  // A connection that sends nothing at all is closed after the header time-out.
  RawClient silent(port_);
  EXPECT_FALSE(silent.WaitClosed(150ms));
  EXPECT_TRUE(silent.WaitClosed(1500ms));

  // Idle keep-alive after a response.
  RawClient idle(port_);
  auto r = idle.Request(Get("/a"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_FALSE(idle.WaitClosed(200ms));
  EXPECT_TRUE(idle.WaitClosed(1500ms));

  RawClient m(port_);
  r = m.Request(Get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_GE(MetricValue(r->body, "upkeep_http_timeouts_total"), 3);
}

TEST_F(ServerTest, MaxConnectionsAnswers503WithRetryAfter) {
  ServerOptions o = TestOptions();
  o.max_connections = 2;
  o.retry_after_seconds = 7;
  StartServer(o, [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/a", Hello).ok()); });
  RawClient a(port_), b(port_);
  ASSERT_TRUE(a.Request(Get("/a")));
  ASSERT_TRUE(b.Request(Get("/a")));
  RawClient c(port_);
  auto r = c.Read();  // the server answers without waiting for a request
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->Header("Retry-After").value_or(""), "7");
  EXPECT_TRUE(c.WaitClosed(2s));

  // Once a slot frees up, new clients are served again.
  a.Close();
  bool served = false;
  for (int i = 0; i < 50 && !served; ++i) {
    RawClient d(port_);
    auto rd = d.Request(Get("/a"));
    served = rd && rd->status == 200;
    if (!served) std::this_thread::sleep_for(20ms);
  }
  EXPECT_TRUE(served);
  auto m = b.Request(Get("/metrics"));
  ASSERT_TRUE(m);
  EXPECT_GE(MetricValue(m->body, "upkeep_http_rejected_connections_total"), 1);
}

TEST_F(ServerTest, MaxInFlightAnswers503AndAsyncRespondersComplete) {
  ServerOptions o = TestOptions();
  o.max_in_flight = 2;
  std::mutex mu;
  std::condition_variable cv;
  std::vector<Responder> held;
  StartServer(o, [&](Server& s) {
    ASSERT_TRUE(s.HandleAsync(Method::kGet, "/hold", [&](const Request&, Responder responder) {
                   std::lock_guard lock(mu);
                   held.push_back(std::move(responder));
                   cv.notify_all();
                 }).ok());
  });
  RawClient a(port_), b(port_), c(port_);
  ASSERT_TRUE(a.Send(Get("/hold")));
  ASSERT_TRUE(b.Send(Get("/hold")));
  {
    std::unique_lock lock(mu);
    ASSERT_TRUE(cv.wait_for(lock, 5s, [&] { return held.size() == 2; }));
  }
  auto r = c.Request(Get("/hold"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 503);
  EXPECT_EQ(r->Header("Retry-After").value_or(""), "1");
  // Built-ins stay outside the limit, so health checks work under overload.
  r = c.Request(Get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  r = c.Request(Get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_EQ(MetricValue(r->body, "upkeep_http_in_flight_requests"), 2);

  // Complete both from another thread.
  std::thread completer([&] {
    std::lock_guard lock(mu);
    held[0].Send(Response::Text(200, "first"));
    held[1].Send(Response::Text(201, "second"));
  });
  completer.join();
  auto ra = a.Read();
  auto rb = b.Read();
  ASSERT_TRUE(ra && rb);
  // a and b land on different I/O threads, so either one's handler may have been held first.
  if (ra->body == "second") std::swap(ra, rb);
  EXPECT_EQ(ra->body, "first");
  EXPECT_EQ(ra->status, 200);
  EXPECT_EQ(rb->body, "second");
  EXPECT_EQ(rb->status, 201);
  r = c.Request(Get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_EQ(MetricValue(r->body, "upkeep_http_in_flight_requests"), 0);
  EXPECT_EQ(MetricValue(r->body, "upkeep_http_overload_responses_total"), 1);
}

TEST_F(ServerTest, AsyncHandlersCompleteFromOtherThreadsOrAnswer500) {
  StartServer(TestOptions(), [](Server& s) {
    ASSERT_TRUE(s.HandleAsync(Method::kGet, "/later", [](const Request& req, Responder responder) {
                   std::string id(req.QueryParam("id").value_or(""));
                   std::thread([id, responder = std::move(responder)]() mutable {
                     std::this_thread::sleep_for(30ms);
                     responder.Send(Response::Json(200, Json{{"id", id}}));
                   }).detach();
                 }).ok());
    ASSERT_TRUE(s.HandleAsync(Method::kGet, "/dropped", [](const Request&, Responder) {}).ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/throws", [](const Request&) -> Response { throw std::runtime_error("x"); })
                    .ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/split", [](const Request&) {
                   Response r = Response::Text(200, "x");
                   r.headers.emplace_back("X-Evil", "a\r\nSet-Cookie: pwned=1");
                   return r;
                 }).ok());
    RouteOptions pool;
    pool.use_worker_pool = true;
    ASSERT_TRUE(s.Handle(Method::kGet, "/pool", [](const Request&) {
                   std::this_thread::sleep_for(20ms);  // blocking work is fine here
                   return Response::Text(200, "pooled");
                 }, pool).ok());
  });
  RawClient c(port_);
  auto r = c.Request(Get("/later?id=z9"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, R"({"id":"z9"})");
  r = c.Request(Get("/dropped"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  r = c.Request(Get("/throws"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  r = c.Request(Get("/split"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 500);
  EXPECT_FALSE(r->Header("Set-Cookie"));
  r = c.Request(Get("/pool"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "pooled");
}

TEST_F(ServerTest, HealthzMetricsAndAccessLog) {
  std::mutex mu;
  std::vector<std::string> log;
  ServerOptions o = TestOptions();
  o.access_log = [&](const AccessLogEntry& e) {
    std::lock_guard lock(mu);
    log.push_back(std::string(e.method) + " " + std::string(e.path) + " " + std::string(e.route) + " " +
                  std::to_string(e.status) + " " + std::to_string(e.bytes_sent) + " " +
                  (e.remote.rfind("127.0.0.1:", 0) == 0 ? "local" : std::string(e.remote)));
  };
  o.registry = std::make_shared<MetricsRegistry>();
  o.registry->GetCounter("daemon_checkins_total", "Check-ins").Inc(5);
  StartServer(o, [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/hello", Hello).ok()); });
  RawClient c(port_);
  for (int i = 0; i < 3; ++i) ASSERT_TRUE(c.Request(Get("/hello?token=secret", "Authorization: Bearer s3cret\r\n")));
  ASSERT_TRUE(c.Request(Get("/missing")));
  auto r = c.Request(Get("/healthz"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "OK");
  r = c.Request(Get("/metrics"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->Header("Content-Type").value_or("").rfind("text/plain; version=0.0.4", 0), 0u);
  const std::string& m = r->body;
  EXPECT_EQ(MetricValue(m, R"(upkeep_http_requests_total{route="/hello",status="200"})"), 3) << m;
  EXPECT_EQ(MetricValue(m, R"(upkeep_http_requests_total{route="unmatched",status="404"})"), 1);
  EXPECT_EQ(MetricValue(m, R"(upkeep_http_request_duration_seconds_count{route="/hello"})"), 3);
  EXPECT_EQ(MetricValue(m, R"(upkeep_http_request_duration_seconds_bucket{route="/hello",le="+Inf"})"), 3);
  EXPECT_EQ(MetricValue(m, "upkeep_http_open_connections"), 1);
  EXPECT_EQ(MetricValue(m, "daemon_checkins_total"), 5);
  EXPECT_NE(m.find("# TYPE upkeep_http_request_duration_seconds histogram"), std::string::npos);

  // The log line of the last response may be written after the client read it: stop first, so
  // every entry is in and nothing calls into this test's locals afterwards.
  server_->Stop(1s);
  std::lock_guard lock(mu);
  ASSERT_GE(log.size(), 5u);
  EXPECT_EQ(log[0].rfind("GET /hello /hello 200 ", 0), 0u) << log[0];
  EXPECT_NE(log[0].find(" local"), std::string::npos) << log[0];
  EXPECT_EQ(log[3].rfind("GET /missing unmatched 404 ", 0), 0u) << log[3];
  for (const auto& line : log) {
    EXPECT_EQ(line.find("secret"), std::string::npos) << line;
    EXPECT_EQ(line.find("s3cret"), std::string::npos) << line;
  }
}

TEST_F(ServerTest, GracefulStopLetsInFlightRequestsFinish) {
  std::atomic<bool> started{false};
  ServerOptions o = TestOptions();
  StartServer(o, [&](Server& s) {
    RouteOptions pool;
    pool.use_worker_pool = true;
    ASSERT_TRUE(s.Handle(Method::kGet, "/slow", [&](const Request&) {
                   started = true;
                   std::this_thread::sleep_for(400ms);
                   return Response::Text(200, "done");
                 }, pool).ok());
    ASSERT_TRUE(s.Handle(Method::kGet, "/a", Hello).ok());
  });
  RawClient idle(port_);
  ASSERT_TRUE(idle.Request(Get("/a")));
  RawClient slow(port_);
  ASSERT_TRUE(slow.Send(Get("/slow")));
  for (int i = 0; i < 200 && !started; ++i) std::this_thread::sleep_for(5ms);
  ASSERT_TRUE(started);

  auto t0 = std::chrono::steady_clock::now();
  std::thread stopper([&] { server_->Stop(5s); });
  // The idle keep-alive connection is closed at once; the slow request still completes.
  EXPECT_TRUE(idle.WaitClosed(300ms));
  auto r = slow.Read();
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "done");
  EXPECT_EQ(r->Header("Connection").value_or(""), "close");
  stopper.join();
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 3s);
  RawClient after(port_);
  EXPECT_FALSE(after.connected());
}

TEST_F(ServerTest, StopGivesUpOnHandlersAfterTheGracePeriod) {
  std::mutex mu;
  std::vector<Responder> held;
  StartServer(TestOptions(), [&](Server& s) {
    ASSERT_TRUE(s.HandleAsync(Method::kGet, "/never", [&](const Request&, Responder r) {
                   std::lock_guard lock(mu);
                   held.push_back(std::move(r));
                 }).ok());
  });
  RawClient c(port_);
  ASSERT_TRUE(c.Send(Get("/never")));
  for (int i = 0; i < 200; ++i) {
    std::lock_guard lock(mu);
    if (!held.empty()) break;
    std::this_thread::sleep_for(5ms);
  }
  auto t0 = std::chrono::steady_clock::now();
  server_->Stop(200ms);
  EXPECT_LT(std::chrono::steady_clock::now() - t0, 2s);
  EXPECT_TRUE(c.WaitClosed(1s));
  std::lock_guard lock(mu);
  ASSERT_EQ(held.size(), 1u);
  held[0].Send(Response::Text(200, "too late"));  // dropped, no crash, no leak
}

TEST_F(ServerTest, SigtermStopsTheServer) {
  StartServer(TestOptions(), [](Server& s) { ASSERT_TRUE(s.Handle(Method::kGet, "/a", Hello).ok()); });
  server_->StopOnSignals(1s);
  RawClient c(port_);
  ASSERT_TRUE(c.Request(Get("/a")));
  std::raise(SIGTERM);
  std::atomic<bool> done{false};
  std::thread waiter([&] {
    server_->Wait();
    done = true;
  });
  for (int i = 0; i < 400 && !done; ++i) std::this_thread::sleep_for(5ms);
  EXPECT_TRUE(done);
  if (!done) server_->Stop(0ms);
  waiter.join();
  EXPECT_TRUE(c.WaitClosed(1s));
}

TEST_F(ServerTest, ConcurrentClients) {
  std::atomic<int> calls{0};
  StartServer(TestOptions(), [&](Server& s) {
    ASSERT_TRUE(s.Handle(Method::kGet, "/echo", [&](const Request& r) {
                   ++calls;
                   return Response::Text(200, r.QueryParam("v").value_or(""));
                 }).ok());
    RouteOptions pool;
    pool.use_worker_pool = true;
    ASSERT_TRUE(s.Handle(Method::kPost, "/pooled", [&](const Request& r) {
                   ++calls;
                   return Response::Text(200, r.body());
                 }, pool).ok());
  });
  constexpr int kThreads = 8, kRequests = 200;
  std::atomic<int> good{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      std::unique_ptr<RawClient> c;
      for (int i = 0; i < kRequests; ++i) {
        if (i % 50 == 0) c = std::make_unique<RawClient>(port_);  // new connections now and then
        std::string v = std::to_string(t) + "-" + std::to_string(i);
        std::optional<HttpResponse> r;
        if (i % 2) {
          r = c->Request(Get("/echo?v=" + v));
        } else {
          r = c->Request("POST /pooled HTTP/1.1\r\nHost: x\r\nContent-Length: " + std::to_string(v.size()) + "\r\n\r\n" + v);
        }
        if (r && r->status == 200 && r->body == v) ++good;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(good.load(), kThreads * kRequests);
  EXPECT_EQ(calls.load(), kThreads * kRequests);
}

class FileTest : public ServerTest {
 protected:
  void SetUp() override {
    dir_ = std::filesystem::temp_directory_path() / ("upkeep-net-test-" + std::to_string(::getpid()));
    std::filesystem::create_directories(dir_);
    content_.resize(3 * 1024 * 1024 + 17);
    std::mt19937 rng(7);
    for (auto& ch : content_) ch = static_cast<char>(rng());
    std::ofstream(dir_ / "big.bin", std::ios::binary).write(content_.data(), static_cast<std::streamsize>(content_.size()));
    std::ofstream(dir_ / "small.txt", std::ios::binary) << "0123456789";
    StartServer(TestOptions(), [this](Server& s) {
      ASSERT_TRUE(s.Handle(Method::kGet, "/files/*", [this](const Request& r) {
                     auto f = OpenFile::Open(dir_ / std::string(r.path_suffix()));
                     if (!f.ok()) return Response::FromError(f.error());
                     return Response::FromFile(std::move(f).value(), "application/octet-stream");
                   }).ok());
    });
  }
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  std::filesystem::path dir_;
  std::string content_;
};

TEST_F(FileTest, WholeFileRangesAndConditionals) {
  RawClient c(port_);
  auto r = c.Request(Get("/files/big.bin"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_TRUE(r->body == content_);  // through sendfile
  EXPECT_EQ(r->Header("Accept-Ranges").value_or(""), "bytes");
  std::string etag = r->Header("ETag").value_or("");
  std::string modified = r->Header("Last-Modified").value_or("");
  ASSERT_FALSE(etag.empty());
  ASSERT_FALSE(modified.empty());
  std::string size = std::to_string(content_.size());

  r = c.Request(Get("/files/big.bin", "Range: bytes=0-99\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->Header("Content-Range").value_or(""), "bytes 0-99/" + size);
  EXPECT_TRUE(r->body == content_.substr(0, 100));

  r = c.Request(Get("/files/big.bin", "Range: bytes=12345-1060000\r\n"));  // > 64 KiB: sendfile range
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_TRUE(r->body == content_.substr(12345, 1060000 - 12345 + 1));

  r = c.Request(Get("/files/big.bin", "Range: bytes=3145700-\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_TRUE(r->body == content_.substr(3145700));

  r = c.Request(Get("/files/big.bin", "Range: bytes=-500\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->Header("Content-Range").value_or(""),
            "bytes " + std::to_string(content_.size() - 500) + "-" + std::to_string(content_.size() - 1) + "/" + size);
  EXPECT_TRUE(r->body == content_.substr(content_.size() - 500));

  r = c.Request(Get("/files/big.bin", "Range: bytes=" + size + "-\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 416);
  EXPECT_EQ(r->Header("Content-Range").value_or(""), "bytes */" + size);
  EXPECT_TRUE(r->body.empty());

  r = c.Request(Get("/files/small.txt", "Range: bytes=0-1,4-5\r\n"));  // several ranges: whole file
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body, "0123456789");

  r = c.Request(Get("/files/small.txt", "Range: bytes=2-4\r\nIf-Range: " + etag + "\r\n"));  // other file's tag
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  std::string small_etag = r->Header("ETag").value_or("");
  r = c.Request(Get("/files/small.txt", "Range: bytes=2-4\r\nIf-Range: " + small_etag + "\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, "234");
  r = c.Request(Get("/files/big.bin", "Range: bytes=0-0\r\nIf-Range: " + modified + "\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 206);
  EXPECT_EQ(r->body, content_.substr(0, 1));
  r = c.Request(Get("/files/big.bin", "Range: bytes=0-0\r\nIf-Range: Thu, 01 Jan 1970 00:00:00 GMT\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->body.size(), content_.size());

  r = c.Request(Get("/files/big.bin", "If-None-Match: \"nope\", " + etag + "\r\n"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 304);
  EXPECT_TRUE(r->body.empty());
  EXPECT_EQ(r->Header("ETag").value_or(""), etag);

  r = c.Request("HEAD /files/big.bin HTTP/1.1\r\nHost: x\r\n\r\n", true);
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
  EXPECT_EQ(r->Header("Content-Length").value_or(""), size);
  // Had HEAD leaked body bytes, this response would be garbage.
  r = c.Request(Get("/files/small.txt"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->body, "0123456789");

  r = c.Request(Get("/files/none.bin"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 404);
}

TEST_F(ServerTest, ListensOnIpv6Loopback) {
  ServerOptions o = TestOptions();
  o.endpoints = {Endpoint{"127.0.0.1", 0, false}, Endpoint{"::1", 0, false}};
  server_ = std::make_unique<Server>(o);
  ASSERT_TRUE(server_->Handle(Method::kGet, "/a", Hello).ok());
  auto st = server_->Start();
  if (!st.ok()) GTEST_SKIP() << "no IPv6 loopback here: " << st.error().message();
  ASSERT_EQ(server_->ports().size(), 2u);
  RawClient c(server_->ports()[1], nullptr, true);
  auto r = c.Request(Get("/a"));
  ASSERT_TRUE(r);
  EXPECT_EQ(r->status, 200);
}

TEST(ServerStartTest, ReportsBindAndConfigurationErrors) {
  ServerOptions o;
  o.io_threads = 1;
  o.endpoints = {Endpoint{"not-an-ip", 0, false}};
  Server bad_address(o);
  auto st = bad_address.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find("not-an-ip"), std::string::npos);

  o.endpoints = {Endpoint{"127.0.0.1", 0, true}};
  Server no_cert(o);
  EXPECT_FALSE(no_cert.Start().ok());

  o.endpoints = {Endpoint{"127.0.0.1", 0, false}};
  Server first(o);
  ASSERT_TRUE(first.Start().ok());
  o.endpoints = {Endpoint{"127.0.0.1", first.ports()[0], false}};
  Server second(o);
  st = second.Start();
  ASSERT_FALSE(st.ok());
  EXPECT_NE(st.error().message().find(std::to_string(first.ports()[0])), std::string::npos);
  EXPECT_FALSE(first.Handle(Method::kGet, "/late", [](const Request&) { return Response(); }).ok());
}

}  // namespace
}  // namespace upkeep::net
