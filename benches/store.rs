//! The build store's two backends side by side: queue N builds, then claim them one at
//! a time (what a worker does per build), on SQLite (the embedded default) and on
//! PostgreSQL (a throwaway cluster of Debian's postgresql, made for this run), rounds
//! alternating. Run: `cargo bench --bench store [N]` as root (initdb runs as postgres).
//!
//! `BENCH_HISTORY=H cargo bench --bench store [N]`: what a build on a node asks of the
//! SQLite store after H ended builds, against a store of none, and against the same H
//! builds without the indexes added 2026-12-06 (the schema before), in one run; then
//! builds on a branch of H ended builds, SQLite and PostgreSQL, against the same without
//! the line's indexes added 2026-12-07.

#[path = "../src/store/cluster.rs"]
#[allow(dead_code)]
mod cluster;

use std::time::{Duration, Instant};

use runway::store::{NewBuild, Store};

/// The build every round queues.
fn bench_build() -> NewBuild {
    NewBuild {
        repo: "o/app".into(),
        branch: Some("main".into()),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        event: "push".into(),
        ..NewBuild::default()
    }
}

/// Queues `n` builds, then claims them all; the time per enqueue and per claim.
fn round(st: &mut Store, n: usize) -> (Duration, Duration) {
    let new = bench_build();
    let t = Instant::now();
    for _ in 0..n {
        st.enqueue(&new).unwrap();
    }
    let enqueue = t.elapsed() / n as u32;
    let t = Instant::now();
    let mut claimed = 0;
    while st.claim().unwrap().is_some() {
        claimed += 1;
    }
    assert_eq!(claimed, n);
    (enqueue, t.elapsed() / n as u32)
}

/// Queues a job for a worker per build (`n` builds), then has a worker claim each, send
/// one log chunk, beat once and report: the store's work per job on a worker.
fn task_round(st: &mut Store, n: usize) -> Duration {
    use runway::store::Status;
    use runway::store::tasks::parse_labels;
    let new = bench_build();
    let needs = parse_labels("os=linux arch=amd64");
    let labels = parse_labels("os=linux arch=amd64 dist=bookworm");
    let builds: Vec<i64> = (0..n).map(|_| st.enqueue(&new).unwrap().id).collect();
    let t = Instant::now();
    for b in &builds {
        st.open_task(*b, "1.1", &needs, "").unwrap();
    }
    let mut done = 0;
    while let Some((task, _)) = st.claim_task("w", "", &labels, 60_000, "h").unwrap() {
        st.add_chunk(&task, 1, 0, b"$ true\n").unwrap();
        st.beat(task.id, 1, "w", 60_000).unwrap();
        st.end_task(task.id, 1, "w", Status::Passed, "{}").unwrap();
        done += 1;
    }
    assert_eq!(done, n);
    while st.claim().unwrap().is_some() {}
    t.elapsed() / n as u32
}

/// What a build on a node asks of the store, from its queueing to its end, with the
/// node's pollers (cancels, holds, due mails and statuses) once a build: the time per
/// build.
fn build_round(st: &mut Store, n: usize, branch: &str) -> Duration {
    use runway::build::BuildState;
    let new = NewBuild {
        branch: Some(branch.into()),
        ..bench_build()
    };
    let node = "bench-node";
    let t = Instant::now();
    for _ in 0..n {
        let b = st.enqueue(&new).unwrap();
        st.cancel_superseded(&b).unwrap();
        let until = runway::store::tasks::now_ms() + 60_000;
        let b = st.claim_for(node, until).unwrap().unwrap();
        st.cancels_requested(node).unwrap();
        st.renew_builds(node, until).unwrap();
        st.due_mails(runway::store::tasks::now_ms()).unwrap();
        st.next_status_at().unwrap();
        assert!(st.finish_held(b.id, node, BuildState::Passed, &[]).unwrap());
    }
    t.elapsed() / n as u32
}

/// [`build_round`] on a store of no builds, one of `history` ended builds, and the same
/// without the indexes 2026-12-06 added (the schema before: the queue, a node's
/// running builds, a branch's previous build, due mails and statuses found by reading
/// every row), rounds alternating; the medians of 5 rounds of `n` builds each.
fn history(n: usize, history: usize) {
    let dir = tempfile::tempdir().unwrap();
    let mut stores: Vec<(std::path::PathBuf, Store)> = ["fresh", "history", "unindexed"]
        .iter()
        .map(|name| {
            let at = dir.path().join(name);
            (at.clone(), Store::open(&at).unwrap())
        })
        .collect();
    // The history: ended builds of other branches (a new branch's previous build is
    // then looked for among all of them).
    for (_, st) in &mut stores[1..] {
        for i in 0..history {
            let _ = build_round(st, 1, &format!("old-{}", i % 500));
        }
    }
    let old = rusqlite::Connection::open(stores[2].0.join("runway.db")).unwrap();
    old.execute_batch(
        "DROP INDEX builds_by_state; DROP INDEX builds_by_branch; DROP INDEX outbox_due;
         DROP INDEX statuses_due; DROP INDEX deliveries_by_at;",
    )
    .unwrap();
    drop(old);
    let mut times = vec![Vec::new(); stores.len()];
    for round in 0..5 {
        for (i, (_, st)) in stores.iter_mut().enumerate() {
            times[i].push(build_round(st, n, &format!("new-{round}")));
        }
    }
    let m: Vec<Duration> = times.into_iter().map(median).collect();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "a build's store work on a node (queue, claim, pollers, end), SQLite, median of 5 rounds of {n}: no history {:.0} µs; after {history} builds {:.0} µs (ratio {:.2}); after {history} builds without the indexes (the schema before 2026-12-06) {:.0} µs (ratio {:.2})",
        us(m[0]),
        us(m[1]),
        m[1].as_secs_f64() / m[0].as_secs_f64(),
        us(m[2]),
        m[2].as_secs_f64() / m[0].as_secs_f64()
    );
    one_branch(n, history, m[0]);
}

/// [`build_round`] on a branch with `history` ended builds of its own (a busy
/// `main`), on both backends, against the same stores without the line's indexes
/// added 2026-12-07 (`builds_by_line`, `builds_waiting`: the schema before, where the
/// new build's auto-cancel read every older build of its branch); `fresh` is the
/// SQLite round on an empty store, for the ratio (PostgreSQL's is a store of its own).
fn one_branch(n: usize, history: usize, fresh: Duration) {
    let dir = tempfile::tempdir().unwrap();
    let (url_new, url_old, url_fresh) = (
        cluster::shared().database("line"),
        cluster::shared().database("unlined"),
        cluster::shared().database("fresh"),
    );
    let mut stores: Vec<Store> = vec![
        Store::open(&dir.path().join("new")).unwrap(),
        Store::open(&dir.path().join("old")).unwrap(),
        Store::connect(&dir.path().join("pg-new"), Some(&url_new)).unwrap(),
        Store::connect(&dir.path().join("pg-old"), Some(&url_old)).unwrap(),
        Store::connect(&dir.path().join("pg-fresh"), Some(&url_fresh)).unwrap(),
    ];
    for st in &mut stores[..4] {
        let _ = build_round(st, history, "main");
    }
    let drop_them = "DROP INDEX builds_by_line; DROP INDEX builds_waiting;";
    rusqlite::Connection::open(dir.path().join("old").join("runway.db"))
        .unwrap()
        .execute_batch(drop_them)
        .unwrap();
    postgres::Client::connect(&url_old, postgres::NoTls)
        .unwrap()
        .batch_execute(drop_them)
        .unwrap();
    let mut times = vec![Vec::new(); stores.len()];
    for _ in 0..5 {
        for (i, st) in stores.iter_mut().enumerate() {
            times[i].push(build_round(st, n, "main"));
        }
    }
    let m: Vec<Duration> = times.into_iter().map(median).collect();
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    for (name, new, old, fresh) in [
        ("SQLite", m[0], m[1], fresh),
        ("PostgreSQL", m[2], m[3], m[4]),
    ] {
        println!(
            "the same on a branch of {history} ended builds, {name}: {:.0} µs (ratio to no history {:.2}); without the line's indexes (the schema before 2026-12-07) {:.0} µs; with/without {:.3}",
            us(new),
            new.as_secs_f64() / fresh.as_secs_f64(),
            us(old),
            new.as_secs_f64() / old.as_secs_f64()
        );
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(500);
    // `BENCH_HISTORY=H`: only the store's work per build after H builds, against none.
    if let Some(h) = std::env::var("BENCH_HISTORY")
        .ok()
        .and_then(|h| h.parse().ok())
    {
        history(n, h);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let url = cluster::shared().database("bench");
    let mut sqlite = Store::open(&dir.path().join("sqlite")).unwrap();
    let mut pg = Store::connect(&dir.path().join("pg"), Some(&url)).unwrap();
    let (mut s_enq, mut s_claim, mut p_enq, mut p_claim) = (vec![], vec![], vec![], vec![]);
    let (mut s_task, mut p_task) = (vec![], vec![]);
    for _ in 0..5 {
        s_task.push(task_round(&mut sqlite, n));
        p_task.push(task_round(&mut pg, n));
        let (e, c) = round(&mut sqlite, n);
        s_enq.push(e);
        s_claim.push(c);
        let (e, c) = round(&mut pg, n);
        p_enq.push(e);
        p_claim.push(c);
    }
    let (se, sc, pe, pc) = (
        median(s_enq),
        median(s_claim),
        median(p_enq),
        median(p_claim),
    );
    println!("store, {n} builds a round, median of 5 rounds:");
    println!(
        "  enqueue: SQLite {:.0} µs, PostgreSQL {:.0} µs (ratio {:.2})",
        se.as_secs_f64() * 1e6,
        pe.as_secs_f64() * 1e6,
        pe.as_secs_f64() / se.as_secs_f64()
    );
    println!(
        "  claim:   SQLite {:.0} µs, PostgreSQL {:.0} µs (ratio {:.2})",
        sc.as_secs_f64() * 1e6,
        pc.as_secs_f64() * 1e6,
        pc.as_secs_f64() / sc.as_secs_f64()
    );
    let (st, pt) = (median(s_task), median(p_task));
    println!(
        "  a job on a worker (queue, claim, a chunk, a beat, the end): SQLite {:.0} µs, PostgreSQL {:.0} µs (ratio {:.2})",
        st.as_secs_f64() * 1e6,
        pt.as_secs_f64() * 1e6,
        pt.as_secs_f64() / st.as_secs_f64()
    );
}
