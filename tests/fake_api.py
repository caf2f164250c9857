#!/usr/bin/env python3
"""fake_api.py: a local HTTPS fake of the Telnyx "send message" endpoint.

Tests only; Python standard library only.

As a module:

    api = FakeApi(cert, key, api_key="KEY")   # port 0: pick a free port
    api.start()
    api.url            # https://127.0.0.1:PORT/v2/messages
    api.mode = "500"   # see MODES; settable at any time, per test
    ...
    api.requests       # one dict per request received (see _record)
    api.connections    # TCP connections accepted
    api.handshakes     # TLS handshakes completed (new TLS sessions)
    api.handshake_failures
    api.stop()

As a program (prints "listening on PORT", flushed, once it accepts):

    python3 tests/fake_api.py --cert C --key K [--port 0] [--record FILE]
                              [--api-key KEY] [--mode MODE]
                              [--answer-status N] [--answer-body TEXT]
                              [--answer-type TYPE]

--record appends one JSON object per request (one a line) to FILE. A running
fake can be steered over its own socket: GET /_fake/mode?set=MODE, GET
/_fake/answer?status=N&body=TEXT&type=TYPE (mode generic), GET
/_fake/requests (JSON list), GET /_fake/stats; these are not recorded.

What it checks (like Telnyx): method POST (else 405), path /v2/messages (else
404), "Authorization: Bearer <api_key>" (else 401; with api_key None any
non-empty bearer token passes), "Content-Type: application/json" (else 422),
and a JSON object body whose "from", "to" and "text" are strings, "to" in
E.164 (else 422). In mode "ok" a request that passes gets 200 with
{"data": {"id": ..., "to": [{"phone_number": ..., "status": "queued"}]}};
a failed check gets the Telnyx error shape {"errors": [{"code", "title",
"detail"}]}.

Modes (what a request gets, whatever it contains, except "ok"):
    ok        200 + Telnyx success body if the request passes the checks
    NNN       that status (e.g. 401, 403, 422, 500) + Telnyx error body
    429       429 + Retry-After: 1 + error body
    503       503 + Retry-After: 2 + error body
    garbage   200 with a body that is not JSON
    garbage_http  bytes that are not HTTP at all, then close
    huge      200, Content-Length 10 MB of JSON-ish filler, streamed
    reset     part of a 200 response, then the socket is reset (RST)
    silent    read the request, never answer (until stop())
    redirect  302 to /v2/redirected on this fake (a client must not follow)
    slow      answer "ok" after `slow_seconds` (default 3)
    generic   any gateway: accepts every method, path, Content-Type and
              body without checks (verdict "generic") and answers
              `answer_status` (default 200) with `answer_body` (default
              b'{"ok":true}') as `answer_type` (default application/json);
              all three settable at any time, like mode; `answers`, a
              list of statuses, is used up first, one per request (a
              webhook receiver that fails, then recovers)

Every record also has "body_b64", the raw request body in base64, and
"query", the path's query string; "headers" includes Authorization.
api.base_url is https://127.0.0.1:PORT (for gateways with other paths).
"""

import argparse
import base64
import http.server
import json
import re
import socket
import ssl
import struct
import sys
import threading
import time
import urllib.parse

PATH = "/v2/messages"
E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
MODES = ("ok", "garbage", "garbage_http", "huge", "reset", "silent",
         "redirect", "slow", "generic")
HUGE_BYTES = 10 * 1024 * 1024
MAX_REQUEST_BODY = 1024 * 1024


def _error_body(code, title, detail):
    return json.dumps({"errors": [{"code": code, "title": title,
                                   "detail": detail}]}).encode()


class _Server(http.server.ThreadingHTTPServer):
    """Accepts plain TCP; the TLS handshake happens on the handler thread so
    a client that stalls in the handshake cannot block the accept loop."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, addr, fake):
        self.fake = fake
        super().__init__(addr, _Handler)

    def get_request(self):
        sock, addr = self.socket.accept()
        with self.fake._lock:
            self.fake.connections += 1
        return sock, addr

    def finish_request(self, request, client_address):
        request.settimeout(30)
        try:
            tls = self.fake._ctx.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as e:
            with self.fake._lock:
                self.fake.handshake_failures += 1
                self.fake.handshake_errors.append(str(e))
            return
        with self.fake._lock:
            self.fake.handshakes += 1
        tls.settimeout(None)
        try:
            _Handler(tls, client_address, self)
        finally:
            try:
                tls.close()
            except OSError:
                pass

    def shutdown_request(self, request):
        try:
            request.close()
        except OSError:
            pass

    def handle_error(self, request, client_address):
        pass  # clients that vanish are expected (reset, huge, timeouts)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeTelnyx/1.0"
    sys_version = ""

    def log_message(self, fmt, *args):
        pass

    # -- reading -----------------------------------------------------------

    def _read_body(self):
        te = self.headers.get("Transfer-Encoding", "")
        if "chunked" in te.lower():
            chunks, total = [], 0
            while True:
                line = self.rfile.readline(1024)
                if not line:
                    break
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n",
                                                            b""):
                        pass
                    break
                total += size
                if total > MAX_REQUEST_BODY:
                    raise ValueError("body too large")
                chunks.append(self.rfile.read(size))
                self.rfile.readline(1024)
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        if n < 0 or n > MAX_REQUEST_BODY:
            raise ValueError("bad Content-Length")
        return self.rfile.read(n) if n else b""

    # -- answering ---------------------------------------------------------

    def _send(self, status, body, ctype="application/json", extra=()):
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _check(self, body):
        """Returns (status, error body) for a request that fails the
        Telnyx checks, or None if it passes."""
        fake = self.server.fake
        if self.command != "POST":
            return 405, _error_body("10015", "Method not allowed",
                                    "only POST is supported")
        if urllib.parse.urlsplit(self.path).path != PATH:
            return 404, _error_body("10005", "Resource not found",
                                    "unknown path " + self.path)
        auth = self.headers.get("Authorization", "")
        m = re.fullmatch(r"Bearer (\S+)", auth)
        if not m or (fake.api_key is not None and m.group(1) != fake.api_key):
            return 401, _error_body("10009", "Authentication failed",
                                    "missing or wrong API key")
        ctype = self.headers.get("Content-Type", "")
        if ctype.split(";")[0].strip().lower() != "application/json":
            return 422, _error_body("10004", "Missing required parameter",
                                    "Content-Type must be application/json")
        try:
            doc = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, ValueError):
            return 422, _error_body("10004", "Invalid parameter",
                                    "body is not valid JSON")
        if not isinstance(doc, dict):
            return 422, _error_body("10004", "Invalid parameter",
                                    "body must be a JSON object")
        for k in ("from", "to", "text"):
            if not isinstance(doc.get(k), str) or not doc[k]:
                return 422, _error_body("10004", "Missing required parameter",
                                        "'%s' must be a non-empty string" % k)
        if not E164.match(doc["to"]):
            return 422, _error_body("40310", "Invalid 'to' address",
                                    "'to' must be an E.164 number")
        return None

    def _record(self, body, verdict):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            text = body.decode("latin-1")
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        rec = {
            "time": time.time(),
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "header_list": list(self.headers.items()),
            "body": text,
            "body_b64": base64.b64encode(body).decode("ascii"),
            "query": urllib.parse.urlsplit(self.path).query,
            "json": parsed,
            "mode": self.server.fake.mode,
            "verdict": verdict,
        }
        self.server.fake._add(rec)
        return rec

    def _control(self):
        fake = self.server.fake
        u = urllib.parse.urlsplit(self.path)
        q = urllib.parse.parse_qs(u.query)
        if u.path == "/_fake/mode":
            if "set" in q:
                fake.mode = q["set"][0]
            self._send(200, json.dumps({"mode": fake.mode}).encode())
        elif u.path == "/_fake/answer":
            if "status" in q:
                fake.answer_status = int(q["status"][0])
            if "body" in q:
                fake.answer_body = q["body"][0].encode("utf-8")
            if "type" in q:
                fake.answer_type = q["type"][0]
            self._send(200, json.dumps({
                "status": fake.answer_status,
                "body": fake.answer_body.decode("utf-8", "replace"),
                "type": fake.answer_type}).encode())
        elif u.path == "/_fake/requests":
            self._send(200, json.dumps(fake.requests).encode())
        elif u.path == "/_fake/stats":
            self._send(200, json.dumps(fake.stats()).encode())
        else:
            self._send(404, b"{}")

    def _handle(self):
        fake = self.server.fake
        if self.path.startswith("/_fake/"):
            self._control()
            return
        try:
            body = self._read_body()
        except (ValueError, OSError):
            self.close_connection = True
            self._send(400, _error_body("10004", "Bad request",
                                        "unreadable body"))
            return
        mode = fake.mode
        if mode == "generic":
            with fake._lock:
                st, ans, ctype = (fake.answer_status, fake.answer_body,
                                  fake.answer_type)
                if fake.answers:
                    st = fake.answers.pop(0)
            self._record(body, "generic")
            self._send(st, ans, ctype=ctype)
            return
        bad = self._check(body)
        self._record(body, "ok" if bad is None else "%d" % bad[0])

        if mode == "ok":
            if bad:
                self._send(bad[0], bad[1])
                return
            self._ok(body)
        elif mode == "slow":
            fake._stopping.wait(fake.slow_seconds)
            self._send(*bad) if bad else self._ok(body)
        elif mode.isdigit():
            st = int(mode)
            extra = ()
            if st == 429:
                extra = (("Retry-After", "1"),)
            elif st == 503:
                extra = (("Retry-After", "2"),)
            titles = {401: "Authentication failed", 403: "Not permitted",
                      422: "Invalid parameter", 429: "Too many requests",
                      500: "Internal server error", 503: "Service unavailable"}
            self._send(st, _error_body("10004" if st == 422 else "10%03d" % st,
                                       titles.get(st, "Error"),
                                       "fake answering %d" % st), extra=extra)
        elif mode == "garbage":
            self._send(200, b"<html><body>Service temporarily confused"
                       b"</body></html>\n", ctype="text/html")
        elif mode == "garbage_http":
            self.close_connection = True
            self.wfile.write(b"\x00\x01garbage that is not HTTP\r\n\r\n")
        elif mode == "huge":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(HUGE_BYTES))
            self.end_headers()
            head = b'{"data":{"id":"'
            chunk = b"x" * 65536
            try:
                self.wfile.write(head)
                left = HUGE_BYTES - len(head)
                while left > 0 and not fake._stopping.is_set():
                    n = min(left, len(chunk))
                    self.wfile.write(chunk[:n])
                    left -= n
            except OSError:
                pass
        elif mode == "reset":
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: "
                             b"application/json\r\nContent-Length: 200\r\n"
                             b"\r\n{\"data\":{\"id\":\"")
            self.wfile.flush()
            # SO_LINGER 0 makes close() send RST instead of FIN, and the TLS
            # layer gets no close_notify.
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                       struct.pack("ii", 1, 0))
            raw = socket.socket(fileno=self.connection.detach())
            raw.close()
        elif mode == "silent":
            self.close_connection = True
            fake._stopping.wait(120)
        elif mode == "redirect":
            port = self.server.server_address[1]
            self._send(302, b"", extra=(
                ("Location", "https://127.0.0.1:%d/v2/redirected" % port),))
        else:
            self._send(500, _error_body("10000", "fake: unknown mode",
                                        mode))

    def _ok(self, body):
        doc = json.loads(body.decode("utf-8"))
        fake = self.server.fake
        with fake._lock:
            fake._seq += 1
            mid = "40317f2b-0000-4000-8000-%012d" % fake._seq
        self._send(200, json.dumps({"data": {
            "record_type": "message", "id": mid, "direction": "outbound",
            "from": {"phone_number": doc["from"]},
            "to": [{"phone_number": doc["to"], "status": "queued"}],
            "text": doc["text"], "parts": 1}}).encode())

    def do_POST(self):
        self._handle()

    do_GET = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_POST


class FakeApi:
    def __init__(self, cert, key, api_key=None, host="127.0.0.1", port=0,
                 mode="ok", record=None, max_tls=None, slow_seconds=3,
                 answer_status=200, answer_body=b'{"ok":true}',
                 answer_type="application/json"):
        self.cert, self.key, self.api_key = cert, key, api_key
        self.host, self.port = host, port
        self.mode = mode
        # mode "generic": what every request gets
        self.answer_status = answer_status
        self.answer_body = answer_body
        self.answer_type = answer_type
        self.answers = []
        self.record = record
        self.slow_seconds = slow_seconds
        self.requests = []
        self.connections = 0
        self.handshakes = 0
        self.handshake_failures = 0
        self.handshake_errors = []
        self._seq = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._server = None
        self._thread = None
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if max_tls is not None:
            # e.g. ssl.TLSVersion.TLSv1_1: a server too old to talk to.
            ctx.set_ciphers("DEFAULT:@SECLEVEL=0")
            ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            ctx.maximum_version = max_tls
        self._ctx = ctx

    @property
    def url(self):
        return "https://127.0.0.1:%d%s" % (self.port, PATH)

    @property
    def base_url(self):
        return "https://127.0.0.1:%d" % self.port

    def start(self):
        self._server = _Server((self.host, self.port), self)
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        daemon=True)
        self._thread.start()
        return self.port

    def stop(self):
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def _add(self, rec):
        with self._cond:
            self.requests.append(rec)
            self._cond.notify_all()
        if self.record:
            with self._lock:
                with open(self.record, "a", encoding="utf-8") as f:
                    f.write(json.dumps(rec) + "\n")

    def count(self):
        with self._lock:
            return len(self.requests)

    def wait_requests(self, n, timeout=5.0):
        """Waits until at least n requests were received; returns the count."""
        end = time.monotonic() + timeout
        with self._cond:
            while len(self.requests) < n:
                left = end - time.monotonic()
                if left <= 0:
                    break
                self._cond.wait(left)
            return len(self.requests)

    def stats(self):
        with self._lock:
            return {"mode": self.mode, "requests": len(self.requests),
                    "connections": self.connections,
                    "handshakes": self.handshakes,
                    "handshake_failures": self.handshake_failures}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cert", required=True)
    ap.add_argument("--key", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record", help="append one JSON line per request")
    ap.add_argument("--api-key", help="expected bearer token (default: any)")
    ap.add_argument("--mode", default="ok")
    ap.add_argument("--answer-status", type=int, default=200,
                    help="mode generic: the status every request gets")
    ap.add_argument("--answer-body", default='{"ok":true}',
                    help="mode generic: the body every request gets")
    ap.add_argument("--answer-type", default="application/json",
                    help="mode generic: the answer's Content-Type")
    a = ap.parse_args(argv)
    api = FakeApi(a.cert, a.key, api_key=a.api_key, host=a.host, port=a.port,
                  mode=a.mode, record=a.record,
                  answer_status=a.answer_status,
                  answer_body=a.answer_body.encode("utf-8"),
                  answer_type=a.answer_type)
    port = api.start()
    print("listening on %d" % port, flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        api.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
