#!/usr/bin/env python3
"""tests/attack/proxy.py: proxies in front, planted state files, children
and secrets, attacked (issue 11, findings 4 to 7).

  metrics_forwarded     METRICS_ALLOW checked against the proxy, not the
                        client: a forwarded request from anywhere got 200
  metrics_spellings     /%6detrics, //metrics, /metrics%00 reached it
  xff_appended_line     HAProxy appends its own X-Forwarded-For line: the
                        client's forged first line was believed (15 sends
                        against a limit of 10)
  state_tmp_symlink     a planted session.key.tmp symlink truncated
                        another file and changed its mode
  state_key_readable    a planted world-readable session.key was accepted
  state_dir_writable    a STATE_DIR others can write was accepted
  command_children      a command's background children outlived the send
  secret_file_modes     -t said nothing of a 0644 config holding API_KEY
  embed_no_core_dumps   a program embedding otp_demo kept core dumps on
"""
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


def number(i):
    return "+1201555%04d" % i


@case
def metrics_forwarded(ctx):
    ctx.start_fake()
    ctx.start_server({"METRICS": True, "TRUSTED_PROXY": "127.0.0.1"})
    b = ctx.browser()
    r = b.get("/metrics")
    check(r.status == 200, "the proxy host itself -> %r" % r)
    r = b.get("/metrics", headers=xff("203.0.113.66"))
    check(r.status == 404, "forwarded for 203.0.113.66 -> %r" % r)
    r = b.get("/metrics", headers={"X-Forwarded-For": "127.0.0.1, "
                                   "203.0.113.66"})
    check(r.status == 404, "forged 127.0.0.1 before the real client -> %r"
          % r)


@case
def metrics_spellings(ctx):
    ctx.start_fake()
    ctx.start_server({"METRICS": True})
    b = ctx.browser()
    for path in ("/%6detrics", "//metrics", "/metrics%00", "/./metrics",
                 "/x/../metrics", "/metrics/", "/Metrics", "/%2fmetrics",
                 "/metrics;x", "/healthz/../metrics"):
        r = b.get(path)
        check(r.status in (400, 404), "%s -> %r (want 400 or 404)"
              % (path, r))
    # Every page has one spelling: the others are refused the same way.
    for path in ("//", "/./", "/%2F", "/request/.", "/style%2ecss"):
        r = b.get(path)
        check(r.status in (400, 404), "%s -> %r" % (path, r))
    check(b.get("/metrics").status == 200, "/metrics itself")
    check(b.get("/").status == 200, "/ itself")
    check(b.get("/style.css").status == 200, "/style.css itself")


@case
def xff_appended_line(ctx):
    ctx.start_fake()
    ctx.start_server({"TRUSTED_PROXY": "127.0.0.1"})
    b = ctx.browser()
    ok = 0
    for i in range(15):
        # What HAProxy's option forwardfor sends when the client forged
        # one: the client's line first, the proxy's own line last.
        hdrs = [("X-Forwarded-For", "10.1.1.%d" % i),
                ("X-Forwarded-For", "203.0.113.5")]
        b.ensure_session()
        ctx.note_phone(number(i))
        r = raw_post(ctx, b, number(i), hdrs)
        ok += r == 200
    check(ok == 10, "%d sends from one client forging a first "
          "X-Forwarded-For line (want SMS_PER_IP_PER_HOUR = 10)" % ok)


def raw_post(ctx, b, phone, extra):
    """POST /request with header lines http.client would merge."""
    import http.client
    import urllib.parse
    body = urllib.parse.urlencode([("phone", phone), ("csrf", b.csrf)])
    conn = http.client.HTTPConnection("127.0.0.1", ctx.server.port,
                                      timeout=30)
    conn.putrequest("POST", "/request")
    conn.putheader("Content-Type", "application/x-www-form-urlencoded")
    conn.putheader("Content-Length", str(len(body)))
    conn.putheader("Cookie", "; ".join("%s=%s" % kv
                                       for kv in b.cookies.items()))
    for k, v in extra:
        conn.putheader(k, v)
    conn.endheaders(body.encode())
    r = conn.getresponse()
    r.read()
    conn.close()
    return r.status


def start_bad(ctx, overrides, pattern):
    """The server must refuse to start: exit 78, one line matching."""
    cfg = ctx.base_config()
    cfg.update(overrides)
    rc, _, err = h.run_once(ctx.dir, cfg)
    check(rc == 78, "exit %s (want 78): %s" % (rc, h.short(err, 300)))
    check(re.search(pattern, err), "stderr %r does not match %r"
          % (h.short(err, 300), pattern))


@case
def state_tmp_symlink(ctx):
    ctx.start_fake()
    state = os.path.join(ctx.dir, "state")
    os.mkdir(state, 0o700)
    victim = os.path.join(ctx.dir, "victim.txt")
    with open(victim, "w") as f:
        f.write("precious\n")
    os.chmod(victim, 0o640)
    os.symlink(victim, os.path.join(state, "session.key.tmp"))
    ctx.start_server({"STATE_DIR": state})
    with open(victim, "rb") as f:
        check(f.read() == b"precious\n", "the planted symlink's target was "
              "written")
    mode = stat.S_IMODE(os.stat(victim).st_mode)
    check(mode == 0o640, "the target's mode changed to %o" % mode)
    key = os.path.join(state, "session.key")
    check(os.path.isfile(key) and not os.path.islink(key),
          "no regular session.key made")


def planted_key(ctx, mode, uid):
    """A STATE_DIR whose session.key someone else made: mode, owner."""
    ctx.start_fake()
    state = os.path.join(ctx.dir, "state")
    os.mkdir(state, 0o700)
    key = os.path.join(state, "session.key")
    with open(key, "wb") as f:
        f.write(b"k" * 32)
    os.chmod(key, mode)
    os.chown(key, uid, uid)
    return state


# A session.key someone else made: (case, its mode, its owner, the
# refusal wanted).
PLANTED_KEYS = [
    ("state_key_readable", 0o644, 0,
     r"session\.key.*(mode|readable).*chmod 600"),
    ("state_key_other_owner", 0o600, 65534, r"session\.key.*owned.*chown"),
]


def planted_key_case(mode, uid, refusal):
    def fn(ctx):
        start_bad(ctx, {"STATE_DIR": planted_key(ctx, mode, uid)}, refusal)
    return fn


CASES += [(name, planted_key_case(*row)) for name, *row in PLANTED_KEYS]


@case
def state_dir_writable(ctx):
    ctx.start_fake()
    state = os.path.join(ctx.dir, "state")
    os.mkdir(state)
    os.chmod(state, 0o777)
    start_bad(ctx, {"STATE_DIR": state}, r"STATE_DIR .*writable.*chmod")
    os.chmod(state, 0o700)
    os.chown(state, 65534, 65534)
    start_bad(ctx, {"STATE_DIR": state}, r"STATE_DIR .*owned.*chown")


@case
def command_children(ctx):
    ctx.start_fake()
    pidfile = os.path.join(ctx.dir, "child.pid")
    script = os.path.join(ctx.dir, "send.sh")
    with open(script, "w") as f:
        f.write("#!/bin/sh\nsleep 300 &\necho $! > %s\nexit 0\n" % pidfile)
    os.chmod(script, 0o755)
    ctx.start_server({"SMS_PROVIDER": "command", "SMS_COMMAND": script})
    b = ctx.browser()
    r = b.request_code(h.PHONE)
    check(r.status == 200, "request -> %r" % r)
    check(os.path.exists(pidfile), "the command did not run")
    pid = int(open(pidfile).read())
    end = time.monotonic() + 5
    while time.monotonic() < end and os.path.exists("/proc/%d" % pid) and \
            "Z" not in open("/proc/%d/stat" % pid).read().split()[2]:
        time.sleep(0.05)
    alive = os.path.exists("/proc/%d" % pid) and \
        "Z" not in open("/proc/%d/stat" % pid).read().split()[2]
    if alive:
        os.kill(pid, 9)
    check(not alive, "the command's background child %d outlived the send"
          % pid)


@case
def secret_file_modes(ctx):
    ctx.start_fake()
    path = os.path.join(ctx.dir, "config.cfg")
    h.write_config(path, ctx.base_config())
    os.chmod(path, 0o644)
    rc, out, err = h.run_once(ctx.dir, args=["-t", "-c", "config.cfg"])
    out += err
    check(rc == 0, "-t exit %s: %s" % (rc, out))
    check(re.search(r"config\.cfg.*(readable by|mode 644).*chmod", out),
          "no warning for a 0644 config holding API_KEY: %r" % out)
    check(h.API_KEY not in out, "-t printed the key")
    os.chmod(path, 0o600)
    rc, out, err = h.run_once(ctx.dir, args=["-t", "-c", "config.cfg"])
    out += err
    check("readable by" not in out and "chmod" not in out,
          "a warning for a 0600 config: %r" % out)


@case
def embed_no_core_dumps(ctx):
    bin_ = os.environ.get("EMBED_BIN") or os.path.join(
        h.ROOT, "build", "examples", "embed")
    check(os.access(bin_, os.X_OK), "no %s (make examples)" % bin_)
    setpriv = shutil.which("setpriv")
    check(setpriv, "no setpriv (util-linux)")
    srv = h.Server(os.path.join(ctx.dir, "embed"),
                   env={"OTP_SMS_PROVIDER": "console"}, stdout=None,
                   command=[setpriv, "--reuid=65534", "--regid=65534",
                            "--clear-groups", bin_, "-l", "127.0.0.1:0"])
    try:
        try:
            srv.start()
        except h.Fail as e:
            raise h.Fail("embed did not start: %s" % e)
        # A process that may dump core has its /proc files owned by its
        # own user; PR_SET_DUMPABLE 0 makes them root's.
        owner = os.stat("/proc/%d/environ" % srv.pid).st_uid
        check(owner == 0, "/proc/%d/environ is owned by uid %d: core dumps "
              "are enabled" % (srv.pid, owner))
    finally:
        srv.stop()


if __name__ == "__main__":
    sys.exit(h.main(CASES, OUT, "proxies, state files, children and "
                    "secrets attacked", jobs=2, prefix="attack_proxy_"))
