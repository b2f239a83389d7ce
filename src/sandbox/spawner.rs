//! The spawner: a small process forked when `serve` or `worker` starts, while runway
//! has one thread and a few megabytes, that forks each sandboxed job's init for it.
//! A fork copies the forking process's page tables and the exec that follows tears the
//! copy down again: from a server grown with its threads, pools and caches, the fork
//! of init took 0.76 ms, the shell's clone 0.5 and the exec of bash 0.68, against
//! 0.33, 0.23 and 0.48 from a small process (BENCHMARKS.md).
//!
//! runway sends one message per job on a `SOCK_SEQPACKET` pair: how many descriptors
//! the shell gets, the sandbox's steps ([`Prepared::encode`]), the shell's program,
//! arguments and environment ([`Program::encode`]), and as `SCM_RIGHTS` the shell's
//! descriptors 0, 1, 2, …, then init's report pipe and the job's cgroup files. The
//! spawner takes a new PID namespace for its next child and clones it with
//! `CLONE_PARENT`: init is runway's child, not the spawner's, so runway waits for it,
//! signals it and is told of its death exactly as if it had forked it. The answer is
//! init's process id, or an `errno`.
//!
//! The spawner makes only what runway asked, in runway's own mount namespace, and
//! chooses no path itself; it holds nothing but its socket and `/dev/null`. It dies
//! with runway (`PR_SET_PDEATHSIG`, and the socket's end). Once it is gone (or a
//! message would not fit), runway forks init itself ([`super::sys::enclose`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, OnceLock, PoisonError};

use super::SandboxError;
use super::program::Program;
use super::sys::{Exec, NAMESPACES, Prepared, Unwire, Wire};

/// The largest message: a job's layout and environment fit many times over.
const MAX_MESSAGE: usize = 256 * 1024;
/// The most descriptors one message carries.
const MAX_FDS: usize = 64;
/// The spawner's socket, in the spawner.
const SOCKET: RawFd = 100;

/// runway's end of the spawner.
struct Spawner {
    /// None once the spawner is gone.
    socket: Mutex<Option<OwnedFd>>,
    pid: libc::pid_t,
}

static SPAWNER: OnceLock<Spawner> = OnceLock::new();

/// Forks the spawner.
///
/// # Safety
/// Only while this process has one thread: the spawner is a copy of it that allocates.
pub unsafe fn start() -> io::Result<()> {
    let mut pair = [0; 2];
    // SAFETY: socketpair(2) fills `pair`, ours; both descriptors are owned just below.
    let (ours, theirs) = unsafe {
        if libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        ) != 0
        {
            return Err(io::Error::last_os_error());
        }
        (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1]))
    };
    // SAFETY: getpid(2) cannot fail.
    let parent = unsafe { libc::getpid() };
    // SAFETY: fork(2) of a process with one thread (the caller's promise): the child
    // owns a copy of every lock and allocation, and never returns from `serve`.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            drop(ours);
            // SAFETY: in the child just forked, as `serve` requires.
            unsafe { serve(theirs, parent) }
        }
        pid => {
            drop(theirs);
            let _ = SPAWNER.set(Spawner {
                socket: Mutex::new(Some(ours)),
                pid,
            });
            Ok(())
        }
    }
}

/// Starts `program` in the sandbox `prepared` describes through the spawner: init's
/// process id. None when there is no spawner (never started, or gone before it read
/// the message) or the message is too large: the caller forks init itself.
pub fn spawn(prepared: &Prepared, program: &Program) -> Option<Result<libc::pid_t, SandboxError>> {
    let spawner = SPAWNER.get()?;
    let mut wire = Wire::default();
    wire.num(program.fds.len() as u64);
    prepared.encode(&mut wire);
    if let Err(e) = program.encode(&mut wire) {
        return Some(Err(e.into()));
    }
    let fds: Vec<RawFd> = program
        .fds
        .iter()
        .map(|f| f.as_raw_fd())
        .chain(prepared.descriptors())
        .collect();
    if wire.0.len() > MAX_MESSAGE || fds.len() > MAX_FDS {
        return None;
    }
    let mut socket = spawner
        .socket
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let s = socket.as_ref()?.as_raw_fd();
    if send(s, &wire.0, &fds).is_err() {
        gone(spawner, &mut socket);
        return None;
    }
    let mut answer = [0u8; 4];
    // SAFETY: recv(2) into a buffer we own.
    let n = unsafe { libc::recv(s, answer.as_mut_ptr().cast(), answer.len(), 0) };
    if n != answer.len() as isize {
        // It read the message and may have started init: not started again here.
        gone(spawner, &mut socket);
        return Some(Err(io::Error::other("the sandbox's spawner stopped").into()));
    }
    Some(match i32::from_ne_bytes(answer) {
        pid if pid > 0 => Ok(pid),
        e if -e == libc::EPROTO => Err(io::Error::other("the spawner could not read a job").into()),
        // Its new PID namespace, or the clone into it, was refused.
        e => Err(SandboxError::Step {
            step: NAMESPACES.into(),
            error: io::Error::from_raw_os_error(-e),
        }),
    })
}

/// Forgets a spawner that stopped answering, and reaps it if it has exited.
fn gone(spawner: &Spawner, socket: &mut Option<OwnedFd>) {
    *socket = None;
    // SAFETY: waitpid(2) of our own child, without waiting.
    unsafe {
        libc::waitpid(spawner.pid, std::ptr::null_mut(), libc::WNOHANG);
    }
}

/// Sends `bytes` with `fds` as one message.
fn send(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let data = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE computes a size.
    let space = unsafe { libc::CMSG_SPACE(data) } as usize;
    // u64s: a control buffer aligned for `cmsghdr`.
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut libc::c_void,
        iov_len: bytes.len(),
    };
    // SAFETY: a zeroed msghdr is valid; every pointer set in it points into `iov`,
    // `bytes` or `control`, which outlive the sendmsg(2); the header written is
    // within `control` (CMSG_SPACE of the data).
    let sent = unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if !fds.is_empty() {
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = space;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(data) as usize;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(cmsg).cast(), fds.len());
        }
        libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL)
    };
    match sent {
        n if n == bytes.len() as isize => Ok(()),
        n if n < 0 => Err(io::Error::last_os_error()),
        _ => Err(io::Error::other("a message to the spawner was cut short")),
    }
}

/// Receives one message into `buf` and the descriptors that came with it (close-on-
/// exec). None at the socket's end; an empty message when it was cut short.
fn receive(socket: RawFd, buf: &mut [u8]) -> Option<(usize, Vec<OwnedFd>)> {
    // SAFETY: CMSG_SPACE computes a size.
    let space = unsafe { libc::CMSG_SPACE((MAX_FDS * size_of::<RawFd>()) as u32) } as usize;
    let mut control = vec![0u64; space.div_ceil(8)];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: the msghdr points into `iov`, `buf` and `control`, which outlive the
    // recvmsg(2); the headers read are those the kernel wrote within `control`, and each
    // descriptor in them is new in this process, owned once here.
    unsafe {
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space;
        let n = libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC);
        if n <= 0 {
            return None;
        }
        let mut fds = Vec::new();
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let count = ((*cmsg).cmsg_len - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(data.add(i).read_unaligned()));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
        let cut = msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0;
        Some((if cut { 0 } else { n as usize }, fds))
    }
}

/// The spawner's life: one init per message, until runway is gone.
///
/// # Safety
/// Only in the child [`start`] forked.
unsafe fn serve(socket: OwnedFd, parent: libc::pid_t) -> ! {
    // SAFETY: system calls on this process's own state and descriptors: it keeps its
    // socket (moved to SOCKET), its PID namespace and /dev/null as 0, 1 and 2, and
    // closes every other descriptor it inherited from runway.
    let own = unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
        if libc::getppid() != parent {
            libc::_exit(0);
        }
        libc::prctl(libc::PR_SET_NAME, c"runway-spawner".as_ptr());
        // A ^C at runway's terminal reaches its whole process group: runway decides
        // what a signal ends, and the spawner ends with runway (init resets these).
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP, libc::SIGQUIT] {
            libc::signal(sig, libc::SIG_IGN);
        }
        let null = libc::open(c"/dev/null".as_ptr(), libc::O_RDWR);
        let own = libc::open(c"/proc/self/ns/pid".as_ptr(), libc::O_RDONLY);
        if null < 0
            || own < 0
            || libc::dup2(socket.as_raw_fd(), SOCKET) < 0
            || libc::dup2(own, SOCKET + 1) < 0
        {
            libc::_exit(1);
        }
        for fd in 0..3 {
            libc::dup2(null, fd);
        }
        for fd in [SOCKET, SOCKET + 1] {
            libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
        }
        std::mem::forget(socket);
        libc::syscall(libc::SYS_close_range, 3u32, (SOCKET - 1) as u32, 0u32);
        libc::syscall(libc::SYS_close_range, (SOCKET + 2) as u32, u32::MAX, 0u32);
        SOCKET + 1
    };
    let mut buf = vec![0u8; MAX_MESSAGE];
    loop {
        let Some((n, fds)) = receive(SOCKET, &mut buf) else {
            // SAFETY: runway is gone: so is the spawner.
            unsafe { libc::_exit(0) }
        };
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let answer = launch(&buf[..n], &raw, own).unwrap_or_else(|e| -e);
        drop(fds);
        // SAFETY: send(2) of a buffer we own.
        let sent = unsafe {
            libc::send(
                SOCKET,
                answer.to_ne_bytes().as_ptr().cast(),
                4,
                libc::MSG_NOSIGNAL,
            )
        };
        if sent != 4 {
            // SAFETY: runway is gone: so is the spawner.
            unsafe { libc::_exit(0) }
        }
    }
}

/// Starts one init as `msg` asks, with `fds` (see the module's header): its process id,
/// or an `errno` (`EPROTO`: a message it could not read).
fn launch(msg: &[u8], fds: &[RawFd], own: RawFd) -> Result<i32, i32> {
    let mut input = Unwire(msg);
    let stdio = usize::try_from(input.num().ok_or(libc::EPROTO)?).map_err(|_| libc::EPROTO)?;
    if stdio > fds.len() {
        return Err(libc::EPROTO);
    }
    let (stdio, rest) = fds.split_at(stdio);
    let prepared = Prepared::decode(&mut input, rest).ok_or(libc::EPROTO)?;
    let exec = Exec::decode(&mut input).ok_or(libc::EPROTO)?;
    let errno = || {
        io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO)
    };
    // SAFETY: unshare(2) of the PID namespace this process's next child is born in.
    if unsafe { libc::unshare(libc::CLONE_NEWPID) } != 0 {
        return Err(errno());
    }
    // SAFETY: a raw clone(2) of this single-threaded process: the child (init, runway's
    // child by CLONE_PARENT) runs `start_in_child`, which never returns.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_PARENT | libc::SIGCHLD) as libc::c_ulong,
            0usize,
            0usize,
            0usize,
            0usize,
        )
    };
    if pid == 0 {
        // SAFETY: the child just cloned, as `start_in_child` requires.
        unsafe { super::sys::start_in_child(&prepared, &exec, stdio) }
    }
    let cloned = if pid < 0 {
        Err(errno())
    } else {
        Ok(pid as i32)
    };
    // SAFETY: setns(2) back to this process's own PID namespace, by a descriptor it
    // holds: its next children are born there again.
    if unsafe { libc::setns(own, libc::CLONE_NEWPID) } != 0 {
        // A spawner whose children would be born in a stale namespace must not go on:
        // runway forks init itself from now on.
        // SAFETY: kill(2) of the init just made, then the end of this process.
        unsafe {
            if let Ok(pid) = cloned {
                libc::kill(pid, libc::SIGKILL);
            }
            libc::_exit(1)
        }
    }
    cloned
}
