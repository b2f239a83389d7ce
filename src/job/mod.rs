//! One job, run the way Travis ran it (docs/semantics.md §1): one persistent shell,
//! the phases in order with their failure rules, caches around them, deploys shown or
//! run, and a result.
//!
//! - [`phases`]: the lifecycle as data: which phases stop the job, which only record
//!   a failure, which never change the result;
//! - [`shell`]: the persistent bash and its protocol;
//! - [`log`]: masking, folds and timing, sinks;
//! - [`env`]: the job's environment;
//! - [`defaults`]: language defaults and JDKs;
//! - `setup`: before the lifecycle: os and arch, runtimes, `addons.apt`, services.

pub mod defaults;
pub mod env;
pub mod log;
pub mod phases;
mod setup;
pub mod shell;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use crate::cache::{self, archive, store::LocalStore};
use crate::config::model::{EnvVar, bool_of, strs};
use crate::deploy;
use crate::event::BuildEvent;
use crate::plan::JobPlan;
use crate::workspace::Workspace;
use log::{Log, human};
use phases::{OnFailure, Phase, RunsWhen};
use setup::memory_exceeded;
use shell::{Shell, Wait};

/// How a job ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
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
    /// No output for this long ends the job (default 10 min).
    pub no_output_timeout: Duration,
    /// The whole job may take this long (default 50 min).
    pub timeout: Duration,
    /// Where caches live; `None` turns caching off.
    pub cache_store: Option<LocalStore>,
    /// The repository's default branch (cache fallback).
    pub default_branch: String,
    /// Deploy for real (`--deploy`); otherwise deploys are a dry run.
    pub deploy: bool,
    /// Set to cancel: the running command's process group is killed.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Where the job's process group is recorded while it runs, so a server restarted
    /// after a crash ends it ([`shell::end_orphans`]).
    pub process_dir: Option<std::path::PathBuf>,
    /// A job whose log grows past this many bytes is terminated, errored (Travis's
    /// limit: 4 MB), so a runaway command cannot fill memory, disk and mailboxes.
    pub max_log_bytes: u64,
    /// Where the job's shell runs ([`crate::sandbox`]).
    pub sandbox: Arc<dyn crate::sandbox::Sandbox>,
    /// A runtime that cannot be provided is replaced by what the machine has (named
    /// in the header and the job's reason) instead of erroring the job.
    pub substitutes: bool,
    /// After the codedeploy provider (dry run or real), rehearse the bundle it ships
    /// as the CodeDeploy agent would run it ([`crate::deploy::rehearse`]).
    pub rehearse_deploy: bool,
}

pub use crate::limits::MAX_LOG_BYTES;

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            no_output_timeout: crate::limits::NO_OUTPUT_TIMEOUT,
            timeout: crate::limits::JOB_TIMEOUT,
            cache_store: None,
            default_branch: "master".into(),
            deploy: false,
            cancel: None,
            process_dir: None,
            max_log_bytes: MAX_LOG_BYTES,
            sandbox: Arc::new(crate::sandbox::Bare),
            substitutes: false,
            rehearse_deploy: false,
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
    log.line(&format!("Done. Your build exited with {code}."));
    JobOutcome {
        result,
        reason,
        timed_out,
        duration: started.elapsed(),
        substituted: runner.substituted,
    }
}

/// What a job knows about its cache between fetch and store.
struct CacheState {
    dirs: Vec<(String, std::path::PathBuf)>,
    key: String,
    fingerprint: Option<String>,
    timeout: Duration,
}

struct Runner<'a> {
    ctx: &'a JobContext<'a>,
    shell: Option<Shell>,
    /// `TRAVIS_TEST_RESULT`: None until a script command ran.
    test_result: Option<i32>,
    /// The first script command that failed, and its exit code (the job's reason).
    first_failure: Option<(String, i32)>,
    phase_counts: HashMap<&'static str, usize>,
    cache: Option<CacheState>,
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
        self.cache_fetch(log);
        for p in [
            Phase::BeforeInstall,
            Phase::Install,
            Phase::BeforeScript,
            Phase::Script,
            Phase::BeforeCache,
        ] {
            self.phase(p, log)?;
        }
        self.cache_store(log);
        self.export_test_result()?;
        if self.passed() {
            self.phase(Phase::AfterSuccess, log)?;
            self.deploys(log)?;
        } else {
            self.phase(Phase::AfterFailure, log)?;
        }
        self.phase(Phase::AfterScript, log)?;
        Ok(())
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
        match Shell::start(&ws.build_dir, &penv, &ws.scratch, sandbox, &paths) {
            Ok(mut sh) => {
                sh.cancel = self.ctx.options.cancel.clone();
                if let Some(dir) = &self.ctx.options.process_dir {
                    let _ = sh.record_in(dir, ws.root());
                }
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
        match sh.wait(opts.no_output_timeout, opts.timeout, &mut |_| true) {
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
        let job = &self.ctx.job.config;
        let key = phase.key();
        if let Some(node) = job.get(key) {
            let list = strs(Some(node));
            if list.len() == 1 && matches!(list[0].trim(), "skip" | "ignore") {
                log.line(&format!("Skipping the {key} step, as instructed."));
                return Ok(Vec::new());
            }
            return Ok(list);
        }
        let has = defaults::has_in(&self.ctx.workspace.build_dir);
        let default = match phase {
            Phase::Install => defaults::install(
                &self.ctx.language,
                &has,
                crate::config::model::str_of(self.ctx.job.config.get("npm_args")),
            ),
            Phase::Script => defaults::script(&self.ctx.language, &has),
            _ => defaults::Default::Nothing,
        };
        if matches!(phase, Phase::Install | Phase::Script) && !defaults::known(&self.ctx.language) {
            log.line(&format!(
                "warning: runway has no default {key} for language {}; give {key}: in .travis.yml",
                self.ctx.language
            ));
        }
        match default {
            defaults::Default::Commands(c) => Ok(c),
            defaults::Default::Nothing => Ok(Vec::new()),
            defaults::Default::Fail(msg) => Err(msg),
        }
    }

    fn phase(&mut self, phase: Phase, log: &mut Log) -> Result<(), Stop> {
        let rule = phases::rule(phase);
        let runs = match rule.runs {
            RunsWhen::Always => true,
            RunsWhen::IfPassed => self.passed(),
            RunsWhen::IfFailed => !self.passed(),
        };
        if !runs {
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
                Ok(()) => sh.wait(opts.no_output_timeout, opts.timeout, &mut |b| {
                    log.output(b);
                    log.bytes <= opts.max_log_bytes
                }),
                Err(e) => return Err(Stop::End(JobResult::Errored, format!("runner: {e}"), false)),
            };
            log.end_output();
            let took = started.elapsed();
            log.fold_end(timer);
            let code = match waited {
                Wait::Done(code) => code,
                Wait::NoOutput => {
                    log.line("");
                    log.line(&format!(
                        "No output has been received in the last {}, this potentially indicates a stalled build or something wrong with the build itself.",
                        go_duration(opts.no_output_timeout)
                    ));
                    log.line("The job's process group was killed.");
                    return Err(self.stop_for(Wait::NoOutput));
                }
                Wait::JobTimeout => {
                    log.line("");
                    log.line(&format!(
                        "The job exceeded the maximum time limit for jobs ({}), and has been terminated.",
                        go_duration(opts.timeout)
                    ));
                    log.line("The job's process group was killed.");
                    return Err(self.stop_for(Wait::JobTimeout));
                }
                Wait::ShellExited(code) => {
                    log.line(&format!("The job's shell exited with {code} during {key}."));
                    if let Some(limit) = self.shell.as_ref().and_then(Shell::memory_exceeded) {
                        return Err(memory_exceeded(limit, log));
                    }
                    return Err(self.stop_for(Wait::ShellExited(code)));
                }
                Wait::Canceled => {
                    log.line("");
                    log.line("The build was canceled; the job's process group was killed.");
                    return Err(self.stop_for(Wait::Canceled));
                }
                Wait::LogLimit => {
                    log.line("");
                    log.line(&format!(
                        "The job exceeded the maximum log length ({} MB), and has been terminated.",
                        opts.max_log_bytes / (1024 * 1024)
                    ));
                    log.line("The job's process group was killed.");
                    return Err(self.stop_for(Wait::LogLimit));
                }
            };
            log.command_done(code, took);
            if code != 0
                && let Some(limit) = self.shell.as_ref().and_then(Shell::memory_exceeded)
            {
                return Err(memory_exceeded(limit, log));
            }
            match rule.on_failure {
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
                }
                OnFailure::Stop if code != 0 => {
                    log.line(&format!(
                        "The command \"{cmd}\" failed and exited with {code} during {key}."
                    ));
                    log.line("");
                    log.line("Your build has been stopped.");
                    return Err(Stop::End(
                        JobResult::Errored,
                        format!("{key} failed: {}", first_line(cmd)),
                        false,
                    ));
                }
                _ => {}
            }
            if phase == Phase::Script {
                log.line("");
            }
        }
        Ok(())
    }

    fn export_test_result(&mut self) -> Result<(), Stop> {
        let v = self.test_result.map(|r| r.to_string()).unwrap_or_default();
        self.silent(&format!("export TRAVIS_TEST_RESULT={v}"))
            .map(|_| ())
    }

    // ------------------------------------------------------------ caches (§5)

    fn cache_fetch(&mut self, log: &mut Log) {
        let ctx = self.ctx;
        let Some(store) = ctx.options.cache_store.clone() else {
            return;
        };
        let has = defaults::has_in(&ctx.workspace.build_dir);
        let Some(spec) = cache::spec(&ctx.job.config, &ctx.language, &has) else {
            return;
        };
        let env = cache::path_env(&ctx.job.env, &ctx.workspace.home, &ctx.workspace.build_dir);
        let dirs: Vec<(String, std::path::PathBuf)> = spec
            .dirs
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    cache::resolve_dir(d, &env, &ctx.workspace.build_dir),
                )
            })
            .collect();
        let key = cache::key(ctx.job, &ctx.language);
        let fold = log.fold_start("cache.1", "cache: fetch");
        log.line("Setting up build cache");
        for (w, p) in &dirs {
            let _ = std::fs::create_dir_all(p);
            log.line(&format!("$ cache directory {w} ({})", p.display()));
        }
        let timeout = Duration::from_secs(spec.timeout_secs);
        let branch = ctx.event.travis_branch().to_string();
        let mut fingerprint = None;
        let mut found = false;
        for b in cache::fetch_branches(&branch, ctx.event.pull_request, &ctx.options.default_branch)
        {
            let path = store.path(&ctx.event.repo, &b, &key);
            if !path.exists() {
                continue;
            }
            found = true;
            let started = Instant::now();
            let resolved: HashMap<String, std::path::PathBuf> = dirs.iter().cloned().collect();
            let result = with_timeout(timeout, move |cancel| {
                archive::restore(
                    &path,
                    &|w| resolved.get(w).cloned(),
                    &cancel,
                    archive::restore_cap(),
                )
            });
            match result {
                Some(Ok(r)) => {
                    log.line(&format!(
                        "cache: restored {} files ({}) from branch {b} in {}",
                        r.files,
                        bytes(r.bytes),
                        human(started.elapsed())
                    ));
                    if !r.refused.is_empty() {
                        log.line(&format!(
                            "cache: refused {} entries that cannot be restored safely:",
                            r.refused.len()
                        ));
                        for refused in r.refused.iter().take(20) {
                            log.line(&format!("  {refused}"));
                        }
                        if r.refused.len() > 20 {
                            log.line(&format!("  … and {} more", r.refused.len() - 20));
                        }
                    }
                    fingerprint = archive::fingerprint(&dirs).ok();
                }
                Some(Err(e)) => log.line(&format!(
                    "cache: could not restore the cache of branch {b}: {e}; going on without it"
                )),
                None => log.line(&format!(
                    "cache: fetching took longer than {}s; going on without it",
                    spec.timeout_secs
                )),
            }
            break;
        }
        if !found {
            log.line(&format!("cache: could not download cache ({key}): no cache for this branch or the default branch yet"));
        }
        log.fold_end(fold);
        self.cache = Some(CacheState {
            dirs,
            key,
            fingerprint,
            timeout,
        });
    }

    fn cache_store(&mut self, log: &mut Log) {
        let ctx = self.ctx;
        let (Some(state), Some(store)) = (self.cache.as_ref(), ctx.options.cache_store.as_ref())
        else {
            return;
        };
        let fold = log.fold_start("cache.2", "cache: store");
        let now = archive::fingerprint(&state.dirs).ok();
        if now.is_some() && now == state.fingerprint {
            log.line("cache: nothing changed, not updating the cache");
            log.fold_end(fold);
            return;
        }
        let branch = cache::store_branch(ctx.event.travis_branch(), ctx.event.pull_request);
        let path = store.path(&ctx.event.repo, &branch, &state.key);
        let dirs = state.dirs.clone();
        let started = Instant::now();
        match with_timeout(state.timeout, move |cancel| {
            archive::save(&dirs, &path, &cancel)
        }) {
            Some(Ok(s)) => log.line(&format!(
                "cache: stored {} files ({} → {}) for branch {branch} in {}",
                s.files,
                bytes(s.bytes),
                bytes(s.archive_bytes),
                human(started.elapsed())
            )),
            Some(Err(e)) => log.line(&format!(
                "cache: could not store the cache: {e}; the job goes on"
            )),
            None => log.line(&format!(
                "cache: storing took longer than {}s and was stopped; the job goes on",
                state.timeout.as_secs()
            )),
        }
        log.fold_end(fold);
    }

    // ------------------------------------------------------------ deploys (§6)

    fn deploys(&mut self, log: &mut Log) -> Result<(), Stop> {
        let deploys = &self.ctx.job.deploys;
        if deploys.is_empty() {
            return Ok(());
        }
        for d in deploys {
            if !d.fires {
                log.line(&format!(
                    "Skipping a deployment with the {} provider because {}",
                    d.provider, d.reason
                ));
                continue;
            }
            let cond = strs(d.config.get("on").and_then(|o| o.get("condition")));
            if !cond.is_empty() {
                let test = cond
                    .iter()
                    .map(|c| format!("[[ {c} ]]"))
                    .collect::<Vec<_>>()
                    .join(" && ");
                if self.silent(&test)? != 0 {
                    log.line(&format!(
                        "Skipping a deployment with the {} provider because a custom condition was not met",
                        d.provider
                    ));
                    continue;
                }
            }
            let before = strs(self.ctx.job.config.get("before_deploy"));
            let allow_failure = bool_of(d.config.get("allow_failure"), false);
            if let Err(stop) = self.run_commands(Phase::BeforeDeploy, &before, log) {
                if !allow_failure {
                    return Err(stop);
                }
                log.line(&format!("before_deploy failed; the {} provider has allow_failure: true, so the job goes on", d.provider));
                continue;
            }
            if !self.ctx.options.deploy {
                self.dry_run(d, log);
                self.rehearse_bundle(d, log)?;
                continue;
            }
            let cleanup = d
                .config
                .get("cleanup")
                .map(|c| bool_of(Some(c), false))
                .or_else(|| {
                    d.config
                        .get("skip_cleanup")
                        .map(|c| !bool_of(Some(c), true))
                })
                .unwrap_or(false);
            if cleanup {
                log.line("$ git stash --all");
                self.silent("git stash --all >/dev/null 2>&1 || true")?;
            }
            let fold = log.fold_start(
                &format!("dpl.{}", d.provider),
                &format!("deploy: {}", d.provider),
            );
            log.line(&format!("Deploying with the {} provider", d.provider));
            let result = self.provider(d, log);
            log.fold_end(fold);
            if cleanup {
                self.silent("git stash pop >/dev/null 2>&1 || true")?;
            }
            match result {
                Ok(()) => {
                    self.rehearse_bundle(d, log)?;
                    let after = strs(self.ctx.job.config.get("after_deploy"));
                    self.run_commands(Phase::AfterDeploy, &after, log)?;
                    let run = strs(d.config.get("run"));
                    self.run_commands(Phase::AfterDeploy, &run, log)?;
                }
                Err(e) => {
                    log.line(&format!(
                        "Failed to deploy with the {} provider: {e}",
                        d.provider
                    ));
                    if allow_failure {
                        log.line(&format!(
                            "The {} provider has allow_failure: true; the job goes on.",
                            d.provider
                        ));
                        continue;
                    }
                    return Err(Stop::End(
                        JobResult::Errored,
                        format!("deploy ({}) failed: {e}", d.provider),
                        false,
                    ));
                }
            }
        }
        Ok(())
    }

    /// `--rehearse-deploy`: the bundle the codedeploy provider ships (its `key`, found in
    /// the workspace), deployed on a throwaway copy of the machine as the agent would;
    /// a failed rehearsal errors the job.
    fn rehearse_bundle(&mut self, d: &crate::plan::DeployPlan, log: &mut Log) -> Result<(), Stop> {
        if !self.ctx.options.rehearse_deploy || d.provider != "codedeploy" {
            return Ok(());
        }
        let fail = |why: String| Stop::End(JobResult::Errored, why, false);
        let key = crate::config::model::str_of(d.config.get("key")).unwrap_or_default();
        let name = std::path::Path::new(key)
            .file_name()
            .map(|n| n.to_os_string());
        let build = &self.ctx.workspace.build_dir;
        let bundle = name.as_ref().and_then(|n| {
            cache::archive::walk(build)
                .ok()?
                .into_iter()
                .find(|(_, rel, meta)| meta.is_file() && rel.file_name() == Some(n.as_os_str()))
                .map(|(path, _, _)| path)
        });
        let fold = log.fold_start("dpl.rehearse", "rehearse: codedeploy");
        let Some(bundle) = bundle else {
            log.line(&format!(
                "runway cannot rehearse the deployment: no file named \"{key}\" (codedeploy key) in the workspace"
            ));
            log.fold_end(fold);
            return Err(fail(format!(
                "deploy rehearsal: no bundle \"{key}\" in the workspace"
            )));
        };
        log.line(&format!(
            "Rehearsing {} as the CodeDeploy agent would deploy it, on a throwaway copy of this machine",
            bundle.display()
        ));
        // Its own network namespace: the services it starts (nginx on port 80, say) never
        // meet another job's.
        let sandbox = crate::sandbox::Namespaces::new(crate::sandbox::Policy {
            no_network: true,
            ..Default::default()
        });
        let opts = crate::deploy::rehearse::RehearseOptions {
            application: crate::config::model::str_of(d.config.get("application"))
                .unwrap_or("application")
                .to_string(),
            group: crate::config::model::str_of(d.config.get("deployment_group"))
                .unwrap_or("deployment-group")
                .to_string(),
            sandbox: Arc::new(sandbox),
            hold: false,
        };
        let mut said = Vec::new();
        let result = crate::deploy::rehearse::rehearse(&[bundle], &opts, &mut said);
        for line in String::from_utf8_lossy(&said).lines() {
            log.line(line);
        }
        log.fold_end(fold);
        match result {
            Ok(0) => Ok(()),
            Ok(_) => {
                let why = String::from_utf8_lossy(&said)
                    .lines()
                    .rfind(|l| l.starts_with("Rehearsal failed"))
                    .unwrap_or("the rehearsal failed")
                    .to_string();
                Err(fail(format!("deploy rehearsal: {why}")))
            }
            Err(e) => Err(fail(format!("deploy rehearsal: {e}"))),
        }
    }

    /// Shows what a provider would do (no `--deploy`).
    fn dry_run(&mut self, d: &crate::plan::DeployPlan, log: &mut Log) {
        let fold = log.fold_start(
            &format!("dpl.{}", d.provider),
            &format!("deploy: {}", d.provider),
        );
        log.line(&format!(
            "Deploying with the {} provider (dry run: runway run deploys only with --deploy)",
            d.provider
        ));
        for line in deploy::describe(
            &d.config,
            &self.ctx.workspace.build_dir,
            &self.ctx.job.env,
            &self.ctx.settings.vars(),
            self.ctx.event,
            self.ctx.build_number,
        ) {
            log.line(&format!("  {line}"));
        }
        log.fold_end(fold);
        // Said only when there is an after_deploy to skip.
        if !strs(self.ctx.job.config.get("after_deploy")).is_empty() {
            log.line(&format!(
                "Skipping after_deploy of the {} provider: nothing was deployed",
                d.provider
            ));
        }
    }

    /// Runs a provider for real with the job shell's current environment, streaming its
    /// lines into the log.
    fn provider(
        &mut self,
        d: &crate::plan::DeployPlan,
        log: &mut Log,
    ) -> Result<(), deploy::DeployError> {
        let env_file = self.ctx.workspace.scratch.join("deploy-env");
        let dump = format!("env -0 > {}", shell::quote(&env_file.to_string_lossy()));
        if self.silent(&dump).is_err() {
            return Err(deploy::DeployError::Failed(
                "could not read the job's environment".into(),
            ));
        }
        let raw = std::fs::read(&env_file).unwrap_or_default();
        let _ = std::fs::remove_file(&env_file);
        let env: HashMap<String, String> = raw
            .split(|b| *b == 0)
            .filter_map(|kv| {
                let kv = String::from_utf8_lossy(kv);
                kv.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect();
        let (tx, rx) = std::sync::mpsc::channel::<String>();
        let ctx = self.ctx;
        std::thread::scope(|s| {
            let worker = s.spawn(move || {
                let tx = std::sync::Mutex::new(tx);
                let say = |line: String| {
                    let _ = tx.lock().expect("deploy log").send(line);
                };
                deploy::run(
                    &d.config,
                    &env,
                    &ctx.workspace.build_dir,
                    ctx.event,
                    ctx.build_number,
                    &say,
                )
            });
            for line in rx {
                log.line(&line);
            }
            worker.join().unwrap_or_else(|_| {
                Err(deploy::DeployError::Failed("the provider panicked".into()))
            })
        })
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
