//! Lint throughput over the whole corpus in one process: every file is read into
//! memory first, then linted (parse + normalise + validate) several times.
//! Run: `cargo bench --bench lint_corpus` (set RUNWAY_CORPUS to move the corpus).

use std::path::{Path, PathBuf};
use std::time::Instant;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("corpus directory (../shared/corpus/travis-yml/configs)")
    {
        let p = e.expect("entry").path();
        if p.is_dir() {
            files(&p, out)
        } else {
            out.push(p)
        }
    }
}

fn main() {
    let dir = std::env::var_os("RUNWAY_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/travis-yml/configs")
        });
    let mut paths = Vec::new();
    files(&dir, &mut paths);
    let texts: Vec<String> = paths
        .iter()
        .map(|p| String::from_utf8_lossy(&std::fs::read(p).unwrap()).into_owned())
        .collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    // Warm-up (the embedded schema is parsed once per process).
    let mut diags = 0usize;
    for t in &texts {
        diags += runway::config::load(t).diagnostics.len();
    }
    let rounds = 5;
    let mut best = f64::MAX;
    for _ in 0..rounds {
        let start = Instant::now();
        for t in &texts {
            std::hint::black_box(runway::config::load(t));
        }
        best = best.min(start.elapsed().as_secs_f64());
    }
    let per_file_us = best * 1e6 / texts.len() as f64;
    println!(
        "lint_corpus: {} files, {:.1} MB, {diags} diagnostics; best of {rounds}: {:.3} s total, {:.0} µs/file, {:.1} MB/s",
        texts.len(),
        bytes as f64 / 1e6,
        best,
        per_file_us,
        bytes as f64 / 1e6 / best
    );
}
