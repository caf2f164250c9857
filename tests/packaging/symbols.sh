#!/bin/sh
# tests/packaging/symbols.sh [OBJECT]
# The exported-symbol check: every global symbol that otp_demo.c defines
# when compiled for embedding (-DOTP_NO_MAIN) must start with otp_, so a
# program that links it gets nothing else (no main, no helper, no table).
# OBJECT defaults to $OTP_LIB_OBJ, then build/examples/otp_demo_lib.o
# (make examples builds it). Also checks that the check itself catches a
# stray symbol, on a two-line object compiled here.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
obj=${1:-${OTP_LIB_OBJ:-build/examples/otp_demo_lib.o}}
NM=${NM:-nm}
pass=0 fail=0

ok() { pass=$((pass + 1)); echo "ok symbols: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL symbols: $1${2:+: $2}"; }

# stray OBJECT: the defined global symbols not starting with otp_.
stray() {
	"$NM" -g --defined-only "$1" | awk 'NF >= 3 && $3 !~ /^otp_/ { print $3 }'
}

if [ ! -f "$obj" ]; then
	bad "object $obj exists" "run make examples"
	echo "$pass passed, $fail failed"
	exit 1
fi

others=$(stray "$obj")
if [ -z "$others" ]; then
	ok "every global in $(basename "$obj") starts with otp_"
else
	bad "every global in $(basename "$obj") starts with otp_" \
	    "$(echo "$others" | tr '\n' ' ')"
fi

exported=$("$NM" -g --defined-only "$obj" | awk 'NF >= 3 { print $3 }' |
	sort | tr '\n' ' ')
for f in otp_create otp_mount otp_on_verified otp_destroy otp_version; do
	case " $exported" in
	*" $f "*) ok "exports $f" ;;
	*) bad "exports $f" "exported: $exported" ;;
	esac
done

# Every otp_ symbol the object exports is declared in otp_demo.h.
undeclared=
for f in $exported; do
	grep -qw "$f" otp_demo.h || undeclared="$undeclared $f"
done
if [ -z "$undeclared" ]; then
	ok "every export is declared in otp_demo.h"
else
	bad "every export is declared in otp_demo.h" "not declared:$undeclared"
fi

# The check must see a stray global (and not a static one).
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
printf 'int helper_table[4];\nstatic int hidden(void) { return 1; }\nint otp_ok(void) { return hidden(); }\n' \
	> "$tmp/t.c"
if ${CC:-cc} -c "$tmp/t.c" -o "$tmp/t.o" 2>"$tmp/cc.err"; then
	s=$(stray "$tmp/t.o")
	if [ "$s" = helper_table ]; then
		ok "the check catches a stray global and ignores statics"
	else
		bad "the check catches a stray global and ignores statics" "got '$s'"
	fi
else
	bad "compile the self-test object" "$(cat "$tmp/cc.err")"
fi

echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
