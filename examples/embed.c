/*
 * examples/embed.c: a civetweb program with its own admin page that adds
 * SMS verification under /2fa/ through otp_demo's embedding API.
 *
 *	embed [-c config.cfg] [-l 127.0.0.1:8080]
 *
 *	-c FILE    otp_demo config (same keys as otp_demo's config.cfg; its
 *	           LISTEN is not used here). Without it: defaults and OTP_*
 *	           environment variables only.
 *	-l PORTS   civetweb listening_ports for this program (port 0 picks a
 *	           free one; the bound port is logged).
 *
 * Built by `make examples` (build/examples/embed) from otp_demo.c compiled
 * with -DOTP_NO_MAIN, civetweb and the libraries otp_demo links with.
 * What a host program does, in order:
 *
 *	1. init the libraries: psa_crypto_init (mbedTLS 3), curl_global_init,
 *	   mg_init_library;
 *	2. otp_create from a config, otp_on_verified for the callback;
 *	3. mg_start its own server, add its own handlers, otp_mount under a
 *	   prefix;
 *	4. on SIGTERM/SIGINT: otp_stop (SMS sends in flight end now), mg_stop
 *	   (no request is running after it), then otp_destroy, then the
 *	   library cleanups.
 */

#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <curl/curl.h>
#include <mbedtls/version.h>
#if MBEDTLS_VERSION_MAJOR >= 3
#include <psa/crypto.h>
#endif

#include "civetweb.h"
#include "otp_demo.h"

#define EMBED_PREFIX "/2fa"
#define EMBED_MAX_PORTS 8

#define EMBED_CSP "default-src 'none'; style-src 'self'; " \
		  "frame-ancestors 'none'; base-uri 'none'"

static const char admin_page[] =
    "<!doctype html>\n"
    "<html lang=\"en\">\n"
    "<head><meta charset=\"utf-8\"><title>Admin</title></head>\n"
    "<body>\n"
    "<h1>Admin</h1>\n"
    "<p>Settings of this appliance. Verify your phone number first:</p>\n"
    "<p><a href=\"" EMBED_PREFIX "/\">Verify by SMS</a></p>\n"
    "</body>\n"
    "</html>\n";

/*
 * One line on stderr in otp_demo's format: "TIME level embed: message".
 * A message longer than the buffer is cut: it is only a log line.
 */
static void
embed_log(const char *level, const char *fmt, ...)
{
	char line[512], stamp[32];
	struct tm tm;
	time_t t = time(NULL);
	va_list ap;

	gmtime_r(&t, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%s %s embed: %s\n", stamp, level, line);
}

/*
 * +12015550123 -> +*********23: only the last 2 digits, as otp_demo logs
 * numbers (otp_demo also keeps the calling code, which takes its
 * numbering table to find).
 */
static void
embed_mask(const char *phone, char *out, size_t outlen)
{
	size_t n = strlen(phone);

	if (n < 6 || phone[0] != '+')
		snprintf(out, outlen, "+***");
	else
		snprintf(out, outlen, "+%.*s%s", (int)(n - 3),
		    "****************", phone + n - 2);
}

/*
 * otp_demo calls this on a worker thread after a successful verification.
 * A real program would mark the session as trusted here; phone and session
 * are valid only during the call, and neither is logged in full.
 */
static void
embed_on_verified(void *arg, const char *phone, const char *session)
{
	atomic_ulong *count = arg;
	char masked[32];
	unsigned long n;

	(void)session;
	n = atomic_fetch_add(count, 1) + 1;
	embed_mask(phone, masked, sizeof(masked));
	embed_log("info", "verified %s (verification %lu)", masked, n);
}

/* GET / : the program's own page. Anything else not under /2fa is 404. */
static int
embed_admin(struct mg_connection *conn, void *arg)
{
	const struct mg_request_info *ri = mg_get_request_info(conn);
	const char *body = admin_page;
	int status = 200;
	char len[32];

	(void)arg;
	if (strcmp(ri->local_uri, "/") != 0) {
		status = 404;
		body = "Not found\n";
	} else if (strcmp(ri->request_method, "GET") != 0 &&
	    strcmp(ri->request_method, "HEAD") != 0) {
		status = 405;
		body = "Method not allowed\n";
	}
	snprintf(len, sizeof(len), "%zu", strlen(body));
	mg_response_header_start(conn, status);
	mg_response_header_add(conn, "Content-Type", status == 200 ?
	    "text/html; charset=utf-8" : "text/plain; charset=utf-8", -1);
	mg_response_header_add(conn, "Content-Length", len, -1);
	mg_response_header_add(conn, "Cache-Control", "no-store", -1);
	mg_response_header_add(conn, "Content-Security-Policy", EMBED_CSP, -1);
	mg_response_header_add(conn, "X-Content-Type-Options", "nosniff", -1);
	if (status == 405)
		mg_response_header_add(conn, "Allow", "GET, HEAD", -1);
	mg_response_header_send(conn);
	if (strcmp(ri->request_method, "HEAD") != 0)
		mg_write(conn, body, strlen(body));
	return status;
}

static int
embed_civetweb_log(const struct mg_connection *conn, const char *message)
{
	(void)conn;
	embed_log("warn", "civetweb: %s", message);
	return 1;
}

/* Logs each bound port as "listening on http://HOST:PORT". */
static void
embed_log_ports(struct mg_context *ctx, const char *listen)
{
	struct mg_server_port ports[EMBED_MAX_PORTS];
	int n = mg_get_server_ports(ctx, EMBED_MAX_PORTS, ports);
	const char *colon = strrchr(listen, ':');
	int hostlen = colon != NULL ? (int)(colon - listen) : 0;

	/* Only the first entry's host is known; enough for one listener. */
	if (hostlen == 0 || strchr(listen, ',') != NULL) {
		listen = "0.0.0.0";
		hostlen = 7;
	}
	for (int i = 0; i < n; i++)
		embed_log("info", "listening on http://%.*s:%d", hostlen, listen,
		    ports[i].port);
}

int
main(int argc, char **argv)
{
	const char *config = NULL, *listen = "127.0.0.1:8080";
	static atomic_ulong verified;
	struct mg_callbacks cb;
	struct mg_context *ctx = NULL;
	struct otp *otp = NULL;
	char err[512];
	sigset_t sigs;
	int sig = 0, rc = 1;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			config = argv[++i];
		} else if (strcmp(argv[i], "-l") == 0 && i + 1 < argc) {
			listen = argv[++i];
		} else {
			fprintf(stderr, "usage: embed [-c config.cfg] "
			    "[-l 127.0.0.1:8080]\n");
			return 64;
		}
	}

	/* Signals go to sigwait() below; workers inherit the mask. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

#if MBEDTLS_VERSION_MAJOR >= 3
	if (psa_crypto_init() != PSA_SUCCESS) {
		embed_log("err", "psa_crypto_init failed");
		return 1;
	}
#endif
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		embed_log("err", "curl_global_init failed");
		return 1;
	}
	mg_init_library(0);

	if ((otp = otp_create(config, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		rc = 78;
		goto out;
	}
	otp_on_verified(otp, embed_on_verified, &verified);

	{
		const char *opts[] = {
			"listening_ports", listen,
			"num_threads", "4",
			"request_timeout_ms", "5000",
			/* otp_demo routes on the path as it was sent, so
			 * that each page has one spelling. */
			"decode_url", "no",
			NULL,
		};

		memset(&cb, 0, sizeof(cb));
		cb.log_message = embed_civetweb_log;
		if ((ctx = mg_start(&cb, NULL, opts)) == NULL) {
			embed_log("err", "cannot start the server on %s", listen);
			goto out;
		}
	}
	mg_set_request_handler(ctx, "/", embed_admin, NULL);
	if (otp_mount(otp, ctx, EMBED_PREFIX) != 0) {
		embed_log("err", "otp_mount %s failed", EMBED_PREFIX);
		goto out;
	}
	embed_log("info", "otp_demo %s mounted at %s/", otp_version(),
	    EMBED_PREFIX);
	embed_log_ports(ctx, listen);

	sigwait(&sigs, &sig);
	embed_log("info", "signal %d: stopping", sig);
	rc = 0;
out:
	otp_stop(otp);    /* sends in flight end: mg_stop need not wait */
	if (ctx != NULL)
		mg_stop(ctx); /* no handler runs after this returns */
	otp_destroy(otp); /* NULL is fine */
	mg_exit_library();
	curl_global_cleanup();
	return rc;
}
