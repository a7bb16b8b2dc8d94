// Test support only (library upkeep_net_testing, never linked into a daemon): writes a fresh
// self-signed ECDSA P-256 certificate and its private key as PEM files, for TLS tests and
// benchmarks on loopback. The certificate names "localhost", 127.0.0.1 and ::1 and is valid from
// an hour ago for one day. Thread-safe (no shared state).
#pragma once

#include <filesystem>
#include <string>

#include "upkeep/common/error.hpp"

namespace upkeep::net::testing {

struct CertificateFiles {
  std::filesystem::path certificate;  // PEM certificate (also the trust anchor clients load)
  std::filesystem::path private_key;  // PEM private key, mode 0600
};

Expected<CertificateFiles> WriteSelfSignedCertificate(const std::filesystem::path& dir,
                                                      const std::string& common_name = "localhost");

}  // namespace upkeep::net::testing
