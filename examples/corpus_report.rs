//! Counts diagnostics by level and code over a directory of .travis.yml files:
//! `cargo run --release --example corpus_report -- ../shared/corpus/travis-yml/configs [level:code]`
//! prints every error (or every diagnostic of the given level:code) with its place.
use std::collections::HashMap;
fn main() {
    let mut n = 0;
    let mut with_err = 0;
    let mut codes: HashMap<String, usize> = HashMap::new();
    let mut samples: HashMap<String, Vec<String>> = HashMap::new();
    let t = std::time::Instant::now();
    for e in walk(std::path::Path::new(&std::env::args().nth(1).unwrap())) {
        let text = String::from_utf8_lossy(&std::fs::read(&e).unwrap()).into_owned();
        n += 1;
        let l = runway::config::load(&text);
        if l.has_errors() {
            with_err += 1;
        }
        for d in &l.diagnostics {
            let k = format!("{}:{}", d.level, d.code);
            *codes.entry(k.clone()).or_default() += 1;
            let s = samples.entry(k).or_default();
            if s.len() < 200 {
                s.push(d.render(&e.display().to_string()));
            }
        }
    }
    let el = t.elapsed();
    let mut v: Vec<_> = codes.into_iter().collect();
    v.sort_by_key(|x| std::cmp::Reverse(x.1));
    for (k, c) in &v {
        println!("{c:6} {k}");
        if k.starts_with("error") || std::env::args().nth(2).as_deref() == Some(k.as_str()) {
            for s in &samples[k] {
                println!("        {s}");
            }
        }
    }
    println!("{with_err}/{n} with errors, {:?} per file", el / n as u32);
}
fn walk(p: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v = vec![];
    for e in std::fs::read_dir(p).unwrap() {
        let e = e.unwrap().path();
        if e.is_dir() {
            v.extend(walk(&e))
        } else {
            v.push(e)
        }
    }
    v.sort();
    v
}
