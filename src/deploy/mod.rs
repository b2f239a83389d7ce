//! Deploys (docs/semantics.md §6): the providers runway implements ([`s3`],
//! [`codedeploy`]), what a provider would do ([`describe`], the dry run of `runway run`
//! without `--deploy`), and the pieces the providers share: options with `$VAR`
//! expanded from the job's environment, file selection, content types.

pub mod aws;
pub mod codedeploy;
pub mod kept;
pub mod rehearse;
pub mod s3;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use crate::config::model::{EnvVar, bool_of, str_of, strs};
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

/// An error with its sources, for connection failures.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(&format!(": {s}"));
        src = s.source();
    }
    out
}

/// How often `wait_until_deployed` polls (Travis: 5 s; `RUNWAY_CODEDEPLOY_POLL` seconds).
fn poll_interval(env: &HashMap<String, String>) -> Duration {
    env.get("RUNWAY_CODEDEPLOY_POLL")
        .cloned()
        .or_else(|| std::env::var("RUNWAY_CODEDEPLOY_POLL").ok())
        .and_then(|v| v.parse::<f64>().ok())
        .map(Duration::from_secs_f64)
        .unwrap_or(Duration::from_secs(5))
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
    let provider = str_of(config.get("provider"))
        .unwrap_or_default()
        .to_string();
    let opts = Options::new(config, env);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| DeployError::Failed(format!("runtime: {e}")))?;
    match provider.as_str() {
        "s3" => {
            let plan = s3::S3Plan::from_options(&opts, build_dir)?;
            let settings = aws::settings(&opts, env, aws::Service::S3)?;
            rt.block_on(async {
                let shared = aws::load(&settings).await?;
                // Checksums only where S3 requires them, as the CLIs do.
                let mut conf = aws_sdk_s3::config::Builder::from(&shared)
                    .request_checksum_calculation(
                        aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired,
                    );
                if settings.endpoint.is_some() || opts.flag("force_path_style", false) {
                    conf = conf.force_path_style(true);
                }
                let client = aws_sdk_s3::Client::from_conf(conf.build());
                say(format!(
                    "s3: uploading {}/ to bucket {} ({})",
                    plan.local_dir.display(),
                    plan.bucket,
                    settings.region
                ));
                let sum = s3::upload(&client, &plan, say).await?;
                let mbs = if sum.seconds > 0.0 {
                    sum.bytes as f64 / 1e6 / sum.seconds
                } else {
                    0.0
                };
                say(format!(
                    "s3: {} file(s) uploaded, {} skipped, {} bytes in {:.2}s ({mbs:.1} MB/s)",
                    sum.files, sum.skipped, sum.bytes, sum.seconds
                ));
                Ok(())
            })
        }
        "codedeploy" => {
            let plan = codedeploy::CodeDeployPlan::from_options(
                &opts,
                &event.commit,
                &event.repo,
                build_number,
            )?;
            let cd_settings = aws::settings(&opts, env, aws::Service::CodeDeploy)?;
            let s3_settings = aws::settings(&opts, env, aws::Service::S3)?;
            let poll = poll_interval(env);
            rt.block_on(async {
                let cd_shared = aws::load(&cd_settings).await?;
                let cd = aws_sdk_codedeploy::Client::new(&cd_shared);
                let s3_shared = aws::load(&s3_settings).await?;
                let mut s3_conf = aws_sdk_s3::config::Builder::from(&s3_shared);
                if s3_settings.endpoint.is_some() {
                    s3_conf = s3_conf.force_path_style(true);
                }
                let s3c = aws_sdk_s3::Client::from_conf(s3_conf.build());
                codedeploy::deploy(&cd, &s3c, &plan, poll, say).await
            })
        }
        other => Err(DeployError::Unsupported(other.to_string())),
    }
}

/// An option as dpl's command line would have it, with its value (`$VAR`s expanded; the
/// log masks settings): `--name=value`, `--flag` for true, `--no-flag` for false, a
/// list as one flag per item, an encrypted `secure:` value as `[secure]`.
fn dpl_flags(key: &str, value: &Node, env: &[EnvVar]) -> Vec<String> {
    let one = |v: &Node| -> Option<String> {
        if v.get("secure").is_some() {
            return Some("[secure]".into());
        }
        v.as_str().map(|t| {
            let t = expand(t, env);
            let plain = !t.is_empty()
                && t.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_@%+=:,./-[]".contains(c));
            if plain {
                t
            } else {
                crate::job::shell::quote(&t)
            }
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
    fn alternatives(p: &str) -> Vec<String> {
        if let (Some(open), Some(close)) = (p.find('{'), p.find('}'))
            && open < close
        {
            let (pre, rest) = p.split_at(open);
            let body = &rest[1..close - open];
            let post = &rest[close - open + 1..];
            return body
                .split(',')
                .flat_map(|alt| alternatives(&format!("{pre}{alt}{post}")))
                .collect();
        }
        vec![p.to_string()]
    }
    fn m(p: &[u8], s: &[u8], cross: bool) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && m(rest, &s[i..], cross))
                    || m(rest, s, cross)
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| cross || i == 0 || s[i - 1] != b'/')
                .any(|i| m(&p[1..], &s[i..], cross)),
            Some(b'?') => !s.is_empty() && (cross || s[0] != b'/') && m(&p[1..], &s[1..], cross),
            Some(c) => s.first() == Some(c) && m(&p[1..], &s[1..], cross),
        }
    }
    alternatives(pattern)
        .iter()
        .any(|p| m(p.as_bytes(), path.as_bytes(), star_crosses))
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

/// The files an s3 deploy uploads: (path relative to local_dir, size), sorted.
pub fn s3_files(local_dir: &Path, glob: &str, dot_match: bool) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = crate::cache::archive::walk(local_dir) else {
        return out;
    };
    for (_, rel, meta) in entries {
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
    let provider = str_of(config.get("provider")).unwrap_or_default();
    let mut lines = Vec::new();
    match provider {
        "s3" => {
            let bucket = opt("bucket").unwrap_or_default();
            let local = opt("local_dir").unwrap_or_else(|| ".".into());
            let upload = opt("upload_dir").unwrap_or_default();
            let glob = opt("glob").unwrap_or_else(|| "**/*".into());
            let dot = bool_of(config.get("dot_match"), false);
            let acl = opt("acl")
                .unwrap_or_else(|| "private".into())
                .replace('_', "-");
            let region = opt("region").unwrap_or_else(|| "us-east-1".into());
            lines.push(format!(
                "s3: bucket {bucket} (region {region}), acl {acl}, from {local}/"
            ));
            let files = s3_files(&build_dir.join(&local), &glob, dot);
            if files.is_empty() {
                lines.push(format!("s3: no files match {glob} in {local}/"));
            }
            let total: u64 = files.iter().map(|(_, s)| s).sum();
            for (rel, size) in &files {
                let key = if upload.is_empty() {
                    rel.clone()
                } else {
                    format!("{}/{rel}", upload.trim_end_matches('/'))
                };
                lines.push(format!(
                    "would upload {rel} ({size} bytes, {}) to s3://{bucket}/{key}",
                    content_type(rel)
                ));
            }
            lines.push(format!("s3: {} file(s), {total} bytes", files.len()));
        }
        "codedeploy" => {
            let app = opt("application").unwrap_or_default();
            let group = opt("deployment_group").unwrap_or_default();
            let revision_type = opt("revision_type").unwrap_or_else(|| {
                if config.get("bucket").is_some() {
                    "s3".into()
                } else {
                    "github".into()
                }
            });
            let description = opt("description")
                .unwrap_or_else(|| format!("Deploy build {build_number} via runway"));
            let revision = if revision_type.eq_ignore_ascii_case("s3") {
                let bucket = opt("bucket").unwrap_or_default();
                let key = opt("key").unwrap_or_default();
                let bundle = opt("bundle_type")
                    .unwrap_or_else(|| key.rsplit('.').next().unwrap_or("").to_string());
                format!("s3://{bucket}/{key} (bundle type {bundle})")
            } else {
                let repo = opt("repository").unwrap_or_else(|| event.repo.clone());
                let commit = opt("commit_id").unwrap_or_else(|| event.commit.clone());
                format!("github {repo}@{commit}")
            };
            lines.push(format!(
                "would create a CodeDeploy deployment of application {app}, group {group}"
            ));
            lines.push(format!("revision: {revision}"));
            lines.push(format!("description: {description}"));
            if bool_of(config.get("wait_until_deployed"), false) {
                lines.push("and wait until it is deployed".into());
            }
        }
        other => {
            let mut flags: Vec<String> = Vec::new();
            if let Some(entries) = config.as_map() {
                for e in entries {
                    if !matches!(
                        e.key.as_str(),
                        "on" | "allow_failure" | "dpl_version" | "provider"
                    ) {
                        flags.extend(dpl_flags(&e.key, &e.value, &env));
                    }
                }
            }
            lines.push(format!(
                "runway has no {other} provider; Travis would have run dpl --provider={other} {}",
                flags.join(" ")
            ));
        }
    }
    lines
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
