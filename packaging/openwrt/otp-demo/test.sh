#!/bin/sh
# OpenWrt packages CI: runs on the device after installing the package,
# as test.sh PKG_NAME PKG_VERSION. otp_demo --version prints
# "otp_demo VERSION".
case "$1" in
otp-demo)
	out=$(otp_demo --version) || exit 1
	[ "$out" = "otp_demo $2" ] || {
		echo "otp_demo --version said '$out', want 'otp_demo $2'" >&2
		exit 1
	}
	otp_demo -t -c /dev/null >/dev/null 2>&1 || {
		echo "otp_demo -t on an empty config failed" >&2
		exit 1
	}
	;;
esac
