//! Several machines (issue 15): `runway serve` nodes on one PostgreSQL (a real cluster),
//! and `runway worker` processes that reach them over HTTP only, each with its own state
//! and cache directories and no database settings.

use super::*;

const WORKER_TOKEN: &str = "w0rker-t0ken";

/// A `runway worker` process, killed (SIGKILL) when dropped.
struct Worker {
    name: String,
    lines: crate::common::Lines,
    /// Everything it printed so far.
    said: Vec<String>,
}

impl Worker {
    fn start(dir: &Path, name: &str, servers: &[&Server], labels: &[&str]) -> Worker {
        Worker::start_with(dir, name, servers, labels, &[])
    }

    fn start_with(
        dir: &Path,
        name: &str,
        servers: &[&Server],
        labels: &[&str],
        flags: &[&str],
    ) -> Worker {
        Worker::spawn(crate::common::runway(), dir, name, servers, labels, flags)
    }

    /// A worker in network namespace `ns` (reaching the servers over its veth pair).
    fn start_in(ns: &NetNs, dir: &Path, name: &str, servers: &[&Server]) -> Worker {
        let mut c = std::process::Command::new("ip");
        c.args(["netns", "exec", &ns.name, env!("CARGO_BIN_EXE_runway")])
            .env("NO_COLOR", "1");
        Worker::spawn(c, dir, name, servers, &[], &[])
    }

    fn spawn(
        mut c: std::process::Command,
        dir: &Path,
        name: &str,
        servers: &[&Server],
        labels: &[&str],
        flags: &[&str],
    ) -> Worker {
        c.arg("worker").args(["--name", name]).args(flags);
        for s in servers {
            c.args(["--server", &format!("http://{}", s.addr)]);
        }
        for l in labels {
            c.args(["--label", l]);
        }
        let state = dir.join(format!("worker-{name}"));
        c.env("RUNWAY_STATE_DIR", &state)
            .env("RUNWAY_CACHE_DIR", state.join("cache"))
            .env("XDG_CACHE_HOME", state.join("cache"))
            .env("RUNWAY_WORKER_TOKEN", WORKER_TOKEN)
            .env_remove("RUNWAY_TEST_DATABASE_URL");
        for aws in [
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_ENDPOINT_URL",
            "AWS_REGION",
        ] {
            c.env_remove(aws);
        }
        let lines = crate::common::Lines::spawn(&mut c, true);
        let mut w = Worker {
            name: name.to_string(),
            lines,
            said: Vec::new(),
        };
        w.wait_for(" → http://", 30);
        w
    }

    fn wait_for(&mut self, needle: &str, secs: u64) {
        let (seen, found) = self.lines.wait_for(needle, secs);
        self.said.extend(seen);
        assert!(
            found,
            "worker {} never said {needle:?}: {:#?}",
            self.name, self.said
        );
    }

    fn signal(&self, sig: &str) {
        let _ = std::process::Command::new("kill")
            .args([sig, &self.lines.child.id().to_string()])
            .status();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.lines.child.kill();
        let _ = self.lines.child.wait();
    }
}

/// The worker protocol's header, for calls a test makes by hand as a worker would.
const PROTOCOL: (&str, &str) = ("X-Runway-Protocol", "5");

/// `srv` with its event log read away (a full pipe would stall it).
fn drained(mut srv: Server) -> Server {
    if let Some(mut out) = srv.stdout.take() {
        std::thread::spawn(move || std::io::copy(&mut out, &mut std::io::sink()));
    }
    srv
}

/// `srv`'s event log, line by line, as it prints it.
fn log_lines(srv: &mut Server) -> std::sync::mpsc::Receiver<String> {
    let (tx, lines) = std::sync::mpsc::channel();
    let out = srv.stdout.take().unwrap();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in out.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    lines
}

/// The next of `lines` that holds `needle`, within `deadline`; None when none came.
fn next_logged(
    lines: &std::sync::mpsc::Receiver<String>,
    needle: &str,
    deadline: Instant,
) -> Option<String> {
    loop {
        match lines.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(l) if l.contains(needle) => return Some(l),
            Ok(_) => {}
            Err(_) => return None,
        }
    }
}

/// Commits `.travis.yml` as `yml` and pushes it; the sha.
fn with_yml(s: &Setup, yml: &str, msg: &str) -> String {
    std::fs::write(s.work.join(".travis.yml"), yml).unwrap();
    git(&s.work, &["add", ".travis.yml"]);
    git(&s.work, &["commit", "-q", "-m", msg]);
    git(&s.work, &["push", "-q", "-f", "hub", "master"]);
    s.head()
}

fn queue(srv: &Server, sha: &str) -> u64 {
    queue_on(srv, "master", sha)
}

/// A push of `sha` to `branch`, queued (202); its build's number.
fn queue_on(srv: &Server, branch: &str, sha: &str) -> u64 {
    let (code, text) = generic(srv, branch, sha);
    assert_eq!(code, 202, "{text}");
    serde_json::from_str::<serde_json::Value>(&text).unwrap()["number"]
        .as_u64()
        .unwrap()
}

fn build(srv: &Server, n: u64) -> serde_json::Value {
    srv.json(&format!("/api/builds/{n}"))
}

fn wait_state(srv: &Server, n: u64, state: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let last = build(srv, n);
        if last["state"] == state {
            return last;
        }
        if Instant::now() > deadline {
            panic!("build #{n} never became {state}: {last}\n{}", log(srv, n));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Cancels build #n through `srv`'s API (taken: 200 or 202).
fn cancel(srv: &Server, n: u64) {
    let (code, text) = srv.request(
        "POST",
        &format!("/api/builds/{n}/cancel"),
        &[("Authorization", &format!("Bearer {API_TOKEN}"))],
        b"",
    );
    assert!(code == 202 || code == 200, "{code} {text}");
}

/// The worker build #n's first job runs on, once it runs there.
fn running_on(srv: &Server, n: u64) -> String {
    let mut who = String::new();
    wait_for(
        || {
            let b = build(srv, n);
            match b["jobs"][0]["worker"].as_str() {
                Some(w) if b["state"] == "running" => {
                    who = w.to_string();
                    true
                }
                _ => false,
            }
        },
        &format!("build #{n} to run on a worker"),
    );
    who
}

fn log(srv: &Server, n: u64) -> String {
    srv.request("GET", &format!("/api/builds/{n}/log"), &[], b"")
        .1
}

/// Reads `GET /builds/N/events` on `srv` until a line contains `needle` (or 60 s);
/// what it read.
fn sse_until(srv: &Server, n: u64, needle: &str) -> String {
    use std::io::{BufRead, Write};
    let mut s = std::net::TcpStream::connect(&srv.addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    write!(s, "GET /builds/{n}/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut seen = String::new();
    for line in std::io::BufReader::new(s).lines() {
        let Ok(line) = line else { break };
        seen.push_str(&line);
        seen.push('\n');
        if line.contains(needle) {
            break;
        }
    }
    seen
}

const TRIVIAL: &str =
    "language: shell\nscript: echo built by $TRAVIS_JOB_NUMBER\nnotifications:\n  email: false\n";

/// Two serve nodes (A follows builds; B, `concurrency = 0`, only takes webhooks, serves
/// pages and the workers' calls) and three workers: 50 builds queued through both nodes
/// run exactly once each, spread over the workers; a worker killed mid-job (SIGKILL) or
/// cut off (frozen, then thawed) loses its job within the lease, errored "worker W
/// stopped answering", and the cut-off one stops it when it comes back; an `os: osx`
/// job waits, saying so, until a worker labelled `os=osx` connects; node A killed, the
/// workers carry on through B while a third node takes over A's build and follows it to
/// its end; a log reported to B is live on C's page, and a cancel sent to B stops the
/// job C follows on a worker.
#[test]
fn serve_nodes_and_workers_share_the_work() {
    let url = crate::common::postgres::shared().database("workers");
    let moto = crate::common::moto::Moto::start();
    moto.bucket("us-east-1", "logs");
    let s = Setup::new(
        TRIVIAL,
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nauto_cancel = false\nlog_url = \"s3://logs/runway\"\n\
         worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 3000\n\
         worker_heartbeat_ms = 500\nnode_lease_ms = 2000\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
        ("RUNWAY_TEST_API_TOKEN", API_TOKEN),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
    ];
    let config_of = |name: &str, concurrency: u32| s.config_with(name, concurrency);
    let a = drained(Server::start(
        &config_of("a", 2),
        &s.dir.path().join("state-a"),
        &env,
    ));
    let b = drained(Server::start(
        &config_of("b", 0),
        &s.dir.path().join("state-b"),
        &env,
    ));
    let dir = s.dir.path();
    let mut workers: Vec<Worker> = ["w1", "w2", "w3"]
        .iter()
        .map(|n| Worker::start(dir, n, &[&a, &b], &[]))
        .collect();

    // 50 builds through both nodes: each run once, on the workers.
    let sha = s.head();
    let numbers: Vec<u64> = (0..50)
        .map(|i| queue(if i % 2 == 0 { &a } else { &b }, &sha))
        .collect();
    for n in &numbers {
        let done = wait_state(&b, *n, "passed");
        assert!(done["jobs"][0]["worker"].is_string(), "{done}");
    }
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let per_worker: Vec<(String, i64)> = db
        .query(
            "SELECT worker, COUNT(*) FROM tasks WHERE attempt = 1 AND state = 'passed' GROUP BY worker ORDER BY worker",
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let total: i64 = per_worker.iter().map(|(_, c)| c).sum();
    assert_eq!(total, 50, "{per_worker:?}");
    assert_eq!(
        per_worker.len(),
        3,
        "every worker took jobs: {per_worker:?}"
    );
    for n in &numbers {
        let l = log(&a, *n);
        assert_eq!(l.matches("runs job").count(), 1, "build #{n} ran once: {l}");
        assert!(l.contains(&format!("built by {n}.1")), "{l}");
    }
    // The finished logs left the database for S3 (zstd objects), and every reader of
    // the store finds them there: the pages above, and `runway log`.
    let kept: Vec<(i32, String)> = db
        .query("SELECT length(log), log_ref FROM jobs", &[])
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    assert!(
        kept.iter()
            .all(|(len, r)| *len == 0 && r.starts_with("s3:")),
        "{kept:?}"
    );
    let objects = moto.py(
        "us-east-1",
        "print(s3.list_objects_v2(Bucket='logs')['KeyCount'])",
    );
    assert_eq!(objects, "50");
    let cli = |args: &[&str]| {
        let mut c = crate::common::runway();
        c.args(args).arg("--config").arg(&s.config);
        for (k, v) in &env {
            c.env(k, v);
        }
        crate::common::run(&mut c)
    };
    let shown = cli(&["log", "7"]);
    assert!(shown.stdout.contains("built by 7.1"), "{}", shown.all());
    let listed = cli(&["workers"]);
    for w in ["w1", "w2", "w3", "os=linux"] {
        assert!(listed.stdout.contains(w), "{}", listed.all());
    }

    // A worker killed mid-job: its job is errored within the lease and a heartbeat.
    let slow = with_yml(
        &s,
        "language: shell\nscript: sleep 1207\nnotifications:\n  email: false\n",
        "slow",
    );
    let n = queue(&a, &slow);
    let victim = running_on(&a, n);
    let started = Instant::now();
    let i = workers.iter().position(|w| w.name == victim).unwrap();
    let dead = workers.remove(i);
    dead.signal("-KILL");
    let ended = wait_state(&a, n, "errored");
    let detected = started.elapsed();
    let reason = ended["jobs"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(
        reason.contains(&format!("worker {victim} stopped answering")),
        "{ended}"
    );
    assert!(log(&a, n).contains("stopped answering"));
    eprintln!("dead worker detected in {detected:?} (lease 3000 ms, heartbeat 500 ms)");
    // Its job's processes died with it.
    crate::common::wait_gone("sleep 1207", 30);
    drop(dead);

    // A worker cut off (frozen): its lease is lost, the job errored; thawed, it learns
    // it from its next heartbeat and stops the job.
    let n = queue(&a, &slow);
    let cut = running_on(&a, n);
    let w = workers.iter_mut().find(|w| w.name == cut).unwrap();
    w.signal("-STOP");
    let ended = wait_state(&a, n, "errored");
    assert!(
        ended["jobs"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("stopped answering"),
        "{ended}"
    );
    w.signal("-CONT");
    w.wait_for("is no longer ours", 30);

    // An os: osx job waits, saying for what, until an osx worker connects.
    let mac_sha = with_yml(
        &s,
        "language: shell\nos: osx\nscript: echo on a mac\nnotifications:\n  email: false\n",
        "mac",
    );
    let n = queue(&b, &mac_sha);
    wait_for(
        || log(&a, n).contains("waiting for a worker with arch=amd64 os=osx"),
        "the osx job to say it waits",
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(build(&a, n)["state"], "running", "still waiting");
    let _mac = Worker::start(dir, "mac", &[&b], &["os=osx"]);
    let ended = wait_state(&a, n, "errored");
    assert_eq!(ended["jobs"][0]["worker"], "mac", "{ended}");
    // The worker's labels route the job; the machine itself still says what it is.
    assert!(
        ended["jobs"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("needs an osx runner"),
        "{ended}"
    );

    // Node A killed while it follows a build: the workers carry on through B, and a
    // third node takes the build over and follows it to its end.
    let short = with_yml(
        &s,
        "language: shell\nscript: sleep 3; echo survived\nnotifications:\n  email: false\n",
        "short",
    );
    let n = queue(&a, &short);
    running_on(&a, n);
    let c = drained(Server::start(
        &config_of("c", 2),
        &dir.join("state-c"),
        &env,
    ));
    a.signal("-KILL");
    drop(a);
    let ended = wait_state(&c, n, "passed");
    assert!(log(&c, n).contains("survived"), "{ended}");
    let n2 = queue(&b, &sha);
    wait_state(&c, n2, "passed");

    // A job reported to B is live on C's page; a cancel sent to B reaches it.
    let live = with_yml(
        &s,
        "language: shell\nscript: echo first-line; sleep 120\nnotifications:\n  email: false\n",
        "live",
    );
    let n = queue(&b, &live);
    wait_for(
        || build(&c, n)["state"] == "running" && log(&c, n).contains("first-line"),
        "C's live log to show what the worker sent B",
    );
    // B follows no build, yet its page streams the job as the worker sends it.
    let streamed = sse_until(&b, n, "first-line");
    assert!(streamed.contains("first-line"), "{streamed}");
    cancel(&b, n);
    let ended = wait_state(&c, n, "canceled");
    assert_eq!(ended["jobs"][0]["result"], "canceled", "{ended}");
}

/// Caches in S3 (`cache_url`, a real S3 server): a cache one worker saved is restored
/// on another; the workers hold no AWS credentials (the serve node presigns a URL per
/// archive) and their jobs never see the worker token. One serve node on SQLite: the
/// embedded store takes workers too.
#[test]
fn a_cache_saved_on_one_worker_is_restored_on_another() {
    let moto = crate::common::moto::Moto::start();
    moto.bucket("us-east-1", "caches");
    let yml = "language: shell\ncache:\n  directories:\n    - $HOME/stash\nscript:\n  - echo \"token=[${RUNWAY_WORKER_TOKEN:-none}]\"\n  - echo \"setting=[$DEPLOY_TOKEN]\"\n  - 'if [ -f $HOME/stash/made ]; then echo \"restored: $(cat $HOME/stash/made)\"; else echo fresh; echo \"$TRAVIS_JOB_NUMBER\" > $HOME/stash/made; fi'\nnotifications:\n  email: false\n";
    let s = Setup::new(
        yml,
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\ncache_url = \"s3://caches/ci\"",
    );
    // A repository setting (secret): the worker's job gets it, its log shows it masked.
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("[repo.env]\nDEPLOY_TOKEN = \"s3cr3t-for-the-job\"\n");
    std::fs::write(&s.config, toml).unwrap();
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", moto.url.as_str()),
    ];
    let srv = drained(Server::start(&s.config, &s.state(), &env));
    let dir = s.dir.path();
    let mut first = Worker::start_with(dir, "first", &[&srv], &[], &["--jobs", "1"]);
    let sha = s.head();
    let n = queue(&srv, &sha);
    wait_state(&srv, n, "passed");
    let l = log(&srv, n);
    assert!(l.contains("fresh") && l.contains("cache: stored"), "{l}");
    assert!(
        l.contains("token=[none]"),
        "a job saw the worker token: {l}"
    );
    assert!(
        l.contains("setting=[[secure]]") && !l.contains("s3cr3t"),
        "{l}"
    );
    first.wait_for("stopped after 1 job", 30);
    let stored = moto.py(
        "us-east-1",
        "print([o['Key'] for o in s3.list_objects_v2(Bucket='caches').get('Contents', [])])",
    );
    assert!(stored.contains("ci/o/app/master/cache-"), "{stored}");
    assert!(
        !dir.join("worker-first/cache/o").exists(),
        "the first worker kept the cache in its own directory"
    );
    let _second = Worker::start(dir, "second", &[&srv], &[]);
    let n = queue(&srv, &sha);
    wait_state(&srv, n, "passed");
    let l = log(&srv, n);
    assert!(
        l.contains(&format!("restored: {}.1", n - 1)) && l.contains("cache: restored"),
        "{l}"
    );
    assert!(l.contains("cache: nothing changed"), "{l}");
    // A worker asking for a cache outside a job it holds gets nothing.
    let ask = serde_json::json!({"worker": "second", "attempt": 1, "op": "put", "branch": "master", "key": "k"});
    let (code, _) = srv.request(
        "POST",
        "/api/worker/tasks/1/cache",
        &[
            ("Authorization", &format!("Bearer {WORKER_TOKEN}")),
            ("Content-Type", "application/json"),
            PROTOCOL,
        ],
        ask.to_string().as_bytes(),
    );
    assert_eq!(code, 409);
}

/// Node A (concurrency 2) and node B (`concurrency = 0`: it follows builds only when
/// it takes them over) on PostgreSQL `url`, taking workers; B's event log is not read
/// away (the caller reads or drains it).
fn two_nodes(s: &Setup, url: &str) -> (Server, Server) {
    two_nodes_with(s, url, &s.config_with("b", 0))
}

/// Node A on `s.config` (its log read away) and node B on `b_config`, both on `url`.
fn two_nodes_with(s: &Setup, url: &str, b_config: &Path) -> (Server, Server) {
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
    ];
    let a = drained(Server::start(
        &s.config,
        &s.dir.path().join("state-a"),
        &env,
    ));
    let b = Server::start(b_config, &s.dir.path().join("state-b"), &env);
    (a, b)
}

/// A worker's claim sent by hand (no worker process) with the test token: its answer.
fn claim_raw(srv: &Server, claim: serde_json::Value) -> (u16, String) {
    let auth = format!("Bearer {WORKER_TOKEN}");
    srv.request(
        "POST",
        "/api/worker/claim",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            PROTOCOL,
        ],
        claim.to_string().as_bytes(),
    )
}

/// A worker's report that attempt 1 of its job passed.
fn passed_end(worker: &str) -> String {
    serde_json::json!({"worker": worker, "attempt": 1, "report": {
        "result": "passed", "reason": "all script commands passed", "timed_out": false,
        "duration_ms": 1, "substituted": []}})
    .to_string()
}

/// Report `end` posted about task `task` with the workers' token and the task's
/// `secret`, as a worker sends it.
fn end_raw(srv: &Server, task: i64, secret: &str, end: &str) -> (u16, String) {
    let auth = format!("Bearer {WORKER_TOKEN}");
    srv.request(
        "POST",
        &format!("/api/worker/tasks/{task}/end"),
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/json"),
            ("X-Runway-Task-Secret", secret),
            PROTOCOL,
        ],
        end.as_bytes(),
    )
}

/// One serve node (SQLite) taking workers with the test token, its log not read away.
fn worker_node(s: &Setup) -> Server {
    worker_node_with(s, &[])
}

/// [`worker_node`] with `extra` in its environment.
fn worker_node_with(s: &Setup, extra: &[(&str, &str)]) -> Server {
    let mut env = vec![
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
    ];
    env.extend_from_slice(extra);
    Server::start(&s.config, &s.state(), &env)
}

/// One serve node (SQLite) that takes workers with the test token.
fn serve_for_workers(s: &Setup) -> Server {
    drained(Server::start(
        &s.config,
        &s.state(),
        &[
            ("APP_SECRET", SECRET),
            ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
            ("RUNWAY_TEST_API_TOKEN", API_TOKEN),
        ],
    ))
}

/// `lost_job = "retry"`: the job of a worker killed mid-job runs again on another
/// worker, its log saying so, and the build passes on the second attempt.
#[test]
fn a_lost_job_runs_again_when_runway_toml_says_retry() {
    let s = Setup::new(
        "language: shell\nscript: echo attempt on $(cat /proc/sys/kernel/hostname); sleep 4; echo finished\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 1500\nworker_heartbeat_ms = 300\nlost_job = \"retry\"",
    );
    let srv = serve_for_workers(&s);
    let dir = s.dir.path();
    let first = Worker::start(dir, "first", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "first");
    wait_for(
        || log(&srv, n).contains("attempt on"),
        "the first attempt to start",
    );
    first.signal("-KILL");
    drop(first);
    let _second = Worker::start(dir, "second", &[&srv], &[]);
    // What an operator sees (issue 30): the killed worker gone, not still running its
    // job; the other running it, with its repository.
    let workers = || {
        let mut c = crate::common::runway();
        c.args(["workers", "--json", "--config"])
            .arg(&s.config)
            .env("RUNWAY_STATE_DIR", s.state());
        let out = crate::common::run(&mut c);
        assert_eq!(out.code, 0, "{}", out.all());
        let v: serde_json::Value = serde_json::from_str(&out.stdout).unwrap();
        v["workers"].as_array().unwrap().clone()
    };
    // A worker not listed yet (its first claim still on its way) has no state.
    let state_of = |ws: &[serde_json::Value], name: &str| {
        ws.iter()
            .find(|w| w["name"] == name)
            .map(|w| {
                (
                    w["state"].as_str().unwrap_or("").to_string(),
                    w["repo"].clone(),
                    w["job"].clone(),
                )
            })
            .unwrap_or_default()
    };
    wait_for(
        || state_of(&workers(), "second").0 == "running",
        "the second worker to run the job",
    );
    let ws = workers();
    assert_eq!(
        state_of(&ws, "second"),
        (
            "running".into(),
            serde_json::json!("o/app"),
            serde_json::json!(format!("{n}.1"))
        ),
        "{ws:?}"
    );
    assert_eq!(state_of(&ws, "first").0, "gone", "{ws:?}");
    // Gone since it was last heard from, in the JSON and the table.
    let first = ws.iter().find(|w| w["name"] == "first").unwrap();
    assert_eq!(first["since"], first["seen_at"], "{first}");
    let mut c = crate::common::runway();
    c.args(["workers", "--config"])
        .arg(&s.config)
        .env("RUNWAY_STATE_DIR", s.state());
    let table = crate::common::run(&mut c).stdout;
    let line = table.lines().find(|l| l.starts_with("first ")).unwrap();
    assert!(
        line.contains("gone since 20") && line.contains("(not heard from for "),
        "{table}"
    );
    let done = wait_state(&srv, n, "passed");
    assert_eq!(done["jobs"][0]["worker"], "second", "{done}");
    let l = log(&srv, n);
    assert!(
        l.contains(&format!(
            "worker first stopped answering; job {n}.1 runs again (attempt 2)"
        )),
        "{l}"
    );
    assert_eq!(l.matches("\nfinished\n").count(), 1, "{l}");
    assert!(
        l.contains("runway worker second") && l.contains("(attempt 2)"),
        "{l}"
    );
}

/// Ticks heard on a loopback port: when, and the id of the attempt that sent each.
type Ticks = std::sync::Arc<std::sync::Mutex<Vec<(Instant, String)>>>;

/// A listener for the ticks of [`ticking_job`], and its port.
fn tick_listener() -> (u16, Ticks) {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let ticks = Ticks::default();
    let heard = ticks.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { break };
            let at = Instant::now();
            let mut text = String::new();
            let _ = conn.read_to_string(&mut text);
            heard.lock().unwrap().push((at, text.trim().to_string()));
        }
    });
    (port, ticks)
}

/// A `.travis.yml` whose job ticks `n` times, a tenth of a second apart, to `port`
/// under an id of its own attempt's, then echoes `finished`.
fn ticking_job(port: u16, n: u32) -> String {
    format!(
        "language: shell
script: id=$RANDOM$RANDOM; for i in $(seq 1 {n}); do echo $id > /dev/tcp/127.0.0.1/{port}; sleep 0.1; done; echo finished
notifications:
  email: false
"
    )
}

/// A worker's name reads the same in every list and log: one with a space (which the
/// build page's attempts would have split in two) or a slash is refused at start, exit 2.
#[test]
fn a_worker_name_that_is_not_one_word_is_refused() {
    for bad in ["two words", "a/b"] {
        let mut c = crate::common::runway();
        c.args(["worker", "--name", bad, "--server", "http://127.0.0.1:9"])
            .env("RUNWAY_WORKER_TOKEN", WORKER_TOKEN);
        let out = crate::common::run_within(&mut c, Duration::from_secs(30));
        assert_eq!(out.code, 2, "{}", out.all());
        assert!(
            out.stderr
                .contains("cannot name a worker: use 1 to 64 letters"),
            "{}",
            out.all()
        );
    }
}

/// Issue 25: a finished job's log kept in S3 was read while the node's store was
/// locked (and on the server's threads), so one slow S3 answer stalled every page,
/// delivery and worker call of the node. With S3's answers held (a relay in front of
/// moto), a build page that reads an archived log waits, and meanwhile the list, the
/// API, a worker's claim and a delivery are all answered; released, the page shows
/// the log.
#[test]
fn a_slow_archive_read_holds_up_no_other_request() {
    let url = crate::common::postgres::shared().database("slow_s3");
    let moto = crate::common::moto::Moto::start();
    moto.bucket("us-east-1", "logs");
    let moto_port: u16 = moto.url.rsplit(':').next().unwrap().parse().unwrap();
    let relay = crate::common::proxy::Proxy::start(moto_port);
    let endpoint = format!("http://127.0.0.1:{}", relay.port);
    let s = Setup::new(
        "language: shell\nscript: echo kept-in-s3\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nlog_url = \"s3://logs/runway\"\n\
         worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nauto_cancel = false",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
        ("AWS_ACCESS_KEY_ID", "testing"),
        ("AWS_SECRET_ACCESS_KEY", "testing"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT_URL", endpoint.as_str()),
    ];
    let srv = drained(Server::start(&s.config, &s.state(), &env));
    let _w = Worker::start(s.dir.path(), "w", &[&srv], &[]);
    let sha = s.head();
    let n = queue(&srv, &sha);
    wait_state(&srv, n, "passed");
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    wait_for(
        || {
            let r: i64 = db
                .query_one("SELECT COUNT(*) FROM jobs WHERE log_ref LIKE 's3:%'", &[])
                .unwrap()
                .get(0);
            r == 1
        },
        "the job's log archived in S3",
    );
    relay.hold();
    let (page_tx, page_rx) = std::sync::mpsc::channel();
    let addr = srv.addr.clone();
    std::thread::spawn(move || {
        let _ = page_tx.send(raw_get(&addr, &format!("/builds/{n}")));
    });
    wait_for(|| relay.held() > 0, "the page's read of the log held in S3");
    // Each answered while the read is held, within a generous bound.
    let answered = |what: &str, call: Box<dyn FnOnce() -> (u16, String) + Send>| {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(call());
        });
        let got = rx.recv_timeout(Duration::from_secs(30));
        assert!(got.is_ok(), "{what}: no answer while S3 holds a read");
        got.unwrap()
    };
    let a = srv.addr.clone();
    let (code, _) = answered(
        "the list",
        Box::new(move || crate::common::server::http(&a, "GET", "/", &[], b"")),
    );
    assert_eq!(code, 200);
    let a = srv.addr.clone();
    let (code, text) = answered(
        "the API's build",
        Box::new(move || {
            crate::common::server::http(&a, "GET", &format!("/api/builds/{n}"), &[], b"")
        }),
    );
    assert_eq!(code, 200, "{text}");
    let a = srv.addr.clone();
    let (code, text) = answered(
        "a worker's claim",
        Box::new(move || {
            let auth = format!("Bearer {WORKER_TOKEN}");
            crate::common::server::http(
                &a,
                "POST",
                "/api/worker/claim",
                &[
                    ("Authorization", &auth),
                    ("Content-Type", "application/json"),
                    PROTOCOL,
                ],
                br#"{"name":"probe","labels":{},"wait_ms":0}"#,
            )
        }),
    );
    assert!(code == 204 || code == 200, "{code}: {text}");
    let a = srv.addr.clone();
    let head = sha.clone();
    let (code, text) = answered(
        "a delivery",
        Box::new(move || {
            let body = serde_json::to_vec(
                &serde_json::json!({"repo": "o/app", "branch": "master", "commit": head}),
            )
            .unwrap();
            let auth = format!("Bearer {SECRET}");
            crate::common::server::http(
                &a,
                "POST",
                "/hooks/generic",
                &[("Authorization", &auth)],
                &body,
            )
        }),
    );
    assert_eq!(code, 202, "{text}");
    assert!(
        page_rx.try_recv().is_err(),
        "the page answered before its log could be read"
    );
    relay.release();
    let page = page_rx.recv_timeout(Duration::from_secs(60)).unwrap();
    assert!(page.starts_with("HTTP/1.1 200"), "{page}");
    assert!(page.contains("kept-in-s3"), "{page}");
    wait_state(&srv, n + 1, "passed");
}

/// Issue 25: a worker and a node of different runway versions could misread each
/// other's calls. Every call carries the worker protocol's version; a worker speaking
/// another (bumped here) is refused (426) with both versions named, says so and stops
/// (exit 3), and the node's log names it; a call without a version is refused alike.
#[test]
fn a_worker_of_another_protocol_version_is_refused_naming_both() {
    let s = Setup::new(TRIVIAL, "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"");
    let mut srv = worker_node(&s);
    let said = said(&mut srv);
    let mut c = crate::common::runway();
    c.args([
        "worker",
        "--name",
        "newer",
        "--server",
        &format!("http://{}", srv.addr),
    ])
    .env("RUNWAY_WORKER_TOKEN", WORKER_TOKEN)
    .env("RUNWAY_WORKER_PROTOCOL", "99")
    .env("RUNWAY_STATE_DIR", s.dir.path().join("worker-newer"));
    let out = crate::common::run_within(&mut c, Duration::from_secs(60));
    assert_eq!(out.code, 3, "{}", out.all());
    assert!(
        out.stderr
            .contains("the worker speaks worker protocol version 99")
            && out
                .stderr
                .contains(&format!("speaks version {}", PROTOCOL.1)),
        "{}",
        out.all()
    );
    let (code, text) = srv.request(
        "POST",
        "/api/worker/claim",
        &[
            ("Authorization", &format!("Bearer {WORKER_TOKEN}")),
            ("Content-Type", "application/json"),
        ],
        br#"{"name":"older","labels":{},"wait_ms":0}"#,
    );
    assert_eq!(code, 426, "{text}");
    assert!(text.contains("no version"), "{text}");
    wait_for(
        || said.lock().unwrap().contains("version 99"),
        "the node's log to name the worker's version",
    );
}

/// Issue 28 (3): every node at `concurrency = 0` with workers (web-only nodes, the
/// workers doing the jobs) left builds queued for ever, saying nothing. Now a node at
/// 0 follows a build no node took within a node lease, says so in its log, and the
/// build runs on a worker.
#[test]
fn web_only_nodes_alone_still_get_builds_to_the_workers() {
    let s = Setup::new(
        "language: shell\nscript: echo on-a-worker\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nnode_lease_ms = 2000",
    );
    let mut srv = Server::start(
        &s.config_with("web", 0),
        &s.state(),
        &[
            ("APP_SECRET", SECRET),
            ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
        ],
    );
    let said = said(&mut srv);
    let _w = Worker::start(s.dir.path(), "only", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    let done = wait_state(&srv, n, "passed");
    assert_eq!(done["jobs"][0]["worker"], "only", "{done}");
    assert!(log(&srv, n).contains("\non-a-worker\n"));
    let log = said.lock().unwrap().clone();
    assert!(
        log.contains("no node that follows builds took it within 2 s"),
        "{log}"
    );
}

/// Issue 30: a worker frozen (SIGSTOP) mid-job stops answering, and with `lost_job =
/// "retry"` another worker runs attempt 2; attempt 1 must be gone by then (it ran on
/// for 11 s beside attempt 2 before). Each attempt reports a tick every tenth of a
/// second to a listener here under an id of its own: no tick of attempt 1 comes after
/// attempt 2's first. Thawed, the frozen worker learns its job is no longer its own,
/// says its lease ran out, and the build passes on attempt 2.
#[test]
fn a_frozen_workers_job_is_stopped_before_another_worker_runs_it() {
    let (port, ticks) = tick_listener();
    let s = Setup::new(
        &ticking_job(port, 50),
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 2000\nworker_heartbeat_ms = 300\nlost_job = \"retry\"",
    );
    let srv = serve_for_workers(&s);
    let dir = s.dir.path();
    let mut frozen = Worker::start(dir, "frozen", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "frozen");
    wait_for(|| !ticks.lock().unwrap().is_empty(), "attempt 1 to tick");
    frozen.signal("-STOP");
    let _thawed = Worker::start(dir, "thawed", &[&srv], &[]);
    let done = wait_state(&srv, n, "passed");
    assert_eq!(done["jobs"][0]["worker"], "thawed", "{done}");
    let seen = ticks.lock().unwrap().clone();
    let first = seen[0].1.clone();
    let last_of_first = seen
        .iter()
        .filter(|(_, id)| *id == first)
        .map(|(t, _)| *t)
        .max()
        .unwrap();
    let second_starts = seen
        .iter()
        .filter(|(_, id)| *id != first)
        .map(|(t, _)| *t)
        .min()
        .expect("attempt 2 ticked");
    assert!(
        last_of_first < second_starts,
        "attempt 1 ticked {:?} after attempt 2 started",
        last_of_first - second_starts
    );
    // Every attempt's worker is named, on the API and the page.
    assert_eq!(
        done["jobs"][0]["workers"],
        serde_json::json!(["frozen", "thawed"]),
        "{done}"
    );
    let (_, page) = srv.request("GET", &format!("/builds/{n}"), &[], b"");
    assert!(
        page.contains("on frozen (attempt 1), then thawed (attempt 2)"),
        "{page}"
    );
    frozen.signal("-CONT");
    frozen.wait_for("lease ran out", 30);
    frozen.wait_for("is no longer ours", 30);
    assert_eq!(log(&srv, n).matches("\nfinished\n").count(), 1);
}

/// Issue 30: one node loses its way to PostgreSQL while another keeps it (a network
/// partition, not a database outage). The worker's heartbeats to the cut-off node are
/// answered 503; taken as "no node can take the lease now", they kept its job running
/// while the other node, which could, took the lease as lapsed and ran attempt 2 on
/// another worker beside attempt 1. Now a 503 sends the heartbeat on to the next
/// server in the same beat, and a lease is held on a 503 only when every server said
/// it: the job renews through the node that can, runs once and passes, on one worker.
#[test]
fn a_node_cut_off_from_the_database_does_not_let_a_job_run_twice() {
    let (port, ticks) = tick_listener();
    let pg = crate::common::postgres::own();
    let url = pg.database("split");
    let relay = crate::common::proxy::Proxy::start(pg.port);
    let a_url = relay.url(&url, pg.port);
    let s = Setup::new(
        &ticking_job(port, 60),
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\n\
         worker_lease_ms = 2000\nworker_heartbeat_ms = 300\nnode_lease_ms = 2000\nlost_job = \"retry\"\nauto_cancel = false",
    );
    let env = |url: &'static str| {
        [
            ("APP_SECRET", SECRET),
            ("RUNWAY_TEST_DATABASE_URL", url),
            ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
        ]
    };
    let a_refs = env(a_url.clone().leak());
    let b_refs = env(url.clone().leak());
    let a = drained(Server::start(
        &s.config,
        &s.dir.path().join("state-a"),
        &a_refs,
    ));
    let b = drained(Server::start(
        &s.config_with("b", 0),
        &s.dir.path().join("state-b"),
        &b_refs,
    ));
    let dir = s.dir.path();
    let _steady = Worker::start(dir, "steady", &[&a, &b], &[]);
    let n = queue(&a, &s.head());
    assert_eq!(running_on(&a, n), "steady");
    wait_for(|| !ticks.lock().unwrap().is_empty(), "the job to tick");
    // A spare worker, ready to run an attempt 2 should the lease be taken as lapsed.
    let _spare = Worker::start(dir, "spare", &[&b], &[]);
    relay.cut();
    let done = wait_state(&b, n, "passed");
    assert_eq!(
        done["jobs"][0]["workers"],
        serde_json::json!(["steady"]),
        "{done}"
    );
    let seen = ticks.lock().unwrap().clone();
    let ids: std::collections::BTreeSet<&str> = seen.iter().map(|(_, id)| id.as_str()).collect();
    assert_eq!(ids.len(), 1, "one attempt ticked, not two: {ids:?}");
    assert_eq!(log(&b, n).matches("\nfinished\n").count(), 1);
    relay.mend();
    wait_for(
        || {
            let (code, text) = a.request("GET", &format!("/api/builds/{n}"), &[], b"");
            code == 200 && text.contains("\"state\":\"passed\"")
        },
        "node A reads the build passed once its way back is mended",
    );
}

/// Issue 30: a node stopped cleanly (SIGTERM) while it follows a build whose job runs
/// on a worker stopped renewing its hold at once; another node took the build over,
/// and at the end of the grace both ended it ("canceled") and both mailed. Now the
/// stopping node hands the build over at once and exits; the other node takes it over
/// although it runs no job itself (`concurrency = 0`: following a build on workers is
/// not running one), says so, and ends it once: passed, one mail.
#[test]
fn a_stopping_node_hands_its_build_to_another_that_ends_it_once() {
    use crate::common::smtp::Smtp;
    let smtp = Smtp::start(&[]);
    let url = crate::common::postgres::shared().database("handover");
    let s = Setup::new(
        "language: shell\nscript: sleep 4; echo half-way; sleep 4; echo handed-over\nnotifications:\n  email:\n    recipients: [team@example.com]\n    on_success: always\n",
        &format!(
            "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\n\
             worker_lease_ms = 3000\nworker_heartbeat_ms = 500\nnode_lease_ms = 2000\n\
             [smtp]\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"runway <ci@example.com>\"",
            smtp.port
        ),
    );
    let (mut a, mut b) = two_nodes(&s, &url);
    let b_said = said(&mut b);
    let _w = Worker::start(s.dir.path(), "steady", &[&a, &b], &[]);
    let n = queue(&a, &s.head());
    assert_eq!(running_on(&a, n), "steady");
    // Half-way through, so the take-over comes well after the start.
    wait_for(|| log(&a, n).contains("\nhalf-way\n"), "the job half-way");
    a.signal("-TERM");
    assert!(a.exited_within(20), "node A handed over and stopped");
    let done = wait_state(&b, n, "passed");
    assert!(log(&b, n).contains("\nhanded-over\n"), "{done}");
    let text = b_said.lock().unwrap().clone();
    assert!(text.contains("build taken over"), "{text}");
    assert!(!text.contains("build started"), "{text}");
    wait_for(|| !smtp.messages().is_empty(), "the mail");
    // Ended once: one mail, and never canceled.
    std::thread::sleep(Duration::from_secs(3));
    let mails = smtp.messages();
    assert_eq!(mails.len(), 1, "one mail");
    assert_eq!(build(&b, n)["state"], "passed");
    // Its duration counts from the build's start, not from the take-over (the job
    // alone sleeps 8 s).
    let secs: u64 = mails[0]
        .text
        .lines()
        .find_map(|l| l.strip_prefix("Duration:"))
        .and_then(|d| d.trim().strip_suffix(" sec"))
        .and_then(|d| d.parse().ok())
        .unwrap_or_else(|| panic!("{}", mails[0].text));
    assert!(secs >= 8, "{}", mails[0].text);
}

/// Issue 25: a worker fetched the commit, read `.travis.yml` and planned the build
/// again to run one job of it, with the settings of the node it claimed from; two
/// nodes that plan differently (another runway version, another runway.toml) made
/// it run a job that was not the one the build page shows. Now the node that plans
/// sends the compiled job: node A (whose settings keep the `MODE = a` job) plans,
/// the worker claims through node B (whose settings say `MODE = b`), and the job
/// run is A's.
#[test]
fn a_worker_runs_the_job_its_node_planned_not_its_own_plan() {
    let url = crate::common::postgres::shared().database("compiled");
    let s = Setup::new(
        "language: shell\nscript: echo \"job $TRAVIS_JOB_NUMBER planned-with-$PLAN_MODE\"\njobs:\n  include:\n    - if: env(MODE) = a\n      env: PLAN_MODE=a\n    - if: env(MODE) = b\n      env: PLAN_MODE=b\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let base = std::fs::read_to_string(&s.config).unwrap();
    std::fs::write(
        &s.config,
        format!("{base}public = [\"MODE\"]\n[repo.env]\nMODE = \"a\"\n"),
    )
    .unwrap();
    let b_toml = s.config_with("b", 0);
    let text = std::fs::read_to_string(&b_toml).unwrap();
    std::fs::write(&b_toml, text.replace("MODE = \"a\"", "MODE = \"b\"")).unwrap();
    let (a, b) = two_nodes_with(&s, &url, &b_toml);
    let b = drained(b);
    let _w = Worker::start(s.dir.path(), "only-b", &[&b], &[]);
    let n = queue(&a, &s.head());
    let done = wait_state(&a, n, "passed");
    let text = log(&a, n);
    assert!(
        text.contains(&format!("job {n}.1 planned-with-a")),
        "{done}\n{text}"
    );
    assert!(!text.contains("planned-with-b"), "{text}");
    assert!(text.contains("runway worker only-b"), "{text}");
    // The log's last chunk rides with the report (protocol 4): it is all there.
    let last = text.trim_end().lines().last().unwrap_or_default();
    assert!(
        text.contains("Done. Your build exited with 0.")
            && last.starts_with(&format!("Job {n}.1 passed in")),
        "{text}"
    );
}

/// Issue 30: each build a node followed opened a connection of its own, so a burst of
/// pushes filled PostgreSQL's connections and builds errored "build store: db error".
/// Now a node holds a bounded pool (`database_pool`) shared by all it does: with
/// PostgreSQL taking 30 connections, a burst of 200 pushes to two nodes, run by three
/// workers, all pass, each numbered and run once, and the nodes never hold more than
/// their pools and their LISTEN connections.
#[test]
fn a_burst_of_builds_waits_for_the_pool_and_none_errors() {
    let pg = crate::common::postgres::own_limited(30);
    let url = pg.database("burst");
    let s = Setup::new(
        "language: shell\nscript: echo burst\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\n\
         database_pool = 3\nauto_cancel = false",
    );
    let env = [
        ("APP_SECRET", SECRET),
        ("RUNWAY_TEST_DATABASE_URL", url.as_str()),
        ("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN),
    ];
    let a = drained(Server::start(
        &s.config,
        &s.dir.path().join("state-a"),
        &env,
    ));
    let b = drained(Server::start(
        &s.config,
        &s.dir.path().join("state-b"),
        &env,
    ));
    let dir = s.dir.path();
    let _workers: Vec<Worker> = ["one", "two", "three"]
        .iter()
        .map(|n| Worker::start(dir, n, &[&a, &b], &[]))
        .collect();
    let peak = crate::common::ConnectionPeak::start(&url);
    let sha = s.head();
    let mut numbers: Vec<u64> = (0..200)
        .map(|i| queue(if i % 2 == 0 { &a } else { &b }, &sha))
        .collect();
    for n in &numbers {
        let built = wait_state(&a, *n, "passed");
        assert_eq!(built["jobs"][0]["result"], "passed", "{built}");
    }
    let most = peak.finish();
    numbers.sort();
    numbers.dedup();
    assert_eq!(numbers, (1..=200).collect::<Vec<u64>>(), "numbered once");
    let mut db = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
    let jobs: i64 = db
        .query_one("SELECT COUNT(*) FROM jobs", &[])
        .unwrap()
        .get(0);
    assert_eq!(jobs, 200, "each run once");
    assert!(
        most <= 8,
        "the nodes held {most} connections (two pools of 3, two LISTEN)"
    );
}

/// Issue 30: PostgreSQL stopped for 8 s under two nodes while a job runs on a worker,
/// which ends meanwhile. The worker's heartbeats are answered 503 (no lease can lapse
/// while the store is away) so its job carries on, and its result is held and sent
/// again until a node takes it; no lease is taken as lapsed once the store is back. The
/// build passes, run once, with its whole log; a push during the outage is answered 503
/// and built once it is delivered again.
#[test]
fn a_workers_job_outlives_a_database_restart() {
    let pg = crate::common::postgres::own();
    let url = pg.database("outage");
    let s = Setup::new(
        "language: shell\nscript: echo before-the-blip; sleep 5; echo after-the-blip\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\n\
         worker_lease_ms = 3000\nworker_heartbeat_ms = 500\nnode_lease_ms = 2000\nauto_cancel = false",
    );
    let (a, b) = two_nodes(&s, &url);
    let b = drained(b);
    let _w = Worker::start(s.dir.path(), "patient", &[&a, &b], &[]);
    let sha = s.head();
    let n = queue(&a, &sha);
    assert_eq!(running_on(&a, n), "patient");
    wait_for(
        || log(&a, n).contains("\nbefore-the-blip\n"),
        "the job to start",
    );
    pg.stop();
    let (code, text) = generic(&b, "master", &sha);
    assert_eq!(code, 503, "a push while the store is away: {text}");
    std::thread::sleep(Duration::from_secs(8));
    pg.start();
    // Delivered again, as a forge does after a 503.
    let mut again = (0, String::new());
    wait_for(
        || {
            again = generic(&b, "master", &sha);
            again.0 == 202
        },
        "the push delivered again once the store is back",
    );
    let n2 = serde_json::from_str::<serde_json::Value>(&again.1).unwrap()["number"]
        .as_u64()
        .unwrap();
    let passed = |n: u64| {
        let (code, text) = a.request("GET", &format!("/api/builds/{n}"), &[], b"");
        code == 200
            && serde_json::from_str::<serde_json::Value>(&text).unwrap()["state"] == "passed"
    };
    wait_for(|| passed(n) && passed(n2), "both builds passed");
    let l = log(&a, n);
    assert_eq!(
        l.matches("\nafter-the-blip\n").count(),
        1,
        "run once, whole: {l}"
    );
    assert!(l.contains("\nbefore-the-blip\n"), "{l}");
    assert!(!l.contains("stopped answering"), "{l}");
}

/// Issue 30: a node killed (SIGKILL) while it follows a build, with only a node that
/// runs no job (`concurrency = 0`) left: that node takes the build over once the
/// killed node's hold lapses (it stayed `running` until the killed node came back), and
/// ends it passed.
#[test]
fn a_killed_nodes_build_is_taken_over_by_a_node_that_runs_no_job() {
    let url = crate::common::postgres::shared().database("orphan");
    let s = Setup::new(
        "language: shell\nscript: sleep 4; echo orphan-finished\nnotifications:\n  email: false\n",
        "database_url_env = \"RUNWAY_TEST_DATABASE_URL\"\nworker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\n\
         worker_lease_ms = 3000\nworker_heartbeat_ms = 500\nnode_lease_ms = 2000",
    );
    let (a, b) = two_nodes(&s, &url);
    let b = drained(b);
    let _w = Worker::start(s.dir.path(), "orphaned", &[&a, &b], &[]);
    let n = queue(&a, &s.head());
    assert_eq!(running_on(&a, n), "orphaned");
    a.signal("-KILL");
    drop(a);
    let done = wait_state(&b, n, "passed");
    assert!(log(&b, n).contains("\norphan-finished\n"), "{done}");
}

/// Issue 28, item 8: a worker whose servers are gone kept trying them after SIGTERM.
/// Holding no job, it now stops at once, and exits 0.
#[test]
fn a_worker_whose_servers_are_gone_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on any more.
    let port = crate::common::free_port();
    let mut c = crate::common::runway();
    c.args(["worker", "--name", "lonely", "--server"])
        .arg(format!("http://127.0.0.1:{port}"))
        .env("RUNWAY_STATE_DIR", dir.path().join("state"))
        .env("RUNWAY_CACHE_DIR", dir.path().join("cache"))
        .env("RUNWAY_WORKER_TOKEN", WORKER_TOKEN);
    let mut lines = crate::common::Lines::spawn(&mut c, true);
    let (seen, found) = lines.wait_for("trying again", 60);
    assert!(found, "{seen:?}");
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &lines.child.id().to_string()])
        .status();
    let stopped = came_true(|| matches!(lines.child.try_wait(), Ok(Some(_))));
    if !stopped {
        let _ = lines.child.kill();
    }
    assert!(stopped, "the worker kept trying after SIGTERM");
    let status = lines.child.wait().unwrap();
    assert!(status.success(), "{status:?}");
}

/// Issue 28, item 8, with a job: a drained worker (SIGTERM) whose servers are gone
/// tried to deliver its job's report for ever. Now it tries only while the job's lease
/// could still hold (past it, a node counts the job as lost whatever the worker says),
/// then says so and exits 0.
#[test]
fn a_drained_worker_whose_servers_are_gone_stops_after_its_job() {
    let s = Setup::new(
        "language: shell\nscript: echo job-started; sleep 1211\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 3000\nworker_heartbeat_ms = 500",
    );
    let srv = serve_for_workers(&s);
    let mut w = Worker::start(s.dir.path(), "orphaned", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    wait_for(
        || log(&srv, n).contains("\njob-started\n"),
        "the job running",
    );
    drop(srv);
    w.signal("-TERM");
    let stopped = came_true(|| matches!(w.lines.child.try_wait(), Ok(Some(_))));
    let (seen, _) = w.lines.wait_for("stopped after 1 job(s)", 5);
    w.said.extend(seen);
    assert!(
        stopped,
        "the worker kept trying after SIGTERM: {:#?}",
        w.said
    );
    assert!(w.lines.child.wait().unwrap().success(), "{:#?}", w.said);
    // Its log's last chunks or its report, given up once the lease ran out.
    assert!(
        w.said.iter().any(|l| l.contains("lease ran out")),
        "{:#?}",
        w.said
    );
}

/// SIGTERM drains a worker: the job it runs finishes and is reported, no new job is
/// taken, and it exits 0. Its machine's labels are detected and shown by
/// `runway workers`.
#[test]
fn sigterm_drains_a_worker() {
    let s = Setup::new(
        "language: shell\nscript: sleep 3; echo drained-cleanly\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"",
    );
    let srv = serve_for_workers(&s);
    let dir = s.dir.path();
    let mut w = Worker::start(dir, "drainee", &[&srv], &["gpu=none"]);
    let n = queue(&srv, &s.head());
    running_on(&srv, n);
    let next = queue(&srv, &s.head());
    w.signal("-TERM");
    let done = wait_state(&srv, n, "passed");
    assert!(log(&srv, n).contains("\ndrained-cleanly\n"), "{done}");
    w.wait_for("stopped after 1 job", 30);
    let status = w.lines.child.wait().unwrap();
    assert_eq!(status.code(), Some(0));
    assert_eq!(
        build(&srv, next)["state"],
        "running",
        "the next build waits for a worker"
    );
    assert!(
        build(&srv, next)["jobs"][0]["worker"].is_null(),
        "the drained worker took no new job"
    );
    // The workers' list names machines and tasks: not without the API token (issue 24).
    let (code, body) = srv.request("GET", "/api/workers", &[], b"");
    assert_eq!(code, 401, "{body}");
    assert!(!body.contains("drainee"), "{body}");
    let auth = format!("Bearer {API_TOKEN}");
    let (code, body) = srv.request("GET", "/api/workers", &[("Authorization", &auth)], b"");
    assert_eq!(code, 200, "{body}");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let labels = &listed["workers"][0]["labels"];
    assert_eq!(labels["os"], "linux", "{listed}");
    assert_eq!(labels["gpu"], "none", "{listed}");
    assert!(labels["dist"].is_string(), "{listed}");
}

/// A worker that takes another job asks for it with its report (protocol version 5):
/// of four builds queued (four branches, one commit), a worker started with `--jobs 3`
/// claims the first, is handed the second and the third with the reports before them
/// (each runs under its own task secret and passes), asks for none with its last
/// report, and leaves the fourth for another worker. Each job's clone shows its own
/// build's branch alone, also when the worker's copy had the commit already.
#[test]
fn a_busy_worker_is_handed_its_next_job_with_its_report() {
    let s = Setup::new(
        "language: shell\nscript: git branch -a --format='shows %(refname)'\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nauto_cancel = false",
    );
    let mut srv = worker_node(&s);
    let lines = log_lines(&mut srv);
    let head = s.head();
    let branches = ["one", "two", "three", "four"];
    let numbers: Vec<u64> = branches.iter().map(|b| queue_on(&srv, b, &head)).collect();
    let mut w = Worker::start_with(s.dir.path(), "busy", &[&srv], &[], &["--jobs", "3"]);
    w.wait_for("stopped after 3 job(s)", 60);
    assert_eq!(w.lines.child.wait().unwrap().code(), Some(0));
    let mut ran = Vec::new();
    for (n, branch) in numbers.iter().zip(branches) {
        let now = build(&srv, *n);
        if now["state"] == "running" {
            assert!(now["jobs"][0]["worker"].is_null(), "{now}");
            continue;
        }
        let done = wait_state(&srv, *n, "passed");
        assert_eq!(done["jobs"][0]["worker"], "busy", "{done}");
        let text = log(&srv, *n);
        let shown: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("shows refs/"))
            .collect();
        assert_eq!(
            shown,
            [format!("shows refs/remotes/origin/{branch}")],
            "{text}"
        );
        ran.push(branch);
    }
    assert_eq!(ran.len(), 3, "three ran, one waits: {ran:?}");
    // How each job was handed: the server's log says, one line per job.
    let mut handed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while handed.len() < 3 {
        match next_logged(&lines, "job handed to a worker", deadline) {
            Some(l) => handed.push(l),
            None => panic!("three handings were not logged: {handed:#?}"),
        }
    }
    let by_report = handed.iter().filter(|l| l.contains("report")).count();
    assert_eq!(by_report, 2, "{handed:#?}");
}

#[test]
fn a_report_waits_for_the_next_job_as_a_claim_would() {
    // A worker's report asks for its next job; none is queued yet. The report is held
    // open as a claim is and answered with the job pushed after it (one call between
    // jobs): the node says it was handed with the report, and the worker never
    // claimed on its own after its first job.
    let s = Setup::new(
        "language: shell\nscript: echo ran\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nauto_cancel = false",
    );
    let mut srv = worker_node(&s);
    let lines = log_lines(&mut srv);
    let head = s.head();
    queue_on(&srv, "one", &head);
    let mut w = Worker::start_with(s.dir.path(), "held", &[&srv], &[], &["--jobs", "2"]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = next_logged(&lines, "job handed to a worker", deadline).expect("job 1 handed");
    assert!(first.contains("with=\"claim\""), "{first}");
    next_logged(&lines, "job reported", deadline).expect("job 1 reported");
    wait_state(&srv, 1, "passed");
    queue_on(&srv, "two", &head);
    let second = next_logged(&lines, "job handed to a worker", deadline).expect("job 2 handed");
    assert!(second.contains("with=\"report\""), "{second}");
    w.wait_for("stopped after 2 job(s)", 60);
    assert_eq!(wait_state(&srv, 2, "passed")["jobs"][0]["worker"], "held");
}

#[test]
fn a_workers_job_log_goes_in_few_calls_however_many_lines_it_prints() {
    // Six lines 30 ms apart: each was a call of its own (a call takes a millisecond or
    // two); now the header and the first command go in one call, then one call per
    // 100 ms at most, and what is left with the report.
    let (text, chunks) = one_job_on_a_worker(
        "for i in 1 2 3 4 5 6; do echo line-$i; sleep 0.03; done",
        "paced",
    );
    for i in 1..=6 {
        assert!(text.contains(&format!("\nline-{i}\n")), "line-{i}: {text}");
    }
    assert!(
        (1..=5).contains(&chunks),
        "{chunks} calls before the report"
    );
}

/// A job goes to its worker with whether anyone reads its build's live log. Nobody
/// reading, the worker paces its output from the start (a short job's log then goes
/// with its report, in one call; its first command was a call of its own, sent at
/// once): the worker says so, and the log is whole. A reader of the build connected
/// before the claim makes the job `watched` (its first command then goes at once).
/// When each chunk is sent is `agent::tests`' to say (no timing here).
#[test]
fn a_job_nobody_watches_is_paced_from_the_start_and_a_watched_ones_claim_says_so() {
    let s = Setup::new(
        "language: shell\nscript: echo short-job\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let srv = serve_for_workers(&s);
    let n = queue(&srv, &s.head());
    let mut w = Worker::start_with(s.dir.path(), "unwatched", &[&srv], &[], &["--jobs", "1"]);
    w.wait_for("nobody watches: its output is paced from the start", 60);
    w.wait_for("stopped after 1 job(s)", 60);
    wait_state(&srv, n, "passed");
    let text = log(&srv, n);
    assert!(
        text.contains("$ echo short-job") && text.contains("\nshort-job\n"),
        "{text}"
    );
    let s = Setup::new(
        "language: shell\nscript: echo claimed\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let srv = worker_node(&s);
    let claim = |name: &str| {
        let (code, text) = claim_raw(
            &srv,
            serde_json::json!({
                "name": name, "labels": {"os": "linux", "arch": "amd64"}, "wait_ms": 20_000
            }),
        );
        assert_eq!(code, 200, "{text}");
        let a: serde_json::Value = serde_json::from_str(&text).unwrap();
        a["watched"].clone()
    };
    queue(&srv, &s.head());
    assert_eq!(claim("first"), false, "nobody reads build 1");
    let n = queue_on(&srv, "other", &s.head());
    // A reader of build 2's live log: its answer's head read (the reader is counted by
    // then), the stream left open through the claim.
    use std::io::{Read, Write};
    let mut reader = std::net::TcpStream::connect(&srv.addr).unwrap();
    reader
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    write!(reader, "GET /builds/{n}/events HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(reader.read(&mut byte).unwrap(), 1, "the stream's head");
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    assert_eq!(claim("second"), true, "build 2 has a reader");
    drop(reader);
}

/// Build #1 of a repository whose job runs `script`, run by worker `name`, passed: its
/// log, and how many chunk calls came before the report (the node's "job reported"
/// line, `chunks=N`).
fn one_job_on_a_worker(script: &str, name: &str) -> (String, u64) {
    let s = Setup::new(
        &format!("language: shell\nscript: {script}\nnotifications:\n  email: false\n"),
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let mut srv = worker_node(&s);
    let lines = log_lines(&mut srv);
    let (code, text) = generic(&srv, "master", &s.head());
    assert_eq!(code, 202, "{text}");
    let mut w = Worker::start_with(s.dir.path(), name, &[&srv], &[], &["--jobs", "1"]);
    w.wait_for("stopped after 1 job(s)", 60);
    let done = wait_state(&srv, 1, "passed");
    assert_eq!(done["jobs"][0]["worker"], name, "{done}");
    let deadline = Instant::now() + Duration::from_secs(10);
    let reported = next_logged(&lines, "job reported", deadline)
        .unwrap_or_else(|| panic!("the report was not logged"));
    let chunks = reported
        .split("chunks=")
        .nth(1)
        .and_then(|t| t.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no chunks= in {reported}"));
    (log(&srv, 1), chunks)
}

#[test]
fn a_workers_job_header_waits_for_its_first_command_and_stays_before_it() {
    // The header (the worker's line, the checkout) is held until the job's first
    // command and sent with it (`agent::tests` say when): nothing is lost or moved.
    let (text, chunks) = one_job_on_a_worker("echo first-output; sleep 0.3", "header");
    let at = |needle: &str| {
        text.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} is not in the log: {text}"))
    };
    let (worker, command, output) = (
        at("runway worker header ("),
        at("$ echo first-output; sleep 0.3"),
        at("\nfirst-output\n"),
    );
    assert!(worker < command && command < output, "{text}");
    assert_eq!(text.matches("runway worker header (").count(), 1, "{text}");
    assert!(
        chunks >= 1,
        "the header and the command went before the report"
    );
}

/// A network namespace joined to this one by a veth pair: `host` (10.231.N.1, here)
/// and `inside` (10.231.N.2, in the namespace). Deleted (with the pair) when dropped.
struct NetNs {
    name: String,
    host_link: String,
    host_ip: String,
}

impl NetNs {
    fn new() -> NetNs {
        let id = std::process::id();
        let n = id % 250 + 1;
        let ns = NetNs {
            name: format!("runway-t{id}"),
            host_link: format!("rwh{id}"),
            host_ip: format!("10.231.{n}.1"),
        };
        let inside = format!("rwn{id}");
        let ip = |args: &[&str]| {
            let out = std::process::Command::new("ip")
                .args(args)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "ip {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        ip(&["netns", "add", &ns.name]);
        ip(&[
            "link",
            "add",
            &ns.host_link,
            "type",
            "veth",
            "peer",
            "name",
            &inside,
        ]);
        ip(&["link", "set", &inside, "netns", &ns.name]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", ns.host_ip),
            "dev",
            &ns.host_link,
        ]);
        ip(&["link", "set", &ns.host_link, "up"]);
        let exec = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &ns.name, "ip"];
            all.extend_from_slice(args);
            ip(&all);
        };
        exec(&["addr", "add", &format!("10.231.{n}.2/30"), "dev", &inside]);
        exec(&["link", "set", &inside, "up"]);
        exec(&["link", "set", "lo", "up"]);
        ns
    }

    /// Cuts (`false`) or restores (`true`) the link.
    fn link(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        let ok = std::process::Command::new("ip")
            .args(["link", "set", &self.host_link, state])
            .status()
            .unwrap();
        assert!(ok.success());
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.host_link])
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// A worker in a network namespace of its own reaches the server over a veth pair
/// only; its link cut while its job runs, the job's lease is lost and the job errored
/// "stopped answering"; the link restored, the worker learns the job is no longer its
/// own, stops it (its processes are gone), and takes the next job.
#[test]
fn a_workers_link_cut_and_restored() {
    let ns = NetNs::new();
    let s = Setup::new(
        "language: shell\nscript: sleep 117\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 3000\nworker_heartbeat_ms = 500",
    );
    let mut c = crate::common::runway();
    c.args(["serve", "--config"])
        .arg(&s.config)
        .args(["--listen", &format!("{}:0", ns.host_ip)])
        .env("RUNWAY_STATE_DIR", s.state())
        .env("APP_SECRET", SECRET)
        .env("RUNWAY_TEST_WORKER_TOKEN", WORKER_TOKEN);
    let srv = drained(Server::spawn(&mut c));
    assert!(srv.addr.starts_with("10.231."), "{}", srv.addr);
    let dir = s.dir.path();
    let mut w = Worker::start_in(&ns, dir, "remote", &[&srv]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "remote");
    wait_for(|| log(&srv, n).contains("$ sleep 117"), "the job to start");
    ns.link(false);
    let ended = wait_state(&srv, n, "errored");
    assert!(
        ended["jobs"][0]["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("worker remote stopped answering"),
        "{ended}"
    );
    ns.link(true);
    w.wait_for("is no longer ours", 90);
    crate::common::wait_gone("sleep 117", 30);
    // Back on the link, it takes the next job (the end of the test stops both).
    let next = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, next), "remote");
}

/// A worker with a wrong token is refused (it exits 3, saying so), and the serve node
/// logs the refusal with the worker's name; no job is handed to it.
#[test]
fn a_wrong_worker_token_is_refused_and_logged() {
    let s = Setup::new(TRIVIAL, "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"");
    let mut srv = worker_node(&s);
    let lines = log_lines(&mut srv);
    let n = queue(&srv, &s.head());
    let refused = crate::common::run(
        crate::common::runway()
            .args(["worker", "--name", "intruder", "--server"])
            .arg(format!("http://{}", srv.addr))
            .env("RUNWAY_WORKER_TOKEN", "guess")
            .env("RUNWAY_STATE_DIR", s.dir.path().join("intruder")),
    );
    assert_eq!(refused.code, 3, "{}", refused.all());
    assert!(
        refused
            .stderr
            .contains("RUNWAY_WORKER_TOKEN) does not match"),
        "{}",
        refused.all()
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    let logged = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(l) if l.contains("a worker was refused") => break l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("the refusal was not logged: {seen:#?}"),
        }
    };
    assert!(
        logged.contains("intruder") && logged.contains("wrong"),
        "{logged}"
    );
    assert_eq!(
        build(&srv, n)["state"],
        "running",
        "no job was handed to it"
    );
    assert!(build(&srv, n)["jobs"][0]["worker"].is_null());
}

/// Issue 24: with one token for every worker, anyone holding it could end another
/// worker's job ("passed") by naming that worker. A `[[worker]]` has a token of its
/// own and may act only as itself: another worker's token cannot end, log or beat its
/// task (403, logged), and the job ends as it really ended.
#[test]
fn a_workers_own_token_acts_only_as_that_worker() {
    let s = Setup::new(
        "language: shell\nscript: sleep 4; echo really-failing; false\nnotifications:\n  email: false\n",
        "api_token_env = \"RUNWAY_TEST_API_TOKEN\"\n\
         [[worker]]\nname = \"honest\"\ntoken_env = \"RUNWAY_TEST_HONEST_TOKEN\"\n\
         [[worker]]\nname = \"mallory\"\ntoken_env = \"RUNWAY_TEST_MALLORY_TOKEN\"\n",
    );
    let srv = drained(Server::start(
        &s.config,
        &s.state(),
        &[
            ("APP_SECRET", SECRET),
            // The helper's workers bring WORKER_TOKEN: here it is honest's own.
            ("RUNWAY_TEST_HONEST_TOKEN", WORKER_TOKEN),
            ("RUNWAY_TEST_MALLORY_TOKEN", "mallory-t0ken"),
            ("RUNWAY_TEST_API_TOKEN", API_TOKEN),
        ],
    ));
    let dir = s.dir.path();
    let _honest = Worker::start(dir, "honest", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "honest");
    let auth = format!("Bearer {API_TOKEN}");
    let (_, body) = srv.request("GET", "/api/workers", &[("Authorization", &auth)], b"");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let task = listed["workers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|w| w["name"] == "honest")
        .and_then(|w| w["task"].as_i64())
        .unwrap_or_else(|| panic!("honest's task: {listed}"));
    let mallory = [
        ("Authorization", "Bearer mallory-t0ken"),
        ("Content-Type", "application/json"),
        PROTOCOL,
    ];
    let path = format!("/api/worker/tasks/{task}/end");
    let (code, text) = srv.request("POST", &path, &mallory, passed_end("honest").as_bytes());
    assert_eq!(code, 403, "{text}");
    assert!(text.contains("it may act only as mallory"), "{text}");
    let beat = serde_json::json!({"worker": "honest", "attempt": 1}).to_string();
    let (code, text) = srv.request(
        "POST",
        &format!("/api/worker/tasks/{task}/beat"),
        &mallory,
        beat.as_bytes(),
    );
    assert_eq!(code, 403, "{text}");
    let (code, text) = srv.request(
        "POST",
        &format!("/api/worker/tasks/{task}/log?worker=honest&attempt=1&seq=99"),
        &mallory,
        b"fake passed\n",
    );
    assert_eq!(code, 403, "{text}");
    // As itself, mallory holds nothing: 409.
    let (code, text) = srv.request("POST", &path, &mallory, passed_end("mallory").as_bytes());
    assert_eq!(code, 409, "{text}");
    let done = wait_state(&srv, n, "failed");
    let text = log(&srv, n);
    assert!(text.contains("really-failing"), "{done} {text}");
    assert!(!text.contains("fake passed"), "{text}");
}

/// Issue 24: a repository names the labels a worker needs to take its jobs (and see its
/// settings); a worker without them is never handed one.
#[test]
fn a_repositorys_jobs_go_only_to_workers_with_its_labels() {
    let s = Setup::new(TRIVIAL, "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"");
    // The last table of the file is the [[repo]]: the key goes there.
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("worker_labels = { trust = \"internal\" }\n");
    std::fs::write(&s.config, toml).unwrap();
    let srv = serve_for_workers(&s);
    let dir = s.dir.path();
    let _plain = Worker::start(dir, "plain", &[&srv], &[]);
    let _trusted = Worker::start(dir, "trusted", &[&srv], &["trust=internal"]);
    for _ in 0..3 {
        let n = queue(&srv, &s.head());
        assert_eq!(running_on_or_done(&srv, n), "trusted");
    }
}

/// Issue 26 (2): a fork's pull request goes only to the workers the repository keeps
/// for strangers' code (`fork_worker_labels`); its pushes to those it trusts.
#[test]
fn a_forks_jobs_go_only_to_the_workers_kept_for_forks() {
    use super::forge::{change, deliver, github_pr, open_head};
    let s = Setup::new(TRIVIAL, "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"");
    let mut toml = std::fs::read_to_string(&s.config).unwrap();
    toml.push_str("worker_labels = { trust = \"internal\" }\nfork_worker_labels = { pool = \"forks\" }\nfork_prs = \"run\"\n");
    std::fs::write(&s.config, toml).unwrap();
    let srv = serve_for_workers(&s);
    let dir = s.dir.path();
    let _forks = Worker::start(dir, "forks", &[&srv], &["pool=forks"]);
    let _trusted = Worker::start(dir, "trusted", &[&srv], &["trust=internal"]);
    let first = s.head();
    let n = queue(&srv, &first);
    assert_eq!(running_on_or_done(&srv, n), "trusted");
    let head = change(&s, "patch", &first, "f.txt", "x\n");
    open_head(&s, "patch", 9);
    let (code, said) = deliver(
        &srv,
        "pull_request",
        &github_pr("opened", 9, ("patch", &head, "stranger/app"), &first),
    );
    assert_eq!(code, 202, "{said}");
    let n = said["number"].as_u64().unwrap();
    assert_eq!(running_on_or_done(&srv, n), "forks");
}

/// The worker that took build `n`'s first job (running or ended).
fn running_on_or_done(srv: &Server, n: u64) -> String {
    let mut who = String::new();
    wait_for(
        || {
            let b = build(srv, n);
            match b["jobs"][0]["worker"].as_str() {
                Some(w) => {
                    who = w.to_string();
                    true
                }
                None => false,
            }
        },
        "a worker on the job",
    );
    who
}

/// Issue 24: a chunk the store lost left a gap that silently dropped every later chunk.
/// The serve node answers each chunk with what it holds without a gap, and the worker
/// sends again what follows: a chunk removed from the store comes back.
#[test]
fn a_chunk_the_store_lost_is_sent_again() {
    let s = Setup::new(
        "language: shell\nscript: echo part-one; sleep 3; echo part-two; sleep 6; echo part-three\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let srv = serve_for_workers(&s);
    let _w = Worker::start(s.dir.path(), "keeper", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    let db = s.state().join("runway.db");
    let sql = |q: &str| -> String {
        let out = std::process::Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3,sys\nc=sqlite3.connect(sys.argv[1],timeout=30)\n\
                 r=c.execute(sys.argv[2]).fetchall()\nc.commit()\nprint(r)",
            )
            .arg(&db)
            .arg(q)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let has = |text: &str| {
        sql(&format!(
            "SELECT COUNT(*) FROM task_chunks WHERE CAST(data AS TEXT) LIKE '%{text}%'"
        )) != "[(0,)]"
    };
    wait_for(|| has("part-one"), "part one stored");
    // The store loses it.
    sql("DELETE FROM task_chunks WHERE CAST(data AS TEXT) LIKE '%part-one%'");
    assert!(!has("part-one"));
    // The next chunk is answered with what is held (nothing before it): the worker
    // sends the lost one again.
    wait_for(|| has("part-two"), "part two stored");
    wait_for(|| has("part-one"), "part one sent again");
    wait_state(&srv, n, "passed");
}

/// Issue 24: `runway workers revoke NAME` ends a worker at once: its running job is
/// errored "worker NAME was revoked", its later calls are refused (it stops, its job's
/// processes with it), and `--undo` lets it in again.
#[test]
fn a_revoked_worker_is_refused_and_its_job_errored() {
    let s = Setup::new(
        "language: shell\nscript: sleep 7413\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_heartbeat_ms = 300",
    );
    let srv = serve_for_workers(&s);
    let mut w = Worker::start(s.dir.path(), "doomed", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "doomed");
    let revoke = |extra: &[&str]| {
        crate::common::run(
            crate::common::runway()
                .args(["workers", "revoke", "doomed"])
                .args(extra)
                .arg("--config")
                .arg(&s.config)
                .env("RUNWAY_STATE_DIR", s.state()),
        )
    };
    let r = revoke(&[]);
    assert_eq!(r.code, 0, "{}", r.all());
    assert!(
        r.stdout.contains("the 1 job(s) it ran are errored"),
        "{}",
        r.all()
    );
    let done = wait_state(&srv, n, "errored");
    assert!(
        done["jobs"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("worker doomed was revoked")),
        "{done}"
    );
    // Its next call is refused: it stops, and its job's processes go with it.
    w.wait_for("was revoked", 30);
    crate::common::wait_gone("sleep 7413", 30);
    let claim = || {
        claim_raw(
            &srv,
            serde_json::json!({"name": "doomed", "labels": {}, "wait_ms": 0}),
        )
    };
    let (code, text) = claim();
    assert_eq!(code, 403, "{text}");
    let r = revoke(&["--undo"]);
    assert_eq!(r.code, 0, "{}", r.all());
    let (code, text) = claim();
    assert_eq!(code, 204, "{text}");
}

/// A claim does not wake the build's follower (the job's first chunk does): a worker
/// that dies between its claim and its first chunk is still found within its lease,
/// not when the follower's wait for a queued task (30 s) runs out.
#[test]
fn a_worker_gone_right_after_its_claim_is_found_within_its_lease() {
    let s = Setup::new(
        "language: shell\nscript: echo never\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 2000\nworker_heartbeat_ms = 500",
    );
    let srv = worker_node(&s);
    let n = queue(&srv, &s.head());
    // A worker's claim (raw: no worker process), answered with the job; then nothing.
    let (code, text) = claim_raw(
        &srv,
        serde_json::json!({
            "name": "gone", "labels": {"os": "linux", "arch": "amd64"}, "wait_ms": 20_000
        }),
    );
    assert_eq!(code, 200, "{text}");
    // Found at its lease (2 s) and a follower's read: well before 30 s.
    let deadline = Instant::now() + Duration::from_secs(15);
    let last = loop {
        let last = build(&srv, n);
        if last["state"] != "running" || Instant::now() > deadline {
            break last;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(last["state"], "errored", "{last}\n{}", log(&srv, n));
    assert!(
        last["jobs"][0]["reason"]
            .as_str()
            .is_some_and(|r| r.contains("worker gone stopped answering")),
        "{last}"
    );
}

/// A claim's answer lost on its way (a connection cut while the claim waited, a proxy's
/// idle timeout) left its job held by a worker that never got it, until its lease ran
/// out and it was errored "stopped answering". The worker's process says, in its next
/// claim, that a call of its went unanswered: what was handed to that process (and not
/// begun: no log of it) is handed again, the same attempt. Another process of the same
/// name (a restarted worker) is not handed it, nor a claim that says nothing was lost.
#[test]
fn a_job_whose_claims_answer_was_lost_is_handed_again_to_the_same_worker() {
    let s = Setup::new(
        "language: shell\nscript: echo never\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\nworker_lease_ms = 120000",
    );
    let mut srv = worker_node(&s);
    // The node's event log, said with a failure (which turn of the store did what).
    let lines = log_lines(&mut srv);
    let said = || lines.try_iter().collect::<Vec<_>>().join("\n");
    let n = queue(&srv, &s.head());
    let claim = |instance: &str, unanswered: bool, wait_ms: u64| {
        claim_raw(
            &srv,
            serde_json::json!({
                "name": "w", "labels": {"os": "linux", "arch": "amd64"}, "wait_ms": wait_ms,
                "instance": instance, "unanswered": unanswered,
            }),
        )
    };
    let (code, text) = claim("one", false, 20_000);
    assert_eq!(code, 200, "{text}");
    let first: serde_json::Value = serde_json::from_str(&text).unwrap();
    // (its answer "lost": nothing is done with it)
    for (instance, unanswered) in [("one", false), ("another", true)] {
        let (code, text) = claim(instance, unanswered, 300);
        assert_eq!(code, 204, "{instance} {unanswered}: {text}");
    }
    let (code, text) = claim("one", true, 300);
    assert_eq!(
        code,
        200,
        "handed again: {text}\nthe build: {}\nthe node said:\n{}",
        build(&srv, n),
        said()
    );
    let again: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(again["task"], first["task"], "{again}");
    assert_eq!(again["attempt"], 1, "{again}");
    assert_ne!(again["secret"], first["secret"], "a new claim's secret");
    // Its report, with the new claim's secret, ends it.
    let (code, text) = end_raw(
        &srv,
        again["task"].as_i64().unwrap(),
        again["secret"].as_str().unwrap(),
        &passed_end("w"),
    );
    assert_eq!(code, 200, "{text}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while build(&srv, n)["state"] == "running" && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let done = build(&srv, n);
    assert_eq!(done["state"], "passed", "{}", log(&srv, n));
    // One attempt, on one worker: the answer that never arrived is not another.
    assert_eq!(
        done["jobs"][0]["workers"],
        serde_json::json!(["w"]),
        "{done}"
    );
}

/// A claim that says a call of its went unanswered, with nothing of its to give back,
/// tries the store once and then waits. It woke itself with its own turn (every
/// waiting claim is woken to look at what an unanswered call gives back) and tried
/// again at once, for as long as it could wait: a busy loop writing to the store on a
/// runtime thread that never turned the runtime's timers, so that a claim of 300 ms
/// was answered two minutes later, its job's lease run out meanwhile.
#[test]
fn a_claim_after_an_unanswered_call_with_nothing_to_give_back_tries_once() {
    let s = Setup::new(
        "language: shell\nscript: echo never\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"",
    );
    let trace = s.dir.path().join("statements.log");
    let srv = worker_node_with(&s, &[("RUNWAY_TRACE_SQL", trace.to_str().unwrap())]);
    let (code, text) = claim_raw(
        &srv,
        serde_json::json!({
            "name": "w", "labels": {"os": "linux", "arch": "amd64"}, "wait_ms": 300,
            "instance": "one", "unanswered": true,
        }),
    );
    assert_eq!(code, 204, "{text}");
    // Each try at the store looks for what the process was handed and never got.
    let tries = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("SELECT id, held_by FROM tasks"))
        .count();
    assert_eq!(tries, 1, "the claim's tries at the store");
}

/// A claim by worker `name` (amd64, its process `NAME-process`), waiting `wait_ms`.
fn claim_as(srv: &Server, name: &str, wait_ms: u64) -> (u16, String) {
    claim_raw(
        srv,
        serde_json::json!({
            "name": name, "labels": {"os": "linux", "arch": "amd64"}, "wait_ms": wait_ms,
            "instance": format!("{name}-process"),
        }),
    )
}

/// A node (`lost_job = "retry"`, heartbeat 300 ms, lease `lease_ms`) whose build #n's
/// job was handed to worker w, which then says nothing more; the build canceled. With
/// the claim's answer.
fn canceled_while_on_a_gone_worker(lease_ms: u64) -> (Setup, Server, u64, String) {
    let s = Setup::new(
        "language: shell\nscript: echo never\nnotifications:\n  email: false\n",
        &format!(
            "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"\n\
             worker_lease_ms = {lease_ms}\nworker_heartbeat_ms = 300\nlost_job = \"retry\"\nauto_cancel = false"
        ),
    );
    let srv = serve_for_workers(&s);
    let n = queue(&srv, &s.head());
    let (code, text) = claim_as(&srv, "w", 20_000);
    assert_eq!(code, 200, "{text}");
    cancel(&srv, n);
    (s, srv, n, text)
}

/// A canceled build's job whose worker never answers (gone without a word) ends
/// canceled within a few heartbeats, not when its lease runs out two minutes later,
/// and runs nowhere again though `lost_job = "retry"`; the worker's late report is
/// refused. And a node told twice to stop, with such a job running, stops at once
/// rather than waiting out the lease.
#[test]
fn a_canceled_job_whose_worker_never_answers_ends_canceled_and_runs_nowhere_again() {
    let (s, mut srv, n, text) = canceled_while_on_a_gone_worker(120_000);
    let handed: serde_json::Value = serde_json::from_str(&text).unwrap();
    let ended = wait_state(&srv, n, "canceled");
    assert_eq!(ended["jobs"][0]["result"], "canceled", "{ended}");
    assert!(
        log(&srv, n).contains("worker w was told to stop the job"),
        "{}",
        log(&srv, n)
    );
    // Not queued again for another worker, and w's report comes too late.
    let (code, text) = claim_as(&srv, "v", 1_000);
    assert_eq!(code, 204, "the canceled job was handed again: {text}");
    let (code, _) = end_raw(
        &srv,
        handed["task"].as_i64().unwrap(),
        handed["secret"].as_str().unwrap(),
        &passed_end("w"),
    );
    assert_eq!(code, 409, "a report about a job that ended canceled");
    assert_eq!(build(&srv, n)["state"], "canceled");

    // Another build's job handed to w, which is gone; two SIGTERMs (the second: cancel
    // now) stop the node within its grace (5 s) and a few heartbeats, not a lease.
    queue(&srv, &s.head());
    let (code, text) = claim_as(&srv, "w", 20_000);
    assert_eq!(code, 200, "{text}");
    srv.signal("-TERM");
    srv.signal("-TERM");
    assert!(
        srv.exited_within(30),
        "a node with a job on a gone worker did not stop"
    );
}

/// As above, with a lease shorter than the wait for the worker's answer: the lease
/// runs out first, and the canceled job still ends canceled rather than being queued
/// again (`lost_job = "retry"`) for another worker to run.
#[test]
fn a_canceled_job_whose_lease_runs_out_is_not_queued_again() {
    let (_s, srv, n, _) = canceled_while_on_a_gone_worker(1_000);
    // v waits for a job all the while: the canceled one must not be it.
    let (code, text) = claim_as(&srv, "v", 4_000);
    assert_eq!(code, 204, "the canceled job was queued again: {text}");
    let ended = wait_state(&srv, n, "canceled");
    assert_eq!(ended["jobs"][0]["result"], "canceled", "{ended}");
}

/// A job given back by a claim that says an answer was lost (above) wakes the claims
/// waiting for such a job: when the worker that lost it takes another this time, a
/// waiting worker takes it at once, not after its wait (20 s) or the next job queued.
#[test]
fn a_job_given_back_wakes_a_waiting_claim() {
    let s = Setup::new(
        "language: shell\nscript: echo never\njobs:\n  include:\n    - arch: arm64\n    - arch: amd64\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"\nworker_lease_ms = 120000",
    );
    let srv = serve_for_workers(&s);
    queue(&srv, &s.head());
    let claim = |name: &str, arch: &str, unanswered: bool, wait_ms: u64| {
        let (code, text) = claim_raw(
            &srv,
            serde_json::json!({
                "name": name, "labels": {"os": "linux", "arch": arch}, "wait_ms": wait_ms,
                "instance": format!("{name}-process"), "unanswered": unanswered,
            }),
        );
        let handed = serde_json::from_str::<serde_json::Value>(&text).ok();
        (code, handed.map(|h| h["task"].clone()).unwrap_or_default())
    };
    // The amd64 job (1.2) is handed to w, whose answer is "lost".
    let (code, amd64) = claim("w", "amd64", false, 20_000);
    assert_eq!(code, 200);
    std::thread::scope(|scope| {
        // v waits for an amd64 job.
        let waiting = scope.spawn(|| claim("v", "amd64", false, 15_000));
        // (its claim's first try is recorded with the workers, its place among the
        // waiting taken before it)
        let auth = format!("Bearer {API_TOKEN}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !srv
            .request("GET", "/api/workers", &[("Authorization", &auth)], b"")
            .1
            .contains("\"v\"")
        {
            assert!(Instant::now() < deadline, "v never claimed");
            std::thread::sleep(Duration::from_millis(20));
        }
        // w's process asks again, saying an answer went unanswered, and is handed the
        // older arm64 job (1.1) this time; 1.2 is given back.
        let (code, arm64) = claim("w", "arm64", true, 300);
        assert_eq!(code, 200);
        assert_ne!(arm64, amd64);
        let (code, taken) = waiting.join().unwrap();
        assert_eq!(
            (code, taken),
            (200, amd64),
            "the given-back job, to the waiting v"
        );
    });
}

/// Issue 24: even with the shared token and the worker's name, a call about a task
/// must bring the secret its claim was answered with; anyone else is refused (403) and
/// the job ends as it really ended.
#[test]
fn a_task_is_held_by_the_worker_that_claimed_it() {
    let s = Setup::new(
        "language: shell\nscript: sleep 4; echo really-failing; false\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"",
    );
    let srv = serve_for_workers(&s);
    let _honest = Worker::start(s.dir.path(), "honest", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    assert_eq!(running_on(&srv, n), "honest");
    let auth = format!("Bearer {API_TOKEN}");
    let (_, body) = srv.request("GET", "/api/workers", &[("Authorization", &auth)], b"");
    let listed: serde_json::Value = serde_json::from_str(&body).unwrap();
    let task = listed["workers"][0]["task"]
        .as_i64()
        .unwrap_or_else(|| panic!("{listed}"));
    for secret in ["", "0123456789abcdef"] {
        let (code, text) = end_raw(&srv, task, secret, &passed_end("honest"));
        assert_eq!(code, 403, "{text}");
        assert!(text.contains("task's secret"), "{text}");
    }
    let done = wait_state(&srv, n, "failed");
    assert!(log(&srv, n).contains("really-failing"), "{done}");
}

/// What a worker sends is on its node's live page while the job runs, told by the
/// handler that stored it: the node's follower does not wait for the worker's lease to
/// come due (ten minutes here; heartbeats renew it and wake nobody) to read it, and
/// the job's end shows every line once. (A cancel reaches the worker with its next
/// heartbeat, a second here.)
#[test]
fn a_workers_output_is_live_on_its_node_while_the_job_runs() {
    let s = Setup::new(
        "language: shell\nscript: echo first-line; sleep 1217\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"\nworker_lease_ms = 600000\nworker_heartbeat_ms = 1000\n",
    );
    let srv = serve_for_workers(&s);
    let _w = Worker::start(s.dir.path(), "live", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    let streamed = sse_until(&srv, n, "first-line");
    assert!(streamed.contains("first-line"), "{streamed}");
    assert_eq!(build(&srv, n)["state"], "running");
    cancel(&srv, n);
    let ended = wait_state(&srv, n, "canceled");
    let text = log(&srv, n);
    assert_eq!(
        text.matches("first-line").count(),
        2,
        "the command and its output, once each: {text}\n{ended}"
    );
    crate::common::wait_gone("sleep 1217", 30);
}

/// A cancel reaches a worker's job that prints with the answer to its next log chunk,
/// not only with its next heartbeat (ten minutes here; the lease twenty): before, such
/// a job ran on until its heartbeat came due.
#[test]
fn a_cancel_reaches_a_printing_job_with_its_next_chunk() {
    let s = Setup::new(
        "language: shell\nscript: while true; do echo tick-1481; sleep 0.2; done\nnotifications:\n  email: false\n",
        "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"\napi_token_env = \"RUNWAY_TEST_API_TOKEN\"\nworker_lease_ms = 1200000\nworker_heartbeat_ms = 600000\n",
    );
    let srv = serve_for_workers(&s);
    let _w = Worker::start(s.dir.path(), "ticking", &[&srv], &[]);
    let n = queue(&srv, &s.head());
    let streamed = sse_until(&srv, n, "tick-1481");
    assert!(streamed.contains("tick-1481"), "{streamed}");
    cancel(&srv, n);
    let ended = wait_state(&srv, n, "canceled");
    assert_eq!(ended["jobs"][0]["result"], "canceled", "{ended}");
    crate::common::wait_gone("tick-1481", 30);
}

/// Issue 29: a store call made on one of the async runtime's threads runs there (no
/// hand-off to another thread) only while no other runtime thread is in one; any other
/// hands its thread's tasks off first. So workers' calls that all wait on a locked
/// store (here: another connection holds SQLite's write lock, as a long commit
/// would) never leave the node unable to answer a request that needs no store. Four
/// claims wait at once (more than this machine's runtime threads); meanwhile the
/// node's pages' script is served, again and again, and the claims still wait; once
/// the lock goes, each claim is answered.
#[test]
fn calls_waiting_on_a_locked_store_hold_up_no_request_that_needs_none() {
    let s = Setup::new(TRIVIAL, "worker_token_env = \"RUNWAY_TEST_WORKER_TOKEN\"");
    let srv = serve_for_workers(&s);
    let db = rusqlite::Connection::open(s.state().join("runway.db")).unwrap();
    db.execute_batch("BEGIN IMMEDIATE").unwrap();
    let (tx, claims) = std::sync::mpsc::channel();
    let (sent_tx, sent) = std::sync::mpsc::channel();
    for i in 0..4 {
        let (addr, tx, sent_tx) = (srv.addr.clone(), tx.clone(), sent_tx.clone());
        std::thread::spawn(move || {
            let body = format!(r#"{{"name":"probe{i}","labels":{{}},"wait_ms":0}}"#);
            let mut c = std::net::TcpStream::connect(&addr).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
            let req = format!(
                "POST /api/worker/claim HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\
                 Authorization: Bearer {WORKER_TOKEN}\r\nContent-Type: application/json\r\n\
                 {}: {}\r\nContent-Length: {}\r\n\r\n{body}",
                PROTOCOL.0,
                PROTOCOL.1,
                body.len()
            );
            std::io::Write::write_all(&mut c, req.as_bytes()).unwrap();
            let _ = sent_tx.send(());
            let mut answer = String::new();
            let _ = std::io::Read::read_to_string(&mut c, &mut answer);
            let _ = tx.send(answer);
        });
    }
    for _ in 0..4 {
        sent.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    for k in 0..20 {
        let (atx, arx) = std::sync::mpsc::channel();
        let addr = srv.addr.clone();
        std::thread::spawn(move || {
            let _ = atx.send(crate::common::server::http(
                &addr,
                "GET",
                "/assets/app.css",
                &[],
                b"",
            ));
        });
        // A generous bound: a stalled node answers only once the claims have given up
        // on the lock (10 s each, in turn).
        let got = arx.recv_timeout(Duration::from_secs(30));
        assert!(
            got.as_ref().is_ok_and(|(code, _)| *code == 200),
            "request {k} for the pages' style: no answer while claims wait on the store: {got:?}"
        );
    }
    assert!(
        claims.try_recv().is_err(),
        "a claim was answered while the store's write lock was held"
    );
    db.execute_batch("COMMIT").unwrap();
    for _ in 0..4 {
        let answer = claims.recv_timeout(Duration::from_secs(60)).unwrap();
        assert!(answer.starts_with("HTTP/1.1 204"), "{answer}");
    }
}
