#!/bin/sh
# tests/run.sh: runs every suite against the built binary and prints one
# closing line "N passed, M failed". Each suite prints its own summary;
# this script adds them up. Exit status is non-zero on any failure.
#   OTP_BIN    the server binary (make test sets it)
#   OTP_UNIT   the cmocka unit test binary
#   OTP_REDIS_BIN  the binary built WITH_REDIS (redis_store,
#              integration_redis)
#   OTP_MODEL_REDIS  tests/model.c built WITH_REDIS (model_redis)
#   SUITES     which suites to run (default: all of them)
set -u
cd "$(dirname "$0")/.."
out=tests/out
mkdir -p "$out"
: "${OTP_BIN:=$PWD/otp_demo}"
: "${OTP_REDIS_BIN:=$PWD/build/otp_demo-redis}"
export OTP_BIN OTP_REDIS_BIN
passed=0 failed=0

# add_counts LOG: reads "N passed, M failed" (ours) or cmocka's summary.
add_counts() {
	line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
	if [ -n "$line" ]; then
		p=${line%% passed*}
		f=${line#*, }; f=${f%% failed*}
	else
		p=$(sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' "$1" | tail -n 1)
		f=$(sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' "$1" | tail -n 1)
	fi
	p=${p:-0} f=${f:-0}
	if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1 # the suite died without a summary
	fi
	passed=$((passed + p)) failed=$((failed + f))
	echo "== $3: $p passed, $f failed"
}

run_suite() {
	name=$1; shift
	echo "== $name"
	"$@" > "$out/$name.log" 2>&1
	rc=$?
	cat "$out/$name.log"
	add_counts "$out/$name.log" "$rc" "$name"
}

for s in ${SUITES:-unit model model_redis docs numbering integration \
    proxy_mode attack senders browser packaging redis_store \
    integration_redis}; do
	case $s in
	unit) run_suite unit "${OTP_UNIT:-build/unit}" ;;
	model) run_suite model "${OTP_MODEL:-build/model}" ;;
	# The model again on a Redis of its own, fewer steps (each is a
	# round trip): the scripts take the model's clock.
	model_redis) run_suite model_redis sh tests/model_redis.sh ;;
	docs) run_suite docs python3 tests/docs_test.py ;;
	numbering) run_suite numbering python3 tests/numbering_test.py ;;
	integration) run_suite integration python3 tests/integration.py ;;
	proxy_mode) run_suite proxy_mode python3 tests/proxy_mode.py ;;
	attack) run_suite attack sh tests/attack/run.sh ;;
	senders) run_suite senders python3 tests/senders.py ;;
	redis_store) run_suite redis_store python3 tests/redis_store.py ;;
	# The integration suite again, STORE=redis (a Redis per case), but
	# for what belongs to the memory store alone: revoked.state and its
	# table, limits.state's save at exit, sessions without STATE_DIR
	# (Redis needs it), /readyz's words (they name the store).
	integration_redis)
		run_suite integration_redis env OTP_BIN="$OTP_REDIS_BIN" \
		    OTP_TEST_STORE=redis python3 tests/integration.py \
		    -x no_state_dir_restart -x logout_state_dir_crash \
		    -x revoked_state_ -x revoked_table_full -x health_ \
		    -x log_sigterm_keeps_lines ;;
	packaging) run_suite packaging sh tests/packaging/run.sh ;;
	browser)
		if [ ! -d tests/browser/node_modules/playwright-core ]; then
			(cd tests/browser && npm ci --no-audit --no-fund) >&2
		fi
		run_suite browser node tests/browser/browser.mjs ;;
	*) run_suite "$s" sh -c "$s" ;;
	esac
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
