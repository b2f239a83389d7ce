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

/// Checks one request as a forge's documentation describes it: Ok, or why not.
pub type Check = fn(&Call) -> Result<(), String>;

/// Where the recorder has requests answered: Prism, or a check of the documented fields.
#[derive(Clone)]
enum Upstream {
    Prism(String),
    Checked(Check),
    /// The first `n` requests answered 502 (a forge having a bad minute), the rest by
    /// Prism.
    Failing(Arc<std::sync::atomic::AtomicUsize>, String),
}

/// A running contract server and its recorder.
pub struct Contract {
    prism: Option<crate::common::Lines>,
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

    /// Gitea's statuses call, from Gitea's own description (tests/forge/gitea-statuses.json,
    /// its source named there). Served at `/repos/…` (Prism leaves out `basePath`).
    pub fn gitea_statuses() -> Contract {
        Contract::start(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/forge/gitea-statuses.json"),
        )
    }

    /// GitLab's commit status call (`POST /projects/:id/statuses/:sha`), checked against
    /// the fields its API documentation gives (docs.gitlab.com, "Commits API", "Set the
    /// pipeline status of a commit"): GitLab publishes no machine-readable description
    /// of it.
    pub fn gitlab_statuses() -> Contract {
        Contract::record(Upstream::Checked(check_gitlab_status), None)
    }

    /// [`Contract::github_statuses`] whose first `n` requests are answered 502.
    pub fn github_statuses_failing_first(n: usize) -> Contract {
        Contract::prism(&forge_dir().join("github-statuses.json"), n)
    }

    /// Prism serving `spec`, behind a recorder.
    pub fn start(spec: &Path) -> Contract {
        Contract::prism(spec, 0)
    }

    /// Prism serving `spec`, behind a recorder that answers the first `failing`
    /// requests 502 itself.
    fn prism(spec: &Path, failing: usize) -> Contract {
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
        let addr = format!("127.0.0.1:{port}");
        let upstream = if failing > 0 {
            Upstream::Failing(Arc::new(std::sync::atomic::AtomicUsize::new(failing)), addr)
        } else {
            Upstream::Prism(addr)
        };
        Contract::record(upstream, Some(prism))
    }

    fn record(upstream: Upstream, prism: Option<crate::common::Lines>) -> Contract {
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

/// The documented fields of GitLab's `POST /projects/:id/statuses/:sha`.
fn check_gitlab_status(c: &Call) -> Result<(), String> {
    let rest = c.path.strip_prefix("/api/v4").unwrap_or_default();
    let parts: Vec<&str> = rest.split('/').collect();
    let ok_path = parts.len() == 5
        && parts[1] == "projects"
        && !parts[2].is_empty()
        && !parts[2].contains('/')
        && parts[3] == "statuses"
        && parts[4].len() == 40
        && parts[4].chars().all(|ch| ch.is_ascii_hexdigit());
    if c.method != "POST" || !ok_path {
        return Err(format!(
            "not POST /projects/:id/statuses/:sha: {} {}",
            c.method, c.path
        ));
    }
    if c.header("private-token").is_none_or(str::is_empty) {
        return Err("no PRIVATE-TOKEN header".into());
    }
    let v = c.json();
    let Some(fields) = v.as_object() else {
        return Err("the body is not a JSON object".into());
    };
    for (k, value) in fields {
        match k.as_str() {
            "state" => {
                let s = value.as_str().unwrap_or_default();
                if ![
                    "pending", "running", "success", "failed", "canceled", "skipped",
                ]
                .contains(&s)
                {
                    return Err(format!("state {value} is not one GitLab takes"));
                }
            }
            "ref" | "name" | "context" | "target_url" | "description" => {
                if !(value.is_string() || value.is_null()) {
                    return Err(format!("{k} is not a string"));
                }
                if k == "description" && value.as_str().is_some_and(|d| d.chars().count() > 255) {
                    return Err("description longer than 255".into());
                }
            }
            "coverage" | "pipeline_id" => {}
            other => return Err(format!("{other} is not a field of the call")),
        }
    }
    if !fields.contains_key("state") {
        return Err("no state".into());
    }
    Ok(())
}

/// Reads one request from `conn`, has the contract server answer it, answers the same.
fn relay(mut conn: TcpStream, upstream: &Upstream, calls: &Mutex<Vec<Call>>) {
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
    let forwarded = headers.clone();
    let pass: Vec<(&str, &str)> = forwarded
        .iter()
        .filter(|(k, _)| {
            matches!(
                k.as_str(),
                "content-type" | "authorization" | "accept" | "private-token"
            )
        })
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let mut call = Call {
        method,
        path,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
        status: 0,
        answer: String::new(),
    };
    (call.status, call.answer) = match upstream {
        Upstream::Prism(addr) => {
            crate::common::server::http(addr, &call.method, &call.path, &pass, &body)
        }
        Upstream::Failing(left, addr) => {
            let fail = left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
            if fail {
                (502, "{\"message\": \"bad gateway\"}".to_string())
            } else {
                crate::common::server::http(addr, &call.method, &call.path, &pass, &body)
            }
        }
        Upstream::Checked(check) => match check(&call) {
            Ok(()) => (201, "{\"id\": 1}".to_string()),
            Err(why) => (400, serde_json::json!({ "message": why }).to_string()),
        },
    };
    let (status, answer) = (call.status, call.answer.clone());
    calls.lock().unwrap().push(call);
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
        if let Some(p) = self.prism.as_mut() {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
    }
}
