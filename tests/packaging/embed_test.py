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
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

BIN = os.environ.get("EMBED_BIN") or os.path.join(
    h.ROOT, "build", "examples", "embed")
OUT = os.path.join(h.ROOT, "tests", "out", "packaging")
PHONE = h.PHONE_E164
PHONE_MASKED = "+*********23"    # examples/embed.c's mask
PREFIX = "/2fa/"


def under_prefix(url):
    return url is not None and url.startswith(PREFIX)


def post(b, path, fields):
    """A browser's form POST: the fields as they are, and an Origin."""
    return b.post_form(path, fields, csrf=None, headers={"Origin": b.origin})


def main():
    t = h.Checks("embed")
    if not t.check("binary exists", os.access(BIN, os.X_OK), BIN):
        return t.done()
    p = h.Server(h.fresh_dir(os.path.join(OUT, "embed")),
                 command=[BIN, "-l", "127.0.0.1:0"],
                 env={"OTP_SMS_PROVIDER": "console",
                      "OTP_TOKEN_ALPHABET": "digits",
                      "OTP_TOKEN_LENGTH": "6"})
    try:
        try:
            p.start()
        except h.Fail:
            pass                    # run() says so
        run(t, p)
    finally:
        rc = p.stop()
    t.check("SIGTERM: exit status 0", rc == 0, "status %r" % rc)
    t.check("SIGTERM: logged the stop", "signal 15: stopping" in p.log())
    t.check("log never holds the full number", PHONE not in p.log())
    return t.done()


def run(t, p):
    if not t.check("starts and logs its port", p.port is not None,
                   p.log()[-400:]):
        return
    b = h.Client(p.port)

    r = b.get("/")
    t.check("GET / : its own page, 200", r.status == 200, str(r.status))
    t.check("GET / : 'Admin' with a link to /2fa/",
            "Admin" in r.html and PREFIX in h.links(r.body, "a", "href"),
            r.html[:200])
    t.check("GET / : sets no otp cookie", not b.cookies, str(b.cookies))
    r = b.get("/nothing-here")
    t.check("GET /nothing-here : 404 from its own handler", r.status == 404,
            str(r.status))

    r = b.get(PREFIX)
    t.check("GET /2fa/ : 200 index page", r.status == 200, str(r.status))
    action, fields = h.form(r.body)
    t.check("GET /2fa/ : otp_sid cookie scoped to /2fa/",
            b.cookie_paths.get("otp_sid") == PREFIX, str(b.cookie_paths))
    t.check("GET /2fa/ : form carries csrf", bool(fields.get("csrf")),
            str(fields))
    t.check("GET /2fa/ : form posts below the prefix (%s)" % action,
            under_prefix(action),
            "action=%r: pages do not use {{base}} yet" % action)
    css = [x for x in h.links(r.body, "link", "href") if x.endswith(".css")]
    t.check("GET /2fa/ : stylesheet below the prefix (%s)" % css,
            bool(css) and all(under_prefix(x) for x in css),
            "pages do not use {{base}} yet")
    r = b.get(PREFIX + "style.css")
    t.check("GET /2fa/style.css : 200 text/css",
            r.status == 200 and (r.header("Content-Type") or "").startswith(
                "text/css"), "%d %s" % (r.status, r.header("Content-Type")))

    n0 = len(p.out_lines)
    r = post(b, PREFIX + "request",
             {"phone": PHONE, "csrf": fields.get("csrf", "")})
    if not t.check("POST /2fa/request : 200 verify page", r.status == 200,
                   h.brief(r)):
        return
    t.check("POST /2fa/request : otp_vid cookie", "otp_vid" in b.cookies,
            str(b.cookies))
    vaction, vfields = h.form(r.body)
    t.check("verify page posts below the prefix (%s)" % vaction,
            under_prefix(vaction),
            "action=%r: pages do not use {{base}} yet" % vaction)
    code = h.console_code(p, PHONE, n0)
    if not t.check("console sender printed the SMS", code is not None,
                   "\n".join(p.out_lines[-5:])):
        return

    r = post(b, PREFIX + "verify",
             {"token": code, "csrf": vfields.get("csrf", "")})
    t.check("POST /2fa/verify : success page (200)", r.status == 200,
            h.brief(r))
    got = p.wait_log(r"embed: verified (\S+)", timeout=5)
    m = got[1] if got else None
    t.check("callback fired: 'embed: verified %s'" % PHONE_MASKED,
            m is not None and m.group(1) == PHONE_MASKED,
            m.group(0) if m else "no 'embed: verified' line")

    r = post(b, PREFIX + "verify",
             {"token": code, "csrf": vfields.get("csrf", "")})
    t.check("the same code again : 403", r.status == 403, str(r.status))
    t.check("callback fired once", p.log().count("embed: verified") == 1)


if __name__ == "__main__":
    sys.exit(main())
