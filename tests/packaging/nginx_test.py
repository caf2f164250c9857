#!/usr/bin/env python3
"""nginx_test.py: Debian's nginx puts otp_demo's SMS verification in front of
a static admin page with auth_request (forward-auth).

    OTP_BIN=build/otp_demo python3 tests/packaging/nginx_test.py

otp_demo (console sender, TRUSTED_PROXY=127.0.0.1) listens on a free
loopback port; nginx runs in the foreground (daemon off, master_process
off) from a temporary prefix with the config below, on a free plain-HTTP
port and a free TLS port (test certificate from tests/gen_certs.sh), so
both the plain and the usual TLS-terminating set-up are covered:

    /admin/     auth_request /auth; 401 -> @login; a static page
    @login      302 /?return_to=$request_uri
    = /auth     internal; proxied to otp_demo without the body
    /           proxied to otp_demo (the form, /request, /verify)

Checks: /admin/ without a session is a 302 to /?return_to=/admin/; the form
carries return_to; after /verify the browser gets a 303 to /admin/, whose
page then loads (200) with the number in X-Otp-Phone; /auth is not
reachable from outside; otp_demo logs the client's address from
X-Forwarded-For, not nginx's. The client connects from 127.0.0.7 so the
two differ. Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import urllib.parse

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "packaging")
PHONE = h.PHONE_E164
CLIENT_ADDR = "127.0.0.7"
ADMIN_PAGE = "<!doctype html><title>Router admin</title><h1>Router admin</h1>\n"

NGINX_HTTP = """\
    default_type text/html;

    upstream otp {{ server 127.0.0.1:{otp_port}; }}

    server {{
        listen 127.0.0.1:{port};
        listen 127.0.0.1:{tls_port} ssl;
        ssl_certificate {certs}/server.pem;
        ssl_certificate_key {certs}/server.key;

        # The protected pages: a static site here, any app in real life.
        location /admin/ {{
            auth_request /auth;
            auth_request_set $otp_phone $upstream_http_x_otp_phone;
            error_page 401 = @login;
            add_header X-Otp-Phone $otp_phone;
            root {tmp}/www;
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

    tmp = tempfile.mkdtemp(prefix="otp-nginx.")
    otp = None
    ng = None
    try:
        otp = h.start_behind_proxy(os.path.join(OUT, "nginx-otp_demo"))
        if not t.check("otp_demo starts", otp.port is not None,
                       otp.log()[-400:]):
            return t.done()

        port, tls_port = h.free_port(), h.free_port()
        os.makedirs(os.path.join(tmp, "www", "admin"))
        with open(os.path.join(tmp, "www", "admin", "index.html"), "w") as f:
            f.write(ADMIN_PAGE)
        ng = h.start_nginx(os.path.join(OUT, "nginx"), tmp, NGINX_HTTP.format(
            tmp=tmp, port=port, tls_port=tls_port, otp_port=otp.port,
            certs=certs))
        if not t.check("nginx starts",
                       h.wait_port(port) and h.wait_port(tls_port),
                       open(tmp + "/error.log").read()[-600:]
                       if os.path.exists(tmp + "/error.log") else ""):
            return t.done()

        plain = h.Client(port, source=CLIENT_ADDR)
        flow(t, otp, plain, "http")

        ctx = ssl.create_default_context(cafile=os.path.join(certs, "ca.pem"))
        tls = h.Client(tls_port, tls=ctx, source=CLIENT_ADDR)
        flow(t, otp, tls, "https")
    finally:
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
            t.check("otp_demo log never holds the full number",
                    PHONE not in otp.log())
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


def flow(t, otp, b, scheme):
    s = scheme + ": "

    r = b.get("/admin/")
    t.check(s + "GET /admin/ without a session: 302",
            r.status == 302, h.brief(r))
    t.check(s + "... to /?return_to=/admin/",
            location_path(r) == "/?return_to=/admin/",
            repr(r.header("Location")))
    t.check(s + "... and not the admin page", "Router admin" not in r.html)

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
    fields["phone"] = PHONE
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

    code = h.console_code(otp, PHONE, n0)
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

    r = b.get("/admin/")
    t.check(s + "GET /admin/ with the session: 200 admin page",
            r.status == 200 and "Router admin" in r.html,
            h.brief(r))
    t.check(s + "nginx passed on X-Otp-Phone from /auth",
            r.header("X-Otp-Phone") == PHONE, repr(r.header("X-Otp-Phone")))

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
