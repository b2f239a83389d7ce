//! git, through git2: which repository a path is, its current branch, a commit's
//! message and people, and a file's text at a commit. The only I/O the planner needs.
//! And [`git_run`], the git command line, for what git2 does not do (packs for workers).

use std::path::{Path, PathBuf};

use crate::event::Person;

/// Errors reading a repository.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// git2 failed.
    #[error("git: {0}")]
    Git(#[from] git2::Error),
    /// The file is not in the commit.
    #[error("{path} is not in commit {commit}")]
    Missing {
        /// The path asked for.
        path: String,
        /// The commit looked in.
        commit: String,
    },
}

/// A commit's facts as a build needs them.
#[derive(Clone, Debug, Default)]
pub struct CommitInfo {
    /// Full sha.
    pub sha: String,
    /// Full message.
    pub message: String,
    /// Author.
    pub author: Person,
    /// Committer.
    pub committer: Person,
}

/// A git repository (work tree or bare).
pub struct Repo {
    repo: git2::Repository,
}

impl Repo {
    /// Opens the repository at `path` (not searching parents), if it is one.
    pub fn open(path: &Path) -> Option<Repo> {
        git2::Repository::open(path).ok().map(|repo| Repo { repo })
    }

    /// The work tree that holds `path` (it or a directory above it), if any: commands
    /// run from a subdirectory of a work tree act on the whole work tree, as git does.
    pub fn discover(path: &Path) -> Option<(Repo, PathBuf)> {
        let repo = git2::Repository::discover(path).ok()?;
        let root = repo.workdir()?.to_path_buf();
        Some((Repo { repo }, root))
    }

    /// True for a bare repository.
    pub fn is_bare(&self) -> bool {
        self.repo.is_bare()
    }

    /// The work tree, if any.
    pub fn workdir(&self) -> Option<PathBuf> {
        self.repo.workdir().map(Path::to_path_buf)
    }

    /// The branch HEAD points at (also for an unborn HEAD), or `None` when detached.
    pub fn current_branch(&self) -> Option<String> {
        let head = self.repo.find_reference("HEAD").ok()?;
        let target = head.symbolic_target().ok().flatten()?;
        target.strip_prefix("refs/heads/").map(str::to_string)
    }

    /// Resolves a revision (`HEAD`, a sha, a branch) to a commit's facts.
    pub fn commit(&self, rev: &str) -> Result<CommitInfo, SourceError> {
        let commit = self.repo.revparse_single(rev)?.peel_to_commit()?;
        let person = |s: git2::Signature| Person {
            name: s.name().unwrap_or_default().to_string(),
            email: s.email().unwrap_or_default().to_string(),
        };
        Ok(CommitInfo {
            sha: commit.id().to_string(),
            message: commit.message().unwrap_or_default().to_string(),
            author: person(commit.author()),
            committer: person(commit.committer()),
        })
    }

    /// The commit `name` (`refs/heads/B`, `refs/tags/T`) points at now, if it exists.
    pub fn ref_tip(&self, name: &str) -> Option<String> {
        let r = self.repo.find_reference(name).ok()?;
        Some(r.peel_to_commit().ok()?.id().to_string())
    }

    /// The bytes of `path` at `rev`, at most `limit` + 1 of them (a larger blob is cut
    /// there, so the reader can say it is too large without holding it all).
    pub fn read_file(&self, rev: &str, path: &str, limit: usize) -> Result<Vec<u8>, SourceError> {
        let commit = self.repo.revparse_single(rev)?.peel_to_commit()?;
        let entry = commit
            .tree()?
            .get_path(Path::new(path))
            .map_err(|_| SourceError::Missing {
                path: path.to_string(),
                commit: commit.id().to_string(),
            })?;
        let blob = entry.to_object(&self.repo)?.peel_to_blob()?;
        let content = blob.content();
        Ok(content[..content.len().min(limit.saturating_add(1))].to_vec())
    }

    /// `owner/repo` from the `origin` remote's URL, else `local/<directory name>`.
    pub fn slug(&self) -> String {
        let from_url = self
            .repo
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(slug_from_url));
        from_url.flatten().unwrap_or_else(|| {
            let dir = self
                .workdir()
                .unwrap_or_else(|| self.repo.path().to_path_buf());
            local_slug(&dir)
        })
    }
}

/// `git@host:owner/repo.git`, `https://host/owner/repo` → `owner/repo`.
pub fn slug_from_url(url: &str) -> Option<String> {
    let trimmed = url.trim_end_matches('/').trim_end_matches(".git");
    let mut parts = trimmed.rsplit(['/', ':']);
    let repo = parts.next().filter(|s| !s.is_empty())?;
    let owner = parts.next().filter(|s| !s.is_empty())?;
    Some(format!("{owner}/{repo}"))
}

/// `local/<name>` for a repository without a usable remote.
pub fn local_slug(dir: &Path) -> String {
    let name = dir
        .canonicalize()
        .unwrap_or_else(|_| dir.to_path_buf())
        .file_name()
        .map(|n| n.to_string_lossy().trim_end_matches(".git").to_string())
        .unwrap_or_else(|| "repo".into());
    format!("local/{name}")
}

/// Runs `git -C DIR ARGS` with `input` on its standard input; its standard output, or
/// its standard error as the error when it fails.
pub fn git_run(dir: &Path, args: &[&str], input: Option<&[u8]>) -> Result<Vec<u8>, String> {
    use std::io::Write as _;
    use std::process::{Command, Stdio};
    let mut child = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .stdin(if input.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("git: {e}"))?;
    // Written from a thread, so a child that answers while it reads never waits on us.
    let writer = match (input, child.stdin.take()) {
        (Some(bytes), Some(mut stdin)) => {
            let bytes = bytes.to_vec();
            Some(std::thread::spawn(move || stdin.write_all(&bytes)))
        }
        _ => None,
    };
    let out = child.wait_with_output().map_err(|e| format!("git: {e}"))?;
    if let Some(w) = writer {
        w.join()
            .map_err(|_| "git: writing its input failed".to_string())?
            .map_err(|e| format!("git: {e}"))?;
    }
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(format!(
            "git {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_from_urls() {
        assert_eq!(
            slug_from_url("git@github.com:o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(slug_from_url("https://x.org/o/r").as_deref(), Some("o/r"));
        assert_eq!(slug_from_url("/srv/git/o/r.git").as_deref(), Some("o/r"));
    }
}
