"""tests/attack/common.py: what every attack test file shares.

An attack file registers functions with @case; each runs against the real
binary (OTP_BIN) with its own server, fake SMS API and directory, through
tests/integration.py's Ctx/Server/Browser, so the same teardown checks
apply: a clean exit on SIGTERM and no secret or full number in the log.
Each file ends with `sys.exit(common.main())` and prints one line per
case and "N passed, M failed".
"""
import argparse
import concurrent.futures
import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.dont_write_bytecode = True
import integration as it  # noqa: E402

CASES = []
check = it.check


def case(fn):
    """Registers fn(ctx) as a case named attack_<file>_<fn name>."""
    CASES.append((fn.__name__, fn))
    return fn


def add(name, fn):
    """Registers fn(ctx) as the case attack_<file>_<name>."""
    CASES.append((name, fn))


def xff(addr):
    """Headers a trusted proxy in front would add for client addr."""
    return {"X-Forwarded-For": addr}


def sms_to(ctx, phone):
    """How many SMS the fake API was asked to send to phone."""
    return sum(1 for rec in ctx.fake.requests
               if isinstance(rec.get("json"), dict) and
               rec["json"].get("to") == phone)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("-k", action="append", default=[])
    ap.add_argument("-j", type=int, default=2)
    a = ap.parse_args()
    prefix = "attack_" + os.path.splitext(
        os.path.basename(sys.argv[0]))[0] + "_"
    cases = [{"name": prefix + name, "kind": "code", "fn": fn}
             for name, fn in CASES if not a.k or any(k in name for k in a.k)]
    it.ensure_certs()
    passed = failed = 0

    def stopped(signum, frame):
        it.kill_live()
        print("interrupted by signal %d" % signum, flush=True)
        print("%d passed, %d failed" % (passed, failed + 1), flush=True)
        os._exit(1)
    signal.signal(signal.SIGINT, stopped)
    signal.signal(signal.SIGTERM, stopped)
    with concurrent.futures.ThreadPoolExecutor(max(1, a.j)) as ex:
        futs = {ex.submit(it.run_case, c): c for c in cases}
        for f in concurrent.futures.as_completed(futs):
            name, err = futs[f]["name"], f.result()
            if err is None:
                passed += 1
                print("ok %s" % name, flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, " ".join(str(err).split())),
                      flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0
