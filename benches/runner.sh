#!/usr/bin/env bash
# Runner overhead per job, side by side in one run: `runway run --commit HEAD` on a
# small repository whose script is `true`, against `git clone --local` + `bash -c true`.
# Usage: bash benches/runner.sh [ROUNDS]   (builds runway in release mode first)
# With BENCH_BEFORE=/path/to/an/older/runway, that binary is timed too, in the same
# rounds (its state directory its own, so each keeps its own kept sandbox check).
# BENCH_ARGS: more flags for both (`--disk none`).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-20}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. benches/copies.sh

repo=$work/app
mkdir -p "$repo/src"
cd "$repo"
git init -q -b master
printf 'language: shell\nscript: true\n' > .travis.yml
for i in $(seq 1 20); do echo "file $i" > "src/f$i.txt"; done
git add -A
git -c user.name=b -c user.email=b@example.com commit -qm bench
cd - >/dev/null

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }

runway_times=()
baseline_times=()
before_times=()
export RUNWAY_STATE_DIR=$work/state
for i in $(seq 1 "$rounds"); do
  if [ -n "${BENCH_BEFORE:-}" ]; then
    tb=$(now)
    RUNWAY_STATE_DIR=$work/state-before "$BENCH_BEFORE" run "$repo" --commit HEAD --cache-dir "$work/cache-before" ${BENCH_ARGS:-} >/dev/null
    before_times+=($(( ($(now) - tb) / 1000 )))
  fi
  t0=$(now)
  "$runway" run "$repo" --commit HEAD --cache-dir "$work/cache" ${BENCH_ARGS:-} >/dev/null
  t1=$(now)
  git clone -q --local "$repo" "$work/clone" && (cd "$work/clone" && bash -c true)
  t2=$(now)
  rm -rf "$work/clone"
  runway_times+=($(( (t1 - t0) / 1000 )))
  baseline_times+=($(( (t2 - t1) / 1000 )))
done
r=$(printf '%s\n' "${runway_times[@]}" | median)
b=$(printf '%s\n' "${baseline_times[@]}" | median)
awk -v r="$r" -v b="$b" -v n="$rounds" 'BEGIN {
  printf "runner overhead, median of %d rounds\n", n
  printf "  runway run --commit HEAD (script: true)   %7.1f ms\n", r/1000
  printf "  git clone --local + bash -c true          %7.1f ms\n", b/1000
  printf "  difference                                %7.1f ms (ratio %.2fx)\n", (r-b)/1000, r/b
}'
if [ -n "${BENCH_BEFORE:-}" ]; then
  o=$(printf '%s\n' "${before_times[@]}" | median)
  awk -v o="$o" -v r="$r" -v b="$b" 'BEGIN {
    printf "  the same with BENCH_BEFORE                %7.1f ms (ratio %.2fx; after/before %.2f)\n", o/1000, o/b, r/o
  }'
fi
