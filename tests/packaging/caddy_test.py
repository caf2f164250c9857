#!/usr/bin/env python3
"""caddy_test.py: Debian's Caddy puts otp_demo's SMS verification in front
of an app with forward_auth, exactly as README's Caddy snippet says.

    OTP_BIN=build/otp_demo python3 tests/packaging/caddy_test.py

otp_demo (console sender, TRUSTED_PROXY=127.0.0.1) listens on a free
loopback port; the app is a Python server on another that answers every
request with 200 and keeps the request line and headers it received.
Caddy runs in the foreground (caddy run, admin off, auto_https off, HOME
and XDG directories in a temporary directory) from README's snippet (the
fenced block that names this file), twice: as a plain-HTTP site, and as an
HTTPS site with tests/gen_certs.sh's certificate. Only the site address,
the ports and that one tls line are changed.

Checks, for each site: an unverified browser asking for a page under
/admin/ (GET or POST) is sent (by /auth?redirect=1, from Caddy's
X-Forwarded-Uri) to the form, and after /request and /verify comes back
with a 303 to exactly that page, query and escaped characters included;
the app then gets the request (GET and POST), with Remote-User,
Remote-Phone and X-Otp-Phone the verified number and none of the identity
headers a client sends itself (verified or not); the app sees nothing of
an unverified, a cookie-less or a tampered request; /auth, in any
spelling, is not reachable from outside;
otp_demo logs the client's address, not Caddy's nor a forged
X-Forwarded-For. The client connects from 127.0.0.7 so the two differ.
Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import http.server
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "packaging")
MARK = "tests/packaging/caddy_test.py"
PHONE = h.PHONE_E164
CLIENT_ADDR = "127.0.0.7"
# What a client claims about itself: none of it may reach the app.
FORGED = {
    "X-Otp-Phone": "+19999999999",
    "Remote-User": "admin",
    "Remote-Groups": "admins",
    "Remote-Phone": "+19999999999",
}
IDENTITY = ("Remote-User", "Remote-Phone", "X-Otp-Phone")
# The pages first asked for: a query, and one with an escaped space, a
# second parameter and an escaped slash, which must all come back.
PAGES = ("/admin/page?x=1", "/admin/a%20b/page?x=1&y=%2F")


class App:
    """The protected app on a free loopback port: 200 to every GET and
    POST, and seen, the (method and request target, [(header, value)]) of
    each request."""

    def __init__(self):
        self.seen = []
        self.lock = threading.Lock()
        app = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def answer(self):
                with app.lock:
                    app.seen.append((self.command + " " + self.path,
                                     list(self.headers.items())))
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                body = b"<!doctype html><title>Router admin</title>\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/html")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def count(self):
        with self.lock:
            return len(self.seen)

    def last(self):
        """("METHOD target", {lower-case name: [values]}) of the last
        request."""
        with self.lock:
            path, items = self.seen[-1] if self.seen else (None, [])
        got = {}
        for k, v in items:
            got.setdefault(k.lower(), []).append(v)
        return path, got

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def caddyfile(snippet, otp_port, app_port, port, tls_port, certs):
    """README's snippet as two sites, plain and TLS; None if it no longer
    has the address and the ports this test replaces."""
    head = "router.example.com {"
    if snippet.count(head) != 1 or "127.0.0.1:5000" not in snippet or \
            "127.0.0.1:8080" not in snippet:
        return None
    body = snippet.replace("127.0.0.1:5000", "127.0.0.1:%d" % otp_port)
    body = body.replace("127.0.0.1:8080", "127.0.0.1:%d" % app_port)
    plain = body.replace(head, "http://127.0.0.1:%d {" % port)
    tls = body.replace(head, "https://127.0.0.1:%d {\n\ttls %s %s" % (
        (tls_port,) + h.cert("server", certs)))
    return plain + "\n" + tls


def location_path(r):
    u = urllib.parse.urlsplit(r.header("Location") or "")
    return u.path + ("?" + u.query if u.query else "")


def post(b, path, fields):
    """A browser's form POST: the fields as they are, and an Origin."""
    return b.post_form(path, fields, csrf=None, headers={"Origin": b.origin})


def main():
    t = h.Checks("caddy")
    procs = {}
    tmp = tempfile.mkdtemp(prefix="otp-caddy.")
    try:
        run(t, tmp, procs)
    finally:
        if "caddy" in procs:
            rc = procs["caddy"].stop()
            t.check("caddy exits 0 on SIGTERM", rc == 0, "status %r" % rc)
        if "app" in procs:
            procs["app"].stop()
        if "otp" in procs:
            rc = procs["otp"].stop()
            t.check("otp_demo exits 0 on SIGTERM", rc == 0, "status %r" % rc)
            t.check("otp_demo log never holds the full number",
                    PHONE not in procs["otp"].log())
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


def run(t, tmp, procs):
    """Starts otp_demo, the app and Caddy (into procs, which main stops)
    and runs the flows; returns early when something is missing."""
    if not t.check("caddy is installed", h.caddy_path() is not None,
                   "apt-get install caddy (tools/deps.sh test)"):
        return
    if not t.check("otp_demo binary exists", os.access(h.BIN, os.X_OK),
                   h.BIN):
        return
    snippet = h.readme_snippets(MARK).get("caddy")
    if not t.check("README has the Caddy snippet naming " + MARK,
                   snippet is not None):
        return
    try:
        certs, why = h.ensure_certs(os.path.join(OUT, "certs")), ""
    except (OSError, subprocess.CalledProcessError) as e:
        certs, why = None, str(e)
    if not t.check("test certificates", certs is not None, why):
        return

    otp = procs["otp"] = h.start_behind_proxy(
        os.path.join(OUT, "caddy-otp_demo"))
    if not t.check("otp_demo starts", otp.port is not None,
                   otp.log()[-400:]):
        return
    app = procs["app"] = App()

    port, tls_port = h.free_port(), h.free_port()
    conf = caddyfile(snippet, otp.port, app.port, port, tls_port, certs)
    if not t.check("README's snippet has router.example.com, "
                   "127.0.0.1:5000 and 127.0.0.1:8080 to replace",
                   conf is not None, snippet):
        return
    caddy = procs["caddy"] = h.start_caddy(
        h.fresh_dir(os.path.join(OUT, "caddy")), tmp, conf)
    if not t.check("caddy starts", h.wait_port(port, 30, caddy) and
                   h.wait_port(tls_port, 30, caddy),
                   " | ".join(caddy.log_lines()[-3:])):
        return

    plain = h.Client(port, source=CLIENT_ADDR)
    for page in PAGES:
        flow(t, otp, app, plain, "http", page)
    outside(t, app, plain, "http")

    ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
    tls = h.Client(tls_port, tls=ctx, source=CLIENT_ADDR)
    flow(t, otp, app, tls, "https", PAGES[0])
    outside(t, app, tls, "https")


def flow(t, otp, app, b, scheme, page):
    """An unverified browser b (cookies of earlier flows dropped) asks for
    page and verifies its way back to it."""
    s = "%s %s: " % (scheme, page)
    b.cookies, b.cookie_paths = {}, {}
    auth_name = "__Host-otp_auth" if scheme == "https" else "otp_auth"

    n = app.count()
    r = b.get(page, headers=dict(FORGED, **{
        "X-Forwarded-Host": "evil.example"}))
    back = urllib.parse.parse_qs(urllib.parse.urlsplit(
        r.header("Location") or "").query).get("return_to")
    t.check(s + "unverified, with forged identity headers: 302",
            r.status == 302, h.brief(r))
    t.check(s + "... to the form on this host, return_to the page",
            (r.header("Location") or "").startswith("/?") and
            back == [page], repr(r.header("Location")))
    t.check(s + "... and the app saw nothing", app.count() == n,
            str(app.seen[n:]))

    form_at = location_path(r)
    r = post(b, page, {"reboot": "1"})
    t.check(s + "an unverified POST (X-Forwarded-Method): 302 to the "
            "form, the app saw nothing", r.status == 302 and
            location_path(r) == form_at and app.count() == n,
            "%s %r" % (h.brief(r), r.header("Location")))

    r = b.get(form_at)
    action, fields = h.form(r.body)
    t.check(s + "the form: 200, carrying return_to",
            r.status == 200 and fields.get("return_to") == page,
            "%s %s" % (h.brief(r), fields))

    n0, e0 = len(otp.out_lines), len(otp.err_lines)
    fields["phone"] = PHONE
    r = b.post_form(action or "/request", fields, csrf=None, headers={
        "Origin": b.origin, "X-Forwarded-For": "203.0.113.9"})
    if not t.check(s + "POST /request through Caddy: 200 verify page",
                   r.status == 200, h.brief(r)):
        return
    vaction, vfields = h.form(r.body)
    t.check(s + "the verify form carries return_to",
            vfields.get("return_to") == page, str(vfields))
    got = otp.wait_log(r"request to=\S+ ip=(\S+)", e0, 10)
    m = got[1] if got else None
    t.check(s + "otp_demo saw the client, not Caddy nor its forged "
            "X-Forwarded-For", m is not None and m.group(1) == CLIENT_ADDR,
            m.group(0) if m else "no request line")

    code = h.console_code(otp, PHONE, n0, 10)
    if not t.check(s + "console sender printed the code", code is not None):
        return
    vfields["token"] = code
    r = post(b, vaction or "/verify", vfields)
    t.check(s + "POST /verify: 303 back to the page",
            r.status == 303 and location_path(r) == page,
            "%s %r" % (h.brief(r), r.header("Location")))
    if not t.check(s + "... with the %s cookie" % auth_name,
                   auth_name in b.cookies, str(sorted(b.cookies))):
        return
    if scheme == "https":
        t.check(s + "... Secure (Caddy's X-Forwarded-Proto: https)",
                "secure" in b.set_cookies[auth_name].lower(),
                b.set_cookies[auth_name])

    n = app.count()
    r = b.get(page, headers=FORGED)
    path, hdrs = app.last()
    t.check(s + "verified, with forged identity headers: 200 from the app",
            r.status == 200 and "Router admin" in r.html and
            app.count() == n + 1, h.brief(r))
    t.check(s + "the app got the page as asked", path == "GET " + page,
            repr(path))
    for name in IDENTITY:
        t.check(s + "the app got %s: the verified number, once" % name,
                hdrs.get(name.lower()) == [PHONE],
                repr(hdrs.get(name.lower())))
    t.check(s + "the app got no forged Remote-Groups",
            FORGED["Remote-Groups"] not in hdrs.get("remote-groups", []),
            repr(hdrs.get("remote-groups")))
    t.check(s + "Caddy told the app the host asked for (X-Forwarded-Host)",
            hdrs.get("x-forwarded-host") == ["127.0.0.1:%d" % b.port],
            repr(hdrs.get("x-forwarded-host")))

    r = post(b, page, {"reboot": "1"})
    t.check(s + "a verified POST reaches the app",
            r.status == 200 and app.last()[0] == "POST " + page,
            "%s %r" % (h.brief(r), app.last()[0]))

    n = app.count()
    other = b.clone()
    del other.cookies[auth_name]
    r = other.get(page, headers=FORGED)
    t.check(s + "without %s: 302, the app saw nothing" % auth_name,
            r.status == 302 and app.count() == n, str(r.status))
    forged = b.clone()
    value = forged.cookies[auth_name]
    forged.cookies[auth_name] = value[:-2] + ("11" if value[-2:] == "00"
                                              else "00")
    r = forged.get(page, headers=FORGED)
    t.check(s + "a tampered %s: 302, the app saw nothing" % auth_name,
            r.status == 302 and app.count() == n, str(r.status))


def outside(t, app, b, scheme):
    """/auth from outside, verified browser b: 404 as README's snippet
    says, and no other spelling answers for it either."""
    n = app.count()
    for path in ("/auth", "/auth?redirect=1", "/AUTH", "/%61uth", "/auth/",
                 "//auth"):
        r = b.get(path)
        said = [k for k in ("X-Otp-Phone", "Remote-User") if r.header(k)]
        t.check("%s: GET %s from outside: %s" % (
                scheme, path, "404" if path.startswith("/auth") else
                "not /auth's answer"),
                (r.status == 404 if path.startswith("/auth") else
                 r.status not in (204, 302)) and not said,
                "%d %s" % (r.status, said))
    t.check(scheme + ": ... and the app saw none of them", app.count() == n,
            str(app.seen[n:]))


if __name__ == "__main__":
    sys.exit(main())
