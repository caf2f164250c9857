#!/bin/sh
# tests/packaging/openwrt_pkg_test.sh: the OpenWrt package Makefile
# (packaging/openwrt/otp-demo/Makefile), driven through stand-ins for
# OpenWrt's rules.mk and package.mk with the host compiler.
#
#   tests/packaging/openwrt_pkg_test.sh
#
# Checks the package's metadata (name, version = the project's VERSION,
# DEPENDS, conffiles, its own user, the civetweb download), then runs its
# Build/Prepare (sources from this checkout, civetweb from a tarball in
# DL_DIR through civetweb/fetch.sh), Build/Compile (the project Makefile
# with OpenWrt-style CC/CFLAGS/LDFLAGS) and Package/install, and checks the
# installed tree and the package's test.sh (OpenWrt's CI runtime test).
# The stand-in DL_DIR holds the Debian civetweb tarball the normal build
# uses (deps/dl): fetch.sh checks its files against the same SHA256SUMS the
# upstream tarball's must match. Prints "ok"/"FAIL" and "N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
top=$PWD
pkg=$top/packaging/openwrt/otp-demo
pass=0 fail=0
ok() { pass=$((pass + 1)); printf 'ok openwrt-pkg: %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf 'FAIL openwrt-pkg: %s%s\n' "$1" "${2:+: $2}"; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-owrt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir -p "$tmp/top/include" "$tmp/dl" "$tmp/build" "$tmp/root"

# ---- stand-ins for OpenWrt's include files ------------------------------------
: > "$tmp/top/rules.mk"
cat > "$tmp/top/include/package.mk" <<'EOF'
# Stand-in for OpenWrt's include/package.mk: the variables and calls the
# package uses, and targets to run its parts.
PKG_BUILD_DIR ?= $(BUILD_DIR)/$(PKG_NAME)-$(PKG_VERSION)
CP := cp -fpR
INSTALL_DIR := install -d -m0755
INSTALL_BIN := install -m0755
INSTALL_CONF := install -m0600
INSTALL_DATA := install -m0644

define Download
$(eval $(Download/$(1)))
$(eval DL_$(1) := $(FILE) $(URL)$(URL_FILE) $(HASH))
endef

define BuildPackage
$(eval $(Package/$(1)))
$(eval PKG_ID := $(1))
endef

print-%:
	@printf '%s\n' '$(strip $($*))'
conffiles:
	@printf '%s\n' '$(strip $(Package/$(PKG_ID)/conffiles))'
prepare:
	$(Build/Prepare)
compile:
	$(Build/Compile)
install-pkg:
	$(call Package/$(PKG_ID)/install,$(DEST))
EOF

owrt() { # owrt TARGET...: make in the package directory, OpenWrt-style
	make -s --no-print-directory -C "$pkg" TOPDIR="$tmp/top" \
		INCLUDE_DIR="$tmp/top/include" BUILD_DIR="$tmp/build" \
		DL_DIR="$tmp/dl" TARGET_CC="${CC:-cc}" TARGET_CFLAGS="-O0" \
		TARGET_CPPFLAGS="" TARGET_LDFLAGS="" DEST="$tmp/root" "$@"
}

# ---- metadata ---------------------------------------------------------------
version=$(sed -n 's/^VERSION[[:space:]]*:=[[:space:]]*//p' Makefile)
expect "PKG_NAME" "$(owrt print-PKG_NAME)" "otp-demo"
expect "PKG_VERSION is the project's VERSION ($version)" \
	"$(owrt print-PKG_VERSION)" "$version"
expect "DEPENDS" "$(owrt print-DEPENDS)" "+libcurl +libmbedtls +ca-bundle"
expect "conffiles" "$(owrt conffiles)" "/etc/config/otp_demo"
expect "runs as its own user (USERID)" "$(owrt print-USERID)" "otp_demo:otp_demo"
expect "civetweb version from civetweb/VERSION" \
	"$(owrt print-CIVETWEB_VERSION)" "$(cat civetweb/VERSION)"
dl=$(owrt print-DL_civetweb)
case $dl in
"civetweb-$(cat civetweb/VERSION).tar.gz https://"*" "[0-9a-f]*)
	h=${dl##* }
	if [ ${#h} -eq 64 ]; then ok "civetweb download: file, https URL, sha256"
	else bad "civetweb download: file, https URL, sha256" "$dl"; fi ;;
*) bad "civetweb download: file, https URL, sha256" "$dl" ;;
esac

# ---- prepare, compile, install ------------------------------------------------
deb=
for f in deps/dl/civetweb_*.orig.tar.*; do
	[ -f "$f" ] && deb=$f && break
done
if [ -z "$deb" ]; then
	bad "a civetweb tarball in deps/dl" "run make once (civetweb/fetch.sh)"
	finish
fi
ln -s "$top/$deb" "$tmp/dl/civetweb-$(cat civetweb/VERSION).tar.gz"
if owrt prepare > "$tmp/prepare.log" 2>&1; then
	ok "Build/Prepare: sources copied, civetweb checked and patched"
else
	bad "Build/Prepare" "$(tail -n 5 "$tmp/prepare.log")"
	finish
fi
bdir=$tmp/build/otp-demo-$version
check_file() { if [ -e "$2" ]; then ok "$1"; else bad "$1" "$2 missing"; fi; }
check_file "prepare: civetweb.c in the build directory" "$bdir/civetweb/src/civetweb.c"
check_file "prepare: fetch.sh stamp (checksums verified)" "$bdir/civetweb/.fetched"
if owrt compile > "$tmp/compile.log" 2>&1 && [ -x "$bdir/otp_demo" ]; then
	ok "Build/Compile: the project Makefile builds otp_demo"
else
	bad "Build/Compile: the project Makefile builds otp_demo" \
	    "$(tail -n 8 "$tmp/compile.log")"
	finish
fi
if grep -q 'deps\.sh\|fetch\.sh' "$tmp/compile.log"; then
	bad "compile does not fetch or install anything" "$(grep 'deps.sh\|fetch.sh' "$tmp/compile.log")"
else
	ok "compile does not fetch or install anything"
fi
if owrt install-pkg > "$tmp/install.log" 2>&1; then
	ok "Package/install"
else
	bad "Package/install" "$(tail -n 5 "$tmp/install.log")"
	finish
fi
r=$tmp/root
mode() { stat -c %a "$1" 2>/dev/null; }
expect "/usr/bin/otp_demo 0755" "$(mode "$r/usr/bin/otp_demo")" 755
expect "/etc/init.d/otp_demo 0755" "$(mode "$r/etc/init.d/otp_demo")" 755
expect "/etc/config/otp_demo 0600 (it may hold the API key)" \
	"$(mode "$r/etc/config/otp_demo")" 600
expect "sysupgrade keeps /etc/otp_demo (session key, certificate)" \
	"$(cat "$r/lib/upgrade/keep.d/otp-demo" 2>/dev/null)" "/etc/otp_demo/"
expect "otp_demo --version prints the package version" \
	"$("$r/usr/bin/otp_demo" --version)" "otp_demo $version"
if PATH="$r/usr/bin:$PATH" sh "$pkg/test.sh" otp-demo "$version" > "$tmp/t.log" 2>&1; then
	ok "the package's test.sh (OpenWrt CI) passes"
else
	bad "the package's test.sh (OpenWrt CI) passes" "$(cat "$tmp/t.log")"
fi
if PATH="$r/usr/bin:$PATH" sh "$pkg/test.sh" otp-demo 9.9.9 > /dev/null 2>&1; then
	bad "test.sh fails on a wrong version"
else
	ok "test.sh fails on a wrong version"
fi
# The UCI defaults parse as UCI-ish text and keep the service off.
if grep -q "^config otp_demo 'main'" "$r/etc/config/otp_demo" &&
    grep -q "option enabled '0'" "$r/etc/config/otp_demo"; then
	ok "UCI defaults: section main, disabled until configured"
else
	bad "UCI defaults: section main, disabled until configured"
fi
finish
