#!/bin/sh
# tests/packaging/openwrt_pkg_test.sh: the OpenWrt package as a feed would
# get it, driven through stand-ins for OpenWrt's rules.mk and package.mk
# with the host compiler.
#
#   tests/packaging/openwrt_pkg_test.sh
#
# `make openwrt-feed` (with `make dist`'s release tarball of HEAD) writes a
# feed; its Makefile must carry what a feed reviewer asks for: PKG_SOURCE,
# PKG_SOURCE_URL, a PKG_HASH that is the tarball's sha256, PKG_LICENSE,
# PKG_LICENSE_FILES (present in the tarball), PKG_MAINTAINER, the
# project's VERSION, and no path outside its own directory. Then, as
# OpenWrt would: the tarball's hash checked (a changed tarball is refused),
# Build/Prepare (unpack, civetweb from DL_DIR through civetweb/fetch.sh),
# Build/Compile (the project Makefile with OpenWrt-style CC/CFLAGS/LDFLAGS,
# with apt-get and dpkg-query booby-trapped: nothing may be installed or
# fetched) and Package/install, and the installed tree, --licenses and
# the package's test.sh (OpenWrt's CI runtime test). The stand-in DL_DIR
# holds the Debian civetweb tarball the normal build uses (deps/dl):
# fetch.sh checks its files against the same SHA256SUMS the upstream
# tarball's must match. Needs git (make dist archives HEAD).
# Prints "ok"/"FAIL" and "N passed, M failed".
# OpenWrt's build knows nothing of ours: not SANITIZE, which make test-asan
# passes down (in MAKEFLAGS too), nor the outer make's other variables.
unset SANITIZE MAKEFLAGS MFLAGS MAKELEVEL
set -u
cd "$(dirname "$0")/../.." || exit 1
top=$PWD
pass=0 fail=0
ok() { pass=$((pass + 1)); printf 'ok openwrt-pkg: %s\n' "$1"; }
bad() { fail=$((fail + 1)); printf 'FAIL openwrt-pkg: %s%s\n' "$1" "${2:+: $2}"; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-owrt.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
mkdir -p "$tmp/top/include" "$tmp/dl" "$tmp/build" "$tmp/root" "$tmp/bin"

# ---- make openwrt-feed --------------------------------------------------------
feed=$tmp/feed
version=$(sed -n 's/^VERSION[[:space:]]*:=[[:space:]]*//p' Makefile)
if make -s --no-print-directory openwrt-feed FEED_DIR="$feed" \
	DIST_DIR="$tmp/dist" RELEASE_URL=https://downloads.example.org/otp_demo/ \
	> "$tmp/feed.log" 2>&1; then
	ok "make openwrt-feed"
else
	bad "make openwrt-feed" "$(tail -n 5 "$tmp/feed.log")"
	finish
fi
pkg=$feed/otp-demo
tarball=$tmp/dist/otp_demo-$version.tar.gz
for f in Makefile files/otp_demo.init files/otp_demo.config files/otp_demo.keep \
    files/otp_demo.capabilities.json test.sh; do
	if [ -f "$pkg/$f" ]; then ok "feed has otp-demo/$f"; else bad "feed has otp-demo/$f"; fi
done
if grep -q "src-link otp $feed" "$tmp/feed.log"; then
	ok "make openwrt-feed prints the feeds.conf line"
else
	bad "make openwrt-feed prints the feeds.conf line" "$(cat "$tmp/feed.log")"
fi
# What scripts/feeds needs to find it: a package directory with a Makefile
# that includes package.mk and calls BuildPackage.
if grep -q '^include $(INCLUDE_DIR)/package.mk' "$pkg/Makefile" &&
    grep -q '^$(eval $(call BuildPackage,otp-demo))' "$pkg/Makefile"; then
	ok "the package Makefile includes package.mk and calls BuildPackage"
else
	bad "the package Makefile includes package.mk and calls BuildPackage"
fi
if grep -nE '\.\./|OTP_TOP|/work/|\$\(CURDIR\)/\.\.' "$pkg/Makefile"; then
	bad "no path outside the package directory"
else
	ok "no path outside the package directory"
fi

# ---- stand-ins for OpenWrt's include files ------------------------------------
: > "$tmp/top/rules.mk"
cat > "$tmp/top/include/package.mk" <<'EOF'
# Stand-in for OpenWrt's include/package.mk: the variables and calls the
# package uses, and targets to run its parts. download checks PKG_HASH
# like scripts/download.pl; Build/Prepare/Default unpacks PKG_SOURCE.
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

define Build/Prepare/Default
	mkdir -p $(PKG_BUILD_DIR)
	gzip -dc $(DL_DIR)/$(PKG_SOURCE) | tar -C $(PKG_BUILD_DIR)/.. -xf -
endef

define BuildPackage
$(eval $(Package/$(1)))
$(eval PKG_ID := $(1))
endef

print-%:
	@printf '%s\n' '$(strip $($*))'
conffiles:
	@printf '%s\n' '$(strip $(Package/$(PKG_ID)/conffiles))'
download:
	echo "$(PKG_HASH)  $(DL_DIR)/$(PKG_SOURCE)" | sha256sum -c --quiet
prepare: download
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
expect "PKG_NAME" "$(owrt print-PKG_NAME)" "otp-demo"
expect "PKG_VERSION is the project's VERSION ($version)" \
	"$(owrt print-PKG_VERSION)" "$version"
expect "PKG_SOURCE: the release tarball" "$(owrt print-PKG_SOURCE)" \
	"otp_demo-$version.tar.gz"
expect "PKG_SOURCE_URL: RELEASE_URL" "$(owrt print-PKG_SOURCE_URL)" \
	"https://downloads.example.org/otp_demo/"
expect "PKG_HASH: the tarball's sha256" "$(owrt print-PKG_HASH)" \
	"$(sha256sum "$tarball" | cut -d' ' -f1)"
expect "PKG_LICENSE" "$(owrt print-PKG_LICENSE)" "MIT"
lic=$(owrt print-PKG_LICENSE_FILES)
expect "PKG_LICENSE_FILES" "$lic" "LICENSE"
if tar -tzf "$tarball" | grep -qx "otp_demo-$version/$lic"; then
	ok "the licence file is in the release tarball"
else
	bad "the licence file is in the release tarball"
fi
case $(owrt print-PKG_MAINTAINER) in
?*" <"?*@?*">") ok "PKG_MAINTAINER: name <address>" ;;
*) bad "PKG_MAINTAINER: name <address>" "$(owrt print-PKG_MAINTAINER)" ;;
esac
expect "PKG_BUILD_DIR: where the tarball unpacks" "$(owrt print-PKG_BUILD_DIR)" \
	"$tmp/build/otp_demo-$version"
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

# ---- download check, prepare, compile, install ---------------------------------
deb=
for f in deps/dl/civetweb_*.orig.tar.*; do
	[ -f "$f" ] && deb=$f && break
done
if [ -z "$deb" ]; then
	bad "a civetweb tarball in deps/dl" "run make once (civetweb/fetch.sh)"
	finish
fi
ln -s "$top/$deb" "$tmp/dl/civetweb-$(cat civetweb/VERSION).tar.gz"
# A tarball that is not the release: refused before anything is unpacked.
printf 'not the release\n' | gzip > "$tmp/dl/otp_demo-$version.tar.gz"
if owrt prepare > "$tmp/bad.log" 2>&1; then
	bad "a tarball with another sha256 is refused"
else
	ok "a tarball with another sha256 is refused"
fi
cp "$tarball" "$tmp/dl/"
if owrt prepare > "$tmp/prepare.log" 2>&1; then
	ok "Build/Prepare: tarball unpacked, civetweb checked and patched"
else
	bad "Build/Prepare" "$(tail -n 5 "$tmp/prepare.log")"
	finish
fi
bdir=$tmp/build/otp_demo-$version
check_file() { if [ -e "$2" ]; then ok "$1"; else bad "$1" "$2 missing"; fi; }
check_file "prepare: civetweb.c in the build directory" "$bdir/civetweb/src/civetweb.c"
check_file "prepare: fetch.sh stamp (checksums verified)" "$bdir/civetweb/.fetched"
# Anything that would install or fetch packages leaves a trace here.
for t in apt-get apt dpkg-query sudo; do
	printf '#!/bin/sh\necho "%s $*" >> "%s"\nexit 1\n' "$t" "$tmp/trap.log" > "$tmp/bin/$t"
	chmod +x "$tmp/bin/$t"
done
if PATH="$tmp/bin:$PATH" owrt compile > "$tmp/compile.log" 2>&1 &&
    [ -x "$bdir/otp_demo" ]; then
	ok "Build/Compile: the project Makefile builds otp_demo"
else
	bad "Build/Compile: the project Makefile builds otp_demo" \
	    "$(tail -n 8 "$tmp/compile.log")"
	finish
fi
if [ -s "$tmp/trap.log" ]; then
	bad "compile installs and fetches nothing" "$(cat "$tmp/trap.log")"
else
	ok "compile installs and fetches nothing"
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
# procd's ujail reads it (-C) to grant the daemon a port below 1024.
caps=$r/etc/capabilities/otp_demo.json
if python3 -c 'import json, sys
d = json.load(open(sys.argv[1]))
sets = ("bounding", "effective", "ambient", "permitted", "inheritable")
sys.exit(sorted(d) != sorted(sets) or
         any(d[k] != ["CAP_NET_BIND_SERVICE"] for k in sets))' "$caps"; then
	ok "/etc/capabilities/otp_demo.json: CAP_NET_BIND_SERVICE only, in every set"
else
	bad "/etc/capabilities/otp_demo.json: CAP_NET_BIND_SERVICE only, in every set" \
		"$(cat "$caps" 2>&1)"
fi
expect "sysupgrade keeps /etc/otp_demo (session key, certificate)" \
	"$(cat "$r/lib/upgrade/keep.d/otp-demo" 2>/dev/null)" "/etc/otp_demo/"
expect "otp_demo --version prints the package version" \
	"$("$r/usr/bin/otp_demo" --version)" "otp_demo $version"
if "$r/usr/bin/otp_demo" --licenses | grep -q '^  civetweb '; then
	ok "the package's binary carries its notices (--licenses)"
else
	bad "the package's binary carries its notices (--licenses)"
fi
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
# The UCI defaults keep the service off until configured.
if grep -q "^config otp_demo 'main'" "$r/etc/config/otp_demo" &&
    grep -q "option enabled '0'" "$r/etc/config/otp_demo"; then
	ok "UCI defaults: section main, disabled until configured"
else
	bad "UCI defaults: section main, disabled until configured"
fi
finish
