#!/usr/bin/env bash
# Where a build's CPU goes in the workers bench's two 4-at-once rounds (the serve node
# running its jobs itself, and the same jobs through 4 workers), part by part, in ms a
# build: one round of N builds each (3,000 by default), recorded for 3 s from 7.5 s into
# the round (both rounds past their intake by then), the whole machine sampled
# (`perf record -a`: recording only the serve process slows its job threads, not the
# workers'), with SQLite's page reads and cache resets counted by uprobes in the same
# windows. Run as root on a quiet machine, after `cargo bench --bench workers --no-run`:
#
#   bash scripts/rounds-by-part.sh [N]
#
# The table is printed by scripts/rounds-by-part.py; the recordings stay in $OUT
# (default /tmp/rounds-by-part) for a second look.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-3000}
out=${OUT:-/tmp/rounds-by-part}
mkdir -p "$out"
bench=$(ls -t target/release/deps/workers-* | grep -v '\.d$' | head -1)
BENCH_SKIP_NODISK=1 BENCH_SKIP_LATENCY=1 BENCH_K=4 BENCH_REPEAT=1 "$bench" "$n" >"$out/bench.log" 2>&1 &
bench_pid=$!
trap 'perf probe -q -d "probe_runway:*" 2>/dev/null || true; kill $bench_pid 2>/dev/null || true' EXIT
# The bench names its rounds' configurations tp-here-4-* (the node) and tp-now-4-*.
round_started() {
    until ps -eo args | grep -q "^[^ ]*runway-after serve.*tp-$1-4"; do
        kill -0 $bench_pid 2>/dev/null || { echo "the bench ended early: $out/bench.log" >&2; exit 1; }
        sleep 0.2
    done
}
round_started here
# The bench runs a copy of runway: the probes go on that copy.
bin=$(ps -eo args | grep "^[^ ]*runway-after serve.*tp-here-4" | head -1 | awk '{print $1}')
for f in unixRead pcache1Truncate sqlite3PagerSharedLock; do
    perf probe -q -x "$bin" "$f"
done
for r in here now; do
    round_started $r
    sleep 7.5
    perf record -q -a -F 700 --call-graph dwarf,12288 -e cpu-clock -e sched:sched_process_exec \
        -o "$out/$r.data" -- sleep 3 >/dev/null 2>&1
    perf stat -a -e 'probe_runway:*' -e sched:sched_process_exec -o "$out/$r.probes" -- sleep 3 >/dev/null 2>&1
done
wait $bench_pid
trap - EXIT
perf probe -q -d 'probe_runway:*'
grep -E "builds/s|CPU per build" "$out/bench.log" || true
python3 scripts/rounds-by-part.py "$out"
