"""tests/harness.py: what every Python test suite and bench/ share.
Python standard library only.

    outcomes    Fail, Skip, check(); Checks, for a script that counts
                "ok NAME" / "FAIL NAME: why" lines itself
    config      config_text(): config.cfg as otp_demo.c's config_value()
                reads it (the one writer)
    processes   Server: the real binary (or any server that logs
                "listening on ...") in a directory of its own, its logs
                kept; run_once(): a run that must end by itself
    HTTP        Client (a browser: cookie jar, CSRF token, forms, the JSON
                API), Resp, the page parsers, and raw exchanges for the
                framing tests
    proxies     nginx and Caddy in the foreground (start_nginx,
                start_caddy), and README's snippets that the proxy tests
                run (readme_snippets)
    fixtures    the test data (numbers, keys, messages), the test
                certificates, Ctx (one case: a fake SMS API, the server,
                browsers, and the log scan after it) and its Browser
    runner      main(): the case runner of integration.py, senders.py and
                the attack files: -k SUBSTR, -x SUBSTR, -j JOBS, -l; "ok NAME",
                "FAIL NAME: why" or "skip NAME: why" per case, then
                "N passed, M failed[, K skipped]"

Nothing here is changed by a suite: what a helper needs (a directory, a
binary, a config) is passed to it. A suite puts tests/ on sys.path and
sets sys.dont_write_bytecode before importing it (no __pycache__ in the
tree), as tests/*.py, tests/attack/*.py, tests/packaging/*.py and
bench/benchlib.py do.
"""

import argparse
import concurrent.futures
import html
import http.client
import json
import os
import re
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

sys.dont_write_bytecode = True
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
import fake_api  # noqa: E402

BIN = os.environ.get("OTP_BIN") or os.path.join(ROOT, "otp_demo")

START_TIMEOUT = 10.0    # until the "listening on" line
STOP_TIMEOUT = 10.0     # from SIGTERM to the exit
RUN_TIMEOUT = 10.0      # a run that must end by itself (-t, a bad config)
HTTP_TIMEOUT = 30.0

# ---- fixture data --------------------------------------------------------------

API_KEY = "KEYtest-7f3a9c2e51d84b06"
API_TOKEN = "TOKtest-3b9e1c7a0d5f4e28"     # JSON API bearer token
FROM = "+12025550111"
PHONE = "(201) 555-0123"
PHONE_E164 = "+12015550123"
PHONE2 = "201-555-0187"
PHONE2_E164 = "+12015550187"
UK = "+442071838750"
API = "/api/v1/verifications"
FORM = "application/x-www-form-urlencoded"

WRONG_CODE = "Wrong code."   # then "4 tries left." or "1 try left."
CODE_GONE = "That code is no longer valid. Please enter your number again."
SEND_FAILED = "We couldn't send the code. Please try again."
TOO_MANY = "Too many wrong codes."
EXPIRED = "This code has expired."
SENT_AGAIN = "we sent the code again."
SENT_NEW = "we sent a new code."

# The built-in languages (Makefile's LANGS) and their catalogs.
LANGS = ("en", "de", "fr", "es", "pt")


def catalog(lang):
    """www/lang/<lang>.txt as {key: text}."""
    with open(os.path.join(ROOT, "www", "lang", lang + ".txt"),
              encoding="utf-8") as f:
        return dict(line.rstrip("\n").split(" ", 1) for line in f)


# otp_demo with the console sender on a free loopback port.
CONSOLE = {"LISTEN": "127.0.0.1:0", "SMS_PROVIDER": "console"}

# The rate limits raised to their maxima (see config_keys in otp_demo.c),
# for load: the bench measures the path it means to, not a 429.
LIMITS_OFF = {
    "RESEND_INTERVAL": 0,
    "VERIFY_PER_IP_PER_HOUR": 1000000,
    "SMS_PER_NUMBER_PER_HOUR": 1000000,
    "SMS_PER_IP_PER_HOUR": 1000000,
    "SMS_PER_HOUR": 10000000,
    "SMS_PER_DAY": 100000000,
    "MAX_ATTEMPTS": 100,
    "CODE_TTL": 600,
}

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


# ---- outcomes ------------------------------------------------------------------

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


class Checks:
    """A script's own tally: one line per check, "ok SUITE: NAME" or
    "FAIL SUITE: NAME: why" (without a suite, "ok NAME"), and done() ends
    with "N passed, M failed"."""

    def __init__(self, suite=None):
        self.suite = suite
        self.passed = self.failed = 0

    def _say(self, word, name, why=""):
        print("%s %s%s%s" % (word, self.suite + ": " if self.suite else "",
                             name, ": " + why if why else ""), flush=True)

    def check(self, name, cond, why=""):
        if cond:
            self.passed += 1
            self._say("ok", name)
        else:
            self.failed += 1
            self._say("FAIL", name, why)
        return bool(cond)

    def skip(self, name, why):
        self._say("skip", name, why)

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def script_checks(suite):
    """The start of a script that counts its own checks: its command line
    (-k SUBSTR, repeatable: only the rows whose name has one) and its
    Checks, whose first check is that BIN is executable. Returns (args,
    checks); with no binary, checks.failed is 1: the script ends there
    with checks.done()."""
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", action="append", default=[])
    a = ap.parse_args()
    t = Checks(suite)
    t.check("otp_demo binary exists", os.access(BIN, os.X_OK), BIN)
    return a, t


# ---- config.cfg ----------------------------------------------------------------

def config_literal(v):
    """One value as config.cfg spells it (the tutorial's Python literals,
    read by config_value() in otp_demo.c): True or False, a bare integer,
    or a string in single quotes with \\ \\' \\n and \\t escaped. A string
    the format cannot hold (a CR or a NUL) is a test bug: ValueError."""
    if isinstance(v, bool):
        return "True" if v else "False"
    if isinstance(v, int):
        return str(v)
    if not isinstance(v, str):
        raise TypeError("config value %r: want str, int or bool" % (v,))
    if "\r" in v or "\0" in v:
        raise ValueError("config value %r: no escape for CR or NUL" % v)
    return "'%s'" % (v.replace("\\", "\\\\").replace("'", "\\'")
                     .replace("\n", "\\n").replace("\t", "\\t"))


def config_text(cfg):
    """A config file: one KEY=value line per item of cfg, in its order."""
    return "".join("%s=%s\n" % (k, config_literal(v)) for k, v in cfg.items())


def write_config(path, config):
    """Writes config (a dict, or the file's text) to path in one step: a
    running server that rereads it (SIGHUP) sees the old or the new."""
    text = config_text(config) if isinstance(config, dict) else config
    with open(path + ".new", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".new", path)


# ---- processes -----------------------------------------------------------------

def clean_env(extra=None):
    """This environment without the caller's OTP_* keys, plus extra."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTP_")}
    env.update(extra or {})
    return env


def fresh_dir(path):
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


LIVE = set()        # processes still running, killed if the suite is stopped
LIVE_LOCK = threading.Lock()


def kill_live():
    with LIVE_LOCK:
        for p in list(LIVE):
            try:
                p.kill()
            except OSError:
                pass


LISTEN_RE = r"listening on (https?)://127\.0\.0\.1:([0-9]+)"


class Server:
    """One server process, started in dir (its working directory).

    config: a dict or a file's text, written to dir/config.cfg and passed
    with -c; None: no file, no -c (an OTP_* environment does instead).
    command: the program and its first arguments (default [BIN]); args
    follow the config. env: added to the environment, from which the
    caller's OTP_* keys are removed. stdout and stderr: "pipe" (lines kept
    in out_lines / err_lines and written to dir/stdout.log, stderr.log),
    "file" (straight to that file: nothing read while it runs) or None
    (/dev/null). tag: a suffix for the log names of a restarted server.

    start() returns once a stderr line matches listen_re (groups: scheme
    and port), or raises Fail if the process exits or start_timeout
    passes; with listen_re None it returns at once. stop() sends SIGTERM
    and returns the exit status, or a string if it had to be killed after
    stop_timeout."""

    def __init__(self, dir, config=None, env=None, args=(), command=None,
                 tag="", listen_re=LISTEN_RE, stdout="pipe", stderr="pipe",
                 start_timeout=START_TIMEOUT, stop_timeout=STOP_TIMEOUT):
        self.dir = dir
        self.cfg = dict(config) if isinstance(config, dict) else None
        self.text = config_text(config) if self.cfg is not None else config
        self.env, self.args = dict(env or {}), list(args)
        self.command = list(command or [BIN])
        self.tag, self.listen_re = tag, listen_re
        self.modes = {"out": stdout, "err": stderr}
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.proc = None
        self.port = None
        self.scheme = "http"
        self.lines = {"out": [], "err": []}
        self.cond = threading.Condition()
        self.readers = []
        self.files = {}         # which -> its log file
        self.rc = None
        self.t_spawn = None     # when the process was started (monotonic)
        self.stop_seconds = None    # from SIGTERM to its end

    def again(self, tag):
        """A new Server with this one's settings (not yet started)."""
        return Server(self.dir, self.cfg if self.cfg is not None else
                      self.text, self.env, self.args, self.command, tag,
                      self.listen_re, self.modes["out"], self.modes["err"],
                      self.start_timeout, self.stop_timeout)

    def log_path(self, which):
        return os.path.join(self.dir, "std%s%s.log" % (which, self.tag))

    @property
    def out_lines(self):
        return self.lines["out"]

    @property
    def err_lines(self):
        return self.lines["err"]

    def spawn(self):
        """Writes the config and starts the process; does not wait."""
        os.makedirs(self.dir, exist_ok=True)
        argv = list(self.command)
        if self.text is not None:
            write_config(os.path.join(self.dir, "config.cfg"), self.text)
            argv += ["-c", "config.cfg"]
        streams = {}
        for which, mode in self.modes.items():
            if mode is None:
                streams[which] = subprocess.DEVNULL
                continue
            f = self.files[which] = open(self.log_path(which), "w")
            streams[which] = subprocess.PIPE if mode == "pipe" else f
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(
            argv + self.args, cwd=self.dir, env=clean_env(self.env),
            stdin=subprocess.DEVNULL, stdout=streams["out"],
            stderr=streams["err"])
        with LIVE_LOCK:
            LIVE.add(self.proc)
        for which, stream in (("out", self.proc.stdout),
                              ("err", self.proc.stderr)):
            if stream is not None:
                t = threading.Thread(target=self._read, daemon=True,
                                     args=(stream, self.lines[which],
                                           self.files[which]))
                t.start()
                self.readers.append(t)
        return self

    def start(self):
        self.spawn()
        if self.listen_re is None:
            return self
        got = self._wait("err", self.listen_re, 0, self.start_timeout,
                         until_exit=True)
        if got is None:
            if self.proc.poll() is not None:
                raise Fail("server exited %s at start: %s" % (
                    self.proc.returncode,
                    short(" | ".join(self.log_lines("err")[-3:]), 300)))
            raise Fail("no %r line on stderr within %ds"
                       % (self.listen_re, self.start_timeout))
        m = got[1]
        self.scheme, self.port = m.group(1), int(m.group(2))
        return self

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

    def log_lines(self, which="err"):
        """The complete lines so far of stdout ("out") or stderr ("err")."""
        if self.modes[which] == "pipe":
            with self.cond:
                return list(self.lines[which])
        try:
            with open(self.log_path(which), encoding="utf-8",
                      errors="replace") as f:
                text = f.read()
        except OSError:
            return []
        return text[:text.rfind("\n") + 1].splitlines()

    def _wait(self, which, pattern, start, timeout, until_exit=False):
        """(index, match) of the first line from start matching pattern, or
        None after timeout (with until_exit, also once the process has
        exited and its output is all read)."""
        pat = re.compile(pattern)
        end = time.monotonic() + timeout
        i = start
        piped = self.modes[which] == "pipe"
        while True:
            exited = until_exit and self.proc.poll() is not None
            if exited:
                for t in self.readers:      # let the readers drain
                    t.join(1)
            with self.cond:
                lines = self.lines[which] if piped else self.log_lines(which)
                for i in range(i, len(lines)):
                    m = pat.search(lines[i])
                    if m:
                        return i, m
                i = len(lines)
                left = end - time.monotonic()
                if exited or left <= 0:
                    return None
                if piped:
                    self.cond.wait(min(left, 0.2) if until_exit else left)
            if not piped:
                time.sleep(min(left, 0.01))

    def wait_stdout(self, pattern, start=0, timeout=5.0):
        """First stdout line from index start matching pattern: (index,
        match), or None."""
        return self._wait("out", pattern, start, timeout)

    def wait_log(self, pattern, start=0, timeout=5.0):
        """First stderr line from index start matching pattern: (index,
        match), or None."""
        return self._wait("err", pattern, start, timeout)

    def log(self):
        """stderr so far."""
        return "\n".join(self.log_lines("err"))

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid

    def ports(self, timeout=5.0):
        """{scheme: [ports]} from the 'listening on' lines, once there are
        as many as the config's LISTEN has entries."""
        listen = (self.cfg or {}).get("LISTEN", "")
        want = len([p for p in listen.split(",") if p.strip()]) or 1
        end = time.monotonic() + timeout
        while True:
            found = [m.groups() for m in map(re.compile(LISTEN_RE).search,
                                             self.log_lines("err")) if m]
            if len(found) >= want or time.monotonic() > end:
                break
            time.sleep(0.05)
        out = {}
        for scheme, port in found:
            out.setdefault(scheme, []).append(int(port))
        return out

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            m = re.search(r"^VmRSS:\s+([0-9]+)", f.read(), re.M)
        return int(m.group(1)) if m else 0

    def cpu_seconds(self):
        """utime + stime of the whole process so far."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self):
        """SIGTERM; returns the exit status (or a string if it hung). Once
        stopped, the same again."""
        if self.proc is None:
            return None
        if self.rc is not None:
            return self.rc
        hung = None
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                hung = "did not exit within %ds of SIGTERM" % \
                    self.stop_timeout
        self.stop_seconds = time.monotonic() - t0
        with LIVE_LOCK:
            LIVE.discard(self.proc)
        for t in self.readers:
            t.join(5)
        for f in self.files.values():
            f.close()
        self.rc = hung or self.proc.returncode
        return self.rc


def console_code(server, phone, start=0, timeout=5.0):
    """The code in the console sender's stdout line for phone ("SMS to
    PHONE: TEXT"; the code ends the text, 4 to 16 hex digits), from line
    start on; None if none comes within timeout."""
    got = server.wait_stdout(r"^SMS to %s: .*?([0-9A-Fa-f]{4,16})\s*$"
                             % re.escape(phone), start, timeout)
    return got[1].group(1) if got else None


def run_once(dir, config=None, args=(), env=None, timeout=RUN_TIMEOUT,
             command=None):
    """Runs the binary (command) in dir with config (as Server has it) and
    args until it exits. Returns (exit status, or None if it was killed
    after timeout s; stdout; stderr), as text."""
    os.makedirs(dir, exist_ok=True)
    argv = list(command or [BIN])
    if config is not None:
        write_config(os.path.join(dir, "config.cfg"), config)
        argv += ["-c", "config.cfg"]
    p = subprocess.Popen(argv + list(args), cwd=dir, env=clean_env(env),
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE)
    try:
        out, err = p.communicate(timeout=timeout)
        rc = p.returncode
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
        rc = None
    return rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace")


# ---- test certificates ---------------------------------------------------------

def ensure_certs(d):
    """tests/gen_certs.sh's CA and certificates in d (made once); d."""
    subprocess.run(["sh", os.path.join(HERE, "gen_certs.sh"), d], check=True,
                   stdout=subprocess.DEVNULL)
    return d


def cert(name, d):
    """(certificate, key) paths of one of ensure_certs(d)'s pairs."""
    return os.path.join(d, name + ".pem"), os.path.join(d, name + ".key")


# ---- HTTP ----------------------------------------------------------------------

def insecure_tls():
    """A TLS client context that trusts nothing and checks nothing (the
    server's certificate is self-signed)."""
    c = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    c.check_hostname = False
    c.verify_mode = ssl.CERT_NONE
    return c


def page_text(body):
    """The visible text of a page, entities decoded, whitespace collapsed."""
    s = body.decode("utf-8", "replace")
    s = re.sub(r"<[^>]*>", " ", s)
    return " ".join(html.unescape(s).split())


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
        """What the page says (page_text)."""
        return page_text(self.body)

    @property
    def html(self):
        """The body, decoded."""
        return self.body.decode("utf-8", "replace")

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


def form(body):
    """(action, {name: value}) of the first form on a page."""
    m = re.search(r'<form[^>]*\baction="([^"]*)"',
                  body.decode("utf-8", "replace"))
    return (html.unescape(m.group(1)) if m else None,
            {n: a.get("value", "") for n, a in parse_inputs(body).items()})


def links(body, tag, attr):
    """Every tag's attr on a page: links(body, "a", "href")."""
    return [html.unescape(v) for v in re.findall(
        r"<%s\b[^>]*\b%s=\"([^\"]*)\"" % (tag, attr),
        body.decode("utf-8", "replace"))]


def page_kind(body):
    s = body.decode("utf-8", "replace")
    if re.search(r'<form[^>]*action="/request"', s):
        return "index"
    if re.search(r'<form[^>]*action="/verify"', s):
        return "verify"
    if re.search(r'<form[^>]*action="/resend"', s):
        return "again"      # a new code offered: locked or expired
    if 'class="ok"' in s:
        return "success"
    return "other"


def brief(r):
    """Status and what the page says in its error line, for FAIL messages."""
    m = re.search(r'class="error"[^>]*>([^<]*)<', r.html)
    said = html.unescape(m.group(1)).strip() if m else ""
    return "%d %s" % (r.status, said or re.sub(r"\s+", " ", r.html)[:120])


def xff(addr):
    """Headers a trusted proxy in front would add for client addr."""
    return {"X-Forwarded-For": addr}


class Client:
    """One browser on one origin: a cookie jar (a cookie is dropped when
    the server deletes it; Path is kept), the last CSRF token and page it
    saw, forms and the JSON API.

    tls: an ssl.SSLContext for https. source: the local address to connect
    from. keep_alive: one connection, kept while the server keeps it (a
    reused connection the server had closed is opened again, once);
    otherwise one connection per request. headers: sent with every
    request. Every request that gets no HTTP answer raises Fail."""

    def __init__(self, port=None, host="127.0.0.1", tls=None, source=None,
                 keep_alive=False, headers=None, timeout=HTTP_TIMEOUT):
        self.port, self.host, self.tls = port, host, tls
        self.source, self.keep_alive = source, keep_alive
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.conn = None
        self.cookies = {}           # name -> value
        self.cookie_paths = {}      # name -> Path ("/" if none)
        self.set_cookies = {}       # name -> its last whole Set-Cookie
        self.csrf = None
        self.last = None

    def address(self):
        """(host, port, TLS context or None) of the next request."""
        return self.host, self.port, self.tls

    @property
    def origin(self):
        host, port, tls = self.address()
        return "%s://%s:%d" % ("https" if tls else "http", host, port)

    def clone(self):
        """Another connection with this browser's cookies and token."""
        c = Client(self.port, self.host, self.tls, self.source,
                   self.keep_alive, self.headers, self.timeout)
        c.cookies, c.csrf = dict(self.cookies), self.csrf
        c.cookie_paths = dict(self.cookie_paths)
        return c

    def close(self):
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def cookie_header(self, path, extra=None):
        jar = {k: v for k, v in self.cookies.items()
               if path.startswith(self.cookie_paths.get(k, "/")) or
               path + "/" == self.cookie_paths.get(k, "/")}
        jar.update(extra or {})
        return "; ".join("%s=%s" % kv for kv in jar.items())

    def _connect(self, timeout):
        host, port, tls = self.address()
        src = (self.source, 0) if self.source else None
        if tls is not None:
            return http.client.HTTPSConnection(host, port, timeout=timeout,
                                               context=tls,
                                               source_address=src)
        return http.client.HTTPConnection(host, port, timeout=timeout,
                                          source_address=src)

    def send(self, method, path, body=None, headers=None, cookies=None,
             use_cookies=True, timeout=None):
        """One request; cookies: more cookies for this one only."""
        hdrs = dict(self.headers)
        hdrs.update(headers or {})
        if use_cookies and "Cookie" not in hdrs:
            ck = self.cookie_header(urllib.parse.urlsplit(path).path, cookies)
            if ck:
                hdrs["Cookie"] = ck
        if isinstance(body, str):
            body = body.encode()
        t0 = time.monotonic()
        for attempt in (0, 1):
            reused = self.conn is not None
            conn = self.conn or self._connect(timeout or self.timeout)
            self.conn = None
            try:
                conn.request(method, path, body=body, headers=hdrs)
                r = conn.getresponse()
                data = r.read()
                break
            except (OSError, http.client.HTTPException) as e:
                conn.close()
                if reused and not attempt and isinstance(
                        e, (ConnectionError, http.client.HTTPException)):
                    continue    # the server closed the idle connection
                raise Fail("%s %s: no HTTP response (%s: %s)"
                           % (method, path, type(e).__name__, e))
        if self.keep_alive and \
                (r.getheader("Connection") or "").lower() != "close":
            self.conn = conn
        else:
            conn.close()
        resp = Resp(r.status, r.reason, r.getheaders(), data,
                    time.monotonic() - t0)
        self.take_cookies(resp)
        csrf = parse_inputs(data).get("csrf", {}).get("value")
        if csrf:
            self.csrf = csrf
        self.last = resp
        return resp

    def take_cookies(self, resp):
        for sc in resp.all("Set-Cookie"):
            parts = [p.strip() for p in sc.split(";")]
            if "=" not in parts[0]:
                continue
            name, value = parts[0].split("=", 1)
            self.set_cookies[name] = sc
            delete, path = value == "", "/"
            for p in parts[1:]:
                k, _, v = p.partition("=")
                if k.lower() == "max-age":
                    try:
                        delete = delete or int(v) <= 0
                    except ValueError:
                        pass
                elif k.lower() == "expires" and re.search(r"19[0-9]{2}|2000",
                                                          v):
                    delete = True
                elif k.lower() == "path":
                    path = v
            if delete:
                self.cookies.pop(name, None)
                self.cookie_paths.pop(name, None)
            else:
                self.cookies[name] = value
                self.cookie_paths[name] = path

    def get(self, path="/", **kw):
        return self.send("GET", path, **kw)

    def post_form(self, path, fields, csrf="auto", headers=None, ctype=FORM,
                  **kw):
        """POST fields (a dict or pairs), with the CSRF token last seen
        (csrf="auto"), this csrf, or none (None)."""
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
        """GET / unless this browser has a session and a token."""
        if self.csrf is None or "otp_sid" not in self.cookies:
            r = self.get("/")
            check(r.status == 200, "GET / -> %d" % r.status)

    def session(self):
        """GET /, which must give a session cookie and a token."""
        r = self.get("/")
        check(r.status == 200 and "otp_sid" in self.cookies and self.csrf,
              "GET / gave %d without a session" % r.status)
        return self

    def hidden(self, name):
        """The value of input name on the last page this browser got."""
        if self.last is None:
            return None
        return parse_inputs(self.last.body).get(name, {}).get("value")

    def note_phone(self, phone):
        """A number this browser submits (Browser keeps it out of logs)."""

    def request_code(self, phone, fields=None, **kw):
        self.ensure_session()
        self.note_phone(phone)
        return self.post_form("/request", [("phone", phone)] + list(
            (fields or {}).items()), **kw)

    def verify(self, token, fields=None, **kw):
        return self.post_form("/verify", [("token", token)] + list(
            (fields or {}).items()), **kw)

    def resend(self, fields=None, **kw):
        """The code page's "Send the code again" (or "Send a new code")."""
        return self.post_form("/resend", list((fields or {}).items()), **kw)

    def api(self, method, path, body=None, auth="Bearer " + API_TOKEN,
            ctype="application/json", headers=None):
        """A JSON API call: body a dict is sent as JSON, a str as it is;
        auth is the Authorization header and ctype the Content-Type (None:
        none)."""
        h = {}
        if auth is not None:
            h["Authorization"] = auth
        if isinstance(body, dict):
            if isinstance(body.get("phone"), str):
                self.note_phone(body["phone"])
            body = json.dumps(body)
        if body is not None and ctype is not None:
            h["Content-Type"] = ctype
        h.update(headers or {})
        return self.send(method, path, body=body, headers=h)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=10.0, server=None):
    """True once 127.0.0.1:port accepts a connection; False after timeout,
    or at once when server (the Server that is to listen) has exited."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if server is not None and not server.alive():
            return False
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return True
        except OSError:
            time.sleep(0.05)
    return False


def raw_exchange(port, data, timeout=10.0, body=True):
    """Sends data on a new connection and returns the first answer's
    bytes, exactly as they came: the head, and with body its
    Content-Length bytes after it (fewer if the server closes). Raises
    OSError as the socket does."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(data)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                return buf
            buf += chunk
        head, _, rest = buf.partition(b"\r\n\r\n")
        m = re.search(rb"\r\nContent-Length: *([0-9]+)", head, re.I)
        want = int(m.group(1)) if m and body else 0
        while len(rest) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            rest += chunk
        return head + b"\r\n\r\n" + (rest if body else b"")


STATUS_RE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})[^\r\n]*\r?\n")


def parse_answers(data):
    """Splits data into responses: [(status, head bytes)], and the bytes
    left over that are no complete response."""
    out = []
    while data:
        m = STATUS_RE.match(data)
        end = data.find(b"\r\n\r\n")
        if not m or end < 0:
            break
        head = data[:end]
        rest = data[end + 4:]
        status = int(m.group(1))
        hdrs = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            hdrs.setdefault(k.strip().lower(), v.strip())
        if 100 <= status < 200:
            out.append((status, head))
            data = rest
            continue
        if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            pos, ok = 0, False
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
                pos = eol + 2
                if size == 0:
                    t = rest.find(b"\r\n", pos)
                    while t > pos:        # trailer lines
                        pos = t + 2
                        t = rest.find(b"\r\n", pos)
                    if t == pos:
                        pos += 2
                        ok = True
                    break
                pos += size + 2
                if pos > len(rest):
                    break
            if not ok:
                break
            data = rest[pos:]
        elif b"content-length" not in hdrs:
            # No length: the body runs until the server closes
            # (civetweb's own error answers).
            out.append((status, head))
            data = b""
            break
        else:
            n = int(hdrs.get(b"content-length", b"0") or b"0")
            if len(rest) < n:
                break
            data = rest[n:]
        out.append((status, head))
    return out, data


def read_answers(sock, timeout=5.0, want=None):
    """Reads until the peer closes (or timeout s pass with nothing new, or
    want responses are complete). Returns (responses, closed, leftover):
    closed is True when the server closed the connection."""
    data = b""
    end = time.monotonic() + timeout
    closed = False
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            closed = True          # reset: closed, too
            break
        if not chunk:
            closed = True
            break
        data += chunk
        if want is not None and len(parse_answers(data)[0]) >= want:
            break
    answers, rest = parse_answers(data)
    return answers, closed, rest


def statuses(answers):
    return [s for s, _ in answers]


# ---- nginx in front -----------------------------------------------------------

NGINX_CONF = """\
daemon off;
master_process off;
worker_processes 1;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log info;
events {{ worker_connections {connections}; }}
http {{
    access_log {tmp}/access.log;
    client_body_temp_path {tmp}/body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
{http}
}}
"""


def tool_path(name, debian):
    """The program name: $NAME (upper case) if set, else name on PATH,
    else debian (where Debian's package puts it); None if none of them is
    executable."""
    for c in (os.environ.get(name.upper()), shutil.which(name), debian):
        if c and os.access(c, os.X_OK):
            return c
    return None


def nginx_path():
    """Debian's nginx (or $NGINX), or None."""
    return tool_path("nginx", "/usr/sbin/nginx")


def start_nginx(dir, tmp, http, connections=64):
    """nginx in the foreground, unprivileged, with everything it writes in
    tmp and http as its http { } block; its output in dir. Returns the
    Server, which logs no port: wait_port() for the ports http listens
    on. Its logs are tmp/error.log and tmp/access.log."""
    conf = os.path.join(tmp, "nginx.conf")
    with open(conf, "w") as f:
        f.write(NGINX_CONF.format(tmp=tmp, http=http.rstrip("\n"),
                                  connections=connections))
    return Server(dir, command=[nginx_path() or "nginx", "-p", tmp, "-c",
                                conf, "-e", tmp + "/error.log"],
                  listen_re=None, stdout="file", stderr="file").start()


# ---- Redis ---------------------------------------------------------------------

class Redis:
    """Debian's redis-server in the foreground on dir/redis.sock, nothing
    saved (what a restart loses is part of the tests), DEBUG allowed;
    extra: more arguments (--requirepass PW). start() returns once it
    answers; stop() kills it (as a crash would)."""

    def __init__(self, dir, *extra):
        self.dir, self.extra = dir, list(extra)
        self.sock = os.path.join(dir, "redis.sock")
        self.proc = None

    def start(self):
        path = tool_path("redis-server", "/usr/bin/redis-server")
        self.proc = subprocess.Popen(
            [path, "--port", "0", "--unixsocket", self.sock,
             "--unixsocketperm", "700", "--save", "", "--appendonly", "no",
             "--dir", self.dir, "--enable-debug-command", "yes",
             "--logfile", os.path.join(self.dir, "redis.log")] + self.extra,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL)
        with LIVE_LOCK:
            LIVE.add(self.proc)
        for _ in range(250):
            if self.cli("PING").strip() in ("PONG", "NOAUTH Authentication "
                                            "required."):
                return self
            time.sleep(0.02)
        raise Fail("redis-server did not answer on %s" % self.sock)

    def cli(self, *args):
        """redis-cli's output for one command (as the password's owner
        if --requirepass)."""
        auth = []
        if "--requirepass" in self.extra:
            auth = ["-a", self.extra[self.extra.index("--requirepass") + 1],
                    "--no-auth-warning"]
        p = subprocess.run(["redis-cli", "-s", self.sock] + auth +
                           list(args), capture_output=True, text=True,
                           timeout=10)
        return p.stdout + p.stderr

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        with LIVE_LOCK:
            LIVE.discard(self.proc)


# OTP_TEST_STORE=redis: every Ctx server (a dict config) gets a Redis of
# its case's own and a STATE_DIR, so a suite written for the memory store
# runs against Redis (tests/run.sh: integration_redis, with the binary
# built WITH_REDIS).
TEST_STORE = os.environ.get("OTP_TEST_STORE", "memory")


# ---- otp_demo behind a proxy ---------------------------------------------------

# otp_demo as the proxy tests run it behind nginx or Caddy, trusting
# them: the console sender, six-digit codes and no wait between codes
# (one number is verified several times in a row).
BEHIND_PROXY = {
    "OTP_LISTEN": "127.0.0.1:0",
    "OTP_SMS_PROVIDER": "console",
    "OTP_TRUSTED_PROXY": "127.0.0.1",
    "OTP_TOKEN_ALPHABET": "digits",
    "OTP_TOKEN_LENGTH": "6",
    "OTP_RESEND_INTERVAL": "0",
}


def start_behind_proxy(dir, env=None):
    """otp_demo with BEHIND_PROXY (and env on top) in dir (emptied first).
    Returns the Server, whose port is None if it did not start (its log
    says why)."""
    srv = Server(fresh_dir(dir), env=dict(BEHIND_PROXY, **(env or {})),
                 start_timeout=30)
    try:
        srv.start()
    except Fail:
        pass
    return srv


# ---- Caddy in front -----------------------------------------------------------

# Global options: no admin endpoint, no automatic HTTPS (no ACME, no
# redirect listener on :80), and sites on loopback only (a site's address
# names the host to match, not where to listen).
CADDY_CONF = """\
{{
	admin off
	auto_https off
	default_bind 127.0.0.1
}}
{sites}
"""


def caddy_path():
    """Debian's caddy (or $CADDY), or None."""
    return tool_path("caddy", "/usr/bin/caddy")


def start_caddy(dir, tmp, sites):
    """caddy run in the foreground, unprivileged, from tmp/Caddyfile: the
    global options above and sites (site blocks). HOME and the XDG
    directories are tmp, so whatever Caddy stores stays there; its output
    (JSON log lines) is in dir. Returns the Server, which logs no port:
    wait_port() for the ports the sites listen on."""
    conf = os.path.join(tmp, "Caddyfile")
    with open(conf, "w") as f:
        f.write(CADDY_CONF.format(sites=sites.rstrip("\n")))
    home = {"HOME": tmp, "XDG_DATA_HOME": os.path.join(tmp, "data"),
            "XDG_CONFIG_HOME": os.path.join(tmp, "config")}
    return Server(dir, command=[caddy_path() or "caddy", "run", "--config",
                                conf, "--adapter", "caddyfile"],
                  env=home, listen_re=None, stdout="file",
                  stderr="file").start()


# ---- README's snippets ---------------------------------------------------------

def readme_snippets(mark):
    """{language: text} of README's fenced blocks that name mark (the test
    that runs them), so that what README shows is what is tested."""
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    out = {}
    for m in re.finditer(r"```(\w+)\n(.*?)```", text, re.S):
        if mark in m.group(2):
            out[m.group(1)] = m.group(2)
    return out


# ---- what every answer must be ---------------------------------------------------

def check_security_headers(got, r):
    for name, rx in SECURITY_HEADERS.items():
        v = r.header(name)
        check(v is not None, "%s: missing %s header" % (got, name))
        check(re.search(rx, v), "%s: %s is %r" % (got, name, v))


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
    (except a 204), and errors as {"error": {"code", "message"}} (with
    st["error"], that code)."""
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


def check_index_form(ctx, b, r):
    """r is the index page: the phone form with its CSRF token."""
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


def wrong_code(code, length=6, alphabet="0123456789ABCDEF"):
    """A code of that length and alphabet that is not code."""
    if not code:
        return alphabet[1] * length
    c0 = alphabet[0] if code[0].upper() != alphabet[0] else alphabet[1]
    return c0 + code[1:]


# ---- docs/openapi.json ---------------------------------------------------------------

OPENAPI = os.path.join(ROOT, "docs", "openapi.json")
SCHEMA_WORDS = {"type", "enum", "pattern", "minimum", "required", "properties",
                "additionalProperties", "description", "$ref"}
SCHEMA_TYPES = {"string": str, "integer": int, "boolean": bool, "object": dict}


def openapi():
    with open(OPENAPI) as f:
        return json.load(f)


def schema_errors(spec, schema, v, where="body"):
    """What is wrong with v under schema (the JSON Schema subset the API's
    file uses; any other keyword is itself an error): a list of strings."""
    if "$ref" in schema:
        node = spec
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        return schema_errors(spec, node, v, where)
    out = ["%s: schema keyword %r is not checked here" % (where, k)
           for k in schema if k not in SCHEMA_WORDS]
    t = SCHEMA_TYPES.get(schema.get("type"))
    if "type" in schema and (t is None or not isinstance(v, t) or
                             (t is int and isinstance(v, bool))):
        return out + ["%s: %r is not a %s" % (where, v, schema.get("type"))]
    if "enum" in schema and v not in schema["enum"]:
        out.append("%s: %r is not one of %s" % (where, v, schema["enum"]))
    if "pattern" in schema and not re.search(schema["pattern"], v):
        out.append("%s: %r does not match %s" % (where, v, schema["pattern"]))
    if "minimum" in schema and v < schema["minimum"]:
        out.append("%s: %r < %r" % (where, v, schema["minimum"]))
    if isinstance(v, dict):
        props = schema.get("properties", {})
        out += ["%s: no %r" % (where, k) for k in schema.get("required", [])
                if k not in v]
        if schema.get("additionalProperties") is False:
            out += ["%s: %r is not in the schema" % (where, k) for k in v
                    if k not in props]
        for k, sub in props.items():
            if k in v:
                out += schema_errors(spec, sub, v[k], "%s.%s" % (where, k))
    return out


# ---- one case: Ctx and its browsers ------------------------------------------------

class Browser(Client):
    """A Client on the case's current server (its port and scheme, also
    after a restart), which notes the numbers it submits and logs every
    exchange to the case's http.log."""

    def __init__(self, ctx, name):
        super().__init__()
        self.ctx, self.name = ctx, name
        self.code = None

    def address(self):
        srv = self.ctx.server
        return "127.0.0.1", srv.port, \
            insecure_tls() if srv.scheme == "https" else None

    def send(self, method, path, body=None, **kw):
        resp = super().send(method, path, body, **kw)
        self.ctx.log_http(self.name, method, path, body, resp)
        return resp

    def note_phone(self, phone):
        self.ctx.note_phone(phone)


class Ctx:
    """One case in out/NAME/: its fake SMS API, its server (and the ones
    a restart stopped), its browsers, and what must never reach the
    server's log: the keys, the codes and texts sent, full numbers.
    finish() stops everything and scans every log. The fake uses the
    suite's test certificates, in out/certs/ (main() makes them)."""

    def __init__(self, name, out):
        self.name = name
        self.certs = os.path.join(out, "certs")
        self.dir = fresh_dir(os.path.join(out, name))
        self.fake = None
        self.server = None
        self.old_servers = []   # stopped by restart_server(), logs scanned
        self.redis = None       # OTP_TEST_STORE=redis: with_redis()
        self.browsers = {}
        # strings that must never reach the log: label -> value
        self.secrets = {"the API key": API_KEY, "the API token": API_TOKEN}
        self.phones = set()     # full numbers submitted: must not be logged
        self.codes = set()      # codes sent: must not be logged
        self.texts = set()      # SMS texts sent
        self.saved = {}
        self.cfg = {}
        self.http_log = open(os.path.join(self.dir, "http.log"), "w")
        self.http_lock = threading.Lock()

    # -- setup --
    def start_fake(self, cert_name="server", mode="ok", api_key=API_KEY,
                   **kw):
        c, k = self.cert(cert_name)
        self.fake = fake_api.FakeApi(
            c, k, api_key=api_key, mode=mode,
            record=os.path.join(self.dir, "api.jsonl"), **kw)
        self.fake.start()
        return self.fake

    def cert(self, name):
        return cert(name, self.certs)

    def base_config(self):
        """The Telnyx sender against the fake, on a free port."""
        return {
            "API_KEY": API_KEY,
            "FROM_NUMBER": FROM,
            "LISTEN": "127.0.0.1:0",
            "SMS_API_URL": self.fake.url,
            "SMS_CA_FILE": self.cert("ca")[0],
            "TOKEN_LENGTH": 6,
            "SMS_TIMEOUT": 5,
        }

    def start_server(self, overrides=None, text=None, env=None, base=None,
                     **kw):
        """Starts the server with base (default base_config()) and the
        overrides (None removes a key), or with the file text; kw go to
        Server."""
        cfg = dict(self.base_config() if base is None else base)
        for k, v in (overrides or {}).items():
            if v is None:
                cfg.pop(k, None)
            else:
                cfg[k] = v
        if TEST_STORE == "redis" and text is None:
            cfg = self.with_redis(cfg)
        self.cfg = cfg
        self.server = Server(self.dir, text if text is not None else cfg,
                             env=env, **kw)
        self.server.start()
        return self.server

    def with_redis(self, cfg):
        """cfg on this case's Redis (started once), with a STATE_DIR."""
        if self.redis is None:
            self.redis = Redis(self.dir).start()
        state = os.path.join(self.dir, "state")
        os.makedirs(state, mode=0o700, exist_ok=True)
        return dict(cfg, STORE="unix://" + self.redis.sock, **(
            {} if cfg.get("STATE_DIR") else {"STATE_DIR": state}))

    def restart_server(self):
        """SIGTERM (must exit 0), then the same config and environment
        again; the new server's logs are stderr.N.log / stdout.N.log."""
        old = self.server
        rc = old.stop()
        check(rc == 0, "server exit on SIGTERM before the restart: %s "
              "(want 0)" % (rc,))
        self.old_servers.append(old)
        self.server = old.again(".%d" % (len(self.old_servers) + 1))
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
                code = m and next(g for g in m.groups() if g)
                self.note_sms(text, code)
                if m and b is not None:
                    b.code = code
        return new

    def message_regex(self):
        """The SMS texts this server sends: MESSAGE, or without it the
        built-in text of any language (www/lang/*.txt)."""
        msgs = [self.cfg["MESSAGE"]] if self.cfg.get("MESSAGE") else \
            [catalog(lang)["sms"] for lang in LANGS]
        return "^(?:" + "|".join(
            re.escape(m).replace(re.escape("{code}"),
                                 "(?P<code%d>[0-9A-Za-z]+)" % i)
            for i, m in enumerate(msgs)) + ")$"

    def log_http(self, who, method, path, body, resp):
        with self.http_lock:
            self.http_log.write("[%s] %s %s %s\n  -> %d %s %s\n    %s\n" % (
                who, method, path, short(body or b"", 200), resp.status,
                resp.reason, resp.headers, short(resp.body, 300)))
            self.http_log.flush()

    # -- teardown --
    def close(self):
        """Stops everything; returns the problems: an unclean exit, a
        leak into a log."""
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
        if self.redis is not None:
            self.redis.stop()
        self.http_log.close()
        return problems

    def finish(self, failed):
        """close(); raises Fail for its problems unless the case failed
        already."""
        problems = self.close()
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


# ---- the case runner ---------------------------------------------------------------

def register(cases):
    """A decorator that adds its function to cases as (name, function)."""
    def case(fn):
        cases.append((fn.__name__, fn))
        return fn
    return case


def cases_in(namespace):
    """(NAME, function) for every case_NAME function in namespace."""
    return [(name[5:], fn) for name, fn in sorted(namespace.items())
            if name.startswith("case_") and callable(fn)]


def run_case(name, fn, out):
    """Runs fn(ctx) in a Ctx of its own under out, then its teardown.
    Returns None if the case passed, a Skip, or the reason it failed."""
    ctx = Ctx(name, out)
    failed = skipped = None
    try:
        fn(ctx)
    except Fail as e:
        failed = str(e)
    except Skip as e:
        skipped = e
    except Exception as e:  # noqa: BLE001 - a test bug is a failure too
        with open(os.path.join(ctx.dir, "traceback.txt"), "w") as f:
            f.write(traceback.format_exc())
        failed = "%s: %s (traceback in %s)" % (type(e).__name__, e,
                                               os.path.relpath(ctx.dir, ROOT))
    try:
        ctx.finish(failed is not None)
    except Fail as e:
        failed = str(e)
    except Exception as e:  # noqa: BLE001
        failed = failed or "teardown: %s: %s" % (type(e).__name__, e)
    return failed if failed is not None else skipped


def main(cases, out, description, jobs=4, slow=(), prefix=""):
    """Runs cases ([(name, fn(ctx))]), each in out/PREFIXNAME/, jobs at a
    time, those whose name has a slow substring first. Returns the exit
    status: 1 if anything failed."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("-k", action="append", default=[],
                    help="run only cases whose name contains SUBSTR")
    ap.add_argument("-x", action="append", default=[],
                    help="leave out cases whose name contains SUBSTR")
    ap.add_argument("-j", type=int, default=jobs,
                    help="parallel cases (%d)" % jobs)
    ap.add_argument("-l", "--list", action="store_true", help="list cases")
    a = ap.parse_args()
    todo = [(prefix + n, fn) for n, fn in cases
            if (not a.k or any(k in n for k in a.k)) and
            not any(x in n for x in a.x)]
    if a.list:
        for n, _ in todo:
            print(n)
        return 0
    if not (os.path.isfile(BIN) and os.access(BIN, os.X_OK)):
        print("FAIL setup: no executable %s (set OTP_BIN or run make)" % BIN)
        print("0 passed, 1 failed")
        return 1
    os.makedirs(out, exist_ok=True)
    ensure_certs(os.path.join(out, "certs"))
    t0 = time.monotonic()
    passed = failed = skipped = 0
    lock = threading.Lock()

    def stopped(signum, frame):
        kill_live()
        print("interrupted by signal %d" % signum, flush=True)
        print("%d passed, %d failed" % (passed, failed + 1), flush=True)
        os._exit(1)
    signal.signal(signal.SIGINT, stopped)
    signal.signal(signal.SIGTERM, stopped)
    todo.sort(key=lambda c: not any(s in c[0] for s in slow))
    with concurrent.futures.ThreadPoolExecutor(max(1, a.j)) as ex:
        futs = {ex.submit(run_case, n, fn, out): n for n, fn in todo}
        for fut in concurrent.futures.as_completed(futs):
            name, err = futs[fut], fut.result()
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
    with open(os.path.join(out, prefix + "time.txt"), "w") as f:
        f.write("%.1f s\n" % (time.monotonic() - t0))
    print("%d passed, %d failed%s" % (passed, failed, ", %d skipped"
                                      % skipped if skipped else ""))
    return 1 if failed else 0
