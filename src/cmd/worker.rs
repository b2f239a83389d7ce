//! `runway worker` (an agent that runs the server's jobs on this machine) and
//! `runway workers` (the workers the store knows, with labels, last heartbeat and job).

use std::io::Write;
use std::path::PathBuf;

use super::CmdError;
use crate::agent::WorkerOptions;
use crate::exit;
use crate::store::tasks::{self, Labels, labels_text};

/// The flags of `runway worker`.
#[derive(clap::Args)]
pub struct WorkerArgs {
    /// A serve node's base URL (`https://ci.example.com`); give several to fail over.
    #[arg(long = "server", required = true)]
    pub servers: Vec<String>,
    /// This worker's name (unique among the workers).
    #[arg(long)]
    pub name: String,
    /// A label over the detected os, arch and dist (`os=osx`, `gpu=yes`); repeatable.
    #[arg(long = "label")]
    pub labels: Vec<String>,
    /// Where jobs run: `namespaces` (a throwaway copy of this machine per job) or
    /// `none` (the bare host, with a warning).
    #[arg(long, value_enum, default_value = "namespaces")]
    pub sandbox: crate::sandbox::Mode,
    /// The cache directory (default: RUNWAY_CACHE_DIR, else beside the state).
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Disk per job (10G by default; `none`: the host's disk), as `run --disk`.
    #[arg(long, value_parser = crate::sandbox::disk::parse_budget)]
    pub disk: Option<crate::sandbox::disk::Budget>,
    /// Stop after this many jobs.
    #[arg(long)]
    pub jobs: Option<usize>,
}

/// Reads `key=value`.
fn label(text: &str) -> Result<(String, String), CmdError> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() && !v.contains(char::is_whitespace) => {
            Ok((k.to_string(), v.to_string()))
        }
        _ => Err(CmdError::Usage(format!(
            "--label {text}: expected key=value (os=osx, arch=arm64, gpu=yes)"
        ))),
    }
}

/// The flags of `runway workers`.
#[derive(clap::Args)]
pub struct WorkersArgs {
    /// `revoke NAME`: refuse a worker at once (its running jobs are errored).
    #[command(subcommand)]
    pub action: Option<WorkersAction>,
    /// Print JSON for programs.
    #[arg(long)]
    pub json: bool,
    /// runway.toml: its `database_url_env` names the PostgreSQL store to read.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
}

/// What `runway workers` does besides listing.
#[derive(clap::Subcommand)]
pub enum WorkersAction {
    /// Refuse worker NAME from now on: its calls are answered 403 and the jobs it runs
    /// are errored "worker NAME was revoked".
    Revoke {
        /// The worker's name.
        name: String,
        /// Let it take jobs again.
        #[arg(long)]
        undo: bool,
    },
}

/// `runway worker`: runs the servers' jobs until drained by a signal.
pub fn worker(args: WorkerArgs) -> Result<i32, CmdError> {
    if args.servers.is_empty() {
        return Err(CmdError::Usage("give at least one --server URL".into()));
    }
    if let Some(why) = crate::protocol::name_problem(&args.name) {
        return Err(CmdError::Usage(why));
    }
    let token = std::env::var("RUNWAY_WORKER_TOKEN").unwrap_or_default();
    if token.is_empty() {
        return Err(CmdError::Usage(
            "RUNWAY_WORKER_TOKEN is not set: set it to the value of the servers' worker_token_env variable".into(),
        ));
    }
    let mut labels: Labels = crate::agent::detected_labels();
    for l in &args.labels {
        let (k, v) = label(l)?;
        labels.insert(k, v);
    }
    let opts = WorkerOptions {
        servers: args.servers,
        name: args.name,
        labels,
        token,
        state_dir: crate::store::default_dir(),
        cache_dir: args.cache_dir,
        sandbox: crate::service::SandboxOptions {
            mode: args.sandbox,
            disk: args.disk.unwrap_or_default(),
            ..Default::default()
        },
        jobs: args.jobs,
    };
    let drain = crate::interrupt::drain_on_signals();
    Ok(crate::agent::run(&opts, &drain))
}

/// `runway workers revoke NAME [--undo]`: the worker's later calls are refused and the
/// jobs it runs are errored "worker NAME was revoked", at once (`--undo` lets it in
/// again).
pub fn revoke(
    config: Option<&std::path::Path>,
    name: &str,
    undo: bool,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let st = super::open_store(config)?;
    let builds = st.revoke_worker(name, undo)?;
    if undo {
        writeln!(out, "Worker {name} may take jobs again.")?;
    } else {
        writeln!(
            out,
            "Worker {name} is revoked: its calls are refused{}.",
            match builds.len() {
                0 => String::new(),
                n => format!(", and the {n} job(s) it ran are errored"),
            }
        )?;
    }
    Ok(exit::PASSED)
}

/// `runway workers`: the workers, from the store runway.toml names.
pub fn workers(
    config: Option<&std::path::Path>,
    json: bool,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let lease = match config {
        Some(path) => {
            crate::runway_toml::ServerConfig::load(path)
                .map_err(CmdError::Usage)?
                .worker_lease_ms as i64
        }
        None => crate::runway_toml::DEFAULT_WORKER_LEASE_MS as i64,
    };
    let st = super::open_store(config)?;
    let now = tasks::now_ms();
    let ws = st.workers_now(now, lease)?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::json!({ "workers": tasks::workers_json(&ws) })
        )?;
        return Ok(exit::PASSED);
    }
    if ws.is_empty() {
        writeln!(out, "No worker has connected yet.")?;
        return Ok(exit::PASSED);
    }
    for (w, state) in &ws {
        let ago = (now - w.seen_at).max(0) as f64 / 1000.0;
        let doing = match state {
            tasks::WorkerState::Running { repo, job } => format!("running job {job} of {repo}"),
            tasks::WorkerState::Draining => "draining".to_string(),
            tasks::WorkerState::Idle => "idle".to_string(),
            tasks::WorkerState::Gone { since } => format!(
                "gone since {} (not heard from for {})",
                crate::clock::utc(since / 1000),
                crate::job::log::human(std::time::Duration::from_millis(
                    (now - since).max(0) as u64
                ))
            ),
        };
        writeln!(
            out,
            "{:<16} {:<40} seen {ago:.1}s ago  {doing}",
            w.name,
            labels_text(&w.labels)
        )?;
    }
    Ok(exit::PASSED)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_key_value() {
        assert_eq!(label("os=osx").unwrap(), ("os".into(), "osx".into()));
        assert!(label("osx").is_err());
        assert!(label("=x").is_err());
    }
}
