#!/usr/bin/env python3
"""phone_numbers.py: toll fraud through the phone field, tried as an attacker.

    python3 tests/attack/phone_numbers.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library only.

Issue 10, finding 5: with the default config (COUNTRY_CODE '+1', no
ALLOWED_COUNTRY_CODES) an attacker could have codes sent to Jamaica
(+1876...), to a premium-rate line (+1900...), to numbers no country has
(+1234567), and to whatever '1-876-555-0100' or '0044...' became once
COUNTRY_CODE was put in front. Each was a paid send.

Each case sends one number, in every spelling an attacker would try, to
both doors (the form, POST /request, and the JSON API) of the real binary
with the default config, and wants for each: 400, the refusal's message
and API error code, one "refused to=<masked> reason=<why>" log line, and
no call at all reaching the local fake SMS API. A control case checks that
a legitimate number still gets its SMS, so a server that refused
everything would fail.

The Browser, Server and Ctx helpers (and the log scan: no full number, no
code, no key in the log) come from tests/integration.py.
"""

import argparse
import concurrent.futures
import os
import re
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
sys.dont_write_bytecode = True      # no __pycache__ in the tree

try:
    import integration as it  # noqa: E402
except Exception as e:  # noqa: BLE001
    print("FAIL setup: cannot import tests/integration.py (%s: %s)"
          % (type(e).__name__, e))
    print("0 passed, 1 failed")
    sys.exit(1)

OUT = os.path.join(ROOT, "tests", "out", "attack", "phone_numbers")
it.OUT = OUT                        # Ctx() makes its directory under OUT
it.CERTS = os.path.join(OUT, "certs")
Fail, check = it.Fail, it.check

# What each refusal says: (log reason, API error code, form message).
WHY = {
    "country": ("country", "country_not_allowed",
                "Sorry, we can't send codes to that country."),
    "range": ("range", "phone_range",
              "We can't send codes to premium-rate, toll-free or other "
              "numbers that can't receive SMS."),
    "length": ("length", "phone_length",
               "That number has too many or too few digits for its "
               "country."),
    "invalid": ("invalid", "invalid_phone",
                "Please enter a valid phone number"),
}

# name, why it must be refused, the spellings an attacker would send.
ATTACKS = [
    ("jamaica", "country",
     ["+18765550100", "+1 (876) 555-0100", "+1.876.555.0100",
      "1-876-555-0100", "1 876 555 0100", "18765550100",
      "011 1 876 555 0100", "001 876 555 0100"]),
    ("premium_900", "range",
     ["+19005550100", "+1 900 555 0100", "1-900-555-0100",
      "(900) 555-0100", "9005550100"]),
    ("premium_976_exchange", "range",
     ["+12019760100", "(201) 976-0100", "1 201 976 0100"]),
    ("toll_free", "range",
     ["+18005550100", "(888) 555-0100", "1-833-555-0100", "8775550100"]),
    ("too_short", "length",
     ["+1234567", "+1 234 5678", "234-5678", "+1 201 555 012"]),
    ("too_long", "length",
     ["+1 555 123 45678", "+1 201 555 01234", "1 201 555 01234"]),
    ("uk_via_00", "country",
     ["0044 20 7946 0958", "0044 7700 900123", "00 44 20 7946 0958"]),
    ("uk_via_011", "country",
     ["011 44 20 7946 0958", "011-44-7700-900123"]),
    ("global_premium_979", "range",
     ["+979 1234 5678", "00 979 1234 5678"]),
]


def log_refusals(ctx, start):
    """The "refused to=... reason=..." lines since stderr line start."""
    lines = ctx.server.err_lines[start:]
    return [l for l in lines if re.search(r"\brefused to=", l)]


def attack_case(name, why, spellings):
    reason, code, message = WHY[why]

    def fn(ctx):
        ctx.start_fake()
        ctx.start_server({"API_TOKEN": it.API_TOKEN})
        b = ctx.browser("A")
        for s in spellings:
            for door in ("form", "api"):
                where = "%s %r" % (door, s)
                n0, l0 = ctx.fake.count(), len(ctx.server.err_lines)
                if door == "form":
                    r = b.request_code(s)
                    got = "%s -> %d" % (where, r.status)
                    check(r.status == 400, "%s, want 400" % got)
                    check(message in it.page_text(r.body),
                          "%s: the page lacks %r: %s" % (got, message,
                                                         it.short(
                                                             it.page_text(
                                                                 r.body))))
                else:
                    ctx.note_phone(s)
                    r = it.api_call(ctx, b, {"call": ("POST", it.API,
                                                      {"phone": s})}, {})
                    got = "%s -> %d %s" % (where, r.status, it.short(r.body))
                    check(r.status == 400, "%s, want 400" % got)
                    j = it.check_api_answer(got, r, {"error": code})
                    check(j is not None, "%s: no JSON" % got)
                check(ctx.fake.count() == n0, "%s: %d call(s) reached the "
                      "SMS API" % (got, ctx.fake.count() - n0))
                m = ctx.server.wait_log(r"\brefused to=\S+ reason=%s\b"
                                        % reason, l0, 2.0)
                check(m is not None, "%s: no 'refused ... reason=%s' log "
                      "line (got %s)" % (got, reason,
                                         log_refusals(ctx, l0) or "none"))
        check(ctx.fake.count() == 0, "%d SMS sent in all"
              % ctx.fake.count())
    return ("attack_" + name, fn)


def case_control(ctx):
    """A real-format US number still gets its code, through both doors."""
    ctx.start_fake()
    ctx.start_server({"API_TOKEN": it.API_TOKEN})
    b = ctx.browser("A")
    r = b.request_code("(201) 555-0123")
    check(r.status == 200, "form (201) 555-0123 -> %d, want 200" % r.status)
    check(ctx.fake.count() == 1, "form: %d SMS, want 1" % ctx.fake.count())
    new = ctx.collect_sms(0, b)
    check(new[-1]["json"]["to"] == "+12015550123", "SMS to %r"
          % new[-1]["json"]["to"])
    r = it.api_call(ctx, b, {"call": ("POST", it.API,
                                      {"phone": "+1 416 555 0123"})}, {})
    check(r.status == 201, "API +1 416 555 0123 (Canada) -> %d %s, want 201"
          % (r.status, it.short(r.body)))
    check(ctx.fake.count() == 2, "API: %d SMS in all, want 2"
          % ctx.fake.count())
    ctx.collect_sms(1)


CASES = [attack_case(*a) for a in ATTACKS] + [("control_us_and_canada",
                                               case_control)]


def run_case(name, fn):
    ctx = it.Ctx(name)
    failed = None
    try:
        fn(ctx)
    except Fail as e:
        failed = str(e)
    except Exception as e:  # noqa: BLE001 - a test bug is a failure too
        with open(os.path.join(ctx.dir, "traceback.txt"), "w") as f:
            f.write(traceback.format_exc())
        failed = "%s: %s (traceback in %s)" % (
            type(e).__name__, e, os.path.relpath(ctx.dir, ROOT))
    try:
        ctx.finish(failed is not None)
    except Fail as e:
        failed = str(e)
    return failed


def main():
    ap = argparse.ArgumentParser(description="phone number attack tests")
    ap.add_argument("-k", action="append", default=[],
                    help="run only cases whose name contains SUBSTR")
    ap.add_argument("-j", type=int, default=4, help="parallel cases (4)")
    ap.add_argument("-l", "--list", action="store_true", help="list cases")
    a = ap.parse_args()
    cases = [(n, f) for n, f in CASES if not a.k or any(k in n for k in a.k)]
    if a.list:
        for n, _ in cases:
            print(n)
        return 0
    if not (os.path.isfile(it.BIN) and os.access(it.BIN, os.X_OK)):
        print("FAIL setup: no executable %s (set OTP_BIN or run make)"
              % it.BIN)
        print("0 passed, 1 failed")
        return 1
    os.makedirs(OUT, exist_ok=True)
    it.ensure_certs()
    passed = failed = 0
    with concurrent.futures.ThreadPoolExecutor(max(1, a.j)) as ex:
        futs = {ex.submit(run_case, n, f): n for n, f in cases}
        for fut in concurrent.futures.as_completed(futs):
            name, err = futs[fut], fut.result()
            if err is None:
                passed += 1
                print("ok %s" % name, flush=True)
            else:
                failed += 1
                print("FAIL %s: %s" % (name, " ".join(err.split())),
                      flush=True)
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
