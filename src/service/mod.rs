//! The build service: the one way a build runs, whoever asks. `runway run`, the
//! post-receive hook and the server's workers each make a [`Request`] (what to build,
//! its settings, how) and call [`run`]; the build's events go out through a
//! [`Reporter`] (the caller decides where its lines go: a terminal, a pusher's
//! `remote:` lines, a live build page), and its exit code comes back.
//!
//! The steps, in order: resolve the target ([`target`]), read and plan the config once,
//! refuse an invalid one (recorded and mailed when the build was queued), record the
//! build when asked, make the sandbox ([`sandbox`]), run the jobs ([`crate::build`]),
//! record their results, say the summary, send the mail ([`mail`]).

pub mod mail;
pub mod sandbox;
pub mod target;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::build::{self, BuildOptions, BuildReport, BuildState, SharedOut};
use crate::cache::store::LocalStore;
use crate::config::{self, diag::Level};
use crate::event::BuildEvent;
use crate::exit;
use crate::job::JobOptions;
use crate::mask::Masker;
use crate::plan::{self, Plan};
use crate::settings::Settings;
use crate::source::Repo;
use crate::store::{self, BuildRow, JobRow, NewBuild, Store};
use crate::workspace::{GitOptions, Origin};

pub use crate::options::{Options, SandboxOptions};
pub use mail::MailOptions;
pub use target::{RefArgs, Target};

/// Why the service could not run a build at all.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// What was asked cannot be built as asked (a path, a ref, a job): exit 2.
    #[error("{0}")]
    Usage(String),
    /// Reading git failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// Writing output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The build store failed: runway itself, not the user (exit 3).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// Whether and how the build is recorded in the store (history, the server's pages).
#[derive(Clone, Debug, Default)]
pub enum Record {
    /// Not recorded (a rehearsal).
    #[default]
    No,
    /// Recorded as a new build (`runway run --notify`, the hook).
    New,
    /// The build the server queued.
    Queued(Box<BuildRow>),
}

/// What the caller shares with a running build.
#[derive(Clone, Default)]
pub struct Controls {
    /// Set to cancel the build; running jobs are killed.
    pub cancel: Option<crate::cancel::Cancel>,
    /// Job slots shared with the server's other builds.
    pub slots: Option<Arc<build::JobSlots>>,
    /// Where each job's own log also goes as it runs (a server's build page).
    pub tap: Option<Arc<dyn build::JobTap>>,
    /// Where jobs run when not here (the server's `runway worker` agents).
    pub executor: Option<Arc<dyn build::JobExecutor>>,
    /// Where caches are kept, when not the cache directory (a worker's bucket).
    pub cache: Option<Arc<dyn crate::cache::store::CacheStore>>,
    /// The serve node following the build: it ends the build only while it holds it.
    pub holder: Option<Arc<Holder>>,
    /// A store kept open from one queued build to the next (used on SQLite: an idle
    /// PostgreSQL connection may not outlive a restart of its server).
    pub kept_store: Option<Arc<KeptStore>>,
}

/// The build stores a server's ended builds used, kept open for its next ones: opening
/// one (SQLite's file, its settings, the check of its tables) cost each build's start
/// 0.4 ms, and with one kept, every build but one of those running together paid it.
#[derive(Default)]
pub struct KeptStore(std::sync::Mutex<Vec<Store>>);

/// The most stores kept open (more builds than this at once open their own).
const STORES_KEPT: usize = 16;

impl KeptStore {
    fn take(&self) -> Option<Store> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).pop()
    }

    fn keep(&self, store: Store) {
        let mut kept = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if kept.len() < STORES_KEPT {
            kept.push(store);
        }
    }
}

/// A serve node's hold on the builds it follows. A build is ended (recorded, then
/// mailed) by the node holding it, once: the record is written only while the node
/// still holds the build, and a stopping node lets no end start once it hands its
/// builds over, and waits for those under way, so none is cut off between its record
/// and its mail.
pub struct Holder {
    /// The node's name (whom the store says holds a build).
    pub node: String,
    released: std::sync::atomic::AtomicBool,
    ending: tokio::sync::watch::Sender<usize>,
}

/// An end under way (see [`Holder::begin_end`]); dropped when it is done.
pub struct Ending<'a>(&'a Holder);

impl Drop for Ending<'_> {
    fn drop(&mut self) {
        self.0.ending.send_modify(|n| *n -= 1);
    }
}

impl Holder {
    /// The hold of node `node`.
    pub fn new(node: &str) -> Holder {
        Holder {
            node: node.to_string(),
            released: std::sync::atomic::AtomicBool::new(false),
            ending: tokio::sync::watch::Sender::new(0),
        }
    }

    /// Starts ending a build; None once the node has let go of its builds (another
    /// node ends it).
    pub fn begin_end(&self) -> Option<Ending<'_>> {
        use std::sync::atomic::Ordering::SeqCst;
        // Counted before the flag is read, and the flag set before the count is read
        // (both SeqCst): either this end sees the release, or the release waits for it.
        self.ending.send_modify(|n| *n += 1);
        let end = Ending(self);
        (!self.released.load(SeqCst)).then_some(end)
    }

    /// Lets no new end start, then waits (up to `within`) for those under way.
    /// True when none is left.
    pub async fn release(&self, within: std::time::Duration) -> bool {
        self.released
            .store(true, std::sync::atomic::Ordering::SeqCst);
        let mut rx = self.ending.subscribe();
        tokio::time::timeout(within, rx.wait_for(|n| *n == 0))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}

/// One build to run.
#[derive(Clone, Default)]
pub struct Request {
    /// A work tree (or a subdirectory of one), a bare repository or a plain directory.
    pub path: PathBuf,
    /// Branch or tag, event, commit.
    pub refs: RefArgs,
    /// The repository's settings.
    pub settings: Settings,
    /// How the build runs.
    pub options: Options,
    /// Whether and how its mail goes.
    pub mail: MailOptions,
    /// Whether it is recorded.
    pub record: Record,
    /// The build store's directory (running builds' logs; the store itself unless
    /// `database_url` names one).
    pub state_dir: PathBuf,
    /// The PostgreSQL build store, when the server uses one.
    pub database_url: Option<String>,
    /// Cancel flag, job slots, log tap.
    pub controls: Controls,
}

pub use crate::events::{Event, Handover};

/// Where a build's output and events go.
pub trait Reporter {
    /// The live output the jobs' logs stream to.
    fn out(&self) -> SharedOut;
    /// One event.
    fn event(&mut self, event: Event<'_>);
}

/// The reporter for people: notes, the summary and the last line into the live
/// output, problems to `problems` (a terminal's standard error, or the live output too).
pub struct TextReporter<'a> {
    out: SharedOut,
    problems: &'a mut dyn std::io::Write,
}

impl<'a> TextReporter<'a> {
    /// A reporter writing to `out`, with problems to `problems`.
    pub fn new(out: SharedOut, problems: &'a mut dyn std::io::Write) -> TextReporter<'a> {
        TextReporter { out, problems }
    }

    fn line(&self, text: &str) {
        let mut o = self.out.lock().expect("live output");
        let _ = writeln!(o, "{text}");
    }
}

impl Reporter for TextReporter<'_> {
    fn out(&self) -> SharedOut {
        self.out.clone()
    }

    fn event(&mut self, event: Event<'_>) {
        if let Event::Problem(text) = event {
            let _ = writeln!(self.problems, "{text}");
            return;
        }
        for line in crate::events::lines(&event) {
            self.line(&line);
        }
    }
}

use std::io::Write as _;

/// The recorded build: the store (opened once per build) and its row.
struct Recorded {
    store: Store,
    row: BuildRow,
}

/// What a build holds of the store while its jobs run.
enum Held {
    /// Its record (or none), connection and all.
    Kept(Option<Recorded>),
    /// Its row alone: the connection went back among those kept.
    Lent(BuildRow),
}

/// Runs one build; returns its exit code.
pub fn run(req: &Request, reporter: &mut dyn Reporter) -> Result<i32, ServiceError> {
    let target = target::resolve(&req.path, &req.refs)?;
    let loaded = config::load_bytes(&target.config_bytes);
    for d in &loaded.diagnostics {
        if d.level >= Level::Warning {
            reporter.event(Event::Problem(&d.render(&target.config_name)));
        }
    }
    let event = target.event.clone();
    // A queued build has its number: it is planned once, with it.
    let first_number = match &req.record {
        Record::Queued(row) => row.number,
        _ => 1,
    };
    let plan = plan_build(&loaded.config, &event, first_number, &req.settings);
    if let Some(why) = invalid(&loaded, &plan, &target) {
        return refuse(req, &loaded, &plan, &target, &why, reporter);
    }
    if !plan.build.runs {
        return not_built(req, &plan, reporter);
    }
    let cache_root = cache_root(req);
    let clean_up = !matches!(req.record, Record::Queued(_));
    let Some(sandbox) = prepare(req, &cache_root, clean_up, reporter) else {
        return Ok(exit::ERRORED);
    };
    let mut recorded = record(req, &event)?;
    let number = recorded.as_ref().map_or(first_number, |r| r.row.number);
    // The author is known once the commit is read (a webhook may not say).
    if let (Some(r), Some(author)) = (recorded.as_mut(), event.author.as_ref()) {
        let _ = store::patiently(req.controls.cancel.as_ref(), || {
            r.store.set_author(r.row.id, &author.name)
        });
    }
    let plan = if number == first_number {
        plan
    } else {
        plan_build(&loaded.config, &event, number, &req.settings)
    };
    let jobs = build::select_jobs(&plan, req.options.job.as_deref(), req.options.os.as_deref())
        .map_err(ServiceError::Usage)?;
    // A run of its own (the command line, the hook): its jobs are all the disks it
    // needs. A server's builds come one after another: it keeps one made ahead.
    if !matches!(req.record, Record::Queued(_)) {
        crate::sandbox::disk::expect(jobs.len() as u64);
    }
    let opts = build_options(req, &loaded.config, &event, &target, sandbox, cache_root);
    let language = loaded.config.language();
    reporter.event(Event::Started {
        number,
        trigger: &event,
        jobs: jobs.len(),
        reason: &plan.build.reason,
    });
    let out = reporter.out();
    let facts = build::BuildFacts {
        event: &event,
        number,
        language: &language,
    };
    // While its jobs run, a server's build needs no connection of its own: it goes
    // back among those kept (SQLite), and one is taken again for the build's end. A
    // node following builds whose jobs wait for workers (256 at once) then opens none
    // beyond those kept, where each of those builds opened one (0.2 ms and more).
    let held = match (kept_store(req), recorded) {
        (Some(kept), Some(r)) => {
            kept.keep(r.store);
            Held::Lent(r.row)
        }
        (_, recorded) => Held::Kept(recorded),
    };
    let report = build::run(&plan, &jobs, facts, &opts, &out, &mut |p| {
        reporter.event(Event::Progress(p))
    });
    let mut recorded = match held {
        Held::Kept(recorded) => recorded,
        Held::Lent(row) => Some(Recorded {
            store: queued_store(req)?,
            row,
        }),
    };
    conclude(req, &plan, &event, &report, recorded.as_mut(), reporter);
    if let (Some(kept), Some(r)) = (kept_store(req), recorded) {
        kept.keep(r.store);
    }
    Ok(report.exit_code())
}

/// Where the request's caches live: `--cache-dir`, else the default.
fn cache_root(req: &Request) -> PathBuf {
    req.options
        .cache_dir
        .clone()
        .unwrap_or_else(crate::cache::store::default_root)
}

/// Runs one job as a serve node compiled it (a worker's job): its commit from the
/// repository at `req.path`; no `.travis.yml` is read and nothing is planned, so the
/// job run is the job the build page shows. Its log goes to `reporter.out()` and the
/// tap.
pub fn run_compiled(
    req: &Request,
    job: &build::CompiledJob,
    reporter: &mut dyn Reporter,
) -> crate::job::JobOutcome {
    let cache_root = cache_root(req);
    // A worker ended what a runway that died left when it started.
    let Some(sandbox) = prepare(req, &cache_root, false, reporter) else {
        return crate::job::JobOutcome {
            result: crate::job::JobResult::Errored,
            reason: "the job sandbox cannot be made on this worker (its output says why)".into(),
            timed_out: false,
            duration: std::time::Duration::ZERO,
            substituted: Vec::new(),
        };
    };
    // A worker's copy of the repository holds many builds' commits: the clone shows
    // this build's branch or tag alone.
    let origin = Origin::Commit {
        repo: req.path.clone(),
        sha: job.event.commit.clone(),
        only: Some(job.event.ref_name()),
    };
    let mut opts = options_with(
        req,
        job.git.clone(),
        origin,
        &job.event.default_branch,
        sandbox,
        cache_root,
    );
    opts.job.asked = Arc::new(Options {
        timeout: job.timeout,
        no_output_timeout: job.no_output_timeout,
        ..req.options.clone()
    });
    build::run_compiled(job, &opts, &reporter.out()).outcome
}

/// Ends what a runway that died left running (the process groups its records in
/// `state_dir` name, and their workspaces) and releases its job disks (on a thread
/// [`crate::sandbox::disk::shutdown`] waits for); what to say when it ended any.
pub fn end_leftovers(state_dir: &std::path::Path) -> Option<String> {
    let ended = crate::process::end_orphans(&store::process_dir(state_dir));
    crate::sandbox::disk::sweep_behind();
    (ended > 0).then(|| {
        format!(
            "runway: ended {ended} job(s) a runway that died left running, and removed their workspaces"
        )
    })
}

/// Before the jobs: what a runway that died left running is ended (`clean_up`: a run
/// of its own; the server and a worker do this once at start), and the sandbox is
/// made. `None` (having said why) when the sandbox cannot be made.
fn prepare(
    req: &Request,
    cache_root: &std::path::Path,
    clean_up: bool,
    reporter: &mut dyn Reporter,
) -> Option<Arc<dyn crate::sandbox::Sandbox>> {
    if clean_up && let Some(note) = end_leftovers(&req.state_dir) {
        reporter.event(Event::Note(&note));
    }
    let mut notes = Vec::new();
    let made = req
        .options
        .sandbox
        .make(&req.state_dir, cache_root, &mut |s| {
            notes.push(s.to_string())
        });
    for n in &notes {
        reporter.event(Event::Note(n));
    }
    match made {
        Ok(s) => Some(s),
        Err(e) => {
            reporter.event(Event::Problem(&format!(
                "runway: the job sandbox cannot be made here: {e}"
            )));
            reporter.event(Event::Problem(&format!("runway: {}", e.hint())));
            None
        }
    }
}

/// After the jobs: their results recorded, the summary, the mail, the last line.
fn conclude(
    req: &Request,
    plan: &Plan,
    event: &BuildEvent,
    report: &BuildReport,
    mut recorded: Option<&mut Recorded>,
    reporter: &mut dyn Reporter,
) {
    // One masker for what is recorded and what is mailed.
    let masker = req.settings.masker();
    let rows = job_rows(report, &masker, &req.options);
    // A node's build is ended by the node holding it: one record, one mail.
    let holder = req
        .controls
        .holder
        .as_deref()
        .filter(|_| matches!(req.record, Record::Queued(_)));
    let _ending = match holder.map(Holder::begin_end) {
        Some(None) => {
            reporter.event(Event::HandedOver(Handover::Stopping));
            return;
        }
        other => other.flatten(),
    };
    if let Some(r) = recorded.as_mut() {
        let id = r.row.id;
        let state = match &r.row.rerun {
            Some(job) => rerun_state(plan, report, job, &r.store.jobs(id).unwrap_or_default()),
            None => report.state,
        };
        let ended = store::patiently(req.controls.cancel.as_ref(), || match holder {
            Some(h) => r.store.finish_held(id, &h.node, state, &rows),
            None => r.store.finish(id, state, &rows).map(|_| true),
        });
        match ended {
            Ok(true) => {}
            Ok(false) => {
                reporter.event(Event::HandedOver(Handover::TakenOver));
                return;
            }
            Err(e) => reporter.event(Event::NotRecorded {
                error: &e.to_string(),
            }),
        }
    }
    let number = recorded.as_ref().map_or(1, |r| r.row.number);
    reporter.event(Event::Ended { number, report });
    let previous = recorded.as_ref().and_then(|r| r.row.previous_state);
    let mut say = |line: &str| reporter.event(Event::Note(line));
    let fate = mail::Mailing {
        plan,
        event,
        report,
        number,
        previous,
        error: None,
        masker: &masker,
        options: &req.mail,
        deployed: req.options.deploy,
        rehearsed: req.options.rehearse_deploy,
        // A queued build's start is the store's (a node that took it over did not
        // see it start).
        started_at: match &req.record {
            Record::Queued(row) => Some(row.started_at),
            _ => None,
        },
        // The server keeps a mail it could not send and tries again later.
        outbox: recorded
            .as_mut()
            .filter(|_| matches!(req.record, Record::Queued(_)))
            .map(|r| (&mut r.store, r.row.id)),
    }
    .send(&mut say);
    reporter.event(Event::Mail(&fate));
    // The build page says what became of the mail.
    if let Some(r) = recorded {
        let mailed = fate.to_string();
        let _ = store::patiently(req.controls.cancel.as_ref(), || {
            r.store.set_mail(r.row.id, &mailed)
        });
    }
    reporter.event(Event::Finished { number, report });
}

/// Plans the build as build `number`.
fn plan_build(config: &config::Config, event: &BuildEvent, number: u64, s: &Settings) -> Plan {
    plan::plan(
        config,
        event,
        &plan::Settings {
            build_number: number,
            env: s.vars(),
        },
    )
}

/// The first error of a config that cannot be built, at its place.
fn invalid(loaded: &config::Loaded, plan: &Plan, target: &Target) -> Option<String> {
    match (
        &plan.error,
        loaded.diagnostics.iter().find(|d| d.level == Level::Error),
    ) {
        (_, Some(d)) => Some(d.render(&target.config_name)),
        (Some(e), None) => Some(e.render(&target.config_name)),
        (None, None) => None,
    }
}

/// A config that cannot be built: said, and a queued build is recorded as errored with
/// it and mailed as the config (or Travis's default policy, when nothing could be
/// read) says. Exit 2.
fn refuse(
    req: &Request,
    loaded: &config::Loaded,
    plan: &Plan,
    target: &Target,
    why: &str,
    reporter: &mut dyn Reporter,
) -> Result<i32, ServiceError> {
    let event = &target.event;
    if plan.error.is_some() && !loaded.has_errors() {
        reporter.event(Event::Problem(why));
    } else {
        reporter.event(Event::Problem(&format!(
            "runway: {} is invalid; fix the errors above (runway lint shows them all)",
            target.config_name
        )));
    }
    if let Record::Queued(row) = &req.record {
        let mut st = store::patiently(req.controls.cancel.as_ref(), || {
            Store::connect(&req.state_dir, req.database_url.as_deref())
        })
        .ok();
        if let Some(st) = st.as_mut() {
            let _ = store::patiently(req.controls.cancel.as_ref(), || {
                st.set_state(row.id, store::Status::Errored, Some(why))
            });
        }
        let report = BuildReport {
            state: BuildState::Errored,
            jobs: Vec::new(),
            duration: Duration::ZERO,
            timed_out: false,
        };
        let masker = req.settings.masker();
        let mut say = |line: &str| reporter.event(Event::Note(line));
        let fate = mail::Mailing {
            plan,
            event,
            report: &report,
            number: row.number,
            previous: row.previous_state,
            error: Some(why),
            masker: &masker,
            options: &req.mail,
            deployed: false,
            rehearsed: false,
            outbox: st.as_mut().map(|s| (s, row.id)),
            started_at: None,
        }
        .send(&mut say);
        reporter.event(Event::Mail(&fate));
    }
    Ok(exit::USAGE)
}

/// A build its own conditions say not to run: said, and a queued one recorded so.
fn not_built(req: &Request, plan: &Plan, reporter: &mut dyn Reporter) -> Result<i32, ServiceError> {
    reporter.event(Event::NotBuilt {
        reason: &plan.build.reason,
    });
    if let Record::Queued(row) = &req.record
        && let Ok(mut st) = store::patiently(req.controls.cancel.as_ref(), || {
            Store::connect(&req.state_dir, req.database_url.as_deref())
        })
    {
        let why = format!("not built: {}", plan.build.reason);
        let _ = store::patiently(req.controls.cancel.as_ref(), || {
            st.set_state(row.id, store::Status::Canceled, Some(&why))
        });
    }
    Ok(exit::PASSED)
}

/// The store kept between the server's builds, when this request's is SQLite's.
fn kept_store(req: &Request) -> Option<&KeptStore> {
    req.controls
        .kept_store
        .as_deref()
        .filter(|_| req.database_url.is_none())
}

/// A queued build's store: one kept open, else opened (a queued build outlives a
/// database restart: its store is waited for).
fn queued_store(req: &Request) -> Result<Store, ServiceError> {
    match kept_store(req).and_then(|k| k.take()) {
        Some(kept) => Ok(kept),
        None => Ok(store::patiently(req.controls.cancel.as_ref(), || {
            Store::connect(&req.state_dir, req.database_url.as_deref())
        })?),
    }
}

/// Opens the store and records the build when asked: a new build gets its number and
/// remembers the previous finished build of its branch (what "change" compares with).
fn record(req: &Request, event: &BuildEvent) -> Result<Option<Recorded>, ServiceError> {
    Ok(match &req.record {
        Record::No => None,
        // A queued build outlives a database restart: its store is waited for.
        Record::Queued(row) => Some(Recorded {
            store: queued_store(req)?,
            row: (**row).clone(),
        }),
        Record::New => {
            let mut store = Store::connect(&req.state_dir, req.database_url.as_deref())?;
            let row = store.begin(&NewBuild::of(event))?;
            Some(Recorded { store, row })
        }
    })
}

/// How [`build::run`] runs this request's jobs.
fn build_options(
    req: &Request,
    config: &config::Config,
    event: &BuildEvent,
    target: &Target,
    sandbox: Arc<dyn crate::sandbox::Sandbox>,
    cache_root: PathBuf,
) -> BuildOptions {
    let root = target.dir.clone();
    let origin = match Repo::open(&root) {
        Some(r) if r.is_bare() || req.refs.commit.is_some() => Origin::Commit {
            repo: root,
            sha: event.commit.clone(),
            only: None,
        },
        _ => Origin::Disk(root),
    };
    let git = config.git();
    let git = GitOptions {
        depth: git.depth,
        submodules: git.submodules,
    };
    options_with(req, git, origin, &event.default_branch, sandbox, cache_root)
}

/// [`build_options`] once the clone's source and options are known.
fn options_with(
    req: &Request,
    git: GitOptions,
    origin: Origin,
    default_branch: &str,
    sandbox: Arc<dyn crate::sandbox::Sandbox>,
    cache_root: PathBuf,
) -> BuildOptions {
    BuildOptions {
        slots: req.controls.slots.clone(),
        job: JobOptions {
            asked: Arc::new(req.options.clone()),
            cache_store: Some(
                req.controls
                    .cache
                    .clone()
                    .unwrap_or_else(|| Arc::new(LocalStore::new(cache_root))),
            ),
            default_branch: default_branch.to_string(),
            cancel: req.controls.cancel.clone(),
            // Every build records its jobs' process groups and workspaces; the next
            // runway ends and removes what a crash left.
            process_dir: Some(store::process_dir(&req.state_dir)),
            max_log_bytes: crate::job::MAX_LOG_BYTES,
            sandbox,
        },
        git,
        origin,
        settings: req.settings.clone(),
        tap: req.controls.tap.clone(),
        executor: req.controls.executor.clone(),
    }
}

/// The state of a build one of whose jobs (`job`) ran again: every job of the plan as it
/// is now (that job as it ran, the others as recorded), rolled up as a build's jobs are.
fn rerun_state(
    plan: &Plan,
    report: &BuildReport,
    job: &str,
    recorded: &[JobRow],
) -> crate::build::BuildState {
    let result_of = |j: &crate::plan::JobPlan| {
        if j.number == job {
            report
                .jobs
                .iter()
                .find(|r| r.job.number == j.number)
                .map(|r| r.outcome.result)
        } else {
            recorded
                .iter()
                .find(|r| r.number == j.number)
                .and_then(|r| crate::job::JobResult::from_name(&r.result))
        }
        .unwrap_or(crate::job::JobResult::Errored)
    };
    crate::build::roll_up(plan.jobs.iter().map(|j| (j, result_of(j))))
}

/// The store's rows for the build's jobs: results, reasons, stages, deploys and logs,
/// masked.
fn job_rows(report: &BuildReport, masker: &Masker, o: &Options) -> Vec<JobRow> {
    report
        .jobs
        .iter()
        .map(|r| JobRow {
            number: r.job.number.clone(),
            name: r.job.name.clone(),
            // What makes the job this job: its matrix values (jdk, python, …) and env,
            // masked (the page's and the API's "env").
            env: crate::notify::job_label(&r.job, masker),
            result: r.outcome.result.as_str().to_string(),
            reason: masker.mask_all(&r.outcome.reason),
            duration_ms: r.outcome.duration.as_millis() as u64,
            stage: r.job.stage.clone(),
            deploys: mail::deploy_lines(r, o.deploy, o.rehearse_deploy),
            log: r.log.clone(),
            times: r.times.clone(),
            worker: None,
            workers: Vec::new(),
        })
        .collect()
}

#[cfg(test)]
mod holder_tests {
    use std::sync::Arc;

    /// A stopping node lets no build's end start, and waits for those under way.
    #[test]
    fn a_released_hold_starts_no_end_and_waits_for_those_under_way() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        let h = Arc::new(super::Holder::new("n"));
        let under_way = h.begin_end().expect("not released yet");
        let (tx, rx) = std::sync::mpsc::channel();
        let waiting = h.clone();
        let release = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            let done = rt.block_on(waiting.release(std::time::Duration::from_secs(60)));
            tx.send(done).unwrap();
        });
        // The release waits for the end under way.
        assert!(
            rx.recv_timeout(std::time::Duration::from_millis(300))
                .is_err()
        );
        drop(under_way);
        assert!(rx.recv().unwrap());
        release.join().unwrap();
        assert!(h.begin_end().is_none(), "no end starts once released");
        // Nothing under way: at once.
        assert!(rt.block_on(h.release(std::time::Duration::from_secs(60))));
    }
}

#[cfg(test)]
mod reporter_tests {
    use super::mail::MailFate;
    use super::{Event, Reporter, TextReporter};
    use std::sync::{Arc, Mutex};

    /// A `Write` whose bytes the test reads back.
    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// What the text reporter writes for `events`.
    fn rendered(events: &[Event<'_>]) -> String {
        let buf = Buf::default();
        let out: crate::relay::SharedOut = Arc::new(Mutex::new(Box::new(buf.clone())));
        let mut problems = Vec::new();
        let mut r = TextReporter::new(out, &mut problems);
        for e in events {
            r.event(*e);
        }
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    /// Issue 25: the mail's fate is a typed event, rendered in one place.
    #[test]
    fn each_mail_fate_is_one_email_line() {
        let fates = [
            MailFate::Off("email: false".into()),
            MailFate::NotThisTime("passed with on_success: change".into()),
            MailFate::WouldSend {
                subject: "Passed: o/app#3 (main - abc1234)".into(),
                recipients: "a@example.com".into(),
                text: None,
            },
            MailFate::WouldSend {
                subject: "Failed: o/app#4 (main - abc1234)".into(),
                recipients: "a@example.com, b@example.com".into(),
                text: Some("Build #4 failed.\nJob 4.1: failed".into()),
            },
            MailFate::Sent {
                subject: "Passed: o/app#5 (main - abc1234)".into(),
                recipients: "a@example.com".into(),
            },
            MailFate::Kept("connection refused".into()),
            MailFate::Failed("not sent: no SMTP server; the build result stands".into()),
        ];
        let events: Vec<Event<'_>> = fates.iter().map(Event::Mail).collect();
        insta::assert_snapshot!(rendered(&events));
    }
}
