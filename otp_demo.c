/*
 * otp_demo.c: SMS one-time passcodes served by one small binary.
 *
 * A person types a phone number into a web page, gets a code by SMS, types
 * it back, and is verified. The file reads top to bottom in the order data
 * flows through it:
 *
 *	limits, types	named numbers; every struct the sections share
 *	text		escapes (HTML, JSON, percent) and fill(), the one
 *			placeholder filler for pages, messages and bodies
 *	JSON		the reader for API bodies and gateway answers
 *	config		the tutorial's config.cfg (Python literals), OTP_* env,
 *			USERS_FILE; immutable snapshots, swapped by SIGHUP
 *			(cfg_hold)
 *	state files	STATE_DIR: checked owner and modes, atomic writes
 *	codes		random codes and their keyed hash
 *	code store	fixed-size table of pending verifications
 *	rate limits	fixed-size tables of counting windows, limits.state
 *	phone numbers	normalisation, validation, masking
 *	languages and messages	Accept-Language, MESSAGE_<lang>, SMS units
 *	processes	SMS_COMMAND: words, environment, spawn, wait
 *	the libcurl pool	handles kept with their connections
 *	SMS senders	the SENDERS table: console, telnyx, http, spool,
 *			command, each with its key check and start-up line
 *	verifications	the rules the forms and the API share; the
 *			memory store's operations (struct store_ops)
 *	redis store	STORE=redis: the same operations as Lua scripts
 *			(WITH_REDIS only)
 *	pages		templates from www/, embedded at build time
 *	HTTP replies	reply(): headers, cookies; one outcome table
 *	cookies and sessions	session ids, CSRF, handles, otp_auth,
 *			revocations (revoked.state)
 *	client address	the peer, or X-Forwarded-For from TRUSTED_PROXY
 *	forms		bodies, url-encoded fields, CSRF and origin checks
 *	the web flow	the page handlers: /, /request, /verify, /auth...
 *	JSON API	/api/v1/verifications
 *	webhooks	WEBHOOK_URL: the API's verifications as they end,
 *			queued, signed, delivered by a thread of their own
 *	upstream proxy	UPSTREAM: the rest, for verified sessions, streamed
 *	routing		one spelling per path, the route table (civetweb)
 *	embedding API	otp_create / otp_mount / otp_reload / otp_stop /
 *			otp_destroy, the sweeper thread
 *	server certificate
 *	main
 *	utilities	log_line() and its writer thread (logw_*), clocks,
 *			hex, HMAC, strings
 *
 * Nothing is allocated per request: the tables are sized once at start-up,
 * bodies and pages live in bounded stack buffers.
 *
 * Locking. Each lock guards one thing, is held for memory work only
 * (never across I/O: a send, a file, a socket), and none is taken while
 * another is held, except limits.lock then store.lock (a send's record,
 * resent or new, is made under the limits: limits_take ->
 * verification_reserve), and
 * store.lock then hooks.lock (a record that ends queues its webhook
 * event: store_end -> hook_note); hooks.lock is taken last, always.
 *	cfg_swap	the current config pointer and snapshot counts;
 *			a request holds its snapshot, not the lock
 *	store.lock	the code store's records, free list and count
 *	limits.lock	every rate table, the global windows, changes
 *	curls.lock	the idle libcurl handles
 *	revoked.lock	the revoked sessions, their floor and change count
 *	rng_lock	the CTR_DRBG
 *	stop_lock	the sweeper's stop flag (with stop_cond)
 *	hooks.lock	the webhook queue, its drop count, its stop flag
 *			(with hooks.cond)
 *	logw->lock	the log lines waiting for the writer thread, its
 *			idle and stop flags (with wake, room); held for a
 *			memcpy, the write(2) is the writer's, unlocked
 * Counters for /metrics are atomics; the DEBUG flag and the average
 * send time (send_timed) too, and whether Redis was last seen down
 * (redis_note). A worker's Redis connection is its own (a pthread key,
 * rconn_get): no lock; Redis orders the instances' scripts itself.
 */

#include "otp_demo.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <arpa/inet.h>
#include <netdb.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include <curl/curl.h>
#include <mbedtls/bignum.h>
#include <mbedtls/ctr_drbg.h>
#include <mbedtls/entropy.h>
#include <mbedtls/md.h>
#include <mbedtls/pk.h>
#include <mbedtls/sha256.h>
#include <mbedtls/version.h>
#include <mbedtls/x509_crt.h>
#if MBEDTLS_VERSION_MAJOR >= 3
#include <psa/crypto.h>
#else /* 2.28: the int-returning SHA-256 calls have a _ret suffix */
#define mbedtls_sha256_starts mbedtls_sha256_starts_ret
#define mbedtls_sha256_update mbedtls_sha256_update_ret
#define mbedtls_sha256_finish mbedtls_sha256_finish_ret
#endif

#include "civetweb.h"
#ifdef WITH_REDIS
#include <hiredis/hiredis.h>
#endif

#ifndef OTP_VERSION
#define OTP_VERSION "0.0.0-dev"
#endif

/* ---- limits ------------------------------------------------------------ */

#ifndef OTP_MAX_BODY
#define OTP_MAX_BODY 1024 /* bytes of a form POST body; more is 413 */
#endif
#ifndef OTP_BODY_TIMEOUT_MS
#define OTP_BODY_TIMEOUT_MS 5000 /* a body must arrive within this */
#endif
#ifndef OTP_REQUEST_TIMEOUT_MS
#define OTP_REQUEST_TIMEOUT_MS 5000 /* civetweb: headers, and each read */
#endif
#ifndef OTP_KEEP_ALIVE_SLICE_MS
#define OTP_KEEP_ALIVE_SLICE_MS 30 /* a busy keep-alive connection's worker */
#endif
#ifndef OTP_KEEP_ALIVE_MS
#define OTP_KEEP_ALIVE_MS 50 /* idle keep-alive before a worker is freed */
#endif
#ifndef OTP_MAX_REQUEST_HEAD
#define OTP_MAX_REQUEST_HEAD 8192 /* civetweb: request line and headers */
#endif
#define OTP_MAX_PHONE_LEN 16  /* "+" and at most 15 digits (E.164) */
#define OTP_MAX_INPUT 64      /* a phone field as typed, before cleaning */
#define OTP_MAX_SHOWN 32      /* a number as its person sees it: "+1 (201)
				 555-0123" (phone_show()), with its NUL */
#define OTP_MAX_CODE_LEN 16   /* TOKEN_LENGTH's upper bound */
#define OTP_ID_LEN 16         /* random bytes in a verification id */
#define OTP_SID_LEN 16        /* random bytes in a session id */
#define OTP_KEY_LEN 32        /* HMAC keys */
#define OTP_MAC_LEN 32        /* HMAC-SHA256 output */
#define OTP_MAX_STR 512       /* a config string value */
#define OTP_MAX_LINE 1024     /* a config file line */
#define OTP_MAX_TEXT 480      /* an SMS text after filling MESSAGE */
#define OTP_MAX_JSON 1024     /* the JSON body sent to the SMS API */
#ifndef OTP_MAX_SMS_RESPONSE
#define OTP_MAX_SMS_RESPONSE (64 * 1024) /* SMS API answer; more fails */
#endif
#define OTP_MAX_PAGE 8192     /* a rendered page */
#define OTP_MAX_HEADERS 3072  /* our response headers: 4 cookies, a
				 Location, the security headers */
#define OTP_MAX_COUNTRIES 64  /* entries in ALLOWED_COUNTRY_CODES */
#define OTP_MAX_REGIONS 256   /* rows of numbering.h's region table */
#define OTP_MAX_RETURN 256    /* a return_to path */
#define OTP_MAX_LANGS 8       /* MESSAGE_<lang> keys */
#define OTP_MAX_CATALOGS 8    /* built-in languages (www/lang/) */
#define OTP_RATE_PROBES 32    /* slots a key may live in; a key finds
				 no room only if all hold live windows */
#define OTP_RATE_MIN_SLOTS 256 /* the smallest rate-limit table */
#ifndef OTP_RATE_MAX_SLOTS
#define OTP_RATE_MAX_SLOTS (1u << 20) /* 32 MiB: the largest table */
#endif
#define OTP_RATE_LOAD 4       /* slots per window a table can hold: at a
				 load of 1/4, 32 taken probes in a row do
				 not happen with keyed hashes */
#define OTP_NET4_PREFIX 24    /* an IPv4 network, for NETWORK_SHARE */
#define OTP_NET6_PREFIX 48    /* an IPv6 network (a site) */
#define OTP_MAX_STATE (8u << 20) /* limits.state is at most this big */
#define OTP_SWEEP_MS 1000     /* expired codes are wiped within this */
#define OTP_TOMBSTONE_MS 60000 /* an ended record's state stays known */
#define OTP_SWEEP_CHUNK 1024  /* records aged per hold of the store lock */
#define OTP_MAX_POOL 64       /* pooled libcurl handles at most */
#ifndef OTP_PROXY_BUF
#define OTP_PROXY_BUF 16384   /* proxy mode: a body in flight, each way */
#endif
#define OTP_PROXY_HEAD 8192   /* the upstream's answer head; more is 502 */
#define OTP_PROXY_HEADERS 64  /* header lines in it */
#define OTP_MAX_USERS 1024    /* lines of USERS_FILE that name a user */
#define OTP_MAX_USER 32       /* a user name */
#define OTP_MAX_GROUPS 96     /* a user's groups, "admins,ops" */
#define OTP_MAX_IDENTITY 256  /* identity_headers(): four lines */
#ifndef OTP_MAX_REVOKED
#define OTP_MAX_REVOKED 1024  /* ended sessions remembered: revoked_add() */
#endif
#define OTP_MAX_COOKIE 320    /* a Set-Cookie value: otp_auth, Domain and
				 a mount prefix as Path fit */
#define OTP_AUTH_SKEW 60      /* seconds an otp_auth may seem issued in
				 the future (servers sharing STATE_DIR) */
#ifndef OTP_HOOK_QUEUE
#define OTP_HOOK_QUEUE 64     /* webhook events waiting; more drops the
				 oldest */
#endif
#define OTP_HOOK_TRIES 5      /* tries of a webhook: hook_backoff[] */
#ifndef OTP_LOG_BUF
#define OTP_LOG_BUF 65536     /* bytes of log lines waiting for the log
				 writer (x2: one filled, one written) */
#endif
#ifndef OTP_LOG_GATHER_US
#define OTP_LOG_GATHER_US 1000 /* the log writer, woken by a line, waits
				 this long for more, to write them together */
#endif
#ifndef OTP_LOG_BUSY_US
#define OTP_LOG_BUSY_US 10000 /* and this long while lines keep coming,
				 or until a buffer is half full */
#endif
#ifndef OTP_LOG_LINE
#define OTP_LOG_LINE 1024     /* a log line, newline included; longer is
				 cut */
#endif
#define OTP_MIN_SECRET 16     /* characters of WEBHOOK_SECRET at least */

#define countof(a) (sizeof(a) / sizeof((a)[0]))
#define OTP_STR(x) OTP_STR_(x) /* a limit in a message: "1024" */
#define OTP_STR_(x) #x

#define HOUR_MS (3600 * 1000LL)
#define DAY_MS (24 * HOUR_MS)

/* Exit codes from sysexits.h, spelled out for libcs without it. */
#define EXIT_USAGE 64
#define EXIT_CONFIG 78

/* ---- types ------------------------------------------------------------- */

/*
 * The SMS senders, one row each: SMS_PROVIDER's name, the check of its
 * keys when the config is loaded (NULL: none), its send, its start-up log
 * line, and whether it needs a CA bundle (/readyz checks it). A new sender
 * is a row here, its functions in "SMS senders", its keys in
 * config_keys[], and its docs (README, config.cfg.example).
 */
#define SENDERS(X)                                                        \
	X(telnyx, config_check_telnyx, send_telnyx, describe_http, true)      \
	X(http, config_check_ca, send_http, describe_http, true)              \
	X(spool, NULL, send_spool, describe_spool, false)                     \
	X(command, config_check_command, send_command, describe_command,      \
	  false)                                                              \
	X(console, NULL, send_console, describe_console, false)

#define SENDER_ENUM(name, ...) SENDER_##name,
enum sender_id { SENDERS(SENDER_ENUM) SENDER__N };
#undef SENDER_ENUM
enum alphabet { ALPHABET_HEX, ALPHABET_DIGITS };

/* A line of USERS_FILE: who a number is, for /auth's identity headers. */
struct user {
	char phone[OTP_MAX_PHONE_LEN + 1]; /* E.164; first: see user_find() */
	char name[OTP_MAX_USER + 1];       /* [A-Za-z0-9._-] */
	char groups[OTP_MAX_GROUPS + 1];   /* "" or "admins,ops" */
	int line;                          /* in the file, for errors */
};

struct config {
	char api_key[256];
	char from_number[64];
	bool debug;
	char country_code[8];
	long token_length;
	char token_alphabet[8];
	char listen[256];
	char sms_provider[16];
	char sms_api_url[OTP_MAX_STR];
	char sms_ca_file[OTP_MAX_STR];
	long sms_timeout;
	char message[OTP_MAX_STR];
	long max_pending;
	long threads;
	long code_ttl;
	long max_attempts;
	long resend_interval;
	long verify_per_ip_per_hour;
	long sms_per_number_per_hour;
	long sms_per_ip_per_hour;
	long sms_per_hour;
	long sms_per_day;
	long network_share;         /* percent of the global caps */
	long ipv6_prefix;
	long api_sms_per_hour;
	long api_sms_per_number_per_hour;
	long api_sends_per_verification;
	char allowed_country_codes[256];
	char trusted_proxy[256];
	char cert_file[OTP_MAX_STR];
	bool redirect_http;
	char api_key_file[OTP_MAX_STR];
	char api_token[128];
	long session_ttl;
	char state_dir[OTP_MAX_STR];
	long state_save_interval;
	bool metrics;
	char metrics_allow[256];
	char log[16];
	char spool_dir[OTP_MAX_STR];
	char sms_command[OTP_MAX_STR];
	char sms_command_env[256];
	char sms_http_method[8];
	char sms_http_auth[64];
	char sms_http_content_type[64];
	char sms_http_body[OTP_MAX_STR];
	char app_name[64];
	char www_dir[OTP_MAX_STR];
	char webotp_domain[128];
	char cookie_domain[128];    /* otp_auth's Domain; "": host-only */
	char lang[8];               /* the language of MESSAGE and the pages */
	char upstream[OTP_MAX_STR]; /* proxy mode: "http://host:port" */
	long upstream_timeout;
	char users_file[OTP_MAX_STR];
	char webhook_url[OTP_MAX_STR]; /* https only */
	char webhook_secret[128];
	char webhook_secret_file[OTP_MAX_STR];
	char store[OTP_MAX_STR];    /* "memory", redis://..., unix://... */
	char store_password[128];   /* never logged */
	char store_password_file[OTP_MAX_STR];
	long store_timeout;         /* ms a Redis command may take */
	struct {
		char lang[8];       /* "de", "pt_BR" */
		char text[OTP_MAX_STR];
	} messages[OTP_MAX_LANGS]; /* MESSAGE_<lang> */
	int nmessages;

	/* Derived by config_finish(). */
	atomic_uint refs;           /* holders of this snapshot: cfg_hold() */
	uint8_t api_token_mac[OTP_MAC_LEN]; /* by otp_config_keys() */
	const struct sender *sender; /* by SMS_PROVIDER, or API_KEY's presence */
	enum alphabet alphabet;
	uint8_t countries[OTP_MAX_REGIONS / 8]; /* a bit per region allowed */
	struct sockaddr_storage upstream_addr; /* UPSTREAM, resolved once */
	socklen_t upstream_len;
	struct user *users;         /* USERS_FILE, sorted by number: one
				       allocation, freed with the snapshot */
	size_t nusers;
};

/* Whose a verification is: a web session's or the JSON API's. Neither
 * can look up, resend, check or cancel the other's. */
enum ns { NS_WEB = 1, NS_API = 2 };

enum rec_state { REC_FREE, REC_LIVE, REC_LOCKED, REC_EXPIRED, REC_VERIFIED };

/* Who a verification belongs to: a namespace and, in it, a session. */
struct owner {
	enum ns ns;
	uint8_t sid[OTP_SID_LEN]; /* NS_API: the one API session */
};

/* One pending verification. The plain code is kept only so that a resend
 * can repeat it; checks use the keyed hash. */
struct record {
	uint8_t id[OTP_ID_LEN];
	uint8_t sid[OTP_SID_LEN]; /* the session it was sent for */
	uint8_t mac[OTP_MAC_LEN];
	char phone[OTP_MAX_PHONE_LEN + 1];
	char shown[OTP_MAX_SHOWN]; /* the number as typed: store_view() */
	char code[OTP_MAX_CODE_LEN + 1];
	int64_t created_ms;
	uint64_t nkey;            /* its number's rate window (limits) */
	uint32_t attempts;
	uint8_t state;
	uint8_t ns;               /* enum ns */
	uint8_t sends;            /* SMS sent for it: first and resends */
};

struct store {
	pthread_mutex_t lock;
	struct record *rec; /* cap records, mmap'd, kept out of core dumps */
	size_t rec_bytes;
	uint32_t *free;     /* stack of free slots */
	uint32_t live;      /* records with a code (live or locked) */
	int64_t full_scan_ms; /* last scan of a full table (store_add) */
	uint32_t nfree;
	uint32_t cap;
	uint32_t top;       /* slots below it have been used; above, never */
	struct hooks *hooks;  /* where the API's records' ends go, or NULL */
};

/* A counting window for one key (a number, an address, a network). */
struct window {
	uint64_t key;      /* 0: free */
	int64_t start_ms;  /* it counts sends in [start, start + period) */
	int64_t last_ms;   /* the last send, for RESEND_INTERVAL */
	uint32_t count;
	int32_t slot;      /* numbers: the newest record, or -1 */
};

/* The rate-limit tables, one row each: what they count, for how long. */
enum table {
	T_NUMBER,     /* sends per number (and namespace); resend state */
	T_ADDR,       /* sends per client address (IPv6: per IPV6_PREFIX) */
	T_NET_HOUR,   /* sends per network, hour: NETWORK_SHARE */
	T_NET_DAY,    /* sends per network, day */
	T_VERIFY,     /* wrong codes per client address */
	T__N
};

/*
 * An HMAC-SHA256 key with its padded blocks already hashed (RFC 2104):
 * an HMAC of a short input then costs two SHA-256 blocks instead of
 * four, and nothing is allocated (mbedtls_md_hmac() allocates and frees
 * a context on every call). As secret as the key; wiped with it.
 */
struct hmac_key {
	mbedtls_sha256_context inner, outer;
	uint64_t gen; /* never the same for two prepared keys; 0: none */
};

struct ratetab {
	struct window *w;
	uint32_t mask;      /* slots - 1; slots is a power of two */
	int64_t period_ms;
};

struct limits {
	pthread_mutex_t lock; /* guards every table and window below */
	struct ratetab tab[T__N];
	struct window hour, day;    /* the whole server */
	struct window api_hour;     /* the JSON API as a whole */
	uint64_t changes;           /* counts taken, for the state file */
	uint8_t key[OTP_KEY_LEN];   /* keys the tables' hashes */
	struct hmac_key hkey;       /* key, prepared (otp_hmac_keys()) */
};

/*
 * A pooled libcurl handle and its response buffer, made once and reused,
 * so its connection to the gateway stays open between sends (a TLS
 * handshake is expensive on a router) and nothing is allocated per send.
 */
struct pooled {
	CURL *h;
	CURLM *m;  /* h's own multi handle: curl_perform() */
	char *buf; /* OTP_MAX_SMS_RESPONSE bytes */
};

struct curl_pool {
	pthread_mutex_t lock;
	struct pooled idle[OTP_MAX_POOL]; /* each keeps its connection */
	int nidle;
	int cap;
};

/*
 * Ended forward-auth sessions (POST /logout), by their random id, each
 * until its cookie would have ended anyway; revoked.state on disk. A
 * fixed table: revoked_add() says what a full one does.
 */
struct revoked {
	pthread_mutex_t lock; /* guards everything below */
	struct {
		uint64_t rid;
		int64_t until; /* Unix seconds: issued + SESSION_TTL then */
	} e[OTP_MAX_REVOKED + 1]; /* + 1: the one a full table drops */
	uint32_t n;
	int64_t floor;        /* sessions that end by then are ended too */
	uint64_t changes;     /* revocations made */
	uint64_t saved;       /* changes at the last write */
};

/* Which limit refused a send or a check, for the log, page and metrics.
 * LIMIT_STORE, last: the shared store did not answer (STORE=redis only;
 * /metrics lists it only then). */
enum limit { LIMIT_NONE, LIMIT_RESEND, LIMIT_NUMBER, LIMIT_IP, LIMIT_HOUR,
	     LIMIT_DAY, LIMIT_VERIFY_IP, LIMIT_NETWORK, LIMIT_API_HOUR,
	     LIMIT_VERIFICATION, LIMIT_FULL, LIMIT_STORE, LIMIT__N };

/* How a send ended; the names label otp_sms_failed_total. */
enum send_result {
	SEND_OK,
	SEND_API_ERROR,  /* the gateway refused (4xx) */
	SEND_BUSY,       /* 429 or 503: try later */
	SEND_SERVER,     /* other 5xx */
	SEND_NETWORK,    /* connect, TLS, timeout, reset */
	SEND_BAD_ANSWER, /* 2xx that is not an acceptance, or too big */
	SEND_LOCAL,      /* our side: message too long, no memory */
	SEND__N
};

/* How a code check ended. */
enum check {
	CHECK_OK,       /* right code: the record ends verified */
	CHECK_WRONG,    /* wrong code, attempts left */
	CHECK_LOCKED,   /* too many wrong codes */
	CHECK_UNKNOWN,  /* no such record (or another session's) */
	CHECK_EXPIRED,  /* its code expired */
	CHECK_DONE,     /* already verified */
	CHECK__N
};

/* What a webhook tells: an API verification ended so. */
enum hook_event { HOOK_APPROVED, HOOK_EXPIRED, HOOK_LOCKED, HOOK__N };

/* How a webhook event ended, for /metrics. */
enum hook_result { HOOKS_DELIVERED, HOOKS_FAILED, HOOKS_DROPPED, HOOKS__N };

typedef int64_t (*clock_fn)(void);

/* Counters for /metrics; atomics, so workers never wait on them. */
struct stats {
	atomic_ulong sent;
	atomic_ulong failed[SEND__N];
	atomic_ulong checks[CHECK__N];
	atomic_ulong limited[LIMIT__N];
	atomic_ulong hooks[HOOKS__N];
};

/* A webhook event waiting for its next try. */
struct hook {
	uint64_t seq;             /* 0: a free entry; else the order made */
	int64_t due_ms;           /* monotonic: no try before */
	int64_t at_ms;            /* Unix ms: when it happened */
	uint32_t slot;            /* the record's handle: slot and id */
	uint8_t id[OTP_ID_LEN];
	char to[24];              /* the number, masked */
	uint8_t event, tries;
};

/*
 * WEBHOOK_URL's events: a fixed queue, filled under the store lock
 * (hook_note()) and emptied by one delivery thread (hooks_main()).
 */
struct hooks {
	pthread_mutex_t lock;     /* guards all below but on */
	pthread_cond_t cond;      /* an event came, or stopping */
	struct hook q[OTP_HOOK_QUEUE];
	uint64_t seq;             /* events made */
	unsigned long dropped, logged; /* drops made, and logged */
	atomic_bool on;           /* WEBHOOK_URL is set (cfg_swap()) */
	bool stopping, started;
	pthread_t thread;
	clock_fn now_ms, wall_ms; /* the instance's clocks */
};

/*
 * The log writer (LOG stderr): workers format a line and append it here
 * under lock, a memcpy; one thread (log_main()) writes what has gathered
 * with one write(2) and no lock held. Two buffers: workers fill one while
 * the other is written. Allocated once, at start (log_start_writer()).
 */
struct log_writer {
	pthread_mutex_t lock;     /* guards all below but thread */
	pthread_cond_t wake;      /* lines came to an idle writer, or stop */
	pthread_cond_t room;      /* the writer took the full buffer */
	char buf[2][OTP_LOG_BUF];
	int fill;                 /* the buffer workers append to */
	size_t len;               /* bytes waiting in buf[fill] */
	bool idle;                /* the writer waits on wake */
	bool running;             /* lines go through the writer */
	bool stopping;            /* write what is left and end */
	pthread_t thread;
};

/* A file served from memory: embedded from www/, or loaded from WWW_DIR. */
struct www_file {
	const char *name;
	const unsigned char *data;
	size_t len;
};

/*
 * Every word a person reads on the built-in pages, in the messages the
 * C code puts on them, and the default SMS: one key each, with the line
 * "key text" in each catalog www/lang/<tag>.txt ("languages and
 * messages"). TX_NONE is the empty text.
 */
#define TEXTS(X) \
	X(INDEX_TITLE, "index_title") \
	X(INDEX_HINT, "index_hint") \
	X(PHONE_LABEL, "phone_label") \
	X(SEND_CODE, "send_code") \
	X(VERIFY_TITLE, "verify_title") \
	X(CODE_SENT, "code_sent") \
	X(CODE_LABEL, "code_label") \
	X(VERIFY, "verify") \
	X(SEND_AGAIN, "send_again") \
	X(COUNTDOWN, "countdown") \
	X(OTHER_NUMBER, "other_number") \
	X(NEW_CODE_TITLE, "new_code_title") \
	X(YOUR_NUMBER, "your_number") \
	X(SEND_NEW, "send_new") \
	X(VERIFIED, "verified") \
	X(VERIFIED_TEXT, "verified_text") \
	X(LOG_OUT, "log_out") \
	X(BACK, "back") \
	X(SENT_FIRST, "sent_first") \
	X(SENT_AGAIN, "sent_again") \
	X(SENT_NEW, "sent_new") \
	X(SECOND, "second") \
	X(SECONDS, "seconds") \
	X(MINUTE, "minute") \
	X(MINUTES, "minutes") \
	X(WAIT, "wait") \
	X(WRONG_1, "wrong_1") \
	X(WRONG_N, "wrong_n") \
	X(EXPIRED, "expired") \
	X(LOCKED, "locked") \
	X(SESSION_EXPIRED, "session_expired") \
	X(GONE, "gone") \
	X(NET_LIMITED, "net_limited") \
	X(BUSY, "busy") \
	X(TOO_MANY, "too_many") \
	X(RETRY_SECONDS, "retry_seconds") \
	X(RETRY_MINUTES, "retry_minutes") \
	X(SEND_FAILED, "send_failed") \
	X(PHONE_INVALID, "phone_invalid") \
	X(PHONE_LENGTH, "phone_length") \
	X(PHONE_RANGE, "phone_range") \
	X(PHONE_COUNTRY, "phone_country") \
	X(INTERNAL_ERROR, "internal_error") \
	X(MEDIA_TYPE, "media_type") \
	X(MEDIA_TYPE_TEXT, "media_type_text") \
	X(TOO_LARGE, "too_large") \
	X(TOO_LARGE_TEXT, "too_large_text") \
	X(TIMEOUT, "timeout") \
	X(TIMEOUT_TEXT, "timeout_text") \
	X(BAD_REQUEST, "bad_request") \
	X(BAD_BODY_TEXT, "bad_body_text") \
	X(SIGN_IN, "sign_in") \
	X(SIGN_IN_TEXT, "sign_in_text") \
	X(NOT_SUPPORTED, "not_supported") \
	X(WEBSOCKET_TEXT, "websocket_text") \
	X(UPSTREAM_ERROR, "upstream_error") \
	X(UPSTREAM_DOWN_TEXT, "upstream_down_text") \
	X(UPSTREAM_TIMEOUT, "upstream_timeout") \
	X(UPSTREAM_SLOW_TEXT, "upstream_slow_text") \
	X(UPSTREAM_BAD_TEXT, "upstream_bad_text") \
	X(NOT_FOUND, "not_found") \
	X(NOT_FOUND_TEXT, "not_found_text") \
	X(METHOD, "method") \
	X(METHOD_POST_TEXT, "method_post_text") \
	X(METHOD_GET_TEXT, "method_get_text") \
	X(BAD_HOST, "bad_host") \
	X(URI_TOO_LONG, "uri_too_long") \
	X(NOT_CANONICAL, "not_canonical") \
	X(LOGGED_OUT, "logged_out") \
	X(LOGGED_OUT_TEXT, "logged_out_text") \
	X(FORM_MISSING, "form_missing") \
	X(FORM_TOO_LONG, "form_too_long") \
	X(FORM_NUL, "form_nul") \
	X(FORM_ESCAPE, "form_escape") \
	X(SMS, "sms") \
	REDIS_TEXTS(X)

/* The Redis store's texts: a binary without it is built without them too
 * (tools/embed.sh -x, tools/lz.py -x drop the "store_" lines). */
#ifdef WITH_REDIS
#define REDIS_TEXTS(X) \
	X(STORE_DOWN, "store_down") \
	X(STORE_DOWN_TEXT, "store_down_text")
#else
#define REDIS_TEXTS(X)
#define TX_STORE_DOWN TX_NONE /* OUT_STORE: only the Redis store's */
#define TX_STORE_DOWN_TEXT TX_INTERNAL_ERROR
#endif
enum text {
	TX_NONE,
#define X(id, key) TX_##id,
	TEXTS(X)
#undef X
	TX__N
};

/* A built-in language: its catalog's texts (into otp->lang_text) and
 * the built-in files with its words in (otp->builtin's order). */
struct catalog {
	char lang[8];             /* "de", from www/lang/de.txt */
	const char *text[TX__N];
	const struct www_file *files;
};

/* A translated copy from WWW_DIR (or WWW_DIR/<lang>/), loaded at start. */
struct www_page {
	char lang[8]; /* "" for WWW_DIR itself */
	struct www_file file;
};

typedef int (*rng_fn)(void *ctx, unsigned char *out, size_t len);

/*
 * Where what instances must share lives (STORE): the records, the rate
 * windows and caps, the revoked sessions. One table of operations, so the
 * rules in "verifications" are written once over two stores: "memory",
 * this process's fixed tables (the default, and the only one without
 * WITH_REDIS), and "redis", shared by every instance that names the same
 * server ("redis store"). Each operation is atomic as a whole: the memory
 * store's under its locks, Redis's as one Lua script. One that cannot
 * reach its store fails closed, as its comment says (LIMIT_STORE, -1):
 * nothing is sent uncounted, no code is accepted without its record.
 * A record's handle is (slot, id) in both; Redis's slot is always 0.
 */
struct take;
struct resend;
struct view;
struct client;
struct store_ops {
	const char *name;
	/* Checks and counts a send's limits, then resends the owner's
	 * live record or makes a new one (verification_send()): 0, or -1
	 * with rs->st saying why. */
	int (*send_begin)(struct otp *otp, const struct config *c,
	    struct take *tk, struct resend *rs);
	/* A send that failed: its record removed (or its send given
	 * back) and the number's send refunded. */
	void (*send_undo)(struct otp *otp, const struct config *c,
	    const struct resend *rs);
	/* limits_wait(): the resend countdown, 0 if unknown. */
	long (*wait)(struct otp *otp, const struct config *c,
	    const struct view *v, int64_t now);
	/* limits_verify_take() and limits_verify_undo(). */
	enum limit (*verify_take)(struct otp *otp, const struct config *c,
	    const struct client *cl, int64_t now, long *retry);
	void (*verify_undo)(struct otp *otp, const struct config *c,
	    const struct client *cl, int64_t now);
	/* store_check(): 0 with *rc and v, or -1 (nothing was checked). */
	int (*check)(struct otp *otp, const struct config *c, uint32_t slot,
	    const uint8_t id[OTP_ID_LEN], const struct owner *ow,
	    const uint8_t *mac, int64_t now, struct view *v, uint32_t *tries,
	    enum check *rc);
	/* store_view(): 0, or -1 with v empty. */
	int (*view)(struct otp *otp, const struct config *c, uint32_t slot,
	    const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
	    const char *shown, struct view *v);
	/* store_state(): 0 with *state and *left, or -1. */
	int (*state)(struct otp *otp, const struct config *c, uint32_t slot,
	    const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
	    enum rec_state *state, int64_t *left);
	/* store_cancel(): 0, -1 none, -2 ended, -3 unreachable. */
	int (*cancel)(struct otp *otp, const struct config *c, uint32_t slot,
	    const uint8_t id[OTP_ID_LEN], const struct owner *ow,
	    int64_t now);
	/* The newest live or locked record of phone in ow's namespace:
	 * 0 with its handle, -1 none, -2 unreachable. */
	int (*find)(struct otp *otp, const struct config *c, const char *phone,
	    const struct owner *ow, int64_t now, uint32_t *slot,
	    uint8_t id[OTP_ID_LEN]);
	/* revoked_add(): 1 if a full table dropped one, 0, -1. */
	int (*revoke)(struct otp *otp, const struct config *c, uint64_t rid,
	    int64_t until, int64_t now);
	/* revoked_has(): 1, 0, or -1 unreachable. */
	int (*revoked)(struct otp *otp, const struct config *c, uint64_t rid,
	    int64_t until);
	/* /readyz: 0 if the store answers now (memory: not called). */
	int (*ping)(struct otp *otp, const struct config *c);
};

struct otp {
	struct config *cfg;        /* the current snapshot: see cfg_hold() */
	pthread_mutex_t cfg_swap;  /* guards the pointer, never held for I/O */
	atomic_bool debug;         /* DEBUG, for log_debug() anywhere */
	bool use_syslog;           /* LOG is syslog (a restart-only key) */
	struct log_writer *logw;   /* LOG stderr's writer thread, or NULL:
				      log_line() writes itself */
	int halt[2];               /* a pipe, readable once otp_stop() ran */
	clock_fn now_ms;           /* monotonic; tests may replace it */
	clock_fn wall_ms;          /* Unix time, for the state file; too */
	uint64_t saved_changes;    /* limits.changes at the last save */
	int64_t saved_ms;          /* when limits.state was last written */
	int64_t revoked_retry_ms;  /* a failed revoked.state write: retried
				      then, not every round (a full disk) */
	rng_fn rng;                /* CSPRNG; tests may replace it */
	void *rng_ctx;
	pthread_mutex_t rng_lock;
	mbedtls_entropy_context entropy;
	mbedtls_ctr_drbg_context drbg;
	uint8_t code_key[OTP_KEY_LEN]; /* HMAC key for codes */
	uint8_t csrf_key[OTP_KEY_LEN]; /* HMAC key for CSRF tokens */
	uint8_t auth_key[OTP_KEY_LEN]; /* HMAC key for otp_auth cookies */
	uint8_t sid_key[OTP_KEY_LEN];  /* HMAC key inside session ids */
	uint8_t cmp_key[OTP_KEY_LEN];  /* secrets are compared as HMACs */
	struct hmac_key code_hk, csrf_hk, auth_hk, sid_hk, cmp_hk; /* the
				   keys above, prepared (otp_hmac_keys()) */
	struct owner api;              /* whose the API's records are */
#ifdef WITH_REDIS
	const struct store_ops *ops;   /* STORE, at start: store_memory or
					  store_redis (STORE_CALL()) */
	pthread_key_t redis_key;       /* a worker's connection (rconn) */
	bool redis_key_made;
	atomic_bool redis_down;        /* logged as it changes */
#endif
	struct store store;
	struct limits limits;
	struct curl_pool curls;
	struct revoked revoked;
	struct hooks hooks;
	struct stats stats;
	atomic_uint send_ms8;      /* 8 x a moving average of a send's ms,
				   for an unlisted number's pause */
	const struct www_file *builtin; /* www/, embedded: www_builtin() */
	size_t nbuiltin;
	struct www_file *unpacked; /* the static builds': builtin, owned */
	struct www_page *pages;    /* WWW_DIR copies, allocated once */
	int npages;
	char wlangs[OTP_MAX_LANGS][8]; /* WWW_DIR's languages ("pt_BR") */
	int nwlangs;
	struct catalog cats[OTP_MAX_CATALOGS]; /* built-in languages, en first */
	int ncats;
	char *lang_text;           /* the catalogs' text, owned */
	struct www_file *lang_files; /* their files, the pages localized:
				   lang_load(), owned */
	char prefix[64];           /* mount point, "" for the root */
	int https_port;            /* REDIRECT_HTTP target, 0: none */
	otp_verified_fn on_verified;
	void *on_verified_arg;
	pthread_t sweeper;
	pthread_mutex_t stop_lock;
	pthread_cond_t stop_cond;
	bool stopping, sweeper_started;
	bool check_only;           /* otp_demo -t: write nothing */
};

/* Utilities, defined at the end of the file. */
static void log_line(const struct otp *otp, const char *level,
                     const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void log_escape(const char *in, size_t len, char *out, size_t outlen);
static void write_all(int fd, const char *buf, size_t len);
static bool logw_put(struct log_writer *w, const char *line, size_t n);
static void logw_gather(struct log_writer *w, long us);
static int logw_start(struct otp *otp);
static void logw_stop(struct otp *otp);
static void logw_free(struct log_writer *w);
static int64_t clock_ms(clockid_t id);
static int64_t clock_monotonic_ms(void);
static int64_t clock_wall_ms(void);
static void time_rfc3339(int64_t sec, char out[24]);
static void deadline_in(struct timespec *ts, int64_t us);
static void hex_encode(const uint8_t *in, size_t len, char *out, bool upper);
static int hex_decode(const char *in, size_t len, uint8_t *out);
static bool ct_equal(const void *a, const void *b, size_t len);
static void secret_mac(const struct otp *otp, const void *in, size_t len,
                       uint8_t out[OTP_MAC_LEN]);
static void wipe(void *p, size_t len);
static void thread_poke(pthread_mutex_t *m, pthread_cond_t *c, bool *flag);
static int str_copy(char *dst, size_t size, const char *src);
static bool addr_parse(const char *s, size_t len, uint8_t out[17]);
static int str_ncopy(char *dst, size_t size, const char *src, size_t n);
static int parse_long(const char *s, long min, long max, long *out);
static int hmac256(const uint8_t *key, const void *in, size_t len,
                   uint8_t out[OTP_MAC_LEN]);
static void hmac_key_init(struct hmac_key *hk, const uint8_t *key);
static int hmac_keyed(const struct hmac_key *hk, const void *in, size_t len,
                      uint8_t out[OTP_MAC_LEN]);
static int hmac_memo(const struct hmac_key *hk, const void *in, size_t len,
                     uint8_t out[OTP_MAC_LEN]);
static unsigned edit_distance(const char *a, const char *b);
static int file_write_atomic(const char *path, const char *data, size_t len,
                             mode_t mode);
static void buf_printf(char *buf, size_t cap, size_t *n, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static long inflate_raw(const unsigned char *in, size_t n, char *out,
                        size_t cap) __attribute__((unused));
static const char *prefix_skip(const char *s, const char *lit, size_t n,
                               bool any_case);
static bool list_next(const char **p, char sep, const char **item,
                      size_t *len);
static int list_item(const char **p, char *item, size_t size);

/* The rest of s after the literal prefix lit (its length counted by the
 * compiler), or NULL if s does not start with it. */
#define PREFIX(s, lit) prefix_skip((s), "" lit, sizeof(lit) - 1, false)
#define PREFIX_CI(s, lit) prefix_skip((s), "" lit, sizeof(lit) - 1, true)

#define log_info(o, ...) log_line((o), "info", __VA_ARGS__)
#define log_warn(o, ...) log_line((o), "warn", __VA_ARGS__)
#define log_err(o, ...) log_line((o), "error", __VA_ARGS__)
#define log_debug(o, ...)                                                     \
	do {                                                                  \
		if ((o) != NULL && atomic_load(&(o)->debug))                  \
			log_line((o), "debug", __VA_ARGS__);                  \
	} while (0)

/* ---- text: escapes and placeholders ------------------------------------ */

/* Appends s to out (outlen bytes, *n used so far), escaped for where it
 * goes. 0, or -1 if it does not fit. */
typedef int (*escape_fn)(const char *s, char *out, size_t outlen, size_t *n);

static int
out_put(char *out, size_t outlen, size_t *n, const char *s, size_t len)
{
	if (*n + len >= outlen)
		return -1;
	memcpy(out + *n, s, len);
	*n += len;
	out[*n] = '\0';
	return 0;
}

static int
esc_none(const char *s, char *out, size_t outlen, size_t *n)
{
	return out_put(out, outlen, n, s, strlen(s));
}

/* A run of characters that need no escape is copied at once. */
static int
html_escape(const char *s, char *out, size_t outlen, size_t *n)
{
	while (*s != '\0') {
		size_t run = strcspn(s, "&<>\"'");
		const char *rep = *s == '&' ? "&amp;" : *s == '<' ? "&lt;" :
		    *s == '>' ? "&gt;" : *s == '"' ? "&quot;" : "&#39;";

		if (run > 0 ? out_put(out, outlen, n, s, run) != 0 :
		    out_put(out, outlen, n, rep, strlen(rep)) != 0)
			return -1;
		s += run > 0 ? run : 1;
	}
	return 0;
}

/* The body of a JSON string (no quotes around it). */
static int
json_escape(const char *s, char *out, size_t outlen, size_t *n)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		char esc[8] = { '\\', (char)ch, '\0' };

		if (ch == '\n')
			esc[1] = 'n';
		else if (ch < 0x20 || ch == 0x7f)
			snprintf(esc, sizeof(esc), "\\u%04x", ch);
		else if (ch != '"' && ch != '\\')
			memmove(esc, esc + 1, 2);
		if (out_put(out, outlen, n, esc, strlen(esc)) != 0)
			return -1;
	}
	return 0;
}

/* A Prometheus label value: \\, " and a newline are escaped, as the text
 * format wants; every other byte is itself there. */
static int
label_escape(const char *s, char *out, size_t outlen, size_t *n)
{
	while (*s != '\0') {
		size_t run = strcspn(s, "\\\"\n");
		char esc[2] = { '\\', *s == '\n' ? 'n' : *s };

		if (run > 0 ? out_put(out, outlen, n, s, run) != 0 :
		    out_put(out, outlen, n, esc, 2) != 0)
			return -1;
		s += run > 0 ? run : 1;
	}
	return 0;
}

/* The one percent-encoder: every byte but unreserved ones and those in
 * keep becomes %XX. */
static int
pct_escape_keep(const char *s, const char *keep, char *out, size_t outlen,
                size_t *n)
{
	for (; *s != '\0'; s++) {
		unsigned char ch = (unsigned char)*s;
		char esc[4] = { (char)ch, '\0' };

		if (!isalnum(ch) && strchr("-._~", ch) == NULL &&
		    strchr(keep, ch) == NULL)
			snprintf(esc, sizeof(esc), "%%%02X", ch);
		if (out_put(out, outlen, n, esc, strlen(esc)) != 0)
			return -1;
	}
	return 0;
}

/* A value in a form body (application/x-www-form-urlencoded). */
static int
form_escape(const char *s, char *out, size_t outlen, size_t *n)
{
	return pct_escape_keep(s, "", out, outlen, n);
}

/* A placeholder's name and its value. */
struct var {
	const char *name;
	const char *value;
};

/* The one of vars the placeholder at t (len bytes) names, or NULL. */
static const struct var *
fill_var(const char *t, size_t len, size_t width, const struct var *vars,
         size_t nvars)
{
	size_t name = 0;

	for (size_t k = 0; k < width; k++)
		if (k >= len || t[k] != '{')
			return NULL;
	/* Not islower(): a call per letter, and a locale's letters. */
	while (width + name < len && ((t[width + name] >= 'a' &&
	    t[width + name] <= 'z') || t[width + name] == '_'))
		name++;
	if (name == 0 || width + name + width > len)
		return NULL;
	for (size_t k = 0; k < width; k++)
		if (t[width + name + k] != '}')
			return NULL;
	/* The first letter first, then strncmp: most names differ in it
	 * (strlen and memcmp of every name were a tenth of a render). */
	for (size_t v = 0; v < nvars; v++)
		if (vars[v].name[0] == t[width] &&
		    strncmp(vars[v].name, t + width, name) == 0 &&
		    vars[v].name[name] == '\0')
			return &vars[v];
	return NULL;
}

/*
 * The one placeholder filler. Appends tmpl (len bytes) to out (outlen
 * bytes, *n used), each placeholder that names one of vars replaced by
 * its value through esc. A placeholder is a name of a-z and '_' between
 * width '{' and width '}': pages use {{name}}, MESSAGE and the gateway
 * bodies {name}. Strict, every width '{' must begin one (a typo in a page
 * or a MESSAGE is an error, not text); otherwise what is not one is text
 * (a JSON body's own braces). Returns how many it replaced, or -1.
 */
static int
fill(const char *tmpl, size_t len, size_t width, bool strict,
     const struct var *vars, size_t nvars, escape_fn esc, char *out,
     size_t outlen, size_t *n)
{
	int count = 0;

	if (*n >= outlen)
		return -1;
	out[*n] = '\0';
	for (size_t i = 0; i < len;) {
		const struct var *v = fill_var(tmpl + i, len - i, width, vars,
		    nvars);
		const char *brace;
		size_t run;

		if (v != NULL) {
			if (esc(v->value, out, outlen, n) != 0)
				return -1;
			i += strlen(v->name) + 2 * width;
			count++;
			continue;
		}
		if (strict && tmpl[i] == '{' && (width == 1 ||
		    (i + 1 < len && tmpl[i + 1] == '{')))
			return -1;
		/* Text up to the next '{' in one copy. */
		brace = memchr(tmpl + i + 1, '{', len - i - 1);
		run = brace != NULL ? (size_t)(brace - (tmpl + i)) : len - i;
		if (out_put(out, outlen, n, tmpl + i, run) != 0)
			return -1;
		i += run;
	}
	return count;
}

/* ---- JSON -------------------------------------------------------------- */

/*
 * A tiny JSON reader: enough for the string members of the JSON API's
 * bodies, "data" in a Telnyx answer and errors[0].code and .title in a
 * gateway's error. It never allocates and stops at depth 16; what it does
 * not understand makes it give up: a 400 for the API, a shorter log line
 * for a gateway.
 */
struct json {
	const char *p, *end;
	int depth;
};

static void
json_ws(struct json *j)
{
	while (j->p < j->end && strchr(" \t\r\n", *j->p) != NULL && *j->p)
		j->p++;
}

/*
 * The character the escape at j->p ('\\') stands for; j->p is left on its
 * last byte. \u is decoded for printable ASCII only (no phone number, code
 * or error code needs more): anything else is -1 when copying, and '?'
 * when only skipping. -1 for a broken escape.
 */
static int
json_unescape(struct json *j, bool copying)
{
	uint8_t b[2];

	if (++j->p >= j->end)
		return -1;
	switch (*j->p) {
	case '"': case '\\': case '/': return (unsigned char)*j->p;
	case 'b': return '\b';
	case 'f': return '\f';
	case 'n': return '\n';
	case 'r': return '\r';
	case 't': return '\t';
	case 'u':
		if (j->end - j->p < 5 || hex_decode(j->p + 1, 4, b) != 0)
			return -1;
		j->p += 4;
		if (b[0] == 0 && b[1] >= 0x20 && b[1] <= 0x7e)
			return b[1];
		return copying ? -1 : '?';
	default: return -1;
	}
}

/*
 * The one JSON string reader: the string at j->p, decoded into out
 * (outlen bytes) unless out is NULL. Returns its length, or -1 if it is
 * not a well-formed string, or does not fit.
 */
static int
json_string(struct json *j, char *out, size_t outlen)
{
	size_t n = 0;
	int ch;

	if (j->p >= j->end || *j->p != '"')
		return -1;
	for (j->p++; j->p < j->end && *j->p != '"'; j->p++) {
		if ((ch = (unsigned char)*j->p) < 0x20 ||
		    (ch == '\\' && (ch = json_unescape(j, out != NULL)) < 0))
			return -1;
		if (out != NULL && n + 1 >= outlen)
			return -1;
		if (out != NULL)
			out[n++] = (char)ch;
	}
	if (j->p >= j->end)
		return -1;
	j->p++;
	if (out != NULL)
		out[n] = '\0';
	return (int)n;
}

static int
json_skip(struct json *j)
{
	int rc = -1;

	json_ws(j);
	if (j->p >= j->end || ++j->depth > 16)
		return -1;
	if (*j->p == '"') {
		rc = json_string(j, NULL, 0) < 0 ? -1 : 0;
	} else if (*j->p == '{' || *j->p == '[') {
		char close = *j->p == '{' ? '}' : ']';

		j->p++;
		json_ws(j);
		if (j->p < j->end && *j->p == close) {
			j->p++;
			rc = 0;
			goto out;
		}
		for (;;) {
			if (close == '}') {
				json_ws(j);
				if (json_string(j, NULL, 0) < 0)
					goto out;
				json_ws(j);
				if (j->p >= j->end || *j->p++ != ':')
					goto out;
			}
			if (json_skip(j) != 0)
				goto out;
			json_ws(j);
			if (j->p < j->end && *j->p == ',') {
				j->p++;
				continue;
			}
			if (j->p < j->end && *j->p == close) {
				j->p++;
				rc = 0;
			}
			goto out;
		}
	} else {
		while (j->p < j->end && strchr(",]} \t\r\n", *j->p) == NULL)
			j->p++;
		rc = 0;
	}
out:
	j->depth--;
	return rc;
}

/*
 * Positions j just after the ':' of member name in the object at j->p.
 * Returns 0, or -1 if there is no such member.
 */
static int
json_member(struct json *j, const char *name)
{
	size_t nlen = strlen(name);
	const char *key;

	json_ws(j);
	if (j->p >= j->end || *j->p != '{')
		return -1;
	j->p++;
	for (;;) {
		json_ws(j);
		key = j->p + 1; /* names we look for have no escapes */
		if (json_string(j, NULL, 0) < 0)
			return -1;
		json_ws(j);
		if (j->p >= j->end || *j->p++ != ':')
			return -1;
		json_ws(j);
		if (strncmp(key, name, nlen) == 0 && key[nlen] == '"')
			return 0;
		if (json_skip(j) != 0)
			return -1;
		json_ws(j);
		if (j->p >= j->end || *j->p++ != ',')
			return -1;
	}
}

/* Copies a string or a bare number value at j->p into out. */
static int
json_scalar(struct json *j, char *out, size_t outlen)
{
	const char *start = j->p;
	char whole[OTP_MAX_STR];

	if (j->p < j->end && *j->p == '"') { /* for a log: cut if long */
		if (json_string(j, whole, sizeof(whole)) < 0)
			return -1;
		str_copy(out, outlen, whole);
		return 0;
	}
	if (json_skip(j) != 0 || j->p == start)
		return -1;
	return str_ncopy(out, outlen, start, (size_t)(j->p - start)) < 0 ? -1 : 0;
}

/* Extracts errors[0].code and errors[0].title of a Telnyx error body. */
static int
json_api_error(const char *body, size_t len, char *code, size_t codelen,
               char *title, size_t titlelen)
{
	struct json j = { body, body + len, 0 }, e;

	code[0] = title[0] = '\0';
	if (json_member(&j, "errors") != 0 || j.p >= j.end || *j.p != '[')
		return -1;
	j.p++;
	json_ws(&j);
	e = j;
	if (json_member(&e, "code") == 0)
		json_scalar(&e, code, codelen);
	e = j;
	if (json_member(&e, "title") == 0)
		json_scalar(&e, title, titlelen);
	return code[0] || title[0] ? 0 : -1;
}

/*
 * Decodes the JSON string value of member name of the object in body into
 * out (ASCII only: \u escapes above 0x7e are refused, which no phone
 * number or code needs). Returns the length, or -1.
 */
static int
json_get_string(const char *body, size_t len, const char *name, char *out,
                size_t outlen)
{
	struct json j = { body, body + len, 0 };

	if (json_member(&j, name) != 0)
		return -1;
	return json_string(&j, out, outlen);
}

/* ---- config ------------------------------------------------------------ */
/*
 * config.cfg is the tutorial's file: Python literals, one KEY=value a line.
 *	API_KEY='KEY...'	strings in '' or "", with \\ \' \" \n \t
 *	TOKEN_LENGTH=4		integers
 *	DEBUG=True		True or False
 * Every key may be overridden from the environment as OTP_<KEY>, raw.
 * Each key is one line of the table below: name, type, bounds, default.
 */

enum ktype { K_STR, K_INT, K_BOOL };

struct key {
	const char *name;
	enum ktype type;
	long min, max; /* K_INT bounds */
	const char *def;
	size_t off, size;
	/* Extra rule for strings: returns NULL or the rule broken. */
	const char *(*check)(const char *value);
	/* Or the values a string may take, "a|b|c" (and "" when the
	 * default is "", meaning "decide for me"). */
	const char *choices;
};

static const char *check_country_code(const char *v);
static const char *check_country_list(const char *v);
static const char *check_url(const char *v);
static const char *check_url_or_none(const char *v);
static const char *check_message(const char *v);
static const char *check_not_empty(const char *v);
static const char *check_http_auth(const char *v);
static const char *check_domain(const char *v);
static const char *check_cookie_domain(const char *v);
static const char *check_lang(const char *v);
static const char *check_addresses(const char *v);
static const char *check_env_names(const char *v);
static const char *check_upstream(const char *v);
static const char *check_store(const char *v);

#define SENDER_CHOICE(name, ...) "|" #name
#define SENDER_CHOICES (SENDERS(SENDER_CHOICE) + 1) /* "telnyx|...|console" */

#define F(field) offsetof(struct config, field), sizeof(((struct config *)0)->field)
#define STR(name, field, def, check) \
	{ name, K_STR, 0, 0, def, F(field), check, NULL }
#define ONE_OF(name, field, def, choices) \
	{ name, K_STR, 0, 0, def, F(field), NULL, choices }
#define INT(name, field, min, max, def) \
	{ name, K_INT, min, max, def, F(field), NULL, NULL }
#define BOOL(name, field, def) { name, K_BOOL, 0, 1, def, F(field), NULL, NULL }
#define CAP(name, field, max, def) INT(name, field, 1, max, def) /* a limit */

static const struct key config_keys[] = {
	STR("API_KEY", api_key, "", NULL),
	STR("FROM_NUMBER", from_number, "", NULL),
	BOOL("DEBUG", debug, "False"),
	STR("COUNTRY_CODE", country_code, "+1", check_country_code),
	INT("TOKEN_LENGTH", token_length, 1, OTP_MAX_CODE_LEN, "6"),
	ONE_OF("TOKEN_ALPHABET", token_alphabet, "hex", "hex|digits"),
	STR("LISTEN", listen, "127.0.0.1:5000", check_not_empty),
	ONE_OF("SMS_PROVIDER", sms_provider, "", SENDER_CHOICES),
	STR("SMS_API_URL", sms_api_url, "https://api.telnyx.com/v2/messages",
	    check_url),
	STR("SMS_CA_FILE", sms_ca_file, "", NULL),
	INT("SMS_TIMEOUT", sms_timeout, 1, 120, "10"),
	STR("MESSAGE", message, "", check_message),
	INT("MAX_PENDING", max_pending, 1, 1000000, "1024"),
	INT("THREADS", threads, 1, 256, "8"),
	INT("CODE_TTL", code_ttl, 1, 600, "300"),
	INT("MAX_ATTEMPTS", max_attempts, 1, 100, "5"),
	INT("RESEND_INTERVAL", resend_interval, 0, 3600, "30"),
	CAP("VERIFY_PER_IP_PER_HOUR", verify_per_ip_per_hour, 1000000, "30"),
	CAP("SMS_PER_NUMBER_PER_HOUR", sms_per_number_per_hour, 1000000, "5"),
	CAP("SMS_PER_IP_PER_HOUR", sms_per_ip_per_hour, 1000000, "10"),
	CAP("SMS_PER_HOUR", sms_per_hour, 10000000, "100"),
	CAP("SMS_PER_DAY", sms_per_day, 100000000, "1000"),
	INT("NETWORK_SHARE", network_share, 1, 100, "25"),
	INT("IPV6_PREFIX", ipv6_prefix, 32, 128, "64"),
	CAP("API_SMS_PER_HOUR", api_sms_per_hour, 10000000, "100"),
	CAP("API_SMS_PER_NUMBER_PER_HOUR", api_sms_per_number_per_hour, 1000000,
	    "5"),
	CAP("API_SENDS_PER_VERIFICATION", api_sends_per_verification, 100, "5"),
	STR("ALLOWED_COUNTRY_CODES", allowed_country_codes, "",
	    check_country_list),
	STR("TRUSTED_PROXY", trusted_proxy, "", check_addresses),
	STR("CERT_FILE", cert_file, "otp_demo.pem", check_not_empty),
	BOOL("REDIRECT_HTTP", redirect_http, "False"),
	STR("API_KEY_FILE", api_key_file, "", NULL),
	STR("API_TOKEN", api_token, "", NULL),
	INT("SESSION_TTL", session_ttl, 60, 30 * 86400, "43200"),
	STR("STATE_DIR", state_dir, "", NULL),
	INT("STATE_SAVE_INTERVAL", state_save_interval, 10, 86400, "300"),
	BOOL("METRICS", metrics, "False"),
	STR("METRICS_ALLOW", metrics_allow, "127.0.0.1,::1", check_addresses),
	ONE_OF("LOG", log, "stderr", "stderr|syslog"),
	STR("SPOOL_DIR", spool_dir, "/var/spool/sms/outgoing", check_not_empty),
	STR("SMS_COMMAND", sms_command, "", NULL),
	STR("SMS_COMMAND_ENV", sms_command_env, "", check_env_names),
	ONE_OF("SMS_HTTP_METHOD", sms_http_method, "POST", "POST|PUT"),
	STR("SMS_HTTP_AUTH", sms_http_auth, "bearer", check_http_auth),
	ONE_OF("SMS_HTTP_CONTENT_TYPE", sms_http_content_type, "application/json",
	    "application/json|application/x-www-form-urlencoded"),
	STR("SMS_HTTP_BODY", sms_http_body,
	    "{\"from\":\"{from}\",\"to\":\"{to}\",\"text\":\"{text}\"}",
	    check_not_empty),
	STR("APP_NAME", app_name, "otp_demo", NULL),
	STR("WWW_DIR", www_dir, "", NULL),
	STR("WEBOTP_DOMAIN", webotp_domain, "", check_domain),
	STR("COOKIE_DOMAIN", cookie_domain, "", check_cookie_domain),
	STR("LANG", lang, "en", check_lang),
	STR("UPSTREAM", upstream, "", check_upstream),
	INT("UPSTREAM_TIMEOUT", upstream_timeout, 1, 600, "30"),
	STR("USERS_FILE", users_file, "", NULL),
	STR("WEBHOOK_URL", webhook_url, "", check_url_or_none),
	STR("WEBHOOK_SECRET", webhook_secret, "", NULL),
	STR("WEBHOOK_SECRET_FILE", webhook_secret_file, "", NULL),
	STR("STORE", store, "memory", check_store),
#ifdef WITH_REDIS /* else config_line() says they need it */
	STR("STORE_PASSWORD", store_password, "", NULL),
	STR("STORE_PASSWORD_FILE", store_password_file, "", NULL),
	INT("STORE_TIMEOUT", store_timeout, 10, 60000, "500"),
#endif
};

#ifndef WITH_REDIS
/* What a binary without the Redis store says to its keys (config_line())
 * and to STORE other than memory (check_store()). */
#define NO_REDIS "this binary was built without Redis (make WITH_REDIS=1)"
#endif
#define NKEYS (countof(config_keys))

/* Where each key's value came from, for error messages. */
struct origin {
	const char *file;
	int line[NKEYS]; /* > 0: file line; 0: default; -1: environment */
};

/* A row of SENDERS (see there), made into senders[] in "SMS senders". */
struct sender {
	const char *name;
	int (*check)(struct config *c, const struct origin *o, char *err,
	             size_t errlen);
	enum send_result (*send)(struct otp *otp, const struct config *c,
	                         const char *phone, const char *text);
	void (*describe)(struct otp *otp, const struct config *c);
	bool needs_ca;
};

static const struct sender senders[SENDER__N];

/* Phone numbers' table lookups, defined in their section. */
static int phone_cc_region(unsigned long cc);
static int phone_iso_region(const char *iso, size_t len);
static void phone_allow(uint8_t *bits, int region, bool whole_code);
static int phone_normalise(const char *in, size_t len, const char *country,
                           char *out, size_t outlen); /* 0: PHONE_OK */

/* '+' and 1 to 3 digits, not 0 first: the syntax of a calling code. */
static bool
country_code_syntax(const char *v)
{
	size_t n = strlen(v);

	return n >= 2 && n <= 4 && v[0] == '+' && v[1] != '0' &&
	    strspn(v + 1, "0123456789") == n - 1;
}

static const char *
check_country_code(const char *v)
{
	if (!country_code_syntax(v) || phone_cc_region(strtoul(v + 1, NULL,
	    10)) < 0)
		return "must be '+' and a country's calling code, like '+1' or "
		    "'+44'";
	return NULL;
}

/* The syntax only: config_finish() looks the codes up and names a bad one. */
static const char *
check_country_list(const char *v)
{
	char item[8];
	const char *p = v;
	int n = 0, rc;

	while ((rc = list_item(&p, item, sizeof(item))) > 0) {
		bool iso = strlen(item) == 2 &&
		    isalpha((unsigned char)item[0]) &&
		    isalpha((unsigned char)item[1]);

		if (++n > OTP_MAX_COUNTRIES ||
		    (!iso && !country_code_syntax(item)))
			break;
	}
	if (rc != 0)
		return "must be a comma-separated list of ISO country codes "
		    "and calling codes, like 'US,CA' or '+44'";
	return NULL;
}

static const char *
check_url(const char *v)
{
	/* The API key travels in a header: never over plain HTTP. */
	const char *host = PREFIX_CI(v, "https://");

	if (host == NULL || *host == '\0')
		return "must be an https:// URL";
	return NULL;
}

static const char *
check_url_or_none(const char *v)
{
	return *v ? check_url(v) : NULL;
}

static const char *
check_message(const char *v)
{
	static const struct var vars[] = { { "code", "" }, { "app", "" },
	    { "minutes", "" } };
	char out[OTP_MAX_STR];
	size_t n = 0;

	if (*v == '\0') /* the built-in text, in the person's language */
		return NULL;
	if (strstr(v, "{code}") == NULL)
		return "must contain {code}";
	if (fill(v, strlen(v), 1, true, vars, countof(vars),
	    esc_none, out, sizeof(out), &n) < 0)
		return "may contain only {code}, {app} and {minutes}";
	return NULL;
}

static const char *
check_env_names(const char *v)
{
	char name[64];
	int rc;

	while ((rc = list_item(&v, name, sizeof(name))) > 0)
		if (isdigit((unsigned char)name[0]) || strspn(name,
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
		    "0123456789_") != strlen(name))
			break;
	return rc != 0 ? "must be environment variable names separated by "
	    "commas, like 'PATH,LANG'" : NULL;
}

static const char *
check_http_auth(const char *v)
{
	const char *name = PREFIX(v, "header:");

	if (strcmp(v, "bearer") != 0 && strcmp(v, "basic") != 0 &&
	    strcmp(v, "none") != 0 && (name == NULL || *name == '\0' ||
	    strspn(name, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "abcdefghijklmnopqrstuvwxyz0123456789-") != strlen(name)))
		return "must be 'bearer', 'basic', 'none' or 'header:Name'";
	return NULL;
}

static const char *
check_domain(const char *v)
{
	if (strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
	    "0123456789.-") != strlen(v))
		return "must be a host name like 'example.com'";
	return NULL;
}

/*
 * A DNS name of two labels or more ("example.lan"): one label would be a
 * top-level domain, which browsers refuse as a Domain; nor an address,
 * a leading dot or a port.
 */
static const char *
check_cookie_domain(const char *v)
{
	const char *p = v, *label = v;
	size_t len = 0, n = strlen(v);
	bool ok = n == 0 || (check_domain(v) == NULL && v[n - 1] != '.');
	int labels = 0;

	while (ok && list_next(&p, '.', &label, &len)) {
		ok = len > 0 && len < 64 && label[0] != '-' &&
		    label[len - 1] != '-';
		labels++;
	}
	/* The last label, at the end of v: all digits is an address. */
	if (n > 0 && (!ok || labels < 2 || strspn(label, "0123456789") == len))
		return "must be a host name like 'example.lan' (no leading "
		    "dot, no port)";
	return NULL;
}

/* A language tag with "_" for "-": "de", "pt_BR". */
static const char *
check_lang(const char *v)
{
	size_t len = strlen(v), primary = strspn(v, "abcdefghijklmnopqrstuvwxyz");

	if (primary < 2 || primary > 3 || (v[primary] != '\0' &&
	    (v[primary] != '_' || len - primary - 1 < 2 ||
	    len - primary - 1 > 4 || strspn(v + primary + 1,
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789") !=
	    len - primary - 1)))
		return "must be a language tag like 'de' or 'pt_BR'";
	return NULL;
}

/* A comma-separated list of IPv4 and IPv6 addresses (a typo would never
 * match, and quietly let nobody, or everybody, through). */
static const char *
check_addresses(const char *v)
{
	uint8_t bin[17];
	char one[64];
	int rc;

	while ((rc = list_item(&v, one, sizeof(one))) > 0)
		if (!addr_parse(one, strlen(one), bin))
			break;
	return rc == 0 ? NULL : "must be IP addresses, comma-separated, "
	    "like '127.0.0.1,::1'";
}

/*
 * UPSTREAM: "http://host:port", a "/" after it allowed, the host a name,
 * an IPv4 address or an IPv6 one in brackets. Splits it into host (the
 * brackets dropped) and port. 0 or -1.
 */
static int
upstream_split(const char *v, char host[256], char port[8])
{
	const char *h = PREFIX(v, "http://"), *p;
	size_t n;

	if (h == NULL)
		return -1;
	if (*h == '[') {
		n = strspn(++h, "0123456789abcdefABCDEF:.");
		p = h + n + (h[n] == ']');
		if (h[n] != ']')
			return -1;
	} else {
		n = strspn(h, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "0123456789.-");
		p = h + n;
	}
	if (n == 0 || n > 255 || *p != ':' || str_ncopy(host, 256, h, n) != 0 ||
	    (n = strspn(++p, "0123456789")) == 0 || n > 5 ||
	    strtol(p, NULL, 10) < 1 || strtol(p, NULL, 10) > 65535 ||
	    (p[n] != '\0' && strcmp(p + n, "/") != 0))
		return -1;
	return str_ncopy(port, 8, p, n);
}

static const char *
check_upstream(const char *v)
{
	char host[256], port[8];

	if (*v != '\0' && upstream_split(v, host, port) != 0)
		return "must be 'http://host:port'";
	return NULL;
}

static const char *
check_not_empty(const char *v)
{
	return *v ? NULL : "must not be empty";
}

static const struct key *
config_find(const char *name, size_t *index)
{
	for (size_t i = 0; i < NKEYS; i++) {
		if (strcmp(config_keys[i].name, name) == 0) {
			if (index != NULL)
				*index = i;
			return &config_keys[i];
		}
	}
	return NULL;
}

/* Formats "where: KEY rule" into err. where is "file:line" or similar. */
static int
config_error(char *err, size_t errlen, const char *where, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int
config_error(char *err, size_t errlen, const char *where, const char *fmt, ...)
{
	va_list ap;
	int n = snprintf(err, errlen, "%s: ", where);

	if (n < 0 || (size_t)n >= errlen)
		return -1;
	va_start(ap, fmt);
	vsnprintf(err + n, errlen - (size_t)n, fmt, ap);
	va_end(ap);
	return -1;
}

/* True if v is one of choices ("a|b|c"). */
static bool
choice_ok(const char *choices, const char *v)
{
	size_t len = strlen(v), n;
	const char *one;

	while (list_next(&choices, '|', &one, &n))
		if (n == len && strncmp(one, v, n) == 0)
			return true;
	return false;
}

/* Writes "'a', 'b' or 'c'" for choices "a|b|c". */
static void
choice_list(const char *choices, char *out, size_t outlen)
{
	const char *p = choices, *one;
	size_t n = 0, len;

	out[0] = '\0';
	while (n < outlen && list_next(&p, '|', &one, &len)) {
		int k = snprintf(out + n, outlen - n, "%s'%.*s'", one == choices ?
		    "" : *p == '\0' ? " or " : ", ", (int)len, one);

		if (k < 0)
			break;
		n += (size_t)k;
	}
}

/*
 * Stores a value given as text into the field of k. quoted tells whether
 * the file had it in quotes (strings must be; numbers and booleans must not
 * be). Returns 0, or -1 with the rule broken in err.
 */
static int
config_set(struct config *c, const struct key *k, const char *v, bool quoted,
           bool from_env, const char *where, char *err, size_t errlen)
{
	char *field = (char *)c + k->off;
	const char *why;
	long n;

	switch (k->type) {
	case K_STR:
		if (!quoted && !from_env)
			return config_error(err, errlen, where,
			    "%s must be a quoted string", k->name);
		if (str_copy(field, k->size, v) != 0)
			return config_error(err, errlen, where,
			    "%s must be at most %zu characters", k->name,
			    k->size - 1);
		if (k->check != NULL && (why = k->check(v)) != NULL)
			return config_error(err, errlen, where, "%s %s",
			    k->name, why);
		if (k->choices != NULL && !choice_ok(k->choices, v) &&
		    !(*v == '\0' && *k->def == '\0')) {
			char list[128];

			choice_list(k->choices, list, sizeof(list));
			return config_error(err, errlen, where, "%s must be %s",
			    k->name, list);
		}
		return 0;
	case K_INT:
		if (quoted || parse_long(v, LONG_MIN, LONG_MAX, &n) != 0)
			return config_error(err, errlen, where,
			    "%s must be a whole number", k->name);
		if (n < k->min || n > k->max)
			return config_error(err, errlen, where,
			    "%s must be %ld..%ld", k->name, k->min, k->max);
		memcpy(field, &n, sizeof(n));
		return 0;
	case K_BOOL:
		if (!quoted && strcmp(v, "True") == 0)
			*(bool *)field = true;
		else if (!quoted && strcmp(v, "False") == 0)
			*(bool *)field = false;
		else if (from_env && (strcmp(v, "true") == 0 ||
		         strcmp(v, "1") == 0 || strcmp(v, "yes") == 0))
			*(bool *)field = true;
		else if (from_env && (strcmp(v, "false") == 0 ||
		         strcmp(v, "0") == 0 || strcmp(v, "no") == 0))
			*(bool *)field = false;
		else
			return config_error(err, errlen, where,
			    "%s must be True or False", k->name);
		return 0;
	}
	return -1;
}

/*
 * Parses the value part of a line: a quoted string (with escapes) or a bare
 * word, then optional blanks and a # comment. Writes the text to out.
 */
static int
config_value(const char *p, char *out, size_t outlen, bool *quoted,
             const char **why)
{
	size_t n = 0;

	*quoted = (*p == '\'' || *p == '"');
	if (*quoted) {
		char q = *p++;

		for (; *p != q; p++) {
			char ch = *p;

			if (ch == '\0' || ch == '\n' || ch == '\r') {
				*why = "unterminated string";
				return -1;
			}
			if (ch == '\\') {
				switch (*++p) {
				case 'n': ch = '\n'; break;
				case 't': ch = '\t'; break;
				case '\\': case '\'': case '"': ch = *p; break;
				default:
					*why = "unsupported escape in string";
					return -1;
				}
			}
			if (n + 1 >= outlen) {
				*why = "value too long";
				return -1;
			}
			out[n++] = ch;
		}
		p++;
	} else {
		size_t len = strcspn(p, " \t#\r\n");

		if (len == 0) {
			*why = "missing value";
			return -1;
		}
		if (len >= outlen) {
			*why = "value too long";
			return -1;
		}
		memcpy(out, p, len);
		n = len;
		p += len;
	}
	out[n] = '\0';
	p += strspn(p, " \t\r\n");
	if (*p != '\0' && *p != '#') {
		*why = "unexpected text after the value";
		return -1;
	}
	return 0;
}

/* Suggests the known key closest to an unknown one, or NULL. */
static const char *
config_suggest(const char *name)
{
	const char *best = NULL;
	unsigned best_d = 3; /* at most two edits away */

	for (size_t i = 0; i < NKEYS; i++) {
		unsigned d = edit_distance(name, config_keys[i].name);

		if (d < best_d) {
			best_d = d;
			best = config_keys[i].name;
		}
	}
	return best;
}

/*
 * Sets MESSAGE_<lang>: lang is a language tag with "_" for "-" ("de",
 * "pt_BR"); the text follows MESSAGE's rules. A later line for the same
 * language replaces the earlier.
 */
static int
config_message(struct config *c, const char *lang, const char *text,
               const char *where, char *err, size_t errlen)
{
	const char *why = check_message(text);
	int i;

	if (check_lang(lang) != NULL)
		return config_error(err, errlen, where, "MESSAGE_%s: the "
		    "language must be a tag like 'de' or 'pt_BR'", lang);
	if (why != NULL)
		return config_error(err, errlen, where, "MESSAGE_%s %s", lang,
		    why);
	for (i = 0; i < c->nmessages; i++)
		if (strcmp(c->messages[i].lang, lang) == 0)
			break;
	if (i == OTP_MAX_LANGS)
		return config_error(err, errlen, where, "at most %d MESSAGE_<lang> "
		    "keys", OTP_MAX_LANGS);
	if (str_copy(c->messages[i].text, sizeof(c->messages[i].text), text))
		return config_error(err, errlen, where, "MESSAGE_%s must be at "
		    "most %zu characters", lang, sizeof(c->messages[i].text) - 1);
	str_copy(c->messages[i].lang, sizeof(c->messages[i].lang), lang);
	if (i == c->nmessages)
		c->nmessages++;
	return 0;
}

/* Parses one line of the file into c. 0, or -1 with err set. */
static int
config_line(struct config *c, struct origin *o, int lineno, const char *line,
            char *err, size_t errlen)
{
	char where[OTP_MAX_STR + 16], name[64], value[OTP_MAX_STR];
	const char *p = line + strspn(line, " \t"), *why = NULL, *lang;
	const struct key *k;
	size_t len, index;
	bool quoted;

	snprintf(where, sizeof(where), "%s:%d", o->file, lineno);
	if (*p == '\0' || *p == '#' || *p == '\n' || *p == '\r')
		return 0;
	len = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
	                "0123456789_");
	if (len == 0 || len >= sizeof(name))
		return config_error(err, errlen, where, "expected KEY=value");
	memcpy(name, p, len);
	name[len] = '\0';
	p += len;
	p += strspn(p, " \t");
	if (*p++ != '=')
		return config_error(err, errlen, where,
		    "expected KEY=value after %s", name);
	p += strspn(p, " \t");
	if ((lang = PREFIX(name, "MESSAGE_")) != NULL) {
		if (config_value(p, value, sizeof(value), &quoted, &why) != 0)
			return config_error(err, errlen, where, "%s: %s", name, why);
		if (!quoted)
			return config_error(err, errlen, where,
			    "%s must be a quoted string", name);
		return config_message(c, lang, value, where, err, errlen);
	}
	if ((k = config_find(name, &index)) == NULL) {
		const char *s = config_suggest(name);

#ifndef WITH_REDIS
		/* The Redis store's keys are compiled in with it alone. */
		if (PREFIX(name, "STORE_") != NULL)
			return config_error(err, errlen, where, "%s: %s", name,
			    NO_REDIS);
#endif
		if (s != NULL)
			return config_error(err, errlen, where,
			    "unknown key %s (did you mean %s?)", name, s);
		return config_error(err, errlen, where, "unknown key %s", name);
	}
	if (config_value(p, value, sizeof(value), &quoted, &why) != 0)
		return config_error(err, errlen, where, "%s: %s", name, why);
	o->line[index] = lineno;
	return config_set(c, k, value, quoted, false, where, err, errlen);
}

static bool listen_has_tls(const char *listen);
static bool listen_loopback(const char *listen);

static int
config_defaults(struct config *c, char *err, size_t errlen)
{
	memset(c, 0, sizeof(*c));
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &config_keys[i];

		if (config_set(c, k, k->def, k->type == K_STR, false,
		    "default", err, errlen) != 0)
			return -1;
	}
	return 0;
}

/* Reads the file at path into c. A missing file is an error. */
static int
config_read_file(struct config *c, struct origin *o, const char *path,
                 char *err, size_t errlen)
{
	char line[OTP_MAX_LINE];
	int lineno = 0, rc = 0;
	FILE *f = fopen(path, "r");

	if (f == NULL)
		return config_error(err, errlen, path, "cannot open: %s",
		    strerror(errno));
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f)) {
			char where[OTP_MAX_STR + 16];

			snprintf(where, sizeof(where), "%s:%d", path, lineno);
			rc = config_error(err, errlen, where,
			    "line longer than %d bytes", OTP_MAX_LINE - 2);
			break;
		}
		rc = config_line(c, o, lineno, line, err, errlen);
	}
	if (rc == 0 && ferror(f))
		rc = config_error(err, errlen, path, "read error");
	fclose(f);
	return rc;
}

/* Applies OTP_<KEY> environment variables on top of c. */
static int
config_read_env(struct config *c, struct origin *o, char *err, size_t errlen)
{
	extern char **environ;

	for (char **e = environ; *e != NULL; e++) {
		char lang[16], where[64];
		const char *eq = strchr(*e, '='), *tag = PREFIX(*e, "OTP_MESSAGE_");

		if (tag == NULL || eq == NULL)
			continue;
		str_ncopy(lang, sizeof(lang), tag, (size_t)(eq - tag));
		snprintf(where, sizeof(where), "environment OTP_MESSAGE_%s", lang);
		if (config_message(c, lang, eq + 1, where, err, errlen) != 0)
			return -1;
	}
	for (size_t i = 0; i < NKEYS; i++) {
		char var[64], where[80];
		const char *v;

		snprintf(var, sizeof(var), "OTP_%s", config_keys[i].name);
		if ((v = getenv(var)) == NULL)
			continue;
		snprintf(where, sizeof(where), "environment %s", var);
		if (config_set(c, &config_keys[i], v, false, true, where, err,
		    errlen) != 0)
			return -1;
		o->line[i] = -1;
	}
	return 0;
}

/* "file:line" of where key i was set, for errors found after reading. */
static void
config_where(const struct origin *o, const char *name, char *out, size_t len)
{
	size_t i = 0;

	config_find(name, &i);
	if (o->line[i] > 0)
		snprintf(out, len, "%s:%d", o->file, o->line[i]);
	else if (o->line[i] < 0)
		snprintf(out, len, "environment OTP_%s", name);
	else
		snprintf(out, len, "%s", o->file);
}

static bool phone_is_e164(const char *s);

/* Reads a secret from the file key (API_KEY_FILE...) names: its first
 * line, without blanks, into out (size bytes). 0, or -1 with err. */
static int
config_read_key(const struct origin *o, const char *key, const char *path,
                char *out, size_t size, char *err, size_t errlen)
{
	char where[OTP_MAX_STR + 32], buf[258];
	FILE *f = fopen(path, "r");
	size_t n;

	config_where(o, key, where, sizeof(where));
	if (f == NULL)
		return config_error(err, errlen, where, "%s %s: %s", key, path,
		    strerror(errno));
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	buf[n] = '\0';
	buf[strcspn(buf, "\r\n")] = '\0';
	n = strlen(buf);
	while (n > 0 && isspace((unsigned char)buf[n - 1]))
		buf[--n] = '\0';
	if (n == 0 || str_copy(out, size, buf) != 0) {
		wipe(buf, sizeof(buf));
		return config_error(err, errlen, where, "%s %s must hold one "
		    "key of 1 to %zu characters", key, path, size - 1);
	}
	wipe(buf, sizeof(buf));
	return 0;
}

/*
 * Resolves UPSTREAM's host once, at load: a request never waits for DNS,
 * and a name that does not resolve fails the start (or the reload, which
 * keeps the old config) instead of every request. 0 or -1.
 */
static int
config_upstream(struct config *c, const struct origin *o, char *err,
                size_t errlen)
{
	struct addrinfo hints, *ai = NULL;
	char where[OTP_MAX_STR + 32], host[256], port[8];
	int rc;

	if (c->upstream[0] == '\0')
		return 0;
	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if (upstream_split(c->upstream, host, port) != 0 ||
	    (rc = getaddrinfo(host, port, &hints, &ai)) != 0 ||
	    ai->ai_addrlen > sizeof(c->upstream_addr)) {
		if (ai != NULL)
			freeaddrinfo(ai);
		config_where(o, "UPSTREAM", where, sizeof(where));
		return config_error(err, errlen, where, "UPSTREAM %s: cannot "
		    "resolve %s", c->upstream, host);
	}
	memcpy(&c->upstream_addr, ai->ai_addr, ai->ai_addrlen);
	c->upstream_len = ai->ai_addrlen;
	freeaddrinfo(ai);
	return 0;
}

/* Derives what depends on several keys, and checks them together. */
static int config_check_ca(struct config *c, const struct origin *o,
                           char *err, size_t errlen);

/*
 * WEBHOOK_URL needs a secret to sign with (WEBHOOK_SECRET, or the file
 * WEBHOOK_SECRET_FILE names) and a CA bundle, as the HTTP senders do.
 * 0, or -1 with err.
 */
static int
config_check_webhook(struct config *c, const struct origin *o, char *err,
                     size_t errlen)
{
	char where[OTP_MAX_STR + 32];

	if (c->webhook_url[0] == '\0')
		return 0;
	if (strlen(c->webhook_secret) < OTP_MIN_SECRET) {
		config_where(o, "WEBHOOK_URL", where, sizeof(where));
		return config_error(err, errlen, where, "WEBHOOK_URL needs "
		    "WEBHOOK_SECRET (or WEBHOOK_SECRET_FILE) of at least %d "
		    "characters to sign with", OTP_MIN_SECRET);
	}
	return config_check_ca(c, o, err, errlen);
}

#ifdef WITH_REDIS
/* STORE, read: a host and port, or a unix socket's path; a database;
 * the password in the URL, if any (else STORE_PASSWORD). Wipe it. */
struct store_url {
	char host[256];
	char path[OTP_MAX_STR];
	int port;
	long db;
	char password[128];
};

/* Reads "unix:///path[?db=N]" or "redis://[:password@]host[:port][/db]"
 * (host a name, an IPv4 address or [an IPv6 one]). 0, or -1. */
static int
store_url_parse(const char *v, struct store_url *u)
{
	const char *p, *at, *end, *colon;
	char num[16];
	long n = 6379;

	memset(u, 0, sizeof(*u));
	if ((p = PREFIX(v, "unix://")) != NULL) {
		end = p + strcspn(p, "?");
		if (p[0] != '/' || end - p < 2 || str_ncopy(u->path,
		    sizeof(u->path), p, (size_t)(end - p)) != 0)
			return -1;
		return *end == '\0' ? 0 : (p = PREFIX(end, "?db=")) != NULL ?
		    parse_long(p, 0, 9999, &u->db) : -1;
	}
	if ((p = PREFIX(v, "redis://")) == NULL)
		return -1;
	end = p + strcspn(p, "/");
	if ((at = memchr(p, '@', (size_t)(end - p))) != NULL) {
		if (p[0] != ':' || at == p + 1 || str_ncopy(u->password,
		    sizeof(u->password), p + 1, (size_t)(at - p - 1)) != 0)
			return -1;
		p = at + 1;
	}
	if (p[0] == '[')
		colon = memchr(p, ']', (size_t)(end - p));
	else
		colon = p;
	if (colon == NULL)
		return -1;
	colon = memchr(colon, ':', (size_t)(end - colon));
	if (str_ncopy(u->host, sizeof(u->host), p + (p[0] == '['),
	    (size_t)((colon != NULL ? colon : end) - p) - (p[0] == '[') * 2) != 0 ||
	    u->host[0] == '\0')
		return -1;
	if (colon != NULL && (str_ncopy(num, sizeof(num), colon + 1,
	    (size_t)(end - colon - 1)) != 0 || parse_long(num, 1, 65535,
	    &n) != 0))
		return -1;
	u->port = (int)n;
	if (*end == '/' && end[1] != '\0' && parse_long(end + 1, 0, 9999,
	    &u->db) != 0)
		return -1;
	return 0;
}
#endif

/*
 * STORE's spelling: memory, redis://[:password@]host:port[/db] or
 * unix:///path[?db=N]. Never says the value (it may hold a password).
 * A binary built without Redis knows only memory.
 */
static const char *
check_store(const char *v)
{
#ifdef WITH_REDIS
	struct store_url u;

	if (strcmp(v, "memory") == 0 || store_url_parse(v, &u) == 0) {
		wipe(&u, sizeof(u));
		return NULL;
	}
	wipe(&u, sizeof(u));
	return "must be memory, redis://[:password@]host:port[/db] or "
	    "unix:///path/to/redis.sock";
#else
	if (strcmp(v, "memory") == 0)
		return NULL;
	return "must be memory: " NO_REDIS;
#endif
}

#ifdef WITH_REDIS
/* A store other than memory needs what sharing needs. 0, or -1 with
 * err. (STORE_PASSWORD_FILE is read with the other key files.) */
static int
config_check_store(struct config *c, const struct origin *o, char *err,
                   size_t errlen)
{
	char where[OTP_MAX_STR + 32];

	/* Instances share their records only if they hash numbers, codes
	 * and sessions under the same key: session.key, the same file in
	 * each STATE_DIR (README: "Two or more instances"). */
	if (strcmp(c->store, "memory") == 0)
		return 0;
	config_where(o, "STORE", where, sizeof(where));
	if (c->state_dir[0] == '\0')
		return config_error(err, errlen, where, "STORE other than "
		    "memory needs STATE_DIR, with the same session.key on "
		    "every instance");
	return 0;
}
#else
/* check_store() has refused every store but memory. */
#define config_check_store(c, o, err, errlen) 0
#endif

/*
 * Derives the regions numbers may be in from ALLOWED_COUNTRY_CODES (or
 * COUNTRY_CODE): an ISO code is that region; '+1' is the US and Canada
 * (not the 23 other NANP regions: list them by ISO code); another calling
 * code is every region that shares it ('+44': GB, GG, IM, JE).
 */
static int
config_countries(struct config *c, const struct origin *o, char *err,
                 size_t errlen)
{
	const char *key = c->allowed_country_codes[0] ?
	    "ALLOWED_COUNTRY_CODES" : "COUNTRY_CODE";
	const char *p = c->allowed_country_codes[0] ?
	    c->allowed_country_codes : c->country_code;
	char where[OTP_MAX_STR + 32], item[8];
	int r;

	memset(c->countries, 0, sizeof(c->countries));
	while (list_item(&p, item, sizeof(item)) > 0) {
		bool code = item[0] == '+';

		r = code ? phone_cc_region(strtoul(item + 1, NULL, 10)) :
		    phone_iso_region(item, strlen(item));
		if (r < 0) {
			config_where(o, key, where, sizeof(where));
			if (code)
				return config_error(err, errlen, where,
				    "%s: %s is no country's calling code", key,
				    item);
			return config_error(err, errlen, where, "%s: '%s' is "
			    "not an ISO 3166 country code%s", key, item,
			    strcasecmp(item, "UK") == 0 ?
			    " (did you mean 'GB'?)" : "");
		}
		phone_allow(c->countries, r, code);
	}
	return 0;
}

static const char console_fix[] = "set API_KEY, or SMS_PROVIDER='console' "
    "to print codes instead of sending them";

/* The console sender, picked because no SMS_PROVIDER is set, on a
 * listener that is not loopback: an error naming where (LISTEN's place).
 * 0, or -1 with err set. */
static int
console_exposed(const struct config *c, const char *where, char *err,
                size_t errlen)
{
	if (c->sender != &senders[SENDER_console] || c->sms_provider[0] ||
	    listen_loopback(c->listen))
		return 0;
	return config_error(err, errlen, where, "LISTEN %s is not loopback "
	    "only, and the sender is the console: %s", c->listen, console_fix);
}

/*
 * The console sender prints codes instead of sending them, so it is never
 * a silent fallback where that matters. Unless SMS_PROVIDER names a
 * sender, a set but empty API_KEY (a secret lost on its way: an empty
 * OTP_API_KEY, a template) is an error, and so is the console on a
 * listener others reach, who would be told "we sent a code" that only
 * stdout got. No API_KEY, or the tutorial's placeholder, on loopback
 * stays the console: `make run` on a fresh machine. 0, or -1 with err.
 */
static int
config_check_console(const struct config *c, const struct origin *o,
                     char *err, size_t errlen)
{
	char where[OTP_MAX_STR + 32];
	size_t i = 0;

	config_find("API_KEY", &i);
	if (c->sms_provider[0] == '\0' && o->line[i] != 0 &&
	    c->api_key[0] == '\0') {
		config_where(o, "API_KEY", where, sizeof(where));
		return config_error(err, errlen, where, "API_KEY is set but "
		    "empty: %s", console_fix);
	}
	config_where(o, "LISTEN", where, sizeof(where));
	return console_exposed(c, where, err, errlen);
}

/* What a user name and a group may be made of: safe in a header, a log
 * line and a URL as they are. check_domain()'s characters and "_", in
 * its order, so the linker keeps one copy of both. */
#define USER_CHARS "_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ" \
	"0123456789.-"

/*
 * Reads a line of USERS_FILE into u: "+12015550123 alice admins,ops", a
 * number in E.164 (as the SMS goes to it), a user name, optional groups,
 * separated by blanks; from # on a comment. The line is cut up in place.
 * Returns 0 for a user, 1 for a line without one, or -1 with *why set.
 */
static int
user_parse(char *line, struct user *u, const char **why)
{
	char *f[4], group[OTP_MAX_GROUPS + 1];
	const char *g;
	size_t n = 0, len;
	bool bad;
	int rc;

	line[strcspn(line, "#\r\n")] = '\0';
	for (char *p = line + strspn(line, " \t"); *p != '\0' && n < 4;
	    p += strspn(p, " \t")) {
		f[n++] = p;
		p += strcspn(p, " \t");
		if (*p != '\0')
			*p++ = '\0';
	}
	if (n == 0)
		return 1;
	*why = NULL;
	/* Strict: a number the form would spell otherwise never matches. */
	if (phone_normalise(f[0], strlen(f[0]), "+1", u->phone,
	    sizeof(u->phone)) != 0 || strcmp(u->phone, f[0]) != 0)
		*why = "the number must be E.164, like +12015550123, and able "
		    "to receive SMS";
	else if (n == 1)
		*why = "a user name must follow the number";
	else if ((len = strlen(f[1])) > OTP_MAX_USER ||
	    strspn(f[1], USER_CHARS) != len)
		*why = "the user name must be 1 to " OTP_STR(OTP_MAX_USER)
		    " letters, digits and ._-";
	else if (n == 4)
		*why = "unexpected text after the groups";
	g = n == 3 ? f[2] : "";
	len = strlen(g);
	bad = len > OTP_MAX_GROUPS || (len > 0 && g[len - 1] == ',');
	while (!bad && (rc = list_item(&g, group, sizeof(group))) != 0)
		bad = rc < 0 || strspn(group, USER_CHARS) != strlen(group);
	if (*why == NULL && bad)
		*why = "the groups must be a comma-separated list of letters, "
		    "digits and ._-, at most " OTP_STR(OTP_MAX_GROUPS)
		    " characters";
	if (*why != NULL)
		return -1;
	str_copy(u->name, sizeof(u->name), f[1]);
	str_copy(u->groups, sizeof(u->groups), n == 3 ? f[2] : "");
	return 0;
}

/* Orders users by number: phone is their first member, and the key of
 * user_find()'s bsearch a number. */
_Static_assert(offsetof(struct user, phone) == 0, "user_cmp needs it");

static int
user_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

/*
 * Reads USERS_FILE (if set) into c->users: at most OTP_MAX_USERS, in one
 * allocation, sorted by number. Any bad line is an error naming the file
 * and line: a typo must not quietly lock a person out, or let one in.
 */
static int
users_load(struct config *c, const struct origin *o, char *err,
           size_t errlen)
{
	char line[256], where[OTP_MAX_STR + 32];
	const char *why = NULL;
	struct user *u, *small;
	size_t n = 0;
	int lineno = 0, first = 0;
	FILE *f;

	if (c->users_file[0] == '\0')
		return 0;
	config_where(o, "USERS_FILE", where, sizeof(where));
	if ((f = fopen(c->users_file, "r")) == NULL)
		return config_error(err, errlen, where, "USERS_FILE %s: %s",
		    c->users_file, strerror(errno));
	/* One spare row: a line is parsed into u[n] before it is counted. */
	if ((u = malloc((OTP_MAX_USERS + 1) * sizeof(*u))) == NULL)
		why = "out of memory";
	while (why == NULL && fgets(line, sizeof(line), f) != NULL) {
		lineno++;
		if (strchr(line, '\n') == NULL && !feof(f))
			why = "line too long";
		else if (user_parse(line, &u[n], &why) != 0)
			continue; /* a comment, or why is set */
		else if (n == OTP_MAX_USERS)
			why = "more than " OTP_STR(OTP_MAX_USERS) " users";
		else
			u[n++].line = lineno;
	}
	if (why == NULL && ferror(f))
		why = "read error";
	fclose(f);
	if (why == NULL)
		qsort(u, n, sizeof(*u), user_cmp);
	for (size_t i = 1; why == NULL && i < n; i++) {
		int a = u[i - 1].line, b = u[i].line;

		if (strcmp(u[i - 1].phone, u[i].phone) == 0) {
			why = "the number is listed already, on line";
			lineno = a > b ? a : b;
			first = a + b - lineno;
		}
	}
	if (why != NULL) {
		free(u);
		snprintf(where, sizeof(where), "%s:%d", c->users_file, lineno);
		return config_error(err, errlen, where, first ? "%s %d" : "%s",
		    why, first);
	}
	/* Shrunk to what the file holds (kept as it is if that fails). */
	small = realloc(u, (n + 1) * sizeof(*u));
	c->users = small != NULL ? small : u;
	c->nusers = n;
	return 0;
}

/* The USERS_FILE line of phone (E.164), or NULL. O(log n). */
static const struct user *
user_find(const struct config *c, const char *phone)
{
	return c->nusers > 0 ? bsearch(phone, c->users, c->nusers,
	    sizeof(*c->users), user_cmp) : NULL;
}

/* Whether phone may be sent a code and pass /auth: any number without
 * USERS_FILE, a listed one with it. */
static bool
user_may_pass(const struct config *c, const char *phone)
{
	return c->users_file[0] == '\0' || user_find(c, phone) != NULL;
}

/*
 * Secrets that may come from a file (systemd credentials, a 0600 file),
 * which beats the key inline: a row each, the file's key and where its
 * path and the secret are.
 */
#define KEY_FILE(name, file, secret) { name, offsetof(struct config, file), \
	offsetof(struct config, secret), sizeof(((struct config *)0)->secret) }
static const struct {
	const char *name;
	size_t file, secret, size;
} key_files[] = {
	KEY_FILE("API_KEY_FILE", api_key_file, api_key),
	KEY_FILE("WEBHOOK_SECRET_FILE", webhook_secret_file, webhook_secret),
#ifdef WITH_REDIS
	KEY_FILE("STORE_PASSWORD_FILE", store_password_file, store_password),
#endif
};
#undef KEY_FILE

/* Reads every key_files[] file that is set. 0, or -1 with err. */
static int
config_key_files(struct config *c, const struct origin *o, char *err,
                 size_t errlen)
{
	for (size_t i = 0; i < countof(key_files); i++) {
		const char *path = (const char *)c + key_files[i].file;

		if (path[0] != '\0' && config_read_key(o, key_files[i].name,
		    path, (char *)c + key_files[i].secret, key_files[i].size,
		    err, errlen) != 0)
			return -1;
	}
	return 0;
}

static int
config_finish(struct config *c, const struct origin *o, char *err,
              size_t errlen)
{
	if (config_key_files(c, o, err, errlen) != 0)
		return -1;
	/* No SMS_PROVIDER: the tutorial's placeholder key means "no account
	 * yet". */
	c->sender = &senders[c->api_key[0] != '\0' &&
	    strcmp(c->api_key, "YOUR_API_KEY") != 0 ? SENDER_telnyx :
	    SENDER_console];
	for (int i = 0; i < SENDER__N; i++)
		if (strcmp(c->sms_provider, senders[i].name) == 0)
			c->sender = &senders[i];

	/* The tutorial's config sets TOKEN_LENGTH and no alphabet: hex. */
	c->alphabet = strcmp(c->token_alphabet, "digits") == 0 ?
	    ALPHABET_DIGITS : ALPHABET_HEX;

	if (config_countries(c, o, err, errlen) != 0 ||
	    config_upstream(c, o, err, errlen) != 0 ||
	    config_check_console(c, o, err, errlen) != 0 ||
	    config_check_webhook(c, o, err, errlen) != 0 ||
	    config_check_store(c, o, err, errlen) != 0 ||
	    (c->sender->check != NULL && c->sender->check(c, o, err,
	    errlen) != 0))
		return -1;
	return users_load(c, o, err, errlen); /* last: it allocates */
}

/*
 * Loads defaults, then the file (if path is not NULL), then OTP_* from the
 * environment. Returns 0, or -1 with one line in err.
 */
static int
config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	struct origin o;

	memset(&o, 0, sizeof(o));
	o.file = path != NULL ? path : "environment";
	if (config_defaults(c, err, errlen) != 0)
		return -1;
	if (path != NULL && config_read_file(c, &o, path, err, errlen) != 0)
		return -1;
	if (config_read_env(c, &o, err, errlen) != 0)
		return -1;
	return config_finish(c, &o, err, errlen);
}

/*
 * The config a request reads, held until cfg_drop(). A reload builds a
 * new snapshot and swaps the pointer; it never waits for requests, and
 * requests never wait for it (an SMS send can take SMS_TIMEOUT). The last
 * holder of an old snapshot frees it. The mutex covers the pointer and
 * its count only.
 */
static const struct config *
cfg_hold(struct otp *otp)
{
	struct config *c;

	pthread_mutex_lock(&otp->cfg_swap);
	c = otp->cfg;
	atomic_fetch_add_explicit(&c->refs, 1, memory_order_relaxed);
	pthread_mutex_unlock(&otp->cfg_swap);
	return c;
}

static void
cfg_drop(const struct config *held)
{
	struct config *c = (struct config *)held; /* the holder's, now ours */

	if (c != NULL &&
	    atomic_fetch_sub_explicit(&c->refs, 1, memory_order_acq_rel) == 1) {
		free(c->users);
		wipe(c, sizeof(*c));
		free(c);
	}
}

/* Makes c the current snapshot (holding one reference) and drops the old. */
static void
cfg_swap(struct otp *otp, struct config *c)
{
	struct config *old;

	atomic_store(&c->refs, 1);
	atomic_store(&otp->debug, c->debug);
	atomic_store(&otp->hooks.on, c->webhook_url[0] != '\0');
	pthread_mutex_lock(&otp->cfg_swap);
	old = otp->cfg;
	otp->cfg = c;
	pthread_mutex_unlock(&otp->cfg_swap);
	cfg_drop(old);
}

/* ---- state files ------------------------------------------------------- */
/*
 * STATE_DIR holds what must outlive a restart: session.key (the keys of
 * sessions, CSRF tokens and forward-auth cookies), limits.state (the
 * rate windows) and revoked.state (the sessions ended by a logout).
 * Whoever can write there can forge sessions or reset the caps, so
 * start-up refuses (exit 78, with the fix) a directory another
 * user owns or can write, and a file that is not a regular file owned by
 * us with mode 0600. Files are written by file_write_atomic(): a fresh
 * temporary file (O_EXCL|O_NOFOLLOW), fsynced, renamed over.
 */

/* Checks STATE_DIR's owner and mode. 0, or -1 with the fix in err. */
static int
state_dir_check(const struct config *c, char *err, size_t errlen)
{
	struct stat sb;

	if (c->state_dir[0] == '\0')
		return 0;
	if (stat(c->state_dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
		snprintf(err, errlen, "STATE_DIR %s: %s; create it: install -d -m "
		    "700 %s", c->state_dir, errno ? strerror(errno) :
		    "not a directory", c->state_dir);
		return -1;
	}
	if (sb.st_uid != geteuid()) {
		snprintf(err, errlen, "STATE_DIR %s is owned by uid %u, not by "
		    "this user (uid %u); fix: chown %u %s", c->state_dir,
		    (unsigned)sb.st_uid, (unsigned)geteuid(),
		    (unsigned)geteuid(), c->state_dir);
		return -1;
	}
	if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "STATE_DIR %s is writable by %s (mode "
		    "%03o); fix: chmod 700 %s", c->state_dir,
		    sb.st_mode & S_IWOTH ? "others" : "its group",
		    (unsigned)(sb.st_mode & 0777), c->state_dir);
		return -1;
	}
	return 0;
}

/*
 * Opens a file of STATE_DIR for reading, refusing a symlink, another
 * user's file, and one its group or others can read or write. NULL with
 * errno ENOENT if it does not exist (err untouched), or NULL with the
 * reason and the fix in err.
 */
static FILE *
state_open(const char *path, const char *name, char *err, size_t errlen)
{
	struct stat sb;
	int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	FILE *f;

	if (fd < 0) {
		if (errno != ENOENT)
			snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
			    errno == ELOOP ? " (a symlink: remove it)" : "");
		return NULL;
	}
	if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file; remove it", path);
	} else if (sb.st_uid != geteuid()) {
		snprintf(err, errlen, "%s is owned by uid %u, not by this user "
		    "(uid %u); fix: chown %u %s", path, (unsigned)sb.st_uid,
		    (unsigned)geteuid(), (unsigned)geteuid(), path);
	} else if (sb.st_mode & 077) {
		snprintf(err, errlen, "%s has mode %03o: readable or writable by "
		    "others than its owner; fix: chmod 600 %s (and make a new "
		    "%s if someone else may have read it)", path,
		    (unsigned)(sb.st_mode & 0777), path, name);
	} else if ((f = fdopen(fd, "r")) != NULL) {
		return f;
	}
	close(fd);
	errno = EPERM;
	return NULL;
}

/*
 * Writes text, len bytes made in a buffer of cap (len >= cap: it did not
 * fit; text NULL: no buffer), to dir/name: atomically, mode 0600. 0, or
 * -1 with the reason logged.
 */
static int
state_write(const struct otp *otp, const char *dir, const char *name,
            const char *text, size_t len, size_t cap)
{
	char path[OTP_MAX_STR + 16];

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (text != NULL && len < cap &&
	    file_write_atomic(path, text, len, 0600) == 0)
		return 0;
	log_err(otp, "%s: cannot write %s: %s", __func__, path,
	    errno ? strerror(errno) : "too big");
	return -1;
}

/* Reads one line of a state file into the tables. 0, or -1 if
 * malformed. now is monotonic, wall Unix time, both in ms. */
typedef int (*state_line_fn)(struct otp *otp, const char *line, int64_t now,
                             int64_t wall);

/*
 * Reads dir/name (dir: STATE_DIR), if there is one: a first line starting
 * with magic, then a line each for fn. Start-up fails on a malformed file
 * (exit 78), with its line and what moving it away costs (hint): state
 * that silently resets is what the files are for. 0, or -1 with err.
 */
static int
state_load(struct otp *otp, const char *dir, const char *name,
           const char *magic, state_line_fn fn, const char *hint, char *err,
           size_t errlen)
{
	char path[OTP_MAX_STR + 16], line[128];
	int64_t now = otp->now_ms(), wall = otp->wall_ms();
	int lineno = 0, rc = 0;
	FILE *f;

	if (dir[0] == '\0')
		return 0;
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if ((f = state_open(path, name, err, errlen)) == NULL)
		return errno == ENOENT ? 0 : -1;
	while (rc == 0 && fgets(line, sizeof(line), f) != NULL)
		if (++lineno == 1 ? strncmp(line, magic, strlen(magic)) != 0 :
		    fn(otp, line, now, wall) != 0)
			rc = -1;
	fclose(f);
	if (rc != 0)
		snprintf(err, errlen, "%s:%d: not a %s line; move the file away "
		    "to start %s", path, lineno, name, hint);
	return rc;
}

/* ---- codes ------------------------------------------------------------- */

static int
rng_drbg(void *ctx, unsigned char *out, size_t len)
{
	struct otp *otp = ctx;
	int rc;

	/* One DRBG for all workers; mbedTLS may lack THREADING_C. */
	pthread_mutex_lock(&otp->rng_lock);
	rc = mbedtls_ctr_drbg_random(&otp->drbg, out, len);
	pthread_mutex_unlock(&otp->rng_lock);
	return rc == 0 ? 0 : -1;
}

/*
 * Writes a code of len characters to out (len + 1 bytes), and idlen
 * random bytes (at most OTP_ID_LEN; 0: none) to id, from one draw: each
 * call of the DRBG costs a key schedule and three AES blocks besides its
 * output, and takes rng_lock. Hex as in the tutorial: ceil(len/2) random
 * bytes, hex-encoded, cut to len. Digits: one random byte per digit,
 * rejecting bytes >= 250 so that each digit is equally likely (the
 * rejected ones are drawn again, as few as are missing).
 */
static int
code_generate(struct otp *otp, enum alphabet alphabet, char *out, size_t len,
              uint8_t *id, size_t idlen)
{
	uint8_t buf[OTP_ID_LEN + OTP_MAX_CODE_LEN];
	char hex[2 * OTP_MAX_CODE_LEN + 1];
	size_t need = alphabet == ALPHABET_HEX ? (len + 1) / 2 : len;
	size_t k = idlen, n = idlen + need; /* buf[k..n): not used yet */
	int rc = -1;

	if (len == 0 || len > OTP_MAX_CODE_LEN || idlen > OTP_ID_LEN)
		return -1;
	if (otp->rng(otp->rng_ctx, buf, n) != 0)
		goto out;
	if (idlen > 0)
		memcpy(id, buf, idlen);
	if (alphabet == ALPHABET_HEX) {
		hex_encode(buf + idlen, need, hex, true);
		memcpy(out, hex, len);
	} else {
		for (size_t i = 0; i < len; k++) {
			if (k == n) {
				k = 0;
				n = len - i;
				if (otp->rng(otp->rng_ctx, buf, n) != 0)
					goto out;
			}
			if (buf[k] < 250)
				out[i++] = (char)('0' + buf[k] % 10);
		}
	}
	out[len] = '\0';
	rc = 0;
out:
	wipe(buf, sizeof(buf));
	wipe(hex, sizeof(hex));
	return rc;
}

/* The keyed hash a code is checked by: HMAC-SHA256 of the upper-cased
 * code. Input longer than a code can be never matches. */
static int
code_mac(const struct otp *otp, const char *code, size_t len,
         uint8_t mac[OTP_MAC_LEN])
{
	char up[OTP_MAX_CODE_LEN];
	int rc;

	if (len > sizeof(up))
		len = sizeof(up); /* cannot match: codes are shorter */
	for (size_t i = 0; i < len; i++)
		up[i] = (char)toupper((unsigned char)code[i]);
	rc = hmac_keyed(&otp->code_hk, up, len, mac);
	wipe(up, sizeof(up));
	return rc;
}

/* log10 of the number of possible codes, to compare with NIST's minimum
 * of six decimal digits (about 20 bits). */
static double
code_strength_digits(const struct config *c)
{
	/* log10(16) = 1.2041 */
	return (double)c->token_length *
	    (c->alphabet == ALPHABET_HEX ? 1.2041199826559248 : 1.0);
}

/* ---- code store -------------------------------------------------------- */
/*
 * MAX_PENDING records in one array, allocated once. A verification handle
 * (the otp_vid cookie, the API's id) is the slot number and the record's
 * random id, so a lookup is O(1) whatever the table's size; free slots are
 * a stack. The array is mapped on its own and excluded from core dumps,
 * since it holds codes.
 *
 * A record lives (REC_LIVE), may be locked by wrong codes (REC_LOCKED), and
 * ends verified, expired or cancelled. When it ends, its code, hash and
 * number are wiped at once; a verified or expired record stays as a
 * tombstone (id and state only) so the JSON API can still say "approved"
 * or "expired", for OTP_TOMBSTONE_MS after the code's validity, or until
 * its slot is needed.
 */

static void hook_note(struct hooks *h, uint32_t slot, const struct record *r,
                      enum hook_event e); /* in "webhooks" */
#ifdef WITH_REDIS
static void hook_queue(struct hooks *h, uint32_t slot,
                       const uint8_t id[OTP_ID_LEN], const char *to,
                       enum hook_event e); /* in "webhooks" */
#endif

static int
store_init(struct store *st, uint32_t cap)
{
	memset(st, 0, sizeof(*st));
	st->rec_bytes = (size_t)cap * sizeof(struct record);
	st->rec = mmap(NULL, st->rec_bytes, PROT_READ | PROT_WRITE,
	    MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (st->rec == MAP_FAILED) {
		st->rec = NULL;
		return -1;
	}
#ifdef MADV_DONTDUMP
	madvise(st->rec, st->rec_bytes, MADV_DONTDUMP);
#endif
	st->free = calloc(cap, sizeof(*st->free));
	if (st->free == NULL) {
		munmap(st->rec, st->rec_bytes);
		st->rec = NULL;
		return -1;
	}
	st->cap = cap;
	/* Pop order 0, 1, 2...: the lowest slots stay warm in cache. */
	for (uint32_t i = 0; i < cap; i++)
		st->free[i] = cap - 1 - i;
	st->nfree = cap;
	pthread_mutex_init(&st->lock, NULL);
	return 0;
}

static void
store_free(struct store *st)
{
	if (st->rec != NULL) {
		wipe(st->rec, (size_t)st->top * sizeof(*st->rec));
		munmap(st->rec, st->rec_bytes);
		pthread_mutex_destroy(&st->lock);
	}
	free(st->free);
	memset(st, 0, sizeof(*st));
}

static bool
rec_has_code(const struct record *r)
{
	return r->state == REC_LIVE || r->state == REC_LOCKED;
}

/*
 * Ends a record: wipes its secrets and either frees the slot (state
 * REC_FREE) or leaves a tombstone in state. An expired web record keeps
 * its number while its tombstone lives, so that "Send a new code" needs
 * no retyping (on_resend()); every other ending wipes it at once. An
 * approval, or the expiry of a live code, is a webhook event. Caller
 * holds the lock.
 */
static void
store_end(struct store *st, uint32_t slot, enum rec_state state)
{
	struct record *r = &st->rec[slot];

	if (r->state == REC_FREE)
		return;
	if (state == REC_VERIFIED || (state == REC_EXPIRED &&
	    r->state == REC_LIVE))
		hook_note(st->hooks, slot, r, state == REC_VERIFIED ?
		    HOOK_APPROVED : HOOK_EXPIRED);
	st->live -= rec_has_code(r);
	wipe(r->code, sizeof(r->code));
	wipe(r->mac, sizeof(r->mac));
	if (state != REC_EXPIRED || r->ns != NS_WEB) {
		wipe(r->phone, sizeof(r->phone));
		wipe(r->shown, sizeof(r->shown));
	}
	if (state == REC_FREE) {
		wipe(r, sizeof(*r));
		st->free[st->nfree++] = slot;
	} else {
		r->state = (uint8_t)state;
	}
}

/* Moves a record on by the clock: a code past ttl expires, a tombstone
 * OTP_TOMBSTONE_MS past the code's validity is freed. Caller holds the
 * lock. */
static void
store_age(struct store *st, uint32_t slot, int64_t now, int64_t ttl_ms)
{
	struct record *r = &st->rec[slot];
	int64_t age = now - r->created_ms;

	if (r->state == REC_FREE)
		return;
	/* Both steps at once: a record first seen long after its code
	 * expired is simply gone, as the sweeper would have made it. */
	if (rec_has_code(r) && age >= ttl_ms)
		store_end(st, slot, REC_EXPIRED);
	if (r->state != REC_FREE && !rec_has_code(r) &&
	    age >= ttl_ms + OTP_TOMBSTONE_MS)
		store_end(st, slot, REC_FREE);
}

/* Whether r belongs to ow: the same namespace and session. */
static bool
rec_owned(const struct record *r, const struct owner *ow)
{
	return r->ns == (uint8_t)ow->ns && ct_equal(r->sid, ow->sid,
	    OTP_SID_LEN);
}

/*
 * Adds a record for phone with code, bound to its owner; writes its
 * slot. Returns 0, or -1 when every record is live (the caller answers
 * 503): tombstones and expired records are reused, live ones never.
 */
static int
store_add(struct store *st, const char *phone, const char *shown,
          uint64_t nkey, const char *code, const uint8_t mac[OTP_MAC_LEN],
          const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
          int64_t ttl_ms, uint32_t *slot)
{
	struct record *r;

	pthread_mutex_lock(&st->lock);
	/* O(MAX_PENDING), only when full, and at most once per sweep
	 * interval: a client hammering a full table must not make each of
	 * its requests scan it under the lock (the sweeper frees the rest
	 * within OTP_SWEEP_MS). */
	if (st->nfree == 0 && now - st->full_scan_ms >= OTP_SWEEP_MS) {
		st->full_scan_ms = now;
		for (uint32_t i = 0; i < st->cap; i++) {
			store_age(st, i, now, ttl_ms);
			if (!rec_has_code(&st->rec[i]))
				store_end(st, i, REC_FREE);
		}
	}
	if (st->nfree == 0) {
		pthread_mutex_unlock(&st->lock);
		return -1;
	}
	*slot = st->free[--st->nfree];
	if (*slot >= st->top)
		st->top = *slot + 1;
	r = &st->rec[*slot];
	memcpy(r->id, id, OTP_ID_LEN);
	memcpy(r->sid, ow->sid, OTP_SID_LEN);
	memcpy(r->mac, mac, OTP_MAC_LEN);
	str_copy(r->phone, sizeof(r->phone), phone);
	str_copy(r->shown, sizeof(r->shown), shown != NULL ? shown : "");
	str_copy(r->code, sizeof(r->code), code);
	r->created_ms = now;
	r->nkey = nkey;
	r->attempts = 0;
	r->state = REC_LIVE;
	st->live++;
	r->ns = (uint8_t)ow->ns;
	r->sends = 1;
	pthread_mutex_unlock(&st->lock);
	return 0;
}

/* Finds record (slot, id), aged to now. Caller holds the lock. */
static struct record *
store_get(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN],
          int64_t now, int64_t ttl_ms)
{
	struct record *r;

	if (slot >= st->cap)
		return NULL;
	r = &st->rec[slot];
	if (r->state == REC_FREE || !ct_equal(r->id, id, OTP_ID_LEN))
		return NULL;
	store_age(st, slot, now, ttl_ms);
	return r->state == REC_FREE ? NULL : r;
}

/*
 * Cancels record (slot, id): frees it if it still has a code. Returns 0,
 * -1 if there is no such record, -2 if it already ended (a tombstone).
 */
static int
store_cancel(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN],
             const struct owner *ow, int64_t now, int64_t ttl_ms)
{
	struct record *r;
	int rc = -1;

	pthread_mutex_lock(&st->lock);
	if ((r = store_get(st, slot, id, now, ttl_ms)) != NULL &&
	    rec_owned(r, ow)) {
		rc = rec_has_code(r) ? 0 : -2;
		if (rc == 0)
			store_end(st, slot, REC_FREE);
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* The state of record (slot, id), REC_FREE if unknown; *left is the
 * number of milliseconds its code stays valid. */
static enum rec_state
store_state(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN],
            const struct owner *ow, int64_t now, int64_t ttl_ms,
            int64_t *left)
{
	enum rec_state state = REC_FREE;
	struct record *r;

	*left = 0;
	pthread_mutex_lock(&st->lock);
	if ((r = store_get(st, slot, id, now, ttl_ms)) != NULL &&
	    rec_owned(r, ow)) {
		state = (enum rec_state)r->state;
		if (rec_has_code(r))
			*left = r->created_ms + ttl_ms - now;
	}
	pthread_mutex_unlock(&st->lock);
	return state;
}

/* A web session's record as its pages show it (store_view()). */
struct view {
	enum rec_state state;     /* REC_FREE: none, or not the owner's */
	uint32_t slot;
	uint8_t id[OTP_ID_LEN];   /* with slot, its handle */
	uint32_t attempts;        /* wrong codes so far */
	int64_t left_ms;          /* until the code expires */
	uint64_t nkey;            /* its number's rate window; 0: unknown */
	char phone[OTP_MAX_PHONE_LEN + 1]; /* "" once wiped */
	char shown[OTP_MAX_SHOWN];         /* "" if never set */
};

/* Whether v is a record the session's pages show: not ended by its
 * code, its number still kept. */
static bool
view_open(const struct view *v)
{
	return v->state != REC_VERIFIED && v->phone[0] != '\0';
}

/* Copies record r at slot into v. Caller holds the lock. */
static void
view_fill(struct view *v, const struct record *r, uint32_t slot, int64_t now,
          int64_t ttl_ms)
{
	v->state = (enum rec_state)r->state;
	v->slot = slot;
	memcpy(v->id, r->id, OTP_ID_LEN);
	v->attempts = r->attempts;
	v->left_ms = rec_has_code(r) ? r->created_ms + ttl_ms - now : 0;
	v->nkey = r->nkey;
	memcpy(v->phone, r->phone, sizeof(v->phone));
	memcpy(v->shown, r->shown, sizeof(v->shown));
}

/*
 * Copies record (slot, id) of owner ow into v, aged to now; first, if
 * shown is not NULL, sets its number as shown. v holds a full number: the
 * caller wipes it.
 */
static void
store_view(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN],
           const struct owner *ow, int64_t now, int64_t ttl_ms,
           const char *shown, struct view *v)
{
	struct record *r;

	memset(v, 0, sizeof(*v));
	pthread_mutex_lock(&st->lock);
	if ((r = store_get(st, slot, id, now, ttl_ms)) != NULL &&
	    rec_owned(r, ow)) {
		if (shown != NULL && r->phone[0] != '\0')
			str_copy(r->shown, sizeof(r->shown), shown);
		view_fill(v, r, slot, now, ttl_ms);
	}
	pthread_mutex_unlock(&st->lock);
}

/* A wrong code for live record r at slot: counts it, and the last allowed
 * one locks the record and wipes its code. Caller holds the lock. */
static enum check
store_wrong(struct store *st, uint32_t slot, struct record *r,
            uint32_t max_attempts, uint32_t *tries)
{
	*tries = ++r->attempts;
	if (r->attempts < max_attempts)
		return CHECK_WRONG;
	r->state = REC_LOCKED;
	hook_note(st->hooks, slot, r, HOOK_LOCKED);
	wipe(r->code, sizeof(r->code));
	wipe(r->mac, sizeof(r->mac));
	return CHECK_LOCKED;
}

/*
 * Checks a code against record (slot, id), which must belong to ow: a
 * stolen handle alone is not enough. mac is NULL for input that cannot be
 * a code (the wrong length): a wrong guess without a compare. On success
 * the record ends (a code works once). A wrong code counts an attempt
 * under the lock, so parallel guesses cannot exceed max_attempts, and sets
 * *tries to the wrong codes counted, this one too (else it is 0: not a
 * guess): store_wrong(). v is the record as the check left it (on success
 * with its number, which the record no longer keeps), for the page that
 * says what happened without a second look (store_view()); the caller
 * wipes it.
 */
static enum check
store_check(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN],
            const struct owner *ow, const uint8_t *mac, int64_t now,
            int64_t ttl_ms, uint32_t max_attempts, struct view *v,
            uint32_t *tries)
{
	enum check rc = CHECK_UNKNOWN;
	struct record *r;

	*tries = 0;
	memset(v, 0, sizeof(*v));
	pthread_mutex_lock(&st->lock);
	if ((r = store_get(st, slot, id, now, ttl_ms)) == NULL ||
	    !rec_owned(r, ow))
		goto out;
	switch (r->state) {
	case REC_EXPIRED: rc = CHECK_EXPIRED; break;
	case REC_VERIFIED: rc = CHECK_DONE; break;
	case REC_LOCKED: rc = CHECK_LOCKED; break;
	default:
		rc = mac != NULL && ct_equal(r->mac, mac, OTP_MAC_LEN) ?
		    CHECK_OK : store_wrong(st, slot, r, max_attempts, tries);
	}
	view_fill(v, r, slot, now, ttl_ms);
	if (rc == CHECK_OK) {
		store_end(st, slot, REC_VERIFIED);
		v->state = REC_VERIFIED;
		v->left_ms = 0;
	}
out:
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/*
 * For a check by number: copies the id of the record at slot if it still
 * has a code (live or locked), is owned by ow and is for phone. 0, or -1.
 */
static int
store_id_of(struct store *st, uint32_t slot, const char *phone,
            const struct owner *ow, int64_t now, int64_t ttl_ms,
            uint8_t id[OTP_ID_LEN])
{
	struct record *r;
	int rc = -1;

	pthread_mutex_lock(&st->lock);
	if (slot < st->cap) {
		store_age(st, slot, now, ttl_ms);
		r = &st->rec[slot];
		if (rec_has_code(r) && rec_owned(r, ow) &&
		    strcmp(r->phone, phone) == 0) {
			memcpy(id, r->id, OTP_ID_LEN);
			rc = 0;
		}
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* What store_resend() found. */
enum resend_found {
	RESEND_OK,       /* the code and id are copied, the send counted */
	RESEND_NONE,     /* no such record: the caller starts a new one */
	RESEND_SPENT,    /* it was sent max_sends times */
};

/*
 * For a resend: copies the code and id of the record at slot if it is
 * live, for phone and owned by ow (a code never moves to another session
 * or namespace), and counts the send.
 */
static enum resend_found
store_resend(struct store *st, uint32_t slot, const char *phone,
             const struct owner *ow, int64_t now, int64_t ttl_ms,
             uint32_t max_sends, char code[OTP_MAX_CODE_LEN + 1],
             uint8_t id[OTP_ID_LEN])
{
	struct record *r;
	enum resend_found rc = RESEND_NONE;

	pthread_mutex_lock(&st->lock);
	if (slot < st->cap) {
		store_age(st, slot, now, ttl_ms);
		r = &st->rec[slot];
		if (r->state == REC_LIVE && strcmp(r->phone, phone) == 0 &&
		    rec_owned(r, ow)) {
			rc = r->sends >= max_sends ? RESEND_SPENT : RESEND_OK;
			if (rc == RESEND_OK) {
				str_copy(code, OTP_MAX_CODE_LEN + 1, r->code);
				memcpy(id, r->id, OTP_ID_LEN);
				r->sends += r->sends < UINT8_MAX;
			}
		}
	}
	pthread_mutex_unlock(&st->lock);
	return rc;
}

/* A resend that failed: the record keeps its code, not the send. */
static void
store_unsend(struct store *st, uint32_t slot, const uint8_t id[OTP_ID_LEN])
{
	pthread_mutex_lock(&st->lock);
	if (slot < st->cap && ct_equal(st->rec[slot].id, id, OTP_ID_LEN) &&
	    st->rec[slot].sends > 0)
		st->rec[slot].sends--;
	pthread_mutex_unlock(&st->lock);
}

/* Ages every record: wipes expired codes, frees old tombstones. Returns
 * about the number of records with a code. Run by the sweeper; O(top),
 * the most records ever held at once: slots are handed out lowest
 * first, so the ones above top were never used. Their pages stay
 * unmapped until a record is written there; read first, each would be
 * mapped twice, the second time with a TLB flush on every core. */
static uint32_t
store_sweep(struct store *st, int64_t now, int64_t ttl_ms)
{
	uint32_t live = 0;

	/* The lock is taken per chunk: a sweep of a large table holds
	 * requests up for one chunk's time, not the whole table's (45 ms at
	 * MAX_PENDING 1000000). live is then approximate, which the tests
	 * that call this need; /metrics reads store_live(). */
	for (uint32_t i = 0, end, more = 1; more;) {
		pthread_mutex_lock(&st->lock);
		end = st->top - i > OTP_SWEEP_CHUNK ? i + OTP_SWEEP_CHUNK :
		    st->top;
		for (; i < end; i++) {
			store_age(st, i, now, ttl_ms);
			live += rec_has_code(&st->rec[i]);
		}
		more = i < st->top;
		pthread_mutex_unlock(&st->lock);
	}
	return live;
}

/* Records with a code (live or locked), counted as they change, and
 * records in use (tombstones too). O(1), for /metrics. */
static void
store_counts(struct store *st, uint32_t *live, uint32_t *used)
{
	pthread_mutex_lock(&st->lock);
	*live = st->live;
	*used = st->cap - st->nfree;
	pthread_mutex_unlock(&st->lock);
}

/* ---- rate limits ------------------------------------------------------- */
/*
 * Fixed windows: a key's count starts with its first counted send and
 * resets a period later. Keys are keyed hashes (clients cannot aim them),
 * and each table is allocated once, sized from the caps so that it can
 * never fill: a window is made only when a send (or a wrong code) is
 * counted, and the global caps bound those, so a table holds at most
 * 2 x SMS_PER_HOUR live windows (fixed windows let two periods' worth
 * through around a boundary) and is made OTP_RATE_LOAD times bigger.
 *
 * A key lives in one of the OTP_RATE_PROBES slots after its hash. A
 * lookup searches all of them for the key before it takes a free or ended
 * slot, and a live window is never overwritten: if all the slots hold
 * other keys' live windows (a table too small for a raised cap), the
 * request is refused (LIMIT_FULL, 503), never let through uncounted. A
 * refused request counts nothing and makes no window.
 */

static const char *const limit_names[LIMIT__N] = {
	[LIMIT_NONE] = "none", [LIMIT_RESEND] = "resend_interval",
	[LIMIT_NUMBER] = "per_number", [LIMIT_IP] = "per_ip",
	[LIMIT_HOUR] = "per_hour", [LIMIT_DAY] = "per_day",
	[LIMIT_VERIFY_IP] = "verify_per_ip", [LIMIT_NETWORK] = "per_network",
	[LIMIT_API_HOUR] = "api_per_hour",
	[LIMIT_VERIFICATION] = "per_verification",
	[LIMIT_FULL] = "table_full", [LIMIT_STORE] = "store",
};

/* Limits that hold for everyone at once (the outcome table answers them
 * 503; a client's own, 429). */
static bool
limit_is_global(enum limit l)
{
	return l == LIMIT_HOUR || l == LIMIT_DAY || l == LIMIT_FULL;
}

/* Slots for a table that must hold `windows` live ones. */
static uint32_t
ratetab_slots(uint64_t windows)
{
	uint64_t want = windows * OTP_RATE_LOAD;
	uint32_t n = OTP_RATE_MIN_SLOTS;

	while (n < want && n < OTP_RATE_MAX_SLOTS)
		n <<= 1;
	return n;
}

static int
ratetab_init(struct ratetab *t, uint32_t slots, int64_t period_ms)
{
	t->w = calloc(slots, sizeof(*t->w));
	t->mask = slots - 1;
	t->period_ms = period_ms;
	return t->w != NULL ? 0 : -1;
}

/*
 * How long a number's window is kept after its last send, even past its
 * period: while RESEND_INTERVAL runs, and while the record that send was
 * for may still be live (its slot is where a resend finds it).
 */
static int64_t
number_hold(const struct config *c)
{
	return (c->resend_interval > c->code_ttl ? c->resend_interval :
	    c->code_ttl) * 1000;
}

/* Whether w's period is still running. */
static bool
window_current(const struct ratetab *t, const struct window *w, int64_t now)
{
	return w->key != 0 && now - w->start_ms < t->period_ms;
}

/* Whether w must keep its slot: its period runs, or (numbers) its last
 * send is within hold_ms (number_hold()). */
static bool
window_busy(const struct ratetab *t, const struct window *w, int64_t now,
            int64_t hold_ms)
{
	return window_current(t, w, now) ||
	    (w->key != 0 && w->last_ms != 0 && now - w->last_ms < hold_ms);
}

/*
 * Where key's window is or would go: its own slot if it has one, else the
 * first free or finished slot among its probes; NULL if every probe holds
 * another key's busy window. Changes nothing. Caller holds the lock.
 */
static struct window *
ratetab_find(const struct ratetab *t, uint64_t key, int64_t now,
             int64_t hold_ms)
{
	struct window *room = NULL;

	for (uint32_t i = 0; i < OTP_RATE_PROBES; i++) {
		struct window *w = &t->w[(key + i) & t->mask];

		if (w->key == key)
			return w;
		if (room == NULL && !window_busy(t, w, now, hold_ms))
			room = w;
	}
	return room;
}

/* What key has counted in this period at w (from ratetab_find). */
static uint32_t
window_count(const struct ratetab *t, const struct window *w, uint64_t key,
             int64_t now)
{
	return w->key == key && window_current(t, w, now) ? w->count : 0;
}

/* Counts one for key at w, taking the slot or starting a new period. */
static void
window_add(const struct ratetab *t, struct window *w, uint64_t key,
           int64_t now)
{
	if (w->key != key) {
		memset(w, 0, sizeof(*w));
		w->key = key;
		w->slot = -1;
		w->start_ms = now;
	} else if (!window_current(t, w, now)) {
		w->start_ms = now;
		w->count = 0;
	}
	w->count++;
}

/* Seconds until a window of period_ms that started at start ends, >= 1. */
static long
window_retry(int64_t start, int64_t now, int64_t period_ms)
{
	int64_t ms = start + period_ms - now;

	return ms <= 1000 ? 1 : (long)((ms + 999) / 1000);
}

/* A global window's count now (0 once its period is over). */
static uint32_t
global_count(const struct window *w, int64_t now, int64_t period_ms)
{
	return w->start_ms != 0 && now - w->start_ms < period_ms ? w->count : 0;
}

static void
global_add(struct window *w, int64_t now, int64_t period_ms)
{
	if (global_count(w, now, period_ms) == 0) {
		w->start_ms = now;
		w->count = 0;
	}
	w->count++;
}

/* The table key of in: its keyed hash, cut to 64 bits. A check by
 * number hashes it again (mem_find()), and a keep-alive connection the
 * address of the last request: hmac_memo(). */
static uint64_t
limits_hash(const struct limits *l, const void *in, size_t len)
{
	uint8_t mac[OTP_MAC_LEN];
	uint64_t k;

	hmac_memo(&l->hkey, in, len, mac);
	memcpy(&k, mac, sizeof(k));
	return k | 1; /* 0 marks a free slot */
}

/* The key of a number in a namespace. */
static uint64_t
limits_number_key(const struct limits *l, enum ns ns, const char *phone)
{
	/* "n<ns>:<phone>", cut to the buffer; ns is one digit (enum ns) */
	char buf[4 + OTP_MAX_PHONE_LEN + 1] = { 'n', (char)('0' + ns % 10),
	    ':' };

	str_copy(buf + 3, sizeof(buf) - 3, phone);
	return limits_hash(l, buf, strlen(buf));
}

/*
 * The keys of a client address: *addr for the address itself (IPv4 /32,
 * IPv6 the first prefix bits, so rotating within a /64 does not help)
 * and *net for its network (IPv4 /24, IPv6 /48). An IPv4-mapped IPv6
 * address is the IPv4 one. Anything else is keyed as it is written.
 */
static void
limits_client_keys(const struct limits *l, const char *addr, long prefix,
                   uint64_t *akey, uint64_t *nkey)
{
	static const uint8_t mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	                                    0xff, 0xff };
	uint8_t ip[17], a[18];
	size_t len, netbits, bits;

	if (!addr_parse(addr, strlen(addr), ip)) {
		*akey = *nkey = limits_hash(l, addr, strlen(addr));
		return;
	}
	if (ip[0] == 16 && memcmp(ip + 1, mapped, sizeof(mapped)) != 0) {
		a[0] = '6', bits = (size_t)prefix, len = 17;
		netbits = prefix < OTP_NET6_PREFIX ? (size_t)prefix :
		    OTP_NET6_PREFIX;
	} else {
		a[0] = '4', bits = 32, netbits = OTP_NET4_PREFIX, len = 5;
	}
	memcpy(a + 1, ip + 1 + (ip[0] - (len - 1)), len - 1);
	for (size_t i = bits; i < (len - 1) * 8; i++)
		a[1 + i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	a[len] = (uint8_t)bits;
	*akey = limits_hash(l, a, len + 1);
	for (size_t i = netbits; i < bits; i++)
		a[1 + i / 8] &= (uint8_t)~(0x80u >> (i % 8));
	a[0] = (uint8_t)(a[0] == '6' ? 'N' : 'n');
	a[len] = (uint8_t)netbits;
	*nkey = limits_hash(l, a, len + 1);
}

/* A client as the limits see it: no address for the JSON API's own
 * calls (the application behind it is one back end, not one user). */
struct client {
	const char *addr;   /* for logs; NULL: not counted per address */
	uint64_t akey, nkey;
};

static void
client_init(const struct otp *otp, const struct config *c, struct client *cl,
            const char *addr)
{
	cl->addr = addr;
	if (addr != NULL)
		limits_client_keys(&otp->limits, addr, c->ipv6_prefix,
		    &cl->akey, &cl->nkey);
}

/* What limits_take() was asked for and found. */
struct take {
	enum ns ns;
	const char *phone;
	const struct client *cl;
	long retry;          /* out: seconds, when refused */
	int32_t slot;        /* out: the number's newest record, or -1
				(reserve() may make a newer one) */
	uint64_t knum;       /* out: the number's key (limits_number_key()) */
};

/* The share of a global cap one network may use, at least 1. */
static uint32_t
share_of(long cap, long percent)
{
	long n = cap * percent / 100;

	return n < 1 ? 1 : (uint32_t)n;
}

/*
 * Checks the send limits of a request (under the lock): which one, if
 * any, refuses it, with *retry. w[] gets the windows to count in.
 */
static enum limit
limits_check_send(struct otp *otp, const struct config *c, struct take *tk,
                  uint64_t knum, int64_t now, struct window *w[T__N])
{
	struct limits *l = &otp->limits;
	struct ratetab *t = l->tab;
	bool api = tk->ns == NS_API, per_client = tk->cl->addr != NULL;
	int64_t hold = c->resend_interval * 1000;
	uint32_t per_number = (uint32_t)(api ? c->api_sms_per_number_per_hour :
	    c->sms_per_number_per_hour);
	struct window *num;

	memset(w, 0, sizeof(*w) * T__N);
	num = w[T_NUMBER] = ratetab_find(&t[T_NUMBER], knum, now,
	    number_hold(c));
	if (per_client) {
		w[T_ADDR] = ratetab_find(&t[T_ADDR], tk->cl->akey, now, 0);
		w[T_NET_HOUR] = ratetab_find(&t[T_NET_HOUR], tk->cl->nkey, now, 0);
		w[T_NET_DAY] = ratetab_find(&t[T_NET_DAY], tk->cl->nkey, now, 0);
	}
	if (num == NULL || (per_client && (w[T_ADDR] == NULL ||
	    w[T_NET_HOUR] == NULL || w[T_NET_DAY] == NULL))) {
		tk->retry = 60;
		return LIMIT_FULL;
	}
	if (num->key == knum && num->last_ms != 0 &&
	    now - num->last_ms < hold) {
		tk->retry = window_retry(num->last_ms, now, hold);
		return LIMIT_RESEND;
	}
	if (window_count(&t[T_NUMBER], num, knum, now) >= per_number) {
		tk->retry = window_retry(num->start_ms, now, HOUR_MS);
		return LIMIT_NUMBER;
	}
	if (per_client && window_count(&t[T_ADDR], w[T_ADDR], tk->cl->akey,
	    now) >= (uint32_t)c->sms_per_ip_per_hour) {
		tk->retry = window_retry(w[T_ADDR]->start_ms, now, HOUR_MS);
		return LIMIT_IP;
	}
	if (api && global_count(&l->api_hour, now, HOUR_MS) >=
	    (uint32_t)c->api_sms_per_hour) {
		tk->retry = window_retry(l->api_hour.start_ms, now, HOUR_MS);
		return LIMIT_API_HOUR;
	}
	if (global_count(&l->hour, now, HOUR_MS) >= (uint32_t)c->sms_per_hour) {
		tk->retry = window_retry(l->hour.start_ms, now, HOUR_MS);
		return LIMIT_HOUR;
	}
	if (global_count(&l->day, now, DAY_MS) >= (uint32_t)c->sms_per_day) {
		tk->retry = window_retry(l->day.start_ms, now, DAY_MS);
		return LIMIT_DAY;
	}
	/* After the global caps: when they are spent, everyone is told so
	 * (503); a network's share spent is that network's own (429). */
	if (per_client && window_count(&t[T_NET_HOUR], w[T_NET_HOUR],
	    tk->cl->nkey, now) >= share_of(c->sms_per_hour, c->network_share)) {
		tk->retry = window_retry(w[T_NET_HOUR]->start_ms, now, HOUR_MS);
		return LIMIT_NETWORK;
	}
	if (per_client && window_count(&t[T_NET_DAY], w[T_NET_DAY],
	    tk->cl->nkey, now) >= share_of(c->sms_per_day, c->network_share)) {
		tk->retry = window_retry(w[T_NET_DAY]->start_ms, now, DAY_MS);
		return LIMIT_NETWORK;
	}
	return LIMIT_NONE;
}

/* Counts one send in each window w[] and the global ones. */
static void
limits_count_send(struct limits *l, const struct take *tk, uint64_t knum,
                  int64_t now, struct window *w[T__N])
{
	window_add(&l->tab[T_NUMBER], w[T_NUMBER], knum, now);
	w[T_NUMBER]->last_ms = now;
	if (tk->cl->addr != NULL) {
		window_add(&l->tab[T_ADDR], w[T_ADDR], tk->cl->akey, now);
		window_add(&l->tab[T_NET_HOUR], w[T_NET_HOUR], tk->cl->nkey, now);
		window_add(&l->tab[T_NET_DAY], w[T_NET_DAY], tk->cl->nkey, now);
	}
	if (tk->ns == NS_API)
		global_add(&l->api_hour, now, HOUR_MS);
	global_add(&l->hour, now, HOUR_MS);
	global_add(&l->day, now, DAY_MS);
	l->changes++;
}

/*
 * Checks every send limit for a request and, if all pass and reserve()
 * agrees, counts the send in each. reserve() runs under the lock with
 * tk->slot the number's newest record (or -1), which it may set to a
 * record it makes: the number's window then points at it. A refused
 * request changes nothing. Returns LIMIT_NONE or the limit that
 * refused, with tk->retry set; tk->slot is the newest record for the
 * number in this namespace, or -1.
 */
static enum limit
limits_take(struct otp *otp, const struct config *c, struct take *tk,
            int64_t now,
            enum limit (*reserve)(void *arg, struct take *tk), void *arg)
{
	struct limits *l = &otp->limits;
	uint64_t knum = limits_number_key(l, tk->ns, tk->phone);
	struct window *w[T__N];
	enum limit rc;

	tk->slot = -1;
	tk->knum = knum;
	pthread_mutex_lock(&l->lock);
	rc = limits_check_send(otp, c, tk, knum, now, w);
	if (rc == LIMIT_NONE && w[T_NUMBER]->key == knum)
		tk->slot = w[T_NUMBER]->slot;
	if (rc == LIMIT_NONE && reserve != NULL)
		rc = reserve(arg, tk);
	if (rc == LIMIT_NONE) {
		limits_count_send(l, tk, knum, now, w);
		w[T_NUMBER]->slot = tk->slot;
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

/*
 * After a failed send, gives the number back its send: "Please try again"
 * must not meet RESEND_INTERVAL. The per-address, network and global
 * counts keep it, so failing sends cannot be used to hammer the gateway.
 */
static void
limits_refund(struct otp *otp, enum ns ns, const char *phone, int64_t now)
{
	struct limits *l = &otp->limits;
	uint64_t k = limits_number_key(l, ns, phone);
	struct window *w;

	pthread_mutex_lock(&l->lock);
	w = ratetab_find(&l->tab[T_NUMBER], k, now, 0);
	if (w != NULL && w->key == k) {
		if (w->count > 0)
			w->count--;
		w->last_ms = 0;
		l->changes++;
	}
	pthread_mutex_unlock(&l->lock);
}

/*
 * The newest record of the number whose key is k (limits_number_key():
 * a number in a namespace), or -1: a check by number. limits_take() sets
 * it. The window outlives the record: number_hold().
 */
static int32_t
limits_slot(struct otp *otp, uint64_t k, int64_t now)
{
	struct limits *l = &otp->limits;
	struct window *w;
	int32_t slot = -1;

	pthread_mutex_lock(&l->lock);
	w = ratetab_find(&l->tab[T_NUMBER], k, now, 0);
	if (w != NULL && w->key == k)
		slot = w->slot;
	pthread_mutex_unlock(&l->lock);
	return slot;
}

/* Seconds until RESEND_INTERVAL lets v's number be sent to again, 0 if
 * it does now: the code page's countdown. Counts nothing. The record
 * keeps its number's key: a wrong code's page hashes nothing. */
static long
limits_wait(struct otp *otp, const struct config *c, const struct view *v,
            int64_t now)
{
	struct limits *l = &otp->limits;
	uint64_t k = v->nkey != 0 ? v->nkey : limits_number_key(l, NS_WEB,
	    v->phone);
	int64_t hold = c->resend_interval * 1000;
	struct window *w;
	long wait = 0;

	pthread_mutex_lock(&l->lock);
	w = ratetab_find(&l->tab[T_NUMBER], k, now, 0);
	if (w != NULL && w->key == k && w->last_ms != 0 &&
	    now - w->last_ms < hold)
		wait = window_retry(w->last_ms, now, hold);
	pthread_mutex_unlock(&l->lock);
	return wait;
}

/*
 * Wrong codes per client address. Before a check, limits_verify_take()
 * refuses an address that has used its budget (LIMIT_VERIFY_IP) or finds
 * no room (LIMIT_FULL), and otherwise reserves one failure, so parallel
 * guesses cannot overshoot; limits_verify_undo() gives it back when the
 * check was not a guess that failed (a wrong code keeps it: no second
 * step, no second lock). A window exists only while it counts.
 */
static enum limit
limits_verify_take(struct otp *otp, const struct config *c,
                   const struct client *cl, int64_t now, long *retry)
{
	struct limits *l = &otp->limits;
	struct ratetab *t = &l->tab[T_VERIFY];
	enum limit rc = LIMIT_NONE;
	struct window *w;

	pthread_mutex_lock(&l->lock);
	w = ratetab_find(t, cl->akey, now, 0);
	if (w == NULL) {
		*retry = 60;
		rc = LIMIT_FULL;
	} else if (window_count(t, w, cl->akey, now) >=
	    (uint32_t)c->verify_per_ip_per_hour) {
		*retry = window_retry(w->start_ms, now, HOUR_MS);
		rc = LIMIT_VERIFY_IP;
	} else {
		window_add(t, w, cl->akey, now);
		l->changes++;
	}
	pthread_mutex_unlock(&l->lock);
	return rc;
}

static void
limits_verify_undo(struct otp *otp, const struct client *cl, int64_t now)
{
	struct limits *l = &otp->limits;
	struct window *w;

	pthread_mutex_lock(&l->lock);
	w = ratetab_find(&l->tab[T_VERIFY], cl->akey, now, 0);
	if (w != NULL && w->key == cl->akey && w->count > 0) {
		if (--w->count == 0)
			memset(w, 0, sizeof(*w)); /* never made: no trace */
		/* As if never counted: no write of limits.state for it
		 * (unless one was made meanwhile, which held it). */
		l->changes--;
	}
	pthread_mutex_unlock(&l->lock);
}

/*
 * Caps that survive a restart: with STATE_DIR, the windows that still
 * count are written to STATE_DIR/limits.state on shutdown and at most
 * every STATE_SAVE_INTERVAL seconds when something was counted (flash
 * wears), and read back at start, so a reboot, a crash loop or an OOM
 * kill does not give a pumping attacker a fresh day. A crash loses at
 * most one interval. Times are stored as Unix milliseconds (the
 * monotonic clock restarts with the machine); a time in the future (a
 * router's clock before NTP) is read as now. One line each:
 *
 *	otp_demo-limits 1 <now>
 *	G <hour|day|api> <start> <count>
 *	W <table> <key, hex> <start> <last send or 0> <count>
 */
#define STATE_MAGIC "otp_demo-limits 1"

struct saved {
	uint8_t table;
	struct window w;
};

/* The windows of the whole server, as limits.state names them. */
enum global { G_HOUR, G_DAY, G_API, G__N };

static const char *const global_names[G__N] = {
	[G_HOUR] = "hour", [G_DAY] = "day", [G_API] = "api",
};

static struct window *
limits_global(struct limits *l, enum global g)
{
	return g == G_HOUR ? &l->hour : g == G_DAY ? &l->day : &l->api_hour;
}

/* The longest lines of limits.state: the first, a G line, a W line. */
#define STATE_HEAD_MAX 64
#define STATE_G_MAX 48
#define STATE_W_MAX 96

/* Copies the windows that still count into out (cap of them), under the
 * lock; the globals too. Returns how many. O(slots of every table). */
static size_t
limits_snapshot(struct otp *otp, struct saved *out, size_t cap,
                struct window g[G__N], int64_t now, int64_t hold,
                uint64_t *changes)
{
	struct limits *l = &otp->limits;
	size_t n = 0;

	pthread_mutex_lock(&l->lock);
	for (int i = 0; i < G__N; i++)
		g[i] = *limits_global(l, (enum global)i);
	for (int t = 0; t < T__N; t++)
		for (uint32_t i = 0; i <= l->tab[t].mask && n < cap; i++) {
			const struct window *w = &l->tab[t].w[i];

			if (window_busy(&l->tab[t], w, now, t == T_NUMBER ?
			    hold : 0)) {
				out[n].table = (uint8_t)t;
				out[n++].w = *w;
			}
		}
	*changes = l->changes;
	pthread_mutex_unlock(&l->lock);
	return n;
}

/* A monotonic time as Unix milliseconds (0 stays 0: "none"). */
static long long
to_wall(int64_t t, int64_t now, int64_t wall)
{
	return t == 0 ? 0 : (long long)(wall - (now - t));
}

/*
 * Writes dir/limits.state if anything was counted since the last write
 * (hold_ms: number_hold(), which keeps a number's window). Allocates
 * the text (never on a request's path); no lock is held while writing.
 * 0, or -1 with the reason logged.
 */
static int
limits_save(struct otp *otp, const char *dir, int64_t hold_ms)
{
	size_t slots = 0, n, len = 0, cap = 0;
	int64_t now = otp->now_ms(), wall = otp->wall_ms();
	struct saved *s = NULL;
	struct window g[G__N];
	char *text = NULL;
	uint64_t changes = 0;
	int rc = -1; /* -1 until written, or found unchanged */

	if (dir[0] == '\0' || otp->check_only || otp->limits.tab[0].w == NULL)
		return 0;
	errno = 0;
	for (int t = 0; t < T__N; t++)
		slots += (size_t)otp->limits.tab[t].mask + 1;
	if ((s = calloc(slots, sizeof(*s))) == NULL)
		goto out;
	n = limits_snapshot(otp, s, slots, g, now, hold_ms, &changes);
	if (changes == otp->saved_changes) {
		rc = 0;
		goto out;
	}
	cap = STATE_HEAD_MAX + G__N * STATE_G_MAX + n * STATE_W_MAX;
	if (cap > OTP_MAX_STATE || (text = malloc(cap)) == NULL)
		goto out;
	buf_printf(text, cap, &len, STATE_MAGIC " %lld\n", (long long)wall);
	for (int i = 0; i < G__N; i++)
		buf_printf(text, cap, &len, "G %s %lld %u\n", global_names[i],
		    to_wall(g[i].start_ms, now, wall), g[i].count);
	for (size_t i = 0; i < n; i++)
		buf_printf(text, cap, &len, "W %u %016llx %lld %lld %u\n",
		    s[i].table, (unsigned long long)s[i].w.key,
		    to_wall(s[i].w.start_ms, now, wall),
		    to_wall(s[i].w.last_ms, now, wall), s[i].w.count);
out:
	if (rc != 0 && (rc = state_write(otp, dir, "limits.state", text, len,
	    cap)) == 0)
		otp->saved_changes = changes;
	free(s);
	free(text);
	return rc;
}

/* A saved Unix time as a monotonic one; the future is now. */
static int64_t
from_wall(long long t, int64_t now, int64_t wall)
{
	if (t == 0)
		return 0;
	return t > wall ? now : now - (wall - (int64_t)t);
}

/* The next space-separated field of *p as a number in base (no sign),
 * at most max; advances *p. 0, or -1. */
static int
state_field(const char **p, int base, unsigned long long max,
            unsigned long long *out)
{
	char *end;

	if (**p != ' ' || !isxdigit((unsigned char)(*p)[1]))
		return -1;
	errno = 0;
	*out = strtoull(*p + 1, &end, base);
	if (errno != 0 || *out > max || (*end != ' ' && *end != '\n' &&
	    *end != '\0'))
		return -1;
	*p = end;
	return 0;
}

/* Reads one "W" or "G" line into the tables. 0, or -1 if malformed. */
static int
limits_load_line(struct otp *otp, const char *line, int64_t now,
                 int64_t wall)
{
	struct limits *l = &otp->limits;
	unsigned long long table, key, start, last, count;
	const char *p = line + 1;
	struct window *w;
	int g;

	if (line[0] == 'G') {
		if (*p != ' ')
			return -1;
		for (g = 0; g < G__N; g++)
			if (strncmp(p + 1, global_names[g],
			    strlen(global_names[g])) == 0 && p[1 +
			    strlen(global_names[g])] == ' ')
				break;
		if (g == G__N)
			return -1;
		p += 1 + strlen(global_names[g]);
		if (state_field(&p, 10, INT64_MAX, &start) != 0 ||
		    state_field(&p, 10, UINT32_MAX, &count) != 0)
			return -1;
		w = limits_global(l, (enum global)g);
		w->start_ms = from_wall((long long)start, now, wall);
		w->count = start != 0 ? (uint32_t)count : 0;
		return 0;
	}
	if (line[0] != 'W' || state_field(&p, 10, T__N - 1, &table) != 0 ||
	    state_field(&p, 16, UINT64_MAX, &key) != 0 || key == 0 ||
	    state_field(&p, 10, INT64_MAX, &start) != 0 ||
	    state_field(&p, 10, INT64_MAX, &last) != 0 ||
	    state_field(&p, 10, UINT32_MAX, &count) != 0)
		return -1;
	w = ratetab_find(&l->tab[table], key, now, 0);
	if (w == NULL)
		return 0; /* no room: a smaller table than before; dropped */
	memset(w, 0, sizeof(*w));
	w->key = key;
	w->start_ms = from_wall((long long)start, now, wall);
	w->last_ms = from_wall((long long)last, now, wall);
	w->count = (uint32_t)count;
	w->slot = -1;
	return 0;
}

/* ---- phone numbers ----------------------------------------------------- */
/*
 * A number is read with numbering.h, generated from libphonenumber's
 * metadata by tools/gen_numbering.py: each region's calling code, trunk
 * prefix, international prefix and possible lengths, and the prefixes that
 * tell the regions sharing a calling code apart. On top of it, the NANP's
 * own rules (phone_nanp). Every check runs before a send, so a refused
 * number costs nothing but the request.
 */

#include "numbering.h"

_Static_assert(NUMBERING_NREGIONS <= OTP_MAX_REGIONS,
    "numbering.h has more regions than struct config's countries holds");

#define NPREFIXES (countof(numbering_prefixes))

/* Why a number is refused; PHONE_OK (0) when it is not. */
enum phone_err {
	PHONE_OK = 0,
	PHONE_INVALID,  /* not a phone number */
	PHONE_LENGTH,   /* a length its country's numbers never have */
	PHONE_RANGE,    /* premium rate, toll-free, other non-mobile */
	PHONE_COUNTRY,  /* a country ALLOWED_COUNTRY_CODES leaves out */
};

/* What the log, the form and the JSON API say about each refusal. */
static const struct {
	const char *reason; /* refused ... reason= in the log */
	const char *code;   /* the JSON API's error code */
	const char *api;    /* its message (English: API clients) */
	enum text page;     /* the form's message */
} phone_refusals[] = {
	[PHONE_INVALID] = { "invalid", "invalid_phone",
	    "not a phone number", TX_PHONE_INVALID },
	[PHONE_LENGTH] = { "length", "phone_length",
	    "too many or too few digits for a number of its country",
	    TX_PHONE_LENGTH },
	[PHONE_RANGE] = { "range", "phone_range",
	    "premium-rate, toll-free and other numbers that cannot receive "
	    "SMS are refused", TX_PHONE_RANGE },
	[PHONE_COUNTRY] = { "country", "country_not_allowed",
	    "this server does not send to that country", TX_PHONE_COUNTRY },
};

/* True if s is "+" and 7 to 15 digits, the first not 0. */
static bool
phone_is_e164(const char *s)
{
	size_t n = strlen(s);

	return n >= 8 && n <= OTP_MAX_PHONE_LEN && s[0] == '+' &&
	    s[1] != '0' && strspn(s + 1, "0123456789") == n - 1;
}

/* The main region of calling code cc (its first row), or -1. O(log n). */
static int
phone_cc_region(unsigned long cc)
{
	size_t lo = 0, hi = NUMBERING_NREGIONS;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (numbering_regions[mid].cc < cc)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < NUMBERING_NREGIONS && numbering_regions[lo].cc == cc ?
	    (int)lo : -1;
}

/* The region of an ISO 3166 code ("GB", any case), or -1. O(n): config. */
static int
phone_iso_region(const char *iso, size_t len)
{
	for (int i = 0; len == 2 && i < NUMBERING_NREGIONS; i++) {
		const char *r = numbering_regions[i].iso;

		if (toupper((unsigned char)iso[0]) == r[0] &&
		    toupper((unsigned char)iso[1]) == r[1])
			return i;
	}
	return -1;
}

/*
 * Sets region's bit in bits; with whole_code, also those of every region
 * sharing its calling code, except that +1 means the US and Canada only:
 * the other 23 NANP regions (JM, PR, ...) are other countries, with other
 * prices, and must be listed by ISO code.
 */
static void
phone_allow(uint8_t *bits, int region, bool whole_code)
{
	unsigned cc = numbering_regions[region].cc;

	for (int i = region; i < NUMBERING_NREGIONS &&
	    numbering_regions[i].cc == cc; i++) {
		if (i == region || (whole_code && (cc != 1 ||
		    memcmp(numbering_regions[i].iso, "CA", 2) == 0)))
			bits[i / 8] |= (uint8_t)(1u << i % 8);
		if (!whole_code)
			break;
	}
}

/*
 * Reads the calling code at the start of d (n digits): ITU codes are 1 to 3
 * digits and none is the start of another. Returns its main region and
 * sets *cclen, or -1 if no country has it.
 */
static int
phone_cc_read(const char *d, size_t n, size_t *cclen)
{
	unsigned long cc = 0;

	for (size_t i = 0; i < 3 && i < n; i++) {
		int r;

		cc = cc * 10 + (unsigned long)(d[i] - '0');
		if ((r = phone_cc_region(cc)) >= 0) {
			*cclen = i + 1;
			return r;
		}
	}
	return -1;
}

/*
 * The region a national number d (n digits) belongs to, given its calling
 * code's main region: that of the longest numbering_prefixes entry it
 * starts with, else the main region. O(prefixes), about 150.
 */
static int
phone_region_of(int main_region, const char *d, size_t n)
{
	unsigned cc = numbering_regions[main_region].cc;
	size_t best_len = 0;
	bool in_cc = false;
	int best = main_region;

	for (size_t i = 0; i < NPREFIXES; i++) {
		const struct numbering_prefix *p = &numbering_prefixes[i];
		size_t len;

		/* The prefixes are sorted by calling code (gen_numbering.py):
		 * the scan ends with cc's. Those not starting with d's first
		 * digit cost a test or two. */
		if (numbering_regions[p->region].cc != cc) {
			if (in_cc)
				break;
			continue;
		}
		in_cc = true;
		if (n == 0 || p->digits[0] != d[0])
			continue;
		len = strlen(p->digits);
		if (len > best_len && len <= n &&
		    memcmp(p->digits, d, len) == 0) {
			best = p->region;
			best_len = len;
		}
	}
	return best;
}

static bool
phone_length_ok(int region, size_t n)
{
	return n <= 15 && (numbering_regions[region].lengths >> n & 1) != 0;
}

/*
 * The NANP's rules for a +1 national number d, NPA-NXX-XXXX (area code,
 * exchange, line): 10 digits; area code and exchange start with 2-9 and
 * are not N11 (service codes: 411, 911). Refused as ranges that cannot
 * receive SMS: area codes whose last two digits are the same ("easily
 * recognisable codes": toll-free 800, 833 ... 888, premium-rate 900,
 * personal 500 ... 588, 600, 700 and the unassigned rest, 555 among them),
 * 880-889 (kept for toll-free), 521-529 (personal), 456 (inbound
 * international), 710 (US government), N9X (kept for expanding the plan),
 * 37X and 96X (reserved), and the premium-rate exchange 976.
 * tests/unit.c checks these against every area code libphonenumber knows.
 */
static int
phone_nanp(const char *d, size_t n)
{
	int npa, nxx;

	if (n != 10)
		return PHONE_LENGTH;
	if (d[0] < '2' || d[3] < '2' || (d[1] == '1' && d[2] == '1') ||
	    (d[4] == '1' && d[5] == '1'))
		return PHONE_INVALID;
	npa = (d[0] - '0') * 100 + (d[1] - '0') * 10 + (d[2] - '0');
	nxx = (d[3] - '0') * 100 + (d[4] - '0') * 10 + (d[5] - '0');
	if (d[1] == d[2] || d[1] == '9' || npa / 10 == 37 || npa / 10 == 96 ||
	    npa / 10 == 88 || (npa >= 521 && npa <= 529) || npa == 456 ||
	    npa == 710 || nxx == 976)
		return PHONE_RANGE;
	return PHONE_OK;
}

/* True if national number d (n digits) starts with the trunk prefix and
 * what follows it has a possible length. */
static bool
phone_trunk_fits(int main_region, const char *trunk, const char *d, size_t n)
{
	size_t tl = strlen(trunk);

	return tl > 0 && n > tl && memcmp(d, trunk, tl) == 0 &&
	    phone_length_ok(phone_region_of(main_region, d + tl, n - tl),
	    n - tl);
}

/*
 * Checks d (n digits: calling code and national number, as after "+") and
 * writes it as E.164 into out. A trunk prefix written after the calling
 * code ("+44 (0)20 ...", or a national "020 ..." put behind COUNTRY_CODE)
 * is dropped when what follows has a possible length. Returns PHONE_OK,
 * PHONE_INVALID, PHONE_LENGTH or PHONE_RANGE; out holds the number read
 * (for a masked log line) unless it is PHONE_INVALID or does not fit.
 */
static int
phone_international(const char *d, size_t n, char *out, size_t outlen)
{
	const char *trunk, *nat;
	size_t cclen = 0, tl, nn;
	int main_region, r, rc = PHONE_OK;

	out[0] = '\0';
	if (n == 0 || d[0] == '0')
		return PHONE_INVALID;
	if ((main_region = phone_cc_read(d, n, &cclen)) < 0) {
		/* +800 freephone, +808 shared cost, +870 ... +883 satellite,
		 * +979 premium rate: no country's, not for SMS codes */
		unsigned long cc = 0;

		for (size_t i = 0; i < 3 && i < n; i++) {
			cc = cc * 10 + (unsigned long)(d[i] - '0');
			for (size_t j = 0; j < countof(numbering_nongeo); j++)
				if (numbering_nongeo[j] == cc)
					return PHONE_RANGE;
		}
		return PHONE_INVALID;
	}
	nat = d + cclen;
	nn = n - cclen;
	trunk = numbering_trunks[numbering_regions[main_region].prefixes >> 4];
	tl = strlen(trunk);
	if (phone_trunk_fits(main_region, trunk, nat, nn)) {
		nat += tl, nn -= tl;
		/* Dropping it again would fit too ("+46 0 0419..."): there is
		 * no telling which was meant, and E.164 would not read back
		 * to itself. Russia's "8 812 ..." passes: 812... without its
		 * 8 is too short. */
		if (phone_trunk_fits(main_region, trunk, nat, nn))
			return PHONE_INVALID;
	}
	r = phone_region_of(main_region, nat, nn);
	if (cclen + nn > 15 || !phone_length_ok(r, nn))
		rc = PHONE_LENGTH;
	else if (numbering_regions[r].cc == 1)
		rc = phone_nanp(nat, nn);
	if (rc != PHONE_INVALID && 1 + cclen + nn < outlen) {
		out[0] = '+';
		memcpy(out + 1, d, cclen);
		memcpy(out + 1 + cclen, nat, nn);
		out[1 + cclen + nn] = '\0';
	} else if (rc == PHONE_OK) {
		rc = PHONE_INVALID; /* out is too small */
	}
	return rc;
}

/*
 * Turns what a person typed into E.164 in out (outlen bytes): drops
 * - . ( ) / and blanks as the tutorial does ("030/123456" too); reads a
 * leading "+", the international prefix "00", or COUNTRY_CODE's own ("011"
 * in the NANP, "810" in Russia) as "a calling code follows"; else puts
 * COUNTRY_CODE (country, "+44") in front, dropping the trunk prefix
 * ("07700 900123": +447700900123). Then checks the number
 * (phone_international). Returns PHONE_OK or why not; out is "" when
 * nothing number-like was read.
 */
static int
phone_normalise(const char *in, size_t len, const char *country, char *out,
                size_t outlen)
{
	char digits[OTP_MAX_INPUT + 4];
	const char *intl = "00";
	size_t n = 0, cl, skip = 0;
	bool plus = false;
	int home;

	if (outlen > 0)
		out[0] = '\0';
	if (outlen == 0 || country[0] != '+')
		return PHONE_INVALID;
	for (size_t i = 0; i < len; i++) {
		char ch = in[i];

		if (ch != '\0' && strchr("-.()/ ", ch) != NULL)
			continue;
		if (ch == '+' && n == 0 && !plus) {
			plus = true;
			continue;
		}
		if (ch < '0' || ch > '9' || n >= OTP_MAX_INPUT)
			return PHONE_INVALID;
		digits[n++] = ch;
	}
	if (plus || n == 0)
		return phone_international(digits, n, out, outlen);
	if ((home = phone_cc_region(strtoul(country + 1, NULL, 10))) >= 0)
		intl = numbering_intls[numbering_regions[home].prefixes & 15];
	if (n > strlen(intl) && memcmp(digits, intl, strlen(intl)) == 0)
		skip = strlen(intl);
	else if (n > 2 && memcmp(digits, "00", 2) == 0)
		skip = 2;
	if (skip > 0)
		return phone_international(digits + skip, n - skip, out,
		    outlen);
	/* A national number: the calling code goes in front. */
	cl = strlen(country + 1);
	if (cl > 3 || strspn(country + 1, "0123456789") != cl)
		return PHONE_INVALID;
	memmove(digits + cl, digits, n);
	memcpy(digits, country + 1, cl);
	return phone_international(digits, n + cl, out, outlen);
}

/* True if phone (E.164) is in a region ALLOWED_COUNTRY_CODES allows. */
static bool
phone_allowed(const struct config *c, const char *phone)
{
	size_t cclen = 0, n = strlen(phone);
	int r;

	if (n < 2 || phone[0] != '+' ||
	    strspn(phone + 1, "0123456789") != n - 1 ||
	    (r = phone_cc_read(phone + 1, n - 1, &cclen)) < 0)
		return false;
	r = phone_region_of(r, phone + 1 + cclen, n - 1 - cclen);
	return (c->countries[r / 8] >> r % 8 & 1) != 0;
}

/*
 * Reads a number typed into the form or given to the API, as
 * phone_normalise() with COUNTRY_CODE, and checks its country against
 * ALLOWED_COUNTRY_CODES. Returns PHONE_OK, or why it is refused.
 */
static int
phone_read(const struct config *c, const char *in, size_t len, char *out,
           size_t outlen)
{
	int rc = phone_normalise(in, len, c->country_code, out, outlen);

	if (rc == PHONE_OK && !phone_allowed(c, out))
		rc = PHONE_COUNTRY;
	return rc;
}

/*
 * Writes a loggable form of an E.164 number: its calling code, a * per
 * hidden digit and the last 2 digits (+1********67); a national part too
 * short to hide most of it shows no digit, and what is not "+" and digits
 * is "-".
 */
static void
phone_mask(const char *phone, char *out, size_t outlen)
{
	/* "+", the calling code, a star a digit (16 at most), the last
	 * two: put together, then cut to outlen. */
	char buf[1 + 3 + 16 + 2 + 1];
	size_t n = strlen(phone), cclen = 0, nn, tail, stars, k = 0;

	if (outlen == 0)
		return;
	if (n < 2 || phone[0] != '+' || strspn(phone + 1, "0123456789") !=
	    n - 1) {
		str_copy(out, outlen, "-");
		return;
	}
	if (phone_cc_read(phone + 1, n - 1, &cclen) < 0)
		cclen = 0;
	nn = n - 1 - cclen;
	tail = nn >= 4 ? 2 : 0;
	stars = nn - tail < 16 ? nn - tail : 16;
	buf[k++] = '+';
	memcpy(buf + k, phone + 1, cclen);
	k += cclen;
	memset(buf + k, '*', stars);
	k += stars;
	memcpy(buf + k, phone + n - tail, tail);
	buf[k + tail] = '\0';
	str_copy(out, outlen, buf);
}

/*
 * Writes phone (E.164, read from in, len bytes, by phone_read()) as its
 * own person sees it, never for a log: the calling code, then the
 * national number as typed (from its first digit, or a "(" just before
 * it; runs of blanks as one), so that a typo shows: "+1 (201) 555-0123",
 * "+44 20 7946 0958" for "020 7946 0958". Typed without separators, or
 * too long, it is grouped as the NANP does (+1 201-555-0123) or not at
 * all (+44 2079460958).
 */
static void
phone_show(const char *phone, const char *in, size_t len, char *out,
           size_t outlen)
{
	char buf[OTP_MAX_SHOWN];
	size_t n = strlen(phone), cclen = 0, nn, i = len, k = 0, o;

	if (n < 2 || phone_cc_read(phone + 1, n - 1, &cclen) < 0) {
		str_copy(out, outlen, phone);
		return;
	}
	nn = n - 1 - cclen;
	while (i > 0 && k < nn)
		k += isdigit((unsigned char)in[--i]) != 0;
	i -= i > 0 && in[i - 1] == '(';
	while (len > i && in[len - 1] == ' ')
		len--;
	o = cclen + 2;
	snprintf(buf, sizeof(buf), "+%.*s ", (int)cclen, phone + 1);
	for (k = i; k < len && isdigit((unsigned char)in[k]); k++)
		;
	if (k < len) /* separators: as typed */
		for (; i < len && o + 1 < sizeof(buf); i++)
			if (in[i] != ' ' || buf[o - 1] != ' ')
				buf[o++] = in[i];
	if (i < len || o == cclen + 2) { /* no separators, or too long */
		o = cclen + 2;
		for (k = 0; k < nn; k++) {
			if (phone[1] == '1' && cclen == 1 && nn == 10 &&
			    (k == 3 || k == 6))
				buf[o++] = '-';
			buf[o++] = phone[1 + cclen + k];
		}
	}
	buf[o] = '\0';
	str_copy(out, outlen, buf);
}

/* ---- languages and messages -------------------------------------------- */

/*
 * True if tag (from Accept-Language, len bytes) names lang ("pt_BR") at
 * the given closeness: 0, the whole tag; 1, the tag's primary subtag is
 * lang ("pt-PT" for "pt"); 2, the primary subtags alone ("pt_BR").
 */
static bool
lang_match(const char *tag, size_t len, const char *lang, int pass)
{
	size_t llen = strlen(lang), i;

	if (pass >= 1)
		len = strcspn(tag, "-_") < len ? strcspn(tag, "-_") : len;
	if (pass == 2)
		llen = strcspn(lang, "_");
	if (len != llen)
		return false;
	for (i = 0; i < len; i++) {
		char a = tag[i] == '-' ? '_' : tag[i];

		if (tolower((unsigned char)a) != tolower((unsigned char)lang[i]))
			return false;
	}
	return true;
}

/*
 * The q of one Accept-Language entry (len bytes), in thousandths. "q=" is
 * looked for in this entry only, and no digit is read past it: "en;q="
 * ends the header right after the '='.
 */
static int
lang_q(const char *e, size_t len)
{
	const char *qs = memchr(e, ';', len), *end = e + len;
	int q;

	if (qs == NULL || (qs = memmem(qs, (size_t)(end - qs), "q=", 2)) == NULL)
		return 1000;
	q = qs[2] == '1' ? 1000 : 0;
	if (qs + 3 < end && qs[3] == '.')
		for (int i = 0, f = 100; i < 3 && qs + 4 + i < end &&
		    isdigit((unsigned char)qs[4 + i]); i++, f /= 10)
			q += (qs[4 + i] - '0') * f;
	return q;
}

/*
 * Picks, for an Accept-Language header, the one of n languages (tags with
 * "_", like "pt_BR") the client wants most: highest q, closest match (see
 * lang_match), the earlier on a tie. Returns its index, or -1.
 */
static int
lang_best(const char *accept, const char *const *langs, int n)
{
	int best = -1, best_q = 0;
	const char *p = accept, *e;
	size_t len;

	while (p != NULL && n > 0 && list_next(&p, ',', &e, &len)) {
		size_t tlen = strcspn(e, " ;,");
		int q = lang_q(e, len);

		for (int pass = 0; pass < 3 && q > best_q; pass++)
			for (int i = 0; i < n; i++)
				if (lang_match(e, tlen, langs[i], pass) &&
				    q > best_q) {
					best = i;
					best_q = q;
				}
	}
	return best;
}

/*
 * The MESSAGE_<lang> text the client prefers, or NULL for MESSAGE, which
 * is in language LANG and competes like the others: a browser that
 * prefers English to German gets MESSAGE, not MESSAGE_de.
 */
static const char *
message_for(const struct config *c, const char *accept)
{
	const char *langs[OTP_MAX_LANGS + 1] = { c->lang };
	int i;

	for (i = 0; i < c->nmessages; i++)
		langs[i + 1] = c->messages[i].lang;
	i = lang_best(accept, langs, c->nmessages + 1);
	return i <= 0 ? NULL : c->messages[i - 1].text;
}

/*
 * Fills a MESSAGE template: {code}, {app} (APP_NAME) and {minutes} (how
 * long the code is valid). With WEBOTP_DOMAIN, a last line "@domain #code"
 * lets Android's WebOTP and iOS autofill find the code. 0, or -1 if the
 * text does not fit in outlen.
 */
static int
message_fill(const struct config *c, const char *tmpl, const char *code,
             char *out, size_t outlen)
{
	char minutes[24];
	const struct var vars[] = { { "code", code }, { "app", c->app_name },
	    { "minutes", minutes } };
	size_t n = 0;
	int k;

	snprintf(minutes, sizeof(minutes), "%ld", (c->code_ttl + 59) / 60);
	if (fill(tmpl, strlen(tmpl), 1, false, vars, countof(vars), esc_none,
	    out, outlen, &n) < 0)
		return -1;
	if (c->webotp_domain[0] != '\0') {
		k = snprintf(out + n, outlen - n, "\n\n@%s #%s", c->webotp_domain,
		    code);
		if (k < 0 || (size_t)k >= outlen - n)
			return -1;
	}
	return 0;
}

/*
 * The number of SMS units text takes: GSM-7 septets (extension characters
 * count two) if every character is in the GSM 03.38 alphabet, else UTF-16
 * units (UCS-2). *gsm says which. One SMS holds 160 septets or 70 units.
 */
static size_t
sms_units(const char *text, bool *gsm)
{
	/* Non-ASCII characters of the basic GSM set, as code points. */
	static const unsigned basic[] = {
		0xa3, 0xa5, 0xe8, 0xe9, 0xf9, 0xec, 0xf2, 0xc7, 0xd8, 0xf8, 0xc5,
		0xe5, 0x394, 0x3a6, 0x393, 0x39b, 0x3a9, 0x3a0, 0x3a8, 0x3a3,
		0x398, 0x39e, 0xc6, 0xe6, 0xdf, 0xc9, 0xa4, 0xa1, 0xc4, 0xd6,
		0xd1, 0xdc, 0xa7, 0xbf, 0xe4, 0xf6, 0xf1, 0xfc, 0xe0,
	};
	const unsigned char *p = (const unsigned char *)text;
	size_t septets = 0, units = 0;

	*gsm = true;
	while (*p != '\0') {
		unsigned cp = *p, extra = 0;
		bool found = false;

		if (cp >= 0xf0)
			cp &= 0x07, extra = 3;
		else if (cp >= 0xe0)
			cp &= 0x0f, extra = 2;
		else if (cp >= 0xc0)
			cp &= 0x1f, extra = 1;
		for (p++; extra > 0 && (*p & 0xc0) == 0x80; extra--, p++)
			cp = cp << 6 | (*p & 0x3f);
		units += cp >= 0x10000 ? 2 : 1;
		if (cp == '`' || (cp < 0x20 && cp != '\n' && cp != '\r')) {
			*gsm = false;
		} else if (cp < 0x80) {
			septets += strchr("[\\]^{|}~", (int)cp) != NULL ? 2 : 1;
		} else if (cp == 0x20ac) { /* the euro sign: extension */
			septets += 2;
		} else {
			for (size_t i = 0; i < countof(basic); i++)
				found |= basic[i] == cp;
			septets++;
			*gsm = *gsm && found;
		}
	}
	return *gsm ? septets : units;
}

/*
 * The built-in languages. Each www/lang/<tag>.txt is a catalog of
 * "key text" lines, one per TEXTS() key, packed with the pages (one blob
 * in the static builds, so the languages share the packer's dictionary).
 * At start, lang_load() reads each once and makes the pages in its
 * language: every {{t:key}} of a page is replaced by the text as it is
 * (the catalog is ours; a text may hold markup and the page's own
 * {{placeholders}}). A request then renders its language's copy exactly
 * as before, and the C code takes its words with req_text().
 */
/* The TEXTS() keys in their order, each ending in a NUL: one string,
 * not a table of pointers, which is 300 bytes on a 32-bit router. */
static const char text_keys[] =
#define X(id, key) key "\0"
	TEXTS(X)
#undef X
	;

/* The key of TEXTS() id (not TX_NONE). O(number of keys). */
static const char *
text_key(enum text id)
{
	const char *k = text_keys;

	for (int i = 1; i < (int)id; i++)
		k += strlen(k) + 1;
	return k;
}

/* The TEXTS() id of key (len bytes), or TX_NONE. O(number of keys). */
static enum text
text_id(const char *key, size_t len)
{
	const char *k = text_keys;

	for (int i = 1; i < TX__N; i++, k += strlen(k) + 1)
		if (strlen(k) == len && memcmp(k, key, len) == 0)
			return (enum text)i;
	return TX_NONE;
}

/*
 * Reads catalog f ("de.txt") into cat, its text copied to mem (f->len + 1
 * bytes) and cut into lines there. 0, or -1 with err set: a line that is
 * not a known key and a text, or a key missing.
 */
static int
lang_parse(struct catalog *cat, const struct www_file *f, char *mem,
           char *err, size_t errlen)
{
	char *line = mem, *end = mem + f->len;
	enum text id;

	memcpy(mem, f->data, f->len);
	*end = '\0';
	str_ncopy(cat->lang, sizeof(cat->lang), f->name, strcspn(f->name, "."));
	memset(cat->text, 0, sizeof(cat->text));
	cat->text[TX_NONE] = "";
	for (char *nl; line < end; line = nl + 1) {
		size_t klen = strcspn(line, " \n");

		nl = line + strcspn(line, "\n");
		*nl = '\0';
		if ((id = text_id(line, klen)) == TX_NONE || line[klen] != ' ' ||
		    line[klen + 1] == '\0' || cat->text[id] != NULL) {
			snprintf(err, errlen, "www/lang/%s: bad line \"%.40s\"",
			    f->name, line);
			return -1;
		}
		cat->text[id] = line + klen + 1;
	}
	for (int i = 1; i < TX__N; i++)
		if (cat->text[i] == NULL) {
			snprintf(err, errlen, "www/lang/%s: no %s", f->name,
			    text_key((enum text)i));
			return -1;
		}
	return 0;
}

/*
 * Copies tmpl (len bytes) to out (outlen bytes), each {{t:key}} replaced
 * by cat's text for key. Returns the length, or -1 for a key that is not
 * one or a page that does not fit.
 */
static long
lang_localize(const struct catalog *cat, const char *tmpl, size_t len,
              char *out, size_t outlen)
{
	const char *p = tmpl, *end = tmpl + len, *t;
	size_t n = 0;

	while ((t = memmem(p, (size_t)(end - p), "{{t:", 4)) != NULL) {
		const char *key = t + 4;
		size_t klen = 0;
		enum text id;

		while (key + klen < end && (islower((unsigned char)key[klen]) ||
		    isdigit((unsigned char)key[klen]) || key[klen] == '_'))
			klen++;
		id = text_id(key, klen);
		if (id == TX_NONE || end - (key + klen) < 2 ||
		    memcmp(key + klen, "}}", 2) != 0 ||
		    out_put(out, outlen, &n, p, (size_t)(t - p)) != 0 ||
		    esc_none(cat->text[id], out, outlen, &n) != 0)
			return -1;
		p = key + klen + 2;
	}
	return out_put(out, outlen, &n, p, (size_t)(end - p)) != 0 ? -1 :
	    (long)n;
}

/*
 * The catalog for language tag ("pt_BR"): its own, else its main
 * language's ("pt"), else LANG's, else the first (English). Never NULL
 * once lang_load() has run.
 */
static const struct catalog *
lang_catalog(const struct otp *otp, const struct config *c, const char *tag)
{
	for (int pass = 0; pass < 2; pass++) {
		const char *t = pass == 0 ? tag : c->lang;

		for (int i = 0; i < otp->ncats; i++)
			if (lang_match(t, strlen(t), otp->cats[i].lang, 0) ||
			    lang_match(t, strlen(t), otp->cats[i].lang, 1))
				return &otp->cats[i];
	}
	return &otp->cats[0];
}

/*
 * Makes each catalog's copy of the built-in files: the pages with its
 * words, the others as they are. Measured first, then made in one
 * allocation (otp->lang_files). 0, or -1 with err set.
 */
static int
lang_pages(struct otp *otp, char *err, size_t errlen)
{
	const size_t nf = otp->nbuiltin, nfiles = (size_t)otp->ncats * nf;
	size_t total = nfiles * sizeof(struct www_file);
	char page[OTP_MAX_PAGE], *at = NULL;

	/* pass 0 measures, pass 1 makes */
	for (int pass = 0; pass < 2; pass++) {
		if (pass == 1 && (otp->lang_files = malloc(total)) == NULL)
			return snprintf(err, errlen, "out of memory"), -1;
		if (pass == 1)
			at = (char *)(otp->lang_files + nfiles);
		for (size_t j = 0; j < nfiles; j++) {
			const struct www_file *f = &otp->builtin[j % nf];
			struct catalog *cat = &otp->cats[j / nf];
			long n = -2; /* not a page */

			if (strstr(f->name, ".html") != NULL &&
			    (n = lang_localize(cat, (const char *)f->data,
			    f->len, page, sizeof(page))) < 0)
				return snprintf(err, errlen, "www/%s: a {{t:key}} "
				    "with no text", f->name), -1;
			if (pass == 0) {
				total += n >= 0 ? (size_t)n + 1 : 0;
				continue;
			}
			cat->files = otp->lang_files + j / nf * nf;
			otp->lang_files[j] = *f;
			if (n < 0)
				continue;
			memcpy(at, page, (size_t)n + 1);
			otp->lang_files[j].data = (const unsigned char *)at;
			otp->lang_files[j].len = (size_t)n;
			at += n + 1;
		}
	}
	return 0;
}

/*
 * Reads the built-in catalogs (the files of otp->builtin named *.txt,
 * en.txt first) into otp->cats, their text in one allocation, then
 * makes their pages (lang_pages()). Once, at start. 0, or -1 with err.
 */
static int
lang_load(struct otp *otp, char *err, size_t errlen)
{
	size_t need = 1;
	char *text;

	for (size_t i = 0; i < otp->nbuiltin; i++)
		if (strstr(otp->builtin[i].name, ".txt") != NULL)
			need += otp->builtin[i].len + 1;
	if ((otp->lang_text = text = malloc(need)) == NULL)
		return snprintf(err, errlen, "out of memory"), -1;
	for (size_t i = 0; i < otp->nbuiltin; i++) {
		const struct www_file *f = &otp->builtin[i];

		if (strstr(f->name, ".txt") == NULL)
			continue;
		if (otp->ncats == OTP_MAX_CATALOGS)
			return snprintf(err, errlen, "www/lang/%s: one too many",
			    f->name), -1;
		if (lang_parse(&otp->cats[otp->ncats++], f, text, err,
		    errlen) != 0)
			return -1;
		text += f->len + 1;
	}
	if (otp->ncats == 0) /* built in: a broken build */
		return snprintf(err, errlen, "no www/lang/"), -1;
	return lang_pages(otp, err, errlen);
}

/* ---- processes --------------------------------------------------------- */

/*
 * The next word of a command line at *p into word (size bytes): blanks
 * separate words, '...' and "..." group (the quotes are dropped). 1, 0 at
 * the end, or -1 if it does not fit.
 */
static int
command_word(const char **p, char *word, size_t size)
{
	const char *s = *p + strspn(*p, " \t");
	size_t n = 0;
	char q = 0;

	if (*s == '\0')
		return 0;
	for (; *s != '\0' && (q != 0 || (*s != ' ' && *s != '\t')); s++) {
		if (q == 0 && (*s == '\'' || *s == '"'))
			q = *s;
		else if (q != 0 && *s == q)
			q = 0;
		else if (n + 1 < size)
			word[n++] = *s;
		else
			return -1;
	}
	word[n] = '\0';
	*p = s;
	return 1;
}

/*
 * Splits SMS_COMMAND into argv words (see command_word), replacing {to}
 * and {text} inside words; without either, the number and the text are
 * appended as two more arguments. Never a shell. Returns argc, or -1 if
 * it does not fit.
 */
static int
command_argv(const char *cmd, const char *to, const char *text, char *buf,
             size_t buflen, char **argv, int maxargs)
{
	const struct var vars[] = { { "to", to }, { "text", text } };
	char word[OTP_MAX_STR];
	size_t n = 0;
	int argc = 0, placed = 0, k;

	while ((k = command_word(&cmd, word, sizeof(word))) > 0) {
		if (argc + 3 >= maxargs)
			return -1;
		argv[argc++] = buf + n;
		if ((k = fill(word, strlen(word), 1, false, vars, countof(vars),
		    esc_none, buf, buflen, &n)) < 0)
			return -1;
		placed += k;
		n++; /* past the word's NUL */
	}
	if (k < 0 || argc == 0)
		return -1;
	if (placed == 0) {
		argv[argc++] = (char *)to;
		argv[argc++] = (char *)text;
	}
	argv[argc] = NULL;
	return argc;
}

/*
 * Builds the command's environment: only the variables SMS_COMMAND_ENV
 * names (comma-separated), from ours, into buf; envp ends with NULL.
 */
static void
command_env(const char *names, char *buf, size_t buflen, char **envp, int max)
{
	size_t n = 0;
	int envc = 0;

	char name[64];

	for (const char *p = names; envc + 1 < max &&
	    list_item(&p, name, sizeof(name)) > 0;) {
		const char *v = getenv(name);
		int k;

		if (v == NULL)
			continue;
		k = snprintf(buf + n, buflen - n, "%s=%s", name, v);
		if (k < 0 || (size_t)k >= buflen - n)
			break;
		envp[envc++] = buf + n;
		n += (size_t)k + 1;
	}
	envp[envc] = NULL;
}

/*
 * Starts argv in a process group of its own, with envp, stdin/out/err on
 * /dev/null, default signal handling, and no other descriptor. Returns
 * the pid, or -1.
 */
static pid_t
command_spawn(char **argv, char **envp)
{
	pid_t pid = fork();

	if (pid == 0) {
		/* Child: only async-signal-safe calls until execve. */
		int null = open("/dev/null", O_RDWR);
		sigset_t none;

		setpgid(0, 0); /* so a timeout can kill what it starts, too */
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		dup2(null, 0), dup2(null, 1), dup2(null, 2);
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		execve(argv[0], argv, envp);
		_exit(127);
	}
	if (pid > 0)
		setpgid(pid, pid); /* also here: no race with a quick kill */
	return pid;
}

/*
 * Waits up to timeout_ms for pid, or until halt (otp_stop's pipe) is
 * readable. A pidfd (Linux 5.3 and later) wakes poll() when it exits;
 * older kernels are asked in 20 ms steps. Then the
 * whole process group is killed, whether the command finished or timed
 * out: what it left running in the background would hold the modem or
 * outlive us. The group is killed before pid is reaped, so its id cannot
 * have been reused by an unrelated process. Returns the wait status, or
 * -1 on timeout.
 */
static int
command_wait(pid_t pid, long timeout_ms, int halt)
{
	int64_t deadline = clock_monotonic_ms() + timeout_ms;
	int status = 0, pidfd = -1;
	bool timed_out = false;
	siginfo_t si;

#ifdef SYS_pidfd_open
	pidfd = (int)syscall(SYS_pidfd_open, pid, 0);
#endif
	for (;;) {
		int64_t left = deadline - clock_monotonic_ms();
		struct pollfd pf[2] = { { halt, POLLIN, 0 }, { pidfd, POLLIN, 0 } };

		memset(&si, 0, sizeof(si));
		if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0
		    || si.si_pid == pid)
			break; /* exited (a zombie holds its id), or gone */
		if (left <= 0) {
			timed_out = true;
			break;
		}
		poll(pf, pidfd >= 0 ? 2 : 1, pidfd >= 0 || left < 20 ?
		    (int)left : 20);
		if (pf[0].revents != 0) { /* otp_stop(): the server stops */
			timed_out = true;
			break;
		}
	}
	kill(-pid, SIGKILL);
	if (timed_out)
		kill(pid, SIGKILL);
	waitpid(pid, &status, 0);
	if (pidfd >= 0)
		close(pidfd);
	return timed_out ? -1 : status;
}

/* ---- the libcurl pool -------------------------------------------------- */

/* The response body of an API call, capped at OTP_MAX_SMS_RESPONSE. */
struct response {
	char *buf;
	size_t len, cap;
};

static size_t
curl_collect(char *data, size_t size, size_t n, void *arg)
{
	struct response *r = arg;
	size_t len = size * n;

	if (len > r->cap - r->len)
		return 0; /* too big: libcurl fails the transfer */
	memcpy(r->buf + r->len, data, len);
	r->len += len;
	return len;
}

static void
pooled_free(struct pooled *p)
{
	curl_multi_cleanup(p->m);
	curl_easy_cleanup(p->h);
	free(p->buf);
}

/* Takes a pooled handle, or makes one while the pool is below its cap
 * (THREADS: one per worker at most). 0 or -1. */
static int
curl_take(struct otp *otp, struct pooled *p)
{
	pthread_mutex_lock(&otp->curls.lock);
	if (otp->curls.nidle > 0)
		*p = otp->curls.idle[--otp->curls.nidle];
	else
		p->h = NULL;
	pthread_mutex_unlock(&otp->curls.lock);
	if (p->h != NULL)
		return 0;
	p->h = curl_easy_init();
	p->m = curl_multi_init();
	p->buf = malloc(OTP_MAX_SMS_RESPONSE);
	if (p->h == NULL || p->m == NULL || p->buf == NULL) {
		pooled_free(p);
		return -1;
	}
	return 0;
}

static void
curl_give(struct otp *otp, struct pooled *p)
{
	bool kept = false;

	pthread_mutex_lock(&otp->curls.lock);
	if (otp->curls.nidle < otp->curls.cap) {
		otp->curls.idle[otp->curls.nidle++] = *p;
		kept = true;
	}
	pthread_mutex_unlock(&otp->curls.lock);
	if (!kept)
		pooled_free(p);
}

/*
 * curl_easy_perform(), cut short by otp_stop(): through the handle's own
 * multi handle, whose wait can include otp_stop's pipe, a gateway that
 * never answers holds neither a worker nor mg_stop() for SMS_TIMEOUT. The
 * connection stays in the multi handle's cache between sends.
 */
static CURLcode
curl_perform(struct otp *otp, struct pooled *p)
{
	struct curl_waitfd halt = { otp->halt[0], CURL_WAIT_POLLIN, 0 };
	CURLcode cc = CURLE_ABORTED_BY_CALLBACK;
	int running = 1, left;
	CURLMsg *msg;

	if (curl_multi_add_handle(p->m, p->h) != CURLM_OK)
		return CURLE_FAILED_INIT;
	while (curl_multi_perform(p->m, &running) == CURLM_OK && running > 0 &&
	    curl_multi_poll(p->m, &halt, 1, 1000, NULL) == CURLM_OK &&
	    halt.revents == 0)
		;
	while ((msg = curl_multi_info_read(p->m, &left)) != NULL)
		if (msg->msg == CURLMSG_DONE)
			cc = msg->data.result;
	curl_multi_remove_handle(p->m, p->h);
	return cc;
}

/* Sets every option of a call of url (an SMS gateway, WEBHOOK_URL); a
 * pooled handle is reset first (its connection stays). */
static int
curl_setup(const struct config *c, CURL *h, const char *url,
           const char *method, struct curl_slist *hdrs, const char *body,
           bool basic, struct response *resp, char *errbuf)
{
	int rc = 0;

	curl_easy_reset(h);
#define SET(opt, val) rc |= (int)curl_easy_setopt(h, opt, val)
	SET(CURLOPT_URL, url);
	SET(CURLOPT_PROTOCOLS_STR, "https");
	SET(CURLOPT_REDIR_PROTOCOLS_STR, "https");
	SET(CURLOPT_FOLLOWLOCATION, 0L);
	SET(CURLOPT_SSLVERSION, (long)CURL_SSLVERSION_TLSv1_2);
	SET(CURLOPT_SSL_VERIFYPEER, 1L);
	SET(CURLOPT_SSL_VERIFYHOST, 2L);
	SET(CURLOPT_CAINFO, c->sms_ca_file);
	SET(CURLOPT_NOSIGNAL, 1L);
	SET(CURLOPT_CONNECTTIMEOUT, c->sms_timeout < 5 ? c->sms_timeout : 5L);
	SET(CURLOPT_TIMEOUT, c->sms_timeout);
	SET(CURLOPT_HTTPHEADER, hdrs);
	SET(CURLOPT_POSTFIELDS, body);
	SET(CURLOPT_POSTFIELDSIZE, (long)strlen(body));
	if (strcmp(method, "POST") != 0)
		SET(CURLOPT_CUSTOMREQUEST, method);
	if (basic) {
		SET(CURLOPT_HTTPAUTH, (long)CURLAUTH_BASIC);
		SET(CURLOPT_USERPWD, c->api_key); /* "user:password" */
	}
	SET(CURLOPT_WRITEFUNCTION, curl_collect);
	SET(CURLOPT_WRITEDATA, resp);
	SET(CURLOPT_ERRORBUFFER, errbuf);
	SET(CURLOPT_USERAGENT, "otp_demo/" OTP_VERSION);
#undef SET
	return rc == 0 ? 0 : -1;
}

/* ---- SMS senders ------------------------------------------------------- */

static const char *const send_names[SEND__N] = {
	[SEND_OK] = "ok", [SEND_API_ERROR] = "api_error", [SEND_BUSY] = "busy",
	[SEND_SERVER] = "server_error", [SEND_NETWORK] = "network",
	[SEND_BAD_ANSWER] = "bad_answer", [SEND_LOCAL] = "local",
};

static enum send_result
send_console(struct otp *otp, const struct config *c, const char *phone,
             const char *text)
{
	/* A newline is written as two characters: one line per SMS. */
	char line[2 * OTP_MAX_TEXT + OTP_MAX_PHONE_LEN + 16];
	int n = snprintf(line, sizeof(line), "SMS to %s: ", phone);
	_Static_assert(sizeof(line) <= PIPE_BUF, "one line, one write");
	size_t len = n > 0 ? (size_t)n : 0;

	(void)otp, (void)c;
	for (const char *t = text; *t != '\0' && len + 3 < sizeof(line); t++)
		if (*t == '\n')
			line[len++] = '\\', line[len++] = 'n';
		else
			line[len++] = *t;
	line[len++] = '\n';
	/* The console sender is the stand-in for a phone: stdout is where
	 * its "SMS" arrive, so printing the text (and code) is its job. One
	 * write(2) of the whole line (under PIPE_BUF: whole on a pipe too),
	 * past stdio: its lock, held across the write, was where the
	 * workers queued (/request). */
	write_all(STDOUT_FILENO, line, len);
	wipe(line, len);
	return SEND_OK;
}

/*
 * smstools3's spool: one file per message ("To: <digits>", an Alphabet
 * header when the text is not ASCII, a blank line, the text), written in
 * the spool's parent directory (which smsd does not read) and renamed in,
 * so smsd never sees half a file.
 *
 * smsd usually runs as a user of its own (Debian: smsd), so the file is
 * mode 0640 in SPOOL_DIR's group: setgid spool directories give it that
 * group, and otherwise it is handed over when otp_demo is a member of it
 * (a systemd unit's SupplementaryGroups=). fchmod, not open's mode, so
 * that a UMask=0077 does not take the group's read bit away. Nobody else
 * may read it: it holds a code.
 */
static enum send_result
send_spool(struct otp *otp, const struct config *c, const char *phone,
           const char *text)
{
	const char *dir = c->spool_dir;
	char body[OTP_MAX_TEXT + 96], tmp[OTP_MAX_STR + 64];
	char path[OTP_MAX_STR + 64], name[48], masked[32];
	uint8_t rnd[8];
	struct stat dst, fst;
	bool utf8 = false;
	int n, fd = -1;
	enum send_result rc = SEND_LOCAL;

	phone_mask(phone, masked, sizeof(masked));
	/* smsd reads a file as ISO-8859-15 unless told: say UTF-8 whenever
	 * the text is not plain ASCII. */
	for (const char *t = text; *t != '\0'; t++)
		utf8 |= (unsigned char)*t >= 0x80;
	n = snprintf(body, sizeof(body), "To: %s\n%s\n%s\n", phone + 1,
	    utf8 ? "Alphabet: UTF-8\n" : "", text);
	if (n < 0 || (size_t)n >= sizeof(body) ||
	    otp->rng(otp->rng_ctx, rnd, sizeof(rnd)) != 0)
		goto out;
	str_copy(name, sizeof(name), "otp_demo.");
	hex_encode(rnd, sizeof(rnd), name + strlen(name), false);
	if (snprintf(path, sizeof(path), "%s/%s", dir, name) >=
	    (int)sizeof(path) || snprintf(tmp, sizeof(tmp), "%s/../.%s.tmp",
	    dir, name) >= (int)sizeof(tmp))
		goto out;
	if ((fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600)) >= 0 &&
	    stat(dir, &dst) == 0 && fstat(fd, &fst) == 0 &&
	    fst.st_gid != dst.st_gid && fchown(fd, (uid_t)-1, dst.st_gid) != 0)
		log_warn(otp, "%s: %s stays in group %u, not %s's group %u (%s):"
		    " smsd can read it only as root", __func__, name,
		    (unsigned)fst.st_gid, dir, (unsigned)dst.st_gid,
		    strerror(errno));
	if (fd < 0 || fchmod(fd, 0640) != 0 ||
	    write(fd, body, (size_t)n) != n || fsync(fd) != 0 ||
	    close(fd) != 0 || (fd = -1, rename(tmp, path) != 0)) {
		log_warn(otp, "send_failed to=%s reason=\"spool %s: %s\"", masked,
		    dir, strerror(errno));
		if (fd >= 0)
			close(fd);
		unlink(tmp);
		goto out;
	}
	log_debug(otp, "spooled %s", name);
	rc = SEND_OK;
out:
	wipe(body, sizeof(body));
	return rc;
}

/* SMS_COMMAND must name an executable by absolute path. */
static int
config_check_command(struct config *c, const struct origin *o, char *err,
                     size_t errlen)
{
	char where[OTP_MAX_STR + 32], words[2 * OTP_MAX_STR], *argv[32];
	const char *prog;

	config_where(o, "SMS_COMMAND", where, sizeof(where));
	prog = command_argv(c->sms_command, "+1", "x", words, sizeof(words),
	    argv, countof(argv)) > 0 ? argv[0] : "";
	if (prog[0] != '/' || access(prog, X_OK) != 0)
		return config_error(err, errlen, where, "SMS_COMMAND must start "
		    "with the absolute path of an executable (%s)",
		    prog[0] ? prog : "empty");
	return 0;
}

/*
 * SMS_COMMAND: runs the program with the number and text as arguments
 * (never through a shell), the environment SMS_COMMAND_ENV allows, and
 * SMS_TIMEOUT seconds to finish. Exit status 0 is success.
 */
static enum send_result
send_command(struct otp *otp, const struct config *c, const char *phone,
             const char *text)
{
	char words[OTP_MAX_STR + OTP_MAX_TEXT + 64], envbuf[1024], masked[32];
	char *argv[32], *envp[17];
	int status;
	pid_t pid;

	phone_mask(phone, masked, sizeof(masked));
	command_env(c->sms_command_env, envbuf, sizeof(envbuf), envp,
	    countof(envp));
	pid = command_argv(c->sms_command, phone, text, words, sizeof(words),
	    argv, countof(argv)) < 0 ? -1 : command_spawn(argv, envp);
	wipe(words, sizeof(words)); /* the child has its own copy */
	if (pid < 0)
		return SEND_LOCAL;
	status = command_wait(pid, c->sms_timeout * 1000, otp->halt[0]);
	if (status >= 0 && WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return SEND_OK;
	if (status < 0)
		log_warn(otp, "send_failed to=%s reason=\"command timed out\"",
		    masked);
	else
		log_warn(otp, "send_failed to=%s reason=\"command exit %d\"",
		    masked, WIFEXITED(status) ? WEXITSTATUS(status) : -1);
	return status < 0 ? SEND_NETWORK : SEND_API_ERROR;
}

/* SMS_CA_FILE, or the first system bundle found; fails without one. */
static int
config_check_ca(struct config *c, const struct origin *o, char *err,
                size_t errlen)
{
	static const char *const bundles[] = {
		"/etc/ssl/certs/ca-certificates.crt", /* Debian, Pi OS */
		"/etc/ssl/cert.pem",                  /* OpenWrt ca-bundle */
	};
	char where[OTP_MAX_STR + 32];

	if (c->sms_ca_file[0] == '\0') {
		for (size_t i = 0; i < countof(bundles); i++)
			if (access(bundles[i], R_OK) == 0) {
				str_copy(c->sms_ca_file, sizeof(c->sms_ca_file),
				    bundles[i]);
				break;
			}
		if (c->sms_ca_file[0] == '\0')
			return config_error(err, errlen, o->file,
			    "SMS_CA_FILE not set and no CA bundle found in "
			    "/etc/ssl/certs/ca-certificates.crt or "
			    "/etc/ssl/cert.pem");
	} else if (access(c->sms_ca_file, R_OK) != 0) {
		config_where(o, "SMS_CA_FILE", where, sizeof(where));
		return config_error(err, errlen, where,
		    "SMS_CA_FILE %s: %s", c->sms_ca_file, strerror(errno));
	}
	return 0;
}

/* Telnyx: its key, a number to send from, and a CA bundle. */
static int
config_check_telnyx(struct config *c, const struct origin *o, char *err,
                    size_t errlen)
{
	char where[OTP_MAX_STR + 32];

	if (c->api_key[0] == '\0') {
		config_where(o, "API_KEY", where, sizeof(where));
		return config_error(err, errlen, where,
		    "API_KEY must be set for SMS_PROVIDER telnyx");
	}
	if (!phone_is_e164(c->from_number)) {
		config_where(o, "FROM_NUMBER", where, sizeof(where));
		return config_error(err, errlen, where,
		    "FROM_NUMBER must be an E.164 number like '+12015550123'");
	}
	return config_check_ca(c, o, err, errlen);
}

/* Logs a failed API answer: status and errors[0].code/title, no secrets. */
static void
http_log_failure(struct otp *otp, const char *masked, long status,
                 const struct response *resp, const char *why)
{
	char code[32], title[128], esc_code[64], esc_title[256];

	if (status > 0 && json_api_error(resp->buf, resp->len, code,
	    sizeof(code), title, sizeof(title)) == 0) {
		log_escape(code, strlen(code), esc_code, sizeof(esc_code));
		log_escape(title, strlen(title), esc_title, sizeof(esc_title));
		log_warn(otp, "send_failed to=%s status=%ld error=%s title=\"%s\"",
		    masked, status, esc_code, esc_title);
	} else {
		log_escape(why, strlen(why), esc_title, sizeof(esc_title));
		log_warn(otp, "send_failed to=%s status=%ld reason=\"%s\"",
		    masked, status, esc_title);
	}
}

/*
 * Fills the request body template (SMS_HTTP_BODY): {to}, {from} and
 * {text} become the values escaped for the content type, JSON or form.
 * 0, or -1 if it does not fit.
 */
static int
http_body(const struct config *c, const char *phone, const char *text,
          char *out, size_t outlen)
{
	const struct var vars[] = { { "to", phone }, { "from", c->from_number },
	    { "text", text } };
	bool form = strcmp(c->sms_http_content_type,
	    "application/x-www-form-urlencoded") == 0;
	size_t n = 0;

	return fill(c->sms_http_body, strlen(c->sms_http_body), 1, false, vars,
	    countof(vars), form ? form_escape : json_escape, out,
	    outlen, &n) < 0 ? -1 : 0;
}

/*
 * Sends through an HTTP gateway: Telnyx (its JSON shape, Bearer key, and
 * success only with a data object) or any gateway configured by the
 * SMS_HTTP_* keys (success: any 2xx). 429 and 503 are SEND_BUSY. The key
 * is only ever in a header or the configured body.
 */
static enum send_result
http_send(struct otp *otp, const struct config *c, const char *phone,
          const char *text, bool telnyx)
{
	char body[OTP_MAX_JSON + 3 * OTP_MAX_TEXT], auth[320], ctype[160];
	char errbuf[CURL_ERROR_SIZE] = "", masked[32];
	struct pooled p = { NULL, NULL, NULL };
	struct response resp = { NULL, 0, 0 };
	struct curl_slist *hdrs = NULL, *next;
	enum send_result rc = SEND_LOCAL;
	const char *name;
	long status = 0;
	CURLcode cc;

	phone_mask(phone, masked, sizeof(masked));
	auth[0] = '\0';
	if (telnyx || strcmp(c->sms_http_auth, "bearer") == 0)
		snprintf(auth, sizeof(auth), "Authorization: Bearer %s",
		    c->api_key);
	else if ((name = PREFIX(c->sms_http_auth, "header:")) != NULL)
		snprintf(auth, sizeof(auth), "%s: %s", name, c->api_key);
	snprintf(ctype, sizeof(ctype), "Content-Type: %s",
	    c->sms_http_content_type);
	if (http_body(c, phone, text, body, sizeof(body)) != 0) {
		log_err(otp, "%s: message too long", __func__);
		goto out;
	}
	if ((auth[0] && (next = curl_slist_append(hdrs, auth)) == NULL) ||
	    (auth[0] && (hdrs = next) == NULL) ||
	    (next = curl_slist_append(hdrs, ctype)) == NULL ||
	    (hdrs = next, next = curl_slist_append(hdrs,
	    "Accept: application/json")) == NULL)
		goto out;
	hdrs = next;
	if (curl_take(otp, &p) != 0)
		goto out;
	resp.buf = p.buf;
	resp.cap = OTP_MAX_SMS_RESPONSE;
	if (curl_setup(c, p.h, c->sms_api_url, c->sms_http_method, hdrs, body,
	    !telnyx && strcmp(c->sms_http_auth, "basic") == 0, &resp,
	    errbuf) != 0) {
		log_err(otp, "%s: cannot set up libcurl", __func__);
		goto out;
	}
	cc = curl_perform(otp, &p);
	curl_easy_getinfo(p.h, CURLINFO_RESPONSE_CODE, &status);
	if (cc != CURLE_OK) {
		http_log_failure(otp, masked, 0, &resp,
		    errbuf[0] ? errbuf : curl_easy_strerror(cc));
		rc = cc == CURLE_WRITE_ERROR ? SEND_BAD_ANSWER : SEND_NETWORK;
	} else if (status >= 200 && status <= 299) {
		/* Telnyx accepted means {"data": {...}}; anything else is not
		 * Telnyx, whatever its status says. */
		struct json j = { resp.buf, resp.buf + resp.len, 0 };

		rc = SEND_OK;
		if (telnyx && (json_member(&j, "data") != 0 || j.p >= j.end ||
		    *j.p != '{')) {
			http_log_failure(otp, masked, 0, &resp,
			    "2xx answer without a data object");
			rc = SEND_BAD_ANSWER;
		}
	} else {
		http_log_failure(otp, masked, status, &resp, "HTTP error");
		rc = (status == 429 || status == 503) ? SEND_BUSY :
		    status >= 500 ? SEND_SERVER : SEND_API_ERROR;
	}
out:
	if (p.h != NULL) {
		/* After a failure too: libcurl drops a broken connection. */
		curl_easy_setopt(p.h, CURLOPT_HTTPHEADER, NULL);
		curl_give(otp, &p);
	}
	curl_slist_free_all(hdrs);
	wipe(auth, sizeof(auth));
	wipe(body, sizeof(body));
	return rc;
}

static enum send_result
send_telnyx(struct otp *otp, const struct config *c, const char *phone,
            const char *text)
{
	return http_send(otp, c, phone, text, true);
}

static enum send_result
send_http(struct otp *otp, const struct config *c, const char *phone,
          const char *text)
{
	return http_send(otp, c, phone, text, false);
}

/* The start-up log lines: what each sender will do. */
static void
describe_console(struct otp *otp, const struct config *c)
{
	(void)c;
	log_warn(otp, "console sender: SMS are printed on stdout, nothing is "
	    "sent (set API_KEY to send for real)");
}

static void
describe_spool(struct otp *otp, const struct config *c)
{
	char parent[OTP_MAX_STR + 4];

	log_info(otp, "spool sender: %s", c->spool_dir);
	snprintf(parent, sizeof(parent), "%s/..", c->spool_dir);
	if (access(c->spool_dir, W_OK) != 0 || access(parent, W_OK) != 0)
		log_warn(otp, "spool sender: %s or its parent (where messages "
		    "are written before they move in): %s; sends will fail",
		    c->spool_dir, strerror(errno));
}

static void
describe_command(struct otp *otp, const struct config *c)
{
	(void)c;
	log_info(otp, "command sender");
}

static void
describe_http(struct otp *otp, const struct config *c)
{
	/* Scheme and host only: a URL may carry a key. */
	log_info(otp, "%s sender: %.*s", c->sender->name,
	    (int)(8 + strcspn(c->sms_api_url + 8, "/?#")), c->sms_api_url);
}

#define SENDER_ROW(id, check_fn, send_fn, describe_fn, ca) \
	[SENDER_##id] = { #id, check_fn, send_fn, describe_fn, ca },
static const struct sender senders[SENDER__N] = { SENDERS(SENDER_ROW) };
#undef SENDER_ROW

/*
 * Sends code to phone with the configured sender, in the language lang
 * picked (message_pick(): MESSAGE_<lang>, MESSAGE or the built-in text).
 */
static enum send_result
sms_send(struct otp *otp, const struct config *c, const char *phone,
         const char *code, const char *tmpl)
{
	char text[OTP_MAX_TEXT];
	enum send_result rc;

	if (message_fill(c, tmpl, code, text, sizeof(text)) != 0) {
		log_err(otp, "%s: MESSAGE too long", __func__);
		return SEND_LOCAL;
	}
	rc = c->sender->send(otp, c, phone, text);
	wipe(text, sizeof(text));
	return rc;
}

/*
 * How long a send takes, a moving average (each new one counts 1/8): the
 * request of a number USERS_FILE does not list waits that long instead
 * (send_pause()), so the answer's time does not tell who is listed. Left
 * over: a send's jitter around the average, no wait before the first
 * send, and an answer to a listed number that failed to send.
 * Updates racing each other may lose one: harmless for an average.
 */
static void
send_timed(struct otp *otp, int64_t ms)
{
	unsigned avg8 = atomic_load_explicit(&otp->send_ms8,
	    memory_order_relaxed);

	/* The first send is the average, not an eighth of it. */
	atomic_store_explicit(&otp->send_ms8, avg8 == 0 ? 8 * (unsigned)ms :
	    avg8 - avg8 / 8 + (unsigned)ms, memory_order_relaxed);
}

static void
send_pause(struct otp *otp)
{
	struct pollfd halt = { otp->halt[0], POLLIN, 0 };

	/* The halt pipe ends it at shutdown, as it ends a send. */
	poll(&halt, 1, (int)(atomic_load(&otp->send_ms8) / 8));
}

/* ---- verifications ----------------------------------------------------- */
/*
 * The rules both front ends share (the HTML forms and the JSON API):
 * limits before any send, resends repeat the code only to the session
 * (or API) it was first sent for, failed checks count against the client.
 */

/* What starting a verification came to. */
struct start {
	enum limit limit;       /* LIMIT_NONE unless a limit refused */
	enum send_result sent;  /* SEND_OK unless the send failed */
	bool full;              /* every record is live: 503 */
	bool internal;          /* the random source failed: 500 */
	bool resent;            /* the live record's code went again */
	long retry;             /* seconds, for Retry-After */
	uint32_t slot;
	uint8_t id[OTP_ID_LEN];
};

/* limits_take()'s reserve step: under the limits lock, a resend of the
 * owner's own live record for the number, if it has one and its sends
 * allow, else a new record made of what verification_draw() drew. */
struct resend {
	struct otp *otp;
	const struct config *c;
	const char *phone;
	const char *shown;      /* as its person typed it (web), or NULL */
	const struct owner *ow;
	int32_t own;            /* the record to resend; -1: the number's
				   newest (limits_take()'s slot) */
	const uint8_t *own_id;  /* own's id, or NULL */
	int64_t now;
	char *code;             /* drawn; a resend's own replaces it */
	struct start *st;       /* st->id: drawn, or the resent record's */
	uint8_t mac[OTP_MAC_LEN]; /* the drawn code's hash */
};

/* Draws a new record's code, id (into rs->st) and hash. 0, or -1 with
 * st->internal set. */
static int
verification_draw(struct otp *otp, const struct config *c, struct resend *rs)
{
	if (code_generate(otp, c->alphabet, rs->code, (size_t)c->token_length,
	    rs->st->id, sizeof(rs->st->id)) == 0 &&
	    code_mac(otp, rs->code, strlen(rs->code), rs->mac) == 0)
		return 0;
	log_err(otp, "%s: random source failed", __func__);
	rs->st->internal = true;
	return -1;
}

static enum limit
verification_reserve(void *arg, struct take *tk)
{
	struct resend *rs = arg;
	const struct config *c = rs->c;
	uint32_t max = rs->ow->ns == NS_API ?
	    (uint32_t)c->api_sends_per_verification : UINT32_MAX;
	/* The newest record may be another session's (it asked for the
	 * same number since): a session's resend names its own. */
	int32_t slot = rs->own >= 0 ? rs->own : tk->slot;
	enum resend_found rc = RESEND_NONE;

	if (slot >= 0)
		rc = store_resend(&rs->otp->store, (uint32_t)slot, rs->phone,
		    rs->ow, rs->now, c->code_ttl * 1000, max, rs->code,
		    rs->st->id);
	if (rc == RESEND_SPENT) {
		rs->st->retry = c->code_ttl;
		return LIMIT_VERIFICATION;
	}
	if (rc == RESEND_OK) {
		rs->st->resent = true;
		rs->st->slot = (uint32_t)slot;
		return LIMIT_NONE;
	}
	/* MAX_PENDING codes live: refused, so nothing is counted (as
	 * through Redis); the caller says so. */
	if (store_add(&rs->otp->store, rs->phone, rs->shown, tk->knum,
	    rs->code, rs->mac, rs->st->id, rs->ow, rs->now,
	    c->code_ttl * 1000, &rs->st->slot) != 0) {
		rs->st->full = true;
		return LIMIT_FULL;
	}
	tk->slot = (int32_t)rs->st->slot;
	return LIMIT_NONE;
}

/* MAX_PENDING codes are live (in this table, or across the instances
 * that share Redis): no new record for phone. Logged; st says so. */
static void
verification_full(struct otp *otp, const struct config *c, const char *phone,
                  struct start *st)
{
	char masked[32];

	phone_mask(phone, masked, sizeof(masked));
	log_warn(otp, "table_full to=%s capacity=%ld", masked, c->max_pending);
	st->full = true;
	st->retry = c->code_ttl;
}

/*
 * The memory store's operations: the code store and rate limits above,
 * as they were before there was a choice. A send is one step under the
 * limits lock: the limits checked, the owner's record resent or a new
 * one made of what verification_draw() drew, the send counted.
 */
static int
mem_send_begin(struct otp *otp, const struct config *c, struct take *tk,
               struct resend *rs)
{
	rs->st->limit = limits_take(otp, c, tk, rs->now, verification_reserve,
	    rs);
	if (rs->st->full) {
		rs->st->limit = LIMIT_NONE;
		verification_full(otp, c, rs->phone, rs->st);
		return -1;
	}
	return rs->st->limit == LIMIT_NONE ? 0 : -1;
}

static void
mem_send_undo(struct otp *otp, const struct config *c, const struct resend *rs)
{
	if (rs->st->resent)
		store_unsend(&otp->store, rs->st->slot, rs->st->id);
	else
		store_cancel(&otp->store, rs->st->slot, rs->st->id, rs->ow,
		    rs->now, c->code_ttl * 1000);
	limits_refund(otp, rs->ow->ns, rs->phone, rs->now);
}

#define mem_wait limits_wait
#define mem_verify_take limits_verify_take
#define mem_ping(otp, c) 0 /* never asked: store_is_memory() */

static void
mem_verify_undo(struct otp *otp, const struct config *c,
                const struct client *cl, int64_t now)
{
	(void)c;
	limits_verify_undo(otp, cl, now);
}

static int
mem_check(struct otp *otp, const struct config *c, uint32_t slot,
          const uint8_t id[OTP_ID_LEN], const struct owner *ow,
          const uint8_t *mac, int64_t now, struct view *v, uint32_t *tries,
          enum check *rc)
{
	*rc = store_check(&otp->store, slot, id, ow, mac, now,
	    c->code_ttl * 1000, (uint32_t)c->max_attempts, v, tries);
	return 0;
}

static int
mem_view(struct otp *otp, const struct config *c, uint32_t slot,
         const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
         const char *shown, struct view *v)
{
	store_view(&otp->store, slot, id, ow, now, c->code_ttl * 1000, shown,
	    v);
	return 0;
}

static int
mem_state(struct otp *otp, const struct config *c, uint32_t slot,
          const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
          enum rec_state *state, int64_t *left)
{
	*state = store_state(&otp->store, slot, id, ow, now,
	    c->code_ttl * 1000, left);
	return 0;
}

static int
mem_cancel(struct otp *otp, const struct config *c, uint32_t slot,
           const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now)
{
	return store_cancel(&otp->store, slot, id, ow, now,
	    c->code_ttl * 1000);
}

/* The number's newest record, found through its rate window. */
static int
mem_find(struct otp *otp, const struct config *c, const char *phone,
         const struct owner *ow, int64_t now, uint32_t *slot,
         uint8_t id[OTP_ID_LEN])
{
	int32_t s = limits_slot(otp, limits_number_key(&otp->limits, ow->ns,
	    phone), now);

	if (s < 0 || store_id_of(&otp->store, (uint32_t)s, phone, ow, now,
	    c->code_ttl * 1000, id) != 0)
		return -1;
	*slot = (uint32_t)s;
	return 0;
}

static bool revoked_has(struct revoked *rv, uint64_t rid, int64_t until);
static bool revoked_add(struct revoked *rv, uint64_t rid, int64_t until,
                        int64_t now); /* in "cookies and sessions" */

static int
mem_revoke(struct otp *otp, const struct config *c, uint64_t rid,
           int64_t until, int64_t now)
{
	(void)c;
	return revoked_add(&otp->revoked, rid, until, now) ? 1 : 0;
}

static int
mem_revoked(struct otp *otp, const struct config *c, uint64_t rid,
            int64_t until)
{
	(void)c;
	return revoked_has(&otp->revoked, rid, until) ? 1 : 0;
}

#ifdef WITH_REDIS
static const struct store_ops store_memory = {
	.name = "memory", .send_begin = mem_send_begin,
	.send_undo = mem_send_undo, .wait = limits_wait,
	.verify_take = limits_verify_take, .verify_undo = mem_verify_undo,
	.check = mem_check, .view = mem_view, .state = mem_state,
	.cancel = mem_cancel, .find = mem_find, .revoke = mem_revoke,
	.revoked = mem_revoked,
};
#endif

/*
 * STORE_CALL(otp, op, args...): operation op of otp's store. In a build
 * without Redis there is one store, and the call is made to its function
 * by name (mem_op), so the compiler inlines it as before there was a
 * choice: the router builds keep their size.
 */
#ifdef WITH_REDIS
#define STORE_CALL(otp, op, ...) ((otp)->ops->op(__VA_ARGS__))
#else
#define STORE_CALL(otp, op, ...) (mem_##op(__VA_ARGS__))
#endif

/* Whether otp keeps its state in memory (always, without Redis), and
 * its store's name. */
static bool
store_is_memory(const struct otp *otp)
{
#ifdef WITH_REDIS
	return otp->ops == &store_memory;
#else
	(void)otp;
	return true;
#endif
}

static const char *
store_name(const struct otp *otp)
{
#ifdef WITH_REDIS
	return otp->ops->name;
#else
	(void)otp;
	return "memory";
#endif
}

/*
 * Starts a verification of phone (E.164, allowed) for client cl and owner
 * ow, with message template tmpl (message_pick()): checks the limits, then
 * resends the owner's live record for this number (same code, same
 * attempts: the one at slot own, or with own -1 the number's newest) or
 * makes a new one, and sends the SMS. Another session's record for the
 * same number is never touched: it gets its own code. Returns 0 when it
 * went out, else -1 with st saying why; a failed send removes a new
 * record, and gives a resend's record its send back. A number USERS_FILE
 * does not list gets 0 and no SMS (user_may_pass()).
 */
static int
verification_send(struct otp *otp, const struct config *c, const char *phone,
                  const char *shown, const struct client *cl,
                  const struct owner *ow, int32_t own, const uint8_t *own_id,
                  const char *tmpl, struct start *st)
{
	char code[OTP_MAX_CODE_LEN + 1] = "", masked[32];
	int64_t now = otp->now_ms(), t0;
	struct take tk = { ow->ns, phone, cl, 0, -1, 0 };
	struct resend rs = { otp, c, phone, shown, ow, own, own_id, now, code,
	    st, { 0 } };
	const char *ip = cl->addr != NULL ? cl->addr : "api";
	int rc = -1;

	memset(st, 0, sizeof(*st));
	phone_mask(phone, masked, sizeof(masked));
	/* A new record's code and hash are drawn before the store's lock
	 * or round trip, for either store; a resend or a refusal wastes
	 * them. No record: st->internal or st->full. */
	if (verification_draw(otp, c, &rs) != 0 ||
	    (STORE_CALL(otp, send_begin, otp, c, &tk, &rs) != 0 &&
	    st->limit == LIMIT_NONE))
		goto out;
	if (st->limit != LIMIT_NONE) {
		st->retry = st->retry > tk.retry ? st->retry : tk.retry;
		atomic_fetch_add(&otp->stats.limited[st->limit], 1);
		log_info(otp, "rate_limited limit=%s to=%s ip=%s",
		    limit_names[st->limit], masked, ip);
		goto out;
	}
	if (!user_may_pass(c, phone)) {
		/* Not in USERS_FILE: counted, recorded (a code no one gets)
		 * and answered as a listed number is, only not sent. */
		log_info(otp, "unlisted to=%s ip=%s", masked, ip);
		send_pause(otp);
		rc = 0;
		goto out;
	}
	log_info(otp, "%s to=%s ip=%s", st->resent ? "resend" : "request",
	    masked, ip);
	t0 = clock_monotonic_ms();
	st->sent = sms_send(otp, c, phone, code, tmpl);
	if (st->sent != SEND_OK) {
		atomic_fetch_add(&otp->stats.failed[st->sent], 1);
		STORE_CALL(otp, send_undo, otp, c, &rs);
		st->retry = st->sent == SEND_BUSY ? 60 : 0;
		goto out;
	}
	send_timed(otp, clock_monotonic_ms() - t0);
	atomic_fetch_add(&otp->stats.sent, 1);
	log_info(otp, "sent to=%s", masked);
	rc = 0;
out:
	wipe(code, sizeof(code));
	wipe(rs.mac, sizeof(rs.mac));
	return rc;
}

/* verification_send() with the number's newest record: /request, the
 * JSON API. */
static int
verification_start(struct otp *otp, const struct config *c, const char *phone,
                   const char *shown, const struct client *cl,
                   const struct owner *ow, const char *tmpl, struct start *st)
{
	return verification_send(otp, c, phone, shown, cl, ow, -1, NULL, tmpl,
	    st);
}

/*
 * Reads a typed code: spaces around it dropped. Input of any other
 * length than TOKEN_LENGTH is not a code, so it fails without a compare
 * (*mac_ok false); otherwise mac is its keyed hash. 0, or -1 if hashing
 * failed.
 */
static int
code_read(const struct otp *otp, const struct config *c, const char *in,
          size_t len, uint8_t mac[OTP_MAC_LEN], bool *mac_ok)
{
	while (len > 0 && in[0] == ' ')
		in++, len--;
	while (len > 0 && in[len - 1] == ' ')
		len--;
	*mac_ok = len == (size_t)c->token_length;
	return *mac_ok ? code_mac(otp, in, len, mac) : 0;
}

/* Whether record (slot, id) of ow may end approved: its number is one
 * USERS_FILE lists (any number without the file: no lookup then). */
static bool
verification_may_pass(struct otp *otp, const struct config *c, uint32_t slot,
                      const uint8_t id[OTP_ID_LEN], const struct owner *ow,
                      int64_t now)
{
	struct view v;
	bool ok;

	if (c->users_file[0] == '\0')
		return true;
	STORE_CALL(otp, view, otp, c, slot, id, ow, now, NULL, &v);
	ok = v.phone[0] == '\0' || user_may_pass(c, v.phone);
	wipe(&v, sizeof(v));
	return ok;
}

/*
 * Checks code (len bytes, any case) for record (slot, id) of owner ow,
 * from client cl (addr NULL: not counted per address). On a refusal by a
 * limit, *limit says which (nothing was checked). v is the record as the
 * check left it (store_check()), on CHECK_OK with its number; the caller
 * wipes it. On CHECK_WRONG, *left (unless NULL) is the wrong codes the
 * record still takes.
 */
static enum check
verification_check(struct otp *otp, const struct config *c, uint32_t slot,
                   const uint8_t id[OTP_ID_LEN], const struct owner *ow,
                   const char *code, size_t len, const struct client *cl,
                   struct view *v, enum limit *limit, long *retry,
                   uint32_t *left)
{
	uint8_t mac[OTP_MAC_LEN];
	int64_t now = otp->now_ms();
	const char *ip = cl->addr != NULL ? cl->addr : "api";
	uint32_t tries = 0;
	bool mac_ok;
	enum check rc = CHECK_UNKNOWN;
	char masked[32];

	memset(v, 0, sizeof(*v));
	*limit = cl->addr != NULL ? STORE_CALL(otp, verify_take, otp, c, cl, now,
	    retry) : LIMIT_NONE;
	if (*limit != LIMIT_NONE) {
		atomic_fetch_add(&otp->stats.limited[*limit], 1);
		log_info(otp, "rate_limited limit=%s ip=%s", limit_names[*limit],
		    ip);
		return CHECK_UNKNOWN;
	}
	if (code_read(otp, c, code, len, mac, &mac_ok) == 0) {
		/* A number USERS_FILE does not list was never sent its code
		 * (or has left the file since): whatever is typed counts as a
		 * wrong code, and the record never ends approved (its state,
		 * the API's answers and webhooks say so too). */
		if (mac_ok && !verification_may_pass(otp, c, slot, id, ow, now))
			mac_ok = false;
		if (STORE_CALL(otp, check, otp, c, slot, id, ow, mac_ok ? mac : NULL,
		    now, v, &tries, &rc) != 0)
			*limit = LIMIT_STORE;
	}
	wipe(mac, sizeof(mac));
	if (cl->addr != NULL && tries == 0)
		STORE_CALL(otp, verify_undo, otp, c, cl, now);
	if (*limit != LIMIT_NONE) {
		*retry = 1;
		log_warn(otp, "%s: store unavailable ip=%s", __func__, ip);
		return CHECK_UNKNOWN;
	}
	if (left != NULL)
		*left = (uint32_t)c->max_attempts - tries;
	atomic_fetch_add(&otp->stats.checks[rc], 1);
	if (rc == CHECK_OK) {
		phone_mask(v->phone, masked, sizeof(masked));
		log_info(otp, "verified to=%s ip=%s", masked, ip);
	} else {
		log_info(otp, "%s ip=%s", rc == CHECK_LOCKED ? "locked" :
		    "failed", ip);
	}
	return rc;
}

#ifdef WITH_REDIS
/* ---- redis store ------------------------------------------------------- */
/*
 * STORE=redis://... or unix://...: the records, rate windows, caps and
 * revocations of every instance that names the same Redis, each with a
 * TTL, so nothing outlives its use. Every operation that checks and
 * counts is one Lua script, loaded at connect (SCRIPT LOAD) and called by
 * its SHA (EVALSHA; loaded again on NOSCRIPT, after a Redis restart), so
 * the caps hold across instances as they hold under one lock. Times are
 * Redis's own clock (TIME), the one clock every instance shares: that is
 * why it is the default, and why production never gives a time. Every
 * script takes one more argument, always its last: empty in production
 * (TIME), the instance's now_ms() only when a test replaced the instance's
 * clock (tests/model.c; redis_run()). Always there, so a script never
 * mistakes its own last argument (a number as typed) for a time. Expiry
 * and windows compare stored times with that now (a record ends
 * OTP_TOMBSTONE_MS after its code, in age()); the keys' TTLs only collect
 * garbage, so a jump of the clock acts as it does on the memory store.
 *
 * Keys (hashes): otp:r:<id> a record: st (enum rec_state), ph, sh, ns,
 * sid, mac (the code's keyed hash, hex), enc (the code under a pad made
 * from the code key and the id: a resend needs it, no one else can read
 * it), at (wrong codes), sends, exp (when the code expires, ms).
 * otp:n:<key> a number's window (s start, c count, l last send, r newest
 * record), otp:a: an address, otp:nh: otp:nd: a network, otp:v: wrong
 * codes per address, otp:g:hour|day|api the caps; otp:x:<session> a
 * revoked session. <key> is limits_hash()'s: keyed, so the same number
 * is the same key on every instance that shares the state key. otp:p,
 * the pending index: a sorted set of the ids of records with a code,
 * scored by their expiry, kept by the scripts that make and end records;
 * its unexpired members are MAX_PENDING's count across instances
 * (ZCOUNT, O(log N)), and its expired ones are popped by one sweeper of
 * all (lua_claim) for their "expired" webhooks: each once, at most.
 *
 * Connections: one per worker thread, made at its first request and kept
 * (a pthread key frees it when the thread ends); a command that fails or
 * takes longer than STORE_TIMEOUT drops it, and the next request connects
 * again, so an instance serves again as soon as Redis is back. Nothing is
 * sent or accepted meanwhile: every operation fails closed.
 */

/* The scripts' states are enum rec_state's numbers; their 60000 is the
 * tombstone. */
_Static_assert(OTP_TOMBSTONE_MS == 60000, "the Lua scripts' tombstone");
_Static_assert(REC_LIVE == 1 && REC_LOCKED == 2 && REC_EXPIRED == 3 &&
    REC_VERIFIED == 4 && NS_API == 2, "the Lua scripts name states and "
    "namespaces by number");

#define LUA_PRELUDE                                                           \
	"local now = tonumber(ARGV[#ARGV])\n"                                 \
	"if not now then\n"                                                   \
	"  local t = redis.call('TIME')\n"                                    \
	"  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)\n" \
	"end\n"                                                               \
	"local H, D = 3600000, 86400000\n"                                    \
	"local function count(k, period)\n"                                   \
	"  local w = redis.call('HMGET', k, 's', 'c')\n"                      \
	"  local s = tonumber(w[1]) or 0\n"                                   \
	"  if s ~= 0 and now - s < period then return tonumber(w[2]) or 0, s end\n" \
	"  return 0, 0\n"                                                     \
	"end\n"                                                               \
	"local function add(k, period, keep)\n"                               \
	"  local c, s = count(k, period)\n"                                   \
	"  if c == 0 then s = now; redis.call('HSET', k, 's', now, 'c', 1)\n" \
	"  else redis.call('HINCRBY', k, 'c', 1) end\n"                       \
	"  local ttl = s + period - now\n"                                    \
	"  if keep and keep > ttl then ttl = keep end\n"                      \
	"  redis.call('PEXPIRE', k, ttl)\n"                                   \
	"end\n"                                                               \
	"local function retry(at)\n"                                          \
	"  local s = math.floor((at - now + 999) / 1000)\n"                   \
	"  if s < 1 then s = 1 end\n"                                         \
	"  return s\n"                                                        \
	"end\n"                                                               \
	"local function age(k)\n"                                             \
	"  local r = redis.call('HMGET', k, 'st', 'exp', 'ns')\n"             \
	"  if r[2] and now >= tonumber(r[2]) + 60000 then\n"                  \
	"    redis.call('DEL', k); return end\n"                              \
	"  if (r[1] == '1' or r[1] == '2') and now >= tonumber(r[2]) then\n"  \
	"    redis.call('HSET', k, 'st', '3', 'ex', r[1])\n"                  \
	"    redis.call('HDEL', k, 'mac', 'enc')\n"                           \
	"    if r[3] ~= '1' then redis.call('HDEL', k, 'ph', 'sh') end\n"     \
	"  end\n"                                                             \
	"end\n"                                                               \
	"local P = 'otp:p'\n"                                                 \
	"local function mine(r, ns, sid)\n"                                   \
	"  return r[1] and r[2] == ns and r[3] == sid\n"                      \
	"end\n"

/*
 * A send (limits_check_send(), verification_reserve(), store_add() and
 * limits_count_send() at once). KEYS: number, address, network hour and
 * day, hour, day, API hour, the record to resend ('': the number's
 * newest), the new record. ARGV: per number, per address, API hour, hour,
 * day, network hour and day shares, resend hold, number hold, flags (c:
 * per client, a: the API), phone, ns, sid, max sends, ttl, new id, mac,
 * enc, MAX_PENDING, the masked phone (for a webhook), the phone as typed
 * ('': none). Returns {limit
 * name, retry}, {'full'} (MAX_PENDING codes live: nothing counted) or
 * {'none', resent, id, enc}. A new record joins the pending index.
 */
static const char lua_send[] = LUA_PRELUDE
	"local A = ARGV\n"
	"local pc = string.find(A[10], 'c', 1, true) ~= nil\n"
	"local api = string.find(A[10], 'a', 1, true) ~= nil\n"
	"local last = tonumber(redis.call('HGET', KEYS[1], 'l')) or 0\n"
	"local hold = tonumber(A[8])\n"
	"if last ~= 0 and now - last < hold then\n"
	"  return {'resend_interval', retry(last + hold)} end\n"
	"local function over(k, period, cap, name)\n"
	"  local c, s = count(k, period)\n"
	"  if c >= tonumber(cap) then return {name, retry(s + period)} end\n"
	"end\n"
	"local r = over(KEYS[1], H, A[1], 'per_number')\n"
	"  or (pc and over(KEYS[2], H, A[2], 'per_ip'))\n"
	"  or (api and over(KEYS[7], H, A[3], 'api_per_hour'))\n"
	"  or over(KEYS[5], H, A[4], 'per_hour') or over(KEYS[6], D, A[5], 'per_day')\n"
	"  or (pc and over(KEYS[3], H, A[6], 'per_network'))\n"
	"  or (pc and over(KEYS[4], D, A[7], 'per_network'))\n"
	"if r then return r end\n"
	"local rk, id, enc, resent = KEYS[8], A[16], A[18], 0\n"
	"if rk == '' then\n"
	"  local n = redis.call('HGET', KEYS[1], 'r')\n"
	"  if n then rk = 'otp:r:' .. n end\n"
	"end\n"
	"if rk ~= '' then\n"
	"  age(rk)\n"
	"  local v = redis.call('HMGET', rk, 'st', 'ns', 'sid', 'ph', 'sends', 'enc')\n"
	"  if v[1] == '1' and mine(v, A[12], A[13]) and v[4] == A[11] then\n"
	"    if tonumber(v[5]) >= tonumber(A[14]) then\n"
	"      return {'per_verification', retry(now + tonumber(A[15]))} end\n"
	"    redis.call('HINCRBY', rk, 'sends', 1)\n"
	"    id, enc, resent = string.sub(rk, 7), v[6], 1\n"
	"  end\n"
	"end\n"
	"if resent == 0 then\n"
	"  if redis.call('ZCOUNT', P, '(' .. now, '+inf') >= tonumber(A[19]) then\n"
	"    return {'full'} end\n"
	"  local exp, keep = now + tonumber(A[15]), tonumber(A[15]) + 60000\n"
	"  redis.call('HSET', KEYS[9], 'st', 1, 'ns', A[12], 'sid', A[13],\n"
	"    'ph', A[11], 'mac', A[17], 'enc', A[18], 'at', 0, 'sends', 1,\n"
	"    'exp', exp, 'mk', A[20])\n"
	"  if A[21] ~= '' then redis.call('HSET', KEYS[9], 'sh', A[21]) end\n"
	"  redis.call('PEXPIRE', KEYS[9], keep)\n"
	"  redis.call('ZADD', P, exp, id)\n"
	"  if redis.call('PTTL', P) < keep then redis.call('PEXPIRE', P, keep) end\n"
	"end\n"
	"add(KEYS[1], H, tonumber(A[9]))\n"
	"redis.call('HSET', KEYS[1], 'l', now)\n"
	"if resent == 0 then redis.call('HSET', KEYS[1], 'r', id) end\n"
	"if pc then add(KEYS[2], H); add(KEYS[3], H); add(KEYS[4], D) end\n"
	"if api then add(KEYS[7], H) end\n"
	"add(KEYS[5], H); add(KEYS[6], D)\n"
	"return {'none', resent, id, enc}\n";

/* A send that failed. KEYS: number, record. ARGV: resent (1, 0). */
static const char lua_undo[] = LUA_PRELUDE
	"if ARGV[1] == '1' then\n"
	"  if (tonumber(redis.call('HGET', KEYS[2], 'sends')) or 0) > 0 then\n"
	"    redis.call('HINCRBY', KEYS[2], 'sends', -1) end\n"
	"else\n"
	"  age(KEYS[2])\n"
	"  local st = redis.call('HGET', KEYS[2], 'st')\n"
	"  if st == '1' or st == '2' then redis.call('DEL', KEYS[2])\n"
	"    redis.call('ZREM', P, string.sub(KEYS[2], 7)) end\n"
	"end\n"
	"if redis.call('EXISTS', KEYS[1]) == 1 then\n"
	"  if (tonumber(redis.call('HGET', KEYS[1], 'c')) or 0) > 0 then\n"
	"    redis.call('HINCRBY', KEYS[1], 'c', -1) end\n"
	"  redis.call('HSET', KEYS[1], 'l', 0)\n"
	"end\n"
	"return 0\n";

/* store_check(). KEYS: record. ARGV: ns, sid, mac ('': not a code), max
 * attempts. Returns {result, wrong codes counted, then the record as the
 * check left it, as lua_view's (on 'ok' with the number it no longer
 * keeps)}; an approval leaves the pending index. The MACs are compared in
 * Lua, not in constant time: they are keyed, so their bytes tell nothing
 * of the code. */
static const char lua_check[] = LUA_PRELUDE
	"age(KEYS[1])\n"
	"local r = redis.call('HMGET', KEYS[1], 'st', 'ns', 'sid', 'mac', 'ph',\n"
	"  'at', 'exp', 'sh')\n"
	"if not mine(r, ARGV[1], ARGV[2]) then return {'unknown', 0} end\n"
	"local st, at, left = tonumber(r[1]), tonumber(r[6]) or 0, 0\n"
	"if st == 1 or st == 2 then left = tonumber(r[7]) - now end\n"
	"local function reply(result, tries)\n"
	"  return {result, tries, st, at, left, r[5] or '', r[8] or ''}\n"
	"end\n"
	"if st == 3 then return reply('expired', 0) end\n"
	"if st == 4 then return reply('done', 0) end\n"
	"if st == 2 then return reply('locked', 0) end\n"
	"if ARGV[3] ~= '' and r[4] == ARGV[3] then\n"
	"  redis.call('HSET', KEYS[1], 'st', '4')\n"
	"  redis.call('HDEL', KEYS[1], 'mac', 'enc', 'ph', 'sh')\n"
	"  redis.call('ZREM', P, string.sub(KEYS[1], 7))\n"
	"  st, left = 4, 0\n"
	"  return reply('ok', 0)\n"
	"end\n"
	"at = redis.call('HINCRBY', KEYS[1], 'at', 1)\n"
	"if at >= tonumber(ARGV[4]) then\n"
	"  redis.call('HSET', KEYS[1], 'st', '2')\n"
	"  redis.call('HDEL', KEYS[1], 'mac', 'enc')\n"
	"  st = 2\n"
	"  return reply('locked', at)\n"
	"end\n"
	"return reply('wrong', at)\n";

/* store_view(), store_state(). KEYS: record. ARGV: ns, sid, shown ('':
 * keep). Returns {state, attempts, ms left, phone, shown}. */
static const char lua_view[] = LUA_PRELUDE
	"age(KEYS[1])\n"
	"local r = redis.call('HMGET', KEYS[1], 'st', 'ns', 'sid', 'at', 'exp',\n"
	"  'ph', 'sh')\n"
	"if not mine(r, ARGV[1], ARGV[2]) then return {0, 0, 0, '', ''} end\n"
	"if ARGV[3] ~= '' and r[6] then\n"
	"  redis.call('HSET', KEYS[1], 'sh', ARGV[3]); r[7] = ARGV[3] end\n"
	"local left = 0\n"
	"if r[1] == '1' or r[1] == '2' then left = tonumber(r[5]) - now end\n"
	"return {tonumber(r[1]), tonumber(r[4]), left, r[6] or '', r[7] or ''}\n";

/* store_cancel(). KEYS: record. ARGV: ns, sid. 0, -1 none, -2 ended. */
static const char lua_cancel[] = LUA_PRELUDE
	"age(KEYS[1])\n"
	"local r = redis.call('HMGET', KEYS[1], 'st', 'ns', 'sid')\n"
	"if not mine(r, ARGV[1], ARGV[2]) then return -1 end\n"
	"if r[1] == '1' or r[1] == '2' then redis.call('DEL', KEYS[1])\n"
	"  redis.call('ZREM', P, string.sub(KEYS[1], 7)); return 0 end\n"
	"return -2\n";

/* The number's newest record with a code, if ow's and for phone. KEYS:
 * number. ARGV: ns, sid, phone. Its id, or nil. */
static const char lua_find[] = LUA_PRELUDE
	"local id = redis.call('HGET', KEYS[1], 'r')\n"
	"if not id then return false end\n"
	"local k = 'otp:r:' .. id\n"
	"age(k)\n"
	"local r = redis.call('HMGET', k, 'st', 'ns', 'sid', 'ph')\n"
	"if (r[1] == '1' or r[1] == '2') and mine(r, ARGV[1], ARGV[2]) and\n"
	"  r[4] == ARGV[3] then return id end\n"
	"return false\n";

/* limits_wait(). KEYS: number. ARGV: resend hold. Seconds, or 0. */
static const char lua_wait[] = LUA_PRELUDE
	"local l = tonumber(redis.call('HGET', KEYS[1], 'l')) or 0\n"
	"local hold = tonumber(ARGV[1])\n"
	"if l ~= 0 and now - l < hold then return retry(l + hold) end\n"
	"return 0\n";

/* limits_verify_take(). KEYS: address. ARGV: cap. 0, or the retry. */
static const char lua_vtake[] = LUA_PRELUDE
	"local c, s = count(KEYS[1], H)\n"
	"if c >= tonumber(ARGV[1]) then return retry(s + H) end\n"
	"add(KEYS[1], H)\n"
	"return 0\n";

/* limits_verify_undo(). KEYS: address. */
static const char lua_vundo[] =
	"local c = tonumber(redis.call('HGET', KEYS[1], 'c')) or 0\n"
	"if c <= 1 then redis.call('DEL', KEYS[1])\n"
	"else redis.call('HINCRBY', KEYS[1], 'c', -1) end\n"
	"return 0\n";

/* The pending index's live codes (otp_pending_codes): O(log N). */
static const char lua_pending[] = LUA_PRELUDE
	"return redis.call('ZCOUNT', P, '(' .. now, '+inf')\n";

/*
 * The sweeper's claim: pops up to 64 expired members of the pending
 * index (score <= now), each by exactly one instance, and ages their
 * records. Returns {popped, id, masked phone, ...}: the API's records
 * that expired live, whose "expired" webhook the caller now owns.
 */
static const char lua_claim[] = LUA_PRELUDE
	"local ids = redis.call('ZRANGEBYSCORE', P, '-inf', now, 'LIMIT', 0, 64)\n"
	"local out = {#ids}\n"
	"for _, id in ipairs(ids) do\n"
	"  redis.call('ZREM', P, id)\n"
	"  local k = 'otp:r:' .. id\n"
	"  age(k)\n"
	"  local r = redis.call('HMGET', k, 'st', 'ns', 'ex', 'mk')\n"
	"  if r[1] == '3' and r[2] == '2' and r[3] == '1' and r[4] then\n"
	"    out[#out + 1] = id; out[#out + 1] = r[4] end\n"
	"end\n"
	"return out\n";

enum rscript { RS_SEND, RS_UNDO, RS_CHECK, RS_VIEW, RS_CANCEL, RS_FIND,
	       RS_WAIT, RS_VTAKE, RS_VUNDO, RS_PENDING, RS_CLAIM, RS__N };

static const char *const rscripts[RS__N] = {
	[RS_SEND] = lua_send, [RS_UNDO] = lua_undo, [RS_CHECK] = lua_check,
	[RS_VIEW] = lua_view, [RS_CANCEL] = lua_cancel, [RS_FIND] = lua_find,
	[RS_WAIT] = lua_wait, [RS_VTAKE] = lua_vtake, [RS_VUNDO] = lua_vundo,
	[RS_PENDING] = lua_pending, [RS_CLAIM] = lua_claim,
};

/* A worker thread's connection and the SHAs its scripts have there. */
struct rconn {
	redisContext *ctx;
	char sha[RS__N][41];
};

static void
rconn_drop(struct rconn *rc)
{
	if (rc->ctx != NULL)
		redisFree(rc->ctx);
	rc->ctx = NULL;
}

/* The pthread key's destructor: a worker thread ended. */
static void
rconn_free(void *p)
{
	rconn_drop(p);
	free(p);
}

/* Logs the store going away or coming back, once each way. */
static void
redis_note(struct otp *otp, bool up, const char *why)
{
	bool was = !atomic_exchange(&otp->redis_down, !up);

	if (was != up)
		log_warn(otp, "store: redis %s%s%s", up ? "is back" :
		    "unavailable", why[0] ? ": " : "", why);
}

/* A reply of type, or NULL (freed); an error reply's text in why. */
static redisReply *
redis_want(redisReply *rep, int type, char *why, size_t whylen)
{
	if (rep != NULL && rep->type == type)
		return rep;
	if (rep != NULL && rep->type == REDIS_REPLY_ERROR)
		snprintf(why, whylen, "%.*s", (int)(rep->len < 80 ? rep->len :
		    80), rep->str);
	if (rep != NULL)
		freeReplyObject(rep);
	return NULL;
}

/*
 * Connects, authenticates, selects the database and loads the scripts,
 * each within STORE_TIMEOUT. 0, or -1 with the reason (never the
 * password) in why.
 */
static int
rconn_open(const struct config *c, struct rconn *rc, char *why, size_t whylen)
{
	struct timeval tv = { c->store_timeout / 1000,
	    (c->store_timeout % 1000) * 1000 };
	struct store_url u;
	redisReply *rep;
	char db[16];
	int ret = -1;

	if (store_url_parse(c->store, &u) != 0)
		goto out;
	rc->ctx = u.path[0] != '\0' ? redisConnectUnixWithTimeout(u.path, tv) :
	    redisConnectWithTimeout(u.host, u.port, tv);
	if (rc->ctx == NULL || rc->ctx->err != 0) {
		snprintf(why, whylen, "connect: %.96s", rc->ctx != NULL ?
		    rc->ctx->errstr : "out of memory");
		goto out;
	}
	redisSetTimeout(rc->ctx, tv);
	if (u.password[0] == '\0')
		str_copy(u.password, sizeof(u.password), c->store_password);
	if (u.password[0] != '\0' && (rep = redis_want(redisCommand(rc->ctx,
	    "AUTH %s", u.password), REDIS_REPLY_STATUS, why, whylen)) == NULL)
		goto out;
	if (u.password[0] != '\0')
		freeReplyObject(rep);
	snprintf(db, sizeof(db), "%ld", u.db);
	if (u.db != 0 && (rep = redis_want(redisCommand(rc->ctx, "SELECT %s",
	    db), REDIS_REPLY_STATUS, why, whylen)) == NULL)
		goto out;
	if (u.db != 0)
		freeReplyObject(rep);
	for (int i = 0; i < RS__N; i++) {
		if ((rep = redis_want(redisCommand(rc->ctx, "SCRIPT LOAD %s",
		    rscripts[i]), REDIS_REPLY_STRING, why, whylen)) == NULL)
			goto out;
		str_copy(rc->sha[i], sizeof(rc->sha[i]), rep->str);
		freeReplyObject(rep);
	}
	ret = 0;
out:
	if (ret != 0 && why[0] == '\0' && rc->ctx != NULL)
		snprintf(why, whylen, "%s", rc->ctx->err ? rc->ctx->errstr :
		    "refused");
	if (ret != 0)
		rconn_drop(rc);
	wipe(&u, sizeof(u));
	return ret;
}

/* This thread's connection, opened if need be; NULL if Redis cannot be
 * reached (logged once). Allocates once per thread. */
static struct rconn *
rconn_get(struct otp *otp, const struct config *c)
{
	struct rconn *rc = pthread_getspecific(otp->redis_key);
	char why[128] = "";

	if (rc == NULL) {
		if ((rc = calloc(1, sizeof(*rc))) == NULL ||
		    pthread_setspecific(otp->redis_key, rc) != 0) {
			free(rc);
			return NULL;
		}
	}
	if (rc->ctx != NULL)
		return rc;
	if (rconn_open(c, rc, why, sizeof(why)) != 0) {
		redis_note(otp, false, why);
		return NULL;
	}
	redis_note(otp, true, "");
	return rc;
}

/*
 * Sends argv on this thread's connection rc, and once more on a new one
 * if Redis had closed the old (EOF, EPIPE, a reset: a restart, and the
 * command never ran there).
 * The reply, an error reply too (the caller looks), or NULL: the
 * connection dropped (the next request makes another) and logged.
 */
static redisReply *
redis_exec(struct otp *otp, const struct config *c, struct rconn *rc,
           int argc, const char **argv)
{
	redisReply *rep = redisCommandArgv(rc->ctx, argc, argv, NULL);
	char why[128];

	if (rep == NULL && (rc->ctx->err == REDIS_ERR_EOF ||
	    (rc->ctx->err == REDIS_ERR_IO && (errno == EPIPE ||
	    errno == ECONNRESET)))) {
		rconn_drop(rc);
		if (rconn_get(otp, c) == NULL)
			return NULL;
		rep = redisCommandArgv(rc->ctx, argc, argv, NULL);
	}
	if (rep == NULL) {
		snprintf(why, sizeof(why), "%.96s", rc->ctx->errstr);
		rconn_drop(rc);
		redis_note(otp, false, why);
	}
	return rep;
}

/* An error reply's end: logged, the connection dropped. NULL. */
static redisReply *
redis_fail(struct otp *otp, struct rconn *rc, redisReply *rep)
{
	char why[128];

	snprintf(why, sizeof(why), "%.*s", (int)(rep->len < 96 ? rep->len :
	    96), rep->str);
	freeReplyObject(rep);
	rconn_drop(rc);
	redis_note(otp, false, why);
	return NULL;
}

/*
 * Runs script s with argv (KEYS then ARGV: nkeys of them first), and the
 * clock argument last, on this thread's connection: by SHA, and once more
 * after loading it if Redis forgot it (NOSCRIPT: a restart). The reply
 * (the caller frees it), or NULL: Redis down, slow or failing.
 */
static redisReply *
redis_run(struct otp *otp, const struct config *c, enum rscript s, int nkeys,
          int argc, const char **argv)
{
	const char *all[36], *load[3] = { "SCRIPT", "LOAD", rscripts[s] };
	struct rconn *rc = rconn_get(otp, c);
	redisReply *rep = NULL;
	char n[8], now[24] = "";

	if (rc == NULL || argc + 4 > (int)countof(all))
		return NULL;
	snprintf(n, sizeof(n), "%d", nkeys);
	/* The clock argument: empty (Redis's TIME) unless a test replaced
	 * the instance's clock ("redis store"). */
	if (otp->now_ms != clock_monotonic_ms)
		snprintf(now, sizeof(now), "%lld", (long long)otp->now_ms());
	all[0] = "EVALSHA", all[1] = rc->sha[s], all[2] = n;
	memcpy(all + 3, argv, (size_t)argc * sizeof(*argv));
	all[argc + 3] = now;
	for (int tries = 0; tries < 2; tries++) {
		if ((rep = redis_exec(otp, c, rc, argc + 4, all)) == NULL)
			return NULL;
		if (rep->type != REDIS_REPLY_ERROR ||
		    strncmp(rep->str, "NOSCRIPT", 8) != 0 || tries > 0)
			break;
		freeReplyObject(rep);
		if ((rep = redis_exec(otp, c, rc, 3, load)) == NULL)
			return NULL;
		if (rep->type != REDIS_REPLY_STRING)
			return redis_fail(otp, rc, rep);
		str_copy(rc->sha[s], sizeof(rc->sha[s]), rep->str);
		freeReplyObject(rep);
	}
	return rep->type == REDIS_REPLY_ERROR ? redis_fail(otp, rc, rep) : rep;
}

/* Element i of an array reply as a number, or def. */
static long long
redis_int(const redisReply *rep, size_t i, long long def)
{
	const redisReply *e;

	if (rep->type != REDIS_REPLY_ARRAY || i >= rep->elements)
		return def;
	e = rep->element[i];
	if (e->type == REDIS_REPLY_INTEGER)
		return e->integer;
	return e->type == REDIS_REPLY_STRING ? strtoll(e->str, NULL, 10) : def;
}

/* Element i of an array reply as a string copied into out (size bytes),
 * "" if none. 0, or -1 if it does not fit. */
static int
redis_str(const redisReply *rep, size_t i, char *out, size_t size)
{
	const redisReply *e;

	out[0] = '\0';
	if (rep->type != REDIS_REPLY_ARRAY || i >= rep->elements)
		return 0;
	e = rep->element[i];
	if (e->type != REDIS_REPLY_STRING)
		return 0;
	return str_ncopy(out, size, e->str, e->len);
}

/* Key names: "otp:<kind>:<hex>". */
static void
redis_key(char *out, size_t size, const char *kind, uint64_t key)
{
	snprintf(out, size, "otp:%s:%016llx", kind, (unsigned long long)key);
}

static void
redis_rec_key(char out[48], const uint8_t id[OTP_ID_LEN])
{
	char hex[2 * OTP_ID_LEN + 1];

	hex_encode(id, OTP_ID_LEN, hex, false);
	snprintf(out, 48, "otp:r:%s", hex);
}

/* The pad a code is stored under: HMAC(code key, "enc:" id). */
static void
redis_pad(struct otp *otp, const uint8_t id[OTP_ID_LEN],
          uint8_t pad[OTP_MAC_LEN])
{
	uint8_t in[4 + OTP_ID_LEN] = { 'e', 'n', 'c', ':' };

	memcpy(in + 4, id, OTP_ID_LEN);
	hmac_keyed(&otp->code_hk, in, sizeof(in), pad);
}

/* code <-> hex of code ^ pad. */
static void
redis_code_seal(struct otp *otp, const uint8_t id[OTP_ID_LEN],
                const char *code, char out[2 * OTP_MAX_CODE_LEN + 1])
{
	uint8_t pad[OTP_MAC_LEN], x[OTP_MAX_CODE_LEN];
	size_t n = strlen(code);

	redis_pad(otp, id, pad);
	for (size_t i = 0; i < n; i++)
		x[i] = (uint8_t)code[i] ^ pad[i];
	hex_encode(x, n, out, false);
	wipe(pad, sizeof(pad));
	wipe(x, sizeof(x));
}

static int
redis_code_open(struct otp *otp, const uint8_t id[OTP_ID_LEN],
                const char *hex, char code[OTP_MAX_CODE_LEN + 1])
{
	uint8_t pad[OTP_MAC_LEN], x[OTP_MAX_CODE_LEN];
	size_t n = strlen(hex) / 2;

	if (n == 0 || n > OTP_MAX_CODE_LEN || hex_decode(hex, 2 * n, x) != 0)
		return -1;
	redis_pad(otp, id, pad);
	for (size_t i = 0; i < n; i++)
		code[i] = (char)(x[i] ^ pad[i]);
	code[n] = '\0';
	wipe(pad, sizeof(pad));
	wipe(x, sizeof(x));
	return 0;
}

/* The limit a script named, LIMIT_STORE if none. */
static enum limit
redis_limit(const redisReply *rep)
{
	char name[32];

	redis_str(rep, 0, name, sizeof(name));
	for (int i = 0; i < LIMIT__N; i++)
		if (strcmp(name, limit_names[i]) == 0)
			return (enum limit)i;
	return LIMIT_STORE;
}

/* A number's window key in ns. */
static void
redis_num_key(struct otp *otp, enum ns ns, const char *phone, char out[48])
{
	redis_key(out, 48, "n", limits_number_key(&otp->limits, ns, phone));
}

/* The owner as the scripts compare it: ns and sid, hex. */
static void
redis_owner(const struct owner *ow, char ns[4], char sid[2 * OTP_SID_LEN + 1])
{
	snprintf(ns, 4, "%d", (int)ow->ns);
	hex_encode(ow->sid, OTP_SID_LEN, sid, false);
}

/* lua_send's reply: a refusal, or the record resent or made. */
static int
redis_sent(struct otp *otp, const struct config *c, const redisReply *rep,
           struct take *tk, struct resend *rs)
{
	struct start *st = rs->st;
	char id[2 * OTP_ID_LEN + 1], enc[2 * OTP_MAX_CODE_LEN + 1];

	if (redis_str(rep, 0, id, sizeof(id)) == 0 && strcmp(id, "full") == 0) {
		verification_full(otp, c, tk->phone, st);
		return -1;
	}
	st->limit = redis_limit(rep);
	if (st->limit != LIMIT_NONE) {
		tk->retry = (long)redis_int(rep, 1, 60);
		return -1;
	}
	st->resent = redis_int(rep, 1, 0) == 1;
	st->slot = 0;
	if (!st->resent)
		return 0;
	if (redis_str(rep, 2, id, sizeof(id)) != 0 || strlen(id) != 2 *
	    OTP_ID_LEN || hex_decode(id, strlen(id), st->id) != 0 ||
	    redis_str(rep, 3, enc, sizeof(enc)) != 0 ||
	    redis_code_open(otp, st->id, enc, rs->code) != 0) {
		st->limit = LIMIT_STORE; /* not a record we wrote */
		return -1;
	}
	return 0;
}

/*
 * A send in one script (lua_send): the limits checked and counted, the
 * owner's live record resent (its code unsealed) or a new one made from
 * the code, id and hash verification_draw() drew. 0, or -1 with rs->st
 * saying why.
 */
static int
redis_send_begin(struct otp *otp, const struct config *c, struct take *tk,
                 struct resend *rs)
{
	struct start *st = rs->st;
	bool pc = tk->cl->addr != NULL;
	const long nums[12] = { tk->ns == NS_API ?
	    c->api_sms_per_number_per_hour : c->sms_per_number_per_hour,
	    c->sms_per_ip_per_hour, c->api_sms_per_hour, c->sms_per_hour,
	    c->sms_per_day, (long)share_of(c->sms_per_hour, c->network_share),
	    (long)share_of(c->sms_per_day, c->network_share),
	    c->resend_interval * 1000, (long)number_hold(c),
	    tk->ns == NS_API ? c->api_sends_per_verification : LONG_MAX,
	    c->code_ttl * 1000, c->max_pending };
	char k[9][48], n[12][24], flags[4], ns[4], sid[2 * OTP_SID_LEN + 1];
	char id[2 * OTP_ID_LEN + 1], mac[2 * OTP_MAC_LEN + 1];
	char enc[2 * OTP_MAX_CODE_LEN + 1], masked[32];
	const char *argv[30];
	redisReply *rep;
	int rc = -1;

	redis_num_key(otp, tk->ns, tk->phone, k[0]);
	redis_key(k[1], 48, "a", pc ? tk->cl->akey : 0);
	redis_key(k[2], 48, "nh", pc ? tk->cl->nkey : 0);
	redis_key(k[3], 48, "nd", pc ? tk->cl->nkey : 0);
	str_copy(k[4], 48, "otp:g:hour");
	str_copy(k[5], 48, "otp:g:day");
	str_copy(k[6], 48, "otp:g:api");
	k[7][0] = '\0';
	if (rs->own_id != NULL)
		redis_rec_key(k[7], rs->own_id);
	redis_rec_key(k[8], st->id);
	for (int i = 0; i < 12; i++)
		snprintf(n[i], sizeof(n[i]), "%ld", nums[i]);
	phone_mask(tk->phone, masked, sizeof(masked));
	snprintf(flags, sizeof(flags), "%s%s", pc ? "c" : "",
	    tk->ns == NS_API ? "a" : "");
	redis_owner(rs->ow, ns, sid);
	hex_encode(st->id, OTP_ID_LEN, id, false);
	hex_encode(rs->mac, OTP_MAC_LEN, mac, false);
	redis_code_seal(otp, st->id, rs->code, enc);
	/* KEYS, then ARGV in lua_send's order */
	for (int i = 0; i < 9; i++)
		argv[i] = k[i], argv[9 + i] = n[i];
	argv[18] = flags, argv[19] = tk->phone, argv[20] = ns;
	argv[21] = sid, argv[22] = n[9], argv[23] = n[10];
	argv[24] = id, argv[25] = mac, argv[26] = enc, argv[27] = n[11];
	argv[28] = masked;
	argv[29] = rs->shown != NULL ? rs->shown : "";
	if ((rep = redis_run(otp, c, RS_SEND, 9, 30, argv)) == NULL) {
		st->limit = LIMIT_STORE;
		tk->retry = 1;
		goto out;
	}
	rc = redis_sent(otp, c, rep, tk, rs);
	freeReplyObject(rep);
out:
	wipe(mac, sizeof(mac));
	wipe(enc, sizeof(enc));
	return rc;
}

static void
redis_send_undo(struct otp *otp, const struct config *c,
                const struct resend *rs)
{
	char k[2][48];
	const char *argv[3] = { k[0], k[1], rs->st->resent ? "1" : "0" };
	redisReply *rep;

	redis_num_key(otp, rs->ow->ns, rs->phone, k[0]);
	redis_rec_key(k[1], rs->st->id);
	if ((rep = redis_run(otp, c, RS_UNDO, 2, 3, argv)) != NULL)
		freeReplyObject(rep);
}

/* A script whose reply is one number, or def if it failed. */
static long long
redis_number(struct otp *otp, const struct config *c, enum rscript s,
             const char *key, const char *arg, long long def)
{
	const char *argv[2] = { key, arg };
	redisReply *rep = redis_run(otp, c, s, 1, 2, argv);
	long long v = def;

	if (rep != NULL && rep->type == REDIS_REPLY_INTEGER)
		v = rep->integer;
	if (rep != NULL)
		freeReplyObject(rep);
	return v;
}

static long
redis_wait(struct otp *otp, const struct config *c, const struct view *v,
           int64_t now)
{
	char k[48], hold[24];

	(void)now;
	redis_num_key(otp, NS_WEB, v->phone, k);
	snprintf(hold, sizeof(hold), "%ld", c->resend_interval * 1000);
	return (long)redis_number(otp, c, RS_WAIT, k, hold, 0);
}

static enum limit
redis_verify_take(struct otp *otp, const struct config *c,
                  const struct client *cl, int64_t now, long *retry)
{
	char k[48], cap[24];
	long long v;

	(void)now;
	redis_key(k, sizeof(k), "v", cl->akey);
	snprintf(cap, sizeof(cap), "%ld", c->verify_per_ip_per_hour);
	if ((v = redis_number(otp, c, RS_VTAKE, k, cap, -1)) < 0) {
		*retry = 1;
		return LIMIT_STORE;
	}
	*retry = (long)v;
	return v == 0 ? LIMIT_NONE : LIMIT_VERIFY_IP;
}

static void
redis_verify_undo(struct otp *otp, const struct config *c,
                  const struct client *cl, int64_t now)
{
	char k[48];

	(void)now;
	redis_key(k, sizeof(k), "v", cl->akey);
	redis_number(otp, c, RS_VUNDO, k, "", 0);
}

/* Queues event e of the API's record id, for phone (masked here). */
static void
redis_hook(struct otp *otp, const uint8_t id[OTP_ID_LEN], const char *phone,
           enum hook_event e)
{
	char masked[24];

	phone_mask(phone, masked, sizeof(masked));
	hook_queue(&otp->hooks, 0, id, masked, e);
}

/* lua_check's results, by enum check. */
static const char *const redis_checks[CHECK__N] = {
	[CHECK_OK] = "ok", [CHECK_WRONG] = "wrong", [CHECK_LOCKED] = "locked",
	[CHECK_UNKNOWN] = "unknown", [CHECK_EXPIRED] = "expired",
	[CHECK_DONE] = "done",
};

/* Reads a record as lua_view returns it, from element at of rep, into v
 * (emptied first). */
static void
redis_view_read(const redisReply *rep, size_t at,
                const uint8_t id[OTP_ID_LEN], struct view *v)
{
	memset(v, 0, sizeof(*v));
	v->state = (enum rec_state)redis_int(rep, at, REC_FREE);
	if (v->state > REC_VERIFIED)
		v->state = REC_FREE;
	v->attempts = (uint32_t)redis_int(rep, at + 1, 0);
	v->left_ms = redis_int(rep, at + 2, 0);
	memcpy(v->id, id, OTP_ID_LEN);
	redis_str(rep, at + 3, v->phone, sizeof(v->phone));
	redis_str(rep, at + 4, v->shown, sizeof(v->shown));
}

static int
redis_check(struct otp *otp, const struct config *c, uint32_t slot,
            const uint8_t id[OTP_ID_LEN], const struct owner *ow,
            const uint8_t *mac, int64_t now, struct view *v, uint32_t *tries,
            enum check *rc)
{
	char k[48], ns[4], sid[2 * OTP_SID_LEN + 1], hex[2 * OTP_MAC_LEN + 1] = "";
	char max[24], result[16];
	const char *argv[5] = { k, ns, sid, hex, max };
	redisReply *rep;

	(void)now;
	*tries = 0;
	*rc = CHECK_UNKNOWN;
	memset(v, 0, sizeof(*v));
	if (slot != 0)
		return 0; /* no handle: the memory store's "no such record" */
	redis_rec_key(k, id);
	redis_owner(ow, ns, sid);
	if (mac != NULL)
		hex_encode(mac, OTP_MAC_LEN, hex, false);
	snprintf(max, sizeof(max), "%ld", c->max_attempts);
	rep = redis_run(otp, c, RS_CHECK, 1, 5, argv);
	wipe(hex, sizeof(hex));
	if (rep == NULL)
		return -1;
	redis_str(rep, 0, result, sizeof(result));
	for (int i = 0; i < CHECK__N; i++)
		if (strcmp(result, redis_checks[i]) == 0)
			*rc = (enum check)i;
	*tries = (uint32_t)redis_int(rep, 1, 0);
	if (*rc != CHECK_UNKNOWN)
		redis_view_read(rep, 2, id, v);
	if (*rc == CHECK_OK && v->phone[0] == '\0')
		*rc = CHECK_UNKNOWN;
	/* The script ended the record here, and only here: this instance
	 * tells the webhook, as the memory store's store_end() does. */
	if (ow->ns == NS_API && (*rc == CHECK_OK || (*rc == CHECK_LOCKED &&
	    *tries != 0)) && v->phone[0] != '\0')
		redis_hook(otp, id, v->phone, *rc == CHECK_OK ? HOOK_APPROVED :
		    HOOK_LOCKED);
	freeReplyObject(rep);
	return 0;
}

static int
redis_view(struct otp *otp, const struct config *c, uint32_t slot,
           const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
           const char *shown, struct view *v)
{
	char k[48], ns[4], sid[2 * OTP_SID_LEN + 1];
	const char *argv[4] = { k, ns, sid, shown != NULL ? shown : "" };
	redisReply *rep;

	(void)now;
	memset(v, 0, sizeof(*v));
	if (slot != 0)
		return 0;
	redis_rec_key(k, id);
	redis_owner(ow, ns, sid);
	if ((rep = redis_run(otp, c, RS_VIEW, 1, 4, argv)) == NULL)
		return -1;
	redis_view_read(rep, 0, id, v);
	freeReplyObject(rep);
	return 0;
}

static int
redis_state(struct otp *otp, const struct config *c, uint32_t slot,
            const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now,
            enum rec_state *state, int64_t *left)
{
	struct view v;
	int rc = redis_view(otp, c, slot, id, ow, now, NULL, &v);

	*state = v.state;
	*left = v.left_ms;
	wipe(&v, sizeof(v));
	return rc;
}

static int
redis_cancel(struct otp *otp, const struct config *c, uint32_t slot,
             const uint8_t id[OTP_ID_LEN], const struct owner *ow, int64_t now)
{
	char k[48], ns[4], sid[2 * OTP_SID_LEN + 1];
	const char *argv[3] = { k, ns, sid };
	redisReply *rep;
	int rc = -1;

	(void)now;
	if (slot != 0)
		return -1;
	redis_rec_key(k, id);
	redis_owner(ow, ns, sid);
	if ((rep = redis_run(otp, c, RS_CANCEL, 1, 3, argv)) == NULL)
		return -3;
	if (rep->type == REDIS_REPLY_INTEGER)
		rc = (int)rep->integer;
	freeReplyObject(rep);
	return rc;
}

static int
redis_find(struct otp *otp, const struct config *c, const char *phone,
           const struct owner *ow, int64_t now, uint32_t *slot,
           uint8_t id[OTP_ID_LEN])
{
	char k[48], ns[4], sid[2 * OTP_SID_LEN + 1];
	const char *argv[4] = { k, ns, sid, phone };
	redisReply *rep;
	int rc = -1;

	(void)now;
	redis_num_key(otp, ow->ns, phone, k);
	redis_owner(ow, ns, sid);
	if ((rep = redis_run(otp, c, RS_FIND, 1, 4, argv)) == NULL)
		return -2;
	if (rep->type == REDIS_REPLY_STRING && rep->len == 2 * OTP_ID_LEN &&
	    hex_decode(rep->str, rep->len, id) == 0) {
		*slot = 0;
		rc = 0;
	}
	freeReplyObject(rep);
	return rc;
}

/* A plain command's reply, or NULL (the connection dropped, logged). */
static redisReply *
redis_plain(struct otp *otp, const struct config *c, int argc,
            const char **argv)
{
	struct rconn *rc = rconn_get(otp, c);
	redisReply *rep;

	if (rc == NULL || (rep = redis_exec(otp, c, rc, argc, argv)) == NULL)
		return NULL;
	return rep->type == REDIS_REPLY_ERROR ? redis_fail(otp, rc, rep) : rep;
}

/* A revoked session is a key that ends when its cookie would have: no
 * table to fill, so no floor. */
static int
redis_revoke(struct otp *otp, const struct config *c, uint64_t rid,
             int64_t until, int64_t now)
{
	char k[48], at[24];
	const char *argv[5] = { "SET", k, "1", "EXAT", at };
	redisReply *rep;

	if (until <= now)
		return 0;
	redis_key(k, sizeof(k), "x", rid);
	snprintf(at, sizeof(at), "%lld", (long long)until);
	if ((rep = redis_plain(otp, c, 5, argv)) == NULL)
		return -1;
	freeReplyObject(rep);
	return 0;
}

static int
redis_revoked(struct otp *otp, const struct config *c, uint64_t rid,
              int64_t until)
{
	char k[48];
	const char *argv[2] = { "EXISTS", k };
	redisReply *rep;
	int rc;

	(void)until;
	redis_key(k, sizeof(k), "x", rid);
	if ((rep = redis_plain(otp, c, 2, argv)) == NULL)
		return -1;
	rc = rep->type == REDIS_REPLY_INTEGER && rep->integer > 0;
	freeReplyObject(rep);
	return rc;
}

/* /readyz: 0 if Redis answers PING now. */
static int
redis_ping(struct otp *otp, const struct config *c)
{
	const char *argv[1] = { "PING" };
	redisReply *rep = redis_plain(otp, c, 1, argv);

	if (rep == NULL)
		return -1;
	freeReplyObject(rep);
	return 0;
}

/* otp_pending_codes: the codes live or locked in every instance that
 * shares this Redis (the pending index), or 0 if it cannot be read. */
static unsigned long
redis_pending(struct otp *otp, const struct config *c)
{
	long long n = redis_number(otp, c, RS_PENDING, "otp:p", "", 0);

	return n > 0 ? (unsigned long)n : 0;
}

/*
 * The sweeper's round (lua_claim): the pending index's expired members,
 * each claimed by one instance; this one queues the "expired" webhook of
 * those it claimed. An instance that dies between the claim and the
 * delivery loses those events (README: "Two or more instances").
 */
static void
redis_sweep(struct otp *otp, const struct config *c)
{
	char idh[2 * OTP_ID_LEN + 1], to[24];
	const char *none[1] = { "" };
	uint8_t id[OTP_ID_LEN];
	redisReply *rep;
	long long popped = 64;

	for (int round = 0; popped == 64 && round < 16; round++) {
		if ((rep = redis_run(otp, c, RS_CLAIM, 0, 0, none)) == NULL)
			return;
		popped = redis_int(rep, 0, 0);
		for (size_t i = 1; i + 1 < rep->elements; i += 2)
			if (redis_str(rep, i, idh, sizeof(idh)) == 0 &&
			    strlen(idh) == 2 * OTP_ID_LEN &&
			    hex_decode(idh, strlen(idh), id) == 0 &&
			    redis_str(rep, i + 1, to, sizeof(to)) == 0)
				hook_queue(&otp->hooks, 0, id, to,
				    HOOK_EXPIRED);
		freeReplyObject(rep);
	}
}

static const struct store_ops store_redis = {
	.name = "redis", .send_begin = redis_send_begin,
	.send_undo = redis_send_undo, .wait = redis_wait,
	.verify_take = redis_verify_take, .verify_undo = redis_verify_undo,
	.check = redis_check, .view = redis_view, .state = redis_state,
	.cancel = redis_cancel, .find = redis_find, .revoke = redis_revoke,
	.revoked = redis_revoked, .ping = redis_ping,
};
#endif /* WITH_REDIS */

/* ---- pages ------------------------------------------------------------- */
/*
 * Pages are files in www/, packed into the binary by tools/embed.sh. A
 * template's {{name}} is replaced by the HTML-escaped value of name; a name
 * without a value makes rendering fail, so a typo shows up in tests, not
 * as an empty spot on a page. Their words are {{t:key}}, put in once per
 * language at start (lang_load()); a request renders its language's copy.
 */

#include "www_data.h"

/*
 * Makes the built-in files available. The static builds pack them
 * (tools/lz.py --www: 25 KB of pages and catalogs to 7.3, which the
 * router budgets need):
 * they are unpacked here, once, into one allocation. Other builds embed
 * them as they are (tools/embed.sh). 0, or -1 if out of memory.
 */
static int
www_builtin(struct otp *otp)
{
#ifdef OTP_WWW_PACKED_LEN
	const size_t n = countof(www_packed_files);
	struct www_file *f = malloc(n * sizeof(*f) + OTP_WWW_PACKED_LEN);
	char *text = (char *)(f + n);

	if ((otp->unpacked = f) == NULL || inflate_raw(www_packed,
	    sizeof(www_packed), text, OTP_WWW_PACKED_LEN) != OTP_WWW_PACKED_LEN)
		return -1;
	for (size_t i = 0; i < n; i++) {
		f[i].name = www_packed_files[i].name;
		f[i].data = (const unsigned char *)text + www_packed_files[i].off;
		f[i].len = www_packed_files[i].len;
	}
	otp->builtin = f, otp->nbuiltin = n;
#else
	otp->builtin = www_files, otp->nbuiltin = countof(www_files);
#endif
	return 0;
}

/* The one of n files named name, or NULL. */
static const struct www_file *
www_find(const struct www_file *files, size_t n, const char *name)
{
	for (size_t i = 0; i < n; i++)
		if (strcmp(files[i].name, name) == 0)
			return &files[i];
	return NULL;
}

/*
 * Renders tmpl (len bytes) into out with vars. Returns the length, or -1
 * if a placeholder has no value or the page does not fit.
 */
static long
page_render(const char *tmpl, size_t len, const struct var *vars,
            size_t nvars, char *out, size_t outlen)
{
	size_t n = 0;

	return fill(tmpl, len, 2, true, vars, nvars, html_escape, out, outlen,
	    &n) < 0 ? -1 : (long)n;
}

/* The placeholders each page is given (every page also has {{base}},
 * {{return_to}}, {{app}} and {{lang}}: PAGE_COMMON); WWW_DIR copies are
 * checked against them at start. */
#define PAGE_VARS 9 /* the most a page has */
#define PAGE_COMMON 4
static const struct {
	const char *file;
	const char *vars[PAGE_VARS];
} page_vars[] = {
	{ "index.html", { "error", "csrf", "phone" } },
	{ "verify.html", { "error", "csrf", "phone", "disabled", "wait",
	    "sent", "expires", "token_length", "inputmode" } },
	{ "new_code.html", { "error", "csrf", "phone", "disabled", "wait" } },
	{ "verify_success.html", { "phone", "csrf" } },
	{ "error.html", { "status", "title", "message" } },
};

/* Fills vars with the placeholders of file (and the PAGE_COMMON ones). */
static size_t
page_vars_of(const char *file, struct var *vars)
{
	size_t n = 0;

	for (size_t i = 0; i < countof(page_vars); i++)
		if (strcmp(page_vars[i].file, file) == 0)
			for (size_t j = 0; j < PAGE_VARS &&
			    page_vars[i].vars[j] != NULL; j++)
				vars[n].name = page_vars[i].vars[j],
				vars[n++].value = "x";
	vars[n].name = "base", vars[n++].value = "x";
	vars[n].name = "return_to", vars[n++].value = "x";
	vars[n].name = "app", vars[n++].value = "x";
	vars[n].name = "lang", vars[n++].value = "x";
	return n;
}

/*
 * Loads dir/name as a copy of embedded file f for language lang, if it
 * exists. A page must render with the known placeholders; a {{t:key}} in
 * it takes the built-in words of lang (or LANG, lang_catalog()). 0, or
 * -1 with err set.
 */
static int
www_load_file(struct otp *otp, const char *dir, const char *lang,
              const struct www_file *f, char *err, size_t errlen)
{
	struct var vars[PAGE_VARS + PAGE_COMMON];
	char path[OTP_MAX_STR + 64], *data = NULL, *page = NULL;
	struct www_page *p;
	ssize_t n = -1;
	long k = 0;
	int fd, rc = -1;

	snprintf(path, sizeof(path), "%s/%s", dir, f->name);
	if ((fd = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return errno == ENOENT ? 0 : (snprintf(err, errlen,
		    "WWW_DIR: %s: %s", path, strerror(errno)), -1);
	if ((data = malloc(OTP_MAX_PAGE)) != NULL &&
	    (page = malloc(OTP_MAX_PAGE)) != NULL)
		n = read(fd, data, OTP_MAX_PAGE);
	close(fd);
	if (n > 0 && memmem(data, (size_t)n, "{{t:", 4) != NULL && (k =
	    lang_localize(lang_catalog(otp, otp->cfg, lang[0] ? lang :
	    otp->cfg->lang), data, (size_t)n, page, OTP_MAX_PAGE)) >= 0) {
		char *t = data;

		data = page, page = t, n = k;
	}
	if (n < 0 || n >= OTP_MAX_PAGE / 2) {
		snprintf(err, errlen, "WWW_DIR: %s: unreadable or larger than %d "
		    "bytes", path, OTP_MAX_PAGE / 2 - 1);
	} else if (k < 0) {
		snprintf(err, errlen, "WWW_DIR: %s: a {{t:key}} the catalog does "
		    "not have", path);
	} else if (strstr(f->name, ".html") != NULL && page_render(data,
	    (size_t)n, vars, page_vars_of(f->name, vars), page,
	    OTP_MAX_PAGE) < 0) {
		snprintf(err, errlen, "WWW_DIR: %s: a {{placeholder}} this page "
		    "does not have", path);
	} else {
		p = &otp->pages[otp->npages++];
		str_copy(p->lang, sizeof(p->lang), lang);
		p->file.name = f->name;
		p->file.data = (const unsigned char *)data;
		p->file.len = (size_t)n;
		data = NULL;
		rc = 0;
	}
	free(data);
	free(page);
	return rc;
}

/*
 * WWW_DIR holds translated copies of the pages: files named as in www/
 * replace them for everyone, files in a subdirectory named by a language
 * tag ("de", "pt_BR" or "pt-BR") for browsers that prefer that language.
 * All are read once, here.
 */
static int
www_load(struct otp *otp, char *err, size_t errlen)
{
	const size_t nfiles = otp->nbuiltin;
	const char *dir = otp->cfg->www_dir;
	struct dirent *e;
	DIR *d;
	int nlangs = 0, rc = 0;

	if (dir[0] == '\0')
		return 0;
	otp->pages = calloc((1 + OTP_MAX_LANGS) * nfiles, sizeof(*otp->pages));
	if (otp->pages == NULL || (d = opendir(dir)) == NULL) {
		snprintf(err, errlen, "WWW_DIR %s: %s", dir, strerror(errno));
		return -1;
	}
	for (size_t i = 0; rc == 0 && i < nfiles; i++)
		if (strstr(otp->builtin[i].name, ".txt") == NULL)
			rc = www_load_file(otp, dir, "", &otp->builtin[i], err,
			    errlen);
	while (rc == 0 && (e = readdir(d)) != NULL && nlangs < OTP_MAX_LANGS) {
		char lang[8], sub[OTP_MAX_STR + 16];
		size_t len = strlen(e->d_name);
		struct stat st;

		if (len < 2 || len >= sizeof(lang) || e->d_name[0] == '.' ||
		    strspn(e->d_name, "abcdefghijklmnopqrstuvwxyz"
		    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_") != len)
			continue;
		if (snprintf(sub, sizeof(sub), "%s/%s", dir, e->d_name) >=
		    (int)sizeof(sub) || stat(sub, &st) != 0 ||
		    !S_ISDIR(st.st_mode))
			continue;
		str_copy(lang, sizeof(lang), e->d_name);
		for (char *c = lang; *c != '\0'; c++)
			*c = *c == '-' ? '_' : *c;
		str_copy(otp->wlangs[nlangs++], sizeof(otp->wlangs[0]), lang);
		otp->nwlangs = nlangs;
		for (size_t i = 0; rc == 0 && i < nfiles; i++)
			if (strstr(otp->builtin[i].name, ".txt") == NULL)
				rc = www_load_file(otp, sub, lang,
				    &otp->builtin[i], err, errlen);
	}
	closedir(d);
	return rc;
}

/*
 * The copy of file name to serve in language lang (req_lang()'s pick):
 * WWW_DIR's for lang, else its top level's (a page there is in LANG;
 * style.css is for everyone), else the built-in one in catalog cat's
 * words. *in: the language of the copy.
 */
static const struct www_file *
www_pick(const struct otp *otp, const struct config *c, const char *name,
         const char *lang, const struct catalog *cat, const char **in)
{
	const struct www_file *root = NULL;

	for (int i = 0; i < otp->npages; i++) {
		const struct www_page *p = &otp->pages[i];

		if (strcmp(p->file.name, name) != 0)
			continue;
		if (p->lang[0] != '\0' && strcasecmp(p->lang, lang) == 0)
			return *in = lang, &p->file;
		if (p->lang[0] == '\0' && (strcasecmp(c->lang, lang) == 0 ||
		    strstr(name, ".html") == NULL))
			root = &p->file;
	}
	*in = root != NULL ? lang : cat->lang;
	return root != NULL ? root : www_find(cat->files, otp->nbuiltin, name);
}

/* ---- HTTP replies ------------------------------------------------------ */
/*
 * Every response goes through reply(), which adds the security headers,
 * no-store and the cookies; handlers never write headers themselves.
 */

#define CSP "default-src 'none'; style-src 'self'; script-src 'self'; " \
	    "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "    \
	    "base-uri 'none'"

/* What a request carries through the handlers. Lives on the stack. */
struct req {
	struct otp *otp;
	const struct config *cfg; /* held for the request (cfg_hold) */
	struct mg_connection *conn;
	const struct mg_request_info *ri;
	const char *path;       /* URI with the mount prefix removed */
	bool tls;               /* this connection is TLS */
	bool secure;            /* the browser's is: TLS here, or a trusted
				   proxy says X-Forwarded-Proto: https */
	char addr[64];          /* client address (see client_address) */
	char sid[2 * OTP_SID_LEN + 1];  /* session id, "" if none */
	struct owner ow;        /* the session, as records are owned */
	char csrf[2 * OTP_MAC_LEN + 1]; /* CSRF token for the session */
	char cookies[4][OTP_MAX_COOKIE]; /* Set-Cookie values to send */
	int ncookies;
	long retry_after;       /* > 0: send Retry-After */
	const char *allow;      /* for 405 */
	const char *location;   /* for redirects */
	const char *head;       /* more header lines, each ending in CRLF
				   (WWW-Authenticate, /auth's identity) */
	char return_to[OTP_MAX_RETURN + 1]; /* where to go after success */
	bool close;             /* close the connection after replying */
	const char *lang;       /* its language, NULL until req_lang() */
	const struct catalog *cat; /* the words for it (req_lang()) */
	char content_lang[8];   /* a page's language, "pt-BR": sent as
				   Content-Language, with Vary */
};

/* Appends "name: value\r\n" to head (size bytes) at *n, in copies, not
 * through snprintf (a dozen headers an answer). 0, or -1 if full. */
static int
head_add(char *head, size_t size, size_t *n, const char *name,
         const char *value)
{
	size_t nlen = strlen(name), vlen = strlen(value);
	char *p = head + *n;

	if (nlen + vlen + 4 >= size - *n)
		return -1;
	memcpy(p, name, nlen);
	memcpy(p + nlen, ": ", 2);
	memcpy(p + nlen + 2, value, vlen);
	memcpy(p + nlen + 2 + vlen, "\r\n", 2);
	*n += nlen + vlen + 4;
	return 0;
}

/* Whether the connection stays open after this answer: civetweb's own
 * should_keep_alive() rules, so the Connection header tells the truth. */
static bool
reply_keep_alive(const struct req *r)
{
	const char *h = mg_get_header(r->conn, "Connection");

	if (r->close)
		return false;
	if (h != NULL)
		return strcasestr(h, "keep-alive") != NULL;
	return strcmp(r->ri->http_version, "1.1") == 0;
}

/* The Date header's value for now: formatted once a second per thread. */
static const char *
reply_date(void)
{
	static _Thread_local char date[40];
	static _Thread_local time_t date_of = -1;
	time_t now = time(NULL);
	struct tm tm;

	if (now != date_of) {
		gmtime_r(&now, &tm);
		strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
		date_of = now;
	}
	return date;
}

/*
 * "HTTP/1.1 <status> <text>\r\n" into buf (room for 80 bytes), written
 * out, not through snprintf's formats: every answer has one. A status
 * civetweb has no text for, or out of range, becomes a 500. The length.
 */
static size_t
reply_status_line(struct req *r, int *status, char *buf)
{
	const char *text = mg_get_response_code_text(r->conn, *status);
	size_t n;

	if (*status < 100 || *status > 999 || strlen(text) > 64)
		*status = 500, text = "Internal Server Error";
	memcpy(buf, "HTTP/1.1 ", 9);
	buf[9] = (char)('0' + *status / 100);
	buf[10] = (char)('0' + *status / 10 % 10);
	buf[11] = (char)('0' + *status % 10);
	buf[12] = ' ';
	n = 13 + strlen(text);
	memcpy(buf + 13, text, n - 13);
	memcpy(buf + n, "\r\n", 2);
	return n + 2;
}

/*
 * The head of an answer of len bytes into buf: status line, headers, the
 * blank line; its length in *n. 0, or -1 if it does not fit.
 */
static int
reply_head(struct req *r, int *status, const char *type, size_t len,
           bool keep, char *buf, size_t cap, size_t *n)
{
	char num[32], *digits = num + sizeof(num) - 1;
	size_t v = len;
	int rc = 0;

	*digits = '\0';
	do
		*--digits = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	*n = reply_status_line(r, status, buf);
	rc |= head_add(buf, cap, n, "Content-Type", type);
	if (*status != 204) /* a 204 has no body, nor a length (RFC 9110) */
		rc |= head_add(buf, cap, n, "Content-Length", digits);
	rc |= head_add(buf, cap, n, "Cache-Control", "no-store");
	rc |= head_add(buf, cap, n, "Content-Security-Policy", CSP);
	rc |= head_add(buf, cap, n, "X-Content-Type-Options", "nosniff");
	rc |= head_add(buf, cap, n, "Referrer-Policy", "no-referrer");
	rc |= head_add(buf, cap, n, "X-Frame-Options", "DENY");
	if (r->tls)
		rc |= head_add(buf, cap, n, "Strict-Transport-Security",
		    "max-age=31536000");
	for (int i = 0; i < r->ncookies; i++)
		rc |= head_add(buf, cap, n, "Set-Cookie", r->cookies[i]);
	if (r->retry_after > 0) {
		snprintf(num, sizeof(num), "%ld", r->retry_after);
		rc |= head_add(buf, cap, n, "Retry-After", num);
	}
	if (r->allow != NULL)
		rc |= head_add(buf, cap, n, "Allow", r->allow);
	if (r->location != NULL)
		rc |= head_add(buf, cap, n, "Location", r->location);
	if (r->content_lang[0] != '\0') {
		rc |= head_add(buf, cap, n, "Content-Language", r->content_lang);
		rc |= head_add(buf, cap, n, "Vary", "Accept-Language");
	}
	if (r->head != NULL) /* header lines, formatted by the handler */
		rc |= esc_none(r->head, buf, cap, n);
	rc |= head_add(buf, cap, n, "Date", reply_date());
	rc |= head_add(buf, cap, n, "Connection", keep ? "keep-alive" : "close");
	rc |= esc_none("\r\n", buf, cap, n);
	return rc != 0 ? -1 : 0;
}

/*
 * Sends an answer: status, type, body, the security headers, no-store and
 * whatever the request queued (cookies, Retry-After, Allow, Location).
 * Headers and body go out in one mg_write(): civetweb's own header calls
 * send each line with its own send(), a TCP segment each with tcp_nodelay
 * and a TLS record each, which was most of the cost of an answer. Only a
 * body too big for the buffer follows in a second write.
 */
static int
reply(struct req *r, int status, const char *type, const char *body,
      size_t len)
{
	char buf[OTP_MAX_PAGE + OTP_MAX_HEADERS];
	const size_t cap = sizeof(buf);
	bool head_only = strcmp(r->ri->request_method, "HEAD") == 0;
	bool keep = reply_keep_alive(r);
	size_t n;

	if (reply_head(r, &status, type, len, keep, buf, cap, &n) != 0) {
		/* Headers are bounded (cookies, Location): cannot happen. */
		log_err(r->otp, "%s: headers too long", __func__);
		mg_disable_connection_keep_alive(r->conn);
		return 500;
	}
	if (!keep)
		mg_disable_connection_keep_alive(r->conn);
	if (head_only || len == 0) {
		mg_write(r->conn, buf, n);
	} else if (len <= cap - n) {
		memcpy(buf + n, body, len);
		mg_write(r->conn, buf, n + len);
	} else {
		mg_write(r->conn, buf, n);
		mg_write(r->conn, body, len);
	}
	return status;
}

/*
 * Renders a page from www/ and replies with it. Every page may also use
 * {{base}} (the mount prefix) and {{return_to}}.
 */
/*
 * How a request ends when it cannot go on, with its status and its words
 * for the pages (title, text) and for the JSON API (code, text): one
 * table, so that the forms and the API answer each case alike.
 */
enum outcome {
	OUT_NONE,          /* it goes on */
	OUT_INTERNAL,      /* the random source or a session failed */
	OUT_FULL,          /* every record is live */
	OUT_LIMITED,       /* a per-number or per-client limit */
	OUT_CAPPED,        /* a cap of the whole server or the API */
	OUT_SEND_BUSY,     /* the gateway said later (429, 503) */
	OUT_SEND_FAILED,   /* the gateway failed or refused */
	OUT_MEDIA_TYPE,    /* a body of another type */
	OUT_TOO_LARGE,     /* a body larger than OTP_MAX_BODY */
	OUT_TIMEOUT,       /* a body slower than OTP_BODY_TIMEOUT_MS */
	OUT_BAD_BODY,      /* a body cut short or framed two ways */
	OUT_SIGN_IN,       /* proxy mode: not verified, and not a GET */
	OUT_UPGRADE,       /* proxy mode: a WebSocket or other Upgrade */
	OUT_UPSTREAM_DOWN, /* proxy mode: no connection, or it failed */
	OUT_UPSTREAM_SLOW, /* proxy mode: no answer in UPSTREAM_TIMEOUT */
	OUT_UPSTREAM_BAD,  /* proxy mode: a malformed answer */
	OUT_STORE,         /* STORE=redis did not answer: LIMIT_STORE */
	OUT__N
};

static const struct {
	int status;
	enum text title, page;    /* the page's (index.html's if no title) */
	const char *code, *api;   /* the JSON API's (English: for programs) */
} outcomes[OUT__N] = {
	[OUT_INTERNAL] = { 500, TX_INTERNAL_ERROR, TX_NONE, "internal",
	    "internal error" },
	[OUT_FULL] = { 503, TX_NONE, TX_BUSY, "busy",
	    "too many pending verifications" },
	[OUT_LIMITED] = { 429, TX_NONE, TX_TOO_MANY, "rate_limited",
	    "a limit was reached" },
	[OUT_CAPPED] = { 503, TX_NONE, TX_TOO_MANY, "rate_limited",
	    "a limit was reached" },
	[OUT_SEND_BUSY] = { 503, TX_NONE, TX_SEND_FAILED, "send_failed",
	    "the SMS could not be sent" },
	[OUT_SEND_FAILED] = { 502, TX_NONE, TX_SEND_FAILED, "send_failed",
	    "the SMS could not be sent" },
	[OUT_MEDIA_TYPE] = { 415, TX_MEDIA_TYPE, TX_MEDIA_TYPE_TEXT,
	    "unsupported_media_type",
	    "send application/json or application/x-www-form-urlencoded" },
	[OUT_TOO_LARGE] = { 413, TX_TOO_LARGE, TX_TOO_LARGE_TEXT, "too_large",
	    "the body is larger than this server accepts" },
	[OUT_TIMEOUT] = { 408, TX_TIMEOUT, TX_TIMEOUT_TEXT, "bad_body",
	    "the body could not be read" },
	[OUT_BAD_BODY] = { 400, TX_BAD_REQUEST, TX_BAD_BODY_TEXT, "bad_body",
	    "the body could not be read" },
	/* Proxy mode's: pages only (the API is never proxied). */
	[OUT_SIGN_IN] = { 401, TX_SIGN_IN, TX_SIGN_IN_TEXT, "", "" },
	[OUT_UPGRADE] = { 501, TX_NOT_SUPPORTED, TX_WEBSOCKET_TEXT, "", "" },
	[OUT_UPSTREAM_DOWN] = { 502, TX_UPSTREAM_ERROR, TX_UPSTREAM_DOWN_TEXT,
	    "", "" },
	[OUT_UPSTREAM_SLOW] = { 504, TX_UPSTREAM_TIMEOUT,
	    TX_UPSTREAM_SLOW_TEXT, "", "" },
	[OUT_UPSTREAM_BAD] = { 502, TX_UPSTREAM_ERROR, TX_UPSTREAM_BAD_TEXT,
	    "", "" },
	[OUT_STORE] = { 503, TX_STORE_DOWN, TX_STORE_DOWN_TEXT,
	    "store_unavailable", "the shared store is unavailable" },
};

/* A refusal by limit l: a cap that holds for everyone at once, or the
 * client's own. */
static enum outcome
limit_outcome(enum limit l)
{
	if (l == LIMIT_STORE)
		return OUT_STORE;
	return limit_is_global(l) ? OUT_CAPPED : OUT_LIMITED;
}

/* Why verification_start() failed. */
static enum outcome
start_outcome(const struct start *st)
{
	if (st->internal)
		return OUT_INTERNAL;
	if (st->full)
		return OUT_FULL;
	if (st->limit != LIMIT_NONE)
		return limit_outcome(st->limit);
	return st->sent == SEND_BUSY ? OUT_SEND_BUSY : OUT_SEND_FAILED;
}

static int
reply_text(struct req *r, int status, const char *text)
{
	return reply(r, status, "text/plain; charset=utf-8", text, strlen(text));
}

/* When not even a page can be made: a session or a page failed. */
static int
reply_internal(struct req *r)
{
	return reply_text(r, 500, "Internal error\n");
}

/*
 * The request's language (r->lang, "pt_BR"), picked once: of LANG, the
 * built-in languages and WWW_DIR's, the one Accept-Language prefers
 * (lang_best()); LANG when it names none. r->cat: the built-in words for
 * it (lang_catalog()). O(languages x header).
 */
static void
req_lang(struct req *r)
{
	const struct otp *otp = r->otp;
	const char *langs[1 + OTP_MAX_CATALOGS + OTP_MAX_LANGS] = {
		r->cfg->lang };
	int n = 1, k;

	if (r->lang != NULL)
		return;
	for (int i = 0; i < otp->ncats; i++)
		langs[n++] = otp->cats[i].lang;
	for (int i = 0; i < otp->nwlangs; i++)
		langs[n++] = otp->wlangs[i];
	k = lang_best(mg_get_header(r->conn, "Accept-Language"), langs, n);
	r->lang = langs[k < 0 ? 0 : k];
	r->cat = lang_catalog(otp, r->cfg, r->lang);
}

/* Text id in the request's language. */
static const char *
req_text(struct req *r, enum text id)
{
	req_lang(r);
	return r->cat->text[id];
}

/* Text id in the request's language with {n} and {field} filled in, into
 * buf (size bytes, cut short if it must be). Returns buf. */
static const char *
req_textf(struct req *r, enum text id, long num, const char *field,
          char *buf, size_t size)
{
	const char *t = req_text(r, id);
	char digits[24];
	const struct var vars[] = { { "n", digits }, { "field", field } };
	size_t n = 0;

	snprintf(digits, sizeof(digits), "%ld", num);
	fill(t, strlen(t), 1, false, vars, countof(vars), esc_none, buf, size,
	    &n);
	return buf;
}

/*
 * The SMS template for the request: the operator's own words first, as
 * message_for() picks them (a MESSAGE_<lang>, or MESSAGE when it is
 * set), else the built-in text in the request's language.
 */
static const char *
message_pick(struct req *r)
{
	const char *m = message_for(r->cfg, mg_get_header(r->conn,
	    "Accept-Language"));

	if (m == NULL)
		m = r->cfg->message[0] != '\0' ? r->cfg->message :
		    req_text(r, TX_SMS);
	return m;
}

/*
 * Renders file (from WWW_DIR or built in, in the request's language:
 * www_pick()) and replies with it, with Content-Language. Every page may
 * also use the PAGE_COMMON placeholders: {{base}} (the mount prefix),
 * {{return_to}}, {{app}} (APP_NAME) and {{lang}}.
 */
static int
reply_page(struct req *r, int status, const char *file, const struct var *vars,
           size_t nvars)
{
	struct var all[PAGE_VARS + PAGE_COMMON];
	char page[OTP_MAX_PAGE];
	const struct www_file *f;
	const char *in;
	long n = -1;

	req_lang(r);
	f = www_pick(r->otp, r->cfg, file, r->lang, r->cat, &in);
	str_copy(r->content_lang, sizeof(r->content_lang), in);
	for (char *c = r->content_lang; *c != '\0'; c++)
		*c = *c == '_' ? '-' : *c;
	if (f != NULL && nvars + PAGE_COMMON <= countof(all)) {
		const struct var common[PAGE_COMMON] = {
			{ "base", r->otp->prefix }, { "return_to", r->return_to },
			{ "app", r->cfg->app_name }, { "lang", r->content_lang },
		};

		memcpy(all, vars, nvars * sizeof(*vars));
		memcpy(all + nvars, common, sizeof(common));
		n = page_render((const char *)f->data, f->len, all,
		    nvars + PAGE_COMMON, page, sizeof(page));
	}

	if (n < 0) {
		log_err(r->otp, "%s: cannot render %s", __func__, file);
		return reply_internal(r);
	}
	return reply(r, status, "text/html; charset=utf-8", page, (size_t)n);
}

static int
reply_error(struct req *r, int status, const char *title, const char *message)
{
	char num[8];
	const struct var vars[] = {
		{ "status", num }, { "title", title }, { "message", message },
	};

	snprintf(num, sizeof(num), "%d", status);
	return reply_page(r, status, "error.html", vars, countof(vars));
}

static int session_new(struct req *r);

/* The phone form, with an error message (may be "") and the number typed.
 * A form needs a session (for its CSRF token): one is made if missing. */
static int
reply_index(struct req *r, int status, const char *error, const char *phone)
{
	const struct var vars[] = {
		{ "error", error }, { "csrf", r->csrf }, { "phone", phone },
	};

	if (r->sid[0] == '\0' && session_new(r) != 0)
		return reply_internal(r);
	return reply_page(r, status, "index.html", vars, countof(vars));
}

/* Outcome o as a page: its error page, or the form again with its words
 * and the number typed. */
static int
reply_outcome(struct req *r, enum outcome o, const char *input)
{
	if (outcomes[o].title != TX_NONE)
		return reply_error(r, outcomes[o].status, req_text(r,
		    outcomes[o].title), req_text(r, outcomes[o].page));
	return reply_index(r, outcomes[o].status, req_text(r,
	    outcomes[o].page), input);
}

/*
 * The session's own page for its record v (store_view()), shown only to
 * the browser that typed the number, so the number is in clear: while
 * the code lives, the code page (sent: what went out, "we sent the code
 * again."; NULL: "a code is on its way."), with the time it has left;
 * once it is locked or expired, the page that offers a new code. Both
 * have the resend button, disabled while RESEND_INTERVAL runs, with the
 * seconds left, w (otp.js counts them down).
 */
static int
reply_code_wait(struct req *r, int status, const char *error,
                const char *sent, const struct view *v, long w)
{
	char len[8], expires[64], wait[48] = "";
	long secs = (long)((v->left_ms + 999) / 1000), mins;
	const struct var vars[] = {
		{ "error", error }, { "csrf", r->csrf },
		{ "phone", v->shown[0] != '\0' ? v->shown : v->phone },
		{ "disabled", w > 0 ? " disabled" : "" }, { "wait", wait },
		{ "sent", sent != NULL ? sent : req_text(r, TX_SENT_FIRST) },
		{ "expires", expires }, { "token_length", len },
		{ "inputmode", r->cfg->alphabet == ALPHABET_DIGITS ?
		    "numeric" : "text" },
	};

	if (w > 0) { /* after the button's words: " (in 27 s)" */
		wait[0] = ' ';
		req_textf(r, TX_WAIT, w, "", wait + 1, sizeof(wait) - 1);
	}
	/* under a minute in seconds, else in minutes, rounded */
	mins = secs < 60 ? secs : (secs + 30) / 60;
	req_textf(r, secs < 60 ? (mins == 1 ? TX_SECOND : TX_SECONDS) :
	    mins == 1 ? TX_MINUTE : TX_MINUTES, mins, "", expires,
	    sizeof(expires));
	snprintf(len, sizeof(len), "%ld", r->cfg->token_length);
	return reply_page(r, status, v->state == REC_LIVE ? "verify.html" :
	    "new_code.html", vars, countof(vars));
}

/* reply_code_wait() with the seconds RESEND_INTERVAL has left for v's
 * number, from the store. */
static int
reply_code(struct req *r, int status, const char *error, const char *sent,
           const struct view *v)
{
	return reply_code_wait(r, status, error, sent, v, STORE_CALL(r->otp,
	    wait, r->otp, r->cfg, v, r->otp->now_ms()));
}

/* ---- cookies and sessions ---------------------------------------------- */

/*
 * On a secure page (TLS here, or https at a trusted proxy) every cookie
 * is a "__Host-" cookie: Secure, Path=/ and no Domain, so that neither a
 * plain-HTTP page nor a sibling subdomain can set one for us. Elsewhere
 * cookies are scoped to the mount prefix. The one exception is otp_auth
 * under COOKIE_DOMAIN: a Domain cookie, so "__Secure-" (which allows
 * one), and Path=/ for the hosts it covers.
 */
#define HOST_PREFIX "__Host-"
#define SECURE_PREFIX "__Secure-"

/*
 * COOKIE_DOMAIN if this request's Host is that domain or a name under
 * it, else NULL: a browser drops a cookie whose Domain its host is not
 * in, so elsewhere (an address, another name) otp_auth stays host-only
 * and a login there covers that host alone.
 */
static const char *
auth_domain(const struct req *r)
{
	const char *d = r->cfg->cookie_domain;
	const char *host = mg_get_header(r->conn, "Host");
	size_t dn = strlen(d), hn;

	if (dn == 0 || host == NULL)
		return NULL;
	hn = strcspn(host, ":");
	return hn >= dn && strncasecmp(host + hn - dn, d, dn) == 0 &&
	    (hn == dn || host[hn - dn - 1] == '.') ? d : NULL;
}

/*
 * Queues a Set-Cookie, for domain (NULL: host-only); max_age < 0 means a
 * session cookie. Every cookie is SameSite=Strict but otp_auth: it only
 * gates GET navigation (forward-auth), and Lax lets a link from elsewhere
 * to the protected page carry it.
 */
static void
cookie_add(struct req *r, const char *name, const char *value, long max_age,
           const char *domain)
{
	char age[32] = "";

	if (r->ncookies >= 4)
		return;
	if (max_age >= 0)
		snprintf(age, sizeof(age), "; Max-Age=%ld", max_age);
	snprintf(r->cookies[r->ncookies++], sizeof(r->cookies[0]),
	    "%s%s=%s; Path=%s/; HttpOnly; SameSite=%s%s%s%s%s",
	    !r->secure ? "" : domain != NULL ? SECURE_PREFIX : HOST_PREFIX,
	    name, value, r->secure || domain != NULL ? "" : r->otp->prefix,
	    strcmp(name, "otp_auth") == 0 ? "Lax" : "Strict", age,
	    domain != NULL ? "; Domain=" : "", domain != NULL ? domain : "",
	    r->secure ? "; Secure" : "");
}

static void
set_cookie(struct req *r, const char *name, const char *value, long max_age)
{
	cookie_add(r, name, value, max_age, strcmp(name, "otp_auth") == 0 ?
	    auth_domain(r) : NULL);
}

/*
 * Finds cookie name in a Cookie header and copies its value (at most
 * outlen - 1 bytes, else -1). Returns the length, or -1 if absent.
 */
static int
cookie_get(const char *header, const char *name, char *out, size_t outlen)
{
	size_t nlen = strlen(name), len;
	const char *p = header, *item;

	while (p != NULL && list_next(&p, ';', &item, &len)) {
		if (len <= nlen || strncmp(item, name, nlen) != 0 ||
		    item[nlen] != '=')
			continue;
		len -= nlen + 1;
		return str_ncopy(out, outlen, item + nlen + 1, len) == 0 ?
		    (int)len : -1;
	}
	return -1;
}

/*
 * Our cookie name as spelling i may name it: 0 the "__Host-" one, 1 the
 * "__Secure-" one (otp_auth under COOKIE_DOMAIN only), 2 the plain one
 * (on a page that is not secure only). Length, or -1.
 */
static int
req_cookie_as(const struct req *r, int i, const char *name, char *out,
              size_t outlen)
{
	static const char *const prefixes[] = { HOST_PREFIX, SECURE_PREFIX, "" };
	char full[32];
	size_t pn = strlen(prefixes[i]), nn = strlen(name);

	if ((i == 1 && (r->cfg->cookie_domain[0] == '\0' ||
	    strcmp(name, "otp_auth") != 0)) || (i == 2 && r->secure) ||
	    pn + nn >= sizeof(full))
		return -1;
	/* Two copies, not snprintf: a request looks up two or three
	 * cookies, each by two spellings. */
	memcpy(full, prefixes[i], pn);
	memcpy(full + pn, name, nn + 1);
	return cookie_get(mg_get_header(r->conn, "Cookie"), full, out, outlen);
}

/* A cookie of ours, by the first spelling it is found by. Length, or -1. */
static int
req_cookie(const struct req *r, const char *name, char *out, size_t outlen)
{
	int n = -1;

	for (int i = 0; i < 3 && n < 0; i++)
		n = req_cookie_as(r, i, name, out, outlen);
	return n;
}

/* The CSRF token of a session: HMAC(csrf_key, "csrf:" sid), hex. */
static void
csrf_for(const struct otp *otp, const char *sid, char out[2 * OTP_MAC_LEN + 1])
{
	uint8_t mac[OTP_MAC_LEN];
	char buf[8 + 2 * OTP_SID_LEN + 1] = "csrf:";

	str_copy(buf + 5, sizeof(buf) - 5, sid);
	hmac_memo(&otp->csrf_hk, buf, strlen(buf), mac);
	hex_encode(mac, sizeof(mac), out, false);
}

/*
 * A session cookie is a random id and a MAC of it under sid_key, both in
 * hex: only this server (or one with the same STATE_DIR key) can make
 * one, so an id a client chose is replaced, never adopted (no fixation).
 */
#define SID_COOKIE_LEN (4 * OTP_SID_LEN)

static void
session_cookie(const struct otp *otp, const uint8_t id[OTP_SID_LEN],
               char out[SID_COOKIE_LEN + 1])
{
	uint8_t mac[OTP_MAC_LEN];

	hmac_memo(&otp->sid_hk, id, OTP_SID_LEN, mac);
	hex_encode(id, OTP_SID_LEN, out, false);
	hex_encode(mac, OTP_SID_LEN, out + 2 * OTP_SID_LEN, false);
}

/* Takes id as the request's session: its hex, owner and CSRF token. */
static void
session_use(struct req *r, const uint8_t id[OTP_SID_LEN])
{
	hex_encode(id, OTP_SID_LEN, r->sid, false);
	r->ow.ns = NS_WEB;
	memcpy(r->ow.sid, id, OTP_SID_LEN);
	csrf_for(r->otp, r->sid, r->csrf);
}

/* Makes a new session: id, cookie and CSRF token. */
static int
session_new(struct req *r)
{
	uint8_t id[OTP_SID_LEN];
	char cookie[SID_COOKIE_LEN + 1];

	if (r->otp->rng(r->otp->rng_ctx, id, sizeof(id)) != 0)
		return -1;
	session_use(r, id);
	session_cookie(r->otp, id, cookie);
	set_cookie(r, "otp_sid", cookie, -1);
	return 0;
}

/* Reads the session cookie; a missing, malformed or forged one gives "". */
static void
session_read(struct req *r)
{
	char v[SID_COOKIE_LEN + 2], want[SID_COOKIE_LEN + 1];
	uint8_t id[OTP_SID_LEN];

	r->sid[0] = '\0';
	if (req_cookie(r, "otp_sid", v, sizeof(v)) != SID_COOKIE_LEN ||
	    hex_decode(v, 2 * OTP_SID_LEN, id) != 0)
		return;
	session_cookie(r->otp, id, want);
	if (ct_equal(v, want, SID_COOKIE_LEN))
		session_use(r, id);
}

/* A verification's handle (otp_vid, API ids): slot and id in hex. */
#define HANDLE_LEN (8 + 2 * OTP_ID_LEN)

/* Decodes a handle: 8 hex digits of slot, then the id in hex. 0 or -1. */
static int
handle_decode(const char *v, size_t len, uint32_t *slot,
              uint8_t id[OTP_ID_LEN])
{
	uint8_t s[4];

	if (len != HANDLE_LEN || hex_decode(v, 8, s) != 0 ||
	    hex_decode(v + 8, 2 * OTP_ID_LEN, id) != 0)
		return -1;
	*slot = (uint32_t)s[0] << 24 | (uint32_t)s[1] << 16 |
	    (uint32_t)s[2] << 8 | s[3];
	return 0;
}

/* Decodes the request's otp_vid cookie. 0 or -1. */
static int
handle_parse(const struct req *r, uint32_t *slot, uint8_t id[OTP_ID_LEN])
{
	char v[HANDLE_LEN + 1];
	int n = req_cookie(r, "otp_vid", v, sizeof(v));

	return n < 0 ? -1 : handle_decode(v, (size_t)n, slot, id);
}

static void
handle_format(uint32_t slot, const uint8_t id[OTP_ID_LEN],
              char out[HANDLE_LEN + 1])
{
	snprintf(out, 9, "%08x", (unsigned)slot);
	hex_encode(id, OTP_ID_LEN, out + 8, false);
}

/* Gives the browser the handle of record (slot, id) as otp_vid. It
 * outlives the code by the tombstone's time: an expired code is then
 * told from a wrong one, and replaced without retyping (on_resend()). */
static void
handle_set(struct req *r, uint32_t slot, const uint8_t id[OTP_ID_LEN])
{
	char vid[HANDLE_LEN + 1];

	handle_format(slot, id, vid);
	set_cookie(r, "otp_vid", vid, r->cfg->code_ttl +
	    OTP_TOMBSTONE_MS / 1000);
}

/*
 * The forward-auth cookie, otp_auth:
 *
 *	<issued>.<ttl>.<number digits>.<rid>.<mac>
 *
 * issued is Unix time (wall clock, as the cookie outlives a restart), ttl
 * SESSION_TTL at the time, rid 64 random bits in hex that name the
 * session for POST /logout, mac the first 128 bits of an HMAC of the rest
 * under the auth key (kept in STATE_DIR). A session is valid until issued
 * plus the lower of ttl and today's SESSION_TTL: lowering it shortens the
 * sessions already issued, raising it never lengthens one past what its
 * cookie's Max-Age promised. The cookie of the previous version
 * ("<expiry>.<digits>.<mac>") has no id to revoke: it is refused, and
 * its holder verifies again.
 */
struct auth {
	char phone[OTP_MAX_PHONE_LEN + 1];
	long long issued;
	long ttl;
	uint64_t rid;
};

#define AUTH_COOKIE_MAX 96 /* 10+1+7+1+15+1+16+1+32 bytes, rounded up */

static int
auth_cookie_make(const struct otp *otp, const struct auth *a, char *out,
                 size_t outlen)
{
	uint8_t mac[OTP_MAC_LEN];
	int n = snprintf(out, outlen, "%lld.%ld.%s.%016llx", a->issued, a->ttl,
	    a->phone + 1, (unsigned long long)a->rid);

	if (n < 0 || (size_t)n + 34 > outlen)
		return -1;
	hmac_keyed(&otp->auth_hk, out, (size_t)n, mac);
	out[n] = '.';
	hex_encode(mac, 16, out + n + 1, false);
	return 0;
}

/*
 * Checks an otp_auth cookie's value v at now (Unix seconds) under c's
 * SESSION_TTL, and fills a. Revocations are revoked_has()'s. 0 or -1.
 */
static int
auth_cookie_check(const struct otp *otp, const struct config *c,
                  const char *v, long long now, struct auth *a)
{
	char want[AUTH_COOKIE_MAX], *end;
	unsigned long long f[4];
	const char *p = v;
	size_t n = strlen(v);

	/* The fields read leniently, the cookie made again from them and
	 * compared: only the bytes this server wrote pass, and the times
	 * are trusted after that. */
	for (int i = 0; i < 4; i++, p = end + 1) {
		f[i] = strtoull(p, &end, i == 3 ? 16 : 10);
		if (*end != '.')
			return -1;
	}
	a->issued = (long long)f[0];
	a->ttl = (long)f[1];
	a->rid = f[3];
	if (snprintf(a->phone, sizeof(a->phone), "+%llu", f[2]) >=
	    (int)sizeof(a->phone) ||
	    auth_cookie_make(otp, a, want, sizeof(want)) != 0 ||
	    /* Both lengths follow from the cookie itself: telling them
	     * apart tells nothing of the key. */
	    strlen(want) != n || !ct_equal(want, v, n))
		return -1;
	if (a->issued > now + OTP_AUTH_SKEW || now - a->issued >=
	    (a->ttl < c->session_ttl ? a->ttl : c->session_ttl))
		return -1;
	return 0;
}

/*
 * Whether the session of an otp_auth cookie (ending at until at the
 * latest) was revoked: by its id, or by a full table's floor.
 */
static bool
revoked_has(struct revoked *rv, uint64_t rid, int64_t until)
{
	bool found;

	pthread_mutex_lock(&rv->lock);
	found = until <= rv->floor;
	for (uint32_t i = 0; i < rv->n && !found; i++)
		found = rv->e[i].rid == rid;
	pthread_mutex_unlock(&rv->lock);
	return found;
}

/*
 * Revokes session rid, which ends at until anyway (Unix seconds), at now;
 * entries of sessions that have ended are dropped first. A full table
 * (OTP_MAX_REVOKED sessions revoked and not ended) drops the entry that
 * ends soonest and raises the floor to its end: every session that would
 * end by then ends now. So a revoked session never comes back, which
 * dropping it alone would allow (a stolen cookie would work again); the
 * price is that the sessions nearest their end end early. Refusing the
 * logout would leave the session valid, refusing logins would lock
 * everyone out. True if the table was full (the caller logs it).
 */
static bool
revoked_add(struct revoked *rv, uint64_t rid, int64_t until, int64_t now)
{
	uint32_t j = 0, soon = 0;
	bool full;

	pthread_mutex_lock(&rv->lock);
	for (uint32_t i = 0; i < rv->n; i++)
		if (rv->e[i].until > now && rv->e[i].until > rv->floor &&
		    rv->e[i].rid != rid)
			rv->e[j++] = rv->e[i];
	rv->e[j].rid = rid;
	rv->e[j].until = until;
	rv->n = j + 1;
	full = rv->n > OTP_MAX_REVOKED;
	if (full) {
		for (uint32_t i = 1; i < rv->n; i++)
			if (rv->e[i].until < rv->e[soon].until)
				soon = i;
		if (rv->e[soon].until > rv->floor)
			rv->floor = rv->e[soon].until;
		rv->e[soon] = rv->e[--rv->n];
	}
	rv->changes++;
	pthread_mutex_unlock(&rv->lock);
	return full;
}

/*
 * Revocations survive a restart and a crash: with STATE_DIR the table is
 * written to STATE_DIR/revoked.state by the sweeper as soon as a logout
 * wakes it (within OTP_SWEEP_MS at worst), and on shutdown, and read at
 * start, ended entries skipped. A write per logout is cheap: logouts are
 * rare, and each needs a verified session of its own, so flash wear is
 * bounded by the SMS caps. One writer keeps two writes from meeting in
 * revoked.state.tmp; a crash loses at most the logouts of that moment.
 * Times are Unix seconds, like the cookies'. One line each:
 *
 *	otp_demo-revoked 1
 *	F <floor>
 *	R <session id, hex> <until>
 *
 * Start-up fails on a malformed file, before anything is written: going
 * on without it would bring back the sessions it ended.
 */
#define REVOKED_MAGIC "otp_demo-revoked 1"
#define REVOKED_LINE_MAX 40

/* Writes dir/revoked.state if a session was revoked since the last
 * write. Allocates the text (the sweeper's, never a request's). 0, or
 * -1 with the reason logged. */
static int
revoked_save(struct otp *otp, const char *dir)
{
	struct revoked *rv = &otp->revoked;
	size_t cap = (OTP_MAX_REVOKED + 2) * REVOKED_LINE_MAX, len = 0;
	uint64_t changes = 0;
	char *text;
	bool same;
	int rc;

	pthread_mutex_lock(&rv->lock);
	same = rv->changes == rv->saved;
	pthread_mutex_unlock(&rv->lock);
	if (same || dir[0] == '\0' || otp->check_only)
		return 0;
	errno = 0;
	if ((text = malloc(cap)) != NULL) {
		pthread_mutex_lock(&rv->lock);
		buf_printf(text, cap, &len, REVOKED_MAGIC "\nF %lld\n",
		    (long long)rv->floor);
		for (uint32_t i = 0; i < rv->n; i++)
			buf_printf(text, cap, &len, "R %016llx %lld\n",
			    (unsigned long long)rv->e[i].rid,
			    (long long)rv->e[i].until);
		changes = rv->changes;
		pthread_mutex_unlock(&rv->lock);
	}
	if ((rc = state_write(otp, dir, "revoked.state", text, len, cap)) == 0) {
		pthread_mutex_lock(&rv->lock);
		rv->saved = changes;
		pthread_mutex_unlock(&rv->lock);
	}
	free(text);
	return rc;
}

/* Reads one "F" or "R" line of revoked.state: sessions that have ended
 * since are skipped. 0, or -1 if malformed. */
static int
revoked_load_line(struct otp *otp, const char *line, int64_t now,
                  int64_t wall)
{
	unsigned long long rid = 0, until;
	const char *p = line + 1;

	(void)now;
	if ((line[0] != 'F' && (line[0] != 'R' ||
	    state_field(&p, 16, UINT64_MAX, &rid) != 0)) ||
	    state_field(&p, 10, INT64_MAX, &until) != 0)
		return -1;
	if (line[0] == 'F')
		otp->revoked.floor = (int64_t)until;
	else if ((int64_t)until > wall / 1000)
		revoked_add(&otp->revoked, rid, (int64_t)until, wall / 1000);
	return 0;
}

/*
 * The otp_auth session the request carries: the first spelling of its
 * cookie (req_cookie_as()) that is valid, not expired under r->cfg and
 * not revoked. 0 with a filled, or -1. O(OTP_MAX_REVOKED) under a lock.
 */
static int
auth_session_of(const struct req *r, struct auth *a)
{
	char v[AUTH_COOKIE_MAX];
	int rc = -1, gone;

	for (int i = 0; i < 3; i++)
		if (req_cookie_as(r, i, "otp_auth", v, sizeof(v)) >= 0 &&
		    auth_cookie_check(r->otp, r->cfg, v,
		    r->otp->wall_ms() / 1000, a) == 0) {
			if ((gone = STORE_CALL(r->otp, revoked, r->otp, r->cfg,
			    a->rid, a->issued + a->ttl)) == 0)
				return 0;
			if (gone < 0)
				rc = -2;
		}
	return rc;
}

/*
 * Whether the request comes from a verified session: 0 with its number in
 * phone, -1, or -2 if a valid cookie's revocation could not be looked up
 * (the store did not answer: not a session, and the caller says 503).
 * The one check of the otp_auth cookie, for /auth and for proxy mode
 * alike: valid, unrevoked, unexpired, and of a number USERS_FILE still
 * lists (edited, then SIGHUP).
 */
static int
auth_session(const struct req *r, char phone[OTP_MAX_PHONE_LEN + 1])
{
	struct auth a;
	int rc;

	if ((rc = auth_session_of(r, &a)) != 0)
		return rc;
	if (!user_may_pass(r->cfg, a.phone))
		return -1;
	memcpy(phone, a.phone, sizeof(a.phone));
	return 0;
}

/*
 * Who a verified number is, as header lines for /auth's answer and for
 * requests passed upstream: Remote-User, Remote-Groups and Remote-Phone
 * (Authelia's names), and X-Otp-Phone (ours, from before them). The user
 * and groups are USERS_FILE's (its charset makes them header-safe);
 * without it, the user is the number and the groups are empty. Writes
 * them to out (OTP_MAX_IDENTITY bytes will do). 0, or -1 if USERS_FILE
 * does not list phone (it may not pass) or out is too small.
 */
static int
identity_headers(const struct config *c, const char *phone, char *out,
                 size_t outlen)
{
	const struct user *u = user_find(c, phone);
	int n;

	if (u == NULL && c->users_file[0] != '\0')
		return -1;
	n = snprintf(out, outlen, "Remote-User: %s\r\nRemote-Groups: %s\r\n"
	    "Remote-Phone: %s\r\nX-Otp-Phone: %s\r\n", u != NULL ? u->name :
	    phone, u != NULL ? u->groups : "", phone, phone);
	return n >= 0 && (size_t)n < outlen ? 0 : -1;
}

/* ---- client address ---------------------------------------------------- */

/* The value of the last header line called name, or NULL. */
static const char *
header_last(const struct req *r, const char *name)
{
	for (int i = r->ri->num_headers - 1; i >= 0; i--)
		if (strcasecmp(r->ri->http_headers[i].name, name) == 0)
			return r->ri->http_headers[i].value;
	return NULL;
}

/* Whether addr (len bytes) is one of the comma-separated list's, in any
 * spelling of it. */
static bool
addr_in_list(const char *addr, size_t len, const char *list)
{
	uint8_t want[17], one[17];
	char item[64];
	const char *p = list;

	if (!addr_parse(addr, len, want))
		return false;
	while (list_item(&p, item, sizeof(item)) > 0)
		if (addr_parse(item, strlen(item), one) && one[0] == want[0] &&
		    memcmp(one + 1, want + 1, want[0]) == 0)
			return true;
	return false;
}

/*
 * With the socket peer a TRUSTED_PROXY: the client is the rightmost
 * X-Forwarded-For entry, over all its header lines in order, that is not
 * itself a trusted proxy. Entries to its left are the client's own words
 * (a forged first line, which HAProxy keeps when it appends its own).
 * Copies it to out and returns true; false if there is none or it is
 * not an address (then the proxy is the client).
 */
static bool
forwarded_for(const struct req *r, char *out, size_t outlen)
{
	const char *proxies = r->cfg->trusted_proxy;
	uint8_t ip[17];

	for (int i = r->ri->num_headers - 1; i >= 0; i--) {
		const char *v = r->ri->http_headers[i].value, *end;

		if (strcasecmp(r->ri->http_headers[i].name, "X-Forwarded-For"))
			continue;
		for (end = v + strlen(v); end > v;) {
			const char *start = end;
			size_t len;

			while (start > v && start[-1] != ',')
				start--;
			len = (size_t)(end - start);
			end = start > v ? start - 1 : v;
			while (len > 0 && (*start == ' ' || *start == '\t'))
				start++, len--;
			while (len > 0 && (start[len - 1] == ' ' ||
			    start[len - 1] == '\t'))
				len--;
			if (len > 0 && addr_in_list(start, len, proxies))
				continue;
			return addr_parse(start, len, ip) &&
			    str_ncopy(out, outlen, start, len) == 0;
		}
	}
	return false;
}

/*
 * The client's address: the socket peer, or behind a TRUSTED_PROXY what
 * forwarded_for() finds; X-Forwarded-Proto (its last value) from a
 * trusted proxy tells the scheme the browser sees (its Origin, and Secure
 * cookies). Every check (limits, METRICS_ALLOW, logs) uses this address;
 * the handlers that count it make its limit keys (client_init()).
 */
static void
client_address(struct req *r)
{
	const char *proto, *peer = r->ri->remote_addr;

	str_copy(r->addr, sizeof(r->addr), peer);
	r->secure = r->tls;
	if (r->cfg->trusted_proxy[0] != '\0' &&
	    addr_in_list(peer, strlen(peer), r->cfg->trusted_proxy)) {
		if ((proto = header_last(r, "X-Forwarded-Proto")) != NULL) {
			const char *last = strrchr(proto, ','), *end;

			last = last != NULL ? last + 1 : proto;
			last += strspn(last, " ");
			end = PREFIX_CI(last, "https");
			r->secure = end != NULL && (*end == '\0' || *end == ' ');
		}
		forwarded_for(r, r->addr, sizeof(r->addr));
	}
}

/* ---- forms ------------------------------------------------------------- */

/* Whether a Content-Type header is want, parameters aside, in any case. */
static bool
media_type_is(const char *type, const char *want)
{
	size_t n = strlen(want);

	return type != NULL && strncasecmp(type, want, n) == 0 &&
	    (type[n] == '\0' || type[n] == ';' || type[n] == ' ');
}

/* The monotonic clock at tick resolution (a few ms), in ms: body_read()
 * reads it after every byte, and CLOCK_MONOTONIC_COARSE skips the
 * hardware counter; a deadline of seconds does not need better. */
static int64_t
body_clock_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC_COARSE);
}

/*
 * Reads a POST body of at most cap - 1 bytes into buf, NUL-terminated.
 * civetweb's request timeout bounds each read; our own deadline bounds the
 * whole body, so a client that trickles bytes is cut off.
 */
static enum outcome
body_read(struct req *r, char *buf, size_t cap, size_t *len)
{
	const char *te = mg_get_header(r->conn, "Transfer-Encoding");
	const char *cl = mg_get_header(r->conn, "Content-Length");
	int64_t deadline = body_clock_ms() + OTP_BODY_TIMEOUT_MS;
	long long want = r->ri->content_length;
	size_t n = 0;

	*len = 0;
	if (te != NULL && cl != NULL)
		return OUT_BAD_BODY; /* request smuggling shape: refuse */
	if (want >= (long long)cap)
		return OUT_TOO_LARGE;
	if (want < 0 && te == NULL)
		want = 0;
#ifdef MG_HAVE_READ_BUFFERED
	/* What civetweb already has (nearly always the whole body: civetweb
	 * patch 0007) in one copy that never waits; the rest below. */
	if (want > 0)
		n = (size_t)mg_read_buffered(r->conn, buf, (size_t)want);
#endif
	/* Chunked: read up to cap; one byte more than fits is 413. */
	while (want < 0 || n < (size_t)want) {
		size_t room = want < 0 ? cap - n : (size_t)want - n;
		int got;

		if (room == 0)
			return OUT_TOO_LARGE;
		/* mg_read() returns only when it has all it was asked for, so
		 * a byte at a time keeps the deadline checked between bytes.
		 * Bytes that came with the headers are copied from civetweb's
		 * buffer, not read from the socket, so this costs little. */
		got = mg_read(r->conn, buf + n, 1);
		if (got < 0)
			return OUT_BAD_BODY;
		if (got == 0) {
			if (want < 0)
				break;
			return OUT_BAD_BODY; /* closed early */
		}
		n += (size_t)got;
		if (body_clock_ms() > deadline && (want < 0 ||
		    n < (size_t)want))
			return OUT_TIMEOUT;
	}
	buf[n] = '\0';
	*len = n;
	return OUT_NONE;
}

enum form_err {
	FORM_MISSING = -1,
	FORM_BAD_ESCAPE = -2,
	FORM_TOO_LONG = -3,
	FORM_NUL = -4,
};

/* A hex digit's value plus one; 0: not a digit. A table, since the
 * digits of ids and MACs are random: branches on them mispredict half the
 * time. */
static const uint8_t hex_values[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
	['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10,
	['a'] = 11, ['b'] = 12, ['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
	['A'] = 11, ['B'] = 12, ['C'] = 13, ['D'] = 14, ['E'] = 15, ['F'] = 16,
};

/* A hex digit's value, or -1. */
static int
hexval(char c)
{
	return hex_values[(unsigned char)c] - 1;
}

/*
 * Percent-decodes in (len bytes, '+' is a space) into out. Returns the
 * length, or a negative enum form_err: a bad escape, a NUL byte, or a
 * value that does not fit in outlen - 1.
 */
static int
form_decode(const char *in, size_t len, char *out, size_t outlen)
{
	size_t n = 0;

	for (size_t i = 0; i < len; i++) {
		int ch = (unsigned char)in[i];

		if (ch == '+') {
			ch = ' ';
		} else if (ch == '%') {
			int hi, lo;

			if (i + 2 >= len)
				return FORM_BAD_ESCAPE;
			hi = hexval(in[i + 1]);
			lo = hexval(in[i + 2]);
			if (hi < 0 || lo < 0)
				return FORM_BAD_ESCAPE;
			ch = hi * 16 + lo;
			i += 2;
		}
		if (ch == 0)
			return FORM_NUL;
		if (n + 1 >= outlen)
			return FORM_TOO_LONG;
		out[n++] = (char)ch;
	}
	out[n] = '\0';
	return (int)n;
}

/*
 * Finds field name in a urlencoded body and decodes its value into out.
 * Returns the length, or a negative enum form_err. The whole body is
 * checked too: one bad escape or NUL anywhere refuses the form.
 */
static int
form_get(const char *body, size_t len, const char *name, char *out,
         size_t outlen)
{
	char scratch[OTP_MAX_BODY];
	size_t nlen = strlen(name);
	int found = FORM_MISSING;

	if (memchr(body, '\0', len) != NULL)
		return FORM_NUL;
	for (size_t i = 0; i < len;) {
		const char *pair = body + i;
		const char *amp = memchr(pair, '&', len - i);
		size_t plen = amp != NULL ? (size_t)(amp - pair) : len - i;
		const char *eq = memchr(pair, '=', plen);
		size_t klen = eq != NULL ? (size_t)(eq - pair) : plen;
		int rc = form_decode(pair, klen, scratch, sizeof(scratch));

		if (rc < 0)
			return rc;
		if (eq != NULL) {
			const char *v = eq + 1;
			size_t vlen = plen - klen - 1;
			bool match = (size_t)rc == nlen &&
			    memcmp(scratch, name, nlen) == 0 &&
			    found == FORM_MISSING;

			rc = match ? form_decode(v, vlen, out, outlen) :
			    form_decode(v, vlen, scratch, sizeof(scratch));
			if (rc < 0)
				return rc;
			if (match)
				found = rc;
		}
		i += plen + 1;
	}
	return found;
}

/* Answers a form error with a 400 naming the field. */
static int
reply_form_error(struct req *r, int err, const char *field)
{
	char msg[128];

	req_textf(r, err == FORM_MISSING ? TX_FORM_MISSING : err ==
	    FORM_TOO_LONG ? TX_FORM_TOO_LONG : err == FORM_NUL ? TX_FORM_NUL :
	    TX_FORM_ESCAPE, 0, field, msg, sizeof(msg));
	return reply_error(r, 400, req_text(r, TX_BAD_REQUEST), msg);
}

/*
 * Cross-site checks for a POST: the Origin (when sent) must be our own and
 * Sec-Fetch-Site must not be cross-site. Returns true if it may proceed.
 */
static bool
same_origin(struct req *r)
{
	const char *origin = mg_get_header(r->conn, "Origin");
	const char *site = mg_get_header(r->conn, "Sec-Fetch-Site");
	const char *host = mg_get_header(r->conn, "Host");
	const char *scheme = r->secure ? "https://" : "http://";
	size_t slen = strlen(scheme);

	if (site != NULL && strcasecmp(site, "cross-site") == 0)
		return false;
	if (origin == NULL)
		return true; /* old browsers, curl: the CSRF token decides */
	/* Under Referrer-Policy: no-referrer, browsers send "Origin: null"
	 * on same-origin POSTs; they also say so in Sec-Fetch-Site. */
	if (strcmp(origin, "null") == 0)
		return site != NULL && strcasecmp(site, "same-origin") == 0;
	return host != NULL && strncasecmp(origin, scheme, slen) == 0 &&
	    strcasecmp(origin + slen, host) == 0;
}

/*
 * A return_to is kept only if it is a path on this site: it starts with
 * one "/" (not "//" or "/\\", which browsers take as another host) and has
 * no control characters. Anything else is dropped: no open redirect.
 */
static bool
return_to_ok(const char *p)
{
	if (p[0] != '/' || p[1] == '/' || p[1] == '\\')
		return false;
	for (; *p != '\0'; p++)
		if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e ||
		    *p == '\\')
			return false;
	return true;
}

/* Reads return_to from a query string or form body into r, if valid. */
static void
return_to_read(struct req *r, const char *body, size_t len)
{
	if (body == NULL || form_get(body, len, "return_to", r->return_to,
	    sizeof(r->return_to)) < 0 || !return_to_ok(r->return_to))
		r->return_to[0] = '\0';
}

/*
 * Reads and checks a form POST: content type, body, origin and the CSRF
 * token. Returns 0 with the body in buf, or the status already answered.
 */
static int
form_read(struct req *r, char *buf, size_t cap, size_t *len)
{
	const char *type = mg_get_header(r->conn, "Content-Type");
	char token[2 * OTP_MAC_LEN + 2];
	const char *why = NULL;
	enum outcome o;
	int rc;

	if ((o = media_type_is(type, "application/x-www-form-urlencoded") ?
	    body_read(r, buf, cap, len) : OUT_MEDIA_TYPE) != OUT_NONE) {
		r->close = true;
		return reply_outcome(r, o, "");
	}
	/* A malformed body is a 400 whatever else is wrong with it. */
	rc = form_get(buf, *len, "csrf", token, sizeof(token));
	if (rc == FORM_BAD_ESCAPE || rc == FORM_NUL)
		return reply_form_error(r, rc, "csrf");
	if (!same_origin(r))
		why = "origin";
	else if (r->sid[0] == '\0')
		why = "no_session";
	else if (rc != 2 * OTP_MAC_LEN || !ct_equal(token, r->csrf,
	    2 * OTP_MAC_LEN))
		why = "token";
	if (why != NULL) {
		log_info(r->otp, "csrf_refused reason=%s ip=%s", why, r->addr);
		if (r->sid[0] == '\0' && session_new(r) != 0)
			return reply_outcome(r, OUT_INTERNAL, "");
		return reply_index(r, 403, req_text(r, TX_SESSION_EXPIRED),
		    "");
	}
	return_to_read(r, buf, *len);
	return 0;
}

/* ---- the web flow ------------------------------------------------------ */

/*
 * After a right code: a fresh session, the forward-auth cookie, the
 * embedder's callback, then the success page or a 303 to return_to.
 */
static int
reply_verified(struct req *r, char phone[OTP_MAX_PHONE_LEN + 1])
{
	struct otp *otp = r->otp;
	char masked[32], auth[AUTH_COOKIE_MAX];
	const struct var vars[] = { { "phone", masked }, { "csrf", r->csrf } };
	struct auth a;
	int rc;

	phone_mask(phone, masked, sizeof(masked));
	set_cookie(r, "otp_vid", "", 0);
	str_copy(a.phone, sizeof(a.phone), phone);
	a.issued = otp->wall_ms() / 1000;
	a.ttl = r->cfg->session_ttl;
	rc = session_new(r) != 0 || otp->rng(otp->rng_ctx,
	    (unsigned char *)&a.rid, sizeof(a.rid)) != 0 ||
	    auth_cookie_make(otp, &a, auth, sizeof(auth)) != 0;
	wipe(&a, sizeof(a));
	if (rc != 0) {
		wipe(phone, OTP_MAX_PHONE_LEN + 1);
		return reply_outcome(r, OUT_INTERNAL, "");
	}
	set_cookie(r, "otp_auth", auth, r->cfg->session_ttl);
	if (otp->on_verified != NULL)
		otp->on_verified(otp->on_verified_arg, phone, r->sid);
	wipe(phone, OTP_MAX_PHONE_LEN + 1);
	if (r->return_to[0] != '\0') {
		r->location = r->return_to;
		rc = reply_text(r, 303, "");
	} else {
		rc = reply_page(r, 200, "verify_success.html", vars, countof(vars));
	}
	return rc;
}

/*
 * Answers a refused start with a reason: on the phone form with the
 * number typed (input), or, for a resend (v: the session's record), on
 * the session's own page (reply_code()).
 */
static int
reply_start_failed(struct req *r, const struct start *st, const char *input,
                   const struct view *v)
{
	enum outcome o = start_outcome(st);
	long retry = st->retry;
	char msg[320], again[160];

	r->retry_after = retry;
	if (o != OUT_LIMITED && o != OUT_CAPPED) {
		if (v == NULL || outcomes[o].title != TX_NONE)
			return reply_outcome(r, o, input);
		str_copy(msg, sizeof(msg), req_text(r, outcomes[o].page));
	} else {
		snprintf(msg, sizeof(msg), "%s %s", req_text(r,
		    outcomes[o].page), retry < 120 ? req_textf(r,
		    TX_RETRY_SECONDS, retry, "", again, sizeof(again)) :
		    req_textf(r, TX_RETRY_MINUTES, (retry + 59) / 60, "", again,
		    sizeof(again)));
	}
	if (v != NULL)
		return reply_code(r, outcomes[o].status, msg, NULL, v);
	return reply_index(r, outcomes[o].status, msg, input);
}

/*
 * After a start that went out (or, for a number USERS_FILE leaves out,
 * seemed to): the record has the number as its person typed it (shown),
 * the browser gets its handle, and the code page says what was sent: the
 * same code again, or fresh ("a code is on its way.", or "we sent a new
 * code." for a resend that replaced an ended code).
 */
static int
reply_started(struct req *r, const struct start *st, const char *phone,
              const char *shown, const char *fresh)
{
	struct view v;
	int rc;

	/* A new record is what the send just made (shown too): its view
	 * needs no look at the store (a lock, or a round trip to Redis,
	 * less per /request). A resent one is read, and takes shown. */
	memset(&v, 0, sizeof(v));
	if (st->resent) {
		STORE_CALL(r->otp, view, r->otp, r->cfg, st->slot, st->id,
		    &r->ow, r->otp->now_ms(), shown, &v);
	} else {
		v.state = REC_LIVE;
		v.slot = st->slot;
		memcpy(v.id, st->id, OTP_ID_LEN);
		v.left_ms = r->cfg->code_ttl * 1000;
		str_copy(v.phone, sizeof(v.phone), phone);
		str_copy(v.shown, sizeof(v.shown), shown);
	}
	handle_set(r, st->slot, st->id);
	/* The send just counted set the number's RESEND_INTERVAL going: its
	 * wait is known without asking the store (a lock, or a round trip
	 * to Redis, less per /request). */
	rc = reply_code_wait(r, 200, "", st->resent ? req_text(r,
	    TX_SENT_AGAIN) : fresh, &v, r->cfg->resend_interval);
	wipe(&v, sizeof(v));
	return rc;
}

/*
 * The request's own record: the one its otp_vid names, if it belongs to
 * its session (otp_sid) and still has its number (live, locked, or an
 * expired tombstone: store_end()). 0 with v filled (the caller wipes it),
 * -1: no handle, a forged or stale one, another session's; -2: the store
 * did not answer.
 */
static int
web_view(struct req *r, struct view *v)
{
	uint8_t id[OTP_ID_LEN];
	uint32_t slot;

	memset(v, 0, sizeof(*v));
	if (handle_parse(r, &slot, id) == 0 && STORE_CALL(r->otp, view, r->otp,
	    r->cfg, slot, id, &r->ow, r->otp->now_ms(), NULL, v) != 0)
		return -2;
	return view_open(v) ? 0 : -1;
}

/* No record of its own to show or resend (web_view() said why): the
 * phone form, the handle cleared; alike whichever way the handle failed.
 * A store that did not answer is a 503, and the handle is kept. */
static int
reply_gone(struct req *r, int why)
{
	if (why == -2)
		return reply_outcome(r, OUT_STORE, "");
	set_cookie(r, "otp_vid", "", 0);
	return reply_index(r, 403, req_text(r, TX_GONE), "");
}

/* Logs a number phone_read() refused (masked), and why. */
static void
log_refused(struct req *r, enum phone_err why, const char *phone)
{
	char masked[32];

	phone_mask(phone, masked, sizeof(masked));
	log_info(r->otp, "refused to=%s reason=%s ip=%s", masked,
	    phone_refusals[why].reason, r->addr);
}

/* POST /request: phone number in, SMS out, verify page back. */
static int
on_request(struct req *r)
{
	struct otp *otp = r->otp;
	char body[OTP_MAX_BODY + 1], input[OTP_MAX_INPUT + 1];
	char phone[OTP_MAX_PHONE_LEN + 1] = "", shown[OTP_MAX_SHOWN];
	struct client cl;
	struct start st;
	size_t len;
	int rc, n;

	if ((rc = form_read(r, body, sizeof(body), &len)) != 0)
		return rc;
	if ((n = form_get(body, len, "phone", input, sizeof(input))) < 0 &&
	    n != FORM_TOO_LONG)
		return reply_form_error(r, n, "phone");
	if ((rc = n < 0 ? PHONE_INVALID : phone_read(r->cfg, input,
	    (size_t)n, phone, sizeof(phone))) != PHONE_OK) {
		log_refused(r, rc, phone);
		return reply_index(r, 400, req_text(r, phone_refusals[rc].page),
		    n < 0 ? "" : input);
	}
	client_init(otp, r->cfg, &cl, r->addr);
	phone_show(phone, input, (size_t)n, shown, sizeof(shown));
	if (verification_start(otp, r->cfg, phone, shown, &cl, &r->ow,
	    message_pick(r), &st) != 0)
		rc = reply_start_failed(r, &st, input, NULL);
	else
		rc = reply_started(r, &st, phone, shown, NULL);
	wipe(shown, sizeof(shown));
	return rc;
}

/*
 * After a code that did not verify, what happened, on the session's own
 * page: a wrong code and the tries left, or, locked (MAX_ATTEMPTS) or
 * expired, a new code offered. The record's state (v, as the check left
 * it) says which, not the check's answer: a record has one state for
 * every page.
 */
static int
reply_checked(struct req *r, const struct view *v)
{
	char msg[160];
	enum text why;
	long left;

	if (!view_open(v))
		return reply_gone(r, -1);
	left = r->cfg->max_attempts - (long)v->attempts;
	req_textf(r, left > 1 ? TX_WRONG_N : TX_WRONG_1, left, "", msg,
	    sizeof(msg));
	why = v->state == REC_LOCKED ? TX_LOCKED : v->state == REC_EXPIRED ?
	    TX_EXPIRED : TX_NONE;
	return reply_code(r, 403, why != TX_NONE ? req_text(r, why) : msg,
	    NULL, v);
}

/* POST /verify: the code back, success or failure page. */
static int
on_verify(struct req *r)
{
	struct otp *otp = r->otp;
	char body[OTP_MAX_BODY + 1], token[OTP_MAX_INPUT + 1];
	uint8_t id[OTP_ID_LEN];
	struct client cl;
	struct view v;
	enum check result = CHECK_UNKNOWN;
	enum limit limit = LIMIT_NONE;
	uint32_t slot = 0;
	long retry = 0;
	size_t len;
	int rc, n;

	if ((rc = form_read(r, body, sizeof(body), &len)) != 0)
		return rc;
	n = form_get(body, len, "token", token, sizeof(token));
	if (n < 0 && n != FORM_TOO_LONG)
		return reply_form_error(r, n, "token");
	if (handle_parse(r, &slot, id) != 0)
		slot = UINT32_MAX; /* no such record: fails like a wrong code */
	client_init(otp, r->cfg, &cl, r->addr);
	result = verification_check(otp, r->cfg, slot, id, &r->ow, token,
	    n < 0 ? sizeof(token) : (size_t)n, &cl, &v, &limit, &retry, NULL);
	wipe(token, sizeof(token));
	if (limit == LIMIT_STORE) {
		rc = reply_outcome(r, OUT_STORE, "");
	} else if (limit != LIMIT_NONE) {
		r->retry_after = retry;
		rc = reply_index(r, outcomes[limit_outcome(limit)].status,
		    req_text(r, TX_NET_LIMITED), "");
	} else if (result == CHECK_OK) {
		rc = reply_verified(r, v.phone);
	} else {
		rc = reply_checked(r, &v);
	}
	wipe(&v, sizeof(v));
	return rc;
}

/*
 * POST /resend (csrf): the code page's "Send the code again" and the
 * "Send a new code" of a locked or expired one. The number is the one of
 * the session's own record (web_view()), never a form field, and it goes
 * as /request's does, through every limit (verification_send()): the
 * same code while it lives, else a new one. Without a record of its own,
 * the phone form: nothing is sent, nothing told.
 */
static int
on_resend(struct req *r)
{
	struct otp *otp = r->otp;
	char body[OTP_MAX_BODY + 1];
	struct client cl;
	struct start st;
	struct view v;
	size_t len;
	int rc;

	if ((rc = form_read(r, body, sizeof(body), &len)) != 0)
		return rc;
	if ((rc = web_view(r, &v)) != 0) {
		log_info(otp, "resend_refused ip=%s", r->addr);
		return reply_gone(r, rc);
	}
	client_init(otp, r->cfg, &cl, r->addr);
	if (verification_send(otp, r->cfg, v.phone, v.shown, &cl, &r->ow,
	    (int32_t)v.slot, v.id, message_pick(r), &st) != 0)
		rc = reply_start_failed(r, &st, "", &v);
	else
		rc = reply_started(r, &st, v.phone, v.shown,
		    req_text(r, TX_SENT_NEW));
	wipe(&v, sizeof(v));
	return rc;
}

/*
 * GET /resend: the session's own page again, its countdown rendered
 * anew; the pages link to it for browsers without JavaScript, whose
 * disabled button nothing else would enable. Sends nothing.
 */
static int
on_code_page(struct req *r)
{
	const char *q = r->ri->query_string;
	struct view v;
	int rc;

	return_to_read(r, q, q != NULL ? strlen(q) : 0);
	if ((rc = web_view(r, &v)) != 0)
		return reply_gone(r, rc);
	rc = reply_code(r, 200, "", NULL, &v);
	wipe(&v, sizeof(v));
	return rc;
}

/* GET /: the phone form; ?return_to=/path is carried through the flow. */
static int
on_index(struct req *r)
{
	const char *q = r->ri->query_string;

	return_to_read(r, q, q != NULL ? strlen(q) : 0);
	return reply_index(r, 200, "", "");
}

static int
on_style(struct req *r)
{
	const struct www_file *f;
	const char *in;

	req_lang(r);
	f = www_pick(r->otp, r->cfg, "style.css", r->lang, r->cat, &in);
	return reply(r, 200, "text/css; charset=utf-8", (const char *)f->data,
	    f->len);
}

/* The WebOTP script: from a file, since the CSP allows no inline script. */
static int
on_script(struct req *r)
{
	const struct www_file *f = NULL;

	for (int i = 0; i < r->otp->npages && f == NULL; i++)
		if (r->otp->pages[i].lang[0] == '\0' &&
		    strcmp(r->otp->pages[i].file.name, "otp.js") == 0)
			f = &r->otp->pages[i].file;
	if (f == NULL)
		f = www_find(r->otp->builtin, r->otp->nbuiltin, "otp.js");

	return reply(r, 200, "text/javascript; charset=utf-8",
	    (const char *)f->data, f->len);
}

/* Browsers ask for it on their own; an empty answer keeps logs quiet. */
static int
on_favicon(struct req *r)
{
	return reply(r, 204, "image/x-icon", "", 0);
}

/*
 * GET /auth, for nginx auth_request, Caddy forward_auth or Traefik
 * ForwardAuth: 204 with the identity headers when the request carries an
 * otp_auth cookie from a verification within SESSION_TTL, of a number
 * USERS_FILE lists (if set), else 401 (or, with ?redirect=1, a 302 to the
 * form that returns to X-Forwarded-Uri).
 */
static int
on_auth(struct req *r)
{
	char phone[OTP_MAX_PHONE_LEN + 1], head[OTP_MAX_IDENTITY];
	const char *q = r->ri->query_string, *uri;
	char where[OTP_MAX_RETURN + 80];
	size_t n;
	int rc;

	if ((rc = auth_session(r, phone)) == -2)
		return reply_text(r, 503, "store unavailable\n");
	if (rc != 0 ||
	    identity_headers(r->cfg, phone, head, sizeof(head)) != 0) {
		if (q == NULL || strcmp(q, "redirect=1") != 0)
			return reply_text(r, 401, "");
		/* Traefik and Caddy pass our answer to the browser: send it
		 * to the form, and back to where it was going afterwards. */
		n = 0;
		uri = mg_get_header(r->conn, "X-Forwarded-Uri");
		if (esc_none(r->otp->prefix, where, sizeof(where), &n) != 0 ||
		    esc_none("/", where, sizeof(where), &n) != 0)
			return reply_outcome(r, OUT_INTERNAL, "");
		if (uri != NULL && strlen(uri) <= OTP_MAX_RETURN &&
		    return_to_ok(uri) && (esc_none("?return_to=", where,
		    sizeof(where), &n) != 0 || pct_escape_keep(uri, "/", where,
		    sizeof(where), &n) != 0))
			where[strcspn(where, "?")] = '\0';
		r->location = where;
		return reply_text(r, 302, "");
	}
	r->head = head;
	return reply_text(r, 204, "");
}

static void sweeper_wake(struct otp *otp);

/* "You are logged out.": error.html, a page of words. */
static int
reply_logged_out(struct req *r)
{
	const struct var vars[] = {
		{ "status", "" }, { "title", req_text(r, TX_LOGGED_OUT) },
		{ "message", req_text(r, TX_LOGGED_OUT_TEXT) },
	};

	return reply_page(r, 200, "error.html", vars, countof(vars));
}

/*
 * POST /logout (the success page's button): ends the forward-auth
 * session the browser holds, here too, so a copy of its cookie stops
 * working (revoked_add()); clears its cookies (both scopes under
 * COOKIE_DOMAIN), starts a new web session, and says so.
 */
static int
on_logout(struct req *r)
{
	char body[OTP_MAX_BODY + 1], masked[32] = "";
	struct auth a;
	size_t len;
	int rc;

	if ((rc = form_read(r, body, sizeof(body), &len)) != 0)
		return rc;
	/* Each cookie it holds (host-only, COOKIE_DOMAIN's), until none
	 * is valid: a revoked one is not. A store that cannot say ends
	 * nothing: 503, the cookies kept. */
	while ((rc = auth_session_of(r, &a)) == 0) {
		phone_mask(a.phone, masked, sizeof(masked));
		if ((rc = STORE_CALL(r->otp, revoke, r->otp, r->cfg, a.rid,
		    a.issued + a.ttl, r->otp->wall_ms() / 1000)) < 0)
			return reply_outcome(r, OUT_STORE, "");
		if (rc > 0)
			log_warn(r->otp, "revocations: table full, sessions "
			    "near their end ended early");
		sweeper_wake(r->otp);
	}
	if (rc == -2)
		return reply_outcome(r, OUT_STORE, "");
	log_info(r->otp, "logout%s%s ip=%s", masked[0] ? " to=" : "", masked,
	    r->addr);
	set_cookie(r, "otp_auth", "", 0);
	if (auth_domain(r) != NULL)
		cookie_add(r, "otp_auth", "", 0, NULL);
	if (session_new(r) != 0)
		return reply_outcome(r, OUT_INTERNAL, "");
	return reply_logged_out(r);
}

/*
 * GET /logout, for a link from a protected app: the success page, with
 * its logout button, while the browser has a session; a GET ends
 * nothing (a link or an <img> from another site must not).
 */
static int
on_logout_page(struct req *r)
{
	char phone[OTP_MAX_PHONE_LEN + 1], masked[32];
	const struct var vars[] = { { "phone", masked }, { "csrf", r->csrf } };

	if (auth_session(r, phone) != 0)
		return reply_logged_out(r);
	phone_mask(phone, masked, sizeof(masked));
	wipe(phone, sizeof(phone));
	if (r->sid[0] == '\0' && session_new(r) != 0)
		return reply_internal(r);
	return reply_page(r, 200, "verify_success.html", vars, countof(vars));
}

/* Ready when the sender can send: Telnyx and HTTP gateways need their CA
 * bundle readable; the others are always ready. The answer names the
 * sender ("ready: console sender"), so a probe can tell a console. */
static int
on_readyz(struct req *r)
{
	const struct config *c = r->cfg;
	bool ok = !c->sender->needs_ca || access(c->sms_ca_file, R_OK) == 0;
	bool mem = store_is_memory(r->otp);
	bool store = mem || STORE_CALL(r->otp, ping, r->otp, c) == 0;
	const char *name = mem ? "" : store_name(r->otp);
	char text[96];

	/* The memory store always answers, and is not named: the line
	 * stays what it was before there was a choice. */
	snprintf(text, sizeof(text), "%sready: %s sender%s%s%s%s\n",
	    ok && store ? "" : "not ", c->sender->name, ok ? "" :
	    ": CA bundle unreadable", mem ? "" : ", ", name, mem ? "" :
	    store ? " store" : " store unavailable");
	return reply_text(r, ok && store ? 200 : 503, text);
}

/* Alive: the process answers (whether it can send: on_readyz()). */
static int
on_healthz(struct req *r)
{
	return reply_text(r, 200, "ok\n");
}

/*
 * /metrics is Prometheus's text format (version 0.0.4). Every family has
 * a HELP and a TYPE line, which `promtool check metrics` wants; each
 * helper appends to out (cap bytes, *n used) as buf_printf() does, and a
 * reply that did not fit is an error, never a cut list.
 */

/* The HELP and TYPE lines of the family name ("name" or "name{label"). */
static void
metrics_head(char *out, size_t cap, size_t *n, const char *name,
             const char *type, const char *help)
{
	int len = (int)strcspn(name, "{");

	buf_printf(out, cap, n, "# HELP %.*s %s\n# TYPE %.*s %s\n", len, name,
	    help, len, name, type);
}

/* A family of one series without labels. */
static void
metrics_one(char *out, size_t cap, size_t *n, const char *name,
            const char *type, const char *help, unsigned long value)
{
	metrics_head(out, cap, n, name, type, help);
	buf_printf(out, cap, n, "%s %lu\n", name, value);
}

/* Appends before, then ="value" with value escaped as a label value. */
static void
metrics_label(char *out, size_t cap, size_t *n, const char *before,
              const char *value)
{
	buf_printf(out, cap, n, "%s=\"", before);
	if (label_escape(value, out, cap, n) != 0)
		*n = cap;
	buf_printf(out, cap, n, "\"");
}

/* A labelled counter family ("name{label"): one series per label value,
 * values[first] to values[end - 1]. */
static void
metrics_family(char *out, size_t cap, size_t *n, const char *name_label,
               const char *help, const char *const *values,
               const atomic_ulong *counts, int first, int end)
{
	metrics_head(out, cap, n, name_label, "counter", help);
	for (int i = first; i < end; i++) {
		metrics_label(out, cap, n, name_label, values[i]);
		buf_printf(out, cap, n, "} %lu\n", atomic_load(&counts[i]));
	}
}

static const char *const hook_results[HOOKS__N] = {
	[HOOKS_DELIVERED] = "delivered", [HOOKS_FAILED] = "failed",
	[HOOKS_DROPPED] = "dropped",
};

/* GET /metrics: Prometheus text, when METRICS and METRICS_ALLOW allow. */
static int
on_metrics(struct req *r)
{
	static const char *const results[CHECK__N] = {
		[CHECK_OK] = "approved", [CHECK_WRONG] = "wrong",
		[CHECK_LOCKED] = "locked", [CHECK_UNKNOWN] = "unknown",
		[CHECK_EXPIRED] = "expired", [CHECK_DONE] = "used",
	};
	struct otp *otp = r->otp;
	struct stats *st = &otp->stats;
	uint32_t live, used;
	char out[4096];
	size_t n = 0;

	/* The client, not the socket peer: behind a proxy the peer is the
	 * proxy, which would let the whole world in. */
	if (!r->cfg->metrics || !addr_in_list(r->addr, strlen(r->addr),
	    r->cfg->metrics_allow))
		return reply_error(r, 404, req_text(r, TX_NOT_FOUND),
		    req_text(r, TX_NOT_FOUND_TEXT));
	metrics_one(out, sizeof(out), &n, "otp_sms_sent_total", "counter",
	    "SMS sent", atomic_load(&st->sent));
	metrics_family(out, sizeof(out), &n, "otp_sms_failed_total{reason",
	    "SMS not sent, by reason", send_names, st->failed, 1, SEND__N);
	metrics_family(out, sizeof(out), &n, "otp_verifications_total{result",
	    "Code checks, by result", results, st->checks, 0, CHECK__N);
	metrics_family(out, sizeof(out), &n, "otp_rate_limited_total{limit",
	    "Requests refused by a limit", limit_names, st->limited, 1,
	    store_is_memory(otp) ? LIMIT_STORE : LIMIT__N);
	metrics_family(out, sizeof(out), &n, "otp_webhooks_total{result",
	    "Webhook events delivered, failed after every try, or dropped",
	    hook_results, st->hooks, 0, HOOKS__N);
	store_counts(&otp->store, &live, &used);
#ifdef WITH_REDIS
	if (!store_is_memory(otp))
		live = used = redis_pending(otp, r->cfg);
#endif
	metrics_one(out, sizeof(out), &n, "otp_pending_codes", "gauge",
	    "Codes live or locked", live);
	metrics_one(out, sizeof(out), &n, "otp_table_used", "gauge",
	    "Code table slots in use", used);
	metrics_one(out, sizeof(out), &n, "otp_table_capacity", "gauge",
	    "Code table slots (MAX_PENDING)",
	    (unsigned long)r->cfg->max_pending);
	/* The sender of this request's config: SIGHUP may change it. */
	metrics_head(out, sizeof(out), &n, "otp_demo_build_info", "gauge",
	    "Version and SMS sender");
	metrics_label(out, sizeof(out), &n, "otp_demo_build_info{version",
	    OTP_VERSION);
	metrics_label(out, sizeof(out), &n, ",sender", r->cfg->sender->name);
	buf_printf(out, sizeof(out), &n, "} 1\n");
	if (n >= sizeof(out))
		return reply_outcome(r, OUT_INTERNAL, "");
	return reply(r, 200, "text/plain; version=0.0.4; charset=utf-8", out, n);
}

/* ---- JSON API ---------------------------------------------------------- */
/*
 * For apps and scripts, beside the forms and under the same rules. Off
 * unless API_TOKEN is set; then every call needs "Authorization: Bearer
 * <API_TOKEN>". No cookies are involved, so no CSRF token either. Records
 * made here belong to one fixed API session, so the forms cannot reach
 * them, nor the API the forms' records. Bodies are JSON or url-encoded,
 * with the same fields; docs/openapi.json describes every answer.
 *
 *	POST   /api/v1/verifications            {"phone"} -> 201 {"id", ...}
 *	POST   /api/v1/verifications/{id}/check {"code"}  -> 200 {"status"}
 *	POST   /api/v1/verifications/by_phone_number/check
 *	                                {"phone", "code"} -> 200 {"status"}
 *	GET    /api/v1/verifications/{id}                 -> 200 {"status"}
 *	DELETE /api/v1/verifications/{id}                 -> 204
 */

static int
reply_json(struct req *r, int status, const char *body)
{
	return reply(r, status, "application/json", body, strlen(body));
}

/* {"error": {"code", "message"}}. */
static int
reply_json_error(struct req *r, int status, const char *code,
                 const char *message)
{
	char body[512], esc[256];
	size_t n = 0;

	json_escape(message, esc, sizeof(esc), &n);
	snprintf(body, sizeof(body), "{\"error\":{\"code\":\"%s\",\"message\":"
	    "\"%s\"}}", code, esc);
	return reply_json(r, status, body);
}

static int
reply_outcome_json(struct req *r, enum outcome o)
{
	return reply_json_error(r, outcomes[o].status, outcomes[o].code,
	    outcomes[o].api);
}

/* A JSON API body, JSON or url-encoded (what Twilio takes): the same
 * fields, limits and errors either way. */
struct api_body {
	char buf[OTP_MAX_BODY + 1];
	size_t len;
	bool form;
};

/*
 * The string field name of b, decoded into out: its length, FORM_MISSING
 * if b has no such field, or another negative value if it is not a
 * string, does not fit, or the body is malformed.
 */
static int
api_field(const struct api_body *b, const char *name, char *out,
          size_t outlen)
{
	struct json j = { b->buf, b->buf + b->len, 0 };
	int n;

	if (b->form)
		return form_get(b->buf, b->len, name, out, outlen);
	if ((n = json_get_string(b->buf, b->len, name, out, outlen)) >= 0)
		return n;
	return json_member(&j, name) != 0 ? FORM_MISSING : FORM_BAD_ESCAPE;
}

/*
 * Reads a body (application/json or application/x-www-form-urlencoded,
 * at most OTP_MAX_BODY) into b, and its string field name into out.
 * Returns 0, or the status answered.
 */
static int
api_read(struct req *r, struct api_body *b, const char *name, char *out,
         size_t outlen)
{
	const char *type = mg_get_header(r->conn, "Content-Type");
	char expected[64];
	enum outcome o = OUT_MEDIA_TYPE;

	b->form = media_type_is(type, "application/x-www-form-urlencoded");
	if ((b->form || media_type_is(type, "application/json")) &&
	    (o = body_read(r, b->buf, sizeof(b->buf), &b->len)) == OUT_NONE &&
	    api_field(b, name, out, outlen) >= 0)
		return 0;
	if (o != OUT_NONE) {
		r->close = true;
		return reply_outcome_json(r, o);
	}
	snprintf(expected, sizeof(expected), b->form ? "expected %s=..." :
	    "expected {\"%s\": \"...\"}", name);
	return reply_json_error(r, 400, "bad_request", expected);
}

/*
 * The end user an API call is made for: "client_ip" in the body, counted
 * per address and network like a web client. Without it the call counts
 * only toward the API's own caps (the caller is one back end, not one
 * user). ip is a 64-byte buffer that holds the address. 0, or the status
 * answered.
 */
static int
api_client(struct req *r, const struct api_body *b, char ip[64],
           struct client *cl)
{
	uint8_t bin[17];
	int n = api_field(b, "client_ip", ip, 64);

	client_init(r->otp, r->cfg, cl, NULL);
	if (n == FORM_MISSING)
		return 0;
	if (n <= 0 || !addr_parse(ip, (size_t)n, bin))
		return reply_json_error(r, 400, "invalid_client_ip",
		    "client_ip must be an IPv4 or IPv6 address");
	client_init(r->otp, r->cfg, cl, ip);
	return 0;
}

/* The number typed as input, read as the forms read it, into phone.
 * 0, or the status answered (a refused number: 400 and why). */
static int
api_phone(struct req *r, const char *input, char phone[OTP_MAX_PHONE_LEN + 1])
{
	int rc;

	if ((rc = phone_read(r->cfg, input, strlen(input), phone,
	    OTP_MAX_PHONE_LEN + 1)) == PHONE_OK)
		return 0;
	log_refused(r, rc, phone);
	return reply_json_error(r, 400, phone_refusals[rc].code,
	    phone_refusals[rc].api);
}

/* 201 {"id", "status", "to" (masked), "channel", "created_at",
 * "expires_at", "expires_in", "resend_after"} for a started record. */
static int
api_created(struct req *r, const struct start *st, const char *phone)
{
	struct otp *otp = r->otp;
	char out[320], vid[HANDLE_LEN + 1], masked[32], created[24], until[24];
	int64_t left, ends;

	enum rec_state state;

	if (STORE_CALL(otp, state, otp, r->cfg, st->slot, st->id, &otp->api,
	    otp->now_ms(), &state, &left) != 0)
		left = r->cfg->code_ttl * 1000; /* it was just made */
	ends = (otp->wall_ms() + left + 999) / 1000;
	time_rfc3339(ends - r->cfg->code_ttl, created);
	time_rfc3339(ends, until);
	handle_format(st->slot, st->id, vid);
	phone_mask(phone, masked, sizeof(masked));
	snprintf(out, sizeof(out), "{\"id\":\"%s\",\"status\":\"pending\","
	    "\"to\":\"%s\",\"channel\":\"sms\",\"created_at\":\"%s\","
	    "\"expires_at\":\"%s\",\"expires_in\":%lld,\"resend_after\":%ld}",
	    vid, masked, created, until, (long long)((left + 999) / 1000),
	    r->cfg->resend_interval);
	return reply_json(r, 201, out);
}

/* POST /api/v1/verifications {"phone": "...", "client_ip": "..."} */
static int
api_create(struct req *r)
{
	struct otp *otp = r->otp;
	struct api_body b;
	char input[OTP_MAX_INPUT + 1], out[160], ip[64];
	char phone[OTP_MAX_PHONE_LEN + 1];
	struct client cl;
	struct start st;
	int rc;

	if ((rc = api_read(r, &b, "phone", input, sizeof(input))) != 0 ||
	    (rc = api_phone(r, input, phone)) != 0 ||
	    (rc = api_client(r, &b, ip, &cl)) != 0)
		return rc;
	if (verification_start(otp, r->cfg, phone, NULL, &cl, &otp->api,
	    message_pick(r), &st) != 0) {
		enum outcome o = start_outcome(&st);

		r->retry_after = st.retry;
		if (o != OUT_LIMITED && o != OUT_CAPPED)
			return reply_outcome_json(r, o);
		snprintf(out, sizeof(out), "limit %s reached",
		    limit_names[st.limit]);
		return reply_json_error(r, outcomes[o].status, outcomes[o].code,
		    out);
	}
	return api_created(r, &st, phone);
}

/*
 * Checks the code in b for record (slot, id) and answers 200 {"id",
 * "status", "valid", "attempts_left" while pending}, or an error. A
 * check by number (by_phone) that found no verification is a 404 that
 * counts as a wrong code for client_ip: numbers, unlike ids, can be
 * guessed.
 */
static int
api_check(struct req *r, struct api_body *b, uint32_t slot,
          const uint8_t id[OTP_ID_LEN], bool by_phone)
{
	static const char *const status[CHECK__N] = {
		[CHECK_OK] = "approved", [CHECK_WRONG] = "pending",
		[CHECK_LOCKED] = "max_attempts_reached", [CHECK_EXPIRED] = "expired",
	};
	struct otp *otp = r->otp;
	char code[OTP_MAX_INPUT + 1], out[160], more[32] = "";
	char phone[OTP_MAX_PHONE_LEN + 1], ip[64], vid[HANDLE_LEN + 1];
	struct client cl;
	struct view v;
	enum limit limit;
	enum check rc;
	long retry = 0;
	uint32_t left = 0;
	int n;

	if ((n = api_field(b, "code", code, sizeof(code))) < 0) {
		wipe(code, sizeof(code));
		return reply_json_error(r, 400, "bad_request", b->form ?
		    "expected code=..." : "expected {\"code\": \"...\"}");
	}
	if ((n = api_client(r, b, ip, &cl)) != 0)
		return n;
	rc = verification_check(otp, r->cfg, slot, id, &otp->api, code,
	    strlen(code), &cl, &v, &limit, &retry, &left);
	wipe(code, sizeof(code));
	/* The number is the callback's, on success only. */
	str_copy(phone, sizeof(phone), rc == CHECK_OK ? v.phone : "");
	wipe(&v, sizeof(v));
	if (limit == LIMIT_STORE)
		return reply_outcome_json(r, OUT_STORE);
	if (limit != LIMIT_NONE) {
		r->retry_after = retry;
		return reply_json_error(r, outcomes[limit_outcome(limit)].status,
		    outcomes[limit_outcome(limit)].code,
		    "too many failed checks from this client");
	}
	if (rc == CHECK_UNKNOWN && by_phone && cl.addr != NULL)
		STORE_CALL(otp, verify_take, otp, r->cfg, &cl, otp->now_ms(), &retry);
	if (rc == CHECK_UNKNOWN)
		return reply_json_error(r, 404, "not_found", by_phone ?
		    "no pending verification for this number" :
		    "no such verification");
	if (rc == CHECK_DONE)
		return reply_json_error(r, 409, "already_approved",
		    "this verification was already approved");
	handle_format(slot, id, vid);
	if (rc == CHECK_OK && otp->on_verified != NULL)
		otp->on_verified(otp->on_verified_arg, phone, vid);
	wipe(phone, sizeof(phone));
	if (rc == CHECK_WRONG)
		snprintf(more, sizeof(more), ",\"attempts_left\":%u", left);
	snprintf(out, sizeof(out), "{\"id\":\"%s\",\"status\":\"%s\","
	    "\"valid\":%s%s}", vid, status[rc], rc == CHECK_OK ? "true" :
	    "false", more);
	return reply_json(r, 200, out);
}

/* POST /api/v1/verifications/{id}/check {"code": "..."} */
static int
api_check_id(struct req *r, uint32_t slot, const uint8_t id[OTP_ID_LEN])
{
	struct api_body b;
	char code[OTP_MAX_INPUT + 1];
	int rc = api_read(r, &b, "code", code, sizeof(code));

	wipe(code, sizeof(code));
	if (rc == 0)
		rc = api_check(r, &b, slot, id, false);
	wipe(&b, sizeof(b)); /* it held the code */
	return rc;
}

/*
 * POST /api/v1/verifications/by_phone_number/check {"phone", "code"}
 * (Telnyx's by_phone_number): the number read as a create reads it, and
 * its newest API verification checked as by its id. The forms' records
 * are another namespace: never found here.
 */
static int
api_check_phone(struct req *r)
{
	struct otp *otp = r->otp;
	struct api_body b;
	char input[OTP_MAX_INPUT + 1], phone[OTP_MAX_PHONE_LEN + 1];
	uint8_t id[OTP_ID_LEN] = { 0 };
	int64_t now = otp->now_ms();
	uint32_t slot;
	int rc;

	if ((rc = api_read(r, &b, "phone", input, sizeof(input))) != 0 ||
	    (rc = api_phone(r, input, phone)) != 0)
		return rc;
	if ((rc = STORE_CALL(otp, find, otp, r->cfg, phone, &otp->api, now, &slot,
	    id)) == -2) {
		wipe(phone, sizeof(phone));
		wipe(&b, sizeof(b));
		return reply_outcome_json(r, OUT_STORE);
	}
	if (rc != 0)
		slot = UINT32_MAX; /* checked, and fails, as unknown */
	rc = api_check(r, &b, slot, id, true);
	wipe(phone, sizeof(phone));
	wipe(&b, sizeof(b)); /* the number and the code */
	return rc;
}

/* GET /api/v1/verifications/{id} */
static int
api_status(struct req *r, uint32_t slot, const uint8_t id[OTP_ID_LEN])
{
	static const char *const names[] = {
		[REC_LIVE] = "pending", [REC_LOCKED] = "max_attempts_reached",
		[REC_EXPIRED] = "expired", [REC_VERIFIED] = "approved",
	};
	struct otp *otp = r->otp;
	char out[96];
	int64_t left;
	enum rec_state st;

	if (STORE_CALL(otp, state, otp, r->cfg, slot, id, &otp->api, otp->now_ms(),
	    &st, &left) != 0)
		return reply_outcome_json(r, OUT_STORE);
	if (st == REC_FREE)
		return reply_json_error(r, 404, "not_found",
		    "no such verification");
	snprintf(out, sizeof(out), "{\"status\":\"%s\",\"expires_in\":%lld}",
	    names[st], (long long)((left + 999) / 1000));
	return reply_json(r, 200, out);
}

/* DELETE /api/v1/verifications/{id} */
static int
api_cancel(struct req *r, uint32_t slot, const uint8_t id[OTP_ID_LEN])
{
	struct otp *otp = r->otp;
	int rc = STORE_CALL(otp, cancel, otp, r->cfg, slot, id, &otp->api,
	    otp->now_ms());

	if (rc == -3)
		return reply_outcome_json(r, OUT_STORE);
	if (rc == -1)
		return reply_json_error(r, 404, "not_found",
		    "no such verification");
	if (rc == -2)
		return reply_json_error(r, 409, "finished",
		    "this verification has already ended");
	return reply(r, 204, "application/json", "", 0);
}

/*
 * Whether auth is "Bearer <API_TOKEN>". Compared as keyed hashes (the
 * token's own was made at load): the time taken depends on auth's length
 * alone, never on the token's bytes or length. noinline: the attack test
 * counts this function's instructions under callgrind.
 */
static __attribute__((noinline)) bool
api_token_ok(const struct otp *otp, const struct config *c, const char *auth)
{
	uint8_t mac[OTP_MAC_LEN];
	bool ok;

	if (auth == NULL || (auth = PREFIX(auth, "Bearer ")) == NULL)
		return false;
	secret_mac(otp, auth, strlen(auth), mac);
	ok = ct_equal(mac, c->api_token_mac, sizeof(mac));
	wipe(mac, sizeof(mac));
	return ok;
}

/* Routes /api/v1/...: token first, then path and method. */
static int
api_dispatch(struct req *r)
{
	static const char base[] = "/api/v1/verifications";
	const char *token = r->cfg->api_token;
	const char *auth = mg_get_header(r->conn, "Authorization");
	const char *m = r->ri->request_method, *rest, *id_end;
	uint8_t id[OTP_ID_LEN];
	uint32_t slot;

	if (token[0] == '\0')
		return reply_json_error(r, 404, "not_found",
		    "the API is off (set API_TOKEN)");
	if (!api_token_ok(r->otp, r->cfg, auth)) {
		r->head = "WWW-Authenticate: Bearer\r\n";
		return reply_json_error(r, 401, "unauthorized",
		    "send Authorization: Bearer <API_TOKEN>");
	}
	if (strncmp(r->path, base, sizeof(base) - 1) != 0)
		return reply_json_error(r, 404, "not_found", "no such endpoint");
	rest = r->path + sizeof(base) - 1;
	if (*rest == '\0') {
		if (strcmp(m, "POST") == 0)
			return api_create(r);
		r->allow = "POST";
		return reply_json_error(r, 405, "method_not_allowed", "use POST");
	}
	if (strcmp(rest, "/by_phone_number/check") == 0) {
		if (strcmp(m, "POST") == 0)
			return api_check_phone(r);
		r->allow = "POST";
		return reply_json_error(r, 405, "method_not_allowed",
		    "use POST");
	}
	if (*rest++ != '/' || (id_end = rest + strcspn(rest, "/"),
	    handle_decode(rest, (size_t)(id_end - rest), &slot, id) != 0))
		return reply_json_error(r, 404, "not_found",
		    "no such verification");
	if (strcmp(id_end, "/check") == 0) {
		if (strcmp(m, "POST") == 0)
			return api_check_id(r, slot, id);
		r->allow = "POST";
		return reply_json_error(r, 405, "method_not_allowed", "use POST");
	}
	if (*id_end != '\0')
		return reply_json_error(r, 404, "not_found", "no such endpoint");
	if (strcmp(m, "GET") == 0)
		return api_status(r, slot, id);
	if (strcmp(m, "DELETE") == 0)
		return api_cancel(r, slot, id);
	r->allow = "GET, DELETE";
	return reply_json_error(r, 405, "method_not_allowed", "use GET or DELETE");
}

/* ---- webhooks ---------------------------------------------------------- */
/*
 * WEBHOOK_URL is told when an API verification is approved, expires or
 * is locked: a POST of {"type", "id", "status", "to" (masked),
 * "occurred_at"}, signed (hook_send()). The store queues an event as the
 * record ends (hook_note(), under its lock: a copy, never a wait; with
 * Redis, redis_hook() after the script that ended it, and the sweeper's
 * claim of expired records, redis_sweep()); one
 * thread delivers them, a try at a time, so a slow receiver delays only
 * other events, never a request. A failed try (not 2xx, or no answer
 * within SMS_TIMEOUT) is tried again after hook_backoff[]; after
 * OTP_HOOK_TRIES, or at shutdown, the event is lost (counted, logged).
 * A full queue drops its oldest event for the new one: the oldest has
 * had the most tries, and the newest has a user waiting on it now.
 */

/* Seconds before each try: 5 tries over 110 s. */
static const int hook_backoff[OTP_HOOK_TRIES] = { 0, 5, 15, 30, 60 };

static const char *const hook_types[HOOK__N] = {
	[HOOK_APPROVED] = "approved", [HOOK_EXPIRED] = "expired",
	[HOOK_LOCKED] = "locked",
};

/* A free entry of the queue (seq 0) or, if none, the oldest. Caller
 * holds hooks.lock. O(queue). */
static struct hook *
hooks_room(struct hooks *h)
{
	struct hook *q = &h->q[0];

	for (size_t i = 1; i < countof(h->q); i++)
		if (h->q[i].seq < q->seq)
			q = &h->q[i];
	return q;
}

/* Queues the event e of the API's record (slot, id), to the masked
 * number to, if WEBHOOK_URL is set. hooks.lock is held for a copy. */
static void
hook_queue(struct hooks *h, uint32_t slot, const uint8_t id[OTP_ID_LEN],
           const char *to, enum hook_event e)
{
	struct hook *q;

	if (h == NULL || !atomic_load(&h->on))
		return;
	pthread_mutex_lock(&h->lock);
	q = hooks_room(h);
	h->dropped += q->seq != 0;
	q->seq = ++h->seq;
	q->due_ms = 0;
	q->at_ms = h->wall_ms();
	q->slot = slot;
	memcpy(q->id, id, OTP_ID_LEN);
	str_copy(q->to, sizeof(q->to), to);
	q->event = (uint8_t)e;
	q->tries = 0;
	pthread_cond_signal(&h->cond);
	pthread_mutex_unlock(&h->lock);
}

/* Queues the event e of record r (at slot) if r is the API's. Called
 * under store.lock; hooks.lock is taken after it (see "Locking"). */
static void
hook_note(struct hooks *h, uint32_t slot, const struct record *r,
          enum hook_event e)
{
	char to[24];

	if (r->ns != NS_API)
		return;
	phone_mask(r->phone, to, sizeof(to));
	hook_queue(h, slot, r->id, to, e);
}

/* Headers, in a list for libcurl: NULL if out of memory. */
static struct curl_slist *
hook_headers(const char *const *lines, size_t n)
{
	struct curl_slist *l = NULL, *next;

	for (size_t i = 0; i < n; i++) {
		if ((next = curl_slist_append(l, lines[i])) == NULL) {
			curl_slist_free_all(l);
			return NULL;
		}
		l = next;
	}
	return l;
}

/*
 * The signature of body sent at Unix time ts: "v1=" and the hex of
 * HMAC-SHA256 under WEBHOOK_SECRET of "<ts>.<body>" (README shows a
 * receiver's check). out: 3 + 64 + 1 bytes. 0 or -1.
 */
static int
hook_sign(const struct config *c, long long ts, const char *body,
          char out[3 + 2 * OTP_MAC_LEN + 1])
{
	char msg[32 + 256];
	uint8_t mac[OTP_MAC_LEN];
	int n = snprintf(msg, sizeof(msg), "%lld.%s", ts, body);

	if (n < 0 || (size_t)n >= sizeof(msg) || mbedtls_md_hmac(
	    mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
	    (const uint8_t *)c->webhook_secret, strlen(c->webhook_secret),
	    (const uint8_t *)msg, (size_t)n, mac) != 0)
		return -1;
	memcpy(out, "v1=", 3);
	hex_encode(mac, sizeof(mac), out + 3, false);
	return 0;
}

/* One try of event e: 0 when the receiver took it (2xx), else -1. */
static int
hook_send(struct otp *otp, const struct config *c, const struct hook *e)
{
	static const char *const states[HOOK__N] = {
		[HOOK_APPROVED] = "approved", [HOOK_EXPIRED] = "expired",
		[HOOK_LOCKED] = "max_attempts_reached",
	};
	char body[256], vid[HANDLE_LEN + 1], at[24], tsh[48], sigh[96];
	char sig[3 + 2 * OTP_MAC_LEN + 1], errbuf[CURL_ERROR_SIZE] = "";
	char why[160];
	const char *lines[] = { "Content-Type: application/json", tsh, sigh };
	struct pooled p = { NULL, NULL, NULL };
	struct response resp = { NULL, 0, OTP_MAX_SMS_RESPONSE };
	struct curl_slist *hdrs = NULL;
	long long ts = otp->wall_ms() / 1000;
	long status = 0;
	CURLcode cc = CURLE_FAILED_INIT;
	const char *reason;
	bool ok;

	handle_format(e->slot, e->id, vid);
	time_rfc3339(e->at_ms / 1000, at);
	snprintf(body, sizeof(body), "{\"type\":\"verification.%s\",\"id\":"
	    "\"%s\",\"status\":\"%s\",\"to\":\"%s\",\"occurred_at\":\"%s\"}",
	    hook_types[e->event], vid, states[e->event], e->to, at);
	snprintf(tsh, sizeof(tsh), "Webhook-Timestamp: %lld", ts);
	if (hook_sign(c, ts, body, sig) == 0 &&
	    snprintf(sigh, sizeof(sigh), "Webhook-Signature: %s", sig) > 0 &&
	    (hdrs = hook_headers(lines, countof(lines))) != NULL &&
	    curl_take(otp, &p) == 0) {
		resp.buf = p.buf;
		if (curl_setup(c, p.h, c->webhook_url, "POST", hdrs, body,
		    false, &resp, errbuf) == 0)
			cc = curl_perform(otp, &p);
		curl_easy_getinfo(p.h, CURLINFO_RESPONSE_CODE, &status);
		curl_easy_setopt(p.h, CURLOPT_HTTPHEADER, NULL);
		curl_give(otp, &p);
	}
	curl_slist_free_all(hdrs);
	ok = cc == CURLE_OK && status >= 200 && status <= 299;
	reason = cc == CURLE_OK ? "HTTP status" : errbuf[0] ? errbuf :
	    curl_easy_strerror(cc);
	log_escape(reason, strlen(reason), why, sizeof(why));
	log_line(otp, ok ? "info" : "warn", "webhook%s type=%s to=%s "
	    "status=%ld reason=\"%s\" try=%d/" OTP_STR(OTP_HOOK_TRIES),
	    ok ? "" : "_failed", hook_types[e->event], e->to, status,
	    ok ? "delivered" : why, e->tries + 1);
	return ok ? 0 : -1;
}

/* Counts and logs the events a full queue dropped since the last call:
 * the sweeper's, each round, since hook_note() may not log (it runs
 * under the store's lock) and the delivery thread may hang in a try. */
static void
hooks_drops(struct otp *otp)
{
	struct hooks *h = &otp->hooks;
	unsigned long n;

	pthread_mutex_lock(&h->lock);
	n = h->dropped - h->logged;
	h->logged = h->dropped;
	pthread_mutex_unlock(&h->lock);
	if (n == 0)
		return;
	atomic_fetch_add(&otp->stats.hooks[HOOKS_DROPPED], n);
	log_warn(otp, "webhook_dropped count=%lu: the queue of "
	    OTP_STR(OTP_HOOK_QUEUE) " was full", n);
}

/* The event due first, or NULL. Caller holds hooks.lock. O(queue). */
static struct hook *
hooks_next(struct hooks *h)
{
	struct hook *next = NULL;

	for (size_t i = 0; i < countof(h->q); i++)
		if (h->q[i].seq != 0 && (next == NULL ||
		    h->q[i].due_ms < next->due_ms))
			next = &h->q[i];
	return next;
}

/* Waits until next is due (NULL: an event comes) or stopping. Caller
 * holds hooks.lock. */
static void
hooks_wait(struct hooks *h, const struct hook *next)
{
	struct timespec ts;
	int64_t ms;

	if (next == NULL) {
		pthread_cond_wait(&h->cond, &h->lock);
		return;
	}
	ms = next->due_ms - h->now_ms();
	deadline_in(&ts, ms * 1000);
	pthread_cond_timedwait(&h->cond, &h->lock, &ts);
}

/* One try of e, with no lock held; then, under it, e back in the queue
 * for its next try, if it has one and there is room. */
static void
hooks_try(struct otp *otp, struct hooks *h, struct hook e)
{
	const struct config *c;
	enum hook_result res = HOOKS_FAILED;
	int rc;

	pthread_mutex_unlock(&h->lock);
	c = cfg_hold(otp);
	rc = c->webhook_url[0] != '\0' ? hook_send(otp, c, &e) : 0;
	if (c->webhook_url[0] == '\0')
		res = HOOKS_DROPPED; /* a reload turned webhooks off */
	else if (rc == 0)
		res = HOOKS_DELIVERED;
	cfg_drop(c);
	pthread_mutex_lock(&h->lock);
	if (rc != 0 && ++e.tries < OTP_HOOK_TRIES && !h->stopping) {
		struct hook *q = hooks_room(h);

		if (q->seq == 0) {
			e.due_ms = h->now_ms() + hook_backoff[e.tries] * 1000LL;
			*q = e;
			return;
		}
		res = HOOKS_DROPPED; /* it is the oldest */
	}
	atomic_fetch_add(&otp->stats.hooks[res], 1);
}

/* The delivery thread: the event due first, when it is due. */
static void *
hooks_main(void *arg)
{
	struct otp *otp = arg;
	struct hooks *h = &otp->hooks;
	struct hook *next;

	pthread_mutex_lock(&h->lock);
	while (!h->stopping) {
		if ((next = hooks_next(h)) == NULL ||
		    next->due_ms > h->now_ms()) {
			hooks_wait(h, next);
		} else {
			struct hook e = *next;

			next->seq = 0;
			hooks_try(otp, h, e);
		}
	}
	pthread_mutex_unlock(&h->lock);
	return NULL;
}

/* ---- upstream proxy ---------------------------------------------------- */
/*
 * UPSTREAM: otp_demo as the front door of an admin UI that cannot do
 * forward-auth. A request for none of our routes goes to the upstream, a
 * new HTTP/1.1 connection each ("Connection: close": no pool to size or
 * to go stale), for a verified session only. Bodies stream through one
 * OTP_PROXY_BUF buffer on the worker's stack, each way in turn: nothing
 * is buffered whole. The upstream's answer is read as strictly as
 * civetweb reads a client's (patch 0006); a malformed one is a 502,
 * never passed on.
 *
 * The socket is non-blocking and every wait is a poll() bounded by
 * UPSTREAM_TIMEOUT that also watches the halt pipe, so a stop never
 * waits for a slow upstream.
 */

/* Hop-by-hop headers (RFC 9110 7.6.1), and those of ours a client or an
 * upstream must not set for the other side: dropped both ways. */
static const char *const hop_headers[] = {
	"Connection", "Keep-Alive", "TE", "Trailer", "Transfer-Encoding",
	"Upgrade", "Content-Length", "Host", "Expect", "Forwarded",
	"X-Otp-Phone",
};

/* The upstream connection and what has been read from it. */
struct upstream {
	int fd, halt;
	int timeout_ms;  /* each wait; UPSTREAM_TIMEOUT */
	char *buf;       /* OTP_PROXY_BUF bytes */
	size_t have;     /* bytes in buf */
	size_t used;     /* of which consumed */
	bool pin;        /* up_fill() keeps buf in place: a head is parsed */
	bool slow;       /* a wait timed out: 504, not 502 */
};

/* How the upstream's body is framed. */
enum frame { FRAME_NONE, FRAME_LENGTH, FRAME_CHUNKED, FRAME_CLOSE };

/* Waits for ev on u's socket. 0, or -1 (u->slow set on a timeout). */
static int
up_wait(struct upstream *u, short ev)
{
	struct pollfd p[2] = { { u->fd, ev, 0 }, { u->halt, POLLIN, 0 } };
	int n;

	while ((n = poll(p, 2, u->timeout_ms)) < 0 && errno == EINTR)
		;
	u->slow = n == 0;
	return n > 0 && p[1].revents == 0 ? 0 : -1;
}

/* Connects to UPSTREAM. 0, or -1 (u->slow if it did not answer). */
static int
up_connect(const struct config *c, struct upstream *u)
{
	int err = 0;
	socklen_t len = sizeof(err);

	u->fd = socket(c->upstream_addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, 0);
	if (u->fd < 0)
		return -1;
	if (connect(u->fd, (const struct sockaddr *)&c->upstream_addr,
	    c->upstream_len) == 0)
		return 0;
	if (errno != EINPROGRESS || up_wait(u, POLLOUT) != 0 ||
	    getsockopt(u->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 ||
	    err != 0)
		return -1;
	return 0;
}

/* Sends all n bytes of p to the upstream. 0 or -1. */
static int
up_send(struct upstream *u, const void *p, size_t n)
{
	const char *s = p;

	while (n > 0) {
		ssize_t k = send(u->fd, s, n, MSG_NOSIGNAL);

		if (k < 0 && (errno == EAGAIN || errno == EINTR)) {
			if (up_wait(u, POLLOUT) != 0)
				return -1;
			continue;
		}
		if (k <= 0)
			return -1;
		s += k;
		n -= (size_t)k;
	}
	return 0;
}

/* Moves what is left unread in u->buf to its start. */
static void
up_compact(struct upstream *u)
{
	memmove(u->buf, u->buf + u->used, u->have - u->used);
	u->have -= u->used;
	u->used = 0;
}

/* Reads more from the upstream into u->buf, compacting it first unless
 * a head is being parsed in it. The bytes read, 0 at its end, or -1. */
static ssize_t
up_fill(struct upstream *u)
{
	ssize_t k;

	if (!u->pin)
		up_compact(u);
	if (u->have == OTP_PROXY_BUF)
		return -1;
	while ((k = recv(u->fd, u->buf + u->have, OTP_PROXY_BUF - u->have,
	    0)) < 0) {
		if ((errno != EAGAIN && errno != EINTR) ||
		    up_wait(u, POLLIN) != 0)
			return -1;
	}
	u->have += (size_t)k;
	return k;
}

/* The next CRLF-ended line of the upstream's (a bare LF, a NUL, or no
 * end within max bytes, is malformed): *line and *len, without the CRLF,
 * NUL-terminated in place. 0 or -1. */
static int
up_line(struct upstream *u, size_t max, char **line, size_t *len)
{
	char *p, *nl;

	for (;;) {
		p = u->buf + u->used;
		if ((nl = memchr(p, '\n', u->have - u->used)) != NULL)
			break;
		if (u->have - u->used >= max || up_fill(u) <= 0)
			return -1;
	}
	if (nl == p || nl[-1] != '\r' || (size_t)(nl - p) >= max)
		return -1;
	nl[-1] = '\0';
	*line = p;
	*len = (size_t)(nl - 1 - p);
	u->used += *len + 2;
	return strlen(p) == *len ? 0 : -1;
}

/* Whether header name is one the other side must not get: hop-by-hop,
 * named in one of the n headers' Connection lines, or one of ours. */
static bool
proxy_hop(const char *name, const struct mg_header *h, int n)
{
	const char *p, *item;
	size_t len;

	for (size_t i = 0; i < countof(hop_headers); i++)
		if (strcasecmp(name, hop_headers[i]) == 0)
			return true;
	if (PREFIX_CI(name, "Proxy-") != NULL ||
	    PREFIX_CI(name, "Remote-") != NULL ||
	    PREFIX_CI(name, "X-Forwarded-") != NULL)
		return true;
	for (int i = 0; i < n; i++) {
		if (strcasecmp(h[i].name, "Connection") != 0)
			continue;
		for (p = h[i].value; list_next(&p, ',', &item, &len);)
			if (strlen(name) == len &&
			    strncasecmp(name, item, len) == 0)
				return true;
	}
	return false;
}

/* Appends the client's Cookie header v to out (cap bytes, *n used)
 * without our own cookies (otp_auth, otp_sid, otp_vid, in any prefix):
 * the upstream has no use for them, and they are keys to this server. */
static int
proxy_cookies(const char *v, char *out, size_t cap, size_t *n)
{
	const char *item, *name;
	size_t len, start = *n;
	int rc = 0;

	while (list_next(&v, ';', &item, &len)) {
		if ((name = PREFIX(item, HOST_PREFIX)) == NULL &&
		    (name = PREFIX(item, "__Secure-")) == NULL)
			name = item;
		if (len == 0 || PREFIX(name, "otp_auth=") != NULL ||
		    PREFIX(name, "otp_sid=") != NULL ||
		    PREFIX(name, "otp_vid=") != NULL)
			continue;
		rc |= esc_none(*n == start ? "Cookie: " : "; ", out, cap, n);
		rc |= out_put(out, cap, n, item, len);
	}
	if (*n > start)
		rc |= esc_none("\r\n", out, cap, n);
	return rc;
}

/*
 * The request head for the upstream, into out: method and URI as they
 * came, the client's Host (absolute links and redirects the upstream
 * makes then point at us; UPSTREAM's own without one), the client's
 * headers but the dropped ones, its cookies but ours, X-Forwarded-For,
 * -Proto and -Host as this server determined them, the identity, and
 * the body's framing. Its length, or -1 if it does not fit.
 */
static int
proxy_request_head(struct req *r, const char *phone, char *out, size_t cap)
{
	const struct mg_request_info *ri = r->ri;
	const char *host = mg_get_header(r->conn, "Host");
	char fwd[256];
	size_t n = 0;
	int rc = 0, k;

	if (host == NULL || *host == '\0')
		host = r->cfg->upstream + 7; /* "host:port", the "/" cut below */
	k = snprintf(out, cap, "%s %s%s%s HTTP/1.1\r\nHost: %.*s\r\n",
	    ri->request_method, ri->local_uri_raw, ri->query_string ? "?" : "",
	    ri->query_string ? ri->query_string : "", (int)strcspn(host, "/"),
	    host);
	if (k < 0 || (size_t)k >= cap)
		return -1;
	n = (size_t)k;
	for (int i = 0; i < ri->num_headers; i++) {
		const struct mg_header *h = &ri->http_headers[i];

		if (strcasecmp(h->name, "Cookie") == 0)
			rc |= proxy_cookies(h->value, out, cap, &n);
		else if (!proxy_hop(h->name, ri->http_headers, ri->num_headers))
			rc |= head_add(out, cap, &n, h->name, h->value);
	}
	/* A trusted proxy's X-Forwarded-Host is what the browser asked for;
	 * anyone else's Host is. */
	rc |= head_add(out, cap, &n, "X-Forwarded-For", r->addr);
	rc |= head_add(out, cap, &n, "X-Forwarded-Proto",
	    r->secure ? "https" : "http");
	if (r->cfg->trusted_proxy[0] != '\0' && addr_in_list(ri->remote_addr,
	    strlen(ri->remote_addr), r->cfg->trusted_proxy) &&
	    header_last(r, "X-Forwarded-Host") != NULL)
		host = header_last(r, "X-Forwarded-Host");
	rc |= str_ncopy(fwd, sizeof(fwd), host, strcspn(host, "/"));
	rc |= head_add(out, cap, &n, "X-Forwarded-Host", fwd);
	if (rc != 0 || identity_headers(r->cfg, phone, out + n, cap - n) != 0)
		return -1;
	n += strlen(out + n);
	if (ri->content_length >= 0) {
		snprintf(fwd, sizeof(fwd), "%lld", ri->content_length);
		rc |= head_add(out, cap, &n, "Content-Length", fwd);
	} else if (mg_get_header(r->conn, "Transfer-Encoding") != NULL) {
		rc |= head_add(out, cap, &n, "Transfer-Encoding", "chunked");
	}
	rc |= head_add(out, cap, &n, "Connection", "close");
	rc |= esc_none("\r\n", out, cap, &n);
	return rc != 0 ? -1 : (int)n;
}

/* Streams the client's body to the upstream as it came: Content-Length
 * bytes, or chunks (civetweb decodes them; they are framed anew). 0, or
 * an outcome: the client's fault, or the upstream's. */
static enum outcome
proxy_request_body(struct req *r, struct upstream *u)
{
	bool chunked = r->ri->content_length < 0 &&
	    mg_get_header(r->conn, "Transfer-Encoding") != NULL;
	long long left = r->ri->content_length;
	char size[24];
	int got;

	while (chunked || left > 0) {
		got = mg_read(r->conn, u->buf, chunked || left > OTP_PROXY_BUF ?
		    OTP_PROXY_BUF : (size_t)left);
		if (got < 0 || (got == 0 && !chunked))
			return OUT_BAD_BODY;
		if (chunked) {
			snprintf(size, sizeof(size), "%x\r\n", (unsigned)got);
			if (up_send(u, size, strlen(size)) != 0)
				return OUT_UPSTREAM_DOWN;
		}
		if (up_send(u, u->buf, (size_t)got) != 0 ||
		    (chunked && up_send(u, "\r\n", 2) != 0))
			return OUT_UPSTREAM_DOWN;
		if (got == 0)
			break;
		left -= got;
	}
	return OUT_NONE;
}

/* Whether s has a control character other than HT (a NUL ends it). */
static bool
has_ctl(const char *s)
{
	for (; *s != '\0'; s++)
		if (((unsigned char)*s < 0x20 && *s != '\t') || *s == 0x7f)
			return true;
	return false;
}

/* A Content-Length value: digits only, no sign, no overflow. 0 or -1. */
static int
proxy_length(const char *v, long long *out)
{
	long long n = 0;

	if (*v == '\0' || strspn(v, "0123456789") != strlen(v) ||
	    strlen(v) > 15)
		return -1;
	for (; *v != '\0'; v++)
		n = n * 10 + (*v - '0');
	*out = n;
	return 0;
}

/*
 * One header line of the upstream's, split in place into hd: a token, a
 * colon, the value without blanks around it. A Content-Length or a
 * Transfer-Encoding sets the framing, *f and *len; those two together,
 * Content-Lengths that differ, or a coding other than "chunked" are
 * malformed, as are a blank before the colon, obs-fold (a line that starts
 * with a blank) and control characters. 0 or -1.
 */
static int
proxy_field(char *line, struct mg_header *hd, enum frame *f, long long *len)
{
	char *colon = strchr(line, ':');
	long long cl;
	size_t n;

	if (colon == NULL || colon == line || has_ctl(line) ||
	    strcspn(line, " \t") < (size_t)(colon - line))
		return -1;
	*colon = '\0';
	hd->name = line;
	for (colon++; *colon == ' ' || *colon == '\t'; colon++)
		;
	for (n = strlen(colon); n > 0 && (colon[n - 1] == ' ' ||
	    colon[n - 1] == '\t'); n--)
		colon[n - 1] = '\0';
	hd->value = colon;
	if (strcasecmp(line, "Transfer-Encoding") == 0) {
		if (*f != FRAME_CLOSE || strcasecmp(colon, "chunked") != 0)
			return -1;
		*f = FRAME_CHUNKED;
	} else if (strcasecmp(line, "Content-Length") == 0) {
		if (proxy_length(colon, &cl) != 0 || *f == FRAME_CHUNKED ||
		    (*f == FRAME_LENGTH && cl != *len))
			return -1;
		*f = FRAME_LENGTH;
		*len = cl;
	}
	return 0;
}

/*
 * Reads the upstream's response head into u->buf (1xx answers skipped),
 * NUL-terminating its parts in place: the status, the reason, and up to
 * OTP_PROXY_HEADERS headers in h (*nh). Then the body's framing: *f and,
 * for FRAME_LENGTH, *len. Refused, as malformed: a head over
 * OTP_PROXY_HEAD bytes or OTP_PROXY_HEADERS lines, a bad status line, a
 * bare LF or a NUL, a 101, a bad line (proxy_field()). The status, or -1.
 */
static int
proxy_response_head(struct upstream *u, struct mg_header *h, int *nh,
                    const char **reason, enum frame *f, long long *len)
{
	char *line;
	size_t n, start;
	int status = 100;

	while (status < 200) {
		up_compact(u); /* the head's parts stay where they are read */
		u->pin = true;
		start = u->used;
		if (up_line(u, OTP_PROXY_HEAD, &line, &n) != 0 || n < 12 ||
		    (PREFIX(line, "HTTP/1.1 ") == NULL &&
		    PREFIX(line, "HTTP/1.0 ") == NULL) ||
		    strspn(line + 9, "0123456789") != 3 || line[12] != ' ')
			return -1;
		status = (line[9] - '0') * 100 + (line[10] - '0') * 10 +
		    line[11] - '0';
		if (status < 100 || has_ctl(line))
			return -1;
		*reason = line + 13;
		*nh = 0;
		*f = FRAME_CLOSE;
		for (;;) {
			if (up_line(u, OTP_PROXY_HEAD - (u->used - start), &line,
			    &n) != 0)
				return -1;
			if (n == 0)
				break;
			if (*nh == OTP_PROXY_HEADERS ||
			    proxy_field(line, &h[(*nh)++], f, len) != 0)
				return -1;
		}
		if (status == 101)
			return -1; /* we never ask for an upgrade */
	}
	u->pin = false;
	return status;
}

/*
 * The answer's head for the client, into out: the upstream's status and
 * headers but the dropped ones, a Location at the upstream's own origin
 * made a path (it would send the browser around us), and the framing:
 * f as proxy_response_body() will send it. Its length, or -1.
 */
static int
proxy_reply_head(struct req *r, int status, const char *reason,
                 const struct mg_header *h, int nh, enum frame f,
                 long long len, bool chunk_out, char *out, size_t cap)
{
	const char *auth = r->cfg->upstream + 7, *v, *rest;
	size_t alen = strcspn(auth, "/"), n;
	char num[24];
	int rc = 0, k;

	k = snprintf(out, cap, "HTTP/1.1 %03d %s\r\n", status, reason);
	if (k < 0 || (size_t)k >= cap)
		return -1;
	n = (size_t)k;
	for (int i = 0; i < nh; i++) {
		if (proxy_hop(h[i].name, h, nh))
			continue;
		v = h[i].value;
		if (strcasecmp(h[i].name, "Location") == 0 &&
		    (rest = PREFIX_CI(v, "http://")) != NULL &&
		    strncasecmp(rest, auth, alen) == 0 &&
		    (rest[alen] == '/' || rest[alen] == '\0'))
			v = rest[alen] == '\0' ? "/" : rest + alen;
		rc |= head_add(out, cap, &n, h[i].name, v);
	}
	if (f == FRAME_LENGTH) {
		snprintf(num, sizeof(num), "%lld", len);
		rc |= head_add(out, cap, &n, "Content-Length", num);
	} else if (chunk_out) {
		rc |= head_add(out, cap, &n, "Transfer-Encoding", "chunked");
	}
	rc |= head_add(out, cap, &n, "Connection", reply_keep_alive(r) ?
	    "keep-alive" : "close");
	rc |= esc_none("\r\n", out, cap, &n);
	return rc != 0 ? -1 : (int)n;
}

/* A chunk-size line: 1 to 15 hex digits, maybe extensions (ignored).
 * 0 or -1. */
static int
proxy_chunk_size(const char *line, long long *len)
{
	size_t d = strspn(line, "0123456789abcdefABCDEF");

	if (d == 0 || d > 15 || (line[d] != '\0' && line[d] != ';') ||
	    has_ctl(line))
		return -1;
	*len = strtoll(line, NULL, 16);
	return 0;
}

/*
 * Streams the upstream's body to the client: len bytes, chunks, or all
 * until the upstream closes (f), in chunks of ours when chunk_out; the
 * upstream's trailers are dropped. 0, or -1 when either side failed or
 * a chunk is malformed: the answer is then cut short, never completed.
 */
static int
proxy_response_body(struct req *r, struct upstream *u, enum frame f,
                    long long len, bool chunk_out)
{
	char *line;
	size_t n;
	ssize_t k;

	while (f != FRAME_NONE) {
		if (f == FRAME_CHUNKED && len == 0) {
			if (up_line(u, OTP_PROXY_HEAD, &line, &n) != 0 ||
			    proxy_chunk_size(line, &len) != 0)
				return -1;
			while (len == 0 && n > 0) /* the trailers, if any */
				if (up_line(u, OTP_PROXY_HEAD, &line, &n) != 0)
					return -1;
			if (len == 0)
				break;
		}
		if (f == FRAME_LENGTH && len == 0)
			break;
		if (u->used == u->have && (k = up_fill(u)) <= 0) {
			if (k == 0 && f == FRAME_CLOSE)
				break;
			return -1;
		}
		n = u->have - u->used;
		if (f != FRAME_CLOSE && (long long)n > len)
			n = (size_t)len;
		if ((chunk_out ? mg_send_chunk(r->conn, u->buf + u->used,
		    (unsigned)n) : mg_write(r->conn, u->buf + u->used, n)) <= 0)
			return -1;
		u->used += n;
		len -= (long long)n;
		if (f == FRAME_CHUNKED && len == 0 && (up_line(u, 3, &line,
		    &n) != 0 || n != 0))
			return -1;
	}
	return chunk_out && mg_send_chunk(r->conn, "", 0) < 0 ? -1 : 0;
}

/*
 * Forwards the request to UPSTREAM for the verified phone and streams the
 * answer back. OUT_NONE when an answer went to the client (*status, its
 * status), else the outcome to answer with. Both buffers live here, so
 * that the error page is made after they are gone (a router's threads
 * have small stacks).
 */
static enum outcome
proxy_forward(struct req *r, const char *phone, int *status)
{
	char buf[OTP_PROXY_BUF], head[OTP_PROXY_HEAD + 1024];
	struct mg_header h[OTP_PROXY_HEADERS];
	struct upstream u = { .fd = -1, .halt = r->otp->halt[0],
	    .timeout_ms = (int)r->cfg->upstream_timeout * 1000, .buf = buf };
	enum outcome o = OUT_UPSTREAM_DOWN;
	const char *reason;
	enum frame f;
	long long len = 0;
	bool bodyless, chunk_out;
	int n, nh;

	if ((n = proxy_request_head(r, phone, head, sizeof(head))) < 0) {
		o = OUT_INTERNAL;
		goto out;
	}
	if (up_connect(r->cfg, &u) != 0 || up_send(&u, head, (size_t)n) != 0 ||
	    (o = proxy_request_body(r, &u)) != OUT_NONE)
		goto out;
	o = OUT_UPSTREAM_BAD;
	if ((*status = proxy_response_head(&u, h, &nh, &reason, &f, &len)) < 0)
		goto out;
	/* No body after these, whatever the head says (RFC 9112 6.3). */
	bodyless = strcmp(r->ri->request_method, "HEAD") == 0 ||
	    *status == 204 || *status == 304;
	if (bodyless && f != FRAME_LENGTH)
		f = FRAME_NONE;
	chunk_out = !bodyless && f >= FRAME_CHUNKED &&
	    strcmp(r->ri->http_version, "1.1") == 0;
	if (f == FRAME_CLOSE && !chunk_out)
		r->close = true; /* HTTP/1.0: the end of the body is the close */
	if ((n = proxy_reply_head(r, *status, reason, h, nh, f, len, chunk_out,
	    head, sizeof(head))) < 0)
		goto out;
	o = OUT_NONE;
	if (!reply_keep_alive(r))
		mg_disable_connection_keep_alive(r->conn);
	if (mg_write(r->conn, head, (size_t)n) != n || proxy_response_body(r,
	    &u, bodyless ? FRAME_NONE : f, len, chunk_out) != 0) {
		mg_disable_connection_keep_alive(r->conn);
		log_warn(r->otp, "%s: answer cut short (%s)", __func__,
		    u.slow ? "timeout" : "upstream or client failed");
	}
out:
	if (o != OUT_NONE && o != OUT_BAD_BODY && u.slow)
		o = OUT_UPSTREAM_SLOW;
	if (u.fd >= 0)
		close(u.fd);
	return o;
}

/*
 * Every request for none of our routes when UPSTREAM is set: forwarded
 * for a verified session. Without one, a GET or HEAD gets the phone form
 * (401), which returns to the URI after the code; anything else a 401
 * page, since its body cannot wait for a login. An Upgrade (WebSocket)
 * cannot be relayed: 501.
 */
static int
on_proxy(struct req *r)
{
	const char *m = r->ri->request_method, *q = r->ri->query_string;
	char phone[OTP_MAX_PHONE_LEN + 1], path[128];
	enum outcome o;
	int status = 0, n;

	if (mg_get_header(r->conn, "Upgrade") != NULL) {
		r->close = true;
		return reply_outcome(r, OUT_UPGRADE, "");
	}
	if ((n = auth_session(r, phone)) == -2)
		return reply_outcome(r, OUT_STORE, "");
	if (n != 0) {
		if (strcmp(m, "GET") != 0 && strcmp(m, "HEAD") != 0) {
			r->close = true;
			return reply_outcome(r, OUT_SIGN_IN, "");
		}
		n = snprintf(r->return_to, sizeof(r->return_to), "%s%s%s",
		    r->ri->local_uri_raw, q != NULL ? "?" : "", q != NULL ? q :
		    "");
		if (n < 0 || (size_t)n >= sizeof(r->return_to) ||
		    !return_to_ok(r->return_to))
			r->return_to[0] = '\0';
		return reply_index(r, 401, "", "");
	}
	o = proxy_forward(r, phone, &status);
	wipe(phone, sizeof(phone));
	log_escape(r->ri->local_uri_raw, strlen(r->ri->local_uri_raw), path,
	    sizeof(path));
	if (o != OUT_NONE) {
		r->close = true;
		status = reply_outcome(r, o, "");
	}
	log_info(r->otp, "proxied method=%s path=%s status=%d ip=%s", m, path,
	    status, r->addr);
	return status;
}

/* ---- routing ----------------------------------------------------------- */

struct route {
	const char *path;
	const char *allow;               /* for 405 */
	int (*get)(struct req *);        /* GET and HEAD */
	int (*post)(struct req *);
};

static const struct route routes[] = {
	{ "/", "GET, HEAD", on_index, NULL },
	{ "/request", "POST", NULL, on_request },
	{ "/verify", "POST", NULL, on_verify },
	{ "/resend", "GET, HEAD, POST", on_code_page, on_resend },
	{ "/style.css", "GET, HEAD", on_style, NULL },
	{ "/otp.js", "GET, HEAD", on_script, NULL },
	{ "/favicon.ico", "GET, HEAD", on_favicon, NULL },
	{ "/auth", "GET, HEAD", on_auth, NULL },
	{ "/logout", "GET, HEAD, POST", on_logout_page, on_logout },
	{ "/healthz", "GET, HEAD", on_healthz, NULL },
	{ "/readyz", "GET, HEAD", on_readyz, NULL },
	{ "/metrics", "GET, HEAD", on_metrics, NULL },
};

/* Routes a request below the mount prefix. */
static int
dispatch(struct req *r)
{
	const char *m = r->ri->request_method;
	const char *path = r->path[0] != '\0' ? r->path : "/";

	if (PREFIX(path, "/api/") != NULL)
		return api_dispatch(r);
	for (size_t i = 0; i < countof(routes); i++) {
		const struct route *rt = &routes[i];

		if (strcmp(path, rt->path) != 0)
			continue;
		if (rt->get != NULL && (strcmp(m, "GET") == 0 ||
		    strcmp(m, "HEAD") == 0))
			return rt->get(r);
		if (rt->post != NULL && strcmp(m, "POST") == 0)
			return rt->post(r);
		r->allow = rt->allow;
		return reply_error(r, 405, req_text(r, TX_METHOD), req_text(r,
		    rt->post != NULL ? TX_METHOD_POST_TEXT :
		    TX_METHOD_GET_TEXT));
	}
	if (r->cfg->upstream[0] != '\0')
		return on_proxy(r);
	return reply_error(r, 404, req_text(r, TX_NOT_FOUND), req_text(r,
	    TX_NOT_FOUND_TEXT));
}

/*
 * REDIRECT_HTTP: answers a plain-HTTP request with a 301 to the same path
 * on the TLS port. The host comes from the Host header, checked to be a
 * name or an address so it cannot inject anything into the header.
 */
static int
redirect_https(struct req *r)
{
	const char *host = mg_get_header(r->conn, "Host");
	char name[256], url[OTP_MAX_STR];
	size_t len, n = 0;

	if (host == NULL || *host == '\0')
		host = "localhost";
	len = host[0] == '[' ? strcspn(host, "]") + 1 : strcspn(host, ":");
	if (len >= sizeof(name) || strspn(host, "abcdefghijklmnopqrstuvwxyz"
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-[]:") < len)
		return reply_error(r, 400, req_text(r, TX_BAD_REQUEST),
		    req_text(r, TX_BAD_HOST));
	str_ncopy(name, sizeof(name), host, len);
	snprintf(url, sizeof(url), "https://%s:%d", name, r->otp->https_port);
	n = strlen(url);
	/* The path as it came (not decoded), its escapes kept, anything else
	 * encoded: nothing but URL characters can reach the Location. The
	 * HTTPS side checks its spelling (path_canonical()). */
	if (pct_escape_keep(r->ri->local_uri_raw, "/%", url, sizeof(url),
	    &n) != 0 || (r->ri->query_string != NULL && (esc_none("?", url,
	    sizeof(url), &n) != 0 || pct_escape_keep(r->ri->query_string,
	    "/?&=%+", url, sizeof(url), &n) != 0)))
		return reply_error(r, 414, req_text(r, TX_URI_TOO_LONG), "");
	r->location = url;
	return reply_text(r, 301, "");
}

/*
 * civetweb keeps a keep-alive connection on its worker for as long as
 * requests keep coming, so with more busy clients than THREADS the others
 * would wait forever. A connection that has held its worker for
 * OTP_KEEP_ALIVE_SLICE_MS gets "Connection: close" on its next answer
 * (civetweb patch 0005) if a client waits for a worker (patch 0012), and
 * the worker takes it; if none waits, a new slice begins: a busy client
 * alone (a proxy's pooled connection, a script) keeps its connection
 * instead of reconnecting every slice. Browsers never notice: they are
 * idle long before a slice ends. The start of a connection's slice lives
 * in civetweb's per-connection pointer (reset for each new connection),
 * so nothing is allocated; an embedder that uses that pointer itself must
 * not mount otp_demo.
 */
static void
fair_slice(const struct otp *otp, struct req *r)
{
	uintptr_t now = (uintptr_t)otp->now_ms() | 1;
	uintptr_t since = (uintptr_t)mg_get_user_connection_data(r->conn);

	if (since != 0 && now - since < OTP_KEEP_ALIVE_SLICE_MS)
		return;
	if (since != 0 && mg_waiting_clients(r->conn) > 0)
		r->close = true;
	else
		mg_set_user_connection_data(r->conn, (void *)now);
}

/*
 * Whether a request path is written the one way this server writes its
 * own: "/" and segments of letters, digits and "-._~", without empty, "."
 * or ".." segments, and without percent-escapes (no page needs one). So
 * no route has a second spelling (/%6detrics, //metrics, /a/../metrics,
 * /metrics%00) that a path rule at a proxy in front would miss. civetweb
 * must leave paths undecoded (decode_url=no): otp_mount() warns if not.
 */
static bool
path_canonical(const char *p)
{
	if (p == NULL || *p != '/')
		return false;
	while (*p == '/') {
		size_t n = strspn(++p, "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
		    "abcdefghijklmnopqrstuvwxyz0123456789-._~");

		if ((n == 0 && p[n] == '/') || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		p += n;
	}
	return *p == '\0';
}

/* civetweb's entry point for every request under the prefix. */
static int
on_http(struct mg_connection *conn, void *arg)
{
	struct otp *otp = arg;
	struct req r;
	size_t plen = strlen(otp->prefix);
	int rc;

	memset(&r, 0, sizeof(r));
	r.otp = otp;
	r.conn = conn;
	r.ri = mg_get_request_info(conn);
	r.tls = r.ri->is_ssl != 0;
	r.path = r.ri->local_uri_raw != NULL ? r.ri->local_uri_raw : "/";
	if (strncmp(r.path, otp->prefix, plen) == 0)
		r.path += plen;
	fair_slice(otp, &r);
	r.cfg = cfg_hold(otp); /* this request's config, whatever SIGHUP does */
	if (!r.tls && otp->https_port > 0) {
		rc = redirect_https(&r);
	} else if (!path_canonical(r.ri->local_uri_raw) &&
	    /* Only our own paths have one spelling; the upstream's are
	     * its business, and reach it for a verified session only. */
	    r.cfg->upstream[0] == '\0') {
		client_address(&r);
		r.close = true;
		rc = reply_error(&r, 400, req_text(&r, TX_BAD_REQUEST),
		    req_text(&r, TX_NOT_CANONICAL));
	} else {
		client_address(&r);
		session_read(&r);
		rc = dispatch(&r);
	}
	cfg_drop(r.cfg);
	return rc;
}

/* ---- embedding API ----------------------------------------------------- */

/* One round of the sweeper: expired codes, revoked.state when a session
 * was revoked, then limits.state when its interval has passed. Files are
 * written with no lock held. */
static void
sweeper_run(struct otp *otp)
{
	const struct config *c = cfg_hold(otp);
	int64_t now = otp->now_ms();

	store_sweep(&otp->store, now, c->code_ttl * 1000);
#ifdef WITH_REDIS
	if (!store_is_memory(otp))
		redis_sweep(otp, c);
#endif
	hooks_drops(otp);
	if (now >= otp->revoked_retry_ms && revoked_save(otp,
	    c->state_dir) != 0)
		otp->revoked_retry_ms = now + c->state_save_interval * 1000;
	if (c->state_dir[0] != '\0' &&
	    now - otp->saved_ms >= c->state_save_interval * 1000) {
		limits_save(otp, c->state_dir, number_hold(c));
		otp->saved_ms = now;
	}
	cfg_drop(c);
}

/* Wakes the sweeper now (a logout: revoked.state). */
static void
sweeper_wake(struct otp *otp)
{
	thread_poke(&otp->stop_lock, &otp->stop_cond, NULL);
}

static void *
sweeper_main(void *arg)
{
	struct otp *otp = arg;

	pthread_mutex_lock(&otp->stop_lock);
	while (!otp->stopping) {
		struct timespec ts;

		clock_gettime(CLOCK_MONOTONIC, &ts);
		ts.tv_sec += OTP_SWEEP_MS / 1000;
		pthread_cond_timedwait(&otp->stop_cond, &otp->stop_lock, &ts);
		if (otp->stopping)
			break;
		pthread_mutex_unlock(&otp->stop_lock);
		sweeper_run(otp);
		pthread_mutex_lock(&otp->stop_lock);
	}
	pthread_mutex_unlock(&otp->stop_lock);
	return NULL;
}

/* What a config derives from the instance's keys: API_TOKEN's keyed
 * hash, made once here so a request never hashes the token itself. */
static void
otp_config_keys(const struct otp *otp, struct config *c)
{
	secret_mac(otp, c->api_token, strlen(c->api_token), c->api_token_mac);
}

/* Seeds the DRBG and draws the keys. 0 or -1. */
static int
otp_random_init(struct otp *otp)
{
	static const char pers[] = "otp_demo";

	mbedtls_entropy_init(&otp->entropy);
	mbedtls_ctr_drbg_init(&otp->drbg);
	pthread_mutex_init(&otp->rng_lock, NULL);
	if (mbedtls_ctr_drbg_seed(&otp->drbg, mbedtls_entropy_func,
	    &otp->entropy, (const unsigned char *)pers, sizeof(pers) - 1) != 0)
		return -1;
	otp->rng = rng_drbg;
	otp->rng_ctx = otp;
	if (otp->rng(otp, otp->code_key, sizeof(otp->code_key)) != 0 ||
	    otp->rng(otp, otp->cmp_key, sizeof(otp->cmp_key)) != 0 ||
	    otp->rng(otp, otp->limits.key, sizeof(otp->limits.key)) != 0)
		return -1;
	hmac_key_init(&otp->code_hk, otp->code_key);
	hmac_key_init(&otp->cmp_hk, otp->cmp_key);
	return 0;
}

/*
 * The keys that must outlive a restart (CSRF tokens, otp_auth cookies)
 * derive from one state key: STATE_DIR/session.key, made on first start
 * with mode 0600, or a random key per process without STATE_DIR.
 */
/*
 * Reads STATE_DIR/session.key into state, or makes it (mode 0600) on
 * first start; without STATE_DIR, draws a key for this process only.
 * 0, or -1 with the reason (and the fix) in err.
 */
static int
state_key(struct otp *otp, uint8_t state[OTP_KEY_LEN], char *err,
          size_t errlen)
{
	const char *dir = otp->cfg->state_dir;
	char path[OTP_MAX_STR + 16];
	size_t n;
	FILE *f;

	if (dir[0] == '\0')
		return otp->rng(otp->rng_ctx, state, OTP_KEY_LEN);
	if (state_dir_check(otp->cfg, err, errlen) != 0)
		return -1;
	snprintf(path, sizeof(path), "%s/session.key", dir);
	if ((f = state_open(path, "session.key", err, errlen)) != NULL) {
		n = fread(state, 1, OTP_KEY_LEN, f);
		n += (size_t)(fgetc(f) != EOF); /* longer than a key? */
		fclose(f);
		if (n == OTP_KEY_LEN)
			return 0;
		snprintf(err, errlen, "%s: not a %d-byte key; remove it to make "
		    "a new one (sessions then end)", path, OTP_KEY_LEN);
		return -1;
	}
	if (errno != ENOENT)
		return -1;
	if (otp->rng(otp->rng_ctx, state, OTP_KEY_LEN) != 0)
		return -1;
	/* otp_demo -t writes nothing: it only checks it could. */
	if (otp->check_only ? access(dir, W_OK) : file_write_atomic(path,
	    (const char *)state, OTP_KEY_LEN, 0600)) {
		snprintf(err, errlen, "%s: cannot create: %s", path,
		    strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * The keys that must outlive a restart (sessions, CSRF tokens, otp_auth
 * cookies, the rate windows' hashes, the API's namespace) derive from one
 * state key (state_key()).
 */
static int
otp_state_keys(struct otp *otp, char *err, size_t errlen)
{
#define DERIVED(label, field) { label, offsetof(struct otp, field), \
	sizeof(((struct otp *)0)->field) }
	static const struct {
		const char *label;
		size_t off, size; /* at most OTP_MAC_LEN */
	} derived[] = {
		DERIVED("csrf", csrf_key), DERIVED("auth", auth_key),
		DERIVED("sid", sid_key), DERIVED("limits", limits.key),
		DERIVED("api", api.sid),
	};
#undef DERIVED
	uint8_t state[OTP_KEY_LEN], mac[OTP_MAC_LEN];

	if (state_key(otp, state, err, errlen) != 0) {
		wipe(state, sizeof(state));
		return -1;
	}
	for (size_t i = 0; i < countof(derived); i++) {
		hmac256(state, derived[i].label, strlen(derived[i].label), mac);
		memcpy((char *)otp + derived[i].off, mac, derived[i].size);
	}
	hmac_key_init(&otp->csrf_hk, otp->csrf_key);
	hmac_key_init(&otp->auth_hk, otp->auth_key);
	hmac_key_init(&otp->sid_hk, otp->sid_key);
	hmac_key_init(&otp->limits.hkey, otp->limits.key);
	/* A shared store checks a code made by another instance: the code
	 * key is the state key's too, not this process's own. */
	if (!store_is_memory(otp)) {
		hmac256(state, "code", 4, mac);
		memcpy(otp->code_key, mac, sizeof(otp->code_key));
		hmac_key_init(&otp->code_hk, otp->code_key);
	}
	otp->api.ns = NS_API;
	wipe(state, sizeof(state));
	wipe(mac, sizeof(mac));
	return 0;
}

/*
 * The store STORE names (a restart key): the memory store, or Redis in a
 * build WITH_REDIS (check_store() refused it otherwise). 0 or -1.
 */
static int
otp_store_pick(struct otp *otp, char *err, size_t errlen)
{
#ifdef WITH_REDIS
	otp->ops = &store_memory;
	if (strcmp(otp->cfg->store, "memory") != 0) {
		if (pthread_key_create(&otp->redis_key, rconn_free) != 0) {
			snprintf(err, errlen, "cannot make a thread key");
			return -1;
		}
		otp->redis_key_made = true;
		otp->ops = &store_redis;
	}
#else
	(void)otp;
	(void)err;
	(void)errlen;
#endif
	return 0;
}

/*
 * Windows each rate-limit table must hold: at most two hours' worth of
 * counted sends are live at once (fixed windows), and wrong codes only
 * come from records those sends made (MAX_ATTEMPTS each). The API's sends
 * are within SMS_PER_HOUR too.
 */
static uint64_t
limits_windows(const struct config *c, enum table t)
{
	uint64_t sends = 2 * (uint64_t)c->sms_per_hour;

	if (t == T_NET_DAY)
		sends = 2 * (uint64_t)c->sms_per_day;
	return t == T_VERIFY ? sends * (uint64_t)c->max_attempts : sends;
}

/* Allocates every table; nothing is allocated per request after this. */
static int
otp_tables_init(struct otp *otp)
{
	struct limits *l = &otp->limits;

	pthread_mutex_init(&l->lock, NULL);
	pthread_mutex_init(&otp->curls.lock, NULL);
	otp->curls.cap = otp->cfg->threads < OTP_MAX_POOL ?
	    (int)otp->cfg->threads : OTP_MAX_POOL;
	if (store_init(&otp->store, (uint32_t)otp->cfg->max_pending) != 0)
		return -1;
	otp->store.hooks = &otp->hooks;
	for (int t = 0; t < T__N; t++)
		if (ratetab_init(&l->tab[t], ratetab_slots(limits_windows(
		    otp->cfg, (enum table)t)), t == T_NET_DAY ? DAY_MS :
		    HOUR_MS) != 0)
			return -1;
	return 0;
}

/* Logs what the instance will do, once, at start. */
static void
log_start(struct otp *otp)
{
	const struct config *c = otp->cfg;
	char sample[OTP_MAX_CODE_LEN + 1];

	c->sender->describe(otp, c);
	/* Would the longest message fit in one SMS? */
	memset(sample, c->alphabet == ALPHABET_HEX ? 'A' : '0',
	    (size_t)c->token_length);
	sample[c->token_length] = '\0';
	for (int i = -1; i < c->nmessages; i++) {
		char text[OTP_MAX_TEXT];
		bool gsm;
		size_t units;

		if (message_fill(c, i < 0 ? c->message : c->messages[i].text,
		    sample, text, sizeof(text)) != 0)
			continue;
		units = sms_units(text, &gsm);
		if (units > (gsm ? 160u : 70u))
			log_warn(otp, "MESSAGE%s%s takes %zu %s, more than one "
			    "SMS (%u): it will be sent as several", i < 0 ? "" :
			    "_", i < 0 ? "" : c->messages[i].lang, units,
			    gsm ? "GSM-7 characters" : "UCS-2 characters",
			    gsm ? 160u : 70u);
	}
	if (strcasecmp(lang_catalog(otp, c, c->lang)->lang, c->lang) != 0)
		log_warn(otp, "LANG '%s' is not built in: the pages WWW_DIR "
		    "does not have are shown in %s", c->lang,
		    lang_catalog(otp, c, c->lang)->lang);
	if (c->state_dir[0] == '\0')
		log_warn(otp, "STATE_DIR is not set: rate limits and caps reset "
		    "on restart (a crash loop or a reboot gives a fresh day)");
#ifdef WITH_REDIS
	if (!store_is_memory(otp))
		log_info(otp, "store: %s, every command within %ld ms",
		    store_name(otp), c->store_timeout);
#endif
	if (c->users_file[0] == '\0')
		log_warn(otp, "USERS_FILE is not set: /auth admits any phone in "
		    "the allowed countries");
	else
		log_info(otp, "USERS_FILE %s: %zu listed", c->users_file,
		    c->nusers);
	for (int t = 0; t < T__N; t++)
		if (limits_windows(c, (enum table)t) * OTP_RATE_LOAD >
		    OTP_RATE_MAX_SLOTS)
			log_warn(otp, "SMS_PER_HOUR %ld needs rate tables larger "
			    "than %u slots: under a flood of new clients some "
			    "may be refused (503) before the caps are reached",
			    c->sms_per_hour, OTP_RATE_MAX_SLOTS);
	if (code_strength_digits(c) < 6.0)
		log_warn(otp, "weak codes: %ld %s characters are fewer than "
		    "NIST's minimum of 10^6 values (about 20 bits); raise "
		    "TOKEN_LENGTH", c->token_length,
		    c->alphabet == ALPHABET_HEX ? "hex" : "digit");
}

/*
 * Warns once if a file that holds a secret can be read by others than
 * this user (its group, when the group is not ours): what holds is
 * named, never shown.
 */
static void
secret_file_warn(struct otp *otp, const char *path, const char *what)
{
	struct stat sb;

	if (path == NULL || path[0] == '\0' || stat(path, &sb) != 0)
		return;
	if ((sb.st_mode & S_IROTH) || ((sb.st_mode & S_IRGRP) &&
	    sb.st_gid != getegid()))
		log_warn(otp, "%s is readable by %s (mode %03o) and holds %s: "
		    "chmod 600 %s (or 640 with the service's group)", path,
		    sb.st_mode & S_IROTH ? "everyone" : "its group",
		    (unsigned)(sb.st_mode & 0777), what, path);
}

/* Whether the config file sets key (to anything): a quick scan. */
static bool
config_file_sets(const char *path, const char *key)
{
	char line[OTP_MAX_LINE];
	size_t klen = strlen(key);
	bool found = false;
	FILE *f = fopen(path, "r");

	while (f != NULL && !found && fgets(line, sizeof(line), f) != NULL) {
		const char *p = line + strspn(line, " \t");

		found = strncmp(p, key, klen) == 0 && (p[klen] == '=' ||
		    p[klen] == ' ' || p[klen] == '\t');
	}
	if (f != NULL)
		fclose(f);
	return found;
}

/* The files that hold secrets, checked by secret_file_warn(). */
static void
config_warn_secrets(struct otp *otp, const char *path)
{
	const struct config *c = otp->cfg;

	bool key = c->api_key[0] != '\0' && strcmp(c->api_key,
	    "YOUR_API_KEY") != 0 && c->api_key_file[0] == '\0';

	if (path != NULL && ((key && config_file_sets(path, "API_KEY")) ||
	    (c->api_token[0] != '\0' && config_file_sets(path, "API_TOKEN")) ||
	    (c->webhook_secret[0] != '\0' && config_file_sets(path,
	    "WEBHOOK_SECRET"))))
		secret_file_warn(otp, path,
		    "API_KEY, API_TOKEN or WEBHOOK_SECRET");
	secret_file_warn(otp, c->api_key_file, "the API key");
	secret_file_warn(otp, c->webhook_secret_file, "the webhook secret");
	if (listen_has_tls(c->listen))
		secret_file_warn(otp, c->cert_file, "the TLS private key");
}

/* The locks otp_destroy() takes down, made before anything can fail. */
static void
otp_locks_init(struct otp *otp)
{
	pthread_condattr_t ca;

	pthread_mutex_init(&otp->cfg_swap, NULL);
	pthread_mutex_init(&otp->stop_lock, NULL);
	pthread_mutex_init(&otp->revoked.lock, NULL);
	pthread_mutex_init(&otp->hooks.lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&otp->stop_cond, &ca);
	pthread_cond_init(&otp->hooks.cond, &ca);
	pthread_condattr_destroy(&ca);
}

/* Starts a thread of ours (the sweeper, the webhooks'), with no
 * signals: they are the host's to handle (our main waits for them in
 * sigwait). Whether it started. */
static bool
thread_start(struct otp *otp, pthread_t *t, void *(*fn)(void *))
{
	sigset_t all, old;
	int rc;

	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	rc = pthread_create(t, NULL, fn, otp);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	return rc == 0;
}

/*
 * Makes an instance. check_only (otp_demo -t) checks everything but writes
 * nothing: it does not create STATE_DIR/session.key, which a check run as
 * root would leave unreadable for the daemon's own user.
 */
static struct otp *
otp_new(const char *config_path, bool check_only, char *err, size_t errlen)
{
	struct otp *otp = calloc(1, sizeof(*otp));
	struct config *cfg;

	if (otp == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	otp->check_only = check_only;
	otp->now_ms = clock_monotonic_ms;
	otp->wall_ms = clock_wall_ms;
	otp->halt[0] = otp->halt[1] = -1;
	otp_locks_init(otp);
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    pipe2(otp->halt, O_CLOEXEC | O_NONBLOCK) != 0) {
		free(cfg);
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	if (config_load(cfg, config_path, err, errlen) != 0) {
		cfg_swap(otp, cfg);
		goto fail;
	}
	cfg_swap(otp, cfg);
	otp->use_syslog = strcmp(cfg->log, "syslog") == 0;
	if (otp->use_syslog)
		openlog("otp_demo", LOG_PID | LOG_NDELAY, LOG_DAEMON);
	else if (logw_start(otp) != 0) {
		snprintf(err, errlen, "cannot start the log writer");
		goto fail;
	}
	if (otp_random_init(otp) != 0) {
		snprintf(err, errlen, "cannot seed the random generator");
		goto fail;
	}
	otp_config_keys(otp, cfg);
	if (otp_store_pick(otp, err, errlen) != 0 ||
	    otp_state_keys(otp, err, errlen) != 0)
		goto fail;
	if (www_builtin(otp) != 0) {
		snprintf(err, errlen, "cannot unpack the built-in pages");
		goto fail;
	}
	if (lang_load(otp, err, errlen) != 0 || www_load(otp, err, errlen) != 0)
		goto fail;
	if (otp_tables_init(otp) != 0) {
		snprintf(err, errlen, "cannot allocate tables for MAX_PENDING=%ld",
		    cfg->max_pending);
		goto fail;
	}
	if (state_load(otp, cfg->state_dir, "limits.state", STATE_MAGIC " ",
	    limits_load_line, "with fresh caps", err, errlen) != 0 ||
	    state_load(otp, cfg->state_dir, "revoked.state", REVOKED_MAGIC
	    "\n", revoked_load_line, "(the sessions it ended become valid "
	    "again until they expire)", err, errlen) != 0)
		goto fail;
	otp->saved_ms = otp->now_ms();
	otp->hooks.now_ms = otp->now_ms;
	otp->hooks.wall_ms = otp->wall_ms;
	if (!(otp->sweeper_started = thread_start(otp, &otp->sweeper,
	    sweeper_main)) || !(otp->hooks.started = thread_start(otp,
	    &otp->hooks.thread, hooks_main))) {
		snprintf(err, errlen, "cannot start a thread");
		goto fail;
	}
	config_warn_secrets(otp, config_path);
	log_start(otp);
	return otp;
fail:
	otp_destroy(otp);
	return NULL;
}

/*
 * An embedding program gets the same protection as otp_demo itself: no
 * core dumps (and no ptrace by other users), since a dump would hold
 * codes and keys. It is a property of the whole process, and README says
 * so.
 */
struct otp *
otp_create(const char *config_path, char *err, size_t errlen)
{
	prctl(PR_SET_DUMPABLE, 0);
	return otp_new(config_path, false, err, errlen);
}

int
otp_mount(struct otp *otp, struct mg_context *ctx, const char *prefix)
{
	if (otp == NULL || ctx == NULL || prefix == NULL)
		return -1;
	if (str_copy(otp->prefix, sizeof(otp->prefix), prefix) != 0)
		return -1;
	/* "/2fa/" and "/2fa" are the same mount point. */
	if (strlen(otp->prefix) > 0 &&
	    otp->prefix[strlen(otp->prefix) - 1] == '/')
		otp->prefix[strlen(otp->prefix) - 1] = '\0';
	mg_set_request_handler(ctx, otp->prefix[0] ? otp->prefix : "/",
	    on_http, otp);
	{
		const char *d = mg_get_option(ctx, "decode_url");

		if (d != NULL && strcmp(d, "no") != 0)
			log_warn(otp, "%s: civetweb's decode_url is '%s': set it to "
			    "'no' so that %s/... pages each have one spelling "
			    "(percent-escapes would reach them decoded)", __func__,
			    d, otp->prefix);
	}
	return 0;
}

/*
 * Keys that only take effect at start: a reload keeps their old values
 * and says so.
 */
static const char *const restart_keys[] = {
	"LISTEN", "THREADS", "MAX_PENDING", "CERT_FILE", "STATE_DIR", "LOG",
	"WWW_DIR", "STORE",
#ifdef WITH_REDIS
	"STORE_PASSWORD", "STORE_PASSWORD_FILE", "STORE_TIMEOUT",
#endif
};

int
otp_reload(struct otp *otp, const char *config_path, char *err, size_t errlen)
{
	struct config *next = malloc(sizeof(*next));
	const struct config *cur;

	if (next == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (config_load(next, config_path, err, errlen) != 0) {
		wipe(next, sizeof(*next));
		free(next);
		return -1;
	}
	otp_config_keys(otp, next);
	cur = cfg_hold(otp);
	for (size_t i = 0; i < countof(restart_keys);
	    i++) {
		const struct key *k = config_find(restart_keys[i], NULL);
		const char *now = (const char *)cur + k->off;
		char *want = (char *)next + k->off;

		if (memcmp(now, want, k->size) != 0) {
			log_warn(otp, "reload: %s changed; it takes effect "
			    "after a restart", k->name);
			memcpy(want, now, k->size);
		}
	}
	cfg_drop(cur);
	/* LISTEN waits for a restart (above): the one in use, not the
	 * file's, decides whether the console would be exposed. */
	if (console_exposed(next, config_path != NULL ? config_path :
	    "environment", err, errlen) != 0) {
		wipe(next, sizeof(*next));
		free(next);
		return -1;
	}
	cfg_swap(otp, next);
	log_info(otp, "reload: configuration applied");
	return 0;
}

void
otp_on_verified(struct otp *otp, otp_verified_fn fn, void *arg)
{
	otp->on_verified = fn;
	otp->on_verified_arg = arg;
}

/* Makes the halt pipe readable for good: every wait on it ends. */
void
otp_stop(struct otp *otp)
{
	if (otp != NULL && otp->halt[1] >= 0 &&
	    write(otp->halt[1], "", 1) < 0 && errno != EAGAIN)
		log_err(otp, "%s: %s", __func__, strerror(errno));
}

void
otp_destroy(struct otp *otp)
{
	if (otp == NULL)
		return;
	if (otp->sweeper_started) {
		thread_poke(&otp->stop_lock, &otp->stop_cond, &otp->stopping);
		pthread_join(otp->sweeper, NULL);
	}
	if (otp->hooks.started) {
		/* The halt pipe cuts a try short: a slow receiver does not
		 * hold the exit. Events still queued are lost. */
		thread_poke(&otp->hooks.lock, &otp->hooks.cond,
		    &otp->hooks.stopping);
		otp_stop(otp);
		pthread_join(otp->hooks.thread, NULL);
	}
	/* Nothing serves any more (mg_stop came first): the caps go to
	 * STATE_DIR as they are. */
	if (otp->cfg != NULL) {
		limits_save(otp, otp->cfg->state_dir, number_hold(otp->cfg));
		/* Not after a failed start: revoked.state may be what
		 * failed, and is kept as it is. */
		if (otp->sweeper_started)
			revoked_save(otp, otp->cfg->state_dir);
	}
	while (otp->curls.nidle > 0) {
		struct pooled *p = &otp->curls.idle[--otp->curls.nidle];

		pooled_free(p);
	}
	store_free(&otp->store);
#ifdef WITH_REDIS
	/* The workers have ended (mg_stop), and their connections with
	 * them (rconn_free()); the key's destructor never runs for this
	 * thread, whose connection (an embedder's or the model's calls) is
	 * closed here. */
	if (otp->redis_key_made) {
		void *mine = pthread_getspecific(otp->redis_key);

		if (mine != NULL)
			rconn_free(mine);
		pthread_setspecific(otp->redis_key, NULL);
		pthread_key_delete(otp->redis_key);
	}
#endif
	for (int t = 0; t < T__N; t++)
		free(otp->limits.tab[t].w);
	mbedtls_ctr_drbg_free(&otp->drbg);
	mbedtls_entropy_free(&otp->entropy);
	cfg_drop(otp->cfg);
	pthread_mutex_destroy(&otp->cfg_swap);
	for (int fd = 0; fd < 2; fd++)
		if (otp->halt[fd] >= 0)
			close(otp->halt[fd]);
	for (int i = 0; i < otp->npages; i++)
		free((void *)otp->pages[i].file.data);
	free(otp->pages);
	free(otp->lang_files);
	free(otp->lang_text);
	free(otp->unpacked);
	logw_stop(otp); /* last: the lines above are written too */
	wipe(otp, sizeof(*otp));
	free(otp);
}

const char *
otp_version(void)
{
	return OTP_VERSION;
}

/* ---- server certificate ------------------------------------------------ */
/*
 * TLS listeners (a LISTEN entry ending in 's') serve CERT_FILE: PEM private
 * key and certificate chain in one file. If it does not exist, a
 * self-signed EC P-256 certificate is made with mbedTLS on first start, as
 * OpenWrt's uhttpd does with px5g, so a device needs no openssl binary.
 */

/* True if any comma-separated LISTEN entry is a TLS port ("443s"). */
static bool
listen_has_tls(const char *listen)
{
	const char *item;
	size_t len;

	while (list_next(&listen, ',', &item, &len))
		if (len > 0 && item[len - 1] == 's')
			return true;
	return false;
}

/*
 * True if every LISTEN entry is a loopback address: 127.0.0.0/8, [::1] or
 * localhost. A bare port ("5000", "+5000") is every interface, and what
 * is not read as an address counts as reachable from outside.
 */
static bool
listen_loopback(const char *listen)
{
	static const uint8_t lo6[16] = { [15] = 1 };
	const char *item, *colon;
	uint8_t a[17];
	size_t len;

	while (list_next(&listen, ',', &item, &len)) {
		if ((colon = memrchr(item, ':', len)) == NULL)
			return false;
		len = (size_t)(colon - item);
		if (len > 2 && item[0] == '[' && item[len - 1] == ']')
			item++, len -= 2;
		if (len == 9 && strncasecmp(item, "localhost", 9) == 0)
			continue;
		if (!addr_parse(item, len, a) || (a[0] == 4 ? a[1] != 127 :
		    memcmp(a + 1, lo6, 16) != 0))
			return false;
	}
	return true;
}

/*
 * Makes a key and a self-signed certificate for CN=otp_demo, valid from
 * yesterday for ten years, as PEM (key first) into out. 0 or -1.
 */
static int
cert_generate(struct otp *otp, char *out, size_t outlen)
{
	mbedtls_x509write_cert crt;
	mbedtls_pk_context key;
	uint8_t serial[16];
	char from[16], until[16];
	time_t now = time(NULL) - 86400;
	struct tm tm;
	size_t n;
	int rc = -1;

	mbedtls_pk_init(&key);
	mbedtls_x509write_crt_init(&crt);
	gmtime_r(&now, &tm);
	strftime(from, sizeof(from), "%Y%m%d%H%M%S", &tm);
	tm.tm_year += 10;
	strftime(until, sizeof(until), "%Y%m%d%H%M%S", &tm);
	if (otp->rng(otp->rng_ctx, serial, sizeof(serial)) != 0)
		goto out;
	serial[0] &= 0x7f; /* a positive serial number */
	if (mbedtls_pk_setup(&key, mbedtls_pk_info_from_type(MBEDTLS_PK_ECKEY)) ||
	    mbedtls_ecp_gen_key(MBEDTLS_ECP_DP_SECP256R1, mbedtls_pk_ec(key),
	    otp->rng, otp->rng_ctx) ||
	    mbedtls_pk_write_key_pem(&key, (unsigned char *)out, outlen))
		goto out;
	n = strlen(out);
	mbedtls_x509write_crt_set_version(&crt, MBEDTLS_X509_CRT_VERSION_3);
	mbedtls_x509write_crt_set_md_alg(&crt, MBEDTLS_MD_SHA256);
	mbedtls_x509write_crt_set_subject_key(&crt, &key);
	mbedtls_x509write_crt_set_issuer_key(&crt, &key);
#if MBEDTLS_VERSION_NUMBER >= 0x03040000
	if (mbedtls_x509write_crt_set_serial_raw(&crt, serial, sizeof(serial)))
		goto out;
#else
	{
		mbedtls_mpi mpi;
		int bad;

		mbedtls_mpi_init(&mpi);
		bad = mbedtls_mpi_read_binary(&mpi, serial, sizeof(serial)) ||
		    mbedtls_x509write_crt_set_serial(&crt, &mpi);
		mbedtls_mpi_free(&mpi);
		if (bad)
			goto out;
	}
#endif
	if (mbedtls_x509write_crt_set_subject_name(&crt, "CN=otp_demo") ||
	    mbedtls_x509write_crt_set_issuer_name(&crt, "CN=otp_demo") ||
	    mbedtls_x509write_crt_set_validity(&crt, from, until) ||
	    mbedtls_x509write_crt_set_basic_constraints(&crt, 0, -1) ||
	    mbedtls_x509write_crt_set_key_usage(&crt,
	    MBEDTLS_X509_KU_DIGITAL_SIGNATURE) ||
	    mbedtls_x509write_crt_pem(&crt, (unsigned char *)out + n, outlen - n,
	    otp->rng, otp->rng_ctx))
		goto out;
	rc = 0;
out:
	mbedtls_x509write_crt_free(&crt);
	mbedtls_pk_free(&key);
	return rc;
}

/* Logs the SHA-256 fingerprint of the first certificate in path. */
static int
cert_log_fingerprint(struct otp *otp, const char *path)
{
	mbedtls_x509_crt crt;
	uint8_t sum[32];
	char hex[3 * sizeof(sum)];
	int rc = -1;

	mbedtls_x509_crt_init(&crt);
	if (mbedtls_x509_crt_parse_file(&crt, path) == 0 &&
	    mbedtls_md(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256), crt.raw.p,
	    crt.raw.len, sum) == 0) {
		for (size_t i = 0; i < sizeof(sum); i++)
			snprintf(hex + 3 * i, 4, "%02X%s", sum[i],
			    i + 1 < sizeof(sum) ? ":" : "");
		log_info(otp, "certificate %s sha256=%s", path, hex);
		rc = 0;
	}
	mbedtls_x509_crt_free(&crt);
	return rc;
}

int
otp_cert_ensure(struct otp *otp)
{
	const char *path = otp->cfg->cert_file;
	char pem[4096];
	int rc = -1;

	if (!listen_has_tls(otp->cfg->listen))
		return 0;
	if (access(path, F_OK) != 0) {
		if (cert_generate(otp, pem, sizeof(pem)) != 0) {
			log_err(otp, "%s: cannot generate a certificate", __func__);
			goto out;
		}
		if (file_write_atomic(path, pem, strlen(pem), 0600) != 0) {
			log_err(otp, "%s: CERT_FILE %s: cannot write: %s",
			    __func__, path, strerror(errno));
			goto out;
		}
		log_info(otp, "generated a self-signed certificate in %s", path);
	}
	if (cert_log_fingerprint(otp, path) != 0) {
		log_err(otp, "%s: %s holds no readable certificate", __func__,
		    path);
		goto out;
	}
	rc = 0;
out:
	wipe(pem, sizeof(pem));
	return rc;
}

/* ---- main -------------------------------------------------------------- */

#ifndef OTP_NO_MAIN

/* otp_notices[]: the licences of this binary and of all it bundles, made
 * at build time by tools/notices.sh from the sources' own licence files;
 * packed by tools/lz.py (OTP_NOTICES_LEN, unpacked) in the static builds. */
#include "notices.h"

/* Prints the notices; 0, or 1 if they cannot be unpacked. */
static int
notices_print(void)
{
#ifdef OTP_NOTICES_LEN
	char *text = malloc(OTP_NOTICES_LEN);
	int rc = text != NULL && inflate_raw(otp_notices, sizeof(otp_notices),
	    text, OTP_NOTICES_LEN) == OTP_NOTICES_LEN ? 0 : 1;

	if (rc == 0)
		fwrite(text, 1, OTP_NOTICES_LEN, stdout);
	free(text);
	return rc;
#else
	fwrite(otp_notices, 1, sizeof(otp_notices) - 1, stdout);
	return 0;
#endif
}

static void
usage(FILE *f)
{
	fprintf(f,
	    "usage: otp_demo [-t] [-c config.cfg]\n"
	    "  -c FILE     read the config from FILE (default ./config.cfg)\n"
	    "  -t          check the config, print \"configuration OK\", exit\n"
	    "  --defaults  print every config key with its default, as a\n"
	    "              config file would set it\n"
	    "  --help      this text\n"
	    "  --licenses  print the licences of otp_demo and of all it bundles\n"
	    "  --version   print the version\n"
	    "Every config key can be set from the environment as OTP_<KEY>.\n");
}

/* Prints KEY=default for every key, in the file's syntax (strings quoted,
 * escaped as config_value() reads them back). */
static void
config_print_defaults(FILE *f)
{
	for (size_t i = 0; i < NKEYS; i++) {
		const struct key *k = &config_keys[i];

		if (k->type != K_STR) {
			fprintf(f, "%s=%s\n", k->name, k->def);
			continue;
		}
		fprintf(f, "%s='", k->name);
		for (const char *p = k->def; *p != '\0'; p++) {
			if (*p == '\'' || *p == '\\')
				fputc('\\', f);
			fputc(*p, f);
		}
		fputs("'\n", f);
	}
}

static int
otp_log_message(const struct mg_connection *conn, const char *message)
{
	const struct mg_context *ctx = mg_get_context(conn);
	struct otp *otp = ctx != NULL ? mg_get_user_data(ctx) : NULL;
	char esc[512];

	log_escape(message, strlen(message), esc, sizeof(esc));
	log_line(otp, "warn", "civetweb: %s", esc);
	return 1;
}

#define BASE_HEADERS                                                          \
	"Cache-Control: no-store\r\n"                                          \
	"Content-Security-Policy: " CSP "\r\n"                                 \
	"X-Content-Type-Options: nosniff\r\n"                                  \
	"Referrer-Policy: no-referrer"

#define OTP_STR_(x) #x
#define OTP_STR(x) OTP_STR_(x)

/* Builds civetweb's options from the config; only ones it knows. */
static int
server_options(const struct config *c, const char **opts, size_t max,
               char threads[16])
{
	const char *want[] = {
		"listening_ports", c->listen,
		"num_threads", threads,
		"tcp_nodelay", "1",
		"enable_keep_alive", "yes",
		"keep_alive_timeout_ms", OTP_STR(OTP_KEEP_ALIVE_MS),
		"request_timeout_ms", OTP_STR(OTP_REQUEST_TIMEOUT_MS),
		"enable_directory_listing", "no",
		"decode_url", "no", /* see path_canonical() */
		"max_request_size", OTP_STR(OTP_MAX_REQUEST_HEAD),
		/* civetweb patch 0006: a chunk larger than a body may be is
		 * refused (400) when it is read. 0008: the proxy that carries
		 * every client is never the one that makes way in a full
		 * waiting room. */
		"max_chunk_size", OTP_STR(OTP_MAX_BODY),
		"waiting_room_exempt", c->trusted_proxy,
		/* For civetweb's own answers (a malformed request line...);
		 * ours come from reply(). HSTS is ignored over plain HTTP. */
		"additional_header", listen_has_tls(c->listen) ?
		    BASE_HEADERS "\r\nStrict-Transport-Security: max-age=31536000"
		    : BASE_HEADERS,
		"ssl_certificate", listen_has_tls(c->listen) ? c->cert_file : "",
	};
	const struct mg_option *valid = mg_get_valid_options();
	size_t n = 0;

	snprintf(threads, 16, "%ld", c->threads);
	for (size_t i = 0; i < countof(want); i += 2) {
		bool known = false;

		if (want[i + 1][0] == '\0')
			continue;
		for (const struct mg_option *o = valid; o->name != NULL; o++)
			if (strcmp(o->name, want[i]) == 0)
				known = true;
		if (!known || n + 3 > max)
			continue;
		opts[n++] = want[i];
		opts[n++] = want[i + 1];
	}
	opts[n] = NULL;
	return 0;
}

/* The first bound TLS port, or 0. */
static int
first_tls_port(struct mg_context *ctx)
{
	struct mg_server_port ports[16];
	int n = mg_get_server_ports(ctx, 16, ports);

	for (int i = 0; i < n; i++)
		if (ports[i].is_ssl)
			return ports[i].port;
	return 0;
}

/* Logs each bound port with the host part of its LISTEN entry. */
static void
log_ports(struct otp *otp, struct mg_context *ctx)
{
	struct mg_server_port ports[16];
	const char *p = otp->cfg->listen;
	int n = mg_get_server_ports(ctx, 16, ports);

	for (int i = 0; i < n; i++) {
		char host[64] = "0.0.0.0";
		const char *item = p, *colon;
		size_t len = 0;

		list_next(&p, ',', &item, &len);
		colon = memrchr(item, ':', len);
		if (colon != NULL && colon > item)
			str_ncopy(host, sizeof(host), item, (size_t)(colon - item));
		log_info(otp, "listening on %s://%s:%d",
		    ports[i].is_ssl ? "https" : "http", host, ports[i].port);
	}
}

/*
 * Reads the command line into *path and *test_only. Returns -1 to go on,
 * or the exit status (0 after --help or --version, 64 for bad usage).
 */
static int
main_args(int argc, char **argv, const char **path, bool *test_only)
{
	bool explicit_path = false;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else if (strcmp(argv[i], "--version") == 0 ||
		    strcmp(argv[i], "-V") == 0) {
			printf("otp_demo %s\n", OTP_VERSION);
			return 0;
		} else if (strcmp(argv[i], "--defaults") == 0) {
			config_print_defaults(stdout);
			return 0;
		} else if (strcmp(argv[i], "--licenses") == 0) {
			return notices_print();
		} else if (strcmp(argv[i], "-t") == 0) {
			*test_only = true;
		} else if (strcmp(argv[i], "-c") == 0 && i + 1 < argc) {
			*path = argv[++i];
			explicit_path = true;
		} else {
			fprintf(stderr, "otp_demo: unknown argument %s\n", argv[i]);
			usage(stderr);
			return EXIT_USAGE;
		}
	}
	/* Without -c, a missing ./config.cfg means defaults and OTP_* only. */
	if (!explicit_path && access(*path, F_OK) != 0)
		*path = NULL;
	return -1;
}

/*
 * Serves until SIGINT or SIGTERM; SIGHUP reloads path (a bad file is
 * logged and the old config stays). Returns the exit status.
 */
static int
main_serve(struct otp *otp, const char *path)
{
	char err[OTP_MAX_STR + 128], threads[16];
	const char *opts[64];
	struct mg_callbacks cb;
	struct mg_context *ctx;
	sigset_t sigs;
	int sig = 0;

	/* Workers inherit this mask; only main takes the signals. */
	sigemptyset(&sigs);
	sigaddset(&sigs, SIGINT);
	sigaddset(&sigs, SIGTERM);
	sigaddset(&sigs, SIGHUP);
	pthread_sigmask(SIG_BLOCK, &sigs, NULL);
	signal(SIGPIPE, SIG_IGN);

	mg_init_library(MG_FEATURES_TLS);
	memset(&cb, 0, sizeof(cb));
	cb.log_message = otp_log_message;
	server_options(otp->cfg, opts, countof(opts), threads);
	if ((ctx = mg_start(&cb, otp, opts)) == NULL) {
		log_err(otp, "%s: cannot start the server on %s (see above)",
		    __func__, otp->cfg->listen);
		mg_exit_library();
		return 1;
	}
	otp_mount(otp, ctx, "");
	log_ports(otp, ctx);
	if (otp->cfg->redirect_http)
		otp->https_port = first_tls_port(ctx);

	while (sigwait(&sigs, &sig) == 0 && sig == SIGHUP)
		if (otp_reload(otp, path, err, sizeof(err)) != 0)
			log_err(otp, "reload: %s; keeping the old configuration",
			    err);
	log_info(otp, "signal %d: stopping", sig);
	otp_stop(otp); /* sends in flight end now, */
	mg_stop(ctx);  /* so in-flight requests finish at once */
	mg_exit_library();
	return 0;
}

int
main(int argc, char **argv)
{
	const char *path = "config.cfg";
	char err[OTP_MAX_STR + 128];
	bool test_only = false;
	struct otp *otp;
	int rc;

	if ((rc = main_args(argc, argv, &path, &test_only)) >= 0)
		return rc;
	prctl(PR_SET_DUMPABLE, 0); /* no core dumps: they would hold codes */
#if MBEDTLS_VERSION_MAJOR >= 3
	if (psa_crypto_init() != PSA_SUCCESS) {
		fprintf(stderr, "otp_demo: psa_crypto_init failed\n");
		return 1;
	}
#endif
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != 0) {
		fprintf(stderr, "otp_demo: curl_global_init failed\n");
		return 1;
	}
	if ((otp = otp_new(path, test_only, err, sizeof(err))) == NULL) {
		fprintf(stderr, "%s\n", err);
		return EXIT_CONFIG;
	}
	if (test_only) {
		printf("configuration OK\n");
		rc = 0;
	} else if (otp_cert_ensure(otp) != 0) {
		rc = EXIT_CONFIG; /* CERT_FILE: a path the config names */
	} else {
		rc = main_serve(otp, path);
	}
	otp_destroy(otp);
	curl_global_cleanup();
	return rc;
}

#endif /* OTP_NO_MAIN */

/* ---- utilities --------------------------------------------------------- */

/*
 * One line on stderr: "2026-01-02T03:04:05Z level message". The message
 * must already have user-supplied parts escaped (log_escape). The line is
 * formatted here, by the caller's thread, and then queued for the log
 * writer (logw_put()); before the writer starts and after it stops (and
 * with otp NULL) it is written here, at once.
 */
static void
log_line(const struct otp *otp, const char *level, const char *fmt, ...)
{
	/* The stamp of this second, formatted once a second per thread. */
	static _Thread_local char stamp[24];
	static _Thread_local time_t stamp_of = -1;
	char line[OTP_LOG_LINE];
	time_t t = time(NULL);
	va_list ap;
	int n;

	if (otp != NULL && otp->use_syslog) {
		int prio = level[0] == 'e' ? LOG_ERR : level[0] == 'w' ?
		    LOG_WARNING : level[0] == 'd' ? LOG_DEBUG : LOG_INFO;

		va_start(ap, fmt);
		vsnprintf(line, sizeof(line), fmt, ap);
		va_end(ap);
		syslog(prio, "%s", line);
		return;
	}
	if (t != stamp_of) {
		time_rfc3339(t, stamp);
		stamp_of = t;
	}
	/* "stamp level ": both short and ours, copied, not formatted. */
	n = (int)strlen(stamp);
	memcpy(line, stamp, (size_t)n);
	line[n++] = ' ';
	memcpy(line + n, level, strlen(level));
	n += (int)strlen(level);
	line[n++] = ' ';
	va_start(ap, fmt);
	if (n > 0 && (size_t)n < sizeof(line))
		vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
	va_end(ap);
	n = (int)strlen(line);
	if ((size_t)n + 1 >= sizeof(line))
		n = (int)sizeof(line) - 2;
	line[n++] = '\n';
	if (otp == NULL || otp->logw == NULL ||
	    !logw_put(otp->logw, line, (size_t)n))
		write_all(STDERR_FILENO, line, (size_t)n);
}

/*
 * Writes len bytes to fd, all of them unless it fails. One write(2)
 * per call as a rule, so that whole lines (a line, or the log writer's
 * batch of whole lines) never interleave with another thread's.
 */
static void
write_all(int fd, const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t k = write(fd, buf, len);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return; /* nowhere to log that the log failed */
		buf += k;
		len -= (size_t)k;
	}
}

/*
 * Appends a line (n bytes, at most OTP_LOG_LINE) for the writer, and
 * wakes it if it is idle (or the buffer is half full): while it gathers
 * or writes, lines go out together with its next write(2). The lock is
 * held for a memcpy.
 * false if the writer has stopped: the caller writes the line itself.
 *
 * A full buffer makes the caller wait for room, not drop the line nor
 * write it past the queue: that would put it ahead of lines queued
 * before it (a request's two lines in the wrong order), and a full
 * buffer means stderr is not keeping up, so a write would wait too.
 */
static bool
logw_put(struct log_writer *w, const char *line, size_t n)
{
	bool queued, wake = false;

	pthread_mutex_lock(&w->lock);
	while (w->running && w->len + n > sizeof(w->buf[0])) {
		pthread_cond_signal(&w->wake); /* cuts its gathering short */
		pthread_cond_wait(&w->room, &w->lock);
	}
	if ((queued = w->running)) {
		size_t half = sizeof(w->buf[0]) / 2;

		wake = w->idle || (w->len < half && w->len + n >= half);
		memcpy(w->buf[w->fill] + w->len, line, n);
		w->len += n;
		w->idle = false;
	}
	pthread_mutex_unlock(&w->lock);
	/* After the unlock: woken under it, the writer would only sleep
	 * again on the lock. An idle writer waits for this; a gathering
	 * one's wait is cut short by it. */
	if (wake)
		pthread_cond_signal(&w->wake);
	return queued;
}

/*
 * The log writer's pause before a write (w->lock held): us microseconds
 * for more lines to come, cut short by a stop or a half-full buffer.
 * Without it, a writer as fast as the workers writes a line or two per
 * write(2), and each line also costs a wake-up: more than the write the
 * workers used to make themselves (measured: /request 29 -> 35 us of
 * CPU). A write costs about as much for one line as for a hundred: the
 * writer's own CPU under /request load was 0.45 us a request with 1 ms
 * pauses, 0.15 with 10 ms. So a line that wakes an idle writer waits
 * OTP_LOG_GATHER_US, and while lines keep coming they go out
 * OTP_LOG_BUSY_US at a time.
 */
static void
logw_gather(struct log_writer *w, long us)
{
	struct timespec ts;

	if (w->stopping || w->len >= sizeof(w->buf[0]) / 2)
		return;
	deadline_in(&ts, us);
	pthread_cond_timedwait(&w->wake, &w->lock, &ts);
}

/*
 * The log writer: once lines are waiting, gathers more for a moment
 * (logw_gather()), takes them all (the workers go on with the other
 * buffer) and writes them with no lock held. After a write it gathers
 * again, awake: while lines keep coming nobody has to wake it (a futex
 * call in a worker, and a switch). A pause with no line makes it idle,
 * until a line wakes it. Once stopping, it writes what is left and ends.
 */
static void *
logw_main(void *arg)
{
	struct log_writer *w = ((struct otp *)arg)->logw;
	bool busy = false;

	pthread_setname_np(pthread_self(), "otp-log"); /* for top, perf */
	pthread_mutex_lock(&w->lock);
	for (;;) {
		const char *out;
		size_t len;

		while (!busy && w->len == 0 && !w->stopping) {
			w->idle = true;
			pthread_cond_wait(&w->wake, &w->lock);
		}
		w->idle = false;
		logw_gather(w, busy ? OTP_LOG_BUSY_US : OTP_LOG_GATHER_US);
		if (w->len == 0 && w->stopping)
			break; /* all written */
		if (!(busy = w->len > 0))
			continue; /* a pause with no line: idle */
		out = w->buf[w->fill];
		len = w->len;
		w->fill ^= 1;
		w->len = 0;
		pthread_cond_broadcast(&w->room);
		pthread_mutex_unlock(&w->lock);
		write_all(STDERR_FILENO, out, len);
		pthread_mutex_lock(&w->lock);
	}
	w->running = false;
	pthread_mutex_unlock(&w->lock);
	return NULL;
}

/* Starts the log writer (LOG stderr). 0, or -1 (no memory, no thread):
 * then log_line() goes on writing itself. */
static int
logw_start(struct otp *otp)
{
	struct log_writer *w = calloc(1, sizeof(*w));
	pthread_mutexattr_t ma;
	pthread_condattr_t ca;

	if (w == NULL)
		return -1;
	/* Adaptive: a worker that finds the lock taken spins for the memcpy
	 * to end instead of sleeping in the kernel at once; with 8 workers
	 * on a few cores, sleeping (and the unlock's wake-up) cost more
	 * than the rest of a line (measured: futex calls half of
	 * logw_put()'s time under /request load). A glibc extension: musl
	 * (the static builds) has no such type, and its mutexes spin a
	 * little before they sleep anyway. */
	pthread_mutexattr_init(&ma);
#ifdef __GLIBC__
	pthread_mutexattr_settype(&ma, PTHREAD_MUTEX_ADAPTIVE_NP);
#endif
	pthread_mutex_init(&w->lock, &ma);
	pthread_mutexattr_destroy(&ma);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&w->wake, &ca);
	pthread_condattr_destroy(&ca);
	pthread_cond_init(&w->room, NULL);
	w->running = true;
	otp->logw = w;
	if (!thread_start(otp, &w->thread, logw_main)) {
		otp->logw = NULL;
		logw_free(w);
		return -1;
	}
	return 0;
}

/*
 * Stops the log writer once it has written every line queued, and frees
 * it: log_line() writes itself from then on. Called last in
 * otp_destroy(), when no other thread of ours logs any more.
 */
static void
logw_stop(struct otp *otp)
{
	struct log_writer *w = otp->logw;

	if (w == NULL)
		return;
	thread_poke(&w->lock, &w->wake, &w->stopping);
	pthread_join(w->thread, NULL);
	otp->logw = NULL;
	logw_free(w);
}

static void
logw_free(struct log_writer *w)
{
	pthread_cond_destroy(&w->room);
	pthread_cond_destroy(&w->wake);
	pthread_mutex_destroy(&w->lock);
	free(w);
}

/* *ts = CLOCK_MONOTONIC now plus us microseconds (at least 0): a
 * deadline for pthread_cond_timedwait() on a CLOCK_MONOTONIC cond. */
static void
deadline_in(struct timespec *ts, int64_t us)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	if (us < 0)
		us = 0;
	ts->tv_sec += (time_t)(us / 1000000);
	ts->tv_nsec += (long)(us % 1000000) * 1000L;
	if (ts->tv_nsec >= 1000000000L)
		ts->tv_sec++, ts->tv_nsec -= 1000000000L;
}

/* Unix time sec as RFC 3339 in UTC: "2026-01-31T23:59:59Z". */
static void
time_rfc3339(int64_t sec, char out[24])
{
	time_t t = (time_t)sec;
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(out, 24, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* Copies in to out with control characters, quotes and backslashes
 * escaped, so nothing a client sends can forge a log line. */
static void
log_escape(const char *in, size_t len, char *out, size_t outlen)
{
	size_t n = 0;

	for (size_t i = 0; i < len && in[i] != '\0'; i++) {
		unsigned char ch = (unsigned char)in[i];
		char esc[8];
		size_t elen;

		if (ch < 0x20 || ch == 0x7f || ch == '"' || ch == '\\')
			elen = (size_t)snprintf(esc, sizeof(esc), "\\x%02x", ch);
		else
			esc[0] = (char)ch, elen = 1;
		if (n + elen >= outlen)
			break;
		memcpy(out + n, esc, elen);
		n += elen;
	}
	out[n] = '\0';
}

static int64_t
clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
clock_monotonic_ms(void)
{
	return clock_ms(CLOCK_MONOTONIC);
}

/* Unix time in milliseconds. */
static int64_t
clock_wall_ms(void)
{
	return clock_ms(CLOCK_REALTIME);
}

/* Reads an IPv4 or IPv6 address (len bytes, any spelling) into out:
 * out[0] its size (4 or 16), then its bytes. false if it is not one. */
static bool
addr_parse(const char *s, size_t len, uint8_t out[17])
{
	char buf[64];

	if (str_ncopy(buf, sizeof(buf), s, len) != 0)
		return false;
	if (inet_pton(AF_INET, buf, out + 1) == 1)
		out[0] = 4;
	else if (inet_pton(AF_INET6, buf, out + 1) == 1)
		out[0] = 16;
	else
		return false;
	return true;
}

/* Writes 2 * len hex digits and a NUL. */
static void
hex_encode(const uint8_t *in, size_t len, char *out, bool upper)
{
	const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";

	for (size_t i = 0; i < len; i++) {
		out[2 * i] = digits[in[i] >> 4];
		out[2 * i + 1] = digits[in[i] & 15];
	}
	out[2 * len] = '\0';
}

/* Decodes len hex digits (even) into len / 2 bytes. 0 or -1. */
static int
hex_decode(const char *in, size_t len, uint8_t *out)
{
	if (len % 2 != 0)
		return -1;
	for (size_t i = 0; i < len; i += 2) {
		int hi = hexval(in[i]), lo = hexval(in[i + 1]);

		if (hi < 0 || lo < 0)
			return -1;
		out[i / 2] = (uint8_t)(hi * 16 + lo);
	}
	return 0;
}

/* Compares in time that depends only on len. */
static bool
ct_equal(const void *a, const void *b, size_t len)
{
	const volatile uint8_t *x = a, *y = b;
	uint8_t d = 0;

	for (size_t i = 0; i < len; i++)
		d |= x[i] ^ y[i];
	return d == 0;
}

/* Zeroes memory in a way the compiler may not drop. */
/* The keyed hash secrets are compared by (cmp_key, drawn at start): an
 * input's hash takes time that depends on its own length only. */
static void
secret_mac(const struct otp *otp, const void *in, size_t len,
           uint8_t out[OTP_MAC_LEN])
{
	hmac_keyed(&otp->cmp_hk, in, len, out);
}

static void
wipe(void *p, size_t len)
{
	/* memset the compiler may not drop (glibc 2.25, musl 1.1.20): as
	 * fast as memset, where a volatile loop stored a byte a cycle. */
	explicit_bzero(p, len);
}

/* Signals c under m, *flag set first unless flag is NULL: how a thread
 * of ours is woken, or told to stop. */
static void
thread_poke(pthread_mutex_t *m, pthread_cond_t *c, bool *flag)
{
	pthread_mutex_lock(m);
	if (flag != NULL)
		*flag = true;
	pthread_cond_signal(c);
	pthread_mutex_unlock(m);
}

/* Copies src into dst of size bytes. 0, or -1 if it did not fit (dst then
 * holds a truncated copy). */
static int
str_copy(char *dst, size_t size, const char *src)
{
	return str_ncopy(dst, size, src, strlen(src));
}

static int
str_ncopy(char *dst, size_t size, const char *src, size_t n)
{
	int rc = 0;

	if (size == 0)
		return -1;
	if (n >= size) {
		n = size - 1;
		rc = -1;
	}
	memcpy(dst, src, n);
	dst[n] = '\0';
	return rc;
}

/*
 * The next item of the comma-separated list at *p, without the blanks
 * around it, into item (size bytes with its NUL); moves *p past the item
 * and its comma. Returns 1, 0 at the end of the list, or -1 for an empty
 * item or one that does not fit.
 */
static int
list_item(const char **p, char *item, size_t size)
{
	const char *s;
	size_t len;

	if (!list_next(p, ',', &s, &len))
		return 0;
	if (len == 0 || len >= size)
		return -1;
	memcpy(item, s, len);
	item[len] = '\0';
	return 1;
}

/*
 * The one list iterator: the next item of the list at *p whose items sep
 * separates, blanks around it dropped, as *item and *len (in place, not
 * NUL-terminated); *p moves past it and its separator. False at the end.
 */
static bool
list_next(const char **p, char sep, const char **item, size_t *len)
{
	const char *s = *p, *e;

	if (*s == '\0')
		return false;
	s += strspn(s, " \t");
	e = strchrnul(s, sep);
	*p = *e == sep ? e + 1 : e;
	while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*item = s;
	*len = (size_t)(e - s);
	return true;
}

static const char *
prefix_skip(const char *s, const char *lit, size_t n, bool any_case)
{
	return (any_case ? strncasecmp(s, lit, n) : strncmp(s, lit, n)) == 0 ?
	    s + n : NULL;
}

/* Parses a whole decimal number within [min, max]. 0 or -1. */
static int
parse_long(const char *s, long min, long max, long *out)
{
	char *end;
	long v;

	errno = 0;
	if (*s == '\0' || isspace((unsigned char)*s))
		return -1;
	v = strtol(s, &end, 10);
	if (errno != 0 || *end != '\0' || v < min || v > max)
		return -1;
	*out = v;
	return 0;
}

static int
hmac256(const uint8_t *key, const void *in, size_t len,
        uint8_t out[OTP_MAC_LEN])
{
	return mbedtls_md_hmac(mbedtls_md_info_from_type(MBEDTLS_MD_SHA256),
	    key, OTP_KEY_LEN, in, len, out) == 0 ? 0 : -1;
}

/* Prepares hk from key (OTP_KEY_LEN bytes, shorter than a block, so
 * used as it is): the inner and outer padded keys hashed once. */
static void
hmac_key_init(struct hmac_key *hk, const uint8_t *key)
{
	/* 32 bits: armv6 has no 64-bit atomics (libatomic would be one more
	 * library), and keys are prepared at start and on reload only. */
	static atomic_uint gens;
	uint8_t pad[64];

	for (int k = 0; k < 2; k++) {
		mbedtls_sha256_context *c = k == 0 ? &hk->inner : &hk->outer;

		memset(pad, k == 0 ? 0x36 : 0x5c, sizeof(pad));
		for (size_t i = 0; i < OTP_KEY_LEN; i++)
			pad[i] ^= key[i];
		mbedtls_sha256_init(c);
		mbedtls_sha256_starts(c, 0);
		mbedtls_sha256_update(c, pad, sizeof(pad));
	}
	hk->gen = (uint64_t)atomic_fetch_add(&gens, 1) + 1;
	wipe(pad, sizeof(pad));
}

/* hmac256() under the key hk was prepared from: the same bytes, for two
 * SHA-256 blocks of a short input. hk is only read: workers share it.
 * 0 or -1. */
static int
hmac_keyed(const struct hmac_key *hk, const void *in, size_t len,
           uint8_t out[OTP_MAC_LEN])
{
	mbedtls_sha256_context c;
	uint8_t inner[OTP_MAC_LEN];
	int rc;

	mbedtls_sha256_init(&c);
	mbedtls_sha256_clone(&c, &hk->inner);
	rc = mbedtls_sha256_update(&c, in, len) |
	    mbedtls_sha256_finish(&c, inner);
	mbedtls_sha256_clone(&c, &hk->outer);
	rc |= mbedtls_sha256_update(&c, inner, sizeof(inner)) |
	    mbedtls_sha256_finish(&c, out);
	mbedtls_sha256_free(&c);
	wipe(inner, sizeof(inner));
	return rc == 0 ? 0 : -1;
}

/*
 * hmac_keyed() for the hashes a worker makes again and again: a
 * keep-alive connection stays on one worker, so its requests bring the
 * same session (its cookie's MAC, its CSRF token) and come from the
 * same address, and a POST /request hashes its number twice. Each
 * thread keeps the HMAC_MEMO inputs of at most 48 bytes it used last,
 * with their MACs and the gen of their key (a new instance's key is
 * never taken for an old one). Same bytes as hmac_keyed(). An input is
 * compared with every entry, whole and without an early exit, so a
 * lookup's time says nothing of other clients' inputs. What is kept is
 * no more than a worker's request buffer holds after its request:
 * session ids and their MACs, CSRF tokens, addresses, numbers. Never
 * codes or keys: code_mac() and the rest call hmac_keyed().
 */
#define HMAC_MEMO 8

static int
hmac_memo(const struct hmac_key *hk, const void *in, size_t len,
          uint8_t out[OTP_MAC_LEN])
{
	static _Thread_local struct {
		uint64_t gen, used, len, in[6];
		uint8_t mac[OTP_MAC_LEN];
	} memo[HMAC_MEMO];
	static _Thread_local uint64_t uses;
	uint64_t pad[6] = { 0 }, d;
	unsigned i, old = 0, hit = HMAC_MEMO;

	if (len > sizeof(pad) || hk->gen == 0)
		return hmac_keyed(hk, in, len, out);
	memcpy(pad, in, len);
	for (i = 0; i < HMAC_MEMO; i++) {
		d = (memo[i].gen ^ hk->gen) | (memo[i].len ^ len);
		for (size_t w = 0; w < 6; w++)
			d |= memo[i].in[w] ^ pad[w];
		if (d == 0)
			hit = i;
		if (memo[i].used < memo[old].used)
			old = i;
	}
	if (hit < HMAC_MEMO) {
		memo[hit].used = ++uses;
		memcpy(out, memo[hit].mac, OTP_MAC_LEN);
		return 0;
	}
	if (hmac_keyed(hk, in, len, out) != 0)
		return -1;
	memo[old].gen = hk->gen;
	memo[old].used = ++uses;
	memo[old].len = len;
	memcpy(memo[old].in, pad, sizeof(pad));
	memcpy(memo[old].mac, out, OTP_MAC_LEN);
	return 0;
}

/* Levenshtein distance, case-insensitive, for did-you-mean (short keys). */
static unsigned
edit_distance(const char *a, const char *b)
{
	unsigned row[64];
	size_t la = strlen(a), lb = strlen(b);

	if (la >= 63 || lb >= 63)
		return UINT_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = (unsigned)j;
	for (size_t i = 1; i <= la; i++) {
		unsigned prev = row[0], tmp;

		row[0] = (unsigned)i;
		for (size_t j = 1; j <= lb; j++) {
			unsigned cost = toupper((unsigned char)a[i - 1]) !=
			    toupper((unsigned char)b[j - 1]);

			tmp = row[j];
			row[j] = row[j] + 1 < row[j - 1] + 1 ?
			    row[j] + 1 : row[j - 1] + 1;
			if (prev + cost < row[j])
				row[j] = prev + cost;
			prev = tmp;
		}
	}
	return row[lb];
}

/*
 * Writes data to path atomically: a temporary file in the same directory
 * with mode, fsync, then rename. 0 or -1 (errno set).
 */
/*
 * Unpacking the static builds' packed text (tools/lz.py: raw deflate, RFC
 * 1951, as zlib writes it), in the manner of zlib's puff.c: a bit reader,
 * canonical Huffman tables built per block, no window beyond out. A read
 * past the input sets err and gives zeros, so a bad input ends in a check
 * rather than in a test per bit.
 */
struct inflate {
	const unsigned char *in;
	size_t n, pos;
	unsigned long bitbuf;
	unsigned bitcnt;
	char *out;
	size_t cap, o;
	bool err;
};

/* A canonical Huffman code: how many codes of each length, and the
 * symbols in code order. */
struct huff {
	short count[16];
	short symbol[288];
};

/* The next need (0 to 13) bits of the input, first bit lowest. */
static unsigned
inflate_bits(struct inflate *s, unsigned need)
{
	unsigned long v = s->bitbuf;

	while (s->bitcnt < need) {
		if (s->pos == s->n)
			s->err = true;
		else
			v |= (unsigned long)s->in[s->pos++] << s->bitcnt;
		s->bitcnt += 8;
	}
	s->bitbuf = v >> need;
	s->bitcnt -= need;
	return (unsigned)(v & ((1ul << need) - 1));
}

/* The next symbol of code h, or -1 for a code it does not have. */
static int
inflate_symbol(struct inflate *s, const struct huff *h)
{
	int code = 0, first = 0, index = 0;

	for (int len = 1; len < 16; len++) {
		code |= (int)inflate_bits(s, 1);
		if (code - h->count[len] < first)
			return h->symbol[index + code - first];
		index += h->count[len];
		first = (first + h->count[len]) << 1;
		code <<= 1;
	}
	return -1;
}

/* Builds h from n code lengths. 0 for a complete code, > 0 for an
 * incomplete one, -1 for an over-subscribed one. */
static int
inflate_huff(struct huff *h, const short *length, int n)
{
	short offs[16];
	int left = 1;

	memset(h->count, 0, sizeof(h->count));
	for (int i = 0; i < n; i++)
		h->count[length[i]]++;
	if (h->count[0] == n)
		return 0;
	for (int len = 1; len < 16; len++)
		if ((left = (left << 1) - h->count[len]) < 0)
			return -1;
	offs[1] = 0;
	for (int len = 1; len < 15; len++)
		offs[len + 1] = (short)(offs[len] + h->count[len]);
	for (int i = 0; i < n; i++)
		if (length[i] != 0)
			h->symbol[offs[length[i]]++] = (short)i;
	return left;
}

/* One block's literals and copies, to its end symbol. 0 or -1. */
static int
inflate_codes(struct inflate *s, const struct huff *lit,
              const struct huff *dist)
{
	int sym;

	while ((sym = inflate_symbol(s, lit)) != 256 && !s->err) {
		size_t len = 3, d = 1;
		int ds;

		if (sym < 0 || sym > 285)
			return -1;
		if (sym < 256) {
			if (s->o == s->cap)
				return -1;
			s->out[s->o++] = (char)sym;
			continue;
		}
		/* RFC 1951's base lengths and distances, summed rather than
		 * tabled: a code's extra bits are none for the first 8 (4),
		 * then one more every 4 (2) codes; code 285 is 258 */
		sym -= 257;
		for (int i = 0; i < sym; i++)
			len += 1u << (i < 8 ? 0 : (i - 4) / 4);
		len = sym == 28 ? 258 : len + inflate_bits(s, sym < 8 ? 0 :
		    (unsigned)(sym - 4) / 4);
		if ((ds = inflate_symbol(s, dist)) < 0 || ds > 29)
			return -1;
		for (int i = 0; i < ds; i++)
			d += 1u << (i < 4 ? 0 : (i - 2) / 2);
		d += inflate_bits(s, ds < 4 ? 0 : (unsigned)(ds - 2) / 2);
		if (d > s->o || len > s->cap - s->o)
			return -1;
		for (; len > 0; len--, s->o++) /* overlapping: byte by byte */
			s->out[s->o] = s->out[s->o - d];
	}
	return s->err ? -1 : 0;
}

/* A block with the fixed codes (type 1), or its own (type 2). 0 or -1. */
static int
inflate_block(struct inflate *s, int type)
{
	static const unsigned char order[19] = { 16, 17, 18, 0, 8, 7, 9, 6, 10,
	    5, 11, 4, 12, 3, 13, 2, 14, 1, 15 };
	short len[288 + 32] = { 0 };
	struct huff lit, dist;
	int nlit = 288, ndist = 30, i = 0;

	if (type == 1) {
		for (; i < 288; i++)
			len[i] = i < 144 ? 8 : i < 256 ? 9 : i < 280 ? 7 : 8;
		for (; i < 288 + 30; i++)
			len[i] = 5;
	} else {
		int ncode;

		nlit = (int)inflate_bits(s, 5) + 257;
		ndist = (int)inflate_bits(s, 5) + 1;
		ncode = (int)inflate_bits(s, 4) + 4;
		for (; i < ncode; i++)
			len[order[i]] = (short)inflate_bits(s, 3);
		if (nlit > 286 || ndist > 30 || inflate_huff(&lit, len, 19) != 0)
			return -1;
		for (i = 0; i < nlit + ndist && !s->err;) {
			int sym = inflate_symbol(s, &lit), rep;
			short prev = 0;

			if (sym < 16) {
				if (sym < 0)
					return -1;
				len[i++] = (short)sym;
				continue;
			}
			if (sym == 16 && i == 0)
				return -1;
			if (sym == 16)
				prev = len[i - 1];
			rep = sym == 16 ? 3 + (int)inflate_bits(s, 2) : sym == 17 ?
			    3 + (int)inflate_bits(s, 3) : 11 + (int)inflate_bits(s, 7);
			if (i + rep > nlit + ndist)
				return -1;
			while (rep-- > 0)
				len[i++] = prev;
		}
		/* the code lengths went into len[0..nlit+ndist) */
		memmove(len + 288, len + nlit, (size_t)ndist * sizeof(len[0]));
		memset(len + nlit, 0, (size_t)(288 - nlit) * sizeof(len[0]));
	}
	if (len[256] == 0 || inflate_huff(&lit, len, nlit) < 0 ||
	    inflate_huff(&dist, len + 288, ndist) < 0)
		return -1;
	return inflate_codes(s, &lit, &dist);
}

/*
 * Unpacks raw deflate data in (n bytes) into out (cap bytes). Returns the
 * length, or -1 for input that does not unpack within cap (nothing is
 * read or written outside either).
 */
static long
inflate_raw(const unsigned char *in, size_t n, char *out, size_t cap)
{
	struct inflate s = { .in = in, .n = n, .out = out, .cap = cap };
	unsigned last;
	int rc = 0;

	do {
		unsigned type;
		size_t len;

		last = inflate_bits(&s, 1);
		if ((type = inflate_bits(&s, 2)) == 1 || type == 2) {
			rc = inflate_block(&s, (int)type);
			continue;
		}
		/* stored: from the next byte, a length and its complement */
		s.bitbuf = 0, s.bitcnt = 0;
		if (type != 0 || s.n - s.pos < 4 || (s.in[s.pos] ^
		    s.in[s.pos + 2]) != 0xff || (s.in[s.pos + 1] ^
		    s.in[s.pos + 3]) != 0xff)
			return -1;
		len = s.in[s.pos] | (size_t)s.in[s.pos + 1] << 8;
		s.pos += 4;
		if (len > s.n - s.pos || len > s.cap - s.o)
			return -1;
		memcpy(s.out + s.o, s.in + s.pos, len);
		s.pos += len, s.o += len;
	} while (rc == 0 && !last && !s.err);
	return rc != 0 || s.err ? -1 : (long)s.o;
}

/* Appends a formatted line to a bounded buffer; *n grows, capped (at
 * cap or more when it did not fit: the caller checks *n < cap). */
static void
buf_printf(char *buf, size_t cap, size_t *n, const char *fmt, ...)
{
	va_list ap;
	int k;

	if (*n >= cap)
		return;
	va_start(ap, fmt);
	k = vsnprintf(buf + *n, cap - *n, fmt, ap);
	va_end(ap);
	*n = k < 0 ? cap : *n + (size_t)k;
}

/*
 * Writes data to path atomically: a new path.tmp is made with O_EXCL and
 * O_NOFOLLOW, so a file or symlink planted there is never written
 * through (a stale one is unlinked first: unlink removes the link, not
 * its target), written, fsynced, renamed over path, and the directory
 * fsynced so the rename survives a power cut. 0, or -1 with errno.
 */
static int
file_write_atomic(const char *path, const char *data, size_t len, mode_t mode)
{
	char tmp[OTP_MAX_STR + 16], dir[OTP_MAX_STR + 16];
	const int flags = O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC;
	int fd, dfd, rc = -1, saved;

	if (snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= (int)sizeof(tmp)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	if ((fd = open(tmp, flags, mode)) < 0 && errno == EEXIST &&
	    unlink(tmp) == 0)
		fd = open(tmp, flags, mode);
	if (fd < 0)
		return -1;
	if (fchmod(fd, mode) == 0 && write(fd, data, len) == (ssize_t)len &&
	    fsync(fd) == 0)
		rc = 0;
	if (close(fd) != 0)
		rc = -1;
	if (rc == 0 && rename(tmp, path) != 0)
		rc = -1;
	saved = errno;
	if (rc != 0)
		unlink(tmp);
	str_copy(dir, sizeof(dir), path);
	if (rc == 0 && strrchr(dir, '/') != NULL) {
		*strrchr(dir, '/') = '\0';
		if ((dfd = open(dir[0] ? dir : "/", O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC)) >= 0) {
			fsync(dfd);
			close(dfd);
		}
	}
	errno = saved;
	return rc;
}
