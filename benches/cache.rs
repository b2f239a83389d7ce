//! Cache save and restore against `tar -I zstd` and `tar czf` (Travis's casher used
//! gzip), side by side on the same 100 MB, 5,000-file directory, plus a save when
//! nothing changed; and the same save and restore done the way jobs' caches are done
//! now, by the helper inside a job's sandbox (as root), beside the in-process way.
//! Then caches kept on this machine as directories, restored as a copy-on-write mount
//! (`BENCH_ONLY=cow` runs that part alone).
//! Run: `cargo bench --bench cache` (needs tar, zstd, gzip).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use runway::cache::archive;

const FILES: usize = 5_000;
const FILE_BYTES: usize = 20_000; // 5,000 × 20 kB = 100 MB

/// Half the files look like text (compressible), half like jars (random).
fn make_tree(root: &Path) {
    make_tree_of(root, FILES, FILE_BYTES)
}

/// [`make_tree`] with `files` files of `file_bytes` each.
fn make_tree_of(root: &Path, files: usize, file_bytes: usize) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let words = b"dependency version artifact gradle module cache build classpath ";
    for i in 0..files {
        let dir = root.join(format!("group{}/artifact{}", i % 50, i % 500));
        std::fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::with_capacity(file_bytes);
        while data.len() < file_bytes {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 2 == 0 {
                let w = (x % words.len() as u64) as usize;
                data.extend_from_slice(&words[w..(w + 8).min(words.len())]);
            } else {
                data.extend_from_slice(&x.to_le_bytes());
            }
        }
        data.truncate(file_bytes);
        std::fs::write(dir.join(format!("file{i}.bin")), data).unwrap();
    }
}

fn time<T>(f: impl FnOnce() -> T) -> (f64, T) {
    let t = Instant::now();
    let v = f();
    (t.elapsed().as_secs_f64(), v)
}

/// Best of `rounds`; `prepare` runs untimed before each round (clean up, then `sync`
/// so the previous round's writeback does not land in this one).
fn best<T>(rounds: usize, mut prepare: impl FnMut(), mut f: impl FnMut() -> T) -> f64 {
    (0..rounds)
        .map(|_| {
            prepare();
            sh("sync");
            time(&mut f).0
        })
        .fold(f64::MAX, f64::min)
}

fn sh(cmd: &str) {
    let ok = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .status()
        .unwrap()
        .success();
    assert!(ok, "{cmd} failed");
}

/// A job's sandbox around `root` (its home holds the tree): the shell, kept running,
/// whose view the helper enters.
fn job_shell(root: &Path) -> Option<runway::process::shell::Shell> {
    use runway::sandbox::{JobPaths, Namespaces, Policy};
    let paths = JobPaths {
        root: root.to_path_buf(),
        build_dir: root.join("build"),
        home: root.join("home"),
        scratch: root.join("runway"),
    };
    for d in [&paths.build_dir, &paths.home, &paths.scratch] {
        std::fs::create_dir_all(d).unwrap();
    }
    let env = vec![(
        "PATH".to_string(),
        std::env::var("PATH").unwrap_or_default(),
    )];
    let ns = Namespaces::new(Policy::default());
    runway::process::shell::Shell::start(&paths.build_dir, &env, &ns, &paths).ok()
}

/// Caches kept on this machine as directories (issue 29): a stored version restored as
/// a copy-on-write mount in a fresh job's sandbox (from the store's lookup to the mount),
/// for 100 MB in 5,400 files and 1 GB in 54,000, the two sizes taking turns round by
/// round (medians); next to `tar -I zstd -xf` of the 100 MB tree in the same run; and a
/// save when nothing changed against a full save of a version. Needs root (the sandbox).
fn copy_on_write(base: &Path, rounds: usize) {
    use runway::cache::store::{LocalStore, Manifest, sub};
    let written = "$HOME/.m2".to_string();
    struct Size {
        label: &'static str,
        t: tempfile::TempDir,
        store: LocalStore,
        full: f64,
        restores: Vec<f64>,
    }
    let mut sizes = Vec::new();
    for (label, files) in [
        ("100 MB, 5,400 files", 5_400usize),
        ("1 GB, 54,000 files", 54_000),
    ] {
        let t = tempfile::Builder::new()
            .prefix(runway::workspace::PREFIX)
            .tempdir_in(base)
            .unwrap();
        let src = t.path().join("home/.m2");
        make_tree_of(&src, files, 100_000_000 / 5_400);
        let store = LocalStore::new(t.path().join("store"));
        let dirs = vec![(written.clone(), src.clone())];
        let Some(shell) = job_shell(t.path()) else {
            println!("(no sandbox here: run as root for the copy-on-write numbers)");
            return;
        };
        let runway::sandbox::Files::Job(view) = shell.files() else {
            return;
        };
        // A full save: a new version of the job's directory (nothing to link).
        let save = || {
            let new = store.begin("o/r", "master", "k").unwrap();
            let trees = vec![runway::inside::TreeDir {
                sub: sub(&written),
                layer: None,
            }];
            let s =
                runway::inside::save_tree(view, &dirs, trees, &new.dir, None, None, u64::MAX, 600)
                    .unwrap();
            let manifest = Manifest {
                files: s.files,
                bytes: s.bytes,
                dirs: vec![written.clone()],
            };
            store.commit(new, &manifest).unwrap();
        };
        let full = best(3, || {}, save);
        drop(shell);
        std::fs::create_dir_all(t.path().join("home/restored")).unwrap();
        sizes.push(Size {
            label,
            t,
            store,
            full,
            restores: Vec::new(),
        });
    }
    // Restores, the sizes taking turns: each into a fresh job (its own sandbox, its own
    // mount), timed from the store's lookup to the mount.
    let mut unchanged = Vec::new();
    for _ in 0..rounds {
        for size in sizes.iter_mut() {
            let layers = size.t.path().join("private/caches");
            let _ = std::fs::remove_dir_all(&layers);
            let shell = job_shell(size.t.path()).unwrap();
            let runway::sandbox::Files::Job(view) = shell.files() else {
                panic!("no view: {:?}", shell.files())
            };
            let back = vec![(written.clone(), size.t.path().join("home/restored"))];
            sh("sync");
            let (secs, version) = time(|| {
                let v = size.store.version("o/r", "master", "k").unwrap().unwrap();
                let (mounted, _, _) = runway::inside::mount_version(
                    view,
                    &v,
                    &back,
                    &[false],
                    &size.t.path().join("private/caches"),
                    600,
                )
                .unwrap();
                assert_eq!(mounted, [true]);
                v
            });
            size.restores.push(secs);
            // A save when nothing changed: what a job's store does then.
            let (secs, same) = time(|| runway::inside::untouched(&layers, &[true]));
            assert!(same);
            unchanged.push(secs);
            drop(shell);
            drop(version);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (s, o) = (
        sizes[0].t.path().join("home/.m2"),
        sizes[0].t.path().join("out"),
    );
    std::fs::create_dir_all(&o).unwrap();
    let (s, o) = (s.display(), o.display());
    sh(&format!("tar -C {s} -I zstd -cf {o}/t.tar.zst ."));
    let tar_extract = best(
        5,
        || sh(&format!("rm -rf {o}/x && mkdir {o}/x")),
        || sh(&format!("tar -C {o}/x -I zstd -xf {o}/t.tar.zst")),
    );
    println!("copy-on-write caches (this machine), medians of {rounds} rounds taking turns:");
    let mut meds = Vec::new();
    for size in sizes.iter_mut() {
        let m = median(&mut size.restores);
        meds.push(m);
        println!(
            "  restore {:<22} {:>9.2} ms  ({:.4}x tar -I zstd -xf of 100 MB)",
            size.label,
            m * 1e3,
            m / tar_extract
        );
    }
    println!(
        "  tar -I zstd -xf, 100 MB (best of 5) {:>6.2} ms",
        tar_extract * 1e3
    );
    println!(
        "  restore 1 GB / restore 100 MB    {:>9.2}x",
        meds[1] / meds[0]
    );
    let u = median(&mut unchanged);
    println!(
        "  save, full version of 100 MB     {:>9.2} ms (best of 3)\n  save, nothing changed            {:>9.3} ms  ({:.3}% of a full save)",
        sizes[0].full * 1e3,
        u * 1e3,
        100.0 * u / sizes[0].full
    );
}

fn main() {
    // This binary is also the helper the sandbox starts (runway's `sandbox-helper`).
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("sandbox-helper") {
        std::process::exit(runway::inside::serve(&args[2]));
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("cow") {
        let base = std::env::var_os("BENCH_DIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| Path::new("/dev/shm").to_path_buf());
        copy_on_write(&base, 20);
        return;
    }
    // In RAM by default (/dev/shm), so the numbers are the tools' own cost rather than
    // this machine's disk; BENCH_DIR=/some/disk/dir measures a disk instead.
    let base = std::env::var_os("BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() {
                shm.to_path_buf()
            } else {
                std::env::temp_dir()
            }
        });
    let t = tempfile::Builder::new()
        .prefix(runway::workspace::PREFIX)
        .tempdir_in(&base)
        .unwrap();
    println!("working in {}", base.display());
    // The tree is the job's `$HOME/.m2`: the same files for every way of saving it.
    let src = t.path().join("home/.m2");
    make_tree(&src);
    let no = AtomicBool::new(false);
    let dirs = vec![("$HOME/.m2".to_string(), src.clone())];
    let out = t.path().join("out");
    std::fs::create_dir_all(&out).unwrap();
    let rounds = 5;
    let s = src.display();
    let o = out.display();

    let nothing = || {};
    let runway_save = best(rounds, nothing, || {
        archive::save(&dirs, &out.join("c.tar.zst"), &no).unwrap()
    });
    let saved = archive::save(&dirs, &out.join("c.tar.zst"), &no).unwrap();
    let dst = t.path().join("restore");
    let runway_restore = best(
        rounds,
        || {
            let _ = std::fs::remove_dir_all(&dst);
        },
        || {
            let r = archive::restore(
                &out.join("c.tar.zst"),
                &|_| Some(dst.clone()),
                &no,
                u64::MAX,
            )
            .unwrap();
            // A job's fetch fingerprints what it restored (the helper does too).
            let back = [("$HOME/.m2".to_string(), dst.clone())];
            (r, archive::fingerprint(&back).unwrap())
        },
    );
    // An unchanged save is a fingerprint compare (the store is skipped).
    let unchanged = best(rounds, nothing, || archive::fingerprint(&dirs).unwrap());

    // The same, by the helper inside a job's sandbox (what `runway run` does now).
    let shell = job_shell(t.path());
    let inside = shell.as_ref().and_then(|sh| match sh.files() {
        runway::sandbox::Files::Job(view) => {
            let dst = t.path().join("home/restored");
            let save = best(rounds, nothing, || {
                let f = std::fs::File::create(out.join("h.tar.zst")).unwrap();
                runway::inside::save(view, &dirs, f, 600).unwrap()
            });
            let back = vec![("$HOME/.m2".to_string(), dst.clone())];
            let restore = best(
                rounds,
                || {
                    let _ = std::fs::remove_dir_all(&dst);
                },
                || {
                    runway::inside::restore(view, &out.join("h.tar.zst"), &back, u64::MAX, 600)
                        .unwrap()
                },
            );
            Some((save, restore))
        }
        _ => None,
    });
    drop(shell);

    let zstd_create = best(rounds, nothing, || {
        sh(&format!("tar -C {s} -I zstd -cf {o}/t.tar.zst ."))
    });
    let zstd_extract = best(
        rounds,
        || sh(&format!("rm -rf {o}/x && mkdir {o}/x")),
        || sh(&format!("tar -C {o}/x -I zstd -xf {o}/t.tar.zst")),
    );
    let gz_create = best(rounds, nothing, || {
        sh(&format!("tar -C {s} -czf {o}/t.tgz ."))
    });
    let gz_extract = best(
        rounds,
        || sh(&format!("rm -rf {o}/y && mkdir {o}/y")),
        || sh(&format!("tar -C {o}/y -xzf {o}/t.tgz")),
    );

    println!(
        "cache: {FILES} files, {} MB; archive {:.1} MB (runway, zstd -3)",
        saved.bytes / 1_000_000,
        saved.archive_bytes as f64 / 1e6
    );
    println!(
        "{:<34} {:>8} {:>12} {:>12}",
        "operation", "seconds", "vs tar zstd", "vs tar gzip"
    );
    let row = |name: &str, v: f64, z: f64, g: f64| {
        println!("{name:<34} {v:>8.3} {:>11.2}x {:>11.2}x", v / z, v / g);
    };
    row(
        "runway save (in process, old way)",
        runway_save,
        zstd_create,
        gz_create,
    );
    row(
        "runway restore (in process, old way)",
        runway_restore,
        zstd_extract,
        gz_extract,
    );
    match inside {
        Some((save, restore)) => {
            row(
                "runway save (helper in the sandbox)",
                save,
                zstd_create,
                gz_create,
            );
            row(
                "runway restore (helper in the sandbox)",
                restore,
                zstd_extract,
                gz_extract,
            );
            println!(
                "helper vs in process: save {:.2}x, restore {:.2}x",
                save / runway_save,
                restore / runway_restore
            );
        }
        None => println!("(no sandbox here: run as root for the helper's numbers)"),
    }
    println!("{:<34} {zstd_create:>8.3}", "tar -I zstd -cf (create)");
    println!("{:<34} {zstd_extract:>8.3}", "tar -I zstd -xf (extract)");
    println!("{:<34} {gz_create:>8.3}", "tar czf (create)");
    println!("{:<34} {gz_extract:>8.3}", "tar xzf (extract)");
    println!(
        "{:<34} {unchanged:>8.3} ({:.1}% of a full save)",
        "runway save, nothing changed",
        100.0 * unchanged / runway_save
    );
    copy_on_write(&base, 20);
}
