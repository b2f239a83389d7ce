//! The corpus check: every real `.travis.yml` of ../shared/corpus/travis-yml/configs is
//! linted and planned (a push to master, a tag, a pull request). Zero crashes or hangs,
//! at least 99% without errors, and every diagnostic points at a line and a column.
//! The counts are printed; CI fails below them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::Duration;

use runway::config::{self, diag::Level};
use runway::event::{BuildEvent, EventType};
use runway::plan::{self, Settings};

/// Any single file taking longer than this is a hang (a typical file takes well under 1 ms).
const HANG: Duration = Duration::from_secs(10);

fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNWAY_CORPUS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus/travis-yml/configs")
}

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| {
        panic!(
            "cannot read the corpus at {}: {e}\n\
             CI has ../shared beside the clone; elsewhere set RUNWAY_CORPUS=/path/to/configs",
            dir.display()
        )
    });
    for e in entries {
        let p = e.expect("corpus entry").path();
        if p.is_dir() {
            files(&p, out);
        } else {
            out.push(p);
        }
    }
}

/// The events every file is planned for.
fn events() -> [BuildEvent; 3] {
    let push = BuildEvent {
        repo: "owner/app".into(),
        branch: Some("master".into()),
        event: EventType::Push,
        commit_message: "a change".into(),
        ..BuildEvent::default()
    };
    let tag = BuildEvent {
        branch: None,
        tag: Some("v1.0.0".into()),
        ..push.clone()
    };
    let pr = BuildEvent {
        event: EventType::PullRequest,
        ..push.clone()
    };
    [push, tag, pr]
}

enum Outcome {
    Clean,
    Errors(Vec<String>),
    Crash(String),
}

#[test]
fn corpus_lints_and_plans_without_crash_hang_or_unplaced_diagnostics() {
    let mut all = Vec::new();
    files(&corpus_dir(), &mut all);
    all.sort();
    assert!(
        all.len() > 1000,
        "the corpus looks incomplete: {} files",
        all.len()
    );

    let (tx, rx) = mpsc::channel();
    let work = all.clone();
    std::thread::spawn(move || {
        for path in work {
            let text =
                String::from_utf8_lossy(&std::fs::read(&path).unwrap_or_default()).into_owned();
            let outcome = match std::panic::catch_unwind(|| {
                let loaded = config::load(&text);
                let planned = events()
                    .iter()
                    .filter_map(|e| plan::plan(&loaded.config, e, &Settings::default()).error)
                    .map(|e| e.message)
                    .next();
                (loaded, planned)
            }) {
                Err(p) => Outcome::Crash(
                    p.downcast_ref::<String>()
                        .cloned()
                        .unwrap_or_else(|| "panic".into()),
                ),
                Ok((loaded, planned)) => {
                    let name = path.display().to_string();
                    for d in &loaded.diagnostics {
                        assert!(
                            d.pos.line >= 1 && d.pos.col >= 1,
                            "diagnostic without a place: {}",
                            d.render(&name)
                        );
                    }
                    let mut errors: Vec<String> = loaded
                        .diagnostics
                        .iter()
                        .filter(|d| d.level == Level::Error)
                        .map(|d| d.render(&name))
                        .collect();
                    errors.extend(planned.map(|m| format!("{name}: plan: {m}")));
                    if errors.is_empty() {
                        Outcome::Clean
                    } else {
                        Outcome::Errors(errors)
                    }
                }
            };
            if tx.send(outcome).is_err() {
                return;
            }
        }
    });

    let (mut clean, mut rejected, mut crashes) = (0usize, 0usize, Vec::new());
    for path in &all {
        match rx.recv_timeout(HANG) {
            Ok(Outcome::Clean) => clean += 1,
            Ok(Outcome::Errors(errs)) => {
                rejected += 1;
                if rejected <= 10 {
                    eprintln!("{}", errs[0]);
                }
            }
            Ok(Outcome::Crash(msg)) => crashes.push(format!("{}: {msg}", path.display())),
            Err(_) => panic!("hang: {} took longer than {HANG:?}", path.display()),
        }
    }
    let total = all.len();
    let pct = 100.0 * clean as f64 / total as f64;
    println!(
        "corpus: {total} files, {clean} without errors ({pct:.2}%), {rejected} with errors, {} crashes, 0 hangs",
        crashes.len()
    );
    assert!(crashes.is_empty(), "crashes:\n{}", crashes.join("\n"));
    assert!(
        pct >= 99.0,
        "only {pct:.2}% of the corpus lints without errors (target: 99%)"
    );
}
