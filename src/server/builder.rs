//! Workers: claim queued builds one statement at a time, run each with its live log,
//! job slots and cancel flag, and retry mails the outbox still holds.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::AppState;
use super::live::LiveWriter;
use crate::service::{
    self, Controls, MailOptions, Options, Record, RefArgs, Request, SandboxOptions, TextReporter,
};
use crate::store::{BuildRow, Status};

/// How often retention prunes.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The claim loop's pace when nothing wakes it; also how often it looks in the store
/// for what only the store says (a `runway cancel` of a build this node runs, a mail
/// due again), however often builds wake it.
const TICK: Duration = Duration::from_millis(500);

/// Prunes the ended builds (and logs) runway.toml's `[retention]` does not keep.
fn prune(state: &AppState) {
    let now = crate::clock::now_ms() / 1000;
    match state.db(|s| s.prune(&state.cfg.retention, now)) {
        Ok(0) => {}
        Ok(n) => tracing::info!(builds = n, "retention: pruned ended builds and their logs"),
        Err(e) => tracing::warn!(error = %e, "retention: pruning failed"),
    }
}

/// Prunes the merges runway made for pull requests that no build names any more (after
/// [`prune`]; git's collection is not waited for by the claim loop).
fn prune_merges(state: &AppState) {
    for repo in &state.cfg.repos {
        let pruned = state
            .db(|s| s.pull_request_commits(&repo.name))
            .map_err(|e| e.to_string())
            .and_then(|named| super::sources::prune_merges(&state.state_dir, &repo.name, &named));
        match pruned {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(repo = %repo.name, merges = n, "retention: pruned runway's merges of pull requests")
            }
            Err(e) => {
                tracing::warn!(repo = %repo.name, error = %e, "retention: pruning merges failed")
            }
        }
    }
}

/// Builds a node follows at once when their jobs run on workers.
const MOST_FOLLOWED: usize = 256;

/// How long an ended build's log file stays beside its recorded jobs' logs.
const PARTIAL_LOG_LINGER: Duration = Duration::from_secs(60);

/// Follows the builds the store says this node holds that it does not follow: a claim
/// the store made whose answer was lost with the connection (the store went away as it
/// answered). Without this they would stay running, held and renewed, for ever.
fn adopt_lost_claims(state: &Arc<AppState>) {
    let Ok(held) = state.db(|s| s.held_by(&state.node)) else {
        return;
    };
    for row in held {
        if state.live.get(row.id).is_some() {
            continue;
        }
        tracing::warn!(
            repo = %row.repo,
            number = row.number,
            "build adopted: the store took it for this node, but its answer was lost with the connection"
        );
        follow(state, row, false);
    }
}

/// Cancels the builds this node runs that someone asked to cancel (`runway cancel`, or
/// another node whose announcement was missed).
fn cancel_requested(state: &Arc<AppState>) {
    if state.running.load(Ordering::SeqCst) == 0 {
        return;
    }
    let Ok(ids) = state.db(|s| s.cancels_requested(&state.node)) else {
        return;
    };
    for id in ids {
        if let Some(c) = state.cancels.lock().expect("cancels").get(&id) {
            c.cancel();
        }
    }
}

/// The workers: claim queued builds, up to `concurrency` at once, until stopping.
/// Jobs are what `concurrency` limits: every build runs its stages' jobs up to
/// `concurrency` at once, and every job holds one of the server's `concurrency` slots.
pub(super) async fn work(state: Arc<AppState>) {
    let lease = state.cfg.node_lease_ms as i64;
    let mut renewed = Instant::now();
    let mut pruned: Option<Instant> = None;
    let mut looked: Option<Instant> = None;
    // When a claim last found nothing, and the queue's count then.
    let mut empty: Option<(u64, Instant)> = None;
    loop {
        // Stopping: no new build, but the holds on the running ones are renewed until
        // they end (or the node hands them over), so no other node takes them meanwhile.
        let stopping = state.stopping.load(Ordering::SeqCst);
        if stopping && state.running.load(Ordering::SeqCst) == 0 {
            return;
        }
        // `concurrency = 0`: a node that serves pages and takes webhooks, and runs no job.
        // With workers, a node follows builds whose jobs run elsewhere: many at once.
        let most = if state.cfg.uses_workers() && state.cfg.concurrency > 0 {
            MOST_FOLLOWED
        } else {
            state.cfg.concurrency
        };
        // Every build that ends wakes this loop too: once a claim found nothing, it is
        // tried again when a build may have been queued since (or a tick later: a
        // `runway restart` on the store itself), not on each wake.
        while !stopping && state.running.load(Ordering::SeqCst) < most {
            let seen = state.queued.load(Ordering::SeqCst);
            let mode = claims(empty, seen, Instant::now());
            if mode == Claims::None {
                break;
            }
            let until = crate::store::tasks::now_ms() + lease;
            let claimed = state.db(|s| s.claim_for(&state.node, until));
            let Ok(Some(row)) = claimed else {
                empty = Some((seen, Instant::now()));
                break;
            };
            follow(&state, row, false);
            empty = one_claimed(mode, empty);
        }
        // With workers, a node at `concurrency = 0` (pages and webhooks only) still
        // follows a build that no node took within a node lease: were every node set
        // so, builds would otherwise wait for ever. It runs none of its jobs itself.
        while !stopping
            && most == 0
            && state.cfg.uses_workers()
            && state.running.load(Ordering::SeqCst) < MOST_FOLLOWED
        {
            let waited = (lease / 1000).max(1);
            let claimed = state.db(|s| {
                s.claim_waiting_for(
                    crate::store::Store::now() - waited,
                    &state.node,
                    crate::store::tasks::now_ms() + lease,
                )
            });
            let Ok(Some(row)) = claimed else { break };
            tracing::warn!(
                repo = %row.repo,
                number = row.number,
                "no node that follows builds took it within {waited} s: this node (concurrency = 0) follows it, its jobs on the workers"
            );
            follow(&state, row, false);
        }
        // A build a node that is gone was following: its jobs carry on on their
        // workers, so this node follows it to its end, whatever its concurrency
        // (following a build on workers is not running a job). Not while the store
        // settles after an outage: no node could renew its holds then.
        let settling =
            crate::store::postgres::settling(Duration::from_millis(state.cfg.node_lease_ms));
        while !stopping
            && !settling
            && state.cfg.uses_workers()
            && state.cfg.shared_store()
            && state.running.load(Ordering::SeqCst) < MOST_FOLLOWED
        {
            let now = crate::store::tasks::now_ms();
            let taken = state.db(|s| s.take_over(&state.node, now, now + lease));
            let Ok(Some(row)) = taken else { break };
            follow(&state, row, true);
        }
        if state.cfg.retention.prunes() && pruned.is_none_or(|p| p.elapsed() >= PRUNE_EVERY) {
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || {
                prune(&st);
                tokio::task::spawn_blocking(move || prune_merges(&st));
            })
            .await;
            pruned = Some(Instant::now());
        }
        if renewed.elapsed() >= Duration::from_millis(state.cfg.node_lease_ms / 3) {
            let until = crate::store::tasks::now_ms() + lease;
            // A renewal that failed (the store away) is tried again next round, not a
            // third of a lease later: once the store is back the hold is renewed at once.
            if state.db(|s| s.renew_builds(&state.node, until)).is_ok() {
                renewed = Instant::now();
                adopt_lost_claims(&state);
            }
            // Jobs in the nodes: a gone node's builds cannot carry on; they are errored.
            // Not while the store settles after an outage: no node could renew then.
            let settling =
                crate::store::postgres::settling(Duration::from_millis(state.cfg.node_lease_ms));
            if state.cfg.shared_store() && !state.cfg.uses_workers() && !settling {
                let lapsed =
                    state.db(|s| super::recover::interrupt(&state.cfg, &state.state_dir, s));
                for (repo, number) in lapsed.map(|(builds, _)| builds).unwrap_or_default() {
                    tracing::warn!(%repo, number, "errored: the node running it stopped answering");
                }
            }
        }
        // A busy node is woken by every build that is queued or ends: looking for
        // these on each wake was two queries and a blocking task per build.
        if looked.is_none_or(|l| l.elapsed() >= TICK) {
            cancel_requested(&state);
            let st = state.clone();
            let _ = tokio::task::spawn_blocking(move || retry_mails(&st)).await;
            looked = Some(Instant::now());
        }
        remove_expired_logs(&state);
        tokio::select! {
            _ = state.wake.notified() => {}
            _ = tokio::time::sleep(TICK) => {}
        }
    }
}

/// How the claim loop claims on a wake.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Claims {
    /// Not at all: nothing may have been queued since the queue was last found empty.
    None,
    /// One build for each queue move since (each build this node queues moves the
    /// count once), then no more: a claim after the last would find none.
    Owed,
    /// Until a claim finds none (or the node follows all it may).
    UntilEmpty,
}

/// How the claim loop claims now, `queued` being the count of queue moves: until the
/// queue is empty, unless a claim found it empty (`empty`: the count then, and when;
/// the count moves on as the builds of the moves since are claimed) less than a tick
/// ago, when it claims one build for each move since, or none (a tick later, a
/// `runway restart` on the store itself, which moves nothing here, is found).
fn claims(empty: Option<(u64, Instant)>, queued: u64, now: Instant) -> Claims {
    match empty {
        None => Claims::UntilEmpty,
        Some((_, at)) if now.duration_since(at) >= TICK => Claims::UntilEmpty,
        Some((seen, _)) if seen >= queued => Claims::None,
        Some(_) => Claims::Owed,
    }
}

/// What the claim loop knows once a claim in `mode` found a build, having known
/// `empty` ([`claims`]): one queue move more has had its build (when every move seen
/// has, [`claims`] says no more; a build queued elsewhere, unsaid, is found within a
/// tick); claiming until empty, nothing is known to be empty.
fn one_claimed(mode: Claims, empty: Option<(u64, Instant)>) -> Option<(u64, Instant)> {
    match (mode, empty) {
        (Claims::Owed, Some((matched, at))) => Some((matched + 1, at)),
        _ => None,
    }
}

/// Follows build `row` (claimed, or `taken_over` from a node that left it) on a
/// thread of its own to its end.
fn follow(state: &Arc<AppState>, row: BuildRow, taken_over: bool) {
    let said = state
        .said_queued
        .lock()
        .expect("said_queued")
        .remove(&row.id);
    if !said && !taken_over {
        tracing::info!(
            repo = %row.repo,
            number = row.number,
            r#ref = row.tag.as_deref().or(row.branch.as_deref()).unwrap_or(""),
            commit = %&row.commit[..row.commit.len().min(7)],
            by = "elsewhere (the hook, another node, a restart)",
            "build queued"
        );
    }
    let log = state.live.start(row.id);
    state.changed(row.id);
    state.running.fetch_add(1, Ordering::SeqCst);
    let st = state.clone();
    tokio::task::spawn_blocking(move || {
        // Made here, not on the loop that claims builds nor while holding the store.
        if let Ok(file) = crate::store::create_partial_log(&st.state_dir, row.id) {
            log.keep_in(file);
        }
        build(&st, row, taken_over);
        st.running.fetch_sub(1, Ordering::SeqCst);
        st.ended.notify_waiters();
        st.wake.notify_one();
    });
}

/// Removes the log files of ended builds whose minute is up, unless the build is
/// queued or running again (`runway restart N` within the minute).
fn remove_expired_logs(state: &AppState) {
    let due: Vec<i64> = {
        let mut expiring = state.expiring_logs.lock().expect("expiring logs");
        let n = expiring
            .iter()
            .take_while(|(when, _)| *when <= Instant::now())
            .count();
        expiring.drain(..n).map(|(_, id)| id).collect()
    };
    for id in due {
        let _ = state.db(|s| {
            let again = s.by_id(id)?.is_some_and(|r| r.state.is_active());
            if !again {
                s.remove_partial_log(id);
            }
            Ok(())
        });
    }
}

/// Mails that could not be sent when their build ended are tried again, with a
/// doubling delay, up to 10 tries.
fn retry_mails(state: &AppState) {
    let due = state
        .db(|s| s.due_mails(crate::clock::now_ms()))
        .unwrap_or_default();
    for m in due {
        let repo = state.db(|s| s.by_id(m.build_id)).ok().flatten();
        let Some(smtp) = repo.and_then(|b| state.cfg.smtp_for(&b.repo)) else {
            continue;
        };
        let result = crate::notify::send_raw(&smtp, &m.sender, &m.recipients, &m.message);
        let err = result.as_ref().err().map(ToString::to_string);
        match &err {
            None => tracing::info!(
                build = m.build_id,
                to = m.recipients.len(),
                "mail sent (from the outbox)"
            ),
            Some(e) => {
                tracing::warn!(build = m.build_id, attempts = m.attempts + 1, error = %e, "mail not sent yet")
            }
        }
        if err.is_none() {
            let _ = state.db(|s| {
                s.set_mail(
                    m.build_id,
                    &format!(
                        "sent to {} (from the outbox, try {})",
                        m.recipients.join(", "),
                        m.attempts + 1
                    ),
                )
            });
            state.changed(m.build_id);
        }
        let _ = state.db(|s| {
            s.mail_tried(
                m.id,
                err.as_deref().map_or(Ok(()), Err),
                crate::notify::retry_at(m.attempts + 1),
                10,
            )
        });
    }
}

/// The build service's request for a queued build of `repo`, checked out at `path`:
/// the repository's settings, runway.toml's options, deploys and mail for real.
fn request(
    state: &Arc<AppState>,
    repo: &crate::runway_toml::RepoConfig,
    row: &BuildRow,
    path: std::path::PathBuf,
    cancel: crate::cancel::Cancel,
    live: Arc<super::live::LiveLog>,
) -> Request {
    let on_workers = state.cfg.uses_workers();
    let executor: Option<Arc<dyn crate::build::JobExecutor>> = on_workers.then(|| {
        Arc::new(super::dispatch::Dispatcher {
            state: state.clone(),
            build_id: row.id,
            cancel: cancel.clone(),
            asked: super::dispatch::asked_of_workers(repo, row),
        }) as Arc<dyn crate::build::JobExecutor>
    });
    Request {
        path,
        refs: RefArgs::queued(row, repo.default_branch.clone()),
        settings: repo.settings_for(&crate::event::BuildEvent {
            pull_request: row.pull_request.clone(),
            ..Default::default()
        }),
        options: Options {
            // On workers, every job of a stage is queued at once; the workers are the limit.
            parallel: if on_workers {
                MOST_FOLLOWED
            } else {
                state.cfg.concurrency
            },
            deploy: true,
            // A restarted job: only that one runs; the others keep their results.
            job: row.rerun.clone(),
            substitutes: state.cfg.substitutes,
            sandbox: SandboxOptions {
                checked: true,
                ..state.cfg.sandbox_args(Some(repo))
            },
            ..Options::default()
        },
        mail: MailOptions {
            send: true,
            smtp: state.cfg.smtp_for(&row.repo),
            public_url: state.cfg.public_url.clone(),
            ..MailOptions::default()
        },
        record: Record::Queued(Box::new(row.clone())),
        state_dir: state.state_dir.clone(),
        database_url: state.cfg.database_url().ok().flatten(),
        controls: Controls {
            cancel: Some(cancel),
            slots: (!on_workers).then(|| state.slots.clone()),
            tap: Some(if on_workers {
                live as Arc<dyn crate::build::JobTap>
            } else {
                Arc::new(Starts {
                    live,
                    state: state.clone(),
                    build_id: row.id,
                    said: std::sync::atomic::AtomicBool::new(false),
                })
            }),
            executor,
            cache: None,
            holder: Some(state.holder.clone()),
            kept_store: Some(state.kept_store.clone()),
        },
    }
}

/// The live log of a build whose jobs run here, which also records in the store when
/// its first job starts (a worker's claim records it for jobs on workers): from then
/// on a newer build of its branch no longer cancels it.
struct Starts {
    live: Arc<super::live::LiveLog>,
    state: Arc<AppState>,
    build_id: i64,
    said: std::sync::atomic::AtomicBool,
}

impl crate::build::JobTap for Starts {
    fn write(&self, number: &str, bytes: &[u8]) {
        self.live.write(number, bytes);
    }
    fn end(&self, number: &str, result: crate::job::JobResult) {
        self.live.end(number, result);
    }
    fn start(&self, _number: &str) {
        if !self.said.swap(true, Ordering::SeqCst) {
            let _ = self.state.db(|s| s.jobs_started(self.build_id));
        }
    }
}

/// The jobs' logs are in the store now: the build's log file goes after a minute
/// (`runway log --follow` reads its end meanwhile; a restart removes what a stop left).
/// A build that ran no job keeps it.
fn expire_log(state: &AppState, id: i64) {
    if let Ok(true) = state.db(|s| s.has_jobs(id)) {
        let due = Instant::now() + PARTIAL_LOG_LINGER;
        state
            .expiring_logs
            .lock()
            .expect("expiring logs")
            .push_back((due, id));
    }
}

/// Runs one claimed build with its live log.
fn build(state: &Arc<AppState>, row: BuildRow, taken_over: bool) {
    let Some(repo) = state.cfg.repo(&row.repo).cloned() else {
        let _ = state.db(|s| {
            s.set_state(
                row.id,
                Status::Errored,
                Some("the repository is no longer in runway.toml"),
            )
        });
        return;
    };
    let r#ref = row.tag.as_deref().or(row.branch.as_deref()).unwrap_or("");
    if taken_over {
        tracing::warn!(repo = %row.repo, number = row.number, r#ref, "build taken over: the node following it stopped or left; its jobs carry on on their workers");
    } else {
        tracing::info!(repo = %row.repo, number = row.number, r#ref, "build started");
    }
    let started = Instant::now();
    let cancel = crate::cancel::Cancel::new();
    state
        .cancels
        .lock()
        .expect("cancels")
        .insert(row.id, cancel.clone());
    let live = state
        .live
        .get(row.id)
        .unwrap_or_else(|| state.live.start(row.id));
    let out: crate::build::SharedOut = Arc::new(Mutex::new(Box::new(LiveWriter(live.clone()))));
    let mut err = LiveWriter(live.clone());
    let mut row = row;
    let record = |r: &BuildRow| {
        state
            .db(|s| s.set_merge(r))
            .map(|_| state.changed(r.id))
            .map_err(|e| e.to_string())
    };
    let source =
        super::sources::of_build(&state.state_dir, &repo, &mut row, Some(&cancel), &record);
    let result = source.and_then(|path| {
        let request = request(state, &repo, &row, path, cancel, live.clone());
        let mut problems = LiveWriter(live.clone());
        service::run(&request, &mut TextReporter::new(out, &mut problems))
            .map_err(|e| e.to_string())
    });
    if let Err(e) = &result {
        let _ = std::io::Write::write_all(&mut err, format!("runway: {e}\n").as_bytes());
    }
    // A build that ended without recording its end (an early error) is errored.
    let mut ended = state.db(|s| s.by_id(row.id)).ok().flatten();
    if let Some(now) = ended.as_mut()
        && now.state == Status::Running
    {
        let why = result
            .err()
            .unwrap_or_else(|| "the build ended early".into());
        let _ = state.db(|s| s.set_state(row.id, Status::Errored, Some(&why)));
        now.state = Status::Errored;
        now.reason = Some(why);
    }
    tracing::info!(
        repo = %row.repo,
        number = row.number,
        state = ended.as_ref().map_or("unknown", |r| r.state.as_str()),
        seconds = started.elapsed().as_secs_f64(),
        // Only a build that ended otherwise than as its jobs did has a reason.
        reason = ended.as_ref().and_then(|r| r.reason.as_deref()),
        "build ended"
    );
    live.finish();
    state.signals.remove(row.id);
    state.live.remove(row.id);
    state.changed(row.id);
    expire_log(state, row.id);
    state.cancels.lock().expect("cancels").remove(&row.id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::BuildState;
    use crate::store::{JobRow, NewBuild};

    #[test]
    fn a_claim_that_found_nothing_waits_for_a_queue_move_or_a_tick() {
        let t = std::time::Instant::now();
        assert_eq!(claims(None, 7, t), Claims::UntilEmpty, "nothing found yet");
        assert_eq!(
            claims(Some((7, t)), 7, t),
            Claims::None,
            "found nothing, nothing queued since"
        );
        assert_eq!(claims(Some((7, t)), 7, t + TICK / 2), Claims::None);
        assert_eq!(
            claims(Some((7, t)), 8, t),
            Claims::Owed,
            "a build may have been queued since: claimed, and no claim after it"
        );
        assert_eq!(
            one_claimed(Claims::Owed, Some((7, t))),
            Some((8, t)),
            "the move's build claimed: the count moves on with it"
        );
        assert_eq!(
            claims(Some((8, t)), 8, t),
            Claims::None,
            "every move has had its build: no claim after the last"
        );
        assert_eq!(one_claimed(Claims::UntilEmpty, Some((7, t))), None);
        assert_eq!(claims(Some((7, t)), 7, t + TICK), Claims::UntilEmpty);
        assert_eq!(claims(Some((7, t)), 9, t + TICK), Claims::UntilEmpty);
    }

    #[test]
    fn an_ended_builds_log_file_goes_when_due_but_not_while_it_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = toml::from_str("").unwrap();
        let (state, _) = AppState::new(cfg, dir.path().to_path_buf()).unwrap();
        let job = JobRow::passed_for_tests();
        let new = NewBuild {
            repo: "o/a".into(),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let ids: Vec<i64> = (0..3)
            .map(|_| {
                state
                    .db(|s| {
                        let b = s.begin(&new)?;
                        s.create_partial_log(b.id)?;
                        s.finish(b.id, BuildState::Passed, std::slice::from_ref(&job))?;
                        Ok(b.id)
                    })
                    .unwrap()
            })
            .collect();
        // The second build was restarted and runs again.
        state
            .db(|s| s.set_state(ids[1], Status::Running, None))
            .unwrap();
        let past = Instant::now() - Duration::from_secs(1);
        {
            let mut q = state.expiring_logs.lock().unwrap();
            q.push_back((past, ids[0]));
            q.push_back((past, ids[1]));
            q.push_back((Instant::now() + PARTIAL_LOG_LINGER, ids[2]));
        }
        remove_expired_logs(&state);
        let kept = |id| state.db(|s| Ok(s.partial_log(id).is_some())).unwrap();
        assert!(!kept(ids[0]));
        assert!(kept(ids[1]), "its new run's log");
        assert!(kept(ids[2]), "not due yet");
        assert_eq!(state.expiring_logs.lock().unwrap().len(), 1);
    }
}
