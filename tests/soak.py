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

import http.client
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
BIN = os.environ.get("OTP_BIN") or os.path.join(ROOT, "otp_demo")
OUT = os.path.join(ROOT, "tests", "out", "soak")
SECONDS = float(os.environ.get("SOAK_SECONDS") or 600)
CLIENTS = int(os.environ.get("SOAK_CLIENTS") or 6)
SLACK_KIB = int(os.environ.get("SOAK_RSS_SLACK_KIB") or 2048)
INTERVAL = min(60.0, SECONDS / 5)
FORM = "application/x-www-form-urlencoded"
AREA_CODES = (201, 202, 203, 205, 206, 207, 208, 209, 210, 212, 213, 214,
              215, 216, 217, 218)

CONFIG = """LISTEN='127.0.0.1:0'
SMS_PROVIDER='console'
THREADS=8
MAX_PENDING=20000
CODE_TTL=20
MAX_ATTEMPTS=5
RESEND_INTERVAL=0
VERIFY_PER_IP_PER_HOUR=1000000
SMS_PER_NUMBER_PER_HOUR=1000000
SMS_PER_IP_PER_HOUR=1000000
SMS_PER_HOUR=10000000
SMS_PER_DAY=100000000
MESSAGE='Your token is {code}'
"""


class Server:
    def __init__(self):
        shutil.rmtree(OUT, ignore_errors=True)
        os.makedirs(OUT)
        with open(os.path.join(OUT, "config.cfg"), "w") as f:
            f.write(CONFIG)
        env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
        self.errf = open(os.path.join(OUT, "stderr.log"), "w")
        self.proc = subprocess.Popen(
            [BIN, "-c", "config.cfg"], cwd=OUT, env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.errf)
        self.codes = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self._port()

    def _read(self):
        pat = re.compile(rb"SMS to (\+[0-9]+): Your token is ([0-9A-Za-z]+)")
        for line in iter(self.proc.stdout.readline, b""):
            m = pat.search(line)
            if m:
                with self.cond:
                    self.codes[m.group(1).decode()] = m.group(2).decode()
                    self.cond.notify_all()

    def _port(self):
        pat = re.compile(r"listening on http://127\.0\.0\.1:([0-9]+)")
        end = time.monotonic() + 30
        while time.monotonic() < end:
            with open(os.path.join(OUT, "stderr.log")) as f:
                m = pat.search(f.read())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise SystemExit("FAIL start: see %s" % os.path.join(OUT, "stderr.log"))

    def take_code(self, number, timeout=10.0):
        with self.cond:
            self.cond.wait_for(lambda: number in self.codes, timeout)
            return self.codes.pop(number, None)

    def sample(self):
        pid = self.proc.pid
        with open("/proc/%d/status" % pid) as f:
            rss = int(re.search(r"^VmRSS:\s+([0-9]+)", f.read(), re.M)
                      .group(1))
        return rss, len(os.listdir("/proc/%d/fd" % pid))

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return "hung"


class Client:
    def __init__(self, srv, k):
        self.srv, self.k = srv, k
        self.conn = None
        self.sid = self.csrf = self.vid = None
        self.n = 0
        self.requests = 0
        self.bad = []

    def do(self, method, path, body=None, ctype=FORM, expect=(200,)):
        headers = {}
        if body is not None:
            headers["Content-Type"] = ctype
        jar = []
        if self.sid:
            jar.append("otp_sid=" + self.sid)
        if self.vid:
            jar.append("otp_vid=" + self.vid)
        if jar:
            headers["Cookie"] = "; ".join(jar)
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection(
                    "127.0.0.1", self.srv.port, timeout=30)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read().decode("utf-8", "replace")
                break
            except (ConnectionError, http.client.HTTPException):
                # the server closed an idle keep-alive connection
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        self.requests += 1
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        if r.status not in expect:
            self.bad.append("%s %s: %d (want %s)" % (method, path, r.status,
                                                    expect))
        for h in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = h.partition("=")
            value = rest.split(";", 1)[0]
            if name == "otp_sid":
                self.sid = value
            elif name == "otp_vid":
                self.vid = value or None
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', data)
        if m:
            self.csrf = m.group(1)
        return r.status

    def form(self, **fields):
        return urllib.parse.urlencode(fields)

    def flow(self):
        self.sid = self.vid = None
        self.do("GET", "/")
        self.n += 1
        # NPA-555-XXXX, an area code per client (fictional-looking
        # numbers that otp_demo's NANP rules accept)
        number = "+1%d555%04d" % (AREA_CODES[self.k % len(AREA_CODES)],
                                   self.n % 10000)
        if self.do("POST", "/request", self.form(phone=number,
                                                 csrf=self.csrf)) != 200:
            return
        code = self.srv.take_code(number)
        if code is None:
            self.bad.append("no SMS for %s" % number)
            return
        wrong = "".join("1" if c == "0" else "0" for c in code)
        self.do("POST", "/verify", self.form(token=wrong, csrf=self.csrf),
                expect=(403,))
        if self.n % 2:
            self.do("POST", "/verify", self.form(token=code, csrf=self.csrf))
        self.do("GET", "/style.css")
        self.do("GET", "/no-such-page", expect=(404,))
        self.do("POST", "/request", "phone=%zz&csrf=" + self.csrf,
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
    if not os.access(BIN, os.X_OK):
        print("FAIL setup: no executable %s\n0 passed, 1 failed" % BIN)
        return 1
    srv = Server()
    stop = threading.Event()
    clients = [Client(srv, k) for k in range(CLIENTS)]
    threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
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
            if srv.proc.poll() is not None:
                break
            rss, fds = srv.sample()
            reqs = sum(c.requests for c in clients)
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
        alive = srv.proc.poll() is None
        rc = srv.stop()

    results = []

    def check(name, ok, why=""):
        results.append(ok)
        print(("ok %s" % name) if ok else ("FAIL %s: %s" % (name, why)))

    bad = [b for c in clients for b in c.bad]
    check("every answer as expected", not bad,
          "%d, e.g. %s" % (len(bad), bad[:3]))
    check("server alive throughout", alive, "it died (see %s)" % OUT)
    if len(samples) >= 2:
        _, rss0, fds0, _ = samples[0]
        _, rss1, fds1, _ = samples[-1]
        limit = rss0 * 1.05 + SLACK_KIB
        check("RSS flat (%d -> %d KiB, limit %d)" % (rss0, rss1, limit),
              rss1 <= limit, "grew by %d KiB" % (rss1 - rss0))
        check("open fds flat (%d -> %d)" % (fds0, fds1),
              abs(fds1 - fds0) <= 2, "changed by %d" % (fds1 - fds0))
    else:
        check("at least two samples", False, "soak too short")
    check("exit 0 on SIGTERM", rc == 0, "exit %s" % rc)
    passed = sum(results)
    print("%d passed, %d failed" % (passed, len(results) - passed))
    return 0 if passed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
