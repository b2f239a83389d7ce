//! What a one-shot runway leaves behind for the kernel: a finished job's disk (its
//! filesystem shut down, its loop device cleared, its image's blocks freed on the
//! host) and its sandbox's mount namespace (every mount in it undone) are torn down
//! when the last descriptor on them closes, and that teardown takes milliseconds of
//! whichever process closes it. `runway run` ([`one_shot`]) hands those last
//! descriptors to a holder process it makes at its start, and so ends as soon as its
//! last line is written: the holder keeps them until runway has exited (its end of a
//! socket pair then reads end of file), and the kernel tears them down as the holder
//! exits. Nothing is left: the holder lives only as long as runway and its jobs'
//! processes do, and it keeps runway's standard error open, so that what reads runway's
//! errors to their end (a log collector, a test) reaches it only when the teardown is
//! done; a person at a terminal gets the prompt back at once. A long-lived runway
//! (serve, worker) makes none; its teardowns run on threads of its own. A leaf: it
//! knows descriptors, not what they are.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::Mutex;

/// runway's end of the socket pair to the holder, once made.
static HOLDER: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Makes the holder for this one-shot runway. Call at start, while the process is
/// small (it is forked); without one (no privilege needed, but a fork can fail) every
/// teardown runs in runway as before.
pub fn one_shot() {
    let mut g = HOLDER.lock().unwrap_or_else(|p| p.into_inner());
    if g.is_none() {
        *g = holder().ok();
    }
}

/// Whether descriptors are handed off ([`one_shot`] made a holder).
pub fn active() -> bool {
    HOLDER.lock().unwrap_or_else(|p| p.into_inner()).is_some()
}

/// Hands `fd` to the holder, which closes it after runway has exited; gives it back
/// when there is no holder or it cannot take it.
pub fn hand_off(fd: OwnedFd) -> Result<(), OwnedFd> {
    let g = HOLDER.lock().unwrap_or_else(|p| p.into_inner());
    let Some(sock) = g.as_ref() else {
        return Err(fd);
    };
    match send_fd(sock.as_raw_fd(), fd.as_raw_fd()) {
        // Our copy goes; the holder's keeps the object alive.
        Ok(()) => Ok(()),
        Err(_) => Err(fd),
    }
}

/// Forks the holder: it receives descriptors until runway's end closes, then exits.
fn holder() -> io::Result<OwnedFd> {
    let mut pair = [0 as libc::c_int; 2];
    // SAFETY: socketpair(2) fills two descriptors we then own.
    if unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            pair.as_mut_ptr(),
        )
    } != 0
    {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: both were just made and are owned by nothing else.
    let (ours, theirs) = unsafe { (OwnedFd::from_raw_fd(pair[0]), OwnedFd::from_raw_fd(pair[1])) };
    let keep = theirs.as_raw_fd();
    // SAFETY: fork(2); the child makes only async-signal-safe system calls (another
    // thread may have held a lock at the fork) on memory of its own stack, and never
    // returns: it ends in _exit(2).
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        // SAFETY: as above; close_range(2), prctl(2), recvmsg(2) and _exit(2) only.
        unsafe {
            // Nothing of runway's is held but the socket and its standard error: its
            // output closes when runway exits; what reads its errors to their end (a
            // log collector, a test) finds it when the teardown is done too.
            libc::close_range(0, 1, 0);
            if keep > 3 {
                libc::close_range(3, (keep - 1) as libc::c_uint, 0);
            }
            libc::close_range((keep + 1) as libc::c_uint, libc::c_uint::MAX, 0);
            libc::prctl(libc::PR_SET_NAME, c"runway-release".as_ptr());
            let mut data = [0u8; 1];
            let mut control = [0u64; 8];
            loop {
                let mut iov = libc::iovec {
                    iov_base: data.as_mut_ptr().cast(),
                    iov_len: data.len(),
                };
                let mut msg: libc::msghdr = std::mem::zeroed();
                msg.msg_iov = &mut iov;
                msg.msg_iovlen = 1;
                msg.msg_control = control.as_mut_ptr().cast();
                msg.msg_controllen = std::mem::size_of_val(&control);
                // The descriptors received stay open in this process until it exits.
                let n = libc::recvmsg(keep, &mut msg, 0);
                if n == 0 || (n < 0 && *libc::__errno_location() != libc::EINTR) {
                    break;
                }
            }
            // What was handed over is torn down here, as each closes; standard error
            // last, so that its reader's end of file comes after all of it.
            libc::close_range(3, libc::c_uint::MAX, 0);
            libc::close(2);
            libc::_exit(0);
        }
    }
    drop(theirs);
    Ok(ours)
}

/// Sends descriptor `fd` over the socket `sock` (one byte with an `SCM_RIGHTS`).
fn send_fd(sock: libc::c_int, fd: libc::c_int) -> io::Result<()> {
    let mut data = [0u8; 1];
    let mut control = [0u64; 8];
    // SAFETY: sendmsg(2) with a message built on this stack frame: one byte of data
    // and one control message of one descriptor, inside `control`'s bounds.
    unsafe {
        let mut iov = libc::iovec {
            iov_base: data.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<libc::c_int>() as u32) as usize;
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<libc::c_int>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<libc::c_int>(), fd);
        if libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A descriptor handed off stays open in the holder after runway's copy closed:
    /// the write end of a pipe handed over keeps the pipe's reader from end of file
    /// until the holder's socket closes.
    #[test]
    fn a_handed_off_descriptor_outlives_our_copy_until_the_holder_ends() {
        let sock = holder().expect("a holder");
        let (mut r, w) = io::pipe().unwrap();
        send_fd(sock.as_raw_fd(), w.as_raw_fd()).unwrap();
        drop(w);
        // The holder's copy is open: a non-blocking read finds no end of file.
        // SAFETY: fcntl(2) on a descriptor we own.
        unsafe {
            let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
        let mut buf = [0u8; 1];
        let e = io::Read::read(&mut r, &mut buf).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        // Our end of the socket closes: the holder exits, and its copy goes with it.
        drop(sock);
        // SAFETY: as above.
        unsafe {
            let fl = libc::fcntl(r.as_raw_fd(), libc::F_GETFL);
            libc::fcntl(r.as_raw_fd(), libc::F_SETFL, fl & !libc::O_NONBLOCK);
        }
        assert_eq!(io::Read::read(&mut r, &mut buf).unwrap(), 0, "end of file");
    }
}
