//! A cache's new stored version, written from what the job's cached directory now is
//! ([`build`]): what the job changed is copied, what it left alone is hard-linked from the
//! version it started from. Saving writes only what changed.
//!
//! Runs in the cache helper, inside the job's view with the job's privileges
//! (`crate::inside`), on descriptors: the cached directory as the job sees it, the
//! overlay's upper directory (what the job wrote since the restore), the version it was
//! restored from and the new version's empty directory (runway's). Every name comes from
//! reading a directory and is opened relative to its parent's descriptor without
//! following links, so nothing written leaves the new version's directory. Regular
//! files, directories and symbolic links are kept (setuid, setgid and sticky bits
//! dropped); devices, sockets and pipes are left out.

use std::ffi::{CStr, CString, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;

/// Directories nested deeper than this are refused (three descriptors per level).
const MAX_DEPTH: usize = 200;

/// What [`build`] wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Built {
    /// Files (and links) in the new version.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
    /// Files copied (changed or new).
    pub copied: u64,
    /// Bytes copied.
    pub copied_bytes: u64,
}

/// One directory of a build: the job's view of it, what the job wrote over the stored
/// version (`upper`, none when nothing was mounted there), and the stored version it
/// came from (`old`, none when every file is to be copied).
pub struct Sources<'a> {
    /// The cached directory as the job sees it.
    pub merged: &'a File,
    /// The overlay's upper directory at the same place.
    pub upper: Option<&'a File>,
    /// The stored version's directory at the same place.
    pub old: Option<&'a File>,
}

/// Fills `new` (an empty directory) with what `src.merged` holds: entries the job did not
/// touch (absent from `src.upper`, present in `src.old`) are hard links to `src.old`'s;
/// the rest are copied. Stops with an error past `cap` bytes.
pub fn build(src: &Sources, new: &File, cap: u64, built: &mut Built) -> io::Result<()> {
    visit(src, new, cap, built, 0)
}

fn visit(src: &Sources, new: &File, cap: u64, built: &mut Built, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "the cache's directories are nested deeper than {MAX_DEPTH} levels"
        )));
    }
    for name in names(src.merged)? {
        let c = CString::new(name.into_vec()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let Ok(now) = stat(src.merged, &c) else {
            continue; // gone meanwhile
        };
        let touched = src.upper.map(|u| stat(u, &c).ok());
        let before = src.old.and_then(|o| stat(o, &c).ok());
        let kind = now.mode() & libc::S_IFMT;
        let same_kind = before
            .as_ref()
            .is_some_and(|b| b.mode() & libc::S_IFMT == kind);
        // Not written since the restore, and in the stored version: the same entry.
        if matches!(touched, Some(None)) && same_kind {
            let old = src.old.expect("same_kind implies an old version");
            if kind == libc::S_IFDIR {
                mkdir(new, &c, now.mode())?;
                let from = open_dir(old, &c)?;
                let to = open_dir(new, &c)?;
                link_tree(&from, &to, cap, built, depth + 1)?;
            } else {
                link(old, new, &c)?;
                count(built, &now, cap, false)?;
            }
            continue;
        }
        match kind {
            libc::S_IFDIR => {
                mkdir(new, &c, now.mode())?;
                let merged = open_dir(src.merged, &c)?;
                let upper = match touched {
                    Some(Some(u)) if u.is_dir() => Some(open_dir(src.upper.expect("touched"), &c)?),
                    _ => None,
                };
                let old = match (&before, src.old) {
                    (Some(b), Some(o)) if b.is_dir() => Some(open_dir(o, &c)?),
                    _ => None,
                };
                let inner = Sources {
                    merged: &merged,
                    // A directory the job made anew is all copied; one it changed
                    // inside is compared with the stored one entry by entry.
                    upper: if old.is_some() { upper.as_ref() } else { None },
                    old: old.as_ref(),
                };
                let to = open_dir(new, &c)?;
                visit(&inner, &to, cap, built, depth + 1)?;
            }
            libc::S_IFREG => {
                copy(src.merged, new, &c, &now)?;
                count(built, &now, cap, true)?;
            }
            libc::S_IFLNK => {
                let target = readlink(src.merged, &c)?;
                symlink(&target, new, &c)?;
                count(built, &now, cap, true)?;
            }
            _ => {} // devices, sockets, pipes: not cached
        }
    }
    Ok(())
}

/// Copies `from` (a stored version's directory) into `into` (a directory that holds
/// files already, the checkout's): what `into` has already stays (the checkout wins);
/// the rest is copied. Returns the entries left out because something else is there.
pub fn fill(from: &File, into: &File, cap: u64, built: &mut Built) -> io::Result<u64> {
    fill_at(from, into, cap, built, 0)
}

fn fill_at(from: &File, into: &File, cap: u64, built: &mut Built, depth: usize) -> io::Result<u64> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "the cache's directories are nested deeper than {MAX_DEPTH} levels"
        )));
    }
    let mut kept = 0;
    for name in names(from)? {
        let c = CString::new(name.into_vec()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let meta = stat(from, &c)?;
        let there = stat(into, &c).ok();
        match meta.mode() & libc::S_IFMT {
            libc::S_IFDIR => {
                match there {
                    None => mkdir(into, &c, meta.mode())?,
                    Some(t) if t.is_dir() => {}
                    Some(_) => {
                        kept += 1;
                        continue;
                    }
                }
                let (f, t) = (open_dir(from, &c)?, open_dir(into, &c)?);
                kept += fill_at(&f, &t, cap, built, depth + 1)?;
            }
            _ if there.is_some() => kept += 1,
            libc::S_IFREG => {
                copy(from, into, &c, &meta)?;
                count(built, &meta, cap, true)?;
            }
            libc::S_IFLNK => {
                symlink(&readlink(from, &c)?, into, &c)?;
                count(built, &meta, cap, true)?;
            }
            _ => {}
        }
    }
    Ok(kept)
}

/// `from`'s whole tree into `to` as hard links (a directory the job never touched).
fn link_tree(from: &File, to: &File, cap: u64, built: &mut Built, depth: usize) -> io::Result<()> {
    if depth > MAX_DEPTH {
        return Err(io::Error::other(format!(
            "the cache's directories are nested deeper than {MAX_DEPTH} levels"
        )));
    }
    for name in names(from)? {
        let c = CString::new(name.into_vec()).map_err(|_| io::ErrorKind::InvalidInput)?;
        let meta = stat(from, &c)?;
        if meta.is_dir() {
            mkdir(to, &c, meta.mode())?;
            let (f, t) = (open_dir(from, &c)?, open_dir(to, &c)?);
            link_tree(&f, &t, cap, built, depth + 1)?;
        } else {
            link(from, to, &c)?;
            count(built, &meta, cap, false)?;
        }
    }
    Ok(())
}

fn count(built: &mut Built, meta: &std::fs::Metadata, cap: u64, copied: bool) -> io::Result<()> {
    let size = if meta.is_file() { meta.len() } else { 0 };
    built.files += 1;
    built.bytes += size;
    if copied {
        built.copied += 1;
        built.copied_bytes += size;
    }
    if built.bytes > cap {
        return Err(io::Error::other(format!(
            "the cache is larger than {cap} bytes (RUNWAY_CACHE_MAX_BYTES)"
        )));
    }
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`).
pub fn names(dir: &File) -> io::Result<Vec<OsString>> {
    // SAFETY: dup(2) of a descriptor we hold; fdopendir takes the copy, closedir frees it.
    unsafe {
        let fd = libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        let d = libc::fdopendir(fd);
        if d.is_null() {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        libc::rewinddir(d);
        let mut out = Vec::new();
        loop {
            let e = libc::readdir(d);
            if e.is_null() {
                break;
            }
            let name = CStr::from_ptr((*e).d_name.as_ptr()).to_bytes();
            if name != b"." && name != b".." {
                out.push(OsString::from(std::ffi::OsStr::from_bytes(name)));
            }
        }
        libc::closedir(d);
        out.sort();
        Ok(out)
    }
}

/// The metadata of `name` in `dir` (a link itself, never followed).
pub fn stat(dir: &File, name: &CStr) -> io::Result<std::fs::Metadata> {
    let fd = open_at(dir, name, libc::O_PATH)?;
    File::from(fd).metadata()
}

fn open_at(dir: &File, name: &CStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    // SAFETY: openat(2) of one name relative to a descriptor we hold, never following
    // a link at it; the result is checked and owned.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            name.as_ptr(),
            flags | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Directory `name` in `dir`.
pub fn open_dir(dir: &File, name: &CStr) -> io::Result<File> {
    open_at(dir, name, libc::O_RDONLY | libc::O_DIRECTORY).map(File::from)
}

fn mkdir(dir: &File, name: &CStr, mode: u32) -> io::Result<()> {
    // SAFETY: mkdirat(2) of one name relative to a descriptor we hold.
    if unsafe { libc::mkdirat(dir.as_raw_fd(), name.as_ptr(), (mode & 0o777) | 0o700) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn link(from: &File, to: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: linkat(2) of one name between two descriptors we hold; a link is linked
    // itself (no AT_SYMLINK_FOLLOW).
    if unsafe {
        libc::linkat(
            from.as_raw_fd(),
            name.as_ptr(),
            to.as_raw_fd(),
            name.as_ptr(),
            0,
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn readlink(dir: &File, name: &CStr) -> io::Result<CString> {
    let mut buf = vec![0u8; libc::PATH_MAX as usize + 1];
    // SAFETY: readlinkat(2) into a buffer of the length we pass.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    buf.truncate(n as usize);
    CString::new(buf).map_err(|_| io::ErrorKind::InvalidData.into())
}

fn symlink(target: &CStr, dir: &File, name: &CStr) -> io::Result<()> {
    // SAFETY: symlinkat(2) of one name relative to a descriptor we hold.
    if unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Copies regular file `name` from `from` into a new file in `to`, with its permission
/// bits (no setuid, setgid or sticky bit) and times.
fn copy(from: &File, to: &File, name: &CStr, meta: &std::fs::Metadata) -> io::Result<()> {
    let mut src = File::from(open_at(from, name, libc::O_RDONLY | libc::O_NONBLOCK)?);
    if !src.metadata()?.is_file() {
        return Ok(()); // swapped for something else meanwhile: left out
    }
    let mut dst = File::from(open_at(
        to,
        name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL,
    )?);
    io::copy(&mut src, &mut dst)?;
    dst.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(
        meta.mode() & 0o777,
    ))?;
    let times = [
        libc::timespec {
            tv_sec: meta.atime(),
            tv_nsec: meta.atime_nsec(),
        },
        libc::timespec {
            tv_sec: meta.mtime(),
            tv_nsec: meta.mtime_nsec(),
        },
    ];
    // SAFETY: futimens(2) on the file just written, with two valid timespecs.
    unsafe { libc::futimens(dst.as_raw_fd(), times.as_ptr()) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn dir(p: &Path) -> File {
        File::open(p).unwrap()
    }

    fn ino(p: &Path) -> u64 {
        std::fs::symlink_metadata(p).unwrap().ino()
    }

    #[test]
    fn untouched_entries_are_linked_and_changed_ones_copied() {
        let t = tempfile::tempdir().unwrap();
        let (old, merged, upper, new) = (
            t.path().join("old"),
            t.path().join("merged"),
            t.path().join("upper"),
            t.path().join("new"),
        );
        // The stored version.
        for d in [&old, &merged, &upper, &new] {
            std::fs::create_dir_all(d).unwrap();
        }
        std::fs::create_dir_all(old.join("lib/deep")).unwrap();
        std::fs::write(old.join("lib/deep/a.jar"), "aaaa").unwrap();
        std::fs::write(old.join("keep.txt"), "k").unwrap();
        std::fs::write(old.join("changed.txt"), "old").unwrap();
        std::fs::write(old.join("gone.txt"), "g").unwrap();
        // What the job sees now: gone.txt deleted, changed.txt changed, new/ added.
        std::fs::create_dir_all(merged.join("lib/deep")).unwrap();
        std::fs::write(merged.join("lib/deep/a.jar"), "aaaa").unwrap();
        std::fs::write(merged.join("keep.txt"), "k").unwrap();
        std::fs::write(merged.join("changed.txt"), "new!").unwrap();
        std::fs::create_dir_all(merged.join("fresh")).unwrap();
        std::fs::write(merged.join("fresh/b"), "bb").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", merged.join("ln")).unwrap();
        std::fs::write(merged.join("suid"), "s").unwrap();
        std::fs::set_permissions(
            merged.join("suid"),
            std::os::unix::fs::PermissionsExt::from_mode(0o4755),
        )
        .unwrap();
        // What the overlay's upper would hold for that.
        std::fs::write(upper.join("changed.txt"), "new!").unwrap();
        std::fs::create_dir_all(upper.join("fresh")).unwrap();
        std::fs::write(upper.join("suid"), "").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", upper.join("ln")).unwrap();
        let (m, u, o, n) = (dir(&merged), dir(&upper), dir(&old), dir(&new));
        let mut built = Built::default();
        build(
            &Sources {
                merged: &m,
                upper: Some(&u),
                old: Some(&o),
            },
            &n,
            u64::MAX,
            &mut built,
        )
        .unwrap();
        assert_eq!(ino(&new.join("keep.txt")), ino(&old.join("keep.txt")));
        assert_eq!(
            ino(&new.join("lib/deep/a.jar")),
            ino(&old.join("lib/deep/a.jar")),
            "an untouched directory is linked file by file"
        );
        assert_ne!(ino(&new.join("changed.txt")), ino(&old.join("changed.txt")));
        assert_eq!(
            std::fs::read_to_string(new.join("changed.txt")).unwrap(),
            "new!"
        );
        assert_eq!(std::fs::read_to_string(new.join("fresh/b")).unwrap(), "bb");
        assert!(!new.join("gone.txt").exists());
        assert_eq!(
            std::fs::read_link(new.join("ln")).unwrap(),
            Path::new("/etc/passwd"),
            "a link is kept as a link, never followed"
        );
        assert_eq!(
            std::fs::metadata(new.join("suid")).unwrap().mode() & 0o7777,
            0o755
        );
        assert_eq!(built.files, 6);
        assert_eq!(built.copied, 4, "{built:?}");
        assert_eq!(built.copied_bytes, 4 + 2 + 1);
        // Past the cap: an error.
        let again = t.path().join("again");
        std::fs::create_dir_all(&again).unwrap();
        let err = build(
            &Sources {
                merged: &m,
                upper: None,
                old: None,
            },
            &dir(&again),
            3,
            &mut Built::default(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("larger than 3 bytes"), "{err}");
    }
}
