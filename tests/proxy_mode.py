#!/usr/bin/env python3
"""proxy_mode.py: otp_demo with UPSTREAM, in front of real small servers.

    python3 tests/proxy_mode.py [-k SUBSTR]... [-j JOBS] [-l]

Env: OTP_BIN (default <repo>/otp_demo). Python standard library, and
busybox (its httpd and a CGI script that echoes what it received).

Upstreams, one set per case:
  - busybox httpd -f with cgi-bin/echo: method, URI, the headers as
    HTTP_* variables, the body's length and SHA-256;
  - Python's http.server (a thread of this process): an echo of the
    headers as JSON, uploads hashed as they stream in, a chunked and a
    close-delimited download, Set-Cookie twice, redirects, a slow answer;
  - a canned one: fixed bytes for each path, for malformed answers.
Every case logs in through the real flow (the console sender's code on
stdout). After each case the server must exit 0 on SIGTERM and its log
must hold no code and no full number (harness.Ctx).

The upload case prints the RSS figures it measured (VmRSS and VmHWM of
otp_demo before and after 32 MiB), and fails above 1 MiB of growth.
"""

import hashlib
import http.client
import http.server
import json
import os
import re
import shutil
import socket
import socketserver
import sys
import threading
import time

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
from harness import (  # noqa: E402
    CONSOLE, PHONE, PHONE_E164, ROOT, Server, Skip, check,
    console_code, free_port, page_kind, raw_exchange, run_once, wait_port,
    write_config)
import harness  # noqa: E402

OUT = os.path.join(ROOT, "tests", "out", "proxy_mode")
MIB = 1024 * 1024
UPLOAD = 32 * MIB
RSS_LIMIT_KIB = 1024
TIMEOUT = 2                 # UPSTREAM_TIMEOUT in the slow case
MARGIN = 8.0                # a loaded 2-core machine


def pattern(n, seed=0):
    """n deterministic bytes (not all alike, so a slip shows in a hash)."""
    block = bytes((i * 7 + seed) & 0xff for i in range(65536))
    return (block * (n // len(block) + 1))[:n]


# ---- the Python upstream ----------------------------------------------------

class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):
        self.server.seen.append(self.path)

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        if status not in (204, 304):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304):
            self.wfile.write(body)

    def read_body(self):
        """The request body, hashed as it streams in: (length, sha256)."""
        h, n = hashlib.sha256(), 0
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            while True:
                size = int(self.rfile.readline().split(b";")[0], 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b""):
                        pass
                    break
                h.update(self.rfile.read(size))
                n += size
                self.rfile.readline()
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left > 0:
                piece = self.rfile.read(min(left, 65536))
                if not piece:
                    break
                h.update(piece)
                n += len(piece)
                left -= len(piece)
        return n, h.hexdigest()

    def do_GET(self):
        path = self.path.split("?")[0]
        if path == "/chunked" or path == "/close":
            data = pattern(6 * MIB + 12345, 3)
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            if path == "/chunked":
                self.send_header("Transfer-Encoding", "chunked")
            else:
                self.send_header("Connection", "close")
                self.close_connection = True
            self.end_headers()
            pos, step = 0, 1
            while pos < len(data):
                piece = data[pos:pos + step]
                pos += len(piece)
                step = step * 3 + 1 if step < 200000 else 1000
                if path == "/chunked":
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                else:
                    self.wfile.write(piece)
            if path == "/chunked":
                self.wfile.write(b"0\r\nX-Trailer: t\r\n\r\n")
            return
        if path == "/cookies":
            return self.reply(200, b"cookies", [
                ("Set-Cookie", "a=1; Path=/"), ("Set-Cookie", "b=2; HttpOnly"),
                ("Connection", "X-Up-Hop"), ("X-Up-Hop", "1"),
                ("Keep-Alive", "timeout=5"), ("X-Up-End", "kept"),
                ("Remote-User", "upstream-says")])
        if path == "/redirect-own":
            return self.reply(302, b"", [("Location", "http://127.0.0.1:%d"
                                          "/landing?x=1" % self.server.port)])
        if path == "/redirect-away":
            return self.reply(302, b"", [("Location",
                                          "https://example.com/x")])
        if path == "/redirect-relative":
            return self.reply(303, b"", [("Location", "/elsewhere")])
        if path == "/nocontent":
            return self.reply(204, b"", [("X-Empty", "yes")])
        if path == "/slow":
            self.server.release.wait(60)
            return self.reply(200, b"late")
        page = b"<!doctype html><title>Upstream</title><h1 id=up>upstream " \
            b"page %s</h1>" % self.path.encode()
        if path.startswith("/admin/page"):
            return self.reply(200, page, [("Content-Type", "text/html")])
        body = json.dumps({"method": self.command, "uri": self.path,
                           "headers": self.headers.items()}).encode()
        return self.reply(200, body, [("Content-Type", "application/json")])

    do_HEAD = do_GET

    def do_PUT(self):
        n, digest = self.read_body()
        body = json.dumps({"method": self.command, "uri": self.path,
                           "len": n, "sha256": digest,
                           "headers": self.headers.items()}).encode()
        self.reply(200, body, [("Content-Type", "application/json")])

    do_POST = do_PUT


class PyUpstream(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Upstream)
        self.port = self.server_address[1]
        self.seen = []
        self.release = threading.Event()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.release.set()
        self.shutdown()
        self.server_close()


# ---- a canned upstream: fixed bytes per path --------------------------------

HEAD_200 = b"HTTP/1.1 200 OK\r\n"
CANNED = {
    "/cl-and-te": HEAD_200 + b"Content-Length: 5\r\nTransfer-Encoding: "
                  b"chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/te-and-cl": HEAD_200 + b"Transfer-Encoding: chunked\r\nContent-Length:"
                  b" 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    "/two-lengths": HEAD_200 + b"Content-Length: 5\r\nContent-Length: 6\r\n"
                    b"\r\nhello!",
    "/obs-fold": HEAD_200 + b"X-A: 1\r\n continued\r\nContent-Length: 2"
                 b"\r\n\r\nok",
    "/bare-lf": b"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
    "/long-head": HEAD_200 + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
    "/bad-status": b"HTTP/1.1 2000 OK\r\nContent-Length: 2\r\n\r\nok",
    "/te-gzip": HEAD_200 + b"Transfer-Encoding: gzip\r\n\r\nxx",
    "/bad-length": HEAD_200 + b"Content-Length: -1\r\n\r\n",
    "/space-name": HEAD_200 + b"X-A : 1\r\nContent-Length: 2\r\n\r\nok",
    "/not-http": b"SSH-2.0-OpenSSH_9.2\r\n",
    "/upgrade": b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
    "/bad-chunk": HEAD_200 + b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello"
                  b"\r\nzz\r\nxx\r\n0\r\n\r\n",
    "/dup-same": HEAD_200 + b"Content-Length: 2\r\nContent-Length: 2\r\n"
                 b"\r\nok",
    "/continue": b"HTTP/1.1 100 Continue\r\n\r\n" + HEAD_200 +
                 b"Content-Length: 2\r\n\r\nok",
}


class Canned(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True

    class Handler(socketserver.BaseRequestHandler):
        def handle(self):
            buf = b""
            while b"\r\n\r\n" not in buf:
                piece = self.request.recv(65536)
                if not piece:
                    return
                buf += piece
            path = buf.split(b" ")[1].decode()
            self.request.sendall(CANNED.get(path, HEAD_200 +
                                            b"Content-Length: 0\r\n\r\n"))

    def __init__(self):
        super().__init__(("127.0.0.1", 0), Canned.Handler)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


# ---- busybox httpd ----------------------------------------------------------

ECHO_CGI = r"""#!/bin/sh
printf 'Content-Type: text/plain\r\n\r\n'
echo "method=$REQUEST_METHOD"
echo "uri=$REQUEST_URI"
env | grep '^HTTP_' | sort
if [ -n "$CONTENT_LENGTH" ]; then
	echo "length=$CONTENT_LENGTH"
	echo "sha256=$(head -c "$CONTENT_LENGTH" | sha256sum | cut -d' ' -f1)"
fi
"""


def start_busybox(ctx):
    bb = shutil.which("busybox")
    if bb is None:
        raise Skip("no busybox (tools/deps.sh test installs it)")
    www = os.path.join(ctx.dir, "www-up")
    os.makedirs(os.path.join(www, "cgi-bin"), exist_ok=True)
    with open(os.path.join(www, "cgi-bin", "echo"), "w") as f:
        f.write(ECHO_CGI)
    os.chmod(os.path.join(www, "cgi-bin", "echo"), 0o755)
    port = free_port()
    srv = Server(os.path.join(ctx.dir, "busybox"), command=[
        bb, "httpd", "-f", "-p", "127.0.0.1:%d" % port, "-h", www],
        listen_re=None, stdout="file", stderr="file")
    srv.start()
    stoppers(ctx).append(srv.stop)
    check(wait_port(port), "busybox httpd did not listen on %d" % port)
    return port


# ---- the flow ---------------------------------------------------------------

def stoppers(ctx):
    """What to stop after the case: the upstreams' stop functions."""
    if not hasattr(ctx, "stoppers"):
        ctx.stoppers = []
    return ctx.stoppers


def start(ctx, upstream_port, **extra):
    """otp_demo (console sender) with UPSTREAM at upstream_port."""
    cfg = dict(CONSOLE, UPSTREAM="http://127.0.0.1:%d" % upstream_port,
               **extra)
    return ctx.start_server(base=cfg)


def py_upstream(ctx):
    up = PyUpstream()
    stoppers(ctx).append(up.stop)
    return up


def stop_all(ctx):
    for stop in reversed(getattr(ctx, "stoppers", [])):
        stop()


def login(ctx, b, path):
    """Asks for path unverified (the phone form, 401, return_to = path),
    then the whole flow: its 303 must lead back to path."""
    r = b.get(path)
    check(r.status == 401 and page_kind(r.body) == "index",
          "GET %s unverified: %d %s, want 401 and the phone form"
          % (path, r.status, page_kind(r.body)))
    check(b.hidden("return_to") == path, "return_to %r, want %r"
          % (b.hidden("return_to"), path))
    n0 = len(ctx.server.out_lines)
    r = b.request_code(PHONE, {"return_to": path})
    check(r.status == 200, "POST /request: %d" % r.status)
    code = console_code(ctx.server, PHONE_E164, n0, timeout=15)
    check(code, "no console SMS")
    ctx.note_sms(code, code)
    r = b.verify(code, {"return_to": b.hidden("return_to") or path})
    check(r.status == 303 and r.header("Location") == path,
          "POST /verify: %d Location %r, want 303 to %s"
          % (r.status, r.header("Location"), path))
    check("otp_auth" in b.cookies, "no otp_auth cookie after the flow")
    return b


def echo_headers(r):
    """The Python upstream's echo: {lowercase name: [values]}."""
    check(r.status == 200, "echo: %d %s" % (r.status, r.body[:200]))
    j = json.loads(r.body)
    out = {}
    for k, v in j["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return j, out


def proxied(fn):
    """A case body with its upstreams stopped afterwards."""
    def case(ctx):
        try:
            fn(ctx)
        finally:
            stop_all(ctx)
    case.__name__ = fn.__name__
    case.__doc__ = fn.__doc__
    return case


# ---- cases ------------------------------------------------------------------

@proxied
def case_flow_returns_and_proxies(ctx):
    """GET /admin/x?y=1 unverified: the phone form; after the flow, the 303
    back to /admin/x?y=1, which the upstream then answers."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = login(ctx, ctx.browser(), "/admin/x?y=1")
    check(up.seen == [], "the upstream saw %s before the login" % up.seen)
    j, h = echo_headers(b.get("/admin/x?y=1"))
    check(j["method"] == "GET" and j["uri"] == "/admin/x?y=1",
          "upstream got %s %s" % (j["method"], j["uri"]))
    check(h.get("remote-user") == [PHONE_E164] and
          h.get("remote-phone") == [PHONE_E164],
          "identity headers: %s" % h)


@proxied
def case_busybox_cgi_echo(ctx):
    """busybox httpd's CGI sees the identity, X-Forwarded-*, the client's
    Host, its own cookies only; a forged Remote-User and hop-by-hop headers
    never arrive; a POST body arrives whole."""
    port = start_busybox(ctx)
    users = os.path.join(ctx.dir, "users")
    with open(users, "w") as f:
        f.write("%s alice admins,ops\n" % PHONE_E164)
    start(ctx, port, USERS_FILE=users)
    b = login(ctx, ctx.browser(), "/cgi-bin/echo?y=1")
    r = b.get("/cgi-bin/echo?y=1", headers={
        "Remote-User": "admin", "Remote-Groups": "admins",
        "Remote-Phone": "+19995550000", "X-Otp-Phone": "+19995550000",
        "X-Forwarded-For": "6.6.6.6", "X-Forwarded-Host": "evil",
        "X-Forwarded-Proto": "https", "Forwarded": "for=6.6.6.6",
        "Connection": "keep-alive, X-Hop", "X-Hop": "1",
        "Keep-Alive": "timeout=9", "Proxy-Authorization": "Basic eA==",
        "X-Kept": "yes"},
        cookies={"theirs": "1", "__Secure-otp_auth": "x",
                 "__Host-otp_vid": "y", "otp_sidecar": "z"})
    check(r.status == 200, "GET via busybox: %d %s" % (r.status, r.body[:200]))
    env = dict(ln.split("=", 1) for ln in r.body.decode().splitlines()
               if "=" in ln)
    want = {
        "method": "GET", "uri": "/cgi-bin/echo?y=1",
        "HTTP_REMOTE_USER": "alice", "HTTP_REMOTE_GROUPS": "admins,ops",
        "HTTP_REMOTE_PHONE": PHONE_E164, "HTTP_X_OTP_PHONE": PHONE_E164,
        "HTTP_X_FORWARDED_FOR": "127.0.0.1",
        "HTTP_X_FORWARDED_PROTO": "http",
        "HTTP_X_FORWARDED_HOST": "127.0.0.1:%d" % ctx.server.port,
        "HTTP_HOST": "127.0.0.1:%d" % ctx.server.port,
        "HTTP_COOKIE": "theirs=1; otp_sidecar=z", "HTTP_X_KEPT": "yes",
    }
    for k, v in want.items():
        check(env.get(k) == v, "upstream %s=%r, want %r (got %s)"
              % (k, env.get(k), v, sorted(env)))
    for k in ("HTTP_X_HOP",
              "HTTP_KEEP_ALIVE", "HTTP_PROXY_AUTHORIZATION",
              "HTTP_FORWARDED"):
        check(k not in env, "upstream got %s=%r" % (k, env.get(k)))
    body = pattern(300000, 5)
    r = b.send("POST", "/cgi-bin/echo", body,
               headers={"Content-Type": "application/octet-stream"})
    check(r.status == 200, "POST via busybox: %d" % r.status)
    out = r.body.decode()
    check("length=%d\n" % len(body) in out and "sha256=%s\n" %
          hashlib.sha256(body).hexdigest() in out, "POST body arrived as %s"
          % out[-200:])


@proxied
def case_own_pages_stay(ctx):
    """With UPSTREAM, /, /style.css, /healthz, /auth and a 405 are still
    otp_demo's, before and after the login; the upstream sees none."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = ctx.browser()
    for verified in (False, True):
        for path, want in (("/", 200), ("/style.css", 200), ("/otp.js", 200),
                           ("/healthz", 200), ("/readyz", 200),
                           ("/auth", 204 if verified else 401),
                           ("/metrics", 404), ("/api/v1/verifications", 404)):
            r = b.get(path)
            check(r.status == want, "%s GET %s: %d, want %d"
                  % ("verified" if verified else "unverified", path,
                     r.status, want))
        r = b.send("GET", "/request")
        check(r.status == 405, "GET /request: %d" % r.status)
        if not verified:
            login(ctx, b, "/admin/y")
    check(up.seen == [], "the upstream saw %s" % up.seen)


@proxied
def case_response_headers(ctx):
    """Two Set-Cookie pass, hop-by-hop answer headers do not (Connection,
    what it names, Keep-Alive), nor an upstream's Remote-User."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = login(ctx, ctx.browser(), "/cookies")
    r = b.get("/cookies")
    check(r.status == 200 and r.body == b"cookies", "GET /cookies: %d %r"
          % (r.status, r.body[:80]))
    check(sorted(r.all("Set-Cookie")) == ["a=1; Path=/", "b=2; HttpOnly"],
          "Set-Cookie: %s" % r.all("Set-Cookie"))
    check(r.header("X-Up-End") == "kept", "X-Up-End: %r"
          % r.header("X-Up-End"))
    for h in ("X-Up-Hop", "Keep-Alive", "Remote-User"):
        check(r.header(h) is None, "%s passed on: %r" % (h, r.header(h)))
    r = b.send("HEAD", "/cookies")
    check(r.status == 200 and r.body == b"" and
          r.header("Content-Length") == "7", "HEAD: %d %r CL %r"
          % (r.status, r.body, r.header("Content-Length")))
    r = b.get("/nocontent")
    check(r.status == 204 and r.body == b"" and r.header("X-Empty") == "yes",
          "204: %d %r" % (r.status, r.body))


@proxied
def case_redirects(ctx):
    """A redirect to the upstream's own origin becomes a path on ours;
    others pass as they are."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = login(ctx, ctx.browser(), "/redirect-own")
    for path, status, loc in (("/redirect-own", 302, "/landing?x=1"),
                              ("/redirect-away", 302, "https://example.com/x"),
                              ("/redirect-relative", 303, "/elsewhere")):
        r = b.get(path)
        check(r.status == status and r.header("Location") == loc,
              "GET %s: %d Location %r, want %d %r" % (
                  path, r.status, r.header("Location"), status, loc))


class Gen:
    """A request body of n pattern bytes, made as it is read."""

    def __init__(self, n):
        self.left, self.block = n, pattern(65536, 9)
        self.h = hashlib.sha256()

    def read(self, size=-1):
        size = min(self.left, 65536 if size < 0 else size)
        piece = self.block[:size]
        self.left -= size
        self.h.update(piece)
        return piece


def mem_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        s = f.read()
    return {k: int(re.search(r"^%s:\s+([0-9]+)" % k, s, re.M).group(1))
            for k in ("VmRSS", "VmHWM")}


def upload(ctx, b, n, method="PUT", chunked=False):
    conn = http.client.HTTPConnection("127.0.0.1", ctx.server.port,
                                      timeout=120)
    gen = Gen(n)
    hdrs = {"Cookie": b.cookie_header("/upload"),
            "Content-Type": "application/octet-stream"}
    if chunked:
        # civetweb takes chunks of at most OTP_MAX_BODY (1 KiB) bytes.
        conn.request(method, "/upload", body=iter(lambda: gen.read(1000),
                                                  b""),
                     headers=hdrs, encode_chunked=True)
    else:
        hdrs["Content-Length"] = str(n)
        conn.request(method, "/upload", body=gen, headers=hdrs)
    r = conn.getresponse()
    body = r.read()
    conn.close()
    check(r.status == 200, "%s upload: %d %r" % (method, r.status, body[:200]))
    j = json.loads(body)
    check(j["len"] == n and j["sha256"] == gen.h.hexdigest(),
          "upload of %d bytes arrived as %d bytes, hash %s" % (
              n, j["len"], "equal" if j["sha256"] == gen.h.hexdigest()
              else "different"))
    return j


@proxied
def case_upload_32mib_rss(ctx):
    """A 32 MiB PUT streams through: the upstream's hash matches, and
    otp_demo's VmRSS and VmHWM grow by at most 1 MiB. A chunked POST too."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = login(ctx, ctx.browser(), "/upload")
    upload(ctx, b, 2 * MIB)         # every page of the path touched once
    before = mem_kib(ctx.server.pid)
    j = upload(ctx, b, UPLOAD)
    after = mem_kib(ctx.server.pid)
    h = {k.lower(): v for k, v in j["headers"]}
    check(h.get("content-length") == str(UPLOAD), "upstream got "
          "Content-Length %r" % h.get("content-length"))
    grow = {k: after[k] - before[k] for k in after}
    print("  rss: 32 MiB upload: VmRSS %d -> %d KiB (%+d), VmHWM %d -> %d "
          "KiB (%+d)" % (before["VmRSS"], after["VmRSS"], grow["VmRSS"],
                         before["VmHWM"], after["VmHWM"], grow["VmHWM"]),
          flush=True)
    with open(os.path.join(ctx.dir, "rss.txt"), "w") as f:
        f.write("before %s\nafter %s\n" % (before, after))
    check(grow["VmRSS"] <= RSS_LIMIT_KIB and grow["VmHWM"] <= RSS_LIMIT_KIB,
          "memory grew by %s KiB (limit %d)" % (grow, RSS_LIMIT_KIB))
    j = upload(ctx, b, 3 * MIB + 17, method="POST", chunked=True)
    h = {k.lower(): v for k, v in j["headers"]}
    check(h.get("transfer-encoding") == "chunked", "chunked upload reached "
          "the upstream as %s" % h)


@proxied
def case_chunked_and_close_downloads(ctx):
    """A chunked answer (odd chunk sizes, a trailer) and a close-delimited
    one reach the client chunked and whole; an HTTP/1.0 client gets the
    body up to the close."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = login(ctx, ctx.browser(), "/chunked")
    want = hashlib.sha256(pattern(6 * MIB + 12345, 3)).hexdigest()
    for path in ("/chunked", "/close"):
        r = b.get(path)
        check(r.status == 200, "GET %s: %d" % (path, r.status))
        check(r.header("Transfer-Encoding") == "chunked", "GET %s: "
              "Transfer-Encoding %r" % (path, r.header("Transfer-Encoding")))
        check(hashlib.sha256(r.body).hexdigest() == want, "GET %s: %d bytes, "
              "hash differs" % (path, len(r.body)))
        check(r.header("X-Trailer") is None, "a trailer became a header")
    got = raw_exchange(ctx.server.port, b"GET /close HTTP/1.0\r\nCookie: " +
                       b.cookie_header("/").encode() + b"\r\n\r\n",
                       timeout=60, body=False)
    check(got.startswith(b"HTTP/1.1 200") and b"Transfer-Encoding" not in got,
          "HTTP/1.0 client: %r" % got[:200])


@proxied
def case_malformed_upstream_502(ctx):
    """Malformed upstream heads are a 502 page, never passed on: both
    Content-Length and Transfer-Encoding, lengths that differ, obs-fold, a
    bare LF, a head over 8 KiB, a bad status, an unknown coding, a blank
    before the colon, a 101; a bad chunk cuts the answer short."""
    can = Canned()
    stoppers(ctx).append(can.stop)
    start(ctx, can.port)
    b = login(ctx, ctx.browser(), "/dup-same")
    for path in ("/cl-and-te", "/te-and-cl", "/two-lengths", "/obs-fold",
                 "/bare-lf", "/long-head", "/bad-status", "/te-gzip",
                 "/bad-length", "/space-name", "/not-http", "/upgrade"):
        r = b.get(path)
        check(r.status == 502 and "malformed" in r.text and
              b"hello" not in r.body, "GET %s: %d %r, want the 502 page"
              % (path, r.status, r.text[:120]))
    for path in ("/dup-same", "/continue"):
        r = b.get(path)
        check(r.status == 200 and r.body == b"ok", "GET %s: %d %r"
              % (path, r.status, r.body[:80]))
    s = socket.create_connection(("127.0.0.1", ctx.server.port), 30)
    s.sendall(b"GET /bad-chunk HTTP/1.1\r\nHost: x\r\nCookie: " +
              b.cookie_header("/").encode() + b"\r\n\r\n")
    answers, closed, rest = harness.read_answers(s, timeout=30)
    s.close()
    check(closed and answers == [] and rest.startswith(b"HTTP/1.1 200"),
          "bad chunk: %s, closed %s, then %r" % (answers, closed, rest[-80:]))


@proxied
def case_upstream_down_502(ctx):
    """Nothing listening at UPSTREAM: the 502 page, at once."""
    start(ctx, free_port())
    b = login(ctx, ctx.browser(), "/admin/z")
    t0 = time.monotonic()
    r = b.get("/admin/z")
    check(r.status == 502 and "not answering" in r.text, "GET: %d %r"
          % (r.status, r.text[:200]))
    check(time.monotonic() - t0 < MARGIN, "took %.1f s" % (time.monotonic() -
                                                          t0))


@proxied
def case_slow_upstream_504(ctx):
    """An upstream that does not answer within UPSTREAM_TIMEOUT: the 504
    page, within the timeout and a margin."""
    up = py_upstream(ctx)
    start(ctx, up.port, UPSTREAM_TIMEOUT=TIMEOUT)
    b = login(ctx, ctx.browser(), "/slow")
    t0 = time.monotonic()
    r = b.get("/slow")
    took = time.monotonic() - t0
    check(r.status == 504 and "took too long" in r.text, "GET /slow: %d %r"
          % (r.status, r.text[:200]))
    check(TIMEOUT - 0.5 <= took <= TIMEOUT + MARGIN, "504 after %.1f s "
          "(UPSTREAM_TIMEOUT=%d)" % (took, TIMEOUT))


@proxied
def case_unverified_post_401_and_upgrade_501(ctx):
    """An unverified POST is a 401 page and never reaches the upstream (its
    body would be lost in a login); a forged otp_auth is not a login; an
    Upgrade (WebSocket) is a 501, verified or not."""
    up = py_upstream(ctx)
    start(ctx, up.port)
    b = ctx.browser()
    r = b.send("POST", "/admin/save", "a=1", headers={
        "Content-Type": "application/x-www-form-urlencoded"})
    check(r.status == 401 and "Sign in first" in r.text, "POST: %d %r"
          % (r.status, r.text[:200]))
    r = b.get("/admin/x", cookies={"otp_auth": "9999999999.12015550123.00"})
    check(r.status == 401 and page_kind(r.body) == "index",
          "forged otp_auth: %d" % r.status)
    check(up.seen == [], "the upstream saw %s" % up.seen)
    login(ctx, b, "/ws")
    r = b.get("/ws", headers={"Connection": "Upgrade", "Upgrade": "websocket",
                              "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
                              "Sec-WebSocket-Version": "13"})
    check(r.status == 501, "Upgrade: %d" % r.status)
    check(up.seen == [], "the upstream saw %s" % up.seen)


@proxied
def case_config_upstream(ctx):
    """UPSTREAM is http://host:port (a literal or a name that resolves),
    checked at load: a bad one names the key and the line (exit 78)."""
    d = ctx.dir
    for value, rx in (
            ("https://127.0.0.1:8080", r"UPSTREAM must be 'http://host:port'"),
            ("http://127.0.0.1", r"UPSTREAM must be"),
            ("http://127.0.0.1:0", r"UPSTREAM must be"),
            ("http://127.0.0.1:70000", r"UPSTREAM must be"),
            ("http://127.0.0.1:8080/luci", r"UPSTREAM must be"),
            ("http://[::1:8080", r"UPSTREAM must be"),
            ("http://no-such-host.invalid:8080",
             r"UPSTREAM http://no-such-host\.invalid:8080: cannot resolve "
             r"no-such-host\.invalid")):
        write_config(os.path.join(d, "config.cfg"),
                     "SMS_PROVIDER='console'\nUPSTREAM='%s'\n" % value)
        rc, out, err = run_once(d, None, ["-c", "config.cfg", "-t"])
        check(rc == 78 and re.search(r"config\.cfg:2: " + rx, err),
              "UPSTREAM=%r: exit %s, %r" % (value, rc, err.strip()[-200:]))
    write_config(os.path.join(d, "config.cfg"),
                 "SMS_PROVIDER='console'\nUPSTREAM_TIMEOUT=0\n")
    rc, out, err = run_once(d, None, ["-c", "config.cfg", "-t"])
    check(rc == 78 and "config.cfg:2: UPSTREAM_TIMEOUT must be 1..600" in err,
          "UPSTREAM_TIMEOUT=0: exit %s, %r" % (rc, err.strip()[-200:]))
    for value in ("http://127.0.0.1:8080/", "http://[::1]:8080",
                  "http://localhost:8080"):
        write_config(os.path.join(d, "config.cfg"),
                     "SMS_PROVIDER='console'\nUPSTREAM='%s'\n" % value)
        rc, out, err = run_once(d, None, ["-c", "config.cfg", "-t"])
        check(rc == 0 and "configuration OK" in out, "UPSTREAM=%r: exit %s,"
              " %r" % (value, rc, err.strip()[-200:]))


SLOW = ("upload", "downloads", "slow")

if __name__ == "__main__":
    sys.exit(harness.main(harness.cases_in(globals()), OUT,
                          "otp_demo proxy mode tests", jobs=2, slow=SLOW))
