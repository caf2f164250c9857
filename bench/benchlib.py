"""bench/benchlib.py: servers, wrk runs and small HTTP helpers for the
bench scripts (bench.py, fairness.py). Python standard library only.

Everything here talks to 127.0.0.1 only and starts processes in a run
directory it is given; every process it starts it also stops.
"""

import http.client
import os
import re
import signal
import socket
import statistics
import subprocess
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
FORM = "application/x-www-form-urlencoded"


class BenchError(Exception):
    pass


def config_text(cfg):
    """The tutorial's Python-literal syntax: strings quoted, rest bare."""
    out = []
    for k, v in cfg.items():
        if isinstance(v, bool):
            v = "True" if v else "False"
        elif isinstance(v, str):
            v = "'" + v.replace("\\", "\\\\").replace("'", "\\'") + "'"
        out.append("%s=%s\n" % (k, v))
    return "".join(out)


# Limits raised to their maxima (see config_keys in otp_demo.c), so a
# bench measures the path it means to, not a 429.
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


# Phone numbers. otp_demo refuses numbers that cannot exist (its NANP
# rules) and, by default, any outside the US and Canada, so the bench
# counts with an integer v and sends nanp(v): an area code of AREA_CODES,
# an exchange 200-999 but N11 and 976, and a line. Distinct for v within
# any window of len(AREA_CODES) * 791 * 10000 (3.16e8); bench/common.lua
# has the same function for wrk.
AREA_CODES = ("201 202 203 205 206 207 208 209 210 212 213 214 215 216 217 "
              "218 219 224 225 228 229 231 234 239 240 248 251 252 253 254 "
              "256 260 262 267 269 270 272 276 281 301").split()
EXCHANGES = ["%03d" % x for x in range(200, 1000)
             if x % 100 != 11 and x != 976]


def nanp(v):
    """The v-th number otp_demo accepts, E.164: "+12012000000"..."""
    line, v = v % 10000, v // 10000
    ex, v = EXCHANGES[v % len(EXCHANGES)], v // len(EXCHANGES)
    return "+1%s%s%04d" % (AREA_CODES[v % len(AREA_CODES)], ex, line)


class Server:
    """One server process (otp_demo or the ceiling) on 127.0.0.1:0.

    argv is the command without the config; the config file is written
    to rundir/NAME.cfg, stderr goes to rundir/NAME.log, stdout to
    rundir/NAME.out (or /dev/null with stdout=None)."""

    def __init__(self, rundir, name, argv, cfg, stdout=None, env=None,
                 extra_args=()):
        self.rundir, self.name = rundir, name
        self.argv, self.cfg = list(argv), dict(cfg)
        self.stdout, self.env, self.extra = stdout, env, list(extra_args)
        self.proc = None
        self.port = None
        self.log = os.path.join(rundir, name + ".log")
        self.requests = 0  # counted by callers (wrk runs)

    def start(self, timeout=10.0):
        cfgpath = os.path.join(self.rundir, self.name + ".cfg")
        with open(cfgpath, "w") as f:
            f.write(config_text(self.cfg))
        env = {k: v for k, v in os.environ.items()
               if not k.startswith("OTP_")}
        env.update(self.env or {})
        out = (open(os.path.join(self.rundir, self.name + ".out"), "w")
               if self.stdout else subprocess.DEVNULL)
        self.errf = open(self.log, "w")
        self.t_spawn = time.monotonic()
        self.proc = subprocess.Popen(
            self.argv + ["-c", cfgpath] + self.extra, cwd=self.rundir,
            env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=self.errf)
        if out is not subprocess.DEVNULL:
            out.close()
        pat = re.compile(r"listening on http://[0-9.]+:([0-9]+)")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            with open(self.log) as f:
                m = pat.search(f.read())
            if m:
                self.port = int(m.group(1))
                return self
            if self.proc.poll() is not None:
                raise BenchError("%s exited %s at start: %s" % (
                    self.name, self.proc.returncode, self.tail()))
            time.sleep(0.01)
        self.stop()
        raise BenchError("%s: no 'listening on' line within %.0f s" % (
            self.name, timeout))

    def tail(self, n=3):
        try:
            with open(self.log) as f:
                return " | ".join(f.read().splitlines()[-n:])
        except OSError:
            return ""

    @property
    def pid(self):
        return self.proc.pid

    def cpu(self):
        """utime + stime of the whole process so far, in seconds."""
        with open("/proc/%d/stat" % self.pid) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / CLK_TCK

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self):
        return len(os.listdir("/proc/%d/fd" % self.pid))

    def stop(self, timeout=15.0):
        """SIGTERM; returns (exit status, seconds to exit)."""
        if self.proc is None:
            return None, 0.0
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        took = time.monotonic() - t0
        self.errf.close()
        rc = self.proc.returncode
        self.proc = None
        return rc, took

    def log_count(self, word):
        with open(self.log) as f:
            return sum(1 for line in f if word in line)


# ---- HTTP helpers (setup only: never timed) --------------------------------

class Client:
    """A keep-alive client with one session (otp_sid cookie + CSRF)."""

    def __init__(self, port, timeout=10.0):
        self.port = port
        self.conn = http.client.HTTPConnection("127.0.0.1", port,
                                               timeout=timeout)
        self.sid = self.csrf = None

    def close(self):
        self.conn.close()

    def _do(self, method, path, body=None, cookies=None):
        headers = {}
        if body is not None:
            headers["Content-Type"] = FORM
        jar = dict(cookies or {})
        if self.sid:
            jar.setdefault("otp_sid", self.sid)
        if jar:
            headers["Cookie"] = "; ".join("%s=%s" % kv for kv in jar.items())
        for attempt in (0, 1):
            try:
                self.conn.request(method, path, body=body, headers=headers)
                r = self.conn.getresponse()
                break
            except (BrokenPipeError, ConnectionResetError,
                    http.client.RemoteDisconnected):
                # the server closed an idle keep-alive connection
                # (keep_alive_timeout_ms): reconnect once
                self.conn.close()
                if attempt:
                    raise
        data = r.read().decode("utf-8", "replace")
        set_cookies = {}
        for h in r.headers.get_all("Set-Cookie") or []:
            name, _, rest = h.partition("=")
            set_cookies[name.strip()] = rest.split(";", 1)[0]
        return r.status, data, set_cookies

    def session(self):
        status, body, cookies = self._do("GET", "/")
        m = re.search(r'name="csrf" value="([0-9a-f]+)"', body)
        if status != 200 or "otp_sid" not in cookies or not m:
            raise BenchError("GET / gave %d without a session" % status)
        self.sid, self.csrf = cookies["otp_sid"], m.group(1)
        return self

    def request_code(self, phone):
        """POST /request; returns the otp_vid cookie value."""
        status, body, cookies = self._do(
            "POST", "/request", "phone=%s&csrf=%s" % (
                urllib.parse.quote(phone), self.csrf))
        if status != 200 or not cookies.get("otp_vid"):
            raise BenchError("POST /request %s gave %d: %s" % (
                phone, status, short(body)))
        return cookies["otp_vid"]

    def request_status(self, phone):
        """POST /request; returns the status only."""
        return self._do("POST", "/request", "phone=%s&csrf=%s" % (
            urllib.parse.quote(phone), self.csrf))[0]

    def verify(self, vid, token):
        status, body, _ = self._do("POST", "/verify", "token=%s&csrf=%s" % (
            token, self.csrf), {"otp_vid": vid})
        return status, body


def short(s, n=160):
    s = " ".join(str(s).split())
    return s if len(s) <= n else s[:n] + "..."


def raw_exchange(port, request, timeout=10.0):
    """Sends request bytes, returns the whole response (one, by
    Content-Length) as bytes, exactly as it came."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.sendall(request)
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = s.recv(65536)
            if not chunk:
                raise BenchError("connection closed before headers")
            buf += chunk
        head, _, body = buf.partition(b"\r\n\r\n")
        m = re.search(rb"\r\nContent-Length: *([0-9]+)", head, re.I)
        want = int(m.group(1)) if m else 0
        while len(body) < want:
            chunk = s.recv(65536)
            if not chunk:
                break
            body += chunk
        return head + b"\r\n\r\n" + body


def form_request(path, body, cookie):
    return ("POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\n"
            "Cookie: %s\r\nContent-Length: %d\r\n\r\n%s" % (
                path, FORM, cookie, len(body), body)).encode()


def pipeline(port, make, n, conns=4, depth=8, timeout=30.0, collect=None):
    """Sends make(0) .. make(n - 1) (request bytes) over conns parallel
    clients, depth requests at a time on one connection (HTTP/1.1
    pipelining), and returns {status: count}. Each batch has its own
    connection, whose last request says "Connection: close", so a batch
    normally ends inside the time otp_demo lets a busy keep-alive
    connection keep its worker. If the server ends one early anyway (a
    loaded machine), the requests not answered are sent again on a new
    connection: callers send requests that are safe to repeat (a POST
    /request for the same number repeats its code). For filling tables
    fast from Python; it times nothing. With collect (a bytes regex with
    one group), also returns {i: match} for the answers to make(i) whose
    headers match."""
    import threading
    counts, lock, errors, found = {}, threading.Lock(), [], {}
    head_re = re.compile(rb"\r\nContent-Length: *([0-9]+)", re.I)
    close_re = re.compile(rb"\r\nConnection: *close", re.I)

    def batch_once(batch):
        """Sends batch; returns how many answers came before the end."""
        reqs = [make(i) for i in batch]
        reqs[-1] = reqs[-1].replace(b"\r\n", b"\r\nConnection: close\r\n",
                                    1)
        done = 0
        with socket.create_connection(("127.0.0.1", port), timeout) as s:
            try:
                s.sendall(b"".join(reqs))
                buf = b""
                while done < len(batch):
                    end = buf.find(b"\r\n\r\n")
                    if end >= 0:
                        m = head_re.search(buf, 0, end)
                        total = end + 4 + (int(m.group(1)) if m else 0)
                        if len(buf) >= total:
                            st = int(buf[9:12])
                            if collect is not None:
                                m = collect.search(buf, 0, end)
                                if m:
                                    found[batch[done]] = m.group(1).decode()
                            closed = close_re.search(buf, 0, end)
                            buf = buf[total:]
                            with lock:
                                counts[st] = counts.get(st, 0) + 1
                            done += 1
                            if closed:
                                break
                            continue
                    chunk = s.recv(1 << 20)
                    if not chunk:
                        break
                    buf += chunk
            except (ConnectionResetError, BrokenPipeError):
                pass
        return done

    def worker(k):
        try:
            mine = list(range(k, n, conns))
            tries = 0
            while mine:
                done = batch_once(mine[:depth])
                mine = mine[done:]
                tries = tries + 1 if done == 0 else 0
                if tries > 20:
                    raise BenchError("no answers from the server")
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(k,)) for k in range(conns)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise BenchError("pipeline: %s" % errors[0])
    return (counts, found) if collect is not None else counts


# ---- wrk -------------------------------------------------------------------

class Wrk:
    def __init__(self, threads=2, connections=8, seconds=5.0, timeout=5):
        self.threads, self.connections = threads, connections
        self.seconds, self.timeout = seconds, timeout

    def start(self, port, script, env=None, seconds=None, threads=None,
              connections=None, path="/"):
        """Starts wrk with bench/SCRIPT in the background."""
        e = dict(os.environ)
        e["BENCH_LUA_DIR"] = HERE
        e.update(env or {})
        secs = seconds or self.seconds
        argv = ["wrk", "-t%d" % (threads or self.threads),
                "-c%d" % (connections or self.connections),
                "-d%.0fs" % max(1, round(secs)), "--timeout",
                "%ds" % self.timeout, "-s", os.path.join(HERE, script),
                "http://127.0.0.1:%d%s" % (port, path)]
        p = subprocess.Popen(argv, env=e, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
        p.bench_seconds = secs
        return p

    @staticmethod
    def finish(p, interrupt=False):
        """Waits for (or with interrupt, stops) a started wrk and returns
        a dict: rps, requests, p50/p99/max in ms, status_errors,
        socket_errors."""
        if interrupt:
            p.send_signal(signal.SIGINT)  # wrk stops and reports
        try:
            stdout, _ = p.communicate(timeout=p.bench_seconds + 60)
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, _ = p.communicate()
        m = re.search(r"^BENCH (.*)$", stdout, re.M)
        if p.returncode != 0 or not m:
            raise BenchError("wrk failed (%d): %s" % (p.returncode,
                                                      short(stdout, 400)))
        d = {k: int(v) for k, v in (kv.split("=") for kv in m.group(1).split())}
        dur = d["duration_us"] / 1e6
        return {
            "requests": d["requests"],
            "seconds": dur,
            "rps": d["requests"] / dur if dur > 0 else 0.0,
            "p50_ms": d["p50_us"] / 1000.0,
            "p99_ms": d["p99_us"] / 1000.0,
            "max_ms": d["max_us"] / 1000.0,
            "status_errors": d["status_errors"],
            "socket_errors": d["socket_errors"],
        }

    def run(self, port, script, env=None, **kw):
        return self.finish(self.start(port, script, env, **kw))

    def measured(self, server, script, env=None, **kw):
        """One wrk run against server, with the server's CPU time per
        request (utime + stime from /proc over the run)."""
        c0 = server.cpu()
        r = self.run(server.port, script, env, **kw)
        c1 = server.cpu()
        server.requests += r["requests"]
        r["cpu_us"] = ((c1 - c0) * 1e6 / r["requests"]) if r["requests"] \
            else float("nan")
        return r


# ---- small things ----------------------------------------------------------

def loadavg():
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def median(xs):
    xs = [x for x in xs if x == x]  # drop NaN
    return statistics.median(xs) if xs else float("nan")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_get_once(port, timeout):
    """A fresh connection, GET /, the whole response. Returns the status
    or raises OSError/socket.timeout."""
    with socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                  b"Connection: close\r\n\r\n")
        buf = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
        if not buf.startswith(b"HTTP/1.1 "):
            raise OSError("no HTTP answer")
        return int(buf[9:12])
