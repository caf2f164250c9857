#!/usr/bin/env python3
"""smoke.py: the static otp_demo, on its target architecture, end to end.

    python3 tests/static/smoke.py --bin build/static/ARCH/otp_demo \
        --certs DIR [--qemu "qemu-arm-static -cpu arm1176"]

`make test-static ARCH=...` runs it. The binary runs under qemu-user (the
--qemu command, empty for x86_64), against the local HTTPS fake of the SMS
API (tests/fake_api.py, as a separate process) with the test CA from
tests/gen_certs.sh (--certs). It is the subset of tests/integration.py that
proves the binary works on that CPU, each case one step of the flow:

    version      --version answers under qemu
    index        GET / is the form, with a session cookie and a CSRF token
    bad_input    an invalid phone number is 400, and nothing is sent
    request      POST /request sends one SMS over HTTPS (TLS, CA check and
                 the JSON body, through libcurl + mbedTLS on that CPU)
    wrong_code   a wrong code is 403 "Wrong code."
    verify       the code from the fake's record is 200, the success page
    api_down     with the fake gone, POST /request is 502, not a hang
    sigterm      SIGTERM exits 0

Python standard library only. qemu-user is slow: timeouts are generous and
nothing is timed. Prints "ok NAME" / "FAIL NAME: why" per case, then
"N passed, M failed"; exits 1 if anything failed. Work files (config,
server log, the fake's record) go to tests/out/static/NAME/.
"""

import argparse
import html
import http.client
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests"))
import harness  # noqa: E402  (its config writer)
API_KEY = "KEYstatic-5be1d2f08c"
FROM = "+12025550111"
TIMEOUT = 60.0          # per HTTP request and per start-up, under qemu


class Fail(Exception):
    pass


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def wait_line(proc, lines, pattern, timeout, what):
    """Waits until one of lines (filled by a reader thread of proc) matches
    pattern; returns the match. Fails at once if proc exits."""
    pat = re.compile(pattern)
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for line in list(lines):
            m = pat.search(line)
            if m:
                return m
        if proc.p.poll() is not None:
            raise Fail("%s exited with status %d" % (what, proc.p.returncode))
        time.sleep(0.05)
    raise Fail("no %r from %s within %.0f s" % (pattern, what, timeout))


def reader(stream, lines, path):
    with open(path, "w") as f:
        for line in iter(stream.readline, ""):
            lines.append(line)
            f.write(line)
            f.flush()


class Proc:
    """A child process whose stdout and stderr are kept in lists and files."""

    def __init__(self, argv, workdir, name, env=None):
        self.out, self.err = [], []
        self.p = subprocess.Popen(argv, cwd=workdir, env=env, text=True,
                                  stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        for stream, lines, suffix in ((self.p.stdout, self.out, "out"),
                                      (self.p.stderr, self.err, "err")):
            threading.Thread(target=reader, daemon=True, args=(
                stream, lines, os.path.join(workdir, "%s.%s" % (name, suffix))
            )).start()

    def stop(self, timeout=TIMEOUT):
        """SIGTERM, then wait; returns the exit status (None if killed)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                return self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                self.p.kill()
                self.p.wait()
                return None
        return self.p.returncode


class Browser:
    """Cookies and the last CSRF token, like a browser with one tab."""

    def __init__(self, port):
        self.port = port
        self.cookies = {}
        self.csrf = ""

    def send(self, method, path, fields=None):
        body, headers = None, {}
        if fields is not None:
            fields = dict(fields, csrf=self.csrf)
            body = urllib.parse.urlencode(fields).encode()
            headers["Content-Type"] = "application/x-www-form-urlencoded"
            headers["Origin"] = "http://127.0.0.1:%d" % self.port
        if self.cookies:
            headers["Cookie"] = "; ".join(
                "%s=%s" % kv for kv in self.cookies.items())
        conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                          timeout=TIMEOUT)
        try:
            conn.request(method, path, body=body, headers=headers)
            r = conn.getresponse()
            data = r.read().decode("utf-8", "replace")
        finally:
            conn.close()
        for v in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = v.partition("=")
            value = rest.split(";", 1)[0]
            if re.search(r"max-age=0\b", v, re.I) or value == "":
                self.cookies.pop(name.strip(), None)
            else:
                self.cookies[name.strip()] = value
        m = re.search(r'<input[^>]*name="csrf"[^>]*value="([^"]*)"', data)
        if m:
            self.csrf = html.unescape(m.group(1))
        return r.status, data

    def post(self, path, **fields):
        return self.send("POST", path, fields)


def fake_records(path):
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


class Run:
    def __init__(self, args):
        self.args = args
        self.name = os.path.basename(os.path.dirname(
            os.path.abspath(args.bin)))
        self.dir = os.path.join(ROOT, "tests", "out", "static", self.name)
        os.makedirs(self.dir, exist_ok=True)
        self.qemu = shlex.split(args.qemu)
        self.record = os.path.join(self.dir, "api.jsonl")
        self.fake = self.server = self.browser = None
        self.code = None
        self.passed = self.failed = 0

    def case(self, name, fn):
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - a case reports any failure
            self.failed += 1
            print("FAIL %s: %s" % (name, e), flush=True)
            return False
        self.passed += 1
        print("ok %s" % name, flush=True)
        return True

    # -- set-up ---------------------------------------------------------
    def start_fake(self):
        if os.path.exists(self.record):
            os.unlink(self.record)
        c = os.path.join(self.args.certs, "server.pem")
        k = os.path.join(self.args.certs, "server.key")
        self.fake = Proc([sys.executable,
                          os.path.join(ROOT, "tests", "fake_api.py"),
                          "--cert", c, "--key", k, "--port", "0",
                          "--record", self.record, "--api-key", API_KEY],
                         self.dir, "fake")
        m = wait_line(self.fake, self.fake.out, r"listening on ([0-9]+)", TIMEOUT,
                      "the fake API")
        return int(m.group(1))

    def start_server(self, api_port):
        cfg = {
            "API_KEY": API_KEY,
            "FROM_NUMBER": FROM,
            "LISTEN": "127.0.0.1:0",
            "SMS_API_URL": "https://127.0.0.1:%d/v2/messages" % api_port,
            "SMS_CA_FILE": os.path.join(self.args.certs, "ca.pem"),
            "TOKEN_LENGTH": 6,
            "TOKEN_ALPHABET": "digits",
            "SMS_TIMEOUT": 30,      # TLS handshakes are slow under qemu
            "THREADS": 4,
        }
        path = os.path.join(self.dir, "config.cfg")
        harness.write_config(path, cfg)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OTP_")}
        self.server = Proc(self.qemu + [self.args.bin, "-c", path],
                           self.dir, "server", env=env)
        m = wait_line(self.server, self.server.err,
                      r"listening on http://127\.0\.0\.1:([0-9]+)",
                      TIMEOUT, "otp_demo")
        self.browser = Browser(int(m.group(1)))

    # -- the cases ------------------------------------------------------
    def version(self):
        r = subprocess.run(self.qemu + [self.args.bin, "--version"],
                           capture_output=True, text=True, timeout=TIMEOUT)
        check(r.returncode == 0, "--version exited %d: %s"
              % (r.returncode, r.stderr.strip()))
        check(re.search(r"[0-9]+\.[0-9]+", r.stdout),
              "no version in %r" % r.stdout)

    def index(self):
        st, body = self.browser.send("GET", "/")
        check(st == 200, "GET / is %d" % st)
        check('action="/request"' in body, "GET / is not the phone form")
        check("otp_sid" in self.browser.cookies, "no otp_sid cookie")
        check(self.browser.csrf, "no CSRF token in the form")

    def bad_input(self):
        st, body = self.browser.post("/request", phone="not a number")
        check(st == 400, "invalid phone is %d, want 400" % st)
        check('class="error"' in body, "no error message on the page")
        check(not fake_records(self.record), "an SMS was sent for it")

    def request(self):
        st, body = self.browser.post("/request", phone="(201) 555-0123")
        check(st == 200, "POST /request is %d, want 200: %s"
              % (st, " ".join(self.server.err[-3:]).strip()))
        check('action="/verify"' in body, "the answer is not the verify page")
        recs = fake_records(self.record)
        check(len(recs) == 1, "the fake got %d requests, want 1" % len(recs))
        rec = recs[0]
        check(rec["headers"].get("authorization") == "Bearer " + API_KEY,
              "wrong Authorization header")
        doc = rec.get("json") or {}
        check(doc.get("to") == "+12015550123" and doc.get("from") == FROM,
              "wrong from/to: %r" % doc)
        m = re.search(r"\b([0-9]{6})\b", doc.get("text", ""))
        check(m, "no 6-digit code in %r" % doc.get("text"))
        self.code = m.group(1)

    def wrong_code(self):
        check(self.code, "no code was sent")
        wrong = "%06d" % ((int(self.code) + 1) % 1000000)
        st, body = self.browser.post("/verify", token=wrong)
        check(st == 403, "a wrong code is %d, want 403" % st)
        check("Wrong code." in body, "no 'Wrong code.' message")

    def verify(self):
        check(self.code, "no code was sent")
        st, body = self.browser.post("/verify", token=self.code)
        check(st == 200, "the right code is %d, want 200" % st)
        check('class="ok"' in body, "not the success page")

    def api_down(self):
        self.fake.stop()
        self.browser.send("GET", "/")
        st, body = self.browser.post("/request", phone="201-555-0187")
        check(st == 502, "with the API down POST /request is %d, want 502"
              % st)
        check("couldn" in body, "no 'couldn't send' message")

    def sigterm(self):
        rc = self.server.stop()
        check(rc == 0, "exit status %r after SIGTERM, want 0" % rc)

    def run(self):
        self.case("version", self.version)
        try:
            api_port = self.start_fake()
            self.start_server(api_port)
        except Exception as e:  # noqa: BLE001
            self.failed += 1
            print("FAIL start: %s (see %s)" % (e, self.dir), flush=True)
        else:
            for name in ("index", "bad_input", "request", "wrong_code",
                         "verify", "api_down", "sigterm"):
                self.case(name, getattr(self, name))
        finally:
            for p in (self.server, self.fake):
                if p is not None:
                    p.stop()
        print("%d passed, %d failed" % (self.passed, self.failed))
        return 1 if self.failed else 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bin", required=True, help="the static otp_demo")
    ap.add_argument("--certs", required=True, help="tests/gen_certs.sh dir")
    ap.add_argument("--qemu", default="", help="emulator command, or empty")
    args = ap.parse_args()
    args.bin = os.path.abspath(args.bin)
    args.certs = os.path.abspath(args.certs)
    return Run(args).run()


if __name__ == "__main__":
    sys.exit(main())
