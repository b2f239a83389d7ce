//! Where a build's commit is read from: the repository itself (a path in runway.toml),
//! its mirror (a URL, [`super::mirror`]), or, for a pull request whose merge runway made
//! (the forge offered none), the merges repository under the state directory: a bare
//! repository of runway's own whose objects are the merge commits and trees, reaching
//! the source's objects through git's alternates. runway never writes into the
//! repository it builds. A node that did not make a merge makes it again from the
//! build's record ([`crate::source::merge`] makes the same commit anywhere).

use std::path::{Path, PathBuf};

use crate::cancel::Cancel;
use crate::event::PullRequest;
use crate::runway_toml::RepoConfig;
use crate::store::BuildRow;

/// The repository (or mirror) of `repo`, brought up to date when `want` is not in it.
pub fn repository(
    state_dir: &Path,
    repo: &RepoConfig,
    want: Option<&str>,
    cancel: Option<&Cancel>,
) -> Result<PathBuf, String> {
    match repo.local_path() {
        Some(p) => Ok(p),
        None => super::mirror::sync(state_dir, repo, want, cancel).map_err(|e| e.to_string()),
    }
}

/// The merges repository of `name` (made on first use), whose alternates lead to the
/// objects of `source`.
pub fn merges_repo(state_dir: &Path, name: &str, source: &Path) -> Result<PathBuf, String> {
    let dir = state_dir.join("merges").join(format!("{name}.git"));
    let io = |e: std::io::Error| format!("{}: {e}", dir.display());
    if !dir.join("HEAD").is_file() {
        std::fs::create_dir_all(&dir).map_err(io)?;
        crate::source::git_run(&dir, &["init", "--bare", "--quiet"], None)?;
    }
    let objects = crate::source::Repo::open(source)
        .map(|r| r.git_dir().join("objects"))
        .ok_or_else(|| format!("{} is not a git repository", source.display()))?;
    let objects = objects.canonicalize().map_err(io)?;
    let alternates = dir.join("objects").join("info").join("alternates");
    let line = format!("{}\n", objects.display());
    if std::fs::read_to_string(&alternates).ok().as_deref() != Some(line.as_str()) {
        // Written beside and renamed: git reading it meanwhile sees the old or the new.
        let info = alternates.parent().expect("objects/info");
        std::fs::create_dir_all(info).map_err(io)?;
        let tmp = tempfile::NamedTempFile::new_in(info).map_err(io)?;
        std::fs::write(tmp.path(), &line).map_err(io)?;
        tmp.persist(&alternates).map_err(|e| io(e.error))?;
    }
    Ok(dir)
}

/// The message of runway's merge of pull request `pr` into `base`.
pub fn merge_message(pr: &PullRequest, base: &str) -> String {
    format!(
        "Merge {} into {base}\n\nrunway's merge of pull request #{} ({}) into {base}.\n",
        pr.head_sha, pr.number, pr.head_branch
    )
}

/// Makes runway's merge of `pr` into `base` in the merges repository of `name` again,
/// when it is not there; its sha.
pub fn remerge(
    state_dir: &Path,
    name: &str,
    source: &Path,
    pr: &PullRequest,
    base: &str,
) -> Result<(PathBuf, String), String> {
    let dir = merges_repo(state_dir, name, source)?;
    let sha = crate::source::merge(&dir, &pr.base_sha, &pr.head_sha, &merge_message(pr, base))
        .map_err(|e| format!("cannot be merged into {base}: {e}"))?;
    // A ref, so that a clone of the merges repository brings the commit.
    crate::source::git_run(
        &dir,
        &["update-ref", &format!("refs/heads/merge/{sha}"), &sha],
        None,
    )?;
    Ok((dir, sha))
}

/// Where build `row`'s commit is: its repository, or for a pull request runway merged,
/// the merges repository (the merge made again when this node has not got it). A pull
/// request queued before its repository could be read (a slow git host) is merged now,
/// into its base branch as it is now: `row` then names the merge, and `record` is told.
pub fn of_build(
    state_dir: &Path,
    repo: &RepoConfig,
    row: &mut BuildRow,
    cancel: Option<&Cancel>,
    record: &dyn Fn(&BuildRow) -> Result<(), String>,
) -> Result<PathBuf, String> {
    let Some(pr) = row.pull_request.as_ref().filter(|p| p.merged_by_runway) else {
        return repository(state_dir, repo, Some(&row.commit), cancel);
    };
    let source = repository(state_dir, repo, Some(&pr.head_sha), cancel)?;
    if pr.base_sha.is_empty() {
        let base = row.branch.clone().unwrap_or_default();
        let tip = crate::source::Repo::open(&source)
            .and_then(|r| r.ref_tip(&format!("refs/heads/{base}")))
            .ok_or_else(|| format!("the base branch {base} is not in {}", repo.name))?;
        let mut merged = pr.clone();
        merged.base_sha = tip;
        let (dir, sha) = remerge(state_dir, &repo.name, &source, &merged, &base)?;
        row.commit_range = format!("{}...{}", merged.base_sha, merged.head_sha);
        row.pull_request = Some(merged);
        row.commit = sha;
        record(row)?;
        return Ok(dir);
    }
    let dir = merges_repo(state_dir, &repo.name, &source)?;
    if crate::source::Repo::open(&dir).is_some_and(|r| r.has_commit(&row.commit)) {
        return Ok(dir);
    }
    let base = row.branch.as_deref().unwrap_or_default();
    let (dir, sha) = remerge(state_dir, &repo.name, &source, pr, base)?;
    if sha != row.commit {
        return Err(format!(
            "runway's merge of pull request #{} made {sha}, not the build's {}",
            pr.number, row.commit
        ));
    }
    Ok(dir)
}
