//! Helpers shared by the integration tests: run the real binary, make real git repositories.

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

/// Puts an executable copy of `from` at `to` without this process ever holding `to`
/// open for writing. A test thread's write descriptor is inherited by any child another
/// test thread forks at that moment, until that child execs; running `to` then fails
/// with "Text file busy" (ETXTBSY). `cp` writes it in a process of its own instead.
pub fn copy_executable(from: &Path, to: &Path) {
    let r = run(Command::new("cp").arg("--preserve=mode").arg(from).arg(to));
    assert_eq!(
        r.code,
        0,
        "cp {} {}: {}",
        from.display(),
        to.display(),
        r.all()
    );
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// Writes `body` to `path` as an executable script, the way [`copy_executable`] does.
pub fn write_executable(path: &Path, body: &str) {
    let draft = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(draft.path(), body).unwrap();
    copy_executable(draft.path(), path);
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

/// Runs a command to completion, or kills it after `limit` (its code is then -1 and
/// its stderr says so): for a command that must end by itself.
pub fn run_within(cmd: &mut Command, limit: std::time::Duration) -> Run {
    use std::io::Read;
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("command starts");
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = out.read_to_string(&mut text);
        text
    });
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Ok(Some(st)) = child.try_wait() {
            break Some(st);
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = errors.join().unwrap_or_default();
    if status.is_none() {
        stderr.push_str(&format!("\n(killed: still running after {limit:?})"));
    }
    Run {
        code: status.and_then(|s| s.code()).unwrap_or(-1),
        stdout: reader.join().unwrap_or_default(),
        stderr,
    }
}

/// Runs git in `dir`, failing the test if git fails.
/// Every file (and link) under `dir` on the host, links not followed.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() && !p.is_symlink() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

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

/// Spawns `cmd` (stdout piped, stderr read away) and reads its first line, which must
/// start with `prefix`; `what` names the server in a failure (with what it wrote to
/// stderr).
pub fn spawn_announcing(cmd: &mut Command, prefix: &str, what: &str) -> Announced {
    use std::io::{BufRead, Read};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what} does not start: {e}"));
    let mut err = child.stderr.take().unwrap();
    let errors = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = err.read_to_string(&mut text);
        text
    });
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    let Some(said) = line.trim().strip_prefix(prefix).map(str::to_string) else {
        let _ = child.kill();
        let _ = child.wait();
        let stderr = errors.join().unwrap_or_default();
        panic!("{what} said {line:?}; on stderr: {stderr}");
    };
    Announced {
        child,
        said,
        stdout,
    }
}

/// A running command whose output lines arrive on a channel as it prints them (read
/// by a thread, so a test waiting for a line never hangs on a silent child).
pub struct Lines {
    pub child: std::process::Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Lines {
    /// Spawns `cmd` with stdout (and, with `stderr`, stderr too) sent to [`Lines::lines`].
    pub fn spawn(cmd: &mut Command, stderr: bool) -> Lines {
        use std::io::{BufRead, BufReader, Read};
        use std::process::Stdio;
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(if stderr {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .spawn()
            .expect("the command starts");
        let (tx, lines) = std::sync::mpsc::channel();
        let read = |pipe: Box<dyn Read + Send>| {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        };
        read(Box::new(child.stdout.take().unwrap()));
        if let Some(err) = child.stderr.take() {
            read(Box::new(err));
        }
        Lines { child, lines }
    }

    /// Waits up to `secs` for a line containing `needle`; returns the lines read,
    /// and whether it came.
    pub fn wait_for(&self, needle: &str, secs: u64) -> (Vec<String>, bool) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(needle);
                    seen.push(line);
                    if found {
                        return (seen, true);
                    }
                }
                Err(_) => return (seen, false),
            }
        }
    }

    /// Waits up to `secs` for the command to end (killing it if it does not) and
    /// returns its exit code and the rest of its output.
    pub fn finish(mut self, secs: u64) -> (Option<i32>, Vec<String>) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break Some(status);
            }
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                break None;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        };
        let rest = self.lines.iter().collect();
        (status.and_then(|s| s.code()), rest)
    }
}

/// Fails when a process whose command line contains `pattern` is still running (a
/// job's process that should have been killed).
/// The ids of the processes whose command line contains `pattern` now.
pub fn processes(pattern: &str) -> std::collections::BTreeSet<u32> {
    let out = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Asserts that no process matching `pattern` runs but those in `before` (what ran
/// before the test's job: another test's, the machine's own).
pub fn assert_no_new_process(pattern: &str, before: &std::collections::BTreeSet<u32>) {
    let new: Vec<u32> = processes(pattern).difference(before).copied().collect();
    assert!(new.is_empty(), "`{pattern}` is still running: {new:?}");
}

pub fn assert_no_process(pattern: &str) {
    let left = Command::new("pgrep")
        .args(["-f", pattern])
        .output()
        .expect("pgrep runs");
    assert!(
        left.stdout.is_empty(),
        "`{pattern}` is still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}

/// Waits until no process's command line contains `pattern` (a kill travels through
/// `PR_SET_PDEATHSIG` and the end of a PID namespace), at most `secs`, then asserts it.
pub fn wait_gone(pattern: &str, secs: u64) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while std::time::Instant::now() < deadline {
        let left = Command::new("pgrep")
            .args(["-f", pattern])
            .output()
            .unwrap();
        if left.stdout.is_empty() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_no_process(pattern);
}

/// Lines jobs send to a port on loopback (`echo X > /dev/tcp/127.0.0.1/PORT`): how a
/// sandboxed job tells a test what it did (jobs share the host's network, not its
/// files).
pub struct Ledger {
    pub port: u16,
    lines: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Ledger {
    pub fn start() -> Ledger {
        use std::io::BufRead;
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { break };
                let sink = sink.clone();
                std::thread::spawn(move || {
                    for line in std::io::BufReader::new(conn).lines().map_while(Result::ok) {
                        sink.lock().unwrap().push(line);
                    }
                });
            }
        });
        Ledger { port, lines }
    }

    /// What arrived so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }
}

/// A port nothing listens on now (bound, then let go), for a gate a job waits on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The most connections a PostgreSQL database had open at once (others' than this
/// sampler's), sampled every 50 ms from a thread of its own until [`ConnectionPeak::finish`].
pub struct ConnectionPeak {
    most: std::sync::Arc<std::sync::atomic::AtomicI64>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    sampler: std::thread::JoinHandle<()>,
}

impl ConnectionPeak {
    /// Starts sampling the database `url` names.
    pub fn start(url: &str) -> ConnectionPeak {
        use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
        let most = std::sync::Arc::new(AtomicI64::new(0));
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        let (m, s, url) = (most.clone(), stop.clone(), url.to_string());
        let sampler = std::thread::spawn(move || {
            let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
            let name = url.rsplit('/').next().unwrap().to_string();
            while !s.load(Ordering::SeqCst) {
                let n: i64 = db
                    .query_one(
                        "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()",
                        &[&name],
                    )
                    .unwrap()
                    .get(0);
                m.fetch_max(n, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        });
        ConnectionPeak {
            most,
            stop,
            sampler,
        }
    }

    /// Stops sampling; the most seen.
    pub fn finish(self) -> i64 {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        self.sampler.join().unwrap();
        self.most.load(std::sync::atomic::Ordering::SeqCst)
    }
}

pub mod contract;
pub mod moto;
/// The throwaway PostgreSQL cluster the store's own tests use.
#[path = "../../../src/store/cluster.rs"]
pub mod postgres;
pub mod proxy;
pub mod server;
pub mod smtp;
