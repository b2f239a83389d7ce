//! Files runway makes and removes once a job or a build (a shell's process record, a
//! build's partial log), kept for the next one rather than removed: on an ext4 without
//! a journal, as this machine's root filesystem is, each new file's inode is found by
//! a search past every inode freed in its group in the last minutes
//! (`recently_deleted`), and a node or worker that makes and removes a few files a
//! job spent up to a tenth of its CPU there (BENCHMARKS.md). A retired file is emptied
//! down to what it must say as a spare and renamed `.spare-PID-N` in its directory;
//! the next file there takes its inode by a rename. Only runway's own directories (its
//! state directory, hidden from jobs) hold them; nothing here follows a link.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The start of a spare's name; this process's id, `-` and a number follow.
pub const PREFIX: &str = ".spare-";

/// The spares of one kind of file, for every directory this process keeps them in.
pub struct Spares {
    /// The most kept (for all directories together).
    most: usize,
    kept: Mutex<Vec<PathBuf>>,
}

impl Spares {
    /// A place for at most `most` spares.
    pub const fn new(most: usize) -> Spares {
        Spares {
            most,
            kept: Mutex::new(Vec::new()),
        }
    }

    fn take(&self, dir: &Path) -> Option<PathBuf> {
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let at = kept.iter().rposition(|s| s.parent() == Some(dir))?;
        Some(kept.swap_remove(at))
    }

    /// `path` made anew, empty and open for writing: a spare of its directory renamed
    /// to it, or a new file (either replaces what `path` was).
    pub fn create(&self, path: &Path) -> io::Result<File> {
        if let Some(spare) = path.parent().and_then(|d| self.take(d)) {
            let reused = open_existing(&spare).and_then(|f| {
                std::fs::rename(&spare, path)?;
                Ok(f)
            });
            match reused {
                Ok(f) => return Ok(f),
                // Gone (a sweep by another runway took it): a new file, as below.
                Err(_) => {
                    let _ = std::fs::remove_file(&spare);
                }
            }
        }
        File::create(path)
    }

    /// `path` made anew holding `bytes` ([`Spares::create`]).
    pub fn write(&self, path: &Path, bytes: &[u8]) -> io::Result<()> {
        let mut f = self.create(path)?;
        f.write_all(bytes)
    }

    /// `path` is no longer needed: renamed a spare of its directory (first, so that no
    /// one opens it by its name after), then emptied down to `says`, what a spare must
    /// say to whoever reads the directory; removed when enough are kept or any of
    /// that fails.
    pub fn retire(&self, path: &Path, says: &[u8]) {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let Some(dir) = path.parent() else { return };
        let full = {
            let kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
            kept.len() >= self.most
        };
        if full {
            let _ = std::fs::remove_file(path);
            return;
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let spare = dir.join(format!("{PREFIX}{}-{n}", std::process::id()));
        let kept = std::fs::rename(path, &spare).is_ok()
            && open_existing(&spare)
                .and_then(|mut f| f.write_all(says))
                .is_ok();
        if kept {
            self.kept
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(spare);
        } else {
            let _ = std::fs::remove_file(&spare);
            let _ = std::fs::remove_file(path);
        }
    }
}

/// An existing regular file opened for writing and emptied (a link is not followed).
fn open_existing(path: &Path) -> io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .truncate(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// The id of the process that kept the spare named `name`, when it is one.
pub fn owner(name: &str) -> Option<i32> {
    name.strip_prefix(PREFIX)?.split('-').next()?.parse().ok()
}

/// Removes the spares in `dir` of processes that are gone (kept by a runway that was
/// killed, or stopped without removing them).
pub fn sweep(dir: &Path) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let name = e.file_name();
        let Some(pid) = name.to_str().and_then(owner) else {
            continue;
        };
        if pid != std::process::id() as i32 && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    /// A retired file's inode is the next file's in its directory, empty but for what
    /// a spare says; a spare is never taken for a file of another directory.
    #[test]
    fn a_retired_file_is_the_next_ones_inode_and_says_only_what_a_spare_says() {
        let dir = tempfile::tempdir().unwrap();
        let other = tempfile::tempdir().unwrap();
        let spares = Spares::new(4);
        let first = dir.path().join("1.log");
        spares.write(&first, b"the first build's log").unwrap();
        let ino = std::fs::metadata(&first).unwrap().ino();
        spares.retire(&first, b"owner 42\n");
        assert!(!first.exists());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names.len(), 1, "{names:?}");
        assert_eq!(owner(&names[0]), Some(std::process::id() as i32));
        assert_eq!(
            std::fs::read(dir.path().join(&names[0])).unwrap(),
            b"owner 42\n"
        );

        let elsewhere = other.path().join("2.log");
        spares.write(&elsewhere, b"x").unwrap();
        assert_ne!(std::fs::metadata(&elsewhere).unwrap().ino(), ino);

        let second = dir.path().join("2.log");
        spares.write(&second, b"second").unwrap();
        assert_eq!(std::fs::metadata(&second).unwrap().ino(), ino, "recycled");
        assert_eq!(std::fs::read(&second).unwrap(), b"second");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    /// Past the most kept, a retired file is removed; a sweep removes the spares of a
    /// process that is gone and keeps this one's.
    #[test]
    fn spares_are_bounded_and_a_gone_process_spares_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let spares = Spares::new(1);
        for i in 0..3 {
            let p = dir.path().join(format!("{i}"));
            spares.write(&p, b"x").unwrap();
        }
        for i in 0..3 {
            spares.retire(&dir.path().join(format!("{i}")), b"");
        }
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "one kept"
        );
        // A spare left by a process that is gone (no pid is this high).
        std::fs::write(dir.path().join(format!("{PREFIX}2147483000-0")), b"").unwrap();
        sweep(dir.path());
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "{left:?}");
        assert_eq!(
            owner(left[0].to_str().unwrap()),
            Some(std::process::id() as i32)
        );
    }
}
