#!/usr/bin/env python3
"""framing.py: strict HTTP/1.1 framing (RFC 9112), sent straight at the
server the way a request-smuggling tool does.

    OTP_BIN=build/otp_demo python3 tests/attack/framing.py [-k NAME]

Every variant below is a request whose end a lenient parser and a proxy
may place differently; most carry a second, smuggled request
(GET /smuggled, a 404) where one of the two readings would find it. Rows
about headers go to GET /healthz, which reads no body (so a body the
server does not see is read as the next request); rows about chunked
bodies go to POST /request, whose handler reads the body.
Each must get exactly one answer, 400, and then the server must close the
connection: no second answer, and never the 404. A control row (two valid
pipelined requests) proves the harness sees a second answer when there is
one. After all rows the server must still serve GET / and exit cleanly.

VARIANTS is shared with desync.py, which sends the same rows through
nginx and HAProxy. Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import os
import socket
import sys

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
N = b"%d" % len(SMUGGLED)
HEX = b"%x" % len(SMUGGLED)
FORM = b"Content-Type: application/x-www-form-urlencoded\r\n"


def req(headers, body=b"", method=b"GET", path=b"/healthz",
        version=b"HTTP/1.1"):
    return (method + b" " + path + b" " + version + b"\r\nHost: 127.0.0.1"
            b"\r\n" + headers + b"\r\n" + body)


def post(headers, body):
    """A form POST to /request, whose handler reads the body."""
    return req(FORM + headers, body, b"POST", b"/request")


def chunked(size_line, data=SMUGGLED, tail=b"\r\n0\r\n\r\n"):
    return post(b"Transfer-Encoding: chunked\r\n",
                size_line + b"\r\n" + data + tail)


def smuggle(head):
    """GET /healthz whose last header line is head and the length of
    SMUGGLED, which follows as its body."""
    return req(head + N + b"\r\n", SMUGGLED)


FILL = b"".join(b"X-Fill-%02d: a\r\n" % i for i in range(63))

# (name, bytes). Host plus 63 fillers are 64 header lines, civetweb's
# limit (MG_MAX_HEADERS): the 65th was dropped without a word.
VARIANTS = [
    ("65th header is Content-Length", smuggle(FILL + b"Content-Length: ")),
    ("65 headers", req(FILL + b"X-Fill-99: a\r\n", b"", b"GET", b"/")),
    ("obs-fold before Content-Length",
     smuggle(b"X-Folded: a\r\n b\r\nContent-Length: ")),
    ("obs-fold with HTAB", smuggle(b"X-Folded: a\r\n\tb\r\nContent-Length: ")),
    ("first header line starts with SP", smuggle(b" Content-Length: ")),
    ("two Content-Length, 0 first",
     smuggle(b"Content-Length: 0\r\nContent-Length: ")),
    ("two Content-Length, same value",
     smuggle(b"Content-Length: " + N + b"\r\nContent-Length: ")),
    ("Content-Length list", req(b"Content-Length: " + N + b", " + N +
                                b"\r\n", SMUGGLED)),
    ("Content-Length 0x hex",
     req(b"Content-Length: 0x" + HEX + b"\r\n", SMUGGLED)),
    ("Content-Length +N", smuggle(b"Content-Length: +")),
    ("Content-Length -1", req(b"Content-Length: -1\r\n", SMUGGLED)),
    ("Content-Length empty", req(b"Content-Length: \r\n", SMUGGLED)),
    ("Content-Length with trailing junk",
     req(b"Content-Length: " + N + b"x\r\n", SMUGGLED)),
    ("Content-Length overflowing int64",
     req(b"Content-Length: 99999999999999999999\r\n", SMUGGLED)),
    ("space before the colon", smuggle(b"Content-Length : ")),
    ("tab before the colon", smuggle(b"Content-Length\t: ")),
    ("Transfer-Encoding and Content-Length",
     req(b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
         b"0\r\n\r\n" + SMUGGLED)),
    ("Transfer-Encoding identity",
     smuggle(b"Transfer-Encoding: identity\r\nContent-Length: ")),
    ("Transfer-Encoding gzip, chunked",
     req(b"Transfer-Encoding: gzip, chunked\r\n", b"0\r\n\r\n" + SMUGGLED)),
    ("Transfer-Encoding chunked, identity",
     req(b"Transfer-Encoding: chunked, identity\r\n",
         b"0\r\n\r\n" + SMUGGLED)),
    ("two Transfer-Encoding lines",
     req(b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n",
         b"0\r\n\r\n" + SMUGGLED)),
    ("Transfer-Encoding xchunked",
     req(b"Transfer-Encoding: xchunked\r\n", b"0\r\n\r\n" + SMUGGLED)),
    ("Transfer-Encoding in HTTP/1.0",
     req(b"Transfer-Encoding: chunked\r\n", b"0\r\n\r\n" + SMUGGLED,
         version=b"HTTP/1.0")),
    ("chunk size 7fffffffffffffff", chunked(b"7fffffffffffffff")),
    ("chunk size ffffffffffffffffff", chunked(b"ffffffffffffffffff")),
    ("chunk size over the body cap (0x401)", chunked(b"401", b"p" * 1025)),
    ("chunk size 0x5", chunked(b"0x" + HEX)),
    ("chunk size with a space", chunked(HEX + b" ")),
    ("chunk size empty", chunked(b"")),
    ("chunk size negative", chunked(b"-1")),
    ("chunk line ends in bare LF",
     post(b"Transfer-Encoding: chunked\r\n",
          HEX + b"\n" + SMUGGLED + b"\r\n0\r\n\r\n")),
    ("chunk extension with a bare LF", chunked(HEX + b";a\nb")),
    ("chunk data longer than its size",
     post(b"Transfer-Encoding: chunked\r\n",
          b"3\r\nphone\r\n0\r\n\r\n" + SMUGGLED)),
    ("trailer line ends in bare LF",
     post(b"Transfer-Encoding: chunked\r\n",
          b"0\r\nX-T: a\n\r\n" + SMUGGLED)),
    ("two Host headers", smuggle(b"Host: evil.example\r\nContent-Length: ")),
    ("header name with a bad character", smuggle(b"Content-Length(: ")),
    ("header line without a colon", smuggle(b"Content-Length ")),
    ("bare CR inside a header", smuggle(b"X-A: a\rContent-Length: ")),
]

# Two valid pipelined requests: the harness must see both answers.
CONTROL = (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" + SMUGGLED)


def send(port, data, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    try:
        s.sendall(data)
        return h.read_answers(s, timeout)
    except OSError as e:
        return [], True, ("%s" % e).encode()
    finally:
        s.close()


def main():
    a, t = h.script_checks("framing")
    if t.failed:
        return t.done()
    ctx = h.Ctx("framing", OUT)
    try:
        srv = ctx.start_server(base=h.CONSOLE)
        answers, closed, _ = send(srv.port, CONTROL, timeout=2.0)
        t.check("control: two pipelined requests get two answers (200, 404)",
                h.statuses(answers) == [200, 404],
                "got %s" % h.statuses(answers))
        for name, data in VARIANTS:
            if a.k and not any(k in name for k in a.k):
                continue
            answers, closed, rest = send(srv.port, data)
            st = h.statuses(answers)
            why = "answers %s, %s%s" % (
                st, "closed" if closed else "left open",
                ", %d bytes unparsed" % len(rest) if rest else "")
            t.check("%s: 400 and close" % name,
                    st == [400] and closed and not rest, why)
            if not srv.alive():
                t.check("server alive after %s" % name, False)
                break
        try:
            st = ctx.browser("after").get("/").status
        except h.Fail as e:
            st = str(e)
        t.check("GET / still served", st == 200, "got %s" % st)
    finally:
        problems = ctx.close()
    t.check("server exits cleanly", not problems, "; ".join(problems))
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
