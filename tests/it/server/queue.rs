//! The durable queue: crashes, auto-cancel, cancel, SIGTERM, concurrency, following a build.

use super::*;

#[test]
fn crash_midway_loses_nothing_and_runs_nothing_twice() {
    let ledger = crate::common::Ledger::start();
    let s = Setup::new(
        &format!(
            "language: shell\nscript: echo \"$TRAVIS_BUILD_NUMBER\" > /dev/tcp/127.0.0.1/{} && sleep 0.2\n",
            ledger.port
        ),
        "auto_cancel = false",
    );
    let sha = s.head();
    let srv = s.start();
    for i in 0..50 {
        let (code, text) = generic(&srv, &format!("b{i}"), &sha);
        assert_eq!(code, 202, "{text}");
    }
    // Let some builds finish, then kill the server mid-build.
    wait_for(|| ledger.lines().len() >= 6, "some builds");
    srv.signal("-KILL");
    drop(srv);
    let srv = s.start();
    wait_for(
        || {
            let st = states(&srv);
            st.len() == 50 && st.iter().all(|(_, s)| s == "passed" || s == "errored")
        },
        "all 50 builds to end",
    );
    let all = states(&srv);
    let interrupted: Vec<u64> = all
        .iter()
        .filter(|(_, s)| s == "errored")
        .map(|(n, _)| *n)
        .collect();
    let passed = all.iter().filter(|(_, s)| s == "passed").count();
    assert_eq!(passed + interrupted.len(), 50);
    let lines: Vec<u64> = ledger.lines().iter().map(|l| l.parse().unwrap()).collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), lines.len(), "a build ran twice: {lines:?}");
    for n in 1..=50u64 {
        let st = &all.iter().find(|(m, _)| *m == n).unwrap().1;
        if st == "passed" {
            assert!(lines.contains(&n), "build {n} passed without running");
        }
    }
    for n in &interrupted {
        let b = srv.json(&format!("/api/builds/{n}"));
        assert!(
            b["reason"].as_str().unwrap_or("").contains("interrupted"),
            "{b}"
        );
    }
    assert!(
        interrupted.len() <= 2,
        "only the builds running at the kill are interrupted: {interrupted:?}"
    );
    // `runway restart N` queues an interrupted build again; the server runs it.
    if let Some(n) = interrupted.first() {
        let r = crate::common::run(
            crate::common::runway()
                .args(["restart", &n.to_string()])
                .env("RUNWAY_STATE_DIR", s.state()),
        );
        assert_eq!(r.code, 0, "{}", r.all());
        wait_for(
            || srv.json(&format!("/api/builds/{n}"))["state"] == "passed",
            "the restarted build",
        );
    }
}

#[test]
fn auto_cancel_supersedes_queued_builds_and_cancel_kills_a_running_one() {
    let s = Setup::new(
        "language: shell\nscript:\n  - sleep 8300$TRAVIS_BUILD_NUMBER & echo CHILD-STARTED; sleep 300\n",
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"",
    );
    let srv = s.start();
    let first = s.head();
    // concurrency 2: builds 1 and 2 run (different branches), 3..5 queue on master.
    assert_eq!(generic(&srv, "master", &first).0, 202);
    assert_eq!(generic(&srv, "other", &first).0, 202);
    wait_for(
        || states(&srv).iter().filter(|(_, s)| s == "running").count() == 2,
        "two running builds",
    );
    // Their jobs have started: a build taken from the queue whose job has not started
    // yet is superseded too (as designed), and on a loaded machine build 1 could still
    // be starting when build 3 arrives.
    for n in [1, 2] {
        wait_for(
            || {
                srv.request("GET", &format!("/api/builds/{n}/log"), &[], b"")
                    .1
                    .contains("\nCHILD-STARTED")
            },
            "the running builds' jobs to start",
        );
    }
    for i in 0..3 {
        let sha = s.commit("master", &format!("push {i}"));
        assert_eq!(generic(&srv, "master", &sha).0, 202);
    }
    // Still queued, or taken from the queue with no job started (the node following
    // it cancels it a moment later): canceled either way.
    let (mut b3, mut b4) = (serde_json::Value::Null, serde_json::Value::Null);
    let both = came_true(|| {
        b3 = srv.json("/api/builds/3");
        b4 = srv.json("/api/builds/4");
        b3["state"] == "canceled" && b4["state"] == "canceled"
    });
    assert!(
        both,
        "{b3} {b4}\nbuild 1: {}\nbuild 2: {}",
        srv.json("/api/builds/1"),
        srv.json("/api/builds/2")
    );
    assert!(
        b3["reason"]
            .as_str()
            .unwrap()
            .contains("superseded by build #"),
        "{b3}"
    );
    assert_eq!(srv.json("/api/builds/5")["state"], "queued");

    // Cancel running build 1: its process group dies.
    wait_for(
        || {
            srv.request("GET", "/api/builds/1/log", &[], b"")
                .1
                .contains("\nCHILD-STARTED")
        },
        "build 1's child",
    );
    assert!(
        !std::process::Command::new("pgrep")
            .args(["-f", "sleep 83001"])
            .output()
            .unwrap()
            .stdout
            .is_empty(),
        "build 1's child runs"
    );
    // Canceling takes the API token: none or a wrong one is refused, and nothing stops.
    let (code, text) = srv.request("POST", "/api/builds/1/cancel", &[], b"");
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("no Authorization: Bearer token"), "{text}");
    let wrong = [("Authorization", "Bearer t0kem")];
    let (code, text) = srv.request("POST", "/api/builds/1/cancel", &wrong, b"");
    assert_eq!(code, 401, "{text}");
    assert!(text.contains("does not match api_token_env"), "{text}");
    assert_eq!(srv.json("/api/builds/1")["state"], "running");
    let auth = [("Authorization", &*format!("Bearer {API_TOKEN}"))];
    let (code, text) = srv.request("POST", "/api/builds/1/cancel", &auth, b"");
    assert_eq!(code, 202, "{text}");
    wait_for(
        || srv.json("/api/builds/1")["state"] == "canceled",
        "build 1 canceled",
    );
    crate::common::wait_gone("sleep 83001", 10);
    for n in [2, 5] {
        let _ = srv.request("POST", &format!("/api/builds/{n}/cancel"), &auth, b"");
    }
    wait_for(
        || {
            states(&srv)
                .iter()
                .all(|(_, s)| s != "running" && s != "queued")
        },
        "everything canceled",
    );
}

/// `runway log -f N` (what a detached push says to run) follows a server build from the
/// queue to its end, printing its log as it grows, and exits with the build's result.
#[test]
fn log_follow_prints_a_running_build_as_it_goes_and_exits_with_its_result() {
    let s = Setup::new(
        "language: shell\nscript:\n  - echo step-one\n  - sleep 2\n  - echo step-two\n  - exit 1\nnotifications:\n  email: false\n",
        "",
    );
    let srv = s.start();
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    let mut follow = crate::common::Lines::spawn(
        crate::common::runway()
            .args(["log", "-f", "1"])
            .env("RUNWAY_STATE_DIR", s.state()),
        false,
    );
    let (seen, live) = follow.wait_for("$ echo step-one", 60);
    assert!(live, "{seen:#?}");
    // issue 14: while the build runs, the API lists its started jobs (it said []).
    let running = srv.json("/api/builds/1");
    assert_eq!(running["jobs"][0]["number"], "1.1", "{running}");
    assert_eq!(running["jobs"][0]["result"], "running", "{running}");
    assert!(
        follow.child.try_wait().unwrap().is_none(),
        "still following while the build runs"
    );
    assert!(
        !seen.iter().any(|l| l.contains("step-two")),
        "step-one came before the build went on: {seen:#?}"
    );
    let (code, rest) = follow.finish(60);
    assert_eq!(code, Some(1), "a failed build: {seen:#?}{rest:#?}");
    assert!(rest.iter().any(|l| l == "step-two"), "{rest:#?}");
    assert_eq!(
        rest.last().map(String::as_str),
        Some("runway: build o/app#1 failed"),
        "{rest:#?}"
    );
    assert!(
        rest.iter().any(|l| l.starts_with("Build #1 failed")),
        "the build's own summary line: {rest:#?}"
    );
    // Once it has ended, -f still answers with its result, for scripts.
    let again = crate::common::run(
        crate::common::runway()
            .args(["log", "-f", "1"])
            .env("RUNWAY_STATE_DIR", s.state()),
    );
    assert_eq!(again.code, 1, "{}", again.all());
    assert!(again.stdout.contains("\nstep-two\n"), "{}", again.stdout);
}

/// An operator who will not wait out the grace period sends a second SIGTERM (or presses
/// Ctrl-C twice): the running build is canceled at once, its job killed.
#[test]
fn a_second_sigterm_cancels_running_builds_at_once() {
    let s = Setup::new(
        "language: shell\nscript: echo started; sleep 86425\nnotifications:\n  email: false\n",
        "",
    );
    let config_text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("shutdown_grace_secs = 5", "shutdown_grace_secs = 600");
    std::fs::write(&s.config, config_text).unwrap();
    let mut srv = s.start();
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(
        || {
            srv.request("GET", "/api/builds/1/log", &[], b"")
                .1
                .contains("\nstarted\n")
        },
        "the job to start",
    );
    srv.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !srv.exited_within(1),
        "the first SIGTERM waits for the build"
    );
    srv.signal("-TERM");
    assert!(
        srv.exited_within(60),
        "the second SIGTERM did not cancel the build (grace is 600 s)"
    );
    crate::common::assert_no_process("sleep 86425");
    drop(srv);
    let srv = s.start();
    assert_eq!(srv.json("/api/builds/1")["state"], "canceled");
}

#[test]
fn sigterm_finishes_running_builds_and_keeps_the_queue() {
    let s = Setup::new(
        "language: shell\nscript: sleep 1 && echo done\n",
        "concurrency = 1",
    );
    let config_text = std::fs::read_to_string(&s.config)
        .unwrap()
        .replace("concurrency = 2\n", "");
    std::fs::write(&s.config, config_text).unwrap();
    let srv = s.start();
    let sha = s.head();
    for b in ["a", "b", "c"] {
        assert_eq!(generic(&srv, b, &sha).0, 202);
    }
    wait_for(
        || states(&srv).iter().any(|(_, s)| s == "running"),
        "a running build",
    );
    srv.signal("-TERM");
    let mut srv = srv;
    let status = srv.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let mut rest = String::new();
    std::io::Read::read_to_string(srv.stdout.as_mut().unwrap(), &mut rest).unwrap();
    assert!(rest.contains("queued builds stay queued"), "{rest}");
    let srv = s.start();
    let st = states(&srv);
    assert_eq!(
        st.iter().filter(|(_, s)| s == "passed").count()
            + st.iter()
                .filter(|(_, s)| s == "queued" || s == "running")
                .count(),
        3,
        "{st:?}"
    );
    assert!(
        !st.iter().any(|(_, s)| s == "errored"),
        "the running build finished within the grace period: {st:?}"
    );
    wait_for(
        || states(&srv).iter().all(|(_, s)| s == "passed"),
        "the queue drained after the restart",
    );
    let _ = &s.bare;
}

/// Issue #6, "workers: up to `concurrency` jobs at once": with `concurrency = 3`, two
/// builds of four jobs each never run more than three jobs at once, and a build's own
/// jobs run side by side (the limit is on jobs, not on builds).
#[test]
fn concurrency_limits_jobs_across_builds() {
    // Each job holds a connection to this counter for two seconds (jobs share the
    // host's loopback, not its files); the counter keeps the most open at once.
    let counter = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = counter.local_addr().unwrap().port();
    let open = std::sync::Arc::new(std::sync::Mutex::new((0usize, 0usize, 0usize)));
    let tally = open.clone();
    std::thread::spawn(move || {
        for conn in counter.incoming() {
            let Ok(mut conn) = conn else { break };
            let tally = tally.clone();
            {
                let mut t = tally.lock().unwrap();
                t.0 += 1;
                t.1 = t.1.max(t.0);
                t.2 += 1;
            }
            std::thread::spawn(move || {
                let _ = std::io::Read::read_to_end(&mut conn, &mut Vec::new());
                tally.lock().unwrap().0 -= 1;
            });
        }
    });
    let s = Setup::new(
        &format!(
            "language: shell\nenv:\n  - N=1\n  - N=2\n  - N=3\n  - N=4\nscript:\n  - exec 7<>/dev/tcp/127.0.0.1/{port}\n  - sleep 2\n  - exec 7>&-\n"
        ),
        "",
    );
    let toml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        toml.replace("concurrency = 2", "concurrency = 3"),
    )
    .unwrap();
    let srv = s.start();
    let head = s.head();
    assert_eq!(generic(&srv, "master", &head).0, 202);
    assert_eq!(generic(&srv, "other", &head).0, 202);
    wait_for(
        || states(&srv).iter().all(|(_, st)| st == "passed"),
        "both builds to pass",
    );
    let (now, peak, total) = *open.lock().unwrap();
    assert_eq!((now, total), (0, 8), "every job connected once and let go");
    assert_eq!(peak, 3, "jobs running at once, across the two builds");
}

/// "Nothing is lost": a build that a crash (SIGKILL of the server) interrupts keeps the
/// log it had printed; after the restart `runway log`, the API and the build page show
/// it, with the reason the build ended. The job's processes, which outlive the killed
/// server, are ended by the restart, and the build is mailed as errored.
#[test]
fn a_crash_keeps_the_interrupted_builds_log_and_the_restart_ends_its_job_and_mails() {
    use crate::common::smtp::Smtp;
    let smtp = Smtp::start(&[]);
    let pids = tempfile::tempdir().unwrap();
    let pid_file = pids.path().join("sleep.pid");
    let s = Setup::new(
        &format!(
            "language: shell\nscript:\n  - echo before-the-crash\n  - echo \"$PWD\" > {}.dir; sleep 300 & echo $! > {}; wait\nnotifications:\n  email:\n    recipients: [team@example.com]\n",
            pid_file.display(),
            pid_file.display()
        ),
        // On the bare host, where a job's processes outlive a killed server and only the
        // restart ends them (sandboxed jobs die with it: tests/it/sandbox.rs).
        &format!(
            "sandbox = \"none\"\n[smtp]\nurl = \"smtp://127.0.0.1:{}\"\n",
            smtp.port
        ),
    );
    let srv = s.start();
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(|| pid_file.exists(), "the job to start");
    srv.signal("-KILL");
    drop(srv);
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_string();
    let running = |pid: &str| {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|st| {
            !st.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
    };
    assert!(running(&pid), "the job outlives the killed server");
    let build_dir = std::fs::read_to_string(pid_file.with_extension("pid.dir")).unwrap();
    let build_dir = Path::new(build_dir.trim());
    assert!(build_dir.exists(), "{}", build_dir.display());

    // The restart errors the build and ends the job's process group.
    let mut srv = s.start();
    let (tx, rx) = std::sync::mpsc::channel();
    let out = srv.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufRead::lines(out).map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut said = String::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(10)) {
        said.push_str(&line);
        said.push('\n');
        if line.contains("process group") {
            break;
        }
    }
    assert!(said.contains("build o/app#1 was interrupted"), "{said}");
    assert!(said.contains("killed 1 job process group(s)"), "{said}");
    wait_for(|| !running(&pid), "the orphaned job to end");
    assert!(
        !build_dir.exists(),
        "the restart removes the interrupted job's workspace: {}",
        build_dir.display()
    );
    let b = srv.json("/api/builds/1");
    assert_eq!(b["state"], "errored", "{b}");
    let r = crate::common::run(
        crate::common::runway()
            .args(["log", "1"])
            .env("RUNWAY_STATE_DIR", s.state()),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\nbefore-the-crash\n"), "{}", r.stdout);
    assert!(
        r.stdout
            .contains("runway: build o/app#1 is errored: interrupted"),
        "{}",
        r.stdout
    );
    let (code, log) = srv.request("GET", "/api/builds/1/log", &[], b"");
    assert_eq!(code, 200);
    assert!(log.contains("\nbefore-the-crash\n"), "{log}");
    let (code, page) = srv.request("GET", "/builds/1", &[], b"");
    assert_eq!(code, 200);
    assert!(page.contains("before-the-crash"), "{page}");

    // And it still mails, as errored, with the log it had printed.
    assert!(said.contains("queued 1 mail(s)"), "{said}");
    wait_for(|| !smtp.messages().is_empty(), "the errored build's mail");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert_eq!(mails[0].to, ["team@example.com"]);
    assert!(
        mails[0]
            .subject
            .starts_with("[runway] Errored: o/app#1 (master - "),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0].text.contains("before-the-crash"),
        "{}",
        mails[0].text
    );
    assert!(
        mails[0]
            .text
            .contains("runway stopped while this build was running"),
        "{}",
        mails[0].text
    );
}

/// `[retention]`: a server prunes the ended builds no rule keeps (here: all but the
/// last two of each branch) with their logs, at start and hourly; each branch's last
/// builds and the repository's newest stay.
#[test]
fn retention_prunes_old_builds_and_their_logs() {
    // Logs of more than 4 KiB (a shorter one stays in its row).
    let s = Setup::new(
        "language: shell\nscript:\n  - echo kept\n  - seq 1 2000\nnotifications:\n  email: false\n",
        "auto_cancel = false\n[retention]\nkeep_builds = 2",
    );
    let srv = s.start();
    let sha = s.head();
    for _ in 0..4 {
        let (code, text) = generic(&srv, "master", &sha);
        assert_eq!(code, 202, "{text}");
    }
    wait_for(
        || {
            let st = states(&srv);
            st.len() == 4 && st.iter().all(|(_, s)| s == "passed")
        },
        "four builds passed",
    );
    let archived = |id: u64| s.state().join(format!("logs/archive/{id}/{id}.1.log.zst"));
    assert!(archived(1).exists(), "the log left the database for a file");
    drop(srv);
    let srv = s.start();
    wait_for(|| states(&srv).len() == 2, "builds 1 and 2 pruned at start");
    let left: Vec<u64> = states(&srv).into_iter().map(|(n, _)| n).collect();
    assert_eq!(left, [4, 3]);
    assert!(!archived(1).exists() && !archived(2).exists());
    let (_, log) = srv.request("GET", "/api/builds/4/log", &[], b"");
    assert!(log.contains("kept"), "{log}");
}

/// Issue 28 (1): `auto_cancel` canceled only builds still in the queue; a build taken
/// from it whose jobs all wait for a slot (every slot busy) counted as running and ran
/// in full after a newer push. Now a newer build of the branch cancels every older one
/// that has not started a job, as Travis did; one that has started runs on. Two slots:
/// build 1's two jobs take both, build 2 is taken and waits, build 3 cancels build 2
/// (not build 1), and runs once build 1 is done.
#[test]
fn auto_cancel_cancels_a_taken_build_that_has_not_started_a_job() {
    // Build 1's jobs hold both slots until the test opens a gate (a port to connect
    // to), so builds 2 and 3 come while they run, however loaded the machine.
    let port = crate::common::free_port();
    let s = Setup::new(
        &format!(
            "language: shell\nenv:\n  - N=1\n  - N=2\nscript:\n  - echo ran-$TRAVIS_JOB_NUMBER\n  - if [ $TRAVIS_BUILD_NUMBER = 1 ]; then while ! (exec 7<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; do sleep 0.05; done; fi\nnotifications:\n  email: false\n"
        ),
        "",
    );
    let srv = s.start();
    let first = s.head();
    assert_eq!(generic(&srv, "master", &first).0, 202);
    // Both jobs started (their tabs say running; the build's log shows one live).
    wait_for(
        || {
            srv.json("/api/builds/1")["jobs"]
                .as_array()
                .is_some_and(|j| j.len() == 2 && j.iter().all(|j| j["result"] == "running"))
        },
        "both of build 1's jobs running",
    );
    let second = s.commit("master", "second");
    assert_eq!(generic(&srv, "master", &second).0, 202);
    wait_for(
        || srv.json("/api/builds/2")["state"] == "running",
        "build 2 taken from the queue",
    );
    let third = s.commit("master", "third");
    let (code, text) = generic(&srv, "master", &third);
    assert_eq!(code, 202, "{text}");
    let said: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(said["canceled"], serde_json::json!([2]), "{text}");
    let _gate = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    wait_for(
        || srv.json("/api/builds/3")["state"] == "passed",
        "build 3 passed",
    );
    assert_eq!(srv.json("/api/builds/1")["state"], "passed");
    let b2 = srv.json("/api/builds/2");
    assert_eq!(b2["state"], "canceled", "{b2}");
    assert!(
        b2["reason"]
            .as_str()
            .unwrap_or("")
            .contains("superseded by build #3"),
        "{b2}"
    );
    let log2 = srv.request("GET", "/api/builds/2/log", &[], b"").1;
    assert!(!log2.contains("ran-2."), "{log2}");
}

/// Issue 28 (12): the README's quick start for a server, run as written (in a
/// directory of its own: `/srv/git` becomes a temporary directory and port 8080 a free
/// one; nothing else changes): the push is queued by the hook, built by the server, and
/// `runway log 1 --follow` ends with the build, exit 0.
#[test]
fn the_readmes_quick_start_works_as_written() {
    let readme = include_str!("../../../README.md");
    let block = readme
        .split("## Quick start: a server")
        .nth(1)
        .and_then(|s| s.split("```sh\n").nth(1))
        .and_then(|s| s.split("```").next())
        .expect("the README's quick start block");
    let dir = tempfile::tempdir().unwrap();
    let port = crate::common::free_port();
    let script = block
        .replace(
            "/srv/git",
            &dir.path().join("srv-git").display().to_string(),
        )
        .replace("127.0.0.1:8080", &format!("127.0.0.1:{port}"));
    assert_ne!(script, block, "the block names /srv/git and 127.0.0.1:8080");
    let project = crate::common::repo_with(
        &dir.path().join("project"),
        "main",
        &[(
            ".travis.yml",
            "language: shell\nscript: echo quick-start-built\nnotifications:\n  email: false\n",
        )],
        "first",
    );
    let bin = std::path::Path::new(env!("CARGO_BIN_EXE_runway"))
        .parent()
        .unwrap()
        .to_path_buf();
    let out_path = dir.path().join("out.txt");
    let out = std::fs::File::create(&out_path).unwrap();
    let mut child = std::process::Command::new("setsid")
        .args(["bash", "-e", "-c", &script])
        .current_dir(&project)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("RUNWAY_STATE_DIR", dir.path().join("state"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .spawn()
        .unwrap();
    let ended = came_true(|| matches!(child.try_wait(), Ok(Some(_))));
    // The server the block started in the background, with the rest of its group (the
    // session setsid made: its id is the child's). Not `kill -TERM -PGID`: procps's kill
    // reads `-12345` as options and signals process group 1, that is every process on
    // the machine (it took CI's own runner down).
    let pgid = child.id() as i32;
    assert!(pgid > 1);
    // SAFETY: kill(2) of the process group this test made with setsid; no memory.
    unsafe {
        libc::kill(-pgid, libc::SIGTERM);
    }
    let status = child.wait().unwrap();
    let said = std::fs::read_to_string(&out_path).unwrap_or_default();
    assert!(ended, "the quick start did not end: {said}");
    assert!(status.success(), "{status:?}: {said}");
    assert!(said.contains("\nquick-start-built\n"), "{said}");
}

/// Issue 28 (10, the API's part): `GET /api/builds?branch=` was ignored (and `?repo=`
/// with it): the list is one branch's, one repository's, when asked.
#[test]
fn the_api_lists_one_branchs_builds_when_asked() {
    let s = Setup::new(
        "language: shell\nscript: true\nnotifications:\n  email: false\n",
        "auto_cancel = false",
    );
    let srv = s.start();
    let sha = s.head();
    for branch in ["master", "feature", "master"] {
        assert_eq!(generic(&srv, branch, &sha).0, 202);
    }
    let numbers = |path: &str| -> Vec<u64> {
        srv.json(path)
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["number"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(numbers("/api/builds"), [3, 2, 1]);
    assert_eq!(numbers("/api/builds?branch=master"), [3, 1]);
    assert_eq!(numbers("/api/builds?branch=feature"), [2]);
    assert_eq!(numbers("/api/builds?branch=nope"), Vec::<u64>::new());
    assert_eq!(numbers("/api/builds?repo=o/app&branch=feature"), [2]);
    assert_eq!(numbers("/api/builds?repo=o/other"), Vec::<u64>::new());
}

/// Issue 28 (10): `runway cancel N` cancels a running build (the node running it kills
/// its jobs: it looks at the store, so no server address is needed) and says so; an
/// ended build is not canceled again.
#[test]
fn runway_cancel_cancels_a_running_build_from_the_command_line() {
    let s = Setup::new(
        "language: shell\nscript: echo CANCEL-ME-STARTED; sleep 300\nnotifications:\n  email: false\n",
        "",
    );
    let srv = s.start();
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(
        || {
            srv.request("GET", "/api/builds/1/log", &[], b"")
                .1
                .contains("CANCEL-ME-STARTED")
        },
        "the build to run",
    );
    let cancel = |n: &str| {
        crate::common::run(
            crate::common::runway()
                .args(["cancel", n])
                .env("RUNWAY_STATE_DIR", s.state()),
        )
    };
    let r = cancel("1");
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("kills its jobs"), "{}", r.all());
    wait_for(
        || srv.json("/api/builds/1")["state"] == "canceled",
        "the build canceled",
    );
    let b = srv.json("/api/builds/1");
    assert!(
        b["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("runway cancel"),
        "{b}"
    );
    // The audit trail says who, from the command line.
    let who = b["audit"][0]["who"].as_str().unwrap_or_default();
    assert!(who.ends_with("(command line)"), "{b}");
    assert_eq!(b["audit"][0]["action"], "cancel", "{b}");
    let r = cancel("1");
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("already canceled"), "{}", r.all());
    let r = cancel("x");
    assert_eq!(r.code, 2, "{}", r.all());
}
