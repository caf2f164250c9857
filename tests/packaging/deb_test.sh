#!/bin/sh
# tests/packaging/deb_test.sh DEB: the otp-demo package on this machine.
#
#   make test-deb        (as root; installs and purges system-wide)
#
# 1. dpkg -i: the binary, the conffile /etc/otp_demo/config.cfg (0640
#    root:otp_demo), the system user and group, the placeholder key
#    (0600), the unit (enabled, systemd-analyze verify clean), docs,
#    copyright and man page;
# 2. otp_demo -t on the installed config, as root and as the service user;
# 3. the installed binary as the service user, the way the unit runs it
#    (UMask=0077, the key as a credential file, the state directory):
#    a code requested over HTTP, read from the binary's stdout (console
#    sender), a wrong code refused, the right one verified;
# 4. a changed conffile survives a reinstall, and its group stays;
# 5. dpkg -r keeps only the conffile (and the user); dpkg --purge leaves
#    nothing: no file of the package, no key, no state, no user, group,
#    statoverride or unit state.
# The machine must not have otp-demo or a user otp_demo before.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
set -u
deb=${1:?usage: deb_test.sh PACKAGE.deb}
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok deb: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL deb: $1${2:+: $2}"; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi; }
check() { # check NAME COMMAND...: ok if COMMAND succeeds
	name=$1; shift
	if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

[ "$(id -u)" = 0 ] || { bad "runs as root (it installs a package)"; finish; }
[ -f "$deb" ] || { bad "the package $deb exists"; finish; }
for t in dpkg curl setpriv; do
	command -v $t >/dev/null 2>&1 || { bad "$t is installed"; finish; }
done
if dpkg-query -W -f='${db:Status-Abbrev}' otp-demo 2>/dev/null | grep -q '^.i' ||
    getent passwd otp_demo >/dev/null; then
	bad "a machine without otp-demo and user otp_demo" "purge it first"
	finish
fi
deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-debtest.XXXXXX")
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
chmod 0755 "$tmp"
# dpkg_do LOG ARGS...: dpkg ARGS, waiting (up to 10 minutes) while
# another apt or dpkg holds the lock, as tools/deps.sh does.
dpkg_do() {
	log=$1 waited=0
	shift
	while :; do
		dpkg "$@" > "$log" 2>&1 && return 0
		grep -q 'lock' "$log" && [ $waited -lt 600 ] || return 1
		sleep 5
		waited=$((waited + 5))
	done
}
dpkg-deb -c "$deb" | awk '{ print substr($6, 2) }' | sed 's|/$||' |
	grep -v '^$' > "$tmp/files"

# ---- 1. install ---------------------------------------------------------------
if dpkg_do "$tmp/install.log" -i "$deb"; then
	ok "dpkg -i"
else
	bad "dpkg -i" "$(tail -n 10 "$tmp/install.log")"
	finish
fi
expect "status installed" "$(dpkg-query -W -f='${db:Status-Abbrev}' otp-demo)" "ii "
own() { stat -c '%a %U:%G' "$1" 2>/dev/null; }
expect "/usr/sbin/otp_demo" "$(own /usr/sbin/otp_demo)" "755 root:root"
expect "config.cfg: 0640 root:otp_demo" "$(own /etc/otp_demo/config.cfg)" \
	"640 root:otp_demo"
check "config.cfg is a conffile" sh -c \
	"dpkg-query -W -f='\${Conffiles}' otp-demo | grep -q ' /etc/otp_demo/config.cfg '"
check "config.cfg is config.cfg.example" sh -c \
	"zcat /usr/share/doc/otp-demo/examples/config.cfg.example.gz | cmp -s - /etc/otp_demo/config.cfg"
user=$(getent passwd otp_demo)
uid=$(echo "$user" | cut -d: -f3)
check "system user otp_demo (uid below 1000)" test -n "$uid" -a "${uid:-1000}" -lt 1000
expect "its home and shell" "$(echo "$user" | cut -d: -f6-)" \
	"/nonexistent:/usr/sbin/nologin"
check "system group otp_demo" getent group otp_demo
expect "api_key: placeholder, 0600 root" \
	"$(own /etc/otp_demo/api_key) $(cat /etc/otp_demo/api_key 2>/dev/null)" \
	"600 root:root YOUR_API_KEY"
unit=/lib/systemd/system/otp_demo.service
check "unit installed" grep -qx 'ExecStart=/usr/sbin/otp_demo -c /etc/otp_demo/config.cfg' "$unit"
check "unit enabled (multi-user.target)" \
	test -L /etc/systemd/system/multi-user.target.wants/otp_demo.service
if command -v systemd-analyze >/dev/null 2>&1; then
	systemd-analyze verify "$unit" > "$tmp/verify.log" 2>&1
	rc=$?
	if [ $rc -eq 0 ] && ! grep -q 'otp_demo' "$tmp/verify.log"; then
		ok "systemd-analyze verify on the installed unit"
	else
		bad "systemd-analyze verify on the installed unit" "$(cat "$tmp/verify.log")"
	fi
fi
for f in copyright changelog.Debian.gz README.md.gz examples/systemd/spool.conf \
	examples/systemd/serial.conf; do
	check "doc: $f" test -s "/usr/share/doc/otp-demo/$f"
done
check "copyright is DEP-5" grep -q '^Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/' \
	/usr/share/doc/otp-demo/copyright
check "copyright names civetweb" grep -q '^Files: civetweb/\*' /usr/share/doc/otp-demo/copyright
check "man page" test -s /usr/share/man/man8/otp_demo.8.gz
check "otp_demo --licenses" sh -c "/usr/sbin/otp_demo --licenses | grep -q '^  civetweb '"

# ---- 2. otp_demo -t ----------------------------------------------------------------
expect "otp_demo -t on the installed config (root)" \
	"$(OTP_STATE_DIR= /usr/sbin/otp_demo -t -c /etc/otp_demo/config.cfg 2>/dev/null; echo "rc=$?")" \
	"configuration OK
rc=0"
# as_user CMD...: CMD as the service user, with its groups, no capabilities.
as_user() {
	setpriv --reuid=otp_demo --regid=otp_demo --init-groups --inh-caps=-all "$@"
}
expect "otp_demo -t as the service user (config through its group)" \
	"$(as_user env OTP_STATE_DIR= /usr/sbin/otp_demo -t -c /etc/otp_demo/config.cfg 2>/dev/null; echo "rc=$?")" \
	"configuration OK
rc=0"
if as_user cat /etc/otp_demo/api_key > /dev/null 2>&1; then
	bad "the service user cannot read api_key itself (only as a credential)"
else
	ok "the service user cannot read api_key itself (only as a credential)"
fi

# ---- 3. the flow, as the unit runs it ---------------------------------------------
# What systemd would set up: the credential (a copy only the user reads),
# the state directory, the environment of the unit; LISTEN on a free port.
mkdir -p "$tmp/cred" "$tmp/state"
cp /etc/otp_demo/api_key "$tmp/cred/api_key"
chown -R otp_demo:otp_demo "$tmp/cred" "$tmp/state"
chmod 0700 "$tmp/cred" "$tmp/state"
: > "$tmp/d.out"
: > "$tmp/d.err"
# setpriv itself in the background (not as_user: a function would run in
# a subshell, whose pid is not the daemon's).
setpriv --reuid=otp_demo --regid=otp_demo --init-groups --inh-caps=-all \
	env -i PATH=/usr/bin:/bin OTP_API_KEY_FILE="$tmp/cred/api_key" \
	OTP_STATE_DIR="$tmp/state" OTP_LISTEN=127.0.0.1:0 \
	sh -c 'umask 0077; cd "$OTP_STATE_DIR" && exec /usr/sbin/otp_demo -c /etc/otp_demo/config.cfg' \
	> "$tmp/d.out" 2> "$tmp/d.err" &
daemon=$!
port= i=0
while [ $i -lt 100 ] && [ -z "$port" ]; do
	port=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' \
		"$tmp/d.err" | head -n 1)
	[ -n "$port" ] || sleep 0.1
	i=$((i + 1))
done
if [ -z "$port" ]; then
	bad "the installed binary starts as the service user" "$(cat "$tmp/d.err")"
else
	ok "the installed binary starts as the service user"
	expect "it runs as otp_demo" "$(ps -o user= -p "$daemon" 2>/dev/null ||
		stat -c %U "/proc/$daemon")" otp_demo
	check "console sender announced" grep -q 'console sender' "$tmp/d.err"
	jar=$tmp/jar url=http://127.0.0.1:$port
	csrf() { sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' "$1" | head -n 1; }
	curl -s -c "$jar" -o "$tmp/index.html" "$url/"
	curl -s -b "$jar" -c "$jar" -o "$tmp/verify.html" \
		--data-urlencode "phone=+12015550123" \
		--data-urlencode "csrf=$(csrf "$tmp/index.html")" "$url/request"
	n=0
	while [ $n -lt 50 ] && ! grep -q '^SMS to +12015550123: ' "$tmp/d.out"; do
		sleep 0.1
		n=$((n + 1))
	done
	code=$(sed -n 's/^SMS to +12015550123: .*\b\([0-9]\{6\}\)$/\1/p' "$tmp/d.out" | tail -n 1)
	if [ -n "$code" ]; then
		ok "the code arrives on the binary's stdout"
	else
		bad "the code arrives on the binary's stdout" "$(cat "$tmp/d.out")"
	fi
	# the same code with its last digit changed
	last=${code#"${code%?}"}
	wrong=${code%?}$(( (${last:-0} + 1) % 10 ))
	curl -s -b "$jar" -c "$jar" -o "$tmp/wrong.html" -w '%{http_code}' \
		--data-urlencode "token=$wrong" \
		--data-urlencode "csrf=$(csrf "$tmp/verify.html")" "$url/verify" \
		> "$tmp/wrong.status"
	if ! grep -q 'is verified' "$tmp/wrong.html"; then
		ok "a wrong code is refused ($(cat "$tmp/wrong.status"))"
	else
		bad "a wrong code is refused"
	fi
	[ -s "$tmp/wrong.html" ] && cp "$tmp/wrong.html" "$tmp/verify.html"
	st=$(curl -s -b "$jar" -c "$jar" -o "$tmp/ok.html" -w '%{http_code}' \
		--data-urlencode "token=$code" \
		--data-urlencode "csrf=$(csrf "$tmp/verify.html")" "$url/verify")
	if [ "$st" = 200 ] && grep -q 'is verified' "$tmp/ok.html"; then
		ok "the right code: verified"
	else
		bad "the right code: verified" "status $st $(head -c 300 "$tmp/ok.html")"
	fi
	check "state: session.key made by the service user, 0600" sh -c \
		"[ \"\$(stat -c '%a %U' '$tmp/state/session.key')\" = '600 otp_demo' ]"
	if grep -q "$code" "$tmp/d.err"; then
		bad "the code is not in the log"
	else
		ok "the code is not in the log"
	fi
fi
if [ -n "$daemon" ]; then
	kill "$daemon" 2>/dev/null
	wait "$daemon"
	expect "exits 0 on SIGTERM" "$?" 0
	daemon=
fi
rm -rf "$tmp/cred" "$tmp/state"

# ---- 4. a reinstall keeps a changed conffile -----------------------------------------
echo "# changed by deb_test.sh" >> /etc/otp_demo/config.cfg
cp /etc/otp_demo/config.cfg "$tmp/changed.cfg"
if dpkg_do "$tmp/reinstall.log" -i "$deb"; then
	ok "dpkg -i again (upgrade path)"
else
	bad "dpkg -i again (upgrade path)" "$(tail -n 5 "$tmp/reinstall.log")"
fi
check "the changed config.cfg is kept" cmp -s "$tmp/changed.cfg" /etc/otp_demo/config.cfg
expect "... still 0640 root:otp_demo" "$(own /etc/otp_demo/config.cfg)" "640 root:otp_demo"
expect "... the same user" "$(id -u otp_demo 2>/dev/null)" "$uid"

# ---- 5. remove, then purge ---------------------------------------------------------
if dpkg_do "$tmp/remove.log" -r otp-demo; then ok "dpkg -r"; else
	bad "dpkg -r" "$(tail -n 5 "$tmp/remove.log")"; fi
check "remove: the binary is gone" test ! -e /usr/sbin/otp_demo
check "remove: the conffile stays (policy)" test -f /etc/otp_demo/config.cfg
if dpkg_do "$tmp/purge.log" --purge otp-demo; then ok "dpkg --purge"; else
	bad "dpkg --purge" "$(tail -n 5 "$tmp/purge.log")"; fi
left=
while read -r f; do
	[ -n "$f" ] || continue
	# directories the system has anyway (/etc, /usr/share/doc, ...)
	[ -d "/$f" ] && dpkg -S "/$f" > /dev/null 2>&1 && continue
	[ -d "/$f" ] && [ "$f" != etc/otp_demo ] && [ "$f" != usr/share/doc/otp-demo ] &&
		[ "$f" != usr/share/doc/otp-demo/examples ] &&
		[ "$f" != usr/share/doc/otp-demo/examples/systemd ] && continue
	[ -e "/$f" ] || [ -L "/$f" ] && left="$left /$f"
done < "$tmp/files"
expect "purge: no file of the package left" "$left" ""
for p in /etc/otp_demo /var/lib/otp_demo /var/lib/private/otp_demo \
	/etc/systemd/system/multi-user.target.wants/otp_demo.service \
	/var/lib/systemd/deb-systemd-helper-enabled/otp_demo.service.dsh-also \
	/var/lib/systemd/deb-systemd-helper-enabled/multi-user.target.wants/otp_demo.service \
	/var/lib/systemd/deb-systemd-helper-masked/otp_demo.service; do
	check "purge: $p gone" sh -c "[ ! -e '$p' ] && [ ! -L '$p' ]"
done
check "purge: no user otp_demo" sh -c '! getent passwd otp_demo'
check "purge: no group otp_demo" sh -c '! getent group otp_demo'
check "purge: no statoverride" sh -c '! dpkg-statoverride --list | grep -q otp_demo'
check "purge: dpkg knows no otp-demo" sh -c \
	"! dpkg-query -W -f='\${db:Status-Abbrev}' otp-demo 2>/dev/null | grep -q '^.[^n]'"
finish
