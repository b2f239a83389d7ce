//! Cache archives: tar + zstd, one archive per key, written atomically.
//!
//! Each cached directory is stored under its index (`0/…`, `1/…`) with a manifest
//! (`runway-cache.json`) naming the directories as written in the config, so an
//! archive restores into wherever `$HOME` or the checkout is for the next job. On
//! restore, entries with `..`, absolute paths, links, unknown indexes, or paths that
//! would go through a symbolic link or replace a file by a directory (or back) are
//! refused and never written, and the rest is restored: as casher's rule has it, a
//! cache never fails a job. Symlinks are skipped when saving, as Travis's casher did.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, BufReader, BufWriter, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

const MANIFEST: &str = "runway-cache.json";

/// What a restore did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Restored {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Entries refused, as written in the archive with the reason: `0/a/b (under a file)`.
    pub refused: Vec<String>,
    /// The directories' fingerprint when the archive was made ([`fingerprint_of`]),
    /// kept in its manifest: what a store compares with, so that a job walks its
    /// cached directories once (at the store), not after the restore too. None for an
    /// archive made before runway kept it there.
    pub fingerprint: Option<String>,
}

/// What a save did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Saved {
    /// Files archived.
    pub files: u64,
    /// Bytes before compression.
    pub bytes: u64,
    /// Archive size.
    pub archive_bytes: u64,
}

/// The directories of one cache: as written, and where they are now.
pub type Dirs = [(String, PathBuf)];

fn canceled() -> io::Error {
    io::Error::new(io::ErrorKind::Interrupted, "canceled (cache timeout)")
}

/// Writes `dirs` into a new archive at `dest` (atomically: a temp file renamed).
pub fn save(dirs: &Dirs, dest: &Path, cancel: &AtomicBool) -> io::Result<Saved> {
    staged(dest, |f| save_to(dirs, f, cancel).map(Some))?
        .ok_or_else(|| io::Error::other("the archive was not written"))
}

/// An archive written by `write` into a new file beside `dest`, then moved to `dest`
/// whole with its size in `archive_bytes`; `write` answering `None` (nothing to store)
/// leaves `dest` as it was.
pub fn staged(
    dest: &Path,
    write: impl FnOnce(File) -> io::Result<Option<Saved>>,
) -> io::Result<Option<Saved>> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    let Some(mut saved) = write(tmp.reopen()?)? else {
        return Ok(None);
    };
    saved.archive_bytes = tmp.as_file().metadata()?.len();
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(Some(saved))
}

/// Writes `dirs` as an archive into `out` (a file, or the pipe of a helper inside a
/// job's sandbox); `archive_bytes` is left for the caller, who holds the file.
pub fn save_to(dirs: &Dirs, out: impl Write, cancel: &AtomicBool) -> io::Result<Saved> {
    save_walked(dirs, &walk_dirs(dirs)?, out, cancel)
}

/// What [`walk`] found in each cached directory, in order.
pub type Walked = Vec<Vec<(PathBuf, PathBuf, std::fs::Metadata)>>;

/// Walks each of `dirs` once: what [`fingerprint_of`] and [`save_walked`] read.
pub fn walk_dirs(dirs: &Dirs) -> io::Result<Walked> {
    dirs.iter().map(|(_, d)| walk(d)).collect()
}

/// [`save_to`] of directories walked already.
pub fn save_walked(
    dirs: &Dirs,
    walked: &Walked,
    out: impl Write,
    cancel: &AtomicBool,
) -> io::Result<Saved> {
    let mut enc = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, out), 3)?;
    enc.multithread(2)?;
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    let names: Vec<&str> = dirs.iter().map(|(w, _)| w.as_str()).collect();
    let manifest = serde_json::to_vec(&serde_json::json!({
        "version": 1,
        "dirs": names,
        "fingerprint": fingerprint_of(walked),
    }))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_slice())?;
    let mut saved = Saved::default();
    for (i, entries) in walked.iter().enumerate() {
        for (path, rel, meta) in entries {
            if cancel.load(Ordering::Relaxed) {
                return Err(canceled());
            }
            let name = Path::new(&i.to_string()).join(rel);
            if meta.is_dir() {
                tar.append_dir(&name, path)?;
            } else {
                tar.append_path_with_name(path, &name)?;
                saved.files += 1;
                saved.bytes += meta.len();
            }
        }
    }
    let enc = tar.into_inner()?;
    let mut out = enc.finish()?;
    out.flush()?;
    Ok(saved)
}

/// The most a cache may expand to on restore (5 GiB, the sum of its files' sizes);
/// `RUNWAY_CACHE_MAX_BYTES` sets another cap. Past it the restore stops, what it wrote
/// is removed, and the job goes on without the cache.
pub const MAX_RESTORE_BYTES: u64 = 5 << 30;

/// The cap on restored bytes: `RUNWAY_CACHE_MAX_BYTES` or [`MAX_RESTORE_BYTES`].
pub fn restore_cap() -> u64 {
    std::env::var("RUNWAY_CACHE_MAX_BYTES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(MAX_RESTORE_BYTES)
}

/// Extracts an archive into the directories it names, as they are resolved now.
/// Entries for directories the job no longer caches are skipped. An entry that cannot
/// be written safely (a path with `..`, a link, a file where a directory is or the
/// other way round, a path under a symbolic link) is refused with its reason and the
/// rest is restored; setuid, setgid and sticky bits are dropped. Past `cap` bytes the
/// restore stops with an error and removes the files it wrote.
pub fn restore(
    archive: &Path,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
    cancel: &AtomicBool,
    cap: u64,
) -> io::Result<Restored> {
    restore_from(File::open(archive)?, resolve, cancel, cap)
}

/// [`restore`] from an archive read from `input` (a file, or a helper's stdin).
pub fn restore_from(
    input: impl io::Read,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
    cancel: &AtomicBool,
    cap: u64,
) -> io::Result<Restored> {
    let dec = zstd::Decoder::new(BufReader::new(input))?;
    let mut tar = tar::Archive::new(dec);
    tar.set_preserve_mtime(true);
    // Permission bits only (mode & 0o777): no setuid, setgid or sticky bit survives.
    tar.set_preserve_permissions(false);
    let mut targets: Option<Vec<Option<PathBuf>>> = None;
    let mut done = Restored::default();
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
    let mut written: Vec<PathBuf> = Vec::new();
    for entry in tar.entries()? {
        if cancel.load(Ordering::Relaxed) {
            return Err(canceled());
        }
        let mut entry = entry?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let path = PathBuf::from(&shown);
        if shown == MANIFEST {
            let mut text = Vec::new();
            io::Read::read_to_end(&mut io::Read::take(&mut entry, 1 << 20), &mut text)?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let dirs = v["dirs"].as_array().cloned().unwrap_or_default();
            done.fingerprint = v["fingerprint"].as_str().map(str::to_string);
            targets = Some(dirs.iter().map(|d| d.as_str().and_then(resolve)).collect());
            continue;
        }
        let Some(targets) = &targets else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a runway cache archive (no manifest first)",
            ));
        };
        let kind = entry.header().entry_type();
        let mut refuse = |why: &str| done.refused.push(format!("{shown} ({why})"));
        let Some((index, rel)) = split_safe(&path) else {
            refuse("an absolute path or one with ..");
            continue;
        };
        if !(kind.is_file() || kind.is_dir()) {
            refuse("not a file or a directory");
            continue;
        }
        let Some(Some(root)) = targets.get(index) else {
            if targets.get(index).is_none() {
                refuse("no such cached directory");
            }
            continue;
        };
        let dest = root.join(&rel);
        if let Err(why) = safe_parent(root, dest.parent().unwrap_or(root), &mut made) {
            refuse(why);
            continue;
        }
        let there = dest.symlink_metadata().ok();
        if there.as_ref().is_some_and(|m| m.file_type().is_symlink()) {
            // Never write through a link that is already there.
            refuse("a symbolic link is there");
            continue;
        }
        if kind.is_file() {
            if there.as_ref().is_some_and(|m| m.is_dir()) {
                refuse("a directory is there");
                continue;
            }
            let size = entry.header().size().unwrap_or(0);
            if done.bytes.saturating_add(size) > cap {
                for f in written.iter().rev() {
                    let _ = std::fs::remove_file(f);
                }
                return Err(io::Error::other(format!(
                    "the cache expands to more than {} (the cap on a restore); nothing of it is kept",
                    human_bytes(cap)
                )));
            }
            match entry.unpack(&dest) {
                Ok(_) => {
                    done.files += 1;
                    done.bytes += size;
                    written.push(dest);
                }
                Err(e) => refuse(&e.to_string()),
            }
        } else {
            if there.as_ref().is_some_and(|m| !m.is_dir()) {
                refuse("a file is there");
                continue;
            }
            if let Err(e) = entry.unpack(&dest) {
                refuse(&e.to_string());
            }
        }
    }
    Ok(done)
}

/// Makes sure `dir` (under `root`) is a real directory, creating what is missing, and
/// that neither `root` nor anything between is a symbolic link or a file.
fn safe_parent(
    root: &Path,
    dir: &Path,
    made: &mut std::collections::HashSet<PathBuf>,
) -> Result<(), &'static str> {
    if made.contains(dir) {
        return Ok(());
    }
    let rel = dir.strip_prefix(root).unwrap_or(Path::new(""));
    let mut at = root.to_path_buf();
    let mut steps = vec![at.clone()];
    for c in rel.components() {
        at.push(c);
        steps.push(at.clone());
    }
    for step in steps {
        if made.contains(&step) {
            continue;
        }
        match step.symlink_metadata() {
            Ok(m) if m.file_type().is_symlink() => return Err("under a symbolic link"),
            Ok(m) if !m.is_dir() => return Err("under a file"),
            Ok(_) => {}
            Err(_) => std::fs::create_dir(&step).map_err(|_| "its directory cannot be made")?,
        }
        made.insert(step);
    }
    Ok(())
}

fn human_bytes(n: u64) -> String {
    if n >= 1 << 30 {
        format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64)
    } else {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    }
}

/// `3/a/b` → (3, `a/b`); `None` for anything with `..`, a root, or no index.
fn split_safe(path: &Path) -> Option<(usize, PathBuf)> {
    let mut comps = path.components();
    let index = match comps.next()? {
        Component::Normal(s) => s.to_str()?.parse().ok()?,
        _ => return None,
    };
    let mut rel = PathBuf::new();
    for c in comps {
        match c {
            Component::Normal(s) => rel.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some((index, rel))
}

pub use crate::files::walk;

/// A fingerprint of the cached directories: paths, sizes, modes and mtimes (seconds), hashed.
/// Equal fingerprints mean nothing changed since the restore.
pub fn fingerprint(dirs: &Dirs) -> io::Result<String> {
    Ok(fingerprint_of(&walk_dirs(dirs)?))
}

/// [`fingerprint`] of directories walked already.
pub fn fingerprint_of(walked: &Walked) -> String {
    let mut h = Sha256::new();
    for (i, entries) in walked.iter().enumerate() {
        for (_, rel, meta) in entries {
            // Archives keep whole-second mtimes, and a directory's mtime changes as
            // files are restored into it: compare files by size, mode and second.
            if meta.is_dir() {
                h.update(format!("{i}\0{}/\n", rel.display()));
            } else {
                h.update(format!(
                    "{i}\0{}\0{}\0{}\0{}\n",
                    rel.display(),
                    meta.len(),
                    meta.mode(),
                    meta.mtime()
                ));
            }
        }
    }
    h.finalize().iter().map(|b| format!("{b:02x}")).collect()
}

/// Walks `dirs` once: `None` when their fingerprint is `since` (nothing changed), else
/// the archive written into `out` with the new fingerprint.
pub fn save_if_changed(
    dirs: &Dirs,
    since: Option<&str>,
    out: impl Write,
    cancel: &AtomicBool,
) -> io::Result<Option<(Saved, String)>> {
    let walked = walk_dirs(dirs)?;
    let now = fingerprint_of(&walked);
    if since == Some(now.as_str()) {
        return Ok(None);
    }
    Ok(Some((save_walked(dirs, &walked, out, cancel)?, now)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn save_restore_round_trip_keeps_mtime_and_skips_symlinks() {
        let t = tempfile::tempdir().unwrap();
        let src = t.path().join("src");
        std::fs::create_dir_all(src.join("a/b")).unwrap();
        std::fs::write(src.join("a/b/f.txt"), "hello").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.join("link")).unwrap();
        let dirs = vec![("$HOME/x".to_string(), src.clone())];
        let before = fingerprint(&dirs).unwrap();
        let arch = t.path().join("store/c.tar.zst");
        let no = AtomicBool::new(false);
        let saved = save(&dirs, &arch, &no).unwrap();
        assert_eq!(saved.files, 1);
        let dst = t.path().join("dst");
        let got = restore(
            &arch,
            &|w| (w == "$HOME/x").then(|| dst.clone()),
            &no,
            u64::MAX,
        )
        .unwrap();
        assert_eq!(got.files, 1);
        assert!(got.refused.is_empty());
        assert_eq!(
            std::fs::read_to_string(dst.join("a/b/f.txt")).unwrap(),
            "hello"
        );
        assert!(!dst.join("link").exists());
        let after = fingerprint(&[("$HOME/x".to_string(), dst)]).unwrap();
        assert_eq!(before, after, "restored files keep size, mode and mtime");
        // The archive says what the directories' fingerprint was: the restore needs
        // no walk of its own to know what a store compares with.
        assert_eq!(got.fingerprint.as_deref(), Some(after.as_str()));
    }

    /// An archive as a hostile job could leave one: entries (path, mode, data or None
    /// for a directory) after the manifest.
    fn forged(dir: &Path, entries: &[(&str, u32, Option<Vec<u8>>)]) -> PathBuf {
        let path = dir.join("forged.tar.zst");
        let enc = zstd::Encoder::new(File::create(&path).unwrap(), 3).unwrap();
        let mut tar = tar::Builder::new(enc);
        let manifest = br#"{"version":1,"dirs":["c"]}"#;
        let mut h = tar::Header::new_gnu();
        h.set_size(manifest.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        tar.append_data(&mut h, MANIFEST, &manifest[..]).unwrap();
        for (name, mode, data) in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(*mode);
            match data {
                Some(d) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(d.len() as u64);
                    h.set_cksum();
                    tar.append_data(&mut h, name, d.as_slice()).unwrap();
                }
                None => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    h.set_cksum();
                    tar.append_data(&mut h, name, &[][..]).unwrap();
                }
            }
        }
        tar.into_inner().unwrap().finish().unwrap();
        path
    }

    #[test]
    fn unusable_entries_are_refused_with_reasons_and_the_rest_restored() {
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("checkout");
        std::fs::create_dir_all(dst.join("lib")).unwrap();
        std::fs::write(dst.join("plain"), "a file").unwrap();
        let outside = t.path().join("outside");
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, dst.join("linked")).unwrap();
        let data = |s: &str| Some(s.as_bytes().to_vec());
        let arch = forged(
            t.path(),
            &[
                ("0/lib", 0o644, data("a file where a directory is")),
                ("0/linked/x", 0o644, data("through a committed symlink")),
                ("0/plain/y", 0o644, data("under a file")),
                ("0/plain", 0o755, None),
                ("0/ok/bin", 0o4755, data("setuid")),
                ("0/ok/gid", 0o2755, data("setgid")),
                ("0/ok/fine", 0o644, data("fine")),
            ],
        );
        let no = AtomicBool::new(false);
        let got = restore(&arch, &|_| Some(dst.clone()), &no, u64::MAX).unwrap();
        assert_eq!(got.files, 3, "{got:?}");
        let refused = got.refused.join("\n");
        for expected in [
            "0/lib (a directory is there)",
            "0/linked/x (under a symbolic link)",
            "0/plain/y (under a file)",
            "0/plain (a file is there)",
        ] {
            assert!(refused.contains(expected), "{refused}");
        }
        assert!(
            !outside.join("x").exists(),
            "nothing written through the link"
        );
        assert_eq!(
            std::fs::read_to_string(dst.join("ok/fine")).unwrap(),
            "fine"
        );
        for f in ["ok/bin", "ok/gid"] {
            let mode = std::fs::metadata(dst.join(f)).unwrap().mode();
            assert_eq!(mode & 0o7777, 0o755, "{f}: {mode:o}");
        }
    }

    #[test]
    fn a_restore_stops_at_the_cap_and_removes_what_it_wrote() {
        let t = tempfile::tempdir().unwrap();
        let dst = t.path().join("checkout");
        // 48 MiB of zeros compress to a few KB: a bomb under a 32 MiB cap.
        let zeros = Some(vec![0u8; 16 << 20]);
        let arch = forged(
            t.path(),
            &[
                ("0/a", 0o644, zeros.clone()),
                ("0/b", 0o644, zeros.clone()),
                ("0/c", 0o644, zeros),
            ],
        );
        assert!(std::fs::metadata(&arch).unwrap().len() < 100_000);
        let no = AtomicBool::new(false);
        let err = restore(&arch, &|_| Some(dst.clone()), &no, 32 << 20).unwrap_err();
        assert!(err.to_string().contains("more than 32.0 MiB"), "{err}");
        assert!(!dst.join("a").exists() && !dst.join("b").exists());
    }

    #[test]
    fn unsafe_paths_are_refused() {
        assert!(split_safe(Path::new("0/../../etc/passwd")).is_none());
        assert!(split_safe(Path::new("/etc/passwd")).is_none());
        assert!(split_safe(Path::new("../x")).is_none());
        assert_eq!(
            split_safe(Path::new("2/a/./b")),
            Some((2, PathBuf::from("a/b")))
        );
    }
}
