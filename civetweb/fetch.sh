#!/bin/sh
# civetweb/fetch.sh: put civetweb's sources into civetweb/src and
# civetweb/include, verified and patched.
#
# The tarball is either the one named in civetweb/VERSION's neighbour
# SOURCE (Debian's .orig, fetched by deps/fetch.sh) or an upstream release
# tarball a user drops into deps/dl/ (CIVETWEB_TARBALL=path). Either way the
# files we compile are checked against civetweb/SHA256SUMS before our patches
# in civetweb/patches/ are applied, so both sources give the same build.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
top=$(dirname "$here")
version=$(cat "$here/VERSION")
stamp=$here/.fetched

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$(cat "$here/SHA256SUMS" "$here"/patches/*.patch | sha256sum)" ]; then
	exit 0
fi

if [ -n "${CIVETWEB_TARBALL:-}" ]; then
	tarball=$CIVETWEB_TARBALL
else
	file=civetweb_${version}+dfsg.orig.tar.xz
	"$top/deps/fetch.sh" civetweb "$file" \
		41dbfd68cd3b914ce440a5813f21058813b61a972600cc04fb8233a0d2d04fe4
	tarball=$top/deps/dl/$file
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
tar -xf "$tarball" -C "$tmp"
src=$(find "$tmp" -mindepth 1 -maxdepth 1 -type d | head -n 1)
if ! (cd "$src" && sha256sum -c --quiet "$here/SHA256SUMS"); then
	echo "civetweb/fetch.sh: $tarball does not match civetweb/SHA256SUMS" >&2
	exit 1
fi
for p in "$here"/patches/*.patch; do
	[ -f "$p" ] || continue
	patch -s -p1 -d "$src" < "$p"
done
rm -rf "$here/src" "$here/include"
mkdir -p "$here/src" "$here/include"
awk '{ print $2 }' "$here/SHA256SUMS" | while read -r f; do
	case $f in
	src/*|include/*) cp "$src/$f" "$here/$f" ;;
	esac
done
cp "$src/LICENSE.md" "$here/LICENSE.md"
cat "$here/SHA256SUMS" "$here"/patches/*.patch | sha256sum > "$stamp"
echo "civetweb $version ready in $here" >&2
