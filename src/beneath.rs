//! Files a job can influence, opened by runway through descriptors that cannot leave a
//! directory: `openat2(2)` with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
//! RESOLVE_NO_MAGICLINKS | RESOLVE_NO_XDEV` from a descriptor of that directory. A `..`
//! that climbs out, an absolute path, a symbolic link anywhere on the way (the job's or
//! the commit's), or a mount crossed is refused by the kernel, so a link the job swaps in
//! between a check and an open changes nothing. Where the kernel lacks `openat2` (before
//! 5.6) each component is opened in turn with `O_NOFOLLOW`, the same rule by hand.
//!
//! What runway reads from a job's workspace as root (a deploy's files, the job's
//! environment dump) goes through [`Beneath`]; nothing here ever writes.

use std::ffi::CString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// A directory, held open; every path below is resolved from it and never leaves it.
#[derive(Debug)]
pub struct Beneath {
    fd: OwnedFd,
}

/// Why a path cannot be opened beneath a directory.
pub fn refused(rel: &Path, e: &io::Error) -> String {
    match e.raw_os_error() {
        Some(libc::ELOOP) => format!("{}: a symbolic link is on the way", rel.display()),
        Some(libc::EXDEV) => format!("{}: it leaves the job's directory", rel.display()),
        Some(libc::ENOTDIR) => format!("{}: a file is on the way", rel.display()),
        _ => format!("{}: {e}", rel.display()),
    }
}

impl Beneath {
    /// Opens `dir` itself (it must be a real directory, not a link to one).
    pub fn open(dir: &Path) -> io::Result<Beneath> {
        let c = cstr(dir)?;
        // SAFETY: open(2) of a NUL-terminated path; the result is checked and owned.
        let fd = unsafe {
            libc::open(
                c.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just opened and is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Beneath { fd })
    }

    /// The directory `rel` below this one.
    pub fn dir(&self, rel: &Path) -> io::Result<Beneath> {
        let fd = self
            .open_at(rel, libc::O_RDONLY | libc::O_DIRECTORY)
            .map_err(|e| match e.raw_os_error() {
                // A link at the end reads as "not a directory": say it is a link.
                Some(libc::ENOTDIR)
                    if self.lstat(rel).is_ok_and(|m| m.file_type().is_symlink()) =>
                {
                    io::Error::from_raw_os_error(libc::ELOOP)
                }
                _ => e,
            })?;
        Ok(Beneath { fd })
    }

    /// The regular file `rel` below this one, for reading.
    pub fn file(&self, rel: &Path) -> io::Result<File> {
        let fd = self.open_at(rel, libc::O_RDONLY | libc::O_NONBLOCK)?;
        let f = File::from(fd);
        if !f.metadata()?.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(f)
    }

    /// The whole of the regular file `rel`, refused past `cap` bytes.
    pub fn read_capped(&self, rel: &Path, cap: u64) -> io::Result<Vec<u8>> {
        let f = self.file(rel)?;
        let mut out = Vec::new();
        f.take(cap + 1).read_to_end(&mut out)?;
        if out.len() as u64 > cap {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("larger than {cap} bytes"),
            ));
        }
        Ok(out)
    }

    /// Removes the file `rel` (a name directly in this directory; a link is removed,
    /// never followed).
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let c = CString::new(name).map_err(|_| io::ErrorKind::InvalidInput)?;
        // SAFETY: unlinkat(2) relative to our own directory descriptor.
        if unsafe { libc::unlinkat(self.fd.as_raw_fd(), c.as_ptr(), 0) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Every regular file and directory below, by path relative to this directory,
    /// sorted; symbolic links and other kinds are left out. Each directory is opened
    /// through its parent's descriptor, so a link swapped in meanwhile is never followed.
    pub fn walk(&self) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        self.walk_keeping(false)
    }

    /// [`Beneath::walk`], with symbolic links listed too (never followed).
    pub fn walk_with_links(&self) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        self.walk_keeping(true)
    }

    fn walk_keeping(&self, links: bool) -> io::Result<Vec<(PathBuf, std::fs::Metadata)>> {
        let mut out = Vec::new();
        let mut stack = vec![PathBuf::new()];
        while let Some(rel) = stack.pop() {
            let dir = if rel.as_os_str().is_empty() {
                Beneath {
                    fd: self.fd.try_clone()?,
                }
            } else {
                self.dir(&rel)?
            };
            // /proc/self/fd/N of a directory we hold: read_dir needs a path, and this one
            // names the descriptor itself (the kernel's magic link, not the job's).
            let listing = std::fs::read_dir(format!("/proc/self/fd/{}", dir.fd.as_raw_fd()))?;
            let mut names: Vec<_> = listing
                .filter_map(|e| e.ok().map(|e| e.file_name()))
                .collect();
            names.sort();
            for name in names {
                let child = rel.join(&name);
                let meta = match self.lstat(&child) {
                    Ok(m) => m,
                    Err(_) => continue,
                };
                if meta.is_dir() {
                    stack.push(child.clone());
                } else if !(meta.is_file() || links && meta.file_type().is_symlink()) {
                    continue;
                }
                out.push((child, meta));
            }
        }
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out)
    }

    /// The metadata of `rel` itself (a link is not followed).
    pub fn lstat(&self, rel: &Path) -> io::Result<std::fs::Metadata> {
        let fd = self.open_at(rel, libc::O_PATH)?;
        File::from(fd).metadata()
    }

    fn open_at(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let rel = relative(rel)?;
        let flags = flags | libc::O_NOFOLLOW | libc::O_CLOEXEC;
        if rel.as_os_str().is_empty() {
            return self.reopen(flags);
        }
        match openat2(self.fd.as_raw_fd(), &rel, flags) {
            Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => self.by_hand(&rel, flags),
            r => r,
        }
    }

    fn reopen(&self, flags: libc::c_int) -> io::Result<OwnedFd> {
        let dot = CString::new(".").unwrap_or_default();
        // SAFETY: openat(2) of "." relative to our own descriptor.
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), dot.as_ptr(), flags) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: just opened, ours alone.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// The same rule without `openat2`: one component at a time, never following links.
    fn by_hand(&self, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
        let mut at = self.reopen(libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC)?;
        let parts: Vec<_> = rel.components().collect();
        for (i, part) in parts.iter().enumerate() {
            let Component::Normal(name) = part else {
                return Err(io::Error::from_raw_os_error(libc::EXDEV));
            };
            let c = CString::new(name.as_bytes()).map_err(|_| io::ErrorKind::InvalidInput)?;
            let last = i + 1 == parts.len();
            let f = if last {
                flags
            } else {
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC
            };
            // SAFETY: openat(2) relative to a descriptor we own.
            let fd = unsafe { libc::openat(at.as_raw_fd(), c.as_ptr(), f) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: just opened, ours alone.
            at = unsafe { OwnedFd::from_raw_fd(fd) };
        }
        Ok(at)
    }
}

/// `rel` as a plain relative path: `.` parts dropped; an absolute path or `..` refused.
fn relative(rel: &Path) -> io::Result<PathBuf> {
    let mut out = PathBuf::new();
    for c in rel.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            _ => return Err(io::Error::from_raw_os_error(libc::EXDEV)),
        }
    }
    Ok(out)
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// openat2(2) with every resolve restriction.
fn openat2(dir: libc::c_int, rel: &Path, flags: libc::c_int) -> io::Result<OwnedFd> {
    let c = cstr(rel)?;
    // SAFETY: open_how is plain data; zeroed is a valid value, then filled in.
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = flags as u64;
    how.resolve = libc::RESOLVE_BENEATH
        | libc::RESOLVE_NO_SYMLINKS
        | libc::RESOLVE_NO_MAGICLINKS
        | libc::RESOLVE_NO_XDEV;
    // SAFETY: openat2(2) with a valid path and a `how` of the size we pass.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            c.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: just opened, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Where `written` (as an option names it, relative to `base` or absolute) lands, as a
/// path relative to `base`, or why it leaves `base`. Decided on the text alone (`..`
/// and absolute paths); links are the kernel's part when the path is opened.
pub fn inside(base: &Path, written: &Path) -> Result<PathBuf, String> {
    let full = if written.is_absolute() {
        written.to_path_buf()
    } else {
        base.join(written)
    };
    lexical(&full)
        .strip_prefix(base)
        .map(Path::to_path_buf)
        .map_err(|_| format!("{} is outside the job's build directory", written.display()))
}

/// An absolute `path` with `.` dropped and each `..` taking the part before it away, on
/// the text alone (no link is followed).
pub fn lexical(path: &Path) -> PathBuf {
    let mut out: Vec<std::ffi::OsString> = Vec::new();
    for c in path.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n.to_os_string()),
        }
    }
    std::iter::once(std::ffi::OsString::from("/"))
        .chain(out)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_and_dot_dot_never_leave_the_directory() {
        let t = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/f"), "ok").unwrap();
        std::os::unix::fs::symlink(outside.path(), t.path().join("lnk")).unwrap();
        std::os::unix::fs::symlink(outside.path().join("secret"), t.path().join("d/s")).unwrap();
        let b = Beneath::open(t.path()).unwrap();
        assert_eq!(b.read_capped(Path::new("d/f"), 10).unwrap(), b"ok");
        for bad in ["lnk/secret", "d/s", "../secret", "/etc/passwd", "d/../../x"] {
            let e = b.file(Path::new(bad)).unwrap_err();
            assert!(
                matches!(e.raw_os_error(), Some(libc::ELOOP | libc::EXDEV)),
                "{bad}: {e}"
            );
        }
        assert!(b.dir(Path::new("lnk")).is_err());
        assert!(b.read_capped(Path::new("d/f"), 1).is_err(), "over its cap");
        let files: Vec<_> = b.walk().unwrap().into_iter().map(|(p, _)| p).collect();
        assert_eq!(files, [PathBuf::from("d"), PathBuf::from("d/f")]);
        // By hand, as on a kernel without openat2.
        assert!(b.by_hand(Path::new("lnk/secret"), libc::O_RDONLY).is_err());
        assert!(
            b.by_hand(Path::new("d/s"), libc::O_RDONLY | libc::O_NOFOLLOW)
                .is_err()
        );
        assert!(b.by_hand(Path::new("d/f"), libc::O_RDONLY).is_ok());
    }

    #[test]
    fn inside_decides_on_the_text() {
        let b = Path::new("/w/build/o/r");
        assert_eq!(inside(b, Path::new("dist")).unwrap(), Path::new("dist"));
        assert_eq!(inside(b, Path::new(".")).unwrap(), Path::new(""));
        assert_eq!(
            inside(b, Path::new("/w/build/o/r/x")).unwrap(),
            Path::new("x")
        );
        assert!(inside(b, Path::new("/root/.aws")).is_err());
        assert!(inside(b, Path::new("../../x")).is_err());
        assert_eq!(inside(b, Path::new("a/../b")).unwrap(), Path::new("b"));
    }
}
