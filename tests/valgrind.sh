#!/bin/sh
# tests/valgrind.sh: otp_demo under valgrind, as OTP_BIN for
# tests/integration.py (make test-valgrind). VALGRIND_BIN is the binary
# (default: the repository's ./otp_demo; not OTP_*, which the suite clears).
# Any memory error, and any definitely, indirectly or possibly lost block
# at exit, makes the exit status 99, which the suite reports as an unclean
# exit of that case; valgrind's report is in the case's stderr.log.
# Memory still reachable at exit (libcurl's and mbedTLS's globals) is not
# a leak and is not reported.
exec valgrind --quiet --error-exitcode=99 --exit-on-first-error=no \
	--leak-check=full --show-leak-kinds=definite,indirect,possible \
	--errors-for-leak-kinds=definite,indirect,possible \
	--num-callers=30 --log-fd=2 \
	"${VALGRIND_BIN:-$(dirname "$0")/../otp_demo}" "$@"
