# mk/static.mk: one fully static otp_demo per target (included by Makefile).
#
#   make static ARCH=x86_64|aarch64|armv7|armv6|mipsel|mips
#   make test-static ARCH=...   tests/static/ on it, under qemu-user
#   make static-all             every ARCH in turn (also test-static-all)
#   make static-clean ARCH=...  forget that ARCH's dependency builds
#   make test-tls               TLS policy and idle-client tests, dynamic build
#
# Per ARCH, in build/static/ARCH/: musl built from source with the Debian
# cross compiler, then mbedTLS (with deps/mbedtls_config.h) and a minimal
# libcurl into prefix/, each once, by deps/static/build.sh. A stamp per
# library makes the next build incremental; after changing a dependency's
# flags here, run static-clean. Then civetweb and otp_demo.c are compiled
# with musl's gcc wrapper and link-time optimisation, linked -static with
# --gc-sections, and stripped.
# The link map (otp_demo.map) stays next to the binary, for size questions.

ARCH ?= x86_64
STATIC_ARCHES := x86_64 aarch64 armv7 armv6 mipsel mips

# Size budgets of the stripped binary, in KiB: the only place they live.
static_budget_x86_64  := 600
static_budget_aarch64 := 750
static_budget_armv7   := 450
# armv6 (Thumb-1, soft-float: the Pi Zero and Pi 1) was 450 until the
# admin-page gate (issue 13) took it to 458: proxy mode 5.7 KB, sessions
# that end 2.8 KB, USERS_FILE 2.0 KB, the console rule and metrics 0.9 KB.
# Link-time optimisation and the packed pages gave back 8 KB, which the
# API's webhooks and the code page's new states (issue 14) took again.
# The five languages (issue 14, 4.5 KB packed, 3 KB of code) fit because
# the packing became deflate (8 KB less) and the link -z norelro (up to
# a page of padding less): 470 996 bytes of 471 040, and 472 172 with
# what came after. mbedTLS and libcurl in the LTO link too (STATIC_LTO)
# took it to 441 156 (431 KiB): 29 884 bytes of room, for the log writer.
static_budget_armv6   := 460
static_budget_mipsel  := 800
static_budget_mips    := 800

# The targets. cross: Debian cross tool prefix (x86_64 builds natively:
# never an empty CROSS_COMPILE, see deps/static/build.sh). triplet: musl's
# name for it. cpu: flags for every compile. qemu: how test-static runs
# the binary.
static_cross_x86_64    :=
static_triplet_x86_64  := x86_64-linux-musl
static_cpu_x86_64      :=
static_qemu_x86_64     :=

static_cross_aarch64   := aarch64-linux-gnu-
static_triplet_aarch64 := aarch64-linux-musl
static_cpu_aarch64     :=
static_qemu_aarch64    := qemu-aarch64-static

# armv7: the Debian armhf baseline (VFPv3-D16, Thumb-2): Pi 2, most routers.
static_cross_armv7     := arm-linux-gnueabihf-
static_triplet_armv7   := arm-linux-musleabihf
static_cpu_armv7       := -march=armv7-a+fp -mfloat-abi=hard -mthumb
static_qemu_armv7      := qemu-arm-static

# armv6: Pi 1 / Zero (ARM1176JZF-S), which has no Thumb-2. Built with the
# armel compiler, Thumb-1, soft-float, because Debian's armhf libgcc.a and
# crtbegin are ARMv7 Thumb-2 code (the binary crashes on an ARM1176), and
# GCC has no Thumb-1 hard-float: ARM mode costs 45% in size (560 KiB). A
# static binary brings its own libc, so it runs on armhf Pi OS all the same.
static_cross_armv6     := arm-linux-gnueabi-
static_triplet_armv6   := arm-linux-musleabi
static_cpu_armv6       := -march=armv6 -mthumb -mfloat-abi=soft
static_qemu_armv6      := qemu-arm-static -cpu arm1176

# mipsel: MT7621-class routers; mips: ath79-class. MIPS32r2, soft-float:
# router SoCs have no FPU and OpenWrt kernels no FPU emulator, so a single
# FPU instruction is SIGILL there. Debian's MIPS libgcc is hard-float, so
# glibc's soft-fp routines are built -msoft-float as libsoftfp
# (deps/static/build.sh softfp), and the link is checked for FPU
# instructions. qemu runs them as a 24Kc, which has no FPU either. -mplt:
# non-PIC calls, 5% smaller.
static_cross_mipsel    := mipsel-linux-gnu-
static_triplet_mipsel  := mipsel-linux-musl
static_cpu_mipsel      := -march=mips32r2 -mplt -msoft-float
static_qemu_mipsel     := qemu-mipsel-static -cpu 24Kc
static_softfp_mipsel   := yes

static_cross_mips      := mips-linux-gnu-
static_triplet_mips    := mips-linux-musl
static_cpu_mips        := -march=mips32r2 -mplt -msoft-float
static_qemu_mips       := qemu-mips-static -cpu 24Kc
static_softfp_mips     := yes

# Pinned sources: Debian's trixie source tarballs (deps/fetch.sh fetches them
# through apt and checks the sha256; an upstream release tarball with the
# same checksum dropped into deps/dl/ is used as it is).
MUSL_TAR    := musl_1.2.5.orig.tar.gz
MUSL_SHA    := a9a118bbe84d8764da0ea0d28b3ab3fae8477fc7e4085d90102b8596fc7c75e4
MBEDTLS_TAR := mbedtls_3.6.6.orig.tar.bz2
MBEDTLS_SHA := 8fb65fae8dcae5840f793c0a334860a411f884cc537ea290ce1c52bb64ca007a
CURL_TAR    := curl_8.14.1.orig.tar.gz
CURL_SHA    := 6766ada7101d292b42b8b15681120acd68effa4a9660935853cf6d61f0d984d4
# glibc's soft-fp sources (MIPS only), from Debian's glibc-source package;
# the files used are pinned by deps/static/softfp/SHA256SUMS instead.
GLIBC_TAR   ?= $(firstword $(wildcard /usr/src/glibc/glibc-*.tar.xz))

# Size first: each function and object in its own section so the linker
# can drop what nothing calls; no unwind tables (C, no exceptions).
STATIC_OPT := -Os -ffunction-sections -fdata-sections \
              -fno-asynchronous-unwind-tables -fno-unwind-tables -fno-pie

# Link-time optimisation for the application's objects (otp_demo.o,
# civetweb.o) and for mbedTLS and libcurl, whose archives then hold gcc's
# intermediate code (made with gcc-ar): the final link optimises all four
# as one program, inlines across the library boundaries and drops what
# the options otp_demo sets make unreachable. The app alone gave 4-5 KB;
# the libraries too gave another 30 KB (armv6: 472 172 bytes to 441 156).
# musl stays plain objects (see deps/static/build.sh). The price: the link
# map no longer tells mbedTLS from libcurl; for sizes.py's per-library
# split, static-clean and build once with STATIC_DEPS_LTO= (empty).
STATIC_LTO := -flto -flto-partition=one
STATIC_DEPS_LTO ?= $(STATIC_LTO)

SB       := build/static/$(ARCH)
SPREFIX  := $(CURDIR)/$(SB)/prefix
SCC      := $(SPREFIX)/bin/musl-gcc $(static_cpu_$(ARCH))
SSTRIP   := $(static_cross_$(ARCH))strip
SBUDGET  := $(static_budget_$(ARCH))
SSOFTFP  := $(static_softfp_$(ARCH))
SLIBS    := -L$(SPREFIX)/lib -lcurl -lmbedtls -lmbedx509 -lmbedcrypto -lpthread
# Soft-float: all of libsoftfp goes in before libgcc, so libc's references
# cannot reach libgcc's hard-float versions (--gc-sections drops the rest).
# libgcc's integer helpers and crtbegin are marked hard-float but hold no
# FPU code: hence --no-warn-mismatch, and the objdump check after linking.
ifeq ($(SSOFTFP),yes)
SLIBS    += -Wl,--whole-archive -lsoftfp -Wl,--no-whole-archive \
            -Wl,--no-warn-mismatch
endif

STATIC_GOALS := static test-static static-clean
ifneq ($(filter $(STATIC_GOALS),$(MAKECMDGOALS)),)
ifeq ($(filter $(ARCH),$(STATIC_ARCHES)),)
$(error ARCH=$(ARCH): use one of $(STATIC_ARCHES))
endif
endif

.PHONY: static test-static static-all test-static-all static-clean test-tls

# ---- dependencies, once per ARCH ---------------------------------------

# static_dep NAME TARBALL: build one library with deps/static/build.sh
# and record how long it took (make static prints it).
define static_dep
	@mkdir -p $(SB)
	@echo "static $(ARCH): building $(1) (log: $(SB)/src/$(1).log)"
	@t0=$$(date +%s) && \
	TARBALL=$(2) WORK=$(CURDIR)/$(SB)/src PREFIX=$(SPREFIX) \
	CROSS='$(static_cross_$(ARCH))' TRIPLET=$(static_triplet_$(ARCH)) \
	CPU='$(static_cpu_$(ARCH))' OPT='$(STATIC_OPT)' LTO='$(STATIC_DEPS_LTO)' \
	CONFIG_H=$(CURDIR)/deps/mbedtls_config.h deps/static/build.sh $(1) && \
	echo "$(1) $$(( $$(date +%s) - t0 ))" > $(SB)/$(1).time
	@rm -rf $(SB)/src/$(1)
	@touch $@
endef
STATIC_DL := $(CURDIR)/deps/dl

# deps/static/build.sh also keeps each library's licence file, so a change
# to it rebuilds the libraries.
$(SB)/musl.stamp: deps/static/build.sh
	@tools/deps.sh static
	@deps/fetch.sh musl $(MUSL_TAR) $(MUSL_SHA)
	$(call static_dep,musl,$(STATIC_DL)/$(MUSL_TAR))

$(SB)/softfp.stamp: $(SB)/musl.stamp deps/static/softfp/SHA256SUMS \
		deps/static/softfp/sfp-machine.h
	@test -f "$(GLIBC_TAR)" || { echo "static $(ARCH): no glibc source" \
		"tarball: apt-get install glibc-source, or GLIBC_TAR=path" >&2; \
		exit 1; }
	$(call static_dep,softfp,$(GLIBC_TAR))

$(SB)/mbedtls.stamp: $(SB)/musl.stamp $(if $(SSOFTFP),$(SB)/softfp.stamp) \
		deps/mbedtls_config.h
	@deps/fetch.sh mbedtls $(MBEDTLS_TAR) $(MBEDTLS_SHA)
	$(call static_dep,mbedtls,$(STATIC_DL)/$(MBEDTLS_TAR))

$(SB)/curl.stamp: $(SB)/mbedtls.stamp
	@deps/fetch.sh curl $(CURL_TAR) $(CURL_SHA)
	$(call static_dep,curl,$(STATIC_DL)/$(CURL_TAR))

# ---- the application -----------------------------------------------------

# civetweb as in the Makefile: its CW_DEFS, NO_FILESYSTEMS and USE_IPV6
# included.
# Both objects depend on this file too: a change of flags (LTO) rebuilds
# them, where make alone would keep objects built with the old ones.
$(SB)/civetweb.o: $(CW_SRC) civetweb/include/civetweb.h $(SB)/mbedtls.stamp \
		$(CW_HOOKS) mk/static.mk
	$(SCC) $(STATIC_OPT) $(STATIC_LTO) $(CW_CFLAGS) -c $< -o $@

# The notices of exactly what this binary bundles, from the licence files
# deps/static/build.sh kept (tools/notices.sh): otp_demo --licenses prints
# them, and -I$(SB) makes otp_demo.c include these instead of the dynamic
# build's.
SLICENSES := $(SPREFIX)/share/licenses
STATIC_NOTICES := $(NOTICES_SELF) $(NOTICES_CW) \
	"mbed TLS|$(MBEDTLS_TAR:mbedtls_%.orig.tar.bz2=%)|Apache-2.0 (of Apache-2.0 OR GPL-2.0-or-later)|$(SLICENSES)/mbedtls/LICENSE" \
	"curl|$(CURL_TAR:curl_%.orig.tar.gz=%)|curl (MIT-style)|$(SLICENSES)/curl/COPYING" \
	"musl|$(MUSL_TAR:musl_%.orig.tar.gz=%)|MIT|$(SLICENSES)/musl/COPYRIGHT" \
	$(if $(SSOFTFP),"glibc soft-fp|$(patsubst glibc-%.tar.xz,%,$(notdir $(GLIBC_TAR)))|LGPL-2.1-or-later with linking exception|$(SLICENSES)/softfp/LICENSE")
$(SB)/notices.txt: LICENSE tools/notices.sh $(CW_LICENSE) $(SB)/curl.stamp
	tools/notices.sh text $(STATIC_NOTICES) > $@.tmp
	mv -f $@.tmp $@
# Packed (tools/lz.py, raw deflate): 22 KB of licence text to 7.5, which
# the router budgets need; --licenses unpacks it (inflate_raw()).
$(SB)/notices.h: $(SB)/notices.txt tools/lz.py
	python3 tools/lz.py otp_notices < $< > $@.tmp
	mv -f $@.tmp $@

# The pages and the language catalogs packed too, in one stream (25 KB to
# 7.3); -I$(SB) makes otp_demo.c include this www_data.h, which it
# unpacks once at start (www_builtin()).
$(SB)/www_data.h: $(WWW) tools/lz.py
	@mkdir -p $(@D)
	python3 tools/lz.py --www -x $(REDIS_TEXTS) $(WWW) > $@.tmp
	mv -f $@.tmp $@

$(SB)/otp_demo.o: otp_demo.c otp_demo.h numbering.h $(SB)/www_data.h \
		civetweb/include/civetweb.h $(SB)/curl.stamp $(SB)/notices.h \
		mk/static.mk
	$(SCC) $(STATIC_OPT) $(STATIC_LTO) -I$(SB) $(OTP_CFLAGS) -c $< -o $@

# -z norelro: in a static musl binary nothing applies PT_GNU_RELRO (only
# musl's dynamic linker mprotects it, ldso/dynlink.c), so it protects
# nothing, while ld pads the file so that its 24 bytes end on a page:
# up to 4 KB of zeros (armv6: 472 884 bytes with it, 469 000 without).
$(SB)/otp_demo: $(SB)/otp_demo.o $(SB)/civetweb.o
	$(SCC) $(STATIC_OPT) $(STATIC_LTO) -static -no-pie -Wl,--gc-sections \
		-Wl,-z,norelro -Wl,-Map,$@.map \
		-o $@.full $^ $(SLIBS)
ifeq ($(SSOFTFP),yes)
	@if $(static_cross_$(ARCH))objdump -d $@.full | grep -qE \
	    '\$$f[0-9]|\s(cfc1|ctc1)\s'; then \
		echo "static $(ARCH): FPU instructions in $@.full" >&2; \
		rm -f $@.full; exit 1; fi
endif
	$(SSTRIP) --strip-all -R .comment -o $@ $@.full

# Prints the size and fails over budget, or if it is not really static.
static: $(SB)/otp_demo $(SB)/notices.txt
	@file $< | grep -q 'statically linked' || \
		{ echo "static $(ARCH): $< is not statically linked" >&2; exit 1; }
	@cat $(SB)/*.time | awk '{ t = t (NR > 1 ? ", " : "") $$1 " " $$2 " s" } \
		END { print "static $(ARCH): dependency build times: " t }'
	@b=$$(stat -c %s $<); k=$$(( (b + 1023) / 1024 )); \
	echo "static $(ARCH): $< $$k KiB ($$b bytes), budget $(SBUDGET) KiB"; \
	if [ $$k -gt $(SBUDGET) ]; then \
		echo "static $(ARCH): OVER BUDGET by $$((k - $(SBUDGET))) KiB;" \
		     "by library (from $<.map):" >&2; \
		python3 deps/static/sizes.py $<.map >&2; exit 1; fi

# The flow under qemu (tests/static/smoke.py), the TLS policy under qemu
# (tests/static/tls_policy.sh), and on x86_64, where time and CPU are real,
# idle and stalled TLS clients (tests/static/idle_tls.py), and the
# transport attack tests (strict framing, slow and many connections).
SQEMU := $(static_qemu_$(ARCH))
test-static: static
	@tools/deps.sh static
	tests/gen_certs.sh tests/out/static-certs
	python3 tests/static/smoke.py --bin $(SB)/otp_demo \
		--certs tests/out/static-certs --qemu '$(SQEMU)'
	tests/static/tls_policy.sh --tls13 --bin $(SB)/otp_demo --qemu '$(SQEMU)'
ifeq ($(ARCH),x86_64)
	python3 tests/static/idle_tls.py --bin $(SB)/otp_demo
	OTP_BIN=$(CURDIR)/$(SB)/otp_demo ATTACKS="framing slow" \
		tests/attack/run.sh
endif

# The same TLS tests on the dynamic build (system mbedTLS 2.28: no TLS 1.3).
test-tls: otp_demo
	tests/static/tls_policy.sh --bin ./otp_demo
	python3 tests/static/idle_tls.py --bin ./otp_demo

static-all:
	@for a in $(STATIC_ARCHES); do $(MAKE) --no-print-directory static \
		ARCH=$$a || exit 1; done

test-static-all:
	@for a in $(STATIC_ARCHES); do $(MAKE) --no-print-directory \
		test-static ARCH=$$a || exit 1; done

static-clean:
	rm -rf $(SB)
