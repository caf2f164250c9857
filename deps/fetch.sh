#!/bin/sh
# deps/fetch.sh SOURCE_PACKAGE FILE SHA256
#
# Puts FILE into deps/dl/ and checks it against SHA256. A file already there
# (for example an upstream release tarball a user downloaded by hand) is used
# as it is, if its checksum matches. Otherwise the Debian source package is
# looked up through a private apt state (the machine's own apt configuration
# is not touched): a deb-src entry for trixie is derived from the machine's
# debian.sources, so no mirror host name lives in this repository.
# apt-get source can fail on a missing .dsc while the .orig tarball is still
# served, so only the one file we need is downloaded, by apt's own helper,
# which verifies the checksum as it downloads.
set -eu

pkg=$1 file=$2 sum=$3
top=$(cd "$(dirname "$0")/.." && pwd)
dl=$top/deps/dl
mkdir -p "$dl"

check() {
	echo "$sum  $1" | sha256sum -c --status 2>/dev/null
}

if [ -f "$dl/$file" ]; then
	if check "$dl/$file"; then
		exit 0
	fi
	echo "fetch: $dl/$file: sha256 mismatch, want $sum" >&2
	exit 1
fi

sources=${DEBIAN_SOURCES:-/etc/apt/sources.list.d/debian.sources}
if [ ! -r "$sources" ]; then
	echo "fetch: $file missing and $sources not readable;" \
	     "download $file (sha256 $sum) into $dl by hand" >&2
	exit 1
fi

state=$dl/.apt
mkdir -p "$state/parts" "$state/lists/partial" "$state/cache/archives/partial"
: > "$state/empty.list"
sed -e 's/^Types:.*/Types: deb-src/' \
    -e 's/^Suites:.*-security.*/Suites: trixie-security/' \
    -e '/^Suites:.*-security/!s/^Suites:.*/Suites: trixie/' \
    "$sources" > "$state/parts/trixie-src.sources"
apt_opts="-o Dir::Etc::SourceList=$state/empty.list
	  -o Dir::Etc::SourceParts=$state/parts
	  -o Dir::State::Lists=$state/lists
	  -o Dir::Cache=$state/cache
	  -o APT::Sandbox::User=root"

if [ ! -f "$state/updated" ]; then
	# shellcheck disable=SC2086
	apt-get -q $apt_opts update >&2
	touch "$state/updated"
fi
# shellcheck disable=SC2086
uri=$(apt-get -q $apt_opts source --print-uris "$pkg" 2>/dev/null |
	awk -v f="$file" '$2 == f { gsub("\x27", "", $1); print $1 }')
if [ -z "$uri" ]; then
	echo "fetch: no $file in the trixie sources of $pkg" >&2
	exit 1
fi
echo "fetch: $file" >&2
/usr/lib/apt/apt-helper download-file "$uri" "$dl/$file.part" "SHA256:$sum" >&2
mv "$dl/$file.part" "$dl/$file"
check "$dl/$file"
