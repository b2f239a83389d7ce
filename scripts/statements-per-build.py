#!/usr/bin/env python3
"""Store statements per build, from a RUNWAY_TRACE_SQL file (src/store/sqlite.rs).

Each serve process that took 90 builds or more is counted: its statements per build,
less those of the API reads and periodic pollers (which depend on who watches, not on
the build). With a second argument, each statement's share too. Since 2026-12-06 the
trace holds a build's insert, its claim and its end too (2 to 4 statements more a build
than the counts in BENCHMARKS.md before that day).

  rm -f /tmp/sql.log
  RUNWAY_TRACE_SQL=/tmp/sql.log BENCH_K=1 BENCH_REPEAT=1 cargo bench --bench workers -- 100
  python3 scripts/statements-per-build.py /tmp/sql.log [each]
"""
import collections
import sys

by = collections.defaultdict(collections.Counter)
with open(sys.argv[1]) as f:
    for line in f:
        pid, _, sql = line.rstrip("\n").partition("\t")
        # Numbered as SQLite numbers them (?1) since the trace covers every statement.
        sql = sql.replace("?", "$")
        if pid.isdigit() and sql:
            by[pid][sql] += 1
polled = (
    "FROM builds WHERE number",
    "FROM jobs WHERE build_id = $1 AND log_ref",
    "SELECT number, worker, held_by",
    "FROM statuses WHERE",
    "FROM job_attempts",
    "FROM audit WHERE",
    "FROM outbox WHERE state",
    "cancel_requested = 1",
)
for pid, c in by.items():
    builds = sum(v for k, v in c.items() if k.startswith("SELECT build_id FROM deliveries WHERE key"))
    if builds < 90:
        continue
    mode = "workers" if any(k.startswith("INSERT INTO task_chunks") for k in c) else "in the node"
    own = {k: v for k, v in c.items() if not any(p in k for p in polled)}
    print(f"process {pid}, {builds} builds, jobs {mode}: {sum(own.values()) / builds:.2f} statements per build")
    if len(sys.argv) > 2:
        for k, v in sorted(own.items(), key=lambda kv: -kv[1]):
            print(f"  {v / builds:5.2f} {k[:130]}")
