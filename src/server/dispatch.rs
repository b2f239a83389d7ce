//! Jobs on workers, seen from the serve node that follows their build: each job
//! becomes a task in the store ([`crate::store::tasks`]), is taken by a `runway worker`
//! whose labels match, and its log arrives chunk by chunk (from whichever node the
//! worker reached) into the build's live log and its record. The thread following a
//! job sleeps until one of its build's tasks changes ([`Signals`], woken by this
//! node's handlers and by the other nodes' `NOTIFY`), or until the worker's lease is
//! due: a worker that stopped answering is found within its lease, not by polling.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::AppState;
use crate::build::{CompiledJob, JobExecutor};
use crate::job::log::Log;
use crate::job::{JobOutcome, JobResult};
use crate::plan::JobPlan;
use crate::protocol::Report;
use crate::runway_toml::LostJob;
use crate::store::tasks::{self, Labels, TaskRow};
use crate::store::{BuildRow, Status};

/// A counter a thread can sleep on until it moves, with what this node's handlers
/// told of each task as they moved it ([`News`]): a follower that is told everything
/// that changed need not read the store to know it.
#[derive(Default)]
pub(super) struct Signal {
    moves: Mutex<Moves>,
    moved: Condvar,
}

#[derive(Default)]
struct Moves {
    /// Every move.
    count: u64,
    /// The moves that told nothing (another node's change, a cancel, a revocation):
    /// whoever follows a task here reads it again.
    untold: u64,
    /// What the moves told, per task, not yet taken by its follower.
    news: HashMap<i64, Vec<News>>,
}

/// What a handler on this node did to a task, as committed.
#[derive(Debug, PartialEq)]
pub(super) enum News {
    /// The task's row after the change.
    Row(TaskRow),
    /// A chunk of its log: attempt, number, bytes.
    Chunk(i64, i64, Vec<u8>),
}

/// What a follower takes from its signal: where the counter is, how many moves told
/// nothing, and the news of its task.
struct Taken {
    count: u64,
    untold: u64,
    news: Vec<News>,
}

impl Signal {
    fn lock(&self) -> std::sync::MutexGuard<'_, Moves> {
        self.moves.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where the counter is now, and how many moves told nothing.
    fn now(&self) -> (u64, u64) {
        let m = self.lock();
        (m.count, m.untold)
    }

    /// Moves it, telling nothing: every sleeper wakes and reads.
    pub(super) fn bump(&self) {
        let mut m = self.lock();
        m.count += 1;
        m.untold += 1;
        self.moved.notify_all();
    }

    /// Moves it with `news` of task `task`: every sleeper wakes.
    fn tell(&self, task: i64, news: Vec<News>) {
        let mut m = self.lock();
        m.count += 1;
        m.news.entry(task).or_default().extend(news);
        self.moved.notify_all();
    }

    /// Keeps `news` of task `task` for its follower's next wake, without waking it:
    /// what it does not need at once.
    fn note(&self, task: i64, news: Vec<News>) {
        self.lock().news.entry(task).or_default().extend(news);
    }

    /// The counter, the untold moves, and the news of `task` (taken).
    fn take(&self, task: i64) -> Taken {
        let mut m = self.lock();
        Taken {
            count: m.count,
            untold: m.untold,
            news: m.news.remove(&task).unwrap_or_default(),
        }
    }

    /// Where the counter is now, for a reader of every task at the store: the news
    /// told so far is dropped (what it told is there).
    fn read_all(&self) -> u64 {
        let mut m = self.lock();
        m.news.clear();
        m.count
    }

    /// Sleeps until the counter moves past `seen`, or `timeout`.
    fn wait(&self, seen: u64, timeout: Duration) {
        let m = self.lock();
        let _ = self
            .moved
            .wait_timeout_while(m, timeout, |m| m.count == seen)
            .unwrap_or_else(|p| p.into_inner());
    }
}

/// One [`Signal`] per build whose jobs this node follows.
#[derive(Default)]
pub(super) struct Signals(Mutex<HashMap<i64, Arc<Signal>>>);

impl Signals {
    /// The signal of build `id` (made on first use).
    pub(super) fn of(&self, id: i64) -> Arc<Signal> {
        self.0
            .lock()
            .expect("signals")
            .entry(id)
            .or_default()
            .clone()
    }

    /// Wakes whoever follows any build's jobs here.
    pub(super) fn bump_all(&self) {
        for s in self.0.lock().expect("signals").values() {
            s.bump();
        }
    }

    /// Wakes whoever follows build `id`'s jobs here.
    pub(super) fn bump(&self, id: i64) {
        if let Some(s) = self.0.lock().expect("signals").get(&id) {
            s.bump();
        }
    }

    /// Wakes whoever follows task `t`'s build here, with what was done to it.
    pub(super) fn tell(&self, t: &TaskRow, news: Vec<News>) {
        if let Some(s) = self.0.lock().expect("signals").get(&t.build_id) {
            s.tell(t.id, news);
        }
    }

    /// Keeps what was done to task `t` for whoever follows its build here, without
    /// waking it: a claim (the follower waits no longer than a lease while its task is
    /// queued, so it learns of the claim before that claim's lease can lapse).
    pub(super) fn note(&self, t: &TaskRow, news: Vec<News>) {
        if let Some(s) = self.0.lock().expect("signals").get(&t.build_id) {
            s.note(t.id, news);
        }
    }

    /// Build `id` ended here.
    pub(super) fn remove(&self, id: i64) {
        self.0.lock().expect("signals").remove(&id);
    }
}

/// What a job needs of a worker: its `os` and `arch`.
pub(super) fn needs(job: &JobPlan) -> Labels {
    let (os, arch) = crate::runtime::platform::wanted(&job.matrix);
    Labels::from([("os".to_string(), os), ("arch".to_string(), arch)])
}

/// Runs a build's jobs on workers.
pub(super) struct Dispatcher {
    pub(super) state: Arc<AppState>,
    pub(super) build_id: i64,
    pub(super) cancel: crate::cancel::Cancel,
    /// What the build's repository asks of the workers it trusts with its jobs
    /// ([`asked_of_workers`]), besides each job's own needs.
    pub(super) asked: Labels,
}

/// What `repo` asks of the workers that run a build's jobs: a fork's pull request
/// goes to the workers kept for strangers' code (when it names some), every other
/// build to those its repository trusts with its settings.
pub(super) fn asked_of_workers(repo: &crate::runway_toml::RepoConfig, row: &BuildRow) -> Labels {
    let fork = row.pull_request.as_ref().is_some_and(|p| p.fork);
    if fork && !repo.fork_worker_labels.is_empty() {
        repo.fork_worker_labels.clone()
    } else {
        repo.worker_labels.clone()
    }
}

impl JobExecutor for Dispatcher {
    fn run(&self, compiled: &CompiledJob, log: &mut Log) -> JobOutcome {
        let job = &compiled.job;
        let started = Instant::now();
        let ended = |result, reason: String| JobOutcome {
            result,
            reason,
            timed_out: false,
            duration: started.elapsed(),
            substituted: Vec::new(),
        };
        let mut needs = needs(job);
        needs.extend(self.asked.clone());
        // The job as planned here is what the worker runs: it does not plan again.
        let spec =
            serde_json::to_string(&crate::protocol::job::Job::of(compiled)).unwrap_or_default();
        // Taken before the task is opened: a claim of it moves the signal past this.
        let signal = self.state.signals.of(self.build_id);
        let (mut seen, mut untold) = signal.now();
        let opened = self
            .state
            .db(|s| s.open_task(self.build_id, &job.number, &needs, &spec));
        let task = match opened {
            Ok(t) => t,
            Err(e) => {
                log.line(&format!(
                    "runway: the job could not be queued for a worker: {e}"
                ));
                return ended(JobResult::Errored, format!("not queued: {e}"));
            }
        };
        // A claim this node holds open for a worker that can run it takes it now.
        let handed = self.state.waiting.queued(&task.needs);
        let wake = signal.clone();
        let _woken_by_cancel = self.cancel.on_cancel(move || wake.bump());
        let mut follow = Following {
            attempt: task.attempt,
            seq: 0,
            said: Said::Nothing,
            cancel_sent: None,
            handed: handed.then_some(task.attempt),
        };
        // The task as last read or told. One queued (just now, or again) has no chunk
        // of its attempt yet: the row the store gave is what a read would bring, and
        // the first turn reads nothing.
        let mut known = (task.state == Status::Queued).then(|| task.clone());
        let mut told = known.clone().map(|t| (t, Vec::new()));
        loop {
            let now = if let Some((t, chunks)) = told.take() {
                self.read_chunks(&t, chunks, job, &mut follow, log);
                t
            } else {
                // What was told is in the store too, and is left told: a chunk read
                // past a gap here goes with the news of the one missing when it comes.
                (seen, untold) = signal.now();
                // The task and the chunks that arrived, in one turn at the store (the
                // current attempt's, from the first when it is a new one). While the task
                // runs, up to the first gap (a missing chunk may still come); once it has
                // ended, every one from there on, gaps and all: nothing more will come.
                let read = self.state.db(|s| {
                    let Some(t) = s.task(task.id)? else {
                        return Ok(None);
                    };
                    let from = if t.attempt == follow.attempt {
                        follow.seq
                    } else {
                        0
                    };
                    let chunks = if t.state.is_active() {
                        (from..).zip(s.chunks(t.id, t.attempt, from)?).collect()
                    } else {
                        s.chunks_from(t.id, t.attempt, from)?
                    };
                    Ok(Some((t, chunks)))
                });
                match read {
                    Ok(Some((t, chunks))) => {
                        self.read_chunks(&t, chunks, job, &mut follow, log);
                        t
                    }
                    Ok(None) => return ended(JobResult::Errored, "its task was removed".into()),
                    Err(e) => {
                        log.line(&format!("runway: the build store failed: {e}"));
                        signal.wait(seen, Duration::from_secs(1));
                        continue;
                    }
                }
            };
            known = Some(now.clone());
            if let Some((outcome, from_worker)) = self.ended(&now, started) {
                if !from_worker {
                    log.line(&format!(
                        "Job {} {}: {}",
                        job.number,
                        outcome.result.as_str(),
                        outcome.reason
                    ));
                }
                return outcome;
            }
            self.say(&now, job, &mut follow, log);
            if self.cancel.is_canceled() && follow.cancel_sent.is_none() {
                let _ = self
                    .state
                    .db(|s| s.cancel_tasks(self.build_id, "the build was canceled"));
                follow.cancel_sent = Some(Instant::now());
                continue;
            }
            let wait = match now.state {
                Status::Running => match running(
                    follow.cancel_sent.map(|sent| sent.elapsed()),
                    self.cancel_ack(),
                    now.lease_until - tasks::now_ms(),
                ) {
                    Running::Unanswered => {
                        self.unanswered_cancel(&now);
                        continue;
                    }
                    Running::Lost => {
                        self.lost(&now);
                        continue;
                    }
                    Running::Wait(wait) => wait,
                },
                // A claim does not wake this follower (`Signals::note`): it learns of
                // it within a lease, before the claim's lease can lapse.
                _ => Duration::from_millis(self.state.cfg.worker_lease_ms).min(QUEUED_WAIT),
            };
            signal.wait(seen, wait);
            // What this node's handlers told of the task since, when that is all that
            // changed: no read at the store. (What this follower changed itself, a
            // cancel or a lease taken back, is read: it goes round again above.)
            let taken = signal.take(task.id);
            seen = taken.count;
            let quiet = taken.untold == untold;
            untold = taken.untold;
            told = known
                .as_ref()
                .filter(|_| quiet)
                .and_then(|last| from_news(last, follow.attempt, follow.seq, taken.news));
        }
    }
}

/// What a follower does about its running task.
#[derive(Debug, PartialEq)]
enum Running {
    /// Its worker, told to stop the job, has not answered in time: the job ends
    /// canceled here.
    Unanswered,
    /// Its worker's lease ran out.
    Lost,
    /// Waits this long (or until woken).
    Wait(Duration),
}

/// What a follower does about a running task whose lease has `left_ms` to run, its
/// worker told to stop the job `canceled` ago (`None`: not told). A worker told so
/// says it within a heartbeat (its next beat or chunk carries the cancel) and a moment
/// to report; one that has not within `ack` is not waited for until its lease lapses
/// (it learns the job is no longer its own at its next call).
fn running(canceled: Option<Duration>, ack: Duration, left_ms: i64) -> Running {
    let unanswered = canceled.map(|since| ack.saturating_sub(since));
    if unanswered.is_some_and(|left| left.is_zero()) {
        return Running::Unanswered;
    }
    if left_ms < 0 {
        return Running::Lost;
    }
    let lease = Duration::from_millis(left_ms as u64 + 50);
    Running::Wait(unanswered.map_or(lease, |ack| lease.min(ack)))
}

/// The longest a follower sleeps while its task is queued (or claimed unbeknown to it)
/// when the lease is longer.
const QUEUED_WAIT: Duration = Duration::from_secs(30);

/// A log's chunks, each with its number.
type Numbered = Vec<(i64, Vec<u8>)>;

/// What a follower knows of its task from `news` alone, having known `last`, and read
/// attempt `attempt`'s chunks up to `from`: the task's row and the chunks from `from`
/// on. `None` when the news does not tell all, and the store is read: no news, a new
/// attempt, or a chunk missing (told late, or stored through another node).
fn from_news(
    last: &TaskRow,
    attempt: i64,
    from: i64,
    news: Vec<News>,
) -> Option<(TaskRow, Numbered)> {
    if news.is_empty() {
        return None;
    }
    // Rows told out of their order: the later state wins (a claim before its end).
    let rank = |t: &TaskRow| {
        let state = match t.state {
            Status::Queued | Status::Awaiting => 0,
            Status::Running => 1,
            _ => 2,
        };
        (t.attempt, state)
    };
    let mut row = last.clone();
    let mut chunks = Vec::new();
    for n in news {
        match n {
            News::Row(t) if rank(&t) >= rank(&row) => row = t,
            News::Row(_) => {}
            News::Chunk(a, seq, bytes) => chunks.push((a, seq, bytes)),
        }
    }
    if row.attempt != attempt {
        return None;
    }
    let mut chunks: Numbered = chunks
        .into_iter()
        .filter(|(a, seq, _)| *a == attempt && *seq >= from)
        .map(|(_, seq, bytes)| (seq, bytes))
        .collect();
    chunks.sort_by_key(|(seq, _)| *seq);
    chunks.dedup_by_key(|(seq, _)| *seq);
    let whole = chunks
        .iter()
        .zip(from..)
        .all(|((seq, _), want)| *seq == want);
    whole.then_some((row, chunks))
}

/// One piece of a job's log, from the chunks its worker sent.
#[derive(Debug, PartialEq)]
enum Piece {
    /// A line saying which chunks never arrived.
    Missing(String),
    /// A chunk's bytes, as the job printed them.
    Output(Vec<u8>),
}

/// What the log of job `job` shows of `chunks` (numbered, in order), read from chunk
/// `from` on: each chunk's bytes, and before one that came after a gap, a line that
/// says which are missing. With the number of the chunk to read next.
fn chunk_pieces(job: &str, from: i64, chunks: Numbered) -> (Vec<Piece>, i64) {
    let mut next = from;
    let mut out = Vec::new();
    for (seq, bytes) in chunks {
        if seq > next {
            let which = if seq - next > 1 {
                format!("s {} to {}", next, seq - 1)
            } else {
                format!(" {next}")
            };
            out.push(Piece::Missing(format!(
                "runway: the log of job {job} is missing what its worker sent as chunk{which}; what it sent after is shown"
            )));
        }
        out.push(Piece::Output(bytes));
        next = seq + 1;
    }
    (out, next)
}

/// Where the following of one job is.
struct Following {
    attempt: i64,
    seq: i64,
    said: Said,
    /// When this follower asked the job's worker to stop it (the build canceled).
    cancel_sent: Option<Instant>,
    /// The attempt a claim waiting on this node was woken for when it was queued: a
    /// worker that can run it is there.
    handed: Option<i64>,
}

/// What the log last said about where the job is.
#[derive(PartialEq)]
enum Said {
    Nothing,
    Waiting,
    RunsOn(String, i64),
}

impl Dispatcher {
    /// The chunks that arrived (`chunks`, numbered, read for `t`'s attempt from where
    /// this following is in it), into the log (a new attempt starts its own, said).
    /// Chunks after one that never arrived (read once the task has ended) are shown
    /// after a line that says which are missing, rather than dropped.
    fn read_chunks(
        &self,
        t: &TaskRow,
        chunks: Numbered,
        job: &JobPlan,
        f: &mut Following,
        log: &mut Log,
    ) {
        if t.attempt != f.attempt {
            let who = match &f.said {
                Said::RunsOn(w, _) => w.as_str(),
                _ => "?",
            };
            log.line(&format!(
                "runway: worker {who} stopped answering; job {} runs again (attempt {})",
                job.number, t.attempt
            ));
            f.attempt = t.attempt;
            f.seq = 0;
        }
        let (pieces, next) = chunk_pieces(&job.number, f.seq, chunks);
        for piece in pieces {
            match piece {
                Piece::Missing(line) => {
                    log.line("");
                    log.line(&line);
                }
                Piece::Output(bytes) => log.output(&bytes),
            }
        }
        f.seq = next;
    }

    /// The outcome of an ended task, and whether its worker reported it.
    fn ended(&self, t: &TaskRow, started: Instant) -> Option<(JobOutcome, bool)> {
        let result = match t.state {
            Status::Queued | Status::Awaiting | Status::Running => return None,
            Status::Passed => JobResult::Passed,
            Status::Failed => JobResult::Failed,
            Status::Errored => JobResult::Errored,
            Status::Canceled => JobResult::Canceled,
        };
        let text = t.outcome.clone().unwrap_or_default();
        Some(match serde_json::from_str::<Report>(&text) {
            Ok(r) => (r.outcome(), true),
            Err(_) => (
                JobOutcome {
                    result,
                    reason: text,
                    timed_out: false,
                    duration: started.elapsed(),
                    substituted: Vec::new(),
                },
                false,
            ),
        })
    }

    /// Says in the log where the job is: waiting (and for what), or on which worker.
    fn say(&self, t: &TaskRow, job: &JobPlan, f: &mut Following, log: &mut Log) {
        match (&t.state, &t.worker) {
            (Status::Queued, _) if f.said != Said::Waiting => {
                let want = tasks::labels_text(&t.needs);
                // Without a claim woken for it, the workers that claimed here lately,
                // else those seen lately at the store (they may be another node's).
                let lately = Duration::from_millis(self.state.cfg.worker_lease_ms * 3);
                let can = f.handed == Some(t.attempt)
                    || self.state.waiting.claimed_within(&t.needs, lately)
                    || self
                        .state
                        .db(|s| s.workers())
                        .unwrap_or_default()
                        .iter()
                        .any(|w| {
                            tasks::matches(&w.labels, &t.needs)
                                && tasks::now_ms() - w.seen_at < lately.as_millis() as i64
                        });
                log.line(&if can {
                    format!("runway: job {} is queued for a worker with {want}", job.number)
                } else {
                    format!(
                        "runway: job {} is waiting for a worker with {want} (none is connected: start `runway worker --label …` on a machine that has it)",
                        job.number
                    )
                });
                f.said = Said::Waiting;
            }
            (Status::Running, Some(w)) if f.said != Said::RunsOn(w.clone(), t.attempt) => {
                f.said = Said::RunsOn(w.clone(), t.attempt);
            }
            _ => {}
        }
    }

    /// How long a worker told to stop its job is waited for: a heartbeat (its next
    /// beat carries the cancel), and as long again and a second for its job to be
    /// killed and its report to come.
    fn cancel_ack(&self) -> Duration {
        Duration::from_millis(self.state.cfg.worker_heartbeat_ms * 2 + 1000)
    }

    /// A worker told to stop job `t` has not reported within [`Self::cancel_ack`] (or
    /// its lease ran out first): the job ends canceled here. It never runs again,
    /// whatever `lost_job` says, and the worker's later calls about it are refused.
    fn unanswered_cancel(&self, t: &TaskRow) {
        let who = t.worker.as_deref().unwrap_or("?");
        let why = format!(
            "worker {who} was told to stop the job and had not answered within {} ms",
            self.cancel_ack().as_millis()
        );
        if let Ok(true) = self.state.db(|s| s.cancel_running(t.id, t.attempt, &why)) {
            tracing::warn!(worker = who, job = %t.number, "a canceled job's worker did not answer: ended here");
        }
    }

    /// The worker's lease ran out: the job is errored or queued again (ended canceled
    /// when its build was canceled).
    fn lost(&self, t: &TaskRow) {
        if t.cancel || self.cancel.is_canceled() {
            return self.unanswered_cancel(t);
        }
        let who = t.worker.as_deref().unwrap_or("?");
        let why = format!(
            "worker {who} stopped answering (no heartbeat for {} ms)",
            self.state.cfg.worker_lease_ms
        );
        // A store that was unreachable renewed no lease: its workers get a lease's
        // time to beat again before any is taken as gone.
        let lease = Duration::from_millis(self.state.cfg.worker_lease_ms);
        if crate::store::postgres::settling(lease) {
            return;
        }
        let retry = self.state.cfg.lost_job == LostJob::Retry;
        if let Ok(true) = self
            .state
            .db(|s| s.expire_task(t.id, tasks::now_ms(), &why, retry))
        {
            let repo = self
                .state
                .db(|s| s.by_id(t.build_id))
                .ok()
                .flatten()
                .map(|b| b.repo)
                .unwrap_or_default();
            tracing::warn!(worker = who, %repo, job = %t.number, retry, "worker stopped answering");
            self.state.waiting.queued(&t.needs);
        }
    }
}

/// A page on this node follows a build another node follows: its jobs' logs, as the
/// workers send them (to any node), into a live log here, until the build ends.
pub(super) fn mirror(state: Arc<AppState>, build_id: i64) {
    let Some(live) = state.live.start_unless_there(build_id) else {
        return;
    };
    std::thread::spawn(move || {
        use crate::build::JobTap;
        let signal = state.signals.of(build_id);
        // Per task: (attempt, next chunk, ended).
        let mut at: HashMap<i64, (i64, i64, bool)> = HashMap::new();
        loop {
            let seen = signal.read_all();
            let active = state
                .db(|s| s.by_id(build_id))
                .ok()
                .flatten()
                .is_some_and(|b| b.state.is_active());
            for t in state.db(|s| s.tasks_of(build_id)).unwrap_or_default() {
                let (attempt, seq, ended) = at.entry(t.id).or_insert((t.attempt, 0, false));
                if *ended {
                    continue;
                }
                if t.attempt != *attempt {
                    (*attempt, *seq) = (t.attempt, 0);
                }
                let chunks = state
                    .db(|s| s.chunks(t.id, *attempt, *seq))
                    .unwrap_or_default();
                for c in chunks {
                    live.write(&t.number, &c);
                    *seq += 1;
                }
                let result = match t.state {
                    Status::Passed => Some(JobResult::Passed),
                    Status::Failed => Some(JobResult::Failed),
                    Status::Errored => Some(JobResult::Errored),
                    Status::Canceled => Some(JobResult::Canceled),
                    Status::Queued | Status::Awaiting | Status::Running => None,
                };
                if let Some(r) = result {
                    live.end(&t.number, r);
                    *ended = true;
                }
            }
            if !active {
                break;
            }
            signal.wait(seen, Duration::from_secs(30));
        }
        live.finish();
        state.live.remove_if(build_id, &live);
        if state.live.get(build_id).is_none() {
            state.signals.remove(build_id);
        }
    });
}

#[cfg(test)]
mod tests {
    use super::{News, Piece, Running, Signal, chunk_pieces, from_news, running};
    use crate::store::Status;
    use crate::store::tasks::{Labels, TaskRow};
    use std::time::Duration;

    #[test]
    fn a_running_task_is_waited_for_until_its_lease_or_a_canceled_jobs_answer_is_due() {
        let ms = Duration::from_millis;
        let ack = ms(1600);
        // Not canceled: the lease's time, and a margin.
        assert_eq!(running(None, ack, 120_000), Running::Wait(ms(120_050)));
        assert_eq!(running(None, ack, -1), Running::Lost);
        // Canceled 100 ms ago: no longer than the answer is due, however long the lease.
        assert_eq!(
            running(Some(ms(100)), ack, 120_000),
            Running::Wait(ms(1500))
        );
        assert_eq!(running(Some(ms(100)), ack, 200), Running::Wait(ms(250)));
        // The answer is due: ended here, whatever is left of the lease.
        assert_eq!(running(Some(ack), ack, 120_000), Running::Unanswered);
        assert_eq!(running(Some(ms(5000)), ack, -1), Running::Unanswered);
        // The lease ran out first.
        assert_eq!(running(Some(ms(100)), ack, -1), Running::Lost);
    }

    fn row(attempt: i64, state: Status) -> TaskRow {
        TaskRow {
            id: 7,
            build_id: 3,
            number: "3.1".into(),
            needs: Labels::new(),
            state,
            attempt,
            worker: (state != Status::Queued).then(|| "w".into()),
            lease_until: 0,
            cancel: false,
            outcome: (!state.is_active()).then(|| "{}".into()),
            secret: None,
        }
    }

    fn chunk(attempt: i64, seq: i64, b: &str) -> News {
        News::Chunk(attempt, seq, b.as_bytes().to_vec())
    }

    /// What the handlers here told of a task is all the follower needs while it tells
    /// every change in order: the row at its latest state and the chunks that follow
    /// the ones read. Anything it cannot vouch for is read at the store instead.
    #[test]
    fn a_follower_told_every_change_reads_nothing_and_one_told_part_reads_the_store() {
        let running = row(1, Status::Running);
        let c = |seq: i64, b: &str| (seq, b.as_bytes().to_vec());
        // Claimed, then a chunk, then the end with its tail.
        assert_eq!(
            from_news(
                &row(1, Status::Queued),
                1,
                0,
                vec![News::Row(running.clone())]
            ),
            Some((running.clone(), vec![]))
        );
        assert_eq!(
            from_news(
                &running,
                1,
                0,
                vec![News::Row(running.clone()), chunk(1, 0, "a")]
            ),
            Some((running.clone(), vec![c(0, "a")]))
        );
        let passed = row(1, Status::Passed);
        assert_eq!(
            from_news(
                &running,
                1,
                1,
                vec![chunk(1, 1, "b"), News::Row(passed.clone())]
            ),
            Some((passed.clone(), vec![c(1, "b")]))
        );
        // Told out of order: the end is not undone by the claim told after it, and
        // the chunks go in their order, each once.
        assert_eq!(
            from_news(
                &row(1, Status::Queued),
                1,
                0,
                vec![
                    News::Row(passed.clone()),
                    chunk(1, 1, "b"),
                    News::Row(running.clone()),
                    chunk(1, 0, "a"),
                    chunk(1, 1, "b"),
                ]
            ),
            Some((passed.clone(), vec![c(0, "a"), c(1, "b")]))
        );
        // What was read already, and another attempt's chunks, are left out.
        assert_eq!(
            from_news(&running, 1, 1, vec![chunk(1, 0, "a"), chunk(2, 1, "x")]),
            Some((running.clone(), vec![]))
        );
        // Read at the store: nothing told (a wake for another task, a lease due),
        // a chunk missing, a new attempt.
        assert_eq!(from_news(&running, 1, 0, vec![]), None);
        assert_eq!(from_news(&running, 1, 0, vec![chunk(1, 1, "b")]), None);
        assert_eq!(
            from_news(&running, 1, 0, vec![News::Row(row(2, Status::Queued))]),
            None
        );
    }

    /// A follower takes its own task's news only; a move that told nothing counts.
    #[test]
    fn each_follower_takes_its_own_tasks_news() {
        let s = Signal::default();
        let (count, untold) = s.now();
        s.tell(7, vec![chunk(1, 0, "a")]);
        s.tell(8, vec![chunk(1, 0, "b")]);
        let mine = s.take(7);
        assert_eq!((mine.count, mine.untold), (count + 2, untold));
        assert_eq!(mine.news, vec![chunk(1, 0, "a")]);
        assert_eq!(s.take(7).news, vec![], "taken once");
        s.bump();
        let theirs = s.take(8);
        assert_eq!((theirs.count, theirs.untold), (count + 3, untold + 1));
        assert_eq!(theirs.news, vec![chunk(1, 0, "b")]);
    }

    /// A claim noted for a follower wakes nobody (the counter stays) and is taken with
    /// the next news that does.
    #[test]
    fn a_noted_claim_waits_for_the_next_wake() {
        let s = Signal::default();
        let (count, _) = s.now();
        let running = row(1, Status::Running);
        s.note(7, vec![News::Row(running.clone())]);
        assert_eq!(s.now().0, count, "nobody woken");
        s.tell(7, vec![chunk(1, 0, "a")]);
        let mine = s.take(7);
        assert_eq!(mine.count, count + 1);
        assert_eq!(mine.news, vec![News::Row(running), chunk(1, 0, "a")]);
    }

    /// Chunks read in order are shown as they are; a gap is said, by number, before
    /// what came after it, and the next chunk to read follows the last one read.
    #[test]
    fn chunks_after_a_gap_are_shown_after_a_line_naming_the_missing_ones() {
        let out = |b: &str| Piece::Output(b.as_bytes().to_vec());
        let missing = |which: &str| {
            Piece::Missing(format!(
                "runway: the log of job 4.2 is missing what its worker sent as {which}; what it sent after is shown"
            ))
        };
        let chunks = |v: &[(i64, &str)]| -> Vec<(i64, Vec<u8>)> {
            v.iter().map(|(n, b)| (*n, b.as_bytes().to_vec())).collect()
        };
        assert_eq!(
            chunk_pieces("4.2", 0, chunks(&[(0, "a"), (1, "b"), (3, "d"), (6, "g")])),
            (
                vec![
                    out("a"),
                    out("b"),
                    missing("chunk 2"),
                    out("d"),
                    missing("chunks 4 to 5"),
                    out("g")
                ],
                7
            )
        );
        // Read from where the last read stopped; nothing new leaves it there.
        assert_eq!(
            chunk_pieces("4.2", 2, chunks(&[(2, "c")])),
            (vec![out("c")], 3)
        );
        assert_eq!(chunk_pieces("4.2", 3, Vec::new()), (Vec::new(), 3));
        // The first chunk itself missing.
        assert_eq!(
            chunk_pieces("4.2", 0, chunks(&[(1, "b")])),
            (vec![missing("chunk 0"), out("b")], 2)
        );
    }
}
