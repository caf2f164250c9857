#!/usr/bin/env python3
"""tests/docs_test.py: the documentation says what the program does.

Each key in config.cfg.example has a comment block that ends in
"Default: <value>". Where that value is a literal (a quoted string, a number,
True or False), it must be the default the binary itself prints with
`otp_demo --defaults`. Every key of the program must be documented with a
default, and every key the example documents must exist.
"""
import os
import re
import subprocess
import sys

sys.dont_write_bytecode = True      # no tests/__pycache__ in the tree
import harness as h  # noqa: E402

T = h.Checks("docs")


def check(ok, what):
    T.check(what, ok)


def literal(text):
    """The first literal in text: 'x', "x", a number, True/False; or None."""
    m = re.match(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+|True|False)""",
                 text)
    if not m:
        return None
    tok = m.group(1)
    rest = text[m.end():]
    # "'telnyx' when API_KEY is set, else 'console'": a rule, not a value.
    if re.match(r"\s*(when|if|unless|for)\b", rest):
        return None
    if tok[0] in "'\"":
        return "'" + re.sub(r"\\(.)", r"\1", tok[1:-1]).replace("\\", "\\\\") \
            .replace("'", "\\'") + "'"
    return tok


def program_defaults(binary=None):
    out = subprocess.run([binary or h.BIN, "--defaults"], check=True,
                         capture_output=True, text=True).stdout
    return dict(line.split("=", 1) for line in out.splitlines())


def all_defaults():
    """Every key either build has: the WITH_REDIS build's are the plain
    build's and the STORE_ keys (config.cfg.example documents them all)."""
    prog = program_defaults()
    redis_bin = os.environ.get("OTP_REDIS_BIN")
    if not redis_bin:
        return prog
    full = program_defaults(redis_bin)
    extra = sorted(set(full) - set(prog))
    check(set(prog) <= set(full) and all(k.startswith("STORE_")
                                         for k in extra),
          "the WITH_REDIS build has every key and the STORE_ keys more "
          "(%s)" % ", ".join(extra))
    return full


def documented():
    """{key: its documented default, or None}. A block of comments names
    one default ("Default: X") for the key lines after it, or one per key
    ("Defaults: A, B and C", in the order of the key lines)."""
    docs, block, keys = {}, [], []

    def flush():
        text = " ".join(block)
        d = re.search(r"Defaults?:\s*(.*)", text)
        values = []
        if d and d.group(0).startswith("Defaults:") and len(keys) > 1:
            values = split_values(d.group(1))
        for i, key in enumerate(keys):
            if d is None:
                docs.setdefault(key, None)
            elif len(values) == len(keys):
                docs[key] = values[i]
            else:
                docs[key] = d.group(1)

    with open(os.path.join(h.ROOT, "config.cfg.example")) as f:
        for line in f:
            m = re.match(r"#?([A-Z][A-Z0-9_]*)=", line)
            if m and not line.startswith("# "):
                keys.append(m.group(1))
                continue
            if keys:
                flush()
                block, keys = [], []
            if line.startswith("#"):
                block.append(line[1:].strip())
            else:
                block = []
    if keys:
        flush()
    return docs


def split_values(text):
    """"'a', 'b' and 'c'" -> ["'a'", "'b'", "'c'"] (literals only)."""
    out = []
    rest = text
    while True:
        m = re.match(r"""\s*('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|-?\d+|True|False)""",
                     rest)
        if not m:
            return out
        out.append(m.group(1))
        rest = rest[m.end():]
        sep = re.match(r"\s*(,|and)\s*", rest)
        if not sep:
            return out
        rest = rest[sep.end():]


def main():
    prog = all_defaults()
    docs = documented()
    check(len(prog) > 30, "otp_demo --defaults prints every key (%d)" % len(prog))
    for key, value in prog.items():
        if key not in docs:
            check(False, "%s is in config.cfg.example" % key)
            continue
        text = docs[key]
        if text is None:
            check(False, "%s: config.cfg.example states its default" % key)
            continue
        lit = literal(text)
        if lit is None:
            check(True, "%s: default described in words (%s)" % (key, text[:40]))
            continue
        check(lit == value, "%s: documented default %s is the program's %s"
              % (key, lit, value))
    for key in docs:
        if key.startswith("MESSAGE_"):
            continue
        check(key in prog, "%s in config.cfg.example is a key the program has"
              % key)
    return T.done()


if __name__ == "__main__":
    sys.exit(main())
