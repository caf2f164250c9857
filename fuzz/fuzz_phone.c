/*
 * fuzz/fuzz_phone.c: reading a phone number, as typed into the form.
 * Byte 0 picks COUNTRY_CODE (and one no country has), byte 1 the output
 * size, byte 2 which regions ALLOWED_COUNTRY_CODES allows; the rest is
 * the number (a decoded form field, so at most OTP_MAX_INPUT bytes), in a
 * buffer of exactly its size.
 *
 * Properties: a number read is "+" and at most 15 digits, fits its
 * buffer, has a possible length for its region, and reads back to itself
 * from any COUNTRY_CODE; phone_read() refuses only for the four reasons,
 * and allows only what phone_allowed() allows; the mask never shows more
 * than the calling code and the last 2 digits.
 */
#include "../otp_demo.c"
#include "fuzz.h"

static const char *const fuzz_countries[] = {
	"+1", "+44", "+358", "+7", "+999", "+49", "+39", "+61", "+36",
};

static const char *const fuzz_allowed[] = {
	"", "US", "CA", "JM", "GB", "JE", "KZ",
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char masked[32], again[OTP_MAX_PHONE_LEN + 1], shown[OTP_MAX_SHOWN];
	char *in, *out;
	const char *country;
	struct config c;
	size_t outlen, len;
	int rc;

	if (size < 3)
		return 0;
	country = fuzz_countries[data[0] % (sizeof(fuzz_countries) /
	    sizeof(fuzz_countries[0]))];
	outlen = (size_t)data[1] % (OTP_MAX_PHONE_LEN + 4) + 1;
	memset(&c, 0, sizeof(c));
	str_copy(c.country_code, sizeof(c.country_code), country);
	{
		const char *iso = fuzz_allowed[data[2] % (sizeof(fuzz_allowed) /
		    sizeof(fuzz_allowed[0]))];
		int r = *iso ? phone_iso_region(iso, 2) : phone_cc_region(1);

		FUZZ_CHECK(r >= 0);
		phone_allow(c.countries, r, *iso == '\0');
	}
	data += 3, size -= 3;
	len = size < OTP_MAX_INPUT ? size : OTP_MAX_INPUT;
	in = fuzz_dup(data, len);
	out = malloc(outlen);
	rc = phone_normalise(in, len, country, out, outlen);
	FUZZ_CHECK(rc == PHONE_OK || rc == PHONE_INVALID ||
	    rc == PHONE_LENGTH || rc == PHONE_RANGE);
	FUZZ_CHECK(strlen(out) < outlen);
	if (rc == PHONE_OK) {
		size_t n = strlen(out), cclen = 0;
		int r;

		FUZZ_CHECK(n >= 2 && n <= 16 && out[0] == '+');
		FUZZ_CHECK(strspn(out + 1, "0123456789") == n - 1);
		r = phone_cc_read(out + 1, n - 1, &cclen);
		FUZZ_CHECK(r >= 0);
		r = phone_region_of(r, out + 1 + cclen, n - 1 - cclen);
		FUZZ_CHECK(phone_length_ok(r, n - 1 - cclen));
		/* E.164 reads back to itself, whatever COUNTRY_CODE */
		FUZZ_CHECK(phone_normalise(out, n, "+44", again,
		    sizeof(again)) == PHONE_OK);
		FUZZ_CHECK(strcmp(again, out) == 0);

		phone_mask(out, masked, sizeof(masked));
		FUZZ_CHECK(strcmp(masked, out) != 0);
		FUZZ_CHECK(strncmp(masked, out, 1 + cclen) == 0);
		FUZZ_CHECK(strspn(masked + 1 + cclen, "*") + 1 + cclen + 2 >=
		    strlen(masked));

		/* As its person sees it: the calling code, then what was
		 * typed or the digits, in OTP_MAX_SHOWN. */
		phone_show(out, in, len, shown, sizeof(shown));
		FUZZ_CHECK(strlen(shown) < sizeof(shown));
		FUZZ_CHECK(strncmp(shown, out, 1 + cclen) == 0 &&
		    shown[1 + cclen] == ' ');
	}
	if (outlen > OTP_MAX_PHONE_LEN) {
		char got[OTP_MAX_PHONE_LEN + 1];
		int rr = phone_read(&c, in, len, got, sizeof(got));

		FUZZ_CHECK(rr == (rc == PHONE_OK && !phone_allowed(&c, got) ?
		    PHONE_COUNTRY : rc));
		FUZZ_CHECK(rr != PHONE_OK || phone_allowed(&c, got));
	}
	free(out);
	free(in);
	return 0;
}
