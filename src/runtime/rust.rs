//! Rust: a rustup toolchain per job (`stable`, `beta`, `nightly`, `1.x.y`, `1.x`),
//! installed with rustup (minimal profile) when missing, an error naming the toolchain
//! when that fails. The job selects it with `RUSTUP_TOOLCHAIN`.

use std::process::Command;

use super::{Context, Missing, Provider, Ready, Version};

/// rustup's toolchains.
pub struct Rust;

/// The installed toolchains' names without the host triple (`stable`, `1.95.0`).
fn installed() -> Result<Vec<String>, String> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .map_err(|e| format!("rustup: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(|t| strip_triple(t).to_string())
        .collect())
}

/// `nightly-x86_64-unknown-linux-gnu` → `nightly`; `1.95.0-x86_64-…` → `1.95.0`.
fn strip_triple(name: &str) -> &str {
    let arches = ["-x86_64-", "-aarch64-", "-i686-", "-arm-", "-armv7-"];
    arches
        .iter()
        .find_map(|a| name.find(a).map(|i| &name[..i]))
        .unwrap_or(name)
}

/// The installed toolchain that `spec` names: a channel, an exact version, or the
/// newest installed `1.x.*` for `1.x`.
fn choose(spec: &str, have: &[String]) -> Option<String> {
    if have.iter().any(|h| h == spec) {
        return Some(spec.to_string());
    }
    let prefix = Version::parse(spec)?;
    if prefix.0.len() >= 3 {
        return None;
    }
    have.iter()
        .filter_map(|h| Version::parse(h).map(|v| (v, h)))
        .filter(|(v, _)| v.starts_with(&prefix))
        .max_by(|a, b| a.0.cmp(&b.0))
        .map(|(_, h)| h.clone())
}

/// What rustup's error output says went wrong: its `error:` line (the last one), not
/// the backtrace it may print after it (`18: <unknown>`).
fn rustup_reason(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().map(str::trim).collect();
    lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error:"))
        .map(|l| l.trim().to_string())
        .or_else(|| {
            lines
                .iter()
                .rev()
                .find(|l| {
                    !l.is_empty()
                        && !l.starts_with("at ")
                        && l.split(':')
                            .next()
                            .is_none_or(|n| n.trim().parse::<u32>().is_err())
                        && !l.contains("backtrace")
                })
                .map(|l| l.to_string())
        })
        .unwrap_or_else(|| "it failed without saying why".into())
}

impl Provider for Rust {
    fn provide(&self, version: &str, _ctx: &Context) -> Result<Ready, Missing> {
        let spec = version.trim();
        let have = installed().map_err(|e| Missing {
            what: format!("rust {spec}: rustup is not here ({e})"),
            how: "install rustup (https://rustup.rs) for runway's user".into(),
        })?;
        let name = match choose(spec, &have) {
            Some(n) => n,
            None => {
                let out = Command::new("rustup")
                    .args(["toolchain", "install", spec, "--profile", "minimal"])
                    .output();
                let ok = out.as_ref().is_ok_and(|o| o.status.success());
                if !ok {
                    let why = out
                        .map(|o| rustup_reason(&String::from_utf8_lossy(&o.stderr)))
                        .unwrap_or_else(|e| e.to_string());
                    return Err(Missing {
                        what: format!(
                            "rust toolchain {spec} is not installed here (found: {}) and rustup could not install it: {why}",
                            if have.is_empty() {
                                "none".into()
                            } else {
                                have.join(", ")
                            }
                        ),
                        how: format!(
                            "run `rustup toolchain install {spec}` where rustup can reach its server"
                        ),
                    });
                }
                spec.to_string()
            }
        };
        Ok(Ready {
            known: Vec::new(),
            path: Vec::new(),
            env: vec![
                ("RUSTUP_TOOLCHAIN".into(), name.clone()),
                ("TRAVIS_RUST_VERSION".into(), spec.to_string()),
            ],
            announce: vec![
                "rustc --version".into(),
                "rustup --version".into(),
                "cargo --version".into(),
            ],
            what: format!("rust toolchain {name} (rustup)"),
            // rustup's proxy, which runs the toolchain RUSTUP_TOOLCHAIN names.
            expect: super::on_path::which("rustc")
                .map(|p| vec![("rustc".to_string(), p)])
                .unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 28 (5): `rust: 1.12.0` gave a backtrace line (`18: <unknown>`) as its
    /// reason; the reason is rustup's own error line.
    #[test]
    fn rustups_error_line_is_the_reason_not_its_backtrace() {
        // What rustup 1.28 says (its backtrace shortened).
        let stderr = "info: syncing channel updates for 1.12.0-x86_64-unknown-linux-gnu\n\
            info: latest update on 2016-09-27 for version 1.12.0 (3191fbae9 2016-09-23)\n\
            error: component 'cargo' for target 'x86_64-unknown-linux-gnu' is unavailable for download for channel '1.12.0'\n\n\n\
            Stack backtrace:\n   0: anyhow::error::<impl core::convert::From<E> for anyhow::Error>::from\n\
            \x20 17: __libc_start_main_impl\n             at ./csu/../csu/libc-start.c:360:3\n  18: <unknown>\n";
        assert_eq!(
            rustup_reason(stderr),
            "component 'cargo' for target 'x86_64-unknown-linux-gnu' is unavailable for download for channel '1.12.0'"
        );
        assert_eq!(
            rustup_reason("something odd happened\n  18: <unknown>\n"),
            "something odd happened"
        );
        assert_eq!(rustup_reason(""), "it failed without saying why");
    }

    #[test]
    fn toolchains_are_named_without_their_triple_and_chosen_by_spec() {
        assert_eq!(strip_triple("nightly-x86_64-unknown-linux-gnu"), "nightly");
        assert_eq!(strip_triple("1.95.0-x86_64-unknown-linux-gnu"), "1.95.0");
        assert_eq!(
            strip_triple("nightly-2024-01-01-x86_64-unknown-linux-gnu"),
            "nightly-2024-01-01"
        );
        let have: Vec<String> = ["stable", "nightly", "1.95.0", "1.80.1"]
            .map(String::from)
            .to_vec();
        assert_eq!(choose("stable", &have).as_deref(), Some("stable"));
        assert_eq!(choose("1.95", &have).as_deref(), Some("1.95.0"));
        assert_eq!(choose("1.80.1", &have).as_deref(), Some("1.80.1"));
        assert_eq!(choose("beta", &have), None);
        assert_eq!(choose("1.12.0", &have), None);
    }
}
