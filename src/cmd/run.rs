//! `runway run`: rehearse a build locally (or run it for a hook): plan it, run every
//! job in a fresh workspace, print a summary, exit with the build's code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use super::{CmdError, RefArgs, resolve_target};
use crate::build::{self, BuildOptions, BuildReport, BuildState, SharedOut};
use crate::cache::store::{LocalStore, default_root};
use crate::config::{
    self,
    diag::Level,
    model::{self, EnvVar},
};
use crate::event::BuildEvent;
use crate::exit;
use crate::job::{JobOptions, JobResult, env::parse_dotenv, log::human};
use crate::mask::Masker;
use crate::notify::{self, MailFacts, MailJob};
use crate::plan::{self, Plan, Settings};
use crate::source::Repo;
use crate::store::{self, BuildRow, JobRow, NewBuild, Store};
use crate::workspace::{GitOptions, Origin};

/// Options of `runway run` (and of builds the hook and the server run).
#[derive(Clone, Default)]
pub struct RunArgs {
    /// PATH: a work tree, a bare repository or a plain directory.
    pub path: PathBuf,
    /// Branch, tag, event, commit.
    pub refs: RefArgs,
    /// `--job N`
    pub job: Option<String>,
    /// `--os OS`: only the jobs for this os.
    pub os: Option<String>,
    /// `--parallel N`
    pub parallel: usize,
    /// `--env K=V`
    pub env: Vec<String>,
    /// `--env-file FILE`
    pub env_file: Option<PathBuf>,
    /// `--cache-dir DIR`
    pub cache_dir: Option<PathBuf>,
    /// `--keep-workspace`
    pub keep_workspace: bool,
    /// `--timeout DUR`
    pub timeout: Duration,
    /// `--no-output-timeout DUR`
    pub no_output_timeout: Duration,
    /// `--deploy`: run the deploy providers for real.
    pub deploy: bool,
    /// `--notify`: record the build and send its mail.
    pub notify: bool,
    /// `--mail-dir DIR`: write the mail as an .eml file.
    pub mail_dir: Option<PathBuf>,
    /// `--show-mail`: show the mail's text (also shown with `--mail-dir`).
    pub show_mail: bool,
    /// The mail server (default: `RUNWAY_SMTP_URL`/`RUNWAY_SMTP_FROM`).
    pub smtp: Option<notify::SmtpConfig>,
    /// The server's URL, for links in mails (default: `RUNWAY_PUBLIC_URL`).
    pub public_url: Option<String>,
    /// A build the queue already recorded (the server's builds).
    pub recorded: Option<BuildRow>,
    /// Set to cancel the build; running jobs are killed.
    pub cancel: Option<Arc<AtomicBool>>,
    /// Job slots shared with the server's other builds.
    pub slots: Option<Arc<crate::build::JobSlots>>,
    /// Where the live log goes (default: stdout).
    pub out: Option<SharedOut>,
    /// Where each job's own log also goes as it runs (a server's build page).
    pub tap: Option<Arc<dyn crate::build::JobTap>>,
    /// Settings that are not secret.
    pub public_settings: Vec<String>,
    /// The build store's directory (default: `RUNWAY_STATE_DIR` and friends).
    pub state_dir: Option<PathBuf>,
    /// Where jobs run: `--sandbox`, runway.toml's `sandbox`, `hide` and `network`.
    pub sandbox: SandboxArgs,
    /// `--substitutes` (runway.toml: `substitutes = true`): a runtime the machine
    /// cannot provide is replaced by what it has, named, instead of erroring the job.
    pub substitutes: bool,
    /// `--rehearse-deploy`: the codedeploy bundle rehearsed as the agent would run it.
    pub rehearse_deploy: bool,
}

/// How jobs are isolated ([`crate::sandbox`]).
#[derive(Clone, Debug, Default)]
pub struct SandboxArgs {
    /// `--sandbox namespaces|none`.
    pub mode: crate::sandbox::Mode,
    /// `network = false`: the job gets loopback only.
    pub no_network: bool,
    /// More paths jobs must not see (runway.toml's `hide`, the config file itself).
    pub hide: Vec<PathBuf>,
    /// The server made a sandbox at start (and warned about `none`): skip it per build.
    pub checked: bool,
    /// Memory and processes per job (`--memory`, `--max-processes`; runway.toml's
    /// `job_memory`, `job_processes`).
    pub limits: crate::sandbox::cgroup::Limits,
}

impl SandboxArgs {
    /// The sandbox for a build whose state and caches live in `state_dir` and
    /// `cache_root`: made once here to know it works (unless the server did), or the
    /// bare host with its warning said.
    fn make(
        &self,
        state_dir: &std::path::Path,
        cache_root: &std::path::Path,
        env_file: Option<&std::path::Path>,
        say: &dyn Fn(&str),
    ) -> Result<Arc<dyn crate::sandbox::Sandbox>, crate::sandbox::SandboxError> {
        use crate::sandbox::{BARE_WARNING, Bare, Mode, Namespaces, Policy};
        match self.mode {
            Mode::None => {
                if !self.checked {
                    say(&format!("runway: warning: {BARE_WARNING}"));
                }
                Ok(Arc::new(Bare))
            }
            Mode::Namespaces => {
                let mut hide = vec![state_dir.to_path_buf(), cache_root.to_path_buf()];
                hide.extend(env_file.map(|f| f.to_path_buf()));
                hide.extend(crate::sandbox::credential_paths());
                hide.extend(self.hide.iter().cloned());
                let mut ns = Namespaces::new(Policy {
                    no_network: self.no_network,
                    hide,
                    show: vec![crate::runtime::toolchain_dir()],
                });
                if !self.limits.is_empty() {
                    match crate::sandbox::cgroup::Hierarchy::open(&self.limits) {
                        Ok(h) => ns = ns.with_limits(h, self.limits),
                        Err(why) if !self.checked => say(&format!(
                            "runway: warning: job memory and process limits are not enforced: {why}"
                        )),
                        Err(_) => {}
                    }
                }
                if !self.checked {
                    ns.check()?;
                }
                Ok(Arc::new(ns))
            }
        }
    }
}

/// The longest `--timeout` or `--no-output-timeout`: a week.
pub const MAX_DURATION: Duration = Duration::from_secs(7 * 24 * 3600);

/// Parses `90`, `90s`, `10m`, `1h` into a duration from 1 ms to [`MAX_DURATION`]
/// (anything else is an error naming the range, never a panic).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = s.split_at(
        s.find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(s.len()),
    );
    let n: f64 = num
        .parse()
        .map_err(|_| format!("\"{s}\" is not a duration (try 90, 90s, 10m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("\"{s}\": unknown unit \"{unit}\" (use s, m or h)")),
    };
    let range = "durations go from 1ms to 168h (a week)";
    if !secs.is_finite() || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("\"{s}\" is too long: {range}"));
    }
    if secs < 0.001 {
        return Err(format!("\"{s}\" is too short: {range}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

fn settings_from(args: &RunArgs) -> Result<Vec<EnvVar>, CmdError> {
    let mut out = Vec::new();
    if let Some(f) = &args.env_file {
        // Bounded like a .travis.yml: a settings file is small, and /dev/zero is not one.
        let bytes = config::read_file(f)
            .map_err(|e| CmdError::Usage(format!("cannot read --env-file {}: {e}", f.display())))?;
        let text = config::decode(&bytes).map_err(|d| {
            CmdError::Usage(format!("--env-file {}", d.render(&f.display().to_string())))
        })?;
        out.extend(
            parse_dotenv(text).map_err(|e| CmdError::Usage(format!("{}: {e}", f.display())))?,
        );
    }
    for kv in &args.env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CmdError::Usage(format!("--env {kv}: expected NAME=value")));
        };
        out.push(EnvVar {
            name: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(out)
}

/// Runs the build; returns the exit code.
pub fn run(args: &RunArgs, err: &mut dyn Write) -> Result<i32, CmdError> {
    let target = resolve_target(&args.path, &args.refs)?;
    // The work tree's root when PATH is one of its subdirectories.
    let root = target.dir.clone();
    let loaded = config::load_bytes(&target.config_bytes);
    for d in &loaded.diagnostics {
        if d.level >= Level::Warning {
            writeln!(err, "{}", d.render(&target.config_name))?;
        }
    }
    let settings = settings_from(args)?;
    let event = target.event;
    let plan = plan::plan(
        &loaded.config,
        &event,
        &Settings {
            build_number: 1,
            env: settings.clone(),
        },
    );
    let terminal = args.out.is_none() && std::io::stdout().is_terminal();
    let out: SharedOut = args
        .out
        .clone()
        .unwrap_or_else(|| Arc::new(std::sync::Mutex::new(Box::new(std::io::stdout()))));
    let say = |text: &str| {
        let mut o = out.lock().expect("stdout");
        let _ = writeln!(o, "{text}");
    };
    // A config that cannot be built: the first error, at its place. A server build
    // is recorded as errored with it, and mailed as the config (or Travis's default
    // policy, when nothing could be read) says.
    let invalid = match (
        &plan.error,
        loaded.diagnostics.iter().find(|d| d.level == Level::Error),
    ) {
        (_, Some(d)) => Some(d.render(&target.config_name)),
        (Some(e), None) => Some(e.render(&target.config_name)),
        (None, None) => None,
    };
    if let Some(why) = invalid {
        if plan.error.is_some() && !loaded.has_errors() {
            writeln!(err, "{why}")?;
        } else {
            writeln!(
                err,
                "runway: {} is invalid; fix the errors above (runway lint shows them all)",
                target.config_name
            )?;
        }
        if let Some(row) = &args.recorded {
            if let Ok(mut st) =
                Store::open(&args.state_dir.clone().unwrap_or_else(store::default_dir))
            {
                let _ = st.set_state(row.id, store::Status::Errored, Some(&why));
            }
            let report = BuildReport {
                state: BuildState::Errored,
                jobs: Vec::new(),
                duration: Duration::ZERO,
                timed_out: false,
            };
            let previous = row.previous_state;
            let masker = Masker::for_settings(&settings, &args.public_settings);
            let facts = (row.number, previous, Some(why.as_str()));
            mail(&plan, &event, &report, facts, &masker, false, args, &say);
        }
        return Ok(exit::USAGE);
    }
    if !plan.build.runs {
        say(&format!("Nothing to build: {}.", plan.build.reason));
        if let Some(row) = &args.recorded
            && let Ok(mut st) =
                Store::open(&args.state_dir.clone().unwrap_or_else(store::default_dir))
        {
            let _ = st.set_state(
                row.id,
                store::Status::Canceled,
                Some(&format!("not built: {}", plan.build.reason)),
            );
        }
        return Ok(exit::PASSED);
    }
    let state_dir = args.state_dir.clone().unwrap_or_else(store::default_dir);
    let cache_root = args.cache_dir.clone().unwrap_or_else(default_root);
    if args.recorded.is_none() {
        // (The server does this once at start, for every build it runs.)
        let ended = crate::job::shell::end_orphans(&store::process_dir(&state_dir));
        if ended > 0 {
            say(&format!(
                "runway: ended {ended} job(s) a runway that died left running, and removed their workspaces"
            ));
        }
    }
    let sandbox = match args
        .sandbox
        .make(&state_dir, &cache_root, args.env_file.as_deref(), &say)
    {
        Ok(s) => s,
        Err(e) => {
            writeln!(err, "runway: the job sandbox cannot be made here: {e}")?;
            writeln!(err, "runway: {}", e.hint())?;
            return Ok(exit::ERRORED);
        }
    };
    // With --notify the build is recorded: it gets its number and remembers the
    // previous finished build of its branch (what "change" compares with).
    let mut recorded = args.recorded.clone();
    let mut store = None;
    if recorded.is_some() {
        store = Some(Store::open(&state_dir)?);
    } else if args.notify {
        let mut st = Store::open(&state_dir)?;
        let row = st.begin(&NewBuild {
            repo: event.repo.clone(),
            branch: event.branch.clone().filter(|_| event.tag.is_none()),
            tag: event.tag.clone(),
            commit: event.commit.clone(),
            event: event.event.as_str().to_string(),
            message: event.commit_message.clone(),
            commit_range: event.commit_range.clone(),
        })?;
        recorded = Some(row);
        store = Some(st);
    }
    let number = recorded.as_ref().map_or(1, |r| r.number);
    // The author is known once the commit is read (a webhook may not say).
    if let (Some(st), Some(row), Some(author)) =
        (store.as_mut(), recorded.as_ref(), event.author.as_ref())
    {
        let _ = st.set_author(row.id, &author.name);
    }
    let plan = if number == 1 {
        plan
    } else {
        plan::plan(
            &loaded.config,
            &event,
            &Settings {
                build_number: number,
                env: settings.clone(),
            },
        )
    };
    let jobs = build::select_jobs(&plan, args.job.as_deref(), args.os.as_deref())
        .map_err(CmdError::Usage)?;
    let repo = Repo::open(&root);
    let origin = match (&repo, &args.refs.commit) {
        (Some(r), _) if r.is_bare() || args.refs.commit.is_some() => Origin::Commit {
            repo: root.clone(),
            sha: event.commit.clone(),
        },
        _ => Origin::Disk(root.clone()),
    };
    let git = loaded.config.get("git");
    let git = GitOptions {
        depth: model::str_of(git.and_then(|g| g.get("depth"))).and_then(|d| d.parse().ok()),
        submodules: model::bool_of(git.and_then(|g| g.get("submodules")), true),
    };
    let opts = BuildOptions {
        only_job: args.job.clone(),
        parallel: args.parallel,
        slots: args.slots.clone(),
        keep_workspace: args.keep_workspace,
        job: JobOptions {
            no_output_timeout: args.no_output_timeout,
            timeout: args.timeout,
            cache_store: Some(LocalStore::new(cache_root)),
            default_branch: event.default_branch.clone(),
            deploy: args.deploy,
            cancel: args.cancel.clone(),
            // Every build records its jobs' process groups and workspaces; the next
            // runway ends and removes what a crash left.
            process_dir: Some(store::process_dir(&state_dir)),
            max_log_bytes: crate::job::MAX_LOG_BYTES,
            sandbox,
            substitutes: args.substitutes,
            rehearse_deploy: args.rehearse_deploy,
        },
        git,
        origin,
        settings,
        public_settings: args.public_settings.clone(),
        terminal,
        tap: args.tap.clone(),
    };
    let language = loaded.config.language();
    say(&format!(
        "runway: build #{number} of {} ({} {}), {} job(s): {}",
        event.repo,
        if event.tag.is_some() { "tag" } else { "branch" },
        event.travis_branch(),
        jobs.len(),
        plan.build.reason
    ));
    let report = build::run(&plan, &jobs, &event, number, &language, &opts, &out);
    // One masker for what is recorded and what is mailed.
    let masker = Masker::for_settings(&opts.settings, &opts.public_settings);
    if let (Some(st), Some(row)) = (store.as_mut(), recorded.as_ref()) {
        let rows: Vec<JobRow> = report
            .jobs
            .iter()
            .map(|r| JobRow {
                number: r.job.number.clone(),
                name: r.job.name.clone(),
                // What makes the job this job: its matrix values (jdk, python, …) and
                // env, masked (the page's and the API's "env").
                env: notify::job_label(&r.job, &masker),
                result: r.outcome.result.as_str().to_string(),
                reason: masker.mask_all(&r.outcome.reason),
                duration_ms: r.outcome.duration.as_millis() as u64,
                log: r.log.clone(),
            })
            .collect();
        if let Err(e) = st.finish(row.id, report.state, &rows) {
            say(&format!("warning: could not record the build: {e}"));
        }
    }

    // The summary: one line per job, then the build.
    say("");
    say("── Summary");
    for r in &report.jobs {
        let m: Vec<String> = r
            .job
            .matrix
            .iter()
            .map(|(k, v)| format!("{k}: {v}"))
            .collect();
        let name = r
            .job
            .name
            .as_deref()
            .map(|n| format!(" \"{n}\""))
            .unwrap_or_default();
        say(&format!(
            "Job {}{name}{}: {}{} in {} ({})",
            r.job.number,
            if m.is_empty() {
                String::new()
            } else {
                format!(" ({})", m.join(", "))
            },
            r.outcome.result.as_str(),
            if r.job.allow_failure {
                " (allowed to fail)"
            } else {
                ""
            },
            human(r.outcome.duration),
            r.outcome.reason
        ));
    }
    let previous = recorded.as_ref().and_then(|r| r.previous_state);
    let facts = (number, previous, None);
    mail(
        &plan,
        &event,
        &report,
        facts,
        &masker,
        opts.job.deploy,
        args,
        &say,
    );
    let on_substitutes = report
        .jobs
        .iter()
        .any(|j| !j.outcome.substituted.is_empty());
    say(&format!(
        "Build #{number} {}{} in {} ({} job(s))",
        report.state.as_str(),
        if on_substitutes {
            " on substitutes (not what .travis.yml asks for)"
        } else {
            ""
        },
        human(report.duration),
        report.jobs.len()
    ));
    Ok(report.exit_code())
}

/// Decides, composes and sends (or shows) the build's mail. A mail failure is logged
/// and never changes the build's exit code.
#[allow(clippy::too_many_arguments)]
fn mail(
    plan: &Plan,
    event: &BuildEvent,
    report: &BuildReport,
    (number, previous, error): (u64, Option<store::Status>, Option<&str>),
    masker: &Masker,
    deployed: bool,
    args: &RunArgs,
    say: &dyn Fn(&str),
) {
    let policy = &plan.notifications.email;
    let (to, bad) = notify::split_recipients(&policy.recipients);
    for b in &bad {
        say(&format!(
            "warning: email recipient \"{b}\" is not an email address; it is skipped"
        ));
    }
    if !policy.enabled {
        say(&format!("Email: none ({})", policy.reason));
        return;
    }
    if !notify::should_send(policy, report.state, previous) || to.is_empty() {
        let why = if to.is_empty() {
            "no recipient".to_string()
        } else {
            format!(
                "{} with on_{}: {}",
                report.state.as_str(),
                if report.state == BuildState::Passed {
                    "success"
                } else {
                    "failure"
                },
                if report.state == BuildState::Passed {
                    policy.on_success.as_str()
                } else {
                    policy.on_failure.as_str()
                }
            )
        };
        say(&format!("Email: not sent ({why})"));
        return;
    }
    let facts = MailFacts {
        repo: event.repo.clone(),
        number,
        branch: event.travis_branch().to_string(),
        commit: event.commit.clone(),
        author: event
            .author
            .as_ref()
            .map(|p| format!("{} <{}>", p.name, p.email))
            .unwrap_or_else(|| "unknown".into()),
        message: masker.mask_all(&event.commit_message),
        state: report.state,
        previous,
        cron: event.event == crate::event::EventType::Cron,
        seconds: report.duration.as_secs_f64(),
        jobs: report
            .jobs
            .iter()
            .map(|r| {
                let failed = matches!(r.outcome.result, JobResult::Failed | JobResult::Errored);
                MailJob {
                    number: r.job.number.clone(),
                    label: notify::job_label(&r.job, masker),
                    result: r.outcome.result.as_str().to_string(),
                    seconds: r.outcome.duration.as_secs_f64(),
                    tail: failed.then(|| masker.mask_all(&notify::log_tail(&r.log, 40))),
                    substituted: r.outcome.substituted.clone(),
                }
            })
            .collect(),
        deploys: report
            .jobs
            .iter()
            .flat_map(|r| {
                r.job.deploys.iter().map(move |d| {
                    let did = if !d.fires {
                        format!("skipped ({})", d.reason)
                    } else if r.outcome.result != JobResult::Passed {
                        "not run (the job did not pass)".to_string()
                    } else if deployed {
                        "deployed".to_string()
                    } else {
                        "dry run (no --deploy)".to_string()
                    };
                    // A passed job's rehearsal succeeded (a failed one errors the job).
                    let rehearsed = if args.rehearse_deploy
                        && d.provider == "codedeploy"
                        && d.fires
                        && r.outcome.result == JobResult::Passed
                    {
                        "; the bundle rehearsed as the agent would deploy it: succeeded"
                    } else {
                        ""
                    };
                    format!("job {}: {}: {did}{rehearsed}", r.job.number, d.provider)
                })
            })
            .collect(),
        url: args
            .public_url
            .clone()
            .or_else(|| std::env::var("RUNWAY_PUBLIC_URL").ok())
            .map(|u| notify::build_url(&u, &event.repo, number)),
        error: error.map(str::to_string),
    };
    let subject = notify::subject(&facts);
    let recipients: Vec<String> = to.iter().map(ToString::to_string).collect();
    let smtp = args
        .smtp
        .clone()
        .map(Ok)
        .unwrap_or_else(notify::SmtpConfig::from_env);
    let from = smtp.as_ref().map(|c| c.from.clone()).unwrap_or_else(|_| {
        "runway <runway@localhost>"
            .parse()
            .expect("a valid default sender")
    });
    let message = match notify::message(&from, &to, &facts) {
        Ok(m) => m,
        Err(e) => {
            say(&format!("Email: could not compose the message: {e}"));
            return;
        }
    };
    if let Some(dir) = &args.mail_dir {
        let path = dir.join(format!("build-{number}.eml"));
        match std::fs::create_dir_all(dir).and_then(|_| std::fs::write(&path, message.formatted()))
        {
            Ok(()) => say(&format!("Email: written to {}", path.display())),
            Err(e) => say(&format!("Email: could not write {}: {e}", path.display())),
        }
    }
    if !args.notify {
        say(&format!(
            "Email: would send \"{subject}\" to {} (runway run mails only with --notify{})",
            recipients.join(", "),
            if args.show_mail || args.mail_dir.is_some() {
                ""
            } else {
                "; --show-mail shows it"
            }
        ));
        // The mail's text only when asked for: it is 15 to 40 lines.
        if args.show_mail || args.mail_dir.is_some() {
            let (text, _) = notify::compose(&facts);
            for line in text.lines() {
                say(&format!("  | {line}"));
            }
        }
        return;
    }
    let cfg = match smtp {
        Ok(c) => c,
        Err(e) => {
            say(&format!("Email: not sent: {e}"));
            return;
        }
    };
    let mut log = |line: String| say(&line);
    match notify::send(&cfg, &message, 3, &mut log) {
        Ok(()) => {
            tracing::info!(repo = %event.repo, number, to = recipients.len(), "mail sent");
            say(&format!(
                "Email: sent \"{subject}\" to {}",
                recipients.join(", ")
            ))
        }
        // The server keeps the mail and tries again later.
        Err(e) if args.recorded.is_some() => {
            let envelope = message.envelope();
            let mail = store::OutboxMail {
                id: 0,
                build_id: args.recorded.as_ref().map_or(0, |r| r.id),
                sender: envelope.from().map(ToString::to_string).unwrap_or_default(),
                recipients: envelope.to().iter().map(ToString::to_string).collect(),
                message: message.formatted(),
                attempts: 1,
            };
            let queued = Store::open(&args.state_dir.clone().unwrap_or_else(store::default_dir))
                .and_then(|mut st| st.queue_mail(&mail, &e.to_string(), notify::retry_at(1)));
            tracing::warn!(repo = %event.repo, number, error = %e, "mail not sent yet; kept for a retry");
            match queued {
                Ok(()) => say(&format!(
                    "Email: not sent yet ({e}); runway serve tries again later"
                )),
                Err(q) => say(&format!(
                    "Email: not sent: {e}; could not keep it for later: {q}"
                )),
            }
        }
        Err(e) => say(&format!("Email: not sent: {e}; the build result stands")),
    }
}
