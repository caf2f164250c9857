#!/bin/sh
# fuzz/run.sh SECONDS TARGET...: runs build-fuzz/fuzz_TARGET for SECONDS
# each, starting from the committed seeds in fuzz/corpus/TARGET/ (read
# only) and build-fuzz/corpus/TARGET/ (where new inputs go). SECONDS 0
# only replays the corpus: a regression run. A crash leaves its input in
# build-fuzz/crashes/; add it to fuzz/corpus/TARGET/ once fixed.
# Prints one line per target and fails if any crashed.
set -u
cd "$(dirname "$0")/.."
dir=${FUZZ_DIR:-build-fuzz}
secs=${1:?usage: run.sh SECONDS TARGET...}
shift
failed=
for t in "$@"; do
	bin=$dir/fuzz_$t
	mkdir -p "$dir/corpus/$t" "$dir/crashes" "fuzz/corpus/$t"
	log=$dir/fuzz_$t.log
	dict=
	[ -f "fuzz/$t.dict" ] && dict=-dict=fuzz/$t.dict
	if [ "$secs" = 0 ]; then
		"$bin" -runs=0 -artifact_prefix="$dir/crashes/$t-" $dict \
			"fuzz/corpus/$t" > "$log" 2>&1
	else
		"$bin" -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 \
			-print_final_stats=1 -artifact_prefix="$dir/crashes/$t-" \
			$dict "$dir/corpus/$t" "fuzz/corpus/$t" > "$log" 2>&1
	fi
	rc=$?
	runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1)
	seeds=$(ls "fuzz/corpus/$t" | wc -l)
	if [ $rc -eq 0 ]; then
		echo "ok   fuzz_$t: ${runs:-$seeds inputs} runs, $cov (${secs}s; log $log)"
	else
		echo "FAIL fuzz_$t: exit $rc; see $log and $dir/crashes/"
		grep -m 3 -E 'ERROR|SUMMARY|property failed' "$log" | sed 's/^/     /'
		failed="$failed $t"
	fi
done
if [ -n "$failed" ]; then
	echo "fuzz: crashed:$failed"
	exit 1
fi
