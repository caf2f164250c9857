#!/usr/bin/env python3
"""integration.py: run the real otp_demo against a local HTTPS fake of the
Telnyx API and check what a browser sees and what the SMS API receives.

    python3 tests/integration.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library only.

Each case gets its own fake API (tests/fake_api.py, own port, own counters)
and its own server process (LISTEN 127.0.0.1:0, config file in its own
directory under tests/out/integration/NAME/, with the server's stderr and
stdout kept there). Most cases are rows of a table (CASES): config
overrides plus steps of request / expected status / body / SMS calls. The
rest are functions (for threads, raw sockets and timing bounds).

After every case: the server must exit 0 on SIGTERM, and its log (stderr)
must not contain the API key, any code that was sent, or any full phone
number that was submitted.

Prints "ok NAME" or "FAIL NAME: reason" per case, then "N passed, M failed".
Exit status 1 if anything failed.

No timing assertions except generous upper bounds: expiry is tested by
waiting past a short CODE_TTL, never by measuring speed.
"""

import argparse
import concurrent.futures
import html
import http.client
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

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import fake_api  # noqa: E402

BIN = os.environ.get("OTP_BIN") or os.path.join(ROOT, "otp_demo")
OUT = os.path.join(ROOT, "tests", "out", "integration")
CERTS = os.path.join(OUT, "certs")

API_KEY = "KEYtest-7f3a9c2e51d84b06"
FROM = "+15550001111"
PHONE = "(555) 123-4567"
PHONE_E164 = "+15551234567"
PHONE2 = "555-987-6543"
PHONE2_E164 = "+15559876543"
UK = "+442071838750"

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


# ---- certificates -----------------------------------------------------------

def ensure_certs():
    os.makedirs(OUT, exist_ok=True)
    subprocess.run(["sh", os.path.join(HERE, "gen_certs.sh"), CERTS],
                   check=True)


def cert(name):
    return (os.path.join(CERTS, name + ".pem"),
            os.path.join(CERTS, name + ".key"))


# ---- HTTP responses and a cookie-keeping browser ---------------------------

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

    def request_code(self, phone, **kw):
        self.ensure_session()
        self.phone = phone
        self.ctx.note_phone(phone)
        return self.post_form("/request", {"phone": phone}, **kw)

    def verify(self, token, **kw):
        return self.post_form("/verify", {"token": token}, **kw)


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
    def __init__(self, ctx, text, env=None, args=None):
        self.ctx = ctx
        self.dir = ctx.dir
        self.text, self.env, self.args = text, env or {}, args or []
        self.proc = None
        self.port = None
        self.err_lines, self.out_lines = [], []
        self.cond = threading.Condition()
        self.rc = None

    def start(self):
        with open(os.path.join(self.dir, "config.cfg"), "w") as f:
            f.write(self.text)
        self.errf = open(os.path.join(self.dir, "stderr.log"), "w")
        self.outf = open(os.path.join(self.dir, "stdout.log"), "w")
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
        pat = re.compile(r"listening on http://127\.0\.0\.1:([0-9]+)")
        with self.cond:
            while True:
                for line in self.err_lines:
                    m = pat.search(line)
                    if m:
                        self.port = int(m.group(1))
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
        pat = re.compile(pattern)
        end = time.monotonic() + timeout
        with self.cond:
            while True:
                for i in range(start, len(self.out_lines)):
                    m = pat.search(self.out_lines[i])
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


# ---- one case's context ------------------------------------------------------

class Ctx:
    def __init__(self, name):
        self.name = name
        self.dir = os.path.join(OUT, name)
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.fake = None
        self.server = None
        self.browsers = {}
        self.phones = set()     # full numbers submitted: must not be logged
        self.codes = set()      # codes sent: must not be logged
        self.texts = set()      # SMS texts sent
        self.saved = {}
        self.stdout_seen = 0
        self.cfg = {}
        self.http_log = open(os.path.join(self.dir, "http.log"), "w")
        self.http_lock = threading.Lock()

    # -- setup --
    def start_fake(self, cert_name="server", mode="ok", **kw):
        c, k = cert(cert_name)
        self.fake = fake_api.FakeApi(
            c, k, api_key=API_KEY, mode=mode,
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
        if self.server is not None:
            rc = self.server.stop()
            if rc != 0:
                problems.append("server exit on SIGTERM: %s (want 0)" % (rc,))
            problems += self.scan_log()
        if self.fake is not None:
            self.fake.stop()
        self.http_log.close()
        if problems and not failed:
            raise Fail("; ".join(problems))

    def scan_log(self):
        log = self.server.log()
        out = []
        if API_KEY in log:
            out.append("log contains the API key")
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
        return out


# ---- table-driven steps ------------------------------------------------------

def wrong_code(code, length=6, alphabet="0123456789ABCDEF"):
    if not code:
        return alphabet[1] * length
    c0 = alphabet[0] if code[0].upper() != alphabet[0] else alphabet[1]
    return c0 + code[1:]


def expand(ctx, b, s):
    """Placeholders in step strings: {code} {code_lower} {wrong}
    {code:NAME} {origin} {csrf} {csrf:NAME} {csrf_q} {saved:LABEL}."""
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
    r = None

    if "sleep" in st:
        time.sleep(st["sleep"])
    elif "mode" in st:
        ctx.fake.mode = st["mode"]
    elif "set_cookie" in st:
        for k, v in st["set_cookie"].items():
            v = expand(ctx, b, v)
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
    new = ctx.collect_sms(n0, b if "request" in st else None)
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


def step_label(st):
    for k in ("get", "request", "verify", "post", "method", "sleep", "mode",
              "set_cookie", "save_cookie"):
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
SID = r"^otp_sid=[0-9a-f]{32}(;|$)"

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
        {"request": "555-CALL-NOW", "status": 400, "api": 0},
        {"request": "12345", "status": 400, "api": 0, "what": "too short"},
        {"request": "5" * 30, "status": 400, "api": 0, "what": "too long"},
        {"request": '5551234567","to":"+442071838750', "status": 400,
         "api": 0, "what": "quote injection"},
        {"request": "555123456\"7", "status": 400, "api": 0},
        {"request": "", "status": 400, "api": 0, "what": "empty phone"},
        {"post": "/request", "form": {"phone": "5" * 1100}, "status": 413,
         "api": 0, "what": "body > 1 KiB"},
        {"post": "/request", "body": '{"phone":"5551234567"}',
         "ctype": "application/json", "status": 415, "api": 0},
        {"post": "/request", "body": "phone=5551234567&csrf={csrf_q}",
         "ctype": "text/plain", "status": 415, "api": 0},
        {"post": "/request", "body": "--x\r\nContent-Disposition: form-data;"
         " name=\"phone\"\r\n\r\n5551234567\r\n--x--\r\n",
         "ctype": "multipart/form-data; boundary=x", "status": 415,
         "api": 0},
        {"post": "/request", "body": "phone=%ZZ55512345&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "bad percent-encoding %ZZ"},
        {"post": "/request", "body": "phone=5551234567%4&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "truncated %4"},
        {"post": "/request", "body": "phone=555123%004567&csrf={csrf_q}",
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
         {"b": "D", "request": "(555) 123 4567", "status": 429, "api": 0,
          "what": "same number, other spelling"},
         {"b": "E", "request": PHONE2, "status": 200, "api": 1,
          "what": "another number is fine"},
     ]},

    {"name": "sms_per_ip",
     "config": {"SMS_PER_IP_PER_HOUR": 3},
     "steps": [
         {"b": "A", "request": "5552000001", "status": 200, "api": 1},
         {"b": "B", "request": "5552000002", "status": 200, "api": 1},
         {"b": "C", "request": "5552000003", "status": 200, "api": 1},
         {"b": "D", "request": "5552000004", "status": 429, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
         {"b": "E", "request": "5552000005", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.9",
                      "X-Real-IP": "203.0.113.9",
                      "Forwarded": "for=203.0.113.9"},
          "what": "spoofed X-Forwarded-For with no TRUSTED_PROXY"},
     ]},

    {"name": "trusted_proxy_xff",
     "config": {"TRUSTED_PROXY": "127.0.0.1", "SMS_PER_IP_PER_HOUR": 1},
     "steps": [
         {"b": "A", "request": "5552000001", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.1"}},
         {"b": "B", "request": "5552000002", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.2"}},
         {"b": "C", "request": "5552000003", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.1"},
          "what": "same client behind the proxy"},
         {"b": "D", "request": "5552000004", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "198.51.100.9, 203.0.113.2"},
          "what": "spoofed first entry; the proxy's (last) entry counts"},
         {"b": "E", "request": "5552000005", "status": 200, "api": 1,
          "what": "no X-Forwarded-For: the proxy's own address"},
     ]},

    {"name": "sms_per_hour_global",
     "config": {"SMS_PER_HOUR": 3},
     "steps": [
         {"b": "A", "request": "5552000001", "status": 200, "api": 1},
         {"b": "B", "request": "5552000002", "status": 200, "api": 1},
         {"b": "C", "request": "5552000003", "status": 200, "api": 1},
         {"b": "D", "request": "5552000004", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}, "secure": True},
         {"get": "/", "status": 200},
     ]},

    {"name": "sms_per_day_global",
     "config": {"SMS_PER_DAY": 2},
     "steps": [
         {"b": "A", "request": "5552000001", "status": 200, "api": 1},
         {"b": "B", "request": "5552000002", "status": 200, "api": 1},
         {"b": "C", "request": "5552000003", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
     ]},

    {"name": "max_pending_table_full",
     "config": {"MAX_PENDING": 2},
     "steps": [
         {"b": "A", "request": "5552000001", "status": 200, "api": 1},
         {"b": "B", "request": "5552000002", "status": 200, "api": 1},
         {"b": "C", "request": "5552000003", "status": 503, "api": 0,
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


def run_table_case(ctx, case):
    ctx.start_fake(case.get("fake_cert", "server"),
                   case.get("fake_mode", "ok"), **case.get("fake_kw", {}))
    text = case.get("config_text")
    env = case.get("env")
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
    ("cfg_unterminated_string", "API_KEY='abc\nFROM_NUMBER='+15550001111'\n",
     {}, [], 78, r"^config\.cfg:1: .+", None),
    ("cfg_unterminated_string_line2", "API_KEY='abc'\nFROM_NUMBER=\"+1555\n",
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
    got = ctx.server.wait_stdout(r"^SMS to \+15551234567: Your token is "
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
        "5552000003"), 503)
    ctx.fake.mode = "ok"
    a2 = ctx.browser("D")
    n0 = ctx.fake.count()
    r = a2.request_code("5552000004")
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
    numbers = ["555%03d%04d" % (200 + i // 10000, i % 10000)
               for i in range(1000)]
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
               "Content-Length: 10485760\r\nCookie: %s\r\n\r\nphone=555"
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
    {"name": "trickle_headers", "fn": case_trickle_headers},
    {"name": "trickle_starvation", "fn": case_trickle_starvation},
    {"name": "huge_content_length", "fn": case_huge_content_length},
    {"name": "sigterm_clean_exit", "fn": case_sigterm_clean_exit},
]


# ---- runner -------------------------------------------------------------------

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
    ctx = Ctx(case["name"])
    failed = None
    try:
        if case["kind"] == "config":
            run_config_row(ctx, case["row"])
        elif case["kind"] == "table":
            run_table_case(ctx, case)
        else:
            case["fn"](ctx)
    except Fail as e:
        failed = str(e)
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
    return failed


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
    passed = failed = 0
    lock = threading.Lock()

    # Slow cases first so the pool stays busy.
    slow = ("trickle", "pump", "silent", "expired", "identical", "resend",
            "sms_per_number", "max_attempts_parallel")
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
                else:
                    failed += 1
                    print("FAIL %s: %s" % (name, " ".join(err.split())),
                          flush=True)
    with open(os.path.join(OUT, "time.txt"), "w") as f:
        f.write("%.1f s\n" % (time.monotonic() - t0))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
