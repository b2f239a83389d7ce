//! Where caches are kept ([`CacheStore`]): this machine's directory ([`LocalStore`]:
//! `<root>/<owner>/<repo>/<branch>/<key>.tar.zst`), or, for a `runway worker`, a bucket it
//! reaches through the server's presigned URLs (`crate::agent`), under the same names.
//!
//! On this machine a cache is also kept as directories, one per stored version
//! (`<owner>/<repo>/<branch>/<key>.d/v-…/`, the one in use named by the link `current`),
//! which a sandboxed job gets as a copy-on-write layer ([`LocalStore::version`],
//! [`LocalStore::begin`], [`LocalStore::commit`]); the newer of the two forms is the one
//! restored.
//!
//! The root is `--cache-dir`, else `$XDG_CACHE_HOME/runway`, else `~/.cache/runway`:
//! never inside the repository being built.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// The name ending of a cache's versions directory (beside its `.tar.zst`).
const VERSIONS: &str = ".d";
/// The link naming the version in use.
const CURRENT: &str = "current";
/// What a version holds, in the version's directory.
const MANIFEST: &str = "runway-cache.json";

/// What a stored version holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Files (and links).
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// The cached directories, as written, each in the subdirectory [`sub`] names.
    pub dirs: Vec<String>,
}

/// The subdirectory of a version holding the cached directory written `written`.
pub fn sub(written: &str) -> String {
    use sha2::{Digest, Sha256};
    let d = Sha256::digest(written.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// A stored version in use by a job: held open and locked shared until dropped.
#[derive(Debug)]
pub struct Version {
    /// The version's directory.
    pub dir: File,
    /// What it holds.
    pub manifest: Manifest,
}

/// A version being written ([`LocalStore::begin`]).
#[derive(Debug)]
pub struct NewVersion {
    /// Its directory (empty at first), locked while written.
    pub dir: File,
    name: String,
    versions: PathBuf,
    /// The same cache's archive (the older form, removed once this is in use).
    archive: PathBuf,
    committed: bool,
}

impl Drop for NewVersion {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(self.versions.join(&self.name));
        }
    }
}

fn open_dir_nofollow(p: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW)
        .open(p)
}

fn lock(f: &File, how: libc::c_int) -> io::Result<()> {
    // SAFETY: flock(2) on a descriptor we hold.
    while unsafe { libc::flock(f.as_raw_fd(), how) } != 0 {
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    Ok(())
}

/// Removes every version in `versions` but `keep` that no job holds (a held one is
/// locked shared; one being written, exclusively).
fn prune(versions: &Path, keep: &str) {
    let Ok(rd) = std::fs::read_dir(versions) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if !name.starts_with("v-") || name == keep {
            continue;
        }
        let Ok(f) = open_dir_nofollow(&e.path()) else {
            continue;
        };
        // SAFETY: flock(2) on a descriptor we hold; never waits.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

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
    /// Its files: the archive, the versions' directory, or both.
    pub paths: Vec<PathBuf>,
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
    /// The store on this machine, when it is one (caches kept as directories too).
    fn local(&self) -> Option<&LocalStore> {
        None
    }
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
        let Ok(meta) = path.metadata() else {
            return Ok(None);
        };
        // A version kept as a directory since: the archive is the older form.
        let newer = self
            .version_made(repo, branch, key)
            .is_some_and(|made| meta.modified().is_ok_and(|m| made >= m));
        Ok((!newer).then_some(path))
    }
    fn staging(&self, repo: &str, branch: &str, key: &str, _scratch: &Path) -> PathBuf {
        // The archive is written beside its place and renamed over it: already stored.
        self.path(repo, branch, key)
    }
    fn put(&self, _: &str, _: &str, _: &str, _staged: &Path) -> std::io::Result<()> {
        Ok(())
    }
    fn local(&self) -> Option<&LocalStore> {
        Some(self)
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

    /// Where the versions of (repo, branch, key) kept as directories live.
    pub fn versions_dir(&self, repo: &str, branch: &str, key: &str) -> PathBuf {
        let archive = self.path(repo, branch, key);
        let name = archive
            .file_name()
            .map(|n| n.to_string_lossy().replace(".tar.zst", VERSIONS))
            .unwrap_or_default();
        archive.with_file_name(name)
    }

    /// When the version in use of (repo, branch, key) was stored, if one is.
    pub fn version_made(&self, repo: &str, branch: &str, key: &str) -> Option<SystemTime> {
        let current = self.versions_dir(repo, branch, key).join(CURRENT);
        current.symlink_metadata().and_then(|m| m.modified()).ok()
    }

    /// The version in use of (repo, branch, key), held open and locked shared (never
    /// pruned while held), or None when there is none or the archive is newer.
    pub fn version(&self, repo: &str, branch: &str, key: &str) -> io::Result<Option<Version>> {
        let dir = self.versions_dir(repo, branch, key);
        let Some(made) = self.version_made(repo, branch, key) else {
            return Ok(None);
        };
        let archive = self.path(repo, branch, key);
        if archive
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|m| m > made)
        {
            return Ok(None);
        }
        // A save may swap `current` and prune the old version between the read and the
        // lock: a version found removed once locked is looked up again.
        for _ in 0..3 {
            let name = match std::fs::read_link(dir.join(CURRENT)) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
                Err(e) => return Err(e),
            };
            let name = name.to_string_lossy().into_owned();
            if !name.starts_with("v-") || name.contains('/') {
                return Ok(None);
            }
            let file = match open_dir_nofollow(&dir.join(&name)) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            lock(&file, libc::LOCK_SH)?;
            if std::os::unix::fs::MetadataExt::nlink(&file.metadata()?) == 0 {
                continue;
            }
            // Older versions no job holds any more (the job that stored the newest one
            // held the one it started from until it ended).
            prune(&dir, &name);
            let manifest = std::fs::read(dir.join(&name).join(MANIFEST))
                .ok()
                .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                .unwrap_or_default();
            return Ok(Some(Version {
                dir: file,
                manifest,
            }));
        }
        Ok(None)
    }

    /// An empty new version of (repo, branch, key), locked while it is written;
    /// [`LocalStore::commit`] makes it the one in use; dropped uncommitted, it is removed.
    pub fn begin(&self, repo: &str, branch: &str, key: &str) -> io::Result<NewVersion> {
        let dir = self.versions_dir(repo, branch, key);
        std::fs::create_dir_all(&dir)?;
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos();
        let name = format!("v-{nanos:x}-{}", std::process::id());
        let path = dir.join(&name);
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let file = open_dir_nofollow(&path)?;
        lock(&file, libc::LOCK_EX)?;
        Ok(NewVersion {
            dir: file,
            name,
            versions: dir,
            archive: self.path(repo, branch, key),
            committed: false,
        })
    }

    /// Makes `new` (written) the version in use, with `manifest`; removes the archive of
    /// the same cache (the older form) and every older version no job holds.
    pub fn commit(&self, mut new: NewVersion, manifest: &Manifest) -> io::Result<()> {
        let here = new.versions.join(&new.name);
        std::fs::write(here.join(MANIFEST), serde_json::to_vec(manifest)?)?;
        let tmp = new.versions.join(format!(".{CURRENT}-{}", new.name));
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(&new.name, &tmp)?;
        std::fs::rename(&tmp, new.versions.join(CURRENT))?;
        new.committed = true;
        let _ = std::fs::remove_file(&new.archive);
        prune(&new.versions, &new.name);
        Ok(())
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
                        let (key, bytes, modified) =
                            if let Some(key) = file.strip_suffix(".tar.zst") {
                                let meta = f.metadata()?;
                                (key, meta.len(), meta.modified().ok())
                            } else if let Some(key) = file.strip_suffix(VERSIONS) {
                                let current = f.path().join(CURRENT);
                                let manifest = std::fs::read(current.join(MANIFEST))
                                    .ok()
                                    .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
                                    .unwrap_or_default();
                                let made = current.symlink_metadata().and_then(|m| m.modified());
                                (key, manifest.bytes, made.ok())
                            } else {
                                continue;
                            };
                        let modified = modified.unwrap_or(SystemTime::UNIX_EPOCH);
                        // Both forms of one cache: one entry, the newer's size and time.
                        if let Some(e) = out
                            .iter_mut()
                            .find(|e: &&mut Entry| e.repo == slug && e.branch == b && e.key == key)
                        {
                            if modified > e.modified {
                                (e.bytes, e.modified) = (bytes, modified);
                            }
                            e.paths.push(f.path());
                            continue;
                        }
                        out.push(Entry {
                            repo: slug.clone(),
                            branch: b.clone(),
                            key: key.to_string(),
                            bytes,
                            modified,
                            paths: vec![f.path()],
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
            for p in &e.paths {
                if p.is_dir() {
                    std::fs::remove_dir_all(p)?;
                } else {
                    std::fs::remove_file(p)?;
                }
            }
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
