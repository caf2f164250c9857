#!/bin/sh
# tests/packaging/run.sh: every packaging test, one closing line
# "N passed, M failed" (make test-packaging runs it).
#   OTP_BIN      the server binary (default ./otp_demo)
#   EMBED_BIN    examples/embed.c built (default build/examples/embed)
#   OTP_LIB_OBJ  otp_demo.c compiled -DOTP_NO_MAIN (for the symbol check)
#   PACKAGING    which tests (default: all, in the order below)
# Logs go to tests/out/packaging/. Exit status 1 if anything failed.
set -u
cd "$(dirname "$0")/../.." || exit 1
out=tests/out/packaging
mkdir -p "$out"
: "${OTP_BIN:=$PWD/otp_demo}"
export OTP_BIN
passed=0 failed=0

run() {
	name=$1; shift
	echo "== packaging: $name"
	"$@" > "$out/$name.out" 2>&1
	rc=$?
	cat "$out/$name.out"
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed(, [0-9]+ skipped)?$' "$out/$name.out" | tail -n 1)
	p=0 f=0
	if [ -n "$line" ]; then
		p=${line%% passed*} f=${line#*, } f=${f%% failed*}
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # died without saying why in a summary
	fi
	passed=$((passed + p)) failed=$((failed + f))
}

for t in ${PACKAGING:-symbols embed nginx caddy openwrt-uci openwrt-pkg systemd spool notices}; do
	case $t in
	symbols) run symbols sh tests/packaging/symbols.sh ;;
	embed) run embed python3 tests/packaging/embed_test.py ;;
	nginx) run nginx python3 tests/packaging/nginx_test.py ;;
	caddy) run caddy python3 tests/packaging/caddy_test.py ;;
	openwrt-uci) run openwrt-uci sh tests/packaging/openwrt_uci_test.sh ;;
	openwrt-pkg) run openwrt-pkg sh tests/packaging/openwrt_pkg_test.sh ;;
	systemd) run systemd sh tests/packaging/systemd_test.sh ;;
	spool) run spool sh tests/packaging/spool_test.sh ;;
	notices) run notices sh tests/packaging/notices_test.sh ;;
	*) echo "unknown packaging test $t" >&2; failed=$((failed + 1)) ;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
