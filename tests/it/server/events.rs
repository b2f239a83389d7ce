//! The server's own log, one line per event; the builds list's stream of changes.

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

/// What `GET /events` says from `head` on (a request's path and headers), read until
/// `enough` holds of the events so far (or 60 s): each event as (its name, its id, the
/// build's state).
fn list_events(
    srv: &Server,
    head: &str,
    enough: impl Fn(&[(String, String, String)]) -> bool,
) -> Vec<(String, String, String)> {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "{head}\r\nHost: x\r\n\r\n").unwrap();
    let (mut said, mut name, mut id) = (Vec::new(), String::new(), String::new());
    for line in std::io::BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        if let Some(n) = line.strip_prefix("event:") {
            name = n.trim().to_string();
        } else if let Some(i) = line.strip_prefix("id:") {
            id = i.trim().to_string();
        } else if let Some(data) = line.strip_prefix("data:") {
            let state = serde_json::from_str::<serde_json::Value>(data.trim())
                .map(|v| v["state"].as_str().unwrap_or("").to_string())
                .unwrap_or_default();
            said.push((std::mem::take(&mut name), std::mem::take(&mut id), state));
            if enough(&said) {
                break;
            }
        }
    }
    said
}

/// The builds list's stream starts where its page was read: a build queued, run and
/// ended between the page's reading and the stream's opening is told first, each
/// change in order with its place as the event's id (a browser's reconnect sends the
/// last one back as `Last-Event-ID` and is told what came after it); a place this
/// server never gave (another start's) is told to reload.
#[test]
fn the_list_stream_starts_where_its_page_was_read() {
    let s = Setup::new(
        "language: shell\nscript: true\nnotifications:\n  email: false\n",
        "",
    );
    let srv = Server::start(&s.config, &s.state(), &[("APP_SECRET", SECRET)]);
    let seen = || {
        let (code, page) = srv.request("GET", "/", &[], b"");
        assert_eq!(code, 200, "{page}");
        page.split("data-seen=\"")
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or_else(|| panic!("no data-seen: {page}"))
            .to_string()
    };
    let before = seen();
    assert_eq!(generic(&srv, "master", &s.head()).0, 202);
    wait_for(
        || srv.json("/api/builds/1")["state"] == "passed",
        "the build",
    );
    // Read until the change a page read now was read after: the build's last.
    let last = seen();
    let ended = |said: &[(String, String, String)]| said.iter().any(|e| e.1 == last);
    let said = list_events(&srv, &format!("GET /events?after={before} HTTP/1.1"), ended);
    assert!(ended(&said), "the build's changes not told: {said:?}");
    assert_eq!(
        said.last().map(|e| e.2.as_str()),
        Some("passed"),
        "{said:?}"
    );
    assert!(said.iter().all(|e| e.0 == "build"), "{said:?}");
    let places: Vec<u64> = said
        .iter()
        .map(|e| e.1.rsplit('-').next().unwrap().parse().unwrap())
        .collect();
    assert!(places.windows(2).all(|w| w[0] < w[1]), "{said:?}");
    // A reconnect after the first change is told the rest, from the second on.
    let rest = list_events(
        &srv,
        &format!("GET /events HTTP/1.1\r\nLast-Event-ID: {}", said[0].1),
        ended,
    );
    assert_eq!(rest, said[1..], "told after the first");
    let other = list_events(&srv, "GET /events HTTP/1.1\r\nLast-Event-ID: 1-1", |_| true);
    assert_eq!(
        other.first().map(|e| e.0.as_str()),
        Some("reload"),
        "{other:?}"
    );
}
