#!/bin/sh
# packaging/debian/copyright.sh dynamic|static LICENSES_DIR > copyright
#
# The package's machine-readable copyright file (DEP-5), with every
# component the binary bundles: otp_demo and civetweb always; for a static
# binary also mbed TLS, curl and musl, from the licence files that
# deps/static/build.sh kept in LICENSES_DIR (build/static/ARCH/prefix/
# share/licenses). Licence texts are copied from those files (and from
# LICENSE), never typed in here; Apache-2.0 and the GPL refer to
# /usr/share/common-licenses, as Debian policy asks.
set -eu
variant=$1 lic=${2:-}
top=$(cd "$(dirname "$0")/../.." && pwd)

# body FILE: a licence text as a DEP-5 field body (one space in front of
# each line, "." for an empty line).
body() {
	sed -e 's/\r$//' -e 's/[[:blank:]]*$//' -e 's/^$/./' -e 's/^/ /' "$1"
}

# The MIT text of our LICENSE without its title and copyright line.
sed -n '/^Permission/,$p' "$top/LICENSE" > "${TMPDIR:-/tmp}/otp-expat.$$"
trap 'rm -f "${TMPDIR:-/tmp}/otp-expat.$$"' EXIT

cat <<EOF
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: otp_demo
Comment: Built from the otp_demo repository by \`make deb\`.
 /usr/sbin/otp_demo contains civetweb$(
	[ "$variant" = static ] && printf ', mbed TLS, curl and musl (a static binary)')
 besides otp_demo's own code; \`otp_demo --licenses\` prints the same
 notices.

Files: *
Copyright: $(sed -n 's/^Copyright (c) //p' "$top/LICENSE")
License: Expat

Files: civetweb/*
Copyright: 2013-2021 The CivetWeb developers
 2004-2013 Sergey Lyubka
 2013 No Face Press, LLC (Thomas Davis)
 2013 F-Secure Corporation
License: Expat
Comment: civetweb $(cat "$top/civetweb/VERSION"), compiled into the binary with
 otp_demo's patches (civetweb/patches/). Its LICENSE.md also lists the
 licences of optional parts (Lua, SQLite, Duktape and others), none of
 which is built here.
EOF

if [ "$variant" = static ]; then
	for f in mbedtls/LICENSE curl/COPYING musl/COPYRIGHT; do
		[ -r "$lic/$f" ] || { echo "$0: $lic/$f missing" >&2; exit 1; }
	done
	cat <<EOF

Files: mbedtls/*
Copyright: The Mbed TLS Contributors
License: Apache-2.0 or GPL-2+
Comment: mbed TLS, statically linked (deps/mbedtls_config.h). otp_demo
 takes it under Apache-2.0.

Files: curl/*
Copyright: $(sed -n 's/^Copyright (c) //p' "$lic/curl/COPYING" | head -n 1)
 $(sed -n '/^Copyright (c) /{n;p;}' "$lic/curl/COPYING" | head -n 1)
License: curl
Comment: libcurl, statically linked, HTTPS only.

Files: musl/*
Copyright: $(sed -n 's/^Copyright © //p' "$lic/musl/COPYRIGHT" | head -n 1)
License: Expat
Comment: musl libc, statically linked. Its COPYRIGHT file (below) also
 names the authors and the few files under other permissive terms:
 .
$(body "$lic/musl/COPYRIGHT")

License: Apache-2.0
 On Debian systems, the complete text of the Apache License 2.0 is in
 /usr/share/common-licenses/Apache-2.0.

License: GPL-2+
 This program is free software; you can redistribute it and/or modify it
 under the terms of the GNU General Public License as published by the Free
 Software Foundation; either version 2 of the License, or (at your option)
 any later version.
 .
 On Debian systems, the complete text of the GNU General Public License
 version 2 is in /usr/share/common-licenses/GPL-2.

License: curl
$(body "$lic/curl/COPYING")
EOF
fi

cat <<EOF

License: Expat
$(body "${TMPDIR:-/tmp}/otp-expat.$$")
EOF
