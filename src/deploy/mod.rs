//! Deploys (travis-semantics.md §6): what a provider would do, and the pieces the
//! providers share (option reading with `$VAR` expansion, file selection, content
//! types). `runway run` without `--deploy` prints [`describe`] instead of deploying.

use std::path::Path;

use crate::config::model::{EnvVar, bool_of, str_of, strs};
use crate::config::yaml::Node;
use crate::event::BuildEvent;

/// Reads a provider option as a string with `$VAR`/`${VAR}` expanded from `env`.
pub fn option(config: &Node, key: &str, env: &[EnvVar]) -> Option<String> {
    let n = config.get(key)?;
    let raw = str_of(Some(n))
        .map(str::to_string)
        .or_else(|| strs(Some(n)).into_iter().next())?;
    Some(expand(&raw, env))
}

/// Expands `$VAR` and `${VAR}` (later entries of `env` win).
pub fn expand(text: &str, env: &[EnvVar]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find(|v| v.name == name)
            .map(|v| v.plain_value().to_string())
            .or_else(|| std::env::var(name).ok())
            .unwrap_or_default()
    };
    let mut out = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(&lookup(&name));
        }
    }
    out
}

/// A glob as dpl's s3 provider reads it: `*` within a name, `**` across directories,
/// `?`, and `{a,b}` alternatives; matched against `/`-separated relative paths.
pub fn glob_match(pattern: &str, path: &str) -> bool {
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
    fn m(p: &[u8], s: &[u8]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some(b'*') if p.get(1) == Some(&b'*') => {
                let rest = if p.get(2) == Some(&b'/') {
                    &p[3..]
                } else {
                    &p[2..]
                };
                (0..=s.len()).any(|i| (i == 0 || s[i - 1] == b'/') && m(rest, &s[i..]))
                    || m(rest, s)
            }
            Some(b'*') => (0..=s.len())
                .take_while(|&i| i == 0 || s[i - 1] != b'/')
                .any(|i| m(&p[1..], &s[i..])),
            Some(b'?') => !s.is_empty() && s[0] != b'/' && m(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && m(&p[1..], &s[1..]),
        }
    }
    alternatives(pattern)
        .iter()
        .any(|p| m(p.as_bytes(), path.as_bytes()))
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
                .unwrap_or_else(|| format!("Deploy build {build_number} via Travis CI"));
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
                        flags.push(format!("--{}", e.key));
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

    #[test]
    fn globs() {
        assert!(glob_match("**/*", "a/b/c.txt"));
        assert!(glob_match("**/*", "c.txt"));
        assert!(glob_match("*.zip", "a.zip"));
        assert!(!glob_match("*.zip", "d/a.zip"));
        assert!(glob_match("**/*.{js,css}", "x/y/app.css"));
        assert!(glob_match("dist/**/*.html", "dist/index.html"));
        assert!(!glob_match("?.txt", "ab.txt"));
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
