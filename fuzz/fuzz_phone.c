/*
 * fuzz/fuzz_phone.c: phone number normalisation, as typed into the form.
 * Byte 0 picks COUNTRY_CODE (values check_country_code() allows), byte 1
 * the output size; the rest is the number (a decoded form field, so at
 * most OTP_MAX_INPUT bytes), in a buffer of exactly its size.
 */
#include "../otp_demo.c"
#include "fuzz.h"

static const char *const fuzz_countries[] = {
	"+1", "+44", "+358", "+7", "+999", "+49",
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char masked[32], *in, *out;
	const char *country;
	size_t outlen, len;

	if (size < 2)
		return 0;
	country = fuzz_countries[data[0] % (sizeof(fuzz_countries) /
	    sizeof(fuzz_countries[0]))];
	outlen = (size_t)data[1] % (OTP_MAX_PHONE_LEN + 4) + 1;
	data += 2, size -= 2;
	len = size < OTP_MAX_INPUT ? size : OTP_MAX_INPUT;
	in = fuzz_dup(data, len);
	out = malloc(outlen);
	if (phone_normalise(in, len, country, out, outlen) == 0) {
		FUZZ_CHECK(phone_is_e164(out));
		FUZZ_CHECK(strlen(out) < outlen);
		phone_mask(out, masked, sizeof(masked));
		/* the mask never shows the whole number */
		FUZZ_CHECK(strcmp(masked, out) != 0);
	}
	free(out);
	free(in);
	return 0;
}
