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
        /// The one reference (`refs/heads/B`, `refs/tags/T`) a clone fetched whole
        /// shows, at `sha`, instead of the repository's branches and tags: a worker's
        /// copy holds many builds' commits and names none of them. A shallow clone
        /// goes through the transport and shows the repository's own.
        only: Option<String>,
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
    /// The job's disk, when it has a budget: moved out ([`Drop`]) before the directory
    /// it was mounted on is removed or kept.
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

/// What a workspace is made from, found before its directory is there.
enum Source {
    /// A clone checked out at `sha`, then (a `runway run` of a work tree) the work
    /// tree's changes over it.
    Clone {
        read: Box<Read>,
        sha: String,
        urls: Submodules,
        worktree: Option<(git2::Repository, PathBuf)>,
    },
    /// A work tree with no commit yet.
    Worktree(git2::Repository, PathBuf),
    /// A directory that is no repository.
    Files(PathBuf),
}

impl Workspace {
    /// Makes a workspace for repository `slug` from `origin`. What `hidden` names
    /// (the paths the job's sandbox hides: runway's state and caches) is left out of
    /// a copy of a directory that holds it.
    /// With `disk`, the workspace is a filesystem of that many bytes of its own
    /// ([`crate::sandbox::disk`]), made before anything is written into it.
    pub fn prepare(
        origin: &Origin,
        slug: &str,
        git: &GitOptions,
        disk: Option<u64>,
        hidden: &[PathBuf],
    ) -> Result<Workspace, WorkspaceError> {
        // Origin is read first: a job's disk may still be on its way.
        let shallow = git.depth.is_some_and(|d| d > 0);
        let source = match origin {
            Origin::Commit { repo, sha, only } => Source::Clone {
                read: Box::new(read_origin_holding(
                    repo,
                    shallow,
                    PACK_AHEAD_BYTES,
                    shown(only, sha)?,
                )?),
                sha: sha.clone(),
                urls: Submodules::NetworkOnly,
                worktree: None,
            },
            Origin::Disk(src) => match git2::Repository::open(src) {
                Ok(repo) if !repo.is_bare() && repo.head().is_ok() => {
                    let sha = repo.head()?.peel_to_commit()?.id().to_string();
                    Source::Clone {
                        read: Box::new(read_origin(src, shallow)?),
                        sha,
                        urls: Submodules::AnyUrl,
                        worktree: Some((repo, src.clone())),
                    }
                }
                Ok(repo) if !repo.is_bare() => Source::Worktree(repo, src.clone()),
                _ => Source::Files(src.clone()),
            },
        };
        // A directory a disk will be mounted on is one a job's disk left, when there
        // is one (its inode kept: `disk::vacated`).
        let dir = match disk {
            Some(_) => crate::sandbox::disk::job_dir()?,
            None => crate::sandbox::job_dir()?,
        };
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
        match source {
            Source::Clone {
                read,
                sha,
                urls,
                worktree,
            } => {
                clone_at(*read, &sha, &build_dir, git, urls)?;
                if let Some((repo, src)) = worktree {
                    overlay_worktree(&repo, &src, &build_dir, hidden)?;
                }
            }
            Source::Worktree(repo, src) => {
                std::fs::create_dir_all(&build_dir)?;
                overlay_worktree(&repo, &src, &build_dir, hidden)?;
            }
            Source::Files(src) => {
                std::fs::create_dir_all(&build_dir)?;
                let left_out = within(&src, hidden);
                copy_tree(&src, &build_dir, &|rel| left_out.iter().any(|h| h == rel))?;
            }
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

    /// The job in this workspace has started (its shell runs): what is made ahead for
    /// the next job is made now, not while this one starts.
    pub fn started(&self) {
        if let Some(d) = &self.disk {
            d.started();
        }
    }

    /// The disk budget, when the job's disk is full.
    pub fn disk_full(&self) -> Option<u64> {
        self.disk.as_ref().filter(|d| d.full()).map(|d| d.size())
    }
}

impl Drop for Workspace {
    fn drop(&mut self) {
        // The disk first (moved out of the directory), then the directory: kept for
        // the next job with a disk when the disk left it empty.
        let had_disk = self.disk.take().is_some();
        if let Some(dir) = self.dir.take()
            && had_disk
        {
            crate::sandbox::disk::vacated(dir);
        }
    }
}

/// What a clone takes from its origin, read before the clone's directory is there (in
/// a run, while the job's disk is still being made): origin's default branch and, for
/// a repository on this machine fetched whole, what [`pack_local`] copies.
struct Read {
    source: PathBuf,
    url: String,
    shallow: bool,
    default: Option<String>,
    local: Option<Packed>,
}

/// Origin's branches and tags, packed: the pack (`None` when larger than
/// [`PACK_AHEAD_BYTES`]: made again into the clone, not held) and the references.
struct Packed {
    /// Origin's git directory.
    git_dir: PathBuf,
    pack: Option<Vec<u8>>,
    refs: Vec<(String, git2::Oid, Option<git2::Oid>)>,
    shallow: bool,
    /// The one reference packed ([`Origin::Commit::only`]), if not origin's own.
    only: Option<(String, git2::Oid)>,
}

/// The most of a pack held in memory ahead of its clone.
const PACK_AHEAD_BYTES: usize = 32 << 20;

/// Reads what cloning the repository at `source` takes ([`Read`]); `shallow`: a depth
/// is asked for (fetched through the transport later).
fn read_origin(source: &Path, shallow: bool) -> Result<Read, WorkspaceError> {
    read_origin_holding(source, shallow, PACK_AHEAD_BYTES, None)
}

/// [`Origin::Commit::only`] as a reference to pack: its name, checked (it becomes a
/// line of the clone's `packed-refs`), and the commit.
fn shown(only: &Option<String>, sha: &str) -> Result<Option<(String, git2::Oid)>, WorkspaceError> {
    let Some(name) = only else { return Ok(None) };
    if !git2::Reference::is_valid_name(name) || !name.starts_with("refs/") {
        return Err(git2::Error::from_str(&format!("not a reference name: {name:?}")).into());
    }
    Ok(Some((name.clone(), git2::Oid::from_str(sha)?)))
}

/// [`read_origin`], holding at most `most` bytes of pack, and packing `only`'s
/// reference alone when it is given.
fn read_origin_holding(
    source: &Path,
    shallow: bool,
    most: usize,
    only: Option<(String, git2::Oid)>,
) -> Result<Read, WorkspaceError> {
    let url = format!("file://{}", source.canonicalize()?.display());
    let origin = git2::Repository::open(source).ok();
    let default = origin.as_ref().and_then(|s| {
        let head = s.find_reference("HEAD").ok()?;
        let branch = head.symbolic_target().ok()??.strip_prefix("refs/heads/")?;
        Some(branch.to_string())
    });
    let local = match origin {
        Some(origin) if !shallow => {
            let mut pack = Some(Vec::new());
            let refs = pack_local(&origin, only.as_ref(), &mut |chunk| match pack.as_mut() {
                Some(p) if p.len() + chunk.len() <= most => {
                    p.extend_from_slice(chunk);
                    Ok(true)
                }
                _ => {
                    pack = None;
                    Ok(false)
                }
            })?;
            Some(Packed {
                git_dir: origin.path().to_path_buf(),
                pack,
                refs,
                shallow: origin.is_shallow(),
                only,
            })
        }
        _ => None,
    };
    Ok(Read {
        source: source.to_path_buf(),
        url,
        shallow,
        default,
        local,
    })
}

/// Clones what `read` read into `dest` and checks out `sha` (detached), as Travis's
/// `git clone` + `git checkout -qf <sha>` did.
fn clone_at(
    read: Read,
    sha: &str,
    dest: &Path,
    git: &GitOptions,
    urls: Submodules,
) -> Result<(), WorkspaceError> {
    let mut fetch = git2::FetchOptions::new();
    if let Some(depth) = git.depth.filter(|d| *d > 0) {
        fetch.depth(depth);
    }
    let source = read.source.clone();
    let cloned = match write_clone(read, dest, &mut fetch) {
        Ok(r) => r,
        Err(_) if git.depth.is_some_and(|d| d > 0) => {
            // Some transports cannot fetch shallow; a full clone is still correct.
            let _ = std::fs::remove_dir_all(dest);
            let whole = read_origin(&source, false)?;
            write_clone(whole, dest, &mut git2::FetchOptions::new())?
        }
        Err(e) => return Err(e),
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
    let plain = nothing_to_filter(&cloned, &commit.tree()?);
    cloned.checkout_tree(
        commit.as_object(),
        Some(
            git2::build::CheckoutBuilder::new()
                .force()
                .disable_filters(plain),
        ),
    )?;
    cloned.set_head_detached(oid)?;
    if git.submodules {
        update_submodules(&cloned, urls)?;
    }
    Ok(())
}

/// Whether checking `tree` out in `repo` converts nothing: no `.gitattributes` in the
/// tree, no attributes file of the user or the system, and no line-ending or
/// attributes setting in any config git reads. Then the checkout writes each file's
/// bytes as they are without looking its attributes up (libgit2 resolved the file's
/// path twice for that); otherwise its filters (line endings, `ident`) run as git's.
fn nothing_to_filter(repo: &git2::Repository, tree: &git2::Tree<'_>) -> bool {
    let Ok(config) = repo.config().and_then(|mut c| c.snapshot()) else {
        return false;
    };
    let set = |key: &str| config.get_entry(key).is_ok();
    let autocrlf_off = config.get_bool("core.autocrlf").is_ok_and(|on| !on);
    if (set("core.autocrlf") && !autocrlf_off) || set("core.eol") || set("core.attributesfile") {
        return false;
    }
    let home = std::env::var_os("HOME").map(PathBuf::from);
    let xdg = std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| home.map(|h| h.join(".config")));
    let files = [
        Some(PathBuf::from("/etc/gitattributes")),
        xdg.map(|x| x.join("git/attributes")),
    ];
    if files.iter().flatten().any(|f| f.exists()) || repo.path().join("info/attributes").exists() {
        return false;
    }
    let mut found = false;
    let walked = tree.walk(git2::TreeWalkMode::PreOrder, |_, entry| {
        if entry.name_bytes() == b".gitattributes" {
            found = true;
            return git2::TreeWalkResult::Abort;
        }
        git2::TreeWalkResult::Ok
    });
    walked.is_ok() && !found
}

/// Makes `dest` a clone of the repository at `source` (`url` is how origin names it),
/// as `git clone` makes one ([`write_clone`]).
#[cfg(test)]
fn clone_repo(
    source: &Path,
    url: &str,
    dest: &Path,
    fetch: &mut git2::FetchOptions<'_>,
    shallow: bool,
) -> Result<git2::Repository, WorkspaceError> {
    let read = Read {
        url: url.to_string(),
        ..read_origin(source, shallow)?
    };
    write_clone(read, dest, fetch)
}

/// Makes `dest` a clone of what `read` read, as `git clone` makes one: origin's
/// branches fetched as remote-tracking branches with the tags on them, origin's
/// default branch a local branch. Nothing is checked out. Each file of the new
/// repository is written once (libgit2's `git_clone` rewrites the config file for
/// every setting it makes, and walks a checkout even when told to skip it).
fn write_clone(
    read: Read,
    dest: &Path,
    fetch: &mut git2::FetchOptions<'_>,
) -> Result<git2::Repository, WorkspaceError> {
    let git = dest.join(".git");
    for d in [
        "objects/pack",
        "objects/info",
        "refs/heads",
        "refs/tags",
        "info",
    ] {
        std::fs::create_dir_all(git.join(d))?;
    }
    let (url, default) = (read.url.as_str(), read.default.as_deref());
    let head = default.unwrap_or("master");
    std::fs::write(git.join("HEAD"), format!("ref: refs/heads/{head}\n"))?;
    std::fs::write(git.join("config"), clone_config(url, default))?;
    let repo = git2::Repository::open(dest)?;
    match &read.local {
        Some(packed) if !read.shallow => write_local(packed, &repo)?,
        // A shallow fetch goes through libgit2's transport, which knows depth.
        _ => repo
            .find_remote("origin")?
            .fetch(&[] as &[&str], Some(fetch), None)?,
    }
    if let Some(branch) = default {
        let tracking = format!("refs/remotes/origin/{branch}");
        let tip = repo.find_reference(&tracking).ok().and_then(|r| r.target());
        if let Some(oid) = tip {
            let why = format!("clone: from {url}");
            repo.reference(&format!("refs/heads/{branch}"), oid, false, &why)?;
            repo.reference_symbolic("refs/remotes/origin/HEAD", &tracking, false, &why)?;
        }
    }
    Ok(repo)
}

/// Packs what `origin`'s branches and tags (or `only`, one reference and its target)
/// reach with libgit2's pack builder, handing
/// the pack's bytes to `sink` (which may stop it, not an error, by answering `false`),
/// and returns the
/// references a fetch of `+refs/heads/*:refs/remotes/origin/*` with origin's tags
/// would make: (name in the clone, what it points at, the commit an annotated tag
/// peels to).
#[allow(clippy::type_complexity)]
fn pack_local(
    origin: &git2::Repository,
    only: Option<&(String, git2::Oid)>,
    sink: &mut dyn FnMut(&[u8]) -> std::io::Result<bool>,
) -> Result<Vec<(String, git2::Oid, Option<git2::Oid>)>, git2::Error> {
    let mut walk = origin.revwalk()?;
    let mut pack = origin.packbuilder()?;
    let mut refs: Vec<(String, git2::Oid, Option<git2::Oid>)> = Vec::new();
    let listed: Vec<(String, git2::Oid)> = match only {
        Some(r) => vec![r.clone()],
        None => {
            let mut all = Vec::new();
            for r in origin.references()? {
                let r = r?;
                if let (Ok(name), Some(target)) = (r.name(), r.target()) {
                    all.push((name.to_string(), target));
                }
            }
            all
        }
    };
    for (name, target) in listed {
        let name = match name.strip_prefix("refs/heads/") {
            Some(branch) => format!("refs/remotes/origin/{branch}"),
            None if name.starts_with("refs/tags/") => name.to_string(),
            None => continue,
        };
        // Down a chain of tag objects (each packed) to what it names.
        let mut object = origin.find_object(target, None)?;
        while let Some(tag) = object.as_tag() {
            pack.insert_object(tag.id(), None)?;
            object = tag.target()?;
        }
        match object.kind() {
            Some(git2::ObjectType::Commit) => walk.push(object.id())?,
            Some(git2::ObjectType::Tree) => pack.insert_tree(object.id())?,
            _ => pack.insert_object(object.id(), None)?,
        }
        let peeled = (object.id() != target).then(|| object.id());
        refs.push((name, target, peeled));
    }
    pack.insert_walk(&mut walk)?;
    if pack.object_count() > 0 {
        let (mut failed, mut stopped) = (None, false);
        let packed = pack.foreach(|chunk| match sink(chunk) {
            Ok(more) => {
                stopped = !more;
                more
            }
            Err(e) => {
                failed = Some(e);
                false
            }
        });
        if let Some(e) = failed {
            return Err(git2::Error::from_str(&e.to_string()));
        }
        // libgit2 answers a stop with an error of its own.
        if !stopped {
            packed?;
        }
    }
    refs.sort();
    Ok(refs)
}

/// Writes what [`pack_local`] packed from origin into `repo`'s
/// object database (packed again when it was too large to hold), and the references in
/// one `packed-refs` file, as `git clone` leaves them. The local transport listed,
/// negotiated and wrote each reference and its log apart.
fn write_local(packed: &Packed, repo: &git2::Repository) -> Result<(), git2::Error> {
    if packed.pack.as_ref().is_none_or(|bytes| !bytes.is_empty()) {
        let odb = repo.odb()?;
        let mut writer = odb.packwriter()?;
        let mut write = |chunk: &[u8]| std::io::Write::write_all(&mut writer, chunk);
        match &packed.pack {
            Some(bytes) => write(bytes).map_err(|e| git2::Error::from_str(&e.to_string()))?,
            None => {
                let origin = git2::Repository::open(&packed.git_dir)?;
                pack_local(&origin, packed.only.as_ref(), &mut |chunk| {
                    write(chunk).map(|()| true)
                })?;
            }
        }
        writer.commit()?;
    }
    // A shallow origin's history ends where its own does: the clone says so too, or
    // its oldest commits would name parents it lacks.
    if packed.shallow {
        std::fs::copy(packed.git_dir.join("shallow"), repo.path().join("shallow"))
            .map_err(|e| git2::Error::from_str(&e.to_string()))?;
    }
    let mut text = String::from("# pack-refs with: peeled fully-peeled sorted \n");
    for (name, target, peeled) in &packed.refs {
        text.push_str(&format!("{target} {name}\n"));
        if let Some(p) = peeled {
            text.push_str(&format!("^{p}\n"));
        }
    }
    std::fs::write(repo.path().join("packed-refs"), text)
        .map_err(|e| git2::Error::from_str(&e.to_string()))
}

/// The config file of a fresh clone of `url` whose default branch is `branch`, as
/// `git clone` writes it.
fn clone_config(url: &str, branch: Option<&str>) -> String {
    let mut text = format!(
        "[core]\n\trepositoryformatversion = 0\n\tfilemode = true\n\tbare = false\n\tlogallrefupdates = true\n[remote \"origin\"]\n\turl = {}\n\tfetch = +refs/heads/*:refs/remotes/origin/*\n",
        config_value(url)
    );
    // A section's name holds no newline or NUL: a branch named so (git refuses
    // such names) gets no section.
    if let Some(b) = branch.filter(|b| !b.contains(['\n', '\0'])) {
        text.push_str(&format!(
            "[branch \"{}\"]\n\tremote = origin\n\tmerge = {}\n",
            b.replace('\\', "\\\\").replace('"', "\\\""),
            config_value(&format!("refs/heads/{b}"))
        ));
    }
    text
}

/// `value` as git's config file holds it: as it is when nothing in it means anything
/// there, else in double quotes with `\`, `"` and the control characters git knows
/// escaped, so that no text of a path can end the line or the value.
fn config_value(value: &str) -> String {
    let plain = !value.starts_with(' ')
        && !value.ends_with(' ')
        && !value.contains([';', '#', '"', '\\', '\n', '\t', '\u{8}', '\r']);
    if plain {
        return value.to_string();
    }
    let mut out = String::from("\"");
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\u{8}' => out.push_str("\\b"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
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
    hidden: &[PathBuf],
) -> Result<(), WorkspaceError> {
    let left_out = within(src, hidden);
    copy_tree(src, dest, &|rel| {
        rel == Path::new(".git")
            || left_out.iter().any(|h| h == rel)
            || repo.is_path_ignored(rel).unwrap_or(false)
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

/// The paths of `hidden` inside directory `src` (as they are, links resolved),
/// relative to it.
fn within(src: &Path, hidden: &[PathBuf]) -> Vec<PathBuf> {
    let Ok(src) = src.canonicalize() else {
        return Vec::new();
    };
    hidden
        .iter()
        .filter_map(|h| h.canonicalize().ok())
        .filter_map(|h| h.strip_prefix(&src).ok().map(Path::to_path_buf))
        .filter(|rel| !rel.as_os_str().is_empty())
        .collect()
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
    /// The config a clone is given reads back, through git's own parser, as the
    /// repository's url and default branch, whatever characters they hold: a path
    /// cannot add a setting of its own (`core.hooksPath`, say) by ending a line.
    #[test]
    fn a_clones_config_holds_its_url_and_branch_whatever_they_hold() {
        for (url, branch) in [
            ("file:///tmp/rb/app", "master"),
            ("file:///srv/a b;c#d", "feature/x"),
            ("file:///x\n[core]\n\thooksPath = /tmp/evil", "a\"b\\c"),
            ("file:///q\"\\ \t\u{8}end ", "main"),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("config");
            std::fs::write(&path, super::clone_config(url, Some(branch))).unwrap();
            let config = git2::Config::open(&path).unwrap();
            assert_eq!(config.get_string("remote.origin.url").unwrap(), url);
            assert_eq!(
                config
                    .get_string(&format!("branch.{branch}.merge"))
                    .unwrap(),
                format!("refs/heads/{branch}")
            );
            assert!(config.get_string("core.hooksPath").is_err(), "{url}");
            assert!(!config.get_bool("core.bare").unwrap());
        }
        // A plain url is written as git writes it, unquoted.
        assert!(
            super::clone_config("file:///tmp/rb/app", None)
                .contains("\turl = file:///tmp/rb/app\n")
        );
    }

    /// A clone of a repository on this machine has what `git clone` gives: origin's
    /// branches as remote-tracking branches, its tags (annotated ones peeled in
    /// `packed-refs`), a local branch for its default branch, and every object they
    /// reach; nothing of origin's other references.
    /// `n` commits in a row in `repo`, each changing file `f`, `update` moved along.
    fn history(repo: &git2::Repository, n: usize, update: Option<&str>) -> Vec<git2::Oid> {
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let mut commits: Vec<git2::Oid> = Vec::new();
        for i in 0..n {
            let blob = repo.blob(format!("v{i}").as_bytes()).unwrap();
            let mut tb = repo.treebuilder(None).unwrap();
            tb.insert("f", blob, 0o100644).unwrap();
            let tree = repo.find_tree(tb.write().unwrap()).unwrap();
            let parents: Vec<git2::Commit> = commits
                .last()
                .map(|p| repo.find_commit(*p).unwrap())
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            let c = repo
                .commit(update, &sig, &sig, &format!("c{i}"), &tree, &refs)
                .unwrap();
            commits.push(c);
        }
        commits
    }

    /// A clone of one reference (a worker's copy of a repository,
    /// `Origin::Commit::only`) shows that reference alone, at the build's commit, and
    /// nothing else of origin's; a name that is not a reference is refused (it would be
    /// a line of the clone's `packed-refs`).
    #[test]
    fn a_clone_of_one_reference_shows_it_alone() {
        let t = tempfile::tempdir().unwrap();
        let src = git2::Repository::init_bare(t.path().join("src")).unwrap();
        let commits = history(&src, 2, None);
        src.reference("refs/heads/other", commits[1], false, "")
            .unwrap();
        src.reference("refs/tags/t", commits[1], false, "").unwrap();
        let sha = commits[0].to_string();
        let only = super::shown(&Some("refs/heads/feature/x".into()), &sha).unwrap();
        let read =
            super::read_origin_holding(&t.path().join("src"), false, super::PACK_AHEAD_BYTES, only)
                .unwrap();
        let dest = t.path().join("dest");
        let repo = super::write_clone(read, &dest, &mut git2::FetchOptions::new()).unwrap();
        let names: Vec<String> = repo
            .references()
            .unwrap()
            .filter_map(|r| Some(r.ok()?.name().ok()?.to_string()))
            .filter(|n| n.starts_with("refs/"))
            .collect();
        assert_eq!(names, ["refs/remotes/origin/feature/x"]);
        let shown = repo
            .find_reference("refs/remotes/origin/feature/x")
            .unwrap();
        assert_eq!(shown.target(), Some(commits[0]));
        assert!(repo.find_commit(commits[0]).is_ok());
        assert!(
            repo.find_commit(commits[1]).is_err(),
            "only what it reaches"
        );
        for bad in ["refs/heads/a\nb", "HEAD", "refs/heads/a..b", "heads/x"] {
            assert!(super::shown(&Some(bad.into()), &sha).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn a_local_clone_has_origins_branches_tags_and_objects() {
        let t = tempfile::tempdir().unwrap();
        let src = git2::Repository::init(t.path().join("src")).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let commits = history(&src, 3, Some("HEAD"));
        let first = src.find_commit(commits[0]).unwrap();
        src.branch("feature", &first, false).unwrap();
        src.tag_lightweight("light", first.as_object(), false)
            .unwrap();
        let annotated = src
            .tag(
                "v1",
                src.find_commit(commits[1]).unwrap().as_object(),
                &sig,
                "v1",
                false,
            )
            .unwrap();
        // Not a branch or a tag: not fetched.
        let stray = src.blob(b"stray").unwrap();
        src.reference("refs/runway/other", commits[2], false, "")
            .unwrap();
        src.reference("refs/pull/1/head", stray, false, "").unwrap();

        let dest = t.path().join("dest");
        let url = format!("file://{}", t.path().join("src").display());
        let repo = super::clone_repo(
            &t.path().join("src"),
            &url,
            &dest,
            &mut git2::FetchOptions::new(),
            false,
        )
        .unwrap();
        let target = |name: &str| repo.find_reference(name).ok().and_then(|r| r.target());
        let branch = src.head().unwrap().shorthand().unwrap().to_string();
        assert_eq!(
            target(&format!("refs/remotes/origin/{branch}")),
            Some(commits[2])
        );
        assert_eq!(target(&format!("refs/heads/{branch}")), Some(commits[2]));
        assert_eq!(target("refs/remotes/origin/feature"), Some(commits[0]));
        assert_eq!(target("refs/tags/light"), Some(commits[0]));
        assert_eq!(target("refs/tags/v1"), Some(annotated));
        assert_eq!(
            repo.find_reference("refs/remotes/origin/HEAD")
                .unwrap()
                .symbolic_target(),
            Ok(Some(format!("refs/remotes/origin/{branch}").as_str()))
        );
        assert!(target("refs/runway/other").is_none() && target("refs/pull/1/head").is_none());
        for c in &commits {
            let commit = repo.find_commit(*c).unwrap();
            assert!(repo.find_tree(commit.tree_id()).is_ok());
        }
        assert!(repo.find_tag(annotated).is_ok());
        assert!(
            repo.find_blob(stray).is_err(),
            "what no branch or tag reaches stays out"
        );
        let packed = std::fs::read_to_string(dest.join(".git/packed-refs")).unwrap();
        assert!(
            packed.contains(&format!("{annotated} refs/tags/v1\n^{}\n", commits[1])),
            "{packed}"
        );
    }

    /// A clone of a shallow repository is shallow where it is: its history walks to
    /// the same end, and no commit in it names a parent it lacks.
    #[test]
    fn a_local_clone_of_a_shallow_repository_is_shallow_too() {
        let t = tempfile::tempdir().unwrap();
        let src = git2::Repository::init(t.path().join("src")).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let tree = src
            .find_tree(src.treebuilder(None).unwrap().write().unwrap())
            .unwrap();
        let mut commits: Vec<git2::Oid> = Vec::new();
        for i in 0..3 {
            let parents: Vec<git2::Commit> = commits
                .last()
                .map(|p| src.find_commit(*p).unwrap())
                .into_iter()
                .collect();
            let refs: Vec<&git2::Commit> = parents.iter().collect();
            commits.push(
                src.commit(Some("HEAD"), &sig, &sig, &format!("c{i}"), &tree, &refs)
                    .unwrap(),
            );
        }
        // As `git clone --depth 2` leaves it: the second commit is where history ends.
        std::fs::write(src.path().join("shallow"), format!("{}\n", commits[1])).unwrap();
        let src = git2::Repository::open(t.path().join("src")).unwrap();
        assert!(src.is_shallow());
        let dest = t.path().join("dest");
        let repo = super::clone_repo(
            &t.path().join("src"),
            "file:///src",
            &dest,
            &mut git2::FetchOptions::new(),
            false,
        )
        .unwrap();
        assert!(repo.is_shallow());
        // As a job's git finds it.
        let repo = git2::Repository::open(&dest).unwrap();
        let mut walk = repo.revwalk().unwrap();
        walk.push(commits[2]).unwrap();
        let walked: Vec<git2::Oid> = walk.map(|c| c.unwrap()).collect();
        assert_eq!(walked, vec![commits[2], commits[1]]);
    }

    /// A pack over what is held ahead is made again, from origin, into the clone.
    #[test]
    fn a_pack_too_large_to_hold_ahead_is_made_into_the_clone() {
        let t = tempfile::tempdir().unwrap();
        let src = git2::Repository::init(t.path().join("src")).unwrap();
        let sig = git2::Signature::now("t", "t@example.com").unwrap();
        let blob = src.blob(b"content").unwrap();
        let mut tb = src.treebuilder(None).unwrap();
        tb.insert("f", blob, 0o100644).unwrap();
        let tree = src.find_tree(tb.write().unwrap()).unwrap();
        let commit = src
            .commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
            .unwrap();
        let whole = super::read_origin(&t.path().join("src"), false).unwrap();
        assert!(whole.local.unwrap().pack.is_some_and(|p| !p.is_empty()));
        // Held up to one byte: the pack is not held, the references are.
        let read = super::read_origin_holding(&t.path().join("src"), false, 1, None).unwrap();
        let packed = read.local.as_ref().unwrap();
        assert!(packed.pack.is_none() && !packed.refs.is_empty());
        let dest = t.path().join("dest");
        let repo = super::write_clone(read, &dest, &mut git2::FetchOptions::new()).unwrap();
        let c = repo.find_commit(commit).unwrap();
        assert_eq!(c.tree().unwrap().get_name("f").unwrap().id(), blob);
        assert!(repo.find_blob(blob).is_ok());
    }

    /// Line endings converted where a `.gitattributes` asks (as git's checkout
    /// does), the bytes as committed where nothing does.
    #[test]
    fn a_checkout_converts_line_endings_only_where_attributes_ask() {
        let t = tempfile::tempdir().unwrap();
        let commit = |dir: &str, files: &[(&str, &[u8])]| {
            let src = git2::Repository::init(t.path().join(dir)).unwrap();
            let sig = git2::Signature::now("t", "t@example.com").unwrap();
            let mut tb = src.treebuilder(None).unwrap();
            for (name, bytes) in files {
                tb.insert(name, src.blob(bytes).unwrap(), 0o100644).unwrap();
            }
            let tree = src.find_tree(tb.write().unwrap()).unwrap();
            src.commit(Some("HEAD"), &sig, &sig, "c", &tree, &[])
                .unwrap()
                .to_string()
        };
        let attributed = commit(
            "attributed",
            &[
                (".gitattributes", b"*.txt text eol=crlf\n"),
                ("a.txt", b"x\ny\n"),
            ],
        );
        let plain = commit("plain", &[("a.txt", b"x\ny\n")]);
        let git = super::GitOptions::default();
        for (dir, sha, want) in [
            ("attributed", &attributed, &b"x\r\ny\r\n"[..]),
            ("plain", &plain, &b"x\ny\n"[..]),
        ] {
            let read = super::read_origin(&t.path().join(dir), false).unwrap();
            let dest = t.path().join(format!("{dir}-clone"));
            super::clone_at(read, sha, &dest, &git, super::Submodules::NetworkOnly).unwrap();
            assert_eq!(std::fs::read(dest.join("a.txt")).unwrap(), want, "{dir}");
            let repo = git2::Repository::open(&dest).unwrap();
            let tree = repo.head().unwrap().peel_to_tree().unwrap();
            assert_eq!(
                super::nothing_to_filter(&repo, &tree),
                dir == "plain",
                "{dir}"
            );
        }
    }

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
