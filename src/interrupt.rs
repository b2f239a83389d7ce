//! Ctrl-C, SIGTERM and SIGHUP for the commands that run a build in the foreground
//! (`run`, `hook run`). The first signal cancels the build: the running job's process
//! group is killed (jobs run in groups of their own, so a terminal's Ctrl-C never
//! reaches them), its workspace removed, and the build ends as canceled with its log,
//! result line and exit code 4. A second signal, for a build that is slow to stop (a
//! deploy waiting on the network), kills every job process group at once and exits 4.

use std::io::Read;
use std::os::fd::FromRawFd;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::cancel::Cancel;
use crate::exit;

/// The write end of the signal pipe: the handler writes a byte per signal (write(2) is
/// async-signal-safe); a thread blocks reading the other end.
static PIPE: AtomicI32 = AtomicI32::new(-1);

extern "C" fn note(_: libc::c_int) {
    let fd = PIPE.load(Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: writes one byte from a static buffer to a non-blocking pipe.
        unsafe { libc::write(fd, b"!".as_ptr().cast(), 1) };
    }
}

/// Installs the handlers and returns the switch the first signal sets, for
/// [`crate::cmd::run::RunArgs::cancel`].
pub fn cancel_on_signals() -> Cancel {
    on_signals("\nrunway: canceling the build (a second Ctrl-C stops at once)")
}

/// The switch the first signal sets, for `runway worker`: it finishes the job it runs,
/// takes no new one, and exits; a second signal kills the job and exits at once.
pub fn drain_on_signals() -> Cancel {
    on_signals(
        "runway worker: finishing the running job, then stopping (a second signal stops at once)",
    )
}

fn on_signals(first: &'static str) -> Cancel {
    let cancel = Cancel::new();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills the two descriptors; fcntl makes the write end non-blocking
    // (a handler never waits); sigaction is given a zeroed, then filled, struct.
    let made = unsafe {
        let ok = libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) == 0;
        if ok {
            let flags = libc::fcntl(fds[1], libc::F_GETFL);
            libc::fcntl(fds[1], libc::F_SETFL, flags | libc::O_NONBLOCK);
            PIPE.store(fds[1], Ordering::SeqCst);
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = note as extern "C" fn(libc::c_int) as libc::sighandler_t;
            action.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut action.sa_mask);
            for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
                libc::sigaction(signal, &action, std::ptr::null_mut());
            }
        }
        ok
    };
    if !made {
        return cancel;
    }
    // SAFETY: the read end was just made and is owned by this file from here on.
    let mut signals = unsafe { std::fs::File::from_raw_fd(fds[0]) };
    let switch = cancel.clone();
    std::thread::spawn(move || {
        let mut received = 0;
        let mut byte = [0u8; 1];
        while let Ok(1) = signals.read(&mut byte) {
            received += 1;
            if received == 1 && switch.cancel() {
                eprintln!("{first}");
            }
            if received >= 2 {
                let killed = crate::process::kill_live_groups();
                eprintln!("runway: stopped; killed {killed} job process group(s)");
                std::process::exit(exit::CANCELED);
            }
        }
    });
    cancel
}
