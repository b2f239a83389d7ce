#!/usr/bin/env bash
# Lint throughput over the corpus in one process, side by side with PyYAML's libyaml
# loader (parse only, no validation) on the same files: runway does strictly more work.
# Usage: bash benches/lint.sh   (RUNWAY_CORPUS overrides the corpus location)
set -euo pipefail
cd "$(dirname "$0")/.."
corpus=${RUNWAY_CORPUS:-../shared/corpus/travis-yml/configs}
cargo bench --quiet --bench lint_corpus 2>/dev/null | grep lint_corpus
if ! python3 -c 'import yaml; yaml.CSafeLoader' 2>/dev/null; then
  python3 -m pip install --quiet 'PyYAML==6.0.2'
fi
python3 - "$corpus" <<'PY'
import pathlib, sys, time, yaml
texts = [p.read_bytes() for p in pathlib.Path(sys.argv[1]).rglob('*.yml')]
best = float('inf')
for _ in range(5):
    t = time.perf_counter()
    for x in texts:
        try:
            yaml.load(x, Loader=yaml.CSafeLoader)
        except Exception:
            pass
    best = min(best, time.perf_counter() - t)
print(f"pyyaml_csafe: {len(texts)} files; best of 5: {best:.3f} s total, {best * 1e6 / len(texts):.0f} µs/file (parse only)")
PY
