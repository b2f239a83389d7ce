//! `runway codedeploy rehearse`: a revision's appspec.yml run as the CodeDeploy agent
//! runs it, on a throwaway copy of this machine (real namespaces, real users made
//! inside the copy), with the agent's error codes and messages.

use crate::common::{Run, run, runway};
use std::path::{Path, PathBuf};

/// A revision directory with this appspec and these scripts (executable unless named
/// `*.noexec.sh`).
fn revision(root: &Path, name: &str, appspec: &str, scripts: &[(&str, &str)]) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(name);
    std::fs::create_dir_all(dir.join("scripts")).unwrap();
    std::fs::write(dir.join("appspec.yml"), appspec).unwrap();
    for (file, body) in scripts {
        let p = dir.join("scripts").join(file);
        let body = format!("#!/bin/bash\n{body}\n");
        if file.ends_with(".noexec.sh") {
            std::fs::write(&p, body).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        } else {
            crate::common::write_executable(&p, &body);
        }
    }
    dir
}

fn rehearse(bundles: &[&Path]) -> Run {
    let mut c = runway();
    c.args([
        "codedeploy",
        "rehearse",
        "--application",
        "app",
        "--deployment-group",
        "group",
    ]);
    c.args(bundles);
    run(&mut c)
}

const HEAD: &str = "version: 0.0\nos: linux\nfiles:\n  - source: /\n    destination: /home/ec2-user/app/step3/zip/\n";

#[test]
fn two_revisions_deploy_in_turn_as_the_agent_would_and_the_host_never_changes() {
    let root = tempfile::tempdir().unwrap();
    let spec = format!(
        "{HEAD}permissions:\n  - object: /home/ec2-user/app\n    pattern: \"**\"\n    owner: ec2-user\n    group: ec2-user\nhooks:\n  ApplicationStop:\n    - location: scripts/stop.sh\n  ApplicationStart:\n    - location: scripts/start.sh\n      timeout: 30\n      runas: ec2-user\n  ValidateService:\n    - location: scripts/health.noexec.sh\n"
    );
    let scripts = |tag: &'static str| -> Vec<(&'static str, String)> {
        vec![
            ("stop.sh", format!("echo \"stopping {tag}: $(cat /home/ec2-user/app/step3/zip/VERSION)\"; pkill -f 'sleep 7131' || true")),
            ("start.sh", "nohup sleep 7131 >/dev/null 2>&1 &\necho \"started as $(whoami) in $LIFECYCLE_EVENT of $DEPLOYMENT_ID for $APPLICATION_NAME/$DEPLOYMENT_GROUP_NAME\"".into()),
            ("health.noexec.sh", "pgrep -f 'sleep 7131' >/dev/null && stat -c 'owner %U' /home/ec2-user/app/step3/zip/VERSION".into()),
        ]
    };
    let s1 = scripts("r1");
    let s1: Vec<(&str, &str)> = s1.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let r1 = revision(root.path(), "r1", &spec, &s1);
    std::fs::write(r1.join("VERSION"), "one\n").unwrap();
    let s2 = scripts("r2");
    let s2: Vec<(&str, &str)> = s2.iter().map(|(a, b)| (*a, b.as_str())).collect();
    let r2 = revision(
        root.path(),
        "r2",
        &format!("{spec}file_exists_behavior: OVERWRITE\n"),
        &s2,
    );
    std::fs::write(r2.join("VERSION"), "two\n").unwrap();
    let r = rehearse(&[&r1, &r2]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("started as ec2-user in ApplicationStart of d-RUNWAY00001 for app/group"),
        "{}",
        r.all()
    );
    // Revision 2's ApplicationStop ran revision 1's script, on revision 1's files.
    assert!(r.stdout.contains("stopping r1: one"), "{}", r.all());
    assert!(!r.stdout.contains("stopping r2"), "{}", r.all());
    assert!(r.stdout.contains("owner ec2-user"), "{}", r.all());
    assert!(
        r.stdout.contains("Script at specified location: scripts/health.noexec.sh is not executable.  Trying to make it executable."),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("Rehearsal succeeded: 2 revision(s)"),
        "{}",
        r.all()
    );
    assert!(
        !Path::new("/home/ec2-user/app").exists(),
        "the host changed"
    );
    crate::common::assert_no_process("sleep 7131");
}

#[test]
fn each_error_code_of_the_agent_with_its_message() {
    let root = tempfile::tempdir().unwrap();
    let case = |name: &str, hooks: &str, scripts: &[(&str, &str)]| {
        let dir = revision(
            root.path(),
            name,
            &format!("{HEAD}hooks:\n{hooks}"),
            scripts,
        );
        rehearse(&[&dir])
    };
    let missing = case(
        "missing",
        "  BeforeInstall:\n    - location: scripts/nope.sh\n",
        &[],
    );
    assert_eq!(missing.code, runway::exit::ERRORED, "{}", missing.all());
    assert!(
        missing.stdout.contains("Rehearsal failed at BeforeInstall of d-RUNWAY00001: ScriptMissing: Script does not exist at specified location: scripts/nope.sh"),
        "{}",
        missing.all()
    );
    // A script the agent cannot make executable: here a link to a read-only file of the
    // copy's /proc (the agent's chmod fails as on a read-only mount), put in the
    // deployment archive by the hook before it (a bundle's own links may not leave it).
    let noexec = {
        let dir = revision(
            root.path(),
            "noexec",
            &format!(
                "{HEAD}hooks:\n  BeforeInstall:\n    - location: scripts/plant.sh\n    - location: scripts/ro.sh\n"
            ),
            &[
                (
                    "plant.sh",
                    "ln -sfn /proc/sys/kernel/hostname \"/opt/codedeploy-agent/deployment-root/$DEPLOYMENT_GROUP_ID/$DEPLOYMENT_ID/deployment-archive/scripts/ro.sh\"",
                ),
                ("ro.noexec.sh", ""),
            ],
        );
        std::fs::rename(dir.join("scripts/ro.noexec.sh"), dir.join("scripts/ro.sh")).unwrap();
        rehearse(&[&dir])
    };
    assert_eq!(noexec.code, runway::exit::ERRORED, "{}", noexec.all());
    assert!(
        noexec.stdout.contains("Script at specified location: scripts/ro.sh is not executable.  Trying to make it executable."),
        "{}",
        noexec.all()
    );
    assert!(
        noexec.stdout.contains("Rehearsal failed at BeforeInstall of d-RUNWAY00001: ScriptNotExecutable: Unable to set script at specified location: scripts/ro.sh as executable"),
        "{}",
        noexec.all()
    );
    let failed = case(
        "failed",
        "  AfterInstall:\n    - location: scripts/seven.sh\n      runas: deploy\n",
        &[("seven.sh", "echo 'last words'; exit 7")],
    );
    assert_eq!(failed.code, runway::exit::ERRORED, "{}", failed.all());
    assert!(
        failed.stdout.contains("    | last words"),
        "{}",
        failed.all()
    );
    assert!(
        failed.stdout.contains("ScriptFailed: Script at specified location: scripts/seven.sh run as user deploy failed with exit code 7"),
        "{}",
        failed.all()
    );
    // The event's scripts share its time (an hour; here 2 s): the second gets what is left.
    let shared = {
        let dir = revision(
            root.path(),
            "shared",
            &format!(
                "{HEAD}hooks:\n  BeforeInstall:\n    - location: scripts/a.sh\n      timeout: 60\n    - location: scripts/b.sh\n      timeout: 60\n"
            ),
            &[("a.sh", "sleep 3"), ("b.sh", "echo never")],
        );
        let mut c = runway();
        c.args(["codedeploy", "rehearse"]).arg(&dir);
        c.env("RUNWAY_CODEDEPLOY_EVENT_SECS", "2");
        run(&mut c)
    };
    assert_eq!(shared.code, runway::exit::ERRORED, "{}", shared.all());
    assert!(
        shared.stdout.contains("ScriptTimedOut: Script at specified location: scripts/a.sh failed to complete in 2 seconds")
            || shared.stdout.contains("ScriptTimedOut: Script at specified location: scripts/a.sh failed to complete in 1 seconds"),
        "{}",
        shared.all()
    );
    let slow = case(
        "slow",
        "  ValidateService:\n    - location: scripts/slow.sh\n      timeout: 1\n",
        &[("slow.sh", "sleep 30")],
    );
    assert_eq!(slow.code, runway::exit::ERRORED, "{}", slow.all());
    assert!(
        slow.stdout.contains("ScriptTimedOut: Script at specified location: scripts/slow.sh failed to complete in 1 seconds"),
        "{}",
        slow.all()
    );
}

#[test]
fn file_exists_behavior_decides_what_happens_to_a_file_already_there() {
    let root = tempfile::tempdir().unwrap();
    let with = |behavior: &str| {
        let spec = format!(
            "version: 0.0\nos: linux\nfiles:\n  - source: /etc-files\n    destination: /etc\n{behavior}hooks:\n  ValidateService:\n    - location: scripts/show.sh\n"
        );
        let dir = revision(
            root.path(),
            &format!("b{}", behavior.len()),
            &spec,
            &[("show.sh", "echo \"issue: $(cat /etc/issue.net)\"")],
        );
        std::fs::create_dir_all(dir.join("etc-files")).unwrap();
        std::fs::write(dir.join("etc-files/issue.net"), "from the revision\n").unwrap();
        rehearse(&[&dir])
    };
    let host = std::fs::read_to_string("/etc/issue.net").unwrap_or_default();
    let disallow = with("");
    assert_eq!(disallow.code, runway::exit::ERRORED, "{}", disallow.all());
    assert!(
        disallow.stdout.contains("Rehearsal failed at Install of d-RUNWAY00001: The deployment failed because a specified file already exists at this location: /etc/issue.net"),
        "{}",
        disallow.all()
    );
    let overwrite = with("file_exists_behavior: OVERWRITE\n");
    assert_eq!(overwrite.code, 0, "{}", overwrite.all());
    assert!(
        overwrite.stdout.contains("issue: from the revision"),
        "{}",
        overwrite.all()
    );
    let retain = with("file_exists_behavior: RETAIN\n");
    assert_eq!(retain.code, 0, "{}", retain.all());
    assert!(
        !retain.stdout.contains("issue: from the revision"),
        "{}",
        retain.all()
    );
    assert_eq!(
        std::fs::read_to_string("/etc/issue.net").unwrap_or_default(),
        host
    );
}

#[test]
fn an_invalid_appspec_deploys_nothing_and_lint_places_each_problem() {
    let root = tempfile::tempdir().unwrap();
    let dir = revision(
        root.path(),
        "bad",
        "version: 1.0\nos: linux\nhooks:\n  AfterInstal:\n    - location: scripts/a.sh\n",
        &[],
    );
    let r = rehearse(&[&dir]);
    assert_eq!(r.code, runway::exit::ERRORED, "{}", r.all());
    assert!(
        r.stdout.contains("appspec.yml:1:10: error: version: "),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains(
            "appspec.yml:4:3: error: hooks.AfterInstal: \"AfterInstal\" is not a lifecycle event"
        ),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("Deployment d-"), "{}", r.all());
    let lint = run(runway().arg("lint").arg(dir.join("appspec.yml")));
    assert_eq!(lint.code, 1, "{}", lint.all());
    assert!(
        lint.stdout.contains(":4:3: error: hooks.AfterInstal:"),
        "{}",
        lint.all()
    );
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/springboot-webservice/appspec.yml"
    );
    let ok = run(runway().args(["lint", fixture]));
    assert_eq!(ok.code, 0, "{}", ok.all());
}

/// Ends the kept copy of the machine of a test's state directory, also when the test
/// fails halfway: stop what you start.
struct Kept {
    state: tempfile::TempDir,
}

impl Kept {
    fn new() -> Kept {
        Kept {
            state: tempfile::tempdir().unwrap(),
        }
    }
    fn rehearse(&self, args: &[&str], bundles: &[&Path]) -> Run {
        let mut c = runway();
        c.env("RUNWAY_STATE_DIR", self.state.path())
            .args(["codedeploy", "rehearse"])
            .args(args)
            .args(bundles);
        run(&mut c)
    }
}

impl Drop for Kept {
    fn drop(&mut self) {
        let _ = self.rehearse(&["--stop"], &[]);
    }
}

/// The fixture's zero-downtime switch (the tutorial's profile, stop, start, health and
/// switch scripts; nginx in front of two instances of the jar), rehearsed for real on
/// a kept copy of the machine, one rehearsal per revision as pushes would make them:
/// revision 1, then revision 2 while a load loop on loopback hits nginx (no request
/// fails across the switch), then a revision whose instance never answers: the
/// rehearsal fails at ValidateService and nginx stays on the instance it had. `--stop`
/// ends the copy and everything in it.
#[test]
fn the_fixtures_zero_downtime_switch_loses_no_request_and_a_bad_revision_leaves_nginx_alone() {
    use std::io::{Read, Write};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/springboot-webservice");
    let work = tempfile::tempdir().unwrap();
    let copy = work.path().join("project");
    let cp = std::process::Command::new("cp")
        .arg("-a")
        .arg(&fixture)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(cp.success());
    let built = std::process::Command::new("./gradlew")
        .arg("assemble")
        .current_dir(&copy)
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    // The bundle as the fixture's before_deploy makes it: scripts, appspec, jar.
    let bundle = |name: &str, broken: bool| {
        let dir = work.path().join(name);
        std::fs::create_dir_all(&dir).unwrap();
        for e in std::fs::read_dir(copy.join("scripts")).unwrap().flatten() {
            std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
        }
        std::fs::copy(copy.join("appspec.yml"), dir.join("appspec.yml")).unwrap();
        let jar = "springboot2-webservice-1.0.0-SNAPSHOT.jar";
        if broken {
            std::fs::write(dir.join(jar), "not a jar").unwrap();
        } else {
            std::fs::copy(copy.join("build/libs").join(jar), dir.join(jar)).unwrap();
        }
        dir
    };
    let (r1, r2, r3) = (bundle("r1", false), bundle("r2", false), bundle("r3", true));
    let kept = Kept::new();
    let first = kept.rehearse(&["--keep"], &[&r1]);
    assert_eq!(first.code, 0, "{}", first.all());
    assert!(
        first
            .stdout
            .contains("Rehearsal succeeded: 1 revision(s) deployed on the kept copy"),
        "{}",
        first.all()
    );

    // The load, from now on: one request at a time on loopback.
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Mutex::new((Vec::<String>::new(), 0usize, 0usize)));
    let what_failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let load = {
        let (stop, seen) = (stop.clone(), seen.clone());
        let what_failed = what_failed.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let answer = std::net::TcpStream::connect(("127.0.0.1", 80)).and_then(|mut s| {
                    s.write_all(b"GET /profile HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
                    let mut text = String::new();
                    s.read_to_string(&mut text)?;
                    Ok(text)
                });
                let mut st = seen.lock().unwrap();
                match answer {
                    Ok(t) if t.starts_with("HTTP/1.1 200") => {
                        st.2 += 1;
                        let body = t.rsplit("\r\n\r\n").next().unwrap_or("").to_string();
                        if st.0.last() != Some(&body) {
                            st.0.push(body);
                        }
                    }
                    other => {
                        st.1 += 1;
                        let mut w = what_failed.lock().unwrap();
                        if w.len() < 3 {
                            w.push(format!("{other:?}").chars().take(200).collect());
                        }
                    }
                }
                drop(st);
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
        })
    };
    let second = kept.rehearse(&["--keep"], &[&r2]);
    let third = kept.rehearse(&["--keep"], &[&r3]);
    stop.store(true, Ordering::Relaxed);
    load.join().unwrap();
    let all = format!("{}\n{}\n{}", first.all(), second.all(), third.all());
    assert_eq!(second.code, 0, "{all}");
    // Revision 2 deployed over the running revision 1 (its ApplicationStop ran).
    assert!(second.stdout.contains("Deployment d-RUNWAY00002"), "{all}");
    assert_eq!(third.code, runway::exit::ERRORED, "{all}");
    assert!(
        third.stdout.contains("Rehearsal failed at ValidateService of d-RUNWAY00003: ScriptFailed: Script at specified location: health.sh run as user ec2-user failed with exit code 1"),
        "{all}"
    );
    assert!(
        third.stdout.contains(
            "The kept copy of the machine keeps running, on the last revision that deployed"
        ),
        "{all}"
    );
    let (profiles, failures, answered) = seen.lock().unwrap().clone();
    assert!(answered > 0, "nginx never answered: {all}");
    let what = what_failed.lock().unwrap().clone();
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed across the switch: {what:#?}\n{all}",
        failures + answered
    );
    // real1 after revision 1, real2 after revision 2 (for the moment of nginx's reload
    // old and new workers both answer), and still real2 after the bad one.
    assert_eq!(
        profiles.first().map(String::as_str),
        Some("real1"),
        "{profiles:?}"
    );
    assert_eq!(
        profiles.last().map(String::as_str),
        Some("real2"),
        "{profiles:?}"
    );
    assert!(
        profiles.iter().all(|p| p == "real1" || p == "real2"),
        "{profiles:?}"
    );
    let stopped = kept.rehearse(&["--stop"], &[]);
    assert_eq!(stopped.code, 0, "{}", stopped.all());
    assert!(
        stopped
            .stdout
            .contains("Stopped the kept copy of the machine for application/deployment-group"),
        "{}",
        stopped.all()
    );
    assert!(!Path::new("/home/ec2-user").exists(), "the host changed");
    crate::common::assert_no_process("spring.profiles.active=real");
}

/// A kept copy dies with its process: a `kill -9` leaves no hook's process behind, and
/// the next rehearsal finds no copy (it says so) instead of a dead socket.
#[test]
fn a_kept_copy_killed_takes_what_its_hooks_started_with_it() {
    let root = tempfile::tempdir().unwrap();
    let dir = revision(
        root.path(),
        "r1",
        &format!("{HEAD}hooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"),
        &[("start.sh", "nohup sleep 7134 >/dev/null 2>&1 &")],
    );
    let kept = Kept::new();
    let r = kept.rehearse(&["--keep"], &[&dir]);
    assert_eq!(r.code, 0, "{}", r.all());
    let pid: i32 = r
        .stdout
        .split("kept copy of this machine (pid ")
        .nth(1)
        .and_then(|t| t.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid: {}", r.all()));
    let running = std::process::Command::new("pgrep")
        .args(["-f", "sleep 7134"])
        .output()
        .unwrap();
    assert!(
        running.status.success(),
        "the hook's process is not running"
    );
    // SAFETY: a plain kill(2) of the kept machine's process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    crate::common::wait_gone("sleep 7134", 30);
    crate::common::assert_no_process("sleep 7134");
    let again = kept.rehearse(&["--stop"], &[]);
    assert_eq!(again.code, 0, "{}", again.all());
    assert!(
        again.stdout.contains(
            "No kept copy of the machine for application/deployment-group: nothing to stop"
        ),
        "{}",
        again.all()
    );
}

/// `--hold` keeps the copy (and what the hooks started) until standard input ends.
#[test]
fn hold_keeps_the_copy_until_standard_input_ends() {
    let root = tempfile::tempdir().unwrap();
    let dir = revision(
        root.path(),
        "r1",
        &format!("{HEAD}hooks:\n  ApplicationStart:\n    - location: scripts/start.sh\n"),
        &[("start.sh", "nohup sleep 7135 >/dev/null 2>&1 &")],
    );
    let mut cmd = runway();
    cmd.args(["codedeploy", "rehearse", "--hold"])
        .arg(&dir)
        .stdin(std::process::Stdio::piped());
    let mut lines = crate::common::Lines::spawn(&mut cmd, false);
    let stdin = lines.child.stdin.take().unwrap();
    let (out, held) = lines.wait_for("Holding the copy of the machine", 120);
    assert!(held, "{out:?}");
    let running = std::process::Command::new("pgrep")
        .args(["-f", "sleep 7135"])
        .output()
        .unwrap();
    assert!(running.status.success(), "not running while held: {out:?}");
    drop(stdin);
    let (code, rest) = lines.finish(60);
    assert_eq!(code, Some(0), "{out:?} {rest:?}");
    crate::common::assert_no_process("sleep 7135");
}

/// The seed pipeline in one command: the fixture's build, its S3 and CodeDeploy dry
/// run, then the bundle its `before_deploy` zipped deployed on a throwaway copy of the
/// machine as the agent would (in a network namespace of its own, so its nginx never
/// meets another's).
#[test]
fn run_rehearse_deploy_rehearses_the_bundle_the_codedeploy_provider_ships() {
    let fixture = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/springboot-webservice"
    );
    let r = run(runway().args([
        "run",
        fixture,
        "--branch",
        "master",
        "--rehearse-deploy",
        "--show-mail",
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("/deploy/springboot2-webservice.zip as the CodeDeploy agent would deploy it"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains(
            "Deployment d-RUNWAY00001 of springboot2-webservice to springboot2-webservice-group"
        ),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("> nginx serves real1"), "{}", r.all());
    assert!(
        r.stdout.contains("Rehearsal succeeded: 1 revision(s)"),
        "{}",
        r.all()
    );
    // The mail says so beside the deploy.
    assert!(
        r.stdout.contains(
            "job 1.1: codedeploy: dry run (no --deploy); the bundle rehearsed as the agent would deploy it: succeeded"
        ),
        "{}",
        r.all()
    );
}
