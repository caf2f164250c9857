/*
 * fuzz/fuzz_accept_language.c: the Accept-Language header, which picks
 * the MESSAGE_<lang> an SMS is sent in. The input up to its first NUL is
 * the header value.
 */
#include "../otp_demo.c"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const langs[] = { "en", "de", "pt_BR", "fr_CA",
	    "zh_Hant" };
	char *h = fuzz_str(data, size);

	for (int n = 0; n <= (int)(sizeof(langs) / sizeof(langs[0])); n++) {
		int i = lang_best(h, langs, n);

		FUZZ_CHECK(i >= -1 && i < n);
	}
	free(h);
	return 0;
}
