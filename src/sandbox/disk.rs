//! A job's disk budget: everything a job writes to disk (its checkout, `$HOME`, the
//! copy-on-write root's upper layer, its caches on their way) lives in its workspace,
//! and the workspace is a filesystem of its own: an ext4 image of the budget's size,
//! sparse (it takes on the host only what the job writes), on a loop device, mounted
//! `nosuid,nodev` on the workspace directory before the checkout. A job that fills it
//! gets `ENOSPC`, never the host's disk; the job is errored "exceeded its disk limit".
//!
//! The image is a copy of a template made once per runway process with `mkfs.ext4`
//! (no journal, no reserved blocks, lazy inode tables): only its few megabytes of
//! metadata are copied (`SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`), so a job's disk
//! costs a copy, a loop device (`LOOP_CONFIGURE` with autoclear) and a mount.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The default budget (10 GiB): a build's checkout, dependencies and artefacts, with
/// room; the host's disk is never at a job's mercy.
pub const DEFAULT_BYTES: u64 = 10 << 30;

/// A job's disk budget: `--disk SIZE|none`, runway.toml's `job_disk`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Budget(pub Option<u64>);

impl Default for Budget {
    fn default() -> Budget {
        Budget(Some(DEFAULT_BYTES))
    }
}

/// Reads `10G`, `512M`, or `none` (no budget: the host's disk).
pub fn parse_budget(text: &str) -> Result<Budget, String> {
    if text.trim().eq_ignore_ascii_case("none") {
        return Ok(Budget(None));
    }
    let n = super::cgroup::parse_size(text)?;
    if n < 64 << 20 {
        return Err(format!("{text}: a job's disk is at least 64M"));
    }
    Ok(Budget(Some(n)))
}

/// A job's disk, mounted on its workspace; unmounted and removed when dropped.
#[derive(Debug)]
pub struct JobDisk {
    mount: PathBuf,
    image: PathBuf,
    size: u64,
    kept: bool,
}

/// Where a workspace's image lives: beside it (`runway-job-XXXX.disk`).
pub fn image_of(workspace: &Path) -> PathBuf {
    let mut name = workspace.as_os_str().to_os_string();
    name.push(".disk");
    PathBuf::from(name)
}

impl JobDisk {
    /// Makes a filesystem of `size` bytes and mounts it on `dir` (an empty directory).
    pub fn attach(dir: &Path, size: u64) -> io::Result<JobDisk> {
        let image = image_of(dir);
        copy_sparse(&template(size)?, &image, size)?;
        let disk = JobDisk {
            mount: dir.to_path_buf(),
            image,
            size,
            kept: false,
        };
        // Held open until mounted: an autoclear device is cleared at its last close.
        let (dev, _held) = loop_attach(&disk.image)?;
        let (src, target, fstype) = (cstr(&dev)?, cstr(dir)?, CString::new("ext4")?);
        // SAFETY: mount(2) with NUL-terminated strings; no data.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                std::ptr::null(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            // The loop device clears itself once nothing holds it (autoclear).
            return Err(io::Error::new(
                e.kind(),
                format!("mounting the job's disk on {}: {e}", dir.display()),
            ));
        }
        Ok(disk)
    }

    /// The budget.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// True when the disk is (all but) full: less than 1% or 16 MiB left, whichever is
    /// less.
    pub fn full(&self) -> bool {
        let Ok(c) = cstr(&self.mount) else {
            return false;
        };
        // SAFETY: statvfs(2) into a zeroed struct we own.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        free < (self.size / 100).min(16 << 20)
    }

    /// Leaves the disk mounted (`--keep-workspace`).
    pub fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for JobDisk {
    fn drop(&mut self) {
        if !self.kept {
            release(&self.mount);
        }
    }
}

/// Unmounts a workspace's disk (when it has one) and removes its image: for a job's
/// end, and for what a killed runway left.
pub fn release(workspace: &Path) {
    if let Ok(c) = cstr(workspace) {
        // SAFETY: umount2(2) of a path; MNT_DETACH lets go even while busy.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH);
        }
    }
    let _ = std::fs::remove_file(image_of(workspace));
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// The template image of `size` bytes, made once per process in a directory of its own.
fn template(size: u64) -> io::Result<PathBuf> {
    static DIR: OnceLock<Result<tempfile::TempDir, String>> = OnceLock::new();
    static MADE: Mutex<Vec<u64>> = Mutex::new(Vec::new());
    let dir = DIR
        .get_or_init(|| {
            tempfile::Builder::new()
                .prefix("runway-disk-")
                .tempdir()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| io::Error::other(e.clone()))?;
    let path = dir.path().join(format!("template-{size}.img"));
    let mut made = MADE.lock().unwrap_or_else(|p| p.into_inner());
    if made.contains(&size) {
        return Ok(path);
    }
    File::create(&path)?.set_len(size)?;
    let out = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
        ])
        .arg(&path)
        .output()
        .map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("mkfs.ext4 (e2fsprogs) makes a job's disk: {e}"),
            )
        })?;
    if !out.status.success() {
        return Err(io::Error::other(format!(
            "mkfs.ext4: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    made.push(size);
    Ok(path)
}

/// Copies only the data of sparse `from` into a new file `to` of `size` bytes.
fn copy_sparse(from: &Path, to: &Path, size: u64) -> io::Result<()> {
    let src = File::open(from)?;
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    dst.set_len(size)?;
    let mut at: i64 = 0;
    loop {
        // SAFETY: lseek(2) on a descriptor we own.
        let data = unsafe { libc::lseek(src.as_raw_fd(), at, libc::SEEK_DATA) };
        if data < 0 {
            break; // ENXIO: no data past `at`.
        }
        // SAFETY: as above.
        let hole = unsafe { libc::lseek(src.as_raw_fd(), data, libc::SEEK_HOLE) };
        if hole < 0 {
            return Err(io::Error::last_os_error());
        }
        let (mut off_in, mut off_out) = (data, data);
        let mut left = (hole - data) as usize;
        while left > 0 {
            // SAFETY: copy_file_range(2) between two descriptors we own, offsets ours.
            let n = unsafe {
                libc::copy_file_range(
                    src.as_raw_fd(),
                    &mut off_in,
                    dst.as_raw_fd(),
                    &mut off_out,
                    left,
                    0,
                )
            };
            if n <= 0 {
                return Err(if n == 0 {
                    io::Error::other("copy_file_range copied nothing")
                } else {
                    io::Error::last_os_error()
                });
            }
            left -= n as usize;
        }
        at = hole;
    }
    Ok(())
}

const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64` (linux/loop.h).
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config` (linux/loop.h).
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Attaches `image` to a free loop device (cleared once unmounted and closed); its path
/// and an open descriptor of it, to hold until it is mounted.
fn loop_attach(image: &Path) -> io::Result<(PathBuf, File)> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/loop-control: {e}")))?;
    let backing = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(image)?;
    // Another process may take the same free device first: ask again.
    for _ in 0..16 {
        // SAFETY: ioctl(2) on the loop control device; it returns a device number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let dev = PathBuf::from(format!("/dev/loop{n}"));
        let Ok(loopdev) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&dev)
        else {
            continue;
        };
        // SAFETY: LoopConfig is plain data; zeroed is valid, then filled in.
        let mut cfg: LoopConfig = unsafe { std::mem::zeroed() };
        cfg.fd = backing.as_raw_fd() as u32;
        cfg.info.flags = LO_FLAGS_AUTOCLEAR;
        // SAFETY: ioctl(2) with a pointer to a config of the kernel's layout.
        let r = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_CONFIGURE, &cfg) };
        if r == 0 {
            return Ok((dev, loopdev));
        }
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::EBUSY) {
            return Err(io::Error::new(e.kind(), format!("{}: {e}", dev.display())));
        }
    }
    Err(io::Error::other("no free loop device"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budgets_read_sizes_and_none() {
        assert_eq!(parse_budget("10G"), Ok(Budget(Some(10 << 30))));
        assert_eq!(parse_budget("none"), Ok(Budget(None)));
        assert!(parse_budget("1M").is_err());
        assert_eq!(Budget::default(), Budget(Some(DEFAULT_BYTES)));
    }

    #[test]
    fn a_sparse_copy_keeps_data_and_holes() {
        let d = tempfile::tempdir().unwrap();
        let from = d.path().join("a");
        let f = File::create(&from).unwrap();
        f.set_len(8 << 20).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"head", 0).unwrap();
        std::os::unix::fs::FileExt::write_at(&f, b"tail", (6 << 20) + 3).unwrap();
        let to = d.path().join("b");
        copy_sparse(&from, &to, 8 << 20).unwrap();
        let a = std::fs::read(&from).unwrap();
        let b = std::fs::read(&to).unwrap();
        assert_eq!(a, b);
        use std::os::unix::fs::MetadataExt;
        assert!(std::fs::metadata(&to).unwrap().blocks() < 1024, "sparse");
    }
}
