// fleet-sim: argument validation, deterministic seed SQL, presigned requests that verify with the
// server's own RequestVerifier, and the load generator against an in-process upkeep_net server
// that checks every signature (no database: the updater integration test is separate).
#include <gtest/gtest.h>

#include <atomic>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "upkeep/common/clock.hpp"
#include "upkeep/common/files.hpp"
#include "upkeep/fleet_sim/cli.hpp"
#include "upkeep/fleet_sim/fleet.hpp"
#include "upkeep/fleet_sim/http_client.hpp"
#include "upkeep/fleet_sim/load.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::fleet_sim {
namespace {

namespace fs = std::filesystem;

struct Run {
  int code = 0;
  std::string out, err;
};

Run RunCli(std::vector<std::string> args) {
  args.insert(args.begin(), "fleet-sim");
  std::vector<const char*> argv;
  for (const auto& a : args) argv.push_back(a.c_str());
  std::ostringstream out, err;
  Run r;
  r.code = Main(static_cast<int>(argv.size()), argv.data(), out, err);
  r.out = out.str();
  r.err = err.str();
  return r;
}

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (fs::temp_directory_path() / "fleet-sim-test.XXXXXX").string();
    path_ = ::mkdtemp(tmpl.data());
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  const fs::path& path() const { return path_; }

 private:
  fs::path path_;
};

std::string ReadAll(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

std::vector<std::string> Lines(const std::string& text) {
  std::vector<std::string> lines;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) lines.push_back(line);
  return lines;
}

TEST(FleetSimCli, UsageErrorsExit2WithAMessage) {
  auto r = RunCli({});
  EXPECT_EQ(r.code, 2);
  r = RunCli({"load", "--server", "http://127.0.0.1:1", "--appliances", "10"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("exactly one of --rate"), std::string::npos) << r.err;
  r = RunCli({"load", "--server", "http://127.0.0.1:1", "--appliances", "10", "--rate", "5", "--max"});
  EXPECT_EQ(r.code, 2);
  r = RunCli({"load", "--server", "https://127.0.0.1:1", "--appliances", "10", "--max"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("https is not supported"), std::string::npos) << r.err;
  r = RunCli({"load", "--server", "http://127.0.0.1:1", "--appliances", "10", "--max", "--connections", "0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--connections"), std::string::npos) << r.err;
  r = RunCli({"load", "--server", "http://127.0.0.1:1", "--appliances", "0", "--max"});
  EXPECT_EQ(r.code, 2);
  r = RunCli({"load", "--server", "http://127.0.0.1:1", "--appliances", "2", "--rate", "5", "--duration", "0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--duration"), std::string::npos) << r.err;
  r = RunCli({"presign", "--count-appliances", "2", "--requests", "1", "--server-host", "h:1", "--installed",
              "base", "--out", "/nonexistent/x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("NAME=VERSION"), std::string::npos) << r.err;
  r = RunCli({"presign", "--count-appliances", "2", "--requests", "1", "--server-host", "h:1", "--installed",
              "base=1.x", "--out", "/nonexistent/x"});
  EXPECT_EQ(r.code, 2);
  r = RunCli({"presign", "--count-appliances", "2", "--requests", "1", "--server-host", "h:1", "--installed",
              "base=1.0.0", "--installed", "base=2.0.0", "--out", "/nonexistent/x"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("given twice"), std::string::npos) << r.err;
  r = RunCli({"seed-sql", "--count", "0", "--out", "/tmp/x"});
  EXPECT_EQ(r.code, 2);
  r = RunCli({"checkin", "--server", "http://127.0.0.1:1", "--identity", "/nonexistent/identity.json"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("--identity"), std::string::npos) << r.err;
  r = RunCli({"report", "--server", "http://127.0.0.1:1", "--identity", "x", "--event", "exploded", "--name", "a",
              "--version", "1.0.0"});
  EXPECT_EQ(r.code, 2);
  // The licence key comes from a file only.
  r = RunCli({"enrol", "--server", "http://127.0.0.1:1", "--identity", "x", "--licence-key", "ABCDE"});
  EXPECT_EQ(r.code, 2);
}

TEST(FleetSimCli, IdentityNewWritesALoadableFileAndRefusesToOverwrite) {
  TempDir dir;
  const auto file = (dir.path() / "id.json").string();
  auto r = RunCli({"identity", "new", file});
  ASSERT_EQ(r.code, 0) << r.err;
  auto id = trust::ApplianceIdentity::Load(file);
  ASSERT_TRUE(id.ok()) << id.error().message();
  EXPECT_EQ(r.out, id->appliance_id() + "\n");
  EXPECT_NE(RunCli({"identity", "new", file}).code, 0);
}

TEST(FleetSimCli, CheckinToAnUnreachableServerIsAnIoError) {
  TempDir dir;
  const auto file = (dir.path() / "id.json").string();
  ASSERT_EQ(RunCli({"identity", "new", file}).code, 0);
  // Port 1 on loopback: nothing listens there.
  auto r = RunCli({"checkin", "--server", "http://127.0.0.1:1", "--identity", file, "--installed", "base=1.0.0"});
  EXPECT_EQ(r.code, 2);
  EXPECT_NE(r.err.find("connect to 127.0.0.1:1"), std::string::npos) << r.err;
}

TEST(FleetSim, DeterministicIdentities) {
  auto a = FleetIdentity(7), b = FleetIdentity(7), c = FleetIdentity(8);
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->appliance_id(), b->appliance_id());
  EXPECT_NE(a->appliance_id(), c->appliance_id());
  auto many = FleetIdentities(5, 3);
  ASSERT_TRUE(many.ok());
  EXPECT_EQ((*many)[4].appliance_id(), FleetIdentity(4)->appliance_id());
  EXPECT_EQ(FleetLicenceKey(3), FleetLicenceKey(3));
  EXPECT_EQ(FleetLicenceKey(3).size(), 23u);  // 4 groups of 5 and 3 dashes, as the keyserver's
}

TEST(FleetSim, SeedSqlIsDeterministicAndMatchesTheIdentities) {
  TempDir one, two;
  auto r1 = RunCli({"seed-sql", "--count", "300", "--out", one.path().string(), "--threads", "3"});
  auto r2 = RunCli({"seed-sql", "--count", "300", "--out", two.path().string(), "--threads", "1"});
  ASSERT_EQ(r1.code, 0) << r1.err;
  ASSERT_EQ(r2.code, 0) << r2.err;
  for (const char* name : {"keyserver-licences.copy", "keyserver-appliances.copy", "updater-appliances.copy"}) {
    const std::string a = ReadAll(one.path() / name), b = ReadAll(two.path() / name);
    EXPECT_EQ(a, b) << name;
    EXPECT_EQ(Lines(a).size(), 300u) << name;
  }
  auto lines = Lines(ReadAll(one.path() / "updater-appliances.copy"));
  auto id0 = FleetIdentity(0), id299 = FleetIdentity(299);
  EXPECT_EQ(lines[0].substr(0, lines[0].find('\t')), id0->appliance_id());
  EXPECT_EQ(lines[299].substr(0, lines[299].find('\t')), id299->appliance_id());
  // The key column parses back to the identity's public key, as the keyserver stores it.
  std::vector<std::string> cols;
  std::istringstream row(lines[0]);
  for (std::string col; std::getline(row, col, '\t');) cols.push_back(col);
  ASSERT_EQ(cols.size(), 6u);
  auto key = ParseJson(cols[1]);
  ASSERT_TRUE(key.ok());
  auto pub = trust::AppliancePublicKey::FromJson(*key);
  ASSERT_TRUE(pub.ok()) << pub.error().message();
  EXPECT_EQ(pub->appliance_id(), id0->appliance_id());
  const std::string sql = ReadAll(one.path() / "keyserver.sql");
  EXPECT_NE(sql.find("\\copy licences"), std::string::npos);
  EXPECT_NE(sql.find((one.path() / "keyserver-appliances.copy").string()), std::string::npos);
  // No half-written file is left behind.
  for (const auto& e : fs::directory_iterator(one.path())) EXPECT_NE(e.path().extension(), ".part");
}

// Parses one raw request back into what the server's verifier needs.
struct Parsed {
  std::string method, path, body;
  std::map<std::string, std::string> headers;
};
Parsed ParseRaw(const std::string& raw) {
  Parsed p;
  auto head_end = raw.find("\r\n\r\n");
  EXPECT_NE(head_end, std::string::npos);
  p.body = raw.substr(head_end + 4);
  auto lines = raw.substr(0, head_end);
  std::istringstream in(lines);
  std::string line;
  std::getline(in, line);
  if (!line.empty() && line.back() == '\r') line.pop_back();
  std::istringstream rl(line);
  std::string version;
  rl >> p.method >> p.path >> version;
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    auto colon = line.find(':');
    p.headers[line.substr(0, colon)] = line.substr(colon + 2);
  }
  return p;
}

TEST(FleetSim, PresignedRequestsParseAndVerifyOnce) {
  TempDir dir;
  const auto file = (dir.path() / "checkins.txt").string();
  auto r = RunCli({"presign", "--count-appliances", "3", "--requests", "7", "--server-host", "127.0.0.1:8080",
                   "--installed", "base=1.0.0", "--installed", "site=5.0.0", "--out", file});
  ASSERT_EQ(r.code, 0) << r.err;
  auto lines = Lines(ReadAll(file));
  ASSERT_EQ(lines.size(), 7u);
  trust::ReplayCache cache(100);
  trust::RequestVerifier verifier(SystemClock::Instance(), cache);
  std::set<std::string> nonces;
  for (std::size_t j = 0; j < lines.size(); ++j) {
    auto raw = UnescapeLine(lines[j]);
    ASSERT_TRUE(raw.ok()) << raw.error().message();
    Parsed p = ParseRaw(*raw);
    EXPECT_EQ(p.method, "POST");
    EXPECT_EQ(p.path, "/api/v1/checkin");
    EXPECT_EQ(p.headers["Host"], "127.0.0.1:8080");
    EXPECT_EQ(p.headers["Content-Length"], std::to_string(p.body.size()));
    auto body = ParseJson(p.body);
    ASSERT_TRUE(body.ok());
    EXPECT_EQ((*body)["installed"], (Json{{"base", "1.0.0"}, {"site", "5.0.0"}}));
    auto id = FleetIdentity(j % 3);
    ASSERT_EQ(p.headers[trust::kApplianceHeader], id->appliance_id());
    trust::RequestSignature sig{p.headers[trust::kApplianceHeader], p.headers[trust::kTimestampHeader],
                                p.headers[trust::kNonceHeader], p.headers[trust::kSignatureHeader]};
    nonces.insert(sig.nonce);
    trust::RequestToSign req{p.method, p.path, p.body};
    auto ok = verifier.Verify(req, sig, id->public_key());
    EXPECT_TRUE(ok.ok()) << ok.error().message();
    // The same request again is a replay: wrk must send each line once.
    trust::RequestCheck check = trust::RequestCheck::kOk;
    EXPECT_FALSE(verifier.Verify(req, sig, id->public_key(), &check).ok());
    EXPECT_EQ(check, trust::RequestCheck::kReplayed);
  }
  EXPECT_EQ(nonces.size(), 7u);
}

TEST(FleetSim, EscapingRoundTrips) {
  const std::string raw = "a\\b\r\nc\nd\\\\r";
  const std::string line = EscapeLine(raw);
  EXPECT_EQ(line.find('\n'), std::string::npos);
  auto back = UnescapeLine(line);
  ASSERT_TRUE(back.ok());
  EXPECT_EQ(*back, raw);
  EXPECT_FALSE(UnescapeLine("x\\").ok());
  EXPECT_FALSE(UnescapeLine("x\\q").ok());
}

TEST(FleetSim, UrlParsing) {
  auto u = Url::Parse("http://127.0.0.1:8080/");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "127.0.0.1");
  EXPECT_EQ(u->port, 8080);
  EXPECT_EQ(u->prefix, "");
  u = Url::Parse("http://[::1]:9/up");
  ASSERT_TRUE(u.ok());
  EXPECT_EQ(u->host, "::1");
  EXPECT_EQ(u->prefix, "/up");
  EXPECT_EQ(u->HostHeader(), "[::1]:9");
  EXPECT_FALSE(Url::Parse("ftp://x").ok());
  EXPECT_FALSE(Url::Parse("http://x:99999").ok());
  EXPECT_FALSE(Url::Parse("http://:80").ok());
  EXPECT_FALSE(Url::Parse("http://x/a?b").ok());
}

TEST(FleetSim, HistogramPercentilesAreCloseAndBounded) {
  Histogram h;
  for (std::uint64_t v = 1; v <= 100000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100000u);
  EXPECT_EQ(h.max(), 100000u);
  auto near = [](std::uint64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want * 0.002 + 1; };
  EXPECT_TRUE(near(h.Percentile(0.5), 50000)) << h.Percentile(0.5);
  EXPECT_TRUE(near(h.Percentile(0.99), 99000)) << h.Percentile(0.99);
  EXPECT_TRUE(near(h.Percentile(0.999), 99900)) << h.Percentile(0.999);
  EXPECT_EQ(h.Percentile(1.0), 100000u);
  EXPECT_GE(h.Percentile(0.5), 50000u);  // upper bucket edge: never an underestimate
  Histogram huge;
  huge.Record(std::uint64_t{1} << 62);  // clamps into the last bucket instead of overflowing
  EXPECT_EQ(huge.Percentile(0.5), std::uint64_t{1} << 62);
  Histogram merged;
  merged.Merge(h);
  merged.Merge(huge);
  EXPECT_EQ(merged.count(), 100001u);
}

// An in-process server answering check-ins after verifying each signature like the updater.
class VerifyingServer {
 public:
  explicit VerifyingServer(std::uint64_t appliances) : cache_(100000), verifier_(SystemClock::Instance(), cache_) {
    for (std::uint64_t i = 0; i < appliances; ++i) {
      auto id = FleetIdentity(i);
      keys_.emplace(id->appliance_id(), id->public_key());
    }
    net::ServerOptions options;
    options.io_threads = 2;
    server_ = std::make_unique<net::Server>(options);
    auto handled = server_->Handle(net::Method::kPost, "/api/v1/checkin", [this](const net::Request& req) {
      auto header = [&](const char* name) { return std::string(req.Header(name).value_or("")); };
      trust::RequestSignature sig{header(trust::kApplianceHeader), header(trust::kTimestampHeader),
                                  header(trust::kNonceHeader), header(trust::kSignatureHeader)};
      auto it = keys_.find(sig.appliance_id);
      if (it == keys_.end()) return net::Response::JsonError(404, "unknown_appliance", sig.appliance_id);
      trust::RequestToSign to_sign{req.method_name(), req.target(), req.body()};
      auto ok = verifier_.Verify(to_sign, sig, it->second);
      if (!ok.ok()) return net::Response::JsonError(401, "bad_request_signature", ok.error().message());
      ++verified_;
      return net::Response::Json(200, Json{{"assignment", Json::object()}});
    });
    EXPECT_TRUE(handled.ok());
    EXPECT_TRUE(server_->Start().ok());
  }
  ~VerifyingServer() { server_->Stop(std::chrono::milliseconds(100)); }
  std::uint16_t port() const { return server_->ports()[0]; }
  int verified() const { return verified_; }

 private:
  trust::ReplayCache cache_;
  trust::RequestVerifier verifier_;
  std::map<std::string, trust::AppliancePublicKey> keys_;
  std::unique_ptr<net::Server> server_;
  std::atomic<int> verified_{0};
};

TEST(FleetSimLoad, OpenLoopKeepsItsScheduleAndEveryRequestVerifies) {
  VerifyingServer server(5);
  auto ids = FleetIdentities(5, 2);
  ASSERT_TRUE(ids.ok());
  LoadOptions o;
  o.server = *Url::Parse("http://127.0.0.1:" + std::to_string(server.port()));
  o.appliances = 5;
  o.rate = 200;
  o.duration = std::chrono::milliseconds(500);
  o.connections = 4;
  o.installed = *ParseInstalled({"base=1.0.0"});
  auto report = RunLoad(o, *ids);
  ASSERT_TRUE(report.ok()) << report->sample_errors.size();
  EXPECT_EQ(report->completed, 100u);
  EXPECT_EQ(report->Count(200), 100u) << (report->sample_errors.empty() ? "" : report->sample_errors[0]);
  EXPECT_EQ(report->transport_errors, 0u);
  EXPECT_EQ(server.verified(), 100);
  EXPECT_LE(report->connects, 4u);  // kept alive
  EXPECT_EQ(report->latency.count(), 100u);
  auto json = ReportJson(o, *report);
  EXPECT_EQ(json["statuses"]["200"], 100);
}

TEST(FleetSimLoad, ClosedLoopStopsAtTheRequestLimit) {
  VerifyingServer server(3);
  auto ids = FleetIdentities(3, 1);
  ASSERT_TRUE(ids.ok());
  LoadOptions o;
  o.server = *Url::Parse("http://127.0.0.1:" + std::to_string(server.port()));
  o.appliances = 3;
  o.rate = 0;
  o.duration = std::chrono::seconds(30);
  o.max_requests = 60;
  o.connections = 3;
  auto report = RunLoad(o, *ids);
  ASSERT_TRUE(report.ok());
  EXPECT_EQ(report->Count(200), 60u);
  EXPECT_LT(report->elapsed_seconds, 10.0);
}

TEST(FleetSimLoad, CliReportsStatusesAndFailsOverTheThreshold) {
  VerifyingServer server(2);  // knows 2 appliances; the third gets 404
  const std::string url = "http://127.0.0.1:" + std::to_string(server.port());
  auto r = RunCli({"--json", "load", "--server", url, "--appliances", "3", "--max", "--requests", "30", "--connections",
                   "2", "--fail-over-permille", "100"});
  EXPECT_EQ(r.code, 1) << r.err;
  auto json = ParseJson(r.out);
  ASSERT_TRUE(json.ok()) << r.out;
  EXPECT_EQ((*json)["statuses"]["200"], 20);
  EXPECT_EQ((*json)["statuses"]["404"], 10);
  r = RunCli({"load", "--server", url, "--appliances", "2", "--rate", "100", "--duration", "0.3"});
  EXPECT_EQ(r.code, 0) << r.err;
  EXPECT_NE(r.out.find("statuses: 200=30"), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("p99.9"), std::string::npos);
}

}  // namespace
}  // namespace upkeep::fleet_sim
