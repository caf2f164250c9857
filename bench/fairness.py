#!/usr/bin/env python3
"""bench/fairness.py: the keep-alive fairness experiment (make
bench-fairness). Not part of make bench, which prints only the current
binary's fairness lines.

civetweb gives each connection a worker thread for as long as it keeps
sending requests. With more keep-alive clients than THREADS, the rest wait:
for up to keep_alive_timeout_ms when the connections are idle (browsers),
and forever when they are busy (scripts, benchmarks, an attacker with a
few connections). otp_demo's remedy (a 50 ms keep_alive_timeout_ms and a
30 ms slice after which a busy connection is closed if a client waits for
a worker) has two -D knobs,
OTP_KEEP_ALIVE_MS and OTP_KEEP_ALIVE_SLICE_MS. This builds variants of
otp_demo.c with other values (and, for the options and code it has no knob
for, a patched copy in build/bench/fairness/src/; the real file is never
touched), and measures for each:

  - how long a new client waits while 2 x THREADS keep-alive connections
    are busy, and while they are open but idle;
  - GET / throughput with 2 x THREADS wrk connections, against the
    reference "keep-alive with enough threads" (THREADS = 2 x 8, as is);
  - GET / throughput with THREADS wrk connections (make bench's case).

Environment: FAIR_CC, FAIR_CFLAGS, FAIR_LIBS, FAIR_OBJS (mk/proof.mk sets
them from the Makefile), BENCH_SECONDS (4), BENCH_RUNS (3), FAIR_ONLY
(comma list of variant names).
"""

import os
import re
import shlex
import shutil
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the tree
from benchlib import (  # noqa: E402
    ROOT, BenchError, Server, Wrk, h, loadavg, median)
from bench import busy_and_idle_waits, fmt_waits  # noqa: E402

SECONDS = float(os.environ.get("BENCH_SECONDS") or 4)
RUNS = int(os.environ.get("BENCH_RUNS") or 3)
THREADS = 8

# Every Nth answer, whichever connection it is on, closes (an alternative
# to the time slice, tried and not chosen).
EVERY_CODE = r"""
	{
		static unsigned served;

		if (__atomic_add_fetch(&served, 1, __ATOMIC_RELAXED) %% %d == 0)
			r.close = true;
	}
"""

ANCHOR = re.compile(r"(\tif \(strncmp\(r\.path, otp->prefix, plen\) == 0\)\n"
                    r"\t\tr\.path \+= plen;\n)")

# otp_demo.c's remedy is two -D-tunable limits: OTP_KEEP_ALIVE_MS (civetweb's
# keep_alive_timeout_ms) and OTP_KEEP_ALIVE_SLICE_MS (how long a busy
# keep-alive connection may keep its worker). "Before" is both off.
NO_SLICE = "-DOTP_KEEP_ALIVE_SLICE_MS=86400000"

# name: (description, -D flags, option edits, code, THREADS)
VARIANTS = [
    ("before", "before: keep-alive 500 ms, no slice",
     ["-DOTP_KEEP_ALIVE_MS=500", NO_SLICE], {}, None, 8),
    ("threads16", "before, THREADS 16 (enough for 16 clients)",
     ["-DOTP_KEEP_ALIVE_MS=500", NO_SLICE], {}, None, 16),
    ("ka50", "keep-alive 50 ms, no slice", [NO_SLICE], {}, None, 8),
    ("ka_off", "enable_keep_alive no", [NO_SLICE],
     {"enable_keep_alive": "no"}, None, 8),
    ("as_is", "as is (keep-alive 50 ms, slice 50 ms)", [], {}, None, 8),
    ("slice25", "keep-alive 50 ms, slice 25 ms",
     ["-DOTP_KEEP_ALIVE_SLICE_MS=25"], {}, None, 8),
    ("every32", "keep-alive 50 ms, every 32nd answer closes", [NO_SLICE], {},
     EVERY_CODE % 32, 8),
]


def say(*a):
    print(*a, flush=True)


def build(tmp, name, defines, options, code):
    src = open(os.path.join(ROOT, "otp_demo.c")).read()
    if "OTP_KEEP_ALIVE_SLICE_MS" not in src:
        raise BenchError("otp_demo.c has no OTP_KEEP_ALIVE_SLICE_MS: this "
                         "experiment expects the fairness remedy's knobs")
    for opt, value in options.items():
        pat = re.compile(r'("%s",\s*)[^,\n]+' % re.escape(opt))
        src, n = pat.subn(lambda m: m.group(1) + '"%s"' % value, src)
        if n != 1:
            raise BenchError("option %s not found in server_options()" % opt)
    if code:
        src, n = ANCHOR.subn(lambda m: m.group(1) + code, src)
        if n != 1:
            raise BenchError("on_http() anchor not found")
    d = os.path.join(tmp, name)
    os.makedirs(d)
    c = os.path.join(d, "otp_demo.c")
    with open(c, "w") as f:
        f.write(src)
    shutil.copy(os.path.join(ROOT, "otp_demo.h"), d)
    shutil.copy(os.path.join(ROOT, "numbering.h"), d)
    binary = os.path.join(d, "otp_demo")
    cc = shlex.split(os.environ.get("FAIR_CC") or "cc")
    cflags = shlex.split(os.environ.get("FAIR_CFLAGS") or
                         "-O2 -g -std=c11 -D_GNU_SOURCE -Icivetweb/include "
                         "-Ibuild")
    # -Werror off for patched copies; OTP_VERSION's quotes do not survive
    # the trip through make and the environment, so it is set here.
    cflags = [f for f in cflags if f != "-Werror" and
              not f.startswith("-DOTP_VERSION")] + ['-DOTP_VERSION="fair"']
    objs = shlex.split(os.environ.get("FAIR_OBJS") or "build/civetweb.o")
    libs = shlex.split(os.environ.get("FAIR_LIBS") or
                       "-lmbedtls -lmbedx509 -lmbedcrypto -lcurl -lpthread")
    subprocess.run(cc + cflags + defines + ["-o", binary, c] + objs + libs,
                   cwd=ROOT, check=True)
    with open(os.path.join(d, "diff"), "w") as f:
        subprocess.run(["diff", "-u", os.path.join(ROOT, "otp_demo.c"), c],
                       stdout=f)
    return binary


def main():
    only = set(filter(None, (os.environ.get("FAIR_ONLY") or "").split(",")))
    variants = [v for v in VARIANTS if not only or v[0] in only]
    rundir = os.path.join(ROOT, "build", "bench", "fairness")
    shutil.rmtree(rundir, ignore_errors=True)
    os.makedirs(rundir)
    say("fairness: %d CPUs, load %s; wrk -t2, %g s x %d runs" % (
        os.cpu_count(), loadavg(), SECONDS, RUNS))
    tmp = os.path.join(rundir, "src")  # patched copies, never the real file
    servers = {}
    try:
        for name, desc, defines, opts, code, threads in variants:
            b = build(tmp, name, defines, opts, code)
            cfg = dict(h.CONSOLE, THREADS=threads, MAX_PENDING=1024,
                       **h.LIMITS_OFF)
            servers[name] = Server(rundir, name, [b], cfg).start()
        waits = {}
        for name, *_ in variants:
            say("== %s: waits" % name)
            waits[name] = busy_and_idle_waits(servers[name], 2 * THREADS)
        tput = {n: {"c16": [], "c8": []} for n, *_ in variants}
        for i in range(RUNS):
            order = variants if i % 2 == 0 else variants[::-1]
            for name, *_ in order:
                say("== round %d: %s" % (i + 1, name))
                for key, conns in (("c16", 2 * THREADS), ("c8", THREADS)):
                    r = Wrk(2, conns, SECONDS).measured(servers[name],
                                                        "get.lua")
                    tput[name][key].append(r)
    finally:
        for s in servers.values():
            s.stop()
    ref = median([r["rps"] for r in tput.get("threads16", {}).get("c16", [])
                  ]) if "threads16" in tput else float("nan")
    say("")
    say("load %s at end" % loadavg())
    say("%-54s | %-36s | %-30s | %9s %5s %8s | %9s %8s" % (
        "variant (THREADS 8 unless said)", "new client, 16 busy keep-alive",
        "new client, 16 idle keep-alive", "req/s c16", "÷ref", "CPU/req",
        "req/s c8", "CPU/req"))
    for name, desc, *_ in variants:
        w = waits[name]
        c16 = median([r["rps"] for r in tput[name]["c16"]])
        c8 = median([r["rps"] for r in tput[name]["c8"]])
        say("%-54s | %-36s | %-30s | %9.0f %5.2f %5.1f us | %9.0f %5.1f us" % (
            desc, fmt_waits(w["busy"], 2.0), fmt_waits(w["idle"], 2.0),
            c16, c16 / ref,
            median([r["cpu_us"] for r in tput[name]["c16"]]), c8,
            median([r["cpu_us"] for r in tput[name]["c8"]])))
    say("ref = 'before, THREADS 16' at 16 connections (keep-alive, enough "
        "threads). Sources and diffs: %s/*/" % tmp)
    return 0


if __name__ == "__main__":
    sys.exit(main())
