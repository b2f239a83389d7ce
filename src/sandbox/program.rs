//! What a sandbox starts ([`Program`]: a program, its arguments, its environment and
//! its descriptors) and the process it became ([`Child`]: runway's child, whichever
//! process forked it).

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};

use super::sys::{PLACED_MAX, Wire, place};

/// A program to start, with everything it gets.
#[derive(Debug)]
pub struct Program {
    /// An absolute path, or a name looked for on the `PATH` of `env`.
    pub path: PathBuf,
    /// Its `argv[0]`.
    pub arg0: String,
    /// Its other arguments.
    pub args: Vec<String>,
    /// Exactly the environment it gets.
    pub env: Vec<(String, String)>,
    /// Where it starts on the bare host (a sandbox starts it in its layout's `cwd`).
    pub cwd: PathBuf,
    /// Its descriptors 0, 1, 2, … in order.
    pub fds: Vec<OwnedFd>,
}

impl Program {
    /// The same as a command runway forks itself: in a process group of its own, its
    /// descriptors placed before any other `pre_exec` step runs.
    pub fn command(self) -> Command {
        let mut cmd = Command::new(&self.path);
        cmd.arg0(&self.arg0)
            .args(&self.args)
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .current_dir(&self.cwd)
            .process_group(0);
        let mut fds = self.fds.into_iter();
        cmd.stdin(fds.next().map_or(Stdio::null(), Stdio::from))
            .stdout(fds.next().map_or(Stdio::null(), Stdio::from))
            .stderr(fds.next().map_or(Stdio::null(), Stdio::from));
        let rest: Vec<OwnedFd> = fds.collect();
        if !rest.is_empty() {
            // SAFETY: between fork and exec, `place` makes only async-signal-safe
            // calls on descriptors the closure owns; nothing is allocated.
            unsafe {
                cmd.pre_exec(move || {
                    if rest.len() > PLACED_MAX {
                        return Err(io::Error::from_raw_os_error(libc::EMFILE));
                    }
                    let mut raw = [0; PLACED_MAX];
                    for (r, fd) in raw.iter_mut().zip(&rest) {
                        *r = fd.as_raw_fd();
                    }
                    place(&raw[..rest.len()], 3)
                });
            }
        }
        cmd
    }

    /// The program, its arguments and its environment for the spawner
    /// ([`super::spawner`]); refused when one holds a NUL byte.
    pub fn encode(&self, out: &mut Wire) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let nul = |_| io::Error::new(io::ErrorKind::InvalidInput, "a NUL byte in a command");
        out.cstr(&CString::new(self.path.as_os_str().as_bytes()).map_err(nul)?);
        out.num(1 + self.args.len() as u64);
        for a in std::iter::once(&self.arg0).chain(&self.args) {
            out.cstr(&CString::new(a.as_bytes()).map_err(nul)?);
        }
        out.num(self.env.len() as u64);
        for (k, v) in &self.env {
            out.cstr(&CString::new(format!("{k}={v}")).map_err(nul)?);
        }
        Ok(())
    }
}

/// A process a sandbox started: runway's child until [`Child::wait`] reaps it.
#[derive(Debug)]
pub struct Child {
    pid: libc::pid_t,
    status: Option<ExitStatus>,
}

impl From<std::process::Child> for Child {
    fn from(c: std::process::Child) -> Child {
        // Dropping std's handle neither kills nor reaps: the process is ours to wait for.
        Child::of(c.id() as libc::pid_t)
    }
}

impl Child {
    /// The child `pid` (one of this process's children).
    pub fn of(pid: libc::pid_t) -> Child {
        Child { pid, status: None }
    }

    /// Its process id.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Sends it `SIGKILL`, unless it has been reaped (its id may name another process).
    pub fn kill(&mut self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        // SAFETY: kill(2) of our own unreaped child: the id cannot have been reused.
        if unsafe { libc::kill(self.pid, libc::SIGKILL) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Waits for it to exit and reaps it.
    pub fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            match self.reap(0)? {
                Some(status) => return Ok(status),
                None => continue,
            }
        }
    }

    /// Reaps it if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.reap(libc::WNOHANG)
    }

    fn reap(&mut self, flags: libc::c_int) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let mut status = 0;
        // SAFETY: waitpid(2) of our own child, writing only `status`.
        match unsafe { libc::waitpid(self.pid, &mut status, flags) } {
            0 => Ok(None),
            p if p == self.pid => {
                self.status = Some(ExitStatus::from_raw(status));
                Ok(self.status)
            }
            _ => {
                let e = io::Error::last_os_error();
                match e.kind() {
                    io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                }
            }
        }
    }
}
