#!/usr/bin/env python3
"""soak.py: mixed traffic against the real binary for a bounded time
(make soak; not part of make test), with the server's RSS and open file
descriptors sampled every minute. They must stay flat.

    OTP_BIN=./otp_demo SOAK_SECONDS=600 python3 tests/soak.py

Traffic, from SOAK_CLIENTS (6) keep-alive clients, each looping: GET /
(a new session), POST /request for a new number (console sender), a wrong
code, then the right code in half of the flows (the rest expire after
CODE_TTL, 20 s here, so the sweeper keeps freeing records), plus
/style.css, a 404, a malformed form (400) and an oversized one (413,
connection closed).

Pass: every answer is the expected one; RSS at the end is within
SOAK_RSS_SLACK_KIB (2048) + 5% of the first sample taken after the
warm-up (one sample interval, so the code table has reached its steady
state); open fds at the end equal that sample's, give or take 2 (a
connection being accepted); the server exits 0 on SIGTERM.
Prints one line per sample and "N passed, M failed".
"""

import os
import re
import sys
import threading
import time
import urllib.parse

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "soak")
SECONDS = float(os.environ.get("SOAK_SECONDS") or 600)
CLIENTS = int(os.environ.get("SOAK_CLIENTS") or 6)
SLACK_KIB = int(os.environ.get("SOAK_RSS_SLACK_KIB") or 2048)
INTERVAL = min(60.0, SECONDS / 5)
AREA_CODES = (201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214,
              215, 216, 217, 218)

CONFIG = dict(h.CONSOLE, **h.LIMITS_OFF)
CONFIG.update(THREADS=8, MAX_PENDING=20000, CODE_TTL=20, MAX_ATTEMPTS=5,
              MESSAGE="Your token is {code}")


class User:
    """One keep-alive client looping through flows; bad collects every
    answer that was not the expected one."""

    def __init__(self, srv, k):
        self.srv, self.k = srv, k
        self.b = h.Client(srv.port, keep_alive=True, timeout=30)
        self.n = 0
        self.requests = 0
        self.bad = []

    def do(self, method, path, body=None, expect=(200,)):
        hdrs = {"Content-Type": h.FORM} if body is not None else None
        r = self.b.send(method, path, body, headers=hdrs)
        self.requests += 1
        if r.status not in expect:
            self.bad.append("%s %s: %d (want %s)" % (method, path, r.status,
                                                    expect))
        return r.status

    def form(self, **fields):
        return urllib.parse.urlencode(fields)

    def flow(self):
        self.b.cookies.clear()      # a new session
        self.do("GET", "/")
        self.n += 1
        # NPA-555-XXXX, an area code per client (fictional-looking
        # numbers that otp_demo's NANP rules accept)
        number = "+1%d555%04d" % (AREA_CODES[self.k % len(AREA_CODES)],
                                   self.n % 10000)
        out0 = len(self.srv.out_lines)
        if self.do("POST", "/request", self.form(phone=number,
                                                 csrf=self.b.csrf)) != 200:
            return
        got = self.srv.wait_stdout(r"SMS to %s: Your token is ([0-9A-Za-z]+)"
                                   % re.escape(number), out0, 10.0)
        if got is None:
            self.bad.append("no SMS for %s" % number)
            return
        code = got[1].group(1)
        wrong = "".join("1" if c == "0" else "0" for c in code)
        self.do("POST", "/verify", self.form(token=wrong, csrf=self.b.csrf),
                expect=(403,))
        if self.n % 2:
            self.do("POST", "/verify", self.form(token=code,
                                                 csrf=self.b.csrf))
        self.do("GET", "/style.css")
        self.do("GET", "/no-such-page", expect=(404,))
        self.do("POST", "/request", "phone=%zz&csrf=" + self.b.csrf,
                expect=(400,))
        if self.n % 10 == 0:
            self.do("POST", "/request", "phone=" + "1" * 4096,
                    expect=(413,))

    def run(self, stop):
        try:
            while not stop.is_set():
                self.flow()
        except Exception as e:  # noqa: BLE001
            self.bad.append("%s: %s" % (type(e).__name__, e))


def main():
    if not os.access(h.BIN, os.X_OK):
        print("FAIL setup: no executable %s\n0 passed, 1 failed" % h.BIN)
        return 1
    srv = h.Server(h.fresh_dir(OUT), CONFIG, stderr="file", start_timeout=30,
                   stop_timeout=30)
    try:
        srv.start()
    except h.Fail as e:
        srv.stop()
        print("FAIL start: %s (see %s)\n0 passed, 1 failed" % (e, OUT))
        return 1
    stop = threading.Event()
    users = [User(srv, k) for k in range(CLIENTS)]
    threads = [threading.Thread(target=u.run, args=(stop,)) for u in users]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    samples = []
    print("soak: %d s, %d clients, a sample every %.0f s" % (
        SECONDS, CLIENTS, INTERVAL), flush=True)
    try:
        while True:
            left = t0 + SECONDS - time.monotonic()
            time.sleep(max(0.0, min(INTERVAL, left)))
            if not srv.alive():
                break
            rss, fds = srv.rss_kib(), srv.fds()
            reqs = sum(u.requests for u in users)
            samples.append((time.monotonic() - t0, rss, fds, reqs))
            print("t=%4.0fs  rss %6d KiB  fds %3d  requests %8d  (%.0f/s)" % (
                samples[-1][0], rss, fds, reqs,
                reqs / max(1e-9, samples[-1][0])), flush=True)
            if left <= INTERVAL:
                break
    finally:
        stop.set()
        for t in threads:
            t.join(60)
        alive = srv.alive()
        rc = srv.stop()

    t = h.Checks()
    bad = [b for u in users for b in u.bad]
    t.check("every answer as expected", not bad,
            "%d, e.g. %s" % (len(bad), bad[:3]))
    t.check("server alive throughout", alive, "it died (see %s)" % OUT)
    if len(samples) >= 2:
        _, rss0, fds0, _ = samples[0]
        _, rss1, fds1, _ = samples[-1]
        limit = rss0 * 1.05 + SLACK_KIB
        t.check("RSS flat (%d -> %d KiB, limit %d)" % (rss0, rss1, limit),
                rss1 <= limit, "grew by %d KiB" % (rss1 - rss0))
        t.check("open fds flat (%d -> %d)" % (fds0, fds1),
                abs(fds1 - fds0) <= 2, "changed by %d" % (fds1 - fds0))
    else:
        t.check("at least two samples", False, "soak too short")
    t.check("exit 0 on SIGTERM", rc == 0, "exit %s" % rc)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
