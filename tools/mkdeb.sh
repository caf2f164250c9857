#!/bin/sh
# tools/mkdeb.sh: assembles the otp-demo .deb from a built binary, with
# dpkg-deb alone (no debhelper). mk/deb.mk calls it; the environment says
# what to package:
#
#   BIN        the otp_demo binary (stripped here)
#   ARCH       the Debian architecture (amd64, arm64, armhf)
#   VARIANT    dynamic (system mbedTLS and libcurl: Depends from
#              dpkg-shlibdeps) or static (make static: Depends on nothing
#              but adduser)
#   LICENSES   static only: build/static/ARCH/prefix/share/licenses
#   VERSION    the upstream version; the package is VERSION-1
#   OUT        the directory the .deb is written to
#   STRIP      the strip for ARCH (default: strip)
#   MAINTAINER, HOMEPAGE   the control fields (HOMEPAGE: none if unset)
#
# The tree: /usr/sbin/otp_demo; /etc/otp_demo/config.cfg (a conffile,
# config.cfg.example, 0640: postinst gives it to group otp_demo); the
# systemd unit in /lib/systemd/system with its paths set; the man page;
# /usr/share/doc/otp-demo with README, copyright (DEP-5, every bundled
# component), changelog and examples (config, systemd drop-ins). The
# maintainer scripts create the system user and clean up on purge.
# Dates come from the last commit, so the same commit gives the same .deb.
set -eu
: "${BIN:?}" "${ARCH:?}" "${VARIANT:?}" "${VERSION:?}" "${OUT:?}"
STRIP=${STRIP:-strip}
top=$(cd "$(dirname "$0")/.." && pwd)
pkgdir=$top/packaging/debian
pkg=otp-demo
debver=$VERSION-1
maintainer=${MAINTAINER:-otp_demo maintainers <maintainers@users.noreply.r-seed-dc15b037.example>}
: "${SOURCE_DATE_EPOCH:=$(git -C "$top" log -1 --format=%ct 2>/dev/null || date +%s)}"
export SOURCE_DATE_EPOCH

work=$(mktemp -d "${TMPDIR:-/tmp}/otp-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/debian/$pkg
doc=$root/usr/share/doc/$pkg
umask 022
mkdir -p "$root/DEBIAN" "$root/usr/sbin" "$root/etc/otp_demo" \
	"$root/lib/systemd/system" "$root/usr/share/man/man8" \
	"$doc/examples/systemd"

# The binary, without symbols or notes (as dh_strip would).
cp "$BIN" "$root/usr/sbin/otp_demo"
$STRIP --remove-section=.comment --remove-section=.note --strip-unneeded \
	"$root/usr/sbin/otp_demo"
chmod 0755 "$root/usr/sbin/otp_demo"

# The config the service reads: a conffile, not readable by others.
install -m 0640 "$top/config.cfg.example" "$root/etc/otp_demo/config.cfg"

sed -e 's|/usr/local/bin/otp_demo|/usr/sbin/otp_demo|g' \
    -e 's|file:/usr/local/share/doc/otp_demo/README.md|man:otp_demo(8)|' \
	"$top/packaging/systemd/otp_demo.service" \
	> "$root/lib/systemd/system/otp_demo.service"
chmod 0644 "$root/lib/systemd/system/otp_demo.service"

sed "s/@VERSION@/$VERSION/" "$pkgdir/otp_demo.8" |
	gzip -9n > "$root/usr/share/man/man8/otp_demo.8.gz"

# Documentation: policy wants anything over 4 KiB compressed.
gzip -9n < "$top/README.md" > "$doc/README.md.gz"
gzip -9n < "$top/config.cfg.example" > "$doc/examples/config.cfg.example.gz"
for f in "$top"/packaging/systemd/otp_demo.service.d/*.conf; do
	install -m 0644 "$f" "$doc/examples/systemd/"
done
sh "$pkgdir/copyright.sh" "$VARIANT" "${LICENSES:-}" > "$doc/copyright"
date=$(date -u -R -d "@$SOURCE_DATE_EPOCH")
{
	echo "$pkg ($debver) unstable; urgency=medium"
	echo
	echo "  * Built from the otp_demo repository, version $VERSION"
	echo "    ($(git -C "$top" describe --always --dirty 2>/dev/null || echo unknown))."
	echo
	echo " -- $maintainer  $date"
} | gzip -9n > "$doc/changelog.Debian.gz"
# What lintian says on purpose, each with its reason.
mkdir -p "$root/usr/share/lintian/overrides"
cat "$pkgdir/lintian-overrides" > "$root/usr/share/lintian/overrides/$pkg"
[ "$VARIANT" = dynamic ] || cat "$pkgdir/lintian-overrides.static" \
	>> "$root/usr/share/lintian/overrides/$pkg"
chmod 0644 "$root/usr/share/lintian/overrides/$pkg"

# Maintainer scripts and control.
for s in postinst prerm postrm; do
	install -m 0755 "$pkgdir/$s" "$root/DEBIAN/$s"
done
echo /etc/otp_demo/config.cfg > "$root/DEBIAN/conffiles"
if [ "$VARIANT" = dynamic ]; then
	# dpkg-shlibdeps wants a debian/control beside the tree it reads.
	printf 'Source: %s\n\nPackage: %s\nArchitecture: any\n' "$pkg" "$pkg" \
		> "$work/debian/control"
	libs=$(cd "$work" && dpkg-shlibdeps -O -e "debian/$pkg/usr/sbin/otp_demo" \
		2> "$work/shlibdeps.err" | sed -n 's/^shlibs:Depends=//p')
	grep -v 'should already be installed' "$work/shlibdeps.err" >&2 || true
	[ -n "$libs" ] || { echo "$0: dpkg-shlibdeps found nothing" >&2; exit 1; }
	depends="adduser, $libs"
else
	depends=adduser
fi
# Recommends nothing: the CA bundle matters only for an HTTPS sender.
(cd "$root" && find usr lib -type f -exec md5sum {} + | sort -k 2) \
	> "$root/DEBIAN/md5sums"
size=$(du -k -s --exclude=DEBIAN "$root" | cut -f1)
sed -e "s/@VERSION@/$debver/" -e "s/@ARCH@/$ARCH/" \
    -e "s|@MAINTAINER@|$maintainer|" -e "s/@SIZE@/$size/" \
    -e "s/@DEPENDS@/$depends/" \
	"$pkgdir/control.in" > "$root/DEBIAN/control"
[ -z "${HOMEPAGE:-}" ] || echo "Homepage: $HOMEPAGE" >> "$root/DEBIAN/control"
# Every file's time is the commit's, so the same tree gives the same .deb.
find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +

mkdir -p "$OUT"
deb=$OUT/${pkg}_${debver}_$ARCH.deb
dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >&2
echo "$deb"
