//! The job's cache steps (docs/semantics.md §5): before `before_install`, the
//! branch's cache (or the default branch's) fetched and unpacked into the cached
//! directories; after `before_cache`, the directories packed and stored when they
//! changed. A cache that cannot be fetched or stored is said and never fails the job.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use super::log::{Log, human};
use super::{Runner, bytes, defaults, with_timeout};
use crate::cache::store::{self, LocalStore, Manifest, Version};
use crate::cache::{self, archive};
use crate::inside;
use crate::sandbox::Files;

/// What a job knows about its cache between fetch and store.
pub(super) struct CacheState {
    dirs: Vec<(String, std::path::PathBuf)>,
    key: String,
    fingerprint: Option<String>,
    timeout: Duration,
    /// Kept on this machine as directories (the job in a sandbox).
    layered: Option<Layered>,
}

/// A cache kept on this machine as directories, each a copy-on-write layer of the job.
struct Layered {
    local: LocalStore,
    /// The version mounted, held (never pruned) until the job ends.
    version: Option<Version>,
    /// Per cached directory: mounted (else copied, or nothing stored for it).
    mounted: Vec<bool>,
    /// runway's directory of the mounts' upper and work directories (`N/upper`).
    layers: PathBuf,
}

/// Two cached directories one inside the other (each would be mounted over the other).
fn nested(dirs: &[(String, PathBuf)]) -> bool {
    dirs.iter().enumerate().any(|(i, (_, a))| {
        dirs.iter()
            .enumerate()
            .any(|(j, (_, b))| i != j && b.starts_with(a))
    })
}

impl Runner<'_> {
    pub(super) fn cache_fetch(&mut self, log: &mut Log) {
        let ctx = self.ctx;
        let Some(store) = ctx.options.cache_store.clone() else {
            return;
        };
        let has = defaults::has_in(&ctx.workspace.build_dir);
        let Some(spec) = cache::spec(&ctx.job.config, &ctx.language, &has) else {
            return;
        };
        let env = cache::path_env(&ctx.job.env, &ctx.workspace.home, &ctx.workspace.build_dir);
        let dirs: Vec<(String, std::path::PathBuf)> = spec
            .dirs
            .iter()
            .map(|d| {
                (
                    d.clone(),
                    cache::resolve_dir(d, &env, &ctx.workspace.build_dir),
                )
            })
            .collect();
        let key = cache::key(ctx.job, &ctx.language);
        let fold = log.fold_start("cache.1", "cache: fetch");
        log.line("Setting up build cache");
        for (w, p) in &dirs {
            log.line(&format!("$ cache directory {w} ({})", p.display()));
        }
        let timeout = Duration::from_secs(spec.timeout_secs);
        let files = self.shell.as_ref().map(|s| s.files());
        match files {
            Some(Files::Job(view)) => {
                if let Err(e) = inside::prepare(view, &dirs, spec.timeout_secs) {
                    log.line(&format!(
                        "cache: could not make the cached directories: {e}"
                    ));
                }
            }
            Some(Files::Gone(_)) | None => {
                let why = why_gone(files);
                log.line(&format!(
                    "cache: the job's sandbox is gone ({why}); no cache is restored"
                ));
                log.fold_end(fold);
                return;
            }
            _ => {
                for (_, p) in &dirs {
                    let _ = std::fs::create_dir_all(p);
                }
            }
        }
        let branch = ctx.event.travis_branch().to_string();
        let mut fingerprint = None;
        let mut found = false;
        // On this machine, in a sandbox: the cache's stored version mounted copy-on-write.
        let mut layered = match (store.local(), files) {
            (Some(local), Some(Files::Job(_))) if !nested(&dirs) => Some(Layered {
                local: local.clone(),
                version: None,
                mounted: vec![false; dirs.len()],
                layers: ctx.workspace.private.join("caches"),
            }),
            _ => None,
        };
        for b in cache::fetch_branches(
            &branch,
            ctx.event.pull_request_number(),
            &ctx.options.default_branch,
        ) {
            if let (Some(l), Some(Files::Job(view))) = (layered.as_mut(), files) {
                match l.local.version(&ctx.event.repo, &b, &key) {
                    Ok(None) => {}
                    Ok(Some(v)) => {
                        found = true;
                        let started = Instant::now();
                        let cap = archive::restore_cap();
                        if v.manifest.bytes > cap {
                            log.line(&format!(
                                "cache: the cache expands to more than {cap} bytes; going on without it"
                            ));
                            break;
                        }
                        // A directory the job removes whole cannot be a mount: copied.
                        let commands = self.all_commands();
                        let copy: Vec<bool> = dirs
                            .iter()
                            .map(|(w, p)| {
                                let why =
                                    cache::removed_whole(&commands, p, &env, &ctx.workspace.build_dir);
                                if let Some(c) = why {
                                    log.line(&format!(
                                        "cache: {w} is restored by copy, not mounted: the job removes it whole ({c})"
                                    ));
                                }
                                why.is_some()
                            })
                            .collect();
                        match inside::mount_version(
                            view,
                            &v,
                            &dirs,
                            &copy,
                            &l.layers,
                            spec.timeout_secs,
                        ) {
                            Ok((mounted, copied, notes)) => {
                                for n in &notes {
                                    log.line(&format!("cache: {n}"));
                                }
                                let how = if copied.files == 0 {
                                    "mounted copy-on-write".to_string()
                                } else {
                                    format!(
                                        "mounted copy-on-write, {} files copied into directories the checkout has",
                                        copied.files
                                    )
                                };
                                log.line(&format!(
                                    "cache: restored {} files ({}) from branch {b} in {}: {how}",
                                    v.manifest.files,
                                    bytes(v.manifest.bytes),
                                    human(started.elapsed())
                                ));
                                l.mounted = mounted;
                                l.version = Some(v);
                            }
                            Err(e) => {
                                log.line(&format!(
                                    "cache: could not restore the cache of branch {b}: {e}; going on without it"
                                ));
                                // Stored as an archive next (no copy-on-write here).
                                layered = None;
                            }
                        }
                        break;
                    }
                    Err(e) => {
                        log.line(&format!(
                            "cache: could not open the cache of branch {b}: {e}; going on without it"
                        ));
                        found = true;
                        break;
                    }
                }
            }
            let path = match store.fetch(&ctx.event.repo, &b, &key, &ctx.workspace.private) {
                Ok(Some(path)) => path,
                Ok(None) => continue,
                Err(e) => {
                    log.line(&format!(
                        "cache: could not fetch the cache of branch {b}: {e}; going on without it"
                    ));
                    found = true;
                    break;
                }
            };
            found = true;
            let started = Instant::now();
            let result = match files {
                Some(Files::Job(view)) => {
                    match inside::restore(
                        view,
                        &path,
                        &dirs,
                        archive::restore_cap(),
                        spec.timeout_secs,
                    ) {
                        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
                        r => Some(r),
                    }
                }
                _ => {
                    let resolved: HashMap<String, std::path::PathBuf> =
                        dirs.iter().cloned().collect();
                    let dirs = dirs.clone();
                    with_timeout(timeout, move |cancel| {
                        let mut r = archive::restore(
                            &path,
                            &|w| resolved.get(w).cloned(),
                            &cancel,
                            archive::restore_cap(),
                        )?;
                        // An archive that does not say its fingerprint: a walk.
                        if r.fingerprint.is_none() {
                            r.fingerprint = archive::fingerprint(&dirs).ok();
                        }
                        Ok(r)
                    })
                }
            };
            match result {
                Some(Ok(r)) => {
                    log.line(&format!(
                        "cache: restored {} files ({}) from branch {b} in {}",
                        r.files,
                        bytes(r.bytes),
                        human(started.elapsed())
                    ));
                    if !r.refused.is_empty() {
                        log.line(&format!(
                            "cache: refused {} entries that cannot be restored safely:",
                            r.refused.len()
                        ));
                        for refused in r.refused.iter().take(20) {
                            log.line(&format!("  {refused}"));
                        }
                        if r.refused.len() > 20 {
                            log.line(&format!("  … and {} more", r.refused.len() - 20));
                        }
                    }
                    fingerprint = r.fingerprint;
                }
                Some(Err(e)) => log.line(&format!(
                    "cache: could not restore the cache of branch {b}: {e}; going on without it"
                )),
                None => log.line(&format!(
                    "cache: fetching took longer than {}s; going on without it",
                    spec.timeout_secs
                )),
            }
            break;
        }
        if !found {
            log.line(&format!("cache: could not download cache ({key}): no cache for this branch or the default branch yet"));
        }
        log.fold_end(fold);
        self.cache = Some(CacheState {
            dirs,
            key,
            fingerprint,
            timeout,
            layered,
        });
    }

    pub(super) fn cache_store(&mut self, log: &mut Log) {
        let ctx = self.ctx;
        let (Some(state), Some(store)) = (self.cache.as_ref(), ctx.options.cache_store.as_ref())
        else {
            return;
        };
        let fold = log.fold_start("cache.2", "cache: store");
        let files = self.shell.as_ref().map(|s| s.files());
        let view = match files {
            Some(Files::Job(view)) => Some(view),
            Some(Files::Host) => None,
            _ => {
                let why = why_gone(files);
                log.line(&format!(
                    "cache: the job's sandbox is gone ({why}); the cache is not stored"
                ));
                log.fold_end(fold);
                return;
            }
        };
        let secs = state.timeout.as_secs();
        let branch =
            cache::store_branch(ctx.event.travis_branch(), ctx.event.pull_request_number());
        let repo = ctx.event.repo.clone();
        if let (Some(l), Some(v)) = (&state.layered, view) {
            let said = store_layered(l, state, v, &repo, &branch);
            log.line(&said);
            log.fold_end(fold);
            return;
        }
        let path = store.staging(&repo, &branch, &state.key, &ctx.workspace.private);
        let dirs = state.dirs.clone();
        let since = state.fingerprint.clone();
        let started = Instant::now();
        let (key, into, put) = (state.key.clone(), branch.clone(), store.clone());
        // One walk: the fingerprint compared, and the archive written only if it changed.
        let result = match view {
            // Archived by the helper in the job's view, into a file of runway's.
            Some(v) => {
                let saved =
                    save_inside(v, &dirs, since.as_deref(), &path, secs).and_then(|s| match s {
                        Some(s) => put.put(&repo, &into, &key, &path).map(|()| Some(s)),
                        None => Ok(None),
                    });
                match saved {
                    Err(e) if e.kind() == std::io::ErrorKind::TimedOut => None,
                    r => Some(r),
                }
            }
            None => with_timeout(state.timeout, move |cancel| {
                let saved = save_here(&dirs, since.as_deref(), &path, &cancel)?;
                if saved.is_some() {
                    put.put(&repo, &into, &key, &path)?;
                }
                Ok::<_, std::io::Error>(saved)
            }),
        };
        if let Some(Ok(None)) = result {
            log.line("cache: nothing changed, not updating the cache");
            log.fold_end(fold);
            return;
        }
        let result = result.map(|r| r.map(|s| s.unwrap_or_default()));
        match result {
            Some(Ok(s)) => log.line(&format!(
                "cache: stored {} files ({} → {}) for branch {branch} in {}",
                s.files,
                bytes(s.bytes),
                bytes(s.archive_bytes),
                human(started.elapsed())
            )),
            Some(Err(e)) => log.line(&format!(
                "cache: could not store the cache: {e}; the job goes on"
            )),
            None => log.line(&format!(
                "cache: storing took longer than {}s and was stopped; the job goes on",
                state.timeout.as_secs()
            )),
        }
        log.fold_end(fold);
    }
}

/// Stores a cache kept as directories: nothing when every directory was mounted and
/// the job wrote nothing over any; else a new version (what changed copied, the rest
/// linked) made the one in use. Returns the line to log.
fn store_layered(
    l: &Layered,
    state: &CacheState,
    view: &crate::sandbox::JobView,
    repo: &str,
    branch: &str,
) -> String {
    let started = Instant::now();
    if l.version.is_some() && inside::untouched(&l.layers, &l.mounted) {
        return "cache: nothing changed, not updating the cache".into();
    }
    let stored = (|| {
        let new = l.local.begin(repo, branch, &state.key)?;
        let trees = state
            .dirs
            .iter()
            .zip(&l.mounted)
            .enumerate()
            .map(|(i, ((written, _), m))| inside::TreeDir {
                sub: store::sub(written),
                layer: m.then(|| i.to_string()),
            })
            .collect();
        let layers = if l.mounted.iter().any(|m| *m) {
            Some(std::fs::File::open(&l.layers)?)
        } else {
            None
        };
        // Restored from an archive (the older form) or not at all: stored as directories
        // even when unchanged, so that the next job mounts it.
        let saved = inside::save_tree(
            view,
            &state.dirs,
            trees,
            &new.dir,
            l.version.as_ref().map(|v| &v.dir),
            layers.as_ref(),
            archive::restore_cap(),
            state.timeout.as_secs(),
        )?;
        let manifest = Manifest {
            files: saved.files,
            bytes: saved.bytes,
            dirs: state.dirs.iter().map(|(w, _)| w.clone()).collect(),
        };
        l.local.commit(new, &manifest)?;
        Ok::<_, std::io::Error>(saved)
    })();
    match stored {
        Ok(s) => format!(
            "cache: stored {} files ({}, {} of it written) for branch {branch} in {}",
            s.files,
            bytes(s.bytes),
            bytes(s.copied_bytes),
            human(started.elapsed())
        ),
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => format!(
            "cache: storing took longer than {}s and was stopped; the job goes on",
            state.timeout.as_secs()
        ),
        Err(e) => format!("cache: could not store the cache: {e}; the job goes on"),
    }
}

/// Why the job's files cannot be reached (its sandbox gone, or no shell).
fn why_gone(files: Option<&Files>) -> String {
    match files {
        Some(Files::Gone(why)) => why.clone(),
        _ => "the job's shell did not start".into(),
    }
}

/// Saves `dirs` through the helper in the job's view into a new file beside `dest`
/// (runway's own), then moves it to `dest` whole; nothing when their fingerprint is
/// still `since`.
fn save_inside(
    view: &crate::sandbox::JobView,
    dirs: &archive::Dirs,
    since: Option<&str>,
    dest: &std::path::Path,
    secs: u64,
) -> std::io::Result<Option<archive::Saved>> {
    archive::staged(dest, |f| inside::save_changed(view, dirs, since, f, secs))
}

/// [`save_inside`] on the bare host (no sandbox).
fn save_here(
    dirs: &archive::Dirs,
    since: Option<&str>,
    dest: &std::path::Path,
    cancel: &std::sync::atomic::AtomicBool,
) -> std::io::Result<Option<archive::Saved>> {
    archive::staged(dest, |f| {
        Ok(archive::save_if_changed(dirs, since, f, cancel)?.map(|(saved, _)| saved))
    })
}
