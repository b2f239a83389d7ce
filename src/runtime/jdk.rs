//! JDKs: `jdk:` mapped to an installed JDK (`/usr/lib/jvm` or `RUNWAY_JDK_ROOTS`,
//! `RUNWAY_JDK_DIRS`, runway's toolchain directory), else installed into runway's
//! toolchain directory from a configurable source, as Travis's install-jdk did
//! (`RUNWAY_JDK_SOURCE`, a URL with `{major}` and `{arch}`; Adoptium's by default); a
//! JDK that can be neither found nor installed errors the job, saying how to provide it.

use std::path::{Path, PathBuf};

use super::{Context, Lock, Missing, Provider, Ready};

/// Where JDKs are downloaded from unless `RUNWAY_JDK_SOURCE` says otherwise.
const ADOPTIUM: &str =
    "https://api.adoptium.net/v3/binary/latest/{major}/ga/linux/{arch}/jdk/hotspot/normal/eclipse";

/// The installed JDKs.
pub struct Jdk {
    roots: Vec<PathBuf>,
}

impl Jdk {
    /// Looks in `/usr/lib/jvm` (or `RUNWAY_JDK_ROOTS`), `RUNWAY_JDK_DIRS` and runway's
    /// toolchain directory.
    pub fn from_machine() -> Jdk {
        let mut roots = jdk_roots();
        roots.push(super::toolchain_dir().join("jdk"));
        Jdk { roots }
    }
}

fn ready(jdk: &str, home: &Path, how: &str) -> Ready {
    Ready {
        known: Vec::new(),
        path: vec![home.join("bin")],
        env: vec![
            ("JAVA_HOME".into(), home.display().to_string()),
            ("TRAVIS_JDK_VERSION".into(), jdk.to_string()),
        ],
        announce: vec![
            "java -Xmx32m -version".into(),
            "javac -J-Xmx32m -version".into(),
        ],
        what: format!("jdk {jdk} ({}{how})", home.display()),
        expect: vec![("java".into(), home.join("bin/java"))],
    }
}

/// The source URL for JDK `major` on this machine's architecture.
pub fn source_url(template: &str, major: u32) -> String {
    let arch = if cfg!(target_arch = "aarch64") {
        "aarch64"
    } else {
        "x64"
    };
    template
        .replace("{major}", &major.to_string())
        .replace("{arch}", arch)
}

/// Downloads and unpacks JDK `major` into `{toolchains}/jdk/jdk-MAJOR`.
fn install(major: u32, toolchains: &Path) -> Result<PathBuf, String> {
    let template = std::env::var("RUNWAY_JDK_SOURCE").unwrap_or_else(|_| ADOPTIUM.into());
    let url = source_url(&template, major);
    let root = toolchains.join("jdk");
    let dest = root.join(format!("jdk-{major}"));
    std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
    let _lock = Lock::take(&root.join(format!("{major}.lock"))).map_err(|e| e.to_string())?;
    if dest.join("bin/java").exists() {
        return Ok(dest);
    }
    let archive = root.join(format!("jdk-{major}.download"));
    super::fetch(&url, Some(&archive), None)?;
    let staging = root.join(format!(".staging-{major}"));
    let untarred = super::untar(&archive, &staging);
    let _ = std::fs::remove_file(&archive);
    untarred.map_err(|e| format!("{url}: not a JDK archive ({e})"))?;
    // The archive holds the JDK itself, or one directory that does.
    let home = std::iter::once(staging.clone())
        .chain(
            std::fs::read_dir(&staging)
                .map_err(|e| e.to_string())?
                .flatten()
                .map(|e| e.path()),
        )
        .find(|d| d.join("bin/java").exists())
        .ok_or_else(|| format!("{url}: the archive holds no bin/java"))?;
    std::fs::rename(&home, &dest).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(dest)
}

impl Provider for Jdk {
    fn provide(&self, version: &str, ctx: &Context) -> Result<Ready, Missing> {
        let jdk = version.trim();
        if jdk == "default" {
            return Ok(Ready {
                announce: vec!["java -Xmx32m -version".into()],
                what: "jdk: the machine's default java".into(),
                ..Ready::default()
            });
        }
        if let Some(home) = find_jdk(jdk, &self.roots) {
            return Ok(ready(jdk, &home, ""));
        }
        let found = installed_jdks(&self.roots);
        let found = if found.is_empty() {
            "none".into()
        } else {
            found.join(", ")
        };
        let Some(major) = jdk_major(jdk) else {
            return Err(Missing {
                what: format!("jdk \"{jdk}\" is not a JDK runway knows (found: {found})"),
                how: "name it as Travis did: openjdk17, oraclejdk11".into(),
            });
        };
        match install(major, ctx.toolchains) {
            Ok(home) => Ok(ready(jdk, &home, ", installed by runway")),
            Err(why) => Err(Missing {
                what: format!(
                    "jdk \"{jdk}\" is not installed here (found: {found}) and could not be installed: {why}"
                ),
                how: format!(
                    "install a JDK {major} under /usr/lib/jvm (e.g. apt-get install openjdk-{major}-jdk-headless), point RUNWAY_JDK_DIRS at one, or RUNWAY_JDK_SOURCE at where JDK archives can be downloaded"
                ),
            }),
        }
    }
}

/// The JDK major version a `jdk:` name asks for: `openjdk8` → 8, `oraclejdk11` → 11.
pub fn jdk_major(name: &str) -> Option<u32> {
    let digits: String = name
        .trim_start_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .take_while(|c| c.is_ascii_digit() || *c == '.')
        .collect();
    let major = digits.strip_prefix("1.").unwrap_or(&digits);
    major.split('.').next()?.parse().ok()
}

/// Finds an installed JDK for a `jdk:` name among the directories of `roots`
/// (`/usr/lib/jvm` and `RUNWAY_JDK_DIRS`). Returns its home.
pub fn find_jdk(name: &str, roots: &[PathBuf]) -> Option<PathBuf> {
    let major = jdk_major(name)?;
    let mut candidates: Vec<PathBuf> = roots
        .iter()
        .filter_map(|r| std::fs::read_dir(r).ok())
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("bin/java").exists())
        .filter(|p| {
            let n = p
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            dir_major(&n) == Some(major)
        })
        .collect();
    candidates.sort();
    // Prefer the vendor the name asks for.
    let vendor = name.trim_end_matches(|c: char| c.is_ascii_digit() || c == '.');
    candidates
        .iter()
        .find(|p| p.to_string_lossy().contains(vendor.trim_end_matches("jdk")))
        .or(candidates.first())
        .cloned()
}

fn dir_major(dir_name: &str) -> Option<u32> {
    // java-17-openjdk-amd64, java-1.8.0-openjdk, temurin-25-jdk-amd64, jdk-21
    dir_name.split(['-', '_']).find_map(|part| {
        let p = part.strip_prefix("1.").unwrap_or(part);
        let head = p.split('.').next()?;
        (!head.is_empty() && head.chars().all(|c| c.is_ascii_digit()))
            .then(|| head.parse().ok())
            .flatten()
    })
}

/// The directories searched for JDKs: `/usr/lib/jvm` (or `RUNWAY_JDK_ROOTS`), then
/// `RUNWAY_JDK_DIRS`.
pub fn jdk_roots() -> Vec<PathBuf> {
    // `RUNWAY_JDK_ROOTS` replaces /usr/lib/jvm (a machine whose JDKs live elsewhere).
    let mut roots = match std::env::var_os("RUNWAY_JDK_ROOTS") {
        Some(r) => std::env::split_paths(&r).collect(),
        None => vec![PathBuf::from("/usr/lib/jvm")],
    };
    if let Some(extra) = std::env::var_os("RUNWAY_JDK_DIRS") {
        roots.extend(std::env::split_paths(&extra));
    }
    roots
}

/// The names of the installed JDKs, for messages.
pub fn installed_jdks(roots: &[PathBuf]) -> Vec<String> {
    let mut v: Vec<String> = roots
        .iter()
        .filter_map(|r| std::fs::read_dir(r).ok())
        .flatten()
        .flatten()
        .filter(|e| e.path().join("bin/java").exists())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jdk_names() {
        assert_eq!(jdk_major("openjdk8"), Some(8));
        assert_eq!(jdk_major("oraclejdk11"), Some(11));
        assert_eq!(jdk_major("openjdk-17"), Some(17));
        assert_eq!(jdk_major("default"), None);
        assert_eq!(dir_major("java-17-openjdk-amd64"), Some(17));
        assert_eq!(dir_major("java-1.8.0-openjdk-amd64"), Some(8));
        assert_eq!(dir_major("temurin-25-jdk-amd64"), Some(25));
    }

    #[test]
    fn the_source_names_the_major_and_this_machines_arch() {
        let url = source_url(ADOPTIUM, 21);
        assert!(url.starts_with("https://api.adoptium.net/v3/binary/latest/21/ga/linux/"));
        assert!(url.contains("/x64/") || url.contains("/aarch64/"));
        assert_eq!(
            source_url("file:///srv/jdk-{major}.tar", 8),
            "file:///srv/jdk-8.tar"
        );
    }
}
