// Helpers for the appliance and fleet API tests (header-only): releases inserted straight into
// the database (a real manifest, a content key really sealed to the FakeKeyserver's content key,
// so its re-sealing works), signed check-ins and events, and assignment verification. They do
// not go through the publish path on purpose: these tests are about what is offered, not how it
// got published.
#pragma once

#include <gtest/gtest.h>

#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "service_fixture.hpp"
#include "upkeep/common/bytes.hpp"
#include "upkeep/common/hash.hpp"
#include "upkeep/packages/manifest.hpp"
#include "upkeep/trust/content_key.hpp"
#include "upkeep/trust/documents.hpp"
#include "upkeep/trust/request_signing.hpp"

namespace upkeep::updater::test {

struct TestRelease {
  std::string name = "software";
  std::string version = "5.1.0";
  packages::Kind kind = packages::Kind::kSoftware;
  std::vector<packages::Requirement> requires_ = {};
  std::optional<std::string> upgrades_from = std::nullopt;
  std::uint32_t settle_hours = 0;
  std::vector<std::string> channels = {"stable"};
  std::optional<SysTime> published_at = std::nullopt;
};

struct InsertedRelease {
  std::shared_ptr<trust::ContentKey> key;
  std::string target_path, sha256;
  std::uint64_t length = 0;
  packages::Manifest manifest;
};

inline void Sql(ServiceFixture& f, const std::string& sql) {
  auto conn = f.pool().Acquire();
  if (!conn.ok()) throw std::runtime_error("acquire: " + conn.error().message());
  auto r = (*conn)->Exec(sql);
  if (!r.ok()) throw std::runtime_error("sql: " + r.error().message());
}

inline std::string SqlValue(ServiceFixture& f, const std::string& sql) {
  auto conn = f.pool().Acquire();
  if (!conn.ok()) throw std::runtime_error("acquire: " + conn.error().message());
  auto r = (*conn)->Exec(sql);
  if (!r.ok()) throw std::runtime_error("sql: " + r.error().message());
  if (r->rows() == 0) return "<no row>";
  auto null = r->IsNull(0, 0);
  if (null.ok() && *null) return "<null>";
  return r->GetText(0, 0).value();
}

// Inserts blob, release and channel membership rows, bumps catalog_generation. The service sees
// it after its next catalog refresh (f.service().RunBackgroundOnce()).
inline InsertedRelease InsertRelease(ServiceFixture& f, const TestRelease& spec) {
  InsertedRelease out;
  out.manifest.name = spec.name;
  out.manifest.version = packages::Version::Parse(spec.version).value();
  out.manifest.kind = spec.kind;
  out.manifest.requires_ = spec.requires_;
  if (spec.upgrades_from) out.manifest.upgrades_from = packages::Version::Parse(*spec.upgrades_from).value();
  out.manifest.settle_hours = spec.settle_hours;
  out.manifest.description = "test release";
  const std::string manifest_text = out.manifest.Serialize();
  out.key = std::make_shared<trust::ContentKey>(trust::ContentKey::Generate());
  const std::string sealed = trust::SealContentKey(*out.key, f.keyserver().content_identity().public_key());
  const std::string blob = "encrypted blob of " + spec.name + " " + spec.version;
  out.sha256 = Sha256Hex(blob);
  out.length = blob.size();
  out.target_path = spec.name + "/" + spec.name + "-" + spec.version + ".upk.enc";
  const SysTime published = spec.published_at.value_or(SystemClock::Instance().Now());
  auto conn = f.pool().Acquire().value();
  auto must = [](auto r) {
    if (!r.ok()) throw std::runtime_error("insert release: " + r.error().message());
  };
  must(conn->Exec("INSERT INTO blobs (sha256, sha512, length, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
                  out.sha256, Sha512Hex(blob), static_cast<std::int64_t>(out.length), published));
  must(conn->Exec("INSERT INTO releases (name, version, version_major, version_minor, version_build, kind, manifest, "
                  "manifest_signature, target_path, blob_sha256, blob_length, sealed_content_key, targets_version, "
                  "published_at, published_by) VALUES ($1, $2, $3, $4, $5, $6, $7, 'sig', $8, $9, $10, $11, 1, $12, 'test')",
                  spec.name, spec.version, static_cast<std::int64_t>(out.manifest.version.major),
                  static_cast<std::int64_t>(out.manifest.version.minor),
                  static_cast<std::int64_t>(out.manifest.version.build), packages::KindName(spec.kind), manifest_text,
                  out.target_path, out.sha256, static_cast<std::int64_t>(out.length), sealed, published));
  for (const std::string& channel : spec.channels) {
    must(conn->Exec("INSERT INTO channels (name) VALUES ($1) ON CONFLICT DO NOTHING", channel));
    must(conn->Exec("INSERT INTO channel_releases (channel, name, version, added_at) VALUES ($1, $2, $3, $4)", channel,
                    spec.name, spec.version, published));
  }
  must(conn->Exec("UPDATE catalog_generation SET generation = generation + 1"));
  return out;
}

inline std::string CheckinBody(const std::map<std::string, std::string>& installed, const std::string& agent = "1.0.0") {
  Json inst = Json::object();
  for (const auto& [k, v] : installed) inst[k] = v;
  return Json{{"installed", inst}, {"agent_version", agent}, {"time", FormatTimestamp(SystemClock::Instance().Now())}}
      .dump();
}

inline Reply Checkin(ServiceFixture& f, const trust::ApplianceIdentity& id,
                     const std::map<std::string, std::string>& installed) {
  return f.ApplianceCall(id, "POST", "/api/v1/checkin", CheckinBody(installed));
}

inline trust::InstalledSet ToInstalled(const std::map<std::string, std::string>& installed) {
  trust::InstalledSet out;
  for (const auto& [k, v] : installed) out.emplace(k, packages::Version::Parse(v).value());
  return out;
}

// Verifies the check-in answer's assignment as the agent would; fails the test otherwise.
inline trust::Assignment Verified(ServiceFixture& f, const trust::ApplianceIdentity& id, const Reply& reply,
                                  const std::map<std::string, std::string>& installed) {
  EXPECT_EQ(reply.status, 200) << reply.body;
  auto verified = trust::VerifyAssignment(reply.json["assignment"].dump(), f.keyserver().director_key().public_key(),
                                          SystemClock::Instance(),
                                          {id.appliance_id(), trust::StateDigest(ToInstalled(installed)), std::nullopt});
  if (!verified.ok()) {
    ADD_FAILURE() << "assignment does not verify: " << verified.error().message();
    return {};
  }
  return std::move(verified).value();
}

inline std::vector<std::string> StepIds(const trust::Assignment& a) {
  std::vector<std::string> out;
  for (const auto& s : a.steps) out.push_back(s.name + " " + s.version.ToString());
  return out;
}

inline std::string NewEventId() { return ToHex(SystemRandom::Instance().Generate(16)); }

inline Json Event(const std::string& type, const std::string& name, const std::string& version,
                  const std::string& id = NewEventId()) {
  return Json{{"id", id}, {"type", type}, {"name", name}, {"version", version},
              {"at", FormatTimestamp(SystemClock::Instance().Now())}};
}

inline Reply PostEvents(ServiceFixture& f, const trust::ApplianceIdentity& identity, const Json& events) {
  return f.ApplianceCall(identity, "POST", "/api/v1/events", Json{{"events", events}}.dump());
}

// A new appliance enrolled at the fake keyserver.
inline trust::ApplianceIdentity Enrolled(ServiceFixture& f, std::optional<SysTime> maintenance_end = std::nullopt) {
  auto id = trust::ApplianceIdentity::Generate();
  f.keyserver().AddAppliance(id, "ACME", maintenance_end);
  return id;
}

inline void Refresh(ServiceFixture& f) {
  auto st = f.service().RunBackgroundOnce();
  if (!st.ok()) ADD_FAILURE() << "background jobs: " << st.error().message();
}

}  // namespace upkeep::updater::test
