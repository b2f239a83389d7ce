//! Cache save and restore against `tar -I zstd` and `tar czf` (Travis's casher used
//! gzip), side by side on the same 100 MB, 5,000-file directory, plus a save when
//! nothing changed. Run: `cargo bench --bench cache` (needs tar, zstd, gzip).

use std::path::Path;
use std::process::Command;
use std::sync::atomic::AtomicBool;
use std::time::Instant;

use runway::cache::archive;

const FILES: usize = 5_000;
const FILE_BYTES: usize = 20_000; // 5,000 × 20 kB = 100 MB

/// Half the files look like text (compressible), half like jars (random).
fn make_tree(root: &Path) {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let words = b"dependency version artifact gradle module cache build classpath ";
    for i in 0..FILES {
        let dir = root.join(format!("group{}/artifact{}", i % 50, i % 500));
        std::fs::create_dir_all(&dir).unwrap();
        let mut data = Vec::with_capacity(FILE_BYTES);
        while data.len() < FILE_BYTES {
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
        data.truncate(FILE_BYTES);
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

fn main() {
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
    let t = tempfile::tempdir_in(&base).unwrap();
    println!("working in {}", base.display());
    let src = t.path().join("src");
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
            archive::restore(
                &out.join("c.tar.zst"),
                &|_| Some(dst.clone()),
                &no,
                u64::MAX,
            )
            .unwrap()
        },
    );
    // An unchanged save is a fingerprint compare (the store is skipped).
    let unchanged = best(rounds, nothing, || archive::fingerprint(&dirs).unwrap());

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
    row("runway save", runway_save, zstd_create, gz_create);
    row("runway restore", runway_restore, zstd_extract, gz_extract);
    println!("{:<34} {zstd_create:>8.3}", "tar -I zstd -cf (create)");
    println!("{:<34} {zstd_extract:>8.3}", "tar -I zstd -xf (extract)");
    println!("{:<34} {gz_create:>8.3}", "tar czf (create)");
    println!("{:<34} {gz_extract:>8.3}", "tar xzf (extract)");
    println!(
        "{:<34} {unchanged:>8.3} ({:.1}% of a full save)",
        "runway save, nothing changed",
        100.0 * unchanged / runway_save
    );
}
