#include "upkeep/trust/install_report.hpp"

#include <gtest/gtest.h>

namespace upkeep::trust {
namespace {

using packages::Version;

const SysTime kCreated = ParseTimestamp("2030-03-01T08:00:00Z").value();

ApplianceIdentity Identity(std::uint8_t b) { return ApplianceIdentity::FromSeed(Bytes(32, b)).value(); }

Json Event(int i, const std::string& type = "success") {
  Json e = Json::object();
  e["id"] = std::string(30, '0') + (i < 10 ? "0" : "") + std::to_string(i % 100);
  e["type"] = type;
  e["name"] = "base";
  e["version"] = "2.1.0";
  e["at"] = "2030-03-01T07:59:00Z";
  e["detail"] = Json::object();
  return e;
}

InstallReport Sample(const ApplianceIdentity& id) {
  InstallReport r;
  r.appliance_id = id.appliance_id();
  r.bundle_id = "0123456789abcdef0123456789abcdef";
  r.nonce = "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf";
  r.created = kCreated;
  r.installed = {{"base", Version{2, 1, 0}}, {"agent", Version{1, 3, 0}}};
  r.events.push_back(Event(1, "install"));
  Json e = Event(2);
  e["log_tail"] = "done\n";
  r.events.push_back(e);
  return r;
}

// Re-signs a modified "signed" object with `id`'s key (to reach the field checks).
std::string Resign(const std::string& text, const ApplianceIdentity& id, const std::function<void(Json&)>& edit) {
  Json s = SignedDocument::Parse(text).value().signed_part();
  edit(s);
  return SignedDocument::Sign(s, id.signing_key()).value().Serialize();
}

TEST(InstallReportTest, SignVerifyRoundTrip) {
  auto id = Identity(1);
  FakeClock clock(kCreated + std::chrono::hours(1));
  auto text = SignInstallReport(Sample(id), id);
  ASSERT_TRUE(text.ok()) << text.error().message();
  EXPECT_EQ(InstallReportApplianceId(*text).value(), id.appliance_id());
  auto r = VerifyInstallReport(*text, id.public_key(), clock);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->appliance_id, id.appliance_id());
  EXPECT_EQ(r->bundle_id, "0123456789abcdef0123456789abcdef");
  EXPECT_EQ(r->nonce, "a0a1a2a3a4a5a6a7a8a9aaabacadaeaf");
  EXPECT_EQ(r->created, kCreated);
  EXPECT_EQ(r->installed, Sample(id).installed);
  EXPECT_EQ(r->events, Sample(id).events);

  InstallReport no_nonce = Sample(id);
  no_nonce.nonce.reset();
  auto r2 = VerifyInstallReport(SignInstallReport(no_nonce, id).value(), id.public_key(), clock);
  ASSERT_TRUE(r2.ok());
  EXPECT_FALSE(r2->nonce.has_value());
}

TEST(InstallReportTest, TamperedFieldFails) {
  auto id = Identity(2);
  FakeClock clock(kCreated);
  std::string text = SignInstallReport(Sample(id), id).value();
  const auto pos = text.find("2.1.0");
  ASSERT_NE(pos, std::string::npos);
  text.replace(pos, 5, "9.1.0");
  auto r = VerifyInstallReport(text, id.public_key(), clock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
}

TEST(InstallReportTest, OtherAppliancesKeyFails) {
  auto id = Identity(3);
  auto other = Identity(4);
  FakeClock clock(kCreated);
  const std::string text = SignInstallReport(Sample(id), id).value();
  auto r = VerifyInstallReport(text, other.public_key(), clock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);

  // Signed by `other` but claiming `id`: the claim is refused even with other's key.
  const std::string claim = Resign(text, other, [&](Json&) {});
  r = VerifyInstallReport(claim, other.public_key(), clock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kPolicy);

  auto wrong_signer = SignInstallReport(Sample(id), other);
  ASSERT_FALSE(wrong_signer.ok());
  EXPECT_EQ(wrong_signer.error().code(), Errc::kInvalidArgument);
}

TEST(InstallReportTest, Expired) {
  auto id = Identity(5);
  const std::string text = SignInstallReport(Sample(id), id).value();
  FakeClock clock(kCreated + std::chrono::hours(24 * 90) - std::chrono::seconds(1));
  EXPECT_TRUE(VerifyInstallReport(text, id.public_key(), clock).ok());
  clock.Advance(std::chrono::seconds(1));
  auto r = VerifyInstallReport(text, id.public_key(), clock);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), Errc::kVerification);
  EXPECT_NE(r.error().message().find("expired"), std::string::npos) << r.error().message();
}

TEST(InstallReportTest, EventLimits) {
  auto id = Identity(6);
  FakeClock clock(kCreated);
  InstallReport r = Sample(id);
  r.events = Json::array();
  Json e = Event(1, "failure");
  e["log_tail"] = "START" + std::string(kMaxReportLogTail, 'x') + "END";
  r.events.push_back(e);
  auto v = VerifyInstallReport(SignInstallReport(r, id).value(), id.public_key(), clock);
  ASSERT_TRUE(v.ok()) << v.error().message();
  const std::string tail = v->events[0]["log_tail"].get<std::string>();
  EXPECT_EQ(tail.size(), kMaxReportLogTail);
  EXPECT_TRUE(tail.ends_with("END"));
  EXPECT_EQ(tail.find("START"), std::string::npos);

  r.events = Json::array();
  for (std::size_t i = 0; i <= kMaxReportEvents; ++i) r.events.push_back(Event(static_cast<int>(i)));
  auto too_many = SignInstallReport(r, id);
  ASSERT_FALSE(too_many.ok());
  EXPECT_EQ(too_many.error().code(), Errc::kLimit);
  r.events.erase(r.events.size() - 1);
  EXPECT_TRUE(SignInstallReport(r, id).ok());

  // A verifier never accepts a longer tail than the signer would have written.
  const std::string long_tail = Resign(SignInstallReport(Sample(id), id).value(), id, [](Json& s) {
    s["events"][0]["log_tail"] = std::string(kMaxReportLogTail + 1, 'y');
  });
  auto lt = VerifyInstallReport(long_tail, id.public_key(), clock);
  ASSERT_FALSE(lt.ok());
  EXPECT_EQ(lt.error().code(), Errc::kLimit);
}

TEST(InstallReportTest, MalformedEvents) {
  auto id = Identity(7);
  FakeClock clock(kCreated);
  const std::string good = SignInstallReport(Sample(id), id).value();
  const std::vector<std::function<void(Json&)>> edits = {
      [](Json& s) { s["events"] = "nope"; },
      [](Json& s) { s["events"][0] = 42; },
      [](Json& s) { s["events"][0].erase("id"); },
      [](Json& s) { s["events"][0]["type"] = 1; },
      [](Json& s) { s["events"][0]["detail"] = "text"; },
      [](Json& s) { s["events"][0]["log_tail"] = Json::array(); },
      [](Json& s) { s["events"][0]["surprise"] = true; },
      [](Json& s) { s["installed"]["base"] = "2.x"; },
      [](Json& s) { s.erase("bundle_id"); },
      [](Json& s) { s["created"] = "yesterday"; },
  };
  for (std::size_t i = 0; i < edits.size(); ++i) {
    auto r = VerifyInstallReport(Resign(good, id, edits[i]), id.public_key(), clock);
    ASSERT_FALSE(r.ok()) << i;
    EXPECT_EQ(r.error().code(), Errc::kParse) << i << ": " << r.error().message();
  }
  InstallReport bad = Sample(id);
  bad.events.push_back(Json::object());
  auto s = SignInstallReport(bad, id);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kInvalidArgument);
  EXPECT_NE(s.error().message().find("events[2]"), std::string::npos) << s.error().message();

  EXPECT_FALSE(VerifyInstallReport("{", id.public_key(), clock).ok());
  EXPECT_FALSE(InstallReportApplianceId("{\"signed\":{}}").ok());
}

}  // namespace
}  // namespace upkeep::trust
