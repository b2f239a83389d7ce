//! Carrying out a [`Layout`] with system calls, between `fork` and `exec` of the job's
//! shell. Everything the child needs (C strings, the seccomp program) is built before
//! the fork: a forked child of a threaded process may not allocate.
//!
//! The processes, from runway down:
//! - **init** (runway's child, the job's process group's leader, and PID 1 of a new PID
//!   namespace: the thread that spawns it makes one for its children first,
//!   [`spawn_as_init`]): takes new mount, IPC, UTS (and network) namespaces, mounts
//!   the layout, moves into the new root, starts the shell, reaps orphans, and exits
//!   with the shell's status. As its namespace's init it gets no signal it has no
//!   handler for (its handlers are reset first), so a job's grace period is the
//!   shell's; when it exits the kernel kills every process left in the namespace:
//!   `setsid` daemons, double forks, loops that ignore `SIGTERM`. It dies with runway
//!   (`PR_SET_PDEATHSIG`).
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
pub struct Prepared {
    ops: Vec<Op>,
    root: CString,
    cwd: CString,
    dot: CString,
    slash: CString,
    network: bool,
    filter: &'static [libc::sock_filter],
    /// The job's `cgroup.procs` files, joined by init before anything else.
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
    /// Waits for init's word (EOF once every copy of the write end is closed: init's
    /// after its setup, the shell's at exec).
    pub fn wait(mut self) -> Result<(), SandboxError> {
        // Our copy of the write end would keep the pipe open forever.
        self.write = None;
        let mut buf = Vec::new();
        let _ = self.read.read_to_end(&mut buf);
        match buf.chunks_exact(8).next() {
            Some(msg) => {
                let step = u32::from_ne_bytes(msg[0..4].try_into().unwrap_or_default());
                let errno = i32::from_ne_bytes(msg[4..8].try_into().unwrap_or_default());
                Err(self.failed(step as usize, errno))
            }
            None => Ok(()),
        }
    }

    fn failed(&self, step: usize, errno: i32) -> SandboxError {
        let step = match step {
            s if s < self.steps.len() => self.steps[s].clone(),
            CLONE => NAMESPACES.into(),
            PIVOT => "making the overlay the root (pivot_root)".into(),
            LOOPBACK => "bringing up loopback".into(),
            CGROUP => "joining the job's cgroup".into(),
            SHELL => "starting the job's shell (its descriptors, capabilities, seccomp)".into(),
            EXEC => "starting bash in the sandbox (exec)".into(),
            _ => "starting the sandbox".into(),
        };
        SandboxError::Step {
            step,
            error: io::Error::from_raw_os_error(errno),
        }
    }
}

const CLONE: usize = 1_000_000;
/// The step [`CLONE`] names.
pub const NAMESPACES: &str = "making the job's namespaces (mount, pid, ipc, uts)";
const PIVOT: usize = 1_000_001;
const LOOPBACK: usize = 1_000_002;
const CGROUP: usize = 1_000_004;
const SHELL: usize = 1_000_005;
const EXEC: usize = 1_000_006;

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

impl Prepared {
    /// The sandbox `layout` describes, as init will make it, and the pipe on which
    /// init will report a failed step.
    pub fn new(
        layout: &Layout,
        network: bool,
        cgroups: Vec<libc::c_int>,
    ) -> Result<(Prepared, SetupReport), SandboxError> {
        let (read, write) = io::pipe()?;
        let write = OwnedFd::from(write);
        let prepared = Prepared {
            ops: compile(layout)?,
            root: c(&layout.root)?,
            cwd: c(&layout.cwd)?,
            dot: CString::new(".").unwrap_or_default(),
            slash: CString::new("/").unwrap_or_default(),
            network,
            filter: seccomp::filter(),
            cgroups,
            report: write.as_raw_fd(),
        };
        let steps = layout.steps.iter().map(|s| s.to_string()).collect();
        let report = SetupReport {
            read,
            write: Some(write),
            steps,
        };
        Ok((prepared, report))
    }

    /// The descriptors init needs that are not in the layout: the report pipe's write
    /// end, then the job's `cgroup.procs` files. Sent along with [`Prepared::encode`].
    pub fn descriptors(&self) -> Vec<libc::c_int> {
        std::iter::once(self.report)
            .chain(self.cgroups.iter().copied())
            .collect()
    }

    /// The layout as bytes for the spawner ([`super::spawner`]), which runs in another
    /// process: [`Prepared::decode`] there gives the same steps back.
    pub fn encode(&self, out: &mut Wire) {
        out.cstr(&self.root);
        out.cstr(&self.cwd);
        out.num(self.network as u64);
        out.num(self.cgroups.len() as u64);
        out.num(self.ops.len() as u64);
        for op in &self.ops {
            match op {
                Op::Mount {
                    src,
                    target,
                    fstype,
                    flags,
                    data,
                    optional,
                    remount,
                } => {
                    out.num(0);
                    out.cstr(src);
                    out.cstr(target);
                    out.cstr(fstype);
                    out.num(*flags);
                    match data {
                        Some(d) => {
                            out.num(1);
                            out.cstr(d);
                        }
                        None => out.num(0),
                    }
                    out.num(*optional as u64);
                    out.num(*remount);
                }
                Op::ReadOnly { target } => {
                    out.num(1);
                    out.cstr(target);
                }
                Op::Mkdir(p) => {
                    out.num(2);
                    out.cstr(p);
                }
                Op::File(p) => {
                    out.num(3);
                    out.cstr(p);
                }
                Op::Symlink { to, link } => {
                    out.num(4);
                    out.cstr(to);
                    out.cstr(link);
                }
            }
        }
    }

    /// What [`Prepared::encode`] wrote, with the descriptors that came with it (as
    /// [`Prepared::descriptors`] listed them, numbered in this process). None when the
    /// bytes or the count of descriptors do not match.
    pub fn decode(input: &mut Unwire, fds: &[libc::c_int]) -> Option<Prepared> {
        let root = input.cstring()?;
        let cwd = input.cstring()?;
        let network = input.num()? != 0;
        let cgroups = input.num()? as usize;
        let (&report, cgroup_fds) = fds.split_first()?;
        if cgroup_fds.len() != cgroups {
            return None;
        }
        let count = input.num()?;
        let mut ops = Vec::new();
        for _ in 0..count {
            ops.push(match input.num()? {
                0 => Op::Mount {
                    src: input.cstring()?,
                    target: input.cstring()?,
                    fstype: input.cstring()?,
                    flags: input.num()? as libc::c_ulong,
                    data: match input.num()? {
                        0 => None,
                        _ => Some(input.cstring()?),
                    },
                    optional: input.num()? != 0,
                    remount: input.num()? as libc::c_ulong,
                },
                1 => Op::ReadOnly {
                    target: input.cstring()?,
                },
                2 => Op::Mkdir(input.cstring()?),
                3 => Op::File(input.cstring()?),
                4 => Op::Symlink {
                    to: input.cstring()?,
                    link: input.cstring()?,
                },
                _ => return None,
            });
        }
        Some(Prepared {
            ops,
            root,
            cwd,
            dot: CString::new(".").unwrap_or_default(),
            slash: CString::new("/").unwrap_or_default(),
            network,
            filter: seccomp::filter(),
            cgroups: cgroup_fds.to_vec(),
            report,
        })
    }
}

/// Bytes written for another process: numbers and C strings, in order.
#[derive(Default)]
pub struct Wire(pub Vec<u8>);

impl Wire {
    /// A number.
    pub fn num(&mut self, n: u64) {
        self.0.extend_from_slice(&n.to_le_bytes());
    }

    /// A C string, without its NUL.
    pub fn cstr(&mut self, s: &std::ffi::CStr) {
        self.num(s.to_bytes().len() as u64);
        self.0.extend_from_slice(s.to_bytes());
    }
}

/// Reads what a [`Wire`] wrote; None past the end or at a string holding a NUL.
pub struct Unwire<'a>(pub &'a [u8]);

impl Unwire<'_> {
    /// A number.
    pub fn num(&mut self) -> Option<u64> {
        let (n, rest) = self.0.split_first_chunk::<8>()?;
        self.0 = rest;
        Some(u64::from_le_bytes(*n))
    }

    /// A C string.
    pub fn cstring(&mut self) -> Option<CString> {
        let len = usize::try_from(self.num()?).ok()?;
        if len > self.0.len() {
            return None;
        }
        let (s, rest) = self.0.split_at(len);
        self.0 = rest;
        CString::new(s).ok()
    }
}

/// Arranges for `cmd` to start in the sandbox `prepared` describes (runway forks init
/// itself: see [`super::spawner`] for the other way).
pub fn enclose(cmd: &mut Command, prepared: std::sync::Arc<Prepared>) {
    // SAFETY: the closure only makes async-signal-safe system calls on data prepared
    // before; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || enter(&prepared));
    }
}

/// The most descriptors [`place`] places.
pub const PLACED_MAX: usize = 16;

/// Places `fds` at `first`, `first + 1`, … in this (forked) process: each copied first
/// to a free number above every target, so that placing one overwrites no other.
/// Async-signal-safe: nothing is allocated. More than [`PLACED_MAX`]: `EMFILE`.
///
/// # Safety
/// Between fork and exec: the targets are replaced whatever they held.
pub unsafe fn place(fds: &[libc::c_int], first: libc::c_int) -> io::Result<()> {
    if fds.len() > PLACED_MAX {
        return Err(io::Error::from_raw_os_error(libc::EMFILE));
    }
    let above = first + fds.len() as libc::c_int;
    let mut copies = [0; PLACED_MAX];
    // SAFETY: fcntl, dup2 and close on this process's own descriptors.
    unsafe {
        for (fd, copy) in fds.iter().zip(copies.iter_mut()) {
            *copy = libc::fcntl(*fd, libc::F_DUPFD, above);
            if *copy < 0 {
                return Err(io::Error::last_os_error());
            }
        }
        for (i, copy) in copies.iter().take(fds.len()).enumerate() {
            if libc::dup2(*copy, first + i as libc::c_int) < 0 {
                return Err(io::Error::last_os_error());
            }
            libc::close(*copy);
        }
    }
    Ok(())
}

/// What the shell execs, built before the fork: the candidates for the program's path
/// (each directory of the job's `PATH` when it names no directory), its arguments and
/// its environment as pointer arrays.
pub struct Exec {
    pub(super) paths: Vec<CString>,
    pub(super) argv: Vec<CString>,
    pub(super) envp: Vec<CString>,
}

impl Exec {
    /// What [`super::Program::encode`] wrote: the program, `argv` (`argv[0]` first) and
    /// exactly the environment `envp` (`KEY=value`).
    pub fn decode(input: &mut Unwire) -> Option<Exec> {
        let program = input.cstring()?;
        let list = |input: &mut Unwire| -> Option<Vec<CString>> {
            (0..input.num()?).map(|_| input.cstring()).collect()
        };
        let argv = list(input)?;
        let envp = list(input)?;
        let paths = if program.as_bytes().contains(&b'/') {
            vec![program]
        } else {
            let path = envp
                .iter()
                .rev()
                .find_map(|e| e.as_bytes().strip_prefix(b"PATH="))
                .unwrap_or(b"/usr/local/bin:/usr/bin:/bin");
            path.split(|b| *b == b':')
                .filter(|d| d.starts_with(b"/"))
                .filter_map(|d| {
                    let mut p = d.to_vec();
                    p.push(b'/');
                    p.extend_from_slice(program.as_bytes());
                    CString::new(p).ok()
                })
                .collect()
        };
        Some(Exec { paths, argv, envp })
    }
}

/// The spawner's child ([`super::spawner`]): takes `fds` as its descriptors 0, 1, 2,
/// …, leads a process group of its own, becomes init as [`enclose`] would have made it
/// (reporting a failed step on `p`'s pipe), and the shell it starts execs `exec`.
///
/// # Safety
/// Only in a child just cloned from the spawner, which has one thread: the child owns
/// a consistent copy of its memory and may allocate.
pub unsafe fn start_in_child(p: &Prepared, exec: &Exec, fds: &[libc::c_int]) -> ! {
    let ptrs = |v: &[CString]| {
        v.iter()
            .map(|s| s.as_ptr())
            .chain(std::iter::once(std::ptr::null()))
            .collect::<Vec<_>>()
    };
    // The spawner has one thread: this copy of it may allocate.
    let (argv, envp) = (ptrs(&exec.argv), ptrs(&exec.envp));
    // SAFETY: system calls on this forked process's own descriptors, signal state and
    // process group, then `enter` (see there) and exec of prepared C strings.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigprocmask(libc::SIG_SETMASK, &set, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        if place(fds, 0).is_err() {
            fail(p, SHELL, errno());
        }
        if libc::setpgid(0, 0) != 0 {
            fail(p, SHELL, errno());
        }
        if enter(p).is_ok() {
            let mut err = libc::ENOENT;
            for path in &exec.paths {
                libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr());
                if errno() != libc::ENOENT {
                    err = errno();
                }
            }
            fail(p, EXEC, err);
        }
        libc::_exit(127)
    }
}

/// The namespaces init takes besides its PID namespace.
fn namespaces(network: bool) -> libc::c_int {
    libc::CLONE_NEWNS
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | if network { 0 } else { libc::CLONE_NEWNET }
}

/// Spawns `cmd` (arranged by [`enclose`]) as the first process of a new PID namespace:
/// the calling thread's children are born in one (`unshare(CLONE_NEWPID)` on this
/// thread only) for the spawn, then in the thread's own again (`setns`). runway's child
/// is then init itself: no process stands between them (one copy of runway's address
/// space fewer per job).
pub fn spawn_as_init(cmd: &mut Command) -> Result<std::process::Child, SandboxError> {
    static OWN: std::sync::OnceLock<Result<OwnedFd, i32>> = std::sync::OnceLock::new();
    let own = OWN.get_or_init(|| {
        std::fs::File::open("/proc/self/ns/pid")
            .map(OwnedFd::from)
            .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))
    });
    let own = own.as_ref().map_err(|e| io::Error::from_raw_os_error(*e))?;
    // SAFETY: unshare(2) of this thread's PID namespace for its children: no memory is
    // involved; every other thread's children are born where they were.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(SandboxError::Step {
            step: NAMESPACES.into(),
            error: io::Error::last_os_error(),
        });
    }
    let spawned = cmd.spawn();
    // SAFETY: setns(2) back to the namespace this process runs in, by a descriptor we
    // own: the thread's later children are born there again.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWPID) } != 0 {
        // A thread whose children would be born in a stale namespace must not carry on.
        let e = io::Error::last_os_error();
        if let Ok(mut child) = spawned {
            let _ = child.kill();
            let _ = child.wait();
        }
        return Err(e.into());
    }
    Ok(spawned?)
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

/// Closes every descriptor: init holds no pipe of the job's, so the job's
/// output ends when the shell's does and `spawn` returns once the shell execs.
unsafe fn close_all() {
    // SAFETY: close_range(2) on this process's own descriptors; the caller (the forked
    // init) holds no Rust value that owns one of them afterwards.
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

/// Runs in the child between fork and exec (see the module's header): init, then the
/// shell it starts.
fn enter(p: &Prepared) -> io::Result<()> {
    // SAFETY: raw system calls on this forked process alone, on data prepared before
    // the fork; the clone runs without glibc's fork handlers (a forked child of a
    // threaded process must not take their locks) and gives the shell a copy of init.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        // Named for `ps` whichever process forked it (the shell's name is bash's).
        libc::prctl(libc::PR_SET_NAME, c"runway-init".as_ptr());
        if let Err(e) = super::cgroup::join(&p.cgroups) {
            let e = e.raw_os_error().unwrap_or(libc::EIO);
            report(p, CGROUP, e);
            return Err(io::Error::from_raw_os_error(e));
        }
        // runway's handlers are not init's: with none, init gets only SIGKILL (its
        // namespace's init), and the shell started below the default actions.
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_DFL);
        }
        if libc::unshare(namespaces(p.network)) != 0 {
            let e = errno();
            report(p, CLONE, e);
            return Err(io::Error::from_raw_os_error(e));
        }
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
        let started = if libc::chdir(p.cwd.as_ptr()) != 0 {
            Err(io::Error::last_os_error())
        } else {
            drop_privileges(p.filter)
        };
        if let Err(e) = &started {
            report(p, SHELL, e.raw_os_error().unwrap_or(libc::EIO));
        }
        started
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
    /// Descriptors the helper gets as 3, 4, … (runway's own directories).
    passed: Vec<OwnedFd>,
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
    fds: &[std::os::fd::BorrowedFd],
) -> Result<(), SandboxError> {
    let mut argv = vec![CString::new("runway").unwrap_or_default()];
    for a in args {
        argv.push(CString::new(a.as_bytes()).map_err(|_| {
            SandboxError::Io(io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte"))
        })?);
    }
    // Copies at 64 and above, so that moving them to 3, 4, … cannot overwrite another.
    let mut passed = Vec::new();
    for fd in fds.iter().take(8) {
        // SAFETY: F_DUPFD_CLOEXEC duplicates a descriptor we borrow; the copy is owned.
        let copy = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 64) };
        if copy < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: just made, ours alone.
        passed.push(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) });
    }
    let h = std::sync::Arc::new(Helper {
        passed,
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
        for (i, fd) in h.passed.iter().enumerate() {
            if libc::dup2(fd.as_raw_fd(), 3 + i as libc::c_int) < 0 {
                return Err(io::Error::last_os_error());
            }
        }
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

/// One cache's layers for [`mount_cache`]: descriptors of runway's own directories (a
/// stored version of the cache, and an upper and a work directory on the job's disk
/// that the job cannot reach).
pub struct CacheLayers<'a> {
    /// The stored version (read-only to the overlay).
    pub lower: std::os::fd::BorrowedFd<'a>,
    /// Where the job's writes to the cache go.
    pub upper: std::os::fd::BorrowedFd<'a>,
    /// overlayfs's work directory, on the upper's filesystem.
    pub work: std::os::fd::BorrowedFd<'a>,
}

/// The steps of [`mount_cache`], for its errors.
const CACHE_STEPS: [&str; 6] = [
    "configuring the overlay",
    "making the overlay",
    "entering the job's mount namespace",
    "opening the cached directory in the job's view",
    "reading the cached directory",
    "mounting the overlay on the cached directory",
];

/// An error of [`mount_cache`]'s step `step` (1-based).
fn cache_step(step: u32, err: i32, target: &Path) -> SandboxError {
    let what = CACHE_STEPS
        .get((step as usize).saturating_sub(1))
        .copied()
        .unwrap_or("mounting");
    SandboxError::Step {
        step: format!("{what} ({})", target.display()),
        error: io::Error::from_raw_os_error(err),
    }
}

/// The overlay of a stored cache, made in runway's own mount namespace from
/// descriptors of runway's directories, not yet mounted anywhere.
fn cache_overlay(layers: &CacheLayers) -> Result<OwnedFd, (u32, i32)> {
    const FSOPEN_CLOEXEC: libc::c_uint = 1;
    const FSCONFIG_SET_STRING: libc::c_uint = 1;
    const FSCONFIG_SET_FD: libc::c_uint = 5;
    const FSCONFIG_CMD_CREATE: libc::c_uint = 6;
    const FSMOUNT_CLOEXEC: libc::c_uint = 1;
    const MOUNT_ATTR_NOSUID: libc::c_uint = 0x2;
    const MOUNT_ATTR_NODEV: libc::c_uint = 0x4;
    use std::os::fd::FromRawFd;
    let s = |t: &str| CString::new(t).unwrap_or_default();
    // SAFETY: fsopen(2) of a NUL-terminated name; the result is checked and owned.
    let fs = unsafe { libc::syscall(libc::SYS_fsopen, s("overlay").as_ptr(), FSOPEN_CLOEXEC) };
    if fs < 0 {
        return Err((1, errno()));
    }
    // SAFETY: just made, ours alone.
    let fs = unsafe { OwnedFd::from_raw_fd(fs as libc::c_int) };
    let config = |cmd: libc::c_uint, key: Option<&str>, value: Option<&str>, fd: libc::c_int| {
        let (k, v) = (key.map(s), value.map(s));
        let ptr = |c: &Option<CString>| c.as_ref().map_or(std::ptr::null(), |c| c.as_ptr());
        // SAFETY: fsconfig(2) on our context with NUL-terminated strings (or null) and
        // a descriptor we hold.
        let r = unsafe {
            libc::syscall(
                libc::SYS_fsconfig,
                fs.as_raw_fd(),
                cmd,
                ptr(&k),
                ptr(&v),
                fd,
            )
        };
        if r != 0 { Err(errno()) } else { Ok(()) }
    };
    let fd = |f: &std::os::fd::BorrowedFd| f.as_raw_fd();
    config(FSCONFIG_SET_FD, Some("lowerdir+"), None, fd(&layers.lower))
        .and_then(|()| config(FSCONFIG_SET_FD, Some("upperdir"), None, fd(&layers.upper)))
        .and_then(|()| config(FSCONFIG_SET_FD, Some("workdir"), None, fd(&layers.work)))
        .and_then(|()| config(FSCONFIG_SET_STRING, Some("redirect_dir"), Some("off"), 0))
        .and_then(|()| config(FSCONFIG_SET_STRING, Some("metacopy"), Some("off"), 0))
        .and_then(|()| config(FSCONFIG_SET_STRING, Some("index"), Some("off"), 0))
        .map_err(|e| (1, e))?;
    config(FSCONFIG_CMD_CREATE, None, None, 0).map_err(|e| (2, e))?;
    // SAFETY: fsmount(2) of our configured context; the result is checked and owned.
    let m = unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            fs.as_raw_fd(),
            FSMOUNT_CLOEXEC,
            MOUNT_ATTR_NODEV | MOUNT_ATTR_NOSUID,
        )
    };
    if m < 0 {
        return Err((2, errno()));
    }
    // SAFETY: just made, ours alone.
    Ok(unsafe { OwnedFd::from_raw_fd(m as libc::c_int) })
}

/// Mounts a copy-on-write overlay of a stored cache at `target` (the cached directory,
/// resolved in the job's view) inside the job's mount namespace `mnt`: restoring is a
/// mount, whatever the cache's size. The overlay is made here from descriptors of
/// runway's directories; a child of runway enters the job's namespace (so the path, and
/// every link on it, resolves as it would for the job: into the job's copy of the
/// machine, never the host's; magic links of `/proc` refused), opens the directory and
/// moves the overlay onto it. The child runs no program. A directory that holds files
/// already (the checkout's) is left as it is: returns false then, true when mounted.
pub fn mount_cache(
    mnt: &OwnedFd,
    target: &Path,
    layers: &CacheLayers,
) -> Result<bool, SandboxError> {
    let overlay = cache_overlay(layers).map_err(|(step, e)| cache_step(step, e, target))?;
    let path = c(target)?;
    let empty = CString::default();
    let mut pipe = [0; 2];
    // SAFETY: pipe2(2) fills the two-element array; the ends are owned below.
    if unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error().into());
    }
    use std::os::fd::FromRawFd;
    // SAFETY: both ends were just made and are ours alone.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(pipe[0]), OwnedFd::from_raw_fd(pipe[1])) };
    // SAFETY: the child makes only system calls on the descriptors and C strings made
    // above, allocates nothing, runs no program, and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error().into());
    }
    if pid == 0 {
        // SAFETY: as above (the forked child).
        unsafe {
            let (step, err) = cache_child(mnt.as_raw_fd(), &path, overlay.as_raw_fd(), &empty);
            let report: [u32; 2] = [step, err as u32];
            libc::write(
                write_end.as_raw_fd(),
                report.as_ptr().cast(),
                std::mem::size_of_val(&report),
            );
            libc::_exit(0);
        }
    }
    drop(write_end);
    let mut status = 0;
    // SAFETY: waits for the child forked above.
    while unsafe { libc::waitpid(pid, &mut status, 0) } < 0 && errno() == libc::EINTR {}
    let mut buf = [0u8; 8];
    let got = std::fs::File::from(read_end).read(&mut buf).unwrap_or(0);
    if got != buf.len() {
        return Err(SandboxError::Step {
            step: "mounting the cache".into(),
            error: io::Error::other("the mounting process ended without a word"),
        });
    }
    let (step, err) = (
        u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]),
        u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]) as i32,
    );
    match step {
        0 => Ok(true),
        HELD => Ok(false),
        _ => Err(cache_step(step, err, target)),
    }
}

/// [`cache_child`]'s answer for a directory that holds files already (not mounted).
const HELD: u32 = 100;

/// [`mount_cache`]'s forked child: returns (the failed step, 1-based, or 0, or
/// [`HELD`]; errno).
///
/// # Safety
/// Call only in a child just forked: it enters another mount namespace.
unsafe fn cache_child(
    mnt: libc::c_int,
    target: &CString,
    overlay: libc::c_int,
    empty: &CString,
) -> (u32, i32) {
    const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
    const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
    // SAFETY: system calls on descriptors and NUL-terminated strings that outlive them.
    unsafe {
        if libc::setns(mnt, libc::CLONE_NEWNS) != 0 {
            return (3, errno());
        }
        let mut how: libc::open_how = std::mem::zeroed();
        how.flags = (libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC) as u64;
        how.resolve = libc::RESOLVE_NO_MAGICLINKS;
        let dir = libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            target.as_ptr(),
            &how as *const libc::open_how,
            std::mem::size_of::<libc::open_how>(),
        ) as libc::c_int;
        if dir < 0 {
            return (4, errno());
        }
        // Does the directory hold anything besides `.` and `..`?
        let mut buf = [0u8; 1024];
        let n = libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len());
        if n < 0 {
            return (5, errno());
        }
        let mut at = 0usize;
        while at + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[at + 16], buf[at + 17]]) as usize;
            let name = &buf[at + 19..];
            let dot = name.first() == Some(&b'.')
                && (name.get(1) == Some(&0)
                    || (name.get(1) == Some(&b'.') && name.get(2) == Some(&0)));
            if !dot {
                return (HELD, 0);
            }
            if reclen == 0 {
                break;
            }
            at += reclen;
        }
        if libc::syscall(
            libc::SYS_move_mount,
            overlay,
            empty.as_ptr(),
            dir,
            empty.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        ) != 0
        {
            return (6, errno());
        }
        (0, 0)
    }
}
