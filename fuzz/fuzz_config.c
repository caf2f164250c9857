/*
 * fuzz/fuzz_config.c: the config parser. The input is a config file:
 * config_load() reads it (defaults, then the file, then config_finish()'s
 * checks across keys), and config_line() also parses each line on its own
 * over fresh defaults, so lines after the first error are reached too,
 * and as a line of USERS_FILE (user_parse()).
 */
#include "../otp_demo.c"
#include "fuzz.h"

#include <sys/mman.h>

static int fuzz_fd = -1;
static char fuzz_path[64];

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct config c;
	struct origin o;
	struct user u;
	const char *why;
	char err[OTP_MAX_STR + 128];
	char line[OTP_MAX_LINE];
	size_t at = 0;
	int lineno = 0;

	if (fuzz_fd < 0) {
		/* The file lives in memory; config_load() opens it by path. */
		if ((fuzz_fd = memfd_create("fuzz_config", 0)) < 0)
			abort();
		snprintf(fuzz_path, sizeof(fuzz_path), "/proc/self/fd/%d",
		    fuzz_fd);
	}
	if (ftruncate(fuzz_fd, 0) != 0 ||
	    pwrite(fuzz_fd, data, size, 0) != (ssize_t)size)
		abort();
	err[0] = '\0';
	if (config_load(&c, fuzz_path, err, sizeof(err)) != 0)
		FUZZ_CHECK(err[0] != '\0'); /* a failure always says why */
	free(c.users); /* a USERS_FILE the input named */

	/* Each line alone, as config_read_file() hands it over: at most
	 * OTP_MAX_LINE - 1 bytes, NUL-terminated. */
	while (at < size) {
		const uint8_t *nl = memchr(data + at, '\n', size - at);
		size_t len = (nl != NULL ? (size_t)(nl - (data + at)) + 1 :
		    size - at);
		char *copy;

		if (len >= sizeof(line))
			len = sizeof(line) - 1;
		copy = fuzz_str(data + at, len);
		memset(&o, 0, sizeof(o));
		o.file = "fuzz.cfg";
		if (config_defaults(&c, err, sizeof(err)) != 0)
			abort();
		err[0] = '\0';
		if (config_line(&c, &o, ++lineno, copy, err, sizeof(err)) != 0)
			FUZZ_CHECK(strncmp(err, "fuzz.cfg:", 9) == 0);
		free(copy);
		/* The same line as one of USERS_FILE: a user has a number
		 * in E.164 and a name, or the line says why not. */
		copy = fuzz_str(data + at, len);
		if (user_parse(copy, &u, &why) == 0)
			FUZZ_CHECK(phone_is_e164(u.phone) && u.name[0] != '\0');
		else
			FUZZ_CHECK(why != NULL || copy[strspn(copy, " \t")] ==
			    '\0');
		free(copy);
		at += len;
	}
	return 0;
}
