//! What a server start does about a crash: builds left running are errored (never run
//! twice), the job process groups they left running are killed, and each such build
//! is mailed as errored when its `.travis.yml` says so, with the log it had printed.
//! The mails go through the outbox, so the workers send (and retry) them.

use std::path::Path;

use crate::build::BuildState;
use crate::notify::{self, MailFacts, MailJob};
use crate::runway_toml::ServerConfig;
use crate::service::{RefArgs, target};
use crate::store::{self, BuildRow, OutboxMail, Store, StoreError};

/// What a crash left behind, found when the server starts.
#[derive(Debug, Default)]
pub struct Interrupted {
    /// Builds left running, as (repository, number); now errored.
    pub builds: Vec<(String, u64)>,
    /// Job process groups still running without a server; now killed.
    pub process_groups: usize,
    /// Mails queued for the interrupted builds.
    pub mails: usize,
}

/// Errors the builds a crash interrupted, ends their jobs and queues their mails.
pub fn recover(
    cfg: &ServerConfig,
    state_dir: &Path,
    st: &mut Store,
) -> Result<Interrupted, StoreError> {
    // With workers on PostgreSQL, a build a stopped node followed carries on: its
    // jobs run on workers, and another node (or this one) takes it over.
    let (builds, mails) = if cfg.uses_workers() && cfg.shared_store() {
        (Vec::new(), 0)
    } else {
        interrupt(cfg, state_dir, st)?
    };
    st.remove_ended_partial_logs()?;
    let process_groups = crate::process::end_orphans(&store::process_dir(state_dir));
    crate::sandbox::disk::sweep();
    Ok(Interrupted {
        builds,
        process_groups,
        mails,
    })
}

/// Errors the running builds no live node holds (SQLite: all of them, at start;
/// PostgreSQL: those whose node's lease lapsed: a node that is gone, its builds errored
/// by the nodes still up rather than at a restart) and queues their mails; the builds
/// and the number of mails.
pub fn interrupt(
    cfg: &ServerConfig,
    state_dir: &Path,
    st: &mut Store,
) -> Result<(Vec<(String, u64)>, usize), StoreError> {
    let builds = st.mark_interrupted()?;
    let mut mails = 0;
    for (repo, number) in &builds {
        if let Some(row) = st.build(Some(repo), *number)?
            && let Some(mail) = interrupted_mail(cfg, state_dir, st, &row)
        {
            st.queue_mail(&mail, "not sent yet", crate::clock::now_ms())?;
            mails += 1;
        }
    }
    Ok((builds, mails))
}

/// The errored build's mail, when its config, the email policy and the server's mail
/// settings call for one.
fn interrupted_mail(
    cfg: &ServerConfig,
    state_dir: &Path,
    st: &Store,
    row: &BuildRow,
) -> Option<OutboxMail> {
    let repo = cfg.repo(&row.repo)?;
    let smtp = cfg.smtp_for(&row.repo)?;
    let path = repo
        .local_path()
        .unwrap_or_else(|| super::mirror::mirror_dir(state_dir, &repo.name));
    let target = target::resolve(&path, &RefArgs::queued(row, None)).ok()?;
    let settings = repo.settings();
    let loaded = crate::config::load_bytes(&target.config_bytes);
    let plan = crate::plan::plan(
        &loaded.config,
        &target.event,
        &crate::plan::Settings {
            build_number: row.number,
            env: settings.vars(),
        },
    );
    let policy = &plan.notifications.email;
    let (to, _) = notify::split_recipients(&policy.recipients);
    if !policy.enabled
        || to.is_empty()
        || !notify::should_send(policy, BuildState::Errored, row.previous_state)
    {
        return None;
    }
    let masker = settings.masker();
    let recorded = st.jobs(row.id).ok()?;
    let partial = st.partial_log(row.id).unwrap_or_default();
    let jobs = plan
        .jobs
        .iter()
        .map(|job| {
            let done = recorded.iter().find(|r| r.number == job.number);
            let result = done.map_or("errored", |r| r.result.as_str()).to_string();
            // A job that never recorded its end was running: its log is the tail of
            // what the build had printed.
            let log = done.map_or(&partial[..], |r| &r.log[..]);
            MailJob {
                number: job.number.clone(),
                label: notify::job_label(job, &masker),
                tail: matches!(result.as_str(), "failed" | "errored")
                    .then(|| masker.mask_all(&notify::log_tail(log, 40))),
                seconds: done.map_or(0.0, |r| r.duration_ms as f64 / 1000.0),
                result,
                // An interrupted job's substitutes are in its log and reason.
                substituted: Vec::new(),
            }
        })
        .collect();
    let mut facts = MailFacts::about(
        &target.event,
        row.number,
        (BuildState::Errored, row.previous_state),
        &masker,
        cfg.public_url.as_deref(),
    );
    facts.seconds = row
        .finished_at
        .map_or(0.0, |f| (f - row.started_at).max(0) as f64);
    facts.jobs = jobs;
    facts.deploys = vec!["not run: runway stopped while this build was running".into()];
    let message = notify::message(&smtp.from, &to, &facts).ok()?;
    Some(notify::outbox_mail(row.id, &message, 0))
}
