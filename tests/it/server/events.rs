//! The server's own log: one line per event.

use super::*;

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
    let mut srv = Server::spawn(&mut c);
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    let (code, _) = srv.request("POST", "/hooks/generic", &[], b"{\"repo\":\"o/app\"}");
    assert_eq!(code, 401);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the build",
    );
    // issue 14: the build names the commit's author (read when the build read the commit).
    assert_eq!(srv.json("/api/builds/1")["author"], "Ada Author");
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
    // Issue 28 (7): a build that ended as its jobs did has no reason, not `reason=""`.
    assert!(ended.get("reason").is_none(), "{ended}");
    let refused = said("delivery refused").unwrap_or_else(|| panic!("{lines:#?}"));
    assert_eq!(refused["status"], 401);
    assert!(
        !lines.iter().any(|l| l.contains(SECRET)),
        "no secret in the server's log"
    );
}
