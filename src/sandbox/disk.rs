//! A job's disk budget: everything a job writes to disk (its checkout, `$HOME`, the
//! copy-on-write root's upper layer, its caches on their way) lives in its workspace,
//! and the workspace is a filesystem of its own: an ext4 image of the budget's size,
//! sparse (it takes on the host only what the job writes), on a loop device, mounted
//! `nosuid,nodev,nobarrier` on the workspace directory before the checkout. A job that
//! fills it gets `ENOSPC`, never the host's disk; the job is errored "exceeded its disk
//! limit".
//!
//! The image is a copy of a template made with `mkfs.ext4` once per runway process, or
//! once for all of them when it is kept in runway's state directory (no journal, no
//! reserved blocks, no room kept to grow it, lazy inode tables): only its metadata is
//! copied (`SEEK_DATA`/`SEEK_HOLE` and `copy_file_range`), then a loop
//! device (`LOOP_CONFIGURE` with autoclear) and a mount. Binding a loop device takes
//! milliseconds of the kernel's time, so each process keeps one disk of each size made
//! ahead, on a thread of its own, in a private directory (`runway-disk-PID-…`): a job's
//! disk is moved onto its workspace (`MS_MOVE`), and a finished one is moved out and
//! released behind the job's back. [`shutdown`] waits for that work and releases what
//! is ready at exit; [`sweep`] releases what a killed runway left.
//!
//! The disks are mounted in runway's own mount namespace ([`private_mounts`], made at
//! start), and each image is a file with no name (`O_TMPFILE`): when runway ends, even
//! by `kill -9`, the kernel unmounts its disks with the namespace and frees their
//! images with the loop devices; nothing is left on the host's disk or mounts. An
//! image whose loop device has let it go is emptied and kept for the next disk, and a
//! job directory its disk left empty for the next job: each file or directory made on
//! the host costs the host's filesystem an inode's search (on an ext4 without a
//! journal, past every inode freed in the last minutes: BENCHMARKS.md).

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

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
    size: u64,
    kept: bool,
    /// The size of the disk to make ahead for the next job once this one has started
    /// (0: none), so that making it does not contend with this job's start.
    next: std::sync::atomic::AtomicU64,
}

/// Where a runway before images had no name kept a workspace's image: beside it
/// (`runway-job-XXXX.disk`); a leftover of one is removed with its workspace.
fn image_of(workspace: &Path) -> PathBuf {
    let mut name = workspace.as_os_str().to_os_string();
    name.push(".disk");
    PathBuf::from(name)
}

/// How many more job disks this process will attach (`u64::MAX`: no end in sight, a
/// server's or a worker's).
static EXPECTED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(u64::MAX);

/// This process will attach `n` more job disks (a one-shot run's jobs): one is made
/// ahead only while another job is to come, and none is made for nobody (a disk made
/// ahead costs its making and its release, and the process waits for both at exit).
pub fn expect(n: u64) {
    EXPECTED.store(n, std::sync::atomic::Ordering::SeqCst);
}

impl JobDisk {
    /// Puts a filesystem of `size` bytes on `dir` (an empty directory): one made ahead
    /// when there is one, else made now; another is made ahead, when another job is to
    /// come ([`expect`]), once this one has [`started`](JobDisk::started).
    pub fn attach(dir: &Path, size: u64) -> io::Result<JobDisk> {
        let disk = JobDisk {
            mount: dir.to_path_buf(),
            size,
            kept: false,
            next: std::sync::atomic::AtomicU64::new(0),
        };
        let ready = Pool::take_or_wait(size)?;
        let moved = ready.is_some_and(|spot| {
            let ok = move_mount(&spot, dir).is_ok();
            if ok {
                Pool::image_moved(&spot, dir);
            } else {
                release(&spot);
                Pool::image_released(&spot);
            }
            Pool::vacated(spot);
            ok
        });
        if !moved {
            make(dir, size)?;
        }
        use std::sync::atomic::Ordering::SeqCst;
        let another = EXPECTED
            .fetch_update(SeqCst, SeqCst, |e| {
                (e != u64::MAX).then(|| e.saturating_sub(1))
            })
            .map_or(true, |before| before > 1);
        if another {
            disk.next.store(size, SeqCst);
        }
        Ok(disk)
    }

    /// The job on this disk has started: the next job's disk is made ahead now.
    pub fn started(&self) {
        let size = self.next.swap(0, std::sync::atomic::Ordering::SeqCst);
        if size > 0 {
            Pool::refill(size);
        }
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
        // SAFETY: `c` is a NUL-terminated path that outlives the call; `st` is ours to fill.
        if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
            return false;
        }
        let free = st.f_bavail as u64 * st.f_frsize as u64;
        free < (self.size / 100).min(16 << 20)
    }

    /// Leaves the disk mounted (`--keep-workspace`).
    pub fn keep(mut self) {
        self.kept = true;
        // Its loop device holds the image for as long as it is mounted.
        let _ = Pool::with(|p| p.images.retain(|(at, _)| *at != self.mount));
    }
}

impl Drop for JobDisk {
    fn drop(&mut self) {
        if !self.kept {
            Pool::retire(&self.mount);
        }
        // A job that never started still leaves the next one its disk.
        self.started();
    }
}

/// The directories every workspace has (its `home`, `runway`, `private` and `build`,
/// and its sandbox's layers for the copy-on-write root), made with its disk: on a fresh
/// filesystem each first `mkdir` allocates blocks, and a disk made ahead has that done
/// off the job's path.
const SKELETON: &[&str] = &[
    "home",
    "runway",
    "private",
    "build",
    "sandbox/root",
    "sandbox/upper-0",
    "sandbox/work-0",
];

/// Makes a disk of `size` on `dir` now: the template copied, a loop device, a mount,
/// the [`SKELETON`] (in the template already: only checked).
fn make(dir: &Path, size: u64) -> io::Result<()> {
    mount_new(dir, size)?;
    for d in SKELETON {
        std::fs::create_dir_all(dir.join(d))?;
    }
    // A fresh filesystem's first writes read its allocation maps in: done here, for a
    // disk made ahead off its job's path, by a directory and a file made and removed
    // where the checkout goes.
    let warm = dir.join("build/.runway-warm");
    std::fs::create_dir(&warm)?;
    std::fs::write(warm.join("f"), b"")?;
    std::fs::remove_file(warm.join("f"))?;
    std::fs::remove_dir(&warm)
}

/// The options a job's disk is mounted with (besides `nosuid,nodev`).
const MOUNT_OPTIONS: &str = "nobarrier";

/// The template copied into an image (one a released disk left, else a new one), a
/// loop device, a mount on `dir`.
fn mount_new(dir: &Path, size: u64) -> io::Result<()> {
    let image = match Pool::with(|p| p.take_image(size))? {
        Some(kept) => kept,
        None => match Pool::let_go_image(size) {
            Some(held) => held,
            None => Pool::new_image(size)?,
        },
    };
    if copy_data(&Pool::template(size)?, &image).is_err() {
        // The kept template went (its state directory cleared): made again.
        Pool::with(|p| p.templates.retain(|(s, _)| *s != size))?;
        emptied(&image, size)?;
        copy_data(&Pool::template(size)?, &image)?;
    }
    {
        // Held open until mounted: an autoclear device is cleared at its last close.
        let (dev, _held) = loop_attach(&image)?;
        let (src, target, fstype) = (cstr(&dev)?, cstr(dir)?, CString::new("ext4")?);
        // No barriers: nothing on a job's disk outlives it, so its flushes (a `sync`
        // in the job, the unmount's) need not reach the host's disk. With them, each
        // flush made the host write the image's blocks, which its removal then freed
        // and discarded, waiting on the host's disk for nothing (BENCHMARKS.md).
        let data = CString::new(MOUNT_OPTIONS)?;
        // SAFETY: mount(2) with NUL-terminated strings that outlive the call.
        let r = unsafe {
            libc::mount(
                src.as_ptr(),
                target.as_ptr(),
                fstype.as_ptr(),
                libc::MS_NOSUID | libc::MS_NODEV,
                data.as_ptr().cast(),
            )
        };
        if r != 0 {
            let e = io::Error::last_os_error();
            return Err(io::Error::new(
                e.kind(),
                format!("mounting the job's disk on {}: {e}", dir.display()),
            ));
        }
        Pool::with(|p| {
            p.images.push((
                dir.to_path_buf(),
                Image {
                    file: image,
                    size,
                    dev,
                },
            ))
        })
    }
}

/// A job disk's image: a file with no name (nothing is left of it on the host's disk
/// once runway and the loop device let it go, whatever becomes of runway), held by
/// its loop device while the disk is mounted and by runway to use it again.
struct Image {
    file: File,
    size: u64,
    /// The loop device it was attached to.
    dev: PathBuf,
}

/// `file` emptied (its blocks freed) and of `size` bytes again, all a hole.
fn emptied(file: &File, size: u64) -> io::Result<()> {
    file.set_len(0)?;
    file.set_len(size)
}

const LOOP_GET_STATUS64: libc::c_ulong = 0x4C05;

/// Whether loop device `dev` has let go of `file` (cleared, or attached to another).
fn let_go(dev: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = file.metadata() else {
        return false;
    };
    let Ok(loopdev) = File::open(dev) else {
        return false;
    };
    // SAFETY: LoopInfo64 is plain data; zeroed is valid for the kernel to fill in.
    let mut info: LoopInfo64 = unsafe { std::mem::zeroed() };
    // SAFETY: ioctl(2) with a pointer to a struct of the kernel's layout, ours.
    let r = unsafe { libc::ioctl(loopdev.as_raw_fd(), LOOP_GET_STATUS64, &mut info) };
    // ENXIO: the device is cleared, or being cleared, which the kernel starts only
    // once its queue is drained (and the filesystem on it was gone before): none of
    // its writes reach the file after. Were one to, it would land in free space of
    // the next disk, which a job reads only through that disk's filesystem.
    if r != 0 {
        return io::Error::last_os_error().raw_os_error() == Some(libc::ENXIO);
    }
    (info.inode, info.device) != (m.ino(), m.dev())
}

/// Gives this process a mount namespace of its own (receiving the host's mounts, never
/// sending its own), so that the job disks it mounts go with it, however it ends. Call
/// at start, while the process has one thread; a no-op without the privilege.
pub fn private_mounts() {
    // SAFETY: geteuid(2) cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return;
    }
    let slash = CString::new("/").unwrap_or_default();
    // SAFETY: unshare(2) and mount(2) on this process alone; no memory is shared.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) == 0 {
            libc::mount(
                std::ptr::null(),
                slash.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_SLAVE,
                std::ptr::null(),
            );
        }
    }
}

/// Moves the mount at `from` to `to` (`MS_MOVE`).
fn move_mount(from: &Path, to: &Path) -> io::Result<()> {
    let (f, t) = (cstr(from)?, cstr(to)?);
    // SAFETY: mount(2) with MS_MOVE and two NUL-terminated paths.
    let r = unsafe {
        libc::mount(
            f.as_ptr(),
            t.as_ptr(),
            std::ptr::null(),
            libc::MS_MOVE,
            std::ptr::null(),
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Unmounts a workspace's disk (when it has one) and removes its image: for a job's
/// end, and for what a killed runway left.
pub fn release(workspace: &Path) {
    if let Ok(c) = cstr(workspace) {
        // SAFETY: umount2(2) of a path; MNT_DETACH lets go even while busy, and
        // UMOUNT_NOFOLLOW never follows a link put where the workspace was.
        unsafe {
            libc::umount2(c.as_ptr(), libc::MNT_DETACH | libc::UMOUNT_NOFOLLOW);
        }
    }
    let _ = std::fs::remove_file(image_of(workspace));
}

/// Where templates are kept from one run to the next (a state directory).
static KEPT: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The start of a kept template's name; the size and `.img` follow. (`v2`: made
/// without the blocks reserved for growing the filesystem, 0.2 MB to copy per disk
/// where 4.3 MB were.)
const KEPT_PREFIX: &str = "disk-template-v3-";
/// What every kept template's name starts with, of this version or an older one.
const KEPT_ANY: &str = "disk-template-";

/// Keeps the template images in `dir` (runway's state directory, hidden from jobs), so
/// that a run finds the one an earlier run made instead of running `mkfs.ext4` again.
pub fn keep_templates_in(dir: &Path) {
    *KEPT.lock().unwrap_or_else(|p| p.into_inner()) = Some(dir.to_path_buf());
}

/// Whether `path` is a template runway kept: a regular file (not a link) of this user,
/// writable by nobody else, of `size` bytes.
fn ours(path: &Path, size: u64) -> bool {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid(2) cannot fail.
    let me = unsafe { libc::geteuid() };
    path.symlink_metadata().is_ok_and(|m| {
        m.file_type().is_file() && m.uid() == me && m.mode() & 0o022 == 0 && m.len() == size
    })
}

/// Copies the template at `made` to `kept` whole (a temporary name, then renamed), for
/// the runs after this one; a copy that fails is only not kept.
fn keep(made: &Path, kept: &Path, size: u64) {
    let Some(dir) = kept.parent() else { return };
    // A first run's state directory may not be there yet.
    let _ = std::fs::create_dir_all(dir);
    let tmp = dir.join(format!(".{KEPT_PREFIX}{}-{size}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    use std::os::unix::fs::PermissionsExt;
    if copy_sparse(made, &tmp, size).is_ok()
        && std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600)).is_ok()
        && std::fs::rename(&tmp, kept).is_ok()
    {
        // Templates an older runway kept are not used again.
        for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(KEPT_ANY)
                && name.ends_with(".img")
                && !name.starts_with(KEPT_PREFIX)
            {
                let _ = std::fs::remove_file(e.path());
            }
        }
        return;
    }
    let _ = std::fs::remove_file(&tmp);
}

/// This process's disks made ahead and on their way out, and its templates.
struct Pool {
    dir: tempfile::TempDir,
    /// Per size, the template disks are copied from (the kept one, or this
    /// process's own).
    templates: Vec<(u64, PathBuf)>,
    ready: Vec<(u64, PathBuf)>,
    /// Empty directories of the pool that a disk left (moved onto its workspace, or
    /// released): the next disks' places. Each disk made a directory and removed it,
    /// twice a job, and each of those is an inode allocated on the host's disk (on an
    /// ext4 without a journal, a search past every inode freed in the last minutes:
    /// BENCHMARKS.md).
    spare: Vec<PathBuf>,
    /// Job directories (in the temp dir) that a job's disk was moved out of, empty:
    /// the next jobs' with a disk, for the same reason.
    jobs: Vec<tempfile::TempDir>,
    /// The images of this process's disks, by where each is mounted now.
    images: Vec<(PathBuf, Image)>,
    /// Images their disks left, emptied, for the next disks of their size: each new
    /// image is an inode of the host's disk, for the same reason.
    spare_images: Vec<Image>,
    /// Images of released disks whose loop device had not let go yet (a job's sandbox
    /// still held the mount a moment): used once it has, rather than freed and a new
    /// image made, two inodes of the host's disk a job for a server running its jobs
    /// itself.
    held_images: Vec<Image>,
    /// Threads making or releasing disks.
    busy: usize,
    /// Sizes being made ahead now.
    making: Vec<u64>,
    next: u64,
}

static POOL: Mutex<Option<Pool>> = Mutex::new(None);
static IDLE: std::sync::Condvar = std::sync::Condvar::new();

/// The thread disks are made ahead on, one after another (one is made ahead per size
/// at a time), and the one they are released on: a thread each, kept, where each job
/// started and ended two.
static MAKER: std::sync::LazyLock<crate::lane::Lane> =
    std::sync::LazyLock::new(|| crate::lane::Lane::start("runway-disk+"));
static RELEASER: std::sync::LazyLock<crate::lane::Lane> =
    std::sync::LazyLock::new(|| crate::lane::Lane::start("runway-disk-"));

/// How many empty places for disks a pool keeps (a disk made ahead and the disks of the
/// jobs ending together).
const SPARE_SPOTS: usize = 8;

/// The start of a pool directory's name; the process id follows.
const POOL_PREFIX: &str = "runway-disk-";

impl Pool {
    fn with<T>(f: impl FnOnce(&mut Pool) -> T) -> io::Result<T> {
        let mut g = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if g.is_none() {
            let dir = tempfile::Builder::new()
                .prefix(&format!("{POOL_PREFIX}{}-", std::process::id()))
                .tempdir()?;
            *g = Some(Pool {
                dir,
                templates: Vec::new(),
                ready: Vec::new(),
                spare: Vec::new(),
                jobs: Vec::new(),
                images: Vec::new(),
                spare_images: Vec::new(),
                held_images: Vec::new(),
                busy: 0,
                making: Vec::new(),
                next: 0,
            });
        }
        Ok(f(g.as_mut().expect("made above")))
    }

    /// An empty directory of the pool for a disk: a spare one, or a new one.
    fn spot(&mut self) -> io::Result<PathBuf> {
        if let Some(spot) = self.spare.pop() {
            return Ok(spot);
        }
        self.next += 1;
        let spot = self.dir.path().join(format!("spot-{}", self.next));
        std::fs::create_dir(&spot)?;
        Ok(spot)
    }

    /// The disk on `spot` went (moved or released): the directory is kept for the
    /// next one unless something is still mounted there (or enough are kept).
    fn vacated(spot: PathBuf) {
        use std::os::unix::fs::MetadataExt;
        let kept = Pool::with(|p| {
            let dev = |path: &Path| path.symlink_metadata().map(|m| m.dev()).ok();
            let empty = dev(&spot).is_some() && dev(&spot) == dev(p.dir.path());
            (empty && p.spare.len() < SPARE_SPOTS).then(|| p.spare.push(spot.clone()))
        });
        if !matches!(kept, Ok(Some(()))) {
            let _ = std::fs::remove_dir(&spot);
        }
    }

    /// A new image of `size` bytes, all a hole, in the pool's directory, with no name
    /// (`O_TMPFILE`; on a filesystem without it, named and unlinked at once).
    fn new_image(size: u64) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        let dir = Pool::with(|p| p.dir.path().to_path_buf())?;
        let open = |flags, at: &Path| {
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(flags == 0)
                .custom_flags(flags | libc::O_NOFOLLOW)
                .mode(0o600)
                .open(at)
        };
        let file = match open(libc::O_TMPFILE, &dir) {
            Ok(f) => f,
            Err(_) => {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let at = dir.join(format!("image-{n}"));
                let f = open(0, &at)?;
                std::fs::remove_file(&at)?;
                f
            }
        };
        file.set_len(size)?;
        IMAGES_MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(file)
    }

    /// A spare image of `size` bytes ([`Pool::spare_images`]).
    fn take_image(&mut self, size: u64) -> Option<File> {
        let at = self.spare_images.iter().position(|i| i.size == size)?;
        Some(self.spare_images.swap_remove(at).file)
    }

    /// An image of `size` bytes kept while its loop device held it
    /// ([`Pool::held_images`]) that it has let go of since, emptied.
    fn let_go_image(size: u64) -> Option<File> {
        let held = Pool::with(|p| std::mem::take(&mut p.held_images)).ok()?;
        let mut found = None;
        let mut still = Vec::new();
        for image in held {
            if found.is_some() || image.size != size || !let_go(&image.dev, &image.file) {
                still.push(image);
            } else if emptied(&image.file, size).is_ok() {
                found = Some(image.file);
            }
        }
        let _ = Pool::with(|p| p.held_images.extend(still));
        found
    }

    /// The disk mounted at `from` was moved to `to`.
    fn image_moved(from: &Path, to: &Path) {
        let _ = Pool::with(|p| {
            if let Some((at, _)) = p.images.iter_mut().find(|(at, _)| at == from) {
                *at = to.to_path_buf();
            }
        });
    }

    /// The disk mounted at `spot` was released: its image is kept, emptied, once its
    /// loop device has let go of it (an unmount with a file still open on the disk
    /// leaves the device attached a while: that image is let go instead).
    fn image_released(spot: &Path) {
        Pool::keep_image(Pool::image_at(spot));
    }

    /// The image of the disk that was mounted at `spot`, no longer counted as on it.
    fn image_at(spot: &Path) -> Option<Image> {
        Pool::with(|p| {
            let at = p.images.iter().position(|(at, _)| at == spot)?;
            Some(p.images.swap_remove(at).1)
        })
        .ok()
        .flatten()
    }

    /// `image`, whose disk was released, kept emptied ([`Pool::image_released`]); or
    /// kept as it is until its loop device lets go of it ([`Pool::held_images`]).
    fn keep_image(image: Option<Image>) {
        let Some(image) = image else { return };
        if !let_go(&image.dev, &image.file) {
            let _ = Pool::with(|p| {
                if p.held_images.len() < SPARE_SPOTS {
                    p.held_images.push(image);
                }
            });
            return;
        }
        if emptied(&image.file, image.size).is_err() {
            return;
        }
        let _ = Pool::with(|p| {
            if p.spare_images.len() < SPARE_SPOTS {
                p.spare_images.push(image);
            }
        });
    }

    /// One of the threads counted in `busy` is done ([`shutdown`] waits for them).
    fn idle_one() {
        let _ = Pool::with(|p| p.busy -= 1);
        IDLE.notify_all();
    }

    fn take(&mut self, size: u64) -> Option<PathBuf> {
        let at = self.ready.iter().position(|(s, _)| *s == size)?;
        Some(self.ready.swap_remove(at).1)
    }

    /// A disk of `size` made ahead: the one ready, or the one being made (waited for:
    /// making a second beside it would cost the same and contend with it).
    fn take_or_wait(size: u64) -> io::Result<Option<PathBuf>> {
        Pool::with(|_| ())?;
        let mut g = POOL.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let Some(p) = g.as_mut() else {
                return Ok(None);
            };
            if let Some(spot) = p.take(size) {
                return Ok(Some(spot));
            }
            if !p.making.contains(&size) {
                return Ok(None);
            }
            g = IDLE.wait(g).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// The template image of `size` bytes: made once per process, or once for every
    /// run when a directory keeps it ([`keep_templates_in`]).
    fn template(size: u64) -> io::Result<PathBuf> {
        // One maker at a time: jobs starting together wait for the first's template
        // (they would write the same file).
        static MAKING: Mutex<()> = Mutex::new(());
        let _one = MAKING.lock().unwrap_or_else(|p| p.into_inner());
        let (path, made) = Pool::with(|p| {
            (
                p.dir.path().join(format!("template-{size}.img")),
                p.templates
                    .iter()
                    .find(|(s, _)| *s == size)
                    .map(|(_, t)| t.clone()),
            )
        })?;
        if let Some(made) = made {
            return Ok(made);
        }
        let kept = KEPT
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|d| d.join(format!("{KEPT_PREFIX}{size}.img")));
        let path = match kept {
            // runway's own file (its state directory is hidden from jobs), checked
            // before it is used: a regular file of ours, of the size, not writable by
            // others. Disks are copied from it (it is only ever replaced whole, by a
            // rename).
            Some(k) if ours(&k, size) => k,
            kept => {
                mkfs(&path, size)?;
                if let Some(k) = &kept {
                    keep(&path, k, size);
                }
                path
            }
        };
        Pool::with(|p| p.templates.push((size, path.clone())))?;
        Ok(path)
    }

    /// Makes one disk of `size` ahead, on a thread, unless one is ready or coming.
    fn refill(size: u64) {
        let spot = Pool::with(|p| {
            if p.ready.iter().any(|(s, _)| *s == size) || p.making.contains(&size) {
                return None;
            }
            let spot = p.spot().ok()?;
            p.busy += 1;
            p.making.push(size);
            Some(spot)
        });
        let Ok(Some(spot)) = spot else {
            return;
        };
        MAKER.run(move || {
            let made = make(&spot, size).is_ok();
            if !made {
                release(&spot);
                Pool::image_released(&spot);
            }
            let _ = Pool::with(|p| {
                if made {
                    p.ready.push((size, spot.clone()));
                }
                p.making.retain(|s| *s != size);
                p.busy -= 1;
            });
            if !made {
                Pool::vacated(spot);
            }
            IDLE.notify_all();
        });
    }

    /// Moves a finished job's disk out of its workspace (which is then an empty
    /// directory) and releases it on a thread.
    fn retire(workspace: &Path) {
        let spot = Pool::with(|p| {
            let spot = p.spot().ok()?;
            if move_mount(workspace, &spot).is_err() {
                p.spare.push(spot);
                return None;
            }
            p.busy += 1;
            Some(spot)
        });
        let Ok(Some(spot)) = spot else {
            release(workspace);
            return;
        };
        Pool::image_moved(workspace, &spot);
        // Handed to the holder of a one-shot runway, the disk's teardown happens as the
        // holder exits: undoing the mount here is only its detaching.
        let behind = hold(&spot).is_some_and(|fd| crate::behind::hand_off(fd).is_ok());
        let done = move || {
            release(&spot);
            // The place first: the next disk may want it while the image is emptied.
            let image = Pool::image_at(&spot);
            Pool::vacated(spot);
            Pool::keep_image(image);
            Pool::idle_one();
        };
        if behind {
            done();
        } else {
            RELEASER.run(done);
        }
    }
}

/// A descriptor on the disk mounted at `spot` (runway's own directory), to hand off.
fn hold(spot: &Path) -> Option<std::os::fd::OwnedFd> {
    if !crate::behind::active() {
        return None;
    }
    let c = cstr(spot).ok()?;
    // SAFETY: open(2) of a NUL-terminated path; the descriptor is ours.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    // SAFETY: a descriptor just opened, owned by nothing else.
    (fd >= 0).then(|| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// A job directory for a job with a disk: one a disk left ([`vacated`]), else a new one
/// ([`super::job_dir`]).
pub fn job_dir() -> io::Result<tempfile::TempDir> {
    match Pool::with(|p| p.jobs.pop()) {
        Ok(Some(dir)) => Ok(dir),
        _ => super::job_dir(),
    }
}

/// The job directory `dir`'s disk has been moved out (or released): kept for the next
/// job when it is an empty directory of its parent's filesystem (nothing mounted on it,
/// nothing written under it) and fewer than [`SPARE_SPOTS`] are kept; else removed.
pub fn vacated(dir: tempfile::TempDir) {
    use std::os::unix::fs::MetadataExt;
    let path = dir.path();
    let dev = |p: &Path| {
        p.symlink_metadata()
            .ok()
            .filter(|m| m.is_dir())
            .map(|m| m.dev())
    };
    let empty = dev(path).is_some()
        && dev(path) == path.parent().and_then(dev)
        && std::fs::read_dir(path).is_ok_and(|mut d| d.next().is_none());
    if empty {
        let _ = Pool::with(|p| {
            if p.jobs.len() < SPARE_SPOTS {
                p.jobs.push(dir);
            }
        });
    }
}

/// Starts making a disk of `size` on a thread, for a job about to come (`runway run`
/// does this first, so that the disk is ready when its job has been planned), with the
/// templates kept in `state_dir`.
pub fn make_ahead(state_dir: &Path, size: u64) {
    keep_templates_in(state_dir);
    Pool::refill(size);
}

/// Releases the pools of runway processes that are gone ([`sweep`]) on a thread;
/// [`shutdown`] waits for it.
pub fn sweep_behind() {
    if Pool::with(|p| p.busy += 1).is_err() {
        sweep();
        return;
    }
    std::thread::spawn(|| {
        sweep();
        Pool::idle_one();
    });
}

/// Waits for the disks being made or released; then the pool, if any.
fn settled() -> std::sync::MutexGuard<'static, Option<Pool>> {
    let mut g = POOL.lock().unwrap_or_else(|p| p.into_inner());
    while g.as_ref().is_some_and(|p| p.busy > 0) {
        g = IDLE.wait(g).unwrap_or_else(|p| p.into_inner());
    }
    g
}

/// Images this process has made for its disks (each an inode of the host's disk).
static IMAGES_MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// How many images this process has made for its disks, rather than used again.
pub fn images_made() -> u64 {
    IMAGES_MADE.load(std::sync::atomic::Ordering::Relaxed)
}

/// How many released disks' images are kept for the next disks, once the disks being
/// made or released are.
pub fn kept_images() -> usize {
    settled().as_ref().map_or(0, |p| p.spare_images.len())
}

/// Waits for the disks being made or released, releases the ones made ahead and
/// removes this process's pool: call before runway exits.
pub fn shutdown() {
    let mut g = settled();
    if let Some(p) = g.take() {
        for (_, spot) in &p.ready {
            release(spot);
        }
        drop(p.dir);
    }
}

/// What a directory in the temp dir named after a runway process is, and that
/// process's id: a pool of disks (`runway-disk-PID-…`), or a job directory
/// (`runway-job-PID-…`, [`super::job_dir`]; one named before job directories carried
/// their process's id has no `-` after the prefix and is never taken for one).
fn left_by(name: &str) -> Option<(bool, i32)> {
    let (pool, rest) = match name.strip_prefix(POOL_PREFIX) {
        Some(rest) => (true, rest),
        None => (false, name.strip_prefix(super::JOB_DIR_PREFIX)?),
    };
    let (pid, tail) = rest.split_once('-')?;
    (!tail.is_empty()).then_some(())?;
    Some((pool, pid.parse().ok()?))
}

/// Releases the pools of runway processes that are gone (killed before [`shutdown`]):
/// their disks made ahead or on their way out; and removes those processes' job
/// directories (their workspaces, whose files their jobs, ended with them, no longer
/// use). Returns how many pools and job directories.
pub fn sweep() -> usize {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return 0;
    };
    let mut swept = 0;
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pool, pid)) = left_by(&name) else {
            continue;
        };
        // SAFETY: kill(2) with signal 0 only asks whether the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH);
        // Only this user's own real directories: /tmp is everyone's, and a link or
        // another user's directory named like a pool is never acted on.
        use std::os::unix::fs::MetadataExt;
        // SAFETY: geteuid(2) cannot fail.
        let me = unsafe { libc::geteuid() };
        let mine = e
            .path()
            .symlink_metadata()
            .is_ok_and(|m| m.is_dir() && m.uid() == me);
        if alive || !mine || pid == std::process::id() as i32 {
            continue;
        }
        for d in std::fs::read_dir(e.path())
            .into_iter()
            .flatten()
            .flatten()
            .filter(|_| pool)
        {
            let p = d.path();
            if p.is_dir() {
                release(&p);
            }
        }
        // What a job left there (with `--disk none`, its files) is removed without
        // following a link in it.
        let _ = std::fs::remove_dir_all(e.path());
        swept += 1;
    }
    swept
}

fn cstr(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::ErrorKind::InvalidInput.into())
}

/// Makes an ext4 filesystem of `size` bytes in a new sparse file at `path`, with the
/// [`SKELETON`]'s directories in it (made once here, not on every job's fresh disk).
fn mkfs(path: &Path, size: u64) -> io::Result<()> {
    File::create(path)?.set_len(size)?;
    let skeleton = path.with_extension("skeleton");
    let _ = std::fs::remove_dir_all(&skeleton);
    for d in SKELETON {
        std::fs::create_dir_all(skeleton.join(d))?;
    }
    use std::os::unix::fs::PermissionsExt;
    // The disk's top directory is made as this one is.
    std::fs::set_permissions(&skeleton, std::fs::Permissions::from_mode(0o755))?;
    let made = mkfs_from(path, &skeleton);
    let _ = std::fs::remove_dir_all(&skeleton);
    made
}

/// `mkfs.ext4` of the file at `path`, its files those of `from`.
fn mkfs_from(path: &Path, from: &Path) -> io::Result<()> {
    let out = std::process::Command::new("mkfs.ext4")
        .args([
            "-q",
            "-F",
            "-m",
            "0",
            "-O",
            // No journal (a job's disk does not outlive a crash) and no blocks kept
            // for growing it (4 MB of reserved descriptors copied into every disk).
            "^has_journal,^resize_inode",
            "-E",
            "lazy_itable_init=1,lazy_journal_init=1,nodiscard,root_owner=0:0",
            "-d",
        ])
        .arg(from)
        .arg(path)
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
    Ok(())
}

/// Copies only the data of sparse `from` into a new file `to` of `size` bytes.
fn copy_sparse(from: &Path, to: &Path, size: u64) -> io::Result<()> {
    let dst = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(to)?;
    dst.set_len(size)?;
    copy_data(from, &dst)
}

/// Copies only the data of sparse `from` into `dst` (all a hole, as long), at the
/// same offsets.
fn copy_data(from: &Path, dst: &File) -> io::Result<()> {
    let src = File::open(from)?;
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

/// Attaches `backing` (open for reading and writing) to a free loop device (cleared
/// once unmounted and closed); its path and an open descriptor of it, to hold until it
/// is mounted.
fn loop_attach(backing: &File) -> io::Result<(PathBuf, File)> {
    let control = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| io::Error::new(e.kind(), format!("/dev/loop-control: {e}")))?;
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
    /// Which names in the temp dir are a runway process's, and which process's.
    #[test]
    fn leftovers_are_known_by_their_process_id() {
        assert_eq!(left_by("runway-disk-42-abc"), Some((true, 42)));
        assert_eq!(left_by("runway-job-42-abc"), Some((false, 42)));
        for not in [
            "runway-job-42",
            "runway-job-42-",
            "runway-job-abc12",
            "runway-job-x-abc",
            "runway-disk-",
            "runway-jobs-42-abc",
            "other-42-abc",
        ] {
            assert_eq!(left_by(not), None, "{not}");
        }
    }

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
