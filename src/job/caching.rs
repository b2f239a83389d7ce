//! The job's cache steps (docs/semantics.md §5): before `before_install`, the
//! branch's cache (or the default branch's) fetched and unpacked into the cached
//! directories; after `before_cache`, the directories packed and stored when they
//! changed. A cache that cannot be fetched or stored is said and never fails the job.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::log::{Log, human};
use super::{Runner, bytes, defaults, with_timeout};
use crate::cache::{self, archive};

/// What a job knows about its cache between fetch and store.
pub(super) struct CacheState {
    dirs: Vec<(String, std::path::PathBuf)>,
    key: String,
    fingerprint: Option<String>,
    timeout: Duration,
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
            let _ = std::fs::create_dir_all(p);
            log.line(&format!("$ cache directory {w} ({})", p.display()));
        }
        let timeout = Duration::from_secs(spec.timeout_secs);
        let branch = ctx.event.travis_branch().to_string();
        let mut fingerprint = None;
        let mut found = false;
        for b in cache::fetch_branches(&branch, ctx.event.pull_request, &ctx.options.default_branch)
        {
            let path = match store.fetch(&ctx.event.repo, &b, &key, &ctx.workspace.scratch) {
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
            let resolved: HashMap<String, std::path::PathBuf> = dirs.iter().cloned().collect();
            let result = with_timeout(timeout, move |cancel| {
                archive::restore(
                    &path,
                    &|w| resolved.get(w).cloned(),
                    &cancel,
                    archive::restore_cap(),
                )
            });
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
                    fingerprint = archive::fingerprint(&dirs).ok();
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
        });
    }

    pub(super) fn cache_store(&mut self, log: &mut Log) {
        let ctx = self.ctx;
        let (Some(state), Some(store)) = (self.cache.as_ref(), ctx.options.cache_store.as_ref())
        else {
            return;
        };
        let fold = log.fold_start("cache.2", "cache: store");
        let now = archive::fingerprint(&state.dirs).ok();
        if now.is_some() && now == state.fingerprint {
            log.line("cache: nothing changed, not updating the cache");
            log.fold_end(fold);
            return;
        }
        let branch = cache::store_branch(ctx.event.travis_branch(), ctx.event.pull_request);
        let repo = ctx.event.repo.clone();
        let path = store.staging(&repo, &branch, &state.key, &ctx.workspace.scratch);
        let dirs = state.dirs.clone();
        let started = Instant::now();
        let (key, into, put) = (state.key.clone(), branch.clone(), store.clone());
        match with_timeout(state.timeout, move |cancel| {
            let saved = archive::save(&dirs, &path, &cancel)?;
            put.put(&repo, &into, &key, &path)?;
            Ok::<_, std::io::Error>(saved)
        }) {
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
