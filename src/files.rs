//! Walking a directory tree (caches archive it, the s3 provider uploads from it, a
//! deploy rehearsal finds its bundle in it, the rehearsal installs from it).

use std::io;
use std::path::{Path, PathBuf};

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
