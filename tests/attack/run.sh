#!/bin/sh
# tests/attack/run.sh: every attack file (or those named in ATTACK), one
# closing line "N passed, M failed". Each file is a script of its own
# (tests/attack/common.py) that drives the real binary (OTP_BIN).
set -u
cd "$(dirname "$0")" || exit 1
passed=0 failed=0
files=${ATTACK:-$(ls [a-z]*.py | grep -v '^common\.py$')}
for f in $files; do
	echo "== attack: $f"
	out=$(python3 "$f" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	line=$(printf '%s\n' "$out" | grep -E '^[0-9]+ passed, [0-9]+ failed$' |
	       tail -n 1)
	p=0 f=0
	[ -n "$line" ] && p=${line%% passed*} f=${line#*, } f=${f%% failed*}
	[ "$rc" -ne 0 ] && [ "$f" -eq 0 ] && f=1
	passed=$((passed + p)) failed=$((failed + f))
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
