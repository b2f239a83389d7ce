//! `runway run`: rehearse a build locally (or run it for a hook): plan it, run every
//! job in a fresh workspace, print a summary, exit with the build's code.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::time::Duration;

use super::{CmdError, RefArgs, resolve_target};
use crate::build::{self, BuildOptions, SharedOut};
use crate::cache::store::{LocalStore, default_root};
use crate::config::{
    self,
    diag::Level,
    model::{self, EnvVar},
};
use crate::exit;
use crate::job::{JobOptions, env::parse_dotenv, log::human};
use crate::plan::{self, Frequency, Settings};
use crate::source::Repo;
use crate::workspace::{GitOptions, Origin};

/// Options of `runway run`.
#[derive(Clone, Debug)]
pub struct RunArgs {
    /// PATH: a work tree, a bare repository or a plain directory.
    pub path: PathBuf,
    /// Branch, tag, event, commit.
    pub refs: RefArgs,
    /// `--job N`
    pub job: Option<String>,
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
}

/// Parses `90`, `90s`, `10m`, `1h` into a duration.
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
    Ok(Duration::from_secs_f64(secs))
}

fn settings_from(args: &RunArgs) -> Result<Vec<EnvVar>, CmdError> {
    let mut out = Vec::new();
    if let Some(f) = &args.env_file {
        let text = std::fs::read_to_string(f)
            .map_err(|e| CmdError::Usage(format!("cannot read --env-file {}: {e}", f.display())))?;
        out.extend(
            parse_dotenv(&text).map_err(|e| CmdError::Usage(format!("{}: {e}", f.display())))?,
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
    let loaded = config::load(&target.config_text);
    for d in &loaded.diagnostics {
        if d.level >= Level::Warning {
            writeln!(err, "{}", d.render(&target.config_name))?;
        }
    }
    if loaded.has_errors() {
        writeln!(
            err,
            "runway: {} is invalid; fix the errors above (runway lint shows them all)",
            target.config_name
        )?;
        return Ok(exit::USAGE);
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
    let terminal = std::io::stdout().is_terminal();
    let out: SharedOut = std::sync::Arc::new(std::sync::Mutex::new(Box::new(std::io::stdout())));
    let say = |text: &str| {
        let mut o = out.lock().expect("stdout");
        let _ = writeln!(o, "{text}");
    };
    if !plan.build.runs {
        say(&format!("Nothing to build: {}.", plan.build.reason));
        return Ok(exit::PASSED);
    }
    let jobs = build::select_jobs(&plan, args.job.as_deref()).map_err(CmdError::Usage)?;
    let repo = Repo::open(&args.path);
    let origin = match (&repo, &args.refs.commit) {
        (Some(r), _) if r.is_bare() || args.refs.commit.is_some() => Origin::Commit {
            repo: args.path.clone(),
            sha: event.commit.clone(),
        },
        _ => Origin::Disk(args.path.clone()),
    };
    let git = loaded.config.get("git");
    let git = GitOptions {
        depth: model::str_of(git.and_then(|g| g.get("depth"))).and_then(|d| d.parse().ok()),
        submodules: model::bool_of(git.and_then(|g| g.get("submodules")), true),
    };
    let opts = BuildOptions {
        only_job: args.job.clone(),
        parallel: args.parallel,
        keep_workspace: args.keep_workspace,
        job: JobOptions {
            no_output_timeout: args.no_output_timeout,
            timeout: args.timeout,
            cache_store: Some(LocalStore::new(
                args.cache_dir.clone().unwrap_or_else(default_root),
            )),
            default_branch: event.default_branch.clone(),
            deploy: args.deploy,
        },
        git,
        origin,
        settings,
        public_settings: Vec::new(),
        terminal,
    };
    let language = loaded.config.language();
    say(&format!(
        "runway: build #1 of {} ({} {}), {} job(s): {}",
        event.repo,
        if event.tag.is_some() { "tag" } else { "branch" },
        event.travis_branch(),
        jobs.len(),
        plan.build.reason
    ));
    let report = build::run(&plan, &jobs, &event, 1, &language, &opts, &out);

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
    let email = &plan.notifications.email;
    if email.enabled && !email.recipients.is_empty() {
        let passed = report.state == build::BuildState::Passed;
        let freq = if passed {
            email.on_success
        } else {
            email.on_failure
        };
        let verdict = match freq {
            Frequency::Never => "would not send".to_string(),
            _ => format!(
                "would send to {} (runway run mails only with --notify)",
                email.recipients.join(", ")
            ),
        };
        say(&format!("Email: {verdict}"));
    }
    say(&format!(
        "Build #1 {} in {} ({} job(s))",
        report.state.as_str(),
        human(report.duration),
        report.jobs.len()
    ));
    Ok(report.exit_code())
}
