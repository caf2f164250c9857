#!/bin/sh
# tests/attack/run.sh: the transport attack tests, one closing line
# "N passed, M failed" (make test runs "transport" through tests/run.sh;
# make test-attack-transport and make test-desync run this).
#   OTP_BIN   the server binary (default ./otp_demo)
#   ATTACKS   which tests (default: framing ipv6 slow; desync is its own
#             target, it needs nginx and HAProxy)
# Logs go to tests/out/attack/. Exit status 1 if anything failed.
set -u
cd "$(dirname "$0")/../.." || exit 1
out=tests/out/attack
mkdir -p "$out"
: "${OTP_BIN:=$PWD/otp_demo}"
export OTP_BIN
passed=0 failed=0

run() {
	name=$1; shift
	echo "== attack: $name"
	t0=$(date +%s)
	"$@" > "$out/$name.out" 2>&1
	rc=$?
	cat "$out/$name.out"
	echo "== attack: $name took $(( $(date +%s) - t0 )) s"
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out/$name.out" | tail -n 1)
	p=0 f=0
	if [ -n "$line" ]; then
		p=${line%% passed*} f=${line#*, } f=${f%% failed*}
	fi
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # died without saying why in a summary
	fi
	passed=$((passed + p)) failed=$((failed + f))
}

for t in ${ATTACKS:-framing ipv6 slow}; do
	case $t in
	framing) run framing python3 tests/attack/framing.py ;;
	ipv6) run ipv6 python3 tests/attack/ipv6.py ;;
	slow) run slow python3 tests/attack/slow_clients.py ;;
	desync) run desync python3 tests/attack/desync.py ;;
	*) echo "unknown attack test $t" >&2; failed=$((failed + 1)) ;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
