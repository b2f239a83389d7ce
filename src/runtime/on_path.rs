//! Go, Ruby, PHP and Perl: runway does not install them, but a job asking for one runs
//! when the machine's own (first on `PATH`) is the version it asks for, and is
//! errored, naming both, when it is not.

use std::path::PathBuf;
use std::process::Command;

use super::{Context, Missing, Provider, Ready, Version};

/// A runtime found as a program on `PATH`.
pub struct OnPath {
    key: &'static str,
    exe: &'static str,
    args: &'static [&'static str],
    /// The `.travis.yml` variable Travis set from the key.
    var: &'static str,
}

impl OnPath {
    /// The finder for runtime key `key`, when runway knows how to ask its version.
    pub fn for_key(key: &str) -> Option<OnPath> {
        let (key, exe, args, var): (&'static str, _, &'static [&'static str], _) = match key {
            "go" => ("go", "go", &["version"], "TRAVIS_GO_VERSION"),
            "rvm" => ("rvm", "ruby", &["--version"], "TRAVIS_RUBY_VERSION"),
            "php" => ("php", "php", &["--version"], "TRAVIS_PHP_VERSION"),
            "perl" => ("perl", "perl", &["-e", "print $^V"], "TRAVIS_PERL_VERSION"),
            _ => return None,
        };
        Some(OnPath {
            key,
            exe,
            args,
            var,
        })
    }
}

/// The first dotted version in a `--version` text (`go version go1.19.8 linux/amd64`,
/// `ruby 3.1.2p20`, `PHP 8.2.7 (cli)`, `v5.36.0`).
pub fn version_in(text: &str) -> Option<Version> {
    text.split(|c: char| !(c.is_ascii_digit() || c == '.'))
        .filter(|w| w.contains('.'))
        .find_map(|w| Version::parse(w.trim_matches('.')))
}

/// Where `exe` is on runway's own `PATH`.
pub(crate) fn which(exe: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(exe))
        .find(|p| p.is_file())
}

impl Provider for OnPath {
    fn provide(&self, version: &str, _ctx: &Context) -> Result<Ready, Missing> {
        let spec = version.trim();
        let how = format!(
            "runway does not install {}; install {} {spec} first on runway's PATH",
            self.exe, self.exe
        );
        let Some(path) = which(self.exe) else {
            return Err(Missing {
                what: format!(
                    "{} {spec} is not installed here (no {} on PATH)",
                    self.key, self.exe
                ),
                how,
            });
        };
        let out = Command::new(&path).args(self.args).output();
        let text = out
            .map(|o| {
                String::from_utf8_lossy(if o.stdout.is_empty() {
                    &o.stderr
                } else {
                    &o.stdout
                })
                .into_owned()
            })
            .unwrap_or_default();
        let have = version_in(&text);
        let want = Version::parse(spec.trim_end_matches(".x").trim_end_matches(".*"));
        match (have, want) {
            (Some(have), Some(want)) if have.starts_with(&want) => Ok(Ready {
                env: vec![(self.var.into(), spec.to_string())],
                announce: vec![
                    format!("{} {}", self.exe, self.args.join(" "))
                        .replace("print $^V", "'print $^V'"),
                ],
                what: format!("{} {have} ({})", self.key, path.display()),
                expect: vec![(self.exe.to_string(), path.clone())],
                ..Ready::default()
            }),
            (have, _) => Err(Missing {
                what: format!(
                    "{} {spec} is not installed here (the machine's {} is {})",
                    self.key,
                    self.exe,
                    have.map_or("of an unknown version".into(), |v| v.to_string())
                ),
                how,
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_read_from_each_tools_own_words() {
        let v = |t: &str| version_in(t).map(|v| v.to_string());
        assert_eq!(
            v("go version go1.19.8 linux/amd64").as_deref(),
            Some("1.19.8")
        );
        assert_eq!(
            v("ruby 3.1.2p20 (2022-04-12 revision 4491bb740a) [x86_64-linux-gnu]").as_deref(),
            Some("3.1.2")
        );
        assert_eq!(
            v("PHP 8.2.7 (cli) (built: Jun  9 2023)").as_deref(),
            Some("8.2.7")
        );
        assert_eq!(v("v5.36.0").as_deref(), Some("5.36.0"));
        assert_eq!(v("nothing here"), None);
    }
}
