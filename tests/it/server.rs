//! `runway serve`: real HTTP deliveries (signed, unsigned, tampered, oversized,
//! malformed) to a server started on port 0, the durable queue across SIGKILL,
//! auto-cancellation, canceling a running build, and SIGTERM.

use crate::common::server::{Server, sign};
use crate::common::{bare_clone, git, repo_with};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const SECRET: &str = "hook-secret-42";
const API_TOKEN: &str = "api-t0ken-7";

struct Setup {
    dir: tempfile::TempDir,
    bare: PathBuf,
    work: PathBuf,
    config: PathBuf,
}

impl Setup {
    fn new(yml: &str, extra_toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let work = repo_with(
            &dir.path().join("work"),
            "master",
            &[(".travis.yml", yml)],
            "first",
        );
        let bare = bare_clone(&work, &dir.path().join("app.git"));
        git(&work, &["remote", "add", "hub", bare.to_str().unwrap()]);
        let config = dir.path().join("runway.toml");
        std::fs::write(
            &config,
            format!(
                "concurrency = 2\nshutdown_grace_secs = 5\nmax_body_bytes = 200000\n{extra_toml}\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n",
                bare.display()
            ),
        )
        .unwrap();
        Setup {
            dir,
            bare,
            work,
            config,
        }
    }

    /// Serves `toml` (repositories on a [`crate::common::server::GitHttps`] host) with the
    /// webhook secret, the host's certificate trusted, and `env`.
    fn serve_remote(&self, toml: &str, env: &[(&str, &str)]) -> Server {
        std::fs::write(&self.config, toml).unwrap();
        let ca = crate::common::server::GitHttps::ca();
        let mut all = vec![("APP_SECRET", SECRET), ("GIT_SSL_CAINFO", ca)];
        all.extend_from_slice(env);
        Server::start(&self.config, &self.state(), &all)
    }

    fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn start(&self) -> Server {
        Server::start(
            &self.config,
            &self.state(),
            &[("APP_SECRET", SECRET), ("RUNWAY_TEST_API_TOKEN", API_TOKEN)],
        )
    }

    /// Commits on `branch` and pushes to the bare repository; returns the sha.
    fn commit(&self, branch: &str, msg: &str) -> String {
        let _ = git(&self.work, &["checkout", "-q", "-B", branch]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.work, &["push", "-q", "-f", "hub", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

fn github_push(branch: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"), "before": before, "after": after,
        "repository": {"full_name": "o/app"}, "head_commit": {"message": "a push"},
    }))
    .unwrap()
}

fn generic(srv: &Server, branch: &str, commit: &str) -> (u16, String) {
    generic_for(srv, "o/app", branch, commit)
}

/// A generic delivery (bearer token) of a push of `commit` to `repo`'s `branch`.
fn generic_for(srv: &Server, repo: &str, branch: &str, commit: &str) -> (u16, String) {
    let body =
        serde_json::to_vec(&serde_json::json!({"repo": repo, "branch": branch, "commit": commit}))
            .unwrap();
    srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", &format!("Bearer {SECRET}"))],
        &body,
    )
}

fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

fn states(srv: &Server) -> Vec<(u64, String)> {
    srv.json("/api/builds")
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["number"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn deliveries_signed_unsigned_tampered_oversized_malformed() {
    let s = Setup::new(
        "language: shell\nbranches:\n  only: [master]\nscript: echo hello from the server\n",
        "",
    );
    let srv = s.start();
    let sha = s.head();
    let body = github_push("master", "0000000000000000000000000000000000000000", &sha);
    let sig = format!("sha256={}", sign(SECRET, &body));

    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("\"number\":1"), "{text}");

    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push")],
        &body,
    );
    assert_eq!((code, text.contains("unsigned")), (401, true), "{text}");
    let mut tampered = body.clone();
    let at = tampered.len() - 5;
    tampered[at] = b'X';
    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &tampered,
    );
    assert_eq!(
        (code, text.contains("bad signature")),
        (401, true),
        "{text}"
    );
    let big = vec![b' '; 300_000];
    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-Hub-Signature-256", &sig)],
        &big,
    );
    assert_eq!((code, text.contains("larger than")), (413, true), "{text}");
    let (code, text) = srv.request("POST", "/hooks/github", &[], b"{not json");
    assert_eq!((code, text.contains("not JSON")), (400, true), "{text}");
    let ping = br#"{"zen":"hi","repository":{"full_name":"o/app"}}"#;
    let psig = format!("sha256={}", sign(SECRET, ping));
    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "ping"), ("X-Hub-Signature-256", &psig)],
        ping,
    );
    assert_eq!((code, text.contains("pong")), (200, true), "{text}");
    // An unknown repository: 401 unless signed with a secret runway knows (issue 10:
    // a 404 told anyone which repositories exist); then 404 with the fix.
    let unknown = br#"{"repo":"x/y","branch":"master","commit":"abc"}"#;
    let (code, text) = srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", "Bearer whatever")],
        unknown,
    );
    assert_eq!(code, 401, "{text}");
    let known = br#"{"repo":"o/app","branch":"master","commit":"abc"}"#;
    let (code2, text2) = srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", "Bearer whatever")],
        known,
    );
    assert_eq!(code2, 401, "{text2}");
    assert_eq!(
        text, text2,
        "the same answer whether or not the repository exists"
    );
    let (code, text) = srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", &format!("bearer {SECRET}"))],
        unknown,
    );
    assert_eq!(
        (code, text.contains("add a [[repo]]")),
        (404, true),
        "signed with a known secret, lowercase scheme: {text}"
    );

    // Gitea signs without a prefix; GitLab sends a token.
    let gitea_sig = sign(SECRET, &body);
    let (code, text) = srv.request(
        "POST",
        "/hooks/gitea",
        &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_sig)],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    let gl = serde_json::to_vec(&serde_json::json!({"object_kind": "push", "ref": "refs/heads/master", "before": "0", "after": sha, "project": {"path_with_namespace": "o/app"}, "commits": []})).unwrap();
    let (code, text) = srv.request("POST", "/hooks/gitlab", &[("X-Gitlab-Token", "wrong")], &gl);
    assert_eq!(code, 401, "{text}");
    let (code, text) = srv.request("POST", "/hooks/gitlab", &[("X-Gitlab-Token", SECRET)], &gl);
    assert_eq!(code, 202, "{text}");

    // A branch the config filters out is answered, not queued.
    let dev = s.commit("dev", "dev work");
    let (code, text) = generic(&srv, "dev", &dev);
    assert_eq!(code, 200, "{text}");
    assert!(
        text.contains("not built: branch \\\"dev\\\" is not in branches.only"),
        "{text}"
    );

    wait_for(
        || states(&srv).iter().all(|(_, st)| st == "passed"),
        "the builds to pass",
    );
    let b = srv.json("/api/builds/1");
    assert_eq!(b["jobs"][0]["result"], "passed", "{b}");
    let (code, log) = srv.request("GET", "/api/builds/1/log?job=1", &[], b"");
    assert_eq!(code, 200, "{log}");
    assert!(
        log.contains("$ echo hello from the server\nhello from the server"),
        "{log}"
    );
    let (code, text) = srv.request("GET", "/api/builds/1/log?job=9", &[], b"");
    assert_eq!((code, text.contains("has no job 9")), (404, true), "{text}");
    // Without api_token_env nobody cancels over HTTP, whatever they send.
    let auth = [("Authorization", &*format!("Bearer {API_TOKEN}"))];
    let (code, text) = srv.request("POST", "/api/builds/1/cancel", &auth, b"");
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("set api_token_env"), "{text}");
    assert_eq!(
        states(&srv).len(),
        3,
        "nothing unsigned or tampered was queued"
    );
}

#[test]
fn crash_midway_loses_nothing_and_runs_nothing_twice() {
    let ran = tempfile::tempdir().unwrap();
    let ledger = ran.path().join("ran.txt");
    let s = Setup::new(
        &format!(
            "language: shell\nscript: echo \"$TRAVIS_BUILD_NUMBER\" >> {} && sleep 0.2\n",
            ledger.display()
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
    wait_for(
        || {
            std::fs::read_to_string(&ledger)
                .map(|t| t.lines().count() >= 6)
                .unwrap_or(false)
        },
        "some builds",
    );
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
    let lines: Vec<u64> = std::fs::read_to_string(&ledger)
        .unwrap()
        .lines()
        .map(|l| l.parse().unwrap())
        .collect();
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
    let pids = tempfile::tempdir().unwrap();
    let s = Setup::new(
        &format!(
            "language: shell\nscript:\n  - sleep 300 & echo $! > {}/$TRAVIS_BUILD_NUMBER.pid; sleep 300\n",
            pids.path().display()
        ),
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
    for i in 0..3 {
        let sha = s.commit("master", &format!("push {i}"));
        assert_eq!(generic(&srv, "master", &sha).0, 202);
    }
    let b3 = srv.json("/api/builds/3");
    let b4 = srv.json("/api/builds/4");
    assert_eq!(
        (b3["state"].as_str(), b4["state"].as_str()),
        (Some("canceled"), Some("canceled")),
        "{b3} {b4}"
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
    wait_for(|| pids.path().join("1.pid").exists(), "build 1's child");
    let child: i32 = std::fs::read_to_string(pids.path().join("1.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
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
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !Path::new(&format!("/proc/{child}")).exists()
            || std::fs::read_to_string(format!("/proc/{child}/stat"))
                .unwrap_or_default()
                .contains(") Z "),
        "the job's child {child} survived the cancel"
    );
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

#[test]
fn seed_path_detached_push_to_main_builds_deploys_and_mails_other_branches_do_not() {
    use crate::common::moto::Moto;
    use crate::common::smtp::Smtp;
    let moto = Moto::start();
    moto.bucket("us-east-1", "seed-bucket");
    moto.application("us-east-1", "seed-app", "seed-group");
    let smtp = Smtp::start(&[]);
    let yml = "language: shell\nbranches:\n  only: [main]\nscript: echo jar > app.jar\nbefore_deploy:\n  - mkdir -p deploy\n  - zip -q deploy/seed.zip app.jar\ndeploy:\n  - provider: s3\n    bucket: seed-bucket\n    local_dir: deploy\n    on: main\n  - provider: codedeploy\n    bucket: seed-bucket\n    key: seed.zip\n    application: seed-app\n    deployment_group: seed-group\n    wait_until_deployed: true\n    on: main\nnotifications:\n  email:\n    recipients: [team@example.com]\n    on_success: always\n";
    let dir = tempfile::tempdir().unwrap();
    let bare = dir.path().join("app.git");
    git(
        dir.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let r = crate::common::run(
        crate::common::runway()
            .args(["hook", "install", "--detach", "--repo", "o/app"])
            .arg(&bare),
    );
    assert_eq!(r.code, 0, "{}", r.all());
    let config = dir.path().join("runway.toml");
    std::fs::write(
        &config,
        format!(
            "public_url = \"http://ci.example.com\"\n[smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"runway <ci@example.com>\"\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\ndefault_branch = \"main\"\n[repo.env]\nAWS_ACCESS_KEY_ID = \"AKIATESTKEY1234\"\nAWS_SECRET_ACCESS_KEY = \"secret-key-abcdef\"\nAWS_ENDPOINT_URL = \"{}\"\nRUNWAY_CODEDEPLOY_POLL = \"0.1\"\n",
            smtp.port,
            bare.display(),
            moto.url
        ),
    )
    .unwrap();
    let state = dir.path().join("state");
    let srv = Server::start(&config, &state, &[("APP_SECRET", SECRET)]);
    let work = repo_with(
        &dir.path().join("work"),
        "main",
        &[(".travis.yml", yml)],
        "seed",
    );
    git(&work, &["remote", "add", "origin", bare.to_str().unwrap()]);
    let started = Instant::now();
    let out = std::process::Command::new("git")
        .current_dir(&work)
        .args(["push", "-q", "origin", "main"])
        .env("RUNWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        said.contains("build #1 of o/app (refs/heads/main) queued"),
        "{said}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "a detached push returns at once"
    );
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the main build",
    );
    let key = moto.py(
        "us-east-1",
        "print(s3.head_object(Bucket='seed-bucket', Key='seed.zip')['ContentType'])",
    );
    assert_eq!(key, "application/zip");
    let deployed = moto.py("us-east-1", "ds=cd.list_deployments(applicationName='seed-app', deploymentGroupName='seed-group')['deployments']\nprint(cd.get_deployment(deploymentId=ds[0])['deploymentInfo']['status'])");
    assert_eq!(deployed, "Succeeded");
    wait_for(|| !smtp.messages().is_empty(), "the mail");
    let mails = smtp.messages();
    assert!(
        mails[0]
            .subject
            .starts_with("[runway] Passed: o/app#1 (main - "),
        "{}",
        mails[0].subject
    );
    assert!(
        mails[0]
            .text
            .contains("http://ci.example.com/builds/1?repo=o/app"),
        "{}",
        mails[0].text
    );
    assert!(!mails[0].text.contains("secret-key-abcdef"));

    // Another branch: queued by the detached hook, then not built by the plan.
    git(&work, &["checkout", "-q", "-b", "feature"]);
    let out = std::process::Command::new("git")
        .current_dir(&work)
        .args(["push", "-q", "origin", "feature"])
        .env("RUNWAY_STATE_DIR", &state)
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("build #2"));
    wait_for(
        || {
            srv.json("/api/builds/2")["state"] != "queued"
                && srv.json("/api/builds/2")["state"] != "running"
        },
        "build 2",
    );
    let b2 = srv.json("/api/builds/2");
    assert_eq!(b2["state"], "canceled", "{b2}");
    assert!(
        b2["reason"]
            .as_str()
            .unwrap()
            .contains("not built: branch \"feature\""),
        "{b2}"
    );
    assert_eq!(
        smtp.messages().len(),
        1,
        "no mail for a branch that does not build"
    );
}

/// Issue #5's outbox and issue #6's per-repository SMTP: the repository's own
/// `[repo.smtp]` is used instead of `[smtp]`, by the build and by the outbox, which
/// delivers the mail once the server is up.
#[test]
fn a_mail_the_smtp_server_refused_is_sent_later_by_the_server() {
    use crate::common::smtp::Smtp;
    let free_port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port()
    };
    let (port, global) = (free_port(), free_port());
    let s = Setup::new(
        "language: shell\nscript: 'true'\nnotifications:\n  email: dev@example.com\n",
        &format!("[smtp]\nurl = \"smtp://127.0.0.1:{global}\"\nfrom = \"runway <ci@example.com>\""),
    );
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str(&format!(
        "[repo.smtp]\nurl = \"smtp://127.0.0.1:{port}\"\nfrom = \"app ci <app-ci@example.com>\"\n"
    ));
    std::fs::write(&s.config, toml).unwrap();
    let srv = Server::start(
        &s.config,
        &s.state(),
        &[("APP_SECRET", SECRET), ("RUNWAY_MAIL_RETRY_SECS", "0.5")],
    );
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the build",
    );
    // The build's own three tries (1 s and 2 s apart) are over before the server is up:
    // only the outbox can deliver now.
    std::thread::sleep(Duration::from_secs(4));
    let smtp = Smtp::start(&["--port", &port.to_string()]);
    wait_for(|| !smtp.messages().is_empty(), "the retried mail");
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1);
    assert!(
        mails[0].subject.starts_with("[runway] Passed: o/app#1"),
        "{}",
        mails[0].subject
    );
    assert_eq!(mails[0].to, ["dev@example.com"]);
    assert_eq!(
        srv.json("/api/builds/1")["state"],
        "passed",
        "the mail never changed the result"
    );
}

/// design.md "Server configuration", issue #6: a repository cloned over https with a
/// token from an env var. The server mirrors it with git, reads .travis.yml at the
/// pushed commit from the mirror (branch filters apply at intake), fetches new pushes,
/// and builds the pushed commit. A wrong token errors the build with a message naming
/// the variable; the token is never shown, nor written into the mirror's config.
#[test]
fn an_https_repository_with_a_token_is_mirrored_fetched_and_built() {
    use crate::common::server::GitHttps;
    let s = Setup::new(
        "language: shell\nbranches:\n  only: [master]\nscript: echo \"built $TRAVIS_COMMIT over https\"\n",
        "",
    );
    let https = GitHttps::start(s.dir.path(), "tok-right-123");
    let srv = s.serve_remote(
        &format!(
            "[[repo]]\nname = \"o/app\"\nurl = \"{0}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"APP_TOKEN\"\n\n[[repo]]\nname = \"o/bad\"\nurl = \"{0}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"BAD_TOKEN\"\n",
            https.url
        ),
        &[("APP_TOKEN", "tok-right-123"), ("BAD_TOKEN", "tok-wrong-456")],
    );
    let deliver = |repo: &str, branch: &str, commit: &str| generic_for(&srv, repo, branch, commit);
    let log = |n: &str, repo: &str| {
        crate::common::run(
            crate::common::runway()
                .args(["log", n, "--repo", repo])
                .env("RUNWAY_STATE_DIR", s.state()),
        )
        .all()
    };
    let finished = |repo: &str, n: u64| {
        wait_for(
            || {
                let st = srv.json(&format!("/api/builds/{n}?repo={repo}"))["state"].clone();
                st != "queued" && st != "running"
            },
            &format!("{repo}#{n}"),
        );
        srv.json(&format!("/api/builds/{n}?repo={repo}"))
    };

    // The first push clones the mirror.
    let first = s.head();
    let (code, body) = deliver("o/app", "master", &first);
    assert_eq!(code, 202, "{body}");
    let b1 = finished("o/app", 1);
    assert_eq!(b1["state"], "passed", "{b1}\n{}", log("1", "o/app"));
    assert!(log("1", "o/app").contains(&format!("built {first} over https")));

    // A filtered branch is read from the mirror at intake: not queued.
    let feature = s.commit("feature", "a feature");
    let (code, body) = deliver("o/app", "feature", &feature);
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("not built"), "{body}");

    // The next push fetches into the existing mirror and builds the new commit.
    let second = s.commit("master", "second");
    let (code, body) = deliver("o/app", "master", &second);
    assert_eq!(code, 202, "{body}");
    let b2 = finished("o/app", 2);
    assert_eq!(b2["state"], "passed", "{b2}\n{}", log("2", "o/app"));
    assert!(log("2", "o/app").contains(&format!("built {second} over https")));

    // A wrong token: queued, then errored with what to check; the token never shown.
    let (code, body) = deliver("o/bad", "master", &second);
    assert_eq!(code, 202, "{body}");
    let bad = finished("o/bad", 1);
    assert_eq!(bad["state"], "errored", "{bad}");
    let reason = bad["reason"].as_str().unwrap();
    assert!(reason.contains("$BAD_TOKEN"), "{reason}");
    let bad_log = log("1", "o/bad");
    assert!(bad_log.contains("$BAD_TOKEN"), "{bad_log}");
    for text in [reason, &bad_log, &log("1", "o/app")] {
        assert!(!text.contains("tok-wrong-456") && !text.contains("tok-right-123"));
    }
    let mirror = std::fs::read_to_string(s.state().join("mirrors/o/app.git/config")).unwrap();
    assert!(!mirror.contains("tok-right-123"), "{mirror}");
    let requests = https.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.ends_with(" 401"))
            && requests.iter().any(|r| r.ends_with(" 200")),
        "{requests:?}"
    );
}

/// Issue #6, "workers: up to `concurrency` jobs at once": with `concurrency = 3`, two
/// builds of four jobs each never run more than three jobs at once, and a build's own
/// jobs run side by side (the limit is on jobs, not on builds).
#[test]
fn concurrency_limits_jobs_across_builds() {
    let shared = tempfile::tempdir().unwrap();
    let d = shared.path().display();
    let s = Setup::new(
        &format!(
            "language: shell\nenv:\n  - N=1\n  - N=2\n  - N=3\n  - N=4\nscript:\n  - touch {d}/running.$TRAVIS_BUILD_NUMBER.$TRAVIS_JOB_NUMBER\n  - sleep 1\n  - ls {d} | grep -c '^running' >> {d}/peaks\n  - sleep 1\n  - rm {d}/running.$TRAVIS_BUILD_NUMBER.$TRAVIS_JOB_NUMBER\n"
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
    let peaks: Vec<usize> = std::fs::read_to_string(shared.path().join("peaks"))
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(peaks.len(), 8, "{peaks:?}");
    assert_eq!(
        peaks.iter().max(),
        Some(&3),
        "jobs running at once: {peaks:?}"
    );
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
        &format!("[smtp]\nurl = \"smtp://127.0.0.1:{}\"\n", smtp.port),
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

/// A git host that stops answering does not hold up webhook deliveries: after
/// `intake_fetch_secs` the delivery is queued without reading `.travis.yml`; once the
/// host answers, the build fetches and decides (here: a branch the config filters out).
#[test]
fn a_delivery_is_answered_while_the_git_host_hangs_and_the_build_decides_later() {
    use crate::common::server::GitHttps;
    let s = Setup::new(
        "language: shell\nbranches:\n  only: [master]\nscript: 'true'\n",
        "",
    );
    let hold = s.dir.path().join("answer-now");
    let https = GitHttps::start_with(s.dir.path(), "tok-123", &["--hold", hold.to_str().unwrap()]);
    let srv = s.serve_remote(
        &format!(
            "intake_fetch_secs = 1\n[[repo]]\nname = \"o/app\"\nurl = \"{}/app.git\"\nwebhook_secret_env = \"APP_SECRET\"\ntoken_env = \"APP_TOKEN\"\n",
            https.url
        ),
        &[("APP_TOKEN", "tok-123")],
    );
    let feature = s.commit("feature", "a feature");
    let (code, body) = generic(&srv, "feature", &feature);
    assert_eq!(code, 202, "queued while the host hangs: {body}");
    let st = srv.json("/api/builds/1")["state"].clone();
    assert!(
        st == "queued" || st == "running",
        "{st}: it waits for the host"
    );

    std::fs::write(&hold, "").unwrap();
    wait_for(
        || srv.json("/api/builds/1")["state"] == "canceled",
        "the build to read its config",
    );
    let b = srv.json("/api/builds/1");
    assert!(
        b["reason"]
            .as_str()
            .unwrap()
            .contains("not built: branch \"feature\" is not in branches.only"),
        "{b}"
    );
}

/// Commits `.travis.yml` = `yml` on master and pushes it; returns the sha.
fn push_config(s: &Setup, yml: &str, msg: &str) -> String {
    std::fs::write(s.work.join(".travis.yml"), yml).unwrap();
    git(&s.work, &["add", "-A"]);
    git(&s.work, &["commit", "-q", "-m", msg]);
    git(&s.work, &["push", "-q", "-f", "hub", "master"]);
    s.head()
}

/// Issue 10: one pushed file with an `if:` of 20,000 nested parentheses overflowed the
/// stack of a server thread and killed `runway serve` with every running build. Now the
/// build is errored with the message at its line and column, and mailed; the server
/// goes on answering and building.
#[test]
fn a_pushed_file_past_a_limit_errors_its_build_mails_and_the_server_goes_on() {
    use crate::common::smtp::Smtp;
    let smtp = Smtp::start(&[]);
    let s = Setup::new(
        "language: shell\nscript: 'true'\n",
        &format!(
            "[smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"runway <ci@example.com>\"",
            smtp.port
        ),
    );
    let srv = s.start();
    let deep = format!(
        "language: shell\nscript: 'true'\nnotifications:\n  email: dev@example.com\nif: {}branch = master{}\n",
        "(".repeat(20_000),
        ")".repeat(20_000)
    );
    let bomb = format!(
        "language: shell\nscript: 'true'\nnotifications:\n  email: dev@example.com\na: &a [\"{}\"]\nb: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a,*a]\nc: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b,*b]\nd: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c,*c]\ne: [*d,*d,*d,*d,*d,*d,*d,*d,*d,*d]\n",
        "x".repeat(900_000)
    );
    let sha1 = push_config(&s, &deep, "deep if");
    assert_eq!(generic(&srv, "master", &sha1).0, 202);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "errored",
        "build 1 errored",
    );
    let b1 = srv.json("/api/builds/1");
    let why = b1["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        why.contains(".travis.yml:5:5: error: if: condition \"")
            && why.contains("nesting deeper than 64"),
        "{b1}"
    );
    let sha2 = push_config(&s, &bomb, "alias bomb");
    assert_eq!(generic(&srv, "master", &sha2).0, 202);
    wait_for(
        || srv.json("/api/builds/2")["state"] == "errored",
        "build 2 errored",
    );
    let b2 = srv.json("/api/builds/2");
    assert!(
        b2["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("expands to more than 16 MiB of text"),
        "{b2}"
    );
    let sha3 = push_config(&s, "language: shell\nscript: echo fine\n", "fixed");
    assert_eq!(generic(&srv, "master", &sha3).0, 202);
    wait_for(
        || srv.json("/api/builds/3")["state"] == "passed",
        "build 3 passed on the same server",
    );
    wait_for(|| smtp.messages().len() >= 2, "the errored builds' mails");
    let mails = smtp.messages();
    let first = mails
        .iter()
        .find(|m| m.subject.contains("o/app#1"))
        .expect("build 1's mail");
    assert!(
        first.subject.starts_with("[runway] Errored"),
        "{}",
        first.subject
    );
    assert_eq!(first.to, ["dev@example.com"]);
    assert!(
        first.text.contains("The build errored before any job ran:")
            && first.text.contains("nesting deeper than 64"),
        "{}",
        first.text
    );
}

/// Issue 10: connections that send one header line every few seconds stayed open for
/// ever, a `Content-Length` with no body got no answer, and under a low open-file limit
/// such clients kept real deliveries out. Served with 64 files, 100 slow clients.
#[test]
fn slow_clients_cannot_hold_the_server() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let s = Setup::new(
        "language: shell\nscript: 'true'\n",
        "header_timeout_secs = 3\nbody_timeout_secs = 1\n",
    );
    let mut c = std::process::Command::new("prlimit");
    c.arg("--nofile=64:64")
        .arg(env!("CARGO_BIN_EXE_runway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&s.config)
        .env("RUNWAY_STATE_DIR", s.state())
        .env("XDG_CACHE_HOME", s.state().join("cache"))
        .env("APP_SECRET", SECRET);
    let started =
        crate::common::spawn_announcing(&mut c, "runway serve: listening on http://", "serve");
    let srv = Server {
        child: started.child,
        addr: started.said,
        stdout: Some(started.stdout),
    };
    // 100 clients that have sent half a request and keep the connection.
    let slow: Vec<TcpStream> = (0..100)
        .filter_map(|_| {
            let mut t = TcpStream::connect(&srv.addr).ok()?;
            t.write_all(b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n")
                .ok()?;
            Some(t)
        })
        .collect();
    assert_eq!(slow.len(), 100);
    // A real delivery is still answered (it evicts the oldest half-sent request).
    let (code, text) = generic(&srv, "master", &s.head());
    assert_eq!(code, 202, "{text}");
    // A client trickling a header line every half second is cut off by the deadline.
    let mut trickle = TcpStream::connect(&srv.addr).unwrap();
    trickle
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    trickle
        .write_all(b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let mut w = trickle.try_clone().unwrap();
    let feeder = std::thread::spawn(move || {
        for i in 0..120 {
            if w.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes())
                .is_err()
            {
                return true;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        false
    });
    let mut buf = Vec::new();
    let read = trickle.read_to_end(&mut buf);
    assert!(
        read.is_ok(),
        "the server closed the trickling connection: {read:?}"
    );
    assert!(
        feeder.join().unwrap(),
        "writes fail once the server has closed"
    );
    // A declared length past max_body_bytes is refused at once, without the body.
    let mut big = TcpStream::connect(&srv.addr).unwrap();
    big.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    big.write_all(
        b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    big.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 413");
    // A body that stops arriving is answered 408 after body_timeout_secs.
    let mut stalled = TcpStream::connect(&srv.addr).unwrap();
    stalled
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    stalled
        .write_all(
            b"POST /hooks/generic HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"repo\"",
        )
        .unwrap();
    let mut head = [0u8; 12];
    stalled.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 408");
    drop(slow);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the delivered build",
    );
}

/// Issue 10: the same signed delivery sent again made a new build each time (a captured
/// push re-ran and re-deployed an old commit). Now a delivery id is remembered.
#[test]
fn a_delivery_sent_again_builds_once() {
    let s = Setup::new("language: shell\nscript: 'true'\n", "");
    let srv = s.start();
    let body = github_push(
        "master",
        "0000000000000000000000000000000000000000",
        &s.head(),
    );
    let sig = format!("sha256={}", sign(SECRET, &body));
    let send = |id: &str| {
        srv.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sig),
                ("X-GitHub-Delivery", id),
            ],
            &body,
        )
    };
    assert_eq!(send("72d3162e-cc78-11e3-81ab-4c9367dc0958").0, 202);
    let (code, text) = send("72d3162e-cc78-11e3-81ab-4c9367dc0958");
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        (v["duplicate"].as_bool(), v["number"].as_u64()),
        (Some(true), Some(1)),
        "{v}"
    );
    assert!(
        v["message"].as_str().unwrap().contains("not built again"),
        "{v}"
    );
    assert_eq!(srv.json("/api/builds").as_array().unwrap().len(), 1);
    // Another delivery of the same push (a new id) is a new build, as the sender meant.
    assert_eq!(send("a-new-delivery").0, 202);
    assert_eq!(srv.json("/api/builds").as_array().unwrap().len(), 2);
}

/// issue 14: the server's own log said nothing after its listen line. Now one line per
/// event (queued, started, job ended, ended, refused), human by default, JSON on request.
#[test]
fn the_server_logs_one_line_per_event() {
    use std::io::BufRead;
    let s = Setup::new(
        "language: shell\nos: linux\nenv: FOO=1\nscript: echo hi\n",
        "",
    );
    let mut c = crate::common::runway();
    c.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--config",
    ])
    .arg(&s.config)
    .env("RUNWAY_STATE_DIR", s.state())
    .env("APP_SECRET", SECRET);
    let started =
        crate::common::spawn_announcing(&mut c, "runway serve: listening on http://", "serve");
    let mut srv = Server {
        child: started.child,
        addr: started.said,
        stdout: Some(started.stdout),
    };
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    let (code, _) = srv.request("POST", "/hooks/generic", &[], b"{\"repo\":\"o/app\"}");
    assert_eq!(code, 401);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the build",
    );
    // issue 14: a job is shown with its matrix values, not only its env.
    assert_eq!(
        srv.json("/api/builds/1")["jobs"][0]["env"],
        "os: linux, FOO=1"
    );
    srv.signal("-TERM");
    assert!(srv.exited_within(30));
    let lines: Vec<String> = srv
        .stdout
        .take()
        .unwrap()
        .lines()
        .map_while(Result::ok)
        .collect();
    let events: Vec<serde_json::Value> = lines
        .iter()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let said = |m: &str| events.iter().find(|e| e["message"] == m).cloned();
    let queued = said("build queued").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(
        (queued["repo"].as_str(), queued["number"].as_u64()),
        (Some("o/app"), Some(1))
    );
    assert!(said("build started").is_some(), "{lines:#?}");
    let job = said("job ended").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(
        (job["job"].as_str(), job["result"].as_str()),
        (Some("1.1"), Some("passed"))
    );
    let ended = said("build ended").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(ended["state"], "passed");
    let refused = said("delivery refused").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(refused["status"], 401);
    assert!(
        !lines.iter().any(|l| l.contains(SECRET)),
        "no secret in the server's log"
    );
}
