//! The command line: every command's flags (clap), parsed once into one value, and
//! the command it names run with them. `main.rs` only calls [`main`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use super::Style;
use crate::cmd;

/// A self-hosted CI runner that speaks .travis.yml.
#[derive(Parser)]
#[command(name = "runway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process and matched at once: `run`'s many flags cost nothing here.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Check a .travis.yml the way Travis read it. Exit 0: no errors; 1: errors.
    Lint(cmd::lint::LintArgs),
    /// Decide whether the build runs, its jobs, deploys and mail, and say why.
    Plan(cmd::plan::PlanArgs),
    /// Run the build: every job in a fresh workspace, Travis's lifecycle in one shell.
    Run(cmd::run::RunArgs),
    /// Build on git push: install or run the post-receive hook.
    Hook(cmd::hook::HookArgs),
    /// The CI server: webhooks, a durable queue, workers, web pages.
    Serve(cmd::serve::ServeArgs),
    /// Queue a finished build again under its number.
    Restart(cmd::serve::RestartArgs),
    /// Cancel a queued or running build (the node running it kills its jobs).
    Cancel(cmd::serve::RestartArgs),
    /// Run the server's jobs on this machine: connect out to the serve nodes (HTTP or
    /// HTTPS) with the token in RUNWAY_WORKER_TOKEN, take one job at a time whose os and
    /// arch this machine's labels match, and report back. SIGTERM finishes the running
    /// job first.
    Worker(cmd::worker::WorkerArgs),
    /// List the workers: labels, last heartbeat and current job.
    Workers(cmd::worker::WorkersArgs),
    /// List recorded builds, newest first.
    Builds(cmd::history::BuildsArgs),
    /// Print a recorded build's log: BUILD or BUILD.JOB.
    Log(cmd::history::LogArgs),
    /// List or clear stored caches.
    Cache(cmd::cache::CacheArgs),
    /// runway's helper inside a job's sandbox (caches, bundles), started by runway itself.
    #[command(hide = true)]
    SandboxHelper {
        /// The request, as JSON.
        request: String,
    },
    /// A worker's job lease keeper (stops the job when its lease runs out), started by
    /// `runway worker` itself.
    #[command(hide = true)]
    LeaseKeeper {
        /// The worker's process directory.
        #[arg(long)]
        dir: PathBuf,
        /// The worker's process id.
        #[arg(long)]
        owner: i32,
    },
    /// The CodeDeploy side: rehearse a revision's appspec.yml as the agent runs it.
    Codedeploy(cmd::codedeploy::CodedeployArgs),
}

/// Parses the command line, runs the command, and says how it ended: the whole of
/// `runway`'s `main`.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // Job disks are mounted where they die with this process (sandbox::disk); done
    // while it has one thread.
    if !matches!(
        cli.command,
        Command::SandboxHelper { .. } | Command::LeaseKeeper { .. }
    ) {
        crate::sandbox::disk::private_mounts();
    }
    // The commands that start sandboxes: each job's init forked by a small copy of
    // runway made now, not by runway grown (sandbox::spawner).
    if matches!(
        cli.command,
        Command::Run(_)
            | Command::Hook(_)
            | Command::Serve(_)
            | Command::Worker(_)
            | Command::Codedeploy(_)
    ) {
        // SAFETY: this process has one thread yet. Without a spawner runway forks each
        // job's init itself.
        let _ = unsafe { crate::sandbox::spawner::start() };
    }
    let mut out = std::io::stdout();
    let mut err = std::io::stderr();
    let result = match cli.command {
        Command::Lint(cmd::lint::LintArgs { file, json }) => {
            cmd::lint::run(&file, json, &mut out, Style::stdout())
        }
        Command::Plan(cmd::plan::PlanArgs { path, refs, json }) => cmd::plan::run(
            &path,
            &refs.ref_args(None),
            json,
            &mut out,
            &mut err,
            Style::stdout(),
        ),
        Command::Run(args) => {
            let args = cmd::run::RunArgs {
                cancel: Some(crate::interrupt::cancel_on_signals()),
                ..args
            };
            cmd::run::run(&args, &mut err)
        }
        Command::Hook(args) => cmd::hook::command(args, &mut out, &mut err),
        Command::Serve(cmd::serve::ServeArgs {
            config,
            listen,
            log_format,
        }) => cmd::serve::serve(&config, listen.as_deref(), log_format, &mut out),
        Command::Restart(cmd::serve::RestartArgs {
            build,
            repo,
            config,
        }) => cmd::serve::restart(&build, repo.as_deref(), config.as_deref(), &mut out),
        Command::Cancel(cmd::serve::RestartArgs {
            build,
            repo,
            config,
        }) => cmd::serve::cancel(&build, repo.as_deref(), config.as_deref(), &mut out),
        Command::Worker(args) => cmd::worker::worker(args),
        Command::Workers(cmd::worker::WorkersArgs {
            action: Some(cmd::worker::WorkersAction::Revoke { name, undo }),
            config,
            ..
        }) => cmd::worker::revoke(config.as_deref(), &name, undo, &mut out),
        Command::Workers(cmd::worker::WorkersArgs {
            action: None,
            json,
            config,
        }) => cmd::worker::workers(config.as_deref(), json, &mut out),
        Command::Builds(cmd::history::BuildsArgs {
            repo,
            branch,
            json,
            config,
        }) => cmd::history::builds(
            repo.as_deref(),
            branch.as_deref(),
            json,
            config.as_deref(),
            &mut out,
        ),
        Command::Log(cmd::history::LogArgs {
            build,
            repo,
            follow,
            raw,
            config,
        }) => cmd::history::log(
            &build,
            repo.as_deref(),
            (follow, raw),
            config.as_deref(),
            &mut out,
        ),
        Command::SandboxHelper { request } => {
            return ExitCode::from(crate::inside::serve(&request) as u8);
        }
        Command::LeaseKeeper { dir, owner } => {
            // The pipe read as it is (unbuffered): what `poll(2)` says is there is all
            // there is.
            use std::os::fd::AsFd;
            let input = match std::io::stdin().as_fd().try_clone_to_owned() {
                Ok(fd) => std::fs::File::from(fd),
                Err(e) => {
                    eprintln!("runway lease-keeper: its standard input: {e}");
                    return ExitCode::from(crate::exit::ERRORED as u8);
                }
            };
            return ExitCode::from(crate::agent::lease::keep(&dir, owner, input) as u8);
        }
        Command::Codedeploy(args) => cmd::codedeploy::command(args, &mut out),
        Command::Cache(cmd::cache::CacheArgs { action, cache_dir }) => match action {
            cmd::cache::CacheAction::List { repo, branch } => {
                cmd::cache::list(cache_dir, repo.as_deref(), branch.as_deref(), &mut out)
            }
            cmd::cache::CacheAction::Clear { repo, branch } => {
                cmd::cache::clear(cache_dir, repo.as_deref(), branch.as_deref(), &mut out)
            }
        },
    };
    let _ = out.flush();
    // Job disks made ahead or on their way out (sandbox::disk) are released before exit.
    crate::sandbox::disk::shutdown();
    match result {
        Ok(code) => ExitCode::from(code as u8),
        // The reader went away (`runway lint | head`): not an error, as in ripgrep.
        Err(cmd::CmdError::Io(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {
            ExitCode::SUCCESS
        }
        Err(e) => {
            let _ = writeln!(err, "runway: error: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}
