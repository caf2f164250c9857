#!/usr/bin/env python3
"""idle_tls.py: idle and stalled TLS clients cost no CPU and lock no one out.

    python3 tests/static/idle_tls.py --bin BIN [--qemu CMD]
    python3 tests/static/idle_tls.py --addr 127.0.0.1:PORT --pid PID

With --bin it starts BIN (otp_demo, or tests/static/tls_server) with a
self-signed EC certificate on a free TLS port (settings through OTP_LISTEN,
OTP_CERT_FILE, OTP_THREADS=4) and stops it at the end; otherwise it tests
the running server at --addr, whose CPU time it reads from /proc/PID/stat.

    silent    60 TCP connections to the TLS port that never send a byte;
              a real HTTPS request still succeeds within 1 s, and the
              server uses under 10% of one core over the next 5 s
    stalled   2 connections that send the first bytes of a ClientHello and
              stop (they reach a worker's handshake); the same two checks,
              then the server drops them at its handshake deadline (10 s
              at most; 20 s allowed)

Before civetweb/patches/0001 a worker spun at 100% CPU per such client;
before 0004 sixty silent clients held every worker. Python stdlib only.
Prints "ok NAME" / "FAIL NAME: why", then "N passed, M failed".
"""

import argparse
import http.client
import os
import re
import shlex
import socket
import ssl
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(os.path.dirname(HERE), "out", "idle_tls")
SILENT = 60
STALLED = 2             # fewer than the server's 4 workers
REQUEST_BOUND = 1.0     # seconds, for one real HTTPS request
CPU_BOUND = 0.10        # share of one core
CPU_WINDOW = 5.0        # seconds
DROP_BOUND = 20.0       # seconds until a stalled handshake is dropped
# A TLS record header announcing a 512-byte handshake message: the server
# reads it and waits for the rest.
PARTIAL_HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01])


class Fail(Exception):
    pass


def cpu_seconds(pid):
    """utime + stime of pid, in seconds (fields 14 and 15 of stat)."""
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def https_get(host, port):
    """One real request on a new connection; returns (status, seconds)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE     # self-signed, and not the point here
    t0 = time.monotonic()
    conn = http.client.HTTPSConnection(host, port, context=ctx, timeout=30)
    try:
        conn.request("GET", "/")
        r = conn.getresponse()
        r.read()
        return r.status, time.monotonic() - t0
    finally:
        conn.close()


def open_clients(host, port, n, first_bytes):
    socks = []
    for _ in range(n):
        s = socket.create_connection((host, port), timeout=10)
        if first_bytes:
            s.sendall(first_bytes)
        socks.append(s)
    return socks


def check_request_and_cpu(host, port, pid):
    status, secs = https_get(host, port)
    if status != 200:
        raise Fail("GET / is %d" % status)
    if secs > REQUEST_BOUND:
        raise Fail("the real request took %.2f s (bound %.1f s)"
                   % (secs, REQUEST_BOUND))
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(CPU_WINDOW)
    share = (cpu_seconds(pid) - c0) / (time.monotonic() - t0)
    if share > CPU_BOUND:
        raise Fail("server used %.0f%% of a core over %.0f s (bound %.0f%%)"
                   % (share * 100, CPU_WINDOW, CPU_BOUND * 100))
    return "request %.2f s, CPU %.1f%%" % (secs, share * 100)


def wait_dropped(socks):
    """Fails unless the server closes every socket within DROP_BOUND."""
    end = time.monotonic() + DROP_BOUND
    for s in socks:
        s.settimeout(max(0.1, end - time.monotonic()))
        try:
            while s.recv(4096):
                pass        # an alert, then EOF
        except socket.timeout:
            raise Fail("a stalled handshake was still open after %.0f s"
                       % DROP_BOUND)
        except ConnectionResetError:
            pass


def start_server(binary, qemu):
    os.makedirs(OUT, exist_ok=True)
    pem = os.path.join(OUT, "ec.pem")
    if not os.path.exists(pem):
        key, crt = pem + ".key", pem + ".crt"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "ec",
                        "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                        "-days", "30", "-subj", "/CN=localhost",
                        "-keyout", key, "-out", crt],
                       check=True, capture_output=True)
        with open(pem, "w") as f:
            for p in (crt, key):
                with open(p) as src:
                    f.write(src.read())
    cfg = os.path.join(OUT, "config.cfg")
    open(cfg, "w").close()
    env = dict(os.environ, OTP_LISTEN="127.0.0.1:0s", OTP_CERT_FILE=pem,
               OTP_THREADS="4")
    err = open(os.path.join(OUT, "server.err"), "w+")
    proc = subprocess.Popen(shlex.split(qemu) + [binary, "-c", cfg],
                            env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=err)
    end = time.monotonic() + 60
    while time.monotonic() < end and proc.poll() is None:
        err.seek(0)
        m = re.search(r"listening on https://127\.0\.0\.1:([0-9]+)",
                      err.read())
        if m:
            return proc, int(m.group(1))
        time.sleep(0.1)
    proc.kill()
    raise Fail("no 'listening on https://' line (see %s)" % err.name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin")
    ap.add_argument("--qemu", default="")
    ap.add_argument("--addr", help="HOST:PORT of a running TLS listener")
    ap.add_argument("--pid", type=int, help="its process id")
    a = ap.parse_args()
    passed = failed = 0
    proc = None
    try:
        if a.bin:
            proc, port = start_server(os.path.abspath(a.bin), a.qemu)
            host, pid = "127.0.0.1", proc.pid
        elif a.addr and a.pid:
            host, port = a.addr.rsplit(":", 1)
            port = int(port)
            pid = a.pid
        else:
            ap.error("give --bin, or --addr and --pid")
        for name, first, n in (("silent", b"", SILENT),
                               ("stalled", PARTIAL_HELLO, STALLED)):
            socks = []
            try:
                socks = open_clients(host, port, n, first)
                time.sleep(0.5)     # let the server take them
                detail = check_request_and_cpu(host, port, pid)
                if first:
                    wait_dropped(socks)
                    detail += ", dropped by the deadline"
                passed += 1
                print("ok %s (%d clients: %s)" % (name, n, detail),
                      flush=True)
            except (Fail, OSError) as e:
                failed += 1
                print("FAIL %s: %s" % (name, e), flush=True)
            finally:
                for s in socks:
                    s.close()
    except Fail as e:
        failed += 1
        print("FAIL start: %s" % e, flush=True)
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
