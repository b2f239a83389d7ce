//! A job's environment (docs/semantics.md §2): the process environment bash starts
//! with, and the `export` lines that follow (builtins, repository settings, then
//! `.travis.yml`, so yml wins), with secret settings echoed as `[secure]`.

use std::path::Path;

use crate::config::model::EnvVar;
use crate::event::{BuildEvent, EventType};
use crate::plan::JobPlan;

/// Host variables a job inherits (everything else starts clean, as on a fresh VM):
/// the basics, and the proxy and CA settings without which nothing installs behind a
/// proxy (passed as they are, unmasked: README, "A job's environment").
const INHERITED: &[&str] = &[
    "PATH",
    "LANG",
    "LC_ALL",
    "TERM",
    "USER",
    "LOGNAME",
    "SHELL",
    "TMPDIR",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "all_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "ALL_PROXY",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "NODE_EXTRA_CA_CERTS",
    "PIP_CERT",
    "GIT_SSL_CAINFO",
];

/// What a job's environment is made from.
pub struct EnvInputs<'a> {
    /// The build event.
    pub event: &'a BuildEvent,
    /// The job.
    pub job: &'a JobPlan,
    /// `TRAVIS_BUILD_NUMBER`.
    pub build_number: u64,
    /// The canonical language.
    pub language: &'a str,
    /// The checkout (`TRAVIS_BUILD_DIR`).
    pub build_dir: &'a Path,
    /// The job's `$HOME`.
    pub home: &'a Path,
}

/// The environment bash starts with: a few host variables, `HOME`, and the builtins.
pub fn process_env(inputs: &EnvInputs) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = INHERITED
        .iter()
        .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
        .collect();
    // Host toolchains installed under the real home keep working with a fresh $HOME.
    if let Some(real_home) = std::env::var_os("HOME") {
        let real_home = Path::new(&real_home);
        for (var, dir) in [("RUSTUP_HOME", ".rustup"), ("CARGO_HOME", ".cargo")] {
            let value = std::env::var_os(var)
                .map(|v| v.to_string_lossy().into_owned())
                .or_else(|| {
                    let p = real_home.join(dir);
                    p.is_dir().then(|| p.to_string_lossy().into_owned())
                });
            if let Some(v) = value {
                env.push((var.into(), v));
            }
        }
    }
    env.push(("HOME".into(), inputs.home.display().to_string()));
    env.extend(builtins(inputs));
    env
}

/// The `TRAVIS_*` variables and friends of §2.
pub fn builtins(i: &EnvInputs) -> Vec<(String, String)> {
    let e = i.event;
    let job = i.job;
    let first = |key: &str| {
        job.matrix
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    let pr = e.pull_request.as_ref();
    let mut v: Vec<(&str, String)> = vec![
        ("CI", "true".into()),
        ("TRAVIS", "true".into()),
        ("CONTINUOUS_INTEGRATION", "true".into()),
        ("HAS_JOSH_K_SEAL_OF_APPROVAL", "true".into()),
        ("RUNWAY", "true".into()),
        ("PAGER", "cat".into()),
        ("TZ", "UTC".into()),
        ("RAILS_ENV", "test".into()),
        ("TRAVIS_BRANCH", e.travis_branch().to_string()),
        ("TRAVIS_TAG", e.tag.clone().unwrap_or_default()),
        ("TRAVIS_COMMIT", e.commit.clone()),
        ("TRAVIS_COMMIT_MESSAGE", e.commit_message.clone()),
        ("TRAVIS_COMMIT_RANGE", e.commit_range.clone()),
        (
            "TRAVIS_PULL_REQUEST",
            pr.map_or("false".into(), |p| p.number.to_string()),
        ),
        (
            "TRAVIS_PULL_REQUEST_BRANCH",
            pr.map(|p| p.head_branch.clone()).unwrap_or_default(),
        ),
        (
            "TRAVIS_PULL_REQUEST_SHA",
            pr.map(|p| p.head_sha.clone()).unwrap_or_default(),
        ),
        (
            "TRAVIS_PULL_REQUEST_SLUG",
            pr.map(|p| p.head_slug.clone()).unwrap_or_default(),
        ),
        ("TRAVIS_EVENT_TYPE", e.event.as_str().into()),
        ("TRAVIS_BUILD_NUMBER", i.build_number.to_string()),
        ("TRAVIS_BUILD_ID", i.build_number.to_string()),
        ("TRAVIS_JOB_NUMBER", job.number.clone()),
        ("TRAVIS_JOB_ID", job.number.replace('.', "")),
        ("TRAVIS_BUILD_DIR", i.build_dir.display().to_string()),
        ("TRAVIS_HOME", i.home.display().to_string()),
        ("TRAVIS_REPO_SLUG", e.repo.clone()),
        ("TRAVIS_OS_NAME", first("os").unwrap_or_else(host_os)),
        (
            "TRAVIS_DIST",
            first("dist")
                .or_else(|| {
                    crate::config::views::JobKeys(&job.config)
                        .dist()
                        .map(str::to_string)
                })
                .unwrap_or_else(|| "focal".into()),
        ),
        (
            "TRAVIS_CPU_ARCH",
            crate::runtime::platform::host_arch().into(),
        ),
        ("TRAVIS_JOB_NAME", job.name.clone().unwrap_or_default()),
        ("TRAVIS_BUILD_STAGE_NAME", capitalise(&job.stage)),
        ("TRAVIS_ALLOW_FAILURE", job.allow_failure.to_string()),
        ("TRAVIS_LANGUAGE", i.language.to_string()),
        ("TRAVIS_SECURE_ENV_VARS", "false".into()),
        ("TRAVIS_TEST_RESULT", String::new()),
    ];
    // A rehearsal of a pull request (`runway run --event pull_request`) knows no head:
    // those variables are left out rather than set empty.
    if e.event == EventType::PullRequest {
        v.retain(|(k, val)| !(k.starts_with("TRAVIS_PULL_REQUEST_") && val.is_empty()));
    }
    for (key, var) in VERSION_VARS {
        if let Some(val) = first(key) {
            v.push((var, val));
        }
    }
    v.into_iter().map(|(k, val)| (k.to_string(), val)).collect()
}

/// The `.travis.yml` runtime keys and the variable Travis set from each.
const VERSION_VARS: &[(&str, &str)] = &[
    ("python", "TRAVIS_PYTHON_VERSION"),
    ("node_js", "TRAVIS_NODE_VERSION"),
    ("rvm", "TRAVIS_RUBY_VERSION"),
    ("rust", "TRAVIS_RUST_VERSION"),
    ("go", "TRAVIS_GO_VERSION"),
    ("php", "TRAVIS_PHP_VERSION"),
    ("scala", "TRAVIS_SCALA_VERSION"),
    ("perl", "TRAVIS_PERL_VERSION"),
    ("jdk", "TRAVIS_JDK_VERSION"),
];

/// The variable Travis set from runtime key `key` (`python` → `TRAVIS_PYTHON_VERSION`).
pub fn version_var(key: &str) -> Option<&'static str> {
    VERSION_VARS
        .iter()
        .find(|(k, _)| *k == key)
        .map(|(_, v)| *v)
}

fn host_os() -> String {
    match std::env::consts::OS {
        "macos" => "osx".into(),
        other => other.into(),
    }
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    c.next()
        .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
        .unwrap_or_default()
}

/// The `export` lines of the job, in Travis's order: settings (secret) then yml env.
/// Each entry is (command to run, what the log shows).
pub fn export_lines(settings: &crate::settings::Settings, yml: &[EnvVar]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for v in settings.iter() {
        let cmd = format!("export {}={}", v.name, crate::process::quote(&v.value));
        let shown = if v.secret {
            format!("export {}=[secure]", v.name)
        } else {
            cmd.clone()
        };
        out.push((cmd, shown));
    }
    for v in yml {
        let cmd = format!("export {}={}", v.name, v.value);
        out.push((cmd.clone(), cmd));
    }
    out
}

/// Reads a dotenv file: `NAME=value` lines, `#` comments, optional `export `, and
/// values in single or double quotes.
pub fn parse_dotenv(text: &str) -> Result<Vec<EnvVar>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").unwrap_or(line);
        let Some((name, value)) = line.split_once('=') else {
            return Err(format!("line {}: expected NAME=value", i + 1));
        };
        let name = name.trim();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!("line {}: \"{name}\" is not a variable name", i + 1));
        }
        let value = value.trim();
        let value = match value.chars().next() {
            Some(q @ ('"' | '\'')) if value.len() >= 2 && value.ends_with(q) => {
                let inner = &value[1..value.len() - 1];
                if q == '"' {
                    inner.replace("\\n", "\n").replace("\\\"", "\"")
                } else {
                    inner.to_string()
                }
            }
            _ => value
                .split(" #")
                .next()
                .unwrap_or("")
                .trim_end()
                .to_string(),
        };
        out.push(EnvVar {
            name: name.to_string(),
            value,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotenv_forms() {
        let v = parse_dotenv("# c\nA=1\nexport B=\"x y\"\nC='$z' \nD=v # note\n").unwrap();
        let got: Vec<(&str, &str)> = v
            .iter()
            .map(|e| (e.name.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(got, [("A", "1"), ("B", "x y"), ("C", "$z"), ("D", "v")]);
        assert!(parse_dotenv("nope").is_err());
    }

    #[test]
    fn s2_settings_are_echoed_secure_yml_verbatim() {
        let s = crate::settings::Settings::secret([EnvVar {
            name: "KEY".into(),
            value: "it's".into(),
        }]);
        let y = [EnvVar {
            name: "A".into(),
            value: "\"x y\"".into(),
        }];
        let lines = export_lines(&s, &y);
        assert_eq!(lines[0].0, "export KEY='it'\\''s'");
        assert_eq!(lines[0].1, "export KEY=[secure]");
        assert_eq!(lines[1].0, "export A=\"x y\"");
    }
}
