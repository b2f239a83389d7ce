//! A throwaway PostgreSQL cluster for tests (the store's unit tests, and the integration
//! tests through `#[path]`): Debian's postgresql, made with `initdb` as the `postgres`
//! user (initdb refuses root), trust authentication on a free loopback port, its data in
//! a temporary directory. The server is started by a thread that never ends and is told
//! to quit when the test process exits (`PR_SET_PDEATHSIG`), so nothing outlives the
//! tests. Each test takes a database of its own.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A running cluster.
pub struct Cluster {
    /// Its loopback port.
    pub port: u16,
    _dir: PathBuf,
    max_connections: u32,
}

/// Debian's PostgreSQL programs (the newest version installed), or those on `PATH`.
fn program(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.exists())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn id(flag: &str) -> u32 {
    let out = Command::new("id")
        .args([flag, "postgres"])
        .output()
        .expect("id runs");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a postgres user (apt-get install postgresql: bash scripts/test.sh does)")
}

/// Removes the clusters of test processes that are gone.
fn remove_stale() {
    for e in std::fs::read_dir(std::env::temp_dir())
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(rest) = name.strip_prefix("runway-pg-")
            && let Some(pid) = rest.split('-').next()
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn start() -> Cluster {
    start_in(
        std::env::temp_dir().join(format!("runway-pg-{}", std::process::id())),
        200,
    )
}

fn start_in(dir: PathBuf, max_connections: u32) -> Cluster {
    remove_stale();
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let (uid, gid) = (id("-u"), id("-g"));
    std::os::unix::fs::chown(&dir, Some(uid), Some(gid)).unwrap();
    let data = dir.join("data");
    let made = Command::new("runuser")
        .args(["-u", "postgres", "--"])
        .arg(program("initdb"))
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--no-sync"])
        .output()
        .expect("initdb runs");
    assert!(
        made.status.success(),
        "initdb: {}",
        String::from_utf8_lossy(&made.stderr)
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    run_postgres(&data, &dir, port, (uid, gid), max_connections);
    remove_at_exit(&dir);
    Cluster {
        port,
        _dir: dir,
        max_connections,
    }
}

/// The clusters this process started, stopped and removed as it exits.
static STARTED: std::sync::Mutex<Vec<PathBuf>> = std::sync::Mutex::new(Vec::new());

/// Has the cluster in `dir` stopped and removed when the test process exits: a static
/// cluster is never dropped, and each run left its data (40 MB) in the temp dir until
/// the next run's [`remove_stale`].
fn remove_at_exit(dir: &Path) {
    let mut started = STARTED.lock().unwrap_or_else(|p| p.into_inner());
    if started.is_empty() {
        // SAFETY: atexit(3) with a function that takes no arguments and never unwinds
        // (its body is caught).
        unsafe { libc::atexit(remove_started) };
    }
    started.push(dir.to_path_buf());
}

/// [`remove_at_exit`]'s handler: each cluster's postmaster told to quit at once
/// (`SIGQUIT`, as its parent's death would), waited for a few seconds, its directory
/// removed.
extern "C" fn remove_started() {
    let _ = std::panic::catch_unwind(|| {
        let dirs = std::mem::take(&mut *STARTED.lock().unwrap_or_else(|p| p.into_inner()));
        for dir in dirs {
            if let Some(pid) = postmaster(&dir) {
                // Reaped by its thread in `run_postgres`, which still runs.
                signal_and_wait(pid, libc::SIGQUIT, Some(250));
            }
            let _ = std::fs::remove_dir_all(&dir);
        }
    });
}

/// The process id of the postmaster of the cluster in `dir`, while it runs.
fn postmaster(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join("data/postmaster.pid"))
        .ok()
        .and_then(|t| t.lines().next()?.trim().parse().ok())
}

/// Sends `signal` to a postmaster this process started and waits (20 ms at a time, at
/// most `tries` times when given) until it is gone: its parent, the thread in
/// [`run_postgres`], reaps it, and no channel says so.
fn signal_and_wait(pid: i32, signal: i32, tries: Option<usize>) {
    // SAFETY: kill(2) of a cluster's postmaster, a process this test process started.
    unsafe { libc::kill(pid, signal) };
    let mut left = tries;
    while Path::new("/proc").join(pid.to_string()).exists() && left != Some(0) {
        left = left.map(|n| n - 1);
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// Starts the server of the cluster in `data` on `port`; returns once it accepts
/// connections.
fn run_postgres(data: &Path, dir: &Path, port: u16, (uid, gid): (u32, u32), max_connections: u32) {
    let (tx, rx) = std::sync::mpsc::channel();
    let (data2, sockets) = (data.to_path_buf(), dir.to_path_buf());
    std::thread::spawn(move || {
        let mut cmd = Command::new(program("postgres"));
        cmd.arg("-D")
            .arg(&data2)
            .args(["-p", &port.to_string(), "-h", "127.0.0.1", "-k"])
            .arg(&sockets)
            .args(["-c", "fsync=off", "-c"])
            .arg(format!("max_connections={max_connections}"))
            .uid(uid)
            .gid(gid)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // SAFETY: prctl between fork and exec; the server quits when this thread's
        // process ends (the thread itself never does).
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT);
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("postgres runs");
        let mut said = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        let mut log = String::new();
        loop {
            line.clear();
            if said.read_line(&mut line).unwrap_or(0) == 0 {
                let _ = tx.send(Err(log));
                break;
            }
            log.push_str(&line);
            if line.contains("ready to accept connections") {
                let _ = tx.send(Ok(()));
                // Keep reading what it says, so it never meets a full pipe.
                let _ = std::io::copy(&mut said, &mut std::io::sink());
                break;
            }
        }
        let _ = child.wait();
        loop {
            std::thread::park();
        }
    });
    if let Err(log) = rx.recv().expect("the cluster's thread answers") {
        panic!("postgres did not start: {log}");
    }
}

/// A cluster of the caller's own (not shared with other tests), which it may stop and
/// start again.
pub fn own() -> Cluster {
    own_limited(200)
}

/// [`own`], taking at most `max_connections` connections (3 of them kept for the
/// superuser, as PostgreSQL does).
pub fn own_limited(max_connections: u32) -> Cluster {
    static N: AtomicUsize = AtomicUsize::new(0);
    start_in(
        std::env::temp_dir().join(format!(
            "runway-pg-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        )),
        max_connections,
    )
}

/// The process's cluster, started on first use.
pub fn shared() -> &'static Cluster {
    static CLUSTER: OnceLock<Cluster> = OnceLock::new();
    CLUSTER.get_or_init(start)
}

impl Cluster {
    /// Stops the server as `pg_ctl stop -m fast` would (SIGINT: connections ended,
    /// a clean shutdown) and waits until it is gone. Only for a cluster of [`own`].
    pub fn stop(&self) {
        let pid = postmaster(&self._dir).expect("a running cluster");
        signal_and_wait(pid, libc::SIGINT, None);
    }

    /// Starts a stopped cluster again, on the same port.
    pub fn start(&self) {
        run_postgres(
            &self._dir.join("data"),
            &self._dir,
            self.port,
            (id("-u"), id("-g")),
            self.max_connections,
        );
    }

    /// A new, empty database; its URL.
    pub fn database(&self, prefix: &str) -> String {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        );
        let admin = format!("postgres://postgres@127.0.0.1:{}/postgres", self.port);
        let mut c =
            ::postgres::Client::connect(&admin, ::postgres::NoTls).expect("the cluster answers");
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .expect("CREATE DATABASE");
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }
}
