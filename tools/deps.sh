#!/bin/sh
# tools/deps.sh build|test|static|bench|proof
# Makes sure the Debian packages a make target needs are installed. As root
# with apt-get it installs what is missing; otherwise it prints the exact
# command to run and fails.
set -eu

build="gcc make libc6-dev pkg-config patch xz-utils ca-certificates
       libmbedtls-dev libcurl4-openssl-dev"
test="$build libcmocka-dev openssl chromium nodejs npm python3 procps
      nginx systemd busybox curl"
static="$build bzip2 file qemu-user-static gcc-aarch64-linux-gnu
        gcc-arm-linux-gnueabihf gcc-arm-linux-gnueabi gcc-mipsel-linux-gnu
        gcc-mips-linux-gnu glibc-source openssl python3"
bench="$build wrk procps"
proof="$test wrk clang libclang-rt-14-dev valgrind"

case ${1:-build} in
build) want=$build ;;
test) want=$test ;;
static) want=$static ;;
bench) want=$bench ;;
proof) want=$proof ;;
*) echo "usage: $0 build|test|static|bench|proof" >&2; exit 64 ;;
esac

missing=
for p in $want; do
	case $p in
	# a tool already on PATH (say a pyenv python3) is good enough
	python3|nodejs|npm)
		cmd=$p; [ "$p" = nodejs ] && cmd=node
		command -v "$cmd" >/dev/null 2>&1 && continue ;;
	esac
	status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
	case $status in
	*" installed") ;;
	*) missing="$missing $p" ;;
	esac
done
[ -z "$missing" ] && exit 0

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
	echo "deps: installing$missing" >&2
	export DEBIAN_FRONTEND=noninteractive
	apt-get update -q >&2
	# shellcheck disable=SC2086
	apt-get install -y -q --no-install-recommends $missing >&2
	exit 0
fi
echo "deps: missing Debian packages:$missing" >&2
echo "deps: run: sudo apt-get install$missing" >&2
exit 1
