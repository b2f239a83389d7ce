//! `runway run` as a user runs it: the real binary on real directories and git
//! repositories made in temp dirs. Each test pins a row of docs/semantics.md §1
//! (lifecycle), §2 (environment, masking), §4 (matrix) or §5 (caches).

use crate::common::{Lines, Run, bare_clone, git, repo_with, run, runway};
use runway::exit;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A project directory with this `.travis.yml` and a cache dir of its own.
struct Project {
    dir: tempfile::TempDir,
    cache: PathBuf,
}

impl Project {
    fn new(yml: &str) -> Project {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".travis.yml"), yml).unwrap();
        let cache = dir.path().join("..").join(format!(
            "{}-cache",
            dir.path().file_name().unwrap().to_string_lossy()
        ));
        Project { dir, cache }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Project {
    /// The cache directory beside the project goes with it.
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.cache);
    }
}

impl Project {
    fn run(&self, extra: &[&str]) -> Run {
        self.run_with_env(extra, &[])
    }

    fn run_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Run {
        let mut c = runway();
        c.arg("run").arg(self.path()).args(["--branch", "master"]);
        c.arg("--cache-dir").arg(&self.cache);
        c.args(extra);
        c.envs(env.iter().copied());
        run(&mut c)
    }
}

fn last_line(r: &Run) -> String {
    r.stdout.lines().last().unwrap_or("").to_string()
}

#[test]
fn s1_script_failure_then_pass_is_failed_and_both_ran() {
    let p = Project::new(
        "language: shell\nscript:\n  - echo first; false\n  - echo second-ran\nafter_failure: echo AFTER-FAILURE\nafter_success: echo AFTER-SUCCESS\nafter_script: echo AFTER-SCRIPT\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("The command \"echo first; false\" exited with 1."),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("second-ran"), "{}", r.all());
    // The job's reason names the first failing command (the build page's header too).
    assert!(
        r.stdout.contains("Job 1.1: failed in ")
            && r.stdout.contains("(`echo first; false` exited 1)"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("AFTER-FAILURE"));
    assert!(!r.stdout.contains("AFTER-SUCCESS"));
    assert!(r.stdout.contains("AFTER-SCRIPT"));
    assert!(last_line(&r).starts_with("Build #1 failed"), "{}", r.all());
}

#[test]
fn s1_install_failure_is_errored_and_stops_at_once() {
    let p = Project::new(
        "language: shell\ncache:\n  directories: [stuff]\ninstall: exit_code_3() { return 3; }; exit_code_3\nscript: echo SCRIPT-RAN\nafter_failure: echo AFTER-FAILURE\nafter_script: echo AFTER-SCRIPT\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 3, "{}", r.all());
    assert!(
        r.stdout
            .contains("failed and exited with 3 during install."),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("Your build has been stopped."));
    // The job's last line agrees with the exit code (it once said 2 for errored builds).
    assert!(
        r.stdout.contains("Done. Your build exited with 3."),
        "{}",
        r.all()
    );
    for never in [
        "SCRIPT-RAN",
        "AFTER-FAILURE",
        "AFTER-SCRIPT",
        "cache: stored",
    ] {
        assert!(
            !r.stdout.contains(never),
            "{never} must not run: {}",
            r.all()
        );
    }
    assert!(last_line(&r).starts_with("Build #1 errored"), "{}", r.all());
}

#[test]
fn s1_before_install_and_before_script_failures_are_errored() {
    for phase in ["before_install", "before_script"] {
        let p = Project::new(&format!(
            "language: shell\n{phase}: \"false\"\nscript: echo SCRIPT-RAN\n"
        ));
        let r = p.run(&[]);
        assert_eq!(r.code, 3, "{phase}: {}", r.all());
        assert!(!r.stdout.contains("SCRIPT-RAN"), "{}", r.all());
    }
}

#[test]
fn s1_shell_state_persists_across_phases() {
    let p = Project::new(
        "language: shell\nbefore_install:\n  - mkdir -p sub && cd sub\n  - export GREETING=hello\n  - greet() { echo \"$GREETING from $(basename $PWD)\"; }\ninstall: ARR=(a b c)\nscript:\n  - greet\n  - echo \"items ${#ARR[@]}\"\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("hello from sub"), "{}", r.all());
    assert!(r.stdout.contains("items 3"), "{}", r.all());
}

#[test]
fn s1_skip_and_test_result_and_before_cache() {
    let p = Project::new(
        "language: java\ninstall: skip\nscript:\n  - 'true'\n  - 'echo \"result so far: $TRAVIS_TEST_RESULT\"'\nbefore_cache: echo BEFORE-CACHE\nafter_success: 'echo \"after success sees $TRAVIS_TEST_RESULT\"'\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("Skipping the install step, as instructed."),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("BEFORE-CACHE"));
    assert!(r.stdout.contains("after success sees 0"), "{}", r.all());
    let skip_script = Project::new("language: python\nscript: skip\n");
    let r = skip_script.run(&[]);
    assert_eq!(r.code, 0, "script: skip counts as passed: {}", r.all());
}

#[test]
fn s1_exit_in_a_command_ends_the_job_with_its_code() {
    let p = Project::new(
        "language: shell\nscript:\n  - exit 1\n  - echo NEVER\nafter_script: echo AFTER\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        !r.stdout.contains("NEVER") && !r.stdout.contains("\nAFTER\n"),
        "{}",
        r.all()
    );
}

/// `--raw`: the jobs' logs as stored, with Travis's markers.
#[test]
fn s1_commands_are_echoed_with_fold_and_time_markers() {
    let p = Project::new("language: shell\ninstall: echo installing\nscript: echo testing\n");
    let r = p.run(&["--raw"]);
    assert!(
        r.stdout
            .contains("travis_fold:start:install.1\r\ntravis_time:start:"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout
            .contains("$ echo installing\ninstalling\ntravis_time:end:"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains(",duration="));
    assert!(r.stdout.contains("travis_fold:end:install.1"));
    assert!(
        r.stdout.contains("$ echo testing\ntesting\n"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains('\x1b'),
        "no colour codes when not on a terminal"
    );
    assert!(
        last_line(&r).starts_with("Build #1 passed in"),
        "{}",
        r.all()
    );
}

/// Issue 28 (9): `runway run … | tee log` wrote raw `travis_fold`/`travis_time`
/// markers, `\r` and the jobs' colour codes; piped `runway log` kept the colour codes.
/// Output for a pipe or a file is now rendered for people, plain: sections with their
/// durations, Travis's lines, no marker, no escape, no carriage return.
#[test]
fn piped_output_is_plain_text_for_people() {
    let p = Project::new(
        "language: shell\ninstall: printf '\\033[32mgreen-install\\033[0m\\r\\n'\nscript: printf '\\033[1;31mred-test\\033[0m\\n'\n",
    );
    let state = p.path().join("state");
    let r = p.run_with_env(
        &["--notify"],
        &[("RUNWAY_STATE_DIR", state.to_str().unwrap())],
    );
    assert_eq!(r.code, 0, "{}", r.all());
    for raw in ["travis_fold", "travis_time", "\x1b", "\r"] {
        assert!(!r.stdout.contains(raw), "{raw:?} in {}", r.stdout);
    }
    assert!(r.stdout.contains("\ngreen-install\n"), "{}", r.stdout);
    assert!(r.stdout.contains("\nred-test\n"), "{}", r.stdout);
    // Each command with how long it took.
    for out in ["green-install", "red-test"] {
        assert!(
            r.stdout.contains(&format!("\n{out}\n  ↳ passed in ")),
            "{}",
            r.stdout
        );
    }
    assert!(
        last_line(&r).starts_with("Build #1 passed in"),
        "{}",
        r.all()
    );
    // The stored log keeps the markers and colours; `runway log` into a pipe is plain.
    let mut c = runway();
    c.args(["log", "1"]).env("RUNWAY_STATE_DIR", &state);
    let log = run(&mut c);
    assert_eq!(log.code, 0, "{}", log.all());
    assert!(log.stdout.contains("green-install"), "{}", log.stdout);
    for raw in ["travis_fold", "travis_time", "\x1b", "\r"] {
        assert!(!log.stdout.contains(raw), "{raw:?} in {}", log.stdout);
    }
    let mut c = runway();
    c.args(["log", "1", "--raw"])
        .env("RUNWAY_STATE_DIR", &state);
    let raw = run(&mut c);
    assert!(
        raw.stdout.contains("travis_fold:start:install.1"),
        "{}",
        raw.stdout
    );
    assert!(
        raw.stdout.contains("\x1b[32mgreen-install"),
        "{}",
        raw.stdout
    );
}

#[test]
fn s1_travis_retry_and_travis_wait() {
    let p = Project::new(
        "language: shell\nscript:\n  - n=0; flaky() { n=$((n+1)); [ $n -ge 2 ]; }; travis_retry flaky\n  - travis_wait 1 bash -c 'echo waited-output'\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Retrying, 2 of 3"), "{}", r.all());
    assert!(r.stdout.contains("waited-output"), "{}", r.all());
}

#[test]
fn s2_travis_variables_and_env_order() {
    let p = Project::new(
        "language: shell\nenv:\n  global:\n    - G=global\n  jobs:\n    - J=job SHARED=yml\nscript:\n  - echo \"$TRAVIS_BRANCH|$TRAVIS_EVENT_TYPE|$TRAVIS_JOB_NUMBER|$CI|$TRAVIS_PULL_REQUEST|$G|$J|$SHARED\"\n  - test \"$TRAVIS_BUILD_DIR\" = \"$PWD\" && echo BUILD-DIR-OK\n  - test -d \"$HOME\" && echo HOME-OK\n",
    );
    let r = p.run(&["--env", "SHARED=setting"]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("master|push|1.1|true|false|global|job|yml"),
        "yml beats settings: {}",
        r.all()
    );
    assert!(
        r.stdout.contains("BUILD-DIR-OK") && r.stdout.contains("HOME-OK"),
        "{}",
        r.all()
    );
}

#[test]
fn s2_secrets_never_leak_plain_url_or_split() {
    let secret = "hunter2-Sup3r/S3cret";
    let envfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        envfile.path(),
        format!("# settings\nDEPLOY_TOKEN=\"{secret}\"\n"),
    )
    .unwrap();
    let p = Project::new(
        "language: shell\nscript:\n  - echo \"plain $DEPLOY_TOKEN\"\n  - echo \"url https://user:$(python3 -c 'import os,urllib.parse;print(urllib.parse.quote(os.environ[\"DEPLOY_TOKEN\"],safe=\"\"))')@example.com/\"\n  - printf 'split %s' \"${DEPLOY_TOKEN:0:6}\"; sleep 0.3; printf '%s\\n' \"${DEPLOY_TOKEN:6}\"\n  - echo \"$DEPLOY_TOKEN\" >&2\n",
    );
    let r = p.run(&[
        "--env-file",
        envfile.path().to_str().unwrap(),
        "--env",
        "OTHER=zzz-top-secret",
    ]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        !r.stdout.contains(secret) && !r.stderr.contains(secret),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains("Sup3r%2FS3cret"),
        "url-encoded leak: {}",
        r.all()
    );
    assert!(!r.stdout.contains("S3cret"), "split leak: {}", r.all());
    assert!(r.stdout.contains("plain [secure]"), "{}", r.all());
    assert!(
        r.stdout.contains("url https://user:[secure]@example.com/"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("split [secure]"), "{}", r.all());
    assert!(
        r.stdout.contains("export DEPLOY_TOKEN=[secure]"),
        "{}",
        r.all()
    );
}

/// Issue 10: the forms careless scripts print a secret in, each of which reached the
/// job log and the failure mail: `set -x` tracing a value with `'`, `quote()` (keeps
/// `/`), lower-case hex, form encoding, JSON escaping, and two halves printed by two
/// commands.
#[test]
fn secrets_are_masked_in_every_form_scripts_print_them() {
    let secret = "it's a/b\"c-S3cr3tValue";
    let envfile = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(envfile.path(), "TOKEN=\"it's a/b\\\"c-S3cr3tValue\"\n").unwrap();
    let py = |code: &str| {
        format!(
            "python3 -c 'import os,sys,json,urllib.parse as u; t=os.environ[\"TOKEN\"]; {code}'"
        )
    };
    let script = [
        "set -x; : \"$TOKEN\"; set +x".to_string(),
        py("print(\"quote \" + u.quote(t))"),
        py(
            "import re; print(\"lower \" + re.sub(\"%..\", lambda m: m.group(0).lower(), u.quote(t, safe=\"\")))",
        ),
        py("print(\"form \" + u.quote_plus(t))"),
        py("print(\"json \" + json.dumps({\"t\": t}))"),
        "printf 'half %s' \"${TOKEN:0:9}\"".to_string(),
        "printf '%s\\n' \"${TOKEN:9}\"".to_string(),
        "false".to_string(),
    ];
    let yml = format!(
        "language: shell\nscript:\n{}notifications:\n  email: dev@example.com\n",
        script
            .iter()
            .map(|c| format!("  - {}\n", serde_json::to_string(c).unwrap()))
            .collect::<String>()
    );
    let p = Project::new(&yml);
    let mail_dir = tempfile::tempdir().unwrap();
    let r = p.run(&[
        "--env-file",
        envfile.path().to_str().unwrap(),
        "--mail-dir",
        mail_dir.path().to_str().unwrap(),
    ]);
    assert_eq!(r.code, 1, "{}", r.all());
    let mail = std::fs::read_to_string(mail_dir.path().join("build-1.eml")).unwrap();
    for (name, text) in [("log", r.all()), ("mail", mail.clone())] {
        for leak in [
            "S3cr3tValue",
            "S3cr3",
            // (With its space: a workspace path such as `…9CRUia/build` has "a/b".)
            " a/b",
            "a%2Fb",
            "a%2fb",
            "it%27s",
            "it's+a",
        ] {
            assert!(!text.contains(leak), "{name} shows {leak:?}:\n{text}");
        }
    }
    for masked in [
        "quote [secure]",
        "lower [secure]",
        "form [secure]",
        "json {\"t\": \"[secure]\"}",
    ] {
        assert!(r.stdout.contains(masked), "{masked}: {}", r.all());
    }
    // The first half is held back (it could begin a secret) and masked with the second.
    assert!(
        r.stdout
            .contains("$ printf '%s\\n' \"${TOKEN:9}\"\n[secure]\n"),
        "{}",
        r.all()
    );
    assert!(
        !mail.contains(secret) && !r.all().contains(secret) && mail.contains("[secure]"),
        "{mail}"
    );
}

#[test]
fn s1_silent_command_is_killed_with_its_children_after_the_no_output_timeout() {
    let p = Project::new(
        "language: shell\nscript:\n  - echo started\n  - sleep 300417 & sleep 300\nafter_script: echo AFTER\n",
    );
    let r = p.run(&["--no-output-timeout", "2s"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stdout
            .contains("No output has been received in the last 2s"),
        "{}",
        r.all()
    );
    assert!(!r.stdout.contains("\nAFTER\n"), "{}", r.all());
    // The background child was killed with the job.
    crate::common::wait_gone("sleep 300417", 10);
}

/// Travis terminated a job whose log passed 4 MB ("The job exceeded the maximum log
/// length"): a runaway command cannot fill memory, the store and the mail.
#[test]
fn a_job_that_floods_its_log_is_terminated_at_4_mb() {
    let p = Project::new(
        "language: shell\nscript:\n  - yes \"flood line\" | head -c 6000000\n  - echo after-the-flood\nafter_script: echo AFTER\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, exit::ERRORED, "{}", last_line(&r));
    assert!(
        r.stdout
            .contains("The job exceeded the maximum log length (4 MB), and has been terminated."),
        "{}",
        &r.stdout[r.stdout.len().saturating_sub(2000)..]
    );
    assert!(!r.stdout.contains("after-the-flood\n"));
    assert!(!r.stdout.contains("\nAFTER\n"));
    let floods = r.stdout.matches("flood line\n").count();
    assert!(
        (300_000..=4 * 1024 * 1024 / 11 + 10_000).contains(&floods),
        "{floods} lines of flood kept"
    );
    assert!(
        last_line(&r).starts_with("Build #1 errored"),
        "{}",
        last_line(&r)
    );
}

#[test]
fn s1_job_timeout_fires_and_says_so() {
    let p =
        Project::new("language: shell\nscript:\n  - while true; do echo tick; sleep 0.2; done\n");
    let r = p.run(&["--timeout", "2s"]);
    assert_eq!(r.code, 4, "{}", r.all());
    assert!(
        r.stdout
            .contains("The job exceeded the maximum time limit for jobs (2s)"),
        "{}",
        r.all()
    );
}

#[test]
fn s4_matrix_runs_every_job_and_allow_failures_roll_up() {
    let p = Project::new(
        "language: shell\nenv:\n  - V=1\n  - V=2\n  - V=3\njobs:\n  allow_failures:\n    - env: V=3\nscript: '[ $V != 3 ]'\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("Job 1.3: failed (allowed to fail)"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("Job 1.1: passed"), "{}", r.all());
    // Issue 28: the allowed failure's own last line no longer reads as the build's
    // result just above "Build #1 passed".
    assert!(
        r.stdout.contains(
            "Done. This job exited with 1; it is allowed to fail, so the build's result does not count it."
        ),
        "{}",
        r.all()
    );
    assert_eq!(
        r.stdout.matches("Done. Your build exited with").count(),
        2,
        "only the jobs that count say so: {}",
        r.all()
    );
    let one = p.run(&["--job", "2"]);
    assert!(
        one.stdout.contains("Job 1.2: passed") && !one.stdout.contains("Job 1.1:"),
        "{}",
        one.all()
    );
    let bad = p.run(&["--job", "9"]);
    assert_eq!(bad.code, 2, "{}", bad.all());
}

#[test]
fn s4_a_failed_stage_cancels_later_stages() {
    let p = Project::new(
        "language: shell\njobs:\n  include:\n    - stage: test\n      script: 'false'\n    - stage: deploy\n      script: echo DEPLOY-STAGE\n",
    );
    let r = p.run(&[]);
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(!r.stdout.contains("DEPLOY-STAGE"), "{}", r.all());
    assert!(r.stdout.contains("Job 1.2: canceled"), "{}", r.all());
}

#[test]
fn s4_parallel_jobs_keep_their_output_apart() {
    let p = Project::new(
        "language: shell\nenv: [N=a, N=b]\nscript:\n  - for i in 1 2 3; do echo \"line-$N-$i\"; sleep 0.1; done\n",
    );
    let r = p.run(&["--parallel", "2"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let a: Vec<usize> = (1..=3)
        .map(|i| r.stdout.find(&format!("line-a-{i}")).unwrap())
        .collect();
    let b: Vec<usize> = (1..=3)
        .map(|i| r.stdout.find(&format!("line-b-{i}")).unwrap())
        .collect();
    let a_block = a[0]..=a[2];
    assert!(
        b.iter().all(|x| !a_block.contains(x)),
        "job b's lines inside job a's: {}",
        r.stdout
    );
}

/// Jobs side by side stay live: one job's output is shown while it runs (the others
/// are held and shown whole after it), so a long matrix never looks stuck.
#[test]
fn s4_parallel_jobs_show_one_job_live_while_it_runs() {
    // The gate is a port on loopback (jobs share the host's network, not its files).
    let port = crate::common::free_port();
    let p = Project::new(&format!(
        "language: shell\nenv: [N=a, N=b]\nscript:\n  - echo \"started-$N\"\n  - while ! (exec 7<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null; do sleep 0.05; done\n  - echo \"ended-$N\"\n"
    ));
    let build = Lines::spawn(
        runway()
            .arg("run")
            .arg(p.path())
            .args(["--branch", "master", "--parallel", "2", "--timeout", "120"])
            .arg("--cache-dir")
            .arg(&p.cache),
        false,
    );
    // Both jobs wait for the gate: a "started" line can only come from a live job.
    let (seen, live) = build.wait_for("started-", 60);
    let _open = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
    let (code, rest) = build.finish(120);
    assert!(live, "no job output while the jobs ran: {seen:#?}");
    assert_eq!(code, Some(0), "{rest:#?}");
    assert_eq!(
        rest.iter().filter(|l| l.starts_with("ended-")).count(),
        2,
        "{rest:#?}"
    );
}

/// Ctrl-C during `runway run` cancels the build: the job's processes, in a process
/// group of their own that a terminal's Ctrl-C does not reach, are killed, the
/// workspace is removed, and the log still ends with the result (exit 4, design.md).
/// The job waiting its turn is not started (issue 28: it was, then canceled).
#[test]
fn ctrl_c_cancels_the_build_and_kills_the_jobs_processes() {
    let p = Project::new(
        "language: shell\nenv:\n  - A=1\n  - A=2\nscript:\n  - echo \"started in $PWD\"; sleep 86421\nafter_script: echo AFTER\n",
    );
    let build = Lines::spawn(
        runway()
            .arg("run")
            .arg(p.path())
            .args(["--branch", "master"])
            .arg("--cache-dir")
            .arg(&p.cache),
        true,
    );
    // The job's own line (`started in /tmp/…`), not the command's echo of itself
    // (`$ echo "started in $PWD"`): interrupted between the two (a loaded machine), the
    // job had not run its command yet.
    let (seen, started) = build.wait_for("started in /", 60);
    assert!(started, "{seen:#?}");
    let workspace = seen
        .last()
        .unwrap()
        .split("started in ")
        .nth(1)
        .unwrap()
        .to_string();
    let pid = build.child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let (code, rest) = build.finish(60);
    let all = format!("{seen:#?}{rest:#?}");
    assert_eq!(code, Some(exit::CANCELED), "{all}");
    assert!(
        rest.iter().any(|l| l.starts_with("Build #1 canceled")),
        "{all}"
    );
    assert!(all.contains("the job's process group was killed"), "{all}");
    assert!(
        all.contains("Job 1.2 canceled: the build was canceled before it started"),
        "{all}"
    );
    let ran = seen
        .iter()
        .chain(&rest)
        .filter(|l| l.starts_with("started in "))
        .count();
    assert_eq!(ran, 1, "only job 1.1 ran: {all}");
    crate::common::assert_no_process("sleep 86421");
    assert!(
        !Path::new(&workspace).exists(),
        "{workspace} was left behind"
    );
}

#[test]
fn branch_filtered_out_says_so_and_exits_0() {
    let p = Project::new("language: shell\nbranches:\n  only: [release]\nscript: echo RAN\n");
    let r = p.run(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert_eq!(
        r.stdout.trim(),
        "Nothing to build: branch \"master\" is not in branches.only (release)."
    );
}

#[test]
fn invalid_config_exits_2() {
    let p = Project::new("language: shell\ndeploy:\n  provider: s4\n");
    let r = p.run(&[]);
    assert_eq!(r.code, 2, "{}", r.all());
    assert!(r.stderr.contains("unknown provider \"s4\""), "{}", r.all());
}

#[test]
fn workspace_from_disk_has_untracked_files_but_not_ignored_ones() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repo_with(
        &dir.path().join("app"),
        "master",
        &[
            (
                ".travis.yml",
                "language: shell\nscript:\n  - ls -a\n  - git log --format=%s -1\n",
            ),
            (".gitignore", "ignored.txt\n"),
        ],
        "initial",
    );
    std::fs::write(repo.join("untracked.txt"), "u").unwrap();
    std::fs::write(repo.join("ignored.txt"), "i").unwrap();
    let r = run(runway()
        .arg("run")
        .arg(&repo)
        .args(["--cache-dir", dir.path().join("c").to_str().unwrap()]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("untracked.txt"), "{}", r.all());
    assert!(!r.stdout.contains("ignored.txt\n"), "{}", r.all());
    assert!(
        r.stdout.contains("initial"),
        "the workspace is a git checkout: {}",
        r.all()
    );
}

#[test]
fn commit_builds_a_clean_clone_and_bare_repositories_work() {
    let dir = tempfile::tempdir().unwrap();
    let yml = "language: shell\nscript:\n  - cat version.txt\n  - echo \"commit $TRAVIS_COMMIT\"\n";
    let repo = repo_with(
        &dir.path().join("app"),
        "master",
        &[(".travis.yml", yml), ("version.txt", "v1")],
        "one",
    );
    let first = git(&repo, &["rev-parse", "HEAD"]);
    std::fs::write(repo.join("version.txt"), "v2").unwrap();
    git(&repo, &["commit", "-qam", "two"]);
    std::fs::write(repo.join("version.txt"), "dirty").unwrap();
    let cache = dir.path().join("c");
    let r = run(runway().arg("run").arg(&repo).args([
        "--commit",
        &first,
        "--cache-dir",
        cache.to_str().unwrap(),
    ]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\nv1"), "{}", r.all());
    assert!(r.stdout.contains(&format!("commit {first}")), "{}", r.all());
    let bare = bare_clone(&repo, &dir.path().join("app.git"));
    let r = run(runway()
        .arg("run")
        .arg(&bare)
        .args(["--cache-dir", cache.to_str().unwrap()]));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("\nv2"), "{}", r.all());
    let r = run(runway()
        .arg("run")
        .arg(&repo)
        .args(["--cache-dir", cache.to_str().unwrap()]));
    assert!(
        r.stdout.contains("\ndirty"),
        "without --commit, the files on disk: {}",
        r.all()
    );
}

#[test]
fn keep_workspace_prints_where() {
    let p = Project::new("language: shell\nscript: touch built.txt\n");
    let r = p.run(&["--keep-workspace"]);
    let line = r
        .stdout
        .lines()
        .find(|l| l.starts_with("Workspace kept at "))
        .expect("kept");
    let root = PathBuf::from(line.trim_start_matches("Workspace kept at "));
    assert!(root.exists());
    let found = std::fs::read_dir(root.join("build/local"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert!(found.join("built.txt").exists());
    std::fs::remove_dir_all(root).unwrap();
}

// ---- §5 caches

#[test]
fn s5_cache_miss_store_hit_unchanged_and_change() {
    let p = Project::new(
        "language: shell\ncache:\n  directories:\n    - $HOME/deps\nscript:\n  - ls $HOME/deps || true\n  - '[ -f $HOME/deps/lib.txt ] || echo v1 > $HOME/deps/lib.txt'\n  - cat $HOME/deps/lib.txt\n",
    );
    let r1 = p.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.all());
    assert!(
        r1.stdout.contains("could not download cache"),
        "{}",
        r1.all()
    );
    assert!(r1.stdout.contains("cache: stored 1 files"), "{}", r1.all());
    let r2 = p.run(&[]);
    assert!(
        r2.stdout.contains("cache: restored 1 files"),
        "{}",
        r2.all()
    );
    assert!(
        r2.stdout
            .contains("cache: nothing changed, not updating the cache"),
        "{}",
        r2.all()
    );
    let list = run(runway().args(["cache", "list", "--cache-dir", p.cache.to_str().unwrap()]));
    assert!(list.stdout.contains("master"), "{}", list.all());
    let changed = Project {
        dir: tempfile::tempdir().unwrap(),
        cache: p.cache.clone(),
    };
    std::fs::write(changed.path().join(".travis.yml"), "language: shell\ncache:\n  directories:\n    - $HOME/deps\nscript: echo more > $HOME/deps/new.txt\n").unwrap();
    // Same repository slug is what shares a cache; a different dir is another repo.
    let r3 = changed.run(&[]);
    assert!(
        r3.stdout.contains("could not download cache"),
        "{}",
        r3.all()
    );
}

#[test]
fn s5_branch_falls_back_to_the_default_branch_cache() {
    let p = Project::new(
        "language: shell\ncache:\n  directories: [vendor]\nscript:\n  - '[ -f vendor/x ] && echo HIT || { mkdir -p vendor; echo 1 > vendor/x; echo MISS; }'\n",
    );
    let r1 = p.run(&[]);
    assert!(r1.stdout.contains("MISS"), "{}", r1.all());
    let r2 = run(runway().arg("run").arg(p.path()).args([
        "--branch",
        "feature",
        "--cache-dir",
        p.cache.to_str().unwrap(),
    ]));
    assert!(r2.stdout.contains("from branch master"), "{}", r2.all());
    assert!(r2.stdout.contains("HIT"), "{}", r2.all());
    assert!(r2.stdout.contains("cache: nothing changed"), "{}", r2.all());
    let cleared = run(runway().args([
        "cache",
        "clear",
        "--branch",
        "master",
        "--cache-dir",
        p.cache.to_str().unwrap(),
    ]));
    assert!(
        cleared.stdout.contains("deleted 1 cache(s)"),
        "{}",
        cleared.all()
    );
}

#[test]
fn s5_tar_slip_archive_is_refused() {
    // A hostile archive in the store: a `..` entry and a symlink pointing outside.
    let p = Project::new("language: shell\ncache:\n  directories: [vendor]\nscript: ls vendor\n");
    let r1 = p.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.all());
    let list = run(runway().args(["cache", "list", "--cache-dir", p.cache.to_str().unwrap()]));
    let key = list.stdout.split_whitespace().nth(2).unwrap().to_string();
    let slug = list.stdout.split_whitespace().next().unwrap().to_string();
    let (owner, name) = slug.split_once('/').unwrap();
    let archive = p
        .cache
        .join(owner)
        .join(name)
        .join("master")
        .join(format!("{key}.tar.zst"));
    let outside = tempfile::tempdir().unwrap();
    let victim = outside.path().join("pwned.txt");
    let mut b = tar::Builder::new(
        zstd::Encoder::new(std::fs::File::create(&archive).unwrap(), 3)
            .unwrap()
            .auto_finish(),
    );
    let manifest = br#"{"version":1,"dirs":["vendor"]}"#;
    let mut h = tar::Header::new_gnu();
    h.set_size(manifest.len() as u64);
    h.set_mode(0o644);
    h.set_cksum();
    b.append_data(&mut h, "runway-cache.json", &manifest[..])
        .unwrap();
    let evil = format!("0/../../../../../../../..{}", victim.display());
    let mut h = tar::Header::new_gnu();
    h.set_size(5);
    h.set_mode(0o644);
    h.as_gnu_mut().unwrap().name[..evil.len()].copy_from_slice(evil.as_bytes());
    h.set_cksum();
    b.append(&h, &b"owned"[..]).unwrap();
    let mut l = tar::Header::new_gnu();
    l.set_entry_type(tar::EntryType::Symlink);
    l.set_size(0);
    l.set_mode(0o777);
    b.append_link(&mut l, "0/escape", outside.path()).unwrap();
    drop(b.into_inner().unwrap());
    let r2 = p.run(&[]);
    assert_eq!(r2.code, 0, "a bad cache never fails the job: {}", r2.all());
    assert!(
        r2.stdout
            .contains("refused 2 entries that cannot be restored safely"),
        "{}",
        r2.all()
    );
    assert!(
        !victim.exists(),
        "the archive wrote outside the cache directory"
    );
}

#[test]
fn a_cache_restore_skips_what_it_cannot_write_strips_setuid_and_stops_at_the_cap() {
    // The archive's restore (on the bare host, on workers, from S3). Issue 10: one
    // unusable entry aborted the whole restore (a partial tree, nothing
    // listed), setuid bits came back, and a small archive could expand without bound.
    let p = Project::new(
        "language: shell\ncache:\n  directories: [vendor]\nscript:\n  - mkdir -p vendor\n  - '[ -e vendor/keep ] && echo HIT || { echo data > vendor/lib; echo k > vendor/keep; echo x > vendor/suid; chmod 4755 vendor/suid; echo MISS; }'\n  - '[ -u vendor/suid ] && echo SETUID-KEPT || echo NO-SETUID'\n",
    );
    let r1 = p.run(&["--sandbox", "none"]);
    assert!(r1.stdout.contains("MISS"), "{}", r1.all());
    // The checkout now has a directory where the cache has the file vendor/lib.
    std::fs::create_dir_all(p.path().join("vendor/lib")).unwrap();
    std::fs::write(p.path().join("vendor/lib/committed.txt"), "mine").unwrap();
    let r2 = p.run(&["--sandbox", "none"]);
    assert_eq!(r2.code, 0, "{}", r2.all());
    assert!(
        r2.stdout.contains("cache: restored 2 files"),
        "{}",
        r2.all()
    );
    assert!(
        r2.stdout
            .contains("cache: refused 1 entries that cannot be restored safely:"),
        "{}",
        r2.all()
    );
    assert!(
        r2.stdout.contains("  0/lib (a directory is there)"),
        "{}",
        r2.all()
    );
    assert!(
        r2.stdout.contains("HIT"),
        "the rest was restored: {}",
        r2.all()
    );
    assert!(r2.stdout.contains("NO-SETUID"), "{}", r2.all());
    // Under a cap smaller than the cache, the job goes on without it.
    let r3 = run(runway()
        .arg("run")
        .arg(p.path())
        .args(["--sandbox", "none", "--branch", "master", "--cache-dir"])
        .arg(&p.cache)
        .env("RUNWAY_CACHE_MAX_BYTES", "1"));
    assert_eq!(r3.code, 0, "{}", r3.all());
    assert!(
        r3.stdout.contains("the cache expands to more than")
            && r3.stdout.contains("going on without it"),
        "{}",
        r3.all()
    );
    assert!(r3.stdout.contains("MISS"), "{}", r3.all());
}

/// Issue 29: on this machine, in the sandbox, a cache is kept as directories and
/// restored as a copy-on-write mount (whatever its size); a save when nothing changed
/// writes nothing; a save after a change copies only what changed and links the rest
/// to the version before; a directory the checkout has files in keeps them; setuid
/// bits do not come back; a version larger than the cap is not restored; older versions
/// are removed once no job holds them.
#[test]
fn a_cache_on_this_machine_is_a_copy_on_write_mount_and_saves_only_what_changed() {
    use std::os::unix::fs::MetadataExt;
    let p = Project::new(
        "language: shell\ncache:\n  directories: [$HOME/deps, vendor]\nscript:\n\
         \x20 - grep \" $HOME/deps \" /proc/self/mountinfo | grep -c \" - overlay \" || true\n\
         \x20 - '[ -f $HOME/deps/big ] && echo HIT || { head -c 300000 /dev/urandom > $HOME/deps/big; echo k > $HOME/deps/keep; echo s > $HOME/deps/suid; chmod 4755 $HOME/deps/suid; mkdir -p vendor; echo cached > vendor/mine; echo MISS; }'\n\
         \x20 - '[ -u $HOME/deps/suid ] && echo SETUID-KEPT || echo NO-SETUID'\n\
         \x20 - echo \"vendor=$(cat vendor/mine) committed=$(cat vendor/committed)\"\n\
         \x20 - '[ -z \"$CHANGE\" ] || { echo changed > $HOME/deps/new; echo x >> $HOME/deps/keep; }'\n",
    );
    std::fs::create_dir_all(p.path().join("vendor")).unwrap();
    std::fs::write(p.path().join("vendor/committed"), "from-git").unwrap();
    let r1 = p.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.all());
    assert!(r1.stdout.contains("MISS"), "{}", r1.all());
    assert!(r1.stdout.contains("cache: stored 5 files"), "{}", r1.all());
    use crate::common::files_under;
    // Each stored version holds its manifest.
    let versions = |p: &Project| -> Vec<PathBuf> {
        files_under(&p.cache)
            .into_iter()
            .filter(|f| f.file_name().is_some_and(|n| n == "runway-cache.json"))
            .filter_map(|f| f.parent().map(Path::to_path_buf))
            .collect()
    };
    let first = versions(&p);
    assert_eq!(first.len(), 1, "{first:?}");
    let file_in = |v: &Path, name: &str| -> PathBuf {
        files_under(v)
            .into_iter()
            .find(|f| f.file_name().is_some_and(|n| n == name))
            .unwrap_or_else(|| panic!("{name} not in {}", v.display()))
    };
    // Restored: mounted, the checkout's file kept beside the cache's, no setuid.
    let r2 = p.run(&[]);
    assert_eq!(r2.code, 0, "{}", r2.all());
    assert!(r2.stdout.contains("mounted copy-on-write"), "{}", r2.all());
    assert!(r2.stdout.contains("HIT"), "{}", r2.all());
    assert!(
        r2.stdout.contains("\n1\n"),
        "the directory is an overlay mount: {}",
        r2.all()
    );
    assert!(r2.stdout.contains("NO-SETUID"), "{}", r2.all());
    assert!(
        r2.stdout.contains("vendor=cached committed=from-git"),
        "{}",
        r2.all()
    );
    // vendor holds the checkout's file: copied in, so stored again. The version it
    // started from is held until the job ends, then removed by the next restore.
    let second = versions(&p);
    assert_eq!(second.len(), 2, "{second:?}");
    std::fs::remove_dir_all(p.path().join("vendor")).unwrap();
    // Nothing changed (vendor is now the cache's alone, and mounted too): nothing written.
    let r3 = p.run(&[]);
    assert_eq!(r3.code, 0, "{}", r3.all());
    assert!(
        r3.stdout
            .contains("cache: nothing changed, not updating the cache"),
        "{}",
        r3.all()
    );
    assert!(
        r3.stdout.contains("vendor=cached committed=from-git"),
        "{}",
        r3.all()
    );
    let third = versions(&p);
    assert_eq!(third.len(), 1, "the first version is removed: {third:?}");
    assert!(second.contains(&third[0]) && !first.contains(&third[0]));
    // A change: only the new file is written; the big file is a link to the last one.
    let big = std::fs::metadata(file_in(&third[0], "big")).unwrap();
    let mut c = runway();
    c.arg("run")
        .arg(p.path())
        .args(["--branch", "master", "--env", "CHANGE=1", "--cache-dir"])
        .arg(&p.cache);
    let r4 = run(&mut c);
    assert_eq!(r4.code, 0, "{}", r4.all());
    assert!(r4.stdout.contains("12 B of it written"), "{}", r4.all());
    assert_eq!(
        std::fs::read_to_string(file_in(&third[0], "keep")).unwrap(),
        "k\n",
        "the job's write went to its own layer, never into the stored version"
    );
    let last: Vec<PathBuf> = versions(&p)
        .into_iter()
        .filter(|v| *v != third[0])
        .collect();
    assert_eq!(last.len(), 1, "{last:?}");
    assert_eq!(
        std::fs::read_to_string(file_in(&last[0], "keep")).unwrap(),
        "k\nx\n"
    );
    let big4 = std::fs::metadata(file_in(&last[0], "big")).unwrap();
    assert_eq!(
        big4.ino(),
        big.ino(),
        "an unchanged file is linked, not copied"
    );
    // Larger than the cap: not restored.
    let r7 = p.run_with_env(&[], &[("RUNWAY_CACHE_MAX_BYTES", "1000")]);
    assert!(
        r7.stdout
            .contains("the cache expands to more than 1000 bytes")
            && r7.stdout.contains("going on without it"),
        "{}",
        r7.all()
    );
}

/// A cache kept as an archive (by a runway before this one, or a run on the bare host)
/// is restored from it once, then stored as directories (even unchanged) and mounted
/// from then on; the archive, the older form, is removed.
#[test]
fn a_cache_kept_as_an_archive_moves_to_directories() {
    let p = Project::new(
        "language: shell\ncache:\n  directories: [$HOME/deps]\nscript:\n\
         \x20 - '[ -f $HOME/deps/lib ] && echo HIT || { echo v1 > $HOME/deps/lib; echo MISS; }'\n",
    );
    let r1 = p.run(&["--sandbox", "none"]);
    assert!(r1.stdout.contains("MISS"), "{}", r1.all());
    let archives = |p: &Project| {
        crate::common::files_under(&p.cache)
            .into_iter()
            .filter(|f| f.to_string_lossy().ends_with(".tar.zst"))
            .count()
    };
    assert_eq!(archives(&p), 1);
    // On the bare host it stays an archive: restored, and not stored again when
    // nothing changed (the archive says what its directories' fingerprint was).
    let again = p.run(&["--sandbox", "none"]);
    assert!(again.stdout.contains("HIT"), "{}", again.all());
    assert!(
        again.stdout.contains("cache: nothing changed"),
        "{}",
        again.all()
    );
    assert_eq!(archives(&p), 1);
    let r2 = p.run(&[]);
    assert!(r2.stdout.contains("HIT"), "{}", r2.all());
    assert!(!r2.stdout.contains("mounted copy-on-write"), "{}", r2.all());
    assert!(r2.stdout.contains("cache: stored 1 files"), "{}", r2.all());
    assert_eq!(archives(&p), 0, "the older form is removed");
    let r3 = p.run(&[]);
    assert!(r3.stdout.contains("HIT"), "{}", r3.all());
    assert!(r3.stdout.contains("mounted copy-on-write"), "{}", r3.all());
    assert!(r3.stdout.contains("cache: nothing changed"), "{}", r3.all());
}

/// A cached directory the job removes whole (`rm -rf node_modules`, as 74 of the
/// corpus's 3,360 configurations with caches do) cannot be a mount (removing a mount
/// point fails): it is restored by copy, and the job passes as it did on Travis.
#[test]
fn a_cached_directory_the_job_removes_whole_is_copied_not_mounted() {
    let p = Project::new(
        "language: shell\ncache:\n  directories: [node_modules, $HOME/keep]\nscript:\n\
         \x20 - cat node_modules/x $HOME/keep/k || true\n\
         \x20 - rm -rf node_modules && mkdir node_modules && echo fresh > node_modules/x\n\
         \x20 - echo kept > $HOME/keep/k\n",
    );
    let r1 = p.run(&[]);
    assert_eq!(r1.code, 0, "{}", r1.all());
    let r2 = p.run(&[]);
    assert_eq!(r2.code, 0, "{}", r2.all());
    assert!(
        r2.stdout.contains(
            "cache: node_modules is restored by copy, not mounted: the job removes it whole (rm -rf node_modules && mkdir node_modules && echo fresh > node_modules/x)"
        ),
        "{}",
        r2.all()
    );
    assert!(r2.stdout.contains("fresh\nkept"), "{}", r2.all());
    assert!(r2.stdout.contains("mounted copy-on-write"), "{}", r2.all());
}

/// Issue 25: results became text too early; a program could follow a build only by
/// parsing what was printed for people. `--json` prints every event of the build as
/// one JSON object per line on standard output, and nothing else there: the start, the
/// stages, each job's log (its own, secrets masked) and end, the job not started, the
/// summary, the mail and the last line, which agrees with the exit code.
#[test]
fn run_json_prints_the_builds_events_one_object_per_line() {
    let p = Project::new(
        "language: shell\nscript: echo \"hello from $TRAVIS_JOB_NUMBER with $TOKEN\"; test $TRAVIS_JOB_NUMBER != 1.2\njobs:\n  include:\n    - stage: test\n      env: N=1\n    - stage: test\n      env: N=2\n    - stage: ship\nnotifications:\n  email: false\n",
    );
    let r = p.run(&["--json", "--env", "TOKEN=s3cr3t-value"]);
    assert_eq!(r.code, exit::FAILED, "{}", r.all());
    let events: Vec<serde_json::Value> = r
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}\n{}", r.all())))
        .collect();
    let kinds: Vec<&str> = events
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    let first = |k: &str| {
        kinds
            .iter()
            .position(|x| *x == k)
            .unwrap_or_else(|| panic!("no {k}: {kinds:?}"))
    };
    assert_eq!(kinds[0], "started", "{kinds:?}");
    assert_eq!(events[0]["jobs"], 3);
    assert!(
        first("stage") < first("log") && first("log") < first("job_ended"),
        "{kinds:?}"
    );
    let logs: String = events
        .iter()
        .filter(|e| e["event"] == "log" && e["job"] == "1.1")
        .map(|e| e["text"].as_str().unwrap())
        .collect();
    assert!(logs.contains("hello from 1.1 with [secure]"), "{logs}");
    assert!(!r.stdout.contains("s3cr3t-value"), "{}", r.stdout);
    let ended: Vec<(&str, &str)> = events
        .iter()
        .filter(|e| e["event"] == "job_ended")
        .map(|e| (e["job"].as_str().unwrap(), e["result"].as_str().unwrap()))
        .collect();
    assert_eq!(
        ended,
        [("1.1", "passed"), ("1.2", "failed"), ("1.3", "canceled")]
    );
    let not_started = &events[first("job_not_started")];
    assert_eq!(not_started["job"], "1.3");
    let summary = &events[first("ended")];
    assert_eq!(summary["state"], "failed");
    assert_eq!(summary["jobs"][2]["started"], false);
    assert_eq!(events[first("mail")]["fate"], "off");
    // Inside the jobs: each command's end with its status and time, the start of each
    // job that ran.
    let failed: Vec<&serde_json::Value> = events
        .iter()
        .filter(|e| e["event"] == "command_ended" && e["job"] == "1.2")
        .collect();
    assert_eq!(failed.len(), 1, "{kinds:?}");
    assert_eq!(failed[0]["status"], 1);
    assert!(
        failed[0]["command"]
            .as_str()
            .unwrap()
            .ends_with("test $TRAVIS_JOB_NUMBER != 1.2"),
        "{}",
        failed[0]
    );
    assert!(failed[0]["duration_ms"].is_u64());
    // Each command's start comes before its end, with the same (masked) command.
    let command_at = |kind: &str| {
        events
            .iter()
            .position(|e| e["event"] == kind && e["job"] == "1.2")
            .unwrap_or_else(|| panic!("no {kind} of job 1.2: {kinds:?}"))
    };
    let (began, ended_at) = (command_at("command_started"), command_at("command_ended"));
    assert!(began < ended_at, "{kinds:?}");
    assert_eq!(events[began]["command"], failed[0]["command"]);
    let started: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "job_started")
        .map(|e| e["job"].as_str().unwrap())
        .collect();
    assert_eq!(started, ["1.1", "1.2"]);
    let last = events.last().unwrap();
    assert_eq!(last["event"], "finished", "{kinds:?}");
    assert_eq!(last["exit_code"], r.code);
    assert!(
        last["line"]
            .as_str()
            .unwrap()
            .starts_with("Build #1 failed")
    );
}
