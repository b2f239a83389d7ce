//! Running a planned build: every job in its own workspace, stage by stage, up to N
//! jobs of a stage at once (their output kept whole per job by `relay`) (and, on a server, within job slots shared by every build),
//! and the build result rolled up as docs/semantics.md §4 says (allow_failures,
//! fast_finish, later stages canceled after a failure).

use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::cancel::Cancel;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::event::BuildEvent;
use crate::exit;
use crate::job::log::{Log, Sink, human};
use crate::job::{self, JobContext, JobOptions, JobOutcome, JobResult};
use crate::plan::{JobPlan, Plan};
use crate::relay::Relay;
use crate::workspace::{GitOptions, Origin, Workspace};

/// The state of a whole build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BuildState {
    /// Every required job passed.
    Passed,
    /// A required job failed.
    Failed,
    /// A required job errored.
    Errored,
    /// A required job was canceled.
    Canceled,
}

impl BuildState {
    /// The name Travis shows.
    pub fn as_str(self) -> &'static str {
        match self {
            BuildState::Passed => "passed",
            BuildState::Failed => "failed",
            BuildState::Errored => "errored",
            BuildState::Canceled => "canceled",
        }
    }
}

/// §4: from the required jobs: any canceled → canceled; else any errored → errored;
/// else any failed → failed; else passed (also when there are none).
pub fn roll_up<'a>(jobs: impl IntoIterator<Item = (&'a JobPlan, JobResult)>) -> BuildState {
    let required: Vec<JobResult> = jobs
        .into_iter()
        .filter(|(j, _)| !j.allow_failure)
        .map(|(_, r)| r)
        .collect();
    if required.contains(&JobResult::Canceled) {
        BuildState::Canceled
    } else if required.contains(&JobResult::Errored) {
        BuildState::Errored
    } else if required.contains(&JobResult::Failed) {
        BuildState::Failed
    } else {
        BuildState::Passed
    }
}

/// Job slots shared by every build a server runs: at most `n` jobs at once, whichever
/// builds they belong to (runway.toml's `concurrency`).
#[derive(Debug)]
pub struct JobSlots {
    free: Mutex<Counts>,
    freed: Condvar,
}

/// Free slots and the jobs waiting for one, under one lock: waiters are served in the
/// order they asked (a ticket each), so jobs start in build order, as on Travis.
#[derive(Debug)]
struct Counts {
    free: usize,
    /// The tickets of the jobs waiting, oldest first.
    queue: std::collections::BTreeSet<u64>,
    next: u64,
}

/// A held slot; dropping it frees the slot.
#[derive(Debug)]
pub struct Slot(Arc<JobSlots>);

impl JobSlots {
    /// `n` slots (at least one).
    pub fn new(n: usize) -> Arc<JobSlots> {
        Arc::new(JobSlots {
            free: Mutex::new(Counts {
                free: n.max(1),
                queue: std::collections::BTreeSet::new(),
                next: 0,
            }),
            freed: Condvar::new(),
        })
    }

    /// Waits for a free slot, behind the jobs that asked before it (woken when one is
    /// freed, or when its build is canceled; nothing polls). Gives up (`None`) when
    /// `cancel` is set, so a canceled build does not wait behind others; its job then
    /// ends canceled.
    pub fn acquire(self: &Arc<Self>, cancel: Option<&Cancel>) -> Option<Slot> {
        // Registered before the lock is taken: a waker called at once takes it too.
        let _woken = cancel.map(|c| {
            let slots = self.clone();
            c.on_cancel(move || slots.wake_all())
        });
        let mut counts = self.free.lock().unwrap_or_else(|p| p.into_inner());
        let ticket = counts.next;
        counts.next += 1;
        counts.queue.insert(ticket);
        loop {
            if counts.free > 0 && counts.queue.first() == Some(&ticket) {
                counts.free -= 1;
                counts.queue.remove(&ticket);
                // The next in line may take a slot still free.
                self.freed.notify_all();
                return Some(Slot(self.clone()));
            }
            if cancel.is_some_and(Cancel::is_canceled) {
                counts.queue.remove(&ticket);
                // Whoever was behind this one may be first now.
                self.freed.notify_all();
                return None;
            }
            counts = self.freed.wait(counts).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// How many jobs wait for a slot now.
    pub fn waiting(&self) -> usize {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .queue
            .len()
    }

    /// Wakes every waiter to look at its cancel switch again.
    pub fn wake_all(&self) {
        // Taking the lock orders this after a waiter's flag check and before its wait.
        drop(self.free.lock().unwrap_or_else(|p| p.into_inner()));
        self.freed.notify_all();
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.free.lock().unwrap_or_else(|p| p.into_inner()).free += 1;
        // Every waiter looks: only the first in line takes it.
        self.0.freed.notify_all();
    }
}

/// Receives each job's own log as it is written (masked, with its fold markers), beside
/// the build's output: a server's build page follows every job live with it, even the
/// jobs a [`Relay`] holds back.
pub trait JobTap: Send + Sync {
    /// Job `number` wrote `bytes`.
    fn write(&self, number: &str, bytes: &[u8]);
    /// Job `number` ended with `result`.
    fn end(&self, number: &str, result: JobResult);
    /// Job `number` starts (it holds its slot and its build was not canceled).
    fn start(&self, _number: &str) {}
    /// Something happened in job `number`, as data (a command ended, a deploy…).
    fn event(&self, _number: &str, _event: &crate::job::log::JobEvent<'_>) {}
}

/// A job's events, to its tap.
struct TapObserver {
    tap: Arc<dyn JobTap>,
    number: String,
}

impl crate::job::log::Observer for TapObserver {
    fn event(&self, event: &crate::job::log::JobEvent<'_>) {
        self.tap.event(&self.number, event);
    }
}

/// Runs jobs somewhere else (a `runway worker`): the job's log is written into `log`
/// as it arrives, and its outcome comes back. Without one, jobs run here.
pub trait JobExecutor: Send + Sync {
    /// Runs `job`, its log into `log`.
    fn run(&self, job: &CompiledJob, log: &mut Log) -> JobOutcome;
}

/// What every job of one build shares: the trigger, the build's number, its root
/// `language:` (a job's own overrides it).
#[derive(Clone, Copy)]
pub struct BuildFacts<'a> {
    /// The trigger.
    pub event: &'a BuildEvent,
    /// The build's number.
    pub number: u64,
    /// The root `language:`.
    pub language: &'a str,
}

/// One job planned whole: all a worker needs to run it without reading `.travis.yml`
/// or planning (a serve node plans a build once and sends each job this way).
#[derive(Clone, Debug)]
pub struct CompiledJob {
    /// The job: its number, env, matrix values, deploys and merged config.
    pub job: JobPlan,
    /// The trigger.
    pub event: BuildEvent,
    /// The build's number.
    pub build_number: u64,
    /// The root `language:`.
    pub language: String,
    /// `git:` options for its clone.
    pub git: GitOptions,
    /// Its time limit.
    pub timeout: Duration,
    /// Its limit without output.
    pub no_output_timeout: Duration,
}

impl CompiledJob {
    /// The facts its build shares.
    pub fn facts(&self) -> BuildFacts<'_> {
        BuildFacts {
            event: &self.event,
            number: self.build_number,
            language: &self.language,
        }
    }
}

/// Runs one compiled job (a worker's), its log into `out` as it runs.
pub fn run_compiled(c: &CompiledJob, opts: &BuildOptions, out: &SharedOut) -> JobReport {
    run_one(&c.job, c.facts(), opts, Box::new(Live(out.clone())))
}

/// A `Write` into a [`JobTap`] for one job.
struct TapWriter {
    tap: Arc<dyn JobTap>,
    number: String,
}

impl Write for TapWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tap.write(&self.number, buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How to run the build.
pub struct BuildOptions {
    /// Slots shared with other builds; every job holds one while it runs.
    pub slots: Option<Arc<JobSlots>>,
    /// What was asked (in `job.asked`), the cache store, the sandbox.
    pub job: JobOptions,
    /// `git:` options for clones.
    pub git: GitOptions,
    /// Where the files come from.
    pub origin: Origin,
    /// Repository settings.
    pub settings: crate::settings::Settings,
    /// Where each job's own log also goes as it runs.
    pub tap: Option<Arc<dyn JobTap>>,
    /// Where jobs run, when not here.
    pub executor: Option<Arc<dyn JobExecutor>>,
}

/// What a build says about its run beside the jobs' own logs.
#[derive(Clone, Copy, Debug)]
pub enum Progress<'a> {
    /// A stage begins (said only when the build has several).
    Stage {
        /// Its name.
        name: &'a str,
    },
    /// A job was never started, and why (the build canceled, a required job of an
    /// earlier stage failed).
    NotStarted {
        /// Its number.
        job: &'a str,
        /// Why.
        why: &'a str,
    },
    /// `fast_finish`: a required job did not pass, so the result is known.
    FastFinish,
}

/// One job's result in a build.
#[derive(Clone, Debug)]
pub struct JobReport {
    /// The job.
    pub job: JobPlan,
    /// How it ended.
    pub outcome: JobOutcome,
    /// Its log, as written to files (fold markers, secrets masked).
    pub log: Vec<u8>,
    /// When each of its log's lines was written (Unix ms).
    pub times: Vec<i64>,
    /// True when it never ran because a required job of an earlier stage did not pass.
    pub stage_canceled: bool,
    /// False when it never started (the build canceled first, or an earlier stage
    /// failed).
    pub started: bool,
}

/// What came of the build.
pub struct BuildReport {
    /// The state.
    pub state: BuildState,
    /// Every job that was part of the run, in order.
    pub jobs: Vec<JobReport>,
    /// Wall time.
    pub duration: Duration,
    /// True when a time limit ended a required job.
    pub timed_out: bool,
}

impl BuildReport {
    /// The documented exit code: 0 passed, 1 failed, 3 errored, 4 canceled or timed out.
    pub fn exit_code(&self) -> i32 {
        match self.state {
            BuildState::Passed => exit::PASSED,
            BuildState::Failed => exit::FAILED,
            BuildState::Errored if self.timed_out => exit::CANCELED,
            BuildState::Errored => exit::ERRORED,
            BuildState::Canceled => exit::CANCELED,
        }
    }
}

pub use crate::relay::SharedOut;

/// A `Write` into [`SharedOut`], one lock per write.
struct Live(SharedOut);

impl Write for Live {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut o = self.0.lock().expect("output");
        o.write_all(b)?;
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        self.0.lock().expect("output").flush()
    }
}

/// A `Write` that appends to a shared buffer, noting when each line ended (Unix ms):
/// the log's line times ("timestamps" on the build page).
#[derive(Clone, Default)]
struct Buffer(std::sync::Arc<Mutex<(Vec<u8>, Vec<i64>)>>);

impl Write for Buffer {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        let mut kept = self.0.lock().expect("log buffer");
        let lines = b.iter().filter(|c| **c == b'\n').count();
        if lines > 0 {
            let now = crate::clock::now_ms();
            kept.1.extend(std::iter::repeat_n(now, lines));
        }
        kept.0.extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Picks the jobs `--job N` names (all when `None`).
pub fn select_jobs<'a>(
    plan: &'a Plan,
    only: Option<&str>,
    os: Option<&str>,
) -> Result<Vec<&'a JobPlan>, String> {
    let mut jobs = select_number(plan, only)?;
    if let Some(os) = os {
        let job_os = |j: &JobPlan| {
            j.matrix
                .iter()
                .find(|(k, _)| k == "os")
                .map(|(_, v)| v.clone())
                .or_else(|| {
                    crate::config::views::JobKeys(&j.config)
                        .os()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "linux".into())
        };
        let all: Vec<String> = jobs.iter().map(|j| job_os(j)).collect();
        jobs.retain(|j| job_os(j) == os);
        if jobs.is_empty() {
            let mut seen = all;
            seen.sort();
            seen.dedup();
            return Err(format!(
                "no job is for os {os}; the jobs are for {}",
                seen.join(", ")
            ));
        }
    }
    Ok(jobs)
}

/// The job `only` names (`1.2` or `2`), or every job.
fn select_number<'a>(plan: &'a Plan, only: Option<&str>) -> Result<Vec<&'a JobPlan>, String> {
    match only {
        None => Ok(plan.jobs.iter().collect()),
        Some(n) => {
            let found = plan
                .jobs
                .iter()
                .find(|j| j.number == n || j.number.rsplit('.').next() == Some(n));
            match found {
                Some(j) => Ok(vec![j]),
                None => Err(format!(
                    "there is no job {n}; the jobs are {}",
                    plan.jobs
                        .iter()
                        .map(|j| j.number.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )),
            }
        }
    }
}

/// Runs the selected jobs of a plan, writing the jobs' live logs to `out` and saying
/// the rest as [`Progress`].
pub fn run(
    plan: &Plan,
    jobs: &[&JobPlan],
    facts: BuildFacts<'_>,
    opts: &BuildOptions,
    out: &SharedOut,
    progress: &mut dyn FnMut(Progress<'_>),
) -> BuildReport {
    let started = Instant::now();
    let mut reports: Vec<JobReport> = Vec::new();
    let mut stop_reason: Option<String> = None;
    for stage in &plan.stages {
        let stage_jobs: Vec<&JobPlan> =
            jobs.iter().copied().filter(|j| &j.stage == stage).collect();
        if stage_jobs.is_empty() {
            continue;
        }
        let canceled = opts.job.cancel.as_ref().is_some_and(Cancel::is_canceled);
        if canceled && stop_reason.is_none() {
            stop_reason = Some("the build was canceled".into());
        }
        if let Some(why) = &stop_reason {
            for j in stage_jobs {
                progress(Progress::NotStarted {
                    job: &j.number,
                    why,
                });
                reports.push(JobReport {
                    stage_canceled: !canceled,
                    ..not_started(j, why, opts)
                });
            }
            continue;
        }
        if plan.stages.len() > 1 {
            progress(Progress::Stage { name: stage });
        }
        let results = run_stage(&stage_jobs, facts, opts, out);
        // Said after the stage: a job waits for those before it, so the jobs not
        // started are its last ones, in order.
        for r in results.iter().filter(|r| !r.started) {
            progress(Progress::NotStarted {
                job: &r.job.number,
                why: &r.outcome.reason,
            });
        }
        let failed_required = results
            .iter()
            .any(|r| !r.job.allow_failure && r.outcome.result != JobResult::Passed);
        reports.extend(results);
        if failed_required {
            stop_reason = Some(format!("a required job of stage {stage} did not pass"));
            if plan.fast_finish {
                progress(Progress::FastFinish);
            }
        }
    }
    // Jobs of later stages canceled by a failure do not make the build "canceled":
    // the build fails with the stage that failed (§4.8).
    let state = roll_up(
        reports
            .iter()
            .filter(|r| !r.stage_canceled)
            .map(|r| (&r.job, r.outcome.result)),
    );
    let timed_out = reports
        .iter()
        .any(|r| !r.job.allow_failure && r.outcome.timed_out);
    BuildReport {
        state,
        jobs: reports,
        duration: started.elapsed(),
        timed_out,
    }
}

/// Runs a stage's jobs: one after another, or with `parallel` workers taking the next
/// job as one finishes, their output kept whole per job by a [`Relay`]. Results come
/// back in job order.
fn run_stage(
    jobs: &[&JobPlan],
    facts: BuildFacts<'_>,
    opts: &BuildOptions,
    out: &SharedOut,
) -> Vec<JobReport> {
    let cancel = opts.job.cancel.as_ref();
    let run = |job: &JobPlan, shown: Box<dyn Write + Send>| {
        let _slot = opts.slots.as_ref().map(|s| s.acquire(cancel));
        // A build canceled while this job waited for its turn (a slot, a job before it)
        // does not start it.
        if cancel.is_some_and(Cancel::is_canceled) {
            return not_started(job, "the build was canceled before it started", opts);
        }
        run_one(job, facts, opts, shown)
    };
    let workers = opts.job.asked.parallel.max(1).min(jobs.len());
    if workers <= 1 {
        return jobs
            .iter()
            .map(|j| run(j, Box::new(Live(out.clone()))))
            .collect();
    }
    let relay = Relay::new(out.clone());
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<JobReport>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|s| {
        for _ in 0..workers {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(job) = jobs.get(i) else { break };
                    let r = run(job, Box::new(relay.writer(i)));
                    relay.end(i);
                    results.lock().expect("results")[i] = Some(r);
                }
            });
        }
    });
    results
        .into_inner()
        .expect("results")
        .into_iter()
        .flatten()
        .collect()
}

/// The report of job `job`, canceled before it started (`why`); its tab says so.
fn not_started(job: &JobPlan, why: &str, opts: &BuildOptions) -> JobReport {
    if let Some(tap) = &opts.tap {
        tap.end(&job.number, JobResult::Canceled);
    }
    JobReport {
        job: job.clone(),
        outcome: JobOutcome {
            result: JobResult::Canceled,
            reason: why.to_string(),
            timed_out: false,
            duration: Duration::ZERO,
            substituted: Vec::new(),
        },
        log: Vec::new(),
        times: Vec::new(),
        stage_canceled: false,
        started: false,
    }
}

/// Runs one job; its log is kept (secrets masked) and `shown` as it runs.
fn run_one(
    job: &JobPlan,
    facts: BuildFacts<'_>,
    opts: &BuildOptions,
    shown: Box<dyn Write + Send>,
) -> JobReport {
    if let Some(tap) = &opts.tap {
        tap.start(&job.number);
    }
    let buffer = Buffer::default();
    let mut sinks = vec![Sink::raw(Box::new(buffer.clone()))];
    sinks.push(match opts.job.asked.output {
        crate::options::Output::Terminal => Sink::terminal(shown),
        crate::options::Output::Plain => Sink::plain(shown),
        crate::options::Output::Raw => Sink::raw(shown),
    });
    if let Some(tap) = &opts.tap {
        sinks.push(Sink::raw(Box::new(TapWriter {
            tap: tap.clone(),
            number: job.number.clone(),
        })));
    }
    let masker = opts.settings.masker();
    let mut log = Log::new(masker, sinks);
    if let Some(tap) = &opts.tap {
        log.observe(Box::new(TapObserver {
            tap: tap.clone(),
            number: job.number.clone(),
        }));
    }
    let outcome = match &opts.executor {
        Some(x) => x.run(
            &CompiledJob {
                job: job.clone(),
                event: facts.event.clone(),
                build_number: facts.number,
                language: facts.language.to_string(),
                git: opts.git.clone(),
                timeout: opts.job.asked.timeout,
                no_output_timeout: opts.job.asked.no_output_timeout,
            },
            &mut log,
        ),
        None => execute(job, facts, opts, &mut log),
    };
    log.finish();
    tracing::info!(
        repo = %facts.event.repo,
        job = %job.number,
        result = outcome.result.as_str(),
        seconds = outcome.duration.as_secs_f64(),
        "job ended"
    );
    if let Some(tap) = &opts.tap {
        tap.end(&job.number, outcome.result);
    }
    let (log_bytes, times) = buffer.0.lock().expect("log").clone();
    JobReport {
        job: job.clone(),
        outcome,
        log: log_bytes,
        times,
        stage_canceled: false,
        started: true,
    }
}

fn execute(job: &JobPlan, facts: BuildFacts<'_>, opts: &BuildOptions, log: &mut Log) -> JobOutcome {
    let started = Instant::now();
    let mut ws = match Workspace::prepare(
        &opts.origin,
        &facts.event.repo,
        &opts.git,
        // A kept workspace stays a plain directory on the host's disk, to look at
        // and remove as any other.
        opts.job
            .sandbox
            .disk()
            .filter(|_| !opts.job.asked.keep_workspace),
        &opts.job.sandbox.hidden(),
    ) {
        Ok(ws) => ws,
        Err(e) => {
            log.line(&format!(
                "Job {}: could not prepare the workspace: {e}",
                job.number
            ));
            return JobOutcome {
                result: JobResult::Errored,
                reason: format!("workspace: {e}"),
                timed_out: false,
                duration: started.elapsed(),
                substituted: Vec::new(),
            };
        }
    };
    let ctx = JobContext {
        event: facts.event,
        job,
        build_number: facts.number,
        language: job_language(job, facts.language),
        settings: &opts.settings,
        workspace: &ws,
        options: &opts.job,
    };
    let outcome = job::run(&ctx, log);
    if opts.job.asked.keep_workspace {
        let at = ws.keep();
        log.line(&format!("Workspace kept at {}", at.display()));
    }
    log.line(&format!(
        "Job {} {} in {} ({})",
        job.number,
        outcome.result.as_str(),
        human(outcome.duration),
        outcome.reason
    ));
    outcome
}

fn job_language(job: &JobPlan, root: &str) -> String {
    crate::config::views::JobKeys(&job.config)
        .language()
        .map(crate::config::schema::canonical_language)
        .unwrap_or_else(|| root.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28 (1): jobs start in build order: a freed slot goes to the job that
    /// asked first.
    #[test]
    fn jobs_take_freed_slots_in_the_order_they_asked() {
        let slots = JobSlots::new(1);
        let held = slots.acquire(None).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let mut waiters = Vec::new();
        for name in ["older", "newer"] {
            let (mine, tx) = (slots.clone(), tx.clone());
            let before = slots.waiting();
            waiters.push(std::thread::spawn(move || {
                let slot = mine.acquire(None).unwrap();
                tx.send(name).unwrap();
                drop(slot);
            }));
            // The next asks only once this one waits.
            while slots.waiting() == before {
                std::thread::yield_now();
            }
        }
        drop(held);
        for w in waiters {
            w.join().unwrap();
        }
        let order: Vec<&str> = rx.try_iter().collect();
        assert_eq!(order, ["older", "newer"]);
    }

    /// A job waiting for a slot wakes when its build is canceled (no polling).
    #[test]
    fn a_waiting_job_wakes_when_its_build_is_canceled() {
        let slots = JobSlots::new(1);
        let held = slots.acquire(None).expect("the one slot");
        let cancel = Cancel::new();
        let (tx, rx) = std::sync::mpsc::channel();
        let (s, c) = (slots.clone(), cancel.clone());
        std::thread::spawn(move || {
            let _ = tx.send(s.acquire(Some(&c)).is_some());
        });
        // Cancel only once the job is inside its wait (counted under the lock it
        // releases there), so only the cancel's waker can end the wait.
        while slots.waiting() == 0 {
            std::thread::yield_now();
        }
        cancel.cancel();
        // A guard against a hang, not a measure of speed.
        let got = rx.recv_timeout(Duration::from_secs(60)).expect("woken");
        assert!(!got, "canceled: no slot");
        drop(held);
    }
}
