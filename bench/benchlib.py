"""bench/benchlib.py: wrk runs, phone numbers and fast table filling for
the bench scripts (bench.py, fairness.py), on top of tests/harness.py
(servers, config files, HTTP clients). Python standard library only.

Everything here talks to 127.0.0.1 only and starts processes in a run
directory it is given; every process it starts it also stops.
"""

import os
import re
import signal
import socket
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.dont_write_bytecode = True  # no __pycache__ in the tree
sys.path.insert(0, os.path.join(ROOT, "tests"))
import harness as h  # noqa: E402

FORM = h.FORM
BenchError = h.Fail     # a step of the bench failed


class Server(h.Server):
    """One server process (otp_demo or the ceiling: command, args after the
    config) on cfg's LISTEN, in rundir/NAME/, with only its stderr kept, in
    a file (nothing reads it while it runs)."""

    def __init__(self, rundir, name, command, cfg, args=()):
        super().__init__(os.path.join(rundir, name), cfg, args=args,
                         command=command, stdout=None, stderr="file",
                         stop_timeout=15)
        self.name = name
        self.requests = 0  # counted by callers (wrk runs)

    def log_count(self, word):
        return sum(1 for line in self.log_lines() if word in line)


class Client(h.Client):
    """A keep-alive browser for setting up (never timed): session() gets
    it a session; request_code() returns the otp_vid handle it was given
    and keeps it out of the jar, so each request stands alone."""

    def __init__(self, port):
        super().__init__(port, keep_alive=True, timeout=10.0)

    @property
    def sid(self):
        return self.cookies.get("otp_sid")

    def _request(self, phone):
        r = super().request_code(phone)
        return r, self.cookies.pop("otp_vid", None)

    def request_status(self, phone):
        """POST /request; returns the status only."""
        return self._request(phone)[0].status

    def request_code(self, phone):
        """POST /request, which must succeed; returns the otp_vid."""
        r, vid = self._request(phone)
        if r.status != 200 or not vid:
            raise BenchError("POST /request %s gave %d: %s" % (
                phone, r.status, h.short(r.html)))
        return vid


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
                                                      h.short(stdout, 400)))
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
        c0 = server.cpu_seconds()
        r = self.run(server.port, script, env, **kw)
        c1 = server.cpu_seconds()
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
