//! The web pages in a real headless browser (Debian's chromium, installed by the test
//! command): the list shows the build, the build page shows the live log as it grows,
//! and each job's tab follows that job live, even while jobs run side by side.

use crate::common::server::Server;
use crate::common::{bare_clone, git, repo_with};
use std::process::Command;
use std::time::Duration;

fn chromium() -> &'static str {
    let path = "/usr/bin/chromium";
    assert!(
        std::path::Path::new(path).exists(),
        "chromium is not installed: run `bash scripts/test.sh` (it runs apt-get install chromium)"
    );
    path
}

/// The text of the page's log and body at each moment (ms after opening it), read
/// from one open page through the DevTools protocol.
fn watch(url: &str, moments: &[u64]) -> Vec<(String, String)> {
    chromium();
    let out = Command::new("node")
        .arg("--experimental-websocket")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/servers/cdp_watch.mjs"
        ))
        .arg(url)
        .args(moments.iter().map(|m| m.to_string()))
        .output()
        .expect("node runs (apt-get install nodejs)");
    assert!(
        out.status.success(),
        "cdp_watch failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from cdp_watch");
    v.as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["log"].as_str().unwrap_or("").to_string(),
                s["body"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect()
}

fn last_line_number(dom: &str) -> u32 {
    last_number(dom, "log line ")
}

/// The highest N in `{prefix}N` on the page.
fn last_number(dom: &str, prefix: &str) -> u32 {
    dom.match_indices(prefix)
        .filter_map(|(i, _)| {
            dom[i + prefix.len()..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

/// A server with one repository whose `.travis.yml` is `yml`, and a build of its master
/// branch queued by a generic webhook. Returns the temp dir, the server and the commit.
fn serve_one_build(yml: &str, server: &str) -> (tempfile::TempDir, Server, String) {
    let dir = tempfile::tempdir().unwrap();
    let work = repo_with(
        &dir.path().join("work"),
        "master",
        &[(".travis.yml", yml)],
        "first",
    );
    let bare = bare_clone(&work, &dir.path().join("app.git"));
    let config = dir.path().join("runway.toml");
    std::fs::write(
        &config,
        format!(
            "{server}[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n",
            bare.display()
        ),
    )
    .unwrap();
    let srv = Server::start(&config, &dir.path().join("state"), &[("APP_SECRET", "s")]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    let body = format!("{{\"repo\":\"o/app\",\"branch\":\"master\",\"commit\":\"{sha}\"}}");
    let (code, text) = srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", "Bearer s")],
        body.as_bytes(),
    );
    assert_eq!(code, 202, "{text}");
    (dir, srv, sha)
}

#[test]
fn list_and_live_log_in_a_real_browser() {
    let yml = "language: shell\nscript:\n  - for i in $(seq 1 80); do echo \"log line $i\"; sleep 0.2; done\nnotifications:\n  email: false\n";
    let (_dir, srv, sha) = serve_one_build(yml, "");
    std::thread::sleep(Duration::from_millis(800));

    let base = format!("http://{}", srv.addr);
    // One page, open while the build runs, read at two moments.
    let seen = watch(&format!("{base}/builds/1"), &[2500, 6000]);
    let (a, b) = (last_line_number(&seen[0].0), last_line_number(&seen[1].0));
    assert!(
        a >= 1,
        "the page shows the log while the build runs: {:?}",
        seen[0].0
    );
    assert!(
        b > a,
        "the log grows on the open page: line {a}, then line {b}"
    );
    assert!(a < 80, "the first look was while the build ran ({a})");
    assert!(
        seen[0].0.contains("$ for i in $(seq 1 80)"),
        "{}",
        seen[0].0
    );

    // The list shows the build.
    let list = watch(&format!("{base}/"), &[1000]);
    let body = &list[0].1;
    assert!(
        body.contains("#1") && body.contains("o/app") && body.contains("master"),
        "{body}"
    );
    assert!(body.contains(&sha[..7]), "{body}");
}

/// Two jobs side by side: the build's log shows one live and holds the other back
/// (relay.rs), but the held job's own tab on the build page grows as it runs. When the
/// build ends, each tab shows its job's whole stored log, markup in it shown as text.
#[test]
fn each_jobs_tab_follows_it_live_while_jobs_run_side_by_side() {
    let yml = "language: shell\nenv:\n  - JOB=a\n  - JOB=b\nscript:\n  - echo \"<!--<script></script><i>kept as text</i>\"\n  - for i in $(seq 1 80); do echo \"$JOB line $i\"; sleep 0.2; done\nnotifications:\n  email: false\n";
    let (_dir, srv, _sha) = serve_one_build(yml, "concurrency = 2\n");

    // Which job the build's log shows live is whichever wrote first; the other is held.
    let build_log = || srv.request("GET", "/api/builds/1/log", &[], b"").1;
    let mut log = String::new();
    for _ in 0..300 {
        log = build_log();
        if log.contains("a line ") || log.contains("b line ") {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let (held, held_job, live) = if log.contains("a line ") {
        ("b line ", "1.2", "a line ")
    } else {
        ("a line ", "1.1", "b line ")
    };
    assert!(log.contains(live) && !log.contains(held), "{log}");

    let base = format!("http://{}", srv.addr);
    let seen = watch(&format!("{base}/builds/1#job={held_job}"), &[2500, 5000]);
    let (a, b) = (last_number(&seen[0].0, held), last_number(&seen[1].0, held));
    assert!(
        a >= 1,
        "job {held_job}'s tab shows its log: {:?}",
        seen[0].0
    );
    assert!(b > a, "job {held_job}'s tab grows: line {a}, then line {b}");
    assert!(b < 80, "the second look was while job {held_job} ran ({b})");
    assert!(
        !seen[1].0.contains(live),
        "job {held_job}'s tab shows only its job: {:?}",
        seen[1].0
    );
    assert!(
        seen[1].1.contains("Job 1.1 (running)") && seen[1].1.contains("Job 1.2 (running)"),
        "{}",
        seen[1].1
    );
    let log = build_log();
    assert!(
        !log.contains(held),
        "the build's log still holds {held_job} back: {log}"
    );

    let mut waited = 0;
    while srv.json("/api/builds/1")["state"] != "passed" {
        assert!(
            waited < 600,
            "build 1 did not pass: {}",
            srv.json("/api/builds/1")
        );
        std::thread::sleep(Duration::from_millis(100));
        waited += 1;
    }
    let done = watch(&format!("{base}/builds/1#job=1.1"), &[1500]);
    let (log, body) = &done[0];
    assert_eq!(last_number(log, "a line "), 80, "{log}");
    assert!(!log.contains("b line "), "{log}");
    // `<!--<script>` in the embedded data once ended the page's script (issue 10).
    assert!(
        log.contains("<!--<script></script><i>kept as text</i>"),
        "{log}"
    );
    assert!(body.contains("Job 1.2 (passed)"), "{body}");
}
