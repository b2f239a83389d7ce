//! `runway serve`: real HTTP deliveries (signed, unsigned, tampered, oversized,
//! malformed) to a server started on port 0, the durable queue across SIGKILL,
//! auto-cancellation, canceling a running build, and SIGTERM.

mod events;
mod forge;
mod intake;
mod mail;
mod postgres;
mod queue;
mod remote;
mod sandbox;
mod workers;

use crate::common::server::{Server, sign};

use crate::common::{bare_clone, git, repo_with};

use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

pub(super) const SECRET: &str = "hook-secret-42";

pub(super) const API_TOKEN: &str = "api-t0ken-7";

pub(super) struct Setup {
    pub(super) dir: tempfile::TempDir,
    pub(super) bare: PathBuf,
    pub(super) work: PathBuf,
    pub(super) config: PathBuf,
}

impl Setup {
    pub(super) fn new(yml: &str, extra_toml: &str) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let work = repo_with(
            &dir.path().join("work"),
            "master",
            &[(".travis.yml", yml)],
            "first",
        );
        let bare = bare_clone(&work, &dir.path().join("app.git"));
        git(&work, &["remote", "add", "hub", bare.to_str().unwrap()]);
        let config = dir.path().join("runway.toml");
        std::fs::write(
            &config,
            format!(
                "concurrency = 2\nshutdown_grace_secs = 5\nmax_body_bytes = 200000\n{extra_toml}\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n",
                bare.display()
            ),
        )
        .unwrap();
        Setup {
            dir,
            bare,
            work,
            config,
        }
    }

    /// Serves `toml` (repositories on a [`crate::common::server::GitHttps`] host) with the
    /// webhook secret, the host's certificate trusted, and `env`.
    pub(super) fn serve_remote(&self, toml: &str, env: &[(&str, &str)]) -> Server {
        std::fs::write(&self.config, toml).unwrap();
        let ca = crate::common::server::GitHttps::ca();
        let mut all = vec![("APP_SECRET", SECRET), ("GIT_SSL_CAINFO", ca)];
        all.extend_from_slice(env);
        Server::start(&self.config, &self.state(), &all)
    }

    /// A copy of the runway.toml as `runway-NAME.toml`, with `concurrency` (another
    /// node's).
    pub(super) fn config_with(&self, name: &str, concurrency: u32) -> PathBuf {
        let path = self.dir.path().join(format!("runway-{name}.toml"));
        let text = std::fs::read_to_string(&self.config).unwrap();
        std::fs::write(
            &path,
            text.replace("concurrency = 2", &format!("concurrency = {concurrency}")),
        )
        .unwrap();
        path
    }

    pub(super) fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub(super) fn start(&self) -> Server {
        Server::start(
            &self.config,
            &self.state(),
            &[("APP_SECRET", SECRET), ("RUNWAY_TEST_API_TOKEN", API_TOKEN)],
        )
    }

    /// Commits on `branch` and pushes to the bare repository; returns the sha.
    pub(super) fn commit(&self, branch: &str, msg: &str) -> String {
        let _ = git(&self.work, &["checkout", "-q", "-B", branch]);
        git(&self.work, &["commit", "-q", "--allow-empty", "-m", msg]);
        git(&self.work, &["push", "-q", "-f", "hub", branch]);
        git(&self.work, &["rev-parse", "HEAD"])
    }

    pub(super) fn head(&self) -> String {
        git(&self.work, &["rev-parse", "HEAD"])
    }
}

pub(super) fn github_push(branch: &str, before: &str, after: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"), "before": before, "after": after,
        "repository": {"full_name": "o/app"}, "head_commit": {"message": "a push"},
    }))
    .unwrap()
}

pub(super) fn generic(srv: &Server, branch: &str, commit: &str) -> (u16, String) {
    generic_for(srv, "o/app", branch, commit)
}

/// A generic delivery (bearer token) of a push of `commit` to `repo`'s `branch`.
pub(super) fn generic_for(srv: &Server, repo: &str, branch: &str, commit: &str) -> (u16, String) {
    let body =
        serde_json::to_vec(&serde_json::json!({"repo": repo, "branch": branch, "commit": commit}))
            .unwrap();
    srv.request(
        "POST",
        "/hooks/generic",
        &[("Authorization", &format!("Bearer {SECRET}"))],
        &body,
    )
}

/// Whether `ok` came true within a minute (asked every tenth of a second): for a
/// caller that says more than [`wait_for`] when it did not.
pub(super) fn came_true(mut ok: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

pub(super) fn wait_for(mut ok: impl FnMut() -> bool, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}");
}

pub(super) fn states(srv: &Server) -> Vec<(u64, String)> {
    srv.json("/api/builds")
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["number"].as_u64().unwrap(),
                b["state"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// What a server printed (its event log), read on a thread as it comes.
pub(super) fn said(srv: &mut Server) -> std::sync::Arc<std::sync::Mutex<String>> {
    use std::io::BufRead;
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut from = srv.stdout.take().unwrap();
    let to = out.clone();
    std::thread::spawn(move || {
        let mut line = String::new();
        while from.read_line(&mut line).unwrap_or(0) > 0 {
            to.lock().unwrap().push_str(&line);
            line.clear();
        }
    });
    out
}

/// One GET as raw text: status line, headers and body.
pub(super) fn raw_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut text = String::new();
    let _ = s.read_to_string(&mut text);
    text
}
