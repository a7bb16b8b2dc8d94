#include "upkeep/net/testing_cert.hpp"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include <cstdio>
#include <memory>

namespace upkeep::net::testing {
namespace {

struct Free {
  void operator()(EVP_PKEY* p) const { EVP_PKEY_free(p); }
  void operator()(X509* p) const { X509_free(p); }
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
  void operator()(BIO* p) const { BIO_free(p); }
};

Error SslError(const std::string& what) {
  return Error(Errc::kInternal, "self-signed certificate: " + what + " failed");
}

Status WritePem(const std::filesystem::path& path, bool is_key, EVP_PKEY* key, X509* cert) {
  std::unique_ptr<BIO, Free> bio(BIO_new_file(path.c_str(), "w"));
  if (!bio) return Error(Errc::kIo, path.string() + ": cannot create");
  int ok = is_key ? PEM_write_bio_PrivateKey(bio.get(), key, nullptr, nullptr, 0, nullptr, nullptr)
                  : PEM_write_bio_X509(bio.get(), cert);
  if (ok != 1) return Error(Errc::kIo, path.string() + ": cannot write PEM");
  return OkStatus();
}

}  // namespace

Expected<CertificateFiles> WriteSelfSignedCertificate(const std::filesystem::path& dir,
                                                      const std::string& common_name) {
  std::unique_ptr<EVP_PKEY, Free> key(EVP_PKEY_Q_keygen(nullptr, nullptr, "EC", "P-256"));
  if (!key) return SslError("key generation");
  std::unique_ptr<X509, Free> cert(X509_new());
  if (!cert) return SslError("X509_new");
  X509_set_version(cert.get(), X509_VERSION_3);
  ASN1_INTEGER_set(X509_get_serialNumber(cert.get()), 1);
  X509_gmtime_adj(X509_getm_notBefore(cert.get()), -3600);
  X509_gmtime_adj(X509_getm_notAfter(cert.get()), 24 * 3600);
  X509_set_pubkey(cert.get(), key.get());
  X509_NAME* name = X509_get_subject_name(cert.get());
  X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, reinterpret_cast<const unsigned char*>(common_name.c_str()),
                             -1, -1, 0);
  X509_set_issuer_name(cert.get(), name);
  std::string san = "DNS:" + common_name + ",IP:127.0.0.1,IP:::1";
  std::unique_ptr<X509_EXTENSION, Free> ext(
      X509V3_EXT_conf_nid(nullptr, nullptr, NID_subject_alt_name, san.c_str()));
  if (!ext || X509_add_ext(cert.get(), ext.get(), -1) != 1) return SslError("subjectAltName");
  if (X509_sign(cert.get(), key.get(), EVP_sha256()) == 0) return SslError("signing");

  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) return Error(Errc::kIo, dir.string() + ": " + ec.message());
  CertificateFiles files{dir / "cert.pem", dir / "key.pem"};
  UPK_TRY(WritePem(files.certificate, false, nullptr, cert.get()));
  UPK_TRY(WritePem(files.private_key, true, key.get(), nullptr));
  std::filesystem::permissions(files.private_key, std::filesystem::perms::owner_read | std::filesystem::perms::owner_write,
                               ec);
  return files;
}

}  // namespace upkeep::net::testing
