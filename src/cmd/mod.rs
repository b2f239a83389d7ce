//! The commands behind the command line. Each takes plain arguments, writes what a
//! person (or, with `--json`, a program) reads, and returns the documented exit code.

pub(crate) mod cache;
pub mod cli;
pub(crate) mod codedeploy;
pub(crate) mod history;
pub(crate) mod hook;
pub(crate) mod lint;
pub(crate) mod plan;
pub(crate) mod run;
pub(crate) mod serve;
pub(crate) mod worker;

use std::io::IsTerminal;

/// A failure that stops a command before it can do its work.
#[derive(Debug, thiserror::Error)]
pub enum CmdError {
    /// Bad arguments or an unusable path: exit 2.
    #[error("{0}")]
    Usage(String),
    /// Reading git failed.
    #[error(transparent)]
    Source(#[from] crate::source::SourceError),
    /// Writing output failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The build store (history, queue) failed: runway itself, not the user (exit 3).
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

impl From<crate::service::ServiceError> for CmdError {
    fn from(e: crate::service::ServiceError) -> CmdError {
        use crate::service::ServiceError as E;
        match e {
            E::Usage(why) => CmdError::Usage(why),
            E::Source(e) => CmdError::Source(e),
            E::Io(e) => CmdError::Io(e),
            E::Store(e) => CmdError::Store(e),
        }
    }
}

impl CmdError {
    /// The exit code for this failure.
    pub fn code(&self) -> i32 {
        match self {
            CmdError::Usage(_) | CmdError::Source(_) => crate::exit::USAGE,
            CmdError::Io(_) | CmdError::Store(_) => crate::exit::ERRORED,
        }
    }
}

/// ANSI styling that is on only when writing to a terminal.
#[derive(Clone, Copy, Debug)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Styling for stdout: on if stdout is a terminal and `NO_COLOR` is unset.
    pub fn stdout() -> Style {
        Style {
            on: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    /// No styling.
    pub fn plain() -> Style {
        Style { on: false }
    }

    /// True when writing to a terminal.
    pub fn is_terminal(&self) -> bool {
        self.on
    }

    /// Wraps `text` in an SGR code when styling is on.
    pub fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_string()
        }
    }
}

pub use crate::service::target::{RefArgs, Target, resolve as resolve_target};

/// The build store the history commands read: the embedded one, or runway.toml's
/// PostgreSQL (`database_url_env`) when `--config` names the file.
pub fn open_store(config: Option<&std::path::Path>) -> Result<crate::store::Store, CmdError> {
    let url = match config {
        Some(path) => crate::runway_toml::ServerConfig::load(path)
            .map_err(CmdError::Usage)?
            .database_url()
            .map_err(|e| CmdError::Usage(format!("{}: {e}", path.display())))?,
        None => None,
    };
    Ok(crate::store::Store::connect(
        &crate::store::default_dir(),
        url.as_deref(),
    )?)
}

/// Build `number` of `repo`, or, without `--repo`, the one build with that number: when
/// several repositories have it, a usage error naming them (never a silent pick: a
/// restart of the wrong one would run and deploy another repository's commit).
pub fn find_build(
    st: &crate::store::Store,
    repo: Option<&str>,
    number: u64,
) -> Result<crate::store::BuildRow, CmdError> {
    if repo.is_none() {
        let repos = st.repos_with_build(number)?;
        if repos.len() > 1 {
            return Err(CmdError::Usage(format!(
                "build #{number} exists in {}: give --repo",
                repos.join(", ")
            )));
        }
    }
    st.build(repo, number)?
        .ok_or_else(|| CmdError::Usage(format!("there is no build #{number}")))
}
