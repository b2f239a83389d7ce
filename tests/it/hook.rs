//! Push triggers through the post-receive hook: real `git push` into a bare repository
//! with `runway hook install`; the pusher sees the build's output and result.

use crate::common::{git, run, runway};
use std::path::{Path, PathBuf};
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

/// A bare repository `app.git` and a clone `work` on master with one commit holding
/// this `.travis.yml` (not pushed yet).
fn bare_and_work(dir: &Path, yml: &str) -> (PathBuf, PathBuf) {
    let bare = dir.join("app.git");
    git(dir, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let work = dir.join("work");
    git(
        dir,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            work.to_str().unwrap(),
        ],
    );
    git(&work, &["checkout", "-q", "-b", "master"]);
    std::fs::write(work.join(".travis.yml"), yml).unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    (bare, work)
}

#[test]
fn pushes_build_with_live_output_filters_and_tags() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = bare_and_work(
        dir.path(),
        "language: shell\nbranches:\n  only: [master, /^v\\d/]\nscript: echo \"built $TRAVIS_BRANCH range=[$TRAVIS_COMMIT_RANGE]\"\nnotifications:\n  email: false\n",
    );
    let r = run(runway().args(["hook", "install"]).arg(&bare));
    assert_eq!(r.code, 0, "{}", r.all());
    let state = dir.path().join("state");
    let first = git(&work, &["rev-parse", "HEAD"]);

    let out = push(&work, &state, &["-q", "origin", "master"]);
    // issue 14: the pusher sees folds and timings for people, not raw markers.
    assert!(
        !out.contains("travis_fold") && !out.contains("travis_time"),
        "{out}"
    );
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

/// Issue #6: "With `--detach` (or per repository in runway.toml) the push returns at
/// once". `hook install --config runway.toml` finds the repository by its path; the
/// file is read at every push, so `detach = true` queues and `detach = false` builds
/// live, with the name and settings (secret unless public) of the repository's entry.
#[test]
fn runway_toml_decides_per_repository_whether_a_push_waits() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = bare_and_work(
        dir.path(),
        "language: shell\nscript: echo \"slug=$TRAVIS_REPO_SLUG greeting=$GREETING password=$DB_PASSWORD\"\nnotifications:\n  email: false\n",
    );
    let config = dir.path().join("runway.toml");
    let toml = |detach: bool| {
        format!(
            "[[repo]]\nname = \"team/app\"\nurl = \"{}\"\ndetach = {detach}\npublic = [\"GREETING\"]\n[repo.env]\nGREETING = \"hello\"\nDB_PASSWORD = \"hunter2-db\"\n",
            bare.display()
        )
    };
    std::fs::write(&config, toml(true)).unwrap();

    // A config without this repository is refused at install, naming what is missing.
    let other = dir.path().join("other.toml");
    std::fs::write(
        &other,
        "[[repo]]\nname = \"team/else\"\nurl = \"/nowhere\"\n",
    )
    .unwrap();
    let r = run(runway()
        .args(["hook", "install", "--config"])
        .arg(&other)
        .arg(&bare));
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("no [[repo]] has url ="), "{}", r.stderr);

    let r = run(runway()
        .args(["hook", "install", "--config"])
        .arg(&config)
        .arg(&bare));
    assert_eq!(r.code, 0, "{}", r.all());
    let state = dir.path().join("state");

    let out = push(&work, &state, &["-q", "origin", "master"]);
    assert!(
        out.contains("build #1 of team/app (refs/heads/master) queued"),
        "detach = true queues: {out}"
    );
    assert!(!out.contains("slug="), "nothing ran: {out}");

    std::fs::write(&config, toml(false)).unwrap();
    git(&work, &["commit", "-q", "--allow-empty", "-m", "second"]);
    let out = push(&work, &state, &["-q", "origin", "master"]);
    assert!(
        out.contains("remote: slug=team/app greeting=hello password=[secure]"),
        "detach = false builds live with the entry's settings: {out}"
    );
    assert!(out.contains("passed"), "{out}");
    assert!(!out.contains("hunter2-db"), "{out}");
}

/// Ctrl-C in the pusher's terminal (SIGINT to `git push`'s process group, which the
/// hook shares) cancels the build: the job's processes are killed, not left running
/// after the push ends, and the build is recorded as canceled.
#[test]
fn ctrl_c_during_a_push_cancels_the_build() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = bare_and_work(
        dir.path(),
        "language: shell\nscript: echo started; sleep 86423\nnotifications:\n  email: false\n",
    );
    let r = run(runway().args(["hook", "install"]).arg(&bare));
    assert_eq!(r.code, 0, "{}", r.all());
    let state = dir.path().join("state");
    let push = crate::common::Lines::spawn(
        Command::new("git")
            .current_dir(&work)
            .args(["push", "-q", "origin", "master"])
            .env("RUNWAY_STATE_DIR", &state)
            .env("XDG_CACHE_HOME", state.join("cache"))
            .process_group(0),
        true,
    );
    let (seen, started) = push.wait_for("remote: started", 60);
    assert!(started, "{seen:#?}");
    let group = format!("-{}", push.child.id());
    assert!(
        Command::new("kill")
            .args(["-INT", "--", &group])
            .status()
            .unwrap()
            .success()
    );
    let (_, rest) = push.finish(60);
    // The hook goes on after git push is gone: give it the time to cancel and record.
    let mut history = String::new();
    for _ in 0..100 {
        history = run(runway().args(["builds"]).env("RUNWAY_STATE_DIR", &state)).stdout;
        if history.contains("canceled") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(history.contains("canceled"), "{history}{seen:#?}{rest:#?}");
    crate::common::assert_no_process("sleep 86423");
}

/// issue 14: a hook whose runway binary is gone (`cargo clean`, a moved checkout)
/// built nothing in silence; the pusher is told, with the commands that mend it.
#[test]
fn a_hook_whose_runway_is_gone_tells_the_pusher_how_to_mend_it() {
    let dir = tempfile::tempdir().unwrap();
    let (bare, work) = bare_and_work(dir.path(), "language: shell\nscript: echo built\n");
    let copy = dir.path().join("bin/runway");
    std::fs::create_dir_all(copy.parent().unwrap()).unwrap();
    crate::common::copy_executable(Path::new(env!("CARGO_BIN_EXE_runway")), &copy);
    let r = run(Command::new(&copy)
        .args(["hook", "install"])
        .arg(&bare)
        .arg("--detach"));
    assert_eq!(r.code, 0, "{}", r.all());
    std::fs::remove_file(&copy).unwrap();
    let state = dir.path().join("state");
    let out = push(&work, &state, &["-q", "origin", "master"]);
    assert!(
        out.contains("runway: nothing was built: the hook's runway binary is gone"),
        "{out}"
    );
    assert!(
        out.contains("cargo install --locked --path .")
            && out.contains(&format!(
                "runway hook install '{}' --detach",
                bare.canonicalize().unwrap().display()
            )),
        "{out}"
    );
    assert!(!out.contains("built\n"), "{out}");
}
