#!/bin/sh
# tools/deps.sh build|redis|test|attack|static|bench|proof|deb|list SET
# Makes sure the Debian packages a make target needs are installed. As root
# with apt-get it installs what is missing; otherwise it prints the exact
# command to run and fails. "list SET" prints a set's packages.
#
# Another apt (an unattended upgrade, a second install) may hold apt's
# locks: it waits for them, up to APT_LOCK_WAIT seconds (600), then says
# which lock and gives up. Two of our own calls at once (make -j) take
# turns on a lock file of ours.
set -eu

build="gcc make libc6-dev pkg-config patch xz-utils ca-certificates
       libmbedtls-dev libcurl4-openssl-dev"
# redis: make WITH_REDIS=1 (and make test, which builds that binary too)
# links hiredis; the tests start Debian's redis-server themselves, on a
# unix socket (the package also enables redis-server.service on a host
# that runs systemd, as nginx's does).
redis="$build libhiredis-dev"
# prometheus: only for promtool (make integration checks /metrics with
# it). Like nginx, on a host that runs systemd its package enables and
# starts its daemon (prometheus.service, port 9090).
test="$build libcmocka-dev openssl chromium nodejs npm python3 procps
      python3-phonenumbers nginx caddy systemd busybox curl valgrind strace
      prometheus libhiredis-dev redis-server"
static="$build bzip2 file qemu-user-static gcc-aarch64-linux-gnu
        gcc-arm-linux-gnueabihf gcc-arm-linux-gnueabi gcc-mipsel-linux-gnu
        gcc-mips-linux-gnu glibc-source openssl python3"
# attack: make test-attack-transport and test-desync (mk/attack.mk); the
# desync suite drives the real nginx and HAProxy.
attack="$test haproxy"
bench="$build wrk procps libhiredis-dev redis-server"
deb="$build libhiredis-dev dpkg-dev lintian curl"
proof="$test wrk clang libclang-rt-14-dev valgrind"

set_of() {
	case $1 in
	build) echo "$build" ;;
	redis) echo "$redis" ;;
	test) echo "$test" ;;
	attack) echo "$attack" ;;
	static) echo "$static" ;;
	bench) echo "$bench" ;;
	deb) echo "$deb" ;;
	proof) echo "$proof" ;;
	*) echo "usage: $0 build|redis|test|attack|static|bench|proof|deb|list SET" >&2
	   exit 64 ;;
	esac
}

if [ "${1:-}" = list ]; then
	set_of "${2:-build}" | tr -s ' \n' '\n\n' | sed '/^$/d'
	exit 0
fi
want=$(set_of "${1:-build}")

# Prints the packages of $want that are not installed, on one line.
missing() {
	have=$(dpkg-query -W -f='${Package} ${db:Status-Abbrev}\n' 2>/dev/null |
	       awk '$2 == "ii" { print $1 }')
	out=
	for p in $want; do
		case $p in
		# a tool already on PATH (say a pyenv python3) is good enough
		python3|nodejs|npm)
			cmd=$p; [ "$p" = nodejs ] && cmd=node
			command -v "$cmd" >/dev/null 2>&1 && continue ;;
		esac
		printf '%s\n' "$have" | grep -qx "$p" || out="$out $p"
	done
	echo "$out"
}

[ -z "$(missing)" ] && exit 0

if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
	echo "deps: missing Debian packages:$(missing)" >&2
	echo "deps: run: sudo apt-get install$(missing)" >&2
	exit 1
fi

# Our own calls take turns; the second finds everything installed.
lock=${TMPDIR:-/tmp}/otp_demo-deps.lock
if command -v flock >/dev/null 2>&1; then
	exec 9>"$lock"
	flock 9
fi
todo=$(missing)
[ -z "$todo" ] && exit 0

wait_max=${APT_LOCK_WAIT:-600}
log=$(mktemp)
trap 'rm -f "$log"' EXIT

# apt_retry CMD...: runs an apt-get command, and while it fails only
# because another process holds an apt lock, waits and tries again.
apt_retry() {
	waited=0
	while :; do
		if "$@" > "$log" 2>&1; then
			cat "$log" >&2
			return 0
		fi
		if ! grep -q 'Could not get lock\|Unable to lock' "$log"; then
			cat "$log" >&2
			return 1
		fi
		if [ "$waited" -ge "$wait_max" ]; then
			cat "$log" >&2
			echo "deps: apt is still locked by another process after" \
			     "${wait_max} s (see above); try again when it is" \
			     "done, or set APT_LOCK_WAIT" >&2
			return 1
		fi
		[ "$waited" -eq 0 ] && echo "deps: waiting for another apt" \
			"process to finish ($(grep -o 'held by process [0-9]* ([^)]*)' \
			"$log" | head -n 1))" >&2
		sleep 5
		waited=$((waited + 5))
	done
}

echo "deps: installing$todo" >&2
export DEBIAN_FRONTEND=noninteractive
apt_retry apt-get -q -o DPkg::Lock::Timeout=60 update
# shellcheck disable=SC2086
apt_retry apt-get install -y -q --no-install-recommends \
	-o DPkg::Lock::Timeout=60 $todo
