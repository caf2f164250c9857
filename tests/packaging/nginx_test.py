#!/usr/bin/env python3
"""nginx_test.py: Debian's nginx puts otp_demo's SMS verification in front of
an admin app with auth_request (forward-auth), as README's snippet does.

    OTP_BIN=build/otp_demo python3 tests/packaging/nginx_test.py

otp_demo (console sender, TRUSTED_PROXY=127.0.0.1, a USERS_FILE of two
users) listens on a free loopback port; the "admin app" is a small Python
HTTP server that records the headers of every request it gets; nginx runs
in the foreground (daemon off, master_process off) from a temporary prefix
with the config below, on a free plain-HTTP port and a free TLS port (test
certificate from tests/gen_certs.sh), so both the plain and the usual
TLS-terminating set-up are covered:

    /admin/     auth_request /auth; 401 -> @login; proxied to the app
                with Remote-User, Remote-Groups, Remote-Phone and
                X-Otp-Phone from /auth's answer
    @login      302 /?return_to=$request_uri
    = /auth     internal; proxied to otp_demo without the body
    /           proxied to otp_demo (the form, /request, /verify)

Checks: /admin/ without a session is a 302 to /?return_to=/admin/ (also
with a forged Remote-User, and the app is never asked); the form carries
return_to; after /verify the browser gets a 303 to /admin/, whose page then
loads (200) and the app got the user's name, groups and number from /auth;
headers the client forges (Remote-User: admin, Remote-Groups, any case)
never reach the app, also when the user has no groups (an empty value);
/auth is not reachable from outside; otp_demo logs the client's address
from X-Forwarded-For, not nginx's. The client connects from 127.0.0.7 so
the two differ. Over HTTP alice (admins,ops) signs in, over HTTPS bob (no
groups). Prints "ok"/"FAIL" lines and "N passed, M failed".
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
PHONE = h.PHONE_E164
CLIENT_ADDR = "127.0.0.7"
ADMIN_PAGE = "<!doctype html><title>Router admin</title><h1>Router admin</h1>\n"
USERS = "%s alice admins,ops\n%s bob\n" % (h.PHONE_E164, h.PHONE2_E164)
# scheme -> (number, Remote-User, Remote-Groups or None: no header)
WHO = {"http": (h.PHONE_E164, "alice", "admins,ops"),
       "https": (h.PHONE2_E164, "bob", None)}
FORGED = {"Remote-User": "admin", "Remote-Groups": "admins",
          "remote-phone": "+15550100", "X-Otp-Phone": "+15550100"}

NGINX_HTTP = """\
    default_type text/html;

    upstream otp {{ server 127.0.0.1:{otp_port}; }}

    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {certs}/server.pem;
        ssl_certificate_key {certs}/server.key;

        # The protected pages: README's snippet, the app on {app_port}.
        location /admin/ {{
            auth_request /auth;
            auth_request_set $otp_user $upstream_http_remote_user;
            auth_request_set $otp_groups $upstream_http_remote_groups;
            auth_request_set $otp_phone $upstream_http_remote_phone;
            error_page 401 = @login;
            proxy_set_header Remote-User $otp_user;
            proxy_set_header Remote-Groups $otp_groups;
            proxy_set_header Remote-Phone $otp_phone;
            proxy_set_header X-Otp-Phone $otp_phone;
            proxy_pass http://127.0.0.1:{app_port};
        }}
        location @login {{
            return 302 /?return_to=$request_uri;
        }}
        location = /auth {{
            internal;
            proxy_pass http://otp;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
        # The verification pages themselves.
        location / {{
            proxy_pass http://otp;
            proxy_set_header Host $http_host;
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""


class App(http.server.BaseHTTPRequestHandler):
    """The admin app: serves ADMIN_PAGE, keeps each request's headers."""
    seen = []       # [(path, [(name, value)...])]

    def do_GET(self):
        App.seen.append((self.path, list(self.headers.items())))
        body = ADMIN_PAGE.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def app_got(i, name):
    """The values of header name (any case) in the app's request i."""
    return [v for k, v in App.seen[i][1] if k.lower() == name.lower()]


def location_path(r):
    loc = r.header("Location") or ""
    u = urllib.parse.urlsplit(loc)
    return u.path + ("?" + u.query if u.query else "")


def post(b, path, fields):
    """A browser's form POST: the fields as they are, and an Origin."""
    return b.post_form(path, fields, csrf=None, headers={"Origin": b.origin})


def main():
    t = h.Checks("nginx")
    if not t.check("nginx is installed", h.nginx_path() is not None,
                   "apt-get install nginx (tools/deps.sh test)"):
        return t.done()
    if not t.check("otp_demo binary exists", os.access(h.BIN, os.X_OK),
                   h.BIN):
        return t.done()
    try:
        certs, why = h.ensure_certs(os.path.join(OUT, "certs")), ""
    except (OSError, subprocess.CalledProcessError) as e:
        certs, why = None, str(e)
    if not t.check("test certificates", certs is not None, why):
        return t.done()
    run(t, certs)
    return t.done()     # after run()'s own checks of the shutdown


def run(t, certs):
    """The flow over HTTP and HTTPS through nginx, then the shutdown
    checks (each counted: they come before the summary)."""
    tmp = tempfile.mkdtemp(prefix="otp-nginx.")
    otp = None
    ng = None
    app = http.server.ThreadingHTTPServer(("127.0.0.1", 0), App)
    threading.Thread(target=app.serve_forever, daemon=True).start()
    try:
        users = os.path.join(tmp, "users")
        with open(users, "w") as f:
            f.write(USERS)
        otp = h.start_behind_proxy(os.path.join(OUT, "nginx-otp_demo"),
                                   {"OTP_USERS_FILE": users})
        if not t.check("otp_demo starts", otp.port is not None,
                       otp.log()[-400:]):
            return

        port, tls_port = h.free_port(), h.free_port()
        ng = h.start_nginx(os.path.join(OUT, "nginx"), tmp, NGINX_HTTP.format(
            port=port, tls_port=tls_port, otp_port=otp.port,
            app_port=app.server_address[1], certs=certs))
        if not t.check("nginx starts",
                       h.wait_port(port) and h.wait_port(tls_port),
                       open(tmp + "/error.log").read()[-600:]
                       if os.path.exists(tmp + "/error.log") else ""):
            return

        plain = h.Client(port, source=CLIENT_ADDR)
        flow(t, otp, plain, "http")

        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        tls = h.Client(tls_port, tls=ctx, source=CLIENT_ADDR)
        flow(t, otp, tls, "https")
    finally:
        app.shutdown()
        if ng is not None:
            rc = ng.stop()
            t.check("nginx stops", not isinstance(rc, str), "killed")
            for name in ("error.log", "access.log"):
                if os.path.exists(os.path.join(tmp, name)):
                    shutil.copy(os.path.join(tmp, name),
                                os.path.join(OUT, "nginx-" + name))
        if otp is not None:
            rc = otp.stop()
            t.check("otp_demo exits 0 on SIGTERM", rc == 0, "status %r" % rc)
            t.check("otp_demo log never holds the full numbers",
                    PHONE not in otp.log() and h.PHONE2_E164 not in otp.log())
        shutil.rmtree(tmp, ignore_errors=True)


def flow(t, otp, b, scheme):
    s = scheme + ": "
    phone, user, groups = WHO[scheme]

    asked = len(App.seen)
    r = b.get("/admin/")
    t.check(s + "GET /admin/ without a session: 302",
            r.status == 302, h.brief(r))
    t.check(s + "... to /?return_to=/admin/",
            location_path(r) == "/?return_to=/admin/",
            repr(r.header("Location")))
    t.check(s + "... and not the admin page", "Router admin" not in r.html)
    r = b.get("/admin/", headers=FORGED)
    t.check(s + "GET /admin/ with a forged Remote-User, no session: 302",
            r.status == 302 and "Router admin" not in r.html, h.brief(r))
    t.check(s + "... and the app was never asked", len(App.seen) == asked,
            str(App.seen[asked:]))

    r = b.get("/auth")
    t.check(s + "GET /auth from outside: 404 (internal)", r.status == 404,
            str(r.status))

    r = b.get("/?return_to=/admin/")
    action, fields = h.form(r.body)
    t.check(s + "GET /?return_to=/admin/: 200 form", r.status == 200,
            h.brief(r))
    t.check(s + "the form carries return_to=/admin/",
            fields.get("return_to") == "/admin/", str(fields))
    # Behind https (X-Forwarded-Proto) cookies are __Host- ones.
    auth_name = "__Host-otp_auth" if scheme == "https" else "otp_auth"
    if scheme == "https":
        sid = b.set_cookies.get("__Host-otp_sid", "")
        t.check(s + "__Host-otp_sid cookie is Secure (X-Forwarded-Proto: "
                "https)", "secure" in sid.lower(), sid)

    r = b.get("/?return_to=https://evil.example/")
    _, evil = h.form(r.body)
    t.check(s + "an off-site return_to is dropped",
            evil.get("return_to", "") == "", str(evil))

    n0, e0 = len(otp.out_lines), len(otp.err_lines)
    fields["phone"] = phone
    r = post(b, action or "/request", fields)
    if not t.check(s + "POST /request through nginx: 200 verify page",
                   r.status == 200, h.brief(r)):
        return
    vaction, vfields = h.form(r.body)
    t.check(s + "the verify form carries return_to=/admin/",
            vfields.get("return_to") == "/admin/", str(vfields))
    got = otp.wait_log(r"request to=\S+ ip=(\S+)", e0, 3)
    m = got[1] if got else None
    t.check(s + "otp_demo saw the client (X-Forwarded-For), not nginx",
            m is not None and m.group(1) == CLIENT_ADDR,
            m.group(0) if m else "no request line")

    code = h.console_code(otp, phone, n0)
    if not t.check(s + "console sender printed the code", code is not None):
        return
    vfields["token"] = code
    r = post(b, vaction or "/verify", vfields)
    t.check(s + "POST /verify: 303 See Other", r.status == 303,
            h.brief(r))
    t.check(s + "... to /admin/", location_path(r) == "/admin/",
            repr(r.header("Location")))
    t.check(s + "... with the otp_auth cookie", auth_name in b.cookies,
            str(sorted(b.cookies)))

    asked = len(App.seen)
    r = b.get("/admin/")
    t.check(s + "GET /admin/ with the session: 200 admin page",
            r.status == 200 and "Router admin" in r.html and
            len(App.seen) == asked + 1, h.brief(r))
    want = {"Remote-User": [user], "Remote-Groups": [groups] if groups
            else [], "Remote-Phone": [phone], "X-Otp-Phone": [phone]}
    got = {k: app_got(-1, k) for k in want}
    t.check(s + "the app got %s's identity from /auth" % user, got == want,
            "%s, want %s" % (got, want))

    r = b.get("/admin/", headers=FORGED)
    got = {k: app_got(-1, k) for k in want}
    t.check(s + "forged Remote-* headers from the client never reach the "
            "app", r.status == 200 and len(App.seen) == asked + 2 and
            got == want, "%s, want %s" % (got, want))

    other = h.Client(b.port, tls=b.tls, source=CLIENT_ADDR)
    other.cookies = {k: v for k, v in b.cookies.items() if k != auth_name}
    other.cookie_paths = dict(b.cookie_paths)
    r = other.get("/admin/")
    t.check(s + "without otp_auth: 302 again", r.status == 302,
            str(r.status))
    forged = h.Client(b.port, tls=b.tls, source=CLIENT_ADDR)
    value = b.cookies.get(auth_name, "x")
    forged.cookies = {auth_name: value[:-2] + ("00" if value[-2:] != "00"
                                               else "11")}
    forged.cookie_paths = {auth_name: b.cookie_paths.get(auth_name, "/")}
    r = forged.get("/admin/")
    t.check(s + "a tampered otp_auth: 302", r.status == 302, str(r.status))


if __name__ == "__main__":
    sys.exit(main())
