#!/usr/bin/env python3
"""sizes.py MAP: where the bytes of a static link go, per library.

    python3 deps/static/sizes.py build/static/ARCH/otp_demo.map

Reads a GNU ld link map (-Wl,-Map) and adds up the input sections that end
up in the file (code, read-only data, data; not .bss, not debug info) by
the archive or object they came from: libc, libcurl, libmbedcrypto, ...,
civetweb.o, otp_demo.o. Sections dropped by --gc-sections are listed apart
in the map and not counted. Alignment padding is not counted either, so
the total is a little under the stripped file's size. make static prints
this when a binary is over its budget. Link-time optimised code is one
lump: with mbedTLS and libcurl built -flto (mk/static.mk STATIC_DEPS_LTO)
it holds them too.
"""

import collections
import os
import re
import sys

# Output sections whose bytes are in the file.
KEEP = re.compile(r"^\.(text|rodata|data|init_array|fini_array|got|sdata|"
                  r"init|fini|ctors|dtors|tdata|ARM\.exidx|eh_frame|"
                  r"MIPS\.abiflags|rel|rela)")
LINE = re.compile(r"^ (\S+)?\s+0x[0-9a-f]+\s+0x([0-9a-f]+)\s+(\S+)$")


def owner(path):
    m = re.search(r"([^/]+\.a)\(", path)
    if m:
        return m.group(1)
    if ".ltrans" in path:   # link-time optimised: one object of all four
        return "otp_demo.o + civetweb.o + mbedTLS + libcurl (LTO)"
    return os.path.basename(path)


def main(path):
    sizes = collections.Counter()
    in_memory_map = False
    pending = None          # a long section name, alone on its line
    with open(path) as f:
        for line in f:
            if line.startswith("Linker script and memory map"):
                in_memory_map = True
                continue
            if not in_memory_map:
                continue    # "Discarded input sections" come before
            line = line.rstrip("\n")
            if re.match(r"^ \.\S+$", line):
                pending = line.strip()
                continue
            m = LINE.match(line)
            if not m:
                pending = None
                continue
            name = m.group(1) or pending
            pending = None
            if name and KEEP.match(name):
                sizes[owner(m.group(3))] += int(m.group(2), 16)
    total = sum(sizes.values())
    for who, n in sizes.most_common():
        print("%8.1f KiB  %5.1f%%  %s" % (n / 1024, 100.0 * n / total, who))
    print("%8.1f KiB          total" % (total / 1024))


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: sizes.py MAP")
    main(sys.argv[1])
