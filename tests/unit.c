/*
 * Unit tests of otp_demo.c's pure parts (cmocka). The file includes
 * otp_demo.c itself, without main, to reach its static functions. Only the
 * clock and the random source are replaced, never anything else.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>


#include "../otp_demo.c"

#include <cmocka.h>

static uint32_t
store_live(struct store *st)
{
	uint32_t live, used;

	store_counts(st, &live, &used);
	return live;
}

static uint32_t
store_pending(struct store *st)
{
	uint32_t live, used;

	store_counts(st, &live, &used);
	return used;
}

/* ---- fakes: clock and random source ------------------------------------ */

static int64_t fake_now = 1000000;

static int64_t
fake_clock(void)
{
	return fake_now;
}

static uint8_t fake_byte;
static int fake_draws; /* calls of fake_rng() */

/* Counts up from fake_byte: predictable "random" bytes. */
static int
fake_rng(void *ctx, unsigned char *out, size_t len)
{
	(void)ctx;
	fake_draws++;
	for (size_t i = 0; i < len; i++)
		out[i] = fake_byte++;
	return 0;
}

static char cfg_path[64];

/* Writes text to a temporary config file and returns its path. */
static const char *
write_cfg(const char *text)
{
	int fd;

	snprintf(cfg_path, sizeof(cfg_path), "/tmp/otp_unit_XXXXXX");
	fd = mkstemp(cfg_path);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	return cfg_path;
}

/* Loads text as a config: 0 or -1 with err. */
static int
load(struct config *c, const char *text, char *err, size_t errlen)
{
	int rc = config_load(c, write_cfg(text), err, errlen);

	unlink(cfg_path);
	return rc;
}

/* Expects text to fail with exactly "<file>:<msg>". */
static void
expect_error(const char *text, const char *msg)
{
	struct config c;
	char err[600], want[600];

	assert_int_equal(load(&c, text, err, sizeof(err)), -1);
	snprintf(want, sizeof(want), "%s:%s", cfg_path, msg);
	assert_string_equal(err, want);
}

/* ---- config ------------------------------------------------------------ */

static void
test_config_tutorial(void **state)
{
	struct config c;
	char err[600];

	(void)state;
	assert_int_equal(load(&c,
	    "API_KEY='YOUR_API_KEY'\n"
	    "FROM_NUMBER='YOUR_TELNYX_NUMBER'\n"
	    "DEBUG=True\n"
	    "COUNTRY_CODE='+1'\n"
	    "TOKEN_LENGTH=4\n", err, sizeof(err)), 0);
	assert_true(c.debug);
	assert_int_equal(c.token_length, 4);
	assert_string_equal(c.country_code, "+1");
	/* The placeholder key means no account: the console sender. */
	assert_ptr_equal(c.sender, &senders[SENDER_console]);
	assert_int_equal(c.alphabet, ALPHABET_HEX);
	assert_string_equal(c.listen, "127.0.0.1:5000");
	assert_true(phone_allowed(&c, "+12015550123"));
	assert_false(phone_allowed(&c, "+18765550100"));
}

static void
test_config_literals(void **state)
{
	struct config c;
	char err[600];

	(void)state;
	assert_int_equal(load(&c,
	    "# a comment\n"
	    "\n"
	    "   API_KEY = \"KEY\\\"with\\\\quote\"   # trailing comment\n"
	    "FROM_NUMBER='+12025550111'\n"
	    "DEBUG = False\n"
	    "MESSAGE='It\\'s {code}'\n"
	    "TOKEN_LENGTH = 7\r\n"
	    "SMS_CA_FILE='/etc/hostname'\n"
	    "ALLOWED_COUNTRY_CODES='+1, +44'\n", err, sizeof(err)), 0);
	assert_string_equal(c.api_key, "KEY\"with\\quote");
	assert_false(c.debug);
	assert_string_equal(c.message, "It's {code}");
	assert_int_equal(c.token_length, 7);
	assert_ptr_equal(c.sender, &senders[SENDER_telnyx]);
	assert_true(phone_allowed(&c, "+442079460958"));
	assert_true(phone_allowed(&c, "+14165550123"));
	assert_false(phone_allowed(&c, "+33612345678"));
}

static void
test_config_errors(void **state)
{
	(void)state;
	expect_error("TOKEN_LENGTH=99\n", "1: TOKEN_LENGTH must be 1..16");
	expect_error("\n\nTOKEN_LENGTH=0\n", "3: TOKEN_LENGTH must be 1..16");
	expect_error("TOKEN_LENGTH='4'\n",
	    "1: TOKEN_LENGTH must be a whole number");
	expect_error("TOKEN_LENGTH=4x\n",
	    "1: TOKEN_LENGTH must be a whole number");
	expect_error("TOKEN_LENGHT=4\n",
	    "1: unknown key TOKEN_LENGHT (did you mean TOKEN_LENGTH?)");
	expect_error("api_key='x'\n",
	    "1: unknown key api_key (did you mean API_KEY?)");
	expect_error("WHATEVER=1\n", "1: unknown key WHATEVER");
	expect_error("API_KEY='abc\n", "1: API_KEY: unterminated string");
	expect_error("API_KEY=abc\n", "1: API_KEY must be a quoted string");
	expect_error("DEBUG=yes\n", "1: DEBUG must be True or False");
	expect_error("DEBUG='True'\n", "1: DEBUG must be True or False");
	expect_error("COUNTRY_CODE='1'\n",
	    "1: COUNTRY_CODE must be '+' and a country's calling code, like "
	    "'+1' or '+44'");
	expect_error("\nCOUNTRY_CODE='+999'\n",
	    "2: COUNTRY_CODE must be '+' and a country's calling code, like "
	    "'+1' or '+44'");
	expect_error("SMS_PROVIDER='twilio'\n",
	    "1: SMS_PROVIDER must be 'telnyx', 'http', 'spool', 'command' or "
	    "'console'");
	expect_error("SMS_PROVIDER='command'\nSMS_COMMAND='send {to}'\n",
	    "2: SMS_COMMAND must start with the absolute path of an executable "
	    "(send)");
	expect_error("COOKIE_DOMAIN='.example.lan'\n", "1: COOKIE_DOMAIN "
	    "must be a host name like 'example.lan' (no leading dot, no port)");
	expect_error("\nCOOKIE_DOMAIN='example.lan:443'\n", "2: COOKIE_DOMAIN "
	    "must be a host name like 'example.lan' (no leading dot, no port)");
	expect_error("TOKEN_ALPHABET='base32'\n",
	    "1: TOKEN_ALPHABET must be 'hex' or 'digits'");
	expect_error("LOG=''\n", "1: LOG must be 'stderr' or 'syslog'");
	expect_error("SMS_HTTP_CONTENT_TYPE='text/plain'\n",
	    "1: SMS_HTTP_CONTENT_TYPE must be 'application/json' or "
	    "'application/x-www-form-urlencoded'");
	expect_error("SMS_HTTP_AUTH='digest'\n",
	    "1: SMS_HTTP_AUTH must be 'bearer', 'basic', 'none' or 'header:Name'");
	expect_error("MESSAGE_de='Kein Code'\n",
	    "1: MESSAGE_de must contain {code}");
	expect_error("SMS_API_URL='http://x/'\n",
	    "1: SMS_API_URL must be an https:// URL");
	expect_error("MESSAGE='no code here'\n", "1: MESSAGE must contain {code}");
	expect_error("MESSAGE='{code} {oops}'\n",
	    "1: MESSAGE may contain only {code}, {app} and {minutes}");
	expect_error("CODE_TTL=601\n", "1: CODE_TTL must be 1..600");
	expect_error("API_KEY='a' junk\n",
	    "1: API_KEY: unexpected text after the value");
	expect_error("just words\n", "1: expected KEY=value after just");
	expect_error("=1\n", "1: expected KEY=value");
	expect_error("API_KEY=\n", "1: API_KEY: missing value");
	expect_error("ALLOWED_COUNTRY_CODES='+1,44'\n",
	    "1: ALLOWED_COUNTRY_CODES must be a comma-separated list of ISO "
	    "country codes and calling codes, like 'US,CA' or '+44'");
	expect_error("ALLOWED_COUNTRY_CODES='US,,CA'\n",
	    "1: ALLOWED_COUNTRY_CODES must be a comma-separated list of ISO "
	    "country codes and calling codes, like 'US,CA' or '+44'");
	expect_error("ALLOWED_COUNTRY_CODES='USA'\n",
	    "1: ALLOWED_COUNTRY_CODES must be a comma-separated list of ISO "
	    "country codes and calling codes, like 'US,CA' or '+44'");
	expect_error("# countries\n\nALLOWED_COUNTRY_CODES='US, UK'\n",
	    "3: ALLOWED_COUNTRY_CODES: 'UK' is not an ISO 3166 country code "
	    "(did you mean 'GB'?)");
	expect_error("ALLOWED_COUNTRY_CODES='US,XX'\n",
	    "1: ALLOWED_COUNTRY_CODES: 'XX' is not an ISO 3166 country code");
	expect_error("DEBUG=False\nALLOWED_COUNTRY_CODES='GB,+999'\n",
	    "2: ALLOWED_COUNTRY_CODES: +999 is no country's calling code");
	expect_error("ALLOWED_COUNTRY_CODE='US'\n",
	    "1: unknown key ALLOWED_COUNTRY_CODE (did you mean "
	    "ALLOWED_COUNTRY_CODES?)");
	expect_error("API_KEY='real'\nFROM_NUMBER='YOUR_TELNYX_NUMBER'\n",
	    "2: FROM_NUMBER must be an E.164 number like '+12015550123'");
	expect_error("SMS_PROVIDER='telnyx'\nFROM_NUMBER='+12025550111'\n",
	    " API_KEY must be set for SMS_PROVIDER telnyx");
}

/* UPSTREAM: "http://host:port", a "/" after it allowed; nothing else. */
static void
test_config_upstream(void **state)
{
	static const char *const bad[] = {
		"https://127.0.0.1:8080", "http://127.0.0.1", "http://:80",
		"http://127.0.0.1:0", "http://127.0.0.1:65536", "http://h:123456",
		"http://[::1]8080", "http://[::1:80", "http://h:80/x",
		"http://a b:80", "http://h:80 ", "http://user@h:80", "ftp://h:21",
	};
	char host[256], port[8];

	(void)state;
	assert_int_equal(upstream_split("http://127.0.0.1:8080", host, port), 0);
	assert_string_equal(host, "127.0.0.1");
	assert_string_equal(port, "8080");
	assert_int_equal(upstream_split("http://[::1]:80/", host, port), 0);
	assert_string_equal(host, "::1");
	assert_string_equal(port, "80");
	assert_int_equal(upstream_split("http://router.lan:65535", host, port),
	    0);
	assert_string_equal(host, "router.lan");
	for (size_t i = 0; i < countof(bad); i++)
		if (upstream_split(bad[i], host, port) != -1)
			fail_msg("UPSTREAM '%s' taken", bad[i]);
	expect_error("\nUPSTREAM='http://127.0.0.1'\n",
	    "2: UPSTREAM must be 'http://host:port'");
	expect_error("UPSTREAM_TIMEOUT=601\n",
	    "1: UPSTREAM_TIMEOUT must be 1..600");
}

static void
test_config_env(void **state)
{
	struct config c;
	char err[600];

	(void)state;
	setenv("OTP_TOKEN_LENGTH", "8", 1);
	setenv("OTP_DEBUG", "true", 1);
	setenv("OTP_API_KEY", "from-env", 1);
	setenv("OTP_FROM_NUMBER", "+12025550111", 1);
	setenv("OTP_SMS_CA_FILE", "/etc/hostname", 1);
	assert_int_equal(load(&c, "TOKEN_LENGTH=4\nDEBUG=False\n", err,
	    sizeof(err)), 0);
	assert_int_equal(c.token_length, 8);
	assert_true(c.debug);
	assert_string_equal(c.api_key, "from-env");
	assert_ptr_equal(c.sender, &senders[SENDER_telnyx]);

	setenv("OTP_TOKEN_LENGTH", "40", 1);
	assert_int_equal(load(&c, "", err, sizeof(err)), -1);
	assert_string_equal(err,
	    "environment OTP_TOKEN_LENGTH: TOKEN_LENGTH must be 1..16");
	unsetenv("OTP_TOKEN_LENGTH");
	setenv("OTP_ALLOWED_COUNTRY_CODES", "GB,UK", 1);
	assert_int_equal(load(&c, "", err, sizeof(err)), -1);
	assert_string_equal(err, "environment OTP_ALLOWED_COUNTRY_CODES: "
	    "ALLOWED_COUNTRY_CODES: 'UK' is not an ISO 3166 country code "
	    "(did you mean 'GB'?)");
	unsetenv("OTP_ALLOWED_COUNTRY_CODES");
	unsetenv("OTP_DEBUG");
	unsetenv("OTP_API_KEY");
	unsetenv("OTP_FROM_NUMBER");
	unsetenv("OTP_SMS_CA_FILE");
}

/* config.cfg.example and README document every key. */
static void
test_config_documented(void **state)
{
	static const char *const docs[] = { "config.cfg.example", "README.md" };
	static char text[65536];

	(void)state;
	for (size_t d = 0; d < 2; d++) {
		FILE *f = fopen(docs[d], "r");
		size_t n;

		assert_non_null(f);
		n = fread(text, 1, sizeof(text) - 1, f);
		fclose(f);
		text[n] = '\0';
		for (size_t i = 0; i < NKEYS; i++) {
			char want[80];

			snprintf(want, sizeof(want), "%s%s",
			    d == 0 ? "" : "`", config_keys[i].name);
			if (strstr(text, want) == NULL)
				fail_msg("%s does not document %s", docs[d],
				    config_keys[i].name);
		}
	}
}

/* Writes users to a USERS_FILE and loads a config naming it: 0 or -1. */
static int
load_users(struct config *c, const char *users, char *err, size_t errlen)
{
	char path[32] = "/tmp/otp_users_XXXXXX", text[64];
	int fd = mkstemp(path), rc;

	assert_true(fd >= 0);
	assert_int_equal(write(fd, users, strlen(users)),
	    (ssize_t)strlen(users));
	close(fd);
	snprintf(text, sizeof(text), "USERS_FILE='%s'\n", path);
	rc = load(c, text, err, errlen);
	unlink(path);
	return rc;
}

/* Expects users to fail with "<its path>:<line>: <msg>". */
static void
expect_users_error(const char *users, int line, const char *msg)
{
	struct config c;
	char err[600], want[600];

	assert_int_equal(load_users(&c, users, err, sizeof(err)), -1);
	assert_null(c.users);
	snprintf(want, sizeof(want), ":%d: %s", line, msg);
	assert_non_null(strchr(err, ':'));
	assert_string_equal(strchr(err, ':'), want);
}

static void
test_users_file(void **state)
{
	struct config c;
	const struct user *u;
	char err[600], out[OTP_MAX_IDENTITY];

	(void)state;
	assert_int_equal(load_users(&c, "# team\n\n+447700900123 zoe\n"
	    "  +12015550123\talice   admins,ops  # lead\r\n"
	    "+12015550187 bob", err, sizeof(err)), 0);
	assert_int_equal(c.nusers, 3);
	assert_string_equal(c.users[0].phone, "+12015550123"); /* sorted */
	assert_string_equal(c.users[2].phone, "+447700900123");
	assert_non_null(u = user_find(&c, "+12015550123"));
	assert_string_equal(u->name, "alice");
	assert_string_equal(u->groups, "admins,ops");
	assert_string_equal(user_find(&c, "+447700900123")->name, "zoe");
	assert_null(user_find(&c, "+12015550124"));
	assert_null(user_find(&c, "+1201555012"));
	assert_false(user_may_pass(&c, "+12015550124"));
	assert_true(user_may_pass(&c, "+12015550187"));
	assert_int_equal(identity_headers(&c, "+12015550123", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "Remote-User: alice\r\nRemote-Groups: "
	    "admins,ops\r\nRemote-Phone: +12015550123\r\n"
	    "X-Otp-Phone: +12015550123\r\n");
	assert_int_equal(identity_headers(&c, "+12015550124", out,
	    sizeof(out)), -1);
	assert_int_equal(identity_headers(&c, "+12015550187", out, 40), -1);
	free(c.users);

	/* Without USERS_FILE anyone passes, and is their number. */
	assert_int_equal(load(&c, "", err, sizeof(err)), 0);
	assert_true(user_may_pass(&c, "+12015550124"));
	assert_int_equal(identity_headers(&c, "+12015550124", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "Remote-User: +12015550124\r\nRemote-Groups: "
	    "\r\nRemote-Phone: +12015550124\r\nX-Otp-Phone: +12015550124\r\n");

	/* An empty one lets nobody pass. */
	assert_int_equal(load_users(&c, "# nobody yet\n", err, sizeof(err)),
	    0);
	assert_int_equal(c.nusers, 0);
	assert_false(user_may_pass(&c, "+12015550123"));
	free(c.users);
}

static void
test_users_file_errors(void **state)
{
	const char *e164 = "the number must be E.164, like +12015550123, and "
	    "able to receive SMS";
	const char *groups = "the groups must be a comma-separated list of "
	    "letters, digits and ._-, at most 96 characters";
	struct config c;
	char *many, err[600];
	size_t n = 0;

	(void)state;
	expect_users_error("+12015550123\n", 1,
	    "a user name must follow the number");
	expect_users_error("# x\n+1 201 555 0123 alice\n", 2, e164);
	expect_users_error("12015550123 alice\n", 1, e164);
	expect_users_error("+1(201)5550123 alice\n", 1, e164);
	expect_users_error("+15555550100 alice\n", 1, e164);
	expect_users_error("+12015550123 al!ce\n", 1, "the user name must be "
	    "1 to 32 letters, digits and ._-");
	expect_users_error("+12015550123 "
	    "a234567890123456789012345678901234\n", 1, "the user name must be "
	    "1 to 32 letters, digits and ._-");
	expect_users_error("+12015550123 alice ad:min\n", 1, groups);
	expect_users_error("+12015550123 alice a,,b\n", 1, groups);
	expect_users_error("+12015550123 alice ,a\n", 1, groups);
	expect_users_error("+12015550123 alice a,\n", 1, groups);
	expect_users_error("+12015550123 alice a b\n", 1,
	    "unexpected text after the groups");
	expect_users_error("+12015550187 bob\n+12015550123 alice\n\n"
	    "+12015550187 robert\n", 4,
	    "the number is listed already, on line 1");
	/* At most OTP_MAX_USERS users. */
	many = malloc((OTP_MAX_USERS + 1) * 16 + 1);
	assert_non_null(many);
	for (int i = 0; i < OTP_MAX_USERS; i++)
		n += (size_t)snprintf(many + n, 17, "+1201555%04d u%d\n", i,
		    i % 10);
	assert_int_equal(load_users(&c, many, err, sizeof(err)), 0);
	assert_int_equal(c.nusers, OTP_MAX_USERS);
	assert_string_equal(user_find(&c, "+12015551023")->name, "u3");
	free(c.users);
	snprintf(many + n, 17, "+12015559999 u\n");
	expect_users_error(many, OTP_MAX_USERS + 1, "more than 1024 users");
	free(many);
}

static void
test_config_missing_file(void **state)
{
	struct config c;
	char err[600];

	(void)state;
	assert_int_equal(config_load(&c, "/nonexistent/x.cfg", err,
	    sizeof(err)), -1);
	assert_string_equal(err,
	    "/nonexistent/x.cfg: cannot open: No such file or directory");
}

/* ---- codes ------------------------------------------------------------- */

static struct otp *
make_otp(void)
{
	char err[256];
	struct otp *otp = otp_create(NULL, err, sizeof(err));

	assert_non_null(otp);
	otp->now_ms = fake_clock;
	return otp;
}

static void
test_code_hex_lengths(void **state)
{
	struct otp *otp = make_otp();
	char code[OTP_MAX_CODE_LEN + 1];

	(void)state;
	otp->cfg->alphabet = ALPHABET_HEX;
	for (size_t len = 1; len <= OTP_MAX_CODE_LEN; len++) {
		assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, len, NULL, 0), 0);
		assert_int_equal(strlen(code), len);
		assert_int_equal(strspn(code, "0123456789ABCDEF"), len);
	}
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 0, NULL, 0), -1);
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, OTP_MAX_CODE_LEN + 1, NULL, 0), -1);

	/* With a known source: bytes 0xab 0xcd give "ABC" for length 3. */
	otp->rng = fake_rng;
	fake_byte = 0xab;
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 3, NULL, 0), 0);
	assert_string_equal(code, "ABA"); /* 0xab, 0xac -> "ABAC" cut to 3 */
	otp_destroy(otp);
}

static void
test_code_digits_unbiased(void **state)
{
	struct otp *otp = make_otp();
	char code[OTP_MAX_CODE_LEN + 1];
	uint8_t id[OTP_ID_LEN];

	(void)state;
	otp->cfg->alphabet = ALPHABET_DIGITS;
	otp->rng = fake_rng;
	/* Bytes 250..255 are rejected; 0 then gives '0'. */
	fake_byte = 250;
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 2, NULL, 0), 0);
	assert_string_equal(code, "01");
	/* One draw for a code and its id: the id first, then the code's
	 * bytes; drawn again only for digits that were rejected. */
	fake_byte = 0x10, fake_draws = 0;
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 6, id,
	    sizeof(id)), 0);
	assert_int_equal(fake_draws, 1);
	assert_int_equal(id[0], 0x10);
	assert_int_equal(id[OTP_ID_LEN - 1], 0x10 + OTP_ID_LEN - 1);
	assert_string_equal(code, "234567"); /* 0x20..0x25: 32..37 */
	fake_byte = 256 - OTP_ID_LEN - 2, fake_draws = 0; /* 2 rejected */
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 6, id,
	    sizeof(id)), 0);
	assert_int_equal(fake_draws, 2);
	assert_string_equal(code, "012345"); /* 254 255: 0 1 2 3, then 4 5 */
	otp->cfg->alphabet = ALPHABET_HEX;
	fake_byte = 0x10, fake_draws = 0;
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 6, id,
	    sizeof(id)), 0);
	assert_int_equal(fake_draws, 1);
	assert_string_equal(code, "202122");
	otp->cfg->alphabet = ALPHABET_DIGITS;
	otp->rng = rng_drbg;
	assert_int_equal(code_generate(otp, otp->cfg->alphabet, code, 6, NULL, 0), 0);
	assert_int_equal(strspn(code, "0123456789"), 6);
	otp_destroy(otp);
}

static int
cmp_codes(const void *a, const void *b)
{
	return strcmp(a, b);
}

static void
test_code_no_repeats(void **state)
{
	enum { N = 10000 };
	static char codes[N][OTP_MAX_CODE_LEN + 1];
	struct otp *otp = make_otp();

	(void)state;
	otp->cfg->alphabet = ALPHABET_HEX;
	for (int i = 0; i < N; i++)
		assert_int_equal(code_generate(otp, otp->cfg->alphabet, codes[i], 16, NULL, 0), 0);
	qsort(codes, N, sizeof(codes[0]), cmp_codes);
	for (int i = 1; i < N; i++)
		assert_string_not_equal(codes[i - 1], codes[i]);
	otp_destroy(otp);
}

static void
test_code_mac_case_insensitive(void **state)
{
	struct otp *otp = make_otp();
	uint8_t a[OTP_MAC_LEN], b[OTP_MAC_LEN], c[OTP_MAC_LEN];

	(void)state;
	code_mac(otp, "1A2B", 4, a);
	code_mac(otp, "1a2b", 4, b);
	code_mac(otp, "1A2C", 4, c);
	assert_memory_equal(a, b, OTP_MAC_LEN);
	assert_memory_not_equal(a, c, OTP_MAC_LEN);
	otp_destroy(otp);
}

/* A prepared key gives the plain HMAC's bytes: every input length around
 * the block boundaries, and each key otp_create() prepares. */
static void
test_hmac_keyed(void **state)
{
	struct otp *otp = make_otp();
	const struct {
		const uint8_t *key;
		const struct hmac_key *hk;
	} keys[] = {
		{ otp->code_key, &otp->code_hk }, { otp->csrf_key, &otp->csrf_hk },
		{ otp->auth_key, &otp->auth_hk }, { otp->sid_key, &otp->sid_hk },
		{ otp->cmp_key, &otp->cmp_hk },
		{ otp->limits.key, &otp->limits.hkey },
	};
	uint8_t key[OTP_KEY_LEN], in[200], a[OTP_MAC_LEN], b[OTP_MAC_LEN];
	struct hmac_key hk;

	(void)state;
	for (size_t i = 0; i < sizeof(key); i++)
		key[i] = (uint8_t)(i * 7 + 1);
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 13 + 5);
	hmac_key_init(&hk, key);
	for (size_t len = 0; len <= sizeof(in); len++) {
		assert_int_equal(hmac256(key, in, len, a), 0);
		assert_int_equal(hmac_keyed(&hk, in, len, b), 0);
		assert_memory_equal(a, b, OTP_MAC_LEN);
	}
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		assert_int_equal(hmac256(keys[k].key, "csrf:00", 7, a), 0);
		assert_int_equal(hmac_keyed(keys[k].hk, "csrf:00", 7, b), 0);
		assert_memory_equal(a, b, OTP_MAC_LEN);
	}
	/* A known answer (Python's hmac, RFC 4231 case 2's input, the key
	 * above), so both could not be wrong alike. */
	assert_int_equal(hmac_keyed(&hk, "what do ya want for nothing?", 28, a),
	    0);
	assert_int_equal(hex_decode("281064dd7ac7dffb0ffba50dffddc39a"
	    "ef0f708e562a10197c4a5e8910a4e28f", 64, b), 0);
	assert_memory_equal(a, b, OTP_MAC_LEN);
	otp_destroy(otp);
}

/* hmac_memo() gives hmac_keyed()'s bytes: inputs of every length around
 * the memo's 48, under two keys, repeated in an order that keeps the
 * memo evicting; and the session helpers built on it. */
static void
test_hmac_memo(void **state)
{
	struct otp *otp = make_otp();
	const struct hmac_key *keys[] = { &otp->sid_hk, &otp->csrf_hk };
	uint8_t in[64], a[OTP_MAC_LEN], b[OTP_MAC_LEN], id[OTP_SID_LEN];
	char cookie[SID_COOKIE_LEN + 1], want[SID_COOKIE_LEN + 1];
	char csrf[2 * OTP_MAC_LEN + 1], sid[2 * OTP_SID_LEN + 1];
	char buf[64];

	(void)state;
	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (uint8_t)(i * 29 + 3);
	for (unsigned round = 0; round < 2000; round++) {
		size_t len = (round * 7) % 61;
		const struct hmac_key *hk = keys[(round / 3) % 2];

		in[0] = (uint8_t)(round % 11); /* 11 inputs of each length */
		assert_int_equal(hmac_memo(hk, in, len, a), 0);
		assert_int_equal(hmac_keyed(hk, in, len, b), 0);
		assert_memory_equal(a, b, OTP_MAC_LEN);
	}
	/* Zero padding must not make "a" and "a\0" one input. */
	for (size_t len = 0; len < 4; len++) {
		static const uint8_t z[4] = { 'a', 0, 0, 0 };

		assert_int_equal(hmac_memo(&otp->sid_hk, z, len, a), 0);
		assert_int_equal(hmac_keyed(&otp->sid_hk, z, len, b), 0);
		assert_memory_equal(a, b, OTP_MAC_LEN);
	}
	for (unsigned round = 0; round < 200; round++) {
		memset(id, (int)(round % 13), sizeof(id));
		session_cookie(otp, id, cookie);
		hmac_keyed(&otp->sid_hk, id, sizeof(id), a);
		hex_encode(id, sizeof(id), want, false);
		hex_encode(a, OTP_SID_LEN, want + 2 * OTP_SID_LEN, false);
		assert_string_equal(cookie, want);
		hex_encode(id, sizeof(id), sid, false);
		csrf_for(otp, sid, csrf);
		snprintf(buf, sizeof(buf), "csrf:%s", sid);
		hmac_keyed(&otp->csrf_hk, buf, strlen(buf), a);
		hex_encode(a, sizeof(a), want, false);
		assert_string_equal(csrf, want);
	}
	otp_destroy(otp);
}

/* limits_hash() remembers recent hashes per thread: what it returns is
 * still the keyed hash of the input under this instance's key, also
 * after evictions, and not another instance's (a new key at perhaps the
 * same address). */
static void
test_limits_hash_memo(void **state)
{
	struct otp *a = make_otp(), *b;
	const char *in[] = { "n1:+12015550123", "n1:+12015550124", "4abcd",
	    "N0123456789abcdef", "n2:+12015550123", "", "x" };
	const size_t nin = sizeof(in) / sizeof(in[0]);
	uint8_t mac[OTP_MAC_LEN], big[40] = { 1 };
	uint64_t want[8], k;

	(void)state;
	for (size_t i = 0; i < nin; i++) {
		hmac_keyed(&a->limits.hkey, in[i], strlen(in[i]), mac);
		memcpy(&want[i], mac, sizeof(want[i]));
		want[i] |= 1;
	}
	for (size_t round = 0; round < 5 * nin; round++) {
		size_t i = (round * 3) % nin;

		assert_true(limits_hash(&a->limits, in[i], strlen(in[i])) ==
		    want[i]);
	}
	/* Longer than the memo holds: hashed each time, the same. */
	hmac_keyed(&a->limits.hkey, big, sizeof(big), mac);
	memcpy(&k, mac, sizeof(k));
	assert_true(limits_hash(&a->limits, big, sizeof(big)) == (k | 1));
	assert_true(limits_hash(&a->limits, big, sizeof(big)) == (k | 1));
	/* The least recently used goes first: an address used by every
	 * request stays while each brings a new number. (Kept means not
	 * hashed again: with the prepared key spoilt, it still comes out.) */
	assert_true(limits_hash(&a->limits, in[2], strlen(in[2])) == want[2]);
	for (int i = 0; i < 20; i++) {
		struct hmac_key saved = a->limits.hkey;
		char num[32];

		memset(&a->limits.hkey.inner, 0x5a,
		    sizeof(a->limits.hkey.inner));
		assert_true(limits_hash(&a->limits, in[2], strlen(in[2])) ==
		    want[2]);
		a->limits.hkey = saved;
		snprintf(num, sizeof(num), "n1:+1201555%04d", i);
		limits_hash(&a->limits, num, strlen(num));
	}
	assert_true(limits_hash(&a->limits, in[0], strlen(in[0])) == want[0]);
	otp_destroy(a); /* in[0] is in the memo, under a's key */
	b = make_otp();
	hmac_keyed(&b->limits.hkey, in[0], strlen(in[0]), mac);
	memcpy(&k, mac, sizeof(k));
	assert_true(limits_hash(&b->limits, in[0], strlen(in[0])) == (k | 1));
	assert_true((k | 1) != want[0]); /* another key */
	otp_destroy(b);
}

/* A number's table key is the hash of "n<ns>:<number>" (cut to 20
 * bytes), as snprintf made it. */
static void
test_limits_number_key(void **state)
{
	struct otp *otp = make_otp();
	const char *phones[] = { "+12015550123", "+123456789012345",
	    "+1234567890123456789", "" };
	char buf[4 + OTP_MAX_PHONE_LEN + 1];

	(void)state;
	for (size_t i = 0; i < sizeof(phones) / sizeof(phones[0]); i++)
		for (int ns = NS_WEB; ns <= NS_API; ns++) {
			int n = snprintf(buf, sizeof(buf), "n%d:%s", ns,
			    phones[i]);
			size_t len = (size_t)n < sizeof(buf) ? (size_t)n :
			    sizeof(buf) - 1;

			assert_true(limits_number_key(&otp->limits,
			    (enum ns)ns, phones[i]) ==
			    limits_hash(&otp->limits, buf, len));
		}
	otp_destroy(otp);
}

/* ---- code store -------------------------------------------------------- */

static const struct owner OW1 = { NS_WEB, { 5 } }, OW2 = { NS_WEB, { 6 } };
static const struct owner OWAPI = { NS_API, { 5 } }; /* OW1's bytes */

/* store_check without the "was it a guess" answer: the number it
 * gives (its view's) in phone. */
static enum check
check_code(struct store *st, uint32_t slot, const uint8_t *id,
           const struct owner *ow, const uint8_t *mac, int64_t now,
           int64_t ttl, uint32_t max, char *phone)
{
	struct view v;
	uint32_t tries;
	enum check rc = store_check(st, slot, id, ow, mac, now, ttl, max, &v,
	    &tries);

	str_copy(phone, OTP_MAX_PHONE_LEN + 1, v.phone);
	return rc;
}

static void
test_store_add_check_once(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1, 2, 3 }, other[OTP_ID_LEN] = { 9 };
	uint8_t mac[OTP_MAC_LEN] = { 7 }, bad[OTP_MAC_LEN] = { 8 };
	char phone[OTP_MAX_PHONE_LEN + 1];
	uint32_t slot;

	(void)state;
	assert_int_equal(store_init(&st, 4), 0);
	assert_int_equal(store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 0,
	    1000, &slot), 0);
	/* Bound to its session: the right code from another session fails,
	 * and from the API namespace with the same bytes too. */
	assert_int_equal(check_code(&st, slot, id, &OW2, mac, 1, 1000, 5,
	    phone), CHECK_UNKNOWN);
	assert_int_equal(check_code(&st, slot, id, &OWAPI, mac, 1, 1000, 5,
	    phone), CHECK_UNKNOWN);
	/* Bound to its id: another id with the right code fails. */
	assert_int_equal(check_code(&st, slot, other, &OW1, mac, 1, 1000, 5,
	    phone), CHECK_UNKNOWN);
	assert_int_equal(check_code(&st, slot + 1, id, &OW1, mac, 1, 1000, 5,
	    phone), CHECK_UNKNOWN);
	assert_int_equal(check_code(&st, 99, id, &OW1, mac, 1, 1000, 5, phone),
	    CHECK_UNKNOWN);
	assert_int_equal(check_code(&st, slot, id, &OW1, bad, 1, 1000, 5, phone),
	    CHECK_WRONG);
	/* Input that cannot be a code: a wrong guess, no compare. */
	assert_int_equal(check_code(&st, slot, id, &OW1, NULL, 1, 1000, 5,
	    phone), CHECK_WRONG);
	assert_int_equal(st.rec[slot].attempts, 2);
	assert_int_equal(check_code(&st, slot, id, &OW1, mac, 1, 1000, 5, phone),
	    CHECK_OK);
	assert_string_equal(phone, "+12015550123");
	/* Works once; the tombstone keeps no secrets. */
	assert_int_equal(check_code(&st, slot, id, &OW1, mac, 2, 1000, 5, phone),
	    CHECK_DONE);
	assert_int_equal(st.rec[slot].code[0], 0);
	assert_int_equal(st.rec[slot].phone[0], 0);
	assert_int_equal(store_live(&st), 0);
	assert_int_equal(store_pending(&st), 1);
	/* The tombstone goes OTP_TOMBSTONE_MS after the code's validity. */
	store_sweep(&st, 1000 + OTP_TOMBSTONE_MS - 1, 1000);
	assert_int_equal(store_pending(&st), 1);
	store_sweep(&st, 1000 + OTP_TOMBSTONE_MS, 1000);
	assert_int_equal(store_pending(&st), 0);
	store_free(&st);
}

static void
test_store_expiry(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1 }, mac[OTP_MAC_LEN] = { 7 };
	char phone[OTP_MAX_PHONE_LEN + 1];
	int64_t left;
	uint32_t slot;

	(void)state;
	assert_int_equal(store_init(&st, 2), 0);
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 0, 1000, &slot);
	assert_int_equal(store_state(&st, slot, id, &OW1, 400, 1000, &left),
	    REC_LIVE);
	assert_int_equal(left, 600);
	assert_int_equal(store_state(&st, slot, id, &OW2, 400, 1000, &left),
	    REC_FREE);
	assert_int_equal(check_code(&st, slot, id, &OW1, mac, 1000, 1000, 5,
	    phone), CHECK_EXPIRED);
	assert_int_equal(st.rec[slot].code[0], 0);
	assert_int_equal(store_state(&st, slot, id, &OW1, 1000, 1000, &left),
	    REC_EXPIRED);
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 500, 1000, &slot);
	assert_int_equal(store_sweep(&st, 1499, 1000), 1);
	assert_int_equal(store_sweep(&st, 1500, 1000), 0);
	assert_int_equal(st.rec[slot].state, REC_EXPIRED);
	assert_int_equal(st.rec[slot].code[0], 0);
	store_free(&st);
}

static void
test_store_full(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1 }, mac[OTP_MAC_LEN] = { 7 };
	uint32_t slot, first;

	(void)state;
	assert_int_equal(store_init(&st, 3), 0);
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1, 0, 1000,
	    &first), 0);
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1, 10, 1000,
	    &slot), 0);
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1, 20, 1000,
	    &slot), 0);
	/* Full of live records: refused, nothing overwritten. */
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1, 500, 1000,
	    &slot), -1);
	assert_int_equal(store_live(&st), 3);
	/* Once the first expired, its slot is reused. */
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1, 1000, 1000,
	    &slot), 0);
	assert_int_equal(slot, first);
	store_free(&st);
}

/* Pages of st's records from slot `from` on that are mapped. */
static size_t
store_pages_mapped(const struct store *st, uint32_t from)
{
	size_t page = (size_t)sysconf(_SC_PAGESIZE);
	uintptr_t a = ((uintptr_t)&st->rec[from] + page - 1) & ~(page - 1);
	uintptr_t end = (uintptr_t)st->rec + st->rec_bytes;
	static unsigned char vec[1 << 16];
	size_t n = 0, pages = (end - a) / page;

	assert_true(pages <= sizeof(vec));
	assert_int_equal(mincore((void *)a, end - a, vec), 0);
	for (size_t i = 0; i < pages; i++)
		n += vec[i] & 1;
	return n;
}

/*
 * The sweeper ages only slots that have been used: a large table with a
 * few records costs a sweep those records, and the pages of never-used
 * records stay unmapped until a record is written there (a page first
 * read and then written costs a second fault, and a TLB flush on every
 * core the server runs on).
 */
static void
test_store_sweep_used(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1 }, mac[OTP_MAC_LEN] = { 7 };
	uint32_t slot[3], again;

	(void)state;
	assert_int_equal(store_init(&st, 100000), 0);
	for (int i = 0; i < 3; i++)
		assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id,
		    &OW1, 0, 1000, &slot[i]), 0);
	assert_int_equal(st.top, 3);
	/* All three end; a slot of theirs is the next one used. */
	assert_int_equal(store_sweep(&st, 1000 + OTP_TOMBSTONE_MS, 1000), 0);
	assert_int_equal(store_pending(&st), 0);
	assert_int_equal(store_add(&st, "+1", NULL, 0, "A", mac, id, &OW1,
	    OTP_TOMBSTONE_MS, 1000, &again), 0);
	assert_true(again < 3);
	assert_int_equal(st.top, 3);
	assert_int_equal(store_sweep(&st, OTP_TOMBSTONE_MS + 1, 1000), 1);
	assert_int_equal(store_pages_mapped(&st, st.top), 0);
	store_free(&st);
}

static void
test_store_attempts_lock(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1 }, mac[OTP_MAC_LEN] = { 7 };
	uint8_t bad[OTP_MAC_LEN] = { 8 };
	char phone[OTP_MAX_PHONE_LEN + 1], code[OTP_MAX_CODE_LEN + 1];
	uint8_t got[OTP_ID_LEN];
	uint32_t slot;

	(void)state;
	assert_int_equal(store_init(&st, 2), 0);
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 0, 10000, &slot);
	for (int i = 0; i < 2; i++)
		assert_int_equal(check_code(&st, slot, id, &OW1, bad, 1, 10000,
		    3, phone), CHECK_WRONG);
	/* A resend is for its own session only, and keeps the count. */
	assert_int_equal(store_resend(&st, slot, "+12015550123", &OW2, 2, 10000,
	    100, code, got), RESEND_NONE);
	assert_int_equal(store_resend(&st, slot, "+12015550100", &OW1, 2, 10000,
	    100, code, got), RESEND_NONE);
	assert_int_equal(store_resend(&st, slot, "+12015550123", &OW1, 2, 10000,
	    100, code, got), RESEND_OK);
	assert_string_equal(code, "ABCD");
	assert_memory_equal(got, id, OTP_ID_LEN);
	assert_int_equal(st.rec[slot].sends, 2);
	/* A send budget per verification. */
	assert_int_equal(store_resend(&st, slot, "+12015550123", &OW1, 2, 10000,
	    2, code, got), RESEND_SPENT);
	store_unsend(&st, slot, id);
	assert_int_equal(st.rec[slot].sends, 1);
	assert_int_equal(check_code(&st, slot, id, &OW2, bad, 3, 10000, 3,
	    phone), CHECK_UNKNOWN);
	assert_int_equal(check_code(&st, slot, id, &OW1, bad, 3, 10000, 3,
	    phone), CHECK_LOCKED);
	/* Locked: even the right code fails, and the code is wiped. */
	assert_int_equal(check_code(&st, slot, id, &OW1, mac, 4, 10000, 3,
	    phone), CHECK_LOCKED);
	assert_int_equal(st.rec[slot].code[0], 0);
	assert_int_equal(store_resend(&st, slot, "+12015550123", &OW1, 5, 10000,
	    100, code, got), RESEND_NONE);
	/* Cancelled by its owner only. */
	assert_int_equal(store_cancel(&st, slot, id, &OW2, 6, 10000), -1);
	assert_int_equal(store_cancel(&st, slot, id, &OW1, 6, 10000), 0);
	assert_int_equal(store_state(&st, slot, id, &OW1, 7, 10000,
	    &(int64_t){0}), REC_FREE);
	store_free(&st);
}

/* What the pages show of a record: its own session's only; an expired
 * web record keeps its number (not its code) while its tombstone lives,
 * for "Send a new code"; an API record's and a verified one's go. */
static void
test_store_view(void **state)
{
	struct store st;
	uint8_t id[OTP_ID_LEN] = { 1 }, id2[OTP_ID_LEN] = { 2 };
	uint8_t mac[OTP_MAC_LEN] = { 7 }, bad[OTP_MAC_LEN] = { 8 };
	char phone[OTP_MAX_PHONE_LEN + 1];
	struct view v;
	uint32_t slot, api;

	(void)state;
	assert_int_equal(store_init(&st, 4), 0);
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 0, 1000, &slot);
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id2, &OWAPI, 0, 1000, &api);
	store_view(&st, slot, id, &OW2, 1, 1000, "+1 (201) 555-0123", &v);
	assert_int_equal(v.state, REC_FREE);
	assert_int_equal(v.phone[0], 0);
	assert_int_equal(st.rec[slot].shown[0], 0); /* not another's to set */
	store_view(&st, slot, id2, &OW1, 1, 1000, NULL, &v);
	assert_int_equal(v.state, REC_FREE);
	store_view(&st, slot, id, &OW1, 100, 1000, "+1 (201) 555-0123", &v);
	assert_int_equal(v.state, REC_LIVE);
	assert_int_equal(v.left_ms, 900);
	assert_string_equal(v.phone, "+12015550123");
	assert_string_equal(v.shown, "+1 (201) 555-0123");
	check_code(&st, slot, id, &OW1, bad, 200, 1000, 5, phone);
	store_view(&st, slot, id, &OW1, 300, 1000, NULL, &v);
	assert_int_equal(v.attempts, 1);
	/* Expired: the code goes, the number stays, until the tombstone. */
	store_view(&st, slot, id, &OW1, 1000, 1000, NULL, &v);
	assert_int_equal(v.state, REC_EXPIRED);
	assert_int_equal(v.left_ms, 0);
	assert_string_equal(v.shown, "+1 (201) 555-0123");
	assert_int_equal(st.rec[slot].code[0], 0);
	store_view(&st, api, id2, &OWAPI, 1000, 1000, NULL, &v);
	assert_int_equal(v.state, REC_EXPIRED);
	assert_int_equal(v.phone[0], 0);
	store_view(&st, slot, id, &OW1, 1000 + OTP_TOMBSTONE_MS, 1000, NULL, &v);
	assert_int_equal(v.state, REC_FREE);
	assert_int_equal(st.rec[slot].phone[0], 0);
	assert_int_equal(st.rec[slot].shown[0], 0);
	/* Verified: the number is wiped at once. */
	store_add(&st, "+12015550123", NULL, 0, "ABCD", mac, id, &OW1, 0, 1000, &slot);
	store_view(&st, slot, id, &OW1, 1, 1000, "+1 201-555-0123", &v);
	check_code(&st, slot, id, &OW1, mac, 2, 1000, 5, phone);
	store_view(&st, slot, id, &OW1, 3, 1000, NULL, &v);
	assert_int_equal(v.state, REC_VERIFIED);
	assert_int_equal(v.phone[0], 0);
	assert_int_equal(v.shown[0], 0);
	store_free(&st);
}

/* ---- rate limits ------------------------------------------------------- */

/* One send request through limits_take(), no resend reservation. */
static enum limit
take(struct otp *otp, enum ns ns, const char *phone, const char *addr,
     int64_t now, long *retry)
{
	struct client cl;
	struct take tk = { ns, phone, &cl, 0, -1, 0 };
	enum limit rc;

	client_init(otp, otp->cfg, &cl, addr);
	rc = limits_take(otp, otp->cfg, &tk, now, NULL, NULL);
	*retry = tk.retry;
	return rc;
}

static void
test_limits_windows(void **state)
{
	struct otp *otp = make_otp();
	long retry = 0;

	(void)state;
	otp->cfg->resend_interval = 30;
	otp->cfg->sms_per_number_per_hour = 2;
	otp->cfg->sms_per_ip_per_hour = 3;
	fake_now = 10 * HOUR_MS;
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1", fake_now,
	    &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1",
	    fake_now + 1000, &retry), LIMIT_RESEND);
	assert_int_equal(retry, 29);
	/* The API's budget for a number is its own. */
	assert_int_equal(take(otp, NS_API, "+1201", NULL, fake_now + 1000,
	    &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1",
	    fake_now + 30000, &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1",
	    fake_now + 60000, &retry), LIMIT_NUMBER);
	assert_int_equal(retry, 3600 - 60);
	assert_int_equal(take(otp, NS_WEB, "+1666", "10.1.1.1",
	    fake_now + 60000, &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1777", "10.1.1.1",
	    fake_now + 60000, &retry), LIMIT_IP);
	/* IPv6: the address is its /64 (IPV6_PREFIX). */
	assert_int_equal(take(otp, NS_WEB, "+1801", "2001:db8:1:2::1",
	    fake_now, &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1802", "2001:db8:1:2:ffff::9",
	    fake_now, &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1803", "2001:db8:1:2::abcd",
	    fake_now, &retry), LIMIT_NONE);
	assert_int_equal(take(otp, NS_WEB, "+1804", "2001:db8:1:2::1:1",
	    fake_now, &retry), LIMIT_IP);
	assert_int_equal(take(otp, NS_WEB, "+1804", "2001:db8:1:3::1",
	    fake_now, &retry), LIMIT_NONE);
	/* An IPv4-mapped address is the IPv4 one. */
	assert_int_equal(take(otp, NS_WEB, "+1805", "::ffff:10.1.1.1",
	    fake_now + 60000, &retry), LIMIT_IP);
	/* A window later, everything is allowed again. */
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1",
	    fake_now + HOUR_MS, &retry), LIMIT_NONE);
	otp_destroy(otp);
}

/* limits_wait() for a page's view of a record for phone in ns: by the
 * number's key the record keeps, and (the web's) by its number alone,
 * which must agree. */
static long
wait_of(struct otp *otp, enum ns ns, const char *phone, int64_t now)
{
	struct view v;
	long by_key;

	memset(&v, 0, sizeof(v));
	str_copy(v.phone, sizeof(v.phone), phone);
	v.nkey = limits_number_key(&otp->limits, ns, phone);
	by_key = limits_wait(otp, otp->cfg, &v, now);
	v.nkey = 0;
	if (ns == NS_WEB)
		assert_int_equal(limits_wait(otp, otp->cfg, &v, now), by_key);
	return by_key;
}

/* The code page's countdown: RESEND_INTERVAL left for a number, as a
 * refused send would say it; it counts nothing. */
static void
test_limits_wait(void **state)
{
	struct otp *otp = make_otp();
	long retry = 0;

	(void)state;
	otp->cfg->resend_interval = 30;
	fake_now = 10 * HOUR_MS;
	assert_int_equal(wait_of(otp, NS_WEB, "+1201", fake_now), 0);
	take(otp, NS_WEB, "+1201", "10.1.1.1", fake_now, &retry);
	assert_int_equal(wait_of(otp, NS_WEB, "+1201", fake_now), 30);
	assert_int_equal(wait_of(otp, NS_WEB, "+1201",
	    fake_now + 1500), 29);
	assert_int_equal(take(otp, NS_WEB, "+1201", "10.1.1.1",
	    fake_now + 1500, &retry), LIMIT_RESEND);
	assert_int_equal(retry, 29);
	assert_int_equal(wait_of(otp, NS_API, "+1201", fake_now), 0);
	assert_int_equal(wait_of(otp, NS_WEB, "+1202", fake_now), 0);
	assert_int_equal(wait_of(otp, NS_WEB, "+1201",
	    fake_now + 30000), 0);
	otp_destroy(otp);
}

static void
test_limits_global(void **state)
{
	struct otp *otp = make_otp();
	char phone[32], addr[32];
	long retry;
	int sent = 0;

	(void)state;
	otp->cfg->sms_per_hour = 5;
	otp->cfg->sms_per_day = 7;
	otp->cfg->network_share = 100;
	fake_now = 100 * HOUR_MS;
	for (int i = 0; i < 100; i++) {
		snprintf(phone, sizeof(phone), "+1201555%04d", i);
		snprintf(addr, sizeof(addr), "10.0.%d.%d", i / 256, i % 256);
		if (take(otp, NS_WEB, phone, addr, fake_now, &retry) ==
		    LIMIT_NONE)
			sent++;
	}
	assert_int_equal(sent, 5);
	assert_int_equal(take(otp, NS_WEB, "+1999", "10.9.9.9", fake_now,
	    &retry), LIMIT_HOUR);
	fake_now += HOUR_MS;
	for (int i = 0; i < 10; i++) {
		snprintf(phone, sizeof(phone), "+1666%07d", i);
		snprintf(addr, sizeof(addr), "10.1.%d.1", i);
		if (take(otp, NS_WEB, phone, addr, fake_now, &retry) ==
		    LIMIT_NONE)
			sent++;
	}
	assert_int_equal(sent, 7); /* the day cap */
	otp_destroy(otp);
}

static void
test_limits_network_share(void **state)
{
	struct otp *otp = make_otp();
	char phone[32], addr[64];
	long retry;
	int sent = 0;

	(void)state;
	otp->cfg->sms_per_hour = 40; /* a network: 25% of it, 10 */
	fake_now = 300 * HOUR_MS;
	for (int i = 0; i < 30; i++) {
		snprintf(phone, sizeof(phone), "+1555%07d", i);
		snprintf(addr, sizeof(addr), "2001:db8:7:%x::1", i);
		sent += take(otp, NS_WEB, phone, addr, fake_now, &retry) ==
		    LIMIT_NONE;
	}
	assert_int_equal(sent, 10);
	assert_int_equal(take(otp, NS_WEB, "+1999", "2001:db8:7:ff::1",
	    fake_now, &retry), LIMIT_NETWORK);
	/* The API's own calls count toward its cap, not a network's. */
	otp->cfg->api_sms_per_hour = 3;
	for (int i = 0; i < 3; i++) {
		snprintf(phone, sizeof(phone), "+1666%07d", i);
		assert_int_equal(take(otp, NS_API, phone, NULL, fake_now,
		    &retry), LIMIT_NONE);
	}
	assert_int_equal(take(otp, NS_API, "+1777", NULL, fake_now, &retry),
	    LIMIT_API_HOUR);
	otp_destroy(otp);
}

/* The bug of the old table: a stale slot earlier in a key's chain was
 * taken before its live window further on was found. */
static void
test_limits_chain_search(void **state)
{
	struct ratetab t;
	struct window *w;
	uint64_t a = 8 * 16 + 1, k = 8 * 32 + 1; /* same home slot in 16 */

	(void)state;
	assert_int_equal(ratetab_init(&t, 16, HOUR_MS), 0);
	w = ratetab_find(&t, a, 0, 0);
	window_add(&t, w, a, 0);
	w = ratetab_find(&t, k, 10, 0);
	assert_ptr_not_equal(w, &t.w[a & t.mask]);
	window_add(&t, w, k, 10);
	window_add(&t, w, k, 20);
	/* a's window ends; k's is still live one slot on. */
	w = ratetab_find(&t, k, HOUR_MS + 5, 0);
	assert_int_equal(w->key, k);
	assert_int_equal(window_count(&t, w, k, HOUR_MS + 5), 2);
	free(t.w);
}

/* A table full of live windows refuses a new key: nothing is evicted. */
static void
test_limits_fail_closed(void **state)
{
	struct ratetab t;
	struct window *w;

	(void)state;
	assert_int_equal(ratetab_init(&t, 64, HOUR_MS), 0);
	for (uint64_t key = 1; key <= 64; key++) {
		w = ratetab_find(&t, key * 2 + 1, 0, 0);
		assert_non_null(w);
		window_add(&t, w, key * 2 + 1, 0);
	}
	for (uint64_t key = 1000; key < 2000; key++)
		assert_null(ratetab_find(&t, key * 2 + 1, 10, 0));
	/* Every window kept its count. */
	for (uint64_t key = 1; key <= 64; key++) {
		w = ratetab_find(&t, key * 2 + 1, 10, 0);
		assert_int_equal(window_count(&t, w, key * 2 + 1, 10), 1);
	}
	/* Once they end, the slots are free again... */
	assert_non_null(ratetab_find(&t, 5001, HOUR_MS, 0));
	/* ...but a number's window is kept while its RESEND_INTERVAL
	 * (hold) still runs past the end of its period. */
	for (uint32_t i = 0; i <= t.mask; i++)
		t.w[i].last_ms = HOUR_MS - 1;
	assert_null(ratetab_find(&t, 5001, HOUR_MS, 30000));
	assert_non_null(ratetab_find(&t, 5001, HOUR_MS + 30000, 30000));
	free(t.w);
}

/* Through limits_take(): a number whose probes all hold other keys' live
 * windows is refused as LIMIT_FULL (503 to the client), and nothing is
 * counted, evicted or made. */
static void
test_limits_take_full(void **state)
{
	struct otp *otp = make_otp();
	struct ratetab *t = &otp->limits.tab[T_NUMBER];
	uint64_t changes;
	long retry = 0;

	(void)state;
	fake_now = 400 * HOUR_MS;
	for (uint32_t i = 0; i <= t->mask; i++) {
		t->w[i].key = 2 * (uint64_t)i + 1000001; /* odd: a key */
		t->w[i].start_ms = fake_now;
		t->w[i].count = 1;
	}
	changes = otp->limits.changes;
	assert_int_equal(take(otp, NS_WEB, "+12015550123", "10.1.1.1",
	    fake_now + 1000, &retry), LIMIT_FULL);
	assert_true(limit_is_global(LIMIT_FULL));
	assert_true(retry > 0);
	assert_int_equal(otp->limits.changes, changes);
	for (uint32_t i = 0; i <= t->mask; i++)
		assert_int_equal(t->w[i].key, 2 * (uint64_t)i + 1000001);
	/* An hour on, the windows have ended and make room. */
	assert_int_equal(take(otp, NS_WEB, "+12015550123", "10.1.1.1",
	    fake_now + HOUR_MS, &retry), LIMIT_NONE);
	otp_destroy(otp);
}

static void
test_limits_verify_budget(void **state)
{
	struct otp *otp = make_otp();
	struct client a, b;
	long retry = 0;
	uint64_t changes;

	(void)state;
	otp->cfg->verify_per_ip_per_hour = 3;
	fake_now = 200 * HOUR_MS;
	client_init(otp, otp->cfg, &a, "1.2.3.4");
	client_init(otp, otp->cfg, &b, "5.6.7.8");
	/* Checks that were not guesses give their reservation back and
	 * leave no window behind, and nothing for limits.state to write. */
	changes = otp->limits.changes;
	for (int i = 0; i < 10; i++) {
		assert_int_equal(limits_verify_take(otp, otp->cfg, &a, fake_now, &retry),
		    LIMIT_NONE);
		limits_verify_undo(otp, &a, fake_now);
	}
	for (uint32_t i = 0; i <= otp->limits.tab[T_VERIFY].mask; i++)
		assert_int_not_equal(otp->limits.tab[T_VERIFY].w[i].key, a.akey);
	assert_int_equal(otp->limits.changes, changes);
	for (int i = 0; i < 3; i++) {
		assert_int_equal(limits_verify_take(otp, otp->cfg, &a, fake_now, &retry),
		    LIMIT_NONE); /* a wrong code: kept, no second step */
	}
	assert_int_equal(otp->limits.changes, changes + 3);
	assert_int_equal(limits_verify_take(otp, otp->cfg, &a, fake_now + 1000, &retry),
	    LIMIT_VERIFY_IP);
	assert_int_equal(retry, 3599);
	assert_int_equal(limits_verify_take(otp, otp->cfg, &b, fake_now, &retry),
	    LIMIT_NONE);
	otp_destroy(otp);
}

/* ---- phone numbers ----------------------------------------------------- */

#include "numbering_data.h"

/* One number as typed, COUNTRY_CODE, and what phone_normalise() makes of
 * it: PHONE_OK and the E.164 number, or the refusal. */
struct phone_case {
	const char *in, *country;
	int rc;
	const char *want;
};

static void
expect_phones(const struct phone_case *t, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		char out[OTP_MAX_PHONE_LEN + 1];
		int rc = phone_normalise(t[i].in, strlen(t[i].in), t[i].country,
		    out, sizeof(out));

		if (rc != t[i].rc || (rc == PHONE_OK &&
		    strcmp(out, t[i].want) != 0))
			fail_msg("%s with COUNTRY_CODE %s: %d %s, want %d %s",
			    t[i].in, t[i].country, rc, out, t[i].rc,
			    t[i].want ? t[i].want : "");
	}
}

static void
test_phone_normalise(void **state)
{
	static const struct phone_case t[] = {
		{ "(201) 555-0123", "+1", PHONE_OK, "+12015550123" },
		{ "201.555.0123", "+1", PHONE_OK, "+12015550123" },
		{ "+44 20 7946 0958", "+1", PHONE_OK, "+442079460958" },
		{ "2079460958", "+44", PHONE_OK, "+442079460958" },
		/* the international prefixes: 00 anywhere, 011 in the NANP */
		{ "011 44 20 7946 0958", "+1", PHONE_OK, "+442079460958" },
		{ "0044 20 7946 0958", "+1", PHONE_OK, "+442079460958" },
		{ "0044 20 7946 0958", "+44", PHONE_OK, "+442079460958" },
		{ "00 1 201 555 0123", "+44", PHONE_OK, "+12015550123" },
		{ "8 10 44 20 7946 0958", "+7", PHONE_OK, "+442079460958" },
		{ "0011 44 20 7946 0958", "+61", PHONE_OK, "+442079460958" },
		/* the trunk prefix: 1 in the NANP, 0 in the UK, 8 in Russia */
		{ "1-876-555-0100", "+1", PHONE_OK, "+18765550100" },
		{ "1 (201) 555-0123", "+1", PHONE_OK, "+12015550123" },
		{ "07700 900123", "+44", PHONE_OK, "+447700900123" },
		{ "7700 900123", "+44", PHONE_OK, "+447700900123" },
		{ "+44 (0)20 7946 0958", "+1", PHONE_OK, "+442079460958" },
		{ "8 (912) 345-67-89", "+7", PHONE_OK, "+79123456789" },
		{ "(912) 345-67-89", "+7", PHONE_OK, "+79123456789" },
		{ "06 20 123 4567", "+36", PHONE_OK, "+36201234567" },
		{ "8 800 123 45 67", "+7", PHONE_OK, "+78001234567" },
		{ "8 812 345 67 89", "+7", PHONE_OK, "+78123456789" },
		/* a trunk prefix twice: which one was meant? */
		{ "+46 0041960588", "+1", PHONE_INVALID, NULL },
		{ "00 20 7946 0958", "+44", PHONE_OK, "+2079460958" },
		{ "030/123456", "+49", PHONE_OK, "+4930123456" },
		/* Italy has no trunk prefix: its numbers keep their 0 */
		{ "02 1234 5678", "+39", PHONE_OK, "+390212345678" },
		{ "+39 02 1234 5678", "+1", PHONE_OK, "+390212345678" },
		/* impossible lengths for the country */
		{ "+1234567", "+1", PHONE_LENGTH, NULL },
		{ "+1 234 5678", "+1", PHONE_LENGTH, NULL },
		{ "+1 555 123 45678", "+1", PHONE_LENGTH, NULL },
		{ "12345", "+1", PHONE_LENGTH, NULL },
		{ "+44 7700 9001234", "+1", PHONE_LENGTH, NULL },
		{ "+33 6 12 34 56 7", "+1", PHONE_LENGTH, NULL },
		{ "+49 123", "+1", PHONE_LENGTH, NULL },
		{ "+65 8123 456", "+1", PHONE_LENGTH, NULL },
		{ "+7 912 345 678", "+1", PHONE_LENGTH, NULL },
		{ "5555555555555555555555555", "+1", PHONE_LENGTH, NULL },
		{ "+1234567890123456", "+1", PHONE_LENGTH, NULL },
		/* not numbers */
		{ "+0123456789", "+1", PHONE_INVALID, NULL },
		{ "+999 1234 5678", "+1", PHONE_INVALID, NULL },
		{ "201-CALL-NOW", "+1", PHONE_INVALID, NULL },
		{ "201\"5550123", "+1", PHONE_INVALID, NULL },
		{ "++12015550123", "+1", PHONE_INVALID, NULL },
		{ "1201+5550123", "+1", PHONE_INVALID, NULL },
		{ "", "+1", PHONE_INVALID, NULL },
		{ "+", "+1", PHONE_INVALID, NULL },
		{ "2015550123\n", "+1", PHONE_INVALID, NULL },
		/* no country's: global premium rate, satellite */
		{ "+979 1234 5678", "+1", PHONE_RANGE, NULL },
		{ "+881 6 1234 5678", "+1", PHONE_RANGE, NULL },
	};

	(void)state;
	expect_phones(t, countof(t));
}

/* Real-format numbers of 30 countries: as typed at home (trunk prefix and
 * all) and from abroad, checked against libphonenumber 8.12.57. */
static void
test_phone_countries(void **state)
{
	static const struct {
		const char *iso, *cc, *national, *intl, *e164;
	} t[] = {
		{ "US", "+1", "(201) 555-0123", "+1 201-555-0123", "+12015550123" },
		{ "CA", "+1", "(416) 555-0123", "+1 416-555-0123", "+14165550123" },
		{ "GB", "+44", "07700 900123", "+44 7700 900123", "+447700900123" },
		{ "GB", "+44", "020 7946 0958", "+44 20 7946 0958", "+442079460958" },
		{ "DE", "+49", "01512 3456789", "+49 1512 3456789", "+4915123456789" },
		{ "DE", "+49", "030 123456", "+49 30 123456", "+4930123456" },
		{ "FR", "+33", "06 12 34 56 78", "+33 6 12 34 56 78", "+33612345678" },
		{ "IT", "+39", "312 345 6789", "+39 312 345 6789", "+393123456789" },
		{ "IT", "+39", "02 1234 5678", "+39 02 1234 5678", "+390212345678" },
		{ "ES", "+34", "612 34 56 78", "+34 612 34 56 78", "+34612345678" },
		{ "NL", "+31", "06 12345678", "+31 6 12345678", "+31612345678" },
		{ "BE", "+32", "0470 12 34 56", "+32 470 12 34 56", "+32470123456" },
		{ "CH", "+41", "078 123 45 67", "+41 78 123 45 67", "+41781234567" },
		{ "AT", "+43", "0664 123456", "+43 664 123456", "+43664123456" },
		{ "SE", "+46", "070-123 45 67", "+46 70 123 45 67", "+46701234567" },
		{ "NO", "+47", "406 12 345", "+47 406 12 345", "+4740612345" },
		{ "DK", "+45", "32 12 34 56", "+45 32 12 34 56", "+4532123456" },
		{ "PL", "+48", "512 345 678", "+48 512 345 678", "+48512345678" },
		{ "PT", "+351", "912 345 678", "+351 912 345 678", "+351912345678" },
		{ "IE", "+353", "085 012 3456", "+353 85 012 3456", "+353850123456" },
		{ "RU", "+7", "8 (912) 345-67-89", "+7 912 345-67-89", "+79123456789" },
		{ "KZ", "+7", "8 (771) 000 9998", "+7 771 000 9998", "+77710009998" },
		{ "JP", "+81", "090-1234-5678", "+81 90-1234-5678", "+819012345678" },
		{ "CN", "+86", "131 2345 6789", "+86 131 2345 6789", "+8613123456789" },
		{ "IN", "+91", "081234 56789", "+91 81234 56789", "+918123456789" },
		{ "AU", "+61", "0412 345 678", "+61 412 345 678", "+61412345678" },
		{ "NZ", "+64", "021 123 4567", "+64 21 123 4567", "+64211234567" },
		{ "BR", "+55", "(11) 96123-4567", "+55 11 96123-4567", "+5511961234567" },
		{ "MX", "+52", "222 123 4567", "+52 222 123 4567", "+522221234567" },
		{ "ZA", "+27", "071 123 4567", "+27 71 123 4567", "+27711234567" },
		{ "NG", "+234", "0802 123 4567", "+234 802 123 4567", "+2348021234567" },
		{ "EG", "+20", "0100 123 4567", "+20 100 123 4567", "+201001234567" },
		{ "IL", "+972", "050-234-5678", "+972 50-234-5678", "+972502345678" },
		{ "TR", "+90", "0501 234 56 78", "+90 501 234 56 78", "+905012345678" },
		{ "KR", "+82", "010-2000-0000", "+82 10-2000-0000", "+821020000000" },
		{ "SG", "+65", "8123 4567", "+65 8123 4567", "+6581234567" },
		{ "HU", "+36", "06 20 123 4567", "+36 20 123 4567", "+36201234567" },
		{ "FI", "+358", "041 2345678", "+358 41 2345678", "+358412345678" },
		{ "GR", "+30", "691 234 5678", "+30 691 234 5678", "+306912345678" },
	};
	struct config c;
	char err[600];

	(void)state;
	for (size_t i = 0; i < countof(t); i++) {
		struct phone_case p[] = {
			{ t[i].national, t[i].cc, PHONE_OK, t[i].e164 },
			{ t[i].intl, "+1", PHONE_OK, t[i].e164 },
			{ t[i].intl, "+44", PHONE_OK, t[i].e164 },
		};
		char cfg[128], out[OTP_MAX_PHONE_LEN + 1];

		expect_phones(p, countof(p));
		/* allowed by its ISO code, and by its calling code */
		snprintf(cfg, sizeof(cfg), "COUNTRY_CODE='%s'\n"
		    "ALLOWED_COUNTRY_CODES='%s'\n", t[i].cc, t[i].iso);
		assert_int_equal(load(&c, cfg, err, sizeof(err)), 0);
		assert_int_equal(phone_read(&c, t[i].national,
		    strlen(t[i].national), out, sizeof(out)), PHONE_OK);
		snprintf(cfg, sizeof(cfg), "COUNTRY_CODE='%s'\n", t[i].cc);
		assert_int_equal(load(&c, cfg, err, sizeof(err)), 0);
		assert_int_equal(phone_read(&c, t[i].intl, strlen(t[i].intl),
		    out, sizeof(out)), PHONE_OK);
	}
}

/*
 * Every example number libphonenumber has (a mobile and a fixed line for
 * each of its regions): read from abroad, read at home as the library
 * formats it there, and placed in the region the library places it in.
 * The exceptions are national habits numbering.h does not model yet:
 * Argentina's "15" mobile infix and Belarus's "8 0" trunk prefix.
 */
static void
test_phone_library_examples(void **state)
{
	static const char *const unread[] = {
		"+5491123456789", "+375294911911", "+375152450911",
	};
	int missed = 0;

	(void)state;
	for (size_t i = 0; i < countof(numbering_examples); i++) {
		const struct numbering_example *e = &numbering_examples[i];
		char out[OTP_MAX_PHONE_LEN + 1], cc[8];
		size_t cclen = 0, n = strlen(e->e164);
		bool known = false;
		int r, rc;

		for (size_t j = 0; j < countof(unread); j++)
			known |= strcmp(unread[j], e->e164) == 0;
		r = phone_cc_read(e->e164 + 1, n - 1, &cclen);
		assert_true(r >= 0);
		r = phone_region_of(r, e->e164 + 1 + cclen, n - 1 - cclen);
		if (memcmp(numbering_regions[r].iso, e->region, 2) != 0)
			fail_msg("%s: region %.2s, the library says %s", e->e164,
			    numbering_regions[r].iso, e->region);
		rc = phone_normalise(e->intl, strlen(e->intl), "+1", out,
		    sizeof(out));
		if (rc != PHONE_OK && rc != PHONE_RANGE)
			fail_msg("%s (%s): %d", e->intl, e->iso, rc);
		if (rc == PHONE_OK && strcmp(out, e->e164) != 0)
			fail_msg("%s (%s): %s", e->intl, e->iso, out);
		snprintf(cc, sizeof(cc), "+%.*s", (int)cclen, e->e164 + 1);
		rc = phone_normalise(e->national, strlen(e->national), cc, out,
		    sizeof(out));
		if ((rc == PHONE_OK && strcmp(out, e->e164) == 0) ||
		    rc == PHONE_RANGE) {
			if (known)
				fail_msg("%s is read now: take it off the list",
				    e->e164);
			continue;
		}
		if (!known)
			fail_msg("%s with %s (%s): %d %s, want %s", e->national,
			    cc, e->iso, rc, out, e->e164);
		missed++;
	}
	assert_int_equal(missed, countof(unread));
	assert_true(countof(numbering_examples) > 400);
}

/* The NANP rules: the cases of issue 10, then every area code
 * libphonenumber knows, geographic ones accepted, special ones refused. */
static void
test_phone_nanp(void **state)
{
	static const struct phone_case t[] = {
		{ "+18765550100", "+1", PHONE_OK, "+18765550100" },  /* JM */
		{ "+19005550100", "+1", PHONE_RANGE, NULL },   /* premium */
		{ "+12019760100", "+1", PHONE_RANGE, NULL },   /* 976 exchange */
		{ "+18005550100", "+1", PHONE_RANGE, NULL },   /* toll-free */
		{ "+18335550100", "+1", PHONE_RANGE, NULL },
		{ "+18445550100", "+1", PHONE_RANGE, NULL },
		{ "+18555550100", "+1", PHONE_RANGE, NULL },
		{ "+18665550100", "+1", PHONE_RANGE, NULL },
		{ "+18775550100", "+1", PHONE_RANGE, NULL },
		{ "+18885550100", "+1", PHONE_RANGE, NULL },
		{ "+18225550100", "+1", PHONE_RANGE, NULL },   /* 8YY reserved */
		{ "+18805550100", "+1", PHONE_RANGE, NULL },
		{ "+18895550100", "+1", PHONE_RANGE, NULL },
		{ "+15005550100", "+1", PHONE_RANGE, NULL },   /* personal */
		{ "+15215550100", "+1", PHONE_RANGE, NULL },
		{ "+15335550100", "+1", PHONE_RANGE, NULL },
		{ "+16005550100", "+1", PHONE_RANGE, NULL },   /* Canada, non-geo */
		{ "+17005550100", "+1", PHONE_RANGE, NULL },
		{ "+17105550100", "+1", PHONE_RANGE, NULL },   /* US government */
		{ "+14565550100", "+1", PHONE_RANGE, NULL },   /* inbound intl */
		{ "+12905550100", "+1", PHONE_RANGE, NULL },   /* N9X */
		{ "+13705550100", "+1", PHONE_RANGE, NULL },   /* 37X */
		{ "+19605550100", "+1", PHONE_RANGE, NULL },   /* 96X */
		{ "+15555550100", "+1", PHONE_RANGE, NULL },   /* ERC 555 */
		{ "+12225550100", "+1", PHONE_RANGE, NULL },
		{ "+19115550100", "+1", PHONE_INVALID, NULL }, /* N11 area code */
		{ "+14115550100", "+1", PHONE_INVALID, NULL },
		{ "+12019110100", "+1", PHONE_INVALID, NULL }, /* N11 exchange */
		{ "+11235550100", "+1", PHONE_INVALID, NULL }, /* 1XX area code */
		{ "+10235550100", "+1", PHONE_INVALID, NULL },
		{ "+12011230100", "+1", PHONE_INVALID, NULL }, /* 1XX exchange */
		{ "+12010230100", "+1", PHONE_INVALID, NULL },
		{ "+1201555012", "+1", PHONE_LENGTH, NULL },   /* short */
		{ "+120155501234", "+1", PHONE_LENGTH, NULL }, /* long */
		{ "201555012", "+1", PHONE_LENGTH, NULL },
		{ "+15205550100", "+1", PHONE_OK, "+15205550100" }, /* AZ, 52X */
		{ "+12015550100", "+1", PHONE_OK, "+12015550100" },
		{ "+12015559999", "+1", PHONE_OK, "+12015559999" },
	};

	(void)state;
	expect_phones(t, countof(t));
	for (size_t i = 0; i < countof(numbering_nanp_geo); i++) {
		char d[11];

		snprintf(d, sizeof(d), "%s5550100", numbering_nanp_geo[i]);
		if (phone_nanp(d, 10) != PHONE_OK)
			fail_msg("area code %s is geographic: %d",
			    numbering_nanp_geo[i], phone_nanp(d, 10));
	}
	for (size_t i = 0; i < countof(numbering_nanp_special); i++) {
		char d[11];

		snprintf(d, sizeof(d), "%s5550100", numbering_nanp_special[i]);
		assert_int_equal(phone_nanp(d, 10), PHONE_RANGE);
	}
	assert_true(countof(numbering_nanp_geo) > 300);
}

/* phone_mask() as it was, with snprintf: the reference for the one
 * that copies. */
static void
ref_phone_mask(const char *phone, char *out, size_t outlen)
{
	size_t n = strlen(phone), cclen = 0, nn, tail;

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
	if (snprintf(out, outlen, "+%.*s%.*s%s", (int)cclen, phone + 1,
	    (int)(nn - tail), "****************", phone + n - tail) < 0)
		str_copy(out, outlen, "-");
}

/* Numbers of 1 to 24 digits under every calling code's first digits,
 * into every buffer size: the same as the snprintf version. */
static void
test_phone_mask_copy(void **state)
{
	char phone[32], got[40], want[40];
	unsigned seed = 7;

	(void)state;
	for (int round = 0; round < 3000; round++) {
		size_t len = 1 + (size_t)round % 24;

		phone[0] = '+';
		for (size_t i = 1; i <= len; i++)
			phone[i] = (char)('0' + ((seed = seed * 1103515245u +
			    12345u) >> 16) % 10);
		phone[len + 1] = '\0';
		for (size_t cap = 1; cap <= sizeof(got); cap++) {
			phone_mask(phone, got, cap);
			ref_phone_mask(phone, want, cap);
			assert_string_equal(got, want);
		}
	}
}

static void
test_phone_mask(void **state)
{
	static const char *const t[][2] = {
		{ "+12015550167", "+1********67" },
		{ "+442079460958", "+44********58" },
		{ "+447700900123", "+44********23" },
		{ "+3531234567", "+353*****67" },
		{ "+1234567", "+1****67" },
		{ "+2908123", "+290**23" },   /* St Helena: 4 digits */
		{ "+290812", "+290***" },
		{ "+99912345678", "+*********78" }, /* no country's code */
		{ "", "-" },
		{ "+", "-" },
		{ "12015550167", "-" },
		{ "+1201x550167", "-" },
	};
	char out[32];

	(void)state;
	for (size_t i = 0; i < countof(t); i++) {
		phone_mask(t[i][0], out, sizeof(out));
		assert_string_equal(out, t[i][1]);
	}
	phone_mask("+12015550167", out, 6);
	assert_string_equal(out, "+1***");
}

/* A number as its person sees it: as typed from its national part,
 * grouped when typed without separators, never more than it holds. */
static void
test_phone_show(void **state)
{
	static const char *const t[][3] = {
		{ "+12015550123", "(201) 555-0123", "+1 (201) 555-0123" },
		{ "+12015550123", "2015550123", "+1 201-555-0123" },
		{ "+12015550123", "+12015550123", "+1 201-555-0123" },
		{ "+12015550123", "+1 201  555 0123  ", "+1 201 555 0123" },
		{ "+12015550123", "1-201-555-0123", "+1 201-555-0123" },
		{ "+12015550123", "201.555.0123", "+1 201.555.0123" },
		{ "+442079460958", "020 7946 0958", "+44 20 7946 0958" },
		{ "+442079460958", "+44 (0)20 7946 0958", "+44 20 7946 0958" },
		{ "+442079460958", "00442079460958", "+44 2079460958" },
		{ "+447700900123", "07700 900123", "+44 7700 900123" },
		{ "+12015550123", "2 0 1 5 5 5 0 1 2 3 - - - - - - - - - -",
		    "+1 201-555-0123" }, /* too long to keep as typed */
	};
	char out[OTP_MAX_SHOWN];

	(void)state;
	for (size_t i = 0; i < countof(t); i++) {
		phone_show(t[i][0], t[i][1], strlen(t[i][1]), out, sizeof(out));
		assert_string_equal(out, t[i][2]);
	}
	phone_show("+12015550123", "(201) 555-0123", 14, out, 8);
	assert_string_equal(out, "+1 (201");
}

/* ALLOWED_COUNTRY_CODES: ISO codes and calling codes, and what +1 means. */
static void
test_phone_allowed(void **state)
{
	static const struct {
		const char *cfg, *phone;
		bool allowed;
	} t[] = {
		/* the default: COUNTRY_CODE '+1', the US and Canada only */
		{ "", "+12015550123", true },
		{ "", "+14165550123", true },
		{ "", "+18765550100", false },  /* JM */
		{ "", "+17875550100", false },  /* PR */
		{ "", "+442079460958", false },
		{ "ALLOWED_COUNTRY_CODES='+1'\n", "+16585550100", false }, /* JM */
		{ "ALLOWED_COUNTRY_CODES='US'\n", "+12015550123", true },
		{ "ALLOWED_COUNTRY_CODES='US'\n", "+14165550123", false },
		{ "ALLOWED_COUNTRY_CODES='CA'\n", "+14165550123", true },
		{ "ALLOWED_COUNTRY_CODES='CA'\n", "+12015550123", false },
		{ "ALLOWED_COUNTRY_CODES='US,JM'\n", "+18765550100", true },
		{ "ALLOWED_COUNTRY_CODES='us, jm'\n", "+16585550100", true },
		{ "ALLOWED_COUNTRY_CODES='JM'\n", "+12015550123", false },
		{ "ALLOWED_COUNTRY_CODES='+1,+44'\n", "+442079460958", true },
		{ "ALLOWED_COUNTRY_CODES='+44'\n", "+441534123456", true }, /* JE */
		{ "ALLOWED_COUNTRY_CODES='GB'\n", "+441534123456", false },
		{ "ALLOWED_COUNTRY_CODES='GB'\n", "+447700900123", true },
		{ "ALLOWED_COUNTRY_CODES='JE'\n", "+447700900123", false },
		{ "ALLOWED_COUNTRY_CODES='+7'\n", "+77710009998", true },  /* KZ */
		{ "ALLOWED_COUNTRY_CODES='RU'\n", "+77710009998", false },
		{ "ALLOWED_COUNTRY_CODES='RU'\n", "+79123456789", true },
		{ "COUNTRY_CODE='+44'\n", "+447700900123", true },
		{ "COUNTRY_CODE='+44'\n", "+12015550123", false },
		{ "ALLOWED_COUNTRY_CODES='+1'\n", "+882123456789", false },
		{ "ALLOWED_COUNTRY_CODES='+1'\n", "not a number", false },
	};
	struct config c;
	char err[600];

	(void)state;
	for (size_t i = 0; i < countof(t); i++) {
		assert_int_equal(load(&c, t[i].cfg, err, sizeof(err)), 0);
		if (phone_allowed(&c, t[i].phone) != t[i].allowed)
			fail_msg("%s with %s: %s", t[i].phone, t[i].cfg,
			    t[i].allowed ? "refused" : "allowed");
	}
	/* phone_read: the refusal says which */
	{
		char out[OTP_MAX_PHONE_LEN + 1];

		assert_int_equal(load(&c, "", err, sizeof(err)), 0);
		assert_int_equal(phone_read(&c, "1-876-555-0100", 14, out,
		    sizeof(out)), PHONE_COUNTRY);
		assert_string_equal(out, "+18765550100");
		assert_int_equal(phone_read(&c, "+19005550100", 12, out,
		    sizeof(out)), PHONE_RANGE);
		assert_int_equal(phone_read(&c, "+1234567", 8, out,
		    sizeof(out)), PHONE_LENGTH);
		assert_int_equal(phone_read(&c, "0044 20 7946 0958", 17, out,
		    sizeof(out)), PHONE_COUNTRY);
		assert_int_equal(phone_read(&c, "(201) 555-0123", 14, out,
		    sizeof(out)), PHONE_OK);
		assert_string_equal(out, "+12015550123");
	}
}

/* The table itself: sorted for the binary search, main region first. */
static void
test_phone_table(void **state)
{
	size_t cclen = 0;

	(void)state;
	for (int i = 1; i < NUMBERING_NREGIONS; i++) {
		assert_true(numbering_regions[i - 1].cc <= numbering_regions[i].cc);
		assert_int_equal(numbering_regions[i].flags & NUMBERING_MAIN,
		    numbering_regions[i - 1].cc != numbering_regions[i].cc);
		assert_int_equal(phone_cc_region(numbering_regions[i].cc) == i,
		    (numbering_regions[i].flags & NUMBERING_MAIN) != 0);
		assert_int_equal(phone_iso_region(numbering_regions[i].iso, 2),
		    i);
	}
	assert_int_equal(phone_iso_region("US", 2), 0);
	assert_int_equal(phone_iso_region("UK", 2), -1);
	assert_int_equal(phone_iso_region("USA", 3), -1);
	assert_int_equal(phone_cc_region(999), -1);
	assert_int_equal(phone_cc_read("4420", 4, &cclen),
	    phone_iso_region("GB", 2));
	assert_int_equal(cclen, 2);
	assert_int_equal(phone_cc_read("99", 2, &cclen), -1);
}

/* ---- escaping, forms, cookies, JSON, pages ----------------------------- */

static void
test_json_escape(void **state)
{
	char out[64];
	size_t n = 0;

	(void)state;
	assert_int_equal(json_escape("a\"b\\c\nd\x01", out, sizeof(out), &n),
	    0);
	assert_string_equal(out, "a\\\"b\\\\c\\nd\\u0001");
	n = 0;
	assert_int_equal(json_escape("0123456789", out, 10, &n), -1);
	n = 0;
	assert_int_equal(json_escape("012345678", out, 10, &n), 0);
	/* Appends. */
	assert_int_equal(json_escape("\"", out, sizeof(out), &n), 0);
	assert_string_equal(out, "012345678\\\"");
}

static void
test_html_escape(void **state)
{
	char out[64];
	size_t n = 0;

	(void)state;
	assert_int_equal(html_escape("<a href=\"x\">'&'</a>", out, sizeof(out),
	    &n), 0);
	out[n] = '\0';
	assert_string_equal(out,
	    "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
	n = 0;
	assert_int_equal(html_escape("<<<<", out, 8, &n), -1);
}

/* Prometheus label values: only \\, " and newline have escapes there
 * (json_escape's \u0001 would make promtool refuse the page). */
static void
test_label_escape(void **state)
{
	char out[64];
	size_t n = 0;

	(void)state;
	assert_int_equal(label_escape("0.1\"x\\y\nz\x01", out, sizeof(out),
	    &n), 0);
	assert_string_equal(out, "0.1\\\"x\\\\y\\nz\x01");
	n = 0;
	assert_int_equal(label_escape("\"\"\"\"", out, 8, &n), -1);
}

/* The console sender needs SMS_PROVIDER='console' on any other LISTEN. */
static void
test_listen_loopback(void **state)
{
	(void)state;
	assert_true(listen_loopback("127.0.0.1:5000"));
	assert_true(listen_loopback("127.1.2.3:80, [::1]:443s,localhost:8080"));
	assert_false(listen_loopback("5000"));
	assert_false(listen_loopback("+5000"));
	assert_false(listen_loopback("0.0.0.0:5000"));
	assert_false(listen_loopback("[::]:5000"));
	assert_false(listen_loopback("192.168.1.1:5000"));
	assert_false(listen_loopback("127.0.0.1:5000,10.0.0.1:5000"));
	assert_false(listen_loopback("[::ffff:127.0.0.1]:5000"));
	assert_false(listen_loopback("localhost.example.com:5000"));
	assert_false(listen_loopback("128.0.0.1:5000"));
}

static void
test_form_parse(void **state)
{
	char out[32];
	const char *b;

	(void)state;
	b = "phone=%28201%29+555-0123&csrf=ab";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)), 14);
	assert_string_equal(out, "(201) 555-0123");
	assert_int_equal(form_get(b, strlen(b), "csrf", out, sizeof(out)), 2);
	assert_int_equal(form_get(b, strlen(b), "token", out, sizeof(out)),
	    FORM_MISSING);
	b = "phone=1&phone=2";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)), 1);
	assert_string_equal(out, "1"); /* the first one counts */
	b = "phone=%zz";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)),
	    FORM_BAD_ESCAPE);
	b = "phone=%4";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)),
	    FORM_BAD_ESCAPE);
	b = "x=%&phone=1";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)),
	    FORM_BAD_ESCAPE);
	b = "phone=a%00b";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)),
	    FORM_NUL);
	assert_int_equal(form_get("phone=1\0", 8, "phone", out, sizeof(out)),
	    FORM_NUL);
	b = "phone=0123456789";
	assert_int_equal(form_get(b, strlen(b), "phone", out, 5), FORM_TOO_LONG);
	b = "ph%6Fne=1&&=&novalue";
	assert_int_equal(form_get(b, strlen(b), "phone", out, sizeof(out)), 1);
	assert_int_equal(form_get("", 0, "phone", out, sizeof(out)),
	    FORM_MISSING);
}

static void
test_cookie_get(void **state)
{
	char out[40];

	(void)state;
	assert_int_equal(cookie_get("a=1; otp_sid=abc; b=2", "otp_sid", out,
	    sizeof(out)), 3);
	assert_string_equal(out, "abc");
	assert_int_equal(cookie_get("xotp_sid=1", "otp_sid", out, sizeof(out)),
	    -1);
	assert_int_equal(cookie_get("otp_sid=", "otp_sid", out, sizeof(out)),
	    0);
	assert_int_equal(cookie_get("otp_sid=0123456789", "otp_sid", out, 5),
	    -1);
	assert_int_equal(cookie_get(NULL, "otp_sid", out, sizeof(out)), -1);
	assert_int_equal(cookie_get(";;otp_sid=z ;", "otp_sid", out,
	    sizeof(out)), 1);
}

static void
test_handle_roundtrip(void **state)
{
	uint8_t id[OTP_ID_LEN], got[OTP_ID_LEN];
	char v[HANDLE_LEN + 1];
	uint32_t slot;

	(void)state;
	for (int i = 0; i < OTP_ID_LEN; i++)
		id[i] = (uint8_t)(i * 17);
	handle_format(123456, id, v);
	assert_int_equal(handle_decode(v, strlen(v), &slot, got), 0);
	assert_int_equal(slot, 123456);
	assert_memory_equal(got, id, OTP_ID_LEN);
	assert_int_equal(handle_decode("xyz", 3, &slot, got), -1);
	assert_int_equal(handle_decode(v, strlen(v) - 1, &slot, got), -1);
	v[2] = 'g';
	assert_int_equal(handle_decode(v, strlen(v), &slot, got), -1);
}

static void
test_json_api_error(void **state)
{
	char code[32], title[64];
	const char *b;

	(void)state;
	b = "{\"errors\": [{\"code\": \"10004\", \"title\": \"Missing "
	    "parameter\", \"detail\": \"x\"}]}";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), 0);
	assert_string_equal(code, "10004");
	assert_string_equal(title, "Missing parameter");
	b = "{\"meta\":{\"a\":[1,2,{\"b\":null}]},\"errors\":[{\"title\":\"T\","
	    "\"code\":40300}]}";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), 0);
	assert_string_equal(code, "40300");
	assert_string_equal(title, "T");
	b = "<html>bad gateway</html>";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), -1);
	b = "{\"errors\":[{\"code\":\"1";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), -1);
	/* A backslash at the very end (a fuzz finding): nothing half-read. */
	b = "{\"errors\":[{\"code\":\"1\xff\xff\\";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), -1);
	assert_string_equal(code, "");
	b = "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[";
	assert_int_equal(json_api_error(b, strlen(b), code, sizeof(code), title,
	    sizeof(title)), -1);
}

static void
test_message_fill(void **state)
{
	struct config c;
	char out[64];

	(void)state;
	memset(&c, 0, sizeof(c));
	str_copy(c.app_name, sizeof(c.app_name), "Router");
	c.code_ttl = 300;
	assert_int_equal(message_fill(&c, "Your token is {code}", "AB12", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "Your token is AB12");
	assert_int_equal(message_fill(&c, "{code}{code}", "AB", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "ABAB");
	assert_int_equal(message_fill(&c, "{app}: {code}, {minutes} min {x}",
	    "1", out, sizeof(out)), 0);
	assert_string_equal(out, "Router: 1, 5 min {x}");
	c.code_ttl = 61;
	assert_int_equal(message_fill(&c, "{minutes}", "1", out, sizeof(out)),
	    0);
	assert_string_equal(out, "2");
	assert_int_equal(message_fill(&c, "0123456789012345678901234567890123"
	    "4567890123456789012345678901{code}", "ABCD", out, sizeof(out)), -1);
	/* WebOTP: the last line is "@domain #code". */
	str_copy(c.webotp_domain, sizeof(c.webotp_domain), "example.com");
	assert_int_equal(message_fill(&c, "Code {code}", "123456", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "Code 123456\n\n@example.com #123456");
}

static void
test_message_languages(void **state)
{
	struct config c;
	char err[256];

	(void)state;
	memset(&c, 0, sizeof(c));
	assert_int_equal(config_message(&c, "de", "Ihr Code: {code}", "x", err,
	    sizeof(err)), 0);
	assert_int_equal(config_message(&c, "pt_BR", "Seu código: {code}", "x",
	    err, sizeof(err)), 0);
	assert_int_equal(config_message(&c, "fr", "Votre code : {code}", "x",
	    err, sizeof(err)), 0);
	assert_int_equal(config_message(&c, "de", "Code: {code}", "x", err,
	    sizeof(err)), 0); /* replaces */
	assert_int_equal(c.nmessages, 3);
	assert_int_equal(config_message(&c, "DE", "{code}", "f:1", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "f:1: MESSAGE_DE: the language must be a tag "
	    "like 'de' or 'pt_BR'");
	assert_int_equal(config_message(&c, "es", "sin código", "f:2", err,
	    sizeof(err)), -1);
	assert_string_equal(err, "f:2: MESSAGE_es must contain {code}");

	assert_null(message_for(&c, NULL));
	assert_null(message_for(&c, "en-US,en;q=0.9"));
	assert_string_equal(message_for(&c, "de-AT,de;q=0.9"), "Code: {code}");
	assert_string_equal(message_for(&c, "en;q=0.9,pt-BR;q=0.8,de;q=0.7"),
	    "Seu código: {code}");
	assert_string_equal(message_for(&c, "pt-PT,fr;q=0.9"),
	    "Seu código: {code}");
	assert_string_equal(message_for(&c, "fr;q=0.5, de;q=0.6"),
	    "Code: {code}");
	assert_string_equal(message_for(&c, "*;q=0.1,fr"),
	    "Votre code : {code}");
	/* Headers cut short after "q=" (fuzz findings): no read past them. */
	assert_null(message_for(&c, "en;q="));
	assert_string_equal(message_for(&c, "de;q"), "Code: {code}");
	assert_string_equal(message_for(&c, "de;q=1"), "Code: {code}");
	/* MESSAGE is in LANG and competes with the others. */
	str_copy(c.lang, sizeof(c.lang), "en");
	assert_null(message_for(&c, "en-US,en;q=0.9,de;q=0.8"));
	assert_string_equal(message_for(&c, "de;q=0.9,en;q=0.8"),
	    "Code: {code}");
	/* pt-PT prefers a plain "pt" to "pt_BR". */
	assert_int_equal(config_message(&c, "pt", "Código: {code}", "x", err,
	    sizeof(err)), 0);
	assert_string_equal(message_for(&c, "pt-PT"), "Código: {code}");
	assert_string_equal(message_for(&c, "pt-BR"), "Seu código: {code}");
}

static void
test_sms_units(void **state)
{
	bool gsm;

	(void)state;
	assert_int_equal(sms_units("Your token is 1234", &gsm), 18);
	assert_true(gsm);
	assert_int_equal(sms_units("{x}", &gsm), 5); /* extension chars */
	assert_true(gsm);
	assert_int_equal(sms_units("Grüße: 5 €", &gsm), 11);
	assert_true(gsm);
	assert_int_equal(sms_units("Ваш код 1234", &gsm), 12);
	assert_false(gsm);
	assert_int_equal(sms_units("a`b", &gsm), 3);
	assert_false(gsm);
	assert_int_equal(sms_units("\xf0\x9f\x94\x91 1", &gsm), 4); /* emoji */
	assert_false(gsm);
}

static void
test_command_argv(void **state)
{
	char buf[256], *argv[8];

	(void)state;
	assert_int_equal(command_argv("/bin/send", "+1201", "hi there", buf,
	    sizeof(buf), argv, 8), 3);
	assert_string_equal(argv[0], "/bin/send");
	assert_string_equal(argv[1], "+1201");
	assert_string_equal(argv[2], "hi there");
	assert_null(argv[3]);
	assert_int_equal(command_argv("/usr/bin/gammu-smsd-inject TEXT {to} "
	    "-text '{text}'", "+1201", "a b;$(x)", buf, sizeof(buf), argv, 8),
	    5);
	assert_string_equal(argv[2], "+1201");
	assert_string_equal(argv[4], "a b;$(x)");
	assert_int_equal(command_argv("/x \"two words\" 'it''s'", "1", "t", buf,
	    sizeof(buf), argv, 8), 5);
	assert_string_equal(argv[1], "two words");
	assert_string_equal(argv[2], "its");
	assert_int_equal(command_argv("", "1", "t", buf, sizeof(buf), argv, 8),
	    -1);
	assert_int_equal(command_argv("/x a b c d e f", "1", "t", buf,
	    sizeof(buf), argv, 8), -1);
}

/* The one placeholder filler: widths, strictness, counts, escapes. */
static void
test_fill(void **state)
{
	const struct var vars[] = { { "to", "+1 201" }, { "text", "a\"b" } };
	char out[64];
	size_t n = 0;

	(void)state;
	/* A JSON body's own braces are text; placeholders are escaped. */
	assert_int_equal(fill("{\"to\":\"{to}\",\"t\":\"{text}\"}", 26, 1, false,
	    vars, 2, json_escape, out, sizeof(out), &n), 2);
	assert_string_equal(out, "{\"to\":\"+1 201\",\"t\":\"a\\\"b\"}");
	n = 0;
	assert_int_equal(fill("{to}&{x}&{}", 11, 1, false, vars, 2, form_escape,
	    out, sizeof(out), &n), 1);
	assert_string_equal(out, "%2B1%20201&{x}&{}");
	/* Strict: every opening brace must start a known placeholder. */
	n = 0;
	assert_int_equal(fill("{to} {x}", 8, 1, true, vars, 2, esc_none, out,
	    sizeof(out), &n), -1);
	n = 0;
	assert_int_equal(fill("a { b", 5, 1, true, vars, 2, esc_none, out,
	    sizeof(out), &n), -1);
	/* Width 2: single braces are text even when strict. */
	n = 0;
	assert_int_equal(fill("{to} {{to}} a{b}", 16, 2, true, vars, 2,
	    esc_none, out, sizeof(out), &n), 1);
	assert_string_equal(out, "{to} +1 201 a{b}");
	n = 0;
	assert_int_equal(fill("{{to}", 5, 2, true, vars, 2, esc_none, out,
	    sizeof(out), &n), -1);
	/* Appends at *n; -1 when it does not fit, never past outlen. */
	n = 0;
	assert_int_equal(fill("{text}", 6, 1, true, vars, 2, esc_none, out, 4,
	    &n), 1);
	assert_string_equal(out, "a\"b");
	assert_int_equal(fill("!", 1, 1, true, vars, 2, esc_none, out, 4, &n),
	    -1);
	assert_string_equal(out, "a\"b");
	n = 0;
	assert_int_equal(fill("{text}", 6, 1, true, vars, 2, esc_none, out, 3,
	    &n), -1);
	n = 4;
	assert_int_equal(fill("", 0, 1, true, vars, 2, esc_none, out, 4, &n),
	    -1);
}

/* The list iterator, prefixes, the percent-encoder, SMS_COMMAND_ENV. */
static void
test_text_helpers(void **state)
{
	const char *p = " a , b c,,d ", *item;
	char out[32];
	size_t len, n = 0;

	(void)state;
	assert_true(list_next(&p, ',', &item, &len));
	assert_int_equal(len, 1);
	assert_memory_equal(item, "a", 1);
	assert_true(list_next(&p, ',', &item, &len));
	assert_int_equal(len, 3);
	assert_memory_equal(item, "b c", 3);
	assert_true(list_next(&p, ',', &item, &len));
	assert_int_equal(len, 0);
	assert_true(list_next(&p, ',', &item, &len));
	assert_memory_equal(item, "d", 1);
	assert_false(list_next(&p, ',', &item, &len));
	assert_string_equal(PREFIX("Bearer x", "Bearer "), "x");
	assert_null(PREFIX("bearer x", "Bearer "));
	assert_string_equal(PREFIX_CI("HTTPS://h", "https://"), "h");
	assert_int_equal(pct_escape_keep("/a b?c=%", "/%", out, sizeof(out),
	    &n), 0);
	assert_string_equal(out, "/a%20b%3Fc%3D%");
	assert_null(check_env_names(""));
	assert_null(check_env_names("PATH, LANG,_X1"));
	assert_non_null(check_env_names("PATH HOME"));
	assert_non_null(check_env_names("PATH,,HOME"));
	assert_non_null(check_env_names("1X"));
	assert_non_null(check_env_names("A=B"));
}

/* JSON strings: escapes decoded, non-ASCII \u refused when copied but
 * skipped over elsewhere in the object. */
static void
test_json_string(void **state)
{
	const char *b = "{\"name\":\"J\\u00e9r\\u00f4me\",\"phone\":"
	    "\"+1\\u0032\\/01\"}";
	char out[16];

	(void)state;
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), 6);
	assert_string_equal(out, "+12/01");
	assert_int_equal(json_get_string(b, strlen(b), "name", out,
	    sizeof(out)), -1);
	assert_int_equal(json_get_string(b, strlen(b), "phon", out,
	    sizeof(out)), -1);
	assert_int_equal(json_get_string(b, strlen(b), "phone", out, 6), -1);
	b = "{\"phone\":\"a\x01\"}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), -1);
}

/* A held config outlives a swap; the swap never waits for holders. */
static void
test_config_snapshot(void **state)
{
	struct otp *otp = calloc(1, sizeof(*otp));
	struct config *next = calloc(1, sizeof(*next));
	const struct config *held;
	char err[256];

	(void)state;
	assert_non_null(otp);
	assert_non_null(next);
	pthread_mutex_init(&otp->cfg_swap, NULL);
	assert_int_equal(config_defaults(next, err, sizeof(err)), 0);
	cfg_swap(otp, next);
	held = cfg_hold(otp);
	assert_ptr_equal(held, next);
	assert_int_equal(atomic_load(&next->refs), 2);
	next = calloc(1, sizeof(*next));
	assert_int_equal(config_defaults(next, err, sizeof(err)), 0);
	next->debug = true;
	cfg_swap(otp, next);
	assert_true(atomic_load(&otp->debug));
	assert_ptr_equal(otp->cfg, next);
	assert_int_equal(atomic_load(&held->refs), 1); /* ours alone now */
	assert_string_equal(held->listen, "127.0.0.1:5000");
	cfg_drop(held); /* the last holder frees it (ASan/valgrind watch) */
	cfg_drop(otp->cfg);
	pthread_mutex_destroy(&otp->cfg_swap);
	free(otp);
}

static void
test_http_body(void **state)
{
	struct config c;
	char out[256];

	(void)state;
	memset(&c, 0, sizeof(c));
	str_copy(c.from_number, sizeof(c.from_number), "+12025550111");
	str_copy(c.sms_http_content_type, sizeof(c.sms_http_content_type), "application/x-www-form-urlencoded");
	str_copy(c.sms_http_body, sizeof(c.sms_http_body), "To={to}&From={from}&Body={text}");
	assert_int_equal(http_body(&c, "+12015550123", "a b&c=d\xc3\xa9",
	    out, sizeof(out)), 0);
	assert_string_equal(out, "To=%2B12015550123&From=%2B12025550111&Body="
	    "a%20b%26c%3Dd%C3%A9");
	str_copy(c.sms_http_content_type, sizeof(c.sms_http_content_type), "application/json");
	str_copy(c.sms_http_body, sizeof(c.sms_http_body), "{\"to\":\"{to}\",\"text\":\"{text}\"}");
	assert_int_equal(http_body(&c, "+1201", "say \"hi\"\n", out,
	    sizeof(out)), 0);
	assert_string_equal(out, "{\"to\":\"+1201\",\"text\":\"say \\\"hi\\\""
	    "\\n\"}");
	assert_int_equal(http_body(&c, "+1201", "x", out, 10), -1);
}

static void
test_page_render(void **state)
{
	char out[128];
	const struct var vars[] = { { "a", "<x>" }, { "bb", "2" } };
	const char *t = "[{{a}}|{{bb}}|{{a}}]";

	(void)state;
	assert_int_equal(page_render(t, strlen(t), vars, 2, out, sizeof(out)),
	    (long)strlen("[&lt;x&gt;|2|&lt;x&gt;]"));
	assert_string_equal(out, "[&lt;x&gt;|2|&lt;x&gt;]");
	t = "{{missing}}";
	assert_int_equal(page_render(t, strlen(t), vars, 2, out, sizeof(out)),
	    -1);
	t = "{{a";
	assert_int_equal(page_render(t, strlen(t), vars, 2, out, sizeof(out)),
	    -1);
	t = "0123456789";
	assert_int_equal(page_render(t, strlen(t), vars, 2, out, 5), -1);
}

/* The character-at-a-time renderer page_render() and html_escape() were
 * before they copied runs: the reference the fast ones must equal. */
static int
ref_html_escape(const char *s, char *out, size_t outlen, size_t *n)
{
	for (; *s != '\0'; s++) {
		const char *rep;
		char one[2] = { *s, '\0' };
		size_t len;

		switch (*s) {
		case '&': rep = "&amp;"; break;
		case '<': rep = "&lt;"; break;
		case '>': rep = "&gt;"; break;
		case '"': rep = "&quot;"; break;
		case '\'': rep = "&#39;"; break;
		default: rep = one; break;
		}
		len = strlen(rep);
		if (*n + len >= outlen)
			return -1;
		memcpy(out + *n, rep, len);
		*n += len;
	}
	return 0;
}

static long
ref_page_render(const char *tmpl, size_t len, const struct var *vars,
                size_t nvars, char *out, size_t outlen)
{
	size_t n = 0, i = 0;

	/* fill()'s rules for pages, a character at a time: {{name}}, name
	 * of a-z and '_', must be one of vars; any other "{{" fails. */
	while (i < len) {
		if (i + 1 < len && tmpl[i] == '{' && tmpl[i + 1] == '{') {
			size_t j = i + 2, v;

			while (j < len && (islower((unsigned char)tmpl[j]) ||
			    tmpl[j] == '_'))
				j++;
			if (j == i + 2 || j + 1 >= len || tmpl[j] != '}' ||
			    tmpl[j + 1] != '}')
				return -1;
			for (v = 0; v < nvars; v++)
				if (strlen(vars[v].name) == j - i - 2 &&
				    memcmp(vars[v].name, tmpl + i + 2,
				    j - i - 2) == 0)
					break;
			if (v == nvars ||
			    ref_html_escape(vars[v].value, out, outlen, &n) != 0)
				return -1;
			i = j + 2;
			continue;
		}
		if (n + 1 >= outlen)
			return -1;
		out[n++] = tmpl[i++];
	}
	out[n] = '\0';
	return (long)n;
}

/* Random templates of braces, text, escapes and placeholders, rendered
 * into every output size: the same result and bytes as the reference. */
static void
test_page_render_runs(void **state)
{
	static const char *const bits[] = {
		"{", "}", "{{", "}}", "{{a}}", "{{bb}}", "{{c}}", "{{a}", "x",
		"text ", "<", "&", "'", "\"", "{ {", "{{}}",
	};
	const struct var vars[] = { { "a", "<x>&'\"y" }, { "bb", "" },
	    { "", "empty" } };
	char tmpl[64], out[256], want[256];
	unsigned seed = 12345;

	(void)state;
	for (int round = 0; round < 3000; round++) {
		size_t len = 0, n1, n2;

		tmpl[0] = '\0';
		for (int k = (int)((seed = seed * 1103515245u + 12345u) >> 16) % 8;
		    k >= 0; k--) {
			const char *b = bits[((seed = seed * 1103515245u +
			    12345u) >> 16) % (sizeof(bits) / sizeof(bits[0]))];

			if (len + strlen(b) < sizeof(tmpl)) {
				memcpy(tmpl + len, b, strlen(b) + 1);
				len += strlen(b);
			}
		}
		for (size_t cap = 0; cap < 80; cap++) {
			long a = page_render(tmpl, len, vars, 3, out, cap + 1);
			long b = ref_page_render(tmpl, len, vars, 3, want, cap + 1);

			assert_int_equal(a, b);
			if (a >= 0)
				assert_memory_equal(out, want, (size_t)a + 1);
		}
		for (size_t cap = 1; cap < 40; cap++) {
			int a, b;

			n1 = n2 = 3; /* appending after 3 bytes */
			a = html_escape(tmpl, out, cap, &n1);
			b = ref_html_escape(tmpl, want, cap, &n2);
			assert_int_equal(a, b);
			if (a == 0) {
				assert_int_equal(n1, n2);
				assert_memory_equal(out + 3, want + 3, n1 - 3);
			}
		}
	}
}

/* head_add() against the snprintf() it replaces, at every room left. */
static void
test_head_add(void **state)
{
	char got[64], want[64];

	(void)state;
	for (size_t size = 3; size <= sizeof(got); size++) {
		size_t n = 3;
		int len = snprintf(want + 3, size - 3, "%s: %s\r\n",
		    "Content-Type", "text/html");
		int rc = head_add(got, size, &n, "Content-Type", "text/html");

		if (len < 0 || (size_t)len >= size - 3) {
			assert_int_equal(rc, -1);
			assert_int_equal(n, 3);
		} else {
			assert_int_equal(rc, 0);
			assert_int_equal(n, 3 + (size_t)len);
			assert_memory_equal(got + 3, want + 3, (size_t)len);
		}
	}
}

/* A log line: "YYYY-MM-DDTHH:MM:SSZ level message\n", in one write. */
static void
test_log_line(void **state)
{
	FILE *f = tmpfile();
	char got[256] = "";
	int saved;

	(void)state;
	assert_non_null(f);
	saved = dup(STDERR_FILENO);
	dup2(fileno(f), STDERR_FILENO);
	log_line(NULL, "info", "request to=%s ip=%s", "+1********23", "::1");
	log_line(NULL, "error", "%s: x", "f");
	dup2(saved, STDERR_FILENO);
	close(saved);
	rewind(f);
	assert_true(fread(got, 1, sizeof(got) - 1, f) > 0);
	fclose(f);
	assert_int_equal(strlen(got), 2 * 21 + strlen("info request to="
	    "+1********23 ip=::1\n") + strlen("error f: x\n"));
	assert_int_equal(got[4], '-');
	assert_int_equal(got[10], 'T');
	assert_int_equal(got[19], 'Z');
	assert_string_equal(got + 21 + strlen("info request to=+1********23 "
	    "ip=::1\n") + 20, " error f: x\n");
	got[21 + strlen("info request to=+1********23 ip=::1\n")] = '\0';
	assert_string_equal(got + 20, " info request to=+1********23 ip=::1\n");
}

/* The console sender's line: the text on one line, a newline as "\\n". */
static void
test_send_console(void **state)
{
	FILE *f = tmpfile();
	char got[128] = "";
	int saved;

	(void)state;
	assert_non_null(f);
	fflush(stdout);
	saved = dup(STDOUT_FILENO);
	dup2(fileno(f), STDOUT_FILENO);
	assert_int_equal(send_console(NULL, NULL, "+12015550123",
	    "Your code is 12AB\n\n@example.com #12AB"), SEND_OK);
	assert_int_equal(send_console(NULL, NULL, "+1", ""), SEND_OK);
	fflush(stdout);
	dup2(saved, STDOUT_FILENO);
	close(saved);
	rewind(f);
	assert_true(fread(got, 1, sizeof(got) - 1, f) > 0);
	fclose(f);
	assert_string_equal(got, "SMS to +12015550123: Your code is 12AB"
	    "\\n\\n@example.com #12AB\nSMS to +1: \n");
}

/* Every built-in page, in every built-in language, renders with exactly
 * the values its handler gives. */
static void
test_pages_render(void **state)
{
	static const char *const pages[] = {
		"index.html", "verify.html", "new_code.html", "verify_success.html",
		"error.html",
	};
	struct var vars[PAGE_VARS + PAGE_COMMON];
	char out[OTP_MAX_PAGE], err[128];
	struct otp o = { 0 };

	(void)state;
	assert_int_equal(www_builtin(&o), 0);
	assert_int_equal(lang_load(&o, err, sizeof(err)), 0);
	for (int k = 0; k < o.ncats; k++)
		for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
			const struct www_file *f = www_find(o.cats[k].files,
			    o.nbuiltin, pages[i]);

			assert_non_null(f);
			assert_true(page_render((const char *)f->data, f->len,
			    vars, page_vars_of(pages[i], vars), out,
			    sizeof(out)) > 0);
			assert_null(strstr(out, "{{"));
			assert_null(strstr(out, "{t:"));
		}
	/* A placeholder of another page does not render. */
	assert_int_equal(page_render("{{token_length}}", 16, vars,
	    page_vars_of("index.html", vars), out, sizeof(out)), -1);
	assert_non_null(www_find(o.builtin, o.nbuiltin, "style.css"));
	assert_non_null(www_find(o.builtin, o.nbuiltin, "otp.js"));
	free(o.lang_files);
	free(o.lang_text);
	free(o.unpacked);
}

/* The placeholders ({x} and {{x}}) of text t, sorted, into out. */
static void
text_placeholders(const char *t, char *out, size_t outlen)
{
	char names[16][32];
	int n = 0;

	out[0] = '\0';
	for (const char *p = t; (p = strchr(p, '{')) != NULL && n < 16; ) {
		size_t len = strcspn(p, "}");

		assert_true(len < sizeof(names[0]));
		memcpy(names[n], p, len);
		names[n++][len] = '\0';
		p += len;
	}
	qsort(names, (size_t)n, sizeof(names[0]),
	    (int (*)(const void *, const void *))strcmp);
	for (int i = 0; i < n; i++) {
		strncat(out, names[i], outlen - strlen(out) - 1);
		strncat(out, " ", outlen - strlen(out) - 1);
	}
}

/*
 * The catalogs: the five languages, English first; every key in every
 * one, none empty (lang_load() refuses a missing one), none with text
 * the key's English text does not have as placeholders; and the
 * localizer refuses a key that is not one.
 */
static void
test_catalogs(void **state)
{
	static const char *const want[] = { "en", "de", "fr", "es", "pt" };
	char err[128], a[256], b[256], out[64];
	struct otp o = { 0 };

	(void)state;
	assert_int_equal(www_builtin(&o), 0);
	assert_int_equal(lang_load(&o, err, sizeof(err)), 0);
	assert_int_equal(o.ncats, 5);
	for (int k = 0; k < o.ncats; k++) {
		assert_string_equal(o.cats[k].lang, want[k]);
		for (int i = 1; i < TX__N; i++) {
			assert_non_null(o.cats[k].text[i]);
			if (o.cats[k].text[i][0] == '\0')
				fail_msg("%s: %s is empty", want[k], text_key((enum text)i));
			text_placeholders(o.cats[0].text[i], a, sizeof(a));
			text_placeholders(o.cats[k].text[i], b, sizeof(b));
			if (strcmp(a, b) != 0)
				fail_msg("%s: %s has placeholders \"%s\", English "
				    "\"%s\"", want[k], text_key((enum text)i), b, a);
		}
	}
	assert_int_equal(lang_localize(&o.cats[1], "a{{t:verify}}b", 14, out,
	    sizeof(out)), (long)strlen("aBestätigenb"));
	assert_string_equal(out, "aBestätigenb");
	assert_int_equal(lang_localize(&o.cats[1], "{{t:nope}}", 10, out,
	    sizeof(out)), -1);
	assert_int_equal(lang_localize(&o.cats[1], "{{t:verify", 10, out,
	    sizeof(out)), -1);
	/* pt-BR and pt_PT take pt's words; it, LANG's; LANG xx, English */
	{
		struct config c = { 0 };

		str_copy(c.lang, sizeof(c.lang), "de");
		assert_string_equal(lang_catalog(&o, &c, "pt_BR")->lang, "pt");
		assert_string_equal(lang_catalog(&o, &c, "FR")->lang, "fr");
		assert_string_equal(lang_catalog(&o, &c, "it")->lang, "de");
		str_copy(c.lang, sizeof(c.lang), "xx");
		assert_string_equal(lang_catalog(&o, &c, "it")->lang, "en");
	}
	free(o.lang_files);
	free(o.lang_text);
	free(o.unpacked);
}

/*
 * Every built-in default SMS fits one SMS, with a typical APP_NAME, the
 * longest code (OTP_MAX_CODE_LEN) and a WebOTP line: 160 GSM-7
 * characters, or 70 UCS-2 ones when a character is outside GSM-7.
 */
static void
test_catalog_sms_fits(void **state)
{
	char err[128], code[OTP_MAX_CODE_LEN + 1], text[OTP_MAX_TEXT];
	struct otp o = { 0 };
	struct config c;
	bool gsm;

	(void)state;
	memset(&c, 0, sizeof(c));
	str_copy(c.app_name, sizeof(c.app_name), "Example Router");
	str_copy(c.webotp_domain, sizeof(c.webotp_domain), "login.example.com");
	c.code_ttl = 300;
	memset(code, '7', OTP_MAX_CODE_LEN);
	code[OTP_MAX_CODE_LEN] = '\0';
	assert_int_equal(www_builtin(&o), 0);
	assert_int_equal(lang_load(&o, err, sizeof(err)), 0);
	for (int k = 0; k < o.ncats; k++) {
		size_t units;

		assert_int_equal(message_fill(&c, o.cats[k].text[TX_SMS], code,
		    text, sizeof(text)), 0);
		assert_non_null(strstr(text, code));
		units = sms_units(text, &gsm);
		if (units > (gsm ? 160u : 70u))
			fail_msg("%s: the SMS takes %zu units: \"%s\"",
			    o.cats[k].lang, units, text);
	}
	free(o.lang_files);
	free(o.lang_text);
	free(o.unpacked);
}

static void
test_log_escape(void **state)
{
	char out[64];

	(void)state;
	log_escape("a\nb\"c\\\x7f", 8, out, sizeof(out));
	assert_string_equal(out, "a\\x0ab\\x22c\\x5c\\x7f");
	log_escape("abcdef", 6, out, 4);
	assert_string_equal(out, "abc");
}

static void
test_utilities(void **state)
{
	uint8_t b[2];
	long v;

	(void)state;
	assert_int_equal(hex_decode("0aFf", 4, b), 0);
	assert_int_equal(b[0], 0x0a);
	assert_int_equal(b[1], 0xff);
	assert_int_equal(hex_decode("0g", 2, b), -1);
	assert_int_equal(parse_long("42", 0, 100, &v), 0);
	assert_int_equal(v, 42);
	assert_int_equal(parse_long(" 42", 0, 100, &v), -1);
	assert_int_equal(parse_long("101", 0, 100, &v), -1);
	assert_int_equal(parse_long("99999999999999999999", 0, LONG_MAX, &v),
	    -1);
	assert_int_equal(edit_distance("TOKEN_LENGHT", "TOKEN_LENGTH"), 2);
	assert_int_equal(edit_distance("api_key", "API_KEY"), 0);
	assert_true(ct_equal("abc", "abc", 3));
	assert_false(ct_equal("abc", "abd", 3));
}

/* ---- server certificate ------------------------------------------------ */

/*
 * The static builds' packed text (tools/lz.py: raw deflate, as Python's
 * zlib writes it): a stored block, one with the fixed codes, one with its
 * own; then every cut of each, and every one-bit change, unpacks to -1 or
 * to at most cap bytes, never outside (ASan watches), as does a cap one
 * byte short.
 */
static void
test_inflate_raw(void **state)
{
	static const unsigned char stored[] = { 0x01, 0x0b, 0x00, 0xf4, 0xff,
	    's', 't', 'o', 'r', 'e', 'd', ' ', 't', 'e', 'x', 't' };
	static const unsigned char fixed[] = { 0x4b, 0x4c, 0x4a, 0x4e, 0x84,
	    0x21, 0x85, 0x8c, 0xd4, 0x9c, 0x9c, 0x7c, 0x08, 0xa9, 0x08, 0x00 };
	static const unsigned char dynamic[] = {
	    0xcd, 0x8d, 0xb9, 0x11, 0xc2, 0x30, 0x14, 0x05, 0x5b, 0x79, 0x19,
	    0x89, 0xc7, 0xc3, 0x7d, 0xc5, 0x90, 0x3b, 0xa0, 0x81, 0x8f, 0x91,
	    0x65, 0x81, 0x90, 0x84, 0xbe, 0x3e, 0x57, 0x43, 0xcc, 0x90, 0x51,
	    0x83, 0x1a, 0x43, 0x43, 0x15, 0x64, 0x3b, 0x1b, 0xec, 0x36, 0xa4,
	    0x15, 0xc3, 0x38, 0xa4, 0x5e, 0x41, 0x58, 0xc5, 0x01, 0xc3, 0x92,
	    0xd3, 0x52, 0xfc, 0x1a, 0x5b, 0xa7, 0xad, 0xe1, 0xbe, 0xc2, 0x46,
	    0x49, 0xe2, 0xb6, 0x40, 0x17, 0xc9, 0xe5, 0x17, 0x19, 0xae, 0xa0,
	    0x38, 0x50, 0xfe, 0x78, 0x5b, 0x21, 0xf8, 0x98, 0x44, 0x4b, 0x7e,
	    0x73, 0x8d, 0xe6, 0xef, 0x83, 0xbb, 0xd2, 0xb9, 0x88, 0x69, 0x4f,
	    0xd8, 0x47, 0x7f, 0x73, 0xe8, 0xfc, 0x1d, 0x47, 0x39, 0x07, 0x86,
	    0xbf, 0xaa, 0xf8, 0xdb, 0x58, 0x7a, 0x3e, 0x70, 0xf0, 0x1a, 0xc3,
	    0xd1, 0x78, 0x32, 0x9d, 0xcd, 0x17, 0xcb, 0x55, 0xfd, 0x05 };
	static const char *const line = "Pages in the user's language: "
	    "English, Deutsch, fran\xc3\xa7" "ais, espa\xc3\xb1" "ol, "
	    "portugu\xc3\xaas. ";
	const struct {
		const unsigned char *in;
		size_t n;
		const char *want;
	} v[] = {
		{ stored, sizeof(stored), "stored text" },
		{ fixed, sizeof(fixed), "abcabcabcabc hello hello!" },
		{ dynamic, sizeof(dynamic), NULL },
	};
	char want[512], out[512];
	unsigned char bad[sizeof(dynamic)];

	(void)state;
	snprintf(want, sizeof(want), "%s%s%sThe quick brown fox jumps over "
	    "the lazy dog 0123456789.", line, line, line);
	for (size_t k = 0; k < countof(v); k++) {
		const char *w = v[k].want != NULL ? v[k].want : want;
		long len = (long)strlen(w);

		assert_int_equal(inflate_raw(v[k].in, v[k].n, out, sizeof(out)),
		    len);
		assert_memory_equal(out, w, (size_t)len);
		assert_int_equal(inflate_raw(v[k].in, v[k].n, out,
		    (size_t)len - 1), -1);
		for (size_t cut = 0; cut < v[k].n; cut++)
			assert_true(inflate_raw(v[k].in, cut, out, sizeof(out))
			    < len);
		for (size_t bit = 0; bit < 8 * v[k].n; bit++) {
			memcpy(bad, v[k].in, v[k].n);
			bad[bit / 8] ^= (unsigned char)(1u << bit % 8);
			assert_true(inflate_raw(bad, v[k].n, out, sizeof(out)) <=
			    (long)sizeof(out));
		}
	}
}

static void
test_cert_generate_once(void **state)
{
	struct otp *otp = make_otp();
	char path[] = "/tmp/otp_unit_cert_XXXXXX", before[4096], after[4096];
	struct stat st;
	FILE *f;
	size_t n1, n2;

	(void)state;
	assert_non_null(mkdtemp(path));
	snprintf(otp->cfg->cert_file, sizeof(otp->cfg->cert_file), "%s/c.pem",
	    path);
	/* No TLS listener: nothing is made. */
	assert_int_equal(otp_cert_ensure(otp), 0);
	assert_int_not_equal(access(otp->cfg->cert_file, F_OK), 0);
	str_copy(otp->cfg->listen, sizeof(otp->cfg->listen), "80,443s");
	assert_true(listen_has_tls(otp->cfg->listen));
	assert_false(listen_has_tls("80,8080"));
	assert_int_equal(otp_cert_ensure(otp), 0);
	assert_int_equal(stat(otp->cfg->cert_file, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	f = fopen(otp->cfg->cert_file, "r");
	n1 = fread(before, 1, sizeof(before), f);
	fclose(f);
	assert_non_null(strstr(before, "BEGIN EC PRIVATE KEY"));
	assert_non_null(strstr(before, "BEGIN CERTIFICATE"));
	/* A second start reuses the file. */
	assert_int_equal(otp_cert_ensure(otp), 0);
	f = fopen(otp->cfg->cert_file, "r");
	n2 = fread(after, 1, sizeof(after), f);
	fclose(f);
	assert_int_equal(n1, n2);
	assert_memory_equal(before, after, n1);
	/* A file that holds no certificate is an error. */
	f = fopen(otp->cfg->cert_file, "w");
	fputs("garbage\n", f);
	fclose(f);
	assert_int_equal(otp_cert_ensure(otp), -1);
	unlink(otp->cfg->cert_file);
	rmdir(path);
	otp_destroy(otp);
}

/* ---- forward-auth, return_to, API bodies ------------------------------- */

static void
test_return_to(void **state)
{
	(void)state;
	assert_true(return_to_ok("/admin/"));
	assert_true(return_to_ok("/a?b=c&d=%2F"));
	assert_false(return_to_ok("//evil.example/"));
	assert_false(return_to_ok("/\\evil.example/"));
	assert_false(return_to_ok("https://evil.example/"));
	assert_false(return_to_ok("/a\\b"));
	assert_false(return_to_ok("/a b"));
	assert_false(return_to_ok("/a\r\nSet-Cookie: x"));
	assert_false(return_to_ok(""));
}

/* A cookie issued at 1000 with SESSION_TTL 3600, checked at now under
 * today's SESSION_TTL ttl. */
static int
auth_at(struct otp *otp, const char *v, long ttl, long long now,
        struct auth *a)
{
	struct config c = *otp->cfg;

	c.session_ttl = ttl;
	return auth_cookie_check(otp, &c, v, now, a);
}

static void
test_auth_cookie(void **state)
{
	struct otp *otp = make_otp();
	struct auth a = { "+12015550123", 1000, 3600, 0x0123456789abcdefULL };
	struct auth got;
	char v[AUTH_COOKIE_MAX], bad[AUTH_COOKIE_MAX + 8];

	(void)state;
	assert_int_equal(auth_cookie_make(otp, &a, v, sizeof(v)), 0);
	assert_int_equal(strncmp(v, "1000.3600.12015550123.0123456789abcdef.",
	    39), 0);
	assert_int_equal(strlen(v), 39 + 32);
	assert_int_equal(auth_at(otp, v, 3600, 1000, &got), 0);
	assert_string_equal(got.phone, "+12015550123");
	assert_int_equal(got.issued, 1000);
	assert_int_equal(got.ttl, 3600);
	assert_true(got.rid == a.rid);
	assert_int_equal(auth_at(otp, v, 3600, 4599, &got), 0);
	/* Expired: issued + SESSION_TTL has passed. */
	assert_int_equal(auth_at(otp, v, 3600, 4600, &got), -1);
	/* SESSION_TTL lowered to 60: the issued cookie ends at 1060. */
	assert_int_equal(auth_at(otp, v, 60, 1059, &got), 0);
	assert_int_equal(auth_at(otp, v, 60, 1060, &got), -1);
	assert_int_equal(auth_at(otp, v, 60, 2000, &got), -1);
	/* Raised: never past the TTL the cookie was issued with. */
	assert_int_equal(auth_at(otp, v, 86400, 4599, &got), 0);
	assert_int_equal(auth_at(otp, v, 86400, 4600, &got), -1);
	/* Issued in the future (a clock set back): only within the skew. */
	assert_int_equal(auth_at(otp, v, 3600, 1000 - OTP_AUTH_SKEW, &got), 0);
	assert_int_equal(auth_at(otp, v, 3600, 999 - OTP_AUTH_SKEW, &got), -1);
	/* Tampered: a later issue, a longer TTL, another number or id, a
	 * cut mac, a leading zero, a field more. */
	snprintf(bad, sizeof(bad), "2%s", v);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "1000.9%s", v + 5);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "%.*s4%s", 20, v, v + 21);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "%.*s0%s", 10, v, v + 10);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "%.*s", (int)strlen(v) - 1, v);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "01000.%s", v + 5);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	snprintf(bad, sizeof(bad), "%s.0", v);
	assert_int_equal(auth_at(otp, bad, 3600, 1999, &got), -1);
	/* The previous version's "<expiry>.<digits>.<mac>": refused. */
	assert_int_equal(auth_at(otp, "4600.12015550123.0011223344556677"
	    "8899aabbccddeeff", 3600, 1999, &got), -1);
	assert_int_equal(auth_at(otp, "", 3600, 1999, &got), -1);
	assert_int_equal(auth_at(otp, "....", 3600, 1999, &got), -1);
	otp_destroy(otp);
}

static void
test_cookie_domain(void **state)
{
	static const char *const good[] = { "", "example.lan", "Router.Example.LAN",
	    "a-b.c1.example.com", "xn--bcher-kva.example" };
	static const char *const bad[] = { ".example.lan", "example.lan.",
	    "example.lan:443", "lan", "localhost", "10.0.0.1", "a..lan",
	    "-a.lan", "a-.lan", "a.-lan", "exa mple.lan", "https://a.lan",
	    "a.lan/", "*.example.lan", "example.lan.123" };

	(void)state;
	for (size_t i = 0; i < countof(good); i++)
		assert_null(check_cookie_domain(good[i]));
	for (size_t i = 0; i < countof(bad); i++)
		assert_non_null(check_cookie_domain(bad[i]));
}

/* The revocation table: ended entries go, a full one raises its floor. */
static void
test_revoked_table(void **state)
{
	struct otp *otp = make_otp();
	struct revoked *rv = &otp->revoked;

	(void)state;
	assert_false(revoked_has(rv, 7, 2000));
	assert_false(revoked_add(rv, 7, 2000, 1000));
	assert_true(revoked_has(rv, 7, 2000));
	assert_false(revoked_has(rv, 8, 2000));
	/* The same session twice: one entry. */
	revoked_add(rv, 7, 2000, 1000);
	assert_int_equal(rv->n, 1);
	/* At 2000 session 7 has ended anyway: its entry goes. */
	revoked_add(rv, 9, 5000, 2000);
	assert_int_equal(rv->n, 1);
	assert_true(rv->e[0].rid == 9);
	/* Full: the entry that ends soonest goes, and the floor ends every
	 * session that ends by then; later ones are untouched. */
	for (uint64_t i = 1; i < OTP_MAX_REVOKED; i++)
		assert_false(revoked_add(rv, 100 + i, 6000 + (int64_t)i, 2000));
	assert_int_equal(rv->n, OTP_MAX_REVOKED);
	assert_true(revoked_add(rv, 50, 9000, 2000));
	assert_int_equal(rv->n, OTP_MAX_REVOKED);
	assert_int_equal(rv->floor, 5000);
	assert_true(revoked_has(rv, 9, 5000));   /* dropped, yet revoked */
	assert_true(revoked_has(rv, 1, 4999));   /* ends early */
	assert_false(revoked_has(rv, 1, 5001));
	assert_true(revoked_has(rv, 50, 9000));
	/* One ending sooner than all of them: the floor takes it. */
	assert_true(revoked_add(rv, 51, 5500, 2000));
	assert_int_equal(rv->floor, 5500);
	assert_true(revoked_has(rv, 51, 5500));
	assert_true(revoked_has(rv, 101, 6001));
	otp_destroy(otp);
}

static int64_t fake_wall = 2000 * 1000; /* ms: 2000 s */

static int64_t
fake_wall_clock(void)
{
	return fake_wall;
}

/* revoked.state: written, read back without the ended, refused when
 * malformed (with its line) and then left as it is. */
static void
test_revoked_state(void **state)
{
	char dir[] = "/tmp/otp_unit_rv_XXXXXX", path[64], err[256];
	struct otp *otp = make_otp(), *again = make_otp();
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/revoked.state", dir);
	/* Not in their configs: their sweepers must not write it too. */
	again->wall_ms = fake_wall_clock;
	revoked_add(&otp->revoked, 0xfedcba9876543210ULL, 1500, 1000);
	revoked_add(&otp->revoked, 2, 3000, 1000);
	otp->revoked.floor = 1200;
	assert_int_equal(revoked_save(otp, dir), 0);
	/* At 2000 (fake_wall), the session ending at 1500 has ended. */
	assert_int_equal(state_load(again, dir, "revoked.state",
	    REVOKED_MAGIC "\n", revoked_load_line, "", err, sizeof(err)), 0);
	assert_int_equal(again->revoked.n, 1);
	assert_true(again->revoked.e[0].rid == 2);
	assert_int_equal(again->revoked.e[0].until, 3000);
	assert_int_equal(again->revoked.floor, 1200);
	f = fopen(path, "a");
	fputs("R 12 junk\n", f);
	fclose(f);
	assert_int_equal(state_load(again, dir, "revoked.state",
	    REVOKED_MAGIC "\n", revoked_load_line, "(hint)", err,
	    sizeof(err)), -1);
	assert_non_null(strstr(err, "revoked.state:5: not a revoked.state "
	    "line; move the file away to start (hint)"));
	unlink(path);
	rmdir(dir);
	otp_destroy(again);
	otp_destroy(otp);
}

static void
test_json_get_string(void **state)
{
	char out[32];
	const char *b;

	(void)state;
	b = "{\"phone\": \"+1 (201) 555\\u002D0123\"}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), 17);
	assert_string_equal(out, "+1 (201) 555-0123");
	b = "{\"x\": [1, {\"phone\": 1}], \"phone\": \"a\\\"b\"}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), 3);
	assert_string_equal(out, "a\"b");
	b = "{\"phone\": 2015550123}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), -1);
	b = "{\"phone\": \"\\u00e9\"}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), -1);
	b = "{\"phone\": \"unterminated";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), -1);
	b = "{\"phone\": \"0123456789012345678901234567890123\"}";
	assert_int_equal(json_get_string(b, strlen(b), "phone", out,
	    sizeof(out)), -1);
}

/* The API reads a field of a JSON or url-encoded body alike. */
static void
test_api_field(void **state)
{
	struct api_body b;
	char out[16];

	(void)state;
	b.form = false;
	b.len = (size_t)snprintf(b.buf, sizeof(b.buf), "{\"phone\": \"+1 201\", "
	    "\"n\": 5, \"e\": \"\\u00e9\"}");
	assert_int_equal(api_field(&b, "phone", out, sizeof(out)), 6);
	assert_string_equal(out, "+1 201");
	assert_int_equal(api_field(&b, "code", out, sizeof(out)), FORM_MISSING);
	assert_true(api_field(&b, "n", out, sizeof(out)) < FORM_MISSING);
	assert_true(api_field(&b, "e", out, sizeof(out)) < FORM_MISSING);
	b.form = true;
	b.len = (size_t)snprintf(b.buf, sizeof(b.buf), "phone=%%2B1+201&n=5");
	assert_int_equal(api_field(&b, "phone", out, sizeof(out)), 6);
	assert_string_equal(out, "+1 201");
	assert_int_equal(api_field(&b, "code", out, sizeof(out)), FORM_MISSING);
	b.len = (size_t)snprintf(b.buf, sizeof(b.buf), "phone=1&x=%%zz");
	assert_int_equal(api_field(&b, "phone", out, sizeof(out)),
	    FORM_BAD_ESCAPE);
}

static int64_t hook_clock(void) { return 1700000000123LL; }

/*
 * The webhook queue: only the API's records are queued, with the number
 * masked; a full queue drops its oldest event for the new one and counts
 * it; the signature is HMAC-SHA256 of "<ts>.<body>" (the value Python's
 * hmac module gives).
 */
static void
test_hooks(void **state)
{
	struct hooks *h = calloc(1, sizeof(*h));
	struct record r;
	struct config c;
	char sig[3 + 2 * OTP_MAC_LEN + 1];
	uint64_t min = UINT64_MAX;

	(void)state;
	assert_non_null(h);
	pthread_mutex_init(&h->lock, NULL);
	pthread_cond_init(&h->cond, NULL);
	h->now_ms = h->wall_ms = hook_clock;
	memset(&r, 0, sizeof(r));
	str_copy(r.phone, sizeof(r.phone), "+12015550123");
	r.ns = NS_WEB;
	atomic_store(&h->on, true);
	hook_note(h, 1, &r, HOOK_APPROVED);
	assert_int_equal(h->seq, 0);             /* the forms' record */
	r.ns = NS_API;
	atomic_store(&h->on, false);
	hook_note(h, 1, &r, HOOK_APPROVED);
	assert_int_equal(h->seq, 0);             /* webhooks off */
	atomic_store(&h->on, true);
	for (uint32_t i = 0; i < OTP_HOOK_QUEUE; i++)
		hook_note(h, i, &r, HOOK_LOCKED);
	assert_int_equal(h->dropped, 0);
	assert_string_equal(h->q[0].to, "+1********23");
	assert_int_equal(h->q[0].at_ms, 1700000000123LL);
	hook_note(h, 999, &r, HOOK_EXPIRED);
	assert_int_equal(h->dropped, 1);
	for (size_t i = 0; i < countof(h->q); i++)
		min = h->q[i].seq < min ? h->q[i].seq : min;
	assert_int_equal(min, 2);                /* the oldest (1) went */
	assert_ptr_equal(hooks_room(h), &h->q[1]);
	memset(&c, 0, sizeof(c));
	str_copy(c.webhook_secret, sizeof(c.webhook_secret),
	    "whsec-unit-0123456789");
	assert_int_equal(hook_sign(&c, 1700000000LL, "{\"a\":1}", sig), 0);
	assert_string_equal(sig, "v1=d84a80e81c4598f77148d402afce995d57587e40"
	    "825561201d21d0094e238d2c");
	pthread_cond_destroy(&h->cond);
	pthread_mutex_destroy(&h->lock);
	free(h);
}

/* ---- the log writer ---------------------------------------------------- */

#define LOGW_THREADS 4
#define LOGW_LINES 3000 /* x 4 x ~120 bytes: more than the pipe and both
			   buffers hold, so writers wait for room */

static void *
logw_flood(void *arg)
{
	struct otp *otp = ((void **)arg)[0];
	int t = (int)(intptr_t)((void **)arg)[1];

	for (int i = 0; i < LOGW_LINES; i++)
		log_line(otp, "info", "t%d n%05d %s", t, i,
		    "................................................"
		    "................................................");
	return NULL;
}

/*
 * Four threads log 3000 lines each into a pipe that is read only after a
 * pause (so the pipe, then both buffers, fill up): every line arrives
 * whole, once, and each thread's in the order it logged them; after
 * logw_stop() a line is written directly.
 */
static void
test_log_writer(void **state)
{
	struct otp *otp = calloc(1, sizeof(*otp));
	size_t cap = (size_t)LOGW_THREADS * LOGW_LINES * 160, len = 0;
	char *got = malloc(cap), *line, *save = NULL;
	int pfd[2], saved = dup(STDERR_FILENO), next[LOGW_THREADS] = {0};
	void *args[LOGW_THREADS][2];
	pthread_t th[LOGW_THREADS];
	size_t lines = 0;

	(void)state;
	assert_non_null(otp);
	assert_non_null(got);
	assert_int_equal(pipe(pfd), 0);
	assert_true(dup2(pfd[1], STDERR_FILENO) >= 0);
	assert_int_equal(logw_start(otp), 0);
	for (int t = 0; t < LOGW_THREADS; t++) {
		args[t][0] = otp, args[t][1] = (void *)(intptr_t)t;
		assert_int_equal(pthread_create(&th[t], NULL, logw_flood,
		    args[t]), 0);
	}
	usleep(50000);
	while (lines < (size_t)LOGW_THREADS * LOGW_LINES) {
		struct pollfd p = {.fd = pfd[0], .events = POLLIN};
		ssize_t k;

		assert_int_equal(poll(&p, 1, 10000), 1); /* a line lost: */
		k = read(pfd[0], got + len, cap - len - 1); /* no hang */
		assert_true(k > 0);
		for (ssize_t i = 0; i < k; i++)
			lines += got[len + (size_t)i] == '\n';
		len += (size_t)k;
	}
	for (int t = 0; t < LOGW_THREADS; t++)
		pthread_join(th[t], NULL);
	logw_stop(otp);
	assert_null(otp->logw);
	log_line(otp, "warn", "after the writer");
	dup2(saved, STDERR_FILENO);
	close(saved), close(pfd[1]);
	len += (size_t)read(pfd[0], got + len, cap - len - 1);
	close(pfd[0]);
	got[len] = '\0';
	lines = 0;
	for (line = strtok_r(got, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save), lines++) {
		int t, n, off = 0;

		if (lines == (size_t)LOGW_THREADS * LOGW_LINES) {
			assert_string_equal(line + 21, "warn after the writer");
			continue;
		}
		assert_int_equal(strlen(line), 21 + 15 + 96);
		assert_int_equal(sscanf(line + 21, "info t%d n%d %n", &t, &n,
		    &off), 2);
		assert_true(t >= 0 && t < LOGW_THREADS && off == 15);
		assert_int_equal(n, next[t]);    /* in order, none lost */
		next[t]++;
	}
	assert_int_equal(lines, (size_t)LOGW_THREADS * LOGW_LINES + 1);
	free(got);
	free(otp);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_api_field),
		cmocka_unit_test(test_hooks),
		cmocka_unit_test(test_log_writer),
		cmocka_unit_test(test_config_tutorial),
		cmocka_unit_test(test_config_literals),
		cmocka_unit_test(test_config_errors),
		cmocka_unit_test(test_config_upstream),
		cmocka_unit_test(test_config_env),
		cmocka_unit_test(test_config_missing_file),
		cmocka_unit_test(test_users_file),
		cmocka_unit_test(test_users_file_errors),
		cmocka_unit_test(test_config_documented),
		cmocka_unit_test(test_code_hex_lengths),
		cmocka_unit_test(test_code_digits_unbiased),
		cmocka_unit_test(test_code_no_repeats),
		cmocka_unit_test(test_code_mac_case_insensitive),
		cmocka_unit_test(test_hmac_keyed),
		cmocka_unit_test(test_hmac_memo),
		cmocka_unit_test(test_limits_hash_memo),
		cmocka_unit_test(test_limits_number_key),
		cmocka_unit_test(test_store_add_check_once),
		cmocka_unit_test(test_store_expiry),
		cmocka_unit_test(test_store_full),
		cmocka_unit_test(test_store_sweep_used),
		cmocka_unit_test(test_store_attempts_lock),
		cmocka_unit_test(test_store_view),
		cmocka_unit_test(test_limits_wait),
		cmocka_unit_test(test_limits_windows),
		cmocka_unit_test(test_limits_global),
		cmocka_unit_test(test_limits_network_share),
		cmocka_unit_test(test_limits_chain_search),
		cmocka_unit_test(test_limits_fail_closed),
		cmocka_unit_test(test_limits_take_full),
		cmocka_unit_test(test_limits_verify_budget),
		cmocka_unit_test(test_phone_normalise),
		cmocka_unit_test(test_phone_countries),
		cmocka_unit_test(test_phone_library_examples),
		cmocka_unit_test(test_phone_nanp),
		cmocka_unit_test(test_phone_mask),
		cmocka_unit_test(test_phone_show),
		cmocka_unit_test(test_phone_mask_copy),
		cmocka_unit_test(test_phone_allowed),
		cmocka_unit_test(test_phone_table),
		cmocka_unit_test(test_json_escape),
		cmocka_unit_test(test_html_escape),
		cmocka_unit_test(test_label_escape),
		cmocka_unit_test(test_listen_loopback),
		cmocka_unit_test(test_form_parse),
		cmocka_unit_test(test_cookie_get),
		cmocka_unit_test(test_handle_roundtrip),
		cmocka_unit_test(test_json_api_error),
		cmocka_unit_test(test_message_fill),
		cmocka_unit_test(test_message_languages),
		cmocka_unit_test(test_sms_units),
		cmocka_unit_test(test_command_argv),
		cmocka_unit_test(test_fill),
		cmocka_unit_test(test_text_helpers),
		cmocka_unit_test(test_json_string),
		cmocka_unit_test(test_config_snapshot),
		cmocka_unit_test(test_http_body),
		cmocka_unit_test(test_page_render),
		cmocka_unit_test(test_page_render_runs),
		cmocka_unit_test(test_head_add),
		cmocka_unit_test(test_send_console),
		cmocka_unit_test(test_log_line),
		cmocka_unit_test(test_pages_render),
		cmocka_unit_test(test_catalogs),
		cmocka_unit_test(test_catalog_sms_fits),
		cmocka_unit_test(test_log_escape),
		cmocka_unit_test(test_utilities),
		cmocka_unit_test(test_inflate_raw),
		cmocka_unit_test(test_cert_generate_once),
		cmocka_unit_test(test_return_to),
		cmocka_unit_test(test_auth_cookie),
		cmocka_unit_test(test_cookie_domain),
		cmocka_unit_test(test_revoked_table),
		cmocka_unit_test(test_revoked_state),
		cmocka_unit_test(test_json_get_string),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
