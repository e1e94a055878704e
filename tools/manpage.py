#!/usr/bin/env python3
"""Builds a man page from its template (man/NAME.SECTION.in) and the binary's --help.

    manpage.py BINARY TEMPLATE OUTPUT

The template is roff written by hand (name, synopsis, description, files, examples).
Three markers are replaced:

  @VERSION@          the release, from `BINARY --version`
  @OPTIONS@          one .TP entry per option of `BINARY --help`
  @OPTIONS admin@    the same for `BINARY admin --help` (any words before --help)

The options come from the binary's own option table, so a flag cannot be added
without appearing in its page; tests/integration/test_ops_files.py checks the
installed pages against --help again and lints them with groff.
"""

import os
import re
import subprocess
import sys
import time

OPTION = re.compile(r"^  (-h, --help|--[A-Za-z0-9][A-Za-z0-9-]*)((?: [A-Z]+)?)\s{2,}(\S.*)$")


def help_options(binary, words):
    """[(flag, meta, text)] from the aligned option lines of BINARY WORDS... --help."""
    out = subprocess.run([binary, *words, "--help"], capture_output=True, text=True,
                         timeout=30, check=True).stdout
    opts = []
    for line in out.splitlines():
        m = OPTION.match(line)
        if m:
            opts.append((m.group(1), m.group(2).strip(), m.group(3).strip()))
    if not opts:
        raise SystemExit("%s %s --help lists no options" % (binary, " ".join(words)))
    return opts


def roff_text(s):
    """Help text as roff: backslashes escaped, option names with real minus signs,
    non-ASCII as groff escapes, no leading control character."""
    s = s.replace("\\", "\\e")
    s = re.sub(r"--([A-Za-z0-9][A-Za-z0-9-]*)",
               lambda m: "\\-\\-" + m.group(1).replace("-", "\\-"), s)
    s = s.replace("\u2026", "...")
    s = "".join(c if ord(c) < 128 else "\\[u%04X]" % ord(c) for c in s)
    if s[:1] in (".", "'"):
        s = "\\&" + s
    return s


def roff_options(opts):
    lines = []
    for flag, meta, text in opts:
        flags = [f.strip() for f in flag.split(",")]
        head = ", ".join("\\fB%s\\fR" % f.replace("-", "\\-") for f in flags)
        if meta:
            head += " \\fI%s\\fR" % meta
        lines += [".TP", head, roff_text(text)]
    return "\n".join(lines)


def main():
    binary, template, output = sys.argv[1:4]
    with open(template, encoding="utf-8") as f:
        page = f.read()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True,
                             timeout=30, check=True).stdout.split()[1]
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    date = time.strftime("%Y-%m-%d", time.gmtime(int(epoch))) if epoch else ""
    page = page.replace("@VERSION@", version).replace("@DATE@", date)
    page = re.sub(r"^@OPTIONS((?: [a-z-]+)*)@$",
                  lambda m: roff_options(help_options(binary, m.group(1).split())),
                  page, flags=re.M)
    if "@" in re.sub(r"\S+@\S+\.\S+", "", page):
        left = re.findall(r"@[A-Z ]+@", page)
        if left:
            raise SystemExit("%s: unknown markers %s" % (template, left))
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, output)


if __name__ == "__main__":
    main()
