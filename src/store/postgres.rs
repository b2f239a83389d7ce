//! The shared backend: PostgreSQL, named by runway.toml's `database_url_env` (the
//! variable holding a `postgres://` URL), for several `runway serve` nodes at once.
//! Versioned migrations are applied at start under an advisory lock (nodes starting
//! together take turns); a build's number is taken under a per-repository advisory
//! lock; the queue is claimed with `FOR UPDATE SKIP LOCKED`, so two nodes never take
//! the same build and neither waits for the other.

use postgres::{Client, NoTls, Row};

use super::tasks::Value;
use super::{Backend, BuildRow, COLUMNS, JobRow, NewBuild, Status, StoreError, now};

/// The migrations, in order; each runs once, in a transaction.
pub(super) const MIGRATIONS: &[&str] = &[
    "
CREATE TABLE builds (
  id BIGSERIAL PRIMARY KEY,
  repo TEXT NOT NULL,
  number BIGINT NOT NULL,
  branch TEXT, tag TEXT,
  commit_sha TEXT NOT NULL,
  event TEXT NOT NULL,
  message TEXT NOT NULL DEFAULT '',
  state TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  finished_at BIGINT,
  previous_state TEXT,
  commit_range TEXT NOT NULL DEFAULT '',
  reason TEXT,
  author TEXT NOT NULL DEFAULT '',
  mail TEXT NOT NULL DEFAULT '',
  UNIQUE (repo, number)
);
CREATE INDEX builds_by_repo ON builds (repo, id);
CREATE INDEX builds_queued ON builds (id) WHERE state = 'queued';
CREATE TABLE outbox (
  id BIGSERIAL PRIMARY KEY,
  build_id BIGINT NOT NULL,
  sender TEXT NOT NULL,
  recipients TEXT NOT NULL,
  message BYTEA NOT NULL,
  attempts BIGINT NOT NULL DEFAULT 0,
  next_at_ms BIGINT NOT NULL,
  last_error TEXT,
  state TEXT NOT NULL DEFAULT 'pending'
);
CREATE TABLE deliveries (
  key TEXT PRIMARY KEY,
  build_id BIGINT NOT NULL,
  at BIGINT NOT NULL
);
CREATE TABLE jobs (
  build_id BIGINT NOT NULL REFERENCES builds(id),
  seq BIGSERIAL,
  number TEXT NOT NULL,
  name TEXT,
  env TEXT NOT NULL,
  result TEXT NOT NULL,
  duration_ms BIGINT NOT NULL,
  log BYTEA NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  stage TEXT NOT NULL DEFAULT '',
  deploys TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (build_id, number)
);
",
    "
ALTER TABLE builds ADD COLUMN node TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN lease_until BIGINT NOT NULL DEFAULT 0;
CREATE TABLE tasks (
  id BIGSERIAL PRIMARY KEY,
  build_id BIGINT NOT NULL,
  number TEXT NOT NULL,
  needs TEXT NOT NULL,
  state TEXT NOT NULL,
  attempt BIGINT NOT NULL DEFAULT 1,
  worker TEXT,
  lease_until BIGINT NOT NULL DEFAULT 0,
  cancel BIGINT NOT NULL DEFAULT 0,
  outcome TEXT,
  created_at BIGINT NOT NULL,
  UNIQUE (build_id, number)
);
CREATE INDEX tasks_queued ON tasks (id) WHERE state = 'queued';
CREATE TABLE task_chunks (
  task_id BIGINT NOT NULL,
  attempt BIGINT NOT NULL,
  seq BIGINT NOT NULL,
  data BYTEA NOT NULL,
  PRIMARY KEY (task_id, attempt, seq)
);
CREATE TABLE workers (
  name TEXT PRIMARY KEY,
  labels TEXT NOT NULL,
  seen_at BIGINT NOT NULL,
  task_id BIGINT,
  draining BIGINT NOT NULL DEFAULT 0
);
",
    "
ALTER TABLE jobs ADD COLUMN log_ref TEXT NOT NULL DEFAULT '';
CREATE TABLE runway_settings (key TEXT PRIMARY KEY, value TEXT NOT NULL);
",
    "
CREATE TABLE revoked_workers (name TEXT PRIMARY KEY, at BIGINT NOT NULL);
",
    "
ALTER TABLE tasks ADD COLUMN secret TEXT NOT NULL DEFAULT '';
",
    "
ALTER TABLE tasks ADD COLUMN held_by TEXT NOT NULL DEFAULT '';
",
    "
ALTER TABLE tasks ADD COLUMN spec TEXT NOT NULL DEFAULT '';
",
    "
ALTER TABLE builds ADD COLUMN jobs_started BIGINT NOT NULL DEFAULT 0;
",
    "
ALTER TABLE builds ADD COLUMN pull_request BIGINT;
ALTER TABLE builds ADD COLUMN pr TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN request TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN cancel_requested BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN line_times TEXT NOT NULL DEFAULT '';
ALTER TABLE builds ADD COLUMN rerun TEXT NOT NULL DEFAULT '';
CREATE TABLE job_attempts (
  build_id BIGINT NOT NULL,
  number TEXT NOT NULL,
  attempt BIGINT NOT NULL,
  result TEXT NOT NULL,
  reason TEXT NOT NULL DEFAULT '',
  duration_ms BIGINT NOT NULL DEFAULT 0,
  log BYTEA NOT NULL,
  line_times TEXT NOT NULL DEFAULT '',
  PRIMARY KEY (build_id, number, attempt)
);
CREATE TABLE crons (
  repo TEXT NOT NULL,
  branch TEXT NOT NULL,
  period TEXT NOT NULL,
  next_at BIGINT NOT NULL,
  last_run BIGINT NOT NULL DEFAULT 0,
  PRIMARY KEY (repo, branch, period)
);
CREATE TABLE statuses (
  id BIGSERIAL PRIMARY KEY,
  build_id BIGINT NOT NULL,
  phase TEXT NOT NULL,
  repo TEXT NOT NULL,
  url TEXT NOT NULL,
  body TEXT NOT NULL,
  sha TEXT NOT NULL,
  context TEXT NOT NULL,
  state TEXT NOT NULL,
  outcome TEXT NOT NULL DEFAULT 'pending',
  attempts BIGINT NOT NULL DEFAULT 0,
  next_at_ms BIGINT NOT NULL DEFAULT 0,
  claimed_until_ms BIGINT NOT NULL DEFAULT 0,
  last_error TEXT NOT NULL DEFAULT '',
  UNIQUE (build_id, phase)
);
",
    "
CREATE TABLE logins (
  state TEXT PRIMARY KEY,
  nonce TEXT NOT NULL,
  verifier TEXT NOT NULL,
  next TEXT NOT NULL,
  created_at BIGINT NOT NULL
);
CREATE TABLE sessions (
  id TEXT PRIMARY KEY,
  name TEXT NOT NULL,
  groups TEXT NOT NULL,
  csrf TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL
);
CREATE TABLE tokens (
  id BIGSERIAL PRIMARY KEY,
  hash TEXT NOT NULL UNIQUE,
  owner TEXT NOT NULL,
  groups TEXT NOT NULL,
  name TEXT NOT NULL,
  repos TEXT NOT NULL,
  role TEXT NOT NULL,
  created_at BIGINT NOT NULL,
  expires_at BIGINT NOT NULL,
  revoked_at BIGINT
);
CREATE TABLE audit (
  id BIGSERIAL PRIMARY KEY,
  at BIGINT NOT NULL,
  who TEXT NOT NULL,
  action TEXT NOT NULL,
  repo TEXT NOT NULL,
  build_id BIGINT,
  detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX audit_by_build ON audit (build_id);
",
    // What a build and the pollers look up by state, branch, due time and age,
    // without reading every row of the past.
    "
CREATE INDEX builds_running ON builds (node) WHERE state = 'running';
CREATE INDEX builds_by_branch ON builds (repo, branch, id);
CREATE INDEX outbox_due ON outbox (next_at_ms) WHERE state = 'pending';
CREATE INDEX deliveries_by_at ON deliveries (at);
CREATE INDEX statuses_due ON statuses (id) WHERE outcome = 'pending';
",
    // What an intake looks up among a line of builds (a repository's branch, tag or
    // pull request): the previous build of it, and the older ones still waiting that a
    // new one cancels (sqlite.rs's LINE_INDEXES; the previous one by number here).
    "
CREATE INDEX builds_by_line ON builds (repo, branch, tag, pull_request, number);
CREATE INDEX builds_waiting ON builds (repo, branch, tag, pull_request)
  WHERE state IN ('queued', 'awaiting_approval');
",
    // The worker process a task was handed to (protocol::Claim::instance).
    "
ALTER TABLE tasks ADD COLUMN instance TEXT NOT NULL DEFAULT '';
",
];

/// The lock the migrations run under (any constant all nodes share).
const MIGRATION_LOCK: i64 = 0x72_75_6e_77_61_79;

fn status(r: &Row, i: usize) -> Result<Status, StoreError> {
    let name: String = r.try_get(i)?;
    Status::parse(&name).map_err(StoreError::Data)
}

fn row(r: &Row) -> Result<BuildRow, StoreError> {
    let previous: Option<String> = r.try_get(10)?;
    Ok(BuildRow {
        id: r.try_get(0)?,
        repo: r.try_get(1)?,
        number: r.try_get::<_, i64>(2)? as u64,
        branch: r.try_get(3)?,
        tag: r.try_get(4)?,
        commit: r.try_get(5)?,
        event: r.try_get(6)?,
        state: status(r, 7)?,
        started_at: r.try_get(8)?,
        finished_at: r.try_get(9)?,
        previous_state: previous
            .map(|p| Status::parse(&p).map_err(StoreError::Data))
            .transpose()?,
        commit_range: r.try_get(11)?,
        reason: r.try_get(12)?,
        message: r.try_get(13)?,
        author: r.try_get(14)?,
        mail: r.try_get(15)?,
        pull_request: super::pr_of(&r.try_get::<_, String>(16)?),
        request: super::request_of(&r.try_get::<_, String>(17)?),
        rerun: Some(r.try_get::<_, String>(18)?).filter(|r| !r.is_empty()),
    })
}

/// The PostgreSQL store: a handle on this process's pool for its URL. The synchronous
/// client drives a runtime of its own, which cannot run inside the server's, so each
/// connection lives on a thread of its own; a call goes to whichever of the pool's
/// threads is free, over one channel, and waits for its answer. Every `Store` of the
/// process on the same URL shares the pool (a node following 200 builds still holds
/// [`pool_size`] connections), and a burst of calls waits for a connection rather than
/// failing.
///
/// A connection that is lost (the database restarted, `pg_terminate_backend`) is made
/// again on the next call, with a backoff between attempts while the database is
/// unreachable; meanwhile calls fail at once with [`StoreError::Unavailable`] (never
/// hang), and [`settling`] says so. The change and its end are logged once each.
pub(in crate::store) struct Postgres {
    pool: std::sync::Arc<Pool>,
}

type Call = Box<dyn FnOnce(Result<&mut Inner, StoreError>) + Send>;

/// Connections per URL (runway.toml's `database_pool`).
static POOL_SIZE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(4);

/// The pools of this process, by URL.
static POOLS: std::sync::Mutex<Vec<(String, std::sync::Weak<Pool>)>> =
    std::sync::Mutex::new(Vec::new());

/// Sets how many connections each pool made from now on holds (at least 1).
pub fn set_pool_size(n: usize) {
    POOL_SIZE.store(n.max(1), std::sync::atomic::Ordering::SeqCst);
}

/// How many connections a pool holds.
pub fn pool_size() -> usize {
    POOL_SIZE.load(std::sync::atomic::Ordering::SeqCst)
}

/// True while the database is unreachable, and for `lease` after it answers again:
/// leases (a node's hold on its builds, a worker's on its job) could not be renewed
/// meanwhile, so none is taken as lapsed until their holders have had a lease's time
/// to renew them.
pub fn settling(lease: std::time::Duration) -> bool {
    POOLS
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .filter_map(|(_, w)| w.upgrade())
        .any(|p| {
            let h = p.health.lock().unwrap_or_else(|e| e.into_inner());
            h.down.is_some() || h.back_at.is_some_and(|at| at.elapsed() < lease)
        })
}

/// One URL's connections.
struct Pool {
    url: String,
    calls: std::sync::mpsc::Sender<Call>,
    health: std::sync::Mutex<Health>,
    /// Bumped each time a connection to the database is found lost (a pooled one, or
    /// the node's LISTEN): every connection made before is checked before its next
    /// call, so one restart fails one call at most, not one per pooled connection.
    losses: std::sync::atomic::AtomicU64,
}

/// Whether the database answers, and when to try again.
#[derive(Default)]
struct Health {
    /// Since when it has not (and why, as first seen).
    down: Option<(std::time::Instant, String)>,
    /// No connection is attempted before this.
    retry_at: Option<std::time::Instant>,
    /// The wait after the next failed attempt.
    backoff: std::time::Duration,
    /// When it answered again after it had not.
    back_at: Option<std::time::Instant>,
}

/// The first wait after a failed attempt to connect, and the longest.
const BACKOFF: (std::time::Duration, std::time::Duration) = (
    std::time::Duration::from_millis(200),
    std::time::Duration::from_secs(5),
);

impl Pool {
    /// The pool for `url`: this process's, or a new one whose first connection is made
    /// (and the migrations applied) before it is returned.
    fn get(url: &str) -> Result<std::sync::Arc<Pool>, StoreError> {
        let mut pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
        pools.retain(|(_, w)| w.strong_count() > 0);
        if let Some(p) = pools
            .iter()
            .find(|(u, _)| u == url)
            .and_then(|(_, w)| w.upgrade())
        {
            return Ok(p);
        }
        // The synchronous client cannot connect on a thread that drives a runtime (the
        // server's): the first connection is made on a thread of its own.
        let u = url.to_string();
        let first = std::thread::spawn(move || Inner::connect(&u))
            .join()
            .map_err(|_| StoreError::Data("the PostgreSQL thread ended".into()))??;
        let (calls, queue) = std::sync::mpsc::channel::<Call>();
        let pool = std::sync::Arc::new(Pool {
            url: url.to_string(),
            calls,
            health: std::sync::Mutex::new(Health::default()),
            losses: std::sync::atomic::AtomicU64::new(0),
        });
        let queue = std::sync::Arc::new(std::sync::Mutex::new(queue));
        let mut first = Some(first);
        for i in 0..pool_size() {
            let (queue, weak, inner) = (
                queue.clone(),
                std::sync::Arc::downgrade(&pool),
                first.take(),
            );
            std::thread::Builder::new()
                .name(format!("runway-postgres-{i}"))
                .spawn(move || serve_calls(&queue, &weak, inner))?;
        }
        pools.push((url.to_string(), std::sync::Arc::downgrade(&pool)));
        Ok(pool)
    }

    /// A connection for a call: `inner` when it is open, else a new one (unless the
    /// backoff says not yet).
    fn connection<'a>(&self, inner: &'a mut Option<Inner>) -> Result<&'a mut Inner, StoreError> {
        if inner.as_ref().is_some_and(|i| i.client.is_closed()) {
            *inner = None;
            self.lost("the connection was closed");
        }
        if inner.is_none() {
            let now = std::time::Instant::now();
            let wait = self
                .health
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .retry_at;
            if wait.is_some_and(|at| now < at) {
                return Err(self.unavailable());
            }
            match postgres::Client::connect(&self.url, NoTls) {
                Ok(client) => {
                    *inner = Some(Inner { client });
                    self.back();
                }
                Err(e) => {
                    self.lost(&e.to_string());
                    let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
                    h.backoff = (h.backoff * 2).clamp(BACKOFF.0, BACKOFF.1);
                    h.retry_at = Some(now + h.backoff);
                    drop(h);
                    return Err(self.unavailable());
                }
            }
        }
        Ok(inner.as_mut().expect("made above"))
    }

    /// The database is unreachable: said once, when it starts.
    fn lost(&self, why: &str) {
        self.losses
            .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if h.down.is_none() {
            tracing::error!(
                error = why,
                "the build store (PostgreSQL) is unreachable; runway keeps trying"
            );
            h.down = Some((std::time::Instant::now(), why.to_string()));
        }
    }

    /// A connection was made: said once, when the database was unreachable before.
    fn back(&self) {
        let mut h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((since, _)) = h.down.take() {
            h.back_at = Some(std::time::Instant::now());
            tracing::warn!(
                after_ms = since.elapsed().as_millis() as u64,
                "the build store (PostgreSQL) is reachable again"
            );
        }
        h.retry_at = None;
        h.backoff = std::time::Duration::ZERO;
    }

    fn unavailable(&self) -> StoreError {
        let h = self.health.lock().unwrap_or_else(|p| p.into_inner());
        let why = h.down.as_ref().map_or("no connection", |(_, w)| w.as_str());
        StoreError::Unavailable(format!("PostgreSQL is unreachable ({why})"))
    }
}

/// True when `e` says the connection is gone (closed, or ended by the server: class 08
/// connection exception, class 57 operator intervention such as a restart or
/// `pg_terminate_backend`), rather than that the statement was wrong.
fn lost_connection(e: &postgres::Error) -> bool {
    e.is_closed()
        || e.code().is_some_and(|c| {
            let code = c.code();
            code.starts_with("08") || code.starts_with("57")
        })
}

/// A connection idle this long is checked before a call uses it (a database that
/// restarted meanwhile ended it), so the call goes to a new one instead of failing.
const CHECK_AFTER_IDLE: std::time::Duration = std::time::Duration::from_secs(1);

/// One connection's thread: takes calls until every handle on the pool is gone.
fn serve_calls(
    queue: &std::sync::Mutex<std::sync::mpsc::Receiver<Call>>,
    pool: &std::sync::Weak<Pool>,
    mut inner: Option<Inner>,
) {
    let mut used = std::time::Instant::now();
    // The losses known when this connection was last known good.
    let mut checked = pool
        .upgrade()
        .map_or(0, |p| p.losses.load(std::sync::atomic::Ordering::SeqCst));
    loop {
        let call = match queue.lock().unwrap_or_else(|p| p.into_inner()).recv() {
            Ok(c) => c,
            Err(_) => return,
        };
        let Some(pool) = pool.upgrade() else {
            call(Err(StoreError::Unavailable("the store is closing".into())));
            return;
        };
        let losses = pool.losses.load(std::sync::atomic::Ordering::SeqCst);
        if (used.elapsed() > CHECK_AFTER_IDLE || losses != checked)
            && let Some(i) = &mut inner
            && i.client
                .is_valid(std::time::Duration::from_secs(2))
                .is_err()
        {
            inner = None;
        }
        checked = losses;
        used = std::time::Instant::now();
        match pool.connection(&mut inner) {
            Ok(i) => {
                call(Ok(i));
                if inner.as_ref().is_some_and(|i| i.client.is_closed()) {
                    inner = None;
                    pool.lost("the connection was closed");
                }
            }
            Err(e) => call(Err(e)),
        }
    }
}

impl Postgres {
    /// This process's pool on `url` (made, with the migrations applied, on first use).
    pub fn connect(url: &str) -> Result<Postgres, StoreError> {
        Ok(Postgres {
            pool: Pool::get(url)?,
        })
    }

    /// Runs `f` on one of the pool's connections; its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.pool
            .calls
            .send(Box::new(move |inner| {
                let _ = tx.send(inner.and_then(f));
            }))
            .map_err(|_| StoreError::Unavailable("the PostgreSQL threads ended".into()))?;
        match rx.recv() {
            Ok(Err(StoreError::Postgres(e))) if lost_connection(&e) => {
                Err(StoreError::Unavailable(e.to_string()))
            }
            Ok(answer) => answer,
            Err(_) => Err(StoreError::Unavailable(
                "the PostgreSQL threads ended".into(),
            )),
        }
    }

    /// The version the database's schema is at.
    #[cfg(test)]
    pub fn version(&mut self) -> Result<i64, StoreError> {
        self.call(|i| i.version())
    }
}

/// `column` holds parameter `$n`, a NULL matching a NULL, written so that the planner
/// finds it in an index: `IS NOT DISTINCT FROM` is planned as a filter over every row
/// the rest of the condition leaves (a branch's first build read every build of its
/// repository), while this `OR`, planned with the parameter's value (every statement
/// is prepared for its call, so its plan is a custom one), becomes `column = 'x'` or
/// `column IS NULL`: index conditions both.
pub(super) fn same(column: &str, n: usize) -> String {
    format!("({column} = ${n} OR ({column} IS NULL AND ${n} IS NULL))")
}

/// The state of the last build that ended of a new build's line (by `builds_by_line`).
pub(super) fn previous() -> String {
    format!(
        "SELECT state FROM builds WHERE repo = $1 AND {} AND {} AND {}
           AND finished_at IS NOT NULL ORDER BY number DESC LIMIT 1",
        same("branch", 2),
        same("tag", 3),
        same("pull_request", 4)
    )
}

impl Backend for Postgres {
    fn same(&self, column: &str, n: usize) -> String {
        same(column, n)
    }
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        let (sql, args) = (sql.to_string(), args.to_vec());
        self.call(move |i| i.query(&sql, &args))
    }
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let (sql, args) = (sql.to_string(), args.to_vec());
        self.call(move |i| i.execute(&sql, &args))
    }
    fn notify(&mut self, payload: &str) -> Result<(), StoreError> {
        let payload = payload.to_string();
        self.call(move |i| i.notify(&payload))
    }
    fn insert(&mut self, b: &NewBuild, state: Status) -> Result<BuildRow, StoreError> {
        let b = b.clone();
        self.call(move |i| i.insert(&b, state))
    }
    fn claim(
        &mut self,
        queued_by: Option<i64>,
        holder: Option<(&str, i64)>,
    ) -> Result<Option<BuildRow>, StoreError> {
        let holder = holder.map(|(n, u)| (n.to_string(), u));
        self.call(move |i| i.claim(queued_by, holder.as_ref().map(|(n, u)| (n.as_str(), *u))))
    }
    fn mark_interrupted(&mut self, reason: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let reason = reason.to_string();
        self.call(move |i| i.mark_interrupted(&reason))
    }
    fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        self.call(move |i| i.restart(id))
    }
    fn finish(
        &mut self,
        id: i64,
        state: Status,
        jobs: &[JobRow],
        held_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let jobs = jobs.to_vec();
        let held_by = held_by.map(str::to_string);
        self.call(move |i| i.finish(id, state, &jobs, held_by.as_deref()))
    }
    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        self.call(move |i| i.jobs(build_id))
    }
    fn share(&self) -> Option<Box<dyn Backend>> {
        Some(Box::new(Postgres {
            pool: self.pool.clone(),
        }))
    }
}

/// The client, on the store's thread.
pub(in crate::store) struct Inner {
    client: Client,
}

/// The channel every change to a build is announced on (its id as the payload), so
/// that every node's lists and workers hear of it at once.
pub const CHANGES: &str = "runway_changes";

/// What a node announces to the others on [`CHANGES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Build `id` changed (queued, started, ended…).
    Build(i64),
    /// A task of build `id` changed (claimed, a log chunk, ended).
    Task(i64),
    /// A task of build `id` was queued for a worker.
    Queued(i64),
    /// Build `id` is to be canceled (by whichever node follows it).
    Cancel(i64),
    /// The listening connection was lost and is back: anything may have changed
    /// meanwhile (what was announced then was not heard), so read again.
    Resync,
}

impl Change {
    fn parse(payload: &str) -> Option<Change> {
        let num = |p: &str| payload.strip_prefix(p).and_then(|n| n.parse().ok());
        use super::tasks::{BUILD_CANCEL, TASK_CHANGED, TASK_QUEUED};
        if let Some(n) = num(TASK_CHANGED) {
            Some(Change::Task(n))
        } else if let Some(n) = num(TASK_QUEUED) {
            Some(Change::Queued(n))
        } else if let Some(n) = num(BUILD_CANCEL) {
            Some(Change::Cancel(n))
        } else {
            payload.parse().ok().map(Change::Build)
        }
    }
}

/// Listens on [`CHANGES`] with a connection of its own, on a thread of its own, and
/// calls `changed` with each build id announced (by any node, this one included),
/// until `changed` returns false. A lost connection is made again (with a backoff),
/// LISTEN again, and `changed` is told [`Change::Resync`]: what was announced meanwhile
/// was not heard. The first connection is made before this returns (an error if not).
pub fn listen(
    url: &str,
    changed: impl Fn(Change) -> bool + Send + 'static,
) -> Result<(), StoreError> {
    let url = url.to_string();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runway-listen".into())
        .spawn(move || {
            let first = match listening(&url) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(e));
                    return;
                }
            };
            let _ = ready.send(Ok(()));
            let mut client = Some(first);
            let mut backoff = BACKOFF.0;
            loop {
                let Some(mut c) = client.take() else {
                    // Lost: tried again after a pause, until a connection is made.
                    std::thread::sleep(backoff);
                    match listening(&url) {
                        Ok(c) => {
                            tracing::info!("listening for the other nodes' changes again");
                            backoff = BACKOFF.0;
                            client = Some(c);
                            if !changed(Change::Resync) {
                                return;
                            }
                        }
                        Err(_) => backoff = (backoff * 2).min(BACKOFF.1),
                    }
                    continue;
                };
                use postgres::fallible_iterator::FallibleIterator;
                let mut notes = c.notifications();
                // Woken at least every few seconds, so a handle nobody holds any more
                // ends the thread and a connection ended quietly is found.
                let mut each = notes.timeout_iter(std::time::Duration::from_secs(5));
                let mut alive = true;
                loop {
                    match each.next() {
                        Ok(Some(note)) => {
                            if let Some(change) = Change::parse(note.payload())
                                && !changed(change)
                            {
                                return;
                            }
                        }
                        Ok(None) => break,
                        Err(_) => {
                            alive = false;
                            break;
                        }
                    }
                }
                drop(each);
                drop(notes);
                if alive && !c.is_closed() && c.is_valid(std::time::Duration::from_secs(2)).is_ok()
                {
                    client = Some(c);
                } else {
                    tracing::warn!("the connection listening for the other nodes' changes was lost; making it again");
                    // The pooled connections were likely lost with it: each is checked
                    // before its next call.
                    suspect(&url);
                }
            }
        })?;
    started
        .recv()
        .map_err(|_| StoreError::Data("the listening thread ended".into()))?
}

/// Marks every pooled connection to `url` in this process as to be checked before its
/// next call (another connection to the same database was found lost).
fn suspect(url: &str) {
    let pools = POOLS.lock().unwrap_or_else(|p| p.into_inner());
    for p in pools
        .iter()
        .filter(|(u, _)| u == url)
        .filter_map(|(_, w)| w.upgrade())
    {
        p.losses.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A connection listening on [`CHANGES`].
fn listening(url: &str) -> Result<Client, StoreError> {
    let mut client = Client::connect(url, NoTls)?;
    client.batch_execute(&format!("LISTEN {CHANGES}"))?;
    Ok(client)
}

impl Inner {
    /// Announces that build `id` changed (delivered when the change commits).
    fn announce(&mut self, id: i64) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&CHANGES, &id.to_string()])?;
        Ok(())
    }

    fn connect(url: &str) -> Result<Inner, StoreError> {
        let mut client = Client::connect(url, NoTls)?;
        let mut tx = client.transaction()?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])?;
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS runway_migrations (version BIGINT PRIMARY KEY, applied_at BIGINT NOT NULL)",
        )?;
        let done: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM runway_migrations",
                &[],
            )?
            .try_get(0)?;
        for (i, m) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(m)?;
            tx.execute(
                "INSERT INTO runway_migrations (version, applied_at) VALUES ($1, $2)",
                &[&(i as i64 + 1), &now()],
            )?;
        }
        tx.commit()?;
        Ok(Inner { client })
    }

    #[cfg(test)]
    fn version(&mut self) -> Result<i64, StoreError> {
        Ok(self
            .client
            .query_one(
                "SELECT COALESCE(MAX(version), 0) FROM runway_migrations",
                &[],
            )?
            .try_get(0)?)
    }
}

impl postgres::types::ToSql for Value {
    fn to_sql(
        &self,
        ty: &postgres::types::Type,
        out: &mut postgres::types::private::BytesMut,
    ) -> Result<postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(postgres::types::IsNull::Yes),
            Value::Int(i) => i.to_sql(ty, out),
            Value::Text(t) => t.to_sql(ty, out),
            Value::Bytes(b) => b.to_sql(ty, out),
        }
    }
    fn accepts(_: &postgres::types::Type) -> bool {
        true
    }
    postgres::types::to_sql_checked!();
}

fn value(r: &Row, i: usize) -> Result<Value, StoreError> {
    use postgres::types::Type;
    let ty = r.columns()[i].type_().clone();
    Ok(if ty == Type::INT8 {
        r.try_get::<_, Option<i64>>(i)?
            .map_or(Value::Null, Value::Int)
    } else if ty == Type::INT4 {
        r.try_get::<_, Option<i32>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into()))
    } else if ty == Type::BOOL {
        r.try_get::<_, Option<bool>>(i)?
            .map_or(Value::Null, |v| Value::Int(v.into()))
    } else if ty == Type::BYTEA {
        r.try_get::<_, Option<Vec<u8>>>(i)?
            .map_or(Value::Null, Value::Bytes)
    } else {
        r.try_get::<_, Option<String>>(i)?
            .map_or(Value::Null, Value::Text)
    })
}

impl Backend for Inner {
    fn query(&mut self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        self.client
            .query(sql, &params)?
            .iter()
            .map(|r| (0..r.len()).map(|i| value(r, i)).collect())
            .collect()
    }
    fn execute(&mut self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        Ok(self.client.execute(sql, &params)?)
    }
    fn notify(&mut self, payload: &str) -> Result<(), StoreError> {
        self.client
            .execute("SELECT pg_notify($1, $2)", &[&CHANGES, &payload])?;
        Ok(())
    }
    fn insert(&mut self, b: &NewBuild, state: Status) -> Result<BuildRow, StoreError> {
        let (pr_number, pr) = b.pr_columns();
        let mut tx = self.client.transaction()?;
        // Numbers per repository: one insert at a time for a repository, on any node.
        tx.execute("SELECT pg_advisory_xact_lock(hashtext($1))", &[&b.repo])?;
        let number: i64 = tx
            .query_one(
                "SELECT COALESCE(MAX(number), 0) + 1 FROM builds WHERE repo = $1",
                &[&b.repo],
            )?
            .try_get(0)?;
        let previous: Option<String> = tx
            .query_opt(&previous(), &[&b.repo, &b.branch, &b.tag, &pr_number])?
            .map(|r| r.try_get(0))
            .transpose()?;
        let made = tx.query_one(
            &format!(
                "INSERT INTO builds (repo, number, branch, tag, commit_sha, event, message, state,
                                     started_at, previous_state, commit_range, pull_request, pr, request)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING {COLUMNS}"
            ),
            &[
                &b.repo,
                &number,
                &b.branch,
                &b.tag,
                &b.commit,
                &b.event,
                &b.message,
                &state.as_str(),
                &now(),
                &previous,
                &b.commit_range,
                &pr_number,
                &pr,
                &super::request_column(b.request.as_ref()),
            ],
        )?;
        let built = row(&made)?;
        for key in b.delivery_keys() {
            tx.execute(
                "INSERT INTO deliveries (key, build_id, at) VALUES ($1, $2, $3)
                 ON CONFLICT (key) DO UPDATE SET build_id = $2, at = $3",
                &[&key, &built.id, &now()],
            )?;
        }
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANGES, &built.id.to_string()],
        )?;
        tx.commit()?;
        Ok(built)
    }

    fn claim(
        &mut self,
        queued_by: Option<i64>,
        holder: Option<(&str, i64)>,
    ) -> Result<Option<BuildRow>, StoreError> {
        // Without a holder, held for a minute until the claiming node names itself.
        let (node, until) = match holder {
            Some((n, u)) => (Some(n.to_string()), u),
            None => (None, crate::clock::now_ms() + 60_000),
        };
        let claimed = self
            .client
            .query_opt(
                &format!(
                    "UPDATE builds SET state = 'running', started_at = $1, lease_until = $2,
                       node = COALESCE($4, node)
                     WHERE id = (SELECT id FROM builds WHERE state = 'queued'
                                   AND ($3::BIGINT IS NULL OR started_at <= $3)
                                 ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ),
                &[&now(), &until, &queued_by, &node],
            )?
            .map(|r| row(&r))
            .transpose()?;
        if let Some(b) = &claimed {
            self.announce(b.id)?;
        }
        Ok(claimed)
    }

    fn mark_interrupted(&mut self, reason: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let found = self.client.query(
            // Only builds no live node holds (their node's lease lapsed): another node's
            // running builds are its own.
            "UPDATE builds SET state = 'errored', finished_at = $1, reason = $2
             WHERE state = 'running' AND lease_until < $3 RETURNING repo, number, id",
            &[&now(), &reason, &crate::clock::now_ms()],
        )?;
        let mut out = Vec::new();
        for r in &found {
            out.push((r.try_get(0)?, r.try_get::<_, i64>(1)? as u64));
            self.announce(r.try_get(2)?)?;
        }
        Ok(out)
    }

    fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute("DELETE FROM jobs WHERE build_id = $1", &[&id])?;
        tx.execute("DELETE FROM statuses WHERE build_id = $1", &[&id])?;
        tx.execute(
            "UPDATE builds SET state = 'queued', finished_at = NULL, reason = NULL, jobs_started = 0, cancel_requested = 0, rerun = '' WHERE id = $1",
            &[&id],
        )?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &id.to_string()])?;
        tx.commit()?;
        Ok(())
    }

    fn finish(
        &mut self,
        id: i64,
        state: Status,
        jobs: &[JobRow],
        held_by: Option<&str>,
    ) -> Result<bool, StoreError> {
        let mut tx = self.client.transaction()?;
        let ended = tx.execute(
            "UPDATE builds SET state = $1, finished_at = $2 WHERE id = $3
               AND ($4::TEXT IS NULL OR (node = $4 AND state = 'running'))",
            &[&state.as_str(), &now(), &id, &held_by],
        )?;
        if ended == 0 && held_by.is_some() {
            return Ok(false);
        }
        for j in jobs {
            tx.execute(
                "INSERT INTO jobs (build_id, number, name, env, result, duration_ms, log, reason, stage, deploys, line_times)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
                 ON CONFLICT (build_id, number) DO UPDATE SET name = EXCLUDED.name, env = EXCLUDED.env,
                   result = EXCLUDED.result, duration_ms = EXCLUDED.duration_ms, log = EXCLUDED.log,
                   reason = EXCLUDED.reason, stage = EXCLUDED.stage, deploys = EXCLUDED.deploys,
                   line_times = EXCLUDED.line_times",
                &[
                    &id,
                    &j.number,
                    &j.name,
                    &j.env,
                    &j.result,
                    &(j.duration_ms as i64),
                    &j.log,
                    &j.reason,
                    &j.stage,
                    &j.deploys.join("\n"),
                    &super::times_column(&j.times),
                ],
            )?;
        }
        // The workers' chunks are in the jobs' logs now.
        tx.execute(super::tasks::DROP_CHUNKS, &[&id])?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &id.to_string()])?;
        tx.commit()?;
        Ok(true)
    }

    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        self.client
            .query(
                "SELECT number, name, env, result, duration_ms, log, reason, stage, deploys, line_times
                 FROM jobs WHERE build_id = $1 ORDER BY seq",
                &[&build_id],
            )?
            .iter()
            .map(|r| {
                Ok(JobRow {
                    number: r.try_get(0)?,
                    name: r.try_get(1)?,
                    env: r.try_get(2)?,
                    result: r.try_get(3)?,
                    duration_ms: r.try_get::<_, i64>(4)? as u64,
                    log: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    stage: r.try_get(7)?,
                    deploys: r
                        .try_get::<_, String>(8)?
                        .lines()
                        .map(str::to_string)
                        .collect(),
                    times: super::times_of(&r.try_get::<_, String>(9)?),
                    worker: None,
                    workers: Vec::new(),
                })
            })
            .collect()
    }
}
