//! A contract server: Prism (npm `@stoplight/prism-cli`, pinned in
//! `tests/forge/package.json`, installed by scripts/test.sh) serving a forge's published
//! API description on a free loopback port and validating every request against it
//! (`--errors`: a request the description does not allow is answered 422 saying why),
//! behind a recorder that keeps each request runway sent and what Prism answered.
//! Stopped when dropped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// One request runway made, and the contract server's answer.
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub path: String,
    /// Header names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: String,
    pub status: u16,
    pub answer: String,
}

impl Call {
    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A running contract server and its recorder.
pub struct Contract {
    prism: crate::common::Lines,
    /// Where runway sends its requests (the recorder).
    pub addr: String,
    calls: Arc<Mutex<Vec<Call>>>,
    stop: Arc<AtomicBool>,
}

/// Where scripts/test.sh installed the forge contracts.
pub fn forge_dir() -> PathBuf {
    let dir = std::env::var("RUNWAY_TEST_FORGE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/forge"));
    assert!(
        dir.join("node_modules/.bin/prism").exists(),
        "the forge contracts are not installed at {}: run `bash scripts/test.sh` (it runs npm install)",
        dir.display()
    );
    dir
}

impl Contract {
    /// GitHub's statuses call, from its published OpenAPI description.
    pub fn github_statuses() -> Contract {
        Contract::start(&forge_dir().join("github-statuses.json"))
    }

    /// Prism serving `spec`, behind a recorder.
    pub fn start(spec: &Path) -> Contract {
        let port = crate::common::free_port();
        let mut cmd = std::process::Command::new(forge_dir().join("node_modules/.bin/prism"));
        cmd.args([
            "mock",
            "--errors",
            "-h",
            "127.0.0.1",
            "-p",
            &port.to_string(),
        ])
        .arg(spec)
        .stdin(std::process::Stdio::null());
        let prism = crate::common::Lines::spawn(&mut cmd, true);
        let (seen, up) = prism.wait_for("Prism is listening", 120);
        assert!(up, "prism did not start: {seen:#?}");
        let upstream = format!("127.0.0.1:{port}");
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let calls = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, s) = (calls.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(conn) = conn else { continue };
                let (c, up) = (c.clone(), upstream.clone());
                std::thread::spawn(move || relay(conn, &up, &c));
            }
        });
        Contract {
            prism,
            addr,
            calls,
            stop,
        }
    }

    /// The requests so far, oldest first.
    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }
}

/// Reads one request from `conn`, has the contract server answer it, answers the same.
fn relay(mut conn: TcpStream, upstream: &str, calls: &Mutex<Vec<Call>>) {
    conn.set_read_timeout(Some(std::time::Duration::from_secs(60)))
        .unwrap();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut headers = Vec::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let length: usize = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    let _ = reader.read_exact(&mut body);
    let pass: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "content-type" | "authorization" | "accept" | "private-token"
            )
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let (status, answer) = crate::common::server::http(upstream, &method, &path, &pass, &body);
    calls.lock().unwrap().push(Call {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status,
        answer: answer.clone(),
    });
    let _ = write!(
        conn,
        "HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
}

impl Drop for Contract {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
        let _ = self.prism.child.kill();
        let _ = self.prism.child.wait();
    }
}
