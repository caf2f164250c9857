#!/usr/bin/env python3
"""tests/redis_store.py: STORE=redis, two instances sharing one Redis.

Real parts only: Debian's redis-server on a unix socket in the case's
directory (no persistence: what a restart loses is part of the test), the
binary built WITH_REDIS ($OTP_REDIS_BIN, make test builds it) twice, with
the same session.key in each STATE_DIR, and nginx round robin in front
where a case says so. The plain binary ($OTP_BIN) is only asked to refuse
STORE=redis. Each case: the attacker's or the operator's steps, then what
both instances must agree on.

    python3 tests/redis_store.py [-k SUBSTR] [-j JOBS]
"""

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import harness as H  # noqa: E402
import senders as S  # noqa: E402  (the webhook receiver's checks)
from harness import check  # noqa: E402

OUT = os.path.join(H.ROOT, "tests", "out", "redis_store")
REDIS_BIN = os.environ.get("OTP_REDIS_BIN") or os.path.join(
    H.ROOT, "build", "otp_demo-redis")
PASSWORD = "pw-7c1e9a4b20d3f658"

# Both instances: the console sender, digits, no wait between sends, and
# caps low enough to reach in a test.
BASE = {
    "LISTEN": "127.0.0.1:0",
    "SMS_PROVIDER": "console",
    "TOKEN_ALPHABET": "digits",
    "TOKEN_LENGTH": 6,
    "RESEND_INTERVAL": 0,
    "SMS_PER_IP_PER_HOUR": 1000,
    "NETWORK_SHARE": 100,
    "TRUSTED_PROXY": "127.0.0.1",
    "API_TOKEN": H.API_TOKEN,
    "STORE_TIMEOUT": 300,
}


class Pair:
    """Instances A and B sharing redis: the same config, the same
    session.key; stopped (their logs scanned by ctx) by close()."""

    def __init__(self, ctx, redis, extra=None, env=None):
        self.ctx, self.cfg = ctx, dict(BASE, STORE="unix://" + redis.sock,
                                       **(extra or {}))
        self.env = env
        self.servers = []
        try:
            self.a = self.start("a")
            key = os.path.join(ctx.dir, "a", "state", "session.key")
            os.makedirs(os.path.join(ctx.dir, "b", "state"), mode=0o700,
                        exist_ok=True)
            shutil.copy(key, os.path.join(ctx.dir, "b", "state"))
            self.b = self.start("b")
        except BaseException:
            for srv in self.servers:    # no instance outlives its case
                srv.stop()
            raise

    def start(self, name, tag=""):
        d = os.path.join(self.ctx.dir, name)
        os.makedirs(os.path.join(d, "state"), mode=0o700, exist_ok=True)
        srv = H.Server(d, dict(self.cfg, STATE_DIR="state"), env=self.env,
                       command=[REDIS_BIN], tag=tag).start()
        self.servers.append(srv)
        return srv

    def close(self):
        for s in self.servers:
            rc = s.stop()
            check(rc == 0, "instance exit %s (want 0)" % (rc,))
            self.ctx.old_servers.append(s)

    def sms(self):
        """Every SMS both instances printed (console): [(to, code)]."""
        out = []
        for s in self.servers:
            for line in s.out_lines:
                m = re.match(r"^SMS to (\+[0-9]+): .*?([0-9]{6})\s*$", line)
                if m:
                    out.append(m.groups())
                    self.ctx.codes.add(m.group(2))
        return out

    def sms_settled(self, n):
        """sms() once it holds n lines (a 2xx can reach the client before
        the reader thread has the SMS line from the pipe), or after 5 s;
        and a moment more, so that a line too many shows too."""
        deadline = time.monotonic() + 5
        while len(self.sms()) < n and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.2)
        return self.sms()


def codes_of(pair, phone, n=1):
    """The codes sent to phone by either instance, once there are n."""
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        got = [c for to, c in pair.sms() if to == phone]
        if len(got) >= n:
            return got
        time.sleep(0.02)
    raise H.Fail("%d SMS to %s, want %d" % (len(got), phone, n))


def code_of(pair, phone):
    """The newest code sent to phone by either instance."""
    return codes_of(pair, phone)[-1]


def js(r):
    return json.loads(r.body)


def browser(ctx, srv):
    b = H.Client(srv.port)
    b.note_phone = lambda p: ctx.note_phone(p)
    return b


def moved(b, srv):
    """Browser b's cookies and token, on another instance."""
    c = b.clone()
    c.port = srv.port
    return c


def with_pair(fn, redis_args=(), extra=None, env=None):
    """A case: fn(ctx, redis, pair) with both started, then stopped."""
    def case(ctx):
        redis = H.Redis(ctx.dir, *redis_args).start()
        pair = None
        try:
            pair = Pair(ctx, redis, extra, env)
            fn(ctx, redis, pair)
        finally:
            if pair is not None:
                pair.close()
            redis.stop()
    return case


# ---- config -----------------------------------------------------------------

def case_plain_binary_refuses_redis(ctx):
    plain = {k: v for k, v in BASE.items() if not k.startswith("STORE_")}
    rc, out, err = H.run_once(ctx.dir, dict(plain, STORE="redis://127.0.0.1:"
                                            "6379/0"), args=["-t"])
    check(rc == 78, "exit %s, want 78: %s" % (rc, err))
    check(re.search(r"config\.cfg:[0-9]+: STORE must be memory: this binary "
                    r"was built without Redis", err), err)
    # Nor are its keys (the router builds' size): each says why.
    for key, value in (("STORE_TIMEOUT", 500), ("STORE_PASSWORD", "pw"),
                       ("STORE_PASSWORD_FILE", "/nonexistent")):
        rc, out, err = H.run_once(ctx.dir, dict(plain, **{key: value}),
                                  args=["-t"])
        check(rc == 78, "%s: exit %s, want 78: %s" % (key, rc, err))
        check(re.search(r"config\.cfg:[0-9]+: %s: this binary was built "
                        r"without Redis \(make WITH_REDIS=1\)" % key, err), err)
    # Nor its page's texts (tools/embed.sh -x store_), which the Redis
    # build has in every language.
    text = b"cannot reach its store of codes and limits"
    with open(H.BIN, "rb") as f:
        check(text not in f.read(), "the plain binary has the store's texts")
    with open(REDIS_BIN, "rb") as f:
        check(text in f.read(), "the Redis binary lacks the store's texts")


def case_config_rules(ctx):
    d = os.path.join(ctx.dir, "state")
    os.makedirs(d, mode=0o700)
    rows = [
        ({"STORE": "unix:///tmp/x.sock"}, 78, r"STORE other than memory "
         r"needs STATE_DIR"),
        ({"STORE": "redis://:%s@" % PASSWORD, "STATE_DIR": d}, 78,
         r"config\.cfg:[0-9]+: STORE must be memory, redis://"),
        ({"STORE": "mongodb://x", "STATE_DIR": d}, 78, r"STORE must be"),
        ({"STORE": "redis://127.0.0.1:99999/0", "STATE_DIR": d}, 78,
         r"STORE must be"),
        ({"STORE": "redis://:%s@127.0.0.1:6379/2" % PASSWORD,
          "STATE_DIR": d}, 0, r"configuration OK"),
        ({"STORE": "unix:///run/redis.sock?db=3", "STATE_DIR": d,
          "STORE_PASSWORD": PASSWORD}, 0, r"configuration OK"),
        ({"STORE_TIMEOUT": 5}, 78, r"STORE_TIMEOUT"),
        ({"STORE": "unix:///x.sock", "STATE_DIR": d, "WEBHOOK_URL":
          "https://example.com/h", "WEBHOOK_SECRET": "0123456789abcdef"}, 0,
         r"configuration OK"),
        ({"STORE_PASSWORD_FILE": "missing"}, 78,
         r"config\.cfg:[0-9]+: STORE_PASSWORD_FILE missing"),
    ]
    for extra, want, rx in rows:
        rc, out, err = H.run_once(ctx.dir, dict(BASE, **extra), args=["-t"],
                                  command=[REDIS_BIN])
        check(rc == want and re.search(rx, out + err),
              "%s: exit %s, want %s and /%s/: %s" % (extra, rc, want, rx,
                                                    err.strip()[-200:]))
        check(PASSWORD not in out + err, "%s: the password is shown" % extra)


# ---- two instances ------------------------------------------------------------

def flow_across(ctx, redis, pair):
    phone = H.PHONE_E164
    a = browser(ctx, pair.a)
    r = a.request_code(H.PHONE)
    check(r.status == 200, "request on A: %s" % H.brief(r))
    b = moved(a, pair.b)
    r = b.verify("000000")
    check(r.status == 403 and "1 try left" not in r.text, "a wrong code on "
          "B: %s" % H.brief(r))
    r = b.resend()
    check(r.status == 200 and H.SENT_AGAIN in r.text, "resend on B: %s"
          % H.brief(r))
    sent = codes_of(pair, phone, 2)
    check(len(sent) == 2 and sent[0] == sent[1], "B resent A's code: %s"
          % sent)
    r = b.verify(sent[0])
    check(r.status == 200 and "otp_auth" in b.cookies, "verify on B: %s"
          % H.brief(r))
    auth = {"Cookie": "otp_auth=" + b.cookies["otp_auth"]}
    for srv in (pair.a, pair.b):
        r = H.Client(srv.port).get("/auth", headers=auth)
        check(r.status == 204, "/auth on %s: %s" % (srv.dir, H.brief(r)))
    a = moved(b, pair.a)
    r = a.post_form("/logout", {})
    check(r.status == 200, "logout on A: %s" % H.brief(r))
    r = H.Client(pair.b.port).get("/auth", headers=auth)
    check(r.status == 401, "/auth on B after a logout on A: %s" % H.brief(r))
    # The JSON API: made on B, checked on A, by id and by number.
    api = H.Client(pair.b.port)
    r = api.api("POST", H.API, {"phone": H.PHONE2})
    check(r.status == 201, "API create on B: %s" % H.brief(r))
    vid = js(r)["id"]
    code = code_of(pair, H.PHONE2_E164)
    api = H.Client(pair.a.port)
    r = api.api("GET", H.API + "/" + vid)
    check(r.status == 200 and js(r)["status"] == "pending",
          "API status on A: %s" % H.brief(r))
    r = api.api("POST", H.API + "/by_phone_number/check",
                {"phone": H.PHONE2, "code": code})
    check(r.status == 200 and js(r)["status"] == "approved",
          "API check by number on A: %s" % H.brief(r))
    r = H.Client(pair.b.port).api("POST", H.API + "/" + vid + "/check",
                                  {"code": code})
    check(r.status == 409, "a code works once, on either: %s" % H.brief(r))


def attempts_across(ctx, redis, pair):
    a = browser(ctx, pair.a)
    check(a.request_code(H.PHONE).status == 200, "request")
    code = code_of(pair, H.PHONE_E164)
    b = moved(a, pair.b)
    # Guesses alternate between the instances: MAX_ATTEMPTS (3) in all.
    for i, c in enumerate((a, b, a)):
        r = c.verify("%06d" % ((int(code) + 1 + i) % 1000000))
        check(r.status == 403, "guess %d: %s" % (i, H.brief(r)))
    r = b.verify(code)
    check(r.status == 403 and H.TOO_MANY in r.text, "locked after 3 "
          "guesses on two instances: %s" % H.brief(r))


def hammer(jobs):
    """Runs every job (a function) at once; their results in order."""
    out = [None] * len(jobs)
    start = threading.Barrier(len(jobs))

    def run(i):
        start.wait()
        out[i] = jobs[i]()
    ts = [threading.Thread(target=run, args=(i,)) for i in range(len(jobs))]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    return out


def caps_across(ctx, redis, pair):
    """Concurrent requests to both: the per-number cap (three spellings of
    one number) and the server-wide cap hold for the sum."""
    spellings = ["(201) 555-0142", "+1 201 555 0142", "2015550142"]
    ctx.note_phone("+12015550142")

    def one(srv, phone):
        def job():
            return browser(ctx, srv).request_code(phone).status
        return job
    got = hammer([one((pair.a, pair.b)[i % 2], spellings[i % 3])
                  for i in range(12)])
    sent = [to for to, _ in pair.sms_settled(3)]
    check(sent.count("+12015550142") == 3 and got.count(200) == 3,
          "per number: %d SMS, statuses %s (want 3 of 12)"
          % (sent.count("+12015550142"), got))
    phones = ["+1201555%04d" % (200 + i) for i in range(24)]
    for p in phones:
        ctx.note_phone(p)
    got = hammer([one((pair.a, pair.b)[i % 2], p)
                  for i, p in enumerate(phones)])
    total = len(pair.sms_settled(10))
    check(total == 10 and got.count(200) == 7 and got.count(503) == 17,
          "SMS_PER_HOUR 10 over both: %d SMS, statuses %s" % (total, got))


def pending(srv):
    """otp_pending_codes in srv's /metrics."""
    r = H.Client(srv.port).get("/metrics")
    m = re.search(r"^otp_pending_codes ([0-9]+)$", r.body.decode(), re.M)
    check(r.status == 200 and m, "no otp_pending_codes: %s" % H.brief(r))
    return int(m.group(1))


def pending_cap_across(ctx, redis, pair):
    """MAX_PENDING 4 over both: twelve new codes at once, half on A, half
    on B. Four are made; eight get the full table's answer (503 busy,
    Retry-After) and cost nothing; both instances' otp_pending_codes say
    4. An approval frees a place for one more, and only one."""
    phones = ["+1201555%04d" % (300 + i) for i in range(13)]
    for p in phones:
        ctx.note_phone(p)

    def one(srv, phone):
        return lambda: (phone, H.Client(srv.port).api("POST", H.API,
                                                      {"phone": phone}))
    got = hammer([one((pair.a, pair.b)[i % 2], p)
                  for i, p in enumerate(phones[:12])])
    made = [(p, r) for p, r in got if r.status == 201]
    full = [r for _, r in got if r.status != 201]
    sms = pair.sms_settled(4)
    check(len(made) == 4 and len(sms) == 4, "MAX_PENDING 4 over "
          "both: %d made, %d SMS" % (len(made), len(sms)))
    for r in full:
        check(r.status == 503 and js(r)["error"]["code"] == "busy" and
              re.fullmatch(r"[1-9][0-9]*", r.header("Retry-After") or ""),
              "a full table's refusal: %s" % H.brief(r))
    check(pending(pair.a) == 4 and pending(pair.b) == 4, "otp_pending_codes"
          " %d, %d, want 4" % (pending(pair.a), pending(pair.b)))
    phone, r = made[0]
    r = H.Client(pair.b.port).api("POST", H.API + "/" + js(r)["id"] +
                                  "/check", {"code": code_of(pair, phone)})
    check(r.status == 200 and js(r)["status"] == "approved",
          "approve on B: %s" % H.brief(r))
    check(pending(pair.a) == 3, "otp_pending_codes after an approval: %d"
          % pending(pair.a))
    late = [p for p in phones[:12] if p not in dict(made)][0]
    got = hammer([one(pair.a, phones[12]), one(pair.b, late)])
    check(sorted(r.status for _, r in got) == [201, 503], "one place, two "
          "sends: %s" % [H.brief(r) for _, r in got])
    deadline, n = time.monotonic() + 5, 0
    while n != 9 and time.monotonic() < deadline:  # the log writer's pace
        time.sleep(0.1)
        n = sum(open(os.path.join(d, "stderr.log")).read().count(
            "table_full to=") for d in (pair.a.dir, pair.b.dir))
    check(n == 9, "%d table_full lines in the logs, want 9" % n)


def webhooks_across(ctx, redis, pair, rcv):
    """One receiver, two instances: a code made on A and approved on B,
    one locked by guesses on both, one left to expire: each event exactly
    once, signed, from whichever instance ended it (the expiry: claimed by
    one sweeper of two)."""
    api = [H.Client(pair.a.port), H.Client(pair.b.port)]
    made = []
    for i, phone in enumerate(("+12015550401", "+12015550402",
                               "+12015550403")):
        ctx.note_phone(phone)
        r = api[i % 2].api("POST", H.API, {"phone": phone})
        check(r.status == 201, "create: %s" % H.brief(r))
        made.append((js(r)["id"], code_of(pair, phone)))
    r = api[1].api("POST", H.API + "/" + made[0][0] + "/check",
                   {"code": made[0][1]})
    check(r.status == 200, "approve on B: %s" % H.brief(r))
    wrong = "%06d" % ((int(made[1][1]) + 1) % 1000000)
    for c in api:
        r = c.api("POST", H.API + "/" + made[1][0] + "/check",
                  {"code": wrong})
    check(js(r)["status"] == "max_attempts_reached", "locked over both: %s"
          % H.brief(r))
    check(rcv.wait_requests(3, 15) == 3, "%d webhooks, want 3" % rcv.count())
    time.sleep(3)               # more sweeper rounds on both: no second
    check(rcv.count() == 3, "%d webhooks, want exactly 3" % rcv.count())
    got = {}
    for rec in rcv.requests:
        j = json.loads(S.raw_body(rec))
        got[j["id"]] = j["type"].split(".")[1]
    want = {made[0][0]: "approved", made[1][0]: "locked",
            made[2][0]: "expired"}
    check(got == want, "webhooks %s, want %s" % (got, want))
    for rec in rcv.requests:
        j = json.loads(S.raw_body(rec))
        S.hook_check(rec, got[j["id"]], j["id"], r"\+1\*{8}0[123]")


def killed_after_claim(ctx, redis, pair, rcv):
    """Delivery is at most once (README): with B stopped, A claims an
    expiry and its first try fails (500); A is killed before the retry.
    B, started again, never sends that event: the claim took it out of
    the pending index, which is empty."""
    for srv in (pair.b, pair.a):
        if srv is pair.a:
            rcv.answers = [500] * 10
            r = H.Client(pair.a.port).api("POST", H.API,
                                          {"phone": "+12015550404"})
            check(r.status == 201, "create on A: %s" % H.brief(r))
            ctx.note_phone("+12015550404")
            code_of(pair, "+12015550404")
            check(rcv.wait_requests(1, 15) == 1, "no first try")
            srv.proc.kill()
        srv.stop()
        pair.servers.remove(srv)
        ctx.old_servers.append(srv)
    b = pair.start("b", tag="2")
    time.sleep(3)               # three rounds of B's sweeper
    check(rcv.count() == 1, "%d tries, want 1: the event was sent again"
          % rcv.count())
    check(pending(b) == 0, "otp_pending_codes %d after the claim"
          % pending(b))


def case_webhooks_across(ctx, fn=webhooks_across):
    c, k = ctx.cert("server")
    rcv = H.fake_api.FakeApi(c, k, mode="generic",
                             record=os.path.join(ctx.dir, "hooks.jsonl"))
    rcv.start()
    ctx.secrets["the webhook secret"] = S.HOOK_SECRET
    try:
        with_pair(lambda ctx, redis, pair: fn(ctx, redis, pair, rcv),
                  extra={"WEBHOOK_URL": rcv.base_url + "/hooks/otp",
                         "WEBHOOK_SECRET": S.HOOK_SECRET, "MAX_ATTEMPTS": 2,
                         "SMS_CA_FILE": ctx.cert("ca")[0], "CODE_TTL": 2,
                         "METRICS": True})(ctx)
    finally:
        rcv.stop()


def redis_down_and_back(ctx, redis, pair):
    v = browser(ctx, pair.a)
    check(v.request_code("+12015550177").status == 200, "request on A")
    check(v.verify(code_of(pair, "+12015550177")).status == 200, "verified")
    a = browser(ctx, pair.a)
    check(a.request_code(H.PHONE).status == 200, "request on A")
    code = code_of(pair, H.PHONE_E164)
    redis.stop()
    # A session's revocation cannot be looked up: not a pass, a 503; a
    # logout that cannot be recorded keeps the cookie and says so.
    r = H.Client(pair.b.port).get("/auth", headers={
        "Cookie": "otp_auth=" + v.cookies["otp_auth"]})
    check(r.status == 503, "/auth with Redis down: %s" % H.brief(r))
    r = moved(v, pair.b).post_form("/logout", {})
    check(r.status == 503 and "cannot reach its store" in r.text,
          "logout with Redis down: %s" % H.brief(r))
    b = moved(a, pair.b)
    t0 = time.monotonic()
    r = b.verify(code)
    check(r.status == 503 and "cannot reach its store" in r.text,
          "verify on B with Redis down: %s" % H.brief(r))
    r = H.Client(pair.a.port).api("POST", H.API, {"phone": H.PHONE2})
    check(r.status == 503 and js(r)["error"]["code"] == "store_unavailable",
          "API create with Redis down: %s" % H.brief(r))
    r = browser(ctx, pair.b).request_code(H.PHONE2)
    check(r.status == 503, "request with Redis down: %s" % H.brief(r))
    check(time.monotonic() - t0 < 3, "the 503s took %.1f s"
          % (time.monotonic() - t0))
    for srv in (pair.a, pair.b):
        r = H.Client(srv.port).get("/readyz")
        check(r.status == 503 and "store unavailable" in r.text,
              "/readyz with Redis down: %s" % H.brief(r))
    check(len(pair.sms_settled(2)) == 2,
          "nothing sent while Redis was down")
    redis.start()
    # Back, without a restart of either: the record was lost with Redis
    # (no persistence), so the code is unknown; a new flow works.
    r = b.verify(code)
    check(r.status in (403, 200) and "otp_auth" not in b.cookies,
          "the lost record's code is not accepted: %s" % H.brief(r))
    for srv in (pair.a, pair.b):
        r = H.Client(srv.port).get("/readyz")
        check(r.status == 200, "/readyz after Redis is back: %s"
              % H.brief(r))
    a = browser(ctx, pair.a)
    r = a.request_code(H.PHONE2)
    check(r.status == 200, "request after: %s" % H.brief(r))
    r = moved(a, pair.b).verify(code_of(pair, H.PHONE2_E164))
    check(r.status == 200, "verify on B after Redis is back: %s" % H.brief(r))
    for s in pair.servers:
        check(s.alive(), "%s died" % s.dir)
        check(s.wait_log(r"store: redis unavailable", timeout=1) and
              s.wait_log(r"store: redis is back", timeout=1) or
              s is pair.b, "%s logs the store going and coming" % s.dir)


def slow_redis(ctx, redis, pair):
    """DEBUG SLEEP holds Redis: a request is answered 503 within about
    STORE_TIMEOUT (300 ms), and the next one, after it, works."""
    t = threading.Thread(target=redis.cli, args=("DEBUG", "SLEEP", "2"))
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    r = browser(ctx, pair.a).request_code(H.PHONE)
    took = time.monotonic() - t0
    t.join()
    check(r.status == 503 and took < 1.5, "request while Redis sleeps: %s "
          "in %.2f s" % (H.brief(r), took))
    check(len(pair.sms()) == 0, "nothing sent")
    r = browser(ctx, pair.a).request_code(H.PHONE)
    check(r.status == 200, "request after: %s" % H.brief(r))


def case_wrong_password(ctx):
    redis = H.Redis(ctx.dir, "--requirepass", PASSWORD).start()
    pw = os.path.join(ctx.dir, "pw")
    with open(pw, "w") as f:
        f.write("not-" + PASSWORD + "\n")
    ctx.secrets["the wrong password"] = "not-" + PASSWORD
    ctx.secrets["the password"] = PASSWORD
    pair = None
    try:
        pair = Pair(ctx, redis, {"STORE_PASSWORD_FILE": pw})
        r = H.Client(pair.a.port).get("/readyz")
        check(r.status == 503, "/readyz with a wrong password: %s"
              % H.brief(r))
        r = browser(ctx, pair.a).request_code(H.PHONE)
        check(r.status == 503, "request: %s" % H.brief(r))
        check(pair.a.wait_log(r"store: redis unavailable: .*(WRONGPASS|"
                              r"invalid)", timeout=2), "the log says why")
    finally:
        if pair is not None:
            pair.close()
    with open(pw, "w") as f:
        f.write(PASSWORD + "\n")
    pair = None
    try:
        pair = Pair(ctx, redis, {"STORE_PASSWORD_FILE": pw})
        r = browser(ctx, pair.a).request_code(H.PHONE)
        check(r.status == 200, "request with the password: %s" % H.brief(r))
    finally:
        if pair is not None:
            pair.close()
        redis.stop()


def readme_nginx(a, b, port):
    """README's "Two or more instances" nginx snippet, on our ports."""
    text = H.readme_snippets("tests/redis_store.py").get("nginx")
    check(text, "README has the nginx snippet this test runs")
    for old, new in (("10.0.0.11:5000", "127.0.0.1:%d" % a),
                     ("10.0.0.12:5000", "127.0.0.1:%d" % b),
                     ("listen 80;", "listen 127.0.0.1:%d;" % port)):
        check(old in text, "README's snippet has %s" % old)
        text = text.replace(old, new)
    return text



def behind_nginx(ctx, redis, pair):
    """Round robin: each request may land on either; one instance stops
    mid-flow and the flow ends on the other."""
    if H.nginx_path() is None:
        raise H.Skip("no nginx")
    port = H.free_port()
    tmp = os.path.join(ctx.dir, "nginx")
    os.makedirs(tmp)
    ngx = H.start_nginx(ctx.dir, tmp, readme_nginx(pair.a.port,
                                                   pair.b.port, port))
    try:
        H.wait_port(port)
        for phone, e164 in ((H.PHONE, H.PHONE_E164),
                            (H.PHONE2, H.PHONE2_E164)):
            c = browser(ctx, pair.a)
            c.port = port
            check(c.request_code(phone).status == 200, "request via nginx")
            code = code_of(pair, e164)
            if phone == H.PHONE2:
                check(pair.a.stop() == 0, "A stops cleanly")
            r = c.verify(code)
            check(r.status == 200, "verify via nginx%s: %s" % (
                " with A stopped" if phone == H.PHONE2 else "", H.brief(r)))
            r = c.get("/auth")
            check(r.status == 204, "/auth via nginx: %s" % H.brief(r))
        logs = "".join(open(os.path.join(d, "stderr.log")).read()
                       for d in (pair.a.dir, pair.b.dir))
        check(len(re.findall(r"info verified", logs)) == 2, "two verified")
    finally:
        ngx.stop()


CASES = [
    ("plain_binary_refuses_redis", case_plain_binary_refuses_redis),
    ("config_rules", case_config_rules),
    ("flow_across", with_pair(flow_across)),
    ("attempts_across", with_pair(attempts_across,
                                  extra={"MAX_ATTEMPTS": 3})),
    ("caps_across", with_pair(caps_across, extra={
        "SMS_PER_NUMBER_PER_HOUR": 3, "SMS_PER_HOUR": 10, "THREADS": 16})),
    ("pending_cap_across", with_pair(pending_cap_across, extra={
        "MAX_PENDING": 4, "THREADS": 16, "METRICS": True})),
    ("webhooks_across", case_webhooks_across),
    ("webhook_killed_after_claim", lambda ctx: case_webhooks_across(
        ctx, killed_after_claim)),
    ("redis_down_and_back", with_pair(redis_down_and_back)),
    ("slow_redis", with_pair(slow_redis)),
    ("wrong_password", case_wrong_password),
    ("behind_nginx", with_pair(behind_nginx)),
]

if __name__ == "__main__":
    if not os.access(REDIS_BIN, os.X_OK):
        print("FAIL setup: no %s (make build/otp_demo-redis)" % REDIS_BIN)
        print("0 passed, 1 failed")
        sys.exit(1)
    sys.exit(H.main(CASES, OUT, __doc__, jobs=2))
