#!/usr/bin/env python3
"""desync.py: request smuggling through real proxies. Every framing variant
of framing.py goes through Debian's nginx and HAProxy, configured exactly
as README documents them, and the server must never see a second
(smuggled) request, nor a response reach the wrong client.

    OTP_BIN=build/otp_demo python3 tests/attack/desync.py [-k NAME]

Set-up, all on loopback: otp_demo (console sender, TRUSTED_PROXY
127.0.0.1); between it and the proxies a recording relay (every upstream
connection's bytes, both ways); nginx and HAProxy in the foreground with
README's snippets (the fenced blocks that name this file; only the
addresses and ports are replaced), and HAProxy once more with
"http-reuse always", which shares server connections between clients
(the setting that turns one desync into answers for strangers).

For each proxy and each variant, the attacker sends the variant and then
GET /healthz on the same connection, while two victims send GET /healthz
on their own connections. Checks:
  - no client ever gets the smuggled request's answer (404), and each
    victim gets exactly one 200;
  - on every upstream connection the server sent at most as many answers
    as the proxy sent requests (counted by a strict parser of what the
    proxy sent), and never the 404: the server saw no request that the
    proxy did not frame.
The variant itself sent straight to the server gets 400 and a close
(framing.py). Prints "ok"/"FAIL" lines and "N passed, M failed".
"""

import os
import shutil
import socket
import sys
import tempfile
import threading
import time

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import harness as h  # noqa: E402
import framing  # noqa: E402

OUT = os.path.join(h.ROOT, "tests", "out", "attack")
FOLLOW = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
MARK = "tests/attack/desync.py"


# ---- the recording relay -----------------------------------------------------

class Relay:
    """Listens on a free port; each connection is piped to the server.
    conns: [(up bytearray, down bytearray)], in accept order."""

    def __init__(self, target_port):
        self.target = target_port
        self.lsock = socket.socket()
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen(64)
        self.port = self.lsock.getsockname()[1]
        self.conns = []
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self.accept, daemon=True).start()

    def accept(self):
        while not self.stopping:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            try:
                s = socket.create_connection(("127.0.0.1", self.target), 5)
            except OSError:
                c.close()
                continue
            rec = (bytearray(), bytearray())
            with self.lock:
                self.conns.append(rec)
            for a, b, buf in ((c, s, rec[0]), (s, c, rec[1])):
                threading.Thread(target=self.pump, args=(a, b, buf),
                                 daemon=True).start()

    def pump(self, a, b, buf):
        try:
            while True:
                d = a.recv(65536)
                if not d:
                    break
                with self.lock:
                    buf.extend(d)
                b.sendall(d)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def mark(self):
        with self.lock:
            return len(self.conns)

    def since(self, n):
        with self.lock:
            return [(bytes(u), bytes(d)) for u, d in self.conns[n:]]

    def stop(self):
        self.stopping = True
        self.lsock.close()


def framed_requests(data):
    """The requests in what a proxy sent upstream, framed strictly:
    returns ([request line], bytes left that are no complete request)."""
    n = []
    while data:
        end = data.find(b"\r\n\r\n")
        if end < 0:
            break
        head = data[:end].split(b"\r\n")
        body = data[end + 4:]
        request_line = head[0]
        hdrs = {}
        for line in head[1:]:
            k, _, v = line.partition(b":")
            hdrs.setdefault(k.strip().lower(), []).append(v.strip())
        te = hdrs.get(b"transfer-encoding")
        cl = hdrs.get(b"content-length")
        if te:
            pos = 0
            while True:
                eol = body.find(b"\r\n", pos)
                if eol < 0:
                    return n, data
                size = int(body[pos:eol].split(b";")[0], 16)
                pos = eol + 2
                if size == 0:
                    t = body.find(b"\r\n", pos)
                    while t > pos:
                        pos = t + 2
                        t = body.find(b"\r\n", pos)
                    if t < 0:
                        return n, data
                    pos += 2
                    break
                pos += size + 2
            data = body[pos:]
        else:
            length = int(cl[0]) if cl else 0
            if len(body) < length:
                break
            data = body[length:]
        n.append(request_line)
    return n, data


# ---- the proxies -------------------------------------------------------------

def proxy(label, argv, port):
    """A proxy in the foreground, its output in OUT/desync-LABEL/."""
    srv = h.Server(os.path.join(OUT, "desync-" + label), command=argv,
                   listen_re=None, stdout="file", stderr="file")
    srv.port = port
    return srv.start()


def start_proxies(snips, relay_port, tmp):
    """[(label, proxy server)]: nginx and HAProxy as README says, HAProxy
    with http-reuse always."""
    out = []
    ha = shutil.which("haproxy") or "/usr/sbin/haproxy"
    port = h.free_port()
    snippet = snips["nginx"].replace("listen 80;", "listen 127.0.0.1:%d;"
                                     % port)
    snippet = snippet.replace("127.0.0.1:5000", "127.0.0.1:%d" % relay_port)
    ng = h.start_nginx(os.path.join(OUT, "desync-nginx"), tmp, snippet, 256)
    ng.port = port
    out.append(("nginx", ng))
    for label, extra in (("haproxy", ""),
                         ("haproxy-reuse-always",
                          "    http-reuse always\n")):
        port = h.free_port()
        cfg = snips["haproxy"].replace("bind :80", "bind 127.0.0.1:%d"
                                       % port)
        cfg = cfg.replace("127.0.0.1:5000", "127.0.0.1:%d" % relay_port)
        cfg = cfg.rstrip("\n") + "\n" + extra
        conf = os.path.join(tmp, label + ".cfg")
        with open(conf, "w") as f:
            f.write(cfg)
        out.append((label, proxy(label, [ha, "-db", "-f", conf], port)))
    return out


# ---- one variant through one proxy ---------------------------------------------

def victim(port, results, i):
    try:
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(FOLLOW)
        answers, _, _ = h.read_answers(s, 3.0, want=1)
        s.close()
        results[i] = h.statuses(answers)
    except OSError as e:
        results[i] = "error %s" % e


def through(proxy_port, relay, data):
    """Returns a list of problems (empty: held)."""
    problems = []
    mark = relay.mark()
    s = socket.create_connection(("127.0.0.1", proxy_port), timeout=10)
    victims = [None, None]
    try:
        s.sendall(data)
        time.sleep(0.2)
        threads = [threading.Thread(target=victim,
                                    args=(proxy_port, victims, i))
                   for i in range(2)]
        for t in threads:
            t.start()
        try:
            s.sendall(FOLLOW)
        except OSError:
            pass            # the proxy closed after its answer: fine
        answers, _, _ = h.read_answers(s, 1.5, want=2)
        for t in threads:
            t.join(10)
    finally:
        s.close()
    st = h.statuses(answers)
    for i, v in enumerate(victims):
        if v != [200]:
            problems.append("victim %d got %s, want [200]" % (i + 1, v))
    time.sleep(0.1)
    # Some proxies read the smuggled bytes as the attacker's next request
    # themselves and forward it as one: then GET /smuggled is a request
    # the proxy framed, and its 404 goes back to the attacker who sent
    # it. What must never happen: the server answering more than the
    # proxy framed, or a 404 for a request the proxy never framed.
    proxied = 0
    for k, (up, down) in enumerate(relay.since(mark)):
        sent, _ = framed_requests(up)
        own = sum(1 for r in sent if b" /smuggled " in r)
        proxied += own
        answers, _ = h.parse_answers(down)
        final = [x for x in h.statuses(answers) if x >= 200]
        if final.count(404) > own:
            problems.append("upstream connection %d: the server answered "
                            "a smuggled request (404) that the proxy did "
                            "not frame (it sent %s)" % (k, sent))
        if len(final) > len(sent):
            problems.append("upstream connection %d: %d answers to %d "
                            "requests the proxy sent (%s)"
                            % (k, len(final), len(sent), final))
    if st.count(404) > proxied:
        problems.append("the attacker got the answer to a request the "
                        "proxy never framed (%s)" % st)
    if len([x for x in st if x >= 200]) > 2 + proxied:
        problems.append("the attacker got %d answers to %d requests (%s)"
                        % (len(st), 2 + proxied, st))
    return problems, st, victims, proxied


def main():
    a, t = h.script_checks("desync")
    if t.failed:
        return t.done()
    for tool in ("nginx", "haproxy"):
        if not t.check("%s is installed" % tool,
                       shutil.which(tool) or os.access("/usr/sbin/" + tool,
                                                       os.X_OK),
                       "tools/deps.sh attack"):
            return t.done()
    snips = h.readme_snippets(MARK)
    if not t.check("README has the nginx and haproxy snippets naming %s"
                   % MARK, "nginx" in snips and "haproxy" in snips,
                   "found %s" % sorted(snips)):
        return t.done()

    tmp = tempfile.mkdtemp(prefix="otp-desync.")
    ctx = h.Ctx("desync", OUT)
    srv = ctx.start_server({"TRUSTED_PROXY": "127.0.0.1"}, base=h.CONSOLE)
    relay = Relay(srv.port)
    proxies = start_proxies(snips, relay.port, tmp)
    report = open(os.path.join(OUT, "desync.txt"), "w")
    try:
        for label, px in proxies:
            if not t.check("%s starts" % label, h.wait_port(px.port),
                           px.log()[-400:]):
                continue
            for name, data in framing.VARIANTS:
                if a.k and not any(k in name for k in a.k):
                    continue
                problems, st, victims, proxied = through(px.port, relay,
                                                         data)
                report.write("%-22s %-45s attacker %s victims %s%s%s\n" % (
                    label, name, st, victims,
                    " (the proxy itself framed /smuggled)" if proxied
                    else "",
                    "  PROBLEM: " + "; ".join(problems) if problems else ""))
                report.flush()
                t.check("%s: %s" % (label, name), not problems,
                        "; ".join(problems))
            t.check("%s: otp_demo still serves" % label, srv.alive())
    finally:
        report.close()
        for _, px in proxies:
            px.stop()
        relay.stop()
        problems = ctx.close()
        t.check("otp_demo exits cleanly", not problems, "; ".join(problems))
        shutil.rmtree(tmp, ignore_errors=True)
    return t.done()


if __name__ == "__main__":
    sys.exit(main())
