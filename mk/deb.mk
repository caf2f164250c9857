# mk/deb.mk: the Debian package (included by Makefile).
#
#   make deb              build/deb/otp-demo_VERSION-1_ARCH.deb for this
#                         machine: otp_demo built with Debian's hardening
#                         flags (dpkg-buildflags) and WITH_REDIS, linking
#                         the system's mbedTLS, libcurl and hiredis
#                         (Depends from dpkg-shlibdeps)
#   make deb ARCH=arm64   the same package around a static binary:
#   make deb ARCH=armhf   make static ARCH=aarch64 or armv7 (also amd64:
#                         x86_64), with mbedTLS, curl and musl inside
#   make lintian          lintian on the .deb (ARCH= as above)
#   make test-deb         tests/packaging/deb_test.sh as root on this
#                         machine: dpkg -i, otp_demo -t on the installed
#                         config, the whole flow as the service user,
#                         dpkg --purge, and nothing left behind. It
#                         installs system-wide, so make test never runs it.
#
# tools/mkdeb.sh assembles the package with dpkg-deb; packaging/debian/
# holds the control template, maintainer scripts, man page and the DEP-5
# copyright generator.

DEB_DIR     := build/deb
# ARCH on the command line picks a static binary; otherwise this machine's.
ifeq ($(origin ARCH),command line)
DEB_ARCH    := $(ARCH)
deb_static_amd64 := x86_64
deb_static_arm64 := aarch64
deb_static_armhf := armv7
DEB_SARCH   := $(deb_static_$(ARCH))
DEB_VARIANT := static
else
DEB_ARCH    := $(shell dpkg --print-architecture 2>/dev/null)
DEB_VARIANT := dynamic
endif
DEB_FILE    := $(DEB_DIR)/otp-demo_$(VERSION)-1_$(DEB_ARCH).deb
DEB_OBJ     := $(DEB_DIR)/obj

.PHONY: deb lintian test-deb deps-deb
deps-deb: deps-build
	@tools/deps.sh deb

ifeq ($(DEB_VARIANT),dynamic)
# A build of its own, with the flags Debian builds packages with (PIE,
# stack protector, fortify, full RELRO, bindnow).
# The inner make decides what is out of date (BUILD=$(DEB_OBJ) there).
DEB_FLAGS = DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get
deb: | deps-deb
	$(MAKE) --no-print-directory BUILD=$(DEB_OBJ) SANITIZE= \
		CFLAGS="$$($(DEB_FLAGS) CFLAGS) $$($(DEB_FLAGS) CPPFLAGS)" \
		LDFLAGS="$$($(DEB_FLAGS) LDFLAGS)" $(DEB_OBJ)/otp_demo-redis
	@BIN=$(DEB_OBJ)/otp_demo-redis ARCH=$(DEB_ARCH) VARIANT=dynamic \
		VERSION=$(VERSION) OUT=$(DEB_DIR) tools/mkdeb.sh > /dev/null
	@echo "deb: $(DEB_FILE) $$(stat -c %s $(DEB_FILE)) bytes"
else
deb: | deps-deb
	@test -n "$(DEB_SARCH)" || { echo "make deb: ARCH=$(ARCH): use arm64," \
		"armhf or amd64 (or no ARCH, for this machine)" >&2; exit 64; }
	$(MAKE) --no-print-directory static ARCH=$(DEB_SARCH)
	@BIN=build/static/$(DEB_SARCH)/otp_demo ARCH=$(DEB_ARCH) VARIANT=static \
		LICENSES=build/static/$(DEB_SARCH)/prefix/share/licenses \
		STRIP=$(or $(static_cross_$(DEB_SARCH)),)strip \
		VERSION=$(VERSION) OUT=$(DEB_DIR) tools/mkdeb.sh > /dev/null
	@echo "deb: $(DEB_FILE) $$(stat -c %s $(DEB_FILE)) bytes"
endif

# lintian's whole report (every tag, overrides with their reasons);
# errors fail the target.
lintian: deb
	-lintian --display-info --pedantic --show-overrides $(DEB_FILE)
	lintian --fail-on error $(DEB_FILE) > /dev/null

test-deb: deb
	tests/packaging/deb_test.sh $(DEB_FILE)
