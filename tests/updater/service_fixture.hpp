// Test fixture for the updater service: a real PostgreSQL database (upkeep_db_testing), the
// Service in-process on a real net::Server on 127.0.0.1, a FakeKeyserver behind the
// KeyserverClient interface (real keys, real signatures, real content-key re-sealing, fault
// injection), one operator token per role, and helpers for operator and signed appliance calls.
// The end-to-end tests run the real keyserver and updater processes instead.
#pragma once

#include <atomic>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "test_support.hpp"
#include "upkeep/common/clock.hpp"
#include "upkeep/db/pool.hpp"
#include "upkeep/db/testing.hpp"
#include "upkeep/keyserver/client.hpp"
#include "upkeep/net/server.hpp"
#include "upkeep/packages/keys.hpp"
#include "upkeep/trust/identity.hpp"
#include "upkeep/updater/service.hpp"

namespace upkeep::updater::test {

// Signs like the keyserver with keys of its own. Thread-safe.
class FakeKeyserver final : public keyserver::KeyserverClient {
 public:
  FakeKeyserver();

  Expected<Json> Keys() override;
  Expected<keyserver::ApplianceRecord> GetAppliance(const std::string& appliance_id) override;
  Expected<Json> Sign(std::string_view role, const Json& signed_part) override;
  Expected<keyserver::PassThrough> Enrol(std::string_view request_body) override;
  Expected<keyserver::RevocationPage> RevokedSince(std::optional<SysTime> since) override;

  // Enrols an appliance (customer, maintenance end in a year unless given).
  void AddAppliance(const trust::ApplianceIdentity& identity, std::string customer = "ACME",
                    std::optional<SysTime> maintenance_end = std::nullopt);
  void Revoke(const std::string& appliance_id);
  // While set, every call fails as an unreachable keyserver would (kIo).
  void SetUnavailable(bool down) { unavailable_ = down; }
  int sign_calls(std::string_view role) const;

  const packages::PrivateKey& snapshot_key() const { return snapshot_; }
  const packages::PrivateKey& timestamp_key() const { return timestamp_; }
  const packages::PrivateKey& director_key() const { return director_; }
  const trust::ApplianceIdentity& content_identity() const { return content_; }

 private:
  packages::PrivateKey snapshot_, timestamp_, director_;
  trust::ApplianceIdentity content_;
  mutable std::mutex mu_;
  std::map<std::string, keyserver::ApplianceRecord> appliances_;
  std::map<std::string, int, std::less<>> sign_calls_;
  std::atomic<bool> unavailable_{false};
};

// Every (method, route pattern, status) any ServiceFixture answered in this process, so
// openapi_test.cpp can check that each is declared in docs/openapi/updater.json.
struct ObservedExchange {
  std::string method;
  std::string route;
  int status = 0;
  auto operator<=>(const ObservedExchange&) const = default;
};
std::vector<ObservedExchange> ObservedExchanges();

struct Reply {
  int status = 0;
  std::string head;
  std::string body;
  Json json;  // null when the body is not JSON
  std::string ErrorCode() const;  // "code" of a JSON error body, or ""
  std::optional<std::string> Header(std::string_view name) const;
};

class ServiceFixture {
 public:
  // Throws std::runtime_error with the reason when something can't be set up.
  explicit ServiceFixture(ServiceConfig config = {}, const Clock* clock = nullptr);
  ~ServiceFixture();

  std::uint16_t port() const { return port_; }
  FakeKeyserver& keyserver() { return keyserver_; }
  Service& service() { return *service_; }
  db::Pool& pool() { return *pool_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  const std::string& token(std::string_view role) const { return tokens_.at(std::string(role)); }

  // Operator call with a bearer token (empty: none).
  Reply Call(std::string_view method, std::string_view target, std::string_view body = "",
             std::string_view token = "", const std::vector<std::pair<std::string, std::string>>& headers = {});
  // Appliance call, signed with `identity` (trust::SignRequest).
  Reply ApplianceCall(const trust::ApplianceIdentity& identity, std::string_view method, std::string_view target,
                      std::string_view body);
  // The routes the service registered (net::Server::Routes()).
  std::vector<std::pair<net::Method, std::string>> routes() const { return server_->Routes(); }
  // A dump of every table of the updater's schema (to compare before and after a refused request).
  std::string DumpTables();

 private:
  TempDir dir_;
  std::optional<db::testing::TestDatabase> db_;
  std::unique_ptr<db::Pool> pool_;
  FakeKeyserver keyserver_;
  const Clock& clock_;
  std::unique_ptr<Service> service_;
  std::unique_ptr<net::Server> server_;
  std::uint16_t port_ = 0;
  std::map<std::string, std::string> tokens_;
};

}  // namespace upkeep::updater::test
