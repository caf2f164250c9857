/*
 * fuzz/fuzz.h: shared by the libFuzzer targets in fuzz/. Each target
 * includes otp_demo.c itself (with OTP_NO_MAIN) to reach its static
 * parsers, then this file.
 *
 * Inputs are copied into buffers of exactly their size, so AddressSanitizer
 * sees a read one byte past the end of what a parser was given. A failed
 * property check aborts, which libFuzzer reports as a crash.
 */
#ifndef FUZZ_H
#define FUZZ_H

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A copy of data of exactly size bytes, no terminator. Free it. */
static char *
fuzz_dup(const uint8_t *data, size_t size)
{
	char *p = malloc(size > 0 ? size : 1);

	if (p == NULL)
		abort();
	if (size > 0)
		memcpy(p, data, size);
	return p;
}

/* A C string of data up to its first NUL (as a header value would be),
 * in a buffer of exactly that length + 1. Free it. */
static char *
fuzz_str(const uint8_t *data, size_t size)
{
	size_t n = strnlen((const char *)data, size);
	char *p = malloc(n + 1);

	if (p == NULL)
		abort();
	memcpy(p, data, n);
	p[n] = '\0';
	return p;
}

#define FUZZ_CHECK(cond)                                                      \
	do {                                                                  \
		if (!(cond)) {                                                \
			fprintf(stderr, "%s:%d: property failed: %s\n",       \
			    __FILE__, __LINE__, #cond);                       \
			abort();                                              \
		}                                                             \
	} while (0)

#endif /* FUZZ_H */
