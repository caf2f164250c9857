/*
 * fuzz/fuzz_cookie.c: a Cookie header. The input up to its first NUL is
 * the header value (civetweb hands over a C string): cookie_get() for each
 * cookie otp_demo reads, with output sizes from tight to ample, then
 * handle_decode() on otp_vid's value and auth_cookie_check() on
 * otp_auth's, as the handlers use them.
 */
#include "../otp_demo.c"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "otp_sid", "otp_vid", "otp_auth",
	    "otp", "" };
	static const size_t sizes[] = { 1, 2, 17, 33, 41, 128 };
	static struct otp otp; /* zero keys: enough for the parser */
	static struct config cfg = { .session_ttl = 60 };
	struct auth a;
	uint8_t id[OTP_ID_LEN];
	uint32_t slot;
	char *h = fuzz_str(data, size);

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		for (size_t j = 0; j < sizeof(sizes) / sizeof(sizes[0]); j++) {
			char *out = malloc(sizes[j]);
			int n = cookie_get(h, names[i], out, sizes[j]);

			if (n >= 0) {
				FUZZ_CHECK((size_t)n < sizes[j]);
				FUZZ_CHECK(strlen(out) == (size_t)n);
			}
			free(out);
		}
	{
		char v[128];
		int n = cookie_get(h, "otp_vid", v, sizeof(v));

		if (n >= 0 && handle_decode(v, (size_t)n, &slot, id) == 0)
			FUZZ_CHECK(n == HANDLE_LEN);
		if (cookie_get(h, "otp_auth", v, sizeof(v)) >= 0 &&
		    auth_cookie_check(&otp, &cfg, v, 0, &a) == 0)
			FUZZ_CHECK(a.phone[0] == '+' && a.issued <= OTP_AUTH_SKEW);
	}
	free(h);
	return 0;
}
