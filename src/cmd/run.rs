//! `runway run`: rehearse a build locally. Parses the flags into a build service
//! request ([`crate::service`]) and renders its events on this terminal; the build
//! itself is the service's.

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{CmdError, RefArgs};
use crate::build::SharedOut;
use crate::config::{self, model::EnvVar};
use crate::job::env::parse_dotenv;
use crate::service::{self, MailOptions, Options, Record, Request, SandboxOptions, TextReporter};
use crate::settings::Settings;

/// The flags of `runway run`.
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
    /// Set by Ctrl-C: running jobs are killed.
    pub cancel: Option<crate::cancel::Cancel>,
    /// `--sandbox`, `--no-network`, `--memory`, `--max-processes`.
    pub sandbox: SandboxOptions,
    /// `--substitutes`: a runtime the machine cannot provide is replaced by what it
    /// has, named, instead of erroring the job.
    pub substitutes: bool,
    /// `--rehearse-deploy`: the codedeploy bundle rehearsed as the agent would run it.
    pub rehearse_deploy: bool,
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
    let settings = settings_from(args.env_file.as_deref(), &args.env)?;
    let mut sandbox = args.sandbox.clone();
    // Jobs never read the file the settings came from.
    sandbox.hide.extend(args.env_file.clone());
    let request = Request {
        path: args.path.clone(),
        refs: args.refs.clone(),
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
            terminal: std::io::stdout().is_terminal(),
            number: None,
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
    let out: SharedOut = Arc::new(std::sync::Mutex::new(Box::new(std::io::stdout())));
    Ok(service::run(&request, &mut TextReporter::new(out, err))?)
}
