#!/usr/bin/env bash
# Fuzzes what a pushed file reaches, with libFuzzer through cargo fuzz:
#   config     the YAML + config engine and the planner, on any bytes
#   condition  the `if:` parser and evaluator, on any text
# Each target runs SECONDS (default 300) from a corpus seeded with the real
# .travis.yml files of ../shared/corpus (and their `if:` conditions). Crashes land
# in fuzz/artifacts/TARGET/; the script exits 1 if any target found one.
#
#   bash scripts/fuzz.sh [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-300}"
corpus_src="${RUNWAY_CORPUS:-../shared/corpus/travis-yml/configs}"

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --version 0.13.2
# libFuzzer's instrumentation needs nightly's flags; the nightly toolchain is used when
# rustup has it, else stable with RUSTC_BOOTSTRAP (the same compiler features).
toolchain=()
if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  toolchain=(+nightly)
else
  export RUSTC_BOOTSTRAP=1
fi

seed() {
  local target=$1 dir=fuzz/corpus/$1
  mkdir -p "$dir"
  [ -n "$(ls -A "$dir" 2>/dev/null)" ] && return
  echo "==> seeding $dir from $corpus_src"
  if [ "$target" = config ]; then
    find "$corpus_src" -type f -name '*.yml' -size -64k -exec cp -t "$dir" {} + 2>/dev/null || true
  else
    # One file per `if:` value written in the corpus.
    grep -rhoE '^\s*(- )?if: .+$' "$corpus_src" 2>/dev/null \
      | sed -E 's/^\s*(- )?if: //' | sort -u | head -5000 \
      | awk -v d="$dir" '{ f = sprintf("%s/if-%05d", d, NR); printf "%s", $0 > f; close(f) }'
  fi
}

found=0
for target in config condition; do
  seed "$target"
  echo "==> cargo fuzz run $target for ${secs}s"
  if ! cargo "${toolchain[@]}" fuzz run --fuzz-dir fuzz "$target" "fuzz/corpus/$target" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -print_final_stats=1 2>&1 | tee "target/fuzz-$target.log" | grep -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::new_units_added|==[0-9]+== ERROR|SUMMARY|Done)'; then
    :
  fi
  if ls fuzz/artifacts/"$target"/crash-* fuzz/artifacts/"$target"/oom-* fuzz/artifacts/"$target"/timeout-* >/dev/null 2>&1; then
    echo "fuzz: $target found something: fuzz/artifacts/$target/" >&2
    found=1
  else
    echo "fuzz: $target: nothing found in ${secs}s"
  fi
done
exit "$found"
