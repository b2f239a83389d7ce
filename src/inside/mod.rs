//! What runway does with a job's files, done where the job's files are: on the bare host
//! as before, or, in a sandbox, by a helper (runway's own binary, `runway
//! sandbox-helper`) that runway starts inside the job's mount namespace with the job's
//! privileges: a job's caches (save, restore, fingerprint) and a rehearsal's bundles
//! (unpacked by [`bundle`]). Every path the
//! job or its commit chose (an absolute or `..` cache directory, a directory that is a
//! link, a parent that is one) then resolves in the job's copy of the machine: a link to
//! `/root/.aws` archives the job's own (hidden, empty) view of it, a restore through a
//! link to `/etc` writes into the job's overlay, never the host's.
//!
//! The archive's bytes cross the boundary as descriptors only: the stored archive is the
//! helper's stdin, a new one its stdout (a file runway opened in its own cache
//! directory); the helper answers one JSON line on stderr.
//!
//! A cache kept on this machine as directories is mounted copy-on-write
//! ([`mount_version`], through [`JobView::mount_cache`]), copied in where a mount cannot
//! serve ([`Op::Fill`]), and stored as a new version through descriptors of runway's
//! directories passed to the helper as 3, 4, … ([`Op::SaveTree`], [`crate::cache::tree`]).

pub(crate) mod bundle;

use std::io::{self, Read, Write};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::AtomicBool;

use crate::cache::archive::{self, Restored, Saved};
use crate::sandbox::JobView;

/// What the helper is asked to do.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Make the cached directories (before a fetch).
    Prepare,
    /// Restore the archive on stdin; the fingerprint is the archive's (or, for an
    /// archive that does not say it, the directories' after the restore).
    Restore,
    /// Write the directories as an archive on stdout.
    Save,
    /// Walk the directories once: nothing when their fingerprint is `since`, else the
    /// archive on stdout and the new fingerprint.
    SaveChanged {
        /// The fingerprint after the restore.
        since: Option<String>,
    },
    /// Write a new stored version of the directories into the directory at descriptor 3
    /// (runway's, empty), linking what did not change from the version at `old` (a
    /// descriptor) and reading what the job wrote over it from the overlays' upper
    /// directories under `layers` (a descriptor).
    SaveTree {
        /// The descriptor of the version restored, if one was.
        old: Option<i32>,
        /// The descriptor of the directory holding each mount's `N/upper`.
        layers: Option<i32>,
        /// Per cached directory (in the order of the request's `dirs`).
        trees: Vec<TreeDir>,
    },
    /// Copy the stored version's directory `sub` (the version at descriptor 3) into the
    /// request's one directory, keeping what it holds already.
    Fill {
        /// The cached directory's subdirectory in the version.
        sub: String,
    },
    /// Unpack the bundle on stdin into `dest`.
    Unpack {
        /// How it is packed.
        kind: bundle::Kind,
        /// Where, in the job's view.
        dest: PathBuf,
        /// What it may expand to.
        caps: bundle::Caps,
    },
}

/// One cached directory of a [`Op::SaveTree`].
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TreeDir {
    /// Its subdirectory in a version ([`crate::cache::store::sub`]).
    pub sub: String,
    /// The mount's directory under `layers` (`"0"`), when the stored version is mounted
    /// there with nothing else under it: what is not in its upper is the old version's.
    pub layer: Option<String>,
}

/// One request to the helper (its only argument, as JSON).
#[derive(Debug, serde::Serialize, serde::Deserialize)]
pub struct Request {
    /// What to do.
    pub op: Op,
    /// The cached directories: as written, and where they are in the job's view.
    pub dirs: Vec<(String, PathBuf)>,
    /// The cap on a restore's bytes.
    pub cap: u64,
    /// The helper ends itself (`SIGALRM`) after this long.
    pub timeout_secs: u64,
}

/// The helper's answer (one JSON line on its stderr).
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub struct Answer {
    /// Files written or archived.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Entries a restore refused, with why.
    pub refused: Vec<String>,
    /// The directories' fingerprint (after a restore; for `SaveChanged`).
    pub fingerprint: Option<String>,
    /// `SaveChanged` found nothing changed (and wrote nothing).
    #[serde(default)]
    pub unchanged: bool,
    /// `SaveTree`: the bytes copied (the rest were linked).
    #[serde(default)]
    pub copied_bytes: u64,
    /// Why it failed.
    pub error: Option<String>,
}

/// The helper's side: reads the request, does it in this process's view (the job's),
/// answers on stderr. Returns the exit code.
pub fn serve(request: &str) -> i32 {
    let answer = match serde_json::from_str::<Request>(request) {
        Ok(req) => {
            // SAFETY: alarm(2) only arms a timer; its default action ends this process.
            unsafe {
                libc::alarm(req.timeout_secs.clamp(1, u32::MAX as u64) as u32);
            }
            work(&req).unwrap_or_else(|e| Answer {
                error: Some(e.to_string()),
                ..Answer::default()
            })
        }
        Err(e) => Answer {
            error: Some(format!("a request the helper cannot read: {e}")),
            ..Answer::default()
        },
    };
    let failed = answer.error.is_some();
    let mut err = io::stderr().lock();
    let _ = serde_json::to_writer(&mut err, &answer);
    let _ = err.write_all(b"\n");
    i32::from(failed)
}

fn work(req: &Request) -> io::Result<Answer> {
    let never = AtomicBool::new(false);
    let dirs = &req.dirs;
    Ok(match &req.op {
        Op::Prepare => {
            for (_, d) in dirs {
                let _ = std::fs::create_dir_all(d);
            }
            Answer::default()
        }
        Op::Restore => {
            let resolved: std::collections::HashMap<&str, &PathBuf> =
                dirs.iter().map(|(w, p)| (w.as_str(), p)).collect();
            let r = archive::restore_from(
                io::stdin().lock(),
                &|w| resolved.get(w).map(|p| p.to_path_buf()),
                &never,
                req.cap,
            )?;
            // The archive's own fingerprint, else (an older archive) a walk.
            let fingerprint = r.fingerprint.or_else(|| archive::fingerprint(dirs).ok());
            Answer {
                files: r.files,
                bytes: r.bytes,
                refused: r.refused,
                fingerprint,
                ..Answer::default()
            }
        }
        Op::Save => {
            let s = archive::save_to(dirs, io::stdout().lock(), &never)?;
            Answer {
                files: s.files,
                bytes: s.bytes,
                ..Answer::default()
            }
        }
        Op::SaveChanged { since } => {
            match archive::save_if_changed(dirs, since.as_deref(), io::stdout().lock(), &never)? {
                None => Answer {
                    unchanged: true,
                    ..Answer::default()
                },
                Some((s, now)) => Answer {
                    files: s.files,
                    bytes: s.bytes,
                    fingerprint: Some(now),
                    ..Answer::default()
                },
            }
        }
        Op::SaveTree { old, layers, trees } => write_tree(req, *old, *layers, trees)?,
        Op::Fill { sub } => {
            use crate::cache::tree;
            use std::os::fd::FromRawFd;
            // SAFETY: runway passed descriptor 3 to this process for this request alone.
            let version = unsafe { std::fs::File::from_raw_fd(3) };
            let sub = std::ffi::CString::new(sub.as_str())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            let from = tree::open_dir(&version, &sub)?;
            let (_, path) = dirs.first().ok_or(io::ErrorKind::InvalidInput)?;
            let into = std::fs::File::open(path)?;
            let mut built = tree::Built::default();
            let kept = tree::fill(&from, &into, req.cap, &mut built)?;
            Answer {
                files: built.files,
                bytes: built.bytes,
                refused: (kept > 0)
                    .then(|| format!("{kept} entries the directory has already"))
                    .into_iter()
                    .collect(),
                ..Answer::default()
            }
        }
        Op::Unpack { kind, dest, caps } => {
            use std::os::fd::AsFd;
            let input = std::fs::File::from(io::stdin().as_fd().try_clone_to_owned()?);
            match bundle::unpack(input, *kind, dest, *caps) {
                Ok(u) => Answer {
                    files: u.files,
                    bytes: u.bytes,
                    ..Answer::default()
                },
                Err(e) => Answer {
                    error: Some(e.to_string()),
                    ..Answer::default()
                },
            }
        }
    })
}

/// The helper's side of [`Op::SaveTree`].
fn write_tree(
    req: &Request,
    old: Option<i32>,
    layers: Option<i32>,
    trees: &[TreeDir],
) -> io::Result<Answer> {
    use crate::cache::tree;
    use std::ffi::CString;
    use std::os::fd::FromRawFd;
    // SAFETY: runway passed these descriptors (3, and the numbers in the request) to
    // this process for this request alone; each is owned here once.
    let adopt = |fd: i32| unsafe { std::fs::File::from_raw_fd(fd) };
    let new = adopt(3);
    let old = old.map(adopt);
    let layers = layers.map(adopt);
    let name = |s: &str| CString::new(s).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput));
    let mut built = tree::Built::default();
    for ((_, path), t) in req.dirs.iter().zip(trees) {
        let sub = name(&t.sub)?;
        // SAFETY: mkdirat(2) of one name in the new version's directory.
        if unsafe { libc::mkdirat(std::os::fd::AsRawFd::as_raw_fd(&new), sub.as_ptr(), 0o755) } != 0
        {
            return Err(io::Error::last_os_error());
        }
        let to = tree::open_dir(&new, &sub)?;
        // The directory as the job sees it (a link followed in the job's view): gone or
        // not a directory, it is stored empty.
        let Ok(merged) = std::fs::File::open(path) else {
            continue;
        };
        if !merged.metadata()?.is_dir() {
            continue;
        }
        let (upper, from) = match (&t.layer, &layers, &old) {
            (Some(l), Some(layers), Some(old)) => {
                let at = tree::open_dir(layers, &name(l)?)?;
                (
                    Some(tree::open_dir(&at, &name("upper")?)?),
                    tree::open_dir(old, &sub).ok(),
                )
            }
            _ => (None, None),
        };
        let src = tree::Sources {
            merged: &merged,
            upper: upper.as_ref().filter(|_| from.is_some()),
            old: from.as_ref(),
        };
        tree::build(&src, &to, req.cap, &mut built)?;
    }
    Ok(Answer {
        files: built.files,
        bytes: built.bytes,
        copied_bytes: built.copied_bytes,
        ..Answer::default()
    })
}

/// Runs `req` in the job's view; `stdin` and `stdout` are the archive's descriptors.
fn ask(view: &JobView, req: &Request, stdin: Stdio, stdout: Stdio) -> io::Result<Answer> {
    ask_with(view, req, stdin, stdout, &[])
}

/// [`ask`], the helper also getting `fds` as its descriptors 3, 4, …
fn ask_with(
    view: &JobView,
    req: &Request,
    stdin: Stdio,
    stdout: Stdio,
    fds: &[std::os::fd::BorrowedFd],
) -> io::Result<Answer> {
    let text = serde_json::to_string(req)?;
    let mut cmd = view
        .helper_with(&["sandbox-helper".into(), text], fds)
        .map_err(io::Error::other)?;
    cmd.stdin(stdin).stdout(stdout).stderr(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut said = Vec::new();
    if let Some(err) = child.stderr.take() {
        let _ = err.take(1 << 20).read_to_end(&mut said);
    }
    let status = child.wait()?;
    let line = String::from_utf8_lossy(&said);
    let answer: Option<Answer> = line
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok());
    match answer {
        Some(Answer { error: Some(e), .. }) => Err(io::Error::other(e)),
        Some(a) => Ok(a),
        None if status.signal_is(libc::SIGALRM) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("took longer than {}s", req.timeout_secs),
        )),
        None => Err(io::Error::other(format!(
            "the cache helper inside the sandbox ended with {status}: {}",
            line.trim()
        ))),
    }
}

trait SignalIs {
    fn signal_is(&self, sig: i32) -> bool;
}

impl SignalIs for std::process::ExitStatus {
    fn signal_is(&self, sig: i32) -> bool {
        std::os::unix::process::ExitStatusExt::signal(self) == Some(sig)
    }
}

fn request(op: Op, dirs: &archive::Dirs, cap: u64, timeout_secs: u64) -> Request {
    Request {
        op,
        dirs: dirs.to_vec(),
        cap,
        timeout_secs,
    }
}

/// Makes the cached directories in the job's view.
pub fn prepare(view: &JobView, dirs: &archive::Dirs, timeout_secs: u64) -> io::Result<()> {
    let req = request(Op::Prepare, dirs, 0, timeout_secs);
    ask(view, &req, Stdio::null(), Stdio::null()).map(drop)
}

/// Restores `archive` (a file in runway's cache store) into the job's view; returns what
/// was restored, with the fingerprint a store compares with (the archive's).
pub fn restore(
    view: &JobView,
    archive_file: &Path,
    dirs: &archive::Dirs,
    cap: u64,
    timeout_secs: u64,
) -> io::Result<Restored> {
    let input = std::fs::File::open(archive_file)?;
    let req = request(Op::Restore, dirs, cap, timeout_secs);
    let a = ask(view, &req, input.into(), Stdio::null())?;
    Ok(Restored {
        files: a.files,
        bytes: a.bytes,
        refused: a.refused,
        fingerprint: a.fingerprint,
    })
}

/// Archives the job's directories, as the job sees them, into `out` (runway's file).
pub fn save(
    view: &JobView,
    dirs: &archive::Dirs,
    out: std::fs::File,
    timeout_secs: u64,
) -> io::Result<Saved> {
    let req = request(Op::Save, dirs, 0, timeout_secs);
    let a = ask(view, &req, Stdio::null(), out.into())?;
    Ok(Saved {
        files: a.files,
        bytes: a.bytes,
        archive_bytes: 0,
    })
}

/// Unpacks the bundle read from `input` (a file runway opened) into `dest` in the
/// job's view; returns the files and bytes written, or why it was refused.
pub fn unpack(
    view: &JobView,
    input: std::fs::File,
    kind: bundle::Kind,
    dest: &Path,
    timeout_secs: u64,
) -> io::Result<(u64, u64)> {
    let req = Request {
        op: Op::Unpack {
            kind,
            dest: dest.to_path_buf(),
            caps: bundle::caps(),
        },
        dirs: Vec::new(),
        cap: 0,
        timeout_secs,
    };
    let a = ask(view, &req, input.into(), Stdio::null())?;
    Ok((a.files, a.bytes))
}

/// Archives the job's directories, as the job sees them, into `out` (runway's file)
/// unless their fingerprint is still `since` (None: nothing changed, nothing written):
/// one walk of the directories and one helper, where a fingerprint then a save were two
/// of each.
pub fn save_changed(
    view: &JobView,
    dirs: &archive::Dirs,
    since: Option<&str>,
    out: std::fs::File,
    timeout_secs: u64,
) -> io::Result<Option<Saved>> {
    let op = Op::SaveChanged {
        since: since.map(str::to_string),
    };
    let req = request(op, dirs, 0, timeout_secs);
    let a = ask(view, &req, Stdio::null(), out.into())?;
    Ok((!a.unchanged).then_some(Saved {
        files: a.files,
        bytes: a.bytes,
        archive_bytes: 0,
    }))
}

/// What [`save_tree`] stored.
#[derive(Clone, Copy, Debug, Default)]
pub struct Stored {
    /// Files in the new version.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Bytes copied (the rest linked from the old version).
    pub copied_bytes: u64,
}

/// Writes a new stored version of the job's directories, as the job sees them, into
/// `new` (runway's empty directory): what is unchanged since `old` (the version mounted,
/// with each mount's upper directory under `layers`) is linked, the rest copied.
#[allow(clippy::too_many_arguments)]
pub fn save_tree(
    view: &JobView,
    dirs: &archive::Dirs,
    trees: Vec<TreeDir>,
    new: &std::fs::File,
    old: Option<&std::fs::File>,
    layers: Option<&std::fs::File>,
    cap: u64,
    timeout_secs: u64,
) -> io::Result<Stored> {
    let mut fds = vec![new.as_fd()];
    let mut old_fd = None;
    if let Some(f) = old {
        fds.push(f.as_fd());
        old_fd = Some(2 + fds.len() as i32);
    }
    let mut layers_fd = None;
    if let Some(f) = layers {
        fds.push(f.as_fd());
        layers_fd = Some(2 + fds.len() as i32);
    }
    let op = Op::SaveTree {
        old: old_fd,
        layers: layers_fd,
        trees,
    };
    let req = request(op, dirs, cap, timeout_secs);
    let a = ask_with(view, &req, Stdio::null(), Stdio::null(), &fds)?;
    Ok(Stored {
        files: a.files,
        bytes: a.bytes,
        copied_bytes: a.copied_bytes,
    })
}

/// Copies the stored version's part for `dir` (a directory that holds files already)
/// into it in the job's view, keeping what is there; returns what was copied.
pub fn fill(
    view: &JobView,
    dir: &(String, PathBuf),
    version: &std::fs::File,
    sub: &str,
    cap: u64,
    timeout_secs: u64,
) -> io::Result<Restored> {
    let op = Op::Fill {
        sub: sub.to_string(),
    };
    let req = request(op, std::slice::from_ref(dir), cap, timeout_secs);
    let a = ask_with(view, &req, Stdio::null(), Stdio::null(), &[version.as_fd()])?;
    Ok(Restored {
        files: a.files,
        bytes: a.bytes,
        refused: a.refused,
        fingerprint: None,
    })
}

/// Mounts each cached directory's part of `version` in the job's view, its writes going
/// to `layers/N/upper`; one that holds files already (the checkout's), or whose `copy`
/// is set, or that cannot be mounted, gets the version's copied in instead. Per
/// directory whether it was mounted, the files copied, and what to say.
pub fn mount_version(
    view: &JobView,
    version: &crate::cache::store::Version,
    dirs: &[(String, PathBuf)],
    copy: &[bool],
    layers: &Path,
    timeout_secs: u64,
) -> Result<(Vec<bool>, archive::Restored, Vec<String>), String> {
    let mut mounted = Vec::new();
    let mut copied = archive::Restored::default();
    let mut notes = Vec::new();
    for (i, (written, path)) in dirs.iter().enumerate() {
        let sub = crate::cache::store::sub(written);
        let Ok(lower) = crate::cache::tree::open_dir(
            &version.dir,
            &std::ffi::CString::new(sub.as_str()).unwrap_or_default(),
        ) else {
            mounted.push(false);
            continue;
        };
        let copy = copy.get(i).copied().unwrap_or(false);
        let at = layers.join(i.to_string());
        let open = |name: &str| -> std::io::Result<std::fs::File> {
            std::fs::create_dir_all(at.join(name))?;
            std::fs::File::open(at.join(name))
        };
        // A kernel that cannot make the mount (overlayfs layers given as descriptors
        // came in Linux 6.13) gets the version copied in instead.
        let done = !copy && {
            let (upper, work) = open("upper")
                .and_then(|u| Ok((u, open("work")?)))
                .map_err(|e| format!("{}: {e}", at.display()))?;
            let layers = crate::sandbox::CacheLayers {
                lower: lower.as_fd(),
                upper: upper.as_fd(),
                work: work.as_fd(),
            };
            view.mount_cache(path, &layers).unwrap_or_else(|e| {
                notes.push(format!(
                    "{written} could not be mounted copy-on-write ({e}); copied instead"
                ));
                false
            })
        };
        if !done {
            let dir = (written.clone(), path.clone());
            let r = fill(
                view,
                &dir,
                &version.dir,
                &sub,
                archive::restore_cap(),
                timeout_secs,
            )
            .map_err(|e| format!("{written}: {e}"))?;
            copied.files += r.files;
            copied.bytes += r.bytes;
        }
        mounted.push(done);
    }
    Ok((mounted, copied, notes))
}

/// True when every cached directory was mounted (`mounted`) and the job wrote nothing
/// over any (each mount's upper directory under `layers` is empty): a save has nothing
/// to do.
pub fn untouched(layers: &Path, mounted: &[bool]) -> bool {
    mounted.iter().enumerate().all(|(i, m)| {
        *m && std::fs::read_dir(layers.join(i.to_string()).join("upper"))
            .is_ok_and(|mut rd| rd.next().is_none())
    })
}
