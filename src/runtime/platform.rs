//! A job's `os`, `arch` and `dist` against this machine's. A job for another os or
//! arch is not run here and cannot pass; a different `dist` is said in the header.

/// This machine's architecture as Travis named them.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        "s390x" => "s390x",
        other => other,
    }
}

/// The os and arch a job with these matrix values runs on (`linux`, `amd64` unless
/// it says), as a worker's labels name them.
pub fn wanted(matrix: &[(String, String)]) -> (String, String) {
    let get = |k: &str| {
        matrix
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    (
        get("os").unwrap_or("linux").to_string(),
        normal_arch(get("arch").unwrap_or("amd64")).to_string(),
    )
}

/// Travis's names for one architecture, as one.
fn normal_arch(arch: &str) -> &str {
    match arch {
        "x86_64" => "amd64",
        "aarch64" | "arm64-graviton2" => "arm64",
        a => a,
    }
}

/// This machine's os as a job's `os:` names it.
pub fn host_os() -> &'static str {
    match std::env::consts::OS {
        "macos" => "osx",
        other => other,
    }
}

/// Why a job with these matrix values cannot run on a `host_os`/`host_arch` machine:
/// `needs an osx runner`. None when it can.
pub fn mismatch(matrix: &[(String, String)], host_os: &str, host_arch: &str) -> Option<String> {
    let get = |k: &str| {
        matrix
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    if let Some(os) = get("os")
        && os != host_os
    {
        return Some(format!(
            "needs an {os} runner (this machine runs {host_os})"
        ));
    }
    if let Some(arch) = get("arch") {
        let arch = normal_arch(arch);
        if arch != host_arch {
            return Some(format!(
                "needs an {arch} runner (this machine is {host_arch})"
            ));
        }
    }
    None
}

/// This machine's distribution, as `/etc/os-release` names it
/// (`Debian GNU/Linux 12 (bookworm)`), and its code name.
pub fn host_dist() -> (String, String) {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    let field = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(|v| v.trim_matches('"').to_string())
            .unwrap_or_default()
    };
    (field("PRETTY_NAME"), field("VERSION_CODENAME"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn jobs_for_another_os_or_arch_are_not_run_here() {
        assert_eq!(mismatch(&m(&[("os", "linux")]), "linux", "amd64"), None);
        assert_eq!(mismatch(&m(&[]), "linux", "amd64"), None);
        assert_eq!(
            mismatch(&m(&[("os", "osx")]), "linux", "amd64").as_deref(),
            Some("needs an osx runner (this machine runs linux)")
        );
        assert_eq!(
            mismatch(&m(&[("arch", "arm64")]), "linux", "amd64").as_deref(),
            Some("needs an arm64 runner (this machine is amd64)")
        );
        assert_eq!(mismatch(&m(&[("arch", "x86_64")]), "linux", "amd64"), None);
    }
}
