#!/bin/sh
# tests/packaging/openwrt_uci_test.sh: the OpenWrt init script's UCI ->
# config.cfg translation, outside OpenWrt.
#
#   OTP_BIN=build/otp_demo tests/packaging/openwrt_uci_test.sh
#
# Sources packaging/openwrt/otp-demo/files/otp_demo.init with stubs only
# for what exists only on OpenWrt (config_load, config_get,
# config_get_bool, procd_*), under busybox sh (OpenWrt's shell) when it is
# installed and under dash, and checks:
#   - the generated file byte for byte, with values holding ' " \ $ `,
#     newlines, tabs and UTF-8, its mode (0600) and its directory's (0700);
#   - what start_service asks procd for: foreground command with -c only
#     (the key on no command line and in no environment), its own user,
#     respawn, stdout/stderr to logd, SIGHUP on a changed file, a reload
#     trigger on the otp_demo UCI config; nothing when disabled;
#   - that a number is never written bare unless it is digits, a newline
#     cannot start a new key, and a carriage return is refused;
#   - that otp_demo -t accepts the generated file, and that the daemon
#     reads the quoted values back exactly (the console SMS shows MESSAGE
#     as set in UCI), also after a UCI change and SIGHUP.
# Prints "ok"/"FAIL" lines and "N passed, M failed".
# shellcheck disable=SC3043,SC2016 # local: dash and busybox; '$' is data
set -u
cd "$(dirname "$0")/../.." || exit 1
top=$PWD
init=$top/packaging/openwrt/otp-demo/files/otp_demo.init

# ---- outer run: once per shell ----------------------------------------------
if [ "${1:-}" != --inner ]; then
	passed=0 failed=0 ran=
	for sh in "busybox sh" dash; do
		command -v "${sh%% *}" >/dev/null 2>&1 || {
			echo "note: ${sh%% *} not installed, not tested under it"
			continue
		}
		$sh "$0" --inner "$sh" > "${TMPDIR:-/tmp}/otp-uci.$$" 2>&1
		cat "${TMPDIR:-/tmp}/otp-uci.$$"
		line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "${TMPDIR:-/tmp}/otp-uci.$$" | tail -n 1)
		rm -f "${TMPDIR:-/tmp}/otp-uci.$$"
		if [ -z "$line" ]; then
			failed=$((failed + 1))
			echo "FAIL openwrt [$sh]: died without a summary"
			continue
		fi
		p=${line%% passed*} f=${line#*, } f=${f%% failed*}
		passed=$((passed + p)) failed=$((failed + f)) ran="$ran $sh"
	done
	[ -n "$ran" ] || { failed=$((failed + 1)); echo "FAIL openwrt: no shell"; }
	echo "$passed passed, $failed failed"
	[ "$failed" -eq 0 ]
	exit
fi

# ---- inner run --------------------------------------------------------------
shname=$2
pass=0 fail=0
# printf, not echo: dash's echo would eat the backslashes being tested.
ok() { pass=$((pass + 1)); printf 'ok openwrt [%s]: %s\n' "$shname" "$1"; }
bad() {
	fail=$((fail + 1))
	printf 'FAIL openwrt [%s]: %s%s\n' "$shname" "$1" "${2:+: $2}"
}
expect() { # expect NAME GOT WANT
	if [ "$2" = "$3" ]; then ok "$1"; else bad "$1" "got [$2] want [$3]"; fi
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/otp-uci.XXXXXX")
daemon=
cleanup() {
	[ -n "$daemon" ] && kill "$daemon" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
procd_log=$tmp/procd.log
: > "$procd_log"

# The stubs: OpenWrt's semantics (lib/functions.sh, procd.sh), values from
# CONFIG_<section>_<option> variables, procd calls logged one per line.
config_load() { echo "config_load $*" >> "$procd_log"; }
config_get() {
	eval "$1=\${CONFIG_${2}_${3}:-\${4:-}}"
}
config_get_bool() {
	local _tmp
	config_get _tmp "$2" "$3" "${4:-}"
	case $_tmp in
	1 | on | true | yes | enabled) _tmp=1 ;;
	0 | off | false | no | disabled) _tmp=0 ;;
	*) _tmp=${4:-} ;;
	esac
	eval "$1=\$_tmp"
}
procd_log_call() {
	printf '%s' "$1" >> "$procd_log"
	shift
	for a in "$@"; do printf ' [%s]' "$a" >> "$procd_log"; done
	echo >> "$procd_log"
}
procd_open_instance() { procd_log_call open_instance "$@"; }
procd_set_param() { procd_log_call set_param "$@"; }
procd_append_param() { procd_log_call append_param "$@"; }
procd_close_instance() { procd_log_call close_instance "$@"; }
procd_add_reload_trigger() { procd_log_call reload_trigger "$@"; }
procd_add_reload_interface_trigger() { procd_log_call interface_trigger "$@"; }
procd_add_jail() { procd_log_call jail "$@"; }
procd_add_jail_mount() { procd_log_call jail_mount "$@"; }
procd_add_jail_mount_rw() { procd_log_call jail_mount_rw "$@"; }
# procd.sh's: the validation function, called without a section.
procd_add_validation() { procd_log_call validation "$@"; "$@"; }
# rc.common's, for reload_service.
rc_procd() { "$@"; }
start() { procd_log_call rc_start; }
stop() { procd_log_call rc_stop; }

# uci_load_validate as procd.sh defines it, with ubox's validate_data in
# shell: for each 'option:datatype:default', the option's variable is set
# to its value if it validates (booleans as 0/1), to the default if it is
# unset, and unset if it is invalid (then the result is not 0); then
# CALLBACK SECTION RESULT runs. Only the datatypes the init script uses
# are known here: another one fails the test.
dt_check() { # DATATYPE VALUE: prints string, number or bool; 1 if invalid
	local lo hi n alt
	case $1 in
	string) echo string ;;
	bool)
		case $2 in
		0 | off | false | no | disabled | 1 | on | true | yes | enabled) echo bool ;;
		*) return 1 ;;
		esac ;;
	uinteger)
		case $2 in "" | *[!0-9]*) return 1 ;; esac
		echo number ;;
	port)
		case $2 in "" | *[!0-9]*) return 1 ;; esac
		[ "$2" -le 65535 ] || return 1
		echo number ;;
	range\(*,*\))
		lo=${1#range(} hi=${lo#*,} lo=${lo%%,*} hi=${hi%)}
		case $2 in "" | *[!0-9]*) return 1 ;; esac
		[ "$2" -ge "$lo" ] && [ "$2" -le "$hi" ] || return 1
		echo number ;;
	uciname)
		case $2 in *[!A-Za-z0-9_]*) return 1 ;; esac
		echo string ;;
	file) [ -f "$2" ] && echo string ;;
	or\(*\))
		alt=${1#or(} alt=${alt%)}
		n=$(printf '%s' "$alt" | tr ',' '\n' | sed 's/^"\(.*\)"$/\1/' | grep -cxF -e "$2")
		[ "$n" -gt 0 ] && echo string ;;
	*) echo "stub: datatype $1 unknown to the test" >&2; return 2 ;;
	esac
}
bool_num() {
	case $1 in 0 | off | false | no | disabled) echo 0 ;; *) echo 1 ;; esac
}
uci_load_validate() {
	local _package="$1" _type="$2" _name="$3" _function="$4" _option
	local _result=0 _o _rest _dt _def _v _t
	shift 4
	for _option in "$@"; do
		eval "local ${_option%%:*}"
	done
	if [ -z "$_name" ]; then
		procd_log_call describe "$_package" "$_type" "$@"
		return 0
	fi
	procd_log_call load_validate "$_package" "$_type" "$_name"
	for _option in "$@"; do
		_o=${_option%%:*} _rest=${_option#*:} _def=
		_dt=${_rest%%:*}
		case $_rest in *:*) _def=${_rest#*:} ;; esac
		eval "_v=\${CONFIG_${_name}_${_o}:-}"
		if [ -n "$_v" ]; then
			if _t=$(dt_check "$_dt" "$_v"); then
				[ "$_t" = bool ] && _v=$(bool_num "$_v")
				eval "$_o=\$_v"
			else
				unset -v "$_o"
				_result=1
				echo "$_package.$_name.$_o=$_v validates as $_dt with false" >&2
			fi
		elif [ -n "$_def" ]; then
			_t=$(dt_check "$_dt" "$_def") || _t=string
			[ "$_t" = bool ] && _def=$(bool_num "$_def")
			eval "$_o=\$_def"
		else
			unset -v "$_o"
		fi
	done
	[ -n "$_function" ] || return $_result
	eval "$_function \"\$_name\" \"\$_result\""
}

# shellcheck source=/dev/null
. "$init"

# netifd's addresses, for /lib/functions/network.sh under IPKG_INSTROOT:
# STUB_ADDR_<interface>, empty for an interface that is down.
IPKG_INSTROOT=$tmp/root
mkdir -p "$IPKG_INSTROOT/lib/functions"
cat > "$IPKG_INSTROOT/lib/functions/network.sh" <<'NETEOF'
network_get_ipaddr() {
	eval "$1=\${STUB_ADDR_$2:-}"
	echo "network_get_ipaddr $2" >> "$procd_log"
	eval "[ -n \"\$$1\" ]"
}
NETEOF

# Where the script writes, moved into tmp; its own user is whoever runs this.
OTPD_CONF_DIR=$tmp/var/etc/otp_demo
OTPD_STATE_DIR=$tmp/etc/otp_demo
OTPD_USER=$(id -un)
# shellcheck disable=SC2034 # read by the init script
OTPD_GROUP=$(id -gn)
OTPD_PROG=${OTP_BIN:-$top/otp_demo}
conf=$OTPD_CONF_DIR/config.cfg
NL='
'
TAB=$(printf '\t')
CR=$(printf '\r')

uci() { eval "CONFIG_main_$1=\$2"; }
uci_reset() {
	for v in $(set | sed -n 's/^\(CONFIG_main_[a-z_]*\)=.*/\1/p'); do
		unset "$v"
	done
}

# ---- otp_demo_quote, one value at a time -----------------------------------
q() { otp_demo_quote "$1"; }
expect "quote: plain" "$(q 'abc')" "'abc'"
expect "quote: empty" "$(q '')" "''"
expect "quote: single quote" "$(q "it's")" "'it\\'s'"
expect "quote: double quote" "$(q 'say "hi"')" "'say \"hi\"'"
expect "quote: backslash" "$(q 'a\b\\c')" "'a\\\\b\\\\\\\\c'"
expect "quote: backslash before quote" "$(q "\\'")" "'\\\\\\''"
expect "quote: dollar and backtick" "$(q '$HOME `id` $(id)')" "'\$HOME \`id\` \$(id)'"
expect "quote: newline" "$(q "a${NL}b")" "'a\\nb'"
expect "quote: tab stays" "$(q "a${TAB}b")" "'a${TAB}b'"
expect "quote: UTF-8 stays" "$(q 'Grüße — ✓')" "'Grüße — ✓'"
expect "quote: percent and braces" "$(q '%s {code} %n')" "'%s {code} %n'"
if q "a${CR}b" > /dev/null; then
	bad "quote: a carriage return is refused"
else
	ok "quote: a carriage return is refused"
fi
expect "number: digits bare" "$(otp_demo_value i 6)" "6"
expect "number: anything else quoted" "$(otp_demo_value i '6 # x')" "'6 # x'"
expect "number: newline cannot add a key" "$(otp_demo_value i "6${NL}API_KEY='x'")" \
	"'6\\nAPI_KEY=\\'x\\''"
expect "boolean: 1" "$(otp_demo_value b 1)" "True"
expect "boolean: 0" "$(otp_demo_value b 0)" "False"

# ---- the whole file --------------------------------------------------------
uci_reset
uci enabled 1
uci listen '127.0.0.1:0'
uci api_key 'KEY'"'"'with"quotes\and$dollar'
uci from_number '+12025550111'
uci country_code '+1'
uci allowed_country_codes '+1,+44'
uci token_length 6
uci token_alphabet digits
uci message 'It'"'"'s "yours" \o/ $HOME: {code}'
uci code_ttl 120
uci max_attempts 3
uci resend_interval 0
uci sms_per_hour 50
uci trusted_proxy 127.0.0.1
uci debug yes
uci metrics 0
uci state_dir "$tmp/state"

start_service
{
	cat <<'EOF'
# Written by /etc/init.d/otp_demo from /etc/config/otp_demo.
# Edit the UCI config instead: this file is rewritten on start.
LISTEN='127.0.0.1:0'
API_KEY='KEY\'with"quotes\\and$dollar'
FROM_NUMBER='+12025550111'
COUNTRY_CODE='+1'
ALLOWED_COUNTRY_CODES='+1,+44'
TOKEN_LENGTH=6
TOKEN_ALPHABET='digits'
MESSAGE='It\'s "yours" \\o/ $HOME: {code}'
CODE_TTL=120
MAX_ATTEMPTS=3
RESEND_INTERVAL=0
SMS_PER_HOUR=50
TRUSTED_PROXY='127.0.0.1'
METRICS=False
DEBUG=True
EOF
	printf "STATE_DIR='%s/state'\n" "$tmp"
	printf "CERT_FILE='%s/state/otp_demo.pem'\n" "$tmp"
} > "$tmp/want.cfg"
if cmp -s "$tmp/want.cfg" "$conf"; then
	ok "config.cfg byte for byte"
else
	bad "config.cfg byte for byte" "$(diff "$tmp/want.cfg" "$conf" 2>&1 | head -n 20)"
fi
expect "config.cfg mode 0600" "$(stat -c %a "$conf")" 600
expect "config.cfg owner" "$(stat -c %U "$conf")" "$OTPD_USER"
expect "config dir mode 0700" "$(stat -c %a "$OTPD_CONF_DIR")" 700
expect "state dir made, mode 0700" "$(stat -c %a "$tmp/state")" 700
expect "no temporary file left (config.cfg and the restart keys only)" \
	"$(ls "$OTPD_CONF_DIR" | tr '\n' ' ')" "config.cfg restart "

# What procd was asked for.
has() { grep -qxF "$1" "$procd_log"; }
check_call() { if has "$2"; then ok "$1"; else bad "$1" "$(cat "$procd_log")"; fi; }
check_call "uci_load_validate on section main" "load_validate [otp_demo] [otp_demo] [main]"
check_call "procd: command in the foreground with -c" \
	"set_param [command] [$OTPD_PROG] [-c] [$conf]"
check_call "procd: runs as its own user" "set_param [user] [$OTPD_USER]"
check_call "procd: respawn" "set_param [respawn]"
check_call "procd: stdout to logd" "set_param [stdout] [1]"
check_call "procd: stderr to logd" "set_param [stderr] [1]"
check_call "procd: watches the file" "set_param [file] [$conf]"
check_call "procd: SIGHUP on change" "set_param [reload_signal] [HUP]"
check_call "procd: instance closed" "close_instance"
if grep -q 'set_param \[env\]' "$procd_log"; then
	bad "procd: no environment"
else
	ok "procd: no environment"
fi
if grep -qF 'quotes' "$procd_log"; then
	bad "procd: the API key is in no procd parameter"
else
	ok "procd: the API key is in no procd parameter"
fi
: > "$procd_log"
service_triggers
check_call "procd: reload trigger on the otp_demo config" \
	"reload_trigger [otp_demo]"

# /etc/init.d/otp_demo check: its own file, the daemon's untouched, and no
# root-owned session.key left in the state directory.
if [ -x "$OTPD_PROG" ]; then
	cp "$conf" "$tmp/before-check.cfg"
	out=$(check 2> "$tmp/check.err")
	expect "check: configuration OK" "$out" "configuration OK"
	if [ ! -e "$OTPD_CONF_DIR/check.cfg" ] && cmp -s "$conf" "$tmp/before-check.cfg"; then
		ok "check: leaves the daemon's config.cfg alone, removes its own"
	else
		bad "check: leaves the daemon's config.cfg alone, removes its own"
	fi
	if [ -e "$tmp/state/session.key" ]; then
		bad "check: makes no session.key"
	else
		ok "check: makes no session.key"
	fi
fi

# ---- the daemon reads it ----------------------------------------------------
if [ ! -x "$OTPD_PROG" ]; then
	bad "otp_demo binary $OTPD_PROG" "set OTP_BIN"
else
	out=$("$OTPD_PROG" -t -c "$conf" 2> "$tmp/t.err")
	rc=$?
	if [ "$rc" -eq 0 ] && [ "$out" = "configuration OK" ]; then
		ok "otp_demo -t -c config.cfg: configuration OK"
	else
		bad "otp_demo -t -c config.cfg: configuration OK" \
		    "rc=$rc $out $(cat "$tmp/t.err")"
	fi

	# The values come back exactly: the console SMS shows MESSAGE.
	: > "$tmp/d.out"
	: > "$tmp/d.err"
	OTP_SMS_PROVIDER=console "$OTPD_PROG" -c "$conf" \
		> "$tmp/d.out" 2> "$tmp/d.err" &
	daemon=$!
	port=
	i=0
	while [ $i -lt 100 ] && [ -z "$port" ]; do
		port=$(sed -n 's/.*listening on http:\/\/[^ ]*:\([0-9][0-9]*\).*/\1/p' \
			"$tmp/d.err" | head -n 1)
		[ -n "$port" ] || sleep 0.1
		i=$((i + 1))
	done
	# send PHONE: one code request through the form; prints the SMS line.
	send() {
		local jar="$tmp/jar.$1" csrf n
		curl -s -c "$jar" "http://127.0.0.1:$port/" > "$tmp/index.html"
		csrf=$(sed -n 's/.*name="csrf" value="\([0-9a-f]*\)".*/\1/p' \
			"$tmp/index.html" | head -n 1)
		curl -s -b "$jar" -c "$jar" -o /dev/null \
			--data-urlencode "phone=$1" --data-urlencode "csrf=$csrf" \
			"http://127.0.0.1:$port/request"
		n=0
		while [ $n -lt 50 ] && ! grep -q "^SMS to $1: " "$tmp/d.out"; do
			sleep 0.1
			n=$((n + 1))
		done
		grep "^SMS to $1: " "$tmp/d.out" | tail -n 1
	}
	if [ -z "$port" ]; then
		bad "otp_demo starts on the generated file" "$(cat "$tmp/d.err")"
	elif ! command -v curl >/dev/null 2>&1; then
		bad "curl is installed"
	else
		ok "otp_demo starts on the generated file"
		sms=$(send +12015550123)
		# shellcheck disable=SC2016 # $HOME is text in the message
		case $sms in
		'SMS to +12015550123: It'"'"'s "yours" \o/ $HOME: '[0-9][0-9][0-9][0-9][0-9][0-9])
			ok "MESSAGE read back exactly (' \" \\ \$)" ;;
		*) bad "MESSAGE read back exactly (' \" \\ \$)" "[$sms]" ;;
		esac

		# A UCI change, start_service again (what reload does), SIGHUP.
		uci message 'Back\slash '"'"'n'"'"' {code}'
		start_service
		if grep -qxF "MESSAGE='Back\\\\slash \\'n\\' {code}'" "$conf"; then
			ok "reload rewrites the file"
		else
			bad "reload rewrites the file" "$(grep MESSAGE "$conf")"
		fi
		kill -HUP "$daemon"
		sleep 0.5
		if kill -0 "$daemon" 2>/dev/null; then
			ok "otp_demo survives SIGHUP"
			sms=$(send +12015550124)
			case $sms in
			"SMS to +12015550124: Back\\slash 'n' "[0-9][0-9][0-9][0-9][0-9][0-9])
				ok "after SIGHUP the new MESSAGE is used" ;;
			*) bad "after SIGHUP the new MESSAGE is used" "[$sms]" ;;
			esac
		else
			bad "otp_demo survives SIGHUP" "$(tail -n 3 "$tmp/d.err")"
		fi
	fi
	if [ -n "$daemon" ]; then
		kill "$daemon" 2>/dev/null
		wait "$daemon"
		rc=$?
		daemon=
		expect "otp_demo exits 0 on SIGTERM" "$rc" 0
	fi
	if grep -qF 'quotes' "$tmp/d.err"; then
		bad "the API key is not logged"
	else
		ok "the API key is not logged"
	fi
fi

# ---- refusals ---------------------------------------------------------------
# A value its datatype refuses: nothing started, the running file kept.
cp "$conf" "$tmp/before.cfg"
: > "$procd_log"
uci token_length '6 # x'
start_service 2> "$tmp/v.err"
rc=$?
if [ "$rc" -ne 0 ] && ! grep -q open_instance "$procd_log" &&
    cmp -s "$tmp/before.cfg" "$conf" &&
    grep -q 'token_length=6 # x validates as range(1,16) with false' "$tmp/v.err" &&
    grep -q 'invalid options in /etc/config/otp_demo' "$tmp/v.err"; then
	ok "a non-number: refused by its datatype, named, nothing started, file kept"
else
	bad "a non-number: refused by its datatype, named, nothing started, file kept" \
	    "rc=$rc $(cat "$tmp/v.err")"
fi
uci token_length 6

uci_reset
uci enabled 1
uci listen "127.0.0.1:0${NL}API_KEY='injected'"
start_service
if grep -q '^API_KEY' "$conf"; then
	bad "a newline in a value cannot add a key" "$(cat "$conf")"
else
	ok "a newline in a value cannot add a key"
fi
expect "... it is escaped inside the string" "$(grep '^LISTEN=' "$conf")" \
	"LISTEN='127.0.0.1:0\\nAPI_KEY=\\'injected\\''"

cp "$conf" "$tmp/before.cfg"
: > "$procd_log"
uci api_key "bad${CR}key"
start_service 2> "$tmp/cr.err"
rc=$?
if [ "$rc" -ne 0 ] && ! grep -q open_instance "$procd_log" &&
    cmp -s "$tmp/before.cfg" "$conf" && [ ! -e "$conf.tmp" ]; then
	ok "a carriage return: refused, nothing started, old file kept"
else
	bad "a carriage return: refused, nothing started, old file kept" \
	    "rc=$rc $(cat "$tmp/cr.err") $(cat "$procd_log")"
fi

uci_reset
uci enabled 0
: > "$procd_log"
rm -f "$conf"
start_service
if ! grep -q open_instance "$procd_log" && [ ! -e "$conf" ]; then
	ok "enabled 0: no instance, no file"
else
	bad "enabled 0: no instance, no file" "$(cat "$procd_log")"
fi

uci_reset
uci enabled 1
: > "$procd_log"
start_service
want="# Written by /etc/init.d/otp_demo from /etc/config/otp_demo.
# Edit the UCI config instead: this file is rewritten on start.
STATE_DIR='$OTPD_STATE_DIR'
CERT_FILE='$OTPD_STATE_DIR/otp_demo.pem'"
expect "only enabled: defaults only, state in /etc/otp_demo" "$(cat "$conf")" "$want"


# ---- UCI files: the shipped default and bad ones ------------------------------
# uci_file FILE: the options of section main of a UCI file, as config_get
# and the validation stub see them (single-quoted values, as uci writes).
uci_file() {
	uci_reset
	eval "$(sed -n "s/^[[:space:]]*option[[:space:]]\{1,\}\([a-z_]*\)[[:space:]]\{1,\}\('[^']*'\)[[:space:]]*\$/CONFIG_main_\1=\2/p" "$1")"
}
shipped=$top/packaging/openwrt/otp-demo/files/otp_demo.config
uci_file "$shipped"
: > "$procd_log"
if start_service 2> "$tmp/v.err" && ! grep -q 'validates as' "$tmp/v.err" &&
    ! grep -q open_instance "$procd_log"; then
	ok "shipped /etc/config/otp_demo: valid, and off until enabled"
else
	bad "shipped /etc/config/otp_demo: valid, and off until enabled" "$(cat "$tmp/v.err")"
fi
expect "shipped config listens on interface lan, port 5000" \
	"${CONFIG_main_interface:-}:${CONFIG_main_port:-}" "lan:5000"

# Each line makes an otherwise good file bad; start refuses and names it.
while IFS='|' read -r line opt; do
	[ -n "$line" ] || continue
	sed "s/^\([[:space:]]*\)option enabled '0'/\1option enabled '1'/" "$shipped" \
		> "$tmp/bad.uci"
	printf '\t%s\n' "$line" >> "$tmp/bad.uci"
	uci_file "$tmp/bad.uci"
	: > "$procd_log"
	STUB_ADDR_lan=192.168.1.1 start_service 2> "$tmp/v.err"
	rc=$?
	if [ "$rc" -ne 0 ] && ! grep -q open_instance "$procd_log" &&
	    grep -q "otp_demo.main.$opt=.* with false" "$tmp/v.err"; then
		ok "bad UCI: $line: refused, $opt named"
	else
		bad "bad UCI: $line: refused, $opt named" "rc=$rc $(cat "$tmp/v.err")"
	fi
done <<'EOF'
option enabled 'maybe'|enabled
option port '70000'|port
option port 'http'|port
option interface 'lan; reboot'|interface
option tls 'yes please'|tls
option token_length '0'|token_length
option token_length '17'|token_length
option threads '100'|threads
option code_ttl '-5'|code_ttl
option sms_provider 'pigeon'|sms_provider
option sms_ca_file '/nonexistent/ca.pem'|sms_ca_file
option metrics 'sometimes'|metrics
option jail 'no thanks'|jail
EOF
# And the same lines with good values start.
while IFS='|' read -r line; do
	[ -n "$line" ] || continue
	sed "s/^\([[:space:]]*\)option enabled '0'/\1option enabled '1'/" "$shipped" \
		> "$tmp/good.uci"
	printf '\t%s\n' "$line" >> "$tmp/good.uci"
	uci_file "$tmp/good.uci"
	: > "$procd_log"
	if STUB_ADDR_lan=192.168.1.1 STUB_ADDR_guest_2=10.0.2.1 \
	    start_service 2> "$tmp/v.err" && grep -q open_instance "$procd_log"; then
		ok "good UCI: $line: started"
	else
		bad "good UCI: $line: started" "$(cat "$tmp/v.err")"
	fi
done <<'EOF'
option enabled 'yes'
option port '65535'
option interface 'guest_2'
option tls 'on'
option token_length '16'
option threads '64'
option sms_provider 'console'
option sms_ca_file '/etc/hostname'
option metrics 'false'
EOF

# ---- listening by interface name ------------------------------------------------
listen_of() { sed -n 's/^LISTEN=//p' "$conf"; }
uci_reset
uci enabled 1
uci interface lan
uci port 5000
: > "$procd_log"
rm -f "$conf"
STUB_ADDR_lan= start_service 2> "$tmp/i.err"
if ! grep -q open_instance "$procd_log" && [ ! -e "$conf" ] &&
    grep -q 'interface lan has no IPv4 address' "$tmp/i.err"; then
	ok "interface down: not started, and says why"
else
	bad "interface down: not started, and says why" "$(cat "$tmp/i.err")"
fi
check_call "interface: the address comes from netifd" "network_get_ipaddr lan"
STUB_ADDR_lan=192.168.1.1 start_service
expect "interface up: LISTEN is its address and the port" "$(listen_of)" "'192.168.1.1:5000'"
uci tls 1
STUB_ADDR_lan=192.168.1.1 start_service
expect "tls 1: a TLS listener" "$(listen_of)" "'192.168.1.1:5000s'"
uci listen '127.0.0.1:8080'
STUB_ADDR_lan=192.168.1.1 start_service
expect "listen, when set, wins over interface" "$(listen_of)" "'127.0.0.1:8080'"

: > "$procd_log"
uci_reset
uci enabled 1
uci interface lan
service_triggers
check_call "triggers: config change reloads" "reload_trigger [otp_demo]"
check_call "triggers: interface lan reloads (up, down, new address)" \
	"interface_trigger [lan]"
check_call "triggers: validation registered" "validation [otp_demo_validate]"
if grep "^describe \[otp_demo\] \[otp_demo\] " "$procd_log" | grep -F '[port:port:5000]' |
    grep -qF '[token_length:range(1,16)]'; then
	ok "validation describes the options and their datatypes"
else
	bad "validation describes the options and their datatypes" "$(grep describe "$procd_log")"
fi
: > "$procd_log"
uci listen '127.0.0.1:8080'
service_triggers
if grep -q interface_trigger "$procd_log"; then
	bad "no interface trigger when listen is set"
else
	ok "no interface trigger when listen is set"
fi

# ---- the jail: exactly what each sender needs ------------------------------------
# jail_of: the jail's mounts from the last start, sorted, one a line.
jail_of() {
	sed -n 's/^jail_mount\(_rw\)\{0,1\} \[\(.*\)\]$/\1 \2/p' "$procd_log" |
		sed 's/^_rw /rw /; s/^ /ro /' | sort
}
jail_start() { : > "$procd_log"; start_service 2> "$tmp/j.err"; }
base="ro $OTPD_CONF_DIR
rw $tmp/state"
uci_reset
uci enabled 1
uci listen 127.0.0.1:0
uci state_dir "$tmp/state"
jail_start
check_call "jail: procd_add_jail otp_demo" "jail [otp_demo]"
expect "jail, console sender: the config directory (ro) and the state (rw) only" \
	"$(jail_of)" "$(printf '%s\n' "$base" | sort)"

# The resolver's and CA files of this machine stand in for the router's.
want=$base
for f in /etc/ssl/certs/ca-certificates.crt /etc/ssl/cert.pem; do
	[ -e "$f" ] && { want="$want${NL}ro $f"; break; }
done
for f in /etc/resolv.conf /tmp/resolv.conf /tmp/resolv.conf.d /etc/hosts; do
	[ -e "$f" ] && want="$want${NL}ro $f"
done
uci api_key KEY0123456789
jail_start
expect "jail, telnyx: also the CA bundle and the resolver's files" \
	"$(jail_of)" "$(printf '%s\n' "$want" | sort)"
printf 'x\n' > "$tmp/ca.pem"
uci sms_ca_file "$tmp/ca.pem"
jail_start
case "$(jail_of)" in
*"ro $tmp/ca.pem"*) ok "jail, telnyx with sms_ca_file: that file" ;;
*) bad "jail, telnyx with sms_ca_file: that file" "$(jail_of)" ;;
esac
uci sms_ca_file ''
uci api_key ''

mkdir -p "$tmp/spool/sms"
uci sms_provider spool
uci spool_dir "$tmp/spool/sms/outgoing"
jail_start
expect "jail, spool: the spool's parent (rw), where files are made" \
	"$(jail_of)" "$(printf '%s\nrw %s\n' "$base" "$tmp/spool/sms" | sort)"
for d in "$tmp/spool/sms/outgoing" "$tmp/spool/sms"; do
	case "$(stat -c '%G %A' "$d")" in
	"$OTPD_GROUP "d???rwx*) ok "spool: $d in the daemon's group, group rwx" ;;
	*) bad "spool: $d in the daemon's group, group rwx" "$(stat -c '%G %A' "$d")" ;;
	esac
done

printf '#!/bin/sh\nexit 0\n' > "$tmp/sms-script"
chmod 755 "$tmp/sms-script"
uci sms_provider command
uci sms_command "$tmp/sms-script {to} {text}"
jail_start
expect "jail, command: the program and its interpreter" \
	"$(jail_of)" "$(printf '%s\nro %s\nro /bin/sh\n' "$base" "$tmp/sms-script" | sort)"
uci jail 0
jail_start
if grep -q '^jail' "$procd_log" || ! grep -q open_instance "$procd_log"; then
	bad "jail 0: started without a jail"
else
	ok "jail 0: started without a jail"
fi

# ---- in front of LuCI: port 443, upstream, users ------------------------------------
# README's "Protecting LuCI" options, as the shipped config's comments give
# them: the capability to bind 443 through the jail, USERS_FILE's directory
# in it, and the keys written for the daemon, which accepts them (-t).
mkdir -p "$tmp/users.d"
printf '+12015550123 alice admins\n' > "$tmp/users.d/users"
uci_reset
uci enabled 1
uci interface lan
uci port 443
uci tls 1
uci state_dir "$tmp/state"
uci api_key KEY0123456789
uci from_number '+12025550111'
uci upstream 'http://127.0.0.1:8080'
uci upstream_timeout 20
uci users_file "$tmp/users.d/users"
uci cookie_domain example.lan
STUB_ADDR_lan=192.168.1.1 jail_start
check_call "port 443: the jail grants CAP_NET_BIND_SERVICE (ujail -C)" \
	"set_param [capabilities] [$OTPD_CAPS]"
expect "port 443: LISTEN is the LAN address, TLS" "$(listen_of)" "'192.168.1.1:443s'"
check_call "procd: an edited users file means SIGHUP on reload" \
	"set_param [file] [$conf] [$tmp/users.d/users]"
case "$(jail_of)" in
*"ro $tmp/users.d"*) ok "jail: users_file's directory, read-only" ;;
*) bad "jail: users_file's directory, read-only" "$(jail_of)" ;;
esac
for kv in "UPSTREAM='http://127.0.0.1:8080'" "UPSTREAM_TIMEOUT=20" \
    "USERS_FILE='$tmp/users.d/users'" "COOKIE_DOMAIN='example.lan'"; do
	if grep -qxF "$kv" "$conf"; then ok "written: $kv"; else bad "written: $kv" "$(cat "$conf")"; fi
done
if "$OTPD_PROG" -t -c "$conf" > "$tmp/t.out" 2>&1; then
	ok "otp_demo -t accepts the LuCI set-up"
else
	bad "otp_demo -t accepts the LuCI set-up" "$(cat "$tmp/t.out")"
fi
uci jail 0
STUB_ADDR_lan=192.168.1.1 jail_start
if ! grep -q open_instance "$procd_log" && grep -q 'port 443 is below 1024' "$tmp/j.err"; then
	ok "port 443 without the jail: not started, and says why"
else
	bad "port 443 without the jail: not started, and says why" "$(cat "$tmp/j.err")"
fi
uci jail 1
uci port 5000
STUB_ADDR_lan=192.168.1.1 jail_start
if grep -q capabilities "$procd_log"; then
	bad "port 5000: no capability asked for"
else
	ok "port 5000: no capability asked for"
fi
uci users_file "$tmp/state/users"
printf '+12015550123 alice\n' > "$tmp/state/users"
STUB_ADDR_lan=192.168.1.1 jail_start
case "$(jail_of)" in
*"ro $tmp/state"*) bad "users_file in the state directory: no second mount" "$(jail_of)" ;;
*) ok "users_file in the state directory: no second mount" ;;
esac
uci users_file "$tmp/users.d/missing"
STUB_ADDR_lan=192.168.1.1 jail_start
if ! grep -q open_instance "$procd_log" && grep -q 'users_file=.* with false' "$tmp/j.err"; then
	ok "users_file that does not exist: refused, named"
else
	bad "users_file that does not exist: refused, named" "$(cat "$tmp/j.err")"
fi

# ---- reload: SIGHUP or restart ------------------------------------------------------
uci_reset
uci enabled 1
uci interface lan
uci port 5000
uci state_dir "$tmp/state"
STUB_ADDR_lan=192.168.1.1 start_service
: > "$procd_log"
STUB_ADDR_lan=192.168.1.1 reload_service
if grep -q rc_stop "$procd_log"; then
	bad "reload, nothing changed: no restart"
else
	ok "reload, nothing changed: no restart"
fi
uci message 'New text {code}'
: > "$procd_log"
STUB_ADDR_lan=192.168.1.1 reload_service
if ! grep -q rc_stop "$procd_log" && grep -q "^MESSAGE='New text {code}'" "$conf"; then
	ok "reload, a new message: the file rewritten, no restart (procd sends SIGHUP)"
else
	bad "reload, a new message: the file rewritten, no restart" "$(cat "$procd_log")"
fi
: > "$procd_log"
STUB_ADDR_lan=192.168.1.7 reload_service
if grep -q rc_stop "$procd_log" && grep -q rc_start "$procd_log"; then
	ok "reload, the interface's address changed: restart"
else
	bad "reload, the interface's address changed: restart" "$(cat "$procd_log")"
fi
uci sms_provider spool
uci spool_dir "$tmp/spool/sms/outgoing"
: > "$procd_log"
STUB_ADDR_lan=192.168.1.7 reload_service
if grep -q rc_stop "$procd_log"; then
	ok "reload, another sender (the jail changes): restart"
else
	bad "reload, another sender (the jail changes): restart" "$(cat "$procd_log")"
fi
cp "$conf" "$tmp/before.cfg"
uci port 99999
: > "$procd_log"
if STUB_ADDR_lan=192.168.1.7 reload_service 2> "$tmp/r.err"; then
	bad "reload, an invalid port: refused"
else
	ok "reload, an invalid port: refused"
fi
if ! grep -q 'open_instance\|rc_stop' "$procd_log" && cmp -s "$tmp/before.cfg" "$conf" &&
    grep -q 'running service keeps its config' "$tmp/r.err"; then
	ok "... and the running service and its file are left alone"
else
	bad "... and the running service and its file are left alone" \
	    "$(cat "$procd_log" "$tmp/r.err")"
fi


echo "$pass passed, $fail failed"
[ "$fail" -eq 0 ]
