#!/usr/bin/env python3
"""slow_clients.py: slow and many connections do not deny service.

    OTP_BIN=build/otp_demo python3 tests/attack/slow_clients.py [-k NAME]

The attack, as a slowloris tool runs it: many connections that each send
one byte a second and never finish their request, and reconnect (at their
next byte) whenever the server drops them. Meanwhile a normal client
fetches GET / on a new connection 20 times, one every 0.1 s, starting
2 s into the attack; the check is that its p99 (nearest rank: with 20
tries, the slowest) stays under 1 s. That bound has a wide margin: a
served page takes milliseconds, a stalled one seconds (before the
waiting room, 8 slow connections stalled every worker for up to 5 s).
A scenario over the bound runs once more on a fresh server, and only a
second run over it fails: on a loaded machine one try in 20 can wait
for the scheduler, while an attack that works stalls every run.

Each scenario runs against a fresh otp_demo with the default config
(THREADS 8) on 127.0.0.1:

    one-address   500 slow request heads from 127.0.0.1, the address the
                  normal client uses too (one NAT'd network)
    64-addresses  64 slow request heads, one from each of 127.0.0.2 ..
                  127.0.0.65 (the source address is bound)
    slow-body     40 complete POST /request heads with Content-Length 1000
                  whose body then comes a byte a second
    keep-alive    40 connections that send one complete request, then the
                  next one a byte a second on the same connection
    tls-hello     40 ClientHellos a byte a second, on a TLS listener (the
                  normal client uses HTTPS there)

Also, with 500 slow connections held, the server's RSS is printed (the
figure README quotes), and each attacking connection must be gone by the
head deadline (request_timeout_ms, 5 s; 8 s allowed). And with the
waiting room full (600 slow heads from 127.0.0.1, the room has 512
places), a client on 127.0.0.66 whose request comes in two parts 0.5 s
apart (it needs a place meanwhile) still gets its page: a full room makes
way at the expense of the address holding the most places.

The module also serves bench/bench.py's slow-connection table (measure()).
Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import http.client
import math
import os
import selectors
import socket
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")

TRIES = 20
GAP = 0.1               # seconds between the normal client's tries
WARMUP = 2.0            # seconds of attack before the first try
BOUND = 1.0             # p99 of the normal client, seconds
TRY_TIMEOUT = 10.0      # one try that takes longer counts as this long


def raise_fd_limit(want=8192):
    """Hundreds of attacking sockets need more than a 1024 soft limit."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass


def start(name, overrides=None, binary=None):
    """otp_demo (binary) with the console sender and overrides, in a Ctx
    of its own; ctx.close() stops it and gives the problems."""
    ctx = h.Ctx("slow-" + name, OUT)
    try:
        ctx.start_server(overrides, base=h.CONSOLE,
                         command=[binary] if binary else None)
    except BaseException:
        ctx.close()
        raise
    return ctx

# A TLS record header announcing a 512-byte handshake message, and then
# its bytes: a ClientHello that never completes.
HELLO = bytes([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03,
               0x03]) + bytes(range(32)) * 16


class Slow:
    """n attacking connections from the given source addresses, each
    sending its next byte once a second; mode says which bytes:

      head       "GET / HTTP/1.1", "Host", then header bytes forever
      body       a complete POST head with Content-Length 1000, then the
                 body a byte at a time
      keepalive  a complete GET /healthz, then the next request's head a
                 byte at a time (answers are read and dropped)
      tls        a ClientHello a byte at a time

    A connection the server closes or resets is opened again at its next
    second. One thread drives them all (selectors), so 500 are cheap."""

    def __init__(self, port, n, sources=("127.0.0.1",), mode="head",
                 host="127.0.0.1", family=socket.AF_INET):
        self.port, self.n, self.sources, self.mode = port, n, sources, mode
        self.host, self.family = host, family
        self.stop_ev = threading.Event()
        self.socks = [None] * n
        self.sent = [0] * n
        self.opened = 0         # connections made, reconnects included
        self.refused = 0        # connects that failed
        self.thread = threading.Thread(target=self.run, daemon=True)

    def first(self):
        if self.mode == "head":
            return b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        if self.mode == "body":
            return (b"POST /request HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                    b"Content-Type: application/x-www-form-urlencoded\r\n"
                    b"Content-Length: 1000\r\n\r\n")
        if self.mode == "keepalive":
            return b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
        return HELLO[:1]

    def next_byte(self, i):
        k = self.sent[i]
        if self.mode == "tls":
            return HELLO[k % len(HELLO):k % len(HELLO) + 1]
        if self.mode == "body":
            return b"p"
        line = b"X-Slow-%d: a\r\n" % (k // 16) if self.mode == "head" \
            else b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        return line[k % len(line):k % len(line) + 1]

    def open(self, i, sel):
        s = socket.socket(self.family, socket.SOCK_STREAM)
        try:
            s.bind((self.sources[i % len(self.sources)], 0))
            s.settimeout(0.5)
            s.connect((self.host, self.port))
            s.setblocking(False)
            s.send(self.first())
        except OSError:
            s.close()
            self.refused += 1
            return
        self.socks[i] = s
        self.sent[i] = 0
        self.opened += 1
        sel.register(s, selectors.EVENT_READ, i)

    def drop(self, i, sel):
        s = self.socks[i]
        if s is not None:
            sel.unregister(s)
            s.close()
            self.socks[i] = None

    def run(self):
        sel = selectors.DefaultSelector()
        tick = time.monotonic()
        while not self.stop_ev.is_set():
            for i in range(self.n):
                if self.stop_ev.is_set():
                    break
                if self.socks[i] is None:
                    self.open(i, sel)
                    continue
                try:
                    self.socks[i].send(self.next_byte(i))
                    self.sent[i] += 1
                except OSError:
                    self.drop(i, sel)
            tick += 1.0
            while not self.stop_ev.is_set():
                left = tick - time.monotonic()
                if left <= 0:
                    break
                for key, _ in sel.select(min(left, 0.2)):
                    i = key.data
                    try:
                        data = self.socks[i].recv(65536)
                    except BlockingIOError:
                        continue
                    except OSError:
                        data = b""
                    if not data:
                        self.drop(i, sel)
        for i in range(self.n):
            self.drop(i, sel)
        sel.close()

    def held(self):
        return sum(1 for s in self.socks if s is not None)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_ev.set()
        self.thread.join(10)


def normal_get(port, tls=False, host="127.0.0.1"):
    """GET / on a new connection; seconds until the whole page is in,
    TRY_TIMEOUT if it fails or takes longer."""
    t0 = time.monotonic()
    try:
        if tls:
            c = http.client.HTTPSConnection(host, port,
                                            context=h.insecure_tls(),
                                            timeout=TRY_TIMEOUT)
        else:
            c = http.client.HTTPConnection(host, port, timeout=TRY_TIMEOUT)
        try:
            c.request("GET", "/")
            r = c.getresponse()
            body = r.read()
            if r.status != 200 or b"<form" not in body:
                return TRY_TIMEOUT
        finally:
            c.close()
    except OSError:
        return TRY_TIMEOUT
    return min(time.monotonic() - t0, TRY_TIMEOUT)


def tries(port, tls=False, n=TRIES, gap=GAP, host="127.0.0.1"):
    out = []
    for _ in range(n):
        t0 = time.monotonic()
        out.append(normal_get(port, tls, host))
        time.sleep(max(0.0, gap - (time.monotonic() - t0)))
    return out


def pct(xs, p):
    """Nearest-rank percentile (p99 of 20 values is the largest)."""
    s = sorted(xs)
    return s[max(0, int(math.ceil(p / 100.0 * len(s))) - 1)]


SCENARIOS = {
    # name: (connections, sources, mode, TLS listener)
    "one-address": (500, ["127.0.0.1"], "head", False),
    "64-addresses": (64, ["127.0.0.%d" % (2 + i) for i in range(64)],
                     "head", False),
    "slow-body": (40, ["127.0.0.1"], "body", False),
    "keep-alive": (40, ["127.0.0.1"], "keepalive", False),
    "tls-hello": (40, ["127.0.0.1"], "tls", True),
}


def measure(name, n, sources, mode, tls=False, binary=None, overrides=None,
            rss=False, ntries=TRIES):
    """One run: a fresh server, n attacking connections (n may be 0), the
    normal client's tries. Returns a dict of figures; raises on setup
    problems."""
    cfg = dict(overrides or {})
    if tls:
        cfg.setdefault("LISTEN", "127.0.0.1:0s")
        cfg.setdefault("CERT_FILE", "otp_demo.pem")
    ctx = start(name, cfg, binary)
    srv = ctx.server
    res = {"name": name, "n": n}
    try:
        res["rss_idle_kib"] = srv.rss_kib()
        normal_get(srv.port, tls)           # warm: first page, TLS cert
        with Slow(srv.port, n, sources, mode) as atk:
            time.sleep(WARMUP if n else 0)
            res["times"] = tries(srv.port, tls, ntries)
            res["held"] = atk.held()
            res["opened"] = atk.opened
            if rss:
                res["rss_kib"] = srv.rss_kib()
        res["alive"] = srv.alive()
    finally:
        res["problems"] = ctx.close()
    res["p50"] = pct(res["times"], 50)
    res["p99"] = pct(res["times"], 99)
    res["max"] = max(res["times"])
    return res


def split_get(port, source, pause=0.5):
    """GET / from source, its head in two parts pause seconds apart;
    returns (status or error, seconds)."""
    t0 = time.monotonic()
    s = socket.socket()
    try:
        s.bind((source, 0))
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        time.sleep(pause)
        s.sendall(b"Connection: close\r\n\r\n")
        answers, _, _ = h.read_answers(s, 10.0, want=1)
        st = h.statuses(answers)
        return (st[0] if st else "closed without an answer",
                time.monotonic() - t0)
    except OSError as e:
        return str(e), time.monotonic() - t0
    finally:
        s.close()


def full_room(t):
    ctx = start("full-room")
    try:
        port = ctx.server.port
        with Slow(port, 600, ["127.0.0.1"], "head") as atk:
            time.sleep(WARMUP + 1)
            held = atk.held()
            res = [split_get(port, "127.0.0.66") for _ in range(3)]
        t.check("full room (%d slow from 127.0.0.1): a two-part request "
                "from 127.0.0.66 is served" % held,
                all(st == 200 and dt < 2.0 for st, dt in res),
                "got %s" % ["%s in %.2f s" % r for r in res])
    finally:
        problems = ctx.close()
    t.check("full room: server exits cleanly", not problems,
            "; ".join(problems))


def head_deadline(t, port):
    """An attacking connection is dropped by the head deadline (5 s) even
    while it keeps sending."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    how = "still open after 12 s"
    while time.monotonic() - t0 < 12:
        s.settimeout(1.0)
        try:
            d = s.recv(4096)
            how = "closed" if not d else "answered %r" % d[:40]
            break
        except socket.timeout:
            pass
        except OSError as e:
            how = "reset (%s)" % e
            break
        try:
            s.send(b"X")
        except OSError as e:
            how = "send failed (%s)" % e
            break
    took = time.monotonic() - t0
    s.close()
    t.check("a slow head is dropped by its deadline (5 s; bound 8 s)",
            took <= 8.0 and how != "still open after 12 s",
            "%s after %.1f s" % (how, took))


def main():
    a, t = h.script_checks("slow")
    if t.failed:
        return t.done()
    raise_fd_limit()
    for name, (n, sources, mode, tls) in SCENARIOS.items():
        if a.k and not any(k in name for k in a.k):
            continue
        try:
            r = measure(name, n, sources, mode, tls,
                        rss=(name == "one-address"))
            if r["p99"] >= BOUND:
                # One slow try in 20 can be the machine, not the server:
                # a scheduler stall on a loaded 2-core box. An attack
                # that works stalls the next run too, so only a second
                # run over the bound fails.
                print("   %s: p99 %.3f s over the bound; once more: %s"
                      % (name, r["p99"], " ".join(
                          "%.2f" % x for x in r["times"])), flush=True)
                r = measure(name, n, sources, mode, tls,
                            rss=(name == "one-address"))
        except Exception as e:  # noqa: BLE001
            t.check("%s: runs" % name, False, "%s: %s" % (type(e).__name__,
                                                          e))
            continue
        times = " ".join("%.2f" % x for x in r["times"])
        t.check("%s: %d slow connections (%s): normal client p99 %.3f s < "
                "%.1f s" % (name, n, mode, r["p99"], BOUND),
                r["p99"] < BOUND, "tries (s): %s" % times)
        print("   %s: p50 %.3f s, p99 %.3f s, max %.3f s; %d of %d "
              "attacking connections open at the end, %d opened in all%s"
              % (name, r["p50"], r["p99"], r["max"], r["held"], n,
                 r["opened"], (", RSS %d KiB (idle %d KiB)" % (
                     r["rss_kib"], r["rss_idle_kib"]))
                 if "rss_kib" in r else ""), flush=True)
        t.check("%s: server alive and exits cleanly" % name,
                r["alive"] and not r["problems"], "; ".join(r["problems"]))
    if not a.k or any(k in "full-room" for k in a.k):
        full_room(t)
    if not a.k or any(k in "deadline" for k in a.k):
        ctx = start("deadline")
        try:
            head_deadline(t, ctx.server.port)
        finally:
            ctx.close()
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
