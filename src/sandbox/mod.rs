//! Where a job's shell runs: on a throwaway copy of the machine, or on the bare host.
//!
//! The [`Sandbox`] trait sits at this side effect: the job's shell asks it to enclose the
//! `bash` it is about to start. Two implementations:
//! - [`Namespaces`]: new mount, PID, IPC and UTS namespaces (and a network namespace with
//!   only loopback when a repository turns the network off), made by runway with system
//!   calls. The root is the host's `/` as a copy-on-write overlay whose upper layer lives
//!   in the job's workspace, so whatever the job installs or breaks is gone with it. The
//!   job gets a private `/tmp` and `/run`, a minimal `/dev`, its own `/proc`, its
//!   workspace at the same paths (`TRAVIS_BUILD_DIR` unchanged), and not runway's state,
//!   caches, runway.toml or env files. It stays uid 0 inside (so `apt-get install` and
//!   `pip install` work) but without the capabilities that reach past the sandbox, and
//!   with a seccomp filter in the way of mounts, namespaces, modules, the clock.
//! - [`Bare`]: the host, as before; chosen only by `--sandbox none` / `sandbox = "none"`.
//!
//! [`layout`] decides every mount from plain data (pure, tested on strings);
//! [`sys`] carries it out between `fork` and `exec` without allocating.

pub mod cgroup;
pub mod disk;
mod program;
mod seccomp;
pub mod spawner;
mod sys;

pub use program::{Child, Program};
pub use sys::CacheLayers;

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The start of the name of every job directory runway makes in the temp dir (a
/// workspace, a sandbox's scratch): a crash's leftovers are found by it.
pub const JOB_DIR_PREFIX: &str = "runway-job-";

/// A new job directory in the temp dir, named after this process
/// (`runway-job-PID-XXXXXX`): one that a runway killed before it could remove it is
/// removed by the next runway's [`disk::sweep`] once that process is gone.
pub fn job_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix(&format!("{JOB_DIR_PREFIX}{}-", std::process::id()))
        .tempdir()
}

/// Errors making a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    /// A path the layout cannot express (an overlay option cannot hold `,` or `:`).
    #[error("{0}: a sandbox cannot mount a path holding ',', ':' or a NUL byte")]
    Path(PathBuf),
    /// A step failed inside the new namespaces.
    #[error("{step}: {error}")]
    Step {
        /// What was being done (`overlay of / on …`).
        step: String,
        /// The system's answer.
        error: std::io::Error,
    },
    /// Preparing the sandbox's directories or reading the host's mounts failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// This build of runway has no sandbox for this architecture.
    #[error("the sandbox supports x86_64 and aarch64 Linux only")]
    Unsupported,
}

impl SandboxError {
    /// What the person can do about it.
    pub fn hint(&self) -> String {
        // SAFETY: geteuid(2) cannot fail.
        let uid = unsafe { libc::geteuid() };
        let who = if uid == 0 {
            String::new()
        } else {
            format!(" (runway runs as uid {uid}, not root)")
        };
        format!(
            "runway makes each job's sandbox with mount and PID namespaces and an overlay of \
             `/`, which needs root (or CAP_SYS_ADMIN){who} and a kernel with overlayfs; run \
             with `--sandbox none` (or `sandbox = \"none\"` in runway.toml) to run jobs on \
             the bare host, without isolation"
        )
    }
}

/// The paths of one job's workspace that the sandbox shows to the job.
#[derive(Clone, Debug)]
pub struct JobPaths {
    /// The workspace's top directory (holds the others and the sandbox's own layers).
    pub root: PathBuf,
    /// The checkout (`TRAVIS_BUILD_DIR`), where the shell starts.
    pub build_dir: PathBuf,
    /// The job's `$HOME`.
    pub home: PathBuf,
    /// runway's scratch files (the shell's command files).
    pub scratch: PathBuf,
}

/// A started enclosure: [`Enclosure::confirm`] after the spawn says whether the
/// sandbox was made.
pub struct Enclosure {
    /// The sandbox as init will make it, and the pipe it reports on (none: the bare
    /// host).
    made: Option<(std::sync::Arc<sys::Prepared>, sys::SetupReport)>,
    cgroup: Option<cgroup::JobCgroup>,
}

impl Enclosure {
    /// Nothing to confirm (the bare host).
    pub fn none() -> Enclosure {
        Enclosure {
            made: None,
            cgroup: None,
        }
    }

    /// Starts `program`: in a sandbox, as the first process of a PID namespace of its
    /// own, forked by the [`spawner`] when there is one, else by runway
    /// ([`sys::spawn_as_init`]).
    pub fn spawn(&self, program: Program) -> Result<Child, SandboxError> {
        let Some((prepared, _)) = &self.made else {
            return Ok(program.command().spawn()?.into());
        };
        if let Some(started) = spawner::spawn(prepared, &program) {
            return Ok(Child::of(started?));
        }
        let mut cmd = program.command();
        sys::enclose(&mut cmd, prepared.clone());
        Ok(sys::spawn_as_init(&mut cmd)?.into())
    }

    /// Waits until the shell runs inside its sandbox, or reports the step that failed.
    /// Call after [`Enclosure::spawn`] returned: `init` is the child it started (none
    /// when it failed).
    pub fn confirm(self, init: Option<u32>) -> Result<Confined, SandboxError> {
        let mut files = Files::Host;
        if let Some((_, report)) = self.made {
            report.wait()?;
            // A shell that has already ended (a sandbox check's `true`) leaves no view.
            files = match init.map(|pid| sys::mount_namespace(pid as i32)) {
                Some(Ok(mnt)) => Files::Job(JobView { mnt }),
                Some(Err(e)) => Files::Gone(e.to_string()),
                None => Files::Gone("the sandbox's init did not start".into()),
            };
        }
        Ok(Confined {
            cgroup: self.cgroup,
            files,
        })
    }
}

/// What a running job's sandbox keeps until the job ends: its cgroups, and its view of
/// the files (the mount namespace) for the work runway does there on the job's behalf.
#[derive(Debug, Default)]
pub struct Confined {
    cgroup: Option<cgroup::JobCgroup>,
    files: Files,
}

/// Where runway does what a job asked of its files (its caches).
#[derive(Debug, Default)]
pub enum Files {
    /// On the bare host (`--sandbox none`): the job's files are the host's.
    #[default]
    Host,
    /// Inside the job's sandbox.
    Job(JobView),
    /// The job had a sandbox, but its view could not be held: nothing is done.
    Gone(String),
}

/// A job's view of the machine: its mount namespace, held open. What runway does with
/// paths or bytes the job can influence (its caches) runs in a helper process inside it
/// ([`JobView::helper`]), so every path resolves, and every link leads, where it would
/// for the job: into the job's own copy of the machine, never the host's.
#[derive(Debug)]
pub struct JobView {
    mnt: std::os::fd::OwnedFd,
}

impl JobView {
    /// A command that runs runway's own binary with `args` inside the job's view, with
    /// the job's privileges (see [`sys::helper`]). Set its stdio before spawning.
    pub fn helper(&self, args: &[String]) -> Result<Command, SandboxError> {
        self.helper_with(args, &[])
    }

    /// [`JobView::helper`] that also gets `fds` (runway's own directories, at most 8) as
    /// its descriptors 3, 4, …
    pub fn helper_with(
        &self,
        args: &[String],
        fds: &[std::os::fd::BorrowedFd],
    ) -> Result<Command, SandboxError> {
        let exe = std::fs::File::open("/proc/self/exe")?;
        let mut cmd = Command::new("/proc/self/exe");
        cmd.env_clear().current_dir("/");
        sys::helper(&mut cmd, &self.mnt, exe.into(), args, fds)?;
        Ok(cmd)
    }

    /// Mounts a stored cache at `target` (resolved in the job's view) as a copy-on-write
    /// layer (see [`sys::mount_cache`]); true when the directory held something already.
    pub fn mount_cache(
        &self,
        target: &Path,
        layers: &sys::CacheLayers,
    ) -> Result<bool, SandboxError> {
        sys::mount_cache(&self.mnt, target, layers)
    }
}

impl Confined {
    /// The job has ended: in a one-shot runway, its view of the files (the last hold
    /// on its mount namespace once its processes are gone) goes to [`crate::behind`],
    /// so that the namespace's teardown is not waited for.
    pub fn leave_behind(&mut self) {
        if !crate::behind::active() {
            return;
        }
        if let Files::Job(view) =
            std::mem::replace(&mut self.files, Files::Gone("the job has ended".into()))
        {
            // Not taken: closed here, before the job's processes are gone (its init
            // holds the namespace then, and tears it down as it exits).
            let _ = crate::behind::hand_off(view.mnt);
        }
    }

    /// Where the job's files are, for runway's work on them.
    pub fn files(&self) -> &Files {
        &self.files
    }

    /// The memory limit, when the kernel killed a process of the job for passing it.
    pub fn memory_exceeded(&self) -> Option<u64> {
        self.cgroup.as_ref()?.memory_exceeded()
    }
}

/// Where runway's own user keeps credentials (`~/.ssh`, `~/.aws`, `~/.netrc`, …):
/// hidden from every job, as the server's other secrets are. A job that needs a
/// credential gets it as a repository setting.
pub const CREDENTIALS: &[&str] = &[
    ".ssh",
    ".aws",
    ".netrc",
    ".git-credentials",
    ".docker/config.json",
    ".pypirc",
    ".npmrc",
    ".gnupg",
    ".kube",
    ".config/gh",
    ".config/gcloud",
    ".azure",
];

/// [`CREDENTIALS`] under runway's `$HOME`.
pub fn credential_paths() -> Vec<PathBuf> {
    std::env::var_os("HOME")
        .map(|h| CREDENTIALS.iter().map(|c| Path::new(&h).join(c)).collect())
        .unwrap_or_default()
}

/// What `--sandbox` and runway.toml's `sandbox` choose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Each job in its own namespaces on a copy-on-write root (the default).
    #[default]
    Namespaces,
    /// The bare host, with a warning.
    None,
}

/// Where a job's shell runs.
pub trait Sandbox: Send + Sync + fmt::Debug {
    /// Prepares this sandbox for the job `job`, for [`Enclosure::spawn`] to start its
    /// `bash` inside.
    fn enclose(&self, job: &JobPaths) -> Result<Enclosure, SandboxError>;
    /// One line for the job's header: what the job runs on.
    fn describe(&self) -> String;
    /// True when jobs run on the bare host.
    fn is_bare(&self) -> bool {
        false
    }
    /// The job's disk budget, bytes ([`disk`]): its workspace is a filesystem of this
    /// size. None: the host's disk.
    fn disk(&self) -> Option<u64> {
        None
    }
    /// The host paths this sandbox hides from jobs (runway's state and caches, what
    /// runway.toml's `hide` lists): left out of a workspace copied from a directory
    /// that holds them.
    fn hidden(&self) -> Vec<PathBuf> {
        Vec::new()
    }
    /// The sandbox a deploy rehearsal of this job's bundle runs in: a copy of the
    /// machine like the job's, with the same hidden paths, in a network namespace of
    /// its own.
    fn rehearsal(&self) -> std::sync::Arc<dyn Sandbox>;
}

/// Jobs on the bare host: no isolation. What `--sandbox none` chooses.
#[derive(Debug, Default)]
pub struct Bare;

/// What `--sandbox none` loses, said once at start.
pub const BARE_WARNING: &str = "--sandbox none: jobs run on the bare host, as runway's \
    user: they can change the host (its packages, /tmp, ~/.cargo), leave daemons behind, and \
    read runway's state, caches, runway.toml and environment";

impl Sandbox for Bare {
    fn enclose(&self, _job: &JobPaths) -> Result<Enclosure, SandboxError> {
        Ok(Enclosure::none())
    }
    fn describe(&self) -> String {
        "Sandbox: none (the bare host; nothing is isolated)".into()
    }
    fn is_bare(&self) -> bool {
        true
    }
    fn rehearsal(&self) -> std::sync::Arc<dyn Sandbox> {
        // The bare host knows no state or cache paths to hide: runway's user's
        // credentials at least.
        std::sync::Arc::new(Namespaces::new(Policy {
            no_network: true,
            hide: credential_paths(),
            show: Vec::new(),
        }))
    }
}

/// What a repository or the command line chose for the namespaces sandbox.
#[derive(Clone, Debug, Default)]
pub struct Policy {
    /// False: the job gets its own network namespace with only loopback.
    pub no_network: bool,
    /// Paths the job must not see (runway's state, caches, runway.toml, env files, and
    /// what runway.toml's `hide` lists). Missing paths are skipped.
    pub hide: Vec<PathBuf>,
    /// Host directories the job sees copy-on-write even where the sandbox makes a
    /// directory afresh (runway's toolchain directory under `/tmp`, say).
    pub show: Vec<PathBuf>,
}

/// A job per throwaway copy of the machine (see the module's header).
#[derive(Clone, Debug)]
pub struct Namespaces {
    policy: Policy,
    limits: Option<(cgroup::Hierarchy, cgroup::Limits)>,
    disk: Option<u64>,
}

impl Namespaces {
    /// The sandbox with `policy`.
    pub fn new(policy: Policy) -> Namespaces {
        Namespaces {
            policy,
            limits: None,
            disk: None,
        }
    }

    /// Each job's workspace a filesystem of `bytes` ([`disk`]).
    pub fn with_disk(mut self, bytes: Option<u64>) -> Self {
        self.disk = bytes;
        self
    }

    /// Each job in a cgroup of `hierarchy` with `limits`.
    pub fn with_limits(mut self, hierarchy: cgroup::Hierarchy, limits: cgroup::Limits) -> Self {
        self.limits = (!limits.is_empty()).then_some((hierarchy, limits));
        self
    }

    /// Makes one sandbox and runs `true` in it, so that a machine that cannot make one
    /// is told at start, with what is missing, rather than at every job.
    pub fn check(&self) -> Result<(), SandboxError> {
        let dir = job_dir()?;
        let job = JobPaths {
            root: dir.path().to_path_buf(),
            build_dir: dir.path().join("build"),
            home: dir.path().join("home"),
            scratch: dir.path().join("runway"),
        };
        for d in [&job.build_dir, &job.home, &job.scratch] {
            std::fs::create_dir_all(d)?;
        }
        let null = || std::fs::File::open("/dev/null").map(std::os::fd::OwnedFd::from);
        let program = Program {
            path: "true".into(),
            arg0: "true".into(),
            args: Vec::new(),
            env: std::env::var("PATH")
                .map(|p| vec![("PATH".to_string(), p)])
                .unwrap_or_default(),
            cwd: job.build_dir.clone(),
            fds: vec![null()?, null()?, null()?],
        };
        let enclosure = self.enclose(&job)?;
        let mut child = match enclosure.spawn(program) {
            Ok(c) => c,
            // The step that failed, when the sandbox said; else the spawn's error.
            Err(e) => return enclosure.confirm(None).and(Err(e)),
        };
        let confirmed = enclosure.confirm(Some(child.id()));
        let _ = child.wait();
        confirmed.map(drop)
    }
}

impl Sandbox for Namespaces {
    fn enclose(&self, job: &JobPaths) -> Result<Enclosure, SandboxError> {
        if !seccomp::SUPPORTED {
            return Err(SandboxError::Unsupported);
        }
        let layers = job.root.join("sandbox");
        let hidden = classify(&self.policy.hide);
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut policy = self.policy.clone();
        // Only what exists can be shown.
        policy.show.retain(|p| p.is_dir());
        let plan = layout(job, &layers, &policy, &hidden, &parse_mountinfo(&mountinfo))?;
        for dir in plan.dirs_to_make() {
            std::fs::create_dir_all(dir)?;
        }
        let cgroup = match &self.limits {
            Some((h, limits)) => {
                let name = job.root.file_name().unwrap_or_default().to_string_lossy();
                Some(cgroup::JobCgroup::create(h, &name, limits).map_err(|e| {
                    SandboxError::Step {
                        step: "making the job's cgroup".into(),
                        error: e,
                    }
                })?)
            }
            None => None,
        };
        let fds = cgroup.as_ref().map(|c| c.procs_fds()).unwrap_or_default();
        let (prepared, report) = sys::Prepared::new(&plan, !self.policy.no_network, fds)?;
        Ok(Enclosure {
            made: Some((std::sync::Arc::new(prepared), report)),
            cgroup,
        })
    }

    fn disk(&self) -> Option<u64> {
        self.disk
    }

    fn hidden(&self) -> Vec<PathBuf> {
        self.policy.hide.clone()
    }

    fn rehearsal(&self) -> std::sync::Arc<dyn Sandbox> {
        let mut copy = self.clone();
        copy.policy.no_network = true;
        std::sync::Arc::new(copy)
    }

    fn describe(&self) -> String {
        let mut limits = String::new();
        if let Some((_, l)) = &self.limits {
            if let Some(m) = l.memory {
                limits.push_str(&format!(", memory {}", cgroup::human_size(m)));
            }
            if let Some(p) = l.processes {
                limits.push_str(&format!(", {p} processes"));
            }
        }
        if let Some(d) = self.disk {
            limits.push_str(&format!(", disk {}", cgroup::human_size(d)));
        }
        format!(
            "Sandbox: namespaces (mount, pid, ipc, uts{}), a copy-on-write root, network {}{limits}",
            if self.policy.no_network { ", net" } else { "" },
            if self.policy.no_network {
                "off (loopback only)"
            } else {
                "on"
            }
        )
    }
}

/// A path to hide, as it is on the host.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hidden {
    /// A directory: an empty one is mounted over it.
    Dir(PathBuf),
    /// A file: `/dev/null` is mounted over it.
    File(PathBuf),
}

/// Sorts `paths` into directories and files; missing ones are dropped.
fn classify(paths: &[PathBuf]) -> Vec<Hidden> {
    paths
        .iter()
        .filter_map(|p| {
            let p = p.canonicalize().ok()?;
            let meta = std::fs::metadata(&p).ok()?;
            Some(if meta.is_dir() {
                Hidden::Dir(p)
            } else {
                Hidden::File(p)
            })
        })
        .collect()
}

/// One of the host's mounts, from `/proc/self/mountinfo`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostMount {
    /// Where it is mounted.
    pub point: PathBuf,
    /// Its filesystem type.
    pub fstype: String,
}

/// The mounts listed in a `/proc/PID/mountinfo` text, in order.
pub fn parse_mountinfo(text: &str) -> Vec<HostMount> {
    text.lines()
        .filter_map(|line| {
            let mut halves = line.splitn(2, " - ");
            let left: Vec<&str> = halves.next()?.split(' ').collect();
            let fstype = halves.next()?.split(' ').next()?.to_string();
            Some(HostMount {
                point: PathBuf::from(unescape_octal(left.get(4)?)),
                fstype,
            })
        })
        .collect()
}

/// Undoes mountinfo's `\040`-style escapes.
fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') as u32 * 64
                + (b[i + 2] - b'0') as u32 * 8
                + (b[i + 3] - b'0') as u32;
            out.push(v as u8);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Filesystems holding files a job may read (overlaid when mounted below `/`); the rest
/// (`proc`, `cgroup`, `tmpfs`, …) are replaced by the sandbox's own or left out.
const DISK_FILESYSTEMS: &[&str] = &[
    "ext2", "ext3", "ext4", "xfs", "btrfs", "zfs", "f2fs", "jfs", "bcachefs", "reiserfs",
];

/// Host directories the sandbox makes afresh rather than copies.
const FRESH: &[&str] = &["/proc", "/sys", "/dev", "/tmp", "/run"];

/// What the sandbox mounts, in order, before the job's root becomes `/`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// An overlay of the host's `lower` at `target`, its writes going to `upper`.
    Overlay {
        /// Where it appears (inside the new root).
        target: PathBuf,
        /// The host's directory.
        lower: PathBuf,
        /// Where writes go (on the host).
        upper: PathBuf,
        /// overlayfs's work directory (on the host).
        work: PathBuf,
    },
    /// A fresh filesystem of `fstype` at `target`.
    Fresh {
        /// `tmpfs`, `proc`, `sysfs`, `devpts`.
        fstype: &'static str,
        /// Where.
        target: PathBuf,
        /// Mount options (`mode=1777`).
        data: String,
        /// Mounted read-only.
        readonly: bool,
    },
    /// The host's `src` shown at `target`.
    Bind {
        /// The host's path.
        src: PathBuf,
        /// Where.
        target: PathBuf,
        /// Skipped when `target` does not exist (a `/proc` file this kernel lacks).
        optional: bool,
    },
    /// A host directory the job must not see, covered by an empty one (skipped when
    /// the sandbox has no such directory).
    Cover(PathBuf),
    /// `target` made read-only (bound onto itself, then remounted).
    ReadOnly {
        /// Where.
        target: PathBuf,
    },
    /// A directory, made when missing.
    Mkdir(PathBuf),
    /// An empty file, made when missing (for a file bind).
    File(PathBuf),
    /// A symbolic link `link` → `to`.
    Symlink {
        /// What the link points at.
        to: PathBuf,
        /// The link.
        link: PathBuf,
    },
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Step::Overlay { target, lower, .. } => write!(
                f,
                "mounting an overlay of {} on {}",
                lower.display(),
                target.display()
            ),
            Step::Fresh {
                fstype,
                target,
                data,
                readonly,
            } => write!(
                f,
                "mounting {fstype} on {}{}{}",
                target.display(),
                if data.is_empty() {
                    String::new()
                } else {
                    format!(" ({data})")
                },
                if *readonly { " read-only" } else { "" }
            ),
            Step::Bind { src, target, .. } => {
                write!(f, "binding {} on {}", src.display(), target.display())
            }
            Step::ReadOnly { target } => write!(f, "making {} read-only", target.display()),
            Step::Cover(p) => write!(f, "covering {}", p.display()),
            Step::Mkdir(p) => write!(f, "making directory {}", p.display()),
            Step::File(p) => write!(f, "making file {}", p.display()),
            Step::Symlink { to, link } => {
                write!(f, "linking {} to {}", link.display(), to.display())
            }
        }
    }
}

/// Every mount of one job's sandbox, and where its root is made.
#[derive(Clone, Debug)]
pub struct Layout {
    /// The directory the new root is mounted on (on the host).
    pub root: PathBuf,
    /// The steps, with targets as the job will see them (relative to the new root).
    pub steps: Vec<Step>,
    /// Where the shell starts (the build directory).
    pub cwd: PathBuf,
    /// Host directories the layout needs before it starts (layers, the root).
    make: Vec<PathBuf>,
}

impl Layout {
    /// Host directories to create before the sandbox starts.
    pub fn dirs_to_make(&self) -> &[PathBuf] {
        &self.make
    }
}

/// `/proc` files the job may read but not write.
const PROC_READ_ONLY: &[&str] = &["/proc/sys", "/proc/bus", "/proc/fs", "/proc/irq"];
/// `/proc` files hidden behind `/dev/null` (the host's kernel memory, keys, timers).
const PROC_MASKED: &[&str] = &[
    "/proc/sysrq-trigger",
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/kallsyms",
];
/// The device nodes a job gets, bound from the host.
const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// `/proc` (parts read-only or masked), a read-only `/sys`, a small `/dev` with the
/// usual devices and a private devpts, and fresh `/dev/shm`, `/tmp` and `/run`.
fn system_mounts(steps: &mut Vec<Step>) {
    let fresh = |fstype, target: &str, data: &str, readonly| Step::Fresh {
        fstype,
        target: target.into(),
        data: data.into(),
        readonly,
    };
    steps.push(fresh("proc", "/proc", "", false));
    for p in PROC_READ_ONLY {
        steps.push(Step::ReadOnly { target: p.into() });
    }
    for p in PROC_MASKED {
        steps.push(Step::Bind {
            src: "/dev/null".into(),
            target: p.into(),
            optional: true,
        });
    }
    steps.push(fresh("sysfs", "/sys", "", true));
    steps.push(fresh("tmpfs", "/dev", "mode=755,size=1m", false));
    for d in DEVICES {
        let path = PathBuf::from("/dev").join(d);
        steps.push(Step::File(path.clone()));
        steps.push(Step::Bind {
            src: path.clone(),
            target: path,
            optional: false,
        });
    }
    for (link, to) in [
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
        ("/dev/ptmx", "pts/ptmx"),
    ] {
        steps.push(Step::Symlink {
            to: to.into(),
            link: link.into(),
        });
    }
    steps.push(Step::Mkdir("/dev/pts".into()));
    steps.push(fresh(
        "devpts",
        "/dev/pts",
        "newinstance,ptmxmode=0666,mode=620",
        false,
    ));
    steps.push(Step::Mkdir("/dev/shm".into()));
    // Sized: what a job writes there is the host's memory (charged to the job's memory
    // cgroup where it has one), and never more than these.
    steps.push(fresh("tmpfs", "/dev/shm", "mode=1777,size=1g", false));
    steps.push(fresh("tmpfs", "/tmp", "mode=1777,size=4g", false));
    steps.push(fresh("tmpfs", "/run", "mode=755,size=64m", false));
    steps.push(Step::Mkdir("/run/lock".into()));
}

/// The job's own workspace, at the same paths as on the host.
fn bind_workspace(job: &JobPaths, steps: &mut Vec<Step>) {
    for dir in [&job.build_dir, &job.home, &job.scratch] {
        for a in dir
            .ancestors()
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .skip(1)
        {
            steps.push(Step::Mkdir(a.to_path_buf()));
        }
        steps.push(Step::Bind {
            src: dir.clone(),
            target: dir.clone(),
            optional: false,
        });
    }
}

/// Every path a step names must fit in mount options (no `,`, `:` or NUL).
fn check_paths(steps: &[Step]) -> Result<(), SandboxError> {
    for s in steps {
        let paths: Vec<&Path> = match s {
            Step::Overlay {
                target,
                lower,
                upper,
                work,
            } => vec![target, lower, upper, work],
            Step::Bind { src, target, .. } => vec![src, target],
            Step::Fresh { target, .. } | Step::ReadOnly { target } => vec![target],
            Step::Mkdir(p) | Step::File(p) | Step::Cover(p) => vec![p],
            Step::Symlink { to, link } => vec![to, link],
        };
        if let Some(bad) = paths.into_iter().find(|p| {
            let s = p.as_os_str().as_encoded_bytes();
            s.contains(&b',') || s.contains(&b':') || s.contains(&0)
        }) {
            return Err(SandboxError::Path(bad.to_path_buf()));
        }
    }
    Ok(())
}

/// Decides every mount of one job's sandbox. `layers` is a host directory for the
/// overlays' upper and work directories; `hidden` and `mounts` are what the host has.
pub fn layout(
    job: &JobPaths,
    layers: &Path,
    policy: &Policy,
    hidden: &[Hidden],
    mounts: &[HostMount],
) -> Result<Layout, SandboxError> {
    let root = layers.join("root");
    let mut make = vec![root.clone()];
    let mut steps = Vec::new();
    let mut overlay = |target: &Path, lower: &Path, n: usize, steps: &mut Vec<Step>| {
        let upper = layers.join(format!("upper-{n}"));
        let work = layers.join(format!("work-{n}"));
        make.push(upper.clone());
        make.push(work.clone());
        steps.push(Step::Overlay {
            target: target.to_path_buf(),
            lower: lower.to_path_buf(),
            upper,
            work,
        });
    };
    overlay(Path::new("/"), Path::new("/"), 0, &mut steps);
    // The host's other disks below `/`, each as its own overlay: an overlay of `/`
    // shows only the root filesystem.
    let under = |p: &Path, dirs: &[&str]| dirs.iter().any(|d| p.starts_with(d));
    // Other jobs' workspaces live beside this one (each may be a disk of its own).
    let workspaces = job.root.parent().unwrap_or(Path::new("/tmp"));
    let mut n = 0;
    for m in mounts {
        let skip = m.point == Path::new("/")
            || !DISK_FILESYSTEMS.contains(&m.fstype.as_str())
            || under(&m.point, FRESH)
            || m.point.starts_with(workspaces)
            || hidden.iter().any(|h| match h {
                Hidden::Dir(d) => m.point.starts_with(d),
                Hidden::File(_) => false,
            });
        if !skip {
            n += 1;
            overlay(&m.point, &m.point, n, &mut steps);
        }
    }
    system_mounts(&mut steps);
    let mut cover: Vec<&Path> = vec![workspaces];
    let mut files: Vec<&Path> = Vec::new();
    for h in hidden {
        match h {
            Hidden::Dir(d) => cover.push(d),
            Hidden::File(f) => files.push(f),
        }
    }
    // What lies under a directory made afresh is gone already.
    let gone = |p: &Path| under(p, FRESH) || p == Path::new("/");
    for d in cover {
        if !gone(d) {
            steps.push(Step::Cover(d.to_path_buf()));
        }
    }
    for f in files.into_iter().filter(|f| !gone(f)) {
        steps.push(Step::Bind {
            src: "/dev/null".into(),
            target: f.to_path_buf(),
            optional: true,
        });
    }
    // Shown paths under a fresh directory come back as overlays of their own.
    for (i, s) in policy.show.iter().filter(|s| gone(s)).enumerate() {
        for a in s.ancestors().collect::<Vec<_>>().into_iter().rev().skip(1) {
            steps.push(Step::Mkdir(a.to_path_buf()));
        }
        overlay(s, s, 1000 + i, &mut steps);
    }
    bind_workspace(job, &mut steps);
    check_paths(&steps)?;
    Ok(Layout {
        root,
        steps,
        cwd: job.build_dir.clone(),
        make,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job() -> JobPaths {
        JobPaths {
            root: "/tmp/runway-job-a".into(),
            build_dir: "/tmp/runway-job-a/build/o/r".into(),
            home: "/tmp/runway-job-a/home".into(),
            scratch: "/tmp/runway-job-a/runway".into(),
        }
    }

    /// The layout of [`job`] with no policy, hidden paths or mounts of note.
    fn default_layout() -> Layout {
        layout(
            &job(),
            Path::new("/tmp/runway-job-a/sandbox"),
            &Policy::default(),
            &[],
            &[],
        )
        .unwrap()
    }

    fn text(l: &Layout) -> Vec<String> {
        l.steps.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn the_spawner_is_sent_the_very_steps_and_program_runway_prepared() {
        let l = default_layout();
        let (prepared, _report) = sys::Prepared::new(&l, false, vec![7, 8]).unwrap();
        assert_eq!(prepared.descriptors()[1..], [7, 8]);
        let mut wire = sys::Wire::default();
        prepared.encode(&mut wire);
        let decode =
            |bytes: &[u8], fds: &[libc::c_int]| sys::Prepared::decode(&mut sys::Unwire(bytes), fds);
        let back = decode(&wire.0, &[40, 41, 42]).unwrap();
        assert_eq!(back.descriptors(), [40, 41, 42]);
        let mut again = sys::Wire::default();
        back.encode(&mut again);
        assert!(again.0 == wire.0, "the steps changed on the way");
        // Cut short anywhere, or with a descriptor missing, it is refused.
        for cut in 0..wire.0.len() {
            assert!(
                decode(&wire.0[..cut], &[40, 41, 42]).is_none(),
                "cut at {cut}"
            );
        }
        assert!(decode(&wire.0, &[40, 41]).is_none());

        let mut program = Program {
            path: "bash".into(),
            arg0: "bash".into(),
            args: vec!["--norc".into(), "/dev/fd/4".into()],
            env: vec![
                ("PATH".into(), "/opt/x/bin:relative:/usr/bin".into()),
                ("A".into(), "b c".into()),
            ],
            cwd: "/".into(),
            fds: Vec::new(),
        };
        let mut wire = sys::Wire::default();
        program.encode(&mut wire).unwrap();
        let exec = sys::Exec::decode(&mut sys::Unwire(&wire.0)).unwrap();
        // A name is looked for on the job's PATH, absolute directories only, in order.
        assert_eq!(exec.paths, [c"/opt/x/bin/bash", c"/usr/bin/bash"]);
        assert_eq!(exec.argv, [c"bash", c"--norc", c"/dev/fd/4"]);
        assert_eq!(exec.envp, [c"PATH=/opt/x/bin:relative:/usr/bin", c"A=b c"]);
        program.path = "/bin/bash".into();
        let mut wire = sys::Wire::default();
        program.encode(&mut wire).unwrap();
        let exec = sys::Exec::decode(&mut sys::Unwire(&wire.0)).unwrap();
        assert_eq!(exec.paths, [c"/bin/bash"]);
        // A NUL byte cannot be sent (nor exec'd).
        program.env.push(("B".into(), "x\0y".into()));
        assert!(program.encode(&mut sys::Wire::default()).is_err());
    }

    #[test]
    fn the_root_is_an_overlay_of_the_host_and_writes_go_to_the_workspace() {
        let l = default_layout();
        assert_eq!(l.root, Path::new("/tmp/runway-job-a/sandbox/root"));
        assert_eq!(
            l.steps[0],
            Step::Overlay {
                target: "/".into(),
                lower: "/".into(),
                upper: "/tmp/runway-job-a/sandbox/upper-0".into(),
                work: "/tmp/runway-job-a/sandbox/work-0".into(),
            }
        );
        let t = text(&l);
        for want in [
            "mounting proc on /proc",
            "making /proc/sys read-only",
            "binding /dev/null on /proc/sysrq-trigger",
            "mounting sysfs on /sys read-only",
            "mounting tmpfs on /tmp (mode=1777,size=4g)",
            "mounting tmpfs on /run (mode=755,size=64m)",
            "binding /dev/null on /dev/null",
            "binding /tmp/runway-job-a/build/o/r on /tmp/runway-job-a/build/o/r",
            "binding /tmp/runway-job-a/home on /tmp/runway-job-a/home",
        ] {
            assert!(t.iter().any(|s| s == want), "{want} in {t:#?}");
        }
        // The workspace is bound after /tmp is made fresh, its parents made first.
        let at = |s: &str| t.iter().position(|x| x == s).unwrap();
        assert!(
            at("mounting tmpfs on /tmp (mode=1777,size=4g)")
                < at("making directory /tmp/runway-job-a")
        );
        assert!(
            at("making directory /tmp/runway-job-a/build/o")
                < at("binding /tmp/runway-job-a/build/o/r on /tmp/runway-job-a/build/o/r")
        );
        assert_eq!(l.cwd, Path::new("/tmp/runway-job-a/build/o/r"));
    }

    #[test]
    fn hidden_paths_are_covered_and_other_disks_overlaid() {
        let mounts = parse_mountinfo(
            "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
             22 27 0:21 / /proc rw - proc proc rw\n\
             40 27 254:1 / /srv/data\\040x rw - xfs /dev/vdb rw\n\
             41 27 254:2 / /var/lib/runway rw - ext4 /dev/vdc rw\n\
             42 27 0:40 / /mnt/t rw - tmpfs t rw\n",
        );
        assert_eq!(mounts[2].point, Path::new("/srv/data x"));
        let hidden = [
            Hidden::Dir("/var/lib/runway".into()),
            Hidden::File("/etc/runway.toml".into()),
        ];
        let l = layout(
            &job(),
            Path::new("/w/sandbox"),
            &Policy::default(),
            &hidden,
            &mounts,
        )
        .unwrap();
        let t = text(&l);
        assert!(t.contains(&"mounting an overlay of /srv/data x on /srv/data x".to_string()));
        assert!(!t.iter().any(|s| s.contains("overlay of /var/lib/runway")));
        assert!(!t.iter().any(|s| s.contains("/mnt/t")));
        assert!(t.contains(&"covering /var/lib/runway".to_string()));
        assert!(t.contains(&"binding /dev/null on /etc/runway.toml".to_string()));
    }

    #[test]
    fn workspaces_outside_tmp_hide_their_neighbours() {
        let mut j = job();
        j.root = "/var/tmp/runway-job-b".into();
        j.build_dir = "/var/tmp/runway-job-b/build/o/r".into();
        let l = layout(&j, Path::new("/x"), &Policy::default(), &[], &[]).unwrap();
        assert!(text(&l).contains(&"covering /var/tmp".to_string()));
        // Under /tmp, made afresh anyway, nothing is covered.
        let hidden = [
            Hidden::Dir("/tmp/state".into()),
            Hidden::File("/tmp/x.env".into()),
        ];
        let l = layout(&job(), Path::new("/x"), &Policy::default(), &hidden, &[]).unwrap();
        assert!(
            !text(&l)
                .iter()
                .any(|s| s.contains("/tmp/state") || s.contains("x.env"))
        );
    }

    #[test]
    fn a_shown_directory_under_tmp_comes_back_copy_on_write() {
        let policy = Policy {
            show: vec!["/tmp/ci/target/toolchains".into(), "/opt/tools".into()],
            ..Policy::default()
        };
        let l = layout(&job(), Path::new("/x"), &policy, &[], &[]).unwrap();
        let t = text(&l);
        let at = |s: &str| t.iter().position(|x| x == s).unwrap();
        let shown = "mounting an overlay of /tmp/ci/target/toolchains on /tmp/ci/target/toolchains";
        assert!(
            at("mounting tmpfs on /tmp (mode=1777,size=4g)")
                < at("making directory /tmp/ci/target")
        );
        assert!(at("making directory /tmp/ci/target/toolchains") < at(shown));
        // Outside a fresh directory the root's overlay shows it already.
        assert!(!t.iter().any(|s| s.contains("overlay of /opt/tools")));
    }

    #[test]
    fn a_path_overlayfs_cannot_hold_is_refused() {
        let mut j = job();
        j.root = "/tmp/a,b".into();
        let err = layout(
            &j,
            Path::new("/tmp/a,b/sandbox"),
            &Policy::default(),
            &[],
            &[],
        )
        .unwrap_err();
        assert!(matches!(err, SandboxError::Path(_)), "{err}");
    }
}
