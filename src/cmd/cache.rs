//! `runway cache list` and `runway cache clear [--repo R] [--branch B]`.

use std::io::Write;
use std::path::PathBuf;

use super::CmdError;
use crate::cache::store::{LocalStore, default_root};
use crate::exit;
use crate::job::bytes;

/// The flags of `runway cache`.
#[derive(clap::Args)]
pub struct CacheArgs {
    /// List or clear.
    #[command(subcommand)]
    pub action: CacheAction,
    /// Where caches are kept (default: $XDG_CACHE_HOME/runway).
    #[arg(long, global = true)]
    pub cache_dir: Option<PathBuf>,
}

/// What `runway cache` does.
#[derive(clap::Subcommand)]
pub enum CacheAction {
    /// List stored caches.
    List {
        /// Only this repository (owner/repo).
        #[arg(long)]
        repo: Option<String>,
        /// Only this branch.
        #[arg(long)]
        branch: Option<String>,
    },
    /// Delete stored caches.
    Clear {
        /// Only this repository (owner/repo).
        #[arg(long)]
        repo: Option<String>,
        /// Only this branch.
        #[arg(long)]
        branch: Option<String>,
    },
}

/// Lists stored caches.
pub fn list(
    dir: Option<PathBuf>,
    repo: Option<&str>,
    branch: Option<&str>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let store = LocalStore::new(dir.unwrap_or_else(default_root));
    let entries = store.list(repo, branch)?;
    if entries.is_empty() {
        writeln!(out, "no caches in {}", store.root().display())?;
    }
    for e in &entries {
        let age = e.modified.elapsed().map(|d| d.as_secs()).unwrap_or(0);
        writeln!(
            out,
            "{}  {}  {}  {}  {}s ago",
            e.repo,
            e.branch,
            e.key,
            bytes(e.bytes),
            age
        )?;
    }
    Ok(exit::PASSED)
}

/// Deletes stored caches.
pub fn clear(
    dir: Option<PathBuf>,
    repo: Option<&str>,
    branch: Option<&str>,
    out: &mut dyn Write,
) -> Result<i32, CmdError> {
    let store = LocalStore::new(dir.unwrap_or_else(default_root));
    let n = store.clear(repo, branch)?;
    writeln!(out, "deleted {n} cache(s) from {}", store.root().display())?;
    Ok(exit::PASSED)
}
