#!/usr/bin/env python3
"""integration.py: run the real otp_demo against a local HTTPS fake of the
Telnyx API and check what a browser sees and what the SMS API receives.

    python3 tests/integration.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library only.

Each case gets its own fake API (tests/fake_api.py, own port, own counters)
and its own server process (LISTEN 127.0.0.1:0, config file in its own
directory under tests/out/integration/NAME/, with the server's stderr and
stdout kept there). Most cases are rows of a table (CASES): config
overrides plus steps of request / expected status / body / SMS calls, JSON
API calls ("call" steps; every answer is checked for the security headers
and, if an error, the {"error": {"code", "message"}} shape) and "do" steps
(SIGHUP, file changes). The rest are functions (for threads, raw sockets,
restarts, TLS listeners and timing bounds).

After every case: the server must exit 0 on SIGTERM, and its log (stderr;
every log of a restarted case) must not contain the API key, the API
token, any code that was sent, or any full phone number that was
submitted.

Prints "ok NAME", "FAIL NAME: reason" or "skip NAME: reason" (the local
system cannot run it) per case, then "N passed, M failed[, K skipped]".
Exit status 1 if anything failed.

No timing assertions except generous upper bounds: expiry is tested by
waiting past a short CODE_TTL, never by measuring speed.
"""

import argparse
import concurrent.futures
import hashlib
import html
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
import urllib.parse
import warnings

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import fake_api  # noqa: E402

BIN = os.environ.get("OTP_BIN") or os.path.join(ROOT, "otp_demo")
OUT = os.path.join(ROOT, "tests", "out", "integration")
CERTS = os.path.join(OUT, "certs")

API_KEY = "KEYtest-7f3a9c2e51d84b06"
FROM = "+12025550111"
PHONE = "(201) 555-0123"
PHONE_E164 = "+12015550123"
PHONE2 = "201-555-0187"
PHONE2_E164 = "+12015550187"
UK = "+442071838750"
API_TOKEN = "TOKtest-3b9e1c7a0d5f4e28"     # JSON API bearer token
API = "/api/v1/verifications"
ID_RE = re.compile(r"[0-9a-f]{40}")         # an API verification id

VERIFY_FAILED = "Verify failed, please try again."
SEND_FAILED = "We couldn't send the code. Please try again."
TOO_MANY = "Too many wrong codes. Please request a new code."

CSP = ("default-src 'none'; style-src 'self'; script-src 'self'; "
       "img-src 'self'; form-action 'self'; frame-ancestors 'none'; "
       "base-uri 'none'")
SECURITY_HEADERS = {
    "cache-control": r"(^|[ ,])no-store($|[ ,])",
    "content-security-policy": "^" + re.escape(CSP) + "$",
    "x-content-type-options": r"^nosniff$",
    "referrer-policy": r"^no-referrer$",
    "content-type": r".",
}

START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
HTTP_TIMEOUT = 30.0
CONFIG_RUN_TIMEOUT = 10.0


class Fail(Exception):
    pass


class Skip(Exception):
    """A case that cannot run here (e.g. the local OpenSSL lacks TLS 1.1):
    printed as "skip NAME: reason", counted neither passed nor failed."""


def check(cond, msg):
    if not cond:
        raise Fail(msg)


def short(b, n=160):
    s = b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)
    s = " ".join(s.split())
    return s if len(s) <= n else s[:n] + "..."


def page_text(body):
    """The visible text of a page, entities decoded, whitespace collapsed."""
    s = body.decode("utf-8", "replace")
    s = re.sub(r"<[^>]*>", " ", s)
    return " ".join(html.unescape(s).split())


# ---- certificates ------------------------------------------------------------

def ensure_certs():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["sh", os.path.join(HERE, "gen_certs.sh"), CERTS],
                   check=True)


def cert(name):
    return (os.path.join(CERTS, name + ".pem"),
            os.path.join(CERTS, name + ".key"))


# ---- HTTP responses and a cookie-keeping browser -----------------------------

class Resp:
    def __init__(self, status, reason, headers, body, elapsed):
        self.status, self.reason = status, reason
        self.headers = headers          # list of (name, value)
        self.body = body
        self.elapsed = elapsed

    def header(self, name):
        name = name.lower()
        for k, v in self.headers:
            if k.lower() == name:
                return v
        return None

    def all(self, name):
        name = name.lower()
        return [v for k, v in self.headers if k.lower() == name]

    @property
    def text(self):
        return page_text(self.body)

    def __repr__(self):
        return "%d %s" % (self.status, short(self.text, 120))


def parse_inputs(body):
    """{name: {attr: value}} for each <input> in an HTML page."""
    out = {}
    for tag in re.findall(r"<input\b[^>]*>", body.decode("utf-8", "replace"),
                          re.I):
        attrs = {k.lower(): html.unescape(v1 if v1 is not None else v2)
                 for k, v1, v2 in re.findall(
                     r'([a-zA-Z-]+)\s*=\s*(?:"([^"]*)"|\'([^\']*)\')', tag)}
        if "name" in attrs:
            out[attrs["name"]] = attrs
    return out


def page_kind(body):
    s = body.decode("utf-8", "replace")
    if re.search(r'<form[^>]*action="/request"', s):
        return "index"
    if re.search(r'<form[^>]*action="/verify"', s):
        return "verify"
    if 'class="ok"' in s:
        return "success"
    return "other"


def insecure_tls():
    """A TLS client context that trusts nothing and checks nothing (the
    server's certificate is self-signed)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


class Browser:
    """One browser: its own cookie jar and the last CSRF token it saw.

    The jar drops a cookie only when the server deletes it (Max-Age <= 0 or
    an Expires in the past); it does not age cookies out, so that server-side
    expiry is what a test exercises."""

    def __init__(self, ctx, name):
        self.ctx, self.name = ctx, name
        self.cookies = {}
        self.csrf = None
        self.code = None
        self.phone = None
        self.last = None

    @property
    def port(self):
        return self.ctx.server.port

    def send(self, method, path, body=None, headers=None, use_cookies=True,
             timeout=HTTP_TIMEOUT):
        hdrs = dict(headers or {})
        if use_cookies and self.cookies and "Cookie" not in hdrs:
            hdrs["Cookie"] = "; ".join("%s=%s" % kv
                                       for kv in self.cookies.items())
        if isinstance(body, str):
            body = body.encode()
        if self.ctx.server.scheme == "https":
            conn = http.client.HTTPSConnection(
                "127.0.0.1", self.port, timeout=timeout,
                context=insecure_tls())
        else:
            conn = http.client.HTTPConnection("127.0.0.1", self.port,
                                              timeout=timeout)
        t0 = time.monotonic()
        try:
            conn.request(method, path, body=body, headers=hdrs)
            r = conn.getresponse()
            data = r.read()
        except (OSError, http.client.HTTPException) as e:
            raise Fail("%s %s: no HTTP response (%s: %s)"
                       % (method, path, type(e).__name__, e))
        finally:
            conn.close()
        resp = Resp(r.status, r.reason, r.getheaders(), data,
                    time.monotonic() - t0)
        self._take_cookies(resp)
        csrf = parse_inputs(data).get("csrf", {}).get("value")
        if csrf:
            self.csrf = csrf
        self.last = resp
        self.ctx.log_http(self.name, method, path, body, resp)
        return resp

    def _take_cookies(self, resp):
        for sc in resp.all("Set-Cookie"):
            parts = [p.strip() for p in sc.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            delete = False
            for p in parts[1:]:
                k, _, v = p.partition("=")
                if k.lower() == "max-age":
                    try:
                        delete = int(v) <= 0
                    except ValueError:
                        pass
                elif k.lower() == "expires" and re.search(r"19[0-9]{2}|2000",
                                                          v):
                    delete = True
            if delete:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value

    def get(self, path="/", **kw):
        return self.send("GET", path, **kw)

    def post_form(self, path, fields, csrf="auto", headers=None,
                  ctype="application/x-www-form-urlencoded", **kw):
        fields = list(fields.items()) if isinstance(fields, dict) else \
            list(fields)
        if csrf == "auto":
            if self.csrf is not None:
                fields.append(("csrf", self.csrf))
        elif csrf is not None:
            fields.append(("csrf", csrf))
        hdrs = {"Content-Type": ctype} if ctype else {}
        hdrs.update(headers or {})
        return self.send("POST", path, urllib.parse.urlencode(fields),
                         headers=hdrs, **kw)

    def ensure_session(self):
        if self.csrf is None or "otp_sid" not in self.cookies:
            r = self.get("/")
            check(r.status == 200, "GET / -> %d" % r.status)

    def hidden(self, name):
        """The value of input name on the last page this browser got."""
        if self.last is None:
            return None
        return parse_inputs(self.last.body).get(name, {}).get("value")

    def request_code(self, phone, fields=None, **kw):
        self.ensure_session()
        self.phone = phone
        self.ctx.note_phone(phone)
        return self.post_form("/request", [("phone", phone)] + list(
            (fields or {}).items()), **kw)

    def verify(self, token, fields=None, **kw):
        return self.post_form("/verify", [("token", token)] + list(
            (fields or {}).items()), **kw)


# ---- the server under test ---------------------------------------------------

def config_literal(v):
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    s = str(v)
    if "'" not in s:
        return "'" + s.replace("\\", "\\\\") + "'"
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def config_text(cfg):
    return "".join("%s=%s\n" % (k, config_literal(v)) for k, v in cfg.items())


def clean_env(extra=None):
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(extra or {})
    return env


LIVE = set()        # servers still running, killed if the suite is stopped
LIVE_LOCK = threading.Lock()


def kill_live():
    with LIVE_LOCK:
        for p in list(LIVE):
            try:
                p.kill()
            except OSError:
                pass


class Server:
    def __init__(self, ctx, text, env=None, args=None, tag=""):
        self.ctx = ctx
        self.dir = ctx.dir
        self.text, self.env, self.args = text, env or {}, args or []
        self.tag = tag          # log file suffix for a restarted server
        self.proc = None
        self.port = None
        self.scheme = "http"
        self.err_lines, self.out_lines = [], []
        self.cond = threading.Condition()
        self.rc = None

    def start(self):
        with open(os.path.join(self.dir, "config.cfg"), "w") as f:
            f.write(self.text)
        self.errf = open(os.path.join(self.dir, "stderr%s.log" % self.tag),
                         "w")
        self.outf = open(os.path.join(self.dir, "stdout%s.log" % self.tag),
                         "w")
        self.proc = subprocess.Popen(
            [BIN, "-c", "config.cfg"] + self.args, cwd=self.dir,
            env=clean_env(self.env), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with LIVE_LOCK:
            LIVE.add(self.proc)
        self.readers = [
            threading.Thread(target=self._read, daemon=True,
                             args=(self.proc.stderr, self.err_lines,
                                   self.errf)),
            threading.Thread(target=self._read, daemon=True,
                             args=(self.proc.stdout, self.out_lines,
                                   self.outf))]
        for t in self.readers:
            t.start()
        end = time.monotonic() + START_TIMEOUT
        pat = re.compile(r"listening on (https?)://127\.0\.0\.1:([0-9]+)")
        with self.cond:
            while True:
                for line in self.err_lines:
                    m = pat.search(line)
                    if m:
                        self.scheme, self.port = m.group(1), int(m.group(2))
                        return self
                if self.proc.poll() is not None:
                    self.cond.wait(0.2)  # let the readers drain
                    raise Fail("server exited %s at start: %s" % (
                        self.proc.returncode,
                        short(" | ".join(self.err_lines[-3:]), 300)))
                left = end - time.monotonic()
                if left <= 0:
                    raise Fail("no 'listening on http://127.0.0.1:PORT' line "
                               "on stderr within %ds" % START_TIMEOUT)
                self.cond.wait(min(left, 0.2))

    def _read(self, stream, lines, f):
        for raw in iter(stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            with self.cond:
                lines.append(line)
                self.cond.notify_all()
            f.write(line + "\n")
            f.flush()
        with self.cond:
            self.cond.notify_all()

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def wait_stdout(self, pattern, start=0, timeout=5.0):
        """First stdout line from index start matching pattern, or None."""
        return self._wait(self.out_lines, pattern, start, timeout)

    def wait_log(self, pattern, start=0, timeout=5.0):
        """First stderr line from index start matching pattern, or None."""
        return self._wait(self.err_lines, pattern, start, timeout)

    def _wait(self, lines, pattern, start, timeout):
        pat = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(lines)):
                    m = pat.search(lines[i])
                    if m:
                        return i, m
                left = end - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)

    def stop(self):
        """SIGTERM; returns the exit status (or a string if it hung)."""
        if self.proc is None:
            return None
        hung = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                hung = "did not exit within %ds of SIGTERM" % STOP_TIMEOUT
        with LIVE_LOCK:
            LIVE.discard(self.proc)
        for t in self.readers:
            t.join(5)
        self.errf.close()
        self.outf.close()
        self.rc = hung or self.proc.returncode
        return self.rc

    def log(self):
        with self.cond:
            return "\n".join(self.err_lines)

    def ports(self, timeout=5.0):
        """{scheme: [ports]} from the 'listening on' lines, once there are
        as many as LISTEN has entries."""
        want = len([p for p in self.ctx.cfg.get("LISTEN", "").split(",")
                    if p.strip()]) or 1
        pat = re.compile(r"listening on (https?)://127\.0\.0\.1:([0-9]+)")
        end = time.monotonic() + timeout
        while True:
            with self.cond:
                found = [m.groups() for m in map(pat.search, self.err_lines)
                         if m]
            if len(found) >= want or time.monotonic() > end:
                break
            time.sleep(0.05)
        out = {}
        for scheme, port in found:
            out.setdefault(scheme, []).append(int(port))
        return out


# ---- one case's context ------------------------------------------------------

class Ctx:
    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(OUT, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.fake = None
        self.server = None
        self.old_servers = []   # stopped by restart_server(), logs scanned
        self.browsers = {}
        # strings that must never reach the log: label -> value
        self.secrets = {"the API key": API_KEY, "the API token": API_TOKEN}
        self.phones = set()     # full numbers submitted: must not be logged
        self.codes = set()      # codes sent: must not be logged
        self.texts = set()      # SMS texts sent
        self.saved = {}
        self.stdout_seen = 0
        self.cfg = {}
        self.http_log = open(os.path.join(self.dir, "http.log"), "w")
        self.http_lock = threading.Lock()

    # -- setup --
    def start_fake(self, cert_name="server", mode="ok", api_key=API_KEY,
                   **kw):
        c, k = cert(cert_name)
        self.fake = fake_api.FakeApi(
            c, k, api_key=api_key, mode=mode,
            record=os.path.join(self.dir, "api.jsonl"), **kw)
        self.fake.start()
        return self.fake

    def base_config(self):
        return {
            "API_KEY": API_KEY,
            "FROM_NUMBER": FROM,
            "LISTEN": "127.0.0.1:0",
            "SMS_API_URL": self.fake.url,
            "SMS_CA_FILE": cert("ca")[0],
            "TOKEN_LENGTH": 6,
            "SMS_TIMEOUT": 5,
        }

    def start_server(self, overrides=None, text=None, env=None):
        cfg = self.base_config()
        for k, v in (overrides or {}).items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        self.cfg = cfg
        self.server = Server(self, text if text is not None else
                             config_text(cfg), env=env)
        self.server.start()
        return self.server

    def restart_server(self):
        """SIGTERM (must exit 0), then the same config and environment
        again; the new server's logs are stderr.N.log / stdout.N.log."""
        old = self.server
        rc = old.stop()
        check(rc == 0, "server exit on SIGTERM before the restart: %s "
              "(want 0)" % (rc,))
        self.old_servers.append(old)
        self.server = Server(self, old.text, env=old.env, args=old.args,
                             tag=".%d" % (len(self.old_servers) + 1))
        self.server.start()
        return self.server

    def browser(self, name="A"):
        if name not in self.browsers:
            self.browsers[name] = Browser(self, name)
        return self.browsers[name]

    @property
    def origin(self):
        return "http://127.0.0.1:%d" % self.server.port

    # -- secrets that must stay out of the log --
    def note_phone(self, phone):
        digits = re.sub(r"[^0-9]", "", phone)
        if len(digits) >= 7:
            self.phones.add(phone)
            self.phones.add(digits)
            self.phones.add("+" + digits)
            if not phone.strip().startswith("+"):
                self.phones.add("+1" + digits)
        for run in re.findall(r"[0-9]{7,}", phone):
            self.phones.add(run)

    def note_sms(self, text, code):
        self.texts.add(text)
        if code:
            self.codes.add(code)

    def collect_sms(self, n0, b=None):
        """The SMS API calls since call number n0; notes their texts and
        codes (and gives the last code to browser b)."""
        if self.fake is None:
            return []
        new = self.fake.requests[n0:]
        rx = self.message_regex()
        for rec in new:
            j = rec.get("json")
            text = j.get("text") if isinstance(j, dict) else None
            if isinstance(text, str):
                m = re.match(rx, text)
                self.note_sms(text, m.group("code") if m else None)
                if m and b is not None:
                    b.code = m.group("code")
        return new

    def message_regex(self):
        msg = self.cfg.get("MESSAGE", "Your token is {code}")
        return "^" + re.escape(msg).replace(re.escape("{code}"),
                                            "(?P<code>[0-9A-Za-z]+)") + "$"

    def log_http(self, who, method, path, body, resp):
        with self.http_lock:
            self.http_log.write("[%s] %s %s %s\n  -> %d %s %s\n    %s\n" % (
                who, method, path, short(body or b"", 200), resp.status,
                resp.reason, resp.headers, short(resp.body, 300)))
            self.http_log.flush()

    # -- teardown --
    def finish(self, failed):
        """Stops everything; raises Fail for an unclean exit or a leak."""
        problems = []
        for old in self.old_servers:
            problems += self.scan_log(old)
        if self.server is not None:
            rc = self.server.stop()
            if rc != 0:
                problems.append("server exit on SIGTERM: %s (want 0)" % (rc,))
            problems += self.scan_log(self.server)
        if self.fake is not None:
            self.fake.stop()
        self.http_log.close()
        if problems and not failed:
            raise Fail("; ".join(problems))

    def scan_log(self, server):
        log = server.log()
        out = []
        for label, secret in sorted(self.secrets.items()):
            if secret in log:
                out.append("log%s contains %s" % (server.tag, label))
        for t in sorted(self.texts):
            if t in log:
                out.append("log contains an SMS text %r" % t)
        # Noise that may legitimately look like a short code: dates, times,
        # masked numbers, the listening line.
        clean = re.sub(r"listening on \S+", " ", log)
        clean = re.sub(r"[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9:.,]+Z?", " ",
                       clean)
        clean = re.sub(r"\+?[0-9]*\*+[0-9]*", " ", clean)
        for c in sorted(self.codes):
            if re.search(r"(?<![0-9A-Za-z])%s(?![0-9A-Za-z])" % re.escape(c),
                         clean, re.I):
                out.append("log contains a sent code %r" % c)
                break
        leaked = [p for p in sorted(self.phones) if p in log]
        if leaked:
            out.append("log contains full phone number(s) %s" % leaked[:3])
        # A masked number shows its calling code (1 to 3 digits) and at
        # most its last 2 digits: +1********23. Every to= is one (or "-").
        for m in re.finditer(r"\bto=(\S*)", log):
            if not re.fullmatch(r"\+[0-9]{0,3}\*+[0-9]{0,2}|-", m.group(1)):
                out.append("log%s shows to=%s: not a number masked to its "
                           "calling code and last 2 digits"
                           % (server.tag, m.group(1)))
                break
        for m in re.finditer(r"\+[0-9]*\*+[0-9]*", log):
            head, tail = re.fullmatch(r"\+([0-9]*)\*+([0-9]*)",
                                      m.group(0)).groups()
            if len(head) > 3 or len(tail) > 2:
                out.append("log%s shows %s: more than a calling code and "
                           "the last 2 digits" % (server.tag, m.group(0)))
                break
        return out


# ---- table-driven steps ------------------------------------------------------

def wrong_code(code, length=6, alphabet="0123456789ABCDEF"):
    if not code:
        return alphabet[1] * length
    c0 = alphabet[0] if code[0].upper() != alphabet[0] else alphabet[1]
    return c0 + code[1:]


def expand(ctx, b, s):
    """Placeholders in step strings: {code} {code_lower} {wrong}
    {code:NAME} {origin} {csrf} {csrf:NAME} {csrf_q} {saved:LABEL}
    {hidden:NAME} (that input's value on the browser's last page)."""
    if callable(s):
        return s(ctx, b)
    if not isinstance(s, str):
        return s

    def rep(m):
        key, _, arg = m.group(1).partition(":")
        who = ctx.browser(arg) if arg and key in ("code", "csrf") else b
        if key == "code":
            check(who.code, "no code known for browser %s" % who.name)
            return who.code
        if key == "code_lower":
            check(b.code, "no code known for browser %s" % b.name)
            return b.code.lower()
        if key == "wrong":
            alpha = "0123456789" if ctx.cfg.get("TOKEN_ALPHABET") == \
                "digits" else "0123456789ABCDEF"
            return wrong_code(b.code, int(ctx.cfg.get("TOKEN_LENGTH", 4)),
                              alpha)
        if key == "origin":
            return ctx.origin
        if key == "csrf":
            return who.csrf or ""
        if key == "csrf_q":
            return urllib.parse.quote(b.csrf or "", safe="")
        if key == "saved":
            return ctx.saved[arg]
        if key == "hidden":
            return b.hidden(arg) or ""
        return m.group(0)
    return re.sub(r"\{([a-z_]+(?::[A-Za-z0-9_]+)?)\}", rep, s)


def run_step(ctx, i, st):
    where = "step %d (%s)" % (i + 1, st.get("what", step_label(st)))
    b = ctx.browser(st.get("b", "A"))
    n0 = ctx.fake.count() if ctx.fake else 0
    out0 = len(ctx.server.out_lines)
    hdrs = {k: expand(ctx, b, v) for k, v in st.get("headers", {}).items()}
    kw = {}
    if "csrf" in st:
        kw["csrf"] = expand(ctx, b, st["csrf"])
    if "fields" in st:
        kw["fields"] = {k: expand(ctx, b, v)
                        for k, v in st["fields"].items()}
    r = None

    if "sleep" in st:
        time.sleep(st["sleep"])
    elif "do" in st:
        r = st["do"](ctx, b)
    elif "call" in st:
        r = api_call(ctx, b, st, hdrs)
    elif "mode" in st:
        ctx.fake.mode = st["mode"]
    elif "set_cookie" in st:
        for k, v in st["set_cookie"].items():
            v = expand(ctx, b, v)     # a callable(ctx, b) gives the value
            if v is None:
                b.cookies.pop(k, None)
            else:
                b.cookies[k] = v
    elif "save_cookie" in st:
        name, label = st["save_cookie"]
        check(name in b.cookies, "%s: browser %s has no cookie %s"
              % (where, b.name, name))
        ctx.saved[label] = b.cookies[name]
    elif "get" in st:
        r = b.get(expand(ctx, b, st["get"]), headers=hdrs)
    elif "method" in st:
        m, path = st["method"]
        r = b.send(m, path, body=st.get("body"), headers=hdrs)
    elif "request" in st:
        if st.get("session", True):
            b.ensure_session()
        r = b.request_code(expand(ctx, b, st["request"]), headers=hdrs, **kw)
    elif "verify" in st:
        r = b.verify(expand(ctx, b, st["verify"]), headers=hdrs, **kw)
    elif "post" in st:
        if st.get("session", True):
            b.ensure_session()
        if "body" in st:
            h = {"Content-Type": st.get(
                "ctype", "application/x-www-form-urlencoded")}
            h.update(hdrs)
            r = b.send("POST", st["post"], expand(ctx, b, st["body"]),
                       headers=h)
        else:
            r = b.post_form(st["post"], st.get("form", {}), headers=hdrs,
                            **kw)
    else:
        raise Fail("%s: unknown step %r" % (where, st))

    # SMS calls made during this step
    new = ctx.collect_sms(n0, b if "request" in st or "call" in st
                          else None)
    if st.get("console"):
        got = ctx.server.wait_stdout(r"^SMS to (\S+): (.*)$", out0, 5.0)
        check(got, "%s: no 'SMS to NUMBER: TEXT' line on stdout within 5 s "
              "(stdout: %s)" % (where, ctx.server.out_lines[-2:]))
        _, m = got
        m2 = re.match(ctx.message_regex(), m.group(2))
        check(m2, "%s: console SMS text %r does not match MESSAGE"
              % (where, m.group(2)))
        ctx.note_sms(m.group(2), m2.group("code"))
        b.code = m2.group("code")
        if "console_to" in st:
            check(m.group(1) == st["console_to"], "%s: console SMS to %s, "
                  "want %s" % (where, m.group(1), st["console_to"]))

    check(ctx.server.alive(), "%s: server died (exit %s)"
          % (where, ctx.server.proc.poll()))
    expect_step(ctx, b, where, st, r, new)


def api_call(ctx, b, st, hdrs):
    """A JSON API step: "call": (METHOD, PATH[, BODY]). BODY a dict is
    sent as JSON (its string values expanded), a str as it is. "auth" is
    the Authorization header (default the right bearer token; None: none),
    "ctype" the Content-Type (default application/json; None: none)."""
    method, path = st["call"][0], expand(ctx, b, st["call"][1])
    body = st["call"][2] if len(st["call"]) > 2 else None
    h = {}
    auth = st.get("auth", "Bearer " + API_TOKEN)
    if auth is not None:
        h["Authorization"] = auth
    if isinstance(body, dict):
        body = {k: expand(ctx, b, v) for k, v in body.items()}
        if isinstance(body.get("phone"), str):
            ctx.note_phone(body["phone"])
        body = json.dumps(body)
    elif body is not None:
        body = expand(ctx, b, body)
    if body is not None and st.get("ctype", "application/json") is not None:
        h["Content-Type"] = st.get("ctype", "application/json")
    h.update(hdrs)
    return b.send(method, path, body=body, headers=h)


def json_body(got, r):
    try:
        j = json.loads(r.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise Fail("%s: body is not JSON: %r" % (got, short(r.body)))
    check(isinstance(j, dict), "%s: JSON body is not an object: %s"
          % (got, short(r.body)))
    return j


def check_api_answer(got, r, st):
    """What every JSON API answer must be: the security headers, JSON
    (except a 204), and errors as {"error": {"code", "message"}}."""
    check_security_headers(got, r)
    if r.status == 204:
        check(r.body == b"", "%s: 204 with a body %r" % (got, short(r.body)))
        return None
    check(re.match(r"application/json($|;)", r.header("content-type") or ""),
          "%s: Content-Type %r, want application/json"
          % (got, r.header("content-type")))
    j = json_body(got, r)
    if r.status >= 400:
        e = j.get("error")
        check(sorted(j) == ["error"] and isinstance(e, dict) and
              sorted(e) == ["code", "message"] and
              isinstance(e["code"], str) and isinstance(e["message"], str)
              and e["code"] and e["message"],
              '%s: error body is not {"error": {"code", "message"}}: %s'
              % (got, short(r.body)))
        if "error" in st:
            check(e["code"] == st["error"], "%s: error code %r, want %r"
                  % (got, e["code"], st["error"]))
    else:
        check("error" not in st, "%s: no error body" % got)
    return j


def metrics_values(text):
    """{'name{labels}': value} of a Prometheus text answer."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            try:
                out[name] = float(v)
            except ValueError:
                out[name] = v
    return out


def step_label(st):
    for k in ("get", "request", "verify", "post", "method", "call", "sleep",
              "mode", "set_cookie", "save_cookie", "do"):
        if k in st:
            return "%s %s" % (k, st[k] if not isinstance(st[k], dict) else
                              ",".join(st[k]))
    return "?"


def expect_step(ctx, b, where, st, r, new):
    if "api" in st:
        check(len(new) == st["api"], "%s: %d SMS API call(s), want %d%s" % (
            where, len(new), st["api"],
            " (%s)" % short(new[0]["body"]) if new else ""))
    if "api_max" in st:
        check(len(new) <= st["api_max"], "%s: %d SMS API calls, want <= %d"
              % (where, len(new), st["api_max"]))
    if "sms" in st:
        check(new, "%s: no SMS API call" % where)
        check_sms(where, new[-1], st["sms"])
    if "fake_connections_min" in st:
        check(ctx.fake.connections >= st["fake_connections_min"],
              "%s: the server never connected to the fake API" % where)
    if r is None:
        return
    got = "%s -> %d %s" % (where, r.status, short(r.text, 100))
    want = st.get("status")
    if want is not None:
        wants = want if isinstance(want, tuple) else (want,)
        check(r.status in wants, "%s, want status %s" % (got, want))
    for frag in st.get("has", []):
        frag = expand(ctx, b, frag)
        check(frag in r.text or frag in r.body.decode("utf-8", "replace"),
              "%s: body lacks %r" % (got, frag))
    for frag in st.get("lacks", []):
        frag = expand(ctx, b, frag)
        check(frag not in r.text, "%s: body has %r" % (got, frag))
    if "page" in st:
        check(page_kind(r.body) == st["page"], "%s: page is %s, want %s"
              % (got, page_kind(r.body), st["page"]))
    for name, rx in st.get("hdr", {}).items():
        v = r.header(name)
        check(v is not None, "%s: no %s header" % (got, name))
        check(re.search(rx, v), "%s: %s: %r does not match %r"
              % (got, name, v, rx))
    for name in st.get("no_hdr", []):
        check(r.header(name) is None, "%s: unexpected %s: %r"
              % (got, name, r.header(name)))
    if st.get("secure"):
        check_security_headers(got, r)
    for name, rx in st.get("cookie", {}).items():
        sc = [c for c in r.all("Set-Cookie") if c.startswith(name + "=")]
        check(sc, "%s: no Set-Cookie for %s" % (got, name))
        check(re.search(rx, sc[-1]), "%s: Set-Cookie %r does not match %r"
              % (got, sc[-1], rx))
    for name in st.get("no_cookie", []):
        sc = [c for c in r.all("Set-Cookie") if c.startswith(name + "=")]
        check(not sc, "%s: unexpected Set-Cookie %r" % (got, sc))
    for name in st.get("no_live_cookie", []):
        for c in r.all("Set-Cookie"):
            if c.startswith(name + "=") and c != name + "=" and \
                    not re.search(r"(?i)max-age=0(;|$)", c) and \
                    not c.startswith(name + "=;"):
                raise Fail("%s: Set-Cookie %r (want none)" % (got, c))
    if "max_time" in st:
        check(r.elapsed <= st["max_time"], "%s: took %.1f s, bound %.1f s"
              % (got, r.elapsed, st["max_time"]))
    for name, want in st.get("inputs", {}).items():
        v = parse_inputs(r.body).get(name, {}).get("value")
        want = expand(ctx, b, want)
        check(v == want, "%s: input %s has value %r, want %r"
              % (got, name, v, want))
    if "call" in st:
        j = check_api_answer(got, r, st)
        if "json_keys" in st:
            check(sorted(j or {}) == sorted(st["json_keys"]),
                  "%s: JSON keys %s, want %s" % (got, sorted(j or {}),
                                                 sorted(st["json_keys"])))
        for k, want in st.get("json", {}).items():
            check(j is not None and k in j, "%s: no %r in %s"
                  % (got, k, short(r.body)))
            if isinstance(want, re.Pattern):
                check(want.fullmatch(str(j[k])), "%s: %s is %r, want /%s/"
                      % (got, k, j[k], want.pattern))
            else:
                check(j[k] == want, "%s: %s is %r, want %r"
                      % (got, k, j[k], want))
        if "save_id" in st:
            check(j is not None and isinstance(j.get("id"), str),
                  "%s: no id to save" % got)
            ctx.saved[st["save_id"]] = j["id"]
    if "body_is" in st:
        check(r.body == st["body_is"], "%s: body %r, want %r"
              % (got, r.body, st["body_is"]))
    if "metrics" in st:
        vals = metrics_values(r.body.decode("utf-8", "replace"))
        with open(os.path.join(ctx.dir, "metrics.txt"), "a") as f:
            f.write(r.body.decode("utf-8", "replace") + "\n")
        for k, want in st["metrics"].items():
            check(k in vals, "%s: no series %s in /metrics" % (got, k))
            check(vals[k] == want, "%s: %s is %s, want %s"
                  % (got, k, vals[k], want))
    if "save" in st:
        ctx.saved["body:" + st["save"]] = (r.status, r.body)
    if "same" in st:
        s0, b0 = ctx.saved["body:" + st["same"]]
        check((r.status, r.body) == (s0, b0),
              "%s: not byte-identical to the %r answer (%d, %d bytes vs %d, "
              "%d bytes; first difference at byte %d)" % (
                  got, st["same"], r.status, len(r.body), s0, len(b0),
                  first_diff(r.body, b0)))
    if "check" in st:
        st["check"](ctx, b, r)


def first_diff(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))


def check_security_headers(got, r):
    for name, rx in SECURITY_HEADERS.items():
        v = r.header(name)
        check(v is not None, "%s: missing %s header" % (got, name))
        check(re.search(rx, v), "%s: %s is %r" % (got, name, v))


def check_sms(where, rec, want):
    """want: dict with optional to, from, text (regex), code_re."""
    h = rec["headers"]
    check(rec["method"] == "POST", "%s: SMS API method %s" % (where,
                                                              rec["method"]))
    check(rec["path"] == "/v2/messages", "%s: SMS API path %r"
          % (where, rec["path"]))
    check(h.get("authorization") == "Bearer " + API_KEY,
          "%s: Authorization header %r" % (where, h.get("authorization")))
    check(h.get("content-type") == "application/json",
          "%s: Content-Type %r, want 'application/json'"
          % (where, h.get("content-type")))
    j = rec.get("json")
    check(isinstance(j, dict), "%s: SMS API body is not a JSON object: %s"
          % (where, short(rec["body"])))
    for k in ("from", "to", "text"):
        check(isinstance(j.get(k), str), "%s: SMS body has no string %r: %s"
              % (where, k, short(rec["body"])))
    if "keys" in want:
        check(sorted(j) == sorted(want["keys"]), "%s: SMS body keys %s"
              % (where, sorted(j)))
    if "to" in want:
        check(j["to"] == want["to"], "%s: SMS to %r, want %r"
              % (where, j["to"], want["to"]))
    if "from" in want:
        check(j["from"] == want["from"], "%s: SMS from %r, want %r"
              % (where, j["from"], want["from"]))
    if "text" in want:
        check(re.search(want["text"], j["text"]), "%s: SMS text %r does not "
              "match %r" % (where, j["text"], want["text"]))
    check(rec["verdict"] == "ok", "%s: the fake rejected the call (%s)"
          % (where, rec["verdict"]))


# ---- the table ---------------------------------------------------------------

SMS_DEFAULT = {"to": PHONE_E164, "from": FROM,
               "text": r"^Your token is [0-9A-F]{6}$"}


def tutorial_text(ctx):
    return ("API_KEY='%s'\nFROM_NUMBER='%s'\nDEBUG=True\nCOUNTRY_CODE='+1'\n"
            "TOKEN_LENGTH=4\n" % (API_KEY, FROM))


def tutorial_env(ctx):
    return {"OTP_LISTEN": "127.0.0.1:0", "OTP_SMS_API_URL": ctx.fake.url,
            "OTP_SMS_CA_FILE": cert("ca")[0]}


def check_index_form(ctx, b, r):
    inputs = parse_inputs(r.body)
    s = r.body.decode("utf-8", "replace")
    check(re.search(r'<form\b[^>]*\bmethod="post"', s, re.I) and
          re.search(r'<form\b[^>]*\baction="/request"', s),
          "index: no <form method=post action=/request>")
    p = inputs.get("phone")
    check(p, "index: no input name=phone")
    check(p.get("type") == "tel", "index: phone type=%r" % p.get("type"))
    check(p.get("autocomplete") == "tel",
          "index: phone autocomplete=%r" % p.get("autocomplete"))
    c = inputs.get("csrf")
    check(c and c.get("type") == "hidden" and c.get("value"),
          "index: no hidden csrf input with a value")
    check(r.header("content-type").lower().startswith("text/html"),
          "index: Content-Type %r" % r.header("content-type"))


def check_verify_form(ctx, b, r):
    inputs = parse_inputs(r.body)
    s = r.body.decode("utf-8", "replace")
    check(re.search(r'<form\b[^>]*\baction="/verify"', s),
          "verify page: no <form action=/verify>")
    t = inputs.get("token")
    check(t and t.get("autocomplete") == "one-time-code",
          "verify page: no input name=token autocomplete=one-time-code")
    c = inputs.get("csrf")
    check(c and c.get("type") == "hidden" and c.get("value"),
          "verify page: no hidden csrf input")


STRICT = (r"^(?=.*; Path=/(;|$))(?=.*; HttpOnly(;|$))"
          r"(?=.*; SameSite=Strict(;|$))")
SID = r"^otp_sid=[0-9a-f]{64}(;|$)"  # an id and its MAC

FAIL_MODES = [  # mode, status, Retry-After wanted
    ("401", 502, False), ("403", 502, False), ("422", 502, False),
    ("500", 502, False), ("503", 503, True), ("429", 503, True),
    ("garbage", 502, False), ("garbage_http", 502, False),
    ("huge", 502, False), ("reset", 502, False), ("silent", 502, False),
    ("redirect", 502, False),
]


def send_failure_case(mode, status, retry):
    steps = [
        {"get": "/", "status": 200},
        {"request": PHONE, "status": status, "api": 1, "page": "index",
         "has": [SEND_FAILED], "max_time": 15,
         "hdr": {"Retry-After": r"^[0-9]+$"} if retry else {},
         "no_live_cookie": ["otp_vid"]},
        {"get": "/", "status": 200, "page": "index"},
        # the code that reached the API must be useless: the record is gone
        {"verify": "{code}", "status": 403, "lacks": ["Verified"]},
        {"set_cookie": {"otp_vid": "0" * 32}},
        {"verify": "{code}", "status": 403, "lacks": ["Verified"]},
        {"get": "/", "status": 200},
    ]
    return {"name": "send_fail_" + mode, "fake_mode": mode,
            "config": {"SMS_TIMEOUT": 2}, "steps": steps}


def tls_failure_case(name, cert_name, **fake_kw):
    return {"name": "tls_" + name, "fake_cert": cert_name, "fake_kw": fake_kw,
            "steps": [
                {"get": "/", "status": 200},
                {"request": PHONE, "status": 502, "api": 0, "page": "index",
                 "has": [SEND_FAILED], "fake_connections_min": 1,
                 "max_time": 15},
                {"get": "/", "status": 200},
            ]}


CASES = [
    {"name": "index_page", "steps": [
        {"get": "/", "status": 200, "page": "index", "secure": True,
         "hdr": {"Content-Type": r"^text/html"},
         "cookie": {"otp_sid": STRICT + SID[1:]}, "check": check_index_form},
        {"get": "/", "status": 200, "no_cookie": ["otp_sid"],
         "what": "second GET / keeps the session"},
        {"get": "/style.css", "status": 200, "secure": True,
         "hdr": {"Content-Type": r"^text/css"}},
    ]},

    {"name": "tutorial_request_verify", "config_text": tutorial_text,
     "env": tutorial_env, "steps": [
         {"get": "/", "status": 200},
         {"request": PHONE, "status": 200, "api": 1, "page": "verify",
          "check": check_verify_form,
          "cookie": {"otp_vid": STRICT + r"(?=.*; Max-Age=300(;|$))"
                     r"otp_vid=[^;]+;"},
          "sms": {"to": PHONE_E164, "from": FROM, "keys": ["from", "to",
                                                           "text"],
                  "text": r"^Your token is [0-9A-F]{4}$"}},
         {"save_cookie": ("otp_vid", "vid")},
         {"save_cookie": ("otp_sid", "sid")},
         {"verify": "{code_lower}", "status": 200, "page": "success",
          "has": ["Verified"],
          "cookie": {"otp_vid": r"^otp_vid=[^;]*;.*Max-Age=0",
                     "otp_sid": SID}},
         {"get": "/", "status": 200, "what": "fresh form after success"},
         {"verify": "{code}", "status": 403, "has": [VERIFY_FAILED],
          "lacks": ["Verified"], "what": "reuse the code"},
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"verify": "{code}", "status": 403, "has": [VERIFY_FAILED],
          "what": "reuse with the old otp_vid cookie"},
         {"set_cookie": {"otp_sid": "{saved:sid}", "otp_vid": "{saved:vid}"}},
         {"verify": "{code}", "status": 403, "lacks": ["Verified"],
          "what": "replay with the old otp_sid + otp_vid"},
     ]},

    {"name": "expired_code", "config": {"CODE_TTL": 2}, "steps": [
        {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT,
         "cookie": {"otp_vid": r"Max-Age=2(;|$)"}},
        {"sleep": 3},
        {"verify": "{code}", "status": 403, "has": [VERIFY_FAILED],
         "page": "verify"},
    ]},

    {"name": "wrong_code", "steps": [
        {"request": PHONE, "status": 200, "api": 1},
        {"verify": "{wrong}", "status": 403, "has": [VERIFY_FAILED],
         "page": "verify"},
        {"verify": "ZZZZZZ", "status": 403, "has": [VERIFY_FAILED]},
        {"verify": "", "status": (400, 403), "lacks": ["Verified"]},
        {"verify": "{code}", "status": 200, "page": "success",
         "what": "the right code still works after 3 wrong ones"},
    ]},

    {"name": "code_bound_to_browser", "config": {"TOKEN_LENGTH": 8},
     "steps": [
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"b": "B", "request": PHONE2, "status": 200, "api": 1},
         {"b": "B", "verify": "{code:A}", "status": 403,
          "has": [VERIFY_FAILED], "what": "B submits A's code"},
         {"b": "C", "get": "/", "status": 200},
         {"b": "C", "verify": "{code:A}", "status": 403,
          "lacks": ["Verified"], "what": "C, no otp_vid, submits A's code"},
         {"b": "A", "verify": "{code}", "status": 200, "page": "success"},
     ]},

    # Beyond the letter of the contract: otp_vid should only work together
    # with the otp_sid it was issued to.
    {"name": "vid_bound_to_session", "config": {"TOKEN_LENGTH": 8},
     "steps": [
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"b": "B", "request": PHONE2, "status": 200, "api": 1},
         {"b": "A", "save_cookie": ("otp_vid", "vidA")},
         {"b": "B", "set_cookie": {"otp_vid": "{saved:vidA}"}},
         {"b": "B", "verify": "{code:A}", "status": 403,
          "lacks": ["Verified"],
          "what": "B submits A's code with A's otp_vid (B's otp_sid)"},
     ]},

    {"name": "console_provider",
     "config": {"API_KEY": "YOUR_API_KEY"}, "steps": [
         {"request": PHONE, "status": 200, "api": 0, "console": True,
          "console_to": PHONE_E164, "page": "verify"},
         {"verify": "{code}", "status": 200, "page": "success"},
     ]},

    {"name": "env_overrides_file",
     "config": {"TOKEN_LENGTH": 4, "TOKEN_ALPHABET": "hex"},
     "env": {"OTP_TOKEN_LENGTH": "8", "OTP_TOKEN_ALPHABET": "digits"},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1,
          "sms": {"to": PHONE_E164, "text": r"^Your token is [0-9]{8}$"}},
         {"verify": "{code}", "status": 200},
     ]},

    {"name": "message_json_escaping",
     "config": {"MESSAGE": 'He said "{code}" \\ \u2013 <ok> & done'},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1,
          "sms": {"to": PHONE_E164, "text":
                  r'^He said "[0-9A-F]{6}" \\ \u2013 <ok> & done$'}},
         {"verify": "{code}", "status": 200},
     ]},

    {"name": "invalid_input", "steps": [
        {"get": "/", "status": 200},
        {"request": "abcdefghij", "status": 400, "api": 0, "page": "index",
         "has": ['class="error"']},
        {"request": "201-CALL-NOW", "status": 400, "api": 0},
        {"request": "12345", "status": 400, "api": 0, "what": "too short"},
        {"request": "5" * 30, "status": 400, "api": 0, "what": "too long"},
        {"request": '2015550123","to":"+442071838750', "status": 400,
         "api": 0, "what": "quote injection"},
        {"request": "201555012\"3", "status": 400, "api": 0},
        {"request": "", "status": 400, "api": 0, "what": "empty phone"},
        {"post": "/request", "form": {"phone": "5" * 1100}, "status": 413,
         "api": 0, "what": "body > 1 KiB"},
        {"post": "/request", "body": '{"phone":"2015550123"}',
         "ctype": "application/json", "status": 415, "api": 0},
        {"post": "/request", "body": "phone=2015550123&csrf={csrf_q}",
         "ctype": "text/plain", "status": 415, "api": 0},
        {"post": "/request", "body": "--x\r\nContent-Disposition: form-data;"
         " name=\"phone\"\r\n\r\n2015550123\r\n--x--\r\n",
         "ctype": "multipart/form-data; boundary=x", "status": 415,
         "api": 0},
        {"post": "/request", "body": "phone=%ZZ20155501&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "bad percent-encoding %ZZ"},
        {"post": "/request", "body": "phone=2015550123%4&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "truncated %4"},
        {"post": "/request", "body": "phone=201555%000123&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "%00 in phone"},
        {"post": "/request", "body": "csrf={csrf_q}", "status": 400,
         "api": 0, "what": "missing phone field"},
        {"post": "/verify", "body": "csrf={csrf_q}", "status": 400,
         "what": "missing token field"},
        {"get": "/nope", "status": 404, "hdr": {"Content-Type": "^text/html"}},
        {"get": "/index.html.bak", "status": 404},
        {"method": ("PUT", "/"), "body": "x", "status": 405,
         "hdr": {"Allow": r"GET"}},
        {"method": ("DELETE", "/request"), "status": 405,
         "hdr": {"Allow": r"POST"}},
        {"get": "/request", "status": 405, "hdr": {"Allow": r"POST"}},
        {"get": "/", "status": 200, "page": "index",
         "what": "still serving"},
        {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT,
         "what": "a good request still works"},
    ]},

    {"name": "csrf_and_origin", "steps": [
        {"get": "/", "status": 200},
        {"request": PHONE, "headers": {"Origin": "https://evil.example"},
         "status": 403, "api": 0, "page": "index"},
        {"request": PHONE, "headers": {"Origin": "null"},
         "status": 403, "api": 0},
        {"request": PHONE, "headers": {"Sec-Fetch-Site": "cross-site"},
         "status": 403, "api": 0},
        {"request": PHONE, "csrf": None, "status": 403, "api": 0,
         "what": "no csrf field"},
        {"request": PHONE, "csrf": "0" * 32, "status": 403, "api": 0,
         "what": "wrong csrf"},
        {"request": PHONE, "csrf": "", "status": 403, "api": 0,
         "what": "empty csrf"},
        {"b": "B", "get": "/", "status": 200},
        {"b": "B", "request": PHONE, "csrf": "{csrf:A}", "status": 403,
         "api": 0, "what": "B posts A's csrf token"},
        {"b": "C", "request": PHONE, "csrf": "{csrf:A}", "session": False,
         "status": 403, "api": 0, "what": "no otp_sid cookie at all"},
        {"b": "A", "request": PHONE,
         "headers": {"Origin": "{origin}", "Sec-Fetch-Site": "same-origin"},
         "status": 200, "api": 1, "what": "same-origin request works"},
        {"b": "A", "verify": "{code}", "headers": {
            "Origin": "https://evil.example"}, "status": 403,
         "lacks": ["Verified"], "what": "cross-site verify"},
        {"b": "A", "verify": "{code}", "csrf": "0" * 32, "status": 403,
         "lacks": ["Verified"], "what": "verify with a wrong csrf"},
    ]},

    # ---- security: limits ----
    {"name": "max_attempts_serial",
     "config": {"MAX_ATTEMPTS": 3, "VERIFY_PER_IP_PER_HOUR": 100},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1},
         {"save_cookie": ("otp_vid", "vid")},
         {"verify": "{wrong}", "status": 403, "has": [VERIFY_FAILED]},
         {"verify": "{wrong}", "status": 403, "has": [VERIFY_FAILED]},
         {"verify": "{wrong}", "status": 403, "has": [TOO_MANY],
          "page": "index", "what": "MAX_ATTEMPTS-th wrong code"},
         {"verify": "{code}", "status": 403, "lacks": ["Verified"],
          "what": "right code after MAX_ATTEMPTS wrong ones"},
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"verify": "{code}", "status": 403, "lacks": ["Verified"],
          "what": "right code, old otp_vid restored"},
         {"request": PHONE, "status": (200, 429), "api_max": 1,
          "what": "a new code may be requested"},
     ]},

    {"name": "verify_budget_per_ip",
     "config": {"VERIFY_PER_IP_PER_HOUR": 3, "MAX_ATTEMPTS": 10},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1},
         {"verify": "{wrong}", "status": 403},
         {"verify": "{wrong}", "status": 403},
         {"verify": "{wrong}", "status": 403},
         {"verify": "{wrong}", "status": 429, "hdr": {
             "Retry-After": r"^[1-9][0-9]*$"}, "secure": True},
         {"b": "B", "request": PHONE2, "status": 200, "api": 1,
          "what": "B, same address"},
         {"b": "B", "verify": "{wrong}", "status": 429,
          "what": "the budget is per address, not per session"},
     ]},

    {"name": "resend_interval",
     "config": {"RESEND_INTERVAL": 1, "MAX_ATTEMPTS": 3,
                "VERIFY_PER_IP_PER_HOUR": 100},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT},
         {"save_cookie": ("otp_vid", "vid1")},
         {"verify": "{wrong}", "status": 403, "has": [VERIFY_FAILED]},
         {"verify": "{wrong}", "status": 403, "has": [VERIFY_FAILED]},
         {"request": PHONE, "status": 429, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
          "what": "resend at once"},
         {"sleep": 1.6},
         {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT,
          "what": "resend after RESEND_INTERVAL",
          "check": lambda ctx, b, r: check(
              ctx.fake.requests[-1]["json"]["text"] ==
              ctx.fake.requests[0]["json"]["text"],
              "resend: SMS text %r differs from the first %r (want the "
              "same code)" % (ctx.fake.requests[-1]["json"]["text"],
                              ctx.fake.requests[0]["json"]["text"]))},
         {"verify": "{wrong}", "status": 403, "has": [TOO_MANY],
          "what": "3rd wrong code (the count survived the resend)"},
         {"set_cookie": {"otp_vid": "{saved:vid1}"}},
         {"verify": "{code}", "status": 403, "lacks": ["Verified"],
          "what": "right code after 2+1 wrong ones"},
     ]},

    {"name": "sms_per_number",
     "config": {"SMS_PER_NUMBER_PER_HOUR": 2, "RESEND_INTERVAL": 1},
     "steps": [
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"sleep": 1.3},
         {"b": "B", "request": PHONE, "status": 200, "api": 1},
         {"sleep": 1.3},
         {"b": "C", "request": PHONE, "status": 429, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}, "page": "index",
          "secure": True},
         {"b": "D", "request": "(201) 555 0123", "status": 429, "api": 0,
          "what": "same number, other spelling"},
         {"b": "E", "request": PHONE2, "status": 200, "api": 1,
          "what": "another number is fine"},
     ]},

    {"name": "sms_per_ip",
     "config": {"SMS_PER_IP_PER_HOUR": 3},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 200, "api": 1},
         {"b": "D", "request": "2025550104", "status": 429, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
         {"b": "E", "request": "2025550105", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.9",
                      "X-Real-IP": "203.0.113.9",
                      "Forwarded": "for=203.0.113.9"},
          "what": "spoofed X-Forwarded-For with no TRUSTED_PROXY"},
     ]},

    {"name": "trusted_proxy_xff",
     "config": {"TRUSTED_PROXY": "127.0.0.1", "SMS_PER_IP_PER_HOUR": 1},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.1"}},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.2"}},
         {"b": "C", "request": "2025550103", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.1"},
          "what": "same client behind the proxy"},
         {"b": "D", "request": "2025550104", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "198.51.100.9, 203.0.113.2"},
          "what": "spoofed first entry; the proxy's (last) entry counts"},
         {"b": "E", "request": "2025550105", "status": 200, "api": 1,
          "what": "no X-Forwarded-For: the proxy's own address"},
     ]},

    # NETWORK_SHARE=100: every test client is one network (127.0.0.1),
    # and these are about the global caps (tests/attack/limits.py has
    # the shares).
    {"name": "sms_per_hour_global",
     "config": {"SMS_PER_HOUR": 3, "NETWORK_SHARE": 100},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 200, "api": 1},
         {"b": "D", "request": "2025550104", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}, "secure": True},
         {"get": "/", "status": 200},
     ]},

    {"name": "sms_per_day_global",
     "config": {"SMS_PER_DAY": 2, "NETWORK_SHARE": 100},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
     ]},

    {"name": "max_pending_table_full",
     "config": {"MAX_PENDING": 2},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
         {"b": "A", "verify": "{code}", "status": 200,
          "what": "existing codes still verify"},
     ]},

    {"name": "allowed_country_codes", "steps": [
        {"request": UK, "status": 400, "api": 0, "page": "index",
         "has": ['class="error"']},
        {"request": "+44 20 7183 8750", "status": 400, "api": 0},
        {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT},
    ]},

    {"name": "allowed_country_codes_iso",
     "config": {"ALLOWED_COUNTRY_CODES": "US, JM"}, "steps": [
         {"b": "A", "request": "1-876-555-0100", "status": 200, "api": 1,
          "sms": {"to": "+18765550100"}, "what": "Jamaica, listed"},
         {"b": "B", "request": "(416) 555-0123", "status": 400, "api": 0,
          "has": ["Sorry, we can't send codes to that country."],
          "what": "Canada, not listed"},
         {"b": "C", "request": "+1 787 555 0100", "status": 400, "api": 0,
          "what": "Puerto Rico, not listed"},
         {"b": "D", "request": PHONE, "status": 200, "api": 1,
          "sms": SMS_DEFAULT},
     ]},

    {"name": "country_code_44_national_numbers",
     "config": {"COUNTRY_CODE": "+44"}, "steps": [
         {"b": "A", "request": "07700 900123", "status": 200, "api": 1,
          "sms": {"to": "+447700900123"}, "what": "trunk prefix dropped"},
         {"b": "B", "request": "020 7946 0958", "status": 200, "api": 1,
          "sms": {"to": "+442079460958"}},
         {"b": "C", "request": "07700 9001234", "status": 400, "api": 0,
          "has": ["That number has too many or too few digits for its "
                  "country."]},
         {"b": "E", "request": "+1 201 555 0123", "status": 400, "api": 0,
          "has": ["Sorry, we can't send codes to that country."]},
     ]},

    {"name": "allowed_country_codes_list",
     "config": {"ALLOWED_COUNTRY_CODES": "+1,+44"}, "steps": [
         {"b": "A", "request": UK, "status": 200, "api": 1,
          "sms": {"to": UK}},
         {"b": "B", "request": "+33142685300", "status": 400, "api": 0},
         {"b": "C", "request": PHONE, "status": 200, "api": 1,
          "sms": SMS_DEFAULT},
     ]},

    {"name": "failures_byte_identical",
     "config": {"CODE_TTL": 2, "MAX_ATTEMPTS": 10,
                "VERIFY_PER_IP_PER_HOUR": 100},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1},
         {"save_cookie": ("otp_vid", "vid")},
         {"verify": "{wrong}", "status": 403, "save": "wrong"},
         {"verify": "{wrong}", "status": 403, "same": "wrong",
          "what": "wrong again"},
         {"set_cookie": {"otp_vid": "f" * 32}},
         {"verify": "{code}", "status": 403, "same": "wrong",
          "what": "unknown otp_vid"},
         {"set_cookie": {"otp_vid": None}},
         {"verify": "{code}", "status": 403, "same": "wrong",
          "what": "no otp_vid"},
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"sleep": 3},
         {"verify": "{code}", "status": 403, "same": "wrong",
          "what": "expired"},
     ]},
]

CASES += [send_failure_case(*m) for m in FAIL_MODES]
CASES += [
    tls_failure_case("unknown_ca", "rogue"),
    tls_failure_case("wrong_host", "wronghost"),
    tls_failure_case("expired_cert", "expired"),
    tls_failure_case("tls11_server", "server",
                     max_tls=ssl.TLSVersion.TLSv1_1),
]

# ---- the JSON API ------------------------------------------------------------

API_ON = {"API_TOKEN": API_TOKEN}
ZERO_ID = "0" * 40      # well-formed, never issued (id bytes all zero)


def api_check_path(label):
    return API + "/{saved:%s}/check" % label


CASES += [
    {"name": "api_verify_flow", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "sms": SMS_DEFAULT, "json_keys": ["id", "expires_in", "resend_after"],
         "json": {"id": ID_RE, "expires_in": re.compile(r"2[0-9][0-9]|300"),
                  "resend_after": 30}, "save_id": "v"},
        {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
         "status": 200, "json": {"status": "pending"}, "api": 0},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "pending"}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 200, "json": {"status": "approved"}},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "approved"}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 409, "error": "already_approved", "what": "check again"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 409,
         "error": "finished", "what": "DELETE a finished verification"},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "approved"}},
        {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1,
         "ctype": "application/json; charset=utf-8", "save_id": "w",
         "sms": {"to": PHONE2_E164}, "what": "JSON with a charset"},
        {"call": ("POST", api_check_path("w"), {"code": "{code_lower}"}),
         "status": 200, "json": {"status": "approved"},
         "what": "lower-case code"},
    ]},

    {"name": "api_cancel", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "save_id": "v"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 204},
        {"call": ("GET", API + "/{saved:v}"), "status": 404,
         "error": "not_found"},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 404, "error": "not_found",
         "what": "the right code of a cancelled verification"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 404,
         "what": "DELETE again"},
    ]},

    {"name": "api_max_attempts",
     "config": dict(API_ON, MAX_ATTEMPTS=3, VERIFY_PER_IP_PER_HOUR=100),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
          "save_id": "v"},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "pending"}},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "pending"}},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "max_attempts_reached"},
          "what": "MAX_ATTEMPTS-th wrong code"},
         {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
          "status": 200, "json": {"status": "max_attempts_reached"},
          "what": "the right code after MAX_ATTEMPTS wrong ones"},
         {"call": ("GET", API + "/{saved:v}"), "status": 200,
          "json": {"status": "max_attempts_reached"}},
     ]},

    {"name": "api_expired", "config": dict(API_ON, CODE_TTL=2), "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "json": {"expires_in": re.compile(r"[12]")}, "save_id": "v"},
        {"sleep": 3},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "expired", "expires_in": 0}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 200, "json": {"status": "expired"}},
    ]},

    {"name": "api_errors", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "auth": None,
         "status": 401, "error": "unauthorized", "api": 0,
         "hdr": {"WWW-Authenticate": r"^Bearer"}, "what": "no bearer"},
        {"call": ("POST", API, {"phone": PHONE}), "auth": "Bearer nope",
         "status": 401, "hdr": {"WWW-Authenticate": r"^Bearer"}, "api": 0},
        {"call": ("POST", API, {"phone": PHONE}),
         "auth": "Bearer " + API_TOKEN[:-1], "status": 401, "api": 0,
         "what": "a prefix of the token"},
        {"call": ("POST", API, {"phone": PHONE}),
         "auth": "Bearer " + API_TOKEN + "x", "status": 401, "api": 0,
         "what": "the token plus a byte"},
        {"call": ("POST", API, {"phone": PHONE}), "auth": API_TOKEN,
         "status": 401, "api": 0, "what": "the token without 'Bearer '"},
        {"call": ("GET", API + "/" + ZERO_ID), "auth": "Basic dXNlcjpwYXNz",
         "status": 401, "hdr": {"WWW-Authenticate": r"^Bearer"}},
        {"call": ("GET", API + "/" + ZERO_ID), "status": 404,
         "error": "not_found", "what": "unknown id"},
        {"call": ("POST", API + "/" + ZERO_ID + "/check",
                  {"code": "123456"}), "status": 404, "error": "not_found"},
        {"call": ("DELETE", API + "/" + ZERO_ID), "status": 404,
         "error": "not_found"},
        {"call": ("GET", API + "/xyz"), "status": 404, "error": "not_found",
         "what": "malformed id"},
        {"call": ("GET", API + "/" + "0" * 39), "status": 404},
        {"call": ("GET", API + "/" + "0" * 41), "status": 404},
        {"call": ("GET", API + "/" + "g" * 40), "status": 404},
        {"call": ("POST", API + "/xyz/check", {"code": "123456"}),
         "status": 404},
        {"call": ("GET", API + "/" + ZERO_ID + "/extra"), "status": 404},
        {"call": ("GET", "/api/v1/nope"), "status": 404},
        {"call": ("GET", "/api/v2/verifications"), "status": 404},
        {"call": ("POST", API, "phone=2015550123"),
         "ctype": "application/x-www-form-urlencoded", "status": 415,
         "error": "unsupported_media_type", "api": 0},
        {"call": ("POST", API, '{"phone": "2015550123"}'),
         "ctype": "text/plain", "status": 415, "api": 0},
        {"call": ("POST", API, '{"phone": "2015550123"}'), "ctype": None,
         "status": 415, "api": 0, "what": "no Content-Type"},
        {"call": ("POST", API, '{"phone": "2015550123"}'),
         "ctype": "application/jsonx", "status": 415, "api": 0},
        {"call": ("POST", API, {"phone": "5" * 2000}), "status": 413,
         "api": 0, "what": "body > 1 KiB"},
        {"call": ("POST", API, "{"), "status": 400, "api": 0,
         "what": "bad JSON"},
        {"call": ("POST", API, "not json"), "status": 400, "api": 0},
        {"call": ("POST", API, "[]"), "status": 400, "api": 0},
        {"call": ("POST", API, ""), "status": 400, "api": 0,
         "what": "empty body"},
        {"call": ("POST", API, {}), "status": 400, "api": 0,
         "what": "missing phone"},
        {"call": ("POST", API, '{"phone": 2015550123}'), "status": 400,
         "api": 0, "what": "phone is a number"},
        {"call": ("POST", API, {"code": "123456"}), "status": 400, "api": 0,
         "what": "code instead of phone"},
        {"call": ("POST", API + "/" + ZERO_ID + "/check", {}),
         "status": 400, "what": "check without code"},
        {"call": ("POST", API, {"phone": "abcdefghij"}), "status": 400,
         "error": "invalid_phone", "api": 0},
        {"call": ("POST", API, {"phone": "12345"}), "status": 400,
         "error": "phone_length", "api": 0},
        {"call": ("POST", API, {"phone": "+19005550100"}), "status": 400,
         "error": "phone_range", "api": 0},
        {"call": ("POST", API, {"phone": UK}), "status": 400,
         "error": "country_not_allowed", "api": 0},
        {"call": ("GET", API), "status": 405, "hdr": {"Allow": r"^POST$"},
         "error": "method_not_allowed"},
        {"call": ("PUT", API, {"phone": PHONE}), "status": 405,
         "hdr": {"Allow": r"^POST$"}, "api": 0},
        {"call": ("PUT", API + "/" + ZERO_ID, {}), "status": 405,
         "hdr": {"Allow": r"^GET, DELETE$"}},
        {"call": ("POST", API + "/" + ZERO_ID, {}), "status": 405,
         "hdr": {"Allow": r"^GET, DELETE$"}},
        {"call": ("GET", API + "/" + ZERO_ID + "/check"), "status": 405,
         "hdr": {"Allow": r"^POST$"}},
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "sms": SMS_DEFAULT, "what": "a good request still works"},
    ]},

    {"name": "api_off_without_token", "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 404,
         "error": "not_found", "api": 0, "no_hdr": ["WWW-Authenticate"]},
        {"call": ("POST", API, {"phone": PHONE}), "auth": None,
         "status": 404, "api": 0, "no_hdr": ["WWW-Authenticate"]},
        {"call": ("GET", API + "/" + ZERO_ID), "status": 404},
    ]},

    {"name": "api_rate_limits", "config": dict(API_ON, SMS_PER_HOUR=3),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": PHONE}), "status": 429, "api": 0,
          "error": "rate_limited", "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
          "what": "resend within RESEND_INTERVAL"},
         {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": "2025550103"}), "status": 201,
          "api": 1},
         {"call": ("POST", API, {"phone": "2025550104"}), "status": 503,
          "api": 0, "error": "rate_limited",
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
          "what": "SMS_PER_HOUR reached"},
     ]},

    {"name": "api_table_full", "config": dict(API_ON, MAX_PENDING=1),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": PHONE2}), "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
     ]},

    {"name": "api_send_failures", "config": API_ON, "steps": [
        {"mode": "500"},
        {"call": ("POST", API, {"phone": PHONE}), "status": 502, "api": 1,
         "error": "send_failed", "no_hdr": ["Retry-After"]},
        {"mode": "429"},
        {"call": ("POST", API, {"phone": PHONE2}), "status": 503, "api": 1,
         "error": "send_failed", "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
        {"mode": "ok"},
        {"call": ("POST", API, {"phone": "2025550103"}), "status": 201,
         "api": 1},
    ]},

    # A verification belongs to the front end that started it.
    {"name": "api_web_separation", "config": API_ON, "steps": [
        {"b": "W", "request": PHONE, "status": 200, "api": 1},
        {"b": "W", "save_cookie": ("otp_vid", "web")},
        {"b": "api", "call": ("POST", api_check_path("web"),
                              {"code": "{code:W}"}), "status": 404,
         "error": "not_found", "what": "the web handle checked by the API"},
        {"b": "api", "call": ("GET", API + "/{saved:web}"), "status": 404},
        {"b": "api", "call": ("DELETE", API + "/{saved:web}"),
         "status": 404},
        {"b": "api", "call": ("POST", API, {"phone": PHONE2}), "status": 201,
         "api": 1, "save_id": "apiv"},
        {"b": "W", "set_cookie": {"otp_vid": "{saved:apiv}"}},
        {"b": "W", "verify": "{code:api}", "status": 403,
         "has": [VERIFY_FAILED], "lacks": ["Verified"],
         "what": "the API id as otp_vid, with the API's code"},
        {"b": "W", "get": "/auth", "status": 401},
        {"b": "api", "call": ("POST", api_check_path("apiv"),
                              {"code": "{code}"}), "status": 200,
         "json": {"status": "approved"}},
        {"b": "W", "set_cookie": {"otp_vid": "{saved:web}"}},
        {"b": "W", "verify": "{code}", "status": 200, "page": "success"},
    ]},
]


# ---- forward-auth (GET /auth) and return_to ----------------------------------

def tampered(label, pos):
    """The saved cookie with the character at pos changed."""
    def fn(ctx, b):
        v = ctx.saved[label]
        i = pos % len(v)
        c = v[i]
        n = "1" if c == "0" else "a" if c == "b" else "b" if c.isalpha() \
            else "0"
        return v[:i] + n + v[i + 1:]
    return fn


# otp_auth only gates GET navigation: Lax, so links from elsewhere carry it.
LAX = (r"^(?=.*; Path=/(;|$))(?=.*; HttpOnly(;|$))"
       r"(?=.*; SameSite=Lax(;|$))")
AUTH_COOKIE = LAX + r"(?=.*; Max-Age=%d(;|$))otp_auth=[^;]+;"

CASES += [
    {"name": "auth_forward", "steps": [
        {"get": "/auth", "status": 401, "secure": True,
         "no_hdr": ["X-Otp-Phone"], "what": "no cookie"},
        {"request": PHONE, "status": 200, "api": 1},
        {"get": "/auth", "status": 401, "what": "code sent, not verified"},
        {"verify": "{code}", "status": 200, "page": "success",
         "cookie": {"otp_auth": AUTH_COOKIE % 43200}},
        {"get": "/auth", "status": 204, "secure": True,
         "hdr": {"X-Otp-Phone": r"^\+12015550123$"}},
        {"method": ("HEAD", "/auth"), "status": 204,
         "hdr": {"X-Otp-Phone": r"^\+12015550123$"}},
        {"save_cookie": ("otp_auth", "auth")},
        {"set_cookie": {"otp_auth": tampered("auth", -1)}},
        {"get": "/auth", "status": 401, "no_hdr": ["X-Otp-Phone"],
         "what": "last character changed"},
        {"set_cookie": {"otp_auth": tampered("auth", 0)}},
        {"get": "/auth", "status": 401, "what": "first character changed"},
        {"set_cookie": {"otp_auth": tampered("auth", 12)}},
        {"get": "/auth", "status": 401, "what": "13th character changed"},
        {"set_cookie": {"otp_auth": lambda ctx, b: ctx.saved["auth"][:-2]}},
        {"get": "/auth", "status": 401, "what": "truncated"},
        {"set_cookie": {"otp_auth": "garbage"}},
        {"get": "/auth", "status": 401},
        {"set_cookie": {"otp_auth": "{saved:auth}"}},
        {"get": "/auth", "status": 204, "what": "the real cookie again"},
        {"b": "B", "get": "/auth", "status": 401, "what": "another browser"},
        {"method": ("POST", "/auth"), "status": 405,
         "hdr": {"Allow": r"GET"}},
    ]},

    {"name": "auth_session_ttl", "config": {"SESSION_TTL": 60}, "steps": [
        {"request": PHONE, "status": 200, "api": 1},
        {"verify": "{code}", "status": 200,
         "cookie": {"otp_auth": AUTH_COOKIE % 60}},
        {"get": "/auth", "status": 204},
    ]},

    {"name": "return_to_redirect", "steps": [
        {"get": "/?return_to=/admin/x", "status": 200, "page": "index",
         "inputs": {"return_to": "/admin/x"}},
        {"request": PHONE, "fields": {"return_to": "{hidden:return_to}"},
         "status": 200, "page": "verify", "api": 1,
         "inputs": {"return_to": "/admin/x"}},
        {"verify": "{code}", "fields": {"return_to": "{hidden:return_to}"},
         "status": 303, "secure": True, "hdr": {"Location": r"^/admin/x$"},
         "cookie": {"otp_auth": AUTH_COOKIE % 43200}},
        {"get": "/auth", "status": 204},
        {"b": "B", "get": "/?return_to=%2Fadmin%2Fy%3Fa%3D1", "status": 200,
         "inputs": {"return_to": "/admin/y?a=1"}, "what": "encoded query"},
        {"b": "B", "request": PHONE2,
         "fields": {"return_to": "{hidden:return_to}"}, "status": 200,
         "api": 1},
        {"b": "B", "verify": "{code}",
         "fields": {"return_to": "{hidden:return_to}"}, "status": 303,
         "hdr": {"Location": r"^/admin/y\?a=1$"}},
    ]},
]

EVIL_RETURN_TO = ["//evil.example/", "https://evil.example/", "/\\evil",
                  "/admin\r\nSet-Cookie: evil=1", "/\t/evil.example/",
                  "javascript:alert(1)"]


def return_to_evil_steps():
    steps = []
    for i, evil in enumerate(EVIL_RETURN_TO):
        b = "E%d" % i
        steps += [
            {"b": b, "get": "/?return_to=" + urllib.parse.quote(evil, safe=""),
             "status": 200, "inputs": {"return_to": ""},
             "what": "GET /?return_to=%r" % evil},
            {"b": b, "request": "20255501%02d" % (10 + i),
             "fields": {"return_to": evil}, "status": 200, "api": 1,
             "inputs": {"return_to": ""},
             "what": "POST /request return_to=%r" % evil},
            {"b": b, "verify": "{code}", "fields": {"return_to": evil},
             "status": 200, "page": "success", "no_hdr": ["Location"],
             "what": "POST /verify return_to=%r" % evil},
        ]
    return steps


CASES += [
    {"name": "return_to_open_redirect", "steps": return_to_evil_steps()},
]


# ---- health, readiness, metrics ----------------------------------------------

def copy_ca(ctx):
    shutil.copy(cert("ca")[0], os.path.join(ctx.dir, "ca.pem"))


def remove_ca(ctx, b):
    os.remove(os.path.join(ctx.dir, "ca.pem"))


TEXT = {"Content-Type": r"^text/plain"}

CASES += [
    {"name": "health_console", "config": {"API_KEY": None}, "steps": [
        {"get": "/healthz", "status": 200, "body_is": b"ok\n", "hdr": TEXT,
         "secure": True},
        {"get": "/readyz", "status": 200, "body_is": b"ready\n", "hdr": TEXT,
         "secure": True},
        {"get": "/metrics", "status": 404, "secure": True,
         "what": "METRICS off"},
        {"method": ("POST", "/healthz"), "status": 405,
         "hdr": {"Allow": r"GET"}},
    ]},

    {"name": "health_telnyx_ca", "setup": copy_ca,
     "config": {"SMS_CA_FILE": "ca.pem"}, "steps": [
         {"get": "/readyz", "status": 200, "body_is": b"ready\n"},
         {"get": "/healthz", "status": 200, "body_is": b"ok\n"},
         {"do": remove_ca, "what": "remove SMS_CA_FILE"},
         {"get": "/readyz", "status": 503, "hdr": TEXT, "secure": True},
         {"get": "/healthz", "status": 200, "body_is": b"ok\n"},
     ]},

    {"name": "metrics_counters",
     "config": {"METRICS": True, "SMS_PER_NUMBER_PER_HOUR": 1,
                "RESEND_INTERVAL": 0},
     "steps": [
         {"get": "/metrics", "status": 200, "secure": True,
          "hdr": TEXT, "metrics": {
              "otp_sms_sent_total": 0, "otp_pending_codes": 0,
              "otp_table_capacity": 1024}},
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"b": "A", "verify": "{wrong}", "status": 403},
         {"b": "A", "verify": "{code}", "status": 200},
         {"mode": "500"},
         {"b": "B", "request": PHONE2, "status": 502, "api": 1},
         {"mode": "ok"},
         {"b": "C", "request": PHONE, "status": 429, "api": 0,
          "what": "per-number limit"},
         {"b": "D", "request": "2025550103", "status": 200, "api": 1},
         {"b": "E", "request": "2025550104", "status": 200, "api": 1},
         {"get": "/metrics", "status": 200, "metrics": {
             "otp_sms_sent_total": 3,
             'otp_sms_failed_total{reason="server_error"}': 1,
             'otp_verifications_total{result="approved"}': 1,
             'otp_verifications_total{result="wrong"}': 1,
             'otp_rate_limited_total{limit="per_number"}': 1,
             "otp_pending_codes": 2,
             "otp_table_capacity": 1024}},
     ]},

    {"name": "metrics_allow_list",
     "config": {"METRICS": True, "METRICS_ALLOW": "10.0.0.1"}, "steps": [
         {"get": "/metrics", "status": 404, "secure": True},
         {"get": "/metrics", "status": 404,
          "headers": {"X-Forwarded-For": "10.0.0.1"}},
         {"get": "/healthz", "status": 200},
     ]},
]


# ---- SIGHUP reload -----------------------------------------------------------

def write_config(ctx, text):
    path = os.path.join(ctx.dir, "config.cfg")
    with open(path + ".new", "w") as f:
        f.write(text)
    os.replace(path + ".new", path)


def sighup(changes=None, extra="", want=r"reload: configuration applied",
           what=None):
    """A step function: writes the config with changes (and extra lines),
    sends SIGHUP and waits for a log line matching want. A reload that
    should apply updates ctx.cfg (the SMS text the test expects)."""
    def fn(ctx, b):
        cfg = dict(ctx.cfg)
        cfg.update(changes or {})
        write_config(ctx, config_text(cfg) + extra)
        n0 = len(ctx.server.err_lines)
        ctx.server.proc.send_signal(signal.SIGHUP)
        for rx in [want] if isinstance(want, str) else want:
            got = ctx.server.wait_log(rx, n0, 5.0)
            check(got, "SIGHUP%s: no log line matching %r within 5 s (log: "
                  "%s)" % (" (%s)" % what if what else "", rx,
                           short(" | ".join(ctx.server.err_lines[n0:]), 300)))
        if not extra:
            ctx.cfg = cfg
        return None
    return fn


NEW_MESSAGE = "Code {code} for you"
NEW_TEXT = r"^Code [0-9A-F]{6} for you$"

CASES += [
    {"name": "sighup_reload", "steps": [
        {"b": "A", "request": PHONE, "status": 200, "api": 1,
         "sms": SMS_DEFAULT},
        {"do": sighup({"MESSAGE": NEW_MESSAGE}), "what": "new MESSAGE"},
        {"b": "B", "request": PHONE2, "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT}},
        {"b": "A", "verify": "{code}", "status": 200, "page": "success",
         "what": "a code from before the reload"},
        # line len(cfg) + 1 is the bad one
        {"do": lambda ctx, b: sighup(
            {"MESSAGE": "Bad {code}"}, extra="TOKEN_LENGHT=4\n",
            want=r"error reload: config\.cfg:%d: unknown key TOKEN_LENGHT"
                 r".*keeping the old configuration" % (len(ctx.cfg) + 1),
            what="invalid config")(ctx, b)},
        {"b": "C", "request": "2025550103", "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT},
         "what": "the config before the bad reload still applies"},
        {"b": "B", "verify": "{code}", "status": 200},
        {"do": sighup({"LISTEN": "127.0.0.1:1"}, want=[
            r"reload: LISTEN changed; it takes effect after a restart",
            r"reload: configuration applied"]), "what": "LISTEN changed"},
        {"b": "D", "get": "/", "status": 200, "what": "same port still"},
        {"b": "D", "request": "2025550104", "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT}},
    ]},
]


def run_table_case(ctx, case):
    ctx.start_fake(case.get("fake_cert", "server"),
                   case.get("fake_mode", "ok"), **case.get("fake_kw", {}))
    text = case.get("config_text")
    env = case.get("env")
    if "setup" in case:
        case["setup"](ctx)
    ctx.start_server(case.get("config"),
                     text=text(ctx) if callable(text) else text,
                     env=env(ctx) if callable(env) else env)
    for i, st in enumerate(case["steps"]):
        run_step(ctx, i, st)


# ---- config and command line (no server) -------------------------------------

GOOD = "API_KEY='%s'\nFROM_NUMBER='%s'\n" % (API_KEY, FROM)

CONFIG_ROWS = [
    # name, config text, env, args, exit, stderr regex (whole, one line),
    # stdout regex
    ("cfg_token_length_99",
     GOOD + "DEBUG=True\nCOUNTRY_CODE='+1'\nTOKEN_LENGTH=99\n", {}, [], 78,
     r"^config\.cfg:5: TOKEN_LENGTH must be 1\.\.16$", None),
    ("cfg_token_length_0", "TOKEN_LENGTH=0\n", {}, [], 78,
     r"^config\.cfg:1: TOKEN_LENGTH must be 1\.\.16$", None),
    ("cfg_unknown_key_did_you_mean", GOOD + "TOKEN_LENGHT=4\n", {}, [], 78,
     r"^config\.cfg:3: unknown key TOKEN_LENGHT \(did you mean "
     r"TOKEN_LENGTH\?\)$", None),
    ("cfg_unterminated_string", "API_KEY='abc\nFROM_NUMBER='+12025550111'\n",
     {}, [], 78, r"^config\.cfg:1: .+", None),
    ("cfg_unterminated_string_line2", "API_KEY='abc'\nFROM_NUMBER=\"+1201\n",
     {}, [], 78, r"^config\.cfg:2: .+", None),
    ("cfg_non_integer", GOOD + "TOKEN_LENGTH=four\n", {}, [], 78,
     r"^config\.cfg:3: TOKEN_LENGTH\b.+", None),
    ("cfg_integer_as_string", GOOD + "TOKEN_LENGTH='4'\n", {}, [], 78,
     r"^config\.cfg:3: TOKEN_LENGTH\b.+", None),
    ("cfg_integer_trailing_junk", "TOKEN_LENGTH=4x\n", {}, [], 78,
     r"^config\.cfg:1: TOKEN_LENGTH\b.+", None),
    ("cfg_bad_bool", "# comment\nDEBUG=maybe\n", {}, [], 78,
     r"^config\.cfg:2: DEBUG\b.+", None),
    ("cfg_code_ttl_over_600", "CODE_TTL=601\n", {}, [], 78,
     r"^config\.cfg:1: CODE_TTL\b.+", None),
    ("cfg_env_override_invalid", GOOD, {"OTP_TOKEN_LENGTH": "99"}, [], 78,
     r"TOKEN_LENGTH", None),
    ("cfg_check_ok", GOOD + "# a comment\nDEBUG=False\nTOKEN_LENGTH=6\n",
     {}, ["-t"], 0, None, r"^configuration OK$"),
    ("cfg_check_tutorial", GOOD + "DEBUG=True\nCOUNTRY_CODE='+1'\n"
     "TOKEN_LENGTH=4\n", {}, ["-t"], 0, None, r"^configuration OK$"),
    ("cfg_check_bad", "TOKEN_LENGTH=99\n", {}, ["-t"], 78,
     r"^config\.cfg:1: TOKEN_LENGTH must be 1\.\.16$", None),
    ("cfg_api_key_file_missing", "API_KEY_FILE='missing.key'\n"
     "FROM_NUMBER='+12025550111'\n", {}, [], 78,
     r"^config\.cfg:1: API_KEY_FILE\b.*missing\.key", None),
    ("cfg_trusted_proxy_typo", GOOD + "TRUSTED_PROXY='127.0.0.l'\n", {}, [],
     78, r"^config\.cfg:3: TRUSTED_PROXY must be IP addresses", None),
    ("cfg_metrics_allow_name", GOOD + "METRICS_ALLOW='localhost'\n", {}, [],
     78, r"^config\.cfg:3: METRICS_ALLOW must be IP addresses", None),
    ("cfg_state_dir_missing", GOOD + "STATE_DIR='no/such/dir'\n", {}, [],
     78, r"^STATE_DIR no/such/dir: .*install -d -m 700", None),
    ("cli_version", GOOD, {}, ["--version"], 0, None, r"[0-9]+\.[0-9]+"),
    ("cli_help", GOOD, {}, ["--help"], 0, None, r"-c"),
    ("cli_bad_flag", GOOD, {}, ["--bogus"], 64, None, None),
    ("cli_bad_short_flag", GOOD, {}, ["-x"], 64, None, None),
    ("cli_missing_argument", GOOD, {}, ["-c"], 64, None, None),
]


def run_config_row(ctx, row):
    name, text, env, args, want_rc, err_rx, out_rx = row
    with open(os.path.join(ctx.dir, "config.cfg"), "w") as f:
        f.write(text)
    cmd = [BIN] + (["-c", "config.cfg"] if args != ["-c"] else []) + args
    try:
        p = subprocess.run(cmd, cwd=ctx.dir, env=clean_env(env),
                           stdin=subprocess.DEVNULL, capture_output=True,
                           timeout=CONFIG_RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        raise Fail("%s did not exit within %ds" % (" ".join(args) or "-c",
                                                   CONFIG_RUN_TIMEOUT))
    out = p.stdout.decode("utf-8", "replace")
    err = p.stderr.decode("utf-8", "replace")
    with open(os.path.join(ctx.dir, "result.txt"), "w") as f:
        f.write("cmd: %s\nexit: %d\n--- stdout\n%s--- stderr\n%s"
                % (cmd, p.returncode, out, err))
    what = "exit %d, stderr %r, stdout %r" % (p.returncode, short(err, 200),
                                               short(out, 80))
    check(p.returncode == want_rc, "want exit %d; got %s" % (want_rc, what))
    if err_rx:
        lines = [ln for ln in err.splitlines() if ln.strip()]
        check(len(lines) == 1, "want exactly one stderr line; got %s" % what)
        check(re.search(err_rx, lines[0]), "stderr %r does not match %r"
              % (lines[0], err_rx))
        check(API_KEY not in err, "stderr contains the API key")
    if out_rx:
        check(re.search(out_rx, out, re.M), "stdout %r does not match %r"
              % (short(out, 200), out_rx))
    if want_rc != 0:
        check("listening on" not in err, "it started listening")


# ---- code-driven cases -------------------------------------------------------

def case_console_no_api_key(ctx):
    """Console provider: the code goes to stdout only, never stderr."""
    ctx.start_fake()
    ctx.start_server({"API_KEY": None, "TOKEN_LENGTH": 8})
    b = ctx.browser()
    r = b.request_code(PHONE)
    check(r.status == 200, "request -> %r" % r)
    check(ctx.fake.count() == 0, "an API call with no API_KEY")
    got = ctx.server.wait_stdout(r"^SMS to \+12015550123: Your token is "
                                 r"([0-9A-F]{8})$", 0, 5.0)
    check(got, "no console SMS line on stdout within 5 s (got %s)"
          % ctx.server.out_lines[-3:])
    code = got[1].group(1)
    ctx.note_sms(got[1].group(0).split(": ", 1)[1], code)
    r = b.verify(code)
    check(r.status == 200, "verify -> %r" % r)


def case_security_headers_everywhere(ctx):
    ctx.start_fake()
    ctx.start_server({"RESEND_INTERVAL": 30})
    a = ctx.browser("A")
    got = []

    def add(label, r, status):
        check(r.status == status, "%s -> %d, want %d (%s)" % (
            label, r.status, status, short(r.text, 80)))
        got.append((label, r))

    add("GET /", a.get("/"), 200)
    add("GET /style.css", a.get("/style.css"), 200)
    add("GET /missing", a.get("/missing"), 404)
    add("PUT /", a.send("PUT", "/", body=b"x"), 405)
    add("POST 2 KiB", a.post_form("/request", {"phone": "5" * 2048}), 413)
    add("POST json", a.send("POST", "/request", body=b"{}", headers={
        "Content-Type": "application/json"}), 415)
    add("POST %ZZ", a.send("POST", "/request", body="phone=%%ZZ&csrf=%s"
                           % urllib.parse.quote(a.csrf or ""), headers={
                               "Content-Type":
                               "application/x-www-form-urlencoded"}), 400)
    add("POST bad csrf", a.request_code(PHONE, csrf="x"), 403)
    add("POST /request", a.request_code(PHONE), 200)
    add("POST /verify wrong", a.verify("ZZZZZZ"), 403)
    add("POST /request again (resend)", a.request_code(PHONE), 429)
    ctx.fake.mode = "500"
    add("POST /request, API 500", ctx.browser("B").request_code(PHONE2), 502)
    ctx.fake.mode = "503"
    add("POST /request, API 503", ctx.browser("C").request_code(
        "2025550103"), 503)
    ctx.fake.mode = "ok"
    a2 = ctx.browser("D")
    n0 = ctx.fake.count()
    r = a2.request_code("2025550104")
    add("POST /request D", r, 200)
    ctx.collect_sms(n0, a2)
    check(a2.code, "no code reached the fake API")
    add("POST /verify right", a2.verify(a2.code), 200)
    bad = []
    for label, r in got:
        try:
            check_security_headers(label, r)
        except Fail as e:
            bad.append(str(e))
    check(not bad, "; ".join(bad[:4]) + (" (+%d more)" % (len(bad) - 4)
                                         if len(bad) > 4 else ""))


def _parallel(n, fn):
    barrier = threading.Barrier(n)
    results = [None] * n

    def run(i):
        try:
            barrier.wait(10)
            results[i] = fn(i)
        except Exception as e:  # noqa: BLE001
            results[i] = e
    ts = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return results


def case_max_attempts_parallel(ctx):
    ctx.start_fake()
    max_attempts = 5
    ctx.start_server({"MAX_ATTEMPTS": max_attempts,
                      "VERIFY_PER_IP_PER_HOUR": 1000, "TOKEN_LENGTH": 6})
    a = ctx.browser("A")
    r = a.request_code(PHONE)
    check(r.status == 200, "request -> %r" % r)
    ctx.collect_sms(0, a)
    check(a.code, "no SMS with a code reached the fake API")
    right = a.code
    cookies, csrf = dict(a.cookies), a.csrf
    wrongs = []
    v = int(right, 16)
    for i in range(1, 101):
        wrongs.append("%06X" % ((v + i * 7919) % (1 << 24)))
    check(right not in wrongs, "test bug: the right code is among the guesses")

    def guess(i):
        c = Browser(ctx, "G%d" % i)
        c.cookies = dict(cookies)
        c.csrf = csrf
        return c.verify(wrongs[i])
    res = _parallel(100, guess)
    errs = [r for r in res if not isinstance(r, Resp)]
    if errs:
        raise Fail("%d of 100 guesses got no HTTP answer: %s"
                   % (len(errs), errs[0]))
    statuses = {}
    for r in res:
        statuses[r.status] = statuses.get(r.status, 0) + 1
    check(set(statuses) <= {403}, "statuses %s (want only 403)" % statuses)
    failed = sum(1 for r in res if VERIFY_FAILED in r.text)
    toomany = sum(1 for r in res if TOO_MANY in r.text)
    with open(os.path.join(ctx.dir, "guesses.txt"), "w") as f:
        f.write("statuses %s, verify-failed %d, too-many %d\n"
                % (statuses, failed, toomany))
    check(failed <= max_attempts, "%d guesses answered %r, want <= "
          "MAX_ATTEMPTS=%d (too-many answers: %d)"
          % (failed, VERIFY_FAILED, max_attempts, toomany))
    a.cookies, a.csrf = dict(cookies), csrf
    r = a.verify(right)
    check(r.status == 403 and page_kind(r.body) != "success",
          "the right code after 100 wrong guesses -> %r" % r)
    check(ctx.server.alive(), "server died")


def case_sms_pump_1000(ctx):
    ctx.start_fake()
    ctx.start_server({})     # defaults: 10 per address per hour, 100 per hour
    cap = 10
    numbers = ["201555%04d" % i for i in range(1000)]
    lock = threading.Lock()
    statuses = {}

    def pump(worker):
        b = Browser(ctx, "P%d" % worker)
        for i in range(worker, 1000, 8):
            if i % 5 == 0:          # a fresh session every few numbers
                b = Browser(ctx, "P%d" % worker)
            ctx.note_phone(numbers[i])
            r = b.request_code(numbers[i])
            with lock:
                statuses[r.status] = statuses.get(r.status, 0) + 1
        return True
    with concurrent.futures.ThreadPoolExecutor(8) as ex:
        for f in [ex.submit(pump, w) for w in range(8)]:
            f.result()
    n = ctx.fake.count()
    ctx.collect_sms(0)
    with open(os.path.join(ctx.dir, "pump.txt"), "w") as f:
        f.write("statuses %s, sent %d\n" % (statuses, n))
    check(1 <= n <= cap, "%d SMS sent for 1000 numbers from one address, "
          "want 1..%d (statuses %s)" % (n, cap, statuses))
    check(set(statuses) <= {200, 429, 503}, "statuses %s" % statuses)
    check(statuses.get(200, 0) == n, "%d answers 200 but %d SMS sent"
          % (statuses.get(200, 0), n))
    r = ctx.browser("Z").get("/")
    check(r.status == 200, "GET / after the pump -> %r" % r)


def _raw_connect(ctx):
    s = socket.create_connection(("127.0.0.1", ctx.server.port), timeout=30)
    return s


def _wait_cut(s, feed, deadline):
    """Feeds one byte a second (feed(i) -> bytes) until the server closes
    or answers. Returns (seconds, how)."""
    t0 = time.monotonic()
    i = 0
    while time.monotonic() - t0 < deadline:
        r, _, _ = select.select([s], [], [], 1.0)
        if r:
            try:
                data = s.recv(4096)
            except OSError as e:
                return time.monotonic() - t0, "reset (%s)" % e
            return time.monotonic() - t0, ("answer %r" % short(data, 60)
                                           if data else "closed")
        try:
            s.send(feed(i))
        except OSError as e:
            return time.monotonic() - t0, "send failed (%s)" % e
        i += 1
    return None, "still open after %ds" % deadline


def _trickle_case(ctx, head, feed):
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser("A")
    a.get("/")
    s = _raw_connect(ctx)
    s.sendall(head(a))
    result = {}

    def other():
        time.sleep(3)
        t0 = time.monotonic()
        r = ctx.browser("B").get("/")
        result["other"] = (r.status, time.monotonic() - t0)
    t = threading.Thread(target=other)
    t.start()
    took, how = _wait_cut(s, feed, 20)
    s.close()
    t.join(30)
    check("other" in result, "another client got no answer while trickling")
    st, dt = result["other"]
    check(st == 200 and dt <= 5.0, "another client during the trickle: GET / "
          "-> %d in %.1f s (bound 5 s)" % (st, dt))
    check(took is not None, "trickling connection: %s" % how)
    check(took <= 15.0, "trickling connection cut after %.1f s (%s), want "
          "<= ~10 s (bound 15 s)" % (took, how))
    with open(os.path.join(ctx.dir, "trickle.txt"), "w") as f:
        f.write("cut after %.1f s: %s\nother: %s\n" % (took, how, result))


def case_trickle_body(ctx):
    def head(a):
        body_hdr = ("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                    "Content-Type: application/x-www-form-urlencoded\r\n"
                    "Content-Length: 100\r\nCookie: %s\r\n\r\n" % (
                        ctx.server.port, "; ".join(
                            "%s=%s" % kv for kv in a.cookies.items())))
        return body_hdr.encode()
    _trickle_case(ctx, head, lambda i: b"p")


def case_trickle_body_big_head(ctx):
    """Headers so long that head and body do not fit civetweb's request
    buffer: civetweb then hands the request over without waiting for the
    body, and otp_demo's own deadline (body_read) must cut the trickle.
    The body's first bytes come with the head (read from the buffer at
    once), the rest a byte a second."""
    def head(a):
        pad = "".join("X-Pad-%d: %s\r\n" % (i, "a" * 900) for i in range(8))
        return ("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n%s"
                "Content-Length: 1000\r\nCookie: %s\r\n\r\nphone=" % (
                    ctx.server.port, pad, "; ".join(
                        "%s=%s" % kv for kv in a.cookies.items()))).encode()
    _trickle_case(ctx, head, lambda i: b"1")


def case_trickle_headers(ctx):
    hdr = b"X-Slow: " + b"a" * 200

    def head(a):
        return ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                % ctx.server.port).encode()
    _trickle_case(ctx, head, lambda i: hdr[i % len(hdr):i % len(hdr) + 1])


def case_trickle_starvation(ctx):
    """THREADS tricklers (1 byte a second, Content-Length 1000) must not
    lock every worker: a GET / sent 3 s later is answered within 15 s."""
    ctx.start_fake()
    threads = 2
    ctx.start_server({"THREADS": threads})
    a = ctx.browser("A")
    a.get("/")
    socks = []
    for _ in range(threads + 2):
        s = _raw_connect(ctx)
        s.sendall(("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                   "Content-Type: application/x-www-form-urlencoded\r\n"
                   "Content-Length: 1000\r\nCookie: %s\r\n\r\n"
                   % (ctx.server.port, "; ".join(
                       "%s=%s" % kv for kv in a.cookies.items()))).encode())
        socks.append(s)
    stop = threading.Event()

    def trickle():
        while not stop.wait(1.0):
            for s in socks:
                try:
                    s.send(b"p")
                except OSError:
                    pass
    t = threading.Thread(target=trickle, daemon=True)
    t.start()
    try:
        time.sleep(3)
        b = ctx.browser("B")
        t0 = time.monotonic()
        try:
            r = b.get("/", timeout=15)
            how = "%d" % r.status
        except Fail as e:
            how = str(e)
        dt = time.monotonic() - t0
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()
    check(how == "200" and dt <= 15, "with %d trickling clients and THREADS="
          "%d, GET / -> %s after %.1f s (bound 15 s)"
          % (len(socks), threads, how, dt))


def case_huge_content_length(ctx):
    """A client announcing 10 MB gets 413 without the server reading it."""
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser("A")
    a.get("/")
    s = _raw_connect(ctx)
    s.sendall(("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               "Content-Length: 10485760\r\nCookie: %s\r\n\r\nphone=201"
               % (ctx.server.port, "; ".join("%s=%s" % kv for kv in
                                              a.cookies.items()))).encode())
    s.settimeout(15)
    data = b""
    try:
        while b"\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    except OSError as e:
        raise Fail("no answer to Content-Length 10 MB: %s" % e)
    finally:
        s.close()
    check(data.startswith(b"HTTP/1.1 413") or data.startswith(b"HTTP/1.0 413"),
          "Content-Length 10 MB -> %r, want 413" % short(data, 60))
    check(ctx.fake.count() == 0, "an SMS was sent")
    check(a.get("/").status == 200, "GET / afterwards failed")


def case_sigterm_clean_exit(ctx):
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser()
    a.request_code(PHONE)
    # a connection left open must not stop a clean exit
    s = _raw_connect(ctx)
    s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    rc = ctx.server.stop()
    dt = time.monotonic() - t0
    s.close()
    check(rc == 0, "exit on SIGTERM with an open connection: %s" % (rc,))
    check(dt <= 8.0, "SIGTERM took %.1f s (bound 8 s)" % dt)
    ctx.server.stop = lambda: 0     # already stopped; finish() scans the log


def _raw_exchange(port, data, timeout=20):
    """Sends data, returns (head bytes, seconds) of the answer."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    t0 = time.monotonic()
    got = b""
    try:
        s.sendall(data)
        while b"\r\n\r\n" not in got:
            c = s.recv(65536)
            if not c:
                break
            got += c
    except OSError as e:
        return ("%s: %s" % (type(e).__name__, e)).encode(), \
            time.monotonic() - t0
    finally:
        s.close()
    return got.split(b"\r\n\r\n")[0], time.monotonic() - t0


def case_raw_protocol_errors(ctx):
    """civetweb's own error answers also carry the security headers, and
    the server keeps serving."""
    ctx.start_fake()
    ctx.start_server({})
    port = ctx.server.port
    rows = [
        ("not HTTP", b"GARBAGE\r\n\r\n"),
        ("negative Content-Length",
         b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
        ("20 KB URI", b"GET /" + b"a" * 20000 + b" HTTP/1.1\r\nHost: x"
         b"\r\n\r\n"),
        ("100 KB of headers", b"GET / HTTP/1.1\r\nHost: x\r\n" +
         b"X-Big: " + b"b" * 100000 + b"\r\n\r\n"),
        ("stalled body", b"POST /request HTTP/1.1\r\nHost: x\r\n"
         b"Content-Type: application/x-www-form-urlencoded\r\n"
         b"Content-Length: 100\r\n\r\nphone=1"),
        ("chunked body", b"POST /request HTTP/1.1\r\nHost: x\r\n"
         b"Transfer-Encoding: chunked\r\nContent-Type: "
         b"application/x-www-form-urlencoded\r\n\r\n5\r\nphone\r\n"
         b"0\r\n\r\n"),
        ("HTTP/1.0 no Host", b"GET / HTTP/1.0\r\n\r\n"),
    ]
    bad = []
    for label, data in rows:
        head, dt = _raw_exchange(port, data)
        with open(os.path.join(ctx.dir, "raw.log"), "a") as f:
            f.write("%s (%.1f s):\n%s\n\n" % (label, dt, head.decode(
                "utf-8", "replace")))
        if dt > 15:
            bad.append("%s: answered after %.1f s (bound 15 s)" % (label, dt))
        m = re.match(rb"HTTP/1\.[01] ([0-9]{3})", head)
        if not m:
            if label in ("100 KB of headers", "20 KB URI") and \
                    (not head or b"Error" in head):
                continue   # a closed connection is an acceptable answer
            bad.append("%s: no HTTP answer (%r)" % (label, short(head, 60)))
            continue
        hdrs = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.decode("latin-1").partition(":")
            hdrs.setdefault(k.strip().lower(), v.strip())
        for name, rx in SECURITY_HEADERS.items():
            if name not in hdrs or not re.search(rx, hdrs[name]):
                bad.append("%s -> %s: %s is %r" % (
                    label, m.group(1).decode(), name, hdrs.get(name)))
        check(ctx.server.alive(), "server died after %s" % label)
    check(not bad, "; ".join(bad[:4]))
    check(ctx.browser().get("/").status == 200, "GET / afterwards failed")
    check(ctx.fake.count() == 0, "an SMS was sent")


def case_listen_two_ports(ctx):
    ctx.start_fake()
    ctx.start_server({"LISTEN": "127.0.0.1:0,127.0.0.1:0"})
    pat = re.compile(r"listening on http://127\.0\.0\.1:([0-9]+)")
    end = time.monotonic() + 5
    ports = []
    while time.monotonic() < end:
        ports = sorted({int(m.group(1)) for m in map(
            pat.search, list(ctx.server.err_lines)) if m})
        if len(ports) >= 2:
            break
        time.sleep(0.1)
    check(len(ports) == 2, "want two 'listening on' lines, got ports %s"
          % ports)
    for p in ports:
        ctx.server.port = p
        r = ctx.browser("B%d" % p).get("/")
        check(r.status == 200, "GET / on port %d -> %r" % (p, r))


def case_sigint_clean_exit(ctx):
    ctx.start_fake()
    ctx.start_server({})
    ctx.browser().get("/")
    ctx.server.proc.send_signal(signal.SIGINT)
    try:
        rc = ctx.server.proc.wait(8)
    except subprocess.TimeoutExpired:
        raise Fail("still running 8 s after SIGINT")
    check(rc == 0, "exit on SIGINT: %s (want 0)" % rc)


# ---- restarts, key files, TLS listeners --------------------------------------

def _verify_flow(ctx, b, phone):
    """Request a code for phone in browser b and verify it; returns the
    success response."""
    n0 = ctx.fake.count()
    r = b.request_code(phone)
    check(r.status == 200, "request %s -> %r" % (phone, r))
    ctx.collect_sms(n0, b)
    check(b.code, "no code reached the fake API")
    r = b.verify(b.code)
    check(r.status == 200 and page_kind(r.body) == "success",
          "verify -> %r" % r)
    return r


def case_auth_state_dir_restart(ctx):
    """With STATE_DIR, session.key (32 bytes, 0600) is made on first start
    and reused: otp_auth cookies and CSRF tokens survive a restart."""
    state = os.path.join(ctx.dir, "state")
    os.makedirs(state)
    key = os.path.join(state, "session.key")
    ctx.start_fake()
    ctx.start_server({"STATE_DIR": state})
    check(os.path.isfile(key), "no %s after the first start" % key)
    st = os.stat(key)
    check(st.st_mode & 0o777 == 0o600, "session.key mode %o, want 600"
          % (st.st_mode & 0o777))
    check(st.st_size == 32, "session.key is %d bytes, want 32" % st.st_size)
    with open(key, "rb") as f:
        key1 = f.read()
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    r = a.get("/auth")
    check(r.status == 204, "GET /auth after verifying -> %r" % r)
    b = ctx.browser("B")
    check(b.get("/").status == 200, "B: GET / failed")

    ctx.restart_server()
    with open(key, "rb") as f:
        check(f.read() == key1, "session.key changed on restart")
    check(os.stat(key).st_mode & 0o777 == 0o600, "session.key mode changed")
    r = a.get("/auth")
    check(r.status == 204, "GET /auth with the same otp_auth after a restart "
          "with the same STATE_DIR -> %r, want 204" % r)
    check(r.header("X-Otp-Phone") == PHONE_E164, "X-Otp-Phone %r after the "
          "restart" % r.header("X-Otp-Phone"))
    n0 = ctx.fake.count()
    r = b.request_code(PHONE2)
    ctx.collect_sms(n0, b)
    check(r.status == 200, "POST /request with the otp_sid and CSRF token "
          "from before the restart -> %r, want 200" % r)


def case_auth_no_state_dir_restart(ctx):
    """Without STATE_DIR the keys are per process: a restart invalidates
    otp_auth cookies and CSRF tokens."""
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    check(a.get("/auth").status == 204, "GET /auth after verifying failed")
    b = ctx.browser("B")
    check(b.get("/").status == 200, "B: GET / failed")
    ctx.restart_server()
    r = a.get("/auth")
    check(r.status == 401, "GET /auth with an otp_auth from the previous "
          "process -> %r, want 401" % r)
    r = b.request_code(PHONE2)
    check(r.status == 403 and ctx.fake.count() == 1, "POST /request with a "
          "CSRF token from the previous process -> %r, want 403" % r)


def case_api_key_file(ctx):
    """API_KEY_FILE: the key comes from the file (newline stripped) and
    beats an inline API_KEY."""
    key, inline = "KEYfile-5c1d9e0a7b3f4a62", "KEYinline-0d9f8e7c6b5a"
    ctx.secrets["the API_KEY_FILE key"] = key
    ctx.secrets["the inline API_KEY"] = inline
    with open(os.path.join(ctx.dir, "api.key"), "w") as f:
        f.write(key + "\n")
    os.chmod(os.path.join(ctx.dir, "api.key"), 0o600)
    ctx.start_fake(api_key=key)
    ctx.start_server({"API_KEY": inline, "API_KEY_FILE": "api.key"})
    a = ctx.browser("A")
    n0 = ctx.fake.count()
    r = a.request_code(PHONE)
    new = ctx.collect_sms(n0, a)
    check(len(new) == 1, "%d SMS API calls, want 1" % len(new))
    auth = new[0]["headers"].get("authorization")
    check(auth == "Bearer " + key, "Authorization %r, want 'Bearer ' + the "
          "key from API_KEY_FILE (without its newline)" % auth)
    check(r.status == 200 and new[0]["verdict"] == "ok",
          "request -> %r (fake's verdict %s)" % (r, new[0]["verdict"]))
    r = a.verify(a.code)
    check(r.status == 200, "verify -> %r" % r)


def cert_fingerprint(der):
    return ":".join("%02X" % c for c in hashlib.sha256(der).digest())


def tls_peer_cert(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with insecure_tls().wrap_socket(s) as t:
            return t.getpeercert(binary_form=True), t.version()


FINGERPRINT = r"certificate (\S+) sha256=((?:[0-9A-F]{2}:){31}[0-9A-F]{2})"


def case_tls_listener(ctx):
    """LISTEN 's': a self-signed CERT_FILE is made (0600) on first start and
    reused after; HTTPS works; cookies are Secure; HSTS is sent."""
    certdir = os.path.join(ctx.dir, "tls")
    os.makedirs(certdir)
    pem = os.path.join(certdir, "otp_demo.pem")
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0s", "CERT_FILE": pem})
    check(srv.scheme == "https", "the listening line says %s, want https"
          % srv.scheme)
    check(os.path.isfile(pem), "CERT_FILE %s was not generated" % pem)
    mode = os.stat(pem).st_mode & 0o777
    check(mode == 0o600, "CERT_FILE mode %o, want 600" % mode)
    got = srv.wait_log(FINGERPRINT, 0, 2.0)
    check(got, "no 'certificate PATH sha256=...' line in the log")
    fp1 = got[1].group(2)
    der, version = tls_peer_cert(srv.port)
    check(cert_fingerprint(der) == fp1, "the served certificate's SHA-256 %s "
          "is not the logged %s" % (cert_fingerprint(der), fp1))
    check(version in ("TLSv1.2", "TLSv1.3"), "negotiated %s" % version)
    with open(pem, "rb") as f:
        pem1 = f.read()

    a = ctx.browser("A")
    r = a.get("/")
    check(r.status == 200, "HTTPS GET / -> %r" % r)
    check_security_headers("HTTPS GET /", r)
    hsts = r.header("Strict-Transport-Security")
    check(hsts and re.search(r"max-age=[1-9][0-9]*", hsts),
          "HTTPS GET /: Strict-Transport-Security %r" % hsts)
    # Over TLS every cookie is a __Host- one: Secure, Path=/, no Domain.
    sid = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_sid=")]
    check(sid and re.search(r"; Secure(;|$)", sid[0]) and
          re.search(r"; Path=/(;|$)", sid[0]),
          "HTTPS GET /: __Host-otp_sid cookie %r lacks Secure" % sid)
    n0 = ctx.fake.count()
    r = a.request_code(PHONE)
    ctx.collect_sms(n0, a)
    vid = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_vid=")]
    check(r.status == 200 and vid and re.search(r"; Secure(;|$)", vid[0]),
          "HTTPS POST /request -> %r, otp_vid %r (want 200, Secure)"
          % (r, vid))
    check(r.header("Strict-Transport-Security"), "POST /request: no HSTS")
    r = a.verify(a.code)
    auth = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_auth=")]
    check(r.status == 200 and auth and re.search(r"; Secure(;|$)", auth[0]),
          "HTTPS POST /verify -> %r, otp_auth %r (want 200, Secure)"
          % (r, auth))
    r = a.get("/nope")
    check(r.status == 404 and r.header("Strict-Transport-Security"),
          "HTTPS 404 -> %r, HSTS %r" % (r, r.header(
              "Strict-Transport-Security")))

    srv = ctx.restart_server()
    got = srv.wait_log(FINGERPRINT, 0, 2.0)
    check(got, "second start: no 'certificate ... sha256=' line")
    check(got[1].group(2) == fp1, "second start: fingerprint %s, want the "
          "first start's %s (CERT_FILE reused)" % (got[1].group(2), fp1))
    check(not srv.wait_log(r"generated", 0, 0.1), "second start generated a "
          "new certificate")
    with open(pem, "rb") as f:
        check(f.read() == pem1, "CERT_FILE changed on the second start")
    der, _ = tls_peer_cert(srv.port)
    check(cert_fingerprint(der) == fp1, "second start serves another "
          "certificate")
    check(ctx.browser("B").get("/").status == 200, "HTTPS GET / after the "
          "restart failed")


def case_tls_redirect_http(ctx):
    """LISTEN with a plain and a TLS port and REDIRECT_HTTP: the plain port
    answers 301 to the same path on the TLS port."""
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0,127.0.0.1:0s",
                            "CERT_FILE": os.path.join(ctx.dir, "otp.pem"),
                            "REDIRECT_HTTP": True})
    ports = srv.ports()
    check(len(ports.get("http", [])) == 1 and len(ports.get("https", [])) == 1,
          "want one http and one https 'listening on' line, got %s" % ports)
    plain, tls = ports["http"][0], ports["https"][0]
    bad = []
    # The path may come back re-encoded, but must mean the same and be a
    # single header: a %0d%0a in the path must not split the response.
    for method, path in (("GET", "/x?y"), ("GET", "/"), ("HEAD", "/x?y"),
                         ("GET", "/request?a=1&b=%2F"), ("GET", "/a%20b"),
                         ("GET", "/a%0d%0aSet-Cookie:%20evil=1?q=%0d%0a")):
        conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            r.read()
        finally:
            conn.close()
        resp = Resp(r.status, r.reason, r.getheaders(), b"", 0)
        want = "https://127.0.0.1:%d%s" % (tls, path)
        loc = resp.header("Location") or ""
        same = loc == want or (
            re.fullmatch(r"[!-~]+", loc) and urllib.parse.unquote(loc) ==
            urllib.parse.unquote(want))
        if r.status != 301 or not same:
            bad.append("plain %s %s -> %d Location %r, want 301 %s" % (
                method, path, r.status, loc, want))
        injected = [(k, v) for k, v in resp.headers if "evil" in v and
                    k.lower() != "location"]
        if injected:
            bad.append("plain %s %s: injected header(s) %s" % (
                method, path, injected))
        try:
            check_security_headers("plain %s %s" % (method, path), resp)
        except Fail as e:
            bad.append(str(e))
    check(not bad, "; ".join(bad))
    srv.port, srv.scheme = tls, "https"
    r = ctx.browser("A").get("/")
    check(r.status == 200 and r.header("Strict-Transport-Security"),
          "HTTPS GET / on the TLS port -> %r" % r)


def _tls_legacy_client():
    c = insecure_tls()
    c.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = ssl.TLSVersion.TLSv1_1
    return c


def _local_tls11_works():
    """True if this Python/OpenSSL can speak TLS 1.1 to itself."""
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(*cert("server"))
    srv.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        srv.minimum_version = ssl.TLSVersion.TLSv1
        srv.maximum_version = ssl.TLSVersion.TLSv1_1
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    result = {}

    def serve():
        try:
            with srv.wrap_socket(a, server_side=True) as t:
                result["server"] = t.version()
        except (ssl.SSLError, OSError) as e:
            result["server_error"] = str(e)
    t = threading.Thread(target=serve)
    t.start()
    try:
        with _tls_legacy_client().wrap_socket(b) as c:
            result["client"] = c.version()
    except (ssl.SSLError, OSError) as e:
        result["client_error"] = str(e)
    t.join(5)
    a.close()
    b.close()
    return result.get("client") == "TLSv1.1", result


def case_tls_refuses_tls11(ctx):
    """A TLS 1.0/1.1 client gets no connection (a TLS 1.2 one does)."""
    ok, how = _local_tls11_works()
    if not ok:
        raise Skip("the local OpenSSL cannot speak TLS 1.1 even to itself "
                   "(%s); TLS 1.0/1.1 refusal not checked" % how)
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0s",
                            "CERT_FILE": os.path.join(ctx.dir, "otp.pem")})
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) \
                as s:
            with _tls_legacy_client().wrap_socket(s) as t:
                v = t.version()
        raise Fail("a TLS 1.0/1.1-only client connected (%s)" % v)
    except (ssl.SSLError, ConnectionError) as e:
        with open(os.path.join(ctx.dir, "tls11.txt"), "w") as f:
            f.write("refused: %s\n" % e)
    _, version = tls_peer_cert(srv.port)
    check(version in ("TLSv1.2", "TLSv1.3"), "a modern client negotiated %s"
          % version)
    check(ctx.browser().get("/").status == 200, "HTTPS GET / failed")



def case_log_syslog(ctx):
    """LOG='syslog': log lines go to syslog (/dev/log), tagged otp_demo,
    and none to stderr. The test is /dev/log's only reader, so it needs
    root and no syslog daemon of the machine's."""
    import socket as _socket
    path = "/dev/log"
    if os.geteuid() != 0 or os.path.exists(path):
        raise Skip("needs root and a free /dev/log (a syslog daemon runs)")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    proc = None
    try:
        cfgfile = os.path.join(ctx.dir, "syslog.cfg")
        with open(cfgfile, "w") as f:
            f.write("LISTEN='127.0.0.1:0'\nSMS_PROVIDER='console'\n"
                    "LOG='syslog'\n")
        err = open(os.path.join(ctx.dir, "syslog.stderr"), "w+")
        proc = subprocess.Popen([BIN, "-c", cfgfile], stdout=subprocess.DEVNULL,
                                stderr=err, env=clean_env())
        lines, port, deadline = [], None, time.monotonic() + 10
        while port is None and time.monotonic() < deadline:
            try:
                lines.append(sock.recv(4096).decode("utf-8", "replace"))
            except _socket.timeout:
                continue
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                          lines[-1])
            if m:
                port = int(m.group(1))
        check(port, "no 'listening on' message in syslog: %r" % lines)
        check(all(re.match(r"<\d+>.*otp_demo\[%d\]: " % proc.pid, l)
                  for l in lines), "untagged syslog messages: %r" % lines)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        check(conn.getresponse().status == 200, "GET / failed")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(8) == 0, "exit on SIGTERM")
        while True:
            try:
                lines.append(sock.recv(4096).decode("utf-8", "replace"))
            except _socket.timeout:
                break
        check(any("stopping" in l for l in lines),
              "no 'stopping' message in syslog: %r" % lines[-3:])
        err.seek(0)
        check(err.read() == "", "log lines on stderr with LOG='syslog'")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        os.unlink(path)


CODE_CASES = [
    {"name": "raw_protocol_errors", "fn": case_raw_protocol_errors},
    {"name": "listen_two_ports", "fn": case_listen_two_ports},
    {"name": "sigint_clean_exit", "fn": case_sigint_clean_exit},
    {"name": "console_no_api_key", "fn":
     case_console_no_api_key},
    {"name": "security_headers_everywhere", "fn":
     case_security_headers_everywhere},
    {"name": "max_attempts_parallel_100", "fn": case_max_attempts_parallel},
    {"name": "sms_pump_1000_numbers", "fn": case_sms_pump_1000},
    {"name": "trickle_body", "fn": case_trickle_body},
    {"name": "trickle_body_big_head", "fn": case_trickle_body_big_head},
    {"name": "trickle_headers", "fn": case_trickle_headers},
    {"name": "trickle_starvation", "fn": case_trickle_starvation},
    {"name": "huge_content_length", "fn": case_huge_content_length},
    {"name": "sigterm_clean_exit", "fn": case_sigterm_clean_exit},
    {"name": "auth_state_dir_restart", "fn": case_auth_state_dir_restart},
    {"name": "auth_no_state_dir_restart", "fn":
     case_auth_no_state_dir_restart},
    {"name": "api_key_file", "fn": case_api_key_file},
    {"name": "tls_listener", "fn": case_tls_listener},
    {"name": "tls_redirect_http", "fn": case_tls_redirect_http},
    {"name": "tls_refuses_tls11", "fn": case_tls_refuses_tls11},
    {"name": "log_syslog", "fn": case_log_syslog},
]


# ---- runner ------------------------------------------------------------------

def all_cases():
    out = []
    for row in CONFIG_ROWS:
        out.append({"name": row[0], "kind": "config", "row": row})
    for c in CASES:
        out.append(dict(c, kind="table"))
    for c in CODE_CASES:
        out.append(dict(c, kind="code"))
    return out


def run_case(case):
    """None if the case passed, else the reason; a Skip is returned as
    the exception itself."""
    ctx = Ctx(case["name"])
    failed = skipped = None
    try:
        if case["kind"] == "config":
            run_config_row(ctx, case["row"])
        elif case["kind"] == "table":
            run_table_case(ctx, case)
        else:
            case["fn"](ctx)
    except Fail as e:
        failed = str(e)
    except Skip as e:
        skipped = e
    except Exception as e:  # noqa: BLE001 - a test bug is a failure too
        tb = traceback.format_exc()
        with open(os.path.join(ctx.dir, "traceback.txt"), "w") as f:
            f.write(tb)
        failed = "%s: %s (traceback in %s)" % (type(e).__name__, e,
                                               os.path.relpath(ctx.dir, ROOT))
    try:
        ctx.finish(failed is not None)
    except Fail as e:
        failed = str(e)
    except Exception as e:  # noqa: BLE001
        failed = failed or "teardown: %s: %s" % (type(e).__name__, e)
    return failed if failed is not None else skipped


def main():
    ap = argparse.ArgumentParser(description="otp_demo integration tests")
    ap.add_argument("-k", action="append", default=[],
                    help="run only cases whose name contains SUBSTR")
    ap.add_argument("-j", type=int, default=4, help="parallel cases (4)")
    ap.add_argument("-l", "--list", action="store_true", help="list cases")
    a = ap.parse_args()
    cases = [c for c in all_cases()
             if not a.k or any(k in c["name"] for k in a.k)]
    if a.list:
        for c in cases:
            print(c["name"])
        return 0
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        print("FAIL setup: no executable %s (set OTP_BIN or run make)" % BIN)
        print("0 passed, 1 failed")
        return 1
    ensure_certs()
    t0 = time.monotonic()
    passed = failed = skipped = 0
    lock = threading.Lock()

    # Slow cases first so the pool stays busy.
    slow = ("trickle", "pump", "silent", "expired", "identical", "resend",
            "sms_per_number", "max_attempts_parallel", "restart", "tls_",
            "sighup")
    cases.sort(key=lambda c: not any(s in c["name"] for s in slow))
    def stopped(signum, frame):
        kill_live()
        print("interrupted by signal %d" % signum, flush=True)
        print("%d passed, %d failed" % (passed, failed + 1), flush=True)
        os._exit(1)
    signal.signal(signal.SIGINT, stopped)
    signal.signal(signal.SIGTERM, stopped)
    with concurrent.futures.ThreadPoolExecutor(max(1, a.j)) as ex:
        futs = {ex.submit(run_case, c): c for c in cases}
        for f in concurrent.futures.as_completed(futs):
            name = futs[f]["name"]
            err = f.result()
            with lock:
                if err is None:
                    passed += 1
                    print("ok %s" % name, flush=True)
                elif isinstance(err, Skip):
                    skipped += 1
                    print("skip %s: %s" % (name, err), flush=True)
                else:
                    failed += 1
                    print("FAIL %s: %s" % (name, " ".join(err.split())),
                          flush=True)
    with open(os.path.join(OUT, "time.txt"), "w") as f:
        f.write("%.1f s\n" % (time.monotonic() - t0))
    print("%d passed, %d failed%s" % (passed, failed, ", %d skipped"
                                      % skipped if skipped else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
