# otp_demo: SMS one-time passcodes in one small C binary.
#
#   make            build ./otp_demo (dynamic, system mbedTLS and libcurl)
#   make run        build and start on http://127.0.0.1:5000
#   make test       every suite (tests/run.sh); ends "N passed, M failed"
#   make unit|model|model_redis|docs|numbering|integration|proxy_mode|
#        attack|senders|browser|packaging|redis_store|integration_redis
#                   one suite
#   make WITH_REDIS=1   ./otp_demo with the Redis store (STORE=redis://...)
#   make test-attack-transport, make test-desync   (mk/attack.mk)
#   make static ARCH=x86_64|aarch64|armv7|armv6|mipsel|mips   (mk/static.mk)
#
# Every target installs (as root) or names (otherwise) the Debian packages
# it needs before anything uses them: tools/deps.sh, as an order-only
# prerequisite, so it runs first whatever -j is.
#
# SANITIZE=address,undefined builds everything with those sanitizers, in a
# separate build directory so it never mixes with a normal build.
#
# WITH_REDIS=1 makes ./otp_demo the build that can share its state through
# Redis (STORE=redis://..., linked with Debian's libhiredis). make test
# builds and tests that one too ($(BUILD)/otp_demo-redis) whatever it says.

VERSION   := 0.1.0
CC        ?= cc
CFLAGS    ?= -O2 -g
PKG_CONFIG ?= pkg-config

comma     := ,
BUILD     := build$(if $(SANITIZE),-$(subst $(comma),-,$(SANITIZE)))

# Our own code: strict. civetweb: its own, softer warnings.
WARN      := -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
             -Wformat=2 -Wno-format-nonliteral -Werror
SAN_FLAGS := $(if $(SANITIZE),-fsanitize=$(SANITIZE) -fno-omit-frame-pointer \
             -fno-sanitize-recover=all)
# REENTRANT_TIME: gmtime_r for the Date header (gmtime's static buffer is
# shared by the workers: a data race, ThreadSanitizer). STOP_FLAG_NEEDS_LOCK:
# the stop flag read and written atomically (also a race otherwise).
# SOCKET_TIMEOUT_QUANTUM: how long civetweb's threads wait before looking at
# that flag again; its default 2000 ms made every shutdown take ~1.9 s.
# USE_IPV6: LISTEN='[::]:8080' (the static builds get it from here too).
# NO_FILESYSTEMS: otp_demo serves no files and keeps no civetweb log files
# (its two hooks in deps/static/civetweb/ say where messages go instead).
# Without it civetweb looked for /.htpasswd on every request: a stat(2)
# each, and such a file made every answer a 401.
CW_DEFS   := -DUSE_MBEDTLS -DNO_CGI -DNO_FILES -DNO_CACHING -DNO_SSL_DL \
             -DREENTRANT_TIME -DSTOP_FLAG_NEEDS_LOCK \
             -DSOCKET_TIMEOUT_QUANTUM=200 -DUSE_IPV6 -DNO_FILESYSTEMS \
             -DMG_EXTERNAL_FUNCTION_mg_cry_internal_impl \
             -DMG_EXTERNAL_FUNCTION_log_access -Ideps/static/civetweb
CW_HOOKS  := $(wildcard deps/static/civetweb/*.inl)
CW_CFLAGS := -std=gnu11 -w $(CW_DEFS) -Icivetweb/include
OTP_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -Icivetweb/include -I$(BUILD) \
              -DOTP_VERSION='"$(VERSION)"'
CURL_LIBS := $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
LIBS      := -lmbedtls -lmbedx509 -lmbedcrypto $(CURL_LIBS) -lpthread

# The built-in languages (www/lang/<tag>.txt), English first: the
# fallback when neither the browser's language nor LANG is built in.
LANGS     := en de fr es pt
WWW       := www/index.html www/verify.html www/new_code.html \
             www/verify_success.html \
             www/error.html www/style.css www/otp.js \
             $(LANGS:%=www/lang/%.txt)
CW_SRC    := civetweb/src/civetweb.c

.PHONY: all run test unit model model_redis docs numbering integration proxy_mode attack \
	senders browser packaging redis_store integration_redis deps \
	deps-build deps-test \
	deps-redis fetch clean distclean numbering-gen
all: otp_demo

# deps-test includes deps-build's packages; ordering the two keeps a -j
# build from running two installs at once (tools/deps.sh also locks).
deps deps-build:
	@tools/deps.sh build
deps-test: deps-build
	@tools/deps.sh test
deps-redis: deps-build
	@tools/deps.sh redis

# civetweb/fetch.sh makes both files: one rule with a stamp, so a parallel
# build runs it once (two runs at once collided on apt's lock).
CW_HDR    := civetweb/include/civetweb.h
CW_STAMP  := civetweb/.make-stamp
$(CW_STAMP): civetweb/SHA256SUMS civetweb/VERSION civetweb/fetch.sh \
		$(wildcard civetweb/patches/*.patch) | deps-build
	civetweb/fetch.sh
	@touch $(CW_SRC) $(CW_HDR) $@
$(CW_SRC) $(CW_HDR): $(CW_STAMP) ;
fetch: $(CW_STAMP)

# The pages and catalogs: without the Redis store's texts ("store_" keys)
# but in the build with it (its own www_data.h, found first).
REDIS_TEXTS := store_
$(BUILD)/www_data.h: $(WWW) tools/embed.sh | deps-build
	@mkdir -p $(BUILD)
	tools/embed.sh -x $(REDIS_TEXTS) $(WWW) > $@.tmp && mv $@.tmp $@
$(BUILD)/redis/www_data.h: $(WWW) tools/embed.sh | deps-build
	@mkdir -p $(@D)
	tools/embed.sh $(WWW) > $@.tmp && mv $@.tmp $@

$(BUILD)/civetweb.o: $(CW_SRC) $(CW_HDR) $(CW_HOOKS) Makefile | deps-build
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(CW_CFLAGS) -c $< -o $@

$(BUILD)/otp_demo.o: otp_demo.c otp_demo.h numbering.h $(BUILD)/www_data.h \
		$(CW_HDR) Makefile | deps-build
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -c $< -o $@

$(BUILD)/otp_demo: $(BUILD)/otp_demo.o $(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

# The same file with the Redis store compiled in (#ifdef WITH_REDIS).
REDIS_LIBS := -lhiredis
$(BUILD)/otp_demo-redis.o: otp_demo.c otp_demo.h numbering.h \
		$(BUILD)/redis/www_data.h $(CW_HDR) Makefile | deps-redis
	$(CC) $(CFLAGS) $(SAN_FLAGS) -I$(BUILD)/redis $(OTP_CFLAGS) -DWITH_REDIS \
		-c $< -o $@

$(BUILD)/otp_demo-redis: $(BUILD)/otp_demo-redis.o $(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LIBS) $(REDIS_LIBS)

# ./otp_demo is always the plain build: a sanitizer build (make test
# SANITIZE=...) stays in its own directory, so a later make run never
# starts it by surprise.
# The copy is compared every time: after make WITH_REDIS=1, a plain make
# puts the plain build back even if neither is newer.
ifeq ($(BUILD),build)
.PHONY: otp_demo-variant
otp_demo-variant: ;
otp_demo: build/otp_demo$(if $(WITH_REDIS),-redis) otp_demo-variant
	@cmp -s $< $@ || { echo "cp $< $@"; cp $< $@.tmp && mv -f $@.tmp $@; }
else
.PHONY: plain-otp_demo
plain-otp_demo:
	$(MAKE) --no-print-directory SANITIZE= otp_demo
otp_demo: plain-otp_demo ;
endif

# make run: the console sender prints each SMS, so no account is needed.
RUN_CONFIG := $(if $(wildcard config.cfg),config.cfg,config.cfg.example)
run: otp_demo
	./otp_demo -c $(RUN_CONFIG)

# numbering.h (and tests/numbering_data.h) are generated from Debian's
# python3-phonenumbers and committed; this rewrites them (make numbering
# checks that they match).
numbering-gen: | deps-test
	tools/gen_numbering.py

# ---- tests -----------------------------------------------------------------

$(BUILD)/unit: tests/unit.c tests/numbering_data.h otp_demo.c otp_demo.h \
		numbering.h $(BUILD)/www_data.h \
		$(BUILD)/civetweb.o | deps-test
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -DOTP_NO_MAIN -Wno-missing-prototypes \
		-o $@ tests/unit.c $(BUILD)/civetweb.o $(LIBS) -lcmocka

# The model-based test of the store and the limits (tests/model.c).
$(BUILD)/model: tests/model.c otp_demo.c otp_demo.h $(BUILD)/www_data.h \
		$(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -DOTP_NO_MAIN -Wno-missing-prototypes \
		-o $@ tests/model.c $(BUILD)/civetweb.o $(LIBS)
# The same on the Redis store (make model_redis: MODEL_STORE=unix://...).
$(BUILD)/model-redis: tests/model.c otp_demo.c otp_demo.h \
		$(BUILD)/redis/www_data.h $(BUILD)/civetweb.o | deps-redis
	$(CC) $(CFLAGS) $(SAN_FLAGS) -I$(BUILD)/redis $(OTP_CFLAGS) -DOTP_NO_MAIN -DWITH_REDIS \
		-Wno-missing-prototypes -o $@ tests/model.c \
		$(BUILD)/civetweb.o $(LIBS) $(REDIS_LIBS)

# tests/run.sh runs every suite (or those in SUITES) and prints one
# "N passed, M failed" line. make unit, make integration... run one.
TEST_ENV = OTP_BIN=$(CURDIR)/$(BUILD)/otp_demo OTP_UNIT=$(CURDIR)/$(BUILD)/unit \
		OTP_MODEL=$(CURDIR)/$(BUILD)/model \
		OTP_MODEL_REDIS=$(CURDIR)/$(BUILD)/model-redis \
		OTP_REDIS_BIN=$(CURDIR)/$(BUILD)/otp_demo-redis \
		EMBED_BIN=$(CURDIR)/$(BUILD)/examples/embed \
		OTP_LIB_OBJ=$(CURDIR)/$(BUILD)/examples/otp_demo_lib.o \
		SANITIZE=$(SANITIZE)
# Under SANITIZE the plain build too: callgrind (tests/attack/limits.py)
# cannot run a sanitizer build.
TEST_DEPS := $(BUILD)/otp_demo $(BUILD)/otp_demo-redis $(BUILD)/unit \
	$(BUILD)/model $(BUILD)/model-redis examples \
	$(if $(SANITIZE),plain-otp_demo) | deps-test

test: $(TEST_DEPS)
	$(TEST_ENV) tests/run.sh
unit model model_redis docs numbering integration proxy_mode attack \
		senders browser packaging redis_store integration_redis: \
		$(TEST_DEPS)
	$(TEST_ENV) SUITES=$@ tests/run.sh

-include mk/*.mk

clean:
	rm -rf build build-* otp_demo tests/out
distclean: clean
	rm -rf civetweb/src civetweb/include civetweb/LICENSE.md \
		civetweb/.fetched civetweb/.make-stamp deps/dl \
		tests/browser/node_modules
