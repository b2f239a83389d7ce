//! One job, run the way Travis ran it (docs/semantics.md §1): one persistent shell,
//! the phases in order with their failure rules, caches around them, deploys shown or
//! run, and a result.
//!
//! - [`phases`]: the lifecycle as data: which phases stop the job, which only record
//!   a failure, which never change the result, and the table of steps the runner
//!   walks ([`phases::STEPS`]);
//! - `caching`: the cache fetched before the phases and stored after `before_cache`;
//! - `deploying`: each firing provider with `before_deploy` and `after_deploy`;
//! - [`shell`]: the persistent bash and its protocol;
//! - [`log`]: masking, folds and timing, sinks;
//! - [`env`]: the job's environment;
//! - [`defaults`]: language defaults and JDKs;
//! - `setup`: before the lifecycle: os and arch, runtimes, `addons.apt`, services.

mod caching;
pub mod defaults;
mod deploying;
pub mod env;
pub mod log;
pub mod phases;
mod setup;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::config::model::{EnvVar, strs};
use crate::event::BuildEvent;
use crate::plan::JobPlan;
use crate::process::shell::{self, Shell, Wait};
use crate::workspace::Workspace;
use log::Log;
use phases::{OnFailure, Phase, RunsWhen, Step};
use setup::{disk_exceeded, memory_exceeded};

/// How a job ended.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum JobResult {
    /// Every script command passed.
    Passed,
    /// A script command failed.
    Failed,
    /// A setup phase, a deploy or the runner failed, or a limit was hit.
    Errored,
    /// Canceled before or while running (a failed earlier stage, fast_finish, a signal).
    Canceled,
}

impl JobResult {
    /// The name Travis shows.
    pub fn as_str(self) -> &'static str {
        match self {
            JobResult::Passed => "passed",
            JobResult::Failed => "failed",
            JobResult::Errored => "errored",
            JobResult::Canceled => "canceled",
        }
    }

    /// The result named `name` (as [`JobResult::as_str`] writes it).
    pub fn from_name(name: &str) -> Option<JobResult> {
        [
            JobResult::Passed,
            JobResult::Failed,
            JobResult::Errored,
            JobResult::Canceled,
        ]
        .into_iter()
        .find(|r| r.as_str() == name)
    }

    /// The worker's mapping of a script's exit code: 0 passed, 1 failed, else errored.
    pub fn from_exit(code: i32) -> JobResult {
        match code {
            0 => JobResult::Passed,
            1 => JobResult::Failed,
            _ => JobResult::Errored,
        }
    }
}

/// What came of a job.
#[derive(Clone, Debug)]
pub struct JobOutcome {
    /// The result.
    pub result: JobResult,
    /// Why, in a few words (`script failed`, `install errored`, `timed out`).
    pub reason: String,
    /// True when a time limit ended the job.
    pub timed_out: bool,
    /// Wall time.
    pub duration: Duration,
    /// Runtimes the machine's own stood in for (`--substitutes`): `python 3.5 → Python 3.11.7`.
    pub substituted: Vec<String>,
}

/// Limits and switches for running jobs.
#[derive(Clone, Debug)]
pub struct JobOptions {
    /// What was asked of the build (limits, deploys, substitutes): the one options
    /// value, shared.
    pub asked: Arc<crate::options::Options>,
    /// Where caches live; `None` turns caching off.
    pub cache_store: Option<Arc<dyn crate::cache::store::CacheStore>>,
    /// The repository's default branch (cache fallback).
    pub default_branch: String,
    /// Set to cancel: the running command's process group is killed.
    pub cancel: Option<crate::cancel::Cancel>,
    /// Where the job's process group is recorded while it runs, so a server restarted
    /// after a crash ends it ([`crate::process::end_orphans`]).
    pub process_dir: Option<std::path::PathBuf>,
    /// A job whose log grows past this many bytes is terminated, errored (Travis's
    /// limit: 4 MB), so a runaway command cannot fill memory, disk and mailboxes.
    pub max_log_bytes: u64,
    /// Where the job's shell runs ([`crate::sandbox`]).
    pub sandbox: Arc<dyn crate::sandbox::Sandbox>,
}

pub use crate::limits::MAX_LOG_BYTES;

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            asked: Arc::default(),
            cache_store: None,
            default_branch: "master".into(),
            cancel: None,
            process_dir: None,
            max_log_bytes: MAX_LOG_BYTES,
            sandbox: Arc::new(crate::sandbox::Bare),
        }
    }
}

/// Everything one job needs.
pub struct JobContext<'a> {
    /// The build event.
    pub event: &'a BuildEvent,
    /// The planned job.
    pub job: &'a JobPlan,
    /// The build number.
    pub build_number: u64,
    /// The language (canonical).
    pub language: String,
    /// Repository settings.
    pub settings: &'a crate::settings::Settings,
    /// The workspace.
    pub workspace: &'a Workspace,
    /// Limits and the cache store.
    pub options: &'a JobOptions,
}

/// Why a running job must stop now.
enum Stop {
    /// The job ends with this result (phase failure, shell exit, timeout).
    End(JobResult, String, bool),
}

/// Runs one job and writes its log. Never panics on user input; runner failures are
/// an errored job with the reason logged.
pub fn run(ctx: &JobContext, log: &mut Log) -> JobOutcome {
    let started = Instant::now();
    let mut runner = Runner {
        ctx,
        shell: None,
        test_result: None,
        first_failure: None,
        phase_counts: HashMap::new(),
        cache: None,
        substituted: Vec::new(),
    };
    let end = runner.run_all(log);
    let (result, reason, timed_out) = match end {
        Ok(()) => {
            let r = match runner.test_result {
                Some(0) | None => JobResult::Passed,
                _ => JobResult::Failed,
            };
            let why = match (&runner.first_failure, r) {
                (_, JobResult::Passed) => "all script commands passed".to_string(),
                (Some((cmd, code)), _) => format!("`{cmd}` exited {code}"),
                (None, _) => "a script command failed".to_string(),
            };
            (r, why, false)
        }
        Err(Stop::End(r, why, t)) => (r, why, t),
    };
    // Never a quiet green: what stood in for what the job asked is part of its result.
    let reason = if runner.substituted.is_empty() {
        reason
    } else {
        format!(
            "{reason}; on substitutes: {}",
            runner.substituted.join(", ")
        )
    };
    if let Some(sh) = runner.shell.take() {
        sh.finish(Duration::from_secs(2));
    }
    // The job's exit code as `runway run` documents them (0, 1, 3, 4), so this line
    // agrees with the exit code the person sees at the end.
    let code = match result {
        JobResult::Passed => crate::exit::PASSED,
        JobResult::Failed => crate::exit::FAILED,
        JobResult::Errored if timed_out => crate::exit::CANCELED,
        JobResult::Errored => crate::exit::ERRORED,
        JobResult::Canceled => crate::exit::CANCELED,
    };
    log.line("");
    if code != crate::exit::PASSED && ctx.job.allow_failure {
        // Travis's line, and why the build's result below may still be green.
        log.line(&format!(
            "Done. This job exited with {code}; it is allowed to fail, so the build's result does not count it."
        ));
    } else {
        log.line(&format!("Done. Your build exited with {code}."));
    }
    JobOutcome {
        result,
        reason,
        timed_out,
        duration: started.elapsed(),
        substituted: runner.substituted,
    }
}

struct Runner<'a> {
    ctx: &'a JobContext<'a>,
    shell: Option<Shell>,
    /// `TRAVIS_TEST_RESULT`: None until a script command ran.
    test_result: Option<i32>,
    /// The first script command that failed, and its exit code (the job's reason).
    first_failure: Option<(String, i32)>,
    phase_counts: HashMap<&'static str, usize>,
    cache: Option<caching::CacheState>,
    /// Runtimes the job asked for that the machine's stood in for (`--substitutes`).
    substituted: Vec<String>,
}

impl Runner<'_> {
    fn run_all(&mut self, log: &mut Log) -> Result<(), Stop> {
        self.header(log);
        self.check_platform(log)?;
        // Found or installed before the sandbox is made, so that the job sees them.
        let runtimes = self.provide_runtimes(log)?;
        self.start_shell(log)?;
        for r in &runtimes {
            self.use_runtime(r, log)?;
        }
        self.setup_env(log)?;
        self.setup_addons(log)?;
        for step in phases::STEPS {
            if !self.due(step.runs()) {
                continue;
            }
            match *step {
                Step::Phase(p) => self.phase(p, log)?,
                Step::CacheFetch => self.cache_fetch(log),
                Step::CacheStore => self.cache_store(log),
                Step::TestResult => self.export_test_result()?,
                Step::Deploy => self.deploys(log)?,
            }
        }
        Ok(())
    }

    /// Whether a step that runs `when` runs now.
    fn due(&self, when: RunsWhen) -> bool {
        match when {
            RunsWhen::Always => true,
            RunsWhen::IfPassed => self.passed(),
            RunsWhen::IfFailed => !self.passed(),
        }
    }

    fn passed(&self) -> bool {
        self.test_result.unwrap_or(0) == 0
    }

    fn header(&self, log: &mut Log) {
        let job = self.ctx.job;
        let mut what = format!("Job {}", job.number);
        if let Some(n) = &job.name {
            what.push_str(&format!(" \"{n}\""));
        }
        let m: Vec<String> = job
            .matrix
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        if !m.is_empty() {
            what.push_str(&format!(" ({})", m.join(", ")));
        }
        log.styled_line(&what, &format!("\x1b[1m{what}\x1b[0m"));
        log.line(&format!(
            "Repository {} at {} ({})",
            self.ctx.event.repo,
            if self.ctx.event.commit.is_empty() {
                "the files on disk"
            } else {
                &self.ctx.event.commit
            },
            self.ctx.event.travis_branch()
        ));
        log.line(&format!(
            "Build directory: {}",
            self.ctx.workspace.build_dir.display()
        ));
        log.line(&self.ctx.options.sandbox.describe());
        log.line("");
    }

    fn start_shell(&mut self, log: &mut Log) -> Result<(), Stop> {
        let ws = self.ctx.workspace;
        let inputs = env::EnvInputs {
            event: self.ctx.event,
            job: self.ctx.job,
            build_number: self.ctx.build_number,
            language: &self.ctx.language,
            build_dir: &ws.build_dir,
            home: &ws.home,
        };
        let mut penv = env::process_env(&inputs);
        if has_gradle(&ws.build_dir) {
            penv.push(("TERM".into(), "dumb".into()));
        }
        let paths = crate::sandbox::JobPaths {
            root: ws.root().to_path_buf(),
            build_dir: ws.build_dir.clone(),
            home: ws.home.clone(),
            scratch: ws.scratch.clone(),
        };
        let sandbox = &*self.ctx.options.sandbox;
        match Shell::start(&ws.build_dir, &penv, sandbox, &paths) {
            Ok(mut sh) => {
                if let Some(c) = &self.ctx.options.cancel {
                    sh.cancel_on(c);
                }
                if let Some(dir) = &self.ctx.options.process_dir {
                    let _ = sh.record_in(dir, ws.root());
                }
                ws.started();
                self.shell = Some(sh);
                Ok(())
            }
            Err(e) => {
                log.line(&format!("runway could not start bash: {e}"));
                if let shell::StartError::Sandbox(s) = &e {
                    log.line(&s.hint());
                }
                Err(Stop::End(
                    JobResult::Errored,
                    format!("could not start bash: {e}"),
                    false,
                ))
            }
        }
    }

    fn setup_env(&mut self, log: &mut Log) -> Result<(), Stop> {
        let ctx = self.ctx;
        let yml: Vec<EnvVar> = ctx.job.env.clone();
        let lines = env::export_lines(ctx.settings, &yml);
        let n_settings = ctx.settings.len();
        if n_settings > 0 {
            log.line("Setting environment variables from repository settings");
        }
        for (i, (cmd, shown)) in lines.iter().enumerate() {
            if i == n_settings {
                log.line("Setting environment variables from .travis.yml");
            }
            log.line(&format!("$ {shown}"));
            self.silent(cmd)?;
        }
        if n_settings > 0 {
            self.silent("export TRAVIS_SECURE_ENV_VARS=true")?;
        }
        if !lines.is_empty() {
            log.line("");
        }
        Ok(())
    }

    /// Runs a runway command in the job shell without showing it.
    fn silent(&mut self, cmd: &str) -> Result<i32, Stop> {
        let opts = self.ctx.options;
        let sh = self.shell.as_mut().expect("shell started");
        if let Err(e) = sh.send(cmd) {
            return Err(Stop::End(JobResult::Errored, format!("runner: {e}"), false));
        }
        match sh.wait(
            opts.asked.no_output_timeout,
            opts.asked.timeout,
            &mut |_| true,
        ) {
            Wait::Done(code) => Ok(code),
            other => Err(self.stop_for(other)),
        }
    }

    fn stop_for(&mut self, w: Wait) -> Stop {
        match w {
            Wait::Done(code) | Wait::ShellExited(code) => Stop::End(
                JobResult::from_exit(code),
                format!("the job's shell exited with {code}"),
                false,
            ),
            Wait::NoOutput => {
                if let Some(sh) = self.shell.as_mut() {
                    sh.kill();
                }
                Stop::End(JobResult::Errored, "no output timeout".into(), true)
            }
            Wait::JobTimeout => {
                if let Some(sh) = self.shell.as_mut() {
                    sh.kill();
                }
                Stop::End(JobResult::Errored, "job timeout".into(), true)
            }
            Wait::Canceled => {
                if let Some(sh) = self.shell.as_mut() {
                    sh.kill();
                }
                Stop::End(JobResult::Canceled, "canceled".into(), false)
            }
            Wait::LogLimit => {
                if let Some(sh) = self.shell.as_mut() {
                    sh.kill();
                }
                Stop::End(JobResult::Errored, "log length limit".into(), false)
            }
        }
    }

    /// The commands of a phase: as configured, `skip`, or the language default.
    fn commands(&self, phase: Phase, log: &mut Log) -> Result<Vec<String>, String> {
        let key = phase.key();
        if let Some(node) = self.ctx.job.config.get(key) {
            let list = strs(Some(node));
            if list.len() == 1 && matches!(list[0].trim(), "skip" | "ignore") {
                log.line(&format!("Skipping the {key} step, as instructed."));
            }
        } else if matches!(phase, Phase::Install | Phase::Script)
            && !defaults::known(&self.ctx.language)
        {
            log.line(&format!(
                "warning: runway has no default {key} for language {}; give {key}: in .travis.yml",
                self.ctx.language
            ));
        }
        self.phase_commands(phase)
    }

    /// The commands of `phase`: the job's own, or the language's default.
    fn phase_commands(&self, phase: Phase) -> Result<Vec<String>, String> {
        let job = &self.ctx.job.config;
        if let Some(node) = job.get(phase.key()) {
            let list = strs(Some(node));
            if list.len() == 1 && matches!(list[0].trim(), "skip" | "ignore") {
                return Ok(Vec::new());
            }
            return Ok(list);
        }
        let has = defaults::has_in(&self.ctx.workspace.build_dir);
        let default = match phase {
            Phase::Install => defaults::install(
                &self.ctx.language,
                &has,
                crate::config::views::JobKeys(&self.ctx.job.config).npm_args(),
            ),
            Phase::Script => defaults::script(&self.ctx.language, &has),
            _ => defaults::Default::Nothing,
        };
        match default {
            defaults::Default::Commands(c) => Ok(c),
            defaults::Default::Nothing => Ok(Vec::new()),
            defaults::Default::Fail(msg) => Err(msg),
        }
    }

    /// Every command the job's phases would run (for decisions on their text).
    pub(super) fn all_commands(&self) -> Vec<String> {
        Phase::ALL
            .into_iter()
            .flat_map(|p| self.phase_commands(p).unwrap_or_default())
            .collect()
    }

    fn phase(&mut self, phase: Phase, log: &mut Log) -> Result<(), Stop> {
        if !self.due(phases::rule(phase).runs) {
            return Ok(());
        }
        let commands = match self.commands(phase, log) {
            Ok(c) => c,
            Err(msg) => {
                log.line(&msg);
                if phase == Phase::Script {
                    self.test_result = Some(1);
                }
                return Ok(());
            }
        };
        self.run_commands(phase, &commands, log)
    }

    /// Runs a phase's commands in order, each timed (and folded where the phase is),
    /// and applies the phase's failure rule to each exit status.
    fn run_commands(
        &mut self,
        phase: Phase,
        commands: &[String],
        log: &mut Log,
    ) -> Result<(), Stop> {
        let rule = phases::rule(phase);
        let key = phase.key();
        for cmd in commands {
            let n = self.phase_counts.entry(key).or_insert(0);
            *n += 1;
            let fold_name = format!("{key}.{n}");
            let timer = if rule.folded {
                log.command_fold_start(&fold_name)
            } else {
                log.timer_start()
            };
            let started = Instant::now();
            log.command(cmd);
            let opts = self.ctx.options;
            let sh = self.shell.as_mut().expect("shell started");
            let waited = match sh.send(cmd) {
                Ok(()) => sh.wait(opts.asked.no_output_timeout, opts.asked.timeout, &mut |b| {
                    log.output(b);
                    log.bytes <= opts.max_log_bytes
                }),
                Err(e) => return Err(Stop::End(JobResult::Errored, format!("runner: {e}"), false)),
            };
            log.end_output();
            let took = started.elapsed();
            log.fold_end(timer);
            let code = self.exit_status(waited, key, log)?;
            log.command_done(code, took);
            if code != 0
                && let Some(limit) = self.shell.as_ref().and_then(Shell::memory_exceeded)
            {
                return Err(memory_exceeded(limit, log));
            }
            if code != 0
                && let Some(limit) = self.ctx.workspace.disk_full()
            {
                return Err(disk_exceeded(limit, log));
            }
            self.apply_rule(rule.on_failure, cmd, code, key, log)?;
            if phase == Phase::Script {
                log.line("");
            }
        }
        Ok(())
    }

    /// The command's exit status, or the stop a limit, a cancel or the shell's own exit
    /// makes (said in the log as Travis said it).
    fn exit_status(&mut self, waited: Wait, key: &str, log: &mut Log) -> Result<i32, Stop> {
        let opts = self.ctx.options;
        let killed = "The job's process group was killed.";
        match waited {
            Wait::Done(code) => return Ok(code),
            Wait::NoOutput => {
                log.line("");
                log.line(&format!(
                    "No output has been received in the last {}, this potentially indicates a stalled build or something wrong with the build itself.",
                    go_duration(opts.asked.no_output_timeout)
                ));
                log.line(killed);
            }
            Wait::JobTimeout => {
                log.line("");
                log.line(&format!(
                    "The job exceeded the maximum time limit for jobs ({}), and has been terminated.",
                    go_duration(opts.asked.timeout)
                ));
                log.line(killed);
            }
            Wait::ShellExited(code) => {
                log.line(&format!("The job's shell exited with {code} during {key}."));
                if let Some(limit) = self.shell.as_ref().and_then(Shell::memory_exceeded) {
                    return Err(memory_exceeded(limit, log));
                }
                if let Some(limit) = self.ctx.workspace.disk_full() {
                    return Err(disk_exceeded(limit, log));
                }
            }
            Wait::Canceled => {
                log.line("");
                log.line("The build was canceled; the job's process group was killed.");
            }
            Wait::LogLimit => {
                log.line("");
                log.line(&format!(
                    "The job exceeded the maximum log length ({} MB), and has been terminated.",
                    opts.max_log_bytes / (1024 * 1024)
                ));
                log.line(killed);
            }
        }
        Err(self.stop_for(waited))
    }

    /// A phase's failure rule applied to one command's exit status: `script` records
    /// it, the install phases stop the job, the rest ignore it.
    fn apply_rule(
        &mut self,
        on_failure: OnFailure,
        cmd: &str,
        code: i32,
        key: &str,
        log: &mut Log,
    ) -> Result<(), Stop> {
        match on_failure {
            OnFailure::Record => {
                // Said once: on a terminal a passing command has said it already.
                let said = format!("The command \"{cmd}\" exited with {code}.");
                if code == 0 {
                    log.file_line(&said);
                } else {
                    log.line(&said);
                    if self.first_failure.is_none() {
                        self.first_failure = Some((first_line(cmd).to_string(), code));
                    }
                }
                let prev = self.test_result.unwrap_or(0);
                self.test_result = Some(prev | i32::from(code != 0));
                Ok(())
            }
            OnFailure::Stop if code != 0 => {
                log.line(&format!(
                    "The command \"{cmd}\" failed and exited with {code} during {key}."
                ));
                log.line("");
                log.line("Your build has been stopped.");
                Err(Stop::End(
                    JobResult::Errored,
                    format!("{key} failed: {}", first_line(cmd)),
                    false,
                ))
            }
            _ => Ok(()),
        }
    }

    fn export_test_result(&mut self) -> Result<(), Stop> {
        let v = self.test_result.map(|r| r.to_string()).unwrap_or_default();
        self.silent(&format!("export TRAVIS_TEST_RESULT={v}"))
            .map(|_| ())
    }
}

/// Runs `work` on a thread; gives up after `limit` (the thread is told to stop).
fn with_timeout<T: Send + 'static>(
    limit: Duration,
    work: impl FnOnce(Arc<AtomicBool>) -> T + Send + 'static,
) -> Option<T> {
    let cancel = Arc::new(AtomicBool::new(false));
    let (tx, rx) = std::sync::mpsc::channel();
    let c = cancel.clone();
    std::thread::spawn(move || {
        let _ = tx.send(work(c));
    });
    match rx.recv_timeout(limit) {
        Ok(v) => Some(v),
        Err(_) => {
            cancel.store(true, std::sync::atomic::Ordering::Relaxed);
            None
        }
    }
}

fn has_gradle(dir: &std::path::Path) -> bool {
    dir.join("build.gradle").exists() || dir.join("build.gradle.kts").exists()
}

fn first_line(cmd: &str) -> &str {
    cmd.lines().next().unwrap_or("")
}

/// `10m0s`, as Travis's worker (Go) printed durations.
pub fn go_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{}m{}s", s / 3600, s % 3600 / 60, s % 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{}s", s)
    }
}

/// `1.2 MB`.
pub fn bytes(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{:.1} MB", n as f64 / 1e6)
    } else if n >= 1_000 {
        format!("{:.1} kB", n as f64 / 1e3)
    } else {
        format!("{n} B")
    }
}
