// InstallSpec::FromManifest: the default, every accepted form, and every refusal.
#include "upkeep/agent/install_spec.hpp"

#include <gtest/gtest.h>

#include "package_test_util.hpp"

namespace upkeep::agent {
namespace {

using packages::Manifest;
using packages::testing::BaseManifest;
using packages::testing::DirEntry;
using packages::testing::FileEntry;
using packages::testing::LinkEntry;

Manifest WithInstall(const std::string& install_json) {
  Manifest m =
      BaseManifest({DirEntry("bin"), FileEntry("bin/health", "#!/bin/sh\n", 0755), FileEntry("bin/mod", "x", 0750),
                    FileEntry("README", "hi", 0644), FileEntry("disk.img", "img"), LinkEntry("bin/h2", "health")});
  if (!install_json.empty()) m.extra["install"] = Json::parse(install_json);
  return m;
}

Error Fails(const std::string& install_json) {
  auto spec = InstallSpec::FromManifest(WithInstall(install_json));
  EXPECT_FALSE(spec.ok()) << install_json;
  return spec.ok() ? Error(Errc::kInternal, "unexpectedly ok") : spec.error();
}

TEST(InstallSpecTest, AbsentMeansFilesWithoutHooks) {
  auto spec = InstallSpec::FromManifest(WithInstall(""));
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->handler, HandlerKind::kFiles);
  EXPECT_FALSE(spec->pre_install || spec->post_install || spec->health_check);
}

TEST(InstallSpecTest, FullImageAndModuleSpecs) {
  auto spec = InstallSpec::FromManifest(WithInstall(
      R"({"handler":"image","image":"disk.img","pre_install":{"command":["bin/health","a b"],"timeout_seconds":5},
          "post_install":{"command":["bin/mod"]},"health_check":{"command":["bin/health"],"timeout_seconds":3600}})"));
  ASSERT_TRUE(spec.ok()) << spec.error().message();
  EXPECT_EQ(spec->handler, HandlerKind::kImage);
  EXPECT_EQ(spec->image, "disk.img");
  ASSERT_TRUE(spec->pre_install);
  EXPECT_EQ(spec->pre_install->command, (std::vector<std::string>{"bin/health", "a b"}));
  EXPECT_EQ(spec->pre_install->timeout, std::chrono::seconds(5));
  EXPECT_EQ(spec->post_install->timeout, std::chrono::seconds(kDefaultHookTimeoutSeconds));
  EXPECT_EQ(spec->health_check->timeout, std::chrono::seconds(3600));
  // Round trip through ToJson.
  Manifest m = WithInstall("");
  m.extra["install"] = spec->ToJson();
  auto again = InstallSpec::FromManifest(m);
  ASSERT_TRUE(again.ok()) << again.error().message();
  EXPECT_EQ(again->ToJson(), spec->ToJson());

  auto mod = InstallSpec::FromManifest(WithInstall(R"({"handler":"module","module":"bin/mod"})"));
  ASSERT_TRUE(mod.ok()) << mod.error().message();
  EXPECT_EQ(mod->handler, HandlerKind::kModule);
  EXPECT_EQ(mod->module, "bin/mod");
  auto files = InstallSpec::FromManifest(WithInstall(R"({"handler":"files"})"));
  ASSERT_TRUE(files.ok());
  EXPECT_EQ(files->handler, HandlerKind::kFiles);
}

struct Case {
  const char* json;
  Errc code;
  const char* names;  // the message must contain this
};

TEST(InstallSpecTest, RefusesEveryMalformedOrUnacceptableField) {
  const Case cases[] = {
      {R"([])", Errc::kParse, "install"},
      {R"({"handler":"files","extra":1})", Errc::kParse, "'extra'"},
      {R"({"handler":3})", Errc::kParse, "'handler'"},
      {R"({"handler":"rpm"})", Errc::kParse, "'handler'"},
      {R"({"handler":"image"})", Errc::kParse, "'image'"},
      {R"({"handler":"image","image":5})", Errc::kParse, "'image'"},
      {R"({"handler":"image","image":"nope.img"})", Errc::kPolicy, "'image'"},
      {R"({"handler":"image","image":"bin"})", Errc::kPolicy, "'image'"},
      {R"({"handler":"image","image":"/disk.img"})", Errc::kPolicy, "'image'"},
      {R"({"handler":"files","image":"disk.img"})", Errc::kPolicy, "'image'"},
      {R"({"handler":"files","module":"bin/mod"})", Errc::kPolicy, "'module'"},
      {R"({"handler":"module"})", Errc::kParse, "'module'"},
      {R"({"handler":"module","module":[]})", Errc::kParse, "'module'"},
      {R"({"handler":"module","module":"README"})", Errc::kPolicy, "'module'"},
      {R"({"handler":"module","module":"bin/h2"})", Errc::kPolicy, "'module'"},
      {R"({"handler":"module","module":""})", Errc::kParse, "'module'"},
      {R"({"health_check":"bin/health"})", Errc::kParse, "'health_check'"},
      {R"({"health_check":{}})", Errc::kParse, "'health_check.command'"},
      {R"({"health_check":{"command":[]}})", Errc::kParse, "'health_check.command'"},
      {R"({"health_check":{"command":"bin/health"}})", Errc::kParse, "'health_check.command'"},
      {R"({"health_check":{"command":["bin/health",7]}})", Errc::kParse, "'health_check.command'"},
      {R"({"health_check":{"command":["bin/health"],"user":"root"}})", Errc::kParse, "'health_check.user'"},
      {R"({"health_check":{"command":["/bin/sh","-c","x"]}})", Errc::kPolicy, "'health_check.command[0]'"},
      {R"({"health_check":{"command":["../bin/health"]}})", Errc::kPolicy, "'health_check.command[0]'"},
      {R"({"health_check":{"command":["bin/other"]}})", Errc::kPolicy, "'health_check.command[0]'"},
      {R"({"health_check":{"command":["README"]}})", Errc::kPolicy, "'health_check.command[0]'"},
      {R"({"health_check":{"command":["bin"]}})", Errc::kPolicy, "'health_check.command[0]'"},
      {R"({"pre_install":{"command":["bin/health"],"timeout_seconds":0}})", Errc::kPolicy,
       "'pre_install.timeout_seconds'"},
      {R"({"pre_install":{"command":["bin/health"],"timeout_seconds":3601}})", Errc::kPolicy,
       "'pre_install.timeout_seconds'"},
      {R"({"pre_install":{"command":["bin/health"],"timeout_seconds":-5}})", Errc::kPolicy,
       "'pre_install.timeout_seconds'"},
      {R"({"pre_install":{"command":["bin/health"],"timeout_seconds":18446744073709551615}})", Errc::kPolicy,
       "'pre_install.timeout_seconds'"},
      {R"({"post_install":{"command":["bin/health"],"timeout_seconds":"60"}})", Errc::kParse,
       "'post_install.timeout_seconds'"},
      {R"({"post_install":{"command":["bin/health"],"timeout_seconds":1.5}})", Errc::kParse,
       "'post_install.timeout_seconds'"},
      {R"({"handler":"image","image":"disk.img","health_check":{"command":["disk.img"]}})", Errc::kPolicy,
       "'health_check.command[0]'"},
  };
  for (const auto& c : cases) {
    Error e = Fails(c.json);
    EXPECT_EQ(e.code(), c.code) << c.json << " -> " << e.message();
    EXPECT_NE(e.message().find(c.names), std::string::npos) << c.json << " -> " << e.message();
  }
  // Bounds on the command.
  Json many = Json::array();
  for (std::size_t i = 0; i <= kMaxCommandArgs; ++i) many.push_back("bin/health");
  Manifest m = WithInstall("");
  m.extra["install"] = Json{{"health_check", Json{{"command", many}}}};
  auto spec = InstallSpec::FromManifest(m);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().code(), Errc::kLimit);
  m.extra["install"] =
      Json{{"health_check", Json{{"command", Json::array({"bin/health", std::string(kMaxCommandArgBytes + 1, 'x')})}}}};
  spec = InstallSpec::FromManifest(m);
  ASSERT_FALSE(spec.ok());
  EXPECT_EQ(spec.error().code(), Errc::kLimit);
}

TEST(InstallSpecTest, HandlerKindNames) {
  for (auto k : {HandlerKind::kFiles, HandlerKind::kImage, HandlerKind::kModule}) {
    auto back = ParseHandlerKind(HandlerKindName(k));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, k);
  }
  EXPECT_FALSE(ParseHandlerKind("FILES").ok());
}

}  // namespace
}  // namespace upkeep::agent
