// The files, image and module handlers: stage/activate/commit/rollback/discard, idempotence,
// re-staging after a partial stage, image read-back verification, the module protocol, hooks,
// and crash/power-loss consistency through FaultFs.
#include "upkeep/agent/handlers.hpp"

#include <gtest/gtest.h>
#include <sys/stat.h>

#include <fstream>
#include <iostream>

#include "package_test_util.hpp"
#include "upkeep/agent/fault_fs.hpp"

namespace upkeep::agent {
namespace {

namespace fs = std::filesystem;
using packages::PackageReader;
using packages::PrivateKey;
using packages::Version;
using packages::testing::ReadAll;
using packages::testing::TempDir;
using packages::testing::WriteFile;
using namespace std::chrono_literals;

Version V(const char* s) { return Version::Parse(s).value(); }

struct File {
  std::string content;
  unsigned mode = 0644;
};

class HandlersTest : public ::testing::Test {
 protected:
  void SetUp() override { fs::create_directories(root()); }

  fs::path root() const { return dir_.path() / "root"; }

  // Writes NAME-VERSION.upk with the given files and `install` object (JSON text, may be empty).
  fs::path Package(const std::string& name, const std::string& version, const std::map<std::string, File>& files,
                   const std::string& install = "") {
    fs::path src = dir_.path() / ("src-" + name + "-" + version + "-" + std::to_string(counter_++));
    fs::create_directories(src);
    for (const auto& [path, f] : files) WriteFile(src / path, f.content, f.mode);
    packages::PackSpec spec;
    spec.manifest = packages::testing::BaseManifest();
    spec.manifest.name = name;
    spec.manifest.version = V(version.c_str());
    if (!install.empty()) spec.manifest.extra["install"] = Json::parse(install);
    spec.payload_dir = src;
    fs::path out = dir_.path() / (name + "-" + version + "-" + std::to_string(counter_++) + ".upk");
    auto m = packages::WritePackage(spec, {key_}, out);
    EXPECT_TRUE(m.ok()) << m.error().message();
    return out;
  }

  PackageReader Open(const fs::path& upk) {
    auto r = PackageReader::OpenFile(upk);
    EXPECT_TRUE(r.ok()) << r.error().message();
    auto v = r->VerifySignatures({key_.public_key()});
    EXPECT_TRUE(v.ok()) << v.error().message();
    return std::move(r).value();
  }

  InstallSpec Spec(const fs::path& upk) {
    auto m = packages::ReadPackageManifest(upk);
    EXPECT_TRUE(m.ok());
    auto s = InstallSpec::FromManifest(*m);
    EXPECT_TRUE(s.ok()) << s.error().message();
    return s.ok() ? *s : InstallSpec{};
  }

  Status Stage(Handler& h, const fs::path& upk) {
    auto reader = Open(upk);
    return h.Stage(reader, Spec(upk), {});
  }

  std::unique_ptr<Handler> Make(HandlerKind kind, Fs& fs, HandlerOptions options = {}) {
    auto h = MakeHandler(kind, fs, root(), RealProcessRunner::Instance(), std::move(options));
    EXPECT_TRUE(h.ok()) << h.error().message();
    return std::move(h).value();
  }

  std::optional<Version> ActiveOf(Handler& h, const std::string& name) {
    auto a = h.Active(name);
    EXPECT_TRUE(a.ok()) << a.error().message();
    return a.ok() ? *a : std::nullopt;
  }

  fs::path Pkg(const std::string& name) const { return root() / "packages" / name; }

  TempDir dir_;
  PrivateKey key_ = PrivateKey::GenerateEd25519();
  int counter_ = 0;
};

#define ASSERT_OK(expr)                                            \
  do {                                                             \
    auto s_ = (expr);                                              \
    ASSERT_TRUE(s_.ok()) << #expr << ": " << s_.error().message(); \
  } while (0)

TEST_F(HandlersTest, MakeHandlerRefusesRelativeRoot) {
  auto h = MakeHandler(HandlerKind::kFiles, RealFs::Instance(), "relative/root", RealProcessRunner::Instance());
  ASSERT_FALSE(h.ok());
  EXPECT_EQ(h.error().code(), Errc::kInvalidArgument);
}

TEST_F(HandlersTest, FilesFullLifecycleIsIdempotent) {
  auto h = Make(HandlerKind::kFiles, RealFs::Instance());
  EXPECT_EQ(ActiveOf(*h, "site"), std::nullopt);
  auto p1 = Package("site", "1.0.0", {{"app.txt", {"one"}}, {"bin/run", {"#!/bin/sh\n", 0755}}});
  auto p2 = Package("site", "2.0.0", {{"app.txt", {"two"}}, {"bin/run", {"#!/bin/sh\n", 0755}}});
  auto p3 = Package("site", "3.0.0", {{"app.txt", {"three"}}});

  ASSERT_OK(Stage(*h, p1));
  EXPECT_EQ(ActiveOf(*h, "site"), std::nullopt);  // staging changes nothing active
  auto bad = h->Activate("site", V("9.9.9"));
  ASSERT_FALSE(bad.ok());
  EXPECT_EQ(bad.error().code(), Errc::kNotFound);
  ASSERT_OK(h->Activate("site", V("1.0.0")));
  ASSERT_OK(h->Activate("site", V("1.0.0")));
  EXPECT_EQ(ActiveOf(*h, "site"), V("1.0.0"));
  EXPECT_EQ(fs::read_symlink(Pkg("site") / "current"), fs::path("slots/1.0.0"));
  EXPECT_EQ(ReadAll(Pkg("site") / "current" / "app.txt"), "one");
  EXPECT_EQ(h->WorkDir("site", V("1.0.0")), Pkg("site") / "slots" / "1.0.0");
  ASSERT_OK(h->Commit("site", V("1.0.0")));

  ASSERT_OK(Stage(*h, p2));
  EXPECT_EQ(ReadAll(Pkg("site") / "current" / "app.txt"), "one");
  auto c = h->Commit("site", V("2.0.0"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::kPolicy);
  ASSERT_OK(h->Activate("site", V("2.0.0")));
  ASSERT_OK(h->Activate("site", V("2.0.0")));
  EXPECT_EQ(ReadAll(Pkg("site") / "current" / "app.txt"), "two");
  struct stat st {};
  ASSERT_EQ(::stat((Pkg("site") / "current" / "bin" / "run").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);

  // Health check failed: back to 1.0.0, twice.
  ASSERT_OK(h->Rollback("site", V("1.0.0")));
  ASSERT_OK(h->Rollback("site", V("1.0.0")));
  EXPECT_EQ(ActiveOf(*h, "site"), V("1.0.0"));
  EXPECT_EQ(ReadAll(Pkg("site") / "current" / "app.txt"), "one");
  auto d = h->Discard("site", V("1.0.0"));
  ASSERT_FALSE(d.ok());
  EXPECT_EQ(d.error().code(), Errc::kPolicy);
  ASSERT_OK(h->Discard("site", V("2.0.0")));
  ASSERT_OK(h->Discard("site", V("2.0.0")));
  EXPECT_FALSE(fs::exists(Pkg("site") / "slots" / "2.0.0"));
  auto gone = h->Rollback("site", V("2.0.0"));
  ASSERT_FALSE(gone.ok());
  EXPECT_EQ(gone.error().code(), Errc::kNotFound);

  // Again, this time healthy; then 3.0.0: commit keeps only 3.0.0 and 2.0.0.
  ASSERT_OK(Stage(*h, p2));
  ASSERT_OK(h->Activate("site", V("2.0.0")));
  ASSERT_OK(h->Commit("site", V("2.0.0")));
  ASSERT_OK(h->Commit("site", V("2.0.0")));
  ASSERT_OK(Stage(*h, p3));
  ASSERT_OK(h->Activate("site", V("3.0.0")));
  ASSERT_OK(h->Commit("site", V("3.0.0")));
  ASSERT_OK(h->Commit("site", V("3.0.0")));
  EXPECT_EQ(packages::testing::ListDir(Pkg("site") / "slots"), (std::vector<std::string>{"2.0.0", "3.0.0"}));
  ASSERT_OK(h->Rollback("site", V("2.0.0")));
  EXPECT_EQ(ReadAll(Pkg("site") / "current" / "app.txt"), "two");
  auto badname = h->Active("../etc");
  ASSERT_FALSE(badname.ok());
  EXPECT_EQ(badname.error().code(), Errc::kInvalidArgument);
}

// A first install that fails its health check has no previous version: Deactivate undoes it.
TEST_F(HandlersTest, DeactivateUndoesAFirstInstall) {
  for (HandlerKind kind : {HandlerKind::kFiles, HandlerKind::kImage}) {
    SCOPED_TRACE(HandlerKindName(kind));
    auto h = Make(kind, RealFs::Instance());
    const std::string name = kind == HandlerKind::kFiles ? "site" : "disk";
    const std::string install = kind == HandlerKind::kFiles ? "" : R"({"handler": "image", "image": "disk.img"})";
    auto p1 = Package(name, "1.0.0", {{"disk.img", {"image one"}}}, install);
    auto p2 = Package(name, "2.0.0", {{"disk.img", {"image two"}}}, install);
    ASSERT_OK(h->Deactivate(name, V("1.0.0")));  // nothing active: a no-op
    ASSERT_OK(Stage(*h, p1));
    ASSERT_OK(h->Activate(name, V("1.0.0")));
    auto other = h->Deactivate(name, V("2.0.0"));
    ASSERT_FALSE(other.ok());
    EXPECT_EQ(other.error().code(), Errc::kPolicy);
    EXPECT_EQ(ActiveOf(*h, name), V("1.0.0"));
    ASSERT_OK(h->Deactivate(name, V("1.0.0")));
    ASSERT_OK(h->Deactivate(name, V("1.0.0")));
    EXPECT_EQ(ActiveOf(*h, name), std::nullopt);
    ASSERT_OK(h->Discard(name, V("1.0.0")));
    // And the package can be installed afresh afterwards.
    ASSERT_OK(Stage(*h, p2));
    ASSERT_OK(h->Activate(name, V("2.0.0")));
    EXPECT_EQ(ActiveOf(*h, name), V("2.0.0"));
  }
}

TEST_F(HandlersTest, FilesRestageAfterPartialStageAndStagingActiveIsNoop) {
  auto h = Make(HandlerKind::kFiles, RealFs::Instance());
  auto p1 = Package("site", "1.0.0", {{"app.txt", {"one"}}});
  auto p2 = Package("site", "2.0.0", {{"app.txt", {"two"}}, {"ro/file", {"x", 0444}}});
  ASSERT_OK(Stage(*h, p1));
  ASSERT_OK(h->Activate("site", V("1.0.0")));
  // A crash left a half-written slot and an extractor temp dir.
  WriteFile(Pkg("site") / "slots" / "2.0.0" / "junk", "partial");
  WriteFile(Pkg("site") / "slots" / ".2.0.0.tmp-0123456789abcdef" / "app.txt", "tw");
  ::chmod((Pkg("site") / "slots" / "2.0.0").c_str(), 0500);
  ASSERT_OK(Stage(*h, p2));
  EXPECT_EQ(packages::testing::ListDir(Pkg("site") / "slots"), (std::vector<std::string>{"1.0.0", "2.0.0"}));
  EXPECT_FALSE(fs::exists(Pkg("site") / "slots" / "2.0.0" / "junk"));
  EXPECT_EQ(ReadAll(Pkg("site") / "slots" / "2.0.0" / "app.txt"), "two");
  ASSERT_OK(Stage(*h, p2));  // twice
  EXPECT_EQ(ReadAll(Pkg("site") / "slots" / "2.0.0" / "app.txt"), "two");
  // Staging the active version touches nothing.
  WriteFile(Pkg("site") / "slots" / "1.0.0" / "marker", "m");
  ASSERT_OK(Stage(*h, p1));
  EXPECT_TRUE(fs::exists(Pkg("site") / "slots" / "1.0.0" / "marker"));
  // A tampered/locked reader is refused and leaves no slot.
  auto p3 = Package("site", "3.0.0", {{"app.txt", {"three"}}});
  auto locked = PackageReader::OpenFile(p3);
  ASSERT_TRUE(locked.ok());
  auto s = h->Stage(*locked, InstallSpec{}, {});
  EXPECT_FALSE(s.ok());
  EXPECT_FALSE(fs::exists(Pkg("site") / "slots" / "3.0.0"));
  InstallSpec image;
  image.handler = HandlerKind::kImage;
  auto reader = Open(p3);
  auto wrong = h->Stage(reader, image, {});
  ASSERT_FALSE(wrong.ok());
  EXPECT_EQ(wrong.error().code(), Errc::kInvalidArgument);
}

TEST_F(HandlersTest, HooksGetEnvAndCwdFailAndTimeOut) {
  auto h = Make(HandlerKind::kFiles, RealFs::Instance());
  auto p1 = Package("site", "1.0.0",
                    {{"bin/health",
                      {"#!/bin/sh\necho \"$UPKEEP_PACKAGE $UPKEEP_VERSION [$UPKEEP_PREVIOUS_VERSION] $UPKEEP_ROOT "
                       "$(pwd) $*\"\nexit 4\n",
                       0755}},
                     {"bin/slow", {"#!/bin/sh\nsleep 30\n", 0755}}},
                    R"({"health_check":{"command":["bin/health","x"],"timeout_seconds":5},
                        "post_install":{"command":["bin/slow"],"timeout_seconds":1}})");
  ASSERT_OK(Stage(*h, p1));
  const auto spec = Spec(p1);
  HookEnv env;
  env.package = "site";
  env.version = V("1.0.0");
  env.previous = V("0.9.0");
  env.root = root();
  auto work = h->WorkDir("site", V("1.0.0"));
  auto r = RunHook(RealProcessRunner::Instance(), *spec.health_check, work, env);
  ASSERT_TRUE(r.ok()) << r.error().message();
  EXPECT_EQ(r->exit_code, 4);
  EXPECT_FALSE(r->Succeeded());
  EXPECT_EQ(r->log_tail, "site 1.0.0 [0.9.0] " + root().string() + " " + fs::canonical(work).string() + " x\n");
  env.previous.reset();
  auto slow = RunHook(RealProcessRunner::Instance(), *spec.post_install, work, env, 100ms);
  ASSERT_TRUE(slow.ok()) << slow.error().message();
  EXPECT_TRUE(slow->timed_out);
  EXPECT_LT(slow->duration, 3s);
  HookSpec empty;
  EXPECT_FALSE(RunHook(RealProcessRunner::Instance(), empty, work, env).ok());
  HookSpec absolute;
  absolute.command = {"/bin/true"};
  EXPECT_FALSE(RunHook(RealProcessRunner::Instance(), absolute, work, env).ok());
}

// A fake runner records what RunHook asks for, as the core's tests would.
class RecordingRunner final : public ProcessRunner {
 public:
  Expected<ProcessResult> Run(const ProcessSpec& spec) override {
    seen.push_back(spec);
    ProcessResult r;
    r.exited = true;
    r.exit_code = 0;
    return r;
  }
  std::vector<ProcessSpec> seen;
};

TEST_F(HandlersTest, RunHookBuildsTheSpec) {
  RecordingRunner runner;
  HookSpec hook;
  hook.command = {"bin/health", "--deep"};
  hook.timeout = 7s;
  HookEnv env;
  env.package = "site";
  env.version = V("2.0.0");
  env.root = "/r";
  auto r = RunHook(runner, hook, "/w/slot", env);
  ASSERT_TRUE(r.ok());
  ASSERT_EQ(runner.seen.size(), 1u);
  EXPECT_EQ(runner.seen[0].argv, (std::vector<std::string>{"/w/slot/bin/health", "--deep"}));
  EXPECT_EQ(runner.seen[0].cwd, fs::path("/w/slot"));
  EXPECT_EQ(runner.seen[0].timeout, 7000ms);
  EXPECT_EQ(runner.seen[0].env.size(), 4u);
  EXPECT_EQ(runner.seen[0].env[2], (std::pair<std::string, std::string>{"UPKEEP_PREVIOUS_VERSION", ""}));
}

const char* kModuleScript =
    "#!/bin/sh\n"
    "echo \"$1 $(basename \"$2\") $3 $4 [$5] env=$UPKEEP_VERSION\" >> \"$UPKEEP_ROOT/calls.log\"\n"
    "if [ -f \"$UPKEEP_ROOT/fail-$1\" ]; then echo \"module says no to $1\"; exit 9; fi\n"
    "exit 0\n";

TEST_F(HandlersTest, ModuleProtocolCallsAndFailures) {
  auto h = Make(HandlerKind::kModule, RealFs::Instance());
  const std::string install = R"({"handler":"module","module":"bin/update-module"})";
  auto p1 = Package("fw", "1.0.0", {{"bin/update-module", {kModuleScript, 0755}}, {"fw.bin", {"one"}}}, install);
  auto p2 = Package("fw", "2.0.0", {{"bin/update-module", {kModuleScript, 0755}}, {"fw.bin", {"two"}}}, install);
  auto p3 = Package("fw", "3.0.0", {{"bin/update-module", {kModuleScript, 0755}}, {"fw.bin", {"three"}}}, install);
  ASSERT_OK(Stage(*h, p1));
  ASSERT_OK(h->Activate("fw", V("1.0.0")));
  ASSERT_OK(h->Activate("fw", V("1.0.0")));
  ASSERT_OK(h->Commit("fw", V("1.0.0")));
  ASSERT_OK(Stage(*h, p2));
  ASSERT_OK(h->Activate("fw", V("2.0.0")));
  ASSERT_OK(h->Rollback("fw", V("1.0.0")));
  ASSERT_OK(h->Rollback("fw", V("1.0.0")));
  EXPECT_EQ(ActiveOf(*h, "fw"), V("1.0.0"));
  ASSERT_OK(h->Activate("fw", V("2.0.0")));
  ASSERT_OK(h->Commit("fw", V("2.0.0")));
  EXPECT_EQ(ReadAll(root() / "calls.log"),
            "install 1.0.0 fw 1.0.0 [] env=1.0.0\n"
            "activate 1.0.0 fw 1.0.0 [] env=1.0.0\n"
            "commit 1.0.0 fw 1.0.0 [] env=1.0.0\n"
            "install 2.0.0 fw 2.0.0 [1.0.0] env=2.0.0\n"
            "activate 2.0.0 fw 2.0.0 [1.0.0] env=2.0.0\n"
            "rollback 2.0.0 fw 2.0.0 [1.0.0] env=2.0.0\n"
            "activate 2.0.0 fw 2.0.0 [1.0.0] env=2.0.0\n"
            "commit 2.0.0 fw 2.0.0 [1.0.0] env=2.0.0\n");

  // A failing install: kPolicy with the module's words; nothing active changes.
  WriteFile(root() / "fail-install", "");
  auto s = Stage(*h, p3);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(s.error().code(), Errc::kPolicy);
  EXPECT_NE(s.error().message().find("exit code 9"), std::string::npos) << s.error().message();
  EXPECT_NE(s.error().message().find("module says no to install"), std::string::npos);
  EXPECT_EQ(ActiveOf(*h, "fw"), V("2.0.0"));
  // The slot is there, but its install did not complete: it can't be activated.
  auto incomplete = h->Activate("fw", V("3.0.0"));
  ASSERT_FALSE(incomplete.ok());
  EXPECT_EQ(incomplete.error().code(), Errc::kNotFound);
  EXPECT_NE(incomplete.error().message().find("did not complete"), std::string::npos);
  ASSERT_OK(h->Discard("fw", V("3.0.0")));
  fs::remove(root() / "fail-install");
  // A failing activate: the switch does not happen.
  ASSERT_OK(Stage(*h, p3));
  WriteFile(root() / "fail-activate", "");
  auto a = h->Activate("fw", V("3.0.0"));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code(), Errc::kPolicy);
  EXPECT_EQ(ActiveOf(*h, "fw"), V("2.0.0"));
  EXPECT_EQ(ReadAll(Pkg("fw") / "current" / "fw.bin"), "two");
  // The core rolls back after the failed activate: the module hears `rollback`.
  ASSERT_OK(h->Rollback("fw", V("2.0.0")));
  EXPECT_NE(ReadAll(root() / "calls.log").find("rollback 3.0.0 fw 3.0.0 [2.0.0]"), std::string::npos);
}

TEST_F(HandlersTest, ImageLifecycleReadBackAndRollback) {
  auto h = Make(HandlerKind::kImage, RealFs::Instance());
  const std::string install = R"({"handler":"image","image":"disk.img","health_check":{"command":["bin/health"]}})";
  std::string img1(3 << 20, 'a'), img2(1 << 20, 'b');
  img2[12345] = 'Z';
  auto p1 = Package("os", "1.0.0", {{"disk.img", {img1}}, {"bin/health", {"#!/bin/sh\nexit 0\n", 0755}}}, install);
  auto p2 = Package("os", "2.0.0", {{"disk.img", {img2}}, {"bin/health", {"#!/bin/sh\nexit 1\n", 0755}}}, install);
  std::uint64_t last = 0, total = 0;
  {
    auto reader = Open(p1);
    ASSERT_OK(h->Stage(reader, Spec(p1), [&](std::uint64_t d, std::uint64_t t) { last = d, total = t; }));
  }
  EXPECT_EQ(last, total);
  EXPECT_GT(total, img1.size());
  EXPECT_EQ(ActiveOf(*h, "os"), std::nullopt);
  EXPECT_EQ(ReadAll(Pkg("os") / "image-a"), img1);
  EXPECT_TRUE(fs::exists(Pkg("os") / "meta" / "1.0.0" / "bin" / "health"));
  EXPECT_FALSE(fs::exists(Pkg("os") / "meta" / "1.0.0" / "disk.img"));
  EXPECT_EQ(h->WorkDir("os", V("1.0.0")), Pkg("os") / "meta" / "1.0.0");
  ASSERT_OK(h->Activate("os", V("1.0.0")));
  ASSERT_OK(h->Activate("os", V("1.0.0")));
  ASSERT_OK(h->Commit("os", V("1.0.0")));
  EXPECT_EQ(Json::parse(ReadAll(Pkg("os") / "active")), Json::parse(R"({"slot":"a","version":"1.0.0"})"));

  ASSERT_OK(Stage(*h, p2));
  ASSERT_OK(Stage(*h, p2));  // restage: same slot, same result
  EXPECT_EQ(ReadAll(Pkg("os") / "image-b"), img2);
  EXPECT_EQ(ReadAll(Pkg("os") / "image-a"), img1);
  EXPECT_EQ(ActiveOf(*h, "os"), V("1.0.0"));
  ASSERT_OK(h->Activate("os", V("2.0.0")));
  ASSERT_OK(h->Activate("os", V("2.0.0")));
  EXPECT_EQ(Json::parse(ReadAll(Pkg("os") / "active")),
            Json::parse(R"({"slot":"b","version":"2.0.0","previous":{"slot":"a","version":"1.0.0"}})"));
  // The health check (from meta/2.0.0) fails: roll back.
  HookEnv env;
  env.package = "os";
  env.version = V("2.0.0");
  env.root = root();
  auto hc = RunHook(RealProcessRunner::Instance(), *Spec(p2).health_check, h->WorkDir("os", V("2.0.0")), env);
  ASSERT_TRUE(hc.ok());
  EXPECT_EQ(hc->exit_code, 1);
  ASSERT_OK(h->Rollback("os", V("1.0.0")));
  ASSERT_OK(h->Rollback("os", V("1.0.0")));
  EXPECT_EQ(Json::parse(ReadAll(Pkg("os") / "active")), Json::parse(R"({"slot":"a","version":"1.0.0"})"));
  auto back = h->Rollback("os", V("0.5.0"));
  ASSERT_FALSE(back.ok());
  EXPECT_EQ(back.error().code(), Errc::kNotFound);
  ASSERT_OK(h->Discard("os", V("2.0.0")));
  ASSERT_OK(h->Discard("os", V("2.0.0")));
  EXPECT_FALSE(fs::exists(Pkg("os") / "meta" / "2.0.0"));
  EXPECT_FALSE(fs::exists(Pkg("os") / "staged"));
  auto act = h->Activate("os", V("2.0.0"));
  ASSERT_FALSE(act.ok());
  EXPECT_EQ(act.error().code(), Errc::kNotFound);
  auto dis = h->Discard("os", V("1.0.0"));
  ASSERT_FALSE(dis.ok());
  EXPECT_EQ(dis.error().code(), Errc::kPolicy);

  // Healthy this time; commit prunes meta of anything but the pair.
  ASSERT_OK(Stage(*h, p2));
  ASSERT_OK(h->Activate("os", V("2.0.0")));
  ASSERT_OK(h->Commit("os", V("2.0.0")));
  ASSERT_OK(h->Commit("os", V("2.0.0")));
  auto p3 = Package("os", "3.0.0", {{"disk.img", {"three"}}}, R"({"handler":"image","image":"disk.img"})");
  ASSERT_OK(Stage(*h, p3));
  // Staging into slot a overwrote 1.0.0: it is no longer offered as a rollback target.
  EXPECT_EQ(Json::parse(ReadAll(Pkg("os") / "active")), Json::parse(R"({"slot":"b","version":"2.0.0"})"));
  EXPECT_EQ(ReadAll(Pkg("os") / "image-a"), "three");  // truncated, not just overwritten
  ASSERT_OK(h->Activate("os", V("3.0.0")));
  ASSERT_OK(h->Commit("os", V("3.0.0")));
  EXPECT_EQ(packages::testing::ListDir(Pkg("os") / "meta"), (std::vector<std::string>{"2.0.0", "3.0.0"}));
}

TEST_F(HandlersTest, ImageReadBackMismatchIsDetected) {
  HandlerOptions options;
  int corruptions = 0;
  options.before_image_verify = [&](const fs::path& slot) {
    ++corruptions;
    std::fstream f(slot, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(100);
    f.put('X');
  };
  auto h = Make(HandlerKind::kImage, RealFs::Instance(), options);
  auto p1 =
      Package("os", "1.0.0", {{"disk.img", {std::string(4096, 'a')}}}, R"({"handler":"image","image":"disk.img"})");
  auto s = Stage(*h, p1);
  ASSERT_FALSE(s.ok());
  EXPECT_EQ(corruptions, 1);
  EXPECT_EQ(s.error().code(), Errc::kVerification);
  EXPECT_NE(s.error().message().find("read-back"), std::string::npos) << s.error().message();
  EXPECT_FALSE(fs::exists(Pkg("os") / "staged"));
  auto a = h->Activate("os", V("1.0.0"));
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code(), Errc::kNotFound);
  EXPECT_EQ(ActiveOf(*h, "os"), std::nullopt);
}

TEST_F(HandlersTest, ImageSlotPathsComeFromConfig) {
  HandlerOptions options;
  options.image_slots["os"] = ImageSlotPaths{dir_.path() / "dev-sda2", dir_.path() / "dev-sda3"};
  auto h = Make(HandlerKind::kImage, RealFs::Instance(), options);
  auto p1 = Package("os", "1.0.0", {{"disk.img", {"first"}}}, R"({"handler":"image","image":"disk.img"})");
  auto p2 = Package("os", "2.0.0", {{"disk.img", {"second"}}}, R"({"handler":"image","image":"disk.img"})");
  ASSERT_OK(Stage(*h, p1));
  ASSERT_OK(h->Activate("os", V("1.0.0")));
  ASSERT_OK(Stage(*h, p2));
  EXPECT_EQ(ReadAll(dir_.path() / "dev-sda2"), "first");
  EXPECT_EQ(ReadAll(dir_.path() / "dev-sda3"), "second");
  EXPECT_FALSE(fs::exists(Pkg("os") / "image-a"));
}

TEST_F(HandlersTest, CorruptStateIsAnErrorNotAGuess) {
  auto files = Make(HandlerKind::kFiles, RealFs::Instance());
  fs::create_directories(Pkg("site"));
  fs::create_symlink("/etc", Pkg("site") / "current");
  auto a = files->Active("site");
  ASSERT_FALSE(a.ok());
  EXPECT_EQ(a.error().code(), Errc::kParse);
  auto image = Make(HandlerKind::kImage, RealFs::Instance());
  WriteFile(Pkg("os") / "active", R"({"slot":"c","version":"1.0.0"})");
  auto b = image->Active("os");
  ASSERT_FALSE(b.ok());
  EXPECT_EQ(b.error().code(), Errc::kParse);
  WriteFile(Pkg("os") / "active", "not json");
  EXPECT_FALSE(image->Active("os").ok());
}

// Flips one byte of `needle` inside the package file (a payload byte: the signed manifest stays valid).
void Tamper(const fs::path& upk, const std::string& needle) {
  std::string bytes = ReadAll(upk);
  auto pos = bytes.find(needle);
  ASSERT_NE(pos, std::string::npos);
  bytes[pos] ^= 1;
  std::ofstream(upk, std::ios::binary | std::ios::trunc) << bytes;
}

TEST_F(HandlersTest, TamperedPayloadIsRefusedAndNothingActiveChanges) {
  for (HandlerKind kind : {HandlerKind::kFiles, HandlerKind::kImage}) {
    SCOPED_TRACE(HandlerKindName(kind));
    fs::remove_all(root());
    fs::create_directories(root());
    auto h = Make(kind, RealFs::Instance());
    const std::string install = kind == HandlerKind::kImage ? R"({"handler":"image","image":"data"})" : "";
    auto p1 = Package("pkg", "1.0.0", {{"data", {"old"}}, {"aa-hook", {"#!/bin/sh\n", 0755}}}, install);
    auto p2 = Package("pkg", "2.0.0", {{"data", {"NEW-PAYLOAD-BYTES"}}, {"aa-hook", {"#!/bin/sh\n", 0755}}}, install);
    ASSERT_OK(Stage(*h, p1));
    ASSERT_OK(h->Activate("pkg", V("1.0.0")));
    Tamper(p2, "NEW-PAYLOAD-BYTES");
    auto s = Stage(*h, p2);
    ASSERT_FALSE(s.ok());
    EXPECT_EQ(s.error().code(), Errc::kVerification) << s.error().message();
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("1.0.0"));
    auto a = h->Activate("pkg", V("2.0.0"));
    ASSERT_FALSE(a.ok());
    EXPECT_EQ(a.error().code(), Errc::kNotFound);
    if (kind == HandlerKind::kImage) {
      EXPECT_EQ(packages::testing::ListDir(Pkg("pkg") / "meta"), (std::vector<std::string>{"1.0.0"}));
      EXPECT_FALSE(fs::exists(Pkg("pkg") / "staged"));
      EXPECT_EQ(ReadAll(Pkg("pkg") / "image-a"), "old");
    } else {
      EXPECT_EQ(packages::testing::ListDir(Pkg("pkg") / "slots"), (std::vector<std::string>{"1.0.0"}));
      EXPECT_EQ(ReadAll(Pkg("pkg") / "current" / "data"), "old");
    }
  }
}

TEST_F(HandlersTest, ModuleCommitFailureIsReportedAndKeepsState) {
  auto h = Make(HandlerKind::kModule, RealFs::Instance());
  const std::string install = R"({"handler":"module","module":"bin/update-module"})";
  auto p1 = Package("fw", "1.0.0", {{"bin/update-module", {kModuleScript, 0755}}}, install);
  ASSERT_OK(Stage(*h, p1));
  ASSERT_OK(h->Activate("fw", V("1.0.0")));
  WriteFile(root() / "fail-commit", "");
  auto c = h->Commit("fw", V("1.0.0"));
  ASSERT_FALSE(c.ok());
  EXPECT_EQ(c.error().code(), Errc::kPolicy);
  EXPECT_NE(c.error().message().find("'commit'"), std::string::npos) << c.error().message();
  EXPECT_EQ(ActiveOf(*h, "fw"), V("1.0.0"));
  fs::remove(root() / "fail-commit");
  ASSERT_OK(h->Commit("fw", V("1.0.0")));
}

// Not a timed test: prints how long staging a 64 MiB payload takes (run with
// --gtest_also_run_disabled_tests).
TEST_F(HandlersTest, DISABLED_MeasureStage64MiB) {
  const std::string big(64u << 20, 'q');
  for (HandlerKind kind : {HandlerKind::kFiles, HandlerKind::kImage}) {
    const std::string install = kind == HandlerKind::kImage ? R"({"handler":"image","image":"data"})" : "";
    auto p = Package(std::string("m") + HandlerKindName(kind), "1.0.0", {{"data", {big}}}, install);
    auto h = Make(kind, RealFs::Instance());
    auto start = std::chrono::steady_clock::now();
    ASSERT_OK(Stage(*h, p));
    auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - start).count();
    std::cout << HandlerKindName(kind) << ": staged 64 MiB in " << ms << " ms\n";
  }
}

// ---- crash safety through FaultFs --------------------------------------------------------------

// Old or new, and what `current`/`active` names exists and holds that version's content.
void ExpectConsistent(Handler& h, const std::string& name, const fs::path& root, HandlerKind kind,
                      const std::map<std::string, std::string>& content_by_version) {
  auto a = h.Active(name);
  ASSERT_TRUE(a.ok()) << a.error().message();
  ASSERT_TRUE(a->has_value());
  const std::string v = (*a)->ToString();
  ASSERT_TRUE(content_by_version.count(v)) << v;
  const fs::path pkg = root / "packages" / name;
  EXPECT_TRUE(fs::is_directory(h.WorkDir(name, **a))) << h.WorkDir(name, **a);
  if (kind == HandlerKind::kImage) {
    auto active = Json::parse(ReadAll(pkg / "active"));
    EXPECT_EQ(ReadAll(pkg / ("image-" + active["slot"].get<std::string>())), content_by_version.at(v));
  } else {
    EXPECT_EQ(ReadAll(pkg / "current" / "data"), content_by_version.at(v));
  }
}

class CrashTest : public HandlersTest, public ::testing::WithParamInterface<HandlerKind> {};

TEST_P(CrashTest, CrashAtEveryFsOperationOfStageActivateRollbackThenRerun) {
  const HandlerKind kind = GetParam();
  const std::string install = kind == HandlerKind::kImage    ? R"({"handler":"image","image":"data"})"
                              : kind == HandlerKind::kModule ? R"({"handler":"module","module":"mod"})"
                                                             : "";
  const std::map<std::string, std::string> content = {{"1.0.0", "old"}, {"2.0.0", "new-content"}};
  auto p1 = Package("pkg", "1.0.0", {{"data", {"old"}}, {"mod", {"#!/bin/sh\nexit 0\n", 0755}}}, install);
  auto p2 = Package("pkg", "2.0.0", {{"data", {"new-content"}}, {"mod", {"#!/bin/sh\nexit 0\n", 0755}}}, install);
  int crashes = 0;
  for (std::uint64_t n = 0;; ++n) {
    fs::remove_all(root());
    fs::create_directories(root());
    {
      auto h = Make(kind, RealFs::Instance());
      ASSERT_OK(Stage(*h, p1));
      ASSERT_OK(h->Activate("pkg", V("1.0.0")));
      ASSERT_OK(h->Commit("pkg", V("1.0.0")));
    }
    FaultFs ffs(root());
    auto h = Make(kind, ffs);
    ffs.CrashAfter(n);
    bool crashed = false;
    {
      auto reader = Open(p2);
      auto s = h->Stage(reader, Spec(p2), {});
      if (s.ok()) s = h->Activate("pkg", V("2.0.0"));
      if (s.ok()) s = h->Rollback("pkg", V("1.0.0"));
      if (!s.ok()) {
        ASSERT_TRUE(ffs.crashed()) << "n=" << n << ": " << s.error().message();
        crashed = true;
      }
    }
    ffs.Restart();
    ExpectConsistent(*h, "pkg", root(), kind, content);
    if (::testing::Test::HasFatalFailure()) return;
    // Restart the whole sequence from whatever step the journal would say: all idempotent.
    ASSERT_OK(Stage(*h, p2));
    ASSERT_OK(h->Activate("pkg", V("2.0.0")));
    ExpectConsistent(*h, "pkg", root(), kind, content);
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("2.0.0")) << "n=" << n;
    ASSERT_OK(h->Rollback("pkg", V("1.0.0")));
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("1.0.0")) << "n=" << n;
    ExpectConsistent(*h, "pkg", root(), kind, content);
    if (!crashed) break;
    ++crashes;
    ASSERT_LT(n, 500u);
  }
  EXPECT_GT(crashes, 3);
  std::cout << HandlerKindName(kind) << ": crashed and recovered at " << crashes << " Fs operations\n";
}

TEST_P(CrashTest, PowerLossAtEveryFsOperationOfStageActivateRollback) {
  const HandlerKind kind = GetParam();
  const std::string install = kind == HandlerKind::kImage    ? R"({"handler":"image","image":"data"})"
                              : kind == HandlerKind::kModule ? R"({"handler":"module","module":"mod"})"
                                                             : "";
  const std::map<std::string, std::string> content = {{"1.0.0", "old"}, {"2.0.0", "new-content"}};
  auto p1 = Package("pkg", "1.0.0", {{"data", {"old"}}, {"mod", {"#!/bin/sh\nexit 0\n", 0755}}}, install);
  auto p2 = Package("pkg", "2.0.0", {{"data", {"new-content"}}, {"mod", {"#!/bin/sh\nexit 0\n", 0755}}}, install);
  int crashes = 0;
  for (std::uint64_t n = 0;; ++n) {
    fs::remove_all(root());
    fs::create_directories(root());
    {
      auto h = Make(kind, RealFs::Instance());
      ASSERT_OK(Stage(*h, p1));
      ASSERT_OK(h->Activate("pkg", V("1.0.0")));
      ASSERT_OK(h->Commit("pkg", V("1.0.0")));
      // New slot directories are written by the packages extractor, beside the Fs seam (it
      // fsyncs them), so FaultFs's model would drop them: files/module stage before the snapshot.
      if (kind != HandlerKind::kImage) ASSERT_OK(Stage(*h, p2));
    }
    FaultFs ffs(root());
    auto h = Make(kind, ffs);
    ffs.CrashAfter(n);
    Status s = OkStatus();
    if (kind == HandlerKind::kImage) {
      auto reader = Open(p2);
      s = h->Stage(reader, Spec(p2), {});
    }
    if (s.ok()) s = h->Activate("pkg", V("2.0.0"));
    if (s.ok()) s = h->Rollback("pkg", V("1.0.0"));
    const bool crashed = !s.ok();
    if (crashed) {
      ASSERT_TRUE(ffs.crashed()) << s.error().message();
    }
    ASSERT_OK(ffs.SimulatePowerLoss());
    ExpectConsistent(*h, "pkg", root(), kind, content);
    if (::testing::Test::HasFatalFailure()) return;
    if (kind == HandlerKind::kImage) ASSERT_OK(Stage(*h, p2));
    ASSERT_OK(h->Activate("pkg", V("2.0.0")));
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("2.0.0"));
    ExpectConsistent(*h, "pkg", root(), kind, content);
    ASSERT_OK(h->Rollback("pkg", V("1.0.0")));
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("1.0.0"));
    if (!crashed) break;
    ++crashes;
    ASSERT_LT(n, 200u);
  }
  EXPECT_GT(crashes, 1);
  std::cout << HandlerKindName(kind) << ": power loss at " << crashes << " Fs operations\n";
}

TEST_P(CrashTest, CrashDuringCommitAndDiscardThenRerun) {
  const HandlerKind kind = GetParam();
  const std::string install = kind == HandlerKind::kImage    ? R"({"handler":"image","image":"data"})"
                              : kind == HandlerKind::kModule ? R"({"handler":"module","module":"mod"})"
                                                             : "";
  std::vector<fs::path> pkgs;
  for (const char* v : {"1.0.0", "2.0.0", "3.0.0", "4.0.0"}) {
    pkgs.push_back(
        Package("pkg", v, {{"data", {std::string("v") + v}}, {"mod", {"#!/bin/sh\nexit 0\n", 0755}}}, install));
  }
  const fs::path kept = Pkg("pkg") / (kind == HandlerKind::kImage ? "meta" : "slots");
  int crashes = 0;
  for (std::uint64_t n = 0;; ++n) {
    fs::remove_all(root());
    fs::create_directories(root());
    {
      auto h = Make(kind, RealFs::Instance());
      for (const char* v : {"1.0.0", "2.0.0"}) {
        ASSERT_OK(Stage(*h, pkgs[v[0] - '1']));
        ASSERT_OK(h->Activate("pkg", V(v)));
        ASSERT_OK(h->Commit("pkg", V(v)));
      }
      ASSERT_OK(Stage(*h, pkgs[2]));
      ASSERT_OK(h->Activate("pkg", V("3.0.0")));
    }
    FaultFs ffs(root());
    auto h = Make(kind, ffs);
    ffs.CrashAfter(n);
    auto s = h->Commit("pkg", V("3.0.0"));
    if (s.ok()) {
      auto reader = Open(pkgs[3]);
      s = h->Stage(reader, Spec(pkgs[3]), {});
    }
    if (s.ok()) s = h->Discard("pkg", V("4.0.0"));
    const bool crashed = !s.ok();
    if (crashed) {
      ASSERT_TRUE(ffs.crashed()) << s.error().message();
    }
    ffs.Restart();
    EXPECT_EQ(ActiveOf(*h, "pkg"), V("3.0.0"));
    ASSERT_OK(h->Commit("pkg", V("3.0.0")));
    ASSERT_OK(h->Discard("pkg", V("4.0.0")));
    if (kind == HandlerKind::kImage) {
      EXPECT_FALSE(fs::exists(Pkg("pkg") / "staged"));
      // Staging 4.0.0 overwrote 2.0.0's slot: then 2.0.0 must no longer be offered (nor its meta kept).
      auto active = Json::parse(ReadAll(Pkg("pkg") / "active"));
      if (active.contains("previous")) {
        EXPECT_EQ(ReadAll(Pkg("pkg") / ("image-" + active["previous"]["slot"].get<std::string>())), "v2.0.0");
        EXPECT_EQ(packages::testing::ListDir(kept), (std::vector<std::string>{"2.0.0", "3.0.0"})) << "n=" << n;
      } else {
        EXPECT_EQ(packages::testing::ListDir(kept), (std::vector<std::string>{"3.0.0"})) << "n=" << n;
      }
    } else {
      EXPECT_EQ(packages::testing::ListDir(kept), (std::vector<std::string>{"2.0.0", "3.0.0"})) << "n=" << n;
    }
    if (!crashed) break;
    ++crashes;
    ASSERT_LT(n, 200u);
  }
  EXPECT_GT(crashes, 0);
}

INSTANTIATE_TEST_SUITE_P(Kinds, CrashTest,
                         ::testing::Values(HandlerKind::kFiles, HandlerKind::kImage, HandlerKind::kModule),
                         [](const ::testing::TestParamInfo<HandlerKind>& p) {
                           return std::string(HandlerKindName(p.param));
                         });

}  // namespace
}  // namespace upkeep::agent
