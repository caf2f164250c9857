#!/usr/bin/python3
"""gen_numbering.py: otp_demo's numbering table from libphonenumber's metadata.

    tools/gen_numbering.py           write numbering.h and tests/numbering_data.h
    tools/gen_numbering.py --check   compare them with what it would write;
                                     exit 1 and say which differs

The metadata comes from Debian's python3-phonenumbers (the Python port of
Google's libphonenumber, Apache License 2.0), version PIN below: a
different version stops the generator, so the committed files always name
the metadata they hold. To move to another version, install it, change
PIN, run this, and review the diff (tests/numbering_test.py compares the
committed files with this script's output in make test).

numbering.h (compiled into otp_demo) holds, per region (ISO 3166 code):
its calling code, national trunk prefix, international prefix and the
possible lengths of its national numbers; and, for calling codes that
several regions share (+1, +7, +44, ...), the national-number prefixes
that belong to a region other than the code's main one (+1 876: JM). The
prefixes are read out of the region's patterns (its leading digits, else
its number-type patterns) and each one is checked against the library's
own region_code_for_number on sample numbers; a prefix the library gives
to another region is split or dropped.

tests/numbering_data.h (unit tests only, not in the binary) holds each
region's example number as the library formats it, and the NANP area codes
the library knows as geographic or as special services, to test otp_demo's
hand-written NANP rules against the data.

Debian's /usr/bin/python3 sees the package; another python3 first on PATH
(pyenv) may not, so this re-runs itself under /usr/bin/python3 then.
"""

import os
import random
import sys

PIN = "8.12.57"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
OUT_C = os.path.join(ROOT, "numbering.h")
OUT_TEST = os.path.join(ROOT, "tests", "numbering_data.h")

try:
    import phonenumbers as pn
    from phonenumbers import PhoneNumberType as T
    from phonenumbers.phonemetadata import PhoneMetadata
except ImportError:
    if os.path.exists("/usr/bin/python3") and \
            os.path.realpath(sys.executable) != \
            os.path.realpath("/usr/bin/python3") and \
            not os.environ.get("GEN_NUMBERING_REEXEC"):
        os.environ["GEN_NUMBERING_REEXEC"] = "1"
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    sys.stderr.write("gen_numbering: no phonenumbers module: install "
                     "Debian's python3-phonenumbers (tools/deps.sh test)\n")
    sys.exit(2)

try:
    import re._parser as sre_parse
    import re._constants as sre_c
except ImportError:  # Python before 3.11
    import sre_parse
    import sre_constants as sre_c

# Number types whose patterns place a region's numbers (as the library's
# region_code_for_number does, for regions without leading digits).
TYPES = ["fixed_line", "mobile", "toll_free", "premium_rate", "shared_cost",
         "personal_number", "voip", "pager", "uan", "voicemail"]
MAX_PREFIX = 6          # digits in a region prefix at most
WIDE = 7                # a character class this wide ends a prefix
SAMPLES = 24            # random fills per prefix and length, besides 0..9


def fail(msg):
    sys.stderr.write("gen_numbering: %s\n" % msg)
    sys.exit(1)


# ---- regular expressions to prefixes -----------------------------------------

def class_chars(items):
    out = set()
    for op, av in items:
        if op == sre_c.LITERAL:
            out.add(chr(av))
        elif op == sre_c.RANGE:
            out.update(chr(c) for c in range(av[0], av[1] + 1))
        elif op == sre_c.CATEGORY and av == sre_c.CATEGORY_DIGIT:
            out.update("0123456789")
        else:
            raise ValueError("class item %r" % ((op, av),))
    return sorted(out)


def prefixes(pattern, maxlen=MAX_PREFIX, wide=WIDE):
    """The digit strings that begin the numbers pattern matches, each cut
    where the pattern stops being specific: at \\d, at a class of at least
    `wide` digits, at an open repeat, or at maxlen digits."""

    def seq(nodes, states):
        for node in nodes:
            states = step(node, states)
        return states

    def step(node, states):
        op, av = node
        live = {s for s in states if not s[1]}
        out = states - live
        if not live:
            return states
        if op == sre_c.LITERAL:
            for p, _ in live:
                q = p + chr(av)
                out.add((q, len(q) >= maxlen))
        elif op == sre_c.IN:
            chars = class_chars(av)
            for p, _ in live:
                if len(chars) >= wide:
                    out.add((p, True))
                else:
                    for ch in chars:
                        q = p + ch
                        out.add((q, len(q) >= maxlen))
        elif op == sre_c.BRANCH:
            for alt in av[1]:
                out |= seq(alt, live)
        elif op == sre_c.SUBPATTERN:
            out |= seq(av[-1], live)
        elif op in (sre_c.MAX_REPEAT, sre_c.MIN_REPEAT):
            lo, hi, sub = av
            cur = live
            for _ in range(lo):
                cur = seq(sub, cur)
            if hi == sre_c.MAXREPEAT:
                out |= {(p, True) for p, _ in cur}
            else:
                out |= cur
                for _ in range(hi - lo):
                    cur = seq(sub, cur)
                    out |= cur
        elif op == sre_c.AT:
            out |= live
        else:
            raise ValueError("pattern node %r" % (node,))
        return out

    return {p for p, _ in seq(sre_parse.parse(pattern), {("", False)})}


# ---- the library's view --------------------------------------------------------

def meta(region):
    return PhoneMetadata.metadata_for_region(region)


def lengths(m):
    """Possible lengths of a region's national numbers (not local-only)."""
    got = set(x for x in m.general_desc.possible_length or () if x > 0)
    if not got:
        for t in TYPES:
            d = getattr(m, t)
            if d is not None:
                got.update(x for x in d.possible_length or () if x > 0)
    return sorted(got)


def library_region(cc, national):
    try:
        return pn.region_code_for_number(pn.parse("+%d%s" % (cc, national)))
    except pn.NumberParseException:
        return None


def samples(prefix, lens):
    rnd = random.Random("%s/%s" % (prefix, lens))
    for n in lens:
        rest = n - len(prefix)
        if rest < 0:
            continue
        if rest == 0:
            yield prefix
            continue
        for d in "0123456789":
            yield prefix + d * rest
        for _ in range(SAMPLES):
            yield prefix + "".join(rnd.choice("0123456789")
                                   for _ in range(rest))


def verify(cc, region, prefix, lens, top, notes):
    """The prefixes under prefix that the library gives to region: prefix
    itself if every valid sample is region's, else its digits split. When
    the region depends on the length alone (CA's 7-digit 310 numbers, US
    10-digit ones), the prefix is left to the main region."""
    by_len = {n: {library_region(cc, s) for s in samples(prefix, [n])} -
              {None} for n in lens}
    seen = set().union(*by_len.values())
    if seen == {region} or (top and not seen):
        return [prefix]
    if region not in seen:
        return []
    if all(len(s) <= 1 for s in by_len.values()) or \
            len(prefix) >= MAX_PREFIX + 1:
        notes.append("+%d %s: %s or %s; left to the main region" % (
            cc, prefix, region, "/".join(sorted(seen - {region}))))
        return []
    out = []
    for d in "0123456789":
        out += verify(cc, region, prefix + d, lens, False, notes)
    return out


def region_prefixes(cc, region, notes):
    m = meta(region)
    if m.leading_digits:
        cands = prefixes(m.leading_digits)
    else:
        cands = set()
        for t in TYPES:
            d = getattr(m, t)
            if d is not None and d.national_number_pattern:
                cands |= prefixes(d.national_number_pattern)
    lens = lengths(m)
    out = set()
    for p in sorted(cands):
        if p == "":
            fail("+%d %s: a pattern with no leading digits" % (cc, region))
        out.update(verify(cc, region, p, lens, True, notes))
    # A prefix under another one of the same region adds nothing.
    keep = sorted(p for p in out
                  if not any(p != q and p.startswith(q) for q in out))
    return keep


# ---- the table -------------------------------------------------------------

def intl_prefix(m):
    """The international prefix when it is one fixed string (or has a
    preferred one), else None: "00" is always read anyway."""
    for v in (m.international_prefix, m.preferred_international_prefix):
        if v is not None:
            v = v.replace("~", "")
            if v.isdigit() and len(v) >= 2:
                return v
    return None


def build():
    if pn.__version__ != PIN:
        fail("python3-phonenumbers %s is installed, the table is pinned to "
             "%s: change PIN after reviewing the new data" % (pn.__version__,
                                                             PIN))
    regions = []    # (cc, not main, iso)
    for cc, rs in pn.COUNTRY_CODE_TO_REGION_CODE.items():
        for i, r in enumerate(rs):
            if r == "001":
                continue
            m = meta(r)
            if m is None:
                fail("no metadata for %s" % r)
            if (i == 0) != bool(m.main_country_for_code or len(rs) == 1):
                fail("+%d: %s is listed first but is not its main region"
                     % (cc, rs[0]))
            regions.append((cc, i != 0, r))
    regions.sort()
    if len(regions) > 255:
        fail("more than 255 regions: widen numbering_prefix.region")
    index = {r: i for i, (_, _, r) in enumerate(regions)}

    trunks, intls = [""], ["00"]
    rows = []
    for cc, sub, r in regions:
        m = meta(r)
        t = m.national_prefix or ""
        if not t.isdigit() and t != "":
            fail("%s: trunk prefix %r" % (r, t))
        i = intl_prefix(m) or "00"
        for lst, v in ((trunks, t), (intls, i)):
            if v not in lst:
                lst.append(v)
        mask = 0
        for n in lengths(m):
            if n <= 15:
                mask |= 1 << n
        rows.append((r, 0 if sub else 1, trunks.index(t), intls.index(i),
                     cc, mask))
    if len(trunks) > 16 or len(intls) > 16:
        fail("more than 16 trunk or international prefixes")

    notes, pref = [], []
    for cc, rs in sorted(pn.COUNTRY_CODE_TO_REGION_CODE.items()):
        rs = [r for r in rs if r != "001"]
        for r in rs[1:]:
            for p in region_prefixes(cc, r, notes):
                pref.append((cc, p, r))
    pref.sort()
    # Two regions claiming one prefix, or one inside another's: the
    # longest match wins in otp_demo; say so if it happens.
    for cc, p, r in pref:
        for cc2, q, r2 in pref:
            if cc == cc2 and r != r2 and q != p and q.startswith(p):
                notes.append("+%d %s (%s) holds %s (%s): longest wins"
                             % (cc, p, r, q, r2))
            if cc == cc2 and r != r2 and q == p:
                fail("+%d %s claimed by %s and %s" % (cc, p, r, r2))
    nongeo = sorted(pn.COUNTRY_CODES_FOR_NON_GEO_REGIONS)
    return rows, trunks, intls, pref, index, nongeo, notes


def c_header(rows, trunks, intls, pref, index, nongeo, notes):
    o = []
    w = o.append
    w("/*")
    w(" * numbering.h: the numbering plan otp_demo reads phone numbers with.")
    w(" *")
    w(" * Generated by tools/gen_numbering.py from libphonenumber's metadata")
    w(" * (https://github.com/google/libphonenumber, Copyright The")
    w(" * Libphonenumber Authors, Apache License 2.0), version %s, as Debian's"
      % PIN)
    w(" * python3-phonenumbers %s ships it. Do not edit: change the generator,"
      % PIN)
    w(" * run it, commit both outputs (tests/numbering_test.py compares).")
    w(" *")
    w(" * numbering_regions: %d regions, by calling code (the code's main"
      % len(rows))
    w(" * region first), then ISO 3166 code. %d bytes a row." % 8)
    w(" * numbering_prefixes: national-number prefixes of regions that are not")
    w(" * their calling code's main region (+1 876... is JM, not US); the")
    w(" * longest match wins, no match means the main region.")
    w(" * numbering_nongeo: calling codes of no country (satellite, global")
    w(" * freephone and premium rate).")
    if notes:
        w(" *")
        w(" * Generator notes:")
        for n in notes:
            w(" *   %s" % n)
    w(" */")
    w("#ifndef NUMBERING_H")
    w("#define NUMBERING_H")
    w("")
    w("#include <stdint.h>")
    w("")
    w('#define NUMBERING_VERSION "libphonenumber %s"' % PIN)
    w("#define NUMBERING_NREGIONS %d" % len(rows))
    w("#define NUMBERING_MAIN 1 /* flags: the main region of its code */")
    w("")
    w("struct numbering_region {")
    w("\tchar iso[2];       /* ISO 3166-1 alpha-2, no NUL */")
    w("\tuint8_t flags;     /* NUMBERING_MAIN */")
    w("\tuint8_t prefixes;  /* trunk << 4 | international, indexes below */")
    w("\tuint16_t cc;       /* calling code */")
    w("\tuint16_t lengths;  /* bit n: national numbers of n digits exist */")
    w("};")
    w("")
    w("struct numbering_prefix {")
    w("\tuint8_t region;    /* index in numbering_regions */")
    w("\tchar digits[7];    /* after the calling code, NUL-terminated */")
    w("};")
    w("")
    w("/* National trunk prefixes: 0 in GB, 8 in RU, 1 in the NANP. */")
    w("static const char *const numbering_trunks[] = {")
    w("\t" + ", ".join('"%s"' % t for t in trunks) + ",")
    w("};")
    w("")
    w("/* International prefixes: \"00\" (the default, also read everywhere),")
    w(" * or the region's own when it is one fixed string (011 in the NANP). */")
    w("static const char *const numbering_intls[] = {")
    w("\t" + ", ".join('"%s"' % t for t in intls) + ",")
    w("};")
    w("")
    w("static const struct numbering_region numbering_regions[] = {")
    for r, flags, t, i, cc, mask in rows:
        w('\t{ "%s", %d, 0x%x%x, %d, 0x%04x },' % (r, flags, t, i, cc, mask))
    w("};")
    w("")
    w("static const struct numbering_prefix numbering_prefixes[] = {")
    for cc, p, r in pref:
        w('\t{ %d, "%s" }, /* +%d %s */' % (index[r], p, cc, r))
    w("};")
    w("")
    w("static const uint16_t numbering_nongeo[] = {")
    w("\t" + ", ".join(str(c) for c in nongeo) + ",")
    w("};")
    w("")
    w("#endif /* NUMBERING_H */")
    return "\n".join(o) + "\n"


# ---- test data ---------------------------------------------------------------

def nanp_area_codes():
    """(geographic, special): the NANP area codes the library knows for
    fixed lines or mobiles, and those it knows only for other services."""
    geo, special = set(), set()
    for r in pn.COUNTRY_CODE_TO_REGION_CODE[1]:
        m = meta(r)
        for t in TYPES:
            d = getattr(m, t)
            if d is None or not d.national_number_pattern:
                continue
            for p in prefixes(d.national_number_pattern, maxlen=3, wide=99):
                if len(p) != 3:
                    continue
                (geo if t in ("fixed_line", "mobile") else special).add(p)
    return sorted(geo), sorted(special - geo)


def c_string(s):
    return '"%s"' % s.replace("\\", "\\\\").replace('"', '\\"')


def test_header(rows):
    o = []
    w = o.append
    w("/*")
    w(" * tests/numbering_data.h: libphonenumber %s's own examples, for" % PIN)
    w(" * tests/unit.c only. Generated by tools/gen_numbering.py; do not edit.")
    w(" * (libphonenumber metadata: Apache License 2.0.)")
    w(" */")
    w("")
    w("struct numbering_example {")
    w("\tconst char *iso;      /* the region the example is for */")
    w("\tconst char *type;     /* \"mobile\" or \"fixed_line\" */")
    w("\tconst char *e164;")
    w("\tconst char *national; /* as the library formats it at home */")
    w("\tconst char *intl;     /* as it formats it for abroad */")
    w("\tconst char *region;   /* region_code_for_number(e164) */")
    w("};")
    w("")
    w("static const struct numbering_example numbering_examples[] = {")
    F = pn.PhoneNumberFormat
    for r, *_ in rows:
        seen = set()
        for tname, t in (("mobile", T.MOBILE), ("fixed_line", T.FIXED_LINE)):
            n = pn.example_number_for_type(r, t)
            if n is None or pn.format_number(n, F.E164) in seen:
                continue
            seen.add(pn.format_number(n, F.E164))
            w("\t{ %s, %s, %s, %s, %s, %s }," % (
                c_string(r), c_string(tname),
                c_string(pn.format_number(n, F.E164)),
                c_string(pn.format_number(n, F.NATIONAL)),
                c_string(pn.format_number(n, F.INTERNATIONAL)),
                c_string(pn.region_code_for_number(n) or "")))
    w("};")
    def area_codes(name, codes):
        w("static const char *const %s[] = {" % name)
        for i in range(0, len(codes), 10):
            w("\t" + " ".join('"%s",' % p for p in codes[i:i + 10]))
        w("};")

    geo, special = nanp_area_codes()
    w("")
    w("/* NANP area codes the library knows for fixed lines or mobiles. */")
    area_codes("numbering_nanp_geo", geo)
    w("")
    w("/* NANP area codes it knows only for toll-free, premium-rate,")
    w(" * personal, VoIP and other services. */")
    area_codes("numbering_nanp_special", special)
    return "\n".join(o) + "\n"


def main():
    check = sys.argv[1:] == ["--check"]
    if sys.argv[1:] not in ([], ["--check"]):
        sys.stderr.write(__doc__)
        return 64
    data = build()
    rows = data[0]
    outputs = {OUT_C: c_header(*data), OUT_TEST: test_header(rows)}
    bad = []
    for path, text in outputs.items():
        if check:
            try:
                with open(path) as f:
                    same = f.read() == text
            except OSError:
                same = False
            if not same:
                bad.append(os.path.relpath(path, ROOT))
        else:
            with open(path + ".tmp", "w") as f:
                f.write(text)
            os.replace(path + ".tmp", path)
    if bad:
        print("gen_numbering: %s differ(s) from the generator's output; run "
              "tools/gen_numbering.py and commit" % ", ".join(bad))
        return 1
    print("gen_numbering: %s (libphonenumber %s): %d regions, %d prefixes"
          % ("up to date" if check else "written", PIN, len(rows),
             len(data[3])))
    return 0


if __name__ == "__main__":
    sys.exit(main())
