//! How a build's jobs are isolated: the options every trigger gives (`--sandbox`,
//! `--no-network`, `--memory`, runway.toml's `sandbox`, `hide`, `network`, `job_memory`,
//! `job_processes`), made into the [`crate::sandbox::Sandbox`] the build's jobs run in.

use std::sync::Arc;

pub use crate::options::SandboxOptions;

impl SandboxOptions {
    /// The sandbox for a build whose state and caches live in `state_dir` and
    /// `cache_root`: made once here to know it works (unless the server did), or the
    /// bare host with its warning said.
    pub fn make(
        &self,
        state_dir: &std::path::Path,
        cache_root: &std::path::Path,
        say: &mut dyn FnMut(&str),
    ) -> Result<Arc<dyn crate::sandbox::Sandbox>, crate::sandbox::SandboxError> {
        use crate::sandbox::{BARE_WARNING, Bare, Mode, Namespaces, Policy};
        match self.mode {
            Mode::None => {
                if !self.checked {
                    say(&format!("runway: warning: {BARE_WARNING}"));
                }
                Ok(Arc::new(Bare))
            }
            Mode::Namespaces => {
                let mut hide = vec![state_dir.to_path_buf(), cache_root.to_path_buf()];
                hide.extend(crate::sandbox::credential_paths());
                hide.extend(self.hide.iter().cloned());
                let mut ns = Namespaces::new(Policy {
                    no_network: self.no_network,
                    hide,
                    show: vec![crate::runtime::toolchain_dir()],
                });
                if !self.limits.is_empty() {
                    match crate::sandbox::cgroup::Hierarchy::open(&self.limits) {
                        Ok(h) => ns = ns.with_limits(h, self.limits),
                        Err(why) if !self.checked => say(&format!(
                            "runway: warning: job memory and process limits are not enforced: {why}"
                        )),
                        Err(_) => {}
                    }
                }
                crate::sandbox::disk::keep_templates_in(state_dir);
                // A check kept from an earlier run on this boot (with the same
                // options) vouches for the job disk too: no probe disk is made.
                // (A server checked at its start: nothing to read for each build.)
                let key = (!self.checked).then(|| self.check_key());
                let kept = key.as_ref().is_some_and(|k| checked_before(state_dir, k));
                let mut disk_works = true;
                if let Some(bytes) = self.disk.0 {
                    match if kept { Ok(()) } else { probe_disk(bytes) } {
                        Ok(()) => ns = ns.with_disk(Some(bytes)),
                        Err(why) => {
                            disk_works = false;
                            say(&format!(
                                "runway: warning: the job disk budget is not enforced: {why}"
                            ))
                        }
                    }
                }
                if let Some(key) = key.filter(|_| !kept) {
                    // A disk that could not be made is probed (and said) again next run.
                    let key = if disk_works {
                        key
                    } else {
                        format!("{key}disk failed\n")
                    };
                    check_once_per_boot(&ns, state_dir, &key)?;
                }
                Ok(Arc::new(ns))
            }
        }
    }
}

impl SandboxOptions {
    /// What a kept check answers for: this runway binary, on this boot of the machine,
    /// with these isolation options (a rebuilt runway, a reboot or other options check
    /// again).
    fn check_key(&self) -> String {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
        let exe = std::env::current_exe()
            .and_then(std::fs::metadata)
            .map(|m| {
                use std::os::unix::fs::MetadataExt;
                format!(
                    "{}:{}:{}:{}",
                    m.dev(),
                    m.ino(),
                    m.size(),
                    m.mtime_nsec() + m.mtime() * 1_000_000_000
                )
            })
            .unwrap_or_default();
        format!(
            "runway {} exe {exe} boot {} network {} limits {:?} disk {:?}\n",
            env!("CARGO_PKG_VERSION"),
            boot.trim(),
            !self.no_network,
            self.limits,
            self.disk.0,
        )
    }
}

/// Checks that a sandbox can be made here once per boot, not once per `runway run`:
/// the answer is kept in the state directory (`sandbox-checked`, runway's own, hidden
/// from jobs) under `key`, beside the answers for other options (the last
/// [`KEPT_CHECKS`]). A machine that cannot make one is still told at once, on the
/// first run; a job whose sandbox fails later is errored with the reason as before.
fn check_once_per_boot(
    ns: &crate::sandbox::Namespaces,
    state_dir: &std::path::Path,
    key: &str,
) -> Result<(), crate::sandbox::SandboxError> {
    if checked_before(state_dir, key) {
        return Ok(());
    }
    let mark = state_dir.join(CHECKED);
    ns.check()?;
    // Kept for the next run; a run that cannot keep it checks again next time.
    let before = std::fs::read_to_string(&mark).unwrap_or_default();
    if std::fs::create_dir_all(state_dir).is_ok()
        && let Ok(mut tmp) = tempfile::NamedTempFile::new_in(state_dir)
        && std::io::Write::write_all(&mut tmp, remember(&before, key).as_bytes()).is_ok()
    {
        let _ = tmp.persist(&mark);
    }
    Ok(())
}

/// How many checks (one per set of options) `sandbox-checked` keeps.
const KEPT_CHECKS: usize = 8;
/// Between two kept checks in `sandbox-checked` (a key is one or more lines).
const BETWEEN: char = '\x1e';

/// The kept checks `text` with `key` added (the newest last, at most [`KEPT_CHECKS`]);
/// those of another boot are dropped.
fn remember(text: &str, key: &str) -> String {
    let boot = |k: &str| -> Option<String> {
        let at = k.find(" boot ")? + " boot ".len();
        k[at..].split_whitespace().next().map(str::to_string)
    };
    let mut keys: Vec<&str> = text
        .split(BETWEEN)
        .filter(|k| !k.is_empty() && *k != key && boot(k) == boot(key))
        .collect();
    keys.push(key);
    let from = keys.len().saturating_sub(KEPT_CHECKS);
    keys[from..].join(&BETWEEN.to_string())
}

/// Whether a check kept in the state directory answers for `key`.
fn checked_before(state_dir: &std::path::Path, key: &str) -> bool {
    std::fs::read_to_string(state_dir.join(CHECKED))
        .is_ok_and(|text| text.split(BETWEEN).any(|k| k == key))
}

/// The file in the state directory that keeps a passed sandbox check.
pub const CHECKED: &str = "sandbox-checked";

/// The sandbox policy of `runway codedeploy rehearse`: a copy of the machine hiding what
/// a job's hides (runway's state directory, its cache directory, runway's user's
/// credentials), so that a bundle's hooks read no more than a job could.
pub fn rehearsal_policy() -> crate::sandbox::Policy {
    let mut hide = vec![
        crate::store::default_dir(),
        crate::cache::store::default_root(),
    ];
    hide.extend(crate::sandbox::credential_paths());
    crate::sandbox::Policy {
        no_network: false,
        hide,
        show: vec![crate::runtime::toolchain_dir()],
    }
}

/// Makes (and drops) one job disk of `bytes`, so a machine that cannot is told once.
fn probe_disk(bytes: u64) -> Result<(), String> {
    static PROBED: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    PROBED
        .get_or_init(|| {
            // A job directory (named after this process): one a runway killed while it
            // probed leaves is removed by the next runway's sweep.
            let dir = crate::sandbox::job_dir().map_err(|e| e.to_string())?;
            crate::sandbox::disk::JobDisk::attach(dir.path(), bytes)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::remember;

    #[test]
    fn checks_for_other_options_are_kept_beside_each_other() {
        let one = remember("", "a\n");
        assert_eq!(one, "a\n");
        let two = remember(&one, "b\ndisk failed\n");
        assert!(two.split('\x1e').any(|k| k == "a\n"));
        assert!(two.split('\x1e').any(|k| k == "b\ndisk failed\n"));
        assert_eq!(
            remember(&two, "a\n").split('\x1e').count(),
            2,
            "no key twice"
        );
        let mut many = String::new();
        for i in 0..20 {
            many = remember(&many, &format!("k{i}\n"));
        }
        let kept: Vec<&str> = many.split('\x1e').collect();
        assert_eq!(kept.len(), 8);
        assert_eq!(kept.last(), Some(&"k19\n"));
    }
}
