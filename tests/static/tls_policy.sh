#!/bin/sh
# tests/static/tls_policy.sh: otp_demo's TLS policy, seen from outside.
#
#   tests/static/tls_policy.sh [--tls13] HOST:PORT
#       test a running HTTPS otp_demo (LISTEN='...:PORTs', CERT_FILE=...)
#   tests/static/tls_policy.sh [--tls13] --bin BIN [--qemu CMD]
#       start BIN on a free port with an RSA certificate, test it, stop it
#
# With openssl s_client:
#   refused:   TLS 1.0, TLS 1.1, a TLS 1.2 client offering only CBC suites
#              (with ECDHE), one offering only RSA key exchange (with GCM
#              and with CBC)
#   accepted:  TLS 1.2 (its suite must be ECDHE + AEAD); TLS 1.3 with
#              --tls13 (the static build: mbedTLS 3.6; the system 2.28 of
#              the dynamic build has no TLS 1.3, so it is not asked)
#
# A refusal only means something if the same client would have connected
# to a server that allows it (Debian's OpenSSL, for one, refuses TLS 1.0 by
# itself), so every refused client is first run against `openssl s_server`
# allowing everything, with the same certificate: the control must connect.
# With --bin the certificate is RSA, so that RSA key exchange and ECDHE-RSA
# CBC suites are possible for it and only our policy can refuse them.
#
# Prints "ok NAME" / "FAIL NAME: why", then "N passed, M failed"; exit 1 on
# any failure. Work files: tests/out/tls_policy/.
set -u

here=$(cd "$(dirname "$0")" && pwd)
out=$here/../out/tls_policy
tls13=0 bin='' qemu='' addr=''
while [ $# -gt 0 ]; do
	case $1 in
	--tls13) tls13=1 ;;
	--bin) bin=$2; shift ;;
	--qemu) qemu=$2; shift ;;
	-*) echo "usage: $0 [--tls13] HOST:PORT | --bin BIN [--qemu CMD]" >&2
	    exit 64 ;;
	*) addr=$1 ;;
	esac
	shift
done
if [ -z "$addr" ] && [ -z "$bin" ]; then
	echo "usage: $0 [--tls13] HOST:PORT | --bin BIN [--qemu CMD]" >&2
	exit 64
fi
mkdir -p "$out"
pass=0 fail=0 server_pid='' control_pid=''

cleanup() {
	for p in $server_pid $control_pid; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null
	done
}
trap cleanup EXIT INT TERM

ok() { pass=$((pass + 1)); echo "ok $1"; }
bad() { fail=$((fail + 1)); echo "FAIL $1: $2"; }

# wait_port FILE REGEX: the port number a log line names (60 s, for qemu).
wait_port() {
	i=0
	while [ $i -lt 600 ]; do
		p=$(sed -n "s/$2/\\1/p" "$1" 2>/dev/null | head -n 1)
		[ -n "$p" ] && { echo "$p"; return 0; }
		sleep 0.1
		i=$((i + 1))
	done
	return 1
}

# The certificate (RSA 2048, self-signed), cert and key in one PEM file,
# which is what civetweb's ssl_certificate (our CERT_FILE) takes.
pem=$out/rsa.pem
if [ ! -s "$pem" ]; then
	if ! openssl req -x509 -newkey rsa:2048 -nodes -days 30 \
		-subj /CN=localhost -keyout "$out/rsa.key" -out "$out/rsa.crt" \
		2>/dev/null; then
		echo "tls_policy.sh: openssl could not make a certificate" >&2
		exit 1
	fi
	cat "$out/rsa.crt" "$out/rsa.key" > "$pem"
fi

if [ -n "$bin" ]; then
	# Settings through the environment, which otp_demo and tls_server
	# (the civetweb-only test server) both read; otp_demo wants a file.
	: > "$out/config.cfg"
	: > "$out/server.err" # as for control.log below
	# shellcheck disable=SC2086
	OTP_LISTEN=127.0.0.1:0s OTP_CERT_FILE=$pem OTP_THREADS=4 \
		$qemu "$bin" -c "$out/config.cfg" \
		> "$out/server.out" 2> "$out/server.err" &
	server_pid=$!
	port=$(wait_port "$out/server.err" \
		'.*listening on https:\/\/127\.0\.0\.1:\([0-9]*\).*') || {
		bad start "no 'listening on https://' line; see $out/server.err"
		echo "$pass passed, $fail failed"
		exit 1
	}
	addr=127.0.0.1:$port
fi

# The control: a server that allows every version and suite, same key.
# Its log is emptied here, not by the child's redirection, so a port from
# an earlier run is never read before the new server writes its own.
: > "$out/control.log"
openssl s_server -accept 127.0.0.1:0 -www -cert "$out/rsa.crt" \
	-key "$out/rsa.key" -cipher 'ALL:@SECLEVEL=0' -min_protocol TLSv1 \
	< /dev/null > "$out/control.log" 2>&1 &
control_pid=$!
cport=$(wait_port "$out/control.log" '^ACCEPT .*:\([0-9]*\)$') || {
	echo "tls_policy.sh: openssl s_server did not start" >&2
	exit 1
}

# client HOST:PORT LOG ARGS...: one handshake; 0 if it completed.
client() {
	a=$1 log=$2
	shift 2
	timeout 60 openssl s_client -brief -connect "$a" "$@" < /dev/null \
		> "$log" 2>&1 && grep -q '^Protocol version:' "$log"
}

# refused NAME ARGS...: must connect to the control, and not to otp_demo.
refused() {
	name=$1
	shift
	if ! client "127.0.0.1:$cport" "$out/$name.control.log" "$@"; then
		bad "$name" "the control refused it too: not a real test" \
			"(see $out/$name.control.log)"
	elif client "$addr" "$out/$name.log" "$@"; then
		bad "$name" "accepted: $(grep -E '^(Protocol version|Ciphersuite):' \
			"$out/$name.log" | tr '\n' ' ')"
	else
		ok "$name refused"
	fi
}

# accepted NAME VERSION ARGS...: must connect with VERSION, ECDHE + AEAD.
accepted() {
	name=$1 version=$2
	shift 2
	if ! client "$addr" "$out/$name.log" "$@"; then
		bad "$name" "refused (see $out/$name.log)"
		return
	fi
	proto=$(sed -n 's/^Protocol version: *//p' "$out/$name.log")
	suite=$(sed -n 's/^Ciphersuite: *//p' "$out/$name.log")
	case $version:$suite in
	TLSv1.3:TLS_AES_*GCM*|TLSv1.3:TLS_CHACHA20_POLY1305*) good=1 ;;
	TLSv1.2:ECDHE-*-GCM-*|TLSv1.2:ECDHE-*-CHACHA20-POLY1305) good=1 ;;
	*) good=0 ;;
	esac
	if [ "$proto" != "$version" ]; then
		bad "$name" "negotiated '$proto', want $version"
	elif [ $good = 0 ]; then
		bad "$name" "suite $suite is not ECDHE + AEAD"
	else
		ok "$name accepted ($proto, $suite)"
	fi
}

# SECLEVEL=0: Debian's OpenSSL would otherwise refuse TLS 1.0/1.1 itself.
old='DEFAULT:@SECLEVEL=0'
refused tls1.0 -tls1 -cipher "$old"
refused tls1.1 -tls1_1 -cipher "$old"
refused ecdhe-cbc-only -tls1_2 -cipher \
	'ECDHE-RSA-AES128-SHA:ECDHE-RSA-AES256-SHA:ECDHE-RSA-AES128-SHA256:ECDHE-RSA-AES256-SHA384:ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES128-SHA256:@SECLEVEL=0'
refused rsa-kx-only -tls1_2 -cipher \
	'AES128-GCM-SHA256:AES256-GCM-SHA384:AES128-SHA:AES256-SHA:AES128-SHA256:@SECLEVEL=0'
accepted tls1.2 TLSv1.2 -tls1_2
if [ $tls13 = 1 ]; then
	accepted tls1.3 TLSv1.3 -tls1_3
fi

echo "$pass passed, $fail failed"
[ $fail = 0 ]
