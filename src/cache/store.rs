//! Where caches are kept ([`CacheStore`]): this machine's directory ([`LocalStore`]:
//! `<root>/<owner>/<repo>/<branch>/<key>.tar.zst`), or, for a `runway worker`, a bucket it
//! reaches through the server's presigned URLs (`crate::agent`), under the same names.
//!
//! The root is `--cache-dir`, else `$XDG_CACHE_HOME/runway`, else `~/.cache/runway`:
//! never inside the repository being built.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One stored cache.
#[derive(Debug, Clone)]
pub struct Entry {
    /// `owner/repo`.
    pub repo: String,
    /// The branch (or `PR.<n>`) it was stored for.
    pub branch: String,
    /// The cache key.
    pub key: String,
    /// Archive size in bytes.
    pub bytes: u64,
    /// When it was written.
    pub modified: SystemTime,
    /// The archive file.
    pub path: PathBuf,
}

/// Where a job's cache archives are fetched from and stored to.
pub trait CacheStore: Send + Sync + std::fmt::Debug {
    /// The archive of (repo, branch, key) as a file here, or None when none is stored;
    /// a remote store downloads it into `scratch`.
    fn fetch(
        &self,
        repo: &str,
        branch: &str,
        key: &str,
        scratch: &Path,
    ) -> std::io::Result<Option<PathBuf>>;
    /// Where a new archive for (repo, branch, key) is written before [`CacheStore::put`].
    fn staging(&self, repo: &str, branch: &str, key: &str, scratch: &Path) -> PathBuf;
    /// Makes the archive written at `staged` the stored one, replacing the old one whole.
    fn put(&self, repo: &str, branch: &str, key: &str, staged: &Path) -> std::io::Result<()>;
}

/// The name of (repo, branch, key) in a store: `<owner>/<repo>/<branch>/<key>.tar.zst`,
/// each part one path component.
pub fn object_name(repo: &str, branch: &str, key: &str) -> String {
    let (owner, name) = repo.split_once('/').unwrap_or(("local", repo));
    format!(
        "{}/{}/{}/{}.tar.zst",
        component(owner),
        component(name),
        component(branch),
        component(key)
    )
}

impl CacheStore for LocalStore {
    fn fetch(
        &self,
        repo: &str,
        branch: &str,
        key: &str,
        _scratch: &Path,
    ) -> std::io::Result<Option<PathBuf>> {
        let path = self.path(repo, branch, key);
        Ok(path.exists().then_some(path))
    }
    fn staging(&self, repo: &str, branch: &str, key: &str, _scratch: &Path) -> PathBuf {
        // The archive is written beside its place and renamed over it: already stored.
        self.path(repo, branch, key)
    }
    fn put(&self, _: &str, _: &str, _: &str, _staged: &Path) -> std::io::Result<()> {
        Ok(())
    }
}

/// A directory of cache archives.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

/// The default store root.
pub fn default_root() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CACHE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("runway");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".cache/runway")
}

/// Makes a branch or repo name safe as one path component (`feature/x` → `feature%2Fx`).
fn component(s: &str) -> String {
    s.replace('%', "%25").replace('/', "%2F")
}

fn uncomponent(s: &str) -> String {
    s.replace("%2F", "/").replace("%25", "%")
}

impl LocalStore {
    /// A store at `root`.
    pub fn new(root: impl Into<PathBuf>) -> LocalStore {
        LocalStore { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Where the archive of (repo, branch, key) lives.
    pub fn path(&self, repo: &str, branch: &str, key: &str) -> PathBuf {
        self.root.join(object_name(repo, branch, key))
    }

    /// Every stored cache, optionally only for one repo and/or branch.
    pub fn list(&self, repo: Option<&str>, branch: Option<&str>) -> std::io::Result<Vec<Entry>> {
        let mut out = Vec::new();
        let dirs = |p: &Path| -> Vec<PathBuf> {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| e.path())
                        .filter(|p| p.is_dir())
                        .collect()
                })
                .unwrap_or_default()
        };
        for owner in dirs(&self.root) {
            for name in dirs(&owner) {
                let slug = format!(
                    "{}/{}",
                    uncomponent(&owner.file_name().unwrap_or_default().to_string_lossy()),
                    uncomponent(&name.file_name().unwrap_or_default().to_string_lossy())
                );
                if repo.is_some_and(|r| r != slug) {
                    continue;
                }
                for br in dirs(&name) {
                    let b = uncomponent(&br.file_name().unwrap_or_default().to_string_lossy());
                    if branch.is_some_and(|x| x != b) {
                        continue;
                    }
                    for f in std::fs::read_dir(&br)?.flatten() {
                        let file = f.file_name().to_string_lossy().into_owned();
                        let Some(key) = file.strip_suffix(".tar.zst") else {
                            continue;
                        };
                        let meta = f.metadata()?;
                        out.push(Entry {
                            repo: slug.clone(),
                            branch: b.clone(),
                            key: key.to_string(),
                            bytes: meta.len(),
                            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                            path: f.path(),
                        });
                    }
                }
            }
        }
        out.sort_by(|a, b| (&a.repo, &a.branch, &a.key).cmp(&(&b.repo, &b.branch, &b.key)));
        Ok(out)
    }

    /// Deletes the caches `list` would show; returns how many.
    pub fn clear(&self, repo: Option<&str>, branch: Option<&str>) -> std::io::Result<usize> {
        let entries = self.list(repo, branch)?;
        for e in &entries {
            std::fs::remove_file(&e.path)?;
        }
        Ok(entries.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_list_and_clear() {
        let t = tempfile::tempdir().unwrap();
        let s = LocalStore::new(t.path());
        let p = s.path("o/r", "feature/x", "cache-k");
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, b"x").unwrap();
        let l = s.list(None, None).unwrap();
        assert_eq!(
            (l[0].repo.as_str(), l[0].branch.as_str(), l[0].key.as_str()),
            ("o/r", "feature/x", "cache-k")
        );
        assert_eq!(s.list(Some("o/r"), Some("master")).unwrap().len(), 0);
        assert_eq!(s.clear(Some("o/r"), None).unwrap(), 1);
        assert!(s.list(None, None).unwrap().is_empty());
    }
}
