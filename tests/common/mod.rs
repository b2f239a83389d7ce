//! Helpers shared by the integration tests: run the real binary, make real git repositories.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The runway binary cargo built for these tests.
pub fn runway() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_runway"));
    c.env("NO_COLOR", "1")
        .env(
            "XDG_CACHE_HOME",
            std::env::temp_dir().join("runway-test-cache"),
        )
        .env(
            "XDG_STATE_HOME",
            std::env::temp_dir().join("runway-test-state"),
        );
    c
}

/// What a finished command printed, and how it exited.
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// stdout and stderr together, for messages.
    pub fn all(&self) -> String {
        format!("--- stdout\n{}\n--- stderr\n{}", self.stdout, self.stderr)
    }
}

/// Runs a command to completion.
pub fn run(cmd: &mut Command) -> Run {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().expect("command starts");
    Run {
        code: status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
    }
}

/// Runs git in `dir`, failing the test if git fails.
pub fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .current_dir(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "Ada Author")
        .env("GIT_AUTHOR_EMAIL", "ada@example.com")
        .env("GIT_COMMITTER_NAME", "Cy Committer")
        .env("GIT_COMMITTER_EMAIL", "cy@example.com")
        .output()
        .expect("git runs (apt-get install git)");
    assert!(
        out.status.success(),
        "git {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A new git work tree on branch `branch` with `files` committed with `message`.
pub fn repo_with(dir: &Path, branch: &str, files: &[(&str, &str)], message: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    git(dir, &["init", "-q", "-b", branch]);
    for (name, text) in files {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
    }
    git(dir, &["add", "-A"]);
    git(dir, &["commit", "-q", "-m", message]);
    dir.to_path_buf()
}

/// A bare clone of `work` at `bare` (what a push would go to); returns `bare`.
pub fn bare_clone(work: &Path, bare: &Path) -> PathBuf {
    git(
        work,
        &[
            "clone",
            "-q",
            "--bare",
            work.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    bare.to_path_buf()
}

/// A started server process, what it announced on its first line after `prefix`
/// (a port or an address), and its stdout for what it says later.
pub struct Announced {
    pub child: std::process::Child,
    pub said: String,
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

/// Spawns `cmd` (stdout piped, stderr dropped) and reads its first line, which must
/// start with `prefix`; `what` names the server in a failure.
pub fn spawn_announcing(cmd: &mut Command, prefix: &str, what: &str) -> Announced {
    use std::io::BufRead;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let said = line
        .trim()
        .strip_prefix(prefix)
        .unwrap_or_else(|| panic!("{what} said {line:?}"))
        .to_string();
    Announced {
        child,
        said,
        stdout,
    }
}

pub mod moto;
pub mod server;
pub mod smtp;
