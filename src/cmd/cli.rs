//! The command line: every command's flags (clap), parsed once into one value, and
//! the command it names run with them. `main.rs` only calls [`main`].

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    Hook {
        #[command(subcommand)]
        action: HookAction,
    },
    /// The CI server: webhooks, a durable queue, workers, web pages.
    Serve(cmd::serve::ServeArgs),
    /// Queue a finished build again under its number.
    Restart(cmd::serve::RestartArgs),
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
    Codedeploy {
        #[command(subcommand)]
        action: CodedeployAction,
    },
}

#[derive(Subcommand)]
enum CodedeployAction {
    /// Deploy bundles (directories, zips, tars with appspec.yml at the top), one after
    /// another, on a throwaway copy of this machine, running the in-place lifecycle as
    /// the CodeDeploy agent does. Exit 0: deployed; 3: failed (or invalid appspec).
    Rehearse {
        /// The revisions, in the order they deploy.
        #[arg(required_unless_present = "stop")]
        bundles: Vec<PathBuf>,
        /// APPLICATION_NAME for the hooks.
        #[arg(long, default_value = "application")]
        application: String,
        /// DEPLOYMENT_GROUP_NAME for the hooks.
        #[arg(long, default_value = "deployment-group")]
        deployment_group: String,
        /// After the last event, keep the copy and what the hooks started running
        /// until standard input ends (to look at it, or send it requests).
        #[arg(long, conflicts_with_all = ["keep", "stop"])]
        hold: bool,
        /// Keep the copy running after this rehearsal (in the background, with what
        /// the hooks started): later rehearsals of this application and deployment
        /// group deploy over it, as on a server, until --stop.
        #[arg(long)]
        keep: bool,
        /// End the kept copy of this application and deployment group (after
        /// deploying BUNDLES on it, when given).
        #[arg(long)]
        stop: bool,
    },
    /// The kept copy's own process, started by `rehearse --keep`.
    #[command(hide = true)]
    Machine {
        #[arg(long)]
        application: String,
        #[arg(long)]
        deployment_group: String,
        #[arg(long)]
        socket: PathBuf,
    },
}

#[derive(Subcommand)]
enum HookAction {
    /// Write hooks/post-receive into a (bare) repository.
    Install {
        /// The repository (its .git directory, or a bare repository).
        git_dir: PathBuf,
        /// Replace a post-receive hook runway did not write.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        flags: HookFlags,
    },
    /// The post-receive entry point: reads "old new ref" lines on stdin.
    Run {
        /// The repository (default: $GIT_DIR, as git sets it for hooks).
        #[arg(long)]
        git_dir: Option<PathBuf>,
        #[command(flatten)]
        flags: HookFlags,
    },
}

/// How the hook builds (the same flags for `install` and `run`).
#[derive(Args)]
struct HookFlags {
    /// Repository settings (secret) for its builds, from a dotenv file.
    #[arg(long)]
    env_file: Option<PathBuf>,
    /// Queue builds and return at once; `runway serve` runs them.
    #[arg(long)]
    detach: bool,
    /// The repository's name (owner/repo) as runway.toml knows it.
    #[arg(long)]
    repo: Option<String>,
    /// runway.toml: the repository's entry (by --repo, or by its url = this path)
    /// gives its name, settings, `detach = true` and the mail server.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Where jobs run: `namespaces` or `none` (the bare host); runway.toml's
    /// `sandbox` when --config is given and this is not.
    #[arg(long, value_enum)]
    sandbox: Option<crate::sandbox::Mode>,
}

impl From<HookFlags> for cmd::hook::HookOptions {
    fn from(f: HookFlags) -> Self {
        cmd::hook::HookOptions {
            env_file: f.env_file,
            detach: f.detach,
            repo: f.repo,
            config: f.config,
            sandbox: f.sandbox,
            cancel: None,
        }
    }
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
        Command::Hook { action } => match action {
            HookAction::Install {
                git_dir,
                force,
                flags,
            } => cmd::hook::install(&git_dir, &flags.into(), force, &mut out),
            HookAction::Run { git_dir, flags } => {
                let dir = git_dir
                    .or_else(|| std::env::var_os("GIT_DIR").map(PathBuf::from))
                    .unwrap_or_else(|| PathBuf::from("."));
                let opts = cmd::hook::HookOptions {
                    cancel: Some(crate::interrupt::cancel_on_signals()),
                    ..flags.into()
                };
                cmd::hook::run_hook(
                    &dir,
                    &opts,
                    &mut std::io::stdin().lock(),
                    &mut out,
                    &mut err,
                )
            }
        },
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
            let input = std::io::BufReader::new(std::io::stdin());
            return ExitCode::from(crate::agent::lease::keep(&dir, owner, input) as u8);
        }
        Command::Codedeploy {
            action:
                CodedeployAction::Rehearse {
                    bundles,
                    application,
                    deployment_group,
                    hold,
                    keep,
                    stop,
                },
        } => cmd::codedeploy::rehearse(
            cmd::codedeploy::RehearseArgs {
                bundles,
                application,
                group: deployment_group,
                hold,
                keep,
                stop,
            },
            &mut out,
        ),
        Command::Codedeploy {
            action:
                CodedeployAction::Machine {
                    application,
                    deployment_group,
                    socket,
                },
        } => Ok(cmd::codedeploy::machine(
            application,
            deployment_group,
            socket,
        )),
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
