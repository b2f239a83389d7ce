//! Python: the interpreter of the requested version among the machine's (pyenv's
//! versions, uv's, `pythonX.Y` on `PATH`, `RUNWAY_PYTHON_DIRS`), then a virtualenv
//! first on `PATH`, as Travis's `~/virtualenv/pythonX.Y`. In a sandbox the job gets a
//! base virtualenv prepared once per interpreter (its writes land in the job's
//! copy-on-write layer); on the bare host it gets a fresh one of its own.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{Context, Missing, Provider, Ready, Version, pick};

/// The machine's interpreters.
pub struct Python {
    found: Vec<(Version, PathBuf)>,
    /// PyPy and development builds by their directory names (`pypy3.9-7.3.11`,
    /// `3.14-dev`), with their interpreters.
    special: Vec<(String, PathBuf)>,
}

/// The installation `spec` (`pypy`, `pypy3`, `pypy3.9`, `nightly`, `3.14-dev`) names
/// among directory names as pyenv and uv write them; the newest when several match.
pub fn pick_special<'a>(spec: &str, names: &'a [String]) -> Option<&'a String> {
    let spec = spec.to_ascii_lowercase();
    let matches = |n: &str| -> bool {
        let n = n.to_ascii_lowercase();
        if spec == "nightly" {
            return n.ends_with("-dev");
        }
        if spec.ends_with("-dev") {
            return n == spec;
        }
        // pyenv: pypy3.9-7.3.11, pypy2.7-7.3.11; uv: pypy-3.10.14-linux-x86_64-gnu.
        let flavor = n.replacen("pypy-", "pypy", 1);
        let want = if spec == "pypy" {
            "pypy2"
        } else {
            spec.as_str()
        };
        flavor.starts_with(want)
    };
    let key = |n: &String| {
        let digits: String = n
            .trim_start_matches(|c: char| !c.is_ascii_digit())
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_string();
        Version::parse(&digits)
    };
    names
        .iter()
        .filter(|n| matches(n))
        .max_by(|a, b| key(a).cmp(&key(b)))
}

impl Python {
    /// Looks for interpreters where pyenv, uv and distributions put them.
    pub fn from_machine() -> Python {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        let mut roots: Vec<PathBuf> = Vec::new();
        if let Some(r) = std::env::var_os("PYENV_ROOT") {
            roots.push(PathBuf::from(r).join("versions"));
        }
        if let Some(h) = &home {
            roots.push(h.join(".pyenv/versions"));
            roots.push(h.join(".local/share/uv/python"));
        }
        let mut found = Vec::new();
        let mut special = Vec::new();
        for (name, path) in super::installations(roots, "RUNWAY_PYTHON_DIRS") {
            let lower = name.to_ascii_lowercase();
            if lower.starts_with("pypy") || lower.ends_with("-dev") {
                let bin = path.join("bin");
                if let Some(exe) = ["pypy3", "pypy", "python3", "python"]
                    .iter()
                    .map(|n| bin.join(n))
                    .find(|p| p.exists())
                {
                    special.push((name.clone(), exe));
                }
                continue;
            }
            // pyenv: 3.8.18; uv: cpython-3.12.1-linux-x86_64-gnu.
            let ver = name.strip_prefix("cpython-").unwrap_or(&name);
            let ver = ver.split('-').next().unwrap_or("");
            if let Some(v) = Version::parse(ver)
                && let Some(exe) = interpreter_in(&path.join("bin"), &v)
            {
                found.push((v, exe));
            }
        }
        // pythonX.Y on PATH (distribution packages, deadsnakes).
        if let Some(path) = std::env::var_os("PATH") {
            for dir in std::env::split_paths(&path) {
                let Ok(entries) = std::fs::read_dir(&dir) else {
                    continue;
                };
                for e in entries.flatten() {
                    let name = e.file_name().to_string_lossy().into_owned();
                    if let Some(ver) = name.strip_prefix("python")
                        && ver.matches('.').count() == 1
                        && let Some(v) = Version::parse(ver)
                        && !found.iter().any(|(f, _)| f.starts_with(&v))
                        && let Some(full) = version_of(&e.path())
                    {
                        found.push((full, e.path()));
                    }
                }
            }
        }
        Python { found, special }
    }

    /// An interpreter that runs the pinned virtualenv tool (3.8 to 3.11).
    fn tool_python(&self) -> Option<PathBuf> {
        self.found
            .iter()
            .filter(|(v, _)| v.0.first() == Some(&3) && (8..=11).contains(v.0.get(1).unwrap_or(&0)))
            .max_by(|a, b| a.0.cmp(&b.0))
            .map(|(_, p)| p.clone())
    }

    fn list(&self) -> String {
        let mut found: Vec<&Version> = self.found.iter().map(|(v, _)| v).collect();
        found.sort();
        let mut v: Vec<String> = found.iter().map(|v| v.to_string()).collect();
        v.dedup();
        if v.is_empty() {
            "none".into()
        } else {
            v.join(", ")
        }
    }
}

/// `bin/python3.8` (or `python3`, `python`) of an installation of version `v`.
fn interpreter_in(bin: &Path, v: &Version) -> Option<PathBuf> {
    let minor = format!(
        "python{}.{}",
        v.0.first()?,
        v.0.get(1).copied().unwrap_or(0)
    );
    let major = format!("python{}", v.0.first()?);
    [minor.as_str(), major.as_str(), "python"]
        .iter()
        .map(|n| bin.join(n))
        .find(|p| p.exists())
}

/// `Python 3.8.18` from running the interpreter.
fn version_of(exe: &Path) -> Option<Version> {
    let out = Command::new(exe).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(if out.stdout.is_empty() {
        &out.stderr
    } else {
        &out.stdout
    })
    .into_owned();
    Version::parse(text.trim().strip_prefix("Python ")?)
}

impl Provider for Python {
    fn provide(&self, version: &str, ctx: &Context) -> Result<Ready, Missing> {
        let spec = version.trim();
        let lower = spec.to_ascii_lowercase();
        let names: Vec<String> = self.special.iter().map(|(n, _)| n.clone()).collect();
        let special = (lower.starts_with("pypy") || lower == "nightly" || lower.ends_with("-dev"))
            .then(|| pick_special(&lower, &names))
            .flatten()
            .and_then(|n| self.special.iter().find(|(m, _)| m == n));
        if let Some((name, exe)) = special {
            return self.ready(spec, name, exe, ctx);
        }
        if lower.starts_with("pypy") || lower == "nightly" || lower.ends_with("-dev") {
            return Err(Missing {
                what: format!(
                    "python {spec} is not installed here (found: {})",
                    self.list()
                ),
                how: "install it with pyenv (`pyenv install --list` names it), or point \
                      RUNWAY_PYTHON_DIRS at a directory holding it"
                    .into(),
            });
        }
        let Some((full, exe)) = pick(spec, &self.found) else {
            return Err(Missing {
                what: format!(
                    "python {spec} is not installed here (found: {})",
                    self.list()
                ),
                how: format!(
                    "install it (`pyenv install {spec}`, or a python{spec} package), or point \
                     RUNWAY_PYTHON_DIRS at a directory of interpreters"
                ),
            });
        };
        self.ready(spec, &full.to_string(), exe, ctx)
    }
}

impl Python {
    /// The job's virtualenv over interpreter `exe` (called `label`: `3.8.18`,
    /// `pypy3.9-7.3.11`), first on `PATH`.
    fn ready(&self, spec: &str, label: &str, exe: &Path, ctx: &Context) -> Result<Ready, Missing> {
        let maker = VenvMaker {
            toolchains: ctx.toolchains,
            tool_python: self.tool_python(),
        };
        let venv = if ctx.copy_on_write {
            base_venv(exe, label, &maker)?
        } else {
            let dir = ctx.home.join(format!("virtualenv/python{spec}"));
            maker.make(exe, &dir)?;
            dir
        };
        let mut env = vec![
            ("VIRTUAL_ENV".to_string(), venv.display().to_string()),
            ("TRAVIS_PYTHON_VERSION".to_string(), spec.to_string()),
            ("PIP_DISABLE_PIP_VERSION_CHECK".to_string(), "1".to_string()),
            ("PIP_PROGRESS_BAR".to_string(), "off".to_string()),
        ];
        // Travis's path for it, too (scripts that `source ~/virtualenv/python3.8/bin/activate`).
        if ctx.copy_on_write {
            let link = ctx.home.join(format!("virtualenv/python{spec}"));
            if let Some(parent) = link.parent() {
                let _ = std::fs::create_dir_all(parent);
            }
            let _ = std::os::unix::fs::symlink(&venv, &link);
        }
        env.push(("PYTHONUNBUFFERED".to_string(), "1".to_string()));
        // pip's version line from its metadata in the virtualenv, as `pip --version`
        // prints it; pip is run only when that cannot be read.
        let (announce, known) = match pip_line(&venv) {
            Some(line) => (
                vec!["python --version".into()],
                vec![("pip --version".to_string(), line)],
            ),
            None => (
                vec!["python --version".into(), "pip --version".into()],
                Vec::new(),
            ),
        };
        Ok(Ready {
            expect: vec![("python".into(), venv.join("bin/python"))],
            path: vec![venv.join("bin")],
            env,
            announce,
            known,
            what: format!(
                "python {label} ({}), virtualenv {}",
                exe.display(),
                venv.display()
            ),
        })
    }
}

/// What `pip --version` prints in virtualenv `venv` (`pip 24.0 from
/// VENV/lib/python3.12/site-packages/pip (python 3.12)`), read from pip's installed
/// metadata; None when there is no single pip to read.
pub(crate) fn pip_line(venv: &Path) -> Option<String> {
    let lib = std::fs::read_dir(venv.join("lib")).ok()?;
    let mut found = Vec::new();
    for dir in lib.flatten() {
        let name = dir.file_name().to_string_lossy().into_owned();
        let site = dir.path().join("site-packages");
        let Ok(entries) = std::fs::read_dir(&site) else {
            continue;
        };
        for e in entries.flatten() {
            let f = e.file_name().to_string_lossy().into_owned();
            if f.starts_with("pip-") && f.ends_with(".dist-info") {
                found.push((name.clone(), site.clone(), e.path()));
            }
        }
    }
    let [(lib_name, site, info)] = found.as_slice() else {
        return None;
    };
    let meta = std::fs::read_to_string(info.join("METADATA")).ok()?;
    let version = meta
        .lines()
        .take_while(|l| !l.is_empty())
        .find_map(|l| l.strip_prefix("Version: "))?
        .trim()
        .to_string();
    let py = lib_name
        .strip_prefix("python")
        .or_else(|| lib_name.strip_prefix("pypy"))?;
    Some(format!(
        "pip {version} from {} (python {py})",
        site.join("pip").display()
    ))
}

/// The virtualenv prepared once for interpreter `exe` ({toolchains}/virtualenv/X.Y.Z),
/// made in place (its scripts name their own path) under a lock, so jobs starting
/// together make it once and never see half of one.
fn base_venv(exe: &Path, v: &str, maker: &VenvMaker) -> Result<PathBuf, Missing> {
    let toolchains = maker.toolchains;
    let dir = toolchains.join("virtualenv").join(v);
    let ready = dir.join(".runway-ready");
    if ready.exists() {
        return Ok(dir);
    }
    let parent = dir.parent().unwrap_or(toolchains);
    let io = |e: std::io::Error| Missing {
        what: format!(
            "a virtualenv for python {v} could not be made in {}: {e}",
            parent.display()
        ),
        how: "make runway's toolchain directory writable (RUNWAY_TOOLCHAINS)".into(),
    };
    std::fs::create_dir_all(parent).map_err(io)?;
    let _lock = super::Lock::take(&parent.join(format!("{v}.lock"))).map_err(io)?;
    if ready.exists() {
        return Ok(dir);
    }
    let _ = std::fs::remove_dir_all(&dir);
    maker.make(exe, &dir)?;
    std::fs::write(&ready, "").map_err(io)?;
    Ok(dir)
}

/// The last virtualenv that makes Python 2 environments (20.22 dropped them).
const VIRTUALENV_FOR_PY2: &str = "virtualenv==20.21.1";

/// Makes virtualenvs: `python -m venv`, else the interpreter's own `virtualenv`,
/// else (Python 2) a pinned virtualenv runway keeps in its toolchain directory.
struct VenvMaker<'a> {
    toolchains: &'a Path,
    tool_python: Option<PathBuf>,
}

impl VenvMaker<'_> {
    fn make(&self, exe: &Path, dir: &Path) -> Result<(), Missing> {
        let mut tried = Vec::new();
        for module in ["venv", "virtualenv"] {
            match run(Command::new(exe).args(["-m", module]).arg(dir)) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("-m {module}: {e}")),
            }
        }
        match self.tool() {
            Ok(tool) => match run(Command::new(tool).arg("-p").arg(exe).arg(dir)) {
                Ok(()) => return Ok(()),
                Err(e) => tried.push(format!("{VIRTUALENV_FOR_PY2}: {e}")),
            },
            Err(e) => tried.push(e),
        }
        Err(Missing {
            what: format!(
                "{} could not make a virtualenv ({})",
                exe.display(),
                tried.join("; ")
            ),
            how: format!(
                "install the venv module or virtualenv for {}",
                exe.display()
            ),
        })
    }

    /// `{toolchains}/tools/virtualenv/bin/virtualenv`, installed from PyPI once.
    fn tool(&self) -> Result<PathBuf, String> {
        let root = self.toolchains.join("tools");
        let venv = root.join("virtualenv");
        let tool = venv.join("bin/virtualenv");
        if tool.exists() {
            return Ok(tool);
        }
        let python = self
            .tool_python
            .as_ref()
            .ok_or("no Python 3.8 to 3.11 here to run virtualenv")?;
        std::fs::create_dir_all(&root).map_err(|e| e.to_string())?;
        let _lock = super::Lock::take(&root.join("virtualenv.lock")).map_err(|e| e.to_string())?;
        if tool.exists() {
            return Ok(tool);
        }
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new(python).args(["-m", "venv"]).arg(&venv))?;
        run(Command::new(venv.join("bin/pip")).args([
            "install",
            "-q",
            "--disable-pip-version-check",
            VIRTUALENV_FOR_PY2,
        ]))
        .map_err(|e| format!("pip install {VIRTUALENV_FOR_PY2}: {e}"))?;
        Ok(tool)
    }
}

/// Runs a command; its last line of stderr when it fails.
fn run(cmd: &mut Command) -> Result<(), String> {
    match cmd.env_remove("PYTHONPATH").output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .rfind(|l| !l.trim().is_empty())
            .unwrap_or("failed")
            .to_string()),
        Err(e) => Err(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pypy_and_nightly_are_found_by_their_directory_names() {
        let names: Vec<String> = [
            "pypy2.7-7.3.11",
            "pypy3.9-7.3.11",
            "pypy3.10-7.3.17",
            "pypy-3.8.16-linux-x86_64-gnu",
            "3.13-dev",
            "3.14-dev",
        ]
        .map(String::from)
        .to_vec();
        let p = |s: &str| pick_special(s, &names).map(String::as_str);
        assert_eq!(p("pypy"), Some("pypy2.7-7.3.11"));
        assert_eq!(p("pypy3"), Some("pypy3.10-7.3.17"));
        assert_eq!(p("pypy3.9"), Some("pypy3.9-7.3.11"));
        assert_eq!(p("pypy3.8"), Some("pypy-3.8.16-linux-x86_64-gnu"));
        assert_eq!(p("nightly"), Some("3.14-dev"));
        assert_eq!(p("3.13-dev"), Some("3.13-dev"));
        assert_eq!(p("pypy3.7"), None);
        assert_eq!(pick_special("nightly", &[]), None);
    }
}
