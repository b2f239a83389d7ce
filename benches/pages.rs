//! What people wait for on the server's pages, in Debian's chromium (Playwright), side
//! by side with a baseline in the same run:
//! - a build whose log is 4 MB: time until its last line is rendered on the build page
//!   (colours, numbers, folds), against the same 4 MB opened as plain text;
//! - the builds list of a store holding 10,000 builds: served (HTTP) and rendered,
//!   against a repository with one build on the same server.
//!
//! Run: `cargo bench --bench pages [ROUNDS]` (needs chromium and playwright-core, as
//! `bash scripts/test.sh` installs them).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use runway::build::BuildState;
use runway::store::{JobRow, NewBuild, Store};

/// A Travis-shaped log of about `bytes`: folds of install output, coloured lines,
/// plain script output. Returns it with the number of lines the page numbers.
fn big_log(bytes: usize) -> (Vec<u8>, usize) {
    let mut log = String::new();
    let mut shown = 0;
    let mut i = 0;
    while log.len() < bytes {
        i += 1;
        log.push_str(&format!(
            "travis_fold:start:install.{i}\r\ntravis_time:start:{i:08}\r\n$ npm ci --step {i}\r\n"
        ));
        shown += 1;
        for k in 0..40 {
            log.push_str(&format!(
                "\x1b[32madded\x1b[0m package-{i}-{k} in 0.{k:02}s from the registry\n"
            ));
            shown += 1;
        }
        log.push_str(&format!(
            "travis_time:end:{i:08}:start=1,finish=2,duration=1234567890\r\ntravis_fold:end:install.{i}\r\n"
        ));
        for k in 0..60 {
            log.push_str(&format!("test {i}.{k} ... ok (a line of plain output)\n"));
            shown += 1;
        }
    }
    (log.into_bytes(), shown)
}

fn get(addr: &str, path: &str) -> (Duration, usize) {
    let t = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").unwrap();
    let mut body = Vec::new();
    s.read_to_end(&mut body).unwrap();
    assert!(
        body.starts_with(b"HTTP/1.1 200") || body.starts_with(b"HTTP/1.0 200"),
        "{path}: {}",
        String::from_utf8_lossy(&body[..body.len().min(300)])
    );
    (t.elapsed(), body.len())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(5);
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let made = Instant::now();
    let mut st = Store::open(&state).unwrap();
    let job = |log: Vec<u8>| JobRow {
        number: String::new(),
        name: None,
        env: "JDK=openjdk17".into(),
        result: "passed".into(),
        reason: "all script commands passed".into(),
        duration_ms: 61_000,
        stage: "test".into(),
        deploys: Vec::new(),
        log,
        times: Vec::new(),
        worker: None,
        workers: Vec::new(),
    };
    let new = |repo: &str, i: usize| NewBuild {
        repo: repo.into(),
        branch: Some("master".into()),
        commit: format!("{i:040x}"),
        event: "push".into(),
        message: format!("Commit number {i}\n\nwith a body"),
        ..NewBuild::default()
    };
    for i in 0..10_000 {
        let b = st.begin(&new("o/big", i)).unwrap();
        let mut j = job(format!("log of build {i}\n").into_bytes());
        j.number = format!("{}.1", b.number);
        st.finish(b.id, BuildState::Passed, &[j]).unwrap();
    }
    let one = st.begin(&new("o/one", 1)).unwrap();
    let (log, lines) = big_log(4 * 1024 * 1024);
    let mut j = job(log.clone());
    j.number = format!("{}.1", one.number);
    st.finish(one.id, BuildState::Passed, &[j]).unwrap();
    drop(st);
    eprintln!(
        "store: 10,000 builds and one with a {} MB log ({lines} lines) in {:.1}s",
        log.len() / (1024 * 1024),
        made.elapsed().as_secs_f64()
    );
    let config = dir.path().join("runway.toml");
    std::fs::write(
        &config,
        "[[repo]]\nname = \"o/big\"\nurl = \"/nonexistent/big.git\"\n[[repo]]\nname = \"o/one\"\nurl = \"/nonexistent/one.git\"\n",
    )
    .unwrap();
    let mut server = Command::new(env!("CARGO_BIN_EXE_runway"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("RUNWAY_STATE_DIR", &state)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut first = String::new();
    {
        use std::io::BufRead;
        let mut r = std::io::BufReader::new(server.stdout.take().unwrap());
        r.read_line(&mut first).unwrap();
        // The rest of what it says is read (and dropped), so it never meets a full pipe.
        std::thread::spawn(move || std::io::copy(&mut r, &mut std::io::sink()));
    }
    let addr = first
        .split_whitespace()
        .find(|w| w.starts_with("127.0.0.1:") || w.starts_with("http://127.0.0.1:"))
        .map(|w| {
            w.trim_start_matches("http://")
                .trim_end_matches('/')
                .to_string()
        })
        .unwrap_or_else(|| panic!("no address in {first:?}"));

    // Served: the list's HTML for 10,000 builds and for one.
    let (mut big, mut small) = (Vec::new(), Vec::new());
    let (mut big_bytes, mut small_bytes) = (0, 0);
    for _ in 0..rounds * 10 {
        let (t, n) = get(&addr, "/");
        big.push(t.as_secs_f64() * 1000.0);
        big_bytes = n;
        let (t, n) = get(&addr, "/?repo=o%2Fone");
        small.push(t.as_secs_f64() * 1000.0);
        small_bytes = n;
    }
    let (served_big, served_small) = (median(big), median(small));

    // Rendered in chromium.
    let playwright = std::env::var("RUNWAY_TEST_PLAYWRIGHT").unwrap_or_else(|_| {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/target/browser/node_modules/playwright-core"
        )
        .into()
    });
    assert!(
        Path::new(&playwright).exists(),
        "playwright-core is missing: run bash scripts/test.sh first"
    );
    // A second baseline: the log's text without its escapes and markers (which cost
    // Chromium's plain-text view most of its time), served as plain text.
    let stripped: Vec<u8> = String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| !l.starts_with("travis_"))
        .map(|l| l.replace("\x1b[32m", "").replace("\x1b[0m", "") + "\n")
        .collect::<String>()
        .into_bytes();
    let text_server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let text_addr = text_server.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in text_server.incoming() {
            let Ok(mut s) = s else { continue };
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf);
            let head = format!(
                "HTTP/1.0 200 OK\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\r\n",
                stripped.len()
            );
            let _ = s.write_all(head.as_bytes());
            let _ = s.write_all(&stripped);
        }
    });
    let bare = format!("http://{text_addr}/log.txt");
    let base = format!("http://{addr}");
    let build = format!("{base}/builds/1?repo=o%2Fone");
    let plain = format!("{base}/api/builds/1/log?repo=o%2Fone");
    let out = Command::new("node")
        .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/benches/pages.mjs"))
        .arg(rounds.to_string())
        .arg(format!("{build}|document.getElementById('L{lines}')"))
        .arg(format!("{plain}|document.readyState === 'complete'"))
        .arg(format!("{bare}|document.readyState === 'complete'"))
        .arg(format!(
            "{base}/|document.querySelectorAll('#builds tbody tr').length === 50"
        ))
        .arg(format!(
            "{base}/?repo=o%2Fone|document.querySelectorAll('#builds tbody tr').length === 1"
        ))
        .env("RUNWAY_TEST_PLAYWRIGHT", &playwright)
        .output()
        .unwrap();
    let _ = server.kill();
    let _ = server.wait();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let ms = |url: &str| {
        median(
            v[url]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect(),
        )
    };
    let (page, text, bare_text) = (ms(&build), ms(&plain), ms(&bare));
    let (list_big, list_small) = (
        ms(&format!("{base}/")),
        ms(&format!("{base}/?repo=o%2Fone")),
    );
    println!(
        "pages, median of {rounds} rounds (chromium {rounds}×, HTTP {}×):",
        rounds * 10
    );
    println!(
        "  4 MB log ({lines} lines) readable on the build page: {page:.0} ms; the same bytes as plain text: {text:.0} ms (ratio {:.2}); its text without escapes and markers as plain text: {bare_text:.0} ms (ratio {:.2})",
        page / text,
        page / bare_text
    );
    println!(
        "  builds list served, 10,000 builds: {served_big:.1} ms ({big_bytes} bytes); one build: {served_small:.1} ms ({small_bytes} bytes); ratio {:.2}",
        served_big / served_small
    );
    println!(
        "  builds list rendered, 10,000 builds: {list_big:.0} ms; one build: {list_small:.0} ms; ratio {:.2}",
        list_big / list_small
    );
}
