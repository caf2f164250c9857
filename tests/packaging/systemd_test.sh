#!/bin/sh
# tests/packaging/systemd_test.sh: `make install` into a DESTDIR, then
# Debian's systemd-analyze on the installed unit.
#
#   OTP_BIN=build/otp_demo tests/packaging/systemd_test.sh
#
# - make install (PREFIX=/usr/local, and PREFIX=/usr) puts the binary, the
#   unit and the example configs where they belong, with the unit's paths
#   following PREFIX;
# - `systemd-analyze verify` passes without a word about the unit (on a
#   copy whose ExecStart points at the DESTDIR binary, since verify wants
#   the binary to exist);
# - the unit has the hardening the README promises, and
#   `systemd-analyze security --offline=yes` rates it at most 2.0;
# - the daemon takes what the unit gives it: the key from a credential
#   file (OTP_API_KEY_FILE), OTP_STATE_DIR, -c on the installed example.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
set -u
cd "$(dirname "$0")/../.." || exit 1
pass=0 fail=0
ok() { pass=$((pass + 1)); echo "ok systemd: $1"; }
bad() { fail=$((fail + 1)); echo "FAIL systemd: $1${2:+: $2}"; }
check() { # check NAME COMMAND...: ok if COMMAND succeeds
	name=$1; shift
	if "$@" >/dev/null 2>&1; then ok "$name"; else bad "$name"; fi
}
finish() {
	echo "$pass passed, $fail failed"
	[ "$fail" -eq 0 ]
	exit
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-systemd.XXXXXX")
trap 'rm -rf "$tmp"' EXIT INT TERM
mk="make -s --no-print-directory ${SANITIZE:+SANITIZE=$SANITIZE}"

# ---- make install ------------------------------------------------------------
d=$tmp/root
if $mk install DESTDIR="$d" > "$tmp/install.log" 2>&1; then
	ok "make install DESTDIR=..."
else
	bad "make install DESTDIR=..." "$(tail -n 5 "$tmp/install.log")"
	finish
fi
unit=$d/usr/local/lib/systemd/system/otp_demo.service
mode() { stat -c %a "$1" 2>/dev/null; }
check "bin/otp_demo installed 0755" [ "$(mode "$d/usr/local/bin/otp_demo")" = 755 ]
check "unit installed 0644 in lib/systemd/system" [ "$(mode "$unit")" = 644 ]
check "share/doc/otp_demo/config.cfg.example" \
	cmp -s config.cfg.example "$d/usr/local/share/doc/otp_demo/config.cfg.example"
check "/etc/otp_demo/config.cfg.example" \
	cmp -s config.cfg.example "$d/etc/otp_demo/config.cfg.example"
check "no config.cfg is installed (never overwritten)" \
	[ ! -e "$d/etc/otp_demo/config.cfg" ]
check "installed binary prints its version" \
	sh -c "'$d/usr/local/bin/otp_demo' --version | grep -q '^otp_demo [0-9]'"
check "ExecStart runs the installed binary on /etc/otp_demo/config.cfg" \
	grep -qx 'ExecStart=/usr/local/bin/otp_demo -c /etc/otp_demo/config.cfg' "$unit"

d2=$tmp/root2
if $mk install DESTDIR="$d2" PREFIX=/usr > "$tmp/install2.log" 2>&1 &&
    grep -qx 'ExecStart=/usr/bin/otp_demo -c /etc/otp_demo/config.cfg' \
	"$d2/usr/lib/systemd/system/otp_demo.service" &&
    [ -x "$d2/usr/bin/otp_demo" ]; then
	ok "PREFIX=/usr: /usr/bin/otp_demo, unit in /usr/lib/systemd/system"
else
	bad "PREFIX=/usr: /usr/bin/otp_demo, unit in /usr/lib/systemd/system" \
	    "$(tail -n 5 "$tmp/install2.log")"
fi

# ---- the unit's contents ---------------------------------------------------
# shellcheck disable=SC2016 # $MAINPID is literal text in the unit
for line in \
	'DynamicUser=yes' \
	'User=otp_demo' \
	'Group=otp_demo' \
	'ReadWritePaths=-/var/spool/sms' \
	'UMask=0077' \
	'PrivateDevices=yes' \
	'StateDirectory=otp_demo' \
	'Environment=OTP_STATE_DIR=%S/otp_demo' \
	'LoadCredential=api_key:/etc/otp_demo/api_key' \
	'Environment=OTP_API_KEY_FILE=%d/api_key' \
	'AmbientCapabilities=CAP_NET_BIND_SERVICE' \
	'CapabilityBoundingSet=CAP_NET_BIND_SERVICE' \
	'NoNewPrivileges=yes' \
	'ProtectSystem=strict' \
	'ProtectHome=yes' \
	'PrivateTmp=yes' \
	'RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX' \
	'SystemCallFilter=@system-service' \
	'Restart=on-failure' \
	'RestartPreventExitStatus=78' \
	'ExecReload=/bin/kill -HUP $MAINPID'; do
	check "unit has $line" grep -qxF "$line" "$unit"
done
caps=$(grep -E '^(AmbientCapabilities|CapabilityBoundingSet)=' "$unit" |
	sed 's/^[^=]*=//' | tr ' ' '\n' | sort -u | tr '\n' ' ')
check "no capability but CAP_NET_BIND_SERVICE" [ "$caps" = "CAP_NET_BIND_SERVICE " ]
check "no API key on a command line or in Environment=" \
	sh -c "! grep -Eq 'OTP_API_KEY=|API_KEY=.*[A-Za-z0-9]{8}' '$unit'"

# ---- systemd-analyze ---------------------------------------------------------
if ! command -v systemd-analyze >/dev/null 2>&1; then
	bad "systemd-analyze is installed" "apt-get install systemd"
	finish
fi
# verify wants ExecStart's binary to exist: a copy pointing into DESTDIR.
mkdir -p "$tmp/verify"
sed "s|^ExecStart=/usr/local/bin/otp_demo|ExecStart=$d/usr/local/bin/otp_demo|" \
	"$unit" > "$tmp/verify/otp_demo.service"
(cd "$tmp/verify" && systemd-analyze verify otp_demo.service) \
	> "$tmp/verify.log" 2>&1
rc=$?
about=$(grep -i 'otp_demo' "$tmp/verify.log")
if [ "$rc" -eq 0 ] && [ -z "$about" ]; then
	ok "systemd-analyze verify: passes, no warnings about the unit"
else
	bad "systemd-analyze verify: passes, no warnings about the unit" \
	    "rc=$rc $(cat "$tmp/verify.log")"
fi
# And it does catch a broken unit (so a pass means something).
sed 's/^ProtectSystem=strict/ProtectSytem=strict/' "$tmp/verify/otp_demo.service" \
	> "$tmp/verify/broken.service"
(cd "$tmp/verify" && systemd-analyze verify broken.service) \
	> "$tmp/broken.log" 2>&1
check "systemd-analyze verify reports a misspelt key in a copy" \
	grep -q "broken.service:.*ProtectSytem" "$tmp/broken.log"

if systemd-analyze security --offline=yes "$tmp/verify/otp_demo.service" \
	> "$tmp/security.log" 2>&1; then
	level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' \
		"$tmp/security.log")
	if [ -n "$level" ] && awk "BEGIN { exit !($level <= 2.0) }"; then
		ok "systemd-analyze security: exposure $level (at most 2.0)"
	else
		bad "systemd-analyze security: exposure at most 2.0" \
		    "got '${level:-?}': $(tail -n 3 "$tmp/security.log")"
	fi
else
	bad "systemd-analyze security --offline=yes runs" "$(tail -n 3 "$tmp/security.log")"
fi

# ---- the drop-ins: spool (smstools3) and serial (a modem) --------------------
# Each next to a copy of the unit, where systemd-analyze finds it through
# SYSTEMD_UNIT_PATH: verify must pass, the score stay OK.
for drop in spool serial; do
	u=$tmp/drop-$drop
	mkdir -p "$u/otp_demo.service.d"
	cp "$tmp/verify/otp_demo.service" "$u/"
	cp "packaging/systemd/otp_demo.service.d/$drop.conf" "$u/otp_demo.service.d/"
	(cd "$u" && SYSTEMD_UNIT_PATH="$u:" systemd-analyze verify \
		otp_demo.service) > "$tmp/v-$drop.log" 2>&1
	rc=$?
	if [ "$rc" -eq 0 ] && ! grep -qi 'otp_demo' "$tmp/v-$drop.log"; then
		ok "$drop.conf: systemd-analyze verify passes"
	else
		bad "$drop.conf: systemd-analyze verify passes" \
		    "rc=$rc $(cat "$tmp/v-$drop.log")"
	fi
	SYSTEMD_UNIT_PATH="$u:" systemd-analyze security --offline=yes \
		otp_demo.service > "$tmp/s-$drop.log" 2>&1
	# The drop-in is really read: its settings show in the report.
	case $drop in
	spool) seen='SupplementaryGroups=.*supplementary groups' ;;
	serial) seen='DeviceAllow=.*char-ttyUSB:rw' ;;
	esac
	if grep -q "$seen" "$tmp/s-$drop.log"; then
		ok "$drop.conf: read by systemd-analyze"
	else
		bad "$drop.conf: read by systemd-analyze" "$(tail -n 3 "$tmp/s-$drop.log")"
	fi
	level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\) OK.*/\1/p' \
		"$tmp/s-$drop.log")
	if [ -n "$level" ] && awk "BEGIN { exit !($level <= 2.0) }"; then
		ok "$drop.conf: exposure $level, OK (at most 2.0)"
	else
		bad "$drop.conf: exposure OK, at most 2.0" "$(tail -n 2 "$tmp/s-$drop.log")"
	fi
done
for line in 'SupplementaryGroups=smsd' 'ReadWritePaths=/var/spool/sms'; do
	check "spool.conf has $line" grep -qxF "$line" \
		packaging/systemd/otp_demo.service.d/spool.conf
done
for line in 'SupplementaryGroups=dialout' 'DevicePolicy=closed' \
	'DeviceAllow=char-ttyUSB rw' 'DeviceAllow=char-ttyACM rw'; do
	check "serial.conf has $line" grep -qxF "$line" \
		packaging/systemd/otp_demo.service.d/serial.conf
done

# ---- what the daemon gets from the unit ---------------------------------------
bin=${OTP_BIN:-$d/usr/local/bin/otp_demo}
creds=$tmp/credentials
mkdir -p "$creds" "$tmp/state"
printf 'KEYtest-systemd-0123456789\n' > "$creds/api_key"
chmod 0400 "$creds/api_key"
cfg=$d/etc/otp_demo/config.cfg.example
run_t() { # run_t VAR=VALUE...: otp_demo -t as the unit runs it
	env -i PATH=/usr/bin:/bin OTP_STATE_DIR="$tmp/state" "$@" \
		"$bin" -t -c "$cfg"
}
out=$(run_t OTP_API_KEY_FILE="$creds/api_key" OTP_FROM_NUMBER=+12025550111 \
	2>"$tmp/t.err")
rc=$?
if [ "$rc" -eq 0 ] && [ "$out" = "configuration OK" ]; then
	ok "daemon reads the key from the credential (OTP_API_KEY_FILE)"
else
	bad "daemon reads the key from the credential (OTP_API_KEY_FILE)" \
	    "rc=$rc $out"
fi
out=$(run_t OTP_API_KEY_FILE="$tmp/credentials/missing" 2>&1)
rc=$?
if [ "$rc" -eq 78 ]; then
	ok "a missing key file is exit 78 (RestartPreventExitStatus)"
else
	bad "a missing key file is exit 78 (RestartPreventExitStatus)" "rc=$rc $out"
fi
case $out in
*KEYtest*) bad "the key is never printed" ;;
*) ok "the key is never printed" ;;
esac

finish
