#!/bin/sh
# tests/packaging/notices_test.sh: the licence and the third-party notices.
#
#   OTP_BIN=build/otp_demo tests/packaging/notices_test.sh
#
# - LICENSE is the MIT licence, and README says why in a "Licence" section;
# - otp_demo --licenses prints otp_demo's LICENSE and civetweb's own
#   LICENSE.md byte for byte (the dynamic build compiles civetweb in) and
#   names the system's mbed TLS and libcurl; --help lists the option;
# - make install ships LICENSE and the same notices (NOTICES);
# - tools/notices.sh refuses to build without a licence file;
# - every static binary built so far (build/static/ARCH/otp_demo) carries
#   exactly the notices of what it bundles: civetweb, mbed TLS, curl, musl
#   (and glibc's soft-fp on MIPS) with their licence files as the tarballs
#   ship them; make static-all builds them, this test does not. They are
#   packed in the binary, so each is run (under qemu-user, as
#   make test-static does, for the other architectures) and what
#   --licenses prints is checked.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok notices: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL notices: $1${2:+: $2}"; }
check() { # check NAME COMMAND...: ok if COMMAND succeeds
	name=$1; shift
	if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}
bin=${OTP_BIN:-$PWD/otp_demo}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-notices.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM

# contains BIG SMALL: the bytes of file SMALL appear in file BIG.
contains() {
	python3 -c 'import sys; a, b = (open(f, "rb").read() for f in sys.argv[1:]); sys.exit(b not in a)' "$1" "$2"
}

check "LICENSE is the MIT licence" grep -q '^MIT License$' LICENSE
check "LICENSE names its copyright holder" grep -q '^Copyright (c) [0-9]* ' LICENSE
check "README has a Licence section that says why MIT" \
	sh -c "sed -n '/^## Licence/,/^## /p' README.md | grep -q 'MIT'"

"$bin" --licenses > "$tmp/licenses" 2> "$tmp/err"
rc=$?
if [ "$rc" -eq 0 ] && [ ! -s "$tmp/err" ]; then
	ok "otp_demo --licenses exits 0"
else
	bad "otp_demo --licenses exits 0" "rc=$rc $(cat "$tmp/err")"
fi
check "--licenses: otp_demo's LICENSE, whole" contains "$tmp/licenses" LICENSE
# civetweb's file as fetched, up to the licences of its optional parts
# (not built), less trailing blanks (tools/notices.sh).
sed -e '/^Lua License/,$d' -e 's/\r$//' -e 's/[[:blank:]]*$//' \
	civetweb/LICENSE.md > "$tmp/cw"
check "--licenses: civetweb's own part of LICENSE.md" contains "$tmp/licenses" "$tmp/cw"
check "--licenses: civetweb's copyright lines" \
	grep -q 'Copyright (c) 2004-2013 Sergey Lyubka' "$tmp/licenses"
check "--licenses: not the licences of civetweb's unbuilt parts (Lua, SQLite)" \
	sh -c "! grep -q 'Lua License\|SQLite' '$tmp/licenses'"
check "--licenses: civetweb and its version listed" \
	grep -q "^  civetweb  *$(cat civetweb/VERSION)  *MIT$" "$tmp/licenses"
check "--licenses: names the system's mbed TLS and libcurl" \
	grep -q "links the system's mbed TLS and libcurl" "$tmp/licenses"
check "--licenses: the plain build does not name hiredis" \
	sh -c "! grep -q hiredis '$tmp/licenses'"
# The build with the Redis store links the system's hiredis too.
if [ -x "${OTP_REDIS_BIN:-}" ]; then
	"$OTP_REDIS_BIN" --licenses > "$tmp/licenses-redis" 2>&1
	check "--licenses (WITH_REDIS): names the system's hiredis" \
		grep -q "links the system's mbed TLS, libcurl and hiredis" \
		"$tmp/licenses-redis"
else
	bad "--licenses (WITH_REDIS)" "no OTP_REDIS_BIN to run"
fi
check "--licenses: no licence of a library it does not bundle" \
	sh -c "! grep -q 'Apache License' '$tmp/licenses'"
check "--help lists --licenses" sh -c "'$bin' --help | grep -q -- '--licenses'"

# make install: LICENSE and the notices beside the README.
d=$tmp/root
if make -s --no-print-directory ${SANITIZE:+SANITIZE=$SANITIZE} install \
	DESTDIR="$d" > "$tmp/install.log" 2>&1; then
	doc=$d/usr/local/share/doc/otp_demo
	check "make install: LICENSE in the doc directory" cmp -s LICENSE "$doc/LICENSE"
	check "make install: NOTICES is what --licenses prints" \
		cmp -s "$tmp/licenses" "$doc/NOTICES"
else
	bad "make install DESTDIR=..." "$(tail -n 5 "$tmp/install.log")"
fi

# No binary without its notices.
if tools/notices.sh text "x|1|MIT|$tmp/missing" > /dev/null 2> "$tmp/e"; then
	bad "tools/notices.sh: a missing licence file is an error"
else
	check "tools/notices.sh: a missing licence file is an error" \
		grep -q "missing" "$tmp/e"
fi

# How each architecture's binary runs here (as mk/static.mk's qemu).
runner() {
	case $1 in
	x86_64) echo "" ;;
	aarch64) echo "qemu-aarch64-static" ;;
	armv7) echo "qemu-arm-static" ;;
	armv6) echo "qemu-arm-static -cpu arm1176" ;;
	mipsel) echo "qemu-mipsel-static -cpu 24Kc" ;;
	mips) echo "qemu-mips-static -cpu 24Kc" ;;
	esac
}

# The static binaries built so far.
n=0
for sb in build/static/*/otp_demo; do
	[ -f "$sb" ] || continue
	arch=$(basename "$(dirname "$sb")")
	lic=build/static/$arch/prefix/share/licenses
	printed=$tmp/printed.$arch
	n=$((n + 1))
	# shellcheck disable=SC2046
	$(runner "$arch") "$sb" --licenses > "$printed" 2> "$tmp/err"
	check "static $arch: --licenses prints its notices.txt" \
		cmp -s "$printed" "build/static/$arch/notices.txt"
	check "static $arch: mbed TLS under Apache-2.0, not the GPL's text" \
		sh -c "grep -q 'Apache License' '$lic/mbedtls/LICENSE' &&
		       ! grep -q 'GNU GENERAL PUBLIC' '$lic/mbedtls/LICENSE'"
	for f in mbedtls/LICENSE curl/COPYING musl/COPYRIGHT; do
		sed -e 's/\r$//' -e 's/[[:blank:]]*$//' "$lic/$f" > "$tmp/lic"
		check "static $arch: $f, whole" contains "$printed" "$tmp/lic"
	done
	check "static $arch: civetweb's LICENSE.md" contains "$printed" "$tmp/cw"
	case $arch in
	mips*) check "static $arch: glibc soft-fp's licence" \
		grep -q 'glibc soft-fp' "$printed" ;;
	*) check "static $arch: no soft-fp (not linked)" \
		sh -c "! grep -q 'soft-fp' '$printed'" ;;
	esac
done
[ "$n" -gt 0 ] || echo "note: no static build yet (make static-all): not checked"

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
