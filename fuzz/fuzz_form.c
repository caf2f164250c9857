/*
 * fuzz/fuzz_form.c: a urlencoded form body and its percent-decoding.
 * Byte 0 picks the field looked up, byte 1 the size of the output buffer;
 * the rest is the body (at most OTP_MAX_BODY bytes, as body_read() caps
 * it), in a buffer of exactly its size.
 */
#include "../otp_demo.c"
#include "fuzz.h"

static const char *const fuzz_fields[] = {
	"phone", "token", "csrf", "return_to", "", "a", "phone%20",
};

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *name;
	size_t outlen, len;
	char *body, *out;
	int rc;

	if (size < 2)
		return 0;
	name = fuzz_fields[data[0] % (sizeof(fuzz_fields) /
	    sizeof(fuzz_fields[0]))];
	outlen = (size_t)data[1] % (OTP_MAX_INPUT + 8) + 1;
	data += 2, size -= 2;
	len = size < OTP_MAX_BODY ? size : OTP_MAX_BODY;
	body = fuzz_dup(data, len);
	out = malloc(outlen);

	rc = form_get(body, len, name, out, outlen);
	FUZZ_CHECK(rc >= FORM_NUL);
	if (rc >= 0) {
		FUZZ_CHECK((size_t)rc < outlen);
		FUZZ_CHECK(strlen(out) == (size_t)rc); /* no NUL inside */
	}

	rc = form_decode(body, len, out, outlen);
	FUZZ_CHECK(rc >= FORM_NUL);
	if (rc >= 0) {
		FUZZ_CHECK((size_t)rc < outlen && (size_t)rc <= len);
		FUZZ_CHECK(strlen(out) == (size_t)rc);
	}
	free(out);
	free(body);
	return 0;
}
