/*
 * fuzz/fuzz_json.c: the SMS API's answer. json_api_error() pulls
 * errors[0].code and .title out of an error body, json_member() finds
 * "data" in a 2xx body, and json_get_string() reads the JSON API's own
 * bodies. The body is not NUL-terminated in otp_demo (it is the bytes
 * libcurl collected), so neither is it here. Byte 0 picks the output
 * sizes.
 */
#include "../otp_demo.c"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	size_t codelen, titlelen;
	char *body, *code, *title;

	if (size < 1)
		return 0;
	codelen = (size_t)(data[0] & 0x0f) * 3 + 1;
	titlelen = (size_t)(data[0] >> 4) * 9 + 1;
	data++, size--;
	body = fuzz_dup(data, size);
	code = malloc(codelen);
	title = malloc(titlelen);
	if (json_api_error(body, size, code, codelen, title, titlelen) == 0) {
		FUZZ_CHECK(strlen(code) < codelen);
		FUZZ_CHECK(strlen(title) < titlelen);
		FUZZ_CHECK(code[0] != '\0' || title[0] != '\0');
	}
	{
		struct json j = { body, body + size, 0 };

		if (json_member(&j, "data") == 0)
			FUZZ_CHECK(j.p >= body && j.p <= body + size);
	}
	{
		char out[24];
		int n = json_get_string(body, size, "phone", out, sizeof(out));

		if (n >= 0) /* decoded whole, no NUL inside */
			FUZZ_CHECK((size_t)n < sizeof(out) && strlen(out) ==
			    (size_t)n);
	}
	free(title);
	free(code);
	free(body);
	return 0;
}
