//! The server, measured: webhook-to-first-command latency (a signed GitHub delivery is
//! POSTed; the clock stops when the build's first `$ command` line reaches the live log
//! over server-sent events), and intake of 1,000 signed deliveries from 8 clients at
//! once, then a count of what the queue holds. Run: `cargo bench --bench server`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-secret";

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "b")
        .env("GIT_AUTHOR_EMAIL", "b@example.com")
        .env("GIT_COMMITTER_NAME", "b")
        .env("GIT_COMMITTER_EMAIL", "b@example.com")
        .output()
        .unwrap();
    assert!(out.status.success(), "git {args:?}");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn post(addr: &str, path: &str, headers: &[(&str, String)], body: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = String::new();
    let _ = s.read_to_string(&mut resp);
    let code = resp
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, resp)
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
    let work = dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    git(&work, &["init", "-q", "-b", "master"]);
    std::fs::write(work.join(".travis.yml"), "language: shell\nscript: echo first-command\nnotifications:\n  email: false\ncache: false\n").unwrap();
    git(&work, &["add", "-A"]);
    git(&work, &["commit", "-q", "-m", "bench"]);
    let sha = git(&work, &["rev-parse", "HEAD"]);
    let bare = dir.path().join("app.git");
    git(
        dir.path(),
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let config = dir.path().join("runway.toml");
    std::fs::write(
        &config,
        format!("concurrency = 2\nauto_cancel = false\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n", bare.display()),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("APP_SECRET", SECRET)
        .env("RUNWAY_STATE_DIR", dir.path().join("state"))
        .env("XDG_CACHE_HOME", dir.path().join("cache"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    let mut server_out = BufReader::new(child.stdout.take().unwrap());
    server_out.read_line(&mut line).unwrap();
    let addr = line
        .trim()
        .trim_start_matches("runway serve: listening on http://")
        .to_string();

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
    let mut s = TcpStream::connect(&addr).unwrap();
    s.write_all(
        format!("GET /api/builds HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let recorded = resp.matches("\"number\":").count();
    println!(
        "intake: {accepted}/{total} signed deliveries accepted in {:.2} s ({:.0}/s); {} builds recorded (expected {})",
        took.as_secs_f64(),
        accepted as f64 / took.as_secs_f64(),
        recorded,
        rounds + total
    );
    let _ = child.kill();
    let _ = child.wait();
    drop(server_out);
}
