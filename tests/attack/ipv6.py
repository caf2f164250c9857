#!/usr/bin/env python3
"""ipv6.py: LISTEN='[::]:8080', as config.cfg.example suggests, serves over
IPv6.

    OTP_BIN=build/otp_demo python3 tests/attack/ipv6.py

otp_demo starts with LISTEN='[::]:0' (port 0: a free one, read from its
"listening on http://[::]:PORT" line) and must answer GET / and
GET /healthz over ::1; then with LISTEN='+0' (IPv4 and IPv6 on one
socket) over both 127.0.0.1 and ::1. Before civetweb was built with
USE_IPV6 the first start failed ("cannot start the server").
Skipped (not failed) when this machine has no IPv6 loopback.
Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import http.client
import os
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")


def get(host, port, path):
    c = http.client.HTTPConnection(host, port, timeout=10)
    try:
        c.request("GET", path)
        r = c.getresponse()
        return r.status, r.read()
    finally:
        c.close()


def has_ipv6_loopback():
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


def serve_check(t, label, listen, hosts):
    ctx = h.Ctx("ipv6-" + label, OUT)
    try:
        srv = ctx.start_server({"LISTEN": listen}, base=h.CONSOLE,
                               listen_re=r"listening on (https?)://(?:\[::\]"
                               r"|0\.0\.0\.0):([0-9]+)")
    except h.Fail as e:
        t.check("LISTEN=%r starts" % listen, False, str(e))
        ctx.close()
        return
    try:
        t.check("LISTEN=%r starts" % listen, True)
        for host in hosts:
            try:
                st, body = get(host, srv.port, "/")
                ok = st == 200 and b"<form" in body
                why = "status %d" % st
            except OSError as e:
                ok, why = False, str(e)
            t.check("LISTEN=%r: GET / over %s" % (listen, host), ok, why)
            try:
                st, body = get(host, srv.port, "/healthz")
                ok, why = st == 200, "status %d" % st
            except OSError as e:
                ok, why = False, str(e)
            t.check("LISTEN=%r: GET /healthz over %s" % (listen, host), ok,
                    why)
    finally:
        problems = ctx.close()
        t.check("LISTEN=%r: exits cleanly" % listen, not problems,
                "; ".join(problems))


def main():
    _, t = h.script_checks("ipv6")
    if t.failed:
        return t.done()
    if not has_ipv6_loopback():
        t.skip("serves over ::1", "no IPv6 loopback on this machine")
        return t.done()
    serve_check(t, "any", "[::]:0", ["::1"])
    serve_check(t, "dual", "+0", ["::1", "127.0.0.1"])
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
