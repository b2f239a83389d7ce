//! The statements both backends run alike, written once over `Backend::query` and
//! `Backend::execute` (plain SQL with `$1` placeholders): reading builds, setting a
//! build's state and texts, webhook deliveries and the mail outbox. What differs between
//! the backends (numbering under a lock, claims, transactions, the jobs' order) stays in
//! `sqlite.rs` and `postgres.rs`. A change to a build is announced to the other nodes
//! (PostgreSQL `NOTIFY`; nothing for SQLite).

use super::tasks::Value;
use super::{
    Backend, BuildRow, COLUMNS, OutboxMail, Status, StatusRow, StatusView, Store, StoreError,
    Superseded, Text, now,
};

/// What a new build does to the older builds of its line (its repository's branch, or
/// its pull request): the waiting ones are canceled (`$1` the time, `$2` the reason,
/// `$3` the repository, `$4` the branch, `$5` the pull request, `$6` the new build's
/// id); those taken but not started get the reason (`$1` the reason, `$2` the
/// repository, `$3` the branch, `$4` the new build's id, `$5` the pull request). The
/// line's columns as `db` finds them in an index: the waiting ones by
/// `builds_waiting`, the started ones among the few running.
pub(super) fn superseding(db: &dyn Backend) -> [String; 2] {
    let line = |branch: usize| {
        format!(
            "{} AND tag IS NULL AND {}",
            db.same("branch", branch),
            db.same("pull_request", 5)
        )
    };
    [
        format!(
            "UPDATE builds SET state = 'canceled', finished_at = $1, reason = $2
             WHERE repo = $3 AND {} AND state IN ('queued', 'awaiting_approval') AND id < $6
             RETURNING number",
            line(4)
        ),
        format!(
            "UPDATE builds SET reason = $1
             WHERE repo = $2 AND {} AND state = 'running' AND jobs_started = 0 AND id < $4
             RETURNING id, number",
            line(3)
        ),
    ]
}

/// A build row from its [`COLUMNS`].
fn build_of(r: Vec<Value>) -> Result<BuildRow, StoreError> {
    let mut it = r.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    let status = |v: Value| Status::parse(&v.text().unwrap_or_default()).map_err(StoreError::Data);
    let optional_status = |v: Value| {
        v.text()
            .map(|t| Status::parse(&t).map_err(StoreError::Data))
            .transpose()
    };
    Ok(BuildRow {
        id: next().int()?,
        repo: next().text().unwrap_or_default(),
        number: next().int()? as u64,
        branch: next().text(),
        tag: next().text(),
        commit: next().text().unwrap_or_default(),
        event: next().text().unwrap_or_default(),
        state: status(next())?,
        started_at: next().int()?,
        finished_at: next().opt_int()?,
        previous_state: optional_status(next())?,
        commit_range: next().text().unwrap_or_default(),
        reason: next().text(),
        message: next().text().unwrap_or_default(),
        author: next().text().unwrap_or_default(),
        mail: next().text().unwrap_or_default(),
        pull_request: super::pr_of(&next().text().unwrap_or_default()),
        request: super::request_of(&next().text().unwrap_or_default()),
        rerun: next().text().filter(|r| !r.is_empty()),
    })
}

impl Store {
    fn builds_where(&self, sql: &str, args: &[Value]) -> Result<Vec<BuildRow>, StoreError> {
        self.db()
            .query(&format!("SELECT {COLUMNS} FROM builds {sql}"), args)?
            .into_iter()
            .map(build_of)
            .collect()
    }

    fn announce_build(&self, id: i64) -> Result<(), StoreError> {
        self.db().notify(&id.to_string())
    }

    /// The build a delivery key made at or after `since`, by id.
    pub(super) fn delivery_build(&self, key: &str, since: i64) -> Result<Option<i64>, StoreError> {
        self.db()
            .query(
                "SELECT build_id FROM deliveries WHERE key = $1 AND at >= $2",
                &[key.into(), since.into()],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|v| v.int())
            .transpose()
    }

    /// Forgets the keys of deliveries older than `before` (a purge the power takes is
    /// done again by the next delivery: not waited for). The keys themselves are
    /// recorded with their build ([`NewBuild::delivered_as`]).
    pub fn forget_deliveries(&mut self, before: i64) -> Result<(), StoreError> {
        self.db()
            .execute_lazily("DELETE FROM deliveries WHERE at < $1", &[before.into()])?;
        Ok(())
    }

    /// Cancels the queued builds of `newer`'s repository and branch made before it,
    /// with `reason`; their numbers.
    pub(super) fn cancel_older(
        &self,
        newer: &BuildRow,
        reason: &str,
    ) -> Result<Superseded, StoreError> {
        // A pull request's builds supersede only that pull request's; a push's, the
        // branch's pushes.
        let pr = newer.pull_request.as_ref().map(|p| p.number as i64);
        let [cancel_waiting, mark_started] = superseding(&**self.db());
        let queued = self
            .db()
            .query(
                &cancel_waiting,
                &[
                    now().into(),
                    reason.into(),
                    newer.repo.as_str().into(),
                    newer.branch.as_deref().into(),
                    pr.into(),
                    newer.id.into(),
                ],
            )?
            .into_iter()
            .filter_map(|r| r.into_iter().next().map(|v| v.int().map(|n| n as u64)))
            .collect::<Result<Vec<u64>, StoreError>>()?;
        // Taken from the queue but no job started (every slot busy): canceled too, by
        // the node that follows it; the reason is set here, its end there.
        let waiting = self
            .db()
            .query(
                &mark_started,
                &[
                    reason.into(),
                    newer.repo.as_str().into(),
                    newer.branch.as_deref().into(),
                    newer.id.into(),
                    pr.into(),
                ],
            )?
            .into_iter()
            .map(|r| Ok((r[0].int()?, r[1].int()? as u64)))
            .collect::<Result<Vec<(i64, u64)>, StoreError>>()?;
        Ok(Superseded { queued, waiting })
    }

    /// Cancels the builds of pull request `number` of `repo` that have not ended (it was
    /// closed): those queued at once; those running get `reason` and are returned, for
    /// the node following each to cancel (`waiting`).
    pub fn cancel_pull(
        &mut self,
        repo: &str,
        number: u64,
        reason: &str,
    ) -> Result<Superseded, StoreError> {
        let queued = self
            .db()
            .query(
                "UPDATE builds SET state = 'canceled', finished_at = $1, reason = $2
                 WHERE repo = $3 AND pull_request = $4 AND state IN ('queued', 'awaiting_approval')
                 RETURNING id, number",
                &[
                    now().into(),
                    reason.into(),
                    repo.into(),
                    (number as i64).into(),
                ],
            )?
            .into_iter()
            .map(|r| Ok((r[0].int()?, r[1].int()? as u64)))
            .collect::<Result<Vec<(i64, u64)>, StoreError>>()?;
        for (id, _) in &queued {
            self.announce_build(*id)?;
        }
        let waiting = self
            .db()
            .query(
                "UPDATE builds SET reason = $1
                 WHERE repo = $2 AND pull_request = $3 AND state = 'running'
                 RETURNING id, number",
                &[reason.into(), repo.into(), (number as i64).into()],
            )?
            .into_iter()
            .map(|r| Ok((r[0].int()?, r[1].int()? as u64)))
            .collect::<Result<Vec<(i64, u64)>, StoreError>>()?;
        Ok(Superseded {
            queued: queued.into_iter().map(|(_, n)| n).collect(),
            waiting,
        })
    }

    /// Records that a build's first job started: a newer build of its branch no longer
    /// cancels it.
    pub fn jobs_started(&self, id: i64) -> Result<(), StoreError> {
        // Lost with the power, the build is resumed or errored by the node that
        // takes it over: no newer build cancels it meanwhile either way.
        self.db().execute_lazily(
            "UPDATE builds SET jobs_started = 1 WHERE id = $1 AND jobs_started = 0",
            &[id.into()],
        )?;
        Ok(())
    }

    /// Sets a build's state (ended unless queued or running) and, when given, its reason.
    pub fn set_state(
        &mut self,
        id: i64,
        state: Status,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        let finished = if state.is_active() {
            Value::Null
        } else {
            now().into()
        };
        self.db().execute(
            "UPDATE builds SET state = $1, reason = COALESCE($2, reason), finished_at = $3
             WHERE id = $4",
            &[state.as_str().into(), reason.into(), finished, id.into()],
        )?;
        self.announce_build(id)
    }

    /// Sets a build's text `column` (what the pages show of it: its author, what became
    /// of its mail), committed without waiting for the disk
    /// ([`Backend::execute_lazily`]).
    pub(super) fn set_text_lazily(
        &self,
        id: i64,
        column: Text,
        value: &str,
    ) -> Result<(), StoreError> {
        let sql = format!("UPDATE builds SET {} = $1 WHERE id = $2", column.name());
        self.db().execute_lazily(&sql, &[value.into(), id.into()])?;
        self.announce_build(id)
    }

    /// A build by row id.
    pub fn by_id(&self, id: i64) -> Result<Option<BuildRow>, StoreError> {
        Ok(self
            .builds_where("WHERE id = $1", &[id.into()])?
            .into_iter()
            .next())
    }

    /// The commits of `repo`'s pull requests' builds (runway's merges among them).
    pub fn pull_request_commits(
        &self,
        repo: &str,
    ) -> Result<std::collections::HashSet<String>, StoreError> {
        self.db()
            .query(
                "SELECT commit_sha FROM builds WHERE repo = $1 AND pull_request IS NOT NULL",
                &[repo.into()],
            )?
            .into_iter()
            .map(|r| {
                r.into_iter()
                    .next()
                    .and_then(|v| v.text())
                    .ok_or_else(|| StoreError::Data("a build without its commit".into()))
            })
            .collect()
    }

    /// Keeps a mail that could not be sent, for a retry at `next_at_ms`.
    pub fn queue_mail(
        &mut self,
        m: &OutboxMail,
        error: &str,
        next_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO outbox (build_id, sender, recipients, message, attempts, next_at_ms, last_error)
             VALUES ($1, $2, $3, $4, 1, $5, $6)",
            &[
                m.build_id.into(),
                m.sender.as_str().into(),
                m.recipients.join(",").as_str().into(),
                Value::Bytes(m.message.clone()),
                next_at_ms.into(),
                error.into(),
            ],
        )?;
        Ok(())
    }

    /// Puts build `build_id`'s status for `phase` in the status outbox, unless that
    /// phase has one already (another node, or this one, put it there): one post per
    /// phase however many nodes saw the change. True when it was added.
    pub fn queue_status(
        &mut self,
        build_id: i64,
        phase: &str,
        repo: &str,
        req: &crate::forge::StatusRequest,
    ) -> Result<bool, StoreError> {
        let added = self.db().query(
            "INSERT INTO statuses (build_id, phase, repo, url, body, sha, context, state)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
             ON CONFLICT (build_id, phase) DO NOTHING RETURNING id",
            &[
                build_id.into(),
                phase.into(),
                repo.into(),
                req.url.as_str().into(),
                req.body.as_str().into(),
                req.sha.as_str().into(),
                req.context.as_str().into(),
                req.state.as_str().into(),
            ],
        )?;
        Ok(!added.is_empty())
    }

    /// The oldest status due to be posted, claimed by this node until `until_ms` (no
    /// other node posts it meanwhile). A build's statuses go in the order they were
    /// put in: one waits while an older one of its build is not posted.
    pub fn claim_status(
        &mut self,
        now_ms: i64,
        until_ms: i64,
    ) -> Result<Option<StatusRow>, StoreError> {
        let rows = self.db().query(
            "UPDATE statuses SET claimed_until_ms = $2
             WHERE id = (SELECT id FROM statuses s WHERE outcome = 'pending' AND next_at_ms <= $1
                           AND claimed_until_ms <= $1
                           AND NOT EXISTS (SELECT 1 FROM statuses o WHERE o.build_id = s.build_id
                                             AND o.id < s.id AND o.outcome = 'pending')
                           ORDER BY id LIMIT 1)
               AND claimed_until_ms <= $1
             RETURNING id, build_id, repo, url, body, attempts",
            &[now_ms.into(), until_ms.into()],
        )?;
        rows.into_iter()
            .next()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(StatusRow {
                    id: next().int()?,
                    build_id: next().int()?,
                    repo: next().text().unwrap_or_default(),
                    url: next().text().unwrap_or_default(),
                    body: next().text().unwrap_or_default(),
                    attempts: next().int()? as u32,
                })
            })
            .transpose()
    }

    /// Records a post's outcome: posted; failed for good (`retry_at` None); or failed,
    /// to be tried again at `retry_at`, unless the build has a newer status (which
    /// would wait behind it): then it is superseded.
    pub fn status_tried(
        &mut self,
        id: i64,
        result: Result<(), &str>,
        retry_at: Option<i64>,
    ) -> Result<(), StoreError> {
        match (result, retry_at) {
            (Ok(()), _) => self.db().execute(
                "UPDATE statuses SET outcome = 'posted', attempts = attempts + 1, last_error = ''
                 WHERE id = $1",
                &[id.into()],
            )?,
            (Err(e), at) => self.db().execute(
                "UPDATE statuses SET attempts = attempts + 1, last_error = $2,
                   next_at_ms = $3, claimed_until_ms = 0,
                   outcome = CASE WHEN $4 = 1 THEN 'pending' ELSE 'failed' END
                 WHERE id = $1",
                &[
                    id.into(),
                    e.into(),
                    at.unwrap_or(0).into(),
                    i64::from(at.is_some()).into(),
                ],
            )?,
        };
        self.db().execute(
            "UPDATE statuses SET outcome = 'superseded'
             WHERE id = $1 AND outcome = 'pending'
               AND EXISTS (SELECT 1 FROM statuses n WHERE n.build_id = statuses.build_id
                             AND n.id > statuses.id)",
            &[id.into()],
        )?;
        Ok(())
    }

    /// When the next status not yet posted is due (ms), if any is waiting.
    pub fn next_status_at(&self) -> Result<Option<i64>, StoreError> {
        let rows = self.db().query(
            "SELECT MIN(CASE WHEN claimed_until_ms > next_at_ms THEN claimed_until_ms ELSE next_at_ms END)
             FROM statuses WHERE outcome = 'pending'",
            &[],
        )?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|v| v.opt_int())
            .transpose()
            .map(Option::flatten)
    }

    pub(super) fn approve_awaiting(&mut self, id: i64, by: &str) -> Result<bool, StoreError> {
        let changed = self.db().execute(
            "UPDATE builds SET state = 'queued', reason = $2
             WHERE id = $1 AND state = 'awaiting_approval'",
            &[id.into(), format!("approved by {by}").as_str().into()],
        )?;
        if changed > 0 {
            self.announce_build(id)?;
        }
        Ok(changed > 0)
    }

    /// Whether cron `period` of `repo`'s `branch` is due at `now` (seconds), taking it if
    /// so: its next run is then `now + every`. A cron never run is due at once; one
    /// whose runs were missed (every node down) runs once, not once per missed run.
    /// One statement: of several nodes asking at once, one takes it.
    pub fn take_cron(
        &mut self,
        repo: &str,
        branch: &str,
        period: &str,
        now: i64,
        every: i64,
    ) -> Result<bool, StoreError> {
        self.db().execute(
            "INSERT INTO crons (repo, branch, period, next_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (repo, branch, period) DO NOTHING",
            &[repo.into(), branch.into(), period.into(), now.into()],
        )?;
        let taken = self.db().execute(
            "UPDATE crons SET next_at = $4, last_run = $5
             WHERE repo = $1 AND branch = $2 AND period = $3 AND next_at <= $5",
            &[
                repo.into(),
                branch.into(),
                period.into(),
                (now + every).into(),
                now.into(),
            ],
        )?;
        Ok(taken > 0)
    }

    /// When the next cron is due (seconds), if any is known.
    pub fn next_cron_at(&self) -> Result<Option<i64>, StoreError> {
        let rows = self.db().query("SELECT MIN(next_at) FROM crons", &[])?;
        rows.into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|v| v.opt_int())
            .transpose()
            .map(Option::flatten)
    }

    /// Whether `repo`'s `branch` had a build (not a pull request's) started since `since`.
    pub fn built_since(&self, repo: &str, branch: &str, since: i64) -> Result<bool, StoreError> {
        Ok(!self
            .builds_where(
                "WHERE repo = $1 AND branch = $2 AND pull_request IS NULL AND started_at >= $3
                 LIMIT 1",
                &[repo.into(), branch.into(), since.into()],
            )?
            .is_empty())
    }

    /// Records the merge a pull request's build runs on, made once its repository
    /// could be read (the delivery was queued before): its commit, the pull request as
    /// merged and the range.
    pub fn set_merge(&mut self, row: &BuildRow) -> Result<(), StoreError> {
        let pr = super::pr_columns(row.pull_request.as_ref()).1;
        self.db().execute(
            "UPDATE builds SET commit_sha = $1, pr = $2, commit_range = $3 WHERE id = $4",
            &[
                row.commit.as_str().into(),
                pr.as_str().into(),
                row.commit_range.as_str().into(),
                row.id.into(),
            ],
        )?;
        self.announce_build(row.id)
    }

    /// Asks the node running build `id` to cancel it (`reason` recorded now): told at
    /// once through the database where it can (PostgreSQL), and seen by the node's next
    /// look at its builds in any case ([`Store::cancels_requested`]).
    pub fn request_cancel(&mut self, id: i64, reason: &str) -> Result<(), StoreError> {
        self.db().execute(
            "UPDATE builds SET cancel_requested = 1, reason = $2 WHERE id = $1 AND state = 'running'",
            &[id.into(), reason.into()],
        )?;
        self.announce_cancel(id)
    }

    /// The running builds of node `node` someone asked to cancel.
    pub fn cancels_requested(&self, node: &str) -> Result<Vec<i64>, StoreError> {
        self.db()
            .query(
                "SELECT id FROM builds WHERE state = 'running' AND node = $1 AND cancel_requested = 1",
                &[node.into()],
            )?
            .into_iter()
            .map(|r| r.into_iter().next().unwrap_or(Value::Null).int())
            .collect()
    }

    /// Keeps `job` of build `id` as attempt `attempt`, takes it out of the build's jobs
    /// and queues the build to run it again (`rerun`).
    pub(super) fn keep_attempt(
        &mut self,
        id: i64,
        job: &super::JobRow,
        attempt: u32,
    ) -> Result<(), StoreError> {
        self.db().execute(
            "INSERT INTO job_attempts (build_id, number, attempt, result, reason, duration_ms, log, line_times)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                id.into(),
                job.number.as_str().into(),
                i64::from(attempt).into(),
                job.result.as_str().into(),
                job.reason.as_str().into(),
                (job.duration_ms as i64).into(),
                Value::Bytes(job.log.clone()),
                super::times_column(&job.times).as_str().into(),
            ],
        )?;
        self.db().execute(
            "DELETE FROM jobs WHERE build_id = $1 AND number = $2",
            &[id.into(), job.number.as_str().into()],
        )?;
        self.db().execute(
            "UPDATE builds SET state = 'queued', finished_at = NULL, reason = NULL, jobs_started = 0,
               cancel_requested = 0, rerun = $2
             WHERE id = $1",
            &[id.into(), job.number.as_str().into()],
        )?;
        self.announce_build(id)
    }

    /// The earlier attempts of build `id`'s jobs, by job and attempt.
    pub fn attempts(&self, id: i64) -> Result<Vec<super::Attempt>, StoreError> {
        self.db()
            .query(
                "SELECT number, attempt, result, reason, duration_ms FROM job_attempts
                 WHERE build_id = $1 ORDER BY number, attempt",
                &[id.into()],
            )?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(super::Attempt {
                    number: next().text().unwrap_or_default(),
                    attempt: next().int()? as u32,
                    result: next().text().unwrap_or_default(),
                    reason: next().text().unwrap_or_default(),
                    duration_ms: next().int()? as u64,
                })
            })
            .collect()
    }

    /// The log of attempt `attempt` of build `id`'s job `number`.
    pub fn attempt_log(
        &self,
        id: i64,
        number: &str,
        attempt: u32,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .db()
            .query(
                "SELECT log FROM job_attempts WHERE build_id = $1 AND number = $2 AND attempt = $3",
                &[id.into(), number.into(), i64::from(attempt).into()],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|v| v.bytes()))
    }

    /// The running builds node `node` holds.
    pub fn held_by(&self, node: &str) -> Result<Vec<BuildRow>, StoreError> {
        self.builds_where(
            "WHERE state = 'running' AND node = $1 ORDER BY id",
            &[node.into()],
        )
    }

    /// Build `build_id`'s statuses, oldest first.
    pub fn statuses_of(&self, build_id: i64) -> Result<Vec<StatusView>, StoreError> {
        self.db()
            .query(
                "SELECT context, state, sha, outcome, attempts, last_error FROM statuses
                 WHERE build_id = $1 ORDER BY id",
                &[build_id.into()],
            )?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(StatusView {
                    context: next().text().unwrap_or_default(),
                    state: next().text().unwrap_or_default(),
                    sha: next().text().unwrap_or_default(),
                    outcome: next().text().unwrap_or_default(),
                    attempts: next().int()? as u32,
                    last_error: next().text().unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Mails due for another try.
    pub fn due_mails(&self, now_ms: i64) -> Result<Vec<OutboxMail>, StoreError> {
        self.db()
            .query(
                "SELECT id, build_id, sender, recipients, message, attempts FROM outbox
                 WHERE state = 'pending' AND next_at_ms <= $1 ORDER BY id",
                &[now_ms.into()],
            )?
            .into_iter()
            .map(|r| {
                let mut it = r.into_iter();
                let mut next = || it.next().unwrap_or(Value::Null);
                Ok(OutboxMail {
                    id: next().int()?,
                    build_id: next().int()?,
                    sender: next().text().unwrap_or_default(),
                    recipients: next()
                        .text()
                        .unwrap_or_default()
                        .split(',')
                        .map(str::to_string)
                        .collect(),
                    message: next().bytes(),
                    attempts: next().int()? as u32,
                })
            })
            .collect()
    }

    /// Records a retry's outcome: sent, or failed again (given up after `give_up` tries).
    pub fn mail_tried(
        &mut self,
        id: i64,
        result: Result<(), &str>,
        next_at_ms: i64,
        give_up: u32,
    ) -> Result<(), StoreError> {
        match result {
            Ok(()) => self.db().execute(
                "UPDATE outbox SET state = 'sent' WHERE id = $1",
                &[id.into()],
            )?,
            Err(e) => self.db().execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = $2, next_at_ms = $3,
                   state = CASE WHEN attempts + 1 >= $4 THEN 'failed' ELSE 'pending' END
                 WHERE id = $1",
                &[
                    id.into(),
                    e.into(),
                    next_at_ms.into(),
                    i64::from(give_up).into(),
                ],
            )?,
        };
        Ok(())
    }

    /// Builds newest first (by id), filtered, made before build `before`, at most `limit`.
    pub(super) fn builds_filtered(
        &self,
        repo: Option<&str>,
        branch: Option<&str>,
        before: Option<i64>,
        limit: usize,
        visible: Option<&[String]>,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut args = vec![
            repo.into(),
            branch.into(),
            before.map_or(Value::Null, Value::Int),
            (limit.min(i64::MAX as usize) as i64).into(),
        ];
        // Only these repositories' builds (a reader's): one placeholder each.
        let only = match visible {
            None => String::new(),
            Some([]) => "AND 1 = 0".into(),
            Some(repos) => {
                let marks: Vec<String> = repos
                    .iter()
                    .map(|r| {
                        args.push(r.as_str().into());
                        format!("${}", args.len())
                    })
                    .collect();
                format!("AND repo IN ({})", marks.join(", "))
            }
        };
        self.builds_where(
            &format!(
                "WHERE (CAST($1 AS TEXT) IS NULL OR repo = $1)
               AND (CAST($2 AS TEXT) IS NULL OR branch = $2)
               AND (CAST($3 AS BIGINT) IS NULL OR id < $3) {only}
             ORDER BY id DESC LIMIT $4"
            ),
            &args,
        )
    }

    /// The state of the last finished push build of `repo`'s `branch` (a badge's).
    pub fn branch_state(&self, repo: &str, branch: &str) -> Result<Option<Status>, StoreError> {
        Ok(self
            .builds_where(
                "WHERE repo = $1 AND branch = $2 AND pull_request IS NULL
                   AND finished_at IS NOT NULL
                 ORDER BY id DESC LIMIT 1",
                &[repo.into(), branch.into()],
            )?
            .into_iter()
            .next()
            .map(|b| b.state))
    }

    /// The latest push build (not a pull request's) of each branch of `repo`, newest
    /// first.
    pub fn branches_of(&self, repo: &str) -> Result<Vec<BuildRow>, StoreError> {
        self.builds_where(
            "WHERE id IN (SELECT MAX(id) FROM builds WHERE repo = $1 AND branch IS NOT NULL
                            AND tag IS NULL AND pull_request IS NULL GROUP BY branch)
             ORDER BY id DESC",
            &[repo.into()],
        )
    }

    /// Each repository's latest build, by repository.
    pub fn latest_per_repo(&self) -> Result<Vec<BuildRow>, StoreError> {
        self.builds_where(
            "WHERE id IN (SELECT MAX(id) FROM builds GROUP BY repo) ORDER BY repo",
            &[],
        )
    }

    /// Build `number` (of `repo` when given; the last started of that number otherwise).
    pub fn build(&self, repo: Option<&str>, number: u64) -> Result<Option<BuildRow>, StoreError> {
        let number = (number as i64).into();
        // With its repository, found by the (repo, number) key; without (the command
        // line's, once), every build of that number is looked at.
        let found = match repo {
            Some(repo) => {
                self.builds_where("WHERE repo = $1 AND number = $2", &[repo.into(), number])?
            }
            None => self.builds_where(
                "WHERE number = $1 ORDER BY started_at DESC, id DESC LIMIT 1",
                &[number],
            )?,
        };
        Ok(found.into_iter().next())
    }

    /// The repositories with a build of this number.
    pub fn repos_with_build(&self, number: u64) -> Result<Vec<String>, StoreError> {
        Ok(self
            .db()
            .query(
                "SELECT DISTINCT repo FROM builds WHERE number = $1 ORDER BY repo",
                &[(number as i64).into()],
            )?
            .into_iter()
            .filter_map(|r| r.into_iter().next().and_then(|v| v.text()))
            .collect())
    }

    /// Whether a build recorded its jobs.
    pub fn has_jobs(&self, build_id: i64) -> Result<bool, StoreError> {
        Ok(self
            .db()
            .query(
                "SELECT COUNT(*) FROM jobs WHERE build_id = $1",
                &[build_id.into()],
            )?
            .into_iter()
            .next()
            .and_then(|r| r.into_iter().next())
            .map(|v| v.int())
            .transpose()?
            .is_some_and(|n| n > 0))
    }
}
