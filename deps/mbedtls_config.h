/*
 * deps/mbedtls_config.h: the mbedTLS 3.6 configuration of the static build.
 *
 * mk/static.mk copies this file over include/mbedtls/mbedtls_config.h of
 * the mbedTLS source before building it, so the library, libcurl, civetweb
 * and otp_demo all compile against the same structure layouts.
 *
 * What it keeps: TLS 1.2 and 1.3, client (libcurl -> SMS API) and server
 * (civetweb's HTTPS listener); ECDHE key exchange only, with ECDSA or RSA
 * certificates; AES-GCM and ChaCha20-Poly1305; X.509 parsing (CA bundles,
 * our own certificate) and writing (the self-signed certificate made on
 * first start); PSA crypto (TLS 1.3 runs on it); threads (civetweb's
 * workers share one DRBG).
 *
 * What it drops, on purpose: CBC and every non-AEAD suite, RSA key
 * exchange, (EC)DH-static and PSK, TLS 1.0/1.1 (not in 3.6 at all),
 * renegotiation, DTLS, session tickets, SHA-1 and MD5 (libcurl needs MD5
 * only for digest and NTLM auth, which it is built without), self tests
 * and error strings. Anything not named here is
 * off: this file replaces the default configuration, it does not amend it.
 *
 * Do not include check_config.h from here: mbedTLS includes it after this
 * file and after the PSA adjustments (build_info.h).
 */
#ifndef OTP_MBEDTLS_CONFIG_H
#define OTP_MBEDTLS_CONFIG_H

/* ---- platform ------------------------------------------------------- */
#define MBEDTLS_HAVE_ASM
#define MBEDTLS_HAVE_TIME
#define MBEDTLS_HAVE_TIME_DATE          /* certificate validity */
#define MBEDTLS_FS_IO                   /* CA bundle, cert and key files */
#define MBEDTLS_NET_C                   /* civetweb's bio callbacks */
#define MBEDTLS_THREADING_C
#define MBEDTLS_THREADING_PTHREAD
/* Entropy comes from the OS (getrandom, else /dev/urandom): the default
 * platform source, so MBEDTLS_NO_PLATFORM_ENTROPY stays undefined. */
#define MBEDTLS_ENTROPY_C
#define MBEDTLS_CTR_DRBG_C
#define MBEDTLS_HMAC_DRBG_C             /* deterministic ECDSA */

/* ---- big numbers and elliptic curves -------------------------------- */
#define MBEDTLS_BIGNUM_C
#define MBEDTLS_ECP_C
#define MBEDTLS_ECDH_C
#define MBEDTLS_ECDSA_C
#define MBEDTLS_ECDSA_DETERMINISTIC     /* no nonce from a weak RNG */
#define MBEDTLS_ECP_NIST_OPTIM          /* handshakes on router CPUs */
/* X25519 is what browsers and curl offer first; P-256 and P-384 cover the
 * certificates of public CAs and of our own P-256 certificate. */
#define MBEDTLS_ECP_DP_SECP256R1_ENABLED
#define MBEDTLS_ECP_DP_SECP384R1_ENABLED
#define MBEDTLS_ECP_DP_CURVE25519_ENABLED
/* Precomputed comb tables for every curve cost ~10 KB of code for faster
 * signing; one handshake signature per connection does not need them. */
#define MBEDTLS_ECP_FIXED_POINT_OPTIM 0
/* RSA only verifies: public CAs and many API servers still use RSA. */
#define MBEDTLS_RSA_C
#define MBEDTLS_PKCS1_V15
#define MBEDTLS_PKCS1_V21               /* RSA-PSS, required by TLS 1.3 */

/* ---- symmetric crypto and hashes ------------------------------------ */
#define MBEDTLS_CIPHER_C
#define MBEDTLS_AES_C
#define MBEDTLS_AESNI_C                 /* x86_64 only, detected at run time */
#define MBEDTLS_AESCE_C                 /* aarch64 only, detected at run time */
#define MBEDTLS_GCM_C
#define MBEDTLS_CHACHA20_C
#define MBEDTLS_POLY1305_C
#define MBEDTLS_CHACHAPOLY_C
#define MBEDTLS_MD_C                    /* HMAC, the TLS 1.2 PRF */
#define MBEDTLS_SHA256_C
#define MBEDTLS_SHA384_C
#define MBEDTLS_SHA512_C                /* CA chains signed with SHA-512 */
#define MBEDTLS_HKDF_C                  /* TLS 1.3 key schedule */

/* ---- PSA (TLS 1.3 is built on it; psa_crypto_init() first in main) -- */
#define MBEDTLS_PSA_CRYPTO_C
#define MBEDTLS_USE_PSA_CRYPTO

/* ---- ASN.1, PEM, keys and certificates ------------------------------ */
#define MBEDTLS_ASN1_PARSE_C
#define MBEDTLS_ASN1_WRITE_C
#define MBEDTLS_OID_C
#define MBEDTLS_BASE64_C
#define MBEDTLS_PEM_PARSE_C
#define MBEDTLS_PEM_WRITE_C             /* self-signed certificate on first start */
#define MBEDTLS_PK_C
#define MBEDTLS_PK_PARSE_C
#define MBEDTLS_PK_WRITE_C
#define MBEDTLS_X509_USE_C
#define MBEDTLS_X509_CRT_PARSE_C
#define MBEDTLS_X509_CREATE_C
#define MBEDTLS_X509_CRT_WRITE_C
#define MBEDTLS_X509_RSASSA_PSS_SUPPORT /* else TLS 1.3 + RSA server aborts */
#define MBEDTLS_X509_REMOVE_INFO        /* no text dumps of certificates */

/* ---- TLS ------------------------------------------------------------ */
#define MBEDTLS_SSL_TLS_C
#define MBEDTLS_SSL_CLI_C
#define MBEDTLS_SSL_SRV_C
#define MBEDTLS_SSL_PROTO_TLS1_2
#define MBEDTLS_SSL_PROTO_TLS1_3
#define MBEDTLS_SSL_TLS1_3_KEY_EXCHANGE_MODE_EPHEMERAL_ENABLED
#define MBEDTLS_SSL_TLS1_3_COMPATIBILITY_MODE /* middleboxes */
#define MBEDTLS_SSL_KEEP_PEER_CERTIFICATE     /* needed by the TLS 1.3 client */
#define MBEDTLS_KEY_EXCHANGE_ECDHE_ECDSA_ENABLED
#define MBEDTLS_KEY_EXCHANGE_ECDHE_RSA_ENABLED
#define MBEDTLS_SSL_EXTENDED_MASTER_SECRET    /* RFC 7627, TLS 1.2 */
#define MBEDTLS_SSL_SERVER_NAME_INDICATION    /* API hosts behind CDNs */
#define MBEDTLS_SSL_ALL_ALERT_MESSAGES
/* The default suite list, in preference order. Only ECDHE + AEAD; the
 * civetweb patch 0003 sets the same policy at run time, which is what holds
 * against a system mbedTLS 2.28 in the dynamic build. */
#define MBEDTLS_SSL_CIPHERSUITES                          \
	MBEDTLS_TLS1_3_AES_128_GCM_SHA256,                    \
	MBEDTLS_TLS1_3_CHACHA20_POLY1305_SHA256,              \
	MBEDTLS_TLS1_3_AES_256_GCM_SHA384,                    \
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,      \
	MBEDTLS_TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,        \
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, \
	MBEDTLS_TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,  \
	MBEDTLS_TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,      \
	MBEDTLS_TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384

#endif /* OTP_MBEDTLS_CONFIG_H */
