//! Build history in SQLite (`$RUNWAY_STATE_DIR/runway.db`): every recorded build with
//! its jobs and logs, numbered per repository. "Change" in the email rules means what
//! it meant on Travis because each build remembers the previous finished build of its
//! branch when it is created.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};

use crate::build::BuildState;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("build store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// The state directory could not be made.
    #[error("build store: {0}")]
    Io(#[from] std::io::Error),
}

/// A build being recorded.
#[derive(Clone, Debug, Default)]
pub struct NewBuild {
    /// `owner/repo`.
    pub repo: String,
    /// Branch (None for tags).
    pub branch: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Commit sha.
    pub commit: String,
    /// push, pull_request, api, cron.
    pub event: String,
    /// Commit message.
    pub message: String,
    /// `first...last` of the push.
    pub commit_range: String,
}

impl NewBuild {
    /// The record of a build of `event` (a tag's build has no branch).
    pub fn of(event: &crate::event::BuildEvent) -> NewBuild {
        NewBuild {
            repo: event.repo.clone(),
            branch: event.branch.clone().filter(|_| event.tag.is_none()),
            tag: event.tag.clone(),
            commit: event.commit.clone(),
            event: event.event.as_str().to_string(),
            message: event.commit_message.clone(),
            commit_range: event.commit_range.clone(),
        }
    }
}

/// A recorded build.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct BuildRow {
    /// Row id.
    pub id: i64,
    /// `owner/repo`.
    pub repo: String,
    /// Number within the repository.
    pub number: u64,
    /// Branch.
    pub branch: Option<String>,
    /// Tag.
    pub tag: Option<String>,
    /// Commit.
    pub commit: String,
    /// Event.
    pub event: String,
    /// queued, running, passed, failed, errored, canceled.
    pub state: Status,
    /// Unix seconds.
    pub started_at: i64,
    /// Unix seconds, when finished.
    pub finished_at: Option<i64>,
    /// The previous finished build of the branch, when this one was created.
    pub previous_state: Option<Status>,
    /// `first...last` of the push.
    pub commit_range: String,
    /// Why it ended as it did, when runway says (interrupted, superseded, canceled).
    pub reason: Option<String>,
    /// The commit message.
    pub message: String,
    /// The commit's author (`Name`), once the build has read the commit.
    pub author: String,
    /// What became of the build's mail (`sent to a@example.com`, `not sent (…)`).
    pub mail: String,
}

/// A recorded job.
#[derive(Clone, Debug, serde::Serialize)]
pub struct JobRow {
    /// `N.i`.
    pub number: String,
    /// `name:`.
    pub name: Option<String>,
    /// The job's env, as `A=1 B=2`.
    pub env: String,
    /// passed, failed, errored, canceled.
    pub result: String,
    /// Why it ended so (`` `make test` exited 2 ``, `install failed: …`), masked.
    pub reason: String,
    /// Milliseconds.
    pub duration_ms: u64,
    /// The stage it ran in (`test`, `deploy`…).
    pub stage: String,
    /// What each of its deploys did, or why it was skipped (`s3: dry run (no --deploy)`).
    pub deploys: Vec<String>,
    /// The log (secrets already masked).
    #[serde(skip)]
    pub log: Vec<u8>,
}

impl JobRow {
    /// True when `spec` names this job of build `build`: `2` or `12.2`.
    pub fn is(&self, build: u64, spec: &str) -> bool {
        self.number == spec || self.number == format!("{build}.{spec}")
    }
}

/// A mail waiting in the outbox.
#[derive(Clone, Debug)]
pub struct OutboxMail {
    /// Row id (0 before it is stored).
    pub id: i64,
    /// The build it is about.
    pub build_id: i64,
    /// The envelope sender.
    pub sender: String,
    /// The envelope recipients.
    pub recipients: Vec<String>,
    /// The whole message, as sent.
    pub message: Vec<u8>,
    /// Tries so far.
    pub attempts: u32,
}

/// The build history.
pub struct Store {
    conn: Connection,
    dir: PathBuf,
}

/// Where running server jobs record their process groups (see
/// `job::shell::end_orphans`).
pub fn process_dir(state_dir: &Path) -> PathBuf {
    state_dir.join("processes")
}

/// `$RUNWAY_STATE_DIR`, else `$XDG_STATE_HOME/runway`, else `~/.local/state/runway`.
pub fn default_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RUNWAY_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(x) = std::env::var_os("XDG_STATE_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("runway");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir);
    home.join(".local/state/runway")
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS builds (
  id INTEGER PRIMARY KEY,
  repo TEXT NOT NULL,
  number INTEGER NOT NULL,
  branch TEXT, tag TEXT,
  commit_sha TEXT NOT NULL,
  event TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  finished_at INTEGER,
  previous_state TEXT,
  commit_range TEXT NOT NULL DEFAULT '',
  reason TEXT,
  author TEXT NOT NULL DEFAULT '',
  mail TEXT NOT NULL DEFAULT '',
  UNIQUE (repo, number)
);
CREATE INDEX IF NOT EXISTS builds_by_repo ON builds (repo, id);
CREATE TABLE IF NOT EXISTS outbox (
  id INTEGER PRIMARY KEY,
  build_id INTEGER NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  message BLOB NOT NULL,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_at_ms INTEGER NOT NULL,
  last_error TEXT,
  state TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE IF NOT EXISTS deliveries (
  key TEXT PRIMARY KEY,
  build_id INTEGER NOT NULL,
  at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS jobs (
  build_id INTEGER NOT NULL REFERENCES builds(id),
  number TEXT NOT NULL,
  name TEXT,
  env TEXT NOT NULL,
  result TEXT NOT NULL,
  duration_ms INTEGER NOT NULL,
  log BLOB NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  stage TEXT NOT NULL DEFAULT '',
  deploys TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (build_id, number)
);
";

/// Where a recorded build is: waiting, running, or ended with its result. One type for
/// the store, the server and the mail (stored as its lower-case name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a worker.
    #[default]
    Queued,
    /// Being run.
    Running,
    /// Ended: every required job passed.
    Passed,
    /// Ended: a required job failed.
    Failed,
    /// Ended: a required job (or the build itself) errored.
    Errored,
    /// Ended: canceled.
    Canceled,
}

impl Status {
    /// The stored (and shown) name.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Queued => "queued",
            Status::Running => "running",
            Status::Passed => "passed",
            Status::Failed => "failed",
            Status::Errored => "errored",
            Status::Canceled => "canceled",
        }
    }

    /// The status a stored name stands for.
    pub fn parse(name: &str) -> Result<Status, String> {
        Ok(match name {
            "queued" => Status::Queued,
            "running" => Status::Running,
            "passed" => Status::Passed,
            "failed" => Status::Failed,
            "errored" => Status::Errored,
            "canceled" => Status::Canceled,
            other => return Err(format!("unknown build state \"{other}\"")),
        })
    }

    /// Queued or running: not ended yet.
    pub fn is_active(self) -> bool {
        matches!(self, Status::Queued | Status::Running)
    }
}

/// Read from its stored name (an unknown name is a conversion error).
impl rusqlite::types::FromSql for Status {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Status> {
        let name = v.as_str()?;
        Status::parse(name).map_err(|e| rusqlite::types::FromSqlError::Other(e.into()))
    }
}

impl From<crate::build::BuildState> for Status {
    fn from(s: crate::build::BuildState) -> Status {
        match s {
            crate::build::BuildState::Passed => Status::Passed,
            crate::build::BuildState::Failed => Status::Failed,
            crate::build::BuildState::Errored => Status::Errored,
            crate::build::BuildState::Canceled => Status::Canceled,
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

fn row(r: &rusqlite::Row) -> rusqlite::Result<BuildRow> {
    Ok(BuildRow {
        id: r.get(0)?,
        repo: r.get(1)?,
        number: r.get::<_, i64>(2)? as u64,
        branch: r.get(3)?,
        tag: r.get(4)?,
        commit: r.get(5)?,
        event: r.get(6)?,
        state: r.get(7)?,
        started_at: r.get(8)?,
        finished_at: r.get(9)?,
        previous_state: r.get(10)?,
        commit_range: r.get(11)?,
        reason: r.get(12)?,
        message: r.get(13)?,
        author: r.get(14)?,
        mail: r.get(15)?,
    })
}

const COLUMNS: &str = "id, repo, number, branch, tag, commit_sha, event, state, started_at, finished_at, \
     previous_state, commit_range, reason, message, author, mail";

impl Store {
    /// Opens (and creates) the store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        let conn = Connection::open(dir.join("runway.db"))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch("PRAGMA journal_mode=WAL;")?;
        conn.execute_batch(SCHEMA)?;
        // Stores made before these columns get them (empty for old rows).
        for (table, column) in [
            ("jobs", "reason"),
            ("builds", "author"),
            ("jobs", "stage"),
            ("jobs", "deploys"),
            ("builds", "mail"),
        ] {
            let has: bool = conn.query_row(
                "SELECT EXISTS (SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2)",
                params![table, column],
                |r| r.get(0),
            )?;
            if !has {
                conn.execute_batch(&format!(
                    "ALTER TABLE {table} ADD COLUMN {column} TEXT NOT NULL DEFAULT '';"
                ))?;
            }
        }
        Ok(Store {
            conn,
            dir: dir.to_path_buf(),
        })
    }

    /// Records a new running build; returns it with its number and the state of the
    /// previous finished build of the same branch (or tag).
    pub fn begin(&mut self, b: &NewBuild) -> Result<BuildRow, StoreError> {
        self.insert(b, "running")
    }

    /// The build a webhook delivery with this key (`github:<X-GitHub-Delivery>`) made
    /// at or after `since` (seconds), if any: a replay or a redelivery.
    pub fn delivery(&self, key: &str, since: i64) -> Result<Option<BuildRow>, StoreError> {
        let id: Option<i64> = self
            .conn
            .query_row(
                "SELECT build_id FROM deliveries WHERE key = ?1 AND at >= ?2",
                params![key, since],
                |r| r.get(0),
            )
            .optional()?;
        match id {
            Some(id) => self.by_id(id),
            None => Ok(None),
        }
    }

    /// Remembers that the delivery `key` made build `build_id`, forgetting deliveries
    /// older than `forget_before` (seconds) so the table stays the window's size.
    pub fn record_delivery(
        &mut self,
        key: &str,
        build_id: i64,
        forget_before: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "DELETE FROM deliveries WHERE at < ?1",
            params![forget_before],
        )?;
        self.conn.execute(
            "INSERT OR REPLACE INTO deliveries (key, build_id, at) VALUES (?1, ?2, ?3)",
            params![key, build_id, now()],
        )?;
        Ok(())
    }

    /// Seconds since the epoch, as the store records times.
    pub fn now() -> i64 {
        now()
    }

    /// Queues a build (durably: it is in the database when this returns).
    pub fn enqueue(&mut self, b: &NewBuild) -> Result<BuildRow, StoreError> {
        self.insert(b, "queued")
    }

    fn insert(&mut self, b: &NewBuild, state: &str) -> Result<BuildRow, StoreError> {
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        let number: i64 = tx.query_row(
            "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE repo = ?1",
            params![b.repo],
            |r| r.get(0),
        )?;
        let previous: Option<String> = tx
            .query_row(
                "SELECT state FROM builds WHERE repo = ?1 AND branch IS ?2 AND tag IS ?3
                 AND finished_at IS NOT NULL ORDER BY number DESC LIMIT 1",
                params![b.repo, b.branch, b.tag],
                |r| r.get(0),
            )
            .optional()?;
        tx.execute(
            "INSERT INTO builds (repo, number, branch, tag, commit_sha, event, message, state, started_at,
                                 previous_state, commit_range)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            params![b.repo, number, b.branch, b.tag, b.commit, b.event, b.message, state, now(), previous, b.commit_range],
        )?;
        let id = tx.last_insert_rowid();
        tx.commit()?;
        self.get(id).map(|r| r.expect("just inserted"))
    }

    /// Takes the oldest queued build and marks it running; `None` when the queue is empty.
    /// One statement, so two workers never take the same build.
    pub fn claim(&mut self) -> Result<Option<BuildRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "UPDATE builds SET state = 'running', started_at = ?1
                     WHERE id = (SELECT id FROM builds WHERE state = 'queued' ORDER BY id LIMIT 1)
                     RETURNING {COLUMNS}"
                ),
                params![now()],
                row,
            )
            .optional()?)
    }

    /// Where a running server build's log is written as it goes
    /// (`STATE_DIR/logs/ID.log`). It is removed a minute after the build records its
    /// jobs (`runway log --follow` reads its end meanwhile), so it remains only for a
    /// build a crash interrupted (its log up to the crash) or one that ended before its
    /// first job.
    pub fn partial_log_path(&self, build_id: i64) -> PathBuf {
        self.dir.join("logs").join(format!("{build_id}.log"))
    }

    /// Creates (empty) the partial log of a build that starts running.
    pub fn create_partial_log(&self, build_id: i64) -> Result<std::fs::File, StoreError> {
        let path = self.partial_log_path(build_id);
        std::fs::create_dir_all(self.dir.join("logs"))?;
        Ok(std::fs::File::create(path)?)
    }

    /// The partial log of a build, if one remains.
    pub fn partial_log(&self, build_id: i64) -> Option<Vec<u8>> {
        std::fs::read(self.partial_log_path(build_id)).ok()
    }

    /// Removes a build's partial log (its jobs' logs are recorded).
    pub fn remove_partial_log(&self, build_id: i64) {
        let _ = std::fs::remove_file(self.partial_log_path(build_id));
    }

    /// Removes the partial logs of builds that ended with their jobs recorded (the
    /// ones a stopped server had not removed yet). Returns how many.
    pub fn remove_ended_partial_logs(&self) -> Result<usize, StoreError> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) else {
            return Ok(0);
        };
        let mut removed = 0;
        for e in entries.flatten() {
            let name = e.file_name();
            let Some(id) = name
                .to_str()
                .and_then(|n| n.strip_suffix(".log"))
                .and_then(|n| n.parse::<i64>().ok())
            else {
                continue;
            };
            let ended = self.get(id)?.is_some_and(|r| !r.state.is_active());
            if ended && self.has_jobs(id)? {
                self.remove_partial_log(id);
                removed += 1;
            }
        }
        Ok(removed)
    }

    /// A build's whole log: its jobs' logs once recorded, else its partial log (a
    /// running build, or one a crash interrupted), else nothing.
    pub fn build_log(&self, build_id: i64, jobs: &[JobRow]) -> Vec<u8> {
        if jobs.is_empty() {
            self.partial_log(build_id).unwrap_or_default()
        } else {
            jobs.iter().flat_map(|j| j.log.iter().copied()).collect()
        }
    }

    /// After a crash or restart: builds left running are errored, with the reason.
    /// Returns their numbers.
    pub fn mark_interrupted(&mut self) -> Result<Vec<(String, u64)>, StoreError> {
        let mut st = self.conn.prepare(
            "UPDATE builds SET state = 'errored', finished_at = ?1,
               reason = 'interrupted: runway stopped while this build was running; runway restart N runs it again'
             WHERE state = 'running' RETURNING repo, number",
        )?;
        let rows = st.query_map(params![now()], |r| {
            Ok((r.get(0)?, r.get::<_, i64>(1)? as u64))
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Cancels queued builds of the same repository and branch older than `newer`
    /// (auto-cancellation). Returns their numbers.
    pub fn cancel_superseded(&mut self, newer: &BuildRow) -> Result<Vec<u64>, StoreError> {
        let mut st = self.conn.prepare(
            "UPDATE builds SET state = 'canceled', finished_at = ?1, reason = ?2
             WHERE repo = ?3 AND branch IS ?4 AND tag IS NULL AND state = 'queued' AND id < ?5
             RETURNING number",
        )?;
        let reason = format!("superseded by build #{}", newer.number);
        let rows = st.query_map(
            params![now(), reason, newer.repo, newer.branch, newer.id],
            |r| Ok(r.get::<_, i64>(0)? as u64),
        )?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Ends a build that never ran (canceled while queued) or sets a reason.
    pub fn set_state(
        &mut self,
        id: i64,
        state: Status,
        reason: Option<&str>,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE builds SET state = ?1, reason = COALESCE(?2, reason),
               finished_at = CASE WHEN ?1 IN ('queued', 'running') THEN NULL ELSE ?3 END
             WHERE id = ?4",
            params![state.as_str(), reason, now(), id],
        )?;
        Ok(())
    }

    /// Queues a finished build again under its number (`runway restart N`); its old
    /// jobs are dropped.
    pub fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute("DELETE FROM jobs WHERE build_id = ?1", params![id])?;
        tx.execute(
            "UPDATE builds SET state = 'queued', finished_at = NULL, reason = NULL WHERE id = ?1",
            params![id],
        )?;
        tx.commit()?;
        Ok(())
    }

    /// Records the commit's author once the build has read the commit.
    pub fn set_author(&mut self, id: i64, author: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE builds SET author = ?1 WHERE id = ?2",
            params![author, id],
        )?;
        Ok(())
    }

    /// A build by row id.
    pub fn by_id(&self, id: i64) -> Result<Option<BuildRow>, StoreError> {
        self.get(id)
    }

    /// Keeps a mail that could not be sent, for the server to retry later.
    pub fn queue_mail(
        &mut self,
        m: &OutboxMail,
        error: &str,
        next_at_ms: i64,
    ) -> Result<(), StoreError> {
        self.conn.execute(
            "INSERT INTO outbox (build_id, sender, recipients, message, attempts, next_at_ms, last_error)
             VALUES (?1, ?2, ?3, ?4, 1, ?5, ?6)",
            params![m.build_id, m.sender, m.recipients.join(","), m.message, next_at_ms, error],
        )?;
        Ok(())
    }

    /// Mails due for another try.
    pub fn due_mails(&self, now_ms: i64) -> Result<Vec<OutboxMail>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT id, build_id, sender, recipients, message, attempts FROM outbox
             WHERE state = 'pending' AND next_at_ms <= ?1 ORDER BY id",
        )?;
        let rows = st.query_map(params![now_ms], |r| {
            Ok(OutboxMail {
                id: r.get(0)?,
                build_id: r.get(1)?,
                sender: r.get(2)?,
                recipients: r
                    .get::<_, String>(3)?
                    .split(',')
                    .map(str::to_string)
                    .collect(),
                message: r.get(4)?,
                attempts: r.get::<_, i64>(5)? as u32,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
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
            Ok(()) => self.conn.execute(
                "UPDATE outbox SET state = 'sent' WHERE id = ?1",
                params![id],
            )?,
            Err(e) => self.conn.execute(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, next_at_ms = ?3,
                   state = CASE WHEN attempts + 1 >= ?4 THEN 'failed' ELSE 'pending' END
                 WHERE id = ?1",
                params![id, e, next_at_ms, give_up],
            )?,
        };
        Ok(())
    }

    /// Records how a build ended, with its jobs.
    pub fn finish(
        &mut self,
        id: i64,
        state: BuildState,
        jobs: &[JobRow],
    ) -> Result<(), StoreError> {
        let tx = self.conn.transaction()?;
        tx.execute(
            "UPDATE builds SET state = ?1, finished_at = ?2 WHERE id = ?3",
            params![state.as_str(), now(), id],
        )?;
        for j in jobs {
            tx.execute(
                "INSERT OR REPLACE INTO jobs (build_id, number, name, env, result, duration_ms, log, reason, stage, deploys)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    id,
                    j.number,
                    j.name,
                    j.env,
                    j.result,
                    j.duration_ms as i64,
                    j.log,
                    j.reason,
                    j.stage,
                    j.deploys.join("\n")
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn get(&self, id: i64) -> Result<Option<BuildRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!("SELECT {COLUMNS} FROM builds WHERE id = ?1"),
                params![id],
                row,
            )
            .optional()?)
    }

    /// Builds, newest first by when each was made (not when it last started: a restarted
    /// build #4 stays below #5), optionally of one repository and/or branch.
    pub fn builds(
        &self,
        repo: Option<&str>,
        branch: Option<&str>,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM builds WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR branch = ?2)
             ORDER BY id DESC"
        ))?;
        let rows = st.query_map(params![repo, branch], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// A page of builds, newest first (as [`Store::builds`]): at most `limit`, made
    /// before the build with id `before` when given (keyset paging: as fast on the
    /// hundredth page as on the first).
    pub fn builds_page(
        &self,
        repo: Option<&str>,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<BuildRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM builds WHERE (?1 IS NULL OR repo = ?1) AND (?2 IS NULL OR id < ?2)
             ORDER BY id DESC LIMIT ?3"
        ))?;
        let rows = st.query_map(params![repo, before, limit as i64], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Each repository's latest build, by repository name.
    pub fn latest_per_repo(&self) -> Result<Vec<BuildRow>, StoreError> {
        let mut st = self.conn.prepare(&format!(
            "SELECT {COLUMNS} FROM builds WHERE id IN (SELECT MAX(id) FROM builds GROUP BY repo)
             ORDER BY repo"
        ))?;
        let rows = st.query_map([], row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Records what became of the build's mail.
    pub fn set_mail(&mut self, id: i64, mail: &str) -> Result<(), StoreError> {
        self.conn.execute(
            "UPDATE builds SET mail = ?1 WHERE id = ?2",
            params![mail, id],
        )?;
        Ok(())
    }

    /// One build by number (of `repo`, or of the only/most recent repository with it).
    pub fn build(&self, repo: Option<&str>, number: u64) -> Result<Option<BuildRow>, StoreError> {
        Ok(self
            .conn
            .query_row(
                &format!(
                    "SELECT {COLUMNS} FROM builds WHERE number = ?1 AND (?2 IS NULL OR repo = ?2)
                     ORDER BY started_at DESC, id DESC LIMIT 1"
                ),
                params![number as i64, repo],
                row,
            )
            .optional()?)
    }

    /// The repositories that have a build numbered `number`, sorted.
    pub fn repos_with_build(&self, number: u64) -> Result<Vec<String>, StoreError> {
        let mut st = self
            .conn
            .prepare("SELECT DISTINCT repo FROM builds WHERE number = ?1 ORDER BY repo")?;
        let repos = st
            .query_map(params![number as i64], |r| r.get(0))?
            .collect::<Result<Vec<String>, _>>()?;
        Ok(repos)
    }

    /// Whether a build has recorded its jobs (without reading their logs).
    pub fn has_jobs(&self, build_id: i64) -> Result<bool, StoreError> {
        Ok(self.conn.query_row(
            "SELECT EXISTS (SELECT 1 FROM jobs WHERE build_id = ?1)",
            params![build_id],
            |r| r.get(0),
        )?)
    }

    /// The jobs of a build.
    pub fn jobs(&self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        let mut st = self.conn.prepare(
            "SELECT number, name, env, result, duration_ms, log, reason, stage, deploys FROM jobs WHERE build_id = ?1 ORDER BY rowid",
        )?;
        let rows = st.query_map(params![build_id], |r| {
            Ok(JobRow {
                number: r.get(0)?,
                name: r.get(1)?,
                env: r.get(2)?,
                result: r.get(3)?,
                duration_ms: r.get::<_, i64>(4)? as u64,
                log: r.get(5)?,
                reason: r.get(6)?,
                stage: r.get(7)?,
                deploys: r.get::<_, String>(8)?.lines().map(str::to_string).collect(),
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

#[cfg(test)]
impl JobRow {
    /// Job 1.1, passed, for tests of what is stored.
    pub(crate) fn passed_for_tests() -> JobRow {
        JobRow {
            number: "1.1".into(),
            name: None,
            env: String::new(),
            result: "passed".into(),
            reason: "all script commands passed".into(),
            duration_ms: 1,
            stage: "test".into(),
            deploys: Vec::new(),
            log: b"job log".to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    /// A store made before jobs had a reason opens, and gains the column.
    #[test]
    fn an_older_store_gains_the_job_reason_column() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(dir.path().join("runway.db")).unwrap();
            conn.execute_batch(
                "CREATE TABLE jobs (build_id INTEGER NOT NULL, number TEXT NOT NULL, name TEXT,
                   env TEXT NOT NULL, result TEXT NOT NULL, duration_ms INTEGER NOT NULL,
                   log BLOB NOT NULL, PRIMARY KEY (build_id, number));
                 INSERT INTO jobs VALUES (1, '1.1', NULL, '', 'passed', 5, x'6869');",
            )
            .unwrap();
        }
        let st = Store::open(dir.path()).unwrap();
        let jobs = st.jobs(1).unwrap();
        assert_eq!(
            (jobs[0].result.as_str(), jobs[0].reason.as_str()),
            ("passed", "")
        );
    }

    /// issue 14: the list pages through thousands of builds by id (keyset), each
    /// repository's latest build leads it, and a job's stage, deploys and the build's
    /// mail are kept.
    #[test]
    fn builds_page_by_id_and_jobs_keep_stage_deploys_and_mail() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path()).unwrap();
        let new = |repo: &str| NewBuild {
            repo: repo.into(),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let ids: Vec<i64> = (0..120)
            .map(|i| {
                st.begin(&new(if i % 3 == 0 { "o/b" } else { "o/a" }))
                    .unwrap()
                    .id
            })
            .collect();
        let first = st.builds_page(None, None, 50).unwrap();
        assert_eq!(first.len(), 50);
        assert_eq!(first[0].id, ids[119]);
        let second = st.builds_page(None, Some(first[49].id), 50).unwrap();
        assert_eq!(second[0].id, first[49].id - 1);
        let b_only = st.builds_page(Some("o/b"), None, 1000).unwrap();
        assert_eq!(b_only.len(), 40);
        assert!(b_only.iter().all(|r| r.repo == "o/b"));
        let latest = st.latest_per_repo().unwrap();
        assert_eq!(
            latest
                .iter()
                .map(|r| (r.repo.as_str(), r.id))
                .collect::<Vec<_>>(),
            [("o/a", ids[119]), ("o/b", ids[117])]
        );
        let mut job = JobRow::passed_for_tests();
        job.stage = "deploy".into();
        job.deploys = vec![
            "s3: dry run (no --deploy)".into(),
            "codedeploy: skipped (tag)".into(),
        ];
        st.finish(ids[0], BuildState::Passed, std::slice::from_ref(&job))
            .unwrap();
        st.set_mail(ids[0], "sent to a@example.com").unwrap();
        let jobs = st.jobs(ids[0]).unwrap();
        assert_eq!(
            (jobs[0].stage.as_str(), &jobs[0].deploys),
            ("deploy", &job.deploys)
        );
        assert_eq!(
            st.by_id(ids[0]).unwrap().unwrap().mail,
            "sent to a@example.com"
        );
    }

    /// issue 14: a restarted build #4 sorted above #5 (lists went by start time).
    #[test]
    fn a_restarted_build_keeps_its_place_in_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path()).unwrap();
        let new = NewBuild {
            repo: "o/a".into(),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let first = st.enqueue(&new).unwrap();
        let _second = st.enqueue(&new).unwrap();
        st.restart(first.id).unwrap();
        st.conn
            .execute(
                "UPDATE builds SET started_at = started_at + 100 WHERE id = ?1",
                params![first.id],
            )
            .unwrap();
        let numbers: Vec<u64> = st
            .builds(None, None)
            .unwrap()
            .iter()
            .map(|b| b.number)
            .collect();
        assert_eq!(numbers, [2, 1]);
    }

    use super::*;

    #[test]
    fn numbers_per_repo_survive_reopening_and_previous_state_is_per_branch() {
        let t = tempfile::tempdir().unwrap();
        let nb = |repo: &str, branch: &str| NewBuild {
            repo: repo.into(),
            branch: Some(branch.into()),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let mut s = Store::open(t.path()).unwrap();
        let b1 = s.begin(&nb("o/a", "main")).unwrap();
        assert_eq!((b1.number, b1.previous_state), (1, None));
        s.finish(b1.id, BuildState::Failed, &[]).unwrap();
        let other = s.begin(&nb("o/b", "main")).unwrap();
        assert_eq!(other.number, 1);
        drop(s);
        let mut s = Store::open(t.path()).unwrap();
        let b2 = s.begin(&nb("o/a", "main")).unwrap();
        assert_eq!((b2.number, b2.previous_state), (2, Some(Status::Failed)));
        let dev = s.begin(&nb("o/a", "dev")).unwrap();
        assert_eq!((dev.number, dev.previous_state), (3, None));
        assert_eq!(s.builds(Some("o/a"), None).unwrap().len(), 3);
    }

    #[test]
    fn a_start_removes_only_the_log_files_of_builds_that_recorded_their_jobs() {
        let t = tempfile::tempdir().unwrap();
        let mut s = Store::open(t.path()).unwrap();
        let new = NewBuild {
            repo: "o/a".into(),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let job = JobRow::passed_for_tests();
        let ended = s.begin(&new).unwrap();
        let running = s.begin(&new).unwrap();
        let no_job = s.begin(&new).unwrap();
        for b in [&ended, &running, &no_job] {
            s.create_partial_log(b.id).unwrap();
        }
        s.finish(ended.id, BuildState::Passed, std::slice::from_ref(&job))
            .unwrap();
        s.finish(no_job.id, BuildState::Errored, &[]).unwrap();
        assert_eq!(s.remove_ended_partial_logs().unwrap(), 1);
        assert!(s.partial_log(ended.id).is_none());
        assert!(s.partial_log(running.id).is_some());
        assert!(s.partial_log(no_job.id).is_some(), "its only log");
    }
}
