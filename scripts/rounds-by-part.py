#!/usr/bin/env python3
"""The table of scripts/rounds-by-part.sh: ms a build (a job's `execve` of bash), the
node's round against the workers', part by part, from DIR/here.data and DIR/now.data.

A sample of runway's own code goes to the part of the innermost frame that names one
(a store call made while a worker's report is handled counts as `store`); the jobs'
processes and the kernel's threads go by their names. Then the store's part by the
store method that made it, and SQLite's page reads and cache resets a build (DIR/*.probes).

  python3 scripts/rounds-by-part.py /tmp/rounds-by-part
"""
import collections
import re
import subprocess
import sys

HZ = 700  # scripts/rounds-by-part.sh's `perf record -F`

PARTS = [
    ("store", r"sqlite3|rusqlite|runway::store::"),
    ("checkout", r"runway::workspace::|git2::|libgit2|\bgit_"),
    ("job disk", r"runway::sandbox::disk"),
    ("sandbox", r"runway::sandbox::"),
    ("shell", r"runway::process::"),
    ("job runner", r"runway::job::"),
    ("http server", r"hyper::|axum::"),
    ("http client", r"ureq::"),
    ("tokio", r"tokio::"),
    ("intake", r"runway::server::intake|runway::server::hooks"),
    ("plan, config", r"runway::plan::|runway::config::|yaml"),
    ("worker", r"runway::agent::"),
    ("dispatch", r"runway::server::dispatch|runway::server::agents"),
    ("server, other", r"runway::server::"),
    ("service", r"runway::service::"),
    ("build", r"runway::build::"),
    ("serde", r"serde"),
    ("tracing", r"tracing"),
    ("runway, other", r"runway::"),
    ("threads", r"std::thread|start_thread|clone3"),
]
PARTS = [(name, re.compile(rx)) for name, rx in PARTS]
STORE = re.compile(r"sqlite3|rusqlite|runway::store::")
NOT_STORE = re.compile(
    r"runway::workspace::|git2::|runway::sandbox|runway::process::|runway::job::|hyper::|axum::|ureq::|tokio::"
)
OURS = re.compile(r"^(runway|tokio-rt-worker|workers-)")


def samples(path):
    """(comm, event, frames innermost first) of each sample."""
    p = subprocess.Popen(
        ["perf", "script", "-i", path, "-F", "comm,event,ip,sym"],
        stdout=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    head, frames = None, []
    for line in p.stdout:
        if not line.strip():
            if head:
                yield head[0], head[1], frames
            head, frames = None, []
        elif not line.startswith("\t"):
            words = line.split()
            head = (words[0], " ".join(w for w in words if w.endswith(":")))
            frames = []
        else:
            sym = line.strip().split(None, 1)[-1].split("+0x")[0]
            frames.append(re.sub(r"::h[0-9a-f]{16}$", "", sym))
    if head:
        yield head[0], head[1], frames


def part_of(comm, frames):
    if comm == "bash":
        return "job: bash"
    if comm in ("runway-init", "runway-spawner"):
        return "job: " + comm
    if not OURS.match(comm):
        return "kernel: " + re.sub(r"[/:]?\d.*$", "", comm)
    for f in frames:
        for name, rx in PARTS:
            if rx.search(f):
                return name
    return "runway, unknown"


def store_method(frames):
    """The store method a store sample is under, or None when it is no store sample."""
    for f in frames:
        if STORE.search(f):
            break
        if NOT_STORE.search(f):
            return None
    else:
        return None
    inside = [f for f in frames if "runway::store::" in f]
    named = [
        f
        for f in inside
        if "Backend>" not in f
        and "sqlite::" not in f
        and not re.match(r"(db|store_call|patiently|together|closure|\{closure)", f)
        and "closure" not in f
    ]
    name = named[0] if named else (inside[-1] if inside else "(SQLite alone)")
    return re.sub(r"^.*<impl runway::store::Store>::", "Store::", name)[:80]


def read(path):
    parts, methods, execs = collections.Counter(), collections.Counter(), 0
    for comm, event, frames in samples(path):
        if "exec" in event:
            execs += 1
            continue
        parts[part_of(comm, frames)] += 1
        if OURS.match(comm):
            m = store_method(frames)
            if m:
                methods[m] += 1
    return execs, parts, methods


def probes(path):
    counts, execs = {}, 0
    with open(path) as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0].replace(",", "").isdigit():
                n = int(words[0].replace(",", ""))
                if "exec" in words[1]:
                    execs = n
                else:
                    counts[words[1].split(":")[-1]] = n
    return {k: v / max(execs, 1) for k, v in counts.items()}


def table(title, node, workers, en, ew, rows=40):
    ms = lambda c, k, e: c[k] / HZ * 1000 / max(e, 1)
    keys = sorted(set(node) | set(workers), key=lambda k: -(ms(node, k, en) + ms(workers, k, ew)))
    print(f"\n{title} (ms a build)\n{'node':>8} {'workers':>8} {'diff':>8}")
    for k in keys[:rows]:
        a, b = ms(node, k, en), ms(workers, k, ew)
        if a >= 0.005 or b >= 0.005:
            print(f"{a:8.3f} {b:8.3f} {b - a:+8.3f}  {k}")


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else "/tmp/rounds-by-part"
    en, node, node_store = read(f"{d}/here.data")
    ew, workers, workers_store = read(f"{d}/now.data")
    print(f"builds in the windows: node {en}, workers {ew}")
    busy = lambda c, e: sum(v for k, v in c.items() if k != "kernel: swapper") / HZ * 1000 / max(e, 1)
    print(f"CPU a build, idle left out: node {busy(node, en):.2f} ms, workers {busy(workers, ew):.2f} ms")
    table("Parts", node, workers, en, ew)
    table("The store's part, by store method", node_store, workers_store, en, ew, 25)
    pn, pw = probes(f"{d}/here.probes"), probes(f"{d}/now.probes")
    print("\nSQLite, a build: node / workers")
    for k in sorted(set(pn) | set(pw)):
        print(f"  {k}: {pn.get(k, 0):.1f} / {pw.get(k, 0):.1f}")


main()
