//! The web pages in a real headless browser (Debian's chromium, installed by the test
//! command): the list shows the build, and the build page shows the live log as it grows.

mod common;
use common::server::Server;
use common::{bare_clone, git, repo_with};
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
    dom.match_indices("log line ")
        .filter_map(|(i, _)| {
            dom[i + 9..]
                .split(|c: char| !c.is_ascii_digit())
                .next()?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

#[test]
fn list_and_live_log_in_a_real_browser() {
    let dir = tempfile::tempdir().unwrap();
    let yml = "language: shell\nscript:\n  - for i in $(seq 1 80); do echo \"log line $i\"; sleep 0.2; done\nnotifications:\n  email: false\n";
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
            "[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n",
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
