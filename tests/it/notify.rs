//! Email and build history (docs/semantics.md §7) against a real SMTP server on
//! loopback: the default rules over a sequence of builds, AUTH and STARTTLS, SMTP down
//! then up, the failed job's log tail without secrets, and Korean text end to end.

use crate::common::smtp::Smtp;
use crate::common::{Run, git, repo_with, run, runway};
use std::path::Path;

/// A git repository whose script passes when the file `pass` exists.
fn project(dir: &Path, extra_yml: &str) -> std::path::PathBuf {
    let yml = format!(
        "language: shell\nscript:\n  - echo \"token is $SECRET_TOKEN\"\n  - test -f pass\n{extra_yml}"
    );
    repo_with(
        &dir.join("app"),
        "master",
        &[(".travis.yml", &yml), ("pass", "")],
        "첫 번째 커밋: 배포 준비",
    )
}

fn build(repo: &Path, state: &Path, smtp_url: &str, extra: &[&str]) -> Run {
    let mut c = runway();
    c.arg("run").arg(repo).arg("--notify");
    c.arg("--cache-dir").arg(state.join("cache"));
    c.env("RUNWAY_STATE_DIR", state);
    c.env("RUNWAY_SMTP_URL", smtp_url);
    c.env("RUNWAY_SMTP_FROM", "runway CI <ci@example.com>");
    c.args(["--env", "SECRET_TOKEN=tok-9f8e7d6c5b"]);
    c.args(extra);
    run(&mut c)
}

fn set_passing(repo: &Path, pass: bool) {
    if pass {
        std::fs::write(repo.join("pass"), "").unwrap();
        git(repo, &["add", "pass"]);
    } else if repo.join("pass").exists() {
        git(repo, &["rm", "-q", "pass"]);
    }
    git(
        repo,
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            if pass { "fix" } else { "break" },
        ],
    );
}

#[test]
fn s7_default_rules_over_a_sequence_of_builds() {
    let smtp = Smtp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let repo = project(
        dir.path(),
        "notifications:\n  email:\n    - dev@example.com\n    - ops@example.com\n",
    );
    let state = dir.path().join("state");
    let url = format!("smtp://127.0.0.1:{}", smtp.port);
    let mut exits = Vec::new();
    for pass in [true, false, false, true, true] {
        set_passing(&repo, pass);
        let r = build(&repo, &state, &url, &[]);
        exits.push(r.code);
    }
    assert_eq!(exits, [0, 1, 1, 0, 0]);
    let mails = smtp.messages();
    let subjects: Vec<String> = mails
        .iter()
        .map(|m| m.subject.split(':').next().unwrap().to_string())
        .collect();
    assert_eq!(
        subjects,
        [
            "[runway] Passed",
            "[runway] Broken",
            "[runway] Still Failing",
            "[runway] Fixed"
        ]
    );
    for (i, m) in mails.iter().enumerate() {
        let mut to = m.to.clone();
        to.sort();
        assert_eq!(to, ["dev@example.com", "ops@example.com"], "mail {i}");
    }
    assert!(
        mails[1].subject.contains("local/app#2 (master - "),
        "{}",
        mails[1].subject
    );
    // The history has all five, numbered 1..5.
    let h = run(runway().arg("builds").env("RUNWAY_STATE_DIR", &state));
    for n in 1..=5 {
        assert!(h.stdout.contains(&format!("#{n} ")), "{}", h.all());
    }
    // Issue 28 (11): a header row; a branch with no build is said to have none.
    assert!(h.stdout.starts_with("#  "), "{}", h.all());
    assert!(h.stdout.contains("STARTED (UTC)"), "{}", h.all());
    let none = run(runway()
        .args(["builds", "--branch", "nope"])
        .env("RUNWAY_STATE_DIR", &state));
    assert_eq!(none.code, 0, "{}", none.all());
    assert_eq!(
        none.stdout.trim(),
        "no build of branch nope",
        "{}",
        none.all()
    );
    let log = run(runway()
        .args(["log", "2.1"])
        .env("RUNWAY_STATE_DIR", &state));
    assert!(log.stdout.contains("$ test -f pass"), "{}", log.all());
    assert!(
        log.stdout.contains("token is [secure]") && !log.stdout.contains("tok-9f8e7d6c5b"),
        "{}",
        log.all()
    );
}

#[test]
fn s7_failed_job_log_tail_present_secrets_absent_and_korean_decodes() {
    let smtp = Smtp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let repo = project(
        dir.path(),
        "notifications:\n  email:\n    recipients:\n      - 팀 <team@example.com>\n      - 본인 메일 주소\n",
    );
    set_passing(&repo, false);
    git(
        &repo,
        &[
            "commit",
            "-q",
            "--allow-empty",
            "-m",
            "배포 스크립트 수정 ✓",
        ],
    );
    let state = dir.path().join("state");
    let r = build(
        &repo,
        &state,
        &format!("smtp://127.0.0.1:{}", smtp.port),
        &[],
    );
    assert_eq!(r.code, 1, "{}", r.all());
    assert!(
        r.stdout
            .contains("email recipient \"본인 메일 주소\" is not an email address"),
        "{}",
        r.all()
    );
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "{}", r.all());
    let m = &mails[0];
    assert_eq!(m.to, ["team@example.com"]);
    assert!(
        m.subject
            .starts_with("[runway] Failed: local/app#1 (master - "),
        "{}",
        m.subject
    );
    assert!(m.text.contains("배포 스크립트 수정 ✓"), "{}", m.text);
    assert!(m.html.contains("배포 스크립트 수정 ✓"));
    assert!(m.text.contains("the last lines of its log"), "{}", m.text);
    assert!(m.text.contains("$ test -f pass"), "{}", m.text);
    assert!(m.text.contains("token is [secure]"), "{}", m.text);
    assert!(!m.text.contains("tok-9f8e7d6c5b") && !m.html.contains("tok-9f8e7d6c5b"));
}

#[test]
fn smtp_auth_and_starttls_and_a_wrong_password() {
    let smtp = Smtp::start(&["--auth", "ci:s3cret-pass", "--starttls"]);
    let dir = tempfile::tempdir().unwrap();
    let repo = project(dir.path(), "notifications:\n  email: dev@example.com\n");
    let state = dir.path().join("state");
    let good = format!(
        "smtp://ci:s3cret-pass@127.0.0.1:{}?tls=required&insecure=true",
        smtp.port
    );
    let r = build(&repo, &state, &good, &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(r.stdout.contains("Email: sent"), "{}", r.all());
    assert_eq!(smtp.messages().len(), 1);
    set_passing(&repo, false);
    let bad = format!(
        "smtp://ci:wrong@127.0.0.1:{}?tls=required&insecure=true",
        smtp.port
    );
    let r = build(&repo, &state, &bad, &[]);
    assert_eq!(
        r.code,
        1,
        "the mail failure does not change the exit code: {}",
        r.all()
    );
    assert!(r.stdout.contains("Email: not sent: smtp:"), "{}", r.all());
    assert!(
        r.stdout.contains("mail: sending failed (try 1 of 3)"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains("try 2 of 3"),
        "a refused login is not retried: {}",
        r.all()
    );
    assert_eq!(smtp.messages().len(), 1);
}

#[test]
fn smtp_down_then_up_keeps_the_build_and_mails_later_builds() {
    let dir = tempfile::tempdir().unwrap();
    let repo = project(
        dir.path(),
        "notifications:\n  email:\n    recipients: [dev@example.com]\n    on_success: always\n",
    );
    let state = dir.path().join("state");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let r = build(&repo, &state, &format!("smtp://127.0.0.1:{closed}"), &[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("mail: sending failed (try 1 of 3)"),
        "{}",
        r.all()
    );
    assert!(
        r.stdout.contains("try 3 of 3") && r.stdout.contains("Email: not sent: smtp:"),
        "{}",
        r.all()
    );
    let h = run(runway()
        .args(["builds", "--json"])
        .env("RUNWAY_STATE_DIR", &state));
    let v: serde_json::Value = serde_json::from_str(&h.stdout).unwrap();
    assert_eq!(
        v[0]["state"],
        "passed",
        "the build is recorded: {}",
        h.all()
    );
    let smtp = Smtp::start(&[]);
    let r = build(
        &repo,
        &state,
        &format!("smtp://127.0.0.1:{}", smtp.port),
        &[],
    );
    assert!(r.stdout.contains("Email: sent"), "{}", r.all());
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(mails[0].subject.contains("#2"), "{}", mails[0].subject);
}

#[test]
fn without_notify_the_mail_is_shown_and_written_not_sent() {
    // issue 14: without --notify, --mail-dir or --show-mail, one line, no preview.
    let plain = tempfile::tempdir().unwrap();
    let quiet = project(plain.path(), "notifications:\n  email: dev@example.com\n");
    let r = run(runway()
        .arg("run")
        .arg(&quiet)
        .arg("--cache-dir")
        .arg(plain.path().join("cache"))
        .env("RUNWAY_STATE_DIR", plain.path().join("state")));
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("(runway run mails only with --notify; --show-mail shows it)"),
        "{}",
        r.all()
    );
    assert!(
        !r.stdout.contains("  | "),
        "no preview unless asked: {}",
        r.all()
    );

    let smtp = Smtp::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let repo = project(dir.path(), "notifications:\n  email: dev@example.com\n");
    let mut c = runway();
    c.arg("run")
        .arg(&repo)
        .arg("--mail-dir")
        .arg(dir.path().join("mail"));
    c.arg("--cache-dir").arg(dir.path().join("cache"));
    c.env("RUNWAY_STATE_DIR", dir.path().join("state"));
    c.env("RUNWAY_SMTP_URL", format!("smtp://127.0.0.1:{}", smtp.port));
    let r = run(&mut c);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout
            .contains("Email: would send \"[runway] Passed: local/app#1"),
        "{}",
        r.all()
    );
    assert!(r.stdout.contains("  | Build #1 Passed"), "{}", r.all());
    let eml = std::fs::read_to_string(dir.path().join("mail/build-1.eml")).unwrap();
    assert!(
        eml.contains("Subject: [runway] Passed: local/app#1"),
        "{eml}"
    );
    assert!(
        smtp.messages().is_empty(),
        "nothing is sent without --notify"
    );
}

/// issue 14: `runway log 1` (and `restart 1`) with two repositories' build #1 picked one
/// silently; now it asks for `--repo`, naming both.
#[test]
fn an_ambiguous_build_number_asks_for_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    for name in ["one", "two"] {
        let repo = repo_with(
            &dir.path().join(name),
            "master",
            &[(
                ".travis.yml",
                "language: shell\nscript: echo hi\nnotifications:\n  email: false\n",
            )],
            "first",
        );
        let r = build(&repo, &state, "smtp://127.0.0.1:9", &[]);
        assert_eq!(r.code, 0, "{}", r.all());
    }
    let log = run(runway().args(["log", "1"]).env("RUNWAY_STATE_DIR", &state));
    assert_eq!(log.code, 2, "{}", log.all());
    assert!(
        log.stderr
            .contains("build #1 exists in local/one, local/two: give --repo"),
        "{}",
        log.all()
    );
    let restart = run(runway()
        .args(["restart", "1"])
        .env("RUNWAY_STATE_DIR", &state));
    assert_eq!(restart.code, 2, "{}", restart.all());
    let one = run(runway()
        .args(["log", "1", "--repo", "local/one"])
        .env("RUNWAY_STATE_DIR", &state));
    assert_eq!(one.code, 0, "{}", one.all());
    assert!(one.stdout.contains("hi"), "{}", one.all());
    // issue 14: `runway log` is for people (no markers); `--raw` keeps them for tools.
    assert!(!one.stdout.contains("travis_"), "{}", one.all());
    let raw = run(runway()
        .args(["log", "1", "--repo", "local/one", "--raw"])
        .env("RUNWAY_STATE_DIR", &state));
    assert!(raw.stdout.contains("travis_time:end:"), "{}", raw.all());
}
