#!/usr/bin/env python3
"""tests/attack/limits.py: the rate limits and code binding, attacked.

Each case is what an attacker would run against the real binary; each
failed on the code before the limits were rebuilt (issue 10):
  flood_resets_number   refused requests for thousands of new numbers
                        pushed a victim's window out: 13 SMS in 4.4 s
  resend_hand_over      a second browser asking for the same number got the
                        first one's code and handle; the first then failed
  resend_button_hand_over  the same through the code page's "Send the
                        code again" (issue 14): after B asked for A's
                        number, A's resend sends A's code, never B's
  api_take_over         a web visitor took over a pending API verification
  ipv6_rotation         one /64 rotating addresses: 100 sends, then 503
                        for everyone; its own 30 guesses per address
  network_share         one /48 cannot use the whole hourly cap
  api_shared_budget     one end user's 30 wrong codes locked out every
                        other user of the JSON API
  code_plus_junk        TOKEN_LENGTH=16: the code with junk after it passed
  chosen_session_id     any 32-hex otp_sid was adopted (fixation)
  host_prefix_cookies   TLS listeners: cookies without __Host-
  caps_survive_restart  per-number and per-day caps reset on restart
  token_time            the API token check returned early on a length
                        mismatch, telling the token's length (counted in
                        instructions under callgrind, which is exact)
"""
import json
import os
import re
import shutil
import stat
import sys
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402
from harness import check, xff  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")
CASES = []
case = h.register(CASES)
VICTIM = h.PHONE_E164


def number(i):
    """The i-th of 10,000 distinct, well-formed US numbers."""
    return "+1201555%04d" % i


def proxied(ctx, extra=None):
    cfg = {"TRUSTED_PROXY": "127.0.0.1"}
    cfg.update(extra or {})
    ctx.start_fake()
    return ctx.start_server(cfg)


@case
def flood_resets_number(ctx):
    proxied(ctx)
    a, x = ctx.browser("A"), ctx.browser("X")
    r = a.request_code(VICTIM, headers=xff("10.0.0.1"))
    check(r.status == 200, "victim's first request -> %r" % r)
    # The attacker spends its address's budget, then floods refused
    # requests for new numbers, then asks for the victim's number again
    # from fresh addresses.
    for i in range(10):
        r = x.request_code(number(i), headers=xff("10.9.9.9"))
        check(r.status == 200, "attacker's send %d -> %r" % (i, r))
    refused = 0
    for i in range(10, 6010):
        r = x.request_code(number(i), headers=xff("10.9.9.9"))
        refused += r.status == 429
    check(refused == 6000, "%d of 6000 flood requests refused" % refused)
    for k in range(2, 12):
        x.request_code(VICTIM, headers=xff("10.0.0.%d" % k))
    n = sms_to(ctx, VICTIM)
    check(n == 1, "%d SMS to the victim within RESEND_INTERVAL (want 1)" % n)
    check(ctx.fake.count() == 11, "%d SMS in all (want 11: the flood must "
          "send nothing)" % ctx.fake.count())


def codes_stay_apart(a, b):
    """A and B asked for one number: each browser's code works in it
    alone (A's first, so B's record outlives A's success)."""
    r = b.verify(a.code)
    check(r.status == 403, "A's code typed in B's browser -> %r" % r)
    r = a.verify(a.code)
    check(r.status == 200 and h.page_kind(r.body) == "success",
          "A's own code after B asked for the same number -> %r" % r)
    r = b.verify(b.code)
    check(r.status == 200, "B's own code -> %r" % r)


@case
def resend_hand_over(ctx):
    ctx.start_fake()
    ctx.start_server({"RESEND_INTERVAL": 1})
    a, b = ctx.browser("A"), ctx.browser("B")
    n0 = ctx.fake.count()
    check(a.request_code(VICTIM).status == 200, "A's request failed")
    ctx.collect_sms(n0, a)
    time.sleep(1.2)
    n0 = ctx.fake.count()
    check(b.request_code(VICTIM).status == 200, "B's request failed")
    ctx.collect_sms(n0, b)
    check(a.code != b.code, "B was sent A's code %s" % a.code)
    check(a.cookies.get("otp_vid") != b.cookies.get("otp_vid"),
          "B got A's verification handle")
    codes_stay_apart(a, b)


@case
def resend_button_hand_over(ctx):
    ctx.start_fake()
    ctx.start_server({"RESEND_INTERVAL": 1})
    a, b = ctx.browser("A"), ctx.browser("B")
    check(a.request_code(VICTIM).status == 200, "A's request failed")
    ctx.collect_sms(0, a)
    first = a.code
    time.sleep(1.2)
    n0 = ctx.fake.count()
    check(b.request_code(VICTIM).status == 200, "B's request failed")
    ctx.collect_sms(n0, b)
    time.sleep(1.2)
    # The number's newest record is B's now: A's resend must repeat A's
    # own code, never B's, and leave B's record alone.
    n0 = ctx.fake.count()
    r = a.resend()
    ctx.collect_sms(n0, a)
    check(r.status == 200 and h.SENT_AGAIN in r.text and a.code == first
          and ctx.fake.count() == n0 + 1, "A's resend after B's request "
          "-> %r, code %s (A's first %s, B's %s)" % (r, a.code, first,
                                                    b.code))
    time.sleep(1.2)
    n0 = ctx.fake.count()
    r = b.resend()
    texts = [rec["json"]["text"] for rec in ctx.fake.requests[n0:]]
    check(r.status == 200 and h.SENT_AGAIN in r.text and len(texts) == 1
          and texts[0].endswith(b.code), "B's resend -> %r, %s" % (r,
                                                                   texts))
    codes_stay_apart(a, b)


def sms_to(ctx, phone):
    """How many SMS the fake API was asked to send to phone."""
    return sum(1 for rec in ctx.fake.requests
               if isinstance(rec.get("json"), dict) and
               rec["json"].get("to") == phone)


def api(ctx, b, method, path, body=None, headers=None):
    r = b.api(method, path, body, headers=headers)
    try:
        return r, json.loads(r.body or b"{}")
    except ValueError:
        raise h.Fail("%s %s: not JSON: %r" % (method, path, r))


def approved(ctx, app, vid, what):
    """The API checks app's code for verification vid: approved."""
    r, k = api(ctx, app, "POST", "%s/%s/check" % (h.API, vid),
               {"code": app.code})
    check(r.status == 200 and k.get("status") == "approved",
          "%s -> %r" % (what, r))


@case
def api_take_over(ctx):
    ctx.start_fake()
    ctx.start_server({"RESEND_INTERVAL": 1, "API_TOKEN": h.API_TOKEN})
    app, web = ctx.browser("app"), ctx.browser("web")
    ctx.note_phone(VICTIM)
    n0 = ctx.fake.count()
    r, j = api(ctx, app, "POST", h.API, {"phone": VICTIM})
    check(r.status == 201, "create -> %r" % r)
    ctx.collect_sms(n0, app)
    time.sleep(1.2)
    n0 = ctx.fake.count()
    check(web.request_code(VICTIM).status == 200, "web request failed")
    ctx.collect_sms(n0, web)
    check(web.code != app.code, "the web visitor was sent the API's code")
    r = web.verify(app.code)
    check(r.status == 403, "the API's code on the web -> %r" % r)
    approved(ctx, app, j["id"], "the application's own check after a web "
             "request")


@case
def ipv6_rotation(ctx):
    proxied(ctx)
    x = ctx.browser("X")
    ok = 0
    for i in range(40):
        r = x.request_code(number(i), headers=xff("2001:db8:1:2::%x" % (i + 1)))
        ok += r.status == 200
    check(ok == 10, "%d sends from one /64 (want SMS_PER_IP_PER_HOUR = 10)"
          % ok)
    r = ctx.browser("Y").request_code(number(100),
                                      headers=xff("198.51.100.7"))
    check(r.status == 200, "another network after the /64's flood -> %r" % r)


@case
def verify_ipv6_rotation(ctx):
    proxied(ctx, {"VERIFY_PER_IP_PER_HOUR": 5, "MAX_ATTEMPTS": 100})
    b = ctx.browser()
    n0 = ctx.fake.count()
    check(b.request_code(VICTIM, headers=xff("2001:db8:1:2::1")).status ==
          200, "request failed")
    ctx.collect_sms(n0, b)
    got = []
    for i in range(8):
        r = b.verify(h.wrong_code(b.code), headers=xff("2001:db8:1:2::%x"
                                                        % (i + 100)))
        got.append(r.status)
    check(got[:5] == [403] * 5 and got[5:] == [429] * 3,
          "wrong codes from one /64, rotating addresses: %s (want five "
          "403 then 429)" % got)


@case
def network_share(ctx):
    proxied(ctx, {"SMS_PER_HOUR": 40})
    x = ctx.browser("X")
    ok = 0
    for i in range(40):
        # one /64 each, all in 2001:db8:7::/48
        r = x.request_code(number(i), headers=xff("2001:db8:7:%x::1" % i))
        ok += r.status == 200
    check(ok == 10, "%d sends from one /48 (want NETWORK_SHARE, a quarter "
          "of SMS_PER_HOUR = 10)" % ok)
    ok = 0
    for i in range(40, 60):
        r = x.request_code(number(i), headers=xff("203.0.113.%d" % i))
        ok += r.status == 200
    check(ok == 10, "%d sends from one IPv4 /24 (want 10)" % ok)
    r = ctx.browser("Y").request_code(number(100),
                                      headers=xff("198.51.100.7"))
    check(r.status == 200, "a third network -> %r" % r)


@case
def api_shared_budget(ctx):
    ctx.start_fake()
    ctx.start_server({"API_TOKEN": h.API_TOKEN})
    app = ctx.browser("app")
    for i in range(6):
        ctx.note_phone(number(i))
        r, j = api(ctx, app, "POST", h.API, {"phone": number(i)})
        check(r.status == 201, "create %d -> %r" % (i, r))
        for _ in range(5):
            api(ctx, app, "POST", "%s/%s/check" % (h.API, j["id"]),
                {"code": "000000"})
    ctx.note_phone(VICTIM)
    n0 = ctx.fake.count()
    r, j = api(ctx, app, "POST", h.API, {"phone": VICTIM})
    check(r.status == 201, "another user's create -> %r" % r)
    ctx.collect_sms(n0, app)
    approved(ctx, app, j["id"], "another user's right code after 30 wrong "
             "ones")


@case
def api_client_ip_counted(ctx):
    ctx.start_fake()
    ctx.start_server({"API_TOKEN": h.API_TOKEN, "SMS_PER_IP_PER_HOUR": 2})
    app = ctx.browser("app")
    got = []
    for i in range(4):
        ctx.note_phone(number(i))
        r, _ = api(ctx, app, "POST", h.API, {"phone": number(i),
                                              "client_ip": "198.51.100.9"})
        got.append(r.status)
    check(got == [201, 201, 429, 429], "one end user's creates: %s" % got)
    r, _ = api(ctx, app, "POST", h.API, {"phone": number(9),
                                          "client_ip": "198.51.100.10"})
    check(r.status == 201, "another end user -> %r" % r)


@case
def code_plus_junk(ctx):
    ctx.start_fake()
    ctx.start_server({"TOKEN_LENGTH": 16})
    b = ctx.browser()
    n0 = ctx.fake.count()
    check(b.request_code(VICTIM).status == 200, "request failed")
    ctx.collect_sms(n0, b)
    for junk in ("X", "0", " 1", "%s" % b.code[:4]):
        r = b.verify(b.code + junk)
        check(r.status == 403, "code + %r -> %r" % (junk, r))
    r = b.verify(" %s " % b.code)
    check(r.status == 200, "the code with spaces around -> %r" % r)


@case
def chosen_session_id(ctx):
    ctx.start_fake()
    ctx.start_server()
    chosen = "0123456789abcdef0123456789abcdef"
    b = ctx.browser()
    b.cookies["otp_sid"] = chosen
    r = b.get("/")
    check(r.status == 200, "GET / -> %r" % r)
    sid = b.cookies.get("otp_sid")
    check(sid and sid != chosen, "the server kept the session id the "
          "client chose (Set-Cookie: %s)" % r.all("Set-Cookie"))
    # A session the server issued is kept.
    r = b.get("/")
    check(not [c for c in r.all("Set-Cookie") if c.startswith("otp_sid=")],
          "an issued session was replaced: %s" % r.all("Set-Cookie"))


@case
def host_prefix_cookies(ctx):
    ctx.start_fake()
    srv = ctx.start_server({"LISTEN": "127.0.0.1:0s"})
    check(srv.scheme == "https", "no TLS listener")
    b = ctx.browser()
    r = b.get("/")
    sids = [c for c in r.all("Set-Cookie") if "otp_sid" in c]
    check(sids and all(c.startswith("__Host-otp_sid=") for c in sids),
          "TLS session cookie: %s" % sids)
    attrs = [a.strip() for a in sids[0].split(";")]
    check("Secure" in attrs and "Path=/" in attrs and
          not any(a.lower().startswith("domain=") for a in attrs),
          "__Host- cookie attributes: %s" % attrs)
    n0 = ctx.fake.count()
    check(b.request_code(VICTIM).status == 200, "request over TLS failed")
    ctx.collect_sms(n0, b)
    r = b.verify(b.code)
    check(r.status == 200, "verify over TLS -> %r" % r)
    names = sorted(c.split("=")[0] for c in r.all("Set-Cookie"))
    check(all(n.startswith("__Host-") for n in names), "cookies %s" % names)
    # A cookie without the prefix is ignored on TLS: a plain-HTTP page
    # (or a sibling subdomain) could have set it.
    c = ctx.browser("C")
    c.cookies["otp_sid"] = b.cookies["__Host-otp_sid"]
    r = c.get("/")
    check([x for x in r.all("Set-Cookie") if x.startswith("__Host-otp_sid=")],
          "a plain otp_sid cookie was taken as the session over TLS")


@case
def caps_survive_restart(ctx):
    state = os.path.join(ctx.dir, "state")
    os.mkdir(state, 0o700)
    ctx.start_fake()
    ctx.start_server({"STATE_DIR": state, "RESEND_INTERVAL": 0,
                      "SMS_PER_NUMBER_PER_HOUR": 2, "SMS_PER_DAY": 4,
                      "NETWORK_SHARE": 100, "TRUSTED_PROXY": "127.0.0.1"})
    b = ctx.browser()
    got = [b.request_code(VICTIM).status for _ in range(3)]
    check(got == [200, 200, 429], "before the restart: %s" % got)
    check(b.request_code(number(1)).status == 200, "another number")
    ctx.restart_server()
    b = ctx.browser("B")
    r = b.request_code(VICTIM)
    check(r.status == 429, "the number's cap after a restart -> %r" % r)
    # From other networks, so only the global day's count is in the way.
    got = [b.request_code(number(i), headers=xff("198.51.100.%d" % i)).status
           for i in (2, 3)]
    check(got == [200, 503], "the day's cap after a restart: %s" % got)
    check(ctx.fake.count() == 4, "%d SMS (want SMS_PER_DAY = 4)"
          % ctx.fake.count())
    path = os.path.join(state, "limits.state")
    check(os.path.exists(path), "no %s" % path)
    mode = stat.S_IMODE(os.stat(path).st_mode)
    check(mode == 0o600, "limits.state mode %o" % mode)


@case
def caps_survive_crash(ctx):
    """A crash loop (SIGKILL: no shutdown save) loses at most
    STATE_SAVE_INTERVAL: what was counted before the last periodic
    write survives."""
    state = os.path.join(ctx.dir, "state")
    os.mkdir(state, 0o700)
    ctx.start_fake()
    ctx.start_server({"STATE_DIR": state, "RESEND_INTERVAL": 0,
                      "SMS_PER_NUMBER_PER_HOUR": 1,
                      "STATE_SAVE_INTERVAL": 10})
    b = ctx.browser()
    path = os.path.join(state, "limits.state")
    sent = time.time()
    check(b.request_code(VICTIM).status == 200, "the first send")

    def saved_since_send():
        # A save before the send (the first sweep, on a slow machine
        # after the server's first second) does not hold it: wait for one
        # written after it.
        try:
            return os.stat(path).st_mtime > sent
        except FileNotFoundError:
            return False
    end = time.monotonic() + 15
    while time.monotonic() < end and not saved_since_send():
        time.sleep(0.2)
    check(saved_since_send(), "no limits.state written within 15 s of a "
          "send (STATE_SAVE_INTERVAL 10)")
    ctx.server.proc.kill()
    ctx.server.proc.wait()
    srv = ctx.server.again(".2")
    ctx.old_servers.append(ctx.server)
    ctx.server = srv.start()
    r = ctx.browser("B").request_code(VICTIM)
    check(r.status == 429, "the number's cap after a crash -> %r" % r)


@case
def caps_reset_warning(ctx):
    ctx.start_fake()
    srv = ctx.start_server()
    check(srv.wait_log(r"STATE_DIR is not set: rate limits and caps reset "
                       r"on restart"), "no warning at start without STATE_DIR")


def plain_binary():
    """The binary callgrind can run: OTP_BIN, or under make test
    SANITIZE=... (valgrind cannot run a sanitizer build) the plain build
    of the same tree, which CI's make -j4 test has made first."""
    if not os.environ.get("SANITIZE"):
        return h.BIN
    plain = os.path.join(h.ROOT, "build", "otp_demo")
    check(os.access(plain, os.X_OK), "SANITIZE=%s: no plain build %s for "
          "callgrind (make build/otp_demo)" % (os.environ["SANITIZE"], plain))
    return plain


def token_check_cost(ctx, tag, token, tries):
    """Instructions otp_demo spends in api_token_ok() over the bearer
    tokens tries, with API_TOKEN token, counted by callgrind."""
    d = os.path.join(ctx.dir, tag)
    out = os.path.join(d, "callgrind.out")
    srv = h.Server(d, dict(ctx.base_config(), API_TOKEN=token,
                           LISTEN="127.0.0.1:0"),
                   command=["valgrind", "--tool=callgrind",
                            "--toggle-collect=api_token_ok",
                            "--callgrind-out-file=" + out, plain_binary()],
                   stdout=None, start_timeout=60, stop_timeout=60)
    try:
        try:
            srv.start()
        except h.Fail as e:
            raise h.Fail("otp_demo under valgrind did not start: %s" % e)
        import http.client
        for t in tries:
            c = http.client.HTTPConnection("127.0.0.1", srv.port, timeout=60)
            c.request("GET", h.API + "/0", headers={
                "Authorization": "Bearer " + t})
            r = c.getresponse()
            r.read()
            c.close()
            check(r.status == 401, "a wrong token -> %d" % r.status)
    finally:
        srv.stop()
    with open(out) as f:
        m = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.M)
    check(m, "no totals in %s" % out)
    return int(m.group(1))


@case
def token_time(ctx):
    check(shutil.which("valgrind"), "valgrind is not installed")
    ctx.start_fake()
    # The same wrong tokens against a token of their length and one of
    # another length: a check that stops at a length mismatch (or at the
    # first differing byte) spends different work on the two.
    tries = ["B" * 30, "A" * 29 + "B", "A" * 30, "x" * 31]
    a = token_check_cost(ctx, "token30", "Z" + "A" * 29, tries)
    b = token_check_cost(ctx, "token40", "Z" + "A" * 39, tries)
    check(a > 0 and a == b, "instructions in the token check: %d with a "
          "30-character token, %d with a 40-character one, for the same "
          "requests" % (a, b))


if __name__ == "__main__":
    sys.exit(h.main(CASES, OUT, "limits attacked", jobs=2,
                    prefix="attack_limits_"))
