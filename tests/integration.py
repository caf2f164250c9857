#!/usr/bin/env python3
"""integration.py: run the real otp_demo against a local HTTPS fake of the
Telnyx API and check what a browser sees and what the SMS API receives.

    python3 tests/integration.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library only.

Each case gets its own fake API (tests/fake_api.py, own port, own counters)
and its own server process (LISTEN 127.0.0.1:0, config file in its own
directory under tests/out/integration/NAME/, with the server's stderr and
stdout kept there). Most cases are rows of a table (CASES): config
overrides plus steps of request / expected status / body / SMS calls, JSON
API calls ("call" steps; every answer is checked for the security headers
and, if an error, the {"error": {"code", "message"}} shape) and "do" steps
(SIGHUP, file changes). The rest are functions (for threads, raw sockets,
restarts, TLS listeners and timing bounds).

After every case: the server must exit 0 on SIGTERM, and its log (stderr;
every log of a restarted case) must not contain the API key, the API
token, any code that was sent, or any full phone number that was
submitted.

Prints "ok NAME", "FAIL NAME: reason" or "skip NAME: reason" (the local
system cannot run it) per case, then "N passed, M failed[, K skipped]".
Exit status 1 if anything failed.

No timing assertions except generous upper bounds: expiry is tested by
waiting past a short CODE_TTL, never by measuring speed.

The case context (Ctx: fake API, server, browsers, log scan), the config
writer and the runner are tests/harness.py's; the table is this file's.
"""

import calendar
import concurrent.futures
import hashlib
import hmac
import http.client
import json
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
import urllib.parse
import warnings

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
from harness import (  # noqa: E402
    API, API_KEY, API_TOKEN, BIN, FORM, FROM, PHONE, PHONE2, PHONE2_E164,
    CODE_GONE, EXPIRED, PHONE_E164, ROOT, RUN_TIMEOUT, SECURITY_HEADERS,
    SEND_FAILED, SENT_AGAIN, SENT_NEW, TOO_MANY, UK, WRONG_CODE, Browser, Fail,
    Resp, Skip, cert, check,
    check_api_answer, check_index_form, check_security_headers, clean_env,
    config_text, insecure_tls, page_kind, parse_inputs, raw_exchange,
    run_once, short, write_config, wrong_code)
import harness  # noqa: E402

# OTP_TEST_STORE=redis (tests/run.sh's integration_redis): logs apart.
OUT = os.path.join(ROOT, "tests", "out", "integration" + (
    "" if harness.TEST_STORE == "memory" else "_" + harness.TEST_STORE))
CERTS = os.path.join(OUT, "certs")     # main() makes them
ID_RE = re.compile(r"[0-9a-f]{40}")         # an API verification id


# ---- table-driven steps ------------------------------------------------------

def expand(ctx, b, s):
    """Placeholders in step strings: {code} {code_lower} {wrong}
    {code:NAME} {origin} {csrf} {csrf:NAME} {csrf_q} {saved:LABEL}
    {hidden:NAME} (that input's value on the browser's last page)."""
    if callable(s):
        return s(ctx, b)
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
        if key == "hidden":
            return b.hidden(arg) or ""
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
    if "fields" in st:
        kw["fields"] = {k: expand(ctx, b, v)
                        for k, v in st["fields"].items()}
    r = None

    if "sleep" in st:
        time.sleep(st["sleep"])
    elif "do" in st:
        r = st["do"](ctx, b)
    elif "call" in st:
        r = api_call(ctx, b, st, hdrs)
    elif "mode" in st:
        ctx.fake.mode = st["mode"]
    elif "set_cookie" in st:
        for k, v in st["set_cookie"].items():
            v = expand(ctx, b, v)     # a callable(ctx, b) gives the value
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
    new = ctx.collect_sms(n0, b if "request" in st or "call" in st
                          else None)
    if st.get("console"):
        got = ctx.server.wait_stdout(r"^SMS to (\S+): (.*)$", out0, 5.0)
        check(got, "%s: no 'SMS to NUMBER: TEXT' line on stdout within 5 s "
              "(stdout: %s)" % (where, ctx.server.out_lines[-2:]))
        _, m = got
        m2 = re.match(ctx.message_regex(), m.group(2))
        check(m2, "%s: console SMS text %r does not match MESSAGE"
              % (where, m.group(2)))
        b.code = next(g for g in m2.groups() if g)
        ctx.note_sms(m.group(2), b.code)
        if "console_text" in st:
            check(re.search(st["console_text"], m.group(2)), "%s: console "
                  "SMS %r does not match %r" % (where, m.group(2),
                                               st["console_text"]))
        if "console_to" in st:
            check(m.group(1) == st["console_to"], "%s: console SMS to %s, "
                  "want %s" % (where, m.group(1), st["console_to"]))

    check(ctx.server.alive(), "%s: server died (exit %s)"
          % (where, ctx.server.proc.poll()))
    expect_step(ctx, b, where, st, r, new)


def api_call(ctx, b, st, hdrs):
    """A JSON API step: "call": (METHOD, PATH[, BODY]). BODY a dict is
    sent as JSON (its string values expanded), a str as it is. "auth" is
    the Authorization header (default the right bearer token; None: none),
    "ctype" the Content-Type (default application/json; None: none)."""
    method, path = st["call"][0], expand(ctx, b, st["call"][1])
    body = st["call"][2] if len(st["call"]) > 2 else None
    if isinstance(body, dict):
        body = {k: expand(ctx, b, v) for k, v in body.items()}
    elif body is not None:
        body = expand(ctx, b, body)
    return b.api(method, path, body, st.get("auth", "Bearer " + API_TOKEN),
                 st.get("ctype", "application/json"), hdrs)


def metrics_values(text):
    """{'name{labels}': value} of a Prometheus text answer."""
    out = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, v = line.rpartition(" ")
            try:
                out[name] = float(v)
            except ValueError:
                out[name] = v
    return out


def step_label(st):
    for k in ("get", "request", "verify", "post", "method", "call", "sleep",
              "mode", "set_cookie", "save_cookie", "do"):
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
    for name, want in st.get("inputs", {}).items():
        v = parse_inputs(r.body).get(name, {}).get("value")
        want = expand(ctx, b, want)
        check(v == want, "%s: input %s has value %r, want %r"
              % (got, name, v, want))
    if "call" in st:
        j = check_api_answer(got, r, st)
        if "json_keys" in st:
            check(sorted(j or {}) == sorted(st["json_keys"]),
                  "%s: JSON keys %s, want %s" % (got, sorted(j or {}),
                                                 sorted(st["json_keys"])))
        for k, want in st.get("json", {}).items():
            check(j is not None and k in j, "%s: no %r in %s"
                  % (got, k, short(r.body)))
            if isinstance(want, re.Pattern):
                check(want.fullmatch(str(j[k])), "%s: %s is %r, want /%s/"
                      % (got, k, j[k], want.pattern))
            else:
                want = expand(ctx, b, want)
                check(j[k] == want, "%s: %s is %r, want %r"
                      % (got, k, j[k], want))
        if "save_id" in st:
            check(j is not None and isinstance(j.get("id"), str),
                  "%s: no id to save" % got)
            ctx.saved[st["save_id"]] = j["id"]
    if "body_is" in st:
        check(r.body == st["body_is"], "%s: body %r, want %r"
              % (got, r.body, st["body_is"]))
    if "metrics" in st:
        vals = metrics_values(r.body.decode("utf-8", "replace"))
        with open(os.path.join(ctx.dir, "metrics.txt"), "a") as f:
            f.write(r.body.decode("utf-8", "replace") + "\n")
        for k, want in st["metrics"].items():
            check(k in vals, "%s: no series %s in /metrics" % (got, k))
            check(vals[k] == want, "%s: %s is %s, want %s"
                  % (got, k, vals[k], want))
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

def take_code(ctx, b):
    """A "do" step: the last code sent goes to browser b (a step that is
    not a request, such as POST /resend, does not give it one)."""
    ctx.collect_sms(0, b)


SMS_DEFAULT = {"to": PHONE_E164, "from": FROM,
               "text": r"^Your token is [0-9A-F]{6}$"}


def tutorial_text(ctx):
    return ("API_KEY='%s'\nFROM_NUMBER='%s'\nDEBUG=True\nCOUNTRY_CODE='+1'\n"
            "TOKEN_LENGTH=4\n" % (API_KEY, FROM))


def tutorial_env(ctx):
    return {"OTP_LISTEN": "127.0.0.1:0", "OTP_SMS_API_URL": ctx.fake.url,
            "OTP_SMS_CA_FILE": ctx.cert("ca")[0]}


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
SID = r"^otp_sid=[0-9a-f]{64}(;|$)"  # an id and its MAC

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


def with_vid(vid, *steps):
    """Each step after setting the otp_vid cookie to vid (a later step's
    own cookie may replace it): a step list's part."""
    return [x for step in steps for x in ({"set_cookie": {"otp_vid": vid}},
                                          step)]


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
          "cookie": {"otp_vid": STRICT + r"(?=.*; Max-Age=360(;|$))"
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
         {"verify": "{code}", "status": 403, "has": [CODE_GONE],
          "page": "index", "lacks": ["Verified"], "what": "reuse the code"},
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"verify": "{code}", "status": 403, "has": [CODE_GONE],
          "what": "reuse with the old otp_vid cookie"},
         {"set_cookie": {"otp_sid": "{saved:sid}", "otp_vid": "{saved:vid}"}},
         {"verify": "{code}", "status": 403, "lacks": ["Verified"],
          "what": "replay with the old otp_sid + otp_vid"},
     ]},

    # The handle outlives the code by the tombstone's 60 s, so that an
    # expired code is told apart and replaced without retyping. Waiting
    # longer than CODE_TTL (never exactly) keeps this true on a loaded
    # machine: only a 60 s stall would lose the tombstone.
    {"name": "expired_code", "config": {"CODE_TTL": 2, "RESEND_INTERVAL": 1},
     "steps": [
        {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT,
         "has": ["The code expires in 2 seconds."],
         "cookie": {"otp_vid": r"Max-Age=62(;|$)"}},
        {"sleep": 3.5},
        {"verify": "{code}", "status": 403, "has": [EXPIRED,
         "+1 (201) 555-0123", "Send a new code"], "lacks": [WRONG_CODE],
         "page": "again"},
        {"verify": "{code}", "status": 403, "has": [EXPIRED],
         "what": "still expired, not counted as wrong"},
        {"post": "/resend", "status": 200, "api": 1, "sms": SMS_DEFAULT,
         "page": "verify", "has": [SENT_NEW, "+1 (201) 555-0123"],
         "what": "Send a new code: the same number, not retyped"},
        {"do": take_code},
        {"verify": "{code}", "status": 200, "page": "success",
         "what": "the new code verifies"},
    ]},

    {"name": "wrong_code", "steps": [
        {"request": PHONE, "status": 200, "api": 1,
         "has": ["The code expires in 5 minutes."]},
        {"verify": "{wrong}", "status": 403, "page": "verify",
         "has": ["Wrong code. 4 tries left.", "+1 (201) 555-0123"]},
        {"verify": "ZZZZZZ", "status": 403, "has": [
            "Wrong code. 3 tries left."]},
        {"verify": "", "status": (400, 403), "lacks": ["Verified"]},
        {"verify": "{code}", "status": 200, "page": "success",
         "what": "the right code still works after 3 wrong ones"},
    ]},

    {"name": "code_bound_to_browser", "config": {"TOKEN_LENGTH": 8},
     "steps": [
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"b": "B", "request": PHONE2, "status": 200, "api": 1},
         {"b": "B", "verify": "{code:A}", "status": 403,
          "has": ["Wrong code. 4 tries left.", "+1 201-555-0187"],
          "lacks": ["555-0123"], "what": "B submits A's code"},
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
        {"request": "201-CALL-NOW", "status": 400, "api": 0},
        {"request": "12345", "status": 400, "api": 0, "what": "too short"},
        {"request": "5" * 30, "status": 400, "api": 0, "what": "too long"},
        {"request": '2015550123","to":"+442071838750', "status": 400,
         "api": 0, "what": "quote injection"},
        {"request": "201555012\"3", "status": 400, "api": 0},
        {"request": "", "status": 400, "api": 0, "what": "empty phone"},
        {"post": "/request", "form": {"phone": "5" * 1100}, "status": 413,
         "api": 0, "what": "body > 1 KiB"},
        {"post": "/request", "body": '{"phone":"2015550123"}',
         "ctype": "application/json", "status": 415, "api": 0},
        {"post": "/request", "body": "phone=2015550123&csrf={csrf_q}",
         "ctype": "text/plain", "status": 415, "api": 0},
        {"post": "/request", "body": "--x\r\nContent-Disposition: form-data;"
         " name=\"phone\"\r\n\r\n2015550123\r\n--x--\r\n",
         "ctype": "multipart/form-data; boundary=x", "status": 415,
         "api": 0},
        {"post": "/request", "body": "phone=%ZZ20155501&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "bad percent-encoding %ZZ"},
        {"post": "/request", "body": "phone=2015550123%4&csrf={csrf_q}",
         "status": 400, "api": 0, "what": "truncated %4"},
        {"post": "/request", "body": "phone=201555%000123&csrf={csrf_q}",
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
         {"verify": "{wrong}", "status": 403, "has": [
             "Wrong code. 2 tries left."]},
         {"verify": "{wrong}", "status": 403, "has": [
             "Wrong code. 1 try left."]},
         {"verify": "{wrong}", "status": 403, "has": [TOO_MANY,
          "Send a new code", "+1 (201) 555-0123"], "lacks": [WRONG_CODE],
          "page": "again", "what": "MAX_ATTEMPTS-th wrong code"},
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
         {"verify": "{wrong}", "status": 403, "has": [
             "Wrong code. 2 tries left."]},
         {"verify": "{wrong}", "status": 403, "has": [
             "Wrong code. 1 try left."]},
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
          "page": "again",
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
         {"b": "D", "request": "(201) 555 0123", "status": 429, "api": 0,
          "what": "same number, other spelling"},
         {"b": "E", "request": PHONE2, "status": 200, "api": 1,
          "what": "another number is fine"},
     ]},

    {"name": "sms_per_ip",
     "config": {"SMS_PER_IP_PER_HOUR": 3},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 200, "api": 1},
         {"b": "D", "request": "2025550104", "status": 429, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
         {"b": "E", "request": "2025550105", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.9",
                      "X-Real-IP": "203.0.113.9",
                      "Forwarded": "for=203.0.113.9"},
          "what": "spoofed X-Forwarded-For with no TRUSTED_PROXY"},
     ]},

    {"name": "trusted_proxy_xff",
     "config": {"TRUSTED_PROXY": "127.0.0.1", "SMS_PER_IP_PER_HOUR": 1},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.1"}},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1,
          "headers": {"X-Forwarded-For": "203.0.113.2"}},
         {"b": "C", "request": "2025550103", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "203.0.113.1"},
          "what": "same client behind the proxy"},
         {"b": "D", "request": "2025550104", "status": 429, "api": 0,
          "headers": {"X-Forwarded-For": "198.51.100.9, 203.0.113.2"},
          "what": "spoofed first entry; the proxy's (last) entry counts"},
         {"b": "E", "request": "2025550105", "status": 200, "api": 1,
          "what": "no X-Forwarded-For: the proxy's own address"},
     ]},

    # NETWORK_SHARE=100: every test client is one network (127.0.0.1),
    # and these are about the global caps (tests/attack/limits.py has
    # the shares).
    {"name": "sms_per_hour_global",
     "config": {"SMS_PER_HOUR": 3, "NETWORK_SHARE": 100},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 200, "api": 1},
         {"b": "D", "request": "2025550104", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}, "secure": True},
         {"get": "/", "status": 200},
     ]},

    {"name": "sms_per_day_global",
     "config": {"SMS_PER_DAY": 2, "NETWORK_SHARE": 100},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
     ]},

    {"name": "max_pending_table_full",
     "config": {"MAX_PENDING": 2},
     "steps": [
         {"b": "A", "request": "2025550101", "status": 200, "api": 1},
         {"b": "B", "request": "2025550102", "status": 200, "api": 1},
         {"b": "C", "request": "2025550103", "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
         {"b": "A", "verify": "{code}", "status": 200,
          "what": "existing codes still verify"},
         {"sleep": 1.1},
         {"b": "C", "request": "2025550103", "status": 200, "api": 1,
          "what": "a refusal for a full table counted nothing: no "
                  "RESEND_INTERVAL once a slot is free"},
     ]},

    {"name": "allowed_country_codes", "steps": [
        {"request": UK, "status": 400, "api": 0, "page": "index",
         "has": ['class="error"']},
        {"request": "+44 20 7183 8750", "status": 400, "api": 0},
        {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT},
    ]},

    {"name": "allowed_country_codes_iso",
     "config": {"ALLOWED_COUNTRY_CODES": "US, JM"}, "steps": [
         {"b": "A", "request": "1-876-555-0100", "status": 200, "api": 1,
          "sms": {"to": "+18765550100"}, "what": "Jamaica, listed"},
         {"b": "B", "request": "(416) 555-0123", "status": 400, "api": 0,
          "has": ["Sorry, we can't send codes to that country."],
          "what": "Canada, not listed"},
         {"b": "C", "request": "+1 787 555 0100", "status": 400, "api": 0,
          "what": "Puerto Rico, not listed"},
         {"b": "D", "request": PHONE, "status": 200, "api": 1,
          "sms": SMS_DEFAULT},
     ]},

    {"name": "country_code_44_national_numbers",
     "config": {"COUNTRY_CODE": "+44"}, "steps": [
         {"b": "A", "request": "07700 900123", "status": 200, "api": 1,
          "sms": {"to": "+447700900123"}, "what": "trunk prefix dropped"},
         {"b": "B", "request": "020 7946 0958", "status": 200, "api": 1,
          "sms": {"to": "+442079460958"}},
         {"b": "C", "request": "07700 9001234", "status": 400, "api": 0,
          "has": ["That number has too many or too few digits for its "
                  "country."]},
         {"b": "E", "request": "+1 201 555 0123", "status": 400, "api": 0,
          "has": ["Sorry, we can't send codes to that country."]},
     ]},

    {"name": "allowed_country_codes_list",
     "config": {"ALLOWED_COUNTRY_CODES": "+1,+44"}, "steps": [
         {"b": "A", "request": UK, "status": 200, "api": 1,
          "sms": {"to": UK}},
         {"b": "B", "request": "+33142685300", "status": 400, "api": 0},
         {"b": "C", "request": PHONE, "status": 200, "api": 1,
          "sms": SMS_DEFAULT},
     ]},

    # Without a record of its own (no otp_vid, a forged one, another
    # session's, one whose record ended), /verify and /resend answer
    # byte for byte alike: the phone form, nothing sent, nothing told.
    # With one, the page says what happened to it, which tells a session
    # only of its own code.
    {"name": "failures_without_record_identical",
     "config": {"MAX_ATTEMPTS": 10, "VERIFY_PER_IP_PER_HOUR": 100,
                "RESEND_INTERVAL": 1},
     "steps": [
         {"b": "B", "request": PHONE2, "status": 200, "api": 1},
         {"b": "B", "save_cookie": ("otp_vid", "vidB")},
         {"request": PHONE, "status": 200, "api": 1},
         {"save_cookie": ("otp_vid", "vid")},
         {"set_cookie": {"otp_vid": None}},
         {"verify": "{code}", "status": 403, "save": "gone", "page": "index",
          "has": [CODE_GONE], "lacks": ["555-0123", "555-0187"],
          "no_live_cookie": ["otp_vid"], "what": "no otp_vid"},
         {"sleep": 1.3},
         {"post": "/resend", "status": 403, "api": 0, "same": "gone",
          "what": "resend, no otp_vid"},
         {"get": "/resend", "status": 403, "api": 0, "same": "gone",
          "what": "the page, no otp_vid"},
         *with_vid("f" * 40,
                   {"verify": "{code}", "status": 403, "same": "gone",
                    "what": "a forged otp_vid"},
                   {"post": "/resend", "status": 403, "api": 0,
                    "same": "gone", "what": "resend, a forged otp_vid"}),
         {"set_cookie": {"otp_vid": lambda ctx, b: ctx.saved["vid"][:8] +
                         "0" * 32}},
         {"post": "/resend", "status": 403, "api": 0, "same": "gone",
          "what": "resend, the right slot with a forged id"},
         *with_vid("{saved:vidB}",
                   {"verify": "{code:B}", "status": 403, "same": "gone",
                    "what": "B's otp_vid and B's code in A's session"},
                   {"post": "/resend", "status": 403, "api": 0,
                    "same": "gone",
                    "what": "resend with B's otp_vid in A's session"},
                   {"get": "/resend", "status": 403, "same": "gone",
                    "what": "the page with B's otp_vid in A's session"}),
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"verify": "{wrong}", "status": 403, "has": [
             "Wrong code. 9 tries left."], "what": "A's own handle back"},
         {"verify": "{code}", "status": 200, "page": "success"},
         {"set_cookie": {"otp_vid": "{saved:vid}"}},
         {"post": "/resend", "status": 403, "api": 0, "page": "index",
          "has": [CODE_GONE], "what": "a stale handle: verified, and "
          "the session renewed"},
         {"b": "B", "verify": "{code}", "status": 200, "page": "success",
          "what": "B's code was never touched"},
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

# ---- the JSON API ------------------------------------------------------------

API_ON = {"API_TOKEN": API_TOKEN}
ZERO_ID = "0" * 40      # well-formed, never issued (id bytes all zero)
CREATED_KEYS = ["id", "status", "to", "channel", "created_at", "expires_at",
                "expires_in", "resend_after"]
RFC3339_UTC = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                         r"[0-9]{2}Z")
BY_PHONE = API + "/by_phone_number/check"
PHONE2E164_SPACED = "+1 201-555-0187"


def rfc3339(s):
    check(isinstance(s, str) and RFC3339_UTC.fullmatch(s),
          "%r is not an RFC 3339 UTC time" % (s,))
    return calendar.timegm(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


def created_times(ttl):
    """A check: created_at is now (a minute either way) and expires_at
    is CODE_TTL later, both RFC 3339 in UTC."""
    def fn(ctx, b, r):
        j = json.loads(r.body)
        t0, t1 = rfc3339(j["created_at"]), rfc3339(j["expires_at"])
        check(t1 - t0 == ttl, "expires_at - created_at = %d s, want %d"
              % (t1 - t0, ttl))
        check(abs(t0 - time.time()) < 60, "created_at %s is not now"
              % j["created_at"])
        check(abs(t1 - time.time() - j["expires_in"]) < 60,
              "expires_at %s is not now + expires_in" % j["expires_at"])
    return fn


def api_check_path(label):
    return API + "/{saved:%s}/check" % label


CASES += [
    {"name": "api_verify_flow", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "sms": SMS_DEFAULT, "json_keys": CREATED_KEYS,
         "json": {"id": ID_RE, "expires_in": re.compile(r"2[0-9][0-9]|300"),
                  "resend_after": 30, "status": "pending", "channel": "sms",
                  "to": re.compile(r"\+1\*{8}23")},
         "check": created_times(300), "save_id": "v"},
        {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
         "status": 200, "json_keys": ["id", "status", "valid", "attempts_left"],
         "json": {"status": "pending", "valid": False, "attempts_left": 4,
                  "id": "{saved:v}"}, "api": 0},
        {"call": ("POST", api_check_path("v"), {"code": "12"}),
         "status": 200, "json": {"status": "pending", "attempts_left": 3},
         "what": "a code of the wrong length counts too"},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "pending"}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 200, "json_keys": ["id", "status", "valid"],
         "json": {"status": "approved", "valid": True, "id": "{saved:v}"}},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "approved"}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 409, "error": "already_approved", "what": "check again"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 409,
         "error": "finished", "what": "DELETE a finished verification"},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "approved"}},
        {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1,
         "ctype": "application/json; charset=utf-8", "save_id": "w",
         "sms": {"to": PHONE2_E164}, "what": "JSON with a charset"},
        {"call": ("POST", api_check_path("w"), {"code": "{code_lower}"}),
         "status": 200, "json": {"status": "approved"},
         "what": "lower-case code"},
    ]},

    {"name": "api_cancel", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "save_id": "v"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 204},
        {"call": ("GET", API + "/{saved:v}"), "status": 404,
         "error": "not_found"},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 404, "error": "not_found",
         "what": "the right code of a cancelled verification"},
        {"call": ("DELETE", API + "/{saved:v}"), "status": 404,
         "what": "DELETE again"},
    ]},

    {"name": "api_max_attempts",
     "config": dict(API_ON, MAX_ATTEMPTS=3, VERIFY_PER_IP_PER_HOUR=100),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
          "save_id": "v"},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "pending"}},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "pending"}},
         {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
          "status": 200, "json": {"status": "max_attempts_reached"},
          "what": "MAX_ATTEMPTS-th wrong code"},
         {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
          "status": 200, "json": {"status": "max_attempts_reached"},
          "what": "the right code after MAX_ATTEMPTS wrong ones"},
         {"call": ("GET", API + "/{saved:v}"), "status": 200,
          "json": {"status": "max_attempts_reached"}},
     ]},

    {"name": "api_expired", "config": dict(API_ON, CODE_TTL=2), "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "json": {"expires_in": re.compile(r"[12]")}, "save_id": "v"},
        {"sleep": 3},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "expired", "expires_in": 0}},
        {"call": ("POST", api_check_path("v"), {"code": "{code}"}),
         "status": 200, "json": {"status": "expired"}},
    ]},

    {"name": "api_errors", "config": API_ON, "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "auth": None,
         "status": 401, "error": "unauthorized", "api": 0,
         "hdr": {"WWW-Authenticate": r"^Bearer"}, "what": "no bearer"},
        {"call": ("POST", API, {"phone": PHONE}), "auth": "Bearer nope",
         "status": 401, "hdr": {"WWW-Authenticate": r"^Bearer"}, "api": 0},
        {"call": ("POST", API, {"phone": PHONE}),
         "auth": "Bearer " + API_TOKEN[:-1], "status": 401, "api": 0,
         "what": "a prefix of the token"},
        {"call": ("POST", API, {"phone": PHONE}),
         "auth": "Bearer " + API_TOKEN + "x", "status": 401, "api": 0,
         "what": "the token plus a byte"},
        {"call": ("POST", API, {"phone": PHONE}), "auth": API_TOKEN,
         "status": 401, "api": 0, "what": "the token without 'Bearer '"},
        {"call": ("GET", API + "/" + ZERO_ID), "auth": "Basic dXNlcjpwYXNz",
         "status": 401, "hdr": {"WWW-Authenticate": r"^Bearer"}},
        {"call": ("GET", API + "/" + ZERO_ID), "status": 404,
         "error": "not_found", "what": "unknown id"},
        {"call": ("POST", API + "/" + ZERO_ID + "/check",
                  {"code": "123456"}), "status": 404, "error": "not_found"},
        {"call": ("DELETE", API + "/" + ZERO_ID), "status": 404,
         "error": "not_found"},
        {"call": ("GET", API + "/xyz"), "status": 404, "error": "not_found",
         "what": "malformed id"},
        {"call": ("GET", API + "/" + "0" * 39), "status": 404},
        {"call": ("GET", API + "/" + "0" * 41), "status": 404},
        {"call": ("GET", API + "/" + "g" * 40), "status": 404},
        {"call": ("POST", API + "/xyz/check", {"code": "123456"}),
         "status": 404},
        {"call": ("GET", API + "/" + ZERO_ID + "/extra"), "status": 404},
        {"call": ("GET", "/api/v1/nope"), "status": 404},
        {"call": ("GET", "/api/v2/verifications"), "status": 404},
        {"call": ("POST", API, "phone=2015550123"),
         "ctype": "multipart/form-data", "status": 415,
         "error": "unsupported_media_type", "api": 0},
        {"call": ("POST", API, '{"phone": "2015550123"}'),
         "ctype": "text/plain", "status": 415, "api": 0},
        {"call": ("POST", API, '{"phone": "2015550123"}'), "ctype": None,
         "status": 415, "api": 0, "what": "no Content-Type"},
        {"call": ("POST", API, '{"phone": "2015550123"}'),
         "ctype": "application/jsonx", "status": 415, "api": 0},
        {"call": ("POST", API, {"phone": "5" * 2000}), "status": 413,
         "api": 0, "what": "body > 1 KiB"},
        {"call": ("POST", API, "{"), "status": 400, "api": 0,
         "what": "bad JSON"},
        {"call": ("POST", API, "not json"), "status": 400, "api": 0},
        {"call": ("POST", API, "[]"), "status": 400, "api": 0},
        {"call": ("POST", API, ""), "status": 400, "api": 0,
         "what": "empty body"},
        {"call": ("POST", API, {}), "status": 400, "api": 0,
         "what": "missing phone"},
        {"call": ("POST", API, '{"phone": 2015550123}'), "status": 400,
         "api": 0, "what": "phone is a number"},
        {"call": ("POST", API, {"code": "123456"}), "status": 400, "api": 0,
         "what": "code instead of phone"},
        {"call": ("POST", API + "/" + ZERO_ID + "/check", {}),
         "status": 400, "what": "check without code"},
        {"call": ("POST", API, {"phone": "abcdefghij"}), "status": 400,
         "error": "invalid_phone", "api": 0},
        {"call": ("POST", API, {"phone": "12345"}), "status": 400,
         "error": "phone_length", "api": 0},
        {"call": ("POST", API, {"phone": "+19005550100"}), "status": 400,
         "error": "phone_range", "api": 0},
        {"call": ("POST", API, {"phone": UK}), "status": 400,
         "error": "country_not_allowed", "api": 0},
        {"call": ("GET", API), "status": 405, "hdr": {"Allow": r"^POST$"},
         "error": "method_not_allowed"},
        {"call": ("PUT", API, {"phone": PHONE}), "status": 405,
         "hdr": {"Allow": r"^POST$"}, "api": 0},
        {"call": ("PUT", API + "/" + ZERO_ID, {}), "status": 405,
         "hdr": {"Allow": r"^GET, DELETE$"}},
        {"call": ("POST", API + "/" + ZERO_ID, {}), "status": 405,
         "hdr": {"Allow": r"^GET, DELETE$"}},
        {"call": ("GET", API + "/" + ZERO_ID + "/check"), "status": 405,
         "hdr": {"Allow": r"^POST$"}},
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "sms": SMS_DEFAULT, "what": "a good request still works"},
    ]},

    {"name": "api_off_without_token", "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 404,
         "error": "not_found", "api": 0, "no_hdr": ["WWW-Authenticate"]},
        {"call": ("POST", API, {"phone": PHONE}), "auth": None,
         "status": 404, "api": 0, "no_hdr": ["WWW-Authenticate"]},
        {"call": ("GET", API + "/" + ZERO_ID), "status": 404},
    ]},

    {"name": "api_rate_limits", "config": dict(API_ON, SMS_PER_HOUR=3),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": PHONE}), "status": 429, "api": 0,
          "error": "rate_limited", "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
          "what": "resend within RESEND_INTERVAL"},
         {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": "2025550103"}), "status": 201,
          "api": 1},
         {"call": ("POST", API, {"phone": "2025550104"}), "status": 503,
          "api": 0, "error": "rate_limited",
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
          "what": "SMS_PER_HOUR reached"},
     ]},

    {"name": "api_table_full", "config": dict(API_ON, MAX_PENDING=1),
     "steps": [
         {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1},
         {"call": ("POST", API, {"phone": PHONE2}), "status": 503, "api": 0,
          "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
     ]},

    {"name": "api_send_failures", "config": API_ON, "steps": [
        {"mode": "500"},
        {"call": ("POST", API, {"phone": PHONE}), "status": 502, "api": 1,
         "error": "send_failed", "no_hdr": ["Retry-After"]},
        {"mode": "429"},
        {"call": ("POST", API, {"phone": PHONE2}), "status": 503, "api": 1,
         "error": "send_failed", "hdr": {"Retry-After": r"^[1-9][0-9]*$"}},
        {"mode": "ok"},
        {"call": ("POST", API, {"phone": "2025550103"}), "status": 201,
         "api": 1},
    ]},

    # A verification belongs to the front end that started it.
    {"name": "api_web_separation", "config": API_ON, "steps": [
        {"b": "W", "request": PHONE, "status": 200, "api": 1},
        {"b": "W", "save_cookie": ("otp_vid", "web")},
        {"b": "api", "call": ("POST", api_check_path("web"),
                              {"code": "{code:W}"}), "status": 404,
         "error": "not_found", "what": "the web handle checked by the API"},
        {"b": "api", "call": ("GET", API + "/{saved:web}"), "status": 404},
        {"b": "api", "call": ("DELETE", API + "/{saved:web}"),
         "status": 404},
        {"b": "api", "call": ("POST", API, {"phone": PHONE2}), "status": 201,
         "api": 1, "save_id": "apiv"},
        {"b": "W", "set_cookie": {"otp_vid": "{saved:apiv}"}},
        {"b": "W", "verify": "{code:api}", "status": 403,
         "has": [CODE_GONE], "lacks": ["Verified"],
         "what": "the API id as otp_vid, with the API's code"},
        {"b": "W", "get": "/auth", "status": 401},
        {"b": "api", "call": ("POST", api_check_path("apiv"),
                              {"code": "{code}"}), "status": 200,
         "json": {"status": "approved"}},
        {"b": "W", "set_cookie": {"otp_vid": "{saved:web}"}},
        {"b": "W", "verify": "{code}", "status": 200, "page": "success"},
    ]},
]

# Form-encoded bodies (what Twilio takes): the same fields, limits and
# errors as JSON.
CASES += [
    {"name": "api_form_bodies", "config": API_ON, "steps": [
        {"call": ("POST", API, "phone=%28201%29+555-0123"), "ctype": FORM,
         "status": 201, "api": 1, "sms": SMS_DEFAULT,
         "json_keys": CREATED_KEYS, "save_id": "v"},
        {"call": ("POST", api_check_path("v"), "code={wrong}"), "ctype": FORM,
         "status": 200, "json": {"status": "pending", "attempts_left": 4}},
        {"call": ("POST", api_check_path("v"), "client_ip=203.0.113.7&"
                  "code={code}"), "ctype": FORM + "; charset=utf-8",
         "status": 200, "json": {"status": "approved", "valid": True}},
        {"call": ("POST", API, "phone=2015550187&client_ip=nope"),
         "ctype": FORM, "status": 400, "error": "invalid_client_ip",
         "api": 0},
        {"call": ("POST", API, "phone=%zz"), "ctype": FORM, "status": 400,
         "error": "bad_request", "api": 0, "what": "a bad escape"},
        {"call": ("POST", API, "phone=2015550187&x=%00"), "ctype": FORM,
         "status": 400, "api": 0, "what": "a NUL elsewhere in the body"},
        {"call": ("POST", API, "code=123456"), "ctype": FORM, "status": 400,
         "error": "bad_request", "api": 0, "what": "no phone field"},
        {"call": ("POST", API, "phone=" + "5" * 80), "ctype": FORM,
         "status": 400, "api": 0, "what": "a phone field too long"},
        {"call": ("POST", API, "phone=" + "5" * 2000), "ctype": FORM,
         "status": 413, "api": 0, "what": "body > 1 KiB"},
        {"call": ("POST", API, "phone=12345"), "ctype": FORM, "status": 400,
         "error": "phone_length", "api": 0},
        {"call": ("POST", API, '{"phone": "2015550187"}'), "ctype": FORM,
         "status": 400, "error": "bad_request", "api": 0,
         "what": "JSON sent as a form"},
        {"call": ("POST", API, "phone=2015550187"), "status": 400,
         "error": "bad_request", "api": 0, "what": "a form sent as JSON"},
        {"call": ("POST", API, "phone=2015550187"), "ctype": "text/plain",
         "status": 415, "error": "unsupported_media_type", "api": 0},
        {"call": ("POST", API + "/" + ZERO_ID + "/check", "code=123456"),
         "ctype": FORM, "status": 404, "error": "not_found"},
        {"call": ("POST", BY_PHONE, "phone=2015550123&code=123456"),
         "ctype": FORM, "status": 404, "error": "not_found",
         "what": "by number, the approved one is no longer pending"},
    ]},

    # POST .../by_phone_number/check (Telnyx's): the number's newest API
    # verification, read as a create reads numbers.
    {"name": "api_by_phone_number",
     "config": dict(API_ON, MAX_ATTEMPTS=3, RESEND_INTERVAL=0), "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1,
         "save_id": "v"},
        {"call": ("POST", BY_PHONE, {"phone": "+1 201 555 0123",
                                     "code": "{wrong}"}),
         "status": 200, "json_keys": ["id", "status", "valid", "attempts_left"],
         "json": {"id": "{saved:v}", "status": "pending", "valid": False,
                  "attempts_left": 2}, "what": "another spelling, wrong"},
        {"call": ("GET", API + "/{saved:v}"), "status": 200,
         "json": {"status": "pending"}},
        {"call": ("POST", api_check_path("v"), {"code": "{wrong}"}),
         "status": 200, "json": {"attempts_left": 1},
         "what": "the same attempts, by id"},
        {"call": ("POST", BY_PHONE, "phone=2015550123&code={code}"),
         "ctype": FORM, "status": 200,
         "json": {"id": "{saved:v}", "status": "approved", "valid": True},
         "what": "a third spelling, right code, as a form"},
        {"call": ("POST", BY_PHONE, {"phone": PHONE, "code": "{code}"}),
         "status": 404, "error": "not_found", "what": "approved: not pending"},
        # Two verifications for one number: the newest is checked.
        {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1,
         "save_id": "old"},
        {"call": ("POST", BY_PHONE, {"phone": PHONE2, "code": "{wrong}"}),
         "status": 200, "json": {"id": "{saved:old}", "attempts_left": 2}},
        {"call": ("POST", api_check_path("old"), {"code": "{wrong}"}),
         "status": 200},
        {"call": ("POST", api_check_path("old"), {"code": "{wrong}"}),
         "status": 200, "json": {"status": "max_attempts_reached",
                                 "valid": False}},
        {"call": ("POST", BY_PHONE, {"phone": PHONE2, "code": "{code}"}),
         "status": 200, "json_keys": ["id", "status", "valid"],
         "json": {"id": "{saved:old}", "status": "max_attempts_reached"},
         "what": "the locked one is still the number's newest"},
        {"call": ("POST", API, {"phone": PHONE2}), "status": 201, "api": 1,
         "save_id": "new"},
        {"call": ("POST", BY_PHONE, {"phone": PHONE2E164_SPACED,
                                     "code": "{code}"}),
         "status": 200, "json": {"id": "{saved:new}", "status": "approved"},
         "what": "the newer one, with its own code"},
        {"call": ("GET", API + "/{saved:old}"), "status": 200,
         "json": {"status": "max_attempts_reached"}},
        # Errors: as a create's for the number, as a check's for the code.
        {"call": ("POST", BY_PHONE, {"phone": "2025550199", "code": "1234"}),
         "status": 404, "error": "not_found", "what": "a number never sent to"},
        {"call": ("POST", BY_PHONE, {"phone": "12345", "code": "1234"}),
         "status": 400, "error": "phone_length"},
        {"call": ("POST", BY_PHONE, {"phone": UK, "code": "1234"}),
         "status": 400, "error": "country_not_allowed"},
        {"call": ("POST", BY_PHONE, {"phone": PHONE}), "status": 400,
         "error": "bad_request", "what": "no code"},
        {"call": ("POST", BY_PHONE, {"code": "1234"}), "status": 400,
         "error": "bad_request", "what": "no phone"},
        {"call": ("GET", BY_PHONE), "status": 405, "hdr": {"Allow": "^POST$"}},
        {"call": ("POST", API + "/by_phone_number", {"phone": PHONE}),
         "status": 404},
        {"call": ("POST", BY_PHONE, {"phone": PHONE, "code": "1"}),
         "auth": None, "status": 401},
    ]},

    # The forms' verifications are not the API's: not found by number.
    {"name": "api_by_phone_number_not_web", "config": API_ON, "steps": [
        {"b": "W", "request": PHONE, "status": 200, "api": 1},
        {"b": "W", "call": ("POST", BY_PHONE, {"phone": PHONE,
                                               "code": "{code}"}),
         "status": 404, "error": "not_found",
         "what": "the web code, by number, through the API"},
        {"b": "W", "verify": "{code}", "status": 200, "page": "success",
         "what": "the web verification is untouched"},
    ]},

    # Guessing across numbers: each miss is a wrong code for client_ip,
    # so VERIFY_PER_IP_PER_HOUR bounds it as it bounds wrong codes.
    {"name": "api_by_phone_number_guessing",
     "config": dict(API_ON, VERIFY_PER_IP_PER_HOUR=3), "steps": [
        {"call": ("POST", API, {"phone": PHONE}), "status": 201, "api": 1},
        {"call": ("POST", BY_PHONE, {"phone": "2025550101", "code": "{code}",
                                     "client_ip": "203.0.113.9"}),
         "status": 404},
        {"call": ("POST", BY_PHONE, {"phone": "2025550102", "code": "{code}",
                                     "client_ip": "203.0.113.9"}),
         "status": 404},
        {"call": ("POST", BY_PHONE, {"phone": "2025550103", "code": "{code}",
                                     "client_ip": "203.0.113.9"}),
         "status": 404},
        {"call": ("POST", BY_PHONE, {"phone": PHONE, "code": "{code}",
                                     "client_ip": "203.0.113.9"}),
         "status": 429, "error": "rate_limited",
         "hdr": {"Retry-After": r"^[1-9][0-9]*$"},
         "what": "the 4th, even with the right number and code"},
        {"call": ("POST", BY_PHONE, {"phone": PHONE, "code": "{code}",
                                     "client_ip": "203.0.113.10"}),
         "status": 200, "json": {"status": "approved"},
         "what": "another client"},
    ]},
]

# ---- docs/openapi.json against the live server ---------------------------------

# Documented answers no test can cause from outside: the random source
# failing, and a rate table too full for a new client address.
OPENAPI_UNREACHED = {
    ("post", "/api/v1/verifications", "500"),
    ("post", "/api/v1/verifications/{id}/check", "503"),
    ("post", "/api/v1/verifications/by_phone_number/check", "503"),
}


class OpenApiCheck:
    """Every answer checked against docs/openapi.json (the operation, a
    documented status, its headers, its body's schema), and what was
    seen, to compare with what the file documents."""

    def __init__(self, ctx):
        self.ctx, self.spec, self.seen = ctx, harness.openapi(), set()

    def template(self, path):
        paths = self.spec["paths"]
        if path in paths:
            return path
        for t in paths:
            if re.fullmatch(re.sub(r"\\\{[a-z_]+\\\}", "[^/]+", re.escape(t)),
                            path):
                return t
        raise Fail("%s is not in docs/openapi.json" % path)

    def answer(self, method, path, r):
        t = self.template(urllib.parse.urlsplit(path).path)
        op = self.spec["paths"][t].get(method.lower())
        where = "%s %s -> %d" % (method, t, r.status)
        if op is None:          # a method the path does not list
            check(r.status == 405, "%s: want 405" % where)
            op = {"responses": {"405": self.spec["components"]["responses"]
                                ["MethodNotAllowed"]}}
            method = "*"
        resp = op["responses"].get(str(r.status))
        check(resp, "%s: status not documented (%s)" % (where, short(r.body)))
        self.seen.add((method.lower(), t, str(r.status)))
        for name in resp.get("headers", {}):
            check(r.header(name), "%s: no %s header" % (where, name))
        if "content" not in resp:
            check(r.body == b"", "%s: a body %r" % (where, short(r.body)))
            return None
        ctype = next(iter(resp["content"]))
        check((r.header("content-type") or "").startswith(ctype),
              "%s: Content-Type %r, want %s" % (where,
                                                r.header("content-type"),
                                                ctype))
        if ctype != "application/json":
            return None
        j = json.loads(r.body)
        errs = harness.schema_errors(
            self.spec, resp["content"]["application/json"]["schema"], j)
        check(not errs, "%s: %s (body %s)" % (where, "; ".join(errs),
                                               short(r.body)))
        return j

    def call(self, method, path, body=None, ctype="application/json",
             auth="Bearer " + API_TOKEN, want=None):
        r = self.ctx.browser("api").api(method, path, body, auth, ctype)
        j = self.answer(method, path, r)
        check(want is None or r.status == want, "%s %s -> %d, want %s (%s)"
              % (method, path, r.status, want, short(r.body)))
        return j

    def missing(self):
        documented = {(m, t, st) for t, item in self.spec["paths"].items()
                      for m, op in item.items() if m != "parameters"
                      for st in op["responses"]}
        documented |= {("*", t, "405") for t in self.spec["paths"]}
        return sorted(documented - self.seen - OPENAPI_UNREACHED)


def trickle(ctx, path, out):
    """A POST whose body comes a byte a second: 408 after 5 s."""
    body = b'{"phone":"2015550123","code":"123456"}'
    head = ("POST %s HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
            "Content-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (path, API_TOKEN, len(body))).encode()
    with socket.create_connection(("127.0.0.1", ctx.server.port), 10) as s:
        s.sendall(head)
        for i in range(8):
            try:
                s.sendall(body[i:i + 1])
            except OSError:
                break
            time.sleep(1)
        s.settimeout(10)
        data = b""
        try:
            while b"\r\n\r\n" not in data or len(data) < 40:
                got = s.recv(4096)
                if not got:
                    break
                data += got
        except OSError:
            pass
    head, _, rest = data.partition(b"\r\n\r\n")
    m = re.match(rb"HTTP/1\.1 ([0-9]{3})", head)
    hdrs = [(k, v) for k, _, v in (l.partition(": ") for l in
            head.decode("latin-1").split("\r\n")[1:])]
    out[path] = Resp(int(m.group(1)) if m else 0, "", hdrs, rest, 0)


def case_api_openapi(ctx):
    """Every endpoint, status and error docs/openapi.json documents, from
    the live binary, each answer checked against the file; and nothing
    answered that the file does not document."""
    ctx.start_fake()
    ctx.start_server(dict(API_ON, MAX_ATTEMPTS=2, VERIFY_PER_IP_PER_HOUR=2,
                          MAX_PENDING=4))
    o, ip = OpenApiCheck(ctx), {"client_ip": "203.0.113.5"}
    b = ctx.browser("api")
    slow = {}
    threads = [threading.Thread(target=trickle, args=(ctx, p, slow))
               for p in (API, API + "/" + ZERO_ID + "/check", BY_PHONE)]
    for t in threads:
        t.start()
    v = o.call("POST", API, {"phone": PHONE}, want=201)["id"]
    ctx.collect_sms(0, b)
    o.call("POST", API, {"phone": PHONE}, want=429)
    o.call("GET", API + "/" + v, want=200)
    o.call("POST", API + "/" + v + "/check", {"code": wrong_code(b.code)},
           want=200)
    o.call("POST", BY_PHONE, "phone=2015550123&code=%s" % b.code, FORM,
           want=200)
    o.call("POST", API + "/" + v + "/check", {"code": b.code}, want=409)
    o.call("DELETE", API + "/" + v, want=409)
    w = o.call("POST", API, "phone=2015550187", FORM, want=201)["id"]
    o.call("DELETE", API + "/" + w, want=204)
    for path in (API, API + "/" + ZERO_ID + "/check", BY_PHONE):
        o.call("POST", path, {"phone": PHONE, "code": "1"}, auth=None,
               want=401)
        o.call("POST", path, "x" * 2000, want=413)
        o.call("POST", path, {"phone": PHONE}, "text/plain", want=415)
        o.call("POST", path, "{", want=400)
        o.call("GET", path, want=405)
    o.call("POST", API, {"phone": "12345"}, want=400)
    o.call("POST", API, dict(ip, phone="2025550111", client_ip="x"), want=400)
    o.call("POST", BY_PHONE, {"phone": "2025550111", "code": "1"}, want=404)
    o.call("POST", API + "/" + ZERO_ID + "/check", {"code": "1"}, want=404)
    for i in range(3):
        o.call("POST", BY_PHONE, dict(ip, phone="20255501%02d" % i,
                                      code="1"))
        o.call("POST", API + "/" + ZERO_ID + "/check", dict(ip, code="1"))
    for who in ("GET", "DELETE"):
        o.call(who, API + "/" + ZERO_ID, want=404)
        o.call(who, API + "/" + ZERO_ID, auth=None, want=401)
    o.call("PUT", API + "/" + ZERO_ID, {}, want=405)
    ctx.fake.mode = "500"
    o.call("POST", API, {"phone": "2025550120"}, want=502)
    ctx.fake.mode = "429"
    o.call("POST", API, {"phone": "2025550121"}, want=503)
    ctx.fake.mode = "ok"
    for t in threads:
        t.join(30)
    for path, r in slow.items():
        o.answer("POST", path, r)
        check(r.status == 408, "a trickled body to %s -> %d" % (path,
                                                                r.status))
    check(ctx.server.stop() == 0, "exit on SIGTERM")
    ctx.old_servers.append(ctx.server)
    ctx.server = harness.Server(harness.fresh_dir(os.path.join(ctx.dir,
                                                               "off")),
                                dict(ctx.base_config()))
    ctx.server.start()
    o.call("POST", API, {"phone": PHONE}, want=404)
    missing = o.missing()
    check(not missing, "documented but never answered: %s" % missing)


# ---- forward-auth (GET /auth) and return_to ----------------------------------

def tampered(label, pos):
    """The saved cookie with the character at pos changed."""
    def fn(ctx, b):
        v = ctx.saved[label]
        i = pos % len(v)
        c = v[i]
        n = "1" if c == "0" else "a" if c == "b" else "b" if c.isalpha() \
            else "0"
        return v[:i] + n + v[i + 1:]
    return fn


# otp_auth only gates GET navigation: Lax, so links from elsewhere carry it.
LAX = (r"^(?=.*; Path=/(;|$))(?=.*; HttpOnly(;|$))"
       r"(?=.*; SameSite=Lax(;|$))")
AUTH_COOKIE = LAX + r"(?=.*; Max-Age=%d(;|$))otp_auth=[^;]+;"

CASES += [
    {"name": "auth_forward", "steps": [
        {"get": "/auth", "status": 401, "secure": True,
         "no_hdr": ["X-Otp-Phone", "Remote-User", "Remote-Phone"],
         "what": "no cookie"},
        {"request": PHONE, "status": 200, "api": 1},
        {"get": "/auth", "status": 401, "what": "code sent, not verified"},
        {"verify": "{code}", "status": 200, "page": "success",
         "cookie": {"otp_auth": AUTH_COOKIE % 43200}},
        {"get": "/auth", "status": 204, "secure": True,
         "hdr": {"X-Otp-Phone": r"^\+12015550123$",
                 # without USERS_FILE the user is the number itself
                 "Remote-User": r"^\+12015550123$", "Remote-Groups": r"^$",
                 "Remote-Phone": r"^\+12015550123$"}},
        {"method": ("HEAD", "/auth"), "status": 204,
         "hdr": {"X-Otp-Phone": r"^\+12015550123$"}},
        {"save_cookie": ("otp_auth", "auth")},
        {"set_cookie": {"otp_auth": tampered("auth", -1)}},
        {"get": "/auth", "status": 401, "no_hdr": ["X-Otp-Phone"],
         "what": "last character changed"},
        {"set_cookie": {"otp_auth": tampered("auth", 0)}},
        {"get": "/auth", "status": 401, "what": "first character changed"},
        {"set_cookie": {"otp_auth": tampered("auth", 12)}},
        {"get": "/auth", "status": 401, "what": "13th character changed"},
        {"set_cookie": {"otp_auth": lambda ctx, b: ctx.saved["auth"][:-2]}},
        {"get": "/auth", "status": 401, "what": "truncated"},
        {"set_cookie": {"otp_auth": "garbage"}},
        {"get": "/auth", "status": 401},
        {"set_cookie": {"otp_auth": "{saved:auth}"}},
        {"get": "/auth", "status": 204, "what": "the real cookie again"},
        {"b": "B", "get": "/auth", "status": 401, "what": "another browser"},
        {"method": ("POST", "/auth"), "status": 405,
         "hdr": {"Allow": r"GET"}},
    ]},

    {"name": "auth_session_ttl", "config": {"SESSION_TTL": 60}, "steps": [
        {"request": PHONE, "status": 200, "api": 1},
        {"verify": "{code}", "status": 200,
         "cookie": {"otp_auth": AUTH_COOKIE % 60}},
        {"get": "/auth", "status": 204},
    ]},

    {"name": "return_to_redirect", "steps": [
        {"get": "/?return_to=/admin/x", "status": 200, "page": "index",
         "inputs": {"return_to": "/admin/x"}},
        {"request": PHONE, "fields": {"return_to": "{hidden:return_to}"},
         "status": 200, "page": "verify", "api": 1,
         "inputs": {"return_to": "/admin/x"}},
        {"verify": "{code}", "fields": {"return_to": "{hidden:return_to}"},
         "status": 303, "secure": True, "hdr": {"Location": r"^/admin/x$"},
         "cookie": {"otp_auth": AUTH_COOKIE % 43200}},
        {"get": "/auth", "status": 204},
        {"b": "B", "get": "/?return_to=%2Fadmin%2Fy%3Fa%3D1", "status": 200,
         "inputs": {"return_to": "/admin/y?a=1"}, "what": "encoded query"},
        {"b": "B", "request": PHONE2,
         "fields": {"return_to": "{hidden:return_to}"}, "status": 200,
         "api": 1},
        {"b": "B", "verify": "{code}",
         "fields": {"return_to": "{hidden:return_to}"}, "status": 303,
         "hdr": {"Location": r"^/admin/y\?a=1$"}},
    ]},
]

EVIL_RETURN_TO = ["//evil.example/", "https://evil.example/", "/\\evil",
                  "/admin\r\nSet-Cookie: evil=1", "/\t/evil.example/",
                  "javascript:alert(1)"]


def return_to_evil_steps():
    steps = []
    for i, evil in enumerate(EVIL_RETURN_TO):
        b = "E%d" % i
        steps += [
            {"b": b, "get": "/?return_to=" + urllib.parse.quote(evil, safe=""),
             "status": 200, "inputs": {"return_to": ""},
             "what": "GET /?return_to=%r" % evil},
            {"b": b, "request": "20255501%02d" % (10 + i),
             "fields": {"return_to": evil}, "status": 200, "api": 1,
             "inputs": {"return_to": ""},
             "what": "POST /request return_to=%r" % evil},
            {"b": b, "verify": "{code}", "fields": {"return_to": evil},
             "status": 200, "page": "success", "no_hdr": ["Location"],
             "what": "POST /verify return_to=%r" % evil},
        ]
    return steps


CASES += [
    {"name": "return_to_open_redirect", "steps": return_to_evil_steps()},
]


# ---- health, readiness, metrics ----------------------------------------------

def copy_ca(ctx):
    shutil.copy(ctx.cert("ca")[0], os.path.join(ctx.dir, "ca.pem"))


def remove_ca(ctx, b):
    os.remove(os.path.join(ctx.dir, "ca.pem"))


TEXT = {"Content-Type": r"^text/plain"}


def promtool_check(ctx, b):
    """Prometheus's own checker (Debian's prometheus package) accepts a
    live /metrics: no error and no lint finding at all. Every family has
    HELP and TYPE, and otp_demo_build_info is 1 with this binary's
    version and the sender."""
    r = b.get("/metrics")
    check(r.status == 200, "GET /metrics -> %d" % r.status)
    tool = shutil.which("promtool")
    check(tool, "no promtool on PATH (tools/deps.sh test installs Debian's "
          "prometheus package)")
    p = subprocess.run([tool, "check", "metrics"], input=r.body,
                       capture_output=True, timeout=30)
    said = (p.stdout + p.stderr).decode("utf-8", "replace").strip()
    check(p.returncode == 0 and not said, "promtool check metrics: exit %d: "
          "%s" % (p.returncode, short(said, 400)))
    text = r.body.decode("utf-8", "replace")
    for family in set(re.findall(r"^([a-z_]+)[{ ]", text, re.M)):
        for kind in ("HELP", "TYPE"):
            check(re.search(r"^# %s %s \S" % (kind, family), text, re.M),
                  "/metrics: no # %s line for %s" % (kind, family))
    version = subprocess.run([BIN, "--version"], capture_output=True,
                             text=True).stdout.split()[-1]
    series = [m for m in metrics_values(text) if
              m.startswith("otp_demo_build_info")]
    want = 'otp_demo_build_info{version="%s",sender="telnyx"}' % version
    check(series == [want] and metrics_values(text)[want] == 1,
          "build_info series %s, want %s 1" % (series, want))

CASES += [
    {"name": "health_console", "config": {"API_KEY": None}, "steps": [
        {"get": "/healthz", "status": 200, "body_is": b"ok\n", "hdr": TEXT,
         "secure": True},
        {"get": "/readyz", "status": 200,
         "body_is": b"ready: console sender\n", "hdr": TEXT, "secure": True},
        {"get": "/metrics", "status": 404, "secure": True,
         "what": "METRICS off"},
        {"method": ("POST", "/healthz"), "status": 405,
         "hdr": {"Allow": r"GET"}},
    ]},

    {"name": "health_telnyx_ca", "setup": copy_ca,
     "config": {"SMS_CA_FILE": "ca.pem"}, "steps": [
         {"get": "/readyz", "status": 200,
          "body_is": b"ready: telnyx sender\n"},
         {"get": "/healthz", "status": 200, "body_is": b"ok\n"},
         {"do": remove_ca, "what": "remove SMS_CA_FILE"},
         {"get": "/readyz", "status": 503, "hdr": TEXT, "secure": True,
          "body_is": b"not ready: telnyx sender: CA bundle unreadable\n"},
         {"get": "/healthz", "status": 200, "body_is": b"ok\n"},
     ]},

    {"name": "metrics_counters",
     "config": {"METRICS": True, "SMS_PER_NUMBER_PER_HOUR": 1,
                "RESEND_INTERVAL": 0},
     "steps": [
         {"get": "/metrics", "status": 200, "secure": True,
          "hdr": TEXT, "metrics": {
              "otp_sms_sent_total": 0, "otp_pending_codes": 0,
              "otp_table_capacity": 1024}},
         {"b": "A", "request": PHONE, "status": 200, "api": 1},
         {"b": "A", "verify": "{wrong}", "status": 403},
         {"b": "A", "verify": "{code}", "status": 200},
         {"mode": "500"},
         {"b": "B", "request": PHONE2, "status": 502, "api": 1},
         {"mode": "ok"},
         {"b": "C", "request": PHONE, "status": 429, "api": 0,
          "what": "per-number limit"},
         {"b": "D", "request": "2025550103", "status": 200, "api": 1},
         {"b": "E", "request": "2025550104", "status": 200, "api": 1},
         {"get": "/metrics", "status": 200, "metrics": {
             "otp_sms_sent_total": 3,
             'otp_sms_failed_total{reason="server_error"}': 1,
             'otp_verifications_total{result="approved"}': 1,
             'otp_verifications_total{result="wrong"}': 1,
             'otp_rate_limited_total{limit="per_number"}': 1,
             "otp_pending_codes": 2,
             "otp_table_capacity": 1024}},
         {"do": promtool_check, "what": "promtool check metrics"},
     ]},

    {"name": "metrics_allow_list",
     "config": {"METRICS": True, "METRICS_ALLOW": "10.0.0.1"}, "steps": [
         {"get": "/metrics", "status": 404, "secure": True},
         {"get": "/metrics", "status": 404,
          "headers": {"X-Forwarded-For": "10.0.0.1"}},
         {"get": "/healthz", "status": 200},
     ]},
]


# ---- SIGHUP reload -----------------------------------------------------------

def sighup(changes=None, extra="", want=r"reload: configuration applied",
           what=None):
    """A step function: writes the config with changes (and extra lines),
    sends SIGHUP and waits for a log line matching want. A reload that
    should apply updates ctx.cfg (the SMS text the test expects)."""
    def fn(ctx, b):
        cfg = dict(ctx.cfg)
        cfg.update(changes or {})
        write_config(os.path.join(ctx.dir, "config.cfg"),
                     config_text(cfg) + extra)
        n0 = len(ctx.server.err_lines)
        ctx.server.proc.send_signal(signal.SIGHUP)
        for rx in [want] if isinstance(want, str) else want:
            got = ctx.server.wait_log(rx, n0, 5.0)
            check(got, "SIGHUP%s: no log line matching %r within 5 s (log: "
                  "%s)" % (" (%s)" % what if what else "", rx,
                           short(" | ".join(ctx.server.err_lines[n0:]), 300)))
        if not extra:
            ctx.cfg = cfg
        return None
    return fn


NEW_MESSAGE = "Code {code} for you"
NEW_TEXT = r"^Code [0-9A-F]{6} for you$"

CASES += [
    {"name": "sighup_reload", "steps": [
        {"b": "A", "request": PHONE, "status": 200, "api": 1,
         "sms": SMS_DEFAULT},
        {"do": sighup({"MESSAGE": NEW_MESSAGE}), "what": "new MESSAGE"},
        {"b": "B", "request": PHONE2, "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT}},
        {"b": "A", "verify": "{code}", "status": 200, "page": "success",
         "what": "a code from before the reload"},
        # line len(cfg) + 1 is the bad one
        {"do": lambda ctx, b: sighup(
            {"MESSAGE": "Bad {code}"}, extra="TOKEN_LENGHT=4\n",
            want=r"error reload: config\.cfg:%d: unknown key TOKEN_LENGHT"
                 r".*keeping the old configuration" % (len(ctx.cfg) + 1),
            what="invalid config")(ctx, b)},
        {"b": "C", "request": "2025550103", "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT},
         "what": "the config before the bad reload still applies"},
        {"b": "B", "verify": "{code}", "status": 200},
        {"do": sighup({"LISTEN": "127.0.0.1:1"}, want=[
            r"reload: LISTEN changed; it takes effect after a restart",
            r"reload: configuration applied"]), "what": "LISTEN changed"},
        {"b": "D", "get": "/", "status": 200, "what": "same port still"},
        {"b": "D", "request": "2025550104", "status": 200, "api": 1,
         "sms": {"text": NEW_TEXT}},
    ]},
]


# ---- logout, revocation, COOKIE_DOMAIN ---------------------------------------

LOGGED_OUT = "You are logged out."
GONE = r"^otp_auth=; .*Max-Age=0(;|$)"     # the cookie cleared


def log_has(rx):
    """A "check" step: the server logged a line matching rx."""
    def fn(ctx, b, r):
        check(ctx.server.wait_log(rx, 0, 2.0), "no log line matching %r" % rx)
    return fn


CASES += [
    # POST /logout is a form post like the others: without the session's
    # CSRF token, or from another origin, it is refused and ends nothing.
    {"name": "logout_revokes", "config": {"RESEND_INTERVAL": 0}, "steps": [
        {"request": PHONE, "status": 200, "api": 1},
        {"verify": "{code}", "status": 200, "page": "success",
         "inputs": {"csrf": "{csrf}"}, "what": "a logout form with the token",
         "has": ['action="/logout"']},
        {"save_cookie": ("otp_auth", "auth")},
        {"get": "/auth", "status": 204},
        {"post": "/logout", "csrf": None, "status": 403, "no_cookie":
         ["otp_auth"], "what": "no CSRF token"},
        {"get": "/auth", "status": 204, "what": "still logged in"},
        {"post": "/logout", "csrf": "0" * 64, "status": 403,
         "no_cookie": ["otp_auth"], "what": "a wrong CSRF token"},
        {"b": "B", "get": "/", "status": 200},
        {"post": "/logout", "csrf": "{csrf:B}", "status": 403,
         "what": "another session's CSRF token"},
        {"post": "/logout", "headers": {"Origin": "http://evil.example"},
         "status": 403, "no_cookie": ["otp_auth"], "what": "cross-origin"},
        {"post": "/logout", "headers": {"Sec-Fetch-Site": "cross-site"},
         "status": 403, "what": "Sec-Fetch-Site: cross-site"},
        {"get": "/auth", "status": 204, "what": "still logged in"},
        {"get": "/logout", "status": 200, "page": "success",
         "has": ['action="/logout"', "+1********23"],
         "what": "a GET shows the logout button (a link from an app)"},
        {"get": "/auth", "status": 204,
         "what": "a GET (a link, an <img>) logs no one out"},
        {"post": "/logout", "status": 200, "has": [LOGGED_OUT], "secure": True,
         "cookie": {"otp_auth": GONE, "otp_sid": SID},
         "check": log_has(r"logout to=\+1\*{8}23 ip=127\.0\.0\.1")},
        {"get": "/auth", "status": 401, "what": "the cookie is gone"},
        {"get": "/logout", "status": 200, "has": [LOGGED_OUT],
         "lacks": ['action="/logout"']},
        {"set_cookie": {"otp_auth": "{saved:auth}"}},
        {"get": "/auth", "status": 401, "no_hdr": ["X-Otp-Phone"],
         "what": "the old cookie replayed: revoked on the server"},
        {"get": "/auth?redirect=1", "status": 302},
        {"b": "C", "set_cookie": {"otp_auth": "{saved:auth}"}},
        {"b": "C", "get": "/auth", "status": 401,
         "what": "the old cookie in another browser"},
        {"post": "/logout", "status": 403, "what": "the old session's token: "
         "logging out started a new session"},
        {"get": "/", "status": 200},
        {"post": "/logout", "status": 200, "has": [LOGGED_OUT],
         "what": "again, with the revoked cookie: nothing to end"},
        {"get": "/", "status": 200},
        {"request": PHONE, "status": 200, "api": 1,
         "what": "the same number logs in again"},
        {"verify": "{code}", "status": 200, "page": "success"},
        {"get": "/auth", "status": 204, "what": "a new session is valid"},
        {"set_cookie": {"otp_auth": "{saved:auth}"}},
        {"get": "/auth", "status": 401, "what": "the old one still is not"},
    ]},

    # COOKIE_DOMAIN: otp_auth gets a Domain (and "__Secure-", never
    # "__Host-", on a secure page); the web flow's cookies stay host-only;
    # a host outside the domain gets a host-only cookie.
    {"name": "cookie_domain", "config": {"COOKIE_DOMAIN": "example.lan",
                                         "TRUSTED_PROXY": "127.0.0.1"},
     "steps": [
        {"get": "/", "status": 200, "headers": {"Host": "auth.example.lan"},
         "cookie": {"otp_sid": STRICT + r"(?!.*Domain)"}},
        {"request": PHONE, "status": 200, "api": 1,
         "headers": {"Host": "auth.example.lan"},
         "cookie": {"otp_vid": r"^(?!.*Domain)"}},
        {"verify": "{code}", "status": 200,
         "headers": {"Host": "auth.example.lan"},
         "cookie": {"otp_auth": AUTH_COOKIE % 43200 +
                    r"(?=.*; Domain=example\.lan(;|$))",
                    "otp_sid": r"^(?!.*Domain)"}},
        {"get": "/auth", "status": 204, "headers": {"Host": "app.example.lan"},
         "what": "another host of the domain"},
        {"b": "B", "get": "/", "status": 200,
         "what": "the server's address: outside the domain"},
        {"b": "B", "request": PHONE2, "status": 200, "api": 1},
        {"b": "B", "verify": "{code}", "status": 200,
         "cookie": {"otp_auth": AUTH_COOKIE % 43200 + r"(?!.*Domain)"}},
        {"b": "S", "get": "/", "status": 200, "headers": {
            "Host": "auth.example.lan", "X-Forwarded-Proto": "https"},
         "cookie": {"__Host-otp_sid": r"; Secure(;|$)(?!.*Domain)"}},
        {"b": "S", "request": "2025550107", "status": 200, "api": 1,
         "headers": {"Host": "auth.example.lan", "X-Forwarded-Proto": "https"}},
        {"b": "S", "verify": "{code}", "status": 200, "headers": {
            "Host": "auth.example.lan", "X-Forwarded-Proto": "https"},
         "no_cookie": ["__Host-otp_auth"],
         "cookie": {"__Secure-otp_auth": r"^__Secure-otp_auth=[^;]+; Path=/;"
                    r"(?=.*; Domain=example\.lan(;|$))(?=.*; Secure(;|$))"}},
        {"b": "S", "get": "/auth", "status": 204, "headers": {
            "Host": "app.example.lan", "X-Forwarded-Proto": "https"}},
        {"b": "S", "do": sighup({"COOKIE_DOMAIN": ""}),
         "what": "COOKIE_DOMAIN removed"},
        {"b": "S", "get": "/auth", "status": 401, "headers": {
            "Host": "app.example.lan", "X-Forwarded-Proto": "https"},
         "what": "a __Secure- cookie is not ours without COOKIE_DOMAIN"},
        {"b": "S", "do": sighup({"COOKIE_DOMAIN": "example.lan"})},
        {"b": "S", "get": "/auth", "status": 204, "headers": {
            "Host": "app.example.lan", "X-Forwarded-Proto": "https"}},
        {"b": "S", "save_cookie": ("__Secure-otp_auth", "dom")},
        {"b": "S", "post": "/logout", "status": 200, "headers": {
            "Host": "app.example.lan", "X-Forwarded-Proto": "https"},
         "has": [LOGGED_OUT],
         "cookie": {"__Secure-otp_auth": r"^__Secure-otp_auth=; .*Max-Age=0"
                    r"(?=.*; Domain=example\.lan(;|$))",
                    "__Host-otp_auth": r"^__Host-otp_auth=; .*Max-Age=0"
                    r"(?!.*Domain)"}},
        {"b": "S", "set_cookie": {"__Secure-otp_auth": "{saved:dom}"}},
        {"b": "S", "get": "/auth", "status": 401, "headers": {
            "Host": "app.example.lan", "X-Forwarded-Proto": "https"},
         "what": "revoked"},
    ]},
]


def run_table_case(ctx, case):
    ctx.start_fake(case.get("fake_cert", "server"),
                   case.get("fake_mode", "ok"), **case.get("fake_kw", {}))
    text = case.get("config_text")
    env = case.get("env")
    if "setup" in case:
        case["setup"](ctx)
    ctx.start_server(case.get("config"),
                     text=text(ctx) if callable(text) else text,
                     env=env(ctx) if callable(env) else env)
    for i, st in enumerate(case["steps"]):
        run_step(ctx, i, st)


# ---- config and command line (no server) -------------------------------------

GOOD = "API_KEY='%s'\nFROM_NUMBER='%s'\n" % (API_KEY, FROM)


def start_and_check(rows):
    """CONFIG_ROWS for the start and for -t of each (name, text, env, exit,
    stderr regex): both must say the same. A good config (exit 0) only
    under -t, where it prints "configuration OK": a start would serve."""
    out = []
    for name, text, env, rc, err in rows:
        if rc != 0:
            out.append((name, text, env, [], rc, err, None))
        out.append((name + "_check", text, env, ["-t"], rc, err,
                    None if rc else r"^configuration OK$"))
    return out

CONFIG_ROWS = [
    # name, config text, env, args, exit, stderr regex (whole, one line),
    # stdout regex
    ("cfg_token_length_99",
     GOOD + "DEBUG=True\nCOUNTRY_CODE='+1'\nTOKEN_LENGTH=99\n", {}, [], 78,
     r"^config\.cfg:5: TOKEN_LENGTH must be 1\.\.16$", None),
    ("cfg_token_length_0", "TOKEN_LENGTH=0\n", {}, [], 78,
     r"^config\.cfg:1: TOKEN_LENGTH must be 1\.\.16$", None),
    ("cfg_command_env_blanks", "SMS_COMMAND_ENV='PATH HOME'\n", {}, [], 78,
     r"^config\.cfg:1: SMS_COMMAND_ENV must be environment variable names "
     r"separated by commas, like 'PATH,LANG'$", None),
    ("cfg_unknown_key_did_you_mean", GOOD + "TOKEN_LENGHT=4\n", {}, [], 78,
     r"^config\.cfg:3: unknown key TOKEN_LENGHT \(did you mean "
     r"TOKEN_LENGTH\?\)$", None),
    ("cfg_unterminated_string", "API_KEY='abc\nFROM_NUMBER='+12025550111'\n",
     {}, [], 78, r"^config\.cfg:1: .+", None),
    ("cfg_unterminated_string_line2", "API_KEY='abc'\nFROM_NUMBER=\"+1201\n",
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
    ("cfg_api_key_file_missing", "API_KEY_FILE='missing.key'\n"
     "FROM_NUMBER='+12025550111'\n", {}, [], 78,
     r"^config\.cfg:1: API_KEY_FILE\b.*missing\.key", None),
    ("cfg_users_file_missing", GOOD + "USERS_FILE='missing.users'\n", {},
     ["-t"], 78, r"^config\.cfg:3: USERS_FILE missing\.users: No such file "
     r"or directory$", None),
] + start_and_check([
    # The console sender is never picked silently: a set but empty
    # API_KEY, or the console on a listener that is not loopback, needs
    # SMS_PROVIDER='console'.
    ("cfg_api_key_empty", "FROM_NUMBER='%s'\nAPI_KEY=''\n" % FROM, {}, 78,
     r"^config\.cfg:2: API_KEY is set but empty: set API_KEY, or "
     r"SMS_PROVIDER='console' to print codes instead of sending them$"),
    ("cfg_api_key_empty_env", GOOD, {"OTP_API_KEY": ""}, 78,
     r"^environment OTP_API_KEY: API_KEY is set but empty: .*"
     r"SMS_PROVIDER='console'"),
    ("cfg_api_key_file_empty", "API_KEY_FILE='/dev/null'\n", {}, 78,
     r"^config\.cfg:1: API_KEY_FILE /dev/null must hold one key"),
    ("cfg_api_key_empty_console", "API_KEY=''\nSMS_PROVIDER='console'\n",
     {}, 0, None),
    ("cfg_api_key_empty_env_console", "SMS_PROVIDER='console'\n",
     {"OTP_API_KEY": ""}, 0, None),
    ("cfg_api_key_placeholder", "API_KEY='YOUR_API_KEY'\n", {}, 0, None),
    ("cfg_console_any_address", "LISTEN='0.0.0.0:0'\n", {}, 78,
     r"^config\.cfg:1: LISTEN 0\.0\.0\.0:0 is not loopback only, and the "
     r"sender is the console: set API_KEY, or SMS_PROVIDER='console'"),
    ("cfg_console_ipv6_any_placeholder",
     "API_KEY='YOUR_API_KEY'\nLISTEN='[::1]:0,[::]:0'\n", {}, 78,
     r"^config\.cfg:2: LISTEN \[::1\]:0,\[::\]:0 is not loopback"),
    ("cfg_console_bare_port_env", "", {"OTP_LISTEN": "+0"}, 78,
     r"^environment OTP_LISTEN: LISTEN \+0 is not loopback"),
    ("cfg_console_lan_address", "LISTEN='192.0.2.1:5000'\n", {}, 78,
     r"^config\.cfg:1: LISTEN 192\.0\.2\.1:5000 is not loopback"),
    ("cfg_console_any_explicit",
     "LISTEN='0.0.0.0:0'\nSMS_PROVIDER='console'\n", {}, 0, None),
    ("cfg_console_loopbacks",
     "LISTEN='127.0.0.2:0,[::1]:0,localhost:0'\n", {}, 0, None),
]) + [
    ("cfg_trusted_proxy_typo", GOOD + "TRUSTED_PROXY='127.0.0.l'\n", {}, [],
     78, r"^config\.cfg:3: TRUSTED_PROXY must be IP addresses", None),
    ("cfg_metrics_allow_name", GOOD + "METRICS_ALLOW='localhost'\n", {}, [],
     78, r"^config\.cfg:3: METRICS_ALLOW must be IP addresses", None),
    ("cfg_state_dir_missing", GOOD + "STATE_DIR='no/such/dir'\n", {}, [],
     78, r"^STATE_DIR no/such/dir: .*install -d -m 700", None),
    ("cfg_cookie_domain_port", GOOD + "COOKIE_DOMAIN='example.lan:443'\n",
     {}, [], 78, r"^config\.cfg:3: COOKIE_DOMAIN must be a host name like "
     r"'example\.lan' \(no leading dot, no port\)$", None),
    ("cfg_cookie_domain_dot", "COOKIE_DOMAIN='.example.lan'\n", {}, ["-t"],
     78, r"^config\.cfg:1: COOKIE_DOMAIN must be a host name", None),
    ("cfg_cookie_domain_address", "COOKIE_DOMAIN='192.168.1.1'\n", {}, [],
     78, r"^config\.cfg:1: COOKIE_DOMAIN must be a host name", None),
    ("cfg_cookie_domain_ok", GOOD + "COOKIE_DOMAIN='example.lan'\n", {},
     ["-t"], 0, None, r"^configuration OK$"),
    ("cli_version", GOOD, {}, ["--version"], 0, None, r"[0-9]+\.[0-9]+"),
    ("cli_help", GOOD, {}, ["--help"], 0, None, r"-c"),
    ("cli_bad_flag", GOOD, {}, ["--bogus"], 64, None, None),
    ("cli_bad_short_flag", GOOD, {}, ["-x"], 64, None, None),
    ("cli_missing_argument", GOOD, {}, ["-c"], 64, None, None),
]


def run_config_row(ctx, row):
    name, text, env, args, want_rc, err_rx, out_rx = row
    write_config(os.path.join(ctx.dir, "config.cfg"), text)
    cmd = (["-c", "config.cfg"] if args != ["-c"] else []) + args
    rc, out, err = run_once(ctx.dir, None, cmd, env)
    if rc is None:
        raise Fail("%s did not exit within %ds" % (" ".join(args) or "-c",
                                                   RUN_TIMEOUT))
    with open(os.path.join(ctx.dir, "result.txt"), "w") as f:
        f.write("cmd: %s\nexit: %d\n--- stdout\n%s--- stderr\n%s"
                % ([BIN] + cmd, rc, out, err))
    what = "exit %d, stderr %r, stdout %r" % (rc, short(err, 200),
                                               short(out, 80))
    check(rc == want_rc, "want exit %d; got %s" % (want_rc, what))
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
    got = ctx.server.wait_stdout(r"^SMS to \+12015550123: Your token is "
                                 r"([0-9A-F]{8})$", 0, 5.0)
    check(got, "no console SMS line on stdout within 5 s (got %s)"
          % ctx.server.out_lines[-3:])
    code = got[1].group(1)
    ctx.note_sms(got[1].group(0).split(": ", 1)[1], code)
    r = b.verify(code)
    check(r.status == 200, "verify -> %r" % r)


def _traced(pid):
    """Whether every thread of process pid is being traced."""
    tasks = os.listdir("/proc/%d/task" % pid)
    for t in tasks:
        with open("/proc/%d/task/%s/status" % (pid, t)) as f:
            if re.search(r"^TracerPid:\s+0$", f.read(), re.M):
                return False
    return bool(tasks)


def case_no_file_per_request(ctx):
    """Answering touches no file: strace on every thread of the running
    server sees no file system call over 20 requests (civetweb, built
    with its file system, looked for /.htpasswd on each: a stat(2) per
    request, and such a file turned every answer into a 401)."""
    strace = shutil.which("strace")
    check(strace, "no strace (make deps-test installs it)")
    ctx.start_fake()
    srv = ctx.start_server()
    b = ctx.browser()
    check(b.get("/").status == 200, "GET / before tracing")
    out = os.path.join(ctx.dir, "strace.txt")
    tr = subprocess.Popen([strace, "-f", "-qq", "-e", "trace=%file", "-o",
                           out, "-p", str(srv.proc.pid)],
                          stdin=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 10
        while not _traced(srv.proc.pid):
            if tr.poll() is not None:
                check(False, "strace exited: %r" % tr.stderr.read())
            check(time.monotonic() < deadline, "strace did not attach")
            time.sleep(0.05)
        for i in range(20):
            r = b.get("/" if i % 2 else "/style.css")
            check(r.status == 200, "request %d -> %r" % (i, r))
    finally:
        tr.send_signal(signal.SIGINT)
        tr.wait(10)
    with open(out) as f:
        calls = f.read().splitlines()
    check(not calls, "%d file system calls answering 20 requests: %s" % (
        len(calls), calls[:3]))


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
        "2025550103"), 503)
    ctx.fake.mode = "ok"
    a2 = ctx.browser("D")
    n0 = ctx.fake.count()
    r = a2.request_code("2025550104")
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


def case_max_attempts_parallel_100(ctx):
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
    failed = sum(1 for r in res if WRONG_CODE in r.text)
    toomany = sum(1 for r in res if TOO_MANY in r.text)
    with open(os.path.join(ctx.dir, "guesses.txt"), "w") as f:
        f.write("statuses %s, verify-failed %d, too-many %d\n"
                % (statuses, failed, toomany))
    check(failed <= max_attempts, "%d guesses answered %r, want <= "
          "MAX_ATTEMPTS=%d (too-many answers: %d)"
          % (failed, WRONG_CODE, max_attempts, toomany))
    a.cookies, a.csrf = dict(cookies), csrf
    r = a.verify(right)
    check(r.status == 403 and page_kind(r.body) != "success",
          "the right code after 100 wrong guesses -> %r" % r)
    check(ctx.server.alive(), "server died")


def case_api_by_phone_number_parallel(ctx):
    """100 wrong codes at once by number, in 4 spellings of it: exactly
    MAX_ATTEMPTS are counted (4 answered pending, with attempts_left 4 to
    1 each once), the rest find it locked, and the right code is then
    refused."""
    ctx.start_fake()
    ctx.start_server(dict(API_ON, MAX_ATTEMPTS=5))
    b = ctx.browser("app")
    r = b.api("POST", API, {"phone": PHONE})
    check(r.status == 201, "create -> %r" % r)
    ctx.collect_sms(0, b)
    spellings = [PHONE, "+1 201 555 0123", "2015550123", "1-201-555-0123"]
    v = int(b.code, 16)

    def guess(i):
        return Browser(ctx, "G%d" % i).api("POST", BY_PHONE, {
            "phone": spellings[i % 4],
            "code": "%06X" % ((v + (i + 1) * 7919) % (1 << 24))})
    res = _parallel(100, guess)
    check(all(isinstance(r, Resp) and r.status == 200 for r in res),
          "not every guess answered 200: %s" % [getattr(r, "status", r)
                                                for r in res][:10])
    got = [json.loads(r.body) for r in res]
    left = sorted(j["attempts_left"] for j in got if j["status"] == "pending")
    check(left == [1, 2, 3, 4], "pending answers with attempts_left %s, "
          "want [1, 2, 3, 4]" % left)
    check(sum(j["status"] == "max_attempts_reached" for j in got) == 96,
          "the rest: %s" % sorted({j["status"] for j in got}))
    r = b.api("POST", BY_PHONE, {"phone": PHONE, "code": b.code})
    check(r.status == 200 and json.loads(r.body)["status"] ==
          "max_attempts_reached", "the right code after the lock -> %s"
          % short(r.body))


def case_sms_pump_1000_numbers(ctx):
    ctx.start_fake()
    ctx.start_server({})     # defaults: 10 per address per hour, 100 per hour
    cap = 10
    numbers = ["201555%04d" % i for i in range(1000)]
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


def case_trickle_body_big_head(ctx):
    """Headers so long that head and body do not fit civetweb's request
    buffer: civetweb then hands the request over without waiting for the
    body, and otp_demo's own deadline (body_read) must cut the trickle.
    The body's first bytes come with the head (read from the buffer at
    once), the rest a byte a second."""
    def head(a):
        pad = "".join("X-Pad-%d: %s\r\n" % (i, "a" * 900) for i in range(8))
        return ("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                "Content-Type: application/x-www-form-urlencoded\r\n%s"
                "Content-Length: 1000\r\nCookie: %s\r\n\r\nphone=" % (
                    ctx.server.port, pad, "; ".join(
                        "%s=%s" % kv for kv in a.cookies.items()))).encode()
    _trickle_case(ctx, head, lambda i: b"1")


def case_trickle_headers(ctx):
    hdr = b"X-Slow: " + b"a" * 200

    def head(a):
        return ("GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
                % ctx.server.port).encode()
    _trickle_case(ctx, head, lambda i: hdr[i % len(hdr):i % len(hdr) + 1])


def _new_client_get(ctx):
    """A new browser's GET / while others hold the server: its status (or
    why it failed) and how long it took, waiting up to 15 s."""
    t0 = time.monotonic()
    try:
        how = "%d" % ctx.browser("B").get("/", timeout=15).status
    except Fail as e:
        how = str(e)
    return how, time.monotonic() - t0


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
        how, dt = _new_client_get(ctx)
    finally:
        stop.set()
        t.join(5)
        for s in socks:
            s.close()
    check(how == "200" and dt <= 15, "with %d trickling clients and THREADS="
          "%d, GET / -> %s after %.1f s (bound 15 s)"
          % (len(socks), threads, how, dt))


def _busy_client(port, stop, said, reconnect=True):
    """GET /healthz back to back on one keep-alive connection until stop
    is set; appends each answer's Connection header to said, and "closed"
    when the server closed the connection without saying so. With
    reconnect, goes on on a new connection after a close."""
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        try:
            c.request("GET", "/healthz")
            r = c.getresponse()
            r.read()
            said.append((r.getheader("Connection") or "").lower())
        except (OSError, http.client.HTTPException):
            said.append("closed")
            c.close()
        if said[-1] != "keep-alive" and not reconnect:
            break
    c.close()


def case_busy_keep_alive_alone(ctx):
    """A busy keep-alive client with no one waiting for a worker keeps its
    connection past many slices (30 ms each): no reconnect for nothing."""
    ctx.start_fake()
    ctx.start_server({"THREADS": 2})
    stop, said = threading.Event(), []
    t = threading.Thread(target=_busy_client, daemon=True,
                         args=(ctx.server.port, stop, said, False))
    t0 = time.monotonic()
    t.start()
    t.join(0.6)
    stop.set()
    t.join(30)
    dt = time.monotonic() - t0
    check(len(said) >= 10 and all(x == "keep-alive" for x in said),
          "%d answers in %.2f s on one connection, alone: %s" % (
              len(said), dt, sorted(set(said))))


def case_busy_keep_alive_yields(ctx):
    """THREADS busy keep-alive clients hold every worker; a new client is
    still answered within 5 s (slices are 30 ms), since a busy connection
    whose slice has ended is closed when a client waits."""
    threads = 2
    ctx.start_fake()
    ctx.start_server({"THREADS": threads})
    stop = threading.Event()
    said = [[] for _ in range(threads)]
    busy = [threading.Thread(target=_busy_client, daemon=True,
                             args=(ctx.server.port, stop, said[i]))
            for i in range(threads)]
    for t in busy:
        t.start()
    try:
        deadline = time.monotonic() + 10
        while min(len(x) for x in said) < 5 and time.monotonic() < deadline:
            time.sleep(0.01)
        how, dt = _new_client_get(ctx)
    finally:
        stop.set()
        for t in busy:
            t.join(30)
    closes = sum(x.count("close") for x in said)
    check(how == "200" and dt <= 5 and closes >= 1,
          "with %d busy keep-alive clients and THREADS=%d, GET / -> %s "
          "after %.2f s (bound 5 s); busy connections closed %d times" % (
              threads, threads, how, dt, closes))


def case_huge_content_length(ctx):
    """A client announcing 10 MB gets 413 without the server reading it."""
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser("A")
    a.get("/")
    s = _raw_connect(ctx)
    s.sendall(("POST /request HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
               "Content-Type: application/x-www-form-urlencoded\r\n"
               "Content-Length: 10485760\r\nCookie: %s\r\n\r\nphone=201"
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


def case_hung_sends_reload_and_stop(ctx):
    """Eight sends hang on a gateway that never answers (SMS_TIMEOUT 60):
    SIGHUP still takes effect and SIGTERM still stops the server, each
    within 1 s. No lock is held across a send, and otp_stop() ends them."""
    ctx.start_fake(mode="silent")
    ctx.start_server({"SMS_TIMEOUT": 60, "THREADS": 16})
    a = ctx.browser("A")
    check(a.get("/metrics").status == 404, "/metrics before METRICS=True")
    answers = []
    hung = threading.Thread(target=lambda: answers.extend(_parallel(
        8, lambda i: ctx.browser("H%d" % i).request_code(
            "20155501%02d" % (10 + i)))))
    hung.start()
    check(ctx.fake.wait_requests(8, 20) == 8,
          "the 8 sends did not reach the gateway")
    write_config(os.path.join(ctx.dir, "config.cfg"),
                 config_text(dict(ctx.cfg, METRICS=True)))
    n0 = len(ctx.server.err_lines)
    t0 = time.monotonic()
    ctx.server.proc.send_signal(signal.SIGHUP)
    got = ctx.server.wait_log(r"reload: configuration applied", n0, 1.0)
    check(got, "SIGHUP with 8 sends hanging: not applied within 1 s")
    check(a.get("/metrics").status == 200,
          "METRICS=True not in effect after the reload")
    dt_hup = time.monotonic() - t0
    t0 = time.monotonic()
    rc = ctx.server.stop()
    dt = time.monotonic() - t0
    ctx.server.stop = lambda: 0     # already stopped; finish() scans the log
    hung.join(10)
    check(rc == 0, "exit on SIGTERM with 8 sends hanging: %s" % (rc,))
    check(dt <= 1.0, "SIGTERM with 8 sends hanging took %.2f s (bound 1 s)"
          % dt)
    check(not hung.is_alive() and len(answers) == 8,
          "the hanging requests did not end with the server")
    for r in answers:
        check(isinstance(r, Exception) or r.status == 502,
              "a cut-short send answered %s, not 502" % (
                  getattr(r, "status", r),))
    print("  reload %.3f s, stop %.3f s" % (dt_hup, dt))


def _raw_exchange(port, data, timeout=20):
    """Sends data, returns (head bytes, seconds) of the answer."""
    t0 = time.monotonic()
    try:
        got = raw_exchange(port, data, timeout, body=False)
    except OSError as e:
        return ("%s: %s" % (type(e).__name__, e)).encode(), \
            time.monotonic() - t0
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


# ---- the log: one writer thread ----------------------------------------------

LOG_LINE_RE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:"
                         r"[0-9]{2}Z (info|warn|error|debug) \S")
FLOOD_PHONE = "+1201555%04d"    # +1 201 555 1000 on: a line of its own


def _console_server(ctx, overrides=None):
    """A console-sender server with the limits off."""
    ctx.start_fake()
    ctx.start_server(dict(harness.LIMITS_OFF, API_KEY="YOUR_API_KEY",
                          THREADS=8, **(overrides or {})))


def _torn_lines(lines):
    """Lines that are not one whole log line: no stamp and level at the
    start, or a second stamp inside (two lines run together)."""
    return [ln for ln in lines if not LOG_LINE_RE.match(ln) or
            re.search(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:]{8}Z", ln[20:])]


def _log_counts(lines, rx):
    """{group 1: how many lines match rx} over lines."""
    out = {}
    for ln in lines:
        m = re.search(rx, ln)
        if m:
            out[m.group(1)] = out.get(m.group(1), 0) + 1
    return out


def _flood_one(ctx, b, phone, verify):
    """One request (and a wrong code for it): the last two digits of
    phone, or an exception's text if an answer was not the expected."""
    r = b.request_code(phone)
    if r.status != 200:
        return "request %s -> %d" % (phone, r.status)
    if verify:
        code = harness.console_code(ctx.server, phone, 0, 10.0)
        r = b.verify(wrong_code(code))
        if r.status != 403:
            return "wrong code for %s -> %d" % (phone, r.status)
    return phone[-2:]


def case_log_flood_whole_lines(ctx):
    """Six clients at once, 40 requests and 40 wrong codes each: every
    line they cause is in the log exactly once (request, sent, failed:
    counted per masked number), every line is whole (lines gathered by
    the log writer are never torn or run together), and so is stdout."""
    _console_server(ctx)
    nthreads, per = 6, 40
    bs = [ctx.browser("F%d" % t) for t in range(nthreads)]
    for b in bs:
        b.ensure_session()
    n0 = len(ctx.server.err_lines)

    def client(t):
        return [_flood_one(ctx, bs[t], FLOOD_PHONE % (1000 + t * per + i),
                           True) for i in range(per)]
    results = _parallel(nthreads, client)
    bad = [r for r in results if isinstance(r, Exception)] + \
        [x for r in results if isinstance(r, list) for x in r if len(x) != 2]
    check(not bad, "the flood: %s" % short(str(bad[:3]), 300))
    want = {}
    for r in results:
        for nn in r:
            want[nn] = want.get(nn, 0) + 1
    total = nthreads * per
    got = ctx.server.wait_log(r"", n0 + 3 * total - 1, 10.0)
    check(got, "fewer than %d log lines after the flood" % (3 * total))
    time.sleep(0.3)     # nothing more may come: a duplicate would
    lines = ctx.server.err_lines[n0:]
    torn = _torn_lines(lines) + [ln for ln in ctx.server.out_lines
                                 if not re.fullmatch(r"SMS to \+[0-9]+: .+",
                                                     ln)]
    check(not torn, "torn or run-together lines: %s" % short(str(torn[:3]),
                                                             300))
    for kind in ("request", "sent"):
        counts = _log_counts(lines, r" info %s to=\+1\*{8}([0-9]{2})(?: |$)"
                             % kind)
        check(counts == want, "'%s' lines per number: %s, want %s"
              % (kind, sorted(counts.items())[:5], sorted(want.items())[:5]))
    failed = sum(1 for ln in lines if ln.endswith(" info failed ip=127.0.0.1"))
    check(failed == total and len(lines) == 3 * total,
          "%d 'failed' lines and %d in all, want %d and %d"
          % (failed, len(lines), total, 3 * total))
    sms = _log_counts(ctx.server.out_lines, r"^SMS to (\+[0-9]+):")
    check(sorted(sms) == sorted(FLOOD_PHONE % (1000 + i) for i in range(total))
          and set(sms.values()) == {1}, "stdout: not one SMS per number")


def case_log_sigterm_keeps_lines(ctx):
    """SIGTERM while eight clients are still sending: every request that
    was answered has its lines in the log (the writer writes what is
    queued before the process exits, requests that finish after the
    signal too), none torn, none more often than requests were sent.
    limits.state cannot be written (limits.state.tmp is a directory), so
    the last lines are the error of its save at exit, logged just before
    the writer stops: they are there too."""
    state = os.path.join(ctx.dir, "state")
    os.makedirs(os.path.join(state, "limits.state.tmp"), 0o700)
    _console_server(ctx, {"STATE_DIR": state})
    nthreads, per = 8, 400
    bs = [ctx.browser("S%d" % t) for t in range(nthreads)]
    for b in bs:
        b.ensure_session()
    n0 = len(ctx.server.err_lines)
    answered = threading.Semaphore(0)

    def client(t):
        done = []
        for i in range(per):
            try:
                got = _flood_one(ctx, bs[t], FLOOD_PHONE % (1000 + t * per
                                                            + i), False)
            except Exception:   # noqa: BLE001 (the server stopped)
                break
            if len(got) != 2:
                break
            done.append(got)
            answered.release()
        return done
    stopper = threading.Thread(target=lambda: (
        [answered.acquire(timeout=30) for _ in range(200)],
        ctx.server.stop()))
    stopper.start()
    results = _parallel(nthreads, client)
    stopper.join(60)
    check(ctx.server.rc == 0, "exit status after SIGTERM: %s"
          % (ctx.server.rc,))
    done = [nn for r in results if isinstance(r, list) for nn in r]
    check(200 <= len(done) < nthreads * per, "%d requests answered: the "
          "flood did not overlap SIGTERM" % len(done))
    lines = ctx.server.err_lines[n0:]
    print("  %d requests answered, %d log lines" % (len(done), len(lines)))
    check(not _torn_lines(lines), "torn lines: %s"
          % short(str(_torn_lines(lines)[:3]), 300))
    stop = [i for i, ln in enumerate(lines)
            if ln.endswith(" info signal 15: stopping")]
    check(stop and any(re.search(r" error state_write: cannot write "
                                 r"\S*/limits\.state: ", ln)
                       for ln in lines[stop[0]:]),
          "no 'signal 15: stopping' line, or no error of the save at exit "
          "after it: %s" % short(" | ".join(lines[-3:]), 300))
    for kind in ("request", "sent"):
        counts = _log_counts(lines, r" info %s to=\+1\*{8}([0-9]{2})(?: |$)"
                             % kind)
        short_of = {nn: n for nn in set(done) for n in [done.count(nn)]
                    if counts.get(nn, 0) < n}
        check(not short_of, "'%s' lines missing after SIGTERM for %s"
              % (kind, sorted(short_of)[:5]))
        check(sum(counts.values()) <= nthreads * per,
              "more '%s' lines than requests" % kind)


def case_log_prompt_when_idle(ctx):
    """At low load a line is written at once: after each of 20 requests
    sent one at a time, with nothing else happening, its 'sent' line
    comes (within a generous 5 s) without waiting for more lines or for
    the shutdown."""
    _console_server(ctx)
    b = ctx.browser()
    for i in range(20):
        n0 = len(ctx.server.err_lines)
        phone = FLOOD_PHONE % (1000 + i)
        r = b.request_code(phone)
        check(r.status == 200, "request %s -> %r" % (phone, r))
        check(ctx.server.wait_log(r" info sent to=\+1\*{8}%s$" % phone[-2:],
                                  n0, 5.0),
              "request %d: its 'sent' line was not written" % (i + 1))


# ---- restarts, key files, TLS listeners --------------------------------------

def _verify_flow(ctx, b, phone):
    """Request a code for phone in browser b and verify it; returns the
    success response."""
    n0 = ctx.fake.count()
    r = b.request_code(phone)
    check(r.status == 200, "request %s -> %r" % (phone, r))
    ctx.collect_sms(n0, b)
    check(b.code, "no code reached the fake API")
    r = b.verify(b.code)
    check(r.status == 200 and page_kind(r.body) == "success",
          "verify -> %r" % r)
    return r


def case_auth_state_dir_restart(ctx):
    """With STATE_DIR, session.key (32 bytes, 0600) is made on first start
    and reused: otp_auth cookies and CSRF tokens survive a restart."""
    state = os.path.join(ctx.dir, "state")
    os.makedirs(state)
    key = os.path.join(state, "session.key")
    ctx.start_fake()
    ctx.start_server({"STATE_DIR": state})
    check(os.path.isfile(key), "no %s after the first start" % key)
    st = os.stat(key)
    check(st.st_mode & 0o777 == 0o600, "session.key mode %o, want 600"
          % (st.st_mode & 0o777))
    check(st.st_size == 32, "session.key is %d bytes, want 32" % st.st_size)
    with open(key, "rb") as f:
        key1 = f.read()
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    r = a.get("/auth")
    check(r.status == 204, "GET /auth after verifying -> %r" % r)
    b = ctx.browser("B")
    check(b.get("/").status == 200, "B: GET / failed")

    ctx.restart_server()
    with open(key, "rb") as f:
        check(f.read() == key1, "session.key changed on restart")
    check(os.stat(key).st_mode & 0o777 == 0o600, "session.key mode changed")
    r = a.get("/auth")
    check(r.status == 204, "GET /auth with the same otp_auth after a restart "
          "with the same STATE_DIR -> %r, want 204" % r)
    check(r.header("X-Otp-Phone") == PHONE_E164, "X-Otp-Phone %r after the "
          "restart" % r.header("X-Otp-Phone"))
    n0 = ctx.fake.count()
    r = b.request_code(PHONE2)
    ctx.collect_sms(n0, b)
    check(r.status == 200, "POST /request with the otp_sid and CSRF token "
          "from before the restart -> %r, want 200" % r)


def case_auth_no_state_dir_restart(ctx):
    """Without STATE_DIR the keys are per process: a restart invalidates
    otp_auth cookies and CSRF tokens."""
    ctx.start_fake()
    ctx.start_server({})
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    check(a.get("/auth").status == 204, "GET /auth after verifying failed")
    b = ctx.browser("B")
    check(b.get("/").status == 200, "B: GET / failed")
    ctx.restart_server()
    r = a.get("/auth")
    check(r.status == 401, "GET /auth with an otp_auth from the previous "
          "process -> %r, want 401" % r)
    r = b.request_code(PHONE2)
    check(r.status == 403 and ctx.fake.count() == 1, "POST /request with a "
          "CSRF token from the previous process -> %r, want 403" % r)


# ---- logout and revocation across restarts; the cookie itself ---------------

def _logout(ctx, b):
    """POST /logout from browser b (a fresh page for its token first)."""
    check(b.get("/").status == 200, "%s: GET / failed" % b.name)
    r = b.post_form("/logout", {})
    check(r.status == 200 and LOGGED_OUT in r.text, "logout -> %r" % r)
    return r


def _replay(ctx, value, name="otp_auth"):
    """GET /auth from a new client holding only otp_auth=value."""
    c = harness.Client(ctx.server.port)
    c.cookies[name] = value
    return c.get("/auth").status


def _wait_file(path, rx, timeout=3.0):
    """The text of path once it matches rx (or Fail)."""
    end = time.monotonic() + timeout
    while True:
        try:
            with open(path) as f:
                text = f.read()
            if re.search(rx, text, re.M):
                return text
        except FileNotFoundError:
            text = None
        if time.monotonic() > end:
            raise Fail("%s does not match %r within %.0f s: %r"
                       % (path, rx, timeout, text))
        time.sleep(0.05)


def _crash_restart(ctx):
    """SIGKILL (no shutdown write), then the same server again."""
    old = ctx.server
    old.proc.kill()
    old.proc.wait()
    old.stop()
    ctx.old_servers.append(old)
    ctx.server = old.again(".%d" % (len(ctx.old_servers) + 1))
    ctx.server.start()


def case_logout_state_dir_crash(ctx):
    """With STATE_DIR a logout is on disk within a second (revoked.state,
    0600): a SIGKILL right after it, then a restart, and the old cookie is
    still refused; a session not logged out survives both restarts."""
    state = os.path.join(ctx.dir, "state")
    os.makedirs(state, 0o700)
    path = os.path.join(state, "revoked.state")
    ctx.start_fake()
    ctx.start_server({"STATE_DIR": state})
    a, b = ctx.browser("A"), ctx.browser("B")
    _verify_flow(ctx, a, PHONE)
    _verify_flow(ctx, b, PHONE2)
    gone, kept = a.cookies["otp_auth"], b.cookies["otp_auth"]
    check(_replay(ctx, gone) == 204 and _replay(ctx, kept) == 204,
          "both sessions valid before the logout")
    check(not os.path.exists(path), "revoked.state before any logout")
    _logout(ctx, a)
    rid = gone.split(".")[3]
    text = _wait_file(path, r"^R %s [0-9]+$" % rid)
    check(text.startswith("otp_demo-revoked 1\nF 0\n"), "revoked.state "
          "starts %r" % text[:40])
    check(os.stat(path).st_mode & 0o777 == 0o600, "revoked.state mode %o"
          % (os.stat(path).st_mode & 0o777))
    _crash_restart(ctx)
    check(_replay(ctx, gone) == 401, "the logged-out cookie after a crash "
          "and a restart: want 401")
    check(_replay(ctx, kept) == 204, "the other session after the crash: "
          "want 204")
    ctx.restart_server()
    check(_replay(ctx, gone) == 401, "the logged-out cookie after a second "
          "restart: want 401")
    check(_replay(ctx, kept) == 204, "the other session after the second "
          "restart: want 204")
    _logout(ctx, b)
    ctx.restart_server()    # written at once or on shutdown: either way
    check(_replay(ctx, kept) == 401, "B's cookie after B's logout and a "
          "restart: want 401")


def case_logout_no_state_dir_restart(ctx):
    """Without STATE_DIR revocations are in memory only, which loses
    nothing: the cookie key is new at each start, so every session ends
    with the process, revoked or not; no file is written anywhere."""
    ctx.start_fake()
    ctx.start_server({})
    a, b = ctx.browser("A"), ctx.browser("B")
    _verify_flow(ctx, a, PHONE)
    _verify_flow(ctx, b, PHONE2)
    gone, kept = a.cookies["otp_auth"], b.cookies["otp_auth"]
    _logout(ctx, a)
    check(_replay(ctx, gone) == 401, "the logged-out cookie: want 401")
    ctx.restart_server()
    check(_replay(ctx, gone) == 401 and _replay(ctx, kept) == 401,
          "after a restart without STATE_DIR: want 401 for both")
    check(not [f for f in os.listdir(ctx.dir) if "revoked" in f],
          "a revoked.state without STATE_DIR: %s" % os.listdir(ctx.dir))


def _state_dir(ctx, config=None):
    """A STATE_DIR made by a start (session.key), left running: its path."""
    state = os.path.join(ctx.dir, "state")
    os.makedirs(state, 0o700)
    ctx.start_fake()
    ctx.start_server(dict(config or {}, STATE_DIR=state))
    return state


def _write_state(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)


def case_revoked_state_corrupt(ctx):
    """A malformed revoked.state stops the start (exit 78, file and line,
    what moving it away costs) and nothing is written over it or over the
    other state files; -t says the same."""
    state = _state_dir(ctx)
    _verify_flow(ctx, ctx.browser("A"), PHONE)
    ctx.server.stop()
    files = {}
    path = os.path.join(state, "revoked.state")
    _write_state(path, "otp_demo-revoked 1\nF 0\nR 00112233 99999999999\n"
                 "R 0011 junk\n")
    for name in sorted(os.listdir(state)):
        with open(os.path.join(state, name), "rb") as f:
            files[name] = f.read()
    check("limits.state" in files and "session.key" in files,
          "state files after the first run: %s" % sorted(files))
    for args in ([], ["-t"]):
        rc, out, err = run_once(ctx.dir, None, ["-c", "config.cfg"] + args)
        check(rc == 78, "%s with a malformed revoked.state: exit %s, want 78 "
              "(%s)" % (args or "start", rc, short(err, 200)))
        check(re.search(r"/state/revoked\.state:4: not a revoked\.state "
                        r"line; move the file away to start \(the sessions "
                        r"it ended become valid again until they expire\)$",
                        err.strip(), re.M),
              "stderr %r" % short(err, 300))
    for name, data in files.items():
        with open(os.path.join(state, name), "rb") as f:
            check(f.read() == data, "%s changed by the failed start" % name)


def case_revoked_state_drops_ended(ctx):
    """revoked.state is read at start without the sessions that have
    ended since (and written again without them); the ones that have not
    stay revoked."""
    state = _state_dir(ctx)
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    live = a.cookies["otp_auth"]
    rid = live.split(".")[3]
    ctx.server.stop()
    now = int(time.time())
    path = os.path.join(state, "revoked.state")
    _write_state(path, "otp_demo-revoked 1\nF 0\nR 00000000000000ab %d\n"
                 "R %s %d\n" % (now - 1, rid, now + 3600))
    ctx.restart_server()
    check(_replay(ctx, live) == 401, "a session revoked in the file: 401")
    text = _wait_file(path, r"(?s)\A(?!.*00000000000000ab)", 3.0)
    check(re.search(r"^R %s %d$" % (rid, now + 3600), text, re.M),
          "the live entry is gone from the rewritten file: %r" % text)


def case_revoked_state_write_fails(ctx):
    """A revoked.state that cannot be written (here revoked.state.tmp is
    a directory): the logout still holds in memory, the failure is logged
    once and retried after STATE_SAVE_INTERVAL, not every second."""
    state = _state_dir(ctx, {"STATE_SAVE_INTERVAL": 10})
    a = ctx.browser("A")
    _verify_flow(ctx, a, PHONE)
    gone = a.cookies["otp_auth"]
    tmp = os.path.join(state, "revoked.state.tmp")
    os.mkdir(tmp)
    n0 = len(ctx.server.err_lines)
    _logout(ctx, a)
    rx = r"error state_write: cannot write \S*/revoked\.state: "
    check(ctx.server.wait_log(rx, n0, 3.0), "no error logged for the write")
    check(_replay(ctx, gone) == 401, "the logged-out cookie: want 401")
    time.sleep(2.5)
    errors = [ln for ln in ctx.server.err_lines[n0:] if re.search(rx, ln)]
    check(len(errors) == 1, "%d errors in 2.5 s, want 1 (retried every "
          "second?)" % len(errors))
    os.rmdir(tmp)
    _wait_file(os.path.join(state, "revoked.state"),
               r"^R %s " % gone.split(".")[3], 12.0)


def case_revoked_table_full(ctx):
    """A full table (1024 sessions revoked and not yet ended, here from
    the file) takes one more: the session that ends soonest leaves it and
    every session that would end by then ends now, with a warning. The
    revoked session stays revoked, older sessions end early, newer ones
    are untouched."""
    state = _state_dir(ctx)
    ctx.server.stop()
    far = int(time.time()) + 7 * 86400
    path = os.path.join(state, "revoked.state")
    _write_state(path, "otp_demo-revoked 1\nF 0\n" + "".join(
        "R %016x %d\n" % (0xfeed0000 + i, far) for i in range(1024)))
    ctx.restart_server()
    older, revoked, newer = (ctx.browser(n) for n in "OXN")
    _verify_flow(ctx, older, "2025550111")
    _verify_flow(ctx, revoked, PHONE)
    time.sleep(1.1)     # issued a second later: it ends a second later
    _verify_flow(ctx, newer, PHONE2)
    cookies = {b.name: b.cookies["otp_auth"] for b in (older, revoked, newer)}
    check(all(_replay(ctx, v) == 204 for v in cookies.values()),
          "three sessions before the logout")
    n0 = len(ctx.server.err_lines)
    _logout(ctx, revoked)
    check(ctx.server.wait_log(r"warn revocations: table full", n0, 2.0),
          "no warning that the table is full")
    check(_replay(ctx, cookies["X"]) == 401, "the revoked session: want 401")
    check(_replay(ctx, cookies["O"]) == 401, "a session issued before it "
          "(ends before it): want 401, ended early")
    check(_replay(ctx, cookies["N"]) == 204, "a session issued after it: "
          "want 204")
    until = int(cookies["X"].split(".")[0]) + 43200
    text = _wait_file(path, r"^F %d$" % until)
    check(len(re.findall(r"^R ", text, re.M)) == 1024, "revoked.state "
          "holds %d entries, want 1024" % len(re.findall(r"^R ", text, re.M)))
    ctx.restart_server()
    check(_replay(ctx, cookies["X"]) == 401 and
          _replay(ctx, cookies["O"]) == 401 and
          _replay(ctx, cookies["N"]) == 204, "the floor after a restart")


def _auth_key(state):
    """The otp_auth key, as otp_demo derives it from session.key."""
    with open(os.path.join(state, "session.key"), "rb") as f:
        return hmac.new(f.read(), b"auth", hashlib.sha256).digest()


def _mint(key, text):
    """text and its mac, as otp_demo signs an otp_auth cookie."""
    return text + "." + hmac.new(key, text.encode(), hashlib.sha256) \
        .hexdigest()[:32]


def case_auth_cookie_minted(ctx):
    """Cookies signed with the real key (an attacker who had it, or an old
    build): the checks after the MAC. The previous version's format, an
    issue time in the future, and a TTL longer than SESSION_TTL are
    refused; lowering SESSION_TTL (SIGHUP) below a session's age ends it,
    and raising it back brings it back, never past its own TTL."""
    state = _state_dir(ctx, {"SESSION_TTL": 3600})
    key = _auth_key(state)
    now = int(time.time())
    digits = PHONE_E164[1:]
    good = _mint(key, "%d.3600.%s.0123456789abcdef" % (now, digits))
    check(_replay(ctx, good) == 204, "a cookie minted as otp_demo makes "
          "them: want 204 (is the test's key right?)")
    cases = [
        ("the old format <expiry>.<digits>.<mac>",
         _mint(key, "%d.%s" % (now + 3600, digits)), 401),
        ("issued an hour in the future",
         _mint(key, "%d.3600.%s.0123456789abcdef" % (now + 3600, digits)),
         401),
        ("issued 2 h ago with a TTL of 30 days, under SESSION_TTL 3600",
         _mint(key, "%d.2592000.%s.0123456789abcdef" % (now - 7200, digits)),
         401),
        ("issued 61 s ago with a TTL of 60",
         _mint(key, "%d.60.%s.0123456789abcdef" % (now - 61, digits)), 401),
        ("a leading zero in the time",
         _mint(key, "0%d.3600.%s.0123456789abcdef" % (now, digits)), 401),
        ("an upper-case id",
         _mint(key, "%d.3600.%s.0123456789ABCDEF" % (now, digits)), 401),
        ("a field more",
         _mint(key, "%d.3600.%s.0123456789abcdef.1" % (now, digits)), 401),
    ]
    for what, v, want in cases:
        got = _replay(ctx, v)
        check(got == want, "%s: %d, want %d" % (what, got, want))
    aged = _mint(key, "%d.3600.%s.00000000000000aa" % (now - 120, digits))
    check(_replay(ctx, aged) == 204, "a session 120 s old, TTL 3600: 204")
    sighup({"SESSION_TTL": 60})(ctx, None)
    check(_replay(ctx, aged) == 401, "SESSION_TTL lowered to 60 below the "
          "session's age: want 401")
    check(_replay(ctx, good) == 204, "a session younger than 60 s: 204")
    sighup({"SESSION_TTL": 86400})(ctx, None)
    check(_replay(ctx, aged) == 204, "SESSION_TTL raised back: 204")
    gone = _mint(key, "%d.3600.%s.00000000000000bb" % (now - 3601, digits))
    check(_replay(ctx, gone) == 401, "raised to 86400: a session issued "
          "with 3600, 3601 s ago: want 401")


def case_api_key_file(ctx):
    """API_KEY_FILE: the key comes from the file (newline stripped) and
    beats an inline API_KEY."""
    key, inline = "KEYfile-5c1d9e0a7b3f4a62", "KEYinline-0d9f8e7c6b5a"
    ctx.secrets["the API_KEY_FILE key"] = key
    ctx.secrets["the inline API_KEY"] = inline
    with open(os.path.join(ctx.dir, "api.key"), "w") as f:
        f.write(key + "\n")
    os.chmod(os.path.join(ctx.dir, "api.key"), 0o600)
    ctx.start_fake(api_key=key)
    ctx.start_server({"API_KEY": inline, "API_KEY_FILE": "api.key"})
    a = ctx.browser("A")
    n0 = ctx.fake.count()
    r = a.request_code(PHONE)
    new = ctx.collect_sms(n0, a)
    check(len(new) == 1, "%d SMS API calls, want 1" % len(new))
    auth = new[0]["headers"].get("authorization")
    check(auth == "Bearer " + key, "Authorization %r, want 'Bearer ' + the "
          "key from API_KEY_FILE (without its newline)" % auth)
    check(r.status == 200 and new[0]["verdict"] == "ok",
          "request -> %r (fake's verdict %s)" % (r, new[0]["verdict"]))
    r = a.verify(a.code)
    check(r.status == 200, "verify -> %r" % r)


def cert_fingerprint(der):
    return ":".join("%02X" % c for c in hashlib.sha256(der).digest())


def tls_peer_cert(port):
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        with insecure_tls().wrap_socket(s) as t:
            return t.getpeercert(binary_form=True), t.version()


FINGERPRINT = r"certificate (\S+) sha256=((?:[0-9A-F]{2}:){31}[0-9A-F]{2})"


def case_tls_listener(ctx):
    """LISTEN 's': a self-signed CERT_FILE is made (0600) on first start and
    reused after; HTTPS works; cookies are Secure; HSTS is sent."""
    certdir = os.path.join(ctx.dir, "tls")
    os.makedirs(certdir)
    pem = os.path.join(certdir, "otp_demo.pem")
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0s", "CERT_FILE": pem})
    check(srv.scheme == "https", "the listening line says %s, want https"
          % srv.scheme)
    check(os.path.isfile(pem), "CERT_FILE %s was not generated" % pem)
    mode = os.stat(pem).st_mode & 0o777
    check(mode == 0o600, "CERT_FILE mode %o, want 600" % mode)
    got = srv.wait_log(FINGERPRINT, 0, 2.0)
    check(got, "no 'certificate PATH sha256=...' line in the log")
    fp1 = got[1].group(2)
    der, version = tls_peer_cert(srv.port)
    check(cert_fingerprint(der) == fp1, "the served certificate's SHA-256 %s "
          "is not the logged %s" % (cert_fingerprint(der), fp1))
    check(version in ("TLSv1.2", "TLSv1.3"), "negotiated %s" % version)
    with open(pem, "rb") as f:
        pem1 = f.read()

    a = ctx.browser("A")
    r = a.get("/")
    check(r.status == 200, "HTTPS GET / -> %r" % r)
    check_security_headers("HTTPS GET /", r)
    hsts = r.header("Strict-Transport-Security")
    check(hsts and re.search(r"max-age=[1-9][0-9]*", hsts),
          "HTTPS GET /: Strict-Transport-Security %r" % hsts)
    # Over TLS every cookie is a __Host- one: Secure, Path=/, no Domain.
    sid = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_sid=")]
    check(sid and re.search(r"; Secure(;|$)", sid[0]) and
          re.search(r"; Path=/(;|$)", sid[0]),
          "HTTPS GET /: __Host-otp_sid cookie %r lacks Secure" % sid)
    n0 = ctx.fake.count()
    r = a.request_code(PHONE)
    ctx.collect_sms(n0, a)
    vid = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_vid=")]
    check(r.status == 200 and vid and re.search(r"; Secure(;|$)", vid[0]),
          "HTTPS POST /request -> %r, otp_vid %r (want 200, Secure)"
          % (r, vid))
    check(r.header("Strict-Transport-Security"), "POST /request: no HSTS")
    r = a.verify(a.code)
    auth = [c for c in r.all("Set-Cookie") if c.startswith("__Host-otp_auth=")]
    check(r.status == 200 and auth and re.search(r"; Secure(;|$)", auth[0]),
          "HTTPS POST /verify -> %r, otp_auth %r (want 200, Secure)"
          % (r, auth))
    r = a.get("/nope")
    check(r.status == 404 and r.header("Strict-Transport-Security"),
          "HTTPS 404 -> %r, HSTS %r" % (r, r.header(
              "Strict-Transport-Security")))

    srv = ctx.restart_server()
    got = srv.wait_log(FINGERPRINT, 0, 2.0)
    check(got, "second start: no 'certificate ... sha256=' line")
    check(got[1].group(2) == fp1, "second start: fingerprint %s, want the "
          "first start's %s (CERT_FILE reused)" % (got[1].group(2), fp1))
    check(not srv.wait_log(r"generated", 0, 0.1), "second start generated a "
          "new certificate")
    with open(pem, "rb") as f:
        check(f.read() == pem1, "CERT_FILE changed on the second start")
    der, _ = tls_peer_cert(srv.port)
    check(cert_fingerprint(der) == fp1, "second start serves another "
          "certificate")
    check(ctx.browser("B").get("/").status == 200, "HTTPS GET / after the "
          "restart failed")


def case_tls_redirect_http(ctx):
    """LISTEN with a plain and a TLS port and REDIRECT_HTTP: the plain port
    answers 301 to the same path on the TLS port."""
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0,127.0.0.1:0s",
                            "CERT_FILE": os.path.join(ctx.dir, "otp.pem"),
                            "REDIRECT_HTTP": True})
    ports = srv.ports()
    check(len(ports.get("http", [])) == 1 and len(ports.get("https", [])) == 1,
          "want one http and one https 'listening on' line, got %s" % ports)
    plain, tls = ports["http"][0], ports["https"][0]
    bad = []
    # The path may come back re-encoded, but must mean the same and be a
    # single header: a %0d%0a in the path must not split the response.
    for method, path in (("GET", "/x?y"), ("GET", "/"), ("HEAD", "/x?y"),
                         ("GET", "/request?a=1&b=%2F"), ("GET", "/a%20b"),
                         ("GET", "/a%0d%0aSet-Cookie:%20evil=1?q=%0d%0a")):
        conn = http.client.HTTPConnection("127.0.0.1", plain, timeout=10)
        try:
            conn.request(method, path)
            r = conn.getresponse()
            r.read()
        finally:
            conn.close()
        resp = Resp(r.status, r.reason, r.getheaders(), b"", 0)
        want = "https://127.0.0.1:%d%s" % (tls, path)
        loc = resp.header("Location") or ""
        same = loc == want or (
            re.fullmatch(r"[!-~]+", loc) and urllib.parse.unquote(loc) ==
            urllib.parse.unquote(want))
        if r.status != 301 or not same:
            bad.append("plain %s %s -> %d Location %r, want 301 %s" % (
                method, path, r.status, loc, want))
        injected = [(k, v) for k, v in resp.headers if "evil" in v and
                    k.lower() != "location"]
        if injected:
            bad.append("plain %s %s: injected header(s) %s" % (
                method, path, injected))
        try:
            check_security_headers("plain %s %s" % (method, path), resp)
        except Fail as e:
            bad.append(str(e))
    check(not bad, "; ".join(bad))
    srv.port, srv.scheme = tls, "https"
    r = ctx.browser("A").get("/")
    check(r.status == 200 and r.header("Strict-Transport-Security"),
          "HTTPS GET / on the TLS port -> %r" % r)


def _tls_legacy_client():
    c = insecure_tls()
    c.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        c.minimum_version = ssl.TLSVersion.TLSv1
        c.maximum_version = ssl.TLSVersion.TLSv1_1
    return c


def _local_tls11_works():
    """True if this Python/OpenSSL can speak TLS 1.1 to itself."""
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(*cert("server", CERTS))
    srv.set_ciphers("DEFAULT:@SECLEVEL=0")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        srv.minimum_version = ssl.TLSVersion.TLSv1
        srv.maximum_version = ssl.TLSVersion.TLSv1_1
    a, b = socket.socketpair()
    a.settimeout(5)
    b.settimeout(5)
    result = {}

    def serve():
        try:
            with srv.wrap_socket(a, server_side=True) as t:
                result["server"] = t.version()
        except (ssl.SSLError, OSError) as e:
            result["server_error"] = str(e)
    t = threading.Thread(target=serve)
    t.start()
    try:
        with _tls_legacy_client().wrap_socket(b) as c:
            result["client"] = c.version()
    except (ssl.SSLError, OSError) as e:
        result["client_error"] = str(e)
    t.join(5)
    a.close()
    b.close()
    return result.get("client") == "TLSv1.1", result


def case_tls_refuses_tls11(ctx):
    """A TLS 1.0/1.1 client gets no connection (a TLS 1.2 one does)."""
    ok, how = _local_tls11_works()
    if not ok:
        raise Skip("the local OpenSSL cannot speak TLS 1.1 even to itself "
                   "(%s); TLS 1.0/1.1 refusal not checked" % how)
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0s",
                            "CERT_FILE": os.path.join(ctx.dir, "otp.pem")})
    try:
        with socket.create_connection(("127.0.0.1", srv.port), timeout=10) \
                as s:
            with _tls_legacy_client().wrap_socket(s) as t:
                v = t.version()
        raise Fail("a TLS 1.0/1.1-only client connected (%s)" % v)
    except (ssl.SSLError, ConnectionError) as e:
        with open(os.path.join(ctx.dir, "tls11.txt"), "w") as f:
            f.write("refused: %s\n" % e)
    _, version = tls_peer_cert(srv.port)
    check(version in ("TLSv1.2", "TLSv1.3"), "a modern client negotiated %s"
          % version)
    check(ctx.browser().get("/").status == 200, "HTTPS GET / failed")



def case_log_syslog(ctx):
    """LOG='syslog': log lines go to syslog (/dev/log), tagged otp_demo,
    and none to stderr. The test is /dev/log's only reader, so it needs
    root and no syslog daemon of the machine's."""
    import socket as _socket
    path = "/dev/log"
    if os.geteuid() != 0 or os.path.exists(path):
        raise Skip("needs root and a free /dev/log (a syslog daemon runs)")
    sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(0.2)
    proc = None
    try:
        cfgfile = os.path.join(ctx.dir, "syslog.cfg")
        with open(cfgfile, "w") as f:
            f.write("LISTEN='127.0.0.1:0'\nSMS_PROVIDER='console'\n"
                    "LOG='syslog'\n")
        err = open(os.path.join(ctx.dir, "syslog.stderr"), "w+")
        proc = subprocess.Popen([BIN, "-c", cfgfile], stdout=subprocess.DEVNULL,
                                stderr=err, env=clean_env())
        lines, port, deadline = [], None, time.monotonic() + 10
        while port is None and time.monotonic() < deadline:
            try:
                lines.append(sock.recv(4096).decode("utf-8", "replace"))
            except _socket.timeout:
                continue
            m = re.search(r"listening on http://127\.0\.0\.1:(\d+)",
                          lines[-1])
            if m:
                port = int(m.group(1))
        check(port, "no 'listening on' message in syslog: %r" % lines)
        check(all(re.match(r"<\d+>.*otp_demo\[%d\]: " % proc.pid, l)
                  for l in lines), "untagged syslog messages: %r" % lines)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("GET", "/")
        check(conn.getresponse().status == 200, "GET / failed")
        proc.send_signal(signal.SIGTERM)
        check(proc.wait(8) == 0, "exit on SIGTERM")
        while True:
            try:
                lines.append(sock.recv(4096).decode("utf-8", "replace"))
            except _socket.timeout:
                break
        check(any("stopping" in l for l in lines),
              "no 'stopping' message in syslog: %r" % lines[-3:])
        err.seek(0)
        check(err.read() == "", "log lines on stderr with LOG='syslog'")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
        os.unlink(path)


# ---- USERS_FILE: who may pass, who they are ---------------------------------

# PHONE (+12015550123) is alice, in two groups; PHONE2 (+12015550187) is
# not listed; +1201555014N are listed without groups, +1201555015N not.
USERS = ("# who may pass /auth\n"
         "+12015550123 alice admins,ops\n"
         "\n"
         "+12015550140\tbob   # no groups\n"
         + "".join("+1201555014%d u%d\n" % (i, i) for i in range(1, 6)))
LISTED = ["201555014%d" % i for i in range(6)]
UNLISTED = ["201555015%d" % i for i in range(6)]
USERS_ON = {"USERS_FILE": "users.txt"}
IDENTITY = ("Remote-User", "Remote-Groups", "Remote-Phone", "X-Otp-Phone")


def write_users(ctx, text=USERS):
    write_config(os.path.join(ctx.dir, "users.txt"), text)


def start_users(ctx, overrides=None, fake_kw=None, text=USERS):
    """The fake API and a server with USERS_FILE=users.txt (text)."""
    ctx.start_fake(**(fake_kw or {}))
    write_users(ctx, text)
    cfg = dict(USERS_ON)
    cfg.update(overrides or {})
    return ctx.start_server(cfg)


def sent_to(ctx, n0, b=None):
    """The numbers the SMS API was asked to send to since call n0 (the
    last code goes to browser b)."""
    return [(rec.get("json") or {}).get("to") for rec in
            ctx.collect_sms(n0, b)]


def masked_lines(ctx, digits2, n0=0):
    """Log lines from n0 on about the number ending in digits2 (masked)."""
    return [ln for ln in ctx.server.err_lines[n0:]
            if re.search(r"\+1\*+%s\b" % digits2, ln)]


def same_page(a, b, phones):
    """a's and b's bodies with what is theirs (CSRF token, number, and
    the seconds their own clocks give: the resend countdown, "try again
    in") taken out: equal when the pages say the same."""
    def norm(r, phone):
        s = r.html
        tok = parse_inputs(r.body).get("csrf", {}).get("value")
        if tok:
            s = s.replace(tok, "CSRF")
        s = re.sub(r"[0-9]+( s\)| seconds?\.)", r"N\1", s)
        return s.replace(" disabled>", ">").replace(phone, "PHONE")
    return norm(a, phones[0]) == norm(b, phones[1])


def cookie_shape(r):
    """Set-Cookie lines with their values blanked: name and attributes."""
    return sorted(re.sub(r"=[^;]*", "=", c, count=1)
                  for c in r.all("Set-Cookie"))


CASES += [
    {"name": "users_identity", "setup": write_users, "config": USERS_ON,
     "steps": [
         {"request": PHONE, "status": 200, "api": 1, "sms": SMS_DEFAULT},
         {"verify": "{code}", "status": 200, "page": "success"},
         {"get": "/auth", "status": 204, "secure": True, "hdr": {
             "Remote-User": r"^alice$", "Remote-Groups": r"^admins,ops$",
             "Remote-Phone": r"^\+12015550123$",
             "X-Otp-Phone": r"^\+12015550123$"}},
         {"b": "B", "request": "(201) 555-0140", "status": 200, "api": 1,
          "sms": {"to": "+12015550140"}},
         {"b": "B", "verify": "{code}", "status": 200, "page": "success"},
         {"b": "B", "get": "/auth", "status": 204, "hdr": {
             "Remote-User": r"^bob$", "Remote-Groups": r"^$",
             "Remote-Phone": r"^\+12015550140$"}},
         {"b": "C", "get": "/auth", "status": 401, "no_hdr": list(IDENTITY),
          "what": "no cookie"},
     ]},
]


def case_users_unlisted_uniform(ctx):
    """An unlisted number gets the listed one's page, status and cookies
    (form and API), no SMS, one masked log line; a code for it never
    verifies, and its wrong codes count to MAX_ATTEMPTS like a listed
    one's."""
    start_users(ctx, {"API_TOKEN": API_TOKEN, "MAX_ATTEMPTS": 2,
                      "RESEND_INTERVAL": 10})
    shown = ["+1 (201) 555-0123", "+1 201-555-0187"]
    a, b = ctx.browser("A"), ctx.browser("B")
    a.ensure_session()
    b.ensure_session()
    n0, e0 = ctx.fake.count(), len(ctx.server.err_lines)
    ra = a.request_code(PHONE)
    to = sent_to(ctx, n0, a)
    check(to == [PHONE_E164], "listed: SMS to %s" % to)
    n0 = ctx.fake.count()
    rb = b.request_code(PHONE2)
    check(ctx.fake.count() == n0, "an SMS went to the unlisted number")
    check(ctx.server.out_lines == [], "stdout: %s" % ctx.server.out_lines)
    check((ra.status, page_kind(ra.body)) == (rb.status, page_kind(rb.body))
          == (200, "verify"), "listed %r, unlisted %r" % (ra, rb))
    check(ra.text.count(shown[0]) == rb.text.count(shown[1]) == 1 and
          re.search(r"again \(in (10|[1-9]) s\)", ra.text),
          "the numbers as typed, the countdown: "
          "%r, %r" % (ra.text, rb.text))
    check(same_page(ra, rb, shown),
          "the pages differ: %r vs %r" % (short(ra.text, 200),
                                          short(rb.text, 200)))
    check(cookie_shape(ra) == cookie_shape(rb), "cookies %s vs %s"
          % (cookie_shape(ra), cookie_shape(rb)))
    check(sorted(k.lower() for k, _ in ra.headers) ==
          sorted(k.lower() for k, _ in rb.headers), "headers differ")
    time.sleep(0.2)
    lines = masked_lines(ctx, "87", e0)
    check(len(lines) == 1 and re.search(
        r" info unlisted to=\+1\*{8}87 ip=127\.0\.0\.1$", lines[0]),
        "log for the unlisted number: %s (want one 'unlisted' line)" % lines)

    # The JSON API's create answers alike.
    n0 = ctx.fake.count()
    ja, jb = a.api("POST", API, {"phone": PHONE}), \
        b.api("POST", API, {"phone": "+1 201 555 0150"})
    check(ctx.fake.count() == n0 + 1, "API: %d SMS, want 1 (the listed)"
          % (ctx.fake.count() - n0))
    ka, kb = json.loads(ja.body), json.loads(jb.body)
    own = ("id", "to", "created_at", "expires_at")  # each its own
    check(ja.status == jb.status == 201 and sorted(ka) == sorted(kb) and
          {k: v for k, v in ka.items() if k not in own} ==
          {k: v for k, v in kb.items() if k not in own},
          "API: %d %s vs %d %s" % (ja.status, ka, jb.status, kb))
    check((ka["to"], kb["to"]) == ("+1********23", "+1********50") and
          abs(rfc3339(ka["expires_at"]) - rfc3339(kb["expires_at"])) <= 2,
          "API: to and expires_at %s vs %s" % (ka, kb))
    ctx.collect_sms(n0)

    # No code verifies the unlisted number; its attempts run out alike,
    # and a new code is offered alike, refused alike before
    # RESEND_INTERVAL, and "sent" alike after it (only one goes out).
    wrong = wrong_code(a.code)
    got = {}
    n0 = ctx.fake.count()
    for who in (a, b):
        r1, r2 = who.verify(wrong), who.verify(wrong)
        r3 = who.resend()
        check((r1.status, "Wrong code. 1 try left." in r1.text, r2.status,
               TOO_MANY in r2.text, page_kind(r2.body), r3.status) ==
              (403, True, 403, True, "again", 429),
              "%s: wrong codes, resend -> %r, %r, %r" % (who.name, r1, r2,
                                                         r3))
        got[who.name] = [r1, r2, r3]
    check(ctx.fake.count() == n0, "an SMS before RESEND_INTERVAL")
    time.sleep(10.5)
    for who in (a, b):
        got[who.name].append(who.resend())
    check(sent_to(ctx, n0) == [PHONE_E164], "new codes: SMS to %s"
          % sent_to(ctx, n0))
    for ra, rb in zip(got["A"], got["B"]):
        check(ra.status == rb.status and same_page(ra, rb, shown) and
              cookie_shape(ra) == cookie_shape(rb),
              "pages differ: %r vs %r" % (ra, rb))
    check(SENT_NEW in got["B"][3].text, "no new code: %r" % got["B"][3])
    check(b.get("/auth").status == 401, "the unlisted browser passes /auth")


def _statuses(ctx, numbers, addr):
    """POST /request for each number, each from a fresh browser behind
    the trusted proxy for client addr: their statuses."""
    out = []
    for i, n in enumerate(numbers):
        b = Browser(ctx, "%s-%d" % (addr, i))
        b.headers["X-Forwarded-For"] = addr
        out.append(b.request_code(n).status)
    return out


def case_users_unlisted_limits(ctx):
    """A flood of unlisted requests meets the per-number and per-address
    limits exactly where a listed flood does: the form can neither tell
    who is listed nor be used to pump past the limits."""
    start_users(ctx, {"TRUSTED_PROXY": "127.0.0.1", "RESEND_INTERVAL": 0,
                      "SMS_PER_NUMBER_PER_HOUR": 3,
                      "SMS_PER_IP_PER_HOUR": 4})
    want = [200, 200, 200, 429]
    n0 = ctx.fake.count()
    got_l = _statuses(ctx, [PHONE] * 4, "10.1.0.1")
    check(len(sent_to(ctx, n0)) == 3, "listed flood: SMS sent")
    n0, e0 = ctx.fake.count(), len(ctx.server.err_lines)
    got_u = _statuses(ctx, [PHONE2] * 4, "10.2.0.1")
    check(got_l == got_u == want, "one number 4 times: listed %s, "
          "unlisted %s, want %s" % (got_l, got_u, want))
    check(ctx.fake.count() == n0, "an unlisted number was sent an SMS")
    time.sleep(0.2)
    lines = masked_lines(ctx, "87", e0)
    check(len(lines) == 4 and all(" unlisted to=" in ln for ln in
                                  lines[:3]) and
          " rate_limited limit=per_number " in lines[3], "log: %s" % lines)
    # Per address: 5 distinct numbers from one address, 4 pass.
    n0 = ctx.fake.count()
    got_l = _statuses(ctx, LISTED[1:], "10.3.0.1")
    got_u = _statuses(ctx, UNLISTED[1:], "10.4.0.1")
    check(got_l == got_u == [200] * 4 + [429], "5 numbers from one "
          "address: listed %s, unlisted %s" % (got_l, got_u))
    to = sent_to(ctx, n0)
    check(sorted(to) == ["+1" + n for n in LISTED[1:5]],
          "SMS went to %s" % to)
    check(ctx.server.wait_log(r"rate_limited limit=per_ip to=\+1\*+55 "
                              r"ip=10\.4\.0\.1"), "no per_ip refusal")


def case_users_spellings(ctx):
    """Other spellings of a listed number are that user: they are sent a
    code, and the /auth identity is alice's."""
    start_users(ctx, harness.LIMITS_OFF)
    spellings = ["(201) 555-0123", "201 555 0123", "+1 201-555-0123",
                 "1 201 555 0123", "0012015550123", "011 1 201 555 0123",
                 "+1.201.555.0123"]
    for i, sp in enumerate(spellings):
        b = Browser(ctx, "S%d" % i)
        n0 = ctx.fake.count()
        r = b.request_code(sp)
        to = sent_to(ctx, n0, b)
        check(r.status == 200 and to == [PHONE_E164], "%r -> %r, SMS to %s"
              % (sp, r, to))
    r = b.verify(b.code)
    check(r.status == 200 and page_kind(r.body) == "success",
          "verify -> %r" % r)
    r = b.get("/auth")
    check(r.status == 204 and r.header("Remote-User") == "alice",
          "/auth -> %d, Remote-User %r" % (r.status, r.header("Remote-User")))
    check(not ctx.server.wait_log(r"unlisted", 0, 0.1), "a spelling was "
          "taken as unlisted")


# One bad line each (a good one before it): the error names file and line.
USERS_BAD = [
    ("+12015550123", "a user name must follow the number"),
    ("+1 201 555 0187 bob", r"the number must be E\.164"),
    ("12015550187 bob", r"the number must be E\.164"),
    ("+012015550187 bob", r"the number must be E\.164"),
    ("+15555550100 bob", r"the number must be E\.164.*receive SMS"),
    ("+12015550187 b%sb" % ("o" * 40), "the user name must be 1 to 32"),
    ("+12015550187 bo:b", "the user name must be"),
    ("+12015550187 bob adm;ins", "the groups must be"),
    ("+12015550187 bob admins,,ops", "the groups must be"),
    ("+12015550187 bob admins,", "the groups must be"),
    ("+12015550187 bob %s" % ",".join(["g%02d" % i for i in range(30)]),
     "the groups must be.*at most 96"),
    ("+12015550187 bob admins ops", "unexpected text after the groups"),
    ("+12015550123 alice2", r"the number is listed already, on line 2"),
    ("+12015550187 bob " + "x" * 300, "line too long"),
]


def case_users_file_errors(ctx):
    """otp_demo -t and the start refuse a USERS_FILE with a bad line: exit
    78, one stderr line 'users.txt:LINE: why'; a missing file names the
    config line; a good file is 'configuration OK' without the warning."""
    cfg = "SMS_PROVIDER='console'\nUSERS_FILE='users.txt'\n"
    bad = []
    for i, (line, why) in enumerate(USERS_BAD):
        write_users(ctx, "# team\n+12015550123 alice\n%s\n" % line)
        for args in (["-t"], []):
            rc, out, err = run_once(ctx.dir, cfg, args)
            lines = [ln for ln in err.splitlines() if ln.strip()]
            if rc != 78 or len(lines) != 1 or not re.match(
                    r"^users\.txt:3: .*%s" % why, lines[0]):
                bad.append("%r %s: exit %s, stderr %r" % (
                    line[:40], args, rc, short(err, 160)))
            check("5550187" not in err, "the number is in the error")
    check(not bad, "; ".join(bad))
    os.remove(os.path.join(ctx.dir, "users.txt"))
    rc, out, err = run_once(ctx.dir, cfg, ["-t"])
    check(rc == 78 and re.match(r"^config\.cfg:2: USERS_FILE users\.txt: "
                                r"No such file", err), "missing file: exit "
          "%s, %r" % (rc, short(err, 160)))
    write_users(ctx)
    rc, out, err = run_once(ctx.dir, cfg, ["-t"])
    check(rc == 0 and out.strip() == "configuration OK" and
          "USERS_FILE users.txt: 7 listed" in err and
          "admits any phone" not in err, "good file: exit %s, out %r, err %r"
          % (rc, short(out), short(err, 300)))


def case_users_unset_warns(ctx):
    """Without USERS_FILE, -t and the start-up log say that /auth admits
    any phone in the allowed countries."""
    warn = (r" warn USERS_FILE is not set: /auth admits any phone in the "
            r"allowed countries$")
    rc, out, err = run_once(ctx.dir, "SMS_PROVIDER='console'\n", ["-t"])
    check(rc == 0 and len(re.findall(warn, err, re.M)) == 1,
          "-t: exit %s, stderr %r" % (rc, short(err, 400)))
    ctx.start_server(harness.CONSOLE, base={})
    check(ctx.server.wait_log(warn, 0, 2), "no warning at start")


def case_users_sighup(ctx):
    """SIGHUP rereads USERS_FILE: an added number is sent its code (the one
    its unlisted request recorded) and passes; a removed one's cookie gets
    401 at once; a bad file keeps the old list."""
    start_users(ctx, {"RESEND_INTERVAL": 0},
                text="+12015550123 alice admins\n")
    a, b = ctx.browser("A"), ctx.browser("B")
    _verify_flow(ctx, a, PHONE)
    check(a.get("/auth").header("Remote-User") == "alice", "alice")
    n0 = ctx.fake.count()
    check(b.request_code(PHONE2).status == 200, "unlisted request")
    check(ctx.fake.count() == n0, "an SMS to the unlisted number")

    write_users(ctx, "+12015550123 alice admins\n+12015550187 carol\n")
    sighup()(ctx, b)
    r = b.request_code(PHONE2)
    to = sent_to(ctx, n0, b)
    check(r.status == 200 and to == [PHONE2_E164], "after adding carol: "
          "%r, SMS to %s" % (r, to))
    r = b.verify(b.code)
    check(r.status == 200, "carol's code -> %r" % r)
    r = b.get("/auth")
    check(r.status == 204 and r.header("Remote-User") == "carol" and
          r.header("Remote-Groups") == "", "carol at /auth: %d %r"
          % (r.status, r.headers))

    write_users(ctx, "+12015550187 carol ops\n")
    sighup()(ctx, b)
    r = a.get("/auth")
    check(r.status == 401 and r.header("Remote-User") is None,
          "alice removed: /auth -> %d %r" % (r.status, r.headers))
    r = a.get("/auth?redirect=1")
    check(r.status == 302, "alice removed: /auth?redirect=1 -> %r" % r)
    r = b.get("/auth")
    check(r.status == 204 and r.header("Remote-Groups") == "ops",
          "carol's groups after the edit: %d %r" % (r.status, r.headers))

    write_users(ctx, "+12015550187 carol ops\n+12015550123 al!ce\n")
    sighup(want=r"error reload: users\.txt:2: the user name must be .*; "
           r"keeping the old configuration", what="bad USERS_FILE")(ctx, b)
    check(b.get("/auth").status == 204 and a.get("/auth").status == 401,
          "after a bad USERS_FILE the old list must hold")


def case_users_removed_code_not_approved(ctx):
    """A number removed from USERS_FILE (SIGHUP) after its code was sent:
    the right code counts as a wrong one and the record stays pending (it
    does not end approved, which the API and webhooks would report); once
    the number is listed again, the same code still works."""
    start_users(ctx, {}, text="+12015550123 alice admins\n")
    a = ctx.browser("A")
    check(a.request_code(PHONE).status == 200, "alice's request")
    ctx.collect_sms(0, a)
    write_users(ctx, "+12015550187 carol\n")
    sighup()(ctx, a)
    r = a.verify(a.code)
    check(r.status == 403 and WRONG_CODE.encode() in r.body,
          "removed alice's right code -> %r" % r)
    check(a.get("/auth").status == 401, "removed alice passed /auth")
    write_users(ctx, "+12015550123 alice admins\n")
    sighup()(ctx, a)
    r = a.verify(a.code)
    check(r.status == 200 and a.get("/auth").status == 204,
          "alice listed again: the same code -> %r" % r)


def case_users_unlisted_timing(ctx):
    """An unlisted number's answer takes about as long as a listed one's
    send (the gateway answers after 0.3 s here): the median of 7 is not
    less than half the listed median. Generous on purpose: a loaded
    machine slows both; without the wait an unlisted answer is ~0.3 s
    faster, far below the bound."""
    start_users(ctx, harness.LIMITS_OFF, fake_kw={"mode": "slow",
                                          "slow_seconds": 0.3})
    b = ctx.browser("T")
    b.ensure_session()
    b.request_code(LISTED[0])      # the first send sets the average
    listed, unlisted = [], []
    for i in range(7):
        unlisted.append(b.request_code(UNLISTED[i % 6]).elapsed)
        listed.append(b.request_code(LISTED[i % 6]).elapsed)
    ctx.collect_sms(0)
    ml, mu = sorted(listed)[3], sorted(unlisted)[3]
    with open(os.path.join(ctx.dir, "timing.txt"), "w") as f:
        f.write("listed %s\nunlisted %s\n" % (listed, unlisted))
    check(ml >= 0.3, "listed median %.3f s: the fake was not slow" % ml)
    check(mu >= ml / 2, "unlisted median %.3f s < half the listed %.3f s"
          % (mu, ml))
    check(mu < ml + 2, "unlisted median %.3f s: far slower than listed "
          "%.3f s" % (mu, ml))


# ---- runner ------------------------------------------------------------------

# ---- the code page: resend, tries left, a new code --------------------------

def resend_button(r):
    """(disabled, the seconds it shows or None) of the page's resend
    button, as the server rendered it."""
    m = re.search(r'<button[^>]*id="resend"([^>]*)>[^<]*<span id="wait"'
                  r'[^>]*>([^<]*)</span>', r.html)
    check(m, "no resend button with a countdown: %s" % short(r.body, 300))
    secs = re.fullmatch(r" \(in ([0-9]+) s\)", m.group(2))
    check(m.group(2) == "" or secs, "countdown %r" % m.group(2))
    return "disabled" in m.group(1), int(secs.group(1)) if secs else None


def sms_texts(ctx, n0):
    return [(rec.get("json") or {}).get("text") for rec in
            ctx.collect_sms(n0)]


def case_resend_on_the_page(ctx):
    """The code page's "Send the code again": refused before
    RESEND_INTERVAL with the seconds left rendered (button disabled, no
    SMS), then the same code again, counted against the per-number cap,
    whose refusal is a 429 on the code page; the number as typed on the
    pages, masked in the log."""
    ctx.start_fake()
    ctx.start_server({"RESEND_INTERVAL": 2, "SMS_PER_NUMBER_PER_HOUR": 3})
    a = ctx.browser("A")
    r = a.request_code(PHONE)
    first = sms_texts(ctx, 0)
    check(r.status == 200 and len(first) == 1, "request -> %r, %s"
          % (r, first))
    check(a.hidden("csrf") and "/resend" in harness.links(
        r.body, "form", "action"), "no resend form")
    check(resend_button(r) in ((True, 2), (True, 1)), "first page: button "
          "%s, want disabled with 1-2 s" % (resend_button(r),))
    check("If +1 (201) 555-0123 may sign in here, a code is on its way. "
          "The code expires in 5 minutes." in r.text, "page: %r" % r.text)
    n0 = ctx.fake.count()
    r = a.resend()
    check(r.status == 429 and page_kind(r.body) == "verify" and
          re.search(r"^[1-2]$", r.header("Retry-After") or "") and
          "Please try again in" in r.text and resend_button(r)[0] and
          ctx.fake.count() == n0, "resend at once -> %r, %s" % (
              r, resend_button(r)))
    r = a.get("/resend")
    check(r.status == 200 and page_kind(r.body) == "verify" and
          resend_button(r)[0] and "+1 (201) 555-0123" in r.text and
          ctx.fake.count() == n0, "GET /resend (without JavaScript: the "
          "countdown rendered anew) -> %r" % r)
    for i in (2, 3):
        time.sleep(2.3)
        r = a.resend()
        texts = sms_texts(ctx, n0)
        check(r.status == 200 and page_kind(r.body) == "verify" and
              SENT_AGAIN in r.text and texts == first,
              "resend %d -> %r, SMS %s (want the first text again: %s)"
              % (i, r, texts, first))
        check(resend_button(r)[0], "resend %d: the button is not disabled "
              "again" % i)
        n0 = ctx.fake.count()
    time.sleep(2.3)
    r = a.resend()
    check(r.status == 429 and page_kind(r.body) == "verify" and
          "Too many requests. Please try again in 60 minutes." in r.text and
          ctx.fake.count() == n0, "a 4th send, over SMS_PER_NUMBER_PER_HOUR "
          "-> %r" % r)
    check(resend_button(r) == (False, None), "the cap's countdown is not "
          "the button's: %s" % (resend_button(r),))
    ctx.collect_sms(0, a)
    r = a.verify(a.code)
    check(r.status == 200 and page_kind(r.body) == "success",
          "the code after three sends -> %r" % r)
    log = ctx.server.log()
    check("555-0123" not in log and "(201)" not in log and
          len(re.findall(r"info resend to=\+1\*{8}23 ", log)) == 2,
          "log: the number as typed, or not two masked resend lines")


CASES += [
    {"name": "resend_csrf_and_origin", "config": {"RESEND_INTERVAL": 1},
     "steps": [
         {"request": PHONE, "status": 200, "api": 1},
         {"b": "B", "get": "/", "status": 200},
         {"sleep": 1.3},
         {"post": "/resend", "headers": {"Origin": "https://evil.example"},
          "status": 403, "api": 0, "page": "index"},
         {"post": "/resend", "headers": {"Origin": "null"}, "status": 403,
          "api": 0},
         {"post": "/resend", "headers": {"Sec-Fetch-Site": "cross-site"},
          "status": 403, "api": 0},
         {"post": "/resend", "csrf": None, "status": 403, "api": 0,
          "what": "no csrf field"},
         {"post": "/resend", "csrf": "0" * 64, "status": 403, "api": 0,
          "what": "wrong csrf"},
         {"post": "/resend", "csrf": "{csrf:B}", "status": 403, "api": 0,
          "what": "B's csrf token with A's cookies"},
         {"set_cookie": {"otp_sid": None}},
         {"post": "/resend", "session": False, "status": 403, "api": 0,
          "what": "no otp_sid, the otp_vid alone"},
         {"method": ("PUT", "/resend"), "body": "x", "status": 405,
          "hdr": {"Allow": "^GET, HEAD, POST$"}},
     ]},
]


def case_locked_new_code(ctx):
    """MAX_ATTEMPTS reached: its own message, and "Send a new code" for
    the same number without retyping it, through every limit: before
    RESEND_INTERVAL and over the per-number cap it is refused; another
    session holding the handle gets the phone form and sends nothing."""
    ctx.start_fake()
    ctx.start_server({"MAX_ATTEMPTS": 2, "RESEND_INTERVAL": 1,
                      "SMS_PER_NUMBER_PER_HOUR": 2,
                      "VERIFY_PER_IP_PER_HOUR": 100})
    a, b = ctx.browser("A"), ctx.browser("B")
    r = a.request_code(PHONE)
    ctx.collect_sms(0, a)
    first = a.code
    wrong = wrong_code(first)
    r1, r2 = a.verify(wrong), a.verify(wrong)
    check(r1.status == 403 and "Wrong code. 1 try left." in r1.text and
          "+1 (201) 555-0123" in r1.text, "1st wrong -> %r" % r1)
    check(r2.status == 403 and page_kind(r2.body) == "again" and
          TOO_MANY in r2.text and WRONG_CODE not in r2.text and
          EXPIRED not in r2.text and "+1 (201) 555-0123" in r2.text and
          "token" not in parse_inputs(r2.body), "locked -> %r" % r2)
    r = a.verify(first)
    check(r.status == 403 and TOO_MANY in r.text, "the right code once "
          "locked -> %r" % r)
    b.ensure_session()
    b.cookies["otp_vid"] = a.cookies["otp_vid"]
    time.sleep(1.3)
    n0 = ctx.fake.count()
    r = b.resend()
    check(r.status == 403 and CODE_GONE in r.text and "555-0123" not in
          r.text and ctx.fake.count() == n0, "B with A's handle -> %r" % r)
    r = a.resend({"phone": "+12015550187"})
    check(r.status == 200 and page_kind(r.body) == "verify" and
          SENT_NEW in r.text and "+1 (201) 555-0123" in r.text and
          sent_to(ctx, n0, a) == [PHONE_E164] and a.code != first,
          "Send a new code (a phone field is ignored) -> %r" % r)
    r1, r2 = a.verify(wrong_code(a.code)), a.verify(wrong_code(a.code))
    check(TOO_MANY in r2.text, "locked again -> %r" % r2)
    n0 = ctx.fake.count()
    r = a.resend()
    check(r.status == 429 and page_kind(r.body) == "again" and
          "Too many requests." in r.text and resend_button(r)[0] and
          ctx.fake.count() == n0, "before RESEND_INTERVAL -> %r" % r)
    time.sleep(1.3)
    r = a.resend()
    check(r.status == 429 and page_kind(r.body) == "again" and
          "Please try again in 60 minutes." in r.text and
          ctx.fake.count() == n0, "over SMS_PER_NUMBER_PER_HOUR -> %r" % r)


# ---- languages -------------------------------------------------------------------
# The built-in languages, picked from Accept-Language (lang_best()): the
# words of each one's pages, C-built messages and default SMS, written
# out here (not read from www/lang/), so a lost translation fails.
# APP_NAME with markup and an ampersand: escaped in <title> and <h1>.

APP_HOSTILE = "R&D <script>alert(1)</script>"
APP_ESCAPED = "R&amp;D &lt;script&gt;alert(1)&lt;/script&gt;"

# lang: (Accept-Language, index title, code page title, expiry, wrong
# code with 4 tries left, the SMS before the code)
LANG_WORDS = {
    "en": ("en-US,en;q=0.9", "Verify your phone number", "Enter your code",
           "The code expires in 5 minutes.", "Wrong code. 4 tries left.",
           "Your token is "),
    "de": ("de-CH;q=0.9, en;q=0.8", "Telefonnummer bestätigen",
           "Code eingeben", "Der Code läuft in 5 Minuten ab.",
           "Falscher Code. Noch 4 Versuche.", "Ihr Code lautet "),
    "fr": ("fr-FR,fr;q=0.9", "Vérifiez votre numéro de téléphone",
           "Saisissez votre code", "Le code expire dans 5 minutes.",
           "Code incorrect. Il vous reste 4 essais.", "Votre code est "),
    "es": ("es-MX, en;q=0.5", "Verifique su número de teléfono",
           "Introduzca su código", "El código caduca en 5 minutos.",
           "Código incorrecto. Le quedan 4 intentos.", "Su código es "),
    "pt": ("pt-BR", "Verifique seu número de telefone", "Digite seu código",
           "O código expira em 5 minutos.",
           "Código incorreto. Restam 4 tentativas.", "Seu código é "),
}


def check_lang_page(where, r, lang, title):
    """r is a page in lang: <html lang>, Content-Language, Vary, and title
    and APP_HOSTILE (escaped) in both <title> and <h1>."""
    body = r.body.decode("utf-8")
    got = "%s -> %d" % (where, r.status)
    check(('<html lang="%s">' % lang) in body, "%s: no <html lang=\"%s\">: "
          "%s" % (got, lang, short(r.body, 80)))
    check(r.header("Content-Language") == lang, "%s: Content-Language %r, "
          "want %r" % (got, r.header("Content-Language"), lang))
    check("accept-language" in (r.header("Vary") or "").lower(),
          "%s: Vary %r lacks Accept-Language" % (got, r.header("Vary")))
    for tag in ("title", "h1"):
        m = re.search(r"<%s[^>]*>(.*?)</%s>" % (tag, tag), body, re.S)
        check(m and title in m.group(1) and APP_ESCAPED in m.group(1),
              "%s: <%s> %r lacks %r or the escaped APP_NAME" % (
                  got, tag, m and m.group(1), title))
    check("<script>alert" not in body and "R&D" not in body,
          "%s: APP_NAME not escaped" % got)


def lang_flow(ctx, lang):
    """One browser in lang through the flow, on the console sender: the
    form, the code page, the SMS printed, a wrong code, the right one."""
    accept, index, verify, expires, wrong, sms = LANG_WORDS[lang]
    hdrs = {"Accept-Language": accept}
    ctx.start_server(dict(harness.CONSOLE, APP_NAME=APP_HOSTILE), base={})
    b = ctx.browser()
    check_lang_page("GET /", b.get("/", headers=hdrs), lang, index)
    r = b.request_code(PHONE, headers=hdrs)
    check(r.status == 200, "request -> %r" % r)
    check_lang_page("request", r, lang, verify)
    check(expires in r.text, "request: %r not on the code page: %s"
          % (expires, short(r.text.encode(), 300)))
    got = ctx.server.wait_stdout(r"^SMS to \+12015550123: (.*)$", 0, 5.0)
    check(got, "no console SMS line within 5 s")
    text = got[1].group(1)
    check(re.fullmatch(re.escape(sms) + "[0-9A-F]{6}", text),
          "console SMS %r, want %r and the code" % (text, sms))
    code = text[len(sms):]
    ctx.note_sms(text, code)
    r = b.verify(wrong_code(code), headers=hdrs)
    check(r.status == 403 and wrong in r.text, "wrong code -> %r, want %r"
          % (r, wrong))
    check_lang_page("wrong code", r, lang, verify)
    r = b.verify(code, headers=hdrs)
    check(r.status == 200 and page_kind(r.body) == "success",
          "right code -> %r" % r)
    check_lang_page("verified", r, lang, harness.catalog(lang)["verified"])


for _lang in LANG_WORDS:
    globals()["case_lang_flow_" + _lang] = \
        lambda ctx, lang=_lang: lang_flow(ctx, lang)


def lang_step(accept, lang, what=None):
    """GET / with Accept-Language accept (None: none) is in lang."""
    st = {"get": "/", "status": 200, "has": ['<html lang="%s">' % lang],
          "hdr": {"Content-Language": "^%s$" % lang,
                  "Vary": "(?i)accept-language"},
          "what": what or "Accept-Language %r -> %s" % (accept, lang)}
    if accept is not None:
        st["headers"] = {"Accept-Language": accept}
    return st


CASES += [
    # q-values, regions, case, wildcards: the best language built in
    {"name": "lang_pick", "steps": [
        lang_step("pt-BR", "pt"),
        lang_step("pt-PT,pt;q=0.9", "pt"),
        lang_step("de-CH;q=0.9, en;q=0.8", "de"),
        lang_step("en;q=0.5, fr;q=0.9", "fr"),
        lang_step("it, es;q=0.3", "es"),
        lang_step("ES", "es"),
        lang_step("de;q=0, fr", "fr", "q=0 is not acceptable"),
        lang_step("it", "en", "nothing built in: LANG (en)"),
        lang_step("*", "en"),
        lang_step(None, "en", "no header: LANG"),
    ]},
    # LANG='de': the fallback, and what MESSAGE's language is
    {"name": "lang_default_is_LANG", "config": {"LANG": "de"}, "steps": [
        lang_step("it, ja;q=0.5", "de"),
        lang_step(None, "de"),
        lang_step("en-GB", "en"),
        {"request": PHONE, "headers": {"Accept-Language": "ja"},
         "status": 200, "api": 1, "has": ["Der Code läuft in 5 Minuten ab."],
         "sms": {"text": r"^Ihr Code lautet [0-9A-F]{6}$"}},
    ]},
    # LANG not built in: its own words come from WWW_DIR and MESSAGE;
    # built-in pages are English then, and say so
    {"name": "lang_not_built_in", "config": {"LANG": "it"}, "steps": [
        lang_step("ja", "en", "LANG it is not built in: English"),
        lang_step("fr", "fr"),
        {"request": PHONE, "headers": {"Accept-Language": "ja"},
         "status": 200, "api": 1,
         "sms": {"text": r"^Your token is [0-9A-F]{6}$"}},
    ]},
    # The messages the C code builds, in other languages than English
    {"name": "lang_messages", "config": {"ALLOWED_COUNTRY_CODES": "+1",
                                         "MAX_ATTEMPTS": 2}, "steps": [
        {"request": "abcdefghij", "headers": {"Accept-Language": "de"},
         "status": 400, "page": "index", "has": [
             "Bitte geben Sie eine gültige Telefonnummer ein"]},
        {"request": "12345", "headers": {"Accept-Language": "fr"},
         "status": 400, "has": [
             "Ce numéro a trop ou trop peu de chiffres pour son pays."]},
        {"request": "+19005550100", "headers": {"Accept-Language": "es"},
         "status": 400, "has": ["No podemos enviar códigos a números de "
                                "tarificación especial"]},
        {"request": UK, "headers": {"Accept-Language": "pt"}, "status": 400,
         "has": ["Desculpe, não podemos enviar códigos para esse país."]},
        {"request": PHONE, "headers": {"Accept-Language": "de"},
         "status": 200, "api": 1,
         "sms": {"text": r"^Ihr Code lautet [0-9A-F]{6}$"}},
        {"verify": "{wrong}", "headers": {"Accept-Language": "de"},
         "status": 403, "has": ["Falscher Code. Noch 1 Versuch."]},
        {"verify": "{wrong}", "headers": {"Accept-Language": "es"},
         "status": 403, "has": ["Demasiados códigos incorrectos.",
                                "Enviar un código nuevo"],
         "what": "locked, in Spanish"},
        {"get": "/nowhere", "headers": {"Accept-Language": "fr"},
         "status": 404, "has": ["Page introuvable", "Cette page n'existe "
                                "pas."]},
    ]},
    {"name": "lang_rate_limited", "config": {"SMS_PER_NUMBER_PER_HOUR": 1,
                                             "RESEND_INTERVAL": 0}, "steps": [
        {"request": PHONE, "headers": {"Accept-Language": "fr"},
         "status": 200, "api": 1,
         "sms": {"text": r"^Votre code est [0-9A-F]{6}$"}},
        {"b": "B", "request": PHONE2, "status": 200, "api": 1},
        {"b": "B", "request": PHONE, "headers": {"Accept-Language": "pt"},
         "status": 429, "api": 0, "has": [
             "Muitas solicitações. Tente novamente em 60 minutos."]},
    ]},
    {"name": "lang_expired", "config": {"CODE_TTL": 2}, "steps": [
        {"request": PHONE, "headers": {"Accept-Language": "pt"},
         "status": 200, "api": 1, "has": ["O código expira em 2 segundos."]},
        {"sleep": 3.5},
        {"verify": "{code}", "headers": {"Accept-Language": "pt"},
         "status": 403, "has": ["Este código expirou.",
                                "Enviar um novo código"]},
    ]},
]


def case_lang_www_dir_overrides(ctx):
    """WWW_DIR/de (plain text, as operators write it) and MESSAGE_de beat
    the built-in German; its missing pages are the built-in German ones;
    other languages keep theirs; the top level of WWW_DIR is LANG's; and a
    copy of www/ with {{t:key}} takes the built-in words of its language."""
    w = os.path.join(ctx.dir, "www")
    with open(os.path.join(ROOT, "www", "index.html"), encoding="utf-8") as f:
        tmpl = f.read()
    plain = (tmpl.replace("{{t:index_title}}", "Unsere Anmeldung")
             .replace("{{t:index_hint}}", "Eigener Hinweis.")
             .replace("{{t:phone_label}}", "Handynummer")
             .replace("{{t:send_code}}", "Los"))
    check("{{t:" not in plain, "www/index.html has {{t:}} keys this test "
          "does not replace")
    pages = {"de/index.html": plain.replace("{{lang}}", "de"),
             "index.html": plain.replace("Unsere Anmeldung", "Our own page"),
             "es/index.html": tmpl.replace("{{t:index_hint}}",
                                           "Hola del operador.")}
    for name, text in pages.items():
        os.makedirs(os.path.dirname(os.path.join(w, name)), exist_ok=True)
        with open(os.path.join(w, name), "w", encoding="utf-8") as f:
            f.write(text)
    ctx.start_fake()
    ctx.start_server({"WWW_DIR": w, "MESSAGE_de": "Eigener Text: {code}"})
    for accept, lang, has in [
            ("de-DE", "de", ["Unsere Anmeldung", "Eigener Hinweis."]),
            ("fr", "fr", ["Vérifiez votre numéro de téléphone"]),
            ("en", "en", ["Our own page"]),
            ("es", "es", ["Verifique su número", "Hola del operador."])]:
        r = ctx.browser(lang).get("/", headers={"Accept-Language": accept})
        check(r.status == 200 and all(x in r.text for x in has) and
              r.header("Content-Language") == lang, "GET / in %s -> %r "
              "(Content-Language %r), want %s" % (
                  accept, short(r.text.encode(), 200),
                  r.header("Content-Language"), has))
    b = ctx.browser("de")
    n0 = ctx.fake.count()
    r = b.request_code(PHONE, headers={"Accept-Language": "de-DE"})
    check(r.status == 200 and "Code eingeben" in r.text, "German request "
          "-> %r: not the built-in German code page" % r)
    sent = [x["json"]["text"] for x in ctx.fake.requests[n0:]]
    check(len(sent) == 1 and re.fullmatch(r"Eigener Text: [0-9A-F]{6}",
                                          sent[0]),
          "German SMS %r, want MESSAGE_de" % sent)
    ctx.note_sms(sent[0], sent[0].split(": ")[1])
    n0 = ctx.fake.count()
    r = ctx.browser("fr").request_code(PHONE2,
                                       headers={"Accept-Language": "fr"})
    sent = [x["json"]["text"] for x in ctx.fake.requests[n0:]]
    check(r.status == 200 and len(sent) == 1 and
          sent[0].startswith("Votre code est "), "French SMS %r" % sent)
    ctx.note_sms(sent[0], sent[0].split()[-1])


def case_lang_message_beats_builtin(ctx):
    """An operator's MESSAGE is their words for everyone without a
    MESSAGE_<lang> of their own: a German browser gets it, not ours."""
    ctx.start_fake()
    ctx.start_server({"MESSAGE": "{app} code {code}", "APP_NAME": "Box"})
    n0 = ctx.fake.count()
    r = ctx.browser().request_code(PHONE, headers={"Accept-Language": "de"})
    sent = [x["json"]["text"] for x in ctx.fake.requests[n0:]]
    check(r.status == 200 and "Code eingeben" in r.text and len(sent) == 1
          and re.fullmatch(r"Box code [0-9A-F]{6}", sent[0]),
          "German browser with MESSAGE set: page %r, SMS %r" % (r, sent))
    ctx.note_sms(sent[0], sent[0].split()[-1])


def case_lang_not_built_in_warns(ctx):
    """LANG that is not built in is allowed, and the start says what the
    pages WWW_DIR lacks will be shown in."""
    ctx.start_fake()
    ctx.start_server({"LANG": "it"})
    check(ctx.server.wait_log(r"LANG 'it' is not built in: .* in en", 0, 5),
          "no warning about LANG 'it' in the log")


def all_cases():
    """(name, fn(ctx)): the config rows, the table and the code cases."""
    out = [(row[0], lambda ctx, row=row: run_config_row(ctx, row))
           for row in CONFIG_ROWS]
    out += [(c["name"], lambda ctx, c=c: run_table_case(ctx, c))
            for c in CASES]
    return out + harness.cases_in(globals())     # the case_NAME functions


# Slow cases first so the pool stays busy.
SLOW = ("trickle", "pump", "silent", "expired", "identical", "resend",
        "sms_per_number", "max_attempts_parallel", "restart", "tls_", "sighup",
        "users_file_errors", "users_unlisted_timing", "revoked", "crash")

if __name__ == "__main__":
    sys.exit(harness.main(all_cases(), OUT, "otp_demo integration tests",
                          jobs=4, slow=SLOW))
