#!/usr/bin/env python3
"""The module graph of the hub and lib from the compiled objects, and its cycles.

Also the include graph of hub/ (a module includes another's header): no cycle
either.

A module (one .c file) depends on another when its object file refers to a symbol
the other defines (nm), which is what a reader needs to know: who calls whom, not
who includes which header. Exits 1 when modules of hub/ or lib/ depend on each other
in a cycle, naming the symbols that close it.

    tools/depgraph.py BUILD_DIR [--print] [--dot]

BUILD_DIR is a configured and built CMake tree (e.g. build/test)."""
import argparse
import os
import subprocess
import sys

SRC = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# (object directory in the build tree, source folders it is built from)
TARGETS = [("CMakeFiles/phy.dir", ["lib"]),
           ("CMakeFiles/phyhub_core.dir", ["hub", "hub/store"]),
           ("CMakeFiles/phyhub.dir", ["hub/main.c"])]


def symbols(obj):
    out = subprocess.run(["nm", "-P", obj], check=True, capture_output=True, text=True).stdout
    defined, undefined = set(), set()
    for line in out.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind in "TDBRCV":  # global text, data, bss, read-only, common
            defined.add(name)
    return defined, undefined


def modules(build):
    mods = {}
    for objdir, folders in TARGETS:
        for spec in folders:
            folder, files = spec, None
            if spec.endswith(".c"):
                folder, files = os.path.dirname(spec), [os.path.basename(spec)]
            src_dir = os.path.join(SRC, folder)
            for f in files or sorted(os.listdir(src_dir)):
                if not f.endswith(".c") or (files is None and f == "main.c"):
                    continue
                obj = os.path.join(build, objdir, folder, f + ".o")
                if not os.path.exists(obj):
                    sys.exit("depgraph: %s is not built (build %s first)" % (obj, build))
                mods[os.path.join(folder, f[:-2])] = symbols(obj)
    return mods


def graph(mods):
    owner = {}
    for m, (defined, _) in mods.items():
        for s in defined:
            owner[s] = m
    edges = {m: {} for m in mods}
    for m, (_, undefined) in mods.items():
        for s in undefined:
            o = owner.get(s)
            if o and o != m:
                edges[m].setdefault(o, set()).add(s)
    return edges


def include_graph():
    """hub/ and hub/store/ modules -> the modules whose headers they include."""
    import re
    edges = {}
    for folder in ("hub", "hub/store"):
        d = os.path.join(SRC, folder)
        names = {f[:-2] for f in os.listdir(d) if f.endswith((".c", ".h"))}
        for f in os.listdir(d):
            if not f.endswith((".c", ".h")):
                continue
            m = os.path.join(folder, f[:-2])
            edges.setdefault(m, {})
            with open(os.path.join(d, f)) as fh:
                for inc in re.findall(r'#include "([A-Za-z0-9_]+)\.h"', fh.read()):
                    for other in ("hub", "hub/store"):
                        if os.path.exists(os.path.join(SRC, other, inc + ".h")):
                            target = os.path.join(other, inc)
                            if target != m:
                                edges[m].setdefault(target, set()).add(inc + ".h")
                            break
    for m in list(edges):
        for t in edges[m]:
            edges.setdefault(t, {})
    return edges


def cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("build", nargs="?")
    ap.add_argument("--self-test", action="store_true", help="check the cycle finder itself")
    ap.add_argument("--print", action="store_true", help="print each module's dependencies")
    ap.add_argument("--dot", action="store_true", help="print the graph for graphviz")
    a = ap.parse_args()
    if a.self_test:
        g = {"a": {"b": {"f"}}, "b": {"c": {"g"}}, "c": {"a": {"h"}}, "d": {"a": {"i"}}, "e": {}}
        assert cycles(g) == [["a", "b", "c"]], cycles(g)
        del g["c"]["a"]
        assert cycles(g) == [], cycles(g)
        print("depgraph: self-test passed")
        return 0
    if not a.build:
        ap.error("BUILD_DIR is required")
    edges = graph(modules(a.build))
    if a.print:
        for m in sorted(edges):
            print("%s -> %s" % (m, " ".join(sorted(edges[m])) or "(nothing)"))
    if a.dot:
        print("digraph hub {")
        for m in sorted(edges):
            for d in sorted(edges[m]):
                print('  "%s" -> "%s";' % (m, d))
        print("}")
    bad = cycles(edges)
    inc = cycles(include_graph())
    for comp in inc:
        print("include cycle among %s" % ", ".join(comp))
    for comp in bad:
        print("cycle among %s:" % ", ".join(comp))
        for m in comp:
            for d in comp:
                if d in edges[m]:
                    print("  %s -> %s (%s)" % (m, d, ", ".join(sorted(edges[m][d])[:6])))
    if bad or inc:
        return 1
    print("depgraph: %d modules, no cycle (symbols and hub/ includes)" % len(edges))
    return 0


if __name__ == "__main__":
    sys.exit(main())
