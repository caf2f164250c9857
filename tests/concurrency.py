#!/usr/bin/env python3
"""concurrency.py: many clients requesting and verifying at once against
the real binary (console sender), for make test-tsan (ThreadSanitizer
build) and as a plain race test.

    OTP_BIN=build-thread/otp_demo python3 tests/concurrency.py

Every check is about outcomes, never timing:
  - parallel POST /request for one number within RESEND_INTERVAL: exactly
    one is sent (200 and one SMS), the others are 429;
  - every code, submitted three times at once with the right session,
    succeeds exactly once; wrong codes, the right code under another
    session, and every replay afterwards fail;
  - MAX_ATTEMPTS wrong codes sent at once lock the verification, so the
    right code fails afterwards;
  - the server logs no sanitizer report and exits 0 on SIGTERM.
Prints "ok NAME" / "FAIL NAME: why" per check, then "N passed, M failed".

Env: OTP_BIN (default ./otp_demo), CONC_CLIENTS (16), CONC_RECORDS (160).
Python standard library only.
"""

import concurrent.futures
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
OUT = os.path.join(ROOT, "tests", "out", "concurrency")
CLIENTS = int(os.environ.get("CONC_CLIENTS") or 16)
RECORDS = int(os.environ.get("CONC_RECORDS") or 160)
MAX_ATTEMPTS = 5
FORM = "application/x-www-form-urlencoded"

CONFIG = """LISTEN='127.0.0.1:0'
SMS_PROVIDER='console'
THREADS=8
MAX_PENDING=4096
MAX_ATTEMPTS=%d
RESEND_INTERVAL=30
VERIFY_PER_IP_PER_HOUR=1000000
SMS_PER_NUMBER_PER_HOUR=1000
SMS_PER_IP_PER_HOUR=1000000
SMS_PER_HOUR=10000000
SMS_PER_DAY=100000000
MESSAGE='Your token is {code}'
""" % MAX_ATTEMPTS


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
        self.sms = {}           # number -> [codes, in order]
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.port = self._port()

    def _read(self):
        pat = re.compile(r"SMS to (\+[0-9]+): Your token is ([0-9A-Za-z]+)")
        with open(os.path.join(OUT, "stdout.log"), "w") as log:
            for raw in iter(self.proc.stdout.readline, b""):
                line = raw.decode("utf-8", "replace")
                log.write(line)
                m = pat.search(line)
                if m:
                    with self.cond:
                        self.sms.setdefault(m.group(1), []).append(m.group(2))
                        self.cond.notify_all()

    def _port(self):
        end = time.monotonic() + 60  # sanitizer builds start slowly
        pat = re.compile(r"listening on http://127\.0\.0\.1:([0-9]+)")
        while time.monotonic() < end:
            with open(os.path.join(OUT, "stderr.log")) as f:
                m = pat.search(f.read())
            if m:
                return int(m.group(1))
            if self.proc.poll() is not None:
                raise SystemExit("FAIL start: exit %s" % self.proc.returncode)
            time.sleep(0.05)
        raise SystemExit("FAIL start: no 'listening on' line")

    def code_for(self, number, timeout=30.0):
        with self.cond:
            self.cond.wait_for(lambda: number in self.sms, timeout)
            codes = self.sms.get(number)
            return codes[-1] if codes else None

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = "hung"
        self.errf.close()
        return rc

    def log(self):
        with open(os.path.join(OUT, "stderr.log")) as f:
            return f.read()


class Session:
    """One browser: a cookie jar on its own keep-alive connection."""

    def __init__(self, port):
        self.port = port
        self.conn = None
        self.sid = self.csrf = None
        self.vid = None
        status, body, cookies = self.do("GET", "/")
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
        if status != 200 or "otp_sid" not in cookies or not m:
            raise AssertionError("GET / gave %d without a session" % status)
        self.sid, self.csrf = cookies["otp_sid"], m.group(1)

    def do(self, method, path, fields=None, vid=None, sid=None):
        # A connection per request: idle keep-alive connections would each
        # hold one of the THREADS workers for keep_alive_timeout_ms.
        headers = {"Connection": "close"}
        body = None
        if fields is not None:
            body = urllib.parse.urlencode(fields)
            headers["Content-Type"] = FORM
        jar = []
        if sid or self.sid:
            jar.append("otp_sid=" + (sid or self.sid))
        if vid:
            jar.append("otp_vid=" + vid)
        if jar:
            headers["Cookie"] = "; ".join(jar)
        for attempt in (0, 1):
            if self.conn is None:
                self.conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                                       timeout=60)
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                data = r.read().decode("utf-8", "replace")
                break
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt:
                    raise
        if r.getheader("Connection", "").lower() == "close":
            self.conn.close()
            self.conn = None
        cookies = {}
        for h in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = h.partition("=")
            cookies[name.strip()] = rest.split(";", 1)[0]
        return r.status, data, cookies

    def request(self, number):
        status, body, cookies = self.do("POST", "/request",
                                        {"phone": number, "csrf": self.csrf})
        if status == 200:
            self.vid = cookies.get("otp_vid")
        return status, cookies.get("otp_vid")

    def verify(self, token, vid=None, sid=None, csrf=None):
        status, body, cookies = self.do(
            "POST", "/verify", {"token": token, "csrf": csrf or self.csrf},
            vid=vid or self.vid, sid=sid)
        return status


def wrong(code):
    """A code of the same length that is not code."""
    return "".join("0" if c != "0" else "1" for c in code)


def main():
    if not os.access(BIN, os.X_OK):
        print("FAIL setup: no executable %s" % BIN)
        print("0 passed, 1 failed")
        return 1
    t0 = time.monotonic()
    srv = Server()
    results = []

    def check(name, ok, why=""):
        results.append((name, ok))
        print(("ok %s" % name) if ok else ("FAIL %s: %s" % (name, why)),
              flush=True)

    pool = concurrent.futures.ThreadPoolExecutor(CLIENTS)
    try:
        # 1. Requests: RECORDS numbers, each asked for three times at once
        # by three sessions; RESEND_INTERVAL lets exactly one through.
        numbers = ["+1201555%04d" % i for i in range(RECORDS)]

        def ask(number):
            sessions = [Session(srv.port) for _ in range(3)]
            barrier = threading.Barrier(3)

            def one(s):
                barrier.wait()
                return s.request(number)

            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                got = list(ex.map(one, sessions))
            winners = [s for s, (st, _) in zip(sessions, got) if st == 200]
            others = sorted(st for st, _ in got if st != 200)
            return number, winners, others

        asked = list(pool.map(ask, numbers))
        bad = [(n, len(w), o) for n, w, o in asked
               if len(w) != 1 or o != [429, 429]]
        check("parallel requests for one number: one 200, two 429", not bad,
              "%d numbers, e.g. %s" % (len(bad), bad[:3]))
        time.sleep(0.5)
        counts = {n: len(srv.sms.get(n, [])) for n in numbers}
        extra = {n: c for n, c in counts.items() if c != 1}
        check("one SMS per number", not extra,
              "%d numbers, e.g. %s" % (len(extra), list(extra.items())[:3]))
        owners = {n: w[0] for n, w, _ in asked if len(w) == 1}

        # 2. Verifies: for each record at once: the right code three times
        # (same session), a wrong code twice, and the right code with
        # another record's session and vid.
        items = list(owners.items())
        jobs = []
        for i, (number, s) in enumerate(items):
            code = srv.code_for(number)
            other = items[(i + 1) % len(items)][1]
            jobs += [("right", number, s, code, None)] * 3
            jobs += [("wrong", number, s, wrong(code), None)] * 2
            jobs.append(("stolen", number, other, code, s.vid))
        # Each job on its own session object sharing the cookies, so that
        # the three right submissions really are on three connections.

        def run(job):
            kind, number, s, code, vid = job
            clone = Session.__new__(Session)
            clone.port, clone.conn = s.port, None
            clone.sid, clone.csrf, clone.vid = s.sid, s.csrf, s.vid
            st = clone.verify(code, vid=vid)
            if clone.conn is not None:
                clone.conn.close()
            return kind, number, st

        import random
        random.seed(5)
        random.shuffle(jobs)
        wins = {}
        unexpected = []
        for kind, number, st in pool.map(run, jobs):
            if st == 200:
                wins.setdefault(number, []).append(kind)
            elif st != 403:
                unexpected.append((kind, number, st))
        once = [n for n in owners if wins.get(n) != ["right"]]
        check("each right code succeeds exactly once", not once,
              "%d records, e.g. %s" % (len(once), [(n, wins.get(n))
                                                    for n in once[:3]]))
        others = [(n, k) for n, ks in wins.items() for k in ks
                  if k != "right"]
        check("wrong and stolen codes never succeed", not others,
              str(others[:3]))
        check("every failure is a 403", not unexpected, str(unexpected[:3]))

        # 3. Replays after success: all fail.
        def replay(item):
            number, s = item
            return s.verify(srv.code_for(number))

        replays = list(pool.map(replay, items))
        check("replayed codes fail", all(st == 403 for st in replays),
              "statuses %s" % sorted(set(replays)))

        # 4. MAX_ATTEMPTS wrong codes at once lock a fresh verification.
        locked_numbers = ["+1203555%04d" % i
                          for i in range(min(40, RECORDS))]

        def lock(number):
            s = Session(srv.port)
            st, _ = s.request(number)
            if st != 200:
                return number, "request %d" % st
            code = srv.code_for(number)
            barrier = threading.Barrier(2 * MAX_ATTEMPTS)

            def guess(_):
                c = Session.__new__(Session)
                c.port, c.conn = s.port, None
                c.sid, c.csrf, c.vid = s.sid, s.csrf, s.vid
                barrier.wait()
                return c.verify(wrong(code))

            with concurrent.futures.ThreadPoolExecutor(2 * MAX_ATTEMPTS) as ex:
                guesses = list(ex.map(guess, range(2 * MAX_ATTEMPTS)))
            if any(g == 200 for g in guesses):
                return number, "a wrong code succeeded"
            st = s.verify(code)
            return number, None if st == 403 else "right code after "\
                "%d wrong: %d" % (2 * MAX_ATTEMPTS, st)

        bad = [(n, why) for n, why in pool.map(lock, locked_numbers) if why]
        check("parallel wrong codes lock the verification", not bad,
              "%d, e.g. %s" % (len(bad), bad[:3]))
    except (AssertionError, OSError, http.client.HTTPException) as e:
        check("no errors", False, "%s: %s" % (type(e).__name__, e))
    finally:
        pool.shutdown(wait=True)
        rc = srv.stop()
    log = srv.log()
    reports = re.findall(r"WARNING: ThreadSanitizer: [^\n]*|"
                         r"ERROR: AddressSanitizer: [^\n]*|"
                         r"runtime error: [^\n]*", log)
    check("no sanitizer reports", not reports,
          "%d, first: %s (see %s)" % (len(reports), reports[:1],
                                      os.path.join(OUT, "stderr.log")))
    check("exit 0 on SIGTERM", rc == 0, "exit %s" % rc)
    passed = sum(1 for _, ok in results if ok)
    failed = len(results) - passed
    print("%d records, %d clients, %.1f s" % (RECORDS, CLIENTS,
                                              time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
