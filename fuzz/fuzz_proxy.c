/*
 * fuzz/fuzz_proxy.c: what a proxy (or a client posing as one) controls.
 * The input is NUL-separated pieces: a request path for path_canonical(),
 * then up to 8 X-Forwarded-For header lines for forwarded_for() behind a
 * TRUSTED_PROXY list, then one limits.state line for limits_load_line().
 * Properties: a canonical path has no escape, no empty or dot segment; the
 * client found is a valid address that is not a trusted proxy; a state
 * line never makes a window with key 0 or outside its table.
 */
#include "../otp_demo.c"
#include "fuzz.h"

/* Piece i of the input (NUL-separated), as a C string, or NULL. */
static const char *
piece(const char *s, size_t size, int i, size_t *off)
{
	size_t o = 0;

	for (int k = 0; k < i; k++) {
		o += strnlen(s + o, size - o) + 1;
		if (o >= size)
			return NULL;
	}
	*off = o;
	return s + o;
}

static struct otp *
fuzz_otp(void)
{
	static struct otp *otp;
	char err[256];

	if (otp == NULL) {
		otp = calloc(1, sizeof(*otp));
		if (otp == NULL ||
		    (otp->cfg = calloc(1, sizeof(*otp->cfg))) == NULL ||
		    config_defaults(otp->cfg, err, sizeof(err)) != 0)
			abort();
		str_copy(otp->cfg->trusted_proxy, sizeof(otp->cfg->trusted_proxy),
		    "127.0.0.1, ::1,10.0.0.2");
		otp->now_ms = clock_monotonic_ms;
		otp->wall_ms = clock_wall_ms;
		if (otp_tables_init(otp) != 0)
			abort();
	}
	return otp;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct otp *otp = fuzz_otp();
	struct mg_request_info ri;
	struct req r;
	char *s = malloc(size + 1), out[64];
	const char *p;
	size_t off = 0;
	int n = 0;

	if (s == NULL)
		abort();
	memcpy(s, data, size);
	s[size] = '\0';
	if (path_canonical(s)) {
		FUZZ_CHECK(strchr(s, '%') == NULL && strstr(s, "//") == NULL);
		FUZZ_CHECK(strstr(s, "/./") == NULL && strstr(s, "/../") == NULL);
	}
	memset(&ri, 0, sizeof(ri));
	memset(&r, 0, sizeof(r));
	r.otp = otp;
	r.cfg = otp->cfg;
	r.ri = &ri;
	for (int i = 1; i <= 8 && (p = piece(s, size, i, &off)) != NULL; i++) {
		ri.http_headers[n].name = i % 3 ? "X-Forwarded-For" :
		    "x-forwarded-for";
		ri.http_headers[n++].value = p;
	}
	ri.num_headers = n;
	if (forwarded_for(&r, out, sizeof(out))) {
		uint8_t bin[17];

		FUZZ_CHECK(addr_parse(out, strlen(out), bin));
		FUZZ_CHECK(!addr_in_list(out, strlen(out),
		    otp->cfg->trusted_proxy));
	}
	if ((p = piece(s, size, 9, &off)) != NULL) {
		limits_load_line(otp, p, otp->now_ms(), otp->wall_ms());
		for (int t = 0; t < T__N; t++)
			for (uint32_t k = 0; k < OTP_RATE_PROBES; k++) {
				const struct window *w = &otp->limits.tab[t].w[k];

				FUZZ_CHECK(w->count == 0 || w->key != 0);
			}
	}
	free(s);
	return 0;
}
