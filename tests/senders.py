#!/usr/bin/env python3
"""senders.py: integration tests of otp_demo's SMS senders and messages.

    python3 tests/senders.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library only.

The real binary, started per case on LISTEN 127.0.0.1:0 with its own config
in tests/out/senders/NAME/, driven like a browser (GET / for the session
cookie and CSRF token, POST /request, POST /verify), for each sender:

  spool     real files in a temporary spool directory (smstools3 format,
            mode 0640 in the directory's group, atomic, no temporary file left), including a
            missing directory and a regular file where a directory should be
  command   a test script that records its arguments, environment and open
            descriptors; a text built to break a shell; exit status,
            timeout, SMS_COMMAND checks
  http      each documented gateway shape (Telnyx, Twilio, Vonage, custom
            header, PUT) against tests/fake_api.py in mode "generic", which
            records the raw request and answers a chosen status and body
  console   the stdout line and the start-up notice

and message templates ({app}, {minutes}, MESSAGE_<lang> by
Accept-Language, OTP_MESSAGE_<lang>, the one-segment warning), WebOTP (the
SMS line, /otp.js, the verify page's script tag) and WWW_DIR.

Helpers (Browser, Server, Ctx, the log scan) come from tests/harness.py.
After every case the server must exit 0 on SIGTERM and its stderr must not
contain a code, an API key or secret, an SMS text, or a full phone number.

Prints "ok NAME" or "FAIL NAME: reason" per case, then "N passed, M failed".
Exit status 1 if anything failed.
"""

import base64
import contextlib
import json
import locale
import os
import re
import shutil
import signal
import stat
import sys
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

if (sys.flags.utf8_mode == 0 and
        locale.getpreferredencoding(False).lower().replace("-", "") != "utf8"):
    # Config files and pages here hold UTF-8 text.
    os.execv(sys.executable, [sys.executable, "-X", "utf8"] + sys.argv)

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import harness as h  # noqa: E402

OUT = os.path.join(ROOT, "tests", "out", "senders")
BIN = h.BIN
Fail, Skip, check, short = h.Fail, h.Skip, h.check, h.short

PHONE, E164, DIGITS = "(201) 555-0123", "+12015550123", "12015550123"
PHONES = ["203-555-01%02d" % i for i in range(10, 40)]   # more numbers
FROM = "+12025550111"
KEY = "KEYsenders-9c4e1a7b2d"
SEND_FAILED = h.SEND_FAILED
CODE_RX = "[0-9A-F]{6}"             # TOKEN_LENGTH 6, hex (the default)
START_LINE = re.compile(r"listening on")


# ---- helpers -----------------------------------------------------------------

BASE = {"LISTEN": "127.0.0.1:0", "TOKEN_LENGTH": 6, "SMS_TIMEOUT": 5,
        "SMS_PER_IP_PER_HOUR": 100}


def base_cfg(overrides):
    cfg = dict(BASE)
    for k, v in overrides.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    return cfg


def start(ctx, overrides, env=None, tag="", **kw):
    """Starts otp_demo with BASE and the overrides; returns the Server."""
    ctx.secrets.setdefault("the senders API key", KEY)
    return ctx.start_server(overrides, env=env, base=BASE, tag=tag, **kw)


def run_once(ctx, overrides, args=(), env=None, timeout=10):
    """Runs otp_demo with a config until it exits (killed after timeout);
    returns (status or None if it had to be killed, stdout, stderr)."""
    rc, out, err = h.run_once(ctx.dir, base_cfg(overrides), args, env,
                              timeout)
    with open(os.path.join(ctx.dir, "stderr.log"), "w") as f:
        f.write(err)
    ctx.secrets.setdefault("the senders API key", KEY)
    for label, secret in sorted(ctx.secrets.items()):
        check(secret not in err, "stderr contains %s" % label)
    return rc, out, err


def expect_config_error(ctx, overrides, want, env=None):
    """otp_demo must exit 78 with one stderr line matching want."""
    rc, _, err = run_once(ctx, overrides, env=env)
    lines = [l for l in err.splitlines() if l.strip()]
    check(rc is not None, "did not exit within 10 s (it started serving; "
          "stderr: %s)" % short(err, 200))
    check(rc == 78, "exit %s, want 78 (stderr: %s)" % (rc, short(err, 200)))
    check(lines and re.search(want, lines[-1]),
          "stderr %r does not match %r" % (short(err, 200), want))
    check(len(lines) == 1, "%d stderr lines, want 1: %s"
          % (len(lines), short(err, 300)))
    return lines[-1]


def fill(tmpl, code, app="otp_demo", ttl=300, webotp=""):
    """What message_fill makes of a template (the expected SMS text)."""
    out = (tmpl.replace("{code}", "\0C\0").replace("{app}", app)
           .replace("{minutes}", str((ttl + 59) // 60)))
    out = out.replace("\0C\0", code)
    if webotp:
        out += "\n\n@%s #%s" % (webotp, code)
    return out


def code_in(tmpl, text, **kw):
    """The code in text if text is exactly tmpl filled, else None."""
    rx = re.escape(fill(tmpl, "\x01", **kw)).replace("\x01", "(" + CODE_RX
                                                       + ")")
    rx = rx.replace("(" + CODE_RX + ")", "(?P<code>" + CODE_RX + ")", 1)
    rx = rx.replace("(" + CODE_RX + ")", "(?P=code)")
    m = re.fullmatch(rx, text)
    return m.group("code") if m else None


def expect_text(ctx, tmpl, text, where, **kw):
    code = code_in(tmpl, text, **kw)
    check(code, "%s: SMS text %r, want %r" % (where, text,
                                              fill(tmpl, "<code>", **kw)))
    ctx.note_sms(text, code)
    return code


def request(ctx, b, phone=PHONE, lang=None, want=200):
    """GET / then POST /request; checks the status and the page kind."""
    b.ensure_session()
    hdrs = {"Accept-Language": lang} if lang else {}
    r = b.request_code(phone, headers=hdrs)
    if want == 200:
        check(r.status == 200 and h.page_kind(r.body) == "verify",
              "POST /request %s -> %d %s, want 200 and the verify page"
              % (phone, r.status, short(r.text, 120)))
    else:
        check(r.status == want, "POST /request %s -> %d %s, want %d"
              % (phone, r.status, short(r.text, 120), want))
    return r


def expect_send_failed(ctx, b, r, status=502):
    check(r.status == status, "POST /request -> %d %s, want %d"
          % (r.status, short(r.text, 100), status))
    check(h.page_kind(r.body) == "index" and SEND_FAILED in r.text,
          "POST /request -> %d: not the index page with %r: %s"
          % (r.status, SEND_FAILED, short(r.text, 160)))
    for c in r.all("Set-Cookie"):
        if c.startswith("otp_vid="):
            check(re.match(r"otp_vid=(;|$)", c) or
                  re.search(r"(?i)max-age=0(;|$)", c),
                  "a failed send set a live otp_vid cookie: %r" % c)


def verify_ok(ctx, b, code):
    r = b.verify(code)
    check(r.status == 200 and h.page_kind(r.body) == "success",
          "POST /verify with the code sent -> %d %s, want 200 success"
          % (r.status, short(r.text, 120)))


def verify_refused(ctx, b, code):
    r = b.verify(code)
    check(r.status == 403 and h.page_kind(r.body) != "success",
          "POST /verify with the code of a failed send -> %d %s, want 403"
          % (r.status, short(r.text, 120)))


def still_serving(ctx):
    b = ctx.browser("probe")
    r = b.get("/")
    check(r.status == 200, "GET / after the failure -> %d" % r.status)
    check(ctx.server.alive(), "server died (exit %s)"
          % ctx.server.proc.poll())


def log_has(ctx, rx, what, timeout=3.0):
    check(ctx.server.wait_log(rx, 0, timeout),
          "no log line matching %r (%s); log: %s"
          % (rx, what, short(ctx.server.log()[-600:], 600)))


def files_under(d):
    out = []
    for top, dirs, files in os.walk(d):
        for f in files:
            out.append(os.path.relpath(os.path.join(top, f), d))
    return sorted(out)


# ---- the fake gateway ----------------------------------------------------------

def fake(ctx, mode="generic", **kw):
    kw.setdefault("api_key", None)
    return ctx.start_fake(mode=mode, **kw)


def http_cfg(ctx, path, **over):
    cfg = {"SMS_PROVIDER": "http", "SMS_API_URL": ctx.fake.base_url + path,
           "SMS_CA_FILE": ctx.cert("ca")[0], "API_KEY": KEY,
           "FROM_NUMBER": FROM}
    cfg.update(over)
    return cfg


def one_call(ctx, n0=0):
    got = ctx.fake.wait_requests(n0 + 1, 5.0)
    check(got == n0 + 1, "%d gateway calls, want 1" % (got - n0))
    return ctx.fake.requests[n0]


def raw_body(rec):
    return base64.b64decode(rec["body_b64"])


# ---- spool ---------------------------------------------------------------------

SPOOL_FILE = re.compile(r"To: ([0-9]+)\n((?:[A-Za-z_]+: [^\n]*\n)*)\n"
                        r"(.*)\n", re.S)


def spool_setup(ctx):
    d = os.path.join(ctx.dir, "spool")
    out = os.path.join(d, "outgoing")
    os.makedirs(out)
    return d, out


def spool_read_one(d):
    files = files_under(d)
    check(len(files) == 1 and files[0].startswith("outgoing" + os.sep),
          "files in the spool's parent after one send: %s (want exactly one "
          "in outgoing/, no temporary file)" % files)
    check(not os.path.basename(files[0]).startswith("."),
          "the message file %r is hidden" % files[0])
    path = os.path.join(d, files[0])
    st = os.stat(path)
    mode = stat.S_IMODE(st.st_mode)
    check(mode == 0o640, "message file mode %o, want 640 (smsd's group "
          "reads it, nobody else)" % mode)
    gid = os.stat(os.path.dirname(path)).st_gid
    check(st.st_gid == gid, "message file group %d, want the spool "
          "directory's %d" % (st.st_gid, gid))
    with open(path, "rb") as f:
        data = f.read()
    return path, data


def spool_send(ctx, message=None):
    """The spool sender (with MESSAGE message) on a new spool directory,
    one code asked for: (the browser, the message file's bytes)."""
    d, out = spool_setup(ctx)
    start(ctx, dict({"SMS_PROVIDER": "spool", "SPOOL_DIR": out},
                    **({"MESSAGE": message} if message else {})))
    log_has(ctx, r"spool sender: " + re.escape(out), "start-up line")
    b = ctx.browser()
    request(ctx, b)
    return b, spool_read_one(d)[1]


def case_spool_gsm(ctx):
    b, data = spool_send(ctx)
    m = re.fullmatch(r"To: %s\n\n(.*)\n" % DIGITS, data.decode("utf-8"),
                     re.S)
    check(m, "spool file is %r, want 'To: %s\\n\\n<text>\\n'"
          % (data, DIGITS))
    code = expect_text(ctx, "Your token is {code}", m.group(1), "spool")
    verify_ok(ctx, b, code)


def case_spool_utf8(ctx):
    tmpl = "Ваш код {code}"
    b, data = spool_send(ctx, tmpl)
    m = re.fullmatch(r"To: %s\nAlphabet: UTF-8\n\n(.*)\n" % DIGITS,
                     data.decode("utf-8"), re.S)
    check(m, "spool file is %r, want 'To: %s\\nAlphabet: UTF-8\\n\\n"
          "<text>\\n'" % (data.decode("utf-8", "replace"), DIGITS))
    code = expect_text(ctx, tmpl, m.group(1), "spool")
    verify_ok(ctx, b, code)


def case_spool_latin_gsm(ctx):
    """GSM-7 text with non-ASCII letters (ü, é, £): the file is UTF-8, and
    smstools3 reads a file without an Alphabet header as ISO-8859-15, so
    it must say Alphabet: UTF-8 as well."""
    tmpl = "Ihr Code für Café £5: {code}"
    _, data = spool_send(ctx, tmpl)
    text = data.decode("utf-8")
    m = SPOOL_FILE.fullmatch(text)
    check(m, "spool file %r is not in smstools3's format" % text)
    ctx.note_sms(m.group(3), code_in(tmpl, m.group(3)))
    check("Alphabet: UTF-8\n" in m.group(2),
          "UTF-8 text with non-ASCII characters but no 'Alphabet: UTF-8' "
          "header (smstools3 then reads the file as ISO-8859-15 and sends "
          "'fÃ¼r'): %r" % text)


def case_spool_missing_dir(ctx):
    d = os.path.join(ctx.dir, "spool")
    os.makedirs(d)
    out = os.path.join(d, "outgoing")         # not there
    start(ctx, {"SMS_PROVIDER": "spool", "SPOOL_DIR": out,
                "RESEND_INTERVAL": 0})
    log_has(ctx, r"warn.*spool sender: .*outgoing.*sends will fail",
            "start-up warning")
    b = ctx.browser()
    r = request(ctx, b, want=502)
    expect_send_failed(ctx, b, r)
    log_has(ctx, r"send_failed to=\+1\*+23 reason=\"spool ",
            "send_failed line")
    check(files_under(d) == [], "files left after a failed spool send: %s"
          % files_under(d))
    verify_refused(ctx, b, "000000")
    still_serving(ctx)
    # Fixed while running: the next send works, no restart.
    os.makedirs(out)
    b2 = ctx.browser("B")
    request(ctx, b2)
    _, data = spool_read_one(d)
    m = re.fullmatch(r"To: %s\n\n(.*)\n" % DIGITS, data.decode("utf-8"),
                     re.S)
    check(m, "spool file %r" % data)
    verify_ok(ctx, b2, expect_text(ctx, "Your token is {code}", m.group(1),
                                   "spool"))


# otp_demo run as another user (nobody) through setpriv.
AS_NOBODY = ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
             BIN]


def case_spool_parent_not_writable(ctx):
    """smsd's usual set-up: otp_demo (not root) may write SPOOL_DIR, not
    its parent. Then the send must work, or at least the start-up check
    must say that the parent needs to be writable (it checks only
    SPOOL_DIR, and the failure then names SPOOL_DIR, which is writable)."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        raise Skip("needs root and setpriv to run otp_demo as nobody")
    d, out = spool_setup(ctx)
    os.chmod(d, 0o755)
    os.chmod(out, 0o1777)
    start(ctx, {"SMS_PROVIDER": "spool", "SPOOL_DIR": out, "API_KEY": KEY},
          command=AS_NOBODY)
    b = ctx.browser()
    b.ensure_session()
    r = b.request_code(PHONE)
    if r.status == 200:
        _, data = spool_read_one(d)
        m = re.fullmatch(r"To: %s\n\n(.*)\n" % DIGITS,
                         data.decode("utf-8"), re.S)
        check(m, "spool file %r" % data)
        verify_ok(ctx, b, expect_text(ctx, "Your token is {code}",
                                      m.group(1), "spool"))
        return
    expect_send_failed(ctx, b, r)
    log = ctx.server.log()
    start_warn = [l for l in log.splitlines()
                  if "spool sender" in l and "warn" in l]
    fail = [l for l in log.splitlines() if "send_failed" in l]
    if start_warn and "parent" in start_warn[0]:
        return      # documented at start: the deployer is told
    raise Fail("SPOOL_DIR writable, its parent not: the send fails (%s) "
               "and the start-up log %s" % (
                   fail[0].split(" ", 2)[-1] if fail else "no log line",
                   "says %r" % start_warn[0] if start_warn else
                   "had no warning"))


def case_spool_parent_is_file(ctx):
    d = os.path.join(ctx.dir, "spool")
    os.makedirs(d)
    with open(os.path.join(d, "sms"), "w") as f:
        f.write("a regular file, not a directory\n")
    cases = [os.path.join(d, "sms", "outgoing"),    # parent is a file
             os.path.join(d, "sms")]                # the dir is a file
    for i, out in enumerate(cases):
        if i:
            rc = ctx.server.stop()
            ctx.old_servers.append(ctx.server)
            check(rc == 0, "exit %s on SIGTERM, want 0" % (rc,))
        start(ctx, {"SMS_PROVIDER": "spool", "SPOOL_DIR": out},
              tag=".%d" % i if i else "")
        b = ctx.browser("B%d" % i)
        r = request(ctx, b, want=502)
        expect_send_failed(ctx, b, r)
        check(files_under(d) == ["sms"], "SPOOL_DIR %s: files after the "
              "failed send: %s" % (out, files_under(d)))
        with open(os.path.join(d, "sms")) as f:
            check(f.read() == "a regular file, not a directory\n",
                  "the regular file at %s was changed" % out)
        still_serving(ctx)


# ---- command -----------------------------------------------------------------

def script(ctx, body, name="sms.sh", where=None):
    """Writes an executable #!/bin/sh script that records each call's
    argv (NUL-separated), environment and open descriptors in rec/."""
    d = where or os.path.join(ctx.dir, "bin")
    os.makedirs(d, exist_ok=True)
    rec = os.path.join(ctx.dir, "rec")
    os.makedirs(rec, exist_ok=True)
    path = os.path.join(d, name)
    with open(path, "w") as f:
        f.write("#!/bin/sh\n"
                "r='%s'\n"
                "printf '%%s\\0' \"$@\" > \"$r/argv.$$\"\n"
                "/bin/cat /proc/$$/environ > \"$r/env.$$\"\n"
                "for f in /proc/$$/fd/*; do /bin/readlink \"$f\"; done "
                "> \"$r/fds.$$\"\n"
                "while read -r l; do case $l in Sig*) echo \"$l\";; esac; "
                "done < /proc/$$/status > \"$r/sig.$$\"\n"
                "%s\n" % (rec, body))
    os.chmod(path, 0o755)
    return path


def calls(ctx):
    """[(argv list, env dict, fds list)] of the recorded calls, oldest
    first."""
    rec = os.path.join(ctx.dir, "rec")
    out = []
    names = [n for n in os.listdir(rec) if n.startswith("argv.")] \
        if os.path.isdir(rec) else []
    names.sort(key=lambda n: os.stat(os.path.join(rec, n)).st_mtime_ns)
    for n in names:
        pid = n.split(".", 1)[1]

        def rd(kind):
            p = os.path.join(rec, "%s.%s" % (kind, pid))
            with open(p, "rb") as f:
                return f.read()
        argv = rd("argv").decode("utf-8").split("\0")[:-1]
        env = dict(e.split("=", 1) for e in
                   rd("env").decode("utf-8").split("\0") if "=" in e)
        fds = rd("fds").decode("utf-8").splitlines()
        fds.append(rd("sig").decode("utf-8"))   # last: the Sig* lines
        out.append((argv, env, fds))
    return out


def one_command_call(ctx):
    end = time.monotonic() + 3
    while time.monotonic() < end and not calls(ctx):
        time.sleep(0.05)
    got = calls(ctx)
    check(len(got) == 1, "the command ran %d times, want 1" % len(got))
    return got[0]


PWNED_TMP = "/tmp/otp_senders_pwned.%d" % os.getpid()


def hostile_message():
    """A MESSAGE that a shell would turn into several commands."""
    return ("; rm -rf victim $(touch pwned1) \"quotes\" 'single' "
            "`touch pwned2` && touch pwned3 | touch %s > pwned4 * ~ \\\n"
            "{code} end" % PWNED_TMP)


def no_shell_ran(ctx):
    made = [p for p in ("pwned1", "pwned2", "pwned3", "pwned4")
            if os.path.exists(os.path.join(ctx.dir, p))]
    if os.path.exists(PWNED_TMP):
        made.append(PWNED_TMP)
        os.unlink(PWNED_TMP)
    check(not made, "a shell ran the text: created %s" % made)
    check(os.path.exists(os.path.join(ctx.dir, "victim")),
          "a shell ran the text: 'victim' was removed")


def hostile_text_sent(ctx, placeholders):
    """SMS_COMMAND (the recording script, then placeholders) with the
    hostile MESSAGE: the script gets the number and the text as two
    arguments, no shell runs the text, and the code works."""
    s = script(ctx, "exit 0")
    with open(os.path.join(ctx.dir, "victim"), "w") as f:
        f.write("x")
    tmpl = hostile_message()
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s + placeholders,
                "MESSAGE": tmpl})
    log_has(ctx, r"command sender", "start-up line")
    b = ctx.browser()
    request(ctx, b)
    argv, _, _ = one_command_call(ctx)
    check(len(argv) == 2 and argv[0] == E164,
          "arguments %r, want [%r, <text>]" % (argv, E164))
    code = expect_text(ctx, tmpl, argv[1], "command argument 2")
    no_shell_ran(ctx)
    verify_ok(ctx, b, code)


def case_command_placeholders(ctx):
    hostile_text_sent(ctx, " {to} {text}")


def case_command_appended(ctx):
    """Without {to}/{text}: number and text appended as two arguments."""
    hostile_text_sent(ctx, "")


def case_command_words(ctx):
    """Fixed words, a quoted word with a blank, placeholders inside
    words (like gammu-smsd-inject TEXT {to} -text {text})."""
    s = script(ctx, "exit 0")
    start(ctx, {"SMS_PROVIDER": "command",
                "SMS_COMMAND": s + " TEXT {to} -text {text} 'two words' "
                "--to={to} \"--msg={text}\""})
    b = ctx.browser()
    request(ctx, b)
    argv, _, _ = one_command_call(ctx)
    check(len(argv) == 7, "arguments %r, want 7" % (argv,))
    text = argv[3]
    code = expect_text(ctx, "Your token is {code}", text, "argument 4")
    want = ["TEXT", E164, "-text", text, "two words", "--to=" + E164,
            "--msg=" + text]
    check(argv == want, "arguments %r, want %r" % (argv, want))
    verify_ok(ctx, b, code)


def case_command_env(ctx):
    s = script(ctx, "exit 0")
    secrets = {"OTP_TEST_SECRET": "sekrit-5e2f81c0", "API_KEY": "ak-77d3e1",
               "TELNYX_API_KEY": "tk-0a9b8c", "OTP_API_KEY": KEY,
               "AWS_SECRET_ACCESS_KEY": "aws-31f2"}
    env = dict(secrets, MODEM_DEVICE="/dev/ttyUSB2")
    for k, v in secrets.items():
        ctx.secrets["env " + k] = v
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s,
                "SMS_COMMAND_ENV": "MODEM_DEVICE, PATH,NOT_SET_ANYWHERE"},
          env=env)
    b = ctx.browser()
    request(ctx, b)
    argv, cenv, fds = one_command_call(ctx)
    ctx.note_sms(argv[1], code_in("Your token is {code}", argv[1]))
    want = {"MODEM_DEVICE": "/dev/ttyUSB2", "PATH": os.environ["PATH"]}
    check(cenv == want, "the command's environment is %r, want exactly %r"
          % (sorted(cenv), sorted(want)))
    socks = [f for f in fds if f.startswith("socket:")]
    check(not socks, "the command inherited sockets: %s" % socks)
    for label, v in secrets.items():
        check(all(v not in a for a in argv), "%s in the arguments" % label)


def case_command_signals(ctx):
    """The program starts with no signals blocked and SIGPIPE at its
    default: otp_demo ignores SIGPIPE, and an ignored signal stays ignored
    through execve (a script's "cmd | head -1" then sees EPIPE errors
    instead of the usual quiet end)."""
    s = script(ctx, "exit 0")
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s})
    b = ctx.browser()
    request(ctx, b)
    argv, _, fds = one_command_call(ctx)
    ctx.note_sms(argv[1], code_in("Your token is {code}", argv[1]))
    sig = dict(re.findall(r"^(Sig[A-Za-z]+):\s*([0-9a-f]+)$", fds[-1], re.M))
    check("SigBlk" in sig and "SigIgn" in sig, "no Sig* lines: %r" % fds[-1])
    blk, ign = int(sig["SigBlk"], 16), int(sig["SigIgn"], 16)
    names = {1: "SIGHUP", 2: "SIGINT", 13: "SIGPIPE", 15: "SIGTERM"}
    blocked = [n for k, n in names.items() if blk & (1 << (k - 1))]
    ignored = [n for k, n in names.items() if ign & (1 << (k - 1))]
    check(not blocked and not ignored, "the command starts with %s blocked "
          "and %s ignored (SigBlk %s, SigIgn %s)" % (blocked or "nothing",
                                                    ignored or "nothing",
                                                    sig["SigBlk"],
                                                    sig["SigIgn"]))


def case_command_timeout_fd_closed(ctx):
    """SMS_TIMEOUT must hold also for a program that closes the
    descriptors it inherited (as daemons and some tools do)."""
    s = script(ctx, "exec 3>&-\nexec /bin/sleep 8")
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s,
                "SMS_TIMEOUT": 2})
    b = ctx.browser()
    b.ensure_session()
    t0 = time.monotonic()
    r = b.request_code(PHONE, timeout=20)
    took = time.monotonic() - t0
    argv, _, _ = one_command_call(ctx)
    ctx.note_sms(argv[1], code_in("Your token is {code}", argv[1]))
    check(took <= 6, "POST /request took %.1f s with SMS_TIMEOUT 2 (status "
          "%d): the timeout did not apply once the program closed its "
          "inherited descriptors" % (took, r.status))
    expect_send_failed(ctx, b, r)


def case_command_background_child(ctx):
    """A script that leaves something running in the background (holding
    the descriptors it inherited) and exits 0 at once: the send succeeds
    when the script exits, not SMS_TIMEOUT later."""
    with reaped("6.%d3" % os.getpid()) as marker:
        s = script(ctx, "/bin/sleep %s &\nexit 0" % marker)
        start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s,
                    "SMS_TIMEOUT": 4})
        b = ctx.browser()
        b.ensure_session()
        t0 = time.monotonic()
        r = request(ctx, b)
        took = time.monotonic() - t0
        argv, _, _ = one_command_call(ctx)
        code = expect_text(ctx, "Your token is {code}", argv[1], "argument")
        check(took < 2, "POST /request took %.1f s (SMS_TIMEOUT 4) for a "
              "script that exits at once, leaving a background process "
              "that holds its descriptors" % took)
        verify_ok(ctx, b, code)


def case_command_fail_exit(ctx):
    s = script(ctx, "exit 1")
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s})
    b = ctx.browser()
    r = request(ctx, b, want=502)
    expect_send_failed(ctx, b, r)
    argv, _, _ = one_command_call(ctx)
    code = expect_text(ctx, "Your token is {code}", argv[1], "argument 2")
    log_has(ctx, r"send_failed to=\+1\*+23 reason=\"command exit 1\"",
            "send_failed line")
    verify_refused(ctx, b, code)
    still_serving(ctx)


def _slow_request(ctx, b, box):
    try:
        t0 = time.monotonic()
        box["r"] = request(ctx, b, want=502)
        box["t"] = time.monotonic() - t0
    except Exception as e:  # noqa: BLE001
        box["e"] = e


def _hung_request(ctx, marker, timeout):
    """A server whose command sleeps (marker its argument) with
    SMS_TIMEOUT timeout, and a POST /request to it on a thread: returns
    the server, the browser, the thread and its result box."""
    s = script(ctx, "/bin/sleep %s\nexit 0" % marker)
    srv = start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s,
                      "SMS_TIMEOUT": timeout})
    b = ctx.browser()
    b.ensure_session()
    box = {}
    t = threading.Thread(target=_slow_request, args=(ctx, b, box))
    t.start()
    return srv, b, t, box


def _timeout_case(ctx, marker):
    _, b, t, box = _hung_request(ctx, marker, 2)
    time.sleep(0.5)
    other = ctx.browser("other")
    r = other.get("/", timeout=5)
    check(r.status == 200 and r.elapsed < 2, "GET / while the command "
          "hangs -> %d in %.1f s" % (r.status, r.elapsed))
    t.join(15)
    check(not t.is_alive(), "POST /request still waiting after 15 s")
    if "e" in box:
        raise box["e"]
    check(box["t"] <= 10, "the send failed after %.1f s, want <= 10 "
          "(SMS_TIMEOUT 2)" % box["t"])
    expect_send_failed(ctx, b, box["r"])
    log_has(ctx, r"send_failed to=\+1\*+23 reason=\"command timed "
            "out\"", "send_failed line")
    argv, _, _ = one_command_call(ctx)
    ctx.note_sms(argv[1], code_in("Your token is {code}", argv[1]))
    still_serving(ctx)


def _procs_with(arg):
    out = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open("/proc/%s/cmdline" % pid, "rb") as f:
                cmd = f.read().split(b"\0")
        except OSError:
            continue
        if arg.encode() in cmd:
            out.append(int(pid))
    return out


@contextlib.contextmanager
def reaped(marker):
    """At the end of the block, SIGKILL for every process with marker
    among its arguments (what a test script left running)."""
    try:
        yield marker
    finally:
        for pid in _procs_with(marker):
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass


def case_command_timeout(ctx):
    with reaped("30.%d1" % os.getpid()) as marker:  # the script's sleep
        _timeout_case(ctx, marker)


def case_command_timeout_kills_children(ctx):
    """After SMS_TIMEOUT the script is killed; so must be what it started
    (here its sleep), or every hung send leaves a process behind."""
    with reaped("30.%d2" % os.getpid()) as marker:
        _timeout_case(ctx, marker)
        time.sleep(0.5)
        left = _procs_with(marker)
        check(not left, "the script's child (/bin/sleep %s, pid %s) still "
              "runs after the timeout killed the script" % (marker, left))


def case_command_hung_stop(ctx):
    """A command that hangs (SMS_TIMEOUT 60): SIGTERM still stops the
    server within 1 s, the command and its child killed (otp_stop)."""
    with reaped("30.%d3" % os.getpid()) as marker:
        srv, _, t, _ = _hung_request(ctx, marker, 60)
        deadline = time.monotonic() + 10
        while not _procs_with(marker) and time.monotonic() < deadline:
            time.sleep(0.05)
        check(_procs_with(marker), "the command's sleep never started")
        t0 = time.monotonic()
        rc = srv.stop()
        dt = time.monotonic() - t0
        srv.stop = lambda: 0     # already stopped; finish() scans the log
        t.join(10)
        check(rc == 0, "exit on SIGTERM with a command hanging: %s" % (rc,))
        check(dt <= 1.0, "SIGTERM with a command hanging took %.2f s "
              "(bound 1 s)" % dt)
        time.sleep(0.2)
        check(not _procs_with(marker), "the command's child still runs "
              "after the server stopped")


def case_command_phone_injection(ctx):
    s = script(ctx, "exit 0")
    start(ctx, {"SMS_PROVIDER": "command", "SMS_COMMAND": s})
    b = ctx.browser()
    for phone in ("201-555-0123; touch pwned1", "$(touch pwned2)2015550123",
                  "`touch pwned3`"):
        r = request(ctx, b, phone=phone, want=400)
        check("valid phone number" in r.text, "no 'valid phone number' "
              "message for %r: %s" % (phone, short(r.text)))
    check(calls(ctx) == [], "the command ran for an invalid number")
    with open(os.path.join(ctx.dir, "victim"), "w") as f:
        f.write("x")
    no_shell_ran(ctx)


def case_command_quoted_path(ctx):
    """A program path with a blank, quoted as command_argv allows."""
    s = script(ctx, "exit 0", where=os.path.join(ctx.dir, "my bin"))
    start(ctx, {"SMS_PROVIDER": "command",
                "SMS_COMMAND": "'%s' {to} {text}" % s})
    b = ctx.browser()
    request(ctx, b)
    argv, _, _ = one_command_call(ctx)
    check(argv[0] == E164, "arguments %r" % (argv,))
    verify_ok(ctx, b, expect_text(ctx, "Your token is {code}", argv[1],
                                  "argument 2"))


def case_command_config_errors(ctx):
    s = script(ctx, "exit 0")
    noexec = os.path.join(ctx.dir, "bin", "noexec.sh")
    with open(noexec, "w") as f:
        f.write("#!/bin/sh\nexit 0\n")
    os.chmod(noexec, 0o644)
    rows = [
        ("relative", "bin/sms.sh {to} {text}"),
        ("bare name", "sms.sh"),
        ("empty", ""),
        ("missing", os.path.join(ctx.dir, "bin", "nope.sh") + " {to}"),
        ("not executable", noexec + " {to} {text}"),
    ]
    bad = []
    for label, cmd in rows:
        try:
            expect_config_error(ctx, {"SMS_PROVIDER": "command",
                                      "SMS_COMMAND": cmd},
                                r"config\.cfg:[0-9]+: SMS_COMMAND ")
        except Fail as e:
            bad.append("%s (%r): %s" % (label, cmd, e))
    check(not bad, "; ".join(bad))
    check(os.path.exists(s), "test script vanished")


# ---- http ----------------------------------------------------------------------

def case_http_telnyx_shape(ctx):
    """SMS_PROVIDER http with the defaults is Telnyx's request: the fake in
    Telnyx mode checks path, Bearer key, JSON and E.164."""
    fake(ctx, mode="ok", api_key=KEY)
    start(ctx, http_cfg(ctx, "/v2/messages"))
    log_has(ctx, r"http sender: https://127\.0\.0\.1:", "start-up line")
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    check(rec["verdict"] == "ok", "the Telnyx fake refused: %s %s"
          % (rec["verdict"], short(rec["body"])))
    h = rec["headers"]
    check(h.get("authorization") == "Bearer " + KEY, "Authorization %r"
          % h.get("authorization"))
    j = rec["json"]
    check(sorted(j) == ["from", "text", "to"] and j["to"] == E164 and
          j["from"] == FROM, "body %s" % short(rec["body"]))
    verify_ok(ctx, b, expect_text(ctx, "Your token is {code}", j["text"],
                                  "text"))


def case_http_twilio(ctx):
    sid, token = "AC0123456789abcdef0123456789abcdef", "authTOKENsecret42"
    fake(ctx, answer_status=201, answer_body=json.dumps({
        "sid": "SM0000", "status": "queued"}).encode())
    tmpl = "Code {code} & more: a=b+c ü€ 100% ok?"
    path = "/2010-04-01/Accounts/%s/Messages.json" % sid
    basic = base64.b64encode(("%s:%s" % (sid, token)).encode()).decode()
    ctx.secrets.update({"the Twilio token": token,
                        "the Basic credentials": basic})
    start(ctx, http_cfg(ctx, path, API_KEY="%s:%s" % (sid, token),
                        SMS_HTTP_CONTENT_TYPE="application/x-www-form-"
                        "urlencoded", SMS_HTTP_AUTH="basic",
                        SMS_HTTP_BODY="To={to}&From={from}&Body={text}",
                        MESSAGE=tmpl))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    h = rec["headers"]
    check(rec["method"] == "POST" and rec["path"] == path,
          "%s %s, want POST %s" % (rec["method"], rec["path"], path))
    check(h.get("authorization") == "Basic " + basic,
          "Authorization %r, want 'Basic base64(sid:token)'"
          % h.get("authorization"))
    check(h.get("content-type") == "application/x-www-form-urlencoded",
          "Content-Type %r" % h.get("content-type"))
    body = raw_body(rec).decode("ascii", "replace")
    check(re.fullmatch(r"[A-Za-z0-9._~%&=-]*", body),
          "form body has characters that are not percent-encoded: %r" % body)
    form = urllib.parse.parse_qs(body, keep_blank_values=True,
                                 strict_parsing=True, encoding="utf-8",
                                 errors="strict")
    check(sorted(form) == ["Body", "From", "To"] and
          all(len(v) == 1 for v in form.values()),
          "form fields %r, want To, From, Body once each" % form)
    check(form["To"] == [E164] and form["From"] == [FROM],
          "To %r From %r" % (form["To"], form["From"]))
    verify_ok(ctx, b, expect_text(ctx, tmpl, form["Body"][0], "Body"))


def case_http_vonage(ctx):
    fake(ctx, answer_status=202, answer_body=b'{"message_uuid":'
         b'"aaaaaaaa-bbbb-cccc-dddd-0123456789ab"}')
    user, secret = "abcd1234", "vonageSECRET99"
    basic = base64.b64encode(("%s:%s" % (user, secret)).encode()).decode()
    ctx.secrets.update({"the Vonage secret": secret,
                        "the Basic credentials": basic})
    start(ctx, http_cfg(ctx, "/v1/messages", API_KEY=user + ":" + secret,
                        SMS_HTTP_AUTH="basic", FROM_NUMBER="Router",
                        SMS_HTTP_BODY='{"message_type":"text","channel":'
                        '"sms","to":"{to}","from":"{from}","text":'
                        '"{text}"}'))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    h = rec["headers"]
    check(h.get("authorization") == "Basic " + basic, "Authorization %r"
          % h.get("authorization"))
    check(h.get("content-type") == "application/json", "Content-Type %r"
          % h.get("content-type"))
    j = rec["json"]
    check(isinstance(j, dict), "body is not JSON: %s" % short(rec["body"]))
    text = j.get("text", "")
    code = expect_text(ctx, "Your token is {code}", text, "text")
    want = {"message_type": "text", "channel": "sms", "to": E164,
            "from": "Router", "text": text}
    check(j == want, "body %r, want %r" % (j, want))
    verify_ok(ctx, b, code)


def case_http_header_auth_put(ctx):
    fake(ctx)
    start(ctx, http_cfg(ctx, "/api/sms", SMS_HTTP_AUTH="header:X-Api-Key",
                        SMS_HTTP_METHOD="PUT"))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    h = rec["headers"]
    check(rec["method"] == "PUT", "method %s, want PUT" % rec["method"])
    check(h.get("x-api-key") == KEY, "X-Api-Key %r" % h.get("x-api-key"))
    check("authorization" not in h, "unexpected Authorization %r"
          % h.get("authorization"))
    j = rec["json"] or {}
    check(j.get("to") == E164, "body %s" % short(rec["body"]))
    verify_ok(ctx, b, expect_text(ctx, "Your token is {code}",
                                  j.get("text", ""), "text"))


def case_http_auth_none(ctx):
    fake(ctx)
    start(ctx, http_cfg(ctx, "/send", SMS_HTTP_AUTH="none"))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    check("authorization" not in rec["headers"],
          "Authorization %r with SMS_HTTP_AUTH none"
          % rec["headers"].get("authorization"))
    check(KEY not in json.dumps(rec), "the API key reached the gateway")
    verify_ok(ctx, b, expect_text(ctx, "Your token is {code}",
                                  (rec["json"] or {}).get("text", ""),
                                  "text"))


def case_http_json_escaping(ctx):
    fake(ctx)
    tmpl = 'He said "hi" \\ C:\\dir {app}\n\tcode: {code} </script> \u2028 end'
    start(ctx, http_cfg(ctx, "/send", MESSAGE=tmpl,
                        APP_NAME='A"pp\\'))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    raw = raw_body(rec)
    check(b"\n" not in raw and b"\t" not in raw,
          "raw control characters in the JSON body: %r" % raw)
    try:
        j = json.loads(raw.decode("utf-8"))
    except ValueError as e:
        raise Fail("body is not valid JSON (%s): %r" % (e, raw))
    code = expect_text(ctx, tmpl, j.get("text", ""), "text",
                       app='A"pp\\')
    verify_ok(ctx, b, code)


def case_http_2xx_any_body(ctx):
    fake(ctx, answer_status=200, answer_body=b"OK queued\n",
         answer_type="text/plain")
    start(ctx, http_cfg(ctx, "/send", RESEND_INTERVAL=0))
    b = ctx.browser()
    request(ctx, b)
    rec = one_call(ctx)
    verify_ok(ctx, b, expect_text(ctx, "Your token is {code}",
                                  rec["json"]["text"], "text"))
    for i, (status, body) in enumerate([(204, b""), (202, b"<html>x")]):
        ctx.fake.answer_status, ctx.fake.answer_body = status, body
        b2 = ctx.browser("B%d" % i)
        n0 = ctx.fake.count()
        try:
            request(ctx, b2, phone=PHONES[i])
        except Fail as e:
            raise Fail("gateway answering %d %r: %s" % (status, body, e))
        rec = one_call(ctx, n0)
        verify_ok(ctx, b2, expect_text(ctx, "Your token is {code}",
                                       rec["json"]["text"], "text"))


def case_http_errors(ctx):
    fake(ctx)
    start(ctx, http_cfg(ctx, "/send", RESEND_INTERVAL=0))
    rows = [(400, b'{"errors":[{"code":"21211","title":"Invalid To"}]}',
             502, r"status=400 error=21211 title=\"Invalid To\""),
            (401, b'{"error":"unauthorized"}', 502, r"status=401"),
            (404, b"not found", 502, r"status=404"),
            (500, b"oops", 502, r"status=500"),
            (429, b"slow down", 503, r"status=429")]
    for i, (st, body, want, logrx) in enumerate(rows):
        ctx.fake.answer_status, ctx.fake.answer_body = st, body
        b = ctx.browser("B%d" % i)
        n0 = ctx.fake.count()
        l0 = len(ctx.server.err_lines)
        b.ensure_session()
        r = b.request_code(PHONES[i])
        try:
            expect_send_failed(ctx, b, r, status=want)
            if want == 503:
                check(re.fullmatch(r"[0-9]+", r.header("Retry-After") or ""),
                      "no Retry-After with 503")
        except Fail as e:
            raise Fail("gateway %d: %s" % (st, e))
        rec = one_call(ctx, n0)
        code = expect_text(ctx, "Your token is {code}", rec["json"]["text"],
                           "text")
        check(ctx.server.wait_log(r"send_failed .*" + logrx, l0, 3),
              "gateway %d: no send_failed line matching %r" % (st, logrx))
        verify_refused(ctx, b, code)
    still_serving(ctx)


# ---- templates and languages -----------------------------------------------------

def note_any(ctx, text, tmpls):
    """Notes text and its code (for the log scan) whichever template
    made it."""
    for t in tmpls:
        c = code_in(t, text)
        if c:
            ctx.note_sms(text, c)
            return
    ctx.texts.add(text)
    for c in re.findall(CODE_RX, text):
        ctx.codes.add(c)


def telnyx(ctx):
    fake(ctx, mode="ok", api_key=h.API_KEY)
    return {"API_KEY": h.API_KEY, "FROM_NUMBER": FROM,
            "SMS_API_URL": ctx.fake.url, "SMS_CA_FILE": ctx.cert("ca")[0]}


def telnyx_text(ctx, n0=0):
    rec = one_call(ctx, n0)
    check(rec["verdict"] == "ok", "the Telnyx fake refused: %s"
          % rec["verdict"])
    return rec["json"]["text"]


def case_tmpl_app_minutes(ctx):
    tmpl = "{app}: your code is {code}, valid {minutes} min"
    start(ctx, dict(telnyx(ctx), MESSAGE=tmpl, APP_NAME="Router",
                    CODE_TTL=120))
    b = ctx.browser()
    request(ctx, b)
    text = telnyx_text(ctx)
    code = expect_text(ctx, tmpl, text, "text", app="Router", ttl=120)
    check(text == "Router: your code is %s, valid 2 min" % code,
          "text %r" % text)
    verify_ok(ctx, b, code)


LANGS = {"": "Your token is {code}",
         "de": "Ihr Code für {app}: {code}",
         "pt": "Seu código (pt): {code}",
         "pt_BR": "Seu código (BR): {code}",
         "es_MX": "Su código (MX): {code}"}


def lang_cfg(ctx):
    cfg = telnyx(ctx)
    for lang, text in LANGS.items():
        cfg["MESSAGE_" + lang if lang else "MESSAGE"] = text
    return cfg


def lang_rows(ctx, rows, langs=None):
    langs = langs or LANGS
    for i, (accept, lang) in enumerate(rows):
        b = ctx.browser("L%d" % i)
        n0 = ctx.fake.count()
        request(ctx, b, phone=PHONES[i], lang=accept)
        text = telnyx_text(ctx, n0)
        note_any(ctx, text, langs.values())
        code = code_in(langs[lang], text)
        check(code, "Accept-Language %r: text %r, want the %s text %r"
              % (accept, text, lang or "default", langs[lang]))
        if i == 0:
            verify_ok(ctx, b, code)


def case_tmpl_languages(ctx):
    start(ctx, lang_cfg(ctx))
    lang_rows(ctx, [
        ("de-DE,de;q=0.9,en;q=0.8", "de"),
        ("fr", ""),                       # no MESSAGE_fr: the default
        ("pt-BR", "pt_BR"),
        ("pt-PT,pt;q=0.9", "pt"),
        (None, ""),                       # no header
        ("fr;q=0.9, de;q=0.5", "de"),
        ("it, pt-br;q=0.8, de;q=0.7", "pt_BR"),
        ("es", "es_MX"),                  # a regional text for the language
        ("es-ES", "es_MX"),
        ("DE", "de"),
        ("de;q=0, fr", ""),               # q=0 means "not acceptable"
        ("*", ""),
    ])


def case_tmpl_lang_english_first(ctx):
    """A browser that prefers English (and also reads German) must get the
    default text and pages, not MESSAGE_de and WWW_DIR/de: the defaults
    are the English ones (the embedded pages say lang="en")."""
    w = os.path.join(ctx.dir, "www")
    write(os.path.join(w, "de", "index.html"),
          www_copy("index.html", EN_TITLE, DE_TITLE))
    start(ctx, dict(lang_cfg(ctx), WWW_DIR=w))
    accept = "en-US,en;q=0.9,de;q=0.8"
    r = ctx.browser("page").get("/", headers={"Accept-Language": accept})
    ok, title = title_is(r.body, EN_TITLE)
    try:
        lang_rows(ctx, [(accept, "")])
    except Fail as e:
        raise Fail("%s; and GET / gives the page titled %r" % (e, title))
    check(ok, "Accept-Language %r: page title %r, want %r"
          % (accept, title, EN_TITLE))


def case_tmpl_lang_key(ctx):
    """LANG names MESSAGE's language: a German default with an English
    MESSAGE_en."""
    langs = {"": "Ihr Code: {code}", "en": "Your code: {code}"}
    start(ctx, dict(telnyx(ctx), LANG="de", MESSAGE=langs[""],
                    MESSAGE_en=langs["en"]))
    lang_rows(ctx, [("de-DE,en;q=0.5", ""), ("en-GB", "en"), ("fr", ""),
                    ("fr, en;q=0.8, de;q=0.7", "en")], langs)


def case_tmpl_lang_region_order(ctx):
    """pt-PT with both MESSAGE_pt_BR and MESSAGE_pt: the plain language
    (pt) fits better than another region (pt_BR), whatever the order of
    the keys in the file."""
    cfg = telnyx(ctx)
    cfg["MESSAGE_pt_BR"] = LANGS["pt_BR"]       # before MESSAGE_pt
    cfg["MESSAGE_pt"] = LANGS["pt"]
    start(ctx, cfg)
    lang_rows(ctx, [("pt-PT", "pt"), ("pt-BR", "pt_BR"), ("pt", "pt")])


def case_tmpl_env_override(ctx):
    cfg = telnyx(ctx)
    cfg["MESSAGE_de"] = "Aus der Datei: {code}"
    env = {"OTP_MESSAGE_de": "Aus der Umgebung: {code}",
           "OTP_MESSAGE_es": "Su código: {code}"}
    start(ctx, cfg, env=env)
    for i, (accept, tmpl) in enumerate([("de", env["OTP_MESSAGE_de"]),
                                        ("es", env["OTP_MESSAGE_es"])]):
        b = ctx.browser("E%d" % i)
        n0 = ctx.fake.count()
        request(ctx, b, phone=PHONES[i], lang=accept)
        text = telnyx_text(ctx, n0)
        note_any(ctx, text, [tmpl, cfg["MESSAGE_de"], "Your token is {code}"])
        code = code_in(tmpl, text)
        check(code, "Accept-Language %s: text %r, want %r" % (accept, text,
                                                               tmpl))
        verify_ok(ctx, b, code)


SEGMENT_WARN = r"MESSAGE%s takes [0-9]+ .*more than one SMS"


def case_tmpl_segment_warning(ctx):
    # 6-character codes (a hex sample "AAAAAA" is used for the count)
    rows = [
        ("GSM 161", {"MESSAGE": "x" * 155 + "{code}"}, ""),
        ("GSM 160", {"MESSAGE": "x" * 154 + "{code}"}, None),
        ("GSM extension chars count 2 (162)",
         {"MESSAGE": "[]" + "x" * 152 + "{code}"}, ""),
        ("UCS-2 71", {"MESSAGE": "Ж" * 65 + "{code}"}, ""),
        ("UCS-2 70", {"MESSAGE": "Ж" * 64 + "{code}"}, None),
        ("MESSAGE_de 161", {"MESSAGE_de": "ü" * 155 + "{code}"}, "_de"),
        ("WebOTP line counts", {"MESSAGE": "x" * 140 + "{code}",
                                "WEBOTP_DOMAIN": "example.com"}, ""),
        ("{app} counts", {"MESSAGE": "{app}" + "x" * 149 + "{code}",
                          "APP_NAME": "Router"}, ""),
        ("default message", {}, None),
    ]
    bad = []
    for label, over, want in rows:
        rc, out, err = run_once(ctx, dict(over, SMS_PROVIDER="console"),
                                args=["-t"])
        if rc != 0 or "configuration OK" not in out:
            bad.append("%s: -t exit %s (%s)" % (label, rc, short(err, 200)))
            continue
        warn = [l for l in err.splitlines() if "more than one SMS" in l]
        if want is None and warn:
            bad.append("%s: unexpected warning %r" % (label, warn[0]))
        elif want is not None and not any(
                re.search(SEGMENT_WARN % want, l) for l in warn):
            bad.append("%s: no warning matching %r (stderr: %s)"
                       % (label, SEGMENT_WARN % want, short(err, 300)))
    check(not bad, "; ".join(bad))


def case_tmpl_config_errors(ctx):
    rows = [
        ({"MESSAGE": "no code here"}, r"MESSAGE must contain \{code\}"),
        ({"MESSAGE": "{code} {name}"}, r"MESSAGE may contain only"),
        ({"MESSAGE_de": "kein Code"}, r"MESSAGE_de must contain \{code\}"),
        ({"MESSAGE_x1": "{code}"}, r"MESSAGE_x1: the language must be"),
        ({"WEBOTP_DOMAIN": "exa mple.com"}, r"WEBOTP_DOMAIN must be"),
        ({"SMS_HTTP_AUTH": "digest"}, r"SMS_HTTP_AUTH must be"),
        ({"SMS_HTTP_METHOD": "GET"}, r"SMS_HTTP_METHOD must be"),
        ({"SMS_HTTP_CONTENT_TYPE": "text/plain"},
         r"SMS_HTTP_CONTENT_TYPE must be"),
        ({"SMS_PROVIDER": "smpp"}, r"SMS_PROVIDER must be"),
    ]
    bad = []
    for over, want in rows:
        try:
            expect_config_error(ctx, over, r"config\.cfg:[0-9]+: " + want)
        except Fail as e:
            bad.append("%r: %s" % (over, e))
    check(not bad, "; ".join(bad))


# ---- WebOTP ------------------------------------------------------------------------

def case_webotp_sms_line(ctx):
    start(ctx, dict(telnyx(ctx), WEBOTP_DOMAIN="example.com"))
    b = ctx.browser()
    request(ctx, b)
    text = telnyx_text(ctx)
    code = expect_text(ctx, "Your token is {code}", text, "text",
                       webotp="example.com")
    check(text.endswith("\n\n@example.com #" + code), "text %r" % text)
    verify_ok(ctx, b, code)


def case_webotp_script(ctx):
    start(ctx, {"SMS_PROVIDER": "console", "WEBOTP_DOMAIN": "example.com"})
    b = ctx.browser()
    r = b.get("/otp.js")
    got = "GET /otp.js -> %d" % r.status
    check(r.status == 200, got)
    h.check_security_headers(got, r)
    check(re.match(r"text/javascript(;|$)", r.header("content-type") or ""),
          "%s: Content-Type %r" % (got, r.header("content-type")))
    js = r.body.decode("utf-8")
    check("navigator.credentials.get" in js and "otp" in js,
          "%s: no navigator.credentials.get({otp: ...})" % got)
    check("'self'" in re.search(r"script-src ([^;]*)",
                                r.header("content-security-policy")).group(1),
          "CSP script-src lacks 'self'")
    r = request(ctx, b)
    got = ctx.server.wait_stdout(r"^SMS to \+12015550123: (.*)$", 0, 5)
    check(got, "no console SMS line")
    # the console prints one line per SMS, newlines as \n: the WebOTP
    # line follows the text
    text = got[1].group(1)
    code = expect_text(ctx, "Your token is {code}",
                       text.split("\\n")[0], "text")
    check(text.endswith("\\n\\n@example.com #" + code),
          "console text %r does not end with the WebOTP line" % text)
    s = r.body.decode("utf-8")
    check(re.search(r'<script src="/otp\.js" defer></script>', s),
          "verify page lacks <script src=\"/otp.js\" defer>")
    scripts = re.findall(r"<script\b[^>]*>", s)
    check(all("src=" in t for t in scripts), "inline script on the verify "
          "page (the CSP forbids it): %s" % scripts)
    h.check_security_headers("verify page", r)
    check("script-src 'self'" in r.header("content-security-policy"),
          "verify page CSP %r" % r.header("content-security-policy"))


# ---- WWW_DIR -------------------------------------------------------------------------

def www_copy(src_name, old, new):
    """www/src_name as an operator's plain copy (its {{t:key}} in English
    words, lang="en") with every old replaced by new."""
    with open(os.path.join(ROOT, "www", src_name), encoding="utf-8") as f:
        s = f.read()
    en = h.catalog("en")
    s = re.sub(r"\{\{t:([a-z0-9_]+)\}\}", lambda m: en[m.group(1)], s)
    s = s.replace("{{lang}}", "en")
    check(old in s, "www/%s has no %r" % (src_name, old))
    return s.replace(old, new)


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


EN_TITLE = "Verify your phone number"
DE_TITLE = "Telefonnummer bestätigen"
BR_TITLE = "Verifique seu número"
FR_TITLE = "Vérifiez votre numéro de téléphone"   # built in


def title_is(body, title):
    """The page's <title> is title, then " – " and APP_NAME."""
    t = re.search(r"<title>(.*?)</title>", body.decode("utf-8"))
    return t and t.group(1).startswith(title + " – "), t and t.group(1)


CSS = "/* site override */\nbody { color: #123456; }\n"


def case_www_dir(ctx):
    w = os.path.join(ctx.dir, "www")
    write(os.path.join(w, "de", "index.html"),
          www_copy("index.html", EN_TITLE, DE_TITLE))
    write(os.path.join(w, "pt-BR", "index.html"),
          www_copy("index.html", EN_TITLE, BR_TITLE))
    write(os.path.join(w, "style.css"), CSS)
    start(ctx, {"SMS_PROVIDER": "console", "WWW_DIR": w})
    for i, (accept, title) in enumerate([
            ("de", DE_TITLE), ("de-AT,de;q=0.9", DE_TITLE),
            ("en", EN_TITLE), (None, EN_TITLE), ("fr", FR_TITLE),
            ("pt-BR", BR_TITLE)]):
        b = ctx.browser("W%d" % i)
        hdrs = {"Accept-Language": accept} if accept else {}
        r = b.get("/", headers=hdrs)
        check(r.status == 200, "GET / (%s) -> %d" % (accept, r.status))
        ok, got = title_is(r.body, title)
        check(ok, "GET / with Accept-Language %r: title %r, want %r"
              % (accept, got, title))
        h.check_index_form(ctx, b, r)
        r = b.get("/style.css", headers=hdrs)
        check(r.status == 200 and r.body.decode("utf-8") == CSS,
              "GET /style.css (%s) -> %d, not the WWW_DIR override: %s"
              % (accept, r.status, short(r.body, 80)))
        check((r.header("content-type") or "").startswith("text/css"),
              "style.css Content-Type %r" % r.header("content-type"))
    # the German form still works end to end
    b = ctx.browser("W0")
    request(ctx, b, lang="de")
    got = ctx.server.wait_stdout(r"^SMS to \+12015550123: (.*)$", 0, 5)
    check(got, "no console SMS line")
    # no MESSAGE_de: the built-in German text
    code = expect_text(ctx, "Ihr Code lautet {code}", got[1].group(1), "text")
    verify_ok(ctx, b, code)


def case_www_unknown_placeholder(ctx):
    w = os.path.join(ctx.dir, "www")
    page = os.path.join(w, "de", "verify.html")
    write(page, www_copy("verify.html", "Enter your code",
                                 "Code {{nope}}"))
    line = expect_config_error(ctx, {"SMS_PROVIDER": "console",
                                     "WWW_DIR": w}, re.escape(page))
    check("placeholder" in line, "error %r does not say what is wrong"
          % line)


def case_www_placeholder_of_other_page(ctx):
    """index.html using {{token_length}} (a verify.html placeholder): a
    page that cannot render must be refused at start, not give 500s."""
    w = os.path.join(ctx.dir, "www")
    write(os.path.join(w, "index.html"),
          www_copy("index.html", "Phone number",
                            "Phone ({{token_length}})"))
    rc, _, err = run_once(ctx, {"SMS_PROVIDER": "console", "WWW_DIR": w},
                          timeout=3)
    if rc == 78:
        check("index.html" in err, "exit 78 without naming the file: %s"
              % short(err))
        return
    start(ctx, {"SMS_PROVIDER": "console", "WWW_DIR": w})
    r = ctx.browser().get("/")
    raise Fail("accepted at start (exit %s from the first run), then GET / "
               "-> %d %s" % (rc, r.status, short(r.text, 60)))


def case_www_missing_dir(ctx):
    expect_config_error(ctx, {"SMS_PROVIDER": "console",
                              "WWW_DIR": os.path.join(ctx.dir, "nope")},
                        r"WWW_DIR .*nope")


# ---- console ---------------------------------------------------------------------

def console_flow(ctx):
    b = ctx.browser()
    request(ctx, b)
    got = ctx.server.wait_stdout(r"^SMS to (\S+): (.*)$", 0, 5)
    check(got, "no 'SMS to NUMBER: TEXT' line on stdout (stdout: %s)"
          % ctx.server.out_lines[-2:])
    m = got[1]
    check(m.group(1) == E164, "console SMS to %r, want %r" % (m.group(1),
                                                             E164))
    code = expect_text(ctx, "Your token is {code}", m.group(2), "text")
    verify_ok(ctx, b, code)
    check(not ctx.fake or ctx.fake.count() == 0, "the console sender "
          "called the API")


ANY_ADDRESS = r"listening on (https?)://0\.0\.0\.0:([0-9]+)"


def ready_says(ctx, sender):
    """/readyz answers 200 and names the sender."""
    r = ctx.browser("probe").get("/readyz")
    want = ("ready: %s sender\n" % sender).encode()
    check(r.status == 200 and r.body == want, "/readyz -> %d %r, want 200 %r"
          % (r.status, r.body, want))


def build_info_sender(ctx, sender):
    """/metrics' otp_demo_build_info names the sender."""
    r = ctx.browser("probe").get("/metrics")
    rx = r'^otp_demo_build_info\{version="[^"]+",sender="%s"\} 1$' % sender
    check(r.status == 200 and re.search(rx, r.html, re.M),
          "/metrics -> %d without %r: %s" % (r.status, rx, short(r.body, 300)))


def check_ok(ctx, overrides, env=None):
    """otp_demo -t with the same config and environment: OK."""
    rc, out, err = run_once(ctx, overrides, ["-t"], env)
    check(rc == 0 and out.strip() == "configuration OK",
          "-t: exit %s, stdout %r, stderr %s" % (rc, out, short(err, 200)))


def reload(ctx, changes, want):
    """Rewrites config.cfg with changes (None removes a key), sends SIGHUP
    and waits for a log line matching want."""
    cfg = dict(ctx.cfg)
    for k, v in changes.items():
        if v is None:
            cfg.pop(k, None)
        else:
            cfg[k] = v
    h.write_config(os.path.join(ctx.dir, "config.cfg"), cfg)
    n0 = len(ctx.server.err_lines)
    ctx.server.proc.send_signal(signal.SIGHUP)
    check(ctx.server.wait_log(want, n0, 5.0), "SIGHUP %s: no log line "
          "matching %r; log: %s" % (changes, want,
                                    short(ctx.server.log()[-400:], 400)))


def case_console_default(ctx):
    start(ctx, {"API_KEY": None})
    log_has(ctx, r"console sender: .*nothing is sent", "start-up notice")
    ready_says(ctx, "console")
    console_flow(ctx)


def case_console_placeholder_key(ctx):
    over = {"API_KEY": "YOUR_API_KEY", "FROM_NUMBER": "YOUR_NUMBER"}
    check_ok(ctx, over)
    start(ctx, over)
    log_has(ctx, r"console sender: .*nothing is sent", "start-up notice")
    ready_says(ctx, "console")
    console_flow(ctx)


def case_console_explicit(ctx):
    fake(ctx, mode="ok", api_key=KEY)
    start(ctx, {"SMS_PROVIDER": "console", "API_KEY": KEY,
                "FROM_NUMBER": FROM, "SMS_API_URL": ctx.fake.url,
                "SMS_CA_FILE": ctx.cert("ca")[0]})
    log_has(ctx, r"console sender: .*nothing is sent", "start-up notice")
    console_flow(ctx)


def case_console_empty_key_explicit(ctx):
    """API_KEY='' is an error (tests/integration.py, cfg_api_key_empty)
    unless SMS_PROVIDER='console' says the console is meant."""
    over = {"API_KEY": "", "SMS_PROVIDER": "console"}
    check_ok(ctx, over)
    start(ctx, over)
    ready_says(ctx, "console")
    console_flow(ctx)


def case_console_empty_env_key_explicit(ctx):
    """The same for an empty OTP_API_KEY in the environment."""
    over, env = {"SMS_PROVIDER": "console"}, {"OTP_API_KEY": ""}
    check_ok(ctx, over, env)
    start(ctx, over, env=env)
    ready_says(ctx, "console")
    console_flow(ctx)


def case_console_any_address_explicit(ctx):
    """The console on every interface (0.0.0.0) only when
    SMS_PROVIDER='console' says so (refused otherwise: integration.py,
    cfg_console_*); /readyz then says it is the console."""
    over = {"LISTEN": "0.0.0.0:0", "SMS_PROVIDER": "console"}
    check_ok(ctx, over)
    start(ctx, over, listen_re=ANY_ADDRESS)
    ready_says(ctx, "console")
    console_flow(ctx)


def case_console_reload_any_address(ctx):
    """SIGHUP cannot make the console the sender on every interface by
    dropping SMS_PROVIDER, not even with a file that also moves LISTEN to
    loopback (LISTEN only changes on a restart): the reload is refused and
    the sender stays. SMS_PROVIDER='console' is applied, and /readyz and
    /metrics (the request's config) follow."""
    spool = os.path.join(ctx.dir, "spool", "outgoing")
    os.makedirs(spool)
    start(ctx, {"LISTEN": "0.0.0.0:0", "SMS_PROVIDER": "spool",
                "SPOOL_DIR": spool, "METRICS": True}, listen_re=ANY_ADDRESS)
    ready_says(ctx, "spool")
    build_info_sender(ctx, "spool")
    refused = (r"reload: .*LISTEN 0\.0\.0\.0:0 is not loopback only, and "
               r"the sender is the console: .*keeping the old configuration")
    reload(ctx, {"SMS_PROVIDER": None}, refused)
    ready_says(ctx, "spool")
    reload(ctx, {"SMS_PROVIDER": None, "LISTEN": "127.0.0.1:0"}, refused)
    ready_says(ctx, "spool")
    build_info_sender(ctx, "spool")
    reload(ctx, {"SMS_PROVIDER": "console"}, r"reload: configuration applied")
    ready_says(ctx, "console")
    build_info_sender(ctx, "console")


# ---- webhooks ----------------------------------------------------------------------
#
# WEBHOOK_URL against a second fake in mode "generic" over TLS (the test CA,
# as the gateways): what it receives is checked as a receiver would,
# signature recomputed from WEBHOOK_SECRET. The SMS go to the console.

HOOK_SECRET = "whsec-test-5d1f0c9e7a2b48e6"
HOOK_KEYS = ["id", "occurred_at", "status", "to", "type"]


@contextlib.contextmanager
def hook_server(ctx, over=None, mode="generic", answers=()):
    """A webhook receiver and otp_demo telling it; yields the receiver."""
    c, k = ctx.cert("server")
    rcv = h.fake_api.FakeApi(c, k, mode=mode,
                             record=os.path.join(ctx.dir, "hooks.jsonl"))
    rcv.answers = list(answers)
    rcv.start()
    ctx.secrets["the webhook secret"] = HOOK_SECRET
    cfg = {"SMS_PROVIDER": "console", "API_TOKEN": h.API_TOKEN,
           "WEBHOOK_URL": rcv.base_url + "/hooks/otp",
           "WEBHOOK_SECRET": HOOK_SECRET, "SMS_CA_FILE": ctx.cert("ca")[0],
           "METRICS": True}
    cfg.update(over or {})
    try:
        start(ctx, cfg)
        yield rcv
    finally:
        rcv.stop()


def api_start(ctx, phone):
    """POST /api/v1/verifications for phone: (id, code from the console)."""
    b = ctx.browser("app")
    out0 = len(ctx.server.out_lines)
    r = b.api("POST", h.API, {"phone": phone})
    check(r.status == 201, "create -> %d %s" % (r.status, short(r.body)))
    digits = re.sub(r"[^0-9]", "", phone)
    code = h.console_code(ctx.server, "+" + (digits if len(digits) > 10
                                             else "1" + digits), out0)
    check(code, "no console SMS for %s" % phone)
    ctx.codes.add(code)
    return json.loads(r.body)["id"], code


def api_check(ctx, vid, code):
    r = ctx.browser("app").api("POST", "%s/%s/check" % (h.API, vid),
                               {"code": code})
    check(r.status == 200, "check -> %d %s" % (r.status, short(r.body)))
    return json.loads(r.body)


def hook_check(rec, want_type, want_id, want_to):
    """One request the receiver got, checked as a receiver must: the
    signature over "<Webhook-Timestamp>.<body>", a recent timestamp, the
    body's fields."""
    import hashlib
    import hmac
    body = raw_body(rec)
    hd = rec["headers"]
    check(rec["method"] == "POST" and rec["path"] == "/hooks/otp",
          "webhook %s %s" % (rec["method"], rec["path"]))
    check(hd.get("content-type") == "application/json",
          "webhook Content-Type %r" % hd.get("content-type"))
    ts = hd.get("webhook-timestamp", "")
    check(re.fullmatch(r"[0-9]{10}", ts) and abs(int(ts) - time.time()) < 300,
          "Webhook-Timestamp %r is not a recent Unix time" % ts)
    want = hmac.new(HOOK_SECRET.encode(), ts.encode() + b"." + body,
                    hashlib.sha256).hexdigest()
    got = hd.get("webhook-signature", "")
    check(hmac.compare_digest(got, "v1=" + want),
          "Webhook-Signature %r, want v1=%s" % (got, want))
    j = json.loads(body)
    check(sorted(j) == HOOK_KEYS, "webhook fields %s, want %s"
          % (sorted(j), HOOK_KEYS))
    spec = h.openapi()
    errs = h.schema_errors(spec, spec["webhooks"]["verificationEnded"]["post"]
                           ["requestBody"]["content"]["application/json"]
                           ["schema"], j, "webhook")
    check(not errs, "docs/openapi.json: %s" % "; ".join(errs))
    check(j["type"] == "verification." + want_type and j["id"] == want_id,
          "webhook %s for %s, want verification.%s for %s"
          % (j["type"], j["id"], want_type, want_id))
    check(j["status"] == {"locked": "max_attempts_reached"}.get(
        want_type, want_type), "webhook status %r" % j["status"])
    check(re.fullmatch(want_to, j["to"]), "webhook to %r, want /%s/"
          % (j["to"], want_to))
    check(re.fullmatch(r"[0-9-]{10}T[0-9:]{8}Z", j["occurred_at"]) and
          abs(time.mktime(time.strptime(j["occurred_at"],
                                        "%Y-%m-%dT%H:%M:%SZ"))
              - time.mktime(time.gmtime()) < 300),
          "occurred_at %r is not a recent RFC 3339 UTC time"
          % j["occurred_at"])
    return j


def readme_check(rec, secret=HOOK_SECRET):
    """README's receiver snippet on a request the receiver got."""
    ns = {}
    exec(h.readme_snippets("webhook_readme")["python"], ns)
    return ns["webhook_ok"](secret.encode(), dict(rec["header_list"]),
                            raw_body(rec))


def hooks_metric(ctx, result):
    r = ctx.browser("probe").get("/metrics")
    m = re.search(r'^otp_webhooks_total\{result="%s"\} ([0-9]+)$' % result,
                  r.body.decode(), re.M)
    check(m, "no otp_webhooks_total{result=%r} in /metrics" % result)
    return int(m.group(1))


def case_webhook_events(ctx):
    """Approved, locked and expired API verifications each reach
    WEBHOOK_URL once, signed; the forms' verifications never do."""
    with hook_server(ctx, {"MAX_ATTEMPTS": 2, "CODE_TTL": 3}) as rcv:
        a, code = api_start(ctx, PHONE)
        check(api_check(ctx, a, code)["status"] == "approved", "approve")
        check(rcv.wait_requests(1, 10) == 1, "no webhook for the approval")
        hook_check(rcv.requests[0], "approved", a, r"\+1\*{8}23")
        check(readme_check(rcv.requests[0]), "README's check refuses it")
        forged = dict(rcv.requests[0], body_b64=base64.b64encode(
            raw_body(rcv.requests[0]).replace(b"approved", b"expired")
            ).decode())
        check(not readme_check(forged), "README's check takes a forged body")
        check(not readme_check(rcv.requests[0], "whsec-another-secret!"),
              "README's check takes another secret's signature")
        b, code = api_start(ctx, PHONES[0])
        api_check(ctx, b, "0000")
        check(api_check(ctx, b, "0000")["status"] == "max_attempts_reached",
              "lock")
        check(rcv.wait_requests(2, 10) == 2, "no webhook for the lock")
        hook_check(rcv.requests[1], "locked", b, r"\+1\*{8}10")
        c, code = api_start(ctx, PHONES[1])
        check(rcv.wait_requests(3, 10) == 3, "no webhook for the expiry")
        hook_check(rcv.requests[2], "expired", c, r"\+1\*{8}11")
        web = ctx.browser("web")
        request(ctx, web, PHONES[2])
        time.sleep(4.5)         # past CODE_TTL: the web code expired too
        check(rcv.count() == 3, "%d webhooks, want 3 (one was for the "
              "forms, or for the locked code's expiry)" % rcv.count())
        check(hooks_metric(ctx, "delivered") == 3, "delivered metric")


def case_webhook_retry(ctx):
    """A receiver that fails (500), then recovers, gets the event again
    after the backoff, signed anew; the log says both."""
    with hook_server(ctx, answers=[500]) as rcv:
        a, code = api_start(ctx, PHONE)
        api_check(ctx, a, code)
        check(rcv.wait_requests(2, 20) == 2, "%d tries, want 2"
              % rcv.count())
        r1, r2 = rcv.requests[0], rcv.requests[1]
        check(r2["time"] - r1["time"] >= 4.0, "the second try came %.1f s "
              "after the first, want the 5 s backoff" % (r2["time"] - r1["time"]))
        hook_check(r1, "approved", a, r"\+1\*{8}23")
        hook_check(r2, "approved", a, r"\+1\*{8}23")
        log_has(ctx, r"webhook_failed type=approved to=\+1\*+23 status=500 "
                r".*try=1/5", "the failed try")
        log_has(ctx, r"webhook type=approved to=\+1\*+23 status=200 "
                r".*try=2/5", "the delivery")
        time.sleep(1)
        check(rcv.count() == 2, "tried again after a 200")
        check(hooks_metric(ctx, "delivered") == 1, "delivered metric")


def case_webhook_silent_receiver(ctx):
    """A receiver that never answers holds neither a check nor the exit:
    the API answers at once while a try hangs for SMS_TIMEOUT, and
    SIGTERM ends the try."""
    with hook_server(ctx, {"SMS_TIMEOUT": 60}, mode="silent") as rcv:
        a, code = api_start(ctx, PHONE)
        api_check(ctx, a, code)
        check(rcv.wait_requests(1, 10) == 1, "no webhook try")
        for i in range(3):      # each is an event queued behind the hung try
            vid, code = api_start(ctx, PHONES[i])
            t0 = time.monotonic()
            api_check(ctx, vid, code)
            took = time.monotonic() - t0
            check(took < 10, "a check took %.1f s while the receiver hangs "
                  "for 60" % took)
        t0 = time.monotonic()
        rc = ctx.server.stop()
        took = time.monotonic() - t0
        check(rc == 0 and took < 10, "SIGTERM with a hung webhook: exit %s "
              "after %.1f s" % (rc, took))
        check(rcv.count() == 1, "%d tries, want 1 (the rest queued)"
              % rcv.count())


def case_webhook_queue_full(ctx):
    """More events than the queue holds, while the receiver hangs: the
    oldest are dropped, counted and logged; requests never wait."""
    with hook_server(ctx, {"SMS_TIMEOUT": 60, "MAX_ATTEMPTS": 1,
                           "SMS_PER_HOUR": 1000, "API_SMS_PER_HOUR": 1000},
                     mode="silent") as rcv:
        b = ctx.browser("app")
        for i in range(70):
            r = b.api("POST", h.API, {"phone": "202-555-%04d" % (100 + i)})
            check(r.status == 201, "create %d -> %d" % (i, r.status))
            vid = json.loads(r.body)["id"]
            r = b.api("POST", "%s/%s/check" % (h.API, vid), {"code": "0000"})
            check(r.status == 200 and b"max_attempts" in r.body,
                  "lock %d -> %d %s" % (i, r.status, short(r.body)))
        log_has(ctx, r"webhook_dropped count=[0-9]+: the queue of 64 was "
                r"full", "the drop", timeout=10)
        check(hooks_metric(ctx, "dropped") >= 5, "dropped metric < 70 - 64 - 1")


def case_webhook_config(ctx):
    """WEBHOOK_URL is https only and needs a secret; WEBHOOK_SECRET_FILE
    works as API_KEY_FILE does. Errors name the key and line."""
    ctx.secrets["the webhook secret"] = HOOK_SECRET
    base = {"SMS_PROVIDER": "console", "SMS_CA_FILE": ctx.cert("ca")[0]}
    expect_config_error(ctx, dict(base, WEBHOOK_URL="http://127.0.0.1:9/h",
                                  WEBHOOK_SECRET=HOOK_SECRET),
                        r"^config\.cfg:[0-9]+: WEBHOOK_URL must be an "
                        r"https:// URL$")
    expect_config_error(ctx, dict(base, WEBHOOK_URL="https://127.0.0.1:9/h"),
                        r"^config\.cfg:[0-9]+: WEBHOOK_URL needs "
                        r"WEBHOOK_SECRET .*at least 16 characters")
    expect_config_error(ctx, dict(base, WEBHOOK_URL="https://127.0.0.1:9/h",
                                  WEBHOOK_SECRET="short"),
                        r"WEBHOOK_URL needs WEBHOOK_SECRET")
    expect_config_error(ctx, dict(base, WEBHOOK_URL="https://127.0.0.1:9/h",
                                  WEBHOOK_SECRET_FILE="missing.secret"),
                        r"^config\.cfg:[0-9]+: WEBHOOK_SECRET_FILE "
                        r"missing\.secret: No such file")
    path = os.path.join(ctx.dir, "hook.secret")
    with open(path, "w") as f:
        f.write(HOOK_SECRET + "\n")
    os.chmod(path, 0o600)
    rc, out, err = run_once(ctx, dict(base, WEBHOOK_URL="https://127.0.0.1:9/",
                                      WEBHOOK_SECRET_FILE=path), args=["-t"])
    check(rc == 0 and "configuration OK" in out, "-t with the secret file: "
          "exit %s, %s" % (rc, short(err)))


# ---- runner ----------------------------------------------------------------------

if __name__ == "__main__":
    sys.exit(h.main(h.cases_in(globals()), OUT, "otp_demo sender tests",
                    jobs=8, slow=("timeout", "segment", "config_errors",
                                  "parent_is_file")))
