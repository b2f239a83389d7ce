//! `runway serve` as a child process on a free loopback port, and a minimal HTTP client.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Child;

/// A running server.
pub struct Server {
    pub child: Child,
    /// `127.0.0.1:PORT`
    pub addr: String,
    /// What it printed after the first line.
    pub stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl Server {
    /// Starts `runway serve --config CONFIG --listen 127.0.0.1:0` with extra env.
    pub fn start(config: &Path, state: &Path, env: &[(&str, &str)]) -> Server {
        let mut c = super::runway();
        c.args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config);
        c.env("RUNWAY_STATE_DIR", state);
        c.env("XDG_CACHE_HOME", state.join("cache"));
        for (k, v) in env {
            c.env(k, v);
        }
        Server::spawn(&mut c)
    }

    /// Runs a `runway serve` command made by the caller (extra flags, a wrapper such as
    /// `prlimit`) and waits for its listen line.
    pub fn spawn(c: &mut std::process::Command) -> Server {
        let started =
            super::spawn_announcing(c, "runway serve: listening on http://", "runway serve");
        Server {
            child: started.child,
            addr: started.said,
            stdout: Some(started.stdout),
        }
    }

    /// Sends a signal to the server.
    pub fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status();
    }

    /// One HTTP request; returns (status, body).
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (u16, String) {
        http(&self.addr, method, path, headers, body)
    }

    /// GET a JSON document.
    pub fn json(&self, path: &str) -> serde_json::Value {
        let (code, body) = self.request("GET", path, &[], b"");
        assert_eq!(code, 200, "{path}: {body}");
        serde_json::from_str(&body).unwrap()
    }
}

impl Server {
    /// Waits up to `secs` for the server to exit; true if it did.
    pub fn exited_within(&mut self, secs: u64) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return true;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        false
    }
}

/// Stops the server as an operator would, so that the builds it is running are canceled
/// (jobs killed, workspaces removed) rather than orphaned: SIGTERM, then a second one
/// (cancel now); SIGKILL only if it has not exited after 30 s.
impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.signal("-TERM");
            std::thread::sleep(std::time::Duration::from_millis(100));
            self.signal("-TERM");
            if self.exited_within(30) {
                return;
            }
            // Said where the test output shows it: a server that does not stop when told
            // twice is a fault of its own (and 30 s of the suite).
            eprintln!(
                "runway serve (pid {}) had not stopped 30 s after two SIGTERMs: killed",
                self.child.id()
            );
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain HTTP/1.1 request with `Connection: close`.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String) {
    let mut s = TcpStream::connect(addr).expect("connects");
    // A server that never answers fails the test instead of hanging it.
    s.set_read_timeout(Some(std::time::Duration::from_secs(120)))
        .unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut resp = Vec::new();
    let _ = s.read_to_end(&mut resp);
    let text = String::from_utf8_lossy(&resp).into_owned();
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (code, body)
}

/// HMAC-SHA256 hex, as GitHub and Gitea sign deliveries.
pub fn sign(secret: &str, body: &[u8]) -> String {
    runway::server::hooks::sign(secret, body)
}

/// A git smart-HTTPS server (git's `http-backend` behind a token check, pinned by the
/// git the test command installs) serving the bare repositories under a directory.
pub struct GitHttps {
    child: std::process::Child,
    /// `https://127.0.0.1:PORT`
    pub url: String,
    /// `METHOD PATH STATUS`, one per request answered.
    pub requests: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl GitHttps {
    /// Serves `root` over TLS with the test certificate; requests must carry `token`.
    pub fn start(root: &Path, token: &str) -> GitHttps {
        GitHttps::start_with(root, token, &[])
    }

    /// [`GitHttps::start`] with extra flags (`--hold FILE`).
    pub fn start_with(root: &Path, token: &str, flags: &[&str]) -> GitHttps {
        let servers = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/servers");
        let started = super::spawn_announcing(
            std::process::Command::new(super::moto::python())
                .arg(format!("{servers}/git_http_server.py"))
                .arg("--root")
                .arg(root)
                .args(["--token-env", "GIT_HTTP_TOKEN"])
                .args(["--cert", &format!("{servers}/smtp-test-cert.pem")])
                .args(["--key", &format!("{servers}/smtp-test-key.pem")])
                .args(flags)
                .env("GIT_HTTP_TOKEN", token),
            "port ",
            "git_http_server.py",
        );
        let (child, port, out) = (started.child, started.said, started.stdout);
        let requests = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = requests.clone();
        std::thread::spawn(move || {
            for l in out.lines().map_while(Result::ok) {
                seen.lock().unwrap().push(l);
            }
        });
        GitHttps {
            child,
            url: format!("https://127.0.0.1:{port}"),
            requests,
        }
    }

    /// The certificate clients must trust (`GIT_SSL_CAINFO`).
    pub fn ca() -> &'static str {
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/servers/smtp-test-cert.pem"
        )
    }
}

impl Drop for GitHttps {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
