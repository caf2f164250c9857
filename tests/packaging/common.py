"""common.py: what the packaging tests share (Python standard library only).

    Checks   counts "ok NAME" / "FAIL NAME: why" lines, ends with
             "N passed, M failed"
    Proc     a server process: reads "listening on http://HOST:PORT" from
             stderr, collects stdout (console SMS) and stderr, stops with
             SIGTERM and reports the exit status
    Client   HTTP/1.1 to one host:port with a cookie jar and form helpers
"""

import html
import http.client
import os
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.parse

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "tests", "out", "packaging")

PHONE = "+12015550123"
PHONE_MASKED = "+*********23"    # examples/embed.c's mask
SMS_RE = re.compile(r"^SMS to (\+[0-9]+): .*?([0-9A-Fa-f]{4,16})\s*$")


class Checks:
    def __init__(self, suite):
        self.suite = suite
        self.passed = 0
        self.failed = 0

    def check(self, name, cond, why=""):
        if cond:
            self.passed += 1
            print("ok %s: %s" % (self.suite, name), flush=True)
        else:
            self.failed += 1
            print("FAIL %s: %s%s" % (self.suite, name,
                                     ": " + why if why else ""), flush=True)
        return bool(cond)

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def clean_env(extra):
    """The environment without any OTP_* from the caller, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(extra)
    return env


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Proc:
    """A server started with argv; its stdout and stderr lines are kept."""

    def __init__(self, argv, env, name, cwd=None):
        os.makedirs(OUT, exist_ok=True)
        self.name = name
        self.out = []
        self.err = []
        self.lock = threading.Lock()
        self.p = subprocess.Popen(argv, env=env, cwd=cwd,
                                  stdin=subprocess.DEVNULL,
                                  stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE)
        self.threads = [
            threading.Thread(target=self._read, args=(self.p.stdout, self.out),
                             daemon=True),
            threading.Thread(target=self._read, args=(self.p.stderr, self.err),
                             daemon=True),
        ]
        for t in self.threads:
            t.start()

    def _read(self, stream, lines):
        for raw in iter(stream.readline, b""):
            with self.lock:
                lines.append(raw.decode("utf-8", "replace").rstrip("\n"))

    def wait_line(self, which, pattern, timeout=10.0, start=0):
        """The first match of pattern in stdout/stderr lines, or None."""
        rx = re.compile(pattern)
        end = time.monotonic() + timeout
        while True:
            exited = self.p.poll() is not None
            if exited:
                for t in self.threads:  # let the readers drain
                    t.join(1)
            with self.lock:
                lines = list(self.out if which == "out" else self.err)
            for line in lines[start:]:
                m = rx.search(line)
                if m:
                    return m
            if exited or time.monotonic() > end:
                return None
            time.sleep(0.02)

    def port(self, timeout=10.0):
        m = self.wait_line("err", r"listening on http://[^ ]*:([0-9]+)",
                           timeout)
        return int(m.group(1)) if m else None

    def sms_code(self, phone, start=0, timeout=5.0):
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with self.lock:
                lines = list(self.out[start:])
            for line in lines:
                m = SMS_RE.match(line)
                if m and m.group(1) == phone:
                    return m.group(2)
            time.sleep(0.02)
        return None

    def stop(self, timeout=10.0):
        """SIGTERM, then the exit status (None if it had to be killed)."""
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
        try:
            rc = self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            self.p.wait()
            rc = None
        for t in self.threads:
            t.join(2)
        with open(os.path.join(OUT, self.name + ".log"), "w") as f:
            f.write("== stderr\n" + "\n".join(self.err) + "\n")
            f.write("== stdout\n" + "\n".join(self.out) + "\n")
        return rc

    def stderr_text(self):
        with self.lock:
            return "\n".join(self.err)


class Resp:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers      # list of (name, value)
        self.body = body
        self.text = body.decode("utf-8", "replace")

    def header(self, name):
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]


class Client:
    """A browser stand-in: one origin, a cookie jar that honours Path."""

    def __init__(self, port, host="127.0.0.1", tls=None, source=None):
        self.host = host
        self.port = port
        self.tls = tls              # an ssl.SSLContext for https
        self.source = source        # local address to connect from
        self.cookies = {}           # name -> (value, path)
        self.raw_cookies = {}       # name -> the whole Set-Cookie value

    def origin(self):
        return "%s://%s:%d" % ("https" if self.tls else "http", self.host,
                               self.port)

    def cookie_header(self, path):
        pairs = ["%s=%s" % (k, v) for k, (v, p) in sorted(self.cookies.items())
                 if path.startswith(p) or path + "/" == p]
        return "; ".join(pairs)

    def send(self, method, path, body=None, headers=None):
        h = {"Host": "%s:%d" % (self.host, self.port)}
        ck = self.cookie_header(urllib.parse.urlsplit(path).path)
        if ck:
            h["Cookie"] = ck
        h.update(headers or {})
        src = (self.source, 0) if self.source else None
        if self.tls:
            c = http.client.HTTPSConnection(self.host, self.port, timeout=15,
                                            context=self.tls,
                                            source_address=src)
        else:
            c = http.client.HTTPConnection(self.host, self.port, timeout=15,
                                           source_address=src)
        try:
            c.request(method, path, body=body, headers=h)
            r = c.getresponse()
            resp = Resp(r.status, r.getheaders(), r.read())
        finally:
            c.close()
        for sc in resp.all("Set-Cookie"):
            self._take(sc)
        return resp

    def _take(self, sc):
        parts = [p.strip() for p in sc.split(";")]
        name, _, value = parts[0].partition("=")
        self.raw_cookies[name] = sc
        path = "/"
        expired = False
        for a in parts[1:]:
            k, _, v = a.partition("=")
            if k.lower() == "path":
                path = v
            elif k.lower() == "max-age" and v.strip() in ("0", "-1"):
                expired = True
        if expired or value == "":
            self.cookies.pop(name, None)
        else:
            self.cookies[name] = (value, path)

    def get(self, path):
        return self.send("GET", path)

    def post_form(self, path, fields):
        body = urllib.parse.urlencode(fields)
        return self.send("POST", path, body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Origin": self.origin(),
        })


def form(page):
    """(action, {name: value}) of the first form on an HTML page."""
    m = re.search(r'<form[^>]*\baction="([^"]*)"', page)
    action = html.unescape(m.group(1)) if m else None
    fields = {}
    for tag in re.findall(r"<input\b[^>]*>", page):
        n = re.search(r'\bname="([^"]*)"', tag)
        v = re.search(r'\bvalue="([^"]*)"', tag)
        if n:
            fields[html.unescape(n.group(1))] = html.unescape(
                v.group(1)) if v else ""
    return action, fields


def links(page, tag, attr):
    return [html.unescape(v) for v in
            re.findall(r"<%s\b[^>]*\b%s=\"([^\"]*)\"" % (tag, attr), page)]


def brief(resp):
    """Status and what the page says in its error line, for FAIL messages."""
    m = re.search(r'class="error"[^>]*>([^<]*)<', resp.text)
    said = html.unescape(m.group(1)).strip() if m else ""
    if not said:
        said = re.sub(r"\s+", " ", resp.text)[:120]
    return "%d %s" % (resp.status, said)
