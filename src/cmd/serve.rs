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
        .with_writer(LogQueue::start(LOG_QUEUE_LINES))
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

/// Log lines the queue holds for the writer before new ones are dropped.
const LOG_QUEUE_LINES: usize = 1024;

/// How long the writer lets lines gather after the first before it writes them.
const LOG_LINGER: std::time::Duration = std::time::Duration::from_millis(10);

/// The server's log lines on their way to stdout: a thread of their own writes them
/// from a bounded queue, so a slow reader (a full pipe, a stalled log collector) never
/// holds up a delivery, a page or a job. When the queue is full a line is counted and
/// dropped; the count is said once the writer has caught up.
#[derive(Clone)]
struct LogQueue {
    lines: std::sync::mpsc::SyncSender<Queued>,
    dropped: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

/// What the log's writer is handed.
enum Queued {
    /// A line.
    Line(Vec<u8>),
    /// Say when every line before this one is written (the server stopping).
    Flushed(std::sync::mpsc::Sender<()>),
}

/// The queue the server's log goes through, once made.
static LOG_QUEUE: std::sync::OnceLock<LogQueue> = std::sync::OnceLock::new();

/// Waits (at most `limit`) until the log lines queued so far are written: the last
/// lines of a stopping server are not lost with its process.
fn flush_log(limit: std::time::Duration) {
    let Some(q) = LOG_QUEUE.get() else { return };
    let (done, written) = std::sync::mpsc::channel();
    if q.lines.try_send(Queued::Flushed(done)).is_ok() {
        let _ = written.recv_timeout(limit);
    }
}

impl LogQueue {
    fn start(capacity: usize) -> LogQueue {
        use std::sync::atomic::Ordering;
        let (lines, queued) = std::sync::mpsc::sync_channel::<Queued>(capacity);
        let dropped = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = dropped.clone();
        let _ = std::thread::Builder::new()
            .name("runway-log".into())
            .spawn(move || {
                let mut batch: Vec<u8> = Vec::new();
                while let Ok(first) = queued.recv() {
                    // The lines that come within a linger of the first go with it: one
                    // write, one wake of this thread and of the log's reader, where a busy
                    // server's every line made its own (five a build on a worker, ~15 µs
                    // of CPU each wake here). A pause, not a wait for anything: the lines
                    // queued meanwhile wake nobody.
                    std::thread::sleep(LOG_LINGER);
                    let mut flushed = Vec::new();
                    for item in std::iter::once(first).chain(queued.try_iter()) {
                        match item {
                            Queued::Line(line) => batch.extend_from_slice(&line),
                            Queued::Flushed(done) => flushed.push(done),
                        }
                    }
                    let n = counted.swap(0, Ordering::SeqCst);
                    if n > 0 {
                        let _ = writeln!(
                            batch,
                            "runway serve: {n} log line(s) dropped: the log's reader was too slow"
                        );
                    }
                    let mut out = std::io::stdout().lock();
                    let _ = out.write_all(&batch);
                    let _ = out.flush();
                    batch.clear();
                    for done in flushed {
                        let _ = done.send(());
                    }
                }
            });
        LOG_QUEUE
            .get_or_init(|| LogQueue { lines, dropped })
            .clone()
    }
}

/// One log line, queued when the event's formatting is done (the writer is dropped).
struct QueuedLine {
    queue: LogQueue,
    line: Vec<u8>,
}

impl Write for QueuedLine {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for QueuedLine {
    fn drop(&mut self) {
        let line = std::mem::take(&mut self.line);
        if line.is_empty() {
            return;
        }
        if let Err(std::sync::mpsc::TrySendError::Full(_)) =
            self.queue.lines.try_send(Queued::Line(line))
        {
            self.queue
                .dropped
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogQueue {
    type Writer = QueuedLine;
    fn make_writer(&'a self) -> QueuedLine {
        QueuedLine {
            queue: self.clone(),
            line: Vec::new(),
        }
    }
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
        .on_thread_unpark(crate::server::runtime_thread_woke)
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
        flush_log(std::time::Duration::from_secs(5));
        writeln!(out, "runway serve: stopped; queued builds stay queued")?;
        Ok(exit::PASSED)
    });
    // Builds handed to the other nodes are not waited for: their threads end with
    // the process (their jobs run on the workers, followed by another node now).
    rt.shutdown_background();
    served
}

/// The store and the build `spec` (`12`, `#12`) names, with its number.
fn named_build(
    spec: &str,
    repo: Option<&str>,
    config: Option<&std::path::Path>,
) -> Result<(crate::store::Store, crate::store::BuildRow, u64), CmdError> {
    let n: u64 = spec
        .trim_start_matches('#')
        .parse()
        .map_err(|_| CmdError::Usage(format!("\"{spec}\" is not a build number")))?;
    let st = super::open_store(config)?;
    let row = super::find_build(&st, repo, n)?;
    Ok((st, row, n))
}

/// The audit trail's name for whoever runs a command on this machine.
fn operator() -> String {
    let user = std::env::var("USER")
        .ok()
        .filter(|u| !u.is_empty())
        // SAFETY: getuid has no preconditions and cannot fail.
        .unwrap_or_else(|| format!("uid {}", unsafe { libc::getuid() }));
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{} (command line)", host.trim())
}

/// Adds what a command did to the audit trail.
fn audit(
    st: &mut crate::store::Store,
    row: &crate::store::BuildRow,
    action: crate::store::access::Action,
) -> Result<(), CmdError> {
    st.audit(&crate::store::access::Audit {
        at: crate::store::Store::now(),
        who: operator(),
        action,
        repo: row.repo.clone(),
        build_id: Some(row.id),
        detail: String::new(),
    })?;
    Ok(())
}

/// Cancels a build: one that has not started (queued, awaiting approval) at once; a
/// running one is asked of the node running it, which kills its jobs.
pub fn cancel(
    spec: &str,
    repo: Option<&str>,
    config: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let (mut st, row, n) = named_build(spec, repo, config)?;
    use crate::store::Status;
    if row.state.is_active() {
        audit(&mut st, &row, crate::store::access::Action::Cancel)?;
    }
    match row.state {
        Status::Queued | Status::Awaiting => {
            st.set_state(
                row.id,
                Status::Canceled,
                Some("canceled with runway cancel"),
            )?;
            writeln!(out, "build {}#{n} canceled (it had not started)", row.repo)?;
        }
        Status::Running => {
            st.request_cancel(row.id, "canceled with runway cancel")?;
            writeln!(
                out,
                "build {}#{n} is running: the node running it kills its jobs now (runway builds shows it canceled)",
                row.repo
            )?;
        }
        ended => {
            return Err(CmdError::Usage(format!(
                "build {}#{n} already {ended}; nothing to cancel",
                row.repo
            )));
        }
    }
    Ok(exit::PASSED)
}

/// Queues a finished build again under its number.
pub fn restart(
    spec: &str,
    repo: Option<&str>,
    config: Option<&std::path::Path>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let (mut st, row, n) = named_build(spec, repo, config)?;
    if row.state.is_active() {
        return Err(CmdError::Usage(format!(
            "build #{n} is {}; it cannot be restarted now",
            row.state
        )));
    }
    st.restart(row.id)?;
    audit(&mut st, &row, crate::store::access::Action::Restart)?;
    writeln!(
        out,
        "build {}#{n} queued again (runway serve runs it)",
        row.repo
    )?;
    Ok(exit::PASSED)
}
