//! Unpacking a CodeDeploy bundle for a rehearsal, by runway's own code (the `tar`, `zip`
//! and `flate2` crates, never the host's `tar` or `unzip`), run inside the rehearsal's
//! sandbox ([`crate::inside`]). What a bundle may bring is decided here, on its entries:
//! device nodes, fifos and sockets, absolute paths, `..`, hard links, and symbolic links
//! whose target leaves the bundle are refused, each named with why; past
//! [`Caps::bytes`] written or [`Caps::entries`] entries the unpack stops. A bundle with
//! any refused entry is not deployed: the rehearsal fails saying which entries and why,
//! rather than rehearse something the real agent would do otherwise.

use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};

/// What a bundle may expand to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Caps {
    /// Bytes written, all files together.
    pub bytes: u64,
    /// Entries (files, directories, links).
    pub entries: u64,
}

/// The default caps: 1 GiB and 100,000 entries; `RUNWAY_BUNDLE_MAX_BYTES` and
/// `RUNWAY_BUNDLE_MAX_ENTRIES` set others.
pub fn caps() -> Caps {
    let env = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| crate::sandbox::cgroup::parse_size(v.trim()).ok())
            .unwrap_or(d)
    };
    Caps {
        bytes: env("RUNWAY_BUNDLE_MAX_BYTES", 1 << 30),
        entries: env("RUNWAY_BUNDLE_MAX_ENTRIES", 100_000),
    }
}

/// How a bundle is packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    /// A tar, plain.
    Tar,
    /// A tar, gzipped (`.tgz`, `.tar.gz`).
    Tgz,
    /// A zip.
    Zip,
}

/// The kind of a bundle by its name (`None`: not one runway unpacks).
pub fn kind_of(name: &str) -> Option<Kind> {
    let n = name.to_ascii_lowercase();
    if n.ends_with(".zip") {
        Some(Kind::Zip)
    } else if n.ends_with(".tar.gz") || n.ends_with(".tgz") {
        Some(Kind::Tgz)
    } else if n.ends_with(".tar") {
        Some(Kind::Tar)
    } else {
        None
    }
}

/// Why a bundle was not unpacked.
#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    /// Entries refused: (entry, why).
    #[error("the bundle holds entries runway does not unpack: {}", list(.0))]
    Refused(Vec<(String, String)>),
    /// A cap passed.
    #[error("{0}")]
    TooBig(String),
    /// The archive could not be read.
    #[error("{0}")]
    Io(#[from] io::Error),
}

fn list(refused: &[(String, String)]) -> String {
    let mut shown: Vec<String> = refused
        .iter()
        .take(10)
        .map(|(e, why)| format!("{e} ({why})"))
        .collect();
    if refused.len() > 10 {
        shown.push(format!("and {} more", refused.len() - 10));
    }
    shown.join(", ")
}

/// What an unpack wrote.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Unpacked {
    /// Files.
    pub files: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// One entry as the archive describes it.
enum Entry {
    Dir,
    File { mode: u32 },
    Symlink(PathBuf),
}

/// `name` as a relative path inside the bundle, or why not.
fn inside_name(name: &str) -> Result<PathBuf, &'static str> {
    let p = Path::new(name);
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => return Err("a path with .."),
            Component::RootDir | Component::Prefix(_) => return Err("an absolute path"),
        }
    }
    Ok(out)
}

/// A link at `at` (inside the bundle) to `target` stays inside the bundle (decided on
/// the text: an absolute target, or `..` past the top, leaves it).
fn link_stays(at: &Path, target: &Path) -> bool {
    if target.is_absolute() {
        return false;
    }
    let mut depth = at.components().count() as i64 - 1;
    for c in target.components() {
        match c {
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            _ => {}
        }
        if depth < 0 {
            return false;
        }
    }
    true
}

/// Writes entries under `dest`, counting against `caps`.
struct Writer<'a> {
    dest: &'a Path,
    caps: Caps,
    entries: u64,
    done: Unpacked,
    refused: Vec<(String, String)>,
}

impl Writer<'_> {
    /// Admits `name` (refusing it with why, or stopping at a cap); the path to write.
    fn admit(&mut self, name: &str) -> Result<Option<PathBuf>, BundleError> {
        self.entries += 1;
        if self.entries > self.caps.entries {
            return Err(BundleError::TooBig(format!(
                "the bundle has more than {} entries (the cap on a rehearsal's bundle)",
                self.caps.entries
            )));
        }
        match inside_name(name) {
            Ok(rel) => Ok(Some(rel)),
            Err(why) => {
                self.refused.push((name.to_string(), why.to_string()));
                Ok(None)
            }
        }
    }

    fn write(
        &mut self,
        name: &str,
        rel: &Path,
        entry: Entry,
        data: &mut dyn Read,
    ) -> Result<(), BundleError> {
        if rel.as_os_str().is_empty() {
            return Ok(());
        }
        let to = self.dest.join(rel);
        match entry {
            Entry::Dir => std::fs::create_dir_all(&to)?,
            Entry::Symlink(target) => {
                if !link_stays(rel, &target) {
                    self.refused.push((
                        name.to_string(),
                        format!("a link to {} leaves the bundle", target.display()),
                    ));
                    return Ok(());
                }
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(&to);
                std::os::unix::fs::symlink(&target, &to)?;
            }
            Entry::File { mode } => {
                if let Some(parent) = to.parent() {
                    std::fs::create_dir_all(parent)?;
                }
                let _ = std::fs::remove_file(&to);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(&to)?;
                let left = self.caps.bytes - self.done.bytes;
                let n = io::copy(&mut data.take(left + 1), &mut f)?;
                if n > left {
                    return Err(BundleError::TooBig(format!(
                        "the bundle expands to more than {} (the cap on a rehearsal's bundle)",
                        crate::sandbox::cgroup::human_size(self.caps.bytes)
                    )));
                }
                f.flush()?;
                use std::os::unix::fs::PermissionsExt;
                // Permission bits only: no setuid, setgid or sticky bit.
                f.set_permissions(std::fs::Permissions::from_mode(mode & 0o777))?;
                self.done.files += 1;
                self.done.bytes += n;
            }
        }
        Ok(())
    }
}

/// Unpacks the bundle read from `input` into `dest` (made if missing).
pub fn unpack(
    input: std::fs::File,
    kind: Kind,
    dest: &Path,
    caps: Caps,
) -> Result<Unpacked, BundleError> {
    std::fs::create_dir_all(dest)?;
    let mut w = Writer {
        dest,
        caps,
        entries: 0,
        done: Unpacked::default(),
        refused: Vec::new(),
    };
    match kind {
        Kind::Tar => untar(io::BufReader::new(input), &mut w)?,
        Kind::Tgz => untar(
            flate2::read::GzDecoder::new(io::BufReader::new(input)),
            &mut w,
        )?,
        Kind::Zip => unzip(input, &mut w)?,
    }
    if !w.refused.is_empty() {
        return Err(BundleError::Refused(w.refused));
    }
    Ok(w.done)
}

fn untar(input: impl Read, w: &mut Writer<'_>) -> Result<(), BundleError> {
    let mut tar = tar::Archive::new(input);
    for entry in tar.entries()? {
        let mut entry = entry?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let Some(rel) = w.admit(&name)? else {
            continue;
        };
        let what = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_file() || kind == tar::EntryType::Continuous {
            Entry::File {
                mode: entry.header().mode().unwrap_or(0o644),
            }
        } else if kind.is_symlink() {
            let target = entry
                .link_name()?
                .map(|t| t.into_owned())
                .unwrap_or_default();
            Entry::Symlink(target)
        } else if kind.is_pax_global_extensions()
            || kind.is_pax_local_extensions()
            || kind.is_gnu_longname()
            || kind.is_gnu_longlink()
        {
            continue;
        } else {
            let why = if kind.is_character_special() {
                "a character device"
            } else if kind.is_block_special() {
                "a block device"
            } else if kind.is_fifo() {
                "a fifo"
            } else if kind.is_hard_link() {
                "a hard link"
            } else {
                "not a file, a directory or a link"
            };
            w.refused.push((name, why.into()));
            continue;
        };
        w.write(&name, &rel, what, &mut entry)?;
    }
    Ok(())
}

fn unzip(input: std::fs::File, w: &mut Writer<'_>) -> Result<(), BundleError> {
    let mut zip = zip::ZipArchive::new(io::BufReader::new(input)).map_err(io::Error::other)?;
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(io::Error::other)?;
        let name = f.name().map_err(io::Error::other)?.into_owned();
        let Some(rel) = w.admit(&name)? else {
            continue;
        };
        let mode = f.unix_mode().unwrap_or(0o644);
        let what = match mode & libc::S_IFMT {
            libc::S_IFCHR => Err("a character device"),
            libc::S_IFBLK => Err("a block device"),
            libc::S_IFIFO => Err("a fifo"),
            libc::S_IFSOCK => Err("a socket"),
            _ if f.is_dir() => Ok(Entry::Dir),
            _ if f.is_symlink() => {
                let mut target = String::new();
                (&mut f).take(4096).read_to_string(&mut target)?;
                Ok(Entry::Symlink(PathBuf::from(target)))
            }
            _ => Ok(Entry::File { mode }),
        };
        match what {
            Ok(what) => w.write(&name, &rel, what, &mut f)?,
            Err(why) => w.refused.push((name, why.into())),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> std::fs::File {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let bytes = b.into_inner().unwrap();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&bytes).unwrap();
        use std::io::Seek;
        f.rewind().unwrap();
        f
    }

    fn header(kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o4755);
        h
    }

    #[test]
    fn devices_links_out_and_dot_dot_are_refused_and_named() {
        let f = tar_with(|b| {
            let mut h = header(tar::EntryType::Regular, 2);
            b.append_data(&mut h, "ok/a", &b"hi"[..]).unwrap();
            let mut h = header(tar::EntryType::Char, 0);
            h.set_device_major(10).unwrap();
            h.set_device_minor(232).unwrap();
            b.append_data(&mut h, "dev/kvm", io::empty()).unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "out", "/root/.aws").unwrap();
            let mut h = header(tar::EntryType::Symlink, 0);
            b.append_link(&mut h, "ok/in", "a").unwrap();
        });
        let d = tempfile::tempdir().unwrap();
        let e = unpack(f, Kind::Tar, d.path(), caps())
            .unwrap_err()
            .to_string();
        assert!(e.contains("dev/kvm (a character device)"), "{e}");
        assert!(
            e.contains("out (a link to /root/.aws leaves the bundle)"),
            "{e}"
        );
        assert!(!e.contains("ok/"), "{e}");
        assert!(!d.path().join("dev/kvm").exists());
        assert!(!d.path().join("out").exists());
    }

    #[test]
    fn setuid_bits_drop_and_caps_stop_a_bomb() {
        let f = tar_with(|b| {
            let mut h = header(tar::EntryType::Regular, 3);
            b.append_data(&mut h, "x", &b"abc"[..]).unwrap();
        });
        let d = tempfile::tempdir().unwrap();
        let done = unpack(f, Kind::Tar, d.path(), caps()).unwrap();
        assert_eq!(done, Unpacked { files: 1, bytes: 3 });
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(d.path().join("x"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o755);
        let big = tar_with(|b| {
            let mut h = header(tar::EntryType::Regular, 1 << 20);
            b.append_data(&mut h, "zeros", io::repeat(0).take(1 << 20))
                .unwrap();
        });
        let small = Caps {
            bytes: 1000,
            entries: 10,
        };
        let e = unpack(big, Kind::Tar, tempfile::tempdir().unwrap().path(), small).unwrap_err();
        assert!(e.to_string().contains("expands to more than"), "{e}");
    }

    #[test]
    fn links_inside_the_bundle_stay() {
        assert!(link_stays(Path::new("a/b"), Path::new("../c")));
        assert!(!link_stays(Path::new("a/b"), Path::new("../../c")));
        assert!(!link_stays(Path::new("a"), Path::new("/etc")));
        assert_eq!(inside_name("../x"), Err("a path with .."));
        assert_eq!(inside_name("/x"), Err("an absolute path"));
    }
}
