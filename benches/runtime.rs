//! What providing a runtime costs a job: Python (found among pyenv's, then its
//! virtualenv) and Node (an installed version), timed per job from "which python?" to
//! ready, next to the bare host's way (a fresh `python -m venv` per job, what a job
//! without runway's base environments pays), alternating rounds in the same run.
//! Run: `cargo bench --bench runtime [ROUNDS]` (needs pyenv's 3.12 and network once
//! for Node 18.20.4).

use std::time::{Duration, Instant};

use runway::runtime::{Context, provider, toolchain_dir};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time(key: &str, version: &str, copy_on_write: bool) -> Duration {
    let home = tempfile::tempdir().unwrap();
    let toolchains = toolchain_dir();
    let ctx = Context {
        toolchains: &toolchains,
        home: home.path(),
        copy_on_write,
    };
    let t = Instant::now();
    let p = provider(key).unwrap();
    p.provide(version, &ctx).unwrap_or_else(|m| panic!("{m}"));
    t.elapsed()
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(10);
    // Once, untimed: the base virtualenv and the Node install.
    time("python", "3.12", true);
    time("node_js", "18.20.4", true);
    let (mut cow, mut fresh, mut node) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        cow.push(time("python", "3.12", true));
        fresh.push(time("python", "3.12", false));
        node.push(time("node_js", "18.20.4", true));
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("rounds: {rounds} (alternating)");
    println!("| what | median per job |");
    println!("| --- | --- |");
    println!(
        "| python 3.12, base virtualenv (sandbox) | {:.1} ms |",
        ms(median(cow.clone()))
    );
    println!(
        "| python 3.12, fresh `python -m venv` per job (bare host) | {:.1} ms |",
        ms(median(fresh.clone()))
    );
    println!("| node 18.20.4, installed | {:.1} ms |", ms(median(node)));
    println!(
        "base virtualenv vs a fresh one: {:.3}x",
        ms(median(cow)) / ms(median(fresh))
    );
}
