// Shared helpers of the keyserver tests: assertion macros for Expected, a temporary directory,
// and a state directory made with fast (test-only) Argon2id parameters.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <string>

#include "upkeep/common/files.hpp"
#include "upkeep/keyserver/state.hpp"

#define KS_ASSERT_OK(expr)                                        \
  do {                                                            \
    auto&& ks_assert_r = (expr);                                  \
    ASSERT_TRUE(ks_assert_r.ok()) << ks_assert_r.error().message(); \
  } while (0)

#define KS_AOA_IMPL(tmp, decl, expr)              \
  auto tmp = (expr);                              \
  ASSERT_TRUE(tmp.ok()) << tmp.error().message(); \
  decl = std::move(tmp).value()
#define KS_ASSERT_OK_AND_ASSIGN(decl, expr) KS_AOA_IMPL(UPK_CONCAT(ks_aoa_, __LINE__), decl, expr)

namespace upkeep::keyserver::test {

class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "keyserver-test-XXXXXX").string();
    char* made = ::mkdtemp(tmpl.data());
    if (made != nullptr) path_ = made;
  }
  ~TempDir() {
    std::error_code ec;
    if (!path_.empty()) std::filesystem::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline constexpr const char* kPassphrase = "correct horse battery staple";

inline trust::KeyWrapping TestWrapping(const char* passphrase = kPassphrase) {
  return trust::KeyWrapping::Passphrase(passphrase, trust::KdfParams::FastForTests());
}

inline std::string ReadToken(const std::filesystem::path& file) {
  auto text = ReadFileBounded(file, 4096);
  if (!text.ok()) return "";
  std::string t = *text;
  while (!t.empty() && t.back() == '\n') t.pop_back();
  return t;
}

}  // namespace upkeep::keyserver::test
