//! Jobs on `runway worker` processes, measured side by side with the same server running
//! its jobs itself (the baseline), in the same run:
//!
//! - webhook-to-first-command: a signed delivery POSTed, the clock stops when the job's
//!   first `$ command` line reaches the build's live log over server-sent events; for a
//!   worker this is: intake, the claim held open by the worker answered, the commit
//!   packed and fetched, the job started in the worker's sandbox, its first chunk sent
//!   back and streamed;
//! - throughput: N trivial builds queued at once (by `BENCH_SENDERS` senders side by
//!   side, 4 by default; 1 before session 34), run through 1, 2 and 4 workers, and
//!   through a server running them itself with `concurrency` 1, 2 and 4, each timed
//!   after one build per worker (or slot) has warmed the processes up; with the CPU
//!   per build each round's processes used meanwhile (the server's, the workers', and
//!   their jobs'), which the machine's drifting pace does not move;
//! - time to detect a dead worker: a worker SIGKILLed mid-job, the clock stops when the
//!   job is errored "stopped answering" (lease 2 s, heartbeat 0.5 s).
//!
//! Run: `cargo bench --bench workers [N]` as root (N builds per throughput round,
//! default 1000; each round runs `BENCH_REPEAT` times, 2 by default, the variants in
//! an order that alternates from one turn to the next, and keeps its best;
//! `BENCH_K=1,4` runs only those numbers of workers). With
//! `BENCH_BEFORE=/path/to/an/older/runway`, the worker rounds and the server's own
//! latency run with that binary too (its server and its workers), in the same run:
//! before and after, each over its jobs' own CPU too (`BENCH_SKIP_NODISK=1` leaves
//! out the `--disk none` rounds). `BENCH_NODE_DISK=none`: the node's own rounds without a job disk
//! (`job_disk = "none"`), to set beside the workers' `--disk none` rounds.
//! `BENCH_DIR=DIR`: the servers' and workers' state directories in DIR rather than in
//! the temp dir (where the job disks' pools stay): to set apart what each one's
//! filesystem costs (`TMPDIR` moves both).

#[path = "../tests/it/common/mod.rs"]
#[allow(dead_code)]
mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::server::{Server, http};
use common::{bare_clone, repo_with};

const SECRET: &str = "bench-secret";
const TOKEN: &str = "bench-worker-token";

fn delivery(addr: &str, branch: &str, sha: &str) -> u64 {
    let body = serde_json::to_vec(&serde_json::json!({
        "ref": format!("refs/heads/{branch}"), "before": "0000000000000000000000000000000000000000",
        "after": sha, "repository": {"full_name": "o/app"}, "head_commit": {"message": "bench"},
    }))
    .unwrap();
    let sig = format!("sha256={}", runway::server::hooks::sign(SECRET, &body));
    let (code, resp) = http(
        addr,
        "POST",
        "/hooks/github",
        &[("X-GitHub-Event", "push"), ("X-Hub-Signature-256", &sig)],
        &body,
    );
    assert_eq!(code, 202, "delivery of {branch} to {addr}: {resp:?}");
    serde_json::from_str::<serde_json::Value>(&resp).unwrap()["number"]
        .as_u64()
        .unwrap()
}

/// How many deliveries are sent at once in a throughput round (`BENCH_SENDERS`, 4 by
/// default): a forge sends a busy repository's webhooks side by side, and one sender
/// waiting for each answer before the next measures the intake's answer time under
/// load (a worker round's jobs' store writes make it 2× the node's own) rather than
/// how fast queued builds are built.
fn senders() -> usize {
    std::env::var("BENCH_SENDERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|k| *k > 0)
        .unwrap_or(4)
}

/// Delivers pushes of branches `tp0`…`tp{n-1}` (`sha` on each) from [`senders`]
/// threads; the builds' numbers, the highest last.
fn deliver_all(addr: &str, n: usize, sha: &str) -> Vec<u64> {
    let k = senders().min(n.max(1));
    let next = std::sync::atomic::AtomicUsize::new(0);
    let mut numbers: Vec<u64> = std::thread::scope(|s| {
        let sending: Vec<_> = (0..k)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        if i >= n {
                            return mine;
                        }
                        mine.push(delivery(addr, &format!("tp{i}"), sha));
                    }
                })
            })
            .collect();
        sending
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    numbers.sort_unstable();
    numbers
}

/// Waits for `needle` on build `n`'s live log (server-sent events).
fn wait_on_events(addr: &str, n: u64, needle: &str) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(format!("GET /builds/{n}/events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    loop {
        let k = s
            .read(&mut buf)
            .unwrap_or_else(|e| panic!("no {needle:?} for build {n}: {e}; saw {seen}"));
        assert!(
            k > 0,
            "the stream of build {n} ended without {needle:?}: {seen}"
        );
        seen.push_str(&String::from_utf8_lossy(&buf[..k]));
        if seen.contains(needle) {
            return;
        }
    }
}

fn state(addr: &str, n: u64) -> String {
    let (_, body) = http(addr, "GET", &format!("/api/builds/{n}"), &[], b"");
    serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// A `runway worker` process.
struct Worker(Child);

/// Which runway a worker round runs.
#[derive(Clone, Copy, PartialEq)]
enum Variant {
    /// This build, as configured by default (a disk per job).
    Now,
    /// This build with `--disk none`: what the job disk (#23) costs, apart from the
    /// rest.
    NoDisk,
    /// `BENCH_BEFORE`'s binary (its server and its workers).
    Before,
}

impl Variant {
    fn tag(self) -> &'static str {
        match self {
            Variant::Now => "now",
            Variant::NoDisk => "nodisk",
            Variant::Before => "before",
        }
    }
}

/// The copies [`bin`] made: a static is never dropped, so [`remove_copies`] removes
/// their directory at the bench's end (each run left 200–400 MB in the temp dir).
static COPIES: std::sync::OnceLock<(
    tempfile::TempDir,
    std::path::PathBuf,
    Option<std::path::PathBuf>,
)> = std::sync::OnceLock::new();

/// The runway binary: this build's, or `BENCH_BEFORE`'s for the "before" rounds; each
/// a copy written whole (the linker's own output runs ~1 ms slower per process, its
/// pages cached as it wrote them, which a copied `BENCH_BEFORE` would not pay).
fn bin(before: bool) -> std::path::PathBuf {
    let (_, after, older) = COPIES.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let copy = |from: &std::ffi::OsStr, name: &str| {
            let to = dir.path().join(name);
            std::fs::copy(from, &to).unwrap();
            to
        };
        let after = copy(env!("CARGO_BIN_EXE_runway").as_ref(), "runway-after");
        let older = std::env::var_os("BENCH_BEFORE").map(|b| copy(&b, "runway-before"));
        (dir, after, older)
    });
    match older.as_ref().filter(|_| before) {
        Some(p) => p.clone(),
        None => after.clone(),
    }
}

impl Worker {
    fn start(dir: &Path, name: &str, addr: &str) -> Worker {
        Worker::start_of(Variant::Now, dir, name, addr)
    }

    fn start_of(v: Variant, dir: &Path, name: &str, addr: &str) -> Worker {
        Worker::start_in(v, dir, name, addr, None)
    }

    /// A worker whose processes count in `acct`.
    fn start_in(v: Variant, dir: &Path, name: &str, addr: &str, acct: Option<&Acct>) -> Worker {
        let state = dir.join(format!("worker-{name}"));
        let mut c = Command::new(bin(v == Variant::Before));
        c.args([
            "worker",
            "--name",
            name,
            "--server",
            &format!("http://{addr}"),
        ]);
        if v == Variant::NoDisk {
            c.args(["--disk", "none"]);
        }
        Acct::start_in(acct, &mut c);
        let child = c
            .env("RUNWAY_WORKER_TOKEN", TOKEN)
            .env("RUNWAY_STATE_DIR", &state)
            .env("XDG_CACHE_HOME", state.join("cache"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Worker(child)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A server for the bench repository: jobs on workers when `workers`, else in itself
/// with `concurrency`.
fn server(dir: &Path, bare: &Path, name: &str, workers: bool, concurrency: usize) -> Server {
    server_of(false, dir, bare, name, workers, concurrency, None)
}

fn server_of(
    before: bool,
    dir: &Path,
    bare: &Path,
    name: &str,
    workers: bool,
    concurrency: usize,
    acct: Option<&Acct>,
) -> Server {
    let config = dir.join(format!("{name}.toml"));
    let extra = if workers {
        "worker_token_env = \"BENCH_WORKER_TOKEN\"\nworker_lease_ms = 2000\nworker_heartbeat_ms = 500\n"
    } else if std::env::var("BENCH_NODE_DISK").as_deref() == Ok("none") {
        "job_disk = \"none\"\n"
    } else {
        ""
    };
    std::fs::write(
        &config,
        format!(
            "concurrency = {concurrency}\nauto_cancel = false\n{extra}[[repo]]\nname = \"o/app\"\nurl = \"{}\"\nwebhook_secret_env = \"APP_SECRET\"\n",
            bare.display()
        ),
    )
    .unwrap();
    serve_node(
        before,
        &config,
        &dir.join(format!("state-{name}")),
        &[],
        acct,
    )
}

/// `runway serve --config CONFIG` (this build's, or `BENCH_BEFORE`'s) with its state in
/// `state`, the bench's secrets and `env`; its event log read away (a full pipe would
/// stall it after a few hundred builds).
fn serve_node(
    before: bool,
    config: &Path,
    state: &Path,
    env: &[(&str, &str)],
    acct: Option<&Acct>,
) -> Server {
    let mut c = Command::new(bin(before));
    c.args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .env("NO_COLOR", "1")
        .env("RUNWAY_STATE_DIR", state)
        .env("XDG_CACHE_HOME", state.join("cache"))
        .env("APP_SECRET", SECRET)
        .env("BENCH_WORKER_TOKEN", TOKEN);
    c.envs(env.iter().copied());
    Acct::start_in(acct, &mut c);
    let mut srv = Server::spawn(&mut c);
    if let Some(mut out) = srv.stdout.take() {
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    srv
}

/// The CPU time processes `pids` have used, with that of the children they reaped
/// (`/proc/PID/stat`: utime, stime, cutime, cstime; in the kernel's clock ticks, 100 a
/// second).
fn cpu_of(pids: &[u32]) -> Duration {
    let ticks: u64 = pids
        .iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).ok())
        .map(|stat| {
            // The fields after the command's name, which is in parentheses.
            let after = stat.rsplit_once(')').map_or("", |(_, a)| a);
            after
                .split_whitespace()
                .skip(11)
                .take(4)
                .filter_map(|f| f.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum();
    Duration::from_millis(ticks * 10)
}

/// A cpuacct cgroup (v1) the bench puts a round's processes in: the CPU they and every
/// process they start use, to the nanosecond, whoever reaps them (a sandbox's holder
/// outlives its job under PID 1, a worker's lease keeper is never reaped in a round:
/// `/proc/PID/stat` counts neither). `None` where there is no such hierarchy.
struct Acct(std::path::PathBuf);

impl Acct {
    fn new(name: &str) -> Option<Acct> {
        let root = Path::new("/sys/fs/cgroup/cpuacct");
        if !root.join("cpuacct.usage").exists() {
            return None;
        }
        let dir = root.join(format!("runway-bench-{}-{name}", std::process::id()));
        std::fs::create_dir(&dir).ok()?;
        Some(Acct(dir))
    }

    /// Starts `c` in this cgroup: the child joins it before it executes runway, so
    /// everything it forks is counted.
    fn start_in(acct: Option<&Acct>, c: &mut Command) {
        let Some(a) = acct else { return };
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::process::CommandExt;
        let procs =
            std::ffi::CString::new(a.0.join("cgroup.procs").as_os_str().as_bytes()).unwrap();
        // SAFETY: between fork and exec the closure calls only open, write and close
        // (async-signal-safe) on a path allocated before the fork; it allocates nothing.
        unsafe {
            c.pre_exec(move || {
                let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if fd < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                let wrote = libc::write(fd, b"0".as_ptr().cast(), 1);
                libc::close(fd);
                if wrote != 1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }

    /// Moves the processes `parents` started that are named `comm` here (what they
    /// start from then on counts here too).
    fn take_children(&self, parents: &[u32], comm: &str) {
        for p in parents {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{p}/task")) else {
                continue;
            };
            for t in tasks.flatten() {
                let kids = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
                for kid in kids.split_whitespace() {
                    let named = std::fs::read_to_string(format!("/proc/{kid}/comm"))
                        .is_ok_and(|c| c.trim() == comm);
                    if named {
                        let _ = std::fs::write(self.0.join("cgroup.procs"), kid);
                    }
                }
            }
        }
    }

    /// The CPU its processes have used so far.
    fn used(&self) -> Duration {
        let ns = std::fs::read_to_string(self.0.join("cpuacct.usage"))
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0);
        Duration::from_nanos(ns)
    }
}

impl Drop for Acct {
    fn drop(&mut self) {
        // Emptied once its processes are gone (a holder may outlive its job briefly).
        for _ in 0..100 {
            if std::fs::remove_dir(&self.0).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The `p` quantile (0.5: the median) of sorted `v`; zero when empty.
fn percentile(v: &[Duration], p: f64) -> Duration {
    v.get(((v.len() as f64 * p) as usize).min(v.len().saturating_sub(1)))
        .copied()
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A repository `d/NAME` whose build runs `script`, cloned bare to `d/NAME.git`: its
/// commit and the clone.
fn bench_repo(d: &Path, name: &str, script: &str) -> (String, std::path::PathBuf) {
    let work = repo_with(
        &d.join(name),
        "master",
        &[(
            ".travis.yml",
            &format!(
                "language: shell\nscript: {script}\nnotifications:\n  email: false\ncache: false\n"
            ),
        )],
        "bench",
    );
    let sha = common::git(&work, &["rev-parse", "HEAD"]);
    (sha, bare_clone(&work, &d.join(format!("{name}.git"))))
}

/// A burst on several machines (issue 30), with `BENCH_BURST=N` (and nothing else of
/// this bench): N pushes at once, alternating between two serve nodes on one
/// PostgreSQL that takes 30 connections, run by three workers; this build, then (with
/// `BENCH_BEFORE`) the older one on a fresh database, in the same run. Measured: builds
/// per second until every build ended, how many did not pass, each build's time from
/// its webhook to its job's first command (p50, p95; the job prints the time it ran),
/// and from its delivery to its end (p50, p95; the list polled every 50 ms), and the
/// most connections in use at once.
fn burst(n: usize) {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // The job says when its first command ran, on the machine's clock.
    let (sha, bare) = bench_repo(d, "app", "echo first-command-at-$(date +%s%N)");
    // `BENCH_MAX_CONNECTIONS` (30 by default): a limit the older build fits under
    // compares the two without its errored builds.
    let limit: u32 = std::env::var("BENCH_MAX_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    let pg = common::postgres::own_limited(limit);
    let mut variants = vec![false];
    if std::env::var_os("BENCH_BEFORE").is_some() {
        variants.push(true);
    }
    for before in variants {
        let tag = if before { "before" } else { "after" };
        let url = pg.database(&format!("burst_{tag}"));
        let config = d.join(format!("burst-{tag}.toml"));
        std::fs::write(
            &config,
            format!(
                "concurrency = 2\nauto_cancel = false\ndatabase_url_env = \"BENCH_DATABASE_URL\"\n\
                 worker_token_env = \"BENCH_WORKER_TOKEN\"\n[[repo]]\nname = \"o/app\"\nurl = \"{}\"\n\
                 webhook_secret_env = \"APP_SECRET\"\n",
                bare.display()
            ),
        )
        .unwrap();
        let node = |name: &str| {
            let state = d.join(format!("state-{tag}-{name}"));
            serve_node(
                before,
                &config,
                &state,
                &[("BENCH_DATABASE_URL", &url)],
                None,
            )
        };
        let (a, b) = (node("a"), node("b"));
        let variant = if before {
            Variant::Before
        } else {
            Variant::Now
        };
        let _ws: Vec<Worker> = (0..3)
            .map(|i| Worker::start_of(variant, d, &format!("burst-{tag}-{i}"), &a.addr))
            .collect();
        let peak = common::ConnectionPeak::start(&url);
        let t = Instant::now();
        let mut sent: Vec<(u64, Instant, std::time::SystemTime)> = Vec::new();
        let mut refused = 0;
        for i in 0..n {
            let srv = if i % 2 == 0 { &a } else { &b };
            // Each push of its own (a `before` of its own: the same push twice is one).
            let body = serde_json::to_vec(&serde_json::json!({
                "ref": "refs/heads/master", "before": format!("{:040x}", i + 1),
                "after": sha, "repository": {"full_name": "o/app"}, "head_commit": {"message": "burst"},
            }))
            .unwrap();
            let sig = format!("sha256={}", runway::server::hooks::sign(SECRET, &body));
            let id = format!("burst-{tag}-{i}");
            let posted = std::time::SystemTime::now();
            let (code, resp) = http(
                &srv.addr,
                "POST",
                "/hooks/github",
                &[
                    ("X-GitHub-Event", "push"),
                    ("X-Hub-Signature-256", &sig),
                    ("X-GitHub-Delivery", &id),
                ],
                &body,
            );
            match serde_json::from_str::<serde_json::Value>(&resp)
                .ok()
                .and_then(|v| v["number"].as_u64())
            {
                Some(num) if code == 202 => sent.push((num, Instant::now(), posted)),
                _ => refused += 1,
            }
        }
        let mut ended: std::collections::HashMap<u64, (Instant, String)> = Default::default();
        let deadline = Instant::now() + Duration::from_secs(600);
        while ended.len() < sent.len() && Instant::now() < deadline {
            let (_, body) = http(&a.addr, "GET", "/api/builds?limit=1000", &[], b"");
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&body) {
                for bld in v.as_array().into_iter().flatten() {
                    let (Some(num), Some(st)) = (bld["number"].as_u64(), bld["state"].as_str())
                    else {
                        continue;
                    };
                    if !matches!(st, "queued" | "running") {
                        ended.entry(num).or_insert((Instant::now(), st.to_string()));
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let took = t.elapsed();
        let most = peak.finish();
        let mut waits: Vec<Duration> = sent
            .iter()
            .filter_map(|(num, at, _)| {
                ended
                    .get(num)
                    .map(|(e, _)| e.saturating_duration_since(*at))
            })
            .collect();
        waits.sort();
        let passed = ended.values().filter(|(_, st)| st == "passed").count();
        // Webhook to first command: from just before each delivery was posted to the
        // time its job's first command printed (read back from its log).
        let mut firsts: Vec<Duration> = sent
            .iter()
            .filter_map(|(num, _, posted)| {
                let (_, log) = http(&a.addr, "GET", &format!("/api/builds/{num}/log"), &[], b"");
                let ns: u128 = log
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("first-command-at-"))?
                    .parse()
                    .ok()?;
                let posted = posted
                    .duration_since(std::time::UNIX_EPOCH)
                    .ok()?
                    .as_nanos();
                Some(Duration::from_nanos(ns.saturating_sub(posted) as u64))
            })
            .collect();
        firsts.sort();
        println!(
            "burst of {n} pushes to two nodes, 3 workers, max_connections {limit} ({tag}): {:.1} builds/s; {passed} passed, {} ended otherwise, {} never ended, {refused} deliveries refused; webhook to first command p50 {:.0} ms, p95 {:.0} ms ({} read); delivery to end p50 {:.0} ms, p95 {:.0} ms; at most {} connections in use",
            sent.len() as f64 / took.as_secs_f64(),
            ended.len() - passed,
            sent.len() - ended.len(),
            ms(percentile(&firsts, 0.5)),
            ms(percentile(&firsts, 0.95)),
            firsts.len(),
            ms(percentile(&waits, 0.5)),
            ms(percentile(&waits, 0.95)),
            most,
        );
    }
}

fn main() {
    if let Some(n) = std::env::var("BENCH_BURST")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        burst(n);
        remove_copies();
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(p) => tempfile::tempdir_in(p).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let d = dir.path();
    let (sha, bare) = bench_repo(d, "app", "echo first-command");

    // Latency, alternating: the server running the job itself, and a worker.
    let skip_latency = std::env::var_os("BENCH_SKIP_LATENCY").is_some();
    let with_before = std::env::var_os("BENCH_BEFORE").is_some();
    let here = server(d, &bare, "here", false, 1);
    // With BENCH_BEFORE, the older binary's server running its jobs itself too.
    let here_before = with_before.then(|| server_of(true, d, &bare, "here-before", false, 1, None));
    let mut variants = vec![Variant::Now, Variant::NoDisk];
    if with_before {
        variants.push(Variant::Before);
    }
    let theres: Vec<(Variant, Server, Worker)> = variants
        .iter()
        .map(|&v| {
            let srv = server_of(
                v == Variant::Before,
                d,
                &bare,
                &format!("there-{}", v.tag()),
                true,
                1,
                None,
            );
            let w = Worker::start_of(v, d, &format!("lat-{}", v.tag()), &srv.addr);
            (v, srv, w)
        })
        .collect();
    let mut l_here = Vec::new();
    let mut l_here_before = Vec::new();
    let mut l_there: Vec<Vec<Duration>> = vec![Vec::new(); theres.len()];
    for i in 0..if skip_latency { 2 } else { 21 } {
        let mut rounds = vec![(&here, &mut l_here)];
        if let Some(srv) = &here_before {
            rounds.push((srv, &mut l_here_before));
        }
        for ((_, srv, _), out) in theres.iter().zip(l_there.iter_mut()) {
            rounds.push((srv, out));
        }
        for (srv, out) in rounds {
            let t = Instant::now();
            let b = delivery(&srv.addr, &format!("lat{i}"), &sha);
            wait_on_events(&srv.addr, b, "$ echo first-command");
            out.push(t.elapsed());
            while state(&srv.addr, b) == "running" {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
    // The first round warms the workers' copies of the repository.
    l_here.remove(0);
    if !l_here_before.is_empty() {
        l_here_before.remove(0);
        let (before, after) = (median(l_here_before.clone()), median(l_here.clone()));
        println!(
            "webhook-to-first-command in the server, median of 20: before {:.1} ms, after {:.1} ms (after/before {:.2})",
            ms(before),
            ms(after),
            after.as_secs_f64() / before.as_secs_f64()
        );
    }
    for l in &mut l_there {
        l.remove(0);
    }
    let mh = median(l_here.clone());
    let medians: Vec<Duration> = l_there.iter().map(|l| median(l.clone())).collect();
    let mt = medians[0];
    println!(
        "webhook-to-first-command, median of 20: in the server {:.1} ms, on a worker {:.1} ms (ratio {:.2}); worker min {:.1}, max {:.1}",
        ms(mh),
        ms(mt),
        mt.as_secs_f64() / mh.as_secs_f64(),
        ms(*l_there[0].iter().min().unwrap()),
        ms(*l_there[0].iter().max().unwrap()),
    );
    let nodisk = medians[1];
    println!(
        "webhook-to-first-command on a worker, median of 20: --disk none {:.1} ms, a disk per job {:.1} ms (with/without {:.2})",
        ms(nodisk),
        ms(mt),
        mt.as_secs_f64() / nodisk.as_secs_f64()
    );
    if with_before {
        let mo = medians[2];
        println!(
            "webhook-to-first-command on a worker, median of 20: before {:.1} ms, after {:.1} ms (after/before {:.2}); after with --disk none {:.1} ms (after/before {:.2})",
            ms(mo),
            ms(mt),
            mt.as_secs_f64() / mo.as_secs_f64(),
            ms(nodisk),
            nodisk.as_secs_f64() / mo.as_secs_f64()
        );
    }
    drop(theres);
    drop(here);
    drop(here_before);

    // Throughput: n builds at once, through k workers, and k slots in the server.
    // `BENCH_K=1,4`: only those rounds (1, 2 and 4 workers by default).
    let ks: Vec<usize> = std::env::var("BENCH_K")
        .ok()
        .map(|v| v.split(',').filter_map(|k| k.trim().parse().ok()).collect())
        .filter(|v: &Vec<usize>| !v.is_empty())
        .unwrap_or_else(|| vec![1, 2, 4]);
    for k in ks {
        let rate_of = |v: Option<Variant>| {
            let workers = v.is_some();
            let before = v == Some(Variant::Before);
            static ROUND: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
            let round = ROUND.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let name = format!("tp-{}-{k}-{round}", v.map_or("here", Variant::tag));
            // Exact CPU where the machine has cpuacct cgroups: one for the server, one
            // for the workers, each with every process they start.
            let accts = (
                Acct::new(&format!("{name}-server")),
                Acct::new(&format!("{name}-workers")),
            );
            // And one for the jobs: what the spawners start (moved there once warm).
            let jobs = Acct::new(&format!("{name}-jobs"));
            let srv = server_of(before, d, &bare, &name, workers, k, accts.0.as_ref());
            let ws: Vec<Worker> = match v {
                Some(v) => (0..k)
                    .map(|i| {
                        Worker::start_in(
                            v,
                            d,
                            &format!("tp{k}-{i}-{}-{round}", v.tag()),
                            &srv.addr,
                            accts.1.as_ref(),
                        )
                    })
                    .collect(),
                None => Vec::new(),
            };
            // Warmed first, both: one build per slot or worker, waited for, so that
            // what each process does once (its sandbox's check, its disk template,
            // its first disk) is not timed, and the round times the steady state a
            // long-running node or worker is in. K workers start K processes: their
            // start-up would otherwise weigh K times in a round of a few seconds.
            let warm: Vec<u64> = (0..k)
                .map(|i| delivery(&srv.addr, &format!("warm{i}"), &sha))
                .collect();
            for b in &warm {
                while matches!(state(&srv.addr, *b).as_str(), "queued" | "running") {
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            // The CPU the round's processes use from here to its end: the server's
            // and each worker's, with the jobs they reaped.
            let server = [srv.child.id()];
            let workers: Vec<u32> = ws.iter().map(|w| w.0.id()).collect();
            if let Some(j) = &jobs {
                j.take_children(&server, "runway-spawner");
                j.take_children(&workers, "runway-spawner");
            }
            // (server, workers, jobs): the jobs' in the first two without cgroups.
            let used = || match (&accts, &jobs) {
                ((Some(s), Some(w)), Some(j)) => (s.used(), w.used(), j.used()),
                _ => (cpu_of(&server), cpu_of(&workers), Duration::ZERO),
            };
            let cpu0 = used();
            let t = Instant::now();
            let numbers = deliver_all(&srv.addr, n, &sha);
            let queued_in = t.elapsed();
            let last = *numbers.last().unwrap();
            // The last build asked after each 10 ms (one row: little work for the
            // server); once it ended, the list, for the few that may still run beside
            // it. A round's end is then known within 10 ms, not 200.
            loop {
                if !matches!(state(&srv.addr, last).as_str(), "queued" | "running") {
                    let (_, body) = http(
                        &srv.addr,
                        "GET",
                        &format!("/api/builds?limit={}", n + k),
                        &[],
                        b"",
                    );
                    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                    let done = v
                        .as_array()
                        .unwrap()
                        .iter()
                        .filter(|b| !matches!(b["state"].as_str(), Some("queued" | "running")))
                        .count();
                    if done >= n + k {
                        break;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let took = t.elapsed();
            let per_build = |d: Duration| d.as_secs_f64() * 1000.0 / n as f64;
            let cpu1 = used();
            let (own, jobs_cpu) = (
                (
                    per_build(cpu1.0.saturating_sub(cpu0.0)),
                    per_build(cpu1.1.saturating_sub(cpu0.1)),
                ),
                per_build(cpu1.2.saturating_sub(cpu0.2)),
            );
            println!(
                "  round {name}: CPU per build: server {:.2} ms, workers {:.2} ms, jobs {jobs_cpu:.2} ms (the spawners' and what they started); queued in {:.1} s of {:.1} s ({} senders)",
                own.0,
                own.1,
                queued_in.as_secs_f64(),
                took.as_secs_f64(),
                senders()
            );
            // The jobs counted with whoever ran them.
            let cpu = if v.is_some() {
                (own.0, own.1 + jobs_cpu)
            } else {
                (own.0 + jobs_cpu, own.1)
            };
            let passed = (1..=last)
                .filter(|b| state(&srv.addr, *b) == "passed")
                .count();
            assert_eq!(passed, n + k, "every build passed");
            drop(ws);
            drop(srv);
            drop(accts);
            drop(jobs);
            (n as f64 / took.as_secs_f64(), cpu, jobs_cpu)
        };
        // Each variant runs `BENCH_REPEAT` times (2 by default), in turn, and its best
        // rate is kept: a burst of other work on the machine during one round does not
        // decide the comparison.
        let repeat: usize = std::env::var("BENCH_REPEAT")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(2);
        // `BENCH_SKIP_NODISK`: no `--disk none` rounds (a before/after comparison in
        // less time).
        let mut variants: Vec<Option<Variant>> = vec![None, Some(Variant::Now)];
        if std::env::var_os("BENCH_SKIP_NODISK").is_none() {
            variants.push(Some(Variant::NoDisk));
        }
        if with_before {
            variants.push(Some(Variant::Before));
        }
        let at = |v: Variant| variants.iter().position(|x| *x == Some(v));
        let mut rates = vec![Vec::new(); variants.len()];
        let mut cpus: Vec<Vec<(f64, f64)>> = vec![Vec::new(); variants.len()];
        // Each round's CPU per build over its jobs' own (`echo` in a sandbox: the same
        // work in every variant), when the jobs are counted apart.
        let mut paced: Vec<Vec<f64>> = vec![Vec::new(); variants.len()];
        // The variants take turns in an order that alternates (ABBA: the server first,
        // then the workers first, …): the machine's pace drifts within a run (its
        // filesystem slows as jobs' files churn, other work comes and goes), and a
        // fixed order gave every turn's second round the same share of that drift.
        for turn in 0..repeat.max(1) {
            let mut order: Vec<usize> = (0..variants.len()).collect();
            if turn % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let v = &variants[i];
                let (rate, cpu, jobs_cpu) = rate_of(*v);
                rates[i].push(rate);
                cpus[i].push(cpu);
                if jobs_cpu > 0.0 {
                    paced[i].push((cpu.0 + cpu.1) / jobs_cpu);
                }
            }
        }
        let best: Vec<f64> = rates
            .iter()
            .map(|r| r.iter().copied().fold(0f64, f64::max))
            .collect();
        let (here, there) = (best[0], best[1]);
        let nodisk = at(Variant::NoDisk).map(|i| best[i]);
        println!(
            "{n} builds, {k} at once: in the server {here:.1} builds/s, through {k} worker(s) {there:.1} builds/s (ratio {:.2}){}",
            there / here,
            nodisk.map_or(String::new(), |nodisk| format!(
                "; with --disk none {nodisk:.1} builds/s (with/without a disk {:.2})",
                there / nodisk
            ))
        );
        // The machine's pace drifts between rounds (the server's own rate moved by
        // ±15% from run to run here): each turn's workers round against the server's
        // round of the same turn (just before it or, every other turn, just after), as
        // well as best against best.
        let mut turns: Vec<f64> = rates[1].iter().zip(&rates[0]).map(|(w, h)| w / h).collect();
        turns.sort_by(f64::total_cmp);
        println!(
            "{n} builds, {k} at once, turn by turn (workers / server): {} (median {:.2})",
            turns
                .iter()
                .map(|r| format!("{r:.2}"))
                .collect::<Vec<_>>()
                .join(", "),
            turns[turns.len() / 2]
        );
        // CPU per build, the median of each variant's rounds: the time the round's
        // processes (server, workers, their jobs) ran, not how it fell on the clock.
        // The round with the median total, as (server, workers).
        let cpu: Vec<(f64, f64)> = cpus
            .iter()
            .map(|c| {
                let mut c = c.clone();
                c.sort_by(|a, b| (a.0 + a.1).total_cmp(&(b.0 + b.1)));
                c[c.len() / 2]
            })
            .collect();
        let total = |i: usize| cpu[i].0 + cpu[i].1;
        println!(
            "{n} builds, {k} at once, CPU per build (server, workers, jobs; median of {repeat}): in the server {:.2} ms, through {k} worker(s) {:.2} ms (server {:.2}, workers {:.2}; ratio {:.2}){}",
            total(0),
            total(1),
            cpu[1].0,
            cpu[1].1,
            total(1) / total(0),
            at(Variant::Before).map_or(String::new(), |b| format!(
                "; before {:.2} ms (server {:.2}, workers {:.2}; after/before {:.2})",
                total(b),
                cpu[b].0,
                cpu[b].1,
                total(1) / total(b)
            ))
        );
        // The machine's pace moves every process's CPU by as much as ±10% from one
        // round to the next, jobs included (whose work is the same everywhere): over
        // the jobs' own CPU, that moves out, and what is left is what each variant
        // spends around the same jobs.
        if paced.iter().all(|p| !p.is_empty()) {
            let med = |i: usize| {
                let mut p = paced[i].clone();
                p.sort_by(f64::total_cmp);
                p[p.len() / 2]
            };
            println!(
                "{n} builds, {k} at once, CPU per build over the jobs' own (median of {repeat}): in the server {:.2}, through {k} worker(s) {:.2} (ratio {:.2}); rounds: server {}, workers {}",
                med(0),
                med(1),
                med(1) / med(0),
                paced[0]
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                paced[1]
                    .iter()
                    .map(|r| format!("{r:.2}"))
                    .collect::<Vec<_>>()
                    .join(", "),
            );
            // Before and after, each over its jobs' own: what a change to the worker
            // path saves, set apart from the machine's pace.
            if let Some(b) = at(Variant::Before) {
                println!(
                    "{n} builds, {k} at once through {k} worker(s), CPU per build over the jobs' own (median of {repeat}): before {:.2}, after {:.2} (after/before {:.3}); rounds: before {}",
                    med(b),
                    med(1),
                    med(1) / med(b),
                    paced[b]
                        .iter()
                        .map(|r| format!("{r:.2}"))
                        .collect::<Vec<_>>()
                        .join(", "),
                );
            }
        }
        if let Some(b) = at(Variant::Before) {
            let before = best[b];
            println!(
                "{n} builds, {k} at once through {k} worker(s): before {before:.1} builds/s, after {there:.1} builds/s (after/before {:.2}){}",
                there / before,
                nodisk.map_or(String::new(), |nodisk| format!(
                    "; after with --disk none {nodisk:.1} builds/s (after/before {:.2})",
                    nodisk / before
                ))
            );
        }
    }

    // Dead-worker detection: lease 2 s, heartbeat 0.5 s.
    let (slow_sha, slow_bare) = bench_repo(d, "slow", "sleep 60");
    let srv = server(d, &slow_bare, "dead", true, 1);
    let mut detect = Vec::new();
    for i in 0..5 {
        let mut w = Worker::start(d, &format!("dead{i}"), &srv.addr);
        let b = delivery(&srv.addr, &format!("dead{i}"), &slow_sha);
        wait_on_events(&srv.addr, b, "$ sleep 60");
        let t = Instant::now();
        let _ = w.0.kill();
        while state(&srv.addr, b) != "errored" {
            std::thread::sleep(Duration::from_millis(10));
        }
        detect.push(t.elapsed());
        drop(w);
    }
    println!(
        "dead worker detected (lease 2,000 ms, heartbeat 500 ms), median of 5: {:.0} ms (min {:.0}, max {:.0}); ratio to the lease {:.2}",
        ms(median(detect.clone())),
        ms(*detect.iter().min().unwrap()),
        ms(*detect.iter().max().unwrap()),
        median(detect).as_secs_f64() / 2.0
    );
    drop(srv);
    remove_copies();
}

/// Removes the binaries' copies ([`COPIES`]).
fn remove_copies() {
    if let Some((copies, _, _)) = COPIES.get() {
        let _ = std::fs::remove_dir_all(copies.path());
    }
}
