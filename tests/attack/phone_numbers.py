#!/usr/bin/env python3
"""phone_numbers.py: toll fraud through the phone field, tried as an attacker.

    python3 tests/attack/phone_numbers.py [-k SUBSTR]... [-j JOBS]

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
code, no key in the log) come from tests/harness.py.
"""

import os
import re
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402
from harness import check  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")

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
        ctx.start_server({"API_TOKEN": h.API_TOKEN})
        b = ctx.browser("A")
        for s in spellings:
            for door in ("form", "api"):
                where = "%s %r" % (door, s)
                n0, l0 = ctx.fake.count(), len(ctx.server.err_lines)
                if door == "form":
                    r = b.request_code(s)
                    got = "%s -> %d" % (where, r.status)
                    check(r.status == 400, "%s, want 400" % got)
                    check(message in h.page_text(r.body),
                          "%s: the page lacks %r: %s" % (got, message,
                                                         h.short(
                                                             h.page_text(
                                                                 r.body))))
                else:
                    r = b.api("POST", h.API, {"phone": s})
                    got = "%s -> %d %s" % (where, r.status, h.short(r.body))
                    check(r.status == 400, "%s, want 400" % got)
                    j = h.check_api_answer(got, r, {"error": code})
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
    return (name, fn)


def case_control(ctx):
    """A real-format US number still gets its code, through both doors."""
    ctx.start_fake()
    ctx.start_server({"API_TOKEN": h.API_TOKEN})
    b = ctx.browser("A")
    r = b.request_code("(201) 555-0123")
    check(r.status == 200, "form (201) 555-0123 -> %d, want 200" % r.status)
    check(ctx.fake.count() == 1, "form: %d SMS, want 1" % ctx.fake.count())
    new = ctx.collect_sms(0, b)
    check(new[-1]["json"]["to"] == "+12015550123", "SMS to %r"
          % new[-1]["json"]["to"])
    r = b.api("POST", h.API, {"phone": "+1 416 555 0123"})
    check(r.status == 201, "API +1 416 555 0123 (Canada) -> %d %s, want 201"
          % (r.status, h.short(r.body)))
    check(ctx.fake.count() == 2, "API: %d SMS in all, want 2"
          % ctx.fake.count())
    ctx.collect_sms(1)


CASES = [attack_case(*a) for a in ATTACKS]
CASES.append(("control_us_and_canada", case_control))

if __name__ == "__main__":
    sys.exit(h.main(CASES, OUT, "toll fraud through the phone field",
                    jobs=2, prefix="attack_phone_numbers_"))
