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
import sys
import threading
import time

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "concurrency")
CLIENTS = int(os.environ.get("CONC_CLIENTS") or 16)
RECORDS = int(os.environ.get("CONC_RECORDS") or 160)
MAX_ATTEMPTS = 5

CONFIG = dict(h.CONSOLE, THREADS=8, MAX_PENDING=4096,
              MAX_ATTEMPTS=MAX_ATTEMPTS, RESEND_INTERVAL=30,
              VERIFY_PER_IP_PER_HOUR=1000000, SMS_PER_NUMBER_PER_HOUR=1000,
              SMS_PER_IP_PER_HOUR=1000000, SMS_PER_HOUR=10000000,
              SMS_PER_DAY=100000000, MESSAGE="Your token is {code}")
SMS = r"SMS to (%s): Your token is ([0-9A-Za-z]+)"


def sms_codes(srv):
    """{number: [codes sent to it, in order]} from the console's lines."""
    out = {}
    for line in srv.log_lines("out"):
        m = re.search(SMS % r"\+[0-9]+", line)
        if m:
            out.setdefault(m.group(1), []).append(m.group(2))
    return out


def code_for(srv, number, timeout=30.0):
    """The last code sent to number, once one is; None if none comes."""
    if srv.wait_stdout(SMS % re.escape(number), 0, timeout) is None:
        return None
    return sms_codes(srv)[number][-1]


def session(port):
    """One browser, on a connection of its own per request: idle
    keep-alive connections would each hold one of the THREADS workers for
    keep_alive_timeout_ms."""
    return h.Client(port, headers={"Connection": "close"},
                    timeout=60).session()


def verify(s, token, vid=None):
    """s's session (another connection) sends token for its verification,
    or vid's; returns the status."""
    c = s.clone()
    if vid:
        c.cookies["otp_vid"] = vid
    return c.verify(token).status


def wrong(code):
    """A code of the same length that is not code."""
    return "".join("0" if c != "0" else "1" for c in code)


def main():
    if not os.access(h.BIN, os.X_OK):
        print("FAIL setup: no executable %s" % h.BIN)
        print("0 passed, 1 failed")
        return 1
    t0 = time.monotonic()
    srv = h.Server(h.fresh_dir(OUT), CONFIG, stderr="file",
                   start_timeout=60,    # sanitizer builds start slowly
                   stop_timeout=60)
    try:
        srv.start()
    except h.Fail as e:
        srv.stop()
        print("FAIL start: %s" % e)
        print("0 passed, 1 failed")
        return 1
    t = h.Checks()
    check = t.check

    pool = concurrent.futures.ThreadPoolExecutor(CLIENTS)
    try:
        # 1. Requests: RECORDS numbers, each asked for three times at once
        # by three sessions; RESEND_INTERVAL lets exactly one through.
        numbers = ["+1201555%04d" % i for i in range(RECORDS)]

        def ask(number):
            sessions = [session(srv.port) for _ in range(3)]
            barrier = threading.Barrier(3)

            def one(s):
                barrier.wait()
                return s.request_code(number).status

            with concurrent.futures.ThreadPoolExecutor(3) as ex:
                got = list(ex.map(one, sessions))
            winners = [s for s, st in zip(sessions, got) if st == 200]
            others = sorted(st for st in got if st != 200)
            return number, winners, others

        asked = list(pool.map(ask, numbers))
        bad = [(n, len(w), o) for n, w, o in asked
               if len(w) != 1 or o != [429, 429]]
        check("parallel requests for one number: one 200, two 429", not bad,
              "%d numbers, e.g. %s" % (len(bad), bad[:3]))
        time.sleep(0.5)
        sent = sms_codes(srv)
        counts = {n: len(sent.get(n, [])) for n in numbers}
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
            code = code_for(srv, number)
            other = items[(i + 1) % len(items)][1]
            jobs += [("right", number, s, code, None)] * 3
            jobs += [("wrong", number, s, wrong(code), None)] * 2
            jobs.append(("stolen", number, other, code,
                         s.cookies.get("otp_vid")))
        # Each job on its own connection with the session's cookies, so
        # that the three right submissions really are on three.

        def run(job):
            kind, number, s, code, vid = job
            return kind, number, verify(s, code, vid)

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
            return verify(s, code_for(srv, number))

        replays = list(pool.map(replay, items))
        check("replayed codes fail", all(st == 403 for st in replays),
              "statuses %s" % sorted(set(replays)))

        # 4. MAX_ATTEMPTS wrong codes at once lock a fresh verification.
        locked_numbers = ["+1203555%04d" % i
                          for i in range(min(40, RECORDS))]

        def lock(number):
            s = session(srv.port)
            st = s.request_code(number).status
            if st != 200:
                return number, "request %d" % st
            code = code_for(srv, number)
            barrier = threading.Barrier(2 * MAX_ATTEMPTS)

            def guess(_):
                barrier.wait()
                return verify(s, wrong(code))

            with concurrent.futures.ThreadPoolExecutor(2 * MAX_ATTEMPTS) as ex:
                guesses = list(ex.map(guess, range(2 * MAX_ATTEMPTS)))
            if any(g == 200 for g in guesses):
                return number, "a wrong code succeeded"
            st = verify(s, code)
            return number, None if st == 403 else "right code after "\
                "%d wrong: %d" % (2 * MAX_ATTEMPTS, st)

        bad = [(n, why) for n, why in pool.map(lock, locked_numbers) if why]
        check("parallel wrong codes lock the verification", not bad,
              "%d, e.g. %s" % (len(bad), bad[:3]))
    except (h.Fail, OSError, http.client.HTTPException) as e:
        check("no errors", False, "%s: %s" % (type(e).__name__, e))
    finally:
        pool.shutdown(wait=True)
        rc = srv.stop()
    reports = re.findall(r"WARNING: ThreadSanitizer: [^\n]*|"
                         r"ERROR: AddressSanitizer: [^\n]*|"
                         r"runtime error: [^\n]*", srv.log())
    check("no sanitizer reports", not reports,
          "%d, first: %s (see %s)" % (len(reports), reports[:1],
                                      srv.log_path("err")))
    check("exit 0 on SIGTERM", rc == 0, "exit %s" % rc)
    print("%d records, %d clients, %.1f s" % (RECORDS, CLIENTS,
                                              time.monotonic() - t0))
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
