//! The `runway` command line: parse arguments, call the library, exit with its code.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use runway::cmd::{self, RefArgs, Style};
use runway::event::EventType;

/// A self-hosted CI runner that speaks .travis.yml.
#[derive(Parser)]
#[command(name = "runway", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check a .travis.yml the way Travis read it. Exit 0: no errors; 1: errors.
    Lint {
        /// The file to check.
        #[arg(default_value = ".travis.yml")]
        file: PathBuf,
    },
    /// Decide whether the build runs, its jobs, deploys and mail, and say why.
    Plan {
        /// A git work tree, a bare repository, or a plain directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// The branch pushed (default: the current branch).
        #[arg(long, conflicts_with = "tag")]
        branch: Option<String>,
        /// The tag pushed.
        #[arg(long)]
        tag: Option<String>,
        /// push, pull_request, api or cron.
        #[arg(long, default_value = "push")]
        event: EventType,
        /// The commit message (default: HEAD's).
        #[arg(long)]
        commit_message: Option<String>,
        /// Print JSON for programs.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut out = std::io::stdout().lock();
    let mut err = std::io::stderr();
    let result = match cli.command {
        Command::Lint { file } => cmd::lint::run(&file, &mut out, Style::stdout()),
        Command::Plan {
            path,
            branch,
            tag,
            event,
            commit_message,
            json,
        } => {
            let refs = RefArgs {
                branch,
                tag,
                event,
                commit_message,
                commit: None,
            };
            cmd::plan::run(&path, &refs, json, &mut out, &mut err, Style::stdout())
        }
    };
    let _ = out.flush();
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            let _ = writeln!(err, "runway: error: {e}");
            ExitCode::from(e.code() as u8)
        }
    }
}
