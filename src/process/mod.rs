//! Processes runway starts and must end: the persistent shell a job's commands (or a
//! rehearsal's hooks) run in ([`shell`]), the process groups of those shells (this
//! process's live ones, killed at once on a second Ctrl-C; those a crash left behind,
//! found by the record each shell leaves and ended at the next start), and how text
//! travels to a shell as one word ([`quote()`]). Below the job runner, deploys,
//! runtimes and the worker agent, which all use it; above only the sandbox.

use std::path::Path;
use std::time::Duration;

pub(crate) mod quote;
pub mod shell;

pub use quote::{printf_q, quote};

/// The process groups of this process's running shells.
pub(crate) fn live_groups() -> std::sync::MutexGuard<'static, Vec<i32>> {
    static GROUPS: std::sync::Mutex<Vec<i32>> = std::sync::Mutex::new(Vec::new());
    GROUPS.lock().unwrap_or_else(|p| p.into_inner())
}

/// Kills the process groups of every shell this process is running, for a runway
/// told to stop at once ([`crate::interrupt`]). Returns how many.
pub fn kill_live_groups() -> usize {
    let groups = live_groups().clone();
    for &pgid in &groups {
        kill_group(pgid, libc::SIGKILL);
    }
    groups.len()
}

/// The records of this process's running shells ([`shell::Shell::record_in`]), each
/// file kept for the next when its shell ends ([`crate::spare`]).
pub(crate) static RECORDS: crate::spare::Spares = crate::spare::Spares::new(16);

/// What a kept record says: no process group, no workspace, its owner (this process),
/// so that another runway's [`end_orphans`] leaves it to us while we live.
pub(crate) static SPARE_RECORD: std::sync::LazyLock<String> =
    std::sync::LazyLock::new(|| format!("\n\n{}", owner()));

/// This process as a record names its owner: its id and when it started.
pub(crate) fn owner() -> &'static str {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER.get_or_init(|| {
        let me = std::process::id() as i32;
        format!("{me} {}", start_time(me).unwrap_or_default())
    })
}

/// When process `pid` started (field 22 of `/proc/PID/stat`), to tell it from a later
/// process given the same id.
pub(crate) fn start_time(pid: i32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    st[st.rfind(')')? + 1..]
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// Ends the process groups recorded in `dir` ([`shell::Shell::record_in`]) by a runway that
/// is no longer running: what its jobs left behind when it was killed (on the bare
/// host its shells' process groups outlive it), and removes their workspaces. Records
/// of a live runway (another `runway run` beside this one) are left alone. A group is
/// killed only if one of its processes carries the recorded nonce, so a reused process
/// id is never hit; a workspace is removed only if it is a `runway-job-*` directory.
/// Returns how many groups were ended.
pub fn end_orphans(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut ended = 0;
    for e in entries.flatten() {
        let path = e.path();
        let pgid: Option<i32> = e.file_name().to_str().and_then(|n| n.parse().ok());
        let record = std::fs::read_to_string(&path).unwrap_or_default();
        let mut lines = record.lines();
        let nonce = lines.next().unwrap_or_default();
        let workspace = lines.next();
        let owner_alive = lines.next().is_some_and(|owner| {
            let mut f = owner.split(' ');
            let pid: Option<i32> = f.next().and_then(|p| p.parse().ok());
            let started: Option<u64> = f.next().and_then(|s| s.parse().ok());
            pid.is_some_and(|p| {
                p != std::process::id() as i32 && started.is_some() && start_time(p) == started
            })
        });
        if owner_alive {
            continue;
        }
        if let Some(pgid) = pgid
            && !nonce.is_empty()
            && group_carries(pgid, &format!("__RUNWAY_NONCE={nonce}"))
        {
            kill_group(pgid, libc::SIGKILL);
            ended += 1;
        }
        if let Some(workspace) = workspace.map(Path::new)
            && workspace.is_absolute()
            && workspace
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(crate::workspace::PREFIX))
        {
            crate::sandbox::disk::release(workspace);
            let _ = std::fs::remove_dir_all(workspace);
        }
        let _ = std::fs::remove_file(&path);
    }
    ended
}

/// Kills the process groups of the jobs that runway process `owner` recorded in `dir`
/// (each only if one of its processes carries the recorded nonce), and leaves the
/// records and workspaces to their owner, which is alive: the lease keeper's stop of a
/// job whose lease ran out (`worker::lease`). Returns how many groups were killed.
pub fn end_recorded(dir: &Path, owner: i32) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let mut ended = 0;
    for e in entries.flatten() {
        let pgid: Option<i32> = e.file_name().to_str().and_then(|n| n.parse().ok());
        let record = std::fs::read_to_string(e.path()).unwrap_or_default();
        let mut lines = record.lines();
        let nonce = lines.next().unwrap_or_default();
        let _workspace = lines.next();
        let mine = lines
            .next()
            .and_then(|o| o.split(' ').next())
            .and_then(|p| p.parse::<i32>().ok())
            == Some(owner);
        if mine
            && let Some(pgid) = pgid
            && !nonce.is_empty()
            && group_carries(pgid, &format!("__RUNWAY_NONCE={nonce}"))
        {
            kill_group(pgid, libc::SIGKILL);
            ended += 1;
        }
    }
    ended
}

/// True when a process of group `pgid` has `var` (NAME=value) in its environment.
fn group_carries(pgid: i32, var: &str) -> bool {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return false;
    };
    procs.flatten().any(|p| {
        let dir = p.path();
        // /proc/PID/stat: "pid (comm) state ppid pgrp ..."; comm may hold spaces.
        let in_group = std::fs::read_to_string(dir.join("stat"))
            .ok()
            .and_then(|st| {
                let rest = &st[st.rfind(')')? + 1..];
                rest.split_whitespace().nth(2)?.parse::<i32>().ok()
            })
            == Some(pgid);
        in_group
            && std::fs::read(dir.join("environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|v| v == var.as_bytes()))
    })
}

/// Waits up to `limit` for process `pid` (a child of ours, not yet waited for) to exit,
/// on a pidfd; true when it did. Where pidfds are missing (Linux before 5.3) it returns
/// at once.
pub fn exited_within(pid: i32, limit: Duration) -> bool {
    // SAFETY: pidfd_open(2) returns a new descriptor (or -1), owned from here on.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) as libc::c_int };
    if fd < 0 {
        return false;
    }
    // SAFETY: a descriptor just opened, owned by nothing else.
    let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    readable(std::os::fd::AsFd::as_fd(&fd), Some(limit))
}

/// Waits until `fd` can be read (or is closed) or `left` has passed (`None`: no
/// limit), in `poll(2)`: true when it can be read. The wait is rounded up to the
/// millisecond: woken by the clock, `left` has passed. Interrupted, it says false, as
/// woken by the clock.
pub(crate) fn readable(fd: std::os::fd::BorrowedFd<'_>, left: Option<Duration>) -> bool {
    use std::os::fd::AsRawFd;
    let timeout = left.map_or(-1, |d| {
        d.as_nanos().div_ceil(1_000_000).min(i32::MAX as u128) as i32
    });
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll(2) on one pollfd we own, for a descriptor borrowed for the call.
    unsafe { libc::poll(&mut p, 1, timeout) > 0 }
}

/// Sends `signal` to every process of group `pgid`.
pub fn kill_group(pgid: i32, signal: i32) {
    if pgid > 1 {
        // SAFETY: kill(2) with a negative pid signals a process group; no memory involved.
        unsafe {
            libc::kill(-pgid, signal);
        }
    }
}

/// True while any process of group `pgid` is alive.
pub fn group_alive(pgid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    pgid > 1 && unsafe { libc::kill(-pgid, 0) } == 0
}

/// The position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// The length of the longest suffix of `hay` that is a proper prefix of `needle`.
pub fn partial_suffix(hay: &[u8], needle: &[u8]) -> usize {
    let max = needle.len().saturating_sub(1).min(hay.len());
    (1..=max)
        .rev()
        .find(|&k| hay[hay.len() - k..] == needle[..k])
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A kept record (a spare, [`RECORDS`]) names no process group and no workspace:
    /// another runway's sweep leaves it to its owner while that lives, and removes it,
    /// killing nothing, once the owner is gone.
    #[test]
    fn a_kept_record_is_left_to_its_live_owner_and_removed_after() {
        let dir = tempfile::tempdir().unwrap();
        let live = format!("1 {}", start_time(1).unwrap_or_default());
        let spare = |name: &str, owner: &str| {
            let p = dir.path().join(format!("{}{name}", crate::spare::PREFIX));
            std::fs::write(&p, format!("\n\n{owner}")).unwrap();
            p
        };
        let kept = spare("1-0", &live);
        let gone = spare("2147483000-0", "2147483000 1");
        assert_eq!(end_orphans(dir.path()), 0, "nothing killed");
        assert!(kept.exists(), "a live owner's spare is its own");
        assert!(!gone.exists(), "a gone owner's spare is removed");
        assert_eq!(end_recorded(dir.path(), 1), 0);
        assert!(SPARE_RECORD.ends_with(owner()) && SPARE_RECORD.starts_with("\n\n"));
    }
}
