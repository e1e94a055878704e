/* Unit-test TLS identity: a self-signed ECDSA P-256 certificate (its own CA) with a
 * server context, the certificate written to a private temporary file. */
#ifndef PHY_TEST_TLS_H
#define PHY_TEST_TLS_H

#include <stdio.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "testutil.h"

/* Makes the identity for cn with subjectAltName san (e.g. "DNS:x,IP:127.0.0.1"), valid
 * from now+not_before to now+not_after seconds; writes the PEM certificate to a new
 * file whose path goes into ca_path (cap bytes) and returns a server SSL_CTX using it
 * (caller frees). */
static inline SSL_CTX *test_tls_identity(const char *cn, const char *san, long not_before,
                                         long not_after, char *ca_path, size_t cap)
{
    EVP_PKEY *key = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    X509V3_CTX v3;
    X509_EXTENSION *ext;
    SSL_CTX *ctx = NULL;
    FILE *f = NULL;
    int fd = -1;

    if (!key || !cert)
        goto out;
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 1);
    X509_gmtime_adj(X509_getm_notBefore(cert), not_before);
    X509_gmtime_adj(X509_getm_notAfter(cert), not_after);
    X509_set_pubkey(cert, key);
    X509_NAME *name = X509_get_subject_name(cert);
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
    X509_set_issuer_name(cert, name);
    X509V3_set_ctx_nodb(&v3);
    X509V3_set_ctx(&v3, cert, cert, NULL, NULL, 0);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_subject_alt_name, san);
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    ext = X509V3_EXT_conf_nid(NULL, &v3, NID_basic_constraints, "critical,CA:TRUE");
    X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    if (X509_sign(cert, key, EVP_sha256()) <= 0 ||
        !test_tmp_template(ca_path, cap, "phy-test-ca-") || (fd = mkstemp(ca_path)) < 0 ||
        !(f = fdopen(fd, "w")))
        goto out;
    fd = -1;
    PEM_write_X509(f, cert);
    ctx = SSL_CTX_new(TLS_server_method());
    if (ctx && (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, key) != 1)) {
        SSL_CTX_free(ctx);
        ctx = NULL;
    }
out:
    if (f)
        fclose(f);
    if (fd >= 0)
        close(fd);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
}

#endif
