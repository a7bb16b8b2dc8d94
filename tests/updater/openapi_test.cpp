// The API document (docs/openapi/updater.json) against the server: it lists exactly the routes
// the updater registers, and every status the service tests in this binary observed on a route
// is declared for that operation. The second check runs after all other tests (a gtest
// Environment), so it covers every exchange of the suite.
#include <gtest/gtest.h>

#include <set>

#include "service_fixture.hpp"
#include "upkeep/common/files.hpp"

namespace upkeep::updater::test {
namespace {

Json LoadDocument() {
  auto text = ReadFileBounded(std::string(UPKEEP_SOURCE_DIR) + "/docs/openapi/updater.json", 4 << 20);
  if (!text.ok()) throw std::runtime_error(text.error().message());
  return ParseJson(*text).value();
}

// Our patterns use {name} like OpenAPI; prefix routes ("/repo/metadata/*") are documented with a
// {path} parameter.
std::string DocPath(std::string pattern) {
  if (pattern.size() >= 2 && pattern.ends_with("/*")) pattern = pattern.substr(0, pattern.size() - 1) + "{path}";
  return pattern;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& ch : out) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  return out;
}

TEST(OpenApi, DocumentsExactlyTheRegisteredRoutes) {
  ServiceFixture f;
  const Json doc = LoadDocument();
  std::set<std::string> registered, documented;
  for (const auto& [method, pattern] : f.routes()) {
    registered.insert(Lower(net::MethodName(method)) + " " + DocPath(pattern));
  }
  for (const auto& [path, item] : doc["paths"].items()) {
    for (const auto& [method, operation] : item.items()) documented.insert(method + " " + path);
  }
  for (const auto& r : registered) EXPECT_TRUE(documented.count(r)) << "registered but not documented: " << r;
  for (const auto& d : documented) EXPECT_TRUE(registered.count(d)) << "documented but not registered: " << d;
}

class ObservedStatusesAreDocumented : public ::testing::Environment {
 public:
  void TearDown() override {
    const Json doc = LoadDocument();
    int missing = 0;
    for (const ObservedExchange& e : ObservedExchanges()) {
      if (e.route == "unmatched") continue;  // a 404/405 for a path no route owns
      const std::string method = e.method == "HEAD" ? "get" : Lower(e.method);
      const std::string path = DocPath(e.route);
      const Json* op = nullptr;
      if (doc["paths"].contains(path) && doc["paths"][path].contains(method)) op = &doc["paths"][path][method];
      if (!op || !(*op)["responses"].contains(std::to_string(e.status))) {
        ADD_FAILURE() << "status " << e.status << " observed on " << method << " " << path
                      << " is not declared in docs/openapi/updater.json";
        ++missing;
      }
    }
    EXPECT_EQ(missing, 0);
  }
};

const auto* const kEnvironment = ::testing::AddGlobalTestEnvironment(new ObservedStatusesAreDocumented);

}  // namespace
}  // namespace upkeep::updater::test
