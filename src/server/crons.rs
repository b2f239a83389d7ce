//! Scheduled builds (`[[repo.cron]]`): each cron's branch tip built as event `cron`
//! when it falls due, once across every node ([`crate::store::Store::take_cron`]) and
//! once after any downtime, however many runs were missed; skipped when
//! `dont_run_if_recent_build_exists` and the branch had a build in the last 24 hours.

use std::sync::Arc;
use std::time::Duration;

use super::AppState;
use crate::runway_toml::{CronConfig, RepoConfig};
use crate::store::{NewBuild, Store};

/// The longest wait between two looks at the schedule (a cron added by a restart of
/// another node is noticed within it).
const LOOK_EVERY: Duration = Duration::from_secs(60);

/// What became of a cron that fell due.
#[derive(Debug, PartialEq, Eq)]
enum Ran {
    /// A build was queued: its number.
    Queued(u64),
    /// Skipped, and why.
    Skipped(String),
}

/// Takes `cron` of `repo` if it is due and queues its build.
fn run_one(state: &AppState, repo: &RepoConfig, cron: &CronConfig) -> Option<Ran> {
    let now = Store::now();
    let period = cron.interval;
    let taken = state
        .db(|s| {
            s.take_cron(
                &repo.name,
                &cron.branch,
                period.as_str(),
                now,
                period.seconds(),
            )
        })
        .ok()?;
    if !taken {
        return None;
    }
    if cron.dont_run_if_recent_build_exists
        && state
            .db(|s| s.built_since(&repo.name, &cron.branch, now - 86_400))
            .unwrap_or(false)
    {
        return Some(Ran::Skipped(
            "a build of the branch ran in the last 24 hours (dont_run_if_recent_build_exists)"
                .into(),
        ));
    }
    let source = match super::sources::repository(&state.state_dir, repo, None, None) {
        Ok(s) => s,
        Err(e) => return Some(Ran::Skipped(e)),
    };
    let found = crate::source::Repo::open(&source).and_then(|r| {
        let tip = r.ref_tip(&format!("refs/heads/{}", cron.branch))?;
        let message = r.commit(&tip).ok()?.message;
        Some((tip, message))
    });
    let Some((commit, message)) = found else {
        return Some(Ran::Skipped(format!(
            "{} has no branch {}",
            repo.name, cron.branch
        )));
    };
    let nb = NewBuild::of(&crate::event::BuildEvent {
        repo: repo.name.clone(),
        branch: Some(cron.branch.clone()),
        event: crate::event::EventType::Cron,
        commit,
        commit_message: message,
        ..Default::default()
    });
    let row = state.db(|s| s.enqueue(&nb)).ok()?;
    super::statuses::enqueue_row(state, &row);
    state
        .said_queued
        .lock()
        .expect("said_queued")
        .insert(row.id);
    state.changed(row.id);
    state.may_have_queued();
    Some(Ran::Queued(row.number))
}

/// The schedule's loop, for the life of the server.
pub(super) async fn run(state: Arc<AppState>) {
    if !state.cfg.repos.iter().any(|r| !r.cron.is_empty()) {
        return;
    }
    let mut first = true;
    loop {
        let st = state.clone();
        let next = tokio::task::spawn_blocking(move || {
            for repo in &st.cfg.repos {
                for cron in &repo.cron {
                    match run_one(&st, repo, cron) {
                        Some(Ran::Queued(number)) => tracing::info!(
                            repo = %repo.name, branch = %cron.branch, interval = cron.interval.as_str(),
                            number, "cron build queued"
                        ),
                        Some(Ran::Skipped(why)) => tracing::info!(
                            repo = %repo.name, branch = %cron.branch, interval = cron.interval.as_str(),
                            why = %why, "cron build skipped"
                        ),
                        None => {}
                    }
                }
            }
            st.db(|s| s.next_cron_at()).ok().flatten()
        })
        .await
        .ok()
        .flatten();
        if first {
            let crons: usize = state.cfg.repos.iter().map(|r| r.cron.len()).sum();
            tracing::info!(
                crons,
                next_in_secs = next.map(|at| (at - Store::now()).max(0)),
                "cron schedule read"
            );
            first = false;
        }
        let wait = next
            .map(|at| Duration::from_secs((at - Store::now()).clamp(1, LOOK_EVERY.as_secs() as i64) as u64))
            .unwrap_or(LOOK_EVERY);
        tokio::time::sleep(wait).await;
    }
}
