//! Build history and the queue: every recorded build with its jobs and logs, numbered
//! per repository, behind one interface ([`Store`]) with two backends: SQLite
//! (`$RUNWAY_STATE_DIR/runway.db`, the embedded default for one machine; [`sqlite`]) and
//! PostgreSQL (runway.toml's `database_url_env`, for several `runway serve` nodes;
//! [`postgres`]). "Change" in the email rules means what it meant on Travis because each
//! build remembers the previous finished build of its branch when it is created. A
//! running build's log is a file beside the store (`logs/ID.log`) until its jobs are
//! recorded.

pub(crate) mod access;
pub(crate) mod archive;
#[cfg(test)]
pub mod cluster;
mod common;
pub(crate) mod postgres;
pub(crate) mod retention;
pub(crate) mod sqlite;
pub mod tasks;

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::build::BuildState;

/// Store errors.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// SQLite failed.
    #[error("build store: {0}")]
    Sqlite(#[from] rusqlite::Error),
    /// PostgreSQL failed.
    #[error("build store: {0}")]
    Postgres(#[from] ::postgres::Error),
    /// A stored value runway does not know.
    #[error("build store: {0}")]
    Data(String),
    /// The state directory could not be made.
    #[error("build store: {0}")]
    Io(#[from] std::io::Error),
    /// The database cannot be reached now (runway keeps trying).
    #[error("build store unreachable: {0}")]
    Unavailable(String),
}

/// Runs `f`, store calls made under a lock of the caller's (a serve node's one SQLite
/// connection), with the disk waited for after it returns, its lock let go: the commits
/// it made that wait for the disk are on it when this returns, as each was when its
/// call returned; a failed sync fails this (the commits stay). PostgreSQL syncs its own.
pub fn synced_after<T>(f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    let owed = sqlite::defer_syncs();
    let out = f();
    let synced = owed.settle();
    let out = out?;
    synced?;
    Ok(out)
}

/// Runs `f` again while it fails only because the database cannot be reached (with a
/// growing pause, up to 5 s), so that a build's record outlives a database restart:
/// what a build did is recorded once the store is back, never dropped. Once `cancel`
/// is set (the build canceled, the node stopping) it tries for 5 s more at most;
/// without a `cancel` (a command, not a server), for a minute.
pub fn patiently<T>(
    cancel: Option<&crate::cancel::Cancel>,
    mut f: impl FnMut() -> Result<T, StoreError>,
) -> Result<T, StoreError> {
    use std::time::{Duration, Instant};
    let mut pause = Duration::from_millis(200);
    let started = Instant::now();
    let mut canceled_at: Option<Instant> = None;
    loop {
        match f() {
            Err(StoreError::Unavailable(why)) => {
                let give_up = match cancel {
                    Some(c) if c.is_canceled() => {
                        canceled_at.get_or_insert_with(Instant::now).elapsed()
                            > Duration::from_secs(5)
                    }
                    Some(_) => false,
                    None => started.elapsed() > Duration::from_secs(60),
                };
                if give_up {
                    return Err(StoreError::Unavailable(why));
                }
                // The pause ends early when the build is canceled.
                let (tx, rx) = std::sync::mpsc::channel::<()>();
                let _woken = cancel.filter(|c| !c.is_canceled()).map(|c| {
                    let tx = std::sync::Mutex::new(tx.clone());
                    c.on_cancel(move || {
                        let _ = tx.lock().map(|t| t.send(()));
                    })
                });
                let _ = rx.recv_timeout(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
            done => return done,
        }
    }
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
    /// The pull request, for a pull request's build.
    pub pull_request: Option<crate::event::PullRequest>,
    /// An API request's config and merge mode (JSON), for its build.
    pub request: Option<ApiConfig>,
    /// The keys of the delivery that made it (its id, what it pushes): recorded with
    /// the build, in the same commit, so that the delivery sent again is known.
    pub delivered_as: Vec<String>,
}

/// The config an API request sent, and how it meets the `.travis.yml`.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ApiConfig {
    /// The request's config.
    pub config: serde_json::Value,
    /// Its merge mode.
    pub merge_mode: crate::config::merge::MergeMode,
}

/// The `request` column of an API request's config.
pub(crate) fn request_column(r: Option<&ApiConfig>) -> String {
    r.and_then(|r| serde_json::to_string(r).ok())
        .unwrap_or_default()
}

/// The API request's config a `request` column holds (empty: none).
pub(crate) fn request_of(text: &str) -> Option<ApiConfig> {
    serde_json::from_str(text).ok()
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
            pull_request: event.pull_request.clone(),
            request: None,
            delivered_as: Vec::new(),
        }
    }

    /// [`NewBuild::delivered_as`], each key once.
    pub(crate) fn delivery_keys(&self) -> Vec<&str> {
        let mut keys: Vec<&str> = self.delivered_as.iter().map(String::as_str).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// The PR number (the `pull_request` column) and the PR's details as JSON (`pr`).
    pub(crate) fn pr_columns(&self) -> (Option<i64>, String) {
        pr_columns(self.pull_request.as_ref())
    }
}

/// The `pull_request` and `pr` columns of a build of `pr`.
pub(crate) fn pr_columns(pr: Option<&crate::event::PullRequest>) -> (Option<i64>, String) {
    (
        pr.map(|p| p.number as i64),
        pr.and_then(|p| serde_json::to_string(p).ok())
            .unwrap_or_default(),
    )
}

/// The pull request a `pr` column holds (empty: none).
pub(crate) fn pr_of(text: &str) -> Option<crate::event::PullRequest> {
    serde_json::from_str(text).ok()
}

/// A recorded build.
#[derive(Clone, Debug, Default, serde::Serialize, serde::Deserialize)]
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
    /// The pull request, for a pull request's build.
    pub pull_request: Option<crate::event::PullRequest>,
    /// An API request's config, for its build.
    pub request: Option<ApiConfig>,
    /// The one job a restart of that job runs again (the others keep their results).
    pub rerun: Option<String>,
}

/// A log's line times as stored: the first (Unix ms), then each one's difference from
/// the one before, comma-separated (a line or two of digits each).
pub(crate) fn times_column(times: &[i64]) -> String {
    let mut out = String::new();
    let mut last = 0i64;
    for (i, t) in times.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(&(t - last).to_string());
        last = *t;
    }
    out
}

/// The line times a `line_times` column holds.
pub(crate) fn times_of(text: &str) -> Vec<i64> {
    let mut last = 0i64;
    text.split(',')
        .filter_map(|d| d.parse::<i64>().ok())
        .map(|d| {
            last += d;
            last
        })
        .collect()
}

/// An earlier attempt of a job that was run again.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Attempt {
    /// The job (`N.i`).
    pub number: String,
    /// 1 for the first run.
    pub attempt: u32,
    /// How it ended.
    pub result: String,
    /// Why.
    pub reason: String,
    /// Milliseconds.
    pub duration_ms: u64,
}

/// A commit status waiting in the status outbox, claimed by one node to post.
#[derive(Clone, Debug)]
pub struct StatusRow {
    /// Row id.
    pub id: i64,
    /// The build it is of.
    pub build_id: i64,
    /// `owner/repo` (whose token posts it).
    pub repo: String,
    /// Where it goes.
    pub url: String,
    /// The JSON body.
    pub body: String,
    /// Tries so far.
    pub attempts: u32,
}

/// What became of a build's status, for its page and API.
#[derive(Clone, Debug, serde::Serialize)]
pub struct StatusView {
    /// `runway/push`, `runway/pr`.
    pub context: String,
    /// The state posted (`pending`, `success`…).
    pub state: String,
    /// The commit.
    pub sha: String,
    /// `pending`, `posted`, `failed`, `superseded`.
    pub outcome: String,
    /// Tries so far.
    pub attempts: u32,
    /// The last failure, when there was one.
    pub last_error: String,
}

/// Jobs whose logs are archived: (job number, the archive's reference).
pub type Archived = Vec<(String, String)>;

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
    /// When each line of the log was written (Unix ms), line by line.
    #[serde(skip)]
    pub times: Vec<i64>,
    /// The `runway worker` that ran it (the server fills it in from its tasks).
    pub worker: Option<String>,
    /// Every worker that took it, attempt by attempt (more than one when a lost job
    /// ran again).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub workers: Vec<String>,
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

/// The build history: a backend, and the state directory the running builds' logs
/// live in.
pub struct Store {
    db: RefCell<Box<dyn Backend>>,
    dir: PathBuf,
    /// Where finished logs go (None: they stay in the rows).
    archive: Option<std::sync::Arc<dyn archive::LogArchive>>,
}

/// The setting naming where a PostgreSQL store's finished logs are (`s3://…`).
const LOG_URL: &str = "log_url";

/// The columns of a build row, in [`BuildRow`]'s order (both backends).
const COLUMNS: &str = "id, repo, number, branch, tag, commit_sha, event, state, started_at, finished_at, \
     previous_state, commit_range, reason, message, author, mail, pr, request, rerun";

/// A text column of a build set on its own.
#[derive(Clone, Copy, Debug)]
pub enum Text {
    /// The commit's author.
    Author,
    /// What became of the mail.
    Mail,
}

impl Text {
    fn name(self) -> &'static str {
        match self {
            Text::Author => "author",
            Text::Mail => "mail",
        }
    }
}

/// The older builds of a branch a newer one canceled (`auto_cancel`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Superseded {
    /// Those still queued, canceled: their numbers.
    pub queued: Vec<u64>,
    /// Those taken from the queue with no job started yet: their ids and numbers, for
    /// the node following each to cancel.
    pub waiting: Vec<(i64, u64)>,
}

/// What a backend does: the statements behind [`Store`]'s methods. It stays inside
/// the store: the rest of runway sees [`Store`]'s domain methods (begin, claim,
/// finish, tasks, chunks, logs…), never SQL.
pub(in crate::store) trait Backend: Send {
    /// Records a build in `state` with the next number of its repository and the state
    /// of the previous finished build of its branch (or tag).
    fn insert(&mut self, b: &NewBuild, state: Status) -> Result<BuildRow, StoreError>;
    /// Takes the oldest queued build (queued at or before `queued_by`, seconds, when
    /// given) and marks it running.
    fn claim(
        &mut self,
        queued_by: Option<i64>,
        holder: Option<(&str, i64)>,
    ) -> Result<Option<BuildRow>, StoreError>;
    /// Errors the running builds with `reason`; their repositories and numbers.
    fn mark_interrupted(&mut self, reason: &str) -> Result<Vec<(String, u64)>, StoreError>;
    /// Queues an ended build again, its jobs dropped.
    fn restart(&mut self, id: i64) -> Result<(), StoreError>;
    /// Records how a build ended, with its jobs; with `held_by`, only while that node
    /// holds it and it runs (false, nothing written, when it does not).
    fn finish(
        &mut self,
        id: i64,
        state: Status,
        jobs: &[JobRow],
        held_by: Option<&str>,
    ) -> Result<bool, StoreError>;
    /// A build's jobs, in the order they were recorded.
    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError>;
    /// SQL saying that `column` holds parameter `$n`, a NULL matching a NULL, in a form
    /// this backend finds in an index: SQLite's `IS` (here), PostgreSQL's
    /// [`postgres::same`].
    fn same(&self, column: &str, n: usize) -> String {
        format!("{column} IS ${n}")
    }
    /// Rows of a plain query (`$1`… placeholders), for [`tasks`].
    fn query(
        &mut self,
        sql: &str,
        args: &[tasks::Value],
    ) -> Result<Vec<Vec<tasks::Value>>, StoreError>;
    /// Rows changed by a plain statement, for [`tasks`].
    fn execute(&mut self, sql: &str, args: &[tasks::Value]) -> Result<u64, StoreError>;
    /// [`Backend::execute`] of a write that may be lost with the machine's power, not
    /// with runway's process: one a worker sends again (a log chunk the server does not
    /// say it holds) or a lease recovers (who was seen when). SQLite commits it without
    /// waiting for the disk (the next full commit takes it there); PostgreSQL as any.
    fn execute_lazily(&mut self, sql: &str, args: &[tasks::Value]) -> Result<u64, StoreError> {
        self.execute(sql, args)
    }
    /// [`Backend::query`] of a write that may be lost with the machine's power, as
    /// [`Backend::execute_lazily`].
    fn query_lazily(
        &mut self,
        sql: &str,
        args: &[tasks::Value],
    ) -> Result<Vec<Vec<tasks::Value>>, StoreError> {
        self.query(sql, args)
    }
    /// Starts a group of plain statements that [`Backend::end_group`] commits at once
    /// (one commit, waiting for the disk unless `lazily`): SQLite, whose one connection
    /// is the node's. PostgreSQL commits each statement as it comes (its pool spreads
    /// calls over connections).
    fn begin_group(&mut self, _lazily: bool) -> Result<(), StoreError> {
        Ok(())
    }
    /// Ends the group [`Backend::begin_group`] started: committed, or rolled back.
    fn end_group(&mut self, _commit: bool) -> Result<(), StoreError> {
        Ok(())
    }
    /// Tells the other nodes (PostgreSQL `NOTIFY`; nothing for SQLite: one node).
    fn notify(&mut self, payload: &str) -> Result<(), StoreError>;
    /// Another handle on the same database whose calls run beside this one's (a
    /// pool's), or `None` when calls must take turns on this one (SQLite's one
    /// connection).
    fn share(&self) -> Option<Box<dyn Backend>> {
        None
    }
}

/// Where running server jobs record their process groups (see
/// `process::end_orphans`).
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

/// Where a recorded build is: waiting, running, or ended with its result. One type for
/// the store, the server and the mail (stored as its lower-case name).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Waiting for a worker.
    #[default]
    Queued,
    /// A pull request from a fork waiting for someone with write access to approve it
    /// (`fork_prs = "approve"`): it has not run.
    #[serde(rename = "awaiting_approval")]
    Awaiting,
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
            Status::Awaiting => "awaiting_approval",
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
            "awaiting_approval" => Status::Awaiting,
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
        matches!(self, Status::Queued | Status::Awaiting | Status::Running)
    }
}

/// A build's result as the state it is stored in.
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

/// Where a running server build's log is written in state directory `dir`
/// ([`Store::partial_log_path`]).
pub fn partial_log_path(dir: &Path, build_id: i64) -> PathBuf {
    dir.join("logs").join(format!("{build_id}.log"))
}

/// Creates (empty) the partial log of a build that starts running, in state directory
/// `dir`: a file of the store's own, made without a connection (a node makes it on the
/// build's thread, not while it holds the store).
pub fn create_partial_log(dir: &Path, build_id: i64) -> Result<std::fs::File, StoreError> {
    std::fs::create_dir_all(dir.join("logs"))?;
    Ok(PARTIAL_LOGS.create(&partial_log_path(dir, build_id))?)
}

/// The partial logs' files, each kept for a later build's when it is removed
/// ([`crate::spare`]).
static PARTIAL_LOGS: crate::spare::Spares = crate::spare::Spares::new(64);

impl Store {
    /// Opens (and creates) the embedded store in `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(dir)?;
        Ok(Store {
            db: RefCell::new(Box::new(sqlite::Sqlite::open(dir)?)),
            dir: dir.to_path_buf(),
            archive: Some(std::sync::Arc::new(archive::Files(
                dir.join("logs").join("archive"),
            ))),
        })
    }

    /// The store at `url` (PostgreSQL) when given, else the embedded one; running
    /// builds' logs in `dir` either way.
    pub fn connect(dir: &Path, url: Option<&str>) -> Result<Store, StoreError> {
        let Some(url) = url else {
            return Store::open(dir);
        };
        std::fs::create_dir_all(dir)?;
        let mut st = Store {
            db: RefCell::new(Box::new(postgres::Postgres::connect(url)?)),
            dir: dir.to_path_buf(),
            archive: None,
        };
        // Where the serve nodes keep finished logs, as they recorded it.
        if let Some(url) = st.setting(LOG_URL)? {
            st.archive = Some(std::sync::Arc::new(archive::Bucket::open(&url)?));
        }
        Ok(st)
    }

    /// A setting the serve nodes recorded in the store.
    pub fn setting(&self, key: &str) -> Result<Option<String>, StoreError> {
        Ok(self
            .db()
            .query(
                "SELECT value FROM runway_settings WHERE key = $1",
                &[key.into()],
            )?
            .into_iter()
            .next()
            .and_then(|r| match r.into_iter().next() {
                Some(tasks::Value::Text(t)) => Some(t),
                _ => None,
            }))
    }

    /// Records where a shared (PostgreSQL) store's finished logs go from now on
    /// (runway.toml's `log_url`; None: their rows), for every process that opens it.
    pub fn keep_logs_at(&mut self, url: Option<&str>) -> Result<(), StoreError> {
        if self
            .archive
            .as_ref()
            .is_some_and(|_| self.setting(LOG_URL).ok().flatten().is_none())
        {
            // The embedded store keeps its logs in files beside it, whatever is asked.
            return Ok(());
        }
        match url {
            Some(u) => {
                self.archive = Some(std::sync::Arc::new(archive::Bucket::open(u)?));
                self.db().execute(
                    "INSERT INTO runway_settings (key, value) VALUES ($1, $2)
                     ON CONFLICT (key) DO UPDATE SET value = $2",
                    &[LOG_URL.into(), u.into()],
                )?;
            }
            None => {
                self.db().execute(
                    "DELETE FROM runway_settings WHERE key = $1",
                    &[LOG_URL.into()],
                )?;
                self.archive = None;
            }
        }
        Ok(())
    }

    /// Another handle on this store whose calls run beside this one's (PostgreSQL:
    /// on the pool's other connections), or `None` for the embedded store, whose one
    /// connection takes its calls in turn.
    pub fn share(&self) -> Option<Store> {
        let db = self.db.borrow().share()?;
        Some(Store {
            db: RefCell::new(db),
            dir: self.dir.clone(),
            archive: self.archive.clone(),
        })
    }

    fn db(&self) -> std::cell::RefMut<'_, Box<dyn Backend>> {
        self.db.borrow_mut()
    }

    /// Runs `f`, whose writes are plain statements ([`tasks`]), as one commit on SQLite
    /// (each commit of its own was a tenth of a busy node's store time): synced unless
    /// `lazily` (then every write in it must be one the power may lose, see
    /// [`Backend::execute_lazily`]); rolled back when `f` fails.
    pub fn together<T>(
        &self,
        lazily: bool,
        f: impl FnOnce(&Store) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        self.db().begin_group(lazily)?;
        let out = f(self);
        let ended = self.db().end_group(out.is_ok());
        let out = out?;
        ended?;
        Ok(out)
    }

    /// Records a new running build; returns it with its number and the state of the
    /// previous finished build of the same branch (or tag).
    pub fn begin(&mut self, b: &NewBuild) -> Result<BuildRow, StoreError> {
        self.db().insert(b, Status::Running)
    }

    /// The build a webhook delivery with this key (`github:<X-GitHub-Delivery>`) made
    /// at or after `since` (seconds), if any: a replay or a redelivery.
    pub fn delivery(&self, key: &str, since: i64) -> Result<Option<BuildRow>, StoreError> {
        let id = self.delivery_build(key, since)?;
        match id {
            Some(id) => self.by_id(id),
            None => Ok(None),
        }
    }

    /// Seconds since the epoch, as the store records times.
    pub fn now() -> i64 {
        now()
    }

    /// Queues a build (durably: it is in the database when this returns).
    pub fn enqueue(&mut self, b: &NewBuild) -> Result<BuildRow, StoreError> {
        self.db().insert(b, Status::Queued)
    }

    /// Records a build that is errored before it could run (a pull request that cannot
    /// be merged), with `reason`: never queued, so no node claims it.
    pub fn record_errored(&mut self, b: &NewBuild, reason: &str) -> Result<BuildRow, StoreError> {
        let mut row = self.db().insert(b, Status::Errored)?;
        self.set_state(row.id, Status::Errored, Some(reason))?;
        row.reason = Some(reason.to_string());
        row.finished_at = Some(Store::now());
        Ok(row)
    }

    /// Records a build that waits for an approval before it is queued, with the reason
    /// `why` gives for its number: no node claims it meanwhile.
    pub fn enqueue_awaiting(
        &mut self,
        b: &NewBuild,
        why: impl FnOnce(u64) -> String,
    ) -> Result<BuildRow, StoreError> {
        let mut row = self.db().insert(b, Status::Awaiting)?;
        let reason = why(row.number);
        self.set_state(row.id, Status::Awaiting, Some(&reason))?;
        row.reason = Some(reason);
        Ok(row)
    }

    /// Queues build `id`, which awaited approval, saying who approved it; false when it
    /// was not awaiting one (approved already, canceled).
    pub fn approve(&mut self, id: i64, by: &str) -> Result<bool, StoreError> {
        self.approve_awaiting(id, by)
    }

    /// Takes the oldest queued build and marks it running; `None` when the queue is empty.
    /// One statement, so two workers (or two nodes) never take the same build.
    pub fn claim(&mut self) -> Result<Option<BuildRow>, StoreError> {
        self.db().claim(None, None)
    }

    /// Takes the oldest queued build for node `node`, holding it until `until` (ms), in
    /// one statement: a claim whose answer is lost with the connection is still this
    /// node's, and found again by [`Store::held_by`].
    pub fn claim_for(&mut self, node: &str, until: i64) -> Result<Option<BuildRow>, StoreError> {
        self.db().claim(None, Some((node, until)))
    }

    /// [`Store::claim_waiting`] for node `node`, held until `until` (ms), in one statement.
    pub fn claim_waiting_for(
        &mut self,
        queued_by: i64,
        node: &str,
        until: i64,
    ) -> Result<Option<BuildRow>, StoreError> {
        self.db().claim(Some(queued_by), Some((node, until)))
    }

    /// Takes the oldest build that has been queued since `queued_by` (seconds) or
    /// before, and marks it running: one no node that follows builds took in time.
    pub fn claim_waiting(&mut self, queued_by: i64) -> Result<Option<BuildRow>, StoreError> {
        self.db().claim(Some(queued_by), None)
    }

    /// Where a running server build's log is written as it goes
    /// (`STATE_DIR/logs/ID.log`). It is removed a minute after the build records its
    /// jobs (`runway log --follow` reads its end meanwhile), so it remains only for a
    /// build a crash interrupted (its log up to the crash) or one that ended before its
    /// first job.
    pub fn partial_log_path(&self, build_id: i64) -> PathBuf {
        partial_log_path(&self.dir, build_id)
    }

    /// Creates (empty) the partial log of a build that starts running.
    pub fn create_partial_log(&self, build_id: i64) -> Result<std::fs::File, StoreError> {
        create_partial_log(&self.dir, build_id)
    }

    /// The partial log of a build, if one remains.
    pub fn partial_log(&self, build_id: i64) -> Option<Vec<u8>> {
        std::fs::read(self.partial_log_path(build_id)).ok()
    }

    /// Removes a build's partial log (its jobs' logs are recorded).
    pub fn remove_partial_log(&self, build_id: i64) {
        PARTIAL_LOGS.retire(&self.partial_log_path(build_id), b"");
    }

    /// Removes the partial logs of builds that ended with their jobs recorded (the
    /// ones a stopped server had not removed yet). Returns how many.
    pub fn remove_ended_partial_logs(&self) -> Result<usize, StoreError> {
        crate::spare::sweep(&self.dir.join("logs"));
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
            let ended = self.by_id(id)?.is_some_and(|r| !r.state.is_active());
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
        self.db().mark_interrupted(
            "interrupted: runway stopped while this build was running; runway restart N runs it again",
        )
    }

    /// Cancels queued builds of the same repository and branch older than `newer`
    /// (auto-cancellation). Returns their numbers.
    pub fn cancel_superseded(&mut self, newer: &BuildRow) -> Result<Superseded, StoreError> {
        let reason = format!("superseded by build #{}", newer.number);
        self.cancel_older(newer, &reason)
    }

    /// Queues a finished build again under its number (`runway restart N`); its old
    /// jobs are dropped.
    pub fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        self.drop_tasks(id)?;
        self.db().restart(id)
    }

    /// Runs job `number` of ended build `id` again, keeping what it did this time as an
    /// attempt (its result, reason, duration and log) and the other jobs' results: the
    /// build is queued with only that job to run. Returns the attempt kept.
    pub fn restart_job(&mut self, id: i64, number: &str) -> Result<u32, StoreError> {
        let jobs = self.jobs(id)?;
        let job = jobs
            .iter()
            .find(|j| j.number == number)
            .ok_or_else(|| StoreError::Data(format!("the build has no job {number}")))?;
        let attempt = self
            .attempts(id)?
            .iter()
            .filter(|a| a.number == number)
            .count() as u32
            + 1;
        self.drop_tasks(id)?;
        self.keep_attempt(id, job, attempt)?;
        Ok(attempt)
    }

    /// Records the commit's author once the build has read the commit.
    pub fn set_author(&mut self, id: i64, author: &str) -> Result<(), StoreError> {
        // Who pushed is for the pages: committed without waiting for the disk (on the
        // way to the build's first command; the next full commit takes it there).
        self.set_text_lazily(id, Text::Author, author)
    }

    /// Records what became of the build's mail, for the pages: committed without
    /// waiting for the disk, as [`Store::set_author`] (a mail to send again is kept
    /// in the outbox, at its own commit).
    pub fn set_mail(&mut self, id: i64, mail: &str) -> Result<(), StoreError> {
        self.set_text_lazily(id, Text::Mail, mail)
    }

    /// Records how a build ended, with its jobs.
    pub fn finish(
        &mut self,
        id: i64,
        state: BuildState,
        jobs: &[JobRow],
    ) -> Result<(), StoreError> {
        self.end(id, state, jobs, None).map(|_| ())
    }

    /// Records how a build ended, as [`Store::finish`], only while node `node` holds
    /// it and it runs: false (nothing written) when another node took it over or ended
    /// it, so each build ends once, whichever node gets there first.
    pub fn finish_held(
        &mut self,
        id: i64,
        node: &str,
        state: BuildState,
        jobs: &[JobRow],
    ) -> Result<bool, StoreError> {
        self.end(id, state, jobs, Some(node))
    }

    fn end(
        &mut self,
        id: i64,
        state: BuildState,
        jobs: &[JobRow],
        held_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        if !self.db().finish(id, state.into(), jobs, held_by)? {
            return Ok(false);
        }
        // Then the logs leave the rows: recorded first, moved after, so a crash in
        // between loses nothing.
        if let Some(a) = &self.archive {
            for j in jobs.iter().filter(|j| a.worth(j.log.len())) {
                match a.put(id, &j.number, &j.log) {
                    Ok(reference) => {
                        // Lost with the power, the log stays in the row.
                        self.db().execute_lazily(
                            "UPDATE jobs SET log = $1, log_ref = $2 WHERE build_id = $3 AND number = $4",
                            &[
                                tasks::Value::Bytes(Vec::new()),
                                reference.as_str().into(),
                                id.into(),
                                j.number.as_str().into(),
                            ],
                        )?;
                    }
                    Err(e) => {
                        tracing::warn!(build = id, job = %j.number, error = %e, "the log stays in the store: it could not be archived")
                    }
                }
            }
        }
        Ok(true)
    }

    /// Builds, newest first by when each was made (not when it last started: a restarted
    /// build #4 stays below #5), optionally of one repository and/or branch.
    pub fn builds(
        &self,
        repo: Option<&str>,
        branch: Option<&str>,
    ) -> Result<Vec<BuildRow>, StoreError> {
        self.builds_filtered(repo, branch, None, usize::MAX, None)
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
        self.builds_filtered(repo, None, before, limit, None)
    }

    /// [`Store::builds_page`] of one branch (`branch` None: every branch), of the
    /// `visible` repositories only (None: all).
    pub fn branch_page(
        &self,
        repo: Option<&str>,
        branch: Option<&str>,
        before: Option<i64>,
        limit: usize,
        visible: Option<&[String]>,
    ) -> Result<Vec<BuildRow>, StoreError> {
        self.builds_filtered(repo, branch, before, limit, visible)
    }

    /// The jobs of a build, with their logs (archived ones read from the archive).
    pub fn jobs(&self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        let (mut jobs, archived) = self.jobs_unread(build_id)?;
        archive::fill(self.archive.as_deref(), &mut jobs, &archived);
        Ok(jobs)
    }

    /// The jobs of a build as the database holds them: an archived log is left empty,
    /// and named in the second list (job number, reference) for [`archive::fill`] to
    /// read outside any lock on the store.
    pub fn jobs_unread(&self, build_id: i64) -> Result<(Vec<JobRow>, Archived), StoreError> {
        let jobs = self.db().jobs(build_id)?;
        let archived = self
            .db()
            .query(
                "SELECT number, log_ref FROM jobs WHERE build_id = $1 AND log_ref <> ''",
                &[build_id.into()],
            )?
            .into_iter()
            .filter_map(|r| {
                let mut r = r.into_iter();
                Some((r.next()?.text()?, r.next()?.text()?))
            })
            .collect();
        Ok((jobs, archived))
    }

    /// Where finished logs are kept, when not in the rows: shared, so a slow read
    /// happens outside the store's lock.
    pub fn log_archive(&self) -> Option<std::sync::Arc<dyn archive::LogArchive>> {
        self.archive.clone()
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
            times: vec![1_000, 1_250],
            worker: None,
            workers: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The same store twice: embedded (SQLite) and shared (a database of its own in the
    /// test process's throwaway PostgreSQL cluster). Running builds' logs in `dir`.
    fn both(dir: &Path) -> Vec<(&'static str, Store)> {
        let url = cluster::shared().database("store");
        vec![
            ("sqlite", Store::open(dir).unwrap()),
            (
                "postgres",
                Store::connect(&dir.join("pg"), Some(&url)).unwrap(),
            ),
        ]
    }

    /// PostgreSQL's schema is versioned: a second node (or start) applies nothing again,
    /// and two claims never take the same build.
    /// A server and a hook opening a new store at once each saw a column missing and
    /// both added it: the hook's push failed with "duplicate column name". The schema
    /// is made by one opener at a time.
    #[test]
    fn a_new_store_opened_by_several_at_once_is_made_once() {
        for _ in 0..10 {
            let dir = tempfile::tempdir().unwrap();
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let openers: Vec<_> = (0..6)
                .map(|_| {
                    let (dir, start) = (dir.path().to_path_buf(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Store::open(&dir).map(drop).map_err(|e| e.to_string())
                    })
                })
                .collect();
            for o in openers {
                assert_eq!(o.join().unwrap(), Ok(()));
            }
        }
    }

    /// An intake looks among the builds of its line (its branch, tag or pull request)
    /// for the previous one and for the older ones waiting, on both backends by an
    /// index of the whole line: by the branch alone (or, on PostgreSQL, the repository
    /// alone), a branch's first build or a pull request's read every build before it
    /// (200,000 builds on one branch: 29 to 58 ms an intake, 0.03 ms by the line).
    /// Asked of each planner with the statements the store runs.
    #[test]
    fn an_intake_finds_its_lines_builds_by_index() {
        let dir = tempfile::tempdir().unwrap();
        let url = cluster::shared().database("lines");
        let stores = [
            Store::open(dir.path()).unwrap(),
            Store::connect(&dir.path().join("pg"), Some(&url)).unwrap(),
        ];
        let conn = rusqlite::Connection::open(dir.path().join("runway.db")).unwrap();
        let plan = |sql: &str, args: &[&dyn rusqlite::ToSql]| -> String {
            let mut st = conn
                .prepare(&format!("EXPLAIN QUERY PLAN {}", sqlite::placeholders(sql)))
                .unwrap();
            st.query_map(args, |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect::<Vec<_>>()
                .join("; ")
        };
        let none: Option<i64> = None;
        let p = plan(sqlite::PREVIOUS, &[&"o/a", &"feature", &none, &7]);
        assert!(
            p.contains("builds_by_line (repo=? AND branch=? AND tag=? AND pull_request=?)"),
            "{p}"
        );
        let [cancel, mark] = common::superseding(&**stores[0].db());
        let p = plan(&cancel, &[&1, &"r", &"o/a", &"main", &none, &9]);
        assert!(p.contains("builds_waiting (repo=? AND branch=?"), "{p}");
        let p = plan(&mark, &[&"r", &"o/a", &"main", &9, &none]);
        assert!(p.contains("builds_by_state (state=?"), "{p}");

        // PostgreSQL, as a node plans each statement: with its parameters' values.
        let mut pg = ::postgres::Client::connect(&url, ::postgres::NoTls).unwrap();
        // Its choice follows the table's statistics: a branch with a past.
        pg.batch_execute(
            "INSERT INTO builds (repo, number, branch, commit_sha, event, state, started_at, finished_at)
               SELECT 'o/a', g, 'main', 'c', 'push', 'passed', g, g FROM generate_series(1, 5000) g;
             ANALYZE builds;",
        )
        .unwrap();
        let mut plan = |name: &str, sql: &str, types: &str, args: &str| -> String {
            pg.batch_execute(&format!("PREPARE {name}({types}) AS {sql}"))
                .unwrap();
            pg.query(&format!("EXPLAIN EXECUTE {name}({args})"), &[])
                .unwrap()
                .iter()
                .map(|r| r.get::<_, String>(0))
                .collect::<Vec<_>>()
                .join("\n")
        };
        // What the index finds (not what is filtered after): a pull request's builds
        // among its branch's, a new branch's (none) among the repository's.
        let found = |p: &str| -> String {
            p.lines()
                .filter(|l| l.contains("Index Cond"))
                .collect::<Vec<_>>()
                .join("\n")
        };
        for (name, args, cond) in [
            (
                "pr",
                "'o/a', 'main', NULL, 7",
                "(branch = 'main'::text) AND (tag IS NULL) AND (pull_request = '7'::bigint)",
            ),
            (
                "first",
                "'o/a', 'feature', NULL, NULL",
                "(branch = 'feature'::text)",
            ),
        ] {
            let p = plan(
                name,
                &postgres::previous(),
                "text, text, text, bigint",
                args,
            );
            assert!(found(&p).contains(cond), "{p}");
        }
        let [cancel, mark] = common::superseding(&**stores[1].db());
        let p = plan(
            "cancel",
            &cancel,
            "bigint, text, text, text, bigint, bigint",
            "1, 'r', 'o/a', 'main', NULL, 9",
        );
        assert!(
            p.contains("builds_waiting") && found(&p).contains("(branch = 'main'::text)"),
            "{p}"
        );
        let p = plan(
            "mark",
            &mark,
            "text, text, text, bigint, bigint",
            "'r', 'o/a', 'main', 9, NULL",
        );
        assert!(p.contains("builds_running"), "{p}");
    }

    #[test]
    fn postgres_migrations_apply_once_and_claims_never_share_a_build() {
        let url = cluster::shared().database("migrate");
        let mut a = postgres::Postgres::connect(&url).unwrap();
        let mut b = postgres::Postgres::connect(&url).unwrap();
        assert_eq!(a.version().unwrap(), postgres::MIGRATIONS.len() as i64);
        assert_eq!(b.version().unwrap(), postgres::MIGRATIONS.len() as i64);
        let new = NewBuild {
            repo: "o/a".into(),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        for _ in 0..20 {
            a.insert(&new, Status::Queued).unwrap();
        }
        let mut taken = Vec::new();
        while let (x, y) = (a.claim(None, None).unwrap(), b.claim(None, None).unwrap())
            && (x.is_some() || y.is_some())
        {
            taken.extend(x.into_iter().chain(y).map(|r| r.number));
        }
        taken.sort();
        assert_eq!(taken, (1..=20).collect::<Vec<u64>>());
    }

    /// issue 15: a job's task is claimed by one matching worker only, its chunks are
    /// kept once and read without gaps, a lost lease ends it (errored or queued again),
    /// a stale worker can neither beat nor end it, and a cancel reaches it. Both backends.
    /// What a build asks of the store, from its delivery to its end, on a node or a
    /// worker, and what the servers' pollers ask meanwhile, finds its rows through an
    /// index: none of it reads the builds, deliveries, mails, jobs or tasks of the past
    /// (a claim that walked every ended build cost 0.9 ms at 10,000 builds, and a node
    /// makes several a build). Checked on the plans SQLite makes for every statement
    /// the path runs, so it does not hang on the history's size.
    #[test]
    fn a_builds_store_work_does_not_read_the_history() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path()).unwrap();
        let node = "node-a";
        let ran = sqlite::capture(|| {
            let key = "github:delivery-1";
            assert!(st.delivery(key, 0).unwrap().is_none());
            st.forget_deliveries(1).unwrap();
            let b = st
                .enqueue(&NewBuild {
                    repo: "o/h".into(),
                    branch: Some("feature".into()),
                    commit: "abc".into(),
                    event: "push".into(),
                    delivered_as: vec![key.into()],
                    ..NewBuild::default()
                })
                .unwrap();
            st.cancel_superseded(&b).unwrap();
            let b = st
                .claim_for(node, tasks::now_ms() + 60_000)
                .unwrap()
                .unwrap();
            st.set_author(b.id, "A U Thor").unwrap();
            st.set_mail(b.id, "a@example.com").unwrap();
            // The node's pollers.
            st.cancels_requested(node).unwrap();
            st.due_mails(tasks::now_ms()).unwrap();
            st.next_status_at().unwrap();
            st.next_cron_at().unwrap();
            st.renew_builds(node, tasks::now_ms() + 60_000).unwrap();
            st.held_by(node).unwrap();
            // Its job on a worker.
            let linux = tasks::parse_labels("os=linux");
            st.open_task(b.id, "1.1", &linux, "the job").unwrap();
            let (t, _) = st
                .claim_task("w1", "", &linux, 60_000, "h")
                .unwrap()
                .unwrap();
            st.task_call(t.id, "w1").unwrap();
            st.add_chunk(&t, 1, 0, b"a line\n").unwrap();
            st.chunks_held(t.id, 1, 0).unwrap();
            st.chunks(t.id, 1, 0).unwrap();
            st.beat(t.id, 1, "w1", 60_000).unwrap();
            st.end_task(t.id, 1, "w1", Status::Passed, "").unwrap();
            st.task(t.id).unwrap();
            st.claim_task("w1", "", &linux, 60_000, "h").unwrap();
            st.finish_held(
                b.id,
                node,
                BuildState::Passed,
                &[JobRow::passed_for_tests()],
            )
            .unwrap();
            // Its status on the forge, and a mail that waits for a retry.
            let req = crate::forge::StatusRequest {
                url: "http://127.0.0.1:1/statuses/abc".into(),
                body: "{}".into(),
                sha: "abc".into(),
                context: "runway/push".into(),
                state: "success".into(),
            };
            st.queue_status(b.id, "ended", "o/h", &req).unwrap();
            let posted = st
                .claim_status(tasks::now_ms(), tasks::now_ms() + 1)
                .unwrap();
            st.status_tried(posted.unwrap().id, Ok(()), None).unwrap();
            st.next_status_at().unwrap();
            let mail = OutboxMail {
                id: 0,
                build_id: b.id,
                sender: "runway@example.com".into(),
                recipients: vec!["a@example.com".into()],
                message: b"Subject: x\r\n\r\nx\r\n".to_vec(),
                attempts: 0,
            };
            st.queue_mail(&mail, "refused", 0).unwrap();
            let due = st.due_mails(tasks::now_ms()).unwrap();
            st.mail_tried(due[0].id, Ok(()), 0, 5).unwrap();
            // What its pages and the API read of it.
            st.build(Some("o/h"), b.number as u64).unwrap();
            st.jobs(b.id).unwrap();
            st.attempts(b.id).unwrap();
            st.statuses_of(b.id).unwrap();
            st.branch_state("o/h", "feature").unwrap();
        });
        assert!(ran.len() > 20, "the path ran through the trace: {ran:#?}");
        let conn = rusqlite::Connection::open(dir.path().join("runway.db")).unwrap();
        // Tables that hold a row per worker, cron, setting or session, read whole;
        // every other one grows with the builds (a table read under an alias, `SCAN
        // s`, is counted as one of those).
        let small = ["workers", "revoked_workers", "crons", "runway_settings"];
        let mut scans = Vec::new();
        for sql in ran.iter().filter(|s| !s.starts_with("PRAGMA")) {
            let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let nulls = vec![rusqlite::types::Null; plan.parameter_count()];
            let details: Vec<String> = plan
                .query_map(rusqlite::params_from_iter(nulls), |r| r.get::<_, String>(3))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            for d in details {
                // A scan, or a search that uses no index (SQLite's words for a
                // MIN() it reads every row for).
                let whole = match d.split_whitespace().collect::<Vec<_>>()[..] {
                    ["SCAN", table, ..] | ["SEARCH", table] => Some(table),
                    _ => None,
                };
                if whole.is_some_and(|t| !small.contains(&t)) {
                    scans.push(format!(
                        "{d}\n    in: {}",
                        sql.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
        }
        assert!(
            scans.is_empty(),
            "statements that read every row:\n{}",
            scans.join("\n")
        );
    }

    /// Only what someone is told is recorded waits for the disk at its commit: a
    /// delivery's build (the sender is answered once it is queued), a build's end. Its
    /// claim by a node and what became of its mail are committed without (a host's crash
    /// may lose them: the build is queued again; the page does not say the mail's fate),
    /// and the next commit that waits takes them to the disk with it. Each waits once
    /// the store's write lock is let go (`sqlite::WalSync`): syncs made while it was
    /// held queued the deliveries' and the workers' commits behind each other.
    #[test]
    fn only_what_someone_is_told_is_recorded_waits_for_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut st = Store::open(dir.path()).unwrap();
        let synced = |st: &mut Store, f: &dyn Fn(&mut Store)| {
            let before = sqlite::syncs(dir.path());
            f(st);
            sqlite::syncs(dir.path()) - before
        };
        let queued = synced(&mut st, &|st| {
            st.enqueue(&NewBuild {
                repo: "o/h".into(),
                branch: Some("main".into()),
                commit: "abc".into(),
                event: "push".into(),
                ..NewBuild::default()
            })
            .unwrap();
        });
        assert_eq!(queued, 1, "a delivery's build is on the disk when answered");
        let claimed = synced(&mut st, &|st| {
            let b = st
                .claim_for("node-a", tasks::now_ms() + 60_000)
                .unwrap()
                .expect("the queued build");
            st.set_author(b.id, "A U Thor").unwrap();
        });
        assert_eq!(claimed, 0, "a claim and its author wait for no sync");
        let id = st.build(Some("o/h"), 1).unwrap().expect("build 1").id;
        let ended = synced(&mut st, &|st| {
            st.finish(id, BuildState::Passed, &[]).unwrap();
        });
        assert_eq!(ended, 1, "a build's end is on the disk when recorded");
        let mailed = synced(&mut st, &|st| {
            st.set_mail(id, "not sent: no recipients").unwrap();
        });
        assert_eq!(mailed, 0, "what became of its mail waits for no sync");
    }

    #[test]
    fn tasks_are_claimed_once_leased_chunked_and_expired() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mut st) in both(dir.path()) {
            tasks_on(name, &mut st);
        }
    }

    fn tasks_on(backend: &str, st: &mut Store) {
        use tasks::{Beat, parse_labels};
        let b = st
            .enqueue(&NewBuild {
                repo: "o/t".into(),
                commit: "abc".into(),
                event: "push".into(),
                ..NewBuild::default()
            })
            .unwrap();
        let linux = parse_labels("os=linux arch=amd64");
        let osx = parse_labels("os=osx arch=amd64");
        let t1 = st.open_task(b.id, "1.1", &osx, "").unwrap();
        let t2 = st
            .open_task(b.id, "1.2", &linux, "the compiled 1.2")
            .unwrap();
        assert_eq!(
            st.open_task(b.id, "1.2", &linux, "").unwrap().id,
            t2.id,
            "{backend}: one task per job"
        );
        let w = parse_labels("os=linux arch=amd64 dist=bookworm");
        let (got, spec) = st
            .claim_task("w1", "", &w, 60_000, "h")
            .unwrap()
            .expect("the linux job");
        assert_eq!(
            (got.id, got.state, got.worker.as_deref(), spec.as_str()),
            (t2.id, Status::Running, Some("w1"), "the compiled 1.2")
        );
        assert!(
            st.claim_task("w2", "", &w, 60_000, "h").unwrap().is_none(),
            "{backend}: nothing else for linux"
        );
        for seq in [0, 1, 1, 3] {
            st.add_chunk(&got, 1, seq, format!("c{seq} ").as_bytes())
                .unwrap();
        }
        // What a call from w2 finds: w1's task (the server answers 409), w2 not revoked.
        let (found, revoked) = st.task_call(t2.id, "w2").unwrap();
        assert_eq!(
            (found.and_then(|t| t.worker), revoked),
            (Some("w1".to_string()), false),
            "{backend}: not w2's"
        );
        assert_eq!(st.task_call(999_999, "w2").unwrap(), (None, false));
        assert_eq!(
            st.chunks(t2.id, 1, 0).unwrap(),
            vec![b"c0 ".to_vec(), b"c1 ".to_vec()],
            "{backend}: up to the gap"
        );
        // What a worker is told: held through 1 (chunk 2 is missing), so it sends 2
        // and 3 again; what follows a gap can still be read, with its numbers.
        assert_eq!(st.chunks_held(t2.id, 1, 3).unwrap(), 1, "{backend}");
        assert_eq!(st.chunks_held(t2.id, 1, 1).unwrap(), 1, "{backend}");
        assert_eq!(
            st.chunks_from(t2.id, 1, 2).unwrap(),
            vec![(3, b"c3 ".to_vec())],
            "{backend}"
        );
        st.add_chunk(&got, 1, 2, b"c2 ").unwrap();
        assert_eq!(st.chunks_held(t2.id, 1, 3).unwrap(), 3, "{backend}");
        assert_eq!(st.chunks(t2.id, 1, 2).unwrap().concat(), b"c2 c3 ");
        assert_eq!(
            st.beat(t2.id, 1, "w1", 60_000).unwrap(),
            Beat::Held { cancel: false }
        );
        assert_eq!(st.beat(t2.id, 1, "w2", 60_000).unwrap(), Beat::Lost);
        // The lease runs out: errored, and the worker that comes back has lost it.
        assert!(
            !st.expire_task(t2.id, tasks::now_ms(), "gone", false)
                .unwrap(),
            "{backend}: still leased"
        );
        assert!(
            st.expire_task(
                t2.id,
                tasks::now_ms() + 120_000,
                "worker w1 stopped answering",
                false
            )
            .unwrap()
        );
        let t = st.task(t2.id).unwrap().unwrap();
        assert_eq!(
            (t.state, t.outcome.as_deref()),
            (Status::Errored, Some("worker w1 stopped answering"))
        );
        assert_eq!(st.beat(t2.id, 1, "w1", 60_000).unwrap(), Beat::Lost);
        assert!(
            !st.end_task(t2.id, 1, "w1", Status::Passed, "{}").unwrap(),
            "{backend}: too late"
        );
        // The osx job: retried when its lease is lost, then canceled while running.
        let (o, _) = st
            .claim_task("mac", "", &parse_labels("os=osx arch=amd64"), 1, "h")
            .unwrap()
            .unwrap();
        assert_eq!(o.id, t1.id);
        assert!(
            st.expire_task(o.id, tasks::now_ms() + 10, "x", true)
                .unwrap()
        );
        let (again, _) = st
            .claim_task("mac2", "", &osx, 60_000, "h")
            .unwrap()
            .unwrap();
        assert_eq!((again.attempt, again.worker.as_deref()), (2, Some("mac2")));
        st.cancel_tasks(b.id, "canceled").unwrap();
        assert_eq!(
            st.beat(o.id, 2, "mac2", 60_000).unwrap(),
            Beat::Held { cancel: true }
        );
        assert!(
            st.end_task(o.id, 2, "mac2", Status::Canceled, "{}")
                .unwrap()
        );
        assert_eq!(
            st.task_attempts(b.id)
                .unwrap()
                .into_iter()
                .map(|(n, ws)| (n, ws.last().cloned().unwrap_or_default()))
                .collect::<Vec<_>>(),
            vec![
                ("1.1".to_string(), "mac2".to_string()),
                ("1.2".to_string(), "w1".to_string())
            ]
        );
        st.saw_worker(&tasks::WorkerRow {
            name: "w1".into(),
            labels: w.clone(),
            seen_at: 5,
            task: Some(t2.id),
            draining: false,
        })
        .unwrap();
        st.saw_worker(&tasks::WorkerRow {
            name: "w1".into(),
            labels: w.clone(),
            seen_at: 6,
            task: None,
            draining: true,
        })
        .unwrap();
        let ws = st.workers().unwrap();
        assert_eq!(
            (ws.len(), ws[0].seen_at, ws[0].task, ws[0].draining),
            (1, 6, None, true),
            "{backend}"
        );
        st.restart(b.id).unwrap();
        assert!(
            st.task(t2.id).unwrap().is_none(),
            "{backend}: a restart runs its jobs anew"
        );
        // A node that stops renewing its builds' lease leaves them to another.
        let c = st.claim().unwrap().unwrap();
        st.hold_build(c.id, "n1", tasks::now_ms() + 60_000).unwrap();
        assert!(st.take_over("n2", tasks::now_ms(), 0).unwrap().is_none());
        st.hold_build(c.id, "n1", 1).unwrap();
        assert_eq!(
            st.take_over("n2", tasks::now_ms(), tasks::now_ms() + 60_000)
                .unwrap()
                .map(|r| r.id),
            Some(c.id)
        );
        assert!(
            st.take_over("n3", tasks::now_ms(), 0).unwrap().is_none(),
            "{backend}: n2 holds it"
        );
    }

    /// issue 15: finished logs leave the rows (zstd files beside the embedded store;
    /// a PostgreSQL store without a log_url keeps them in its rows), and retention
    /// prunes what no rule keeps, never a branch's last builds or a repository's newest.
    /// Both backends.
    #[test]
    fn logs_leave_the_rows_and_retention_prunes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        for (name, mut st) in both(dir.path()) {
            let embedded = name == "sqlite";
            let mut ids = Vec::new();
            // A build of `repo`'s `branch` that passed, its log made from its number.
            let passed =
                |st: &mut Store, repo: &str, branch: &str, log: &dyn Fn(u64) -> Vec<u8>| {
                    let b = st
                        .enqueue(&NewBuild {
                            repo: repo.into(),
                            branch: Some(branch.into()),
                            commit: "abc".into(),
                            event: "push".into(),
                            ..NewBuild::default()
                        })
                        .unwrap();
                    st.claim().unwrap();
                    let mut job = JobRow::passed_for_tests();
                    job.log = log(b.number);
                    st.finish(b.id, BuildState::Passed, &[job]).unwrap();
                    b.id
                };
            for branch in ["main", "main", "main", "main", "dev", "main"] {
                let long = |n: u64| format!("log of build {n}\n").repeat(400).into_bytes();
                ids.push(passed(&mut st, "o/r", branch, &long));
            }
            let jobs = st.jobs(ids[0]).unwrap();
            assert!(jobs[0].log.starts_with(b"log of build 1\n"), "{name}");
            let rows = st
                .db()
                .query(
                    "SELECT log, log_ref FROM jobs WHERE build_id = $1",
                    &[ids[0].into()],
                )
                .unwrap();
            let in_row = matches!(&rows[0][0], tasks::Value::Bytes(b) if !b.is_empty());
            assert_eq!(in_row, !embedded, "{name}: {rows:?}");
            let file = dir
                .path()
                .join(format!("logs/archive/{}/1.1.log.zst", ids[0]));
            assert_eq!(file.exists(), embedded, "{name}");
            // A short log stays in its row whatever the store: a file of its own
            // would cost more than it holds.
            let short = passed(&mut st, "o/short", "main", &|_| b"a short log\n".to_vec());
            let rows = st
                .db()
                .query(
                    "SELECT log, log_ref FROM jobs WHERE build_id = $1",
                    &[short.into()],
                )
                .unwrap();
            assert!(
                matches!(&rows[0][..], [tasks::Value::Bytes(b), r] if b == b"a short log\n"
                    && (matches!(r, tasks::Value::Null)
                        || matches!(r, tasks::Value::Text(t) if t.is_empty()))),
                "{name}: {rows:?}"
            );
            assert!(
                !dir.path().join(format!("logs/archive/{short}")).exists(),
                "{name}"
            );
            assert_eq!(st.jobs(short).unwrap()[0].log, b"a short log\n", "{name}");
            // Keep the last two of each branch: main's builds 1-3 go (and their logs).
            let policy = retention::Policy {
                keep_builds: Some(2),
                ..Default::default()
            };
            assert_eq!(st.prune(&policy, now()).unwrap(), 3, "{name}");
            let left: Vec<u64> = st
                .builds(Some("o/r"), None)
                .unwrap()
                .iter()
                .map(|b| b.number)
                .collect();
            assert_eq!(
                left,
                [6, 5, 4],
                "{name}: main keeps its last two, dev its one"
            );
            assert!(!file.exists(), "{name}: the pruned build's log went too");
            assert!(st.jobs(ids[0]).unwrap().is_empty());
            // Days: everything ended just now is kept.
            let days = retention::Policy {
                keep_days: Some(1),
                ..Default::default()
            };
            assert_eq!(st.prune(&days, now()).unwrap(), 0, "{name}");
        }
    }

    /// Writes made together are one commit: all of them, or (when one fails) none.
    #[test]
    fn writes_made_together_are_kept_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let st = Store::open(dir.path()).unwrap();
        let seen = |name: &str| tasks::WorkerRow {
            name: name.into(),
            labels: Default::default(),
            seen_at: 1,
            task: None,
            draining: false,
        };
        let failed: Result<(), StoreError> = st.together(true, |s| {
            s.saw_worker(&seen("first"))?;
            Err(StoreError::Data("the second write failed".into()))
        });
        assert!(failed.is_err());
        assert!(st.workers().unwrap().is_empty(), "rolled back");
        for lazily in [true, false] {
            st.together(lazily, |s| {
                s.saw_worker(&seen("a"))?;
                s.saw_worker(&seen("b"))
            })
            .unwrap();
        }
        let names: Vec<String> = st.workers().unwrap().into_iter().map(|w| w.name).collect();
        assert_eq!(names, ["a", "b"]);
        // The store takes writes of its own after a group, committed as before.
        st.saw_worker(&seen("c")).unwrap();
        drop(st);
        let again = Store::open(dir.path()).unwrap();
        assert_eq!(again.workers().unwrap().len(), 3);
    }

    /// A store made before jobs had a reason opens, and gains the column.
    #[test]
    fn an_older_store_gains_the_job_reason_column() {
        let dir = tempfile::tempdir().unwrap();
        {
            let conn = rusqlite::Connection::open(dir.path().join("runway.db")).unwrap();
            conn.execute_batch(sqlite::JOBS_BEFORE_REASON).unwrap();
            conn.execute_batch(
                "INSERT INTO jobs VALUES (1, '1.1', NULL, '', 'passed', 5, x'6869');",
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
    /// mail are kept. Both backends.
    #[test]
    fn builds_page_by_id_and_jobs_keep_stage_deploys_and_mail() {
        let dir = tempfile::tempdir().unwrap();
        for (name, st) in both(dir.path()) {
            page_stage_deploys_mail(name, st);
        }
    }

    fn page_stage_deploys_mail(backend: &str, mut st: Store) {
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
            "sent to a@example.com",
            "{backend}"
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
        rusqlite::Connection::open(dir.path().join("runway.db"))
            .unwrap()
            .execute(
                "UPDATE builds SET started_at = started_at + 100 WHERE id = ?1",
                [first.id],
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

    /// Both backends: numbers per repository (also after reopening), the previous
    /// finished build per branch, restart, cancel of superseded builds, deliveries and
    /// the outbox.
    #[test]
    fn numbers_per_repo_survive_reopening_and_previous_state_is_per_branch() {
        let t = tempfile::tempdir().unwrap();
        let url = cluster::shared().database("numbers");
        let pg = t.path().join("pg");
        let open: [(&str, &dyn Fn() -> Store); 2] = [
            ("sqlite", &|| Store::open(t.path()).unwrap()),
            ("postgres", &|| Store::connect(&pg, Some(&url)).unwrap()),
        ];
        for (backend, open) in open {
            numbers_and_more(backend, open);
        }
    }

    fn numbers_and_more(backend: &str, open: &dyn Fn() -> Store) {
        let nb = |repo: &str, branch: &str| NewBuild {
            repo: repo.into(),
            branch: Some(branch.into()),
            commit: "abc".into(),
            event: "push".into(),
            ..NewBuild::default()
        };
        let mut s = open();
        let b1 = s.begin(&nb("o/a", "main")).unwrap();
        assert_eq!((b1.number, b1.previous_state), (1, None));
        s.finish(b1.id, BuildState::Failed, &[]).unwrap();
        let other = s.begin(&nb("o/b", "main")).unwrap();
        assert_eq!(other.number, 1);
        drop(s);
        let mut s = open();
        let b2 = s.begin(&nb("o/a", "main")).unwrap();
        assert_eq!(
            (b2.number, b2.previous_state),
            (2, Some(Status::Failed)),
            "{backend}"
        );
        let dev = s.begin(&nb("o/a", "dev")).unwrap();
        assert_eq!((dev.number, dev.previous_state), (3, None), "{backend}");
        assert_eq!(s.builds(Some("o/a"), None).unwrap().len(), 3);
        // A queued build superseded by a newer one of its branch; a claim; a restart.
        let old = s.enqueue(&nb("o/a", "main")).unwrap();
        let newer = s.enqueue(&nb("o/a", "main")).unwrap();
        assert_eq!(
            s.cancel_superseded(&newer).unwrap().queued,
            [old.number],
            "{backend}"
        );
        // Issue 28 (1): a build taken from the queue with no job started is superseded
        // too (its node cancels it); once a job of it started, it is not.
        let taken = s.enqueue(&nb("o/a", "waits")).unwrap();
        let started = s.enqueue(&nb("o/a", "waits")).unwrap();
        s.set_state(taken.id, Status::Running, None).unwrap();
        s.set_state(started.id, Status::Running, None).unwrap();
        s.jobs_started(started.id).unwrap();
        let newest = s.enqueue(&nb("o/a", "waits")).unwrap();
        let cut = s.cancel_superseded(&newest).unwrap();
        assert_eq!(cut.queued, Vec::<u64>::new(), "{backend}");
        assert_eq!(cut.waiting, [(taken.id, taken.number)], "{backend}");
        assert_eq!(
            s.by_id(taken.id).unwrap().unwrap().reason.as_deref(),
            Some(format!("superseded by build #{}", newest.number).as_str()),
            "{backend}"
        );
        for b in [&taken, &started, &newest] {
            s.set_state(b.id, Status::Canceled, None).unwrap();
        }
        // Only builds queued by a time: none queued a minute ago, this one now.
        assert!(
            s.claim_waiting(Store::now() - 60).unwrap().is_none(),
            "{backend}"
        );
        let claimed = s.claim_waiting(Store::now()).unwrap().unwrap();
        assert_eq!((claimed.id, claimed.state), (newer.id, Status::Running));
        assert!(s.claim().unwrap().is_none(), "{backend}");
        // Ended by the node holding it, once: not by another, not twice.
        s.hold_build(newer.id, "node-a", i64::MAX).unwrap();
        let job = [JobRow::passed_for_tests()];
        assert!(
            !s.finish_held(newer.id, "node-b", BuildState::Passed, &job)
                .unwrap(),
            "{backend}"
        );
        assert_eq!(s.by_id(newer.id).unwrap().unwrap().state, Status::Running);
        assert!(
            s.finish_held(newer.id, "node-a", BuildState::Passed, &job)
                .unwrap(),
            "{backend}"
        );
        // A job's line times come back as they went in.
        assert_eq!(
            s.jobs(newer.id).unwrap()[0].times,
            [1_000, 1_250],
            "{backend}"
        );
        assert!(
            !s.finish_held(newer.id, "node-a", BuildState::Failed, &job)
                .unwrap(),
            "{backend}"
        );
        assert_eq!(s.by_id(newer.id).unwrap().unwrap().state, Status::Passed);
        s.restart(newer.id).unwrap();
        let again = s.by_id(newer.id).unwrap().unwrap();
        assert_eq!((again.state, again.finished_at), (Status::Queued, None));
        assert!(s.jobs(newer.id).unwrap().is_empty(), "{backend}");
        // A claim names its node in the same statement: one whose answer was lost with
        // the connection is still found as that node's.
        let held = s.claim_for("node-c", i64::MAX).unwrap().unwrap();
        assert_eq!(held.id, newer.id, "{backend}");
        let ids: Vec<i64> = s.held_by("node-c").unwrap().iter().map(|b| b.id).collect();
        assert_eq!(ids, [newer.id], "{backend}");
        assert!(s.held_by("node-a").unwrap().is_empty(), "{backend}");
        s.set_state(newer.id, Status::Passed, None).unwrap();
        // Deliveries (recorded with the build they made) and the outbox.
        let first = s
            .enqueue(&NewBuild {
                delivered_as: vec!["github:1".to_string()],
                ..nb("o/a", "main")
            })
            .unwrap();
        assert_eq!(s.delivery("github:1", 0).unwrap().unwrap().id, first.id);
        // A delivery's keys (its id, what it pushes), a key said twice once; a key seen
        // again now names the newer build.
        let keys = ["github:2", "push:o/app:main:abc", "github:2", "github:1"].map(String::from);
        let later = s
            .enqueue(&NewBuild {
                delivered_as: keys.to_vec(),
                ..nb("o/a", "main")
            })
            .unwrap();
        for k in ["github:1", "github:2", "push:o/app:main:abc"] {
            assert_eq!(
                s.delivery(k, 0).unwrap().unwrap().id,
                later.id,
                "{k}: {backend}"
            );
        }
        // Old keys forgotten: none is newer than now + 1.
        s.forget_deliveries(Store::now() + 1).unwrap();
        assert!(s.delivery("github:2", 0).unwrap().is_none(), "{backend}");
        let mail = OutboxMail {
            id: 0,
            build_id: b2.id,
            sender: "ci@example.com".into(),
            recipients: vec!["a@example.com".into(), "b@example.com".into()],
            message: b"Subject: x\r\n\r\nbody".to_vec(),
            attempts: 1,
        };
        s.queue_mail(&mail, "refused", 0).unwrap();
        let due = s.due_mails(1).unwrap();
        assert_eq!(
            (due.len(), &due[0].recipients),
            (1, &mail.recipients),
            "{backend}"
        );
        s.mail_tried(due[0].id, Err("again"), 0, 2).unwrap();
        assert!(s.due_mails(1).unwrap().is_empty(), "given up: {backend}");
        let mut interrupted = s.mark_interrupted().unwrap();
        interrupted.sort();
        let running = [
            ("o/a".to_string(), 2),
            ("o/a".to_string(), 3),
            ("o/b".to_string(), 1),
        ];
        assert_eq!(interrupted, running, "{backend}");
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
