#!/usr/bin/env python3
"""embed_test.py: examples/embed.c, a civetweb program that mounts otp_demo
under /2fa/ next to its own page, driven like a browser.

    EMBED_BIN=build/examples/embed python3 tests/packaging/embed_test.py

Starts the program on a free port with the console sender (OTP_* env),
GETs its own page, runs the flow under /2fa/ (form, code from stdout,
verify), checks that its verified callback logged the number masked, that
the pages point below /2fa/, and that SIGTERM stops it with status 0.
Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import os
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PHONE, PHONE_MASKED, ROOT, Checks, Client, Proc,  # noqa
                    brief, clean_env, form, links)

BIN = os.environ.get("EMBED_BIN") or os.path.join(
    ROOT, "build", "examples", "embed")
PREFIX = "/2fa/"


def under_prefix(url):
    return url is not None and url.startswith(PREFIX)


def main():
    t = Checks("embed")
    if not t.check("binary exists", os.access(BIN, os.X_OK), BIN):
        return t.done()
    env = clean_env({"OTP_SMS_PROVIDER": "console",
                     "OTP_TOKEN_ALPHABET": "digits",
                     "OTP_TOKEN_LENGTH": "6"})
    p = Proc([BIN, "-l", "127.0.0.1:0"], env, "embed")
    try:
        run(t, p)
    finally:
        rc = p.stop()
    t.check("SIGTERM: exit status 0", rc == 0, "status %r" % rc)
    t.check("SIGTERM: logged the stop",
            "signal 15: stopping" in p.stderr_text())
    log = p.stderr_text()
    t.check("log never holds the full number", PHONE not in log)
    return t.done()


def run(t, p):
    port = p.port()
    if not t.check("starts and logs its port", port is not None,
                   p.stderr_text()[-400:]):
        return
    b = Client(port)

    r = b.get("/")
    t.check("GET / : its own page, 200", r.status == 200, str(r.status))
    t.check("GET / : 'Admin' with a link to /2fa/",
            "Admin" in r.text and PREFIX in links(r.text, "a", "href"),
            r.text[:200])
    t.check("GET / : sets no otp cookie", not b.cookies, str(b.cookies))
    r = b.get("/nothing-here")
    t.check("GET /nothing-here : 404 from its own handler", r.status == 404,
            str(r.status))

    r = b.get(PREFIX)
    t.check("GET /2fa/ : 200 index page", r.status == 200, str(r.status))
    action, fields = form(r.text)
    t.check("GET /2fa/ : otp_sid cookie scoped to /2fa/",
            b.cookies.get("otp_sid", ("", ""))[1] == PREFIX, str(b.cookies))
    t.check("GET /2fa/ : form carries csrf", bool(fields.get("csrf")),
            str(fields))
    t.check("GET /2fa/ : form posts below the prefix (%s)" % action,
            under_prefix(action),
            "action=%r: pages do not use {{base}} yet" % action)
    css = [h for h in links(r.text, "link", "href") if h.endswith(".css")]
    t.check("GET /2fa/ : stylesheet below the prefix (%s)" % css,
            bool(css) and all(under_prefix(h) for h in css),
            "pages do not use {{base}} yet")
    r = b.get(PREFIX + "style.css")
    t.check("GET /2fa/style.css : 200 text/css",
            r.status == 200 and (r.header("Content-Type") or "").startswith(
                "text/css"), "%d %s" % (r.status, r.header("Content-Type")))

    n0 = len(p.out)
    r = b.post_form(PREFIX + "request",
                    {"phone": PHONE, "csrf": fields.get("csrf", "")})
    if not t.check("POST /2fa/request : 200 verify page", r.status == 200,
                   brief(r)):
        return
    t.check("POST /2fa/request : otp_vid cookie", "otp_vid" in b.cookies,
            str(b.cookies))
    vaction, vfields = form(r.text)
    t.check("verify page posts below the prefix (%s)" % vaction,
            under_prefix(vaction),
            "action=%r: pages do not use {{base}} yet" % vaction)
    code = p.sms_code(PHONE, start=n0)
    if not t.check("console sender printed the SMS", code is not None,
                   "\n".join(p.out[-5:])):
        return

    r = b.post_form(PREFIX + "verify",
                    {"token": code, "csrf": vfields.get("csrf", "")})
    t.check("POST /2fa/verify : success page (200)", r.status == 200,
            brief(r))
    m = p.wait_line("err", r"embed: verified (\S+)", timeout=5)
    t.check("callback fired: 'embed: verified %s'" % PHONE_MASKED,
            m is not None and m.group(1) == PHONE_MASKED,
            m.group(0) if m else "no 'embed: verified' line")

    r = b.post_form(PREFIX + "verify",
                    {"token": code, "csrf": vfields.get("csrf", "")})
    t.check("the same code again : 403", r.status == 403, str(r.status))
    t.check("callback fired once",
            p.stderr_text().count("embed: verified") == 1)


if __name__ == "__main__":
    sys.exit(main())
