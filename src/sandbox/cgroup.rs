//! Memory and process limits per job, where the kernel lets runway set them: a cgroup
//! per job under runway's own, with cgroup v2's `memory.max`/`pids.max` when its
//! controllers are delegated, else cgroup v1's memory and pids hierarchies. The job's
//! init joins the cgroups before it makes the namespaces, so everything the job
//! starts is counted; runway reads the kernel's `oom_kill` count to tell a job killed
//! for memory from one that failed.
//!
//! [`locate`] reads `/proc/self/cgroup` and `/proc/self/mountinfo` text (pure);
//! [`Hierarchy::open`] checks what is usable and says why not.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// What runway.toml (`job_memory`, `job_processes`) or `run --memory/--max-processes`
/// ask of every job.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of memory (swap included where the kernel counts it).
    pub memory: Option<u64>,
    /// Processes and threads at once.
    pub processes: Option<u64>,
}

impl Limits {
    /// True when nothing is limited.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.processes.is_none()
    }
}

/// Reads `512M`, `2G`, `1.5G`, `1048576` (bytes; K, M, G, T are powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| c.is_ascii_alphabetic()) {
        Some(i) => (&t[..i], t[i..].trim_end_matches(['b', 'B', 'i'])),
        None => (t, ""),
    };
    let shift = match unit.to_ascii_uppercase().as_str() {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        _ => return Err(format!("\"{text}\" is not a size (512M, 2G, bytes)")),
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("\"{text}\" is not a size (512M, 2G, bytes)"))?;
    let bytes = n * (1u64 << shift) as f64;
    if !(1.0..1e18).contains(&bytes) {
        return Err(format!("\"{text}\" is out of range"));
    }
    Ok(bytes as u64)
}

/// Says a size the way [`parse_size`] reads it.
pub fn human_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "T"), (30, "G"), (20, "M"), (10, "K")] {
        if bytes >= 1 << shift && bytes.is_multiple_of(1 << shift) {
            return format!("{}{unit}", bytes >> shift);
        }
    }
    format!("{bytes} bytes")
}

/// runway's own cgroups, as the kernel lists them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Located {
    /// cgroup v2: runway's cgroup directory.
    pub v2: Option<PathBuf>,
    /// cgroup v1: runway's cgroup in the memory hierarchy.
    pub v1_memory: Option<PathBuf>,
    /// cgroup v1: runway's cgroup in the pids hierarchy.
    pub v1_pids: Option<PathBuf>,
}

/// Where runway's cgroups are, from `/proc/self/cgroup` and `/proc/self/mountinfo`.
pub fn locate(self_cgroup: &str, mountinfo: &str) -> Located {
    // Mount point, filesystem type and super options of each cgroup mount.
    let mounts: Vec<(PathBuf, &str, Vec<&str>)> = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let point = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let opts = r.nth(1).unwrap_or("").split(',').collect();
            matches!(fstype, "cgroup" | "cgroup2").then(|| (PathBuf::from(point), fstype, opts))
        })
        .collect();
    let join = |mount: &Path, rel: &str| mount.join(rel.trim_start_matches('/'));
    let mut found = Located::default();
    for line in self_cgroup.lines() {
        let mut f = line.splitn(3, ':');
        let (Some(_), Some(controllers), Some(path)) = (f.next(), f.next(), f.next()) else {
            continue;
        };
        if controllers.is_empty() {
            if let Some((m, _, _)) = mounts.iter().find(|(_, t, _)| *t == "cgroup2") {
                found.v2 = Some(join(m, path));
            }
            continue;
        }
        for c in controllers.split(',') {
            let mount = mounts
                .iter()
                .find(|(_, t, o)| *t == "cgroup" && o.contains(&c))
                .map(|(m, _, _)| m);
            match (c, mount) {
                ("memory", Some(m)) => found.v1_memory = Some(join(m, path)),
                ("pids", Some(m)) => found.v1_pids = Some(join(m, path)),
                _ => {}
            }
        }
    }
    found
}

/// Where job cgroups are made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hierarchy {
    /// cgroup v2: job cgroups in this directory, its `memory` and `pids` enabled.
    V2(PathBuf),
    /// cgroup v1: job cgroups in these directories of the memory and pids hierarchies.
    V1 {
        /// For `memory.limit_in_bytes`.
        memory: Option<PathBuf>,
        /// For `pids.max`.
        pids: Option<PathBuf>,
    },
}

impl Hierarchy {
    /// Finds where this machine lets runway limit jobs as `limits` asks, or says why
    /// it cannot.
    pub fn open(limits: &Limits) -> Result<Hierarchy, String> {
        let cg = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let mi = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let at = locate(&cg, &mi);
        let mut why = Vec::new();
        if let Some(dir) = &at.v2 {
            match v2_delegate(dir, limits) {
                Ok(parent) => return Ok(Hierarchy::V2(parent)),
                Err(e) => why.push(format!("cgroup v2 ({}): {e}", dir.display())),
            }
        }
        let usable = |p: &Option<PathBuf>, wanted: bool, name: &str, why: &mut Vec<String>| {
            if !wanted {
                return None;
            }
            match p {
                Some(dir) => match probe_mkdir(dir) {
                    Ok(()) => Some(dir.clone()),
                    Err(e) => {
                        why.push(format!("cgroup v1 {name} ({}): {e}", dir.display()));
                        None
                    }
                },
                None => {
                    why.push(format!("no cgroup v1 {name} hierarchy"));
                    None
                }
            }
        };
        let memory = usable(&at.v1_memory, limits.memory.is_some(), "memory", &mut why);
        let pids = usable(&at.v1_pids, limits.processes.is_some(), "pids", &mut why);
        if (memory.is_some() || limits.memory.is_none())
            && (pids.is_some() || limits.processes.is_none())
        {
            return Ok(Hierarchy::V1 { memory, pids });
        }
        Err(why.join("; "))
    }
}

/// Makes and removes a directory in `dir`: can runway make cgroups there?
fn probe_mkdir(dir: &Path) -> io::Result<()> {
    let probe = dir.join(format!("runway-probe-{}", std::process::id()));
    std::fs::create_dir(&probe)?;
    std::fs::remove_dir(&probe)
}

/// Under cgroup v2, job cgroups need `memory` and `pids` in their parent's
/// `subtree_control`, and a cgroup holding processes cannot enable them: runway moves
/// itself into a leaf (`DIR/runway`) first, as container runtimes do.
fn v2_delegate(dir: &Path, limits: &Limits) -> io::Result<PathBuf> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))?;
    let mut want = Vec::new();
    if limits.memory.is_some() {
        want.push("memory");
    }
    if limits.processes.is_some() {
        want.push("pids");
    }
    if let Some(missing) = want
        .iter()
        .find(|c| !available.split_whitespace().any(|a| a == **c))
    {
        return Err(io::Error::other(format!(
            "the {missing} controller is not delegated (cgroup.controllers: \"{}\")",
            available.trim()
        )));
    }
    let enable = want
        .iter()
        .map(|c| format!("+{c}"))
        .collect::<Vec<_>>()
        .join(" ");
    let control = dir.join("cgroup.subtree_control");
    if std::fs::write(&control, &enable).is_err() {
        let leaf = dir.join("runway");
        match std::fs::create_dir(&leaf) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        std::fs::write(leaf.join("cgroup.procs"), std::process::id().to_string())?;
        std::fs::write(&control, &enable)?;
    }
    probe_mkdir(dir)?;
    Ok(dir.to_path_buf())
}

/// One job's cgroups, removed when dropped (the job's processes are gone by then).
#[derive(Debug)]
pub struct JobCgroup {
    dirs: Vec<PathBuf>,
    procs: Vec<OwnedFd>,
    /// `memory.events` (v2) or `memory.oom_control` (v1), and the memory limit.
    oom: Option<(PathBuf, u64)>,
}

impl JobCgroup {
    /// Makes the cgroups of job `name` with `limits`.
    pub fn create(h: &Hierarchy, name: &str, limits: &Limits) -> io::Result<JobCgroup> {
        let mut cg = JobCgroup {
            dirs: Vec::new(),
            procs: Vec::new(),
            oom: None,
        };
        let mut make = |parent: &Path, files: &[(&str, String, bool)]| -> io::Result<PathBuf> {
            let dir = parent.join(name);
            std::fs::create_dir(&dir)?;
            cg.dirs.push(dir.clone());
            for (file, value, required) in files {
                let wrote = std::fs::write(dir.join(file), value);
                if *required {
                    wrote?;
                }
            }
            let procs = File::options().write(true).open(dir.join("cgroup.procs"))?;
            cg.procs.push(procs.into());
            Ok(dir)
        };
        match h {
            Hierarchy::V2(parent) => {
                let mut files = Vec::new();
                if let Some(m) = limits.memory {
                    files.push(("memory.max", m.to_string(), true));
                    files.push(("memory.swap.max", "0".to_string(), false));
                }
                if let Some(p) = limits.processes {
                    files.push(("pids.max", p.to_string(), true));
                }
                let dir = make(parent, &files)?;
                cg.oom = limits.memory.map(|m| (dir.join("memory.events"), m));
            }
            Hierarchy::V1 { memory, pids } => {
                if let (Some(parent), Some(m)) = (memory, limits.memory) {
                    let dir = make(
                        parent,
                        &[
                            ("memory.limit_in_bytes", m.to_string(), true),
                            ("memory.memsw.limit_in_bytes", m.to_string(), false),
                        ],
                    )?;
                    cg.oom = Some((dir.join("memory.oom_control"), m));
                }
                if let (Some(parent), Some(p)) = (pids, limits.processes) {
                    make(parent, &[("pids.max", p.to_string(), true)])?;
                }
            }
        }
        Ok(cg)
    }

    /// The `cgroup.procs` files the job's init writes `0` to, joining them.
    pub fn procs_fds(&self) -> Vec<libc::c_int> {
        self.procs.iter().map(|f| f.as_raw_fd()).collect()
    }

    /// The memory limit, when the kernel killed a process of the job for passing it.
    pub fn memory_exceeded(&self) -> Option<u64> {
        let (file, limit) = self.oom.as_ref()?;
        let text = std::fs::read_to_string(file).ok()?;
        let kills: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("oom_kill "))?
            .trim()
            .parse()
            .ok()?;
        (kills > 0).then_some(*limit)
    }
}

impl Drop for JobCgroup {
    fn drop(&mut self) {
        self.procs.clear();
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}

/// Writes `0` (the writer itself) to each of `fds`: the job's init joins its cgroups.
/// Async-signal-safe.
pub(super) fn join(fds: &[libc::c_int]) -> io::Result<()> {
    for fd in fds {
        // SAFETY: write(2) of a static byte to a descriptor runway opened.
        if unsafe { libc::write(*fd, b"0".as_ptr().cast(), 1) } != 1 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_CGROUP: &str =
        "9:name=systemd:/\n8:pids:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu:/\n0::/\n";
    const HYBRID_MOUNTS: &str = "31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
        33 31 0:30 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct\n\
        35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
        39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids\n\
        41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

    #[test]
    fn runways_cgroups_are_found_in_a_hybrid_and_a_unified_layout() {
        let at = locate(HYBRID_CGROUP, HYBRID_MOUNTS);
        assert_eq!(
            at,
            Located {
                v2: Some("/sys/fs/cgroup/unified".into()),
                v1_memory: Some("/sys/fs/cgroup/memory/process_api/abc".into()),
                v1_pids: Some("/sys/fs/cgroup/pids".into()),
            }
        );
        let unified = locate(
            "0::/system.slice/runway.service\n",
            "30 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            unified.v2,
            Some("/sys/fs/cgroup/system.slice/runway.service".into())
        );
        assert_eq!(unified.v1_memory, None);
    }

    #[test]
    fn sizes_read_and_said() {
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2G"), Ok(2 << 30));
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("1.5G"), Ok(3 << 29));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("0").is_err());
        assert!(parse_size("2X").is_err());
        assert_eq!(human_size(64 << 20), "64M");
        assert_eq!(human_size(3 << 29), "1536M");
        assert_eq!(human_size(1000), "1000 bytes");
    }
}
