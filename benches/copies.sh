# Sourced by the shell benches once `$work` exists: the binaries they time, as copies
# in `$work`, each written whole. The linker's own output (target/release/runway) runs
# ~1 ms slower per process than a copy of the same file, which a copied BENCH_BEFORE
# would not pay. Sets `runway` (and `BENCH_BEFORE` to its copy).
cp target/release/runway "$work/runway-after"
runway=$work/runway-after
if [ -n "${BENCH_BEFORE:-}" ]; then
  cp "$BENCH_BEFORE" "$work/runway-before"
  BENCH_BEFORE=$work/runway-before
fi
sync # the copies on disk before the clock starts, not written back during the rounds
