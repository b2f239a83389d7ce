//! The server, measured: webhook-to-first-command latency (a signed GitHub delivery is
//! POSTed; the clock stops when the build's first `$ command` line reaches the live log
//! over server-sent events), and intake of 1,000 signed deliveries from 8 clients at
//! once, then a count of what the queue holds. Run: `cargo bench --bench server`.

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::server::{Server, http};
use common::{bare_clone, repo_with};

const SECRET: &str = "bench-secret";

fn post(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
    http(addr, "POST", path, &headers, body)
}

fn delivery(branch: &str, sha: &str) -> (Vec<(&'static str, String)>, Vec<u8>) {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"), "before": "0000000000000000000000000000000000000000",
        "after": sha, "repository": {"full_name": "o/app"}, "head_commit": {"message": "bench"},
    }))
    .unwrap();
    let sig = format!("sha256={}", runway::server::hooks::sign(SECRET, &body));
    (
        vec![
            ("X-GitHub-Event", "push".into()),
            ("X-Hub-Signature-256", sig),
        ],
        body,
    )
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let work = repo_with(
        &dir.path().join("work"),
        "master",
        &[(
            ".travis.yml",
            "language: shell\nscript: echo first-command\nnotifications:\n  email: false\ncache: false\n",
        )],
        "bench",
    );
    let sha = common::git(&work, &["rev-parse", "HEAD"]);
    let bare = bare_clone(&work, &dir.path().join("app.git"));
    let config = dir.path().join("runway.toml");
    std::fs::write(
        &config,
        format!("concurrency = 2\nauto_cancel = false\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n", bare.display()),
    )
    .unwrap();
    let srv = Server::start(
        &config,
        &dir.path().join("state"),
        &[("APP_SECRET", SECRET)],
    );
    let addr = srv.addr.clone();

    // Latency: one delivery at a time, waiting for its first command on the live log.
    let rounds = 20;
    let mut lat = Vec::new();
    for i in 0..rounds {
        let (h, body) = delivery(&format!("lat{i}"), &sha);
        let t0 = Instant::now();
        let (code, resp) = post(&addr, "/hooks/github", &h, &body);
        assert_eq!(code, 202, "{resp}");
        let n: u64 = resp
            .split("\"number\":")
            .nth(1)
            .unwrap()
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut s = TcpStream::connect(&addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        s.write_all(format!("GET /builds/{n}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
            .unwrap();
        let mut seen = String::new();
        let mut buf = [0u8; 4096];
        loop {
            let k = s
                .read(&mut buf)
                .unwrap_or_else(|e| panic!("no first command for build {n}: {e}; saw {seen}"));
            if k == 0 {
                break;
            }
            seen.push_str(&String::from_utf8_lossy(&buf[..k]));
            if seen.contains("$ echo first-command") {
                lat.push(t0.elapsed());
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    lat.sort();
    let median = lat[lat.len() / 2];
    println!(
        "webhook-to-first-command: median {:.1} ms, min {:.1} ms, max {:.1} ms over {} deliveries",
        median.as_secs_f64() * 1e3,
        lat[0].as_secs_f64() * 1e3,
        lat[lat.len() - 1].as_secs_f64() * 1e3,
        lat.len()
    );

    // Intake: 1,000 signed deliveries from 8 clients at once.
    let total = 1000;
    let clients = 8;
    let t0 = Instant::now();
    let accepted: usize = std::thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|c| {
                let (addr, sha) = (addr.clone(), sha.clone());
                s.spawn(move || {
                    (0..total / clients)
                        .filter(|i| {
                            let (h, body) = delivery(&format!("in{c}-{i}"), &sha);
                            post(&addr, "/hooks/github", &h, &body).0 == 202
                        })
                        .count()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).sum()
    });
    let took = t0.elapsed();
    let (_, resp) = srv.request("GET", "/api/builds", &[], b"");
    let recorded = resp.matches("\"number\":").count();
    println!(
        "intake: {accepted}/{total} signed deliveries accepted in {:.2} s ({:.0}/s); {} builds recorded (expected {})",
        took.as_secs_f64(),
        accepted as f64 / took.as_secs_f64(),
        recorded,
        rounds + total
    );
}
