#!/usr/bin/env python3
"""bench/bench.py: what `make bench` prints. See bench/README.md.

Runs wrk on loopback against the real binary and, alternating with it,
against bench's ceiling (the same civetweb build and options, no logic),
and prints one table. Ratios and CPU time per request are the figures to
compare; absolute requests/s depend on the machine and its load.

Environment (make bench passes these through):
  BENCH_BIN        the otp_demo to measure (default ./otp_demo)
  BENCH_CEILING    the ceiling program (default build/bench/ceiling)
  BENCH_BASE       optional second otp_demo (say main's) measured in the
                   same run, alternating; adds a "÷ base" column
  BENCH_SECONDS    seconds per wrk run (5)
  BENCH_RUNS       runs per endpoint and program (5)
  BENCH_REQUESTS   requests before "RSS after N requests" (1000000)
  BENCH_WRK        wrk threads,connections (2,8); THREADS stays 8
  BENCH_ONLY       comma list of sections: throughput,memory,start,
                   latency,fairness,slow,sms,redis (default: all)
  BENCH_REDIS_BIN  the otp_demo built WITH_REDIS, for "redis" (default
                   build/otp_demo-redis; skipped if missing)
  BENCH_JSON       also write every figure there as JSON
Python standard library only.
"""

import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import types
import urllib.parse

sys.dont_write_bytecode = True  # no __pycache__ in the tree
from benchlib import (  # noqa: E402
    ROOT, BenchError, Client, Server, Wrk, form_request, h, http_get_once,
    loadavg, median, nanp, pipeline)

BIN = os.path.abspath(os.environ.get("BENCH_BIN") or
                      os.path.join(ROOT, "otp_demo"))
CEILING = os.path.abspath(os.environ.get("BENCH_CEILING") or
                          os.path.join(ROOT, "build", "bench", "ceiling"))
BASE = os.environ.get("BENCH_BASE") or None
REDIS_BIN = os.path.abspath(os.environ.get("BENCH_REDIS_BIN") or
                            os.path.join(ROOT, "build", "otp_demo-redis"))
SECONDS = float(os.environ.get("BENCH_SECONDS") or 5)
RUNS = int(os.environ.get("BENCH_RUNS") or 5)
REQUESTS = int(os.environ.get("BENCH_REQUESTS") or 1000000)
WRK_T, WRK_C = (int(x) for x in
                (os.environ.get("BENCH_WRK") or "2,8").split(","))
ONLY = set(filter(None, (os.environ.get("BENCH_ONLY") or
                         "throughput,memory,start,latency,fairness,slow,"
                         "sms,redis"
                         ).split(",")))
THREADS = 8  # otp_demo's default; the wrk connections match it
VERIFY_RPS_MAX = 100000  # sizes the verifications made for /verify runs

RESULTS = {}
LINES = []


def say(*a):
    print(*a, file=sys.stderr, flush=True)


def out(line=""):
    LINES.append(line)
    print(line, flush=True)


def fmt_ms(ms):
    if ms != ms:
        return "-"
    return "%.0f us" % (ms * 1000) if ms < 1 else "%.2f ms" % ms


def mib(kib):
    return "%.1f MiB" % (kib / 1024.0)


def base_config(**kw):
    return dict(h.CONSOLE, THREADS=THREADS, **kw)


def bench_config(**kw):
    """Limits raised so each endpoint stays on the path it measures."""
    cfg = base_config(**h.LIMITS_OFF)
    cfg.update(kw)
    return cfg


def otp(rundir, name, cfg, binary=None):
    return Server(rundir, name, [binary or BIN], cfg)


# ---- throughput ------------------------------------------------------------

def make_vids(srv, n, first):
    """n live verifications for one session on srv (POST /request for n
    new numbers, pipelined); returns (client, path of the vid file)."""
    import re
    c = Client(srv.port).session()
    c.close()
    cookie = "otp_sid=%s" % c.sid

    def make(i):
        return form_request("/request", "phone=%s&csrf=%s" % (
            urllib.parse.quote(nanp(first + i)), c.csrf), cookie)

    counts, vids = pipeline(srv.port, make, n,
                            collect=re.compile(rb"otp_vid=([0-9a-f]+)"))
    if counts.get(200) != n or len(vids) != n:
        raise BenchError("%s: verifications: %s" % (srv.name, counts))
    path = os.path.join(srv.dir, "vids.%d" % first)
    with open(path, "w") as f:
        f.write("\n".join(vids[i] for i in range(n)) + "\n")
    return c, path


def capture(rundir, srv, vid_client, vid):
    """otp_demo's answers, byte for byte, for the ceiling to replay."""
    files = {}
    c = Client(srv.port).session()
    reqs = {
        ("GET", "/"): b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
        ("POST", "/verify"): form_request(
            "/verify", "token=ZZZZZZ&csrf=%s" % vid_client.csrf,
            "otp_sid=%s; otp_vid=%s" % (vid_client.sid, vid)),
        ("POST", "/request"): form_request(
            "/request", "phone=%s&csrf=%s" % (
                urllib.parse.quote(nanp(1999999999)), c.csrf),
            "otp_sid=%s" % c.sid),
    }
    for (method, path), req in reqs.items():
        resp = h.raw_exchange(srv.port, req)
        if b"\r\n\r\n" not in resp:
            raise BenchError("%s %s: no answer to capture" % (method, path))
        f = os.path.join(rundir, "canned%s.http" % path.replace("/", "_"))
        with open(f, "wb") as fh:
            fh.write(resp)
        files[(method, path)] = f
    c.close()
    return files


# POST /verify needs live verifications to send wrong codes to. MAX_ATTEMPTS
# is at most 100, so each run gets enough of them to spread its requests
# over (round robin) that none is locked, which would change the path and
# the page: sized for 100,000 req/s, made before the run is timed.
NVIDS = int(math.ceil(VERIFY_RPS_MAX * (SECONDS + 1) / 80))


def vids_env(srv, i):
    """wrk's env for verify.lua in round i: NVIDS verifications on srv."""
    cl, vf = make_vids(srv, NVIDS, 3100000000 + i * 1000000)
    return {"BENCH_SID": cl.sid, "BENCH_CSRF": cl.csrf, "BENCH_VIDS": vf}


def request_env(srv, i):
    """wrk's env for request.lua in round i: a session on srv."""
    cl = Client(srv.port).session()
    return {"BENCH_SID": cl.sid, "BENCH_CSRF": cl.csrf,
            "BENCH_FIRST": str(2000000000 + i * 200000000)}


def fresh(rundir, servers, name, binary, cfg, setup):
    """For alternate(): a new server each round (added to servers), its
    wrk env from setup(server, round). Each run then starts from empty
    tables and meets no limit: a cap is at most 1,000,000 an hour, which
    RUNS runs on a fast machine would pass on one server."""
    def start(i):
        srv = otp(rundir, "%s%d" % (name, i), cfg, binary).start()
        servers.append(srv)
        return srv, setup(srv, i)
    return start


def alternate(wrk, programs, script, env_for):
    """RUNS rounds; in each, one wrk run per program, the order reversed
    every other round so that drift in the machine's load hits all alike.
    programs: [(who, server)], or [(who, fresh)] where fresh(round) starts
    a server for that round alone and returns it with wrk's env (it is
    stopped after its run); env_for(who, round) gives the others' env.
    Returns {who: [result, ...]}."""
    res = {who: [] for who, _ in programs}
    for i in range(RUNS):
        order = programs if i % 2 == 0 else programs[::-1]
        for who, srv in order:
            if not callable(srv):
                res[who].append(wrk.measured(srv, script, env_for(who, i)))
                continue
            s, env = srv(i)
            try:
                res[who].append(wrk.measured(s, script, env))
            finally:
                s.stop()
    return res


def throughput(rundir, wrk):
    say("== throughput: GET /, POST /verify (wrong code), POST /request")
    # A: GET / (makes nothing but sessions, which live in their cookies)
    # and the answers the ceiling replays. POST /verify and /request: a
    # fresh server each round (fresh()).
    cfg_a = bench_config(MAX_PENDING=200000)
    cfg_b = bench_config(MAX_PENDING=1000000)
    a = otp(rundir, "otp_a", cfg_a).start()
    servers = [a]
    base_a = None
    try:
        if BASE:
            base_a = otp(rundir, "base_a", cfg_a, BASE).start()
            servers.append(base_a)
        v0 = vids_env(a, 0)
        with open(v0["BENCH_VIDS"]) as f:
            first_vid = f.readline().strip()
        files = capture(rundir, a, types.SimpleNamespace(
            sid=v0["BENCH_SID"], csrf=v0["BENCH_CSRF"]), first_vid)
        a.rss_setup = a.rss_kib()
        r0 = request_env(a, 0)
        routes = [x for (m, p), f in sorted(files.items()) for x in (m, p, f)]
        ceil = Server(rundir, "ceiling", [CEILING], cfg_a,
                      args=routes).start()
        servers.append(ceil)
        ceilh = Server(rundir, "ceiling_h", [CEILING, "-h"], cfg_a,
                       args=routes).start()
        servers.append(ceilh)

        def progs(kind, cfg, setup):
            p = [("otp", fresh(rundir, servers, "otp_" + kind, BIN, cfg,
                               setup)), ("ceiling", ceil)]
            return p + ([("base", fresh(rundir, servers, "base_" + kind,
                                        BASE, cfg, setup))] if BASE else [])

        rows = []
        # GET /: a first visit, so a new session (cookie, CSRF token) each
        res = alternate(wrk, [("otp", a), ("ceiling", ceil),
                              ("ceiling_h", ceilh)] +
                        ([("base", base_a)] if BASE else []), "get.lua",
                        lambda who, i: {})
        rows.append(("GET /", res))

        # POST /verify with a wrong code, over verifications made first.
        # The ceiling replays one answer: any body of the same shape.
        res = alternate(wrk, progs("v", cfg_a, vids_env), "verify.lua",
                        lambda who, i: v0)
        for who in ("otp", "base"):
            for r in res.get(who, []):
                if r["requests"] > 99 * NVIDS:
                    say("warning: %d verifies over %d verifications: some "
                        "were locked" % (r["requests"], NVIDS))
        rows.append(("POST /verify (wrong code)", res))

        # POST /request: a new number each time, console sender.
        res = alternate(wrk, progs("r", cfg_b, request_env), "request.lua",
                        lambda who, i: dict(r0, BENCH_FIRST=str(
                            2000000000 + i * 200000000)))
        rows.append(("POST /request (console)", res))

        for srv in servers:
            if srv.name.startswith("ceiling"):
                continue
            for word in ("rate_limited", "table_full", "locked", "error"):
                n = srv.log_count(word)
                if n:
                    say("warning: %s logged %d x %s: the bench left its "
                        "path" % (srv.name, n, word))
        show_throughput(rows)
        return a  # kept running for "RSS after N requests"
    except BaseException:
        a.stop()
        raise
    finally:
        for srv in servers:
            if srv is not a:
                srv.stop()


def rps(rs):
    """The median req/s of runs rs."""
    return median([r["rps"] for r in rs])


def cpu(rs):
    """The median CPU time per request of runs rs, in us."""
    return median([r["cpu_us"] for r in rs])


def show_throughput(rows):
    out("%-26s %24s %8s %8s %8s %9s | %8s %9s %9s %5s%s" % (
        "", "otp_demo req/s", "p50", "p99", "max", "CPU/req", "ceiling",
        "CPU/req", "÷ceiling", "CPU×", " %8s" % "÷base" if BASE else ""))
    RESULTS["throughput"] = {}
    for name, res in rows:
        o, c = res["otp"], res["ceiling"]
        span = "%.0f (%.0f-%.0f)" % (rps(o), min(r["rps"] for r in o),
                                     max(r["rps"] for r in o))
        line = "%-26s %24s %8s %8s %8s %6.1f us | %8.0f %6.1f us %9.2f %5.2f" % (
            name, span, fmt_ms(median([r["p50_ms"] for r in o])),
            fmt_ms(median([r["p99_ms"] for r in o])),
            fmt_ms(max(r["max_ms"] for r in o)), cpu(o), rps(c),
            cpu(c), rps(o) / rps(c), cpu(o) / cpu(c))
        if BASE:
            line += " %8.2f" % (rps(o) / rps(res["base"]))
        out(line)
        RESULTS["throughput"][name] = dict(res, ratio=rps(o) / rps(c),
                                           cpu_ratio=cpu(o) / cpu(c))
    ch = rows[0][1]["ceiling_h"]
    c = rows[0][1]["ceiling"]
    out("%-26s %24.0f %26s %6.1f us | %s" % (
        "GET /, ceiling, -h", rps(ch), "", cpu(ch),
        "÷ceiling %.2f: answering through civetweb's header calls (a "
        "send() per header line)" % (rps(ch) / rps(c))))
    out("  req/s: median (min-max) of %d runs, alternating with the ceiling; "
        "p50, p99: medians; max: of all runs;\n  CPU/req: the server's "
        "utime+stime ÷ requests; CPU×: otp_demo's CPU/req ÷ the ceiling's"
        % RUNS)


# ---- memory ------------------------------------------------------------------

def stripped_size():
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "otp_demo")
        subprocess.run(["strip", "-o", p, BIN], check=True)
        return os.path.getsize(p)


def rss_after(srv, wrk):
    """Tops srv up with GET / until it has served REQUESTS requests."""
    rate = None
    while srv.requests < REQUESTS:
        left = REQUESTS - srv.requests
        secs = 3 if rate is None else min(120, left / rate + 1)
        r = wrk.measured(srv, "get.lua", seconds=secs)
        rate = r["rps"] or 1000
    return srv.rss_kib()


def memory(rundir, wrk, a):
    say("== memory")
    size = stripped_size()
    out("%-40s %d KiB (%d bytes; dynamic: mbedTLS, libcurl from the system)"
        % ("binary size, stripped", size // 1024, size))
    RESULTS["stripped_bytes"] = size

    idle = otp(rundir, "idle", base_config()).start()
    time.sleep(0.3)
    c = Client(idle.port).session()
    c.close()
    time.sleep(0.2)
    kib = idle.rss_kib()
    idle.stop()
    out("%-40s %s (defaults: THREADS 8, MAX_PENDING 1024; after one GET)"
        % ("RSS idle", mib(kib)))
    RESULTS["rss_idle_kib"] = kib

    if a is None:
        a = otp(rundir, "otp_a", bench_config(MAX_PENDING=200000)).start()
    try:
        before = getattr(a, "rss_setup", None) or a.rss_kib()
        after = rss_after(a, wrk)
        out("%-40s %s (GET / and POST /verify; %s before the first)" % (
            "RSS after %s requests" % format(a.requests, ","), mib(after),
            mib(before)))
        RESULTS["rss_after"] = {"requests": a.requests, "kib": after,
                                "before_kib": before}
    finally:
        a.stop()


# ---- start-up and shutdown ---------------------------------------------------

def start_stop(rundir):
    say("== start-up and shutdown")
    starts, stop_idle, stop_ka = [], [], []
    for i in range(5):
        port = h.free_port()
        srv = otp(rundir, "start%d" % i, base_config(
            LISTEN="127.0.0.1:%d" % port))
        # Not Server.start(): time from exec to the first 200 by polling.
        srv.spawn()
        t0 = srv.t_spawn
        t1 = None
        while time.monotonic() - t0 < 10:
            try:
                if http_get_once(port, 1.0) == 200:
                    t1 = time.monotonic()
                    break
            except OSError:
                time.sleep(0.001)
        if t1 is None:
            srv.stop()
            raise BenchError("no 200 within 10 s of start")
        starts.append((t1 - t0) * 1000)
        ka = None
        if i % 2:  # an idle keep-alive connection, as a browser leaves
            ka = socket.create_connection(("127.0.0.1", port))
            ka.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            ka.recv(65536)
        time.sleep(0.1)
        rc = srv.stop()
        took = srv.stop_seconds * 1000
        if ka is not None:
            ka.close()
        if rc != 0:
            say("warning: exit status %s after SIGTERM" % rc)
        (stop_ka if i % 2 else stop_idle).append(took)
    out("%-40s %.1f ms (median of 5; %.1f-%.1f)" % (
        "start-up to first 200", median(starts), min(starts), max(starts)))
    out("%-40s %.0f ms idle, %.0f ms with a keep-alive connection open "
        "(medians)" % ("shutdown after SIGTERM", median(stop_idle),
                       median(stop_ka)))
    RESULTS["start_ms"] = starts
    RESULTS["stop_idle_ms"] = stop_idle
    RESULTS["stop_keepalive_ms"] = stop_ka


# ---- pending codes: RSS and verify latency ------------------------------------

def fill(srv, sess, count, first):
    """Adds count records to srv: POST /request for count new numbers,
    pipelined over a few keep-alive connections."""
    cookie = "otp_sid=%s" % sess.sid

    def make(i):
        return form_request("/request", "phone=%s&csrf=%s" % (
            urllib.parse.quote(nanp(first + i)), sess.csrf), cookie)

    counts = pipeline(srv.port, make, count)
    if counts.get(200) != count:
        raise BenchError("fill %s: %s" % (srv.name, counts))


def latency(rundir, wrk):
    say("== pending codes: RSS and verify latency")
    cfg = bench_config(MAX_PENDING=100000)
    big = otp(rundir, "pending_100k", cfg).start()
    small = otp(rundir, "pending_10", cfg).start()
    try:
        # 10 sample verifications in each; in the big table they are
        # spread over it, one after each tenth of the fill.
        sb = Client(big.port).session()
        ss = Client(small.port).session()
        small_vids = [ss.request_code(nanp(4000000000 + i))
                      for i in range(10)]
        big_vids = []
        rss10k = None
        t0 = time.monotonic()
        for seg in range(10):
            big_vids.append(sb.request_code(nanp(4100000000 + seg)))
            fill(big, sb, 9999, 4200000000 + seg * 1000000)
            if seg == 0:
                time.sleep(0.2)
                rss10k = big.rss_kib()
        say("   filled 100,000 in %.1f s" % (time.monotonic() - t0))
        st = sb.request_status(nanp(4099999999))
        if st != 503:
            raise BenchError("a full table answered %d, not 503" % st)
        rss100k = big.rss_kib()
        out("%-40s %s (MAX_PENDING 100000; %s with 100,000)" % (
            "RSS with 10,000 pending codes", mib(rss10k), mib(rss100k)))
        RESULTS["rss_10k_pending_kib"] = rss10k
        RESULTS["rss_100k_pending_kib"] = rss100k
        vf = {}
        for name, cl, vids in (("big", sb, big_vids),
                               ("small", ss, small_vids)):
            vf[name] = os.path.join(rundir, "lat_%s.vids" % name)
            with open(vf[name], "w") as f:
                f.write("\n".join(vids) + "\n")
        res = {"big": [], "small": []}
        # 10 verifications x 99 wrong codes: 3 paced runs of at most 300
        # (wrk's thread:stop() stops sending, but wrk runs its -d out).
        for i in range(3):
            order = [("small", small, ss), ("big", big, sb)]
            if i % 2:
                order.reverse()
            for name, srv, cl in order:
                r = wrk.run(srv.port, "verify.lua", {
                    "BENCH_SID": cl.sid, "BENCH_CSRF": cl.csrf,
                    "BENCH_VIDS": vf[name], "BENCH_STOP": "300",
                    "BENCH_STOP_STATUS": "403", "BENCH_DELAY_MS": "7"},
                    seconds=2, threads=1, connections=1)
                res[name].append(r)
        for name, srv in (("small", small), ("big", big)):
            if srv.log_count("locked"):
                say("warning: %s: a sample verification was locked" %
                    srv.name)
        p50s = {k: median([r["p50_ms"] for r in v]) for k, v in res.items()}
        for label, k in (("10", "small"), ("100,000", "big")):
            out("%-40s p50 %s  p99 %s  max %s" % (
                "verify latency, %s pending" % label, fmt_ms(p50s[k]),
                fmt_ms(median([r["p99_ms"] for r in res[k]])),
                fmt_ms(max(r["max_ms"] for r in res[k]))))
        out("%-40s %.2f (p50 with 100,000 ÷ p50 with 10; one client, "
            "paced)" % ("  verify cost vs table size", p50s["big"] /
                        p50s["small"]))
        RESULTS["verify_latency"] = res
        sb.close()
        ss.close()
    finally:
        big.stop()
        small.stop()


# ---- fairness ----------------------------------------------------------------

def probe_waits(port, n=5, timeout=3.0, gap=0.2):
    """Times n fresh clients (connect, GET /, whole answer), in ms; inf
    for no answer within timeout."""
    waits = []
    for _ in range(n):
        t0 = time.monotonic()
        try:
            http_get_once(port, timeout)
            waits.append((time.monotonic() - t0) * 1000)
        except OSError:
            waits.append(float("inf"))
        time.sleep(gap)
    return waits


def fmt_waits(waits, timeout):
    ok = [w for w in waits if w != float("inf")]
    lost = len(waits) - len(ok)
    never = "> %g s" % timeout
    s = "median %s, max %s" % (
        fmt_ms(median(waits)) if len(ok) * 2 > len(waits) else never,
        fmt_ms(max(ok)) if not lost else never)
    if lost:
        s += " (%d of %d: no answer)" % (lost, len(waits))
    return s


def busy_and_idle_waits(srv, nconns, probes=3, timeout=2.0):
    """New-client waits while nconns keep-alive connections are busy
    (wrk, back to back) and while they are open but idle (as browsers
    leave them after a page). Also wrk's req/s during the busy probe."""
    res = {}
    p = Wrk(2, nconns).start(srv.port, "get.lua", seconds=120)
    time.sleep(1.0)
    res["busy"] = probe_waits(srv.port, n=probes, timeout=timeout)
    r = Wrk.finish(p, interrupt=True)
    res["busy_rps"] = r["rps"]
    srv.requests += r["requests"]

    waits = []
    for _ in range(probes):
        conns = []
        for _ in range(nconns):
            s = socket.create_connection(("127.0.0.1", srv.port), 5)
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            conns.append(s)
        for s in conns:  # each gets its answer, and stays open
            s.settimeout(5)
            try:
                s.recv(65536)
            except OSError:
                pass
        waits += probe_waits(srv.port, n=1, timeout=timeout, gap=0)
        for s in conns:
            s.close()
        time.sleep(0.3)
    res["idle"] = waits
    return res


def fairness(rundir):
    say("== fairness: a new client while 2 x THREADS keep-alive "
        "connections are open")
    srv = otp(rundir, "fair", bench_config(MAX_PENDING=1024)).start()
    try:
        res = busy_and_idle_waits(srv, 2 * THREADS)
    finally:
        srv.stop()
    out("%-40s %s" % ("new client wait, %d busy keep-alive" % (2 * THREADS),
                      fmt_waits(res["busy"], 2.0)))
    out("%-40s %s" % ("new client wait, %d idle keep-alive" % (2 * THREADS),
                      fmt_waits(res["idle"], 2.0)))
    RESULTS["fairness"] = res


# ---- slow connections -----------------------------------------------------------

def slow(rundir):
    """A normal client's GET / (20 tries) while slow connections (one byte
    a second each, reconnecting when dropped: tests/attack/
    slow_clients.py) are held, and otp_demo's RSS with them."""
    say("== slow connections: a normal client beside slowloris clients")
    sys.path.insert(0, os.path.join(ROOT, "tests", "attack"))
    import slow_clients as sc
    sc.raise_fd_limit()
    one = ["127.0.0.1"]
    many = ["127.0.0.%d" % (2 + i) for i in range(64)]
    rows = [("none", 0, one), ("8 from one address", 8, one),
            ("16 from one address", 16, one),
            ("40 from one address", 40, one),
            ("500 from one address", 500, one),
            ("64 from 64 addresses", 64, many)]
    res = {}
    for label, n, sources in rows:
        r = sc.measure("bench-%d-%d" % (n, len(sources)), n, sources, "head",
                       binary=BIN, rss=True)
        if r["problems"] or not r["alive"]:
            raise BenchError("slow %s: %s" % (label, r["problems"]))
        res[label] = r
        out("%-40s p50 %s, p99 %s, max %s; RSS %s (idle %s)" % (
            "normal client, %s slow" % label, fmt_ms(r["p50"] * 1000),
            fmt_ms(r["p99"] * 1000), fmt_ms(r["max"] * 1000),
            mib(r["rss_kib"]), mib(r["rss_idle_kib"])))
    RESULTS["slow"] = {k: {x: v[x] for x in ("p50", "p99", "max", "rss_kib",
                                             "rss_idle_kib", "held",
                                             "opened")}
                       for k, v in res.items()}


# ---- SMS connection reuse ------------------------------------------------------

def sms(rundir):
    say("== SMS connection reuse (local HTTPS fake of the API)")
    import fake_api  # tests/fake_api.py: counts TLS handshakes
    certs = h.ensure_certs(os.path.join(ROOT, "build", "bench", "certs"))
    fake = fake_api.FakeApi(*h.cert("server", certs), api_key="KEYbench")
    fake.start()
    cfg = bench_config(MAX_PENDING=10000, API_KEY="KEYbench",
                       FROM_NUMBER="+12025550111", SMS_PROVIDER="telnyx",
                       SMS_API_URL=fake.url,
                       SMS_CA_FILE=os.path.join(certs, "ca.pem"))
    srv = otp(rundir, "sms", cfg).start()
    try:
        c = Client(srv.port).session()
        h0 = fake.handshakes
        for i in range(100):
            c.request_code(nanp(5000000000 + i))
        seq = fake.handshakes - h0
        c.close()

        h0 = fake.handshakes
        errors = []

        def worker(k):
            try:
                cl = Client(srv.port).session()
                for i in range(100 // THREADS):
                    cl.request_code(nanp(5100000000 + k * 1000 + i))
                cl.close()
            except Exception as e:  # noqa: BLE001
                errors.append(e)

        ts = [threading.Thread(target=worker, args=(k,))
              for k in range(THREADS)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        par = fake.handshakes - h0
        nsent = (100 // THREADS) * THREADS
        if errors:
            raise BenchError("concurrent sends: %s" % errors[0])
    finally:
        srv.stop()
        fake.stop()
    out("%-40s %d sequential; %d with %d clients at once (%d sends)" % (
        "SMS API TLS handshakes per 100 sends", seq, par, THREADS, nsent))
    RESULTS["sms_handshakes"] = {"sequential_100": seq, "concurrent": par,
                                 "concurrent_sends": nsent}


# ---- main --------------------------------------------------------------------

# ---- redis -------------------------------------------------------------------

def redis_server(d):
    """redis-server on d/redis.sock, nothing saved; (process, socket)."""
    sock = os.path.join(d, "redis.sock")
    p = subprocess.Popen(
        [shutil.which("redis-server") or "/usr/bin/redis-server", "--port",
         "0", "--unixsocket", sock, "--save", "", "--appendonly", "no",
         "--dir", d, "--logfile", os.path.join(d, "redis.log")],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    for _ in range(250):
        if subprocess.run(["redis-cli", "-s", sock, "PING"],
                          capture_output=True, text=True).stdout.strip() \
                == "PONG":
            return p, sock
        time.sleep(0.02)
    p.kill()
    raise BenchError("redis-server did not answer on %s" % sock)


def redis_pair(rundir, cfg, sock):
    """Two WITH_REDIS instances on sock, sharing session.key."""
    out = []
    for name in ("redis_a", "redis_b"):
        state = os.path.join(rundir, name, "state")
        os.makedirs(state, mode=0o700)
        if out:
            shutil.copy(os.path.join(rundir, "redis_a", "state",
                                     "session.key"), state)
        out.append(Server(rundir, name, [REDIS_BIN], dict(
            cfg, STORE="unix://" + sock, STATE_DIR=state)).start())
    return out


def both(wrk, servers, script, env):
    """One wrk run against each server at once: summed req/s, the
    servers' CPU time per request."""
    c0 = [s.cpu_seconds() for s in servers]
    ps = [wrk.start(s.port, script, env) for s in servers]
    rs = [wrk.finish(p) for p in ps]
    cpu = sum(s.cpu_seconds() - c for s, c in zip(servers, c0))
    n = sum(r["requests"] for r in rs)
    return {"rps": sum(r["rps"] for r in rs), "requests": n,
            "cpu_us": cpu * 1e6 / n if n else float("nan"),
            "p50_ms": median([r["p50_ms"] for r in rs]),
            "p99_ms": max(r["p99_ms"] for r in rs)}


def redis_store(rundir, wrk):
    """POST /verify (wrong code) and POST /request through STORE=redis
    (a local redis-server on a unix socket) against the memory store,
    alternating, and two instances on that Redis at once."""
    say("== redis: STORE=redis against memory, one instance and two")
    if not os.access(REDIS_BIN, os.X_OK):
        out("redis: skipped, no %s (make build/otp_demo-redis)" % REDIS_BIN)
        return
    d = os.path.join(rundir, "redis")
    os.makedirs(d)
    rp, sock = redis_server(d)
    servers = []
    try:
        cfg = bench_config(MAX_PENDING=1000000)
        ra, rb = redis_pair(rundir, cfg, sock)
        servers += [ra, rb]
        # The memory store on a fresh server each round, as in
        # "throughput"; Redis's runs (a tenth as many requests) stay
        # within its caps on one pair.
        vids = {i: vids_env(ra, 50 + i) for i in range(RUNS + 1)}
        rows = [("POST /verify (wrong code)", alternate(
            wrk, [("memory", fresh(rundir, servers, "memory_v", BIN, cfg,
                                   vids_env)), ("redis", ra)],
            "verify.lua", lambda who, i: vids[i]))]
        rows[0][1]["two"] = [both(wrk, [ra, rb], "verify.lua", vids[RUNS])]
        rows.append(("POST /request (console)", alternate(
            wrk, [("memory", fresh(rundir, servers, "memory_r", BIN, cfg,
                                   request_env)), ("redis", ra)],
            "request.lua", lambda who, i: request_env(ra, i))))
        rows[1][1]["two"] = [both(wrk, [ra, rb], "request.lua",
                                  request_env(ra, RUNS))]
        for srv in servers:
            for word in ("rate_limited", "store", "locked", "error"):
                n = srv.log_count(word)
                if n > (1 if word == "store" else 0):
                    say("warning: %s logged %d x %s" % (srv.name, n, word))
        show_redis(rows)
    finally:
        for srv in servers:
            srv.stop()
        rp.kill()
        rp.wait()


def show_redis(rows):
    out("%-26s %10s %9s | %10s %9s %8s | %12s %8s" % (
        "", "memory r/s", "CPU/req", "redis r/s", "CPU/req", "÷memory",
        "2 x redis", "÷1 redis"))
    RESULTS["redis"] = {}
    for name, res in rows:
        m, r, t = res["memory"], res["redis"], res["two"]
        out("%-26s %10.0f %6.1f us | %10.0f %6.1f us %8.2f | %12.0f %8.2f" % (
            name, rps(m), cpu(m), rps(r), cpu(r), rps(r) / rps(m), rps(t),
            rps(t) / rps(r)))
        RESULTS["redis"][name] = dict(res, ratio=rps(r) / rps(m),
                                      two=rps(t) / rps(r))
    out("  redis: one local redis-server (unix socket, no persistence) "
        "shared by both instances;\n  2 x redis: a wrk on each instance at "
        "once, req/s summed, CPU/req of the two otp_demo processes")


def main():
    for tool in ("wrk", "strip"):
        if shutil.which(tool) is None:
            say("bench: %s not found (tools/deps.sh bench)" % tool)
            return 1
    for p in (BIN, CEILING):
        if not os.access(p, os.X_OK):
            say("bench: no executable %s" % p)
            return 1
    rundir = os.path.join(ROOT, "build", "bench", "run")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    wrk = Wrk(WRK_T, WRK_C, SECONDS)
    t0 = time.monotonic()
    load0 = loadavg()
    out("otp_demo bench: %s" % BIN)
    out("  %d CPUs, load %s at start; wrk -t%d -c%d, %g s x %d runs per "
        "endpoint and program, THREADS %d" % (
            os.cpu_count(), load0, WRK_T, WRK_C, SECONDS, RUNS, THREADS))
    out()
    a = None
    try:
        if "throughput" in ONLY:
            a = throughput(rundir, wrk)
            out()
        if "memory" in ONLY:
            memory(rundir, wrk, a)
            a = None
        if "start" in ONLY:
            start_stop(rundir)
        if "latency" in ONLY:
            latency(rundir, wrk)
        if "fairness" in ONLY:
            fairness(rundir)
        if "slow" in ONLY:
            slow(rundir)
        if "sms" in ONLY:
            sms(rundir)
        if "redis" in ONLY:
            out()
            redis_store(rundir, wrk)
    except BenchError as e:
        say("bench: %s" % e)
        return 1
    finally:
        if a is not None:
            a.stop()
    out()
    out("  load %s at end; %.0f s in all; logs in %s" % (
        loadavg(), time.monotonic() - t0, os.path.relpath(rundir, ROOT)))
    RESULTS["load"] = [load0, loadavg()]
    path = os.environ.get("BENCH_JSON")
    if path:
        with open(path, "w") as f:
            json.dump(RESULTS, f, indent=1, default=str)
    with open(os.path.join(rundir, "table.txt"), "w") as f:
        f.write("\n".join(LINES) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
