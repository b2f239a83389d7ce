//! `runway serve --config runway.toml [--listen ADDR]` and `runway restart BUILD`.

use std::io::Write;
use std::path::{Path, PathBuf};

use super::CmdError;
use crate::exit;
use crate::runway_toml::ServerConfig;
use crate::server::{self, AppState};
use crate::store;

/// How the server's event log is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line per event for people: time, level, what happened and its fields.
    Human,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Sends runway's own events (targets `runway::…`; not the AWS SDK's or hyper's) to
/// stdout, one line each, from here on.
fn log_events(format: LogFormat) {
    use tracing_subscriber::prelude::*;
    let ours = tracing_subscriber::filter::filter_fn(|m| {
        m.target().starts_with("runway") && *m.level() <= tracing::Level::INFO
    });
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout())
        && std::env::var_os("NO_COLOR").is_none();
    let layer = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stdout)
        .with_target(false)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Human => tracing_subscriber::registry()
            .with(layer.with_filter(ours))
            .try_init(),
        LogFormat::Json => tracing_subscriber::registry()
            .with(layer.json().flatten_event(true).with_filter(ours))
            .try_init(),
    };
}

/// The flags of `runway serve`.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// The server configuration.
    #[arg(long, default_value = "runway.toml")]
    pub config: PathBuf,
    /// Listen here instead of `listen` in the config (port 0: a free port).
    #[arg(long)]
    pub listen: Option<String>,
    /// The server's log of events (queued, started, job ended, ended, mailed,
    /// refused): one line each, `human` or `json`.
    #[arg(long, value_enum, default_value = "human")]
    pub log_format: LogFormat,
}

/// The flags of `runway restart`.
#[derive(clap::Args)]
pub struct RestartArgs {
    /// The build number.
    pub build: String,
    /// The repository, when several have this number.
    #[arg(long)]
    pub repo: Option<String>,
    /// runway.toml: its `database_url_env` names the PostgreSQL store to use.
    #[arg(long)]
    pub config: Option<PathBuf>,
}

/// Runs the server until SIGTERM or Ctrl-C (running builds get the grace period; a
/// second signal cancels them at once).
pub fn serve(
    config: &Path,
    listen: Option<&str>,
    log_format: LogFormat,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    if !config.exists() {
        let at = std::env::current_dir()
            .map(|d| d.join(config))
            .unwrap_or_else(|_| config.to_path_buf());
        return Err(CmdError::Usage(format!(
            "runway serve looked for its configuration at {} and found nothing there. \
             Write one (README, \"Quick start: a server\": five lines for one repository; \
             examples/runway.toml has every key) and pass it with --config FILE",
            at.display()
        )));
    }
    let cfg = ServerConfig::load(config).map_err(CmdError::Usage)?;
    // Jobs' sandbox, made once now: a machine that cannot make one is told before
    // the first push, not at every job. With workers, jobs run in theirs.
    match cfg.sandbox {
        crate::sandbox::Mode::None => {} // said with the other warnings
        crate::sandbox::Mode::Namespaces if cfg.uses_workers() => {}
        crate::sandbox::Mode::Namespaces => {
            let probe = crate::sandbox::Namespaces::new(crate::sandbox::Policy::default());
            if let Err(e) = probe.check() {
                writeln!(
                    out,
                    "runway serve: the job sandbox cannot be made here: {e}"
                )?;
                writeln!(out, "runway serve: {}", e.hint())?;
                return Ok(exit::ERRORED);
            }
        }
    }
    let addr = listen
        .map(str::to_string)
        .unwrap_or_else(|| cfg.listen.clone());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let served = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind(&addr)
            .await
            .map_err(|e| CmdError::Usage(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener.local_addr()?;
        let (state, interrupted) = AppState::new(cfg, store::default_dir()).map_err(CmdError::Usage)?;
        writeln!(out, "runway serve: listening on http://{bound}")?;
        if state.cfg.uses_workers() {
            writeln!(
                out,
                "runway serve: jobs run on `runway worker` agents (worker_token_env); this node {}",
                if state.cfg.concurrency == 0 {
                    "takes webhooks, serves pages and the workers' calls (concurrency = 0), and follows only builds no other node took within node_lease_ms"
                } else {
                    "follows builds and sends their jobs to workers"
                }
            )?;
        } else if state.cfg.sandbox == crate::sandbox::Mode::None {
            writeln!(out, "runway serve: warning: {}", crate::sandbox::BARE_WARNING)?;
        }
        let limits = state.cfg.sandbox_args(None).limits;
        if !limits.is_empty()
            && let Err(why) = crate::sandbox::cgroup::Hierarchy::open(&limits)
        {
            writeln!(out, "runway serve: warning: job memory and process limits are not enforced: {why}")?;
        }
        for w in state.cfg.warnings() {
            writeln!(out, "runway serve: warning: {w}")?;
        }
        for (repo, n) in interrupted.builds {
            writeln!(out, "runway serve: build {repo}#{n} was interrupted by a restart; marked errored (runway restart {n} runs it again)")?;
        }
        if interrupted.mails > 0 {
            writeln!(out, "runway serve: queued {} mail(s) for the interrupted builds", interrupted.mails)?;
        }
        if interrupted.process_groups > 0 {
            writeln!(out, "runway serve: killed {} job process group(s) the interrupted builds left running", interrupted.process_groups)?;
        }
        out.flush()?;
        log_events(log_format);
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let st = state.clone();
        let shutdown = async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            // A second signal cancels the running builds instead of waiting out the grace.
            tokio::spawn(async move {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
                if st.running_builds() > 0 {
                    eprintln!("runway serve: canceling the running builds now");
                    st.cancel_all();
                }
            });
        };
        server::run(listener, state, shutdown).await;
        writeln!(out, "runway serve: stopped; queued builds stay queued")?;
        Ok(exit::PASSED)
    });
    // Builds handed to the other nodes are not waited for: their threads end with
    // the process (their jobs run on the workers, followed by another node now).
    rt.shutdown_background();
    served
}

/// Queues a finished build again under its number.
pub fn restart(
    spec: &str,
    repo: Option<&str>,
    config: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let n: u64 = spec
        .trim_start_matches('#')
        .parse()
        .map_err(|_| CmdError::Usage(format!("\"{spec}\" is not a build number")))?;
    let mut st = super::open_store(config)?;
    let row = super::find_build(&st, repo, n)?;
    if row.state.is_active() {
        return Err(CmdError::Usage(format!(
            "build #{n} is {}; it cannot be restarted now",
            row.state
        )));
    }
    st.restart(row.id)?;
    writeln!(
        out,
        "build {}#{n} queued again (runway serve runs it)",
        row.repo
    )?;
    Ok(exit::PASSED)
}
