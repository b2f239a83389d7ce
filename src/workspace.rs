//! A job's fresh workspace: a temp directory holding the checkout
//! (`build/<owner>/<repo>`, `TRAVIS_BUILD_DIR`), a clean `$HOME` and runway's scratch
//! files. Made from what is on disk (a rehearsal of what you are about to push) or
//! from a commit (a clean clone made with git2).

use std::path::{Path, PathBuf};

use crate::source::SourceError;

/// The start of every workspace directory's name (in the temp dir).
pub use crate::sandbox::JOB_DIR_PREFIX as PREFIX;

/// Errors preparing a workspace.
#[derive(Debug, thiserror::Error)]
pub enum WorkspaceError {
    /// git2 failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// Copying files failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The commit names something runway will not fetch (a submodule on a local path).
    #[error("{0}")]
    Refused(String),
}

/// What to build.
#[derive(Debug, Clone)]
pub enum Origin {
    /// The files on disk in a directory (a git work tree or a plain directory).
    Disk(PathBuf),
    /// A commit of a repository (work tree or bare).
    Commit {
        /// The repository.
        repo: PathBuf,
        /// The commit sha.
        sha: String,
    },
}

/// `git:` options that shape the clone.
#[derive(Debug, Clone, Default)]
pub struct GitOptions {
    /// `git.depth` (None = full history).
    pub depth: Option<i32>,
    /// `git.submodules` (default true).
    pub submodules: bool,
}

/// A prepared workspace. Deleted when dropped unless kept.
pub struct Workspace {
    /// The job's disk, when it has a budget: unmounted (fields drop in order) before
    /// the directory it was mounted on is removed.
    disk: Option<crate::sandbox::disk::JobDisk>,
    dir: Option<tempfile::TempDir>,
    root: PathBuf,
    /// The checkout: `TRAVIS_BUILD_DIR`.
    pub build_dir: PathBuf,
    /// The job's `$HOME`.
    pub home: PathBuf,
    /// The job's scratch directory (the job can write it: runway reads from it only
    /// through [`crate::beneath`], and never writes there).
    pub scratch: PathBuf,
    /// runway's own files for the job (cache archives on their way), outside everything
    /// the sandbox shows the job.
    pub private: PathBuf,
}

impl Workspace {
    /// Makes a workspace for repository `slug` from `origin`.
    /// With `disk`, the workspace is a filesystem of that many bytes of its own
    /// ([`crate::sandbox::disk`]), made before anything is written into it.
    pub fn prepare(
        origin: &Origin,
        slug: &str,
        git: &GitOptions,
        disk: Option<u64>,
    ) -> Result<Workspace, WorkspaceError> {
        let dir = tempfile::Builder::new().prefix(PREFIX).tempdir()?;
        let root = dir.path().to_path_buf();
        let disk = match disk {
            Some(bytes) => Some(crate::sandbox::disk::JobDisk::attach(&root, bytes)?),
            None => None,
        };
        let build_dir = root.join("build").join(slug);
        let home = root.join("home");
        let scratch = root.join("runway");
        let private = root.join("private");
        for d in [&home, &scratch, &private] {
            std::fs::create_dir_all(d)?;
        }
        std::fs::create_dir_all(build_dir.parent().unwrap_or(&root))?;
        match origin {
            Origin::Commit { repo, sha } => {
                clone_at(repo, sha, &build_dir, git, Submodules::NetworkOnly)?
            }
            Origin::Disk(src) => match git2::Repository::open(src) {
                Ok(repo) if !repo.is_bare() && repo.head().is_ok() => {
                    let sha = repo.head()?.peel_to_commit()?.id().to_string();
                    clone_at(src, &sha, &build_dir, git, Submodules::AnyUrl)?;
                    overlay_worktree(&repo, src, &build_dir)?;
                }
                Ok(repo) if !repo.is_bare() => {
                    std::fs::create_dir_all(&build_dir)?;
                    overlay_worktree(&repo, src, &build_dir)?;
                }
                _ => {
                    std::fs::create_dir_all(&build_dir)?;
                    copy_tree(src, &build_dir, &|_| false)?;
                }
            },
        }
        Ok(Workspace {
            disk,
            dir: Some(dir),
            root,
            build_dir,
            home,
            scratch,
            private,
        })
    }

    /// Keeps the workspace on disk after the job; returns where it is.
    pub fn keep(&mut self) -> PathBuf {
        if let Some(d) = self.disk.take() {
            d.keep();
        }
        if let Some(d) = self.dir.take() {
            let _ = d.keep();
        }
        self.root.clone()
    }

    /// The workspace's top directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The disk budget, when the job's disk is full.
    pub fn disk_full(&self) -> Option<u64> {
        self.disk.as_ref().filter(|d| d.full()).map(|d| d.size())
    }
}

/// Clones `repo` into `dest` and checks out `sha` (detached), as Travis's
/// `git clone` + `git checkout -qf <sha>` did.
fn clone_at(
    repo: &Path,
    sha: &str,
    dest: &Path,
    git: &GitOptions,
    urls: Submodules,
) -> Result<(), WorkspaceError> {
    let url = format!("file://{}", repo.canonicalize()?.display());
    let mut fetch = git2::FetchOptions::new();
    if let Some(depth) = git.depth.filter(|d| *d > 0) {
        fetch.depth(depth);
    }
    let mut builder = git2::build::RepoBuilder::new();
    builder.fetch_options(fetch);
    // The clone checks nothing out: the commit is checked out once, below (the default
    // branch's files were written, then the commit's over them).
    let mut none = git2::build::CheckoutBuilder::new();
    none.dry_run();
    builder.with_checkout(none);
    let cloned = match builder.clone(&url, dest) {
        Ok(r) => r,
        Err(_) if git.depth.is_some() => {
            // Some transports cannot fetch shallow; a full clone is still correct.
            let _ = std::fs::remove_dir_all(dest);
            git2::build::RepoBuilder::new().clone(&url, dest)?
        }
        Err(e) => return Err(e.into()),
    };
    let oid = git2::Oid::from_str(sha)?;
    let commit = match cloned.find_commit(oid) {
        Ok(c) => c,
        Err(_) => {
            // The commit may not be on the default branch: fetch it explicitly.
            let mut remote = cloned.find_remote("origin")?;
            remote.fetch(&[sha], None, None)?;
            cloned.find_commit(oid)?
        }
    };
    cloned.checkout_tree(
        commit.as_object(),
        Some(git2::build::CheckoutBuilder::new().force()),
    )?;
    cloned.set_head_detached(oid)?;
    if git.submodules {
        update_submodules(&cloned, urls)?;
    }
    Ok(())
}

/// Where a commit's submodules may be fetched from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Submodules {
    /// A pushed commit: the network only. A `.gitmodules` url naming a path on this
    /// machine (`/srv/…`, `file://…`, or `../other.git` next to runway's own copy of the
    /// repository) would clone whatever runway can read there: another repository's
    /// mirror in its state directory, say.
    NetworkOnly,
    /// The developer's own work tree (`runway run .`): as git would.
    AnyUrl,
}

/// Why `url` (a submodule's, as `.gitmodules` writes it) is not fetched from a pushed
/// commit: `None` for a network URL.
pub fn local_url(url: &str) -> Option<&'static str> {
    let u = url.trim();
    let lower = u.to_ascii_lowercase();
    if lower.starts_with("file:") {
        return Some("a file:// URL");
    }
    if u.starts_with("./") || u.starts_with("../") {
        return Some("a path relative to runway's own copy of the repository, on this machine");
    }
    if u.starts_with('/') || u.starts_with('~') || u.is_empty() {
        return Some("a path on this machine");
    }
    for scheme in [
        "https://",
        "http://",
        "ssh://",
        "git://",
        "git+ssh://",
        "ssh+git://",
    ] {
        if lower.starts_with(scheme) {
            return None;
        }
    }
    // scp-like `user@host:path` (a ':' before any '/').
    match (u.find(':'), u.find('/')) {
        (Some(c), Some(s)) if c < s => None,
        (Some(_), None) => None,
        _ => Some("a path on this machine"),
    }
}

fn update_submodules(repo: &git2::Repository, urls: Submodules) -> Result<(), WorkspaceError> {
    for mut sm in repo.submodules()? {
        if urls == Submodules::NetworkOnly {
            let url = sm.url().ok().flatten().unwrap_or_default().to_string();
            if let Some(why) = local_url(&url) {
                return Err(WorkspaceError::Refused(format!(
                    ".gitmodules: submodule \"{}\" has url \"{url}\", {why}: runway fetches a \
                     pushed commit's submodules only from the network (https, ssh, git); \
                     give it the submodule's public URL",
                    sm.name().unwrap_or_default()
                )));
            }
        }
        sm.update(true, None)?;
        if let Ok(sub) = sm.open() {
            update_submodules(&sub, urls)?;
        }
    }
    Ok(())
}

/// Makes `dest` hold what is on disk in a work tree: tracked and untracked files that
/// are not ignored; tracked files deleted on disk are deleted in `dest` too.
fn overlay_worktree(
    repo: &git2::Repository,
    src: &Path,
    dest: &Path,
) -> Result<(), WorkspaceError> {
    copy_tree(src, dest, &|rel| {
        rel == Path::new(".git") || repo.is_path_ignored(rel).unwrap_or(false)
    })?;
    if let Ok(index) = repo.index() {
        for entry in index.iter() {
            let rel = PathBuf::from(String::from_utf8_lossy(&entry.path).into_owned());
            if src.join(&rel).symlink_metadata().is_err() {
                let _ = std::fs::remove_file(dest.join(&rel));
            }
        }
    }
    Ok(())
}

/// Copies a tree, keeping modes and symlinks, skipping paths `skip` names (relative).
fn copy_tree(src: &Path, dest: &Path, skip: &dyn Fn(&Path) -> bool) -> std::io::Result<()> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for e in std::fs::read_dir(src.join(&rel))? {
            let e = e?;
            let rel_child = rel.join(e.file_name());
            if rel_child == Path::new(".git") || skip(&rel_child) {
                continue;
            }
            let from = e.path();
            let to = dest.join(&rel_child);
            let meta = std::fs::symlink_metadata(&from)?;
            if meta.file_type().is_symlink() {
                let target = std::fs::read_link(&from)?;
                let _ = std::fs::remove_file(&to);
                std::os::unix::fs::symlink(target, &to)?;
            } else if meta.is_dir() {
                std::fs::create_dir_all(&to)?;
                stack.push(rel_child);
            } else {
                if to.symlink_metadata().is_ok() {
                    std::fs::remove_file(&to)?;
                }
                std::fs::copy(&from, &to)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn submodule_urls_on_this_machine_are_told_from_network_ones() {
        for local in [
            "/var/lib/runway/mirrors/o/priv.git",
            "file:///srv/x.git",
            "../priv.git",
            "./x",
            "~/x",
            "priv",
        ] {
            assert!(super::local_url(local).is_some(), "{local}");
        }
        for net in [
            "https://github.com/o/r.git",
            "git@github.com:o/r.git",
            "ssh://git@host/r.git",
            "git://host/r",
        ] {
            assert_eq!(super::local_url(net), None, "{net}");
        }
    }
}
