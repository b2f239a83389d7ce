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
    let dir = merges_dir(state_dir, name);
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
    // A ref, so that a clone of the merges repository brings the commit (and its
    // objects outlive a collection while a build names it).
    crate::source::git_run(&dir, &["update-ref", &merge_ref(&sha), &sha], None)?;
    Ok((dir, sha))
}

/// Where runway keeps its merges of repository `name`'s pull requests.
fn merges_dir(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("merges").join(format!("{name}.git"))
}

/// Where the merges repository keeps runway's merge `sha`.
fn merge_ref(sha: &str) -> String {
    format!("{MERGES}{sha}")
}

/// The merges repository's refs of runway's merges.
const MERGES: &str = "refs/heads/merge/";

/// Forgets runway's merges of repository `name` that no build names any more (`named`:
/// the commits of its pull requests' builds; retention pruned the others): their refs,
/// then the objects no ref reaches that are older than an hour (a merge being made
/// meanwhile keeps its objects; a build recorded after `named` was read gets its ref
/// again from [`of_build`]). How many merges went.
pub fn prune_merges(
    state_dir: &Path,
    name: &str,
    named: &std::collections::HashSet<String>,
) -> Result<usize, String> {
    let dir = merges_dir(state_dir, name);
    if !dir.join("HEAD").is_file() {
        return Ok(0);
    }
    let refs =
        crate::source::git_run(&dir, &["for-each-ref", "--format=%(refname)", MERGES], None)?;
    let gone: String = String::from_utf8_lossy(&refs)
        .lines()
        .filter(|r| {
            r.strip_prefix(MERGES)
                .is_some_and(|sha| !named.contains(sha))
        })
        .map(|r| format!("delete {r}\n"))
        .collect();
    if gone.is_empty() {
        return Ok(0);
    }
    crate::source::git_run(&dir, &["update-ref", "--stdin"], Some(gone.as_bytes()))?;
    crate::source::git_run(&dir, &["gc", "--quiet", "--prune=1.hour.ago"], None)?;
    Ok(gone.lines().count())
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
    if let Some(r) = crate::source::Repo::open(&dir)
        && r.has_commit(&row.commit)
    {
        // Its ref too ([`prune_merges`] may have taken it before the build was recorded).
        let name = merge_ref(&row.commit);
        if r.ref_tip(&name).is_none() {
            crate::source::git_run(&dir, &["update-ref", &name, &row.commit], None)?;
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::git_run;

    /// A commit of file `file` on the work tree `dir`'s current branch, its sha.
    fn commit(dir: &Path, file: &str) -> String {
        std::fs::write(dir.join(file), file).unwrap();
        git_run(dir, &["add", "."], None).unwrap();
        let who = ["-c", "user.name=t", "-c", "user.email=t@t"];
        git_run(dir, &[&who[..], &["commit", "-qm", file]].concat(), None).unwrap();
        let sha = git_run(dir, &["rev-parse", "HEAD"], None).unwrap();
        String::from_utf8(sha).unwrap().trim().to_string()
    }

    /// Retention pruned a pull request's build: runway's merge for it goes from the
    /// merges repository (its ref), the merges builds still name stay, and a build
    /// whose merge lost its ref (recorded after the prune read the builds) gets it back
    /// when its commit is looked for.
    #[test]
    fn merges_no_build_names_are_pruned() {
        let t = tempfile::tempdir().unwrap();
        let (source, state) = (t.path().join("source"), t.path().join("state"));
        std::fs::create_dir(&source).unwrap();
        git_run(&source, &["init", "-q", "-b", "main"], None).unwrap();
        let base = commit(&source, "base");
        let merged: Vec<String> = (1..=2)
            .map(|n| {
                git_run(
                    &source,
                    &["checkout", "-q", "-b", &format!("pr{n}"), &base],
                    None,
                )
                .unwrap();
                let pr = PullRequest {
                    number: n,
                    head_branch: format!("pr{n}"),
                    head_sha: commit(&source, &format!("change{n}")),
                    base_sha: base.clone(),
                    merged_by_runway: true,
                    ..PullRequest::default()
                };
                remerge(&state, "o/a", &source, &pr, "main").unwrap().1
            })
            .collect();
        let dir = merges_repo(&state, "o/a", &source).unwrap();
        let refs = || {
            let r = crate::source::Repo::open(&dir).unwrap();
            merged
                .iter()
                .map(|sha| r.ref_tip(&merge_ref(sha)).is_some())
                .collect::<Vec<_>>()
        };
        assert_eq!(refs(), [true, true]);
        let named = std::collections::HashSet::from([merged[0].clone()]);
        assert_eq!(prune_merges(&state, "o/a", &named), Ok(1));
        assert_eq!(refs(), [true, false], "the second merge's ref is gone");
        assert_eq!(prune_merges(&state, "o/a", &named), Ok(0), "nothing more");
        assert_eq!(prune_merges(&state, "o/b", &named), Ok(0), "no merges made");
        // Its objects are kept an hour (a merge being made meanwhile keeps its own).
        let r = crate::source::Repo::open(&dir).unwrap();
        assert!(r.has_commit(&merged[1]));
        drop(r);
        // The second merge named again (a build recorded after the prune's read).
        let repo: RepoConfig =
            toml::from_str(&format!("name = 'o/a'\nurl = '{}'", source.display())).unwrap();
        let mut row = BuildRow {
            commit: merged[1].clone(),
            branch: Some("main".into()),
            pull_request: Some(PullRequest {
                number: 2,
                base_sha: base.clone(),
                merged_by_runway: true,
                ..PullRequest::default()
            }),
            ..BuildRow::default()
        };
        assert_eq!(
            of_build(&state, &repo, &mut row, None, &|_| Ok(())),
            Ok(dir.clone())
        );
        assert_eq!(refs(), [true, true], "its ref is back");
    }
}
