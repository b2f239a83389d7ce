//! Deploys (docs/semantics.md §6): the providers runway implements ([`s3`],
//! [`codedeploy`]), what a provider would do ([`describe`], the dry run of `runway run`
//! without `--deploy`), and the pieces the providers share: options with `$VAR`
//! expanded from the job's environment, file selection, content types.

pub mod aws;
pub mod codedeploy;
pub mod kept;
pub mod rehearse;
pub mod s3;

use crate::beneath::Beneath;
use std::collections::HashMap;
use std::path::Path;

use crate::config::model::{EnvVar, bool_of, str_of, strs};
use crate::config::views::DeployKeys;
use crate::config::yaml::Node;
use crate::event::BuildEvent;

/// Why a deploy did not happen.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The options are wrong or incomplete.
    #[error("{0}")]
    Config(String),
    /// The provider ran and failed.
    #[error("{0}")]
    Failed(String),
    /// runway has no such provider.
    #[error("runway has no {0} provider; only s3 and codedeploy deploy for real")]
    Unsupported(String),
}

/// A provider's options, read with `$VAR`/`${VAR}` expanded from the job's environment
/// as the shell has it when the provider runs (settings, `.travis.yml` env, exports).
pub struct Options<'a> {
    config: &'a Node,
    env: &'a HashMap<String, String>,
}

impl<'a> Options<'a> {
    /// Options of a provider config.
    pub fn new(config: &'a Node, env: &'a HashMap<String, String>) -> Options<'a> {
        Options { config, env }
    }

    fn expand(&self, text: &str) -> String {
        crate::config::model::expand_vars(text, &|n| self.env.get(n).cloned())
    }

    /// A string option (the first item of a list), expanded.
    pub fn get(&self, key: &str) -> Option<String> {
        let n = self.config.get(key)?;
        let raw = str_of(Some(n))
            .map(str::to_string)
            .or_else(|| strs(Some(n)).into_iter().next())?;
        Some(self.expand(&raw))
    }

    /// A string option as written, before `$VAR` expansion.
    pub fn raw(&self, key: &str) -> Option<String> {
        let n = self.config.get(key)?;
        str_of(Some(n))
            .map(str::to_string)
            .or_else(|| strs(Some(n)).into_iter().next())
    }

    /// A list option (a scalar is a one-item list), expanded.
    pub fn list(&self, key: &str) -> Vec<String> {
        match self.config.get(key) {
            Some(n) if n.as_seq().is_some() => {
                strs(Some(n)).iter().map(|v| self.expand(v)).collect()
            }
            Some(n) => str_of(Some(n))
                .map(|v| vec![self.expand(v)])
                .unwrap_or_default(),
            None => Vec::new(),
        }
    }

    /// A boolean option.
    pub fn flag(&self, key: &str, default: bool) -> bool {
        bool_of(self.config.get(key), default)
    }

    /// True when the option is given.
    pub fn has(&self, key: &str) -> bool {
        self.config.get(key).is_some()
    }
}

/// What a provider is given to describe or make a deploy.
pub struct Deploy<'a> {
    /// The provider's entry of `deploy:`.
    pub config: &'a Node,
    /// The job's build directory (files are relative to it).
    pub build_dir: &'a Path,
    /// The build's event (commit, repository).
    pub event: &'a BuildEvent,
    /// The build's number.
    pub build_number: u64,
}

/// A deploy provider runway implements: what it would do (the dry run) and doing it.
pub trait Provider: Sync {
    /// What it would do, line by line; `opt` reads an option with `$VAR`s expanded.
    fn describe(&self, d: &Deploy<'_>, opt: &dyn Fn(&str) -> Option<String>) -> Vec<String>;

    /// Does it, with `opts` read from the job shell's environment `env` at this point;
    /// `say` receives the provider's log lines (the caller masks them).
    fn deploy(
        &self,
        d: &Deploy<'_>,
        opts: &Options<'_>,
        env: &HashMap<String, String>,
        say: &(dyn Fn(String) + Sync),
    ) -> Result<(), DeployError>;
}

/// The provider named `provider:`, when runway implements it.
pub fn provider(name: &str) -> Option<&'static dyn Provider> {
    match name {
        "s3" => Some(&s3::S3),
        "codedeploy" => Some(&codedeploy::CodeDeploy),
        _ => None,
    }
}

/// The runtime a provider's SDK calls run on.
fn runtime() -> Result<tokio::runtime::Runtime, DeployError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DeployError::Failed(format!("runtime: {e}")))
}

/// Runs one provider for real. `env` is the job shell's environment at this point;
/// `say` receives the provider's log lines (the caller masks them).
pub fn run(
    config: &Node,
    env: &HashMap<String, String>,
    build_dir: &Path,
    event: &BuildEvent,
    build_number: u64,
    say: &(dyn Fn(String) + Sync),
) -> Result<(), DeployError> {
    let name = DeployKeys(config).provider().unwrap_or_default();
    let Some(p) = provider(name) else {
        return Err(DeployError::Unsupported(name.to_string()));
    };
    let d = Deploy {
        config,
        build_dir,
        event,
        build_number,
    };
    p.deploy(&d, &Options::new(config, env), env, say)
}

/// An option as dpl's command line would have it, with its value (`$VAR`s expanded; the
/// log masks settings): `--name=value`, `--flag` for true, `--no-flag` for false, a
/// list as one flag per item, an encrypted `secure:` value as `[secure]`.
fn dpl_flags(key: &str, value: &Node, env: &[EnvVar]) -> Vec<String> {
    let one = |v: &Node| -> Option<String> {
        if crate::config::model::is_secure_item(v) {
            return Some("[secure]".into());
        }
        v.as_str().map(|t| {
            let t = expand(t, env);
            let plain = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-[]".contains(c));
            if plain { t } else { crate::process::quote(&t) }
        })
    };
    match &value.value {
        crate::config::yaml::Value::Seq(items) => items
            .iter()
            .filter_map(|i| one(i).map(|v| format!("--{key}={v}")))
            .collect(),
        _ => match value.as_bool() {
            Some(true) => vec![format!("--{key}")],
            Some(false) => vec![format!("--no-{key}")],
            None => one(value)
                .map(|v| vec![format!("--{key}={v}")])
                .unwrap_or_else(|| vec![format!("--{key}")]),
        },
    }
}

/// Reads a provider option as a string with `$VAR`/`${VAR}` expanded from `env`.
pub fn option(config: &Node, key: &str, env: &[EnvVar]) -> Option<String> {
    let n = config.get(key)?;
    let raw = str_of(Some(n))
        .map(str::to_string)
        .or_else(|| strs(Some(n)).into_iter().next())?;
    Some(expand(&raw, env))
}

/// Expands `$VAR` and `${VAR}` (later entries of `env` win, then the process env).
pub fn expand(text: &str, env: &[EnvVar]) -> String {
    crate::config::model::expand_vars(text, &|name| {
        env.iter()
            .rev()
            .find(|v| v.name == name)
            .map(|v| v.plain_value().to_string())
            .or_else(|| std::env::var(name).ok())
    })
}

/// A glob as dpl's s3 provider reads it: `*` within a name, `**` across directories,
/// `?`, and `{a,b}` alternatives; matched against `/`-separated relative paths.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    glob_match_with(pattern, path, false)
}

/// Ruby's `File.fnmatch?` without `FNM_PATHNAME` (as dpl matches `cache_control` and
/// `expires` mappings): `*` also matches `/`.
pub fn fnmatch(pattern: &str, path: &str) -> bool {
    glob_match_with(pattern, path, true)
}

fn glob_match_with(pattern: &str, path: &str, star_crosses: bool) -> bool {
    // Compiled to a regular expression: linear in the path whatever the pattern (a
    // backtracking matcher took exponential time on `*a*a*a*a*…b`, and the pattern is
    // the job's to choose).
    let compile = |p: &str| {
        globset::GlobBuilder::new(p)
            .literal_separator(!star_crosses)
            .backslash_escape(true)
            .build()
    };
    // Compiled once per pattern (per thread), not once per path: an upload matches
    // every file of the directory against the same few patterns. Bounded: a config
    // naming more patterns than this starts the cache afresh.
    thread_local! {
        static COMPILED: std::cell::RefCell<HashMap<(String, bool), Option<globset::GlobMatcher>>> =
            std::cell::RefCell::new(HashMap::new());
    }
    const MOST_KEPT: usize = 256;
    COMPILED.with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= MOST_KEPT {
            c.clear();
        }
        let m = c
            .entry((pattern.to_string(), star_crosses))
            .or_insert_with(|| {
                // `**` only means "any directories" as a whole path component; elsewhere
                // it is `*`.
                compile(pattern)
                    .or_else(|_| compile(&pattern.replace("**", "*")))
                    .ok()
                    .map(|g| g.compile_matcher())
            });
        match m {
            Some(g) => g.is_match(path),
            None => pattern == path,
        }
    })
}

/// The Content-Type for a file name, by extension (`application/octet-stream` if unknown).
pub fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "application/javascript",
        "json" => "application/json",
        "map" => "application/json",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "xml" => "application/xml",
        "yml" | "yaml" => "text/yaml",
        "sh" => "application/x-sh",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "ico" => "image/vnd.microsoft.icon",
        "webp" => "image/webp",
        "woff" => "font/woff",
        "woff2" => "font/woff2",
        "ttf" => "font/ttf",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "jar" | "war" => "application/java-archive",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        _ => "application/octet-stream",
    }
}

/// The files an s3 deploy uploads: (path relative to local_dir, size), sorted. The
/// directory is held open ([`crate::beneath`]): no link inside it is followed.
pub fn s3_files(local_dir: &Beneath, glob: &str, dot_match: bool) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = local_dir.walk() else {
        return out;
    };
    for (rel, meta) in entries {
        if meta.is_dir() {
            continue;
        }
        let rel = rel.to_string_lossy().replace('\\', "/");
        if !dot_match && rel.split('/').any(|part| part.starts_with('.')) {
            continue;
        }
        if glob_match(glob, &rel) {
            out.push((rel, meta.len()));
        }
    }
    out
}

/// `local_dir` (as the s3 options write it) opened beneath the job's build directory:
/// an absolute path or `..` that leaves it, or a link on the way, is refused with why.
pub fn open_local_dir(build_dir: &Path, written: &str) -> Result<Beneath, DeployError> {
    let refuse = |why: String| {
        DeployError::Config(format!(
            "s3: local_dir {why}; a deploy uploads only what is in the job's build directory"
        ))
    };
    let rel = crate::beneath::inside(build_dir, Path::new(written)).map_err(refuse)?;
    let root = Beneath::open(build_dir)
        .map_err(|e| DeployError::Failed(format!("s3: the build directory: {e}")))?;
    root.dir(&rel).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => DeployError::Config(format!(
            "s3: local_dir {written} does not exist (did before_deploy create it?)"
        )),
        _ => refuse(crate::beneath::refused(Path::new(written), &e)),
    })
}

/// What a provider would do, line by line (the dry run).
pub fn describe(
    config: &Node,
    build_dir: &Path,
    job_env: &[EnvVar],
    settings: &[EnvVar],
    event: &BuildEvent,
    build_number: u64,
) -> Vec<String> {
    let env: Vec<EnvVar> = settings.iter().chain(job_env).cloned().collect();
    let opt = |k: &str| option(config, k, &env);
    let name = DeployKeys(config).provider().unwrap_or_default();
    match provider(name) {
        Some(p) => p.describe(
            &Deploy {
                config,
                build_dir,
                event,
                build_number,
            },
            &opt,
        ),
        None => vec![dpl_line(name, config, &env)],
    }
}

/// A provider runway lacks, as the dpl command line Travis would have run.
fn dpl_line(other: &str, config: &Node, env: &[EnvVar]) -> String {
    let mut flags: Vec<String> = Vec::new();
    if let Some(entries) = config.as_map() {
        for e in entries {
            if !matches!(
                e.key.as_str(),
                "on" | "allow_failure" | "dpl_version" | "provider"
            ) {
                flags.extend(dpl_flags(&e.key, &e.value, env));
            }
        }
    }
    format!(
        "runway has no {other} provider; Travis would have run dpl --provider={other} {}",
        flags.join(" ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// issue 16: a provider runway lacks is shown as dpl's command line with values.
    #[test]
    fn unimplemented_providers_show_their_options_with_values() {
        let mut d = crate::config::diag::Diagnostics::default();
        let node = crate::config::yaml::parse(
            "provider: pypi\nusername: __token__\npassword:\n  secure: abc=\nskip_existing: true\ndistributions: sdist bdist_wheel\nserver: $PYPI_URL\non:\n  tags: true\n",
            &mut d,
        )
        .unwrap();
        let env = vec![EnvVar {
            name: "PYPI_URL".into(),
            value: "https://test.pypi.org/legacy/".into(),
        }];
        let lines = describe(
            &node,
            Path::new("/tmp"),
            &env,
            &[],
            &BuildEvent::default(),
            1,
        );
        assert_eq!(
            lines,
            ["runway has no pypi provider; Travis would have run dpl --provider=pypi --username=__token__ --password=[secure] --skip_existing --distributions='sdist bdist_wheel' --server=https://test.pypi.org/legacy/"]
                .map(String::from)
        );
    }

    #[test]
    fn globs() {
        assert!(glob_match("**/*", "a/b/c.txt"));
        assert!(glob_match("**/*", "c.txt"));
        assert!(glob_match("*.zip", "a.zip"));
        assert!(!glob_match("*.zip", "d/a.zip"));
        assert!(glob_match("**/*.{js,css}", "x/y/app.css"));
        assert!(glob_match("dist/**/*.html", "dist/index.html"));
        assert!(!glob_match("?.txt", "ab.txt"));
        assert!(fnmatch("*.css", "css/site.css"));
        assert!(glob_match("**.js", "app.js"));
        assert!(!glob_match("[", "a"));
        assert!(glob_match("[", "["));
    }

    /// A pattern the job chose is matched in time linear in the path: `*a*a…b`
    /// against a long run of `a`s took exponential time (hours) to say no.
    #[test]
    fn a_hostile_glob_is_answered_at_once() {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let pattern = format!("{}b", "*a".repeat(20));
            let path = "a".repeat(200);
            let _ = tx.send((glob_match(&pattern, &path), fnmatch(&pattern, &path)));
        });
        let answer = rx.recv_timeout(std::time::Duration::from_secs(120));
        assert_eq!(
            answer,
            Ok((false, false)),
            "no answer: the matcher backtracks"
        );
    }

    #[test]
    fn expands_vars() {
        let env = [EnvVar {
            name: "B".into(),
            value: "bucket".into(),
        }];
        assert_eq!(expand("$B-x ${B} $", &env), "bucket-x bucket $");
    }

    #[test]
    fn s6a_content_types() {
        assert_eq!(content_type("a.zip"), "application/zip");
        assert_eq!(content_type("index.HTML"), "text/html");
        assert_eq!(content_type("noext"), "application/octet-stream");
    }
}
