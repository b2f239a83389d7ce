//! The environment each job asks for: the language version it names (or Travis's
//! default), found on this machine or installed into runway's toolchain directory, or
//! the job is errored with what is missing and how to provide it. Never a false green:
//! a substitute is used only when the person asked for substitutes, and then it is
//! named in the job's header and reason.
//!
//! - [`wanted`]: which runtimes a job asks for, from its matrix values and language
//!   (pure);
//! - [`Version`] and [`pick`]: version specs (`3.8`, `"3.10"`, `12`, `lts/*`, `node`)
//!   against what exists (pure);
//! - [`Provider`]: one per language at the side effect (finding, installing):
//!   [`python`], [`node`], [`rust`], [`jdk`]; Go, Ruby, PHP and Perl are found on
//!   `PATH` at the version asked ([`on_path`]);
//! - [`platform`]: the job's `os` and `arch` against this machine's.

pub(crate) mod jdk;
pub(crate) mod node;
pub(crate) mod on_path;
pub(crate) mod platform;
pub(crate) mod python;
pub(crate) mod rust;
pub(crate) mod services;

use std::fmt;
use std::path::PathBuf;

/// A runtime a job asks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Want {
    /// The `.travis.yml` key (`python`, `node_js`, `rust`, `jdk`, `go`, …).
    pub key: &'static str,
    /// The version as written (or Travis's default).
    pub version: String,
    /// True when the job did not say and Travis's default is used.
    pub defaulted: bool,
}

/// The runtime keys runway knows, with Travis's default version for the language that
/// uses it (None: no default, the key must be given).
const KEYS: &[(&str, &str, Option<&str>)] = &[
    ("python", "python", Some("3.6")),
    ("node_js", "node_js", Some("0.10")),
    ("rust", "rust", Some("stable")),
    ("jdk", "java", None),
    ("go", "go", Some("1.11.x")),
    ("rvm", "ruby", Some("2.5.3")),
    ("php", "php", Some("7.2")),
    ("perl", "perl", Some("5.28")),
    ("scala", "scala", Some("2.12.8")),
    ("elixir", "elixir", Some("1.7.4")),
    ("otp_release", "erlang", Some("21.1")),
    ("dart", "dart", Some("stable")),
    ("julia", "julia", Some("1.0")),
    ("ghc", "haskell", Some("8.6.5")),
    ("crystal", "crystal", Some("latest")),
    ("d", "d", Some("dmd")),
    ("dotnet", "csharp", None),
    ("mono", "csharp", Some("latest")),
    ("r", "r", Some("release")),
    ("smalltalk", "smalltalk", None),
    ("haxe", "haxe", Some("3.4.7")),
    ("nix", "nix", None),
];

/// The runtimes a job asks for: its matrix values for runtime keys, plus the
/// language's own key at Travis's default when the job does not give it (`.nvmrc` for
/// node_js, as nvm read it).
pub fn wanted(language: &str, matrix: &[(String, String)], nvmrc: Option<&str>) -> Vec<Want> {
    let mut out = Vec::new();
    for (key, lang, default) in KEYS {
        if let Some((_, v)) = matrix.iter().find(|(k, _)| k == key) {
            out.push(Want {
                key,
                version: v.clone(),
                defaulted: false,
            });
        } else if *lang == language {
            let from_nvmrc = (*key == "node_js")
                .then(|| nvmrc.map(str::trim).filter(|v| !v.is_empty()))
                .flatten();
            if let Some(v) = from_nvmrc.or(*default) {
                out.push(Want {
                    key,
                    version: v.trim_start_matches('v').to_string(),
                    defaulted: true,
                });
            }
        }
    }
    out
}

/// A dotted version (`3.8.18`, `12.22.1`), compared number by number (pre-releases
/// are not versions: [`Version::parse`] refuses them).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version(pub Vec<u64>);

impl Version {
    /// `3.8.18`, `v12.22.1`; None for anything else.
    pub fn parse(s: &str) -> Option<Version> {
        let s = s.trim().trim_start_matches('v');
        let parts: Option<Vec<u64>> = s.split('.').map(|p| p.parse().ok()).collect();
        parts.filter(|p| !p.is_empty()).map(Version)
    }

    /// True when `self` starts with every number of `prefix` (`3.8` matches `3.8.18`).
    pub fn starts_with(&self, prefix: &Version) -> bool {
        self.0.len() >= prefix.0.len() && self.0[..prefix.0.len()] == prefix.0[..]
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s: Vec<String> = self.0.iter().map(u64::to_string).collect();
        f.write_str(&s.join("."))
    }
}

/// The newest of `available` that `spec` asks for: a version prefix (`3.8`, `12`),
/// an exact version, or an `.x` wildcard (`1.11.x`).
pub fn pick<'a, T>(spec: &str, available: &'a [(Version, T)]) -> Option<&'a (Version, T)> {
    let spec = spec.trim().trim_end_matches(".x").trim_end_matches(".*");
    let prefix = Version::parse(spec)?;
    available
        .iter()
        .filter(|(v, _)| v.starts_with(&prefix))
        .max_by(|a, b| a.0.cmp(&b.0))
}

/// What a job gets for one runtime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Ready {
    /// Directories put first on `PATH`, in order.
    pub path: Vec<PathBuf>,
    /// Variables exported (after `PATH`).
    pub env: Vec<(String, String)>,
    /// Commands shown and run to say what runs (`python --version`).
    pub announce: Vec<String>,
    /// Commands shown with what they print, known without running them (`pip
    /// --version`, read from pip's installed metadata: running pip takes a third of a
    /// second), after [`Ready::announce`].
    pub known: Vec<(String, String)>,
    /// One line for the job's header: `python 3.8.18 (pyenv: /root/.pyenv/…)`.
    pub what: String,
    /// The commands the job's shell must find where this runtime put them (`python`
    /// at the virtualenv's `bin/python`): checked in the job's shell before anything
    /// runs, so a runtime announced is the one that runs, or the job is errored.
    pub expect: Vec<(String, PathBuf)>,
}

/// A runtime that cannot be provided here.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Missing {
    /// What is missing: `python 3.8 is not installed here (found: 3.11.7, 3.12.1)`.
    pub what: String,
    /// How to provide it: `pyenv install 3.8`.
    pub how: String,
}

impl fmt::Display for Missing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}; {}", self.what, self.how)
    }
}

/// Where runway keeps what it installs and prepares (Node versions, base virtualenvs):
/// `RUNWAY_TOOLCHAINS`, else `$XDG_DATA_HOME/runway/toolchains`, else
/// `~/.local/share/runway/toolchains`. Jobs see it through their copy-on-write root,
/// so what a job changes there is its own.
pub fn toolchain_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNWAY_TOOLCHAINS") {
        return PathBuf::from(d);
    }
    let data = std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/share")))
        .unwrap_or_else(|| PathBuf::from("/var/lib"));
    data.join("runway/toolchains")
}

/// Fetches `url` with curl (https, a proxy from the environment, `file://` for
/// mirrors on disk): into `dest` when given, else its body is returned. `header` is
/// sent when given. The error names the URL and what curl said.
pub fn fetch(
    url: &str,
    dest: Option<&std::path::Path>,
    header: Option<&str>,
) -> Result<Vec<u8>, String> {
    let mut c = std::process::Command::new("curl");
    c.args(["-fsSL", "--retry", "2"]);
    if let Some(h) = header {
        c.args(["-H", h]);
    }
    if let Some(d) = dest {
        c.arg("-o").arg(d);
    }
    let out = c
        .arg(url)
        .output()
        .map_err(|e| format!("curl: {e} (install curl)"))?;
    if !out.status.success() {
        return Err(format!(
            "{url}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Unpacks `archive` (tar, gzip or not) into a fresh directory `into`.
pub fn untar(archive: &std::path::Path, into: &std::path::Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(into);
    std::fs::create_dir_all(into).map_err(|e| e.to_string())?;
    let out = std::process::Command::new("tar")
        .arg("-xf")
        .arg(archive)
        .arg("-C")
        .arg(into)
        .output()
        .map_err(|e| format!("tar: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "tar: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// An exclusive lock on a file ([`std::fs::File::lock`]), held until dropped: one
/// runway prepares a toolchain while the others wait for it.
pub struct Lock {
    _file: std::fs::File,
}

impl Lock {
    /// Waits for the lock on `path` (created when missing).
    pub fn take(path: &std::path::Path) -> std::io::Result<Lock> {
        let f = std::fs::File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        f.lock()?;
        Ok(Lock { _file: f })
    }
}

/// The entries of each of `roots` that exist, with their names, after the directories
/// listed in environment variable `extra` (a `PATH`-style list).
pub fn installations(
    mut roots: Vec<PathBuf>,
    extra: &str,
) -> impl Iterator<Item = (String, PathBuf)> {
    if let Some(more) = std::env::var_os(extra) {
        roots.extend(std::env::split_paths(&more));
    }
    roots
        .into_iter()
        .filter_map(|r| std::fs::read_dir(r).ok())
        .flat_map(|entries| entries.flatten())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
}

/// What a provider needs to know about the job.
pub struct Context<'a> {
    /// runway's toolchain directory ([`toolchain_dir`]).
    pub toolchains: &'a std::path::Path,
    /// The job's `$HOME` (Travis's `~/virtualenv/pythonX.Y` lives there).
    pub home: &'a std::path::Path,
    /// True when the job runs in a copy-on-write sandbox: shared prepared environments
    /// can be used as they are, since a job's writes to them stay its own.
    pub copy_on_write: bool,
}

/// Finds or installs one language's runtimes.
pub trait Provider {
    /// The runtime `version` for a job, or what is missing.
    fn provide(&self, version: &str, ctx: &Context) -> Result<Ready, Missing>;
}

/// The provider for a runtime key, when runway provides that language.
pub fn provider(key: &str) -> Option<Box<dyn Provider>> {
    match key {
        "python" => Some(Box::new(python::Python::from_machine())),
        "node_js" => Some(Box::new(node::Node::from_machine())),
        "rust" => Some(Box::new(rust::Rust)),
        "jdk" => Some(Box::new(jdk::Jdk::from_machine())),
        other => on_path::OnPath::for_key(other).map(|p| Box::new(p) as Box<dyn Provider>),
    }
}

/// What the machine itself has for runtime `key` (`python 3.11.7`), to name a
/// substitute: the first line its `--version` prints.
pub fn machine_default(key: &str) -> String {
    let (exe, args): (&str, &[&str]) = match key {
        "python" => ("python3", &["--version"]),
        "node_js" => ("node", &["--version"]),
        "rust" => ("rustc", &["--version"]),
        "jdk" => ("java", &["-version"]),
        "go" => ("go", &["version"]),
        "rvm" => ("ruby", &["--version"]),
        "php" => ("php", &["--version"]),
        _ => return format!("no {key}"),
    };
    match std::process::Command::new(exe).args(args).output() {
        Ok(o) => {
            let text = if o.stdout.is_empty() {
                o.stderr
            } else {
                o.stdout
            };
            let line = String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if line.is_empty() {
                format!("its {exe}")
            } else {
                line
            }
        }
        Err(_) => format!("no {exe} at all"),
    }
}

/// For a language runway does not provide yet: what to say.
pub fn unsupported(want: &Want) -> Missing {
    Missing {
        what: format!("runway cannot provide {} {} yet", want.key, want.version),
        how: "run this job with --substitutes (runway.toml: substitutes = true) to use what \
              the machine has, named as a substitute"
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        Version::parse(s).unwrap()
    }

    #[test]
    fn a_job_wants_its_matrix_values_and_its_languages_default() {
        let m = |pairs: &[(&str, &str)]| -> Vec<(String, String)> {
            pairs
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect()
        };
        let w = wanted("python", &m(&[("python", "3.10")]), None);
        assert_eq!(w.len(), 1);
        assert_eq!(
            (w[0].key, w[0].version.as_str(), w[0].defaulted),
            ("python", "3.10", false)
        );
        let w = wanted("python", &[], None);
        assert_eq!((w[0].version.as_str(), w[0].defaulted), ("3.6", true));
        let w = wanted("node_js", &[], Some("v14.17.0\n"));
        assert_eq!(w[0].version, "14.17.0");
        assert_eq!(wanted("node_js", &[], None)[0].version, "0.10");
        assert_eq!(wanted("rust", &[], None)[0].version, "stable");
        // jdk has no default; a java job without it leaves java alone.
        assert!(wanted("java", &[], None).is_empty());
        // Keys of other languages still count when given.
        let w = wanted("shell", &m(&[("jdk", "openjdk8"), ("os", "linux")]), None);
        assert_eq!(w.iter().map(|w| w.key).collect::<Vec<_>>(), ["jdk"]);
    }

    #[test]
    fn versions_are_picked_as_travis_read_them() {
        let have: Vec<(Version, ())> = ["3.8.18", "3.10.13", "3.1.4", "3.11.7", "2.7.18"]
            .iter()
            .map(|s| (v(s), ()))
            .collect();
        assert_eq!(pick("3.8", &have).unwrap().0, v("3.8.18"));
        // "3.10" is not 3.1.
        assert_eq!(pick("3.10", &have).unwrap().0, v("3.10.13"));
        assert_eq!(pick("3.1", &have).unwrap().0, v("3.1.4"));
        assert_eq!(pick("3", &have).unwrap().0, v("3.11.7"));
        assert_eq!(pick("3.11.x", &have).unwrap().0, v("3.11.7"));
        assert!(pick("3.9", &have).is_none());
        assert!(pick("nightly", &have).is_none());
        assert!(v("10.0") > v("9.11.2"));
    }
}
