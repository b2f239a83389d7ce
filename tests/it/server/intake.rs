//! Deliveries in: signatures, refusals, duplicates, slow clients, configs past a limit, a hanging git host.

use super::*;

#[test]
fn deliveries_signed_unsigned_tampered_oversized_malformed() {
    // Three pushes of master follow each other: with auto-cancel a slow worker would
    // find the first still queued and cancel it, which is not what this test is about.
    let s = Setup::new(
        "language: shell\nbranches:\n  only: [master]\nscript: echo hello from the server\n",
        "auto_cancel = false",
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

    // Gitea signs without a prefix; GitLab sends a token. (Another push of the same
    // commit: the same push again would be a duplicate.)
    let gitea_body = github_push("master", &"1".repeat(40), &sha);
    let gitea_sig = sign(SECRET, &gitea_body);
    let (code, text) = srv.request(
        "POST",
        "/hooks/gitea",
        &[("X-Gitea-Event", "push"), ("X-Gitea-Signature", &gitea_sig)],
        &gitea_body,
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
/// such clients kept real deliveries out. Served with 128 files (a cap of 64 connections, the rest for the build the
/// delivery makes), 100 slow clients.
#[test]
fn slow_clients_cannot_hold_the_server() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let s = Setup::new(
        "language: shell\nscript: 'true'\n",
        "header_timeout_secs = 3\nbody_timeout_secs = 1\n",
    );
    let mut c = std::process::Command::new("prlimit");
    c.arg("--nofile=128:128")
        .arg(env!("CARGO_BIN_EXE_runway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&s.config)
        .env("RUNWAY_STATE_DIR", s.state())
        .env("XDG_CACHE_HOME", s.state().join("cache"))
        .env("APP_SECRET", SECRET);
    let srv = Server::spawn(&mut c);
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
    // Closed by the server: an end of stream, or a reset (the kernel resets a socket
    // closed with unread bytes). Not a read timeout: that would mean still open.
    assert!(
        read.is_ok()
            || read
                .as_ref()
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
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
    let mut last = serde_json::Value::Null;
    let ended = came_true(|| {
        last = srv.json("/api/builds/1");
        last["state"] == "passed"
    });
    let log = srv.request("GET", "/api/builds/1/log", &[], b"").1;
    assert!(ended, "the delivered build: {last}\n{log}");
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
    // Another delivery of the same push (a new id) is the same push (issue 24: a
    // replay under a new id must not build again); a rebuild is a restart.
    let (code, text) = send("a-new-delivery");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"duplicate\":true"), "{text}");
    assert_eq!(srv.json("/api/builds").as_array().unwrap().len(), 1);
}

/// A root `if:` that reads a repository setting decides at intake as it does in the
/// build: intake read the config with no settings, so `env(DEPLOY_TARGET)` was empty
/// there and the push was answered "not built" although its build would run.
#[test]
fn intake_decides_a_root_if_with_the_repositorys_settings() {
    let s = Setup::new(
        "language: shell\nif: env(DEPLOY_TARGET) = staging\nscript: echo built for $DEPLOY_TARGET\n",
        "",
    );
    let toml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{toml}[repo.env]\nDEPLOY_TARGET = \"staging\"\n"),
    )
    .unwrap();
    let srv = s.start();
    let (code, text) = generic(&srv, "master", &s.head());
    assert_eq!(code, 202, "queued, not refused at intake: {text}");
    wait_for(
        || states(&srv).iter().any(|(_, st)| st == "passed"),
        "the build to pass",
    );
}

/// Issue 24: sixteen held live streams (`GET /events`) with `max_connections = 16`
/// made every webhook fail. Streams have a cap of their own (a quarter of the
/// connections): past it a stream is answered 503 with `Retry-After` and closed, and a
/// signed delivery is still answered.
#[test]
fn held_event_streams_leave_room_for_deliveries() {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    let s = Setup::new(
        "language: shell\nscript: 'true'\n",
        "max_connections = 16\nheader_timeout_secs = 30\n",
    );
    let srv = s.start();
    let mut held = Vec::new();
    let mut refused = 0;
    for _ in 0..16 {
        let mut t = TcpStream::connect(&srv.addr).unwrap();
        t.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        t.write_all(b"GET /events HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut head = [0u8; 12];
        t.read_exact(&mut head).unwrap();
        match &head {
            b"HTTP/1.1 200" => held.push(t),
            b"HTTP/1.1 503" => {
                let mut rest = String::new();
                let _ = t.read_to_string(&mut rest);
                assert!(
                    rest.to_ascii_lowercase().contains("retry-after: 5"),
                    "{rest}"
                );
                assert!(rest.contains("live streams open"), "{rest}");
                refused += 1;
            }
            other => panic!("{}", String::from_utf8_lossy(other)),
        }
    }
    assert_eq!(held.len(), 4, "a quarter of max_connections stream");
    assert_eq!(refused, 12);
    // A signed GitHub delivery still finds a connection.
    let body = github_push("master", &"0".repeat(40), &s.head());
    let (code, text) = srv.request(
        "POST",
        "/hooks/github",
        &[
            ("X-GitHub-Event", "push"),
            ("X-GitHub-Delivery", "held-streams-1"),
            (
                "X-Hub-Signature-256",
                &format!("sha256={}", sign(SECRET, &body)),
            ),
            ("Content-Type", "application/json"),
        ],
        &body,
    );
    assert_eq!(code, 202, "{text}");
    drop(held);
}

/// Issue 24: replaying an old push (its signed body, under a new delivery id) after a
/// newer push of the branch canceled the newer build and built the old commit again:
/// a rollback of a deploying branch by anyone who saw one old delivery. A push the ref
/// has moved on from builds nothing and cancels nothing; the same push under a new id
/// is a duplicate.
#[test]
fn an_old_push_replayed_with_a_new_id_builds_and_cancels_nothing() {
    let s = Setup::new("language: shell\nscript: sleep 2\n", "auto_cancel = true");
    let srv = s.start();
    let deliver = |before: &str, after: &str, id: &str| {
        let body = github_push("master", before, after);
        srv.request(
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-GitHub-Delivery", id),
                (
                    "X-Hub-Signature-256",
                    &format!("sha256={}", sign(SECRET, &body)),
                ),
            ],
            &body,
        )
    };
    let zero = "0".repeat(40);
    let a = s.commit("master", "push A");
    let (code, text) = deliver(&zero, &a, "delivery-a");
    assert_eq!(code, 202, "{text}");
    let b = s.commit("master", "push B");
    let (code, text) = deliver(&a, &b, "delivery-b");
    assert_eq!(code, 202, "{text}");
    // A's delivery again, under a new id.
    let (code, text) = deliver(&zero, &a, "delivery-a-replayed");
    assert_eq!(code, 200, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["stale"], true, "{text}");
    assert_eq!(v["tip"], b.as_str(), "{text}");
    assert_eq!(v["queued"], false, "{text}");
    let b2 = srv.json("/api/builds/2");
    assert_ne!(b2["state"], "canceled", "B is not canceled: {b2}");
    assert_eq!(b2["commit"], b.as_str(), "{b2}");
    let (code, _) = srv.request("GET", "/api/builds/3", &[], b"");
    assert_eq!(code, 404, "nothing was built");
    // B's own delivery under a new id: the same push, not built again.
    let (code, text) = deliver(&a, &b, "delivery-b-again");
    assert_eq!(code, 200, "{text}");
    assert!(text.contains("\"duplicate\":true"), "{text}");
    assert!(text.contains("\"number\":2"), "{text}");
}

/// Issue 24: secrets printed as bash's `printf %q` writes them (`pass\,word9`,
/// `café\'babe42`) reached the log, the API and the page. Masked in each.
#[test]
fn secrets_printed_with_printf_q_are_masked_in_the_api_and_the_page() {
    let s = Setup::new(
        "language: shell\nscript:\n  - printf 'a=%q b=%q\\n' \"$A_SECRET\" \"$B_SECRET\"\n",
        "",
    );
    let toml = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{toml}[repo.env]\nA_SECRET = \"pass,word9\"\nB_SECRET = \"café'babe42\"\n"),
    )
    .unwrap();
    let srv = s.start();
    let (code, text) = generic(&srv, "master", &s.head());
    assert_eq!(code, 202, "{text}");
    wait_for(
        || states(&srv).iter().any(|(_, st)| st == "passed"),
        "the build to pass",
    );
    let (_, log) = srv.request("GET", "/api/builds/1/log", &[], b"");
    assert!(log.contains("a=[secure] b=[secure]"), "{log}");
    let (_, page) = srv.request("GET", "/builds/1", &[], b"");
    let (_, api) = srv.request("GET", "/api/builds/1", &[], b"");
    for (what, text) in [("log", &log), ("page", &page), ("api", &api)] {
        for piece in ["word9", "babe42"] {
            assert!(!text.contains(piece), "{piece} in the {what}: {text}");
        }
    }
}

/// Issue 24: auto-cancel only ever cancels builds of older commits of the ref: a build
/// of a commit the branch has moved on from (the generic endpoint names commits) is
/// built, and cancels nothing.
#[test]
fn a_build_of_an_older_commit_cancels_nothing() {
    let s = Setup::new("language: shell\nscript: sleep 20\n", "auto_cancel = true");
    let srv = s.start();
    let a = s.commit("master", "A");
    let b = s.commit("master", "B");
    // Two slots: builds 1 and 2 take them; build 3 (B) waits in the queue.
    assert_eq!(generic(&srv, "other", &a).0, 202);
    assert_eq!(generic(&srv, "other2", &a).0, 202);
    let (code, text) = generic(&srv, "master", &b);
    assert_eq!(code, 202, "{text}");
    // A, older than the branch's tip, asked for by name: built, cancels nothing.
    let (code, text) = generic(&srv, "master", &a);
    assert_eq!(code, 202, "{text}");
    assert!(text.contains("\"canceled\":[]"), "{text}");
    assert_ne!(srv.json("/api/builds/3")["state"], "canceled");
}

/// Issue 29: `runway serve` wrote its log lines to stdout on the request path, so when
/// nothing read stdout fast enough (a full pipe, a slow log collector) intake stopped.
/// Log lines now go through a bounded queue to a writer of their own. With stdout a
/// pipe nobody reads: 3,000 refused calls (one log line each, more than the pipe and
/// the queue hold) are all answered; then 1,000 pushes delivered by 8 senders at once
/// are each answered 202 with a build of their own, recorded once (the builds listed
/// are those answered, no more), and a delivery sent again is answered with the build
/// it made; the lines that did not fit are counted, and the count is said once the
/// log is read again.
#[test]
fn a_log_nobody_reads_holds_up_no_request_and_no_delivery() {
    let s = Setup::new("language: shell\nscript: true\n", "");
    let mut srv = s.start();
    let sha = s.head();
    let addr = srv.addr.clone();
    let (tx, rx) = std::sync::mpsc::channel();
    let from = addr.clone();
    std::thread::spawn(move || {
        let mut codes = std::collections::BTreeMap::new();
        for _ in 0..3000 {
            let (code, _) = crate::common::server::http(
                &from,
                "POST",
                "/api/worker/claim",
                &[
                    ("X-Runway-Protocol", "0"),
                    ("Content-Type", "application/json"),
                ],
                br#"{"name":"stale","labels":{},"wait_ms":0}"#,
            );
            *codes.entry(code).or_insert(0) += 1;
        }
        let _ = tx.send(codes);
    });
    let codes = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the calls were answered while nobody read the server's log");
    assert_eq!(codes.into_iter().collect::<Vec<_>>(), [(426, 3000)]);
    // Push `i` (a branch of its own) delivered as `delivery-i`: its answer's code, the
    // delivery's id and its build's number.
    let push = move |addr: &str, i: usize| {
        let body = github_push(
            &format!("b-{i}"),
            "0000000000000000000000000000000000000000",
            &sha,
        );
        let sig = format!("sha256={}", sign(SECRET, &body));
        let id = format!("delivery-{i}");
        let (code, text) = crate::common::server::http(
            addr,
            "POST",
            "/hooks/github",
            &[
                ("X-GitHub-Event", "push"),
                ("X-Hub-Signature-256", &sig),
                ("X-GitHub-Delivery", &id),
            ],
            &body,
        );
        let number = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["number"].as_u64());
        (code, id, number)
    };
    let (tx, rx) = std::sync::mpsc::channel();
    for sender in 0..8 {
        let (tx, addr, push) = (tx.clone(), addr.clone(), push.clone());
        std::thread::spawn(move || {
            for i in sender * 125..(sender + 1) * 125 {
                let _ = tx.send(push(&addr, i));
            }
        });
    }
    drop(tx);
    let mut answered = std::collections::BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while answered.len() < 1000 {
        let left = deadline.saturating_duration_since(Instant::now());
        let (code, id, number) = rx.recv_timeout(left).unwrap_or_else(|_| {
            panic!(
                "{} of 1,000 deliveries answered while nobody read the server's log",
                answered.len()
            )
        });
        assert_eq!(code, 202, "{id}: {number:?}");
        answered.insert(id, number.expect("a build's number"));
    }
    let numbers: std::collections::BTreeSet<u64> = answered.values().copied().collect();
    assert_eq!(numbers.len(), 1000, "each delivery a build of its own");
    // Sent again: the build it made, not another.
    let (code, id, number) = push(&addr, 417);
    assert_eq!((code, number), (200, Some(answered[&id])), "{id}");
    let listed: std::collections::BTreeSet<u64> = srv
        .json("/api/builds")
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["number"].as_u64().unwrap())
        .collect();
    assert_eq!(listed, numbers, "the builds recorded are those answered");
    let log = said(&mut srv);
    wait_for(
        || {
            log.lock()
                .unwrap()
                .contains("log line(s) dropped: the log's reader was too slow")
        },
        "the dropped lines counted in the log",
    );
}
