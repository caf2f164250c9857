#!/bin/sh
# tests/attack/run.sh: the attack tests, one closing line "N passed, M
# failed" (the "attack" suite of make test; make test-attack-transport and
# make test-desync run parts of it). Each file is a script of its own that
# drives the real binary.
#   OTP_BIN   the server binary (default ./otp_demo)
#   ATTACKS   which tests (default: all but desync, which is its own target:
#             it needs nginx and HAProxy)
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

for t in ${ATTACKS:-limits proxy phone_numbers framing ipv6 slow}; do
	case $t in
	limits|proxy|phone_numbers|framing|ipv6|desync)
		run "$t" python3 "tests/attack/$t.py" ;;
	slow) run slow python3 tests/attack/slow_clients.py ;;
	*) echo "unknown attack test $t" >&2; failed=$((failed + 1)) ;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
