#!/usr/bin/env bash
# A Python job's start over a shell job's, side by side in one run: `runway run` of a
# `language: python` (python 3.12, `script: true`) and of a `language: shell` project,
# alternately, ROUNDS times each; medians and their difference.
# Usage: bash benches/python_start.sh [ROUNDS]   (builds runway in release mode first)
# With BENCH_BEFORE=/path/to/an/older/runway, that binary's Python job is timed too, in
# the same rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-15}
cargo build --release --quiet
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
. benches/copies.sh

project() {
  mkdir -p "$work/$1"
  printf '%s' "$2" > "$work/$1/.travis.yml"
  (cd "$work/$1" && git init -q -b master && git add -A &&
    git -c user.name=b -c user.email=b@example.com commit -qm bench)
}
project shell $'language: shell\nscript: true\n'
project python $'language: python\npython: "3.12"\nscript: true\n'

now() { date +%s%N; }
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
time_run() { # binary state project
  local t0; t0=$(now)
  RUNWAY_STATE_DIR=$work/$2 "$1" run "$work/$3" --commit HEAD --cache-dir "$work/cache-$2" >/dev/null
  echo $(( ($(now) - t0) / 1000 ))
}
# One warm-up each: the base virtualenv and the sandbox check are made once.
time_run "$runway" state shell >/dev/null
time_run "$runway" state python >/dev/null
[ -z "${BENCH_BEFORE:-}" ] || time_run "$BENCH_BEFORE" state-before python >/dev/null
shell=(); python=(); before=()
for _ in $(seq 1 "$rounds"); do
  shell+=("$(time_run "$runway" state shell)")
  python+=("$(time_run "$runway" state python)")
  [ -z "${BENCH_BEFORE:-}" ] || before+=("$(time_run "$BENCH_BEFORE" state-before python)")
done
ms() { printf '%s\n' "$@" | median | awk '{printf "%.1f", $1/1000}'; }
s=$(ms "${shell[@]}"); p=$(ms "${python[@]}")
echo "shell job:  $s ms (median of $rounds)"
echo "python job: $p ms (median of $rounds)"
awk -v s="$s" -v p="$p" 'BEGIN {printf "python over shell: %.1f ms\n", p - s}'
if [ -n "${BENCH_BEFORE:-}" ]; then
  b=$(ms "${before[@]}")
  echo "python job, before: $b ms (median of $rounds)"
  awk -v s="$s" -v b="$b" 'BEGIN {printf "python over shell, before: %.1f ms\n", b - s}'
fi
