//! Ctrl-C, SIGTERM and SIGHUP for the commands that run a build in the foreground
//! (`run`, `hook run`). The first signal cancels the build: the running job's process
//! group is killed (jobs run in groups of their own, so a terminal's Ctrl-C never
//! reaches them), its workspace removed, and the build ends as canceled with its log,
//! result line and exit code 4. A second signal, for a build that is slow to stop (a
//! deploy waiting on the network), kills every job process group at once and exits 4.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use crate::exit;
use crate::job::shell;

/// Signals received so far (the handler only counts: that is async-signal-safe).
static RECEIVED: AtomicUsize = AtomicUsize::new(0);

extern "C" fn count(_: libc::c_int) {
    RECEIVED.fetch_add(1, Ordering::SeqCst);
}

/// Installs the handlers and returns the flag the first signal sets, for
/// [`crate::cmd::run::RunArgs::cancel`].
pub fn cancel_on_signals() -> Arc<AtomicBool> {
    let cancel = Arc::new(AtomicBool::new(false));
    // SAFETY: `count` only touches an atomic; sigaction is given a zeroed, then filled,
    // struct as its contract asks.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = count as extern "C" fn(libc::c_int) as libc::sighandler_t;
        action.sa_flags = libc::SA_RESTART;
        libc::sigemptyset(&mut action.sa_mask);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaction(signal, &action, std::ptr::null_mut());
        }
    }
    let flag = cancel.clone();
    std::thread::spawn(move || {
        loop {
            let n = RECEIVED.load(Ordering::SeqCst);
            if n >= 1 && !flag.swap(true, Ordering::SeqCst) {
                eprintln!("\nrunway: canceling the build (a second Ctrl-C stops at once)");
            }
            if n >= 2 {
                let killed = shell::kill_live_groups();
                eprintln!("runway: stopped; killed {killed} job process group(s)");
                std::process::exit(exit::CANCELED);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    });
    cancel
}
