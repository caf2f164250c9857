# mk/proof.mk: measuring and proving (included by Makefile).
#
#   make bench            wrk benchmarks against the ceiling, memory, start-up,
#                         shutdown, verify latency, fairness, SMS reuse
#                         (bench/README.md says how to read it)
#   make bench-fairness   the keep-alive fairness experiment (patched copies)
#   make fuzz             every libFuzzer target for FUZZ_SECONDS (60) each,
#                         then the limits' model test for MODEL_OPS_LONG
#                         operations from a random seed
#   make fuzz-ci          the same for 10 s each (what CI runs)
#   make fuzz-regress     every target over its committed corpus only
#   make test-asan        make test under ASan+UBSan
#   make test-tsan        tests/concurrency.py against a ThreadSanitizer build
#   make test-valgrind    integration cases under valgrind (VALGRIND_CASES)
#   make soak             mixed traffic for SOAK_SECONDS (600); RSS, fds flat
#
# None of these is part of make test; CI runs them from .ci/run.

.PHONY: bench bench-fairness fuzz fuzz-ci fuzz-regress fuzz-build \
	test-asan test-tsan test-tsan-run test-valgrind soak

# ---- bench -----------------------------------------------------------------

BENCH_BIN      ?= $(CURDIR)/$(BUILD)/otp_demo
BENCH_BASE     ?=
BENCH_SECONDS  ?= 5
BENCH_RUNS     ?= 5
BENCH_REQUESTS ?= 1000000
BENCH_WRK      ?= 2,8
BENCH_ONLY     ?=
BENCH_JSON     ?= $(BUILD)/bench/results.json

# The ceiling: otp_demo.c's own server_options() and civetweb object, a
# handler without logic (bench/ceiling.c). -Wno-unused-function: it calls
# none of otp_demo's handlers.
$(BUILD)/bench/ceiling: bench/ceiling.c otp_demo.c otp_demo.h numbering.h \
		$(BUILD)/www_data.h $(BUILD)/civetweb.o Makefile mk/proof.mk
	@mkdir -p $(BUILD)/bench
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -Wno-unused-function \
		-o $@ bench/ceiling.c $(BUILD)/civetweb.o $(LIBS)

bench: $(BUILD)/otp_demo $(BUILD)/otp_demo-redis $(BUILD)/bench/ceiling
	@tools/deps.sh bench
	BENCH_BIN=$(BENCH_BIN) BENCH_BASE=$(BENCH_BASE) \
		BENCH_REDIS_BIN=$(CURDIR)/$(BUILD)/otp_demo-redis \
		BENCH_CEILING=$(CURDIR)/$(BUILD)/bench/ceiling \
		BENCH_SECONDS=$(BENCH_SECONDS) BENCH_RUNS=$(BENCH_RUNS) \
		BENCH_REQUESTS=$(BENCH_REQUESTS) BENCH_WRK=$(BENCH_WRK) \
		BENCH_ONLY=$(BENCH_ONLY) BENCH_JSON=$(BENCH_JSON) \
		python3 bench/bench.py

bench-fairness: $(BUILD)/otp_demo $(BUILD)/civetweb.o
	@tools/deps.sh bench
	FAIR_CC="$(CC)" FAIR_CFLAGS="$(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS)" \
		FAIR_OBJS="$(BUILD)/civetweb.o" FAIR_LIBS="$(LIBS)" \
		BENCH_SECONDS=$(BENCH_SECONDS) BENCH_RUNS=$(BENCH_RUNS) \
		python3 bench/fairness.py

# ---- fuzz --------------------------------------------------------------------

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 60
FUZZ_DIR     := build-fuzz
FUZZ_TARGETS := config form phone cookie json page accept_language proxy
FUZZ_FLAGS   := -g -O1 -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=all -fno-omit-frame-pointer
FUZZ_BINS    := $(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%)

# civetweb is only linked, never fuzzed: compiled once, plainly, by clang.
$(FUZZ_DIR)/civetweb.o: $(CW_SRC) civetweb/include/civetweb.h Makefile
	@mkdir -p $(FUZZ_DIR)
	@command -v $(FUZZ_CC) >/dev/null || { echo "fuzz: $(FUZZ_CC) not \
	found: apt-get install clang" >&2; exit 1; }
	$(FUZZ_CC) -g -O1 $(CW_CFLAGS) -c $< -o $@

$(FUZZ_DIR)/fuzz_%: fuzz/fuzz_%.c fuzz/fuzz.h otp_demo.c otp_demo.h \
		numbering.h $(BUILD)/www_data.h $(FUZZ_DIR)/civetweb.o
	$(FUZZ_CC) $(FUZZ_FLAGS) -std=c11 -D_GNU_SOURCE -DOTP_NO_MAIN \
		-DOTP_VERSION='"$(VERSION)"' -Wall -Wextra -Wno-unused-function \
		-Icivetweb/include -I$(BUILD) -o $@ $< $(FUZZ_DIR)/civetweb.o \
		$(LIBS)

fuzz-build: $(FUZZ_BINS)

# fuzz/run.sh: each target for FUZZ_SECONDS, new inputs kept in
# build-fuzz/corpus/, crashes in build-fuzz/crashes/; fails on any crash.
# The model-based test of the limits (tests/model.c), longer than in make
# test and from a new seed each time (printed, to replay a failure with
# build/model SEED).
MODEL_OPS_LONG ?= 20000000
MODEL_SEED     ?= $(shell od -An -N4 -tu4 /dev/urandom | tr -d ' ')

fuzz: $(FUZZ_BINS) $(BUILD)/model
	FUZZ_DIR=$(FUZZ_DIR) fuzz/run.sh $(FUZZ_SECONDS) $(FUZZ_TARGETS)
	MODEL_OPS=$(MODEL_OPS_LONG) $(BUILD)/model $(MODEL_SEED)

fuzz-ci:
	$(MAKE) fuzz FUZZ_SECONDS=10 MODEL_OPS_LONG=3000000

fuzz-regress: $(FUZZ_BINS)
	FUZZ_DIR=$(FUZZ_DIR) fuzz/run.sh 0 $(FUZZ_TARGETS)

# ---- sanitizers and leaks ------------------------------------------------------

test-asan:
	$(MAKE) test SANITIZE=address,undefined

# ThreadSanitizer needs every thread-touching object instrumented: its own
# build directory (build-thread/), never mixed with the others. halt_on_error
# makes a race fail the test instead of only printing.
TSAN_CC ?= $(CC)
test-tsan:
	$(MAKE) CC=$(TSAN_CC) SANITIZE=thread test-tsan-run
test-tsan-run: $(BUILD)/otp_demo
	OTP_BIN=$(CURDIR)/$(BUILD)/otp_demo \
		TSAN_OPTIONS="halt_on_error=1 exitcode=66 second_deadlock_stack=1 \
		suppressions=$(CURDIR)/tests/concurrency.tsan.supp" \
		python3 tests/concurrency.py

# valgrind: the integration cases named by VALGRIND_CASES (-k substrings;
# empty = all) with otp_demo run through tests/valgrind.sh, which makes
# any error or leak an exit status the suite reports.
# The subset: every page and API flow, each SMS API failure that comes back
# (not the timeouts), TLS, reload and shutdown; not the cases that wait out
# timers (expiry, resend, silence), which valgrind's slowness makes flaky.
# Two at a time: valgrind is CPU-bound, and the cases' SMS API calls have a
# 5 s budget that three valgrinds on two cores under load exceeded (the
# first TLS handshake timed out). ~2 min 45 s on 2 loaded cores.
VALGRIND_CASES ?= tutorial wrong_code bound csrf invalid_input \
	max_attempts_serial send_fail_4 send_fail_5 send_fail_garbage \
	send_fail_huge send_fail_reset send_fail_redirect tls_wrong_host \
	api_verify api_errors api_cancel auth_forward return_to health metrics \
	sighup raw_protocol security_headers sigterm cfg_check cli_version
test-valgrind: $(BUILD)/otp_demo
	@command -v valgrind >/dev/null || { echo "test-valgrind: apt-get \
	install valgrind" >&2; exit 1; }
	OTP_BIN=$(CURDIR)/tests/valgrind.sh \
		VALGRIND_BIN=$(CURDIR)/$(BUILD)/otp_demo \
		python3 tests/integration.py -j 2 \
		$(foreach k,$(VALGRIND_CASES),-k $(k))

# ---- soak ----------------------------------------------------------------------

SOAK_SECONDS ?= 600
soak: $(BUILD)/otp_demo
	OTP_BIN=$(CURDIR)/$(BUILD)/otp_demo SOAK_SECONDS=$(SOAK_SECONDS) \
		python3 tests/soak.py
