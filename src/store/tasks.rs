//! Jobs handed to `runway worker` agents: the task queue, its leases, the log chunks
//! workers send, and the workers themselves. Written once over `Backend::query` and
//! `Backend::execute` (plain SQL both backends speak), so SQLite (one serve node) and
//! PostgreSQL (several) behave alike.
//!
//! A task is one job of one build: queued with what it needs (`os=linux arch=amd64`),
//! claimed by one worker whose labels match (an optimistic `UPDATE … WHERE state =
//! 'queued'`: two claimers never both win), held while the worker's heartbeats renew its
//! lease, and ended by the worker's result, by a cancel, or by its lease running out
//! ("worker W stopped answering"). Chunks are keyed by (task, attempt, seq), so a
//! chunk sent twice is stored once and a reader reads them in order, without gaps.

use std::collections::BTreeMap;

use super::{Status, Store, StoreError};

/// A value in or out of a statement.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// NULL.
    Null,
    /// An integer.
    Int(i64),
    /// Text.
    Text(String),
    /// Bytes.
    Bytes(Vec<u8>),
}

impl Value {
    /// An integer column; anything else is an error naming it (never a silent 0).
    pub(super) fn int(&self) -> Result<i64, StoreError> {
        match self {
            Value::Int(i) => Ok(*i),
            other => Err(StoreError::Data(format!(
                "expected an integer in the store, found {}",
                other.kind()
            ))),
        }
    }
    /// A 0/1 flag column.
    pub(super) fn flag(&self) -> Result<bool, StoreError> {
        Ok(self.int()? != 0)
    }
    /// An integer column that may be NULL.
    pub(super) fn opt_int(&self) -> Result<Option<i64>, StoreError> {
        match self {
            Value::Null => Ok(None),
            v => v.int().map(Some),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            Value::Null => "NULL",
            Value::Int(_) => "an integer",
            Value::Text(_) => "text",
            Value::Bytes(_) => "bytes",
        }
    }
    pub(super) fn text(&self) -> Option<String> {
        match self {
            Value::Text(s) => Some(s.clone()),
            _ => None,
        }
    }
    pub(super) fn bytes(self) -> Vec<u8> {
        match self {
            Value::Bytes(b) => b,
            Value::Text(s) => s.into_bytes(),
            _ => Vec::new(),
        }
    }

    /// The first column of the first row of a query's answer.
    pub(super) fn first(rows: Vec<Vec<Value>>) -> Option<Value> {
        rows.into_iter().next()?.into_iter().next()
    }

    /// [`Value::first`] as a count (none: 0).
    pub(super) fn count(rows: Vec<Vec<Value>>) -> Result<i64, StoreError> {
        Value::first(rows).map_or(Ok(0), |v| v.int())
    }
}

impl From<i64> for Value {
    fn from(v: i64) -> Value {
        Value::Int(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Value {
        Value::Text(v.to_string())
    }
}
impl From<Option<i64>> for Value {
    fn from(v: Option<i64>) -> Value {
        v.map_or(Value::Null, Value::Int)
    }
}

impl From<Option<&str>> for Value {
    fn from(v: Option<&str>) -> Value {
        v.map_or(Value::Null, Value::from)
    }
}

/// Labels: a worker's (`os=linux arch=amd64 dist=bookworm gpu=yes`) or what a job
/// needs of one.
pub type Labels = BTreeMap<String, String>;

/// `key=value` pairs separated by spaces.
pub fn labels_text(l: &Labels) -> String {
    l.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Reads [`labels_text`].
pub fn parse_labels(text: &str) -> Labels {
    text.split_whitespace()
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The keys a job may need of a worker.
pub const NEEDED_KEYS: [&str; 2] = ["arch", "os"];

/// A worker's labels a job may need: [`NEEDED_KEYS`] and `also` (the keys
/// repositories' `worker_labels` name), at most 12 keys in all.
pub fn relevant(labels: &Labels, also: &[String]) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| NEEDED_KEYS.contains(&k.as_str()) || also.contains(k))
        .take(12)
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Every `needs` (as [`labels_text`] stores it) a worker with `labels` meets: the
/// subsets of its labels over [`NEEDED_KEYS`] and any other key `labels` holds (pass
/// them through [`relevant`] first: each key doubles the list).
pub fn needs_met(labels: &Labels) -> Vec<String> {
    let have: Vec<(&String, &String)> = labels.iter().take(12).collect();
    (0..1usize << have.len())
        .map(|mask| {
            let subset: Labels = have
                .iter()
                .enumerate()
                .filter(|(i, _)| mask & (1 << i) != 0)
                .map(|(_, (k, v))| ((*k).clone(), (*v).clone()))
                .collect();
            labels_text(&subset)
        })
        .collect()
}

/// True when a worker with `labels` can take a job that `needs` them.
pub fn matches(labels: &Labels, needs: &Labels) -> bool {
    needs.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// One job handed (or to be handed) to a worker.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskRow {
    /// Row id.
    pub id: i64,
    /// The build's row id.
    pub build_id: i64,
    /// The job's number (`12.3`).
    pub number: String,
    /// What the worker must offer.
    pub needs: Labels,
    /// queued, running, or how it ended.
    pub state: Status,
    /// 1, then one more each time a lost task is queued again.
    pub attempt: i64,
    /// The worker holding (or that held) it.
    pub worker: Option<String>,
    /// Unix milliseconds the lease runs to.
    pub lease_until: i64,
    /// Asked to stop (the build was canceled).
    pub cancel: bool,
    /// The worker's report (JSON), or runway's reason when it ended otherwise.
    pub outcome: Option<String>,
    /// The hash of the secret its current attempt's claim was answered with (none
    /// before it is claimed, or for a task handed out before secrets existed).
    pub secret: Option<String>,
}

const TASK_COLUMNS: &str =
    "id, build_id, number, needs, state, attempt, worker, lease_until, cancel, outcome, secret";

fn task(r: Vec<Value>) -> Result<TaskRow, StoreError> {
    let mut it = r.into_iter();
    let mut next = || it.next().unwrap_or(Value::Null);
    Ok(TaskRow {
        id: next().int()?,
        build_id: next().int()?,
        number: next().text().unwrap_or_default(),
        needs: parse_labels(&next().text().unwrap_or_default()),
        state: Status::parse(&next().text().unwrap_or_default()).map_err(StoreError::Data)?,
        attempt: next().int()?,
        worker: next().text(),
        lease_until: next().int()?,
        cancel: next().flag()?,
        outcome: next().text(),
        secret: next().text().filter(|h| !h.is_empty()),
    })
}

/// A worker as the store last saw it.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct WorkerRow {
    /// Its `--name`.
    pub name: String,
    /// Its labels, detected and given.
    pub labels: Labels,
    /// Unix milliseconds of its last request.
    pub seen_at: i64,
    /// The task it runs, if any.
    pub task: Option<i64>,
    /// It finishes its job and takes no new one (SIGTERM).
    pub draining: bool,
}

/// What a worker is doing, as the store last saw it.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum WorkerState {
    /// Running job `job` of repository `repo`.
    Running {
        /// `owner/app`.
        repo: String,
        /// `12.1`.
        job: String,
    },
    /// Finishing its job and taking no new one (SIGTERM).
    Draining,
    /// Connected, waiting for a job.
    Idle,
    /// Not heard from for longer than a waiting claim or a lease lasts: stopped,
    /// killed, or cut off. `since`: when it was last heard from (Unix ms).
    Gone {
        /// Unix milliseconds of its last request.
        since: i64,
    },
}

/// How long an idle worker may go unheard and still be connected: a claim is held
/// open up to 30 s.
pub const IDLE_SILENCE_MS: i64 = 45_000;

/// What worker `w` is doing at `now`, given the task it last took (with its build's
/// repository), and the workers' lease. A worker running a job beats well within the
/// lease: unheard for longer, it is gone (its job is lost or about to be). A worker
/// whose job went to another, or not heard from since the lease of its last job ran
/// out, is gone too (killed or cut off mid-job: a worker that comes back claims again,
/// which clears its task); one that finished its job is idle until a claim's wait
/// says more.
pub fn worker_state(
    w: &WorkerRow,
    task: Option<(&TaskRow, &str)>,
    now: i64,
    lease_ms: i64,
) -> WorkerState {
    let silent = now - w.seen_at;
    let gone = WorkerState::Gone { since: w.seen_at };
    match task {
        Some((t, repo)) if t.state == Status::Running && t.worker.as_deref() == Some(&w.name) => {
            if silent > lease_ms {
                gone
            } else if w.draining {
                WorkerState::Draining
            } else {
                WorkerState::Running {
                    repo: repo.to_string(),
                    job: t.number.clone(),
                }
            }
        }
        // Its job went to another worker (its lease ran out, attempt 2) and it has not
        // claimed since: it stopped answering.
        Some((t, _)) if t.worker.as_deref() != Some(&w.name) => gone,
        Some((t, _)) if w.seen_at <= t.lease_until && now > t.lease_until => gone,
        _ if silent > IDLE_SILENCE_MS => gone,
        _ if w.draining => WorkerState::Draining,
        _ => WorkerState::Idle,
    }
}

/// The workers as `GET /api/workers` and `runway workers --json` show them: each row
/// with what it is doing (`state`, and `repo` and `job` while it runs one).
pub fn workers_json(ws: &[(WorkerRow, WorkerState)]) -> Vec<serde_json::Value> {
    ws.iter()
        .map(|(w, st)| {
            let mut v = serde_json::to_value(w).unwrap_or_default();
            if let (Some(o), Ok(serde_json::Value::Object(s))) =
                (v.as_object_mut(), serde_json::to_value(st))
            {
                o.extend(s);
            }
            v
        })
        .collect()
}

/// What a heartbeat learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Beat {
    /// The lease is renewed; `cancel` when the build was canceled.
    Held {
        /// Stop the job.
        cancel: bool,
    },
    /// The task is no longer this worker's: stop it.
    Lost,
}

/// `ms` since the epoch.
pub fn now_ms() -> i64 {
    crate::clock::now_ms()
}

/// What is announced to the other nodes (PostgreSQL `NOTIFY`): a task of build `B`
/// changed (`task:B`), or one was queued (`queued:B`).
pub const TASK_CHANGED: &str = "task:";
/// See [`TASK_CHANGED`].
pub const TASK_QUEUED: &str = "queued:";
/// See [`TASK_CHANGED`]: running build `B` is to be canceled (`cancel:B`).
pub const BUILD_CANCEL: &str = "cancel:";

/// Drops build `$1`'s log chunks: in the commit that records its jobs' logs when it
/// ends (each backend's `finish`), and with its tasks when it restarts.
pub(super) const DROP_CHUNKS: &str =
    "DELETE FROM task_chunks WHERE task_id IN (SELECT id FROM tasks WHERE build_id = $1)";

impl Store {
    fn q(&self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.db().query(sql, args)
    }
    fn x(&self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        self.db().execute(sql, args)
    }
    /// [`Backend::execute_lazily`](super::Backend::execute_lazily).
    fn x_lazily(&self, sql: &str, args: &[Value]) -> Result<u64, StoreError> {
        self.db().execute_lazily(sql, args)
    }
    /// [`Backend::query_lazily`](super::Backend::query_lazily).
    fn q_lazily(&self, sql: &str, args: &[Value]) -> Result<Vec<Vec<Value>>, StoreError> {
        self.db().query_lazily(sql, args)
    }
    fn announce(&self, what: &str, build_id: i64) {
        let _ = self.db().notify(&format!("{what}{build_id}"));
    }

    /// The task of job `number` of build `build_id`: the one already there (a node that
    /// took over the build finds its jobs' tasks), or a new queued one.
    pub fn open_task(
        &self,
        build_id: i64,
        number: &str,
        needs: &Labels,
        spec: &str,
    ) -> Result<TaskRow, StoreError> {
        // Lost with the power, it is opened again: the node that takes the build
        // over after the restart opens its jobs' tasks anew.
        let made = self.q_lazily(
            &format!(
                "INSERT INTO tasks (build_id, number, needs, state, created_at, spec) VALUES ($1, $2, $3, 'queued', $4, $5)
                 ON CONFLICT (build_id, number) DO NOTHING
                 RETURNING {TASK_COLUMNS}"
            ),
            &[
                build_id.into(),
                number.into(),
                labels_text(needs).as_str().into(),
                now_ms().into(),
                spec.into(),
            ],
        )?;
        if let Some(r) = made.into_iter().next() {
            self.announce(TASK_QUEUED, build_id);
            return task(r);
        }
        self.task_of(build_id, number)?
            .ok_or_else(|| StoreError::Data(format!("task {build_id}/{number} vanished")))
    }

    fn task_of(&self, build_id: i64, number: &str) -> Result<Option<TaskRow>, StoreError> {
        self.q(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE build_id = $1 AND number = $2"),
            &[build_id.into(), number.into()],
        )?
        .into_iter()
        .next()
        .map(task)
        .transpose()
    }

    /// A build's tasks, in job order.
    pub fn tasks_of(&self, build_id: i64) -> Result<Vec<TaskRow>, StoreError> {
        self.q(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE build_id = $1 ORDER BY id"),
            &[build_id.into()],
        )?
        .into_iter()
        .map(task)
        .collect()
    }

    /// A task by id.
    pub fn task(&self, id: i64) -> Result<Option<TaskRow>, StoreError> {
        self.q(
            &format!("SELECT {TASK_COLUMNS} FROM tasks WHERE id = $1"),
            &[id.into()],
        )?
        .into_iter()
        .next()
        .map(task)
        .transpose()
    }

    /// The oldest queued task a worker with `labels` can run, now `worker`'s with a
    /// lease of `lease_ms` and the hash of this claim's secret (`secret`, set in the
    /// same statement: the task is never held without one). Claims are optimistic: of
    /// two workers racing for one task, one update finds it still queued and the other
    /// finds nothing and tries the next. With the task, its compiled job (its `spec`).
    pub fn claim_task(
        &self,
        worker: &str,
        instance: &str,
        labels: &Labels,
        lease_ms: i64,
        secret: &str,
    ) -> Result<Option<(TaskRow, String)>, StoreError> {
        // What a job may need is a few keys only: the needs this worker meets are
        // listed (as stored), so the oldest one is found by the index, not by a scan.
        let takes = needs_met(labels);
        let list = |from: usize| {
            (0..takes.len())
                .map(|i| format!("${}", i + from))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let sql = format!(
            "UPDATE tasks SET state = 'running', worker = $1, lease_until = $2, secret = $3,
               held_by = CASE WHEN held_by = '' THEN $1 ELSE held_by || ' ' || $1 END,
               instance = ${}
             WHERE id = (SELECT id FROM tasks WHERE state = 'queued' AND needs IN ({})
                         ORDER BY id LIMIT 1)
               AND state = 'queued'
             RETURNING {TASK_COLUMNS}, spec",
            takes.len() + 4,
            list(4)
        );
        let left = format!(
            "SELECT COUNT(*) FROM tasks WHERE state = 'queued' AND needs IN ({})",
            list(1)
        );
        let mut args: Vec<Value> = vec![worker.into(), Value::Null, secret.into()];
        args.extend(takes.iter().map(|t| Value::from(t.as_str())));
        args.push(instance.into());
        let needs = 3..3 + takes.len();
        // Two workers may pick the same oldest task; the one whose update finds it no
        // longer queued looks again.
        for _ in 0..8 {
            args[1] = (now_ms() + lease_ms).into();
            // A claim lost with the power leaves the task queued: the worker's next
            // call about it is refused (it stops the job) and another takes it, as
            // after a lapsed lease. Its report is what must not be lost (`end_task`).
            let Some(mut r) = self.q_lazily(&sql, &args)?.into_iter().next() else {
                let queued = self.q(&left, &args[needs.clone()])?;
                if queued
                    .first()
                    .and_then(|r| r.first())
                    .map(Value::int)
                    .transpose()?
                    .unwrap_or(0)
                    == 0
                {
                    return Ok(None);
                }
                continue;
            };
            let spec = r.pop().as_ref().and_then(Value::text).unwrap_or_default();
            let t = task(r)?;
            self.announce(TASK_CHANGED, t.build_id);
            // A job of the build started: a newer build of its branch no longer
            // cancels it (auto_cancel).
            self.jobs_started(t.build_id)?;
            return Ok(Some((t, spec)));
        }
        Ok(None)
    }

    /// A heartbeat of `worker` for attempt `attempt` of task `id`.
    pub fn beat(
        &self,
        id: i64,
        attempt: i64,
        worker: &str,
        lease_ms: i64,
    ) -> Result<Beat, StoreError> {
        let held = self.q(
            "UPDATE tasks SET lease_until = $1
             WHERE id = $2 AND attempt = $3 AND worker = $4 AND state = 'running'
             RETURNING cancel",
            &[
                (now_ms() + lease_ms).into(),
                id.into(),
                attempt.into(),
                worker.into(),
            ],
        )?;
        match held.into_iter().next().and_then(|r| r.into_iter().next()) {
            Some(cancel) => Ok(Beat::Held {
                cancel: cancel.flag()?,
            }),
            None => Ok(Beat::Lost),
        }
    }

    /// Task `id` as a call from worker `worker` finds it, and whether that worker has
    /// been revoked: one read for both (the hot path of every chunk and heartbeat).
    pub fn task_call(&self, id: i64, worker: &str) -> Result<(Option<TaskRow>, bool), StoreError> {
        let rows = self.q(
            &format!(
                "SELECT {TASK_COLUMNS}, (SELECT COUNT(*) FROM revoked_workers WHERE name = $2)
                 FROM tasks WHERE id = $1"
            ),
            &[id.into(), worker.into()],
        )?;
        match rows.into_iter().next() {
            Some(mut r) => {
                let revoked = r.pop().map(|v| v.flag()).transpose()?.unwrap_or(false);
                Ok((Some(task(r)?), revoked))
            }
            None => Ok((None, self.is_revoked(worker)?)),
        }
    }

    /// Stores chunk `seq` of attempt `attempt` of task `t`'s log, from the worker the
    /// caller found holding it (chunks are kept per attempt: one stored as a lease
    /// lapses is never read as a later attempt's); a chunk sent again is kept once.
    pub fn add_chunk(
        &self,
        t: &TaskRow,
        attempt: i64,
        seq: i64,
        data: &[u8],
    ) -> Result<(), StoreError> {
        let id = t.id;
        // A chunk lost with the power is sent again: the worker is told what is held.
        self.x_lazily(
            "INSERT INTO task_chunks (task_id, attempt, seq, data) VALUES ($1, $2, $3, $4)
             ON CONFLICT (task_id, attempt, seq) DO NOTHING",
            &[
                id.into(),
                attempt.into(),
                seq.into(),
                Value::Bytes(data.to_vec()),
            ],
        )?;
        self.announce(TASK_CHANGED, t.build_id);
        Ok(())
    }

    /// The highest chunk number of an attempt held with every one before it (-1: none):
    /// what a worker is told after each chunk, so that a gap is sent again.
    pub fn chunks_held(&self, id: i64, attempt: i64, upto: i64) -> Result<i64, StoreError> {
        let count = self.q(
            "SELECT COUNT(*) FROM task_chunks WHERE task_id = $1 AND attempt = $2 AND seq <= $3",
            &[id.into(), attempt.into(), upto.into()],
        )?;
        let n = Value::count(count)?;
        if n == upto + 1 {
            return Ok(upto);
        }
        // A gap (rare): the first number missing.
        let rows = self.q(
            "SELECT seq FROM task_chunks WHERE task_id = $1 AND attempt = $2 ORDER BY seq",
            &[id.into(), attempt.into()],
        )?;
        let mut held = -1;
        for r in rows {
            if r.into_iter().next().map(|v| v.int()).transpose()? != Some(held + 1) {
                break;
            }
            held += 1;
        }
        Ok(held)
    }

    /// Every chunk of an attempt from `seq` on, gaps and all: (number, bytes), in order.
    pub fn chunks_from(
        &self,
        id: i64,
        attempt: i64,
        from_seq: i64,
    ) -> Result<Vec<(i64, Vec<u8>)>, StoreError> {
        let rows = self.q(
            "SELECT seq, data FROM task_chunks WHERE task_id = $1 AND attempt = $2 AND seq >= $3
             ORDER BY seq",
            &[id.into(), attempt.into(), from_seq.into()],
        )?;
        rows.into_iter()
            .map(|r| {
                let mut r = r.into_iter();
                let seq = r.next().unwrap_or(Value::Null).int()?;
                Ok((seq, r.next().map(Value::bytes).unwrap_or_default()))
            })
            .collect()
    }

    /// The chunks of an attempt from `seq` on, in order, up to the first gap.
    pub fn chunks(&self, id: i64, attempt: i64, from_seq: i64) -> Result<Vec<Vec<u8>>, StoreError> {
        Ok(self
            .chunks_from(id, attempt, from_seq)?
            .into_iter()
            .zip(from_seq..)
            .take_while(|((seq, _), want)| seq == want)
            .map(|((_, bytes), _)| bytes)
            .collect())
    }

    /// Ends a running task with the worker's report. False when it was not `worker`'s
    /// to end (its lease was lost).
    pub fn end_task(
        &self,
        id: i64,
        attempt: i64,
        worker: &str,
        state: Status,
        outcome: &str,
    ) -> Result<bool, StoreError> {
        // The build to announce comes back with the change: no read after it.
        let ended = self.q(
            "UPDATE tasks SET state = $1, outcome = $2
             WHERE id = $3 AND attempt = $4 AND worker = $5 AND state = 'running'
             RETURNING build_id",
            &[
                state.as_str().into(),
                outcome.into(),
                id.into(),
                attempt.into(),
                worker.into(),
            ],
        )?;
        let Some(row) = ended.into_iter().next() else {
            return Ok(false);
        };
        let build_id = row.into_iter().next().unwrap_or(Value::Null).int()?;
        self.announce(TASK_CHANGED, build_id);
        Ok(true)
    }

    /// Queues again the tasks handed to `worker`'s process `instance` that it never got
    /// (it asks again after an unanswered call; [`crate::protocol::Claim::unanswered`]):
    /// still running as its, with no log chunk of their attempt. Their attempt is
    /// unchanged (nothing of it ran), and the worker leaves their holders (it never
    /// held them). How many.
    pub fn give_back(&self, worker: &str, instance: &str) -> Result<usize, StoreError> {
        if instance.is_empty() {
            return Ok(0);
        }
        let handed = self.q(
            "SELECT id, held_by FROM tasks
             WHERE state = 'running' AND worker = $1 AND instance = $2
               AND NOT EXISTS (SELECT 1 FROM task_chunks c
                               WHERE c.task_id = tasks.id AND c.attempt = tasks.attempt)",
            &[worker.into(), instance.into()],
        )?;
        let mut back = 0;
        for r in handed {
            let (id, held) = (r[0].int()?, r[1].text().unwrap_or_default());
            // The last holder recorded is this claim's ([`Store::claim_task`]).
            let before = held.rsplit_once(' ').map_or("", |(b, _)| b);
            let queued = self.q(
                "UPDATE tasks SET state = 'queued', worker = NULL, secret = '', held_by = $1
                 WHERE id = $2 AND state = 'running' AND worker = $3 AND instance = $4
                 RETURNING build_id",
                &[before.into(), id.into(), worker.into(), instance.into()],
            )?;
            if let Some(build_id) = queued.first().and_then(|r| r.first()) {
                self.announce(TASK_QUEUED, build_id.int()?);
                back += 1;
            }
        }
        Ok(back)
    }

    /// Ends running attempt `attempt` of task `id` as canceled with `why`: its build was
    /// canceled and its worker never reported. True when this call did it.
    pub fn cancel_running(&self, id: i64, attempt: i64, why: &str) -> Result<bool, StoreError> {
        let ended = self.q(
            "UPDATE tasks SET state = 'canceled', outcome = $1
             WHERE id = $2 AND attempt = $3 AND state = 'running'
             RETURNING build_id",
            &[why.into(), id.into(), attempt.into()],
        )?;
        let Some(build_id) = ended.first().and_then(|r| r.first()) else {
            return Ok(false);
        };
        self.announce(TASK_CHANGED, build_id.int()?);
        Ok(true)
    }

    /// A running task whose lease ran out (at `now`) is errored with `why`, or queued
    /// again as a new attempt when `retry`. True when this call did it.
    pub fn expire_task(
        &self,
        id: i64,
        now: i64,
        why: &str,
        retry: bool,
    ) -> Result<bool, StoreError> {
        let done = if retry {
            self.x(
                "UPDATE tasks SET state = 'queued', worker = NULL, attempt = attempt + 1
                 WHERE id = $1 AND state = 'running' AND lease_until < $2",
                &[id.into(), now.into()],
            )?
        } else {
            self.x(
                "UPDATE tasks SET state = 'errored', outcome = $1
                 WHERE id = $2 AND state = 'running' AND lease_until < $3",
                &[why.into(), id.into(), now.into()],
            )?
        };
        if let Some(t) = self.task(id)? {
            self.announce(if retry { TASK_QUEUED } else { TASK_CHANGED }, t.build_id);
        }
        Ok(done == 1)
    }

    /// Cancels a build's tasks: queued ones end now, running ones are asked to stop
    /// (their workers learn it from their next heartbeat).
    pub fn cancel_tasks(&self, build_id: i64, why: &str) -> Result<(), StoreError> {
        self.x(
            "UPDATE tasks SET state = 'canceled', outcome = $1 WHERE build_id = $2 AND state = 'queued'",
            &[why.into(), build_id.into()],
        )?;
        self.x(
            "UPDATE tasks SET cancel = 1 WHERE build_id = $1 AND state = 'running'",
            &[build_id.into()],
        )?;
        self.announce(TASK_CHANGED, build_id);
        Ok(())
    }

    /// Asks whichever node follows running build `build_id` to cancel it.
    pub fn announce_cancel(&self, build_id: i64) -> Result<(), StoreError> {
        self.db().notify(&format!("{BUILD_CANCEL}{build_id}"))
    }

    /// Drops a build's tasks and their chunks (a restart runs its jobs anew).
    pub fn drop_tasks(&self, build_id: i64) -> Result<(), StoreError> {
        self.x(DROP_CHUNKS, &[build_id.into()])?;
        self.x("DELETE FROM tasks WHERE build_id = $1", &[build_id.into()])?;
        Ok(())
    }

    /// Records that `w` asked for work or beat.
    pub fn saw_worker(&self, w: &WorkerRow) -> Result<(), StoreError> {
        let args = [
            w.name.as_str().into(),
            labels_text(&w.labels).as_str().into(),
            w.seen_at.into(),
            w.task.map_or(Value::Null, Value::Int),
            i64::from(w.draining).into(),
        ];
        // When a worker was last seen: its next call says it again.
        self.x_lazily(
            "INSERT INTO workers (name, labels, seen_at, task_id, draining) VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET labels = $2, seen_at = $3, task_id = $4, draining = $5",
            &args,
        )?;
        Ok(())
    }

    /// Worker `name` beat while it runs task `id`.
    pub fn worker_beat(&self, name: &str, id: i64) -> Result<(), StoreError> {
        self.x_lazily(
            "UPDATE workers SET seen_at = $1, task_id = $2 WHERE name = $3",
            &[now_ms().into(), id.into(), name.into()],
        )?;
        Ok(())
    }

    /// Revokes worker `name` at once: every later call of it is refused, and the jobs
    /// it runs are errored "worker NAME was revoked" (their builds' ids are returned, to
    /// be woken). `undo` lets the name in again.
    pub fn revoke_worker(&self, name: &str, undo: bool) -> Result<Vec<i64>, StoreError> {
        if undo {
            self.x(
                "DELETE FROM revoked_workers WHERE name = $1",
                &[name.into()],
            )?;
            return Ok(Vec::new());
        }
        self.x(
            "INSERT INTO revoked_workers (name, at) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[name.into(), now_ms().into()],
        )?;
        let held = self.q(
            "SELECT id, attempt, build_id FROM tasks WHERE worker = $1 AND state = 'running'",
            &[name.into()],
        )?;
        let mut builds = Vec::new();
        for r in held {
            let mut it = r.into_iter();
            let mut next = || it.next().unwrap_or(Value::Null).int();
            let (id, attempt, build) = (next()?, next()?, next()?);
            let why = format!("worker {name} was revoked");
            if self.end_task(id, attempt, name, Status::Errored, &why)? {
                builds.push(build);
            }
        }
        Ok(builds)
    }

    /// True when worker `name` has been revoked.
    pub fn is_revoked(&self, name: &str) -> Result<bool, StoreError> {
        Ok(!self
            .q(
                "SELECT name FROM revoked_workers WHERE name = $1",
                &[name.into()],
            )?
            .is_empty())
    }

    /// The workers, by name.
    pub fn workers(&self) -> Result<Vec<WorkerRow>, StoreError> {
        self.q(
            "SELECT name, labels, seen_at, task_id, draining FROM workers ORDER BY name",
            &[],
        )?
        .into_iter()
        .map(|r| {
            let mut it = r.into_iter();
            let mut next = || it.next().unwrap_or(Value::Null);
            Ok(WorkerRow {
                name: next().text().unwrap_or_default(),
                labels: parse_labels(&next().text().unwrap_or_default()),
                seen_at: next().int()?,
                task: next().opt_int()?,
                draining: next().flag()?,
            })
        })
        .collect()
    }

    /// The workers with what each is doing at `now` (see [`worker_state`]).
    pub fn workers_now(
        &self,
        now: i64,
        lease_ms: i64,
    ) -> Result<Vec<(WorkerRow, WorkerState)>, StoreError> {
        let mut out = Vec::new();
        for w in self.workers()? {
            let task = match w.task {
                Some(id) => self.task(id)?,
                None => None,
            };
            let repo = match &task {
                Some(t) => self.by_id(t.build_id)?.map(|b| b.repo),
                None => None,
            };
            let state = worker_state(&w, task.as_ref().zip(repo.as_deref()), now, lease_ms);
            out.push((w, state));
        }
        Ok(out)
    }

    /// Every worker that took each job of a build, attempt by attempt, by job number.
    pub fn task_attempts(
        &self,
        build_id: i64,
    ) -> Result<BTreeMap<String, Vec<String>>, StoreError> {
        Ok(self
            .q(
                "SELECT number, worker, held_by FROM tasks WHERE build_id = $1 AND worker IS NOT NULL",
                &[build_id.into()],
            )?
            .into_iter()
            .filter_map(|r| {
                let mut r = r.into_iter();
                let number = r.next()?.text()?;
                let worker = r.next()?.text()?;
                let mut held: Vec<String> = r
                    .next()
                    .and_then(|v| v.text())
                    .unwrap_or_default()
                    .split_whitespace()
                    .map(str::to_string)
                    .collect();
                // A task claimed before the history was kept: its holder only.
                if held.last() != Some(&worker) {
                    held.push(worker);
                }
                Some((number, held))
            })
            .collect())
    }

    /// Builds this node (`node`) runs hold a lease to `until`; a node that stops
    /// renewing it (killed) leaves its builds to another node.
    pub fn renew_builds(&self, node: &str, until: i64) -> Result<(), StoreError> {
        self.x(
            "UPDATE builds SET lease_until = $1 WHERE node = $2 AND state = 'running'",
            &[until.into(), node.into()],
        )?;
        Ok(())
    }

    /// Lets go of every running build `node` follows, so that another node takes each
    /// over at once (a stopping node whose builds' jobs run on workers). Returns how many.
    pub fn release_builds(&self, node: &str) -> Result<u64, StoreError> {
        self.x(
            "UPDATE builds SET lease_until = 0 WHERE node = $1 AND state = 'running'",
            &[node.into()],
        )
    }

    /// Marks a claimed build as `node`'s, leased to `until`.
    pub fn hold_build(&self, id: i64, node: &str, until: i64) -> Result<(), StoreError> {
        self.x(
            "UPDATE builds SET node = $1, lease_until = $2 WHERE id = $3",
            &[node.into(), until.into(), id.into()],
        )?;
        Ok(())
    }

    /// A running build whose node stopped renewing its lease (at `now`), now `node`'s:
    /// its jobs' tasks carry on, so the build can be followed to its end.
    pub fn take_over(
        &self,
        node: &str,
        now: i64,
        until: i64,
    ) -> Result<Option<super::BuildRow>, StoreError> {
        let lapsed = self.q(
            "SELECT id, node FROM builds WHERE state = 'running' AND node <> ''
               AND lease_until < $1 ORDER BY id LIMIT 20",
            &[now.into()],
        )?;
        for r in lapsed {
            let (id, old) = (r[0].int()?, r[1].text());
            let won = self.x(
                "UPDATE builds SET node = $1, lease_until = $2
                 WHERE id = $3 AND state = 'running' AND node = $4 AND lease_until < $5",
                &[
                    node.into(),
                    until.into(),
                    id.into(),
                    old.as_deref().into(),
                    now.into(),
                ],
            )?;
            if won == 1 {
                return self.by_id(id);
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Labels {
        parse_labels(s)
    }

    #[test]
    fn a_workers_state_comes_from_its_last_word_and_its_task() {
        let w = WorkerRow {
            name: "w1".into(),
            labels: Labels::new(),
            seen_at: 100_000,
            task: Some(7),
            draining: false,
        };
        let mut t = TaskRow {
            id: 7,
            build_id: 1,
            number: "3.1".into(),
            needs: Labels::new(),
            state: Status::Running,
            attempt: 1,
            worker: Some("w1".into()),
            lease_until: 110_000,
            cancel: false,
            outcome: None,
            secret: None,
        };
        let running = WorkerState::Running {
            repo: "o/app".into(),
            job: "3.1".into(),
        };
        let of = |t: &TaskRow, now| worker_state(&w, Some((t, "o/app")), now, 10_000);
        assert_eq!(of(&t, 101_000), running);
        // Running, but unheard for longer than the lease: gone.
        assert_eq!(of(&t, 110_001), WorkerState::Gone { since: 100_000 });
        // Its job lost (lease run out, attempt 2 elsewhere), unheard since: gone.
        t.worker = Some("w2".into());
        assert_eq!(of(&t, 111_000), WorkerState::Gone { since: 100_000 });
        // Its job ended and it was heard after (or the lease is still to run): idle.
        t.worker = Some("w1".into());
        t.state = Status::Passed;
        assert_eq!(of(&t, 101_000), WorkerState::Idle);
        let later = WorkerRow {
            seen_at: 112_000,
            ..w.clone()
        };
        assert_eq!(
            worker_state(&later, Some((&t, "o/app")), 113_000, 10_000),
            WorkerState::Idle
        );
        // No job, unheard for longer than a claim waits: gone.
        let idle = WorkerRow {
            task: None,
            ..w.clone()
        };
        assert_eq!(
            worker_state(&idle, None, 140_000, 10_000),
            WorkerState::Idle
        );
        assert_eq!(
            worker_state(&idle, None, 146_000, 10_000),
            WorkerState::Gone { since: 100_000 }
        );
        let draining = WorkerRow {
            draining: true,
            ..idle
        };
        assert_eq!(
            worker_state(&draining, None, 101_000, 10_000),
            WorkerState::Draining
        );
    }

    /// A column of another type is an error naming what was there, never a silent 0.
    #[test]
    fn a_column_of_another_type_is_an_error_not_a_zero() {
        assert_eq!(Value::Int(3).int().unwrap(), 3);
        let e = Value::Text("3".into()).int().unwrap_err().to_string();
        assert!(
            e.contains("expected an integer in the store, found text"),
            "{e}"
        );
        assert!(Value::Null.int().is_err());
        assert_eq!(Value::Null.opt_int().unwrap(), None);
        assert!(Value::Int(1).flag().unwrap());
    }

    #[test]
    fn labels_match_when_the_worker_has_every_one_needed() {
        let w = l("os=linux arch=amd64 dist=bookworm gpu=yes");
        assert!(matches(&w, &l("os=linux arch=amd64")));
        assert!(!matches(&w, &l("os=osx arch=amd64")));
        assert!(matches(&w, &Labels::new()));
        assert_eq!(labels_text(&l("b=2 a=1")), "a=1 b=2");
        let mut met = needs_met(&relevant(&w, &[]));
        met.sort();
        assert_eq!(met, ["", "arch=amd64", "arch=amd64 os=linux", "os=linux"]);
        // A key a repository asks for counts too.
        let met = needs_met(&relevant(&w, &["gpu".to_string()]));
        assert_eq!(met.len(), 8);
        assert!(met.contains(&"arch=amd64 gpu=yes os=linux".to_string()));
    }
}
