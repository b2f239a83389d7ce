//! Directory caches (docs/semantics.md §5): which directories a job caches, the
//! key it caches them under, and the fetch order (branch, then the default branch).
//!
//! - [`archive`]: tar + zstd archives, written atomically, extracted safely;
//! - [`store`]: where archives live (a local directory), and on this machine each
//!   cache's stored versions as directories, which a sandboxed job gets as a
//!   copy-on-write layer (restoring is a mount);
//! - [`tree`]: a new version written from the job's directory, linking what it did not
//!   change.
//!
//! Key and directory decisions here are pure; [`archive`] and [`store`] do the I/O.

pub mod archive;
pub mod store;
pub mod tree;

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::config::model::EnvVar;
use crate::config::yaml::Node;
use crate::plan::JobPlan;

/// The default cache timeout (`cache.timeout`), seconds.
pub const DEFAULT_TIMEOUT_SECS: u64 = 180;

/// What a job caches.
#[derive(Clone, Debug, PartialEq)]
pub struct CacheSpec {
    /// The directories as written (`$HOME/.gradle`, `node_modules`), in order.
    pub dirs: Vec<String>,
    /// The timeout for fetch and store, seconds.
    pub timeout_secs: u64,
}

/// Reads a job's `cache:`. `None` when caching is off (`cache: false`) or nothing is cached.
pub fn spec(job: &Node, language: &str, has: &dyn Fn(&str) -> bool) -> Option<CacheSpec> {
    let cache = crate::config::views::JobKeys(job)
        .cache()
        .unwrap_or_default();
    if cache.off {
        return None;
    }
    let mut named: Vec<String> = Vec::new();
    // npm is on by default for node_js, unless turned off.
    if language == "node_js" && cache.npm.unwrap_or(true) {
        named.push("npm".into());
    }
    let mut dirs = cache.directories;
    let timeout_secs = cache.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
    named.extend(cache.named);
    for name in named {
        for d in named_dirs(&name, has) {
            if !dirs.iter().any(|x| x == d) {
                dirs.push(d.to_string());
            }
        }
    }
    (!dirs.is_empty()).then_some(CacheSpec { dirs, timeout_secs })
}

/// The directories of a named cache (the ones that are plain directories).
pub fn named_dirs(name: &str, has: &dyn Fn(&str) -> bool) -> Vec<&'static str> {
    match name {
        "pip" => vec!["$HOME/.cache/pip"],
        "npm" if has("package-lock.json") => vec!["$HOME/.npm"],
        "npm" => vec!["node_modules"],
        "cargo" => vec!["$HOME/.cargo", "target"],
        "bundler" => vec!["vendor/bundle"],
        "yarn" => vec!["$HOME/.cache/yarn"],
        "ccache" => vec!["$HOME/.ccache"],
        "composer" => vec!["$HOME/.composer/cache"],
        _ => vec![],
    }
}

/// Expands `$VAR`, `${VAR}` and a leading `~`, then makes a relative path absolute
/// under the build directory.
pub fn resolve_dir(written: &str, env: &HashMap<String, String>, build_dir: &Path) -> PathBuf {
    let home = env.get("HOME").map(String::as_str).unwrap_or("~");
    let written = match written.strip_prefix('~') {
        Some(rest) => format!("{home}{rest}"),
        None => written.to_string(),
    };
    let out = crate::config::model::expand_vars(&written, &|n| env.get(n).cloned());
    let p = PathBuf::from(out);
    if p.is_absolute() {
        p
    } else {
        build_dir.join(p)
    }
}

/// The cache key of §5: `cache-<arch>-<os>-<dist>-<osx_image>-<sha256(env)>--<lang extra>`.
/// The env part hashes the job's non-secret env vars, sorted.
pub fn key(job: &JobPlan, language: &str) -> String {
    let first = |k: &str| {
        job.matrix
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    };
    let mut env: Vec<String> = job
        .env
        .iter()
        .map(|v: &EnvVar| format!("{}={}", v.name, v.value))
        .collect();
    env.sort();
    let digest = Sha256::digest(env.join("\n").as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    let arch = match first("arch").as_str() {
        "" => "amd64".to_string(),
        a => a.to_string(),
    };
    let os = match first("os").as_str() {
        "" => "linux".to_string(),
        o => o.to_string(),
    };
    let extra = match language {
        "java" | "android" | "groovy" | "scala" | "clojure" => format!("--jdk-{}", first("jdk")),
        "python" => format!("--python-{}", first("python")),
        "node_js" => format!("--node-{}", first("node_js")),
        "ruby" => format!("--rvm-{}", first("rvm")),
        "go" => format!("--go-{}", first("go")),
        "rust" => format!("--rust-{}", first("rust")),
        "php" => format!("--php-{}", first("php")),
        "c" | "cpp" => format!("--compiler-{}", first("compiler")),
        _ => String::new(),
    };
    let extra = extra.trim_end_matches('-').to_string();
    format!(
        "cache-{arch}-{os}-{}-{}-{hex}{extra}",
        first("dist"),
        first("osx_image")
    )
    .replace('/', "_")
}

/// Where to look for a cache, first hit wins: this branch (or `PR.<n>`), then for a
/// pull request its target branch, then the default branch if different.
pub fn fetch_branches(
    branch: &str,
    pull_request: Option<u64>,
    default_branch: &str,
) -> Vec<String> {
    let mut v = Vec::new();
    if let Some(n) = pull_request {
        v.push(format!("PR.{n}"));
    }
    v.push(branch.to_string());
    if default_branch != branch {
        v.push(default_branch.to_string());
    }
    v
}

/// The branch a job stores its cache under.
pub fn store_branch(branch: &str, pull_request: Option<u64>) -> String {
    match pull_request {
        Some(n) => format!("PR.{n}"),
        None => branch.to_string(),
    }
}

/// The env a cache path expands with: job env (plain values) and `HOME`, `TRAVIS_BUILD_DIR`.
pub fn path_env(job_env: &[EnvVar], home: &Path, build_dir: &Path) -> HashMap<String, String> {
    let mut m: HashMap<String, String> = job_env
        .iter()
        .map(|v| (v.name.clone(), v.plain_value().to_string()))
        .collect();
    m.insert("HOME".into(), home.display().to_string());
    m.insert("TRAVIS_BUILD_DIR".into(), build_dir.display().to_string());
    m.insert("TRAVIS_HOME".into(), home.display().to_string());
    m
}

/// The job's command that removes the cached directory `dir` whole (`rm -rf
/// node_modules`, and `npm ci`, which empties `node_modules` and, before npm 7, removed
/// it), if one does: a directory restored as a mount cannot be removed (its removal
/// would fail the command), so such a directory is restored by copy. Decided on the
/// commands' text; `env` expands `$HOME`, `~` and the job's variables, and relative paths
/// are under `build_dir`.
pub fn removed_whole<'a>(
    commands: &'a [String],
    dir: &Path,
    env: &HashMap<String, String>,
    build_dir: &Path,
) -> Option<&'a str> {
    let norm = |p: PathBuf| crate::beneath::lexical(&p);
    let target = norm(dir.to_path_buf());
    let node_modules = target == norm(build_dir.join("node_modules"));
    commands.iter().map(String::as_str).find(|command| {
        let words: Vec<&str> = command
            .split(|c: char| c.is_whitespace() || matches!(c, ';' | '&' | '|' | '(' | ')'))
            .filter(|w| !w.is_empty())
            .collect();
        words.iter().enumerate().any(|(i, w)| {
            if node_modules && *w == "npm" && words.get(i + 1) == Some(&"ci") {
                return true;
            }
            if *w != "rm" {
                return false;
            }
            let mut recursive = false;
            for arg in &words[i + 1..] {
                if let Some(flags) = arg.strip_prefix('-') {
                    recursive |= flags.contains(['r', 'R']) || flags == "-recursive";
                    continue;
                }
                let arg = arg.trim_matches(|c| c == '"' || c == '\'');
                let arg = arg.trim_end_matches('/');
                if recursive
                    && !arg.is_empty()
                    && !arg.contains(['*', '?', '['])
                    && norm(resolve_dir(arg, env, build_dir)) == target
                {
                    return true;
                }
            }
            false
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn a_command_that_removes_a_cached_directory_whole_is_found() {
        let env: HashMap<String, String> = [("HOME".to_string(), "/h".to_string())].into();
        let b = Path::new("/b");
        let cmds = |c: &[&str]| c.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let nm = Path::new("/b/node_modules");
        let c = cmds(&["npm ci || (rm -rf node_modules && npm install)"]);
        assert!(removed_whole(&c, nm, &env, b).is_some());
        assert!(removed_whole(&cmds(&["rm -rf ./node_modules/"]), nm, &env, b).is_some());
        assert!(removed_whole(&cmds(&["rm -r -f \"node_modules\""]), nm, &env, b).is_some());
        assert!(removed_whole(&cmds(&["npm ci"]), nm, &env, b).is_some());
        assert!(
            removed_whole(&cmds(&["rm -rf node_modules/.cache"]), nm, &env, b).is_none(),
            "a part of it is removed, not the directory"
        );
        assert!(removed_whole(&cmds(&["rm -f node_modules"]), nm, &env, b).is_none());
        assert!(removed_whole(&cmds(&["rm -rf node_modules/*"]), nm, &env, b).is_none());
        let m2 = Path::new("/h/.m2");
        assert!(removed_whole(&cmds(&["rm -rf $HOME/.m2"]), m2, &env, b).is_some());
        assert!(removed_whole(&cmds(&["rm -rf ~/.m2/"]), m2, &env, b).is_some());
        assert!(removed_whole(&cmds(&["rm -rf $HOME/.m2/repository/org"]), m2, &env, b).is_none());
        assert!(removed_whole(&cmds(&["npm ci"]), m2, &env, b).is_none());
    }

    fn job_node(yaml: &str) -> Node {
        config::load(yaml).config.root
    }

    #[test]
    fn s5_forms() {
        let none = |_: &str| false;
        let s = spec(
            &job_node("cache:\n  directories:\n    - $HOME/.gradle\n  pip: true\n"),
            "java",
            &none,
        )
        .unwrap();
        assert_eq!(s.dirs, ["$HOME/.gradle", "$HOME/.cache/pip"]);
        assert_eq!(s.timeout_secs, 180);
        assert_eq!(
            spec(&job_node("cache: pip\n"), "python", &none)
                .unwrap()
                .dirs,
            ["$HOME/.cache/pip"]
        );
        assert!(
            spec(
                &job_node("cache: false\nlanguage: node_js\n"),
                "node_js",
                &none
            )
            .is_none()
        );
        assert_eq!(
            spec(&job_node("language: node_js\n"), "node_js", &none)
                .unwrap()
                .dirs,
            ["node_modules"],
            "npm is on by default"
        );
        let t = spec(
            &job_node("cache:\n  directories: [x]\n  timeout: 5\n"),
            "java",
            &none,
        )
        .unwrap();
        assert_eq!(t.timeout_secs, 5);
    }

    #[test]
    fn s5_paths_expand_env_and_are_relative_to_the_build_dir() {
        let env: HashMap<String, String> = [
            ("HOME".to_string(), "/h".to_string()),
            ("X".into(), "y".into()),
        ]
        .into();
        assert_eq!(
            resolve_dir("$HOME/.m2", &env, Path::new("/b")),
            PathBuf::from("/h/.m2")
        );
        assert_eq!(
            resolve_dir("${X}/z", &env, Path::new("/b")),
            PathBuf::from("/b/y/z")
        );
        assert_eq!(
            resolve_dir("~/.npm", &env, Path::new("/b")),
            PathBuf::from("/h/.npm")
        );
    }

    #[test]
    fn s5_fetch_order() {
        assert_eq!(fetch_branches("dev", None, "master"), ["dev", "master"]);
        assert_eq!(fetch_branches("master", None, "master"), ["master"]);
        assert_eq!(
            fetch_branches("master", Some(4), "master"),
            ["PR.4", "master"]
        );
    }
}
