#!/bin/sh
# deps/static/build.sh musl|mbedtls|curl|softfp
#
# Builds one dependency of the static binary from its pinned tarball into
# $PREFIX, for one architecture. mk/static.mk calls it once per stamp, with
# the architecture described by the environment:
#
#   TARBALL   the verified source tarball (deps/fetch.sh put it there)
#   WORK      a scratch directory for this arch; the tree is unpacked anew
#   PREFIX    where headers and static libraries go (build/static/ARCH/prefix)
#   CROSS     cross tool prefix ("aarch64-linux-gnu-"); empty for x86_64,
#             which builds natively with plain gcc, ar and ranlib
#   TRIPLET   the musl target triplet, for musl's and curl's configure
#   CPU       CPU flags every compile gets (-march=armv6 ...)
#   OPT       optimisation flags (-Os -ffunction-sections ...)
#   CONFIG_H  deps/mbedtls_config.h (mbedtls only)
#   LTO       link-time optimisation flags for mbedtls and curl (-flto ...),
#             or empty; their archives then hold GIMPLE, made with gcc-ar
#
# The build log goes to $WORK/NAME.log; on failure its tail is printed.
# Each dependency is built with make -j2 (the machines here have 2 cores).
set -eu

what=$1
: "${TARBALL:?}" "${WORK:?}" "${PREFIX:?}" "${TRIPLET:?}" "${OPT:?}"
CROSS=${CROSS-} CPU=${CPU-} LTO=${LTO-}
# A -j in the caller's MAKEFLAGS (or its jobserver) must not leak in here.
unset MAKEFLAGS MFLAGS MAKELEVEL
mkdir -p "$WORK" "$PREFIX"
log=$WORK/$what.log
: > "$log"

fail() {
	echo "deps/static/build.sh: $what failed; last lines of $log:" >&2
	tail -n 30 "$log" >&2
	exit 1
}
run() { "$@" >> "$log" 2>&1 || fail; }

# unpack: a fresh tree every time, so a half-built one never lingers.
unpack() {
	rm -rf "${WORK:?}/$what"
	mkdir -p "$WORK/$what"
	tar -xf "$TARBALL" -C "$WORK/$what" --strip-components=1
	cd "$WORK/$what"
}

# keep_licence FILE: the library's own licence file, kept as
# $PREFIX/share/licenses/$what/FILE for the notices the binary carries
# (tools/notices.sh, otp_demo --licenses) and the packages ship.
keep_licence() {
	mkdir -p "$PREFIX/share/licenses/$what"
	cp "$1" "$PREFIX/share/licenses/$what/"
}

if [ -n "$CROSS" ]; then
	cc=${CROSS}gcc ar=${CROSS}ar ranlib=${CROSS}ranlib
else
	cc=gcc ar=ar ranlib=ranlib
fi
# The libraries compiled with LTO need the archiver with gcc's LTO plugin,
# or the archive index lists none of their symbols. musl keeps plain
# objects: its startup code and the symbols gcc itself emits calls to
# (memcpy, memset) must exist as real code when the link's LTO runs.
if [ -n "$LTO" ]; then
	lto_ar=${CROSS}gcc-ar lto_ranlib=${CROSS}gcc-ranlib
else
	lto_ar=$ar lto_ranlib=$ranlib
fi
# After musl is installed, everything else compiles through its wrapper.
musl_cc="$PREFIX/bin/musl-gcc $CPU"

case $what in
musl)
	unpack
	keep_licence COPYRIGHT
	# musl's configure treats an empty CROSS_COMPILE as none and derives
	# one from --target (x86_64-linux-musl-, which does not exist): so the
	# tools are always named, and CROSS_COMPILE given only when cross.
	set -- --prefix="$PREFIX" --target="$TRIPLET" --disable-shared \
		--enable-wrapper=gcc CC="$cc" AR="$ar" RANLIB="$ranlib" \
		CFLAGS="$CPU $OPT"
	[ -n "$CROSS" ] && set -- "$@" CROSS_COMPILE="$CROSS"
	run ./configure "$@"
	run make -j2
	run make install
	;;
mbedtls)
	: "${CONFIG_H:?}"
	unpack
	# mbed TLS is Apache-2.0 OR GPL-2.0-or-later; otp_demo takes it under
	# Apache-2.0, so the file is kept up to the GPL's text (its first line
	# of "=" signs): the dual-licence preamble and the Apache licence.
	sed '/^=====/,$d' LICENSE > LICENSE.apache
	grep -q 'Apache License' LICENSE.apache || fail
	keep_licence LICENSE.apache
	mv "$PREFIX/share/licenses/mbedtls/LICENSE.apache" \
		"$PREFIX/share/licenses/mbedtls/LICENSE"
	# Our configuration replaces the default one in place, so whoever
	# includes the installed headers (curl, civetweb, otp_demo) sees the
	# same options the library was built with.
	cp "$CONFIG_H" include/mbedtls/mbedtls_config.h
	# Only the three libraries: the programs and tests are not needed.
	run make -C library -j2 CC="$musl_cc" AR="$lto_ar" \
		CFLAGS="$OPT $LTO" libmbedcrypto.a libmbedx509.a libmbedtls.a
	mkdir -p "$PREFIX/include" "$PREFIX/lib"
	rm -rf "$PREFIX/include/mbedtls" "$PREFIX/include/psa"
	cp -R include/mbedtls include/psa "$PREFIX/include/"
	cp library/libmbedcrypto.a library/libmbedx509.a library/libmbedtls.a \
		"$PREFIX/lib/"
	;;
curl)
	unpack
	keep_licence COPYING
	# HTTPS over mbedTLS and nothing else: every protocol, optional
	# library and optional feature the SMS client does not use is off.
	# Basic auth stays: the generic HTTP sender may use CURLAUTH_BASIC.
	# No CA bundle is compiled in: otp_demo always passes SMS_CA_FILE or
	# the system bundle it found. pkg-config is pointed at nothing, so no
	# library of the build machine can sneak into a cross build.
	# -ffat-lto-objects: configure's tests then compile to real code too,
	# as without LTO, so what it finds cannot depend on it.
	curl_lto=${LTO:+$LTO -ffat-lto-objects}
	run ./configure --host="$TRIPLET" --prefix="$PREFIX" \
		--disable-shared --enable-static \
		--with-mbedtls="$PREFIX" --without-openssl --without-gnutls \
		--without-wolfssl --without-rustls \
		--without-ca-bundle --without-ca-path --without-ca-fallback \
		--without-zlib --without-brotli --without-zstd --without-libpsl \
		--without-libidn2 --without-nghttp2 --without-nghttp3 \
		--without-ngtcp2 --without-libssh2 --without-libssh \
		--without-librtmp --without-libgsasl --without-gssapi \
		--without-libuv --without-winidn --without-quiche \
		--without-msh3 --without-openssl-quic \
		--disable-ftp --disable-file --disable-ldap --disable-ldaps \
		--disable-rtsp --disable-dict --disable-telnet --disable-tftp \
		--disable-pop3 --disable-imap --disable-smtp --disable-gopher \
		--disable-mqtt --disable-smb --disable-ipfs --disable-websockets \
		--disable-manual --disable-docs --disable-libcurl-option \
		--disable-verbose --disable-proxy --disable-cookies \
		--disable-mime --disable-form-api --disable-hsts \
		--disable-alt-svc --disable-headers-api --disable-netrc \
		--disable-progress-meter --disable-dnsshuffle \
		--disable-get-easy-options --disable-unix-sockets --disable-doh \
		--disable-ntlm --disable-tls-srp --disable-sspi \
		--disable-bearer-auth --disable-digest-auth \
		--disable-kerberos-auth --disable-negotiate-auth --disable-aws \
		--disable-httpsrr --disable-ech --disable-ssls-export \
		--disable-bindlocal --disable-sha512-256 \
		--disable-versioned-symbols --disable-curldebug --disable-debug \
		--disable-ares --enable-threaded-resolver --enable-ipv6 \
		--without-fish-functions-dir --without-zsh-functions-dir \
		CC="$musl_cc" AR="$lto_ar" RANLIB="$lto_ranlib" CFLAGS="$OPT $curl_lto" \
		CPPFLAGS= LDFLAGS=-static LIBS= \
		PKG_CONFIG=false PKG_CONFIG_LIBDIR="$WORK/no-pkgconfig"
	# Only libcurl itself (lib/ also builds a unit-test copy by default),
	# installed by hand for the same reason.
	run make -j2 -C lib libcurl.la
	mkdir -p "$PREFIX/include/curl" "$PREFIX/lib"
	cp include/curl/*.h "$PREFIX/include/curl/"
	cp lib/.libs/libcurl.a "$PREFIX/lib/"
	;;
softfp)
	# glibc's soft-float routines, built -msoft-float into libsoftfp.a
	# (why: deps/static/softfp/sfp-machine.h). TARBALL is a glibc source
	# tarball (Debian's glibc-source package has one); the files compiled
	# are checked against deps/static/softfp/SHA256SUMS, so any tarball
	# with the same files gives the same library.
	here=$(cd "$(dirname "$0")" && pwd)/softfp
	rm -rf "${WORK:?}/$what"
	mkdir -p "$WORK/$what/src"
	tar -xf "$TARBALL" -C "$WORK/$what/src" --strip-components=1 \
		--wildcards '*/soft-fp/*' '*/stdlib/longlong.h' \
		'*/sysdeps/mips/mips32/sfp-machine.h'
	cd "$WORK/$what/src"
	sha256sum -c --quiet "$here/SHA256SUMS" >> "$log" 2>&1 || fail
	# Its licence (LGPL-2.1-or-later with the exception that lets the
	# compiled routines be linked into any program): the header comment.
	mkdir -p "$PREFIX/share/licenses/softfp"
	sed -n '1,/\*\//p' soft-fp/soft-fp.h > "$PREFIX/share/licenses/softfp/LICENSE"
	cp sysdeps/mips/mips32/sfp-machine.h mips32-sfp-machine.h
	cp "$here/sfp-machine.h" stdlib/longlong.h .
	rm -f "$PREFIX/lib/libsoftfp.a"
	awk '$2 ~ /^soft-fp\/.*\.c$/ { print $2 }' "$here/SHA256SUMS" |
	while read -r f; do
		o=$(basename "$f" .c).o
		# shellcheck disable=SC2086 # flag lists, split on purpose
		run $musl_cc $OPT -I. -Isoft-fp -c "$f" -o "$o"
		run "$ar" rcs "$PREFIX/lib/libsoftfp.a" "$o"
	done
	;;
*)
	echo "usage: $0 musl|mbedtls|curl|softfp" >&2
	exit 64
	;;
esac
