# otp_demo: SMS one-time passcodes in one small C binary.
#
#   make            build ./otp_demo (dynamic, system mbedTLS and libcurl)
#   make run        build and start on http://127.0.0.1:5000
#   make test       unit, integration and browser tests
#   make static ARCH=x86_64|aarch64|armv7|armv6|mipsel|mips   (mk/static.mk)
#
# SANITIZE=address,undefined builds everything with those sanitizers, in a
# separate build directory so it never mixes with a normal build.

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
CW_DEFS   := -DUSE_MBEDTLS -DNO_CGI -DNO_FILES -DNO_CACHING -DNO_SSL_DL \
             -DREENTRANT_TIME -DSTOP_FLAG_NEEDS_LOCK \
             -DSOCKET_TIMEOUT_QUANTUM=200
CW_CFLAGS := -std=gnu11 -w $(CW_DEFS) -Icivetweb/include
OTP_CFLAGS := -std=c11 -D_GNU_SOURCE $(WARN) -Icivetweb/include -I$(BUILD) \
              -DOTP_VERSION='"$(VERSION)"'
CURL_LIBS := $(shell $(PKG_CONFIG) --libs libcurl 2>/dev/null || echo -lcurl)
LIBS      := -lmbedtls -lmbedx509 -lmbedcrypto $(CURL_LIBS) -lpthread

WWW       := www/index.html www/verify.html www/verify_success.html \
             www/error.html www/style.css www/otp.js
CW_SRC    := civetweb/src/civetweb.c

.PHONY: all run test unit integration browser deps fetch clean distclean
all: otp_demo

deps:
	@tools/deps.sh build

$(CW_SRC) civetweb/include/civetweb.h: civetweb/SHA256SUMS civetweb/VERSION \
		civetweb/fetch.sh $(wildcard civetweb/patches/*.patch)
	@tools/deps.sh build
	civetweb/fetch.sh
	@touch $(CW_SRC) civetweb/include/civetweb.h
fetch: $(CW_SRC)

$(BUILD)/www_data.h: $(WWW) tools/embed.sh
	@mkdir -p $(BUILD)
	tools/embed.sh $(WWW) > $@.tmp && mv $@.tmp $@

$(BUILD)/civetweb.o: $(CW_SRC) civetweb/include/civetweb.h Makefile
	@mkdir -p $(BUILD)
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(CW_CFLAGS) -c $< -o $@

$(BUILD)/otp_demo.o: otp_demo.c otp_demo.h $(BUILD)/www_data.h \
		civetweb/include/civetweb.h Makefile
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -c $< -o $@

$(BUILD)/otp_demo: $(BUILD)/otp_demo.o $(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(LDFLAGS) -o $@ $^ $(LIBS)

otp_demo: $(BUILD)/otp_demo
	cp $< $@.tmp && mv -f $@.tmp $@

# make run: the console sender prints each SMS, so no account is needed.
RUN_CONFIG := $(if $(wildcard config.cfg),config.cfg,config.cfg.example)
run: otp_demo
	./otp_demo -c $(RUN_CONFIG)

# ---- tests -----------------------------------------------------------------

$(BUILD)/unit: tests/unit.c otp_demo.c otp_demo.h $(BUILD)/www_data.h \
		$(BUILD)/civetweb.o
	$(CC) $(CFLAGS) $(SAN_FLAGS) $(OTP_CFLAGS) -DOTP_NO_MAIN -Wno-missing-prototypes \
		-o $@ tests/unit.c $(BUILD)/civetweb.o $(LIBS) -lcmocka

unit: $(BUILD)/unit
	$(BUILD)/unit

# tests/run.sh runs every suite and prints one "N passed, M failed" line.
test: otp_demo $(BUILD)/unit examples
	@tools/deps.sh test
	OTP_BIN=$(CURDIR)/$(BUILD)/otp_demo OTP_UNIT=$(CURDIR)/$(BUILD)/unit \
		EMBED_BIN=$(CURDIR)/$(BUILD)/examples/embed \
		OTP_LIB_OBJ=$(CURDIR)/$(BUILD)/examples/otp_demo_lib.o \
		SANITIZE=$(SANITIZE) tests/run.sh

-include mk/*.mk

clean:
	rm -rf build build-* otp_demo tests/out
distclean: clean
	rm -rf civetweb/src civetweb/include civetweb/LICENSE.md \
		civetweb/.fetched deps/dl node_modules
