//! What the job sandbox adds to a job: start the job's shell, run one command, end the
//! shell (the whole namespace with it) and remove the workspace (the overlay's layers
//! with it), in a sandbox and on the bare host, alternating rounds in the same run.
//! And what releasing a job's disk costs once a checkout was written to it: runway's
//! disk (mounted without barriers, so that its flushes never reach the host's disk)
//! against the same disk remounted with barriers (what runway did before), alternating.
//! Run: `cargo bench --bench sandbox [ROUNDS]` as root.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use runway::process::shell::{Shell, Wait};
use runway::sandbox::{Bare, JobPaths, Namespaces, Policy, Sandbox};

fn workspace(root: &Path) -> JobPaths {
    let paths = JobPaths {
        root: root.to_path_buf(),
        build_dir: root.join("build/o/r"),
        home: root.join("home"),
        scratch: root.join("runway"),
    };
    for d in [&paths.build_dir, &paths.home, &paths.scratch] {
        std::fs::create_dir_all(d).unwrap();
    }
    paths
}

/// One job's worth of shell: start, `true`, end. Returns the wall time. With a disk
/// budget, the workspace's own filesystem is made first and gone after (timed too).
fn job(sandbox: &dyn Sandbox) -> Duration {
    let dir = tempfile::Builder::new()
        .prefix(runway::workspace::PREFIX)
        .tempdir()
        .unwrap();
    let t = Instant::now();
    let disk = sandbox
        .disk()
        .map(|bytes| runway::sandbox::disk::JobDisk::attach(dir.path(), bytes).unwrap());
    let paths = workspace(dir.path());
    let env = vec![("PATH".to_string(), std::env::var("PATH").unwrap())];
    let mut sh = Shell::start(&paths.build_dir, &env, sandbox, &paths).unwrap();
    sh.send("true").unwrap();
    let w = sh.wait(
        Duration::from_secs(30),
        Duration::from_secs(30),
        &mut |_| true,
    );
    assert_eq!(w, Wait::Done(0));
    sh.finish(Duration::from_secs(2));
    drop(disk); // unmounted, its image removed
    drop(dir); // the overlay's layers go with the workspace
    t.elapsed()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let rounds: usize = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .and_then(|a| a.parse().ok())
        .unwrap_or(50);
    let ns: Arc<dyn Sandbox> = Arc::new(Namespaces::new(Policy::default()));
    let disk: Arc<dyn Sandbox> = Arc::new(
        Namespaces::new(Policy::default()).with_disk(Some(runway::sandbox::disk::DEFAULT_BYTES)),
    );
    let bare: Arc<dyn Sandbox> = Arc::new(Bare);
    // Warm the page cache and the binary (and make the disk's template).
    job(&*ns);
    job(&*disk);
    job(&*bare);
    let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        a.push(job(&*bare));
        b.push(job(&*ns));
        c.push(job(&*disk));
    }
    let (a, b, c) = (median(a), median(b), median(c));
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("rounds: {rounds} (alternating)");
    println!("| what | median per job |");
    println!("| --- | --- |");
    println!("| bare host (`--sandbox none`) | {:.2} ms |", ms(a));
    println!(
        "| sandbox (namespaces, overlay root, seccomp) | {:.2} ms |",
        ms(b)
    );
    println!(
        "| sandbox with a 10G disk budget (ext4 image, loop device) | {:.2} ms |",
        ms(c)
    );
    println!(
        "added by the sandbox: {:.2} ms per job ({:.2}x)",
        ms(b) - ms(a),
        ms(b) / ms(a)
    );
    println!(
        "added by the disk budget: {:.2} ms per job ({:.2}x the sandbox without it)",
        ms(c) - ms(b),
        ms(c) / ms(b)
    );
    release_rounds(rounds);
    runway::sandbox::disk::shutdown();
}

/// The machine's busy time so far (`/proc/stat`: every CPU's user, system, interrupt
/// and steal time), kernel threads included: what a release makes the kernel's
/// flusher and loop threads do is not the releasing thread's. Other processes' time
/// is in it too: summed over alternating rounds, it compares.
fn machine_busy() -> Duration {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let ticks: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait.
    let busy: u64 = ticks.iter().take(8).sum::<u64>() - ticks[3] - ticks[4];
    // SAFETY: sysconf(3) has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_millis(busy * 1000 / hz)
}

/// The wall time, this thread's CPU time and its context switches over `f`.
fn measured(f: impl FnOnce()) -> (Duration, Duration, i64) {
    let usage = || {
        // SAFETY: a zeroed rusage is a valid value (integers and timevals).
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: getrusage(2) of this thread into the struct we own.
        unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        (tv(u.ru_utime) + tv(u.ru_stime), u.ru_nvcsw + u.ru_nivcsw)
    };
    let (c0, s0) = usage();
    let t = Instant::now();
    f();
    let wall = t.elapsed();
    let (c1, s1) = usage();
    (wall, c1 - c0, s1 - s0)
}

/// A job's disk with a checkout on it (200 files of 20 KB in a few directories, 4 MB)
/// released as runway mounts it, or remounted with barriers first (the baseline),
/// alternating.
fn release_rounds(rounds: usize) {
    let one = |runways: bool| {
        let dir = tempfile::Builder::new()
            .prefix(runway::workspace::PREFIX)
            .tempdir()
            .unwrap();
        // One disk, none made ahead behind it to contend with the timing.
        runway::sandbox::disk::expect(1);
        runway::sandbox::disk::JobDisk::attach(dir.path(), runway::sandbox::disk::DEFAULT_BYTES)
            .unwrap()
            .keep();
        for d in 0..10 {
            let sub = dir.path().join(format!("build/o/r/src{d}"));
            std::fs::create_dir_all(&sub).unwrap();
            for f in 0..20 {
                std::fs::write(sub.join(format!("f{f}.rs")), vec![b'x'; 20 << 10]).unwrap();
            }
        }
        if !runways {
            let (src, target) = (
                std::ffi::CString::new("none").unwrap(),
                std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap(),
            );
            let data = std::ffi::CString::new("barrier").unwrap();
            // SAFETY: mount(2) remounting the disk with NUL-terminated strings.
            let r = unsafe {
                libc::mount(
                    src.as_ptr(),
                    target.as_ptr(),
                    std::ptr::null(),
                    libc::MS_REMOUNT | libc::MS_NOSUID | libc::MS_NODEV,
                    data.as_ptr().cast(),
                )
            };
            assert_eq!(r, 0, "remount with barriers");
        }
        let m = measured(|| runway::sandbox::disk::release(dir.path()));
        drop(dir);
        m
    };
    one(true);
    one(false);
    let (mut a, mut b) = (Vec::new(), Vec::new());
    let (mut busy_a, mut busy_b) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let t = machine_busy();
        a.push(one(false));
        busy_a += machine_busy() - t;
        let t = machine_busy();
        b.push(one(true));
        busy_b += machine_busy() - t;
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let med = |v: &[(Duration, Duration, i64)]| {
        let mut w: Vec<Duration> = v.iter().map(|x| x.0).collect();
        let mut c: Vec<Duration> = v.iter().map(|x| x.1).collect();
        let mut s: Vec<i64> = v.iter().map(|x| x.2).collect();
        w.sort();
        c.sort();
        s.sort();
        (w[w.len() / 2], c[c.len() / 2], s[s.len() / 2])
    };
    let (a, b) = (med(&a), med(&b));
    println!(
        "releasing a job's disk with a 4 MB checkout on it, median of {rounds} (alternating):"
    );
    println!("| release | wall | CPU (the releasing thread) | context switches |");
    println!("| --- | --- | --- | --- |");
    println!(
        "| mounted with barriers (before) | {:.2} ms | {:.2} ms | {} |",
        ms(a.0),
        ms(a.1),
        a.2
    );
    println!(
        "| without barriers (runway) | {:.2} ms | {:.2} ms | {} |",
        ms(b.0),
        ms(b.1),
        b.2
    );
    println!(
        "release: wall {:.2}x, CPU {:.2}x with barriers",
        b.0.as_secs_f64() / a.0.as_secs_f64(),
        b.1.as_secs_f64() / a.1.as_secs_f64()
    );
    println!(
        "the machine's CPU (kernel threads and the disk's making and checkout included), per round: with barriers {:.2} ms, runway {:.2} ms ({:.2}x)",
        ms(busy_a) / rounds as f64,
        ms(busy_b) / rounds as f64,
        busy_b.as_secs_f64() / busy_a.as_secs_f64()
    );
}
