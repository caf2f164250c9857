#!/bin/sh
# tests/packaging/spool_test.sh: the spool sender as the systemd unit runs
# it, for smstools3 as Debian sets it up.
#
#   OTP_BIN=build/otp_demo tests/packaging/spool_test.sh    (as root)
#
# Debian's smstools keeps /var/spool/sms and its subdirectories owned by
# smsd:smsd, mode 3775 (setgid, sticky, group-writable). Here the same
# layout in a temporary directory, with numeric ids nobody else uses (no
# user or group is created): "smsd" is uid 4243 in group 4242, otp_demo
# uid 4240 (group 4241) with 4242 as a supplementary group, as the unit's
# spool.conf drop-in gives it, started with the unit's UMask=0077. A code
# requested over HTTP must land in outgoing/ as a file mode 0640 in group
# 4242, readable by smsd through that group alone and by no other user;
# and in a directory that is not setgid, otp_demo hands the file over to
# the directory's group itself. Root is needed to switch users (setpriv);
# as another user the test says so and checks nothing.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok spool: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL spool: $1${2:+: $2}"; }
expect() { if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi; }
finish() { echo "$pass passed, $fail failed"; [ "$fail" -eq 0 ]; exit; }

if [ "$(id -u)" != 0 ]; then
	echo "note: not root: the spool sender is not tested as another user"
	finish
fi
for t in setpriv curl; do
	command -v $t >/dev/null 2>&1 || { bad "$t is installed"; finish; }
done

OTPD=4240 OTPD_GROUP=4241 SMSD=4243 SMSD_GROUP=4242 OTHER=4244
tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-spool.XXXXXX")
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
chmod 0755 "$tmp"
cp "${OTP_BIN:-$PWD/otp_demo}" "$tmp/otp_demo"
chmod 0755 "$tmp/otp_demo"

# as UID GID [GROUPS] CMD...: CMD as that user, no capabilities.
as() {
	uid=$1 gid=$2 groups=--clear-groups
	[ -n "$3" ] && groups=--groups=$3
	shift 3
	setpriv --reuid="$uid" --regid="$gid" "$groups" --inh-caps=-all "$@"
}

# run_once SPOOL_PARENT: starts otp_demo as the unit would, requests one
# code for +12015550123 and stops it. Prints the message file's path.
run_once() {
	out=$1/outgoing
	: > "$tmp/d.err"
	# setpriv itself in the background, not as(): a function would run in
	# a subshell, and $! would not be the daemon, which would outlive us.
	setpriv --reuid=$OTPD --regid=$OTPD_GROUP --groups=$SMSD_GROUP \
		--inh-caps=-all env -i PATH=/usr/bin:/bin \
		OTP_LISTEN=127.0.0.1:0 OTP_SMS_PROVIDER=spool \
		OTP_SPOOL_DIR="$out" OTP_STATE_DIR= \
		sh -c 'umask 0077; exec "$0" -c /dev/null' "$tmp/otp_demo" \
		> /dev/null 2> "$tmp/d.err" &
	daemon=$!
	port= i=0
	while [ $i -lt 100 ] && [ -z "$port" ]; do
		port=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' \
			"$tmp/d.err" | head -n 1)
		[ -n "$port" ] || sleep 0.1
		i=$((i + 1))
	done
	if [ -n "$port" ]; then
		jar=$tmp/jar
		rm -f "$jar"
		csrf=$(curl -s -c "$jar" "http://127.0.0.1:$port/" |
			sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' | head -n 1)
		curl -s -b "$jar" -o /dev/null --data-urlencode "phone=+12015550123" \
			--data-urlencode "csrf=$csrf" "http://127.0.0.1:$port/request"
	fi
	kill "$daemon" 2>/dev/null
	wait "$daemon" 2>/dev/null
	echo $? > "$tmp/d.rc"
	daemon=
	find "$out" -type f -name 'otp_demo.*' | head -n 1
}

# check_file NAME PATH: what smstools3 needs, and nobody else may.
check_file() {
	name=$1 f=$2
	if [ -z "$f" ]; then
		bad "$name: a message file in outgoing/" "$(tail -n 5 "$tmp/d.err")"
		return
	fi
	ok "$name: a message file in outgoing/"
	expect "$name: mode 0640 despite UMask=0077" "$(stat -c %a "$f")" 640
	expect "$name: owner otp_demo, group smstools3's" \
		"$(stat -c %u:%g "$f")" "$OTPD:$SMSD_GROUP"
	# smsd reads it through the group alone (not a member of otp_demo's).
	got=$(as $SMSD $SMSD_GROUP "" head -n 1 "$f" 2>&1)
	expect "$name: smsd (group $SMSD_GROUP only) reads it" "$got" "To: 12015550123"
	if as $OTHER $OTHER "" cat "$f" > /dev/null 2>&1; then
		bad "$name: another user cannot read it"
	else
		ok "$name: another user cannot read it"
	fi
	expect "$name: otp_demo itself stopped, exit 0 on SIGTERM" "$(cat "$tmp/d.rc")" 0
	if grep -q 'stays in group\|send_failed' "$tmp/d.err"; then
		bad "$name: no warning" "$(grep 'stays in group\|send_failed' "$tmp/d.err")"
	else
		ok "$name: no warning"
	fi
}

# Debian's layout: setgid, sticky, group-writable, owned by smsd.
deb=$tmp/deb/sms
mkdir -p "$deb/outgoing"
chown $SMSD:$SMSD_GROUP "$deb" "$deb/outgoing"
chmod 3775 "$deb" "$deb/outgoing"
check_file "Debian layout (3775 smsd:smsd)" "$(run_once "$deb")"
if [ -z "$(find "$deb" -name '.*.tmp')" ]; then
	ok "no temporary file left in the spool's parent"
else
	bad "no temporary file left in the spool's parent"
fi

# A spool without setgid: otp_demo hands the file to the directory's group.
plain=$tmp/plain/sms
mkdir -p "$plain/outgoing"
chown $SMSD:$SMSD_GROUP "$plain" "$plain/outgoing"
chmod 0770 "$plain" "$plain/outgoing"
check_file "no setgid (0770 smsd:smsd)" "$(run_once "$plain")"

# Without the group (no drop-in), the send fails, loudly, and leaves nothing.
: > "$tmp/d.err"
none=$tmp/none/sms
mkdir -p "$none/outgoing"
chown $SMSD:$SMSD_GROUP "$none" "$none/outgoing"
chmod 3775 "$none" "$none/outgoing"
OTPD_SAVE=$SMSD_GROUP
SMSD_GROUP=$OTPD_GROUP # run_once's supplementary group: its own only
f=$(run_once "$none")
SMSD_GROUP=$OTPD_SAVE
expect "not in smstools3's group: no file" "$f" ""
if grep -q 'send_failed.*reason="spool .*Permission denied' "$tmp/d.err"; then
	ok "not in smstools3's group: send_failed with the reason"
else
	bad "not in smstools3's group: send_failed with the reason" \
	    "$(tail -n 3 "$tmp/d.err")"
fi
finish
