//! Local mirrors of the remote repositories in runway.toml (`https://…`, `http://…`,
//! `git://…`, `ssh://…`). git2 is built without https and ssh, so the server fetches
//! with the git command line into `STATE_DIR/mirrors/OWNER/REPO.git` and builds from
//! the mirror like from a local repository.
//!
//! A token named by `token_env` reaches git as an `Authorization` header through git's
//! environment-only configuration (`GIT_CONFIG_COUNT`): it is never on a command line
//! (visible in `ps`), in the mirror's config, or in a message. git never prompts: a
//! missing or wrong token is an error that says which variable to check.

use crate::cancel::Cancel;
use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine;

use crate::runway_toml::RepoConfig;

/// How long one clone or fetch may take before it is killed.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// Why a mirror could not be brought up to date.
#[derive(Debug, thiserror::Error)]
pub enum MirrorError {
    /// `token_env` names a variable that is not set.
    #[error("{repo}: token_env names {var}, which is not set in the server's environment")]
    MissingToken {
        /// The repository.
        repo: String,
        /// The variable.
        var: String,
    },
    /// git failed; the text is git's own message (the token scrubbed) and a hint.
    #[error("{repo}: git {action} {url} failed: {message}")]
    Git {
        /// The repository.
        repo: String,
        /// `clone` or `fetch`.
        action: &'static str,
        /// The URL (as configured; it carries no token).
        url: String,
        /// What git said, and what to do about it.
        message: String,
    },
    /// git could not be started, or the mirror directory not written.
    #[error("{repo}: {message}")]
    Io {
        /// The repository.
        repo: String,
        /// What went wrong.
        message: String,
    },
}

/// Where the mirror of `name` lives under the state directory.
pub fn mirror_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("mirrors").join(format!("{name}.git"))
}

/// Brings the mirror of `repo` up to date and returns its path. When `want` (a commit)
/// is already in the mirror, nothing is fetched. Calls for one repository take turns.
/// Setting `cancel` stops git (a server shutting down does not wait for a slow fetch).
pub fn sync(
    state_dir: &Path,
    repo: &RepoConfig,
    want: Option<&str>,
    cancel: Option<&Cancel>,
) -> Result<PathBuf, MirrorError> {
    let dir = mirror_dir(state_dir, &repo.name);
    let lock = lock_for(&dir);
    let _turn = lock.lock().unwrap_or_else(|p| p.into_inner());
    let token = match &repo.token_env {
        Some(var) => Some(
            std::env::var(var)
                .ok()
                .filter(|t| !t.is_empty())
                .ok_or_else(|| MirrorError::MissingToken {
                    repo: repo.name.clone(),
                    var: var.clone(),
                })?,
        ),
        None => None,
    };
    let io = |e: std::io::Error| MirrorError::Io {
        repo: repo.name.clone(),
        message: e.to_string(),
    };
    if dir.join("HEAD").is_file() {
        if let Some(sha) = want
            && has_commit(&dir, sha)
        {
            return Ok(dir);
        }
        let mut cmd = git(token.as_deref());
        cmd.arg("-C")
            .arg(&dir)
            .args(["fetch", "--prune", "--quiet", "origin"]);
        run(cmd, repo, "fetch", token.as_deref(), cancel)?;
        return Ok(dir);
    }
    // Clone beside the final place and rename, so a failed clone leaves no half mirror.
    let parent = dir.parent().expect("mirrors/ has a parent");
    std::fs::create_dir_all(parent).map_err(io)?;
    let tmp = tempfile::Builder::new()
        .prefix(".clone-")
        .tempdir_in(parent)
        .map_err(io)?;
    let target = tmp.path().join("m.git");
    let mut cmd = git(token.as_deref());
    cmd.args(["clone", "--mirror", "--quiet", "--", &repo.url])
        .arg(&target);
    run(cmd, repo, "clone", token.as_deref(), cancel)?;
    std::fs::rename(&target, &dir).map_err(io)?;
    Ok(dir)
}

/// One lock per mirror directory, for the life of the process.
fn lock_for(dir: &Path) -> Arc<Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<PathBuf, Arc<Mutex<()>>>>> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    locks.entry(dir.to_path_buf()).or_default().clone()
}

/// A git command that never prompts and, with a token, sends it as a header.
fn git(token: Option<&str>) -> Command {
    let mut cmd = Command::new("git");
    cmd.env("GIT_TERMINAL_PROMPT", "0")
        .env_remove("GIT_ASKPASS")
        .env_remove("SSH_ASKPASS")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    if let Some(token) = token {
        // GitHub (x-access-token), Gitea/Forgejo and GitLab all take a token as the
        // password of HTTP basic authentication.
        let basic =
            base64::engine::general_purpose::STANDARD.encode(format!("x-access-token:{token}"));
        cmd.env("GIT_CONFIG_COUNT", "1")
            .env("GIT_CONFIG_KEY_0", "http.extraHeader")
            .env(
                "GIT_CONFIG_VALUE_0",
                format!("Authorization: Basic {basic}"),
            );
    }
    cmd
}

fn has_commit(dir: &Path, sha: &str) -> bool {
    // A delivery's commit goes to git's command line only as an object id.
    if !crate::source::is_object_id(sha) {
        return false;
    }
    Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["cat-file", "-e", &format!("{sha}^{{commit}}")])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs git with [`FETCH_TIMEOUT`]; a failure carries git's message and a hint.
fn run(
    mut cmd: Command,
    repo: &RepoConfig,
    action: &'static str,
    token: Option<&str>,
    cancel: Option<&Cancel>,
) -> Result<(), MirrorError> {
    let fail = |message: String| MirrorError::Git {
        repo: repo.name.clone(),
        action,
        url: repo.url.clone(),
        message,
    };
    let mut child = cmd.spawn().map_err(|e| MirrorError::Io {
        repo: repo.name.clone(),
        message: format!("cannot run git: {e}"),
    })?;
    // Read stderr on a thread so a chatty git never blocks on a full pipe.
    let mut stderr = child.stderr.take().expect("piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stderr.read_to_string(&mut text);
        text
    });
    // The child is waited for on a thread; a cancel and the time limit arrive on the
    // same channel, so nothing polls.
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    let reaper = tx.clone();
    std::thread::spawn(move || {
        let _ = reaper.send(Some(child.wait()));
    });
    let _woken = cancel.map(|c| c.on_cancel(move || drop(tx.send(None))));
    let status = match rx.recv_timeout(FETCH_TIMEOUT) {
        Ok(Some(status)) => status.ok(),
        Ok(None) | Err(_) => {
            // SAFETY: a plain kill(2) of git, which the reaper thread has not reaped
            // yet (it reports here first).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            while let Ok(None) = rx.recv() {}
            None
        }
    };
    let mut said = reader.join().unwrap_or_default();
    if let Some(t) = token {
        said = said.replace(t, "[secure]");
    }
    let said = said.trim().replace('\n', "; ");
    match status {
        Some(s) if s.success() => Ok(()),
        Some(_) => {
            let hint = if said.contains("Authentication failed")
                || said.contains("could not read Username")
                || said.contains("401")
                || said.contains("403")
            {
                match &repo.token_env {
                    Some(var) => format!(
                        " (the server refused the token in ${var}: check it and its access to the repository)"
                    ),
                    None => {
                        " (the repository needs a token: set token_env in runway.toml)".to_string()
                    }
                }
            } else {
                String::new()
            };
            Err(fail(format!("{said}{hint}")))
        }
        None if cancel.is_some_and(Cancel::is_canceled) => {
            Err(fail("stopped: the build was canceled".into()))
        }
        None => Err(fail(format!(
            "no answer within {} s; it was stopped",
            FETCH_TIMEOUT.as_secs()
        ))),
    }
}
