//! Cache archives: tar + zstd, one archive per key, written atomically.
//!
//! Each cached directory is stored under its index (`0/…`, `1/…`) with a manifest
//! (`runway-cache.json`) naming the directories as written in the config, so an
//! archive restores into wherever `$HOME` or the checkout is for the next job. On
//! restore, entries with `..`, absolute paths, links, or unknown indexes are refused
//! and never written. Symlinks are skipped when saving, as Travis's casher did.

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
    /// Entries refused (unsafe paths, links), as written in the archive.
    pub refused: Vec<String>,
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
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::NamedTempFile::new_in(parent)?;
    let mut enc = zstd::Encoder::new(BufWriter::with_capacity(1 << 20, tmp.reopen()?), 3)?;
    enc.multithread(2)?;
    let mut tar = tar::Builder::new(enc);
    tar.follow_symlinks(false);
    let names: Vec<&str> = dirs.iter().map(|(w, _)| w.as_str()).collect();
    let manifest = serde_json::to_vec(&serde_json::json!({ "version": 1, "dirs": names }))?;
    let mut header = tar::Header::new_gnu();
    header.set_size(manifest.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, MANIFEST, manifest.as_slice())?;
    let mut saved = Saved::default();
    for (i, (_, dir)) in dirs.iter().enumerate() {
        for (path, rel, meta) in walk(dir)? {
            if cancel.load(Ordering::Relaxed) {
                return Err(canceled());
            }
            let name = Path::new(&i.to_string()).join(&rel);
            if meta.is_dir() {
                tar.append_dir(&name, &path)?;
            } else {
                tar.append_path_with_name(&path, &name)?;
                saved.files += 1;
                saved.bytes += meta.len();
            }
        }
    }
    let enc = tar.into_inner()?;
    let mut out = enc.finish()?;
    out.flush()?;
    drop(out);
    saved.archive_bytes = tmp.as_file().metadata()?.len();
    tmp.persist(dest).map_err(|e| e.error)?;
    Ok(saved)
}

/// Extracts an archive into the directories it names, as they are resolved now.
/// Entries for directories the job no longer caches are skipped.
pub fn restore(
    archive: &Path,
    resolve: &dyn Fn(&str) -> Option<PathBuf>,
    cancel: &AtomicBool,
) -> io::Result<Restored> {
    let dec = zstd::Decoder::new(BufReader::new(File::open(archive)?))?;
    let mut tar = tar::Archive::new(dec);
    tar.set_preserve_mtime(true);
    tar.set_preserve_permissions(true);
    let mut targets: Option<Vec<Option<PathBuf>>> = None;
    let mut done = Restored::default();
    let mut made: std::collections::HashSet<PathBuf> = std::collections::HashSet::new();
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
            io::Read::read_to_end(&mut entry, &mut text)?;
            let v: serde_json::Value = serde_json::from_slice(&text)
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
            let dirs = v["dirs"].as_array().cloned().unwrap_or_default();
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
        let Some((index, rel)) = split_safe(&path) else {
            done.refused.push(shown);
            continue;
        };
        if !(kind.is_file() || kind.is_dir()) {
            done.refused.push(shown);
            continue;
        }
        let Some(Some(root)) = targets.get(index) else {
            if targets.get(index).is_none() {
                done.refused.push(shown);
            }
            continue;
        };
        let dest = root.join(&rel);
        if let Some(parent) = dest.parent()
            && !made.contains(parent)
        {
            std::fs::create_dir_all(parent)?;
            made.insert(parent.to_path_buf());
        }
        if kind.is_file() {
            // Never write through a link that is already there.
            if dest
                .symlink_metadata()
                .is_ok_and(|m| m.file_type().is_symlink())
            {
                done.refused.push(shown);
                continue;
            }
            done.files += 1;
            done.bytes += entry.header().size().unwrap_or(0);
        }
        entry.unpack(&dest)?;
    }
    Ok(done)
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

/// Every file and directory under `dir` (not following or including symlinks), with
/// its path relative to `dir`, sorted. A missing directory is empty.
pub fn walk(dir: &Path) -> io::Result<Vec<(PathBuf, PathBuf, std::fs::Metadata)>> {
    let mut out = Vec::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let mut entries: Vec<_> = std::fs::read_dir(&d)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let path = e.path();
            let meta = std::fs::symlink_metadata(&path)?;
            if meta.file_type().is_symlink() {
                continue;
            }
            let rel = path.strip_prefix(dir).unwrap_or(&path).to_path_buf();
            if meta.is_dir() {
                stack.push(path.clone());
            }
            out.push((path, rel, meta));
        }
    }
    out.sort_by(|a, b| a.1.cmp(&b.1));
    Ok(out)
}

/// A fingerprint of the cached directories: paths, sizes, modes and mtimes (seconds), hashed.
/// Equal fingerprints mean nothing changed since the restore.
pub fn fingerprint(dirs: &Dirs) -> io::Result<String> {
    let mut h = Sha256::new();
    for (i, (_, dir)) in dirs.iter().enumerate() {
        for (_, rel, meta) in walk(dir)? {
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
    Ok(h.finalize().iter().map(|b| format!("{b:02x}")).collect())
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
        let got = restore(&arch, &|w| (w == "$HOME/x").then(|| dst.clone()), &no).unwrap();
        assert_eq!(got.files, 1);
        assert!(got.refused.is_empty());
        assert_eq!(
            std::fs::read_to_string(dst.join("a/b/f.txt")).unwrap(),
            "hello"
        );
        assert!(!dst.join("link").exists());
        let after = fingerprint(&[("$HOME/x".to_string(), dst)]).unwrap();
        assert_eq!(before, after, "restored files keep size, mode and mtime");
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
