//! What a build is of: PATH (a work tree, one of its subdirectories, a bare repository
//! or a plain directory) and the refs asked for, resolved into the `.travis.yml` bytes
//! and the event ([`BuildEvent`]) a plan is made from. Every trigger names its build
//! with a [`RefArgs`]: the CLI from its flags, the hook from a pushed ref, the server
//! from its queued row ([`RefArgs::queued`]).

use std::path::{Path, PathBuf};

use super::ServiceError;
use crate::config;
use crate::event::{BuildEvent, EventType, Person};
use crate::source::Repo;

/// What the user pointed a command at, and the event it implies.
pub struct Target {
    /// The `.travis.yml` bytes (at most [`config::MAX_CONFIG_BYTES`] + 1; read them
    /// with [`config::load_bytes`], which refuses what is not text).
    pub config_bytes: Vec<u8>,
    /// Where that text came from, for diagnostics (`.travis.yml` or a path).
    pub config_name: String,
    /// The event: branch or tag, message, people.
    pub event: BuildEvent,
    /// The directory whose files a rehearsal builds, when building from disk.
    pub dir: PathBuf,
}

/// Options that pick the ref and event of a rehearsal.
#[derive(Clone, Debug, Default)]
pub struct RefArgs {
    /// `--branch`
    pub branch: Option<String>,
    /// `--tag`
    pub tag: Option<String>,
    /// `--event`
    pub event: EventType,
    /// `--commit-message`
    pub commit_message: Option<String>,
    /// `--commit`: read the config at this commit instead of from disk.
    pub commit: Option<String>,
    /// `first...last` of a push (`TRAVIS_COMMIT_RANGE`), from the post-receive hook.
    pub commit_range: Option<String>,
    /// `owner/repo` when the caller knows it (the server's configured name).
    pub repo_slug: Option<String>,
    /// The repository's default branch, when configured (cache fallback).
    pub default_branch: Option<String>,
    /// The pull request a queued build is of.
    pub pull_request: Option<crate::event::PullRequest>,
    /// An API request's config, laid on the `.travis.yml` by its merge mode.
    pub request: Option<crate::store::ApiConfig>,
}

impl RefArgs {
    /// The refs of a build the server queued: its branch or tag and commit, pushed.
    pub fn queued(row: &crate::store::BuildRow, default_branch: Option<String>) -> RefArgs {
        RefArgs {
            branch: row.branch.clone(),
            tag: row.tag.clone(),
            event: row.event.parse().unwrap_or(EventType::Push),
            commit_message: None,
            commit: Some(row.commit.clone()),
            commit_range: Some(row.commit_range.clone()).filter(|r| !r.is_empty()),
            repo_slug: Some(row.repo.clone()),
            default_branch,
            pull_request: row.pull_request.clone(),
            request: row.request.clone(),
        }
    }
}

/// Resolves PATH (a work tree, a bare repository or a plain directory) into a target.
pub fn resolve(path: &Path, args: &RefArgs) -> Result<Target, ServiceError> {
    if !path.is_dir() {
        return Err(ServiceError::Usage(format!(
            "{} is not a directory (expected a git work tree, a bare repository or a plain directory)",
            path.display()
        )));
    }
    // A directory without a .travis.yml inside a work tree (a subdirectory): the work
    // tree it belongs to, whose root has the config.
    let (path, repo) = match Repo::open(path) {
        Some(r) => (path.to_path_buf(), Some(r)),
        None if !path.join(".travis.yml").exists() => match Repo::discover(path) {
            Some((r, root)) => (root, Some(r)),
            None => (path.to_path_buf(), None),
        },
        None => (path.to_path_buf(), None),
    };
    let path = path.as_path();
    let mut event = BuildEvent {
        event: args.event,
        default_branch: "master".into(),
        ..BuildEvent::default()
    };
    let (config_bytes, config_name);
    match &repo {
        Some(r) if r.is_bare() || args.commit.is_some() => {
            let rev = args.commit.as_deref().unwrap_or("HEAD");
            let info = r.commit(rev)?;
            let file = r.read_file(&info.sha, ".travis.yml", config::MAX_CONFIG_BYTES);
            (config_bytes, config_name) = match &args.request {
                // An API request's config: put together with the file (if any).
                Some(req) => {
                    let text = file.ok().map(|b| String::from_utf8_lossy(&b).into_owned());
                    let merged =
                        config::merge::merged(text.as_deref(), &req.config, req.merge_mode)
                            .map_err(|e| {
                                ServiceError::Usage(format!("the API request's config: {e}"))
                            })?;
                    (
                        merged.into_bytes(),
                        format!(
                            ".travis.yml with the API request's config ({})",
                            serde_json::to_value(req.merge_mode)
                                .ok()
                                .and_then(|v| v.as_str().map(str::to_string))
                                .unwrap_or_default()
                        ),
                    )
                }
                None => (file?, ".travis.yml".to_string()),
            };
            fill_commit(&mut event, &info);
        }
        _ => {
            let file = path.join(".travis.yml");
            config_bytes = config::read_file(&file)
                .map_err(|e| ServiceError::Usage(format!("cannot read {}: {e}", file.display())))?;
            config_name = file.display().to_string();
            if let Some(r) = &repo
                && let Ok(info) = r.commit("HEAD")
            {
                fill_commit(&mut event, &info);
            }
        }
    }
    event.repo = match &repo {
        Some(r) => r.slug(),
        None => crate::source::local_slug(path),
    };
    event.tag = args.tag.clone();
    event.branch = match (&args.branch, &args.tag) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(_)) => None,
        (None, None) => repo.as_ref().and_then(Repo::current_branch),
    };
    if event.branch.is_none() && event.tag.is_none() {
        return Err(ServiceError::Usage(if repo.is_some() {
            "HEAD is detached: give --branch B or --tag T".to_string()
        } else {
            format!(
                "{} is not a git repository: give --branch B or --tag T",
                path.display()
            )
        }));
    }
    if let Some(m) = &args.commit_message {
        event.commit_message = m.clone();
    }
    if event.event == EventType::PullRequest {
        event.pull_request = Some(
            args.pull_request
                .clone()
                .unwrap_or(crate::event::PullRequest {
                    number: 1,
                    ..Default::default()
                }),
        );
    }
    if let Some(range) = &args.commit_range {
        event.commit_range = range.clone();
    }
    if let Some(slug) = &args.repo_slug {
        event.repo = slug.clone();
    }
    if let Some(b) = &args.default_branch {
        event.default_branch = b.clone();
    }
    Ok(Target {
        config_bytes,
        config_name,
        event,
        dir: path.to_path_buf(),
    })
}

fn fill_commit(event: &mut BuildEvent, info: &crate::source::CommitInfo) {
    event.commit = info.sha.clone();
    event.commit_message = info.message.clone();
    let person = |p: &Person| Some(p.clone()).filter(|p| !p.email.is_empty());
    event.author = person(&info.author);
    event.committer = person(&info.committer);
}
