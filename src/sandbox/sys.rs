//! Carrying out a [`Layout`] with system calls, between `fork` and `exec` of the job's
//! shell. Everything the child needs (C strings, the seccomp program) is built before
//! the fork: a forked child of a threaded process may not allocate.
//!
//! The processes, from runway down:
//! - the **keeper** (runway's child, in runway's PID namespace and the job's process
//!   group): clones the sandbox's first process into new namespaces, ignores `SIGTERM`
//!   (so a job's grace period is the shell's), waits, and exits with the shell's status.
//!   It dies with runway (`PR_SET_PDEATHSIG`).
//! - **init** (PID 1 of the new PID namespace): mounts the layout, moves into the new
//!   root, starts the shell, reaps orphans, and exits with the shell's status. When it
//!   exits the kernel kills every process left in the namespace: `setsid` daemons,
//!   double forks, loops that ignore `SIGTERM`. It dies with the keeper.
//! - the **shell**: drops the capabilities that reach past the sandbox, sets
//!   the seccomp filter, and returns to `exec` bash.
//!
//! A failed mount is reported through a pipe of our own ([`SetupReport`]): the index of
//! the step and `errno`.

use std::ffi::CString;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

use super::{Layout, SandboxError, Step, seccomp};

/// One step as the child runs it.
enum Op {
    Mount {
        src: CString,
        target: CString,
        fstype: CString,
        flags: libc::c_ulong,
        data: Option<CString>,
        optional: bool,
        /// A bind's flags, set by a remount after it (binds keep the source's).
        remount: libc::c_ulong,
    },
    ReadOnly {
        target: CString,
    },
    Mkdir(CString),
    File(CString),
    Symlink {
        to: CString,
        link: CString,
    },
}

/// Everything the child needs, built before the fork.
struct Prepared {
    ops: Vec<Op>,
    root: CString,
    cwd: CString,
    dot: CString,
    slash: CString,
    network: bool,
    filter: &'static [libc::sock_filter],
    /// The job's `cgroup.procs` files, joined by the keeper before anything else.
    cgroups: Vec<libc::c_int>,
    /// The write end of the report pipe (the parent's copy is closed after the spawn).
    report: libc::c_int,
}

// SAFETY: `sock_filter` is plain data; nothing here is shared mutably.
unsafe impl Sync for Prepared {}
// SAFETY: as for `Sync`: plain data and descriptor numbers, moved whole.
unsafe impl Send for Prepared {}

/// The pipe on which init reports a failed step; EOF without a word means the shell
/// started in its sandbox.
pub struct SetupReport {
    read: io::PipeReader,
    write: Option<OwnedFd>,
    steps: Vec<String>,
}

impl SetupReport {
    /// Waits for init's word (EOF once every copy of the write end is closed: the
    /// keeper's and init's after their setup, the shell's at exec). On success, init's
    /// process id as runway sees it (the keeper says it), when it was said.
    pub fn wait(mut self) -> Result<Option<i32>, SandboxError> {
        // Our copy of the write end would keep the pipe open forever.
        self.write = None;
        let mut buf = Vec::new();
        let _ = self.read.read_to_end(&mut buf);
        let mut init = None;
        for msg in buf.chunks_exact(8) {
            let step = u32::from_ne_bytes(msg[0..4].try_into().unwrap_or_default()) as usize;
            let value = i32::from_ne_bytes(msg[4..8].try_into().unwrap_or_default());
            if step == INIT_PID {
                init = Some(value);
            } else {
                return Err(self.failed(step, value));
            }
        }
        Ok(init)
    }

    fn failed(&self, step: usize, errno: i32) -> SandboxError {
        let step = match step {
            s if s < self.steps.len() => self.steps[s].clone(),
            CLONE => "making the job's namespaces (mount, pid, ipc, uts)".into(),
            PIVOT => "making the overlay the root (pivot_root)".into(),
            LOOPBACK => "bringing up loopback".into(),
            CGROUP => "joining the job's cgroup".into(),
            _ => "starting the sandbox".into(),
        };
        SandboxError::Step {
            step,
            error: io::Error::from_raw_os_error(errno),
        }
    }
}

const CLONE: usize = 1_000_000;
const PIVOT: usize = 1_000_001;
const LOOPBACK: usize = 1_000_002;
const CGROUP: usize = 1_000_004;
/// Not a failure: the keeper's word of init's process id.
const INIT_PID: usize = 2_000_000;

fn c(p: &Path) -> Result<CString, SandboxError> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| SandboxError::Path(p.to_path_buf()))
}

fn inside(root: &Path, p: &Path) -> Result<CString, SandboxError> {
    c(&root.join(p.strip_prefix("/").unwrap_or(p)))
}

fn compile(layout: &Layout) -> Result<Vec<Op>, SandboxError> {
    let r = &layout.root;
    let cs = |s: &str| CString::new(s).unwrap_or_default();
    layout
        .steps
        .iter()
        .map(|s| {
            Ok(match s {
                Step::Overlay {
                    target,
                    lower,
                    upper,
                    work,
                } => Op::Mount {
                    src: cs("overlay"),
                    target: inside(r, target)?,
                    fstype: cs("overlay"),
                    flags: 0,
                    data: Some(cs(&format!(
                        "lowerdir={},upperdir={},workdir={}",
                        lower.display(),
                        upper.display(),
                        work.display()
                    ))),
                    optional: false,
                    remount: 0,
                },
                Step::Fresh {
                    fstype,
                    target,
                    data,
                    readonly,
                } => Op::Mount {
                    src: cs(fstype),
                    target: inside(r, target)?,
                    fstype: cs(fstype),
                    // /dev's tmpfs holds device binds and devpts's ptmx is a device.
                    flags: libc::MS_NOSUID
                        | if matches!(*fstype, "devpts")
                            || (*fstype == "tmpfs" && target == Path::new("/dev"))
                        {
                            0
                        } else {
                            libc::MS_NODEV
                        }
                        | if *readonly { libc::MS_RDONLY } else { 0 }
                        | if matches!(*fstype, "proc" | "sysfs") {
                            libc::MS_NOEXEC
                        } else {
                            0
                        },
                    data: (!data.is_empty()).then(|| cs(data)),
                    optional: false,
                    remount: 0,
                },
                Step::Bind {
                    src,
                    target,
                    optional,
                } => Op::Mount {
                    src: c(src)?,
                    target: inside(r, target)?,
                    fstype: cs(""),
                    flags: libc::MS_BIND,
                    data: None,
                    optional: *optional,
                    // nosuid always; nodev too, except for the device nodes bound from
                    // the host's /dev (null, zero, …): nothing in a workspace, a
                    // checkout or a bundle can be a usable device.
                    remount: libc::MS_BIND
                        | libc::MS_REMOUNT
                        | libc::MS_NOSUID
                        | if src.starts_with("/dev/") {
                            0
                        } else {
                            libc::MS_NODEV
                        },
                },
                Step::Cover(target) => Op::Mount {
                    src: cs("tmpfs"),
                    target: inside(r, target)?,
                    fstype: cs("tmpfs"),
                    flags: libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                    data: Some(cs("mode=755,size=64k")),
                    optional: true,
                    remount: 0,
                },
                Step::ReadOnly { target } => Op::ReadOnly {
                    target: inside(r, target)?,
                },
                Step::Mkdir(p) => Op::Mkdir(inside(r, p)?),
                Step::File(p) => Op::File(inside(r, p)?),
                Step::Symlink { to, link } => Op::Symlink {
                    to: c(to)?,
                    link: inside(r, link)?,
                },
            })
        })
        .collect()
}

/// Arranges for `cmd` to start in the sandbox `layout` describes.
pub fn enclose(
    cmd: &mut Command,
    layout: &Layout,
    network: bool,
    cgroups: Vec<libc::c_int>,
) -> Result<SetupReport, SandboxError> {
    let (read, write) = io::pipe()?;
    let write = OwnedFd::from(write);
    let prepared = std::sync::Arc::new(Prepared {
        ops: compile(layout)?,
        root: c(&layout.root)?,
        cwd: c(&layout.cwd)?,
        dot: CString::new(".").unwrap_or_default(),
        slash: CString::new("/").unwrap_or_default(),
        network,
        filter: seccomp::filter(),
        cgroups,
        report: write.as_raw_fd(),
    });
    let steps = layout.steps.iter().map(|s| s.to_string()).collect();
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared
    // above; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || enter(&prepared));
    }
    Ok(SetupReport {
        read,
        write: Some(write),
        steps,
    })
}

/// The namespaces init is cloned into.
fn namespaces(network: bool) -> libc::c_int {
    libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | if network { 0 } else { libc::CLONE_NEWNET }
}

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// Reports that step `step` failed with `err`.
fn report(p: &Prepared, step: usize, err: i32) {
    let mut msg = [0u8; 8];
    msg[..4].copy_from_slice(&(step as u32).to_ne_bytes());
    msg[4..].copy_from_slice(&err.to_ne_bytes());
    // SAFETY: write(2) of a stack buffer to our own pipe.
    unsafe {
        libc::write(p.report, msg.as_ptr().cast(), msg.len());
    }
}

/// Reports step `step` failed with `err`, then ends this process.
unsafe fn fail(p: &Prepared, step: usize, err: i32) -> ! {
    report(p, step, err);
    // SAFETY: `_exit` ends this forked process at once; nothing of it is used after.
    unsafe { libc::_exit(125) }
}

/// Closes every descriptor: the keeper and init hold no pipe of the job's, so the job's
/// output ends when the shell's does and `spawn` returns once the shell execs.
unsafe fn close_all() {
    // SAFETY: close_range(2) on this process's own descriptors; the caller (the forked
    // keeper or init) holds no Rust value that owns one of them afterwards.
    unsafe {
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
    }
}

/// Waits for `pid`, reaping any other child on the way; returns its exit status as a
/// shell reports it (128 + signal when killed).
unsafe fn wait_for(pid: libc::pid_t) -> i32 {
    loop {
        let mut status = 0;
        // SAFETY: waitpid(2) writes only into `status`, ours.
        let got = unsafe { libc::waitpid(-1, &mut status, 0) };
        if got == pid {
            if libc::WIFEXITED(status) {
                return libc::WEXITSTATUS(status);
            }
            if libc::WIFSIGNALED(status) {
                return 128 + libc::WTERMSIG(status);
            }
        } else if got < 0 && errno() != libc::EINTR {
            return 127;
        }
    }
}

/// Runs in the child between fork and exec (see the module's header).
fn enter(p: &Prepared) -> io::Result<()> {
    // SAFETY: raw clone without glibc's fork handlers (a forked child of a threaded
    // process must not take their locks); the child gets a copy of the stack.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if let Err(e) = super::cgroup::join(&p.cgroups) {
            let e = e.raw_os_error().unwrap_or(libc::EIO);
            report(p, CGROUP, e);
            return Err(io::Error::from_raw_os_error(e));
        }
        let flags = namespaces(p.network) as libc::c_ulong | libc::SIGCHLD as libc::c_ulong;
        let init = libc::syscall(libc::SYS_clone, flags, 0usize, 0usize, 0usize, 0usize);
        if init < 0 {
            let e = errno();
            report(p, CLONE, e);
            return Err(io::Error::from_raw_os_error(e));
        }
        if init > 0 {
            // The keeper: says who init is (runway enters its mount namespace for the
            // job's caches), then waits.
            report(p, INIT_PID, init as i32);
            libc::signal(libc::SIGTERM, libc::SIG_IGN);
            libc::signal(libc::SIGINT, libc::SIG_IGN);
            libc::signal(libc::SIGHUP, libc::SIG_IGN);
            close_all();
            libc::_exit(wait_for(init as libc::pid_t));
        }
        // Init.
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        build_root(p);
        let shell = libc::syscall(
            libc::SYS_clone,
            libc::SIGCHLD as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        );
        if shell < 0 {
            fail(p, CLONE, errno());
        }
        if shell > 0 {
            close_all();
            // Its memory is runway's: nobody inside may read it.
            libc::prctl(libc::PR_SET_DUMPABLE, 0);
            libc::_exit(wait_for(shell as libc::pid_t));
        }
        // The shell.
        if libc::chdir(p.cwd.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        drop_privileges(p.filter)
    }
}

/// Mounts the layout and moves into it (init, PID 1).
unsafe fn build_root(p: &Prepared) {
    // SAFETY: raw mount and chdir calls in init, a forked single-threaded process in
    // its own mount namespace; every pointer is a CString of `p`, which outlives them.
    unsafe {
        let none = std::ptr::null::<libc::c_char>();
        // Nothing mounted here propagates back to the host.
        if libc::mount(
            none,
            p.slash.as_ptr(),
            none,
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            fail(p, CLONE, errno());
        }
        for (i, op) in p.ops.iter().enumerate() {
            let ok = match op {
                Op::Mount {
                    src,
                    target,
                    fstype,
                    flags,
                    data,
                    optional,
                    remount,
                } => {
                    if *optional && libc::access(target.as_ptr(), libc::F_OK) != 0 {
                        continue;
                    }
                    let data = data
                        .as_ref()
                        .map_or(std::ptr::null(), |d| d.as_ptr().cast());
                    let r =
                        libc::mount(src.as_ptr(), target.as_ptr(), fstype.as_ptr(), *flags, data);
                    r == 0
                        && (*remount == 0
                            || libc::mount(none, target.as_ptr(), none, *remount, std::ptr::null())
                                == 0)
                }
                Op::ReadOnly { target } => {
                    if libc::access(target.as_ptr(), libc::F_OK) != 0 {
                        continue;
                    }
                    libc::mount(
                        target.as_ptr(),
                        target.as_ptr(),
                        none,
                        libc::MS_BIND | libc::MS_REC,
                        std::ptr::null(),
                    ) == 0
                        && libc::mount(
                            none,
                            target.as_ptr(),
                            none,
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY | libc::MS_NOSUID,
                            std::ptr::null(),
                        ) == 0
                }
                Op::Mkdir(path) => {
                    libc::mkdir(path.as_ptr(), 0o755) == 0 || errno() == libc::EEXIST
                }
                Op::File(path) => {
                    let fd = libc::open(
                        path.as_ptr(),
                        libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC,
                        0o644,
                    );
                    if fd >= 0 {
                        libc::close(fd);
                    }
                    fd >= 0
                }
                Op::Symlink { to, link } => {
                    libc::symlink(to.as_ptr(), link.as_ptr()) == 0 || errno() == libc::EEXIST
                }
            };
            if !ok {
                fail(p, i, errno());
            }
        }
        // The overlay becomes `/`; the host's tree is detached from this namespace.
        if libc::chdir(p.root.as_ptr()) != 0
            || libc::syscall(libc::SYS_pivot_root, p.dot.as_ptr(), p.dot.as_ptr()) != 0
            || libc::umount2(p.dot.as_ptr(), libc::MNT_DETACH) != 0
            || libc::chdir(p.slash.as_ptr()) != 0
        {
            fail(p, PIVOT, errno());
        }
        if !p.network && !loopback_up() {
            fail(p, LOOPBACK, errno());
        }
    }
}

/// Brings up `lo` in a fresh network namespace.
unsafe fn loopback_up() -> bool {
    // SAFETY: a socket and an ioctl on a zeroed `ifreq` we own; the socket is closed.
    unsafe {
        let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if s < 0 {
            return false;
        }
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let ok = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) == 0 && {
            req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            libc::ioctl(s, libc::SIOCSIFFLAGS, &req) == 0
        };
        libc::close(s);
        ok
    }
}

/// The capabilities a job keeps (Docker's default set without `MKNOD`, `NET_RAW`):
/// enough to install packages, change owners, switch users and bind low ports.
const KEEP: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL (only inside its PID namespace)
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    18, // SYS_CHROOT
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// The shell's last steps before exec: the seccomp filter (installed while the shell
/// still has CAP_SYS_ADMIN, so without `no_new_privs`: a setuid `sudo` inside gives back
/// the job's own reduced root, never more, since the bounding set is dropped for good),
/// then fewer capabilities.
unsafe fn drop_privileges(filter: &[libc::sock_filter]) -> io::Result<()> {
    // SAFETY: prctl and capset on this (forked) process only; `prog` points into
    // `filter`, which outlives the calls.
    unsafe {
        let prog = libc::sock_fprog {
            len: filter.len() as u16,
            filter: filter.as_ptr() as *mut libc::sock_filter,
        };
        if libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &prog as *const _,
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        let mut keep: u64 = 0;
        for cap in KEEP {
            keep |= 1 << cap;
        }
        for cap in 0..64u32 {
            if keep & (1 << cap) == 0
                && libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) != 0
                && errno() != libc::EINVAL
            {
                return Err(io::Error::last_os_error());
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct Header {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct Data {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = Header {
            version: 0x2008_0522,
            pid: 0,
        };
        let half = |shift: u32| {
            let v = (keep >> shift) as u32;
            Data {
                effective: v,
                permitted: v,
                inheritable: 0,
            }
        };
        let data = [half(0), half(32)];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// The mount namespace of process `pid` (a job's init), held open: the namespace, the
/// job's view of its files, lives as long as this descriptor, even after the job's
/// processes are gone. Refused when it is runway's own (a process id reused).
pub fn mount_namespace(pid: i32) -> io::Result<OwnedFd> {
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::File::open(format!("/proc/{pid}/ns/mnt"))?;
    let ours = std::fs::metadata("/proc/self/ns/mnt")?;
    let theirs = f.metadata()?;
    if (theirs.dev(), theirs.ino()) == (ours.dev(), ours.ino()) {
        return Err(io::Error::other(
            "the job's init is gone (its process id names a process on the host)",
        ));
    }
    Ok(OwnedFd::from(f))
}

/// What a helper process needs between fork and exec, built before the fork.
struct Helper {
    mnt: OwnedFd,
    exe: OwnedFd,
    argv: Vec<CString>,
    filter: &'static [libc::sock_filter],
    slash: CString,
    empty: CString,
}

// SAFETY: plain data and descriptors, read only by the forked child.
unsafe impl Sync for Helper {}
// SAFETY: as for `Sync`: owned data and descriptors, moved whole.
unsafe impl Send for Helper {}

/// Arranges for `cmd` to run runway's own binary (`exe`, opened on the host before the
/// fork) with `args` inside the mount namespace `mnt`: it sees the job's files exactly as
/// the job does, with the job's reduced capabilities and seccomp filter, and a clean
/// environment. The binary is run from its descriptor (`execveat`), never by a path the
/// job's root could put another program at. `cmd`'s own program and environment are not
/// used; its stdio and descriptors are.
pub fn helper(
    cmd: &mut Command,
    mnt: &OwnedFd,
    exe: OwnedFd,
    args: &[String],
) -> Result<(), SandboxError> {
    let mut argv = vec![CString::new("runway").unwrap_or_default()];
    for a in args {
        argv.push(CString::new(a.as_bytes()).map_err(|_| {
            SandboxError::Io(io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
        })?);
    }
    let h = std::sync::Arc::new(Helper {
        mnt: mnt.try_clone()?,
        exe,
        argv,
        filter: seccomp::filter(),
        slash: CString::new("/").unwrap_or_default(),
        empty: CString::default(),
    });
    // SAFETY: the closure makes only async-signal-safe system calls on data prepared
    // above (the argv pointer array is built on the stack); it allocates nothing.
    unsafe {
        cmd.pre_exec(move || enter_helper(&h));
    }
    Ok(())
}

/// The helper's child, between fork and exec.
fn enter_helper(h: &Helper) -> io::Result<()> {
    // SAFETY: system calls on descriptors and C strings the parent prepared.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::setns(h.mnt.as_raw_fd(), libc::CLONE_NEWNS) != 0
            || libc::chdir(h.slash.as_ptr()) != 0
        {
            return Err(io::Error::last_os_error());
        }
        drop_privileges(h.filter)?;
        let mut ptrs: [*const libc::c_char; 16] = [std::ptr::null(); 16];
        for (i, a) in h.argv.iter().take(15).enumerate() {
            ptrs[i] = a.as_ptr();
        }
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            h.exe.as_raw_fd(),
            h.empty.as_ptr(),
            ptrs.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        Err(io::Error::last_os_error())
    }
}
