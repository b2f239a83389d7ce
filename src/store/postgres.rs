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
    })
}

/// The PostgreSQL store. Its client lives on a thread of its own (the synchronous
/// client drives a runtime of its own, which cannot run inside the server's): each
/// call goes to that thread over a channel and waits for its answer.
pub struct Postgres {
    calls: std::sync::mpsc::Sender<Call>,
}

type Call = Box<dyn FnOnce(&mut Inner) + Send>;

impl Postgres {
    /// Connects to `url` (on the store's thread) and applies the migrations it lacks.
    pub fn connect(url: &str) -> Result<Postgres, StoreError> {
        let (calls, queue) = std::sync::mpsc::channel::<Call>();
        let (ready, made) = std::sync::mpsc::channel();
        let url = url.to_string();
        std::thread::Builder::new()
            .name("runway-postgres".into())
            .spawn(move || match Inner::connect(&url) {
                Ok(mut inner) => {
                    let _ = ready.send(Ok(()));
                    for call in queue {
                        call(&mut inner);
                    }
                }
                Err(e) => {
                    let _ = ready.send(Err(e));
                }
            })?;
        made.recv()
            .map_err(|_| StoreError::Data("the PostgreSQL thread ended".into()))??;
        Ok(Postgres { calls })
    }

    /// Runs `f` on the store's thread; its answer.
    fn call<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Inner) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.calls
            .send(Box::new(move |inner| {
                let _ = tx.send(f(inner));
            }))
            .map_err(|_| StoreError::Data("the PostgreSQL thread ended".into()))?;
        rx.recv()
            .map_err(|_| StoreError::Data("the PostgreSQL thread ended".into()))?
    }

    /// The version the database's schema is at.
    pub fn version(&mut self) -> Result<i64, StoreError> {
        self.call(|i| i.version())
    }
}

impl Backend for Postgres {
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
    fn claim(&mut self) -> Result<Option<BuildRow>, StoreError> {
        self.call(|i| i.claim())
    }
    fn mark_interrupted(&mut self, reason: &str) -> Result<Vec<(String, u64)>, StoreError> {
        let reason = reason.to_string();
        self.call(move |i| i.mark_interrupted(&reason))
    }
    fn restart(&mut self, id: i64) -> Result<(), StoreError> {
        self.call(move |i| i.restart(id))
    }
    fn finish(&mut self, id: i64, state: Status, jobs: &[JobRow]) -> Result<(), StoreError> {
        let jobs = jobs.to_vec();
        self.call(move |i| i.finish(id, state, &jobs))
    }
    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        self.call(move |i| i.jobs(build_id))
    }
}

/// The client, on the store's thread.
pub struct Inner {
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
/// until `changed` returns false or the connection ends.
pub fn listen(
    url: &str,
    changed: impl Fn(Change) -> bool + Send + 'static,
) -> Result<(), StoreError> {
    let url = url.to_string();
    let (ready, started) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("runway-listen".into())
        .spawn(move || {
            let mut client = match Client::connect(&url, NoTls) {
                Ok(c) => c,
                Err(e) => {
                    let _ = ready.send(Err(StoreError::from(e)));
                    return;
                }
            };
            if let Err(e) = client.batch_execute(&format!("LISTEN {CHANGES}")) {
                let _ = ready.send(Err(StoreError::from(e)));
                return;
            }
            let _ = ready.send(Ok(()));
            use postgres::fallible_iterator::FallibleIterator;
            let mut notes = client.notifications();
            let mut each = notes.blocking_iter();
            while let Ok(Some(note)) = each.next() {
                if let Some(change) = Change::parse(note.payload())
                    && !changed(change)
                {
                    return;
                }
            }
        })?;
    started
        .recv()
        .map_err(|_| StoreError::Data("the listening thread ended".into()))?
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
            .query_opt(
                "SELECT state FROM builds WHERE repo = $1 AND branch IS NOT DISTINCT FROM $2
                   AND tag IS NOT DISTINCT FROM $3 AND finished_at IS NOT NULL
                 ORDER BY number DESC LIMIT 1",
                &[&b.repo, &b.branch, &b.tag],
            )?
            .map(|r| r.try_get(0))
            .transpose()?;
        let made = tx.query_one(
            &format!(
                "INSERT INTO builds (repo, number, branch, tag, commit_sha, event, message, state,
                                     started_at, previous_state, commit_range)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {COLUMNS}"
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
            ],
        )?;
        let built = row(&made)?;
        tx.execute(
            "SELECT pg_notify($1, $2)",
            &[&CHANGES, &built.id.to_string()],
        )?;
        tx.commit()?;
        Ok(built)
    }

    fn claim(&mut self) -> Result<Option<BuildRow>, StoreError> {
        let claimed = self
            .client
            .query_opt(
                &format!(
                    "UPDATE builds SET state = 'running', started_at = $1, lease_until = $2
                     WHERE id = (SELECT id FROM builds WHERE state = 'queued' ORDER BY id
                                 LIMIT 1 FOR UPDATE SKIP LOCKED)
                     RETURNING {COLUMNS}"
                ),
                // Held for a minute until the claiming node names itself its holder.
                &[&now(), &(crate::notify::now_ms() + 60_000)],
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
            &[&now(), &reason, &crate::notify::now_ms()],
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
        tx.execute(
            "UPDATE builds SET state = 'queued', finished_at = NULL, reason = NULL WHERE id = $1",
            &[&id],
        )?;
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &id.to_string()])?;
        tx.commit()?;
        Ok(())
    }

    fn finish(&mut self, id: i64, state: Status, jobs: &[JobRow]) -> Result<(), StoreError> {
        let mut tx = self.client.transaction()?;
        tx.execute(
            "UPDATE builds SET state = $1, finished_at = $2 WHERE id = $3",
            &[&state.as_str(), &now(), &id],
        )?;
        for j in jobs {
            tx.execute(
                "INSERT INTO jobs (build_id, number, name, env, result, duration_ms, log, reason, stage, deploys)
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
                 ON CONFLICT (build_id, number) DO UPDATE SET name = EXCLUDED.name, env = EXCLUDED.env,
                   result = EXCLUDED.result, duration_ms = EXCLUDED.duration_ms, log = EXCLUDED.log,
                   reason = EXCLUDED.reason, stage = EXCLUDED.stage, deploys = EXCLUDED.deploys",
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
                ],
            )?;
        }
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANGES, &id.to_string()])?;
        tx.commit()?;
        Ok(())
    }

    fn jobs(&mut self, build_id: i64) -> Result<Vec<JobRow>, StoreError> {
        self.client
            .query(
                "SELECT number, name, env, result, duration_ms, log, reason, stage, deploys
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
                    worker: None,
                })
            })
            .collect()
    }
}
