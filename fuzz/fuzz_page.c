/*
 * fuzz/fuzz_page.c: the page template renderer. The input is a template
 * (a page in WWW_DIR may be edited by a deployer); the values carry every
 * character html_escape() must change. Bytes 0-1 pick the output size.
 */
#include "../otp_demo.c"
#include "fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const struct var vars[] = {
		{ "error", "<script>alert(\"x&y\")</script>" },
		{ "csrf", "0123456789abcdef" },
		{ "phone", "'+1201'<>&\"" },
		{ "base", "" },
		{ "", "empty name" },
		{ "x", "{{x}}" },
	};
	size_t outlen;
	char *tmpl, *out;
	long n;

	if (size < 2)
		return 0;
	outlen = ((size_t)data[0] << 8 | data[1]) % (OTP_MAX_PAGE + 1) + 1;
	data += 2, size -= 2;
	tmpl = fuzz_dup(data, size);
	out = malloc(outlen);
	n = page_render(tmpl, size, vars, sizeof(vars) / sizeof(vars[0]), out,
	    outlen);
	if (n >= 0) {
		FUZZ_CHECK((size_t)n < outlen && out[n] == '\0');
		/* values are escaped: none of their markup gets through
		 * unless the template itself has it */
		if (memchr(tmpl, '<', size) == NULL)
			FUZZ_CHECK(memchr(out, '<', (size_t)n) == NULL);
	}
	free(out);
	free(tmpl);
	return 0;
}
