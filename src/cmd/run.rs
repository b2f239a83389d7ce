//! `runway run`: rehearse a build locally. Parses the flags into a build service
//! request ([`crate::service`]) and renders its events on this terminal; the build
//! itself is the service's.

use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{CmdError, RefArgs};
use crate::build::{JobTap, SharedOut};
use crate::config::{self, model::EnvVar};
use crate::job::JobResult;
use crate::job::env::parse_dotenv;
use crate::service::{
    self, MailOptions, Options, Record, Reporter, Request, SandboxOptions, TextReporter,
};
use crate::settings::Settings;

/// The flags of `runway run`, parsed once and read from here down.
#[derive(Clone, clap::Args)]
pub struct RunArgs {
    /// A git work tree, a bare repository, or a plain directory.
    #[arg(default_value = ".")]
    pub path: PathBuf,
    /// Branch, tag, event, commit message.
    #[command(flatten)]
    pub refs: RefFlags,
    /// Build this commit in a clean clone instead of the files on disk.
    #[arg(long)]
    pub commit: Option<String>,
    /// Run only this job (`1.2` or `2`).
    #[arg(long)]
    pub job: Option<String>,
    /// Run only the jobs for this os (`linux`): jobs for another os cannot run here.
    #[arg(long)]
    pub os: Option<String>,
    /// Run up to N jobs of a stage at once.
    #[arg(long, default_value_t = 1)]
    pub parallel: usize,
    /// A repository setting, secret: NAME=value (repeatable).
    #[arg(long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Repository settings from a dotenv file, secret.
    #[arg(long)]
    pub env_file: Option<PathBuf>,
    /// Where caches are kept (default: $XDG_CACHE_HOME/runway).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Keep each job's workspace and print where it is.
    #[arg(long)]
    pub keep_workspace: bool,
    /// The job time limit (90, 90s, 10m, 1h).
    #[arg(long, default_value = crate::limits::JOB_TIMEOUT_ARG, value_parser = parse_duration)]
    pub timeout: Duration,
    /// The limit on silence: no output for this long ends the job.
    #[arg(long, default_value = crate::limits::NO_OUTPUT_TIMEOUT_ARG, value_parser = parse_duration)]
    pub no_output_timeout: Duration,
    /// Deploy for real (s3, codedeploy); without it deploys are a dry run.
    #[arg(long)]
    pub deploy: bool,
    /// Record the build and send its mail (RUNWAY_SMTP_URL, RUNWAY_SMTP_FROM).
    #[arg(long)]
    pub notify: bool,
    /// Write the build's mail as an .eml file into DIR (and show it).
    #[arg(long)]
    pub mail_dir: Option<PathBuf>,
    /// Show the mail the build would send (without --notify only its subject and
    /// recipients are said).
    #[arg(long)]
    pub show_mail: bool,
    /// For programs: every event of the build as one JSON object per line on standard
    /// output (`started`, `stage`, `log` with a job's log text, `job_ended`, `ended`,
    /// `mail`, `finished`…), nothing else there.
    #[arg(long)]
    pub json: bool,
    /// The jobs' logs as Travis wrote them (fold and time markers, escapes), as they
    /// are stored; without it a pipe or a file gets plain text for people.
    #[arg(long, conflicts_with = "json")]
    pub raw: bool,
    /// Where jobs run and within what.
    #[command(flatten)]
    pub sandbox: SandboxFlags,
    /// Rehearse on what this machine has: a language version (or JDK) it cannot
    /// provide is replaced by its own, named in the log, summary and mail, instead
    /// of erroring the job.
    #[arg(long)]
    pub substitutes: bool,
    /// After the codedeploy provider (dry run or --deploy), deploy the bundle it
    /// ships on a throwaway copy of this machine as the CodeDeploy agent would
    /// (`runway codedeploy rehearse`); a failed rehearsal errors the job.
    #[arg(long)]
    pub rehearse_deploy: bool,
    /// Set by Ctrl-C: running jobs are killed.
    #[arg(skip)]
    pub cancel: Option<crate::cancel::Cancel>,
}

/// Where a job runs and within what: `--sandbox`, `--no-network`, `--memory`,
/// `--max-processes`, `--disk`.
#[derive(Clone, clap::Args)]
pub struct SandboxFlags {
    /// Where jobs run: `namespaces` (a throwaway copy of this machine per job) or
    /// `none` (the bare host, with a warning).
    #[arg(long, value_enum, default_value = "namespaces")]
    pub sandbox: crate::sandbox::Mode,
    /// Jobs get loopback only (runway.toml: `network = false`).
    #[arg(long)]
    pub no_network: bool,
    /// Memory per job (512M, 2G), where cgroups are delegated to runway.
    #[arg(long, value_parser = crate::sandbox::cgroup::parse_size)]
    pub memory: Option<u64>,
    /// Processes (and threads) per job at once, where cgroups are delegated.
    #[arg(long)]
    pub max_processes: Option<u64>,
    /// Disk per job (10G by default; `none`: the host's disk): the job's workspace
    /// is a filesystem of this size.
    #[arg(long, value_parser = crate::sandbox::disk::parse_budget)]
    pub disk: Option<crate::sandbox::disk::Budget>,
}

impl SandboxFlags {
    /// The sandbox these flags ask for.
    pub fn options(&self) -> SandboxOptions {
        SandboxOptions {
            mode: self.sandbox,
            no_network: self.no_network,
            limits: crate::sandbox::cgroup::Limits {
                memory: self.memory,
                processes: self.max_processes,
            },
            disk: self.disk.unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// Which push to plan or rehearse: `--branch`, `--tag`, `--event`, `--commit-message`.
#[derive(Clone, clap::Args)]
pub struct RefFlags {
    /// The branch pushed (default: the current branch).
    #[arg(long, conflicts_with = "tag")]
    pub branch: Option<String>,
    /// The tag pushed.
    #[arg(long)]
    pub tag: Option<String>,
    /// push, pull_request, api or cron.
    #[arg(long, default_value = "push")]
    pub event: crate::event::EventType,
    /// The commit message (default: HEAD's).
    #[arg(long)]
    pub commit_message: Option<String>,
}

impl RefFlags {
    /// The refs these flags name, at `commit` when given.
    pub fn ref_args(&self, commit: Option<String>) -> RefArgs {
        RefArgs {
            branch: self.branch.clone(),
            tag: self.tag.clone(),
            event: self.event,
            commit_message: self.commit_message.clone(),
            commit,
            commit_range: None,
            repo_slug: None,
            default_branch: None,
            pull_request: None,
            request: None,
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

/// The settings of `--env-file` then `--env`, all secret.
pub fn settings_from(
    env_file: Option<&std::path::Path>,
    env: &[String],
) -> Result<Settings, CmdError> {
    let mut out = Vec::new();
    if let Some(f) = env_file {
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
    for kv in env {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CmdError::Usage(format!("--env {kv}: expected NAME=value")));
        };
        out.push(EnvVar {
            name: k.to_string(),
            value: v.to_string(),
        });
    }
    Ok(Settings::secret(out))
}

/// Runs the build; returns the exit code.
pub fn run(args: &RunArgs, err: &mut dyn Write) -> Result<i32, CmdError> {
    // A run ends when its last line is written: what its jobs held is torn down by a
    // process of its own (made first, while runway is one small thread).
    crate::behind::one_shot();
    let settings = settings_from(args.env_file.as_deref(), &args.env)?;
    let mut sandbox = args.sandbox.options();
    // What every run does whatever its `.travis.yml` says, begun at once on other
    // threads while the commit is read and planned: Travis's schema parsed, the job's
    // disk made (a build that does not run releases it unused).
    crate::config::schema::parse_ahead();
    if let (crate::sandbox::Mode::Namespaces, Some(size), false) =
        (sandbox.mode, sandbox.disk.0, args.keep_workspace)
        // SAFETY: geteuid(2) cannot fail.
        && unsafe { libc::geteuid() } == 0
    {
        crate::sandbox::disk::make_ahead(&crate::store::default_dir(), size);
    }
    // Jobs never read the file the settings came from.
    sandbox.hide.extend(args.env_file.clone());
    let request = Request {
        path: args.path.clone(),
        refs: args.refs.ref_args(args.commit.clone()),
        settings,
        options: Options {
            job: args.job.clone(),
            os: args.os.clone(),
            parallel: args.parallel,
            cache_dir: args.cache_dir.clone(),
            keep_workspace: args.keep_workspace,
            timeout: args.timeout,
            no_output_timeout: args.no_output_timeout,
            deploy: args.deploy,
            substitutes: args.substitutes,
            rehearse_deploy: args.rehearse_deploy,
            sandbox,
            output: if args.json || args.raw {
                crate::options::Output::Raw
            } else if std::io::stdout().is_terminal() {
                crate::options::Output::Terminal
            } else {
                crate::options::Output::Plain
            },
        },
        mail: MailOptions {
            send: args.notify,
            dir: args.mail_dir.clone(),
            show: args.show_mail,
            smtp: None,
            public_url: None,
        },
        record: if args.notify { Record::New } else { Record::No },
        state_dir: crate::store::default_dir(),
        database_url: None,
        controls: service::Controls {
            cancel: args.cancel.clone(),
            ..Default::default()
        },
    };
    if args.json {
        let lines = Arc::new(JsonLines::new(Box::new(std::io::stdout())));
        let request = Request {
            controls: service::Controls {
                tap: Some(lines.clone()),
                ..request.controls
            },
            ..request
        };
        return Ok(service::run(&request, &mut JsonReporter(lines))?);
    }
    let out: SharedOut = Arc::new(std::sync::Mutex::new(Box::new(std::io::stdout())));
    Ok(service::run(&request, &mut TextReporter::new(out, err))?)
}

/// `--json`: the build's events and its jobs' logs, one JSON object per line.
pub struct JsonLines {
    out: Mutex<Box<dyn Write + Send>>,
    /// Per job, the end of its last chunk that is not yet whole UTF-8.
    partial: Mutex<HashMap<String, Vec<u8>>>,
}

impl JsonLines {
    /// Lines into `out`.
    pub fn new(out: Box<dyn Write + Send>) -> JsonLines {
        JsonLines {
            out: Mutex::new(out),
            partial: Mutex::new(HashMap::new()),
        }
    }

    fn put(&self, value: &serde_json::Value) {
        let mut o = self.out.lock().expect("json output");
        let _ = writeln!(o, "{value}");
        let _ = o.flush();
    }
}

impl JobTap for JsonLines {
    fn write(&self, number: &str, bytes: &[u8]) {
        let text = {
            let mut partial = self.partial.lock().expect("partial");
            let held = partial.entry(number.to_string()).or_default();
            held.extend_from_slice(bytes);
            // Whole characters go now; a character cut by the chunk waits for the next.
            let whole = match std::str::from_utf8(held) {
                Ok(_) => held.len(),
                Err(e) if e.error_len().is_none() => e.valid_up_to(),
                Err(_) => held.len(),
            };
            let text = String::from_utf8_lossy(&held[..whole]).into_owned();
            held.drain(..whole);
            text
        };
        if !text.is_empty() {
            self.put(&serde_json::json!({ "event": "log", "job": number, "text": text }));
        }
    }

    fn start(&self, number: &str) {
        self.put(&serde_json::json!({ "event": "job_started", "job": number }));
    }

    fn event(&self, number: &str, event: &crate::job::log::JobEvent<'_>) {
        self.put(&crate::events::job_json(number, event));
    }

    fn end(&self, number: &str, result: JobResult) {
        let rest = self.partial.lock().expect("partial").remove(number);
        if let Some(rest) = rest.filter(|r| !r.is_empty()) {
            let text = String::from_utf8_lossy(&rest).into_owned();
            self.put(&serde_json::json!({ "event": "log", "job": number, "text": text }));
        }
        self.put(
            &serde_json::json!({ "event": "job_ended", "job": number, "result": result.as_str() }),
        );
    }
}

/// The reporter of `--json`: events as [`crate::events::json`] renders them.
struct JsonReporter(Arc<JsonLines>);

impl Reporter for JsonReporter {
    fn out(&self) -> SharedOut {
        // The jobs' logs reach the lines through the tap, per job.
        Arc::new(Mutex::new(Box::new(std::io::sink())))
    }
    fn event(&mut self, event: service::Event<'_>) {
        self.0.put(&crate::events::json(&event));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_defaults_are_these_limits() {
        use crate::limits::*;
        assert_eq!(parse_duration(JOB_TIMEOUT_ARG), Ok(JOB_TIMEOUT));
        assert_eq!(parse_duration(NO_OUTPUT_TIMEOUT_ARG), Ok(NO_OUTPUT_TIMEOUT));
    }
}
