#!/usr/bin/env bash
# What a pushed file can cost: `runway lint` and `runway plan` (release build, whole
# process) on a .travis.yml with 50,000 top-level keys and on one with 50,000
# jobs.include entries, side by side with PyYAML's libyaml loader parsing the same file
# (parse only) in the same run; best of ROUNDS (default 5).
# Usage: bash benches/limits.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
cargo build --release --quiet
# PyYAML, pinned, in a venv of its own (Debian's python3 refuses a global pip install).
py=target/bench-venv/bin/python
if ! "$py" -c 'import yaml; yaml.CSafeLoader' 2>/dev/null; then
  python3 -m venv target/bench-venv
  "$py" -m pip install --quiet --disable-pip-version-check 'PyYAML==6.0.2'
fi
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/keys" "$work/include"
python3 - "$work" <<'PY'
import sys
w = sys.argv[1]
open(f"{w}/keys/.travis.yml", "w").write(
    "language: shell\n" + "".join(f"k{i}: v\n" for i in range(50_000)))
open(f"{w}/include/.travis.yml", "w").write(
    "language: shell\njobs:\n  include:\n" + "".join(f"    - env: A={i}\n" for i in range(50_000)))
PY
"$py" - "$work" "$rounds" "$PWD/target/release/runway" <<'PY'
import subprocess, sys, time, yaml
w, rounds, runway = sys.argv[1], int(sys.argv[2]), sys.argv[3]

def best(f):
    b = float("inf")
    for _ in range(rounds):
        t = time.perf_counter(); f(); b = min(b, time.perf_counter() - t)
    return b

def run(*args):
    return lambda: subprocess.run([runway, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

def parse(path):
    return lambda: yaml.load(open(path, "rb").read(), Loader=yaml.CSafeLoader)

print("| file | `runway lint` | `runway plan` | PyYAML parse only | lint / parse | plan / parse |")
print("| --- | --- | --- | --- | --- | --- |")
for name in ("keys", "include"):
    f = f"{w}/{name}/.travis.yml"
    lint = best(run("lint", f))
    plan = best(run("plan", f"{w}/{name}", "--branch", "master"))
    base = best(parse(f))
    label = {"keys": "50,000 top-level keys", "include": "50,000 `jobs.include` entries"}[name]
    print(f"| {label} | {lint:.3f} s | {plan:.3f} s | {base:.3f} s | {lint / base:.2f}× | {plan / base:.2f}× |")
PY
