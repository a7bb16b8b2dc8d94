#include "upkeep/trust/request_signing.hpp"

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <thread>
#include <vector>

#include "upkeep/common/hash.hpp"

namespace upkeep::trust {
namespace {

using namespace std::chrono_literals;

const SysTime kNow = ParseTimestamp("2030-01-01T12:00:00Z").value();

struct RequestFixture {
  ApplianceIdentity appliance = ApplianceIdentity::Generate();
  FakeClock client_clock{kNow};
  FakeClock server_clock{kNow};
  ReplayCache cache{1000};
  RequestVerifier verifier{server_clock, cache};
  std::string body = R"({"installed":{"base":"2.0.0"}})";
  RequestToSign request{"POST", "/api/v1/checkin?full=1", body};

  RequestSignature Sign() { return SignRequest(appliance, request, client_clock, SystemRandom::Instance()).value(); }

  RequestCheck Check(const RequestToSign& req, const RequestSignature& sig, const AppliancePublicKey& key) {
    RequestCheck failed = RequestCheck::kOk;
    auto st = verifier.Verify(req, sig, key, &failed);
    EXPECT_EQ(st.ok(), failed == RequestCheck::kOk);
    if (!st.ok()) last_message = st.error().message();
    return failed;
  }
  RequestCheck Check(const RequestSignature& sig) { return Check(request, sig, appliance.public_key()); }

  std::string last_message;
};

TEST(RequestSigningTest, CanonicalStringHasTheDocumentedForm) {
  RequestToSign r{"GET", "/api/v1/assignment?x=1", "body"};
  auto s = RequestCanonicalString(r, "2030-01-01T12:00:00Z", "00ff", "apl-x");
  ASSERT_TRUE(s.ok());
  EXPECT_EQ(*s, "UPKEEP-REQUEST-V1\nGET\n/api/v1/assignment?x=1\n" + Sha256Hex("body") +
                    "\n2030-01-01T12:00:00Z\n00ff\napl-x");
  RequestToSign injected{"GET", "/a\nPOST", ""};
  EXPECT_FALSE(RequestCanonicalString(injected, "t", "n", "a").ok());
  RequestToSign lower{"get", "/a", ""};
  EXPECT_FALSE(RequestCanonicalString(lower, "t", "n", "a").ok());
  RequestToSign relative{"GET", "a", ""};
  EXPECT_FALSE(RequestCanonicalString(relative, "t", "n", "a").ok());
}

TEST(RequestSigningTest, SignedRequestVerifiesOnce) {
  RequestFixture f;
  auto sig = f.Sign();
  EXPECT_EQ(sig.appliance_id, f.appliance.appliance_id());
  EXPECT_EQ(sig.timestamp, "2030-01-01T12:00:00Z");
  EXPECT_EQ(sig.nonce.size(), 32u);
  EXPECT_EQ(sig.signature_hex.size(), 128u);
  auto headers = sig.Headers();
  ASSERT_EQ(headers.size(), 4u);
  EXPECT_EQ(headers[0].first, "X-Upkeep-Appliance");
  EXPECT_EQ(headers[3].second, sig.signature_hex);

  EXPECT_EQ(f.Check(sig), RequestCheck::kOk) << f.last_message;
  EXPECT_EQ(f.cache.size(), 1u);
  EXPECT_EQ(f.Check(sig), RequestCheck::kReplayed);
  EXPECT_NE(f.last_message.find("already used"), std::string::npos);
  // Two requests signed at the same second still differ by their nonce.
  EXPECT_EQ(f.Check(f.Sign()), RequestCheck::kOk) << f.last_message;
}

TEST(RequestSigningTest, EveryCoveredFieldIsBound) {
  RequestFixture f;
  auto sig = f.Sign();
  RequestToSign other_method{"PUT", f.request.path_and_query, f.request.body};
  EXPECT_EQ(f.Check(other_method, sig, f.appliance.public_key()), RequestCheck::kBadSignature);
  RequestToSign other_path{"POST", "/api/v1/checkin?full=0", f.request.body};
  EXPECT_EQ(f.Check(other_path, sig, f.appliance.public_key()), RequestCheck::kBadSignature);
  RequestToSign other_body{"POST", f.request.path_and_query, R"({"installed":{"base":"1.0.0"}})"};
  EXPECT_EQ(f.Check(other_body, sig, f.appliance.public_key()), RequestCheck::kBadSignature);

  auto moved = sig;
  moved.timestamp = "2030-01-01T12:00:01Z";
  EXPECT_EQ(f.Check(moved), RequestCheck::kBadSignature);
  auto renonced = sig;
  renonced.nonce[0] = renonced.nonce[0] == 'a' ? 'b' : 'a';
  EXPECT_EQ(f.Check(renonced), RequestCheck::kBadSignature);
  auto flipped = sig;
  flipped.signature_hex[10] = flipped.signature_hex[10] == '0' ? '1' : '0';
  EXPECT_EQ(f.Check(flipped), RequestCheck::kBadSignature);
  EXPECT_NE(f.last_message.find("bad request signature"), std::string::npos);
  // None of the refused requests used up the nonce: the genuine one still passes.
  EXPECT_EQ(f.Check(sig), RequestCheck::kOk) << f.last_message;
}

TEST(RequestSigningTest, KeyMustBelongToTheClaimedAppliance) {
  RequestFixture f;
  auto other = ApplianceIdentity::Generate();
  auto sig = f.Sign();
  EXPECT_EQ(f.Check(f.request, sig, other.public_key()), RequestCheck::kWrongKey);
  // Another appliance's key claiming this appliance's id can't sign for it either.
  auto forged = SignRequest(other, f.request, f.client_clock, SystemRandom::Instance()).value();
  forged.appliance_id = f.appliance.appliance_id();
  EXPECT_EQ(f.Check(forged), RequestCheck::kBadSignature);
}

TEST(RequestSigningTest, TimestampOutsideTheSkewIsStale) {
  RequestFixture f;
  f.client_clock.Set(kNow - 300s);
  EXPECT_EQ(f.Check(f.Sign()), RequestCheck::kOk) << f.last_message;
  f.client_clock.Set(kNow + 300s);
  EXPECT_EQ(f.Check(f.Sign()), RequestCheck::kOk) << f.last_message;
  f.client_clock.Set(kNow - 301s);
  EXPECT_EQ(f.Check(f.Sign()), RequestCheck::kStaleTimestamp);
  EXPECT_NE(f.last_message.find("NTP"), std::string::npos);
  f.client_clock.Set(kNow + 301s);
  EXPECT_EQ(f.Check(f.Sign()), RequestCheck::kStaleTimestamp);
}

TEST(RequestSigningTest, ReplayAfterTheWindowIsStaleNotAccepted) {
  RequestFixture f;
  auto sig = f.Sign();
  ASSERT_EQ(f.Check(sig), RequestCheck::kOk);
  f.server_clock.Advance(299s);
  EXPECT_EQ(f.Check(sig), RequestCheck::kReplayed);
  f.server_clock.Advance(2s);
  EXPECT_EQ(f.Check(sig), RequestCheck::kStaleTimestamp);
}

TEST(RequestSigningTest, MalformedHeadersAreNamed) {
  RequestFixture f;
  auto sig = f.Sign();
  auto bad = sig;
  bad.nonce = "";
  EXPECT_EQ(f.Check(bad), RequestCheck::kMalformed);
  EXPECT_NE(f.last_message.find("X-Upkeep-Nonce"), std::string::npos);
  bad = sig;
  for (auto& c : bad.nonce) c = static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (bad.nonce != sig.nonce) {
    EXPECT_EQ(f.Check(bad), RequestCheck::kMalformed);
  }
  bad = sig;
  bad.timestamp = "yesterday";
  EXPECT_EQ(f.Check(bad), RequestCheck::kMalformed);
  EXPECT_NE(f.last_message.find("X-Upkeep-Timestamp"), std::string::npos);
  bad = sig;
  bad.signature_hex.pop_back();
  EXPECT_EQ(f.Check(bad), RequestCheck::kMalformed);
  bad = sig;
  bad.appliance_id = "someone";
  EXPECT_EQ(f.Check(bad), RequestCheck::kMalformed);
}

TEST(ReplayCacheTest, FullCacheRefusesAsBusyUntilEntriesAge) {
  const SysTime t0 = kNow;
  ReplayCache cache(3, 300s);
  EXPECT_TRUE(cache.Insert("apl-a", "n1", t0, t0).ok());
  EXPECT_TRUE(cache.Insert("apl-a", "n2", t0 + 10s, t0 + 10s).ok());
  EXPECT_TRUE(cache.Insert("apl-b", "n1", t0 + 20s, t0 + 20s).ok()) << "nonces are per appliance";
  auto full = cache.Insert("apl-a", "n3", t0 + 30s, t0 + 30s);
  ASSERT_FALSE(full.ok());
  EXPECT_EQ(full.error().code(), Errc::kLimit);
  EXPECT_NE(full.error().message().find("busy"), std::string::npos);
  EXPECT_EQ(cache.size(), 3u);
  // A replay is still a replay when the cache is full.
  auto replay = cache.Insert("apl-a", "n1", t0, t0 + 30s);
  ASSERT_FALSE(replay.ok());
  EXPECT_EQ(replay.error().code(), Errc::kVerification);

  // At t0 + 301 s the first entry's timestamp is past the window: it is forgotten, one slot frees.
  EXPECT_TRUE(cache.Insert("apl-a", "n3", t0 + 301s, t0 + 301s).ok());
  EXPECT_EQ(cache.size(), 3u);
  // Much later, everything old is gone.
  EXPECT_TRUE(cache.Insert("apl-a", "n4", t0 + 2000s, t0 + 2000s).ok());
  EXPECT_EQ(cache.size(), 1u);
}

TEST(ReplayCacheTest, VerifierReportsBusyDistinctly) {
  FakeClock clock(kNow);
  ReplayCache cache(2, 60s);
  RequestVerifier verifier(clock, cache);
  auto id = ApplianceIdentity::Generate();
  RequestToSign req{"GET", "/api/v1/assignment", ""};
  std::vector<RequestCheck> results;
  for (int i = 0; i < 3; ++i) {
    auto sig = SignRequest(id, req, clock, SystemRandom::Instance()).value();
    RequestCheck failed;
    (void)verifier.Verify(req, sig, id.public_key(), &failed);
    results.push_back(failed);
  }
  EXPECT_EQ(results, (std::vector<RequestCheck>{RequestCheck::kOk, RequestCheck::kOk, RequestCheck::kBusy}));
  EXPECT_STREQ(RequestCheckName(RequestCheck::kBusy), "busy");
  // The skew window is the cache's: 61 s is stale for this verifier.
  clock.Advance(61s);
  auto old = SignRequest(id, req, FakeClock(kNow), SystemRandom::Instance()).value();
  RequestCheck failed;
  (void)verifier.Verify(req, old, id.public_key(), &failed);
  EXPECT_EQ(failed, RequestCheck::kStaleTimestamp);
}

TEST(ReplayCacheTest, ConcurrentReplaysAreAcceptedOnlyOnce) {
  ReplayCache cache(100000, 300s);
  constexpr int kThreads = 4;
  constexpr int kNonces = 500;
  std::atomic<int> accepted{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&] {
      for (int n = 0; n < kNonces; ++n) {
        if (cache.Insert("apl-a", "nonce-" + std::to_string(n), kNow, kNow).ok()) ++accepted;
      }
    });
  }
  for (auto& th : threads) th.join();
  EXPECT_EQ(accepted.load(), kNonces);
  EXPECT_EQ(cache.size(), static_cast<std::size_t>(kNonces));
}

}  // namespace
}  // namespace upkeep::trust
