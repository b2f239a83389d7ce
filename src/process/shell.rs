//! One persistent `bash` per job, so `cd`, `export` and functions carry over from
//! `before_install` to `script`, as in Travis's single generated script.
//!
//! The shell runs in its own process group with:
//! - fd 0: `/dev/null` (a command that reads stdin must not eat runway's commands);
//! - fd 1 and 2: one pipe, read by a thread as a byte stream;
//! - fd 3: the status pipe: after each command the shell writes its exit code there;
//! - fd 4: the command pipe bash reads its script from, one line per command.
//!
//! Each command travels on the command pipe itself, as one line `__runway_run WORD`
//! with the command quoted as bash's `printf %q` would ([`printf_q`]), which `eval`s it (like Travis's `travis_cmd`), then prints a sync
//! marker with a per-shell nonce on stdout, then the status on fd 3. The marker tells the
//! reader that every byte the command wrote has been seen, so output and statuses stay in
//! order. Nothing runway sends the shell passes through a file: only runway holds the
//! pipe's write end, so a job cannot redirect runway's next write (a link put where a
//! command file would be written is a door onto the host).

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::time::{Duration, Instant};

use super::{exited_within, find, group_alive, kill_group, live_groups, partial_suffix, printf_q};
use crate::cancel::{Cancel, Registration};
use crate::sandbox::{Child, JobPaths, Program, Sandbox, SandboxError};

/// What the shell's reader threads report.
#[derive(Debug)]
pub enum ShellEvent {
    /// Bytes the job printed (stdout and stderr, interleaved as written).
    Output(Vec<u8>),
    /// Every byte of the last command's output has been delivered.
    Sync,
    /// The last command's exit status.
    Status(i32),
    /// The output pipe closed: every process holding it exited or closed it.
    Closed,
    /// The shell process exited (watched once the output closed).
    Exited,
    /// The build was canceled (sent by the build's [`Cancel`]).
    Canceled,
}

/// How waiting for a command ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Wait {
    /// The command finished with this exit status.
    Done(i32),
    /// The shell itself exited (`exit N` in a command), with its exit status.
    ShellExited(i32),
    /// Nothing was printed for the no-output limit.
    NoOutput,
    /// The job's time limit passed.
    JobTimeout,
    /// The build was canceled.
    Canceled,
    /// The output callback said stop: the job printed more than its log may hold.
    LogLimit,
}

/// A running job shell.
pub struct Shell {
    child: Child,
    commands: io::PipeWriter,
    events: Receiver<ShellEvent>,
    /// When the job started, for the job timeout.
    pub started: Instant,
    /// When the shell last printed anything.
    pub last_output: Instant,
    /// The build's cancel switch, with the waker that tells [`Shell::wait`].
    cancel: Option<(Cancel, Registration)>,
    /// Where the wakers send.
    tx: Sender<ShellEvent>,
    /// Marks the shell's processes (`__RUNWAY_NONCE` in their environment).
    nonce: String,
    /// The file recording this process group, removed when the shell ends.
    record: Option<PathBuf>,
    /// The sandbox's cgroups, removed after the shell's processes are gone.
    confined: crate::sandbox::Confined,
    /// The output pipe has closed (every writer gone): no output or sync will come.
    output_closed: bool,
}

const HELPERS: &str = include_str!("helpers.bash");

/// Where `bash` is on the `PATH` of `env` (the job's), found once here, where the exec
/// would try each directory of it in turn (the sandbox's root is this machine's). None
/// leaves the search to the exec.
fn bash_on(env: &[(String, String)]) -> Option<std::path::PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = env.iter().rev().find(|(k, _)| k == "PATH")?;
    std::env::split_paths(&path.1)
        .filter(|d| d.is_absolute())
        .map(|d| d.join("bash"))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// The prelude as a sealed in-memory file (nobody, the job included, can change it)
/// for the shell to source as its descriptor 5.
fn helpers_file() -> io::Result<std::fs::File> {
    use std::io::Write as _;
    // SAFETY: memfd_create(2) with a NUL-terminated name; the descriptor is ours.
    let fd = unsafe {
        libc::memfd_create(
            c"runway-helpers".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just made and is owned by nothing else.
    let mut f = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    f.write_all(HELPERS.as_bytes())?;
    f.write_all(b"\n")?;
    let seals = libc::F_SEAL_WRITE | libc::F_SEAL_GROW | libc::F_SEAL_SHRINK | libc::F_SEAL_SEAL;
    // SAFETY: fcntl(2) on the descriptor `f` owns.
    if unsafe { libc::fcntl(f.as_raw_fd(), libc::F_ADD_SEALS, seals) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(f)
}

/// Why a job's shell did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// Pipes, files or the spawn failed.
    #[error("{0}")]
    Io(#[from] io::Error),
    /// The sandbox could not be made.
    #[error("the sandbox could not be made: {0}")]
    Sandbox(#[from] SandboxError),
}

impl Shell {
    /// Starts `bash` in `cwd` with exactly `env`, inside `sandbox` (which shows the job
    /// the paths of `job`).
    pub fn start(
        cwd: &Path,
        env: &[(String, String)],
        sandbox: &dyn Sandbox,
        job: &JobPaths,
    ) -> Result<Shell, StartError> {
        let (out_r, out_w) = io::pipe()?;
        let (status_r, status_w) = io::pipe()?;
        let (cmd_r, cmd_w) = io::pipe()?;
        let nonce = nonce();
        let mut vars = env.to_vec();
        vars.push(("__RUNWAY_NONCE".into(), nonce.clone()));
        let null = std::fs::File::open("/dev/null")?;
        let program = Program {
            path: bash_on(env).unwrap_or_else(|| "bash".into()),
            arg0: "bash".into(),
            args: ["--noprofile", "--norc", "/dev/fd/4"]
                .map(String::from)
                .to_vec(),
            env: vars,
            cwd: cwd.to_path_buf(),
            // stdin reads nothing; stdout and stderr share one pipe; then the status
            // pipe (3), the command pipe (4) and the prelude (5).
            fds: vec![
                null.into(),
                out_w.try_clone()?.into(),
                out_w.into(),
                status_w.into(),
                cmd_r.into(),
                helpers_file()?.into(),
            ],
        };
        let enclosure = sandbox.enclose(job)?;
        let mut child = match enclosure.spawn(program) {
            Ok(c) => c,
            // The step that failed, when the sandbox said; else the spawn's error.
            Err(SandboxError::Io(e)) => {
                return Err(enclosure.confirm(None).err().map_or(e.into(), Into::into));
            }
            Err(e) => return Err(e.into()),
        };
        let confined = match enclosure.confirm(Some(child.id())) {
            Ok(c) => c,
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(e.into());
            }
        };
        live_groups().push(child.id() as i32);
        let (tx, events) = mpsc::channel();
        spawn_output_reader(out_r, tx.clone(), format!("\x1eRUNWAY-SYNC-{nonce}\x1e"));
        spawn_status_reader(status_r, tx.clone());
        let now = Instant::now();
        let mut shell = Shell {
            child,
            commands: cmd_w,
            events,
            started: now,
            last_output: now,
            cancel: None,
            tx,
            nonce,
            record: None,
            confined,
            output_closed: false,
        };
        // The prelude is sourced from a file (read whole, where bash reads a pipe a
        // byte at a time: 4,400 reads); the job's commands follow down the pipe.
        shell.commands.write_all(b". /dev/fd/5; exec 5<&-\n")?;
        Ok(shell)
    }

    /// Ends [`Shell::wait`] with [`Wait::Canceled`] as soon as `cancel` is set.
    pub fn cancel_on(&mut self, cancel: &Cancel) {
        let tx = self.tx.clone();
        let registration = cancel.on_cancel(move || {
            let _ = tx.send(ShellEvent::Canceled);
        });
        self.cancel = Some((cancel.clone(), registration));
    }

    /// The memory limit, when the kernel killed a process of the job for passing it.
    pub fn memory_exceeded(&self) -> Option<u64> {
        self.confined.memory_exceeded()
    }

    /// Where the job's files are, for the work runway does on them (its caches).
    pub fn files(&self) -> &crate::sandbox::Files {
        self.confined.files()
    }

    /// The shell's process group id (= its pid).
    pub fn pgid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Records the process group as `DIR/PGID` (holding the nonce, the job's workspace
    /// and this runway's process) while the shell runs, so that the next runway, after a
    /// crash, can end it and remove the workspace ([`super::end_orphans`]).
    pub fn record_in(&mut self, dir: &Path, workspace: &Path) -> io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(self.pgid().to_string());
        super::RECORDS.write(
            &path,
            format!(
                "{}\n{}\n{}",
                self.nonce,
                workspace.display(),
                super::owner()
            )
            .as_bytes(),
        )?;
        self.record = Some(path);
        Ok(())
    }

    /// Sends one command; its output and status arrive through [`Shell::wait`].
    pub fn send(&mut self, command: &str) -> io::Result<()> {
        writeln!(self.commands, "__runway_run {}", printf_q(command))?;
        self.commands.flush()
    }

    /// Waits for the command sent last, passing its output to `on_output`, until it
    /// finishes, a limit passes, or `on_output` returns false.
    pub fn wait(
        &mut self,
        no_output: Duration,
        job_limit: Duration,
        on_output: &mut dyn FnMut(&[u8]) -> bool,
    ) -> Wait {
        let (mut status, mut synced) = (None, false);
        loop {
            if let (Some(code), true) = (status, synced || self.output_closed) {
                return Wait::Done(code);
            }
            let now = Instant::now();
            let job_deadline = self.started + job_limit;
            let quiet_deadline = self.last_output + no_output;
            if now >= job_deadline {
                return Wait::JobTimeout;
            }
            if now >= quiet_deadline {
                return Wait::NoOutput;
            }
            if self.cancel.as_ref().is_some_and(|(c, _)| c.is_canceled()) {
                return Wait::Canceled;
            }
            // A cancel arrives as an event: nothing wakes before a deadline otherwise.
            match self
                .events
                .recv_timeout(job_deadline.min(quiet_deadline) - now)
            {
                Ok(ShellEvent::Canceled) => return Wait::Canceled,
                Ok(ShellEvent::Output(bytes)) => {
                    self.last_output = Instant::now();
                    if !on_output(&bytes) {
                        return Wait::LogLimit;
                    }
                }
                Ok(ShellEvent::Sync) => synced = true,
                Ok(ShellEvent::Status(code)) => status = Some(code),
                Ok(ShellEvent::Closed) => {
                    // No byte can follow: a status alone ends the command from now on.
                    // The shell may still run (a job can close its own output and
                    // sleep): its exit arrives as an event and the deadlines above
                    // still hold, so a closed output never stops the clock.
                    self.output_closed = true;
                    watch_exit(self.child.id() as i32, self.tx.clone());
                }
                Ok(ShellEvent::Exited) => {
                    let code = self.child.wait().ok().and_then(|s| s.code()).unwrap_or(137);
                    return Wait::ShellExited(code);
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let code = self.child.wait().ok().and_then(|s| s.code()).unwrap_or(137);
                    return Wait::ShellExited(code);
                }
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    /// Kills the shell's whole process group (the shell and everything it started)
    /// and reaps the shell.
    pub fn kill(&mut self) {
        kill_group(self.pgid(), libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// Ends the job: asks the group to stop, then kills what is left after `grace`.
    /// The shell's exit is waited for on a pidfd (no polling); only processes of the
    /// group that outlive it (bare-host jobs; a sandbox's die with its namespace) are
    /// looked for again.
    pub fn finish(mut self, grace: Duration) {
        kill_group(self.pgid(), libc::SIGTERM);
        self.confined.leave_behind();
        let deadline = Instant::now() + grace;
        exited_within(self.child.id() as i32, grace);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait()
                && !group_alive(self.pgid())
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.kill();
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.kill();
        } else if group_alive(self.pgid()) {
            kill_group(self.pgid(), libc::SIGKILL);
        }
        if let Some(record) = &self.record {
            super::RECORDS.retire(record, super::SPARE_RECORD.as_bytes());
        }
        let pgid = self.pgid();
        live_groups().retain(|g| *g != pgid);
    }
}

/// Sends [`ShellEvent::Exited`] once process `pid` (a child of ours) has exited, without
/// reaping it (`waitid` with `WNOWAIT`), from a thread of its own.
fn watch_exit(pid: i32, tx: Sender<ShellEvent>) {
    std::thread::spawn(move || {
        loop {
            // SAFETY: waitid(2) on our own child with a zeroed siginfo it fills in.
            let r = unsafe {
                let mut info: libc::siginfo_t = std::mem::zeroed();
                libc::waitid(
                    libc::P_PID,
                    pid as libc::id_t,
                    &mut info,
                    libc::WEXITED | libc::WNOWAIT,
                )
            };
            if r == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let _ = tx.send(ShellEvent::Exited);
    });
}

fn spawn_output_reader(mut pipe: io::PipeReader, tx: Sender<ShellEvent>, marker: String) {
    std::thread::spawn(move || {
        let marker = marker.into_bytes();
        let mut pending: Vec<u8> = Vec::new();
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match pipe.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            pending.extend_from_slice(&buf[..n]);
            // Emit everything up to each marker, then the sync.
            while let Some(at) = find(&pending, &marker) {
                if at > 0 && tx.send(ShellEvent::Output(pending[..at].to_vec())).is_err() {
                    return;
                }
                let _ = tx.send(ShellEvent::Sync);
                pending.drain(..at + marker.len());
            }
            // Hold back only a tail that could be the start of a marker.
            let keep = partial_suffix(&pending, &marker);
            let emit = pending.len() - keep;
            if emit > 0 {
                if tx
                    .send(ShellEvent::Output(pending[..emit].to_vec()))
                    .is_err()
                {
                    return;
                }
                pending.drain(..emit);
            }
        }
        if !pending.is_empty() {
            let _ = tx.send(ShellEvent::Output(pending));
        }
        let _ = tx.send(ShellEvent::Closed);
    });
}

fn spawn_status_reader(pipe: io::PipeReader, tx: Sender<ShellEvent>) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if let Ok(code) = line.trim().parse()
                && tx.send(ShellEvent::Status(code)).is_err()
            {
                break;
            }
        }
    });
}

fn nonce() -> String {
    use std::hash::{BuildHasher, RandomState};
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(Instant::now());
    format!("{a:016x}{b:016x}")
}
