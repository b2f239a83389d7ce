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
    /// Always `Some` until dropped.
    repo: Option<git2::Repository>,
    /// A bare repository opened by its path goes back to [`KEPT`] when dropped, with
    /// the identity of its objects' directory when it was opened.
    kept: Option<(PathBuf, Identity)>,
}

/// The device, inode and birth of a repository's objects directory: one removed and
/// made again at the same path (a mirror cloned anew) is another, even on the same
/// inode.
type Identity = (u64, u64, Option<std::time::SystemTime>);

fn identity(dir: &Path) -> Option<Identity> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.join("objects")).ok()?;
    Some((m.dev(), m.ino(), m.created().ok()))
}

/// Bare repositories opened before, each kept for the next open of its path: opening
/// one reads git's configuration files anew, and a serve node opens its mirror of a
/// repository six times a build (a tenth of its own CPU a build on the worker path).
/// One handle serves one user at a time; refs and objects are read from the disk as
/// they change (libgit2 checks the files' stamps and looks again for an object it
/// lacks), so a fetch into the mirror meanwhile is seen.
#[allow(clippy::type_complexity)]
static KEPT: std::sync::Mutex<Vec<(PathBuf, Identity, git2::Repository)>> =
    std::sync::Mutex::new(Vec::new());

/// The most repositories [`KEPT`] holds.
const KEEP_AT_MOST: usize = 16;

impl Repo {
    /// Opens the repository at `path` (not searching parents), if it is one.
    pub fn open(path: &Path) -> Option<Repo> {
        let now = identity(path);
        if let Some(id) = now
            && let Some(repo) = Self::take_kept(path, id)
        {
            return Some(Repo {
                repo: Some(repo),
                kept: Some((path.to_path_buf(), id)),
            });
        }
        let repo = git2::Repository::open(path).ok()?;
        let kept = now
            .filter(|_| repo.is_bare())
            .map(|id| (path.to_path_buf(), id));
        Some(Repo {
            repo: Some(repo),
            kept,
        })
    }

    /// A handle kept on `path` as it is now (`id`); one kept on a directory since
    /// replaced goes.
    fn take_kept(path: &Path, id: Identity) -> Option<git2::Repository> {
        let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
        kept.retain(|(p, was, _)| p != path || *was == id);
        let i = kept.iter().position(|(p, _, _)| p == path)?;
        Some(kept.swap_remove(i).2)
    }

    /// The work tree that holds `path` (it or a directory above it), if any: commands
    /// run from a subdirectory of a work tree act on the whole work tree, as git does.
    pub fn discover(path: &Path) -> Option<(Repo, PathBuf)> {
        let repo = git2::Repository::discover(path).ok()?;
        let root = repo.workdir()?.to_path_buf();
        Some((
            Repo {
                repo: Some(repo),
                kept: None,
            },
            root,
        ))
    }

    /// The repository, for what this type does not wrap (a worker's fetch).
    pub(crate) fn git(&self) -> &git2::Repository {
        self.repo.as_ref().expect("a repository until dropped")
    }

    /// Its git directory (`.git` of a work tree, the repository itself when bare).
    pub fn git_dir(&self) -> PathBuf {
        self.git().path().to_path_buf()
    }

    /// True for a bare repository.
    pub fn is_bare(&self) -> bool {
        self.git().is_bare()
    }

    /// The work tree, if any.
    pub fn workdir(&self) -> Option<PathBuf> {
        self.git().workdir().map(Path::to_path_buf)
    }

    /// The branch HEAD points at (also for an unborn HEAD), or `None` when detached.
    pub fn current_branch(&self) -> Option<String> {
        let head = self.git().find_reference("HEAD").ok()?;
        let target = head.symbolic_target().ok().flatten()?;
        target.strip_prefix("refs/heads/").map(str::to_string)
    }

    /// Resolves a revision (`HEAD`, a sha, a branch) to a commit's facts.
    pub fn commit(&self, rev: &str) -> Result<CommitInfo, SourceError> {
        let commit = self.git().revparse_single(rev)?.peel_to_commit()?;
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
        let r = self.git().find_reference(name).ok()?;
        Some(r.peel_to_commit().ok()?.id().to_string())
    }

    /// The parents of commit `sha`, in order; None when it is not here.
    pub fn parents(&self, sha: &str) -> Option<Vec<String>> {
        let c = self
            .git()
            .find_commit(git2::Oid::from_str(sha).ok()?)
            .ok()?;
        Some(c.parent_ids().map(|p| p.to_string()).collect())
    }

    /// True when commit `sha` is here.
    pub fn has_commit(&self, sha: &str) -> bool {
        git2::Oid::from_str(sha).is_ok_and(|o| self.git().find_commit(o).is_ok())
    }

    /// The bytes of `path` at `rev`, at most `limit` + 1 of them (a larger blob is cut
    /// there, so the reader can say it is too large without holding it all).
    pub fn read_file(&self, rev: &str, path: &str, limit: usize) -> Result<Vec<u8>, SourceError> {
        let commit = self.git().revparse_single(rev)?.peel_to_commit()?;
        let entry = commit
            .tree()?
            .get_path(Path::new(path))
            .map_err(|_| SourceError::Missing {
                path: path.to_string(),
                commit: commit.id().to_string(),
            })?;
        let blob = entry.to_object(self.git())?.peel_to_blob()?;
        let content = blob.content();
        Ok(content[..content.len().min(limit.saturating_add(1))].to_vec())
    }

    /// `owner/repo` from the `origin` remote's URL, else `local/<directory name>`.
    pub fn slug(&self) -> String {
        let from_url = self
            .git()
            .find_remote("origin")
            .ok()
            .and_then(|r| r.url().ok().map(slug_from_url));
        from_url.flatten().unwrap_or_else(|| {
            let dir = self
                .workdir()
                .unwrap_or_else(|| self.git().path().to_path_buf());
            local_slug(&dir)
        })
    }
}

impl Drop for Repo {
    fn drop(&mut self) {
        if let (Some((path, id)), Some(repo)) = (self.kept.take(), self.repo.take()) {
            let mut kept = KEPT.lock().unwrap_or_else(|p| p.into_inner());
            if kept.len() < KEEP_AT_MOST {
                kept.push((path, id, repo));
            }
        }
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

/// Why a pull request's head could not be merged into its base.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// The two conflict (these files), or share no history.
    #[error("{0}")]
    Conflict(String),
    /// git failed otherwise (a commit missing, git not found).
    #[error("{0}")]
    Git(String),
}

/// The environment that makes runway's merge commits the same bytes on every machine:
/// no user or system git configuration (signing, encodings), runway as author and
/// committer, the head's commit time as the date.
fn merge_env(cmd: &mut std::process::Command, seconds: &str) {
    let date = format!("{seconds} +0000");
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "runway")
        .env("GIT_AUTHOR_EMAIL", "runway@localhost")
        .env("GIT_AUTHOR_DATE", &date)
        .env("GIT_COMMITTER_NAME", "runway")
        .env("GIT_COMMITTER_EMAIL", "runway@localhost")
        .env("GIT_COMMITTER_DATE", &date);
}

/// True for a git object id as hex (40 digits, or 64 for SHA-256 repositories): what a
/// pull request's commits must be before they reach git's command line, where a value
/// starting with `-` would be read as an option (`--output=FILE` writes a file).
pub fn is_object_id(s: &str) -> bool {
    matches!(s.len(), 40 | 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// How long runway's merge of a pull request may take (a pushed tree can be made to
/// make git work for long).
const MERGE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Runs `cmd` to its end and returns what it printed, or kills it after `limit`.
fn output_within(
    mut cmd: std::process::Command,
    limit: std::time::Duration,
) -> std::io::Result<std::process::Output> {
    use std::process::Stdio;
    let child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?;
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out,
        Err(_) => {
            // SAFETY: kill(2) of our child, which the waiting thread has not reaped (it
            // reports here first, and we have not heard from it).
            unsafe { libc::kill(pid, libc::SIGKILL) };
            let _ = rx.recv();
            Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("took longer than {} s; stopped", limit.as_secs()),
            ))
        }
    }
}

/// Makes, in repository `dir`, the merge commit of `head` into `base` that GitHub's
/// `refs/pull/N/merge` would be (first parent the base, second the head, `message`),
/// writing objects only (no ref moves, no work tree), and returns its sha. The same two
/// commits and message make the same commit on any machine ([`merge_env`]), so a node
/// that did not make it makes it again from the build's record.
pub fn merge(dir: &Path, base: &str, head: &str, message: &str) -> Result<String, MergeError> {
    use std::process::{Command, Stdio};
    for id in [base, head] {
        if !is_object_id(id) {
            return Err(MergeError::Git(format!("{id:?} is not a commit id")));
        }
    }
    let git = |args: &[&str], seconds: &str| {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(dir).args(args);
        merge_env(&mut cmd, seconds);
        cmd.stdin(Stdio::null());
        output_within(cmd, MERGE_TIMEOUT).map_err(|e| MergeError::Git(format!("git: {e}")))
    };
    let when = git(&["log", "-1", "--format=%ct", head, "--"], "0")?;
    if !when.status.success() {
        return Err(MergeError::Git(format!(
            "the head commit {head} is not in the repository"
        )));
    }
    let seconds = String::from_utf8_lossy(&when.stdout).trim().to_string();
    let tree = git(
        &[
            "merge-tree",
            "--write-tree",
            "--name-only",
            "--no-messages",
            base,
            head,
        ],
        &seconds,
    )?;
    let out = String::from_utf8_lossy(&tree.stdout).to_string();
    match tree.status.code() {
        Some(0) => {}
        Some(1) => {
            let files: Vec<&str> = out.lines().skip(1).filter(|l| !l.is_empty()).collect();
            return Err(MergeError::Conflict(format!(
                "conflicts in {}",
                files
                    .iter()
                    .take(10)
                    .copied()
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        _ => {
            let said = String::from_utf8_lossy(&tree.stderr);
            return Err(if said.contains("unrelated histories") {
                MergeError::Conflict("the head and the base share no history".into())
            } else {
                MergeError::Git(format!("git merge-tree: {}", said.trim()))
            });
        }
    }
    let tree = out.lines().next().unwrap_or_default().trim().to_string();
    let made = git(
        &["commit-tree", &tree, "-p", base, "-p", head, "-m", message],
        &seconds,
    )?;
    if !made.status.success() {
        return Err(MergeError::Git(format!(
            "git commit-tree: {}",
            String::from_utf8_lossy(&made.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&made.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A commit in work tree `dir` (made with git), its sha.
    fn commit_in(dir: &Path, file: &str) -> String {
        std::fs::write(dir.join(file), file).unwrap();
        git_run(dir, &["add", "."], None).unwrap();
        git_run(
            dir,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                file,
            ],
            None,
        )
        .unwrap();
        let sha = git_run(dir, &["rev-parse", "HEAD"], None).unwrap();
        String::from_utf8(sha).unwrap().trim().to_string()
    }

    /// A mirror opened, dropped (kept) and opened again sees what a fetch brought
    /// meanwhile, and its old commits after a repack that removed the packs it had
    /// open; a mirror removed and made again at the same path is opened anew.
    #[test]
    fn a_kept_mirror_sees_fetches_and_repacks_and_a_new_one_at_its_path() {
        let t = tempfile::tempdir().unwrap();
        let work = t.path().join("work");
        std::fs::create_dir(&work).unwrap();
        git_run(&work, &["init", "-q", "-b", "main"], None).unwrap();
        let first = commit_in(&work, "a");
        let mirror = t.path().join("mirror.git");
        let clone = |to: &Path| {
            git_run(
                t.path(),
                &[
                    "clone",
                    "-q",
                    "--mirror",
                    work.to_str().unwrap(),
                    to.to_str().unwrap(),
                ],
                None,
            )
            .unwrap()
        };
        clone(&mirror);
        assert!(Repo::open(&mirror).unwrap().has_commit(&first));
        let kept = |p: &Path| KEPT.lock().unwrap().iter().any(|(k, _, _)| k == p);
        assert!(kept(&mirror), "a bare repository is kept when dropped");
        let second = commit_in(&work, "b");
        git_run(&mirror, &["fetch", "-q"], None).unwrap();
        let repo = Repo::open(&mirror).unwrap();
        assert!(!kept(&mirror), "the kept handle was taken");
        assert!(repo.has_commit(&second));
        assert_eq!(
            repo.ref_tip("refs/heads/main").as_deref(),
            Some(second.as_str())
        );
        drop(repo);
        git_run(&mirror, &["repack", "-q", "-a", "-d"], None).unwrap();
        let repo = Repo::open(&mirror).unwrap();
        assert!(repo.has_commit(&first) && repo.has_commit(&second));
        assert_eq!(repo.read_file(&first, "a", 100).unwrap(), b"a");
        drop(repo);
        std::fs::remove_dir_all(&mirror).unwrap();
        std::fs::remove_dir_all(&work).unwrap();
        std::fs::create_dir(&work).unwrap();
        git_run(&work, &["init", "-q", "-b", "main"], None).unwrap();
        let other = commit_in(&work, "c");
        clone(&mirror);
        let repo = Repo::open(&mirror).unwrap();
        assert!(repo.has_commit(&other) && !repo.has_commit(&first));
    }

    #[test]
    fn slugs_from_urls() {
        assert_eq!(
            slug_from_url("git@github.com:o/r.git").as_deref(),
            Some("o/r")
        );
        assert_eq!(slug_from_url("https://x.org/o/r").as_deref(), Some("o/r"));
        assert_eq!(slug_from_url("/srv/git/o/r.git").as_deref(), Some("o/r"));
    }

    /// git in `d` with a fixed identity; its output, once it succeeded.
    fn git(d: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .arg("-C")
            .arg(d)
            .args(args)
            .env("GIT_AUTHOR_NAME", "a")
            .env("GIT_AUTHOR_EMAIL", "a@x")
            .env("GIT_COMMITTER_NAME", "a")
            .env("GIT_COMMITTER_EMAIL", "a@x")
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// runway's merge is the same commit wherever it is made; a conflict names its files.
    #[test]
    fn a_merge_is_the_same_commit_anywhere_and_a_conflict_says_where() {
        let dir = tempfile::tempdir().unwrap();
        let run = git;
        let w = dir.path().join("w");
        std::fs::create_dir(&w).unwrap();
        run(&w, &["init", "-q", "-b", "main"]);
        std::fs::write(w.join("a"), "1\n").unwrap();
        run(&w, &["add", "a"]);
        run(&w, &["commit", "-q", "-m", "one"]);
        let root = run(&w, &["rev-parse", "HEAD"]);
        std::fs::write(w.join("b"), "2\n").unwrap();
        run(&w, &["add", "b"]);
        run(&w, &["commit", "-q", "-m", "base"]);
        let base = run(&w, &["rev-parse", "HEAD"]);
        run(&w, &["checkout", "-q", "-b", "f", &root]);
        std::fs::write(w.join("c"), "3\n").unwrap();
        run(&w, &["add", "c"]);
        run(&w, &["commit", "-q", "-m", "head"]);
        let head = run(&w, &["rev-parse", "HEAD"]);
        let copy = dir.path().join("copy.git");
        run(
            dir.path(),
            &[
                "clone",
                "-q",
                "--mirror",
                w.to_str().unwrap(),
                copy.to_str().unwrap(),
            ],
        );
        let one = merge(&w, &base, &head, "m").unwrap();
        let two = merge(&copy, &base, &head, "m").unwrap();
        assert_eq!(one, two);
        assert_eq!(
            run(&w, &["log", "-1", "--format=%P", &one]),
            format!("{base} {head}")
        );
        run(&w, &["checkout", "-q", "-b", "g", &root]);
        std::fs::write(w.join("b"), "other\n").unwrap();
        run(&w, &["add", "b"]);
        run(&w, &["commit", "-q", "-m", "clash"]);
        let clash = run(&w, &["rev-parse", "HEAD"]);
        assert_eq!(
            merge(&w, &base, &clash, "m"),
            Err(MergeError::Conflict("conflicts in b".into()))
        );
    }

    /// A pull request's commit that is not an object id never reaches git: a head of
    /// `--output=FILE` (which `git log` would take as an option and write) is refused
    /// before git runs, and no file is written.
    #[test]
    fn a_merge_of_something_that_is_not_a_commit_id_never_runs_git() {
        let dir = tempfile::tempdir().unwrap();
        // A real repository with a commit: git would do as the option says.
        let git = |args: &[&str]| git(dir.path(), args);
        git(&["init", "-q"]);
        git(&["commit", "-q", "--allow-empty", "-m", "one"]);
        let good = git(&["rev-parse", "HEAD"]);
        let target = dir.path().join("written-by-git");
        let hostile = format!("--output={}", target.display());
        assert!(matches!(
            merge(dir.path(), &good, &hostile, "m"),
            Err(MergeError::Git(_))
        ));
        assert!(matches!(
            merge(dir.path(), &hostile, &good, "m"),
            Err(MergeError::Git(_))
        ));
        assert!(!target.exists());
        assert!(
            is_object_id(&good)
                && !is_object_id("HEAD")
                && !is_object_id(&format!("-{}", &good[1..]))
        );
    }
}
