//! What the job sandbox adds to a job: start the job's shell, run one command, end the
//! shell (the whole namespace with it) and remove the workspace (the overlay's layers
//! with it), in a sandbox and on the bare host, alternating rounds in the same run. Run: `cargo bench --bench sandbox [ROUNDS]` as root.

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
    runway::sandbox::disk::shutdown();
}
