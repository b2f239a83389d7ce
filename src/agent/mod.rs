//! `runway worker --server URL [--server URL2] --name NAME [--label key=value]…`: an
//! agent on another machine that connects out to the serve nodes over HTTP(S), with
//! the token in `RUNWAY_WORKER_TOKEN`. It holds no database or S3 credentials: a serve
//! node hands it one job at a time with what that job needs (the job as the node
//! planned it, the commit as a git pack, the repository's settings); it reads no
//! `.travis.yml` and plans nothing, and runs the job in its own sandbox with its
//! own runtimes and cache directory, streams the log back in numbered chunks (a chunk
//! sent again is kept once), beats while the job runs, and reports the result. A serve
//! node that stops answering is left for the next `--server`, with a growing pause.
//! The first SIGTERM drains it (the job it runs finishes, no new one is taken).
//!
//! [`crate::protocol`] is what the two sides say; `server::agents` is the serve node's side.

pub mod lease;

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::build::{JobTap, SharedOut};
use crate::cancel::Cancel;
use crate::job::{JobOutcome, JobResult};
use crate::protocol::{
    self, Assignment, BeatAnswer, CacheAsk, CacheUrl, Claim, End, Ended, Held, Report,
};
use crate::service::{self, Controls, Event, Options, Reporter, Request, SandboxOptions};
use crate::store::tasks::{Labels, labels_text};

/// `eprintln!` in one write: `eprintln!` writes each piece of its format on its own (the
/// standard error is unbuffered), and each write wakes whoever reads a worker's
/// standard error (a journal, a supervisor's pipe): seven wakes for a job's line.
macro_rules! say {
    ($($arg:tt)*) => {{
        let mut line = format!($($arg)*);
        line.push('\n');
        let _ = std::io::Write::write_all(&mut std::io::stderr().lock(), line.as_bytes());
    }};
}

/// How a worker runs.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// The serve nodes' base URLs, tried in turn.
    pub servers: Vec<String>,
    /// Its name (unique among the workers).
    pub name: String,
    /// Its labels: `os`, `arch` and `dist` detected, then `--label`s.
    pub labels: Labels,
    /// `RUNWAY_WORKER_TOKEN`.
    pub token: String,
    /// Its own state (the repositories' objects, running jobs' process groups).
    pub state_dir: PathBuf,
    /// Its own cache directory.
    pub cache_dir: Option<PathBuf>,
    /// Where its jobs run.
    pub sandbox: SandboxOptions,
    /// Stop after this many jobs (tests, one-shot machines).
    pub jobs: Option<usize>,
}

/// The labels this machine has: `os`, `arch`, `dist`.
pub fn detected_labels() -> Labels {
    let (_, dist) = crate::runtime::platform::host_dist();
    let mut l = Labels::new();
    l.insert("os".into(), crate::runtime::platform::host_os().into());
    l.insert("arch".into(), crate::runtime::platform::host_arch().into());
    if !dist.is_empty() {
        l.insert("dist".into(), dist);
    }
    l
}

/// Why a call to a serve node failed.
#[derive(Debug)]
enum CallError {
    /// The task is no longer this worker's (409).
    Lost,
    /// The server refused the token (401/403): no use trying again.
    Refused(String),
    /// The server could not be reached or answered otherwise: try again, maybe elsewhere.
    Retry(String),
    /// The server answered 503: it cannot now (its build store is unreachable). No
    /// node can then take a lease away either: try again later.
    Busy(String),
}

/// The serve nodes, the one in use, and how to call them.
struct Servers {
    urls: Vec<String>,
    current: AtomicUsize,
    token: String,
    agent: ureq::Agent,
    /// The secret of the task this worker holds (its claim's answer), sent with every
    /// call about it.
    task_secret: std::sync::Mutex<Option<String>>,
    /// The protocol version it speaks ([`protocol::spoken`]).
    protocol: String,
    /// A call that could have handed this process a job went unanswered since the last
    /// one answered ([`Claim::unanswered`]).
    unanswered: AtomicBool,
}

impl Servers {
    fn new(urls: Vec<String>, token: String) -> Servers {
        let agent = crate::http::agent(
            ureq::Agent::config_builder()
                .http_status_as_error(false)
                .timeout_connect(Some(Duration::from_secs(5)))
                .timeout_global(Some(Duration::from_secs(60)))
                .build(),
        );
        Servers {
            urls: urls
                .into_iter()
                .map(|u| u.trim_end_matches('/').to_string())
                .collect(),
            current: AtomicUsize::new(0),
            token,
            agent,
            task_secret: std::sync::Mutex::new(None),
            protocol: protocol::spoken().to_string(),
            unanswered: AtomicBool::new(false),
        }
    }

    /// `claim` as it is sent now: saying whether a call that could have handed this
    /// process a job went unanswered.
    fn claim_now(&self, claim: &mut Claim) {
        claim.unanswered = self.unanswered.load(Ordering::SeqCst);
    }

    /// Notes how a call that could have handed a job ended: answered (whatever it
    /// said), or not (a server that was reached may have handed one); a node that could
    /// not reach its store (503) or refused the call handed nothing.
    fn heard<T>(&self, r: &Result<T, CallError>) {
        match r {
            Ok(_) => self.unanswered.store(false, Ordering::SeqCst),
            Err(CallError::Retry(_)) => self.unanswered.store(true, Ordering::SeqCst),
            Err(_) => {}
        }
    }

    fn url(&self, path: &str) -> String {
        let i = self.current.load(Ordering::SeqCst) % self.urls.len();
        format!("{}{path}", self.urls[i])
    }

    /// The next server, after one failed.
    fn next(&self) {
        self.current.fetch_add(1, Ordering::SeqCst);
    }

    fn status(code: u16, body: String) -> Result<(), CallError> {
        match code {
            200..=299 => Ok(()),
            409 => Err(CallError::Lost),
            // 426: the node speaks another protocol version.
            401 | 403 | 426 => Err(CallError::Refused(body)),
            503 => Err(CallError::Busy(body)),
            _ => Err(CallError::Retry(format!("HTTP {code}: {body}"))),
        }
    }

    fn post_json<T: serde::Serialize>(
        &self,
        path: &str,
        body: &T,
    ) -> Result<(u16, Vec<u8>), CallError> {
        let json = serde_json::to_vec(body).map_err(|e| CallError::Retry(e.to_string()))?;
        self.send(path, Some(("application/json", json)))
    }

    fn send(&self, path: &str, body: Option<(&str, Vec<u8>)>) -> Result<(u16, Vec<u8>), CallError> {
        let url = self.url(path);
        let auth = format!("Bearer {}", self.token);
        let secret = self
            .task_secret
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .unwrap_or_default();
        let answer = match body {
            Some((kind, bytes)) => self
                .agent
                .post(&url)
                .header("Authorization", &auth)
                .header(protocol::TASK_SECRET, &secret)
                .header(protocol::PROTOCOL, &self.protocol)
                .header("Content-Type", kind)
                .send(&bytes[..]),
            None => self
                .agent
                .get(&url)
                .header("Authorization", &auth)
                .header(protocol::TASK_SECRET, &secret)
                .header(protocol::PROTOCOL, &self.protocol)
                .call(),
        };
        let mut r = answer.map_err(|e| CallError::Retry(format!("{url}: {e}")))?;
        let code = r.status().as_u16();
        let bytes = r
            .body_mut()
            .with_config()
            .limit(2 << 30)
            .read_to_vec()
            .map_err(|e| CallError::Retry(format!("{url}: {e}")))?;
        if !(200..300).contains(&code) {
            Self::status(code, String::from_utf8_lossy(&bytes).into_owned())?;
        }
        Ok((code, bytes))
    }

    /// One heartbeat: posted to the server in use; a 503 (that node cannot reach the
    /// store) sends it on to each other server in turn, since one that can reach the
    /// store may take the lease as lapsed. `Busy` only when every server said 503: then
    /// no node can take the lease away. A server that does not answer ends the beat
    /// (`Retry`): whether it could take the lease is unknown, so it holds nothing.
    fn renew(&self, path: &str, held: &Held) -> Result<(u16, Vec<u8>), CallError> {
        let mut busy = None;
        for _ in 0..self.urls.len() {
            match self.post_json(path, held) {
                Err(CallError::Busy(why)) => {
                    busy = Some(why);
                    self.next();
                }
                other => return other,
            }
        }
        Err(CallError::Busy(busy.unwrap_or_default()))
    }

    /// Calls until it is done, lost or refused, moving to the next server after each
    /// failure, with a growing pause; `stop` saying so ends the tries.
    fn until_done<T>(
        &self,
        stop: &dyn Fn() -> bool,
        mut call: impl FnMut(&Servers) -> Result<T, CallError>,
    ) -> Result<T, CallError> {
        let mut pause = Duration::from_millis(100);
        loop {
            match call(self) {
                Err(CallError::Retry(why) | CallError::Busy(why)) => {
                    if stop() {
                        return Err(CallError::Retry(why));
                    }
                    say!("runway worker: {why}; trying again in {pause:?}");
                    self.next();
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_secs(5));
                }
                other => return other,
            }
        }
    }
}

/// Runs the worker until it is drained (`drain` set: by SIGTERM) or has run
/// `opts.jobs` jobs. Its exit code: 0, or 3 when the servers refuse its token.
pub fn run(opts: &WorkerOptions, drain: &Cancel) -> i32 {
    // HTTPS to the serve nodes, with the TLS provider the rest of runway uses.
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    // The sandbox is made once here to know it works; each job's is made unchecked.
    let cache_root = opts
        .cache_dir
        .clone()
        .unwrap_or_else(crate::cache::store::default_root);
    if let Err(e) = opts
        .sandbox
        .make(&opts.state_dir, &cache_root, &mut |s| say!("{s}"))
    {
        say!("runway worker: the job sandbox cannot be made here: {e}");
        say!("runway worker: {}", e.hint());
        return crate::exit::ERRORED;
    }
    let opts = &WorkerOptions {
        sandbox: SandboxOptions {
            checked: true,
            ..opts.sandbox.clone()
        },
        ..opts.clone()
    };
    // What a runway that died here left running is ended, and its disks released, once
    // (not before each job).
    if let Some(note) = service::end_leftovers(&opts.state_dir) {
        say!("{note}");
    }
    // The dead man's switch: each job is stopped before its lease lapses, even when
    // this process is frozen and cannot (lease.rs).
    let keeper = match lease::Keeper::start(&crate::store::process_dir(&opts.state_dir)) {
        Ok(k) => Arc::new(Mutex::new(k)),
        Err(e) => {
            say!("runway worker: the lease keeper cannot be started: {e}");
            return crate::exit::ERRORED;
        }
    };
    let servers = Arc::new(Servers::new(opts.servers.clone(), opts.token.clone()));
    // SIGTERM ends the tries for a claim at once (a worker whose servers are gone
    // holds no job to finish).
    let drained = Arc::new(AtomicBool::new(false));
    let flag = drained.clone();
    let _drain_stops_claims = drain.on_cancel(move || flag.store(true, Ordering::SeqCst));
    let mut done = 0;
    say!(
        "runway worker {}: {} → {}",
        opts.name,
        labels_text(&opts.labels),
        opts.servers.join(", ")
    );
    let mut claim = Claim {
        name: opts.name.clone(),
        labels: opts.labels.clone(),
        wait_ms: 20_000,
        instance: crate::auth::random(16),
        unanswered: false,
    };
    // A job's heartbeat and its log's sender run on threads kept from one job to the
    // next (a thread started and joined costs ~60 µs of CPU here; BENCHMARKS.md).
    let beats = Beats::start();
    let sends = Helper::start("runway-send");
    let around = Around {
        keeper: &keeper,
        drained: &drained,
        beats: &beats,
        sends: &sends,
    };
    // A job handed with the last one's report is run whatever came meanwhile: it is
    // this worker's already (as a claim answered just before a SIGTERM).
    let mut next: Option<Assignment> = None;
    while next.is_some() || (!drain.is_canceled() && opts.jobs.is_none_or(|n| done < n)) {
        let a = match next.take() {
            Some(a) => a,
            None => {
                let got = servers.until_done(&|| drained.load(Ordering::SeqCst), |s| {
                    s.claim_now(&mut claim);
                    let got = s.post_json("/api/worker/claim", &claim);
                    s.heard(&got);
                    got
                });
                match got {
                    Ok((200, body)) => match serde_json::from_slice::<Assignment>(&body) {
                        Ok(a) => a,
                        Err(e) => {
                            say!("runway worker: an assignment runway cannot read: {e}");
                            continue;
                        }
                    },
                    Ok(_) => continue,
                    Err(CallError::Refused(why)) => {
                        say!("runway worker: refused by the server: {why}");
                        return crate::exit::ERRORED;
                    }
                    Err(e) => {
                        say!("runway worker: {e:?}");
                        continue;
                    }
                }
            }
        };
        *servers
            .task_secret
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(a.secret.clone());
        // Another job is asked for with this one's report unless this is the last
        // or the worker drains (asked when the report is sent).
        let then = || {
            (!drain.is_canceled() && opts.jobs.is_none_or(|n| done + 1 < n)).then(|| claim.clone())
        };
        let a = Arc::new(a);
        next = run_task(opts, &servers, &a, &around, &then);
        *servers
            .task_secret
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
        done += 1;
    }
    say!("runway worker {}: stopped after {done} job(s)", opts.name);
    crate::exit::PASSED
}

/// The log chunks of the running job, numbered, waiting to be sent.
#[derive(Default)]
struct Outbox {
    state: Mutex<OutboxState>,
    changed: Condvar,
}

#[derive(Default)]
struct OutboxState {
    /// Bytes not yet made into a chunk.
    open: Vec<u8>,
    /// Chunks made and not yet stored by a server: (seq, bytes).
    sealed: VecDeque<(i64, Vec<u8>)>,
    /// Every chunk made (kept for the job: a server that lost one is sent it again;
    /// bounded by the job's log limit).
    made: Vec<Vec<u8>>,
    next_seq: i64,
    /// The job ended: send what is left and stop.
    closed: bool,
    /// What the next chunk waits for.
    hold: Hold,
    /// A command of the job has started.
    commanded: bool,
    /// The sender waits with no deadline: only a push wakes it.
    idle: bool,
    /// Nobody watches the build ([`Assignment::watched`]): the first command is paced
    /// as later output is.
    unwatched: bool,
}

/// What [`Outbox::send`] does next.
#[derive(Debug, PartialEq)]
enum Next {
    /// Send the first sealed chunk.
    Send,
    /// Wait for a change, or this long at most.
    Wait(Option<std::time::Duration>),
    /// The job ended and every chunk went: what is left goes with the report.
    Done,
}

impl OutboxState {
    /// The decision of [`Outbox::send`] at `now`, the last chunk made at `last` (both
    /// updated when a chunk is sealed here): the first chunk once the job's first
    /// command starts (or its header waited [`HEADER_WAIT`]), then one per [`PACE`] at
    /// most, or when one is full; what the job prints meanwhile is batched into the
    /// next chunk.
    fn next(&mut self, now: std::time::Instant, last: &mut Option<std::time::Instant>) -> Next {
        if !self.sealed.is_empty() {
            return Next::Send;
        }
        // The job has ended: what is left (one chunk at most) goes with the report.
        if self.closed && self.open.len() <= CHUNK_BYTES {
            return Next::Done;
        }
        if !self.open.is_empty() && self.hold != Hold::Output {
            let wait = match (self.hold, *last) {
                (Hold::Due, _) => std::time::Duration::ZERO,
                (Hold::Command(until), _) => until.saturating_duration_since(now),
                (_, Some(t)) => PACE.saturating_sub(now.saturating_duration_since(t)),
                (_, None) => std::time::Duration::ZERO,
            };
            if !wait.is_zero() && self.open.len() < CHUNK_BYTES {
                return Next::Wait(Some(wait));
            }
            *last = Some(now);
            self.hold = Hold::None;
            let n = self.open.len().min(CHUNK_BYTES);
            let bytes: Vec<u8> = self.open.drain(..n).collect();
            let seq = self.next_seq;
            self.next_seq += 1;
            self.made.push(bytes.clone());
            self.sealed.push_back((seq, bytes));
            return Next::Send;
        }
        if self.closed {
            return Next::Done;
        }
        Next::Wait(None)
    }

    /// Whether bytes just pushed change what the sender does: when it waits with no
    /// deadline (nothing was open, or the job's header waits for the job), or a chunk
    /// is full. Otherwise its deadline (the pace, the header's wait) comes first, or
    /// it is sending and decides again after: a job printing a line at a time wakes
    /// it once a chunk, not once a line.
    fn wakes_sender(&self) -> bool {
        self.idle || self.open.len() >= CHUNK_BYTES
    }
}

/// What the first chunk of a job's log waits for: the worker's line about the job
/// and the job's header go with the job's first command (what a watcher waits for),
/// not in calls of their own ahead of it.
#[derive(Clone, Copy, Default, PartialEq, Debug)]
enum Hold {
    /// Nothing: chunks go as [`Outbox::send`] paces them.
    #[default]
    None,
    /// The job's own first output.
    Output,
    /// The job's first command, or the instant given (a long checkout's header is
    /// shown meanwhile).
    Command(std::time::Instant),
    /// The job's first command started: what is open goes at once, unpaced.
    Due,
}

/// The largest chunk sent at once.
const CHUNK_BYTES: usize = 64 * 1024;

/// How often a job's output is sent once its first chunk is (its header and first
/// command, what a watcher waits for), so that a short job's lines go with its first
/// chunk or its report, not in a call each (a one-line job made four).
const PACE: std::time::Duration = std::time::Duration::from_millis(100);
/// The longest a job's header waits for its first command (a long checkout's is shown
/// meanwhile).
const HEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

impl Outbox {
    /// The outbox of a job whose build is `watched` ([`Assignment::watched`]).
    fn for_job(watched: bool) -> Outbox {
        Outbox {
            state: Mutex::new(OutboxState {
                unwatched: !watched,
                ..OutboxState::default()
            }),
            changed: Condvar::new(),
        }
    }

    fn push(&self, bytes: &[u8]) {
        let mut s = self.state.lock().expect("outbox");
        s.open.extend_from_slice(bytes);
        if s.hold == Hold::Output {
            s.hold = Hold::Command(std::time::Instant::now() + HEADER_WAIT);
        }
        if s.wakes_sender() {
            self.changed.notify_all();
        }
    }

    /// Bytes sent with the job's first command (or with what is left when it ends).
    fn push_ahead(&self, bytes: &[u8]) {
        let mut s = self.state.lock().expect("outbox");
        s.open.extend_from_slice(bytes);
        s.hold = Hold::Output;
    }

    /// A command of the job started (its `$ cmd` line pushed): the job's first goes at
    /// once, with what waited for it; a pace later when nobody watches the build.
    fn command_started(&self) {
        let mut s = self.state.lock().expect("outbox");
        if !s.commanded {
            s.commanded = true;
            s.hold = if s.unwatched {
                Hold::Command(std::time::Instant::now() + PACE)
            } else {
                Hold::Due
            };
            self.changed.notify_all();
        }
    }

    fn close(&self) {
        let mut s = self.state.lock().expect("outbox");
        s.closed = true;
        s.hold = Hold::None;
        self.changed.notify_all();
    }

    /// What the job printed that no chunk carries, as the report's tail (after
    /// [`Outbox::send`] returned): empty when the chunks carried it all, its number
    /// then still saying how many they were (the node logs it).
    fn tail(&self) -> protocol::Tail {
        use base64::Engine;
        let mut s = self.state.lock().expect("outbox");
        let bytes: Vec<u8> = std::mem::take(&mut s.open);
        let seq = s.next_seq;
        if !bytes.is_empty() {
            s.next_seq += 1;
        }
        protocol::Tail {
            seq,
            bytes: base64::engine::general_purpose::STANDARD.encode(bytes),
        }
    }

    /// Sends chunks until the job has ended and every chunk is stored, or the task is
    /// lost (`lost` is then set); an answer that says the build was canceled sets
    /// `cancel` (the job stops).
    fn send(
        &self,
        servers: &Servers,
        a: &Assignment,
        name: &str,
        (lost, cancel): (&Cancel, &Cancel),
        give_up: &dyn Fn() -> bool,
    ) {
        // When the last chunk was made.
        let mut last: Option<std::time::Instant> = None;
        loop {
            let next = {
                let mut s = self.state.lock().expect("outbox");
                loop {
                    match s.next(std::time::Instant::now(), &mut last) {
                        Next::Send => break,
                        Next::Done => return,
                        Next::Wait(Some(wait)) => {
                            s = self.changed.wait_timeout(s, wait).expect("outbox").0;
                        }
                        Next::Wait(None) => {
                            s.idle = true;
                            s = self.changed.wait(s).expect("outbox");
                            s.idle = false;
                        }
                    }
                }
                s.sealed.front().cloned()
            };
            let Some((seq, bytes)) = next else { continue };
            let path = format!(
                "/api/worker/tasks/{}/log?worker={}&attempt={}&seq={seq}",
                a.task,
                crate::mask::percent_encode(name, false, false, false),
                a.attempt
            );
            match servers.until_done(give_up, |s| {
                s.send(&path, Some(("application/octet-stream", bytes.clone())))
            }) {
                Ok((_, answer)) => {
                    let ack = serde_json::from_slice::<protocol::ChunkAck>(&answer).ok();
                    // Before the outbox is locked: stopping the job prints to it.
                    if ack.as_ref().is_some_and(|a| a.cancel) {
                        cancel.cancel();
                    }
                    let mut s = self.state.lock().expect("outbox");
                    s.sealed.pop_front();
                    // A server that holds less than this chunk and all before it (one
                    // was lost) is sent again what follows what it holds.
                    let held = ack.map_or(seq, |a| a.held);
                    if held < seq {
                        let again: Vec<(i64, Vec<u8>)> = ((held + 1)..=seq)
                            .filter_map(|n| Some((n, s.made.get(n as usize)?.clone())))
                            .collect();
                        for c in again.into_iter().rev() {
                            s.sealed.push_front(c);
                        }
                    }
                }
                Err(_) => {
                    lost.cancel();
                    return;
                }
            }
        }
    }
}

/// The job's log, into the outbox.
struct ChunkTap(Arc<Outbox>);

impl JobTap for ChunkTap {
    fn write(&self, _number: &str, bytes: &[u8]) {
        self.0.push(bytes);
    }
    fn end(&self, _number: &str, _result: JobResult) {}
    fn event(&self, _number: &str, event: &crate::job::log::JobEvent<'_>) {
        if let crate::job::log::JobEvent::CommandStarted { .. } = event {
            self.0.command_started();
        }
    }
}

/// The reporter of a worker's job: the job's log goes to the server (through the tap),
/// problems to the worker's standard error.
struct Problems {
    out: SharedOut,
}

impl Reporter for Problems {
    fn out(&self) -> SharedOut {
        self.out.clone()
    }
    fn event(&mut self, event: Event<'_>) {
        if let Event::Problem(t) = event {
            say!("runway worker: {t}");
        }
    }
}

/// What a job's run is given by the worker's loop: its lease keeper, whether it
/// drains, and the threads its heartbeat and log's sender run on.
struct Around<'a> {
    keeper: &'a Arc<Mutex<lease::Keeper>>,
    drained: &'a Arc<AtomicBool>,
    beats: &'a Beats,
    sends: &'a Helper,
}

/// A [`Lane`](crate::lane::Lane) for one piece of work at a time, handed to it with
/// [`Helper::run`] and waited for with [`Helper::join`].
struct Helper {
    lane: crate::lane::Lane,
    finished: std::sync::mpsc::Sender<std::thread::Result<()>>,
    done: std::sync::mpsc::Receiver<std::thread::Result<()>>,
}

impl Helper {
    fn start(name: &str) -> Helper {
        let (finished, done) = std::sync::mpsc::channel();
        Helper {
            lane: crate::lane::Lane::start(name),
            finished,
            done,
        }
    }

    /// Runs `f` on the helper's thread.
    fn run(&self, f: impl FnOnce() + Send + 'static) {
        let finished = self.finished.clone();
        self.lane.run(move || {
            // A panic is the work's, handed to whoever joins it.
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
            let _ = finished.send(ran);
        });
    }

    /// Waits for the work [`Helper::run`] handed over: how it ended.
    fn join(&self) -> std::thread::Result<()> {
        self.done.recv().unwrap_or(Ok(()))
    }
}

/// Runs one assigned job: its commit fetched, heartbeats while it runs, its log sent,
/// its report delivered (to whichever server answers), with `then()` (a claim of the
/// next job) when the worker takes another: the job that report's answer hands over.
fn run_task(
    opts: &WorkerOptions,
    servers: &Arc<Servers>,
    a: &Arc<Assignment>,
    around: &Around<'_>,
    then: &dyn Fn() -> Option<Claim>,
) -> Option<Assignment> {
    let keeper = around.keeper;
    // The claim's lease holds from here; the keeper stops the job before it lapses
    // unless a heartbeat renews it.
    let hold = held_for(a);
    tell(keeper, lease::Word::HoldFor(hold));
    say!(
        "runway worker {}: job {} of {} (attempt {}; {})",
        opts.name,
        a.job.number,
        a.job.event.repo,
        a.attempt,
        if a.watched {
            "watched: its first command is sent at once"
        } else {
            "nobody watches: its output is paced from the start"
        }
    );
    let outbox = Arc::new(Outbox::for_job(a.watched));
    outbox.push_ahead(
        format!(
            "runway worker {} ({}) runs job {} (attempt {})\n",
            opts.name,
            labels_text(&opts.labels),
            a.job.number,
            a.attempt
        )
        .as_bytes(),
    );
    let cancel = Cancel::new();
    let lost = Cancel::new();
    let c = cancel.clone();
    let _lost_stops_the_job = lost.on_cancel(move || {
        c.cancel();
    });
    // Drained (SIGTERM) with no server answering, the worker tries its calls about the
    // job only while its lease could still hold: past it, a node counts the job as
    // lost whatever this worker says.
    let renewal = Arc::new(Renewal {
        at: Mutex::new(Instant::now()),
        lease: Duration::from_millis(a.lease_ms),
    });
    let gives_up = |drained: &AtomicBool, renewal: &Renewal| {
        drained.load(Ordering::SeqCst) && renewal.lapsed()
    };
    let give_up = || gives_up(around.drained, &renewal);
    let told = keeper.clone();
    around.beats.begin(Beat {
        servers: servers.clone(),
        task: a.task,
        every: heartbeat(a),
        holds: held_for(a),
        held: Held {
            worker: opts.name.clone(),
            attempt: a.attempt,
        },
        cancel: cancel.clone(),
        lost: lost.clone(),
        keeper: Arc::new(move |word| tell(&told, word)),
        renewal: renewal.clone(),
    });
    let sends = around.sends;
    sends.run({
        let (outbox, servers, a, name) = (
            outbox.clone(),
            servers.clone(),
            a.clone(),
            opts.name.clone(),
        );
        let (cancel, lost) = (cancel.clone(), lost.clone());
        let (drained, renewal) = (around.drained.clone(), renewal.clone());
        move || {
            let give_up = || gives_up(&drained, &renewal);
            outbox.send(&servers, &a, &name, (&lost, &cancel), &give_up)
        }
    });
    let outcome = run_job(opts, servers, a, &outbox, &cancel);
    outbox.close();
    // A sender that panicked sent what it could (as a thread of its own did).
    let _ = sends.join();
    around.beats.end();
    tell(keeper, lease::Word::Idle);
    if lost.is_canceled() {
        say!(
            "runway worker {}: job {} is no longer ours (its lease ran out): stopped",
            opts.name,
            a.job.number
        );
        return None;
    }
    let mut end = End {
        worker: opts.name.clone(),
        attempt: a.attempt,
        report: Report::of(&outcome),
        tail: Some(outbox.tail()),
        next: then(),
    };
    // Said before the report is sent: a report that asks for the next job is answered
    // when one comes (as a claim is), which may be a while.
    say!(
        "runway worker {}: job {} {}",
        opts.name,
        a.job.number,
        outcome.result.as_str()
    );
    let path = format!("/api/worker/tasks/{}/end", a.task);
    let sent = servers.until_done(&give_up, |s| {
        let Some(next) = end.next.as_mut() else {
            return s.post_json(&path, &end);
        };
        s.claim_now(next);
        let sent = s.post_json(&path, &end);
        s.heard(&sent);
        sent
    });
    match sent {
        Ok((_, body)) => {
            return serde_json::from_slice::<Ended>(&body)
                .ok()
                .and_then(|e| e.next);
        }
        Err(_) if give_up() => say!(
            "runway worker {}: no server took job {}'s report before its lease ran out (a node counts it as lost)",
            opts.name,
            a.job.number,
        ),
        Err(e) => say!(
            "runway worker {}: the report was not taken: {e:?}",
            opts.name
        ),
    }
    None
}

/// When a job's lease was last renewed (or claimed).
struct Renewal {
    at: Mutex<Instant>,
    lease: Duration,
}

impl Renewal {
    fn renewed(&self, at: Instant) {
        *self.at.lock().expect("renewal") = at;
    }

    /// Its lease has run out: a node may have taken the job as lost.
    fn lapsed(&self) -> bool {
        self.at.lock().expect("renewal").elapsed() >= self.lease
    }
}

/// How long a lease renewed now is known to hold: the lease less one heartbeat (the
/// job is stopped a heartbeat before any node could take the lease as lapsed, and
/// the renewal's own round trip is inside that).
fn held_for(a: &Assignment) -> Duration {
    let lease = Duration::from_millis(a.lease_ms);
    let beat = heartbeat(a);
    lease.saturating_sub(beat).max(beat)
}

/// Tells the lease keeper `word`; a keeper that is gone is said.
fn tell(keeper: &Mutex<lease::Keeper>, word: lease::Word) {
    let told = keeper.lock().unwrap_or_else(|p| p.into_inner()).tell(word);
    if let Err(e) = told {
        say!(
            "runway worker: the lease keeper is gone ({e}): a frozen worker's job would not be stopped"
        );
    }
}

/// What a job's heartbeat renews and tells.
struct Beat {
    servers: Arc<Servers>,
    /// The task's id.
    task: i64,
    /// How often it is renewed ([`heartbeat`]) and how long a renewal holds
    /// ([`held_for`]).
    every: Duration,
    holds: Duration,
    held: Held,
    cancel: Cancel,
    lost: Cancel,
    /// Tells the lease keeper ([`tell`]).
    keeper: Arc<dyn Fn(lease::Word) + Send + Sync>,
    renewal: Arc<Renewal>,
}

impl Beat {
    /// One renewal: a lost lease (409) or a canceled build stops the job; a renewal
    /// (or a node's 503: its store is down, so no lease can lapse) moves the keeper's
    /// deadline on. False: no more renewals (the lease is lost).
    fn renew(&self) -> bool {
        let path = format!("/api/worker/tasks/{}/beat", self.task);
        let asked = Instant::now();
        let held_from_now = || lease::Word::HoldFor(self.holds.saturating_sub(asked.elapsed()));
        // One try per beat: a server that does not answer is left for the next one.
        match self.servers.renew(&path, &self.held) {
            Ok((_, body)) => {
                // Renewed when asked (or later): it holds from then.
                self.renewal.renewed(asked);
                (self.keeper)(held_from_now());
                if serde_json::from_slice::<BeatAnswer>(&body).is_ok_and(|b| b.cancel) {
                    self.cancel.cancel();
                }
            }
            Err(CallError::Lost) => {
                self.lost.cancel();
                return false;
            }
            Err(CallError::Busy(why)) => {
                // Every node's store is unreachable: no node can take the lease now,
                // and none will until a lease after it is back.
                self.renewal.renewed(asked);
                (self.keeper)(held_from_now());
                say!("runway worker: heartbeat: the server cannot renew now: {why}");
            }
            Err(e) => {
                say!("runway worker: heartbeat: {e:?}");
                self.servers.next();
            }
        }
        true
    }
}

/// The heartbeat of the job a worker runs, on a thread kept for the worker's life: the
/// job's lease is renewed once a heartbeat while it runs, the first a heartbeat after
/// its claim (a short job ends with none). The thread times its own waits (once a
/// heartbeat at most when no job runs), so a job shorter than a heartbeat neither wakes
/// it nor waits for it: handing each job to a thread and taking it back woke two
/// threads a job, ~15 µs of CPU each here.
struct Beats {
    slot: Mutex<BeatSlot>,
    changed: Condvar,
}

struct BeatSlot {
    /// The running job, and when its next renewal is due (none once its lease is lost).
    job: Option<(Arc<Beat>, Option<Instant>)>,
    /// A renewal is under way.
    renewing: bool,
    /// How long the thread waits when no job runs: the shortest heartbeat seen, so
    /// that it wakes before a new job's first renewal is due.
    tick: Duration,
}

impl Beats {
    fn start() -> Arc<Beats> {
        let beats = Arc::new(Beats {
            slot: Mutex::new(BeatSlot {
                job: None,
                renewing: false,
                tick: Duration::from_secs(60),
            }),
            changed: Condvar::new(),
        });
        let on = Arc::downgrade(&beats);
        std::thread::Builder::new()
            .name("runway-beat".into())
            .spawn(move || Beats::run(on))
            .expect("the heartbeat's thread");
        beats
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BeatSlot> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The job `beat` runs from now: its first renewal is due a heartbeat from now.
    fn begin(&self, beat: Beat) {
        let every = beat.every;
        let mut s = self.lock();
        s.job = Some((Arc::new(beat), Some(Instant::now() + every)));
        // The thread may wait a whole tick before it sees the job: a shorter heartbeat
        // wakes it now.
        if every < s.tick {
            s.tick = every;
            self.changed.notify_all();
        }
    }

    /// The job ended: no more renewals; one under way is waited for (it tells the
    /// keeper, which is told the job ended after this).
    fn end(&self) {
        let mut s = self.lock();
        s.job = None;
        while s.renewing {
            s = self.changed.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The thread's body: renews the running job's lease when due, until the worker
    /// lets the heartbeat go (within a tick of it).
    fn run(beats: std::sync::Weak<Beats>) {
        while let Some(beats) = beats.upgrade() {
            beats.turn();
        }
    }

    /// One renewal when one is due; else a wait until one is, or for a tick.
    fn turn(&self) {
        let mut s = self.lock();
        let now = Instant::now();
        let wait = match &s.job {
            Some((beat, Some(due))) if *due <= now => {
                let beat = beat.clone();
                s.renewing = true;
                drop(s);
                // A renewal that panicked (said by the panic hook) leaves the next
                // one due: the thread goes on for this job and the next.
                let renew = std::panic::AssertUnwindSafe(|| beat.renew());
                let more = std::panic::catch_unwind(renew).unwrap_or(true);
                let mut s = self.lock();
                s.renewing = false;
                if let Some((running, due)) = s.job.as_mut()
                    && Arc::ptr_eq(running, &beat)
                {
                    *due = more.then(|| Instant::now() + beat.every);
                }
                self.changed.notify_all();
                return;
            }
            Some((_, Some(due))) => *due - now,
            _ => s.tick,
        };
        let _ = self.changed.wait_timeout(s, wait);
    }
}

/// How often a job's lease is renewed.
fn heartbeat(a: &Assignment) -> Duration {
    Duration::from_millis(a.heartbeat_ms.max(50))
}

/// Fetches the commit and runs the job as the serve node compiled it, through the
/// same job runner as `runway run` (nothing read from `.travis.yml`, nothing planned).
fn run_job(
    opts: &WorkerOptions,
    servers: &Arc<Servers>,
    a: &Assignment,
    outbox: &Arc<Outbox>,
    cancel: &Cancel,
) -> JobOutcome {
    let errored = |why: String| {
        outbox.push(format!("runway worker: {why}\n").as_bytes());
        JobOutcome {
            result: JobResult::Errored,
            reason: why,
            timed_out: false,
            duration: Duration::ZERO,
            substituted: Vec::new(),
        }
    };
    let compiled = match a.job.compiled() {
        Ok(c) => c,
        Err(e) => return errored(format!("the job sent cannot be run: {e}")),
    };
    let repo = match fetch(opts, servers, a, &compiled.event.ref_name()) {
        Ok(p) => p,
        Err(e) => {
            return errored(format!(
                "could not fetch commit {}: {e}",
                compiled.event.commit
            ));
        }
    };
    let out: SharedOut = Arc::new(Mutex::new(Box::new(std::io::sink())));
    let request = Request {
        path: repo,
        settings: a.settings.clone(),
        options: Options {
            deploy: true,
            substitutes: a.substitutes,
            cache_dir: opts.cache_dir.clone(),
            sandbox: opts.sandbox.clone(),
            ..Options::default()
        },
        state_dir: opts.state_dir.clone(),
        controls: Controls {
            cancel: Some(cancel.clone()),
            tap: Some(Arc::new(ChunkTap(outbox.clone()))),
            cache: a.remote_cache.then(|| {
                Arc::new(RemoteCache {
                    servers: servers.clone(),
                    task: a.task,
                    attempt: a.attempt,
                    worker: opts.name.clone(),
                }) as Arc<dyn crate::cache::store::CacheStore>
            }),
            ..Controls::default()
        },
        ..Request::default()
    };
    service::run_compiled(&request, &compiled, &mut Problems { out })
}

/// The build's commit in this worker's copy of the repository (a bare repository
/// under the state directory, gaining each job's pack), `name` (the build's branch or
/// tag) pointing at it. Done in process with libgit2: no `git` process per job.
fn fetch(
    opts: &WorkerOptions,
    servers: &Servers,
    a: &Assignment,
    name: &str,
) -> Result<PathBuf, String> {
    let dir = opts
        .state_dir
        .join("worker-repos")
        .join(format!("{}.git", a.job.event.repo.replace('/', "+")));
    let e = |e: git2::Error| format!("{}: {}", dir.display(), e.message());
    if !dir.join("objects").is_dir() {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        git2::Repository::init_bare(&dir).map_err(e)?;
    }
    // Kept open from one job to the next (`source::Repo`: opening one reads its
    // configuration anew, 2% of a busy worker's time).
    let kept = crate::source::Repo::open(&dir)
        .ok_or_else(|| format!("{}: not a git repository", dir.display()))?;
    let repo = kept.git();
    let commit = git2::Oid::from_str(&a.job.event.commit).map_err(e)?;
    let present = repo.find_commit(commit).is_ok();
    // A clone fetched whole shows the build's reference alone, whatever references
    // this copy holds (`Origin::Commit::only`): a commit already here needs no write.
    // A shallow clone goes through the transport, which reads the references below.
    if present && a.job.git_depth.is_none_or(|d| d <= 0) {
        return Ok(dir);
    }
    // Every ref here: branches and tags (only the build's stays), and the commits
    // fetched before (`refs/runway/have/`), newest first.
    let refs = worker_refs(repo).map_err(e)?;
    if !present {
        // The server leaves out what the commits this copy has bring.
        let have = refs
            .iter()
            .filter(|(name, _)| name.starts_with("refs/runway/have/"))
            .map(|(_, oid)| oid.to_string())
            .take(50)
            .collect::<Vec<_>>()
            .join(",");
        let path = format!(
            "/api/worker/tasks/{}/pack?worker={}&attempt={}&have={have}",
            a.task,
            crate::mask::percent_encode(&opts.name, false, false, false),
            a.attempt
        );
        let (_, pack) = servers
            .until_done(&|| false, |s| s.send(&path, None))
            .map_err(|e| format!("{e:?}"))?;
        let odb = repo.odb().map_err(e)?;
        let mut writer = odb.packwriter().map_err(e)?;
        std::io::Write::write_all(&mut writer, &pack).map_err(|e| e.to_string())?;
        writer.commit().map_err(e)?;
        repo.find_commit(commit)
            .map_err(|_| format!("the server's pack lacks commit {commit}"))?;
    }
    // One transaction: the build's branch (or tag) points at its commit, as on the
    // server, so a job's shallow clone has it; no other branch or tag is left for
    // clones to copy; the commit is remembered for the next pack; the oldest of those
    // go.
    let remembered = format!("refs/runway/have/{commit}");
    let mut tx = repo.transaction().map_err(e)?;
    let mut haves = 0;
    let mut gone = Vec::new();
    for (refname, _) in &refs {
        let stale = if refname.starts_with("refs/runway/have/") {
            haves += 1;
            haves >= 50
        } else {
            refname != name
        };
        if stale && *refname != remembered {
            tx.lock_ref(refname).map_err(e)?;
            gone.push(refname.as_str());
        }
    }
    for refname in gone {
        tx.remove(refname).map_err(e)?;
    }
    for refname in [name, remembered.as_str()] {
        tx.lock_ref(refname).map_err(e)?;
        tx.set_target(refname, commit, None, "runway worker")
            .map_err(e)?;
    }
    tx.commit().map_err(e)?;
    Ok(dir)
}

/// The references of the worker's copy and what they point at, the newest commit first.
fn worker_refs(repo: &git2::Repository) -> Result<Vec<(String, git2::Oid)>, git2::Error> {
    let mut out = Vec::new();
    for r in repo.references()? {
        let r = r?;
        let (Some(name), Some(oid)) = (r.name().ok(), r.target()) else {
            continue;
        };
        let time = repo
            .find_commit(oid)
            .map(|c| c.committer().when().seconds())
            .unwrap_or(i64::MIN);
        out.push((name.to_string(), oid, time));
    }
    out.sort_by_key(|r| std::cmp::Reverse(r.2));
    Ok(out.into_iter().map(|(n, o, _)| (n, o)).collect())
}

/// The server's cache bucket, through presigned URLs asked for per archive.
struct RemoteCache {
    servers: Arc<Servers>,
    task: i64,
    attempt: i64,
    worker: String,
}

impl std::fmt::Debug for RemoteCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "the server's cache bucket (task {})", self.task)
    }
}

impl RemoteCache {
    fn url(
        &self,
        op: crate::protocol::CacheOp,
        branch: &str,
        key: &str,
    ) -> std::io::Result<String> {
        let ask = CacheAsk {
            worker: self.worker.clone(),
            attempt: self.attempt,
            op,
            branch: branch.to_string(),
            key: key.to_string(),
        };
        let path = format!("/api/worker/tasks/{}/cache", self.task);
        let (_, body) = self
            .servers
            .until_done(&|| false, |s| s.post_json(&path, &ask))
            .map_err(|e| std::io::Error::other(format!("the server gave no cache URL: {e:?}")))?;
        serde_json::from_slice::<CacheUrl>(&body)
            .map(|u| u.url)
            .map_err(std::io::Error::other)
    }
}

impl crate::cache::store::CacheStore for RemoteCache {
    fn fetch(
        &self,
        _repo: &str,
        branch: &str,
        key: &str,
        scratch: &Path,
    ) -> std::io::Result<Option<PathBuf>> {
        let url = self.url(crate::protocol::CacheOp::Get, branch, key)?;
        let mut r = self
            .servers
            .agent
            .get(&url)
            .call()
            .map_err(|e| std::io::Error::other(format!("cache download: {e}")))?;
        match r.status().as_u16() {
            404 => return Ok(None),
            200 => {}
            code => {
                return Err(std::io::Error::other(format!(
                    "cache download: HTTP {code}"
                )));
            }
        }
        let path = scratch.join("cache-fetched.tar.zst");
        let mut file = std::fs::File::create(&path)?;
        std::io::copy(&mut r.body_mut().as_reader(), &mut file)?;
        Ok(Some(path))
    }

    fn staging(&self, _repo: &str, _branch: &str, _key: &str, scratch: &Path) -> PathBuf {
        scratch.join("cache-upload.tar.zst")
    }

    fn put(&self, _repo: &str, branch: &str, key: &str, staged: &Path) -> std::io::Result<()> {
        let url = self.url(crate::protocol::CacheOp::Put, branch, key)?;
        let file = std::fs::File::open(staged)?;
        let len = file.metadata()?.len();
        let r = self
            .servers
            .agent
            .put(&url)
            .header("Content-Length", &len.to_string())
            .send(ureq::SendBody::from_reader(&mut std::io::BufReader::new(
                file,
            )))
            .map_err(|e| std::io::Error::other(format!("cache upload: {e}")))?;
        match r.status().as_u16() {
            200..=299 => Ok(()),
            code => Err(std::io::Error::other(format!("cache upload: HTTP {code}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    /// The chunks sealed so far, as text.
    fn sealed(o: &Outbox) -> Vec<String> {
        let s = o.state.lock().unwrap();
        s.sealed
            .iter()
            .map(|(_, b)| String::from_utf8_lossy(b).into_owned())
            .collect()
    }

    fn next(o: &Outbox, at: Instant, last: &mut Option<Instant>) -> Next {
        o.state.lock().unwrap().next(at, last)
    }

    /// A claim says a call that could have handed a job went unanswered from the call
    /// that got no answer until one that did: a refusal or a node that could not reach
    /// its store (which handed nothing) changes nothing.
    #[test]
    fn a_claim_says_whether_a_call_that_could_hand_a_job_went_unanswered() {
        let s = Servers::new(vec!["http://127.0.0.1:9".into()], "t".into());
        let mut c = Claim {
            name: "w".into(),
            labels: Labels::new(),
            wait_ms: 0,
            instance: "i".into(),
            unanswered: false,
        };
        let said = |c: &mut Claim| {
            s.claim_now(c);
            c.unanswered
        };
        assert!(!said(&mut c));
        s.heard::<()>(&Err(CallError::Retry("cut".into())));
        assert!(said(&mut c));
        s.heard::<()>(&Err(CallError::Lost));
        s.heard::<()>(&Err(CallError::Busy("store".into())));
        assert!(said(&mut c), "still unanswered");
        s.heard(&Ok(()));
        assert!(!said(&mut c));
    }

    #[test]
    fn a_jobs_header_goes_with_its_first_command_then_its_output_is_paced() {
        let o = Outbox::default();
        let mut last = None;
        let t0 = Instant::now();
        o.push_ahead(b"runway worker w runs job 1.1\n");
        assert_eq!(
            next(&o, t0, &mut last),
            Next::Wait(None),
            "waits for the job"
        );
        o.push(b"header\n");
        match next(&o, t0, &mut last) {
            Next::Wait(Some(d)) => assert!(d > HEADER_WAIT / 2, "{d:?}"),
            other => panic!("the header waits for the first command: {other:?}"),
        }
        o.push(b"$ make\n");
        o.command_started();
        assert_eq!(next(&o, t0, &mut last), Next::Send);
        assert_eq!(
            sealed(&o),
            ["runway worker w runs job 1.1\nheader\n$ make\n"],
            "one chunk: the worker's line, the header and the command"
        );
        o.state.lock().unwrap().sealed.clear();
        // The command's output: paced.
        o.push(b"out 1\n");
        let soon = t0 + Duration::from_millis(10);
        assert!(matches!(next(&o, soon, &mut last), Next::Wait(Some(_))));
        o.push(b"out 2\n");
        o.command_started();
        assert!(
            matches!(next(&o, soon, &mut last), Next::Wait(Some(_))),
            "a later command is paced like any output"
        );
        assert_eq!(next(&o, t0 + PACE, &mut last), Next::Send);
        assert_eq!(sealed(&o), ["out 1\nout 2\n"]);
        o.state.lock().unwrap().sealed.clear();
        // The end: what is left goes with the report.
        o.push(b"Done.\n");
        o.close();
        assert_eq!(next(&o, t0 + PACE, &mut last), Next::Done);
        let tail = o.tail();
        assert_eq!(tail.seq, 2, "two chunks before the report");
    }

    /// Nobody watching the build, the first command waits a pace like later output:
    /// a job that ends before sends it all with its report.
    #[test]
    fn an_unwatched_jobs_first_command_is_paced_and_a_short_job_sends_one_call() {
        let o = Outbox::for_job(false);
        let mut last = None;
        let t0 = Instant::now();
        o.push_ahead(b"runway worker w runs job 1.1\n");
        o.push(b"$ make\n");
        let before = Instant::now();
        o.command_started();
        match next(&o, before, &mut last) {
            Next::Wait(Some(d)) => assert!(d >= PACE, "{d:?}"),
            other => panic!("the first command waits a pace: {other:?}"),
        }
        assert_eq!(
            next(&o, Instant::now() + PACE, &mut last),
            Next::Send,
            "and goes after it"
        );
        assert_eq!(sealed(&o), ["runway worker w runs job 1.1\n$ make\n"]);
        // A job that ends within its pace: no chunk, everything with the report.
        let o = Outbox::for_job(false);
        o.push_ahead(b"runway worker w runs job 1.2\n");
        o.push(b"$ true\n");
        o.command_started();
        o.close();
        assert_eq!(next(&o, t0, &mut None), Next::Done);
        let tail = o.tail();
        assert_eq!(tail.seq, 0, "no chunk before the report");
        // Watched, the same job's first command goes at once.
        let o = Outbox::for_job(true);
        o.push_ahead(b"runway worker w runs job 1.3\n");
        o.push(b"$ true\n");
        o.command_started();
        assert_eq!(next(&o, t0, &mut None), Next::Send);
    }

    /// A job's heartbeat: none for a job that ends within its heartbeat; one each
    /// heartbeat for a longer one, each telling the keeper the lease holds on; and the
    /// job's end waits for a renewal under way (the keeper is told the job ended after
    /// it, not before). The node is a loopback server that holds its third answer until
    /// the test lets it go.
    #[test]
    fn beats_renew_a_running_job_each_heartbeat_and_its_end_waits_for_one_under_way() {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let (heard, beats_heard) = std::sync::mpsc::channel::<()>();
        let (release, released) = std::sync::mpsc::channel::<()>();
        std::thread::spawn(move || {
            for (n, stream) in listener.incoming().enumerate() {
                let Ok(mut stream) = stream else { return };
                // The request: its head, then as much body as it says.
                let mut got = Vec::new();
                let mut buf = [0u8; 4096];
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(k) => got.extend_from_slice(&buf[..k]),
                    }
                }
                assert!(String::from_utf8_lossy(&got).starts_with("POST /api/worker/tasks/7/beat"));
                let _ = heard.send(());
                if n == 2 {
                    let _ = released.recv();
                }
                let _ = stream.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\n{}",
                );
            }
        });
        let servers = Arc::new(Servers::new(
            vec![format!("http://127.0.0.1:{port}")],
            "t".into(),
        ));
        let told = Arc::new(Mutex::new(Vec::new()));
        let job = |every: Duration| {
            let told = told.clone();
            Beat {
                servers: servers.clone(),
                task: 7,
                every,
                holds: Duration::from_secs(5),
                held: Held {
                    worker: "w".into(),
                    attempt: 1,
                },
                cancel: Cancel::new(),
                lost: Cancel::new(),
                keeper: Arc::new(move |w| told.lock().unwrap().push(w)),
                renewal: Arc::new(Renewal {
                    at: Mutex::new(Instant::now()),
                    lease: Duration::from_secs(6),
                }),
            }
        };
        let beats = Beats::start();
        // A job that ends within its heartbeat: no call.
        beats.begin(job(Duration::from_secs(600)));
        beats.end();
        assert!(
            beats_heard.try_recv().is_err(),
            "a short job is not renewed"
        );
        // A longer one: renewed each heartbeat, each renewal told to the keeper.
        beats.begin(job(Duration::from_millis(50)));
        for _ in 0..3 {
            beats_heard.recv_timeout(Duration::from_secs(30)).unwrap();
        }
        // The third renewal waits for its answer: the job's end waits for it.
        let (ended, end_seen) = std::sync::mpsc::channel();
        let ending = beats.clone();
        std::thread::spawn(move || {
            ending.end();
            let _ = ended.send(());
        });
        assert!(
            end_seen.recv_timeout(Duration::from_millis(300)).is_err(),
            "the end waits for the renewal under way"
        );
        assert_eq!(told.lock().unwrap().len(), 2, "two renewals told so far");
        release.send(()).unwrap();
        end_seen.recv_timeout(Duration::from_secs(30)).unwrap();
        let words = told.lock().unwrap().clone();
        assert_eq!(
            words.len(),
            3,
            "the third renewal told before the end: {words:?}"
        );
        assert!(words.iter().all(|w| matches!(w, lease::Word::HoldFor(_))));
        assert!(beats_heard.try_recv().is_err(), "none after the end");
    }

    /// A helper runs each piece of work on its one thread, and a piece that panics is
    /// handed to its joiner without ending the thread.
    #[test]
    fn a_helper_runs_each_job_on_its_one_thread_and_outlives_a_panic() {
        let h = Helper::start("test-helper");
        let (tx, rx) = std::sync::mpsc::channel();
        for _ in 0..3 {
            let tx = tx.clone();
            h.run(move || tx.send(std::thread::current().id()).unwrap());
            assert!(h.join().is_ok());
        }
        let ids: Vec<_> = rx.try_iter().collect();
        assert_eq!(ids.len(), 3);
        assert!(ids.iter().all(|id| *id == ids[0]), "one thread: {ids:?}");
        assert_ne!(ids[0], std::thread::current().id());
        h.run(|| panic!("a job's helper work failed"));
        assert!(h.join().is_err(), "the panic goes to the joiner");
        h.run(move || tx.send(std::thread::current().id()).unwrap());
        assert!(h.join().is_ok());
        assert_eq!(rx.recv().unwrap(), ids[0], "the same thread goes on");
    }

    /// A push wakes the sender only when it waits with no deadline or a chunk is
    /// full: a job printing line by line while the sender waits out its pace (or
    /// sends) wakes it no more.
    #[test]
    fn a_push_wakes_the_sender_only_when_that_changes_what_it_does() {
        let o = Outbox::default();
        let wakes = |o: &Outbox| o.state.lock().unwrap().wakes_sender();
        o.push_ahead(b"worker line\n");
        o.state.lock().unwrap().idle = true;
        o.push(b"header\n");
        assert!(
            wakes(&o),
            "an idle sender is woken (the header's wait starts)"
        );
        o.state.lock().unwrap().idle = false;
        for _ in 0..100 {
            o.push(b"a line\n");
        }
        assert!(!wakes(&o), "a sender waiting out a deadline is not");
        o.push(&vec![b'x'; CHUNK_BYTES]);
        assert!(wakes(&o), "a full chunk wakes it");
    }

    #[test]
    fn a_long_checkouts_header_is_shown_and_the_first_command_goes_at_once() {
        let o = Outbox::default();
        let mut last = None;
        let t0 = Instant::now();
        o.push_ahead(b"worker line\n");
        o.push(b"header\n");
        let late = t0 + HEADER_WAIT + Duration::from_millis(1);
        assert_eq!(
            next(&o, late, &mut last),
            Next::Send,
            "shown after HEADER_WAIT"
        );
        assert_eq!(sealed(&o), ["worker line\nheader\n"]);
        o.state.lock().unwrap().sealed.clear();
        o.push(b"$ make\n");
        o.command_started();
        assert_eq!(
            next(&o, late + Duration::from_millis(1), &mut last),
            Next::Send,
            "the first command is not paced"
        );
        assert_eq!(sealed(&o), ["$ make\n"]);
    }

    #[test]
    fn a_job_that_ends_before_any_command_sends_everything_with_its_report() {
        let o = Outbox::default();
        let mut last = None;
        o.push_ahead(b"worker line\n");
        o.push(b"runway: the checkout failed\n");
        o.close();
        assert_eq!(next(&o, Instant::now(), &mut last), Next::Done);
        let tail = o.tail();
        assert_eq!(tail.seq, 0);
    }

    #[test]
    fn a_report_after_chunks_that_carried_everything_counts_them_in_an_empty_tail() {
        // The node logs how many calls brought a job's log from the tail's number:
        // a job whose last output went paced, before it ended, still says it.
        let o = Outbox::default();
        let mut last = None;
        let t0 = Instant::now();
        o.push(b"$ make\n");
        o.command_started();
        assert_eq!(next(&o, t0, &mut last), Next::Send);
        o.state.lock().unwrap().sealed.clear();
        o.push(b"out\n");
        assert_eq!(next(&o, t0 + PACE, &mut last), Next::Send);
        o.state.lock().unwrap().sealed.clear();
        o.close();
        assert_eq!(next(&o, t0 + PACE, &mut last), Next::Done);
        let tail = o.tail();
        assert_eq!((tail.seq, tail.bytes.as_str()), (2, ""));
    }
}
