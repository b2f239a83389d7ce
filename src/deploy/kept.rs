//! The kept copy of the machine (`runway codedeploy rehearse --keep`): a detached runway
//! process (`runway codedeploy machine`, started by runway, not by people) holds one
//! rehearsal [`Machine`] per application and deployment group, and deploys the
//! revisions that later rehearsals of that group send it, so revision 2 deploys over a
//! running revision 1 as on a server. `--stop` ends it and everything its hooks
//! started.
//!
//! The two talk over a unix socket in runway's state directory (a directory only its
//! user may enter). The client binds the socket and hands it to the machine it starts,
//! so its first request waits in the socket's queue rather than in a retry loop. It
//! sends one JSON line ([`Request`]); the machine answers with frames (a kind byte, a
//! big-endian `u32` length, the bytes): `o` output, then `x` the exit code, and closes.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::rehearse::{Machine, RehearseOptions};

/// The descriptor the machine finds its listening socket on.
const LISTENER_FD: i32 = 3;

/// What a rehearsal asks of the kept machine.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// The revisions to deploy, in order (absolute paths).
    pub bundles: Vec<PathBuf>,
    /// End the machine afterwards.
    pub stop: bool,
}

/// Where the kept machine of `application`/`group` listens, under `state_dir`.
pub fn socket_path(state_dir: &Path, application: &str, group: &str) -> PathBuf {
    let safe = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect()
    };
    state_dir
        .join("rehearsals")
        .join(format!("{}--{}.sock", safe(application), safe(group)))
}

/// The kept machine at `socket`, when one answers. A socket nobody listens on (its
/// machine was killed) is removed.
pub fn connect(socket: &Path) -> io::Result<Option<UnixStream>> {
    match UnixStream::connect(socket) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            let _ = std::fs::remove_file(socket);
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// Starts a kept machine for `application`/`group` listening at `socket` (a detached
/// runway process in a session of its own, its output in `socket` with `.log`), and
/// returns a connection to it.
pub fn spawn(socket: &Path, application: &str, group: &str) -> io::Result<UnixStream> {
    let dir = socket.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let listener = UnixListener::bind(socket)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(socket.with_extension("log"))?;
    let fd = listener.as_raw_fd();
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(["codedeploy", "machine", "--application", application])
        .args(["--deployment-group", group, "--socket"])
        .arg(socket)
        .current_dir("/")
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: between fork and exec only async-signal-safe calls (setsid, dup2, fcntl).
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            if fd == LISTENER_FD {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(fd, LISTENER_FD) < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // The machine outlives this process; its exit is nobody's business here (it is
    // reaped by init once this process is gone).
    let _machine = cmd.spawn()?;
    UnixStream::connect(socket)
}

/// Sends `request` to the kept machine and copies what it says to `out`. Its exit code,
/// or ERRORED when the machine ended without one.
pub fn ask(mut stream: UnixStream, request: &Request, out: &mut dyn Write) -> io::Result<i32> {
    let mut line = serde_json::to_vec(request).map_err(io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line)?;
    let mut r = BufReader::new(stream);
    loop {
        let mut head = [0u8; 5];
        if r.read_exact(&mut head).is_err() {
            writeln!(
                out,
                "Rehearsal failed: the kept copy of the machine ended before it answered (its log is beside its socket)"
            )?;
            return Ok(crate::exit::ERRORED);
        }
        let len = u32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
        let mut body = vec![0u8; len.min(1 << 20)];
        r.read_exact(&mut body)?;
        match head[0] {
            b'o' => {
                out.write_all(&body)?;
                out.flush()?;
            }
            b'x' if body.len() == 4 => {
                return Ok(i32::from_be_bytes([body[0], body[1], body[2], body[3]]));
            }
            _ => {
                return Err(io::Error::other(
                    "the kept machine sent a frame runway does not know",
                ));
            }
        }
    }
}

/// A connection's output side: frames, and silence once the client is gone (the
/// deployment goes on; a rehearsal is never left half-run because a terminal closed).
struct Frames<'a> {
    stream: &'a UnixStream,
    gone: bool,
}

impl Frames<'_> {
    fn frame(&mut self, kind: u8, body: &[u8]) {
        if self.gone {
            return;
        }
        let mut f = Vec::with_capacity(body.len() + 5);
        f.push(kind);
        f.extend_from_slice(&(body.len() as u32).to_be_bytes());
        f.extend_from_slice(body);
        if (&*self.stream).write_all(&f).is_err() {
            self.gone = true;
        }
    }
}

impl Write for Frames<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for chunk in buf.chunks(1 << 20) {
            self.frame(b'o', chunk);
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Reads one request from a connection.
fn request(stream: &UnixStream) -> io::Result<Request> {
    let mut line = String::new();
    BufReader::new(stream.take(1 << 20)).read_line(&mut line)?;
    serde_json::from_str(&line).map_err(io::Error::other)
}

/// The kept machine's life (`runway codedeploy machine`): makes the copy, then deploys
/// what each connection on the inherited listener asks, one at a time, until one asks
/// it to stop. Returns the process's exit code.
pub fn serve(socket: &Path, opts: &RehearseOptions) -> i32 {
    // SAFETY: `spawn` put the listening socket on this descriptor; nothing else owns it.
    let listener = unsafe { UnixListener::from_raw_fd(LISTENER_FD) };
    let mut machine = match Machine::start(opts) {
        Ok(m) => m,
        Err(e) => {
            // The client that started it waits for an answer: give it the reason.
            if let Ok((s, _)) = listener.accept() {
                let mut f = Frames {
                    stream: &s,
                    gone: false,
                };
                let _ = writeln!(
                    f,
                    "Rehearsal failed: the copy of the machine could not be made: {e}"
                );
                f.frame(b'x', &crate::exit::ERRORED.to_be_bytes());
            }
            let _ = std::fs::remove_file(socket);
            return crate::exit::ERRORED;
        }
    };
    eprintln!(
        "runway: kept copy of the machine for {}/{} up (pid {})",
        opts.application,
        opts.group,
        std::process::id()
    );
    loop {
        let Ok((s, _)) = listener.accept() else {
            continue;
        };
        let Ok(req) = request(&s) else {
            continue;
        };
        let mut f = Frames {
            stream: &s,
            gone: false,
        };
        let code = deploy(&mut machine, &req.bundles, &mut f);
        if req.stop {
            // The socket goes first: no request may queue for a machine ending.
            let _ = std::fs::remove_file(socket);
            let _ = machine.end(false, &mut io::sink());
            say_stopped(&mut f, code, req.bundles.len(), opts);
            f.frame(b'x', &code.to_be_bytes());
            eprintln!("runway: kept copy of the machine stopped");
            return code;
        }
        say_kept(&mut f, code, req.bundles.len(), opts);
        f.frame(b'x', &code.to_be_bytes());
    }
}

/// Deploys the bundles of one request on the machine (none: nothing to do).
fn deploy(machine: &mut Machine, bundles: &[PathBuf], f: &mut Frames<'_>) -> i32 {
    if bundles.is_empty() {
        return crate::exit::PASSED;
    }
    match machine.deploy(bundles, f) {
        Ok(code) => code,
        Err(e) => {
            let _ = writeln!(f, "Rehearsal failed: {e}");
            crate::exit::ERRORED
        }
    }
}

/// The last lines of a rehearsal that ended the machine.
fn say_stopped(f: &mut Frames<'_>, code: i32, n: usize, opts: &RehearseOptions) {
    if code == crate::exit::PASSED && n > 0 {
        let _ = writeln!(
            f,
            "Rehearsal succeeded: {n} revision(s) deployed on the kept copy of this machine"
        );
    }
    let _ = writeln!(
        f,
        "Stopped the kept copy of the machine for {}/{}: it and what its hooks started are gone",
        opts.application, opts.group
    );
}

/// The last line of a rehearsal on a machine that keeps running.
fn say_kept(f: &mut Frames<'_>, code: i32, n: usize, opts: &RehearseOptions) {
    if code == crate::exit::PASSED {
        let _ = writeln!(
            f,
            "Rehearsal succeeded: {n} revision(s) deployed on the kept copy of this machine (pid {}); it keeps running until `runway codedeploy rehearse --stop --application {} --deployment-group {}`",
            std::process::id(),
            crate::process::quote(&opts.application),
            crate::process::quote(&opts.group)
        );
    } else {
        let _ = writeln!(
            f,
            "The kept copy of the machine keeps running, on the last revision that deployed"
        );
    }
}
