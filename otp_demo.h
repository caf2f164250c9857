/*
 * otp_demo.h: SMS one-time-passcode verification for civetweb programs.
 *
 * One instance holds its own configuration, code table, rate limits and SMS
 * sender; nothing is global, so two instances can live in one process.
 *
 *	char err[256];
 *	struct otp *o = otp_create("config.cfg", err, sizeof(err));
 *	if (o == NULL) { fprintf(stderr, "%s\n", err); exit(78); }
 *	otp_on_verified(o, my_callback, my_arg);
 *	otp_mount(o, ctx, "/2fa");	// after mg_start()
 *	...
 *	otp_stop(o);			// end SMS sends in flight,
 *	mg_stop(ctx);			// stop serving,
 *	otp_destroy(o);			// then free the instance
 *
 * Every exported symbol starts with otp_.
 */
#ifndef OTP_DEMO_H
#define OTP_DEMO_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

struct mg_context;
struct otp;

/*
 * Called on a worker thread after a successful verification. phone is the
 * verified E.164 number, session the new session id given to the browser.
 * Both strings are valid only during the call.
 */
typedef void (*otp_verified_fn)(void *arg, const char *phone,
                                const char *session);

/*
 * Creates an instance from a config file (NULL: defaults and OTP_*
 * environment variables only). Returns NULL and writes one line such as
 * "config.cfg:5: TOKEN_LENGTH must be 1..16" into err on failure.
 * Call curl_global_init() (and, with mbedTLS 3, psa_crypto_init()) before.
 * It makes the whole process non-dumpable (PR_SET_DUMPABLE 0: no core
 * dumps, no ptrace by other users), since a dump would hold codes.
 * With LOG stderr it starts a thread that writes the instance's log
 * lines (whole lines, one write(2) per batch).
 * Mount it on a context started with decode_url=no, so that each page
 * has one spelling (otp_mount logs a warning otherwise).
 */
struct otp *otp_create(const char *config_path, char *err, size_t errlen);

/* Registers the handlers under prefix ("" or "/2fa") on ctx. 0 or -1. */
int otp_mount(struct otp *otp, struct mg_context *ctx, const char *prefix);

/*
 * Re-reads the config (as SIGHUP does in otp_demo): on success the new
 * values apply to the next request, while requests in flight finish with
 * the config they started with (a reload never waits for them); pending
 * codes stay. Keys that need a restart (LISTEN, THREADS, MAX_PENDING,
 * CERT_FILE, STATE_DIR, LOG, WWW_DIR, STORE, STORE_PASSWORD,
 * STORE_PASSWORD_FILE, STORE_TIMEOUT) keep their old values. On failure,
 * returns -1 with the reason in err and the old config stays. Call it
 * from one thread at a time.
 */
int otp_reload(struct otp *otp, const char *config_path, char *err,
               size_t errlen);

/*
 * For TLS listeners (a LISTEN entry ending in 's'): makes sure CERT_FILE
 * exists, writing a self-signed EC P-256 certificate and key (mode 0600)
 * if not, and logs its SHA-256 fingerprint. 0, or -1 with the reason logged.
 */
int otp_cert_ensure(struct otp *otp);

/* Sets the success callback (NULL to clear). */
void otp_on_verified(struct otp *otp, otp_verified_fn fn, void *arg);

/*
 * Ends the SMS sends in flight (a gateway that does not answer, a command
 * that hangs: they fail at once) and every later one, and the webhook try
 * in flight, so that mg_stop() need not wait up to SMS_TIMEOUT for them.
 * Call it just before mg_stop().
 */
void otp_stop(struct otp *otp);

/* Frees everything (webhook events still queued are lost; log lines
 * still queued are written first); call after mg_stop() of every
 * context it was mounted on. */
void otp_destroy(struct otp *otp);

/* The version string, e.g. "0.1.0". */
const char *otp_version(void);

#ifdef __cplusplus
}
#endif

#endif /* OTP_DEMO_H */
