//! Mail from the server: the seed path end to end, and the outbox retrying a refused mail.

use super::*;

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
    let mut srv = Server::start(&config, &state, &[("APP_SECRET", SECRET)]);
    let srv_log = said(&mut srv);
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
    // Issue 28 (7): the server's log says the hook's build was queued, then started.
    let logged = srv_log.lock().unwrap().clone();
    let queued = logged.find("build queued");
    assert!(
        queued.is_some() && queued < logged.find("build started"),
        "{logged}"
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
    // The build page's facts: what each deploy did, what became of the mail.
    let b1 = srv.json("/api/builds/1");
    assert_eq!(
        b1["jobs"][0]["deploys"],
        serde_json::json!(["s3: deployed", "codedeploy: deployed"]),
        "{b1}"
    );
    assert_eq!(b1["jobs"][0]["stage"], "test", "{b1}");
    assert!(
        b1["mail"]
            .as_str()
            .unwrap()
            .starts_with("sent \"[runway] Passed: o/app#1"),
        "{b1}"
    );
    let (_, page) = srv.request("GET", "/builds/1?repo=o/app", &[], b"");
    assert!(page.contains("<li>codedeploy: deployed</li>"), "{page}");
    assert!(page.contains("team@example.com"), "{page}");

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
