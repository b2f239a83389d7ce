//! Push triggers through the post-receive hook: real `git push` into a bare repository
//! with `runway hook install`; the pusher sees the build's output and result.

mod common;
use common::{git, run, runway};
use std::path::Path;
use std::process::Command;

fn push(work: &Path, state: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(work)
        .arg("push")
        .args(args)
        .env("RUNWAY_STATE_DIR", state)
        .env("XDG_CACHE_HOME", state.join("cache"))
        .output()
        .expect("git push runs");
    assert!(
        out.status.success(),
        "push failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn pushes_build_with_live_output_filters_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("app.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let r = run(runway().args(["hook", "install"]).arg(&bare));
    assert_eq!(r.code, 0, "{}", r.all());
    let work = dir.path().join("work");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "master"]);
    std::fs::write(
        work.join(".travis.yml"),
        "language: shell\nbranches:\n  only: [master, /^v\\d/]\nscript: echo \"built $TRAVIS_BRANCH range=[$TRAVIS_COMMIT_RANGE]\"\nnotifications:\n  email: false\n",
    )
    .unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    let state = dir.path().join("state");
    let first = git(&work, &["rev-parse", "HEAD"]);

    let out = push(&work, &state, &["-q", "origin", "master"]);
    assert!(
        out.contains("remote: built master range=[]"),
        "a new branch has no range: {out}"
    );
    assert!(out.contains("remote: Build #1 passed"), "{out}");

    git(&work, &["commit", "-q", "--allow-empty", "-m", "second"]);
    let second = git(&work, &["rev-parse", "HEAD"]);
    let out = push(&work, &state, &["-q", "origin", "master"]);
    assert!(
        out.contains(&format!("range=[{first}...{second}]")),
        "{out}"
    );
    assert!(out.contains("Build #2 passed"), "{out}");

    git(&work, &["checkout", "-q", "-b", "feature"]);
    let out = push(&work, &state, &["-q", "origin", "feature"]);
    assert!(
        out.contains("Nothing to build: branch \"feature\" is not in branches.only"),
        "{out}"
    );
    let out = push(&work, &state, &["-q", "origin", "--delete", "feature"]);
    assert!(!out.contains("Build #"), "a deletion builds nothing: {out}");

    git(&work, &["tag", "v1.0"]);
    let out = push(&work, &state, &["-q", "origin", "v1.0"]);
    assert!(out.contains("built v1.0"), "{out}");
    assert!(out.contains("Build #3 passed"), "{out}");

    let h = run(runway().args(["builds"]).env("RUNWAY_STATE_DIR", &state));
    assert!(
        h.stdout.contains("tag v1.0") && h.stdout.contains("#2 "),
        "{}",
        h.all()
    );
}

#[test]
fn install_refuses_to_overwrite_a_foreign_hook() {
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("app.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    std::fs::write(bare.join("hooks/post-receive"), "#!/bin/sh\necho mine\n").unwrap();
    let r = run(runway().args(["hook", "install"]).arg(&bare));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(
        r.stderr.contains("was not written by runway"),
        "{}",
        r.all()
    );
    let r = run(runway().args(["hook", "install", "--force"]).arg(&bare));
    assert_eq!(r.code, 0, "{}", r.all());
    let r = run(runway().args(["hook", "install"]).arg(&bare));
    assert_eq!(
        r.code,
        0,
        "re-installing runway's own hook is fine: {}",
        r.all()
    );
}
