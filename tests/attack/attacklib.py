"""attacklib.py: what the transport attack tests share (Python stdlib only).

    Checks        counts "ok NAME" / "FAIL NAME: why" lines and ends with
                  "N passed, M failed", like the other suites
    start_otp     the real binary (OTP_BIN) on a free loopback port with
                  the default config plus overrides, through
                  tests/integration.py's Server (its log is kept in
                  tests/out/attack/NAME/)
    read_answers  every HTTP response on a socket until it closes, parsed
                  by Content-Length or chunked framing, and whether the
                  server closed the connection
"""

import os
import re
import socket
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.dirname(HERE)
ROOT = os.path.dirname(TESTS)
sys.path.insert(0, TESTS)
sys.dont_write_bytecode = True      # no __pycache__ in the tree

import integration as it  # noqa: E402

OUT = os.path.join(TESTS, "out", "attack")
it.OUT = OUT                         # Ctx() makes its directory under OUT
BIN = it.BIN


class Checks:
    def __init__(self, suite):
        self.suite = suite
        self.passed = self.failed = 0

    def check(self, name, cond, why=""):
        if cond:
            self.passed += 1
            print("ok %s: %s" % (self.suite, name), flush=True)
        else:
            self.failed += 1
            print("FAIL %s: %s%s" % (self.suite, name,
                                     ": " + why if why else ""), flush=True)
        return bool(cond)

    def done(self):
        print("%d passed, %d failed" % (self.passed, self.failed), flush=True)
        return 1 if self.failed else 0


def raise_fd_limit(want=8192):
    """Hundreds of attacking sockets need more than a 1024 soft limit."""
    try:
        import resource
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < want:
            new = want if hard == resource.RLIM_INFINITY else min(want, hard)
            resource.setrlimit(resource.RLIMIT_NOFILE, (new, hard))
    except (ImportError, ValueError, OSError):
        pass


class Otp:
    """otp_demo with the default config (console sender) plus overrides,
    on a free port. listen_re finds the port in its 'listening on' line."""

    def __init__(self, name, overrides=None, listen_re=None, binary=None):
        self.ctx = it.Ctx(name)
        cfg = {"LISTEN": "127.0.0.1:0", "SMS_PROVIDER": "console"}
        cfg.update(overrides or {})
        self.ctx.cfg = cfg
        self.binary = binary or BIN
        self.srv = it.Server(self.ctx, it.config_text(cfg))
        self._start(listen_re or
                    r"listening on (https?)://127\.0\.0\.1:([0-9]+)")
        self.ctx.server = self.srv
        self.port = self.srv.port
        self.pid = self.srv.proc.pid

    def _start(self, pattern):
        """Server.start(), with any binary and 'listening on' pattern (an
        IPv6 listener)."""
        srv = self.srv
        with open(os.path.join(srv.dir, "config.cfg"), "w") as f:
            f.write(srv.text)
        srv.errf = open(os.path.join(srv.dir, "stderr.log"), "w")
        srv.outf = open(os.path.join(srv.dir, "stdout.log"), "w")
        srv.proc = subprocess.Popen(
            [self.binary, "-c", "config.cfg"], cwd=srv.dir,
            env=it.clean_env(), stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        with it.LIVE_LOCK:
            it.LIVE.add(srv.proc)
        srv.readers = [
            threading.Thread(target=srv._read, daemon=True,
                             args=(srv.proc.stderr, srv.err_lines,
                                   srv.errf)),
            threading.Thread(target=srv._read, daemon=True,
                             args=(srv.proc.stdout, srv.out_lines,
                                   srv.outf))]
        for t in srv.readers:
            t.start()
        found = srv.wait_log(pattern, timeout=it.START_TIMEOUT)
        if found is None:
            raise it.Fail("no %r line on stderr: %s" % (
                pattern, it.short(srv.log()[-300:], 300)))
        m = found[1]
        srv.scheme, srv.port = m.group(1), int(m.group(2))

    def rss_kib(self):
        with open("/proc/%d/status" % self.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return -1

    def stop(self):
        """SIGTERM; returns a list of problems (unclean exit, leaks)."""
        try:
            self.ctx.finish(False)
        except it.Fail as e:
            return [str(e)]
        return []


# ---- reading answers ---------------------------------------------------------

STATUS_RE = re.compile(rb"HTTP/1\.[01] ([0-9]{3})[^\r\n]*\r?\n")


def parse_answers(data):
    """Splits data into responses: [(status, head bytes)], and the bytes
    left over that are no complete response."""
    out = []
    while data:
        m = STATUS_RE.match(data)
        end = data.find(b"\r\n\r\n")
        if not m or end < 0:
            break
        head = data[:end]
        rest = data[end + 4:]
        status = int(m.group(1))
        hdrs = {}
        for line in head.split(b"\r\n")[1:]:
            k, _, v = line.partition(b":")
            hdrs.setdefault(k.strip().lower(), v.strip())
        if 100 <= status < 200:
            out.append((status, head))
            data = rest
            continue
        if hdrs.get(b"transfer-encoding", b"").lower() == b"chunked":
            pos, ok = 0, False
            while True:
                eol = rest.find(b"\r\n", pos)
                if eol < 0:
                    break
                size = int(rest[pos:eol].split(b";")[0] or b"0", 16)
                pos = eol + 2
                if size == 0:
                    t = rest.find(b"\r\n", pos)
                    while t > pos:        # trailer lines
                        pos = t + 2
                        t = rest.find(b"\r\n", pos)
                    if t == pos:
                        pos += 2
                        ok = True
                    break
                pos += size + 2
                if pos > len(rest):
                    break
            if not ok:
                break
            data = rest[pos:]
        elif b"content-length" not in hdrs:
            # No length: the body runs until the server closes
            # (civetweb's own error answers).
            out.append((status, head))
            data = b""
            break
        else:
            n = int(hdrs.get(b"content-length", b"0") or b"0")
            if len(rest) < n:
                break
            data = rest[n:]
        out.append((status, head))
    return out, data


def read_answers(sock, timeout=5.0, want=None):
    """Reads until the peer closes (or timeout s pass with nothing new, or
    want responses are complete). Returns (responses, closed, leftover):
    closed is True when the server closed the connection."""
    data = b""
    end = time.monotonic() + timeout
    closed = False
    while True:
        left = end - time.monotonic()
        if left <= 0:
            break
        sock.settimeout(left)
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        except OSError:
            closed = True          # reset: closed, too
            break
        if not chunk:
            closed = True
            break
        data += chunk
        if want is not None and len(parse_answers(data)[0]) >= want:
            break
    answers, rest = parse_answers(data)
    return answers, closed, rest


def statuses(answers):
    return [s for s, _ in answers]
